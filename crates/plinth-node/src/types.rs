//! The values the node hands out: its status, and the answer to a submitted write.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::Fatal;
use openraft::raft::ClientWriteResult;
use plinth_core::{Applied, Revision};

use crate::error::{NodeError, from_fatal, from_write_error};
use crate::{Raft, TypeConfig};

/// A snapshot of the node's position, for health checks and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Index of the last entry in the log (the first entry, the initial membership, is index 0).
    pub last_log_index: u64,
    /// Index of the last entry applied to the state.
    pub applied_index: u64,
    pub revision: Revision,
    pub wal_bytes: u64,
    /// Data fsyncs of the write-ahead log since this node started.
    pub wal_fsyncs: u64,
    pub wal_segments: usize,
}

/// The answer to a write handed to the log by [`crate::Node::submit`].
pub struct Submitted {
    pub(crate) answer: tokio::sync::oneshot::Receiver<ClientWriteResult<TypeConfig>>,
    pub(crate) raft: Raft,
}

impl Submitted {
    /// Waits until the write is applied (or refused) and answers what it did. A second call
    /// has nothing left to wait for and says so.
    pub async fn outcome(&mut self) -> Result<Applied, NodeError> {
        if self.answer.is_terminated() {
            return Err(NodeError::Unavailable(
                "this write's outcome was already taken".to_owned(),
            ));
        }
        match (&mut self.answer).await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(e)) => Err(from_write_error(e)),
            Err(_) => Err(core_stop_error(&self.raft).await),
        }
    }
}

/// How long a write dropped unanswered waits for the raft core to report why it stopped.
const CORE_STOP_WAIT: Duration = Duration::from_secs(1);

/// Why the raft core dropped a write unanswered: the fatal error it stopped with, as its metrics
/// report it. A core task that ended without reporting one panicked.
async fn core_stop_error(raft: &Raft) -> NodeError {
    let mut metrics = raft.metrics();
    let stopped = tokio::time::timeout(CORE_STOP_WAIT, async move {
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.clone();
            }
            if metrics.changed().await.is_err() {
                return Fatal::Panicked;
            }
        }
    })
    .await;
    match stopped {
        Ok(fatal) => from_fatal(fatal),
        Err(_) => NodeError::Unavailable(
            "the write was dropped without an answer; it may or may not have been applied"
                .to_owned(),
        ),
    }
}
