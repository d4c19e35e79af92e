//! The lease calls: grant, keep-alive, revoke, time-to-live and list, and their gRPC service.

use crate::api::{Api, now_ms};
use crate::convert;
use crate::error::ApiError;
use plinth_core::lease;
use plinth_core::{LeaseId, Millis};
use plinth_proto::v1 as pb;
use plinth_proto::v1::lease_server::LeaseServer;

impl Api {
    pub async fn lease_grant(
        &self,
        r: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, ApiError> {
        let grant = lease::Grant {
            id: convert::lease(r.id),
            ttl_ms: r.ttl_ms,
        };
        let (info, header) = self.call(grant).await?;
        Ok(pb::LeaseGrantResponse {
            header: Some(header),
            lease: Some(convert::lease_info(info)),
        })
    }

    pub async fn lease_keep_alive(
        &self,
        r: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, ApiError> {
        let (info, header) = self.call(lease::KeepAlive { id: LeaseId(r.id) }).await?;
        Ok(pb::LeaseKeepAliveResponse {
            header: Some(header),
            lease: Some(convert::lease_info(info)),
        })
    }

    pub async fn lease_revoke(
        &self,
        r: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, ApiError> {
        let (_, header) = self.call(lease::Revoke { id: LeaseId(r.id) }).await?;
        Ok(pb::LeaseRevokeResponse {
            header: Some(header),
        })
    }

    pub async fn lease_time_to_live(
        &self,
        r: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ApiError> {
        let id = LeaseId(r.id);
        let with_keys = r.keys;
        // Time left is shown against the wall clock: the log clock only moves when commands apply.
        let now = now_ms();
        let ((info, keys), header) = self
            .read(r.serializable, move |s| {
                let clock = s.clock().max(Millis(now));
                let keys = if with_keys {
                    s.kv().lease_keys(id)
                } else {
                    Vec::new()
                };
                (s.leases().info(id, clock), keys)
            })
            .await?;
        let info = info.ok_or_else(|| {
            ApiError::from(plinth_core::StateError::from(
                plinth_core::lease::LeaseError::NotFound { id },
            ))
        })?;
        Ok(pb::LeaseTimeToLiveResponse {
            header: Some(header),
            lease: Some(convert::lease_info(info)),
            keys,
        })
    }

    pub async fn lease_list(
        &self,
        r: pb::LeaseListRequest,
    ) -> Result<pb::LeaseListResponse, ApiError> {
        let now = now_ms();
        let (leases, header) = self
            .read(r.serializable, move |s| {
                s.leases().list(s.clock().max(Millis(now)))
            })
            .await?;
        Ok(pb::LeaseListResponse {
            header: Some(header),
            leases: leases.into_iter().map(convert::lease_info).collect(),
        })
    }
}

service! {
    pb::lease_server::Lease, LeaseServer, "lease" {}
    grant(pb::LeaseGrantRequest) -> pb::LeaseGrantResponse => lease_grant;
    keep_alive(pb::LeaseKeepAliveRequest) -> pb::LeaseKeepAliveResponse => lease_keep_alive;
    revoke(pb::LeaseRevokeRequest) -> pb::LeaseRevokeResponse => lease_revoke;
    time_to_live(pb::LeaseTimeToLiveRequest) -> pb::LeaseTimeToLiveResponse => lease_time_to_live;
    list(pb::LeaseListRequest) -> pb::LeaseListResponse => lease_list;
}
