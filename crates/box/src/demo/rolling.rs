//! The rolling restart: each pod stopped with SIGTERM, highest ordinal
//! first, as Kubernetes does, and awaited until it is back and ready.

use std::time::{Duration, Instant};

use super::load::Load;
use super::probe::{current_leader, pod_status, wait_for};
use super::report::{ms, RollingStep};
use super::{Cluster, Narrator};
use crate::local::PodEvent;

/// What a pod's log says when it handed leadership over on SIGTERM.
const HANDOVER: &str = "handed leadership over before stopping";

/// Restarts every pod in turn, highest ordinal first, then waits for
/// kvstore-0 to lead again.
pub(super) async fn rolling_restart(
    cluster: &Cluster<'_>,
    load: &Load,
    narrator: &mut Narrator<'_>,
) -> Result<Vec<RollingStep>, String> {
    narrator.say("rolling restart, highest ordinal first, SIGTERM each pod as Kubernetes does");
    let mut rolling = Vec::new();
    for n in (0..cluster.opts.replicas).rev() {
        let step = restart_gracefully(cluster, load, n).await?;
        narrator.say(&format!(
            "kvstore-{n} restarted and ready; longest write gap meanwhile {}",
            ms(step.write_gap)
        ));
        rolling.push(step);
    }
    wait_for("kvstore-0 to lead", Duration::from_secs(30), || async {
        current_leader(cluster.tls(), cluster.endpoints)
            .await
            .filter(|&(l, _, _)| l == 0)
            .map(|_| ())
    })
    .await?;
    narrator.say("rolling restart done; kvstore-0 leads");
    Ok(rolling)
}

/// One step of a rolling restart: SIGTERM pod `n`, wait until it is back
/// and ready, and report how it went.
async fn restart_gracefully(
    cluster: &Cluster<'_>,
    load: &Load,
    n: u32,
) -> Result<RollingStep, String> {
    let log_path = cluster.opts.dir.join(format!("kvstore-{n}.log"));
    // The pod's log is the only witness of a handover; a log not yet
    // written counts as none.
    let handovers = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches(HANDOVER)
            .count()
    };
    let handovers_before = handovers();
    let was_leader = current_leader(cluster.tls(), cluster.endpoints)
        .await
        .is_some_and(|(l, _, _)| l == n);
    // Only the events after the signal tell how this stop ended.
    cluster.sup.take_events();
    let started = Instant::now();
    cluster.sup.signal(n, libc::SIGTERM)?;
    cluster
        .timeline
        .fault(started, format!("SIGTERM kvstore-{n}"));
    let exit = await_exit_and_restart(cluster, n).await?;
    let own = cluster.endpoint_of(n)?;
    wait_for("the pod to be ready", Duration::from_secs(30), || async {
        pod_status(cluster.tls(), &own)
            .await
            .filter(|s| s.ready)
            .map(|_| ())
    })
    .await?;
    let ready_at = Instant::now();
    cluster.timeline.recovery(
        ready_at,
        format!("kvstore-{n} ready +{}", ms(ready_at - started)),
    );
    // Give the load a moment on the full cluster, so the gap measured
    // includes any pause the pod's return causes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gap_start, gap_end) = load.longest_gap_span(started);
    cluster.timeline.gap(gap_start, gap_end);
    cluster.timeline.recovery(
        gap_end,
        format!("longest write gap {}", ms(gap_end - gap_start)),
    );
    cluster
        .timeline
        .episode(format!("rolling restart: kvstore-{n}"), started, ready_at);
    Ok(RollingStep {
        ordinal: n,
        write_gap: gap_end - gap_start,
        exit: exit.unwrap_or_else(|| "unknown".into()),
        was_leader,
        handed_over: handovers() > handovers_before,
    })
}

/// Waits for the supervisor to restart pod `n`; gives how its process
/// ended, if the supervisor saw it end.
async fn await_exit_and_restart(cluster: &Cluster<'_>, n: u32) -> Result<Option<String>, String> {
    let name = format!("kvstore-{n}");
    let mut exit = None;
    wait_for("the pod to restart", Duration::from_secs(60), || {
        let events = cluster.sup.take_events();
        for (_, e) in &events {
            if let PodEvent::Exited {
                name: who, status, ..
            } = e
            {
                if *who == name {
                    exit = Some(status.clone());
                }
            }
        }
        let restarted = events
            .iter()
            .any(|(_, e)| matches!(e, PodEvent::Restarted { name: who, .. } if *who == name));
        async move { restarted.then_some(()) }
    })
    .await?;
    Ok(exit)
}
