//! Tests of the Kubernetes replica source against a local HTTPS server.

use super::*;

use std::convert::Infallible;
use std::sync::Mutex;

use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const PATH: &str = "/apis/apps/v1/namespaces/kvstore/statefulsets/kvstore";

/// What the stand-in answers: the token it accepts, and the status and
/// body it sends to a request that carries that token.
struct Answer {
    token: String,
    status: StatusCode,
    body: String,
}

struct ApiServer {
    base: String,
    answer: Arc<Mutex<Answer>>,
    /// PEM of the server's self-signed certificate: the CA to trust.
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(answer: &Mutex<Answer>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = answer.lock().expect("answer lock");
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    let authorized = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", answer.token).as_str());
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            status_json(401, "Unauthorized", "Unauthorized"),
        );
    }
    if request.method() != http::Method::GET || request.uri().path() != PATH {
        return reply(
            StatusCode::NOT_FOUND,
            status_json(404, "NotFound", "not found"),
        );
    }
    reply(answer.status, answer.body.clone())
}

/// Starts the stand-in API server on 127.0.0.1, port 0.
async fn start_api_server(answer: Answer) -> ApiServer {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let key = PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let answer = Arc::new(Mutex::new(answer));
    let shared = answer.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = shared.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(&answer, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    ApiServer {
        base: format!("https://{addr}"),
        answer,
        ca_pem: cert.pem(),
        task,
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": "kvstore", "group": "apps", "kind": "statefulsets"},
        "code": code,
    })
    .to_string()
}

/// A StatefulSet in the middle of `kubectl scale --replicas=5`:
/// spec.replicas already 5, status still 3 pods.
fn statefulset_json(spec_replicas: u32) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "kvstore",
            "namespace": "kvstore",
            "uid": "0b8a7f0e-4c1e-4a53-9f51-3d0c2b7f9e11",
            "resourceVersion": "184467",
            "generation": 4,
            "creationTimestamp": "2025-11-20T09:12:44Z",
            "labels": {
                "app.kubernetes.io/component": "server",
                "app.kubernetes.io/instance": "kvstore",
                "app.kubernetes.io/managed-by": "kustomize",
                "app.kubernetes.io/name": "kvstore",
                "app.kubernetes.io/part-of": "kvstore"
            }
        },
        "spec": {
            "replicas": spec_replicas,
            "selector": {"matchLabels": {
                "app.kubernetes.io/instance": "kvstore",
                "app.kubernetes.io/name": "kvstore"
            }},
            "serviceName": "kvstore-headless",
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "minReadySeconds": 10,
            "revisionHistoryLimit": 5,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain"
            },
            "template": {
                "metadata": {"labels": {
                    "app.kubernetes.io/component": "server",
                    "app.kubernetes.io/instance": "kvstore",
                    "app.kubernetes.io/name": "kvstore"
                }},
                "spec": {
                    "serviceAccountName": "kvstore",
                    "automountServiceAccountToken": true,
                    "terminationGracePeriodSeconds": 45,
                    "containers": [{
                        "name": "kvstore",
                        "image": "kvstore:dev",
                        "env": [
                            {"name": "KVSTORE_REPLICAS", "value": "3"},
                            {"name": "KVSTORE_REPLICAS_SOURCE", "value": "kubernetes"}
                        ],
                        "ports": [
                            {"name": "grpc", "containerPort": 7379, "protocol": "TCP"},
                            {"name": "peer", "containerPort": 7380, "protocol": "TCP"}
                        ]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeMode": "Filesystem"
                }
            }]
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "readyReplicas": 3,
            "currentReplicas": 3,
            "updatedReplicas": 3,
            "availableReplicas": 3,
            "currentRevision": "kvstore-6d5f8c9b7d",
            "updateRevision": "kvstore-6d5f8c9b7d",
            "collisionCount": 0
        }
    })
    .to_string()
}

/// A target at `server`, trusting `ca_pem`, with `token` in its file.
fn target_for(
    dir: &tempfile::TempDir,
    server: &ApiServer,
    ca_pem: &str,
    token: &str,
) -> KubernetesTarget {
    let ca_path = dir.path().join("ca.crt");
    let token_path = dir.path().join("token");
    std::fs::write(&ca_path, ca_pem).expect("write CA");
    std::fs::write(&token_path, token).expect("write token");
    KubernetesTarget::new(&server.base, ca_path, token_path, "kvstore", "kvstore")
}

/// spec.replicas is read (not status.replicas), with the token from
/// its file, and a rotated token is picked up on the next read.
#[tokio::test]
async fn reads_spec_replicas_and_follows_a_rotated_token() {
    let server = start_api_server(Answer {
        token: "token-1".to_string(),
        status: StatusCode::OK,
        body: statefulset_json(5),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let target = target_for(&dir, &server, &server.ca_pem, "token-1\n");
    assert_eq!(target.statefulset_replicas().await, Ok(5));

    // The kubelet rewrites the token file; the API server stops taking
    // the old one.
    server.answer.lock().expect("answer lock").token = "token-2".to_string();
    let err = target.statefulset_replicas().await.expect_err("old token");
    assert!(err.contains("401") && err.contains(PATH), "{err}");
    std::fs::write(&target.token_path, "token-2").expect("rotate token");
    assert_eq!(target.statefulset_replicas().await, Ok(5));

    // `kubectl scale --replicas=3` is seen on the next read.
    server.answer.lock().expect("answer lock").body = statefulset_json(3);
    assert_eq!(target.statefulset_replicas().await, Ok(3));
}

/// A 403 names the URL, the status and the Role that would allow it.
#[tokio::test]
async fn forbidden_names_the_role_to_fix() {
    let server = start_api_server(Answer {
        token: "t".to_string(),
        status: StatusCode::FORBIDDEN,
        body: status_json(
            403,
            "Forbidden",
            "statefulsets.apps \"kvstore\" is forbidden: User \
             \"system:serviceaccount:kvstore:kvstore\" cannot get resource \
             \"statefulsets\" in API group \"apps\" in the namespace \"kvstore\"",
        ),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let target = target_for(&dir, &server, &server.ca_pem, "t");
    let err = target.statefulset_replicas().await.expect_err("forbidden");
    for needle in [
        "403",
        &format!("{}{PATH}", server.base),
        "the Role must allow `get` on statefulsets",
        "named kvstore",
        "system:serviceaccount:kvstore:kvstore",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

/// A server whose certificate the configured CA did not sign is
/// refused, and the error points at the CA file.
#[tokio::test]
async fn a_wrong_ca_is_refused() {
    let server = start_api_server(Answer {
        token: "t".to_string(),
        status: StatusCode::OK,
        body: statefulset_json(3),
    })
    .await;
    let other =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let target = target_for(&dir, &server, &other.cert.pem(), "t");
    let err = target.statefulset_replicas().await.expect_err("wrong CA");
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains(&target.ca_path.display().to_string()), "{err}");
}

/// Missing files and a silent server give errors, never a hang or a
/// panic; bodies that are not a StatefulSet are not taken for a count.
#[tokio::test]
async fn bad_inputs_are_errors() {
    let server = start_api_server(Answer {
        token: "t".to_string(),
        status: StatusCode::OK,
        body: serde_json::json!({"kind": "StatefulSet", "spec": {}}).to_string(),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let target = target_for(&dir, &server, &server.ca_pem, "t");
    let err = target
        .statefulset_replicas()
        .await
        .expect_err("no replicas");
    assert!(err.contains("no spec.replicas"), "{err}");

    server.answer.lock().expect("answer lock").body = status_json(200, "", "");
    let err = target.statefulset_replicas().await.expect_err("a Status");
    assert!(err.contains("not a StatefulSet"), "{err}");

    let mut no_token = target.clone();
    no_token.token_path = dir.path().join("absent");
    let err = no_token.statefulset_replicas().await.expect_err("no token");
    assert!(err.contains("absent"), "{err}");

    let mut bad_name = target.clone();
    bad_name.statefulset = "../secrets".to_string();
    assert!(bad_name.statefulset_replicas().await.is_err());

    // Accepts TCP and never answers: the timeout ends the read.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut hung = target.clone();
    hung.api_base = Some(format!("https://{}", silent.local_addr().expect("addr")));
    hung.timeout = Duration::from_millis(300);
    let err = hung.statefulset_replicas().await.expect_err("timeout");
    assert!(err.contains("no answer within"), "{err}");
}
