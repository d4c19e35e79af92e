//! Leases: a time-to-live that resources attach to, expiring when the log's clock passes it.
//!
//! Contract: `Grant(ttl)` returns a lease whose deadline is `clock + ttl`; `KeepAlive` moves the
//! deadline to `clock + ttl` again; `Revoke` ends it at once. When the log's clock passes the
//! deadline (on a `Tick`), the lease ends, and every resource attached to it (keys and lock holds
//! today; registry instances and claims later) is released in that same revision. A new leader
//! proposes `Refresh`, which moves every deadline to at least `clock + ttl`, so that a leader whose
//! wall clock runs ahead never expires a lease earlier than the old leader would have.
//!
//! Invariants:
//! - L1: every lease is in the deadline index exactly once, at its own deadline.
//! - L2: every lease id is below `next_id`, so ids are never reused.
//! - L3: at most `LEASES_MAX` leases are alive.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{Grant, KeepAlive, LeaseCommand, LeaseInfo, LeaseOutput, Refresh, Revoke};
pub use error::{LeaseError, check_ttl};
pub use state::LeaseState;
