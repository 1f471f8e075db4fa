//! Errors on the client port carry a `google.rpc.ErrorInfo` (in the
//! standard `grpc-status-details-bin` trailer): a machine-readable reason,
//! and the leader as the answering node knows it, by name and address, so
//! that a client in any language can go to the leader without parsing
//! messages or knowing kvstore's own metadata keys.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::cluster::PeerDirectory;
use crate::error::KIND_METADATA;
use crate::node::NodeHandle;

/// The `domain` of kvstore's ErrorInfo.
pub const ERROR_DOMAIN: &str = "kvstore.io";

/// Adds the ErrorInfo to the statuses a node answers with.
#[derive(Clone)]
pub struct LeaderHint {
    node: NodeHandle,
    directory: Option<Arc<dyn PeerDirectory>>,
    client_port: u16,
}

impl LeaderHint {
    /// Hints from `node`'s view of the leader; `directory` (discovery)
    /// gives its DNS name and address.
    pub fn new(
        node: NodeHandle,
        directory: Option<Arc<dyn PeerDirectory>>,
        client_port: u16,
    ) -> Self {
        LeaderHint {
            node,
            directory,
            client_port,
        }
    }

    /// `status` with an ErrorInfo: the reason is kvstore's error kind
    /// (`no-leader`, `outcome-unknown`, ...) in upper snake case, or the
    /// gRPC code's name; the metadata names the leader (`leader`,
    /// `leader_dns`, `leader_address`) where this node knows it.
    pub fn enrich(&self, status: Status) -> Status {
        if status.code() == Code::Ok {
            return status;
        }
        let reason = status
            .metadata()
            .get(KIND_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(|kind| kind.replace('-', "_").to_uppercase())
            .unwrap_or_else(|| code_reason(status.code()).to_string());
        let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, self.leader_metadata());
        Status::with_error_details_and_metadata(
            status.code(),
            status.message(),
            details,
            status.metadata().clone(),
        )
    }

    fn leader_metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        let Some(leader) = self.node.status().leader else {
            return meta;
        };
        meta.insert(
            "leader".into(),
            self.node.name().sibling(leader).to_string(),
        );
        meta.insert("leader_ordinal".into(), leader.to_string());
        // Port 0 (`--listen` on any free port, in tests): the peers' client
        // ports are unknown, and a name with `:0` would mislead.
        let directory = self.directory.as_ref().filter(|_| self.client_port != 0);
        if let Some(directory) = directory {
            let dns = directory.dns_name(leader);
            meta.insert("leader_dns".into(), format!("{dns}:{}", self.client_port));
            let address = directory
                .entries()
                .into_iter()
                .find(|e| e.ordinal == leader)
                .and_then(|e| e.address)
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| std::net::SocketAddr::new(a.ip(), self.client_port).to_string());
            if let Some(address) = address {
                meta.insert("leader_address".into(), address);
            }
        }
        meta
    }
}

/// The upper snake case name of `code`, as google.rpc.Code spells it.
fn code_reason(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
