//! The command line: global flags, subcommands, and the endpoints to use.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use kvstore_client::{ClientError, TlsOptions};
use kvstore_proto::kv::Consistency as ProtoConsistency;

/// kvctl: talk to a kvstore cluster.
#[derive(Parser, Debug)]
#[command(name = "kvctl", version, about)]
pub(crate) struct Cli {
    /// Comma-separated `host:port` client endpoints of the cluster's nodes.
    /// Default: the pods of the cluster in a box started from this
    /// directory (`.kvstore/local/state.json`), else 127.0.0.1:7379.
    #[arg(long, env = "KVCTL_ENDPOINTS", global = true)]
    pub(crate) endpoints: Option<String>,
    /// Read consistency.
    #[arg(long, value_enum, default_value = "linearizable", global = true)]
    pub(crate) consistency: Consistency,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The CA (PEM) of the servers' certificates: with it, kvctl speaks TLS.
    /// Default: the box's, when it runs with `--tls` in this directory.
    #[arg(long, env = "KVCTL_CACERT", global = true)]
    pub(crate) cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for servers that require one.
    #[arg(
        long = "cert",
        id = "client_cert",
        env = "KVCTL_CERT",
        global = true,
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    // Its own id: subcommands have a `key` argument of their own.
    #[arg(
        long = "key",
        id = "client_key",
        env = "KVCTL_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<PathBuf>,
    /// The name the servers' certificates must carry, when it is not the
    /// endpoint's host (through a port-forward to 127.0.0.1, say).
    #[arg(long, env = "KVCTL_TLS_SERVER_NAME", global = true)]
    pub(crate) tls_server_name: Option<String>,
    /// Give up on a command after this many seconds of retries.
    #[arg(long, default_value_t = 10, global = true)]
    pub(crate) timeout: u64,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

// Doc comments on the clap types below are their help text, so the types
// themselves carry plain comments only.

// The `--consistency` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Consistency {
    Linearizable,
    Serializable,
}

impl From<Consistency> for ProtoConsistency {
    fn from(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Linearizable => ProtoConsistency::Linearizable,
            Consistency::Serializable => ProtoConsistency::Serializable,
        }
    }
}

// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Print the previous value.
        #[arg(long)]
        prev: bool,
    },
    /// Read KEY.
    Get {
        key: String,
        /// Wait until the answering node has applied this revision.
        #[arg(long, default_value_t = 0)]
        min_revision: u64,
    },
    /// Delete KEY, or every key under it with --prefix.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// List keys in [START, END) in key order (all keys by default, read
    /// page by page).
    #[command(alias = "ls")]
    Range {
        /// First key (or the prefix with --prefix).
        start: Option<String>,
        /// End key, exclusive.
        end: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Most keys to print (0: all of them).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print only keys.
        #[arg(long)]
        keys_only: bool,
    },
    /// Compare-and-swap: set KEY to NEW only if its value is EXPECTED.
    /// With --absent, only if KEY does not exist (then give KEY and NEW).
    Cas {
        key: String,
        /// The expected value (omit with --absent).
        expected: Option<String>,
        /// The new value.
        new: Option<String>,
        /// Require that the key does not exist.
        #[arg(long)]
        absent: bool,
    },
    /// Print changes to KEY (or a prefix) as they happen. When the node
    /// answering it stops, the watch resumes on another from the next
    /// revision, so no change is missed or printed twice.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (replays history first).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Stop after this many events (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Show every node as a table: the endpoints given, and the peers they
    /// report (at the addresses they resolve them to).
    Status {
        /// Only ask the endpoints given (through a port-forward the peers'
        /// pod addresses are not reachable).
        #[arg(long)]
        no_follow: bool,
    },
    /// A live view of the cluster, refreshed several times a second: each
    /// pod's role, term, leader, commit and applied revisions, lag and
    /// health, the rate of acknowledged writes, and a log of events
    /// (elections, leadership transfers, pods down and back, catching up,
    /// membership changes). Plain lines when the output is not a terminal.
    Top(crate::top::TopArgs),
    /// Move leadership to the member with this ordinal.
    TransferLeader { ordinal: u32 },
    /// Measure the cluster (or an etcd cluster, with --backend etcd): a
    /// closed-loop load of puts, gets, compare-and-swaps or a watch
    /// fan-out, reported as ops/s and latency percentiles. It writes keys
    /// of its own (zero-padded numbers, and under "w" for watch): use a
    /// cluster whose data does not matter. --timeout bounds each request,
    /// and the search for the leader.
    Bench(crate::bench::BenchArgs),
    /// List, add, promote or remove members, by pod name. Every node's
    /// scaling controller moves the configuration toward the desired
    /// replica count, so a change it does not want (a member at or above
    /// that count) is soon undone.
    Member {
        #[command(subcommand)]
        action: MemberCmd,
    },
    /// Save a backup of one member's state (a consistent snapshot at one
    /// revision, with --consistency: linearizable by default) to a file,
    /// or check a saved one. `kvstore restore` seeds a new cluster from it.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
}

// The `snapshot` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCmd {
    /// Stream a snapshot into FILE (through FILE.part, fsynced, its SHA-256
    /// verified, then renamed) and print its revision, key count, bytes and
    /// SHA-256.
    Save { file: PathBuf },
    /// Read FILE back and verify it whole; print the same figures. Exits 1
    /// if it is damaged or truncated.
    Status { file: PathBuf },
}

// The `member` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum MemberCmd {
    /// Show the voters and learners, the leader, each member's progress as
    /// the leader sees it, and the desired replica count.
    #[command(alias = "ls")]
    List,
    /// Add the pod NAME (`<set>-<ordinal>`, e.g. kvstore-3) as a learner: it
    /// receives the log but does not vote until promoted.
    Add { name: String },
    /// Make the learner NAME a voter (refused until it has caught up).
    Promote { name: String },
    /// Remove the voter or learner NAME (refused for the last voter, or when
    /// fewer live voters than a quorum would remain).
    Remove { name: String },
}

impl Cli {
    /// The endpoints to talk to: those given, else [`default_endpoints`].
    pub(crate) fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .clone()
            .unwrap_or_else(default_endpoints)
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// The box's state file, when kvctl runs where the box was started.
const BOX_STATE: &str = ".kvstore/local/state.json";

impl Cli {
    /// The TLS to use: the files given, else the box's client files when
    /// it runs with `--tls` and no endpoints were given, else none.
    pub(crate) fn tls(&self) -> Result<Option<TlsOptions>, ClientError> {
        let identity = self.client_cert.as_deref().zip(self.client_key.as_deref());
        if let Some(ca) = &self.cacert {
            return TlsOptions::from_files(ca, identity, self.tls_server_name.clone()).map(Some);
        }
        if self.endpoints.is_some() {
            return Ok(None);
        }
        let Some(dir) = box_tls_dir() else {
            return Ok(None);
        };
        TlsOptions::from_files(
            &dir.join("ca.crt"),
            Some((&dir.join("client.crt"), &dir.join("client.key"))),
            self.tls_server_name.clone(),
        )
        .map(Some)
    }
}

/// The box's TLS dir, if its state file names one.
fn box_tls_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string(Path::new(BOX_STATE)).ok()?;
    let v = serde_json::from_str::<Value>(&text).ok()?;
    v.get("tls_dir")?.as_str().map(PathBuf::from)
}

/// The endpoints to use when none are given: the pods of the cluster in a
/// box whose state file is under the current directory, else the usual
/// local port.
fn default_endpoints() -> String {
    let state = Path::new(BOX_STATE);
    let from_box = std::fs::read_to_string(state)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| {
            let pods = v.get("pods")?.as_array()?;
            let clients: Vec<&str> = pods
                .iter()
                .filter_map(|p| p.get("client")?.as_str())
                .collect();
            (!clients.is_empty()).then(|| clients.join(","))
        });
    from_box.unwrap_or_else(|| "127.0.0.1:7379".to_string())
}
