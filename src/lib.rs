//! kvstore: a small replicated key-value store built for Kubernetes
//! StatefulSets. See README.md and DESIGN.md for the architecture.

pub mod client;
pub mod cmd;
pub mod config;
pub mod discovery;
pub mod dns;
pub mod error;
pub mod identity;
pub mod local;
pub mod logging;
pub mod node;
pub mod raft;
pub mod server;
pub mod state;
pub mod storage;

/// Generated gRPC code.
pub mod proto {
    /// The client API, package `kvstore.v1`.
    pub mod kv {
        tonic::include_proto!("kvstore.v1");
    }
}
