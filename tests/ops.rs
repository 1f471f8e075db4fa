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
    let (leader, _) = b.wait("a leader", Duration::from_secs(60), |b| b.leader());
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
    assert!(after > before);
}
