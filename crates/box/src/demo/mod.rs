//! `kvstore demo`: the failover demonstration, and the measurement harness
//! behind the process-level replication tests.
//!
//! It starts the cluster in a box, runs a bounded write-and-read load, kills
//! the leader with SIGKILL, and narrates what happens with timestamps: who
//! leads and why, the election, the write-unavailability window the load
//! sees, the old pod coming back on its own data dir, catching up and taking
//! leadership back. Then it checks that every acknowledged write is readable
//! and that the history of reads and writes on a few shared keys is
//! linearizable, and prints a summary.
//!
//! The modules follow the demonstration: `load` is the writers and
//! readers, `drive` the order of the phases, `failover` and `rolling`
//! the faults and the recovery each is followed through, `check` the
//! verdict on what the load saw, `report` the numbers and the summary;
//! `probe` is how all of them look at the cluster. `sessions` is a
//! demonstration of its own (`--sessions`): clients reading their own
//! writes pinned to one pod, or from any pod with and without a revision
//! token, through the death of the pinned pod; `deployment` is the
//! `--as-deployment` comparison: the same kill under a StatefulSet and
//! under a Deployment, on two boxes, with a table of its own.

mod check;
mod deployment;
mod drive;
mod failover;
mod load;
mod probe;
mod report;
mod rolling;
mod scale;
mod sessions;
mod timeline;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::local::{LocalConfig, RunningSupervisor, Supervisor};
use kvstore_client::TlsOptions;
use timeline::Timeline;

pub use deployment::{
    deployment_summary, run_as_deployment, Acceptance, Controller, ControllerRun, DeploymentReport,
    OldNameReads,
};
pub use report::{summary, Failover, Report, RollingStep, ScaleStep};
pub use sessions::{
    run_sessions, sessions_summary, SessionsReport, Way, WayFigures, SESSION_REQUEST_BUDGET,
};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the pods' data dirs and logs go (emptied first).
    pub dir: PathBuf,
    /// Pod 0's loopback address.
    pub base_ip: Ipv4Addr,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Number of pods.
    pub replicas: u32,
    /// Leader kills (SIGKILL) to do.
    pub kills: u32,
    /// Also do a rolling restart (SIGTERM, highest ordinal first).
    pub rolling_restart: bool,
    /// Scale to this many pods and back under load (`--scale`), if set.
    pub scale_via: Option<u32>,
    /// Concurrent writers.
    pub writers: usize,
    /// Concurrent readers.
    pub readers: usize,
    /// How long the supervisor waits before restarting a dead pod.
    pub restart_delay: Duration,
    /// The `kvstore` binary.
    pub binary: PathBuf,
    /// Extra `kvstore serve` flags.
    pub serve_args: Vec<String>,
    /// Both ports with TLS (`kvstore local --tls`), the demo's clients
    /// with the box's client certificate.
    pub tls: bool,
    /// Where to write the demonstration's timeline picture (SVG), if
    /// anywhere.
    pub timeline: Option<PathBuf>,
}

impl DemoOptions {
    /// The client endpoints of ordinals `0..n`: pod n binds the base
    /// address plus n.
    pub fn pod_endpoints(&self, n: u32) -> Vec<String> {
        (0..n)
            .map(|o| {
                let ip = Ipv4Addr::from(u32::from(self.base_ip) + o);
                format!("{ip}:{}", self.client_port)
            })
            .collect()
    }

    /// With `--tls`, the files of the box's client TLS: its CA, and the
    /// client certificate and key (written when the box starts).
    pub fn client_tls_files(&self) -> [PathBuf; 3] {
        let dir = Supervisor::tls_dir(&self.dir);
        [
            dir.join("ca.crt"),
            dir.join("client.crt"),
            dir.join("client.key"),
        ]
    }
}

/// Hands each narrated line to the caller, stamped with the time since the
/// demo started.
struct Narrator<'a> {
    epoch: Instant,
    say: &'a mut dyn FnMut(String),
}

impl Narrator<'_> {
    /// Narrates `msg`, timestamped.
    fn say(&mut self, msg: &str) {
        let line = format!("[{:>8.3}s] {msg}", self.epoch.elapsed().as_secs_f64());
        (self.say)(line);
    }
}

/// The running cluster in a box that every phase acts on.
struct Cluster<'a> {
    opts: &'a DemoOptions,
    sup: &'a RunningSupervisor,
    /// The pods' client endpoints, by ordinal.
    endpoints: &'a [String],
    /// The box's client TLS, with `--tls`.
    tls: Option<TlsOptions>,
    /// Where the phases mark what they measured, for the picture.
    timeline: &'a Timeline,
}

impl Cluster<'_> {
    /// The TLS the demo's clients connect with.
    fn tls(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }

    /// The client endpoint of the pod with this ordinal. The ordinal may come
    /// from a pod's own status, so a pod that does not exist is an error,
    /// not a panic.
    fn endpoint_of(&self, ordinal: u32) -> Result<String, String> {
        self.endpoints
            .get(ordinal as usize)
            .cloned()
            .ok_or_else(|| format!("no pod has ordinal {ordinal}"))
    }

    /// The client endpoints of ordinals `0..n`, pods a scale-up creates
    /// included.
    fn endpoints_up_to(&self, n: u32) -> Vec<String> {
        self.opts.pod_endpoints(n)
    }
}

/// Runs the demonstration. `say` receives each narrated line (already
/// timestamped).
pub fn run(opts: &DemoOptions, say: &mut dyn FnMut(String)) -> Result<Report, String> {
    let epoch = Instant::now();
    let mut narrator = Narrator { epoch, say };
    let boxed = InABox::start(opts, &mut narrator)?;
    let timeline = Timeline::new(epoch);
    let cluster = boxed.cluster(opts, &timeline);
    // Every pod the demo may have, a scale-up's included.
    let sampled = cluster.endpoints_up_to(opts.replicas.max(opts.scale_via.unwrap_or(0)));
    let (result, ()) = boxed.runtime.block_on(async {
        tokio::join!(
            async {
                let report = drive::drive(&cluster, epoch, &mut narrator).await;
                timeline.stop_sampling();
                report
            },
            timeline.sample_roles(cluster.tls(), &sampled)
        )
    });
    let ended = Instant::now();
    boxed.stop(&mut narrator);
    let mut report = result?;
    report.elapsed = epoch.elapsed();
    if let Some(path) = &opts.timeline {
        timeline.write_svg(path, &report::picture_title(&report), ended)?;
        narrator.say(&format!("timeline written to {}", path.display()));
    }
    Ok(report)
}

/// A started cluster in a box and the runtime its clients run on: what
/// every demonstration starts with and stops at its end.
struct InABox {
    runtime: tokio::runtime::Runtime,
    sup: RunningSupervisor,
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
}

impl InABox {
    /// Empties `opts.dir` and starts the pods, narrating.
    fn start(opts: &DemoOptions, narrator: &mut Narrator<'_>) -> Result<InABox, String> {
        let runtime = prepare(opts)?;
        let (sup, endpoints) = start_cluster(opts, &runtime, narrator)?;
        let tls = client_tls(opts)?;
        Ok(InABox {
            runtime,
            sup,
            endpoints,
            tls,
        })
    }

    /// The cluster as the phases see it, marking what they measure on
    /// `timeline`.
    fn cluster<'a>(&'a self, opts: &'a DemoOptions, timeline: &'a Timeline) -> Cluster<'a> {
        Cluster {
            opts,
            sup: &self.sup,
            endpoints: &self.endpoints,
            tls: self.tls.clone(),
            timeline,
        }
    }

    /// Stops every pod; outside the runtime, as the supervisor requires.
    fn stop(self, narrator: &mut Narrator<'_>) {
        narrator.say("stopping every pod (reverse ordinal order)");
        self.sup.stop(Duration::from_secs(20));
    }
}

/// What every demonstration does first: checks the pod count, empties
/// `opts.dir`, and builds the runtime its clients run on.
fn prepare(opts: &DemoOptions) -> Result<tokio::runtime::Runtime, String> {
    if opts.replicas < 3 {
        return Err("the demo needs at least 3 pods".into());
    }
    let _ = std::fs::remove_dir_all(&opts.dir);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// The box's client certificate, with `--tls`.
fn client_tls(opts: &DemoOptions) -> Result<Option<TlsOptions>, String> {
    if !opts.tls {
        return Ok(None);
    }
    let [ca, cert, key] = opts.client_tls_files();
    TlsOptions::from_files(&ca, Some((&cert, &key)), None)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Starts the pods under a supervisor and introduces them; returns the
/// supervisor and the pods' client endpoints by ordinal.
fn start_cluster(
    opts: &DemoOptions,
    runtime: &tokio::runtime::Runtime,
    narrator: &mut Narrator<'_>,
) -> Result<(RunningSupervisor, Vec<String>), String> {
    let cfg = LocalConfig {
        replicas: opts.replicas,
        dir: opts.dir.clone(),
        base_ip: opts.base_ip,
        client_port: opts.client_port,
        peer_port: opts.peer_port,
        set: "kvstore".into(),
        service: "kvstore-headless".into(),
        namespace: "default".into(),
        restart_delay: opts.restart_delay,
        serve_args: opts.serve_args.clone(),
        binary: opts.binary.clone(),
        tls: opts.tls,
    };
    narrator.say(&format!(
        "starting the cluster in a box: {} pods of StatefulSet \"kvstore\", an embedded DNS server as the headless service",
        opts.replicas
    ));
    let sup = Supervisor::start(cfg, runtime.handle().clone())?;
    let state = sup.state();
    narrator.say(&format!(
        "DNS at {}; pods started in ordinal order:",
        state.dns
    ));
    for p in &state.pods {
        narrator.say(&format!(
            "  {} pid {:<7} client {}  name {}  volume {}",
            p.name,
            p.pid.unwrap_or(0),
            p.client,
            p.dns_name,
            p.data_dir.display()
        ));
    }
    let endpoints: Vec<String> = state.pods.iter().map(|p| p.client.clone()).collect();
    Ok((RunningSupervisor::new(sup), endpoints))
}
