//! RaftStateMachine on plinth-core: applies committed entries to the `State` (shared with the read
//! path under one lock), fans applied events out to watchers, and keeps snapshots in
//! `<data_dir>/snapshot/`.
//!
//! The state itself is in memory; what survives a restart is the newest snapshot plus the log
//! after it. On open the newest valid snapshot is loaded, and openraft re-applies the log from
//! there up to the saved committed log id, then the rest once this node is leader again.

use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use plinth_core::{Applied, Output, State, Wake};
use tokio::sync::{broadcast, watch};

use crate::error::NodeError;
use crate::log_store::blocking;
use crate::waiters::Waiters;
use crate::watch::WatchMessage;
use crate::{LogId, LogRequest, SnapshotMeta, StoredMembership, TypeConfig};

pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// Applied-event messages a slow watcher may fall behind by before it must re-read history.
const WATCH_BROADCAST_CAPACITY: usize = 4096;

/// A snapshot file: `magic | format version (u32 LE) | meta length (u32 LE) | meta (postcard:
/// last applied log id and membership) | State::write_snapshot() bytes` (the body). The body
/// carries its own magic and version, checked when it is loaded.
const SNAPSHOT_MAGIC: &[u8; 8] = b"PLNSNAP\0";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".bin";
/// A snapshot being written or received: `.incoming-<n>.tmp`, renamed to its snapshot name once
/// it is complete and synced (or installed), deleted otherwise; any left by a crash go at open.
const INCOMING_PREFIX: &str = ".incoming-";

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
    /// The size of the newest snapshot's body (0 before the first): the node snapshots again
    /// once the log has grown as large, and a backup's buffer is sized by it.
    snapshot_bytes: AtomicUsize,
    /// How many long reads (see [`SmShared::read_long`]) hold or wait for the read lock.
    long_reads: Mutex<usize>,
    /// The calls waiting for a resource to change, woken by what applies return.
    waiters: Waiters,
}

/// The state's read lock, held by a snapshot or a backup for as long as it encodes the state.
pub(crate) struct LongRead<'a> {
    data: Option<RwLockReadGuard<'a, SmData>>,
    shared: &'a SmShared,
}

impl std::ops::Deref for LongRead<'_> {
    type Target = SmData;

    fn deref(&self) -> &SmData {
        self.data.as_ref().expect("held until dropped")
    }
}

impl Drop for LongRead<'_> {
    fn drop(&mut self) {
        self.data = None;
        *self.shared.lock_long_reads() -= 1;
    }
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

    /// The read lock for a snapshot's or a backup's encoding, on a blocking thread (about a
    /// second for half a GiB of snapshot here). Applies meanwhile wait for the write lock
    /// without blocking their async thread ([`SmShared::write_when_free`]).
    pub(crate) fn read_long(&self) -> LongRead<'_> {
        *self.lock_long_reads() += 1;
        LongRead {
            data: Some(self.read()),
            shared: self,
        }
    }

    /// The write lock, for an apply on an async thread. Short reads only hold the lock for a
    /// lookup, so with no long read under way it is waited for as a writer, ahead of new
    /// readers. A long read would stop the thread, and on a one-thread runtime every
    /// connection, for its whole encoding; then the lock is tried each millisecond instead.
    /// A long read counts itself before it takes the lock, under the same mutex this checks,
    /// so an apply never starts waiting as a writer behind one.
    async fn write_when_free(&self) -> RwLockWriteGuard<'_, SmData> {
        loop {
            {
                let long_reads = self.lock_long_reads();
                if *long_reads == 0 {
                    return self.write();
                }
            }
            match self.data.try_write() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(_)) => {
                    panic!("state lock poisoned by a panic during apply")
                }
                Err(TryLockError::WouldBlock) => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn lock_long_reads(&self) -> MutexGuard<'_, usize> {
        self.long_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

    /// Runs `f` on the state now, and again each time an apply wakes `wake` (or the state is
    /// replaced), until it answers `Some`.
    pub(crate) async fn wait_for<T>(
        &self,
        wake: Wake,
        mut f: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, NodeError> {
        let waiting = self.waiters.wait_on(wake);
        loop {
            let mut woken = std::pin::pin!(waiting.notified());
            woken.as_mut().enable();
            if self.is_closed() {
                return Err(NodeError::ShuttingDown);
            }
            if let Some(answer) = f(&self.read().state) {
                return Ok(answer);
            }
            woken.await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends every watcher: the node is shutting down.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Every waiter then sees the node closed.
        self.waiters.wake_all();
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
            Some((meta, mut file)) => {
                let bytes = file
                    .read_body()
                    .map_err(|e| NodeError::Storage(format!("reading the snapshot: {e}")))?;
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
                long_reads: Mutex::new(0),
                waiters: Waiters::default(),
            }),
            snapshots: Arc::new(snapshots),
        })
    }

    pub(crate) fn shared(&self) -> Arc<SmShared> {
        Arc::clone(&self.shared)
    }

    pub(crate) fn snapshots(&self) -> Arc<SnapshotDir> {
        Arc::clone(&self.snapshots)
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
        woken: Vec::new(),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
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
            let woken = {
                let mut data = self.shared.write_when_free().await;
                let (mut applied, events) = match entry.payload {
                    EntryPayload::Normal(LogRequest(request)) => {
                        let mut applied = data.state.apply(&request);
                        // Debug builds (every test run) recheck the invariants as they go; the
                        // check walks the whole state, so on every 64th entry, not every one.
                        if cfg!(debug_assertions) && log_id.index % INVARIANT_CHECK_EVERY == 0 {
                            data.state.check_invariants();
                        }
                        // The events go to the watchers, not back to the caller, and the wakes
                        // to the waiters.
                        let events = std::mem::take(&mut applied.events);
                        (applied, events)
                    }
                    EntryPayload::Blank => (nothing_applied(&data.state), Vec::new()),
                    EntryPayload::Membership(membership) => {
                        data.membership = StoredMembership::new(Some(log_id), membership);
                        (nothing_applied(&data.state), Vec::new())
                    }
                };
                data.last_applied = Some(log_id);
                // Before the reply, so a caller who has its answer sees the entry applied.
                self.shared.applied.send_replace(Some(log_id.index));
                let revision = applied.revision;
                let woken = std::mem::take(&mut applied.woken);
                // The caller first: woken after the watchers, its reply would wait in the run
                // queue behind every watch stream this entry wakes.
                if let Some(responder) = responder {
                    responder.send(applied);
                }
                // Sent under the write lock: see the join argument in `watch`.
                if !events.is_empty() && self.shared.events.receiver_count() > 0 {
                    let _ = self.shared.events.send(WatchMessage::Applied {
                        revision,
                        events: events.into(),
                    });
                }
                woken
            };
            // Once the state is written: a waiter woken now sees what woke it.
            self.shared.waiters.wake(&woken);
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
        mut snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // Loaded, then persisted, before the swap: if either fails the state machine is unchanged.
        let snapshots = Arc::clone(&self.snapshots);
        let for_file = meta.clone();
        let (state, body_bytes) = blocking(move || {
            let bytes = snapshot.read_body()?;
            let state = State::from_snapshot(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot does not load: {e}"),
                )
            })?;
            let body_bytes = bytes.len();
            drop(bytes);
            snapshots.keep(&for_file, snapshot)?;
            Ok((state, body_bytes))
        })
        .await?;
        self.shared
            .snapshot_bytes
            .store(body_bytes, Ordering::Relaxed);
        {
            let mut data = self.shared.write_when_free().await;
            data.state = state;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership.clone();
            // The history jumped: live watchers re-read it from where they were.
            let _ = self.shared.events.send(WatchMessage::Reset);
        }
        // Anything may have changed: every waiter looks again.
        self.shared.waiters.wake_all();
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
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (shared, snapshots) = (Arc::clone(&self.shared), Arc::clone(&self.snapshots));
        let (meta, file) = blocking(move || {
            // Encoded straight into the file under the read lock, so that the bytes and the log
            // position agree and no second copy of the state is ever in memory; applies wait for
            // the encoding (not for the sync).
            let data = shared.read_long();
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
            };
            let mut incoming = snapshots.incoming(&meta)?;
            data.state
                .write_snapshot(|chunk| incoming.write_all(chunk))?;
            drop(data);
            let file = incoming.finish()?;
            shared
                .snapshot_bytes
                .store(file.body_len() as usize, Ordering::Relaxed);
            let file = snapshots.keep(&meta, file)?;
            Ok((meta, file))
        })
        .await?;
        tracing::debug!(last_applied = ?meta.last_log_id, bytes = file.body_len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

/// The body of one snapshot in its file: the node's newest snapshot, or one being written or
/// received (`incoming`, deleted when dropped unless kept). The open handle reads the same bytes
/// even after a newer snapshot replaces the file.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    file: fs::File,
    path: PathBuf,
    body_offset: u64,
    len: u64,
    incoming: bool,
}

impl SnapshotFile {
    pub(crate) fn body_len(&self) -> u64 {
        self.len - self.body_offset
    }

    /// The whole body, in memory: what a state loads from.
    pub(crate) fn read_body(&mut self) -> io::Result<Vec<u8>> {
        self.file.seek(SeekFrom::Start(self.body_offset))?;
        let mut bytes = Vec::with_capacity(usize::try_from(self.body_len()).unwrap_or(0));
        (&self.file).take(self.body_len()).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The body as a reader from its start, for sending it to another member.
    pub(crate) fn into_body_reader(mut self) -> io::Result<impl io::Read + Send + 'static> {
        self.file.seek(SeekFrom::Start(self.body_offset))?;
        let len = self.body_len();
        let file = self.file.try_clone()?;
        Ok(file.take(len))
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.incoming {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A snapshot file being written: its header is written when it is made; the body is written
/// through `io::Write` (in the encoder's or the sender's chunks, so unbuffered), then
/// [`Incoming::finish`] syncs it. Deleted if dropped unfinished.
pub(crate) struct Incoming {
    /// `None` once finished.
    file: Option<fs::File>,
    path: PathBuf,
    body_offset: u64,
}

impl io::Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Incoming {
    fn writer(&mut self) -> &mut fs::File {
        self.file
            .as_mut()
            .expect("an incoming snapshot is written before it is finished")
    }

    /// Syncs the file; it stays incoming until [`SnapshotDir::keep`].
    pub(crate) fn finish(mut self) -> io::Result<SnapshotFile> {
        // From here the snapshot file deletes itself if dropped while incoming.
        let mut snapshot = SnapshotFile {
            file: self.file.take().expect("finished once"),
            path: std::mem::take(&mut self.path),
            body_offset: self.body_offset,
            len: 0,
            incoming: true,
        };
        snapshot.file.sync_all()?;
        snapshot.len = snapshot.file.metadata()?.len();
        Ok(snapshot)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The snapshot directory: one file per snapshot, named by the index after its last entry, only
/// the newest kept.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// Writers (a build and an install may overlap) take turns, so the cleanup of one never
    /// deletes the file the other is about to rename into place.
    write_lock: Mutex<()>,
    /// Numbers the incoming files.
    incoming: AtomicU64,
}

impl SnapshotDir {
    /// The directory as it is, to read only: nothing is created or cleaned up.
    pub(crate) fn at(dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: dir.to_path_buf(),
            write_lock: Mutex::new(()),
            incoming: AtomicU64::new(0),
        }
    }

    /// Opens (creating) the directory and deletes what a crash left incoming.
    pub(crate) fn open(dir: &Path) -> io::Result<SnapshotDir> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(INCOMING_PREFIX))
            {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            write_lock: Mutex::new(()),
            incoming: AtomicU64::new(0),
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

    /// A new incoming file with the header for `meta` written; the body follows through it.
    pub(crate) fn incoming(&self, meta: &SnapshotMeta) -> io::Result<Incoming> {
        let header = encode_header(meta)?;
        let n = self.incoming.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{INCOMING_PREFIX}{n}.tmp"));
        // Readable too: a received snapshot is loaded from this file before it is kept.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut incoming = Incoming {
            file: Some(file),
            path,
            body_offset: header.len() as u64,
        };
        incoming.write_all(&header)?;
        Ok(incoming)
    }

    /// Makes `snapshot` this directory's snapshot for `meta`: an incoming file of this
    /// directory is renamed into place; any other (another node's, in tests) is copied. Then
    /// every older snapshot file is deleted. Returns the kept file.
    pub(crate) fn keep(
        &self,
        meta: &SnapshotMeta,
        mut snapshot: SnapshotFile,
    ) -> io::Result<SnapshotFile> {
        if !(snapshot.incoming && snapshot.path.parent() == Some(self.dir.as_path())) {
            let mut incoming = self.incoming(meta)?;
            io::copy(&mut snapshot.into_body_reader()?, &mut incoming)?;
            snapshot = incoming.finish()?;
        }
        let _turn = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = self.path(meta.last_log_id.map_or(0, |l| l.index + 1));
        fs::rename(&snapshot.path, &path)?;
        snapshot.path = path;
        snapshot.incoming = false;
        plinth_wal::sync_dir(&self.dir).map_err(io::Error::other)?;
        // The new snapshot is in place: an old file that will not go is only a waste of disk,
        // and the next snapshot tries again.
        for (_, path) in self.list()?.into_iter().skip(1) {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete an old snapshot");
            }
        }
        Ok(snapshot)
    }

    /// The newest snapshot whose header decodes. A damaged newer file is reported and skipped:
    /// an older snapshot plus the log may still cover the state (openraft refuses to start if
    /// the log below was purged).
    pub(crate) fn newest(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        // In turn with `keep`, whose cleanup could delete a listed file before it is opened.
        let _turn = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, path) in self.list()? {
            let mut file = fs::File::open(&path)?;
            match read_header(&mut file) {
                Ok((meta, body_offset)) => {
                    let len = file.metadata()?.len();
                    return Ok(Some((
                        meta,
                        SnapshotFile {
                            file,
                            path,
                            body_offset,
                            len,
                            incoming: false,
                        },
                    )));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping a snapshot that does not decode")
                }
            }
        }
        Ok(None)
    }
}

fn encode_header(meta: &SnapshotMeta) -> io::Result<Vec<u8>> {
    let meta_bytes =
        postcard::to_stdvec(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let meta_len = u32::try_from(meta_bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "snapshot metadata over 4 GiB"))?;
    let mut out = Vec::with_capacity(16 + meta_bytes.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    Ok(out)
}

/// Reads a snapshot file's header: its meta, and where its body starts.
fn read_header(file: &mut fs::File) -> io::Result<(SnapshotMeta, u64)> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut fixed = [0u8; 16];
    file.read_exact(&mut fixed).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("not a plinth snapshot file".to_owned()),
        _ => e,
    })?;
    if &fixed[..8] != SNAPSHOT_MAGIC {
        return Err(invalid("not a plinth snapshot file".to_owned()));
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(invalid(format!(
            "snapshot file format version {version} is not supported; this build reads {SNAPSHOT_VERSION}"
        )));
    }
    let meta_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes"));
    let mut meta_bytes = Vec::new();
    file.take(u64::from(meta_len))
        .read_to_end(&mut meta_bytes)?;
    if meta_bytes.len() != meta_len as usize {
        return Err(invalid(
            "snapshot metadata runs past the end of the file".to_owned(),
        ));
    }
    let meta: SnapshotMeta = postcard::from_bytes(&meta_bytes)
        .map_err(|e| invalid(format!("snapshot metadata does not decode: {e}")))?;
    Ok((meta, 16 + u64::from(meta_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::RaftLeaderId as _;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn meta_at(index: u64) -> SnapshotMeta {
        let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(1, 1);
        SnapshotMeta {
            last_log_id: Some(LogId::new(leader.to_committed(), index)),
            last_membership: StoredMembership::default(),
        }
    }

    #[test]
    fn a_snapshot_is_written_through_an_incoming_file_and_only_the_newest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        for (index, body) in [(4, b"four".as_slice()), (9, b"nine, longer")] {
            let mut incoming = snapshots.incoming(&meta_at(index)).unwrap();
            incoming.write_all(body).unwrap();
            let file = incoming.finish().unwrap();
            assert_eq!(file.body_len(), body.len() as u64);
            snapshots.keep(&meta_at(index), file).unwrap();
        }
        assert_eq!(names(dir.path()), ["snapshot-00000000000000000010.bin"]);
        let (meta, mut file) = snapshots.newest().unwrap().unwrap();
        assert_eq!(meta, meta_at(9));
        assert_eq!(file.read_body().unwrap(), b"nine, longer");
        let mut sent = Vec::new();
        file.into_body_reader()
            .unwrap()
            .read_to_end(&mut sent)
            .unwrap();
        assert_eq!(sent, b"nine, longer");
    }

    #[test]
    fn an_incoming_snapshot_not_kept_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        // Dropped while written (an encoding that failed) and after it was synced (a received
        // snapshot that openraft did not install).
        let mut unfinished = snapshots.incoming(&meta_at(3)).unwrap();
        unfinished.write_all(b"half").unwrap();
        let mut received = snapshots.incoming(&meta_at(5)).unwrap();
        received.write_all(b"received").unwrap();
        let mut finished = received.finish().unwrap();
        // Loaded before openraft decides to install it.
        assert_eq!(finished.read_body().unwrap(), b"received");
        assert_eq!(names(dir.path()).len(), 2);
        drop((unfinished, finished));
        assert!(names(dir.path()).is_empty());
        // A crash leaves them behind: the next open deletes them, and never a snapshot.
        fs::write(dir.path().join(".incoming-7.tmp"), b"torn").unwrap();
        fs::write(dir.path().join("snapshot-00000000000000000002.bin"), b"x").unwrap();
        SnapshotDir::open(dir.path()).unwrap();
        assert_eq!(names(dir.path()), ["snapshot-00000000000000000002.bin"]);
    }

    #[test]
    fn a_snapshot_from_another_directory_is_copied_in_and_the_original_stays() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = SnapshotDir::open(from.path()).unwrap();
        let mut incoming = source.incoming(&meta_at(6)).unwrap();
        incoming.write_all(b"state").unwrap();
        let kept = source
            .keep(&meta_at(6), incoming.finish().unwrap())
            .unwrap();
        let target = SnapshotDir::open(to.path()).unwrap();
        let mut copied = target.keep(&meta_at(6), kept).unwrap();
        assert_eq!(copied.read_body().unwrap(), b"state");
        assert_eq!(names(from.path()), names(to.path()));
    }

    #[test]
    fn an_apply_waiting_behind_a_long_read_leaves_its_one_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::clone(&StateMachineStore::open(dir.path()).unwrap().shared);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (encoding_tx, encoding) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let snapshot = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || {
                let _long = shared.read_long();
                encoding_tx.send(()).unwrap();
                // Bounded, so that a blocked thread fails the test rather than hangs it.
                done.recv_timeout(Duration::from_secs(10)).is_ok()
            }
        });
        encoding.recv().unwrap();
        runtime.block_on(async {
            let apply = tokio::spawn({
                let shared = Arc::clone(&shared);
                async move {
                    let _write = shared.write_when_free().await;
                }
            });
            // Another connection's task on the same thread keeps running meanwhile.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(
                    !apply.is_finished(),
                    "the write lock waits for the long read"
                );
            }
            done_tx.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(10), apply)
                .await
                .expect("the apply took the lock once the long read ended")
                .unwrap();
        });
        assert!(
            snapshot.join().unwrap(),
            "the long read was ended by the test"
        );
        assert_eq!(*shared.lock_long_reads(), 0);
        // With no long read, it is waited for as a writer.
        drop(runtime.block_on(shared.write_when_free()));
    }
}
