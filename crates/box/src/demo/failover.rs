//! One leader kill (SIGKILL) followed through: the election, the write
//! gap the load saw, the killed pod's restart on its own data dir, its
//! catching up, and (for kvstore-0) its taking leadership back.

use std::time::{Duration, Instant};

use super::load::Load;
use super::probe::{current_leader, pod_status, wait_for};
use super::report::{ms, Failover};
use super::{Cluster, Narrator};
use crate::local::PodEvent;

/// The pod just killed.
pub(super) struct Killed {
    /// Its ordinal.
    pub(super) ordinal: u32,
    /// The term it was killed in.
    pub(super) term: u64,
    /// When.
    pub(super) at: Instant,
}

/// Kills the current leader (kill number `kill`, from 0) and follows the
/// cluster until the killed pod is back, caught up, and, if it is
/// kvstore-0, leading again.
pub(super) async fn kill_leader_and_recover(
    cluster: &Cluster<'_>,
    load: &Load,
    kill: u32,
    narrator: &mut Narrator<'_>,
) -> Result<Failover, String> {
    let killed = kill_leader(cluster, kill, narrator).await?;
    let (new_leader, term, election) = await_new_leader(cluster, &killed, narrator).await?;
    let write_gap = measure_write_gap(cluster, load, killed.at, narrator).await;
    let restarted_at = await_restart(cluster, &killed, narrator).await?;
    let caught_at = await_catch_up(cluster, killed.ordinal, restarted_at, narrator).await?;
    // Only the lowest ordinal takes leadership back; others stay followers.
    let leadership_back = if killed.ordinal == 0 {
        Some(await_leadership_back(cluster, new_leader, caught_at, narrator).await?)
    } else {
        None
    };
    let recovered = caught_at + leadership_back.unwrap_or_default();
    cluster.timeline.episode(
        format!("leader kill {}: kvstore-{}", kill + 1, killed.ordinal),
        killed.at,
        recovered,
    );
    Ok(Failover {
        killed: killed.ordinal,
        new_leader,
        term,
        election,
        write_gap,
        restarted: restarted_at.duration_since(killed.at),
        catch_up: caught_at.saturating_duration_since(restarted_at),
        leadership_back,
    })
}

/// Waits for a leader and kills it with SIGKILL.
async fn kill_leader(
    cluster: &Cluster<'_>,
    kill: u32,
    narrator: &mut Narrator<'_>,
) -> Result<Killed, String> {
    let (old, old_term, _) = wait_for("a leader", Duration::from_secs(20), || {
        current_leader(cluster.tls(), cluster.endpoints)
    })
    .await?;
    let kills = cluster.opts.kills;
    if kills > 1 {
        narrator.say(&format!("--- leader kill {} of {}", kill + 1, kills));
    }
    // Only the events after the kill tell when the pod restarted.
    cluster.sup.take_events();
    let pid = cluster.sup.signal(old, libc::SIGKILL)?;
    let at = Instant::now();
    narrator.say(&format!(
        "kill -9 kvstore-{old} (pid {pid}), the leader of term {old_term}"
    ));
    cluster.timeline.fault(at, format!("kill -9 kvstore-{old}"));
    Ok(Killed {
        ordinal: old,
        term: old_term,
        at,
    })
}

/// Waits for a surviving pod to lead a later term: (its ordinal, the term,
/// the time since the kill).
async fn await_new_leader(
    cluster: &Cluster<'_>,
    killed: &Killed,
    narrator: &mut Narrator<'_>,
) -> Result<(u32, u64, Duration), String> {
    let survivors: Vec<String> = cluster
        .endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != killed.ordinal)
        .map(|(_, e)| e.clone())
        .collect();
    let (new, new_term, _) = wait_for("a new leader", Duration::from_secs(20), || async {
        current_leader(cluster.tls(), &survivors)
            .await
            .filter(|&(_, t, _)| t > killed.term)
    })
    .await?;
    let election = killed.at.elapsed();
    cluster.timeline.recovery(
        killed.at + election,
        format!("kvstore-{new} elected +{}", ms(election)),
    );
    narrator.say(&format!(
        "kvstore-{new} won the election for term {new_term} {} after the kill: the followers saw the leader's connections reset and the lowest live ordinal campaigned first",
        ms(election)
    ));
    Ok((new, new_term, election))
}

/// Lets the load run on past the election, then reads the longest gap
/// between acknowledged writes around the kill.
async fn measure_write_gap(
    cluster: &Cluster<'_>,
    load: &Load,
    killed_at: Instant,
    narrator: &mut Narrator<'_>,
) -> Duration {
    tokio::time::sleep(Duration::from_millis(800)).await;
    // From the last ack before the kill: the gap the kill caused, whole.
    let (start, end) = load.longest_gap_span(killed_at);
    let write_gap = end - start;
    cluster.timeline.gap(start, end);
    cluster
        .timeline
        .recovery(end, format!("longest write gap {}", ms(write_gap)));
    narrator.say(&format!(
        "the load saw writes pause for {} (the write-unavailability window)",
        ms(write_gap)
    ));
    write_gap
}

/// Waits for the supervisor to restart the killed pod; gives the time it
/// did.
pub(super) async fn await_restart(
    cluster: &Cluster<'_>,
    killed: &Killed,
    narrator: &mut Narrator<'_>,
) -> Result<Instant, String> {
    let name = format!("kvstore-{}", killed.ordinal);
    let restarted_at = wait_for("the pod to restart", Duration::from_secs(30), || async {
        cluster
            .sup
            .take_events()
            .into_iter()
            .find_map(|(t, e)| match e {
                PodEvent::Restarted { name: who, .. } if who == name => Some(t),
                _ => None,
            })
    })
    .await?;
    let after = ms(restarted_at.duration_since(killed.at));
    narrator.say(&format!(
        "{name} restarted by the supervisor {after} after the kill, on its own data dir (its volume)"
    ));
    cluster
        .timeline
        .recovery(restarted_at, format!("{name} restarted +{after}"));
    Ok(restarted_at)
}

/// Waits until the restarted pod has applied everything the leader has
/// committed and is ready; gives the time it was.
pub(super) async fn await_catch_up(
    cluster: &Cluster<'_>,
    ordinal: u32,
    restarted_at: Instant,
    narrator: &mut Narrator<'_>,
) -> Result<Instant, String> {
    let own = cluster.endpoint_of(ordinal)?;
    let caught_at = wait_for("the pod to catch up", Duration::from_secs(30), || async {
        let (_, _, leader_commit) = current_leader(cluster.tls(), cluster.endpoints).await?;
        let mine = pod_status(cluster.tls(), &own).await?;
        (mine.applied_revision >= leader_commit && mine.ready).then(Instant::now)
    })
    .await?;
    let after = ms(caught_at.saturating_duration_since(restarted_at));
    narrator.say(&format!(
        "kvstore-{ordinal} caught up with the leader {after} after its restart (health SERVING)"
    ));
    cluster
        .timeline
        .recovery(caught_at, format!("caught up +{after}"));
    Ok(caught_at)
}

/// Waits for kvstore-0 to lead again after catching up, handed leadership
/// by `new_leader`; gives how long that took.
async fn await_leadership_back(
    cluster: &Cluster<'_>,
    new_leader: u32,
    caught_at: Instant,
    narrator: &mut Narrator<'_>,
) -> Result<Duration, String> {
    let back_at = wait_for("leadership to return", Duration::from_secs(30), || async {
        current_leader(cluster.tls(), cluster.endpoints)
            .await
            .filter(|&(l, _, _)| l == 0)
            .map(|_| Instant::now())
    })
    .await?;
    let (_, term, _) = current_leader(cluster.tls(), cluster.endpoints)
        .await
        .unwrap_or((0, 0, 0));
    let back_after = back_at.saturating_duration_since(caught_at);
    cluster.timeline.recovery(
        back_at,
        format!("kvstore-0 leads again +{}", ms(back_after)),
    );
    narrator.say(&format!(
        "kvstore-0 leads again (term {term}), {} after catching up: kvstore-{new_leader} handed leadership back to the lower ordinal",
        ms(back_after)
    ));
    Ok(back_after)
}
