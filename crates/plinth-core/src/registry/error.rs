//! Every refusal of the registry, with the values that caused it.

use crate::lease::LeaseError;
use crate::limits::{
    REGISTRY_ADDRESS_BYTES_MAX, REGISTRY_INSTANCES_MAX, REGISTRY_METADATA_BYTES_MAX,
    REGISTRY_METADATA_MAX,
};
use crate::names::NameError;
use crate::{ErrorCode, LeaseId, Revision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegistryError {
    #[error("service {0}")]
    Service(NameError),
    #[error("instance {0}")]
    Instance(NameError),
    #[error("address is {bytes} bytes; it must be 1 to {REGISTRY_ADDRESS_BYTES_MAX} bytes")]
    Address { bytes: usize },
    #[error(
        "metadata has {entries} entries of {bytes} bytes; the limits are {REGISTRY_METADATA_MAX} entries and {REGISTRY_METADATA_BYTES_MAX} bytes"
    )]
    Metadata { entries: usize, bytes: usize },
    #[error("{0}")]
    Ttl(LeaseError),
    #[error(
        "instance {instance} of {service} is not registered (it deregistered, or its lease expired)"
    )]
    NotFound { service: String, instance: String },
    #[error(
        "lease {presented} is not the registration of {instance} of {service}: it was registered again with lease {current}"
    )]
    StaleLease {
        service: String,
        instance: String,
        presented: LeaseId,
        current: LeaseId,
    },
    #[error(
        "{REGISTRY_INSTANCES_MAX} instances are registered; the limit is {REGISTRY_INSTANCES_MAX}"
    )]
    TooManyInstances,
    #[error("{0}")]
    Lease(LeaseError),
    #[error("lease is 0; a heartbeat presents the lease its registration answered")]
    LeaseZero,
    #[error(
        "this service's registry events after revision {after} are no longer all kept (they are compacted to revision {compacted}); watch from revision 0 for a new snapshot"
    )]
    Compacted {
        after: Revision,
        compacted: Revision,
    },
}

impl RegistryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::NotFound { .. } => ErrorCode::NotFound,
            RegistryError::StaleLease { .. } => ErrorCode::StaleToken,
            RegistryError::TooManyInstances => ErrorCode::ResourceExhausted,
            RegistryError::Compacted { .. } => ErrorCode::Compacted,
            RegistryError::Lease(e) => e.code(),
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            RegistryError::Service(_) => "service",
            RegistryError::Instance(_)
            | RegistryError::NotFound { .. }
            | RegistryError::TooManyInstances => "instance",
            RegistryError::Address { .. } => "address",
            RegistryError::Metadata { .. } => "metadata",
            RegistryError::Ttl(_) => "ttl",
            RegistryError::StaleLease { .. } | RegistryError::LeaseZero => "lease",
            RegistryError::Compacted { .. } => "from_revision",
            RegistryError::Lease(e) => e.field(),
        }
    }
}
