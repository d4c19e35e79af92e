//! Crash tests: concurrent SDK writers while the server is `kill -9`ed and restarted several
//! times; every acknowledged put must survive, with revisions dense and increasing; locks held
//! and waited for come back with no second holder and tokens that keep increasing; queue sends
//! acknowledged are never lost and acked messages never come back; scheduled fire times each get
//! exactly one run across restarts.

mod common;

use common::{Server, retry};
use plinth_client::{Client, Code, LockOptions, WorkerOptions, pb};
use std::collections::BTreeMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::Instant;

const WRITERS: usize = 8;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_put_survives_kill_9() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // key → revision of every put the server acknowledged.
            let mut acked = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("crash/{w}/{n:06}");
                match client.put(key.clone(), n.to_string()).await {
                    Ok(reply) => {
                        acked.insert(key, reply.header.unwrap().revision);
                    }
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
                n += 1;
            }
            acked
        }));
    }
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for writer in writers {
        let mine = writer.await.unwrap();
        let revisions: Vec<u64> = mine.values().copied().collect();
        // A writer's puts are sequential: their revisions strictly increase in key order.
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "revisions of one writer out of order"
        );
        acked.extend(mine);
    }
    assert!(
        acked.len() > 50,
        "too few acknowledged writes to mean anything: {}",
        acked.len()
    );

    let mut all = BTreeMap::new();
    let mut from = b"crash/".to_vec();
    loop {
        let page = retry(|| {
            client.range(plinth_client::pb::RangeRequest {
                key: from.clone(),
                range_end: b"crash0".to_vec(),
                ..Default::default()
            })
        })
        .await;
        for kv in &page.kvs {
            all.insert(String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision);
        }
        if !page.more {
            break;
        }
        from = page.kvs.last().unwrap().key.clone();
        from.push(0);
    }
    for (key, revision) in &acked {
        assert_eq!(
            all.get(key),
            Some(revision),
            "acknowledged put of {key} at revision {revision} was lost"
        );
    }
    // Every put is its own revision and nothing else takes one here: the revisions of all keys
    // present are exactly 1..=N.
    let mut revisions: Vec<u64> = all.values().copied().collect();
    revisions.sort();
    let dense: Vec<u64> = (1..=revisions.len() as u64).collect();
    assert_eq!(revisions, dense, "revisions are not dense");
    println!(
        "{} puts acknowledged, {} present after {KILLS} kill -9s",
        acked.len(),
        all.len()
    );
}

/// Workers loop on two locks (acquire with a wait, fenced read-modify-write of a counter,
/// release) while the server is killed and restarted. Afterwards: no lock has two holders, every
/// acknowledged fenced write is there, no two acknowledged rounds wrote the same counter value
/// (they never overlapped), and a new grant's token is above every token acknowledged before.
/// A lock held with waiters queued at the moment of a kill comes back with its holder and token,
/// and the waits of the dead process are abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locks_held_and_waited_for_survive_kill_9_without_two_holders() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let lock = format!("crash-lock-{}", w % 2);
            let options = LockOptions::new(format!("worker-{w}"))
                .ttl(Duration::from_secs(2))
                .wait(Duration::from_secs(10));
            // (lock, token, counter value written) of every acknowledged fenced write.
            let mut acked = Vec::new();
            let mut tokens = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let hold = match client.lock_acquire(lock.clone(), &options).await {
                    Ok(hold) => hold,
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => panic!("acquire: {e}"),
                };
                tokens.push((lock.clone(), hold.token));
                let counter = format!("{lock}/counter");
                let current = match client.get(counter.clone()).await {
                    Ok(Some(kv)) => String::from_utf8(kv.value).unwrap().parse::<u64>().unwrap(),
                    Ok(None) => 0,
                    Err(e) if e.is_transient() => continue,
                    Err(e) => panic!("get: {e}"),
                };
                let next = current + 1;
                match client
                    .put_fenced(counter, next.to_string(), lock.clone(), hold.token)
                    .await
                {
                    Ok(_) => acked.push((lock.clone(), hold.token, next)),
                    // The hold expired across a restart, or the reply was lost with the server.
                    Err(e) if e.is_transient() || e.code == Code::StaleToken => continue,
                    Err(e) => panic!("fenced put: {e}"),
                }
                let _ = client.lock_release(lock.clone(), hold.token).await;
            }
            (acked, tokens)
        }));
    }
    for _ in 0..KILLS - 1 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
    }

    // A lock held, with waiters queued, at the moment of the last kill.
    let holder = LockOptions::new("holder").ttl(Duration::from_secs(60));
    let parked = retry(|| client.lock_acquire("parked", &holder)).await;
    let mut waiting = Vec::new();
    for i in 0..3 {
        let client = client.clone();
        waiting.push(tokio::spawn(async move {
            let options = LockOptions::new(format!("waiter-{i}"))
                .ttl(Duration::from_secs(60))
                .wait(Duration::from_secs(60));
            client.lock_acquire("parked", &options).await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while retry(|| client.lock_get("parked")).await.waiters.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "waiters never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for waiter in waiting {
        let e = waiter.await.unwrap().unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = Vec::new();
    let mut tokens = Vec::new();
    let mut per_worker = Vec::new();
    for worker in workers {
        let (mine, granted) = worker.await.unwrap();
        acked.extend(mine);
        per_worker.push(granted.iter().map(|(_, t)| *t).collect::<Vec<u64>>());
        tokens.extend(granted);
    }
    assert!(
        acked.len() >= 10,
        "too few rounds to mean anything: {}",
        acked.len()
    );

    let parked_now = retry(|| client.lock_get("parked")).await;
    assert_eq!(parked_now.holders.len(), 1);
    assert_eq!(parked_now.holders[0].token, parked.token);
    assert!(
        parked_now.waiters.is_empty(),
        "the dead process's waits were not abandoned"
    );

    for lock in ["crash-lock-0", "crash-lock-1"] {
        let now = retry(|| client.lock_get(lock)).await;
        assert!(
            now.holders.len() <= 1,
            "{lock} has {} holders after the restarts",
            now.holders.len()
        );
        let mut values: Vec<u64> = acked
            .iter()
            .filter(|(l, _, _)| l == lock)
            .map(|(_, _, v)| *v)
            .collect();
        let n = values.len();
        values.sort();
        values.dedup();
        assert_eq!(
            values.len(),
            n,
            "two acknowledged rounds on {lock} overlapped"
        );
        let counter: u64 = match retry(|| client.get(format!("{lock}/counter"))).await {
            Some(kv) => String::from_utf8(kv.value).unwrap().parse().unwrap(),
            None => 0,
        };
        assert!(
            values.last().is_none_or(|max| counter >= *max),
            "an acknowledged fenced write on {lock} was lost"
        );
        // No token on one lock was granted twice.
        let mut granted: Vec<u64> = tokens
            .iter()
            .filter(|(l, _)| l == lock)
            .map(|(_, t)| *t)
            .collect();
        let m = granted.len();
        granted.sort();
        granted.dedup();
        assert_eq!(granted.len(), m, "a token on {lock} was granted twice");
    }
    // Each worker's grants come one after another, so its tokens strictly increase in the order
    // it received them, across every restart.
    for (w, mine) in per_worker.iter().enumerate() {
        assert!(
            mine.windows(2).all(|pair| pair[0] < pair[1]),
            "worker {w} got tokens out of order: {mine:?}"
        );
    }
    let highest = tokens
        .iter()
        .map(|(_, t)| *t)
        .max()
        .unwrap()
        .max(parked.token);
    let after = LockOptions::new("after").ttl(Duration::from_secs(5));
    let fresh = retry(|| client.lock_acquire("fresh", &after)).await;
    assert!(
        fresh.token > highest,
        "token {} after restarts is not above {highest}",
        fresh.token
    );
    println!(
        "{} fenced rounds acknowledged across {KILLS} kill -9s",
        acked.len()
    );
}

/// A producer and four consumers on one queue while the server is killed and restarted; the
/// consumers fail one delivery in ten (a nack) and always fail one poison message. Every send
/// the server acknowledged is delivered in the end, no message whose ack was acknowledged is ever
/// delivered again, and the poison message ends in the dead-letter queue. (An ack whose reply
/// was lost with the server may or may not have applied; the message then either comes back or
/// is gone, both allowed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_sends_survive_kill_9_and_acked_messages_never_come_back() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    retry(|| client.queue_create("crash-dlq", pb::QueueConfig::default())).await;
    let config = pb::QueueConfig {
        visibility_ms: 2_000,
        max_receives: 5,
        dead_letter_queue: "crash-dlq".into(),
        ..Default::default()
    };
    retry(|| client.queue_create("crash-q", config.clone())).await;
    let poison = retry(|| client.queue_send("crash-q", "poison")).await;
    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    // message id → when its ack was acknowledged.
    let acked: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let delivered: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();

    let producer = {
        let client = client.clone();
        let stop = stop_producing.clone();
        tokio::spawn(async move {
            let mut sent = BTreeSet::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let entries = (0..5)
                    .map(|i| pb::QueueSendEntry {
                        body: format!("p{n}-{i}").into_bytes(),
                        ..Default::default()
                    })
                    .collect();
                match client.queue_send_batch("crash-q", entries).await {
                    Ok(results) => sent.extend(results.iter().map(|r| r.message_id)),
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("send: {e}"),
                }
                n += 1;
            }
            sent
        })
    };
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let stop = stop_consuming.clone();
        let acked = acked.clone();
        let delivered = delivered.clone();
        let violations = violations.clone();
        consumers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let deliveries = match client
                    .queue_receive("crash-q", 5, Duration::from_millis(300))
                    .await
                {
                    Ok(deliveries) => deliveries,
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => panic!("receive: {e}"),
                };
                for d in deliveries {
                    delivered.lock().unwrap().insert(d.message_id);
                    if let Some(at) = acked.lock().unwrap().get(&d.message_id)
                        && *at < started
                    {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("message {} delivered after its ack", d.message_id));
                    }
                    // The handler fails the poison message always, and one delivery in ten.
                    if d.body == b"poison"
                        || (d.message_id * 7 + u64::from(d.receive_count)) % 10 == 0
                    {
                        match client
                            .queue_nack("crash-q", d.receipt.clone(), Duration::ZERO, "failed")
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if e.is_transient() || e.code == Code::StaleToken => {}
                            Err(e) => panic!("nack: {e}"),
                        }
                        continue;
                    }
                    match client.queue_ack("crash-q", d.receipt.clone()).await {
                        Ok(()) => {
                            acked.lock().unwrap().insert(d.message_id, Instant::now());
                        }
                        // Lost with the server, or redelivered meanwhile: it comes back.
                        Err(e) if e.is_transient() || e.code == Code::StaleToken => {}
                        Err(e) => panic!("ack: {e}"),
                    }
                }
            }
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_producing.store(true, Ordering::Relaxed);
    let sent = producer.await.unwrap();
    assert!(
        sent.len() > 50,
        "too few sends to mean anything: {}",
        sent.len()
    );
    // Drain: everything acknowledged as sent is delivered in the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<u64> = {
            let delivered = delivered.lock().unwrap();
            sent.iter()
                .filter(|id| !delivered.contains(id))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged sends never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep consuming past a whole visibility timeout: an acked message that came back after
    // the last restart would be seen now.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop_consuming.store(true, Ordering::Relaxed);
    for consumer in consumers {
        consumer.await.unwrap();
    }
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    let dead = retry(|| client.queue_receive("crash-dlq", 10, Duration::from_secs(1))).await;
    assert_eq!(
        dead.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        [poison],
        "only the poison message is dead-lettered"
    );
    println!(
        "{} acknowledged sends all delivered across 3 kill -9s; the poison message dead-lettered",
        sent.len()
    );
}

/// Ten schedules every second and two workers while the server is killed and restarted twice.
/// Afterwards every fire time from the first to the last has exactly one run (missed ones are
/// caught up under `run_all`), and every run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fire_time_has_exactly_one_run_across_kill_9() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    let policy = pb::SchedulePolicy {
        max_attempts: 10,
        backoff_ms: Some(200),
        timeout_ms: 2000,
        misfire: "run_all".into(),
        ..Default::default()
    };
    for i in 0..10 {
        let spec = pb::ScheduleSpec {
            every_ms: 1000,
            ..Default::default()
        };
        retry(|| client.schedule_create(format!("c{i}"), spec.clone(), "", policy.clone())).await;
    }
    let mut workers = Vec::new();
    for w in 0..2 {
        let options = WorkerOptions {
            concurrency: 8,
            wait: Duration::from_secs(1),
            ..WorkerOptions::new(format!("w{w}"))
        };
        workers.push(client.worker(options, |_claim| async {
            Ok::<Vec<u8>, String>(Vec::new())
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.restart();
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for i in 0..10 {
        retry(|| client.schedule_pause(format!("c{i}"))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let schedules = retry(|| client.schedule_list()).await;
        if schedules
            .iter()
            .all(|s| s.stats.is_some_and(|t| t.pending == 0 && t.claimed == 0))
        {
            break;
        }
        assert!(Instant::now() < deadline, "runs never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in workers {
        worker.shutdown().await;
    }
    let mut total = 0;
    for i in 0..10 {
        let id = format!("c{i}");
        let schedule = retry(|| client.schedule_get(id.clone())).await;
        let runs = retry(|| client.schedule_runs(id.clone(), 0)).await;
        assert!(runs.len() >= 6, "{id} ran only {} times", runs.len());
        let first = schedule.created_at_ms + 1000;
        for (n, run) in runs.iter().enumerate() {
            assert_eq!(
                run.fire_time_ms,
                first + 1000 * n as u64,
                "{id}: a fire time is missing or has two runs"
            );
            assert_eq!(run.state, "completed", "{} is {}", run.run_id, run.state);
        }
        total += runs.len();
    }
    println!("{total} fire times, each with exactly one completed run, across 2 kill -9s");
}
