//! RegistryState: every service's live instances and its kept events; apply, queries and
//! invariants.

use super::{
    DownReason, InstanceInfo, RegistryCommand, RegistryError, RegistryEvent, RegistryEventKind,
    RegistryOutput, Status,
};
use crate::lease;
use crate::lease::{LeaseCommand, LeaseOutput, LeaseState, check_ttl};
use crate::limits::{
    REGISTRY_ADDRESS_BYTES_MAX, REGISTRY_HISTORY_EVENTS_MAX, REGISTRY_INSTANCES_MAX,
    REGISTRY_METADATA_BYTES_MAX, REGISTRY_METADATA_MAX,
};
use crate::names::check_name;
use crate::registry;
use crate::{Ctx, LeaseId, Millis, Revision, Wake};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Instance {
    address: String,
    metadata: BTreeMap<String, String>,
    status: Status,
    lease: LeaseId,
    ttl_ms: u64,
    registered: Revision,
    modified: Revision,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Service {
    instances: BTreeMap<String, Instance>,
    /// Oldest first.
    events: VecDeque<RegistryEvent>,
    /// This service's events at or below this revision may have been dropped from the history.
    compacted: Revision,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    services: BTreeMap<String, Service>,
    /// The instance each registry lease carries: a lease's end finds its instance here.
    by_lease: BTreeMap<LeaseId, (String, String)>,
    /// (revision, service) of every kept event, oldest first: trimming walks it from the front.
    history: VecDeque<(Revision, String)>,
    /// The newest revision of any event of a service that was forgotten (no instance and no
    /// event left): a service that has no record, or whose record is newer, may have had events
    /// up to here.
    forgotten: Revision,
}

fn info(service: &str, instance: &str, i: &Instance) -> InstanceInfo {
    InstanceInfo {
        service: service.to_owned(),
        instance: instance.to_owned(),
        address: i.address.clone(),
        metadata: i.metadata.clone(),
        status: i.status,
        lease: i.lease,
        ttl_ms: i.ttl_ms,
        registered: i.registered,
        modified: i.modified,
    }
}

fn metadata_bytes(metadata: &BTreeMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_ids(service: &str, instance: &str) -> Result<(), RegistryError> {
    check_name(service).map_err(RegistryError::Service)?;
    check_name(instance).map_err(RegistryError::Instance)
}

impl RegistryState {
    /// Checks a command's shape against the limits without looking at the data.
    pub fn validate(command: &RegistryCommand) -> Result<(), RegistryError> {
        match command {
            RegistryCommand::Register(registry::Register {
                service,
                instance,
                address,
                metadata,
                ttl_ms,
                ..
            }) => {
                check_ids(service, instance)?;
                if address.is_empty() || address.len() > REGISTRY_ADDRESS_BYTES_MAX {
                    return Err(RegistryError::Address {
                        bytes: address.len(),
                    });
                }
                let bytes = metadata_bytes(metadata);
                if metadata.len() > REGISTRY_METADATA_MAX || bytes > REGISTRY_METADATA_BYTES_MAX {
                    return Err(RegistryError::Metadata {
                        entries: metadata.len(),
                        bytes,
                    });
                }
                check_ttl(*ttl_ms).map_err(RegistryError::Ttl)
            }
            RegistryCommand::Heartbeat(registry::Heartbeat {
                service,
                instance,
                lease,
            }) => {
                if *lease == LeaseId(0) {
                    return Err(RegistryError::LeaseZero);
                }
                check_ids(service, instance)
            }
            RegistryCommand::SetStatus(registry::SetStatus {
                service, instance, ..
            })
            | RegistryCommand::Deregister(registry::Deregister {
                service, instance, ..
            }) => check_ids(service, instance),
        }
    }

    /// Applies a command. A returned lease must be ended by the caller in this same revision
    /// (revoked, then released through `State::release_lease`): the lease of a registration that
    /// was replaced or deregistered, whose instance has already left.
    pub fn apply(
        &mut self,
        command: &RegistryCommand,
        leases: &mut LeaseState,
        ctx: &mut Ctx,
    ) -> Result<(RegistryOutput, Option<LeaseId>), RegistryError> {
        Self::validate(command)?;
        match command {
            RegistryCommand::Register(registry::Register {
                service,
                instance,
                address,
                metadata,
                ttl_ms,
                status,
            }) => {
                let previous = self
                    .services
                    .get(service)
                    .and_then(|s| s.instances.get(instance))
                    .map(|i| i.lease);
                if previous.is_none() && self.by_lease.len() >= REGISTRY_INSTANCES_MAX {
                    return Err(RegistryError::TooManyInstances);
                }
                let granted = leases
                    .apply(
                        &LeaseCommand::Grant(lease::Grant {
                            id: None,
                            ttl_ms: *ttl_ms,
                        }),
                        ctx.clock,
                    )
                    .map_err(RegistryError::Lease)?;
                let LeaseOutput::Granted(lease) = granted else {
                    unreachable!("a grant answers Granted")
                };
                if let Some(old) = previous {
                    self.by_lease.remove(&old);
                }
                let entry = Instance {
                    address: address.clone(),
                    metadata: metadata.clone(),
                    status: *status,
                    lease: lease.id,
                    ttl_ms: *ttl_ms,
                    registered: ctx.revision,
                    modified: ctx.revision,
                };
                let shown = info(service, instance, &entry);
                self.service_mut(service)
                    .instances
                    .insert(instance.clone(), entry);
                self.by_lease
                    .insert(lease.id, (service.clone(), instance.clone()));
                self.push_event(RegistryEventKind::Up, shown.clone(), ctx);
                Ok((RegistryOutput::Registered(shown), previous))
            }
            RegistryCommand::Heartbeat(registry::Heartbeat {
                service,
                instance,
                lease,
            }) => {
                self.live(service, instance, Some(*lease), leases, ctx.clock)?;
                let renewed = leases
                    .renew(*lease, None, ctx.clock)
                    .map_err(RegistryError::Lease)?;
                ctx.changed = true;
                Ok((
                    RegistryOutput::HeartbeatOk(registry::HeartbeatOk {
                        deadline: renewed.deadline,
                        ttl_ms: renewed.ttl_ms,
                    }),
                    None,
                ))
            }
            RegistryCommand::SetStatus(registry::SetStatus {
                service,
                instance,
                lease,
                status,
            }) => {
                self.live(service, instance, *lease, leases, ctx.clock)?;
                let entry = self
                    .services
                    .get_mut(service)
                    .and_then(|s| s.instances.get_mut(instance))
                    .expect("live checked it");
                if entry.status == *status {
                    return Ok((
                        RegistryOutput::StatusSet(info(service, instance, entry)),
                        None,
                    ));
                }
                entry.status = *status;
                entry.modified = ctx.revision;
                let shown = info(service, instance, entry);
                self.push_event(RegistryEventKind::Up, shown.clone(), ctx);
                Ok((RegistryOutput::StatusSet(shown), None))
            }
            RegistryCommand::Deregister(registry::Deregister {
                service,
                instance,
                lease,
            }) => {
                // An instance whose lease ran out but whose tick has not come yet may still be
                // deregistered: it leaves now instead.
                let current = self.registration(service, instance, *lease)?.lease;
                self.by_lease.remove(&current);
                self.remove(service, instance, DownReason::Deregistered, ctx);
                Ok((RegistryOutput::Deregistered, Some(current)))
            }
        }
    }

    /// The lease `lease` has ended (expired, revoked, or released): its instance leaves, in the
    /// current revision.
    pub fn release_lease(&mut self, lease: LeaseId, ctx: &mut Ctx) {
        if let Some((service, instance)) = self.by_lease.remove(&lease) {
            self.remove(&service, &instance, DownReason::Expired, ctx);
        }
    }

    /// The registration of `instance`, checking the lease presented for it, if any.
    fn registration(
        &self,
        service: &str,
        instance: &str,
        lease: Option<LeaseId>,
    ) -> Result<&Instance, RegistryError> {
        let entry = self
            .services
            .get(service)
            .and_then(|s| s.instances.get(instance))
            .ok_or_else(|| RegistryError::NotFound {
                service: service.to_owned(),
                instance: instance.to_owned(),
            })?;
        match lease {
            Some(presented) if presented != entry.lease => Err(RegistryError::StaleLease {
                service: service.to_owned(),
                instance: instance.to_owned(),
                presented,
                current: entry.lease,
            }),
            _ => Ok(entry),
        }
    }

    /// Like `registration`, and the lease's deadline must not have passed at `clock`.
    fn live(
        &self,
        service: &str,
        instance: &str,
        lease: Option<LeaseId>,
        leases: &LeaseState,
        clock: Millis,
    ) -> Result<&Instance, RegistryError> {
        let entry = self.registration(service, instance, lease)?;
        if !is_live(entry, leases, clock) {
            return Err(RegistryError::NotFound {
                service: service.to_owned(),
                instance: instance.to_owned(),
            });
        }
        Ok(entry)
    }

    fn remove(&mut self, service: &str, instance: &str, reason: DownReason, ctx: &mut Ctx) {
        let s = self
            .services
            .get_mut(service)
            .expect("RG1: a registered instance's service exists");
        let entry = s
            .instances
            .remove(instance)
            .expect("RG1: a registered instance exists");
        let shown = info(service, instance, &entry);
        self.push_event(RegistryEventKind::Down(reason), shown, ctx);
    }

    /// Records an event at the current revision and trims the oldest past the history limit.
    fn push_event(&mut self, kind: RegistryEventKind, instance: InstanceInfo, ctx: &mut Ctx) {
        ctx.changed = true;
        let service = instance.service.clone();
        ctx.wake(Wake::Registry(service.clone()));
        self.service_mut(&service).events.push_back(RegistryEvent {
            revision: ctx.revision,
            kind,
            instance,
        });
        self.history.push_back((ctx.revision, service));
        // Past the limit, the oldest revision goes whole, so that no revision is ever half kept.
        while self.history.len() > REGISTRY_HISTORY_EVENTS_MAX {
            let oldest = self.history.front().expect("over the limit").0;
            while let Some((revision, name)) = self.history.front().cloned()
                && revision == oldest
            {
                self.history.pop_front();
                let s = self.services.get_mut(&name).expect("RG2: history lists it");
                s.events.pop_front();
                s.compacted = revision;
                // A service whose last instance left keeps its Down event; it is forgotten only
                // when that event goes.
                if s.events.is_empty() && s.instances.is_empty() {
                    self.services.remove(&name);
                    self.forgotten = self.forgotten.max(revision);
                }
            }
        }
    }

    /// The service's record, made if it has none, starting compacted where forgotten services
    /// left off.
    fn service_mut(&mut self, service: &str) -> &mut Service {
        let forgotten = self.forgotten;
        self.services
            .entry(service.to_owned())
            .or_insert_with(|| Service {
                compacted: forgotten,
                ..Service::default()
            })
    }

    /// The instances of `service` whose leases are alive at `clock`: passing and warning ones,
    /// and with `all` the draining ones too. In instance id order.
    pub fn resolve(
        &self,
        service: &str,
        all: bool,
        leases: &LeaseState,
        clock: Millis,
    ) -> Vec<InstanceInfo> {
        self.services
            .get(service)
            .map(|s| {
                s.instances
                    .iter()
                    .filter(|(_, i)| (all || i.status.is_healthy()) && is_live(i, leases, clock))
                    .map(|(id, i)| info(service, id, i))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The events of `service` after revision `after`, oldest first: at least every event of
    /// the first `max` events' revisions, never part of a revision. `Compacted` if some of this
    /// service's events after `after` may have been dropped.
    pub fn events_after(
        &self,
        service: &str,
        after: Revision,
        max: usize,
    ) -> Result<Vec<RegistryEvent>, RegistryError> {
        let compacted = self.compacted(service);
        if after < compacted {
            return Err(RegistryError::Compacted { after, compacted });
        }
        let Some(s) = self.services.get(service) else {
            return Ok(Vec::new());
        };
        let start = s.events.partition_point(|e| e.revision <= after);
        let mut out: Vec<RegistryEvent> = Vec::new();
        for event in s.events.range(start..) {
            if out.len() >= max && out.last().is_some_and(|l| l.revision != event.revision) {
                break;
            }
            out.push(event.clone());
        }
        Ok(out)
    }

    /// The revision at or below which `service`'s events may be gone.
    pub fn compacted(&self, service: &str) -> Revision {
        self.services
            .get(service)
            .map_or(self.forgotten, |s| s.compacted)
    }

    /// The instance as registered now, live or not.
    pub fn instance(&self, service: &str, instance: &str) -> Option<InstanceInfo> {
        self.services
            .get(service)?
            .instances
            .get(instance)
            .map(|i| info(service, instance, i))
    }

    /// Every service with at least one instance, and how many it has.
    pub fn services(&self) -> Vec<(String, usize)> {
        self.services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(name, s)| (name.clone(), s.instances.len()))
            .collect()
    }

    pub fn check_invariants(&self, leases: &LeaseState) {
        let mut instances = 0;
        for (service, s) in &self.services {
            assert!(
                !(s.instances.is_empty() && s.events.is_empty()),
                "RG4: {service} is kept with no instance and no event"
            );
            for (id, i) in &s.instances {
                instances += 1;
                assert!(
                    leases.is_alive(i.lease),
                    "RG1: {service}/{id} has lease {} that is not alive",
                    i.lease
                );
                assert_eq!(
                    self.by_lease.get(&i.lease),
                    Some(&(service.clone(), id.clone())),
                    "RG1: lease {} does not map to {service}/{id}",
                    i.lease
                );
                assert!(
                    !i.address.is_empty()
                        && i.address.len() <= REGISTRY_ADDRESS_BYTES_MAX
                        && i.metadata.len() <= REGISTRY_METADATA_MAX
                        && metadata_bytes(&i.metadata) <= REGISTRY_METADATA_BYTES_MAX,
                    "RG3: {service}/{id} is over the limits"
                );
            }
            assert!(
                s.events
                    .iter()
                    .zip(s.events.iter().skip(1))
                    .all(|(a, b)| a.revision <= b.revision),
                "RG2: {service}'s events go back in revision"
            );
            assert!(
                s.events.iter().all(|e| e.revision > s.compacted),
                "RG2: {service} keeps an event at or below its compacted revision {}",
                s.compacted
            );
            let mut last: BTreeMap<&str, &RegistryEvent> = BTreeMap::new();
            for event in &s.events {
                last.insert(&event.instance.instance, event);
            }
            for (id, event) in last {
                match (&event.kind, s.instances.get(id)) {
                    (RegistryEventKind::Up, Some(i)) => assert_eq!(
                        event.instance,
                        info(service, id, i),
                        "RG5: {service}/{id} differs from its last event"
                    ),
                    (RegistryEventKind::Down(_), None) => {}
                    (kind, now) => panic!(
                        "RG5: {service}/{id}'s last event is {kind:?} but it is {}",
                        if now.is_some() { "registered" } else { "gone" }
                    ),
                }
            }
        }
        assert_eq!(
            self.by_lease.len(),
            instances,
            "RG1: {} leases indexed for {instances} instances",
            self.by_lease.len()
        );
        let events: usize = self.services.values().map(|s| s.events.len()).sum();
        assert_eq!(
            self.history.len(),
            events,
            "RG2: the history index lists {} events for {events}",
            self.history.len()
        );
        assert!(
            self.history.len() <= REGISTRY_HISTORY_EVENTS_MAX,
            "RG2: {} events kept",
            self.history.len()
        );
        assert!(
            self.history
                .iter()
                .zip(self.history.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0),
            "RG2: the history index goes back in revision"
        );
        for (service, s) in &self.services {
            let indexed: Vec<Revision> = self
                .history
                .iter()
                .filter(|(_, name)| name == service)
                .map(|(r, _)| *r)
                .collect();
            let kept: Vec<Revision> = s.events.iter().map(|e| e.revision).collect();
            assert_eq!(
                indexed, kept,
                "RG2: {service}'s events and the index differ"
            );
        }
    }
}

/// Whether an instance's lease is alive and its deadline still ahead of `clock`.
fn is_live(entry: &Instance, leases: &LeaseState, clock: Millis) -> bool {
    leases
        .info(entry.lease, clock)
        .is_some_and(|lease| lease.deadline > clock)
}
