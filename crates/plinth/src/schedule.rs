//! `plinth schedule ...` and `plinth worker run`: schedules, their runs, and a worker that runs a
//! command per claimed run.

use crate::output::{connect, json, rfc3339, text};
use crate::{ClientOpts, Ms, ms_up_to, ms_within};
use plinth_client::{WorkerOptions, pb};
use plinth_proto::limits;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct SpecArgs {
    /// A cron expression: 5 fields, or 6 with seconds first.
    #[arg(long)]
    cron: Option<String>,
    /// Every this long (at least 1s).
    #[arg(long, value_parser = ms_within(limits::SCHEDULE_INTERVAL_MS_MIN, limits::SCHEDULE_INTERVAL_MS_MAX))]
    every: Option<Ms>,
    /// Once, at this RFC 3339 time (e.g. 2027-01-01T00:00:00Z).
    #[arg(long)]
    at: Option<String>,
    /// Once, this long from now.
    #[arg(long = "in", value_parser = ms_within(1, limits::SCHEDULE_DELAY_MS_MAX))]
    after: Option<Ms>,
}

#[derive(clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule.
    Create {
        id: String,
        #[command(flatten)]
        spec: Box<SpecArgs>,
        /// The cron's IANA time zone.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// The job payload handed to workers (e.g. JSON).
        #[arg(long, default_value = "")]
        job: String,
        /// Attempts before a run is dead.
        #[arg(long, default_value_t = limits::SCHEDULE_ATTEMPTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(limits::SCHEDULE_ATTEMPTS_MAX)))]
        max_attempts: u32,
        /// The first retry delay; it doubles per attempt.
        #[arg(long, default_value_t = Ms(limits::SCHEDULE_BACKOFF_MS_DEFAULT), value_parser = ms_up_to(limits::SCHEDULE_BACKOFF_MS_MAX))]
        backoff: Ms,
        /// The claim lease: a run not completed or heartbeated within it is retried.
        #[arg(long, default_value_t = Ms(limits::SCHEDULE_TIMEOUT_MS_DEFAULT), value_parser = ms_within(limits::SCHEDULE_TIMEOUT_MS_MIN, limits::SCHEDULE_TIMEOUT_MS_MAX))]
        timeout: Ms,
        /// allow, skip or queue: a fire time while an earlier run is unfinished.
        #[arg(long, default_value = "allow")]
        overlap: String,
        /// run-once, run-all or skip: fire times missed by more than --misfire-grace.
        #[arg(long, default_value = "run-once")]
        misfire: String,
        #[arg(long, default_value_t = Ms(limits::SCHEDULE_MISFIRE_GRACE_MS_DEFAULT), value_parser = ms_up_to(limits::SCHEDULE_MISFIRE_GRACE_MS_MAX))]
        misfire_grace: Ms,
    },
    /// Every schedule.
    List,
    /// One schedule with its counts and due delay.
    Get {
        id: String,
    },
    /// Delete a schedule and its runs.
    Cancel {
        id: String,
    },
    Pause {
        id: String,
    },
    /// Go on from now (fire times missed while paused are not made up).
    Resume {
        id: String,
    },
    /// A run now; prints its run id.
    Trigger {
        id: String,
    },
    /// The schedule's runs, oldest first.
    Runs {
        id: String,
        /// The latest this many (0: all kept).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(clap::Subcommand)]
pub enum WorkerCommand {
    /// Run COMMAND for each claimed run, the job on its stdin and PLINTH_RUN_ID,
    /// PLINTH_FIRE_TIME (RFC 3339), PLINTH_FIRE_TIME_MS, PLINTH_ATTEMPT in its environment: exit
    /// status 0 completes the run, anything else fails it. Runs until SIGINT or SIGTERM, then
    /// finishes what is running.
    Run {
        /// Only runs of this schedule (repeat for more); every schedule with --all.
        #[arg(long = "schedule", required_unless_present = "all")]
        schedules: Vec<String>,
        #[arg(long, conflicts_with = "schedules")]
        all: bool,
        /// The worker's name; this host and process id when absent.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Stop once nothing has been claimed or run for this long.
        #[arg(long, value_parser = ms_up_to(crate::IDLE_MS_MAX))]
        exit_when_idle: Option<Ms>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn schedule_line(s: &pb::Schedule) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let when = if !spec.cron.is_empty() {
        format!("cron {:?} {}", spec.cron, spec.tz)
    } else if spec.every_ms != 0 {
        format!("every {}ms", spec.every_ms)
    } else if spec.delay_ms != 0 {
        format!("in {}ms", spec.delay_ms)
    } else {
        format!("at {}", rfc3339(spec.at_ms))
    };
    let stats = s.stats.unwrap_or_default();
    let next = if s.next_fire_ms == 0 {
        "never".to_string()
    } else {
        rfc3339(s.next_fire_ms)
    };
    format!(
        "{}\t{when}\tnext {next}{}\tcompleted {}\tdead {}\tdue delay p99 {}ms",
        s.id,
        if s.paused { " (paused)" } else { "" },
        stats.completed,
        stats.dead,
        stats.due_delay_p99_ms
    )
}

fn print_schedule(opts: &ClientOpts, s: &pb::Schedule) {
    if opts.json {
        json(s);
    } else {
        println!("{}", schedule_line(s));
    }
}

pub async fn run(opts: &ClientOpts, command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    let ms = |d: Ms| d.0;
    match command {
        ScheduleCommand::Create {
            id,
            spec,
            tz,
            job,
            max_attempts,
            backoff,
            timeout,
            overlap,
            misfire,
            misfire_grace,
        } => {
            let spec = *spec;
            let at_ms = match &spec.at {
                Some(at) => {
                    let ms = chrono::DateTime::parse_from_rfc3339(at)
                        .map_err(|e| anyhow::anyhow!("--at {at:?} is not an RFC 3339 time: {e}"))?
                        .timestamp_millis();
                    u64::try_from(ms).map_err(|_| {
                        anyhow::anyhow!("--at {at:?} is before 1970; a schedule fires from 1970 on")
                    })?
                }
                None => 0,
            };
            let spec = pb::ScheduleSpec {
                at_ms,
                delay_ms: spec.after.map_or(0, ms),
                every_ms: spec.every.map_or(0, ms),
                cron: spec.cron.unwrap_or_default(),
                tz,
            };
            let policy = pb::SchedulePolicy {
                max_attempts,
                backoff_ms: Some(ms(backoff)),
                timeout_ms: ms(timeout),
                overlap,
                misfire: misfire.replace('-', "_"),
                misfire_grace_ms: Some(ms(misfire_grace)),
            };
            let schedule = client.schedule_create(id, spec, job, policy).await?;
            print_schedule(opts, &schedule);
        }
        ScheduleCommand::List => {
            for s in client.schedule_list().await? {
                print_schedule(opts, &s);
            }
        }
        ScheduleCommand::Get { id } => print_schedule(opts, &client.schedule_get(id).await?),
        ScheduleCommand::Cancel { id } => {
            let runs = client.schedule_cancel(id.clone()).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "runs": runs }));
            } else {
                println!("cancelled {id} and its {runs} runs");
            }
        }
        ScheduleCommand::Pause { id } => print_schedule(opts, &client.schedule_pause(id).await?),
        ScheduleCommand::Resume { id } => print_schedule(opts, &client.schedule_resume(id).await?),
        ScheduleCommand::Trigger { id } => {
            let run_id = client.schedule_trigger(id).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "run_id": run_id }));
            } else {
                println!("{run_id}");
            }
        }
        ScheduleCommand::Runs { id, limit } => {
            for r in client.schedule_runs(id, limit).await? {
                if opts.json {
                    json(&r);
                } else {
                    println!(
                        "{}\t{}\t{}\tattempt {}{}",
                        r.run_id,
                        rfc3339(r.fire_time_ms),
                        r.state,
                        r.attempt,
                        if r.last_error.is_empty() {
                            String::new()
                        } else {
                            format!("\t{}", r.last_error)
                        }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_worker(opts: &ClientOpts, command: WorkerCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    let WorkerCommand::Run {
        schedules,
        all: _,
        name,
        concurrency,
        exit_when_idle,
        command,
    } = command;
    let exit_when_idle = exit_when_idle.map(Ms::duration);
    let stop = crate::stop_signal();
    let command = std::sync::Arc::new(command);
    let last_work = std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let options = WorkerOptions {
        name: name.unwrap_or_else(crate::lock::this_process),
        concurrency,
        schedules,
        wait: exit_when_idle
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(20)),
    };
    let worker = client.worker(options, {
        let last_work = last_work.clone();
        let running = running.clone();
        move |claim: pb::ScheduleClaim| {
            let command = command.clone();
            let last_work = last_work.clone();
            let running = running.clone();
            running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let outcome = run_one(&command, &claim).await;
                *last_work.lock().expect("not poisoned") = tokio::time::Instant::now();
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                outcome
            }
        }
    });
    let idle = async {
        let Some(limit) = exit_when_idle else {
            return std::future::pending::<()>().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let last = *last_work.lock().expect("not poisoned");
            if running.load(std::sync::atomic::Ordering::SeqCst) == 0 && last.elapsed() >= limit {
                return;
            }
        }
    };
    let failed = tokio::select! {
        _ = stop => None,
        _ = idle => None,
        e = worker.failed() => Some(e),
    };
    let stats = worker.shutdown().await;
    eprintln!(
        "worked: {} completed, {} failed, {} stale",
        stats.completed, stats.failed, stats.stale
    );
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Runs the command for one claimed run; its stdout is the run's result on exit status 0.
async fn run_one(command: &[String], claim: &pb::ScheduleClaim) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("PLINTH_RUN_ID", &claim.run_id)
        .env("PLINTH_FIRE_TIME", rfc3339(claim.fire_time_ms))
        .env("PLINTH_FIRE_TIME_MS", claim.fire_time_ms.to_string())
        .env("PLINTH_ATTEMPT", claim.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&claim.job).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for {:?}: {e}", command[0]))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{:?} exited with {}: {}",
            command[0],
            out.status,
            text(&out.stdout).chars().take(200).collect::<String>()
        ))
    }
}
