//! ConfigState: every service's current snapshot, its base snapshot and the commits between
//! them; apply, queries and invariants.

use super::{
    ConfigCommand, ConfigError, ConfigOutput, ConfigSnapshot, ConfigVersion, ServiceInfo,
    VersionField,
};
use crate::config;
use crate::limits::{
    CONFIG_HISTORY_BYTES_MAX, CONFIG_HISTORY_VERSIONS_DEFAULT, CONFIG_HISTORY_VERSIONS_MAX,
    CONFIG_KEYS_MAX, CONFIG_SCHEMA_BYTES_MAX, CONFIG_SERVICES_MAX, CONFIG_SNAPSHOT_BYTES_MAX,
};
use crate::names::check_name;
use crate::{Ctx, Millis, Wake};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

type Values = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Service {
    /// The latest version; 0 before the first put.
    version: u64,
    current: Values,
    current_time: Millis,
    /// The snapshot at `base_version`, into which commits older than the kept ones are folded.
    base_version: u64,
    base: Values,
    base_time: Millis,
    /// Versions `base_version + 1 ..= version`, oldest first.
    commits: VecDeque<ConfigVersion>,
    /// What `commits` holds, by `commit_bytes`.
    history_bytes: usize,
    /// Canonical JSON text of the schema.
    schema: Option<String>,
    versions_kept: u32,
}

impl Service {
    fn new() -> Service {
        Service {
            version: 0,
            current: Values::new(),
            current_time: Millis(0),
            base_version: 0,
            base: Values::new(),
            base_time: Millis(0),
            commits: VecDeque::new(),
            history_bytes: 0,
            schema: None,
            versions_kept: CONFIG_HISTORY_VERSIONS_DEFAULT,
        }
    }

    /// The snapshot at a kept version (`base_version ..= version`).
    fn values_at(&self, version: u64) -> Values {
        if version == self.version {
            return self.current.clone();
        }
        let mut values = self.base.clone();
        for commit in self.commits.iter().take_while(|c| c.version <= version) {
            apply_change(&mut values, commit);
        }
        values
    }

    fn time_at(&self, version: u64) -> Millis {
        match version {
            v if v == self.version => self.current_time,
            v if v == self.base_version => self.base_time,
            v => self
                .commits
                .iter()
                .find(|c| c.version == v)
                .map_or(Millis(0), |c| c.time),
        }
    }

    /// Which version `version` names (0: the latest), if it is kept; `asked` is the request
    /// field that named it.
    fn kept(&self, service: &str, version: u64, asked: VersionField) -> Result<u64, ConfigError> {
        let version = if version == 0 { self.version } else { version };
        if version > self.version {
            return Err(ConfigError::VersionNotFound {
                service: service.to_owned(),
                version,
                latest: self.version,
                asked,
            });
        }
        if version < self.base_version {
            return Err(ConfigError::Compacted {
                service: service.to_owned(),
                version,
                base_version: self.base_version,
                asked,
            });
        }
        Ok(version)
    }

    /// Folds the oldest commits into the base until the history is within its limits.
    fn trim(&mut self) {
        while self.commits.len() > self.versions_kept as usize
            || self.history_bytes > CONFIG_HISTORY_BYTES_MAX
        {
            let oldest = self
                .commits
                .pop_front()
                .expect("over a limit, so not empty");
            apply_change(&mut self.base, &oldest);
            self.base_version = oldest.version;
            self.base_time = oldest.time;
            self.history_bytes -= commit_bytes(&oldest);
        }
    }
}

fn apply_change(values: &mut Values, commit: &ConfigVersion) {
    for key in &commit.delete {
        values.remove(key);
    }
    for (key, value) in &commit.set {
        values.insert(key.clone(), value.clone());
    }
}

/// What a commit counts against the history limit: its keys and values, and a little for itself.
fn commit_bytes(commit: &ConfigVersion) -> usize {
    64 + commit
        .set
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .chain(commit.delete.iter().map(String::len))
        .sum::<usize>()
}

fn values_bytes(values: &Values) -> usize {
    values.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The canonical text of a JSON document: object keys sorted at every depth, no whitespace.
/// Equal documents give equal text, whichever way they were written.
pub fn canonical_json(text: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string(&sorted(value)).expect("a JSON value serializes"))
}

/// Rebuilds every object with its keys inserted in sorted order, so the text is sorted whether
/// or not serde_json keeps insertion order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn check_service(service: &str) -> Result<(), ConfigError> {
    check_name(service).map_err(ConfigError::Service)
}

fn check_key(key: &str, deleted: bool) -> Result<(), ConfigError> {
    check_name(key).map_err(|error| ConfigError::Key {
        key: key.to_owned(),
        error,
        deleted,
    })
}

/// Parses and compiles a schema: what `SetSchema` checks before it keeps one.
fn compile(schema: &str) -> Result<jsonschema::Validator, ConfigError> {
    let value: Value = serde_json::from_str(schema).map_err(|e| ConfigError::BadSchema {
        error: format!("it is not JSON ({e})"),
    })?;
    jsonschema::validator_for(&value).map_err(|e| ConfigError::BadSchema {
        error: e.to_string(),
    })
}

/// Checks a whole snapshot against the service's schema, as the JSON object of its keys.
fn check_against(
    schema: Option<&str>,
    service: &str,
    version: u64,
    values: &Values,
) -> Result<(), ConfigError> {
    let Some(schema) = schema else {
        return Ok(());
    };
    let validator = compile(schema)?;
    let instance = Value::Object(
        values
            .iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(v).expect("CF3: stored values are JSON");
                (k.clone(), value)
            })
            .collect(),
    );
    match validator.iter_errors(&instance).next() {
        None => Ok(()),
        Some(error) => {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            Err(ConfigError::FailsSchema {
                service: service.to_owned(),
                version,
                error: format!("at {at}: {error}"),
            })
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    services: BTreeMap<String, Service>,
}

impl ConfigState {
    /// Checks a command's shape against the limits without looking at the data.
    pub fn validate(command: &ConfigCommand) -> Result<(), ConfigError> {
        match command {
            ConfigCommand::Put(config::Put {
                service,
                set,
                delete,
                ..
            }) => {
                check_service(service)?;
                if set.is_empty() && delete.is_empty() {
                    return Err(ConfigError::EmptyChange);
                }
                for (key, value) in set {
                    check_key(key, false)?;
                    if delete.contains(key) {
                        return Err(ConfigError::SetAndDeleted { key: key.clone() });
                    }
                    if value.len() > CONFIG_SNAPSHOT_BYTES_MAX {
                        return Err(ConfigError::TooLarge {
                            service: service.clone(),
                            bytes: key.len() + value.len(),
                        });
                    }
                    canonical_json(value).map_err(|error| ConfigError::NotJson {
                        key: key.clone(),
                        error,
                    })?;
                }
                delete.iter().try_for_each(|key| check_key(key, true))?;
                if set.len() + delete.len() > CONFIG_KEYS_MAX {
                    return Err(ConfigError::ChangeTooLarge {
                        keys: set.len() + delete.len(),
                    });
                }
                Ok(())
            }
            ConfigCommand::Rollback(config::Rollback {
                service,
                to_version,
                ..
            }) => {
                check_service(service)?;
                if *to_version == 0 {
                    return Err(ConfigError::RollbackToZero);
                }
                Ok(())
            }
            ConfigCommand::SetSchema(config::SetSchema { service, schema }) => {
                check_service(service)?;
                if let Some(schema) = schema {
                    if schema.len() > CONFIG_SCHEMA_BYTES_MAX {
                        return Err(ConfigError::SchemaTooLarge {
                            bytes: schema.len(),
                        });
                    }
                    compile(schema)?;
                }
                Ok(())
            }
            ConfigCommand::SetRetention(config::SetRetention {
                service,
                versions_kept,
            }) => {
                check_service(service)?;
                if *versions_kept == 0 || *versions_kept > CONFIG_HISTORY_VERSIONS_MAX {
                    return Err(ConfigError::Retention {
                        versions_kept: *versions_kept,
                    });
                }
                Ok(())
            }
        }
    }

    /// Applies a command; a new version wakes the watchers of its service.
    pub fn apply(
        &mut self,
        command: &ConfigCommand,
        ctx: &mut Ctx,
    ) -> Result<ConfigOutput, ConfigError> {
        let out = self.apply_command(command, ctx)?;
        if let ConfigOutput::Committed(_) = &out {
            let service = match command {
                ConfigCommand::Put(put) => &put.service,
                ConfigCommand::Rollback(rollback) => &rollback.service,
                ConfigCommand::SetSchema(set) => &set.service,
                ConfigCommand::SetRetention(set) => &set.service,
            };
            ctx.wake(Wake::Config(service.clone()));
        }
        Ok(out)
    }

    fn apply_command(
        &mut self,
        command: &ConfigCommand,
        ctx: &mut Ctx,
    ) -> Result<ConfigOutput, ConfigError> {
        Self::validate(command)?;
        match command {
            ConfigCommand::Put(config::Put {
                service,
                set,
                delete,
                expected_version,
            }) => {
                let existing = self.services.get(service);
                let version = existing.map_or(0, |s| s.version);
                check_expected(service, *expected_version, version)?;
                let set: Values = set
                    .iter()
                    .map(|(k, v)| {
                        let canonical = canonical_json(v).expect("validated as JSON");
                        (k.clone(), canonical)
                    })
                    .collect();
                let change = ConfigVersion {
                    version: version + 1,
                    revision: ctx.revision,
                    time: ctx.clock,
                    set,
                    delete: delete.clone(),
                    rollback_of: None,
                };
                self.commit(service, change, ctx)
            }
            ConfigCommand::Rollback(config::Rollback {
                service,
                to_version,
                expected_version,
            }) => {
                let s = self.service(service)?;
                let to = s.kept(service, *to_version, VersionField::ToVersion)?;
                check_expected(service, *expected_version, s.version)?;
                let target = s.values_at(to);
                let change = ConfigVersion {
                    version: s.version + 1,
                    revision: ctx.revision,
                    time: ctx.clock,
                    set: target
                        .iter()
                        .filter(|(k, v)| s.current.get(*k) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    delete: s
                        .current
                        .keys()
                        .filter(|k| !target.contains_key(*k))
                        .cloned()
                        .collect(),
                    rollback_of: Some(to),
                };
                self.commit(service, change, ctx)
            }
            ConfigCommand::SetSchema(config::SetSchema { service, schema }) => {
                let schema = schema
                    .as_deref()
                    .map(|s| canonical_json(s).expect("validated as JSON"));
                if let Some(s) = self.services.get(service) {
                    check_against(schema.as_deref(), service, s.version, &s.current).map_err(
                        |e| match e {
                            ConfigError::FailsSchema {
                                service,
                                version,
                                error,
                            } => ConfigError::CurrentFailsSchema {
                                service,
                                version,
                                error,
                            },
                            other => other,
                        },
                    )?;
                }
                self.service_mut(service)?.schema = schema;
                ctx.changed = true;
                Ok(ConfigOutput::SchemaSet)
            }
            ConfigCommand::SetRetention(config::SetRetention {
                service,
                versions_kept,
            }) => {
                let s = self.service_mut(service)?;
                s.versions_kept = *versions_kept;
                s.trim();
                ctx.changed = true;
                Ok(ConfigOutput::RetentionSet {
                    base_version: s.base_version,
                })
            }
        }
    }

    /// Makes `change` the service's next version, if the snapshot it makes is within the
    /// limits and satisfies the schema.
    fn commit(
        &mut self,
        service: &str,
        change: ConfigVersion,
        ctx: &mut Ctx,
    ) -> Result<ConfigOutput, ConfigError> {
        let existing = self.services.get(service);
        let mut next = existing.map(|s| s.current.clone()).unwrap_or_default();
        apply_change(&mut next, &change);
        if next.len() > CONFIG_KEYS_MAX {
            return Err(ConfigError::TooManyKeys {
                service: service.to_owned(),
                keys: next.len(),
            });
        }
        let bytes = values_bytes(&next);
        if bytes > CONFIG_SNAPSHOT_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                service: service.to_owned(),
                bytes,
            });
        }
        check_against(
            existing.and_then(|s| s.schema.as_deref()),
            service,
            change.version,
            &next,
        )?;
        let s = self.service_mut(service)?;
        s.version = change.version;
        s.current = next;
        s.current_time = change.time;
        s.history_bytes += commit_bytes(&change);
        s.commits.push_back(change.clone());
        s.trim();
        ctx.changed = true;
        Ok(ConfigOutput::Committed(change))
    }

    fn service(&self, service: &str) -> Result<&Service, ConfigError> {
        self.services
            .get(service)
            .ok_or_else(|| ConfigError::NotFound {
                service: service.to_owned(),
            })
    }

    /// The service's record, made if it has none yet (within the limit on services).
    fn service_mut(&mut self, service: &str) -> Result<&mut Service, ConfigError> {
        if !self.services.contains_key(service) && self.services.len() >= CONFIG_SERVICES_MAX {
            return Err(ConfigError::TooManyServices);
        }
        Ok(self
            .services
            .entry(service.to_owned())
            .or_insert_with(Service::new))
    }

    /// The snapshot at `version` (0: the latest).
    pub fn snapshot(&self, service: &str, version: u64) -> Result<ConfigSnapshot, ConfigError> {
        let s = self.service(service)?;
        let version = s.kept(service, version, VersionField::Version)?;
        Ok(ConfigSnapshot {
            service: service.to_owned(),
            version,
            time: s.time_at(version),
            values: s.values_at(version),
        })
    }

    /// The kept versions after `from`, oldest first, at most `max`: what a watcher that has
    /// applied `from` needs next. A service with no config yet has none (a watch waits for the
    /// first); a `from` below the oldest kept version is `Compacted`.
    pub fn versions_after(
        &self,
        service: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<ConfigVersion>, ConfigError> {
        let Some(s) = self.services.get(service) else {
            return Ok(Vec::new());
        };
        if from < s.base_version {
            return Err(ConfigError::Compacted {
                service: service.to_owned(),
                version: from,
                base_version: s.base_version,
                asked: VersionField::FromVersion,
            });
        }
        // Commits are versions base_version + 1 ..= version, in order (CF1).
        let skip = usize::try_from(from - s.base_version).unwrap_or(usize::MAX);
        Ok(s.commits.iter().skip(skip).take(max).cloned().collect())
    }

    /// The latest version of `service`, 0 if it has none.
    pub fn version(&self, service: &str) -> u64 {
        self.services.get(service).map_or(0, |s| s.version)
    }

    /// The service's kept commits after version `after`, oldest first, at most `max`, and
    /// whether more follow. An `after` below the oldest kept starts at the oldest kept.
    pub fn history(
        &self,
        service: &str,
        after: u64,
        max: usize,
    ) -> Result<(Vec<ConfigVersion>, bool), ConfigError> {
        let s = self.service(service)?;
        let skip = usize::try_from(after.saturating_sub(s.base_version)).unwrap_or(usize::MAX);
        let page: Vec<ConfigVersion> = s.commits.iter().skip(skip).take(max).cloned().collect();
        let more = page.last().is_some_and(|last| last.version < s.version);
        Ok((page, more))
    }

    pub fn schema(&self, service: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.service(service)?.schema.clone())
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        self.services
            .iter()
            .map(|(service, s)| ServiceInfo {
                service: service.clone(),
                version: s.version,
                base_version: s.base_version,
                versions_kept: s.versions_kept,
                keys: s.current.len() as u64,
                has_schema: s.schema.is_some(),
            })
            .collect()
    }

    pub fn check_invariants(&self) {
        assert!(
            self.services.len() <= CONFIG_SERVICES_MAX,
            "CF3: {} services",
            self.services.len()
        );
        for (service, s) in &self.services {
            let versions: Vec<u64> = s.commits.iter().map(|c| c.version).collect();
            let expected: Vec<u64> = (s.base_version + 1..=s.version).collect();
            assert_eq!(
                versions, expected,
                "CF1: {service} keeps commits {versions:?} between base {} and version {}",
                s.base_version, s.version
            );
            assert!(
                s.commits
                    .iter()
                    .zip(s.commits.iter().skip(1))
                    .all(|(a, b)| a.revision < b.revision),
                "CF1: {service}'s commit revisions do not increase"
            );
            let mut replayed = s.base.clone();
            for commit in &s.commits {
                apply_change(&mut replayed, commit);
            }
            assert!(
                replayed == s.current,
                "CF2: {service}'s base and commits do not make its current snapshot"
            );
            assert!(
                s.current.len() <= CONFIG_KEYS_MAX
                    && values_bytes(&s.current) <= CONFIG_SNAPSHOT_BYTES_MAX,
                "CF3: {service}'s config is over its limits"
            );
            for (key, value) in &s.current {
                assert_eq!(
                    canonical_json(value).as_deref(),
                    Ok(value.as_str()),
                    "CF3: {service}/{key} is not canonical JSON"
                );
            }
            assert_eq!(
                check_against(s.schema.as_deref(), service, s.version, &s.current),
                Ok(()),
                "CF3: {service}'s config fails its schema"
            );
            let bytes: usize = s.commits.iter().map(commit_bytes).sum();
            assert_eq!(
                bytes, s.history_bytes,
                "CF4: {service} counts {} history bytes for {bytes}",
                s.history_bytes
            );
            assert!(
                s.commits.len() <= s.versions_kept as usize && bytes <= CONFIG_HISTORY_BYTES_MAX,
                "CF4: {service} keeps {} commits, {bytes} bytes, over its retention",
                s.commits.len()
            );
        }
    }
}

fn check_expected(service: &str, expected: Option<u64>, current: u64) -> Result<(), ConfigError> {
    match expected {
        Some(expected) if expected != current => Err(ConfigError::VersionMismatch {
            service: service.to_owned(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}
