//! TLS for the client's connections, and the endpoints built with it.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::ClientError;

/// TLS for a client's connections: the servers' certificates are checked
/// against `ca_pem`, never against system roots.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// The CA (PEM) that signs the servers' certificates.
    pub ca_pem: Vec<u8>,
    /// This client's certificate and key (PEM), for servers that require
    /// client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the servers' certificates must carry, when it is not the
    /// endpoint's host (through a port-forward to 127.0.0.1, say).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Reads the PEM files: the CA, and a certificate with its key if both
    /// are given.
    pub fn from_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        server_name: Option<String>,
    ) -> Result<TlsOptions, ClientError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ClientError::BadTls(format!("{}: {e}", p.display())))
        };
        Ok(TlsOptions {
            ca_pem: read(ca)?,
            identity: match identity {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
            server_name,
        })
    }

    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// The gRPC endpoint of `endpoint` (`host:port`, or a URI), with TLS if
/// `tls` is given (a `host:port` then means `https://`).
pub fn endpoint(endpoint: &str, tls: Option<&TlsOptions>) -> Result<Endpoint, ClientError> {
    let uri = match tls {
        Some(_) if !endpoint.contains("://") => format!("https://{endpoint}"),
        _ => normalize(endpoint),
    };
    let bad = |err: String| ClientError::BadEndpoint(endpoint.to_string(), err);
    let ep = Endpoint::from_shared(uri).map_err(|e| bad(e.to_string()))?;
    match tls {
        Some(tls) => ep.tls_config(tls.config()).map_err(|e| bad(e.to_string())),
        None => Ok(ep),
    }
}

/// `host:port` as an `http://` URI; a URI as it is.
fn normalize(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}
