//! NodeConfig: what an operator chooses for a replica, and the openraft settings derived from it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::NodeError;

/// Election timing for a replica whose peers are on a LAN (or absent, for a single node): a
/// heartbeat every 50 ms and an election after 150–300 ms of silence. A single node elects itself
/// within one election timeout, which bounds how long a restart is unavailable.
const HEARTBEAT_MS: u64 = 50;
const ELECTION_TIMEOUT_MS_MIN: u64 = 150;
const ELECTION_TIMEOUT_MS_MAX: u64 = 300;
/// Log entries kept below a snapshot so that a follower slightly behind catches up from the log
/// instead of receiving the whole snapshot.
const LOGS_KEPT_BELOW_SNAPSHOT_MAX: u64 = 300;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Holds `wal/` (log segments, vote, committed and purge markers) and `snapshot/`.
    pub data_dir: PathBuf,
    /// This replica's Raft id; it must never be reused by another replica of the same cluster.
    pub node_id: u64,
    /// The address other replicas and clients use to reach this node (told to followers'
    /// clients in `NOT_LEADER`).
    pub advertise_addr: String,
    /// The cluster's voting members when it forms, id → address, this node among them. Read
    /// once, on a pristine data directory: every member started with the same list initializes
    /// the same cluster, and whichever wins the first election leads it. Empty (or this node
    /// alone): a cluster of this node only, led by it from the first start.
    pub peers: BTreeMap<u64, String>,
    /// Start without forming a cluster and wait to be added to one (`cluster add-learner` on
    /// its leader). Remembered in the data directory until the node has a log; ignored after.
    pub join: bool,
    /// The local address connections to other members start from (the Raft messages, and the
    /// calls a follower forwards), so that a firewall between members sees each member's own
    /// address. `None`: the operating system chooses.
    pub source_ip: Option<IpAddr>,
    /// How often the leader checks whether a lease is due and proposes a `Tick`.
    pub tick_interval: Duration,
    /// A snapshot is taken once at least this many log entries have been applied since the last
    /// one and the log appended since is as large as that snapshot; the log below it is then purged
    /// (keeping a few hundred entries). Encoding the state pauses applies for as long as it
    /// takes, so the second condition keeps a large state's snapshots as rare as its log is
    /// small: the snapshot bytes written never exceed the log bytes, and a restart replays at
    /// most about a snapshot's worth of log. Past ten such intervals, or one entry for every
    /// 256 bytes of the last snapshot if that is more, a snapshot is taken whatever the bytes,
    /// so the entries to replay are bounded too, in proportion to the state.
    pub snapshot_logs_since_last: u64,
    /// Whether the write-ahead log fsyncs. Off only for tests and benchmarks: without it a power
    /// loss loses acknowledged writes.
    pub wal_sync: bool,
    /// A watcher with nothing to deliver gets an empty batch carrying the current revision after
    /// this long, so it knows it is alive and how far it is.
    pub watch_progress_interval: Duration,
    /// Size at which a log segment is closed and a new one begun; purging deletes whole segments.
    pub wal_segment_bytes_max: u64,
    /// Where the async runtime's park hook syncs the log when a thread goes idle (see
    /// [`plinth_wal::IdleSync`]); the node adds its log to it. `None`: the flusher thread does
    /// every sync.
    pub idle_sync: Option<plinth_wal::IdleSync>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("plinth-data"),
            node_id: 1,
            advertise_addr: "127.0.0.1:7070".to_owned(),
            peers: BTreeMap::new(),
            join: false,
            source_ip: None,
            tick_interval: Duration::from_millis(100),
            snapshot_logs_since_last: 10_000,
            wal_sync: true,
            watch_progress_interval: Duration::from_secs(10),
            wal_segment_bytes_max: plinth_wal::WalOptions::default().segment_bytes_max,
            idle_sync: None,
        }
    }
}

impl NodeConfig {
    pub(crate) fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshot")
    }

    pub(crate) fn wal_options(&self) -> plinth_wal::WalOptions {
        plinth_wal::WalOptions {
            segment_bytes_max: self.wal_segment_bytes_max,
            sync: self.wal_sync,
            ..plinth_wal::WalOptions::default()
        }
    }

    /// Whether, on a pristine data directory, this configuration forms a cluster of this node
    /// alone (see `Node::alone` for a directory with a log).
    pub(crate) fn alone(&self) -> bool {
        !self.join && self.peers.keys().all(|id| *id == self.node_id)
    }

    /// The openraft configuration, checked by openraft's own validation.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, NodeError> {
        if !self.peers.is_empty() && !self.peers.contains_key(&self.node_id) {
            return Err(NodeError::Config(format!(
                "peers lists nodes {:?} but not this node, {}; list every member, this one too",
                self.peers.keys().collect::<Vec<_>>(),
                self.node_id
            )));
        }
        if self.node_id == 0 {
            return Err(NodeError::Config(
                "node_id is 0; node ids start at 1".to_owned(),
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return Err(NodeError::Config(
                "snapshot_logs_since_last is 0; it must be at least 1".to_owned(),
            ));
        }
        let config = openraft::Config {
            cluster_name: "plinth".to_owned(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MS_MIN,
            election_timeout_max: ELECTION_TIMEOUT_MS_MAX,
            // The node triggers snapshots itself (`Node::maybe_snapshot`), by entries and bytes.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // Never keep more than one snapshot interval, so a small interval (tests) still purges.
            max_in_snapshot_log_to_keep: LOGS_KEPT_BELOW_SNAPSHOT_MAX
                .min(self.snapshot_logs_since_last),
            // A restarted leader runs a new election instead of resuming its old term. The state
            // machine is in memory and the saved committed id may lag after a crash; a new term's
            // blank entry is what re-commits (and so re-applies) the whole durable log before the
            // first read is served. It costs one election timeout per restart.
            enable_leader_restore: Some(false),
            // A node cut off from the others asks before it campaigns, so its return does not
            // depose a healthy leader with an inflated term.
            enable_pre_vote: Some(true),
            // Entries per append: enough to share one round trip, few enough that a batch of
            // large commands stays a bounded message.
            max_payload_entries: 64,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| NodeError::Config(format!("raft settings: {e}")))
    }
}
