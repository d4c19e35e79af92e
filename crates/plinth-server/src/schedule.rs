//! The scheduler calls and their gRPC service. `Claim` long-polls like a queue receive: woken by
//! the apply that makes a run claimable (a tick that materializes a fire time or ends a backoff).

use crate::api::Api;
use crate::error::ApiError;
use plinth_core::Wake;
use plinth_core::limits::{self, SCHEDULE_WAIT_MS_MAX};
use plinth_core::schedule;
use plinth_core::schedule::{
    Misfire, Overlap, Policy, RunCounts, RunId, RunInfo, RunState, ScheduleInfo, Spec,
};
use plinth_core::{ErrorCode, FencingToken};
use plinth_proto::v1 as pb;
use plinth_proto::v1::scheduler_server::SchedulerServer;
use std::time::Duration;
use tokio::time::Instant;

fn spec(s: pb::ScheduleSpec) -> Result<Spec, ApiError> {
    let given = [
        s.at_ms != 0,
        s.delay_ms != 0,
        s.every_ms != 0,
        !s.cron.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::invalid(
            "spec",
            "a spec needs exactly one of at_ms, delay_ms, every_ms or cron",
        ));
    }
    Ok(if s.at_ms != 0 {
        Spec::At { at_ms: s.at_ms }
    } else if s.delay_ms != 0 {
        Spec::Delay {
            delay_ms: s.delay_ms,
        }
    } else if s.every_ms != 0 {
        Spec::Every {
            interval_ms: s.every_ms,
        }
    } else {
        Spec::Cron {
            expr: s.cron,
            tz: if s.tz.is_empty() { "UTC".into() } else { s.tz },
        }
    })
}

fn spec_out(s: &Spec) -> pb::ScheduleSpec {
    match s {
        Spec::At { at_ms } => pb::ScheduleSpec {
            at_ms: *at_ms,
            ..Default::default()
        },
        Spec::Delay { delay_ms } => pb::ScheduleSpec {
            delay_ms: *delay_ms,
            ..Default::default()
        },
        Spec::Every { interval_ms } => pb::ScheduleSpec {
            every_ms: *interval_ms,
            ..Default::default()
        },
        Spec::Cron { expr, tz } => pb::ScheduleSpec {
            cron: expr.clone(),
            tz: tz.clone(),
            ..Default::default()
        },
    }
}

fn policy(p: pb::SchedulePolicy) -> Result<Policy, ApiError> {
    let or = |value: u64, default: u64| if value == 0 { default } else { value };
    let overlap = match p.overlap.as_str() {
        "" | "allow" => Overlap::Allow,
        "skip" => Overlap::Skip,
        "queue" => Overlap::Queue,
        other => {
            return Err(ApiError::invalid(
                "overlap",
                format!("overlap {other:?} is not one of allow, skip, queue"),
            ));
        }
    };
    let misfire = match p.misfire.as_str() {
        "" | "run_once" => Misfire::RunOnce,
        "run_all" => Misfire::RunAll,
        "skip" => Misfire::Skip,
        other => {
            return Err(ApiError::invalid(
                "misfire",
                format!("misfire {other:?} is not one of run_once, run_all, skip"),
            ));
        }
    };
    Ok(Policy {
        max_attempts: if p.max_attempts == 0 {
            limits::SCHEDULE_ATTEMPTS_DEFAULT
        } else {
            p.max_attempts
        },
        backoff_ms: p.backoff_ms.unwrap_or(limits::SCHEDULE_BACKOFF_MS_DEFAULT),
        timeout_ms: or(p.timeout_ms, limits::SCHEDULE_TIMEOUT_MS_DEFAULT),
        overlap,
        misfire,
        misfire_grace_ms: p
            .misfire_grace_ms
            .unwrap_or(limits::SCHEDULE_MISFIRE_GRACE_MS_DEFAULT),
    })
}

fn policy_out(p: &Policy) -> pb::SchedulePolicy {
    pb::SchedulePolicy {
        max_attempts: p.max_attempts,
        backoff_ms: Some(p.backoff_ms),
        timeout_ms: p.timeout_ms,
        overlap: match p.overlap {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
        .into(),
        misfire: match p.misfire {
            Misfire::RunOnce => "run_once",
            Misfire::RunAll => "run_all",
            Misfire::Skip => "skip",
        }
        .into(),
        misfire_grace_ms: Some(p.misfire_grace_ms),
    }
}

/// The schedule with its counts and due-delay percentiles over the runs kept.
fn schedule_out(info: ScheduleInfo, counts: RunCounts) -> pb::Schedule {
    let delays = &counts.due_delays_ms;
    // Nearest rank: the smallest delay that at least q% of the delays do not exceed.
    let pick = |q: usize| {
        let rank = (delays.len() * q).div_ceil(100).max(1);
        delays.get(rank - 1).copied().unwrap_or(0)
    };
    pb::Schedule {
        spec: Some(spec_out(&info.spec)),
        policy: Some(policy_out(&info.policy)),
        job: info.job,
        paused: info.paused,
        next_fire_ms: info.next_fire.map_or(0, |t| t.0),
        created_at_ms: info.created_at.0,
        stats: Some(pb::ScheduleStats {
            completed: info.completed,
            dead: info.dead,
            retried: info.retried,
            skipped_overlap: info.skipped_overlap,
            skipped_misfire: info.skipped_misfire,
            due_delay_p50_ms: pick(50),
            due_delay_p99_ms: pick(99),
            due_delay_max_ms: delays.last().copied().unwrap_or(0),
            pending: counts.pending,
            claimed: counts.claimed,
        }),
        id: info.id,
    }
}

fn run_out(r: RunInfo) -> pb::ScheduleRun {
    let (state, worker, result, at) = match r.state {
        RunState::Pending { runnable_at } => ("pending", String::new(), Vec::new(), runnable_at),
        RunState::Claimed { worker, until, .. } => ("claimed", worker, Vec::new(), until),
        RunState::Completed { at, result } => ("completed", String::new(), result, at),
        RunState::Dead { at, .. } => ("dead", String::new(), Vec::new(), at),
    };
    pb::ScheduleRun {
        run_id: r.id.to_string(),
        schedule: r.id.schedule,
        fire_time_ms: r.id.fire_time.0,
        state: state.into(),
        attempt: r.attempt,
        first_claimed_at_ms: r.first_claimed_at.map_or(0, |t| t.0),
        last_error: r.last_error,
        manual: r.manual,
        worker,
        result,
        at_ms: at.0,
    }
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    RunId::parse(text).ok_or_else(|| {
        ApiError::invalid(
            "run_id",
            format!("run id {text:?} is not a run id; run ids read <schedule>@<fire_time_ms>"),
        )
    })
}

impl Api {
    /// The schedule `id` as it is now (after a write, at least as new as it).
    async fn schedule_now(&self, id: String) -> Result<pb::ScheduleResponse, ApiError> {
        let lookup = id.clone();
        let ((info, counts), header) = self
            .read(false, move |s| {
                (
                    s.schedules().info(&lookup),
                    s.schedules().run_counts(&lookup),
                )
            })
            .await?;
        let info = info.ok_or_else(|| {
            ApiError::from(plinth_core::StateError::from(
                plinth_core::schedule::ScheduleError::NotFound { id },
            ))
        })?;
        Ok(pb::ScheduleResponse {
            header: Some(header),
            schedule: Some(schedule_out(info, counts)),
        })
    }

    pub async fn schedule_create(
        &self,
        r: pb::ScheduleCreateRequest,
    ) -> Result<pb::ScheduleResponse, ApiError> {
        let create = schedule::Create {
            id: r.id.clone(),
            spec: spec(r.spec.unwrap_or_default())?,
            job: r.job,
            policy: policy(r.policy.unwrap_or_default())?,
        };
        self.call(create).await?;
        self.schedule_now(r.id).await
    }

    pub async fn schedule_get(
        &self,
        r: pb::ScheduleIdRequest,
    ) -> Result<pb::ScheduleResponse, ApiError> {
        self.schedule_now(r.id).await
    }

    pub async fn schedule_list(
        &self,
        _r: pb::ScheduleListRequest,
    ) -> Result<pb::ScheduleListResponse, ApiError> {
        let (all, header) = self
            .read(false, |s| {
                s.schedules()
                    .list()
                    .into_iter()
                    .map(|info| {
                        let counts = s.schedules().run_counts(&info.id);
                        (info, counts)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        Ok(pb::ScheduleListResponse {
            header: Some(header),
            schedules: all
                .into_iter()
                .map(|(info, counts)| schedule_out(info, counts))
                .collect(),
        })
    }

    pub async fn schedule_cancel(
        &self,
        r: pb::ScheduleIdRequest,
    ) -> Result<pb::ScheduleCancelResponse, ApiError> {
        let (runs, header) = self.call(schedule::Cancel { id: r.id }).await?;
        Ok(pb::ScheduleCancelResponse {
            header: Some(header),
            runs,
        })
    }

    pub async fn schedule_pause(
        &self,
        r: pb::ScheduleIdRequest,
    ) -> Result<pb::ScheduleResponse, ApiError> {
        self.call(schedule::Pause { id: r.id.clone() }).await?;
        self.schedule_now(r.id).await
    }

    pub async fn schedule_resume(
        &self,
        r: pb::ScheduleIdRequest,
    ) -> Result<pb::ScheduleResponse, ApiError> {
        self.call(schedule::Resume { id: r.id.clone() }).await?;
        self.schedule_now(r.id).await
    }

    pub async fn schedule_trigger(
        &self,
        r: pb::ScheduleIdRequest,
    ) -> Result<pb::ScheduleTriggerResponse, ApiError> {
        let (run, header) = self.call(schedule::Trigger { id: r.id }).await?;
        Ok(pb::ScheduleTriggerResponse {
            header: Some(header),
            run_id: run.to_string(),
        })
    }

    pub async fn schedule_runs(
        &self,
        r: pb::ScheduleRunsRequest,
    ) -> Result<pb::ScheduleRunsResponse, ApiError> {
        let id = r.id.clone();
        let ((exists, mut runs), header) = self
            .read(false, move |s| {
                (s.schedules().info(&id).is_some(), s.schedules().runs(&id))
            })
            .await?;
        if !exists {
            return Err(ApiError::from(plinth_core::StateError::from(
                plinth_core::schedule::ScheduleError::NotFound { id: r.id },
            )));
        }
        if r.limit != 0 && runs.len() > r.limit as usize {
            runs.drain(..runs.len() - r.limit as usize);
        }
        Ok(pb::ScheduleRunsResponse {
            header: Some(header),
            runs: runs.into_iter().map(run_out).collect(),
        })
    }

    pub async fn schedule_claim(
        &self,
        r: pb::ScheduleClaimRequest,
    ) -> Result<pb::ScheduleClaimResponse, ApiError> {
        if r.wait_ms > SCHEDULE_WAIT_MS_MAX {
            return Err(ApiError::invalid(
                "wait",
                format!(
                    "wait is {}ms; the maximum is {SCHEDULE_WAIT_MS_MAX}ms",
                    r.wait_ms
                ),
            ));
        }
        let deadline = Instant::now() + Duration::from_millis(r.wait_ms);
        let claim = schedule::Claim {
            worker: r.worker,
            max: r.max.max(1),
            schedules: r.schedules.clone(),
        };
        loop {
            let (claims, header) = self.call(claim.clone()).await?;
            if !claims.is_empty() || Instant::now() >= deadline {
                for c in claims.iter().filter(|c| c.attempt == 1) {
                    let delay_ms = c.claimed_at.0.saturating_sub(c.run.fire_time.0);
                    self.metrics.observe_due_delay(&c.run.schedule, delay_ms);
                }
                return Ok(pb::ScheduleClaimResponse {
                    header: Some(header),
                    runs: claims
                        .into_iter()
                        .map(|c| pb::ScheduleClaim {
                            run_id: c.run.to_string(),
                            schedule: c.run.schedule,
                            fire_time_ms: c.run.fire_time.0,
                            token: c.token.0,
                            attempt: c.attempt,
                            job: c.job,
                            lease_until_ms: c.until.0,
                            lease_ms: c.lease_ms,
                        })
                        .collect(),
                });
            }
            let schedules = r.schedules.clone();
            let ready = self.node.wait_for(Wake::Schedules, move |s| {
                s.schedules()
                    .has_claimable(s.clock(), &schedules)
                    .then_some(())
            });
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                ready = ready => ready?,
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(pb::ScheduleClaimResponse { header: Some(header), runs: Vec::new() });
                }
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(ApiError::new(ErrorCode::Unavailable, "", "the server is shutting down"));
                }
            }
        }
    }

    pub async fn schedule_heartbeat(
        &self,
        r: pb::ScheduleHeartbeatRequest,
    ) -> Result<pb::ScheduleHeartbeatResponse, ApiError> {
        let heartbeat = schedule::Heartbeat {
            run: run_id(&r.run_id)?,
            token: FencingToken(r.token),
        };
        let (until, header) = self.call(heartbeat).await?;
        Ok(pb::ScheduleHeartbeatResponse {
            header: Some(header),
            lease_until_ms: until.0,
        })
    }

    pub async fn schedule_complete(
        &self,
        r: pb::ScheduleCompleteRequest,
    ) -> Result<pb::ScheduleCompleteResponse, ApiError> {
        let complete = schedule::Complete {
            run: run_id(&r.run_id)?,
            token: FencingToken(r.token),
            result: r.result,
        };
        let ((), header) = self.call(complete).await?;
        Ok(pb::ScheduleCompleteResponse {
            header: Some(header),
        })
    }

    pub async fn schedule_fail(
        &self,
        r: pb::ScheduleFailRequest,
    ) -> Result<pb::ScheduleFailResponse, ApiError> {
        let fail = schedule::Fail {
            run: run_id(&r.run_id)?,
            token: FencingToken(r.token),
            error: r.error,
        };
        let (failed, header) = self.call(fail).await?;
        Ok(pb::ScheduleFailResponse {
            header: Some(header),
            dead: failed.dead,
            runnable_at_ms: failed.runnable_at.map_or(0, |t| t.0),
        })
    }
}

service! {
    pb::scheduler_server::Scheduler, SchedulerServer, "schedule" {}
    create(pb::ScheduleCreateRequest) -> pb::ScheduleResponse => schedule_create;
    get(pb::ScheduleIdRequest) -> pb::ScheduleResponse => schedule_get;
    list(pb::ScheduleListRequest) -> pb::ScheduleListResponse => schedule_list;
    cancel(pb::ScheduleIdRequest) -> pb::ScheduleCancelResponse => schedule_cancel;
    pause(pb::ScheduleIdRequest) -> pb::ScheduleResponse => schedule_pause;
    resume(pb::ScheduleIdRequest) -> pb::ScheduleResponse => schedule_resume;
    trigger(pb::ScheduleIdRequest) -> pb::ScheduleTriggerResponse => schedule_trigger;
    runs(pb::ScheduleRunsRequest) -> pb::ScheduleRunsResponse => schedule_runs;
    claim(pb::ScheduleClaimRequest) -> pb::ScheduleClaimResponse => schedule_claim;
    heartbeat(pb::ScheduleHeartbeatRequest) -> pb::ScheduleHeartbeatResponse => schedule_heartbeat;
    complete(pb::ScheduleCompleteRequest) -> pb::ScheduleCompleteResponse => schedule_complete;
    fail(pb::ScheduleFailRequest) -> pb::ScheduleFailResponse => schedule_fail;
}
