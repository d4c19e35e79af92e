//! Every refusal of the scheduler, with the values that caused it.

use crate::limits::{
    OWNER_BYTES_MAX, SCHEDULE_AT_MS_MAX, SCHEDULE_ATTEMPTS_MAX, SCHEDULE_BACKOFF_MS_MAX,
    SCHEDULE_CLAIM_MAX, SCHEDULE_DELAY_MS_MAX, SCHEDULE_ERROR_BYTES_MAX, SCHEDULE_INTERVAL_MS_MAX,
    SCHEDULE_INTERVAL_MS_MIN, SCHEDULE_JOB_BYTES_MAX, SCHEDULE_MISFIRE_GRACE_MS_MAX,
    SCHEDULE_RESULT_BYTES_MAX, SCHEDULE_TIMEOUT_MS_MAX, SCHEDULE_TIMEOUT_MS_MIN, SCHEDULES_MAX,
};
use crate::names::NameError;
use crate::{ErrorCode, FencingToken};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ScheduleError {
    #[error("id: {0}")]
    Id(NameError),
    #[error("schedule {id} does not exist")]
    NotFound { id: String },
    #[error("schedule {id} already exists")]
    AlreadyExists { id: String },
    #[error("cron expression {expr:?} is not valid: {reason}")]
    Cron { expr: String, reason: String },
    #[error("time zone {tz:?} is not a known IANA time zone (like Europe/Paris or UTC)")]
    TimeZone { tz: String },
    #[error("cron expression {expr:?} never fires")]
    NeverFires { expr: String },
    #[error(
        "interval is {interval_ms}ms; it must be {SCHEDULE_INTERVAL_MS_MIN}ms to {SCHEDULE_INTERVAL_MS_MAX}ms"
    )]
    Interval { interval_ms: u64 },
    #[error("delay is {delay_ms}ms; the maximum is {SCHEDULE_DELAY_MS_MAX}ms")]
    Delay { delay_ms: u64 },
    #[error(
        "at is {at_ms}ms since the Unix epoch; the latest is {SCHEDULE_AT_MS_MAX}ms (the end of the year 9999)"
    )]
    At { at_ms: u64 },
    #[error("job is {bytes} bytes; the limit is {SCHEDULE_JOB_BYTES_MAX}")]
    JobTooLarge { bytes: usize },
    #[error("max_attempts is {value}; it must be 1 to {SCHEDULE_ATTEMPTS_MAX}")]
    MaxAttempts { value: u32 },
    #[error("backoff is {ms}ms; the maximum is {SCHEDULE_BACKOFF_MS_MAX}ms")]
    Backoff { ms: u64 },
    #[error(
        "timeout is {ms}ms; it must be {SCHEDULE_TIMEOUT_MS_MIN}ms to {SCHEDULE_TIMEOUT_MS_MAX}ms"
    )]
    Timeout { ms: u64 },
    #[error("misfire_grace is {ms}ms; the maximum is {SCHEDULE_MISFIRE_GRACE_MS_MAX}ms")]
    MisfireGrace { ms: u64 },
    #[error("{SCHEDULES_MAX} schedules exist; the limit is {SCHEDULES_MAX}")]
    TooMany,
    #[error("max is {max}; it must be 1 to {SCHEDULE_CLAIM_MAX}")]
    ClaimMax { max: u32 },
    #[error("worker is {bytes} bytes; it must be 1 to {OWNER_BYTES_MAX}")]
    Worker { bytes: usize },
    #[error("error is {bytes} bytes; the limit is {SCHEDULE_ERROR_BYTES_MAX}")]
    ErrorTooLong { bytes: usize },
    #[error("result is {bytes} bytes; the limit is {SCHEDULE_RESULT_BYTES_MAX}")]
    ResultTooLarge { bytes: usize },
    #[error(
        "claim token {token} of run {run} is not its current claim: the claim expired, the run was retried or finished, or the schedule was cancelled"
    )]
    StaleClaim { run: String, token: FencingToken },
}

impl ScheduleError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ScheduleError::NotFound { .. } => ErrorCode::NotFound,
            ScheduleError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ScheduleError::TooMany => ErrorCode::ResourceExhausted,
            ScheduleError::StaleClaim { .. } => ErrorCode::StaleToken,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Id(_)
            | ScheduleError::NotFound { .. }
            | ScheduleError::AlreadyExists { .. }
            | ScheduleError::TooMany => "id",
            ScheduleError::Cron { .. } | ScheduleError::NeverFires { .. } => "cron",
            ScheduleError::TimeZone { .. } => "tz",
            ScheduleError::Interval { .. } => "every",
            ScheduleError::Delay { .. } => "delay",
            ScheduleError::At { .. } => "at",
            ScheduleError::JobTooLarge { .. } => "job",
            ScheduleError::MaxAttempts { .. } => "max_attempts",
            ScheduleError::Backoff { .. } => "backoff",
            ScheduleError::Timeout { .. } => "timeout",
            ScheduleError::MisfireGrace { .. } => "misfire_grace",
            ScheduleError::ClaimMax { .. } => "max",
            ScheduleError::Worker { .. } => "worker",
            ScheduleError::ErrorTooLong { .. } => "error",
            ScheduleError::ResultTooLarge { .. } => "result",
            ScheduleError::StaleClaim { .. } => "token",
        }
    }
}
