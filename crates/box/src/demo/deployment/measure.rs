//! The measures taken from the running cluster: whether the pod that came
//! back is the old member, whether every voter is up and caught up, and
//! what a new volume holds.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use super::super::probe::{pod_status, statuses};
use super::super::Cluster;
use super::Acceptance;
use kvstore_proto::kv::{Role, StatusResponse};

/// Whether `now`, the Status of the pod that came back, shows the member
/// `before` was: the same ordinal of the same set, the same cluster id, and
/// a member of its configuration.
pub(super) fn judge(before: &StatusResponse, now: &StatusResponse) -> Acceptance {
    let same_cluster = !now.cluster_id.is_empty() && now.cluster_id == before.cluster_id;
    let accepted = now.ordinal == before.ordinal
        && now.set_name == before.set_name
        && same_cluster
        && now.member;
    let cluster = if now.cluster_id.is_empty() {
        "none".to_string()
    } else {
        now.cluster_id.clone()
    };
    let reason = if accepted {
        format!("ordinal {}, same cluster id", now.ordinal)
    } else if same_cluster {
        format!("ordinal {}, not a member", now.ordinal)
    } else {
        format!("ordinal {}, another cluster", now.ordinal)
    };
    Acceptance {
        accepted,
        reason,
        evidence: format!(
            "{} answered Status: set {:?}, ordinal {}, cluster id {cluster} (was {}), member {}, voter {}",
            now.name, now.set_name, now.ordinal, before.cluster_id, now.member, now.voter
        ),
    }
}

/// The acceptance of a pod whose process ended before it ever answered:
/// how it ended, and the last line it logged.
pub(super) fn exited(name: &str, status: &str, log: &Path) -> Acceptance {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    let said = last.map_or("(nothing logged)".to_string(), |l| l.trim().to_string());
    Acceptance {
        accepted: false,
        reason: status.to_string(),
        evidence: format!("{name} ended with {status}; its last log line: {said}"),
    }
}

/// Whether every voter of the leader's configuration is back: the
/// configuration has `replicas` voters, the leader reaches each, and each,
/// asked at the address the leader reaches it by, is ready and has applied
/// the leader's commit revision.
pub(super) async fn full_redundancy(cluster: &Cluster<'_>, replicas: u32) -> bool {
    every_voter_back(cluster, replicas).await.is_some()
}

async fn every_voter_back(cluster: &Cluster<'_>, replicas: u32) -> Option<()> {
    let all = statuses(cluster.tls(), cluster.endpoints).await;
    let leader = all
        .iter()
        .flatten()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)?;
    if (leader.voters.len() as u32) < replicas {
        return None;
    }
    for &v in leader.voters.iter().filter(|&&v| v != leader.ordinal) {
        let peer = leader.peers.iter().find(|p| p.ordinal == v)?;
        if !peer.reachable || peer.client_address.is_empty() {
            return None;
        }
        let own = pod_status(cluster.tls(), &peer.client_address).await?;
        let caught_up = own.ready && own.applied_revision >= leader.commit_revision;
        if own.ordinal != v || own.cluster_id != leader.cluster_id || !caught_up {
            return None;
        }
    }
    Some(())
}

/// The leader's stored bytes now, if a leader answers.
pub(super) async fn leader_stored_bytes(cluster: &Cluster<'_>) -> Option<u64> {
    statuses(cluster.tls(), cluster.endpoints)
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
        .map(|s| s.stored_bytes)
}

/// Bytes of the files under `dir` (what a volume holds).
pub(super) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// An address for a new pod, as a Deployment's gets one it has never had:
/// a random one above the pods' (which a scale-up would take), whose client
/// and peer ports are free.
pub(super) fn new_pod_address(cluster: &Cluster<'_>) -> Result<Ipv4Addr, String> {
    let opts = cluster.opts;
    let above = u32::from(opts.base_ip) + opts.replicas;
    for _ in 0..50 {
        let ip = Ipv4Addr::from(above + rand::random_range(8..=100));
        let free = |port| TcpListener::bind((ip, port)).is_ok();
        if free(opts.client_port) && free(opts.peer_port) {
            return Ok(ip);
        }
    }
    Err("no free loopback address for the replacement pod".into())
}
