//! A plinth replica: openraft over plinth-wal (the log) and plinth-core (the state machine).
//!
//! The shape of a write: [`Node::propose`] validates the command, stamps it with the leader's wall
//! clock and hands it to openraft, which appends it to the write-ahead log (many proposals share
//! one fsync), commits it and applies it to the [`plinth_core::State`]; the caller gets the
//! [`plinth_core::Applied`] and watchers get its events. A read runs a closure against the state,
//! after an openraft read-index round when it must be linearizable.
//!
//! Architecture invariant: openraft is an implementation detail of this crate. Nothing in the
//! public API names an openraft type, so the server above depends on plinth-node and plinth-core
//! only, and an openraft upgrade stays inside this crate.
//!
//! Layout: `config` (what an operator sets), `backup` (backup files and restore), `repair` (a
//! damaged log, reported and cut), `log_store` (RaftLogStorage on the WAL), `state_machine`
//! (RaftStateMachine on core, snapshots), `network` (the Raft transport between replicas),
//! `cluster` (membership and its status), `node` (the handle: start, propose, read, wait,
//! status, shutdown), `leadership` (forming or joining a cluster, leading, a new leader's
//! duties), `snapshot_policy` (when to snapshot), `types` (status, a submitted write),
//! `waiters` (the calls waiting on a resource, woken by what applies return), `watch` (event
//! fan-out), `ticker` (the task that proposes `Tick` and a leader's duties), `error`.

mod backup;
mod cluster;
mod config;
mod error;
mod leadership;
mod log_store;
mod network;
mod node;
mod repair;
mod snapshot_policy;
mod state_machine;
mod ticker;
mod types;
mod waiters;
mod watch;

use std::fmt;

use plinth_core::{Command, Request};
use serde::{Deserialize, Serialize};

pub use backup::{BackupInfo, inspect_backup, stage_restore};
pub use cluster::{ClusterStatus, Member, check_address};
pub use config::NodeConfig;
pub use error::{NodeError, WatchError};
pub use network::{PeerServer, PeerService};
pub use node::Node;
pub use plinth_wal::IdleSync;
pub use repair::{RepairReport, repair};
pub use types::{Status, Submitted};
pub use watch::{WatchBatch, Watcher};

/// The log payload: a core [`Request`]. A newtype only because openraft requires `Display` of its
/// application data and the orphan rule forbids implementing it here for a core type; it encodes
/// exactly as the `Request` it wraps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct LogRequest(pub(crate) Request);

impl fmt::Display for LogRequest {
    /// Short on purpose: openraft logs entries with it, and a value may be a megabyte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0.command {
            Command::Tick => "tick",
            Command::Kv(_) => "kv",
            Command::Lease(_) => "lease",
            Command::Lock(_) => "lock",
            Command::Queue(_) => "queue",
            Command::Schedule(_) => "schedule",
            Command::Config(_) => "config",
            Command::Registry(_) => "registry",
        };
        write!(f, "{kind}@{}", self.0.stamp)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of a plinth replica.
    pub(crate) TypeConfig:
        D = LogRequest,
        R = plinth_core::Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;

/// openraft's own conformance suite for storage, run against the real WAL-backed log store and
/// the real state machine.
#[cfg(test)]
mod storage_suite {
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use crate::TypeConfig;
    use crate::log_store::LogStore;
    use crate::state_machine::StateMachineStore;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let opts = plinth_wal::WalOptions {
                segment_bytes_max: 4096,
                sync: false,
                ..plinth_wal::WalOptions::default()
            };
            let log = LogStore::open(&dir.path().join("wal"), opts).expect("log store opens");
            let sm =
                StateMachineStore::open(&dir.path().join("snapshot")).expect("state machine opens");
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_store_and_state_machine_pass_the_openraft_storage_suite() {
        Suite::test_all(Builder)
            .await
            .expect("openraft storage suite");
    }
}
