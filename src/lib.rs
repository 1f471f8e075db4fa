//! kvstore: a small replicated key-value store built for Kubernetes
//! StatefulSets. See README.md and DESIGN.md for the architecture.

pub mod cmd;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod dns;
pub mod error;
pub mod identity;
pub use kvstore_lincheck as lincheck;
pub mod local;
pub mod logging;
pub mod node;
pub mod raft;
pub mod server;
pub mod state;
pub mod storage;
pub mod transport;

/// The client library (temporarily re-exported while kvctl and the demo
/// still live in this crate).
pub use kvstore_client as client;
/// The gRPC API (generated code and its conventions): its own crate, so
/// that the client library and `kvctl` share it without the server.
pub use kvstore_proto as proto;
