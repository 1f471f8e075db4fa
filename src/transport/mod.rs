//! The peer transport: replication traffic over gRPC on the peer port.
//!
//! Outbound, each peer has one task that owns a long-lived client stream
//! (`Peer.Stream`) to it: it resolves the peer's name through discovery at
//! every (re)connect, batches queued messages into envelopes, and reconnects
//! with capped exponential backoff ([`kvstore_client::backoff::Backoff`],
//! without jitter: see `Backoff::exact`) when the stream breaks. HTTP/2 keepalive runs on every channel, so a silent peer is
//! noticed within seconds.
//!
//! Inbound, the server hands each message to the replication thread. When a
//! stream breaks — a peer's process died and the kernel reset the connection
//! — the node is told at once (`PeerDisconnected`): that is the fast failure
//! detection that lets a follower campaign without waiting for an election
//! timeout (see `crate::raft`).
//!
//! Writes and linearizable reads on followers, snapshots and leadership
//! transfers use unary or client-streaming calls on cached channels that are
//! rebuilt whenever the peer's name resolves to a new address.
//!
//! - `peers`: [`GrpcPeers`], the node's outbound side.
//! - `sender`: the per-peer message stream.
//! - `snapshot_send`: freezing and streaming a snapshot to a follower.
//! - `server`: [`PeerService`], the inbound side, and [`serve_peers`].
//! - `snapshot_receive`: receiving, checking and installing a snapshot.

pub mod convert;
mod peers;
mod sender;
mod server;
mod snapshot_receive;
mod snapshot_send;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::discovery::Discovery;
use crate::proto::peer::peer_client::PeerClient;
use crate::raft::NodeId;
use crate::tls::connector::PeerConnector;
use crate::tls::ClientTls;

pub use peers::GrpcPeers;
pub use server::{serve_peers, PeerService, PeerTls};

/// The largest message on the peer port: a batch of entries at their size
/// limit.
const MAX_PEER_MESSAGE: usize = 64 << 20;

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("an address is a valid URI")
        .connect_timeout(Duration::from_millis(1000))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
}

/// Why a connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The connection or its handshake failed.
    #[error("{0}")]
    Connect(#[from] tonic::transport::Error),
    /// The peer's name is not a valid TLS server name.
    #[error("peer name {0:?} is not a valid TLS name")]
    Name(String),
}

/// How this member reaches its peers: in plaintext, or with mTLS, checking
/// that each peer's certificate is valid for that peer's own stable name.
#[derive(Clone)]
pub(crate) struct Dialer {
    discovery: Arc<Discovery>,
    tls: Option<ClientTls>,
}

impl Dialer {
    fn tls_connector(
        &self,
        peer: NodeId,
        addr: SocketAddr,
    ) -> Result<Option<PeerConnector>, DialError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let name = self.discovery.peer_name(peer);
        PeerConnector::new(addr, &name, tls.clone())
            .map(Some)
            .map_err(|_| DialError::Name(name))
    }

    /// A channel to `peer` at `addr` that connects when first used.
    fn lazy(&self, peer: NodeId, addr: SocketAddr) -> Result<Channel, DialError> {
        Ok(match self.tls_connector(peer, addr)? {
            Some(connector) => endpoint(addr).connect_with_connector_lazy(connector),
            None => endpoint(addr).connect_lazy(),
        })
    }

    /// A channel to `peer` at `addr`, connected.
    async fn connect(&self, peer: NodeId, addr: SocketAddr) -> Result<Channel, DialError> {
        Ok(match self.tls_connector(peer, addr)? {
            Some(connector) => endpoint(addr).connect_with_connector(connector).await?,
            None => endpoint(addr).connect().await?,
        })
    }
}

fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}
