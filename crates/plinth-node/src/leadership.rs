//! Leadership: whether a node is a cluster of itself, forming or joining a cluster, becoming
//! leader, and what a new leader owes the state (`State::leadership_duties`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::errors::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};

use crate::error::{NodeError, from_fatal};
use crate::node::Node;

/// How long `start` waits for this node to win its election. A single node needs one election
/// timeout (at most 300 ms); the margin covers a slow disk during recovery.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Marks a data directory whose node was told to join a cluster: until it has a log, it waits
/// to be added instead of forming a cluster of its own.
const JOINING_FILE: &str = "JOINING";

impl Node {
    /// Whether this node is a cluster of itself alone, which it leads from its first start. A
    /// log decides by its membership (only this node in it), whatever the flags say now, so a
    /// member restarted without `peers` or `join` stays a member. A pristine directory decides
    /// by the configuration: no other peer, not told to join now, and never told to join
    /// before (a node that was told once waits to be added even if restarted without it, so
    /// it never becomes a cluster of its own with writes the real one would erase).
    pub(crate) async fn alone(&self) -> Result<bool, NodeError> {
        let raft = &self.inner.raft;
        let cfg = &self.inner.cfg;
        if raft.is_initialized().await.map_err(from_fatal)? {
            let id = cfg.node_id;
            return raft
                .with_raft_state(move |s| {
                    let members = s.membership_state.effective().membership();
                    members.nodes().all(|(node, _)| *node == id)
                })
                .await
                .map_err(from_fatal);
        }
        let marker = cfg.data_dir.join(JOINING_FILE);
        if cfg.join {
            std::fs::write(
                &marker,
                b"started with --join; waiting to be added to a cluster\n",
            )
            .map_err(|e| NodeError::Storage(format!("cannot write {}: {e}", marker.display())))?;
            return Ok(false);
        }
        if marker.exists() {
            tracing::info!("this node was told to join a cluster; it waits to be added");
            return Ok(false);
        }
        Ok(cfg.alone())
    }

    /// In a cluster: initializes it from `peers` if this data directory is pristine (every
    /// member does the same with the same list, which openraft makes safe), or waits to be
    /// added if told to join. Returns at once: the election needs the other members, which
    /// reach this node through the server that serves [`Node::peer_service`].
    pub(crate) async fn join_cluster(&self) -> Result<(), NodeError> {
        let raft = &self.inner.raft;
        let cfg = &self.inner.cfg;
        if cfg.join
            || cfg.data_dir.join(JOINING_FILE).exists()
            || raft.is_initialized().await.map_err(from_fatal)?
        {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = cfg
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(
                node_id = cfg.node_id,
                members = ?cfg.peers.keys().collect::<Vec<_>>(),
                "initialized the cluster"
            ),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(RaftError::APIError(e)) => return Err(NodeError::Config(e.to_string())),
            Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
        }
        Ok(())
    }

    /// Initializes the cluster if the log is pristine, waits to be leader, catches up, and runs
    /// what a new leader owes the leases. Returns the term it leads in.
    pub(crate) async fn become_leader(&self) -> Result<u64, NodeError> {
        let raft = &self.inner.raft;
        let id = self.inner.cfg.node_id;
        if !raft.is_initialized().await.map_err(from_fatal)? {
            let members = BTreeMap::from([(id, BasicNode::new(&self.inner.cfg.advertise_addr))]);
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id = id, "initialized a single-member cluster"),
                // Already initialized: what we wanted.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(NodeError::Unavailable(e.to_string())),
                Err(RaftError::Fatal(f)) => return Err(from_fatal(f)),
            }
        }
        let metrics = raft
            .wait(Some(LEADER_WAIT))
            .metrics(
                |m| m.state == ServerState::Leader && m.current_leader == Some(id),
                "become leader",
            )
            .await
            .map_err(|e| NodeError::Unavailable(format!("node {id} did not become leader: {e}")))?;
        self.leadership_began().await?;
        tracing::info!(node_id = id, term = metrics.current_term, "leading");
        Ok(metrics.current_term)
    }

    /// Does what a node owes the state when it starts to lead (`State::leadership_duties`:
    /// abandoning the lock waits no call waits for, refreshing the leases), once its state has
    /// caught up with every committed entry.
    pub(crate) async fn leadership_began(&self) -> Result<(), NodeError> {
        self.barrier().await?;
        let first = !self.inner.orphans_abandoned.load(Ordering::Acquire);
        let duties = self
            .inner
            .sm
            .read()
            .state
            .leadership_duties(self.inner.cfg.node_id, first);
        for command in duties {
            let duty = format!("{command:?}");
            self.propose(command).await?;
            tracing::info!(%duty, "done a new leader's duty");
        }
        self.inner.orphans_abandoned.store(true, Ordering::Release);
        Ok(())
    }
}
