//! Every refusal of the KV primitive, with the values that caused it.

use crate::limits::{
    KEY_BYTES_MAX, RANGE_LIMIT_MAX, TXN_COMPARES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX,
};
use crate::names::NameError;
use crate::{ErrorCode, LeaseId, Revision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    #[error("{field} is empty; it must be 1 to {KEY_BYTES_MAX} bytes")]
    KeyEmpty { field: KeyField },
    #[error("{field} is {key_bytes} bytes; the limit is {KEY_BYTES_MAX}")]
    KeyTooLong { field: KeyField, key_bytes: usize },
    #[error("value is {value_bytes} bytes; the limit is {VALUE_BYTES_MAX}")]
    ValueTooLarge { value_bytes: usize },
    #[error("range end sorts before its start; a range is [start, end)")]
    RangeEndBeforeStart,
    #[error("limit is {limit}; the maximum is {RANGE_LIMIT_MAX}")]
    LimitTooLarge { limit: u64 },
    #[error("txn has {compares} compares; the limit is {TXN_COMPARES_MAX}")]
    TooManyCompares { compares: usize },
    #[error("txn branch has {ops} operations; the limit is {TXN_OPS_MAX}")]
    TooManyOps { ops: usize },
    #[error("fence lock {0}")]
    FenceLock(NameError),
    #[error("a fence compare takes EQUAL (still holds) or NOT_EQUAL (no longer holds), not {op}")]
    FenceOp { op: String },
    #[error("lease {lease} not found (it never existed, expired or was revoked)")]
    LeaseNotFound { lease: LeaseId },
    #[error("revision {revision} is in the future; the current revision is {current}")]
    FutureRevision {
        revision: Revision,
        current: Revision,
    },
    #[error(
        "revision {revision} has been compacted; history starts after revision {compacted_revision}"
    )]
    Compacted {
        revision: Revision,
        compacted_revision: Revision,
    },
}

impl KvError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KvError::LeaseNotFound { .. } => ErrorCode::NotFound,
            KvError::Compacted { .. } => ErrorCode::Compacted,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            KvError::KeyEmpty { field } | KvError::KeyTooLong { field, .. } => field.as_str(),
            KvError::ValueTooLarge { .. } => "value",
            KvError::RangeEndBeforeStart => "range_end",
            KvError::LimitTooLarge { .. } => "limit",
            KvError::TooManyCompares { .. } => "compares",
            KvError::TooManyOps { .. } => "ops",
            KvError::LeaseNotFound { .. } => "lease",
            KvError::FenceLock(_) => "fence.lock",
            KvError::FenceOp { .. } => "op",
            KvError::FutureRevision { .. } | KvError::Compacted { .. } => "revision",
        }
    }
}

/// Which key-like field of a request a key error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyField {
    Key,
    RangeEnd,
    Prefix,
}

impl KeyField {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::Key => "key",
            KeyField::RangeEnd => "range_end",
            KeyField::Prefix => "prefix",
        }
    }
}

impl std::fmt::Display for KeyField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
