//! TLS for both ports: certificates read from files and read again when the
//! files change, so that cert-manager's renewals take effect without a
//! restart.
//!
//! - The client port serves a certificate, and with a client CA requires
//!   client certificates signed by it.
//! - The peer port always requires both sides to present a certificate
//!   signed by the peer CA (mTLS), and a peer may only speak as the ordinal
//!   its certificate names ([`identity`]).
//!
//! rustls on ring, no OpenSSL. The files are checked for changes (their
//! modification times) at every new connection, which costs a few `stat`s
//! and needs no background task; a reload that fails keeps the previous
//! certificate and logs why.

pub mod connector;
pub mod identity;
pub mod incoming;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match, say).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The PEM files of one side of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that the other side's certificate must be signed by: on a
    /// server, clients must present one; on a client, the server's is
    /// checked against it (the system roots are never used).
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.ca.as_deref());
        paths
    }

    /// The modification times of the files (None where one cannot be read:
    /// a file being replaced).
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        read_certs(&self.cert)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::File {
            path: self.key.clone(),
            reason: format!("no private key: {e}"),
        })
    }

    fn roots(&self) -> Result<Option<Arc<RootCertStore>>, TlsError> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| TlsError::File {
                path: ca.clone(),
                reason: format!("not a CA certificate: {e}"),
            })?;
        }
        Ok(Some(Arc::new(roots)))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

/// The leaf certificate in `path`, as a connection presenting it would
/// carry it.
pub fn leaf(path: &Path) -> Result<incoming::ConnInfo, TlsError> {
    let chain = read_certs(path)?;
    Ok(incoming::ConnInfo {
        remote: None,
        client_cert: chain.into_iter().next(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration `files` describe; with a CA, a client
/// certificate signed by it is required.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match files.roots()? {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(files.chain()?, files.private_key()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The client configuration `files` describe: the server is checked
/// against the CA, and the certificate is presented to it.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = files.roots()?.ok_or_else(|| TlsError::File {
        path: files.cert.clone(),
        reason: "a CA to check the server's certificate against is required".into(),
    })?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(files.chain()?, files.private_key()?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A configuration built from files, built again when they change.
pub struct Reloading<C> {
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<C, TlsError>,
    current: Mutex<(Vec<Option<SystemTime>>, Arc<C>)>,
}

impl<C> Reloading<C> {
    /// Builds the first configuration; fails if the files do not make one.
    pub fn new(
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<C, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = files.stamps();
        let config = Arc::new(build(&files)?);
        Ok(Reloading {
            files,
            build,
            current: Mutex::new((stamps, config)),
        })
    }

    /// The configuration for a new connection: rebuilt first if a file
    /// changed since the last build. A rebuild that fails (a renewal half
    /// written) keeps the previous configuration and is tried again at the
    /// next connection.
    pub fn current(&self) -> Arc<C> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = self.files.stamps();
        if stamps != current.0 {
            match (self.build)(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    *current = (stamps, Arc::new(config));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones")
                }
            }
        }
        current.1.clone()
    }
}

/// The server side of a port: its reloading configuration.
pub type ServerTls = Arc<Reloading<ServerConfig>>;
/// The client side of the peer port.
pub type ClientTls = Arc<Reloading<ClientConfig>>;

/// A reloading server configuration from `files`.
pub fn server(files: TlsFiles) -> Result<ServerTls, TlsError> {
    Ok(Arc::new(Reloading::new(files, server_config)?))
}

/// A reloading client configuration from `files`.
pub fn client(files: TlsFiles) -> Result<ClientTls, TlsError> {
    Ok(Arc::new(Reloading::new(files, client_config)?))
}
