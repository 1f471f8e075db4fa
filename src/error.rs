//! The errors a node can answer with, and their one mapping to gRPC status
//! codes. The code alone tells a client what to do: INVALID_ARGUMENT, fix the
//! request; UNAVAILABLE, nothing was applied, retry (elsewhere);
//! DEADLINE_EXCEEDED, a write may or may not have been applied (gRPC's own
//! meaning of the code), so only an idempotent write may be repeated;
//! RESOURCE_EXHAUSTED, a limit or the space quota, retrying the same request
//! does not help; OUT_OF_RANGE, start later; INTERNAL, the node's disk or a
//! bug.
//!
//! A generic gRPC client with a retry policy on UNAVAILABLE therefore never
//! repeats a write whose outcome is unknown.

use tonic::{metadata::MetadataValue, Code, Status};

use crate::state::StateError;
use crate::storage::wal::WalError;

pub use kvstore_proto::{KIND_METADATA, LEADER_METADATA};

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
    /// A limit that retrying the same request does not get past, or the
    /// space quota; the message names it.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A watch asked for history that is compacted away.
    #[error("revision {requested} is compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        oldest: u64,
    },
    /// The request cannot be carried out in the cluster's state now, and
    /// retrying it unchanged will not help until that state changes (a
    /// membership change that is unsafe, or one already in flight); the
    /// message says which.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A membership change about an ordinal that is not a member (a
    /// removal that already happened, say).
    #[error("{0}")]
    NotMember(String),
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

impl Error {
    /// This node does not lead; `leader` names the one that does, if known.
    pub fn not_leader(leader: Option<String>) -> Self {
        Error::Unavailable {
            reason: "not the leader".into(),
            leader,
        }
    }

    /// The kind carried in [`KIND_METADATA`].
    fn kind(&self) -> Option<&'static str> {
        match self {
            Error::NoLeader => Some("no-leader"),
            Error::Unavailable { .. } => Some("unavailable"),
            Error::OutcomeUnknown(_) => Some("outcome-unknown"),
            Error::NotApplied(_) => Some("not-applied"),
            Error::ShuttingDown => Some("shutting-down"),
            Error::NotMember(_) => Some("not-member"),
            Error::FailedPrecondition(_) => Some("failed-precondition"),
            _ => None,
        }
    }

    /// Rebuilds the error a peer answered with (the inverse of the mapping to
    /// [`Status`]). A failure to reach the peer at all means the request was
    /// not delivered; any other transport failure leaves a write's outcome
    /// unknown.
    pub fn from_peer_status(status: Status) -> Error {
        let kind = status
            .metadata()
            .get(KIND_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let leader = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let message = status.message().to_string();
        match kind.as_deref() {
            Some("no-leader") => Error::NoLeader,
            Some("unavailable") => Error::Unavailable {
                reason: message,
                leader,
            },
            Some("outcome-unknown") => Error::OutcomeUnknown(message),
            Some("not-applied") => Error::NotApplied(message),
            Some("not-member") => Error::NotMember(message),
            Some("failed-precondition") => Error::FailedPrecondition(message),
            Some("shutting-down") => Error::Unavailable {
                reason: "the leader is shutting down".into(),
                leader: None,
            },
            _ if status.code() == Code::Unavailable && kvstore_client::connect_failed(&status) => {
                Error::Unavailable {
                    reason: format!("cannot reach the leader: {message}"),
                    leader: None,
                }
            }
            _ if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
            ) =>
            {
                Error::OutcomeUnknown(format!("lost the connection to the leader: {message}"))
            }
            _ => Error::Forwarded(status),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = err.to_string();
        let kind = err.kind();
        let mut status = match err {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::NoLeader | Error::ShuttingDown | Error::NotApplied(_) => {
                Status::unavailable(message)
            }
            Error::OutcomeUnknown(_) => Status::deadline_exceeded(message),
            Error::Unavailable { leader, .. } => {
                let mut status = Status::unavailable(message);
                if let Some(value) = leader.and_then(|l| MetadataValue::try_from(l.as_str()).ok()) {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            Error::Timeout(_) => Status::deadline_exceeded(message),
            Error::ResourceExhausted(_) => Status::resource_exhausted(message),
            Error::FailedPrecondition(_) | Error::NotMember(_) => {
                Status::failed_precondition(message)
            }
            Error::Compacted { .. } => Status::out_of_range(message),
            Error::State(_) | Error::Wal(_) => Status::internal(message),
            Error::Forwarded(status) => Status::new(status.code(), status.message().to_string()),
        };
        if let Some(kind) = kind {
            status
                .metadata_mut()
                .insert(KIND_METADATA, MetadataValue::from_static(kind));
        }
        status
    }
}

/// The result type of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A write whose outcome is unknown is DEADLINE_EXCEEDED, never
    /// UNAVAILABLE (which generic retry policies repeat); one that certainly
    /// did not apply is UNAVAILABLE; both say which in metadata too, and a
    /// member that forwarded the write reads the same error back.
    #[test]
    fn unknown_outcome_and_not_applied_are_told_apart_by_code() {
        let unknown = Status::from(Error::OutcomeUnknown("leader lost".into()));
        assert_eq!(unknown.code(), Code::DeadlineExceeded);
        assert!(matches!(
            Error::from_peer_status(unknown),
            Error::OutcomeUnknown(_)
        ));
        for safe in [
            Error::NotApplied("replaced".into()),
            Error::NoLeader,
            Error::ShuttingDown,
        ] {
            let status = Status::from(safe);
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(kvstore_client::certainly_not_applied(&status));
        }
    }
}
