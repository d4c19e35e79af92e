//! Conversions between the wire messages and plinth-core's commands and values. Shape checks
//! that only the wire can get wrong (a missing oneof, an unknown enum) happen here; every limit
//! is core's.

use crate::error::ApiError;
use plinth_core::kv::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeySpan, KeyValue, RangeOutput,
    RangeRequest, TxnOp, TxnOpOutput,
};
use plinth_core::lease::LeaseInfo;
use plinth_core::{LeaseId, Revision};
use plinth_proto::v1 as pb;

pub fn span(key: Vec<u8>, range_end: Vec<u8>, prefix: bool) -> Result<KeySpan, ApiError> {
    match (prefix, range_end.is_empty()) {
        (true, false) => Err(ApiError::invalid(
            "range_end",
            "give either prefix or range_end, not both",
        )),
        (true, true) => Ok(KeySpan::Prefix(key)),
        (false, false) => Ok(KeySpan::Range {
            start: key,
            end: range_end,
        }),
        (false, true) => Ok(KeySpan::Key(key)),
    }
}

pub fn lease(id: u64) -> Option<LeaseId> {
    (id != 0).then_some(LeaseId(id))
}

pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, ApiError> {
    Ok(RangeRequest {
        span: span(r.key, r.range_end, r.prefix)?,
        limit: r.limit,
        keys_only: r.keys_only,
        count_only: r.count_only,
    })
}

pub fn compare(c: pb::Compare) -> Result<Compare, ApiError> {
    let op = match pb::CompareOp::try_from(c.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Equal,
        Ok(pb::CompareOp::NotEqual) => CompareOp::NotEqual,
        Ok(pb::CompareOp::Greater) => CompareOp::Greater,
        Ok(pb::CompareOp::Less) => CompareOp::Less,
        Err(_) => {
            return Err(ApiError::invalid(
                "op",
                format!("compare op {} is unknown", c.op),
            ));
        }
    };
    use pb::compare::Target;
    let target = match c.target {
        Some(Target::Value(v)) => CompareTarget::Value(v),
        Some(Target::Version(v)) => CompareTarget::Version(v),
        Some(Target::CreateRevision(r)) => CompareTarget::CreateRevision(Revision(r)),
        Some(Target::ModRevision(r)) => CompareTarget::ModRevision(Revision(r)),
        Some(Target::Lease(l)) => CompareTarget::Lease(LeaseId(l)),
        Some(Target::Fence(f)) => CompareTarget::Fence {
            lock: f.lock,
            token: plinth_core::FencingToken(f.token),
        },
        None => {
            return Err(ApiError::invalid(
                "target",
                "a compare needs a target: value, version, create_revision, mod_revision, lease or fence",
            ));
        }
    };
    Ok(Compare {
        key: c.key,
        op,
        target,
    })
}

pub fn txn_op(op: pb::RequestOp) -> Result<TxnOp, ApiError> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::Put(p)) => Ok(TxnOp::Put {
            key: p.key,
            value: p.value,
            lease: lease(p.lease),
        }),
        Some(Request::Delete(d)) => Ok(TxnOp::Delete {
            span: span(d.key, d.range_end, d.prefix)?,
        }),
        Some(Request::Range(r)) => Ok(TxnOp::Range(range_request(r)?)),
        None => Err(ApiError::invalid(
            "request",
            "a txn operation needs one of put, delete or range",
        )),
    }
}

pub fn key_value(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision.0,
        mod_revision: kv.mod_revision.0,
        version: kv.version,
        lease: kv.lease.map_or(0, |l| l.0),
    }
}

pub fn event(e: Event) -> pb::Event {
    let kind = match e.kind {
        EventKind::Put => pb::EventType::Put,
        EventKind::Delete => pb::EventType::Delete,
    };
    pb::Event {
        r#type: kind as i32,
        kv: Some(key_value(e.kv)),
    }
}

pub fn range_response(out: RangeOutput, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: out.kvs.into_iter().map(key_value).collect(),
        more: out.more,
        count: out.count,
    }
}

pub fn txn_op_output(out: TxnOpOutput, header: pb::ResponseHeader) -> pb::ResponseOp {
    use pb::response_op::Response;
    let response = match out {
        TxnOpOutput::Put { prev } => Response::Put(pb::PutResponse {
            header: Some(header),
            prev_kv: prev.map(key_value),
        }),
        TxnOpOutput::Delete { deleted } => Response::Delete(delete_response(deleted, header)),
        TxnOpOutput::Range(out) => Response::Range(range_response(out, header)),
    };
    pb::ResponseOp {
        response: Some(response),
    }
}

/// A delete's reply: the count, and the deleted keys' values up to a range reply's bytes, so
/// that deleting gigabytes does not answer them all.
pub fn delete_response(deleted: Vec<KeyValue>, header: pb::ResponseHeader) -> pb::DeleteResponse {
    let count = deleted.len() as u64;
    let mut bytes = 0usize;
    let prev_kvs = deleted
        .into_iter()
        .enumerate()
        .take_while(|(i, kv)| {
            bytes += kv.key.len() + kv.value.len();
            *i == 0 || bytes <= plinth_core::limits::RANGE_BYTES_MAX
        })
        .map(|(_, kv)| key_value(kv))
        .collect();
    pb::DeleteResponse {
        header: Some(header),
        deleted: count,
        prev_kvs,
    }
}

pub fn lease_info(info: LeaseInfo) -> pb::LeaseInfo {
    pb::LeaseInfo {
        id: info.id.0,
        ttl_ms: info.ttl_ms,
        remaining_ms: info.remaining_ms,
        deadline_ms: info.deadline.0,
    }
}

pub fn hold(h: plinth_core::lock::HoldInfo) -> pb::LockHold {
    pb::LockHold {
        name: h.name,
        owner: h.owner,
        token: h.token.0,
        lease: h.lease.0,
        ttl_ms: h.ttl_ms,
        remaining_ms: h.remaining_ms,
        deadline_ms: h.deadline.0,
        value: h.value,
    }
}
