//! The replica count the StatefulSet asks for: what membership follows.
//!
//! The cluster scales to `spec.replicas`, never to the pods it happens to
//! see. Every event below leaves `spec.replicas` alone, which is why none
//! of them is ever taken for a scale-down:
//!
//! * **a crash restart** — the pod is recreated under the same name; its
//!   ordinal is still below `spec.replicas`, so it stays a member (a voter
//!   that is down for a while, exactly what Raft tolerates);
//! * **a rolling update** — pods are replaced one at a time, highest
//!   ordinal first, each under its old name and with its old volume;
//! * **a node drain** — the evicted pod is rescheduled elsewhere under its
//!   name (the PodDisruptionBudget bounds how many at once);
//! * **a pod stuck Pending for minutes** — it exists in the StatefulSet's
//!   count but has no IP; it is a member that does not answer.
//!
//! Where the count comes from ([`ReplicaSource`]): the `--replicas` flag
//! (fixed), a file the box supervisor (`kvstore local`) rewrites as
//! `kubectl scale` would change the StatefulSet, or the Kubernetes API
//! (`get` on the pod's own StatefulSet, with a Role allowing only that).

mod kubernetes;

use std::path::PathBuf;

pub use kubernetes::KubernetesTarget;

/// Why the desired replica count could not be read. The controller keeps
/// the last count it read (and changes nothing) while this persists.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSourceError {
    /// The file could not be read or does not hold a count.
    #[error("reading the replica count from {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The Kubernetes API could not be asked, or refused.
    #[error("reading spec.replicas of the StatefulSet from the Kubernetes API: {0}")]
    Kubernetes(String),
}

/// Where the desired replica count comes from.
#[derive(Clone, Debug)]
pub enum ReplicaSource {
    /// Fixed by `--replicas`.
    Fixed(u32),
    /// A file holding the count as decimal text (the box supervisor's).
    File(PathBuf),
    /// `spec.replicas` of the pod's own StatefulSet.
    Kubernetes(KubernetesTarget),
}

impl ReplicaSource {
    /// Parses `--replicas-source`: `flag` (the default: `--replicas`),
    /// `file:<path>`, or `kubernetes`.
    pub fn parse(spec: &str, replicas: u32, set: &str) -> Result<ReplicaSource, String> {
        match spec {
            "flag" | "" => Ok(ReplicaSource::Fixed(replicas)),
            "kubernetes" => Ok(ReplicaSource::Kubernetes(KubernetesTarget::in_cluster(set))),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(ReplicaSource::File(PathBuf::from(path))),
                _ => Err(format!(
                    "--replicas-source {other:?}: expected flag, file:<path> or kubernetes"
                )),
            },
        }
    }

    /// How often the controller reads the count: a file or a flag costs
    /// nothing; the API server is asked every 2 s per pod (a scale step then
    /// starts within 2 s; a graceful stop reads it afresh anyway).
    pub fn poll_interval(&self) -> std::time::Duration {
        match self {
            ReplicaSource::Kubernetes(_) => std::time::Duration::from_secs(2),
            _ => std::time::Duration::from_millis(250),
        }
    }

    /// Reads the count now.
    pub async fn read(&self) -> Result<u32, ReplicaSourceError> {
        match self {
            ReplicaSource::Fixed(n) => Ok(*n),
            ReplicaSource::File(path) => read_file(path).await,
            ReplicaSource::Kubernetes(target) => target
                .statefulset_replicas()
                .await
                .map_err(ReplicaSourceError::Kubernetes),
        }
    }
}

async fn read_file(path: &std::path::Path) -> Result<u32, ReplicaSourceError> {
    let err = |reason: String| ReplicaSourceError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    text.trim()
        .parse::<u32>()
        .map_err(|e| err(format!("{:?} is not a count: {e}", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_source_follows_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("replicas");
        let source = ReplicaSource::parse(&format!("file:{}", path.display()), 3, "kvstore")
            .expect("parses");
        assert!(source.read().await.is_err(), "no file yet");
        std::fs::write(&path, "5\n").expect("write");
        assert_eq!(source.read().await.expect("reads"), 5);
        std::fs::write(&path, "five").expect("write");
        assert!(source.read().await.is_err());
        assert!(ReplicaSource::parse("nonsense", 3, "kvstore").is_err());
        assert!(matches!(
            ReplicaSource::parse("flag", 3, "kvstore"),
            Ok(ReplicaSource::Fixed(3))
        ));
    }
}
