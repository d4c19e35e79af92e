//! Cluster harness: 3 or 5 real `plinth` replicas on loopback ports with their own temporary
//! data directories, and the faults the tests inject into them: `kill -9` and restart, SIGSTOP
//! and SIGCONT (a paused process), network partitions with every process alive (through
//! [`super::proxy`]), and membership change through the CLI.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plinth_client::Client;

use super::proxy::{self, Network};

pub struct Replica {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Extra environment for this replica's process (fault hooks).
    env: Vec<(String, String)>,
    /// Started with `--join` (not one of the initial `--peers`): restarted with neither flag.
    joiner: bool,
}

impl Replica {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Cluster {
    pub replicas: Vec<Replica>,
    peers: String,
    /// The proxies between replicas, for a cluster that can be partitioned.
    network: Option<Network>,
    _tmp: tempfile::TempDir,
}

/// A free loopback port: bound, read and released (the kernel does not hand it out again at
/// once).
fn free_port() -> u16 {
    free_port_on(IpAddr::from([127, 0, 0, 1]))
}

/// `n` distinct free loopback ports: all are held while they are drawn, so no two are the same.
fn free_ports(n: u64) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn free_port_on(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Cluster {
    /// Starts `n` replicas, ids 1..=n, that form one cluster.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with_env(n, &[])
    }

    /// Like `start`, with extra environment variables for some replicas: (id, name, value).
    pub fn start_with_env(n: u64, env: &[(u64, &str, &str)]) -> Cluster {
        let mut cluster = Cluster::prepared(n, env);
        cluster.spawn_all();
        cluster
    }

    /// Starts every replica of a prepared cluster.
    pub fn spawn_all(&mut self) {
        for id in 1..=self.replicas.len() as u64 {
            self.spawn(id, false);
        }
    }

    /// Starts `n` replicas whose connections to each other pass through a fault-injecting
    /// proxy, so that [`Cluster::partition`] can cut the network between them. Call from
    /// within a Tokio runtime.
    pub fn start_partitionable(n: u64) -> Cluster {
        let mut cluster = Cluster::prepared(n, &[]);
        let mut network = Network::new();
        for r in &mut cluster.replicas {
            let ip = proxy::replica_ip(r.id);
            r.addr = format!("{ip}:{}", free_port_on(ip));
        }
        cluster.peers = cluster
            .replicas
            .iter()
            .map(|r| {
                let upstream = r.addr.parse().expect("a socket address");
                format!("{}={}", r.id, network.proxy(r.id, upstream))
            })
            .collect::<Vec<_>>()
            .join(",");
        cluster.network = Some(network);
        cluster.spawn_all();
        cluster
    }

    /// Cuts the network between the groups (every process stays alive); see [`super::proxy`].
    pub fn partition(&self, groups: &[&[u64]]) {
        self.network
            .as_ref()
            .expect("a cluster started with start_partitionable")
            .partition(groups);
    }

    pub fn heal(&self) {
        self.network
            .as_ref()
            .expect("a cluster started with start_partitionable")
            .heal();
    }

    /// The replicas, ports and data directories of a cluster, none started yet (a test may
    /// prepare their data directories first).
    pub fn prepared(n: u64, env: &[(u64, &str, &str)]) -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(n);
        let replicas: Vec<Replica> = (1..=n)
            .map(|id| Replica {
                id,
                addr: format!("127.0.0.1:{}", ports[id as usize - 1]),
                data_dir: tmp.path().join(format!("node-{id}")),
                log: tmp.path().join(format!("node-{id}.log")),
                child: None,
                paused: false,
                env: env
                    .iter()
                    .filter(|(of, _, _)| *of == id)
                    .map(|(_, k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                joiner: false,
            })
            .collect();
        let peers = replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.addr))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            replicas,
            peers,
            network: None,
            _tmp: tmp,
        }
    }

    /// Every replica's endpoint, comma-separated, as the SDK and the CLI take them.
    pub fn endpoints(&self) -> String {
        self.replicas
            .iter()
            .map(Replica::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn replica(&self, id: u64) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .expect("a replica with that id")
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.id == id)
            .expect("a replica with that id")
    }

    fn spawn(&mut self, id: u64, join: bool) {
        if let Err(log) = self.try_spawn(id, join) {
            panic!("node {id} did not start; its log:\n{log}");
        }
    }

    /// Starts replica `id`; if it does not come up, answers its log (the process has exited
    /// or been killed).
    fn try_spawn(&mut self, id: u64, join: bool) -> Result<(), String> {
        let peers = self.peers.clone();
        let r = self.replica_mut(id);
        assert!(r.child.is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_plinth"));
        command.envs(r.env.iter().map(|(k, v)| (k, v)));
        command
            .arg("serve")
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&r.data_dir)
            .arg("--listen")
            .arg(&r.addr)
            .env("PLINTH_LOG", "info,openraft=warn")
            // Snapshots (and log purges) come often, so a lagging node catches up by snapshot.
            .env("PLINTH_SNAPSHOT_LOGS", "200")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if join {
            command.arg("--join");
        } else if !r.joiner {
            command.arg("--peers").arg(&peers);
        }
        let mut child = command.spawn().expect("spawn plinth");
        if super::serving_line(&mut child).is_none() {
            let _ = child.wait();
            return Err(r.log_text());
        }
        r.child = Some(child);
        r.paused = false;
        Ok(())
    }

    /// SIGTERM, and waits for the replica to exit.
    pub fn stop(&mut self, id: u64) {
        let r = self.replica_mut(id);
        if let Some(mut child) = r.child.take() {
            // SAFETY: kill(2) on a child we spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().expect("reap");
        }
    }

    /// Starts a stopped replica again, as [`Cluster::restart`] does, and answers its log if it
    /// does not come up.
    pub fn try_restart(&mut self, id: u64) -> Result<(), String> {
        self.try_spawn(id, false)
    }

    /// Moves a stopped replica's data directory aside (to `<dir>.old`) and starts it empty with
    /// `--join`, on the same id and address: how a member whose log was damaged rejoins.
    pub fn rejoin_empty(&mut self, id: u64) {
        let r = self.replica_mut(id);
        assert!(r.child.is_none(), "node {id} is running");
        let aside = r.data_dir.with_extension("old");
        std::fs::rename(&r.data_dir, &aside).expect("move the data directory aside");
        r.joiner = true;
        self.spawn(id, true);
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self, id: u64) {
        let r = self.replica_mut(id);
        if let Some(mut child) = r.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
        r.paused = false;
    }

    /// Starts a stopped replica again on its data directory and port, with the flags of a
    /// restart: the initial members get `--peers` again (it is ignored once there is a log), a
    /// node that joined later gets neither `--peers` nor `--join`, and must find its cluster
    /// in its log.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id, false);
    }

    /// Adds a replica that starts with `--join`, waiting to be added by `cluster add-learner`.
    pub fn spawn_joiner(&mut self, id: u64) -> String {
        let dir = self._tmp.path();
        self.replicas.push(Replica {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            child: None,
            paused: false,
            env: Vec::new(),
            joiner: true,
        });
        self.spawn(id, true);
        self.replica(id).addr.clone()
    }

    /// SIGSTOP: the process stays, its sockets stay open, and it answers nothing.
    pub fn pause(&mut self, id: u64) {
        let r = self.replica_mut(id);
        let child = r.child.as_ref().expect("node is running");
        // SAFETY: kill(2) on a child we spawned.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) }, 0);
        r.paused = true;
    }

    /// SIGCONT: the paused process runs on from where it stopped.
    pub fn resume(&mut self, id: u64) {
        let r = self.replica_mut(id);
        let child = r.child.as_ref().expect("node is running");
        // SAFETY: kill(2) on a child we spawned.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGCONT) }, 0);
        r.paused = false;
    }

    /// The leader as the running, unpaused replicas agree on it: every one of them names the
    /// same leader, which is among them, in the same term. Waits up to `within`.
    pub async fn leader(&self, within: Duration) -> u64 {
        let all: Vec<u64> = self.replicas.iter().map(|r| r.id).collect();
        self.leader_among(&all, within).await
    }

    /// The leader as the running, unpaused replicas among `ids` agree on it (one side of a
    /// partition). Waits up to `within`.
    pub async fn leader_among(&self, ids: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.agreed_leader(ids).await {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed on by {ids:?} within {within:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn agreed_leader(&self, ids: &[u64]) -> Option<u64> {
        let mut seen = None;
        let asked = || {
            self.replicas
                .iter()
                .filter(|r| ids.contains(&r.id) && r.is_running() && !r.paused)
        };
        for r in asked() {
            let client = Client::connect_lazy(r.endpoint()).ok()?;
            let status = tokio::time::timeout(Duration::from_secs(1), client.status())
                .await
                .ok()?
                .ok()?;
            if status.leader_id == 0 {
                return None;
            }
            match seen {
                None => seen = Some((status.leader_id, status.term)),
                Some(s) if s == (status.leader_id, status.term) => {}
                Some(_) => return None,
            }
        }
        let (leader, _) = seen?;
        asked().any(|r| r.id == leader).then_some(leader)
    }

    /// Runs the CLI against every replica's endpoint; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(args)
            .env("PLINTH_ENDPOINT", self.endpoints())
            .output()
            .expect("run the cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let text = r.log_text();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- node {} ---\n{}",
                    r.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
