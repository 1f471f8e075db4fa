//! A cluster in a box driven from a test: the real supervisor, the embedded
//! DNS server and real `kvstore serve` processes on a per-test loopback
//! subnet, stopped when the test ends (also when it fails).

use std::time::{Duration, Instant};

use kvstore::proto::kv::{Role, StatusResponse};
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

    /// Pod `n`'s status, if it answers.
    pub fn status(&self, n: u32) -> Option<StatusResponse> {
        let _in = self.rt.enter();
        let c = Client::new(
            &[self.endpoints[n as usize].clone()],
            RetryPolicy::default(),
            Duration::from_secs(1),
        )
        .ok()?;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), c.status_of(0))
                .await
                .ok()?
                .ok()
        })
    }

    /// The leader as the pods report it: (ordinal, term).
    pub fn leader(&self) -> Option<(u32, u64)> {
        (0..self.endpoints.len() as u32)
            .filter_map(|n| self.status(n))
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
            .map(|s| (s.ordinal, s.term))
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
            for n in 0..self.endpoints.len() as u32 {
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
