//! `kvstore local`, the cluster in a box, as a user runs it: three pods come
//! up, kvctl sees all of them from one endpoint, a killed pod is restarted
//! with its name and data, and Ctrl-C leaves no process behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_box::local::{process_alive, StateFile};
use kvstore_testkit::process::{kvctl_bin, kvstore_bin, run_bounded, signal, Subnet};

fn wait<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Local {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Local {
    fn start(dir: &Path, net: Subnet, extra: &[&str]) -> Local {
        let out = std::fs::File::create(dir.join("supervisor.out")).expect("out");
        let child = Command::new(kvstore_bin())
            .args([
                "local",
                "--replicas",
                "3",
                "--base-ip",
                &net.pod(0).to_string(),
                "--restart-delay-ms",
                "500",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("spawn kvstore local");
        Local {
            child,
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Also on failure: stop the supervisor, which stops its pods.
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(state) = StateFile::read(&self.dir) {
            for pod in state.pods.iter().filter_map(|p| p.pid) {
                signal(pod, libc::SIGKILL);
            }
        }
    }
}

fn kvctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    run_bounded(
        Command::new(kvctl_bin())
            .args(["--endpoints", endpoint])
            .args(args),
        Duration::from_secs(30),
    )
}

/// `kvstore local` brings up three pods; kvctl status from one endpoint
/// lists all three; a killed pod is restarted with the same name and data
/// dir and still has its data; Ctrl-C stops every process it started.
#[test]
fn cluster_in_a_box() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Subnet::new();
    let local = Local::start(dir.path(), net, &[]);
    let state = wait("the state file", Duration::from_secs(60), || {
        StateFile::read(dir.path()).ok()
    });
    assert_eq!(state.pods.len(), 3);
    let one = state.pods[1].client.clone();
    wait("a leader", Duration::from_secs(30), || {
        let (code, out, _) = kvctl(&one, &["status"]);
        (code == 0 && out.contains("leader")).then_some(())
    });
    let (code, out, _) = kvctl(&one, &["status"]);
    assert_eq!(code, 0);
    for n in 0..3 {
        assert!(
            out.contains(&format!("kvstore-{n}")),
            "status lists kvstore-{n}:\n{out}"
        );
    }
    assert_eq!(kvctl(&one, &["put", "survives", "the-crash"]).0, 0);
    let before = state.pods[1].clone();
    let (code, out, err) = run_bounded(
        Command::new(kvstore_bin())
            .arg("local")
            .arg("--dir")
            .arg(dir.path())
            .args(["kill", "1"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{out}{err}");
    let after = wait("kvstore-1 restarted", Duration::from_secs(30), || {
        let s = StateFile::read(dir.path()).ok()?;
        let p = s.pods[1].clone();
        (p.restarts == 1 && p.pid.is_some() && p.pid != before.pid).then_some(p)
    });
    assert_eq!(after.name, "kvstore-1");
    assert_eq!(after.data_dir, before.data_dir, "same data dir: its volume");
    let log = wait("kvstore-1 serving again", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&after.log).ok()?;
        (log.matches("restored replication state").count() >= 2).then_some(log)
    });
    // The second start restored a non-empty log from its own volume.
    let restored = log
        .lines()
        .filter(|l| l.contains("restored replication state"))
        .nth(1)
        .expect("second start");
    assert!(
        !restored.contains("last_index=0"),
        "its data was still there: {restored}"
    );
    let (code, out, _) = wait("a read on kvstore-1", Duration::from_secs(20), || {
        let r = kvctl(
            &after.client,
            &["--consistency", "serializable", "get", "survives"],
        );
        (r.0 == 0).then_some(r)
    });
    assert_eq!((code, out.trim()), (0, "the-crash"));
    // Ctrl-C: the supervisor stops everything it started.
    let pids: Vec<u32> = StateFile::read(dir.path())
        .expect("state")
        .pods
        .iter()
        .filter_map(|p| p.pid)
        .collect();
    let mut local = local;
    signal(local.child.id(), libc::SIGINT);
    let status = wait("the supervisor to exit", Duration::from_secs(60), || {
        local.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
    // The pods found each other through the box's DNS server, and it did
    // not log each query: the supervisor's output is for people.
    let out = std::fs::read_to_string(dir.path().join("supervisor.out")).expect("output");
    let dns_info: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("hickory"))
        .collect();
    assert!(dns_info.is_empty(), "DNS queries logged: {dns_info:?}");
    for pid in pids {
        assert!(
            !process_alive(pid),
            "pod process {pid} outlived the supervisor"
        );
    }
}

/// `kvstore local --tls`: the pods replicate over mutual TLS with
/// certificates of the box's CA, the client port wants a client
/// certificate, and kvctl with the box's files reads and writes.
#[test]
fn cluster_in_a_box_with_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Subnet::new();
    let _local = Local::start(dir.path(), net, &["--tls"]);
    let state = wait("the state file", Duration::from_secs(60), || {
        StateFile::read(dir.path()).ok()
    });
    let tls = state
        .tls_dir
        .clone()
        .expect("the state file names the TLS dir");
    let file = |f: &str| tls.join(f).display().to_string();
    let with_cert = [
        "--cacert".to_string(),
        file("ca.crt"),
        "--cert".to_string(),
        file("client.crt"),
        "--key".to_string(),
        file("client.key"),
    ];
    let kvctl_tls = |endpoint: &str, args: &[&str]| {
        let mut all: Vec<&str> = with_cert.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        kvctl(endpoint, &all)
    };
    let one = state.pods[1].client.clone();
    wait("a leader over mTLS", Duration::from_secs(30), || {
        let (code, out, _) = kvctl_tls(&one, &["status"]);
        (code == 0 && out.contains("leader")).then_some(())
    });
    let (code, out, err) = kvctl_tls(&one, &["put", "over", "tls"]);
    assert_eq!(code, 0, "{out}{err}");
    let two = state.pods[2].client.clone();
    let (code, out, _) = wait("the write on kvstore-2", Duration::from_secs(20), || {
        let r = kvctl_tls(&two, &["--consistency", "serializable", "get", "over"]);
        (r.0 == 0).then_some(r)
    });
    assert_eq!((code, out.trim()), (0, "tls"));
    // Plaintext, and TLS without a client certificate: refused.
    let (code, _, _) = kvctl(&one, &["--timeout", "2", "get", "over"]);
    assert_ne!(code, 0, "a plaintext client was served");
    let (code, _, _) = kvctl(
        &one,
        &["--cacert", &file("ca.crt"), "--timeout", "2", "get", "over"],
    );
    assert_ne!(code, 0, "a client without a certificate was served");
}
