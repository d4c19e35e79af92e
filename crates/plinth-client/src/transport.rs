//! Transport: the channel every generated client calls through — one lazily connected HTTP/2
//! channel per endpoint of the cluster.
//!
//! Calls go to the endpoint that answered last. Any node serves any call (a follower forwards it
//! to the leader), so the reasons to move are a node that cannot be reached or cannot serve: a
//! call that could not connect, or that a node refused with `NOT_LEADER` (it knows no leader,
//! or was removed), is sent to the next endpoint, since it was never proposed and is safe to
//! send again, whatever it does. A call that failed after it was sent, or was answered
//! `UNAVAILABLE`, or that its caller gave up on, is not resent (it may have been applied): the
//! caller gets the failure and the next call goes to the next endpoint. The helpers that loop (lock guards, consumers, workers, watches) retry such
//! failures themselves, and watches resume from the last revision they delivered.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use base64::Engine as _;
use futures::future::BoxFuture;
use plinth_proto::v1 as pb;
use prost::Message as _;

use crate::Code;
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt as _;

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: Vec<Channel>,
    /// The endpoint calls go to first.
    current: AtomicUsize,
}

impl Transport {
    /// `channels` must not be empty; calls go to `first` first.
    pub(crate) fn new(channels: Vec<Channel>, first: usize) -> Transport {
        assert!(!channels.is_empty(), "a transport needs an endpoint");
        Transport {
            inner: Arc::new(Inner {
                current: AtomicUsize::new(first % channels.len()),
                channels,
            }),
        }
    }
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each channel buffers its calls; readiness is checked per call below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let n = inner.channels.len();
            if n == 1 {
                return inner.channels[0]
                    .clone()
                    .oneshot(request)
                    .await
                    .map_err(Into::into);
            }
            // Every plinth call sends one request message, so the body is complete here and
            // can be sent again to another endpoint.
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let first = inner.current.load(Ordering::Relaxed);
            let mut last_error = None;
            let mut last_refusal = None;
            for i in 0..n {
                let at = (first + i) % n;
                let mut request =
                    http::Request::new(Body::new(http_body_util::Full::new(body.clone())));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                // Unless this endpoint answers well, the next call starts at the next one; that
                // holds too when the caller gives up on this call (its timeout drops us here).
                let mut advance = Advance {
                    inner: &inner,
                    to: Some((at + 1) % n),
                };
                match inner.channels[at].clone().oneshot(request).await {
                    Ok(response) => match refusal(&response) {
                        // Refused before it was proposed: safe to send to the next endpoint.
                        Some(Code::NotLeader) => last_refusal = Some(response),
                        Some(_) => return Ok(response),
                        None => {
                            advance.to = None;
                            inner.current.store(at, Ordering::Relaxed);
                            return Ok(response);
                        }
                    },
                    Err(e) if never_connected(&e) => last_error = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            match (last_refusal, last_error) {
                (Some(response), _) => Ok(response),
                (None, Some(e)) => Err(e.into()),
                (None, None) => Err("no endpoint answered".into()),
            }
        })
    }
}

/// Moves the transport's first endpoint on when dropped, unless told not to.
struct Advance<'a> {
    inner: &'a Inner,
    to: Option<usize>,
}

impl Drop for Advance<'_> {
    fn drop(&mut self) {
        if let Some(to) = self.to {
            self.inner.current.store(to, Ordering::Relaxed);
        }
    }
}

/// gRPC's `-bin` headers: standard base64, padded or not.
const BINARY_HEADER: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The code of a reply that says this node could not serve the call, read from the headers of
/// a trailers-only gRPC reply: `UNAVAILABLE`, or the `NOT_LEADER` its plinth detail names.
fn refusal(response: &http::Response<Body>) -> Option<Code> {
    let headers = response.headers();
    if headers.get("grpc-status")?.as_bytes() != b"14" {
        return None;
    }
    let detail = headers
        .get("grpc-status-details-bin")
        .and_then(|v| BINARY_HEADER.decode(v.as_bytes()).ok())
        .and_then(|bytes| pb::ErrorDetail::decode(bytes.as_slice()).ok());
    Some(match detail.and_then(|d| Code::try_from(d.code).ok()) {
        Some(Code::NotLeader) => Code::NotLeader,
        _ => Code::Unavailable,
    })
}

/// Whether the call failed before any of it reached a server: the connection could not be made
/// (refused, unreachable, or not made within the connect timeout).
fn never_connected(e: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}
