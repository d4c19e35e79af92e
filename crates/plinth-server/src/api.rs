//! Api: the one implementation of every call, shared by the gRPC services and the HTTP routes.

use crate::error::ApiError;
use crate::metrics::Metrics;
use plinth_core::{Applied, Call, State};
use plinth_node::{Node, NodeError};
use plinth_proto::v1 as pb;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Api {
    pub(crate) node: Node,
    /// Flips to true when the server shuts down, so that watch streams end and connections drain.
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Api {
    pub fn new(node: Node, shutdown: watch::Receiver<bool>) -> Api {
        Api {
            node,
            shutdown,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Ends `stream` once the server starts shutting down, so that open watches do not hold up
    /// the drain. One wait for the whole stream, not one per message.
    pub(crate) fn until_shutdown<S: futures::Stream>(
        &self,
        stream: S,
    ) -> futures::stream::TakeUntil<S, impl std::future::Future<Output = ()> + use<S>> {
        use futures::StreamExt as _;
        let mut shutdown = self.shutdown.clone();
        stream.take_until(async move {
            // The sender gone is a shutdown too.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
    }

    pub(crate) fn header(&self, revision: plinth_core::Revision) -> pb::ResponseHeader {
        pb::ResponseHeader {
            revision: revision.0,
            node_id: self.node.node_id(),
            term: self.node.term(),
        }
    }

    /// Proposes `command` and answers its output and the header of the revision it was served
    /// at; a deterministic refusal by the state machine becomes the caller's error.
    pub(crate) async fn call<C: Call>(
        &self,
        command: C,
    ) -> Result<(C::Output, pb::ResponseHeader), ApiError> {
        self.answer::<C>(self.node.propose(command.into()).await)
    }

    /// What a write of command type `C` that was submitted answered: its output, and the
    /// header at its revision.
    pub(crate) fn answer<C: Call>(
        &self,
        applied: Result<Applied, NodeError>,
    ) -> Result<(C::Output, pb::ResponseHeader), ApiError> {
        let Applied {
            revision, result, ..
        } = applied?;
        Ok((C::output(result?), self.header(revision)))
    }

    /// Runs a query on the state: linearizable unless `serializable`.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        serializable: bool,
        query: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<(T, pb::ResponseHeader), ApiError> {
        let (value, revision) = self
            .node
            .read(!serializable, move |state| (query(state), state.revision()))
            .await?;
        Ok((value, self.header(revision)))
    }
}

/// The wall clock in milliseconds, for answers that show time left (never for a decision: those
/// use the log clock inside the state machine).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replies of a streaming call (a watch, an observe), as every `Api` method answers them.
pub type ReplyStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, ApiError>> + Send>>;

/// A reply stream as a gRPC service sends it.
pub(crate) type GrpcStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

pub(crate) fn grpc_stream<T>(
    stream: impl futures::Stream<Item = Result<T, ApiError>> + Send + 'static,
) -> GrpcStream<T> {
    use futures::StreamExt as _;
    Box::pin(stream.map(|item| item.map_err(tonic::Status::from)))
}
