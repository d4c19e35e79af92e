//! The registry calls and their gRPC service.
//!
//! A watch from revision 0 first sends the instances as they are (one `snapshot` message), read
//! at one revision, then every event after that revision; a watch from a revision resumes after
//! it. Each message carries the revision everything up to which it reflects, and never splits the
//! events of one revision, so a watcher that resumes from it misses nothing and sees nothing twice.

use crate::api::{Api, ReplyStream, now_ms};
use crate::error::ApiError;
use plinth_core::Wake;
use plinth_core::registry;
use plinth_core::registry::{
    DownReason, InstanceInfo, RegistryEvent, RegistryEventKind, Status as InstanceStatus,
};
use plinth_core::{LeaseId, Revision, StateError};
use plinth_proto::v1 as pb;
use plinth_proto::v1::registry_server::RegistryServer;

/// Events one watch message carries, rounded up to a whole revision.
const WATCH_BATCH_EVENTS: usize = 1000;

fn status(text: &str) -> Result<InstanceStatus, ApiError> {
    if text.is_empty() {
        return Ok(InstanceStatus::Passing);
    }
    InstanceStatus::parse(text).ok_or_else(|| {
        ApiError::invalid(
            "status",
            format!("status {text:?} is not one of passing, warning, draining"),
        )
    })
}

fn lease(id: u64) -> Option<LeaseId> {
    (id != 0).then_some(LeaseId(id))
}

/// An instance as answers show it; `deadline_ms` gives its time left (0 in events).
fn instance_out(i: InstanceInfo, deadline_ms: Option<u64>) -> pb::RegistryInstance {
    pb::RegistryInstance {
        service: i.service,
        instance: i.instance,
        address: i.address,
        metadata: i.metadata,
        status: i.status.as_str().to_owned(),
        lease: i.lease.0,
        ttl_ms: i.ttl_ms,
        remaining_ms: deadline_ms.map_or(0, |d| d.saturating_sub(now_ms())),
        registered_revision: i.registered.0,
        modified_revision: i.modified.0,
    }
}

fn event_out(e: RegistryEvent) -> pb::RegistryEvent {
    let (kind, reason) = match e.kind {
        RegistryEventKind::Up => ("up", ""),
        RegistryEventKind::Down(DownReason::Deregistered) => ("down", "deregistered"),
        RegistryEventKind::Down(DownReason::Expired) => ("down", "expired"),
    };
    pb::RegistryEvent {
        revision: e.revision.0,
        r#type: kind.to_owned(),
        reason: reason.to_owned(),
        instance: Some(instance_out(e.instance, None)),
    }
}

impl Api {
    /// The instance with its lease's deadline, as the state has it now.
    async fn registry_instance(
        &self,
        info: InstanceInfo,
        header: pb::ResponseHeader,
    ) -> Result<pb::RegistryInstanceResponse, ApiError> {
        let id = info.lease;
        let (deadline, _) = self
            .read(true, move |s| {
                s.leases().info(id, s.clock()).map(|l| l.deadline.0)
            })
            .await?;
        Ok(pb::RegistryInstanceResponse {
            header: Some(header),
            instance: Some(instance_out(info, deadline)),
        })
    }

    pub async fn registry_register(
        &self,
        r: pb::RegistryRegisterRequest,
    ) -> Result<pb::RegistryInstanceResponse, ApiError> {
        let register = registry::Register {
            service: r.service,
            instance: r.instance,
            address: r.address,
            metadata: r.metadata,
            ttl_ms: r.ttl_ms,
            status: status(&r.status)?,
        };
        let (info, header) = self.call(register).await?;
        self.registry_instance(info, header).await
    }

    pub async fn registry_heartbeat(
        &self,
        r: pb::RegistryHeartbeatRequest,
    ) -> Result<pb::RegistryHeartbeatResponse, ApiError> {
        let heartbeat = registry::Heartbeat {
            service: r.service,
            instance: r.instance,
            lease: LeaseId(r.lease),
        };
        let (ok, header) = self.call(heartbeat).await?;
        Ok(pb::RegistryHeartbeatResponse {
            header: Some(header),
            ttl_ms: ok.ttl_ms,
            deadline_ms: ok.deadline.0,
        })
    }

    pub async fn registry_set_status(
        &self,
        r: pb::RegistrySetStatusRequest,
    ) -> Result<pb::RegistryInstanceResponse, ApiError> {
        if r.status.is_empty() {
            return Err(ApiError::invalid(
                "status",
                "status is empty; it must be one of passing, warning, draining",
            ));
        }
        let set = registry::SetStatus {
            service: r.service,
            instance: r.instance,
            lease: lease(r.lease),
            status: status(&r.status)?,
        };
        let (info, header) = self.call(set).await?;
        self.registry_instance(info, header).await
    }

    pub async fn registry_deregister(
        &self,
        r: pb::RegistryDeregisterRequest,
    ) -> Result<pb::RegistryDeregisterResponse, ApiError> {
        let deregister = registry::Deregister {
            service: r.service,
            instance: r.instance,
            lease: lease(r.lease),
        };
        let ((), header) = self.call(deregister).await?;
        Ok(pb::RegistryDeregisterResponse {
            header: Some(header),
        })
    }

    pub async fn registry_resolve(
        &self,
        r: pb::RegistryResolveRequest,
    ) -> Result<pb::RegistryResolveResponse, ApiError> {
        check_service(&r.service)?;
        let (instances, header) = self
            .read(r.serializable, move |s| resolve(s, &r.service, r.all))
            .await?;
        Ok(pb::RegistryResolveResponse {
            header: Some(header),
            instances,
        })
    }

    pub async fn registry_services(
        &self,
        _r: pb::RegistryServicesRequest,
    ) -> Result<pb::RegistryServicesResponse, ApiError> {
        let (services, header) = self.read(false, |s| s.registry().services()).await?;
        Ok(pb::RegistryServicesResponse {
            header: Some(header),
            services: services
                .into_iter()
                .map(|(service, n)| pb::RegistryService {
                    service,
                    instances: n as u64,
                })
                .collect(),
        })
    }

    /// A snapshot first (from revision 0), then every change.
    pub async fn registry_watch(
        &self,
        r: pb::RegistryWatchRequest,
    ) -> Result<ReplyStream<pb::RegistryWatchResponse>, ApiError> {
        check_service(&r.service)?;
        // `None`: the snapshot is still to be sent.
        let from = (r.from_revision != 0).then_some(Revision(r.from_revision));
        let start = (self.clone(), r.service, from);
        let stream = futures::stream::unfold(Some(start), |state| async move {
            let (api, service, seen) = state?;
            let svc = service.clone();
            let next = api
                .node
                .wait_for(Wake::Registry(service.clone()), move |s| {
                    let Some(seen) = seen else {
                        return Some(Ok((true, resolve(s, &svc, true), Vec::new(), s.revision())));
                    };
                    match s.registry().events_after(&svc, seen, WATCH_BATCH_EVENTS) {
                        Ok(events) if events.is_empty() => None,
                        Ok(events) => {
                            let last = events.last().expect("not empty").revision;
                            Some(Ok((false, Vec::new(), events, last)))
                        }
                        Err(e) => Some(Err(e)),
                    }
                });
            match next.await {
                Ok(Ok((snapshot, instances, events, revision))) => {
                    let message = pb::RegistryWatchResponse {
                        header: Some(api.header(revision)),
                        snapshot,
                        instances,
                        events: events.into_iter().map(event_out).collect(),
                        revision: revision.0,
                    };
                    Some((Ok(message), Some((api, service, Some(revision)))))
                }
                Ok(Err(e)) => Some((Err(StateError::from(e).into()), None)),
                Err(e) => Some((Err(e.into()), None)),
            }
        });
        Ok(Box::pin(self.until_shutdown(stream)))
    }
}

fn check_service(service: &str) -> Result<(), ApiError> {
    plinth_core::names::check_name(service)
        .map_err(|e| ApiError::invalid("service", format!("service {e}")))
}

/// The instances `Resolve` answers, with their time left.
fn resolve(s: &plinth_core::State, service: &str, all: bool) -> Vec<pb::RegistryInstance> {
    s.registry()
        .resolve(service, all, s.leases(), s.clock())
        .into_iter()
        .map(|i| {
            let deadline = s.leases().info(i.lease, s.clock()).map(|l| l.deadline.0);
            instance_out(i, deadline)
        })
        .collect()
}

service! {
    pb::registry_server::Registry, RegistryServer, "registry" {
        watch(pb::RegistryWatchRequest) -> WatchStream(pb::RegistryWatchResponse) => registry_watch, sse "registry";
    }
    register(pb::RegistryRegisterRequest) -> pb::RegistryInstanceResponse => registry_register;
    heartbeat(pb::RegistryHeartbeatRequest) -> pb::RegistryHeartbeatResponse => registry_heartbeat;
    set_status(pb::RegistrySetStatusRequest) -> pb::RegistryInstanceResponse => registry_set_status;
    deregister(pb::RegistryDeregisterRequest) -> pb::RegistryDeregisterResponse => registry_deregister;
    resolve(pb::RegistryResolveRequest) -> pb::RegistryResolveResponse => registry_resolve;
    services(pb::RegistryServicesRequest) -> pb::RegistryServicesResponse => registry_services;
}
