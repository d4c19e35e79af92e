//! The Raft transport between replicas — for now a placeholder that reaches nobody.
//!
//! This is the one deliberate placeholder in the crate: a single-member cluster never sends a
//! Raft RPC (it is its own quorum), but openraft needs a network factory to be built. Every RPC
//! answers `Unreachable` ("no cluster transport yet"), which openraft treats as a peer it backs
//! off from, so if a peer were ever configured the leader would simply not replicate to it. The
//! real transport (Raft RPCs over the server's port) replaces this file in a later issue.

use std::future::Future;

use openraft::OptionalSend;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use crate::{TypeConfig, Vote};

const NO_TRANSPORT: &str = "no cluster transport yet: this build runs a single-member cluster only";

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// Hands out [`NoTransport`] clients.
pub(crate) struct NoTransport;

fn unreachable() -> Unreachable<TypeConfig> {
    Unreachable::from_string(NO_TRANSPORT)
}

impl RaftNetworkFactory<TypeConfig> for NoTransport {
    type Network = NoTransport;

    async fn new_client(&mut self, target: u64, node: &openraft::BasicNode) -> Self::Network {
        tracing::warn!(target, addr = %node.addr, "{NO_TRANSPORT}");
        NoTransport
    }
}

impl RaftNetworkV2<TypeConfig> for NoTransport {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}
