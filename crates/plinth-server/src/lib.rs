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
mod connections;
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

pub use api::Api;
pub use connections::{MAX_CONNECTIONS_DEFAULT, RESERVED_DESCRIPTORS, ServeOptions};
pub use error::ApiError;
pub use forward::FORWARDED_BY;
pub use http::BODY_BYTES_MAX;

use app::{App, Services};
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
    // no larger; a larger one is refused as it arrives, before it is read whole.
    let app = App::new(Services {
        kv: KvServer::new(api.clone()).max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX),
        lease: LeaseServer::new(api.clone()).max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX),
        lock: LockServer::new(api.clone()).max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX),
        election: ElectionServer::new(api.clone())
            .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX),
        // A receive can carry 100 bodies of 1 MiB.
        queue: QueueServer::new(api.clone())
            .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        scheduler: SchedulerServer::new(api.clone())
            .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX),
        // A snapshot or a watch message can carry a whole 1 MiB config, or many instances.
        config: ConfigServer::new(api.clone())
            .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        registry: RegistryServer::new(api.clone())
            .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(BULK_MESSAGE_BYTES_MAX),
        maintenance: MaintenanceServer::new(api.clone()),
        cluster: ClusterServer::new(api.clone()),
        peer: api.node.peer_service(),
        forwarder: forward::Forwarder::new(api.clone()),
        http: http::router(api),
    });
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

/// The largest reply on the wire for the calls that carry many bodies at once: a full queue
/// receive (100 bodies of 1 MiB), a whole config, every instance of a service.
pub const BULK_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The largest request message: a command of the most bytes a command may have
/// (`limits::COMMAND_BYTES_MAX`) and room for its framing, so that core's check, which names
/// the limit, is what refuses a request just over it.
pub const REQUEST_MESSAGE_BYTES_MAX: usize = plinth_core::limits::COMMAND_BYTES_MAX + (1 << 20);

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
