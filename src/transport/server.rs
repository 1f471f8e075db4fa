//! [`PeerService`]: the inbound side of the peer transport, and
//! [`serve_peers`], which serves it on the peer port.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::convert::{self, output_to};
use super::MAX_PEER_MESSAGE;
use crate::node::{Input, NodeHandle};
use crate::proto::peer::peer_server::{Peer, PeerServer};
use crate::proto::peer::{
    Envelope, ForwardRequest, ForwardResponse, ReadIndexRequest, ReadIndexResponse, SnapshotAck,
    SnapshotChunk, StreamEnd, TransferRequest, TransferResponse,
};
use crate::raft::NodeId;
use crate::tls::identity::PeerNames;
use crate::tls::incoming::ConnInfo;
use crate::tls::ServerTls;

/// The peer gRPC service of one node.
pub struct PeerService {
    pub(super) node: NodeHandle,
    timeout: Duration,
    /// One snapshot is received at a time.
    pub(super) receiving: tokio::sync::Mutex<()>,
    /// Per peer, the number of its latest inbound stream: only the end of
    /// the latest one means the peer is gone.
    streams: Mutex<BTreeMap<NodeId, u64>>,
    /// With mTLS on the peer port: each member's name, which its client
    /// certificate must carry. `None`: plaintext, anyone is believed.
    names: Option<PeerNames>,
}

/// The peer port's TLS: its certificate (and CA, which clients must be
/// signed by) and the names members' certificates must carry.
#[derive(Clone)]
pub struct PeerTls {
    /// The port's reloading configuration.
    pub server: ServerTls,
    /// The stable name of each ordinal.
    pub names: PeerNames,
}

impl PeerService {
    /// With mTLS: the member the request's certificate names, or
    /// PERMISSION_DENIED. Without: `None`, nothing is checked.
    pub(super) fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> std::result::Result<Option<NodeId>, Status> {
        let Some(names) = &self.names else {
            return Ok(None);
        };
        let info = request.extensions().get::<ConnInfo>();
        match names.member_of(info) {
            Ok(ordinal) => Ok(Some(ordinal)),
            Err(e) => {
                tracing::warn!(remote = ?info.and_then(|i| i.remote), error = %e, "refusing a peer request");
                Err(Status::permission_denied(e.to_string()))
            }
        }
    }

    /// Refuses a peer whose cluster is known and is not ours. A member on
    /// an empty volume started with `--cluster-id` knows its cluster too,
    /// so that it cannot be taken in by another cluster reachable at the
    /// same names (an old one, during a restore).
    pub(super) fn check_cluster(&self, theirs: u64) -> std::result::Result<(), Status> {
        let ours = self.node.known_cluster_id();
        if theirs != 0 && ours != 0 && theirs != ours {
            tracing::error!(
                ours = format!("{ours:016x}"),
                theirs = format!("{theirs:016x}"),
                "refusing a peer from another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "member of another cluster ({theirs:016x}, this one is {ours:016x})"
            )));
        }
        Ok(())
    }

    /// Hands the messages of `envelope` addressed to us to the node; the
    /// first one names the peer of the stream (`from`).
    /// With mTLS, `sender` is the member the connection's certificate names,
    /// and a message from anyone else ends the stream.
    fn deliver(
        &self,
        envelope: Envelope,
        sender: Option<NodeId>,
        from: &mut Option<(NodeId, u64)>,
    ) -> std::result::Result<(), Status> {
        self.check_cluster(envelope.cluster_id)?;
        let me = self.node.name().ordinal;
        for msg in envelope
            .messages
            .into_iter()
            .filter_map(convert::from_proto)
        {
            if msg.to != me {
                continue;
            }
            if let Some(sender) = sender.filter(|&s| s != msg.from) {
                tracing::warn!(
                    certificate = sender,
                    claimed = msg.from,
                    "refusing a peer message from another member than its certificate names"
                );
                return Err(Status::permission_denied(format!(
                    "the certificate names member {sender}, the message claims {}",
                    msg.from
                )));
            }
            if from.is_none() {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let n = streams.entry(msg.from).or_insert(0);
                *n += 1;
                *from = Some((msg.from, *n));
            }
            self.node.deliver(Input::Step(msg));
        }
        Ok(())
    }

    /// The inbound stream number `n` of `peer` ended.
    fn stream_ended(&self, peer: NodeId, n: u64) {
        // The peer's connection ended: if it led, it is most likely gone.
        // An older stream replaced by a reconnection says nothing.
        let latest = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .copied();
        if latest == Some(n) {
            self.node.deliver(Input::PeerDisconnected(peer));
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: Request<tonic::Streaming<Envelope>>,
    ) -> std::result::Result<Response<StreamEnd>, Status> {
        let sender = self.authenticate(&request)?;
        let mut stream = request.into_inner();
        // (peer, the number of this stream among the peer's streams)
        let mut from: Option<(NodeId, u64)> = None;
        let mut stopping = self.node.stopping();
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = crate::server::watch::until_stopping(&mut stopping) => break,
            };
            match next {
                Ok(Some(envelope)) => {
                    if let Err(refused) = self.deliver(envelope, sender, &mut from) {
                        if let Some((peer, n)) = from {
                            self.stream_ended(peer, n);
                        }
                        return Err(refused);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if let Some((peer, n)) = from {
            self.stream_ended(peer, n);
        }
        Ok(Response::new(StreamEnd {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> std::result::Result<Response<SnapshotAck>, Status> {
        self.authenticate(&request)?;
        self.receive_snapshot(request.into_inner()).await
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> std::result::Result<Response<ForwardResponse>, Status> {
        self.authenticate(&request)?;
        let req = request.into_inner();
        self.check_cluster(req.cluster_id)?;
        let result = self.node.write_as_leader(req.command, self.timeout).await?;
        let (output, delete_more) = output_to(result.output);
        Ok(Response::new(ForwardResponse {
            revision: result.revision,
            output,
            delete_more,
        }))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> std::result::Result<Response<ReadIndexResponse>, Status> {
        self.authenticate(&request)?;
        self.check_cluster(request.into_inner().cluster_id)?;
        let index = self.node.read_index_as_leader(self.timeout).await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferRequest>,
    ) -> std::result::Result<Response<TransferResponse>, Status> {
        self.authenticate(&request)?;
        let to = request.into_inner().to;
        self.node.transfer_as_leader(to, self.timeout).await?;
        Ok(Response::new(TransferResponse {}))
    }
}

/// Serves the peer API on `listener` until `shutdown` resolves; with `tls`,
/// only to members presenting their own certificate.
pub async fn serve_peers(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    timeout: Duration,
    tls: Option<PeerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    let (server_tls, names) = match tls {
        Some(tls) => (Some(tls.server), Some(tls.names)),
        None => (None, None),
    };
    let service = PeerServer::new(PeerService {
        node,
        timeout,
        receiving: tokio::sync::Mutex::new(()),
        streams: Mutex::new(BTreeMap::new()),
        names,
    })
    .max_decoding_message_size(MAX_PEER_MESSAGE)
    .max_encoding_message_size(MAX_PEER_MESSAGE);
    Server::builder()
        .http2_max_pending_accept_reset_streams(Some(
            crate::server::incoming::MAX_PENDING_ACCEPT_RESETS,
        ))
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(3)))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .add_service(service)
        .serve_with_incoming_shutdown(
            crate::tls::incoming::accepted(listener, server_tls),
            shutdown,
        )
        .await
}
