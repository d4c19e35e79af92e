//! Client: one connection (HTTP/2, multiplexed) per endpoint, and a method per call.

use crate::error::Error;
use crate::lease::KeepAlive;
use crate::transport::{Connector, Transport};
use crate::watch::{Watch, WatchOptions};
use pb::cluster_client::ClusterClient;
use pb::config_client::ConfigClient;
use pb::election_client::ElectionClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::lock_client::LockClient;
use pb::maintenance_client::MaintenanceClient;
use pb::queue_client::QueueClient;
use pb::registry_client::RegistryClient;
use pb::scheduler_client::SchedulerClient;
use plinth_proto::v1 as pb;
use std::time::Duration;
use tonic::transport::Endpoint;

type Channel = Transport;

/// A handle to a plinth server. Cheap to clone; clones share the connection, which reconnects
/// by itself after the server restarts.
/// A backup saved by [`Client::snapshot_save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSaved {
    /// The revision of the state in the file.
    pub revision: u64,
    /// The file's size.
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Client {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    pub(crate) lock: LockClient<Channel>,
    pub(crate) election: ElectionClient<Channel>,
    pub(crate) queue: QueueClient<Channel>,
    pub(crate) scheduler: SchedulerClient<Channel>,
    pub(crate) config: ConfigClient<Channel>,
    pub(crate) registry: RegistryClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:7070`), failing if the server is not there.
    /// A cluster is several endpoints separated by commas
    /// (`http://10.0.0.1:7070,http://10.0.0.2:7070`): the client connects to the first that
    /// answers, and any of them serves any call.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        let endpoints = Self::endpoints(endpoint)?;
        let mut last = None;
        for (i, e) in endpoints.iter().enumerate() {
            match e.connect_with_connector(Connector).await {
                Ok(_) => {
                    return Ok(Client::from_channel(Transport::new(
                        endpoints
                            .iter()
                            .map(|e| e.connect_with_connector_lazy(Connector))
                            .collect(),
                        i,
                    )));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || Error::new(crate::Code::Unavailable, "no endpoint"),
            Into::into,
        ))
    }

    /// Like [`Client::connect`], but connects on first use: for clients that start before the
    /// server does, or must outlive its restarts.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Client, Error> {
        Ok(Client::from_channel(Transport::new(
            Self::endpoints(endpoint)?
                .iter()
                .map(|e| e.connect_with_connector_lazy(Connector))
                .collect(),
            0,
        )))
    }

    fn endpoints(endpoints: impl Into<String>) -> Result<Vec<Endpoint>, Error> {
        let endpoints = endpoints.into();
        let list: Vec<Endpoint> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Self::endpoint)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(Error::new(
                crate::Code::InvalidArgument,
                format!(
                    "endpoint {endpoints:?} names no server; give a URL such as http://127.0.0.1:7070"
                ),
            ));
        }
        Ok(list)
    }

    fn endpoint(endpoint: &str) -> Result<Endpoint, Error> {
        // The connector (`transport::Connector`) opens plain TCP: plinth's port speaks HTTP/2
        // in clear.
        if !endpoint.starts_with("http://") {
            return Err(Error::new(
                crate::Code::InvalidArgument,
                format!(
                    "endpoint {endpoint:?} does not start with http://; plinth speaks HTTP/2 in clear, as in http://127.0.0.1:7070"
                ),
            ));
        }
        Ok(Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| {
                Error::new(
                    crate::Code::InvalidArgument,
                    format!("endpoint {endpoint:?} is not a URL: {e}"),
                )
            })?
            .connect_timeout(Duration::from_secs(5))
            // A node that stops answering (paused, cut off) is noticed within seconds, so
            // the next call goes to another endpoint.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(4)))
    }

    fn from_channel(channel: Channel) -> Client {
        Client {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            lock: LockClient::new(channel.clone()),
            election: ElectionClient::new(channel.clone()),
            // A receive can carry 100 bodies of 1 MiB.
            queue: QueueClient::new(channel.clone())
                .max_decoding_message_size(128 * 1024 * 1024)
                .max_encoding_message_size(128 * 1024 * 1024),
            // A claim can carry 100 jobs of 1 MiB.
            scheduler: SchedulerClient::new(channel.clone())
                .max_decoding_message_size(128 * 1024 * 1024)
                .max_encoding_message_size(128 * 1024 * 1024),
            // A snapshot or a watch message can carry a whole 1 MiB config.
            config: ConfigClient::new(channel.clone())
                .max_decoding_message_size(128 * 1024 * 1024)
                .max_encoding_message_size(128 * 1024 * 1024),
            // A watch snapshot or a resolve carries every instance of a service.
            registry: RegistryClient::new(channel.clone())
                .max_decoding_message_size(128 * 1024 * 1024)
                .max_encoding_message_size(128 * 1024 * 1024),
            maintenance: MaintenanceClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
        }
    }

    // ---- KV ----

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, Error> {
        self.put_request(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
        })
        .await
    }

    /// Puts a key that is deleted when `lease` ends.
    pub async fn put_with_lease(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: u64,
    ) -> Result<pb::PutResponse, Error> {
        self.put_request(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
        })
        .await
    }

    pub async fn put_request(&self, request: pb::PutRequest) -> Result<pb::PutResponse, Error> {
        Ok(self.kv.clone().put(request).await?.into_inner())
    }

    /// The key's current value, `None` if it does not exist (a linearizable read).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<pb::KeyValue>, Error> {
        Ok(self
            .get_request(pb::GetRequest {
                key: key.into(),
                serializable: false,
            })
            .await?
            .kv)
    }

    pub async fn get_request(&self, request: pb::GetRequest) -> Result<pb::GetResponse, Error> {
        Ok(self.kv.clone().get(request).await?.into_inner())
    }

    /// Every key starting with `prefix` (up to the server's page limit; see `more`).
    pub async fn range_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<pb::RangeResponse, Error> {
        self.range(pb::RangeRequest {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        })
        .await
    }

    pub async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, Error> {
        Ok(self.kv.clone().range(request).await?.into_inner())
    }

    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<pb::DeleteResponse, Error> {
        self.delete_request(pb::DeleteRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn delete_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<pb::DeleteResponse, Error> {
        self.delete_request(pb::DeleteRequest {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        })
        .await
    }

    pub async fn delete_request(
        &self,
        request: pb::DeleteRequest,
    ) -> Result<pb::DeleteResponse, Error> {
        Ok(self.kv.clone().delete(request).await?.into_inner())
    }

    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        Ok(self.kv.clone().txn(request).await?.into_inner())
    }

    pub async fn compact(&self, revision: u64) -> Result<pb::CompactResponse, Error> {
        Ok(self
            .kv
            .clone()
            .compact(pb::CompactRequest { revision })
            .await?
            .into_inner())
    }

    /// Watches keys; see [`Watch`] for the resume guarantee.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watch, Error> {
        Watch::start(self.kv.clone(), options).await
    }

    // ---- leases ----

    pub async fn lease_grant(&self, ttl: Duration) -> Result<pb::LeaseInfo, Error> {
        let request = pb::LeaseGrantRequest {
            ttl_ms: millis(ttl),
            id: 0,
        };
        let reply = self.lease.clone().grant(request).await?.into_inner();
        Ok(reply.lease.unwrap_or_default())
    }

    pub async fn lease_keep_alive(&self, id: u64) -> Result<pb::LeaseInfo, Error> {
        let reply = self
            .lease
            .clone()
            .keep_alive(pb::LeaseKeepAliveRequest { id })
            .await?
            .into_inner();
        Ok(reply.lease.unwrap_or_default())
    }

    pub async fn lease_revoke(&self, id: u64) -> Result<pb::LeaseRevokeResponse, Error> {
        Ok(self
            .lease
            .clone()
            .revoke(pb::LeaseRevokeRequest { id })
            .await?
            .into_inner())
    }

    /// The lease's time left and, with `keys`, the keys attached to it.
    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, Error> {
        let request = pb::LeaseTimeToLiveRequest {
            id,
            keys,
            serializable: false,
        };
        Ok(self.lease.clone().time_to_live(request).await?.into_inner())
    }

    pub async fn lease_list(&self) -> Result<Vec<pb::LeaseInfo>, Error> {
        Ok(self
            .lease
            .clone()
            .list(pb::LeaseListRequest {
                serializable: false,
            })
            .await?
            .into_inner()
            .leases)
    }

    /// Keeps `lease` alive in the background until the handle is dropped; the handle tells when
    /// the lease is lost.
    pub fn keep_alive(&self, lease: &pb::LeaseInfo) -> KeepAlive {
        KeepAlive::start(self.clone(), lease.id, Duration::from_millis(lease.ttl_ms))
    }

    // ---- maintenance ----

    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        Ok(self
            .maintenance
            .clone()
            .status(pb::StatusRequest {})
            .await?
            .into_inner())
    }

    /// Saves a backup of the whole state to `path`, as `plinth snapshot save` does: every write
    /// acknowledged before the call is in it. The file appears complete or not at all (it is
    /// written beside `path`, synced, then renamed). Restore it with `plinth snapshot restore`.
    pub async fn snapshot_save(&self, path: &std::path::Path) -> Result<SnapshotSaved, Error> {
        use tokio::io::AsyncWriteExt as _;
        let io = |what: &str, e: std::io::Error| {
            let mut err = Error::new(
                crate::Code::Internal,
                format!("cannot {what} {}: {e}", path.display()),
            );
            err.field = "path".to_owned();
            err
        };
        let mut stream = self
            .maintenance
            .clone()
            .snapshot(pb::SnapshotRequest {})
            .await?
            .into_inner();
        let mut partial = path.as_os_str().to_owned();
        partial.push(".part");
        let partial = std::path::PathBuf::from(partial);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| io("create a file beside", e))?;
        let written = async {
            let (mut revision, mut total, mut written) = (0, 0, 0u64);
            while let Some(chunk) = stream.message().await? {
                if let Some(header) = chunk.header {
                    (revision, total) = (header.revision, chunk.total_bytes);
                }
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| io("write", e))?;
                written += chunk.data.len() as u64;
            }
            if written != total {
                return Err(Error::new(
                    crate::Code::Unavailable,
                    format!("the backup stream ended after {written} of {total} bytes"),
                ));
            }
            file.sync_all().await.map_err(|e| io("sync", e))?;
            Ok(SnapshotSaved {
                revision,
                bytes: written,
            })
        }
        .await;
        drop(file);
        let saved = match written {
            Ok(saved) => saved,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&partial, path)
            .await
            .map_err(|e| io("rename the finished backup to", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            let dir = tokio::fs::File::open(dir)
                .await
                .map_err(|e| io("open the directory of", e))?;
            dir.sync_all()
                .await
                .map_err(|e| io("sync the directory of", e))?;
        }
        Ok(saved)
    }

    // ---- cluster ----

    /// The members, the leader, and how far each member has replicated (as the leader sees it).
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .cluster
            .clone()
            .status(pb::ClusterStatusRequest {})
            .await?
            .into_inner())
    }

    /// Adds node `id`, listening at `address` (host:port), as a learner; answers once it has
    /// caught up with the log.
    pub async fn cluster_add_learner(
        &self,
        id: u64,
        address: impl Into<String>,
    ) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .cluster
            .clone()
            .add_learner(pb::ClusterAddLearnerRequest {
                id,
                address: address.into(),
            })
            .await?
            .into_inner())
    }

    /// Makes learner `id` a voter.
    pub async fn cluster_promote(&self, id: u64) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .cluster
            .clone()
            .promote(pb::ClusterPromoteRequest { id })
            .await?
            .into_inner())
    }

    /// Removes member `id`, voter or learner.
    pub async fn cluster_remove(&self, id: u64) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .cluster
            .clone()
            .remove(pb::ClusterRemoveRequest { id })
            .await?
            .into_inner())
    }

    /// Hands leadership to voter `id`; answers once it leads.
    pub async fn cluster_transfer_leader(
        &self,
        id: u64,
    ) -> Result<pb::ClusterStatusResponse, Error> {
        Ok(self
            .cluster
            .clone()
            .transfer_leader(pb::ClusterTransferLeaderRequest { id })
            .await?
            .into_inner())
    }
}

/// A duration as the API's milliseconds. One too long for them saturates, so that the server
/// refuses it naming the field's limit, instead of wrapping to a short one.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_that_is_not_plain_http_or_names_no_server_is_a_clear_error() {
        for (endpoint, says) in [
            ("https://127.0.0.1:7070", "does not start with http://"),
            ("127.0.0.1:7070", "does not start with http://"),
            (" , ", "names no server"),
        ] {
            let Err(e) = Client::connect_lazy(endpoint) else {
                panic!("{endpoint:?} was accepted");
            };
            assert_eq!(e.code, crate::Code::InvalidArgument, "{endpoint:?}");
            assert!(e.to_string().contains(says), "{endpoint:?}: {e}");
        }
    }
}
