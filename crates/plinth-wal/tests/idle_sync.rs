//! IdleSync: a runtime thread about to go idle serves the flush queue itself; one that stays
//! busy wakes the flusher after a bound; callbacks served there may still sync.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{payload, synced};
use plinth_wal::{IdleSync, Wal};

/// What a callback saw: the thread it ran on and the flush result.
type Seen = (thread::ThreadId, bool);

fn queue_one(wal: &Wal, lsn: u64) -> mpsc::Receiver<Seen> {
    wal.append(&[(lsn, &payload(lsn, 0, 64))]).expect("append");
    let (tx, rx) = mpsc::sync_channel(1);
    wal.flush_then(Box::new(move |result| {
        tx.send((thread::current().id(), result.is_ok()))
            .expect("send");
    }));
    rx
}

/// A log on a temporary directory, added to an `IdleSync` whose first idle turn on this thread
/// has passed (with `defer`: this thread's callbacks now wait for it).
fn log_served_when_idle(defer: bool) -> (tempfile::TempDir, Wal, IdleSync) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(1 << 20)).expect("open");
    let idle = IdleSync::default();
    idle.add(&wal);
    idle.on_idle(defer);
    (dir, wal, idle)
}

#[test]
fn a_thread_going_idle_syncs_and_calls_back_itself_without_waking_the_flusher() {
    let (_dir, wal, idle) = log_served_when_idle(true);
    for lsn in 1..=20 {
        let fsyncs = wal.fsync_count();
        let rx = queue_one(&wal, lsn);
        idle.on_idle(true);
        let (on, ok) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the callback ran");
        assert!(ok, "the flush of lsn {lsn} failed");
        assert_eq!(on, thread::current().id(), "lsn {lsn} was served elsewhere");
        assert_eq!(wal.fsync_count(), fsyncs + 1, "one fdatasync for lsn {lsn}");
    }
}

#[test]
fn a_thread_that_stays_busy_wakes_the_flusher_once_the_bound_has_passed() {
    let (_dir, wal, _idle) = log_served_when_idle(true);
    let rx = queue_one(&wal, 1);
    // Busy, but past the bound: the next task's end pays the flusher its wake-up.
    thread::sleep(Duration::from_millis(2));
    IdleSync::after_task();
    let (on, ok) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the flusher served the callback");
    assert!(ok);
    assert_ne!(on, thread::current().id());
}

#[test]
fn a_thread_that_does_not_defer_leaves_the_queue_to_the_flusher() {
    let (_dir, wal, _idle) = log_served_when_idle(false);
    let rx = queue_one(&wal, 1);
    let (_, ok) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the flusher served the callback without any idle turn");
    assert!(ok);
}

#[test]
fn a_callback_served_on_an_idle_thread_may_sync_and_drop_the_last_handle() {
    let (dir, wal, idle) = log_served_when_idle(true);
    wal.append(&[(1, &payload(1, 0, 64))]).expect("append");
    let (tx, rx) = mpsc::sync_channel(1);
    let inner = wal.clone();
    wal.flush_then(Box::new(move |result| {
        result.expect("flushed");
        inner
            .append(&[(2, &payload(2, 0, 64))])
            .expect("append from the callback");
        // Waiting for a sync from inside a callback syncs directly.
        inner.sync().expect("sync from the callback");
        // The last handle goes away here: the flusher is stopped, not joined.
        drop(inner);
        tx.send(()).expect("send");
    }));
    drop(wal);
    idle.on_idle(true);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the callback finished");
    let wal = Wal::open(dir.path(), synced(1 << 20)).expect("reopen");
    assert_eq!(wal.last_lsn(), Some(2));
}
