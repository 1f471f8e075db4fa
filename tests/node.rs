//! One node through its real gRPC server: durability across SIGKILL, identity
//! checks, graceful shutdown and kvctl against a frozen server as real
//! processes; watch, compare-and-swap, bad input and kvctl's commands
//! against a node in the test's own process (nothing there needs a crash).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvstore::proto::kv::kv_client::KvClient;
use kvstore::proto::kv::{
    request_op, Compare, Consistency, DeleteRequest, EventType, GetRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchRequest,
};
use kvstore::server::ServeOptions;
use kvstore_client::{Client, RetryPolicy};
use kvstore_testkit::in_process::{start_node, start_node_tuned};
use kvstore_testkit::process::{kvctl_bin, run_bounded, NodeProcess};
use tonic::Code;

fn single(dir: &std::path::Path) -> NodeProcess {
    NodeProcess::start("kvstore-0", &dir.join("kvstore-0"), &["--replicas", "1"])
}

async fn raw(endpoint: &str) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20)
}

/// 10,000 puts acknowledged to 16 concurrent clients survive a SIGKILL of the
/// server: after a restart on the same data dir every key has the value and
/// revision it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = single(dir.path());
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut client = node.client();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..625 {
                let key = format!("client-{c}/key-{i}");
                let value = format!("value-{c}-{i}");
                let resp = client.put(key.clone(), value.clone()).await.expect("put");
                acked.push((key, value, resp.header.expect("header").revision));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("client task"));
    }
    assert_eq!(acked.len(), 10_000);
    node.kill();
    node.restart();
    let mut client = node.client();
    for (key, value, revision) in &acked {
        let kv = client
            .get(key.clone(), Consistency::Serializable)
            .await
            .expect("get")
            .kv
            .unwrap_or_else(|| panic!("acknowledged key {key} is gone after the crash"));
        assert_eq!(kv.value, Bytes::from(value.clone()), "{key}");
        assert_eq!(kv.mod_revision, *revision, "{key}");
    }
}

/// A data dir made for kvstore-1 is refused by kvstore-2, naming both.
#[test]
fn data_dir_of_another_pod_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pv");
    {
        let mut first = NodeProcess::start("kvstore-1", &data, &["--replicas", "3"]);
        first
            .terminate(Duration::from_secs(20))
            .expect("kvstore-1 exits");
    }
    let (code, _, stderr) = run_bounded(
        Command::new(kvstore_testkit::process::kvstore_bin())
            .args([
                "serve",
                "--node-name",
                "kvstore-2",
                "--replicas",
                "3",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--peer-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
        Duration::from_secs(20),
    );
    // Exits by itself (-1 would be the kill at the deadline), refusing.
    assert!(
        code > 0,
        "kvstore-2 must exit by itself, refusing the volume (exit {code}): {stderr}"
    );
    assert!(
        stderr.contains("data dir")
            && stderr.contains("belongs to kvstore-1, this pod is kvstore-2: refusing to start"),
        "the refusal names both pods: {stderr}"
    );
}

/// A name without an ordinal is refused with a clear message.
#[test]
fn name_without_ordinal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run_bounded(
        Command::new(kvstore_testkit::process::kvstore_bin())
            .args([
                "serve",
                "--node-name",
                "kvstore",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path()),
        Duration::from_secs(20),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("no ordinal"), "{stderr}");
}

/// A watch from revision 1 on a prefix gets every event under it exactly
/// once and in revision order, across stored history and live writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_history_into_live_exactly_once() {
    let node = start_node().await;
    let mut client = node.client();
    // (revision, key, type) of every change under the prefix, as acknowledged.
    let mut expected: Vec<(u64, String, i32)> = Vec::new();
    for i in 0..200 {
        let key = format!("w/{}", i % 37);
        let rev = client
            .put(key.clone(), format!("{i}"))
            .await
            .expect("put")
            .header
            .expect("h")
            .revision;
        expected.push((rev, key, EventType::Put as i32));
        client.put(format!("other/{i}"), "x").await.expect("put");
    }
    let mut stream = client
        .watch(WatchRequest {
            key: Bytes::from("w/"),
            prefix: true,
            start_revision: 1,
            ..Default::default()
        })
        .await
        .expect("watch");
    // Live writes while the watch replays history.
    let mut writer = node.client();
    let live = tokio::spawn(async move {
        let mut more = Vec::new();
        for i in 0..300 {
            let key = format!("w/{}", i % 41);
            if i % 10 == 9 {
                let resp = writer
                    .delete(DeleteRequest {
                        key: Bytes::from(key.clone()),
                        ..Default::default()
                    })
                    .await
                    .expect("delete");
                if resp.deleted > 0 {
                    more.push((
                        resp.header.expect("h").revision,
                        key,
                        EventType::Delete as i32,
                    ));
                }
            } else {
                let rev = writer
                    .put(key.clone(), format!("live-{i}"))
                    .await
                    .expect("put")
                    .header
                    .expect("h")
                    .revision;
                more.push((rev, key, EventType::Put as i32));
            }
        }
        more
    });
    let more = live.await.expect("writer");
    expected.extend(more);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.len() && Instant::now() < deadline {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch stalled")
            .expect("stream")
            .expect("stream open");
        for ev in msg.events {
            let kv = ev.kv.expect("kv");
            seen.push((
                ev.revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
                ev.r#type,
            ));
        }
    }
    assert_eq!(seen, expected, "every event once, in revision order");
}

/// A watcher that falls behind (its client stopped reading) catches up in
/// fewer, larger responses, with every event once and in order: the
/// batches waiting for it are sent together instead of one response each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_catches_up_in_fewer_responses() {
    const PUTS: usize = 160;
    let node = start_node().await;
    let mut client = node.client();
    let mut stream = client
        .watch(WatchRequest {
            key: Bytes::from("big/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("watch");
    // 40 MiB: far more than HTTP/2's windows and the sockets hold while
    // the stream is not read, so the server's watcher has to wait.
    let value = Bytes::from(vec![b'v'; 256 << 10]);
    let mut expected = Vec::new();
    for i in 0..PUTS {
        let resp = client
            .put(format!("big/{}", i % 8), value.clone())
            .await
            .expect("put");
        expected.push(resp.header.expect("header").revision);
    }
    let mut seen = Vec::new();
    let mut responses = 0;
    while seen.len() < expected.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("watch stalled")
            .expect("stream")
            .expect("stream open");
        responses += 1;
        seen.extend(msg.events.iter().map(|e| e.revision));
    }
    assert_eq!(seen, expected, "every event once, in revision order");
    assert!(
        responses <= PUTS * 3 / 4,
        "{responses} responses for {PUTS} events"
    );
}

/// A watch from a compacted revision fails with OUT_OF_RANGE naming the
/// oldest revision available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_history_is_out_of_range() {
    let node = start_node_tuned(|cfg| cfg.history_revisions = 10, ServeOptions::default()).await;
    let mut client = node.client();
    for i in 0..1200 {
        client.put("k", format!("{i}")).await.expect("put");
    }
    let err = match client
        .watch(WatchRequest {
            key: Bytes::from("k"),
            start_revision: 1,
            ..Default::default()
        })
        .await
    {
        Ok(_) => panic!("a watch from compacted history must fail"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err}");
    assert!(
        err.to_string().contains("oldest available revision"),
        "{err}"
    );
}

/// Two clients each doing 1,000 compare-and-swap increments of one counter
/// (retrying when the compare fails) leave it at exactly 2,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_counter() {
    let node = start_node().await;
    let mut setup = node.client();
    setup.put("counter", "0").await.expect("init");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut client = node.client();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut attempts = 0;
            while done < 1000 {
                attempts += 1;
                assert!(attempts < 100_000, "no progress");
                let current = client
                    .get("counter", Consistency::Linearizable)
                    .await
                    .expect("get")
                    .kv
                    .expect("kv")
                    .value;
                let n: u64 = std::str::from_utf8(&current)
                    .expect("utf8")
                    .parse()
                    .expect("number");
                let resp = client
                    .compare_and_swap("counter", Some(current), (n + 1).to_string())
                    .await
                    .expect("cas");
                if resp.succeeded {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let v = setup
        .get("counter", Consistency::Linearizable)
        .await
        .expect("get")
        .kv
        .expect("kv")
        .value;
    assert_eq!(v, Bytes::from("2000"));
}

/// Every kind of bad input is INVALID_ARGUMENT naming the limit or rule, and
/// the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_harmless() {
    let node = start_node().await;
    let mut kv = raw(&node.endpoint()).await;
    kv.put(PutRequest {
        key: Bytes::from("ok"),
        value: Bytes::from("still here"),
        prev_kv: false,
    })
    .await
    .expect("put");
    let big_key = Bytes::from(vec![b'k'; 4097]);
    let big_value = Bytes::from(vec![b'v'; (1 << 20) + 1]);
    let put = |key: Bytes, value: Bytes| PutRequest {
        key,
        value,
        prev_kv: false,
    };
    let checks: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "empty key",
            kv.put(put(Bytes::new(), Bytes::from("v")))
                .await
                .map(|_| ()),
            "empty",
        ),
        (
            "key over limit",
            kv.put(put(big_key.clone(), Bytes::new())).await.map(|_| ()),
            "4096 bytes",
        ),
        (
            "value over limit",
            kv.put(put(Bytes::from("k"), big_value)).await.map(|_| ()),
            "1048576 bytes",
        ),
        (
            "get with a key over limit",
            kv.get(GetRequest {
                key: big_key,
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "4096 bytes",
        ),
        (
            "inverted range",
            kv.range(RangeRequest {
                key: Bytes::from("b"),
                range_end: Bytes::from("a"),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "inverted range",
        ),
        (
            "unknown consistency",
            kv.get(GetRequest {
                key: Bytes::from("ok"),
                consistency: 99,
                min_revision: 0,
            })
            .await
            .map(|_| ()),
            "unknown consistency",
        ),
        (
            "unknown compare target",
            kv.txn(TxnRequest {
                compare: vec![Compare {
                    key: Bytes::from("ok"),
                    target: 42,
                    result: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "unknown compare target",
        ),
        (
            "empty transaction op",
            kv.txn(TxnRequest {
                success: vec![RequestOp { request: None }],
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "empty",
        ),
        (
            "double write in a transaction",
            kv.txn(TxnRequest {
                success: vec![
                    RequestOp {
                        request: Some(request_op::Request::Put(put(
                            Bytes::from("a"),
                            Bytes::new(),
                        ))),
                    },
                    RequestOp {
                        request: Some(request_op::Request::Put(put(
                            Bytes::from("a"),
                            Bytes::new(),
                        ))),
                    },
                ],
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "at most once",
        ),
    ];
    for (what, result, needle) in checks {
        let status = result.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            status.message()
        );
    }
    // A message far over the size limit is refused by the transport, also
    // without harm.
    let huge = kv
        .put(put(Bytes::from("k"), Bytes::from(vec![0u8; 8 << 20])))
        .await;
    assert!(huge.is_err());
    let got = kv
        .get(GetRequest {
            key: Bytes::from("ok"),
            ..Default::default()
        })
        .await
        .expect("the node still serves")
        .into_inner();
    assert_eq!(got.kv.expect("kv").value, Bytes::from("still here"));
}

/// SIGTERM in the middle of a stream of writes: the node exits 0 and every
/// acknowledged write is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = single(dir.path());
    let endpoint = node.endpoint();
    let mut writers = Vec::new();
    for w in 0..4 {
        let endpoint = endpoint.clone();
        writers.push(tokio::spawn(async move {
            let policy = RetryPolicy {
                budget: Duration::from_millis(200),
                writes: kvstore_client::WriteRetry::Never,
                ..RetryPolicy::default()
            };
            let mut client =
                Client::new(&[endpoint], policy, Duration::from_secs(5)).expect("client");
            let mut acked = BTreeMap::new();
            for i in 0..100_000u32 {
                let key = format!("t{w}/{i}");
                match client.put(key.clone(), i.to_string()).await {
                    Ok(_) => {
                        acked.insert(key, i.to_string());
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = node
        .terminate(Duration::from_secs(30))
        .expect("the node exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(
        acked.len() > 10,
        "the writers made progress before SIGTERM ({})",
        acked.len()
    );
    node.restart();
    let mut client = node.client();
    for (key, value) in &acked {
        let kv = client
            .get(key.clone(), Consistency::Serializable)
            .await
            .expect("get")
            .kv;
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(Bytes::from(value.clone())),
            "{key} after SIGTERM"
        );
    }
}

/// kvctl against a dead endpoint prints one clear line and exits non-zero.
#[test]
fn kvctl_dead_endpoint_is_one_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (code, stdout, stderr) = run_bounded(
        Command::new(kvctl_bin()).args([
            "--endpoints",
            &addr.to_string(),
            "--timeout",
            "2",
            "get",
            "k",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 3, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

/// kvctl's exit codes mean one thing each: a frozen server (it accepts
/// connections and never answers) is 3, "no endpoint answers in time", like
/// a dead one, not 2; a refused request is 2; a missing key is 1; a key
/// listing with no limit lists every key, past the 1,000 of a page.
#[test]
fn kvctl_exit_codes_mean_one_thing_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single(dir.path());
    let kvctl = |args: &[&str]| {
        run_bounded(
            Command::new(kvctl_bin())
                .args(["--endpoints", &node.endpoint(), "--timeout", "2"])
                .args(args),
            Duration::from_secs(30),
        )
    };
    let (code, _, stderr) = kvctl(&["get", "missing"]);
    assert_eq!(code, 1, "{stderr}");
    let (code, _, stderr) = kvctl(&["put", "", "v"]);
    assert_eq!(code, 2, "{stderr}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = node.client();
        for batch in 0..13 {
            let puts = (0..100)
                .map(|i| RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: Bytes::from(format!("many/{batch:02}/{i:03}")),
                        value: Bytes::from("x"),
                        prev_kv: false,
                    })),
                })
                .collect();
            client
                .txn(TxnRequest {
                    success: puts,
                    ..Default::default()
                })
                .await
                .expect("txn");
        }
    });
    let (code, out, _) = kvctl(&["ls", "--prefix", "many/", "--keys-only"]);
    assert_eq!(
        (code, out.lines().count()),
        (0, 1300),
        "every key, not one page"
    );
    kvstore_testkit::process::signal(node.pid(), libc::SIGSTOP);
    let (code, stdout, stderr) = kvctl(&["get", "k"]);
    kvstore_testkit::process::signal(node.pid(), libc::SIGCONT);
    assert_eq!(
        code, 3,
        "a frozen server: stdout {stdout:?} stderr {stderr:?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
}

/// kvctl's commands work end to end, with text and JSON output.
#[test]
fn kvctl_commands() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node = rt.block_on(start_node());
    let kvctl = |args: &[&str]| {
        run_bounded(
            Command::new(kvctl_bin())
                .args(["--endpoints", &node.endpoint()])
                .args(args),
            Duration::from_secs(30),
        )
    };
    assert_eq!(kvctl(&["put", "app/a", "1"]).0, 0);
    assert_eq!(kvctl(&["put", "app/b", "2"]).0, 0);
    let (code, out, _) = kvctl(&["get", "app/a"]);
    assert_eq!((code, out.trim()), (0, "1"));
    let (code, out, _) = kvctl(&["--json", "get", "app/b"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["value"], "2");
    let (code, out, _) = kvctl(&["ls", "--prefix", "app/"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    assert_eq!(kvctl(&["cas", "app/a", "1", "5"]).0, 0);
    assert_eq!(
        kvctl(&["cas", "app/a", "1", "6"]).0,
        1,
        "a failed compare exits 1"
    );
    assert_eq!(kvctl(&["cas", "--absent", "app/c", "x"]).0, 0);
    let (code, out, _) = kvctl(&["watch", "app/a", "--rev", "1", "--count", "2"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = kvctl(&["del", "--prefix", "app/"]);
    assert_eq!((code, out.trim()), (0, "3"));
    assert_eq!(kvctl(&["get", "app/a"]).0, 1, "not found exits 1");
    let (code, out, _) = kvctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("kvstore-0") && out.contains("leader"), "{out}");
}

/// A snapshot stream that breaks off, or whose pair count does not add up,
/// is refused with DATA_LOSS and leaves the member's data as it was: what
/// arrived is dropped, whatever the writer was still doing with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_snapshot_is_refused_and_changes_nothing() {
    use kvstore::proto::peer::peer_client::PeerClient;
    use kvstore::proto::peer::{Pair, SnapshotChunk, SnapshotHeader};

    let node = start_node().await;
    let mut client = node.client();
    client.put("kept", "before").await.expect("put");
    let mut peer = PeerClient::connect(node.peer_uri())
        .await
        .expect("peer port");
    let header = SnapshotHeader {
        cluster_id: node.handle.state().cluster_id(),
        from: 1,
        to: 0,
        term: 1_000,
        index: 1_000,
        index_term: 1_000,
    };
    // Several chunks of 1 MiB, so that some are still being written when
    // the stream ends.
    let chunk = |first: bool, i: usize| SnapshotChunk {
        header: first.then_some(header),
        pairs: vec![Pair {
            key: Bytes::from(format!("dkept-{i}")),
            value: Bytes::from(vec![b'x'; 1 << 20]),
        }],
        last: false,
        total_pairs: 0,
    };
    let broken_off: Vec<SnapshotChunk> = (0..8).map(|i| chunk(i == 0, i)).collect();
    let mut miscounted = broken_off.clone();
    miscounted.push(SnapshotChunk {
        header: None,
        pairs: Vec::new(),
        last: true,
        total_pairs: 9,
    });
    for (case, chunks) in [("broken off", broken_off), ("miscounted", miscounted)] {
        let status = peer
            .install_snapshot(futures::stream::iter(chunks))
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::DataLoss, "{case}: {status}");
        let got = client
            .get("kept", Consistency::Linearizable)
            .await
            .expect("get")
            .kv
            .expect("kv");
        assert_eq!(got.value, Bytes::from("before"), "{case}");
        assert!(
            client
                .get("kept-0", Consistency::Linearizable)
                .await
                .expect("get")
                .kv
                .is_none(),
            "{case}: nothing of the snapshot is visible"
        );
    }
}
