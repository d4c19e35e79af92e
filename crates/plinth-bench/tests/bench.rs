//! The bench itself, on a tiny run against a real plinth (the peers are not needed): every
//! workload runs, reports sane figures as JSON, and the tables render from them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `plinth` binary built beside this test (`target/<profile>/plinth`).
fn plinth_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    dir.join("plinth")
}

struct Plinth {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Plinth {
    fn start() -> Plinth {
        let dir = tempfile::tempdir().unwrap();
        let binary = plinth_binary();
        assert!(
            binary.exists(),
            "{} is not built; run the workspace's tests (cargo test --workspace)",
            binary.display()
        );
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from plinth: {line}"));
        Plinth {
            child,
            endpoint: format!("http://{addr}"),
            _dir: dir,
        }
    }
}

impl Drop for Plinth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plinth-bench"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_workload_runs_against_plinth_and_the_tables_render() {
    let plinth = Plinth::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.jsonl");
    let pid = plinth.child.id().to_string();
    let runs: &[&[&str]] = &[
        &["kv-put", "--requests", "300", "--concurrency", "8"],
        &[
            "kv-get",
            "--requests",
            "300",
            "--concurrency",
            "8",
            "--keys",
            "100",
        ],
        &[
            "lock-uncontended",
            "--requests",
            "100",
            "--concurrency",
            "4",
        ],
        &["lock-contended", "--requests", "60", "--concurrency", "4"],
        &["queue", "--requests", "100", "--concurrency", "4"],
        &[
            "queue",
            "--requests",
            "20",
            "--concurrency",
            "2",
            "--batch",
            "5",
        ],
        &[
            "watch-fanout",
            "--requests",
            "20",
            "--watchers",
            "5",
            "--rate",
            "100",
        ],
        &[
            "kv-load",
            "--keys",
            "200",
            "--value-size",
            "100",
            "--concurrency",
            "8",
        ],
    ];
    for args in runs {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--endpoint", &plinth.endpoint, "--pid", &pid]);
        full.extend_from_slice(&["--json", json.to_str().unwrap()]);
        let (ok, out, err) = bench(&full);
        assert!(ok, "{args:?} failed: {err}");
        assert!(out.lines().nth(1).unwrap().starts_with(args[0]), "{out}");
    }
    let text = std::fs::read_to_string(&json).unwrap();
    let reports: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), runs.len());
    for r in &reports {
        assert_eq!(r["system"], "plinth");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
        let latency = &r["latency"];
        assert!(latency["p50_us"].as_u64().unwrap() <= latency["p99_us"].as_u64().unwrap());
        assert!(r["server_cpu_s"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(r["server_peak_rss_mib"].as_f64().unwrap() > 1.0, "{r}");
    }
    assert_eq!(reports[5]["workload"], "queue-batch-5");
    assert_eq!(
        reports[5]["ops"],
        20 * 5,
        "a batch cycle counts its messages"
    );
    assert!(reports[4]["delivery"]["p99_us"].as_u64().is_some());
    assert_eq!(reports[7]["ops"], 200);

    let (ok, tables, err) = bench(&["tables", json.to_str().unwrap()]);
    assert!(ok, "{err}");
    for workload in [
        "kv-put",
        "kv-get",
        "lock-uncontended",
        "lock-contended",
        "queue",
        "queue-batch-5",
        "watch-fanout",
        "kv-load",
    ] {
        assert!(tables.contains(&format!("### {workload}\n")), "{tables}");
    }
    assert!(tables.contains("| 8 | plinth | "), "{tables}");
}

#[test]
fn bad_arguments_and_missing_peers_are_clear_errors() {
    let (ok, _, err) = bench(&["run", "kv-put", "--concurrency", "0"]);
    assert!(!ok);
    assert!(
        err.contains("--concurrency is 0; it must be at least 1"),
        "{err}"
    );
    let (ok, _, err) = bench(&["run", "queue", "--batch", "101"]);
    assert!(!ok);
    assert!(err.contains("--batch is 101; it must be 1 to 100"), "{err}");
    if !cfg!(feature = "peers") {
        let (ok, _, err) = bench(&["run", "kv-put", "--system", "etcd"]);
        assert!(!ok);
        assert!(err.contains("built without the peers' clients"), "{err}");
    }
    let (ok, _, err) = bench(&[
        "run",
        "kv-put",
        "--endpoint",
        "http://127.0.0.1:1",
        "--requests",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("connecting to plinth at http://127.0.0.1:1"),
        "{err}"
    );
}
