//! The KV commands, compares, ranges, events and what they answer.

use crate::{FencingToken, LeaseId, Revision};
use serde::{Deserialize, Serialize};

/// Which keys an operation covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySpan {
    /// Exactly this key.
    Key(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Every key starting with these bytes; the empty prefix is every key.
    Prefix(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Keys in `[start, end)`: start inclusive, end exclusive.
    Range {
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        #[serde(with = "serde_bytes")]
        end: Vec<u8>,
    },
}

impl KeySpan {
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Key(k) => k == key,
            KeySpan::Prefix(p) => key.starts_with(p),
            KeySpan::Range { start, end } => key >= start.as_slice() && key < end.as_slice(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The revision at which the key was last created (after not existing).
    pub create_revision: Revision,
    /// The revision of the last change to the key.
    pub mod_revision: Revision,
    /// Puts since the key was created: 1 for a new key.
    pub version: u64,
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub span: KeySpan,
    /// 0 means the maximum, `RANGE_LIMIT_MAX`.
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOutput {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than were returned.
    pub more: bool,
    /// How many keys matched in all.
    pub count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a compare looks at. A missing key has version, revisions and lease 0 and no value, so a
/// value compare on it is false whatever the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Version(u64),
    CreateRevision(Revision),
    ModRevision(Revision),
    /// `LeaseId(0)` means "no lease".
    Lease(LeaseId),
    /// Whether `token` currently holds lock (or election) `lock`: `Equal` holds while it does,
    /// `NotEqual` once it does not. The compare's key is not used.
    Fence {
        lock: String,
        token: FencingToken,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        span: KeySpan,
    },
    Range(RangeRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    /// Applied when every compare holds.
    pub then: Vec<TxnOp>,
    /// Applied otherwise.
    pub otherwise: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub span: KeySpan,
}

/// Drops history up to and including `revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compact {
    pub revision: Revision,
}

/// Every KV command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put(Put),
    Delete(Delete),
    Txn(Txn),
    Compact(Compact),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpOutput {
    Put { prev: Option<KeyValue> },
    Delete { deleted: Vec<KeyValue> },
    Range(RangeOutput),
}

/// What a txn did: whether every compare held (so which branch ran), and each op's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutput {
    pub succeeded: bool,
    pub results: Vec<TxnOpOutput>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    Put { prev: Option<KeyValue> },
    Delete { deleted: Vec<KeyValue> },
    Txn(TxnOutput),
    Compact { compacted_revision: Revision },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For a delete, `kv` holds the key, an empty value, version 0 and the
/// deleting revision as `mod_revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
