pub mod cluster;
pub mod node_process;
pub mod raft_cluster;
