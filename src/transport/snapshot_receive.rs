//! Receiving a snapshot from the leader: chunks are written into a fresh
//! tree as they arrive, and only a complete stream whose data ends where its
//! header says is handed to the node to install.

use std::time::Duration;

use tokio::sync::oneshot;
use tonic::{Response, Status, Streaming};

use super::PeerService;
use crate::error::Error;
use crate::node::Input;
use crate::proto::peer::{SnapshotAck, SnapshotChunk, SnapshotHeader};
use crate::raft::{Body, Message, SnapshotMeta};
use crate::state::snapshot::SnapshotWriter;

/// The longest a follower waits for the next chunk of a snapshot.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks received and waiting to be written, at most.
const WRITE_AHEAD: usize = 4;

/// A chunk's pairs, as the writer takes them.
type Pairs = Vec<(bytes::Bytes, bytes::Bytes)>;

/// The next chunk of a snapshot stream, waiting at most
/// [`SNAPSHOT_CHUNK_TIMEOUT`].
async fn next_chunk(
    stream: &mut Streaming<SnapshotChunk>,
) -> std::result::Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, stream.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded("no snapshot chunk for a minute")),
    }
}

/// What a snapshot stream delivered.
struct Received {
    writer: SnapshotWriter,
    /// Pairs that arrived.
    pairs: u64,
    /// Bytes of their keys and values.
    bytes: u64,
    /// The pair count the last chunk announced, if the last chunk arrived.
    complete: Option<u64>,
}

impl Received {
    /// Whether the stream is whole and its data ends at `meta`; why not if
    /// not.
    /// Returns where the data ends, with the configuration it carries.
    fn verify(&self, index: u64, term: u64) -> std::result::Result<SnapshotMeta, String> {
        match self.complete {
            Some(total) if total == self.pairs => match self.writer.meta() {
                Ok(found) if (found.index, found.term) == (index, term) => Ok(found),
                Ok(found) => Err(format!(
                    "the data ends at {found:?}, the header says index {index} term {term}"
                )),
                Err(e) => Err(e.to_string()),
            },
            Some(total) => Err(format!("{} pairs arrived of {total}", self.pairs)),
            None => Err("the stream ended before its last chunk".to_string()),
        }
    }
}

impl PeerService {
    /// Receives a snapshot stream, checks it, and has the node install it.
    pub(super) async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
    ) -> std::result::Result<Response<SnapshotAck>, Status> {
        let Ok(_receiving) = self.receiving.try_lock() else {
            return Err(Status::unavailable("a snapshot is already being received"));
        };
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no header"))?;
        self.check_cluster(header.cluster_id)?;
        let node = self.node.clone();
        let writer = tokio::task::spawn_blocking(move || node.state().begin_install())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let received = self.receive_pairs(&mut stream, first, writer).await?;
        // Only a complete stream whose data ends where its header says is
        // handed on; anything else is thrown away, the state untouched.
        let meta = match received.verify(header.index, header.index_term) {
            Ok(meta) => meta,
            Err(reason) => {
                let _ = self.node.state().abort_install(received.writer);
                tracing::warn!(from = header.from, %reason, "discarding an incomplete snapshot");
                return Err(Status::data_loss(format!("incomplete snapshot: {reason}")));
            }
        };
        tracing::info!(
            from = header.from,
            index = header.index,
            pairs = received.pairs,
            bytes = received.bytes,
            "received a snapshot"
        );
        self.install(&header, meta, received.writer).await
    }

    /// Writes the pairs of `first` and of the chunks after it, up to the
    /// last chunk or the end of the stream. On failure, what arrived is
    /// dropped.
    ///
    /// A blocking thread writes while the next chunks arrive (at most
    /// [`WRITE_AHEAD`] of them wait): receiving and writing one after the
    /// other left the network idle during each write and the disk idle
    /// during each receive.
    async fn receive_pairs(
        &self,
        stream: &mut Streaming<SnapshotChunk>,
        first: SnapshotChunk,
        writer: SnapshotWriter,
    ) -> std::result::Result<Received, Status> {
        let (to_write, mut writes) = tokio::sync::mpsc::channel::<Pairs>(WRITE_AHEAD);
        let writing = tokio::task::spawn_blocking(move || {
            while let Some(pairs) = writes.blocking_recv() {
                if let Err(e) = writer.write(pairs) {
                    return (writer, Err(e));
                }
            }
            (writer, Ok(()))
        });
        let mut next = Some(first);
        let mut pairs_total = 0u64;
        let mut bytes_total = 0u64;
        let mut complete = None;
        let received = loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match next_chunk(stream).await {
                    Ok(Some(c)) => c,
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status),
                },
            };
            pairs_total += chunk.pairs.len() as u64;
            bytes_total += chunk
                .pairs
                .iter()
                .map(|p| (p.key.len() + p.value.len()) as u64)
                .sum::<u64>();
            if chunk.last {
                complete = Some(chunk.total_pairs);
            }
            let pairs: Pairs = chunk.pairs.into_iter().map(|p| (p.key, p.value)).collect();
            // A send fails only once the writer stopped on an error, which
            // is reported below.
            if to_write.send(pairs).await.is_err() || complete.is_some() {
                break Ok(());
            }
        };
        drop(to_write);
        let (writer, written) = writing.await.map_err(|e| Status::internal(e.to_string()))?;
        let failure = match (received, written) {
            // A full disk, say: drop what arrived, so that every retry
            // does not leave another partial tree behind.
            (_, Err(e)) => Some(Error::from(e).into()),
            (Err(status), Ok(())) => Some(status),
            (Ok(()), Ok(())) => None,
        };
        if let Some(status) = failure {
            let _ = self.node.state().abort_install(writer);
            return Err(status);
        }
        Ok(Received {
            writer,
            pairs: pairs_total,
            bytes: bytes_total,
            complete,
        })
    }

    /// Hands a verified snapshot to the node and waits for its install.
    async fn install(
        &self,
        header: &SnapshotHeader,
        meta: SnapshotMeta,
        writer: SnapshotWriter,
    ) -> std::result::Result<Response<SnapshotAck>, Status> {
        let msg = Message {
            from: header.from,
            to: self.node.name().ordinal,
            term: header.term,
            body: Body::Snapshot { meta },
        };
        let (done, answer) = oneshot::channel();
        self.node
            .deliver(Input::SnapshotReceived { msg, writer, done });
        match answer.await {
            Ok(Ok(())) => Ok(Response::new(SnapshotAck {})),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Status::unavailable("the node stopped")),
        }
    }
}
