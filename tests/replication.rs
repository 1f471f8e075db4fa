//! Replication with real node processes, real sled dirs and the embedded
//! DNS (the cluster in a box): crashes under load, restarts, a lost volume,
//! graceful handover, frozen nodes. Each test runs on its own loopback
//! subnet.

use std::time::Duration;

use bytes::Bytes;
use kvstore::proto::kv::{Consistency, GetRequest, Role};
use kvstore_box::demo::{run as run_demo, summary, DemoOptions};
use kvstore_box::local::PodEvent;
use kvstore_client::{Client, RetryPolicy, WriteRetry};
use kvstore_lincheck::Verdict;
use kvstore_testkit::box_cluster::BoxCluster;

fn demo_options(dir: &std::path::Path, kills: u32, rolling_restart: bool) -> DemoOptions {
    DemoOptions {
        kills,
        rolling_restart,
        ..kvstore_testkit::box_cluster::demo_options(dir)
    }
}

/// Asserts that the timeline picture at `path` is an SVG with one lane per
/// pod and a label for each of `figures`.
fn assert_timeline_shows(path: &std::path::Path, figures: &[String]) {
    let svg = std::fs::read_to_string(path).expect("the timeline picture was written");
    assert!(svg.starts_with("<svg"), "an SVG document");
    for pod in 0..3 {
        assert!(
            svg.lines().any(|l| l.trim() == format!("kvstore-{pod}")),
            "a lane for kvstore-{pod}"
        );
    }
    for figure in figures {
        assert!(
            svg.contains(figure.as_str()),
            "the picture shows {figure:?}"
        );
    }
}

/// kill -9 of the leader under concurrent load: the next ordinal leads,
/// writes resume, no acknowledged write is lost, the history of reads and
/// writes is linearizable, and the old leader comes back on its data dir,
/// catches up and leads again.
#[test]
fn leader_crash_under_load_loses_nothing_and_pod0_leads_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let picture = dir.path().join("demo-timeline.svg");
    let mut opts = demo_options(dir.path(), 2, false);
    opts.timeline = Some(picture.clone());
    let report = run_demo(&opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", summary(&report));
    // The picture labels each kill's measured figures, in a zoomed panel
    // of its own.
    let mut figures = Vec::new();
    for (i, f) in report.failovers.iter().enumerate() {
        figures.push(format!("leader kill {}: kvstore-{}", i + 1, f.killed));
        figures.push(format!("longest write gap {} ms", f.write_gap.as_millis()));
        figures.push(format!(
            "kvstore-{} elected +{} ms",
            f.new_leader,
            f.election.as_millis()
        ));
        figures.push(format!("restarted +{} ms", f.restarted.as_millis()));
        figures.push(format!("caught up +{} ms", f.catch_up.as_millis()));
    }
    assert_timeline_shows(&picture, &figures);
    assert!(
        report.acked > 100,
        "the load made progress: {}",
        report.acked
    );
    assert!(
        report.lost.is_empty(),
        "acknowledged writes lost: {:?}",
        report.lost
    );
    assert_eq!(report.linearizable, Verdict::Linearizable);
    assert_eq!(report.failovers.len(), 2);
    for f in &report.failovers {
        assert_eq!(f.killed, 0, "pod-0 led before each kill");
        assert_eq!(f.new_leader, 1, "the lowest live ordinal took over");
        assert!(
            f.leadership_back.is_some(),
            "pod-0 led again after catching up"
        );
    }
}

/// The same over TLS on both ports (`kvstore demo --tls`): peers over
/// mutual TLS with the box's certificates, the load with its client
/// certificate; a leader kill still loses nothing and pod-0 leads again.
#[test]
fn leader_crash_over_tls_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = demo_options(dir.path(), 1, false);
    opts.tls = true;
    let report = run_demo(&opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", summary(&report));
    assert!(
        report.acked > 100,
        "the load made progress: {}",
        report.acked
    );
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert_eq!(report.linearizable, Verdict::Linearizable);
    assert_eq!(report.failovers.len(), 1);
    assert!(report.failovers[0].leadership_back.is_some());
    let log = std::fs::read_to_string(dir.path().join("demo/kvstore-1.log")).expect("pod log");
    assert!(
        log.contains("mutual TLS"),
        "kvstore-1 ran its peer port with TLS"
    );
}

/// A rolling restart (highest ordinal first, SIGTERM) under load: each pod
/// exits 0, the leader hands leadership over before it stops (and only the
/// leader), writes keep being acknowledged, none is lost, and the history is
/// linearizable.
#[test]
fn rolling_restart_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let picture = dir.path().join("rolling.svg");
    let mut opts = demo_options(dir.path(), 0, true);
    opts.timeline = Some(picture.clone());
    let report = run_demo(&opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", summary(&report));
    let figures: Vec<String> = report
        .rolling
        .iter()
        .flat_map(|r| {
            [
                format!("rolling restart: kvstore-{}", r.ordinal),
                format!("SIGTERM kvstore-{}", r.ordinal),
                format!("longest write gap {} ms", r.write_gap.as_millis()),
            ]
        })
        .collect();
    assert_timeline_shows(&picture, &figures);
    assert!(
        report.acked > 100,
        "the load made progress: {} writes acknowledged",
        report.acked
    );
    let order: Vec<u32> = report.rolling.iter().map(|r| r.ordinal).collect();
    assert_eq!(order, vec![2, 1, 0], "highest ordinal first");
    for r in &report.rolling {
        assert_eq!(
            r.exit, "exit code 0",
            "kvstore-{} stopped cleanly",
            r.ordinal
        );
        assert_eq!(
            r.handed_over, r.was_leader,
            "kvstore-{} handed leadership over if and only if it led",
            r.ordinal
        );
    }
    assert!(
        report.rolling.iter().any(|r| r.was_leader),
        "the leader was among the restarted"
    );
    assert!(
        report.lost.is_empty(),
        "acknowledged writes lost: {:?}",
        report.lost
    );
    assert_eq!(report.linearizable, Verdict::Linearizable);
}

/// A follower whose volume is lost comes back empty, waits for the leader,
/// is brought up to date by a snapshot (the log it needs is compacted), does
/// not vote before it has caught up, votes again after, and serves every
/// one of the 600 keys itself.
#[test]
fn follower_with_lost_volume_rejoins_by_snapshot() {
    let c = BoxCluster::start(
        3,
        &["--snapshot-entries", "64"],
        Duration::from_millis(1500),
    );
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("a leader", Duration::from_secs(30), |c| c.leader());
    for i in 0..300 {
        c.rt.block_on(client.put(format!("k{i:04}"), format!("v{i}")))
            .expect("put");
    }
    c.signal(2, libc::SIGKILL);
    c.wait("kvstore-2 to exit", Duration::from_secs(10), |c| {
        c.events()
            .into_iter()
            .any(|(_, e)| matches!(e, PodEvent::Exited { .. }))
            .then_some(())
    });
    std::fs::remove_dir_all(c.data_dir(2)).expect("lose kvstore-2's volume");
    for i in 300..600 {
        c.rt.block_on(client.put(format!("k{i:04}"), format!("v{i}")))
            .expect("put while kvstore-2 is gone");
    }
    let commit = c.status(0).expect("leader status").commit_revision;
    // Watch it come back: it must not vote before it has caught up.
    let mut voted_early = Vec::new();
    let s = c.wait(
        "kvstore-2 caught up and voting",
        Duration::from_secs(60),
        |c| {
            let s = c.status(2)?;
            if s.voter && s.applied_revision < commit {
                voted_early.push((s.applied_revision, s.commit_revision));
            }
            (s.voter && s.applied_revision >= commit).then_some(s)
        },
    );
    assert!(
        voted_early.is_empty(),
        "kvstore-2 could vote before catching up to {commit}: (applied, commit) {voted_early:?}"
    );
    assert!(s.ready);
    assert!(
        c.log(2).contains("installed a snapshot from the leader"),
        "kvstore-2 was brought up by a snapshot"
    );
    let mut on2 = Client::new(
        &[c.endpoints[2].clone()],
        RetryPolicy::default(),
        Duration::from_secs(5),
    )
    .expect("client");
    // Every key, read on kvstore-2 itself.
    for i in 0..600 {
        let key = format!("k{i:04}");
        let got =
            c.rt.block_on(on2.get_request(GetRequest {
                key: Bytes::from(key.clone()),
                consistency: Consistency::Serializable as i32,
                min_revision: 0,
            }))
            .expect("read on kvstore-2");
        assert_eq!(
            got.kv.map(|kv| kv.value),
            Some(Bytes::from(format!("v{i}"))),
            "{key} on kvstore-2"
        );
    }
}

/// SIGTERM of the leader hands leadership to the lowest caught-up follower
/// before the process exits 0, having waited for every task it spawned.
#[test]
fn sigterm_leader_hands_over_then_exits_zero() {
    let c = BoxCluster::start(3, &[], Duration::from_millis(2000));
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("kvstore-0 to lead", Duration::from_secs(30), |c| {
        c.leader().filter(|l| l.0 == 0)
    });
    for i in 0..50 {
        c.rt.block_on(client.put(format!("k{i}"), "v"))
            .expect("put");
    }
    c.signal(0, libc::SIGTERM);
    let status = c.wait("kvstore-0 to exit", Duration::from_secs(30), |c| {
        c.events().into_iter().find_map(|(_, e)| match e {
            PodEvent::Exited { status, .. } => Some(status),
            _ => None,
        })
    });
    assert_eq!(status, "exit code 0");
    assert!(
        c.log(0).contains("handed leadership over before stopping"),
        "{}",
        c.log(0)
    );
    // Nothing was detached: the servers, the space monitor and discovery's
    // refreshes all ended before the process exited.
    assert!(c.log(0).contains("every task ended"), "{}", c.log(0));
    let (leader, _) = c.wait("kvstore-1 to lead", Duration::from_secs(10), |c| c.leader());
    assert_eq!(leader, 1, "the lowest caught-up follower took over");
    c.rt.block_on(client.put("after", "handover"))
        .expect("writes go on");
}

/// Frozen nodes (SIGSTOP: a silent failure, no connection reset): with one
/// follower frozen the rest go on; with two frozen there is no quorum and
/// writes are refused; a frozen leader is replaced after the election
/// timeout and steps down when it thaws.
#[test]
fn frozen_nodes_follow_the_quorum() {
    let c = BoxCluster::start(3, &[], Duration::from_millis(1000));
    let _in = c.rt.enter();
    c.wait("kvstore-0 to lead", Duration::from_secs(30), |c| {
        c.leader().filter(|l| l.0 == 0)
    });
    let quick = |endpoints: &[usize]| {
        let e: Vec<String> = endpoints.iter().map(|&i| c.endpoints[i].clone()).collect();
        let policy = RetryPolicy {
            budget: Duration::from_secs(3),
            writes: WriteRetry::Safe,
            ..RetryPolicy::default()
        };
        Client::new(&e, policy, Duration::from_secs(2)).expect("client")
    };
    c.signal(2, libc::SIGSTOP);
    c.rt.block_on(quick(&[0, 1]).put("one-frozen", "ok"))
        .expect("a quorum remains");
    c.signal(1, libc::SIGSTOP);
    let refused = c.rt.block_on(quick(&[0]).put("two-frozen", "no"));
    assert!(
        refused.is_err(),
        "no quorum: the write must not be acknowledged"
    );
    c.signal(1, libc::SIGCONT);
    c.signal(2, libc::SIGCONT);
    c.wait("writes again", Duration::from_secs(20), |c| {
        c.rt.block_on(quick(&[0, 1, 2]).put("thawed", "ok")).ok()
    });
    // Freeze the leader: no reset, so the followers wait out the timeout.
    // After the thaw another pod may lead for a moment before priority
    // hands it back, so the test waits for kvstore-0 to lead again.
    let (_, term) = c.wait(
        "kvstore-0 to lead after the thaw",
        Duration::from_secs(30),
        |c| c.leader().filter(|l| l.0 == 0),
    );
    c.signal(0, libc::SIGSTOP);
    let (new, new_term) = c.wait("a new leader", Duration::from_secs(20), |c| {
        (1..3)
            .filter_map(|n| c.status(n))
            .find(|s| s.role == Role::Leader as i32 && s.term > term)
            .map(|s| (s.ordinal, s.term))
    });
    assert_eq!(new, 1);
    c.rt.block_on(quick(&[1, 2]).put("leader-frozen", "ok"))
        .expect("the majority goes on");
    c.signal(0, libc::SIGCONT);
    // The old leader sees the newer term and follows; then, caught up, it
    // gets leadership back by priority.
    let s0 = c.wait("kvstore-0 to lead again", Duration::from_secs(30), |c| {
        c.status(0)
            .filter(|s| s.role == Role::Leader as i32 && s.term > new_term)
    });
    assert!(s0.term > new_term);
    let mut all = quick(&[0, 1, 2]);
    let got =
        c.rt.block_on(all.get("leader-frozen", Consistency::Linearizable))
            .expect("read");
    assert_eq!(got.kv.expect("kv").value, Bytes::from("ok"));
}

/// A watch on a follower sees every change made through the leader, in
/// revision order.
#[test]
fn watch_on_a_follower_sees_the_leaders_writes() {
    let c = BoxCluster::start(3, &[], Duration::from_millis(1000));
    let _in = c.rt.enter();
    c.wait("kvstore-0 to lead", Duration::from_secs(30), |c| {
        c.leader().filter(|l| l.0 == 0)
    });
    let mut follower = Client::new(
        &[c.endpoints[2].clone()],
        RetryPolicy::default(),
        Duration::from_secs(5),
    )
    .expect("client");
    let mut stream =
        c.rt.block_on(follower.watch(kvstore::proto::kv::WatchRequest {
            key: Bytes::from("w/"),
            prefix: true,
            ..Default::default()
        }))
        .expect("watch on kvstore-2");
    let mut leader = Client::new(
        &[c.endpoints[0].clone()],
        RetryPolicy::default(),
        Duration::from_secs(5),
    )
    .expect("client");
    let mut revisions = Vec::new();
    for i in 0..50 {
        let resp =
            c.rt.block_on(leader.put(format!("w/{i}"), format!("{i}")))
                .expect("put");
        revisions.push(resp.header.expect("header").revision);
    }
    let mut seen = Vec::new();
    while seen.len() < revisions.len() {
        let msg =
            c.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), stream.message()).await
            })
            .expect("the follower's watch stalled")
            .expect("stream")
            .expect("stream open");
        seen.extend(msg.events.iter().map(|e| e.revision));
    }
    assert_eq!(seen, revisions);
}

/// Fast failover on slow disks: every fdatasync takes 15 ms longer, more
/// than ordinal 0's one-tick fast delay. Leadership is moved to ordinal 1
/// and ordinal 1 is killed at once, so that ordinal 0 is the candidate; each
/// failover raises the term by at most 2 (before the fix a candidate gave up
/// while its votes were being made durable, and the term climbed by ten and
/// more).
#[test]
fn fast_failover_on_a_slow_disk_raises_the_term_by_at_most_two() {
    let c = BoxCluster::start(
        3,
        &["--fault-fsync-delay-ms", "15"],
        Duration::from_millis(300),
    );
    let _in = c.rt.enter();
    let mut client = c.client();
    for round in 0..3 {
        c.wait("kvstore-0 leading", Duration::from_secs(60), |c| {
            c.leader().filter(|&(l, _)| l == 0)
        });
        c.wait("every pod ready", Duration::from_secs(60), |c| {
            (0..3)
                .all(|n| c.status(n).is_some_and(|s| s.ready))
                .then_some(())
        });
        c.rt.block_on(client.transfer_leadership(1))
            .expect("hand leadership to kvstore-1");
        let (_, before) = c.wait("kvstore-1 leading", Duration::from_secs(30), |c| {
            c.leader().filter(|&(l, _)| l == 1)
        });
        c.signal(1, libc::SIGKILL);
        let (leader, after) = c.wait("a new leader", Duration::from_secs(30), |c| {
            c.leader().filter(|&(l, t)| l != 1 && t > before)
        });
        println!("round {round}: kvstore-1 led term {before}; kvstore-{leader} leads term {after}");
        assert_eq!(leader, 0, "the lowest live ordinal took over");
        assert!(
            after <= before + 2,
            "round {round}: one failover raised the term from {before} to {after}"
        );
    }
}

/// `kvctl watch` survives the node it watches through going away: it
/// resumes on another endpoint where it left off, so every change is
/// printed exactly once.
#[test]
fn kvctl_watch_resumes_when_its_node_stops() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let c = BoxCluster::start(3, &[], Duration::from_millis(500));
    let _in = c.rt.enter();
    let mut client = c.client();
    c.wait("a leader", Duration::from_secs(30), |c| c.leader());
    let start =
        c.rt.block_on(client.put("not-watched", "x"))
            .expect("put")
            .header
            .expect("header")
            .revision
            + 1;
    let endpoints = format!("{},{}", c.endpoints[1], c.endpoints[2]);
    let mut watch = Command::new(kvstore_testkit::process::kvctl_bin())
        .args(["--endpoints", &endpoints, "--timeout", "30"])
        .args(["watch", "w/", "--prefix", "--count", "20", "--rev"])
        .arg(start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvctl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut put_until_seen = |from: u32, to: u32, lines: &mut Vec<String>| {
        for i in from..to {
            c.rt.block_on(client.put(format!("w/{i:02}"), format!("v{i}")))
                .expect("put");
        }
        while lines.len() < to as usize {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => lines.push(line),
                Err(_) => panic!("the watch printed {lines:?} and then nothing"),
            }
        }
    };
    put_until_seen(0, 10, &mut lines);
    c.signal(1, libc::SIGKILL);
    put_until_seen(10, 20, &mut lines);
    let status = watch.wait().expect("kvctl exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "kvctl watch: {status}, {stderr}");
    assert!(stderr.contains("resumed"), "{stderr}");
    let keys: Vec<String> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("w/{i:02}")).collect();
    assert_eq!(keys, expected, "every change once, in order: {lines:?}");
}

/// `kvstore demo --scale`: 3 -> 5 -> 3 under load loses nothing, each step
/// ends with exactly the voters it asked for, and the timeline zooms on
/// each step with its measured duration.
#[test]
fn scaling_demo_loses_nothing_and_draws_each_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let picture = dir.path().join("scale.svg");
    let mut opts = demo_options(dir.path(), 0, false);
    opts.scale_via = Some(5);
    opts.timeline = Some(picture.clone());
    let report = run_demo(&opts, &mut |l| println!("{l}")).expect("demo");
    println!("{}", summary(&report));
    let steps: Vec<(u32, u32)> = report.scaling.iter().map(|s| (s.from, s.to)).collect();
    assert_eq!(steps, vec![(3, 5), (5, 3)]);
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert_eq!(report.linearizable, Verdict::Linearizable);
    let figures: Vec<String> = report
        .scaling
        .iter()
        .map(|s| {
            format!(
                "scale {} -&gt; {}: done in {} ms",
                s.from,
                s.to,
                s.took.as_millis()
            )
        })
        .chain([
            "kvstore-4 became a voter".to_string(),
            "kvstore-4 left the configuration".to_string(),
        ])
        .collect();
    assert_timeline_shows(&picture, &figures);
}
