//! The lease commands and what they answer.

use crate::{LeaseId, Millis};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCommand {
    /// A new lease; `id` may be chosen by the caller (it must be unused), else the next free id.
    Grant { id: Option<LeaseId>, ttl_ms: u64 },
    /// Moves the deadline to `clock + ttl_ms` (the ttl of the grant).
    KeepAlive { id: LeaseId },
    /// Ends the lease now and releases what is attached to it.
    Revoke { id: LeaseId },
    /// Proposed by a new leader: every deadline becomes at least `clock + ttl_ms`.
    Refresh,
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
