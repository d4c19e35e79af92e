//! Watches: history then live, no gap, no duplicate; compaction; span filters; progress notices.

use plinth_core::kv;
use std::path::Path;
use std::time::{Duration, Instant};

use plinth_core::Command;
use plinth_core::Revision;
use plinth_core::kv::{Event, EventKind, KeySpan, KvCommand};
use plinth_node::{Node, NodeConfig, WatchBatch, WatchError, Watcher};

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        ..NodeConfig::default()
    }
}

async fn put(node: &Node, key: &str, value: &str) -> Revision {
    let applied = node
        .propose(Command::Kv(KvCommand::Put(kv::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        })))
        .await
        .unwrap();
    assert!(applied.result.is_ok());
    applied.revision
}

async fn next(watcher: &mut Watcher) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("a batch within 5 s")
        .unwrap()
}

/// Collects events until `count` have arrived.
async fn collect(watcher: &mut Watcher, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let batch = next(watcher).await;
        assert!(batch.events.iter().all(|e| e.revision() <= batch.revision));
        events.extend(batch.events);
    }
    assert_eq!(events.len(), count, "no more events than expected");
    events
}

fn keys(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.kv.key.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_watch_from_zero_replays_history_in_order_then_follows_live_puts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    for i in 0..30 {
        put(&node, &format!("k{i:02}"), "old").await;
    }
    let mut watcher = node
        .watch(KeySpan::Prefix(Vec::new()), Revision(0))
        .await
        .unwrap();
    let history = collect(&mut watcher, 30).await;
    assert_eq!(
        keys(&history),
        (0..30).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
    );

    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 30..80 {
                put(&node, &format!("k{i:02}"), "new").await;
            }
        })
    };
    let live = collect(&mut watcher, 50).await;
    writer.await.unwrap();
    assert_eq!(
        keys(&live),
        (30..80).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
    );

    let all: Vec<Revision> = history.iter().chain(&live).map(Event::revision).collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "revisions strictly increase: {all:?}"
    );
    assert_eq!(all.first(), Some(&Revision(1)));
    assert_eq!(
        all.last(),
        Some(&Revision(80)),
        "no gap: one event per put, revisions 1..=80"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_watch_from_a_revision_gets_only_later_events_including_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    put(&node, "a", "1").await;
    let after = put(&node, "b", "1").await;
    let mut watcher = node
        .watch(KeySpan::Prefix(Vec::new()), after)
        .await
        .unwrap();
    put(&node, "a", "2").await;
    node.propose(Command::Kv(KvCommand::Delete(kv::Delete {
        span: KeySpan::Key(b"b".to_vec()),
    })))
    .await
    .unwrap();
    let events = collect(&mut watcher, 2).await;
    assert_eq!(keys(&events), ["a", "b"]);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.value, b"2");
    assert_eq!(events[1].kind, EventKind::Delete);
    node.shutdown().await;
}

#[tokio::test]
async fn a_watch_from_before_a_compaction_is_told_compacted_with_the_revision_to_resume_from() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    for i in 0..10 {
        put(&node, &format!("k{i}"), "v").await;
    }
    node.propose(Command::Kv(KvCommand::Compact(kv::Compact {
        revision: Revision(6),
    })))
    .await
    .unwrap();

    let mut old = node
        .watch(KeySpan::Prefix(Vec::new()), Revision(3))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), old.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        WatchError::Compacted {
            compacted_revision: Revision(6)
        }
    );

    // From the compacted revision itself, history is complete.
    let mut resumed = node
        .watch(KeySpan::Prefix(Vec::new()), Revision(6))
        .await
        .unwrap();
    let events = collect(&mut resumed, 4).await;
    assert_eq!(keys(&events), ["k6", "k7", "k8", "k9"]);
    node.shutdown().await;
}

#[tokio::test]
async fn a_prefix_watch_sees_only_keys_under_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    put(&node, "app/1", "v").await;
    put(&node, "other/1", "v").await;
    let mut watcher = node
        .watch(KeySpan::Prefix(b"app/".to_vec()), Revision(0))
        .await
        .unwrap();
    put(&node, "other/2", "v").await;
    put(&node, "app/2", "v").await;
    put(&node, "apple", "v").await;
    put(&node, "app/3", "v").await;
    let events = collect(&mut watcher, 3).await;
    assert_eq!(keys(&events), ["app/1", "app/2", "app/3"]);
    node.shutdown().await;
}

/// A node whose idle watches get a progress notice every 200 ms.
async fn with_progress_every_200ms(dir: &Path) -> Node {
    let cfg = NodeConfig {
        watch_progress_interval: Duration::from_millis(200),
        ..config(dir)
    };
    Node::start(cfg).await.unwrap()
}

#[tokio::test]
async fn an_idle_watch_gets_a_progress_notice_with_the_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = with_progress_every_200ms(dir.path()).await;
    put(&node, "a", "1").await;
    let current = put(&node, "unwatched/b", "1").await;
    let mut watcher = node
        .watch(KeySpan::Key(b"a".to_vec()), Revision(0))
        .await
        .unwrap();
    let first = next(&mut watcher).await;
    assert_eq!(keys(&first.events), ["a"]);
    let idle = next(&mut watcher).await;
    assert!(idle.events.is_empty());
    assert_eq!(idle.revision, current);
    node.shutdown().await;
}

/// A watch from a revision the store has not reached hears the store's revision in its notices,
/// never the future one, and then only the events after the revision it asked for.
#[tokio::test]
async fn a_watch_from_a_future_revision_is_told_the_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = with_progress_every_200ms(dir.path()).await;
    let current = put(&node, "a", "1").await;
    let from = Revision(current.0 + 2);
    let mut watcher = node.watch(KeySpan::Prefix(Vec::new()), from).await.unwrap();
    let idle = next(&mut watcher).await;
    assert!(idle.events.is_empty(), "{idle:?}");
    assert_eq!(
        idle.revision, current,
        "the notice carries the store's revision"
    );
    put(&node, "b", "1").await;
    put(&node, "c", "1").await;
    let third = put(&node, "d", "1").await;
    let batch = loop {
        let batch = next(&mut watcher).await;
        if !batch.events.is_empty() {
            break batch;
        }
        assert!(batch.revision <= third, "{batch:?}");
    };
    assert_eq!(keys(&batch.events), ["d"]);
    node.shutdown().await;
}

/// Events that go to other keys keep arriving at the watcher but are not its batches: its
/// progress notice still comes once the interval has passed since its last batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_span_sees_no_events_gets_its_notice_while_other_keys_change() {
    let dir = tempfile::tempdir().unwrap();
    let node = with_progress_every_200ms(dir.path()).await;
    put(&node, "a", "1").await;
    let mut watcher = node
        .watch(KeySpan::Key(b"a".to_vec()), Revision(0))
        .await
        .unwrap();
    assert_eq!(keys(&next(&mut watcher).await.events), ["a"]);
    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut last = Revision(0);
            for i in 0..40 {
                last = put(&node, &format!("unwatched/{i}"), "v").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            last
        })
    };
    let before = Instant::now();
    let notice = next(&mut watcher).await;
    // The writer is still at it (40 puts 20 ms apart): the events to other keys did not put the
    // notice off.
    assert!(!writer.is_finished(), "the notice waited for the writer");
    assert!(notice.events.is_empty(), "{notice:?}");
    assert!(notice.revision > Revision(1), "{notice:?}");
    assert!(
        before.elapsed() >= Duration::from_millis(150),
        "the notice came {:?} after the last batch",
        before.elapsed()
    );
    let last = writer.await.unwrap();
    // And the next ones carry the revision on: every event up to it went elsewhere.
    loop {
        let notice = next(&mut watcher).await;
        assert!(notice.events.is_empty(), "{notice:?}");
        if notice.revision >= last {
            break;
        }
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_watcher_ends_when_the_node_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    let mut watcher = node
        .watch(KeySpan::Prefix(Vec::new()), Revision(0))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { watcher.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    node.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.unwrap_err(), WatchError::ShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_falls_behind_the_broadcast_catches_up_from_history_without_gap_or_duplicate()
 {
    const TASKS: usize = 64;
    const PUTS_PER_TASK: usize = 80; // 5120 events: more than the broadcast holds
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        wal_sync: false,
        ..config(dir.path())
    })
    .await
    .unwrap();
    put(&node, "first", "v").await;
    let mut watcher = node
        .watch(KeySpan::Prefix(Vec::new()), Revision(0))
        .await
        .unwrap();
    assert_eq!(keys(&next(&mut watcher).await.events), ["first"]);
    // Nothing more to read: the watcher is now following the broadcast.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), watcher.next())
            .await
            .is_err()
    );

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PUTS_PER_TASK {
                put(&node, &format!("burst/{t:02}/{i:02}"), "v").await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let burst = collect(&mut watcher, TASKS * PUTS_PER_TASK).await;
    let revisions: Vec<Revision> = burst.iter().map(Event::revision).collect();
    assert_eq!(
        revisions,
        (2..2 + (TASKS * PUTS_PER_TASK) as u64)
            .map(Revision)
            .collect::<Vec<_>>()
    );

    // One revision with more events than a history chunk: a delete of the whole burst.
    node.propose(Command::Kv(KvCommand::Delete(kv::Delete {
        span: KeySpan::Prefix(b"burst/".to_vec()),
    })))
    .await
    .unwrap();
    let deletes = collect(&mut watcher, TASKS * PUTS_PER_TASK).await;
    assert!(deletes.iter().all(|e| e.kind == EventKind::Delete));

    // A new watcher reads all of it from history, chunk by chunk, each event once.
    let mut replay = node
        .watch(KeySpan::Prefix(b"burst/".to_vec()), Revision(0))
        .await
        .unwrap();
    let replayed = collect(&mut replay, 2 * TASKS * PUTS_PER_TASK).await;
    assert_eq!(replayed[..burst.len()], burst[..]);
    assert_eq!(replayed[burst.len()..], deletes[..]);
    node.shutdown().await;
}
