//! The service registry: the calls, a [`Registration`] that heartbeats in the background, and a
//! [`Resolver`] that keeps a watched local list of a service's instances and picks one.

use crate::client::{Client, millis};
use crate::error::{Code, Error};
use plinth_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

impl Client {
    /// Registers an instance once, with no heartbeats: see [`Client::register`] for a
    /// registration that stays alive.
    pub async fn registry_register(
        &self,
        request: pb::RegistryRegisterRequest,
    ) -> Result<pb::RegistryInstance, Error> {
        let reply = self.registry.clone().register(request).await?.into_inner();
        Ok(reply.instance.unwrap_or_default())
    }

    pub async fn registry_heartbeat(
        &self,
        service: impl Into<String>,
        instance: impl Into<String>,
        lease: u64,
    ) -> Result<pb::RegistryHeartbeatResponse, Error> {
        let request = pb::RegistryHeartbeatRequest {
            service: service.into(),
            instance: instance.into(),
            lease,
        };
        Ok(self.registry.clone().heartbeat(request).await?.into_inner())
    }

    /// Sets `passing`, `warning` or `draining`; `lease` 0 overrides whichever registration
    /// holds the instance id (an operator's call).
    pub async fn registry_set_status(
        &self,
        service: impl Into<String>,
        instance: impl Into<String>,
        lease: u64,
        status: impl Into<String>,
    ) -> Result<pb::RegistryInstance, Error> {
        let request = pb::RegistrySetStatusRequest {
            service: service.into(),
            instance: instance.into(),
            lease,
            status: status.into(),
        };
        let reply = self
            .registry
            .clone()
            .set_status(request)
            .await?
            .into_inner();
        Ok(reply.instance.unwrap_or_default())
    }

    /// Removes the instance; `lease` 0 removes whichever registration holds the id.
    pub async fn registry_deregister(
        &self,
        service: impl Into<String>,
        instance: impl Into<String>,
        lease: u64,
    ) -> Result<(), Error> {
        let request = pb::RegistryDeregisterRequest {
            service: service.into(),
            instance: instance.into(),
            lease,
        };
        self.registry.clone().deregister(request).await?;
        Ok(())
    }

    /// The live instances: passing and warning ones, and with `all` the draining ones too.
    pub async fn registry_resolve(
        &self,
        service: impl Into<String>,
        all: bool,
    ) -> Result<Vec<pb::RegistryInstance>, Error> {
        let request = pb::RegistryResolveRequest {
            service: service.into(),
            all,
            serializable: false,
        };
        Ok(self
            .registry
            .clone()
            .resolve(request)
            .await?
            .into_inner()
            .instances)
    }

    pub async fn registry_services(&self) -> Result<Vec<pb::RegistryService>, Error> {
        Ok(self
            .registry
            .clone()
            .services(pb::RegistryServicesRequest {})
            .await?
            .into_inner()
            .services)
    }

    /// The raw watch stream: from revision 0 a snapshot, then every change. Most applications
    /// want [`Resolver`], which resumes by itself.
    pub async fn registry_watch(
        &self,
        service: impl Into<String>,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::RegistryWatchResponse>, Error> {
        let request = pb::RegistryWatchRequest {
            service: service.into(),
            from_revision,
        };
        Ok(self.registry.clone().watch(request).await?.into_inner())
    }

    /// Registers an instance and keeps it registered; see [`Registration`].
    pub async fn register(&self, options: RegisterOptions) -> Result<Registration, Error> {
        Registration::start(self.clone(), options).await
    }

    /// A local, watched list of `service`'s instances; see [`Resolver`].
    pub async fn resolver(&self, service: impl Into<String>) -> Result<Resolver, Error> {
        Resolver::start(self.clone(), service.into()).await
    }
}

/// What to register.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    pub service: String,
    pub instance: String,
    pub address: String,
    pub metadata: BTreeMap<String, String>,
    /// The lease: the instance leaves this long after its last heartbeat. Default 10 s.
    pub ttl: Duration,
    /// `passing` (default), `warning` or `draining`.
    pub status: String,
}

impl RegisterOptions {
    pub fn new(
        service: impl Into<String>,
        instance: impl Into<String>,
        address: impl Into<String>,
    ) -> RegisterOptions {
        RegisterOptions {
            service: service.into(),
            instance: instance.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
            ttl: Duration::from_millis(plinth_proto::limits::REGISTRY_TTL_MS_DEFAULT),
            status: "passing".into(),
        }
    }

    pub fn ttl(mut self, ttl: Duration) -> RegisterOptions {
        self.ttl = ttl;
        self
    }

    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> RegisterOptions {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn status(mut self, status: impl Into<String>) -> RegisterOptions {
        self.status = status.into();
        self
    }

    fn request(&self) -> pb::RegistryRegisterRequest {
        pb::RegistryRegisterRequest {
            service: self.service.clone(),
            instance: self.instance.clone(),
            address: self.address.clone(),
            metadata: self.metadata.clone(),
            ttl_ms: millis(self.ttl),
            status: self.status.clone(),
        }
    }
}

struct RegistrationShared {
    options: Mutex<RegisterOptions>,
    lease: AtomicU64,
    registrations: AtomicU64,
}

/// An instance kept registered: it heartbeats at a third of its ttl, so two heartbeats may fail
/// (a restart, an election) before the registration is at risk. If the instance expired anyway
/// (the server was away for longer than the ttl) or an operator removed it, it registers again
/// with a fresh lease, as a Consul agent would. If another process registered the same instance
/// id, this one has been replaced: it stops and [`Registration::replaced`] resolves. Dropping it
/// deregisters in the background (best effort: it needs the Tokio runtime to go on running);
/// [`Registration::deregister`] does it and waits. [`Registration::abandon`] stops heartbeating and
/// leaves the instance to expire, as a crash would.
pub struct Registration {
    client: Client,
    shared: Arc<RegistrationShared>,
    replaced: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    async fn start(client: Client, options: RegisterOptions) -> Result<Registration, Error> {
        let first = client.registry_register(options.request()).await?;
        let shared = Arc::new(RegistrationShared {
            options: Mutex::new(options),
            lease: AtomicU64::new(first.lease),
            registrations: AtomicU64::new(1),
        });
        let (replaced_tx, replaced) = watch::channel(false);
        let task = tokio::spawn(heartbeat(client.clone(), shared.clone(), replaced_tx));
        Ok(Registration {
            client,
            shared,
            replaced,
            task: Some(task),
        })
    }

    /// The current registration's lease (it changes when the instance registers again).
    pub fn lease(&self) -> u64 {
        self.shared.lease.load(Ordering::Acquire)
    }

    /// How many times the instance was registered: 1, plus once per re-registration after it
    /// had expired or been removed.
    pub fn registrations(&self) -> u64 {
        self.shared.registrations.load(Ordering::Acquire)
    }

    /// Moves the instance to `passing`, `warning` or `draining`; kept if it registers again.
    pub async fn set_status(&self, status: impl Into<String>) -> Result<(), Error> {
        let status = status.into();
        let (service, instance) = {
            let mut options = self
                .shared
                .options
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            options.status = status.clone();
            (options.service.clone(), options.instance.clone())
        };
        let lease = self.lease();
        match self
            .client
            .registry_set_status(service.clone(), instance.clone(), lease, status.clone())
            .await
        {
            // The heartbeat task registered again meanwhile, perhaps with the old status: set
            // it on the new registration.
            Err(e) if e.code == Code::StaleToken && self.lease() != lease => {
                self.client
                    .registry_set_status(service, instance, self.lease(), status)
                    .await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Resolves if another process registered the same instance id: this registration is over.
    pub async fn replaced(&mut self) {
        let _ = self.replaced.wait_for(|replaced| *replaced).await;
    }

    /// Stops heartbeating and removes the instance now.
    pub async fn deregister(mut self) -> Result<(), Error> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let (service, instance) = self.ids();
        match self
            .client
            .registry_deregister(service, instance, self.lease())
            .await
        {
            // Already gone, or somebody else's now: nothing of ours to remove.
            Err(e) if matches!(e.code, Code::NotFound | Code::StaleToken) => Ok(()),
            other => other,
        }
    }

    /// Stops heartbeating without deregistering: the instance leaves when its lease expires.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn ids(&self) -> (String, String) {
        let options = self
            .shared
            .options
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (options.service.clone(), options.instance.clone())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let (service, instance) = self.ids();
            let (client, lease) = (self.client.clone(), self.lease());
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = client.registry_deregister(service, instance, lease).await;
                });
            }
        }
    }
}

async fn heartbeat(client: Client, shared: Arc<RegistrationShared>, replaced: watch::Sender<bool>) {
    let ttl = shared
        .options
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .ttl;
    let period = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let options = shared
            .options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let lease = shared.lease.load(Ordering::Acquire);
        match client
            .registry_heartbeat(options.service.clone(), options.instance.clone(), lease)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == Code::StaleToken => {
                // Our own registering again may have committed with its reply lost: a
                // registration with our address and metadata is ours to go on with.
                match adopt(&client, &options).await {
                    Some(lease) => {
                        shared.lease.store(lease, Ordering::Release);
                        shared.registrations.fetch_add(1, Ordering::AcqRel);
                    }
                    None => {
                        tracing::warn!(service = %options.service, instance = %options.instance, "registration replaced by another process; heartbeats stop");
                        let _ = replaced.send(true);
                        return;
                    }
                }
            }
            Err(e) if e.code == Code::NotFound => {
                match client.registry_register(options.request()).await {
                    Ok(again) => {
                        shared.lease.store(again.lease, Ordering::Release);
                        shared.registrations.fetch_add(1, Ordering::AcqRel);
                        tracing::info!(service = %options.service, instance = %options.instance, lease = again.lease, "registered again after the instance expired");
                    }
                    Err(e) => {
                        tracing::warn!(service = %options.service, instance = %options.instance, error = %e, "registering again failed; retrying");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(service = %options.service, instance = %options.instance, error = %e, "heartbeat failed; retrying");
            }
        }
    }
}

/// The lease of the registration now holding `options.instance`, if it is the one `options`
/// describes (same address and metadata): a registration of ours whose reply was lost.
async fn adopt(client: &Client, options: &RegisterOptions) -> Option<u64> {
    let instances = client
        .registry_resolve(options.service.clone(), true)
        .await
        .ok()?;
    instances
        .into_iter()
        .find(|i| {
            i.instance == options.instance
                && i.address == options.address
                && i.metadata == options.metadata
        })
        .map(|i| i.lease)
}

/// How a [`Resolver`] picks an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Each in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The one with the fewest requests in flight (counted by the [`Picked`] guards alive),
    /// round robin among equals.
    LeastOutstanding,
}

/// One instance of a resolver's list, with its requests in flight.
#[derive(Debug)]
pub struct Endpoint {
    pub instance: pb::RegistryInstance,
    /// Shared by every version of this instance's entry, so a request picked before a change
    /// is still counted, and uncounted, after it.
    in_flight: Arc<AtomicUsize>,
}

impl Endpoint {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// An instance a [`Resolver`] picked. It counts as a request in flight to that instance until it
/// is dropped, which is what [`Pick::LeastOutstanding`] balances.
#[derive(Debug)]
pub struct Picked {
    endpoint: Arc<Endpoint>,
}

impl std::ops::Deref for Picked {
    type Target = pb::RegistryInstance;

    fn deref(&self) -> &pb::RegistryInstance {
        &self.endpoint.instance
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct ResolverList {
    /// Every live instance by id, draining ones included; endpoints survive list changes so
    /// their in-flight counts carry over.
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    revision: u64,
}

/// A local list of one service's instances, kept by a watch: it starts from a snapshot, applies
/// every change as it happens, resumes after a disconnect from the last revision it applied,
/// and takes a new snapshot if the server no longer has the changes since (`COMPACTED`).
/// Reading the list and picking from it are local calls; draining instances are never picked.
/// Dropping the resolver stops it.
pub struct Resolver {
    list: Arc<RwLock<ResolverList>>,
    changed: watch::Receiver<u64>,
    next: AtomicUsize,
    task: JoinHandle<()>,
}

impl Resolver {
    /// Starts resolving: returns once the first snapshot is in.
    async fn start(client: Client, service: String) -> Result<Resolver, Error> {
        let list = Arc::new(RwLock::new(ResolverList::default()));
        let (tx, mut changed) = watch::channel(0u64);
        // The first snapshot comes through the watch itself, so no change can fall between a
        // resolve and a watch.
        let mut stream = client.registry_watch(service.clone(), 0).await?;
        if let Some(message) = stream.message().await? {
            apply(&list, message);
        }
        tx.send_replace(list.read().unwrap_or_else(PoisonError::into_inner).revision);
        changed.borrow_and_update();
        let task = tokio::spawn(follow(client, service, stream, list.clone(), tx));
        Ok(Resolver {
            list,
            changed,
            next: AtomicUsize::new(0),
            task,
        })
    }

    /// The instances that may be picked (passing and warning), in instance id order.
    pub fn instances(&self) -> Vec<pb::RegistryInstance> {
        self.endpoints()
            .into_iter()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Every live instance, draining ones included.
    pub fn all_instances(&self) -> Vec<pb::RegistryInstance> {
        self.list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoints
            .values()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// The revision the list reflects.
    pub fn revision(&self) -> u64 {
        self.list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision
    }

    /// Picks an instance, or `None` if none may be picked now.
    pub fn pick(&self, how: Pick) -> Option<Picked> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match how {
            Pick::RoundRobin => &endpoints[turn % endpoints.len()],
            Pick::Random => &endpoints[fastrand::usize(..endpoints.len())],
            Pick::LeastOutstanding => {
                let fewest = endpoints.iter().map(|e| e.in_flight()).min().expect("some");
                let least: Vec<&Arc<Endpoint>> = endpoints
                    .iter()
                    .filter(|e| e.in_flight() == fewest)
                    .collect();
                least[turn % least.len()]
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Picked {
            endpoint: chosen.clone(),
        })
    }

    /// Waits for the list to change and answers the revision it reflects then. A change no call
    /// has waited for yet (since the resolver started or since the last `changed` or
    /// `wait_for`) answers at once.
    pub async fn changed(&mut self) -> u64 {
        if self.changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.changed.borrow_and_update()
    }

    /// Waits until the list reflects `revision` or a later one, and answers the revision then.
    pub async fn wait_for(&mut self, revision: u64) -> u64 {
        match self.changed.wait_for(|r| *r >= revision).await {
            Ok(r) => *r,
            Err(_) => std::future::pending().await,
        }
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoints
            .values()
            .filter(|e| e.instance.status != "draining")
            .cloned()
            .collect()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies one watch message to the list.
fn apply(list: &RwLock<ResolverList>, message: pb::RegistryWatchResponse) {
    let mut list = list.write().unwrap_or_else(PoisonError::into_inner);
    let endpoint = |instance: pb::RegistryInstance, old: Option<&Arc<Endpoint>>| {
        let in_flight = old.map_or_else(Arc::default, |e| e.in_flight.clone());
        Arc::new(Endpoint {
            instance,
            in_flight,
        })
    };
    if message.snapshot {
        let old = std::mem::take(&mut list.endpoints);
        for instance in message.instances {
            let id = instance.instance.clone();
            let e = endpoint(instance, old.get(&id));
            list.endpoints.insert(id, e);
        }
    }
    for event in message.events {
        let Some(instance) = event.instance else {
            continue;
        };
        let id = instance.instance.clone();
        if event.r#type == "down" {
            list.endpoints.remove(&id);
        } else {
            let e = endpoint(instance, list.endpoints.get(&id));
            list.endpoints.insert(id, e);
        }
    }
    list.revision = list.revision.max(message.revision);
}

async fn follow(
    client: Client,
    service: String,
    mut stream: tonic::Streaming<pb::RegistryWatchResponse>,
    list: Arc<RwLock<ResolverList>>,
    tx: watch::Sender<u64>,
) {
    loop {
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    apply(&list, message);
                    tx.send_replace(list.read().unwrap_or_else(PoisonError::into_inner).revision);
                }
                Ok(None) => break,
                Err(status) => {
                    let e = Error::from(status);
                    if e.code == Code::Compacted {
                        // Resume with a snapshot: the changes since are gone.
                        list.write()
                            .unwrap_or_else(PoisonError::into_inner)
                            .revision = 0;
                    } else if !e.is_transient() {
                        tracing::warn!(%service, error = %e, "registry watch failed; retrying");
                    }
                    break;
                }
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let from = list.read().unwrap_or_else(PoisonError::into_inner).revision;
            match client.registry_watch(service.clone(), from).await {
                Ok(s) => {
                    stream = s;
                    break;
                }
                Err(e) if e.code == Code::Compacted => {
                    list.write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .revision = 0;
                }
                Err(e) => {
                    if !e.is_transient() {
                        tracing::warn!(%service, error = %e, "registry watch refused; retrying");
                    }
                }
            }
        }
    }
}
