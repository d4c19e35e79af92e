//! Every refusal of the lease primitive, with the values that caused it.

use crate::limits::{LEASE_ID_MAX, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, LEASES_MAX};
use crate::{ErrorCode, LeaseId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LeaseError {
    #[error("ttl is {ttl_ms}ms; the minimum is {LEASE_TTL_MS_MIN}ms")]
    TtlTooShort { ttl_ms: u64 },
    #[error("ttl is {ttl_ms}ms; the maximum is {LEASE_TTL_MS_MAX}ms")]
    TtlTooLong { ttl_ms: u64 },
    #[error("lease {id} not found (it never existed, expired or was revoked)")]
    NotFound { id: LeaseId },
    #[error("lease {id} already exists")]
    AlreadyExists { id: LeaseId },
    #[error("lease id 0 is reserved for 'no lease'")]
    IdZero,
    #[error("lease id {id} is over the largest a caller may choose, {LEASE_ID_MAX}")]
    IdTooLarge { id: LeaseId },
    #[error("{LEASES_MAX} leases are alive; the limit is {LEASES_MAX}")]
    TooManyLeases,
}

impl LeaseError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LeaseError::TtlTooShort { .. }
            | LeaseError::TtlTooLong { .. }
            | LeaseError::IdZero
            | LeaseError::IdTooLarge { .. } => ErrorCode::InvalidArgument,
            LeaseError::NotFound { .. } => ErrorCode::NotFound,
            LeaseError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            LeaseError::TooManyLeases => ErrorCode::ResourceExhausted,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            LeaseError::TtlTooShort { .. } | LeaseError::TtlTooLong { .. } => "ttl",
            LeaseError::NotFound { .. }
            | LeaseError::AlreadyExists { .. }
            | LeaseError::IdZero
            | LeaseError::IdTooLarge { .. } => "id",
            LeaseError::TooManyLeases => "leases",
        }
    }
}

/// Checks a ttl against the limits; used by validation before proposing and again in apply.
pub fn check_ttl(ttl_ms: u64) -> Result<(), LeaseError> {
    if ttl_ms < LEASE_TTL_MS_MIN {
        return Err(LeaseError::TtlTooShort { ttl_ms });
    }
    if ttl_ms > LEASE_TTL_MS_MAX {
        return Err(LeaseError::TtlTooLong { ttl_ms });
    }
    Ok(())
}
