//! Looking at the cluster: the pods' statuses, the leader, and waiting for
//! a condition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvstore_client::{Client, RetryPolicy, TlsOptions};
use kvstore_proto::kv::{Role, StatusResponse};

/// Reads every pod's status at once (unreachable pods are `None`).
pub(super) async fn statuses(
    tls: Option<&TlsOptions>,
    endpoints: &[String],
) -> Vec<Option<StatusResponse>> {
    // One client (and connection) per endpoint for the whole demo, so that
    // polling measures the cluster, not connection set-up. Keyed by the CA
    // too: a second box on the same addresses (`--as-deployment --tls`) has
    // a CA of its own.
    type Key = (String, Option<Vec<u8>>);
    static CLIENTS: std::sync::OnceLock<Mutex<BTreeMap<Key, Client>>> = std::sync::OnceLock::new();
    let queries = endpoints.iter().map(|e| async move {
        let c = {
            let mut cache = CLIENTS
                .get_or_init(|| Mutex::new(BTreeMap::new()))
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let key = (e.clone(), tls.map(|t| t.ca_pem.clone()));
            match cache.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = Client::with_tls(
                        std::slice::from_ref(e),
                        RetryPolicy::default(),
                        Duration::from_millis(500),
                        tls,
                    )
                    .ok()?;
                    cache.insert(key, c.clone());
                    c
                }
            }
        };
        tokio::time::timeout(Duration::from_millis(500), c.status_of(0))
            .await
            .ok()
            .and_then(Result::ok)
    });
    futures::future::join_all(queries).await
}

/// One pod's status, `None` while it does not answer.
pub(super) async fn pod_status(tls: Option<&TlsOptions>, endpoint: &str) -> Option<StatusResponse> {
    statuses(tls, &[endpoint.to_string()])
        .await
        .into_iter()
        .flatten()
        .next()
}

/// The leader as the pods report it: (ordinal, term, commit revision).
pub(super) async fn current_leader(
    tls: Option<&TlsOptions>,
    endpoints: &[String],
) -> Option<(u32, u64, u64)> {
    statuses(tls, endpoints)
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
        .map(|s| (s.ordinal, s.term, s.commit_revision))
}

/// Polls `probe` until it gives a value; after `within`, gives up with an
/// error naming `what` was awaited.
pub(super) async fn wait_for<T, F, Fut>(
    what: &str,
    within: Duration,
    mut probe: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
