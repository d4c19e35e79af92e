//! The maintenance calls: a node's status, a backup of the state, and their gRPC service.

use crate::api::{Api, ReplyStream};
use crate::error::ApiError;
use axum::body::Bytes;
use plinth_proto::v1 as pb;
use plinth_proto::v1::maintenance_server::MaintenanceServer;

/// The largest piece of a backup in one message.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

impl Api {
    pub async fn maintenance_status(
        &self,
        _r: pb::StatusRequest,
    ) -> Result<pb::StatusResponse, ApiError> {
        // This node's own view, whether it leads or not: an operator asks each node in turn.
        let ((revision, compacted, keys, leases, locks), header) = self
            .read(true, |s| {
                (
                    s.revision(),
                    s.kv().compacted_revision(),
                    s.kv().len(),
                    s.leases().len(),
                    s.locks().len(),
                )
            })
            .await?;
        let status = self.node.status();
        Ok(pb::StatusResponse {
            header: Some(header),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: status.node_id,
            leader_id: status.leader_id.unwrap_or(0),
            term: status.term,
            last_log_index: status.last_log_index,
            applied_index: status.applied_index,
            revision: revision.0,
            compacted_revision: compacted.0,
            wal_bytes: status.wal_bytes,
            wal_fsyncs: status.wal_fsyncs,
            wal_segments: status.wal_segments as u64,
            keys: keys as u64,
            leases: leases as u64,
            locks: locks as u64,
        })
    }
}

impl Api {
    /// The whole state as a backup file (see `plinth_node::inspect_backup`), with the revision
    /// it holds.
    pub(crate) async fn backup(&self) -> Result<(Bytes, pb::ResponseHeader), ApiError> {
        let (bytes, revision) = self.node.backup().await?;
        Ok((Bytes::from(bytes), self.header(revision)))
    }

    pub async fn maintenance_snapshot(
        &self,
        _r: pb::SnapshotRequest,
    ) -> Result<ReplyStream<pb::SnapshotChunk>, ApiError> {
        let (bytes, header) = self.backup().await?;
        let total = bytes.len();
        // A backup is never empty (it ends in a trailer), so there is always a first chunk.
        let chunks = (0..total.div_ceil(SNAPSHOT_CHUNK_BYTES)).map(move |i| {
            let start = i * SNAPSHOT_CHUNK_BYTES;
            let first = i == 0;
            Ok(pb::SnapshotChunk {
                header: first.then_some(header),
                total_bytes: if first { total as u64 } else { 0 },
                data: bytes
                    .slice(start..total.min(start + SNAPSHOT_CHUNK_BYTES))
                    .to_vec(),
            })
        });
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

service! {
    pb::maintenance_server::Maintenance, MaintenanceServer, "maintenance" {
        snapshot(pb::SnapshotRequest) -> SnapshotStream(pb::SnapshotChunk) => maintenance_snapshot;
    }
    status(pb::StatusRequest) -> pb::StatusResponse => maintenance_status;
}
