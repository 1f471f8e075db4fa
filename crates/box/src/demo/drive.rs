//! The order of the demonstration's phases, from the first leader to the
//! verdict.

use std::time::{Duration, Instant};

use super::check::{self, Checked};
use super::failover::kill_leader_and_recover;
use super::load::{Load, SHARED_KEYS};
use super::probe::{current_leader, wait_for};
use super::report::{Failover, Report};
use super::rolling::rolling_restart;
use super::scale::scale_up_and_down;
use super::{Cluster, Narrator};

/// Drives the demonstration on a started cluster: the load, the leader
/// kills, the rolling restart if asked for, then the checks. The report's
/// `elapsed` is left for the caller, who also stops the pods.
pub(super) async fn drive(
    cluster: &Cluster<'_>,
    epoch: Instant,
    narrator: &mut Narrator<'_>,
) -> Result<Report, String> {
    let load = start_load(cluster, epoch, narrator).await?;
    let failovers = kill_leaders(cluster, &load, narrator).await?;
    let rolling = if cluster.opts.rolling_restart {
        rolling_restart(cluster, &load, narrator).await?
    } else {
        Vec::new()
    };
    let scaling = match cluster.opts.scale_via {
        Some(via) => scale_up_and_down(cluster, &load, via, narrator).await?,
        None => Vec::new(),
    };
    // Let the last writes land before the load is stopped and checked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.timeline.set_acks(load.ack_times());
    let Checked {
        acked,
        unknown,
        lost,
        linearizable,
        history_ops,
    } = check::finish_and_check(load, cluster.tls(), cluster.endpoints, narrator).await?;
    Ok(Report {
        failovers,
        rolling,
        scaling,
        acked,
        unknown,
        lost,
        linearizable,
        history_ops,
        elapsed: Duration::ZERO,
    })
}

/// Waits for the first leader and explains the choice, then starts the
/// load and lets it run for a while so that the faults hit a busy cluster.
pub(super) async fn start_load(
    cluster: &Cluster<'_>,
    epoch: Instant,
    narrator: &mut Narrator<'_>,
) -> Result<Load, String> {
    // The lowest ordinal leads in steady state; on a busy machine a higher
    // one can win the first term before kvstore-0 is up, and then hands
    // leadership down, so the demo waits for kvstore-0.
    let (_, term, _) = wait_for("kvstore-0 to lead", Duration::from_secs(30), || async {
        current_leader(cluster.tls(), cluster.endpoints)
            .await
            .filter(|&(l, _, _)| l == 0)
    })
    .await?;
    let why = if term == 1 {
        "ordinal 0 has the shortest election timeout (base + ordinal x stagger), so it campaigned first"
    } else {
        "a higher ordinal won an earlier term before kvstore-0 was up, and handed leadership to the lowest ordinal once kvstore-0 had caught up"
    };
    narrator.say(&format!("kvstore-0 leads term {term}: {why}"));
    let opts = cluster.opts;
    let load = Load::start(
        cluster.tls(),
        cluster.endpoints,
        opts.writers,
        opts.readers,
        epoch,
        "demo".into(),
    )?;
    narrator.say(&format!(
        "load running: {} writers (puts of unique keys, and of {SHARED_KEYS} shared keys), {} linearizable readers",
        opts.writers, opts.readers
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    narrator.say(&format!(
        "{} writes acknowledged so far",
        load.acked_count()
    ));
    Ok(load)
}

/// Kills the leader as many times as asked, following each kill through to
/// the cluster's full recovery before the next.
async fn kill_leaders(
    cluster: &Cluster<'_>,
    load: &Load,
    narrator: &mut Narrator<'_>,
) -> Result<Vec<Failover>, String> {
    let mut failovers = Vec::new();
    for kill in 0..cluster.opts.kills {
        failovers.push(kill_leader_and_recover(cluster, load, kill, narrator).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(failovers)
}
