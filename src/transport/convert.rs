//! Conversions between the core's messages and the peer protocol's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proto::peer::{
    self, forward_response, raft_message::Body as PBody, AppendResponse as PAppendResponse, Empty,
    ForwardResponse, Granted, LogPosition,
};
use crate::raft::{AppendResult, Body, Entry, EntryKind, Message};
use crate::state::command::Output;

fn entry_to_proto(e: &Entry) -> peer::Entry {
    peer::Entry {
        index: e.index,
        term: e.term,
        noop: e.kind == EntryKind::Noop,
        data: e.data.clone(),
        config: e.kind == EntryKind::Config,
    }
}

/// Why a wire message has no core form. Only what the wire form alone
/// shows is checked here; whether the values make sense (indexes, terms,
/// entry order) is the core's question (`RaftCore::try_step`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// No body: a message kind this version does not know (a newer peer),
    /// or a broken one.
    #[error("the message has no body (a message kind this version does not know)")]
    NoBody,
    /// An entry flagged both no-op and config, which no version writes.
    #[error("entry {index} is flagged both no-op and config")]
    EntryFlags {
        /// The entry's index.
        index: u64,
    },
}

/// The shortest time between two warnings about undecodable peer messages.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Warns that a message from `from` was dropped, at most once per
/// [`WARN_EVERY`] with the count of the others: the server drops such
/// messages one by one, and a peer of a newer version may send one with
/// every heartbeat.
fn warn_dropped(from: u32, why: &ProtoError) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match &mut *last {
        Some((at, suppressed)) if now.duration_since(*at) < WARN_EVERY => *suppressed += 1,
        slot => {
            let suppressed = slot.map_or(0, |(_, n)| n);
            tracing::warn!(
                peer = from,
                reason = %why,
                dropped_since_last_warning = suppressed,
                "dropped an undecodable peer message"
            );
            *slot = Some((now, 0));
        }
    }
}

fn entry_from_proto(e: peer::Entry) -> Result<Entry, ProtoError> {
    if e.noop && e.config {
        return Err(ProtoError::EntryFlags { index: e.index });
    }
    Ok(Entry {
        index: e.index,
        term: e.term,
        kind: EntryKind::from_flags(e.noop, e.config),
        data: e.data,
    })
}

/// The wire form of a core message. `None` for a snapshot message, which
/// travels through `InstallSnapshot` instead.
pub fn to_proto(msg: Message) -> Option<peer::RaftMessage> {
    let body = match msg.body {
        Body::PreVote {
            last_index,
            last_term,
        } => PBody::PreVote(LogPosition {
            last_index,
            last_term,
        }),
        Body::PreVoteResponse { granted } => PBody::PreVoteResponse(Granted { granted }),
        Body::Vote {
            last_index,
            last_term,
            transfer,
        } => PBody::Vote(peer::Vote {
            last_index,
            last_term,
            transfer,
        }),
        Body::VoteResponse { granted } => PBody::VoteResponse(Granted { granted }),
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => PBody::Append(peer::Append {
            prev_index,
            prev_term,
            entries: entries.iter().map(entry_to_proto).collect(),
            commit,
        }),
        Body::AppendResponse { result, voter } => PBody::AppendResponse(match result {
            AppendResult::Accepted { match_index } => PAppendResponse {
                accepted: true,
                match_index,
                voter,
                ..Default::default()
            },
            AppendResult::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => PAppendResponse {
                accepted: false,
                match_index: 0,
                rejected_index,
                hint_index,
                hint_term,
                voter,
            },
        }),
        Body::Heartbeat {
            commit,
            leader_commit,
            read_round,
        } => PBody::Heartbeat(peer::Heartbeat {
            commit,
            read_round,
            leader_commit,
        }),
        Body::HeartbeatResponse { read_round, voter } => {
            PBody::HeartbeatResponse(peer::HeartbeatResponse { read_round, voter })
        }
        Body::TimeoutNow => PBody::TimeoutNow(Empty {}),
        Body::RejoinProbe => PBody::RejoinProbe(Empty {}),
        Body::RejoinProbeResponse { empty_log, members } => {
            let (voters, learners) = members.to_bits();
            PBody::RejoinProbeResponse(peer::RejoinProbeResponse {
                empty_log,
                voters,
                learners,
            })
        }
        Body::Snapshot { .. } => return None,
    };
    Some(peer::RaftMessage {
        from: msg.from,
        to: msg.to,
        term: msg.term,
        body: Some(body),
    })
}

/// The core form of a wire message; `None` (logged, rate-limited, with the
/// sender's ordinal) if it has none: see [`try_from_proto`].
pub fn from_proto(msg: peer::RaftMessage) -> Option<Message> {
    let from = msg.from;
    match try_from_proto(msg) {
        Ok(msg) => Some(msg),
        Err(why) => {
            warn_dropped(from, &why);
            None
        }
    }
}

/// The core form of a wire message, or why it has none.
pub fn try_from_proto(msg: peer::RaftMessage) -> Result<Message, ProtoError> {
    let body = match msg.body.ok_or(ProtoError::NoBody)? {
        PBody::PreVote(p) => Body::PreVote {
            last_index: p.last_index,
            last_term: p.last_term,
        },
        PBody::PreVoteResponse(g) => Body::PreVoteResponse { granted: g.granted },
        PBody::Vote(v) => Body::Vote {
            last_index: v.last_index,
            last_term: v.last_term,
            transfer: v.transfer,
        },
        PBody::VoteResponse(g) => Body::VoteResponse { granted: g.granted },
        PBody::Append(a) => Body::Append {
            prev_index: a.prev_index,
            prev_term: a.prev_term,
            entries: a
                .entries
                .into_iter()
                .map(entry_from_proto)
                .collect::<Result<_, _>>()?,
            commit: a.commit,
        },
        PBody::AppendResponse(r) => Body::AppendResponse {
            result: if r.accepted {
                AppendResult::Accepted {
                    match_index: r.match_index,
                }
            } else {
                AppendResult::Rejected {
                    rejected_index: r.rejected_index,
                    hint_index: r.hint_index,
                    hint_term: r.hint_term,
                }
            },
            voter: r.voter,
        },
        PBody::Heartbeat(h) => Body::Heartbeat {
            commit: h.commit,
            leader_commit: h.leader_commit,
            read_round: h.read_round,
        },
        PBody::HeartbeatResponse(h) => Body::HeartbeatResponse {
            read_round: h.read_round,
            voter: h.voter,
        },
        PBody::TimeoutNow(_) => Body::TimeoutNow,
        PBody::RejoinProbe(_) => Body::RejoinProbe,
        PBody::RejoinProbeResponse(f) => Body::RejoinProbeResponse {
            empty_log: f.empty_log,
            members: crate::raft::Membership::from_bits(f.voters, f.learners),
        },
    };
    Ok(Message {
        from: msg.from,
        to: msg.to,
        term: msg.term,
        body,
    })
}

/// The output of a write forwarded to the leader, from its answer.
pub(super) fn output_from(resp: ForwardResponse) -> Output {
    match resp.output {
        Some(forward_response::Output::Put(p)) => Output::Put(p),
        Some(forward_response::Output::Delete(response)) => Output::Delete {
            response,
            more: resp.delete_more,
        },
        Some(forward_response::Output::Txn(t)) => Output::Txn(t),
        Some(forward_response::Output::Refused(reason)) => Output::Refused(reason),
        Some(forward_response::Output::None(_)) | None => Output::None,
    }
}

/// The forwarded form of an output: (output, delete_more).
pub(super) fn output_to(output: Output) -> (Option<forward_response::Output>, bool) {
    let mut more = false;
    let output = match output {
        Output::Put(p) => forward_response::Output::Put(p),
        Output::Delete { response, more: m } => {
            more = m;
            forward_response::Output::Delete(response)
        }
        Output::Txn(t) => forward_response::Output::Txn(t),
        Output::Refused(reason) => forward_response::Output::Refused(reason),
        Output::None | Output::Undecodable => forward_response::Output::None(Empty {}),
    };
    (Some(output), more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Every message kind survives the round trip.
    #[test]
    fn round_trip() {
        let bodies = vec![
            Body::PreVote {
                last_index: 3,
                last_term: 2,
            },
            Body::PreVoteResponse { granted: true },
            Body::Vote {
                last_index: 3,
                last_term: 2,
                transfer: true,
            },
            Body::VoteResponse { granted: false },
            Body::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![Entry {
                    index: 2,
                    term: 1,
                    kind: EntryKind::Noop,
                    data: Bytes::from("x"),
                }],
                commit: 1,
            },
            Body::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_index: 5,
                    hint_index: 3,
                    hint_term: 1,
                },
                voter: true,
            },
            Body::AppendResponse {
                result: AppendResult::Accepted { match_index: 9 },
                voter: false,
            },
            Body::Heartbeat {
                commit: 4,
                leader_commit: 9,
                read_round: 7,
            },
            Body::HeartbeatResponse {
                read_round: 7,
                voter: true,
            },
            Body::TimeoutNow,
            Body::RejoinProbe,
            Body::RejoinProbeResponse {
                empty_log: true,
                members: crate::raft::Membership::new([0, 2], [5]),
            },
        ];
        for body in bodies {
            let msg = Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            };
            assert_eq!(
                from_proto(to_proto(msg.clone()).expect("wire form")),
                Some(msg)
            );
        }
    }

    /// A message without a body (here one of a kind a newer version might
    /// add, field 99, which this version skips when decoding) is dropped,
    /// not taken for some default kind.
    #[test]
    fn a_message_without_a_body_is_dropped() {
        use prost::Message as _;
        // from = 1 (field 1, varint), then field 99 as an empty
        // length-delimited value.
        let wire = [0x08, 0x01, 0x9a, 0x06, 0x00];
        let msg = peer::RaftMessage::decode(&wire[..]).expect("decodes");
        assert_eq!((msg.from, msg.body.is_none()), (1, true));
        assert_eq!(try_from_proto(msg.clone()), Err(ProtoError::NoBody));
        assert_eq!(from_proto(msg), None);
        assert!(peer::RaftMessage::decode(&[0xff, 0xff][..]).is_err());
    }

    /// An entry flagged both no-op and config is no entry any version
    /// writes: the whole append is dropped.
    #[test]
    fn an_entry_with_both_kinds_is_dropped() {
        let append = |noop, config| peer::RaftMessage {
            from: 0,
            to: 1,
            term: 2,
            body: Some(PBody::Append(peer::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![peer::Entry {
                    index: 1,
                    term: 2,
                    noop,
                    data: Bytes::new(),
                    config,
                }],
                commit: 0,
            })),
        };
        assert_eq!(
            try_from_proto(append(true, true)),
            Err(ProtoError::EntryFlags { index: 1 })
        );
        assert!(try_from_proto(append(true, false)).is_ok());
    }

    /// Field values are carried as they are, the extremes included: whether
    /// they make sense is the core's question, which refuses them there
    /// (`raft::tests::malformed`).
    #[test]
    fn extreme_values_reach_the_core_unchanged() {
        let msg = Message {
            from: u32::MAX,
            to: 1,
            term: u64::MAX,
            body: Body::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_index: u64::MAX,
                    hint_index: 0,
                    hint_term: u64::MAX,
                },
                voter: true,
            },
        };
        let wire = to_proto(msg.clone()).expect("wire form");
        assert_eq!(try_from_proto(wire), Ok(msg));
    }
}
