//! `kvstore serve`: one node, as a StatefulSet pod runs it.
//!
//! Shutdown follows mini-redis: on SIGTERM or SIGINT the node stops taking
//! new work (health turns NOT_SERVING, watch streams end), the gRPC server
//! stops accepting and lets in-flight requests finish, then the replication
//! and apply threads make everything durable, and the process exits 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::ServeArgs;
use crate::discovery::{
    parse_dns_server, Discovery, DiscoveryConfig, DiscoveryError, NameTemplate, NameVars,
};
use crate::identity::NodeName;
use crate::node::{NoPeers, Node, NodeConfig, NodeHandle, NodeInbox, Peers};
use crate::raft::Role;
use crate::server::{serve_clients, PeerDirectory, ServeOptions};
use crate::transport::{serve_peers, GrpcPeers};

/// Runs `kvstore serve` to completion and returns the process exit code.
pub fn run(args: ServeArgs) -> ExitCode {
    if let Err(e) = args.limits().check() {
        eprintln!("kvstore: {e}");
        return ExitCode::from(2);
    }
    let name = match NodeName::parse(&args.node_name()) {
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

async fn serve(args: ServeArgs, name: NodeName) -> ExitCode {
    let space = match space_policy(&args) {
        Ok(policy) => policy,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("kvstore: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        quota = space.quota,
        min_free = space.min_free,
        reserve = space.reserve,
        "space bounds of the data dir's volume"
    );
    let cfg = NodeConfig {
        name: name.clone(),
        replicas: args.replicas,
        data_dir: args.data_dir.clone(),
        cache_bytes: args.cache_mb << 20,
        history_revisions: args.history_revisions,
        timing: args.timing(),
        compaction: args.compaction(),
        priority_return: true,
        cluster_id: args.cluster_id,
        space,
        wal_sync_delay: Duration::from_millis(args.fault_fsync_delay_ms),
    };
    let discovery = match start_discovery(&args, &name) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("kvstore: {e}");
            return ExitCode::from(2);
        }
    };
    let inbox = NodeInbox::new();
    let grpc_peers =
        (args.replicas > 1).then(|| GrpcPeers::new(name.ordinal, args.replicas, discovery.clone()));
    let peers: Arc<dyn Peers> = match &grpc_peers {
        Some(p) => Arc::new(p.clone()),
        None => Arc::new(NoPeers),
    };
    let node = match Node::start(cfg, peers, inbox) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("kvstore: {e}");
            return ExitCode::from(1);
        }
    };
    let handle = node.handle();
    if let Some(p) = &grpc_peers {
        p.attach(handle.clone());
    }
    let space_monitor =
        tokio::spawn(crate::node::space::monitor(handle.clone(), space).in_current_span());
    let peer_listener = if args.replicas > 1 {
        match TcpListener::bind(args.peer_listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", args.peer_listen);
                eprintln!(
                    "kvstore: cannot listen on {} (--peer-listen): {e}",
                    args.peer_listen
                );
                let _ = node.stop().await;
                return ExitCode::from(1);
            }
        }
    } else {
        tracing::info!(
            "a cluster of one member (--replicas 1): the peer port is not opened; set --replicas to the StatefulSet's replica count"
        );
        None
    };
    let peer_addr = peer_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", args.listen);
            eprintln!("kvstore: cannot listen on {}: {e}", args.listen);
            let _ = node.stop().await;
            return ExitCode::from(1);
        }
    };
    let client_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        client = %client_addr,
        peer = %peer_addr,
        data_dir = %args.data_dir.display(),
        replicas = args.replicas,
        "kvstore {} serving",
        env!("CARGO_PKG_VERSION")
    );
    let directory: Arc<dyn PeerDirectory> = discovery.clone();
    let opts = ServeOptions {
        limits: args.limits(),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        directory: Some(directory),
        client_port: args.listen.port(),
        ..ServeOptions::default()
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server_handle = handle.clone();
    let mut server = tokio::spawn(
        async move {
            serve_clients(listener, server_handle, opts, async move {
                let _ = stop_rx.wait_for(|&s| s).await.map(|_| ());
            })
            .await
        }
        .in_current_span(),
    );
    let (peer_stop_tx, mut peer_stop_rx) = watch::channel(false);
    if let Some(listener) = peer_listener {
        let peer_handle = handle.clone();
        let timeout = Duration::from_millis(args.request_timeout_ms);
        tokio::spawn(
            async move {
                let stopped = async move {
                    let _ = peer_stop_rx.wait_for(|&s| s).await.map(|_| ());
                };
                if let Err(e) = serve_peers(listener, peer_handle, timeout, stopped).await {
                    tracing::error!("peer server: {e}");
                }
            }
            .in_current_span(),
        );
    }
    let mut server_done = false;
    tokio::select! {
        signal = super::shutdown_signal() => {
            tracing::info!("received {signal}: draining and shutting down");
        }
        reason = node.failed() => {
            tracing::error!("{reason}: exiting so the pod restarts");
            handle.begin_stop();
            let _ = stop_tx.send(true);
            let _ = node.stop().await;
            return ExitCode::from(1);
        }
        result = &mut server => {
            server_done = true;
            tracing::error!("client server stopped: {result:?}");
        }
    }
    hand_over_leadership(&handle).await;
    handle.begin_stop();
    let _ = stop_tx.send(true);
    if !server_done {
        match tokio::time::timeout(Duration::from_secs(args.shutdown_grace_s), &mut server).await {
            Ok(Ok(Ok(()))) => tracing::info!("client requests drained"),
            Ok(other) => tracing::warn!("client server ended with {other:?}"),
            Err(_) => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
        }
    }
    let stopped = node.stop().await;
    let _ = peer_stop_tx.send(true);
    let _ = space_monitor.await;
    match stopped {
        Ok(()) => {
            tracing::info!("stopped cleanly; everything acknowledged is durable");
            if server_done {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            tracing::error!("stopping: {e}");
            ExitCode::from(1)
        }
    }
}

/// The space bounds of the data dir's volume (creating the data dir).
fn space_policy(args: &ServeArgs) -> Result<crate::node::space::SpacePolicy, String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("data dir {}: {e}", args.data_dir.display()))?;
    crate::node::space::SpacePolicy::for_volume(&args.data_dir, args.quota_bytes).map_err(|e| {
        format!(
            "data dir {}: cannot read its volume's size: {e}",
            args.data_dir.display()
        )
    })
}

/// Graceful stop of a leader: hand leadership to the lowest caught-up
/// follower first, so writes pause for a transfer, not an election.
async fn hand_over_leadership(handle: &NodeHandle) {
    if handle.status().role != Role::Leader || handle.replicas() < 2 {
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

/// Validates the discovery flags and starts looking peers up.
fn start_discovery(args: &ServeArgs, name: &NodeName) -> Result<Arc<Discovery>, DiscoveryError> {
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
    let discovery = Discovery::new(cfg)?;
    if args.replicas > 1 {
        discovery.spawn_refresh();
    }
    Ok(discovery)
}
