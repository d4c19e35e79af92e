//! The lock commands and what they answer.

use crate::{FencingToken, LeaseId, Millis, Revision};
use serde::{Deserialize, Serialize};

/// Takes a permit of `name` with a fresh lease of `ttl_ms`; queues for up to `wait_ms` if none
/// is free (0: fail at once). `value` is what an election leader proclaims. `node` is the
/// node whose call waits for the grant, so that a restarted node can abandon the waits its
/// previous process left behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub name: String,
    pub owner: String,
    pub ttl_ms: u64,
    pub wait_ms: u64,
    pub permits: u32,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub node: u64,
}

/// Keeps the hold's lease alive, with a new ttl if one is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renew {
    pub name: String,
    pub token: FencingToken,
    pub ttl_ms: Option<u64>,
}

/// Ends the hold (revoking its lease) and grants the next waiter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub token: FencingToken,
}

/// Replaces the value a holder carries (an election leader's proclamation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proclaim {
    pub name: String,
    pub token: FencingToken,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The caller behind `ticket` went away: dequeue it, or release the hold it was granted but
/// never told of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandon {
    pub name: String,
    pub ticket: Revision,
}

/// Node `node` restarted: no call of its previous process is waiting any more, so every
/// waiter it queued leaves the queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonNode {
    pub node: u64,
}

/// Every lock and election command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    Acquire(Acquire),
    Renew(Renew),
    Release(Release),
    Proclaim(Proclaim),
    Abandon(Abandon),
    AbandonNode(AbandonNode),
}

/// What an acquire did: took a permit, or queued for one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquired {
    Held(HoldInfo),
    /// Queued behind `position` others; the caller waits for its ticket to be granted.
    Queued {
        ticket: Revision,
        position: u64,
        deadline: Millis,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutput {
    Acquire(Acquired),
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
