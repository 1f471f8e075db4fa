//! `kvctl bench`'s flags, and the checked plan they make.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cli::Consistency;

use super::data::Keyspace;

/// The longest run when no `--duration` is given, in seconds: every run has
/// a time limit, so a stalled cluster cannot keep the bench going forever.
pub(crate) const DEFAULT_MAX_DURATION_S: f64 = 60.0;
/// The number of operations when neither `--ops` nor `--duration` is given.
pub(crate) const DEFAULT_OPS: u64 = 20_000;

// Doc comments on the clap types below are their help text.

// The `bench` subcommand's own flags (`--endpoints`, `--consistency`,
// `--json` and `--timeout` are kvctl's global flags).
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// The store to measure: kvstore, or etcd (the endpoints are then the
    /// host:port of etcd's client URLs).
    #[arg(long, value_enum, default_value = "kvstore")]
    pub(crate) backend: BackendKind,
    /// The operation: put; get (of a preloaded keyspace, at --consistency);
    /// txn (compare-and-swap on a key's value); watch (--watchers streams
    /// on one prefix, one writer putting at --rate).
    #[arg(long, value_enum, default_value = "put")]
    pub(crate) op: OpKind,
    /// Closed-loop workers, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// gRPC channels (HTTP/2 connections); workers are spread over them
    /// round-robin. With --target all, at least one per endpoint.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) keyspace: u64,
    /// Key size in bytes (keys are zero-padded decimal indexes).
    #[arg(long, default_value_t = 8)]
    pub(crate) key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) value_size: usize,
    /// Measured operations, all workers together (default 20000 unless
    /// --duration is given). With --op watch: the writer's puts.
    #[arg(long)]
    pub(crate) ops: Option<u64>,
    /// Longest measured time in seconds (default 60); the run stops at
    /// --ops or --duration, whichever comes first.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Seconds of load before measuring starts (requests in it are not
    /// counted).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// leader: send everything to the leader (found through the
    /// endpoints); all: spread the connections over every endpoint.
    #[arg(long, value_enum, default_value = "leader")]
    pub(crate) target: Target,
    /// With --op watch: the number of watch streams.
    #[arg(long, default_value_t = 100)]
    pub(crate) watchers: usize,
    /// With --op watch: the writer's puts per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// With --op get: read the keys an earlier run loaded (the same
    /// --keyspace and --key-size) instead of loading them first; keys that
    /// are not there are read as misses.
    #[arg(long)]
    pub(crate) no_preload: bool,
}

// The `--backend` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    Kvstore,
    Etcd,
}

// The `--op` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OpKind {
    Put,
    Get,
    Txn,
    Watch,
}

// The `--target` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    Leader,
    All,
}

impl BackendKind {
    /// The name used in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Kvstore => "kvstore",
            BackendKind::Etcd => "etcd",
        }
    }
}

impl OpKind {
    /// The name used in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Txn => "txn",
            OpKind::Watch => "watch",
        }
    }

    /// Whether the keyspace is written before measuring (reads need keys
    /// to read, compare-and-swaps values to compare).
    pub(crate) fn preloads(self) -> bool {
        matches!(self, OpKind::Get | OpKind::Txn)
    }
}

/// The name of a consistency in the report.
pub(crate) fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Serializable => "serializable",
    }
}

/// A flag value that cannot make a run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum ArgError {
    /// A count that must be at least one.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A number of seconds that is negative, not a number, or too large.
    #[error("--{0} must be a number of seconds, at least 0 (and above 0 for --duration)")]
    Seconds(&'static str),
    /// Keys too short for the keyspace's indexes.
    #[error(
        "--key-size {key_size} cannot hold {keyspace} distinct keys (it needs {needed} bytes)"
    )]
    KeyTooShort {
        /// The key size asked for.
        key_size: usize,
        /// The keyspace asked for.
        keyspace: u64,
        /// The smallest key size that holds it.
        needed: usize,
    },
    /// A watch value too small for the timestamp it carries.
    #[error("--value-size must be at least {0} with --op watch (the value carries the send time)")]
    WatchValueTooSmall(usize),
    /// A rate that is not a positive number.
    #[error("--rate must be a number of puts per second above 0")]
    Rate,
    /// No endpoints.
    #[error("no endpoints given (--endpoints)")]
    NoEndpoints,
    /// `--no-preload` with an operation other than get.
    #[error(
        "--no-preload is for --op get only (a compare-and-swap must know the values it compares)"
    )]
    NoPreloadNotGet,
}

/// Everything a run needs, checked.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The store.
    pub(crate) backend: BackendKind,
    /// The operation.
    pub(crate) op: OpKind,
    /// Read consistency (for get).
    pub(crate) consistency: Consistency,
    /// Closed-loop workers.
    pub(crate) concurrency: usize,
    /// gRPC channels asked for.
    pub(crate) connections: usize,
    /// The keys.
    pub(crate) keyspace: Keyspace,
    /// Value size in bytes.
    pub(crate) value_size: usize,
    /// Measured operations at most (`None`: until the duration ends).
    pub(crate) ops: Option<u64>,
    /// Measured time at most.
    pub(crate) duration: Duration,
    /// Unmeasured load first.
    pub(crate) warmup: Duration,
    /// Where the connections go.
    pub(crate) target: Target,
    /// The endpoints given.
    pub(crate) endpoints: Vec<String>,
    /// The most one request (or connecting, or finding the leader) may take.
    pub(crate) request_timeout: Duration,
    /// Watch streams (for watch).
    pub(crate) watchers: usize,
    /// The watch writer's puts per second (for watch).
    pub(crate) rate: f64,
    /// Whether the keyspace is written before measuring.
    pub(crate) preload: bool,
}

/// The smallest value that carries a watch timestamp: nanoseconds since
/// the UNIX epoch as 20 decimal digits.
pub(crate) const TIMESTAMP_DIGITS: usize = 20;

impl Plan {
    /// Checks the flags and resolves the defaults: with neither `--ops`
    /// nor `--duration`, 20000 operations within 60 s; with `--duration`
    /// alone, no operation limit.
    pub(crate) fn new(
        args: &BenchArgs,
        endpoints: Vec<String>,
        consistency: Consistency,
        timeout_s: u64,
    ) -> Result<Plan, ArgError> {
        if endpoints.is_empty() {
            return Err(ArgError::NoEndpoints);
        }
        for (name, value) in [
            ("concurrency", args.concurrency as u64),
            ("connections", args.connections as u64),
            ("keyspace", args.keyspace),
            ("key-size", args.key_size as u64),
            ("ops", args.ops.unwrap_or(1)),
            ("watchers", args.watchers as u64),
        ] {
            if value == 0 {
                return Err(ArgError::Zero(name));
            }
        }
        let duration = match args.duration {
            Some(s) => seconds(s).filter(|d| !d.is_zero()),
            None => seconds(DEFAULT_MAX_DURATION_S),
        }
        .ok_or(ArgError::Seconds("duration"))?;
        let warmup = seconds(args.warmup).ok_or(ArgError::Seconds("warmup"))?;
        let ops = match (args.ops, args.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_OPS),
        };
        let keyspace = if args.op == OpKind::Watch {
            Keyspace::under_prefix(b"w", args.keyspace, args.key_size)
        } else {
            Keyspace::new(args.keyspace, args.key_size)
        }?;
        if args.op == OpKind::Watch && args.value_size < TIMESTAMP_DIGITS {
            return Err(ArgError::WatchValueTooSmall(TIMESTAMP_DIGITS));
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            return Err(ArgError::Rate);
        }
        if args.no_preload && args.op != OpKind::Get {
            return Err(ArgError::NoPreloadNotGet);
        }
        Ok(Plan {
            backend: args.backend,
            op: args.op,
            consistency,
            concurrency: args.concurrency,
            connections: args.connections,
            keyspace,
            value_size: args.value_size,
            ops,
            duration,
            warmup,
            target: args.target,
            endpoints,
            request_timeout: Duration::from_secs(timeout_s.max(1)),
            watchers: args.watchers,
            rate: args.rate,
            preload: args.op.preloads() && !args.no_preload,
        })
    }
}

/// A number of seconds as a duration, if it is one (finite, not negative,
/// at most a day).
fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && (0.0..=86_400.0).contains(&s)).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(flags: &[&str]) -> Result<Plan, ArgError> {
        let args = Wrap::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .expect("flags parse")
            .args;
        Plan::new(
            &args,
            vec!["127.0.0.1:1".into()],
            Consistency::Linearizable,
            10,
        )
    }

    #[test]
    fn defaults_are_twenty_thousand_ops_within_sixty_seconds() {
        let p = plan(&[]).expect("plan");
        assert_eq!(p.ops, Some(20_000));
        assert_eq!(p.duration, Duration::from_secs(60));
        assert_eq!(p.warmup, Duration::from_secs(1));
        assert_eq!((p.concurrency, p.connections), (1, 1));
        assert_eq!((p.value_size, p.watchers), (256, 100));
        assert_eq!(p.keyspace.len(), 10_000);
        assert_eq!(p.target, Target::Leader);
    }

    #[test]
    fn duration_alone_lifts_the_ops_limit_and_both_keep_both() {
        let p = plan(&["--duration", "5"]).expect("plan");
        assert_eq!((p.ops, p.duration), (None, Duration::from_secs(5)));
        let p = plan(&["--duration", "5", "--ops", "10"]).expect("plan");
        assert_eq!((p.ops, p.duration), (Some(10), Duration::from_secs(5)));
        let p = plan(&["--ops", "10"]).expect("plan");
        assert_eq!((p.ops, p.duration), (Some(10), Duration::from_secs(60)));
    }

    #[test]
    fn bad_values_are_refused_with_their_flag() {
        assert_eq!(
            plan(&["--concurrency", "0"]).err(),
            Some(ArgError::Zero("concurrency"))
        );
        assert_eq!(plan(&["--ops", "0"]).err(), Some(ArgError::Zero("ops")));
        assert_eq!(
            plan(&["--duration", "0"]).err(),
            Some(ArgError::Seconds("duration"))
        );
        assert_eq!(
            plan(&["--warmup=-1"]).err(),
            Some(ArgError::Seconds("warmup"))
        );
        assert_eq!(
            plan(&["--keyspace", "1000", "--key-size", "2"]).err(),
            Some(ArgError::KeyTooShort {
                key_size: 2,
                keyspace: 1000,
                needed: 3
            })
        );
        assert_eq!(
            plan(&["--op", "watch", "--value-size", "8"]).err(),
            Some(ArgError::WatchValueTooSmall(TIMESTAMP_DIGITS))
        );
        assert_eq!(
            plan(&["--op", "watch", "--rate", "0"]).err(),
            Some(ArgError::Rate)
        );
        assert!(Wrap::try_parse_from(["bench", "--backend", "redis"]).is_err());
    }

    /// `--no-preload` reads what an earlier run loaded; a compare-and-swap
    /// cannot skip the load (it must know the values it compares).
    #[test]
    fn no_preload_is_for_gets_only() {
        assert!(plan(&["--op", "get"]).expect("plan").preload);
        assert!(
            !plan(&["--op", "get", "--no-preload"])
                .expect("plan")
                .preload
        );
        assert!(!plan(&["--op", "put"]).expect("plan").preload);
        assert_eq!(
            plan(&["--op", "txn", "--no-preload"]).err(),
            Some(ArgError::NoPreloadNotGet)
        );
        assert_eq!(
            plan(&["--op", "put", "--no-preload"]).err(),
            Some(ArgError::NoPreloadNotGet)
        );
    }

    #[test]
    fn no_endpoints_is_an_error() {
        let args = Wrap::try_parse_from(["bench"]).expect("parse").args;
        assert_eq!(
            Plan::new(&args, vec![], Consistency::Linearizable, 10).err(),
            Some(ArgError::NoEndpoints)
        );
    }
}
