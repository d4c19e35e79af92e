//! Group commit: concurrent appenders share fsyncs, and no callback runs before its records are durable.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use common::payload;
use plinth_wal::{Lsn, Wal, WalOptions};

const THREADS: usize = 64;
const APPENDS_PER_THREAD: usize = 50;

#[test]
fn sixty_four_appending_threads_share_fsyncs_and_every_callback_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    // Raft hands out lsns in order; the lock stands in for that.
    let next_lsn = Arc::new(Mutex::new(1 as Lsn));

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let wal = wal.clone();
            let next_lsn = Arc::clone(&next_lsn);
            thread::spawn(move || {
                for _ in 0..APPENDS_PER_THREAD {
                    let fsyncs_before = wal.fsync_count();
                    {
                        let mut next = next_lsn.lock().expect("lsn lock");
                        wal.append(&[(*next, &payload(*next, 0, 100))])
                            .expect("append");
                        *next += 1;
                    }
                    let (tx, rx) = mpsc::sync_channel(1);
                    wal.flush_then(Box::new(move |result| {
                        tx.send(result).expect("send");
                    }));
                    rx.recv().expect("callback ran").expect("flush succeeded");
                    // The sync covering this record started after the append,
                    // and the count moves before callbacks run.
                    assert!(wal.fsync_count() > fsyncs_before);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }

    let records = (THREADS * APPENDS_PER_THREAD) as u64;
    let fsyncs = wal.fsync_count();
    println!(
        "group commit: {records} records, {fsyncs} fsyncs, {:.3} fsyncs per record, {:.1} records per fsync",
        fsyncs as f64 / records as f64,
        records as f64 / fsyncs as f64
    );
    assert_eq!(wal.last_lsn(), Some(records));
    assert!(fsyncs >= 1);
    assert!(
        fsyncs < records / 4,
        "{fsyncs} fsyncs for {records} records"
    );
}
