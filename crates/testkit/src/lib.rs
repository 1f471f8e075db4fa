//! The test kit: what kvstore's integration tests (and anyone's tests
//! against kvstore) start real nodes with.
//!
//! - [`in_process`]: a node in the test's own process, the real threads and
//!   gRPC servers on port 0, for tests that need no crash;
//! - [`process`]: `kvstore serve` processes, killed with SIGKILL and
//!   restarted on the same data dir as a pod with its volume;
//! - [`box_cluster`]: a whole cluster in a box (embedded DNS, supervisor),
//!   and [`box_cluster::demo_options`] for a demonstration run in a test;
//! - [`memory_cap`] and [`small_volume`]: a memory limit and a small
//!   filesystem, for the hardening tests;
//! - [`bins`]: where the binaries under test are.
//!
//! The linearizability checker is the `kvstore-lincheck` crate, which the
//! demo uses too.

pub mod bins;
pub mod box_cluster;
pub mod in_process;
pub mod memory_cap;
pub mod process;
pub mod small_volume;

use std::time::Duration;

use kvstore_client::{Client, RetryPolicy};

/// A client for one node's client endpoint (`host:port`), with the default
/// retry policy and a 10 s request timeout.
pub fn client_for(endpoint: String) -> Client {
    Client::new(&[endpoint], RetryPolicy::default(), Duration::from_secs(10)).expect("client")
}
