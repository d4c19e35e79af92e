//! Backups: the whole state in one self-checking file, and restoring a node or a new cluster
//! from it.
//!
//! [`Node::backup`](crate::Node::backup) encodes the state after a linearizable read, so every
//! write acknowledged before the call is in the file. The file is the state's snapshot encoding
//! followed by a trailer: `state (State::to_snapshot) | CRC-32C of the state (u32 LE) | format
//! version (u32 LE) | magic`.
//!
//! A restore is staged, then applied by the next start. [`stage_restore`] checks the file and
//! copies it into a pristine data directory; the node that next starts there turns it into its
//! first snapshot, before Raft opens, with a membership of that node alone or of its `peers`.
//! The membership therefore comes from the flags the node starts with, as for any new cluster:
//! a restored cluster is a new cluster. Every voter of it is restored from the same file (they
//! then agree on the first log position); other members join it and catch up by snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::Path;

use openraft::vote::RaftLeaderId as _;
use openraft::{BasicNode, Membership};
use plinth_core::{Revision, State};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::log_store::LogStore;
use crate::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

const BACKUP_MAGIC: &[u8; 8] = b"PLNBACKU";
const BACKUP_VERSION: u32 = 1;
const TRAILER_BYTES: usize = 16;

/// The staged restore in a data directory, applied and deleted by the next start.
const RESTORE_FILE: &str = "RESTORE";

/// What a backup file holds, as read back from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The revision of the state in the file.
    pub revision: Revision,
    /// Live keys in the KV store.
    pub keys: u64,
    /// The file's size.
    pub bytes: u64,
}

/// Encodes `state` as a backup file, into a buffer of `capacity` (about the last snapshot's
/// size, so that it does not double its way up).
pub(crate) fn encode(state: &State, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + TRAILER_BYTES);
    state.append_snapshot(&mut out);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
    out.extend_from_slice(BACKUP_MAGIC);
    out
}

/// Checks a backup file's trailer and checksum and loads its state.
fn decode(bytes: &[u8]) -> Result<State, String> {
    let Some(body_len) = bytes.len().checked_sub(TRAILER_BYTES) else {
        return Err(format!(
            "it is {} bytes, shorter than a backup's {TRAILER_BYTES}-byte trailer",
            bytes.len()
        ));
    };
    let (body, trailer) = bytes.split_at(body_len);
    if &trailer[8..] != BACKUP_MAGIC {
        return Err("it does not end like a plinth backup (written by `plinth snapshot save`); it may be truncated".to_owned());
    }
    let version = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if version != BACKUP_VERSION {
        return Err(format!(
            "its format version is {version}; this build reads version {BACKUP_VERSION}"
        ));
    }
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("its checksum does not match its contents; the file is damaged".to_owned());
    }
    State::from_snapshot(body).map_err(|e| format!("its state does not load: {e}"))
}

/// Reads and checks the backup at `path`: its bytes, its state and what it holds.
fn read(path: &Path) -> Result<(Vec<u8>, State, BackupInfo), NodeError> {
    let bytes = fs::read(path)
        .map_err(|e| NodeError::Storage(format!("cannot read {}: {e}", path.display())))?;
    let state = decode(&bytes).map_err(|why| {
        NodeError::Storage(format!("{} is not a usable backup: {why}", path.display()))
    })?;
    let info = BackupInfo {
        revision: state.revision(),
        keys: state.kv().len() as u64,
        bytes: bytes.len() as u64,
    };
    Ok((bytes, state, info))
}

/// Reads and checks a backup file. Blocking.
pub fn inspect_backup(path: &Path) -> Result<BackupInfo, NodeError> {
    read(path).map(|(_, _, info)| info)
}

/// Checks the backup at `backup` and stages it in `data_dir`, which must be pristine (created
/// if missing); the next node started on `data_dir` begins from it. Blocking.
pub fn stage_restore(backup: &Path, data_dir: &Path) -> Result<BackupInfo, NodeError> {
    let (bytes, _, info) = read(backup)?;
    let storage = |e: std::io::Error| {
        NodeError::Storage(format!("cannot prepare {}: {e}", data_dir.display()))
    };
    fs::create_dir_all(data_dir).map_err(storage)?;
    if fs::read_dir(data_dir).map_err(storage)?.next().is_some() {
        return Err(NodeError::Config(format!(
            "data directory {} is not empty; restore into a new, empty directory so that no node's log is mixed with the backup",
            data_dir.display()
        )));
    }
    plinth_wal::write_file_atomic(&data_dir.join(RESTORE_FILE), &bytes)
        .map_err(|e| NodeError::Storage(format!("cannot stage the backup: {e}")))?;
    Ok(info)
}

/// At start, before Raft opens: turns a staged restore into this node's first snapshot. A
/// restore staged in a directory that already has a log or a snapshot is refused; once the
/// snapshot is written, the staged file is deleted (a crash in between leaves a snapshot and
/// the file, and the next start only deletes the file). Blocking.
pub(crate) fn apply_staged_restore(cfg: &NodeConfig, log: &LogStore) -> Result<(), NodeError> {
    let staged = cfg.data_dir.join(RESTORE_FILE);
    if !staged.exists() {
        return Ok(());
    }
    let storage = |e: std::io::Error| NodeError::Storage(format!("restore: {e}"));
    let snapshots =
        crate::state_machine::SnapshotDir::open(&cfg.snapshot_dir()).map_err(storage)?;
    if snapshots.newest().map_err(storage)?.is_some() {
        tracing::info!("the staged restore was applied by an earlier start; deleting it");
        return fs::remove_file(&staged).map_err(storage);
    }
    if !log.is_pristine() {
        return Err(NodeError::Config(format!(
            "{} holds a staged restore and a log; restore into an empty directory",
            cfg.data_dir.display()
        )));
    }
    if cfg.join {
        return Err(NodeError::Config(
            "a restored data directory starts a new cluster; start it alone or with --peers, not --join".to_owned(),
        ));
    }
    let (bytes, _, info) = read(&staged)?;
    let members: BTreeMap<u64, BasicNode> = if cfg.peers.is_empty() {
        BTreeMap::from([(cfg.node_id, BasicNode::new(&cfg.advertise_addr))])
    } else {
        cfg.peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    };
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    // The same position on every voter restored from the file with the same peers: term 0
    // (before any election), the lowest voter's id, index 0 (where a new cluster's first entry
    // would be). The log is then empty after it, as after a snapshot install.
    let first = *voters.first().expect("a membership has a voter");
    let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(0, first);
    let log_id = LogId::new(leader.to_committed(), 0);
    let membership = Membership::new(vec![voters], members)
        .map_err(|e| NodeError::Config(format!("restore membership: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };
    let mut incoming = snapshots.incoming(&meta).map_err(storage)?;
    incoming
        .write_all(&bytes[..bytes.len() - TRAILER_BYTES])
        .map_err(storage)?;
    snapshots
        .keep(&meta, incoming.finish().map_err(storage)?)
        .map_err(storage)?;
    fs::remove_file(&staged).map_err(storage)?;
    tracing::info!(revision = %info.revision, keys = info.keys, "restored the staged backup");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_damage_is_named() {
        let state = State::default();
        let bytes = encode(&state, 0);
        assert_eq!(decode(&bytes).expect("decodes"), state);

        let mut flipped = bytes.clone();
        flipped[2] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert!(
            decode(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(decode(&bytes[..3]).unwrap_err().contains("shorter"));
    }
}
