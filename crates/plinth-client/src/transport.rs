//! Transport: the channel every generated client calls through — one lazily connected HTTP/2
//! channel per endpoint of the cluster.
//!
//! Calls go to the endpoint that answered last. Any node serves any call (a follower forwards it
//! to the leader), so the only reason to move is a node that cannot be reached: a call that
//! could not connect is sent to the next endpoint, and since nothing of it reached a server it
//! is safe to send again, whatever it does. A call that failed after it was sent is not resent
//! (it may have been applied); the caller gets `UNAVAILABLE` and the next call goes to the next
//! endpoint. The helpers that loop (lock guards, consumers, workers, watches) retry such
//! failures themselves, and watches resume from the last revision they delivered.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
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
    /// `channels` must not be empty.
    pub(crate) fn new(channels: Vec<Channel>) -> Transport {
        assert!(!channels.is_empty(), "a transport needs an endpoint");
        Transport {
            inner: Arc::new(Inner {
                channels,
                current: AtomicUsize::new(0),
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
            let mut last = None;
            for i in 0..n {
                let at = (first + i) % n;
                let mut request =
                    http::Request::new(Body::new(http_body_util::Full::new(body.clone())));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                match inner.channels[at].clone().oneshot(request).await {
                    Ok(response) => {
                        inner.current.store(at, Ordering::Relaxed);
                        return Ok(response);
                    }
                    Err(e) if never_connected(&e) => last = Some(e),
                    Err(e) => {
                        inner.current.store((at + 1) % n, Ordering::Relaxed);
                        return Err(e.into());
                    }
                }
            }
            inner.current.store((first + 1) % n, Ordering::Relaxed);
            Err(last.map_or_else(|| "no endpoint answered".into(), Into::into))
        })
    }
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
