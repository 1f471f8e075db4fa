//! `kvstore demo --sessions`: sticky sessions against stable identity.
//!
//! A load balancer with sticky sessions pins each client to one instance;
//! when that instance dies, so does the session. Here clients write a new
//! value of their own key and read it straight back, in three ways at
//! once, on disjoint keys, so that all three see the same fault:
//!
//! - pinned: every request to one follower pod, reads SERIALIZABLE there;
//! - SERIALIZABLE from any pod, without a token;
//! - from any pod with `min_revision`, the revision the last write
//!   returned: the answering pod waits until it has applied that revision.
//!
//! After a warm-up the pinned pod is killed with SIGKILL; the supervisor
//! restarts it, it catches up, and the sessions run on for a while. The
//! summary counts, per way, the reads that missed the session's own
//! write, the errors, the longest stall, the reads each pod served, and
//! the acknowledged writes lost.

mod report;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::failover::{await_catch_up, await_restart, Killed};
use super::load::retrying_client;
use super::probe::{current_leader, wait_for};
use super::timeline::Timeline;
use super::{Cluster, DemoOptions, InABox, Narrator};
use kvstore_proto::kv::{Consistency, GetRequest};
use session::{Expectation, Session};

pub use report::{sessions_summary, SessionsReport, WayFigures};
pub use session::{Way, SESSION_REQUEST_BUDGET};

/// How long the sessions run before the kill.
const WARM_UP: Duration = Duration::from_secs(2);

/// How long they run on once the killed pod is back and caught up.
const RUN_ON: Duration = Duration::from_secs(2);

/// Runs the sessions demonstration with `opts.writers` sessions per way.
/// `say` receives each narrated line (already timestamped).
pub fn run_sessions(
    opts: &DemoOptions,
    say: &mut dyn FnMut(String),
) -> Result<SessionsReport, String> {
    let epoch = Instant::now();
    let mut narrator = Narrator { epoch, say };
    let boxed = InABox::start(opts, &mut narrator)?;
    // The kill and the recovery are marked as in the failover demo; the
    // sessions' story is their table, so no picture is drawn from it.
    let timeline = Timeline::new(epoch);
    let result = boxed
        .runtime
        .block_on(drive(&boxed.cluster(opts, &timeline), &mut narrator));
    boxed.stop(&mut narrator);
    let mut report = result?;
    report.elapsed = epoch.elapsed();
    Ok(report)
}

/// The phases: pick the pod to pin to, start the sessions, kill that pod,
/// wait for it to come back, run on, then check.
async fn drive(
    cluster: &Cluster<'_>,
    narrator: &mut Narrator<'_>,
) -> Result<SessionsReport, String> {
    let (pinned, term) = pick_pinned_pod(cluster, narrator).await?;
    let running = Running::start(cluster, pinned, narrator)?;
    tokio::time::sleep(WARM_UP).await;
    running.narrate_rounds(narrator);
    let down = kill_and_recover(cluster, pinned, term, narrator).await?;
    narrator.say(&format!(
        "the sessions run on for {} s with kvstore-{pinned} back",
        RUN_ON.as_secs()
    ));
    tokio::time::sleep(RUN_ON).await;
    let ended = running.stop().await?;
    let mut report = SessionsReport {
        pinned_pod: pinned,
        pods: (0..cluster.opts.replicas)
            .map(|n| format!("kvstore-{n}"))
            .collect(),
        down,
        pinned: WayFigures::default(),
        serializable: WayFigures::default(),
        token: WayFigures::default(),
        elapsed: Duration::ZERO,
    };
    check_and_add(cluster, ended, &mut report, narrator).await?;
    Ok(report)
}

/// Waits for kvstore-0 to lead, as it does in steady state, and pins the
/// pinned sessions to kvstore-1, a follower: killing a follower costs the
/// other ways no election, so what the table shows is what being tied to
/// one pod costs. Gives the pinned pod's ordinal and the term.
async fn pick_pinned_pod(
    cluster: &Cluster<'_>,
    narrator: &mut Narrator<'_>,
) -> Result<(u32, u64), String> {
    let (_, term, _) = wait_for("kvstore-0 to lead", Duration::from_secs(30), || async {
        current_leader(cluster.tls(), cluster.endpoints)
            .await
            .filter(|&(l, _, _)| l == 0)
    })
    .await?;
    let pinned = 1;
    narrator.say(&format!(
        "kvstore-0 leads term {term}; the pinned sessions stick to kvstore-{pinned}, a follower, the pod this demo kills: a follower's death costs the other sessions no election, so what differs between the ways is what being tied to one pod costs"
    ));
    Ok((pinned, term))
}

/// The sessions, running.
struct Running {
    tasks: Vec<(Way, JoinHandle<(WayFigures, Expectation)>)>,
    stop: watch::Sender<bool>,
    /// Rounds done so far, per way.
    rounds: [Arc<AtomicU64>; 3],
}

impl Running {
    /// Starts `opts.writers` sessions of each way.
    fn start(
        cluster: &Cluster<'_>,
        pinned: u32,
        narrator: &mut Narrator<'_>,
    ) -> Result<Running, String> {
        let per_way = cluster.opts.writers.max(1);
        let (stop, stopped) = watch::channel(false);
        let rounds = [0, 1, 2].map(|_| Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for (w, way) in Way::ALL.into_iter().enumerate() {
            for id in 0..per_way {
                let session = Session::new(
                    way,
                    id,
                    cluster.endpoints,
                    pinned as usize,
                    cluster.tls(),
                    rounds[w].clone(),
                )?;
                tasks.push((way, tokio::spawn(session.run(stopped.clone()))));
            }
        }
        narrator.say(&format!(
            "{per_way} sessions of each way, each writing a new value of its own key and reading it straight back: pinned to kvstore-{pinned} (SERIALIZABLE reads there); SERIALIZABLE from any pod in turn; from any pod in turn with min_revision = the revision its write returned"
        ));
        narrator.say("a follower applies a write when the leader's next message tells it the write is committed, after the leader has acknowledged it; a SERIALIZABLE read on a follower right after one's own write can come before that, while min_revision makes the pod wait for the write");
        Ok(Running {
            tasks,
            stop,
            rounds,
        })
    }

    /// Narrates the rounds done so far.
    fn narrate_rounds(&self, narrator: &mut Narrator<'_>) {
        let done = self.rounds.each_ref().map(|r| r.load(Ordering::Relaxed));
        narrator.say(&format!(
            "rounds (write, then read back) so far: pinned {}, serializable {}, min_revision {}",
            done[0], done[1], done[2]
        ));
    }

    /// Stops the sessions and gives what each saw; a session that panicked
    /// or did not stop in time makes the figures untrustworthy, and is an
    /// error.
    async fn stop(self) -> Result<Vec<(Way, WayFigures, Expectation)>, String> {
        let _ = self.stop.send(true);
        let mut ended = Vec::new();
        for (way, task) in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(20), task).await {
                Ok(Ok((figures, expectation))) => ended.push((way, figures, expectation)),
                Ok(Err(e)) => return Err(format!("a session failed: {e}")),
                Err(_) => {
                    abort.abort();
                    return Err("a session did not stop within 20 s".into());
                }
            }
        }
        Ok(ended)
    }
}

/// Kills the pinned pod with SIGKILL and waits until the supervisor has
/// restarted it and it has caught up; gives how long that took.
async fn kill_and_recover(
    cluster: &Cluster<'_>,
    pinned: u32,
    term: u64,
    narrator: &mut Narrator<'_>,
) -> Result<Duration, String> {
    // Only the events after the kill tell when the pod restarted.
    cluster.sup.take_events();
    let pid = cluster.sup.signal(pinned, libc::SIGKILL)?;
    let killed = Killed {
        ordinal: pinned,
        term,
        at: Instant::now(),
    };
    narrator.say(&format!(
        "kill -9 kvstore-{pinned} (pid {pid}), the pod the pinned sessions stick to"
    ));
    let restarted = await_restart(cluster, &killed, narrator).await?;
    let caught_up = await_catch_up(cluster, pinned, restarted, narrator).await?;
    Ok(caught_up.duration_since(killed.at))
}

/// Reads every session's key back (linearizable), counts the sessions
/// whose last acknowledged write is gone, and adds each session's figures
/// to its way's.
async fn check_and_add(
    cluster: &Cluster<'_>,
    ended: Vec<(Way, WayFigures, Expectation)>,
    report: &mut SessionsReport,
    narrator: &mut Narrator<'_>,
) -> Result<(), String> {
    narrator.say(
        "sessions stopped; reading each session's last acknowledged write back (linearizable)",
    );
    let mut client = retrying_client(cluster.tls(), cluster.endpoints)?;
    for (way, mut figures, expectation) in ended {
        let req = GetRequest {
            key: expectation.key.clone(),
            consistency: Consistency::Linearizable as i32,
            min_revision: 0,
        };
        let found = client
            .get_request(req)
            .await
            .map_err(|e| format!("reading back a session's key: {e}"))?;
        if !expectation.kept_by(found.kv.map(|kv| kv.value).as_ref()) {
            figures.lost += 1;
        }
        let total = match way {
            Way::Pinned => &mut report.pinned,
            Way::Serializable => &mut report.serializable,
            Way::Token => &mut report.token,
        };
        total.add(&figures);
    }
    for way in Way::ALL {
        let f = report.way(way);
        narrator.say(&format!(
            "{}: {} reads, {} missed the session's own write, {} errors, {} acknowledged writes lost",
            way.tag(),
            f.reads,
            f.missed,
            f.errors(),
            f.lost
        ));
    }
    Ok(())
}
