//! The `plinth` binary: `plinth serve` runs a node; every other subcommand is a client of one.

mod cluster;
mod config;
mod kv;
mod lease;
mod lock;
mod output;
mod queue;
mod registry;
mod repair;
mod schedule;
mod serve;
mod service_config;
mod snapshot;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc, not glibc's malloc: under load the server's allocations took about a seventh of its
/// CPU with glibc's (arena locks, consolidation); see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "plinth",
    version,
    about = "Infrastructure primitives on one replicated log"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

/// Options every client subcommand takes.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientOpts {
    /// The server to talk to; for a cluster, its nodes separated by commas (any node serves
    /// any call).
    #[arg(
        long,
        global = true,
        env = "PLINTH_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    pub endpoint: String,
    /// Print replies as JSON (one object a line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Top {
    /// Run a plinth node.
    Serve(serve::ServeArgs),
    /// Check a stopped node's log and, with --accept-loss, cut it where it is damaged.
    Repair(repair::RepairArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// The subcommands that talk to a server (and `dev-cluster`, which starts some).
#[derive(Subcommand)]
enum ClientCommand {
    /// The key-value store.
    Kv {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Leases.
    Lease {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: lease::LeaseCommand,
    },
    /// Locks and counting semaphores with fencing tokens.
    Lock {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: lock::LockCommand,
    },
    /// Leader elections.
    Election {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: lock::ElectionCommand,
    },
    /// Work queues with visibility timeouts, retries and dead-letter queues.
    Queue {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// The job scheduler: delayed, interval and cron schedules.
    Schedule {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Versioned configuration per service, with watch, rollback and a JSON Schema.
    Config {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: service_config::ConfigCommand,
    },
    /// The service registry: live instances on leases.
    Registry {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// Run scheduled jobs.
    Worker {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: schedule::WorkerCommand,
    },
    /// The cluster: members, leader, replication lag, and online membership change.
    Cluster {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Backups: save the whole state to a file, check one, restore a data directory from one.
    Snapshot {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Start a local cluster of replicas on loopback ports, for trying failover by hand.
    DevCluster(cluster::DevClusterArgs),
    /// The node's status: revision, leader, term, applied index, WAL size.
    Status {
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// The runtime every subcommand runs on, with `worker_threads` threads; a server's threads sync
/// its log when they go idle (`idle`). One thread is tokio's current-thread scheduler: what the
/// park hook wakes then runs on the same thread before it parks, where the multi-thread
/// scheduler's only worker would leave it queued and sleep.
pub fn runtime(
    worker_threads: usize,
    idle: Option<plinth_node::IdleSync>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(worker_threads);
        // Without the LIFO slot a woken task waits its turn behind those already queued. The
        // calls one fsync commits then finish together: their replies leave in one write, and
        // the calls that arrive meanwhile reach the log as one append. With it, each woken
        // connection or Raft task ran at once for a single call (docs/benchmarks.md, item 10).
        // The current-thread scheduler runs woken tasks in turn anyway.
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        builder
    };
    builder.enable_all();
    if let Some(idle) = idle {
        // A thread about to park syncs the log itself when a sync is due (plinth_wal::IdleSync).
        // With tokio's unstable task hooks compiled in, a thread that queued a sync wakes the
        // flusher for it only if it is still busy a little later.
        builder.on_thread_park(move || idle.on_idle(cfg!(tokio_unstable)));
        #[cfg(tokio_unstable)]
        builder.on_after_task_poll(|_| plinth_node::IdleSync::after_task());
    }
    builder.build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Top::Serve(args) => serve::main(args),
        Top::Repair(args) => repair::main(args),
        Top::Client(command) => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            match runtime(threads, None) {
                Ok(runtime) => runtime.block_on(client_command(command)),
                Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client_command(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Kv { opts, command } => kv::run(&opts, command).await,
        ClientCommand::Lease { opts, command } => lease::run(&opts, command).await,
        ClientCommand::Lock { opts, command } => lock::run(&opts, command).await,
        ClientCommand::Election { opts, command } => lock::run_election(&opts, command).await,
        ClientCommand::Queue { opts, command } => queue::run(&opts, command).await,
        ClientCommand::Schedule { opts, command } => schedule::run(&opts, command).await,
        ClientCommand::Worker { opts, command } => schedule::run_worker(&opts, command).await,
        ClientCommand::Config { opts, command } => service_config::run(&opts, command).await,
        ClientCommand::Registry { opts, command } => registry::run(&opts, command).await,
        ClientCommand::Cluster { opts, command } => cluster::run(&opts, command).await,
        ClientCommand::Snapshot { opts, command } => snapshot::run(&opts, command).await,
        ClientCommand::DevCluster(args) => cluster::dev_cluster(args).await,
        ClientCommand::Status { opts } => output::status(&opts).await,
    }
}

/// A duration argument, in the milliseconds the API takes; shown in its largest whole unit
/// (`30s`, `4d`, `1500ms`), as it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ms(pub u64);

impl Ms {
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (24 * 3600 * 1000, "d"),
            (3600 * 1000, "h"),
            (60 * 1000, "m"),
            (1000, "s"),
        ];
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 != 0 && self.0.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", self.0 / unit),
            None if self.0 == 0 => f.write_str("0s"),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// A parser of duration arguments (`500ms`, `10s`, `5m`, `1h30m`, `7d`) of at most `max_ms`:
/// a longer one is refused with the limit, never wrapped or cut to fit.
pub fn ms_up_to(
    max_ms: u64,
) -> impl Fn(&str) -> Result<Ms, String> + Clone + Send + Sync + 'static {
    ms_within(0, max_ms)
}

/// [`ms_up_to`] for a field that also has a least value (`min_ms`): a shorter one is refused
/// with it, where the API would read a 0 as "the default" or refuse it less clearly.
pub fn ms_within(
    min_ms: u64,
    max_ms: u64,
) -> impl Fn(&str) -> Result<Ms, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 500ms, 10s or 5m ({e})"))?;
        let ms = u64::try_from(duration.as_millis())
            .ok()
            .filter(|ms| *ms <= max_ms)
            .ok_or_else(|| {
                format!(
                    "{text} is longer than the most it may be here, {} ({max_ms} ms)",
                    Ms(max_ms)
                )
            })?;
        if ms < min_ms {
            return Err(format!(
                "{text} is shorter than the least it may be here, {} ({min_ms} ms)",
                Ms(min_ms)
            ));
        }
        Ok(Ms(ms))
    }
}

/// The longest wait a command that runs until it is idle (`--exit-when-idle`) may be told.
pub const IDLE_MS_MAX: u64 = 7 * 24 * 3600 * 1000;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: how a command that holds something (a server, a
/// lock, a leadership) learns to let go before it exits. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives in between is not lost.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
