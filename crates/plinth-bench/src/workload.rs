//! The workloads every system runs, the arguments they share, and the two shapes of run: a
//! closed loop of operations, and a fan-out of one writer's values to many watchers.

use crate::driver::{Load, Op, Sample, arrival_latency_us, closed_loop, histogram, micros};
use anyhow::{Result, bail};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Durable puts of unique keys.
    KvPut,
    /// Linearizable gets of preloaded keys.
    KvGet,
    /// Acquire and release, each worker on a lock of its own.
    LockUncontended,
    /// Acquire (waiting) and release, every worker on one lock.
    LockContended,
    /// Send, then receive and ack as many, durable; `--batch` messages a cycle.
    Queue,
    /// One writer's puts, paced at `--rate`, to `--watchers` watchers.
    WatchFanout,
    /// `--keys` puts of `--value-size` bytes, then the server's memory.
    KvLoad,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::KvPut => "kv-put",
            Workload::KvGet => "kv-get",
            Workload::LockUncontended => "lock-uncontended",
            Workload::LockContended => "lock-contended",
            Workload::Queue => "queue",
            Workload::WatchFanout => "watch-fanout",
            Workload::KvLoad => "kv-load",
        }
    }
}

/// What the workloads take from the command line.
#[derive(Clone, Debug)]
pub struct Args {
    pub endpoint: String,
    pub connections: usize,
    pub value_size: usize,
    pub keys: u64,
    pub batch: usize,
    pub watchers: usize,
    /// Puts per second of the fan-out writer.
    pub rate: u64,
    /// Idle long polls and lock waiters held open through the run (plinth only).
    pub idle_waiters: usize,
    /// Names this run's keys, locks and queues apart from every other run's.
    pub run_id: String,
}

/// What a run measured.
pub struct Outcome {
    pub sample: Sample,
    /// Send-to-arrival latency of messages or watched values.
    pub delivery: Option<Histogram<u64>>,
    /// How many units (messages) one operation moved.
    pub per_op: u64,
}

impl Outcome {
    pub fn closed(sample: Sample) -> Outcome {
        Outcome {
            sample,
            delivery: None,
            per_op: 1,
        }
    }

    pub fn with_delivery(sample: Sample, delivery: Histogram<u64>, per_op: u64) -> Outcome {
        Outcome {
            sample,
            delivery: Some(delivery),
            per_op,
        }
    }
}

/// Makes an [`Op`] from a closure.
pub fn op<F>(f: F) -> Op
where
    F: Fn(usize, u64) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// Runs `put` for `0..keys` at 64 in flight, untimed: the data a read workload reads.
pub async fn preload(keys: u64, put: Op) -> Result<()> {
    let load = Load {
        requests: Some(keys),
        duration: None,
        concurrency: 64,
    };
    let sample = closed_loop(&load, put).await;
    if sample.errors > 0 {
        bail!(
            "preloading {keys} keys failed {} times: {}",
            sample.errors,
            sample.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// A watcher's stream of watched values, each stamped by the writer.
pub type Values = BoxStream<'static, Result<Vec<u8>>>;

/// One writer puts stamped values at `args.rate` a second (for `load.requests` puts, or for
/// `load.duration`); every watcher records each value's arrival latency. The run ends when every
/// watcher has seen every value, or 30 s after the last put.
pub async fn fanout(args: &Args, load: &Load, put: Op, watchers: Vec<Values>) -> Result<Outcome> {
    let (done_tx, done_rx) = tokio::sync::watch::channel(None::<u64>);
    let mut tasks = Vec::with_capacity(watchers.len());
    for mut values in watchers {
        let mut done = done_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut seen = 0u64;
            loop {
                if done.borrow().is_some_and(|n| seen >= n) {
                    return Ok(latency);
                }
                tokio::select! {
                    value = values.next() => match value {
                        Some(Ok(value)) => {
                            if let Some(us) = arrival_latency_us(&value) {
                                latency.saturating_record(us);
                            }
                            seen += 1;
                        }
                        Some(Err(e)) => return Err(e),
                        None => bail!("a watch ended after {seen} values"),
                    },
                    _ = done.changed() => {}
                }
            }
        }));
    }
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let started = Instant::now();
    let mut puts = histogram();
    let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
    let limit = load.requests.unwrap_or(u64::MAX);
    let mut seq = 0;
    while seq < limit && load.duration.is_none_or(|d| started.elapsed() < d) {
        tokio::time::sleep_until((started + period * seq as u32).into()).await;
        let t = Instant::now();
        match put(0, seq).await {
            Ok(()) => {
                ops += 1;
                puts.saturating_record(micros(t.elapsed()));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        seq += 1;
    }
    let elapsed = started.elapsed();
    done_tx.send_replace(Some(ops));
    let mut delivery = histogram();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(latency))) => delivery.add(&latency).expect("equal bounds"),
            Ok(Ok(Err(e))) => bail!("a watcher failed: {e:#}"),
            Ok(Err(e)) => bail!("a watcher panicked: {e}"),
            Err(_) => bail!("a watcher had not seen all {ops} values 30 s after the last put"),
        }
    }
    let sample = Sample {
        ops,
        errors,
        elapsed,
        latency: puts,
        first_error,
    };
    Ok(Outcome::with_delivery(sample, delivery, 1))
}
