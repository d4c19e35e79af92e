//! Scheduler tests with stamped clocks: cron across a DST change, each fire time materialized
//! once whatever the ticks do, misfire and overlap policies, claims, retries and dead runs.

use crate::schedule;
use crate::schedule::{
    Misfire, Overlap, Policy, RunId, RunState, ScheduleCommand, ScheduleError, ScheduleOutput, Spec,
};
use crate::tests::run;
use crate::{
    Applied, Command, ErrorCode, FencingToken, Millis, Output, Request, State, StateError,
};
use chrono::{TimeZone as _, Utc};
use proptest::prelude::*;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

fn policy() -> Policy {
    Policy {
        max_attempts: 3,
        backoff_ms: SECOND,
        timeout_ms: 10 * SECOND,
        overlap: Overlap::Allow,
        misfire: Misfire::RunAll,
        misfire_grace_ms: 5 * SECOND,
    }
}

fn create(id: &str, spec: Spec, policy: Policy) -> Command {
    Command::Schedule(ScheduleCommand::Create(schedule::Create {
        id: id.into(),
        spec,
        job: b"{}".to_vec(),
        policy,
    }))
}

fn claim(max: u32) -> Command {
    Command::Schedule(ScheduleCommand::Claim(schedule::Claim {
        worker: "w".into(),
        max,
        schedules: vec![],
    }))
}

fn fail(c: &crate::schedule::Claimed) -> Command {
    Command::Schedule(ScheduleCommand::Fail(schedule::Fail {
        run: c.run.clone(),
        token: c.token,
        error: "boom".into(),
    }))
}

fn claimed(applied: &Applied) -> Vec<crate::schedule::Claimed> {
    match &applied.result {
        Ok(Output::Schedule(ScheduleOutput::Claimed(c))) => c.clone(),
        other => panic!("expected claims, got {other:?}"),
    }
}

fn schedule_error(applied: &Applied) -> ScheduleError {
    match &applied.result {
        Err(StateError::Schedule(e)) => e.clone(),
        other => panic!("expected a schedule error, got {other:?}"),
    }
}

fn fire_times(s: &State, id: &str) -> Vec<u64> {
    s.schedules()
        .runs(id)
        .iter()
        .map(|r| r.id.fire_time.0)
        .collect()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp_millis() as u64
}

#[test]
fn cron_in_a_named_zone_fires_once_per_local_time_across_both_dst_changes() {
    let mut s = State::default();
    // 02:30 every day, Paris time. On 2026-03-29 02:30 does not exist (02:00 → 03:00): it fires
    // at 03:00 local = 01:00 UTC. On 2026-10-25 02:30 happens twice: it fires once, the first.
    let start = utc(2026, 3, 27, 12, 0);
    run(
        &mut s,
        start,
        create(
            "nightly",
            Spec::Cron {
                expr: "30 2 * * *".into(),
                tz: "Europe/Paris".into(),
            },
            policy(),
        ),
    );
    let mut at = start;
    while at < utc(2026, 3, 31, 12, 0) {
        at += 10 * MINUTE;
        run(&mut s, at, Command::Tick);
    }
    assert_eq!(
        fire_times(&s, "nightly"),
        vec![
            utc(2026, 3, 28, 1, 30), // CET, UTC+1
            utc(2026, 3, 29, 1, 0),  // the gap: 03:00 CEST
            utc(2026, 3, 30, 0, 30), // CEST, UTC+2
            utc(2026, 3, 31, 0, 30),
        ]
    );
    let mut s = State::default();
    let start = utc(2026, 10, 24, 12, 0);
    run(
        &mut s,
        start,
        create(
            "nightly",
            Spec::Cron {
                expr: "30 2 * * *".into(),
                tz: "Europe/Paris".into(),
            },
            policy(),
        ),
    );
    let mut at = start;
    while at < utc(2026, 10, 26, 12, 0) {
        at += 10 * MINUTE;
        run(&mut s, at, Command::Tick);
    }
    assert_eq!(
        fire_times(&s, "nightly"),
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    );
}

#[test]
fn cron_fires_on_whole_seconds_whatever_the_clock_at_creation() {
    let mut s = State::default();
    run(
        &mut s,
        1_234,
        create(
            "c",
            Spec::Cron {
                expr: "* * * * * *".into(),
                tz: "UTC".into(),
            },
            policy(),
        ),
    );
    assert_eq!(
        s.schedules().info("c").unwrap().next_fire,
        Some(Millis(2_000))
    );
    run(&mut s, 3_500, Command::Tick);
    assert_eq!(fire_times(&s, "c"), vec![2_000, 3_000]);
}

#[test]
fn cron_takes_an_optional_seconds_field() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create(
            "fast",
            Spec::Cron {
                expr: "*/10 * * * * *".into(),
                tz: "UTC".into(),
            },
            policy(),
        ),
    );
    run(&mut s, 30 * SECOND, Command::Tick);
    assert_eq!(
        fire_times(&s, "fast"),
        vec![10 * SECOND, 20 * SECOND, 30 * SECOND]
    );
}

#[test]
fn late_early_and_repeated_ticks_and_a_replayed_log_make_each_run_once() {
    let log: Vec<Request> = std::iter::once(Request {
        stamp: Millis(0),
        command: create(
            "every",
            Spec::Every {
                interval_ms: SECOND,
            },
            policy(),
        ),
    })
    .chain(
        [500, 1_000, 1_000, 900, 3_400, 3_400, 2_000, 7_000, 7_001]
            .into_iter()
            .map(|t| Request {
                stamp: Millis(t),
                command: Command::Tick,
            }),
    )
    .collect();
    let mut s = State::default();
    for request in &log {
        s.apply(request);
        s.check_invariants();
    }
    assert_eq!(
        fire_times(&s, "every"),
        (1..=7).map(|n| n * SECOND).collect::<Vec<_>>()
    );
    let mut replayed = State::default();
    for request in &log {
        replayed.apply(request);
    }
    assert_eq!(replayed, s, "a replayed log gives the same runs");
    assert_eq!(replayed.to_snapshot(), s.to_snapshot());
}

#[test]
fn misfire_policies_after_a_long_gap() {
    let gap = |misfire: Misfire| {
        let mut s = State::default();
        run(
            &mut s,
            0,
            create(
                "m",
                Spec::Every {
                    interval_ms: MINUTE,
                },
                Policy {
                    misfire,
                    ..policy()
                },
            ),
        );
        // The server was down for an hour: the next tick comes at 60:02.
        run(&mut s, HOUR + 2 * SECOND, Command::Tick);
        let info = s.schedules().info("m").unwrap();
        (fire_times(&s, "m"), info.skipped_misfire, info.next_fire)
    };
    let (all, skipped, next) = gap(Misfire::RunAll);
    assert_eq!(all, (1..=60).map(|n| n * MINUTE).collect::<Vec<_>>());
    assert_eq!((skipped, next), (0, Some(Millis(61 * MINUTE))));
    // 60:00 is within the 5 s grace: on time. The 59 before it are missed.
    let (once, skipped, _) = gap(Misfire::RunOnce);
    assert_eq!((once, skipped), (vec![59 * MINUTE, 60 * MINUTE], 58));
    let (none, skipped, _) = gap(Misfire::Skip);
    assert_eq!((none, skipped), (vec![60 * MINUTE], 59));
}

#[test]
fn a_gap_of_a_day_catches_up_at_most_the_cap_and_counts_the_rest() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create(
            "d",
            Spec::Every {
                interval_ms: SECOND,
            },
            policy(),
        ),
    );
    run(&mut s, 24 * HOUR, Command::Tick);
    let fires = fire_times(&s, "d");
    assert_eq!(fires.len(), crate::limits::SCHEDULE_CATCH_UP_MAX);
    assert_eq!(*fires.last().unwrap(), 24 * HOUR);
    let info = s.schedules().info("d").unwrap();
    assert_eq!(info.skipped_misfire, 24 * 3600 - fires.len() as u64);
    assert_eq!(info.next_fire, Some(Millis(24 * HOUR + SECOND)));
}

#[test]
fn a_per_second_cron_down_for_a_year_catches_up_only_the_latest_cap_in_few_steps() {
    let mut s = State::default();
    let start = utc(2026, 1, 1, 0, 0);
    run(
        &mut s,
        start,
        create(
            "c",
            Spec::Cron {
                expr: "* * * * * *".into(),
                tz: "UTC".into(),
            },
            policy(),
        ),
    );
    // A year is 31.5 million fire times; stepping through each would stall the apply.
    let later = utc(2027, 1, 1, 0, 0);
    run(&mut s, later, Command::Tick);
    let fires = fire_times(&s, "c");
    assert_eq!(fires.len(), crate::limits::SCHEDULE_CATCH_UP_MAX);
    assert_eq!(*fires.last().unwrap(), later);
    assert!(fires.windows(2).all(|w| w[1] - w[0] == SECOND));
    let info = s.schedules().info("c").unwrap();
    assert_eq!(info.next_fire, Some(Millis(later + SECOND)));
}

#[test]
fn a_trigger_at_a_due_fire_time_leaves_that_fire_time_to_the_spec() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create(
            "t",
            Spec::Every {
                interval_ms: 10 * SECOND,
            },
            policy(),
        ),
    );
    // 10 s is due but no tick has made its run yet when the trigger comes at exactly 10 s.
    let trigger = Command::Schedule(ScheduleCommand::Trigger(schedule::Trigger {
        id: "t".into(),
    }));
    let triggered = match run(&mut s, 10 * SECOND, trigger.clone()).result {
        Ok(Output::Schedule(ScheduleOutput::Triggered { run })) => run,
        other => panic!("expected a trigger, got {other:?}"),
    };
    assert_eq!(triggered.fire_time, Millis(10 * SECOND - 1));
    run(&mut s, 10 * SECOND, Command::Tick);
    run(&mut s, 10 * SECOND, trigger);
    let runs = s.schedules().runs("t");
    let spec: Vec<u64> = runs
        .iter()
        .filter(|r| !r.manual)
        .map(|r| r.id.fire_time.0)
        .collect();
    assert_eq!(spec, [10 * SECOND]);
    assert_eq!(runs.len(), 3);
}

#[test]
fn overlap_policies() {
    let with = |overlap: Overlap| {
        let mut s = State::default();
        run(
            &mut s,
            0,
            create(
                "o",
                Spec::Every {
                    interval_ms: SECOND,
                },
                Policy {
                    overlap,
                    ..policy()
                },
            ),
        );
        run(&mut s, SECOND, Command::Tick);
        let first = claimed(&run(&mut s, SECOND, claim(10)));
        run(&mut s, 2 * SECOND, Command::Tick);
        run(&mut s, 3 * SECOND, Command::Tick);
        let more = claimed(&run(&mut s, 3 * SECOND, claim(10)));
        (s, first, more)
    };
    let (s, first, more) = with(Overlap::Allow);
    assert_eq!((first.len(), more.len()), (1, 2));
    assert_eq!(fire_times(&s, "o").len(), 3);

    let (s, _, more) = with(Overlap::Skip);
    assert!(more.is_empty());
    assert_eq!(fire_times(&s, "o"), vec![SECOND]);
    assert_eq!(s.schedules().info("o").unwrap().skipped_overlap, 2);

    let (mut s, first, more) = with(Overlap::Queue);
    assert!(more.is_empty(), "queued runs wait for the running one");
    assert_eq!(fire_times(&s, "o").len(), 3);
    let done = Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
        run: first[0].run.clone(),
        token: first[0].token,
        result: vec![],
    }));
    run(&mut s, 3 * SECOND, done);
    let next = claimed(&run(&mut s, 3 * SECOND, claim(10)));
    assert_eq!(next.len(), 1, "one at a time");
    assert_eq!(
        next[0].run.fire_time,
        Millis(2 * SECOND),
        "in fire-time order"
    );
}

#[test]
fn an_expired_claim_is_retried_with_backoff_then_the_run_is_dead() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create("r", Spec::Delay { delay_ms: SECOND }, policy()),
    );
    run(&mut s, SECOND, Command::Tick);
    let first = claimed(&run(&mut s, SECOND, claim(1)));
    assert_eq!(first[0].attempt, 1);
    // The worker dies: the claim runs out at 11 s; the retry is runnable 1 s later.
    run(&mut s, 11 * SECOND, Command::Tick);
    assert!(claimed(&run(&mut s, 11 * SECOND, claim(1))).is_empty());
    assert_eq!(s.next_deadline(), Some(Millis(12 * SECOND)));
    let second = claimed(&run(&mut s, 12 * SECOND, claim(1)));
    assert_eq!(second[0].attempt, 2);
    assert!(second[0].token > first[0].token);
    // The first worker wakes up: its token is stale.
    let late = run(
        &mut s,
        12 * SECOND,
        Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
            run: first[0].run.clone(),
            token: first[0].token,
            result: vec![],
        })),
    );
    let e = schedule_error(&late);
    assert_eq!((e.code(), e.field()), (ErrorCode::StaleToken, "token"));
    // Failing: the backoff doubles (2 s), then the third attempt fails and the run is dead.
    let out = run(&mut s, 13 * SECOND, fail(&second[0]));
    assert_eq!(
        out.result,
        Ok(Output::Schedule(ScheduleOutput::Failed(schedule::Failed {
            dead: false,
            runnable_at: Some(Millis(15 * SECOND))
        })))
    );
    let third = claimed(&run(&mut s, 15 * SECOND, claim(1)));
    assert_eq!(third[0].attempt, 3);
    let out = run(&mut s, 15 * SECOND, fail(&third[0]));
    assert_eq!(
        out.result,
        Ok(Output::Schedule(ScheduleOutput::Failed(schedule::Failed {
            dead: true,
            runnable_at: None
        })))
    );
    let runs = s.schedules().runs("r");
    assert!(matches!(&runs[0].state, RunState::Dead { error, .. } if error == "boom"));
    assert!(
        claimed(&run(&mut s, HOUR, claim(10))).is_empty(),
        "a dead run is never claimed"
    );
    assert_eq!(s.schedules().info("r").unwrap().dead, 1);
}

#[test]
fn heartbeat_keeps_a_claim_and_a_completed_run_is_never_claimed_again() {
    let mut s = State::default();
    run(&mut s, 0, create("h", Spec::At { at_ms: SECOND }, policy()));
    run(&mut s, SECOND, Command::Tick);
    let c = claimed(&run(&mut s, SECOND, claim(1)));
    let beat = Command::Schedule(ScheduleCommand::Heartbeat(schedule::Heartbeat {
        run: c[0].run.clone(),
        token: c[0].token,
    }));
    run(&mut s, 9 * SECOND, beat);
    run(&mut s, 15 * SECOND, Command::Tick);
    assert!(
        matches!(s.schedules().runs("h")[0].state, RunState::Claimed { .. }),
        "the heartbeat moved the lease to 19 s"
    );
    run(
        &mut s,
        16 * SECOND,
        Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
            run: c[0].run.clone(),
            token: c[0].token,
            result: b"ok".to_vec(),
        })),
    );
    run(&mut s, HOUR, Command::Tick);
    assert!(claimed(&run(&mut s, HOUR, claim(10))).is_empty());
    assert_eq!(
        s.schedules().info("h").unwrap().next_fire,
        None,
        "a one-shot fires once"
    );
}

#[test]
fn pause_resume_trigger_and_cancel() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create(
            "p",
            Spec::Every {
                interval_ms: SECOND,
            },
            policy(),
        ),
    );
    run(
        &mut s,
        0,
        Command::Schedule(ScheduleCommand::Pause(schedule::Pause { id: "p".into() })),
    );
    run(&mut s, 10 * SECOND, Command::Tick);
    assert!(fire_times(&s, "p").is_empty());
    let out = run(
        &mut s,
        10 * SECOND + 500,
        Command::Schedule(ScheduleCommand::Resume(schedule::Resume { id: "p".into() })),
    );
    assert_eq!(
        out.result,
        Ok(Output::Schedule(ScheduleOutput::Resumed {
            next_fire: Some(Millis(11 * SECOND))
        }))
    );
    let out = run(
        &mut s,
        10 * SECOND + 600,
        Command::Schedule(ScheduleCommand::Trigger(schedule::Trigger {
            id: "p".into(),
        })),
    );
    assert_eq!(
        out.result,
        Ok(Output::Schedule(ScheduleOutput::Triggered {
            run: RunId {
                schedule: "p".into(),
                fire_time: Millis(10 * SECOND + 600)
            }
        }))
    );
    assert!(s.schedules().runs("p")[0].manual);
    let c = claimed(&run(&mut s, 10 * SECOND + 700, claim(1)));
    run(
        &mut s,
        10 * SECOND + 800,
        Command::Schedule(ScheduleCommand::Cancel(schedule::Cancel { id: "p".into() })),
    );
    assert!(s.schedules().info("p").is_none());
    let e = schedule_error(&run(
        &mut s,
        10 * SECOND + 900,
        Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
            run: c[0].run.clone(),
            token: c[0].token,
            result: vec![],
        })),
    ));
    assert_eq!(e.code(), ErrorCode::StaleToken);
}

#[test]
fn bad_input_names_the_field() {
    let mut s = State::default();
    run(&mut s, 0, Command::Tick);
    let before = s.clone();
    let cases = [
        (
            create(
                "x",
                Spec::Cron {
                    expr: "61 * * * *".into(),
                    tz: "UTC".into(),
                },
                policy(),
            ),
            ErrorCode::InvalidArgument,
            "cron",
        ),
        (
            create(
                "x",
                Spec::Cron {
                    expr: "* * * * *".into(),
                    tz: "Mars/Olympus".into(),
                },
                policy(),
            ),
            ErrorCode::InvalidArgument,
            "tz",
        ),
        (
            create("x", Spec::Every { interval_ms: 999 }, policy()),
            ErrorCode::InvalidArgument,
            "every",
        ),
        (
            create(
                "x",
                Spec::Every {
                    interval_ms: SECOND,
                },
                Policy {
                    max_attempts: 0,
                    ..policy()
                },
            ),
            ErrorCode::InvalidArgument,
            "max_attempts",
        ),
        (
            Command::Schedule(ScheduleCommand::Trigger(schedule::Trigger {
                id: "nope".into(),
            })),
            ErrorCode::NotFound,
            "id",
        ),
        (
            Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
                run: RunId {
                    schedule: "nope".into(),
                    fire_time: Millis(1),
                },
                token: FencingToken(1),
                result: vec![],
            })),
            ErrorCode::StaleToken,
            "token",
        ),
        (
            Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
                run: RunId {
                    schedule: "nope".into(),
                    fire_time: Millis(1),
                },
                token: FencingToken(1),
                result: vec![0; crate::limits::SCHEDULE_RESULT_BYTES_MAX + 1],
            })),
            ErrorCode::InvalidArgument,
            "result",
        ),
    ];
    for (command, code, field) in cases {
        let e = schedule_error(&run(&mut s, 0, command));
        assert_eq!((e.code(), e.field()), (code, field), "{e}");
        assert_eq!(s, before);
    }
    assert_eq!(
        schedule_error(&run(
            &mut s,
            0,
            create("x", Spec::Every { interval_ms: 999 }, policy())
        ))
        .to_string(),
        "interval is 999ms; it must be 1000ms to 31622400000ms"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Ticks stamped late, early (clock going backwards) or repeated: with RunAll and a grace
    /// longer than any gap, the runs are exactly the fire times up to the clock, each once.
    #[test]
    fn every_fire_time_up_to_the_clock_is_one_run(steps in prop::collection::vec(-3_000i64..8_000, 1..60), interval in 1u64..4) {
        let interval_ms = interval * SECOND;
        let mut s = State::default();
        run(&mut s, 0, create("e", Spec::Every { interval_ms }, Policy { misfire_grace_ms: 12 * HOUR, ..policy() }));
        let mut stamp = 0i64;
        for step in steps {
            stamp = (stamp + step).max(0);
            run(&mut s, stamp as u64, Command::Tick);
            let expected: Vec<u64> = (1..=s.clock().0 / interval_ms).map(|n| n * interval_ms).collect();
            prop_assert_eq!(fire_times(&s, "e"), expected);
        }
    }
}

/// A step of the claim model test.
#[derive(Clone, Debug)]
enum Step {
    /// The clock moves on by this many ms and a tick is applied.
    Advance(u64),
    /// A worker claims up to this many runs.
    Claim(u32),
    /// A manual run of the schedule.
    Trigger,
    /// Heartbeat, complete or fail, presenting the token of one of the claims seen so far
    /// (picked by this number, modulo how many there are): live, stale or finished.
    Heartbeat(usize),
    Complete(usize),
    Fail(usize),
    /// The state goes through its snapshot encoding and back.
    Restore,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..2_500).prop_map(Step::Advance),
        4 => (1u32..4).prop_map(Step::Claim),
        1 => Just(Step::Trigger),
        2 => any::<usize>().prop_map(Step::Heartbeat),
        3 => any::<usize>().prop_map(Step::Complete),
        3 => any::<usize>().prop_map(Step::Fail),
        1 => Just(Step::Restore),
    ]
}

/// What the model knows of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Runnable once its backoff ends, at this attempt.
    Pending { attempt: u32 },
    Claimed {
        token: FencingToken,
        until: Millis,
        attempt: u32,
    },
    /// Completed or dead: never claimed again.
    Finished,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Claims, heartbeats, completions, failures and expiries against a model: a run is claimed
    /// only while pending, with the attempt the model expects and a token above its every
    /// earlier one; only a run's live claim (its latest token, before its lease ends) may
    /// heartbeat, complete or fail it, and a refused act changes nothing; an expired or failed
    /// claim comes back with the next attempt until the last, then the run is dead; a finished
    /// run is never claimed again; each fire time is one run. Invariants after every step.
    #[test]
    fn claims_follow_the_model_through_expiry_retry_and_death(
        steps in prop::collection::vec(step(), 1..80),
        backoff_ms in prop_oneof![Just(0u64), 200u64..1_500],
    ) {
        const MAX_ATTEMPTS: u32 = 3;
        let policy = Policy {
            max_attempts: MAX_ATTEMPTS,
            backoff_ms,
            timeout_ms: SECOND,
            misfire_grace_ms: 12 * HOUR,
            ..policy()
        };
        let mut s = State::default();
        let mut now = 1_000_000u64;
        run(&mut s, now, create("s", Spec::Every { interval_ms: 2 * SECOND }, policy));
        let mut model: std::collections::BTreeMap<RunId, Seen> = Default::default();
        let mut tokens: std::collections::BTreeMap<RunId, FencingToken> = Default::default();
        // Every claim handed out, to present its token again later.
        let mut claims: Vec<(RunId, FencingToken)> = Vec::new();
        for step in steps {
            match step {
                Step::Advance(ms) => {
                    now += ms;
                    run(&mut s, now, Command::Tick);
                    for seen in model.values_mut() {
                        if let Seen::Claimed { until, attempt, .. } = *seen && until.0 <= now {
                            *seen = if attempt >= MAX_ATTEMPTS {
                                Seen::Finished
                            } else {
                                Seen::Pending { attempt: attempt + 1 }
                            };
                        }
                    }
                }
                Step::Claim(max) => {
                    let applied = run(&mut s, now, claim(max));
                    for c in claimed(&applied) {
                        let expected = match model.get(&c.run) {
                            None => 1,
                            Some(Seen::Pending { attempt }) => *attempt,
                            Some(other) => {
                                return Err(TestCaseError::fail(format!("{} claimed while {other:?}", c.run)));
                            }
                        };
                        prop_assert_eq!(c.attempt, expected, "{}", c.run);
                        prop_assert!(c.attempt <= MAX_ATTEMPTS);
                        if let Some(earlier) = tokens.get(&c.run) {
                            prop_assert!(c.token > *earlier, "{} token {} after {}", c.run, c.token, earlier);
                        }
                        prop_assert!(c.until.0 > now);
                        tokens.insert(c.run.clone(), c.token);
                        model.insert(c.run.clone(), Seen::Claimed { token: c.token, until: c.until, attempt: c.attempt });
                        claims.push((c.run, c.token));
                    }
                }
                Step::Trigger => {
                    run(&mut s, now, Command::from(schedule::Trigger { id: "s".into() }));
                }
                Step::Heartbeat(k) | Step::Complete(k) | Step::Fail(k) => {
                    if claims.is_empty() {
                        continue;
                    }
                    let (run_id, token) = claims[k % claims.len()].clone();
                    let live = matches!(
                        model.get(&run_id),
                        Some(Seen::Claimed { token: held, until, .. }) if *held == token && until.0 > now
                    );
                    let command: Command = match step {
                        Step::Heartbeat(_) => schedule::Heartbeat { run: run_id.clone(), token }.into(),
                        Step::Complete(_) => schedule::Complete { run: run_id.clone(), token, result: Vec::new() }.into(),
                        _ => schedule::Fail { run: run_id.clone(), token, error: "e".into() }.into(),
                    };
                    let mut before = s.clone();
                    let applied = run(&mut s, now, command);
                    if !live {
                        prop_assert!(
                            matches!(schedule_error(&applied), ScheduleError::StaleClaim { .. }),
                            "{:?} with a stale token of {} answered {:?}", step, run_id, applied.result
                        );
                        before.advance_clock(Millis(now));
                        prop_assert_eq!(&s, &before, "a refused act changed the state");
                        continue;
                    }
                    let Some(Seen::Claimed { attempt, .. }) = model.get(&run_id).copied() else {
                        unreachable!("live")
                    };
                    let result = applied.result.clone().expect("a live claim's act succeeds");
                    match step {
                        Step::Heartbeat(_) => {
                            let until = <schedule::Heartbeat as crate::Call>::output(result);
                            prop_assert!(until.0 > now);
                            model.insert(run_id, Seen::Claimed { token, until, attempt });
                        }
                        Step::Complete(_) => {
                            model.insert(run_id, Seen::Finished);
                        }
                        _ => {
                            let failed = <schedule::Fail as crate::Call>::output(result);
                            prop_assert_eq!(failed.dead, attempt >= MAX_ATTEMPTS);
                            let next = if failed.dead { Seen::Finished } else { Seen::Pending { attempt: attempt + 1 } };
                            model.insert(run_id, next);
                        }
                    }
                }
                Step::Restore => {
                    let restored = State::from_snapshot(&s.to_snapshot()).expect("loads");
                    prop_assert_eq!(&restored, &s);
                    s = restored;
                }
            }
            // Each fire time is one run; the finished ones are those the model finished.
            let runs = s.schedules().runs("s");
            let mut ids: Vec<&RunId> = runs.iter().map(|r| &r.id).collect();
            ids.dedup();
            prop_assert_eq!(ids.len(), runs.len(), "a fire time made twice");
            for r in &runs {
                if let Some(seen) = model.get(&r.id) {
                    prop_assert_eq!(
                        r.state.is_finished(),
                        *seen == Seen::Finished,
                        "{} is {:?} but the model has {:?}", r.id, r.state, seen
                    );
                }
            }
        }
    }
}

/// A list with an empty item (`,` alone, `1,,2`) gave croner an empty set, whose "never fires"
/// search took seconds, inside the write path; a year field (a 7th) gave fire times the clock
/// had passed. Both are refused as they are written (the reason names the item or the field
/// count), before any search for fire times.
#[test]
fn a_cron_with_an_empty_list_item_or_a_year_field_is_refused_as_written() {
    let mut s = State::default();
    for (expr, reason) in [
        (",,,, * * * *", "empty item"),
        (", * * * *", "empty item"),
        ("1, * * * *", "empty item"),
        ("0 0 0 1 1 * 1971", "7 fields"),
        ("* * *", "3 fields"),
    ] {
        let e = schedule_error(&run(
            &mut s,
            0,
            create(
                "c",
                Spec::Cron {
                    expr: expr.into(),
                    tz: "UTC".into(),
                },
                policy(),
            ),
        ));
        assert!(e.to_string().contains(reason), "{expr:?}: {e}");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }
}

/// A retry becomes claimable when the log clock passes its backoff, whatever command moves the
/// clock there: that command wakes the workers waiting to claim, once, and no earlier one does.
#[test]
fn the_command_whose_stamp_passes_a_retry_time_wakes_waiting_workers() {
    let mut s = State::default();
    run(
        &mut s,
        0,
        create("r", Spec::Delay { delay_ms: SECOND }, policy()),
    );
    run(&mut s, SECOND, Command::Tick);
    let first = claimed(&run(&mut s, SECOND, claim(1)));
    let failed = run(&mut s, 2 * SECOND, fail(&first[0]));
    let Ok(Output::Schedule(ScheduleOutput::Failed(schedule::Failed {
        runnable_at: Some(at),
        ..
    }))) = failed.result
    else {
        panic!("expected a retry, got {:?}", failed.result);
    };
    let put = |s: &mut State, stamp: u64| {
        let command = Command::from(crate::kv::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: None,
        });
        run(s, stamp, command).woken
    };
    assert!(put(&mut s, at.0 - 1).is_empty(), "not runnable yet");
    assert_eq!(put(&mut s, at.0), [crate::Wake::Schedules]);
    assert!(put(&mut s, at.0 + 1).is_empty(), "woken once");
    assert_eq!(claimed(&run(&mut s, at.0 + 1, claim(1)))[0].attempt, 2);
}
