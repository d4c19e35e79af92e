//! The registry commands, events and answers.

use crate::{LeaseId, Millis, Revision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Serving.
    Passing,
    /// Serving, but degraded: still resolved.
    Warning,
    /// Finishing its work before it stops: no longer resolved by default.
    Draining,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [Status::Passing, Status::Warning, Status::Draining]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether `Resolve` answers it without `all`.
    pub fn is_healthy(self) -> bool {
        self != Status::Draining
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub service: String,
    pub instance: String,
    pub address: String,
    pub metadata: BTreeMap<String, String>,
    pub ttl_ms: u64,
    pub status: Status,
}

/// Keeps the registration's lease alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub service: String,
    pub instance: String,
    pub lease: LeaseId,
}

/// `lease: None` is an operator's override of whichever registration holds the id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatus {
    pub service: String,
    pub instance: String,
    pub lease: Option<LeaseId>,
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregister {
    pub service: String,
    pub instance: String,
    pub lease: Option<LeaseId>,
}

/// Every registry command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    Register(Register),
    Heartbeat(Heartbeat),
    SetStatus(SetStatus),
    Deregister(Deregister),
}

/// An instance as answers and events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub service: String,
    pub instance: String,
    pub address: String,
    pub metadata: BTreeMap<String, String>,
    pub status: Status,
    pub lease: LeaseId,
    pub ttl_ms: u64,
    /// The revision of the registration.
    pub registered: Revision,
    /// The revision of its last change (registration or status).
    pub modified: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    Deregistered,
    /// Its lease expired or was revoked.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryEventKind {
    /// Registered, registered again, or its status changed: the instance as it is now.
    Up,
    Down(DownReason),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    pub revision: Revision,
    pub kind: RegistryEventKind,
    pub instance: InstanceInfo,
}

/// A heartbeat's answer: the instance's new deadline and its ttl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatOk {
    pub deadline: Millis,
    pub ttl_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryOutput {
    Registered(InstanceInfo),
    /// The lease's new deadline on the log clock.
    HeartbeatOk(HeartbeatOk),
    StatusSet(InstanceInfo),
    Deregistered,
}
