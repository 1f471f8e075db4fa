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
use crate::node::{NoPeers, Node, NodeConfig, NodeInbox, Peers};
use crate::server::{serve_clients, PeerDirectory, ServeOptions};

/// Runs `kvstore serve` to completion and returns the process exit code.
pub fn run(args: ServeArgs) -> ExitCode {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvstore: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let span = tracing::info_span!("node", ordinal = name.ordinal);
    runtime.block_on(serve(args, name).instrument(span))
}

async fn serve(args: ServeArgs, name: NodeName) -> ExitCode {
    let cfg = NodeConfig {
        name: name.clone(),
        replicas: args.replicas,
        data_dir: args.data_dir.clone(),
        cache_bytes: args.cache_mb << 20,
        history_revisions: args.history_revisions,
        timing: args.timing(),
        compaction: args.compaction(),
        priority_return: true,
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
    let peers: Arc<dyn Peers> = Arc::new(NoPeers);
    let node = match Node::start(cfg, peers, inbox) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("kvstore: {e}");
            return ExitCode::from(1);
        }
    };
    let handle = node.handle();
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
    handle.begin_stop();
    let _ = stop_tx.send(true);
    if !server_done {
        match tokio::time::timeout(Duration::from_secs(args.shutdown_grace_s), &mut server).await {
            Ok(Ok(Ok(()))) => tracing::info!("client requests drained"),
            Ok(other) => tracing::warn!("client server ended with {other:?}"),
            Err(_) => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
        }
    }
    match node.stop().await {
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
