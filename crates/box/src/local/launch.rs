//! One pod's process: starting it as kubelet would (its name as HOSTNAME,
//! its address, its volume, the box's DNS server), reaping it when it
//! exits, restarting it after its delay, and stopping it. The same for a
//! StatefulSet's pod and for a Deployment's replacement ([`super::replace`]).

use std::fs;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{describe, tls, LocalConfig, Pod, PodEvent, Supervisor};

/// What every pod's process is started with: the box's layout, its CA and
/// its DNS server.
pub(super) struct Launch<'a> {
    pub(super) cfg: &'a LocalConfig,
    pub(super) ca: Option<&'a tls::BoxCa>,
    pub(super) dns_addr: SocketAddr,
}

impl Launch<'_> {
    /// Starts `pod`'s process; gives its PID.
    pub(super) fn spawn(&self, pod: &mut Pod) -> Result<u32, String> {
        let cfg = self.cfg;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&pod.state.log)
            .map_err(|e| format!("cannot open {}: {e}", pod.state.log.display()))?;
        // `{ip}` in a serve arg: the pod's own address.
        let ip = pod
            .state
            .client
            .rsplit_once(':')
            .map_or(String::new(), |(ip, _)| ip.to_string());
        let tls_args = self.issue_certificates(pod)?;
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("serve")
            .env("HOSTNAME", &pod.state.name)
            .env_remove("KVSTORE_NODE_NAME")
            .arg("--replicas")
            .arg(cfg.replicas.to_string())
            .arg("--replicas-source")
            .arg(format!(
                "file:{}",
                Supervisor::desired_path(&cfg.dir).display()
            ))
            .arg("--data-dir")
            .arg(&pod.state.data_dir)
            .arg("--listen")
            .arg(&pod.state.client)
            .arg("--peer-listen")
            .arg(&pod.state.peer)
            .arg("--dns-server")
            .arg(self.dns_addr.to_string())
            .arg("--service")
            .arg(&cfg.service)
            .arg("--namespace")
            .arg(&cfg.namespace)
            .args(
                tls_args
                    .iter()
                    .chain(&cfg.serve_args)
                    .map(|a| a.replace("{pod}", &pod.state.name).replace("{ip}", &ip)),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        own_group_and_die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cfg.binary.display()))?;
        let pid = child.id();
        pod.state.pid = Some(pid);
        pod.child = Some(child);
        pod.started = Instant::now();
        pod.restart_at = None;
        Ok(pid)
    }

    /// With TLS: issues `pod`'s certificates and gives the `serve` flags
    /// that name them; without, nothing.
    fn issue_certificates(&self, pod: &Pod) -> Result<Vec<String>, String> {
        let Some(ca) = self.ca else {
            return Ok(Vec::new());
        };
        let ip = pod
            .state
            .client
            .parse::<SocketAddr>()
            .map_err(|e| format!("pod address {}: {e}", pod.state.client))?
            .ip();
        ca.issue_pod(&pod.state.name, &pod.state.dns_name, ip)?;
        Ok(tls::BoxCa::serve_args(&Supervisor::tls_dir(&self.cfg.dir)))
    }

    /// Starts `pod` again after its delay; on failure tries again in 5 s.
    pub(super) fn restart(&self, pod: &mut Pod, now: Instant) -> Option<PodEvent> {
        match self.spawn(pod) {
            Ok(pid) => {
                pod.state.restarts += 1;
                Some(PodEvent::Restarted {
                    name: pod.state.name.clone(),
                    pid,
                })
            }
            Err(e) => {
                tracing::error!("restarting {}: {e}", pod.state.name);
                pod.restart_at = Some(now + Duration::from_secs(5));
                None
            }
        }
    }
}

/// Runs the pod in its own process group (the terminal's Ctrl-C reaches
/// only the supervisor, which stops pods in order) and has it die with the
/// supervisor rather than linger as an orphan.
fn own_group_and_die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (setpgid, prctl) between fork
    // and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Pod {
    /// If the process has exited: forgets it, schedules its restart (after
    /// `restart_delay`, or kubelet's crash-loop backoff while it keeps dying
    /// soon after its start) and says so.
    pub(super) fn reap(&mut self, now: Instant, restart_delay: Duration) -> Option<PodEvent> {
        let status = match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => status,
            _ => return None,
        };
        self.child = None;
        self.state.pid = None;
        let crash_looping = !self.signalled
            && self.state.restarts > 0
            && self.started.elapsed() < Duration::from_secs(10);
        self.signalled = false;
        let delay = if crash_looping {
            self.crash_backoff.next_delay()
        } else {
            self.crash_backoff.reset();
            restart_delay
        };
        self.restart_at = Some(now + delay);
        Some(PodEvent::Exited {
            name: self.state.name.clone(),
            status: describe(status),
            restart_in: delay,
        })
    }

    /// Whether the pod should be started again now: it is not running, its
    /// delay has passed, and nobody is deleting or retiring it.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.child.is_none()
            && self.deleting.is_none()
            && !self.retired
            && self.restart_at.is_some_and(|t| t <= now)
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`; it is not
    /// restarted.
    pub(super) fn stop(&mut self, grace: Duration) {
        self.restart_at = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        self.state.pid = None;
        tracing::info!("stopped {}", self.state.name);
    }
}
