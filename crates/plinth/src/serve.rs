//! `plinth serve`: start a node on a data directory and serve the API until SIGTERM or SIGINT.

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, FileConfig};
use anyhow::Context as _;
use plinth_node::{Node, NodeConfig};
use std::collections::BTreeMap;
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
    /// A TOML file with any of: data_dir, listen, node_id, peers, advertise, tick_interval,
    /// snapshot_logs, worker_threads.
    #[arg(long, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id in the Raft group [default: 1]
    #[arg(long, env = "PLINTH_NODE_ID")]
    node_id: Option<u64>,
    /// The cluster's members when it first forms, this node among them:
    /// `1=10.0.0.1:7070,2=10.0.0.2:7070,3=10.0.0.3:7070`. Every member is started with the same
    /// list; it is read only on a data directory with no log yet. Without it the node is a
    /// cluster of one. When --listen is not given, the node listens on its own entry.
    #[arg(long, env = "PLINTH_PEERS")]
    peers: Option<String>,
    /// Start without forming a cluster and wait to be added (`plinth cluster add-learner` on a
    /// member of the cluster).
    #[arg(long, env = "PLINTH_JOIN")]
    join: bool,
    /// The host:port the other members and clients reach this node at [default: its entry in
    /// --peers, else the address it listens on]
    #[arg(long, env = "PLINTH_ADVERTISE")]
    advertise: Option<String>,
    /// How often the leader checks for due leases [default: 100ms]
    #[arg(long, env = "PLINTH_TICK_INTERVAL", value_parser = crate::ms_up_to(TICK_INTERVAL_MS_MAX))]
    tick_interval: Option<crate::Ms>,
    /// Take a snapshot after this many log entries [default: 10000]
    #[arg(long, env = "PLINTH_SNAPSHOT_LOGS")]
    snapshot_logs: Option<u64>,
    /// Threads that serve calls, 1 to 1024 [default: one fewer than the machine's cores, at
    /// least 1: the write-ahead log's flusher and the kernel's network and disk work take the
    /// last one]
    #[arg(long, env = "PLINTH_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Client connections open at once; past it a new connection is told so and closed. At
    /// most the open-files limit less 256 kept for the log and the other members
    /// [default: 10000]
    #[arg(long, env = "PLINTH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A connection on which no request has started for this long is closed (at most 1d); a
    /// new one must send its first request within 10 s, or this if shorter [default: 5m]
    #[arg(long, env = "PLINTH_IDLE_TIMEOUT", value_parser = crate::ms_up_to(IDLE_TIMEOUT_MS_MAX))]
    idle_timeout: Option<crate::Ms>,
}

/// The longest `--idle-timeout`.
pub const IDLE_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

/// The longest `--tick-interval`: a leader that checks for due leases more rarely would let
/// them outlive their ttl by as much.
pub const TICK_INTERVAL_MS_MAX: u64 = 60_000;

/// The most `--worker-threads` may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// Runs `plinth serve`: reads the settings, builds the runtime with as many worker threads as
/// they ask for, and serves until SIGTERM or SIGINT.
pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let worker_threads = match args.worker_threads.or(file.worker_threads) {
        Some(n) if (1..=MAX_WORKER_THREADS).contains(&n) => n,
        Some(n) => anyhow::bail!("--worker-threads is {n}; it must be 1 to {MAX_WORKER_THREADS}"),
        // Each runtime thread that runs out of work parks, and a task scheduled meanwhile on a
        // busy one wakes it: on two cores, a second runtime thread cost about a fifth of the
        // server's CPU in wake-ups (docs/benchmarks.md, item 17).
        None => std::thread::available_parallelism()
            .map_or(1, |cores| cores.get().saturating_sub(1))
            .max(1),
    };
    let idle_sync = plinth_node::IdleSync::default();
    let runtime = crate::runtime(worker_threads, Some(idle_sync.clone()))
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run(args, file, worker_threads, idle_sync))
}

async fn run(
    args: ServeArgs,
    file: FileConfig,
    worker_threads: usize,
    idle_sync: plinth_node::IdleSync,
) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The runtime's LIFO slot is off only in a build with `--cfg tokio_unstable` (see main.rs).
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        worker_threads,
        lifo_slot = if cfg!(tokio_unstable) { "off" } else { "on" },
        "starting plinth"
    );
    let args_connections = (args.max_connections, args.idle_timeout);
    let defaults = NodeConfig::default();
    let data_dir = args
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let node_id = args.node_id.or(file.node_id).unwrap_or(defaults.node_id);
    let peers = match args.peers.as_deref().or(file.peers.as_deref()) {
        Some(text) => parse_peers(text)?,
        None => BTreeMap::new(),
    };
    if !peers.is_empty() && !peers.contains_key(&node_id) {
        anyhow::bail!(
            "--peers lists nodes {:?} but not this node ({node_id}); list every member, this one too, or pass --node-id",
            peers.keys().collect::<Vec<_>>()
        );
    }
    let listen = args
        .listen
        .or(file.listen.clone())
        .or_else(|| peers.get(&node_id).cloned())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let advertise = args
        .advertise
        .or(file.advertise.clone())
        .or_else(|| peers.get(&node_id).cloned())
        .unwrap_or_else(|| addr.to_string());
    plinth_node::check_address(&advertise)
        .map_err(|e| anyhow::anyhow!("--advertise: the address {e}"))?;
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        node_id,
        advertise_addr: advertise,
        peers,
        join: args.join,
        // A node that listens on one address talks to the others from it too.
        source_ip: Some(addr.ip()).filter(|ip| !ip.is_unspecified()),
        tick_interval: args
            .tick_interval
            .map(crate::Ms::duration)
            .or(file.tick_interval()?)
            .unwrap_or(defaults.tick_interval),
        snapshot_logs_since_last: args
            .snapshot_logs
            .or(file.snapshot_logs)
            .unwrap_or(defaults.snapshot_logs_since_last),
        idle_sync: Some(idle_sync),
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
    let options = serve_options(&args_connections, &file)?;
    // Until SIGTERM or SIGINT, or until the node fails for good (a disk that stopped taking
    // writes): then the process exits non-zero with the reason, so that a supervisor restarts
    // it, rather than live on answering every call with UNAVAILABLE.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let stop = {
        let (node, signal) = (node.clone(), crate::stop_signal());
        async move {
            tokio::select! {
                () = signal => {}
                e = node.failed() => {
                    let _ = failed_tx.send(e);
                }
            }
        }
    };
    plinth_server::serve(node.clone(), listener, options, stop).await?;
    let failed = failed_rx.await.ok();
    if let Some(e) = &failed {
        tracing::error!(error = %e, "the node failed and cannot serve; exiting");
    } else {
        tracing::info!("shutting down");
    }
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, node.shutdown())
        .await
        .is_err()
    {
        tracing::error!("the node did not shut down within {SHUTDOWN_TIMEOUT:?}; exiting anyway");
    }
    match failed {
        Some(e) => Err(anyhow::anyhow!(
            "the node failed and cannot serve ({e}); exiting so that it can be restarted"
        )),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// How long a stopping node may take to sync its log and save its state before the process
/// exits anyway (a failed disk can make those hang).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `1=host:port,2=host:port`: each member's id and the address the others reach it at.
fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry.split_once('=').with_context(|| {
            format!("--peers entry {entry:?} is not ID=HOST:PORT (e.g. 1=10.0.0.1:7070)")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .with_context(|| {
                format!("--peers entry {entry:?}: the id must be a whole number from 1")
            })?;
        let addr = addr.trim();
        plinth_node::check_address(addr)
            .map_err(|e| anyhow::anyhow!("--peers entry {entry:?}: the address {e}"))?;
        if peers.insert(id, addr.to_owned()).is_some() {
            anyhow::bail!("--peers names node {id} twice");
        }
    }
    if peers.is_empty() {
        anyhow::bail!("--peers is empty; give every member as ID=HOST:PORT, separated by commas");
    }
    Ok(peers)
}

/// How the server treats connections: the flags, then the file, then the defaults, with the
/// cap kept within the open-files limit (which `raise_open_files_limit` raised as far as
/// allowed) less the descriptors the node needs for itself.
fn serve_options(
    (max_connections, idle_timeout): &(Option<usize>, Option<crate::Ms>),
    file: &FileConfig,
) -> anyhow::Result<plinth_server::ServeOptions> {
    let defaults = plinth_server::ServeOptions::default();
    let files = raise_open_files_limit();
    let room = files.saturating_sub(plinth_server::RESERVED_DESCRIPTORS as u64) as usize;
    let max_connections = match max_connections.or(file.max_connections) {
        Some(0) => anyhow::bail!("--max-connections is 0; it must be at least 1"),
        Some(n) if n > room => anyhow::bail!(
            "--max-connections is {n}, but the open-files limit ({files}) leaves room for {room} connections beside the {} descriptors the node keeps for itself; raise the limit (ulimit -n) or lower --max-connections",
            plinth_server::RESERVED_DESCRIPTORS
        ),
        Some(n) => n,
        None => defaults.max_connections.min(room).max(1),
    };
    let idle_timeout = match idle_timeout.map(crate::Ms::duration) {
        Some(d) => Some(d),
        None => file.idle_timeout()?,
    }
    .unwrap_or(defaults.idle_timeout);
    if idle_timeout.is_zero() {
        anyhow::bail!("--idle-timeout is 0; it must be at least 1ms");
    }
    tracing::info!(
        max_connections,
        ?idle_timeout,
        open_files = files,
        "connections"
    );
    Ok(plinth_server::ServeOptions {
        max_connections,
        idle_timeout,
        first_request_timeout: defaults.first_request_timeout.min(idle_timeout),
    })
}

/// Raises this process's soft open-files limit to its hard limit (many systems start processes
/// at 1,024 with a hard limit far above) and answers the soft limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}
