//! The scheduler's commands, specs, policies and what they answer.

use crate::{FencingToken, Millis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// When a schedule fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spec {
    /// Once, at this point (ms since the Unix epoch).
    At { at_ms: u64 },
    /// Once, this long after the schedule is created (stored as `At`).
    Delay { delay_ms: u64 },
    /// Every `interval_ms`, counted from the creation time.
    Every { interval_ms: u64 },
    /// A cron expression (5 fields, or 6 with seconds first) in a named time zone.
    Cron { expr: String, tz: String },
}

/// What to do with a fire time while an earlier run of the schedule is still pending or running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Materialize it; runs may run side by side.
    Allow,
    /// Do not materialize it (it is counted as skipped).
    Skip,
    /// Materialize it, claimable only once the earlier runs are finished.
    Queue,
}

/// What to do with fire times missed by more than the grace (the server was down, or ticks were
/// late).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Misfire {
    /// One run for the latest missed fire time.
    RunOnce,
    /// A run for every missed fire time (at most `SCHEDULE_CATCH_UP_MAX`, the latest).
    RunAll,
    /// None.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Attempts before a run is dead: 1 means no retry.
    pub max_attempts: u32,
    /// The retry delay after the first failure; it doubles with each further attempt.
    pub backoff_ms: u64,
    /// The claim lease: a run not completed, failed or heartbeated within it is retried.
    pub timeout_ms: u64,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// A fire time later than this is missed; up to it, it runs as if on time.
    pub misfire_grace_ms: u64,
}

/// A run: one fire time of one schedule. On the wire it reads `<schedule>@<fire_time_ms>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId {
    pub schedule: String,
    pub fire_time: Millis,
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.schedule, self.fire_time.0)
    }
}

impl RunId {
    /// Parses `<schedule>@<fire_time_ms>`.
    pub fn parse(text: &str) -> Option<RunId> {
        let (schedule, fire) = text.rsplit_once('@')?;
        Some(RunId {
            schedule: schedule.to_owned(),
            fire_time: Millis(fire.parse().ok()?),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub id: String,
    pub spec: Spec,
    #[serde(with = "serde_bytes")]
    pub job: Vec<u8>,
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub id: String,
}

/// A run now, whatever the spec says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
}

/// Claims up to `max` runnable runs (of `schedules`, or of all when empty) for `worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub worker: String,
    pub max: u32,
    pub schedules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub run: RunId,
    pub token: FencingToken,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    pub run: RunId,
    pub token: FencingToken,
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail {
    pub run: RunId,
    pub token: FencingToken,
    pub error: String,
}

/// Every scheduler command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleCommand {
    Create(Create),
    Cancel(Cancel),
    Pause(Pause),
    Resume(Resume),
    Trigger(Trigger),
    Claim(Claim),
    Heartbeat(Heartbeat),
    Complete(Complete),
    Fail(Fail),
}

/// Where a run is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Claimable from `runnable_at` (and, under `Overlap::Queue`, once earlier runs finish).
    Pending { runnable_at: Millis },
    Claimed {
        worker: String,
        token: FencingToken,
        until: Millis,
    },
    Completed {
        at: Millis,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// Failed `max_attempts` times.
    Dead { at: Millis, error: String },
}

impl RunState {
    pub fn is_finished(&self) -> bool {
        matches!(self, RunState::Completed { .. } | RunState::Dead { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: RunId,
    pub state: RunState,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was first claimed: `first_claimed_at - fire_time` is its due delay.
    pub first_claimed_at: Option<Millis>,
    pub last_error: String,
    /// Made by `Trigger` rather than by the spec.
    pub manual: bool,
}

/// What `Get` and `List` show of a schedule's runs, counted without copying them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub pending: u64,
    pub claimed: u64,
    /// The due delay (first claim minus fire time) of every kept spec run that was claimed,
    /// smallest first.
    pub due_delays_ms: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub id: String,
    pub spec: Spec,
    #[serde(with = "serde_bytes")]
    pub job: Vec<u8>,
    pub policy: Policy,
    pub paused: bool,
    pub next_fire: Option<Millis>,
    pub created_at: Millis,
    /// Runs by outcome, and fire times not run.
    pub completed: u64,
    pub dead: u64,
    pub retried: u64,
    pub skipped_overlap: u64,
    pub skipped_misfire: u64,
}

/// What a failed run became: dead (no attempts left), or runnable again at `runnable_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub dead: bool,
    pub runnable_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleOutput {
    Created { next_fire: Option<Millis> },
    Cancelled { runs: u64 },
    Paused,
    Resumed { next_fire: Option<Millis> },
    Triggered { run: RunId },
    Claimed(Vec<Claimed>),
    Heartbeat { until: Millis },
    Completed,
    Failed(Failed),
}

/// A claimed run, as a worker gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    pub run: RunId,
    pub token: FencingToken,
    pub attempt: u32,
    #[serde(with = "serde_bytes")]
    pub job: Vec<u8>,
    /// The log clock of the claim: `claimed_at - fire_time` is the due delay of a first attempt.
    pub claimed_at: Millis,
    /// The claim lease: the claim ends at `until = claimed_at + lease_ms` unless heartbeated.
    pub lease_ms: u64,
    pub until: Millis,
}
