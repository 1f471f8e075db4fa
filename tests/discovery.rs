//! Discovery through headless-Service DNS: real node processes pointed at
//! the embedded DNS server find their peers by name, follow a pod that moves,
//! pick up a pod that appears late, and refuse bad flags at start-up.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use kvstore::proto::kv::{Consistency, GetRequest, StatusResponse};
use kvstore_box::dns::{DnsServer, HeadlessService};
use kvstore_client::{Client, RetryPolicy};
use kvstore_testkit::process::{kvstore_bin, run_bounded, NodeProcess, Subnet};

fn zone(net: Subnet, pods: &[u32]) -> HeadlessService {
    HeadlessService {
        domain: "cluster.local".into(),
        namespace: "default".into(),
        service: "kvstore-headless".into(),
        set: "kvstore".into(),
        ports: vec![("grpc".into(), 7379), ("peer".into(), 7380)],
        pods: pods.iter().map(|&n| (n, IpAddr::V4(net.pod(n)))).collect(),
        ttl: 5,
    }
}

fn pod(dir: &std::path::Path, net: Subnet, n: u32, dns: &DnsServer) -> NodeProcess {
    NodeProcess::start_at(
        &format!("kvstore-{n}"),
        &dir.join(format!("kvstore-{n}")),
        net.pod(n),
        &["--replicas", "3", "--dns-server", &dns.addr().to_string()],
    )
}

fn status(rt: &tokio::runtime::Runtime, node: &NodeProcess) -> Option<StatusResponse> {
    rt.block_on(async { node.client().status_of(0).await.ok() })
}

fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Peer addresses by ordinal, as node `node` reports them.
fn peer_addresses(
    rt: &tokio::runtime::Runtime,
    node: &NodeProcess,
) -> BTreeMap<u32, (String, bool)> {
    status(rt, node)
        .map(|s| {
            s.peers
                .into_iter()
                .map(|p| (p.ordinal, (p.address, p.in_srv)))
                .collect()
        })
        .unwrap_or_default()
}

/// A node pointed at the embedded DNS server lists every peer with its
/// ordinal, DNS name and address, all found through DNS (A and SRV records).
#[test]
fn status_lists_every_peer_found_by_dns() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = rt.enter();
    let net = Subnet::new();
    let dns = rt
        .block_on(DnsServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            zone(net, &[0, 1, 2]),
        ))
        .expect("dns");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes: Vec<NodeProcess> = (0..3).map(|n| pod(dir.path(), net, n, &dns)).collect();
    wait(
        "every peer resolved and listed in SRV",
        Duration::from_secs(20),
        || {
            let peers = peer_addresses(&rt, &nodes[0]);
            peers.len() == 2 && peers.values().all(|(a, srv)| !a.is_empty() && *srv)
        },
    );
    let s = status(&rt, &nodes[0]).expect("status");
    for p in &s.peers {
        assert_eq!(p.name, format!("kvstore-{}", p.ordinal));
        assert_eq!(
            p.dns_name,
            format!(
                "kvstore-{}.kvstore-headless.default.svc.cluster.local",
                p.ordinal
            )
        );
        assert_eq!(p.address, format!("{}:7380", net.pod(p.ordinal)));
        assert_eq!(p.client_address, format!("{}:7379", net.pod(p.ordinal)));
    }
}

/// A pod that moves to a new IP is followed: within seconds the others
/// resolve its new address and replicate to it there.
#[test]
fn moved_pod_is_found_at_its_new_address() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = rt.enter();
    let net = Subnet::new();
    let dns = rt
        .block_on(DnsServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            zone(net, &[0, 1, 2]),
        ))
        .expect("dns");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<NodeProcess> = (0..3).map(|n| pod(dir.path(), net, n, &dns)).collect();
    let endpoints: Vec<String> = nodes.iter().map(|n| n.endpoint()).collect();
    let mut client =
        Client::new(&endpoints, RetryPolicy::default(), Duration::from_secs(5)).expect("client");
    rt.block_on(client.put("before-move", "1")).expect("put");
    // Pod 2 is rescheduled: same name and volume, new address.
    let new_ip = net.ip(77);
    dns.set_pod(2, IpAddr::V4(new_ip));
    nodes[2].move_to(new_ip);
    let moved_at = Instant::now();
    wait(
        "the new address in node 0's view",
        Duration::from_secs(10),
        || {
            peer_addresses(&rt, &nodes[0])
                .get(&2)
                .map(|(a, _)| a.clone())
                == Some(format!("{new_ip}:7380"))
        },
    );
    let rev = rt
        .block_on(client.put("after-move", "2"))
        .expect("put")
        .header
        .expect("header")
        .revision;
    let mut moved = nodes[2].client();
    let got = rt
        .block_on(moved.get_request(GetRequest {
            key: "after-move".into(),
            consistency: Consistency::Serializable as i32,
            min_revision: rev,
        }))
        .expect("the moved pod receives new writes");
    assert_eq!(got.kv.expect("kv").value, bytes::Bytes::from("2"));
    println!("moved pod followed within {:?}", moved_at.elapsed());
}

/// A peer whose name does not exist for 10 s and then appears is picked up
/// without restarting anyone: the cluster then forms.
#[test]
fn late_peer_is_picked_up_without_restart() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = rt.enter();
    let net = Subnet::new();
    let dns = rt
        .block_on(DnsServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            zone(net, &[0, 1]),
        ))
        .expect("dns");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<NodeProcess> = (0..2).map(|n| pod(dir.path(), net, n, &dns)).collect();
    std::thread::sleep(Duration::from_secs(10));
    let peers = peer_addresses(&rt, &nodes[0]);
    assert_eq!(
        peers.get(&2).map(|(a, srv)| (a.as_str(), *srv)),
        Some(("", false)),
        "kvstore-2 does not exist yet"
    );
    assert!(
        nodes[0].log().contains("does not resolve"),
        "the missing name is logged"
    );
    dns.set_pod(2, IpAddr::V4(net.pod(2)));
    nodes.push(pod(dir.path(), net, 2, &dns));
    wait(
        "kvstore-2 resolved by kvstore-0",
        Duration::from_secs(10),
        || {
            peer_addresses(&rt, &nodes[0])
                .get(&2)
                .is_some_and(|(a, _)| !a.is_empty())
        },
    );
    let endpoints: Vec<String> = nodes.iter().map(|n| n.endpoint()).collect();
    let mut client =
        Client::new(&endpoints, RetryPolicy::default(), Duration::from_secs(5)).expect("client");
    let put = rt
        .block_on(client.put("formed", "yes"))
        .expect("the cluster formed once kvstore-2 appeared");
    let revision = put.header.expect("header").revision;
    // The late pod itself holds the write: a member, not a bystander.
    let mut on_late = Client::new(
        &[nodes[2].endpoint()],
        RetryPolicy::default(),
        Duration::from_secs(10),
    )
    .expect("client");
    let got = rt
        .block_on(on_late.get_request(kvstore::proto::kv::GetRequest {
            key: "formed".into(),
            consistency: kvstore::proto::kv::Consistency::Serializable as i32,
            min_revision: revision,
        }))
        .expect("a read on kvstore-2 at the write's revision");
    assert_eq!(got.kv.map(|kv| kv.value), Some("yes".into()));
    assert!(got.header.expect("header").revision >= revision);
}

/// Bad discovery flags are clear errors at start-up, not hangs.
#[test]
fn bad_discovery_flags_fail_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--replicas", "3", "--dns-server", "no-such-host.invalid:53"],
            "cannot resolve --dns-server",
        ),
        (
            &["--replicas", "3", "--peer-name-template", "{set}-{ord}"],
            "malformed --peer-name-template",
        ),
        (&["--replicas", "0"], "--replicas must be at least 1"),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let (code, _, stderr) = run_bounded(
            Command::new(kvstore_bin())
                .args([
                    "serve",
                    "--node-name",
                    "kvstore-0",
                    "--listen",
                    "127.0.0.1:0",
                    "--peer-listen",
                    "127.0.0.1:0",
                ])
                .arg("--data-dir")
                .arg(dir.path().join("d"))
                .args(args),
            Duration::from_secs(30),
        );
        assert_ne!(code, 0, "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}
