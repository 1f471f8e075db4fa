//! `spec.replicas` of the pod's own StatefulSet, from the Kubernetes API.
//! (Being written: see the commit that completes it.)

/// The StatefulSet to read, and how to reach the API server from a pod.
#[derive(Clone, Debug)]
pub struct KubernetesTarget {
    /// The StatefulSet's name.
    pub statefulset: String,
}

impl KubernetesTarget {
    /// The pod's own StatefulSet, through the in-cluster service account.
    pub fn in_cluster(statefulset: &str) -> Self {
        KubernetesTarget {
            statefulset: statefulset.to_string(),
        }
    }

    /// Reads `spec.replicas`.
    pub async fn statefulset_replicas(&self) -> Result<u32, String> {
        Err(format!(
            "reading StatefulSet {} from the API server is not built yet",
            self.statefulset
        ))
    }
}
