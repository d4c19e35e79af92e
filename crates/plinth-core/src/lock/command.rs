//! The lock commands and what they answer.

use crate::{FencingToken, LeaseId, Millis, Revision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Takes a permit of `name` with a fresh lease of `ttl_ms`; queues for up to `wait_ms` if none
    /// is free (0: fail at once). `value` is what an election leader proclaims. `node` is the
    /// node whose call waits for the grant, so that a restarted node can abandon the waits its
    /// previous process left behind.
    Acquire {
        name: String,
        owner: String,
        ttl_ms: u64,
        wait_ms: u64,
        permits: u32,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        node: u64,
    },
    /// Keeps the hold's lease alive, with a new ttl if one is given.
    Renew {
        name: String,
        token: FencingToken,
        ttl_ms: Option<u64>,
    },
    /// Ends the hold (revoking its lease) and grants the next waiter.
    Release { name: String, token: FencingToken },
    /// Replaces the value a holder carries (an election leader's proclamation).
    Proclaim {
        name: String,
        token: FencingToken,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// The caller behind `ticket` went away: dequeue it, or release the hold it was granted but
    /// never told of.
    Abandon { name: String, ticket: Revision },
    /// Node `node` restarted: no call of its previous process is waiting any more, so every
    /// waiter it queued leaves the queues.
    AbandonNode { node: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutput {
    Acquired(HoldInfo),
    /// Queued behind `position` others; the caller waits for its ticket to be granted.
    Queued {
        ticket: Revision,
        position: u64,
        deadline: Millis,
    },
    Renewed(HoldInfo),
    Released {
        token: FencingToken,
    },
    Proclaimed(HoldInfo),
    Abandoned {
        ticket: Revision,
        /// The caller had been granted a hold, which was released.
        released: Option<FencingToken>,
    },
    AbandonedNode {
        waiters: u64,
    },
}

/// A hold as queries and replies show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInfo {
    pub name: String,
    pub owner: String,
    pub token: FencingToken,
    pub lease: LeaseId,
    pub ttl_ms: u64,
    /// The point on the log clock at which the hold ends unless renewed.
    pub deadline: Millis,
    /// `deadline - clock` at the revision the answer was served.
    pub remaining_ms: u64,
    /// The revision of the acquire that led to this hold.
    pub ticket: Revision,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterInfo {
    pub owner: String,
    pub ticket: Revision,
    /// When the waiter gives up, on the log clock.
    pub deadline: Millis,
}

/// A lock as `Get` shows it. A lock nobody holds or waits for has no record: it shows 0 permits
/// and no holders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub name: String,
    pub permits: u32,
    /// In token order: the first is an election's leader.
    pub holders: Vec<HoldInfo>,
    /// In queue order.
    pub waiters: Vec<WaiterInfo>,
}

/// Where a queued acquire stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketStatus {
    Held(HoldInfo),
    Waiting {
        position: u64,
    },
    /// Neither queued nor holding: its deadline passed, it was abandoned, or the hold it got has
    /// already ended.
    Gone,
}
