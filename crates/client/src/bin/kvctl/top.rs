//! `kvctl top`: the live view of the cluster (the kvstore-top crate), fed
//! by a [`StatusPoller`] over the endpoints and TLS of kvctl's global
//! flags.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use kvstore_client::poll::StatusPoller;
use kvstore_client::TlsOptions;
use kvstore_top::{status_timeout, TopOptions};

// The flags of `kvctl top` (doc comments on clap types are help text).
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// Milliseconds between polls (each asks every pod for its status).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
    /// Print plain lines even on a terminal (the default when the output
    /// is not one): one per event, and one per pod every --pods-every
    /// seconds.
    #[arg(long)]
    plain: bool,
    /// Stop after this many seconds (default: run until q, Esc or Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Plain lines: one line per pod every this many seconds (0: never).
    #[arg(long, default_value_t = 5)]
    pods_every: u64,
    /// Only ask the endpoints given (through a port-forward the peers'
    /// pod addresses are not reachable).
    #[arg(long)]
    no_follow: bool,
}

/// Runs the view; exits 0 once it ends, 3 if no pod ever answered, 2 if
/// the terminal could not be used.
pub(crate) fn main(args: TopArgs, endpoints: Vec<String>, tls: Option<TlsOptions>) -> ExitCode {
    let interval = Duration::from_millis(args.interval_ms);
    let opts = TopOptions {
        interval,
        duration: args.duration.map(Duration::from_secs),
        plain: args.plain,
        pods_every: Duration::from_secs(args.pods_every),
        title: "kvctl top".into(),
    };
    let follow = !args.no_follow;
    let mut poller = StatusPoller::new(&endpoints, tls, status_timeout(interval), follow);
    match kvstore_top::run(&opts, &mut poller, None) {
        Ok(_) if poller.ever_answered() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("kvctl: no endpoint answered ({})", endpoints.join(","));
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("kvctl: {e}");
            ExitCode::from(2)
        }
    }
}
