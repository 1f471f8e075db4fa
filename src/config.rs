//! Command-line flags of the `kvstore` binary. Every flag can also be set by
//! an environment variable `KVSTORE_<FLAG>` (what a Kubernetes manifest sets).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::node::{CompactionPolicy, Timing};
use crate::server::Limits;

/// kvstore: a replicated key-value store for Kubernetes StatefulSets.
#[derive(Parser, Debug)]
#[command(name = "kvstore", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Run one node: what a StatefulSet pod runs.
    Serve(Box<ServeArgs>),
    /// Run a cluster in a box: an embedded DNS server and a supervisor that
    /// runs R `kvstore serve` pods on loopback addresses, like a StatefulSet.
    #[cfg_attr(not(feature = "box"), command(hide = true))]
    Local(LocalArgs),
    /// The failover demonstration: a cluster in a box under load, the leader
    /// killed, a new one elected, pod-0 back on its data, leadership back to
    /// it, and every acknowledged write checked.
    #[cfg_attr(not(feature = "box"), command(hide = true))]
    Demo(DemoArgs),
    /// Seed an empty data dir from a backup (`kvctl snapshot save`), so
    /// that its member starts a new cluster holding the backup's state;
    /// the other members start on empty data dirs and catch up from it.
    Restore(RestoreArgs),
}

/// Flags of `kvstore restore`.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The snapshot file (`kvctl snapshot save`).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The empty data dir to seed (the first member's volume).
    #[arg(long, env = "KVSTORE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The pod whose data dir this is, `<statefulset>-<ordinal>`; defaults
    /// to $HOSTNAME. It is the new cluster's only voter until the others
    /// join: restore the lowest ordinal (kvstore-0), which leads anyway.
    #[arg(long, env = "KVSTORE_NODE_NAME")]
    pub node_name: Option<String>,
    /// The new cluster's id (hexadecimal); default: a random one. Give the
    /// one the pods are pinned to if they run with --cluster-id.
    #[arg(long, env = "KVSTORE_CLUSTER_ID", value_parser = parse_cluster_id)]
    pub cluster_id: Option<u64>,
}

/// Flags of `kvstore demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Leader kills (SIGKILL) to do (default 1; 0 with --scale).
    #[arg(long)]
    pub kills: Option<u32>,
    /// Run the cluster with TLS on both ports, as `kvstore local --tls`
    /// does, and the load over TLS with the box's client certificate.
    #[arg(long)]
    pub tls: bool,
    /// Also do a rolling restart (SIGTERM, highest ordinal first) and report
    /// the longest write gap.
    #[arg(long)]
    pub rolling_restart: bool,
    /// Scale to this many pods and back under load, as `kubectl scale`
    /// would (`--scale` alone: to 5), narrating when each pod joins,
    /// catches up, becomes a voter and leaves, and the longest write gap of
    /// each step.
    #[arg(long, num_args = 0..=1, default_missing_value = "5")]
    pub scale: Option<u32>,
    /// Instead of the failover demonstration: clients that write and read
    /// their own writes, pinned to one pod (which is killed), reading
    /// SERIALIZABLE from any pod, and reading from any pod with the
    /// revision of their last write (`min_revision`), compared in a table.
    /// `--writers` sessions of each way.
    #[arg(long, conflicts_with_all = ["kills", "rolling_restart", "scale", "as_deployment"])]
    pub sessions: bool,
    /// The same leader kill twice, on two fresh boxes: once as the
    /// StatefulSet does it (the pod comes back as itself) and once as a
    /// Deployment would (a new pod: a random name, a new address, an empty
    /// volume); narrates both and prints a two-column table.
    #[arg(long, conflicts_with_all = ["kills", "rolling_restart", "scale"])]
    pub as_deployment: bool,
    /// Number of pods.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Concurrent writers in the load.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Concurrent linearizable readers in the load.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// Where the pods' data dirs and logs go (emptied first).
    #[arg(long, default_value = ".kvstore/demo")]
    pub dir: PathBuf,
    /// Loopback address of pod 0 (pod n binds this plus n).
    #[arg(long, default_value = "127.0.0.20")]
    pub base_ip: std::net::Ipv4Addr,
    /// Client port of every pod.
    #[arg(long, default_value_t = 7379)]
    pub client_port: u16,
    /// Peer port of every pod.
    #[arg(long, default_value_t = 7380)]
    pub peer_port: u16,
    /// Milliseconds before the supervisor restarts a dead pod.
    #[arg(long, default_value_t = 1000)]
    pub restart_delay_ms: u64,
    /// Print the report as JSON after the summary.
    #[arg(long)]
    pub json: bool,
    /// Where to write the timeline picture (SVG): writes per 10 ms, each
    /// pod's role, and every measured moment labelled.
    #[arg(long, default_value = "demo-timeline.svg")]
    pub timeline: PathBuf,
    /// Write no timeline picture.
    #[arg(long, conflicts_with = "timeline")]
    pub no_timeline: bool,
    /// Show a live view of the cluster instead of the narrated lines: the
    /// pods, writes per second and the events, with the narration among
    /// them (as `kvctl top` does). Plain lines when the output is not a
    /// terminal. `q` or Ctrl-C ends the demo.
    #[arg(long, conflicts_with_all = ["sessions", "as_deployment"])]
    pub top: bool,
    /// Extra flags for every `kvstore serve`, after `--`; `{pod}` in one
    /// stands for the pod's name.
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

/// Flags of `kvstore local`.
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Act on a running cluster in a box instead of starting one.
    #[command(subcommand)]
    pub action: Option<LocalAction>,
    /// Number of pods.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Where the pods' data dirs (their volumes), logs and the state file go.
    #[arg(long, global = true, default_value = ".kvstore/local")]
    pub dir: PathBuf,
    /// Loopback address of pod 0; pod n binds this plus n.
    #[arg(long, default_value = "127.0.0.10")]
    pub base_ip: std::net::Ipv4Addr,
    /// Client port of every pod.
    #[arg(long, default_value_t = 7379)]
    pub client_port: u16,
    /// Peer (replication) port of every pod.
    #[arg(long, default_value_t = 7380)]
    pub peer_port: u16,
    /// StatefulSet name (pods are `<set>-<n>`).
    #[arg(long, default_value = "kvstore")]
    pub set: String,
    /// Headless Service name.
    #[arg(long, default_value = "kvstore-headless")]
    pub service: String,
    /// Namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Milliseconds before a pod that died is restarted.
    #[arg(long, default_value_t = 1000)]
    pub restart_delay_ms: u64,
    /// Delete the pods' data dirs first (a new cluster).
    #[arg(long)]
    pub fresh: bool,
    /// Both ports with TLS: a CA of the box's own issues each pod a peer
    /// certificate naming its stable DNS name (mutual TLS between pods)
    /// and a client-port certificate, and kvctl a client certificate
    /// (client certificates required), all under `<dir>/tls`. kvctl run
    /// from the same directory uses them by itself.
    #[arg(long)]
    pub tls: bool,
    /// Extra flags for every `kvstore serve`, after `--`; `{pod}` in one
    /// stands for the pod's name.
    #[arg(last = true)]
    pub serve_args: Vec<String>,
    /// Logging of the supervisor.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Actions on a running cluster in a box.
#[derive(Subcommand, Debug, Clone)]
pub enum LocalAction {
    /// Send a signal to one pod (SIGKILL by default: a crash); the
    /// supervisor restarts it with the same name and data dir.
    Kill {
        /// The pod's ordinal.
        ordinal: u32,
        /// KILL, TERM, STOP (freeze) or CONT (thaw).
        #[arg(long, default_value = "KILL")]
        signal: String,
    },
    /// Print the client endpoints (for `kvctl --endpoints`).
    Endpoints,
    /// Change the replica count of the running box, as `kubectl scale`
    /// does: pods are created in ordinal order, or deleted highest ordinal
    /// first, and the membership follows.
    Scale {
        /// The new replica count.
        replicas: u32,
    },
}

/// Logging flags.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log line format: `text` for people, `json` for log collectors.
    #[arg(long, env = "KVSTORE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or filter directives (e.g. `info`, `kvstore=debug,h2=warn`).
    #[arg(long, env = "KVSTORE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// TLS flags of `kvstore serve`: each port is plaintext unless its
/// certificate is given.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Certificate chain (PEM) of the client port; with it, the client port
    /// speaks TLS only. Read again when the file changes.
    #[arg(long, env = "KVSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "KVSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A CA (PEM): clients must present a certificate it signed.
    #[arg(long, env = "KVSTORE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// This member's peer certificate (PEM). Its SAN must be the pod's own
    /// stable name (`kvstore-N.<service>.<namespace>.svc.<domain>`); with
    /// it, the peer port speaks mutual TLS only, and a peer may only speak
    /// as the member its certificate names.
    #[arg(long, env = "KVSTORE_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --peer-tls-cert.
    #[arg(long, env = "KVSTORE_PEER_TLS_KEY", requires = "peer_tls_cert")]
    pub peer_tls_key: Option<PathBuf>,

    /// The CA (PEM) that signs every member's peer certificate.
    #[arg(long, env = "KVSTORE_PEER_TLS_CA", requires = "peer_tls_cert")]
    pub peer_tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The client port's files, if it has TLS.
    pub fn client_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_client_ca.clone(),
        })
    }

    /// The peer port's files, if it has mTLS.
    pub fn peer_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.peer_tls_cert.clone()?,
            key: self.peer_tls_key.clone()?,
            ca: Some(self.peer_tls_ca.clone()?),
        })
    }
}

/// Flags of `kvstore serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// This node's name, `<statefulset>-<ordinal>` (e.g. `kvstore-0`). Defaults
    /// to $HOSTNAME, which a StatefulSet sets to exactly that.
    #[arg(long, env = "KVSTORE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Address for the client API (KV, Cluster, health, reflection);
    /// `:PORT` is every IPv4 address.
    #[arg(long, env = "KVSTORE_LISTEN", default_value = "0.0.0.0:7379", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Address of the ops port: plain HTTP `/healthz`, `/readyz` and
    /// `/metrics` (Prometheus), for probes and scrapes that present no
    /// client certificate, e.g. `:7381`. Unset: no ops port.
    #[arg(long, env = "KVSTORE_OPS_LISTEN", value_parser = parse_listen)]
    pub ops_listen: Option<SocketAddr>,

    /// Address for replication traffic between members (a separate port).
    #[arg(long, env = "KVSTORE_PEER_LISTEN", default_value = "0.0.0.0:7380", value_parser = parse_listen)]
    pub peer_listen: SocketAddr,

    /// The data dir: the write-ahead log and the state (the pod's volume).
    #[arg(long, env = "KVSTORE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// The StatefulSet's replica count when no other source is given: a new
    /// cluster's voters are ordinals 0..replicas-1. Afterwards the
    /// configuration lives in the log and follows `--replicas-source`.
    #[arg(long, env = "KVSTORE_REPLICAS", default_value_t = 1)]
    pub replicas: u32,

    /// Where the desired replica count comes from, which the membership
    /// follows (pods added as learners and promoted, removed highest ordinal
    /// first): `flag` (fixed by --replicas), `file:<path>` (a file holding
    /// the count; the box supervisor's), or `kubernetes` (spec.replicas of
    /// this pod's StatefulSet, read with the pod's service account).
    #[arg(long, env = "KVSTORE_REPLICAS_SOURCE", default_value = "flag")]
    pub replicas_source: String,

    /// sled's page cache in MiB. Keep it well under the pod's memory limit.
    #[arg(long, env = "KVSTORE_CACHE_MB", default_value_t = 128)]
    pub cache_mb: u64,

    /// Longest key in bytes.
    #[arg(long, env = "KVSTORE_MAX_KEY_BYTES", default_value_t = 4096)]
    pub max_key_bytes: usize,

    /// Longest value in bytes.
    #[arg(long, env = "KVSTORE_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// Time limit of one client request, in milliseconds.
    #[arg(long, env = "KVSTORE_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// Seconds after which a client connection is asked to reconnect
    /// (HTTP/2 GOAWAY; calls in flight, watches among them, finish on it),
    /// so that clients spread over the pods again after one comes back.
    /// 0: never.
    #[arg(long, env = "KVSTORE_MAX_CONNECTION_AGE_S", default_value_t = 300)]
    pub max_connection_age_s: u64,

    /// Revisions of change history kept for watches.
    #[arg(long, env = "KVSTORE_HISTORY_REVISIONS", default_value_t = 100_000)]
    pub history_revisions: u64,

    /// Compact the log (behind a snapshot of the state) when it holds more
    /// entries than this.
    #[arg(long, env = "KVSTORE_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    pub snapshot_entries: u64,

    /// ...or more MiB of entry data than this.
    #[arg(long, env = "KVSTORE_SNAPSHOT_MB", default_value_t = 64)]
    pub snapshot_mb: u64,

    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "KVSTORE_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,

    /// Base election timeout in milliseconds (silent leader failure is
    /// detected after this; a crashed leader's reset connection much sooner).
    #[arg(long, env = "KVSTORE_ELECTION_TIMEOUT_MS", default_value_t = 300)]
    pub election_timeout_ms: u64,

    /// Extra election timeout per ordinal, in milliseconds, so the lowest
    /// live ordinal campaigns first.
    #[arg(long, env = "KVSTORE_ELECTION_STAGGER_MS", default_value_t = 100)]
    pub election_stagger_ms: u64,

    /// The headless Service that gives each pod its DNS name.
    #[arg(long, env = "KVSTORE_SERVICE", default_value = "kvstore-headless")]
    pub service: String,

    /// The namespace the pods run in (the manifest passes it from the
    /// downward API).
    #[arg(long, env = "KVSTORE_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// The cluster's DNS domain.
    #[arg(long, env = "KVSTORE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// How a peer's DNS name is built. Placeholders: {set} {ordinal}
    /// {service} {namespace} {domain}. A trailing dot makes it absolute.
    /// Docker Compose, for example, uses `{set}-{ordinal}`.
    #[arg(long, env = "KVSTORE_PEER_NAME_TEMPLATE", default_value = crate::discovery::DEFAULT_TEMPLATE)]
    pub peer_name_template: String,

    /// The port peers listen on for replication (default: the port of
    /// --peer-listen, as every pod of a StatefulSet uses the same one).
    #[arg(long, env = "KVSTORE_PEER_PORT")]
    pub peer_port: Option<u16>,

    /// The Service port name whose SRV records list the pods.
    #[arg(long, env = "KVSTORE_SRV_PORT_NAME", default_value = "peer")]
    pub srv_port_name: String,

    /// Use this DNS server (HOST:PORT) instead of /etc/resolv.conf, e.g. the
    /// embedded one of `kvstore local`.
    #[arg(long, env = "KVSTORE_DNS_SERVER")]
    pub dns_server: Option<String>,

    /// Seconds to let in-flight requests finish on SIGTERM before exiting.
    #[arg(long, env = "KVSTORE_SHUTDOWN_GRACE_S", default_value_t = 20)]
    pub shutdown_grace_s: u64,

    /// Logging.
    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Bytes of keys and values (data and watch history) this pod may hold
    /// before writes that add data are refused with RESOURCE_EXHAUSTED
    /// (reads and deletes go on). Default: a fifth of the data dir's volume.
    #[arg(long, env = "KVSTORE_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,

    /// The cluster this pod belongs to, as 16 hex digits (the id `kvctl
    /// status` shows). When set, a volume of another cluster is refused at
    /// start-up, and a new cluster takes this id. Unset: the first leader
    /// picks a random id, and peers refuse members of other clusters.
    #[arg(long, env = "KVSTORE_CLUSTER_ID", value_parser = parse_cluster_id)]
    pub cluster_id: Option<u64>,

    /// Fault injection for tests: sleep this many milliseconds after every
    /// fdatasync of the write-ahead log, as a slow disk would.
    #[arg(
        long,
        env = "KVSTORE_FAULT_FSYNC_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub fault_fsync_delay_ms: u64,
}

/// A listen address: `HOST:PORT`, or `:PORT` for every IPv4 address (as
/// Go servers, etcd among them, spell it).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse()
        .map_err(|e| format!("not an address (HOST:PORT or :PORT): {e}"))
}

fn parse_cluster_id(text: &str) -> Result<u64, String> {
    match u64::from_str_radix(text.trim_start_matches("0x"), 16) {
        Ok(0) => Err("a cluster id is never 0".into()),
        Ok(id) => Ok(id),
        Err(e) => Err(format!("not a hexadecimal cluster id: {e}")),
    }
}

impl ServeArgs {
    /// The node name from the flag or $HOSTNAME.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default()
    }

    /// Key and value limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// Protocol timing.
    pub fn timing(&self) -> Timing {
        Timing {
            tick: Duration::from_millis(10),
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(10)),
            election: Duration::from_millis(self.election_timeout_ms.max(50)),
            election_stagger: Duration::from_millis(self.election_stagger_ms.max(10)),
        }
    }

    /// Log compaction thresholds.
    pub fn compaction(&self) -> CompactionPolicy {
        CompactionPolicy {
            max_entries: self.snapshot_entries.max(16),
            max_bytes: self.snapshot_mb.max(1) << 20,
            keep_entries: (self.snapshot_entries / 2).max(8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_take_a_bare_port() {
        assert_eq!(
            parse_listen(":7381").map(|a| a.to_string()),
            Ok("0.0.0.0:7381".into())
        );
        assert_eq!(
            parse_listen("127.0.0.1:0").map(|a| a.to_string()),
            Ok("127.0.0.1:0".into())
        );
        assert_eq!(parse_listen("[::1]:7379").map(|a| a.port()), Ok(7379));
        assert!(parse_listen(":").is_err());
        assert!(parse_listen("7381").is_err());
    }
}
