//! kvstore: a small replicated key-value store built for Kubernetes
//! StatefulSets. This crate is the server (the library a pod runs, and the
//! `kvstore` binary); the API, the client, the box and the test kit are
//! crates of their own. See README.md and DESIGN.md for the architecture.

pub mod cmd;
pub mod config;
pub mod desired;
pub mod discovery;
pub mod error;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod raft;
pub mod restore;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;
pub mod transport;

/// The gRPC API, generated in its own crate so that the client library and
/// `kvctl` share it without the server; `crate::proto` reads as before.
pub use kvstore_proto as proto;
