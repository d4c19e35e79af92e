//! Node: the replica handle — start (open storage, form or rejoin the cluster, become leader),
//! propose, read, watch, status, shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::{ReadPolicy, ServerState};
use plinth_core::kv::KeySpan;
use plinth_core::{Applied, Command, Millis, Request, Revision, State, Wake};

use crate::config::NodeConfig;
use crate::error::{NodeError, from_fatal, not_leader};
use crate::log_store::LogStore;
use crate::network::{PeerNetwork, PeerServer, PeerService};
use crate::state_machine::{SmShared, StateMachineStore};
use crate::ticker::Ticker;
use crate::types::{Status, Submitted};
use crate::watch::Watcher;
use crate::{LogRequest, Raft};

/// A running replica. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    pub(crate) cfg: NodeConfig,
    /// Held while the node runs: two processes on one data directory would corrupt the log.
    /// The kernel releases it when the process dies, even by `kill -9`.
    pub(crate) _data_dir_lock: std::fs::File,
    pub(crate) raft: Raft,
    pub(crate) log: LogStore,
    pub(crate) sm: Arc<SmShared>,
    /// The snapshot directory, where the peer service receives a snapshot sent by the leader.
    pub(crate) snapshots: Arc<crate::state_machine::SnapshotDir>,
    /// The largest stamp this node has put on a command, so stamps never go backwards even if
    /// the wall clock does.
    pub(crate) last_stamp_ms: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    /// Whether this process has abandoned the lock waits its node's previous process left.
    pub(crate) orphans_abandoned: AtomicBool,
    /// The log's appended bytes when the last snapshot built was asked for.
    pub(crate) snapshot_log_mark: AtomicU64,
    /// The applied index a snapshot was last asked for at, when, and the log's appended bytes
    /// then: until one at least that new is built, no other is asked for.
    pub(crate) snapshot_pending: Mutex<Option<(u64, Instant, u64)>>,
    pub(crate) ticker: Mutex<Option<Ticker>>,
}

impl Node {
    /// Opens the data directory and runs the replica. On a fresh directory it initializes a
    /// cluster whose only member is this node (the same call a real cluster's first node makes);
    /// on a directory with a log it rejoins, which for a single node means electing itself.
    /// Returns once this node is leader and its state reflects every committed entry.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let raft_config = Arc::new(cfg.raft_config()?);
        let (data_dir_lock, log, sm) = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
                std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
                    NodeError::Storage(format!(
                        "cannot create data directory {}: {e}",
                        cfg.data_dir.display()
                    ))
                })?;
                let lock = lock_data_dir(&cfg.data_dir)?;
                let log = LogStore::open(&cfg.wal_dir(), cfg.wal_options())?;
                if let Some(idle) = &cfg.idle_sync {
                    idle.add(log.wal());
                }
                crate::backup::apply_staged_restore(&cfg, &log)?;
                let sm = StateMachineStore::open(&cfg.snapshot_dir())?;
                Ok((lock, log, sm))
            })
            .await
            .map_err(|e| NodeError::Storage(format!("opening storage failed: {e}")))??
        };
        let sm_shared = sm.shared();
        let snapshots = sm.snapshots();
        let clock = sm_shared.read().state.clock();
        let network = PeerNetwork {
            source_ip: cfg.source_ip,
        };
        let raft = Raft::new(cfg.node_id, raft_config, network, log.clone(), sm)
            .await
            .map_err(from_fatal)?;

        let node = Node {
            inner: Arc::new(NodeInner {
                cfg,
                _data_dir_lock: data_dir_lock,
                raft,
                log,
                sm: sm_shared,
                snapshots,
                last_stamp_ms: AtomicU64::new(clock.0),
                shutting_down: AtomicBool::new(false),
                orphans_abandoned: AtomicBool::new(false),
                snapshot_log_mark: AtomicU64::new(0),
                snapshot_pending: Mutex::new(None),
                ticker: Mutex::new(None),
            }),
        };
        let started = match node.alone().await {
            Ok(true) => node.become_leader().await,
            Ok(false) => node.join_cluster().await.map(|()| 0),
            Err(e) => Err(e),
        };
        match started {
            Ok(term) => {
                // In a cluster the ticker does the leadership duties of whichever term this
                // node first leads; alone, `become_leader` did them for `term`.
                let ticker = Ticker::spawn(
                    Arc::downgrade(&node.inner),
                    node.inner.cfg.tick_interval,
                    term,
                );
                *node
                    .inner
                    .ticker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(ticker);
                Ok(node)
            }
            Err(e) => {
                node.shutdown().await;
                Err(e)
            }
        }
    }

    /// A lazily connected channel to the member at `addr`, as the Raft messages use: how the
    /// server forwards a call to the leader.
    pub fn member_channel(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        crate::cluster::member_channel(addr, self.inner.cfg.source_ip)
    }

    /// The internal gRPC service the other members send Raft messages to; the server mounts it
    /// beside the public API.
    pub fn peer_service(&self) -> PeerServer<PeerService> {
        PeerServer::new(PeerService {
            node_id: self.inner.cfg.node_id,
            raft: self.inner.raft.clone(),
            snapshots: Arc::clone(&self.inner.snapshots),
        })
        .max_decoding_message_size(crate::network::PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(crate::network::PEER_MESSAGE_BYTES_MAX)
    }

    /// Proposes `command` and returns once it is applied. A deterministic refusal by the state
    /// machine is a successful return whose `result` is an error; `NodeError` means the command
    /// was not applied (or, for `Unavailable` after a leader change, that its fate is unknown).
    /// The answer's `events` are empty: the state machine hands them to the watchers.
    pub async fn propose(&self, command: Command) -> Result<Applied, NodeError> {
        self.submit(command).await?.outcome().await
    }

    /// Hands `command` to openraft and returns once openraft has it, with what will answer it
    /// (on a follower, that it is not the leader). The write goes on whether or not the answer
    /// is awaited: a caller that must undo what its write did if it goes away can keep the
    /// answer alive past itself (a lock acquire).
    pub async fn submit(&self, command: Command) -> Result<Submitted, NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        State::validate(&command).map_err(NodeError::Invalid)?;
        let request = Request {
            stamp: self.stamp(),
            command,
        };
        let (responder, answer) = ProgressResponder::complete_only();
        self.inner
            .raft
            .client_write_ff(LogRequest(request), Some(responder))
            .await
            .map_err(from_fatal)?;
        Ok(Submitted {
            answer,
            raft: self.inner.raft.clone(),
        })
    }

    /// Runs `f` on the state. Linearizable: openraft confirms this node still leads (read index)
    /// and the read waits until the state has applied that index, so it sees every write
    /// acknowledged before it began. Otherwise the local state is read at once and may be stale
    /// (on a follower, or a deposed leader).
    pub async fn read<T>(
        &self,
        linearizable: bool,
        f: impl FnOnce(&State) -> T,
    ) -> Result<T, NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        if linearizable {
            self.barrier().await?;
        }
        let data = self.inner.sm.read();
        Ok(f(&data.state))
    }

    /// The whole state as a backup file (see [`crate::inspect_backup`]), after a linearizable
    /// read: every write acknowledged before the call is in it. Returns the file's bytes and
    /// the revision they hold. The encoding runs off the async threads, holding the state's
    /// read lock (applies wait for it, as for a snapshot).
    pub async fn backup(&self) -> Result<(Vec<u8>, Revision), NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        self.barrier().await?;
        let sm = Arc::clone(&self.inner.sm);
        tokio::task::spawn_blocking(move || {
            let hint = sm.snapshot_bytes();
            let data = sm.read_long();
            let bytes = crate::backup::encode(&data.state, hint + hint / 8);
            (bytes, data.state.revision())
        })
        .await
        .map_err(|e| NodeError::Unavailable(format!("encoding the backup failed: {e}")))
    }

    /// Waits until the state reflects every entry committed before now (read index).
    pub(crate) async fn barrier(&self) -> Result<(), NodeError> {
        let linearizer = match self
            .inner
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
        {
            Ok(linearizer) => linearizer,
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(not_leader(f));
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                return Err(NodeError::Unavailable(format!(
                    "cannot confirm leadership: {e}"
                )));
            }
            Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
        };
        // Our own applied index, updated as each entry is applied, rather than openraft's
        // metrics, which lag behind the state machine by a notification.
        self.inner
            .sm
            .wait_applied(linearizer.read_log_id().index())
            .await
    }

    /// Waits until `f`, run on the local state, answers `Some`: how a queued acquire learns of
    /// its grant, an observer of a new leader, a long-polling receive of a message. `f` runs
    /// now and again only when an apply wakes `wake` (what the caller waits on; see
    /// `plinth_core::Wake`), never after every apply. The first look is linearizable, so the
    /// wait starts from every write acknowledged before it began; a node shutting down ends the
    /// wait with `ShuttingDown`. Callers bound the wait with a timeout.
    pub async fn wait_for<T>(
        &self,
        wake: Wake,
        f: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        self.barrier().await?;
        self.inner.sm.wait_for(wake, f).await
    }

    /// Follows the KV events after revision `after` that match `span`. History is read on the
    /// first `next`; see [`Watcher`].
    pub async fn watch(&self, span: KeySpan, after: Revision) -> Result<Watcher, NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        Ok(Watcher::new(
            Arc::clone(&self.inner.sm),
            span,
            after,
            self.inner.cfg.watch_progress_interval,
        ))
    }

    pub fn status(&self) -> Status {
        let (leader_id, term, last_log_index) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term, m.last_log_index)
        };
        let wal = self.inner.log.wal();
        Status {
            node_id: self.inner.cfg.node_id,
            leader_id,
            term,
            last_log_index: last_log_index.unwrap_or(0),
            applied_index: self.inner.sm.applied_index().unwrap_or(0),
            revision: self.inner.sm.read().state.revision(),
            wal_bytes: wal.size_bytes(),
            wal_fsyncs: wal.fsync_count(),
            wal_segments: wal.segment_count(),
        }
    }

    /// The error that stopped this replica's Raft core, if one did: a storage failure (a disk
    /// that failed a write or a sync, an entry the log could not take) or a panic. From then on
    /// the replica refuses every write and linearizable read, so the process must exit and be
    /// restarted (crash-only), never live on as a member that answers nothing. `None` while it
    /// runs, and once `shutdown` has begun.
    pub fn fatal_error(&self) -> Option<NodeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return None;
        }
        let metrics = self.inner.raft.metrics();
        let running = metrics.borrow_watched().running_state.clone();
        running.err().map(from_fatal)
    }

    /// Resolves with the error once this replica's Raft core stops by itself (see
    /// [`Node::fatal_error`]); never, if it stops because of `shutdown`.
    pub async fn failed(&self) -> NodeError {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(e) = self.fatal_error() {
                return e;
            }
            if metrics.changed().await.is_err() {
                if self.inner.shutting_down.load(Ordering::Acquire) {
                    return std::future::pending().await;
                }
                return self.fatal_error().unwrap_or_else(|| {
                    NodeError::Unavailable("the raft core stopped without a reason".to_owned())
                });
            }
        }
    }

    /// The Raft term this node is in: what every reply's header carries. Cheaper than
    /// [`Node::status`], which also reads the log's and the state's figures.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().current_term
    }

    /// Data fsyncs of the write-ahead log since this node started.
    pub fn wal_fsync_count(&self) -> u64 {
        self.inner.log.wal().fsync_count()
    }

    pub fn node_id(&self) -> u64 {
        self.inner.cfg.node_id
    }

    /// Stops the ticker and Raft, ends every watcher, makes the log durable and saves the
    /// committed position. Later calls (and calls on other clones) return at once.
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let ticker = self
            .inner
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(ticker) = ticker {
            ticker.stop().await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::error!(error = %e, "raft did not shut down cleanly");
        }
        self.inner.sm.close();
        let log = self.inner.log.clone();
        match tokio::task::spawn_blocking(move || log.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "closing the log failed"),
            Err(e) => tracing::error!(error = %e, "closing the log failed"),
        }
        tracing::info!(node_id = self.inner.cfg.node_id, "shut down");
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Node {
        Node { inner }
    }

    /// Whether this node is the leader, and in which term.
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        (m.state == ServerState::Leader && m.current_leader == Some(self.inner.cfg.node_id))
            .then_some(m.current_term)
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub(crate) fn state_machine(&self) -> &SmShared {
        &self.inner.sm
    }

    /// The wall clock in ms since the epoch, never below a stamp this node used before.
    fn stamp(&self) -> Millis {
        let now = now_ms();
        let previous = self.inner.last_stamp_ms.fetch_max(now, Ordering::AcqRel);
        Millis(previous.max(now))
    }
}

pub(crate) fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; stamping 0 keeps the log clock where it is.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes the exclusive lock on `<data_dir>/LOCK`, refusing to start if another process holds it.
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, NodeError> {
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| NodeError::Storage(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::Storage(format!(
            "data directory {} is in use by another plinth process; stop it or choose another data directory",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(NodeError::Storage(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}
