//! Scaling in the box: the desired-replicas file plays the StatefulSet's
//! spec.replicas, and the supervisor follows it as the StatefulSet
//! controller does (module documentation of [`super`], "Scaling").

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Pod, PodEvent, PodState, Supervisor, DELETE_GRACE};

impl Supervisor {
    /// Where the desired replica count (the StatefulSet's spec.replicas)
    /// is kept.
    pub fn desired_path(dir: &std::path::Path) -> PathBuf {
        dir.join("desired-replicas")
    }

    /// Sets the desired replica count, as `kubectl scale` sets
    /// spec.replicas; [`Supervisor::poll`] then creates or deletes pods.
    pub fn write_desired(dir: &std::path::Path, replicas: u32) -> Result<(), String> {
        let path = Self::desired_path(dir);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("{replicas}\n"))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The desired replica count, or the last one if the file cannot be
    /// read.
    fn desired(&self) -> u32 {
        fs::read_to_string(Self::desired_path(&self.cfg.dir))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(self.cfg.replicas)
    }

    /// One step of the StatefulSet controller's scaling: create the lowest
    /// missing ordinal once every lower pod listens, or delete the highest
    /// pod beyond the count once it has exited.
    pub(super) fn follow_scale(&mut self) -> Vec<PodEvent> {
        let desired = self.desired();
        let mut events = Vec::new();
        if desired != self.cfg.replicas {
            tracing::info!(from = self.cfg.replicas, to = desired, "scaling");
            self.cfg.replicas = desired;
            let _ = self.write_state();
        }
        let highest = self.pods.keys().next_back().copied();
        if let Some(n) = highest.filter(|&n| n >= desired) {
            events.extend(self.delete_step(n));
        } else {
            let next = (0..desired).find(|n| !self.pods.contains_key(n));
            let lower_up = |s: &Self, n: u32| {
                (0..n).all(|m| {
                    s.pods[&m].child.is_some()
                        && s.pods[&m]
                            .state
                            .client
                            .parse::<SocketAddr>()
                            .is_ok_and(|a| {
                                TcpStream::connect_timeout(&a, Duration::from_millis(50)).is_ok()
                            })
                })
            };
            if let Some(n) = next.filter(|&n| lower_up(self, n)) {
                self.add_pod(n);
                match self.spawn(n) {
                    Ok(pid) => events.push(PodEvent::Created {
                        name: self.pods[&n].state.name.clone(),
                        pid,
                    }),
                    Err(e) => tracing::error!("creating pod {n}: {e}"),
                }
                let _ = self.write_state();
            }
        }
        events
    }

    /// Deleting pod `n`: SIGTERM first, SIGKILL after [`DELETE_GRACE`],
    /// and once it has exited it is gone (its data dir stays).
    fn delete_step(&mut self, n: u32) -> Vec<PodEvent> {
        let Some(pod) = self.pods.get_mut(&n) else {
            return Vec::new();
        };
        let now = Instant::now();
        let exited = match pod.child.as_mut() {
            None => true,
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
        };
        if !exited {
            match pod.deleting {
                None => {
                    pod.deleting = Some(now + DELETE_GRACE);
                    pod.signalled = true;
                    if let Some(child) = &pod.child {
                        // SAFETY: kill(2) on our own child.
                        unsafe {
                            libc::kill(child.id() as i32, libc::SIGTERM);
                        }
                    }
                }
                Some(deadline) if deadline <= now => {
                    if let Some(child) = pod.child.as_mut() {
                        let _ = child.kill();
                    }
                }
                Some(_) => {}
            }
            return Vec::new();
        }
        let name = pod.state.name.clone();
        self.pods.remove(&n);
        if let Some(dns) = &self.dns {
            dns.remove_pod(n);
        }
        let _ = self.write_state();
        vec![PodEvent::Deleted { name }]
    }

    /// Records pod `n` (its name, address, data dir, log) and its DNS
    /// records, before it is first started.
    pub(super) fn add_pod(&mut self, n: u32) {
        let cfg = &self.cfg;
        let name = format!("{}-{}", cfg.set, n);
        let ip = IpAddr::V4(Ipv4Addr::from(u32::from(cfg.base_ip) + n));
        let dns_name = format!("{name}.{}.{}.svc.cluster.local", cfg.service, cfg.namespace);
        let state = PodState {
            name: name.clone(),
            ordinal: n,
            pid: None,
            client: SocketAddr::new(ip, cfg.client_port).to_string(),
            peer: SocketAddr::new(ip, cfg.peer_port).to_string(),
            dns_name,
            data_dir: cfg.dir.join(&name),
            log: cfg.dir.join(format!("{name}.log")),
            restarts: 0,
        };
        self.pods.insert(n, Pod::new(state, cfg.restart_delay));
        if let Some(dns) = &self.dns {
            dns.set_pod(n, ip);
        }
    }
}
