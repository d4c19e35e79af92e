//! The cluster calls: status and online membership change, mapped onto the node's own.

use crate::api::Api;
use crate::error::ApiError;
use plinth_core::ErrorCode;
use plinth_node::ClusterStatus;
use plinth_proto::v1 as pb;
use plinth_proto::v1::cluster_server::ClusterServer;

impl Api {
    pub async fn cluster_status(
        &self,
        _r: pb::ClusterStatusRequest,
    ) -> Result<pb::ClusterStatusResponse, ApiError> {
        Ok(self.cluster_reply())
    }

    pub async fn cluster_add_learner(
        &self,
        r: pb::ClusterAddLearnerRequest,
    ) -> Result<pb::ClusterStatusResponse, ApiError> {
        let id = node_id(r.id)?;
        plinth_node::check_address(&r.address).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                "address",
                format!("address {e}; give the host:port where the new node listens"),
            )
        })?;
        self.node.add_learner(id, r.address).await?;
        Ok(self.cluster_reply())
    }

    pub async fn cluster_promote(
        &self,
        r: pb::ClusterPromoteRequest,
    ) -> Result<pb::ClusterStatusResponse, ApiError> {
        self.node.promote(node_id(r.id)?).await?;
        Ok(self.cluster_reply())
    }

    pub async fn cluster_remove(
        &self,
        r: pb::ClusterRemoveRequest,
    ) -> Result<pb::ClusterStatusResponse, ApiError> {
        self.node.remove(node_id(r.id)?).await?;
        Ok(self.cluster_reply())
    }

    pub async fn cluster_transfer_leader(
        &self,
        r: pb::ClusterTransferLeaderRequest,
    ) -> Result<pb::ClusterStatusResponse, ApiError> {
        self.node.transfer_leader(node_id(r.id)?).await?;
        Ok(self.cluster_reply())
    }

    fn cluster_reply(&self) -> pb::ClusterStatusResponse {
        let revision = self.node.status().revision;
        status_message(self.node.cluster_status(), self.header(revision))
    }
}

fn node_id(id: u64) -> Result<u64, ApiError> {
    if id == 0 {
        Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "id",
            "id is 0; node ids start at 1",
        ))
    } else {
        Ok(id)
    }
}

fn status_message(s: ClusterStatus, header: pb::ResponseHeader) -> pb::ClusterStatusResponse {
    let last = s.last_log_index;
    pb::ClusterStatusResponse {
        header: Some(header),
        node_id: s.node_id,
        leader_id: s.leader_id.unwrap_or(0),
        term: s.term,
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        applied_index: s.applied_index,
        changing: s.changing,
        members: s
            .members
            .into_iter()
            .map(|m| pb::ClusterMember {
                id: m.id,
                address: m.addr,
                voter: m.voter,
                matched_index: m.matched_index,
                lag: m.matched_index.map(|i| last.saturating_sub(i)),
            })
            .collect(),
    }
}

service! {
    pb::cluster_server::Cluster, ClusterServer, "cluster" {}
    status(pb::ClusterStatusRequest) -> pb::ClusterStatusResponse => cluster_status;
    add_learner(pb::ClusterAddLearnerRequest) -> pb::ClusterStatusResponse => cluster_add_learner;
    promote(pb::ClusterPromoteRequest) -> pb::ClusterStatusResponse => cluster_promote;
    remove(pb::ClusterRemoveRequest) -> pb::ClusterStatusResponse => cluster_remove;
    transfer_leader(pb::ClusterTransferLeaderRequest) -> pb::ClusterStatusResponse => cluster_transfer_leader;
}
