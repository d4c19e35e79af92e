//! Opening the log: scanning every segment, cutting a torn tail, refusing corruption.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::files::sync_dir;
use crate::record::{self, Decoded, HEADER_BYTES};
use crate::segment::{Segment, list_segments};
use crate::{Lsn, WalError};

/// Where and why the scan of one segment stopped before its end.
struct Stop {
    offset: usize,
    reason: String,
    /// False when the bytes are a whole, checksummed record: a torn write
    /// cannot produce one, so it is corruption wherever it sits.
    may_be_torn: bool,
}

struct Scanned {
    offsets: Vec<u64>,
    stop: Option<Stop>,
}

/// Scans and verifies every segment in `dir` and returns them in lsn order,
/// all non-empty. `fsyncs` counts the data fsyncs done to cut a torn tail.
pub(crate) fn recover(
    dir: &Path,
    sync: bool,
    fsyncs: &AtomicU64,
) -> Result<Vec<Segment>, WalError> {
    let listed = list_segments(dir)?;
    let count = listed.len();
    let mut segments: Vec<Segment> = Vec::with_capacity(count);
    for (index, (first_lsn, path)) in listed.into_iter().enumerate() {
        let is_last = index + 1 == count;
        if let Some(previous) = segments.last() {
            let expected = previous.end_lsn();
            if first_lsn != expected {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at lsn {first_lsn} but the previous segment ends at lsn {}",
                        expected - 1
                    ),
                ));
            }
        }

        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io(&path, e))?;
        let bytes = read_all(&mut file).map_err(|e| WalError::io(&path, e))?;
        let scanned = scan(&bytes, first_lsn);
        let mut len_bytes = bytes.len() as u64;

        if let Some(stop) = &scanned.stop
            && is_last
            && bytes[stop.offset..].iter().all(|b| *b == 0)
        {
            // Zeros after the last record: a preallocated segment's room, or a file whose new
            // size reached the disk before its data. Nothing was written there, so nothing is
            // cut; appends go on over the zeros.
            len_bytes = stop.offset as u64;
        } else if let Some(stop) = scanned.stop {
            let next_lsn = first_lsn + scanned.offsets.len() as u64;
            if !is_last || !stop.may_be_torn {
                return Err(WalError::corrupt(&path, stop.offset as u64, stop.reason));
            }
            // A crash can only damage the write that was in flight, which is
            // the end of the last segment. If any whole record follows the
            // damage, the damage is not at the end, so it is not a torn write.
            let lsns_max = next_lsn.saturating_add((bytes.len() / HEADER_BYTES) as u64);
            if let Some((later, later_lsn)) =
                record::find_record_in(&bytes, stop.offset + 1, next_lsn..=lsns_max)
            {
                tracing::error!(
                    path = %path.display(),
                    offset = stop.offset,
                    later_offset = later,
                    later_lsn,
                    "damaged record is followed by a valid one, so it is not a torn tail"
                );
                return Err(WalError::corrupt(&path, stop.offset as u64, stop.reason));
            }
            tracing::warn!(
                path = %path.display(),
                offset = stop.offset,
                dropped_bytes = bytes.len() - stop.offset,
                reason = %stop.reason,
                "truncating torn tail of the write-ahead log"
            );
            file.set_len(stop.offset as u64)
                .map_err(|e| WalError::io(&path, e))?;
            if sync {
                file.sync_data().map_err(|e| WalError::io(&path, e))?;
                fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            len_bytes = stop.offset as u64;
        }

        if scanned.offsets.is_empty() {
            if !is_last {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    "segment holds no records but later segments exist",
                ));
            }
            // Its name pins a first lsn that the next append on an empty log
            // need not match, and rollover never leaves an empty segment behind
            // a full one, so removing it is the same as never having made it.
            drop(file);
            fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
            if sync {
                sync_dir(dir)?;
            }
            tracing::warn!(path = %path.display(), "removed empty last segment");
            continue;
        }

        segments.push(Segment {
            path,
            first_lsn,
            file: Arc::new(file),
            offsets: scanned.offsets,
            len_bytes,
            // What lies past the records may be unwritten extents that read as zeros.
            written_bytes: len_bytes,
        });
    }
    Ok(segments)
}

fn read_all(file: &mut File) -> std::io::Result<Vec<u8>> {
    let hint = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(hint);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn scan(bytes: &[u8], first_lsn: Lsn) -> Scanned {
    let mut offsets = Vec::new();
    let mut at = 0;
    let mut expected = first_lsn;
    while at < bytes.len() {
        match record::decode(bytes, at) {
            Decoded::Record { lsn, end, .. } if lsn == expected => {
                offsets.push(at as u64);
                at = end;
                expected = expected.wrapping_add(1);
            }
            Decoded::Record { lsn, .. } => {
                let reason = format!("record has lsn {lsn} but lsn {expected} was expected");
                return Scanned {
                    offsets,
                    stop: Some(Stop {
                        offset: at,
                        reason,
                        may_be_torn: false,
                    }),
                };
            }
            damaged => {
                return Scanned {
                    offsets,
                    stop: Some(Stop {
                        offset: at,
                        reason: damaged.problem(),
                        may_be_torn: true,
                    }),
                };
            }
        }
    }
    Scanned {
        offsets,
        stop: None,
    }
}
