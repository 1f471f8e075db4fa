//! `kvstore demo --as-deployment`: why a StatefulSet and not a Deployment,
//! measured.
//!
//! The same kill twice, each on a fresh cluster in a box under the same
//! load: SIGKILL of the leader, kvstore-0. Under the StatefulSet the
//! supervisor brings kvstore-0 back as itself: the same name, the same DNS
//! name, the same volume. Under the Deployment the killed pod is not brought
//! back ([`crate::local::Supervisor::retire`]: its DNS record goes, as a
//! Deployment's pods have no stable per-pod name) and a new pod takes its
//! place ([`crate::local::Supervisor::start_replacement`]): a random name
//! like `kvstore-7d9f8c6b5-x2kqp`, an address no pod had, an empty volume.
//!
//! Each run watches the cluster for [`WINDOW`] after the kill and measures,
//! from the running cluster: whether the pod that came back is taken as the
//! old member (its Status, or how its process ended); how long the cluster
//! runs with less redundancy (until every voter is up and caught up again);
//! how many bytes the pod that came back must be sent to catch up (the
//! leader's stored bytes minus what that pod holds: kvstore-0 keeps its
//! volume, a new pod has nothing); what a client of the old pod's DNS name
//! sees; and, as always, that no acknowledged write is lost.

mod measure;
mod observe;
mod old_name;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::check::{self, Checked};
use super::drive::start_load;
use super::load::Load;
use super::probe::{pod_status, wait_for};
use super::report::ms;
use super::timeline::Timeline;
use super::{client_tls, prepare, start_cluster, Cluster, DemoOptions, Narrator};
use observe::Seen;
use old_name::{OldNameClient, Target};

pub use report::{
    deployment_summary, Acceptance, Controller, ControllerRun, DeploymentReport, OldNameReads,
};

/// How long each run watches the cluster after the kill: ten times what
/// the StatefulSet takes to restore full redundancy on a 2-core machine.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Runs the kill under a StatefulSet, then under a Deployment, each on a
/// fresh cluster in a box (in `opts.dir`'s `statefulset` and `deployment`).
/// `say` receives each narrated line (already timestamped).
pub fn run_as_deployment(
    opts: &DemoOptions,
    say: &mut dyn FnMut(String),
) -> Result<DeploymentReport, String> {
    let epoch = Instant::now();
    let mut narrator = Narrator { epoch, say };
    let runtime = prepare(opts)?;
    narrator.say(&format!(
        "the same kill twice, each on a fresh box under the same load: kill -9 of the leader, kvstore-0; watched for {} s after it",
        WINDOW.as_secs()
    ));
    let statefulset = run_under(Controller::StatefulSet, opts, &runtime, &mut narrator)?;
    let deployment = run_under(Controller::Deployment, opts, &runtime, &mut narrator)?;
    Ok(DeploymentReport {
        window: WINDOW,
        statefulset,
        deployment,
        elapsed: epoch.elapsed(),
    })
}

/// One run on a fresh box, stopped at the end whatever happened.
fn run_under(
    controller: Controller,
    opts: &DemoOptions,
    runtime: &tokio::runtime::Runtime,
    narrator: &mut Narrator<'_>,
) -> Result<ControllerRun, String> {
    let opts = DemoOptions {
        dir: opts.dir.join(controller.name().to_ascii_lowercase()),
        ..opts.clone()
    };
    narrator.say(&format!("=== {}: {}", controller.name(), plan(controller)));
    let (sup, endpoints) = start_cluster(&opts, runtime, narrator)?;
    let epoch = narrator.epoch;
    // Each run's picture counts its time from the run's own start.
    let timeline = Timeline::new(Instant::now());
    let result = client_tls(&opts).and_then(|tls| {
        let cluster = Cluster {
            opts: &opts,
            sup: &sup,
            endpoints: &endpoints,
            tls,
            timeline: &timeline,
        };
        let (run, ()) = runtime.block_on(async {
            tokio::join!(
                async {
                    let run = kill_and_watch(&cluster, controller, epoch, narrator).await;
                    timeline.stop_sampling();
                    run
                },
                timeline.sample_roles(cluster.tls(), cluster.endpoints)
            )
        });
        run
    });
    let ended = Instant::now();
    narrator.say("stopping every pod");
    sup.stop(Duration::from_secs(20));
    let run = result?;
    if let Some(path) = &opts.timeline {
        let path = picture_path(path, controller);
        timeline.write_svg(&path, &picture_title(&run), ended)?;
        narrator.say(&format!("timeline written to {}", path.display()));
    }
    Ok(run)
}

/// Where a run's picture goes: the demo's picture path with the
/// controller's name added to its stem.
fn picture_path(path: &Path, controller: Controller) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = format!("{stem}-{}.svg", controller.name().to_ascii_lowercase());
    path.with_file_name(name)
}

/// The heading of a run's picture.
fn picture_title(run: &ControllerRun) -> String {
    let back = match run.controller {
        Controller::StatefulSet => "kvstore-0 killed, back as itself on its own volume",
        Controller::Deployment => {
            "kvstore-0 killed, replaced by a new pod (random name, new address, empty volume)"
        }
    };
    format!(
        "--as-deployment, {}: {back}; {} writes acknowledged, {} lost",
        run.controller.name(),
        run.acked,
        run.lost.len()
    )
}

/// What the controller does with the killed pod.
fn plan(controller: Controller) -> &'static str {
    match controller {
        Controller::StatefulSet => {
            "the killed pod comes back as itself: same name, same DNS name, same volume"
        }
        Controller::Deployment => {
            "the killed pod is replaced by a new one: a random name, a new address, an empty volume, no DNS name of its own"
        }
    }
}

/// The load, the kill, the window, then the checks.
async fn kill_and_watch(
    cluster: &Cluster<'_>,
    controller: Controller,
    epoch: Instant,
    narrator: &mut Narrator<'_>,
) -> Result<ControllerRun, String> {
    let load = start_load(cluster, epoch, narrator).await?;
    let target = old_name_target(cluster)?;
    let name = target.name.clone();
    let reader = OldNameClient::start(target)?;
    wait_for(
        "a read through kvstore-0's name",
        Duration::from_secs(10),
        || async { reader.answered().then_some(()) },
    )
    .await?;
    narrator.say(&format!(
        "a client reads through kvstore-0's stable name {}, resolved by the box's DNS",
        name.trim_end_matches('.')
    ));
    let before = leader_zero(cluster).await?;
    let at = kill_zero(cluster, controller, &before, narrator)?;
    let seen = observe::watch(cluster, controller, &before, at, &reader, narrator).await?;
    let old_name = reader.stop(at, seen.gone_at).await;
    narrator.say(&format!(
        "the client of kvstore-0's name, in the {} s after the kill: {} reads answered, {} NXDOMAIN, {} other failures",
        WINDOW.as_secs(),
        old_name.ok_after_kill,
        old_name.nxdomain_after_kill,
        old_name.errors_after_kill
    ));
    tell_bytes(controller, &seen, narrator);
    mark_outcome(cluster, &load, at, &seen);
    // Let the last writes land before the load is stopped and checked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.timeline.set_acks(load.ack_times());
    let checked = check::finish_and_check(load, cluster.tls(), cluster.endpoints, narrator).await?;
    Ok(run_report(controller, seen, old_name, checked))
}

/// The client of kvstore-0's stable name, reading one of the load's keys.
fn old_name_target(cluster: &Cluster<'_>) -> Result<Target, String> {
    let state = cluster.sup.state();
    let dns = state
        .dns
        .parse()
        .map_err(|e| format!("the box's DNS address {}: {e}", state.dns))?;
    let pod0 = state
        .pods
        .iter()
        .find(|p| p.ordinal == 0)
        .ok_or("no kvstore-0")?;
    Ok(Target {
        dns,
        name: format!("{}.", pod0.dns_name),
        port: cluster.opts.client_port,
        key: "demo/reg/0".into(),
        tls: cluster.tls.clone(),
    })
}

/// Waits for kvstore-0 to lead (it does, by its ordinal); gives its Status
/// just before the kill.
async fn leader_zero(cluster: &Cluster<'_>) -> Result<kvstore_proto::kv::StatusResponse, String> {
    let own = cluster.endpoint_of(0)?;
    wait_for("kvstore-0 to lead", Duration::from_secs(20), || async {
        pod_status(cluster.tls(), &own)
            .await
            .filter(|s| s.role == kvstore_proto::kv::Role::Leader as i32)
    })
    .await
}

/// SIGKILL to kvstore-0; under the Deployment, its retirement at once (no
/// restart, no DNS record). Gives the instant of the kill.
fn kill_zero(
    cluster: &Cluster<'_>,
    controller: Controller,
    before: &kvstore_proto::kv::StatusResponse,
    narrator: &mut Narrator<'_>,
) -> Result<Instant, String> {
    cluster.sup.take_events();
    let pid = cluster.sup.signal(0, libc::SIGKILL)?;
    let at = Instant::now();
    cluster.timeline.fault(at, "kill -9 kvstore-0");
    if controller == Controller::Deployment {
        cluster.sup.retire(0)?;
    }
    narrator.say(&format!(
        "kill -9 kvstore-0 (pid {pid}), the leader of term {}, holding {} stored bytes",
        before.term, before.stored_bytes
    ));
    if controller == Controller::Deployment {
        narrator.say("kvstore-0 is not restarted, and its DNS record is removed");
    }
    Ok(at)
}

/// Marks on the timeline how the kill at `at` ended: the longest write
/// gap, and full redundancy restored or not within the window.
fn mark_outcome(cluster: &Cluster<'_>, load: &Load, at: Instant, seen: &Seen) {
    let (start, end) = load.longest_gap_span(at);
    cluster.timeline.gap(start, end);
    cluster
        .timeline
        .recovery(end, format!("longest write gap {}", ms(end - start)));
    match seen.restored_after {
        Some(d) => cluster.timeline.recovery(
            at + d,
            format!("{} accepted; full redundancy again +{}", seen.pod, ms(d)),
        ),
        None => cluster.timeline.fault(
            at + WINDOW,
            format!(
                "{} not accepted; not restored after {} s",
                seen.pod,
                WINDOW.as_secs()
            ),
        ),
    }
}

/// Narrates what the pod that came back must be sent to catch up.
fn tell_bytes(controller: Controller, seen: &Seen, narrator: &mut Narrator<'_>) {
    let to_copy = seen.leader_stored.saturating_sub(seen.held);
    let volume = match controller {
        Controller::StatefulSet => "on its own volume",
        Controller::Deployment => "on its new volume",
    };
    narrator.say(&format!(
        "bytes to copy: when {pod} came back the leader stored {} bytes (keys and values, data and history); {pod} held {} {volume}, so {to_copy} had to be sent to it",
        seen.leader_stored,
        seen.held,
        pod = seen.pod,
    ));
}

fn run_report(
    controller: Controller,
    seen: Seen,
    old_name: OldNameReads,
    checked: Checked,
) -> ControllerRun {
    ControllerRun {
        controller,
        pod: seen.pod,
        acceptance: seen.acceptance,
        restored_after: seen.restored_after,
        bytes_to_copy: seen.leader_stored.saturating_sub(seen.held),
        leader_stored_bytes: seen.leader_stored,
        held_bytes: seen.held,
        old_name,
        acked: checked.acked,
        unknown: checked.unknown,
        lost: checked.lost,
        linearizable: checked.linearizable,
    }
}
