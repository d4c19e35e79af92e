//! RaftStateMachine on plinth-core: applies committed entries to the `State` (shared with the read
//! path under one lock), fans applied events out to watchers, and keeps snapshots in
//! `<data_dir>/snapshot/`.
//!
//! The state itself is in memory; what survives a restart is the newest snapshot plus the log
//! after it. On open the newest valid snapshot is loaded, and openraft re-applies the log from
//! there up to the saved committed log id, then the rest once this node is leader again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use plinth_core::{Applied, Output, State};
use tokio::sync::{broadcast, watch};

use crate::error::NodeError;
use crate::log_store::blocking;
use crate::watch::WatchMessage;
use crate::{LogId, LogRequest, SnapshotMeta, StoredMembership, TypeConfig};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// Applied-event messages a slow watcher may fall behind by before it must re-read history.
const WATCH_BROADCAST_CAPACITY: usize = 4096;

/// A snapshot file: `magic | format version (u32 LE) | meta length (u32 LE) | meta (postcard:
/// last applied log id and membership) | State::to_snapshot() bytes`. The state bytes carry their
/// own magic and version, checked when they are loaded.
const SNAPSHOT_MAGIC: &[u8; 8] = b"PLNSNAP\0";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".bin";

/// What the state machine holds, under one lock so that a snapshot and a read see a state together
/// with the log position it reflects.
pub(crate) struct SmData {
    pub(crate) state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// In debug builds, the state's invariants are checked after every this many entries.
const INVARIANT_CHECK_EVERY: u64 = 64;

/// The part of the state machine the node's read path and watchers use.
pub(crate) struct SmShared {
    data: RwLock<SmData>,
    /// Index of the last applied entry, for reads waiting on a read index.
    applied: watch::Sender<Option<u64>>,
    events: broadcast::Sender<WatchMessage>,
    closed: AtomicBool,
    /// The size of the newest snapshot (0 before the first): the next one's buffer is sized by
    /// it, and the node snapshots again once the log has grown as large.
    snapshot_bytes: AtomicUsize,
}

impl SmShared {
    pub(crate) fn snapshot_bytes(&self) -> usize {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SmData> {
        // A panic while applying means a broken invariant (a bug); crashing readers too is right.
        self.data
            .read()
            .expect("state lock poisoned by a panic during apply")
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data
            .write()
            .expect("state lock poisoned by a panic during apply")
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<WatchMessage> {
        self.events.subscribe()
    }

    pub(crate) fn applied_index(&self) -> Option<u64> {
        *self.applied.borrow()
    }

    /// Waits until the entry at `index` has been applied.
    pub(crate) async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        let mut rx = self.applied.subscribe();
        rx.wait_for(|applied| applied.is_some_and(|a| a >= index))
            .await
            .map(|_| ())
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Runs `f` on the state now and after every apply until it answers `Some`.
    pub(crate) async fn wait_until<T>(
        &self,
        mut f: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, NodeError> {
        let mut rx = self.applied.subscribe();
        loop {
            rx.borrow_and_update();
            if self.is_closed() {
                return Err(NodeError::ShuttingDown);
            }
            if let Some(answer) = f(&self.read().state) {
                return Ok(answer);
            }
            rx.changed().await.map_err(|_| NodeError::ShuttingDown)?;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends every watcher: the node is shutting down.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wakes every `wait_until`, which then sees the node closed.
        self.applied.send_modify(|_| {});
        let _ = self.events.send(WatchMessage::Closed);
    }
}

/// openraft's handle on the state machine; a clone shares everything.
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    shared: Arc<SmShared>,
    snapshots: Arc<SnapshotDir>,
}

impl StateMachineStore {
    /// Opens the state machine at the newest valid snapshot in `dir` (empty if there is none).
    /// Blocking.
    pub(crate) fn open(dir: &Path) -> Result<StateMachineStore, NodeError> {
        let snapshots = SnapshotDir::open(dir).map_err(|e| NodeError::Storage(e.to_string()))?;
        let mut snapshot_bytes = 0;
        let data = match snapshots
            .newest()
            .map_err(|e| NodeError::Storage(e.to_string()))?
        {
            Some((meta, bytes)) => {
                snapshot_bytes = bytes.len();
                let state = State::from_snapshot(&bytes).map_err(|e| {
                    NodeError::Storage(format!(
                        "snapshot at {:?} does not load: {e}",
                        meta.last_log_id
                    ))
                })?;
                tracing::info!(last_applied = ?meta.last_log_id, revision = %state.revision(), "loaded snapshot");
                SmData {
                    state,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                }
            }
            None => SmData {
                state: State::default(),
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        let (applied, _) = watch::channel(data.last_applied.map(|l| l.index));
        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        Ok(StateMachineStore {
            shared: Arc::new(SmShared {
                data: RwLock::new(data),
                applied,
                events,
                closed: AtomicBool::new(false),
                snapshot_bytes: AtomicUsize::new(snapshot_bytes),
            }),
            snapshots: Arc::new(snapshots),
        })
    }

    pub(crate) fn shared(&self) -> Arc<SmShared> {
        Arc::clone(&self.shared)
    }
}

/// The outcome handed to a caller waiting on a blank or membership entry: nothing changed. Only a
/// future membership change waits on one; blank entries have no caller.
fn nothing_applied(state: &State) -> Applied {
    Applied {
        revision: state.revision(),
        result: Ok(Output::Tick {
            expired: Vec::new(),
        }),
        events: Vec::new(),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let data = self.shared.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id;
            let applied = {
                let mut data = self.shared.write();
                let applied = match entry.payload {
                    EntryPayload::Normal(LogRequest(request)) => {
                        let applied = data.state.apply(&request);
                        // Debug builds (every test run) recheck the invariants as they go; the
                        // check walks the whole state, so on every 64th entry, not every one.
                        if cfg!(debug_assertions) && log_id.index % INVARIANT_CHECK_EVERY == 0 {
                            data.state.check_invariants();
                        }
                        // Sent under the write lock: see the join argument in `watch`.
                        if !applied.events.is_empty() && self.shared.events.receiver_count() > 0 {
                            let _ = self.shared.events.send(WatchMessage::Applied {
                                revision: applied.revision,
                                events: applied.events.clone().into(),
                            });
                        }
                        applied
                    }
                    EntryPayload::Blank => nothing_applied(&data.state),
                    EntryPayload::Membership(membership) => {
                        data.membership = StoredMembership::new(Some(log_id), membership);
                        nothing_applied(&data.state)
                    }
                };
                data.last_applied = Some(log_id);
                applied
            };
            self.shared.applied.send_replace(Some(log_id.index));
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let state = State::from_snapshot(&snapshot).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot does not load: {e}"),
            )
        })?;
        // Persisted before the swap: if this fails the state machine is unchanged.
        let snapshots = Arc::clone(&self.snapshots);
        let for_file = meta.clone();
        blocking(move || snapshots.write(&for_file, &snapshot)).await?;
        {
            let mut data = self.shared.write();
            data.state = state;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership.clone();
            // The history jumped: live watchers re-read it from where they were.
            let _ = self.shared.events.send(WatchMessage::Reset);
        }
        self.shared
            .applied
            .send_replace(meta.last_log_id.map(|l| l.index));
        tracing::info!(last_applied = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = Arc::clone(&self.snapshots);
        let newest = blocking(move || snapshots.newest()).await?;
        Ok(newest.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

pub(crate) struct SnapshotBuilder {
    shared: Arc<SmShared>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Encoded under the read lock, so the bytes and the log position agree; applies wait for
        // the encoding (not for the file write).
        // Sized by the last snapshot, so the buffer does not double its way up (and briefly
        // hold twice the state).
        let hint = self.shared.snapshot_bytes();
        let mut bytes = Vec::with_capacity(hint + hint / 8 + 4096);
        let meta = {
            let data = self.shared.read();
            data.state.encode_snapshot(&mut bytes);
            SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
            }
        };
        self.shared
            .snapshot_bytes
            .store(bytes.len(), Ordering::Relaxed);
        let snapshots = Arc::clone(&self.snapshots);
        let (meta, bytes) = blocking(move || {
            snapshots.write(&meta, &bytes)?;
            Ok((meta, bytes))
        })
        .await?;
        tracing::debug!(last_applied = ?meta.last_log_id, bytes = bytes.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: bytes,
        })
    }
}

/// The snapshot directory: one file per snapshot, named by the index after its last entry, only
/// the newest kept.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// Writers (a build and an install may overlap) take turns, so the cleanup of one never
    /// deletes the file the other is about to rename into place.
    write_lock: Mutex<()>,
}

impl SnapshotDir {
    pub(crate) fn open(dir: &Path) -> io::Result<SnapshotDir> {
        fs::create_dir_all(dir)?;
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            write_lock: Mutex::new(()),
        })
    }

    fn path(&self, next_index: u64) -> PathBuf {
        self.dir.join(format!(
            "{SNAPSHOT_PREFIX}{next_index:020}{SNAPSHOT_SUFFIX}"
        ))
    }

    /// Snapshot files by the index after their last entry, newest first.
    fn list(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(index) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SNAPSHOT_PREFIX))
                .and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((index, entry.path()));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(found)
    }

    /// Writes the snapshot atomically (temporary file, fsync, rename, directory fsync), then
    /// deletes all but the newest file.
    pub(crate) fn write(&self, meta: &SnapshotMeta, state: &[u8]) -> io::Result<()> {
        let _turn = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next_index = meta.last_log_id.map_or(0, |l| l.index + 1);
        let bytes = encode_snapshot(meta, state)?;
        plinth_wal::write_file_atomic(&self.path(next_index), &bytes).map_err(io::Error::other)?;
        for (_, path) in self.list()?.into_iter().skip(1) {
            fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// The newest snapshot that decodes. A damaged newer file is reported and skipped: an older
    /// snapshot plus the log may still cover the state (openraft refuses to start if the log
    /// below was purged).
    pub(crate) fn newest(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        for (_, path) in self.list()? {
            let bytes = fs::read(&path)?;
            match decode_snapshot(&bytes) {
                Ok(found) => return Ok(Some(found)),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping a snapshot that does not decode")
                }
            }
        }
        Ok(None)
    }
}

fn encode_snapshot(meta: &SnapshotMeta, state: &[u8]) -> io::Result<Vec<u8>> {
    let meta_bytes =
        postcard::to_stdvec(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let meta_len = u32::try_from(meta_bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "snapshot metadata over 4 GiB"))?;
    let mut out = Vec::with_capacity(16 + meta_bytes.len() + state.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(state);
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if bytes.len() < 16 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(invalid("not a plinth snapshot file".to_owned()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(invalid(format!(
            "snapshot file format version {version} is not supported; this build reads {SNAPSHOT_VERSION}"
        )));
    }
    let meta_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let meta_end = 16usize
        .checked_add(meta_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| invalid("snapshot metadata runs past the end of the file".to_owned()))?;
    let meta: SnapshotMeta = postcard::from_bytes(&bytes[16..meta_end])
        .map_err(|e| invalid(format!("snapshot metadata does not decode: {e}")))?;
    Ok((meta, bytes[meta_end..].to_vec()))
}
