//! kvstore: a small replicated key-value store built for Kubernetes
//! StatefulSets. See README.md and DESIGN.md for the architecture.

pub mod backoff;
pub mod client;
pub mod cmd;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod dns;
pub mod error;
pub mod identity;
pub mod lincheck;
pub mod local;
pub mod logging;
pub mod node;
pub mod raft;
pub mod server;
pub mod state;
pub mod storage;
pub mod transport;

/// Generated gRPC code, in modules that mirror the protobuf packages.
pub mod proto {
    /// Package `kvstore`.
    pub mod kvstore {
        /// The client API, package `kvstore.v1`.
        pub mod v1 {
            tonic::include_proto!("kvstore.v1");
        }
        /// The replication API.
        pub mod peer {
            /// Package `kvstore.peer.v1`.
            pub mod v1 {
                tonic::include_proto!("kvstore.peer.v1");
            }
        }
    }
    pub use kvstore::peer::v1 as peer;
    pub use kvstore::v1 as kv;
}
