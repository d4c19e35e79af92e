//! End-to-end tests of the config service against the real binary: twenty watchers through 500
//! versions and two restarts, a watcher resuming from a compacted version, bad input, HTTP/JSON
//! values and the CLI.

mod common;

use common::{Lines, Server, eventually, retry};
use plinth_client::{Client, Code, ConfigSnapshot, ConfigUpdate, ConfigWatcher};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WATCHERS: usize = 20;
const VERSIONS: u64 = 500;

/// What one watcher applied: (version, whether it came as a change on top of the one before).
type Applied = Arc<Mutex<Vec<(u64, bool)>>>;

fn recorder(applied: &Applied) -> impl FnMut(&ConfigUpdate) + Send + 'static {
    let applied = applied.clone();
    move |update| {
        applied
            .lock()
            .unwrap()
            .push((update.snapshot.version, update.change.is_some()))
    }
}

/// Writes version `n` (as key `n` and a running `last`) exactly once: the put carries
/// `expected_version = n - 1`, so a retry after a reply lost to a restart either applies or is
/// refused because the first try did.
async fn write_version(client: &Client, n: u64) {
    loop {
        let set = [
            (format!("k{}", n % 7), json!(n)),
            ("last".to_owned(), json!({ "n": n })),
        ];
        match client.config_put("app", set, [], Some(n - 1)).await {
            Ok(v) => {
                assert_eq!(v.version, n);
                return;
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) if e.code == Code::FailedPrecondition => {
                let now = retry(|| client.config_get("app", 0)).await;
                assert!(
                    now.version >= n,
                    "refused at {} for version {n}: {e}",
                    now.version
                );
                return;
            }
            Err(e) => panic!("put version {n}: {e}"),
        }
    }
}

/// Twenty watchers follow 500 versions while the server is stopped and started once and
/// killed with -9 once. Every watcher applies every version after the one it started from, once
/// each, in order, one on top of the other, and ends on the last with exactly the server's
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_watchers_apply_every_version_in_order_exactly_once_across_two_restarts() {
    let mut server = Server::start();
    let client = Client::connect_lazy(server.endpoint()).unwrap();
    write_version(&client, 1).await;
    let mut watchers: Vec<(ConfigWatcher, Applied)> = Vec::new();
    for _ in 0..WATCHERS {
        let applied: Applied = Arc::default();
        let own = Client::connect_lazy(server.endpoint()).unwrap();
        let watcher = ConfigWatcher::start(own, "app".into(), recorder(&applied))
            .await
            .unwrap();
        watchers.push((watcher, applied));
    }
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 2..=VERSIONS {
                write_version(&client, n).await;
            }
        })
    };
    for restart in 0..2 {
        // Let a third of the versions go by between restarts.
        let at = VERSIONS / 3 * (restart + 1);
        eventually(Duration::from_secs(60), "the writer to get on", || {
            let client = client.clone();
            async move {
                client
                    .config_get("app", 0)
                    .await
                    .is_ok_and(|s| s.version >= at)
            }
        })
        .await;
        if restart == 0 {
            server.stop();
        } else {
            server.kill9();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.restart();
    }
    writer.await.unwrap();
    let last = retry(|| client.config_get("app", 0)).await;
    assert_eq!(last.version, VERSIONS);
    for (i, (watcher, applied)) in watchers.iter_mut().enumerate() {
        let snapshot = tokio::time::timeout(Duration::from_secs(30), watcher.wait_for(VERSIONS))
            .await
            .unwrap_or_else(|_| panic!("watcher {i} stuck at {}", watcher.version()));
        assert_eq!(*snapshot, last, "watcher {i} ended elsewhere");
        let applied = applied.lock().unwrap().clone();
        let (start, _) = applied[0];
        let expected: Vec<(u64, bool)> = std::iter::once((start, false))
            .chain((start + 1..=VERSIONS).map(|v| (v, true)))
            .collect();
        assert_eq!(
            applied, expected,
            "watcher {i} did not apply each version once, in order"
        );
        let stats = watcher.stats();
        assert_eq!(stats.resnapshots, 0);
        assert!(
            stats.reconnects >= 2,
            "watcher {i} never reconnected: {stats:?}"
        );
    }
    println!(
        "{WATCHERS} watchers applied every version to {VERSIONS} in order, once each, across a stop and a kill -9: {:?}",
        watchers[0].0.stats()
    );
}

/// A watcher resumes from a snapshot it kept, at a version the server no longer keeps: the
/// watch answers COMPACTED, the watcher takes a new snapshot and converges on the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_from_a_compacted_version_resnapshots_and_converges() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    client
        .config_put("svc", [("n", json!(1))], [], None)
        .await
        .unwrap();
    let kept: ConfigSnapshot = client.config_get("svc", 1).await.unwrap();
    for n in 2..=30 {
        client
            .config_put("svc", [("n", json!(n))], [], None)
            .await
            .unwrap();
    }
    assert_eq!(client.config_set_retention("svc", 5).await.unwrap(), 25);
    // The raw watch says so, with the way out.
    let mut raw = client.config_watch("svc", 1).await.unwrap();
    let e = plinth_client::Error::from(raw.message().await.unwrap_err());
    assert_eq!(e.code, Code::Compacted, "{e}");
    assert!(e.message.contains("the oldest kept is 25"), "{e}");

    let applied: Applied = Arc::default();
    let mut watcher = ConfigWatcher::resume(client.clone(), kept, recorder(&applied));
    let snapshot = tokio::time::timeout(Duration::from_secs(10), watcher.wait_for(30))
        .await
        .expect("the watcher converged");
    assert_eq!(snapshot.get("n"), Some(&json!(30)));
    assert_eq!(watcher.stats().resnapshots, 1);
    client
        .config_put("svc", [("n", json!(31))], [], None)
        .await
        .unwrap();
    assert_eq!(watcher.changed().await.version, 31);
    assert_eq!(
        *applied.lock().unwrap(),
        [(1, false), (30, false), (31, true)]
    );
}

/// A put that fails the schema, a stale expected version and a rollback outside retention each
/// get a clear error, and no new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_makes_no_version() {
    let server = Server::start();
    let client = Client::connect(server.endpoint()).await.unwrap();
    for n in 1..=3 {
        client
            .config_put("api", [("timeout", json!(n * 10))], [], None)
            .await
            .unwrap();
    }
    let schema = json!({
        "type": "object",
        "properties": {"timeout": {"type": "integer", "minimum": 1}},
        "required": ["timeout"],
    });
    client
        .config_set_schema("api", Some(&schema))
        .await
        .unwrap();
    assert_eq!(
        client.config_get_schema("api").await.unwrap(),
        Some(schema.clone())
    );
    let version = || async { client.config_get("api", 0).await.unwrap().version };

    let e = client
        .config_put("api", [("timeout", json!("soon"))], [], None)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::InvalidArgument, "set"));
    assert_eq!(
        e.message,
        "the config of api at version 4 would fail its schema: at /timeout: \"soon\" is not of type \"integer\""
    );
    assert_eq!(version().await, 3);

    let e = client
        .config_put("api", [("timeout", json!(5))], [], Some(2))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::FailedPrecondition, "expected_version")
    );
    assert_eq!(
        e.message,
        "api is at version 3, not the expected 2; read it again and retry"
    );
    assert_eq!(version().await, 3);

    client.config_set_retention("api", 1).await.unwrap();
    let e = client.config_rollback("api", 1, None).await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::Compacted, "to_version"));
    assert_eq!(
        e.message,
        "version 1 of api is no longer kept; the oldest kept is 2"
    );
    assert_eq!(version().await, 3);
    let rolled = client.config_rollback("api", 2, None).await.unwrap();
    assert_eq!((rolled.version, rolled.rollback_of), (4, 2));
    assert_eq!(
        client.config_get("api", 0).await.unwrap().get("timeout"),
        Some(&json!(20))
    );

    let e = client
        .config_set_schema("api", Some(&json!({"type": 7})))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (Code::InvalidArgument, "schema")
    );
    let e = client.config_get("nobody", 0).await.unwrap_err();
    assert_eq!((e.code, e.field.as_str()), (Code::NotFound, "service"));
    let e = client.config_get("api", 99).await.unwrap_err();
    assert_eq!(e.message, "service api has no version 99; its latest is 4");
}

/// Over HTTP, config values are plain JSON values and a watch is server-sent events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_carries_values_as_json() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.endpoint());
    let put: Value = server
        .post_json(
            "/v1/config/put",
            json!({"service": "web", "set": {"port": 8080, "tags": ["a", "b"], "name": "x"}}),
        )
        .await;
    assert_eq!(put["version"]["version"], 1);
    assert_eq!(put["version"]["set"]["port"], 8080);
    let got: Value = server
        .post_json("/v1/config/get", json!({"service": "web"}))
        .await;
    assert_eq!(
        got["values"],
        json!({"name": "x", "port": 8080, "tags": ["a", "b"]})
    );
    let problem = http
        .post(url("/v1/config/put"))
        .json(&json!({"service": "web", "set": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem.status(), 400);
    let problem: Value = problem.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_ARGUMENT");
    assert_eq!(
        problem["message"],
        "a put must set or delete at least one key"
    );

    let mut watch = http
        .post(url("/v1/config/watch"))
        .json(&json!({"service": "web", "from_version": 0}))
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(5), watch.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with("event: version\ndata: "), "{text}");
    assert!(text.contains("\"port\":8080"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_puts_gets_watches_and_rolls_back() {
    let server = Server::start();
    let cli = |args: &[&str]| server.cli(args);
    let (code, out, err) = cli(&[
        "config",
        "put",
        "api",
        "timeout=30",
        "mode=fast",
        "limits={\"rps\": 5}",
    ]);
    assert_eq!((code, out.as_str()), (0, "1\n"), "{err}");
    let (code, out, _) = cli(&[
        "config",
        "put",
        "api",
        "timeout=45",
        "--delete",
        "mode",
        "--expect-version",
        "1",
    ]);
    assert_eq!((code, out.as_str()), (0, "2\n"));
    let (code, _, err) = cli(&["config", "put", "api", "timeout=1", "--expect-version", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    let (code, out, _) = cli(&["config", "get", "api"]);
    assert_eq!(code, 0);
    assert_eq!(out, "limits={\"rps\":5}\ntimeout=45\n");
    assert_eq!(
        cli(&["config", "get", "api", "mode", "--version", "1"]).1,
        "fast\n"
    );
    assert_eq!(cli(&["config", "get", "api", "mode"]).0, 1);
    // --string keeps a value that reads as JSON a string.
    cli(&["config", "put", "api", "build=0042", "--string"]);
    assert_eq!(
        cli(&["config", "get", "api", "build", "--json"]).1,
        "\"0042\"\n"
    );
    let (_, history, _) = cli(&["config", "history", "api"]);
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(
        history
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("timeout=45 -mode"),
        "{history}"
    );
    assert_eq!(cli(&["config", "rollback", "api", "1"]).1, "4\n");
    assert_eq!(cli(&["config", "get", "api", "mode"]).1, "fast\n");

    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"properties": {"timeout": {"type": "integer"}}}"#,
    )
    .unwrap();
    assert_eq!(
        cli(&["config", "schema", "api", schema.to_str().unwrap()]).0,
        0
    );
    let (code, _, err) = cli(&["config", "put", "api", "timeout=soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("would fail its schema: at /timeout"), "{err}");
    assert!(cli(&["config", "schema", "api"]).1.contains("\"integer\""));
    assert_eq!(cli(&["config", "schema", "api", "--clear"]).0, 0);
    assert_eq!(cli(&["config", "schema", "api"]).0, 1);
    let (code, out, _) = cli(&["config", "retention", "api", "2"]);
    assert_eq!((code, out.as_str()), (0, "the oldest version kept is 2\n"));
    let (_, list, _) = cli(&["config", "list"]);
    assert!(list.starts_with("api\tversion 4\t"), "{list}");

    // A watch prints every version after --from, then follows, until interrupted.
    let mut watch = std::process::Command::new(Server::binary())
        .args(["config", "watch", "api", "--from", "3"])
        .env("PLINTH_ENDPOINT", server.endpoint())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Lines::follow(&mut watch);
    cli(&["config", "put", "api", "timeout=50"]);
    printed.wait_for("the watch printed versions 4 and 5", |lines| {
        lines.len() >= 2
    });
    let _ = std::process::Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status();
    assert!(watch.wait().unwrap().success());
    let lines = printed.finish();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("4\t") && lines[0].ends_with("(rollback to 1)"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("5\t") && lines[1].ends_with("timeout=50"),
        "{lines:?}"
    );
}
