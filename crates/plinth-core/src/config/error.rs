//! Every refusal of the config primitive, with the values that caused it.

use crate::ErrorCode;
use crate::limits::{
    CONFIG_HISTORY_VERSIONS_MAX, CONFIG_KEYS_MAX, CONFIG_SCHEMA_BYTES_MAX, CONFIG_SERVICES_MAX,
    CONFIG_SNAPSHOT_BYTES_MAX,
};
use crate::names::NameError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfigError {
    #[error("service {0}")]
    Service(NameError),
    #[error("key {key:?}: {error}")]
    Key {
        key: String,
        error: NameError,
        /// The key was in `delete` rather than `set`.
        deleted: bool,
    },
    #[error(
        "value of {key:?} is not JSON ({error}); values are JSON documents, e.g. 30, true or \"text\""
    )]
    NotJson { key: String, error: String },
    #[error("a put must set or delete at least one key")]
    EmptyChange,
    #[error("key {key:?} is both set and deleted in one put")]
    SetAndDeleted { key: String },
    #[error("the config of {service} would have {keys} keys; the limit is {CONFIG_KEYS_MAX}")]
    TooManyKeys { service: String, keys: usize },
    #[error("a put changes {keys} keys; the limit is {CONFIG_KEYS_MAX}")]
    ChangeTooLarge { keys: usize },
    #[error(
        "the config of {service} would be {bytes} bytes; the limit is {CONFIG_SNAPSHOT_BYTES_MAX}"
    )]
    TooLarge { service: String, bytes: usize },
    #[error(
        "{service} is at version {current}, not the expected {expected}; read it again and retry"
    )]
    VersionMismatch {
        service: String,
        expected: u64,
        current: u64,
    },
    #[error("service {service} has no config")]
    NotFound { service: String },
    #[error("service {service} has no version {version}; its latest is {latest}")]
    VersionNotFound {
        service: String,
        version: u64,
        latest: u64,
        /// The request field that named the version.
        asked: VersionField,
    },
    #[error("version {version} of {service} is no longer kept; the oldest kept is {base_version}")]
    Compacted {
        service: String,
        version: u64,
        base_version: u64,
        asked: VersionField,
    },
    #[error("to_version is 0; a rollback goes to a version from 1 up")]
    RollbackToZero,
    #[error("schema is not a valid JSON Schema: {error}")]
    BadSchema { error: String },
    #[error("schema is {bytes} bytes; the limit is {CONFIG_SCHEMA_BYTES_MAX}")]
    SchemaTooLarge { bytes: usize },
    #[error("the config of {service} at version {version} would fail its schema: {error}")]
    FailsSchema {
        service: String,
        version: u64,
        error: String,
    },
    #[error(
        "the current config of {service} (version {version}) fails this schema, so it cannot be set: {error}"
    )]
    CurrentFailsSchema {
        service: String,
        version: u64,
        error: String,
    },
    #[error("versions kept is {versions_kept}; it must be 1 to {CONFIG_HISTORY_VERSIONS_MAX}")]
    Retention { versions_kept: u32 },
    #[error("{CONFIG_SERVICES_MAX} services have config; the limit is {CONFIG_SERVICES_MAX}")]
    TooManyServices,
}

/// Which request field named a version: a read's `version`, a rollback's `to_version` or a
/// watch's `from_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionField {
    Version,
    ToVersion,
    FromVersion,
}

impl VersionField {
    pub fn name(self) -> &'static str {
        match self {
            VersionField::Version => "version",
            VersionField::ToVersion => "to_version",
            VersionField::FromVersion => "from_version",
        }
    }
}

impl ConfigError {
    /// A config over its keys or bytes is refused as its request would be (INVALID_ARGUMENT, as
    /// a KV value over its limit is): the same request never succeeds, so nothing invites a
    /// retry. Only the number of services is a capacity of the whole store.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConfigError::TooManyServices => ErrorCode::ResourceExhausted,
            ConfigError::VersionMismatch { .. } => ErrorCode::FailedPrecondition,
            ConfigError::NotFound { .. } | ConfigError::VersionNotFound { .. } => {
                ErrorCode::NotFound
            }
            ConfigError::Compacted { .. } => ErrorCode::Compacted,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Service(_)
            | ConfigError::NotFound { .. }
            | ConfigError::TooManyServices => "service",
            ConfigError::Key { deleted: true, .. } | ConfigError::SetAndDeleted { .. } => "delete",
            ConfigError::Key { .. }
            | ConfigError::NotJson { .. }
            | ConfigError::EmptyChange
            | ConfigError::TooManyKeys { .. }
            | ConfigError::ChangeTooLarge { .. }
            | ConfigError::TooLarge { .. }
            | ConfigError::FailsSchema { .. } => "set",
            ConfigError::VersionMismatch { .. } => "expected_version",
            ConfigError::VersionNotFound { asked, .. } | ConfigError::Compacted { asked, .. } => {
                asked.name()
            }
            ConfigError::RollbackToZero => "to_version",
            ConfigError::BadSchema { .. }
            | ConfigError::SchemaTooLarge { .. }
            | ConfigError::CurrentFailsSchema { .. } => "schema",
            ConfigError::Retention { .. } => "versions_kept",
        }
    }
}
