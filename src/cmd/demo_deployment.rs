//! `kvstore demo --as-deployment`: see `kvstore_box::demo::run_as_deployment`.

use std::process::ExitCode;

use serde_json::{json, Value};

use kvstore_box::demo::{deployment_summary, run_as_deployment, ControllerRun, DemoOptions};

/// Runs the kill under a StatefulSet and under a Deployment, prints the
/// narration, the two-column table, and with `json` the report as JSON;
/// exit code 0 only if no acknowledged write was lost in either run.
pub fn run(opts: &DemoOptions, json: bool) -> ExitCode {
    let mut say = |line: String| println!("{line}");
    let report = match run_as_deployment(opts, &mut say) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvstore demo --as-deployment: {e}");
            return ExitCode::from(1);
        }
    };
    println!();
    println!("{}", deployment_summary(&report));
    if json {
        let doc = json!({
            "window_ms": report.window.as_millis() as u64,
            "statefulset": run_json(&report.statefulset),
            "deployment": run_json(&report.deployment),
            "elapsed_ms": report.elapsed.as_millis() as u64,
        });
        println!("{doc}");
    }
    if report.lost() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One run's figures as JSON.
fn run_json(r: &ControllerRun) -> Value {
    let reads = &r.old_name;
    json!({
        "pod": r.pod,
        "accepted": r.acceptance.accepted,
        "evidence": r.acceptance.evidence,
        "restored_ms": r.restored_after.map(|d| d.as_millis() as u64),
        "bytes_to_copy": r.bytes_to_copy,
        "leader_stored_bytes": r.leader_stored_bytes,
        "held_bytes": r.held_bytes,
        "old_name": {
            "ok_before_kill": reads.ok_before_kill,
            "ok_after_kill": reads.ok_after_kill,
            "nxdomain_after_kill": reads.nxdomain_after_kill,
            "errors_after_kill": reads.errors_after_kill,
            "first_ok_after_kill_ms": reads.first_ok_after_kill.map(|d| d.as_millis() as u64),
        },
        "acked": r.acked,
        "unknown": r.unknown,
        "lost": r.lost.len(),
        "linearizable": r.linearizable == kvstore_lincheck::Verdict::Linearizable,
    })
}
