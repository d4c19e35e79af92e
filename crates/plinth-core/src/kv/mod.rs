//! The key-value store: an ordered map with one global revision and a watchable event history.
//!
//! Contract: every committed command that changes state gets the next revision, shared by every
//! key it touches. `Txn` applies its `then` or its `else` branch atomically, in one revision.
//! A key put with a lease exists only while the lease is alive; it is deleted in the revision in
//! which the lease ends. The history holds every event with a revision in
//! `(compacted_revision, revision]`; a watch asks for the events after a revision and gets them
//! all, in order, or `COMPACTED` with the revision to re-read from. Reads are at the latest
//! revision (no multi-version reads: history keeps events, not old versions of the map).
//!
//! Invariants:
//! - K1: every key's `create_revision <= mod_revision <= revision`, and `version >= 1`.
//! - K2: a key carries a lease only if that lease is alive, and the lease index lists exactly the
//!   keys that carry each lease.
//! - K3: history revisions are non-decreasing, all in `(compacted_revision, revision]`, and
//!   contiguous: no revision that produced KV events is missing after `compacted_revision`.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    Compact, Compare, CompareOp, CompareTarget, Delete, Event, EventKind, KeySpan, KeyValue,
    KvCommand, KvOutput, Put, RangeOutput, RangeRequest, Txn, TxnOp, TxnOpOutput, TxnOutput,
};
pub use error::{KeyField, KvError};
pub use state::KvState;
