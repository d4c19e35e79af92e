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
use plinth_proto::v1::{
    cluster_server::ClusterServer, config_server::ConfigServer, election_server::ElectionServer,
    kv_server::KvServer, lease_server::LeaseServer, lock_server::LockServer,
    maintenance_server::MaintenanceServer, queue_server::QueueServer,
    registry_server::RegistryServer, scheduler_server::SchedulerServer,
};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::server::NamedService;
use tower::Service;

/// Cheap to clone (hyper clones the service for every call).
#[derive(Clone)]
pub(crate) struct App {
    inner: Arc<Services>,
}

pub(crate) struct Services {
    pub(crate) kv: KvServer<Api>,
    pub(crate) lease: LeaseServer<Api>,
    pub(crate) lock: LockServer<Api>,
    pub(crate) election: ElectionServer<Api>,
    pub(crate) queue: QueueServer<Api>,
    pub(crate) scheduler: SchedulerServer<Api>,
    pub(crate) config: ConfigServer<Api>,
    pub(crate) registry: RegistryServer<Api>,
    pub(crate) maintenance: MaintenanceServer<Api>,
    pub(crate) cluster: ClusterServer<Api>,
    pub(crate) peer: PeerServer<PeerService>,
    pub(crate) http: axum::Router,
    pub(crate) forwarder: Forwarder,
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
        // "/plinth.v1.Kv/Put" → "plinth.v1.Kv"
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .map_or("", |(service, _)| service);
        macro_rules! by_name {
            ($($field:ident: $server:ty),* $(,)?) => {
                $(if service == <$server as NamedService>::NAME {
                    return Reply::Grpc(services.$field.clone().call(request));
                })*
            };
        }
        by_name!(
            kv: KvServer<Api>,
            lease: LeaseServer<Api>,
            lock: LockServer<Api>,
            election: ElectionServer<Api>,
            queue: QueueServer<Api>,
            scheduler: SchedulerServer<Api>,
            config: ConfigServer<Api>,
            registry: RegistryServer<Api>,
            maintenance: MaintenanceServer<Api>,
            cluster: ClusterServer<Api>,
            peer: PeerServer<PeerService>,
        );
        if crate::forward::is_grpc(&request) {
            let status = tonic::Status::unimplemented(format!("no gRPC service {service} here"));
            let response = status.into_http::<tonic::body::Body>();
            return Reply::Grpc(Box::pin(std::future::ready(Ok(response))));
        }
        Reply::Other(Box::pin(services.http.clone().call(request)))
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
