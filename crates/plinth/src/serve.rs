//! `plinth serve`: start a node on a data directory and serve the API until SIGTERM or SIGINT.

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, FileConfig};
use anyhow::Context as _;
use plinth_node::{Node, NodeConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where the write-ahead log and snapshots live [default: ./plinth-data]
    #[arg(long, env = "PLINTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for gRPC and HTTP, one port for both; port 0 picks a free one [default: 127.0.0.1:7070]
    #[arg(long, env = "PLINTH_LISTEN")]
    listen: Option<String>,
    /// A TOML file with any of: data_dir, listen, node_id, tick_interval, snapshot_logs.
    #[arg(long, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id in the Raft group [default: 1]
    #[arg(long, env = "PLINTH_NODE_ID")]
    node_id: Option<u64>,
    /// How often the leader checks for due leases [default: 100ms]
    #[arg(long, env = "PLINTH_TICK_INTERVAL", value_parser = crate::parse_duration)]
    tick_interval: Option<Duration>,
    /// Take a snapshot after this many log entries [default: 10000]
    #[arg(long, env = "PLINTH_SNAPSHOT_LOGS")]
    snapshot_logs: Option<u64>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let defaults = NodeConfig::default();
    let data_dir = args
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let listen = args
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        node_id: args.node_id.or(file.node_id).unwrap_or(defaults.node_id),
        advertise_addr: addr.to_string(),
        tick_interval: args
            .tick_interval
            .or(file.tick_interval()?)
            .unwrap_or(defaults.tick_interval),
        snapshot_logs_since_last: args
            .snapshot_logs
            .or(file.snapshot_logs)
            .unwrap_or(defaults.snapshot_logs_since_last),
        ..defaults
    };
    let node = Node::start(config).await.with_context(|| {
        format!(
            "cannot start the node on data directory {}",
            data_dir.display()
        )
    })?;
    // Tests and scripts read this line to learn the port when `--listen` asked for port 0.
    println!(
        "plinth serving on http://{addr} (data directory {})",
        data_dir.display()
    );
    plinth_server::serve(node.clone(), listener, crate::stop_signal()).await?;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
