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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::node::NodeHandle;
use crate::raft::Role;

/// A follower, as the leader labels its progress.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    /// The follower's pod name.
    peer: String,
}

/// The gauges read off the node at each scrape, next to the counters and
/// histograms the node's threads keep ([`crate::metrics::NodeMetrics`]).
struct Metrics {
    registry: Registry,
    is_leader: Gauge,
    has_leader: Gauge,
    term: Gauge<u64, AtomicU64>,
    commit: Gauge<u64, AtomicU64>,
    applied: Gauge<u64, AtomicU64>,
    leader_changes: Counter,
    peer_lag: Family<PeerLabels, Gauge<u64, AtomicU64>>,
    peer_reachable: Family<PeerLabels, Gauge>,
    stored: Gauge<u64, AtomicU64>,
    history: Gauge<u64, AtomicU64>,
    quota: Gauge<u64, AtomicU64>,
    quota_alarm: Gauge,
    volume_size: Gauge<u64, AtomicU64>,
    volume_free: Gauge<u64, AtomicU64>,
}

impl Metrics {
    fn new(node: &NodeHandle) -> Metrics {
        let mut registry = Registry::default();
        node.metrics().register(&mut registry);
        let m = Metrics {
            registry: Registry::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            term: Gauge::default(),
            commit: Gauge::default(),
            applied: Gauge::default(),
            leader_changes: Counter::default(),
            peer_lag: Family::default(),
            peer_reachable: Family::default(),
            stored: Gauge::default(),
            history: Gauge::default(),
            quota: Gauge::default(),
            quota_alarm: Gauge::default(),
            volume_size: Gauge::default(),
            volume_free: Gauge::default(),
        };
        m.register(registry.sub_registry_with_prefix("kvstore"));
        Metrics { registry, ..m }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "is_leader",
            "1 if this member leads",
            self.is_leader.clone(),
        );
        let has_leader = "1 if this member knows a leader";
        r.register("has_leader", has_leader, self.has_leader.clone());
        r.register("term", "The current Raft term", self.term.clone());
        let commit = "The commit index (revision) this member knows";
        r.register("commit_revision", commit, self.commit.clone());
        let applied = "The revision applied to this member's state";
        r.register("applied_revision", applied, self.applied.clone());
        r.register(
            "leader_changes",
            "Times the leader this member knows changed to another member (an interval without one is no change of its own)",
            self.leader_changes.clone(),
        );
        r.register(
            "peer_lag_revisions",
            "On the leader, per follower: the leader's last log index minus the follower's match index",
            self.peer_lag.clone(),
        );
        r.register(
            "peer_reachable",
            "On the leader, per follower: 1 if it answered within four heartbeats",
            self.peer_reachable.clone(),
        );
        let stored = "Bytes of keys and values in the data and the history (what the quota counts)";
        r.register("stored_bytes", stored, self.stored.clone());
        let history = "Bytes of keys and values in the history";
        r.register("history_bytes", history, self.history.clone());
        let quota = "The space quota (--quota-bytes)";
        r.register("quota_bytes", quota, self.quota.clone());
        r.register(
            "quota_alarm",
            "1 while a NOSPACE alarm is raised on any member: writes that add data are refused",
            self.quota_alarm.clone(),
        );
        let size = "Bytes of the volume holding the data dir";
        r.register("volume_size_bytes", size, self.volume_size.clone());
        let free = "Bytes free to this process on the volume holding the data dir";
        r.register("volume_free_bytes", free, self.volume_free.clone());
    }

    /// Reads the gauges off `node` and encodes everything.
    fn render(&self, node: &NodeHandle) -> Result<String, std::fmt::Error> {
        let status = node.status();
        self.is_leader.set(i64::from(status.role == Role::Leader));
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.term.set(status.term);
        self.commit.set(status.commit);
        self.applied.set(node.applied());
        // Only the current followers, and only while leading: a series of
        // a member that left, or of a former leadership, would lie.
        self.peer_lag.clear();
        self.peer_reachable.clear();
        for peer in &status.peers {
            let labels = PeerLabels {
                peer: node.name().sibling(peer.id).to_string(),
            };
            let lag = status.last_index.saturating_sub(peer.match_index);
            self.peer_lag.get_or_create(&labels).set(lag);
            let reachable = i64::from(peer.reachable);
            self.peer_reachable.get_or_create(&labels).set(reachable);
        }
        let state = node.state();
        self.stored.set(state.stored_bytes());
        self.history.set(state.history_bytes());
        self.quota.set(node.space_policy().quota);
        self.quota_alarm.set(i64::from(!state.alarms().is_empty()));
        // A failed statvfs leaves the last values: the space monitor, which
        // makes the same call, reports the failure.
        if let Ok((size, free)) = crate::storage::volume(node.data_dir()) {
            self.volume_size.set(size);
            self.volume_free.set(free);
        }
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
    let metrics = Arc::new(Metrics::new(&node));
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

/// Counts every change of the known leader to another member until the
/// node stops. An interval with no leader is not a change of its own (as
/// etcd's `leader_changes_seen`): a leader kill is one change, to its
/// successor, and its return to the lead a second.
async fn count_leader_changes(node: NodeHandle, metrics: Arc<Metrics>) {
    let mut status = node.status_changes();
    let mut leader = status.borrow_and_update().leader;
    while status.changed().await.is_ok() {
        let Some(now) = status.borrow_and_update().leader else {
            continue;
        };
        if leader != Some(now) {
            // The first leader a starting member learns is no change.
            if leader.is_some() {
                metrics.leader_changes.inc();
            }
            leader = Some(now);
        }
    }
}
