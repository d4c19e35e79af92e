//! RaftLogStorage on plinth-wal: entries live in the WAL (LSN = Raft log index, payload = postcard
//! of the entry); the vote, the committed log id and the purge point live in small files beside
//! the segments.
//!
//! Durability: an append returns once its entries are written (readable) and hands openraft's
//! `IOFlushed` callback to the WAL's group commit, so all appends queued while one fsync runs share
//! the next one. The vote and the purge point are written atomically and fsynced before their call
//! returns. The committed log id is only a recovery hint (it lets a restart re-apply the log up to
//! where it was); it is written by a background thread, never ahead of the durable log and at most
//! ten times a second, so saving it costs the Raft core loop nothing and the disk little.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use plinth_wal::{Lsn, Wal, WalError, WalOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::NodeError;
use crate::{Entry, LogId, TypeConfig, Vote};

const VOTE_FILE: &str = "raft-vote";
const COMMITTED_FILE: &str = "raft-committed";
/// The committed log id is saved at most this often (and once more on close).
const COMMITTED_WRITE_INTERVAL: Duration = Duration::from_millis(100);
const PURGED_FILE: &str = "raft-purged";

/// Small state files are `magic | format version (u32 LE) | postcard body`, so a file from another
/// program or a future format is refused by name rather than misread.
const META_MAGIC: &[u8; 4] = b"PLNR";
const META_VERSION: u32 = 1;

/// The Raft log of one replica. Cheap to clone: openraft's log reader is a clone of the store, so
/// replication and the state machine worker read the same WAL the core appends to.
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Wal,
    dir: PathBuf,
    meta: Mutex<Meta>,
    committed: Arc<CommittedWriter>,
    /// Bytes of entries appended since the log was opened, counting what it held then: how much
    /// log a snapshot would let go of.
    appended_bytes: AtomicU64,
}

struct Meta {
    vote: Option<Vote>,
    /// Every entry up to and including this one is covered by a snapshot and may be gone from the
    /// WAL. The WAL deletes whole segments only, so entries at or below it can still be on disk;
    /// reads never return them.
    last_purged: Option<LogId>,
    /// The id of the last entry in the WAL, `None` when the WAL holds none.
    last_entry: Option<LogId>,
}

impl LogStore {
    /// Opens (and recovers) the WAL in `dir` and reads the state files beside it. Blocking.
    pub(crate) fn open(dir: &Path, opts: WalOptions) -> Result<LogStore, NodeError> {
        let storage = |e: io::Error| NodeError::Storage(e.to_string());
        // Read before the log is opened: every entry up to the committed one was acknowledged,
        // so recovery must not cut one of them as a torn tail (it refuses, changing nothing).
        let committed = read_committed(dir).map_err(storage)?;
        let opts = WalOptions {
            durable_through: committed.map(|c| c.index),
            ..opts
        };
        let wal = Wal::open(dir, opts).map_err(|e| damaged(dir, e))?;
        let vote: Option<Vote> = read_meta(&dir.join(VOTE_FILE)).map_err(storage)?;
        let last_purged: Option<LogId> = read_meta(&dir.join(PURGED_FILE)).map_err(storage)?;
        let last_entry = read_last_entry(&wal).map_err(storage)?;
        // What recovery found on disk is what a restart would find again: durable.
        let flushed_next = wal.last_lsn().map_or(0, |last| last + 1);
        let committed = CommittedWriter::start(dir.join(COMMITTED_FILE), committed, flushed_next)
            .map_err(storage)?;
        tracing::info!(
            dir = %dir.display(),
            vote = ?vote,
            last_purged = ?last_purged,
            last_entry = ?last_entry,
            "opened raft log"
        );
        let held = wal.size_bytes();
        Ok(LogStore {
            inner: Arc::new(Inner {
                appended_bytes: AtomicU64::new(held),
                wal,
                dir: dir.to_path_buf(),
                meta: Mutex::new(Meta {
                    vote,
                    last_purged,
                    last_entry,
                }),
                committed,
            }),
        })
    }

    /// Bytes of entries appended since the log was opened, counting what it held then.
    pub(crate) fn appended_bytes(&self) -> u64 {
        self.inner.appended_bytes.load(Ordering::Relaxed)
    }

    /// Whether nothing was ever stored: no vote, no entry, no purge point.
    pub(crate) fn is_pristine(&self) -> bool {
        let meta = self.inner.meta();
        meta.vote.is_none() && meta.last_purged.is_none() && meta.last_entry.is_none()
    }

    pub(crate) fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Makes everything appended durable and writes the last committed log id. Blocking; called
    /// at shutdown after the Raft core has stopped.
    pub(crate) fn close(&self) -> Result<(), NodeError> {
        let synced = self.inner.wal.sync();
        // Only a log that reached the disk may be claimed durable: a hint ahead of it would send
        // a restart after entries it does not have.
        if synced.is_ok() {
            self.inner
                .committed
                .flushed(self.inner.wal.last_lsn().map_or(0, |l| l + 1));
        }
        self.inner.committed.stop_and_join();
        synced.map_err(|e| NodeError::Storage(e.to_string()))
    }
}

impl Inner {
    fn meta(&self) -> MutexGuard<'_, Meta> {
        // Meta is a few plain values, each assigned whole: a panic elsewhere cannot leave it torn.
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_entries<RB: RangeBounds<u64>>(&self, range: RB) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let purged_next = self.meta().last_purged.as_ref().map_or(0, |p| p.index + 1);
        let start = start.max(purged_next);
        if start >= end {
            return Ok(Vec::new());
        }
        let records = self.wal.read(start, end).map_err(wal_to_io)?;
        records
            .into_iter()
            .map(|(lsn, payload)| decode_entry(lsn, &payload))
            .collect()
    }

    fn refresh_last_entry(&self) -> io::Result<()> {
        let last = read_last_entry(&self.wal)?;
        self.meta().last_entry = last;
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a `close` (a node dropped without shutdown) the writer thread would wait forever.
        self.committed.stop_and_join();
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.inner.read_entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.meta().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let meta = self.inner.meta();
        // The WAL may still hold entries at or below the purge point (whole segments only are
        // deleted), so the last log id is whichever is later.
        let last_log_id = meta.last_entry.max(meta.last_purged);
        Ok(LogState {
            last_purged_log_id: meta.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let inner = Arc::clone(&self.inner);
        let vote = *vote;
        blocking(move || {
            write_meta(&inner.dir.join(VOTE_FILE), &vote)?;
            // Readers see the vote only once it is durable.
            inner.meta().vote = Some(vote);
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.committed.set(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.committed.latest())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Every entry encoded into one buffer, each at its own offset.
        let mut bytes = Vec::new();
        let mut ends: Vec<(Lsn, usize)> = Vec::new();
        let mut last = None;
        for entry in entries {
            bytes = postcard::to_extend(&entry, bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("entry {} does not encode: {e}", entry.log_id),
                )
            })?;
            ends.push((entry.log_id.index, bytes.len()));
            last = Some(entry.log_id);
        }
        let mut start = 0;
        let records: Vec<(Lsn, &[u8])> = ends
            .iter()
            .map(|&(lsn, end)| {
                let record = (lsn, &bytes[start..end]);
                start = end;
                record
            })
            .collect();
        // No fsync here: the entries are written, hence readable, when this returns.
        self.inner.wal.append(&records).map_err(wal_to_io)?;
        self.inner
            .appended_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);

        if last.is_some() {
            self.inner.meta().last_entry = last;
        }
        let flushed_next = last.map(|l| l.index + 1);
        let committed = Arc::clone(&self.inner.committed);
        let generation = committed.generation();
        // Group commit: the WAL's flusher runs every callback queued before its fsync after that
        // one fsync, so concurrent proposals batched by openraft (and batches queued while a sync
        // is running) share it. The callback only hands the result on; it must not block.
        self.inner.wal.flush_then(Box::new(move |result| {
            if let (Ok(()), Some(next)) = (&result, flushed_next) {
                committed.flushed_since(next, generation);
            }
            callback.io_completed(result.map_err(wal_to_io));
        }));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            inner.committed.truncated(from);
            // Durable on return (the WAL syncs the cut).
            inner.wal.truncate_from(from).map_err(wal_to_io)?;
            inner.refresh_last_entry()
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            // The purge point goes to disk first: a crash between the two steps then leaves extra
            // entries below it (ignored), never a log that starts after its recorded purge point.
            write_meta(&inner.dir.join(PURGED_FILE), &log_id)?;
            inner.meta().last_purged = Some(log_id);
            match inner.wal.last_lsn() {
                // Purging past the end happens when an installed snapshot is ahead of this log:
                // the log is emptied so that the next append may start after the snapshot.
                Some(last) if log_id.index > last => {
                    inner.committed.truncated(0);
                    inner.wal.truncate_from(0).map_err(wal_to_io)?;
                }
                _ => inner.wal.purge_upto(log_id.index).map_err(wal_to_io)?,
            }
            // Everything up to the purge point is in a durable snapshot.
            inner.committed.flushed(log_id.index + 1);
            inner.refresh_last_entry()
        })
        .await
    }
}

/// Persists the last committed log id in the background, newest value wins, at most every
/// `COMMITTED_WRITE_INTERVAL`, and only once the entry it names is durable in the WAL: a committed id beyond the local durable log would make a
/// restart try to re-apply entries it does not have.
struct CommittedWriter {
    path: PathBuf,
    state: Mutex<CommittedState>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct CommittedState {
    /// The newest value openraft saved.
    latest: Option<LogId>,
    /// The value in the file.
    written: Option<LogId>,
    /// Every entry with an index below this is durable in the WAL.
    flushed_next: u64,
    /// Bumped by every truncation, so the flush callback of an append that a truncation
    /// overtook cannot claim the truncated indexes as durable.
    generation: u64,
    stop: bool,
    /// The thread waits with nothing due, so a new value or a longer durable log must wake it.
    /// While it waits out the interval it is not woken: it reads the newest values when the
    /// interval ends, and a commit does not cost a thread switch.
    idle: bool,
}

impl CommittedWriter {
    fn start(path: PathBuf, on_disk: Option<LogId>, flushed_next: u64) -> io::Result<Arc<Self>> {
        let writer = Arc::new(CommittedWriter {
            path,
            state: Mutex::new(CommittedState {
                latest: on_disk,
                written: on_disk,
                flushed_next,
                generation: 0,
                stop: false,
                idle: false,
            }),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let for_thread = Arc::clone(&writer);
        let handle = thread::Builder::new()
            .name("plinth-committed".to_owned())
            .spawn(move || for_thread.run())?;
        *writer.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(writer)
    }

    fn lock(&self) -> MutexGuard<'_, CommittedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, committed: Option<LogId>) {
        let mut state = self.lock();
        if committed > state.latest {
            state.latest = committed;
            if state.idle {
                self.wake.notify_one();
            }
        }
    }

    fn latest(&self) -> Option<LogId> {
        self.lock().latest
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Every entry below `next` is durable.
    fn flushed(&self, next: u64) {
        let mut state = self.lock();
        self.advance(&mut state, next);
    }

    /// Every entry below `next` that was appended in `generation` is durable; a truncation since
    /// then voids the claim.
    fn flushed_since(&self, next: u64, generation: u64) {
        let mut state = self.lock();
        if state.generation == generation {
            self.advance(&mut state, next);
        }
    }

    fn advance(&self, state: &mut CommittedState, next: u64) {
        if next > state.flushed_next {
            state.flushed_next = next;
            if state.idle && state.latest != state.written {
                self.wake.notify_one();
            }
        }
    }

    /// Entries from `from` on are about to be removed.
    fn truncated(&self, from: u64) {
        let mut state = self.lock();
        state.generation += 1;
        state.flushed_next = state.flushed_next.min(from);
    }

    fn stop_and_join(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return };
        if handle.thread().id() != thread::current().id() && handle.join().is_err() {
            tracing::error!("the committed-log-id writer thread panicked");
        }
    }

    fn run(&self) {
        let mut state = self.lock();
        // When the file may next be written. It is a hint, so it is written at most every
        // COMMITTED_WRITE_INTERVAL: written after every commit, its two fsyncs cost as much as
        // the log's own.
        let mut next_write = Instant::now();
        loop {
            let due = state.latest != state.written
                && state.latest.is_none_or(|c| c.index < state.flushed_next);
            let now = Instant::now();
            if due && (now >= next_write || state.stop) {
                let value = state.latest;
                drop(state);
                // A failure costs only a longer replay at the next restart, so it is reported and
                // the next value is tried; retrying this one could spin on a full disk.
                if let Err(e) = write_meta(&self.path, &value) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not save the committed log id");
                }
                next_write = Instant::now() + COMMITTED_WRITE_INTERVAL;
                state = self.lock();
                state.written = value;
                continue;
            }
            if state.stop {
                return;
            }
            state.idle = !due;
            state = if due {
                self.wake
                    .wait_timeout(state, next_write - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            } else {
                self.wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner)
            };
            state.idle = false;
        }
    }
}

/// The committed log id the log's directory `dir` last saved (a hint: it may lag).
fn read_committed(dir: &Path) -> io::Result<Option<LogId>> {
    Ok(read_meta::<Option<LogId>>(&dir.join(COMMITTED_FILE))?.flatten())
}

/// A log that does not open, with what to do about it when it is damaged.
fn damaged(dir: &Path, e: WalError) -> NodeError {
    let data_dir = dir.parent().unwrap_or(dir).display();
    match e {
        WalError::LostDurable { .. } | WalError::Corrupt { .. } => NodeError::Storage(format!(
            "{e}. To accept the loss on a single node, stop it and run `plinth repair --data-dir {data_dir} --accept-loss`; \
             a member of a cluster must instead be removed from it and added back with an empty data directory, to catch up \
             from the others (docs/operations.md, \"A damaged log\")"
        )),
        other => NodeError::Storage(other.to_string()),
    }
}

/// What `plinth repair` found in a node's log, and whether it cut it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// Where the log stops being whole; `None` for a whole log.
    pub damage: Option<plinth_wal::Damage>,
    /// The first and the last entry before any damage.
    pub first_index: Option<u64>,
    pub last_intact_index: Option<u64>,
    /// The last entry the node had saved as committed (acknowledged): entries from the damage
    /// up to it are acknowledged writes that a cut loses.
    pub committed_index: Option<u64>,
    /// Whether the log was cut at the damage.
    pub cut: bool,
}

/// Looks at the log in `dir` without changing it and, if it is damaged and `accept_loss`,
/// cuts it at the damage and lowers the saved committed id to the last intact entry (or the
/// snapshot's), so the node starts from what is left. A log whose last membership has other
/// members is refused: cutting one member's log alone could lose what the cluster acknowledged;
/// it rejoins from the others instead. `snapshot` is the newest snapshot's last entry and
/// membership, if there is one.
pub(crate) fn repair(
    dir: &Path,
    snapshot: Option<(Option<LogId>, crate::StoredMembership)>,
    accept_loss: bool,
) -> Result<RepairReport, NodeError> {
    let storage = |e: io::Error| NodeError::Storage(e.to_string());
    let committed = read_committed(dir).map_err(storage)?;
    let (snapshot_last, mut members) = match snapshot {
        Some((last, membership)) => (
            last,
            membership.membership().nodes().map(|(id, _)| *id).collect(),
        ),
        None => (None, Vec::new()),
    };
    let mut last_intact: Option<LogId> = None;
    let mut undecodable = None;
    let inspection = plinth_wal::inspect(dir, |lsn, payload| match decode_entry(lsn, payload) {
        Ok(entry) => {
            if let openraft::EntryPayload::Membership(m) = &entry.payload {
                members = m.nodes().map(|(id, _)| *id).collect();
            }
            last_intact = Some(entry.log_id);
        }
        Err(e) => {
            undecodable.get_or_insert(e);
        }
    })
    .map_err(|e| NodeError::Storage(e.to_string()))?;
    if let Some(e) = undecodable {
        return Err(NodeError::Storage(format!(
            "{e}: the log holds whole records that are not entries; this is not damage a cut can repair"
        )));
    }
    let report = RepairReport {
        first_index: inspection.first_lsn,
        last_intact_index: inspection.last_intact_lsn,
        committed_index: committed.map(|c| c.index),
        damage: inspection.damage.clone(),
        cut: false,
    };
    let Some(damage) = inspection.damage else {
        return Ok(report);
    };
    if members.len() > 1 {
        return Err(NodeError::Refused(format!(
            "this node is a member of a cluster of nodes {members:?}: cutting its log alone could lose writes the cluster acknowledged. \
             Remove it from the cluster (`plinth cluster remove <id>` on a member), move its data directory aside and add it back \
             empty (docs/operations.md, \"A damaged log\"); it catches up from the others"
        )));
    }
    if !accept_loss {
        return Ok(report);
    }
    plinth_wal::cut(dir, &damage).map_err(|e| NodeError::Storage(e.to_string()))?;
    if committed.is_some_and(|c| c.index >= damage.first_lost_lsn) {
        let lowered = last_intact.max(snapshot_last);
        write_meta(&dir.join(COMMITTED_FILE), &lowered).map_err(storage)?;
    }
    Ok(RepairReport {
        cut: true,
        ..report
    })
}

fn decode_entry(lsn: Lsn, payload: &[u8]) -> io::Result<Entry> {
    let entry: Entry = postcard::from_bytes(payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry at index {lsn} does not decode: {e}"),
        )
    })?;
    if entry.log_id.index != lsn {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "log record at index {lsn} holds the entry of index {}",
                entry.log_id.index
            ),
        ));
    }
    Ok(entry)
}

fn read_last_entry(wal: &Wal) -> io::Result<Option<LogId>> {
    let Some(last) = wal.last_lsn() else {
        return Ok(None);
    };
    let records = wal.read(last, last + 1).map_err(wal_to_io)?;
    match records.first() {
        Some((lsn, payload)) => Ok(Some(decode_entry(*lsn, payload)?.log_id)),
        None => Ok(None),
    }
}

pub(crate) fn wal_to_io(e: WalError) -> io::Error {
    io::Error::other(e)
}

fn encode_meta<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&META_VERSION.to_le_bytes());
    postcard::to_io(value, &mut out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(out)
}

fn write_meta<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = encode_meta(value)?;
    plinth_wal::write_file_atomic(path, &bytes).map_err(wal_to_io)
}

fn read_meta<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let Some(bytes) = plinth_wal::read_file(path).map_err(wal_to_io)? else {
        return Ok(None);
    };
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    if bytes.len() < 8 || &bytes[..4] != META_MAGIC {
        return Err(invalid("not a plinth raft state file".to_owned()));
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version != META_VERSION {
        return Err(invalid(format!(
            "format version {version} is not supported; this build reads {META_VERSION}"
        )));
    }
    postcard::from_bytes(&bytes[8..])
        .map(Some)
        .map_err(|e| invalid(format!("does not decode: {e}")))
}

/// Runs blocking file work (fsyncs) off the async worker threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("storage task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_files_round_trip_and_refuse_foreign_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write_meta(&path, &Some(7u64)).unwrap();
        assert_eq!(read_meta::<Option<u64>>(&path).unwrap(), Some(Some(7)));
        std::fs::write(&path, b"garbage!").unwrap();
        assert!(read_meta::<Option<u64>>(&path).is_err());
        assert_eq!(read_meta::<u64>(&dir.path().join("absent")).unwrap(), None);
    }
}
