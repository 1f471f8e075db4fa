//! The ops port: `/healthz`, `/readyz` and `/metrics` over plain HTTP on
//! each pod; a leader kill shows in the survivors' leader-change counter.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kvstore_testkit::box_cluster::BoxCluster;

/// GET `path` from the ops port of pod `n`: (status code, body).
fn get(b: &BoxCluster, n: u32, path: &str) -> Option<(u16, String)> {
    let client = b.pod_endpoint(n);
    let ip = client.rsplit_once(':')?.0.to_string();
    let mut tcp = TcpStream::connect((ip.as_str(), 7381)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of `metric` (no labels) in pod `n`'s `/metrics`.
fn metric(b: &BoxCluster, n: u32, name: &str) -> Option<f64> {
    let (code, body) = get(b, n, "/metrics")?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn probes_and_metrics_follow_a_leader_kill() {
    let b = BoxCluster::start(
        3,
        &["--ops-listen", "{ip}:7381"],
        Duration::from_millis(500),
    );
    // Pod-0 leads whenever it is up: the lead's return below is to it.
    let (leader, _) = b.wait("pod-0 to lead", Duration::from_secs(60), |b| {
        b.leader().filter(|&(l, _)| l == 0)
    });
    let survivor = (leader + 1) % 3;
    b.wait("kvstore to be ready", Duration::from_secs(30), |b| {
        (get(b, survivor, "/readyz")?.0 == 200).then_some(())
    });
    assert_eq!(get(&b, survivor, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(metric(&b, leader, "kvstore_is_leader"), Some(1.0));
    assert_eq!(metric(&b, survivor, "kvstore_is_leader"), Some(0.0));
    assert_eq!(metric(&b, survivor, "kvstore_has_leader"), Some(1.0));
    assert!(metric(&b, survivor, "kvstore_term").is_some_and(|t| t >= 1.0));
    assert!(metric(&b, survivor, "kvstore_applied_revision").is_some());
    let before = metric(&b, survivor, "kvstore_leader_changes_total").expect("the counter");

    b.signal(leader, libc::SIGKILL);
    let after = b.wait(
        "the survivor to count the change",
        Duration::from_secs(30),
        |b| metric(b, survivor, "kvstore_leader_changes_total").filter(|&v| v > before),
    );
    assert_eq!(
        after,
        before + 1.0,
        "the kill is one change, to the successor"
    );
    // The box restarts the killed pod on its data; the lowest ordinal takes
    // the lead back: one change more, and none for the leaderless moments.
    b.wait("the lead's return", Duration::from_secs(60), |b| {
        b.leader().filter(|&(l, _)| l == leader)
    });
    let back = b.wait(
        "the survivor to count the return",
        Duration::from_secs(30),
        |b| metric(b, survivor, "kvstore_leader_changes_total").filter(|&v| v > after),
    );
    assert_eq!(back, before + 2.0);
}

/// The line of `name` with all of `labels` in pod `n`'s `/metrics`, as its
/// value.
fn labelled(b: &BoxCluster, n: u32, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, body) = get(b, n, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit_once(' ')?.1.trim().parse().ok())
}

/// Writes show in the fsync, proposal-to-commit and apply histograms, in
/// the per-RPC counters (with the status code a client saw: in the
/// trailers for a success, in the headers for an early refusal) and in the
/// space gauges; the leader exports one lag series per follower.
#[test]
fn writes_show_in_histograms_rpc_counts_and_lag() {
    let b = BoxCluster::start(
        3,
        &["--ops-listen", "{ip}:7381"],
        Duration::from_millis(500),
    );
    let (leader, _) = b.wait("a leader", Duration::from_secs(60), |b| b.leader());
    let mut client = b.client();
    b.rt.block_on(async {
        for i in 0..20u32 {
            client
                .put(format!("metrics/{i}"), vec![7u8; 100])
                .await
                .expect("put");
        }
        let refused = client.put(Vec::<u8>::new(), "v").await;
        assert!(refused.is_err(), "an empty key is refused");
    });
    let count = |n, name: &str| metric(&b, n, &format!("{name}_count"));
    let commits = count(leader, "kvstore_proposal_commit_duration_seconds");
    assert!(commits.is_some_and(|c| c >= 20.0), "{commits:?}");
    for n in 0..3 {
        let fsyncs = count(n, "kvstore_wal_fsync_duration_seconds");
        assert!(fsyncs.is_some_and(|c| c >= 1.0), "pod {n}: {fsyncs:?}");
        let applies = count(n, "kvstore_apply_duration_seconds");
        assert!(applies.is_some_and(|c| c >= 1.0), "pod {n}: {applies:?}");
    }
    // Summed over the pods: the client may have sent to any of them.
    let puts_ended_with = |code: &str| -> f64 {
        let code = format!(r#"grpc_code="{code}""#);
        let labels = [r#"grpc_method="Put""#, code.as_str()];
        (0..3)
            .filter_map(|n| labelled(&b, n, "grpc_server_handled_total", &labels))
            .sum()
    };
    let put_ok = puts_ended_with("OK");
    assert!(put_ok >= 20.0, "Put OK counted {put_ok} times");
    let put_refused = puts_ended_with("InvalidArgument");
    assert!(put_refused >= 1.0, "the refused put counted {put_refused}");
    assert!(metric(&b, leader, "kvstore_stored_bytes").is_some_and(|s| s >= 2000.0));
    assert_eq!(metric(&b, leader, "kvstore_quota_alarm"), Some(0.0));
    let free = metric(&b, leader, "kvstore_volume_free_bytes");
    assert!(free.is_some_and(|f| f > 0.0), "{free:?}");
    for n in (0..3).filter(|&n| n != leader) {
        let peer = format!(r#"peer="kvstore-{n}""#);
        let lag = b.wait("the follower's lag series", Duration::from_secs(30), |b| {
            labelled(b, leader, "kvstore_peer_lag_revisions", &[&peer])
        });
        assert!(lag >= 0.0);
        let reachable = labelled(&b, leader, "kvstore_peer_reachable", &[&peer]);
        assert_eq!(reachable, Some(1.0));
        assert_eq!(
            labelled(&b, n, "kvstore_peer_lag_revisions", &[]),
            None,
            "a follower exports no lag"
        );
    }
}

/// Past the space quota every member raises `kvstore_quota_alarm`, as
/// the alert expects.
#[test]
fn the_quota_alarm_shows_on_every_member() {
    let b = BoxCluster::start(
        3,
        &["--ops-listen", "{ip}:7381", "--quota-bytes", "20000"],
        Duration::from_millis(500),
    );
    b.wait("a leader", Duration::from_secs(60), |b| b.leader());
    assert_eq!(metric(&b, 0, "kvstore_quota_alarm"), Some(0.0));
    let mut client = b.client();
    b.rt.block_on(async {
        for i in 0..100u32 {
            if let Err(e) = client.put(format!("fill/{i}"), vec![1u8; 1024]).await {
                assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
                return;
            }
        }
        panic!("100 KiB were taken under a quota of 20,000 bytes");
    });
    for n in 0..3 {
        b.wait("the alarm in /metrics", Duration::from_secs(30), |b| {
            metric(b, n, "kvstore_quota_alarm").filter(|&v| v == 1.0)
        });
        let quota = metric(&b, n, "kvstore_quota_bytes");
        assert_eq!(quota, Some(20000.0));
    }
}
