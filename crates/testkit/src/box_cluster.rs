//! A cluster in a box driven from a test: the real supervisor, the embedded
//! DNS server and real `kvstore serve` processes on a per-test loopback
//! subnet, stopped when the test ends (also when it fails).
//!
//! Scaling: [`BoxCluster::scale`] rewrites the desired replica count as
//! `kubectl scale` would; [`BoxCluster::members`] and
//! [`BoxCluster::wait_members`] read the configuration through the
//! leader's `MemberList`; [`BoxCluster::spawn_pod`] starts a `kvstore serve`
//! by hand with a pod's arguments, outside the supervisor (a pod the
//! StatefulSet does not know, or one back on an old volume).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore::proto::kv::{MemberListRequest, MemberListResponse, Role, StatusResponse};
use kvstore_box::local::{LocalConfig, PodEvent, RunningSupervisor, Supervisor};
use kvstore_client::{Client, RetryPolicy};

use crate::process::{kvstore_bin, Subnet};

pub struct BoxCluster {
    pub rt: tokio::runtime::Runtime,
    pub sup: Option<RunningSupervisor>,
    pub endpoints: Vec<String>,
    pub dir: tempfile::TempDir,
    pub net: Subnet,
    /// Released once the pods are stopped and before the dir is removed
    /// (volumes mounted in it, say).
    pub after_stop: Vec<Box<dyn std::any::Any>>,
    /// The extra `kvstore serve` arguments every pod gets.
    pub serve_args: Vec<String>,
    /// The binary the pods run.
    pub binary: PathBuf,
}

/// The configuration as one node lists it: (voters, learners), by ordinal.
pub fn voters_and_learners(list: &MemberListResponse) -> (Vec<u32>, Vec<u32>) {
    let (learners, voters): (Vec<_>, Vec<_>) = list.members.iter().partition(|m| m.learner);
    (
        voters.iter().map(|m| m.ordinal).collect(),
        learners.iter().map(|m| m.ordinal).collect(),
    )
}

/// A `kvstore serve` started by hand with a pod's arguments, killed (by its
/// PID) when dropped.
pub struct ManualPod {
    pub child: Child,
    pub ordinal: u32,
    pub log: PathBuf,
}

impl ManualPod {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ManualPod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!(
                "--- the last lines of the hand-started kvstore-{}'s log:",
                self.ordinal
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BoxCluster {
    pub fn start(replicas: u32, serve_args: &[&str], restart_delay: Duration) -> BoxCluster {
        Self::start_with_binary(replicas, serve_args, restart_delay, kvstore_bin().as_ref())
    }

    /// Starts pods with `binary` (a wrapper around `kvstore`, say).
    pub fn start_with_binary(
        replicas: u32,
        serve_args: &[&str],
        restart_delay: Duration,
        binary: &std::path::Path,
    ) -> BoxCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, replicas, serve_args, restart_delay, binary)
    }

    /// Starts pods whose data dirs are `dir/kvstore-<n>` (prepared by the
    /// caller: small volumes mounted there, say).
    pub fn start_in(
        dir: tempfile::TempDir,
        replicas: u32,
        serve_args: &[&str],
        restart_delay: Duration,
        binary: &std::path::Path,
    ) -> BoxCluster {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let net = Subnet::new();
        let cfg = LocalConfig {
            replicas,
            dir: dir.path().to_path_buf(),
            base_ip: net.pod(0),
            client_port: 7379,
            peer_port: 7380,
            set: "kvstore".into(),
            service: "kvstore-headless".into(),
            namespace: "default".into(),
            restart_delay,
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            binary: binary.to_path_buf(),
            tls: false,
        };
        let sup = Supervisor::start(cfg, rt.handle().clone()).expect("start the cluster in a box");
        let endpoints = sup.state().pods.iter().map(|p| p.client.clone()).collect();
        BoxCluster {
            rt,
            sup: Some(RunningSupervisor::new(sup)),
            endpoints,
            dir,
            net,
            after_stop: Vec::new(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            binary: binary.to_path_buf(),
        }
    }

    pub fn sup(&self) -> &RunningSupervisor {
        self.sup.as_ref().expect("running")
    }

    /// A client over every endpoint (enter the runtime first: `rt.enter()`).
    pub fn client(&self) -> Client {
        let _in = self.rt.enter();
        Client::new(
            &self.endpoints,
            RetryPolicy::default(),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    /// Pod `n`'s client endpoint (`host:port`), whether or not it exists:
    /// pods created by a scale-up are not in `endpoints`.
    pub fn pod_endpoint(&self, n: u32) -> String {
        self.endpoints
            .get(n as usize)
            .cloned()
            .unwrap_or_else(|| format!("{}:7379", self.net.pod(n)))
    }

    /// A client for pod `n` alone, giving up after a second.
    fn quick_client(&self, n: u32) -> Option<Client> {
        let _in = self.rt.enter();
        Client::new(
            &[self.pod_endpoint(n)],
            RetryPolicy::default(),
            Duration::from_secs(1),
        )
        .ok()
    }

    /// Pod `n`'s status, if it answers.
    pub fn status(&self, n: u32) -> Option<StatusResponse> {
        let c = self.quick_client(n)?;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), c.status_of(0))
                .await
                .ok()?
                .ok()
        })
    }

    /// The ordinals of the pods the supervisor runs now (a scale changes
    /// them).
    pub fn pod_ordinals(&self) -> Vec<u32> {
        self.sup().pods().iter().map(|p| p.ordinal).collect()
    }

    /// The leader as the pods report it: (ordinal, term).
    pub fn leader(&self) -> Option<(u32, u64)> {
        self.pod_ordinals()
            .into_iter()
            .filter_map(|n| self.status(n))
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
            .map(|s| (s.ordinal, s.term))
    }

    /// Sets the desired replica count (the StatefulSet's spec.replicas, as
    /// `kubectl scale` sets it): the supervisor creates or deletes pods and
    /// the leader's controller changes the configuration to follow.
    pub fn scale(&self, replicas: u32) {
        Supervisor::write_desired(self.dir.path(), replicas).expect("write the desired count");
    }

    /// `MemberList` as pod `n` answers it, if it answers within a second.
    pub fn member_list_of(&self, n: u32) -> Option<MemberListResponse> {
        let c = self.quick_client(n)?;
        self.rt.block_on(async {
            let mut cluster = c.cluster_at(0);
            tokio::time::timeout(
                Duration::from_secs(1),
                cluster.member_list(MemberListRequest {}),
            )
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
        })
    }

    /// `MemberList` as the leader answers it (the configuration in force
    /// there, with its view of each member's progress).
    pub fn members(&self) -> Option<MemberListResponse> {
        let (leader, _) = self.leader()?;
        self.member_list_of(leader)
    }

    /// Waits until the leader lists exactly `voters` and `learners` and
    /// every voter's own status shows the same configuration (the change
    /// reached them all, not only the leader's log).
    pub fn wait_members(
        &self,
        voters: &[u32],
        learners: &[u32],
        within: Duration,
    ) -> MemberListResponse {
        let what = format!("voters {voters:?}, learners {learners:?}");
        let mut last = None;
        let deadline = Instant::now() + within;
        loop {
            if let Some(list) = self.members() {
                let (v, l) = voters_and_learners(&list);
                let everywhere = || {
                    voters.iter().all(|&n| {
                        self.status(n)
                            .is_some_and(|s| s.voters == voters && s.learners == learners)
                    })
                };
                if v == voters && l == learners && everywhere() {
                    return list;
                }
                last = Some((v, l));
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the leader last listed (voters, learners) {last:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `kvstore serve` for pod `n` by hand, with the arguments the
    /// supervisor gives its pods (its name as HOSTNAME, its address, its
    /// data dir `dir/kvstore-<n>`, the box's DNS server, the desired count
    /// file), outside the supervisor: nothing restarts it, and the box DNS
    /// lists it only if the supervisor runs that ordinal. Its log is
    /// `dir/kvstore-<n>.manual.log`.
    pub fn spawn_pod(&self, n: u32) -> ManualPod {
        let name = format!("kvstore-{n}");
        let ip = self.net.pod(n);
        let desired_path = Supervisor::desired_path(self.dir.path());
        let replicas = std::fs::read_to_string(&desired_path)
            .expect("the desired count file")
            .trim()
            .to_string();
        let log = self.dir.path().join(format!("{name}.manual.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the hand-started pod's log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .env("HOSTNAME", &name)
            .env_remove("KVSTORE_NODE_NAME")
            .args(["--replicas", &replicas])
            .arg("--replicas-source")
            .arg(format!("file:{}", desired_path.display()))
            .arg("--data-dir")
            .arg(self.data_dir(n))
            .args(["--listen", &format!("{ip}:7379")])
            .args(["--peer-listen", &format!("{ip}:7380")])
            .args(["--dns-server", &self.sup().state().dns])
            .args(["--service", "kvstore-headless", "--namespace", "default"])
            .args(&self.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Die with the test process even if it dies without
                // unwinding (the Drop guard kills it otherwise).
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start kvstore serve by hand");
        ManualPod {
            child,
            ordinal: n,
            log,
        }
    }

    pub fn wait<T>(
        &self,
        what: &str,
        within: Duration,
        mut probe: impl FnMut(&BoxCluster) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, n: u32, sig: i32) -> u32 {
        self.sup().signal(n, sig).expect("signal a pod")
    }

    pub fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("kvstore-{n}.log")))
            .unwrap_or_default()
    }

    pub fn data_dir(&self, n: u32) -> std::path::PathBuf {
        self.dir.path().join(format!("kvstore-{n}"))
    }

    /// The highest resident memory pod `n`'s process has had (VmHWM), in
    /// bytes; 0 if it is not running.
    pub fn peak_rss(&self, n: u32) -> u64 {
        let Some(pid) = self.sup().pods().get(n as usize).and_then(|p| p.pid) else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib << 10)
    }

    pub fn events(&self) -> Vec<(Instant, PodEvent)> {
        self.sup().take_events()
    }
}

impl Drop for BoxCluster {
    fn drop(&mut self) {
        // A failing test shows what the pods said last.
        if std::thread::panicking() {
            let highest = self
                .sup
                .as_ref()
                .and_then(|s| s.pods().iter().map(|p| p.ordinal + 1).max())
                .unwrap_or(0)
                .max(self.endpoints.len() as u32);
            for n in 0..highest {
                let log = self.log(n);
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!("--- the last lines of kvstore-{n}'s log:");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        if let Some(sup) = self.sup.take() {
            // Thaw anything a test froze, so it can stop.
            for p in sup.pods().iter().filter_map(|p| p.pid) {
                crate::process::signal(p, libc::SIGCONT);
            }
            sup.stop(Duration::from_secs(20));
        }
        self.after_stop.clear();
    }
}

/// Options for a demonstration run in a test: 3 pods on a loopback subnet
/// of its own, their dirs under `dir`, 4 writers and 2 readers, one
/// leader kill, a 500 ms restart delay, no picture. Tests change what
/// they are about with `DemoOptions { .., ..demo_options(dir) }`.
pub fn demo_options(dir: &std::path::Path) -> kvstore_box::demo::DemoOptions {
    kvstore_box::demo::DemoOptions {
        dir: dir.join("demo"),
        base_ip: crate::process::Subnet::new().pod(0),
        client_port: 7379,
        peer_port: 7380,
        replicas: 3,
        kills: 1,
        rolling_restart: false,
        scale_via: None,
        writers: 4,
        readers: 2,
        restart_delay: Duration::from_millis(500),
        binary: crate::process::kvstore_bin().into(),
        serve_args: Vec::new(),
        tls: false,
        timeline: None,
    }
}
