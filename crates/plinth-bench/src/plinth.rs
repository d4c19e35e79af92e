//! The workloads against plinth, through the plinth SDK (gRPC).

use crate::driver::{Load, Op, arrival_latency_us, closed_loop, histogram, stamped_value};
use crate::workload::{Args, Outcome, Values, Workload, fanout, op, preload};
use anyhow::{Context as _, Result, bail};
use futures::{FutureExt as _, StreamExt as _};
use plinth_client::{Client, LockOptions, WatchOptions, pb};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn connect(args: &Args) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(
            Client::connect(args.endpoint.clone())
                .await
                .with_context(|| format!("connecting to plinth at {}", args.endpoint))?,
        );
    }
    Ok(clients)
}

pub async fn run(workload: Workload, args: &Args, load: &Load) -> Result<Outcome> {
    let clients = Arc::new(connect(args).await?);
    let idle = IdleWaiters::open(args).await?;
    let outcome = run_workload(workload, args, load, clients).await;
    idle.close();
    outcome
}

/// Long polls on an empty queue and acquires queued behind a held lock, open for the whole run:
/// callers that wait for something no write of the run does.
struct IdleWaiters {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Waiters per connection (HTTP/2 allows a server to cap the streams on one connection).
const IDLE_WAITERS_PER_CONNECTION: usize = 100;

impl IdleWaiters {
    async fn open(args: &Args) -> Result<IdleWaiters> {
        let n = args.idle_waiters;
        let mut tasks = Vec::new();
        if n == 0 {
            return Ok(IdleWaiters { tasks });
        }
        let connections = n.div_ceil(IDLE_WAITERS_PER_CONNECTION);
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            clients.push(
                Client::connect(args.endpoint.clone())
                    .await
                    .with_context(|| format!("connecting to plinth at {}", args.endpoint))?,
            );
        }
        let (queue, lock) = (
            format!("bench-{}-idle", args.run_id),
            format!("bench-{}-held", args.run_id),
        );
        clients[0]
            .queue_create(queue.clone(), pb::QueueConfig::default())
            .await?;
        let holder = LockOptions::new("holder").ttl(Duration::from_secs(3600));
        clients[0].lock_acquire(lock.clone(), &holder).await?;
        for i in 0..n {
            let client = clients[i % connections].clone();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let request = pb::QueueReceiveRequest {
                        queue: queue.clone(),
                        max: 1,
                        wait_ms: 20_000,
                        ..Default::default()
                    };
                    if client.queue_receive_request(request).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
            let client = clients[i % connections].clone();
            let lock = lock.clone();
            tasks.push(tokio::spawn(async move {
                let options = LockOptions::new(format!("idle-{i}"))
                    .ttl(Duration::from_secs(60))
                    .wait(Duration::from_secs(300));
                loop {
                    if client.lock_acquire(lock.clone(), &options).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        // Every waiter queued before the clock starts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let waiters = clients[0].lock_get(lock.clone()).await?.waiters.len();
            if waiters >= n {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("only {waiters} of {n} lock waiters queued within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The long polls go out with the acquires; give the last of them a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(IdleWaiters { tasks })
    }

    fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn run_workload(
    workload: Workload,
    args: &Args,
    load: &Load,
    clients: Arc<Vec<Client>>,
) -> Result<Outcome> {
    let pick = {
        let clients = clients.clone();
        move |worker: usize| clients[worker % clients.len()].clone()
    };
    let run_id = args.run_id.clone();
    let value_size = args.value_size;
    // Puts of unique keys: the kv-put and kv-load workloads, and the preload of kv-get.
    let put_op: Op = {
        let (pick, run_id) = (pick.clone(), run_id.clone());
        let value = Arc::new(vec![b'v'; value_size]);
        op(move |worker, seq| {
            let (client, value) = (pick(worker), value.clone());
            let key = format!("bench/{run_id}/{seq:012}");
            async move {
                client.put(key, value.as_slice()).await?;
                Ok(())
            }
            .boxed()
        })
    };
    match workload {
        Workload::KvPut | Workload::KvLoad => Ok(Outcome::closed(closed_loop(load, put_op).await)),
        Workload::KvGet => {
            let keys = args.keys;
            preload(keys, put_op).await?;
            let op: Op = op(move |worker, _| {
                let client = pick(worker);
                let key = format!("bench/{run_id}/{:012}", fastrand::u64(..keys));
                async move {
                    match client.get(key).await? {
                        Some(_) => Ok(()),
                        None => bail!("a preloaded key is missing"),
                    }
                }
                .boxed()
            });
            Ok(Outcome::closed(closed_loop(load, op).await))
        }
        Workload::LockUncontended | Workload::LockContended => {
            let contended = workload == Workload::LockContended;
            let op: Op = op(move |worker, _| {
                let client = pick(worker);
                let (name, options) = if contended {
                    let options = LockOptions::new(format!("w{worker}"))
                        .ttl(Duration::from_secs(10))
                        .wait(Duration::from_secs(60));
                    (format!("bench-{run_id}"), options)
                } else {
                    let options =
                        LockOptions::new(format!("w{worker}")).ttl(Duration::from_secs(10));
                    (format!("bench-{run_id}-{worker}"), options)
                };
                async move {
                    let hold = client.lock_acquire(name.clone(), &options).await?;
                    client.lock_release(name, hold.token).await?;
                    Ok(())
                }
                .boxed()
            });
            Ok(Outcome::closed(closed_loop(load, op).await))
        }
        Workload::Queue => {
            let queue = format!("bench-{run_id}");
            clients[0]
                .queue_create(queue.clone(), pb::QueueConfig::default())
                .await?;
            let batch = args.batch;
            let delivery = Arc::new(Mutex::new(histogram()));
            let recorded = delivery.clone();
            // Each worker acks what it took with its next receive, one write for both, as the
            // SDK's consumer does (the peers' acks are not waited for either).
            let to_ack: Arc<Vec<Mutex<Vec<String>>>> = Arc::new(
                (0..load.concurrency.max(1))
                    .map(|_| Mutex::default())
                    .collect(),
            );
            let (left, first) = (to_ack.clone(), clients[0].clone());
            let op: Op = op(move |worker, _| {
                let (client, queue, delivery) = (pick(worker), queue.clone(), recorded.clone());
                let to_ack = to_ack.clone();
                async move {
                    if batch == 1 {
                        client
                            .queue_send(queue.clone(), stamped_value(value_size))
                            .await?;
                    } else {
                        let entries = (0..batch)
                            .map(|_| pb::QueueSendEntry {
                                body: stamped_value(value_size),
                                ..Default::default()
                            })
                            .collect();
                        client.queue_send_batch(queue.clone(), entries).await?;
                    }
                    // Take as many as were sent (any producer's), so the queue stays level.
                    let mut got = 0;
                    while got < batch {
                        let want = u32::try_from(batch - got).unwrap_or(u32::MAX);
                        let ack = to_ack[worker].lock().expect("not poisoned").clone();
                        let acking = ack.len();
                        // On an error the receipts stay listed, for the next receive.
                        let reply = client
                            .queue_receive_request(pb::QueueReceiveRequest {
                                queue: queue.clone(),
                                max: want,
                                wait_ms: 5_000,
                                ack,
                                ..Default::default()
                            })
                            .await?;
                        to_ack[worker].lock().expect("not poisoned").drain(..acking);
                        if let Some(failure) = reply.ack_failures.first() {
                            bail!(
                                "receipt {} did not ack: {:?}",
                                failure.receipt,
                                failure.error
                            );
                        }
                        if (reply.acked as usize) < acking {
                            bail!("the server did not ack with the receive (a build older than acks on receives)");
                        }
                        if reply.messages.is_empty() {
                            bail!("a receive waited 5 s on a queue that should hold messages");
                        }
                        let mut taken = to_ack[worker].lock().expect("not poisoned");
                        for d in reply.messages {
                            if let Some(us) = arrival_latency_us(&d.body) {
                                delivery.lock().expect("not poisoned").saturating_record(us);
                            }
                            taken.push(d.receipt);
                            got += 1;
                        }
                    }
                    Ok(())
                }
                .boxed()
            });
            let sample = closed_loop(load, op).await;
            // What each worker took last, after the clock stopped.
            let queue = format!("bench-{run_id}");
            for receipts in left.iter() {
                let receipts = std::mem::take(&mut *receipts.lock().expect("not poisoned"));
                for receipt in receipts {
                    first.queue_ack(queue.clone(), receipt).await?;
                }
            }
            let delivery = delivery.lock().expect("not poisoned").clone();
            Ok(Outcome::with_delivery(sample, delivery, batch as u64))
        }
        Workload::WatchFanout => {
            let prefix = format!("bench/{run_id}/fan/");
            let mut watches = Vec::with_capacity(args.watchers);
            for i in 0..args.watchers {
                let watch = clients[i % clients.len()]
                    .watch(WatchOptions::prefix(prefix.clone()))
                    .await?;
                watches.push(watch);
            }
            let receivers: Vec<Values> = watches
                .into_iter()
                .map(|watch| {
                    futures::stream::unfold(watch, |mut watch| async move {
                        let item = match watch.next().await? {
                            Ok(event) => Ok(event.kv.map(|kv| kv.value).unwrap_or_default()),
                            Err(e) => Err(anyhow::Error::from(e)),
                        };
                        Some((item, watch))
                    })
                    .boxed()
                })
                .collect();
            let writer = clients[0].clone();
            let put: Op = op(move |_, seq| {
                let client = writer.clone();
                let key = format!("{prefix}{seq:012}");
                async move {
                    client.put(key, stamped_value(value_size)).await?;
                    Ok(())
                }
                .boxed()
            });
            fanout(args, load, put, receivers).await
        }
    }
}
