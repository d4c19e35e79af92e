//! The scheduler: the calls, and a [`Worker`] that claims runs in batches, runs handlers
//! concurrently, heartbeats while they run, completes or fails them, and shuts down gracefully.

use crate::client::{Client, millis};
use crate::error::{Code, Error};
use plinth_proto::v1 as pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What the server keeps of a failed run's error and of a completed run's result.
use plinth_proto::limits::{
    SCHEDULE_ERROR_BYTES_MAX as ERROR_BYTES_MAX, SCHEDULE_RESULT_BYTES_MAX as RESULT_BYTES_MAX,
};

impl Client {
    /// Creates a schedule; 0 fields of `policy` take the defaults.
    pub async fn schedule_create(
        &self,
        id: impl Into<String>,
        spec: pb::ScheduleSpec,
        job: impl Into<Vec<u8>>,
        policy: pb::SchedulePolicy,
    ) -> Result<pb::Schedule, Error> {
        let request = pb::ScheduleCreateRequest {
            id: id.into(),
            spec: Some(spec),
            job: job.into(),
            policy: Some(policy),
        };
        let reply = self.scheduler.clone().create(request).await?.into_inner();
        Ok(reply.schedule.unwrap_or_default())
    }

    pub async fn schedule_get(&self, id: impl Into<String>) -> Result<pb::Schedule, Error> {
        let request = pb::ScheduleIdRequest { id: id.into() };
        let reply = self.scheduler.clone().get(request).await?.into_inner();
        Ok(reply.schedule.unwrap_or_default())
    }

    pub async fn schedule_list(&self) -> Result<Vec<pb::Schedule>, Error> {
        let reply = self
            .scheduler
            .clone()
            .list(pb::ScheduleListRequest {})
            .await?
            .into_inner();
        Ok(reply.schedules)
    }

    /// Deletes a schedule and its runs; answers how many runs went with it.
    pub async fn schedule_cancel(&self, id: impl Into<String>) -> Result<u64, Error> {
        let request = pb::ScheduleIdRequest { id: id.into() };
        Ok(self
            .scheduler
            .clone()
            .cancel(request)
            .await?
            .into_inner()
            .runs)
    }

    pub async fn schedule_pause(&self, id: impl Into<String>) -> Result<pb::Schedule, Error> {
        let request = pb::ScheduleIdRequest { id: id.into() };
        let reply = self.scheduler.clone().pause(request).await?.into_inner();
        Ok(reply.schedule.unwrap_or_default())
    }

    pub async fn schedule_resume(&self, id: impl Into<String>) -> Result<pb::Schedule, Error> {
        let request = pb::ScheduleIdRequest { id: id.into() };
        let reply = self.scheduler.clone().resume(request).await?.into_inner();
        Ok(reply.schedule.unwrap_or_default())
    }

    /// A run now; answers its run id.
    pub async fn schedule_trigger(&self, id: impl Into<String>) -> Result<String, Error> {
        let request = pb::ScheduleIdRequest { id: id.into() };
        Ok(self
            .scheduler
            .clone()
            .trigger(request)
            .await?
            .into_inner()
            .run_id)
    }

    /// The schedule's runs, oldest first; the latest `limit` (all kept when 0).
    pub async fn schedule_runs(
        &self,
        id: impl Into<String>,
        limit: u32,
    ) -> Result<Vec<pb::ScheduleRun>, Error> {
        let request = pb::ScheduleRunsRequest {
            id: id.into(),
            limit,
        };
        Ok(self
            .scheduler
            .clone()
            .runs(request)
            .await?
            .into_inner()
            .runs)
    }

    /// Claims up to `max` runnable runs, waiting up to `wait` (at most 20 s) for one.
    pub async fn schedule_claim(
        &self,
        request: pb::ScheduleClaimRequest,
    ) -> Result<Vec<pb::ScheduleClaim>, Error> {
        Ok(self
            .scheduler
            .clone()
            .claim(request)
            .await?
            .into_inner()
            .runs)
    }

    /// Renews a claim; `STALE_TOKEN` once it is not the run's live claim.
    pub async fn schedule_heartbeat(
        &self,
        run_id: impl Into<String>,
        token: u64,
    ) -> Result<u64, Error> {
        let request = pb::ScheduleHeartbeatRequest {
            run_id: run_id.into(),
            token,
        };
        Ok(self
            .scheduler
            .clone()
            .heartbeat(request)
            .await?
            .into_inner()
            .lease_until_ms)
    }

    pub async fn schedule_complete(
        &self,
        run_id: impl Into<String>,
        token: u64,
        result: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let request = pb::ScheduleCompleteRequest {
            run_id: run_id.into(),
            token,
            result: result.into(),
        };
        self.scheduler.clone().complete(request).await?;
        Ok(())
    }

    /// Fails a claimed run: it is retried after backoff, or is dead (answered `true`).
    pub async fn schedule_fail(
        &self,
        run_id: impl Into<String>,
        token: u64,
        error: impl Into<String>,
    ) -> Result<bool, Error> {
        let request = pb::ScheduleFailRequest {
            run_id: run_id.into(),
            token,
            error: error.into(),
        };
        Ok(self
            .scheduler
            .clone()
            .fail(request)
            .await?
            .into_inner()
            .dead)
    }

    /// Starts a [`Worker`] that runs `handler` on every run it claims.
    pub fn worker<H, F, E>(&self, options: WorkerOptions, handler: H) -> Worker
    where
        H: Fn(pb::ScheduleClaim) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<u8>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        Worker::start(self.clone(), options, handler)
    }
}

/// How a [`Worker`] runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The worker's name, as runs show it.
    pub name: String,
    /// Handlers running at once; a claim asks for as many runs as there are free slots.
    pub concurrency: usize,
    /// Only runs of these schedules; all when empty.
    pub schedules: Vec<String>,
    /// Long-poll wait of each claim; also the longest a shutdown waits for an idle worker.
    pub wait: Duration,
}

impl WorkerOptions {
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            concurrency: 4,
            schedules: Vec::new(),
            wait: Duration::from_secs(5),
        }
    }
}

/// What a worker has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub completed: u64,
    pub failed: u64,
    /// Completions or failures refused because the claim had gone stale (it expired and the run
    /// was retried, or the schedule was cancelled).
    pub stale: u64,
}

/// Claims runs in batches and runs a handler per run, concurrently. While a handler runs, its
/// claim is heartbeated at a third of the lease. `Ok(result)` completes the run, `Err` fails it
/// (it is retried with backoff until its attempts run out). [`Worker::shutdown`] stops claiming
/// and lets running handlers finish.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<WorkerStats>,
    failure: watch::Receiver<Option<Error>>,
}

impl Worker {
    fn start<H, F, E>(client: Client, options: WorkerOptions, handler: H) -> Worker
    where
        H: Fn(pb::ScheduleClaim) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<u8>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let (failed, failure) = watch::channel(None);
        let task = tokio::spawn(run(client, options, Arc::new(handler), stopped, failed));
        Worker {
            stop,
            task,
            failure,
        }
    }

    /// Resolves when the worker stopped claiming on an error that retrying cannot mend (a
    /// refused claim request), with that error. Transient errors are retried and never end up
    /// here.
    pub async fn failed(&self) -> Error {
        crate::reported_failure(&self.failure).await
    }

    /// Stops claiming, waits for running handlers to finish, and returns what the worker did.
    pub async fn shutdown(self) -> WorkerStats {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }

    /// Stops at once, abandoning running handlers: their claims are neither completed nor
    /// failed, so the runs are retried when the claims expire — as after a crash.
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn run<H, F, E>(
    client: Client,
    options: WorkerOptions,
    handler: Arc<H>,
    stopped: watch::Receiver<bool>,
    failed: watch::Sender<Option<Error>>,
) -> WorkerStats
where
    H: Fn(pb::ScheduleClaim) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Vec<u8>, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut handlers: JoinSet<WorkerStats> = JoinSet::new();
    let mut stats = WorkerStats::default();
    while !*stopped.borrow() {
        // Wait for at least one free slot, then claim as many runs as there are free slots.
        let first = match slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => break,
        };
        let free = slots.available_permits() + 1;
        let request = pb::ScheduleClaimRequest {
            worker: options.name.clone(),
            max: free.min(100) as u32,
            schedules: options.schedules.clone(),
            wait_ms: millis(options.wait),
        };
        let claims = match client.schedule_claim(request).await {
            Ok(claims) => claims,
            Err(e) if e.is_transient() => {
                drop(first);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(worker = %options.name, error = %e, "worker stopped: claim failed");
                failed.send_replace(Some(e));
                break;
            }
        };
        let mut first = Some(first);
        for claim in claims {
            let permit = match first.take() {
                Some(permit) => permit,
                None => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            };
            let client = client.clone();
            let handler = handler.clone();
            handlers.spawn(async move {
                let stats = handle(&client, &*handler, claim).await;
                drop(permit);
                stats
            });
        }
        while let Some(done) = handlers.try_join_next() {
            add(&mut stats, done.unwrap_or_default());
        }
    }
    while let Some(done) = handlers.join_next().await {
        add(&mut stats, done.unwrap_or_default());
    }
    stats
}

fn add(total: &mut WorkerStats, one: WorkerStats) {
    total.completed += one.completed;
    total.failed += one.failed;
    total.stale += one.stale;
}

async fn handle<H, F, E>(client: &Client, handler: &H, claim: pb::ScheduleClaim) -> WorkerStats
where
    H: Fn(pb::ScheduleClaim) -> F,
    F: Future<Output = Result<Vec<u8>, E>>,
    E: std::fmt::Display,
{
    let mut stats = WorkerStats::default();
    let (run_id, token) = (claim.run_id.clone(), claim.token);
    let period = (Duration::from_millis(claim.lease_ms) / 3).max(Duration::from_millis(100));
    let work = handler(claim);
    tokio::pin!(work);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome.map_err(|e| e.to_string()),
            _ = beat.tick() => {
                if let Err(e) = client.schedule_heartbeat(run_id.clone(), token).await {
                    tracing::warn!(run = %run_id, error = %e, "heartbeat failed");
                }
            }
        }
    };
    let result = match outcome {
        Ok(mut result) => {
            // The run's history keeps at most 64 KiB of result; the run itself succeeded, so
            // the rest is cut rather than the run failed.
            if result.len() > RESULT_BYTES_MAX {
                tracing::warn!(run = %run_id, bytes = result.len(), "result cut to {RESULT_BYTES_MAX} bytes, the most a run keeps");
                result.truncate(RESULT_BYTES_MAX);
            }
            client
                .schedule_complete(run_id.clone(), token, result)
                .await
                .map(|()| stats.completed += 1)
        }
        Err(mut error) => {
            crate::truncate_text(&mut error, ERROR_BYTES_MAX);
            client
                .schedule_fail(run_id.clone(), token, error)
                .await
                .map(|_| stats.failed += 1)
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.code == Code::StaleToken => stats.stale += 1,
        Err(e) => {
            tracing::warn!(run = %run_id, error = %e, "could not complete or fail a run; it is retried when its claim ends");
        }
    }
    stats
}
