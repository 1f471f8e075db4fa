//! The errors a node can answer with, and their one mapping to gRPC status
//! codes. The code alone tells a client what to do: INVALID_ARGUMENT, fix the
//! request; UNAVAILABLE, retry (elsewhere); OUT_OF_RANGE, start later;
//! INTERNAL, the node's disk or a bug.

use tonic::{metadata::MetadataValue, Code, Status};

use crate::state::StateError;
use crate::storage::wal::WalError;

/// gRPC metadata key carrying the leader's name with UNAVAILABLE answers.
pub const LEADER_METADATA: &str = "kvstore-leader";

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the rule or limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// No leader is known (an election is running); retry shortly.
    #[error("no leader is known right now (election in progress); retry")]
    NoLeader,
    /// The request cannot be served here now; retry. `leader` is a hint.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// The leader's name, when known.
        leader: Option<String>,
    },
    /// A write was proposed but its fate is unknown: it may have been
    /// applied, or not.
    #[error("the write's outcome is unknown ({0}); it may have been applied")]
    OutcomeUnknown(String),
    /// A write was definitely not applied (its log entry was replaced by a
    /// new leader); retrying is safe.
    #[error("the write was not applied ({0}); retrying is safe")]
    NotApplied(String),
    /// The request took longer than its time limit.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A watch asked for history that is compacted away.
    #[error("revision {requested} is compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        oldest: u64,
    },
    /// The node is shutting down.
    #[error("the node is shutting down; retry on another node")]
    ShuttingDown,
    /// The applied state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A peer answered with an error while forwarding.
    #[error("forwarded to the leader: {0}")]
    Forwarded(Status),
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = err.to_string();
        match err {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::NoLeader
            | Error::ShuttingDown
            | Error::OutcomeUnknown(_)
            | Error::NotApplied(_) => Status::unavailable(message),
            Error::Unavailable { leader, .. } => {
                let mut status = Status::unavailable(message);
                if let Some(value) = leader.and_then(|l| MetadataValue::try_from(l.as_str()).ok()) {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            Error::Timeout(_) => Status::deadline_exceeded(message),
            Error::Compacted { .. } => Status::out_of_range(message),
            Error::State(_) | Error::Wal(_) => Status::internal(message),
            Error::Forwarded(status) => {
                // Keep the leader's code; a transport failure to reach the
                // leader means the outcome of a write is unknown.
                if status.code() == Code::Unknown || status.code() == Code::Cancelled {
                    Status::unavailable(message)
                } else {
                    Status::new(status.code(), status.message().to_string())
                }
            }
        }
    }
}

/// The result type of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
