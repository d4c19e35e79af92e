//! The one service in front of the port. A call the leader must serve goes to the leader (see
//! `forward`); a gRPC call goes by its service name straight to tonic's server for that service;
//! everything else goes to the HTTP/JSON router.
//!
//! gRPC does not pass through an axum router: a put is the hot path, and a router in front of it
//! cloned a boxed service and boxed a future per layer, per call (see docs/benchmarks.md).

use crate::api::Api;
use crate::error::ApiError;
use crate::forward::Forwarder;
use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use plinth_node::{PeerServer, PeerService};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::server::NamedService;
use tower::Service;

/// The services of the API, each declared once in its own module (`service!`): from this list
/// come their gRPC servers, the dispatch by service name, and the HTTP router.
macro_rules! services {
    ($($name:ident),* $(,)?) => {
        pub(crate) struct Services {
            $(pub(crate) $name: crate::$name::Server,)*
            pub(crate) peer: PeerServer<PeerService>,
            pub(crate) http: axum::Router,
            pub(crate) forwarder: Forwarder,
        }

        impl Services {
            pub(crate) fn new(api: Api) -> Services {
                Services {
                    $($name: crate::$name::server(api.clone()),)*
                    peer: api.node.peer_service(),
                    forwarder: Forwarder::new(api.clone()),
                    http: crate::http::router(api, |router| {
                        $(let router = crate::$name::routes(router);)*
                        router
                    }),
                }
            }

            /// Calls the gRPC server of the service `request` names, or the HTTP router.
            fn dispatch(&self, request: Request) -> Reply {
                let service = service_name(&request);
                $(if service == <crate::$name::Server as NamedService>::NAME {
                    return Reply::Grpc(self.$name.clone().call(request));
                })*
                if service == <PeerServer<PeerService> as NamedService>::NAME {
                    return Reply::Grpc(self.peer.clone().call(request));
                }
                if crate::forward::is_grpc(&request) {
                    let status =
                        tonic::Status::unimplemented(format!("no gRPC service {service} here"));
                    let response = status.into_http::<tonic::body::Body>();
                    return Reply::Grpc(Box::pin(std::future::ready(Ok(response))));
                }
                Reply::Other(Box::pin(self.http.clone().call(request)))
            }
        }
    };
}

services!(
    kv,
    lease,
    lock,
    election,
    queue,
    schedule,
    config,
    registry,
    maintenance,
    cluster
);

/// The gRPC service a request names: "/plinth.v1.Kv/Put" → "plinth.v1.Kv".
fn service_name(request: &Request) -> &str {
    request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .map_or("", |(service, _)| service)
}

/// Cheap to clone (hyper clones the service for every call).
#[derive(Clone)]
pub(crate) struct App {
    inner: Arc<Services>,
}

impl App {
    pub(crate) fn new(services: Services) -> App {
        App {
            inner: Arc::new(services),
        }
    }
}

/// The answer to one call: a gRPC service's future, or a boxed one for the rest.
pub(crate) enum Reply {
    Grpc(BoxFuture<'static, Result<http::Response<tonic::body::Body>, Infallible>>),
    Other(BoxFuture<'static, Result<Response, Infallible>>),
}

impl Future for Reply {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Reply::Grpc(call) => call
                .as_mut()
                .poll(cx)
                .map_ok(|response| contract_status(response).map(axum::body::Body::new)),
            Reply::Other(call) => call.as_mut().poll(cx),
        }
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Reply {
        let services = &self.inner;
        if let Some(leader) = services.forwarder.leader_to_serve(&request) {
            let forwarder = services.forwarder.clone();
            return Reply::Other(Box::pin(async move {
                Ok(forwarder.proxy(request, leader).await)
            }));
        }
        services.dispatch(request)
    }
}

/// A gRPC error that tonic's own machinery answered before the call reached [`Api`] (it carries
/// no `ErrorDetail`), given the contract's code and a sentence with the limit: a request message
/// over the size limit is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`), and one that is not
/// valid protobuf is `INVALID_ARGUMENT` (tonic says `INTERNAL`, which a client could take for
/// the server's fault). Such errors come before any reply message, so in the headers.
fn contract_status(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers();
    if !headers.contains_key("grpc-status") || headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    let message = status.message();
    let error = match status.code() {
        tonic::Code::OutOfRange if message.contains("message length too large") => {
            let numbers: Vec<u64> = message
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            let text = match numbers.as_slice() {
                [found, limit] => format!(
                    "request message is {found} bytes; the limit for this call is {limit} bytes"
                ),
                _ => format!("request message is over this call's size limit ({message})"),
            };
            ApiError::new(plinth_core::ErrorCode::ResourceExhausted, "body", text)
        }
        tonic::Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            ApiError::invalid(
                "body",
                format!("request message is not this call's protobuf message: {message}"),
            )
        }
        _ => return response,
    };
    tonic::Status::from(error).into_http()
}
