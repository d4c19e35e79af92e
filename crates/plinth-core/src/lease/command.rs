//! The lease commands and what they answer.

use crate::{LeaseId, Millis};
use serde::{Deserialize, Serialize};

/// A new lease; `id` may be chosen by the caller (it must be unused), else the next free id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Option<LeaseId>,
    pub ttl_ms: u64,
}

/// Moves the deadline to `clock + ttl_ms` (the ttl of the grant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    pub id: LeaseId,
}

/// Ends the lease now and releases what is attached to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub id: LeaseId,
}

/// Proposed by a new leader: every deadline becomes at least `clock + ttl_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh;

/// Every lease command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCommand {
    Grant(Grant),
    KeepAlive(KeepAlive),
    Revoke(Revoke),
    Refresh(Refresh),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOutput {
    Granted(LeaseInfo),
    KeptAlive(LeaseInfo),
    Revoked { id: LeaseId },
    Refreshed { leases: u64 },
}

/// A lease as queries and replies show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub ttl_ms: u64,
    /// The point on the log clock at which the lease ends unless kept alive.
    pub deadline: Millis,
    /// `deadline - clock` at the revision the answer was served, 0 if already due.
    pub remaining_ms: u64,
}
