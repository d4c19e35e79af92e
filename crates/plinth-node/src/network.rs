//! The Raft transport between replicas: openraft's RPCs over the internal `plinth.peer.v1.Peer`
//! gRPC service, which every node serves on its API port beside the public services.
//!
//! Each message names the node it is meant for and carries a postcard encoding of openraft's own
//! request; the receiving node refuses a message meant for another id, so a replica that now
//! answers at a reused address is never taken for the one that left it. Snapshots travel as a
//! client stream of chunks: the leader's vote, the snapshot's meta and its length first, then
//! the bytes, read from the snapshot's file as they go and written into a file as they come.
//! Connections are lazy and reconnect by themselves; an RPC that cannot reach its peer answers
//! `Unreachable`, which makes openraft back off from that peer and retry.

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use openraft::OptionalSend;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::log_store::blocking;
use crate::state_machine::{Snapshot, SnapshotDir};
use crate::{Raft, SnapshotMeta, TypeConfig, Vote};

#[allow(clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    tonic::include_proto!("plinth.peer.v1");
}

pub use pb::peer_server::PeerServer;

/// The bytes of a snapshot in one chunk of the install stream.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long a whole snapshot may take to send and install.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest encoded append: openraft batches up to `max_payload_entries` entries, and a batch
/// over this many bytes is cut (`fitting_prefix`), so a follower never receives (nor a leader
/// holds in one message) more than two of the largest commands' worth.
const APPEND_BYTES_MAX: usize = 2 * plinth_core::limits::COMMAND_BYTES_MAX;
/// The largest peer message: an append of `APPEND_BYTES_MAX` (or one entry alone, which is at
/// most a command and its framing) and room for its envelope.
pub(crate) const PEER_MESSAGE_BYTES_MAX: usize = APPEND_BYTES_MAX + (1 << 20);

/// How many of the entries, whose encoded sizes are `sizes`, fit in `limit` bytes together:
/// always at least one, so replication moves on whatever the sizes.
fn fitting_prefix(sizes: &[usize], limit: usize) -> usize {
    let mut total = 0usize;
    let fit = sizes
        .iter()
        .take_while(|size| {
            total = total.saturating_add(**size);
            total <= limit
        })
        .count();
    fit.max(1).min(sizes.len())
}

/// How long an append of `bytes` may take: openraft's deadline (a heartbeat interval, made for
/// an append of small entries) and time to move the bytes. Without the second, an append of a
/// few large commands could never finish in time and replication to every follower stopped at
/// it, timing out again and again.
fn append_ttl(ttl: Duration, bytes: usize) -> Duration {
    ttl + APPEND_TIME_PER_MIB * u32::try_from(bytes >> 20).unwrap_or(u32::MAX)
}

/// The time an append is allowed for each MiB it carries: 10 MB/s, far below what any link or
/// disk between members does, so that only a member that is truly stuck times out.
const APPEND_TIME_PER_MIB: Duration = Duration::from_millis(100);

/// Hands out a [`PeerClient`] per target; openraft keeps one per replication stream.
pub(crate) struct PeerNetwork {
    /// Where connections to peers start from (`NodeConfig::source_ip`).
    pub(crate) source_ip: Option<std::net::IpAddr>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &openraft::BasicNode) -> PeerClient {
        PeerClient::new(target, &node.addr, self.source_ip)
    }
}

/// The RPCs to one peer, over one lazily connected HTTP/2 channel.
pub(crate) struct PeerClient {
    target: u64,
    /// `None` when the peer's address is not a usable URL; every RPC then answers `Unreachable`.
    client: Result<pb::peer_client::PeerClient<Channel>, String>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl PeerClient {
    fn new(target: u64, addr: &str, source_ip: Option<std::net::IpAddr>) -> PeerClient {
        let client = crate::cluster::member_channel(addr, source_ip)
            .map(|channel| {
                pb::peer_client::PeerClient::new(channel)
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            })
            .map_err(|e| format!("node {target}: {e}"));
        PeerClient { target, client }
    }

    fn client(&self) -> Result<pb::peer_client::PeerClient<Channel>, Unreachable<TypeConfig>> {
        self.client.clone().map_err(Unreachable::from_string)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let payload = encode(request).map_err(RPCError::Network)?;
        self.send(rpc, payload, ttl).await
    }

    /// Sends an encoded request and decodes the reply.
    async fn send<Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let message = pb::PeerMessage {
            target: self.target,
            payload,
        };
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(message).await,
                Rpc::Vote => client.vote(message).await,
                Rpc::PreVote => client.pre_vote(message).await,
                Rpc::TransferLeader => client.transfer_leader(message).await,
            }
        };
        let reply = tokio::time::timeout(ttl, call)
            .await
            .map_err(|_| {
                RPCError::Unreachable(Unreachable::from_string(format!(
                    "node {} did not answer within {ttl:?}",
                    self.target
                )))
            })?
            .map_err(|s| RPCError::Unreachable(unreachable(self.target, &s)))?;
        decode(&reply.into_inner().payload).map_err(RPCError::Network)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = crate::state_machine::SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let payload = encode(&rpc).map_err(RPCError::Network)?;
        if payload.len() <= APPEND_BYTES_MAX {
            let ttl = append_ttl(option.hard_ttl(), payload.len());
            return self.send(Rpc::AppendEntries, payload, ttl).await;
        }
        // Too large for one message (a batch of large commands): send the entries that fit,
        // and tell openraft how far they reached; it sends the rest next.
        let sizes = rpc
            .entries
            .iter()
            .map(|entry| encode(entry).map(|bytes| bytes.len()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RPCError::Network)?;
        let keep = fitting_prefix(&sizes, APPEND_BYTES_MAX);
        rpc.entries.truncate(keep);
        let sent_up_to = rpc.entries.last().map(|entry| entry.log_id);
        let payload = encode(&rpc).map_err(RPCError::Network)?;
        tracing::debug!(
            target = self.target,
            entries = keep,
            of = sizes.len(),
            "append split by size"
        );
        let ttl = append_ttl(option.hard_ttl(), payload.len());
        Ok(match self.send(Rpc::AppendEntries, payload, ttl).await? {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(sent_up_to),
            other => other,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::PreVote, &rpc, option.hard_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::TransferLeader, &req, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let target = self.target;
        let head = pb::PeerMessage {
            target,
            // The body's length goes first, so that a stream cut short (a read that failed
            // here) is refused by the receiver rather than installed.
            payload: encode(&(vote, snapshot.meta, snapshot.snapshot.body_len()))
                .map_err(StreamingError::Network)?,
        };
        // Read from the file a chunk at a time, off the async threads, as the stream is sent.
        let body = snapshot
            .snapshot
            .into_body_reader()
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
        let chunks = futures::stream::unfold(Some(body), move |body| async move {
            let mut body = body?;
            let read = tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                (&mut body)
                    .take(SNAPSHOT_CHUNK_BYTES as u64)
                    .read_to_end(&mut chunk)
                    .map(|_| (chunk, body))
            })
            .await;
            match read {
                Ok(Ok((chunk, _))) if chunk.is_empty() => None,
                Ok(Ok((chunk, body))) => Some((
                    pb::PeerMessage {
                        target,
                        payload: chunk,
                    },
                    Some(body),
                )),
                // A read that failed ends the stream short: the receiver, counting the bytes
                // against the length in the head, refuses it, and openraft sends it again.
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the snapshot to send failed");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the snapshot to send panicked");
                    None
                }
            }
        });
        let stream = futures::stream::once(async move { head }).chain(chunks);
        let send = tokio::time::timeout(SNAPSHOT_TIMEOUT, client.install_snapshot(stream));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => {
                let reply = reply
                    .map_err(|_| {
                        StreamingError::Unreachable(Unreachable::from_string(format!(
                            "node {target} did not install the snapshot within {SNAPSHOT_TIMEOUT:?}"
                        )))
                    })?
                    .map_err(|s| StreamingError::Unreachable(unreachable(target, &s)))?;
                decode(&reply.into_inner().payload).map_err(StreamingError::Network)
            }
        }
    }
}

fn unreachable(target: u64, status: &tonic::Status) -> Unreachable<TypeConfig> {
    Unreachable::from_string(format!(
        "node {target}: {} ({:?})",
        status.message(),
        status.code()
    ))
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, NetworkError<TypeConfig>> {
    postcard::to_allocvec(value)
        .map_err(|e| NetworkError::from_string(format!("cannot encode a peer message: {e}")))
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, NetworkError<TypeConfig>> {
    postcard::from_bytes(payload)
        .map_err(|e| NetworkError::from_string(format!("cannot decode a peer message: {e}")))
}

/// The receiving end: hands each peer message to this node's Raft.
pub struct PeerService {
    pub(crate) node_id: u64,
    pub(crate) raft: Raft,
    /// Where a snapshot sent by the leader is received.
    pub(crate) snapshots: Arc<SnapshotDir>,
}

impl PeerService {
    fn check_target(&self, target: u64) -> Result<(), tonic::Status> {
        if target == self.node_id {
            Ok(())
        } else {
            Err(tonic::Status::failed_precondition(format!(
                "this is node {}, not node {target}",
                self.node_id
            )))
        }
    }

    fn open<T: DeserializeOwned>(
        &self,
        message: tonic::Request<pb::PeerMessage>,
    ) -> Result<T, tonic::Status> {
        let message = message.into_inner();
        self.check_target(message.target)?;
        decode(&message.payload).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
    }
}

fn reply<T: Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
    let value = result.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let payload = encode(&value).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(pb::PeerMessage { target: 0, payload }))
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::PeerMessage>,
    ) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(request)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<pb::PeerMessage>,
    ) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
        let rpc: VoteRequest<TypeConfig> = self.open(request)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: tonic::Request<pb::PeerMessage>,
    ) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
        let rpc: VoteRequest<TypeConfig> = self.open(request)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: tonic::Request<pb::PeerMessage>,
    ) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = self.open(request)?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<pb::PeerMessage>>,
    ) -> Result<tonic::Response<pb::PeerMessage>, tonic::Status> {
        let mut stream = request.into_inner();
        let head = stream
            .next()
            .await
            .ok_or_else(|| tonic::Status::invalid_argument("an empty snapshot stream"))??;
        self.check_target(head.target)?;
        let (vote, meta, body_len): (Vote, SnapshotMeta, u64) =
            decode(&head.payload).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        // Received into an incoming file of the snapshot directory, which the install renames
        // into place (or deletes, if openraft does not install it).
        let storage = |e: io::Error| tonic::Status::internal(format!("receiving a snapshot: {e}"));
        let snapshots = Arc::clone(&self.snapshots);
        let for_file = meta.clone();
        let mut incoming = blocking(move || snapshots.incoming(&for_file))
            .await
            .map_err(storage)?;
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let payload = chunk?.payload;
            received += payload.len() as u64;
            incoming = blocking(move || incoming.write_all(&payload).map(|()| incoming))
                .await
                .map_err(storage)?;
        }
        if received != body_len {
            return Err(tonic::Status::data_loss(format!(
                "the snapshot stream ended after {received} of its {body_len} bytes"
            )));
        }
        let snapshot = Snapshot {
            meta,
            snapshot: blocking(move || incoming.finish()).await.map_err(storage)?,
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}

#[cfg(test)]
mod tests {
    use super::{append_ttl, fitting_prefix};
    use std::time::Duration;

    #[test]
    fn an_append_has_time_for_its_bytes_beside_the_heartbeat_deadline() {
        let beat = Duration::from_millis(50);
        assert_eq!(append_ttl(beat, 300), beat);
        assert_eq!(append_ttl(beat, 16 << 20), Duration::from_millis(1_650));
    }

    #[test]
    fn an_append_too_large_is_cut_to_the_entries_that_fit_and_never_to_none() {
        assert_eq!(fitting_prefix(&[10, 10, 10], 100), 3);
        assert_eq!(fitting_prefix(&[40, 40, 40], 100), 2);
        assert_eq!(fitting_prefix(&[40, 60, 1], 100), 2);
        // One entry alone over the limit still goes (the receiver's limit is the real bound).
        assert_eq!(fitting_prefix(&[500, 1], 100), 1);
        assert_eq!(fitting_prefix(&[], 100), 0);
    }
}
