//! A Deployment's way with a lost pod, for `kvstore demo --as-deployment`:
//! the pod does not come back as itself.
//!
//! [`Supervisor::retire`] stops restarting a pod and removes its DNS
//! records, since a Deployment's pods have no stable per-pod name.
//! [`Supervisor::start_replacement`] then starts the pod a ReplicaSet would
//! create instead: a random name without an ordinal, an address no pod had,
//! and an empty volume. Kubelet restarts the replacement when it exits, with
//! the same crash-loop backoff as any pod. Nothing here changes how the
//! StatefulSet's pods are run.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::launch::Launch;
use super::{Pod, PodState, RunningSupervisor, Supervisor};

/// The characters of a generated Kubernetes name suffix (apimachinery's
/// `util/rand`): no vowels, so no words; no 0, 1 or 3, so none is misread.
const KUBERNETES_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A Deployment's new pod.
#[derive(Clone, Debug)]
pub struct Replacement {
    /// Its name, e.g. `kvstore-7d9f8c6b5-x2kqp` ([`Replacement::random_name`]).
    pub name: String,
    /// Its address: one no pod of the box has.
    pub ip: Ipv4Addr,
    /// The ordinal of the pod it takes the place of.
    pub replaces: u32,
}

impl Replacement {
    /// A pod name as a Deployment's ReplicaSet makes them:
    /// `<deployment>-<pod-template-hash>-<5 random characters>`.
    pub fn random_name(deployment: &str) -> String {
        // The template hash is a 32-bit hash written in decimal, each digit
        // mapped into the alphabet: 9 or 10 characters.
        let hash_len = rand::random_range(9..=10);
        format!(
            "{deployment}-{}-{}",
            random_chars(hash_len),
            random_chars(5)
        )
    }
}

fn random_chars(n: usize) -> String {
    (0..n)
        .map(|_| KUBERNETES_ALPHABET[rand::random_range(0..KUBERNETES_ALPHABET.len())] as char)
        .collect()
}

/// The name Kubernetes' DNS gives every pod by its address,
/// `<a-b-c-d>.<namespace>.pod.cluster.local`: a Deployment's pod's only one.
fn per_ip_name(ip: Ipv4Addr, namespace: &str) -> String {
    let dashed = ip.to_string().replace('.', "-");
    format!("{dashed}.{namespace}.pod.cluster.local")
}

impl Supervisor {
    /// Treats pod `n` as a Deployment would treat a pod it lost: it is never
    /// restarted, and its DNS records are removed. It is not signalled: the
    /// caller has killed it, or does. Its data dir stays, but nothing will
    /// mount it again.
    pub fn retire(&mut self, n: u32) -> Result<(), String> {
        let pod = self.pods.get_mut(&n).ok_or_else(|| format!("no pod {n}"))?;
        pod.retired = true;
        pod.restart_at = None;
        if let Some(dns) = &self.dns {
            dns.remove_pod(n);
        }
        self.write_state()
    }

    /// Starts `r` as a Deployment's new pod: `kvstore serve` with its name
    /// as HOSTNAME, on its own address with the pods' ports, on a new empty
    /// data dir `<dir>/<name>`, logging to `<dir>/<name>.log`, with no DNS
    /// record. Gives its state (PID included).
    pub fn start_replacement(&mut self, r: &Replacement) -> Result<PodState, String> {
        self.check_new_address(r.ip)?;
        let state = self.replacement_state(r);
        if fs::read_dir(&state.data_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!("{} is not empty", state.data_dir.display()));
        }
        fs::create_dir_all(&state.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", state.data_dir.display()))?;
        let mut pod = Pod::new(state, self.cfg.restart_delay);
        let launch = Launch {
            cfg: &self.cfg,
            ca: self.ca.as_ref(),
            dns_addr: self.dns_addr,
        };
        launch.spawn(&mut pod)?;
        let state = pod.state.clone();
        self.replacements.insert(r.name.clone(), pod);
        self.write_state()?;
        Ok(state)
    }

    /// Refuses an address a pod of the box has (or had).
    fn check_new_address(&self, ip: Ipv4Addr) -> Result<(), String> {
        let taken = self
            .pods
            .values()
            .chain(self.replacements.values())
            .find(|p| {
                p.state
                    .client
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip() == IpAddr::V4(ip))
            });
        match taken {
            Some(p) => Err(format!("{ip} is {}'s address", p.state.name)),
            None => Ok(()),
        }
    }

    fn replacement_state(&self, r: &Replacement) -> PodState {
        let cfg = &self.cfg;
        let ip = IpAddr::V4(r.ip);
        PodState {
            name: r.name.clone(),
            ordinal: r.replaces,
            pid: None,
            client: SocketAddr::new(ip, cfg.client_port).to_string(),
            peer: SocketAddr::new(ip, cfg.peer_port).to_string(),
            dns_name: per_ip_name(r.ip, &cfg.namespace),
            data_dir: cfg.dir.join(&r.name),
            log: cfg.dir.join(format!("{}.log", r.name)),
            restarts: 0,
        }
    }
}

impl RunningSupervisor {
    /// [`Supervisor::retire`].
    pub fn retire(&self, n: u32) -> Result<(), String> {
        self.lock().retire(n)
    }

    /// [`Supervisor::start_replacement`].
    pub fn start_replacement(&self, r: &Replacement) -> Result<PodState, String> {
        self.lock().start_replacement(r)
    }

    /// The replacements now.
    pub fn replacements(&self) -> Vec<PodState> {
        self.lock().state().replacements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated names have the ReplicaSet's shape: the Deployment's name,
    /// a 9- or 10-character template hash and a 5-character suffix, from
    /// Kubernetes' alphabet.
    #[test]
    fn random_names_look_like_a_replica_sets() {
        for _ in 0..200 {
            let name = Replacement::random_name("kvstore");
            let parts: Vec<&str> = name.split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert_eq!(parts[0], "kvstore");
            assert!((9..=10).contains(&parts[1].len()), "{name}");
            assert_eq!(parts[2].len(), 5, "{name}");
            let alphabet = |s: &str| s.bytes().all(|b| KUBERNETES_ALPHABET.contains(&b));
            assert!(alphabet(parts[1]) && alphabet(parts[2]), "{name}");
        }
    }
}
