//! End-to-end tests of queues against the real binary: 10,000 messages through 8 consumers with
//! failures and a poison message, long polling, bad input, and the CLI.

mod common;

use common::{Server, client, eventually};
use plinth_client::{Client, Code, ConsumerOptions, pb};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One failure in ten, decided by the body and the attempt, so runs are reproducible.
fn fails(body: &[u8], receive_count: u32) -> bool {
    let mut h = DefaultHasher::new();
    (body, receive_count).hash(&mut h);
    h.finish().is_multiple_of(10)
}

const MESSAGES: usize = 10_000;
const CONSUMERS: usize = 8;

#[derive(Default)]
struct Seen {
    /// body → how many times a handler succeeded on it.
    done: BTreeMap<Vec<u8>, u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_messages_through_eight_consumers_with_failures_and_a_poison_message() {
    let server = Server::start();
    let c = client(&server).await;
    c.queue_create("work-dead", pb::QueueConfig::default())
        .await
        .unwrap();
    let config = pb::QueueConfig {
        visibility_ms: 10_000,
        // Ten tries: a good message fails all of them (1 in 10^10) too rarely to matter, while
        // the poison message always does.
        max_receives: 10,
        dead_letter_queue: "work-dead".into(),
        ..Default::default()
    };
    c.queue_create("work", config).await.unwrap();
    let mut bodies: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    bodies.insert(MESSAGES / 2, b"poison".to_vec());
    for chunk in bodies.chunks(100) {
        let entries = chunk
            .iter()
            .map(|body| pb::QueueSendEntry {
                body: body.clone(),
                ..Default::default()
            })
            .collect();
        c.queue_send_batch("work", entries).await.unwrap();
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let options = ConsumerOptions {
        concurrency: 2,
        wait: Duration::from_secs(1),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ConsumerOptions::default()
    };
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let seen = seen.clone();
        let consumer_client = client(&server).await;
        consumers.push(consumer_client.consume("work", options.clone(), move |m| {
            let seen = seen.clone();
            async move {
                if m.body == b"poison" {
                    return Err(format!("cannot parse {}", String::from_utf8_lossy(&m.body)));
                }
                if fails(&m.body, m.receive_count) {
                    return Err("a transient failure".to_string());
                }
                *seen.lock().unwrap().done.entry(m.body).or_default() += 1;
                Ok(())
            }
        }));
    }
    eventually(
        Duration::from_secs(240),
        "every good message is processed and the poison dead-lettered",
        || {
            let seen = seen.clone();
            let c = c.clone();
            async move {
                let done = seen.lock().unwrap().done.len();
                let dead = c.queue_stats("work-dead").await.unwrap().stats.unwrap();
                if std::env::var("PLINTH_TEST_PROGRESS").is_ok() {
                    let work = c.queue_stats("work").await.unwrap().stats.unwrap();
                    eprintln!("{done} done, {} dead; work: {work:?}", dead.visible);
                }
                done == MESSAGES && dead.visible == 1
            }
        },
    )
    .await;
    let mut stale = 0;
    for consumer in consumers {
        stale += consumer.shutdown().await.stale;
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let good: BTreeSet<&Vec<u8>> = bodies
        .iter()
        .filter(|b| b.as_slice() != b"poison")
        .collect();
    assert!(
        good.iter().all(|b| seen.done.contains_key(*b)),
        "a good message was never processed"
    );
    // At least once: a message processed twice is one whose first ack came too late (its
    // visibility had run out), which the consumer counts as stale.
    let duplicates: u32 = seen.done.values().map(|n| n - 1).sum();
    assert!(
        u64::from(duplicates) <= stale,
        "{duplicates} duplicates but only {stale} deliveries went stale"
    );
    println!("{MESSAGES} messages processed; {duplicates} duplicates; {stale} stale acks");

    let work = c.queue_stats("work").await.unwrap().stats.unwrap();
    assert_eq!((work.visible, work.in_flight, work.delayed), (0, 0, 0));
    assert_eq!(work.acked, MESSAGES as u64);
    assert_eq!(work.dead_lettered, 1);
    let dead = c
        .queue_receive("work-dead", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    let letter = dead[0].dead_letter.clone().unwrap();
    assert_eq!(
        (letter.source_queue.as_str(), letter.receive_count),
        ("work", 10)
    );
    assert_eq!(letter.last_reason, "cannot parse poison");
    assert!(letter.first_received_at_ms > 0);
    // Redrive brings it back to where it came from.
    c.queue_nack("work-dead", dead[0].receipt.clone(), Duration::ZERO, "")
        .await
        .unwrap();
    assert_eq!(c.queue_redrive("work-dead", None, 0).await.unwrap(), 1);
    let back = c.queue_receive("work", 1, Duration::ZERO).await.unwrap();
    assert_eq!(
        (back[0].body.as_slice(), back[0].receive_count),
        (&b"poison"[..], 1)
    );
    assert!(back[0].dead_letter.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_message_is_sent() {
    let server = Server::start();
    let c = client(&server).await;
    c.queue_create("poll", pb::QueueConfig::default())
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move {
                let got = c
                    .queue_receive("poll", 1, Duration::from_secs(10))
                    .await
                    .unwrap();
                (Instant::now(), got)
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        c.queue_send("poll", format!("n{i}")).await.unwrap();
        let (returned, got) = waiting.await.unwrap();
        assert_eq!(got.len(), 1, "the long poll returned empty");
        latencies.push(returned.saturating_duration_since(sent));
        c.queue_ack("poll", got[0].receipt.clone()).await.unwrap();
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    println!("long poll wake-up after a send: median {median:?}, max {max:?}");
    // A generous bound for a shared machine; the figure itself is in docs/benchmarks.md.
    assert!(
        max < Duration::from_secs(2),
        "a long poll took {max:?} to see a send"
    );
    // And a long poll on an empty queue waits its time, then answers empty.
    let started = Instant::now();
    assert!(
        c.queue_receive("poll", 1, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = Server::start();
    let c = client(&server).await;
    c.queue_create("q", pb::QueueConfig::default())
        .await
        .unwrap();
    let before = c.status().await.unwrap().revision;

    let e = c
        .queue_send("q", vec![b'x'; 1024 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "body"));
    assert_eq!(
        e.message,
        "messages[0].body is 1048577 bytes; queue q takes at most 1048576"
    );

    let e = c.queue_send("nope", "a").await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::NotFound, "queue nope does not exist")
    );

    let batch = vec![
        pb::QueueSendEntry {
            body: b"a".to_vec(),
            ..Default::default()
        };
        101
    ];
    let e = c.queue_send_batch("q", batch).await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::InvalidArgument, "messages")
    );
    assert_eq!(
        e.message,
        "a send holds 101 messages; it must hold 1 to 100"
    );

    let looped = pb::QueueConfig {
        dead_letter_queue: "self".into(),
        ..Default::default()
    };
    let e = c.queue_create("self", looped).await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::InvalidArgument, "dead_letter_queue")
    );

    let e = c
        .queue_receive("q", 1, Duration::from_secs(21))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "wait"));
    let e = c.queue_receive("q", 101, Duration::ZERO).await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "max"));
    let e = c.queue_ack("q", "not-a-receipt").await.unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::InvalidArgument, "receipt")
    );
    let e = c.queue_ack("q", "7.1").await.unwrap_err();
    assert_eq!(e.code, Code::StaleToken);
    assert_eq!(
        c.status().await.unwrap().revision,
        before,
        "a refused call changed state"
    );

    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/v1/queue/send", server.endpoint()))
        .body(r#"{"queue": "q", "body": "x", "group": "g"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_ARGUMENT");
    assert_eq!(problem["field"], "group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_acks_the_receipts_it_carries_and_reports_those_that_cannot_ack() {
    let mut server = Server::start();
    let c = client(&server).await;
    c.queue_create("jobs", pb::QueueConfig::default())
        .await
        .unwrap();
    for body in ["a", "b", "c"] {
        c.queue_send("jobs", body).await.unwrap();
    }
    let acked =
        |c: Client| async move { c.queue_stats("jobs").await.unwrap().stats.unwrap().acked };
    let receive = |ack: Vec<String>| pb::QueueReceiveRequest {
        queue: "jobs".into(),
        max: 1,
        ack,
        ..Default::default()
    };

    // SDK: a's receipt acks in the receive that takes b; one that never was current does not,
    // is reported, and the receive goes on.
    let a = c.queue_receive("jobs", 1, Duration::ZERO).await.unwrap();
    let reply = c
        .queue_receive_request(receive(vec![a[0].receipt.clone(), "0999.1".into()]))
        .await
        .unwrap();
    assert_eq!(reply.messages.len(), 1);
    assert_eq!(reply.messages[0].body, b"b");
    assert_eq!((reply.acked, reply.ack_failures.len()), (1, 1));
    assert_eq!(
        reply.ack_failures[0].receipt, "0999.1",
        "as the caller wrote it"
    );
    let error = reply.ack_failures[0].error.clone().unwrap();
    assert_eq!(error.code(), pb::ErrorCode::StaleToken);
    assert_eq!(acked(c.clone()).await, 1);
    let b = reply.messages[0].receipt.clone();

    // A receipt that is not one is refused with its place in the list, and nothing happens.
    let err = c
        .queue_receive_request(receive(vec![b.clone(), "nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "ack[1]")
    );
    assert_eq!(acked(c.clone()).await, 1);

    // HTTP/JSON: the same field.
    let reply: serde_json::Value = server
        .post_json(
            "/v1/queue/receive",
            serde_json::json!({"queue": "jobs", "max": 1, "ack": [b]}),
        )
        .await;
    assert_eq!(reply["messages"][0]["body"], "c", "{reply}");
    assert_eq!(reply["ack_failures"], serde_json::json!([]), "{reply}");
    assert_eq!(acked(c.clone()).await, 2);
    let receipt = reply["messages"][0]["receipt"].as_str().unwrap().to_owned();

    // CLI: --ack, with nothing left to receive (exit 1), and a stale receipt on stderr.
    let (code, out, err) = server.cli(&[
        "queue", "receive", "jobs", "--ack", &receipt, "--ack", "7.7",
    ]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("could not ack 7.7"), "{err}");
    assert_eq!(acked(c.clone()).await, 3);

    // A long poll whose acks were made answers them even when the server stops during its wait.
    c.queue_send("jobs", "d").await.unwrap();
    let d = c.queue_receive("jobs", 1, Duration::ZERO).await.unwrap();
    let poll = {
        let c = c.clone();
        let mut request = receive(vec![d[0].receipt.clone()]);
        request.wait_ms = 20_000;
        tokio::spawn(async move { c.queue_receive_request(request).await })
    };
    eventually(Duration::from_secs(5), "the ack applied", || {
        let c = c.clone();
        async move { acked(c).await == 4 }
    })
    .await;
    server.stop();
    let reply = poll.await.unwrap().unwrap();
    assert_eq!((reply.acked, reply.messages.len()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_queue_end_to_end() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| server.cli(args);
    assert_eq!(cli(&["queue", "create", "dead"]).0, 0);
    let (code, out, err) = cli(&[
        "queue",
        "create",
        "jobs",
        "--dlq",
        "dead",
        "--max-receives",
        "2",
        "--visibility",
        "5s",
    ]);
    assert_eq!((code, out.as_str()), (0, "queue jobs created\n"), "{err}");
    let (code, ids, _) =
        server.cli_with_stdin(&["queue", "send", "jobs"], Some("one\ntwo\npoison\n"));
    assert_eq!(code, 0);
    assert_eq!(ids.lines().count(), 3);

    let (code, out, _) = cli(&["queue", "receive", "jobs", "--max", "1"]);
    assert_eq!(code, 0);
    let (receipt, body) = out.trim_end().split_once('\t').unwrap();
    assert_eq!(body, "one");
    let (code, out, _) = cli(&["queue", "nack", "jobs", receipt, "--reason", "later"]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("nacked {receipt}\n").as_str())
    );

    // consume: the body on stdin, exit 0 acks, anything else nacks.
    let log = dir.path().join("log");
    let script = format!(
        "read body; echo \"$body $PLINTH_RECEIVE_COUNT\" >> {}; [ \"$body\" != poison ]",
        log.display()
    );
    let (code, _, err) = cli(&[
        "queue",
        "consume",
        "jobs",
        "--exit-when-idle",
        "4s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 acked"), "{err}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("one 2\n") && log.contains("two 1\n"), "{log}");
    assert!(log.contains("poison 2\n"), "{log}");

    let (code, out, _) = cli(&["queue", "stats", "dead"]);
    assert_eq!(code, 0);
    assert!(out.contains("visible:        1"), "{out}");
    let (code, out, _) = cli(&["queue", "redrive", "dead"]);
    assert_eq!((code, out.as_str()), (0, "moved 1 messages out of dead\n"));
    let (code, out, _) = cli(&["queue", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("jobs\tvisible 1"), "{out}");
    assert_eq!(
        cli(&["queue", "purge", "jobs"]).1,
        "purged 1 messages from jobs\n"
    );
    let (code, _, err) = cli(&["queue", "delete", "dead"]);
    assert_eq!(code, 1);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    assert_eq!(cli(&["queue", "delete", "jobs"]).0, 0);
    assert_eq!(cli(&["queue", "delete", "dead"]).0, 0);
    let (code, _, err) = cli(&["queue", "receive", "jobs"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    // A consumer of a queue that does not exist says so and stops, rather than idling forever.
    let (code, _, err) = cli(&["queue", "consume", "jobs", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND") && err.contains("jobs"), "{err}");
}
