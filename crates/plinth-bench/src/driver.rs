//! The closed-loop driver: `concurrency` workers, each issuing one operation after another,
//! for a fixed number of operations in all or for a fixed time, every latency recorded.

use anyhow::Result;
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One operation of a workload: `(worker, sequence)` to a future that does it once. The driver
/// times it; what the operation counts as (one put, one message) is the workload's business.
pub type Op = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// How much load to apply.
#[derive(Clone, Debug)]
pub struct Load {
    /// Operations in all, shared by the workers; `None` with a duration.
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub concurrency: usize,
}

/// What one run measured.
pub struct Sample {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of each successful operation, in microseconds.
    pub latency: Histogram<u64>,
    /// The first error seen, to show what failed.
    pub first_error: Option<String>,
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op` under `load` and merges what every worker recorded.
pub async fn closed_loop(load: &Load, op: Op) -> Sample {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = load.duration.map(|d| started + d);
    let limit = load.requests.unwrap_or(u64::MAX);
    let mut workers = Vec::with_capacity(load.concurrency);
    for worker in 0..load.concurrency.max(1) {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = histogram();
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= limit {
                    break;
                }
                let t = Instant::now();
                match op(worker, seq).await {
                    Ok(()) => {
                        ops += 1;
                        latency.saturating_record(micros(t.elapsed()));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (ops, errors, latency, first_error)
        }));
    }
    let mut sample = Sample {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
        first_error: None,
    };
    for worker in workers {
        let (ops, errors, latency, first_error) = worker.await.expect("a bench worker panicked");
        sample.ops += ops;
        sample.errors += errors;
        sample
            .latency
            .add(&latency)
            .expect("histograms of equal bounds add");
        if sample.first_error.is_none() {
            sample.first_error = first_error;
        }
    }
    sample.elapsed = started.elapsed();
    sample
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Microseconds since the Unix epoch: what a message or a value carries so that its receiver,
/// on the same machine, can tell how long it took to arrive.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A value of `size` bytes that starts with the time it was made (see [`now_us`]).
pub fn stamped_value(size: usize) -> Vec<u8> {
    let mut value = format!("{:020}", now_us()).into_bytes();
    value.resize(size.max(20), b'x');
    value
}

/// The latency a stamped value shows on arrival, in microseconds.
pub fn arrival_latency_us(value: &[u8]) -> Option<u64> {
    let stamp: u64 = std::str::from_utf8(value.get(..20)?).ok()?.parse().ok()?;
    Some(now_us().saturating_sub(stamp).max(1))
}
