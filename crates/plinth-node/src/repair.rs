//! `plinth repair`: the explicit remedy for a node whose log is damaged where acknowledged
//! writes were (which the node refuses to start on, changing nothing). It reports what a cut
//! would lose and, told to accept that loss, cuts. Only for a node alone: a member of a cluster
//! rejoins from the others instead (docs/operations.md, "A damaged log").

use std::path::Path;

use crate::config::NodeConfig;
use crate::error::NodeError;
pub use crate::log_store::RepairReport;
use crate::state_machine::SnapshotDir;

/// Looks at the log in `data_dir` and, if it is damaged and `accept_loss`, cuts it at the
/// damage so that the node starts from what is intact. Takes the data directory's lock, so a
/// running node's directory is refused. A log whose membership names other nodes is refused.
pub fn repair(data_dir: &Path, accept_loss: bool) -> Result<RepairReport, NodeError> {
    let cfg = NodeConfig {
        data_dir: data_dir.to_path_buf(),
        ..NodeConfig::default()
    };
    let wal_dir = cfg.wal_dir();
    if !wal_dir.is_dir() {
        return Err(NodeError::Config(format!(
            "{} holds no write-ahead log (no {}); give the data directory of a node",
            data_dir.display(),
            wal_dir.display()
        )));
    }
    let _lock = crate::node::lock_data_dir(data_dir)?;
    let snapshot_dir = cfg.snapshot_dir();
    let snapshot = if snapshot_dir.is_dir() {
        SnapshotDir::at(&snapshot_dir)
            .newest()
            .map_err(|e| NodeError::Storage(format!("reading the snapshots: {e}")))?
            .map(|(meta, _)| (meta.last_log_id, meta.last_membership))
    } else {
        None
    };
    crate::log_store::repair(&wal_dir, snapshot, accept_loss)
}
