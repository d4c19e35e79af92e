//! plinth's front end: gRPC (tonic) and HTTP/JSON (axum) on one port, both calling one [`Api`],
//! beside the replicas' internal peer service; in a cluster a follower forwards calls to the
//! leader (see `forward`).
//!
//! Architecture invariant: the server validates, maps each call to a command or a read, and
//! renders the answer; it never decides a primitive's rule (that is plinth-core's) and never
//! touches storage (that is plinth-node's).

/// Declares one service of the API, once: from it come the gRPC service (tonic's trait on
/// [`Api`], each call handing its request to the `Api` method named after `=>`), the HTTP/JSON
/// routes (`POST /v1/<prefix>/<method>`, the request as JSON; a streaming call as server-sent
/// events named after `sse`, when it has one), and the server the port dispatches to by the
/// service's name (`server`, with the message limits every service has). The streaming calls
/// come first, in braces; then the unary calls. `app::services!` lists the services.
macro_rules! service {
    (
        $service:path, $server:ident, $prefix:literal {
            $($smethod:ident($sreq:ty) -> $stype:ident($sresp:ty) => $scall:ident $(, sse $event:literal)?;)*
        }
        $($method:ident($request:ty) -> $response:ty => $call:ident;)*
    ) => {
        #[tonic::async_trait]
        impl $service for crate::api::Api {
            $(
                type $stype = crate::api::GrpcStream<$sresp>;

                async fn $smethod(
                    &self,
                    r: tonic::Request<$sreq>,
                ) -> Result<tonic::Response<Self::$stype>, tonic::Status> {
                    let stream = self.$scall(r.into_inner()).await?;
                    Ok(tonic::Response::new(crate::api::grpc_stream(stream)))
                }
            )*
            $(
                async fn $method(
                    &self,
                    r: tonic::Request<$request>,
                ) -> Result<tonic::Response<$response>, tonic::Status> {
                    Ok(tonic::Response::new(self.$call(r.into_inner()).await?))
                }
            )*
        }

        /// The gRPC server of this service, as the port dispatches to it.
        pub(crate) type Server = $server<crate::api::Api>;

        pub(crate) fn server(api: crate::api::Api) -> Server {
            $server::new(api)
                .max_decoding_message_size(crate::REQUEST_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(crate::BULK_MESSAGE_BYTES_MAX)
        }

        /// This service's HTTP/JSON routes.
        pub(crate) fn routes(router: axum::Router<crate::api::Api>) -> axum::Router<crate::api::Api> {
            router
            $(
                .route(
                    concat!("/v1/", $prefix, "/", stringify!($method)),
                    crate::http::unary(|api: crate::api::Api, r: $request| async move { api.$call(r).await }),
                )
            )*
            $($(
                .route(
                    concat!("/v1/", $prefix, "/", stringify!($smethod)),
                    crate::http::stream($event, |api: crate::api::Api, r: $sreq| async move { api.$scall(r).await }),
                )
            )?)*
        }
    };
}

mod api;
mod app;
mod cluster;
mod config;
mod connections;
mod convert;
mod election;
mod error;
mod forward;
mod http;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod metrics;
mod queue;
mod registry;
mod schedule;

pub use api::Api;
pub use connections::{MAX_CONNECTIONS_DEFAULT, RESERVED_DESCRIPTORS, ServeOptions};
pub use error::ApiError;
pub use forward::FORWARDED_BY;
pub use http::BODY_BYTES_MAX;

use app::{App, Services};
use plinth_node::Node;
use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` resolves, then ends open watches and drains
/// connections (for at most `DRAIN_TIMEOUT`).
pub async fn serve(
    node: Node,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = Api::new(node, stop_rx.clone());
    // Every request may be as large as a command (a txn of many values, a batch of bodies) and
    // no larger, each service's `server()` says; a larger one is refused as it arrives.
    let app = App::new(Services::new(api));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stopping = stop_rx.clone();
    let server = connections::serve(listener, app, options, stop_rx);
    // A client that stops reading must not hold the shutdown hostage: after the signal,
    // connections get DRAIN_TIMEOUT to finish, then the server stops anyway.
    tokio::select! {
        () = server => Ok(()),
        _ = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("connections still open {DRAIN_TIMEOUT:?} after the shutdown signal; closing them");
            Ok(())
        }
    }
}

/// The largest reply on the wire: a full queue receive (100 bodies of 1 MiB), a whole config,
/// every instance of a service.
pub const BULK_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The largest request message: a command of the most bytes a command may have
/// (`limits::COMMAND_BYTES_MAX`) and room for its framing, so that core's check, which names
/// the limit, is what refuses a request just over it.
pub const REQUEST_MESSAGE_BYTES_MAX: usize = plinth_core::limits::COMMAND_BYTES_MAX + (1 << 20);

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
