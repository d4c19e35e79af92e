//! The election calls and their service: a campaign is a lock acquire that waits (a term is
//! the fencing token of its grant), the leader is the lock's first holder, and observing
//! follows it.

use crate::api::{Api, ReplyStream};
use crate::convert;
use crate::error::ApiError;
use crate::lock::check_name;
use plinth_core::FencingToken;
use plinth_core::Wake;
use plinth_core::limits::LOCK_WAIT_MS_MAX;
use plinth_core::lock;
use plinth_proto::v1 as pb;
use plinth_proto::v1::election_server::ElectionServer;

impl Api {
    pub async fn election_campaign(
        &self,
        r: pb::ElectionCampaignRequest,
    ) -> Result<pb::ElectionCampaignResponse, ApiError> {
        let wait_ms = if r.wait_ms == 0 {
            LOCK_WAIT_MS_MAX
        } else {
            r.wait_ms
        };
        let (hold, header) = self
            .acquire(lock::Acquire {
                name: r.name,
                owner: r.candidate,
                ttl_ms: r.ttl_ms,
                wait_ms,
                permits: 1,
                value: r.value,
                node: self.node.node_id(),
            })
            .await?;
        Ok(pb::ElectionCampaignResponse {
            header: Some(header),
            leader: Some(convert::hold(hold)),
        })
    }

    pub async fn election_leader(
        &self,
        r: pb::ElectionLeaderRequest,
    ) -> Result<pb::ElectionLeaderResponse, ApiError> {
        check_name(&r.name)?;
        let name = r.name;
        let (leader, header) = self
            .read(r.serializable, move |s| {
                s.locks().leader(&name, s.leases(), s.clock())
            })
            .await?;
        Ok(pb::ElectionLeaderResponse {
            header: Some(header),
            leader: leader.map(convert::hold),
        })
    }

    pub async fn election_proclaim(
        &self,
        r: pb::ElectionProclaimRequest,
    ) -> Result<pb::ElectionProclaimResponse, ApiError> {
        let proclaim = lock::Proclaim {
            name: r.name,
            token: FencingToken(r.token),
            value: r.value,
        };
        let (hold, header) = self.call(proclaim).await?;
        Ok(pb::ElectionProclaimResponse {
            header: Some(header),
            leader: Some(convert::hold(hold)),
        })
    }

    pub async fn election_resign(
        &self,
        r: pb::ElectionResignRequest,
    ) -> Result<pb::ElectionResignResponse, ApiError> {
        let header = self.release(r.name, r.token).await?;
        Ok(pb::ElectionResignResponse {
            header: Some(header),
        })
    }

    /// The current leader (or none) at once, then one message per change of leader or value.
    pub async fn election_observe(
        &self,
        r: pb::ElectionObserveRequest,
    ) -> Result<ReplyStream<pb::ElectionObserveResponse>, ApiError> {
        check_name(&r.name)?;
        /// What an observer has last been told: the leader's token and value.
        type Seen = Option<(FencingToken, Vec<u8>)>;
        let state: (Api, String, Option<Seen>) = (self.clone(), r.name, None);
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let (api, name, told) = state?;
            let n = name.clone();
            let next = api.node.wait_for(Wake::Lock(name.clone()), move |s| {
                let leader = s.locks().leader(&n, s.leases(), s.clock());
                let seen: Seen = leader.as_ref().map(|h| (h.token, h.value.clone()));
                (told.as_ref() != Some(&seen)).then(|| (leader, seen, s.revision()))
            });
            match next.await {
                Ok((leader, seen, revision)) => {
                    let response = pb::ElectionObserveResponse {
                        header: Some(api.header(revision)),
                        leader: leader.map(convert::hold),
                    };
                    Some((Ok(response), Some((api, name, Some(seen)))))
                }
                Err(e) => Some((Err(e.into()), None)),
            }
        });
        Ok(Box::pin(self.until_shutdown(stream)))
    }
}

service! {
    pb::election_server::Election, ElectionServer, "election" {
        observe(pb::ElectionObserveRequest) -> ObserveStream(pb::ElectionObserveResponse) => election_observe, sse "leader";
    }
    campaign(pb::ElectionCampaignRequest) -> pb::ElectionCampaignResponse => election_campaign;
    leader(pb::ElectionLeaderRequest) -> pb::ElectionLeaderResponse => election_leader;
    proclaim(pb::ElectionProclaimRequest) -> pb::ElectionProclaimResponse => election_proclaim;
    resign(pb::ElectionResignRequest) -> pb::ElectionResignResponse => election_resign;
}
