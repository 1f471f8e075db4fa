//! Watch streams: history first, then live changes, every matching event
//! exactly once and in revision order.
//!
//! The stream subscribes to the node's applied changes *before* reading
//! history, and tracks the next revision it owes the client. A live batch is
//! delivered from that revision on; a batch that starts after it (the stream
//! fell behind, or a snapshot replaced the state) is filled in from the
//! stored history first. So nothing is lost between history and live, and
//! nothing is delivered twice.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::kv::header;
use crate::error::Error;
use crate::node::{NodeHandle, WatchBatch};
use crate::proto::kv::{Event, WatchRequest, WatchResponse};
use crate::state::apply::event_bytes;
use crate::state::keys::KeyRange;

/// Revisions of history read per step while catching up...
const HISTORY_STEP: usize = 256;
/// ...and about the most bytes of it.
const HISTORY_STEP_BYTES: usize = 4 << 20;
/// A response carries about this many bytes of events at most (a single
/// event may be larger); a revision's events may span several responses.
const RESPONSE_BYTES: usize = 1 << 20;

/// Starts a watch; fails at once with OUT_OF_RANGE if its start is compacted.
pub fn watch_stream(
    node: NodeHandle,
    req: WatchRequest,
) -> Result<impl Stream<Item = Result<WatchResponse, Status>>, Status> {
    let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, true);
    let floor = node.state().history_floor();
    if req.start_revision != 0 && req.start_revision < floor {
        return Err(Error::Compacted {
            requested: req.start_revision,
            oldest: floor,
        }
        .into());
    }
    let live = node.subscribe();
    let next = if req.start_revision == 0 {
        node.applied() + 1
    } else {
        req.start_revision
    };
    // A watcher whose client does not read holds at most this many
    // responses: the rest waits in the stored history.
    let (tx, rx) = mpsc::channel(4);
    let watcher = Watcher {
        node,
        range,
        prev_kv: req.prev_kv,
        next,
        tx,
    };
    tokio::spawn(watcher.run(live));
    Ok(ReceiverStream::new(rx))
}

/// Resolves when the node starts stopping.
pub async fn until_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|&s| s).await.map(|_| ());
}

struct Watcher {
    node: NodeHandle,
    range: KeyRange,
    prev_kv: bool,
    /// The next revision owed to the client.
    next: u64,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

enum Flow {
    Continue,
    Stop,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<WatchBatch>>) {
        let mut stopping = self.node.stopping();
        let applied = self.node.applied();
        if let Flow::Stop = self.catch_up(applied).await {
            return;
        }
        loop {
            tokio::select! {
                batch = live.recv() => {
                    let flow = match batch {
                        Ok(batch) => self.deliver_waiting(batch, &mut live).await,
                        // Fell behind the live feed: read what was missed
                        // from history.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let applied = self.node.applied();
                            self.catch_up(applied).await
                        }
                        Err(broadcast::error::RecvError::Closed) => Flow::Stop,
                    };
                    if let Flow::Stop = flow {
                        return;
                    }
                }
                _ = until_stopping(&mut stopping) => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Delivers `first` and every batch already waiting behind it, in as few
    /// responses as their size allows. A watcher that is slower than the
    /// writes (a thousand watchers on two cores) so sends fewer, larger
    /// responses instead of falling further behind; one that keeps up sends
    /// each batch as it comes, without waiting for more.
    async fn deliver_waiting(
        &mut self,
        first: Arc<WatchBatch>,
        live: &mut broadcast::Receiver<Arc<WatchBatch>>,
    ) -> Flow {
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut batch = Some(first);
        while let Some(b) = batch.take() {
            if b.last_index < self.next {
                // Already delivered from history.
            } else if b.reset || b.first_index > self.next {
                if let Flow::Stop = self.send(std::mem::take(&mut events)).await {
                    return Flow::Stop;
                }
                bytes = 0;
                if let Flow::Stop = self.catch_up(b.last_index).await {
                    return Flow::Stop;
                }
            } else {
                let next = self.next;
                for e in b
                    .revisions
                    .iter()
                    .filter(|(rev, _)| *rev >= next)
                    .flat_map(|(_, events)| events.iter())
                    .filter_map(|e| self.matching(e))
                {
                    bytes += event_bytes(&e);
                    events.push(e);
                }
                self.next = b.last_index + 1;
            }
            if bytes >= RESPONSE_BYTES {
                break;
            }
            batch = match live.try_recv() {
                Ok(b) => Some(b),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    if let Flow::Stop = self.send(events).await {
                        return Flow::Stop;
                    }
                    let applied = self.node.applied();
                    return self.catch_up(applied).await;
                }
                Err(_) => None,
            };
        }
        self.send(events).await
    }

    /// Delivers the stored history from `next` up to `upto`.
    async fn catch_up(&mut self, upto: u64) -> Flow {
        while self.next <= upto {
            // Read off the async workers: a snapshot copy can hold the state
            // for a while.
            let node = self.node.clone();
            let from = self.next;
            let read = tokio::task::spawn_blocking(move || {
                let history = node.state().history(from, HISTORY_STEP, HISTORY_STEP_BYTES);
                // The floor is read after the history: if history below
                // `from` was trimmed meanwhile, this sees it.
                (history, node.state().history_floor())
            })
            .await;
            let (history, floor) = match read {
                Ok(r) => r,
                Err(_) => return Flow::Stop,
            };
            if self.next < floor {
                let err = Error::Compacted {
                    requested: self.next,
                    oldest: floor,
                };
                let _ = self.tx.send(Err(err.into())).await;
                return Flow::Stop;
            }
            let (history, full) = match history {
                Ok(h) => h,
                Err(e) => {
                    let _ = self.tx.send(Err(Error::from(e).into())).await;
                    return Flow::Stop;
                }
            };
            // Revisions after `upto` come from the live feed.
            let mut events = Vec::new();
            let mut last = None;
            for (rev, revision_events) in history.iter().take_while(|(rev, _)| *rev <= upto) {
                events.extend(revision_events.iter().filter_map(|e| self.matching(e)));
                last = Some(*rev);
            }
            self.next = match last {
                Some(rev) if full && rev < upto => rev + 1,
                _ => upto + 1,
            };
            if let Flow::Stop = self.send(events).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn matching(&self, event: &Event) -> Option<Event> {
        let key = &event.kv.as_ref()?.key;
        if !self.range.contains(key) {
            return None;
        }
        let mut event = event.clone();
        if !self.prev_kv {
            event.prev_kv = None;
        }
        Some(event)
    }

    /// Sends `events` in responses of about [`RESPONSE_BYTES`] each.
    async fn send(&self, events: Vec<Event>) -> Flow {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut part = Vec::new();
            let mut bytes = 0;
            while let Some(event) =
                events.next_if(|e| part.is_empty() || bytes + event_bytes(e) <= RESPONSE_BYTES)
            {
                bytes += event_bytes(&event);
                part.push(event);
            }
            let resp = WatchResponse {
                header: Some(header(&self.node, self.node.applied())),
                events: part,
            };
            if self.tx.send(Ok(resp)).await.is_err() {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}
