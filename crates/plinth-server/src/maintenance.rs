//! The maintenance calls: a node's status, and its gRPC service.

use crate::api::Api;
use crate::error::ApiError;
use plinth_proto::v1 as pb;

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

grpc_service! {
    pb::maintenance_server::Maintenance {}
    status(pb::StatusRequest) -> pb::StatusResponse => maintenance_status;
}
