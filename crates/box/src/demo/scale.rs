//! The scaling demonstration: 3 -> 5 -> 3 under load, as `kubectl scale`
//! would do it. The desired count changes (the StatefulSet's
//! spec.replicas); the supervisor creates or deletes pods in ordinal order
//! as the StatefulSet controller does; the leader's controller adds each new
//! pod as a learner, promotes it once caught up, and removes the pods a
//! scale-down deletes, highest ordinal first. The narration follows it from
//! the leader's status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::load::Load;
use super::probe::statuses;
use super::report::{ms, ScaleStep};
use super::{Cluster, Narrator};
use crate::local::{PodEvent, Supervisor};
use kvstore_proto::kv::{Role, StatusResponse};

/// The most a scale step may take before the demo gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Scales to `via` replicas and back to where it started, narrating each
/// step.
pub(super) async fn scale_up_and_down(
    cluster: &Cluster<'_>,
    load: &Load,
    via: u32,
    narrator: &mut Narrator<'_>,
) -> Result<Vec<ScaleStep>, String> {
    let from = cluster.opts.replicas;
    let mut steps = Vec::new();
    for (a, b) in [(from, via), (via, from)] {
        let step = scale_step(cluster, load, a, b, narrator).await?;
        narrator.say(&format!(
            "scaled {a} -> {b} in {}; longest write gap meanwhile {}",
            ms(step.took),
            ms(step.write_gap)
        ));
        steps.push(step);
        // The load runs on the new size for a moment before the next step.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(steps)
}

/// The leader's status among `statuses`.
fn leader_of(statuses: &[Option<StatusResponse>]) -> Option<&StatusResponse> {
    statuses
        .iter()
        .flatten()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
}

/// One step: from `from` to `to` replicas, until the configuration is
/// exactly the voters `0..to` and the pods beyond are gone.
async fn scale_step(
    cluster: &Cluster<'_>,
    load: &Load,
    from: u32,
    to: u32,
    narrator: &mut Narrator<'_>,
) -> Result<ScaleStep, String> {
    let endpoints = cluster.endpoints_up_to(from.max(to));
    cluster.sup.take_events();
    let started = Instant::now();
    Supervisor::write_desired(&cluster.opts.dir, to)?;
    narrator.say(&format!(
        "scale {from} -> {to}: the desired replica count (spec.replicas) is now {to}"
    ));
    cluster
        .timeline
        .fault(started, format!("replicas {from} -> {to}"));
    // What each member was last seen as: "learner", "caught up", "voter".
    let mut seen: BTreeMap<u32, &'static str> = (0..from).map(|n| (n, "voter")).collect();
    let mut events: Vec<String> = Vec::new();
    loop {
        for (_, e) in cluster.sup.take_events() {
            let line = match e {
                PodEvent::Created { name, pid } => format!("{name} created (pid {pid})"),
                PodEvent::Deleted { name } => {
                    format!("{name} deleted (its volume stays, as a PVC does)")
                }
                _ => continue,
            };
            narrator.say(&format!("  {line}"));
            cluster.timeline.recovery(Instant::now(), short(&line));
            events.push(line);
        }
        let all = statuses(cluster.tls(), &endpoints).await;
        if let Some(leader) = leader_of(&all) {
            for line in membership_changes(leader, &mut seen) {
                narrator.say(&format!("  {line}"));
                cluster.timeline.recovery(Instant::now(), short(&line));
                events.push(line);
            }
            let exact = leader.voters == (0..to).collect::<Vec<_>>() && leader.learners.is_empty();
            let pods_gone = cluster.sup.pods().len() as u32 == to;
            let pods_up = (0..to).all(|n| all.get(n as usize).is_some_and(Option::is_some));
            if exact && pods_gone && pods_up {
                break;
            }
        }
        if started.elapsed() > STEP_LIMIT {
            return Err(format!(
                "scaling {from} -> {to} did not finish within {STEP_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let (gap_start, gap_end) = load.longest_gap_span(started);
    cluster.timeline.gap(gap_start, gap_end);
    cluster.timeline.recovery(
        gap_end,
        format!("longest write gap {}", ms(gap_end - gap_start)),
    );
    cluster.timeline.episode(
        format!("scale {from} -> {to}: done in {}", ms(took)),
        started,
        started + took,
    );
    Ok(ScaleStep {
        from,
        to,
        took,
        write_gap: gap_end - gap_start,
        events,
    })
}

/// A narrated event as a label: its words before any explanation in
/// brackets or after a colon.
fn short(line: &str) -> String {
    line.split([':', '('])
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

/// Narration lines for what changed in the leader's view of the members
/// since `seen`: a learner joined, caught up, became a voter, or left.
fn membership_changes(
    leader: &StatusResponse,
    seen: &mut BTreeMap<u32, &'static str>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let lag_of = |n: u32| {
        leader
            .peers
            .iter()
            .find(|p| p.ordinal == n)
            .map(|p| leader.commit_revision.saturating_sub(p.match_revision))
    };
    for &n in &leader.learners {
        let caught_up = lag_of(n).is_some_and(|lag| lag <= 256)
            && leader
                .peers
                .iter()
                .any(|p| p.ordinal == n && p.match_revision > 0);
        let now = if caught_up { "caught up" } else { "learner" };
        if seen.get(&n) == Some(&now) {
            continue;
        }
        if !seen.contains_key(&n) {
            lines.push(format!(
                "kvstore-{n} joined as a learner (reached by its DNS name; receives the log, does not vote)"
            ));
        }
        if caught_up {
            lines.push(format!(
                "kvstore-{n} caught up (lag {} revisions of {})",
                lag_of(n).unwrap_or(0),
                leader.commit_revision
            ));
        }
        seen.insert(n, now);
    }
    for &n in &leader.voters {
        if seen.get(&n) != Some(&"voter") {
            if !seen.contains_key(&n) {
                lines.push(format!("kvstore-{n} joined"));
            }
            lines.push(format!(
                "kvstore-{n} became a voter: quorum is now {} of {}",
                leader.voters.len() / 2 + 1,
                leader.voters.len()
            ));
            seen.insert(n, "voter");
        }
    }
    let members: Vec<u32> = leader
        .voters
        .iter()
        .chain(&leader.learners)
        .copied()
        .collect();
    let gone: Vec<u32> = seen
        .keys()
        .copied()
        .filter(|n| !members.contains(n))
        .collect();
    for n in gone {
        seen.remove(&n);
        lines.push(format!(
            "kvstore-{n} left the configuration: {} voters, quorum {}",
            leader.voters.len(),
            leader.voters.len() / 2 + 1
        ));
    }
    lines
}
