//! The commands carried by log entries, and what applying one returns.

use bytes::Bytes;
use prost::Message as _;

use crate::proto::kv::{
    DeleteRequest, DeleteResponse, Event, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

/// A command in a log entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// The operation.
    #[prost(oneof = "Op", tags = "1, 2, 3, 4, 5, 6")]
    pub op: Option<Op>,
}

/// The operations a command can carry.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// Set a key.
    #[prost(message, tag = "1")]
    Put(PutRequest),
    /// Delete a key, range or prefix: one bounded step of it (see
    /// [`crate::state::apply::delete`]); the server repeats it while the
    /// range holds more.
    #[prost(message, tag = "2")]
    Delete(DeleteRequest),
    /// A transaction.
    #[prost(message, tag = "3")]
    Txn(TxnRequest),
    /// The first command of a new cluster: records its id.
    #[prost(message, tag = "4")]
    Bootstrap(Bootstrap),
    /// Raises or clears a member's NOSPACE alarm.
    #[prost(message, tag = "5")]
    Alarm(super::space::Alarm),
    /// A membership change. Never stored as such: the leader's replication
    /// thread turns it into a config entry (the command form only carries
    /// it to the leader along the write path).
    #[prost(message, tag = "6")]
    Member(MemberChange),
}

/// A membership change on its way to the leader.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberChange {
    /// 1: add a learner, 2: promote, 3: remove.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// The member's ordinal.
    #[prost(uint32, tag = "2")]
    pub ordinal: u32,
}

impl MemberChange {
    /// The command form of `change`.
    pub fn from_change(change: crate::raft::MembershipChange) -> Command {
        use crate::raft::MembershipChange as C;
        let (kind, ordinal) = match change {
            C::AddLearner(n) => (1, n),
            C::Promote(n) => (2, n),
            C::Remove(n) => (3, n),
        };
        Command::new(Op::Member(MemberChange { kind, ordinal }))
    }

    /// The change an encoded command carries, if it is a membership change
    /// (checked on the first byte before anything is decoded: every other
    /// proposal passes untouched).
    pub fn decode_change(data: &[u8]) -> Option<crate::raft::MembershipChange> {
        use crate::raft::MembershipChange as C;
        // Field 6, length-delimited.
        if data.first() != Some(&0x32) {
            return None;
        }
        match Command::decode(data).ok()?.op? {
            Op::Member(MemberChange { kind: 1, ordinal }) => Some(C::AddLearner(ordinal)),
            Op::Member(MemberChange { kind: 2, ordinal }) => Some(C::Promote(ordinal)),
            Op::Member(MemberChange { kind: 3, ordinal }) => Some(C::Remove(ordinal)),
            _ => None,
        }
    }
}

/// The cluster id, chosen by the first leader of a new cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bootstrap {
    /// A random id shared by every member.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
}

impl Command {
    /// A command carrying `op`.
    pub fn new(op: Op) -> Self {
        Command { op: Some(op) }
    }

    /// Whether applying it may add data (a put, or a transaction with a
    /// put in either branch): what the NOSPACE alarm refuses.
    pub fn adds_data(&self) -> bool {
        match &self.op {
            Some(Op::Put(_)) => true,
            Some(Op::Txn(t)) => t.success.iter().chain(&t.failure).any(|op| {
                matches!(
                    op.request,
                    Some(crate::proto::kv::request_op::Request::Put(_))
                )
            }),
            _ => false,
        }
    }

    /// The encoded form stored in the log.
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
}

/// What applying a command produced, for the client that proposed it
/// (responses without their headers).
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A leader's no-op, or a bootstrap.
    None,
    /// The result of a put.
    Put(PutResponse),
    /// The result of one step of a delete, and whether the range holds more
    /// keys to delete.
    Delete {
        /// What this step deleted.
        response: DeleteResponse,
        /// The range still holds keys: the step stopped at its bound.
        more: bool,
    },
    /// The result of a transaction.
    Txn(TxnResponse),
    /// The command exceeded a limit that every replica applies in the same
    /// way; it changed nothing. The text names the limit.
    Refused(String),
    /// The entry could not be decoded; it changed nothing. Only a bug or a
    /// newer version's command can cause this.
    Undecodable,
}

/// One applied entry.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The entry's index: the revision of its changes.
    pub index: u64,
    /// The entry's term (to match it with the proposal that made it).
    pub term: u64,
    /// The answer for the proposer.
    pub output: Output,
    /// The changes, for watchers.
    pub events: Vec<Event>,
}
