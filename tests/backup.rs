//! Backup and restore end to end, with real processes, real sled dirs and
//! the embedded DNS (the cluster in a box): a 3-member cluster holding
//! 10,000 keys (binary keys, 1 MiB values, keys written several times, a
//! deleted one) is saved by the real `kvctl snapshot save`, checked by
//! `kvctl snapshot status`, restored by `kvstore restore` onto pod-0's
//! empty data dir of a new box whose other pods start empty, and compared
//! key by key, byte for byte, with every revision and version, on every
//! member; the watch history and the revision carry over, the new cluster
//! takes writes, and damaged copies of the file are refused by both
//! commands. Each test runs on its own loopback subnet and temp dir.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kvstore::proto::kv::{
    request_op, Consistency, DeleteRequest, Event, KeyValue, PutRequest, RequestOp, TxnRequest,
    WatchRequest,
};
use kvstore_client::{Client, RetryPolicy};
use kvstore_testkit::bins::{kvctl_bin, kvstore_bin};
use kvstore_testkit::box_cluster::BoxCluster;
use kvstore_testkit::process::run_bounded;

/// Keys the test writes (and the snapshot holds).
const KEYS: usize = 10_000;
/// Of them, with a 1 MiB value.
const BIG: usize = 5;
/// Of them, written three times.
const REWRITTEN: usize = 5;
/// Of them, binary (not UTF-8).
const BINARY: usize = 990;
/// Puts per transaction for the bulk of the keys.
const PER_TXN: usize = 100;

/// The i-th binary key: starts with 0xff, never valid UTF-8.
fn binary_key(i: usize) -> Bytes {
    Bytes::from(vec![0xff, 0x00, (i >> 8) as u8, i as u8, 0x80])
}

/// A 1 MiB value that is not text and differs per key.
fn big_value(i: usize) -> Bytes {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn put_op(key: Bytes, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(PutRequest {
            key,
            value,
            prev_kv: false,
        })),
    }
}

/// Writes the 10,000 keys and a deleted one; returns the last revision.
async fn write_keys(client: &mut Client) -> u64 {
    let mut last = 0;
    let text = KEYS - BINARY - BIG - REWRITTEN;
    let mut pending: Vec<RequestOp> = Vec::new();
    let keys = (0..text)
        .map(|i| put_op(format!("t/{i:05}").into(), format!("value {i}").into()))
        .chain((0..BINARY).map(|i| put_op(binary_key(i), Bytes::from(vec![i as u8, 0xfe]))));
    let mut keys = keys.peekable();
    while let Some(op) = keys.next() {
        pending.push(op);
        if pending.len() == PER_TXN || keys.peek().is_none() {
            let txn = TxnRequest {
                compare: Vec::new(),
                success: std::mem::take(&mut pending),
                failure: Vec::new(),
            };
            let resp = client.txn(txn).await.expect("a transaction of puts");
            last = resp.header.expect("header").revision;
        }
    }
    for i in 0..BIG {
        let resp = client
            .put(format!("big/{i}"), big_value(i))
            .await
            .expect("put 1 MiB");
        last = resp.header.expect("header").revision;
    }
    for round in 0..3 {
        for i in 0..REWRITTEN {
            let resp = client
                .put(format!("v/{i}"), format!("round {round}"))
                .await
                .expect("put");
            last = resp.header.expect("header").revision;
        }
    }
    client.put("gone", "soon").await.expect("put");
    let resp = client
        .delete(DeleteRequest {
            key: Bytes::from_static(b"gone"),
            ..Default::default()
        })
        .await
        .expect("delete");
    last.max(resp.header.expect("header").revision)
}

/// Every key with its value and metadata, read page by page.
async fn all_keys(client: &mut Client, consistency: Consistency) -> Vec<KeyValue> {
    client
        .scan(Bytes::new(), Bytes::new(), u64::MAX, consistency, false)
        .await
        .expect("scan every key")
}

/// The events of revisions `from..=to`, as a watch replays them.
async fn history(client: &mut Client, from: u64, to: u64) -> Vec<Event> {
    let mut stream = client
        .watch(WatchRequest {
            key: Bytes::new(),
            range_end: Bytes::new(),
            prefix: true,
            start_revision: from,
            prev_kv: false,
        })
        .await
        .expect("watch");
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Event| e.revision < to) {
        let resp = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the history within 30 s")
            .expect("watch stream")
            .expect("the watch goes on");
        events.extend(resp.events);
    }
    events.retain(|e| e.revision <= to);
    events
}

/// The figure after `name` in kvctl's or restore's text output.
fn figure(output: &str, name: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in:\n{output}"))
}

fn kvctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    run_bounded(
        Command::new(kvctl_bin())
            .args(["--endpoints", endpoints, "--timeout", "60"])
            .args(args),
        Duration::from_secs(300),
    )
}

fn restore(snapshot: &Path, data_dir: &Path) -> (i32, String, String) {
    run_bounded(
        Command::new(kvstore_bin())
            .arg("restore")
            .arg("--snapshot")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--node-name", "kvstore-0"])
            .env_remove("KVSTORE_DATA_DIR")
            .env_remove("KVSTORE_CLUSTER_ID"),
        Duration::from_secs(300),
    )
}

/// 10,000 keys saved with kvctl and restored with `kvstore restore` into a
/// fresh 3-member cluster come back byte for byte with their create and
/// mod revisions and versions on every member, with their watch history,
/// at the snapshot's revision; the new cluster takes writes after it; and
/// a truncated or bit-flipped copy of the file is refused by
/// `kvctl snapshot status` and by `kvstore restore`.
#[test]
fn a_backup_restores_into_a_new_cluster_byte_for_byte() {
    let files = tempfile::tempdir().expect("tempdir");
    let snapshot = files.path().join("kvstore.snap");

    // ----- the source cluster: write, read back, save -----
    let source = BoxCluster::start(3, &[], Duration::from_millis(500));
    let endpoints = source.endpoints.join(",");
    let mut client = source.client();
    let (last_write, want, want_history) = source.rt.block_on(async {
        let last = write_keys(&mut client).await;
        let keys = all_keys(&mut client, Consistency::Linearizable).await;
        let events = history(&mut client, last - 40, last).await;
        (last, keys, events)
    });
    assert_eq!(want.len(), KEYS, "the source holds every key");
    assert!(want.iter().any(|kv| kv.version == 3));
    assert!(want_history.iter().any(|e| e.revision == last_write));

    let (code, out, err) = kvctl(
        &endpoints,
        &["snapshot", "save", snapshot.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0, "kvctl snapshot save: {out}{err}");
    let revision = figure(&out, "revision");
    let bytes = figure(&out, "bytes");
    assert_eq!(figure(&out, "keys"), KEYS as u64, "{out}");
    assert!(
        revision >= last_write,
        "linearizable: every acknowledged write is in it"
    );
    assert_eq!(bytes, std::fs::metadata(&snapshot).expect("the file").len());
    assert!(bytes > (BIG << 20) as u64);
    assert!(
        !files.path().join("kvstore.snap.part").exists(),
        "the .part file was renamed"
    );
    println!("snapshot: revision {revision}, {KEYS} keys, {bytes} bytes");

    let (code, status_out, err) = kvctl(
        &endpoints,
        &["snapshot", "status", snapshot.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0, "kvctl snapshot status: {status_out}{err}");
    for name in ["revision", "keys", "bytes", "sha256"] {
        let line = |o: &str| o.lines().find(|l| l.starts_with(name)).map(str::to_string);
        assert_eq!(
            line(&status_out),
            line(&out),
            "status and save agree on {name}"
        );
    }
    let source_cluster = cluster_id(&source.status(0).expect("status").cluster_id);
    assert_ne!(source_cluster, 0);
    drop(client);
    drop(source);

    // ----- damaged copies are refused by both commands -----
    let good = std::fs::read(&snapshot).expect("read the snapshot");
    let truncated = files.path().join("truncated.snap");
    std::fs::write(&truncated, &good[..good.len() - 1000]).expect("write");
    let flipped = files.path().join("flipped.snap");
    let mut bad = good.clone();
    bad[good.len() / 3] ^= 0x04;
    std::fs::write(&flipped, &bad).expect("write");
    for damaged in [&truncated, &flipped] {
        let (code, out, err) = kvctl(
            &endpoints,
            &["snapshot", "status", damaged.to_str().expect("utf-8")],
        );
        assert_eq!(code, 1, "status of {}: {out}{err}", damaged.display());
        let dir = files.path().join("refused");
        let (code, out, err) = restore(damaged, &dir);
        assert_eq!(code, 1, "restore of {}: {out}{err}", damaged.display());
        assert_eq!(
            std::fs::read_dir(&dir).expect("the dir").count(),
            0,
            "nothing written"
        );
    }

    // ----- restore onto pod-0's volume of a new box; the others start empty -----
    let volumes = tempfile::tempdir().expect("tempdir");
    let pod0 = volumes.path().join("kvstore-0");
    let (code, out, err) = restore(&snapshot, &pod0);
    assert_eq!(code, 0, "kvstore restore: {out}{err}");
    assert_eq!(figure(&out, "revision"), revision);
    assert_eq!(figure(&out, "keys"), KEYS as u64);
    let new_cluster = out
        .split_whitespace()
        .skip_while(|w| *w != "cluster")
        .nth(1)
        .map(cluster_id)
        .unwrap_or_else(|| panic!("no new cluster id in:\n{out}"));
    let (code, out, err) = restore(&snapshot, &pod0);
    assert_eq!(code, 2, "a second restore into the same dir: {out}{err}");
    {
        let state = kvstore::state::KvState::open(&pod0.join("state"), 8 << 20, 10_000)
            .expect("open the restored state");
        assert_eq!(
            state.applied().0,
            revision,
            "the restored state is at the snapshot's revision"
        );
    }

    let restored = BoxCluster::start_in(
        volumes,
        3,
        &[],
        Duration::from_millis(500),
        kvstore_bin().as_ref(),
    );
    // pod-0 leads a cluster of one; the empty pods join as learners, get
    // a Raft snapshot and are promoted.
    restored.wait_members(&[0, 1, 2], &[], Duration::from_secs(180));
    let mut client = restored.client();
    restored.rt.block_on(async {
        let got = all_keys(&mut client, Consistency::Linearizable).await;
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "every key, value, revision and version, byte for byte"
        );
        let events = history(&mut client, last_write - 40, last_write).await;
        assert_eq!(events, want_history, "the watch history carries over");
        for n in 1..3 {
            let mut member = Client::new(
                &[restored.pod_endpoint(n)],
                RetryPolicy {
                    budget: Duration::from_secs(60),
                    ..RetryPolicy::default()
                },
                Duration::from_secs(10),
            )
            .expect("client");
            let got = all_keys(&mut member, Consistency::Serializable).await;
            assert!(
                got == want,
                "kvstore-{n} holds the same keys, byte for byte"
            );
        }
        let resp = client.put("after-restore", "yes").await.expect("a write");
        let at = resp.header.expect("header").revision;
        assert!(
            at > revision,
            "new revisions follow the snapshot's ({at} > {revision})"
        );
        let kv = client
            .get("after-restore", Consistency::Linearizable)
            .await
            .expect("get")
            .kv
            .expect("the key");
        assert_eq!((kv.value.as_ref(), kv.create_revision), (&b"yes"[..], at));
    });
    let cluster_ids: Vec<u64> = (0..3)
        .map(|n| cluster_id(&restored.status(n).expect("status").cluster_id))
        .collect();
    assert!(
        cluster_ids.iter().all(|&id| id == new_cluster),
        "every member is in the restored cluster {new_cluster:x}: {cluster_ids:x?}"
    );
    assert_ne!(new_cluster, source_cluster, "a new cluster id");
}

/// A cluster id as Status shows it (hex); 0 when there is none.
fn cluster_id(hex: &str) -> u64 {
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap_or(0)
}
