//! What a careless or hostile client sends, against the real binary: every request is answered
//! with the contract's code and a sentence naming the field and the limit, and the server keeps
//! serving. One test (or a few) per bug that issue 21 found; each failed before its fix.

mod common;

use common::{Server, client};
use plinth_client::{Code, pb};
use std::time::Duration;

/// Bug 7: a watch from a revision the store has not reached answered with that future revision
/// in its header. Every reply's header carries a revision the store is at.
#[tokio::test]
async fn a_watch_from_a_future_revision_answers_with_the_store_revision() {
    let server = Server::start();
    let c = client(&server).await;
    let current = c.put("a", "1").await.unwrap().header.unwrap().revision;
    let mut kv = pb::kv_client::KvClient::connect(server.endpoint())
        .await
        .unwrap();
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: Vec::new(),
            prefix: true,
            from_revision: Some(current + 1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch's first message")
        .unwrap()
        .unwrap();
    assert!(first.events.is_empty());
    assert_eq!(first.header.unwrap().revision, current);

    // Over HTTP too: the first server-sent event carries the store's revision.
    let mut sse = reqwest::Client::new()
        .post(format!("{}/v1/kv/watch", server.endpoint()))
        .json(&serde_json::json!({"prefix": true, "from_revision": current + 1000}))
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(
        text.contains(&format!("\"revision\":{current},")),
        "the first event: {text}"
    );
    still_serves(&server).await;
}

/// The server still takes a write, answers a linearizable read and says it is ready.
async fn still_serves(server: &Server) {
    let c = client(server).await;
    c.put("still", "serving")
        .await
        .expect("a write after the bad input");
    assert_eq!(c.get("still").await.unwrap().unwrap().value, b"serving");
    let ready = reqwest::get(format!("{}/readyz", server.endpoint()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// A queue client whose messages may be as large as the server allows.
async fn queue_client(server: &Server) -> pb::queue_client::QueueClient<tonic::transport::Channel> {
    pb::queue_client::QueueClient::connect(server.endpoint())
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

fn batch(bodies: usize, body_bytes: usize) -> pb::QueueSendBatchRequest {
    pb::QueueSendBatchRequest {
        queue: "big".into(),
        messages: (0..bodies)
            .map(|_| pb::QueueSendEntry {
                body: vec![b'x'; body_bytes],
                ..Default::default()
            })
            .collect(),
    }
}

/// Bug 1: a valid-looking SendBatch of 64 bodies of 1 MiB became a log entry over the WAL's
/// record limit, and openraft stopped for good while /readyz said ready. Now a request over the
/// message limit is refused as it arrives, one over a command's size by core before it is
/// proposed, each naming the limit, and the server keeps serving.
#[tokio::test]
async fn a_request_larger_than_a_log_entry_is_refused_and_writes_go_on() {
    let server = Server::start();
    client(&server)
        .await
        .queue_create("big", pb::QueueConfig::default())
        .await
        .unwrap();
    let mut queue = queue_client(&server).await;

    let status = queue.send_batch(batch(64, 1 << 20)).await.unwrap_err();
    let err = plinth_client::Error::from(status);
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::ResourceExhausted, "body"),
        "{err}"
    );
    assert!(
        err.message
            .contains("the limit for this call is 17825792 bytes"),
        "{err}"
    );
    assert!(!err.is_transient());

    // Under the message limit but over a command's: refused by core, naming the limit.
    let status = queue.send_batch(batch(16, 1 << 20)).await.unwrap_err();
    let err = plinth_client::Error::from(status);
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "request"),
        "{err}"
    );
    assert!(err.message.contains("at most 16777216 bytes"), "{err}");

    // Just under it goes through, whole.
    let sent = queue
        .send_batch(batch(15, 1 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.results.len(), 15);
    still_serves(&server).await;
}

/// Bug 1, the last layer: a fatal storage error (here a disk whose syncs start failing) stopped
/// openraft's core while the process lived on refusing everything and /readyz said ready. Now
/// the process exits non-zero with the reason, so that a supervisor restarts it.
#[tokio::test]
async fn a_node_whose_disk_fails_exits_non_zero_with_the_reason() {
    let dead = tempfile::tempdir().unwrap();
    let trigger = dead.path().join("disk-is-dead");
    let mut server = Server::start_with_env(
        &[],
        &[("PLINTH_FAULT_FSYNC_FAIL_IF", trigger.to_str().unwrap())],
    );
    let c = client(&server).await;
    c.put("before", "1").await.unwrap();
    std::fs::write(&trigger, b"").unwrap();
    let err = c.put("after", "1").await.unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the server lives on; its log:\n{}", server.log_text()));
    assert!(!status.success(), "{status}");
    let log = server.log_text();
    assert!(log.contains("the node failed and cannot serve"), "{log}");
    assert!(
        log.contains("fdatasync"),
        "the reason names the failed sync: {log}"
    );
}

/// A problem+json reply: its status, code and field.
async fn problem(reply: reqwest::Response) -> (u16, serde_json::Value) {
    let status = reply.status().as_u16();
    assert_eq!(
        reply.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, reply.json().await.unwrap())
}

/// Bug 5: errors with the wrong shape. An over-large body answered 429 (which invites a retry),
/// a malformed chunked body 429, a GET on a POST route 405 with an empty body, undecodable
/// protobuf INTERNAL and an oversize gRPC message OUT_OF_RANGE.
#[tokio::test]
async fn every_malformed_request_gets_the_contracts_code_and_shape() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.endpoint());

    let huge = format!(r#"{{"key": "k", "value": "{}"}}"#, "x".repeat(9 << 20));
    let (status, body) = problem(
        http.post(url("/v1/kv/put"))
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("RESOURCE_EXHAUSTED"), Some("body"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("8388608 bytes"),
        "{body}"
    );

    // A chunked body whose chunk size is not hexadecimal.
    let reply = raw_http(
        &server,
        b"POST /v1/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("INVALID_ARGUMENT"), "{reply}");

    let (status, body) = problem(http.get(url("/v1/kv/put")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("INVALID_ARGUMENT"), Some("method"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("it takes POST"),
        "{body}"
    );
    let (status, _) = problem(http.post(url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 405);

    // Protobuf that is not a PutRequest: field 1 of a lease grant is a number, a put's key is
    // bytes.
    let status = common::raw_grpc::<_, pb::PutResponse>(
        &server,
        "/plinth.v1.Kv/Put",
        pb::LeaseGrantRequest {
            id: 7,
            ttl_ms: 1000,
        },
    )
    .await
    .unwrap_err();
    let err = plinth_client::Error::from(status);
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "body"),
        "{err}"
    );
    assert!(!err.is_transient());

    // A put over the message limit, through the SDK.
    let c = client(&server).await;
    let err = c.put("k", vec![0u8; 18 << 20]).await.unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::ResourceExhausted, "body"),
        "{err}"
    );
    assert!(err.message.contains("17825792"), "{err}");
    assert!(!err.is_transient());
    still_serves(&server).await;
}

/// Sends `request` as it is over a new TCP connection and answers what the server wrote back.
async fn raw_http(server: &Server, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.windows(4).any(|w| w == b"\r\n\r\n") && reply.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Bug 6: requests quietly misread. An unknown field (a typo like "leas" stored the key without
/// its lease), a byte field given as text and as base64 (one kept silently), and a field given
/// twice (the last kept) are each refused, naming the field.
#[tokio::test]
async fn a_request_that_could_be_misread_is_refused_naming_the_field() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let put = |body: &'static str| {
        http.post(format!("{}/v1/kv/put", server.endpoint()))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = problem(
        put(r#"{"key": "k", "value": "v", "leas": 7}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("INVALID_ARGUMENT"), Some("leas"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("key, lease, value"),
        "{body}"
    );

    let (status, body) = problem(
        put(r#"{"key": "k", "value": "a", "value_b64": "Yg=="}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "value");

    let (status, body) = problem(
        put(r#"{"key": "k", "value": "a", "value": "b"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("given twice"),
        "{body}"
    );

    // Nested: a typo inside a txn's compare.
    let (status, body) = problem(
        http.post(format!("{}/v1/kv/txn", server.endpoint()))
            .json(&serde_json::json!({"compares": [{"key": "k", "op": "EQUAL", "versoin": 1}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "compares[0].versoin");

    // None of them wrote anything.
    let c = client(&server).await;
    assert!(c.get("k").await.unwrap().is_none());
    still_serves(&server).await;
}

/// Bug 4: the CLI wrapped huge durations (`lease grant 213503982335d` granted a lease of about
/// 9.6 hours; `schedule create --every` the same). Every duration past its maximum is refused
/// with the limit named, by the CLI and by the server, and nothing is created.
#[tokio::test]
async fn a_duration_past_its_maximum_is_refused_naming_the_limit() {
    let server = Server::start();
    for (args, limit) in [
        (vec!["lease", "grant", "213503982335d"], "7d (604800000 ms)"),
        (
            vec!["schedule", "create", "tick", "--every", "213503982335d"],
            "366d",
        ),
        (vec!["schedule", "create", "once", "--in", "400d"], "366d"),
        (vec!["queue", "create", "q", "--visibility", "13h"], "12h"),
        (
            vec!["lock", "acquire", "l", "--owner", "me", "--ttl", "8d"],
            "7d",
        ),
        (
            vec![
                "registry",
                "register",
                "svc",
                "i1",
                "10.0.0.1:80",
                "--ttl",
                "8d",
            ],
            "7d",
        ),
    ] {
        let (code, out, err) = server.cli(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("is longer than the most it may be here") && err.contains(limit),
            "{args:?}: {err}"
        );
    }
    // Below a field's least value, or a 0 the API would read as "the default": refused too.
    for (args, limit) in [
        (vec!["queue", "create", "q", "--visibility", "0s"], "1ms"),
        (
            vec!["queue", "create", "q", "--retention", "30s"],
            "1m (60000 ms)",
        ),
        (vec!["schedule", "create", "t", "--every", "10ms"], "1s"),
        (
            vec![
                "schedule",
                "create",
                "t",
                "--every",
                "1m",
                "--timeout",
                "0s",
            ],
            "1s",
        ),
        (vec!["lease", "grant", "1us"], "500ms"),
    ] {
        let (code, out, err) = server.cli(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("is shorter than the least it may be here") && err.contains(limit),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = server.cli(&["queue", "create", "q", "--max-receives", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = server.cli(&["schedule", "create", "old", "--at", "1969-12-31T00:00:00Z"]);
    assert_eq!(code, 1);
    assert!(err.contains("before 1970"), "{err}");

    // Through the SDK, a duration too long for the API's milliseconds is refused by the server
    // naming the limit, not wrapped.
    let c = client(&server).await;
    let err = c
        .lease_grant(Duration::from_secs(213_503_982_335 * 86_400))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "ttl"),
        "{err}"
    );
    assert!(err.message.contains("604800000"), "{err}");
    // And the server refuses what the CLI cannot send: an interval past a year.
    let err = c
        .schedule_create(
            "tick",
            pb::ScheduleSpec {
                every_ms: u64::MAX,
                ..Default::default()
            },
            "",
            pb::SchedulePolicy::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "every"),
        "{err}"
    );

    // Nothing was created.
    assert!(c.lease_list().await.unwrap().is_empty());
    assert!(c.schedule_list().await.unwrap().is_empty());
    assert!(c.queue_list().await.unwrap().is_empty());
    still_serves(&server).await;
}

/// What the server answered on a raw connection to `GET /healthz`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    /// Told the server is full, with the limit.
    Refused,
    /// Closed without an answer.
    Closed,
}

async fn ask_health(tcp: &mut tokio::net::TcpStream) -> Answer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return Answer::Closed;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                reply.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&reply);
                if text.starts_with("HTTP/1.1 200") && text.ends_with("ok\n") {
                    return Answer::Ok;
                }
                if text.starts_with("HTTP/1.1 429") && text.contains("100 connections open") {
                    return Answer::Refused;
                }
            }
            Ok(_) => return Answer::Closed,
            Err(_) => panic!("no answer within 5 s: {}", String::from_utf8_lossy(&reply)),
        }
    }
}

/// Whether the server closes `tcp` (it reads EOF or a reset) within `within`.
async fn closed_by_server(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Bug 3: idle connections were never closed: about 20,000 connections that sent nothing
/// exhausted the file descriptors, and accept, /readyz and the log's writer failed. Now a
/// connection must send a request soon after it opens and is closed once idle, connections past
/// the cap are told so, and the clients already connected keep writing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_those_past_the_cap_refused_while_writes_go_on() {
    let server = Server::start_with(&["--max-connections", "100", "--idle-timeout", "2s"]);
    let c = client(&server).await;
    c.put("before", "1").await.unwrap();
    // A client already connected writes all along (never idle long enough to be closed).
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                c.put(format!("during/{i}"), "1").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, plinth_client::Error>(())
        })
    };

    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    let mut answers = Vec::new();
    for tcp in &mut flood {
        answers.push(ask_health(tcp).await);
    }
    let count = |a: Answer| answers.iter().filter(|x| **x == a).count();
    assert!(count(Answer::Ok) <= 100, "{answers:?}");
    assert!(
        count(Answer::Refused) >= 1,
        "past the cap, a clear refusal: {answers:?}"
    );

    // Connections that send nothing are closed once the first request is overdue (2 s here).
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    for tcp in flood.iter_mut().chain(silent.iter_mut()) {
        assert!(
            closed_by_server(tcp, Duration::from_secs(15)).await,
            "an idle connection was left open"
        );
    }
    writer
        .await
        .unwrap()
        .expect("the connected client wrote throughout");
    assert_eq!(c.get("during/59").await.unwrap().unwrap().value, b"1");
    still_serves(&server).await;
}

/// Bug 2: a damaged last record below the committed index made every start fail with
/// `storage failed: when Read LogIndex(...)`, after recovery had already cut the record,
/// destroying the evidence. Now the node refuses to start, changing nothing, with a message
/// that names the file, the offset, the last intact index and the remedy; `plinth repair`
/// says what a cut would lose and, with `--accept-loss`, makes it.
#[tokio::test]
async fn a_damaged_acknowledged_record_stops_the_start_unchanged_until_repair_accepts_the_loss() {
    let mut server = Server::start();
    let c = client(&server).await;
    for i in 0..10 {
        c.put(format!("k{i}"), format!("{i}")).await.unwrap();
    }
    drop(c);
    server.stop();
    let wal = server.data_dir().join("wal");
    let (segment, offset) = common::damage_last_record(&wal);
    let before = std::fs::read(&segment).unwrap();

    let (status, log) = server.restart_failing();
    assert!(!status.success());
    for needle in [
        segment.display().to_string(),
        format!("at byte {offset}"),
        "The last intact record is lsn".to_owned(),
        "plinth repair --data-dir".to_owned(),
        "--accept-loss".to_owned(),
        "added back with an empty data directory".to_owned(),
    ] {
        assert!(log.contains(&needle), "the refusal names {needle:?}: {log}");
    }
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "the refusal changed the log"
    );

    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let (code, out, err) = server.cli(&["repair", "--data-dir", &data_dir]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("a cut loses every entry from"), "{out}");
    assert!(out.contains("acknowledged"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "a report changed the log"
    );

    let (code, out, err) = server.cli(&["repair", "--data-dir", &data_dir, "--accept-loss"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cut: the node starts from entry"), "{out}");
    let (code, out, _) = server.cli(&["repair", "--data-dir", &data_dir]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to repair"), "{out}");

    server.restart();
    let c = client(&server).await;
    for i in 0..9 {
        assert_eq!(
            c.get(format!("k{i}")).await.unwrap().unwrap().value,
            format!("{i}").into_bytes()
        );
    }
    still_serves(&server).await;
}

/// A request whose body stops coming held its connection for ever, past the idle timeout (its
/// close waited for the request): enough of them took every place under the cap. Now a body
/// silent for the first-request timeout fails its request with a 400, and the connection goes.
#[tokio::test]
async fn a_request_whose_body_stalls_is_cut_off_and_its_connection_freed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start_with(&["--max-connections", "3", "--idle-timeout", "2s"]);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(
            b"POST /v1/kv/put HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"key\"",
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    for tcp in &mut stalled {
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "a stalled body kept its connection open");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("stalled"), "{text}");
    }
    // Their places are free again.
    still_serves(&server).await;
}
