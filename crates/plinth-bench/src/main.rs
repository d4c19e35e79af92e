//! `plinth-bench`: runs one workload against plinth or one of its peers and prints a table line
//! (and, with `--json`, appends one JSON object a line to a file): ops/s, latency percentiles
//! from an HDR histogram, errors, and the server's CPU seconds and peak RSS from `/proc/<pid>`.
//!
//! Many operations are in flight at once over a few connections, as etcd's own benchmark tool
//! drives it. Every system gets the same workload, key space and value size, through its own
//! client library; the peers' clients are built with the `peers` feature.

mod driver;
#[cfg(feature = "peers")]
mod peers;
mod plinth;
mod report;
mod tables;
mod workload;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use driver::Load;
use report::{Percentiles, ProcWatch, Report};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use workload::{Args, Workload};

/// The load generator shares the machine with the server it measures, so it spends as little
/// CPU as it can, the same for every system: mimalloc, not glibc's malloc (about a tenth of its
/// samples under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Plinth,
    Etcd,
    Redis,
    Rabbitmq,
    Nats,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Plinth => "plinth",
            System::Etcd => "etcd",
            System::Redis => "redis",
            System::Rabbitmq => "rabbitmq",
            System::Nats => "nats",
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            System::Plinth => "http://127.0.0.1:7070",
            System::Etcd => "http://127.0.0.1:2379",
            System::Redis => "redis://127.0.0.1:6379",
            System::Rabbitmq => "amqp://guest:guest@127.0.0.1:5672/%2f",
            System::Nats => "nats://127.0.0.1:4222",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "plinth-bench",
    about = "The same workloads against plinth and its peers"
)]
enum Cli {
    /// Run one workload against one system and print (and append to --json) its report.
    Run(RunArgs),
    /// Read reports (JSON lines) and print markdown tables: medians per workload, system and
    /// concurrency, and plinth's ratio to each peer.
    Tables {
        /// The JSON-lines file `run --json` appended to.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    workload: Workload,
    #[arg(long, value_enum, default_value = "plinth")]
    system: System,
    /// The server's address (default: the system's usual local one).
    #[arg(long)]
    endpoint: Option<String>,
    /// Operations in all (default 10,000; kv-load: --keys).
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Run for this long instead of a number of operations.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Connections they share (default: one per 16 in flight).
    #[arg(long)]
    connections: Option<usize>,
    /// The load generator's runtime threads, 1 to 64. With one, a call and its reply never
    /// cross threads, and the machine's other cores are left to the server under test.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys a kv-get reads from (preloaded) or a kv-load writes.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Messages per queue cycle.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Puts per second of the watch-fanout writer.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// plinth only: before the run, open this many idle long-polling queue receives and as many
    /// lock acquires waiting behind a held lock, and keep them open through it (the cost of
    /// waiters to every write).
    #[arg(long, default_value_t = 0)]
    idle_waiters: usize,
    /// The server's pid, for its CPU time and peak memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Append the report as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not print the table header.
    #[arg(long)]
    no_header: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A subscriber, so the clients' trace-level spans (h2's, per frame) are filtered out where
    // they are made; without one, each is built and offered to `log`. Warnings go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let threads = match &cli {
        Cli::Run(args) => args.threads,
        Cli::Tables { .. } => 1,
    };
    if !(1..=64).contains(&threads) {
        eprintln!("error: --threads is {threads}; it must be 1 to 64");
        return std::process::ExitCode::FAILURE;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(threads);
    // The same client runtime for every system, without the LIFO slot: a woken task waits its
    // turn, so replies that arrive together are handled in one pass. etcd's figures do not move
    // with it; plinth's do, as its server sends replies in groups (docs/benchmarks.md, item 10).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.build().expect("a tokio runtime");
    let result = match cli {
        Cli::Run(args) => runtime.block_on(run(args)),
        Cli::Tables { file } => tables::print(&file),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: RunArgs) -> Result<()> {
    if cli.concurrency == 0 {
        bail!("--concurrency is 0; it must be at least 1");
    }
    if cli.batch == 0 || cli.batch > 100 {
        bail!("--batch is {}; it must be 1 to 100", cli.batch);
    }
    let connections = cli
        .connections
        .unwrap_or(cli.concurrency.div_ceil(16))
        .clamp(1, cli.concurrency);
    let args = Args {
        endpoint: cli
            .endpoint
            .clone()
            .unwrap_or_else(|| cli.system.default_endpoint().to_owned()),
        connections,
        value_size: cli.value_size,
        keys: cli.keys.max(1),
        batch: cli.batch,
        watchers: cli.watchers.max(1),
        rate: cli.rate,
        idle_waiters: cli.idle_waiters,
        run_id: format!("{:x}", driver::now_us()),
    };
    let load = Load {
        requests: match (cli.workload, cli.duration) {
            (Workload::KvLoad, _) => Some(args.keys),
            (_, Some(_)) => None,
            (_, None) => Some(cli.requests.unwrap_or(10_000)),
        },
        duration: cli.duration.filter(|_| cli.workload != Workload::KvLoad),
        concurrency: cli.concurrency,
    };
    let watch = cli
        .pid
        .map(ProcWatch::start)
        .transpose()
        .with_context(|| format!("reading /proc/{}", cli.pid.unwrap_or_default()))?;
    if cli.idle_waiters > 0 && cli.system != System::Plinth {
        bail!("--idle-waiters is for plinth only");
    }
    let outcome = match cli.system {
        System::Plinth => plinth::run(cli.workload, &args, &load).await?,
        #[cfg(feature = "peers")]
        other => peers::run(other, cli.workload, &args, &load).await?,
        #[cfg(not(feature = "peers"))]
        other => bail!(
            "this plinth-bench was built without the peers' clients; build it with `--features peers` to run against {}",
            other.name()
        ),
    };
    let usage = watch.map(|w| w.finish()).transpose()?;
    let label = match (cli.workload, cli.batch) {
        (Workload::Queue, batch) if batch > 1 => format!("queue-batch-{batch}"),
        (workload, _) => workload.name().to_owned(),
    };
    let mut report = Report::new(
        &label,
        cli.system.name(),
        cli.concurrency,
        connections,
        &outcome.sample,
        usage,
    );
    report.ops *= outcome.per_op;
    report.ops_per_s *= outcome.per_op as f64;
    report.delivery = outcome.delivery.as_ref().map(Percentiles::of);
    report.threads = Some(cli.threads);
    if !cli.no_header {
        println!("{}", Report::HEADER);
    }
    println!("{}", report.line());
    if let Some(d) = &report.delivery {
        println!(
            "  delivery (send to arrival): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            d.p50_us as f64 / 1000.0,
            d.p90_us as f64 / 1000.0,
            d.p99_us as f64 / 1000.0,
            d.p999_us as f64 / 1000.0
        );
    }
    if let Some(e) = &report.first_error {
        eprintln!("first error: {e}");
    }
    if let Some(path) = &cli.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(&report)?)?;
    }
    if report.ops == 0 {
        bail!("no operation succeeded");
    }
    Ok(())
}
