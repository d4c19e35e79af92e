//! The lock calls and their service; the queued acquire that elections share.
//!
//! An acquire that has to wait is queued in the log and the call then waits on the applied
//! state for its ticket to be granted. If the caller goes away first (or the wait runs out), the
//! ticket is abandoned through the log, so a hold granted to nobody is released at once instead
//! of blocking the lock until its lease expires.

use crate::api::{Api, now_ms};
use crate::convert;
use crate::error::ApiError;
use plinth_core::Wake;
use plinth_core::lock;
use plinth_core::lock::{HoldInfo, TicketStatus};
use plinth_core::{Applied, Call as _, ErrorCode, FencingToken, Millis, Revision};
use plinth_node::Submitted;
use plinth_proto::v1 as pb;
use plinth_proto::v1::lock_server::LockServer;
use std::time::Duration;

/// How long past its deadline a queued call waits for the ticker to drop its ticket before it
/// gives up on its own.
const WAIT_GRACE: Duration = Duration::from_secs(2);

impl Api {
    pub async fn lock_acquire(
        &self,
        r: pb::LockAcquireRequest,
    ) -> Result<pb::LockAcquireResponse, ApiError> {
        let (hold, header) = self
            .acquire(lock::Acquire {
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
        let renew = lock::Renew {
            name: r.name,
            token: FencingToken(r.token),
            ttl_ms: (r.ttl_ms != 0).then_some(r.ttl_ms),
        };
        let (hold, header) = self.call(renew).await?;
        Ok(pb::LockRenewResponse {
            header: Some(header),
            hold: Some(convert::hold(hold)),
        })
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
        // Against the wall clock too: a hold past its deadline is stale even before the tick that
        // ends it, exactly as a fenced write stamped now would find.
        let now = now_ms();
        let (current, header) = self
            .read(false, move |s| {
                let clock = s.clock().max(Millis(now));
                s.locks().is_current(&name, token, s.leases(), clock)
            })
            .await?;
        Ok(pb::LockCheckFenceResponse {
            header: Some(header),
            current,
        })
    }

    pub(crate) async fn release(
        &self,
        name: String,
        token: u64,
    ) -> Result<pb::ResponseHeader, ApiError> {
        let release = lock::Release {
            name,
            token: FencingToken(token),
        };
        Ok(self.call(release).await?.1)
    }

    /// Proposes an acquire; if it was queued, waits for the grant. A caller that goes away
    /// mid-call (the client hung up) drops the [`Acquiring`] with it, which finishes what the
    /// call started: a queued ticket, or a grant the caller will never hear of, is abandoned
    /// through the log instead of holding up the lock for a whole ttl.
    pub(crate) async fn acquire(&self, acquire: lock::Acquire) -> Acquired {
        let (name, owner, wait_ms) = (acquire.name.clone(), acquire.owner.clone(), acquire.wait_ms);
        let submitted = self.node.submit(acquire.into()).await?;
        let mut acquiring = Acquiring {
            api: self.clone(),
            name,
            stage: Stage::Proposed(submitted),
        };
        let Stage::Proposed(submitted) = &mut acquiring.stage else {
            unreachable!("just set")
        };
        let applied = submitted.outcome().await;
        acquiring.stage = Stage::Done;
        match self.answer::<lock::Acquire>(applied)? {
            (lock::Acquired::Held(hold), header) => Ok((hold, header)),
            (lock::Acquired::Queued { ticket, .. }, _) => {
                acquiring.stage = Stage::Queued(ticket);
                let waited = self
                    .await_ticket(&acquiring.name, &owner, ticket, wait_ms)
                    .await;
                acquiring.stage = Stage::Done;
                waited
            }
        }
    }

    async fn await_ticket(
        &self,
        name: &str,
        owner: &str,
        ticket: Revision,
        wait_ms: u64,
    ) -> Acquired {
        let n = name.to_owned();
        let granted = self.node.wait_for(Wake::Lock(name.to_owned()), move |s| {
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
            Ok(Ok((TicketStatus::Held(hold), revision))) => Ok((hold, self.header(revision))),
            Ok(Ok((_, _))) => Err(timed_out()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // The ticker is late to drop the ticket: drop it here, so that nobody is granted
                // a hold after being told the wait ran out.
                self.abandon(name.to_owned(), ticket).await;
                Err(timed_out())
            }
        }
    }

    /// Takes a ticket out of its queue, or releases the hold granted to it. Refused when the
    /// ticket is already gone, which is the outcome wanted.
    async fn abandon(&self, name: String, ticket: Revision) {
        if let Err(e) = self
            .node
            .propose(lock::Abandon { name, ticket }.into())
            .await
        {
            tracing::debug!(error = %e, "could not abandon a lock ticket");
        }
    }
}

/// What an acquire answers.
pub(crate) type Acquired = Result<(HoldInfo, pb::ResponseHeader), ApiError>;

/// An acquire under way. Dropped before it is done, it abandons what its write did, in a task
/// of its own: the ticket it queued, or the hold it was granted.
struct Acquiring {
    api: Api,
    name: String,
    stage: Stage,
}

enum Stage {
    /// The acquire is in the log; its outcome is not known yet.
    Proposed(Submitted),
    /// The acquire queued this ticket, which waits for the grant.
    Queued(Revision),
    /// The caller has the answer: nothing to undo.
    Done,
}

impl Drop for Acquiring {
    fn drop(&mut self) {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        if matches!(stage, Stage::Done) {
            return;
        }
        // Without a runtime, or with one that is stopping (which drops the task unrun), there
        // is nobody left to abandon it; the ttl releases the hold.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (api, name) = (self.api.clone(), std::mem::take(&mut self.name));
        runtime.spawn(async move {
            let ticket = match stage {
                Stage::Queued(ticket) => ticket,
                Stage::Proposed(mut submitted) => match submitted.outcome().await {
                    Ok(Applied {
                        result: Ok(output), ..
                    }) => match lock::Acquire::output(output) {
                        lock::Acquired::Held(hold) => hold.ticket,
                        lock::Acquired::Queued { ticket, .. } => ticket,
                    },
                    _ => return,
                },
                Stage::Done => return,
            };
            api.abandon(name, ticket).await;
        });
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    plinth_core::names::check_name(name).map_err(|e| ApiError::invalid("name", e.to_string()))
}

service! {
    pb::lock_server::Lock, LockServer, "lock" {}
    acquire(pb::LockAcquireRequest) -> pb::LockAcquireResponse => lock_acquire;
    renew(pb::LockRenewRequest) -> pb::LockRenewResponse => lock_renew;
    release(pb::LockReleaseRequest) -> pb::LockReleaseResponse => lock_release;
    get(pb::LockGetRequest) -> pb::LockGetResponse => lock_get;
    check_fence(pb::LockCheckFenceRequest) -> pb::LockCheckFenceResponse => lock_check_fence;
}
