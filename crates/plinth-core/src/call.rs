//! One type per command, each naming its output: what the server proposes and what it gets
//! back, checked by the compiler. `Call::output` takes a command's own output out of what
//! applying it answered; the table below is the one place that pairs them.
//!
//! Adding a command: its struct in the primitive's `command.rs`, a variant of that primitive's
//! command enum (appended: the log encodes variants by position), its apply, and a line here.

use crate::config::{self, ConfigCommand, ConfigOutput, ConfigVersion};
use crate::kv::{self, KeyValue, KvCommand, KvOutput, TxnOutput};
use crate::lease::{self, LeaseCommand, LeaseInfo, LeaseOutput};
use crate::lock::{self, Acquired, HoldInfo, LockCommand, LockOutput};
use crate::queue::{self, QueueCommand, QueueOutput, Received, SendResult};
use crate::registry::{self, HeartbeatOk, InstanceInfo, RegistryCommand, RegistryOutput};
use crate::schedule::{self, Claimed, Failed, RunId, ScheduleCommand, ScheduleOutput};
use crate::{Command, FencingToken, LeaseId, Millis, Output, Revision};

/// A command whose apply answers one type of output.
pub trait Call: Into<Command> {
    type Output;

    /// This command's output, out of what applying it answered. Any other output cannot follow
    /// from the command: it is a bug, and panics.
    fn output(output: Output) -> Self::Output;
}

fn unrelated<C>(output: Output) -> ! {
    panic!(
        "the state machine answered a {} with an unrelated output: {output:?}",
        std::any::type_name::<C>()
    )
}

macro_rules! calls {
    ($($command:ty => $primitive:ident($variant:path) -> $output:ty { $pattern:pat => $value:expr })*) => {$(
        impl From<$command> for Command {
            fn from(command: $command) -> Command {
                Command::$primitive($variant(command))
            }
        }

        impl Call for $command {
            type Output = $output;

            fn output(output: Output) -> $output {
                match output {
                    Output::$primitive($pattern) => $value,
                    other => unrelated::<$command>(other),
                }
            }
        }
    )*};
}

calls! {
    kv::Put => Kv(KvCommand::Put) -> Option<KeyValue> { KvOutput::Put { prev } => prev }
    kv::Delete => Kv(KvCommand::Delete) -> Vec<KeyValue> { KvOutput::Delete { deleted } => deleted }
    kv::Txn => Kv(KvCommand::Txn) -> TxnOutput { KvOutput::Txn(out) => out }
    kv::Compact => Kv(KvCommand::Compact) -> Revision {
        KvOutput::Compact { compacted_revision } => compacted_revision
    }

    lease::Grant => Lease(LeaseCommand::Grant) -> LeaseInfo { LeaseOutput::Granted(info) => info }
    lease::KeepAlive => Lease(LeaseCommand::KeepAlive) -> LeaseInfo {
        LeaseOutput::KeptAlive(info) => info
    }
    lease::Revoke => Lease(LeaseCommand::Revoke) -> LeaseId { LeaseOutput::Revoked { id } => id }
    lease::Refresh => Lease(LeaseCommand::Refresh) -> u64 {
        LeaseOutput::Refreshed { leases } => leases
    }

    lock::Acquire => Lock(LockCommand::Acquire) -> Acquired { LockOutput::Acquire(out) => out }
    lock::Renew => Lock(LockCommand::Renew) -> HoldInfo { LockOutput::Renewed(hold) => hold }
    lock::Release => Lock(LockCommand::Release) -> FencingToken {
        LockOutput::Released { token } => token
    }
    lock::Proclaim => Lock(LockCommand::Proclaim) -> HoldInfo {
        LockOutput::Proclaimed(hold) => hold
    }
    lock::Abandon => Lock(LockCommand::Abandon) -> Option<FencingToken> {
        LockOutput::Abandoned { released, .. } => released
    }
    lock::AbandonNode => Lock(LockCommand::AbandonNode) -> u64 {
        LockOutput::AbandonedNode { waiters } => waiters
    }

    queue::Create => Queue(QueueCommand::Create) -> bool {
        QueueOutput::Created { existed } => existed
    }
    queue::Delete => Queue(QueueCommand::Delete) -> u64 {
        QueueOutput::Deleted { messages } => messages
    }
    queue::Send => Queue(QueueCommand::Send) -> Vec<SendResult> {
        QueueOutput::Sent(results) => results
    }
    queue::Receive => Queue(QueueCommand::Receive) -> Received {
        QueueOutput::Received(out) => out
    }
    queue::AckAndReceive => Queue(QueueCommand::AckAndReceive) -> Received {
        QueueOutput::Received(out) => out
    }
    queue::Ack => Queue(QueueCommand::Ack) -> () { QueueOutput::Acked => () }
    queue::Nack => Queue(QueueCommand::Nack) -> bool {
        QueueOutput::Nacked { dead_lettered } => dead_lettered
    }
    queue::ChangeVisibility => Queue(QueueCommand::ChangeVisibility) -> Millis {
        QueueOutput::VisibilityChanged { visible_at } => visible_at
    }
    queue::Redrive => Queue(QueueCommand::Redrive) -> u64 { QueueOutput::Redriven { moved } => moved }
    queue::Purge => Queue(QueueCommand::Purge) -> u64 {
        QueueOutput::Purged { messages } => messages
    }

    schedule::Create => Schedule(ScheduleCommand::Create) -> Option<Millis> {
        ScheduleOutput::Created { next_fire } => next_fire
    }
    schedule::Cancel => Schedule(ScheduleCommand::Cancel) -> u64 {
        ScheduleOutput::Cancelled { runs } => runs
    }
    schedule::Pause => Schedule(ScheduleCommand::Pause) -> () { ScheduleOutput::Paused => () }
    schedule::Resume => Schedule(ScheduleCommand::Resume) -> Option<Millis> {
        ScheduleOutput::Resumed { next_fire } => next_fire
    }
    schedule::Trigger => Schedule(ScheduleCommand::Trigger) -> RunId {
        ScheduleOutput::Triggered { run } => run
    }
    schedule::Claim => Schedule(ScheduleCommand::Claim) -> Vec<Claimed> {
        ScheduleOutput::Claimed(claims) => claims
    }
    schedule::Heartbeat => Schedule(ScheduleCommand::Heartbeat) -> Millis {
        ScheduleOutput::Heartbeat { until } => until
    }
    schedule::Complete => Schedule(ScheduleCommand::Complete) -> () {
        ScheduleOutput::Completed => ()
    }
    schedule::Fail => Schedule(ScheduleCommand::Fail) -> Failed { ScheduleOutput::Failed(out) => out }

    config::Put => Config(ConfigCommand::Put) -> ConfigVersion {
        ConfigOutput::Committed(version) => version
    }
    config::Rollback => Config(ConfigCommand::Rollback) -> ConfigVersion {
        ConfigOutput::Committed(version) => version
    }
    config::SetSchema => Config(ConfigCommand::SetSchema) -> () { ConfigOutput::SchemaSet => () }
    config::SetRetention => Config(ConfigCommand::SetRetention) -> u64 {
        ConfigOutput::RetentionSet { base_version } => base_version
    }

    registry::Register => Registry(RegistryCommand::Register) -> InstanceInfo {
        RegistryOutput::Registered(instance) => instance
    }
    registry::Heartbeat => Registry(RegistryCommand::Heartbeat) -> HeartbeatOk {
        RegistryOutput::HeartbeatOk(out) => out
    }
    registry::SetStatus => Registry(RegistryCommand::SetStatus) -> InstanceInfo {
        RegistryOutput::StatusSet(instance) => instance
    }
    registry::Deregister => Registry(RegistryCommand::Deregister) -> () {
        RegistryOutput::Deregistered => ()
    }
}
