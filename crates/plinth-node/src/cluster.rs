//! Cluster: who the members are, who leads, how far each has replicated, and the online
//! membership changes (add a learner, promote it to voter, remove a member, hand leadership to
//! another voter). Every change goes through openraft's joint consensus, one at a time, and must
//! be asked of the leader; a follower answers `NotLeader` with the leader's address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ServerState};

use crate::error::NodeError;
use crate::error::{from_fatal, from_write_error};
use crate::node::Node;

/// How long `transfer_leader` waits to see the new leader take over.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// How long `add_learner` waits for the learner to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// Checks a member's address: `HOST:PORT`, where the other members and clients reach it.
pub fn check_address(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "{addr:?} is not HOST:PORT (e.g. 10.0.0.1:7070), the address the other members and clients reach a node at"
        )),
    }
}

/// A lazily connected HTTP/2 channel to the member at `addr` (plinth's port speaks HTTP/2 in
/// clear), for the Raft messages and for the calls a follower forwards to the leader: it
/// reconnects by itself, and notices within seconds a member that stops answering. It starts
/// from `source_ip` when one is set (see [`crate::NodeConfig::source_ip`]).
pub(crate) fn member_channel(
    addr: &str,
    source_ip: Option<std::net::IpAddr>,
) -> Result<tonic::transport::Channel, String> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("the address {addr:?} is not usable: {e}"))?
            .local_address(source_ip)
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .connect_lazy(),
    )
}

/// The cluster as this node sees it. Replication figures are known only on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// Every member, voters and learners, by id.
    pub members: Vec<Member>,
    /// Whether a membership change is still in joint consensus or not yet committed.
    pub changing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    /// A voter counts toward quorum; a learner only receives the log.
    pub voter: bool,
    /// The last log index the leader knows this member holds (on the leader only; the leader
    /// itself reports its own last index).
    pub matched_index: Option<u64>,
}

impl Node {
    pub fn cluster_status(&self) -> ClusterStatus {
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched: BTreeMap<u64, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let is_leader = m.state == ServerState::Leader;
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: if is_leader && *id == m.id {
                    m.last_log_index
                } else {
                    matched.get(id).copied().flatten()
                },
            })
            .collect();
        ClusterStatus {
            node_id: m.id,
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.cluster_committed.map_or(0, |l| l.index),
            applied_index: self.state_machine().applied_index().unwrap_or(0),
            members,
            changing: m.membership_config.log_id() != m.committed_membership_config.log_id()
                || membership.get_joint_config().len() > 1,
        }
    }

    /// The id of the leader this node knows of; cheaper than [`Node::leader`], for the check
    /// every call makes.
    pub fn leader_id(&self) -> Option<u64> {
        self.raft().metrics().borrow_watched().current_leader
    }

    /// The leader this node knows of, with its address: where a call this node cannot serve
    /// should go. `None` while no leader is known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Ok on the leader; otherwise `NOT_LEADER` with the leader this node knows of. A
    /// membership change is checked against the leader's view of the members: a node that
    /// does not lead (one that is joining and knows no leader yet) must not answer one from
    /// its own, which may be empty.
    fn leading(&self) -> Result<(), NodeError> {
        if self.leader_term().is_some() {
            return Ok(());
        }
        let leader = self.leader();
        Err(NodeError::NotLeader {
            leader_id: leader.as_ref().map(|(id, _)| *id),
            leader_addr: leader.map(|(_, addr)| addr),
        })
    }

    /// Adds `id` at `addr` as a learner and returns once it has caught up with the log (by
    /// snapshot if it is far behind). Adding a member already present with the same address
    /// is a no-op.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), NodeError> {
        if id == 0 {
            return Err(NodeError::Refused(
                "node id 0 is not allowed; node ids start at 1".to_owned(),
            ));
        }
        self.leading()?;
        if let Some(member) = self.cluster_status().members.iter().find(|m| m.id == id) {
            return if member.addr == addr {
                Ok(())
            } else {
                Err(NodeError::Refused(format!(
                    "node {id} is already a member at {}; remove it before adding it at {addr}",
                    member.addr
                )))
            };
        }
        check_address(&addr).map_err(NodeError::Refused)?;
        let added = self.raft().add_learner(id, BasicNode::new(&addr), true);
        match tokio::time::timeout(CATCH_UP_WAIT, added).await {
            Ok(result) => result.map(|_| ()).map_err(membership_error),
            Err(_) => Err(NodeError::Unavailable(format!(
                "node {id} was added as a learner but has not caught up within {CATCH_UP_WAIT:?}; check that it runs and listens at {addr} (`plinth cluster status` shows its lag)"
            ))),
        }
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: u64) -> Result<(), NodeError> {
        self.leading()?;
        let status = self.cluster_status();
        match status.members.iter().find(|m| m.id == id) {
            None => Err(NodeError::Refused(format!(
                "node {id} is not a member; add it as a learner first"
            ))),
            Some(m) if m.voter => Ok(()),
            Some(_) => self
                .raft()
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| ())
                .map_err(membership_error),
        }
    }

    /// Removes member `id`, voter or learner. A voter leaves the quorum through joint consensus;
    /// a removed leader steps down once the change commits.
    pub async fn remove(&self, id: u64) -> Result<(), NodeError> {
        self.leading()?;
        let status = self.cluster_status();
        let change = match status.members.iter().find(|m| m.id == id) {
            None => {
                return Err(NodeError::Refused(format!("node {id} is not a member")));
            }
            Some(m) if m.voter => {
                if status.members.iter().filter(|m| m.voter).count() == 1 {
                    return Err(NodeError::Refused(format!(
                        "node {id} is the only voter; a cluster needs at least one"
                    )));
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            }
            Some(_) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        self.raft()
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    /// Hands leadership to voter `to` and waits until this node sees it lead.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), NodeError> {
        let status = self.cluster_status();
        if status.leader_id == Some(to) {
            return Ok(());
        }
        if status.leader_id != Some(status.node_id) {
            let (leader_id, leader_addr) = self.leader().unzip();
            return Err(NodeError::NotLeader {
                leader_id,
                leader_addr,
            });
        }
        if !status.members.iter().any(|m| m.id == to && m.voter) {
            return Err(NodeError::Refused(format!(
                "node {to} is not a voter; only a voter can lead"
            )));
        }
        self.raft()
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(from_fatal)?;
        let deadline = Instant::now() + TRANSFER_WAIT;
        let mut metrics = self.raft().metrics();
        loop {
            if metrics.borrow_watched().current_leader == Some(to) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, metrics.changed()).await.is_err() {
                return Err(NodeError::Unavailable(format!(
                    "node {to} did not take over within {TRANSFER_WAIT:?}; it may be behind or unreachable"
                )));
            }
        }
    }
}

fn membership_error(
    e: openraft::errors::RaftError<
        crate::TypeConfig,
        openraft::errors::ClientWriteError<crate::TypeConfig>,
    >,
) -> NodeError {
    match e {
        openraft::errors::RaftError::APIError(e) => from_write_error(e),
        openraft::errors::RaftError::Fatal(f) => from_fatal(f),
    }
}
