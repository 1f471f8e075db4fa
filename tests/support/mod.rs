pub mod raft_cluster;
