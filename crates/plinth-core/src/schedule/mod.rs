//! The job scheduler: one-shot, delayed, interval and cron schedules whose fire times become
//! runs exactly once, claimed by workers with a fencing token and retried when a claim ends
//! without success.
//!
//! Contract: on `Tick`, every fire time of an unpaused schedule that has come due is materialized
//! as a run identified by (schedule, fire time) — at most once, because the schedule's next fire
//! time only moves forward and lives in the replicated state, so replaying the log, late ticks,
//! early ticks or a tick twice never make a second run. Fire times missed by more than the
//! policy's grace follow the misfire policy (run once, run all, skip); a fire time while an
//! earlier run is unfinished follows the overlap policy (allow, skip, queue). `Claim` hands out
//! runnable runs with a claim token (a fencing token) and a claim lease of the policy's timeout;
//! `Heartbeat` renews the lease; `Complete` and `Fail` end the claim and take the token, and a
//! token that is not the run's live claim gets `STALE_TOKEN`. A failed or expired claim makes the
//! run runnable again after backoff (doubling per attempt) with attempt + 1, until
//! `max_attempts`; then the run is dead. A finished run is never claimed again. Cron expressions
//! are evaluated in their named time zone: a local time skipped by a daylight-saving change fires
//! at the first valid time after it, and a local time that occurs twice fires once.
//!
//! Invariants:
//! - S1: the due index lists exactly the unpaused schedules that will fire again, at their next
//!   fire time.
//! - S2: every run has attempt >= 1; the pending and claim indexes list exactly the pending and
//!   claimed runs at their times.
//! - S3: every run's schedule exists.
//! - S4: claim tokens are unique and at most the last token handed out.
//! - S6: a schedule that skips overlaps has at most one unfinished run of its own making; one
//!   that queues them has at most one claimed.
//! - S7: at most `SCHEDULE_RUNS_KEPT` finished runs are kept per schedule.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    Cancel, Claim, Claimed, Complete, Create, Fail, Failed, Heartbeat, Misfire, Overlap, Pause,
    Policy, Resume, RunCounts, RunId, RunInfo, RunState, ScheduleCommand, ScheduleInfo,
    ScheduleOutput, Spec, Trigger,
};
pub use error::ScheduleError;
pub use state::ScheduleState;
