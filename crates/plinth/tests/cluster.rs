//! Cluster fault tests: real replicas on loopback, clients running KV, lock and queue workloads
//! through the SDK with every endpoint, and faults injected from a seed — `kill -9` and restart of any
//! node including the leader, SIGSTOP past the election timeout, a slow disk (the WAL's
//! `fault-injection` hook), a network partition with every process alive (through a proxy
//! between replicas), membership change under load.
//! Every operation is recorded with its invocation and completion times; afterwards the KV
//! histories must be linearizable, every acknowledged write present, the fenced lock holders
//! never overlapping, every acknowledged queue send delivered and no acked message delivered
//! again.
//!
//! Each test prints its seed; `PLINTH_FAULT_SEED=<seed>` replays it, and
//! `PLINTH_FAULT_CYCLES=<n>` runs n fault cycles instead of the few CI runs (the soak).

mod common;

use common::cluster::Cluster;
use common::linearizability::{self, Act, Op};
use plinth_client::{Client, Code, LockOptions, pb};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one client call may take before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const KEYS: u64 = 12;
const QUEUE: &str = "faults";
const LOCK: &str = "fault-lock";
const COUNTER: &str = "fault-lock/counter";
/// Schedules that fire every second while the faults go on.
const SCHEDULES: usize = 4;
const EVERY_MS: u64 = 1_000;

fn seed() -> u64 {
    let seed = std::env::var("PLINTH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("fault seed: {seed} (replay with PLINTH_FAULT_SEED={seed})");
    seed
}

fn cycles(default: usize) -> usize {
    std::env::var("PLINTH_FAULT_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What the workloads recorded.
#[derive(Default)]
struct Record {
    histories: Mutex<BTreeMap<String, Vec<Op>>>,
    /// Keys whose unique-key put was acknowledged.
    acked_keys: Mutex<Vec<String>>,
    /// Bodies whose send was acknowledged.
    acked_sends: Mutex<BTreeSet<String>>,
    /// Bodies received, and those whose ack was acknowledged.
    received: Mutex<BTreeSet<String>>,
    acked_messages: Mutex<BTreeSet<String>>,
    /// A message delivered after its ack was acknowledged.
    redelivered: Mutex<Vec<String>>,
    /// (token, counter value written) of every acknowledged fenced write on the lock.
    fenced: Mutex<Vec<(u64, u64)>>,
    /// (run id, attempt, claim token) of every claim a worker ran.
    claims: Mutex<Vec<(String, u32, u64)>>,
}

struct Workload {
    client: Client,
    record: Arc<Record>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    worker: plinth_client::Worker,
    start: Instant,
}

impl Workload {
    /// Four register clients over `KEYS` keys, two unique-key writers, a queue sender, a
    /// queue receiver, two fenced lock workers and a scheduler worker, all through `client`.
    fn start(client: &Client, seed: u64) -> Workload {
        let record = Arc::new(Record::default());
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let next_value = Arc::new(AtomicU64::new(1));
        let mut tasks = Vec::new();
        for c in 0..4 {
            let (client, record, stop, next_value) = (
                client.clone(),
                record.clone(),
                stop.clone(),
                next_value.clone(),
            );
            let mut rng = fastrand::Rng::with_seed(seed ^ (c as u64 + 1));
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("reg-{}", rng.u64(0..KEYS));
                    let op = if rng.bool() {
                        let v = next_value.fetch_add(1, Ordering::Relaxed);
                        let invoke = nanos(start);
                        let r = tokio::time::timeout(
                            CALL_TIMEOUT,
                            client.put(key.clone(), v.to_string()),
                        )
                        .await;
                        match r {
                            Ok(Ok(_)) => Some(Op {
                                client: c,
                                invoke,
                                complete: Some(nanos(start)),
                                act: Act::Put(v),
                            }),
                            // Refused before it was proposed: never applied. Left out of the
                            // history, so a read of its (unique) value would fail the check.
                            Ok(Err(e)) if e.code == Code::NotLeader => None,
                            // Lost on the way: it may or may not have been applied.
                            _ => Some(Op {
                                client: c,
                                invoke,
                                complete: None,
                                act: Act::Put(v),
                            }),
                        }
                    } else {
                        let invoke = nanos(start);
                        match tokio::time::timeout(CALL_TIMEOUT, client.get(key.clone())).await {
                            Ok(Ok(kv)) => {
                                let read = kv.map(|kv| {
                                    String::from_utf8(kv.value).unwrap().parse().unwrap()
                                });
                                Some(Op {
                                    client: c,
                                    invoke,
                                    complete: Some(nanos(start)),
                                    act: Act::Get(read),
                                })
                            }
                            // A failed read tells nothing.
                            _ => None,
                        }
                    };
                    if let Some(op) = op {
                        let failed = op.complete.is_none();
                        record
                            .histories
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .push(op);
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        for w in 0..2 {
            let (client, record, stop) = (client.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("unique-{w}-{i}");
                    i += 1;
                    match tokio::time::timeout(CALL_TIMEOUT, client.put(key.clone(), "v")).await {
                        Ok(Ok(_)) => record.acked_keys.lock().unwrap().push(key),
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        {
            let (client, record, stop) = (client.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("m-{i}");
                    i += 1;
                    match tokio::time::timeout(CALL_TIMEOUT, client.queue_send(QUEUE, body.clone()))
                        .await
                    {
                        Ok(Ok(_)) => {
                            record.acked_sends.lock().unwrap().insert(body);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        {
            let (client, record, stop) = (client.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    receive_some(&client, &record, Duration::from_millis(500)).await;
                }
            }));
        }
        for w in 0..2 {
            let (client, record, stop) = (client.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    fenced_round(&client, &record, w).await;
                }
            }));
        }
        let claims = record.clone();
        let options = plinth_client::WorkerOptions {
            wait: Duration::from_secs(1),
            ..plinth_client::WorkerOptions::new("fault-worker")
        };
        let worker = client.worker(options, move |claim| {
            claims
                .claims
                .lock()
                .unwrap()
                .push((claim.run_id, claim.attempt, claim.token));
            async { Ok::<Vec<u8>, String>(Vec::new()) }
        });
        Workload {
            client: client.clone(),
            record,
            stop,
            tasks,
            worker,
            start,
        }
    }

    /// Stops the clients; pauses the schedules and lets the worker finish every run due.
    async fn stop(self) -> (Arc<Record>, Instant) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("workload task");
        }
        for i in 0..SCHEDULES {
            common::retry(|| self.client.schedule_pause(format!("fault-sched-{i}"))).await;
        }
        common::eventually(
            Duration::from_secs(60),
            "every due run finished",
            || async {
                self.client.schedule_list().await.is_ok_and(|all| {
                    all.iter()
                        .all(|s| s.stats.is_some_and(|t| t.pending == 0 && t.claimed == 0))
                })
            },
        )
        .await;
        self.worker.shutdown().await;
        (self.record, self.start)
    }
}

/// Receives a batch and acks it, recording what came and what was acked. Returns how many came.
async fn receive_some(client: &Client, record: &Record, wait: Duration) -> usize {
    let Ok(Ok(messages)) =
        tokio::time::timeout(CALL_TIMEOUT, client.queue_receive(QUEUE, 10, wait)).await
    else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return 0;
    };
    for m in &messages {
        let body = String::from_utf8(m.body.clone()).unwrap();
        if record.acked_messages.lock().unwrap().contains(&body) {
            record.redelivered.lock().unwrap().push(body.clone());
        }
        record.received.lock().unwrap().insert(body.clone());
        if let Ok(Ok(())) =
            tokio::time::timeout(CALL_TIMEOUT, client.queue_ack(QUEUE, m.receipt.clone())).await
        {
            record.acked_messages.lock().unwrap().insert(body);
        }
    }
    messages.len()
}

/// One round on the shared lock: acquire (waiting), a fenced read-modify-write of its counter,
/// release. Records the write if it was acknowledged.
async fn fenced_round(client: &Client, record: &Record, worker: usize) {
    let options = LockOptions::new(format!("worker-{worker}"))
        .ttl(Duration::from_secs(2))
        .wait(Duration::from_secs(3));
    let Ok(Ok(hold)) =
        tokio::time::timeout(CALL_TIMEOUT, client.lock_acquire(LOCK, &options)).await
    else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    let current = match tokio::time::timeout(CALL_TIMEOUT, client.get(COUNTER)).await {
        Ok(Ok(Some(kv))) => String::from_utf8(kv.value).unwrap().parse::<u64>().unwrap(),
        Ok(Ok(None)) => 0,
        _ => return,
    };
    let next = current + 1;
    let put = client.put_fenced(COUNTER, next.to_string(), LOCK, hold.token);
    if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, put).await {
        record.fenced.lock().unwrap().push((hold.token, next));
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, client.lock_release(LOCK, hold.token)).await;
}

fn nanos(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// After the faults: reads every register once more (into its history), checks the histories,
/// that every acknowledged unique-key put is there, and that the queue delivered every
/// acknowledged send and never an acked message again.
async fn verify(client: &Client, record: &Record, start: Instant) {
    for k in 0..KEYS {
        let key = format!("reg-{k}");
        let invoke = nanos(start);
        let kv = common::retry(|| client.get(key.clone())).await;
        let read = kv.map(|kv| String::from_utf8(kv.value).unwrap().parse().unwrap());
        record
            .histories
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(Op {
                client: usize::MAX,
                invoke,
                complete: Some(nanos(start)),
                act: Act::Get(read),
            });
    }
    let histories = record.histories.lock().unwrap().clone();
    let ops: usize = histories.values().map(Vec::len).sum();
    let unknown = histories
        .values()
        .flatten()
        .filter(|o| o.complete.is_none())
        .count();
    println!("checking {ops} register operations ({unknown} with unknown outcome)");
    if let Err(e) = linearizability::check(&histories) {
        panic!("{e}");
    }

    // Fenced holders never overlapped: no two acknowledged fenced writes wrote the same counter
    // value, a later token never wrote below an earlier one, and the counter is at least the
    // highest value acknowledged.
    let mut fenced = record.fenced.lock().unwrap().clone();
    fenced.sort();
    let values: BTreeSet<u64> = fenced.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values.len(),
        fenced.len(),
        "two acknowledged fenced writes wrote the same value: {fenced:?}"
    );
    assert!(
        fenced.windows(2).all(|w| w[0].1 < w[1].1),
        "a newer token wrote a lower value than an older one: {fenced:?}"
    );
    let counter = common::retry(|| client.get(COUNTER)).await;
    let counter: u64 = counter.map_or(0, |kv| {
        String::from_utf8(kv.value).unwrap().parse().unwrap()
    });
    assert!(
        counter >= values.last().copied().unwrap_or(0),
        "the counter lost an acknowledged fenced write"
    );
    println!(
        "{} acknowledged fenced writes, never overlapping",
        fenced.len()
    );

    let acked = record.acked_keys.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no unique-key put was acknowledged");
    for key in &acked {
        let kv = common::retry(|| client.get(key.clone())).await;
        assert!(kv.is_some(), "acknowledged put of {key} was lost");
    }
    println!("{} acknowledged unique-key puts all present", acked.len());

    // Drain the queue: whatever is left must be delivered too, deliveries lost in a failover
    // once their visibility runs out.
    let sends = record.acked_sends.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !sends.is_subset(&record.received.lock().unwrap()) {
        receive_some(client, record, Duration::from_millis(500)).await;
    }
    let received = record.received.lock().unwrap().clone();
    let lost: Vec<&String> = sends.difference(&received).collect();
    assert!(
        lost.is_empty(),
        "acknowledged sends never delivered: {lost:?}"
    );
    let redelivered = record.redelivered.lock().unwrap().clone();
    assert!(
        redelivered.is_empty(),
        "messages delivered again after their ack was acknowledged: {redelivered:?}"
    );
    println!(
        "{} acknowledged sends all delivered, none after its ack",
        sends.len()
    );

    // Every fire time from the first to the last has exactly one run, completed; no claim was
    // handed out twice; and a run ran again only on a later attempt (its claim had expired).
    let claims = record.claims.lock().unwrap().clone();
    let distinct: BTreeSet<(&String, u32)> = claims.iter().map(|(r, a, _)| (r, *a)).collect();
    assert_eq!(
        distinct.len(),
        claims.len(),
        "one attempt of a run was claimed twice: {claims:?}"
    );
    let mut total = 0;
    for i in 0..SCHEDULES {
        let id = format!("fault-sched-{i}");
        let schedule = common::retry(|| client.schedule_get(id.clone())).await;
        let runs = common::retry(|| client.schedule_runs(id.clone(), 0)).await;
        assert!(!runs.is_empty(), "{id} never ran");
        let first = schedule.created_at_ms + EVERY_MS;
        for (n, run) in runs.iter().enumerate() {
            assert_eq!(
                run.fire_time_ms,
                first + EVERY_MS * n as u64,
                "{id}: a fire time is missing or has two runs"
            );
            assert_eq!(run.state, "completed", "{} is {}", run.run_id, run.state);
            let ran = claims.iter().filter(|(r, _, _)| *r == run.run_id);
            assert!(
                ran.clone().all(|(_, attempt, _)| *attempt <= run.attempt),
                "{} ran on an attempt it never reached",
                run.run_id
            );
            assert!(ran.count() >= 1, "{} completed without running", run.run_id);
        }
        total += runs.len();
    }
    println!(
        "{total} fire times, each with exactly one completed run; {} claims, none twice",
        claims.len()
    );
}

async fn setup(cluster: &Cluster) -> Client {
    cluster.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(cluster.endpoints()).unwrap();
    // A short visibility, so a delivery lost in a failover comes back soon; no dead-letter
    // queue, so a message is delivered again until it is acked.
    let config = pb::QueueConfig {
        visibility_ms: 2_000,
        ..Default::default()
    };
    common::retry(|| client.queue_create(QUEUE, config.clone())).await;
    // Runs whose claims die with a leader come back after their timeout; missed fire times are
    // caught up.
    let policy = pb::SchedulePolicy {
        max_attempts: 50,
        backoff_ms: Some(200),
        timeout_ms: 2_000,
        misfire: "run_all".into(),
        ..Default::default()
    };
    let spec = pb::ScheduleSpec {
        every_ms: EVERY_MS,
        ..Default::default()
    };
    for i in 0..SCHEDULES {
        common::retry(|| {
            client.schedule_create(format!("fault-sched-{i}"), spec.clone(), "", policy.clone())
        })
        .await;
    }
    client
}

/// Each of `minority`, asked directly, acknowledges no write within 3 s.
async fn assert_refuses_writes(cluster: &Cluster, minority: &[u64], cycle: usize) {
    for &id in minority {
        let direct = Client::connect_lazy(cluster.replica(id).endpoint()).unwrap();
        let put = tokio::time::timeout(
            Duration::from_secs(3),
            direct.put("minority", format!("{cycle}-{id}")),
        )
        .await;
        assert!(
            !matches!(put, Ok(Ok(_))),
            "node {id}, in a minority, acknowledged a write"
        );
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_killing_the_leader_under_load() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cluster = Cluster::start(3);
    let client = setup(&cluster).await;
    let workload = Workload::start(&client, seed);
    let mut elections = Vec::new();
    for cycle in 0..cycles(3) {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
        let leader = cluster.leader(Duration::from_secs(20)).await;
        cluster.kill9(leader);
        let killed = Instant::now();
        let next = cluster.leader(Duration::from_secs(20)).await;
        let took = killed.elapsed();
        println!("cycle {cycle}: killed leader {leader}; node {next} leads after {took:?}");
        assert_ne!(next, leader);
        elections.push(took);
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
        cluster.restart(leader);
    }
    println!(
        "median time to a new leader: {:?}",
        median(elections.clone())
    );
    let (record, start) = workload.stop().await;
    cluster.leader(Duration::from_secs(20)).await;
    verify(&client, &record, start).await;
    assert!(
        median(elections) < Duration::from_secs(10),
        "no new leader within 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_survive_two_failures_and_a_minority_never_acknowledges_a_write() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cluster = Cluster::start(5);
    let client = setup(&cluster).await;
    let workload = Workload::start(&client, seed);
    for cycle in 0..cycles(1) {
        // Two nodes at once, the leader among them half the time.
        tokio::time::sleep(Duration::from_millis(rng.u64(300..800))).await;
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let mut ids: Vec<u64> = (1..=5).collect();
        rng.shuffle(&mut ids);
        let mut down: Vec<u64> = ids.into_iter().filter(|id| *id != leader).take(2).collect();
        if rng.bool() {
            down[0] = leader;
        }
        for id in &down {
            cluster.kill9(*id);
        }
        let next = cluster.leader(Duration::from_secs(20)).await;
        println!("cycle {cycle}: killed {down:?}; node {next} leads");
        common::retry(|| client.put("while-two-are-down", cycle.to_string())).await;

        // Pause three of the five, the leader among them: the two left are a minority, and
        // must not acknowledge a write.
        for id in &down {
            cluster.restart(*id);
        }
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let mut others: Vec<u64> = (1..=5).filter(|id| *id != leader).collect();
        rng.shuffle(&mut others);
        let paused = [leader, others[0], others[1]];
        let minority = [others[2], others[3]];
        for id in paused {
            cluster.pause(id);
        }
        assert_refuses_writes(&cluster, &minority, cycle).await;
        for id in paused {
            cluster.resume(id);
        }
        let healed = cluster.leader(Duration::from_secs(20)).await;
        println!(
            "cycle {cycle}: paused {paused:?}, minority {minority:?} refused writes; healed under node {healed}"
        );
    }
    let (record, start) = workload.stop().await;
    cluster.leader(Duration::from_secs(20)).await;
    verify(&client, &record, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_minority_acknowledges_nothing_and_catches_up_after_healing() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let cluster = Cluster::start_partitionable(5);
    let client = setup(&cluster).await;
    let workload = Workload::start(&client, seed);
    let mut elections = Vec::new();
    for cycle in 0..cycles(2) {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let mut others: Vec<u64> = (1..=5).filter(|id| *id != leader).collect();
        rng.shuffle(&mut others);
        // Half the time the leader is cut off with one follower and still thinks it leads.
        let minority = if rng.bool() {
            [leader, others[0]]
        } else {
            [others[0], others[1]]
        };
        let majority: Vec<u64> = (1..=5).filter(|id| !minority.contains(id)).collect();
        cluster.partition(&[&minority, &majority]);
        let cut = Instant::now();
        let next = cluster
            .leader_among(&majority, Duration::from_secs(20))
            .await;
        elections.push(cut.elapsed());
        println!(
            "cycle {cycle}: cut {minority:?} off from {majority:?} (leader {leader}); node {next} leads the majority after {:?}",
            cut.elapsed()
        );
        // The large side goes on serving ...
        let key = format!("partition-{cycle}");
        let majority_client = Client::connect_lazy(
            majority
                .iter()
                .map(|id| cluster.replica(*id).endpoint())
                .collect::<Vec<_>>()
                .join(","),
        )
        .unwrap();
        common::retry(|| majority_client.put(key.clone(), "written by the majority")).await;
        // ... and the small side, every process alive, acknowledges nothing.
        assert_refuses_writes(&cluster, &minority, cycle).await;
        cluster.heal();
        let healed = cluster.leader(Duration::from_secs(20)).await;
        // The small side rejoins and holds what the majority wrote meanwhile.
        for id in minority {
            let direct = Client::connect_lazy(cluster.replica(id).endpoint()).unwrap();
            let local = pb::GetRequest {
                key: key.clone().into_bytes(),
                serializable: true,
            };
            common::eventually(
                Duration::from_secs(20),
                &format!("node {id} to hold {key} after healing"),
                || async {
                    direct
                        .get_request(local.clone())
                        .await
                        .is_ok_and(|r| r.kv.is_some())
                },
            )
            .await;
        }
        println!("cycle {cycle}: healed under node {healed}; {minority:?} caught up");
    }
    println!(
        "median time to a leader on the majority side: {:?}",
        median(elections)
    );
    let (record, start) = workload.stop().await;
    cluster.leader(Duration::from_secs(20)).await;
    verify(&client, &record, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_ride_out_a_failover_without_the_caller_retrying() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(cluster.endpoints()).unwrap();
    common::retry(|| client.put("steady", "v")).await;
    cluster.kill9(leader);
    // Through the election and after it, every read answers: the SDK resends reads round the
    // endpoints until one can serve them.
    let until = Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    while Instant::now() < until {
        let kv = tokio::time::timeout(Duration::from_secs(20), client.get("steady"))
            .await
            .expect("a read answered within 20 s")
            .expect("a read across the failover");
        assert_eq!(kv.expect("the key").value, b"v");
        reads += 1;
    }
    println!("{reads} reads across the failover, none failed");
}

#[test]
fn the_partition_proxy_cuts_only_replicas_on_different_sides() {
    use common::proxy::{Sides, connected, replica_ip, replica_of};
    let mut sides = Sides::new();
    assert!(connected(&sides, Some(1), 2));
    sides.extend([(1, 0), (2, 0), (3, 1)]);
    assert!(connected(&sides, Some(1), 2));
    assert!(!connected(&sides, Some(1), 3));
    assert!(!connected(&sides, Some(3), 2));
    // A client is never cut.
    assert!(connected(&sides, None, 3));
    assert_eq!(replica_of(replica_ip(3)), Some(3));
    assert_eq!(replica_of("127.0.0.1".parse().unwrap()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_and_a_slow_disk_lose_nothing() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    // Node 1's disk takes 50 ms for every fsync.
    let mut cluster = Cluster::start_with_env(3, &[(1, "PLINTH_FAULT_FSYNC_DELAY_MS", "50")]);
    let client = setup(&cluster).await;
    let workload = Workload::start(&client, seed);
    for cycle in 0..cycles(2) {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
        let leader = cluster.leader(Duration::from_secs(20)).await;
        // Paused well past the election timeout: the others elect; the old leader, resumed,
        // must follow and must not acknowledge what it held in flight as its own.
        cluster.pause(leader);
        let next = cluster.leader(Duration::from_secs(20)).await;
        assert_ne!(next, leader);
        tokio::time::sleep(Duration::from_millis(rng.u64(200..1_000))).await;
        cluster.resume(leader);
        println!("cycle {cycle}: paused leader {leader}; node {next} led meanwhile");
    }
    let (record, start) = workload.stop().await;
    cluster.leader(Duration::from_secs(20)).await;
    verify(&client, &record, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_under_load_lose_nothing() {
    let seed = seed();
    let mut cluster = Cluster::start(3);
    let client = setup(&cluster).await;
    let workload = Workload::start(&client, seed);
    // Enough log that the learner's catch-up starts from a snapshot (the nodes snapshot every
    // 200 entries in this harness).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let addr = cluster.spawn_joiner(4);
    let (code, out, err) = cluster.cli(&["cluster", "add-learner", "4", &addr]);
    assert_eq!(code, 0, "add-learner: {out}{err}");
    assert!(out.contains("learner"), "status shows the learner: {out}");
    let (code, out, err) = cluster.cli(&["cluster", "promote", "4"]);
    assert_eq!(code, 0, "promote: {out}{err}");
    let leader = cluster.leader(Duration::from_secs(20)).await;
    // Remove the leader itself: the hardest member to lose.
    let (code, out, err) = cluster.cli(&["cluster", "remove", &leader.to_string()]);
    assert_eq!(code, 0, "remove: {out}{err}");
    assert!(
        !out.lines().any(|l| l.starts_with(&format!("{leader} "))),
        "node {leader} is no longer listed: {out}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill9(leader);
    let next = cluster.leader(Duration::from_secs(20)).await;
    println!("removed node {leader}; node {next} leads");
    // A spurious election on a loaded machine may fail a transfer or move leadership again after
    // it; the transfer itself must work, so it gets three tries.
    let mut outcome = String::new();
    for _ in 0..3 {
        let (code, out, err) = cluster.cli(&["cluster", "transfer-leader", "4"]);
        let leader = cluster.leader(Duration::from_secs(20)).await;
        if code == 0 && leader == 4 {
            outcome.clear();
            break;
        }
        outcome = format!("transfer-leader exited {code}: {out}{err}; node {leader} leads");
    }
    assert!(outcome.is_empty(), "{outcome}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The joined node, now the leader, restarted with no cluster flags at all: its log says
    // which cluster it is in.
    cluster.kill9(4);
    cluster.leader(Duration::from_secs(20)).await;
    cluster.restart(4);
    cluster.leader(Duration::from_secs(20)).await;
    let (record, start) = workload.stop().await;
    verify(&client, &record, start).await;
    assert!(
        cluster.replica(4).log_text().contains("installed snapshot"),
        "the learner caught up by snapshot"
    );
}

#[test]
fn the_checker_accepts_linearizable_and_refuses_other_histories() {
    let op = |client, invoke, complete, act| Op {
        client,
        invoke,
        complete,
        act,
    };
    // Overlapping put and get: the get may see either value.
    let ok = vec![
        op(0, 0, Some(10), Act::Put(1)),
        op(1, 5, Some(15), Act::Get(Some(1))),
        op(2, 12, Some(20), Act::Put(2)),
        op(1, 21, Some(25), Act::Get(Some(2))),
    ];
    assert!(linearizability::linearizable(&ok));
    // A read of an old value after a newer write completed is a stale read.
    let stale = vec![
        op(0, 0, Some(10), Act::Put(1)),
        op(0, 11, Some(20), Act::Put(2)),
        op(1, 21, Some(25), Act::Get(Some(1))),
    ];
    assert!(!linearizability::linearizable(&stale));
    // A value nobody wrote.
    let invented = vec![op(1, 0, Some(5), Act::Get(Some(9)))];
    assert!(!linearizability::linearizable(&invented));
    // An unknown put may take effect late, or never.
    let late = vec![
        op(0, 0, None, Act::Put(1)),
        op(1, 10, Some(12), Act::Get(None)),
        op(1, 20, Some(22), Act::Get(Some(1))),
    ];
    assert!(linearizability::linearizable(&late));
    let never = vec![
        op(0, 0, None, Act::Put(1)),
        op(1, 10, Some(12), Act::Get(None)),
    ];
    assert!(linearizability::linearizable(&never));
    // But once seen it cannot be unseen.
    let flicker = vec![
        op(0, 0, None, Act::Put(1)),
        op(1, 10, Some(12), Act::Get(Some(1))),
        op(1, 20, Some(22), Act::Get(None)),
    ];
    assert!(!linearizability::linearizable(&flicker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_from_a_follower_restores_as_a_new_three_node_cluster() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(cluster.endpoints()).unwrap();
    for i in 0..300 {
        common::retry(|| client.put(format!("key-{i:03}"), format!("value-{i}"))).await;
    }
    // Asked of a follower, the backup is taken by the leader and holds every acknowledged write.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("cluster.backup");
    let saved = Client::connect_lazy(cluster.replica(follower).endpoint())
        .unwrap()
        .snapshot_save(&file)
        .await
        .unwrap();
    drop(cluster);

    let mut restored = Cluster::prepared(3, &[]);
    for r in &restored.replicas {
        let (code, _, err) = restored.cli(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            r.data_dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    restored.spawn_all();
    let leader = restored.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(restored.endpoints()).unwrap();
    assert_eq!(client.status().await.unwrap().revision, saved.revision);
    assert_eq!(client.range_prefix("key-").await.unwrap().kvs.len(), 300);
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.members.len(), 3, "{status:?}");
    common::retry(|| client.put("on-the-new-cluster", "x")).await;

    // Every member holds the state: the others carry on without the first leader.
    restored.kill9(leader);
    restored.leader(Duration::from_secs(20)).await;
    let after = common::retry(|| client.range_prefix("")).await;
    assert_eq!(after.kvs.len(), 301);
}

#[tokio::test]
async fn bad_cluster_changes_are_clear_errors_and_change_nothing() {
    let server = common::Server::start();
    let cases: [(&[&str], &str); 5] = [
        (
            &["cluster", "add-learner", "2", "nohost"],
            "address \"nohost\" is not HOST:PORT",
        ),
        (&["cluster", "add-learner", "0", "127.0.0.1:1"], "id is 0"),
        (&["cluster", "promote", "9"], "node 9 is not a member"),
        (&["cluster", "remove", "1"], "node 1 is the only voter"),
        (
            &["cluster", "transfer-leader", "9"],
            "node 9 is not a voter",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err) = server.cli(args);
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (code, out, _) = server.cli(&["cluster", "status"]);
    assert_eq!(code, 0);
    let members: Vec<&str> = out.lines().filter(|l| l.starts_with("1 ")).collect();
    assert_eq!(members.len(), 1, "still node 1 alone: {out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("127.0.0.1")).count(),
        1,
        "{out}"
    );
}

/// A member whose log is damaged where acknowledged entries were refuses to start, unchanged,
/// naming the remedy; `plinth repair` refuses a member of a cluster; removed, emptied and added
/// back, it catches up from the others and holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_a_damaged_log_rejoins_empty_and_catches_up() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(cluster.endpoints()).unwrap();
    for i in 0..50 {
        common::retry(|| client.put(format!("key-{i:02}"), format!("value-{i}"))).await;
    }
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // Let the follower learn that everything is committed before it stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop(follower);
    let data_dir = cluster.replica(follower).data_dir.clone();
    let (segment, _) = common::damage_last_record(&data_dir.join("wal"));
    let before = std::fs::read(&segment).unwrap();

    let log = cluster
        .try_restart(follower)
        .expect_err("a member with lost acknowledged entries must not start");
    assert!(
        log.contains("added back with an empty data directory"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "the refusal changed the log"
    );
    let (code, _, err) = cluster.cli(&[
        "repair",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--accept-loss",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("is a member of a cluster"), "{err}");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "repair changed a member's log"
    );

    // The documented way back: remove it, empty it, add it as a learner, promote it.
    let id = follower.to_string();
    let (code, out, err) = cluster.cli(&["cluster", "remove", &id]);
    assert_eq!(code, 0, "remove: {out}{err}");
    cluster.rejoin_empty(follower);
    let addr = cluster.replica(follower).addr.clone();
    let (code, out, err) = cluster.cli(&["cluster", "add-learner", &id, &addr]);
    assert_eq!(code, 0, "add-learner: {out}{err}");
    let (code, out, err) = cluster.cli(&["cluster", "promote", &id]);
    assert_eq!(code, 0, "promote: {out}{err}");
    common::retry(|| client.put("after-rejoin", "x")).await;

    // It holds every acknowledged write, read from its own state.
    let mut kv = pb::kv_client::KvClient::connect(cluster.replica(follower).endpoint())
        .await
        .unwrap();
    common::eventually(
        Duration::from_secs(20),
        "the rejoined member caught up",
        || {
            let mut kv = kv.clone();
            async move {
                let request = pb::RangeRequest {
                    key: Vec::new(),
                    prefix: true,
                    serializable: true,
                    ..Default::default()
                };
                kv.range(request)
                    .await
                    .is_ok_and(|r| r.into_inner().count == 51)
            }
        },
    )
    .await;
    let got = kv
        .get(pb::GetRequest {
            key: b"key-49".to_vec(),
            serializable: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value, b"value-49");
    // And the cluster carries on without the old leader: the rejoined node is a full voter.
    cluster.kill9(leader);
    cluster.leader(Duration::from_secs(20)).await;
    common::retry(|| client.put("after-failover", "y")).await;
}

/// Commands near the largest a log entry may hold, proposed together: openraft batches them
/// into one append, which is cut by bytes so that no message between replicas is over its
/// limit (two commands' worth), and every follower ends up with all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_commands_in_flight_together_replicate_in_appends_cut_by_bytes() {
    let cluster = Cluster::start(3);
    cluster.leader(Duration::from_secs(20)).await;
    let client = Client::connect_lazy(cluster.endpoints()).unwrap();
    // Fifteen values of 1 MiB in one txn: about 15 MiB, under the 16 MiB a command may be.
    let txn = |n: u8| pb::TxnRequest {
        compares: Vec::new(),
        success: (0..15u8)
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::Put(pb::PutRequest {
                    key: format!("big/{n}/{i}").into_bytes(),
                    value: vec![n; 1 << 20],
                    lease: 0,
                })),
            })
            .collect(),
        failure: Vec::new(),
    };
    let writes: Vec<_> = (0..4u8)
        .map(|n| {
            let client = client.clone();
            let txn = txn(n);
            // A slow machine may change leaders under appends this large; a txn of puts of the
            // same values is safe to send again when its outcome is unknown.
            tokio::spawn(async move { common::retry(|| client.txn(txn.clone())).await })
        })
        .collect();
    for write in writes {
        assert!(write.await.unwrap().succeeded, "a 15 MiB txn commits");
    }
    for r in &cluster.replicas {
        let mut kv = pb::kv_client::KvClient::connect(r.endpoint())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        common::eventually(
            Duration::from_secs(30),
            "a follower holds every value",
            || {
                let mut kv = kv.clone();
                async move {
                    let request = pb::RangeRequest {
                        key: b"big/".to_vec(),
                        prefix: true,
                        serializable: true,
                        count_only: true,
                        ..Default::default()
                    };
                    kv.range(request)
                        .await
                        .is_ok_and(|r| r.into_inner().count == 60)
                }
            },
        )
        .await;
        let got = kv
            .get(pb::GetRequest {
                key: b"big/3/14".to_vec(),
                serializable: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.kv.unwrap().value, vec![3u8; 1 << 20], "node {}", r.id);
    }
    let log = cluster.logs();
    assert!(!log.contains("message length too large"), "{log}");
}
