//! Config: the calls, and a [`ConfigWatcher`] that keeps a local snapshot of a service's config
//! in step with the server.

use crate::client::Client;
use crate::error::{Code, Error};
use plinth_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A service's whole config at one version, with its values parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSnapshot {
    pub service: String,
    /// 0 before the first put.
    pub version: u64,
    /// When that version was made, in milliseconds since the Unix epoch (0 if unknown).
    pub time_ms: u64,
    pub values: BTreeMap<String, Value>,
}

impl ConfigSnapshot {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// The value of `key` as a `T`: `None` if it is absent, an error if it does not fit.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.values
            .get(key)
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| {
                    Error::new(
                        Code::InvalidArgument,
                        format!("config key {key:?} does not have the expected type: {e}"),
                    )
                })
            })
            .transpose()
    }

    fn from_reply(r: pb::ConfigGetResponse) -> ConfigSnapshot {
        ConfigSnapshot {
            service: r.service,
            version: r.version,
            time_ms: r.time_ms,
            values: r.values.into_iter().map(|(k, v)| (k, parse(&v))).collect(),
        }
    }

    /// Applies one version's change; the caller checks that it is the next version.
    fn apply(&mut self, change: &pb::ConfigVersion) {
        for key in &change.delete {
            self.values.remove(key);
        }
        for (key, value) in &change.set {
            self.values.insert(key.clone(), parse(value));
        }
        self.version = change.version;
        self.time_ms = change.time_ms;
    }
}

/// JSON text from the server as a value; the server only ever sends JSON.
fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn json_text(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}

impl Client {
    /// Sets the keys of `set` and deletes those of `delete` as one new version; with
    /// `expected_version`, only if that is still the latest (0: the first put).
    pub async fn config_put<K: Into<String>>(
        &self,
        service: impl Into<String>,
        set: impl IntoIterator<Item = (K, Value)>,
        delete: impl IntoIterator<Item = K>,
        expected_version: Option<u64>,
    ) -> Result<pb::ConfigVersion, Error> {
        let request = pb::ConfigPutRequest {
            service: service.into(),
            set: set
                .into_iter()
                .map(|(k, v)| (k.into(), json_text(&v)))
                .collect(),
            delete: delete.into_iter().map(Into::into).collect(),
            expected_version,
        };
        let reply = self.config.clone().put(request).await?.into_inner();
        Ok(reply.version.unwrap_or_default())
    }

    /// The snapshot at `version` (0: the latest), a linearizable read.
    pub async fn config_get(
        &self,
        service: impl Into<String>,
        version: u64,
    ) -> Result<ConfigSnapshot, Error> {
        let request = pb::ConfigGetRequest {
            service: service.into(),
            version,
            serializable: false,
        };
        let reply = self.config.clone().get(request).await?.into_inner();
        Ok(ConfigSnapshot::from_reply(reply))
    }

    /// Every kept version after `after_version` (0: from the oldest kept), oldest first,
    /// fetched a page at a time.
    pub async fn config_history(
        &self,
        service: impl Into<String>,
        after_version: u64,
    ) -> Result<Vec<pb::ConfigVersion>, Error> {
        let service = service.into();
        let mut all = Vec::new();
        let mut after = after_version;
        loop {
            let request = pb::ConfigHistoryRequest {
                service: service.clone(),
                after_version: after,
                limit: 0,
            };
            let page = self.config.clone().history(request).await?.into_inner();
            after = page.versions.last().map_or(after, |v| v.version);
            all.extend(page.versions);
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// A new version equal to `to_version`'s snapshot.
    pub async fn config_rollback(
        &self,
        service: impl Into<String>,
        to_version: u64,
        expected_version: Option<u64>,
    ) -> Result<pb::ConfigVersion, Error> {
        let request = pb::ConfigRollbackRequest {
            service: service.into(),
            to_version,
            expected_version,
        };
        let reply = self.config.clone().rollback(request).await?.into_inner();
        Ok(reply.version.unwrap_or_default())
    }

    /// Sets the JSON Schema every later version must satisfy; `None` clears it.
    pub async fn config_set_schema(
        &self,
        service: impl Into<String>,
        schema: Option<&Value>,
    ) -> Result<(), Error> {
        let request = pb::ConfigSetSchemaRequest {
            service: service.into(),
            schema: schema.map(json_text).unwrap_or_default(),
        };
        self.config.clone().set_schema(request).await?;
        Ok(())
    }

    pub async fn config_get_schema(
        &self,
        service: impl Into<String>,
    ) -> Result<Option<Value>, Error> {
        let request = pb::ConfigGetSchemaRequest {
            service: service.into(),
        };
        let schema = self
            .config
            .clone()
            .get_schema(request)
            .await?
            .into_inner()
            .schema;
        Ok((!schema.is_empty()).then(|| parse(&schema)))
    }

    /// How many commits the service keeps; answers the oldest version still kept.
    pub async fn config_set_retention(
        &self,
        service: impl Into<String>,
        versions_kept: u32,
    ) -> Result<u64, Error> {
        let request = pb::ConfigSetRetentionRequest {
            service: service.into(),
            versions_kept,
        };
        Ok(self
            .config
            .clone()
            .set_retention(request)
            .await?
            .into_inner()
            .base_version)
    }

    pub async fn config_list(&self) -> Result<Vec<pb::ConfigService>, Error> {
        Ok(self
            .config
            .clone()
            .list(pb::ConfigListRequest {})
            .await?
            .into_inner()
            .services)
    }

    /// The raw watch stream: every version after `from_version`, once each, in order. Most
    /// applications want [`ConfigWatcher`], which resumes and re-snapshots by itself.
    pub async fn config_watch(
        &self,
        service: impl Into<String>,
        from_version: u64,
    ) -> Result<tonic::Streaming<pb::ConfigWatchResponse>, Error> {
        let request = pb::ConfigWatchRequest {
            service: service.into(),
            from_version,
        };
        Ok(self.config.clone().watch(request).await?.into_inner())
    }

    /// A watcher that keeps `service`'s config in a local snapshot; see [`ConfigWatcher`].
    pub async fn config_watcher(&self, service: impl Into<String>) -> Result<ConfigWatcher, Error> {
        ConfigWatcher::start(self.clone(), service.into(), |_| {}).await
    }
}

/// What a [`ConfigWatcher`] just applied.
#[derive(Clone, Debug)]
pub struct ConfigUpdate {
    pub snapshot: Arc<ConfigSnapshot>,
    /// The version's change when it was applied on top of the one before; `None` when the
    /// watcher took a whole snapshot (at start, or after `COMPACTED`).
    pub change: Option<pb::ConfigVersion>,
}

/// What a [`ConfigWatcher`] has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigWatcherStats {
    /// Versions applied one by one from the watch.
    pub applied: u64,
    /// Whole snapshots taken after the watch answered `COMPACTED`.
    pub resnapshots: u64,
    /// Watches opened again after a disconnect.
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    resnapshots: AtomicU64,
    reconnects: AtomicU64,
}

/// Keeps a local snapshot of one service's config. It starts from a snapshot, then applies each
/// later version from a watch, strictly in order: a version it has already applied is skipped, so
/// its versions only ever go up. After a disconnect it watches again from the last version it
/// applied, so nothing is missed or applied twice; if the server no longer keeps the versions
/// after that one (`COMPACTED`), it takes a new snapshot and goes on from there. Reading the
/// snapshot is a local call. Dropping the watcher stops it.
pub struct ConfigWatcher {
    current: watch::Receiver<Arc<ConfigSnapshot>>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl ConfigWatcher {
    /// Starts watching: returns once the first snapshot is in, with `on_update` called for it
    /// and for every version applied after it, in order.
    pub async fn start(
        client: Client,
        service: String,
        on_update: impl FnMut(&ConfigUpdate) + Send + 'static,
    ) -> Result<ConfigWatcher, Error> {
        let first = first_snapshot(&client, &service).await?;
        Ok(ConfigWatcher::resume(client, first, on_update))
    }

    /// Goes on from a snapshot the application kept (on disk, say, from an earlier run):
    /// `on_update` is called for it, then for every later version. If the server no longer
    /// keeps the versions after it, the watcher takes a new snapshot, as after any `COMPACTED`.
    pub fn resume(
        client: Client,
        snapshot: ConfigSnapshot,
        mut on_update: impl FnMut(&ConfigUpdate) + Send + 'static,
    ) -> ConfigWatcher {
        let service = snapshot.service.clone();
        let first = Arc::new(snapshot);
        on_update(&ConfigUpdate {
            snapshot: first.clone(),
            change: None,
        });
        let (tx, current) = watch::channel(first);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(follow(
            client,
            service,
            tx,
            counters.clone(),
            Box::new(on_update),
        ));
        ConfigWatcher {
            current,
            counters,
            task,
        }
    }

    /// The config as last applied: no network call.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.current.borrow().clone()
    }

    pub fn version(&self) -> u64 {
        self.current.borrow().version
    }

    /// Waits for the next version to be applied and answers the snapshot then.
    pub async fn changed(&mut self) -> Arc<ConfigSnapshot> {
        if self.current.changed().await.is_err() {
            // The task ended (it never does while the watcher lives): the snapshot stays.
            std::future::pending::<()>().await;
        }
        self.current.borrow_and_update().clone()
    }

    /// Waits until the watcher has applied `version` or a later one.
    pub async fn wait_for(&mut self, version: u64) -> Arc<ConfigSnapshot> {
        match self.current.wait_for(|s| s.version >= version).await {
            Ok(snapshot) => snapshot.clone(),
            Err(_) => std::future::pending().await,
        }
    }

    pub fn stats(&self) -> ConfigWatcherStats {
        ConfigWatcherStats {
            applied: self.counters.applied.load(Ordering::Relaxed),
            resnapshots: self.counters.resnapshots.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The latest snapshot, retrying while the server is unreachable. A service with no config yet
/// starts at version 0, empty.
async fn first_snapshot(client: &Client, service: &str) -> Result<ConfigSnapshot, Error> {
    let mut tries = 0;
    loop {
        match client.config_get(service, 0).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(e) if e.code == Code::NotFound && e.field == "service" => {
                return Ok(ConfigSnapshot {
                    service: service.to_owned(),
                    ..ConfigSnapshot::default()
                });
            }
            Err(e) if e.is_transient() && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

type OnUpdate = Box<dyn FnMut(&ConfigUpdate) + Send>;

async fn follow(
    client: Client,
    service: String,
    tx: watch::Sender<Arc<ConfigSnapshot>>,
    counters: Arc<Counters>,
    mut on_update: OnUpdate,
) {
    let mut local: ConfigSnapshot = (**tx.borrow()).clone();
    let mut publish = |local: &ConfigSnapshot, change: Option<pb::ConfigVersion>| {
        let snapshot = Arc::new(local.clone());
        on_update(&ConfigUpdate {
            snapshot: snapshot.clone(),
            change,
        });
        tx.send_replace(snapshot);
    };
    loop {
        let mut resnapshot = false;
        match client.config_watch(service.clone(), local.version).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let Some(change) = message.version else {
                            continue;
                        };
                        if change.version <= local.version {
                            continue;
                        }
                        if change.version != local.version + 1 {
                            // The server sends versions in order from where it was asked to
                            // start; a gap would be a bug, and a snapshot mends it.
                            tracing::warn!(%service, have = local.version, got = change.version, "config watch skipped a version; taking a snapshot");
                            resnapshot = true;
                            break;
                        }
                        local.apply(&change);
                        counters.applied.fetch_add(1, Ordering::Relaxed);
                        publish(&local, Some(change));
                    }
                    // The server ended the stream (it is shutting down): watch again.
                    Ok(None) => break,
                    Err(status) => {
                        let e = Error::from(status);
                        resnapshot = e.code == Code::Compacted;
                        if !resnapshot && !e.is_transient() {
                            tracing::warn!(%service, error = %e, "config watch failed; retrying");
                        }
                        break;
                    }
                }
            },
            Err(e) => {
                resnapshot = e.code == Code::Compacted;
                if !resnapshot && !e.is_transient() {
                    tracing::warn!(%service, error = %e, "config watch refused; retrying");
                }
            }
        }
        if resnapshot {
            match client.config_get(service.clone(), 0).await {
                // Never backwards: a snapshot older than what is applied is not taken.
                Ok(snapshot) if snapshot.version > local.version => {
                    local = snapshot;
                    counters.resnapshots.fetch_add(1, Ordering::Relaxed);
                    publish(&local, None);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%service, error = %e, "config snapshot failed; retrying"),
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}
