//! What a node measures about itself, for the ops port's `/metrics`.
//!
//! The threads that do the work observe into these (a histogram observation
//! is a short lock, far below an fsync or a sled batch); the ops port
//! registers them once and encodes them on each scrape. One [`NodeMetrics`]
//! per node, so that nodes sharing a process (the tests) keep apart.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds, from half a millisecond to ten seconds. They
/// hold 0.1 exactly, the slow-fsync alert's threshold, so that its p99 is
/// not an interpolation across the bound.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// How a snapshot transfer ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

/// One RPC method of the client port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The service's full name, such as `kvstore.v1.KV`.
    pub grpc_service: String,
    /// The method's name, such as `Put`.
    pub grpc_method: String,
}

/// One RPC method and the status it ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCodeLabels {
    /// The service's full name.
    pub grpc_service: String,
    /// The method's name.
    pub grpc_method: String,
    /// The status code's name, spelled as gRPC's Go implementation (and so
    /// every dashboard for `grpc_server_handled_total`) spells it: `OK`,
    /// `NotFound`, `Unavailable`, ...
    pub grpc_code: &'static str,
}

/// The client port's per-RPC counts and latencies, named as
/// go-grpc-prometheus names them so that existing dashboards apply.
#[derive(Clone)]
pub struct GrpcMetrics {
    /// `grpc_server_handled_total`: RPCs finished, by method and status.
    pub handled: Family<RpcCodeLabels, Counter>,
    /// `grpc_server_handling_seconds`: from the request to the status (for
    /// a stream, its whole life).
    pub handling: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        GrpcMetrics {
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// The measurements of one node's replication, storage and client port.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Write-ahead log `fdatasync` latency (one per append group).
    pub wal_fsync: Histogram,
    /// On the leader: from a proposal entering the log to its commit
    /// (appended and fsynced on a majority).
    pub proposal_commit: Histogram,
    /// One apply batch into sled, from the apply thread's start on it to
    /// its answers and watch events.
    pub apply: Histogram,
    /// On the leader: how long sending a snapshot to a follower took.
    pub snapshot_send: Histogram,
    /// Snapshots sent to followers, by outcome.
    pub snapshots_sent: Family<OutcomeLabels, Counter>,
    /// Snapshots received from the leader and installed.
    pub snapshots_installed: Counter,
    /// The client port's RPCs.
    pub grpc: GrpcMetrics,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            wal_fsync: latency_histogram(),
            proposal_commit: latency_histogram(),
            apply: latency_histogram(),
            snapshot_send: latency_histogram(),
            snapshots_sent: Family::default(),
            snapshots_installed: Counter::default(),
            grpc: GrpcMetrics::default(),
        }
    }
}

impl NodeMetrics {
    /// Registers every metric in `root`: the node's under `kvstore_`, the
    /// RPCs' under `grpc_server_`.
    pub fn register(&self, root: &mut Registry) {
        let kv = root.sub_registry_with_prefix("kvstore");
        kv.register(
            "wal_fsync_duration_seconds",
            "Write-ahead log fdatasync latency, one per append group",
            self.wal_fsync.clone(),
        );
        kv.register(
            "proposal_commit_duration_seconds",
            "On the leader, from a proposal entering the log to its commit on a majority",
            self.proposal_commit.clone(),
        );
        kv.register(
            "apply_duration_seconds",
            "Latency of one apply batch into the state",
            self.apply.clone(),
        );
        kv.register(
            "snapshot_send_duration_seconds",
            "On the leader, how long sending a snapshot to a follower took",
            self.snapshot_send.clone(),
        );
        kv.register(
            "snapshots_sent",
            "Snapshots sent to followers, by outcome",
            self.snapshots_sent.clone(),
        );
        kv.register(
            "snapshots_installed",
            "Snapshots received from the leader and installed",
            self.snapshots_installed.clone(),
        );
        let grpc = root.sub_registry_with_prefix("grpc_server");
        grpc.register(
            "handled",
            "RPCs completed on the client port, by method and status code",
            self.grpc.handled.clone(),
        );
        grpc.register(
            "handling_seconds",
            "RPC latency on the client port until the status (a stream's whole life)",
            self.grpc.handling.clone(),
        );
    }

    /// Counts a snapshot transfer to a follower that took `took`.
    pub fn snapshot_sent(&self, ok: bool, took: Option<Duration>) {
        let outcome = if ok { "ok" } else { "failed" };
        self.snapshots_sent
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if let Some(took) = took {
            self.snapshot_send.observe(took.as_secs_f64());
        }
    }
}
