//! The window after the kill, watched every 20 ms: the killed pod's exit,
//! what comes back (kvstore-0 again, or the Deployment's replacement),
//! whether it is taken as the old member, when every voter is up and
//! caught up again, and what the client of the old name sees.

use std::time::{Duration, Instant};

use super::super::probe::pod_status;
use super::super::report::ms;
use super::super::{Cluster, Narrator};
use super::measure::{
    dir_bytes, exited, full_redundancy, judge, leader_stored_bytes, new_pod_address,
};
use super::old_name::OldNameClient;
use super::{Acceptance, Controller, WINDOW};
use crate::local::{PodEvent, PodState, Replacement};
use kvstore_proto::kv::StatusResponse;

/// The pod killed: kvstore-0, the leader.
const KILLED: &str = "kvstore-0";

/// What the window showed.
pub(super) struct Seen {
    /// When the supervisor saw the killed process gone.
    pub(super) gone_at: Instant,
    /// The pod that came back.
    pub(super) pod: String,
    pub(super) acceptance: Acceptance,
    pub(super) restored_after: Option<Duration>,
    /// The leader's stored bytes when the pod came back.
    pub(super) leader_stored: u64,
    pub(super) held: u64,
}

/// The watch's state.
struct Watcher<'a, 'c> {
    cluster: &'a Cluster<'c>,
    controller: Controller,
    /// kvstore-0's status just before the kill.
    before: &'a StatusResponse,
    at: Instant,
    gone_at: Option<Instant>,
    /// kvstore-0 came back (StatefulSet).
    restarted: bool,
    /// The new pod (Deployment).
    replacement: Option<PodState>,
    /// The most the replacement said it stores, if it ever answered.
    replacement_stored: Option<u64>,
    acceptance: Option<Acceptance>,
    /// The leader's stored bytes when the pod came back (the first answer
    /// after kvstore-0's restart or the replacement's start).
    stored_when_back: Option<u64>,
    restored: Option<Duration>,
    /// Narrated already: the old name's first read after the kill, its
    /// first NXDOMAIN.
    told: (bool, bool),
}

/// The most the StatefulSet run waits for full redundancy.
const RESTORE_LIMIT: Duration = Duration::from_secs(60);

/// Watches the cluster for [`WINDOW`] after the kill at `at` (under the
/// StatefulSet, until full redundancy is back if that takes longer).
pub(super) async fn watch(
    cluster: &Cluster<'_>,
    controller: Controller,
    before: &StatusResponse,
    at: Instant,
    reader: &OldNameClient,
    narrator: &mut Narrator<'_>,
) -> Result<Seen, String> {
    let mut w = Watcher {
        cluster,
        controller,
        before,
        at,
        gone_at: None,
        restarted: false,
        replacement: None,
        replacement_stored: None,
        acceptance: None,
        stored_when_back: None,
        restored: None,
        told: (false, false),
    };
    // The StatefulSet's restoration is awaited past the window on a slow
    // machine: how long it takes is measured, not bounded by the demo.
    let watching = |w: &Watcher| {
        let waited = at.elapsed();
        waited < WINDOW
            || (controller == Controller::StatefulSet
                && w.restored.is_none()
                && waited < RESTORE_LIMIT)
    };
    while watching(&w) {
        w.step(reader, narrator).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.finish(narrator).await
}

impl Watcher<'_, '_> {
    async fn step(
        &mut self,
        reader: &OldNameClient,
        narrator: &mut Narrator<'_>,
    ) -> Result<(), String> {
        for (t, event) in self.cluster.sup.take_events() {
            self.on_event(t, event, narrator);
        }
        let due = self.at.elapsed() >= self.cluster.opts.restart_delay;
        if self.controller == Controller::Deployment && self.replacement.is_none() && due {
            self.start_replacement(narrator)?;
        }
        self.ask_the_pod_back(narrator).await;
        let back = self.restarted || self.replacement.is_some();
        if back && self.stored_when_back.is_none() {
            self.stored_when_back = leader_stored_bytes(self.cluster).await;
        }
        // Not before the killed leader is seen gone: while it dies it may
        // still answer for a cluster that looks whole.
        if self.restored.is_none() && self.gone_at.is_some() {
            self.check_restored(narrator).await;
        }
        self.tell_reads(reader, narrator);
        Ok(())
    }

    fn on_event(&mut self, t: Instant, event: PodEvent, narrator: &mut Narrator<'_>) {
        let after = ms(t.saturating_duration_since(self.at));
        match event {
            PodEvent::Exited { name, status, .. } if name == KILLED => {
                self.gone_at.get_or_insert(t);
                narrator.say(&format!(
                    "{KILLED} exited: {status}, seen {after} after the signal"
                ));
            }
            PodEvent::Restarted { name, .. } if name == KILLED => {
                self.restarted = true;
                let own = self.cluster.endpoint_of(0).unwrap_or_default();
                narrator.say(&format!(
                    "the StatefulSet brings {KILLED} back {after} after the kill: the same name, its DNS name still resolving to {own}, its own volume"
                ));
            }
            PodEvent::Exited {
                name,
                status,
                restart_in,
            } => {
                let Some(pod) = self.replacement.as_ref().filter(|p| p.name == name) else {
                    return;
                };
                if self.acceptance.is_none() {
                    let a = exited(&name, &status, &pod.log);
                    narrator.say(&format!("the replacement is refused: {}", a.evidence));
                    self.acceptance = Some(a);
                }
                narrator.say(&format!(
                    "{name} exited ({status}) {after} after the kill; kubelet restarts it in {} (CrashLoopBackOff while it keeps failing)",
                    ms(restart_in)
                ));
            }
            _ => {}
        }
    }

    /// The Deployment's new pod: a random name, an address no pod had, an
    /// empty volume, and no DNS record.
    fn start_replacement(&mut self, narrator: &mut Narrator<'_>) -> Result<(), String> {
        let r = Replacement {
            name: Replacement::random_name("kvstore"),
            ip: new_pod_address(self.cluster)?,
            replaces: 0,
        };
        let pod = self.cluster.sup.start_replacement(&r)?;
        narrator.say(&format!(
            "the Deployment's ReplicaSet creates a new pod {} {} after the kill: pid {}, address {}, a new empty volume {}, and no DNS name of its own",
            pod.name,
            ms(self.at.elapsed()),
            pod.pid.unwrap_or(0),
            pod.client,
            pod.data_dir.display()
        ));
        self.replacement = Some(pod);
        Ok(())
    }

    /// Asks the pod that came back for its Status; the first answer
    /// decides whether it is the old member.
    async fn ask_the_pod_back(&mut self, narrator: &mut Narrator<'_>) {
        let address = match (&self.replacement, self.restarted) {
            (Some(r), _) => r.client.clone(),
            (None, true) if self.acceptance.is_none() => {
                self.cluster.endpoint_of(0).unwrap_or_default()
            }
            _ => return,
        };
        let Some(status) = pod_status(self.cluster.tls(), &address).await else {
            return;
        };
        if self.replacement.is_some() && self.replacement_stored.is_none() {
            // What its volume held when it first answered.
            self.replacement_stored = Some(status.stored_bytes);
        }
        if self.acceptance.is_none() {
            let a = judge(self.before, &status);
            let verdict = if a.accepted {
                "taken as the old member"
            } else {
                "not the old member"
            };
            narrator.say(&format!("{verdict}: {}", a.evidence));
            self.acceptance = Some(a);
        }
    }

    async fn check_restored(&mut self, narrator: &mut Narrator<'_>) {
        let replicas = self.cluster.opts.replicas;
        if full_redundancy(self.cluster, replicas).await {
            let after = self.at.elapsed();
            narrator.say(&format!(
                "all {replicas} voters up and caught up again {} after the kill: full redundancy restored",
                ms(after)
            ));
            self.restored = Some(after);
        }
    }

    /// Narrates the old name's first read answered after the kill, and its
    /// first NXDOMAIN.
    fn tell_reads(&mut self, reader: &OldNameClient, narrator: &mut Narrator<'_>) {
        let Some(gone_at) = self.gone_at else {
            return;
        };
        let reads = reader.tally(self.at, gone_at);
        if let (false, Some(first)) = (self.told.0, reads.first_ok_after_kill) {
            self.told.0 = true;
            narrator.say(&format!(
                "the client of {KILLED}'s name reads again, {} after the kill",
                ms(first)
            ));
        }
        if !self.told.1 && reads.nxdomain_after_kill > 0 {
            self.told.1 = true;
            narrator.say(&format!(
                "the client of {KILLED}'s name gets NXDOMAIN: the name no longer exists"
            ));
        }
    }

    async fn finish(self, narrator: &mut Narrator<'_>) -> Result<Seen, String> {
        let gone_at = self
            .gone_at
            .ok_or_else(|| format!("the supervisor never saw {KILLED} exit"))?;
        let pod = match &self.replacement {
            Some(r) => r.name.clone(),
            None => KILLED.to_string(),
        };
        let acceptance = self.acceptance.unwrap_or_else(|| Acceptance {
            accepted: false,
            reason: "never answered".into(),
            evidence: format!("{pod} did not answer Status within {} s", WINDOW.as_secs()),
        });
        if self.restored.is_none() {
            narrator.say(&format!(
                "{} s after the kill, not every voter is up: the cluster still runs with less redundancy",
                WINDOW.as_secs()
            ));
        }
        let leader_stored = match self.stored_when_back {
            Some(stored) => stored,
            // Never back, or no leader answered since: what it lacks now.
            None => leader_stored_bytes(self.cluster)
                .await
                .ok_or("no leader at the window's end")?,
        };
        let held = match (&self.replacement, self.replacement_stored) {
            // kvstore-0's volume holds what it had applied when it was
            // killed: its own Status just before the kill.
            (None, _) => self.before.stored_bytes,
            (Some(_), Some(stored)) => stored,
            (Some(r), None) => dir_bytes(&r.data_dir),
        };
        Ok(Seen {
            gone_at,
            pod,
            acceptance,
            restored_after: self.restored,
            leader_stored,
            held,
        })
    }
}
