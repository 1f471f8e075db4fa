//! `kvctl`: the command-line client for kvstore.
//!
//! Exit codes, one meaning each: 0 done; 1 the answer is no (a key not
//! found, a compare that failed); 2 the request is wrong or was refused (bad
//! usage, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...); 3 no endpoint could be
//! reached or answered in time; 4 a write's outcome is unknown (it may have
//! been applied). Errors print one line on stderr. `kvctl bench` exits 0
//! once its run completed, even if requests failed (the report counts
//! them), 2 for flags that make no run, 3 when it cannot set up (no
//! endpoint reached, no leader, the preload or the watches failed).
//! `kvctl top` exits 0 when it ends (q, Ctrl-C, or `--duration` over), 3
//! if no pod answered it at all.

mod bench;
mod cli;
mod commands;
mod exit;
mod member;
mod output;
mod snapshot;
mod status;
mod top;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;

use kvstore_client::{Client, RetryPolicy};
use kvstore_proto::kv::{Consistency as ProtoConsistency, WatchRequest};

use cli::{Cli, Cmd, SnapshotCmd};
use commands::RangeQuery;
use exit::fail;
use watch::WatchOptions;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoints = cli.endpoint_list();
    let tls = match cli.tls() {
        Ok(tls) => tls,
        Err(e) => return fail(e),
    };
    match cli.command {
        // The bench runs on a multi-threaded runtime of its own.
        Cmd::Bench(args) => bench::main(
            args,
            bench::Globals {
                endpoints,
                consistency: cli.consistency,
                json: cli.json,
                timeout_s: cli.timeout,
            },
        ),
        // The view runs on a runtime of its own, until it ends.
        Cmd::Top(args) => top::main(args, endpoints, tls),
        command => {
            // One request at a time: one thread is plenty.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("kvctl: cannot start the runtime: {e}");
                    // Not 1, which means "the answer is no".
                    return ExitCode::from(2);
                }
            };
            let policy = RetryPolicy {
                budget: Duration::from_secs(cli.timeout),
                ..RetryPolicy::default()
            };
            let settings = Settings {
                json_out: cli.json,
                consistency: cli.consistency.into(),
                policy,
            };
            runtime.block_on(async {
                let request_timeout = Duration::from_secs(cli.timeout.max(1));
                let mut client =
                    match Client::with_tls(&endpoints, policy, request_timeout, tls.as_ref()) {
                        Ok(c) => c,
                        Err(e) => return fail(e),
                    };
                let out = std::io::stdout();
                dispatch(command, &mut client, &mut out.lock(), &settings).await
            })
        }
    }
}

/// The global flags every command may use.
struct Settings {
    /// Print JSON instead of text.
    json_out: bool,
    /// Read consistency.
    consistency: ProtoConsistency,
    /// How the client retries, for the clients `status` opens per node.
    policy: RetryPolicy,
}

/// Runs one subcommand and gives its exit code.
async fn dispatch(
    command: Cmd,
    client: &mut Client,
    out: &mut impl Write,
    settings: &Settings,
) -> ExitCode {
    let json_out = settings.json_out;
    let consistency = settings.consistency;
    match command {
        Cmd::Put { key, value, prev } => {
            commands::put(client, out, json_out, key, value, prev).await
        }
        Cmd::Get { key, min_revision } => {
            commands::get(client, out, json_out, consistency, key, min_revision).await
        }
        Cmd::Del { key, prefix } => commands::del(client, out, json_out, key, prefix).await,
        Cmd::Range {
            start,
            end,
            prefix,
            limit,
            keys_only,
        } => {
            let query = RangeQuery {
                start,
                end,
                prefix,
                limit,
                keys_only,
            };
            commands::range(client, out, json_out, consistency, query).await
        }
        Cmd::Cas {
            key,
            expected,
            new,
            absent,
        } => commands::cas(client, out, json_out, key, expected, new, absent).await,
        Cmd::Watch {
            key,
            prefix,
            rev,
            count,
        } => {
            let req = WatchRequest {
                key: key.into(),
                range_end: Bytes::new(),
                prefix,
                start_revision: rev,
                prev_kv: false,
            };
            let opts = WatchOptions { count, json_out };
            // Interrupting a watch is its normal end.
            tokio::select! {
                code = watch::watch(client, out, req, opts) => code,
                _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            }
        }
        Cmd::Status { no_follow } => {
            status::status(client, out, json_out, settings.policy, no_follow).await
        }
        Cmd::TransferLeader { ordinal } => commands::transfer_leader(client, out, ordinal).await,
        Cmd::Member { action } => member::member(client, out, json_out, action).await,
        Cmd::Snapshot {
            action: SnapshotCmd::Save { file },
        } => snapshot::save(client, out, json_out, consistency, file).await,
        Cmd::Snapshot {
            action: SnapshotCmd::Status { file },
        } => snapshot::status(out, json_out, file),
        // Run by `main` on runtimes of their own, never dispatched here.
        Cmd::Bench(_) | Cmd::Top(_) => ExitCode::from(2),
    }
}
