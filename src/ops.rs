//! The ops port (`--ops-listen`): plain HTTP for what kubelet and
//! Prometheus ask, apart from the client port, so that the client port can
//! require client certificates while probes and scrapes need none.
//!
//! - `/healthz`: 200 while the process serves (liveness; an election or a
//!   lost quorum never fails it).
//! - `/readyz`: 200 once the node knows a leader and has applied to within
//!   `ready_lag` of the commit index, 503 before (readiness), the same rule
//!   as the gRPC health service.
//! - `/metrics`: Prometheus text, from `prometheus-client`.
//!
//! The gauges are read from the node when scraped; the leader changes are
//! counted by a task that follows the node's status.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::node::NodeHandle;
use crate::raft::Role;

/// The metrics of one node.
struct Metrics {
    registry: Registry,
    is_leader: Gauge,
    has_leader: Gauge,
    term: Gauge<u64, AtomicU64>,
    commit: Gauge<u64, AtomicU64>,
    applied: Gauge<u64, AtomicU64>,
    leader_changes: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kvstore");
        let (is_leader, has_leader) = (Gauge::default(), Gauge::default());
        let (term, commit, applied) = (Gauge::default(), Gauge::default(), Gauge::default());
        let leader_changes = Counter::default();
        registry.register("is_leader", "1 if this member leads", is_leader.clone());
        registry.register(
            "has_leader",
            "1 if this member knows a leader",
            has_leader.clone(),
        );
        registry.register("term", "The current Raft term", term.clone());
        registry.register(
            "commit_revision",
            "The commit index (revision) this member knows",
            commit.clone(),
        );
        registry.register(
            "applied_revision",
            "The revision applied to this member's state",
            applied.clone(),
        );
        registry.register(
            "leader_changes",
            "Times the leader this member knows changed (to another member or to none)",
            leader_changes.clone(),
        );
        Metrics {
            registry,
            is_leader,
            has_leader,
            term,
            commit,
            applied,
            leader_changes,
        }
    }

    /// Reads the gauges off `node` and encodes everything.
    fn render(&self, node: &NodeHandle) -> Result<String, std::fmt::Error> {
        let status = node.status();
        self.is_leader.set(i64::from(status.role == Role::Leader));
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.term.set(status.term);
        self.commit.set(status.commit);
        self.applied.set(node.applied());
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[derive(Clone)]
struct Ops {
    node: NodeHandle,
    metrics: Arc<Metrics>,
    ready_lag: u64,
}

/// Serves the ops port on `listener` until `shutdown` resolves.
pub async fn serve_ops(
    listener: TcpListener,
    node: NodeHandle,
    ready_lag: u64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(count_leader_changes(node.clone(), metrics.clone()));
    let ops = Ops {
        node,
        metrics,
        ready_lag,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ops);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(ops): State<Ops>) -> impl IntoResponse {
    if *ops.node.stopping().borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    if ops.node.is_ready(ops.ready_lag) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known, or catching up\n",
        )
    }
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    match ops.metrics.render(&ops.node) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "the metrics could not be encoded\n".to_string(),
        ),
    }
}

/// Counts every change of the known leader until the node stops.
async fn count_leader_changes(node: NodeHandle, metrics: Arc<Metrics>) {
    let mut status = node.status_changes();
    let mut leader = status.borrow_and_update().leader;
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().leader;
        if now != leader {
            metrics.leader_changes.inc();
            leader = now;
        }
    }
}
