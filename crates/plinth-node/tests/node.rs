//! A single-node replica end to end: writes, reads, restart, snapshots, leases, group commit.

use plinth_core::kv;
use plinth_core::lease;
use std::path::Path;
use std::time::{Duration, Instant};

use plinth_core::kv::{KeyValue, KvCommand, KvOutput};
use plinth_core::lease::{LeaseCommand, LeaseOutput};
use plinth_core::{Applied, Command, LeaseId, Output, Revision, StateError};
use plinth_node::{Node, NodeConfig, NodeError};

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        tick_interval: Duration::from_millis(50),
        ..NodeConfig::default()
    }
}

async fn put(node: &Node, key: &str, value: &str) -> Applied {
    put_with_lease(node, key, value, None).await
}

async fn put_with_lease(node: &Node, key: &str, value: &str, lease: Option<LeaseId>) -> Applied {
    let applied = node
        .propose(Command::Kv(KvCommand::Put(kv::Put {
            key: key.into(),
            value: value.into(),
            lease,
        })))
        .await
        .expect("put is proposed");
    assert!(
        applied.result.is_ok(),
        "put {key} refused: {:?}",
        applied.result
    );
    applied
}

async fn get(node: &Node, key: &str) -> Option<KeyValue> {
    let key = key.as_bytes().to_vec();
    node.read(true, move |state| state.kv().get(&key).cloned())
        .await
        .expect("read")
}

async fn revision(node: &Node) -> Revision {
    node.read(true, |state| state.revision())
        .await
        .expect("read")
}

#[tokio::test]
async fn a_put_is_read_back_and_100_puts_get_dense_increasing_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();

    let applied = put(&node, "greeting", "hello").await;
    let kv = get(&node, "greeting").await.expect("key exists");
    assert_eq!(kv.value, b"hello");
    assert_eq!(kv.mod_revision, applied.revision);

    let start = revision(&node).await;
    for i in 0..100u64 {
        let applied = put(&node, &format!("k{i}"), "v").await;
        assert_eq!(
            applied.revision,
            Revision(start.0 + i + 1),
            "put {i} has the next revision"
        );
    }
    assert_eq!(revision(&node).await, Revision(start.0 + 100));
    // A serializable read on the leader sees the same.
    assert_eq!(node.read(false, |s| s.kv().len()).await.unwrap(), 101);
    node.shutdown().await;
}

#[tokio::test]
async fn a_command_over_a_limit_is_refused_before_the_log_and_a_refusal_by_the_state_is_an_outcome()
{
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let log_before = node.status().last_log_index;

    let empty_key = node
        .propose(Command::Kv(KvCommand::Put(kv::Put {
            key: Vec::new(),
            value: b"v".to_vec(),
            lease: None,
        })))
        .await;
    assert!(
        matches!(empty_key, Err(NodeError::Invalid(StateError::Kv(_)))),
        "{empty_key:?}"
    );
    assert_eq!(
        node.status().last_log_index,
        log_before,
        "nothing reached the log"
    );

    let unknown_lease = node
        .propose(Command::Kv(KvCommand::Put(kv::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: Some(LeaseId(99)),
        })))
        .await
        .expect("a deterministic refusal is not a node error");
    assert!(unknown_lease.result.is_err());
    node.shutdown().await;
}

#[tokio::test]
async fn status_names_this_node_as_leader_and_counts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    put(&node, "a", "1").await;
    let status = node.status();
    assert_eq!(status.node_id, 1);
    assert_eq!(status.leader_id, Some(1));
    assert!(status.term >= 1);
    assert_eq!(status.applied_index, status.last_log_index);
    assert_eq!(status.revision, Revision(1));
    assert!(status.wal_bytes > 0 && status.wal_segments >= 1 && status.wal_fsyncs >= 1);
    node.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_proposals_and_reads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    node.shutdown().await;
    node.shutdown().await;
    assert_eq!(
        node.propose(Command::Tick).await.unwrap_err(),
        NodeError::ShuttingDown
    );
    assert_eq!(
        node.read(true, |s| s.revision()).await.unwrap_err(),
        NodeError::ShuttingDown
    );
}

#[tokio::test]
async fn a_restart_keeps_every_key_and_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    for i in 0..200 {
        put(&node, &format!("key-{i:03}"), &format!("value-{i}")).await;
    }
    let before = revision(&node).await;
    node.shutdown().await;
    drop(node);

    let node = Node::start(config(dir.path())).await.unwrap();
    // No lease is alive, so the new leader has nothing to refresh and writes nothing.
    assert_eq!(revision(&node).await, before);
    for i in 0..200 {
        let kv = get(&node, &format!("key-{i:03}"))
            .await
            .expect("key survives");
        assert_eq!(kv.value, format!("value-{i}").into_bytes());
    }
    // And it keeps accepting writes at the next revision.
    assert_eq!(
        put(&node, "after", "restart").await.revision,
        Revision(before.0 + 1)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_restart_after_snapshots_and_purges_keeps_every_key_and_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        snapshot_logs_since_last: 50,
        wal_segment_bytes_max: 2048,
        ..config(dir.path())
    };
    let node = Node::start(cfg.clone()).await.unwrap();
    // Five rounds over 200 keys: the log grows to several times the state, so snapshots are due
    // by bytes as well as by entries however the ticker's passes fall between the puts.
    for round in 0..5 {
        for i in 0..200 {
            put(&node, &format!("key-{i:03}"), &format!("value-{i}-{round}")).await;
        }
    }
    let before = revision(&node).await;

    // Snapshots are built in the background; wait for the purge that follows them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_segment_lsn(&dir.path().join("wal")) == Some(0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_lsn = first_segment_lsn(&dir.path().join("wal")).expect("the wal has a segment");
    assert!(
        first_lsn > 0,
        "segments below the snapshot were purged (first lsn {first_lsn})"
    );
    // A snapshot may be in the middle of replacing the previous one (renamed in, the old one
    // not yet deleted): poll until it is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    let snapshots = loop {
        let snapshots = snapshot_files(&dir.path().join("snapshot"));
        if snapshots.len() == 1 || Instant::now() >= deadline {
            break snapshots;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        snapshots.len(),
        1,
        "exactly the newest snapshot is kept: {snapshots:?}"
    );
    node.shutdown().await;
    drop(node);

    let node = Node::start(cfg).await.unwrap();
    assert_eq!(revision(&node).await, before);
    for i in 0..200 {
        let kv = get(&node, &format!("key-{i:03}"))
            .await
            .expect("key survives");
        assert_eq!(kv.value, format!("value-{i}-4").into_bytes());
    }
    assert_eq!(
        put(&node, "after", "restart").await.revision,
        Revision(before.0 + 1)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_restart_that_lost_the_committed_marker_still_serves_every_acknowledged_write() {
    // As after a crash before the background writer saved the committed log id: the log is
    // durable, the marker is not. The new term's election re-commits the whole log.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    for i in 0..50 {
        put(&node, &format!("key-{i:02}"), "v").await;
    }
    let before = revision(&node).await;
    node.shutdown().await;
    drop(node);
    std::fs::remove_file(dir.path().join("wal").join("raft-committed")).unwrap();

    let node = Node::start(config(dir.path())).await.unwrap();
    assert_eq!(
        node.read(false, |s| s.revision()).await.unwrap(),
        before,
        "caught up before start returned"
    );
    assert!(get(&node, "key-49").await.is_some());
    node.shutdown().await;
}

/// The lsn of the oldest WAL segment, from the segment file names (digits, then a suffix).
fn first_segment_lsn(wal_dir: &Path) -> Option<u64> {
    std::fs::read_dir(wal_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty() && digits.len() < name.len()).then(|| digits.parse().unwrap())
        })
        .min()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

#[tokio::test]
async fn a_key_on_a_lease_is_deleted_by_the_ticker_once_the_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    // Before the grant: the leader stamps the lease after this, so it cannot expire before
    // `started` plus its ttl.
    let started = Instant::now();
    let granted = node
        .propose(Command::Lease(LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 1_500,
        })))
        .await
        .unwrap();
    let Ok(Output::Lease(LeaseOutput::Granted(info))) = granted.result else {
        panic!("lease granted: {:?}", granted.result);
    };
    put_with_lease(&node, "ephemeral", "x", Some(info.id)).await;
    put(&node, "durable", "y").await;
    assert!(get(&node, "ephemeral").await.is_some());

    while get(&node, "ephemeral").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the key outlived its lease by seconds"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_450),
        "the key went before its lease could expire"
    );
    assert!(
        get(&node, "durable").await.is_some(),
        "a key without a lease stays"
    );
    assert!(node.read(true, |s| s.leases().is_empty()).await.unwrap());
    node.shutdown().await;
}

#[tokio::test]
async fn an_idle_node_does_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    put(&node, "a", "1").await;
    let before = node.status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = node.status();
    assert_eq!(after.last_log_index, before.last_log_index);
    assert_eq!(after.wal_fsyncs, before.wal_fsyncs);
    node.shutdown().await;
}

#[tokio::test]
async fn a_lease_survives_a_restart_and_the_new_leader_refreshes_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let granted = node
        .propose(Command::Lease(LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 60_000,
        })))
        .await
        .unwrap();
    let Ok(Output::Lease(LeaseOutput::Granted(info))) = granted.result else {
        panic!("granted")
    };
    put_with_lease(&node, "held", "x", Some(info.id)).await;
    let before = revision(&node).await;
    node.shutdown().await;
    drop(node);

    let node = Node::start(config(dir.path())).await.unwrap();
    assert!(get(&node, "held").await.is_some());
    // The one write of the new leader is its Refresh, which keeps the deadline at least as late.
    assert_eq!(revision(&node).await, Revision(before.0 + 1));
    let deadline = node
        .read(true, move |s| {
            s.leases().info(info.id, s.clock()).map(|i| i.deadline)
        })
        .await
        .unwrap();
    assert!(deadline >= Some(info.deadline));
    node.shutdown().await;
}

#[tokio::test]
async fn a_backup_restores_into_a_new_node_that_keeps_serving_and_restarting() {
    let source_dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(source_dir.path())).await.unwrap();
    for i in 0..50 {
        put(&node, &format!("key-{i:02}"), &format!("value-{i}")).await;
    }
    let (bytes, at) = node.backup().await.unwrap();
    assert_eq!(at, revision(&node).await);
    // A write after the backup is not in it.
    put(&node, "later", "x").await;
    node.shutdown().await;
    drop(node);

    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("plinth.backup");
    std::fs::write(&file, &bytes).unwrap();
    let info = plinth_node::inspect_backup(&file).unwrap();
    assert_eq!((info.revision, info.keys), (at, 50));

    // Only into an empty directory.
    let refused = plinth_node::stage_restore(&file, source_dir.path()).unwrap_err();
    assert!(refused.to_string().contains("not empty"), "{refused}");
    let restored_dir = scratch.path().join("restored");
    plinth_node::stage_restore(&file, &restored_dir).unwrap();

    let node = Node::start(config(&restored_dir)).await.unwrap();
    assert_eq!(revision(&node).await, at);
    assert_eq!(get(&node, "key-07").await.unwrap().value, b"value-7");
    assert!(get(&node, "later").await.is_none());
    assert_eq!(
        put(&node, "after", "restore").await.revision,
        Revision(at.0 + 1)
    );
    node.shutdown().await;
    drop(node);

    // The staged file was consumed; a restart recovers from the snapshot and the log after it.
    assert!(!restored_dir.join("RESTORE").exists());
    let node = Node::start(config(&restored_dir)).await.unwrap();
    assert_eq!(revision(&node).await, Revision(at.0 + 1));
    assert!(get(&node, "after").await.is_some());
    node.shutdown().await;

    // A damaged file is refused with the reason.
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();
    let err = plinth_node::inspect_backup(&file).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_proposals_share_fsyncs() {
    const TASKS: u64 = 64;
    const PUTS_PER_TASK: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let fsyncs_before = node.wal_fsync_count();
    let started = Instant::now();

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PUTS_PER_TASK {
                let applied = node
                    .propose(Command::Kv(KvCommand::Put(kv::Put {
                        key: format!("t{t:02}/k{i:02}").into_bytes(),
                        value: vec![b'x'; 100],
                        lease: None,
                    })))
                    .await
                    .expect("put");
                assert!(matches!(
                    applied.result,
                    Ok(Output::Kv(KvOutput::Put { .. }))
                ));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let writes = TASKS * PUTS_PER_TASK;
    let fsyncs = node.wal_fsync_count() - fsyncs_before;
    let per_write = fsyncs as f64 / writes as f64;
    println!(
        "group commit: {writes} committed writes, {fsyncs} wal fsyncs, {per_write:.3} fsyncs per write, \
         {:.0} writes/s",
        writes as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        node.read(true, |s| s.kv().len()).await.unwrap() as u64,
        writes
    );
    assert!(
        per_write < 0.5,
        "{fsyncs} fsyncs for {writes} writes: group commit is not sharing fsyncs"
    );
    node.shutdown().await;
}

/// The server runs these futures on a multi-threaded runtime (tonic handlers), so they must be
/// `Send`; this only has to compile.
#[allow(dead_code, clippy::let_underscore_future)]
async fn the_node_api_futures_are_send(node: Node, mut watcher: plinth_node::Watcher) {
    fn send<T: Send>(_: T) {}
    send(Node::start(NodeConfig::default()));
    send(node.propose(Command::Tick));
    send(node.read(true, |s| s.revision()));
    send(node.watch(plinth_core::kv::KeySpan::Prefix(Vec::new()), Revision(0)));
    send(watcher.next());
    send(node.shutdown());
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Node>();
}
