//! The live view of the cluster (`kvctl top`, `kvstore demo --top`)
//! against a cluster in a box: on a real terminal (a tmux pane) before,
//! during and after a leader kill, and as plain lines when its output is a
//! pipe. The figures shown (who leads, in which term, who is down, the
//! events' order) are parsed and checked, not the wording. Each test has
//! its own loopback subnet, temp dir and tmux server, all removed when it
//! ends, also when it fails.

mod screen;
mod tmux;

use std::process::Command;
use std::time::{Duration, Instant};

use kvstore_testkit::bins::{kvctl_bin, kvstore_bin};
use kvstore_testkit::box_cluster::BoxCluster;
use kvstore_testkit::process::{run_bounded, Subnet};

use screen::{find_after, lines, table_leader, table_rows, Line};
use tmux::Tmux;

/// Generous bound for each awaited state of the screen.
const WITHIN: Duration = Duration::from_secs(60);

/// Captures the pane until `probe` finds what it waits for in it; fails
/// after [`WITHIN`] showing the last screen.
fn wait_screen<T>(tmux: &Tmux, what: &str, probe: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        let screen = tmux.capture();
        if let Some(found) = probe(&screen) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The highest writes per second the sparkline's title reports.
fn peak_writes(screen: &str) -> Option<u64> {
    let (_, after) = screen.split_once("peak ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Under tmux, from one endpoint: all three pods, kvstore-0 leading and
/// writes counted; kvstore-0 killed, it is down and kvstore-1 leads a
/// later term; restarted, it is back, caught up and leads again in a later
/// term still, and the event log tells each step in order.
#[test]
fn the_terminal_view_follows_a_leader_kill() {
    // The supervisor restarts the killed pod after 20 s: time enough, on a
    // busy machine, to see the cluster without it.
    let cluster = BoxCluster::start(3, &[], Duration::from_secs(20));
    let command = format!(
        "{} --endpoints {} top --interval-ms 200; echo kvctl exited $?; sleep 600",
        kvctl_bin(),
        cluster.endpoints[0]
    );
    let tmux = Tmux::start(&command, 120, 40);

    let (_, term0) = wait_screen(&tmux, "three pods, kvstore-0 leading", |s| {
        let rows = table_rows(s);
        let (leader, term) = table_leader(&rows).filter(|&(o, _)| o == 0)?;
        // Elected, or handed leadership by kvstore-1 if that started first.
        let told = lines(s).iter().any(|l| leads(l, "kvstore-0", term));
        (rows.len() == 3 && told).then_some((leader, term))
    });
    write_a_little(&cluster);
    wait_screen(&tmux, "writes per second above 0", |s| {
        peak_writes(s).filter(|&p| p > 0)
    });

    cluster.signal(0, libc::SIGKILL);
    let term1 = wait_screen(&tmux, "kvstore-0 down, kvstore-1 leading", |s| {
        let rows = table_rows(s);
        let down = rows.iter().any(|r| r.ordinal == 0 && r.health == "down");
        let (leader, term) = table_leader(&rows)?;
        let events = lines(s);
        let told = find_after(&events, 0, |l| l.is("down", "kvstore-0"))
            .and_then(|i| find_after(&events, i, |l| leads(l, "kvstore-1", term)));
        (down && leader == 1 && term > term0 && told.is_some()).then_some(term)
    });

    wait_screen(&tmux, "kvstore-0 back, caught up and leading", |s| {
        let rows = table_rows(s);
        let ready = rows.iter().any(|r| r.ordinal == 0 && r.health == "ready");
        let (leader, term) = table_leader(&rows)?;
        let events = lines(s);
        let back = find_after(&events, 0, |l| l.is("back", "kvstore-0"))?;
        let caught_up = find_after(&events, back, |l| l.is("caught-up", "kvstore-0"))?;
        let handed = find_after(&events, caught_up, |l| {
            l.is("transfer", "kvstore-0")
                && l.number("term") == Some(term)
                && l.figures.get("from").map(String::as_str) == Some("kvstore-1")
        });
        (ready && leader == 0 && term > term1 && handed.is_some()).then_some(())
    });
}

/// Whether `line` says `pod` took the lead in `term`, elected or handed it
/// (by a pod of a higher ordinal that happened to lead first).
fn leads(line: &Line, pod: &str, term: u64) -> bool {
    (line.is("elected", pod) || line.is("transfer", pod)) && line.number("term") == Some(term)
}

/// A few hundred writes, one after another (bounded in count).
fn write_a_little(cluster: &BoxCluster) {
    let mut client = cluster.client();
    cluster.rt.block_on(async {
        for i in 0..300 {
            client.put(format!("top-{i}"), "v").await.expect("put");
        }
    });
}

/// `kvstore demo --top` with its output in a pipe prints plain lines: the
/// same events as the terminal view, in order (the leader down, another
/// pod elected in a later term, the killed pod back and caught up, and
/// kvstore-0 handed leadership back in a later term still when it was the
/// one killed), and a line per pod; the demo still passes.
#[test]
fn the_demo_with_top_prints_plain_lines_when_not_on_a_terminal() {
    let net = Subnet::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Command::new(kvstore_bin());
    let picture = dir.path().join("timeline.svg");
    demo.args(["demo", "--top", "--restart-delay-ms", "3000", "--base-ip"])
        .arg(net.pod(0).to_string())
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .arg("--timeline")
        .arg(&picture);
    let (code, out, err) = run_bounded(&mut demo, Duration::from_secs(240));
    assert_eq!(code, 0, "kvstore demo --top failed:\n{out}\n{err}");
    assert!(picture.exists(), "the demo drew its timeline");
    let seen = lines(&out);
    // The demo kills kvstore-0, which it waits to see leading; another pod
    // slow to answer a poll may show as down too, so the kill is the first
    // `down` of kvstore-0.
    let killed = "kvstore-0".to_string();
    let down = find_after(&seen, 0, |l| l.is("down", &killed)).expect("the kill seen");
    let last_lead = seen[..down]
        .iter()
        .rev()
        .find(|l| l.kind == "elected" || l.kind == "transfer")
        .expect("a leader before the kill");
    assert_eq!(
        last_lead.pod.as_ref(),
        Some(&killed),
        "the leader was killed:\n{out}"
    );
    let term0 = last_lead.number("term").expect("a term");
    let next = find_after(&seen, down, |l| l.kind == "elected").expect("a new leader");
    let term1 = seen[next].number("term").expect("a term");
    assert!(
        seen[next].pod != Some(killed.clone()) && term1 > term0,
        "{out}"
    );
    let back = find_after(&seen, down, |l| l.is("back", &killed)).expect("restart seen");
    let caught = find_after(&seen, back, |l| l.is("caught-up", &killed)).expect("caught up");
    let handed = find_after(&seen, caught.max(next), |l| l.is("transfer", "kvstore-0"));
    let term2 = handed.and_then(|i| seen[i].number("term"));
    assert!(term2 > Some(term1), "kvstore-0 leads again, later:\n{out}");
    let pods: Vec<u64> = seen
        .iter()
        .filter(|l| l.kind == "pod")
        .filter_map(|l| l.number("ord"))
        .collect();
    for ordinal in 0..3 {
        assert!(pods.contains(&ordinal), "no line for pod {ordinal}:\n{out}");
    }
}

/// `kvctl top --plain --duration` stops by itself, having printed every
/// pod (found from one endpoint) with kvstore-0 leading; pointed at an
/// address where nothing answers, it exits 3.
#[test]
fn kvctl_top_plain_stops_after_its_duration() {
    let cluster = BoxCluster::start(3, &[], Duration::from_secs(1));
    cluster.wait("kvstore-0 to lead", WITHIN, |c| {
        c.leader().filter(|&(ordinal, _)| ordinal == 0)
    });
    let mut top = Command::new(kvctl_bin());
    top.args(["--endpoints", &cluster.endpoints[0], "top", "--plain"])
        .args(["--duration", "5", "--pods-every", "1"]);
    let (code, out, err) = run_bounded(&mut top, WITHIN);
    assert_eq!(code, 0, "kvctl top:\n{out}\n{err}");
    let seen = lines(&out);
    let leads =
        |l: &Line| l.kind == "pod" && l.figures.get("role").map(String::as_str) == Some("leader");
    let leader: Vec<u64> = seen
        .iter()
        .filter(|l| leads(l))
        .filter_map(|l| l.number("ord"))
        .collect();
    assert!(
        !leader.is_empty() && leader.iter().all(|&o| o == 0),
        "{out}"
    );
    for ordinal in 0..3 {
        let shown = seen
            .iter()
            .any(|l| l.kind == "pod" && l.number("ord") == Some(ordinal));
        assert!(shown, "no line for pod {ordinal}:\n{out}");
    }

    let nowhere = format!("{}:7379", cluster.net.pod(9));
    let mut top = Command::new(kvctl_bin());
    top.args(["--endpoints", &nowhere, "top", "--plain", "--duration", "1"]);
    let (code, out, err) = run_bounded(&mut top, WITHIN);
    assert_eq!(code, 3, "kvctl top with nothing to ask:\n{out}\n{err}");
}
