//! Locks and elections: the calls, a [`LockGuard`] that renews its hold in the background and
//! says when it is lost, an [`Election`] helper and an [`Observe`] stream of leaders.
//!
//! A guard's loss signal is a promise about this process, not about the world: a process can
//! stall right after checking it. What makes a stale holder harmless is the fencing token, passed
//! with every write ([`Client::put_fenced`]) and checked by the system written to.

use crate::client::{Client, millis};
use crate::error::{Code, Error};
use plinth_proto::v1 as pb;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Streaming;

/// How to acquire a lock: who is asking, how long a hold lasts without renewal, how long to
/// wait for a permit, and how many permits the lock has (1: a mutex).
#[derive(Clone, Debug)]
pub struct LockOptions {
    pub owner: String,
    pub ttl: Duration,
    /// `None`: fail at once with `FAILED_PRECONDITION` if no permit is free.
    pub wait: Option<Duration>,
    pub permits: u32,
}

impl LockOptions {
    /// A mutex held for `owner` with a 10 s ttl (`LOCK_TTL_MS_DEFAULT`), failing at once if
    /// taken.
    pub fn new(owner: impl Into<String>) -> LockOptions {
        LockOptions {
            owner: owner.into(),
            ttl: Duration::from_millis(plinth_proto::limits::LOCK_TTL_MS_DEFAULT),
            wait: None,
            permits: 1,
        }
    }

    pub fn ttl(mut self, ttl: Duration) -> LockOptions {
        self.ttl = ttl;
        self
    }

    pub fn wait(mut self, wait: Duration) -> LockOptions {
        self.wait = Some(wait);
        self
    }

    pub fn permits(mut self, permits: u32) -> LockOptions {
        self.permits = permits;
        self
    }
}

impl Client {
    /// Acquires a permit once, without renewing it: see [`Client::lock`] for a guard that does.
    pub async fn lock_acquire(
        &self,
        name: impl Into<String>,
        options: &LockOptions,
    ) -> Result<pb::LockHold, Error> {
        let request = pb::LockAcquireRequest {
            name: name.into(),
            owner: options.owner.clone(),
            ttl_ms: millis(options.ttl),
            wait_ms: options.wait.map_or(0, millis),
            permits: options.permits,
        };
        let reply = self.lock.clone().acquire(request).await?.into_inner();
        Ok(reply.hold.unwrap_or_default())
    }

    /// Renews a hold; `ttl` replaces the ttl of the acquire. `STALE_TOKEN` if the hold is gone.
    pub async fn lock_renew(
        &self,
        name: impl Into<String>,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<pb::LockHold, Error> {
        let request = pb::LockRenewRequest {
            name: name.into(),
            token,
            ttl_ms: ttl.map_or(0, millis),
        };
        let reply = self.lock.clone().renew(request).await?.into_inner();
        Ok(reply.hold.unwrap_or_default())
    }

    /// Releases a hold; `STALE_TOKEN` if it had already ended.
    pub async fn lock_release(
        &self,
        name: impl Into<String>,
        token: u64,
    ) -> Result<pb::LockReleaseResponse, Error> {
        let request = pb::LockReleaseRequest {
            name: name.into(),
            token,
        };
        Ok(self.lock.clone().release(request).await?.into_inner())
    }

    /// The lock's permits, holders (in token order) and waiters (in queue order).
    pub async fn lock_get(&self, name: impl Into<String>) -> Result<pb::LockGetResponse, Error> {
        let request = pb::LockGetRequest {
            name: name.into(),
            serializable: false,
        };
        Ok(self.lock.clone().get(request).await?.into_inner())
    }

    /// Whether `token` still holds `name`: for a downstream system deciding whether to accept a
    /// write made under it.
    pub async fn lock_check_fence(
        &self,
        name: impl Into<String>,
        token: u64,
    ) -> Result<bool, Error> {
        let request = pb::LockCheckFenceRequest {
            name: name.into(),
            token,
        };
        Ok(self
            .lock
            .clone()
            .check_fence(request)
            .await?
            .into_inner()
            .current)
    }

    /// Acquires a permit (waiting if the options say so) and keeps it renewed until the guard is
    /// released or dropped.
    pub async fn lock(
        &self,
        name: impl Into<String>,
        options: LockOptions,
    ) -> Result<LockGuard, Error> {
        let name = name.into();
        let sent = Instant::now();
        let hold = self.lock_acquire(name.clone(), &options).await?;
        Ok(LockGuard::start(self.clone(), hold, sent))
    }

    /// Puts `key` only if `token` still holds lock `lock`, in one atomic step; `STALE_TOKEN`
    /// (and no write) otherwise. This is the fenced write.
    pub async fn put_fenced(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lock: impl Into<String>,
        token: u64,
    ) -> Result<pb::TxnResponse, Error> {
        self.txn_fenced(
            lock,
            token,
            vec![pb::RequestOp {
                request: Some(pb::request_op::Request::Put(pb::PutRequest {
                    key: key.into(),
                    value: value.into(),
                    lease: 0,
                })),
            }],
        )
        .await
    }

    /// Applies `ops` atomically only if `token` still holds lock `lock`; `STALE_TOKEN` (and no
    /// change) otherwise.
    pub async fn txn_fenced(
        &self,
        lock: impl Into<String>,
        token: u64,
        ops: Vec<pb::RequestOp>,
    ) -> Result<pb::TxnResponse, Error> {
        let lock = lock.into();
        let request = pb::TxnRequest {
            compares: vec![pb::Compare {
                key: Vec::new(),
                op: pb::CompareOp::Equal as i32,
                target: Some(pb::compare::Target::Fence(pb::Fence {
                    lock: lock.clone(),
                    token,
                })),
            }],
            success: ops,
            failure: Vec::new(),
        };
        let reply = self.txn(request).await?;
        if !reply.succeeded {
            let mut e = Error::new(
                Code::StaleToken,
                format!(
                    "token {token} no longer holds lock {lock}; the write was not applied (at revision {})",
                    reply.header.as_ref().map_or(0, |h| h.revision)
                ),
            );
            e.field = "token".into();
            return Err(e);
        }
        Ok(reply)
    }

    // ---- elections ----

    /// Campaigns once: blocks until `candidate` leads or `wait` passes (`DEADLINE_EXCEEDED`).
    /// [`Election::campaign`] keeps campaigning and renews the leadership.
    pub async fn election_campaign(
        &self,
        request: pb::ElectionCampaignRequest,
    ) -> Result<pb::LockHold, Error> {
        let reply = self.election.clone().campaign(request).await?.into_inner();
        Ok(reply.leader.unwrap_or_default())
    }

    /// The current leader, if any.
    pub async fn election_leader(
        &self,
        name: impl Into<String>,
    ) -> Result<Option<pb::LockHold>, Error> {
        let request = pb::ElectionLeaderRequest {
            name: name.into(),
            serializable: false,
        };
        Ok(self
            .election
            .clone()
            .leader(request)
            .await?
            .into_inner()
            .leader)
    }

    /// Replaces the leader's value; `STALE_TOKEN` if `token` no longer leads.
    pub async fn election_proclaim(
        &self,
        name: impl Into<String>,
        token: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::LockHold, Error> {
        let request = pb::ElectionProclaimRequest {
            name: name.into(),
            token,
            value: value.into(),
        };
        let reply = self.election.clone().proclaim(request).await?.into_inner();
        Ok(reply.leader.unwrap_or_default())
    }

    /// Gives up leadership; the next candidate in line takes over in the same revision.
    pub async fn election_resign(&self, name: impl Into<String>, token: u64) -> Result<(), Error> {
        let request = pb::ElectionResignRequest {
            name: name.into(),
            token,
        };
        self.election.clone().resign(request).await?;
        Ok(())
    }

    /// Follows an election's leader; see [`Observe`].
    pub fn election_observe(&self, name: impl Into<String>) -> Observe {
        Observe {
            client: self.clone(),
            name: name.into(),
            stream: None,
            last: None,
        }
    }

    /// A helper that campaigns for `name` as `candidate` with `value`.
    pub fn election(
        &self,
        name: impl Into<String>,
        candidate: impl Into<String>,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Election {
        Election {
            client: self.clone(),
            name: name.into(),
            candidate: candidate.into(),
            value: value.into(),
            ttl,
        }
    }
}

/// Why a hold ended, as its guard saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The server said the token no longer holds the lock (it expired or was revoked).
    Stale,
    /// No renewal succeeded before the hold's ttl ran out, so it must be presumed expired.
    Unconfirmed,
}

/// A held permit. It renews the hold at a third of its ttl, exposes the fencing token, and
/// reports loss through [`LockGuard::lost`] as soon as the server refuses a renewal (so a hold
/// revoked from outside is noticed at the next renewal, at most a third of the ttl later) or the
/// ttl runs out without a renewal succeeding (measured from when the last successful renewal was
/// sent, so the guard gives up no later than the server does). Dropping the guard releases the
/// hold.
pub struct LockGuard {
    client: Client,
    hold: pb::LockHold,
    lost: watch::Receiver<Option<Lost>>,
    task: JoinHandle<()>,
    released: bool,
}

impl LockGuard {
    fn start(client: Client, hold: pb::LockHold, sent: Instant) -> LockGuard {
        let (lost_tx, lost) = watch::channel(None);
        let task = tokio::spawn(renew(client.clone(), hold.clone(), sent, lost_tx));
        LockGuard {
            client,
            hold,
            lost,
            task,
            released: false,
        }
    }

    /// The fencing token: pass it with every write made under this hold.
    pub fn token(&self) -> u64 {
        self.hold.token
    }

    pub fn name(&self) -> &str {
        &self.hold.name
    }

    /// The hold as the server granted it (lease, ttl, deadline, value).
    pub fn hold(&self) -> &pb::LockHold {
        &self.hold
    }

    /// Resolves once the hold is lost, with why. Never resolves while the hold is renewed.
    pub async fn lost(&self) -> Lost {
        let mut rx = self.lost.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(lost) => lost.clone().expect("waited for Some"),
            // The renew task ended without a verdict: it was aborted, so the hold is not renewed.
            Err(_) => Lost::Unconfirmed,
        }
    }

    /// A receiver that turns `Some` when the hold is lost, for `select!` loops elsewhere.
    pub fn lost_signal(&self) -> watch::Receiver<Option<Lost>> {
        self.lost.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Replaces the value the hold carries (an election leader's proclamation).
    pub async fn proclaim(&mut self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.hold = self
            .client
            .election_proclaim(self.hold.name.clone(), self.hold.token, value)
            .await?;
        Ok(())
    }

    /// Stops renewing and releases the hold; `STALE_TOKEN` if it had already ended.
    pub async fn release(mut self) -> Result<(), Error> {
        self.task.abort();
        self.released = true;
        self.client
            .lock_release(self.hold.name.clone(), self.hold.token)
            .await
            .map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.task.abort();
        // A hold the server refused is gone; one that could not be confirmed may still be there.
        if self.released || *self.lost.borrow() == Some(Lost::Stale) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, name, token) = (self.client.clone(), self.hold.name.clone(), self.hold.token);
        runtime.spawn(async move {
            if let Err(e) = client.lock_release(name.clone(), token).await {
                tracing::debug!(lock = %name, token, error = %e, "release on drop failed");
            }
        });
    }
}

/// The renew loop of a guard: renews at a third of the ttl, retries transient failures quickly,
/// and reports loss on `STALE_TOKEN` or when the ttl since the last confirmed renewal is gone.
async fn renew(
    client: Client,
    hold: pb::LockHold,
    sent: Instant,
    lost: watch::Sender<Option<Lost>>,
) {
    let ttl = Duration::from_millis(hold.ttl_ms);
    let period = (ttl / 3).max(Duration::from_millis(50));
    let retry = (ttl / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    let received = Instant::now();
    // The server's deadline is at least `sent + ttl`, since the grant came after the request was
    // sent. After an acquire that waited in the queue that bound has little left (or has
    // passed), so the guard renews at once and, until that renewal answers, assumes the grant
    // reached it within half a ttl.
    let waited = received.duration_since(sent) >= period;
    let (mut deadline, mut next) = if waited {
        (received + ttl / 2, received)
    } else {
        (sent + ttl, received + period)
    };
    let verdict = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = tokio::time::sleep_until(deadline) => break Lost::Unconfirmed,
        }
        let sent = Instant::now();
        let attempt = tokio::time::timeout_at(
            deadline,
            client.lock_renew(hold.name.clone(), hold.token, None),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => {
                deadline = sent + ttl;
                next = Instant::now() + period;
            }
            Ok(Err(e)) if e.code == Code::StaleToken => break Lost::Stale,
            Ok(Err(e)) => {
                tracing::warn!(lock = %hold.name, token = hold.token, error = %e, "lock renewal failed; retrying");
                next = Instant::now() + retry;
            }
            Err(_) => break Lost::Unconfirmed,
        }
    };
    tracing::warn!(lock = %hold.name, token = hold.token, reason = ?verdict, "lock hold lost");
    let _ = lost.send(Some(verdict));
}

/// Campaigns for an election and hands back the leadership as a [`LockGuard`] (its token is the
/// term; `release` resigns; `proclaim` changes the value).
pub struct Election {
    client: Client,
    name: String,
    candidate: String,
    value: Vec<u8>,
    ttl: Duration,
}

impl Election {
    /// Blocks until this candidate leads, campaigning again whenever a server-side wait runs
    /// out or the server is briefly unreachable.
    pub async fn campaign(&self) -> Result<LockGuard, Error> {
        loop {
            let request = pb::ElectionCampaignRequest {
                name: self.name.clone(),
                candidate: self.candidate.clone(),
                value: self.value.clone(),
                ttl_ms: millis(self.ttl),
                wait_ms: 0,
            };
            let sent = Instant::now();
            match self.client.election_campaign(request).await {
                Ok(hold) => return Ok(LockGuard::start(self.client.clone(), hold, sent)),
                Err(e) if e.is_transient() => {
                    tracing::debug!(election = %self.name, error = %e, "campaigning again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn leader(&self) -> Result<Option<pb::LockHold>, Error> {
        self.client.election_leader(self.name.clone()).await
    }

    /// Every change of leader from now on (starting with the current one).
    pub fn observe(&self) -> Observe {
        self.client.election_observe(self.name.clone())
    }
}

/// The leaders of an election as they change: first the current leader (or `None`), then one
/// item per new leader or new value. It reconnects after a disconnect and skips what it has
/// already reported, so a restart of the server shows up only as the changes it made.
pub struct Observe {
    client: Client,
    name: String,
    stream: Option<Streaming<pb::ElectionObserveResponse>>,
    last: Option<Option<(u64, Vec<u8>)>>,
}

impl Observe {
    /// The next leader (`None`: nobody leads). Errors only for a permanent failure, such as a
    /// bad name; transient ones are retried.
    pub async fn next(&mut self) -> Result<Option<pb::LockHold>, Error> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = pb::ElectionObserveRequest {
                        name: self.name.clone(),
                    };
                    match self.client.election.clone().observe(request).await {
                        Ok(reply) => self.stream.insert(reply.into_inner()),
                        Err(status) => {
                            let e = Error::from(status);
                            if !e.is_transient() {
                                return Err(e);
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
            };
            match stream.message().await {
                Ok(Some(reply)) => {
                    let seen = reply.leader.as_ref().map(|h| (h.token, h.value.clone()));
                    if self.last.as_ref() != Some(&seen) {
                        self.last = Some(seen);
                        return Ok(reply.leader);
                    }
                }
                Ok(None) => self.stream = None,
                Err(status) => {
                    let e = Error::from(status);
                    if !e.is_transient() {
                        return Err(e);
                    }
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
