//! Recovery at open: torn tails are cut, every other kind of damage is refused.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{HEADER_BYTES, append_all, expected, segment_files, synced};
use plinth_wal::{Wal, WalError, WalOptions};

const PAYLOAD_BYTES: usize = 40;
const RECORD_BYTES: u64 = HEADER_BYTES + PAYLOAD_BYTES as u64;

/// Default options but with segment files exactly as long as their records, so these tests can
/// lay out and damage files byte by byte. Preallocated segments have tests of their own below.
fn exact() -> WalOptions {
    WalOptions {
        preallocate: false,
        ..WalOptions::default()
    }
}

/// A synced single-segment log of records 1..=n; returns its only segment file.
fn write_log(dir: &Path, n: u64) -> PathBuf {
    let wal = Wal::open(dir, exact()).expect("open");
    append_all(&wal, 1..=n, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// A fresh directory holding `bytes` as the segment file `name`.
fn log_with_segment(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write segment");
    (dir, path)
}

fn open_err(dir: &Path) -> WalError {
    Wal::open(dir, exact()).expect_err("open must refuse the log")
}

fn assert_corrupt_at(err: &WalError, file: &Path, at: u64) {
    match err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, file, "{err}");
            assert_eq!(*offset, at, "{err}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset_and_the_log_continues() {
    const N: u64 = 5;
    let source = tempfile::tempdir().expect("tempdir");
    let segment = write_log(source.path(), N);
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let whole = fs::read(&segment).expect("read segment");
    let last_start = (N - 1) * RECORD_BYTES;
    assert_eq!(whole.len() as u64, N * RECORD_BYTES);

    for cut in last_start..whole.len() as u64 {
        let (dir, path) = log_with_segment(&name, &whole[..cut as usize]);
        let wal =
            Wal::open(dir.path(), exact()).unwrap_or_else(|e| panic!("open with {cut} bytes: {e}"));
        assert_eq!(wal.last_lsn(), Some(N - 1), "cut at {cut}");
        assert_eq!(
            wal.read(1, N + 1).expect("read"),
            expected(1..N, 0, PAYLOAD_BYTES),
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            last_start,
            "cut at {cut}"
        );

        append_all(&wal, N..=N, 9, PAYLOAD_BYTES);
        wal.sync().expect("sync");
        drop(wal);
        let wal = Wal::open(dir.path(), exact()).expect("reopen");
        let mut want = expected(1..N, 0, PAYLOAD_BYTES);
        want.extend(expected(N..=N, 9, PAYLOAD_BYTES));
        assert_eq!(wal.read(1, N + 1).expect("read"), want, "cut at {cut}");
    }
}

#[test]
fn a_checksum_failure_in_the_very_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), 5);
    let mut bytes = fs::read(&segment).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    fs::write(&segment, &bytes).expect("write");

    let wal = Wal::open(dir.path(), exact()).expect("open");
    assert_eq!(wal.last_lsn(), Some(4));
}

#[test]
fn a_zero_filled_tail_is_room_not_damage() {
    // Filesystems may persist a file's new size before its data, which reads back as zeros
    // after a crash; a preallocated segment has zeros after its last record by design. Nothing
    // was written there: nothing is cut, and the next append lands right after record 5.
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), 5);
    let mut bytes = fs::read(&segment).expect("read");
    bytes.resize(bytes.len() + 3 * RECORD_BYTES as usize, 0);
    fs::write(&segment, &bytes).expect("write");

    let wal = Wal::open(dir.path(), exact()).expect("open");
    assert_eq!(wal.last_lsn(), Some(5));
    assert_eq!(wal.size_bytes(), 5 * RECORD_BYTES);
    append_all(&wal, 6..=7, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    let wal = Wal::open(dir.path(), exact()).expect("reopen");
    assert_eq!(wal.last_lsn(), Some(7));
    assert_eq!(
        wal.read(1, 8).expect("read"),
        expected(1..=7, 0, PAYLOAD_BYTES)
    );
}

#[test]
fn a_preallocated_segment_is_its_full_size_and_reopens_with_the_same_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_bytes_max: 8 * RECORD_BYTES,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    append_all(&wal, 1..=3, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    let files = segment_files(dir.path());
    assert_eq!(
        fs::metadata(&files[0]).expect("stat").len(),
        8 * RECORD_BYTES
    );
    assert_eq!(wal.size_bytes(), 3 * RECORD_BYTES);
    drop(wal);

    let wal = Wal::open(dir.path(), opts.clone()).expect("reopen");
    assert_eq!(wal.last_lsn(), Some(3));
    // Past the segment's size: the full one is cut to its records, the new one preallocated.
    append_all(&wal, 4..=12, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    assert_eq!(
        fs::metadata(&files[0]).expect("stat").len(),
        8 * RECORD_BYTES
    );
    assert_eq!(
        fs::metadata(&files[1]).expect("stat").len(),
        8 * RECORD_BYTES
    );
    drop(wal);
    let wal = Wal::open(dir.path(), opts).expect("reopen");
    assert_eq!(
        wal.read(1, 13).expect("read"),
        expected(1..=12, 0, PAYLOAD_BYTES)
    );
}

#[test]
fn a_torn_record_in_a_preallocated_segment_is_cut_and_the_room_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_bytes_max: 16 * RECORD_BYTES,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    append_all(&wal, 1..=4, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    // Half of record 4 reached the disk; the rest of the file is the preallocated zeros.
    let segment = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&segment).expect("read");
    let half = (3 * RECORD_BYTES + RECORD_BYTES / 2) as usize;
    bytes[half..].fill(0);
    fs::write(&segment, &bytes).expect("write");

    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    assert_eq!(wal.last_lsn(), Some(3));
    assert_eq!(
        fs::metadata(&segment).expect("stat").len(),
        16 * RECORD_BYTES
    );
    append_all(&wal, 4..=5, 1, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    let wal = Wal::open(dir.path(), opts).expect("reopen");
    let mut want = expected(1..=3, 0, PAYLOAD_BYTES);
    want.extend(expected(4..=5, 1, PAYLOAD_BYTES));
    assert_eq!(wal.read(1, 6).expect("read"), want);
}

#[test]
fn a_torn_first_record_leaves_an_empty_log_that_accepts_any_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), 1);
    let bytes = fs::read(&segment).expect("read");
    fs::write(&segment, &bytes[..7]).expect("write");

    let wal = Wal::open(dir.path(), exact()).expect("open");
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert!(segment_files(dir.path()).is_empty());
    append_all(&wal, 50..=50, 0, 8);
    assert_eq!(wal.first_lsn(), Some(50));
}

#[test]
fn every_flipped_byte_of_a_middle_record_is_refused_as_corruption_at_its_offset() {
    const N: u64 = 5;
    let source = tempfile::tempdir().expect("tempdir");
    let segment = write_log(source.path(), N);
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let whole = fs::read(&segment).expect("read");
    let middle_start = 2 * RECORD_BYTES;

    for at in middle_start..middle_start + RECORD_BYTES {
        let mut bytes = whole.clone();
        bytes[at as usize] ^= 0xFF;
        let (dir, path) = log_with_segment(&name, &bytes);
        let err = open_err(dir.path());
        assert_corrupt_at(&err, &path, middle_start);
        // Refusing must not have modified the evidence.
        assert_eq!(fs::read(&path).expect("read"), bytes, "flip at {at}");
    }
}

#[test]
fn corruption_is_reported_with_file_offset_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), 5);
    let mut bytes = fs::read(&segment).expect("read");
    let middle_start = 2 * RECORD_BYTES as usize;
    bytes[middle_start + HEADER_BYTES as usize + 3] ^= 0x01;
    fs::write(&segment, &bytes).expect("write");

    let err = open_err(dir.path());
    assert_eq!(
        err.to_string(),
        format!(
            "write-ahead log is corrupt in {} at byte {middle_start}: checksum mismatch; \
             refusing to start (move the file aside or restore from a replica)",
            segment.display()
        )
    );
}

#[test]
fn a_torn_end_of_an_earlier_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=9, 0, 50);
    drop(wal);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    let first = fs::read(&files[0]).expect("read");
    fs::write(&files[0], &first[..first.len() - 10]).expect("write");

    let err = open_err(dir.path());
    assert_corrupt_at(&err, &files[0], 2 * 66);
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=9, 0, 50);
    drop(wal);
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).expect("remove");

    let err = open_err(dir.path());
    assert_corrupt_at(&err, &files[2], 0);
    assert!(
        err.to_string()
            .contains("segment starts at lsn 7 but the previous segment ends at lsn 3"),
        "{err}"
    );
}

#[test]
fn a_segment_whose_name_disagrees_with_its_records_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), 3);
    let renamed = dir.path().join("00000000000000000002.wal");
    fs::rename(&segment, &renamed).expect("rename");

    let err = open_err(dir.path());
    assert_corrupt_at(&err, &renamed, 0);
    assert!(
        err.to_string()
            .contains("record has lsn 1 but lsn 2 was expected"),
        "{err}"
    );
}

#[test]
fn an_empty_earlier_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(256)).expect("open");
    append_all(&wal, 1..=6, 0, 50);
    drop(wal);
    let files = segment_files(dir.path());
    fs::write(&files[0], b"").expect("empty the first segment");

    let err = open_err(dir.path());
    assert_corrupt_at(&err, &files[0], 0);
}

#[test]
fn zeros_kept_as_room_are_cut_when_their_segment_is_sealed() {
    // Recovery keeps the zeros after the last record; once the segment is no longer the last,
    // they would read as damage, so rollover cuts them, with or without preallocation.
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_bytes_max: 8 * RECORD_BYTES,
        ..exact()
    };
    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    append_all(&wal, 1..=3, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    let segment = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&segment).expect("read");
    bytes.resize(bytes.len() + 2 * RECORD_BYTES as usize, 0);
    fs::write(&segment, &bytes).expect("write");

    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    append_all(&wal, 4..=12, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(
        fs::metadata(&segment).expect("stat").len(),
        8 * RECORD_BYTES
    );
    let wal = Wal::open(dir.path(), opts).expect("reopen");
    assert_eq!(
        wal.read(1, 13).expect("read"),
        expected(1..=12, 0, PAYLOAD_BYTES)
    );
}

/// Appends keep the next MiB after the records written with zeros. Through many steps of that,
/// a truncation back into a zeroed step and a reopen, the file past the records holds nothing
/// but zeros and every record reads back.
#[test]
fn the_zeros_written_ahead_of_the_records_are_room_through_truncation_and_reopen() {
    const BIG: usize = 3000;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = synced(8 << 20);
    let wal = Wal::open(dir.path(), opts.clone()).expect("open");
    // About 3 MiB: several steps of zeros ahead.
    append_all(&wal, 1..=1000, 0, BIG);
    wal.truncate_from(601).expect("truncate");
    append_all(&wal, 601..=700, 1, BIG);
    wal.sync().expect("sync");
    drop(wal);

    let segment = segment_files(dir.path())[0].clone();
    let bytes = fs::read(&segment).expect("read");
    assert_eq!(bytes.len() as u64, 8 << 20);
    let records = 700 * (HEADER_BYTES as usize + BIG);
    assert!(bytes[records..].iter().all(|b| *b == 0));

    let wal = Wal::open(dir.path(), opts).expect("reopen");
    let mut want = expected(1..=600, 0, BIG);
    want.extend(expected(601..=700, 1, BIG));
    assert_eq!(wal.read(1, 701).expect("read"), want);
    append_all(&wal, 701..=710, 2, BIG);
    assert_eq!(
        wal.read(701, 711).expect("read"),
        expected(701..=710, 2, BIG)
    );
}

/// Every file of `dir` with its bytes, to show that a refusal changed nothing.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let bytes = fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_torn_tail_holding_a_durable_record_is_refused_and_nothing_changes() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), N);
    let whole = fs::read(&segment).expect("read");
    // The last record loses its last byte: a torn write, by its shape.
    fs::write(&segment, &whole[..whole.len() - 1]).expect("cut");
    let before = snapshot_of(dir.path());
    let options = |durable| WalOptions {
        durable_through: Some(durable),
        ..exact()
    };
    let err = Wal::open(dir.path(), options(N)).expect_err("record N was durable");
    match &err {
        WalError::LostDurable {
            damage,
            last_intact_lsn,
            durable_through,
        } => {
            assert_eq!(damage.path, segment);
            assert_eq!(damage.offset, (N - 1) * RECORD_BYTES);
            assert_eq!(damage.first_lost_lsn, N);
            assert_eq!(*last_intact_lsn, Some(N - 1));
            assert_eq!(*durable_through, N);
        }
        other => panic!("expected LostDurable, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&segment.display().to_string())
            && text.contains(&format!("byte {}", (N - 1) * RECORD_BYTES))
            && text.contains(&format!("lsn {}", N - 1)),
        "{text}"
    );
    assert_eq!(snapshot_of(dir.path()), before, "the refusal changed files");
    // Durable only up to the record before: the torn one was never reported, so it is cut.
    let wal = Wal::open(dir.path(), options(N - 1)).expect("open");
    assert_eq!(wal.last_lsn(), Some(N - 1));
}

#[test]
fn inspect_reports_damage_without_changing_it_and_cut_removes_it_with_what_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), synced(4 * RECORD_BYTES)).expect("open");
    append_all(&wal, 1..=10, 0, PAYLOAD_BYTES);
    wal.sync().expect("sync");
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Corrupt the second record of the second segment: not a torn tail, whole records follow.
    let second = &files[1];
    let mut bytes = fs::read(second).expect("read");
    let at = RECORD_BYTES as usize + HEADER_BYTES as usize + 3;
    bytes[at] ^= 0xff;
    fs::write(second, &bytes).expect("write");
    let before = snapshot_of(dir.path());

    let mut seen = Vec::new();
    let inspection = plinth_wal::inspect(dir.path(), |lsn, _| seen.push(lsn)).expect("inspect");
    let damage = inspection.damage.clone().expect("damage found");
    let first_lost = 4 + 2; // four records in the first segment, then one good one
    assert_eq!(seen, (1..first_lost).collect::<Vec<_>>());
    assert_eq!(inspection.first_lsn, Some(1));
    assert_eq!(inspection.last_intact_lsn, Some(first_lost - 1));
    assert_eq!(damage.path, *second);
    assert_eq!(damage.offset, RECORD_BYTES);
    assert_eq!(damage.first_lost_lsn, first_lost);
    assert!(!damage.torn);
    assert_eq!(damage.later_segments, files[2..].to_vec());
    assert_eq!(snapshot_of(dir.path()), before, "inspect changed files");
    assert!(matches!(open_err(dir.path()), WalError::Corrupt { .. }));

    plinth_wal::cut(dir.path(), &damage).expect("cut");
    assert_eq!(segment_files(dir.path()), files[..2].to_vec());
    let wal = Wal::open(dir.path(), synced(4 * RECORD_BYTES)).expect("open after the cut");
    assert_eq!(wal.last_lsn(), Some(first_lost - 1));
    assert_eq!(
        wal.read(1, first_lost).expect("read"),
        expected(1..first_lost, 0, PAYLOAD_BYTES)
    );
    // And the log goes on from there.
    append_all(&wal, first_lost..=first_lost + 2, 1, PAYLOAD_BYTES);
    assert_eq!(wal.last_lsn(), Some(first_lost + 2));
}

/// Records reported durable that are not there at all (the log stops at a record's edge, or
/// reads as zeros from there: what a dying disk may give back) are lost data too: refused,
/// unchanged, not opened as a shorter log.
#[test]
fn a_log_that_ends_before_a_durable_record_is_refused() {
    const N: u64 = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = write_log(dir.path(), N);
    let whole = fs::read(&segment).expect("read");
    let short = (N - 1) * RECORD_BYTES;
    for tail in [Vec::new(), vec![0u8; RECORD_BYTES as usize * 2]] {
        let mut bytes = whole[..short as usize].to_vec();
        bytes.extend_from_slice(&tail);
        fs::write(&segment, &bytes).expect("write");
        let before = snapshot_of(dir.path());
        let options = |durable| WalOptions {
            durable_through: Some(durable),
            ..exact()
        };
        match Wal::open(dir.path(), options(N)).expect_err("record N was durable") {
            WalError::LostDurable {
                damage,
                last_intact_lsn,
                ..
            } => {
                assert_eq!(damage.first_lost_lsn, N);
                assert_eq!(last_intact_lsn, Some(N - 1));
            }
            other => panic!("expected LostDurable, got {other}"),
        }
        assert_eq!(snapshot_of(dir.path()), before, "the refusal changed files");
        let wal = Wal::open(dir.path(), options(N - 1)).expect("open");
        assert_eq!(wal.last_lsn(), Some(N - 1));
    }
}
