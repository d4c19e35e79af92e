//! Helpers shared by the write-ahead log's integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use plinth_wal::{Lsn, Wal, WalOptions};

/// Bytes one record takes on disk besides its payload.
pub const HEADER_BYTES: u64 = 16;

pub fn synced(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        sync: true,
        ..WalOptions::default()
    }
}

/// A payload that differs per lsn and per `salt`, so reads prove which
/// version of a record came back.
pub fn payload(lsn: Lsn, salt: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (lsn as u8).wrapping_mul(31).wrapping_add(i as u8) ^ salt)
        .collect()
}

/// Appends `lsns` one batch at a time, `len`-byte payloads.
pub fn append_all(wal: &Wal, lsns: impl IntoIterator<Item = Lsn>, salt: u8, len: usize) {
    for lsn in lsns {
        let bytes = payload(lsn, salt, len);
        wal.append(&[(lsn, &bytes)]).expect("append");
    }
}

pub fn expected(lsns: impl IntoIterator<Item = Lsn>, salt: u8, len: usize) -> Vec<(Lsn, Vec<u8>)> {
    lsns.into_iter()
        .map(|lsn| (lsn, payload(lsn, salt, len)))
        .collect()
}

/// Segment files in `dir`, in name (and so lsn) order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}
