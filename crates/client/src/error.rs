//! [`ClientError`]: why a client call failed.

use tonic::{Code, Status};

use crate::{certainly_not_applied, connection_reason, retryable};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint could be reached before the deadline.
    #[error("cannot reach any endpoint ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error seen.
        last: String,
    },
    /// The server answered with an error that retrying does not fix (or the
    /// retry budget ran out).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    /// An endpoint is not a valid address.
    #[error("bad endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    /// The TLS files could not be read.
    #[error("TLS: {0}")]
    BadTls(String),
}

impl ClientError {
    /// Whether this is a write that may or may not have been applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Status(s) => {
                matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) && !certainly_not_applied(s)
            }
            _ => false,
        }
    }

    /// Whether no node could be reached or the one asked could not serve:
    /// another attempt, later or elsewhere, may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Status(s) => retryable(s),
            _ => false,
        }
    }

    /// Why the one endpoint asked failed, without the endpoint list that
    /// [`ClientError::Unreachable`] repeats, and with the cause of a broken
    /// connection rather than tonic's "transport error".
    pub fn reason(&self) -> String {
        match self {
            ClientError::Unreachable { last, .. } => last.clone(),
            ClientError::Status(s) if std::error::Error::source(s).is_some() => {
                format!("{}: {}", code_name(s.code()), connection_reason(s))
            }
            other => other.to_string(),
        }
    }

    /// The gRPC code, for errors the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::OutOfRange => "out of range",
        Code::NotFound => "not found",
        Code::Internal => "internal error",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        _ => "error",
    }
}
