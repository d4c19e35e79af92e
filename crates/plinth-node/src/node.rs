//! Node: the replica handle — start (open storage, form or rejoin the cluster, become leader),
//! propose, read, watch, status, shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{
    ClientWriteError, Fatal, ForwardToLeader, InitializeError, LinearizableReadError, RaftError,
};
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::{BasicNode, ReadPolicy, ServerState};
use plinth_core::kv::KeySpan;
use plinth_core::{Applied, Command, Millis, Request, Revision, State, Wake};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::log_store::LogStore;
use crate::network::{PeerNetwork, PeerServer, PeerService};
use crate::state_machine::{SmShared, StateMachineStore};
use crate::ticker::Ticker;
use crate::watch::Watcher;
use crate::{LogRequest, Raft, TypeConfig};

/// How long `start` waits for this node to win its election. A single node needs one election
/// timeout (at most 300 ms); the margin covers a slow disk during recovery.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Marks a data directory whose node was told to join a cluster: until it has a log, it waits
/// to be added instead of forming a cluster of its own.
const JOINING_FILE: &str = "JOINING";

/// How long a snapshot asked for may take to build before it is asked for again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);

/// A snapshot is due after this many `snapshot_logs_since_last` intervals whatever the log's
/// bytes, or, for a larger state, after one entry for every `SNAPSHOT_BYTES_PER_ENTRY` bytes of
/// the last snapshot.
const SNAPSHOT_ENTRIES_FACTOR: u64 = 10;

/// Replaying an entry at a restart costs about what encoding, writing and loading this many
/// bytes of snapshot does, so the entries a restart replays stay in proportion to the state it
/// loads: a 450 MB state is snapshotted every 1.8 million small entries, not every 100,000
/// (which, at 18,000 lock operations a second, had re-encoded it every 5 s).
const SNAPSHOT_BYTES_PER_ENTRY: u64 = 256;

/// A running replica. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    cfg: NodeConfig,
    /// Held while the node runs: two processes on one data directory would corrupt the log.
    /// The kernel releases it when the process dies, even by `kill -9`.
    _data_dir_lock: std::fs::File,
    raft: Raft,
    log: LogStore,
    sm: Arc<SmShared>,
    /// The snapshot directory, where the peer service receives a snapshot sent by the leader.
    snapshots: Arc<crate::state_machine::SnapshotDir>,
    /// The largest stamp this node has put on a command, so stamps never go backwards even if
    /// the wall clock does.
    last_stamp_ms: AtomicU64,
    shutting_down: AtomicBool,
    /// Whether this process has abandoned the lock waits its node's previous process left.
    orphans_abandoned: AtomicBool,
    /// The log's appended bytes when the last snapshot built was asked for.
    snapshot_log_mark: AtomicU64,
    /// The applied index a snapshot was last asked for at, when, and the log's appended bytes
    /// then: until one at least that new is built, no other is asked for.
    snapshot_pending: Mutex<Option<(u64, Instant, u64)>>,
    ticker: Mutex<Option<Ticker>>,
}

/// A snapshot of the node's position, for health checks and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Index of the last entry in the log (the first entry, the initial membership, is index 0).
    pub last_log_index: u64,
    /// Index of the last entry applied to the state.
    pub applied_index: u64,
    pub revision: Revision,
    pub wal_bytes: u64,
    /// Data fsyncs of the write-ahead log since this node started.
    pub wal_fsyncs: u64,
    pub wal_segments: usize,
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

    /// Whether this node is a cluster of itself alone, which it leads from its first start. A
    /// log decides by its membership (only this node in it), whatever the flags say now, so a
    /// member restarted without `peers` or `join` stays a member. A pristine directory decides
    /// by the configuration: no other peer, not told to join now, and never told to join
    /// before (a node that was told once waits to be added even if restarted without it, so
    /// it never becomes a cluster of its own with writes the real one would erase).
    async fn alone(&self) -> Result<bool, NodeError> {
        let raft = &self.inner.raft;
        let cfg = &self.inner.cfg;
        if raft.is_initialized().await.map_err(from_fatal)? {
            let id = cfg.node_id;
            return raft
                .with_raft_state(move |s| {
                    let members = s.membership_state.effective().membership();
                    members.nodes().all(|(node, _)| *node == id)
                })
                .await
                .map_err(from_fatal);
        }
        let marker = cfg.data_dir.join(JOINING_FILE);
        if cfg.join {
            std::fs::write(
                &marker,
                b"started with --join; waiting to be added to a cluster\n",
            )
            .map_err(|e| NodeError::Storage(format!("cannot write {}: {e}", marker.display())))?;
            return Ok(false);
        }
        if marker.exists() {
            tracing::info!("this node was told to join a cluster; it waits to be added");
            return Ok(false);
        }
        Ok(cfg.alone())
    }

    /// In a cluster: initializes it from `peers` if this data directory is pristine (every
    /// member does the same with the same list, which openraft makes safe), or waits to be
    /// added if told to join. Returns at once: the election needs the other members, which
    /// reach this node through the server that serves [`Node::peer_service`].
    async fn join_cluster(&self) -> Result<(), NodeError> {
        let raft = &self.inner.raft;
        let cfg = &self.inner.cfg;
        if cfg.join
            || cfg.data_dir.join(JOINING_FILE).exists()
            || raft.is_initialized().await.map_err(from_fatal)?
        {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = cfg
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(
                node_id = cfg.node_id,
                members = ?cfg.peers.keys().collect::<Vec<_>>(),
                "initialized the cluster"
            ),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(RaftError::APIError(e)) => return Err(NodeError::Config(e.to_string())),
            Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
        }
        Ok(())
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

    /// Initializes the cluster if the log is pristine, waits to be leader, catches up, and runs
    /// what a new leader owes the leases. Returns the term it leads in.
    async fn become_leader(&self) -> Result<u64, NodeError> {
        let raft = &self.inner.raft;
        let id = self.inner.cfg.node_id;
        if !raft.is_initialized().await.map_err(from_fatal)? {
            let members = BTreeMap::from([(id, BasicNode::new(&self.inner.cfg.advertise_addr))]);
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id = id, "initialized a single-member cluster"),
                // Already initialized: what we wanted.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(NodeError::Unavailable(e.to_string())),
                Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
            }
        }
        let metrics = raft
            .wait(Some(LEADER_WAIT))
            .metrics(
                |m| m.state == ServerState::Leader && m.current_leader == Some(id),
                "become leader",
            )
            .await
            .map_err(|e| NodeError::Unavailable(format!("node {id} did not become leader: {e}")))?;
        self.leadership_began().await?;
        tracing::info!(node_id = id, term = metrics.current_term, "leading");
        Ok(metrics.current_term)
    }

    /// Does what a node owes the state when it starts to lead (`State::leadership_duties`:
    /// abandoning the lock waits no call waits for, refreshing the leases), once its state has
    /// caught up with every committed entry.
    pub(crate) async fn leadership_began(&self) -> Result<(), NodeError> {
        self.barrier().await?;
        let first = !self.inner.orphans_abandoned.load(Ordering::Acquire);
        let duties = self
            .inner
            .sm
            .read()
            .state
            .leadership_duties(self.inner.cfg.node_id, first);
        for command in duties {
            let duty = format!("{command:?}");
            self.propose(command).await?;
            tracing::info!(%duty, "done a new leader's duty");
        }
        self.inner.orphans_abandoned.store(true, Ordering::Release);
        Ok(())
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
    async fn barrier(&self) -> Result<(), NodeError> {
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

    /// Triggers a snapshot if one is due: at least `snapshot_logs_since_last` entries applied
    /// since the last, and a log at least as large as it (see [`NodeConfig`]). The ticker asks
    /// this on every replica, leader or not.
    pub(crate) async fn maybe_snapshot(&self) {
        let (applied, last) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.snapshot.map_or(0, |l| l.index + 1),
            )
        };
        let entries = applied.saturating_sub(last);
        if entries < self.inner.cfg.snapshot_logs_since_last {
            return;
        }
        let appended = self.inner.log.appended_bytes();
        {
            let mut pending = self
                .inner
                .snapshot_pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((index, asked_at, appended_then)) = *pending {
                if last > index {
                    // Built: the log it lets go of is what had been appended when it was asked.
                    self.inner
                        .snapshot_log_mark
                        .store(appended_then, Ordering::Relaxed);
                    *pending = None;
                } else if asked_at.elapsed() < SNAPSHOT_RETRY {
                    // Asked for and not built yet (openraft ignores a second ask meanwhile); a
                    // build that failed is asked for again after a while.
                    return;
                }
            }
        }
        let since = appended.saturating_sub(self.inner.snapshot_log_mark.load(Ordering::Relaxed));
        let due = snapshot_due(
            entries,
            since,
            self.inner.sm.snapshot_bytes() as u64,
            self.inner.cfg.snapshot_logs_since_last,
        );
        if !due {
            return;
        }
        match self.inner.raft.trigger().snapshot().await {
            Ok(()) => {
                *self
                    .inner
                    .snapshot_pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((applied, Instant::now(), appended));
            }
            Err(e) => tracing::warn!(error = %e, "could not trigger a snapshot"),
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

pub(crate) fn not_leader(f: ForwardToLeader<TypeConfig>) -> NodeError {
    NodeError::NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.map(|n| n.addr),
    }
}

/// The answer to a write handed to the log by [`Node::submit`].
pub struct Submitted {
    answer: tokio::sync::oneshot::Receiver<ClientWriteResult<TypeConfig>>,
    raft: Raft,
}

impl Submitted {
    /// Waits until the write is applied (or refused) and answers what it did. A second call
    /// has nothing left to wait for and says so.
    pub async fn outcome(&mut self) -> Result<Applied, NodeError> {
        if self.answer.is_terminated() {
            return Err(NodeError::Unavailable(
                "this write's outcome was already taken".to_owned(),
            ));
        }
        match (&mut self.answer).await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(e)) => Err(from_write_error(e)),
            Err(_) => Err(core_stop_error(&self.raft).await),
        }
    }
}

/// How long a write dropped unanswered waits for the raft core to report why it stopped.
const CORE_STOP_WAIT: Duration = Duration::from_secs(1);

/// Why the raft core dropped a write unanswered: the fatal error it stopped with, as its metrics
/// report it. A core task that ended without reporting one panicked.
async fn core_stop_error(raft: &Raft) -> NodeError {
    let mut metrics = raft.metrics();
    let stopped = tokio::time::timeout(CORE_STOP_WAIT, async move {
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.clone();
            }
            if metrics.changed().await.is_err() {
                return Fatal::Panicked;
            }
        }
    })
    .await;
    match stopped {
        Ok(fatal) => from_fatal(fatal),
        Err(_) => NodeError::Unavailable(
            "the write was dropped without an answer; it may or may not have been applied"
                .to_owned(),
        ),
    }
}

pub(crate) fn from_write_error(e: ClientWriteError<TypeConfig>) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(f),
        ClientWriteError::LogEntryDiscarded(f) => NodeError::Unavailable(format!(
            "leadership changed before the write committed; it may or may not have been applied ({})",
            not_leader(f)
        )),
        ClientWriteError::ChangeMembershipError(e) => {
            NodeError::Refused(format!("the membership change was refused: {e}"))
        }
        ClientWriteError::PreconditionFailed(e) => NodeError::Unavailable(e.to_string()),
    }
}

pub(crate) fn from_fatal(f: Fatal<TypeConfig>) -> NodeError {
    match f {
        Fatal::Stopped => NodeError::ShuttingDown,
        Fatal::StorageError(e) => NodeError::Storage(e.to_string()),
        Fatal::Panicked => {
            NodeError::Unavailable("the raft core panicked; restart the node".to_owned())
        }
    }
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

/// Whether a snapshot is due, `entries` entries (at least `interval`) and `log_bytes` bytes of log
/// after a snapshot of `snapshot_bytes`: once the log is as large as the snapshot, or past a
/// number of entries whatever the bytes. A large state changed by small commands must not let
/// the log (and a restart's replay) grow without bound in entries; the number grows with the
/// state, whose every snapshot costs more.
fn snapshot_due(entries: u64, log_bytes: u64, snapshot_bytes: u64, interval: u64) -> bool {
    let overdue = entries
        >= interval
            .saturating_mul(SNAPSHOT_ENTRIES_FACTOR)
            .max(snapshot_bytes / SNAPSHOT_BYTES_PER_ENTRY);
    log_bytes >= snapshot_bytes || overdue
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    const MB: u64 = 1 << 20;

    #[test]
    fn a_snapshot_is_due_when_the_log_is_as_large_as_it_or_the_entries_are_many_for_its_size() {
        // A small state: the log's bytes decide, and past ten intervals the entries do.
        assert!(!snapshot_due(10_000, MB / 2, MB, 10_000));
        assert!(snapshot_due(10_000, MB, MB, 10_000));
        assert!(snapshot_due(100_000, 0, MB, 10_000));
        // A 450 MB state changed by small commands: not every 100,000 entries, but every
        // 1.8 million (one for every 256 bytes of it).
        let large = 450 * MB;
        assert!(!snapshot_due(100_000, 15 * MB, large, 10_000));
        assert!(!snapshot_due(1_800_000, 270 * MB, large, 10_000));
        assert!(snapshot_due(1_850_000, 277 * MB, large, 10_000));
        assert!(snapshot_due(200_000, large, large, 10_000));
    }
}
