//! ScheduleState: schedules, their runs and the indexes `Tick` and `Claim` walk.

use super::{
    Claimed, Misfire, Overlap, Policy, RunCounts, RunId, RunInfo, RunState, ScheduleCommand,
    ScheduleError, ScheduleInfo, ScheduleOutput, Spec,
};
use crate::limits::{
    OWNER_BYTES_MAX, SCHEDULE_AT_MS_MAX, SCHEDULE_ATTEMPTS_MAX, SCHEDULE_BACKOFF_MS_MAX,
    SCHEDULE_CATCH_UP_MAX, SCHEDULE_CLAIM_MAX, SCHEDULE_DELAY_MS_MAX, SCHEDULE_ERROR_BYTES_MAX,
    SCHEDULE_INTERVAL_MS_MAX, SCHEDULE_INTERVAL_MS_MIN, SCHEDULE_JOB_BYTES_MAX,
    SCHEDULE_MISFIRE_GRACE_MS_MAX, SCHEDULE_RESULT_BYTES_MAX, SCHEDULE_RETRY_DELAY_MS_MAX,
    SCHEDULE_RUNS_KEPT, SCHEDULE_TIMEOUT_MS_MAX, SCHEDULE_TIMEOUT_MS_MIN, SCHEDULES_MAX,
};
use crate::names::check_name;
use crate::schedule;
use crate::{Ctx, FencingToken, Millis, Wake};
use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The first window a cron looks back over when it catches up on a gap longer than this.
const CRON_LOOK_BACK_MS_MIN: u64 = 60 * 1000;

/// A spec as stored: `Delay` has become `At`, `Every` has its anchor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Stored {
    At { at: Millis },
    Every { interval_ms: u64, anchor: Millis },
    Cron { expr: String, tz: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Schedule {
    spec: Spec,
    stored: Stored,
    #[serde(with = "serde_bytes")]
    job: Vec<u8>,
    policy: Policy,
    paused: bool,
    /// The next fire time not yet materialized; `None` once a one-shot schedule has fired.
    next_fire: Option<Millis>,
    created_at: Millis,
    completed: u64,
    dead: u64,
    retried: u64,
    skipped_overlap: u64,
    skipped_misfire: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    state: RunState,
    attempt: u32,
    first_claimed_at: Option<Millis>,
    last_error: String,
    manual: bool,
}

type RunKey = (String, Millis);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    schedules: BTreeMap<String, Schedule>,
    runs: BTreeMap<RunKey, Run>,
    /// (next fire, schedule) of every unpaused schedule that will fire again.
    due: BTreeSet<(Millis, String)>,
    /// (runnable at, schedule, fire time) of every pending run.
    pending: BTreeSet<(Millis, String, Millis)>,
    /// (claim ends, schedule, fire time) of every claimed run.
    claims: BTreeSet<(Millis, String, Millis)>,
    last_token: FencingToken,
}

/// Parses a time zone name.
fn zone(tz: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    tz.parse::<chrono_tz::Tz>()
        .map_err(|_| ScheduleError::TimeZone { tz: tz.to_owned() })
}

/// What a new schedule's cron expression must look like before it is parsed: 5 fields, or 6
/// with seconds first, and no list with an empty item. croner reads an empty item as an empty
/// set, and its search for a fire time that cannot come then takes seconds.
fn check_cron_shape(expr: &str) -> Result<(), ScheduleError> {
    let invalid = |reason: String| ScheduleError::Cron {
        expr: expr.to_owned(),
        reason,
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(invalid(format!(
            "it has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week), or 6 with seconds first",
            fields.len()
        )));
    }
    if let Some(field) = fields.iter().find(|f| f.split(',').any(str::is_empty)) {
        return Err(invalid(format!(
            "the field {field:?} has an empty item in its list"
        )));
    }
    Ok(())
}

fn cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| ScheduleError::Cron {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })
}

/// A stored spec ready to step through fire times: a cron is parsed once, not per step.
enum Firing<'a> {
    Plain(&'a Stored),
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

impl Firing<'_> {
    fn of(stored: &Stored) -> Option<Firing<'_>> {
        match stored {
            Stored::Cron { expr, tz } => {
                Some(Firing::Cron(Box::new(cron(expr).ok()?), zone(tz).ok()?))
            }
            plain => Some(Firing::Plain(plain)),
        }
    }

    fn next_after(&self, after: Millis) -> Option<Millis> {
        match self {
            Firing::Plain(stored) => next_after(stored, after),
            Firing::Cron(cron, tz) => {
                // Cron fires on whole seconds: search from the second `after` falls in.
                let after = Utc
                    .timestamp_millis_opt((after.0 - after.0 % 1000) as i64)
                    .single()?;
                let next: DateTime<chrono_tz::Tz> = cron
                    .find_next_occurrence(&after.with_timezone(tz), false)
                    .ok()?;
                u64::try_from(next.timestamp_millis()).ok().map(Millis)
            }
        }
    }
}

/// The first fire time of `stored` strictly after `after`.
fn next_after(stored: &Stored, after: Millis) -> Option<Millis> {
    match stored {
        Stored::At { at } => (*at > after).then_some(*at),
        Stored::Every {
            interval_ms,
            anchor,
        } => {
            if after < *anchor {
                return Some(*anchor);
            }
            let periods = (after.0 - anchor.0) / interval_ms + 1;
            Some(Millis(anchor.0.saturating_add(periods * interval_ms)))
        }
        Stored::Cron { .. } => Firing::of(stored)?.next_after(after),
    }
}

fn check_policy(p: &Policy) -> Result<(), ScheduleError> {
    if p.max_attempts == 0 || p.max_attempts > SCHEDULE_ATTEMPTS_MAX {
        return Err(ScheduleError::MaxAttempts {
            value: p.max_attempts,
        });
    }
    if p.backoff_ms > SCHEDULE_BACKOFF_MS_MAX {
        return Err(ScheduleError::Backoff { ms: p.backoff_ms });
    }
    if !(SCHEDULE_TIMEOUT_MS_MIN..=SCHEDULE_TIMEOUT_MS_MAX).contains(&p.timeout_ms) {
        return Err(ScheduleError::Timeout { ms: p.timeout_ms });
    }
    if p.misfire_grace_ms > SCHEDULE_MISFIRE_GRACE_MS_MAX {
        return Err(ScheduleError::MisfireGrace {
            ms: p.misfire_grace_ms,
        });
    }
    Ok(())
}

fn id(value: &str) -> Result<(), ScheduleError> {
    check_name(value).map_err(ScheduleError::Id)
}

impl ScheduleState {
    /// Checks a command's shape against the limits without looking at the data.
    pub fn validate(command: &ScheduleCommand) -> Result<(), ScheduleError> {
        match command {
            ScheduleCommand::Create(schedule::Create {
                id: i,
                spec,
                job,
                policy,
            }) => {
                id(i)?;
                match spec {
                    Spec::Every { interval_ms }
                        if !(SCHEDULE_INTERVAL_MS_MIN..=SCHEDULE_INTERVAL_MS_MAX)
                            .contains(interval_ms) =>
                    {
                        return Err(ScheduleError::Interval {
                            interval_ms: *interval_ms,
                        });
                    }
                    Spec::Delay { delay_ms } if *delay_ms > SCHEDULE_DELAY_MS_MAX => {
                        return Err(ScheduleError::Delay {
                            delay_ms: *delay_ms,
                        });
                    }
                    Spec::At { at_ms } if *at_ms > SCHEDULE_AT_MS_MAX => {
                        return Err(ScheduleError::At { at_ms: *at_ms });
                    }
                    Spec::Cron { expr, tz } => {
                        check_cron_shape(expr)?;
                        let parsed = cron(expr)?;
                        let tz = zone(tz)?;
                        let start = Utc.timestamp_millis_opt(0).single().expect("the epoch");
                        if parsed
                            .find_next_occurrence(&start.with_timezone(&tz), false)
                            .is_err()
                        {
                            return Err(ScheduleError::NeverFires { expr: expr.clone() });
                        }
                    }
                    _ => {}
                }
                if job.len() > SCHEDULE_JOB_BYTES_MAX {
                    return Err(ScheduleError::JobTooLarge { bytes: job.len() });
                }
                check_policy(policy)
            }
            ScheduleCommand::Cancel(schedule::Cancel { id: i })
            | ScheduleCommand::Pause(schedule::Pause { id: i })
            | ScheduleCommand::Resume(schedule::Resume { id: i })
            | ScheduleCommand::Trigger(schedule::Trigger { id: i }) => id(i),
            ScheduleCommand::Claim(schedule::Claim {
                worker,
                max,
                schedules,
            }) => {
                if worker.is_empty() || worker.len() > OWNER_BYTES_MAX {
                    return Err(ScheduleError::Worker {
                        bytes: worker.len(),
                    });
                }
                if *max == 0 || *max > SCHEDULE_CLAIM_MAX {
                    return Err(ScheduleError::ClaimMax { max: *max });
                }
                schedules.iter().try_for_each(|s| id(s))
            }
            ScheduleCommand::Heartbeat(schedule::Heartbeat { run, .. }) => id(&run.schedule),
            ScheduleCommand::Complete(schedule::Complete { run, result, .. }) => {
                id(&run.schedule)?;
                if result.len() > SCHEDULE_RESULT_BYTES_MAX {
                    return Err(ScheduleError::ResultTooLarge {
                        bytes: result.len(),
                    });
                }
                Ok(())
            }
            ScheduleCommand::Fail(schedule::Fail { run, error, .. }) => {
                id(&run.schedule)?;
                if error.len() > SCHEDULE_ERROR_BYTES_MAX {
                    return Err(ScheduleError::ErrorTooLong { bytes: error.len() });
                }
                Ok(())
            }
        }
    }

    /// Applies a command; one after which a run may be claimable (a new or resumed schedule, a
    /// manual run, a failed or completed run that frees its schedule) wakes the claims waiting
    /// for one.
    pub fn apply(
        &mut self,
        command: &ScheduleCommand,
        ctx: &mut Ctx,
    ) -> Result<ScheduleOutput, ScheduleError> {
        let out = self.apply_command(command, ctx)?;
        if matches!(
            command,
            ScheduleCommand::Create(_)
                | ScheduleCommand::Resume(_)
                | ScheduleCommand::Trigger(_)
                | ScheduleCommand::Complete(_)
                | ScheduleCommand::Fail(_)
        ) {
            ctx.wake(Wake::Schedules);
        }
        Ok(out)
    }

    fn apply_command(
        &mut self,
        command: &ScheduleCommand,
        ctx: &mut Ctx,
    ) -> Result<ScheduleOutput, ScheduleError> {
        Self::validate(command)?;
        let clock = ctx.clock;
        match command {
            ScheduleCommand::Create(schedule::Create {
                id,
                spec,
                job,
                policy,
            }) => {
                if self.schedules.contains_key(id) {
                    return Err(ScheduleError::AlreadyExists { id: id.clone() });
                }
                if self.schedules.len() >= SCHEDULES_MAX {
                    return Err(ScheduleError::TooMany);
                }
                let (stored, next_fire) = match spec {
                    Spec::At { at_ms } => (Stored::At { at: Millis(*at_ms) }, Some(Millis(*at_ms))),
                    Spec::Delay { delay_ms } => {
                        let at = Millis(clock.0.saturating_add(*delay_ms));
                        (Stored::At { at }, Some(at))
                    }
                    Spec::Every { interval_ms } => {
                        let stored = Stored::Every {
                            interval_ms: *interval_ms,
                            anchor: clock,
                        };
                        let next = next_after(&stored, clock);
                        (stored, next)
                    }
                    Spec::Cron { expr, tz } => {
                        let stored = Stored::Cron {
                            expr: expr.clone(),
                            tz: tz.clone(),
                        };
                        let next = next_after(&stored, clock);
                        (stored, next)
                    }
                };
                if let Some(next) = next_fire {
                    self.due.insert((next, id.clone()));
                }
                self.schedules.insert(
                    id.clone(),
                    Schedule {
                        spec: spec.clone(),
                        stored,
                        job: job.clone(),
                        policy: policy.clone(),
                        paused: false,
                        next_fire,
                        created_at: clock,
                        completed: 0,
                        dead: 0,
                        retried: 0,
                        skipped_overlap: 0,
                        skipped_misfire: 0,
                    },
                );
                ctx.changed = true;
                Ok(ScheduleOutput::Created { next_fire })
            }
            ScheduleCommand::Cancel(schedule::Cancel { id }) => {
                let schedule = self.schedule(id)?;
                if let Some(next) = schedule.next_fire {
                    self.due.remove(&(next, id.clone()));
                }
                self.schedules.remove(id);
                let keys: Vec<RunKey> = self.runs_of(id).map(|(k, _)| k.clone()).collect();
                for key in &keys {
                    self.remove_run(key);
                }
                ctx.changed = true;
                Ok(ScheduleOutput::Cancelled {
                    runs: keys.len() as u64,
                })
            }
            ScheduleCommand::Pause(schedule::Pause { id }) => {
                let schedule = self.schedule(id)?;
                if !schedule.paused {
                    if let Some(next) = schedule.next_fire {
                        self.due.remove(&(next, id.clone()));
                    }
                    self.schedules.get_mut(id).expect("checked").paused = true;
                    ctx.changed = true;
                }
                Ok(ScheduleOutput::Paused)
            }
            ScheduleCommand::Resume(schedule::Resume { id }) => {
                let schedule = self.schedule(id)?;
                if !schedule.paused {
                    return Ok(ScheduleOutput::Resumed {
                        next_fire: schedule.next_fire,
                    });
                }
                // Fire times that passed while paused are not made up: the schedule goes on
                // from now. A one-shot whose time passed while paused fires now.
                let next = match &schedule.stored {
                    Stored::At { at } => schedule.next_fire.map(|_| (*at).max(clock)),
                    stored => next_after(stored, clock),
                };
                let schedule = self.schedules.get_mut(id).expect("checked");
                schedule.paused = false;
                schedule.next_fire = next;
                if let Some(next) = next {
                    self.due.insert((next, id.clone()));
                }
                ctx.changed = true;
                Ok(ScheduleOutput::Resumed { next_fire: next })
            }
            ScheduleCommand::Trigger(schedule::Trigger { id }) => {
                let schedule = self.schedule(id)?;
                // Fire times due by now become their runs first, so that no later tick can
                // materialize a spec run at the time the triggered run takes (S5). Every spec fire
                // time still to come is after `clock`, so the triggered run takes the latest free
                // time at or before it.
                if let (false, Some(next)) = (schedule.paused, schedule.next_fire)
                    && next <= clock
                {
                    self.materialize(id, clock);
                }
                let mut fire = clock;
                while self.runs.contains_key(&(id.clone(), fire)) {
                    fire = Millis(fire.0.checked_sub(1).expect("fewer runs than milliseconds"));
                }
                self.add_run(id, fire, clock, true);
                ctx.changed = true;
                Ok(ScheduleOutput::Triggered {
                    run: RunId {
                        schedule: id.clone(),
                        fire_time: fire,
                    },
                })
            }
            ScheduleCommand::Claim(schedule::Claim {
                worker,
                max,
                schedules,
            }) => {
                let picked = self.claimable(clock, *max as usize, schedules);
                let mut claimed = Vec::with_capacity(picked.len());
                for key in picked {
                    let timeout = self.schedules[&key.0].policy.timeout_ms;
                    let until = Millis(clock.0.saturating_add(timeout));
                    let token = FencingToken(ctx.revision.0.max(self.last_token.0 + 1));
                    self.last_token = token;
                    self.set_state(
                        &key,
                        RunState::Claimed {
                            worker: worker.clone(),
                            token,
                            until,
                        },
                    );
                    let run = self.runs.get_mut(&key).expect("picked");
                    run.first_claimed_at.get_or_insert(clock);
                    claimed.push(Claimed {
                        run: RunId {
                            schedule: key.0.clone(),
                            fire_time: key.1,
                        },
                        token,
                        attempt: run.attempt,
                        job: self.schedules[&key.0].job.clone(),
                        claimed_at: clock,
                        lease_ms: timeout,
                        until,
                    });
                }
                ctx.changed |= !claimed.is_empty();
                Ok(ScheduleOutput::Claimed(claimed))
            }
            ScheduleCommand::Heartbeat(schedule::Heartbeat { run, token }) => {
                let key = self.current(run, *token, clock)?;
                let timeout = self.schedules[&key.0].policy.timeout_ms;
                let until = Millis(clock.0.saturating_add(timeout));
                let worker = match &self.runs[&key].state {
                    RunState::Claimed { worker, .. } => worker.clone(),
                    _ => unreachable!("current checked the claim"),
                };
                self.set_state(
                    &key,
                    RunState::Claimed {
                        worker,
                        token: *token,
                        until,
                    },
                );
                ctx.changed = true;
                Ok(ScheduleOutput::Heartbeat { until })
            }
            ScheduleCommand::Complete(schedule::Complete { run, token, result }) => {
                let key = self.current(run, *token, clock)?;
                self.finish(
                    &key,
                    RunState::Completed {
                        at: clock,
                        result: result.clone(),
                    },
                );
                self.schedules.get_mut(&key.0).expect("S3").completed += 1;
                ctx.changed = true;
                Ok(ScheduleOutput::Completed)
            }
            ScheduleCommand::Fail(schedule::Fail { run, token, error }) => {
                let key = self.current(run, *token, clock)?;
                let out = self.retry_or_bury(&key, error, clock);
                ctx.changed = true;
                Ok(out)
            }
        }
    }

    /// Runs the clock forward: due fire times become runs, expired claims are retried.
    /// Returns whether anything changed.
    pub fn tick(&mut self, clock: Millis) -> bool {
        let mut changed = false;
        while let Some((until, schedule, fire)) = self.claims.first().cloned() {
            if until > clock {
                break;
            }
            changed = true;
            self.retry_or_bury(&(schedule, fire), "claim expired", clock);
        }
        while let Some((next, id)) = self.due.first().cloned() {
            if next > clock {
                break;
            }
            changed = true;
            self.materialize(&id, clock);
        }
        changed
    }

    /// Turns the due fire times of schedule `id` into runs, under its misfire and overlap
    /// policies, and moves its next fire time past `clock`.
    fn materialize(&mut self, id: &str, clock: Millis) {
        let schedule = &self.schedules[id];
        let first = schedule
            .next_fire
            .expect("S1: a due schedule has a next fire time");
        self.due.remove(&(first, id.to_owned()));
        let grace = schedule.policy.misfire_grace_ms;
        let late = Millis(clock.0.saturating_sub(grace));
        // Every due fire time, oldest first; the oldest are dropped past the catch-up cap. An
        // interval jumps straight to the last cap's worth instead of stepping through a long gap.
        let mut at = Some(first);
        let mut jumped = 0;
        if let Stored::Every { interval_ms, .. } = schedule.stored {
            let span = interval_ms.saturating_mul(SCHEDULE_CATCH_UP_MAX as u64);
            if clock.0.saturating_sub(first.0) > span {
                let from = next_after(&schedule.stored, Millis(clock.0 - span));
                jumped = from.map_or(0, |from| (from.0 - first.0) / interval_ms);
                at = from;
            }
        }
        let firing = Firing::of(&schedule.stored);
        // A cron has no fixed period to jump by: it looks back from `clock` over a window that
        // grows fourfold until the window holds more than the catch-up cap, so a long gap costs
        // a few thousand steps, not one per fire time. The fire times before that window are
        // passed over uncounted.
        if let (Stored::Cron { .. }, Some(cron)) = (&schedule.stored, &firing)
            && clock.0.saturating_sub(first.0) > CRON_LOOK_BACK_MS_MIN
        {
            let mut window = CRON_LOOK_BACK_MS_MIN;
            loop {
                let from = Millis(clock.0.saturating_sub(window));
                if from < first {
                    break;
                }
                let mut count = 0;
                let mut fire = cron.next_after(from);
                while let Some(f) = fire
                    && f <= clock
                    && count <= SCHEDULE_CATCH_UP_MAX
                {
                    count += 1;
                    fire = cron.next_after(f);
                }
                if count > SCHEDULE_CATCH_UP_MAX {
                    at = cron.next_after(from);
                    break;
                }
                window = window.saturating_mul(4);
            }
        }
        let mut fires = std::collections::VecDeque::new();
        while let Some(fire) = at {
            if fire > clock {
                break;
            }
            fires.push_back(fire);
            if fires.len() > SCHEDULE_CATCH_UP_MAX {
                fires.pop_front();
            }
            at = firing.as_ref().and_then(|f| f.next_after(fire));
        }
        let next = match at {
            Some(fire) if fire > clock => Some(fire),
            _ => None,
        };
        let (missed, on_time): (Vec<Millis>, Vec<Millis>) =
            fires.into_iter().partition(|fire| *fire < late);
        let mut take: Vec<Millis> = match schedule.policy.misfire {
            Misfire::RunAll => missed.clone(),
            Misfire::RunOnce => missed.last().copied().into_iter().collect(),
            Misfire::Skip => Vec::new(),
        };
        let skipped_misfire = (missed.len() - take.len()) as u64 + jumped;
        take.extend(on_time);
        let overlap = schedule.policy.overlap;
        let mut skipped_overlap = 0;
        for fire in take {
            if overlap == Overlap::Skip && self.has_active(id) {
                skipped_overlap += 1;
                continue;
            }
            self.add_run(id, fire, clock, false);
        }
        let schedule = self.schedules.get_mut(id).expect("exists");
        schedule.skipped_misfire += skipped_misfire;
        schedule.skipped_overlap += skipped_overlap;
        schedule.next_fire = next;
        if let Some(next) = next {
            self.due.insert((next, id.to_owned()));
        }
    }

    /// Ends a claim that failed or expired: the run is retried after backoff, or is dead after
    /// `max_attempts`.
    fn retry_or_bury(&mut self, key: &RunKey, error: &str, clock: Millis) -> ScheduleOutput {
        let policy = self.schedules[&key.0].policy.clone();
        let run = self.runs.get_mut(key).expect("a claimed run exists");
        run.last_error = error.to_owned();
        if run.attempt >= policy.max_attempts {
            self.finish(
                key,
                RunState::Dead {
                    at: clock,
                    error: error.to_owned(),
                },
            );
            self.schedules.get_mut(&key.0).expect("S3").dead += 1;
            return ScheduleOutput::Failed(schedule::Failed {
                dead: true,
                runnable_at: None,
            });
        }
        let doublings = run.attempt.saturating_sub(1).min(30);
        run.attempt += 1;
        let delay = policy
            .backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(SCHEDULE_RETRY_DELAY_MS_MAX);
        let runnable_at = Millis(clock.0.saturating_add(delay));
        self.set_state(key, RunState::Pending { runnable_at });
        self.schedules.get_mut(&key.0).expect("S3").retried += 1;
        ScheduleOutput::Failed(schedule::Failed {
            dead: false,
            runnable_at: Some(runnable_at),
        })
    }

    /// Moves a run to a finished state and trims the schedule's history.
    fn finish(&mut self, key: &RunKey, state: RunState) {
        self.set_state(key, state);
        let finished: Vec<RunKey> = self
            .runs_of(&key.0)
            .filter(|(_, run)| run.state.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        if finished.len() > SCHEDULE_RUNS_KEPT {
            for old in &finished[..finished.len() - SCHEDULE_RUNS_KEPT] {
                self.remove_run(old);
            }
        }
    }

    /// Up to `max` runs claimable at `clock`, oldest runnable first.
    fn claimable(&self, clock: Millis, max: usize, only: &[String]) -> Vec<RunKey> {
        let mut picked: Vec<RunKey> = Vec::new();
        for (runnable_at, schedule, fire) in &self.pending {
            if *runnable_at > clock || picked.len() >= max {
                break;
            }
            if !only.is_empty() && !only.contains(schedule) {
                continue;
            }
            let s = &self.schedules[schedule];
            if s.policy.overlap == Overlap::Queue {
                // Only the earliest unfinished run of the schedule, and only once none runs.
                let earliest = self
                    .runs_of(schedule)
                    .find(|(_, run)| !run.state.is_finished())
                    .map(|(k, _)| k.1);
                let claimed = self
                    .runs_of(schedule)
                    .any(|(_, run)| matches!(run.state, RunState::Claimed { .. }));
                let already = picked.iter().any(|k| &k.0 == schedule);
                if earliest != Some(*fire) || claimed || already {
                    continue;
                }
            }
            picked.push((schedule.clone(), *fire));
        }
        picked
    }

    /// Whether a claim on `schedules` (all when empty) would get a run at `clock`: what a
    /// waiting worker waits for.
    pub fn has_claimable(&self, clock: Millis, schedules: &[String]) -> bool {
        !self.claimable(clock, 1, schedules).is_empty()
    }

    /// Whether a pending run became runnable as the log clock moved from `from` (exclusive) to
    /// `to` (inclusive): any command's stamp moves the clock, and a retry's time passing makes
    /// a run claimable with no tick to say so.
    pub fn became_runnable(&self, from: Millis, to: Millis) -> bool {
        from < to
            && self
                .pending
                .range((Millis(from.0.saturating_add(1)), String::new(), Millis(0))..)
                .next()
                .is_some_and(|p| p.0 <= to)
    }

    /// The earliest point on the log clock after `clock` at which a tick has work: a fire time,
    /// a claim ending, or a retry becoming runnable (so that waiting workers wake).
    pub fn next_deadline(&self, clock: Millis) -> Option<Millis> {
        let retry = self
            .pending
            .range((Millis(clock.0.saturating_add(1)), String::new(), Millis(0))..)
            .next()
            .map(|p| p.0);
        [
            self.due.first().map(|d| d.0),
            self.claims.first().map(|c| c.0),
            retry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn info(&self, id: &str) -> Option<ScheduleInfo> {
        let s = self.schedules.get(id)?;
        Some(ScheduleInfo {
            id: id.to_owned(),
            spec: s.spec.clone(),
            job: s.job.clone(),
            policy: s.policy.clone(),
            paused: s.paused,
            next_fire: s.next_fire,
            created_at: s.created_at,
            completed: s.completed,
            dead: s.dead,
            retried: s.retried,
            skipped_overlap: s.skipped_overlap,
            skipped_misfire: s.skipped_misfire,
        })
    }

    pub fn list(&self) -> Vec<ScheduleInfo> {
        self.schedules
            .keys()
            .filter_map(|id| self.info(id))
            .collect()
    }

    /// The runs of schedule `id`, oldest fire time first.
    pub fn runs(&self, id: &str) -> Vec<RunInfo> {
        self.runs_of(id)
            .map(|((schedule, fire), run)| RunInfo {
                id: RunId {
                    schedule: schedule.clone(),
                    fire_time: *fire,
                },
                state: run.state.clone(),
                attempt: run.attempt,
                first_claimed_at: run.first_claimed_at,
                last_error: run.last_error.clone(),
                manual: run.manual,
            })
            .collect()
    }

    /// The counts `Get` and `List` show for schedule `id`.
    pub fn run_counts(&self, id: &str) -> RunCounts {
        let mut counts = RunCounts::default();
        for ((_, fire), run) in self.runs_of(id) {
            match run.state {
                RunState::Pending { .. } => counts.pending += 1,
                RunState::Claimed { .. } => counts.claimed += 1,
                _ => {}
            }
            if let (false, Some(claimed)) = (run.manual, run.first_claimed_at) {
                counts.due_delays_ms.push(claimed.0.saturating_sub(fire.0));
            }
        }
        counts.due_delays_ms.sort_unstable();
        counts
    }

    pub fn len(&self) -> usize {
        self.schedules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    pub fn check_invariants(&self) {
        let mut due = BTreeSet::new();
        for (id, s) in &self.schedules {
            if let (false, Some(next)) = (s.paused, s.next_fire) {
                due.insert((next, id.clone()));
            }
            let active = self
                .runs_of(id)
                .filter(|(_, r)| !r.state.is_finished())
                .count();
            let claimed = self
                .runs_of(id)
                .filter(|(_, r)| matches!(r.state, RunState::Claimed { .. }))
                .count();
            match s.policy.overlap {
                Overlap::Skip => {
                    let spec_active = self
                        .runs_of(id)
                        .filter(|(_, r)| !r.state.is_finished() && !r.manual)
                        .count();
                    assert!(
                        spec_active <= 1,
                        "S6: {id} skips overlaps but has {active} runs active"
                    );
                }
                Overlap::Queue => {
                    assert!(
                        claimed <= 1,
                        "S6: {id} queues runs but has {claimed} claimed"
                    )
                }
                Overlap::Allow => {}
            }
            let finished = self
                .runs_of(id)
                .filter(|(_, r)| r.state.is_finished())
                .count();
            assert!(
                finished <= SCHEDULE_RUNS_KEPT,
                "S7: {id} keeps {finished} finished runs"
            );
        }
        assert!(due == self.due, "S1: the due index is out of step");
        let mut pending = BTreeSet::new();
        let mut claims = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        for ((schedule, fire), run) in &self.runs {
            assert!(
                self.schedules.contains_key(schedule),
                "S3: run {schedule}@{fire} orphaned"
            );
            assert!(run.attempt >= 1, "S2: run {schedule}@{fire} at attempt 0");
            match &run.state {
                RunState::Pending { runnable_at } => {
                    pending.insert((*runnable_at, schedule.clone(), *fire));
                }
                RunState::Claimed { token, until, .. } => {
                    claims.insert((*until, schedule.clone(), *fire));
                    assert!(tokens.insert(*token), "S4: claim token {token} held twice");
                    assert!(
                        *token <= self.last_token,
                        "S4: token {token} above the last"
                    );
                }
                _ => {}
            }
        }
        assert!(
            pending == self.pending,
            "S2: the pending index is out of step"
        );
        assert!(claims == self.claims, "S2: the claim index is out of step");
    }

    // ---- the few functions that touch the indexes ----

    fn schedule(&self, id: &str) -> Result<&Schedule, ScheduleError> {
        self.schedules
            .get(id)
            .ok_or_else(|| ScheduleError::NotFound { id: id.to_owned() })
    }

    fn runs_of<'a>(&'a self, id: &str) -> impl Iterator<Item = (&'a RunKey, &'a Run)> + 'a {
        self.runs
            .range((id.to_owned(), Millis(0))..=(id.to_owned(), Millis(u64::MAX)))
    }

    fn has_active(&self, id: &str) -> bool {
        self.runs_of(id)
            .any(|(_, run)| !run.state.is_finished() && !run.manual)
    }

    /// The run `run` if `token` is its live claim at `clock`.
    fn current(
        &self,
        run: &RunId,
        token: FencingToken,
        clock: Millis,
    ) -> Result<RunKey, ScheduleError> {
        let key = (run.schedule.clone(), run.fire_time);
        match self.runs.get(&key).map(|r| &r.state) {
            Some(RunState::Claimed {
                token: held, until, ..
            }) if *held == token && *until > clock => Ok(key),
            _ => Err(ScheduleError::StaleClaim {
                run: run.to_string(),
                token,
            }),
        }
    }

    fn add_run(&mut self, id: &str, fire: Millis, clock: Millis, manual: bool) {
        let key = (id.to_owned(), fire);
        assert!(
            !self.runs.contains_key(&key),
            "S5: run {id}@{fire} made twice"
        );
        self.pending.insert((clock, id.to_owned(), fire));
        self.runs.insert(
            key,
            Run {
                state: RunState::Pending { runnable_at: clock },
                attempt: 1,
                first_claimed_at: None,
                last_error: String::new(),
                manual,
            },
        );
    }

    fn unindex(&mut self, key: &RunKey) {
        match &self.runs[key].state {
            RunState::Pending { runnable_at } => {
                self.pending.remove(&(*runnable_at, key.0.clone(), key.1));
            }
            RunState::Claimed { until, .. } => {
                self.claims.remove(&(*until, key.0.clone(), key.1));
            }
            _ => {}
        }
    }

    fn set_state(&mut self, key: &RunKey, state: RunState) {
        self.unindex(key);
        match &state {
            RunState::Pending { runnable_at } => {
                self.pending.insert((*runnable_at, key.0.clone(), key.1));
            }
            RunState::Claimed { until, .. } => {
                self.claims.insert((*until, key.0.clone(), key.1));
            }
            _ => {}
        }
        self.runs.get_mut(key).expect("the run exists").state = state;
    }

    fn remove_run(&mut self, key: &RunKey) {
        self.unindex(key);
        self.runs.remove(key);
    }
}
