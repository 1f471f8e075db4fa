//! The state file of a running cluster in a box: how `kvstore local`'s
//! other subcommands (and the tests) find its pods.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One pod in the state file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodState {
    /// `<set>-<n>`; a replacement's name has no ordinal.
    pub name: String,
    /// n; for a replacement, the ordinal of the pod it took the place of.
    pub ordinal: u32,
    /// The process id, while it runs.
    pub pid: Option<u32>,
    /// Client API address.
    pub client: String,
    /// Replication address.
    pub peer: String,
    /// DNS name; a replacement's is the per-IP name Kubernetes gives every
    /// pod (`<a-b-c-d>.<namespace>.pod.cluster.local`), which the box's DNS
    /// does not serve.
    pub dns_name: String,
    /// Data dir (the pod's volume).
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// How many times the supervisor restarted it.
    pub restarts: u32,
}

/// The machine-readable state of a running cluster in a box.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    /// The supervisor's process id.
    pub supervisor_pid: u32,
    /// The embedded DNS server's address.
    pub dns: String,
    /// Number of pods.
    pub replicas: u32,
    /// The pods, by ordinal.
    pub pods: Vec<PodState>,
    /// Pods that are not the StatefulSet's: a Deployment's replacements
    /// (`kvstore demo --as-deployment`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements: Vec<PodState>,
    /// Where the CA and the pods' and kvctl's certificates are, when the
    /// box runs with TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
}

impl StateFile {
    /// The state file's path in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state file in `dir`.
    pub fn read(dir: &Path) -> Result<StateFile, String> {
        let path = Self::path(dir);
        let text = fs::read_to_string(&path).map_err(|e| {
            format!(
                "no cluster in a box at {} ({e}); start one with `kvstore local`",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a state file: {e}", path.display()))
    }

    /// Comma-separated client endpoints.
    pub fn endpoints(&self) -> String {
        self.pods
            .iter()
            .map(|p| p.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}
