//! `plinth lock ...` and `plinth election ...`: locks with fencing tokens, running a command
//! under a lock, and leader elections.

use crate::output::{connect, json, text};
use crate::{ClientOpts, Ms, ms_up_to, ms_within};
use anyhow::Context as _;
use plinth_client::{LockGuard, LockOptions, pb};
use plinth_proto::limits;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;
use tokio::process::Command;

/// The exit status of `lock run` and `election campaign` when the hold is lost.
const EXIT_LOST: u8 = 3;

#[derive(clap::Subcommand)]
pub enum LockCommand {
    /// Take a permit once and print its fencing token (the hold is not renewed: renew it, or use
    /// `lock run`).
    Acquire {
        name: String,
        /// Who holds the lock, as `lock get` shows it.
        #[arg(long)]
        owner: String,
        /// How long the hold lasts without renewal (500ms to 7 days).
        #[arg(long, default_value_t = Ms(limits::LOCK_TTL_MS_DEFAULT), value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Ms,
        /// Queue for the lock this long if it is taken (at most 5m); without it, fail at once.
        #[arg(long, value_parser = ms_up_to(limits::LOCK_WAIT_MS_MAX))]
        wait: Option<Ms>,
        /// Permits of a counting semaphore; every holder must give the same number.
        #[arg(long, default_value_t = 1)]
        permits: u32,
    },
    /// Renew a hold; fails with STALE_TOKEN once it has expired.
    Renew {
        name: String,
        token: u64,
        /// A new ttl; the acquire's ttl when absent.
        #[arg(long, value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Option<Ms>,
    },
    /// Release a hold; the next waiter gets the lock.
    Release { name: String, token: u64 },
    /// Show the lock's holders and waiters.
    Get { name: String },
    /// Print `current` if TOKEN still holds the lock, else `stale` with exit status 1.
    Check { name: String, token: u64 },
    /// Run a command while holding the lock. The token is in PLINTH_FENCING_TOKEN; the hold is
    /// renewed while the command runs; if the hold is lost, the command is killed and the exit
    /// status is 3. On SIGINT or SIGTERM the command is killed and the lock released (status
    /// 130). Otherwise the exit status is the command's.
    Run {
        name: String,
        /// Who holds the lock; this host and process id when absent.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = Ms(limits::LOCK_TTL_MS_DEFAULT), value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Ms,
        /// Queue for the lock this long if it is taken; without it, fail at once.
        #[arg(long, value_parser = ms_up_to(limits::LOCK_WAIT_MS_MAX))]
        wait: Option<Ms>,
        #[arg(long, default_value_t = 1)]
        permits: u32,
        /// The command and its arguments, after `--`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum ElectionCommand {
    /// Campaign until leader, print the leader's token (its term), then keep the leadership
    /// until SIGINT or SIGTERM (resigning) or until it is lost (exit status 3).
    Campaign {
        name: String,
        /// The candidate's name; this host and process id when absent.
        #[arg(long)]
        candidate: Option<String>,
        /// The value to lead with, e.g. an address.
        #[arg(long, default_value = "")]
        value: String,
        #[arg(long, default_value_t = Ms(limits::LOCK_TTL_MS_DEFAULT), value_parser = ms_within(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX))]
        ttl: Ms,
    },
    /// Print the current leader (exit status 1 if there is none).
    Leader { name: String },
    /// Print the leader now and at every change, until interrupted.
    Observe { name: String },
    /// Change the leader's value.
    Proclaim {
        name: String,
        token: u64,
        value: String,
    },
    /// Give up leadership.
    Resign { name: String, token: u64 },
}

fn hold_line(hold: &pb::LockHold) -> String {
    let mut line = format!(
        "{}\ttoken {}\towner {}\tlease {}\t{}ms left of {}ms",
        hold.name, hold.token, hold.owner, hold.lease, hold.remaining_ms, hold.ttl_ms
    );
    if !hold.value.is_empty() {
        line.push_str(&format!("\tvalue {}", text(&hold.value)));
    }
    line
}

/// Prints a hold as JSON or as one line of text.
fn print_hold(opts: &ClientOpts, hold: &pb::LockHold) {
    if opts.json {
        json(hold);
    } else {
        println!("{}", hold_line(hold));
    }
}

/// `host:pid`, naming this process as a lock owner or candidate.
pub fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

pub async fn run(opts: &ClientOpts, command: LockCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        LockCommand::Acquire {
            name,
            owner,
            ttl,
            wait,
            permits,
        } => {
            let options = LockOptions {
                owner,
                ttl: ttl.duration(),
                wait: wait.map(Ms::duration),
                permits,
            };
            let hold = client.lock_acquire(name, &options).await?;
            if opts.json {
                json(&hold);
            } else {
                println!("{}", hold.token);
            }
        }
        LockCommand::Renew { name, token, ttl } => {
            print_hold(
                opts,
                &client
                    .lock_renew(name, token, ttl.map(Ms::duration))
                    .await?,
            );
        }
        LockCommand::Release { name, token } => {
            let reply = client.lock_release(name.clone(), token).await?;
            if opts.json {
                json(&reply);
            } else {
                println!("released {name} (token {token})");
            }
        }
        LockCommand::Get { name } => {
            let reply = client.lock_get(name.clone()).await?;
            if opts.json {
                json(&reply);
            } else if reply.holders.is_empty() {
                println!("{name} is free");
            } else {
                println!(
                    "{name}: {} of {} permits taken, {} waiting",
                    reply.holders.len(),
                    reply.permits,
                    reply.waiters.len()
                );
                for hold in &reply.holders {
                    println!("holder\t{}", hold_line(hold));
                }
                for waiter in &reply.waiters {
                    println!("waiter\t{}\tticket {}", waiter.owner, waiter.ticket);
                }
            }
        }
        LockCommand::Check { name, token } => {
            let current = client.lock_check_fence(name, token).await?;
            if opts.json {
                println!("{}", serde_json::json!({ "current": current }));
            } else {
                println!("{}", if current { "current" } else { "stale" });
            }
            if !current {
                return Ok(ExitCode::from(1));
            }
        }
        LockCommand::Run {
            name,
            owner,
            ttl,
            wait,
            permits,
            command,
        } => {
            let options = LockOptions {
                owner: owner.unwrap_or_else(this_process),
                ttl: ttl.duration(),
                wait: wait.map(Ms::duration),
                permits,
            };
            // Listening before acquiring: a signal during the wait or the start must not leave
            // a hold or a command behind.
            let mut stop = Box::pin(crate::stop_signal());
            let guard = tokio::select! {
                guard = client.lock(name, options) => guard?,
                _ = &mut stop => return Ok(ExitCode::from(130)),
            };
            return run_under(guard, &command, stop).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `command` while `guard` holds. If the hold is lost, the command's whole process group is
/// killed at once (exit status 3); on SIGINT or SIGTERM the group gets SIGTERM, then SIGKILL after
/// a grace period, and the lock is released (exit status 130). Otherwise the exit status is the
/// command's (128 + the signal if a signal ended it).
async fn run_under(
    guard: LockGuard,
    command: &[String],
    mut stop: Pin<Box<impl Future<Output = ()>>>,
) -> anyhow::Result<ExitCode> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .env("PLINTH_FENCING_TOKEN", guard.token().to_string())
        .env("PLINTH_LOCK_NAME", guard.name())
        .env("PLINTH_LOCK_LEASE", guard.hold().lease.to_string())
        // Its own process group, so that what it starts is stopped with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {:?}", command[0]))?;
    let group = child.id().map(|pid| pid as libc::pid_t);
    tokio::select! {
        status = child.wait() => {
            let status = status.context("waiting for the command")?;
            if let Err(e) = guard.release().await {
                eprintln!("warning: releasing the lock failed: {e}");
            }
            Ok(exit_code(status))
        }
        lost = guard.lost() => {
            signal_group(group, libc::SIGKILL);
            let _ = child.wait().await;
            eprintln!(
                "error: lost lock {} (token {}): {lost:?}; the command was killed",
                guard.name(),
                guard.token()
            );
            Ok(ExitCode::from(EXIT_LOST))
        }
        _ = &mut stop => {
            signal_group(group, libc::SIGTERM);
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                signal_group(group, libc::SIGKILL);
                let _ = child.wait().await;
            }
            let _ = guard.release().await;
            Ok(ExitCode::from(130))
        }
    }
}

/// How long a command gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn signal_group(group: Option<libc::pid_t>, signal: libc::c_int) {
    if let Some(group) = group {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        (None, None) => ExitCode::FAILURE,
    }
}

pub async fn run_election(opts: &ClientOpts, command: ElectionCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        ElectionCommand::Campaign {
            name,
            candidate,
            value,
            ttl,
        } => {
            let candidate = candidate.unwrap_or_else(this_process);
            let election = client.election(name, candidate, value, ttl.duration());
            let mut stop = Box::pin(crate::stop_signal());
            let leadership = tokio::select! {
                leadership = election.campaign() => leadership?,
                _ = &mut stop => return Ok(ExitCode::from(130)),
            };
            if opts.json {
                json(leadership.hold());
            } else {
                println!("{}", leadership.token());
            }
            tokio::select! {
                lost = leadership.lost() => {
                    eprintln!("error: lost leadership of {} (term {}): {lost:?}", leadership.name(), leadership.token());
                    return Ok(ExitCode::from(EXIT_LOST));
                }
                _ = &mut stop => {
                    leadership.release().await?;
                }
            }
        }
        ElectionCommand::Leader { name } => match client.election_leader(name.clone()).await? {
            Some(leader) => print_hold(opts, &leader),
            None => {
                if !opts.json {
                    eprintln!("{name} has no leader");
                }
                return Ok(ExitCode::from(1));
            }
        },
        ElectionCommand::Observe { name } => {
            let mut observe = client.election_observe(name.clone());
            loop {
                let leader = tokio::select! {
                    leader = observe.next() => leader?,
                    _ = tokio::signal::ctrl_c() => break,
                };
                match (&leader, opts.json) {
                    (Some(leader), _) => print_hold(opts, leader),
                    (None, true) => println!("{}", serde_json::json!({ "leader": null })),
                    (None, false) => println!("{name}\tno leader"),
                }
            }
        }
        ElectionCommand::Proclaim { name, token, value } => {
            print_hold(opts, &client.election_proclaim(name, token, value).await?);
        }
        ElectionCommand::Resign { name, token } => {
            client.election_resign(name.clone(), token).await?;
            if !opts.json {
                println!("resigned {name} (term {token})");
            } else {
                println!("{}", serde_json::json!({}));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
