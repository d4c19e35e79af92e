//! The config commands and what they answer.

use crate::{Millis, Revision};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Sets the keys of `set` (values are JSON text) and deletes those of `delete`, as one new
/// version; only if the latest version is `expected_version`, when one is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub service: String,
    pub set: BTreeMap<String, String>,
    pub delete: BTreeSet<String>,
    pub expected_version: Option<u64>,
}

/// A new version whose snapshot equals version `to_version`'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub service: String,
    pub to_version: u64,
    pub expected_version: Option<u64>,
}

/// Sets (JSON text of a JSON Schema) or clears the schema every later version must satisfy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSchema {
    pub service: String,
    pub schema: Option<String>,
}

/// How many commits the service keeps for snapshots at old versions and for watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRetention {
    pub service: String,
    pub versions_kept: u32,
}

/// Every config command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigCommand {
    Put(Put),
    Rollback(Rollback),
    SetSchema(SetSchema),
    SetRetention(SetRetention),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOutput {
    /// A put or a rollback made this version.
    Committed(ConfigVersion),
    SchemaSet,
    /// The retention was set; commits up to `base_version` were folded into the base.
    RetentionSet {
        base_version: u64,
    },
}

/// One version: the change it made. `set` values are canonical JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub version: u64,
    pub revision: Revision,
    /// The log clock when it was made.
    pub time: Millis,
    pub set: BTreeMap<String, String>,
    pub delete: BTreeSet<String>,
    /// The version a rollback restored; `None` for a put.
    pub rollback_of: Option<u64>,
}

/// A service's whole configuration at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    pub service: String,
    /// 0 before the first put.
    pub version: u64,
    /// The log clock when that version was made (0 for version 0 or a version folded into the
    /// base).
    pub time: Millis,
    /// Canonical JSON text per key.
    pub values: BTreeMap<String, String>,
}

/// A service as `List` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub service: String,
    pub version: u64,
    /// The oldest version a snapshot or a watch can start from.
    pub base_version: u64,
    pub versions_kept: u32,
    pub keys: u64,
    pub has_schema: bool,
}
