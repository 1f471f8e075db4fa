//! Real `kvstore serve` processes for integration tests: each gets a temp
//! data dir, listens on port 0 (the test reads the bound address from the
//! node's JSON log), and is killed (SIGKILL, by its PID) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_client::Client;

pub use crate::bins::{kvctl_bin, kvstore_bin};

/// A running node process.
pub struct NodeProcess {
    pub child: Option<Child>,
    pub name: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub addr: SocketAddr,
    /// The --listen and --peer-listen values.
    pub listen: (String, String),
    pub extra_args: Vec<String>,
}

/// A random /24 inside 127.0.0.0/8 for one test's pods, so tests that bind
/// fixed ports on per-pod loopback addresses can run in parallel.
#[derive(Clone, Copy, Debug)]
pub struct Subnet(u8, u8);

impl Default for Subnet {
    fn default() -> Self {
        Subnet::new()
    }
}

impl Subnet {
    /// A fresh subnet (127.64-250.x.0/24; 127.0.0.x is left to `kvstore
    /// local` and the demo).
    pub fn new() -> Subnet {
        Subnet(64 + (rand::random::<u8>() % 186), rand::random::<u8>())
    }

    /// The address of host `n` in it (pods use 10 + ordinal).
    pub fn ip(&self, n: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(127, self.0, self.1, n)
    }

    /// Pod `ordinal`'s address.
    pub fn pod(&self, ordinal: u32) -> std::net::Ipv4Addr {
        self.ip(10 + ordinal as u8)
    }
}

/// Sends `signal` to the process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a PID this test started; no memory is touched.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

impl NodeProcess {
    /// Starts `kvstore serve` as `name` on `data_dir` with `args` added.
    pub fn start(name: &str, data_dir: &Path, args: &[&str]) -> NodeProcess {
        let extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start_with(
            name,
            data_dir,
            ("127.0.0.1:0".into(), "127.0.0.1:0".into()),
            extra,
        )
    }

    /// Starts a pod of a multi-node cluster on `ip` (client port 7379, peer
    /// port 7380, as every pod of a StatefulSet).
    pub fn start_at(
        name: &str,
        data_dir: &Path,
        ip: std::net::Ipv4Addr,
        args: &[&str],
    ) -> NodeProcess {
        let extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start_with(
            name,
            data_dir,
            (format!("{ip}:7379"), format!("{ip}:7380")),
            extra,
        )
    }

    fn start_with(
        name: &str,
        data_dir: &Path,
        listen: (String, String),
        extra_args: Vec<String>,
    ) -> NodeProcess {
        let log_path = data_dir.with_extension(format!("log{}", rand_suffix()));
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut cmd = Command::new(kvstore_bin());
        cmd.arg("serve")
            .arg("--node-name")
            .arg(name)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(&listen.0)
            .arg("--peer-listen")
            .arg(&listen.1)
            .arg("--log-format")
            .arg("json")
            .args(&extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("spawn kvstore");
        let addr = wait_for_address(&log_path, Duration::from_secs(20));
        NodeProcess {
            child: Some(child),
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            log_path,
            addr,
            listen,
            extra_args,
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `host:port` of the client API.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// A client for this node alone.
    pub fn client(&self) -> Client {
        crate::client_for(self.endpoint())
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same node again on the same data dir (its volume).
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_with(
            &self.name,
            &self.data_dir,
            self.listen.clone(),
            self.extra_args.clone(),
        );
        *self = again;
    }

    /// Starts the same node again on the same data dir but at another
    /// address: the pod was rescheduled and got a new IP.
    pub fn move_to(&mut self, ip: std::net::Ipv4Addr) {
        self.kill();
        self.listen = (format!("{ip}:7379"), format!("{ip}:7380"));
        self.restart();
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

fn rand_suffix() -> String {
    format!("{:x}", rand::random::<u32>())
}

/// Reads the node's JSON log until it reports its client address.
pub fn wait_for_address(log_path: &Path, within: Duration) -> SocketAddr {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(file) = std::fs::File::open(log_path) {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(addr) = v["fields"]["client"].as_str() {
                    if let Ok(addr) = addr.parse() {
                        return addr;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the node did not report its address; log:\n{}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion with a time bound; returns (code, stdout,
/// stderr). A command still running at the bound is killed, and its code
/// is -1: a test that expects the command to exit by itself checks for a
/// code of 0 or more.
pub fn run_bounded(cmd: &mut Command, within: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
