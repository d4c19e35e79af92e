//! The KV calls: put, get, range, delete, txn, compact and watch, and their gRPC service.

use crate::api::{Api, ReplyStream};
use crate::convert;
use crate::error::ApiError;
use futures::StreamExt as _;
use plinth_core::Revision;
use plinth_core::kv;
use plinth_core::kv::{KeySpan, RangeRequest};
use plinth_node::WatchError;
use plinth_proto::v1 as pb;
use plinth_proto::v1::kv_server::KvServer;

impl Api {
    pub async fn kv_put(&self, r: pb::PutRequest) -> Result<pb::PutResponse, ApiError> {
        let put = kv::Put {
            key: r.key,
            value: r.value,
            lease: convert::lease(r.lease),
        };
        let (prev, header) = self.call(put).await?;
        Ok(pb::PutResponse {
            header: Some(header),
            prev_kv: prev.map(convert::key_value),
        })
    }

    pub async fn kv_get(&self, r: pb::GetRequest) -> Result<pb::GetResponse, ApiError> {
        let request = RangeRequest {
            span: KeySpan::Key(r.key),
            limit: 1,
            keys_only: false,
            count_only: false,
        };
        let (out, header) = self
            .read(r.serializable, move |s| s.kv().range(&request))
            .await?;
        let kv = out
            .map_err(plinth_core::StateError::from)?
            .kvs
            .into_iter()
            .next();
        Ok(pb::GetResponse {
            header: Some(header),
            kv: kv.map(convert::key_value),
        })
    }

    pub async fn kv_range(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, ApiError> {
        let serializable = r.serializable;
        let request = convert::range_request(r)?;
        let (out, header) = self
            .read(serializable, move |s| s.kv().range(&request))
            .await?;
        let out = out.map_err(plinth_core::StateError::from)?;
        Ok(convert::range_response(out, header))
    }

    pub async fn kv_delete(&self, r: pb::DeleteRequest) -> Result<pb::DeleteResponse, ApiError> {
        let span = convert::span(r.key, r.range_end, r.prefix)?;
        let (deleted, header) = self.call(kv::Delete { span }).await?;
        Ok(convert::delete_response(deleted, header))
    }

    pub async fn kv_txn(&self, r: pb::TxnRequest) -> Result<pb::TxnResponse, ApiError> {
        let txn = kv::Txn {
            compares: r
                .compares
                .into_iter()
                .map(convert::compare)
                .collect::<Result<_, _>>()?,
            then: r
                .success
                .into_iter()
                .map(convert::txn_op)
                .collect::<Result<_, _>>()?,
            otherwise: r
                .failure
                .into_iter()
                .map(convert::txn_op)
                .collect::<Result<_, _>>()?,
        };
        let (out, header) = self.call(txn).await?;
        Ok(pb::TxnResponse {
            responses: out
                .results
                .into_iter()
                .map(|o| convert::txn_op_output(o, header))
                .collect(),
            header: Some(header),
            succeeded: out.succeeded,
        })
    }

    pub async fn kv_compact(&self, r: pb::CompactRequest) -> Result<pb::CompactResponse, ApiError> {
        let compact = kv::Compact {
            revision: Revision(r.revision),
        };
        let (compacted_revision, header) = self.call(compact).await?;
        Ok(pb::CompactResponse {
            header: Some(header),
            compacted_revision: compacted_revision.0,
        })
    }

    /// Every event after `from_revision` (or from now) that matches the keys, in order, with
    /// progress notices; ends with a `COMPACTED` error if history is gone, or when the server
    /// shuts down.
    pub async fn kv_watch(
        &self,
        r: pb::WatchRequest,
    ) -> Result<ReplyStream<pb::WatchResponse>, ApiError> {
        let span = convert::span(r.key, r.range_end, r.prefix)?;
        if let KeySpan::Key(k) = &span
            && k.is_empty()
        {
            return Err(ApiError::invalid(
                "key",
                "key is empty; give a key, or prefix: true to watch every key",
            ));
        }
        // "From now" reads the revision linearizably; a given revision needs only the local one.
        let (current, _) = self
            .read(r.from_revision.is_some(), |s| s.revision())
            .await?;
        let after = r.from_revision.map_or(current, Revision);
        let watcher = self.node.watch(span, after).await?;
        // The first message says where the watch starts, so a client watching "from now" can
        // resume from there after a disconnect that comes before any event. A watch from a
        // revision the store has not reached starts at the store's: a header never carries a
        // revision that does not exist yet.
        let start = pb::WatchResponse {
            header: Some(self.header(after.min(current))),
            events: Vec::new(),
        };
        let api = self.clone();
        let stream = futures::stream::unfold(Some((watcher, api)), |state| async move {
            let (mut watcher, api) = state?;
            match watcher.next().await {
                Ok(batch) => {
                    let response = pb::WatchResponse {
                        header: Some(api.header(batch.revision)),
                        events: batch.events.into_iter().map(convert::event).collect(),
                    };
                    Some((Ok(response), Some((watcher, api))))
                }
                Err(WatchError::Compacted { compacted_revision }) => {
                    let mut e = ApiError::new(
                        plinth_core::ErrorCode::Compacted,
                        "from_revision",
                        format!(
                            "history up to revision {compacted_revision} has been compacted; read the keys again and watch from the revision of that read"
                        ),
                    );
                    e.compacted_revision = compacted_revision.0;
                    Some((Err(e), None))
                }
                Err(other) => Some((
                    Err(ApiError::new(
                        plinth_core::ErrorCode::Unavailable,
                        "",
                        other.to_string(),
                    )),
                    None,
                )),
            }
        });
        Ok(Box::pin(self.until_shutdown(
            futures::stream::once(async move { Ok(start) }).chain(stream),
        )))
    }
}

service! {
    pb::kv_server::Kv, KvServer, "kv" {
        watch(pb::WatchRequest) -> WatchStream(pb::WatchResponse) => kv_watch, sse "watch";
    }
    put(pb::PutRequest) -> pb::PutResponse => kv_put;
    get(pb::GetRequest) -> pb::GetResponse => kv_get;
    range(pb::RangeRequest) -> pb::RangeResponse => kv_range;
    delete(pb::DeleteRequest) -> pb::DeleteResponse => kv_delete;
    txn(pb::TxnRequest) -> pb::TxnResponse => kv_txn;
    compact(pb::CompactRequest) -> pb::CompactResponse => kv_compact;
}
