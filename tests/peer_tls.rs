//! The peer port with mutual TLS: a cluster whose members each hold their
//! own certificate works, and nobody else gets a word in: not a plaintext
//! client, not a certificate of another CA, not a member speaking as
//! another. A certificate rotated on disk is served at the next connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvstore::proto::peer::peer_client::PeerClient;
use kvstore::proto::peer::raft_message::Body;
use kvstore::proto::peer::{Envelope, Heartbeat, RaftMessage, TransferRequest};
use kvstore::tls::connector::PeerConnector;
use kvstore::tls::TlsFiles;
use kvstore_testkit::box_cluster::BoxCluster;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Channel, Endpoint};

/// The stable name of pod `n` in the box.
fn pod_name(n: u32) -> String {
    format!("kvstore-{n}.kvstore-headless.default.svc.cluster.local")
}

/// A CA that signs certificates into a directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("CA").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `dir/<file>.crt` and `.key` for `names`, and `dir/ca.crt`.
    fn issue(&self, dir: &Path, file: &str, names: &[String]) -> TlsFiles {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.to_vec()).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = TlsFiles {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
            ca: Some(dir.join("ca.crt")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        std::fs::write(dir.join("ca.crt"), &self.pem).expect("write CA");
        files
    }
}

fn peer_args(certs: &Path) -> Vec<String> {
    let path = |f: &str| certs.join(f).display().to_string();
    vec![
        "--peer-tls-cert".into(),
        path("{pod}.crt"),
        "--peer-tls-key".into(),
        path("{pod}.key"),
        "--peer-tls-ca".into(),
        path("ca.crt"),
    ]
}

/// A 3-pod box whose pods hold certificates of a new CA for their own
/// names (in the returned directory), with the peer port in mutual TLS.
fn mtls_box() -> (tempfile::TempDir, Ca, BoxCluster) {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    for n in 0..3 {
        ca.issue(certs.path(), &format!("kvstore-{n}"), &[pod_name(n)]);
    }
    let args = peer_args(certs.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = BoxCluster::start(3, &args, Duration::from_millis(500));
    (certs, ca, b)
}

async fn plaintext(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A TLS channel to the member at `addr` named `name`, presenting `files`.
async fn with_cert(
    addr: SocketAddr,
    name: &str,
    files: &TlsFiles,
) -> Result<Channel, tonic::transport::Error> {
    let tls = kvstore::tls::client(files.clone()).expect("client TLS");
    let connector = PeerConnector::new(addr, name, tls).expect("connector");
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
}

/// A heartbeat that says it comes from `from`, in a term far ahead.
fn forged_heartbeat(from: u32, to: u32) -> Envelope {
    Envelope {
        cluster_id: 0,
        messages: vec![RaftMessage {
            from,
            to,
            term: 1_000_000,
            body: Some(Body::Heartbeat(Heartbeat {
                commit: 0,
                read_round: 0,
                leader_commit: 0,
            })),
        }],
    }
}

#[test]
fn only_members_speak_and_each_only_as_itself() {
    let (certs, _ca, b) = mtls_box();
    // The members reach each other over mTLS: a leader, and a write that
    // a majority acknowledged.
    let (_, term) = b.wait("a leader over mTLS", Duration::from_secs(60), |b| {
        b.leader()
    });
    let mut client = b.client();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), client.put("over", "mtls"))
            .await
            .expect("in time")
            .expect("a write replicated over mTLS");
    });
    let peer_addr: SocketAddr = b.sup().state().pods[1].peer.parse().expect("peer address");

    rt.block_on(async {
        // A plaintext client: no handshake, no call.
        let refused = match plaintext(peer_addr).await {
            Err(_) => true,
            Ok(channel) => PeerClient::new(channel)
                .transfer_leadership(TransferRequest { to: 1 })
                .await
                .is_err(),
        };
        assert!(refused, "a plaintext peer was served");

        // A certificate of another CA, with a member's name.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let stranger = Ca::new().issue(other_dir.path(), "kvstore-0", &[pod_name(0)]);
        // It trusts our CA (to get as far as its own certificate).
        std::fs::copy(certs.path().join("ca.crt"), other_dir.path().join("ca.crt"))
            .expect("copy CA");
        let refused = match with_cert(peer_addr, &pod_name(1), &stranger).await {
            Err(_) => true,
            Ok(channel) => PeerClient::new(channel)
                .transfer_leadership(TransferRequest { to: 1 })
                .await
                .is_err(),
        };
        assert!(refused, "a certificate of another CA was accepted");

        // kvstore-2's own certificate, claiming to be kvstore-0.
        let two = TlsFiles {
            cert: certs.path().join("kvstore-2.crt"),
            key: certs.path().join("kvstore-2.key"),
            ca: Some(certs.path().join("ca.crt")),
        };
        let channel = with_cert(peer_addr, &pod_name(1), &two)
            .await
            .expect("kvstore-2 connects");
        let answer = PeerClient::new(channel)
            .stream(futures::stream::iter(vec![forged_heartbeat(0, 1)]))
            .await;
        let status = answer.expect_err("a message claiming another member is refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    });
    // The forged term went nowhere.
    let status = b.wait("kvstore-1's status", Duration::from_secs(10), |b| {
        b.status(1)
    });
    assert!(
        status.term < 1_000_000,
        "the forged heartbeat moved the term to {}",
        status.term
    );
    assert!(status.term <= term + 2, "term {} after {term}", status.term);
    assert!(
        b.log(1).contains("refusing a peer message"),
        "the refusal is logged"
    );
}

/// The DER of the certificate the member at `addr` serves now.
async fn served_cert(addr: SocketAddr, name: &str, files: &TlsFiles) -> Vec<u8> {
    let config = kvstore::tls::client_config(files).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("handshake");
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .to_vec()
}

fn der_of(pem_file: &PathBuf) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem_file)
        .expect("PEM")
        .to_vec()
}

#[test]
fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let (certs, ca, b) = mtls_box();
    b.wait("a leader", Duration::from_secs(60), |b| b.leader());
    let peer_addr: SocketAddr = b.sup().state().pods[1].peer.parse().expect("peer address");
    let pid = b.sup().state().pods[1].pid;
    let zero = TlsFiles {
        cert: certs.path().join("kvstore-0.crt"),
        key: certs.path().join("kvstore-0.key"),
        ca: Some(certs.path().join("ca.crt")),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let before = rt.block_on(served_cert(peer_addr, &pod_name(1), &zero));
    assert_eq!(before, der_of(&certs.path().join("kvstore-1.crt")));

    // cert-manager renews: a new key and certificate replace the files.
    // (Written aside and renamed, as a Secret volume's update is atomic.)
    let fresh = tempfile::tempdir_in(certs.path()).expect("tempdir");
    let renewed = ca.issue(fresh.path(), "kvstore-1", &[pod_name(1)]);
    // Modification times must differ from the first files' on coarse clocks.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&renewed.key, certs.path().join("kvstore-1.key")).expect("rename key");
    std::fs::rename(&renewed.cert, certs.path().join("kvstore-1.crt")).expect("rename cert");
    let after = rt.block_on(served_cert(peer_addr, &pod_name(1), &zero));
    assert_ne!(after, before, "the renewed certificate is served");
    assert_eq!(after, der_of(&certs.path().join("kvstore-1.crt")));
    assert_eq!(b.sup().state().pods[1].pid, pid, "without a restart");
    // And the members still reach kvstore-1 with it.
    let mut client = b.client();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), client.put("after", "rotation"))
            .await
            .expect("in time")
            .expect("a write after the rotation");
    });
}
