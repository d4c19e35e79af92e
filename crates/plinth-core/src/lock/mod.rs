//! Locks, counting semaphores and leader elections, with fencing tokens.
//!
//! Contract: `Acquire(name, owner, ttl, wait, permits)` grants a hold at once if fewer than
//! `permits` holders exist and nobody is queued; otherwise, with a wait, the caller is queued and
//! served first-in first-out, giving up when its deadline passes on the log clock. Every hold gets
//! its own lease of `ttl` and a fencing token; the hold ends in the same revision as its lease
//! (expiry, `Release`, or a `Revoke` through the lease API), and the next waiter is granted in that
//! revision. `Renew` and `Release` take the token, and a token that no longer holds the lock is
//! refused with `STALE_TOKEN`, changing nothing. KV `Txn` compares `fence(lock, token)` against
//! the current holders, so a write can be made conditional on still holding the lock.
//!
//! The fencing token is the revision of the grant. One revision can grant several holds (a lease
//! expiry that frees two locks, or two permits of one semaphore), so a token is the revision of its
//! grant or, when that number was already handed out, the next number above the last token: tokens
//! come from one sequence that never goes backwards, so they strictly increase per lock and are
//! unique across locks, and a token is never smaller than the revision that granted it.
//!
//! An election is a one-permit lock whose holder carries a value: `Campaign` is an acquire,
//! `Proclaim` changes the leader's value, `Resign` is a release, and the token is the leader's
//! term. Locks and elections share one namespace.
//!
//! Invariants:
//! - LK1: every lock has 1..=`LOCK_PERMITS_MAX` permits and at most that many holders.
//! - LK2: a lock with waiters has all its permits taken (nobody waits for a free permit).
//! - LK3: every holder's lease is alive, and the lease index maps exactly the holders' leases.
//! - LK4: tokens are unique across all holders, at least their holder's ticket, and at most the
//!   last token handed out.
//! - LK5: waiters are queued in ticket order (FIFO), and the deadline index lists exactly them.
//! - LK6: a lock with no holder and no waiter is not kept.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    Abandon, AbandonNode, Acquire, Acquired, HoldInfo, LockCommand, LockInfo, LockOutput, Proclaim,
    Release, Renew, TicketStatus, WaiterInfo,
};
pub use error::LockError;
pub use state::LockState;
