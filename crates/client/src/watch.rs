//! A watch that outlives the node serving it.
//!
//! When its stream ends or breaks (the node stopped, was killed, or its
//! pod was rescheduled), it is opened again on the next endpoint from
//! where it left off, so the caller sees every matching change exactly
//! once and in revision order. A revision's events may span several
//! responses, so a stream that breaks in the middle of one resumes at that
//! revision and skips the events of it already delivered: the events of a
//! revision come in the same order from every node, as every node applies
//! the same log.

use std::collections::VecDeque;
use std::time::Instant;

use kvstore_proto::kv::{Event, RangeRequest, WatchRequest, WatchResponse};
use tonic::Code;

use crate::{Client, ClientError};

/// A watch that resumes on another node; see the module documentation.
pub struct ResumingWatch {
    client: Client,
    req: WatchRequest,
    stream: Option<tonic::Streaming<WatchResponse>>,
    ready: VecDeque<Event>,
    position: Position,
    resumes: u64,
}

/// Where a watch is: what a resumed stream starts at and skips.
#[derive(Debug, Default)]
struct Position {
    /// The revision of the last event delivered, and how many of its
    /// events were delivered.
    last: Option<(u64, usize)>,
    /// Events of `last`'s revision still to skip on a resumed stream.
    skip: usize,
}

impl Position {
    /// Whether an event of `revision` off the stream is new.
    fn is_new(&mut self, revision: u64) -> bool {
        if self.skip > 0 && self.last.is_some_and(|(rev, _)| rev == revision) {
            self.skip -= 1;
            return false;
        }
        self.skip = 0;
        true
    }

    /// An event of `revision` was delivered.
    fn delivered(&mut self, revision: u64) {
        self.last = match self.last {
            Some((rev, n)) if rev == revision => Some((rev, n + 1)),
            _ => Some((revision, 1)),
        };
    }

    /// The revision a resumed stream starts at (None: where the first one
    /// did), after which the events of it already delivered are skipped.
    fn resume_at(&mut self) -> Option<u64> {
        let (rev, n) = self.last?;
        self.skip = n;
        Some(rev)
    }
}

impl ResumingWatch {
    pub(crate) async fn start(
        mut client: Client,
        mut req: WatchRequest,
    ) -> Result<ResumingWatch, ClientError> {
        // "From now" is pinned to a revision, so that a resumed stream
        // starts where the first one did, not at a later "now".
        if req.start_revision == 0 {
            let resp = client
                .range(RangeRequest {
                    key: req.key.clone(),
                    limit: 1,
                    keys_only: true,
                    ..Default::default()
                })
                .await?;
            req.start_revision = resp.header.map_or(0, |h| h.revision) + 1;
        }
        let stream = Some(client.watch(req.clone()).await?);
        Ok(ResumingWatch {
            client,
            req,
            stream,
            ready: VecDeque::new(),
            position: Position::default(),
            resumes: 0,
        })
    }

    /// How many times the watch was opened again on another node.
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// The next event. Fails when the history it needs was compacted
    /// (OUT_OF_RANGE), on any other error a resumed stream cannot fix, or
    /// when no node opens it again within the client's retry budget.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        let mut broken_since: Option<Instant> = None;
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.position.delivered(event.revision);
                return Ok(event);
            }
            let Some(stream) = self.stream.as_mut() else {
                self.reopen(&mut broken_since).await?;
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => self.take(resp.events),
                Err(status) if status.code() == Code::OutOfRange => {
                    return Err(ClientError::Status(status));
                }
                // The node went away (or ended the stream as it stopped).
                Ok(None) | Err(_) => self.stream = None,
            }
        }
    }

    fn take(&mut self, events: Vec<Event>) {
        for event in events {
            if self.position.is_new(event.revision) {
                self.ready.push_back(event);
            }
        }
    }

    /// Opens the watch again on the next endpoint, at the revision of the
    /// last event delivered (skipping what of it was delivered).
    async fn reopen(&mut self, broken_since: &mut Option<Instant>) -> Result<(), ClientError> {
        let since = *broken_since.get_or_insert_with(Instant::now);
        if let Some(rev) = self.position.resume_at() {
            self.req.start_revision = rev;
        }
        self.client.rotate(None);
        let mut backoff = self.client.policy.backoff();
        loop {
            match self.client.watch(self.req.clone()).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.resumes += 1;
                    return Ok(());
                }
                Err(e) if e.is_unavailable() && since.elapsed() < self.client.policy.budget => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn a_stream_broken_inside_a_revision_resumes_at_it_without_repeats() {
        let mut p = Position::default();
        assert_eq!(p.resume_at(), None, "nothing delivered: start where asked");
        // Revision 7 has three events; two were delivered when it broke.
        for rev in [5, 7, 7] {
            assert!(p.is_new(rev));
            p.delivered(rev);
        }
        assert_eq!(p.resume_at(), Some(7));
        // The resumed stream sends all of 7 again, then 8.
        let fresh: Vec<bool> = [7, 7, 7, 8].iter().map(|&r| p.is_new(r)).collect();
        assert_eq!(fresh, [false, false, true, true]);
    }

    #[test]
    fn a_stream_broken_between_revisions_repeats_nothing() {
        let mut p = Position::default();
        for rev in [3, 4] {
            assert!(p.is_new(rev));
            p.delivered(rev);
        }
        assert_eq!(p.resume_at(), Some(4));
        let fresh: Vec<bool> = [4, 6].iter().map(|&r| p.is_new(r)).collect();
        assert_eq!(fresh, [false, true]);
    }
}
