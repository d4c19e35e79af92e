//! Opening the log: reading every segment, cutting a torn tail, refusing corruption; and the
//! read-only inspection and the explicit cut behind a repair.
//!
//! Every path first reads the whole log without changing a byte ([`read_log`]) and finds where
//! it stops being whole, if it does ([`Damage`]). Only then does anything change: recovery cuts
//! a torn tail, and only if no record in it was reported durable (`durable_through`); a repair
//! cuts wherever the damage is, because its caller has accepted the loss.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::files::sync_dir;
use crate::record::{self, Decoded, HEADER_BYTES};
use crate::segment::{Segment, list_segments};
use crate::{Lsn, WalError};

/// Where the log stops being whole: the first record a read cannot get past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file the damage is in.
    pub path: PathBuf,
    /// Where in it: the start of the first record that does not read back.
    pub offset: u64,
    pub reason: String,
    /// The lsn the first unreadable record would have had: every record from it on is lost if
    /// the log is cut here.
    pub first_lost_lsn: Lsn,
    /// A torn write: damage only at the very end of the log, as a crash during an append
    /// leaves, with no whole record after it. Anything else is corruption.
    pub torn: bool,
    /// Whole segment files after the damaged one, which a cut deletes.
    pub later_segments: Vec<PathBuf>,
    /// Bytes of records a cut removes: those written in the damaged segment from `offset` (not
    /// the zeros of its room), and every later segment's.
    pub lost_bytes: u64,
}

/// What a read-only look at the log found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The first record's lsn; `None` for an empty log.
    pub first_lsn: Option<Lsn>,
    /// The last record before any damage.
    pub last_intact_lsn: Option<Lsn>,
    pub damage: Option<Damage>,
}

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

/// A segment read whole up to any damage in it.
struct ReadSegment {
    path: PathBuf,
    first_lsn: Lsn,
    file: File,
    offsets: Vec<u64>,
    /// Bytes of whole records.
    records_bytes: u64,
    /// Bytes of the file.
    file_bytes: u64,
}

/// Reads every segment in lsn order, handing each intact record to `visit`, up to the first
/// damage (every segment from it on is left out). Changes nothing on disk; the files are opened
/// for writing only if `writable` (recovery goes on to use them).
fn read_log(
    dir: &Path,
    writable: bool,
    mut visit: impl FnMut(Lsn, &[u8]),
) -> Result<(Vec<ReadSegment>, Option<Damage>), WalError> {
    let listed = list_segments(dir)?;
    let count = listed.len();
    let mut read: Vec<ReadSegment> = Vec::with_capacity(count);
    let later = |index: usize| -> Vec<PathBuf> {
        listed[index + 1..].iter().map(|(_, p)| p.clone()).collect()
    };
    let bytes_of = |paths: &[PathBuf]| -> u64 {
        paths
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    for (index, (first_lsn, path)) in listed.iter().enumerate() {
        let (first_lsn, path) = (*first_lsn, path.clone());
        let is_last = index + 1 == count;
        if let Some(previous) = read.last() {
            let expected = previous.first_lsn + previous.offsets.len() as u64;
            if first_lsn != expected {
                let mut lost = later(index);
                lost.insert(0, path.clone());
                let lost_bytes = bytes_of(&lost);
                return Ok((
                    read,
                    Some(Damage {
                        reason: format!(
                            "segment starts at lsn {first_lsn} but the previous segment ends at lsn {}",
                            expected.saturating_sub(1)
                        ),
                        path,
                        offset: 0,
                        first_lost_lsn: expected,
                        torn: false,
                        later_segments: lost.split_off(1),
                        lost_bytes,
                    }),
                ));
            }
        }

        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| WalError::io(&path, e))?;
        let bytes = read_all(&mut file).map_err(|e| WalError::io(&path, e))?;
        let scanned = scan(&bytes, first_lsn);
        for (i, &at) in scanned.offsets.iter().enumerate() {
            if let Decoded::Record { payload, .. } = record::decode(&bytes, at as usize) {
                visit(first_lsn + i as u64, payload);
            }
        }
        let next_lsn = first_lsn + scanned.offsets.len() as u64;
        let mut records_bytes = bytes.len() as u64;
        let mut damage = None;
        match scanned.stop {
            // Zeros after the last record: a preallocated segment's room, or a file whose new
            // size reached the disk before its data. Nothing was written there.
            Some(stop) if is_last && bytes[stop.offset..].iter().all(|b| *b == 0) => {
                records_bytes = stop.offset as u64;
            }
            Some(stop) => {
                // A crash can only damage the write that was in flight, which is the end of
                // the last segment. If any whole record follows the damage, the damage is not
                // at the end, so it is not a torn write.
                let lsns_max = next_lsn.saturating_add((bytes.len() / HEADER_BYTES) as u64);
                let followed = record::find_record_in(&bytes, stop.offset + 1, next_lsn..=lsns_max);
                if let Some((later_offset, later_lsn)) = followed {
                    tracing::error!(
                        path = %path.display(),
                        offset = stop.offset,
                        later_offset,
                        later_lsn,
                        "damaged record is followed by a valid one, so it is not a torn tail"
                    );
                }
                let later_segments = later(index);
                damage = Some(Damage {
                    offset: stop.offset as u64,
                    reason: stop.reason,
                    first_lost_lsn: next_lsn,
                    torn: is_last && stop.may_be_torn && followed.is_none(),
                    lost_bytes: written_after(&bytes, stop.offset) + bytes_of(&later_segments),
                    later_segments,
                    path: path.clone(),
                });
                records_bytes = stop.offset as u64;
            }
            None => {}
        }
        if damage.is_none() && scanned.offsets.is_empty() && !is_last {
            let later_segments = later(index);
            damage = Some(Damage {
                path: path.clone(),
                offset: 0,
                reason: "segment holds no records but later segments exist".to_owned(),
                first_lost_lsn: first_lsn,
                torn: false,
                lost_bytes: bytes.len() as u64 + bytes_of(&later_segments),
                later_segments,
            });
        }
        read.push(ReadSegment {
            path,
            first_lsn,
            file,
            offsets: scanned.offsets,
            records_bytes,
            file_bytes: bytes.len() as u64,
        });
        if damage.is_some() {
            return Ok((read, damage));
        }
    }
    Ok((read, None))
}

/// Scans and verifies every segment in `dir` and returns them in lsn order, all non-empty.
/// A torn tail is cut, unless it holds a record at or below `durable_through` (one reported
/// durable): that is lost data, refused before a byte changes, as is any other damage.
/// `fsyncs` counts the data fsyncs done to cut a torn tail.
pub(crate) fn recover(
    dir: &Path,
    sync: bool,
    fsyncs: &AtomicU64,
    durable_through: Option<Lsn>,
) -> Result<Vec<Segment>, WalError> {
    let (read, damage) = read_log(dir, true, |_, _| {})?;
    // Whole records reported durable that are simply not there (the end of the log reads as
    // zeros, or stops short at a record's edge) are lost as surely as damaged ones.
    if damage.is_none()
        && let Some(durable) = durable_through
        && let Some(last) = read.iter().rev().find(|r| !r.offsets.is_empty())
        && last.first_lsn + (last.offsets.len() as u64) <= durable
    {
        let next_lsn = last.first_lsn + last.offsets.len() as u64;
        return Err(WalError::LostDurable {
            damage: Box::new(Damage {
                path: last.path.clone(),
                offset: last.records_bytes,
                reason: format!("the log ends at lsn {}", next_lsn - 1),
                first_lost_lsn: next_lsn,
                torn: true,
                later_segments: Vec::new(),
                lost_bytes: 0,
            }),
            last_intact_lsn: Some(next_lsn - 1),
            durable_through: durable,
        });
    }
    if let Some(damage) = &damage {
        if !damage.torn {
            return Err(WalError::corrupt(
                &damage.path,
                damage.offset,
                damage.reason.clone(),
            ));
        }
        if let Some(durable) = durable_through.filter(|d| *d >= damage.first_lost_lsn) {
            return Err(WalError::LostDurable {
                damage: Box::new(damage.clone()),
                last_intact_lsn: damage.first_lost_lsn.checked_sub(1),
                durable_through: durable,
            });
        }
    }
    let count = read.len();
    let mut segments = Vec::with_capacity(count);
    for (index, r) in read.into_iter().enumerate() {
        let is_last = index + 1 == count;
        if let Some(damage) = damage.as_ref().filter(|d| d.path == r.path) {
            tracing::warn!(
                path = %r.path.display(),
                offset = damage.offset,
                dropped_bytes = r.file_bytes - damage.offset,
                reason = %damage.reason,
                "truncating torn tail of the write-ahead log"
            );
            r.file
                .set_len(damage.offset)
                .map_err(|e| WalError::io(&r.path, e))?;
            if sync {
                r.file.sync_data().map_err(|e| WalError::io(&r.path, e))?;
                fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        if r.offsets.is_empty() {
            debug_assert!(is_last, "read_log reports an empty segment before others");
            // Its name pins a first lsn that the next append on an empty log
            // need not match, and rollover never leaves an empty segment behind
            // a full one, so removing it is the same as never having made it.
            drop(r.file);
            fs::remove_file(&r.path).map_err(|e| WalError::io(&r.path, e))?;
            if sync {
                sync_dir(dir)?;
            }
            tracing::warn!(path = %r.path.display(), "removed empty last segment");
            continue;
        }
        segments.push(Segment {
            path: r.path,
            first_lsn: r.first_lsn,
            file: Arc::new(r.file),
            offsets: r.offsets,
            len_bytes: r.records_bytes,
            // What lies past the records may be unwritten extents that read as zeros.
            written_bytes: r.records_bytes,
        });
    }
    Ok(segments)
}

/// Reads the log in `dir` without changing it: where it is whole, and where and how it is
/// damaged if it is. `visit` sees every intact record in lsn order.
pub fn inspect(dir: &Path, visit: impl FnMut(Lsn, &[u8])) -> Result<Inspection, WalError> {
    let (read, damage) = read_log(dir, false, visit)?;
    let first_lsn = read
        .first()
        .filter(|r| !r.offsets.is_empty())
        .map(|r| r.first_lsn);
    let last_intact_lsn = read
        .iter()
        .rev()
        .find(|r| !r.offsets.is_empty())
        .map(|r| r.first_lsn + r.offsets.len() as u64 - 1);
    Ok(Inspection {
        first_lsn,
        last_intact_lsn,
        damage,
    })
}

/// Cuts the log at `damage` (as [`inspect`] reported it): the damaged segment is truncated
/// where its damage begins and every later segment is deleted, all synced. Every record from
/// `damage.first_lost_lsn` on is gone: only a caller that accepted that loss calls this.
pub fn cut(dir: &Path, damage: &Damage) -> Result<(), WalError> {
    for path in damage.later_segments.iter().rev() {
        fs::remove_file(path).map_err(|e| WalError::io(path, e))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .open(&damage.path)
        .map_err(|e| WalError::io(&damage.path, e))?;
    file.set_len(damage.offset)
        .map_err(|e| WalError::io(&damage.path, e))?;
    file.sync_all().map_err(|e| WalError::io(&damage.path, e))?;
    drop(file);
    if damage.offset == 0 {
        fs::remove_file(&damage.path).map_err(|e| WalError::io(&damage.path, e))?;
    }
    sync_dir(dir)
}

/// Bytes from `offset` to the last byte that is not zero: what was written there (a
/// preallocated segment's room is zeros).
fn written_after(bytes: &[u8], offset: usize) -> u64 {
    let end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1);
    end.saturating_sub(offset) as u64
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
