//! The replication core's simulation harness (the test kit,
//! `kvstore-testkit`, has the process, box and in-process helpers).

pub mod raft_cluster;
pub mod sim;
pub mod trace;
