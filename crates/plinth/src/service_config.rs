//! `plinth config ...`: put, get, watch, history, rollback, schema, retention and list.

use crate::ClientOpts;
use crate::output::{connect, json, rfc3339};
use anyhow::{Context as _, bail};
use plinth_client::pb;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Set keys (KEY=VALUE) and delete keys (--delete KEY) of SERVICE as one new version. A
    /// VALUE that reads as JSON is that JSON value (30, true, {"a":1}); anything else is a string.
    Put {
        service: String,
        /// KEY=VALUE pairs.
        pairs: Vec<String>,
        /// Delete this key (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Apply only if SERVICE is still at this version (0: it has no config yet).
        #[arg(long)]
        expect_version: Option<u64>,
        /// Take every VALUE as a string, even one that reads as JSON.
        #[arg(long)]
        string: bool,
    },
    /// Print SERVICE's config (KEY=JSON a line), or one key's value.
    Get {
        service: String,
        /// Only this key's value (a string printed bare); exit status 1 if it is not set.
        key: Option<String>,
        /// The version to read (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print every version of SERVICE after --from, then each new one, until interrupted.
    Watch {
        service: String,
        /// The version already applied: watching starts after it.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Print the kept versions of SERVICE, oldest first.
    History {
        service: String,
        /// Only the versions after this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Make a new version of SERVICE equal to VERSION.
    Rollback {
        service: String,
        version: u64,
        #[arg(long)]
        expect_version: Option<u64>,
    },
    /// Set SERVICE's JSON Schema from FILE (- for stdin), clear it with --clear, or print it.
    Schema {
        service: String,
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    /// Keep this many versions of SERVICE for old snapshots and watchers (1 to 10,000).
    Retention { service: String, versions: u32 },
    /// List the services that have config.
    List,
}

/// `KEY=VALUE` as a key and a JSON value: VALUE parsed as JSON if it is JSON (and `as_string` is
/// off), else the string itself.
fn pair(text: &str, as_string: bool) -> anyhow::Result<(String, Value)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("{text:?} is not KEY=VALUE");
    };
    let value = match serde_json::from_str(value) {
        Ok(json) if !as_string => json,
        _ => Value::String(value.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// A value as the CLI prints it: JSON text, except that a string prints bare with `bare`.
fn shown(value: &Value, bare: bool) -> String {
    match value {
        Value::String(text) if bare => text.clone(),
        value => value.to_string(),
    }
}

fn change_line(v: &pb::ConfigVersion) -> String {
    let mut parts: Vec<String> = v
        .set
        .iter()
        .map(|(k, value)| format!("{k}={value}"))
        .collect();
    parts.extend(v.delete.iter().map(|k| format!("-{k}")));
    let rollback = match v.rollback_of {
        0 => String::new(),
        to => format!(" (rollback to {to})"),
    };
    format!(
        "{}\t{}\t{}{rollback}",
        v.version,
        rfc3339(v.time_ms),
        parts.join(" ")
    )
}

pub async fn run(opts: &ClientOpts, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    match command {
        ConfigCommand::Put {
            service,
            pairs,
            delete,
            expect_version,
            string,
        } => {
            let set = pairs
                .iter()
                .map(|p| pair(p, string))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let version = client
                .config_put(service, set, delete, expect_version)
                .await?;
            if opts.json {
                json(&version);
            } else {
                println!("{}", version.version);
            }
        }
        ConfigCommand::Get {
            service,
            key,
            version,
        } => {
            let snapshot = client.config_get(service, version.unwrap_or(0)).await?;
            if let Some(key) = key {
                let Some(value) = snapshot.get(&key) else {
                    eprintln!(
                        "{key} is not set in {} at version {}",
                        snapshot.service, snapshot.version
                    );
                    return Ok(ExitCode::FAILURE);
                };
                println!("{}", shown(value, !opts.json));
            } else if opts.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "service": snapshot.service,
                        "version": snapshot.version,
                        "time_ms": snapshot.time_ms,
                        "values": snapshot.values,
                    })
                );
            } else {
                eprintln!("# {} version {}", snapshot.service, snapshot.version);
                for (key, value) in &snapshot.values {
                    println!("{key}={}", shown(value, false));
                }
            }
        }
        ConfigCommand::Watch { service, from } => {
            let mut stream = client.config_watch(service, from).await?;
            let stop = crate::stop_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    message = stream.message() => match message? {
                        Some(message) => {
                            let version = message.version.unwrap_or_default();
                            if opts.json {
                                json(&version);
                            } else {
                                println!("{}", change_line(&version));
                            }
                        }
                        None => bail!("the server ended the watch (it is shutting down); watch again with --from"),
                    },
                }
            }
        }
        ConfigCommand::History { service, after } => {
            for version in client.config_history(service, after).await? {
                if opts.json {
                    json(&version);
                } else {
                    println!("{}", change_line(&version));
                }
            }
        }
        ConfigCommand::Rollback {
            service,
            version,
            expect_version,
        } => {
            let made = client
                .config_rollback(service, version, expect_version)
                .await?;
            if opts.json {
                json(&made);
            } else {
                println!("{}", made.version);
            }
        }
        ConfigCommand::Schema {
            service,
            file,
            clear,
        } => {
            if clear {
                client.config_set_schema(service, None).await?;
            } else if let Some(file) = file {
                let text = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading the schema")?
                } else {
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                };
                let schema: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                client.config_set_schema(service, Some(&schema)).await?;
            } else {
                match client.config_get_schema(service.clone()).await? {
                    Some(schema) => println!("{schema}"),
                    None => {
                        eprintln!("{service} has no schema");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
        ConfigCommand::Retention { service, versions } => {
            let base = client.config_set_retention(service, versions).await?;
            if !opts.json {
                println!("the oldest version kept is {base}");
            } else {
                println!("{}", serde_json::json!({ "base_version": base }));
            }
        }
        ConfigCommand::List => {
            for s in client.config_list().await? {
                if opts.json {
                    json(&s);
                } else {
                    println!(
                        "{}\tversion {}\t{} keys\tkept from {}{}",
                        s.service,
                        s.version,
                        s.keys,
                        s.base_version,
                        if s.has_schema { "\tschema" } else { "" }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
