//! Accepted connections, plain or TLS, for tonic's `serve_with_incoming`.
//!
//! TLS handshakes run concurrently, each bounded in time, so that a client
//! that connects and says nothing holds up no one else's accept. A
//! connection's client certificate, if it presented one, travels into every
//! request's extensions as [`ConnInfo`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::ServerTls;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; accepting waits while this many are.
const MAX_HANDSHAKES: usize = 256;

/// What a request knows of its connection.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// The client's certificate (leaf), verified against the port's CA.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// One accepted connection.
pub enum Conn {
    /// Without TLS.
    Plain(TcpStream),
    /// After a completed handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(tcp) => ConnInfo {
                remote: tcp.peer_addr().ok(),
                client_cert: None,
            },
            Conn::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                ConnInfo {
                    remote: tcp.peer_addr().ok(),
                    client_cert: session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| c.clone().into_owned()),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The connections `listener` accepts, with the socket options of
/// [`crate::server::incoming`], and with a TLS handshake first when `tls`
/// is set. A failed handshake (no certificate, a certificate of another CA,
/// a plaintext client) drops that connection only, with a log line.
pub fn accepted(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let tcp = crate::server::incoming::accepted(listener);
    match tls {
        None => tcp.map(|r| r.map(Conn::Plain)).boxed(),
        Some(tls) => with_handshakes(tcp, tls).boxed(),
    }
}

fn with_handshakes(
    tcp: impl Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
    tls: ServerTls,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    futures::stream::unfold(
        (tcp, FuturesUnordered::new(), tls),
        |(mut tcp, mut handshakes, tls)| async move {
            loop {
                tokio::select! {
                    accepted = tcp.next(), if handshakes.len() < MAX_HANDSHAKES => {
                        match accepted {
                            Some(Ok(stream)) => handshakes.push(handshake(stream, tls.clone())),
                            // An accept error (too many open files) is
                            // tonic's to handle; it carries on accepting.
                            Some(Err(e)) => return Some((Err(e), (tcp, handshakes, tls))),
                            None => return None,
                        }
                    }
                    Some(done) = handshakes.next(), if !handshakes.is_empty() => {
                        if let Some(conn) = done {
                            return Some((Ok(conn), (tcp, handshakes, tls)));
                        }
                    }
                }
            }
        },
    )
}

fn handshake(
    stream: TcpStream,
    tls: ServerTls,
) -> Pin<Box<dyn std::future::Future<Output = Option<Conn>> + Send>> {
    Box::pin(async move {
        let remote = stream.peer_addr().ok();
        let acceptor = TlsAcceptor::from(tls.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(Conn::Tls(Box::new(tls))),
            Ok(Err(e)) => {
                tracing::warn!(remote = ?remote, error = %e, "TLS handshake refused");
                None
            }
            Err(_) => {
                tracing::warn!(remote = ?remote, "TLS handshake timed out");
                None
            }
        }
    })
}
