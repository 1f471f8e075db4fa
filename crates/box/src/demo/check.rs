//! The verdict on what the load saw: every acknowledged write readable, and
//! the shared keys' history linearizable.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::load::{retrying_client, Load};
use super::Narrator;
use kvstore_client::TlsOptions;
use kvstore_lincheck::{self as lincheck, Verdict};
use kvstore_proto::kv::Consistency;

/// The linearizability checker's search budget, in steps.
const LINCHECK_MAX_STEPS: u64 = 50_000_000;

/// What the checks found.
pub(super) struct Checked {
    /// Writes acknowledged.
    pub(super) acked: usize,
    /// Writes of unknown outcome.
    pub(super) unknown: usize,
    /// Acknowledged writes not readable.
    pub(super) lost: Vec<String>,
    /// The verdict on the shared keys' history.
    pub(super) linearizable: Verdict,
    /// Operations in that history.
    pub(super) history_ops: usize,
}

/// Stops the load, reads every acknowledged write back, and checks the
/// shared keys' history, narrating each result.
pub(super) async fn finish_and_check(
    load: Load,
    tls: Option<&TlsOptions>,
    endpoints: &[String],
    narrator: &mut Narrator<'_>,
) -> Result<Checked, String> {
    let log = load.finish().await?;
    narrator.say(&format!(
        "load stopped: {} writes acknowledged, {} of unknown outcome; reading every acknowledged key back",
        log.acked.len(),
        log.unknown
    ));
    let lost = verify(tls, endpoints, &log.acked).await?;
    narrator.say(&format!(
        "{} acknowledged writes readable, lost = {}",
        log.acked.len() - lost.len(),
        lost.len()
    ));
    let history_ops = log.history.len();
    let history = log.history;
    // The search can take seconds: off the runtime's worker threads.
    let linearizable =
        tokio::task::spawn_blocking(move || lincheck::check(&history, LINCHECK_MAX_STEPS))
            .await
            .map_err(|e| e.to_string())?;
    narrator.say(&format!(
        "history of {history_ops} reads and writes on the shared keys: {}",
        match &linearizable {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::Violation { key } => format!("NOT linearizable (key {key})"),
            Verdict::Undecided { key } => format!("undecided (key {key}: search budget exceeded)"),
        }
    ));
    Ok(Checked {
        acked: log.acked.len(),
        unknown: log.unknown,
        lost,
        linearizable,
        history_ops,
    })
}

/// Reads every acknowledged key back (linearizably, by range pages) and
/// returns those that are missing or different.
async fn verify(
    tls: Option<&TlsOptions>,
    endpoints: &[String],
    acked: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let mut c = retrying_client(tls, endpoints)?;
    let kvs = c
        .scan(
            Bytes::from("demo/w"),
            Bytes::from("demo/w\u{7f}"),
            u64::MAX,
            Consistency::Linearizable,
            false,
        )
        .await
        .map_err(|e| format!("reading back: {e}"))?;
    let found: BTreeMap<String, String> = kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    Ok(acked
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect())
}
