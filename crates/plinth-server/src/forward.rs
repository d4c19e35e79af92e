//! Forwarding: in a cluster any node accepts any call. A node that is not the leader passes the
//! call, as it came (gRPC or HTTP/JSON, unary or streaming), to the leader it knows, and passes
//! the leader's answer back; the caller never needs to know which node leads.
//!
//! What stays on the node that received it: the peers' Raft messages, the node's own status,
//! health and metrics. A forwarded call carries `plinth-forwarded-by` and is never forwarded
//! again: a node that receives one and does not lead answers it itself, which for a write or a
//! linearizable read is `NOT_LEADER` with the leader's address. With no leader known, the node
//! answers itself too (`NOT_LEADER`, "no leader is known").

use crate::api::Api;
use crate::error::ApiError;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use plinth_core::ErrorCode;
use std::sync::{Arc, Mutex, PoisonError};
use tonic::transport::Channel;
use tower::ServiceExt as _;

/// Set on a call one node forwards to another, to the forwarding node's id.
pub const FORWARDED_BY: &str = "plinth-forwarded-by";

#[derive(Clone)]
pub(crate) struct Forwarder {
    api: Api,
    /// The connection to the leader last forwarded to, by address.
    leader: Arc<Mutex<Option<(String, Channel)>>>,
}

impl Forwarder {
    pub(crate) fn new(api: Api) -> Forwarder {
        Forwarder {
            api,
            leader: Arc::new(Mutex::new(None)),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut leader = self.leader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, channel)) = leader.as_ref()
            && cached == addr
        {
            return Ok(channel.clone());
        }
        let channel = self
            .api
            .node
            .member_channel(addr)
            .map_err(|e| format!("cannot reach the leader: {e}"))?;
        *leader = Some((addr.to_owned(), channel.clone()));
        Ok(channel)
    }
}

/// The leader a call is passed to.
pub(crate) struct Leader {
    me: u64,
    id: u64,
    addr: String,
}

impl Forwarder {
    /// The leader that must serve `request`, or `None` when this node serves it. The leader
    /// itself (every call, on a single node) stops at the cheap check.
    pub(crate) fn leader_to_serve(&self, request: &Request) -> Option<Leader> {
        if stays_here(request.uri().path()) || request.headers().contains_key(FORWARDED_BY) {
            return None;
        }
        let me = self.api.node.node_id();
        if self.api.node.leader_id().is_none_or(|leader| leader == me) {
            return None;
        }
        match self.api.node.leader() {
            Some((id, addr)) if id != me => Some(Leader { me, id, addr }),
            _ => None,
        }
    }

    /// Passes `request` to `leader` and its answer back.
    pub(crate) async fn proxy(&self, request: Request, leader: Leader) -> Response {
        proxy(self, request, leader.me, leader.id, &leader.addr).await
    }
}

fn stays_here(path: &str) -> bool {
    path.starts_with("/plinth.peer.")
        || path == "/plinth.v1.Maintenance/Status"
        || matches!(
            path,
            "/v1/maintenance/status" | "/metrics" | "/healthz" | "/readyz"
        )
}

async fn proxy(f: &Forwarder, mut request: Request, me: u64, leader: u64, addr: &str) -> Response {
    let grpc = is_grpc(&request);
    let channel = match f.channel(addr) {
        Ok(channel) => channel,
        Err(e) => return unavailable(grpc, e),
    };
    let headers = request.headers_mut();
    // Hop-by-hop headers describe the connection to this node, not the one to the leader.
    for name in [
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
    headers.insert(HeaderName::from_static(FORWARDED_BY), HeaderValue::from(me));
    *request.version_mut() = http::Version::HTTP_2;
    let request = request.map(tonic::body::Body::new);
    match channel.oneshot(request).await {
        Ok(response) if grpc => response.map(|body| {
            axum::body::Body::new(GrpcReply {
                inner: body,
                ended: false,
            })
        }),
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => {
            tracing::debug!(leader, addr, error = %e, "could not forward a call to the leader");
            unavailable(
                grpc,
                format!(
                    "this node is not the leader and could not reach the leader, node {leader} at {addr}: {e}"
                ),
            )
        }
    }
}

pub(crate) fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
}

fn unavailable(grpc: bool, message: String) -> Response {
    let error = ApiError::new(ErrorCode::Unavailable, "", message);
    if grpc {
        tonic::Status::from(error)
            .into_http::<tonic::body::Body>()
            .map(axum::body::Body::new)
    } else {
        error.into_response()
    }
}

/// A forwarded gRPC reply. If the leader's side breaks mid-reply (it died, the connection was
/// reset), the caller gets trailers saying `UNAVAILABLE`, the transient failure its retries and
/// watches resume from, instead of a reset stream, which gRPC reads as `INTERNAL`.
struct GrpcReply {
    inner: tonic::body::Body,
    ended: bool,
}

impl http_body::Body for GrpcReply {
    type Data = axum::body::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                tracing::debug!(error = %e, "a forwarded reply broke off");
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    HeaderValue::from_static("the connection to the leader broke; retry"),
                );
                std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
