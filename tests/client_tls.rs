//! The client port with TLS and a client CA: a client with a certificate
//! of that CA reads and writes; a plaintext client and a TLS client without
//! a certificate get nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kvstore::proto::kv::kv_client::KvClient;
use kvstore::proto::kv::PutRequest;
use kvstore::server::ServeOptions;
use kvstore::tls::connector::PeerConnector;
use kvstore::tls::TlsFiles;
use kvstore_testkit::in_process::start_node_with;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Channel, Endpoint};

fn write_pair(dir: &Path, file: &str, cert: &rcgen::Certificate, key: &KeyPair) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
        ca: Some(dir.join("ca.crt")),
    };
    std::fs::write(&files.cert, cert.pem()).expect("cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("key");
    files
}

/// A CA, a server certificate for `localhost` and a client certificate.
fn certificates(dir: &Path) -> (TlsFiles, TlsFiles) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |file: &str, name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("sign");
        write_pair(dir, file, &cert, &key)
    };
    (
        issue("server", "localhost"),
        issue("client", "client.example"),
    )
}

async fn put(channel: Channel) -> Result<(), tonic::Status> {
    KvClient::new(channel)
        .put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn only_clients_with_a_certificate_of_the_ca_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = certificates(dir.path());
    let opts = ServeOptions {
        tls: Some(kvstore::tls::server(server).expect("server TLS")),
        ..ServeOptions::default()
    };
    let node = start_node_with(opts).await;
    let addr = node.client_addr;

    // With a certificate of the CA: served (the one-member node leads).
    let tls = kvstore::tls::client(client.clone()).expect("client TLS");
    let connector = PeerConnector::new(addr, "localhost", tls).expect("connector");
    let mut served = false;
    for _ in 0..100 {
        let channel = endpoint(addr)
            .connect_with_connector(connector.clone())
            .await
            .expect("a TLS connection");
        if put(channel).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a client with a certificate was not served");

    // Plaintext: no handshake, no answer.
    let plaintext = match endpoint(addr).connect().await {
        Err(_) => true,
        Ok(channel) => put(channel).await.is_err(),
    };
    assert!(plaintext, "a plaintext client was served");

    // TLS that trusts the server but presents no certificate.
    let roots = {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from_pem_file(dir.path().join("ca.crt"))
            .expect("CA");
        roots.add(ca).expect("root");
        roots
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let anonymous = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        // TLS 1.3: the server's refusal arrives with the first read.
        Ok(mut tls) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(
                tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
                Ok(Ok(n)) if n > 0
            )
        }
    };
    assert!(anonymous, "a client without a certificate was served");
}
