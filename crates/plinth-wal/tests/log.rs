//! Behaviour of an open log: appends, reads, rollover, truncation, purge, files next to it.

mod common;

use std::fs;
use std::sync::mpsc;
use std::time::Duration;

use common::{append_all, expected, payload, segment_files, synced};
use plinth_wal::{PAYLOAD_BYTES_MAX, Wal, WalError, WalOptions, read_file, write_file_atomic};

#[test]
fn the_log_is_send_and_sync_and_cloneable() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Wal>();
}

#[test]
fn default_options_are_64_mib_segments_with_fsync() {
    let opts = WalOptions::default();
    assert_eq!(opts.segment_bytes_max, 64 * 1024 * 1024);
    assert!(opts.sync);
}

#[test]
fn appended_records_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert_eq!(wal.read(0, 100).expect("read empty"), vec![]);

    // One batch of several records, then single ones, with varied sizes.
    let batch: Vec<Vec<u8>> = (1..=10)
        .map(|lsn| payload(lsn, 0, lsn as usize * 7))
        .collect();
    let records: Vec<(u64, &[u8])> = (1..=10).zip(batch.iter().map(Vec::as_slice)).collect();
    wal.append(&records).expect("append batch");
    append_all(&wal, 11..=20, 0, 0);
    wal.sync().expect("sync");

    let mut all = expected(1..=10, 0, 0);
    for (lsn, bytes) in &mut all {
        *bytes = payload(*lsn, 0, *lsn as usize * 7);
    }
    all.extend(expected(11..=20, 0, 0));
    assert_eq!(wal.read(1, 21).expect("read all"), all);
    assert_eq!(wal.read(5, 8).expect("read middle"), all[4..7].to_vec());
    assert_eq!(wal.read(0, 1000).expect("read wide"), all);
    assert_eq!(wal.read(21, 30).expect("read past end"), vec![]);
    assert_eq!(wal.read(8, 8).expect("read empty range"), vec![]);
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(1), Some(20)));
    let size_bytes = wal.size_bytes();
    drop(wal);

    let wal = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(1), Some(20)));
    assert_eq!(wal.read(1, 21).expect("read after reopen"), all);
    assert_eq!(wal.size_bytes(), size_bytes);
    append_all(&wal, 21..=21, 0, 3);
    assert_eq!(wal.last_lsn(), Some(21));
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a/b/wal");
    let wal = Wal::open(&nested, WalOptions::default()).expect("open");
    append_all(&wal, 1..=1, 0, 4);
    assert!(nested.is_dir());
    assert_eq!(segment_files(&nested).len(), 1);
}

#[test]
fn the_first_append_on_an_empty_log_sets_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    append_all(&wal, 1000..=1002, 0, 8);
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(1000), Some(1002)));
    let names = segment_files(dir.path());
    assert!(names[0].ends_with("00000000000000001000.wal"), "{names:?}");
}

#[test]
fn an_lsn_gap_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    append_all(&wal, 1..=3, 0, 8);
    let size_bytes = wal.size_bytes();

    let err = wal
        .append(&[(5, b"x".as_slice())])
        .expect_err("gap after the end");
    assert!(
        matches!(
            err,
            WalError::Gap {
                expected: 4,
                got: 5
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "append expected lsn 4 but got lsn 5; records must have consecutive lsns"
    );

    let err = wal
        .append(&[(4, b"a".as_slice()), (6, b"b".as_slice())])
        .expect_err("gap inside a batch");
    assert!(
        matches!(
            err,
            WalError::Gap {
                expected: 5,
                got: 6
            }
        ),
        "{err}"
    );
    let err = wal
        .append(&[(3, b"a".as_slice())])
        .expect_err("repeated lsn");
    assert!(
        matches!(
            err,
            WalError::Gap {
                expected: 4,
                got: 3
            }
        ),
        "{err}"
    );

    assert_eq!(wal.last_lsn(), Some(3));
    assert_eq!(wal.size_bytes(), size_bytes);
    wal.append(&[]).expect("an empty batch is a no-op");
}

#[test]
fn a_payload_over_the_limit_is_refused_with_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let huge = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    let err = wal.append(&[(1, &huge)]).expect_err("too large");
    assert!(
        matches!(err, WalError::PayloadTooLarge { lsn: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "record at lsn 1 has a payload of {} bytes, over the limit of {} bytes",
            PAYLOAD_BYTES_MAX + 1,
            PAYLOAD_BYTES_MAX
        )
    );
    assert_eq!(wal.last_lsn(), None);
}

#[test]
fn a_small_segment_limit_rolls_over_and_reads_span_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 50-byte payloads take 66 bytes, so three records fit in 256 bytes.
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=20, 0, 50);
    assert_eq!(wal.segment_count(), 7);
    assert_eq!(wal.size_bytes(), 20 * 66);
    let names = segment_files(dir.path());
    let firsts: Vec<String> = names
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(firsts[0], "00000000000000000001.wal");
    assert_eq!(firsts[1], "00000000000000000004.wal");
    assert_eq!(firsts[6], "00000000000000000019.wal");
    for name in &names {
        assert!(fs::metadata(name).expect("stat").len() <= 256);
    }

    let all = expected(1..=20, 0, 50);
    assert_eq!(wal.read(1, 21).expect("read all"), all);
    assert_eq!(wal.read(2, 12).expect("read across"), all[1..11].to_vec());
    drop(wal);

    let wal = Wal::open(dir.path(), synced(256)).expect("reopen");
    assert_eq!(wal.segment_count(), 7);
    assert_eq!(wal.read(1, 21).expect("read after reopen"), all);
    append_all(&wal, 21..=22, 0, 50);
    assert_eq!(wal.segment_count(), 8);
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(64)).expect("open");
    append_all(&wal, 1..=1, 0, 10);
    append_all(&wal, 2..=2, 0, 500);
    append_all(&wal, 3..=3, 0, 10);
    assert_eq!(wal.segment_count(), 3);
    let mut all = expected(1..=3, 0, 10);
    all[1].1 = payload(2, 0, 500);
    assert_eq!(wal.read(1, 4).expect("read"), all);
}

#[test]
fn purge_deletes_whole_old_segments_and_keeps_the_rest_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=30, 0, 50);
    assert_eq!(wal.segment_count(), 10);

    // Segments hold 1-3, 4-6, 7-9, 10-12, ...: lsn 10 keeps its segment.
    wal.purge_upto(10).expect("purge");
    assert_eq!(wal.segment_count(), 7);
    assert_eq!(wal.first_lsn(), Some(10));
    assert_eq!(wal.read(1, 31).expect("read"), expected(10..=30, 0, 50));
    assert_eq!(segment_files(dir.path()).len(), 7);

    wal.purge_upto(5)
        .expect("purging behind the start is a no-op");
    assert_eq!(wal.first_lsn(), Some(10));
    drop(wal);

    let wal = Wal::open(dir.path(), synced(256)).expect("reopen");
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(10), Some(30)));
    assert_eq!(
        wal.read(1, 31).expect("read after reopen"),
        expected(10..=30, 0, 50)
    );

    // Never the active segment, even when everything is covered.
    wal.purge_upto(1_000).expect("purge all");
    assert_eq!(wal.segment_count(), 1);
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(28), Some(30)));
    append_all(&wal, 31..=33, 0, 50);
    assert_eq!(wal.read(0, 100).expect("read"), expected(28..=33, 0, 50));
}

#[test]
fn truncate_then_reappend_replaces_the_tail_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=30, 0, 50);

    // Mid-segment: 14 is the middle record of the 13-15 segment.
    wal.truncate_from(14).expect("truncate");
    assert_eq!(wal.last_lsn(), Some(13));
    assert_eq!(wal.segment_count(), 5);
    assert_eq!(wal.read(10, 40).expect("read"), expected(10..=13, 0, 50));
    append_all(&wal, 14..=25, 7, 50);
    drop(wal);

    let wal = Wal::open(dir.path(), synced(256)).expect("reopen");
    let mut want = expected(1..=13, 0, 50);
    want.extend(expected(14..=25, 7, 50));
    assert_eq!(wal.read(1, 100).expect("read after reopen"), want);

    // At a segment boundary: 19 starts a segment, which goes entirely.
    let segments = wal.segment_count();
    wal.truncate_from(19).expect("truncate at boundary");
    assert_eq!(wal.segment_count(), segments - 3);
    assert_eq!(wal.last_lsn(), Some(18));
    append_all(&wal, 19..=19, 9, 50);
    assert_eq!(wal.read(18, 20).expect("read")[1], (19, payload(19, 9, 50)));

    wal.truncate_from(100)
        .expect("truncating past the end is a no-op");
    assert_eq!(wal.last_lsn(), Some(19));
}

#[test]
fn truncating_everything_leaves_an_empty_log_that_restarts_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 5..=15, 0, 50);
    wal.truncate_from(5).expect("truncate all");
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert_eq!((wal.segment_count(), wal.size_bytes()), (0, 0));
    assert!(segment_files(dir.path()).is_empty());
    drop(wal);

    let wal = Wal::open(dir.path(), synced(256)).expect("reopen");
    assert_eq!(wal.last_lsn(), None);
    append_all(&wal, 40..=41, 1, 5);
    assert_eq!(wal.read(0, 100).expect("read"), expected(40..=41, 1, 5));
}

#[test]
fn sync_makes_appends_durable_with_one_fsync_and_skips_when_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    append_all(&wal, 1..=10, 0, 8);
    assert_eq!(wal.fsync_count(), 0);
    wal.sync().expect("sync");
    assert_eq!(wal.fsync_count(), 1);
    wal.sync().expect("sync with nothing new");
    assert_eq!(wal.fsync_count(), 1);
}

#[test]
fn dropping_the_last_clone_still_runs_pending_callbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let (tx, rx) = mpsc::channel();
    for lsn in 1..=100 {
        append_all(&wal, lsn..=lsn, 0, 8);
        let tx = tx.clone();
        wal.flush_then(Box::new(move |result| {
            tx.send(result.is_ok()).expect("send");
        }));
    }
    drop(tx);
    drop(wal);
    let results: Vec<bool> = rx.iter().collect();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|ok| *ok));
}

#[test]
fn a_callback_may_drop_the_last_clone_or_sync_without_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    append_all(&wal, 1..=1, 0, 8);
    let inner = wal.clone();
    let (tx, rx) = mpsc::channel();
    wal.flush_then(Box::new(move |first| {
        append_all(&inner, 2..=2, 0, 8);
        let second = inner.sync();
        drop(inner);
        tx.send((first.is_ok(), second.is_ok())).expect("send");
    }));
    drop(wal);
    let outcome = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("callback ran");
    assert_eq!(outcome, (true, true));
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(wal.last_lsn(), Some(2));
}

#[test]
fn a_panicking_callback_does_not_stop_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    append_all(&wal, 1..=1, 0, 8);
    wal.flush_then(Box::new(|_| panic!("callback failure under test")));
    append_all(&wal, 2..=2, 0, 8);
    wal.sync().expect("sync after a panicking callback");
}

#[test]
fn files_written_atomically_read_back_and_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vote");
    assert_eq!(read_file(&path).expect("read missing"), None);

    write_file_atomic(&path, b"term 1").expect("write");
    assert_eq!(read_file(&path).expect("read"), Some(b"term 1".to_vec()));

    write_file_atomic(&path, b"term 22, voted for 3").expect("overwrite");
    assert_eq!(
        read_file(&path).expect("read"),
        Some(b"term 22, voted for 3".to_vec())
    );
    write_file_atomic(&path, b"").expect("overwrite with nothing");
    assert_eq!(read_file(&path).expect("read"), Some(Vec::new()));

    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["vote"], "no temporary file is left behind");
}

#[test]
fn files_next_to_the_log_are_not_mistaken_for_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file_atomic(&dir.path().join("vote"), b"v").expect("write vote");
    fs::write(dir.path().join("00000000000000000009.wal.tmp"), b"junk").expect("write junk");
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
    assert_eq!(wal.segment_count(), 0);
    append_all(&wal, 1..=2, 0, 8);
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(wal.last_lsn(), Some(2));
}
