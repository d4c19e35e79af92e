//! Transport: the channel every generated client calls through — one lazily connected HTTP/2
//! channel per endpoint of the cluster.
//!
//! Calls go to the endpoint that answered last. Any node serves any call (a follower forwards it
//! to the leader), so the reasons to move are a node that cannot be reached or cannot serve: a
//! call that could not connect, or that a node refused with `NOT_LEADER` (it knows no leader,
//! or was removed), is sent to the next endpoint, since it was never proposed and is safe to
//! send again, whatever it does. A read (a call that changes nothing, see [`is_read`]) is also
//! resent after it failed once sent or was answered `UNAVAILABLE`, round the endpoints with a
//! short backoff for as long as a failover takes: answering it twice does no harm. A write that
//! failed after it was sent, or was answered `UNAVAILABLE`, or that its caller gave up on, is
//! not resent (it may have been applied): the caller gets the failure and the next call goes to
//! the next endpoint. The helpers that loop (lock guards, consumers, workers, watches) retry
//! such failures themselves, and watches resume from the last revision they delivered.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use plinth_proto::v1 as pb;
use prost::Message as _;

use crate::Code;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use plinth_proto::io::Unvectored;
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt as _;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a read keeps going round the endpoints, in pauses between rounds: an election
/// takes 150–300 ms, and a leader killed mid-call is noticed within a few seconds.
const READ_RETRY_FOR: Duration = Duration::from_secs(5);
const READ_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const READ_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The unary calls that change nothing, by gRPC path: safe to answer twice. (Status is left
/// out: it describes the node that answers.)
const READS: &[&str] = &[
    "/plinth.v1.Kv/Get",
    "/plinth.v1.Kv/Range",
    "/plinth.v1.Lease/TimeToLive",
    "/plinth.v1.Lease/List",
    "/plinth.v1.Lock/Get",
    "/plinth.v1.Lock/CheckFence",
    "/plinth.v1.Election/Leader",
    "/plinth.v1.Queue/List",
    "/plinth.v1.Queue/Stats",
    "/plinth.v1.Scheduler/Get",
    "/plinth.v1.Scheduler/List",
    "/plinth.v1.Scheduler/Runs",
    "/plinth.v1.Config/Get",
    "/plinth.v1.Config/History",
    "/plinth.v1.Config/GetSchema",
    "/plinth.v1.Config/List",
    "/plinth.v1.Registry/Resolve",
    "/plinth.v1.Registry/Services",
    "/plinth.v1.Cluster/Status",
];

/// Opens the TCP connection under a channel: with `TCP_NODELAY`, and [`Unvectored`] so that
/// the requests in flight on it leave together (see `plinth_proto::io`). tonic applies the
/// endpoint's connect timeout around it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connector;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Unvectored<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("endpoint {uri} names no host"),
                    )
                })?
                // An IPv6 address comes in brackets.
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(Unvectored(tcp)))
        })
    }
}

/// Whether the call at `path` changes nothing.
fn is_read(path: &str) -> bool {
    READS.contains(&path)
}

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
            let read = is_read(parts.uri.path());
            let first = inner.current.load(Ordering::Relaxed);
            let (mut backoff, mut waited) = (READ_BACKOFF_FIRST, Duration::ZERO);
            let mut last_error: Option<BoxError> = None;
            let mut last_refusal = None;
            for i in 0.. {
                if i > 0 && i % n == 0 {
                    // Every endpoint failed. A write stops here; a read waits out the failover.
                    if !read || waited >= READ_RETRY_FOR {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    waited += backoff;
                    backoff = (backoff * 2).min(READ_BACKOFF_MAX);
                }
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
                        // A read may be answered twice.
                        Some(_) if read => last_refusal = Some(response),
                        Some(_) => return Ok(response),
                        None if read => match settled(response).await {
                            // The node answered, then could not finish (a forwarded call whose
                            // leader went away ends UNAVAILABLE in its trailers).
                            Ok(Settled::Unavailable(response)) => last_refusal = Some(response),
                            Ok(Settled::Answered(response)) => {
                                advance.to = None;
                                inner.current.store(at, Ordering::Relaxed);
                                return Ok(response);
                            }
                            Err(e) => last_error = Some(e),
                        },
                        None => {
                            advance.to = None;
                            inner.current.store(at, Ordering::Relaxed);
                            return Ok(response);
                        }
                    },
                    Err(e) if read || never_connected(&e) => last_error = Some(e.into()),
                    Err(e) => return Err(e.into()),
                }
            }
            match (last_refusal, last_error) {
                (Some(response), _) => Ok(response),
                (None, Some(e)) => Err(e),
                (None, None) => Err("no endpoint answered".into()),
            }
        })
    }
}

/// A read's reply, read to its end.
enum Settled {
    Answered(http::Response<Body>),
    Unavailable(http::Response<Body>),
}

/// Reads a unary reply to its end (it is one message) and says whether its trailers end it
/// `UNAVAILABLE`; the reply is rebuilt, trailers and all, to be handed on.
async fn settled(response: http::Response<Body>) -> Result<Settled, BoxError> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let unavailable = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|status| status.as_bytes() == b"14");
    let mut frames = vec![Ok::<_, std::convert::Infallible>(http_body::Frame::data(
        collected.to_bytes(),
    ))];
    frames.extend(trailers.map(|t| Ok(http_body::Frame::trailers(t))));
    let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    )));
    let response = http::Response::from_parts(parts, body);
    Ok(if unavailable {
        Settled::Unavailable(response)
    } else {
        Settled::Answered(response)
    })
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

#[cfg(test)]
mod tests {
    #[test]
    fn reads_are_the_calls_that_change_nothing() {
        assert!(super::is_read("/plinth.v1.Kv/Get"));
        assert!(super::is_read("/plinth.v1.Scheduler/Runs"));
        assert!(!super::is_read("/plinth.v1.Kv/Put"));
        assert!(!super::is_read("/plinth.v1.Queue/Receive"));
        assert!(!super::is_read("/plinth.v1.Maintenance/Status"));
    }
}
