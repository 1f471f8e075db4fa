//! The cluster in a box: an embedded DNS server that plays the headless
//! Service, and a supervisor that plays the StatefulSet controller for R real
//! `kvstore serve` processes on one machine.
//!
//! Each "pod" gets what Kubernetes would give it: the name `<set>-<n>`
//! (as HOSTNAME), its own data dir `<dir>/<set>-<n>` (its PersistentVolume),
//! and its own address: pod n binds loopback IP `base + n` (127.0.0.10,
//! 127.0.0.11, … on Linux) with the same ports as every other pod, and the
//! DNS server maps `<set>-<n>.<service>.<namespace>.svc.cluster.local` to it.
//!
//! The supervisor starts pods in ordinal order (each once its client port
//! answers), restarts a pod that dies with the same name and data dir after
//! a short delay (doubling while it keeps dying, as kubelet's back-off does),
//! and stops them in reverse ordinal order. Pods run in their own process
//! groups (a Ctrl-C reaches only the supervisor, which then stops them in
//! order) and die with the supervisor if it is killed (PR_SET_PDEATHSIG).
//!
//! A JSON state file (`<dir>/state.json`) lists the DNS address and every
//! pod's PID, addresses, data dir and log, for scripts and tests.
//!
//! **Scaling.** The file `<dir>/desired-replicas` plays the StatefulSet's
//! `spec.replicas`: every pod reads it (`--replicas-source file:...`) and
//! the supervisor follows it as the StatefulSet controller does: on a
//! scale-up it creates the missing pods in ordinal order, each once the one
//! before it listens; on a scale-down it deletes the highest ordinal first
//! (SIGTERM, then SIGKILL after a grace period), waiting for each to exit
//! before the next. A deleted pod's data dir stays, as a PersistentVolume
//! claim does when a StatefulSet scales down. `kvstore local scale N`
//! rewrites the file.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::dns::{DnsServer, HeadlessService};
use kvstore_client::backoff::Backoff;
use launch::Launch;

mod launch;
mod replace;
mod scale;
mod state_file;
pub mod tls;

pub use replace::Replacement;
pub use state_file::{PodState, StateFile};

/// The longest wait before restarting a pod that keeps crashing soon after
/// its start (kubelet's CrashLoopBackOff, scaled to a box).
const CRASH_LOOP_MAX_DELAY: Duration = Duration::from_secs(10);

/// How the cluster in a box is laid out.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Number of pods.
    pub replicas: u32,
    /// Where the data dirs, logs and state file live.
    pub dir: PathBuf,
    /// The address of pod 0; pod n gets this plus n.
    pub base_ip: Ipv4Addr,
    /// Client port of every pod.
    pub client_port: u16,
    /// Peer port of every pod.
    pub peer_port: u16,
    /// StatefulSet name.
    pub set: String,
    /// Headless Service name.
    pub service: String,
    /// Namespace.
    pub namespace: String,
    /// Delay before restarting a pod that died.
    pub restart_delay: Duration,
    /// Extra arguments for every `kvstore serve`; `{pod}` in one stands
    /// for the pod's name (`--peer-tls-cert certs/{pod}.crt`: each pod its
    /// own file), `{ip}` for its address (`--ops-listen {ip}:7381`).
    pub serve_args: Vec<String>,
    /// The `kvstore` binary to run.
    pub binary: PathBuf,
    /// Both ports with TLS, from certificates the supervisor issues into
    /// `dir/tls` (see [`tls`]).
    pub tls: bool,
}

/// Whether a process with this id exists.
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

struct Pod {
    state: PodState,
    child: Option<Child>,
    started: Instant,
    restart_at: Option<Instant>,
    /// Kubelet's crash-loop backoff: from the restart delay up to 10 s.
    crash_backoff: Backoff,
    /// The supervisor itself was asked to stop or kill it: not a crash loop.
    signalled: bool,
    /// A scale-down is deleting it: SIGTERM was sent, SIGKILL follows at
    /// this instant; it is not restarted.
    deleting: Option<Instant>,
    /// Retired as a Deployment's pod would be ([`Supervisor::retire`]): it
    /// is not restarted.
    retired: bool,
}

impl Pod {
    /// A pod not started yet.
    fn new(state: PodState, restart_delay: Duration) -> Pod {
        Pod {
            state,
            child: None,
            started: Instant::now(),
            restart_at: None,
            crash_backoff: Backoff::new(restart_delay, CRASH_LOOP_MAX_DELAY),
            signalled: false,
            deleting: None,
            retired: false,
        }
    }
}

/// How long a pod deleted by a scale-down has to stop before SIGKILL
/// (Kubernetes' default terminationGracePeriodSeconds is 30).
const DELETE_GRACE: Duration = Duration::from_secs(30);

/// A running cluster in a box.
pub struct Supervisor {
    cfg: LocalConfig,
    /// The CA that issues the pods' certificates, with TLS.
    ca: Option<tls::BoxCa>,
    dns: Option<DnsServer>,
    dns_addr: SocketAddr,
    pods: BTreeMap<u32, Pod>,
    /// Pods that are not the StatefulSet's, by name: a Deployment's
    /// replacements ([`Supervisor::start_replacement`]).
    replacements: BTreeMap<String, Pod>,
    runtime: tokio::runtime::Handle,
}

/// What happened to a pod during a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// The pod's process exited.
    Exited {
        /// The pod.
        name: String,
        /// How it ended.
        status: String,
        /// When it will be restarted.
        restart_in: Duration,
    },
    /// A scale-up created the pod.
    Created {
        /// The pod.
        name: String,
        /// Its process id.
        pid: u32,
    },
    /// A scale-down deleted the pod (it has exited; its data dir stays).
    Deleted {
        /// The pod.
        name: String,
    },
    /// The pod was started again.
    Restarted {
        /// The pod.
        name: String,
        /// Its new process id.
        pid: u32,
    },
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "killed (SIGKILL)".to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".to_string(),
    }
}

impl Supervisor {
    /// Starts the DNS server and the pods in ordinal order. Must be called
    /// from outside the async runtime whose `runtime` handle is given.
    pub fn start(cfg: LocalConfig, runtime: tokio::runtime::Handle) -> Result<Supervisor, String> {
        if cfg.replicas == 0 {
            return Err("--replicas must be at least 1".into());
        }
        fs::create_dir_all(&cfg.dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.dir.display()))?;
        if let Ok(old) = StateFile::read(&cfg.dir) {
            if old.supervisor_pid != std::process::id() && process_alive(old.supervisor_pid) {
                return Err(format!(
                    "a cluster in a box is already running from {} (supervisor pid {}); stop it first or use another --dir",
                    cfg.dir.display(),
                    old.supervisor_pid
                ));
            }
        }
        let ip_of = |n: u32| IpAddr::V4(Ipv4Addr::from(u32::from(cfg.base_ip) + n));
        let zone = HeadlessService {
            domain: "cluster.local".into(),
            namespace: cfg.namespace.clone(),
            service: cfg.service.clone(),
            set: cfg.set.clone(),
            ports: vec![
                ("grpc".into(), cfg.client_port),
                ("peer".into(), cfg.peer_port),
            ],
            pods: (0..cfg.replicas).map(|n| (n, ip_of(n))).collect(),
            ttl: 5,
        };
        let dns = runtime
            .block_on(DnsServer::start(
                "127.0.0.1:0".parse().expect("address"),
                zone.clone(),
            ))
            .map_err(|e| format!("cannot start the embedded DNS server: {e}"))?;
        let dns_addr = dns.addr();
        let ca = if cfg.tls {
            Some(tls::BoxCa::create(&Self::tls_dir(&cfg.dir))?)
        } else {
            None
        };
        let mut sup = Supervisor {
            ca,
            pods: BTreeMap::new(),
            replacements: BTreeMap::new(),
            dns: Some(dns),
            dns_addr,
            runtime,
            cfg: cfg.clone(),
        };
        Self::write_desired(&cfg.dir, cfg.replicas)?;
        for n in 0..cfg.replicas {
            sup.add_pod(n);
        }
        // Ordered start: each pod once the one before it answers.
        for n in 0..cfg.replicas {
            if let Err(e) = sup
                .spawn(n)
                .and_then(|_| sup.wait_listening(n, Duration::from_secs(30)))
            {
                sup.stop(Duration::from_secs(5));
                return Err(e);
            }
        }
        sup.write_state()?;
        Ok(sup)
    }

    /// Where the box's certificates go under `dir`.
    pub fn tls_dir(dir: &std::path::Path) -> PathBuf {
        dir.join("tls")
    }

    fn spawn(&mut self, n: u32) -> Result<u32, String> {
        let launch = Launch {
            cfg: &self.cfg,
            ca: self.ca.as_ref(),
            dns_addr: self.dns_addr,
        };
        let pod = self.pods.get_mut(&n).ok_or("no such pod")?;
        launch.spawn(pod)
    }

    fn wait_listening(&mut self, n: u32, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let (addr, log): (SocketAddr, PathBuf) = {
            let pod = &self.pods[&n];
            (
                pod.state
                    .client
                    .parse()
                    .map_err(|e| format!("bad address: {e}"))?,
                pod.state.log.clone(),
            )
        };
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let pod = self.pods.get_mut(&n).ok_or("no such pod")?;
            if let Some(child) = pod.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    pod.child = None;
                    let tail = fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                    return Err(format!(
                        "{} exited at start-up ({}); last log lines:\n  {}",
                        pod.state.name,
                        describe(status),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not start listening on {addr}",
                    pod.state.name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The state as written to the state file.
    pub fn state(&self) -> StateFile {
        StateFile {
            supervisor_pid: std::process::id(),
            dns: self.dns_addr.to_string(),
            replicas: self.cfg.replicas,
            pods: self.pods.values().map(|p| p.state.clone()).collect(),
            replacements: self
                .replacements
                .values()
                .map(|p| p.state.clone())
                .collect(),
            tls_dir: self.ca.as_ref().map(|_| Self::tls_dir(&self.cfg.dir)),
        }
    }

    fn write_state(&self) -> Result<(), String> {
        let path = StateFile::path(&self.cfg.dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.state()).map_err(|e| e.to_string())?;
        fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The embedded DNS server's address.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// Reaps exited pods, restarts those whose delay has passed, and
    /// follows the desired replica count. Call often.
    pub fn poll(&mut self) -> Vec<PodEvent> {
        let mut events = self.follow_scale();
        let now = Instant::now();
        let launch = Launch {
            cfg: &self.cfg,
            ca: self.ca.as_ref(),
            dns_addr: self.dns_addr,
        };
        for pod in self.pods.values_mut().chain(self.replacements.values_mut()) {
            events.extend(pod.reap(now, launch.cfg.restart_delay));
            if pod.due(now) {
                events.extend(launch.restart(pod, now));
            }
        }
        if !events.is_empty() {
            if let Err(e) = self.write_state() {
                tracing::warn!("{e}");
            }
        }
        events
    }

    /// Sends `signal` to pod `n`'s process.
    pub fn signal(&mut self, n: u32, signal: i32) -> Result<u32, String> {
        let pod = self.pods.get_mut(&n).ok_or_else(|| format!("no pod {n}"))?;
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            pod.signalled = true;
        }
        let pid = pod
            .state
            .pid
            .ok_or_else(|| format!("{} is not running", pod.state.name))?;
        // SAFETY: kill(2) on a child this supervisor started.
        unsafe {
            libc::kill(pid as i32, signal);
        }
        Ok(pid)
    }

    /// Stops every pod in reverse ordinal order (SIGTERM, then SIGKILL after
    /// `grace`), a Deployment's replacements first, and the DNS server.
    pub fn stop(&mut self, grace: Duration) {
        for pod in self.replacements.values_mut() {
            pod.stop(grace);
        }
        for pod in self.pods.values_mut().rev() {
            pod.stop(grace);
        }
        if let Some(dns) = self.dns.take() {
            self.runtime.block_on(dns.shutdown());
        }
        let _ = fs::remove_file(StateFile::path(&self.cfg.dir));
    }

    /// The pods' states.
    pub fn pods(&self) -> Vec<PodState> {
        self.pods.values().map(|p| p.state.clone()).collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let mut all = self.pods.values().chain(self.replacements.values());
        if all.any(|p| p.child.is_some()) {
            self.stop(Duration::from_secs(10));
        }
    }
}

/// A supervisor polled by a background thread, shareable with async code:
/// what the demo and the process-level tests drive.
pub struct RunningSupervisor {
    inner: std::sync::Arc<std::sync::Mutex<Supervisor>>,
    events: std::sync::Arc<std::sync::Mutex<Vec<(Instant, PodEvent)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl RunningSupervisor {
    /// Starts polling `sup` every 20 ms.
    pub fn new(sup: Supervisor) -> RunningSupervisor {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let inner = Arc::new(Mutex::new(sup));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, e, s) = (inner.clone(), events.clone(), stop.clone());
        let poller = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let happened = i.lock().unwrap_or_else(|p| p.into_inner()).poll();
                    if !happened.is_empty() {
                        let now = Instant::now();
                        e.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(happened.into_iter().map(|ev| (now, ev)));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .ok();
        RunningSupervisor {
            inner,
            events,
            stop,
            poller,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Supervisor> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `signal` to pod `n`; returns its PID.
    pub fn signal(&self, n: u32, signal: i32) -> Result<u32, String> {
        self.lock().signal(n, signal)
    }

    /// The pods now.
    pub fn pods(&self) -> Vec<PodState> {
        self.lock().pods()
    }

    /// The state file's contents now.
    pub fn state(&self) -> StateFile {
        self.lock().state()
    }

    /// Takes the pod events seen so far.
    pub fn take_events(&self) -> Vec<(Instant, PodEvent)> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stops polling and every pod (reverse ordinal order). Call outside any
    /// async runtime.
    pub fn stop(mut self, grace: Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
        self.lock().stop(grace);
    }
}

impl Drop for RunningSupervisor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
    }
}
