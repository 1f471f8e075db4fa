//! `kvctl bench`: a closed-loop load generator for kvstore and for etcd,
//! speaking each store's own gRPC API through the generated clients (no
//! retry layer), with HDR latency histograms.
//!
//! `--concurrency` workers each keep one request in flight (put, get of a
//! preloaded keyspace, or a compare-and-swap txn) over `--connections`
//! HTTP/2 connections, after `--warmup` seconds of unmeasured load, until
//! `--ops` requests or `--duration` seconds, whichever comes first. Or, with
//! `--op watch`, `--watchers` streams on one prefix and one writer at
//! `--rate` puts per second.
//!
//! The report is a table, or with `--json` one object with the fields
//! `backend`, `op`, `consistency`, `concurrency`, `connections`, `ops`
//! (answered requests: successes and failed compares; for watch,
//! acknowledged puts), `elapsed_s`, `ops_per_s`, `latency_ms` (`p50`,
//! `p90`, `p99`, `max`, `mean`; for watch, of deliveries), `errors` (failed
//! requests by gRPC code name), `compare_failed`, and for watch
//! `events_expected` and `events_delivered`.
//!
//! Exit codes: 0 when the run completed, even with failed requests; 2 for
//! flags that make no run; 3 when the store cannot be reached, has no
//! leader, or the preload or the watches could not be set up.

mod args;
mod backend;
mod cas;
mod data;
mod preload;
mod progress;
mod report;
mod runner;
mod tally;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) use args::BenchArgs;

use crate::cli::Consistency;
use args::{BackendKind, OpKind, Plan, Target};
use backend::{Conn, Connections, SetupError};
use report::{Context, Report};
use runner::Workload;

/// kvctl's global flags, as the bench uses them.
pub(crate) struct Globals {
    /// The endpoints given (or kvctl's default ones).
    pub(crate) endpoints: Vec<String>,
    /// Read consistency for get.
    pub(crate) consistency: Consistency,
    /// Print JSON instead of a table.
    pub(crate) json: bool,
    /// The most one request, connecting, or finding the leader may take.
    pub(crate) timeout_s: u64,
}

/// Runs `kvctl bench` on a runtime of its own: a multi-threaded one, so
/// that the load generator is not one core's worth of work.
pub(crate) fn main(args: BenchArgs, globals: Globals) -> ExitCode {
    let plan = match Plan::new(
        &args,
        globals.endpoints,
        globals.consistency,
        globals.timeout_s,
    ) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("kvctl: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
    let result = runtime.block_on(async {
        match plan.backend {
            BackendKind::Kvstore => bench::<backend::kvstore::Kvstore>(&plan).await,
            BackendKind::Etcd => bench::<backend::etcd::Etcd>(&plan).await,
        }
    });
    match result {
        Ok(report) => {
            let text = if globals.json {
                format!("{}\n", report.json())
            } else {
                report.table()
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvctl: bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Connects, prepares (preload), runs and reports one benchmark of a
/// store whose connections are `C`.
async fn bench<C: Conn>(plan: &Plan) -> Result<Report, SetupError> {
    let conns = Connections::<C>::open(plan).await?;
    let label = format!("{} {}", plan.backend.name(), plan.op.name());
    let measured = match plan.op {
        OpKind::Watch => watch::run(plan, &conns, label).await?,
        op => {
            let workload = if plan.preload {
                eprintln!(
                    "kvctl: bench: preloading {} keys of {} bytes (not measured)",
                    plan.keyspace.len(),
                    plan.value_size
                );
                let value = preload::preload(plan, &conns).await?;
                match op {
                    OpKind::Txn => Workload::Txn(
                        Arc::new(cas::CasBook::new(plan.keyspace.len(), &value)),
                        plan.value_size,
                    ),
                    _ => Workload::Get(plan.consistency),
                }
            } else if op == OpKind::Get {
                Workload::Get(plan.consistency)
            } else {
                Workload::Put(data::filler(plan.value_size))
            };
            runner::run(plan, &conns, workload, label).await
        }
    };
    let context = Context {
        target: target_text(plan.target, &conns.endpoints),
        watchers: plan.watchers,
        rate: plan.rate,
    };
    Ok(Report::new(plan, conns.conns.len(), &measured, context))
}

/// Where the connections went, for the table.
fn target_text(target: Target, endpoints: &[String]) -> String {
    let mut distinct: Vec<&str> = Vec::new();
    for e in endpoints {
        if !distinct.contains(&e.as_str()) {
            distinct.push(e);
        }
    }
    match target {
        Target::Leader => format!("the leader, {}", distinct.join(",")),
        Target::All => format!("all endpoints, {}", distinct.join(",")),
    }
}
