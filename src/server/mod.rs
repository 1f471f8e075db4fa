//! The client-facing gRPC server: KV, Cluster and Maintenance, plus `grpc.health.v1`
//! and server reflection (v1 and v1alpha) on the same port, so grpcurl and
//! any gRPC client work without the proto files.

pub mod cluster;
pub mod error_info;
pub mod incoming;
pub mod kv;
pub mod maintenance;
mod members;
pub mod metered;
mod oversized;
pub mod validate;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::node::NodeHandle;
use crate::proto::kv::cluster_server::ClusterServer;
use crate::proto::kv::kv_server::KvServer;
use crate::proto::kv::maintenance_server::MaintenanceServer;
pub use cluster::{ClusterService, DirectoryEntry, PeerDirectory};
pub use kv::KvService;
pub use validate::Limits;

/// The encoded descriptors of the client API, served by reflection.
pub use kvstore_proto::FILE_DESCRIPTOR_SET;

/// The health service name of the KV API: SERVING when the node knows a
/// leader and has applied close to the commit index (readiness).
pub const KV_SERVICE_NAME: &str = "kvstore.v1.KV";
/// A health service name that is SERVING whenever the process serves at all
/// (liveness and start-up probes): an election or a quorum loss must not get
/// pods restarted.
pub const LIVENESS_SERVICE_NAME: &str = "kvstore.liveness";

/// A node is ready when it has applied to within this many revisions of
/// the commit index (and knows a leader).
pub const DEFAULT_READY_LAG: u64 = 100;

/// How the client server behaves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Key and value limits.
    pub limits: Limits,
    /// The time limit of one request.
    pub request_timeout: Duration,
    /// A node is ready (SERVING) when it knows a leader and has applied to
    /// within this many revisions of the commit index.
    pub ready_lag: u64,
    /// Discovery's view of the peers, for the status.
    pub directory: Option<Arc<dyn PeerDirectory>>,
    /// The client port every pod listens on (for peers' client addresses).
    pub client_port: u16,
    /// TLS on the client port (with a client CA: client certificates
    /// required). `None`: plaintext.
    pub tls: Option<crate::tls::ServerTls>,
    /// A client connection older than this is asked to go (HTTP/2
    /// GOAWAY): its client makes new calls on a new connection, so that
    /// clients spread over the pods again after one comes back. Calls in
    /// flight, watches among them, finish on the old one. (No grace limit:
    /// tonic 0.14 with one skips the GOAWAY and cuts the connection at age
    /// plus grace.) `None`: connections live as long as their clients.
    pub max_connection_age: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(5),
            ready_lag: DEFAULT_READY_LAG,
            directory: None,
            client_port: 7379,
            tls: None,
            max_connection_age: None,
        }
    }
}

/// Serves the client API on `listener` until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish (watch streams end when the node
/// starts stopping) and returns.
pub async fn serve_clients(
    listener: TcpListener,
    node: NodeHandle,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // tonic-health starts the server-wide name "" as SERVING: a pod that
    // just started (on an empty volume, say) would look ready until the
    // tracker's first round. Not ready until the tracker says so.
    for name in ["", KV_SERVICE_NAME] {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status(LIVENESS_SERVICE_NAME, ServingStatus::Serving)
        .await;
    tokio::spawn(track_health(reporter, node.clone(), opts.ready_lag));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptors compiled into the binary are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the descriptors compiled into the binary are valid");
    let limits = opts.limits;
    let kv = KvServer::new(
        KvService::new(node.clone(), limits, opts.request_timeout)
            .with_directory(opts.directory.clone(), opts.client_port),
    )
    .max_decoding_message_size(limits.max_request_bytes())
    .max_encoding_message_size(limits.max_response_bytes());
    let cluster = ClusterServer::new(ClusterService::new(
        node.clone(),
        opts.directory.clone(),
        opts.request_timeout,
        opts.ready_lag,
        opts.client_port,
    ));
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(
        node.clone(),
        opts.request_timeout,
    ));
    let mut server = Server::builder();
    if let Some(age) = opts.max_connection_age {
        server = server.max_connection_age(age);
    }
    server
        // Outermost, so that it counts the code the client sees (after the
        // oversized rewrite).
        .layer(metered::MeteredLayer::new(node.metrics().grpc.clone()))
        .layer(oversized::layer(limits.max_request_bytes()))
        .http2_max_pending_accept_reset_streams(Some(incoming::MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(kv)
        .add_service(cluster)
        .add_service(maintenance)
        .serve_with_incoming_shutdown(crate::tls::incoming::accepted(listener, opts.tls), shutdown)
        .await
}

/// Keeps the health service in step with the node: SERVING when it knows a
/// leader and has applied close to the commit index, NOT_SERVING otherwise
/// and once it starts stopping.
async fn track_health(reporter: HealthReporter, node: NodeHandle, ready_lag: u64) {
    let mut status = node.status_changes();
    let mut applied = node.applied_changes();
    let mut stopping = node.stopping();
    let mut last = None;
    loop {
        let serving = if node.is_ready(ready_lag) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(serving) {
            reporter.set_service_status("", serving).await;
            reporter.set_service_status(KV_SERVICE_NAME, serving).await;
            tracing::info!(serving = %serving, "health changed");
            last = Some(serving);
        }
        if *stopping.borrow() {
            return;
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { return },
            r = applied.changed() => if r.is_err() { return },
            _ = stopping.changed() => {}
        }
    }
}
