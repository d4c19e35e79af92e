//! The accept loop and each connection's life: a cap on connections open at once, with a clear
//! refusal past it; connections that send no request for a while are closed; and an accept
//! loop that outlives running out of file descriptors.
//!
//! A client that opens connections and sends nothing must not be able to take the server's
//! file descriptors: then no one else could connect, and the log could not open its next
//! segment. So a connection must complete its first request within
//! [`ServeOptions::first_request_timeout`], and is closed once no request has started on it for
//! [`ServeOptions::idle_timeout`]. Closing is hyper's graceful shutdown: a request in flight (a
//! watch stream) runs to its end; an HTTP/2 client is told with GOAWAY and opens a new
//! connection for its next call. The cap keeps a reserve of descriptors for storage and the
//! other members whatever the clients do.

use crate::error::ApiError;
use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use plinth_core::ErrorCode;
use plinth_proto::io::Unvectored;
use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::Service;

/// How a server treats its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Connections open at once; past it a new connection gets a refusal that says so.
    pub max_connections: usize,
    /// A connection on which no request has started for this long is closed.
    pub idle_timeout: Duration,
    /// A new connection must complete its first request (its headers) within this.
    pub first_request_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: MAX_CONNECTIONS_DEFAULT,
            idle_timeout: Duration::from_secs(300),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// Connections open at once unless set, as Redis's `maxclients`.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;

/// File descriptors kept for everything but client connections: log segments and snapshots,
/// the other members, the refusals themselves.
pub const RESERVED_DESCRIPTORS: usize = 256;

/// Connections past the cap being told so at once; beyond these, a connection is closed
/// unanswered.
const REFUSING_MAX: usize = 64;

/// How long a request body may send nothing while more of it is due (see [`Stalling`]): its own
/// setting, not the idle timeout, which an operator may set far lower to reap idle clients.
const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused connection has to send its request and read the refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// After an accept failed for want of descriptors, the loop waits this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` and serves each with `service` until `stop` flips to true;
/// then it stops accepting, asks every connection to finish (graceful shutdown) and returns
/// once they have.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let open = Arc::new(Semaphore::new(options.max_connections));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut last_exhaustion_log: Option<Instant> = None;
    // Every connection task holds a receiver; when all are gone, every connection has ended.
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                if out_of_descriptors(&e) {
                    // The connection waits in the backlog; try again shortly rather than spin.
                    if last_exhaustion_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(error = %e, "cannot accept connections: out of file descriptors; raise the limit (ulimit -n) or lower --max-connections");
                        last_exhaustion_log = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        // Replies go out at once: with Nagle's algorithm on, a reply written in several pieces
        // waits for the client's delayed ACK, about 40 ms on Linux.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            refuse(tcp, &refusing, options.max_connections);
            continue;
        };
        let service = service.clone();
        let options = options.clone();
        let stop = stop.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            serve_connection(tcp, service, &options, stop).await;
            drop(permit);
            drop(done);
        });
    }
    drop(done_rx);
    done_tx.closed().await;
}

/// Whether an accept failed because this process or the system has no descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE)
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// What each connection shares with its requests: when the last one started.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the start of the latest request; 0 before the first.
    last_request_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = (self.start.elapsed().as_millis() as u64).max(1);
        self.last_request_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle, given what has happened on it so far.
    fn idle_at(&self, options: &ServeOptions) -> Instant {
        match self.last_request_ms.load(Ordering::Relaxed) {
            0 => self.start + options.first_request_timeout,
            ms => self.start + Duration::from_millis(ms) + options.idle_timeout,
        }
    }
}

/// The service of one connection: marks each request's start, then hands it on.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Service<Request> for Tracked<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.activity.touch();
        self.inner.call(request)
    }
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take: a peer that
/// stopped answering (gone without a FIN, or hostile) is closed rather than held.
const PING_INTERVAL: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

fn builder(first_request_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(first_request_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

async fn serve_connection<S>(
    tcp: TcpStream,
    service: S,
    options: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_request_ms: AtomicU64::new(0),
    });
    let tracked = Tracked {
        inner: service,
        activity: Arc::clone(&activity),
    };
    let body_timeout = BODY_STALL_TIMEOUT;
    let hyper_service = TowerToHyperService::new(tower::ServiceExt::map_request(
        tracked,
        move |r: Request<hyper::body::Incoming>| {
            r.map(|body| axum::body::Body::new(Stalling::new(body, body_timeout)))
        },
    ));
    let builder = builder(options.first_request_timeout);
    // Small frames leave together (see `plinth_proto::io`).
    let io = TokioIo::new(Unvectored(tcp));
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, hyper_service));
    let mut closing = false;
    loop {
        let idle_at = activity.idle_at(options);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                // A request may have started since the deadline was read: look again.
                if activity.idle_at(options) <= Instant::now() {
                    tracing::debug!("closing a connection idle since its last request");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Tells a connection past the cap so: its request (HTTP or gRPC) is answered with
/// RESOURCE_EXHAUSTED naming the limit, then it is closed. Only a few at a time are told; the
/// rest are closed at once, so that refusing costs no more descriptors than it frees.
fn refuse(tcp: TcpStream, refusing: &Arc<AtomicUsize>, max_connections: usize) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= REFUSING_MAX {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = Arc::clone(refusing);
    tokio::spawn(async move {
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let error = ApiError::new(
                ErrorCode::ResourceExhausted,
                "",
                format!(
                    "the server has {max_connections} connections open, its limit (--max-connections); try again later"
                ),
            );
            let response = if crate::forward::is_grpc(&request) {
                tonic::Status::from(error)
                    .into_http::<tonic::body::Body>()
                    .map(axum::body::Body::new)
            } else {
                error.into_response()
            };
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let mut builder = builder(REFUSAL_TIMEOUT);
        builder.http1().keep_alive(false);
        let io = TokioIo::new(tcp);
        let conn = builder.serve_connection(io, TowerToHyperService::new(service));
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn).await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// A request body that fails once its client has sent nothing for `timeout` while more is
/// due: a body announced and never finished would otherwise hold its connection (and its place
/// under the cap) for ever, since closing an idle connection waits for the requests in it. The
/// timer is armed only while the body waits for bytes, so a body that is all there (most are)
/// costs no timer.
struct Stalling {
    body: hyper::body::Incoming,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Stalling {
    fn new(body: hyper::body::Incoming, timeout: Duration) -> Stalling {
        Stalling {
            body,
            timeout,
            sleep: None,
        }
    }
}

impl http_body::Body for Stalling {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<axum::body::Bytes>, Self::Error>>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
                    return Poll::Ready(Some(Err(format!(
                        "the request body stalled: nothing came for {timeout:?}"
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
