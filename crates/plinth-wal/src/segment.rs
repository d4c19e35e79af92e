//! One segment file: its name, its open handle and the in-memory index of its records.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Lsn, WalError};

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_NAME_DIGITS: usize = 20;

/// A segment file and where each of its records starts.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    /// Lsn of the first record, also encoded in the file name.
    pub(crate) first_lsn: Lsn,
    /// Shared so the flusher can fdatasync it without holding the state lock.
    pub(crate) file: Arc<File>,
    /// `offsets[i]` is where the record with lsn `first_lsn + i` starts.
    pub(crate) offsets: Vec<u64>,
    /// Bytes of whole records. Only the active segment's file may be longer: the room of a
    /// preallocation, or zeros recovery found after its last record; rollover cuts them.
    pub(crate) len_bytes: u64,
    /// Bytes from the start of the file known to have been written, records or zeros: past
    /// this, a preallocated file's blocks are still unwritten extents (see `WalOptions`).
    pub(crate) written_bytes: u64,
}

impl Segment {
    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Lsn one past the last record; equals `first_lsn` when empty.
    pub(crate) fn end_lsn(&self) -> Lsn {
        self.first_lsn + self.offsets.len() as u64
    }

    pub(crate) fn last_lsn(&self) -> Option<Lsn> {
        self.end_lsn().checked_sub(1).filter(|_| !self.is_empty())
    }

    /// Byte range of the records with index `first..end` (indexes into `offsets`).
    pub(crate) fn byte_range(&self, first: usize, end: usize) -> (u64, u64) {
        let start = self.offsets[first];
        let stop = self.offsets.get(end).copied().unwrap_or(self.len_bytes);
        (start, stop)
    }
}

pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!(
        "{first_lsn:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// The first lsn encoded in a segment file name, or `None` for any other
/// file (the directory may also hold the vote, snapshots and temp files).
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, ordered by first lsn.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(first_lsn) = name.to_str().and_then(parse_segment_name) {
            found.push((first_lsn, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(first_lsn, _)| *first_lsn);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_like_their_lsns() {
        let path = segment_path(Path::new("/d"), 4096);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(name, "00000000000000004096.wal");
        assert_eq!(parse_segment_name(name), Some(4096));
        assert_eq!(
            parse_segment_name("18446744073709551615.wal"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn other_files_are_not_segments() {
        for name in [
            "vote",
            "00000000000000004096.wal.tmp",
            ".00000000000000004096.wal.tmp",
            "4096.wal",
            "0000000000000000409x.wal",
            "99999999999999999999.wal",
        ] {
            assert_eq!(parse_segment_name(name), None, "{name}");
        }
    }
}
