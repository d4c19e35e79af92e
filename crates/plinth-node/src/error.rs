//! The node's operating errors (NodeError) and a watch's end (WatchError).
//!
//! Deterministic refusals by the state machine are not here: they travel inside
//! [`plinth_core::Applied::result`], because they are outcomes of a committed command, the same on
//! every replica. A `NodeError` says the command was not run (or its fate is unknown).

use openraft::errors::{ClientWriteError, Fatal, ForwardToLeader};
use plinth_core::{Revision, StateError};

use crate::TypeConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The command breaks a limit; it was refused before reaching the log.
    #[error(transparent)]
    Invalid(StateError),
    /// This node is not the leader; the caller should retry at the leader, if one is known.
    #[error("{}", not_leader_message(*leader_id, leader_addr.as_deref()))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// The node cannot serve the request now (no quorum, leader changed mid-write, timeout).
    #[error("{0}")]
    Unavailable(String),
    /// The log or a snapshot could not be read or written; the node stops serving writes.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The configuration cannot work; the node did not start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A membership change the cluster cannot make as asked (an unknown node, a change already in
    /// progress, removing the last voter).
    #[error("{0}")]
    Refused(String),
    /// The node is shutting down or has shut down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

fn not_leader_message(leader_id: Option<u64>, leader_addr: Option<&str>) -> String {
    match (leader_id, leader_addr) {
        (Some(id), Some(addr)) => {
            format!("this node is not the leader; the leader is node {id} at {addr}")
        }
        (Some(id), None) => format!("this node is not the leader; the leader is node {id}"),
        _ => "this node is not the leader and no leader is known".to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Events the watcher still needed were compacted away; it must re-read the state and watch
    /// again from the current revision.
    #[error(
        "history up to revision {compacted_revision} has been compacted; re-read and watch again"
    )]
    Compacted { compacted_revision: Revision },
    /// The node shut down; the watcher should reconnect (to another node, or after a restart).
    #[error("the node is shutting down")]
    ShuttingDown,
}

pub(crate) fn not_leader(f: ForwardToLeader<TypeConfig>) -> NodeError {
    NodeError::NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.map(|n| n.addr),
    }
}

pub(crate) fn from_write_error(e: ClientWriteError<TypeConfig>) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(f),
        ClientWriteError::LogEntryDiscarded(f) => NodeError::Unavailable(format!(
            "leadership changed before the write committed; it may or may not have been applied ({})",
            not_leader(f)
        )),
        ClientWriteError::ChangeMembershipError(e) => {
            NodeError::Refused(format!("the membership change was refused: {e}"))
        }
        ClientWriteError::PreconditionFailed(e) => NodeError::Unavailable(e.to_string()),
    }
}

pub(crate) fn from_fatal(f: Fatal<TypeConfig>) -> NodeError {
    match f {
        Fatal::Stopped => NodeError::ShuttingDown,
        Fatal::StorageError(e) => NodeError::Storage(e.to_string()),
        Fatal::Panicked => {
            NodeError::Unavailable("the raft core panicked; restart the node".to_owned())
        }
    }
}
