//! etcd through the `etcd-client` crate: puts, linearizable gets, its lock service (a lock and an
//! unlock under a session lease) and prefix watches.

use crate::driver::{Load, Op, closed_loop, stamped_value};
use crate::workload::{Args, Outcome, Values, Workload, fanout, op, preload};
use anyhow::{Context as _, Result, bail};
use etcd_client::{Client, GetOptions, LockOptions, WatchOptions};
use futures::{FutureExt as _, StreamExt as _};
use std::sync::Arc;

async fn connect(args: &Args) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(
            Client::connect([args.endpoint.as_str()], None)
                .await
                .with_context(|| format!("connecting to etcd at {}", args.endpoint))?,
        );
    }
    Ok(clients)
}

pub async fn run(workload: Workload, args: &Args, load: &Load) -> Result<Outcome> {
    let clients = Arc::new(connect(args).await?);
    let pick = {
        let clients = clients.clone();
        move |worker: usize| clients[worker % clients.len()].clone()
    };
    let run_id = args.run_id.clone();
    let value_size = args.value_size;
    let put_op = {
        let (pick, run_id) = (pick.clone(), run_id.clone());
        let value = Arc::new(vec![b'v'; value_size]);
        op(move |worker, seq| {
            let (mut client, value) = (pick(worker), value.clone());
            let key = format!("bench/{run_id}/{seq:012}");
            async move {
                client.put(key, value.as_slice(), None).await?;
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
                let mut client = pick(worker);
                let key = format!("bench/{run_id}/{:012}", fastrand::u64(..keys));
                async move {
                    // Linearizable: etcd's default (serializable is opt-in).
                    let reply = client.get(key, None::<GetOptions>).await?;
                    if reply.kvs().is_empty() {
                        bail!("a preloaded key is missing");
                    }
                    Ok(())
                }
                .boxed()
            });
            Ok(Outcome::closed(closed_loop(load, op).await))
        }
        Workload::LockUncontended | Workload::LockContended => {
            let contended = workload == Workload::LockContended;
            // etcd's lock service holds a lock under a lease. Each worker takes one session
            // lease first, as Go's `concurrency.NewSession` does, so a cycle is a lock and an
            // unlock: etcd's fastest way, and two writes, as plinth's acquire and release are.
            let mut sessions = Vec::with_capacity(load.concurrency);
            for worker in 0..load.concurrency {
                sessions.push(pick(worker).lease_grant(600, None).await?.id());
            }
            let sessions = Arc::new(sessions);
            let op: Op = op(move |worker, _| {
                let mut client = pick(worker);
                let lease = sessions[worker];
                let name = if contended {
                    format!("bench-{run_id}")
                } else {
                    format!("bench-{run_id}-{worker}")
                };
                async move {
                    let key = client
                        .lock(name, Some(LockOptions::new().with_lease(lease)))
                        .await?
                        .key()
                        .to_vec();
                    client.unlock(key).await?;
                    Ok(())
                }
                .boxed()
            });
            Ok(Outcome::closed(closed_loop(load, op).await))
        }
        Workload::WatchFanout => {
            let prefix = format!("bench/{run_id}/fan/");
            let mut receivers: Vec<Values> = Vec::with_capacity(args.watchers);
            for i in 0..args.watchers {
                let mut client = clients[i % clients.len()].clone();
                let stream = client
                    .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
                    .await?;
                let values = futures::stream::unfold(
                    (stream, std::collections::VecDeque::new()),
                    |(mut stream, mut ready)| async move {
                        loop {
                            if let Some(value) = ready.pop_front() {
                                return Some((Ok(value), (stream, ready)));
                            }
                            match stream.message().await {
                                Ok(Some(reply)) => ready.extend(
                                    reply
                                        .events()
                                        .iter()
                                        .filter_map(|e| e.kv().map(|kv| kv.value().to_vec())),
                                ),
                                Ok(None) => return None,
                                Err(e) => {
                                    return Some((Err(anyhow::Error::from(e)), (stream, ready)));
                                }
                            }
                        }
                    },
                )
                .boxed();
                receivers.push(values);
            }
            let writer = clients[0].clone();
            let put: Op = op(move |_, seq| {
                let mut client = writer.clone();
                let key = format!("{prefix}{seq:012}");
                async move {
                    client.put(key, stamped_value(value_size), None).await?;
                    Ok(())
                }
                .boxed()
            });
            fanout(args, load, put, receivers).await
        }
        Workload::Queue => bail!("etcd has no queue"),
    }
}
