//! The lock and election calls and their gRPC services.
//!
//! An acquire that has to wait is queued in the log and the call then waits on the applied
//! state for its ticket to be granted. If the caller goes away first (or the wait runs out), the
//! ticket is abandoned through the log, so a hold granted to nobody is released at once instead
//! of blocking the lock until its lease expires.

use crate::api::{Api, unexpected};
use crate::convert;
use crate::error::ApiError;
use futures::{Stream, StreamExt as _};
use plinth_core::limits::LOCK_WAIT_MS_MAX;
use plinth_core::lock::{HoldInfo, LockCommand, LockOutput, TicketStatus};
use plinth_core::{Command, ErrorCode, FencingToken, Output, Revision};
use plinth_proto::v1 as pb;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub type ObserveStream =
    Pin<Box<dyn Stream<Item = Result<pb::ElectionObserveResponse, ApiError>> + Send>>;

/// How long past its deadline a queued call waits for the ticker to drop its ticket before it
/// gives up on its own.
const WAIT_GRACE: Duration = Duration::from_secs(2);

impl Api {
    pub async fn lock_acquire(
        &self,
        r: pb::LockAcquireRequest,
    ) -> Result<pb::LockAcquireResponse, ApiError> {
        let (hold, header) = self
            .acquire(LockCommand::Acquire {
                name: r.name,
                owner: r.owner,
                ttl_ms: r.ttl_ms,
                wait_ms: r.wait_ms,
                permits: r.permits.max(1),
                value: Vec::new(),
                node: self.node.node_id(),
            })
            .await?;
        Ok(pb::LockAcquireResponse {
            header: Some(header),
            hold: Some(convert::hold(hold)),
        })
    }

    pub async fn lock_renew(
        &self,
        r: pb::LockRenewRequest,
    ) -> Result<pb::LockRenewResponse, ApiError> {
        let command = LockCommand::Renew {
            name: r.name,
            token: FencingToken(r.token),
            ttl_ms: (r.ttl_ms != 0).then_some(r.ttl_ms),
        };
        match self.propose(Command::Lock(command)).await? {
            (Output::Lock(LockOutput::Renewed(hold)), header) => Ok(pb::LockRenewResponse {
                header: Some(header),
                hold: Some(convert::hold(hold)),
            }),
            (other, _) => unexpected(other),
        }
    }

    pub async fn lock_release(
        &self,
        r: pb::LockReleaseRequest,
    ) -> Result<pb::LockReleaseResponse, ApiError> {
        let header = self.release(r.name, r.token).await?;
        Ok(pb::LockReleaseResponse {
            header: Some(header),
        })
    }

    pub async fn lock_get(&self, r: pb::LockGetRequest) -> Result<pb::LockGetResponse, ApiError> {
        check_name(&r.name)?;
        let name = r.name;
        let (info, header) = self
            .read(r.serializable, move |s| {
                s.locks().get(&name, s.leases(), s.clock())
            })
            .await?;
        Ok(pb::LockGetResponse {
            header: Some(header),
            permits: info.permits,
            holders: info.holders.into_iter().map(convert::hold).collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|w| pb::LockWaiter {
                    owner: w.owner,
                    ticket: w.ticket.0,
                    deadline_ms: w.deadline.0,
                })
                .collect(),
        })
    }

    pub async fn lock_check_fence(
        &self,
        r: pb::LockCheckFenceRequest,
    ) -> Result<pb::LockCheckFenceResponse, ApiError> {
        check_name(&r.name)?;
        let name = r.name;
        let token = FencingToken(r.token);
        let (current, header) = self
            .read(false, move |s| s.locks().is_current(&name, token))
            .await?;
        Ok(pb::LockCheckFenceResponse {
            header: Some(header),
            current,
        })
    }

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
            .acquire(LockCommand::Acquire {
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
        let command = LockCommand::Proclaim {
            name: r.name,
            token: FencingToken(r.token),
            value: r.value,
        };
        match self.propose(Command::Lock(command)).await? {
            (Output::Lock(LockOutput::Proclaimed(hold)), header) => {
                Ok(pb::ElectionProclaimResponse {
                    header: Some(header),
                    leader: Some(convert::hold(hold)),
                })
            }
            (other, _) => unexpected(other),
        }
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
    ) -> Result<ObserveStream, ApiError> {
        check_name(&r.name)?;
        /// What an observer has last been told: the leader's token and value.
        type Seen = Option<(FencingToken, Vec<u8>)>;
        let state: (Api, String, Option<Seen>) = (self.clone(), r.name, None);
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let (mut api, name, told) = state?;
            let n = name.clone();
            let next = api.node.wait_until(move |s| {
                let leader = s.locks().leader(&n, s.leases(), s.clock());
                let seen: Seen = leader.as_ref().map(|h| (h.token, h.value.clone()));
                (told.as_ref() != Some(&seen)).then(|| (leader, seen, s.revision()))
            });
            let next = tokio::select! {
                next = next => next,
                _ = api.shutdown.wait_for(|stop| *stop) => return None,
            };
            match next {
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
        Ok(Box::pin(stream))
    }

    async fn release(&self, name: String, token: u64) -> Result<pb::ResponseHeader, ApiError> {
        let command = LockCommand::Release {
            name,
            token: FencingToken(token),
        };
        match self.propose(Command::Lock(command)).await? {
            (Output::Lock(LockOutput::Released { .. }), header) => Ok(header),
            (other, _) => unexpected(other),
        }
    }

    /// Proposes an acquire; if it was queued, waits for the grant.
    async fn acquire(
        &self,
        command: LockCommand,
    ) -> Result<(HoldInfo, pb::ResponseHeader), ApiError> {
        let LockCommand::Acquire {
            name,
            owner,
            wait_ms,
            ..
        } = &command
        else {
            unreachable!("acquire proposes an Acquire")
        };
        let (name, owner, wait_ms) = (name.clone(), owner.clone(), *wait_ms);
        match self.propose(Command::Lock(command)).await? {
            (Output::Lock(LockOutput::Acquired(hold)), header) => Ok((hold, header)),
            (Output::Lock(LockOutput::Queued { ticket, .. }), _) => {
                self.await_ticket(name, owner, ticket, wait_ms).await
            }
            (other, _) => unexpected(other),
        }
    }

    async fn await_ticket(
        &self,
        name: String,
        owner: String,
        ticket: Revision,
        wait_ms: u64,
    ) -> Result<(HoldInfo, pb::ResponseHeader), ApiError> {
        let mut guard = AbandonGuard {
            api: Some(self.clone()),
            name: name.clone(),
            ticket,
        };
        let n = name.clone();
        let granted = self.node.wait_until(move |s| {
            match s.locks().ticket_status(&n, ticket, s.leases(), s.clock()) {
                TicketStatus::Waiting { .. } => None,
                status => Some((status, s.revision())),
            }
        });
        let mut shutdown = self.shutdown.clone();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(Duration::from_millis(wait_ms) + WAIT_GRACE, granted) => outcome,
            _ = shutdown.wait_for(|stop| *stop) => {
                return Err(ApiError::new(ErrorCode::Unavailable, "", "the server is shutting down"));
            }
        };
        let timed_out = || {
            ApiError::new(
                ErrorCode::DeadlineExceeded,
                "wait",
                format!(
                    "{owner:?} waited {wait_ms}ms for lock {name} and it was not granted; acquire again to wait longer"
                ),
            )
        };
        match outcome {
            Ok(Ok((TicketStatus::Held(hold), revision))) => {
                guard.disarm();
                Ok((hold, self.header(revision)))
            }
            Ok(Ok((_, _))) => {
                guard.disarm();
                Err(timed_out())
            }
            Ok(Err(e)) => Err(e.into()),
            // The ticker is late; the guard abandons the ticket through the log.
            Err(_) => Err(timed_out()),
        }
    }
}

/// Abandons a queued ticket when the call waiting for it ends without reporting a hold.
struct AbandonGuard {
    api: Option<Api>,
    name: String,
    ticket: Revision,
}

impl AbandonGuard {
    fn disarm(&mut self) {
        self.api = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let Some(api) = self.api.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let command = LockCommand::Abandon {
            name: std::mem::take(&mut self.name),
            ticket: self.ticket,
        };
        runtime.spawn(async move {
            // Refused when the ticket is already gone, which is the outcome wanted.
            if let Err(e) = api.node.propose(Command::Lock(command)).await {
                tracing::debug!(error = %e, "could not abandon a lock ticket");
            }
        });
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    plinth_core::names::check_name(name).map_err(|e| ApiError::invalid("name", e.to_string()))
}

#[tonic::async_trait]
impl pb::lock_server::Lock for Api {
    async fn acquire(
        &self,
        r: Request<pb::LockAcquireRequest>,
    ) -> Result<Response<pb::LockAcquireResponse>, Status> {
        Ok(Response::new(self.lock_acquire(r.into_inner()).await?))
    }

    async fn renew(
        &self,
        r: Request<pb::LockRenewRequest>,
    ) -> Result<Response<pb::LockRenewResponse>, Status> {
        Ok(Response::new(self.lock_renew(r.into_inner()).await?))
    }

    async fn release(
        &self,
        r: Request<pb::LockReleaseRequest>,
    ) -> Result<Response<pb::LockReleaseResponse>, Status> {
        Ok(Response::new(self.lock_release(r.into_inner()).await?))
    }

    async fn get(
        &self,
        r: Request<pb::LockGetRequest>,
    ) -> Result<Response<pb::LockGetResponse>, Status> {
        Ok(Response::new(self.lock_get(r.into_inner()).await?))
    }

    async fn check_fence(
        &self,
        r: Request<pb::LockCheckFenceRequest>,
    ) -> Result<Response<pb::LockCheckFenceResponse>, Status> {
        Ok(Response::new(self.lock_check_fence(r.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl pb::election_server::Election for Api {
    async fn campaign(
        &self,
        r: Request<pb::ElectionCampaignRequest>,
    ) -> Result<Response<pb::ElectionCampaignResponse>, Status> {
        Ok(Response::new(self.election_campaign(r.into_inner()).await?))
    }

    async fn leader(
        &self,
        r: Request<pb::ElectionLeaderRequest>,
    ) -> Result<Response<pb::ElectionLeaderResponse>, Status> {
        Ok(Response::new(self.election_leader(r.into_inner()).await?))
    }

    type ObserveStream =
        Pin<Box<dyn Stream<Item = Result<pb::ElectionObserveResponse, Status>> + Send>>;

    async fn observe(
        &self,
        r: Request<pb::ElectionObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let stream = self.election_observe(r.into_inner()).await?;
        Ok(Response::new(Box::pin(
            stream.map(|item| item.map_err(Status::from)),
        )))
    }

    async fn proclaim(
        &self,
        r: Request<pb::ElectionProclaimRequest>,
    ) -> Result<Response<pb::ElectionProclaimResponse>, Status> {
        Ok(Response::new(self.election_proclaim(r.into_inner()).await?))
    }

    async fn resign(
        &self,
        r: Request<pb::ElectionResignRequest>,
    ) -> Result<Response<pb::ElectionResignResponse>, Status> {
        Ok(Response::new(self.election_resign(r.into_inner()).await?))
    }
}
