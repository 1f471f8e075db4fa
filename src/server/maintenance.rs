//! The `kvstore.v1.Maintenance` service: `Snapshot`, a backup of this
//! member's state streamed as a snapshot file.
//!
//! Consistency. The stream is the state frozen at one applied revision by
//! the same freeze the leader uses to send Raft snapshots
//! ([`KvState::freeze_snapshot`](crate::state::KvState::freeze_snapshot)):
//! sled's iterators alone see writes that land while they run, the freeze
//! substitutes the before images of anything changed since, so the file is
//! the state of one instant (applies go on meanwhile). A member only ever
//! applies committed entries, so any member's snapshot is a state the
//! cluster was in. LINEARIZABLE (the default) first has the leader confirm
//! its commit index and waits to apply it, so the snapshot holds every
//! write acknowledged before the call; SERIALIZABLE takes the state as it
//! is (a member still catching up after a lost volume refuses, as reads
//! do), which is what is left when the cluster has no quorum.
//!
//! One snapshot is frozen at a time per member (a backup or a Raft
//! snapshot to a follower): the other answers UNAVAILABLE, or retries
//! with backoff for a follower. Memory is bounded: a blocking task encodes
//! about [`BLOB_BYTES`] at a time into a channel of [`IN_FLIGHT`] messages,
//! and a client that stops reading for [`SEND_TIMEOUT`] is dropped, which
//! ends the freeze. A client that reads, but slower than [`MIN_RATE`] on
//! average after [`RATE_GRACE`], is dropped too: while the freeze lasts, no
//! follower can catch up by snapshot from this member and its history is
//! not trimmed, so no client may hold it for as long as it likes.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::validate;
use crate::error::Error;
use crate::node::NodeHandle;
use crate::proto::kv::maintenance_server::Maintenance;
use crate::proto::kv::{SnapshotInfo, SnapshotRequest, SnapshotResponse};
use crate::state::snapshot::FrozenSnapshot;
use crate::state::StateError;
use kvstore_client::snapshot_file::{SnapshotEncoder, FORMAT_VERSION};

/// Bytes of the file per message.
pub const BLOB_BYTES: usize = 1 << 20;
/// Messages encoded ahead of the client.
const IN_FLIGHT: usize = 4;
/// A client that takes no message for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest average a backup may be read at (bytes per second)...
const MIN_RATE: u64 = 1 << 20;
/// ...once it has run this long.
const RATE_GRACE: Duration = Duration::from_secs(60);

/// Whether a backup that sent `bytes` in `elapsed` is too slow to go on.
fn too_slow(bytes: u64, elapsed: Duration) -> bool {
    elapsed > RATE_GRACE + Duration::from_secs(bytes / MIN_RATE)
}

/// The Maintenance service of one node.
#[derive(Clone)]
pub struct MaintenanceService {
    node: NodeHandle,
    timeout: Duration,
}

impl MaintenanceService {
    /// The service over `node`; `timeout` bounds the consistency barrier
    /// (not the stream).
    pub fn new(node: NodeHandle, timeout: Duration) -> Self {
        MaintenanceService { node, timeout }
    }

    /// Freezes the state, off the async workers.
    async fn freeze(&self) -> Result<FrozenSnapshot, Error> {
        let node = self.node.clone();
        match tokio::task::spawn_blocking(move || node.state().freeze_snapshot()).await {
            Ok(Ok(frozen)) => Ok(frozen),
            Ok(Err(StateError::Busy(reason))) => Err(Error::Unavailable {
                reason: format!("{reason}; retry shortly"),
                leader: None,
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(Error::Unavailable {
                reason: format!("freezing a snapshot: {e}"),
                leader: None,
            }),
        }
    }
}

/// The messages of one snapshot, as tonic sends them.
type BoxedSnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = BoxedSnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let consistency = validate::consistency(request.into_inner().consistency)?;
        super::kv::read_barrier(&self.node, consistency, 0, self.timeout).await?;
        let frozen = self.freeze().await?;
        let info = SnapshotInfo {
            format_version: FORMAT_VERSION,
            revision: frozen.meta.index,
            term: frozen.meta.term,
            cluster_id: self.node.state().cluster_id(),
            member: self.node.name().to_string(),
            taken_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        tracing::info!(
            revision = info.revision,
            ?consistency,
            "streaming a snapshot (backup)"
        );
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let revision = info.revision;
            match produce(&frozen, info, &tx, &runtime) {
                Ok(Some(keys)) => tracing::info!(revision, keys, "snapshot (backup) sent"),
                Ok(None) => tracing::info!(revision, "the snapshot's client went away"),
                Err(e) => {
                    tracing::warn!(revision, error = %e, "a snapshot (backup) failed");
                    let _ = send(&runtime, &tx, Err(e.into()));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends `msg`, waiting at most [`SEND_TIMEOUT`]; false when the client is
/// gone or stopped reading.
fn send(
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::Sender<Result<SnapshotResponse, Status>>,
    msg: Result<SnapshotResponse, Status>,
) -> bool {
    runtime.block_on(tx.send_timeout(msg, SEND_TIMEOUT)).is_ok()
}

/// Encodes `frozen` into messages (blocking: run it off the runtime).
/// Returns the user keys sent, or `None` when the client went away.
fn produce(
    frozen: &FrozenSnapshot,
    info: SnapshotInfo,
    tx: &mpsc::Sender<Result<SnapshotResponse, Status>>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<u64>, Error> {
    let mut first = Some(info.clone());
    let mut encoder = SnapshotEncoder::new(info);
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    for chunk in frozen.chunks(BLOB_BYTES) {
        for (key, value) in chunk? {
            encoder.pair(key, value);
            if encoder.buffered() >= BLOB_BYTES {
                let blob = encoder.take();
                sent += blob.len() as u64;
                let msg = SnapshotResponse {
                    blob,
                    info: first.take(),
                    ..Default::default()
                };
                if !send(runtime, tx, Ok(msg)) {
                    return Ok(None);
                }
                if too_slow(sent, started.elapsed()) {
                    return Err(Error::Unavailable {
                        reason: format!(
                            "the backup was read slower than {} KiB/s; it ends, as it holds back followers' catch-up and history trimming",
                            MIN_RATE >> 10
                        ),
                        leader: None,
                    });
                }
            }
        }
    }
    // The stream read a state that an install from the leader replaced
    // (and dropped) part-way: what it read may be incomplete.
    if !frozen.still_frozen() {
        return Err(Error::Unavailable {
            reason: "this member installed a snapshot from the leader during the backup; retry"
                .into(),
            leader: None,
        });
    }
    let keys = encoder.keys();
    let (blob, hash) = encoder.finish();
    let last = SnapshotResponse {
        blob,
        info: first.take(),
        sha256: hash.to_vec().into(),
        key_count: keys,
    };
    Ok(send(runtime, tx, Ok(last)).then_some(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_read_too_slowly_is_ended() {
        assert!(!too_slow(0, Duration::from_secs(59)));
        assert!(too_slow(0, Duration::from_secs(61)));
        assert!(!too_slow(100 * MIN_RATE, Duration::from_secs(150)));
        assert!(too_slow(100 * MIN_RATE, Duration::from_secs(170)));
    }
}
