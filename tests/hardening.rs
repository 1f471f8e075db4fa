//! Hardening against ordinary operation going wrong, with real node
//! processes on loopback: requests that would take unbounded memory, under
//! a per-pod memory limit as Kubernetes sets one.

use std::time::Duration;

use bytes::Bytes;
use kvstore::proto::kv::{
    request_op, response_op, DeleteRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use kvstore_box::local::PodEvent;
use kvstore_client::{Client, RetryPolicy};
use kvstore_testkit::box_cluster::BoxCluster;
use kvstore_testkit::memory_cap::MemoryCap;

const MIB: u64 = 1 << 20;

/// The two requests that used to take about 1 GiB and more on every replica
/// (and again at every restart, replayed from the log): a 10 KB transaction
/// of 128 range reads over 1,000 keys of 8 KiB, and a prefix delete of 256
/// MiB (128,000 keys of 2 KiB). Each pod is capped at 1 GiB: loading the
/// 256 MiB alone takes about 400 MiB per pod (sled's cache, see the README's
/// limits), which leaves about 600 MiB for the two requests. Every pod
/// stays up, both requests succeed within their bounds, and the cluster
/// still answers afterwards. (Against the binary before the bounds, the
/// transaction already fails: the replicas run out of memory.)
#[test]
fn requests_that_used_to_blow_memory_fit_a_capped_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = MemoryCap::new(dir.path(), 3, 1024 * MIB);
    println!("memory limit: {}", cap.describe());
    let c = BoxCluster::start_with_binary(
        3,
        &["--cache-mb", "64"],
        Duration::from_millis(500),
        cap.binary(),
    );
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("a leader", Duration::from_secs(60), |c| c.leader());
    let value = Bytes::from(vec![b'v'; 8 << 10]);
    for i in 0..1000 {
        c.rt.block_on(client.put(format!("p/{i:04}"), value.clone()))
            .expect("put");
    }
    let ranges = TxnRequest {
        success: (0..128)
            .map(|_| RequestOp {
                request: Some(request_op::Request::Range(RangeRequest {
                    key: Bytes::from("p/"),
                    prefix: true,
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    };
    let resp =
        c.rt.block_on(client.txn(ranges))
            .expect("the txn of 128 ranges");
    let read: usize = resp
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(response_op::Response::Range(r)) => Some(r.kvs.len()),
            _ => None,
        })
        .sum();
    println!("the txn of 128 ranges returned {read} keys");
    assert!(
        read > 0 && read < 1000,
        "the reads share one bound: {read} keys"
    );
    // 256 MiB under one prefix, written 100 keys per transaction. (Values
    // of 2 KiB: sled 0.34 keeps large values in memory whatever its cache
    // size, see the README's limits, so a 512 MiB pod cannot hold 256 MiB of
    // them at all.)
    let value = Bytes::from(vec![b'b'; 2 << 10]);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = c.client();
            let value = value.clone();
            c.rt.spawn(async move {
                for t in 0..320 {
                    let puts = (0..100)
                        .map(|i| RequestOp {
                            request: Some(request_op::Request::Put(PutRequest {
                                key: Bytes::from(format!("big/{w}/{t:04}/{i:03}")),
                                value: value.clone(),
                                prev_kv: false,
                            })),
                        })
                        .collect();
                    // The same puts again are harmless: a write of unknown
                    // outcome (a leader change under load) is repeated.
                    let txn = TxnRequest {
                        success: puts,
                        ..Default::default()
                    };
                    let mut tries = 0;
                    while let Err(e) = client.txn(txn.clone()).await {
                        tries += 1;
                        assert!(
                            tries < 5 && e.outcome_unknown(),
                            "a transaction of 100 puts: {e}"
                        );
                    }
                }
            })
        })
        .collect();
    for w in writers {
        c.rt.block_on(w).expect("writer");
    }
    let report = |when: &str| {
        for n in 0..3 {
            println!(
                "{when}: kvstore-{n} peak RSS {} MiB, OOM kills {}",
                c.peak_rss(n) / MIB,
                cap.oom_kills(n)
            );
        }
    };
    report("after the writes");
    // A delete of 128,000 keys is done in 64 steps of at most 2,000 keys:
    // it takes longer than one write, so the client gives it longer. Its
    // bound is generous: alone on the 2-core VM the whole test takes about
    // 100 s, and beside the other hardening tests the delete once took
    // more than 120 s.
    let mut patient = Client::new(
        &c.endpoints,
        RetryPolicy::default(),
        Duration::from_secs(300),
    )
    .expect("client");
    let deleted =
        c.rt.block_on(patient.delete(DeleteRequest {
            key: Bytes::from("big/"),
            prefix: true,
            ..Default::default()
        }))
        .unwrap_or_else(|e| {
            report("delete failed");
            panic!("the prefix delete of 256 MiB: {e}")
        });
    assert_eq!(deleted.deleted, 4 * 320 * 100);
    let exits: Vec<_> = c
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, PodEvent::Exited { .. }))
        .collect();
    for n in 0..3 {
        println!(
            "kvstore-{n}: peak RSS {} MiB, OOM kills {}",
            c.peak_rss(n) / MIB,
            cap.oom_kills(n)
        );
        assert_eq!(cap.oom_kills(n), 0, "kvstore-{n} was killed for memory");
    }
    assert!(exits.is_empty(), "pods exited: {exits:?}");
    for n in 0..3 {
        let status = c
            .status(n)
            .unwrap_or_else(|| panic!("kvstore-{n} does not answer"));
        assert!(status.ready, "kvstore-{n} is not ready: {status:?}");
    }
    let got =
        c.rt.block_on(client.get("p/0999", kvstore::proto::kv::Consistency::Linearizable))
            .expect("get");
    assert_eq!(got.kv.expect("kept").value.len(), 8 << 10);
}

/// What a read on a pod found.
enum Read {
    Value,
    Absent,
    Refused(String),
}

impl std::fmt::Display for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::Value => write!(f, "the value"),
            Read::Absent => write!(f, "absent"),
            Read::Refused(why) => write!(f, "refused ({why})"),
        }
    }
}

/// A follower whose volume is lost while it is frozen comes back empty
/// (the supervisor restarts it on an empty data dir, as Kubernetes does on
/// a new PVC). Until the leader's data has reached it, its readiness is
/// NOT_SERVING and a SERIALIZABLE read of an existing key answers
/// UNAVAILABLE, never "absent"; afterwards it serves the data.
#[test]
fn pod_back_on_an_empty_volume_is_not_ready_until_it_has_the_data() {
    use kvstore::proto::kv::kv_client::KvClient;
    use kvstore::proto::kv::{Consistency, GetRequest};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let c = BoxCluster::start(3, &[], Duration::from_millis(300));
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("a leader", Duration::from_secs(60), |c| c.leader());
    let value = Bytes::from(vec![b'v'; 1 << 20]);
    for i in 0..100 {
        c.rt.block_on(client.put(format!("k{i:03}"), value.clone()))
            .expect("put 1 MB");
    }
    c.wait("kvstore-2 holding the data", Duration::from_secs(60), |c| {
        let commit = c.status(0)?.commit_revision;
        c.status(2).filter(|s| s.applied_revision >= commit)
    });
    c.signal(2, libc::SIGSTOP);
    std::fs::remove_dir_all(c.data_dir(2)).expect("lose kvstore-2's volume");
    let pid = c.signal(2, libc::SIGKILL);
    println!("kvstore-2 (pid {pid}) frozen, its volume emptied, killed");
    let endpoint = format!("http://{}", c.endpoints[2]);
    let look = || {
        c.rt.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .expect("endpoint")
                .connect_timeout(Duration::from_millis(200))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .ok()?;
            let health = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            let read = match KvClient::new(channel)
                .get(GetRequest {
                    key: Bytes::from("k050"),
                    consistency: Consistency::Serializable as i32,
                    min_revision: 0,
                })
                .await
            {
                Ok(r) if r.get_ref().kv.is_some() => Read::Value,
                Ok(_) => Read::Absent,
                Err(status) => Read::Refused(format!("{:?}: {}", status.code(), status.message())),
            };
            Some((health == ServingStatus::Serving as i32, read))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "kvstore-2 never served the data: {seen:?}"
        );
        let Some((serving, read)) = look() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let summary = format!("serving {serving}, read {read}");
        if seen.last() != Some(&summary) {
            println!("kvstore-2: {summary}");
            seen.push(summary);
        }
        assert!(
            !matches!(read, Read::Absent),
            "an existing key read as absent: {seen:?}"
        );
        if serving {
            assert!(
                matches!(read, Read::Value),
                "SERVING without the data: {seen:?}"
            );
            break;
        }
    }
    assert!(
        seen.iter().any(|s| s.contains("serving false")),
        "kvstore-2 was never seen catching up: {seen:?}"
    );
}

/// Writes go on while a snapshot of more than 200 MiB is taken and sent: a
/// follower whose volume is lost is brought back by a snapshot of 200 values
/// of 1 MiB (and their history) while two clients keep writing. The longest
/// gap between acknowledged writes during the transfer is reported; taking
/// the snapshot no longer copies the state while applies wait (before, the
/// copy stalled every write for the whole copy).
#[test]
fn writes_go_on_while_a_large_snapshot_is_sent() {
    let c = BoxCluster::start(3, &[], Duration::from_millis(300));
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("a leader", Duration::from_secs(60), |c| c.leader());
    // SNAPSHOT_TEST_MIB (default 200) values of 1 MiB: the benchmark run
    // in the README uses 1024 with a release build.
    let mib: u32 = std::env::var("SNAPSHOT_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let value = Bytes::from(vec![b'v'; 1 << 20]);
    for i in 0..mib {
        c.rt.block_on(client.put(format!("big/{i:04}"), value.clone()))
            .expect("put 1 MiB");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut client = c.client();
            let stop = stop.clone();
            c.rt.spawn(async move {
                let mut acks = Vec::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 1_000_000 {
                    if client.put(format!("small/{w}/{i}"), "x").await.is_ok() {
                        acks.push(std::time::Instant::now());
                    }
                    i += 1;
                }
                acks
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    c.signal(2, libc::SIGSTOP);
    std::fs::remove_dir_all(c.data_dir(2)).expect("lose kvstore-2's volume");
    c.signal(2, libc::SIGKILL);
    let started = std::time::Instant::now();
    let started_wall = std::time::SystemTime::now();
    c.wait(
        "kvstore-2 installing a snapshot",
        Duration::from_secs(180),
        |c| {
            c.log(2)
                .contains("installed a snapshot from the leader")
                .then_some(())
        },
    );
    let installed = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acks: Vec<_> = writers
        .into_iter()
        .flat_map(|w| c.rt.block_on(w).expect("writer"))
        .collect();
    acks.sort();
    let during: Vec<_> = acks
        .iter()
        .filter(|&&t| t >= started && t <= installed)
        .collect();
    let (longest, at) = during
        .windows(2)
        .map(|w| (w[1].duration_since(*w[0]), w[0].duration_since(started)))
        .max()
        .unwrap_or_default();
    println!(
        "the longest gap began {at:?} after the volume was lost (at {} s past the epoch)",
        started_wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    );
    let pairs = c
        .log(2)
        .lines()
        .find(|l| l.contains("received a snapshot"))
        .unwrap_or_default()
        .to_string();
    let froze = (0..2)
        .flat_map(|n| c.log(n).lines().map(str::to_string).collect::<Vec<_>>())
        .find(|l| l.contains("froze a snapshot"))
        .unwrap_or_default();
    println!("{froze}");
    println!(
        "snapshot sent and installed in {:?}; {} writes acknowledged meanwhile; longest gap {:?}; {pairs}",
        installed - started,
        during.len(),
        longest
    );
    assert!(during.len() > 20, "writes went on during the transfer");
    assert!(
        longest < Duration::from_secs(2),
        "writes stalled for {longest:?} during the transfer"
    );
}

/// Three pods, each on a 24 MiB volume, filled by 16 clients putting values
/// of 1 KiB (the case that used to leave two pods unable to start, their
/// sled files damaged by ENOSPC). The NOSPACE alarm stops the writes with
/// RESOURCE_EXHAUSTED before the volumes fill; every pod stays up or comes
/// back by itself; the alarm shows in Cluster.Status; deletes still work,
/// and after them (and the history trimming they cause) the alarm clears and
/// writes succeed again; no acknowledged write that was not deleted is lost.
#[test]
fn a_full_volume_refuses_writes_and_recovers_after_deletes() {
    use kvstore_testkit::process::kvstore_bin;
    use kvstore_testkit::small_volume::SmallVolume;
    use tonic::Code;

    let dir = tempfile::tempdir().expect("tempdir");
    let volumes: Vec<SmallVolume> = (0..3)
        .map(|n| SmallVolume::mount(&dir.path().join(format!("kvstore-{n}")), 24))
        .collect();
    let mut c = BoxCluster::start_in(
        dir,
        3,
        &[],
        Duration::from_millis(500),
        kvstore_bin().as_ref(),
    );
    c.after_stop.extend(
        volumes
            .into_iter()
            .map(|v| Box::new(v) as Box<dyn std::any::Any>),
    );
    let _in = c.rt.enter();
    c.wait("a leader", Duration::from_secs(60), |c| c.leader());
    let status = c.status(0).expect("status");
    println!("quota {} bytes per pod", status.quota_bytes);
    let value = Bytes::from(vec![b'x'; 1 << 10]);
    let fillers: Vec<_> = (0..16)
        .map(|w| {
            let mut client = c.client();
            let value = value.clone();
            c.rt.spawn(async move {
                let mut acked = Vec::new();
                let mut refused = None;
                let started = std::time::Instant::now();
                for i in 0..20_000 {
                    if started.elapsed() > Duration::from_secs(180) {
                        break;
                    }
                    let key = format!("fill/{w:02}/{i:05}");
                    match client.put(key.clone(), value.clone()).await {
                        Ok(_) => acked.push(key),
                        Err(e) if e.code() == Some(Code::ResourceExhausted) => {
                            refused = Some(e.to_string());
                            break;
                        }
                        // Outcome unknown or no leader for a moment: not
                        // acknowledged, go on.
                        Err(_) => {}
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let results: Vec<_> = fillers
        .into_iter()
        .map(|f| c.rt.block_on(f).expect("filler"))
        .collect();
    let acked: usize = results.iter().map(|(a, _)| a.len()).sum();
    let refusal = results
        .iter()
        .find_map(|(_, r)| r.clone())
        .expect("the writes were refused with RESOURCE_EXHAUSTED");
    println!("{acked} writes acknowledged, then: {refusal}");
    assert!(refusal.contains("NOSPACE"), "{refusal}");
    let alarmed = c.wait(
        "the alarm in Cluster.Status",
        Duration::from_secs(30),
        |c| c.status(0).filter(|s| !s.nospace_alarms.is_empty()),
    );
    println!(
        "Cluster.Status: NOSPACE alarms {:?}, stored {} of {}",
        alarmed.nospace_alarms, alarmed.stored_bytes, alarmed.quota_bytes
    );
    // Delete the keys of 12 of the 16 clients.
    let mut patient = Client::new(
        &c.endpoints,
        RetryPolicy::default(),
        Duration::from_secs(60),
    )
    .expect("client");
    for w in 0..12 {
        c.rt.block_on(patient.delete(DeleteRequest {
            key: Bytes::from(format!("fill/{w:02}/")),
            prefix: true,
            ..Default::default()
        }))
        .expect("deletes go on under the alarm");
    }
    c.wait(
        "the alarm cleared on every pod",
        Duration::from_secs(60),
        |c| {
            (0..3)
                .all(|n| c.status(n).is_some_and(|s| s.nospace_alarms.is_empty()))
                .then_some(())
        },
    );
    let mut client = c.client();
    for i in 0..100 {
        c.rt.block_on(client.put(format!("after/{i}"), value.clone()))
            .expect("writes succeed again");
    }
    for (w, (keys, _)) in results.iter().enumerate().skip(12) {
        for key in keys {
            let got = c
                .rt
                .block_on(client.get(key.clone(), kvstore::proto::kv::Consistency::Linearizable))
                .expect("get");
            assert_eq!(
                got.kv.map(|kv| kv.value),
                Some(value.clone()),
                "acknowledged {key} (client {w}) is lost"
            );
        }
    }
    let exits: Vec<_> = c
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, PodEvent::Exited { .. }))
        .map(|(_, e)| format!("{e:?}"))
        .collect();
    println!("pod exits (each came back by itself): {exits:?}");
    for n in 0..3 {
        let s = c
            .status(n)
            .unwrap_or_else(|| panic!("kvstore-{n} does not answer"));
        println!(
            "kvstore-{n}: stored {} bytes, ready {}, volume {}",
            s.stored_bytes,
            s.ready,
            c.data_dir(n).display()
        );
        assert!(s.ready, "kvstore-{n} is not ready");
    }
}
