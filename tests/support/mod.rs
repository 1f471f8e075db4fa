pub mod cluster;
pub mod in_process;
pub mod memory_cap;
pub mod node_process;
pub mod raft_cluster;
pub mod sim;
pub mod small_volume;
pub mod trace;
