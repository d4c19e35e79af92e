//! Redis, the non-durable reference for locks (`SET key token NX PX` and a scripted release that
//! deletes the key only if it still holds the token), and durable puts with `appendfsync always`.

use crate::driver::{Load, Op, closed_loop};
use crate::workload::{Args, Outcome, Workload, op};
use anyhow::{Context as _, Result, bail};
use futures::FutureExt as _;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::Duration;

const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

pub async fn run(workload: Workload, args: &Args, load: &Load) -> Result<Outcome> {
    let client = redis::Client::open(args.endpoint.as_str())
        .with_context(|| format!("opening redis at {}", args.endpoint))?;
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(
            client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to redis at {}", args.endpoint))?,
        );
    }
    let connections: Arc<Vec<MultiplexedConnection>> = Arc::new(connections);
    let run_id = args.run_id.clone();
    let value = Arc::new(vec![b'v'; args.value_size]);
    let release = Arc::new(redis::Script::new(RELEASE));
    let op: Op = match workload {
        Workload::KvPut => op(move |worker, seq| {
            let mut c = connections[worker % connections.len()].clone();
            let (key, value) = (format!("bench/{run_id}/{seq:012}"), value.clone());
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_slice())
                    .query_async::<()>(&mut c)
                    .await?;
                Ok(())
            }
            .boxed()
        }),
        Workload::LockUncontended | Workload::LockContended => {
            let contended = workload == Workload::LockContended;
            op(move |worker, seq| {
                let mut c = connections[worker % connections.len()].clone();
                let release = release.clone();
                let name = if contended {
                    format!("bench-{run_id}")
                } else {
                    format!("bench-{run_id}-{worker}")
                };
                let token = format!("{worker}-{seq}");
                async move {
                    // Redis has no waiting acquire: a contended one retries until it gets in.
                    loop {
                        let got: Option<String> = redis::cmd("SET")
                            .arg(&name)
                            .arg(&token)
                            .arg("NX")
                            .arg("PX")
                            .arg(10_000)
                            .query_async(&mut c)
                            .await?;
                        if got.is_some() {
                            break;
                        }
                        if !contended {
                            bail!("an uncontended lock was held");
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    let released: i64 = release.key(&name).arg(&token).invoke_async(&mut c).await?;
                    if released != 1 {
                        bail!("the lock was lost before its release");
                    }
                    Ok(())
                }
                .boxed()
            })
        }
        other => bail!(
            "redis is measured on kv-put and the lock workloads only, not {}",
            other.name()
        ),
    };
    Ok(Outcome::closed(closed_loop(load, op).await))
}
