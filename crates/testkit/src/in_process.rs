//! A node in the test's own process: the real replication and apply
//! threads, the real client and peer gRPC servers on port 0, a real sled
//! dir in a temp dir. For tests that need no crash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvstore::identity::PodName;
use kvstore::node::{NoPeers, Node, NodeConfig, NodeHandle, NodeInbox};
use kvstore::server::{serve_clients, ServeOptions};
use kvstore::transport::serve_peers;
use kvstore_client::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A one-member node serving on loopback until dropped or stopped.
pub struct InProcessNode {
    pub handle: NodeHandle,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    node: Option<Node>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts `kvstore-0` of a one-member cluster in this process.
pub async fn start_node() -> InProcessNode {
    start_node_with(ServeOptions::default()).await
}

/// Starts `kvstore-0` with these client server options.
pub async fn start_node_with(opts: ServeOptions) -> InProcessNode {
    start_node_tuned(|_| {}, opts).await
}

/// Starts `kvstore-0` with its configuration changed by `tune` (what a
/// `kvstore serve` flag would change) and these client server options.
pub async fn start_node_tuned(
    tune: impl FnOnce(&mut NodeConfig),
    opts: ServeOptions,
) -> InProcessNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig {
        name: PodName::parse("kvstore-0").expect("name"),
        replicas: 1,
        probe_peers: 1,
        data_dir: dir.path().join("data"),
        cache_bytes: 16 << 20,
        history_revisions: 10_000,
        timing: Default::default(),
        compaction: kvstore::node::CompactionPolicy {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            keep_entries: 5_000,
        },
        priority_return: true,
        cluster_id: None,
        space: kvstore::node::space::SpacePolicy {
            quota: 1 << 30,
            min_free: 0,
            reserve: 0,
        },
        wal_sync_delay: Duration::ZERO,
    };
    tune(&mut cfg);
    let node = Node::start(cfg, Arc::new(NoPeers), NodeInbox::new()).expect("start node");
    let handle = node.handle();
    let (stop, stopped) = watch::channel(false);
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client_addr = client.local_addr().expect("addr");
    let peer_addr = peer.local_addr().expect("addr");
    let mut rx = stopped.clone();
    tokio::spawn(serve_clients(client, handle.clone(), opts, async move {
        let _ = rx.wait_for(|&s| s).await;
    }));
    let mut rx = stopped;
    tokio::spawn(serve_peers(
        peer,
        handle.clone(),
        Duration::from_secs(5),
        None,
        async move {
            let _ = rx.wait_for(|&s| s).await;
        },
    ));
    InProcessNode {
        handle,
        client_addr,
        peer_addr,
        node: Some(node),
        stop,
        _dir: dir,
    }
}

impl InProcessNode {
    /// The client port as `host:port`, as kvctl's `--endpoints` takes it.
    pub fn endpoint(&self) -> String {
        self.client_addr.to_string()
    }

    /// A client for this node alone.
    pub fn client(&self) -> Client {
        crate::client_for(self.endpoint())
    }

    /// `http://` URI of the client port.
    pub fn client_uri(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// `http://` URI of the peer port.
    pub fn peer_uri(&self) -> String {
        format!("http://{}", self.peer_addr)
    }

    /// Stops the servers and the node, making everything durable.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(node) = self.node.take() {
            node.stop().await.expect("clean stop");
        }
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(node) = self.node.take() {
            node.handle().begin_stop();
            // The threads stop when their inbox closes; nothing to wait for.
            drop(node);
        }
    }
}
