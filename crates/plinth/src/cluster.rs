//! `plinth cluster`: a cluster's members and leader, and online membership change; and
//! `plinth dev-cluster`, a local cluster on loopback ports for trying failover by hand.

use crate::ClientOpts;
use crate::output::{connect, json};
use anyhow::Context as _;
use plinth_client::pb;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, leader, term, and each member's matched log index and lag.
    Status,
    /// Add a node as a learner; returns once it has caught up with the log.
    AddLearner {
        /// The new node's id (never reuse the id of a node that left).
        id: u64,
        /// host:port where the new node listens.
        address: String,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or a learner.
    Remove { id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { id: u64 },
}

pub async fn run(opts: &ClientOpts, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let client = connect(opts).await?;
    let status = match command {
        ClusterCommand::Status => client.cluster_status().await?,
        ClusterCommand::AddLearner { id, address } => {
            client.cluster_add_learner(id, address).await?
        }
        ClusterCommand::Promote { id } => client.cluster_promote(id).await?,
        ClusterCommand::Remove { id } => client.cluster_remove(id).await?,
        ClusterCommand::TransferLeader { id } => client.cluster_transfer_leader(id).await?,
    };
    if opts.json {
        json(&status);
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &pb::ClusterStatusResponse) {
    let leader = if s.leader_id == 0 {
        "none known".to_owned()
    } else {
        s.leader_id.to_string()
    };
    println!("leader:          {leader}");
    println!("term:            {}", s.term);
    println!("answered by:     node {}", s.node_id);
    println!("last log index:  {}", s.last_log_index);
    println!("committed index: {}", s.committed_index);
    println!("applied index:   {}", s.applied_index);
    if s.changing {
        println!("membership:      changing");
    }
    println!(
        "{:<6} {:<24} {:<8} {:>10} {:>8}",
        "ID", "ADDRESS", "ROLE", "MATCHED", "LAG"
    );
    for m in &s.members {
        let role = match (m.id == s.leader_id, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let known = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "{:<6} {:<24} {:<8} {:>10} {:>8}",
            m.id,
            m.address,
            role,
            known(m.matched_index),
            known(m.lag)
        );
    }
}

#[derive(clap::Args, Debug)]
pub struct DevClusterArgs {
    /// How many replicas (3 or 5 tolerate one or two failures).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Node i listens on 127.0.0.1:(base-port + i - 1).
    #[arg(long, default_value_t = 7071)]
    base_port: u16,
    /// Each node's data directory is DIR/node-<id>, its log DIR/node-<id>.log.
    #[arg(long, default_value = "./plinth-dev-cluster")]
    data_dir: PathBuf,
}

/// Starts `--nodes` replicas of this binary on loopback, prints how to reach them, and stops
/// them all on Ctrl-C. Kill one (its pid is printed) to watch the others elect a new leader;
/// run the same command again to restart the stopped ones on their data.
pub async fn dev_cluster(args: DevClusterArgs) -> anyhow::Result<ExitCode> {
    if !(1..=9).contains(&args.nodes) {
        anyhow::bail!("--nodes is {}; a dev cluster has 1 to 9 nodes", args.nodes);
    }
    let exe = std::env::current_exe().context("cannot find this plinth binary")?;
    let addr = |id: u64| format!("127.0.0.1:{}", u64::from(args.base_port) + id - 1);
    let peers = (1..=args.nodes)
        .map(|id| format!("{id}={}", addr(id)))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let mut children = Vec::new();
    for id in 1..=args.nodes {
        let log_path = args.data_dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(&peers)
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{id}")))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        println!(
            "node {id}: http://{} (pid {}, log {})",
            addr(id),
            child.id().unwrap_or(0),
            log_path.display()
        );
        children.push(child);
    }
    let endpoints = (1..=args.nodes)
        .map(|id| format!("http://{}", addr(id)))
        .collect::<Vec<_>>()
        .join(",");
    println!("\nexport PLINTH_ENDPOINT={endpoints}");
    println!(
        "then: plinth cluster status; plinth kv put k v; kill a node and watch the rest elect."
    );
    println!("Ctrl-C stops every node.");
    crate::stop_signal().await;
    for child in &mut children {
        if let Some(pid) = child.id() {
            // SIGTERM: each node shuts down cleanly, saving its committed position.
            // SAFETY: kill(2) on a pid we spawned; no memory is involved.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    Ok(ExitCode::SUCCESS)
}
