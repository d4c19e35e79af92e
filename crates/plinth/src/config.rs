//! The server's settings: flags, then `PLINTH_*` environment variables, then an optional TOML
//! file, then defaults that just work.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./plinth-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// The TOML file's keys; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub node_id: Option<u64>,
    /// e.g. "1=10.0.0.1:7070,2=10.0.0.2:7070,3=10.0.0.3:7070"
    pub peers: Option<String>,
    pub advertise: Option<String>,
    /// e.g. "100ms"
    pub tick_interval: Option<String>,
    pub snapshot_logs: Option<u64>,
    pub worker_threads: Option<usize>,
    pub max_connections: Option<usize>,
    /// e.g. "5m"
    pub idle_timeout: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {} is not valid: {e}", path.display()))
    }

    pub fn tick_interval(&self) -> anyhow::Result<Option<Duration>> {
        duration(
            "tick_interval",
            &self.tick_interval,
            crate::serve::TICK_INTERVAL_MS_MAX,
        )
    }

    pub fn idle_timeout(&self) -> anyhow::Result<Option<Duration>> {
        duration(
            "idle_timeout",
            &self.idle_timeout,
            crate::serve::IDLE_TIMEOUT_MS_MAX,
        )
    }
}

/// The file's duration `key`, of at most `max_ms`.
fn duration(key: &str, text: &Option<String>, max_ms: u64) -> anyhow::Result<Option<Duration>> {
    text.as_deref()
        .map(|t| {
            crate::ms_up_to(max_ms)(t)
                .map(crate::Ms::duration)
                .map_err(|e| anyhow::anyhow!("{key} in the config file: {e}"))
        })
        .transpose()
}
