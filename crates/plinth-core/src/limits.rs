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
/// Resource names (locks, elections, queues, ...) are 1..=256 bytes of `[A-Za-z0-9._/-]`.
pub const NAME_BYTES_MAX: usize = 256;
/// A lock holder's or candidate's owner string: 1..=256 bytes.
pub const OWNER_BYTES_MAX: usize = 256;
/// An acquire or campaign waits at most five minutes; callers that want longer ask again.
pub const LOCK_WAIT_MS_MAX: u64 = 5 * 60 * 1000;
/// A counting semaphore has at most this many permits.
pub const LOCK_PERMITS_MAX: u32 = 1024;
/// Callers queued on one lock at once.
pub const LOCK_WAITERS_MAX: usize = 10_000;
/// Locks (and elections) in use at once.
pub const LOCKS_MAX: usize = 1_000_000;
/// An election leader's value is at most 64 KiB.
pub const ELECTION_VALUE_BYTES_MAX: usize = 64 * 1024;
