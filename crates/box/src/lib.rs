//! The cluster in a box: what `kvstore local` and `kvstore demo` need on a
//! laptop or a CI runner, and a pod never does.
//!
//! - [`dns`]: an embedded DNS server that answers for the headless
//!   Service's names, as CoreDNS does in a cluster;
//! - [`local`]: a supervisor that runs R `kvstore serve` pods on loopback
//!   addresses and restarts them as a StatefulSet's kubelet would;
//! - [`demo`]: the failover demonstration, with every acknowledged write
//!   checked for linearizability afterwards.
//!
//! The pod image is built without it (the `kvstore` package's `box`
//! feature).

pub mod demo;
pub mod dns;
pub mod local;
