//! `kvstore demo`: see `kvstore_box::demo`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::config::DemoArgs;
use kvstore_box::demo::{
    run as run_demo, run_sessions, sessions_summary, summary, DemoOptions, Report,
};
use kvstore_lincheck::Verdict;

/// Runs the demonstration (with `--sessions`, that one); exit code 0 only if
/// nothing acknowledged was lost and the history is linearizable.
pub fn run(args: DemoArgs) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kvstore: cannot find the kvstore binary: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = DemoOptions {
        dir: args.dir,
        base_ip: args.base_ip,
        client_port: args.client_port,
        peer_port: args.peer_port,
        replicas: args.replicas,
        // With --scale the demo is about scaling; kills only if asked for.
        kills: args
            .kills
            .unwrap_or(if args.scale.is_some() { 0 } else { 1 }),
        rolling_restart: args.rolling_restart,
        scale_via: args.scale,
        writers: args.writers,
        readers: args.readers,
        restart_delay: Duration::from_millis(args.restart_delay_ms),
        binary,
        serve_args: args.serve_args,
        tls: args.tls,
        timeline: (!args.no_timeline).then_some(args.timeline),
    };
    if args.sessions {
        return sessions(&opts, args.json);
    }
    if args.as_deployment {
        return super::demo_deployment::run(&opts, args.json);
    }
    let result = if args.top {
        super::demo_top::run(&opts)
    } else {
        run_demo(&opts, &mut |line: String| println!("{line}"))
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvstore demo: {e}");
            return ExitCode::from(1);
        }
    };
    println!();
    println!("{}", summary(&report));
    if args.json {
        println!("{}", report_json(&report));
    }
    if report.lost.is_empty() && report.linearizable == Verdict::Linearizable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The failover demonstration's report as `--json` prints it.
fn report_json(report: &Report) -> serde_json::Value {
    let failovers: Vec<_> = report
        .failovers
        .iter()
        .map(|f| {
            json!({
                "killed": f.killed, "new_leader": f.new_leader, "term": f.term,
                "election_ms": f.election.as_millis() as u64, "write_gap_ms": f.write_gap.as_millis() as u64,
                "restarted_ms": f.restarted.as_millis() as u64, "catch_up_ms": f.catch_up.as_millis() as u64,
                "leadership_back_ms": f.leadership_back.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    json!({
        "failovers": failovers,
        "median_write_gap_ms": report.median_write_gap().map(|d| d.as_millis() as u64),
        "rolling": report.rolling.iter().map(|r| json!({
            "ordinal": r.ordinal, "gap_ms": r.write_gap.as_millis() as u64, "exit": r.exit,
            "was_leader": r.was_leader, "handed_over": r.handed_over,
        })).collect::<Vec<_>>(),
        "scaling": report.scaling.iter().map(|s| json!({
            "from": s.from, "to": s.to, "took_ms": s.took.as_millis() as u64,
            "write_gap_ms": s.write_gap.as_millis() as u64, "events": s.events,
        })).collect::<Vec<_>>(),
        "acked": report.acked, "unknown": report.unknown, "lost": report.lost.len(),
        "linearizable": report.linearizable == Verdict::Linearizable, "history_ops": report.history_ops,
    })
}

/// Runs `kvstore demo --sessions`; exit code 0 only if no read with the
/// revision token missed its session's write and no acknowledged write was
/// lost.
fn sessions(opts: &DemoOptions, json: bool) -> ExitCode {
    let mut say = |line: String| println!("{line}");
    let report = match run_sessions(opts, &mut say) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvstore demo --sessions: {e}");
            return ExitCode::from(1);
        }
    };
    println!();
    println!("{}", sessions_summary(&report));
    if json {
        println!("{}", report.to_json());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
