//! Which failures certainly changed nothing, and so may be retried.

use tonic::{Code, Status};

use kvstore_proto::KIND_METADATA;

/// Whether a failed request certainly changed nothing.
pub fn certainly_not_applied(status: &Status) -> bool {
    match status
        .metadata()
        .get(KIND_METADATA)
        .and_then(|v| v.to_str().ok())
    {
        Some("outcome-unknown") => false,
        Some(_) => true,
        None => status.code() == Code::Unavailable && connect_failed(status),
    }
}

/// Whether a request failed before it reached any server: no connection
/// could be made (name lookup, TCP connect or connect timeout). tonic keeps
/// a [`tonic::ConnectError`] in the status's source chain for exactly
/// these, so the check does not depend on any error's wording.
pub fn connect_failed(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a failed membership change may be sent again: only when it
/// certainly changed nothing. That is UNAVAILABLE with the server's word for
/// it (not the leader, no leader, shutting down, replaced by a new leader)
/// or a connection that was never made; not an UNAVAILABLE of a broken
/// connection, and never DEADLINE_EXCEEDED, whose change may have
/// committed.
pub fn membership_change_retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable && certainly_not_applied(status)
}
