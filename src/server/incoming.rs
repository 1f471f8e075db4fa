//! Accepted connections with the socket options every server needs.
//!
//! tonic's `Server::tcp_nodelay` and `tcp_keepalive` apply only to listeners
//! tonic binds itself; a listener handed in through
//! `serve_with_incoming_shutdown` keeps the kernel defaults. With Nagle's
//! algorithm on, a response that carries a value waits for the client's
//! delayed ACK (tens of milliseconds), and without TCP keepalive a peer that
//! vanished without a reset holds its connection forever. Both the client and
//! the peer server take their connections from here.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// How many streams a client may open and reset before the server has
/// accepted them, on one connection. hyper's default (20) cut off with
/// GOAWAY `too_many_resets` a client whose calls timed out together (a
/// blocked link that came back), dropping its other calls too; this bound
/// still stops rapid-reset abuse (CVE-2023-44487), which needs thousands.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 1024;

/// How long an accepted connection may be idle before the kernel probes it.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

/// The connections `listener` accepts, each with `TCP_NODELAY` and TCP
/// keepalive set.
pub fn accepted(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
        .with_keepalive_interval(Some(Duration::from_secs(5)))
        .with_keepalive_retries(Some(3))
}
