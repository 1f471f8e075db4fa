//! `kvstore serve`: one node, as a StatefulSet pod runs it.
//!
//! Shutdown follows mini-redis: on SIGTERM or SIGINT the node stops taking
//! new work (health turns NOT_SERVING, watch streams end), the gRPC server
//! stops accepting and lets in-flight requests finish, then the replication
//! and apply threads make everything durable, and the process exits 0.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::ServeArgs;
use crate::desired::ReplicaSource;
use crate::discovery::{
    parse_dns_server, Discovery, DiscoveryConfig, DiscoveryError, NameTemplate, NameVars,
};
use crate::identity::PodName;
use crate::node::space::SpacePolicy;
use crate::node::{Node, NodeConfig, NodeHandle, NodeInbox, Peers};
use crate::raft::Role;
use crate::server::{serve_clients, PeerDirectory, ServeOptions};
use crate::tls::identity::PeerNames;
use crate::transport::{serve_peers, GrpcPeers, PeerTls};

/// Runs `kvstore serve` to completion and returns the process exit code.
pub fn run(args: ServeArgs) -> ExitCode {
    if let Err(e) = args.limits().check() {
        eprintln!("kvstore: {e}");
        return ExitCode::from(2);
    }
    let name = match PodName::parse(&args.node_name()) {
        Ok(name) => name,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        crate::logging::init(&name.to_string(), args.log.log_format, &args.log.log_level)
    {
        eprintln!("kvstore: {e}");
        return ExitCode::from(2);
    }
    let runtime = match super::runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let span = tracing::info_span!("node", ordinal = name.ordinal);
    runtime.block_on(serve(args, name).instrument(span))
}

async fn serve(args: ServeArgs, name: PodName) -> ExitCode {
    match Running::start(&args, name).await {
        Ok(running) => running.run_to_end(&args).await,
        Err(code) => code,
    }
}

/// Binds and serves the ops port, if `--ops-listen` asks for one, until
/// `stop` (after the node has stopped, so probes see it stopping).
async fn spawn_ops(
    args: &ServeArgs,
    handle: &NodeHandle,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), ExitCode> {
    let Some(addr) = args.ops_listen else {
        return Ok(());
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| cannot_start(&format!("cannot listen on {addr} (ops): {e}"), 1))?;
    let bound = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(ops = %bound, "ops port: /healthz /readyz /metrics");
    let server = crate::ops::serve_ops(
        listener,
        handle.clone(),
        crate::server::DEFAULT_READY_LAG,
        stop.clone().cancelled_owned(),
    );
    tasks.spawn(logging_failure("ops server", server).in_current_span());
    Ok(())
}

/// The TLS of both ports, from the flags.
struct PortsTls {
    client: Option<crate::tls::ServerTls>,
    peer_server: Option<PeerTls>,
    peer_client: Option<crate::tls::ClientTls>,
}

impl PortsTls {
    fn load(args: &ServeArgs, discovery: &Arc<Discovery>, me: u32) -> Result<PortsTls, String> {
        let client = args
            .tls
            .client_files()
            .map(crate::tls::server)
            .transpose()
            .map_err(|e| format!("client port TLS: {e}"))?;
        let Some(files) = args.tls.peer_files() else {
            return Ok(PortsTls {
                client,
                peer_server: None,
                peer_client: None,
            });
        };
        let lookup = discovery.clone();
        let names = PeerNames::new(move |n| lookup.peer_name(n));
        // A certificate that does not name this member would be refused by
        // every peer: say so now, not in their logs.
        let own = crate::tls::leaf(&files.cert).map_err(|e| format!("peer TLS: {e}"))?;
        names
            .check(Some(&own), me)
            .map_err(|e| format!("peer TLS, {}: {e}", files.cert.display()))?;
        let server = crate::tls::server(files.clone()).map_err(|e| format!("peer TLS: {e}"))?;
        let peer_client = crate::tls::client(files).map_err(|e| format!("peer TLS: {e}"))?;
        tracing::info!(name = %names.name(me), "peer port: mutual TLS, each member as its certificate names it");
        Ok(PortsTls {
            client,
            peer_server: Some(PeerTls { server, names }),
            peer_client: Some(peer_client),
        })
    }
}

/// The client server's options from the flags.
fn client_options(
    args: &ServeArgs,
    discovery: Arc<Discovery>,
    tls: Option<crate::tls::ServerTls>,
) -> ServeOptions {
    ServeOptions {
        limits: args.limits(),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        directory: Some(discovery as Arc<dyn PeerDirectory>),
        client_port: args.listen.port(),
        tls,
        max_connection_age: (args.max_connection_age_s > 0)
            .then(|| Duration::from_secs(args.max_connection_age_s)),
        ..ServeOptions::default()
    }
}

/// Runs `server` and logs how it failed, if it did.
async fn logging_failure<E: std::fmt::Display>(
    what: &'static str,
    server: impl Future<Output = Result<(), E>>,
) {
    if let Err(e) = server.await {
        tracing::error!("{what}: {e}");
    }
}

/// How long `serve` waits, after the node stopped, for the tasks it
/// spawned to end before it exits anyway.
const TASKS_GRACE: Duration = Duration::from_secs(10);

/// Everything `serve` started, so that it can stop each part in order and
/// wait for every task it spawned (mini-redis's shutdown), none detached.
struct Running {
    node: Node,
    handle: NodeHandle,
    /// Every task `serve` spawned: the client and peer servers, the space
    /// monitor and discovery's refreshes.
    tasks: TaskTracker,
    /// Ends the client server: after leadership is handed over.
    stop_clients: CancellationToken,
    /// Ends the peer server and discovery: after the node has stopped, so
    /// that a handover and the last appends can still reach the peers.
    stop_peers: CancellationToken,
    client_server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Where the desired replica count comes from (read again on a graceful
    /// stop: a scale-down may be what stops this pod).
    replica_source: ReplicaSource,
}

/// Why `serve` began to stop.
enum StopCause {
    Signal(&'static str),
    NodeFailed(String),
    ClientServerEnded,
}

impl Running {
    /// Opens the node and its ports and spawns its servers; on failure,
    /// the exit code (1 for the environment, 2 for the flags).
    async fn start(args: &ServeArgs, name: PodName) -> Result<Running, ExitCode> {
        let space = space_policy(args).map_err(|e| cannot_start(&e, 1))?;
        tracing::info!(
            quota = space.quota,
            min_free = space.min_free,
            reserve = space.reserve,
            "space bounds of the data dir's volume"
        );
        let discovery = start_discovery(args, &name).map_err(|e| cannot_start(&e, 2))?;
        let replica_source = ReplicaSource::parse(&args.replicas_source, args.replicas, &name.set)
            .map_err(|e| cannot_start(&e, 2))?;
        let tls =
            PortsTls::load(args, &discovery, name.ordinal).map_err(|e| cannot_start(&e, 1))?;
        // Always: a cluster of one grows when the StatefulSet scales.
        let grpc_peers = GrpcPeers::new(name.ordinal, discovery.clone(), tls.peer_client);
        let peers: Arc<dyn Peers> = Arc::new(grpc_peers.clone());
        let desired = desired_at_start(&replica_source).await;
        let node = Node::start(
            node_config(args, name, space, desired),
            peers,
            NodeInbox::new(),
        )
        .map_err(|e| cannot_start(&e, 1))?;
        let handle = node.handle();
        grpc_peers.attach(handle.clone());
        let (peer_listener, listener) = match bind_listeners(args).await {
            Ok(listeners) => listeners,
            Err(code) => {
                let _ = node.stop().await;
                return Err(code);
            }
        };
        log_serving(args, peer_listener.as_ref(), &listener);
        let tasks = TaskTracker::new();
        let stop_clients = CancellationToken::new();
        let stop_peers = CancellationToken::new();
        tasks.spawn(crate::node::space::monitor(handle.clone(), space).in_current_span());
        discovery.spawn_refresh(&tasks, &stop_peers);
        tasks.spawn(
            crate::node::scaling::run(handle.clone(), replica_source.clone(), stop_peers.clone())
                .in_current_span(),
        );
        if let Some(listener) = peer_listener {
            let timeout = Duration::from_millis(args.request_timeout_ms);
            let stopped = stop_peers.clone().cancelled_owned();
            let peer_server =
                serve_peers(listener, handle.clone(), timeout, tls.peer_server, stopped);
            tasks.spawn(logging_failure("peer server", peer_server).in_current_span());
        }
        if let Err(code) = spawn_ops(args, &handle, &tasks, &stop_peers).await {
            let _ = node.stop().await;
            return Err(code);
        }
        let opts = client_options(args, discovery, tls.client);
        let stopped = stop_clients.clone().cancelled_owned();
        let client_server =
            tasks.spawn(serve_clients(listener, handle.clone(), opts, stopped).in_current_span());
        Ok(Running {
            node,
            handle,
            tasks,
            stop_clients,
            stop_peers,
            client_server,
            replica_source,
        })
    }

    /// Serves until a signal, a node failure or the client server's end,
    /// then stops in order: leadership handed over, clients drained, the
    /// node made durable, the peer side closed, every task waited for.
    async fn run_to_end(mut self, args: &ServeArgs) -> ExitCode {
        let cause = tokio::select! {
            signal = super::shutdown_signal() => StopCause::Signal(signal),
            reason = self.node.failed() => StopCause::NodeFailed(reason.to_string()),
            result = &mut self.client_server => {
                tracing::error!("client server stopped: {result:?}");
                StopCause::ClientServerEnded
            }
        };
        match &cause {
            StopCause::Signal(signal) => {
                tracing::info!("received {signal}: draining and shutting down");
                hand_over_leadership(&self.handle).await;
                // A pod a scale-down deletes leaves the configuration first.
                crate::node::scaling::leave_if_scaled_away(
                    &self.handle,
                    &self.replica_source,
                    Duration::from_secs(5),
                )
                .await;
            }
            StopCause::NodeFailed(reason) => {
                tracing::error!("{reason}: exiting so the pod restarts");
            }
            StopCause::ClientServerEnded => hand_over_leadership(&self.handle).await,
        }
        self.handle.begin_stop();
        self.stop_clients.cancel();
        if matches!(cause, StopCause::Signal(_)) {
            drain_clients(&mut self.client_server, args.shutdown_grace_s).await;
        }
        let stopped = self.node.stop().await;
        self.stop_peers.cancel();
        wait_for_tasks(&self.tasks).await;
        match (stopped, cause) {
            (Ok(()), StopCause::Signal(_)) => {
                tracing::info!("stopped cleanly; everything acknowledged is durable");
                ExitCode::SUCCESS
            }
            (Ok(()), _) => ExitCode::from(1),
            (Err(e), _) => {
                tracing::error!("stopping: {e}");
                ExitCode::from(1)
            }
        }
    }
}

/// Logs and prints why the node cannot start; returns `code`.
fn cannot_start(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    tracing::error!("cannot start: {e}");
    eprintln!("kvstore: {e}");
    ExitCode::from(code)
}

/// The node's configuration from the flags.
fn node_config(
    args: &ServeArgs,
    name: PodName,
    space: SpacePolicy,
    desired: Option<u32>,
) -> NodeConfig {
    NodeConfig {
        name,
        replicas: args.replicas,
        probe_peers: desired.unwrap_or(crate::raft::MAX_MEMBERS),
        data_dir: args.data_dir.clone(),
        cache_bytes: args.cache_mb << 20,
        history_revisions: args.history_revisions,
        timing: args.timing(),
        compaction: args.compaction(),
        priority_return: true,
        cluster_id: args.cluster_id,
        space,
        wal_sync_delay: Duration::from_millis(args.fault_fsync_delay_ms),
    }
}

/// The desired replica count as start-up reads it, trying for a few
/// seconds: a new data dir asks every ordinal below it before it takes the
/// cluster for new. Unreadable, every possible ordinal is asked instead: a
/// new cluster then waits for the count rather than risk starting beside
/// an existing one.
async fn desired_at_start(source: &ReplicaSource) -> Option<u32> {
    for attempt in 0..5 {
        match tokio::time::timeout(Duration::from_secs(3), source.read()).await {
            Ok(Ok(n)) => return Some(n),
            Ok(Err(e)) => tracing::warn!(attempt, error = %e, "reading the desired replica count"),
            Err(_) => tracing::warn!(attempt, "reading the desired replica count timed out"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!("the desired replica count cannot be read: a new data dir waits for an existing cluster to answer");
    None
}

/// Binds the peer port and the client port.
async fn bind_listeners(args: &ServeArgs) -> Result<(Option<TcpListener>, TcpListener), ExitCode> {
    let listener = TcpListener::bind(args.peer_listen).await.map_err(|e| {
        tracing::error!("cannot listen on {}: {e}", args.peer_listen);
        eprintln!(
            "kvstore: cannot listen on {} (--peer-listen): {e}",
            args.peer_listen
        );
        ExitCode::from(1)
    })?;
    let peer = Some(listener);
    let client = TcpListener::bind(args.listen).await.map_err(|e| {
        tracing::error!("cannot listen on {}: {e}", args.listen);
        eprintln!("kvstore: cannot listen on {}: {e}", args.listen);
        ExitCode::from(1)
    })?;
    Ok((peer, client))
}

/// The line that tells an operator (and the tests) where the node listens.
fn log_serving(args: &ServeArgs, peer: Option<&TcpListener>, client: &TcpListener) {
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        client = %local(client),
        peer = %peer.map(local).unwrap_or_default(),
        data_dir = %args.data_dir.display(),
        replicas = args.replicas,
        "kvstore {} serving",
        env!("CARGO_PKG_VERSION")
    );
}

/// Lets in-flight client requests finish, for at most `grace_s` seconds.
async fn drain_clients(server: &mut JoinHandle<Result<(), tonic::transport::Error>>, grace_s: u64) {
    match tokio::time::timeout(Duration::from_secs(grace_s), server).await {
        Ok(Ok(Ok(()))) => tracing::info!("client requests drained"),
        Ok(other) => tracing::warn!("client server ended with {other:?}"),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
    }
}

/// Waits, within [`TASKS_GRACE`], for every task `serve` spawned.
async fn wait_for_tasks(tasks: &TaskTracker) {
    tasks.close();
    match tokio::time::timeout(TASKS_GRACE, tasks.wait()).await {
        Ok(()) => tracing::info!("every task ended"),
        Err(_) => tracing::warn!(
            running = tasks.len(),
            "tasks still running after {TASKS_GRACE:?}; exiting anyway"
        ),
    }
}

/// The space bounds of the data dir's volume (creating the data dir).
fn space_policy(args: &ServeArgs) -> Result<SpacePolicy, String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("data dir {}: {e}", args.data_dir.display()))?;
    SpacePolicy::for_volume(&args.data_dir, args.quota_bytes).map_err(|e| {
        format!(
            "data dir {}: cannot read its volume's size: {e}",
            args.data_dir.display()
        )
    })
}

/// Graceful stop of a leader: hand leadership to the lowest caught-up
/// follower first, so writes pause for a transfer, not an election.
async fn hand_over_leadership(handle: &NodeHandle) {
    let status = handle.status();
    if status.role != Role::Leader || status.membership.voter_count() < 2 {
        return;
    }
    let Some(to) = handle.best_successor() else {
        tracing::warn!("no caught-up follower to hand leadership to; stopping anyway");
        return;
    };
    let started = std::time::Instant::now();
    match handle.transfer_leadership(to, Duration::from_secs(3)).await {
        Ok(()) => tracing::info!(
            to,
            took_ms = started.elapsed().as_millis() as u64,
            "handed leadership over before stopping"
        ),
        Err(e) => tracing::warn!(to, error = %e, "leadership handover failed; stopping anyway"),
    }
}

/// Validates the discovery flags; the lookups start with `serve`'s tasks.
fn start_discovery(args: &ServeArgs, name: &PodName) -> Result<Arc<Discovery>, DiscoveryError> {
    if args.replicas == 0 {
        return Err(DiscoveryError::NoReplicas);
    }
    let template = NameTemplate::parse(&args.peer_name_template)?;
    let dns_server = args
        .dns_server
        .as_deref()
        .map(parse_dns_server)
        .transpose()?;
    let cfg = DiscoveryConfig {
        me: name.clone(),
        replicas: args.replicas,
        vars: NameVars {
            set: name.set.clone(),
            service: args.service.clone(),
            namespace: args.namespace.clone(),
            domain: args.cluster_domain.clone(),
        },
        template,
        peer_port: args.peer_port.unwrap_or(args.peer_listen.port()),
        srv_port_name: args.srv_port_name.clone(),
        dns_server,
    };
    Discovery::new(cfg)
}
