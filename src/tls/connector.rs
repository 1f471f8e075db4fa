//! The peer client's connections with TLS: to one peer's address, checking
//! that its certificate is valid for that peer's stable name (not merely
//! for some member), and presenting this member's own certificate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ClientTls;

/// Connects to one peer (whatever URI tonic asks for: the channel is
/// built for this address).
#[derive(Clone)]
pub struct PeerConnector {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: ClientTls,
}

impl PeerConnector {
    /// A connector to `addr`, whose certificate must be valid for `name`.
    pub fn new(addr: SocketAddr, name: &str, tls: ClientTls) -> io::Result<Self> {
        let name = ServerName::try_from(name.trim_end_matches('.').to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PeerConnector { addr, name, tls })
    }
}

impl tower::Service<http::Uri> for PeerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (addr, name) = (self.addr, self.name.clone());
        let config = self.tls.current();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
