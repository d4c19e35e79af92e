//! plinth's front end: gRPC (tonic) and HTTP/JSON (axum) on one port, both calling one [`Api`],
//! beside the replicas' internal peer service; in a cluster a follower forwards calls to the
//! leader (see `forward`).
//!
//! Architecture invariant: the server validates, maps each call to a command or a read, and
//! renders the answer; it never decides a primitive's rule (that is plinth-core's) and never
//! touches storage (that is plinth-node's).

/// Implements a gRPC service on [`Api`]: each call hands its request to the `Api` method named
/// after `=>`; the streaming calls, in the braces after the service, wrap the stream that method
/// answers. The one shape of every service, so the services stay thin shells around `Api`.
macro_rules! grpc_service {
    (
        $service:path { $($smethod:ident($sreq:ty) -> $stype:ident($sresp:ty) => $scall:ident;)* }
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
    };
}

mod api;
mod app;
mod cluster;
mod config;
mod convert;
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
mod unvectored;

pub use api::Api;
pub use error::ApiError;
pub use forward::FORWARDED_BY;
pub use http::BODY_BYTES_MAX;

use app::{App, Services};
use axum::ServiceExt as _;
use axum::serve::ListenerExt as _;
use plinth_node::Node;
use plinth_proto::v1::{
    cluster_server::ClusterServer, config_server::ConfigServer, election_server::ElectionServer,
    kv_server::KvServer, lease_server::LeaseServer, lock_server::LockServer,
    maintenance_server::MaintenanceServer, queue_server::QueueServer,
    registry_server::RegistryServer, scheduler_server::SchedulerServer,
};
use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` resolves, then ends open watches and drains
/// connections.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = Api::new(node, stop_rx);
    let app = App::new(Services {
        kv: KvServer::new(api.clone()),
        lease: LeaseServer::new(api.clone()),
        lock: LockServer::new(api.clone()),
        election: ElectionServer::new(api.clone()),
        // A receive can carry 100 bodies of 1 MiB.
        queue: QueueServer::new(api.clone())
            .max_decoding_message_size(BULK_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        scheduler: SchedulerServer::new(api.clone()),
        // A snapshot or a watch message can carry a whole 1 MiB config, or many instances.
        config: ConfigServer::new(api.clone())
            .max_decoding_message_size(BULK_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        registry: RegistryServer::new(api.clone())
            .max_decoding_message_size(BULK_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        maintenance: MaintenanceServer::new(api.clone()),
        cluster: ClusterServer::new(api.clone()),
        peer: api.node.peer_service(),
        forwarder: forward::Forwarder::new(api.clone()),
        http: http::router(api),
    });
    let mut stopping = stop_tx.subscribe();
    // Replies go out at once: with Nagle's algorithm on, a reply written in several pieces
    // waits for the client's delayed ACK, about 40 ms on Linux.
    // Small frames leave together (see `unvectored`).
    let listener = unvectored::UnvectoredListener(listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    }));
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    // A client that stops reading must not hold the shutdown hostage: after the signal,
    // connections get DRAIN_TIMEOUT to finish, then the server stops anyway.
    tokio::select! {
        result = server => result,
        _ = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("connections still open {DRAIN_TIMEOUT:?} after the shutdown signal; closing them");
            Ok(())
        }
    }
}

/// The largest message on the wire for the calls that carry many bodies at once: a full queue
/// receive (100 bodies of 1 MiB), a batch send, a whole config, every instance of a service.
pub const BULK_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
