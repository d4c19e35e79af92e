//! End-to-end tests of locks and elections against the real binary: the fenced counter under
//! contention and stalls, waiting and abandoning, misuse, the guard, elections, the CLI and the
//! stale-holder example.

mod common;

use common::{Server, client, eventually};
use plinth_client::{Client, Code, LockOptions, Lost};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

async fn revision(c: &Client) -> u64 {
    c.status().await.unwrap().revision
}

const ROUNDS: u64 = 1_000;
const CLIENTS: u64 = 16;
/// Every this many rounds, the holder stalls past its ttl before writing.
const STALL_EVERY: u64 = 100;

/// 16 clients take turns on one lock for 1,000 rounds, each a fenced read-modify-write of a
/// counter. Some holders stall past their ttl: the lock moves on, and their write must be
/// refused. The counter ends at exactly the number of successful rounds, and the values written
/// are exactly 1..=N, so no two rounds ever overlapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_fenced_counter_with_stalled_holders() {
    let server = Server::start();
    let next_round = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let c = client(&server).await;
        let next_round = next_round.clone();
        tasks.push(tokio::spawn(async move {
            let (mut written, mut refused) = (Vec::new(), 0u64);
            loop {
                let round = next_round.fetch_add(1, Ordering::SeqCst);
                if round >= ROUNDS {
                    return (written, refused);
                }
                let stall = round % STALL_EVERY == STALL_EVERY - 1;
                let options = LockOptions::new(format!("client-{id}"))
                    .ttl(Duration::from_millis(if stall { 600 } else { 5_000 }))
                    .wait(Duration::from_secs(60));
                // A stalling holder takes the lock without a guard: nothing renews it, as in a
                // process frozen by a pause. The others hold a renewing guard.
                let (token, guard) = if stall {
                    (
                        c.lock_acquire("counter", &options).await.unwrap().token,
                        None,
                    )
                } else {
                    let guard = c.lock("counter", options).await.unwrap();
                    (guard.token(), Some(guard))
                };
                let current = match c.get("counter").await.unwrap() {
                    Some(kv) => String::from_utf8(kv.value).unwrap().parse::<u64>().unwrap(),
                    None => 0,
                };
                if stall {
                    // Frozen past the ttl, until the server has moved the lock on.
                    eventually(Duration::from_secs(20), "the stalled hold expired", || {
                        let c = c.clone();
                        async move { !c.lock_check_fence("counter", token).await.unwrap() }
                    })
                    .await;
                }
                let next = current + 1;
                match c
                    .put_fenced("counter", next.to_string(), "counter", token)
                    .await
                {
                    Ok(_) => {
                        assert!(!stall, "a write under an expired token was accepted");
                        written.push(next);
                    }
                    Err(e) => {
                        assert_eq!(e.code, Code::StaleToken, "{e}");
                        assert!(stall, "a write under a live, renewed hold was refused: {e}");
                        refused += 1;
                    }
                }
                match guard {
                    Some(guard) => guard.release().await.unwrap(),
                    None => {
                        let e = c.lock_release("counter", token).await.unwrap_err();
                        assert_eq!(e.code, Code::StaleToken);
                    }
                }
            }
        }));
    }
    let mut written = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (mine, theirs) = task.await.unwrap();
        written.extend(mine);
        refused += theirs;
    }
    let c = client(&server).await;
    let counter: u64 = String::from_utf8(c.get("counter").await.unwrap().unwrap().value)
        .unwrap()
        .parse()
        .unwrap();
    written.sort();
    assert_eq!(counter, written.len() as u64, "lost or extra increments");
    assert_eq!(
        written,
        (1..=counter).collect::<Vec<_>>(),
        "two rounds overlapped"
    );
    assert_eq!(
        refused,
        ROUNDS / STALL_EVERY,
        "every stalled holder was refused"
    );
    assert_eq!(counter + refused, ROUNDS);
}

#[tokio::test]
async fn misuse_gets_stable_codes_and_changes_nothing() {
    let server = Server::start();
    let c = client(&server).await;
    let opts = LockOptions::new("a").ttl(Duration::from_secs(60));
    let hold = c.lock_acquire("db", &opts).await.unwrap();

    let before = revision(&c).await;
    // Release with a token that never held it.
    let e = c.lock_release("db", hold.token + 1000).await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::StaleToken, "token"));
    // Zero ttl.
    let e = c
        .lock_acquire("db2", &LockOptions::new("a").ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "ttl"));
    assert_eq!(e.message, "ttl is 0ms; the minimum is 500ms");
    // A wait longer than the maximum.
    let e = c
        .lock_acquire("db", &opts.clone().wait(Duration::from_secs(301)))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "wait"));
    assert_eq!(e.message, "wait is 301000ms; the maximum is 300000ms");
    // Held, no wait.
    let e = c.lock_acquire("db", &opts).await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::FailedPrecondition, "name")
    );
    // Another permit count while in use.
    let e = c
        .lock_acquire("db", &opts.clone().permits(3))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::FailedPrecondition, "permits")
    );
    // A bad name.
    let e = c.lock_acquire("no spaces", &opts).await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "name"));
    assert_eq!(revision(&c).await, before, "a refused call changed state");
    let get = c.lock_get("db").await.unwrap();
    assert_eq!(get.holders.len(), 1);
    assert_eq!(get.holders[0].token, hold.token);

    // Renew and release after expiry: the old token is stale, and stays refused.
    let short = c
        .lock_acquire(
            "short",
            &LockOptions::new("a").ttl(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the hold expired", || {
        let c = c.clone();
        async move { c.lock_get("short").await.unwrap().holders.is_empty() }
    })
    .await;
    let before = revision(&c).await;
    let e = c.lock_renew("short", short.token, None).await.unwrap_err();
    assert_eq!(e.code, Code::StaleToken);
    let e = c.lock_release("short", short.token).await.unwrap_err();
    assert_eq!(e.code, Code::StaleToken);
    assert_eq!(revision(&c).await, before);

    // The same refusal over HTTP, as problem+json.
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/v1/lock/acquire", server.endpoint()))
        .body(r#"{"name": "db", "owner": "a", "ttl_ms": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_ARGUMENT");
    assert_eq!(problem["field"], "ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_order_give_up_at_their_deadline_and_leave_when_they_go_away() {
    let server = Server::start();
    let c = client(&server).await;
    let a = c
        .lock_acquire("q", &LockOptions::new("a").ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let waiters = |n: usize| {
        let c = c.clone();
        async move { c.lock_get("q").await.unwrap().waiters.len() == n }
    };
    let wait = |owner: &str, wait: Duration| {
        let c = c.clone();
        let options = LockOptions::new(owner)
            .ttl(Duration::from_secs(30))
            .wait(wait);
        tokio::spawn(async move { c.lock_acquire("q", &options).await })
    };
    let b = wait("b", Duration::from_secs(30));
    eventually(Duration::from_secs(5), "b queued", || waiters(1)).await;
    let gone = wait("gone", Duration::from_secs(30));
    eventually(Duration::from_secs(5), "gone queued", || waiters(2)).await;
    let d = wait("d", Duration::from_secs(30));
    eventually(Duration::from_secs(5), "d queued", || waiters(3)).await;
    // A short wait gives up with DEADLINE_EXCEEDED and leaves the queue.
    let short = wait("short", Duration::from_millis(600));
    let e = short.await.unwrap().unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::DeadlineExceeded, "wait"));
    // A caller that goes away leaves the queue too.
    gone.abort();
    eventually(Duration::from_secs(5), "the abandoned waiter left", || {
        waiters(2)
    })
    .await;
    let owners: Vec<String> = c
        .lock_get("q")
        .await
        .unwrap()
        .waiters
        .into_iter()
        .map(|w| w.owner)
        .collect();
    assert_eq!(owners, ["b", "d"]);

    c.lock_release("q", a.token).await.unwrap();
    let hb = b.await.unwrap().unwrap();
    assert_eq!(hb.owner, "b");
    assert!(hb.token > a.token);
    assert!(!d.is_finished());
    c.lock_release("q", hb.token).await.unwrap();
    let hd = d.await.unwrap().unwrap();
    assert!(hd.token > hb.token);
}

#[tokio::test]
async fn a_guard_reports_loss_at_its_next_renewal_and_releases_on_drop() {
    let server = Server::start();
    let c = client(&server).await;
    let guard = c
        .lock("g", LockOptions::new("a").ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    // Renewed well past its ttl.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!guard.is_lost());
    assert!(c.lock_check_fence("g", guard.token()).await.unwrap());
    // An operator revokes the hold's lease: the guard hears it at its next renewal.
    c.lease_revoke(guard.hold().lease).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("loss reported within a renewal period");
    assert_eq!(lost, Lost::Stale);
    drop(guard);

    let guard = c
        .lock("g", LockOptions::new("b").ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    drop(guard);
    eventually(Duration::from_secs(5), "the dropped guard released", || {
        let c = c.clone();
        async move { c.lock_get("g").await.unwrap().holders.is_empty() }
    })
    .await;
}

/// A guard that waited in the queue longer than its ttl holds, and keeps holding, once granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_that_waited_longer_than_its_ttl_holds_once_granted() {
    let server = Server::start();
    let c = client(&server).await;
    let first = c
        .lock_acquire(
            "slow",
            &LockOptions::new("first").ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let waiting = {
        let c = c.clone();
        let options = LockOptions::new("second")
            .ttl(Duration::from_secs(3))
            .wait(Duration::from_secs(30));
        tokio::spawn(async move { c.lock("slow", options).await })
    };
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    c.lock_release("slow", first.token).await.unwrap();
    let guard = waiting.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert!(
        !guard.is_lost(),
        "the guard gave up a hold it had just been granted"
    );
    assert!(c.lock_check_fence("slow", guard.token()).await.unwrap());
    guard.release().await.unwrap();
}

#[tokio::test]
async fn semaphore_permits_each_with_its_own_token() {
    let server = Server::start();
    let c = client(&server).await;
    let opts = LockOptions::new("w")
        .ttl(Duration::from_secs(30))
        .permits(3);
    let mut tokens = BTreeSet::new();
    for _ in 0..3 {
        tokens.insert(c.lock_acquire("pool", &opts).await.unwrap().token);
    }
    assert_eq!(tokens.len(), 3);
    let e = c.lock_acquire("pool", &opts).await.unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition);
    let get = c.lock_get("pool").await.unwrap();
    assert_eq!((get.permits, get.holders.len()), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_campaign_observe_proclaim_and_hand_over() {
    let server = Server::start();
    let c = client(&server).await;
    let mut observe = c.election_observe("svc");
    assert_eq!(observe.next().await.unwrap(), None);

    let one = c.election("svc", "n1", "10.0.0.1:80", Duration::from_secs(5));
    let mut lead1 = one.campaign().await.unwrap();
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!(
        (seen.owner.as_str(), seen.value.as_slice()),
        ("n1", &b"10.0.0.1:80"[..])
    );

    let two = c.election("svc", "n2", "10.0.0.2:80", Duration::from_secs(5));
    let campaign2 = tokio::spawn(async move { two.campaign().await });
    eventually(Duration::from_secs(5), "n2 waits", || {
        let c = c.clone();
        async move { c.lock_get("svc").await.unwrap().waiters.len() == 1 }
    })
    .await;
    assert!(
        !campaign2.is_finished(),
        "campaign returns only when leading"
    );

    lead1.proclaim("10.0.0.1:81").await.unwrap();
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!(seen.value, b"10.0.0.1:81");
    let term1 = lead1.token();
    lead1.release().await.unwrap();

    let lead2 = campaign2.await.unwrap().unwrap();
    assert!(lead2.token() > term1, "terms increase");
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!((seen.owner.as_str(), seen.token), ("n2", lead2.token()));
    let leader = c.election_leader("svc").await.unwrap().unwrap();
    assert_eq!(leader.owner, "n2");
    // The old leader can no longer proclaim.
    let e = c.election_proclaim("svc", term1, "x").await.unwrap_err();
    assert_eq!(e.code, Code::StaleToken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_passes_the_token_and_kills_the_command_when_the_hold_is_lost() {
    let server = Server::start();
    let c = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("token");
    let grandchild = dir.path().join("grandchild");
    // The command starts a process of its own: losing the hold must stop that one too.
    let script = format!(
        "sleep 60 & echo $! > {}; echo $PLINTH_FENCING_TOKEN > {}; wait",
        grandchild.display(),
        out.display()
    );
    let mut run = std::process::Command::new(Server::binary())
        .args([
            "lock",
            "run",
            "job",
            "--ttl",
            "2s",
            "--endpoint",
            &server.endpoint(),
        ])
        .args(["--", "sh", "-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the command wrote its token", || {
        let out = out.clone();
        async move {
            std::fs::read_to_string(&out).is_ok_and(|t| t.trim().parse::<u64>().is_ok())
        }
    })
    .await;
    let token: u64 = std::fs::read_to_string(&out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let holder = c.lock_get("job").await.unwrap().holders[0].clone();
    assert_eq!(holder.token, token);
    // Held past its ttl while the command runs.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(c.lock_check_fence("job", token).await.unwrap());
    c.lease_revoke(holder.lease).await.unwrap();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = run.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(3), "{}", status.1);
    assert!(status.1.contains("lost lock job"), "{}", status.1);
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = std::fs::read_to_string(&grandchild)
        .unwrap()
        .trim()
        .to_string();
    eventually(
        Duration::from_secs(5),
        "the command's own child was killed",
        || {
            let stat = format!("/proc/{pid}/stat");
            async move {
                // Gone, or a zombie waiting to be reaped: either way no longer running.
                std::fs::read_to_string(stat).map_or(true, |s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                })
            }
        },
    )
    .await;

    // SIGTERM to `lock run`: the command is stopped and the lock released at once.
    let started_marker = dir.path().join("started");
    let marker_script = format!("touch {}; exec sleep 60", started_marker.display());
    let mut run = std::process::Command::new(Server::binary())
        .args([
            "lock",
            "run",
            "term",
            "--ttl",
            "30s",
            "--endpoint",
            &server.endpoint(),
        ])
        .args(["--", "sh", "-c", &marker_script])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "the command started", || {
        let marker = started_marker.clone();
        async move { marker.exists() }
    })
    .await;
    let pid = run.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        c.lock_get("term").await.unwrap().holders.is_empty(),
        "not released on SIGTERM"
    );

    // And with a command that finishes: its exit status, and the lock released.
    let (code, stdout, _) =
        server.cli(&["lock", "run", "job", "--", "sh", "-c", "echo ran; exit 4"]);
    assert_eq!((code, stdout.as_str()), (4, "ran\n"));
    assert!(c.lock_get("job").await.unwrap().holders.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_acquires_checks_renews_and_releases() {
    let server = Server::start();
    let (code, token, err) =
        server.cli(&["lock", "acquire", "cli", "--owner", "me", "--ttl", "30s"]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert_eq!(server.cli(&["lock", "check", "cli", &token]).1, "current\n");
    let (code, out, _) = server.cli(&["lock", "renew", "cli", &token, "--ttl", "1m"]);
    assert_eq!(code, 0);
    assert!(out.contains("ttl") || out.contains("60000ms"), "{out}");
    let (code, out, _) = server.cli(&["lock", "get", "cli"]);
    assert_eq!(code, 0);
    assert!(out.contains("owner me"), "{out}");
    // Refused before it is sent, naming the limit (the server refuses it too).
    let (code, _, err) = server.cli(&["lock", "acquire", "cli", "--owner", "you", "--wait", "10m"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("10m is longer than the most it may be here, 5m (300000 ms)"),
        "{err}"
    );
    assert_eq!(server.cli(&["lock", "release", "cli", &token]).0, 0);
    let (code, out, _) = server.cli(&["lock", "check", "cli", &token]);
    assert_eq!((code, out.as_str()), (1, "stale\n"));
    let (code, _, err) = server.cli(&["lock", "release", "cli", &token]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: STALE_TOKEN: "), "{err}");
    let (code, _, _) = server.cli(&["election", "leader", "nobody"]);
    assert_eq!(code, 1);
}

/// The example in `examples/stale-holder.sh` runs as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_holder_example_runs() {
    let server = Server::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/stale-holder.sh"
    );
    let output = tokio::task::spawn_blocking({
        let endpoint = server.endpoint();
        move || {
            std::process::Command::new("sh")
                .arg(script)
                .env("PLINTH", Server::binary())
                .env("PLINTH_ENDPOINT", endpoint)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("A's write was refused"), "{stdout}");
    assert!(stdout.contains("orders/total = written-by-B"), "{stdout}");
    assert!(stderr.contains("STALE_TOKEN"), "{stderr}");
}
