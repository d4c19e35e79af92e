//! Every limit of the state machine, named with its unit last. Exceeding one is an error that
//! names the field and the limit, never a truncation.

/// KV keys are 1..=4096 arbitrary bytes.
pub const KEY_BYTES_MAX: usize = 4096;
/// KV values are at most 1 MiB.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// A Range returns at most this many keys per call; `more` tells the caller to continue.
pub const RANGE_LIMIT_MAX: usize = 10_000;
/// Compares in one Txn.
pub const TXN_COMPARES_MAX: usize = 128;
/// Operations in one branch of a Txn.
pub const TXN_OPS_MAX: usize = 128;
/// A lease lives at least this long; shorter would expire between two ticks.
pub const LEASE_TTL_MS_MIN: u64 = 500;
/// A lease lives at most a week per grant or keep-alive.
pub const LEASE_TTL_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Live leases at once.
pub const LEASES_MAX: usize = 1_000_000;
/// Events kept in the watch history; older ones are compacted automatically.
pub const HISTORY_EVENTS_MAX: usize = 100_000;
/// Events older than this (on the log clock) are compacted automatically.
pub const HISTORY_RETENTION_MS: u64 = 3600 * 1000;
