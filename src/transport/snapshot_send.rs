//! Sending a snapshot to a follower that is too far behind for the log:
//! freeze the state, stream it in chunks, and back off per follower when
//! that fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{client, GrpcPeers};
use crate::error::{Error, Result};
use crate::node::{Input, NodeHandle};
use crate::proto::peer::{Pair, SnapshotChunk, SnapshotHeader};
use crate::raft::NodeId;
use crate::state::snapshot::FrozenSnapshot;
use kvstore_client::backoff::Backoff;

/// The longest a whole snapshot transfer may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of state per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The wait before the first retry of a failed snapshot to a follower.
const SNAPSHOT_RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait between snapshot retries to one follower.
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(30);

/// A follower's snapshot retries: when the next may start, and how long the
/// one after a further failure waits.
#[derive(Debug)]
pub(super) struct SnapshotRetry {
    at: Instant,
    backoff: Backoff,
}

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        reason,
        leader: None,
    }
}

fn task_error(e: tokio::task::JoinError) -> Error {
    unavailable(format!("snapshot task: {e}"))
}

impl GrpcPeers {
    /// Sends `to` a snapshot at `term` (after its backoff, one snapshot at a
    /// time) and tells the node how it went.
    pub(super) async fn send_snapshot_task(self: Arc<Self>, to: NodeId, term: u64) {
        let Some(node) = self.node.get().cloned() else {
            return;
        };
        // A follower that keeps failing (down, crash-looping) is not sent a
        // full copy of the state every second: back off.
        let wait = self
            .snapshot_backoff(to)
            .saturating_duration_since(Instant::now());
        tokio::time::sleep(wait).await;
        let _guard = self.snapshot_lock.lock().await;
        let result = tokio::time::timeout(SNAPSHOT_TIMEOUT, self.stream_snapshot(&node, to, term))
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(format!(
                    "the transfer took longer than {SNAPSHOT_TIMEOUT:?}"
                )))
            });
        let index = match result {
            Ok(index) => {
                tracing::info!(peer = to, index, "snapshot sent");
                self.snapshot_done(to, true);
                Some(index)
            }
            Err(e) => {
                tracing::warn!(peer = to, error = %e, "sending a snapshot failed; will retry");
                self.snapshot_done(to, false);
                None
            }
        };
        node.deliver(Input::SnapshotSent { to, index });
    }

    /// When the next snapshot to `to` may start.
    fn snapshot_backoff(&self, to: NodeId) -> Instant {
        let retries = self
            .snapshot_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        retries.get(&to).map_or_else(Instant::now, |retry| retry.at)
    }

    fn snapshot_done(&self, to: NodeId, ok: bool) {
        let mut retries = self
            .snapshot_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            retries.remove(&to);
        } else {
            let retry = retries.entry(to).or_insert_with(|| SnapshotRetry {
                at: Instant::now(),
                backoff: Backoff::new(SNAPSHOT_RETRY_MIN, SNAPSHOT_RETRY_MAX),
            });
            retry.at = Instant::now() + retry.backoff.next_delay();
        }
    }

    /// Freezes the state and streams it to `to`; returns the index it ends
    /// at.
    async fn stream_snapshot(
        self: &Arc<Self>,
        node: &NodeHandle,
        to: NodeId,
        term: u64,
    ) -> Result<u64> {
        // Reach the follower before copying the state for it.
        let channel = self.connect_for_snapshot(to).await?;
        let frozen = freeze(node, to).await?;
        let meta = frozen.meta;
        let header = SnapshotHeader {
            cluster_id: node.known_cluster_id(),
            from: self.me,
            to,
            term,
            index: meta.index,
            index_term: meta.term,
        };
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let producer = tokio::task::spawn_blocking(move || produce_chunks(&frozen, header, &tx));
        let sent = client(channel)
            .install_snapshot(ReceiverStream::new(rx))
            .await;
        producer.await.map_err(task_error)??;
        sent.map_err(|status| self.peer_error(to, status))?;
        Ok(meta.index)
    }

    /// A fresh connection to `to`, resolved again: a snapshot goes to where
    /// the follower is now.
    async fn connect_for_snapshot(&self, to: NodeId) -> Result<Channel> {
        let addr = self
            .discovery
            .resolve(to)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        self.dialer
            .connect(to, addr)
            .await
            .map_err(|e| unavailable(format!("cannot reach {addr}: {e}")))
    }
}

/// Freezes `node`'s state for sending to `to`.
async fn freeze(node: &NodeHandle, to: NodeId) -> Result<FrozenSnapshot> {
    let freezer = node.clone();
    let started = Instant::now();
    let frozen = tokio::task::spawn_blocking(move || freezer.state().freeze_snapshot())
        .await
        .map_err(task_error)??;
    tracing::info!(
        peer = to,
        index = frozen.meta.index,
        froze_us = started.elapsed().as_micros() as u64,
        "froze a snapshot to send (no copy: applies go on)"
    );
    Ok(frozen)
}

/// Feeds `frozen` into `tx` as chunks, `header` on the first, until the
/// receiving end goes away (blocking: run it off the runtime).
fn produce_chunks(
    frozen: &FrozenSnapshot,
    header: SnapshotHeader,
    tx: &mpsc::Sender<SnapshotChunk>,
) -> Result<()> {
    let mut header = Some(header);
    let mut total = 0u64;
    for chunk in frozen.chunks(SNAPSHOT_CHUNK) {
        let pairs: Vec<Pair> = chunk?
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect();
        total += pairs.len() as u64;
        let msg = SnapshotChunk {
            header: header.take(),
            pairs,
            last: false,
            total_pairs: 0,
        };
        if tx.blocking_send(msg).is_err() {
            return Ok(());
        }
    }
    // Only a stream that ends with this chunk is complete.
    let _ = tx.blocking_send(SnapshotChunk {
        header: header.take(),
        pairs: Vec::new(),
        last: true,
        total_pairs: total,
    });
    Ok(())
}
