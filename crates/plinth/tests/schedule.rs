//! End-to-end tests of the scheduler against the real binary: 50 schedules every second through
//! 4 workers with one killed mid-run, bad input, and the CLI.

mod common;

use common::{Server, client, eventually};
use plinth_client::{Client, Code, WorkerOptions, pb};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SCHEDULES: usize = 50;
const WORKERS: usize = 4;

fn every_second() -> pb::ScheduleSpec {
    pb::ScheduleSpec {
        every_ms: 1000,
        ..Default::default()
    }
}

fn policy() -> pb::SchedulePolicy {
    pb::SchedulePolicy {
        max_attempts: 5,
        backoff_ms: Some(200),
        timeout_ms: 3000,
        misfire: "run_all".into(),
        ..Default::default()
    }
}

/// Waits until no run of any schedule is pending or claimed.
async fn drained(c: &Client) {
    eventually(Duration::from_secs(60), "every run finished", || {
        let c = c.clone();
        async move {
            c.schedule_list()
                .await
                .unwrap()
                .iter()
                .all(|s| s.stats.is_some_and(|t| t.pending == 0 && t.claimed == 0))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_schedules_every_second_through_four_workers_one_killed_mid_run() {
    let server = Server::start();
    let c = client(&server).await;
    for i in 0..SCHEDULES {
        c.schedule_create(
            format!("s{i:02}"),
            every_second(),
            format!("job {i}"),
            policy(),
        )
        .await
        .unwrap();
    }
    // A worker that claims a run and then hangs, and is killed: its run must be retried.
    let (hung_tx, mut hung_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let doomed = client(&server).await.worker(
        WorkerOptions {
            concurrency: 1,
            ..WorkerOptions::new("doomed")
        },
        move |claim| {
            let _ = hung_tx.send(claim.run_id.clone());
            async move {
                std::future::pending::<()>().await;
                Ok::<Vec<u8>, String>(Vec::new())
            }
        },
    );
    let hung = hung_rx
        .recv()
        .await
        .expect("the doomed worker claimed a run");
    doomed.abort();

    // run id → (completions acknowledged, attempts seen)
    let done: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let done = done.clone();
        workers.push(client(&server).await.worker(
            WorkerOptions {
                concurrency: 8,
                wait: Duration::from_secs(1),
                ..WorkerOptions::new(format!("w{w}"))
            },
            move |claim| {
                let done = done.clone();
                async move {
                    done.lock()
                        .unwrap()
                        .entry(claim.run_id)
                        .or_default()
                        .push(claim.attempt);
                    Ok::<Vec<u8>, String>(b"ok".to_vec())
                }
            },
        ));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    for i in 0..SCHEDULES {
        c.schedule_pause(format!("s{i:02}")).await.unwrap();
    }
    drained(&c).await;
    let mut stale = 0;
    for worker in workers {
        stale += worker.shutdown().await.stale;
    }
    assert_eq!(stale, 0, "a healthy worker's claim went stale");

    let done = done.lock().unwrap().clone();
    let mut p99 = 0;
    let mut total = 0;
    for i in 0..SCHEDULES {
        let id = format!("s{i:02}");
        let schedule = c.schedule_get(&id).await.unwrap();
        let runs = c.schedule_runs(&id, 0).await.unwrap();
        assert!(
            runs.len() >= 15,
            "{id} ran only {} times in 20 s",
            runs.len()
        );
        let first = schedule.created_at_ms + 1000;
        for (n, run) in runs.iter().enumerate() {
            // Every fire time in the window, once, in order, each completed.
            assert_eq!(
                run.fire_time_ms,
                first + 1000 * n as u64,
                "{id}: a fire time is missing or doubled"
            );
            assert_eq!(
                run.state, "completed",
                "{id}: {} is {}",
                run.run_id, run.state
            );
            let attempts = done.get(&run.run_id).cloned().unwrap_or_default();
            if run.run_id == hung {
                assert_eq!(
                    attempts,
                    vec![2],
                    "the killed worker's run was retried once, by another"
                );
            } else {
                assert_eq!(attempts, vec![1], "{} ran {attempts:?}", run.run_id);
            }
        }
        total += runs.len();
        p99 = p99.max(schedule.stats.unwrap().due_delay_p99_ms);
    }
    println!(
        "{total} runs of {SCHEDULES} schedules, each exactly once; due delay p99 (worst schedule) {p99} ms"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let server = Server::start();
    let c = client(&server).await;
    let cron = |expr: &str, tz: &str| pb::ScheduleSpec {
        cron: expr.into(),
        tz: tz.into(),
        ..Default::default()
    };
    let e = c
        .schedule_create("x", cron("61 * * * *", "UTC"), "", policy())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "cron"));
    let e = c
        .schedule_create("x", cron("* * * * *", "Mars/Olympus"), "", policy())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "tz"));
    assert_eq!(
        e.message,
        "time zone \"Mars/Olympus\" is not a known IANA time zone (like Europe/Paris or UTC)"
    );
    let fast = pb::ScheduleSpec {
        every_ms: 500,
        ..Default::default()
    };
    let e = c
        .schedule_create("x", fast, "", policy())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            Code::InvalidArgument,
            "interval is 500ms; it must be 1000ms to 31622400000ms"
        )
    );
    let e = c
        .schedule_create("x", pb::ScheduleSpec::default(), "", policy())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "spec"));
    let e = c.schedule_trigger("nope").await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::NotFound, "schedule nope does not exist")
    );
    let e = c.schedule_complete("nope@5", 1, "").await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::StaleToken, "token"));
    let e = c.schedule_complete("no-at-sign", 1, "").await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::InvalidArgument, "run_id")
    );

    // Completing with a stale claim token: the claim expired and the run was claimed again.
    let short = pb::SchedulePolicy {
        timeout_ms: 1000,
        backoff_ms: Some(1),
        ..policy()
    };
    c.schedule_create(
        "once",
        pb::ScheduleSpec {
            delay_ms: 1,
            ..Default::default()
        },
        "",
        short,
    )
    .await
    .unwrap();
    let claim = |c: Client| async move {
        c.schedule_claim(pb::ScheduleClaimRequest {
            worker: "w".into(),
            max: 1,
            wait_ms: 5000,
            ..Default::default()
        })
        .await
        .unwrap()
    };
    let first = claim(c.clone()).await;
    let second = claim(c.clone()).await;
    assert_eq!(first[0].run_id, second[0].run_id);
    assert_eq!(second[0].attempt, 2);
    let e = c
        .schedule_complete(first[0].run_id.clone(), first[0].token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::StaleToken);
    c.schedule_complete(second[0].run_id.clone(), second[0].token, "done")
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/v1/schedule/create", server.endpoint()))
        .body(r#"{"id": "h", "spec": {"cron": "* * * * *"}, "policy": {"overlap": "sometimes"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["field"], "overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_schedules_and_a_worker_runs_a_command() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| server.cli(args);
    let (code, out, err) = cli(&[
        "schedule",
        "create",
        "report",
        "--in",
        "1s",
        "--job",
        "{\"day\": 1}",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("report\tin 1000ms"), "{out}");
    let (code, out, _) = cli(&[
        "schedule",
        "create",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("cron \"30 2 * * *\" Europe/Paris"), "{out}");
    let (code, _, err) = cli(&["schedule", "create", "bad", "--every", "10ms"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("10ms is shorter than the least it may be here, 1s"),
        "{err}"
    );
    let (code, run_id, _) = cli(&["schedule", "trigger", "nightly"]);
    assert_eq!(code, 0);
    assert!(run_id.starts_with("nightly@"), "{run_id}");
    assert_eq!(cli(&["schedule", "pause", "nightly"]).0, 0);
    assert!(cli(&["schedule", "get", "nightly"]).1.contains("(paused)"));
    assert_eq!(cli(&["schedule", "resume", "nightly"]).0, 0);

    let log = dir.path().join("log");
    let script = format!(
        "echo \"$PLINTH_RUN_ID $PLINTH_ATTEMPT $(cat)\" >> {}; echo finished",
        log.display()
    );
    std::thread::sleep(Duration::from_millis(1200));
    let (code, _, err) = cli(&[
        "worker",
        "run",
        "--all",
        "--exit-when-idle",
        "2s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 completed"), "{err}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&format!("{} 1 \n", run_id.trim())), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("report@") && l.ends_with(" 1 {\"day\": 1}")),
        "{log}"
    );
    let (code, out, _) = cli(&["schedule", "runs", "report"]);
    assert_eq!(code, 0);
    assert!(out.contains("\tcompleted\tattempt 1"), "{out}");
    // The due delay of each first claim, and the runs by outcome, at /metrics.
    let metrics = reqwest::get(format!("{}/metrics", server.endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "plinth_schedule_due_delay_seconds_count{schedule=\"report\"} 1\n",
        "plinth_schedule_runs_total{schedule=\"report\",outcome=\"completed\"} 1\n",
        "plinth_schedule_runs_total{schedule=\"nightly\",outcome=\"dead\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let (code, out, _) = cli(&["schedule", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    // A worker whose claims are refused says why and stops, rather than idling forever.
    let (code, _, err) = cli(&["worker", "run", "--schedule", "no spaces", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    assert_eq!(
        cli(&["schedule", "cancel", "report"]).1,
        "cancelled report and its 1 runs\n"
    );
    let (code, _, err) = cli(&["schedule", "get", "report"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
}
