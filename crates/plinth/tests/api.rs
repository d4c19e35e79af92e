//! End-to-end tests against the real binary: KV, leases and watch through the SDK, HTTP/JSON
//! and the CLI; bad input; restart.

mod common;

use common::{Server, client, retry};
use plinth_client::{Client, Code, WatchOptions, pb};
use std::time::{Duration, Instant};

#[tokio::test]
async fn put_get_range_delete_and_txn_through_the_sdk() {
    let server = Server::start();
    let c = client(&server).await;
    let r1 = c.put("app/a", "1").await.unwrap().header.unwrap().revision;
    let r2 = c.put("app/b", "2").await.unwrap().header.unwrap().revision;
    assert_eq!(r2, r1 + 1);
    assert_eq!(c.get("app/a").await.unwrap().unwrap().value, b"1");
    assert!(c.get("missing").await.unwrap().is_none());
    let range = c.range_prefix("app/").await.unwrap();
    assert_eq!(
        range
            .kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        vec![b"app/a".to_vec(), b"app/b".to_vec()]
    );

    let cas = |expected: u64, value: &str| pb::TxnRequest {
        compares: vec![pb::Compare {
            key: b"app/a".to_vec(),
            op: pb::CompareOp::Equal as i32,
            target: Some(pb::compare::Target::Version(expected)),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: b"app/a".to_vec(),
                value: value.into(),
                lease: 0,
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Range(pb::RangeRequest {
                key: b"app/a".to_vec(),
                ..Default::default()
            })),
        }],
    };
    assert!(c.txn(cas(1, "swapped")).await.unwrap().succeeded);
    let lost = c.txn(cas(1, "again")).await.unwrap();
    assert!(!lost.succeeded);
    assert_eq!(c.get("app/a").await.unwrap().unwrap().value, b"swapped");

    let deleted = c.delete_prefix("app/").await.unwrap();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(c.range_prefix("app/").await.unwrap().count, 0);
}

#[tokio::test]
async fn watch_from_revision_zero_replays_everything_in_order_then_follows() {
    let server = Server::start();
    let c = client(&server).await;
    for i in 0..20 {
        c.put(format!("w/{i:02}"), i.to_string()).await.unwrap();
    }
    c.delete("w/00").await.unwrap();
    let mut watch = c
        .watch(WatchOptions::prefix("w/").from_revision(0))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..21 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(event.kv.unwrap().mod_revision);
    }
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "revisions in order without gaps: {seen:?}"
    );
    let live = c.put("w/live", "x").await.unwrap().header.unwrap().revision;
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kv.unwrap().mod_revision, live);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_gets_compacted_with_the_restart_revision() {
    let server = Server::start();
    let c = client(&server).await;
    for i in 0..10 {
        c.put("k", i.to_string()).await.unwrap();
    }
    c.compact(6).await.unwrap();
    let err = match c.watch(WatchOptions::key("k").from_revision(2)).await {
        Err(e) => e,
        Ok(mut w) => w.next().await.unwrap().unwrap_err(),
    };
    assert_eq!(err.code, Code::Compacted);
    assert_eq!(err.compacted_revision, 6);
    let mut ok = c
        .watch(WatchOptions::key("k").from_revision(6))
        .await
        .unwrap();
    assert_eq!(
        ok.next().await.unwrap().unwrap().kv.unwrap().mod_revision,
        7
    );
}

#[tokio::test]
async fn a_key_on_a_one_second_lease_is_gone_within_three_seconds() {
    let server = Server::start();
    let c = client(&server).await;
    let lease = c.lease_grant(Duration::from_secs(1)).await.unwrap();
    c.put_with_lease("ephemeral", "x", lease.id).await.unwrap();
    let started = Instant::now();
    while c.get("ephemeral").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "key still there after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = c.lease_time_to_live(lease.id, false).await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}

#[tokio::test]
async fn keep_alive_keeps_a_lease_and_revoke_ends_it() {
    let server = Server::start();
    let c = client(&server).await;
    let lease = c.lease_grant(Duration::from_secs(2)).await.unwrap();
    let keeper = c.keep_alive(&lease);
    c.put_with_lease("held", "x", lease.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        c.get("held").await.unwrap().is_some(),
        "kept alive past its ttl"
    );
    let ttl = c.lease_time_to_live(lease.id, true).await.unwrap();
    assert_eq!(ttl.keys, vec![b"held".to_vec()]);
    assert!(
        c.lease_list()
            .await
            .unwrap()
            .iter()
            .any(|l| l.id == lease.id)
    );
    drop(keeper);
    c.lease_revoke(lease.id).await.unwrap();
    assert!(c.get("held").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_the_server_keeps_serving() {
    let server = Server::start();
    let c = client(&server).await;
    let err = c.put(vec![b'k'; 4097], "v").await.unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "key")
    );
    assert_eq!(err.message, "key is 4097 bytes; the limit is 4096");
    let err = c.put("k", vec![0u8; 1024 * 1024 + 1]).await.unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "value")
    );
    assert!(
        err.message.contains("1048577") && err.message.contains("1048576"),
        "{}",
        err.message
    );
    let err = c.lease_grant(Duration::ZERO).await.unwrap_err();
    assert_eq!(
        (err.code, err.field.as_str()),
        (Code::InvalidArgument, "ttl")
    );
    let err = c
        .lease_grant(Duration::from_secs(365 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let err = c.put_with_lease("k", "v", 999).await.unwrap_err();
    assert_eq!((err.code, err.field.as_str()), (Code::NotFound, "lease"));
    let err = c.lease_keep_alive(999).await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);

    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.endpoint());
    let reply = http
        .post(url("/v1/kv/put"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(reply.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_ARGUMENT");
    assert_eq!(problem["field"], "body");
    let reply = http
        .post(url("/v1/kv/put"))
        .json(&serde_json::json!({"key": "", "value": "v"}))
        .send()
        .await
        .unwrap();
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(
        (problem["code"].as_str(), problem["field"].as_str()),
        (Some("INVALID_ARGUMENT"), Some("key"))
    );
    let reply = http
        .post(url("/v1/lease/grant"))
        .json(&serde_json::json!({"ttl_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let reply = http.post(url("/v1/kv/pot")).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["field"], "path");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/v1/kv/pot")),
        "{problem}"
    );

    // A gRPC call to a service the server does not have is UNIMPLEMENTED, not an HTTP error.
    let status = common::raw_grpc::<_, pb::GetResponse>(
        &server,
        "/plinth.v9.Nothing/Get",
        pb::GetRequest::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    c.put("still", "serving").await.unwrap();
    assert_eq!(c.get("still").await.unwrap().unwrap().value, b"serving");
}

#[tokio::test]
async fn http_json_mirrors_the_proto_with_text_and_base64_bytes() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.endpoint());
    let put: serde_json::Value = server
        .post_json(
            "/v1/kv/put",
            serde_json::json!({"key": "greeting", "value": "hello"}),
        )
        .await;
    assert!(put["header"]["revision"].as_u64().unwrap() >= 1);
    http.post(url("/v1/kv/put"))
        .json(&serde_json::json!({"key": "bin", "value_b64": "AP8="}))
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = server
        .post_json("/v1/kv/get", serde_json::json!({"key": "greeting"}))
        .await;
    assert_eq!(got["kv"]["value"], "hello");
    let got: serde_json::Value = server
        .post_json("/v1/kv/get", serde_json::json!({"key": "bin"}))
        .await;
    assert_eq!(got["kv"]["value_b64"], "AP8=");
    let txn: serde_json::Value = server
        .post_json(
            "/v1/kv/txn",
            serde_json::json!({
                "compares": [{"key": "greeting", "op": "EQUAL", "value": "hello"}],
                "success": [{"put": {"key": "greeting", "value": "bonjour"}}],
            }),
        )
        .await;
    assert_eq!(txn["succeeded"], true);
    let health = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Watch over server-sent events: history from revision 0, one JSON object per event.
    let mut sse = http
        .post(url("/v1/kv/watch"))
        .json(&serde_json::json!({"key": "greeting", "from_revision": 0}))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("bonjour") {
        assert!(Instant::now() < deadline, "no watch event over SSE: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: watch"));
    assert!(text.find("hello").unwrap() < text.find("bonjour").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_all_data_and_a_watch_resumes_without_gap_or_duplicate() {
    let mut server = Server::start();
    let c = Client::connect_lazy(server.endpoint()).unwrap();
    let mut watch = c
        .watch(WatchOptions::prefix("r/").from_revision(0))
        .await
        .unwrap();
    for i in 0..50 {
        c.put(format!("r/{i:03}"), i.to_string()).await.unwrap();
    }
    server.stop();
    server.restart();
    for i in 50..100 {
        retry(|| c.put(format!("r/{i:03}"), i.to_string())).await;
    }
    let range = retry(|| c.range_prefix("r/")).await;
    assert_eq!(range.count, 100);
    let mut keys = Vec::new();
    while keys.len() < 100 {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        keys.push(String::from_utf8(event.kv.unwrap().key).unwrap());
    }
    let expected: Vec<String> = (0..100).map(|i| format!("r/{i:03}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn the_cli_puts_gets_ranges_deletes_and_manages_leases() {
    let server = Server::start();
    let (code, out, err) = server.cli(&["kv", "put", "cli/a", "one"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK"), "{out}");
    let (_, out, _) = server.cli(&["kv", "get", "cli/a"]);
    assert_eq!(out, "one\n");
    let (code, _, err) = server.cli(&["kv", "get", "cli/missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    server.cli(&["kv", "put", "cli/b", "two"]);
    let (_, out, _) = server.cli(&["kv", "range", "cli/"]);
    assert_eq!(out, "cli/a\tone\ncli/b\ttwo\n");
    let (_, out, _) = server.cli(&["kv", "get", "cli/a", "--json"]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["kv"]["value"], "one");
    let txn = r#"{"compares":[{"key":"cli/a","op":"EQUAL","value":"one"}],"success":[{"put":{"key":"cli/a","value":"uno"}}]}"#;
    let (code, out, err) = server.cli_with_stdin(&["kv", "txn"], Some(txn));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("SUCCESS"), "{out}");
    let (_, out, _) = server.cli(&["kv", "del", "cli/", "--prefix"]);
    assert_eq!(out, "2\n");

    let (code, out, err) = server.cli(&["lease", "grant", "10s"]);
    assert_eq!(code, 0, "{err}");
    let id: u64 = out.trim().parse().expect("grant prints the id");
    let (code, _, err) = server.cli(&["kv", "put", "cli/leased", "x", "--lease", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = server.cli(&["lease", "ttl", &id.to_string(), "--keys"]);
    assert!(out.contains("cli/leased"), "{out}");
    let (_, out, _) = server.cli(&["lease", "list"]);
    assert!(out.starts_with(&id.to_string()), "{out}");
    server.cli(&["lease", "revoke", &id.to_string()]);
    let (code, _, _) = server.cli(&["kv", "get", "cli/leased"]);
    assert_eq!(code, 1);
    let (code, _, err) = server.cli(&["lease", "grant", "0s"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("0s is shorter than the least it may be here, 500ms"),
        "{err}"
    );

    let (code, out, err) = server.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("revision:") && out.contains("leader:") && out.contains("wal size:"),
        "{out}"
    );
}

#[tokio::test]
async fn cli_watch_prints_one_event_a_line() {
    let server = Server::start();
    let c = client(&server).await;
    c.put("cw/1", "a").await.unwrap();
    c.put("cw/2", "b").await.unwrap();
    let mut child = std::process::Command::new(Server::binary())
        .args([
            "kv",
            "watch",
            "cw/",
            "--from-revision",
            "0",
            "--endpoint",
            &server.endpoint(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.join().unwrap();
    assert_eq!(
        lines,
        vec!["1 PUT cw/1 a".to_string(), "2 PUT cw/2 b".to_string()]
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let server = Server::start();
    let out = std::process::Command::new(Server::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another plinth process"), "{err}");
    client(&server).await.put("still", "mine").await.unwrap();
}

#[tokio::test]
async fn a_backup_saved_by_the_cli_restores_into_a_new_server_with_every_acknowledged_write() {
    let server = Server::start();
    let c = client(&server).await;
    for i in 0..100 {
        c.put(format!("key-{i:03}"), format!("value-{i}"))
            .await
            .unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("plinth.backup");
    let file_arg = file.to_str().unwrap();
    let (code, out, err) = server.cli(&["snapshot", "save", file_arg]);
    assert_eq!(code, 0, "{err}");
    let at = c.status().await.unwrap().revision;
    assert!(out.contains(&format!("revision {at}, 100 keys")), "{out}");
    c.put("after-the-backup", "x").await.unwrap();

    // Over HTTP the same backup is the body, its revision in a header.
    let http = reqwest::get(format!("{}/v1/maintenance/snapshot", server.endpoint()))
        .await
        .unwrap();
    assert_eq!(http.status(), 200);
    let http_revision: u64 = http.headers()["plinth-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_revision, at + 1);
    let over_http = scratch.path().join("over-http.backup");
    std::fs::write(&over_http, http.bytes().await.unwrap()).unwrap();
    let (code, out, err) = server.cli(&["snapshot", "inspect", over_http.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("101 keys"), "{out}");

    // Restore refuses a directory in use, then fills an empty one.
    let (code, _, err) = server.cli(&[
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        server.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    let restored = scratch.path().join("restored");
    let (code, out, err) = server.cli(&[
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plinth serve --data-dir"), "{out}");

    let copy = Server::start_on(restored);
    let r = client(&copy).await;
    assert_eq!(r.status().await.unwrap().revision, at);
    let range = r.range_prefix("key-").await.unwrap();
    assert_eq!(range.kvs.len(), 100);
    assert!(r.get("after-the-backup").await.unwrap().is_none());
    assert!(
        r.put("on-the-copy", "y")
            .await
            .unwrap()
            .header
            .unwrap()
            .revision
            > at
    );

    // A damaged backup is refused by name, and nothing is staged.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let (code, _, err) = server.cli(&["snapshot", "inspect", file_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum does not match"), "{err}");
    let elsewhere = scratch.path().join("elsewhere");
    let (code, _, _) = server.cli(&[
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(!elsewhere.exists());
}

#[tokio::test]
async fn serve_reads_its_settings_from_a_toml_file_and_env_vars_override_it() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let file_dir = dir.path().join("from-file");
    let env_dir = dir.path().join("from-env");
    let config = dir.path().join("plinth.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\ntick_interval = \"50ms\"\n",
            file_dir.display().to_string()
        ),
    )
    .unwrap();
    for (env, expected) in [(None, &file_dir), (Some(&env_dir), &env_dir)] {
        let mut command = std::process::Command::new(Server::binary());
        command
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(env) = env {
            command.env("PLINTH_DATA_DIR", env);
        }
        let mut child = command.spawn().unwrap();
        let line = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.contains(&expected.display().to_string()), "{line}");
        assert!(expected.join("LOCK").exists());
    }
    std::fs::write(&config, "listen = 7\n").unwrap();
    let out = std::process::Command::new(Server::binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_server_on_several_worker_threads_keeps_every_acknowledged_write_across_a_kill() {
    // The default on a small machine is one thread (tokio's current-thread scheduler); this is
    // the other scheduler, where threads going idle sync the log too.
    let mut server = Server::start_with(&["--worker-threads", "3"]);
    let c = client(&server).await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                c.put(format!("w{w}/{i:02}"), format!("{i}")).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    server.kill9();
    server.restart();
    let c = client(&server).await;
    let all = c.range_prefix("w").await.unwrap();
    assert_eq!(all.kvs.len(), 200, "every acknowledged put survives");
}

#[test]
fn worker_threads_out_of_range_are_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "1025"] {
        let out = std::process::Command::new(Server::binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--worker-threads",
                bad,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--worker-threads is {bad}; it must be 1 to 1024")),
            "{err}"
        );
    }
}
