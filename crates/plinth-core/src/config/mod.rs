//! Versioned configuration per service, with compare-and-set, rollback and an optional schema.
//!
//! Contract: `Put(service, set, delete, expected_version)` applies an atomic multi-key change and
//! makes exactly one new version, numbered one above the service's last; with an expected
//! version it applies only if that is still the latest (0: the service has no version yet).
//! Values are JSON documents, stored in canonical form (object keys sorted, no spaces), so equal
//! values are equal bytes. `Get(service, version)` answers the snapshot at the latest or at any
//! retained version. `Rollback(service, to)` makes a new version whose snapshot equals version
//! `to`'s. `Watch(service, from)` (the node's and server's part) sends every version after `from`
//! once, in order, from the retained history, or `COMPACTED` with the oldest version it can still
//! start from. An optional JSON Schema per service is checked against the whole snapshot a put or
//! rollback would make, so a config that fails it never becomes a version; setting a schema the
//! current config fails is refused. Each service keeps its latest `versions_kept` commits
//! (default 1,000) and at most 16 MiB of them; older ones fold into the base snapshot.
//!
//! Invariants:
//! - CF1: a service's kept commits are exactly the versions `base_version + 1 ..= version`, in
//!   order, with revisions that strictly increase.
//! - CF2: the base snapshot with every kept commit applied is the current snapshot: the snapshot
//!   at `v` is what commits `1..=v` make.
//! - CF3: the current snapshot is within the key and byte limits and satisfies the service's
//!   schema, if it has one; every value is canonical JSON.
//! - CF4: the kept commits number at most `versions_kept`, and the byte count kept for them is
//!   their true size, at most the history limit (a single commit may exceed it alone).

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    ConfigCommand, ConfigOutput, ConfigSnapshot, ConfigVersion, Put, Rollback, ServiceInfo,
    SetRetention, SetSchema,
};
pub use error::{ConfigError, VersionField};
pub use state::{ConfigState, canonical_json};
