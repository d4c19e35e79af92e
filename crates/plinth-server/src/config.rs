//! The config calls and their gRPC service.
//!
//! A watch waits on the applied state for versions after the last one it sent and sends each
//! once, in order, one message a version, so a watcher that resumes from the last version it
//! applied sees no gap and no repeat.

use crate::api::{Api, ReplyStream};
use crate::error::ApiError;
use plinth_core::StateError;
use plinth_core::Wake;
use plinth_core::config;
use plinth_core::config::ConfigVersion;
use plinth_core::limits::CONFIG_HISTORY_PAGE_MAX;
use plinth_proto::v1 as pb;
use plinth_proto::v1::config_server::ConfigServer;
use std::collections::VecDeque;

fn version_out(v: ConfigVersion) -> pb::ConfigVersion {
    pb::ConfigVersion {
        version: v.version,
        revision: v.revision.0,
        time_ms: v.time.0,
        set: v.set,
        delete: v.delete.into_iter().collect(),
        rollback_of: v.rollback_of.unwrap_or(0),
    }
}

impl Api {
    pub async fn config_put(
        &self,
        r: pb::ConfigPutRequest,
    ) -> Result<pb::ConfigPutResponse, ApiError> {
        let put = config::Put {
            service: r.service,
            set: r.set,
            delete: r.delete.into_iter().collect(),
            expected_version: r.expected_version,
        };
        let (version, header) = self.call(put).await?;
        Ok(pb::ConfigPutResponse {
            header: Some(header),
            version: Some(version_out(version)),
        })
    }

    pub async fn config_rollback(
        &self,
        r: pb::ConfigRollbackRequest,
    ) -> Result<pb::ConfigPutResponse, ApiError> {
        let rollback = config::Rollback {
            service: r.service,
            to_version: r.to_version,
            expected_version: r.expected_version,
        };
        let (version, header) = self.call(rollback).await?;
        Ok(pb::ConfigPutResponse {
            header: Some(header),
            version: Some(version_out(version)),
        })
    }

    pub async fn config_get(
        &self,
        r: pb::ConfigGetRequest,
    ) -> Result<pb::ConfigGetResponse, ApiError> {
        let (snapshot, header) = self
            .read(r.serializable, move |s| {
                s.config().snapshot(&r.service, r.version)
            })
            .await?;
        let snapshot = snapshot.map_err(StateError::from)?;
        Ok(pb::ConfigGetResponse {
            header: Some(header),
            service: snapshot.service,
            version: snapshot.version,
            time_ms: snapshot.time.0,
            values: snapshot.values,
        })
    }

    pub async fn config_history(
        &self,
        r: pb::ConfigHistoryRequest,
    ) -> Result<pb::ConfigHistoryResponse, ApiError> {
        let limit = match r.limit as usize {
            0 => CONFIG_HISTORY_PAGE_MAX,
            limit => limit.min(CONFIG_HISTORY_PAGE_MAX),
        };
        let (page, header) = self
            .read(false, move |s| {
                s.config().history(&r.service, r.after_version, limit)
            })
            .await?;
        let (versions, more) = page.map_err(StateError::from)?;
        Ok(pb::ConfigHistoryResponse {
            header: Some(header),
            versions: versions.into_iter().map(version_out).collect(),
            more,
        })
    }

    pub async fn config_set_schema(
        &self,
        r: pb::ConfigSetSchemaRequest,
    ) -> Result<pb::ConfigSetSchemaResponse, ApiError> {
        let set = config::SetSchema {
            service: r.service,
            schema: (!r.schema.is_empty()).then_some(r.schema),
        };
        let ((), header) = self.call(set).await?;
        Ok(pb::ConfigSetSchemaResponse {
            header: Some(header),
        })
    }

    pub async fn config_get_schema(
        &self,
        r: pb::ConfigGetSchemaRequest,
    ) -> Result<pb::ConfigGetSchemaResponse, ApiError> {
        let (schema, header) = self
            .read(false, move |s| s.config().schema(&r.service))
            .await?;
        Ok(pb::ConfigGetSchemaResponse {
            header: Some(header),
            schema: schema.map_err(StateError::from)?.unwrap_or_default(),
        })
    }

    pub async fn config_set_retention(
        &self,
        r: pb::ConfigSetRetentionRequest,
    ) -> Result<pb::ConfigSetRetentionResponse, ApiError> {
        let set = config::SetRetention {
            service: r.service,
            versions_kept: r.versions_kept,
        };
        let (base_version, header) = self.call(set).await?;
        Ok(pb::ConfigSetRetentionResponse {
            header: Some(header),
            base_version,
        })
    }

    pub async fn config_list(
        &self,
        _r: pb::ConfigListRequest,
    ) -> Result<pb::ConfigListResponse, ApiError> {
        let (services, header) = self.read(false, |s| s.config().list()).await?;
        Ok(pb::ConfigListResponse {
            header: Some(header),
            services: services
                .into_iter()
                .map(|s| pb::ConfigService {
                    service: s.service,
                    version: s.version,
                    base_version: s.base_version,
                    versions_kept: s.versions_kept,
                    keys: s.keys,
                    has_schema: s.has_schema,
                })
                .collect(),
        })
    }

    /// Every version after `from_version`, one message each, then each new one as it is made.
    pub async fn config_watch(
        &self,
        r: pb::ConfigWatchRequest,
    ) -> Result<ReplyStream<pb::ConfigWatchResponse>, ApiError> {
        plinth_core::names::check_name(&r.service)
            .map_err(|e| ApiError::invalid("service", format!("service {e}")))?;
        struct Watching {
            api: Api,
            service: String,
            sent: u64,
            ready: VecDeque<(ConfigVersion, plinth_core::Revision)>,
        }
        let start = Watching {
            api: self.clone(),
            service: r.service,
            sent: r.from_version,
            ready: VecDeque::new(),
        };
        let stream = futures::stream::unfold(Some(start), |state| async move {
            let mut w = state?;
            if w.ready.is_empty() {
                let (service, sent) = (w.service.clone(), w.sent);
                let next = w
                    .api
                    .node
                    .wait_for(Wake::Config(w.service.clone()), move |s| {
                        match s
                            .config()
                            .versions_after(&service, sent, CONFIG_HISTORY_PAGE_MAX)
                        {
                            Ok(versions) if versions.is_empty() => None,
                            Ok(versions) => Some(Ok((versions, s.revision()))),
                            Err(e) => Some(Err(e)),
                        }
                    });
                match next.await {
                    Ok(Ok((versions, revision))) => {
                        w.ready = versions.into_iter().map(|v| (v, revision)).collect();
                    }
                    Ok(Err(e)) => return Some((Err(StateError::from(e).into()), None)),
                    Err(e) => return Some((Err(e.into()), None)),
                }
            }
            let (version, revision) = w.ready.pop_front().expect("filled above");
            w.sent = version.version;
            let message = pb::ConfigWatchResponse {
                header: Some(w.api.header(revision)),
                version: Some(version_out(version)),
            };
            Some((Ok(message), Some(w)))
        });
        Ok(Box::pin(self.until_shutdown(stream)))
    }
}

service! {
    pb::config_server::Config, ConfigServer, "config" {
        watch(pb::ConfigWatchRequest) -> WatchStream(pb::ConfigWatchResponse) => config_watch, sse "version";
    }
    put(pb::ConfigPutRequest) -> pb::ConfigPutResponse => config_put;
    get(pb::ConfigGetRequest) -> pb::ConfigGetResponse => config_get;
    history(pb::ConfigHistoryRequest) -> pb::ConfigHistoryResponse => config_history;
    rollback(pb::ConfigRollbackRequest) -> pb::ConfigPutResponse => config_rollback;
    set_schema(pb::ConfigSetSchemaRequest) -> pb::ConfigSetSchemaResponse => config_set_schema;
    get_schema(pb::ConfigGetSchemaRequest) -> pb::ConfigGetSchemaResponse => config_get_schema;
    set_retention(pb::ConfigSetRetentionRequest) -> pb::ConfigSetRetentionResponse => config_set_retention;
    list(pb::ConfigListRequest) -> pb::ConfigListResponse => config_list;
}
