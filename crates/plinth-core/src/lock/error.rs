//! Every refusal of the lock primitive, with the values that caused it.

use crate::lease::LeaseError;
use crate::limits::{
    ELECTION_VALUE_BYTES_MAX, LOCK_PERMITS_MAX, LOCK_WAIT_MS_MAX, LOCK_WAITERS_MAX, LOCKS_MAX,
    OWNER_BYTES_MAX,
};
use crate::names::NameError;
use crate::{ErrorCode, FencingToken, Revision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LockError {
    #[error(transparent)]
    Name(NameError),
    #[error("owner is {bytes} bytes; it must be 1 to {OWNER_BYTES_MAX} bytes")]
    Owner { bytes: usize },
    #[error("{0}")]
    Ttl(LeaseError),
    #[error("wait is {wait_ms}ms; the maximum is {LOCK_WAIT_MS_MAX}ms")]
    WaitTooLong { wait_ms: u64 },
    #[error("permits is {permits}; it must be 1 to {LOCK_PERMITS_MAX}")]
    Permits { permits: u32 },
    #[error("value is {bytes} bytes; the limit is {ELECTION_VALUE_BYTES_MAX}")]
    ValueTooLarge { bytes: usize },
    #[error("lock {name} has {permits} permits while in use; this acquire asked for {asked}")]
    PermitsMismatch {
        name: String,
        permits: u32,
        asked: u32,
    },
    #[error(
        "lock {name} is held ({holders} of {permits} permits taken; the newest holder is {owner:?} with token {token}); pass a wait to queue for it"
    )]
    Held {
        name: String,
        holders: u32,
        permits: u32,
        owner: String,
        token: FencingToken,
    },
    #[error("lock {name} has {LOCK_WAITERS_MAX} waiters; the limit is {LOCK_WAITERS_MAX}")]
    TooManyWaiters { name: String },
    #[error("{LOCKS_MAX} locks are in use; the limit is {LOCKS_MAX}")]
    TooManyLocks,
    #[error(
        "token {token} does not hold lock {name}: the hold expired, was released, or never existed"
    )]
    StaleToken { name: String, token: FencingToken },
    #[error("ticket {ticket} is neither queued for nor holding lock {name}")]
    TicketNotFound { name: String, ticket: Revision },
    #[error("{0}")]
    Lease(LeaseError),
}

impl LockError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LockError::Name(_)
            | LockError::Owner { .. }
            | LockError::Ttl(_)
            | LockError::WaitTooLong { .. }
            | LockError::Permits { .. }
            | LockError::ValueTooLarge { .. } => ErrorCode::InvalidArgument,
            LockError::PermitsMismatch { .. } | LockError::Held { .. } => {
                ErrorCode::FailedPrecondition
            }
            LockError::TooManyWaiters { .. } | LockError::TooManyLocks => {
                ErrorCode::ResourceExhausted
            }
            LockError::StaleToken { .. } => ErrorCode::StaleToken,
            LockError::TicketNotFound { .. } => ErrorCode::NotFound,
            LockError::Lease(e) => e.code(),
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            LockError::Name(_)
            | LockError::Held { .. }
            | LockError::TooManyLocks
            | LockError::TooManyWaiters { .. } => "name",
            LockError::Owner { .. } => "owner",
            LockError::Ttl(_) => "ttl",
            LockError::WaitTooLong { .. } => "wait",
            LockError::Permits { .. } | LockError::PermitsMismatch { .. } => "permits",
            LockError::ValueTooLarge { .. } => "value",
            LockError::StaleToken { .. } => "token",
            LockError::TicketNotFound { .. } => "ticket",
            LockError::Lease(e) => e.field(),
        }
    }
}
