//! `kvctl bench`, the real binary, against a real one-member node in this
//! process (the test kit's `in_process`): a small smoke run of every
//! operation, checked through its JSON report. Counts only, no timings: a
//! busy CI machine makes any latency bound flaky.

use std::process::Command;
use std::time::{Duration, Instant};

use kvstore_testkit::in_process::{start_node, InProcessNode};
use kvstore_testkit::process::run_bounded;
use serde_json::Value;

/// Operations per smoke run.
const OPS: u64 = 200;

/// Runs kvctl against `endpoint` and returns (exit code, stdout, stderr).
async fn kvctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    cmd.arg("--endpoints").arg(endpoint).args(args);
    // kvctl blocks this thread until it exits, while the node it talks to
    // is served by this runtime: wait for it off the runtime's threads.
    tokio::task::spawn_blocking(move || run_bounded(&mut cmd, Duration::from_secs(120)))
        .await
        .expect("the kvctl runner")
}

/// Starts the node and waits (generously) until it leads.
async fn leading_node() -> InProcessNode {
    let node = start_node().await;
    let mut client = node.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = client
            .member_list()
            .await
            .ok()
            .and_then(|l| l.header)
            .map(|h| h.leader);
        if leader.as_deref() == Some("kvstore-0") {
            return node;
        }
        assert!(Instant::now() < deadline, "kvstore-0 did not become leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one bench with `--json` and the smoke settings plus `args`, checks
/// that it completed with every operation answered and no error, and
/// gives its report.
async fn bench(endpoint: &str, args: &[&str]) -> Value {
    let ops = OPS.to_string();
    let mut all = vec![
        "--json",
        "bench",
        "--ops",
        &ops,
        "--warmup",
        "0",
        "--concurrency",
        "4",
        "--keyspace",
        "50",
    ];
    all.extend_from_slice(args);
    let (code, out, err) = kvctl(endpoint, &all).await;
    assert_eq!(code, 0, "kvctl {all:?}: {err}");
    let report: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("kvctl {all:?} printed no JSON ({e}): {out}"));
    assert_eq!(report["ops"], OPS, "{args:?}: {report}");
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "{args:?}: {report}"
    );
    assert_eq!(report["backend"], "kvstore");
    let latency = &report["latency_ms"];
    for field in ["p50", "p90", "p99", "max", "mean"] {
        assert!(latency[field].as_f64().is_some(), "{field}: {report}");
    }
    assert!(
        latency["p50"].as_f64() <= latency["max"].as_f64(),
        "{report}"
    );
    report
}

/// Every operation of `kvctl bench` runs to its count against a real
/// node: put, get both ways, txn (whose failed compares are answers, not
/// errors), and a watch fan-out that delivers every event to every watcher.
#[tokio::test(flavor = "multi_thread")]
async fn bench_smoke_runs_every_operation() {
    let node = leading_node().await;
    let ep = node.endpoint();

    let put = bench(&ep, &["--op", "put"]).await;
    assert_eq!(
        (&put["op"], &put["concurrency"], &put["connections"]),
        (&"put".into(), &4.into(), &1.into())
    );
    assert!(put.get("events_expected").is_none(), "{put}");

    let get = bench(&ep, &["--op", "get", "--consistency", "linearizable"]).await;
    assert_eq!(
        (&get["op"], &get["consistency"]),
        (&"get".into(), &"linearizable".into())
    );
    let get = bench(
        &ep,
        &[
            "--op",
            "get",
            "--consistency",
            "serializable",
            "--connections",
            "2",
        ],
    )
    .await;
    assert_eq!(
        (&get["consistency"], &get["connections"]),
        (&"serializable".into(), &2.into())
    );

    let txn = bench(&ep, &["--op", "txn"]).await;
    assert!(txn["compare_failed"].as_u64() <= Some(OPS), "{txn}");

    let watch = bench(
        &ep,
        &["--op", "watch", "--watchers", "10", "--rate", "1000"],
    )
    .await;
    assert_eq!(watch["events_expected"], OPS * 10, "{watch}");
    assert_eq!(
        watch["events_delivered"], watch["events_expected"],
        "{watch}"
    );

    // The table, for people.
    let (code, out, err) = kvctl(&ep, &["bench", "--ops", "20", "--warmup", "0"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("kvstore put\n"), "{out}");
    assert!(out.contains("errors        none"), "{out}");
    node.stop().await;
}

/// A cluster that cannot be reached is a setup failure (exit 3), and flags
/// that make no run are refused (exit 2), both before any load.
#[tokio::test(flavor = "multi_thread")]
async fn bench_setup_failures_exit_non_zero() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let (code, out, err) = kvctl(&closed, &["--timeout", "1", "bench", "--ops", "10"]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("kvctl: bench:"), "{err}");
    assert!(out.is_empty(), "no report: {out}");

    let (code, _, err) = kvctl(&closed, &["bench", "--concurrency", "0"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--concurrency must be at least 1"), "{err}");
}
