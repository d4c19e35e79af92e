//! The peers: the same workloads through each system's own client library. A workload a system
//! does not offer (a queue on etcd, say) is refused with a sentence saying so.

mod etcd;
mod nats;
mod rabbitmq;
mod redis;

use crate::System;
use crate::driver::Load;
use crate::workload::{Args, Outcome, Workload};
use anyhow::{Result, bail};

pub async fn run(system: System, workload: Workload, args: &Args, load: &Load) -> Result<Outcome> {
    match (system, workload) {
        (System::Etcd, Workload::Queue) => bail!("etcd has no queue"),
        (System::Etcd, w) => etcd::run(w, args, load).await,
        (System::Redis, Workload::LockUncontended | Workload::LockContended | Workload::KvPut) => {
            redis::run(workload, args, load).await
        }
        (System::Rabbitmq | System::Nats, w) if w != Workload::Queue => {
            bail!("{} is measured on the queue workload only", system.name())
        }
        (System::Rabbitmq, _) => rabbitmq::run(args, load).await,
        (System::Nats, _) => nats::run(args, load).await,
        (System::Redis, w) => bail!(
            "redis is measured on kv-put and the lock workloads only, not {}",
            w.name()
        ),
        (System::Plinth, _) => unreachable!("plinth is not a peer"),
    }
}
