//! Every limit and default of the primitives, named with its unit last. Exceeding a limit is an
//! error that names the field and the limit, never a truncation; a default is what a field left
//! at 0 (or out) stands for.
//!
//! One source for every crate: this file is plinth-core's `limits` and is also compiled into
//! plinth-proto as `plinth_proto::limits`, so that the SDK and the CLI (which depend on the wire
//! contract only) read the same numbers the state machine enforces. It therefore names nothing
//! outside itself.

/// A command's encoded size (one log entry's, less a few bytes of framing): a request whose
/// bodies, values or ops add up to more is refused before it is proposed. Far below the
/// write-ahead log's record limit, so one entry can never stop the log.
pub const COMMAND_BYTES_MAX: usize = 16 * 1024 * 1024;

/// KV keys are 1..=4096 arbitrary bytes.
pub const KEY_BYTES_MAX: usize = 4096;
/// KV values are at most 1 MiB.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// A Range returns at most this many keys per call; `more` tells the caller to continue.
pub const RANGE_LIMIT_MAX: usize = 10_000;
/// ... and at most this many bytes of keys and values (always at least one key, whatever its
/// size), so that one reply of large values cannot take gigabytes. A delete answers the values
/// it removed up to the same bytes.
pub const RANGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Compares in one Txn.
pub const TXN_COMPARES_MAX: usize = 128;
/// Operations in one branch of a Txn.
pub const TXN_OPS_MAX: usize = 128;
/// A lease id a caller chooses is 1..=2^63-1 (etcd's are signed 64-bit); the ids the state
/// machine hands out count up from the largest seen, so they never wrap.
pub const LEASE_ID_MAX: u64 = i64::MAX as u64;
/// A lease lives at least this long; shorter would expire between two ticks.
pub const LEASE_TTL_MS_MIN: u64 = 500;
/// A lease lives at most a week per grant or keep-alive.
pub const LEASE_TTL_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// A lock hold's or a registry instance's lease when the caller gives none (the SDK and the CLI).
pub const LOCK_TTL_MS_DEFAULT: u64 = 10_000;
pub const REGISTRY_TTL_MS_DEFAULT: u64 = 10_000;
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
/// Queues at once.
pub const QUEUES_MAX: usize = 100_000;
/// Messages one queue holds at once (every state).
pub const QUEUE_MESSAGES_MAX: usize = 1_000_000;
/// A message body is at most 1 MiB; a queue may set a lower maximum.
pub const QUEUE_BODY_BYTES_MAX: u64 = 1024 * 1024;
/// Messages in one send.
pub const QUEUE_SEND_BATCH_MAX: usize = 100;
/// Messages one receive hands out.
pub const QUEUE_RECEIVE_MAX: u32 = 100;
/// Receipts one receive acks before it receives.
pub const QUEUE_ACK_MAX: usize = 100;
/// A receive long-polls at most 20 s.
pub const QUEUE_WAIT_MS_MAX: u64 = 20_000;
/// A delivery stays in flight at most 12 h per receive or visibility change; 30 s unless set.
pub const QUEUE_VISIBILITY_MS_MAX: u64 = 12 * 3600 * 1000;
pub const QUEUE_VISIBILITY_MS_DEFAULT: u64 = 30_000;
/// A message is delayed at most 15 min.
pub const QUEUE_DELAY_MS_MAX: u64 = 15 * 60 * 1000;
/// Receives before a message goes to the dead-letter queue: at most 1000, 5 unless set.
pub const QUEUE_MAX_RECEIVES_MAX: u32 = 1000;
pub const QUEUE_MAX_RECEIVES_DEFAULT: u32 = 5;
/// Messages are kept at least a minute and at most 14 days; 4 days unless set.
pub const QUEUE_RETENTION_MS_MIN: u64 = 60 * 1000;
pub const QUEUE_RETENTION_MS_MAX: u64 = 14 * 24 * 3600 * 1000;
pub const QUEUE_RETENTION_MS_DEFAULT: u64 = 4 * 24 * 3600 * 1000;
/// A dedup window is at most a day; 5 minutes unless set.
pub const QUEUE_DEDUP_WINDOW_MS_MAX: u64 = 24 * 3600 * 1000;
pub const QUEUE_DEDUP_WINDOW_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Dedup ids are 1..=128 bytes.
pub const QUEUE_DEDUP_ID_BYTES_MAX: usize = 128;
/// Attributes per message, and their total bytes (keys and values).
pub const QUEUE_ATTRIBUTES_MAX: usize = 16;
pub const QUEUE_ATTRIBUTE_BYTES_MAX: usize = 16 * 1024;
/// A nack reason is at most 1 KiB.
pub const QUEUE_REASON_BYTES_MAX: usize = 1024;
/// Schedules at once.
pub const SCHEDULES_MAX: usize = 100_000;
/// An interval schedule fires at most once a second and at least once a year.
pub const SCHEDULE_INTERVAL_MS_MIN: u64 = 1000;
pub const SCHEDULE_INTERVAL_MS_MAX: u64 = 366 * 24 * 3600 * 1000;
/// A delayed schedule fires at most a year after it is created.
pub const SCHEDULE_DELAY_MS_MAX: u64 = 366 * 24 * 3600 * 1000;
/// A one-time schedule fires at most at the end of the year 9999 (ms since the Unix epoch).
pub const SCHEDULE_AT_MS_MAX: u64 = 253_402_300_799_999;
/// A job payload is at most 1 MiB.
pub const SCHEDULE_JOB_BYTES_MAX: usize = 1024 * 1024;
/// Attempts per run: 1 to 100, 3 unless set.
pub const SCHEDULE_ATTEMPTS_MAX: u32 = 100;
pub const SCHEDULE_ATTEMPTS_DEFAULT: u32 = 3;
/// The first retry delay is at most an hour, 1 s unless set (it doubles per attempt, capped at
/// a day).
pub const SCHEDULE_BACKOFF_MS_MAX: u64 = 3600 * 1000;
pub const SCHEDULE_BACKOFF_MS_DEFAULT: u64 = 1000;
pub const SCHEDULE_RETRY_DELAY_MS_MAX: u64 = 24 * 3600 * 1000;
/// A claim lease is 1 s to 12 h, 30 s unless set.
pub const SCHEDULE_TIMEOUT_MS_MIN: u64 = 1000;
pub const SCHEDULE_TIMEOUT_MS_MAX: u64 = 12 * 3600 * 1000;
pub const SCHEDULE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// A fire time missed by at most this much still runs (60 s unless set; at most 12 h).
pub const SCHEDULE_MISFIRE_GRACE_MS_MAX: u64 = 12 * 3600 * 1000;
pub const SCHEDULE_MISFIRE_GRACE_MS_DEFAULT: u64 = 60_000;
/// A claim long-polls at most 20 s, like a queue receive.
pub const SCHEDULE_WAIT_MS_MAX: u64 = 20_000;
/// Runs one claim hands out.
pub const SCHEDULE_CLAIM_MAX: u32 = 100;
/// Missed fire times one tick materializes under `Misfire::RunAll` (the latest ones).
pub const SCHEDULE_CATCH_UP_MAX: usize = 1000;
/// Finished runs kept per schedule for `Runs`; older ones are dropped.
pub const SCHEDULE_RUNS_KEPT: usize = 1000;
/// A completed run's result is kept in its history: at most 64 KiB.
pub const SCHEDULE_RESULT_BYTES_MAX: usize = 64 * 1024;
/// A fail reason or a worker name is at most 1 KiB / 256 bytes.
pub const SCHEDULE_ERROR_BYTES_MAX: usize = 1024;
/// Services with config at once.
pub const CONFIG_SERVICES_MAX: usize = 100_000;
/// Keys in one service's config.
pub const CONFIG_KEYS_MAX: usize = 10_000;
/// A service's whole config (keys plus canonical values) is at most 1 MiB.
pub const CONFIG_SNAPSHOT_BYTES_MAX: usize = 1024 * 1024;
/// A JSON Schema is at most 256 KiB.
pub const CONFIG_SCHEMA_BYTES_MAX: usize = 256 * 1024;
/// Commits kept per service: 1,000 unless set, at most 10,000 ...
pub const CONFIG_HISTORY_VERSIONS_DEFAULT: u32 = 1000;
pub const CONFIG_HISTORY_VERSIONS_MAX: u32 = 10_000;
/// ... and at most 16 MiB of them.
pub const CONFIG_HISTORY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Versions one history answer or one watch message batch holds.
pub const CONFIG_HISTORY_PAGE_MAX: usize = 1000;
/// Registered instances at once.
pub const REGISTRY_INSTANCES_MAX: usize = 1_000_000;
/// An instance's address is 1..=1024 bytes.
pub const REGISTRY_ADDRESS_BYTES_MAX: usize = 1024;
/// An instance's metadata: at most 64 entries and 16 KiB of keys and values.
pub const REGISTRY_METADATA_MAX: usize = 64;
pub const REGISTRY_METADATA_BYTES_MAX: usize = 16 * 1024;
/// Registry events kept for watchers to resume from, across all services.
pub const REGISTRY_HISTORY_EVENTS_MAX: usize = 100_000;
