//! `spec.replicas` of the pod's own StatefulSet, from the Kubernetes API.
//!
//! One request, asked again on every read: `GET
//! /apis/apps/v1/namespaces/<ns>/statefulsets/<name>` over HTTPS to the API
//! server, with the pod's service account token as the bearer and the
//! cluster CA as the only trust root. What is read is `spec.replicas`, the
//! count `kubectl scale` sets, never `status.replicas` (the pods that exist
//! now, which dips on every crash, drain and rolling update).
//!
//! Why no Kubernetes client crate: one GET of one object needs neither
//! watches, nor informers, nor kubeconfig parsing, and kube-rs would more
//! than double the dependency tree of the pod image. hyper is already here
//! under tonic; rustls on ring checks the certificate without OpenSSL.
//!
//! Each call re-reads the token (the kubelet rotates projected tokens, about
//! hourly, in place), the CA (rotated by a cluster CA rotation) and, in a
//! pod, the namespace file, so a long-lived pod never holds a stale
//! credential. Each call opens a fresh connection: a read every few seconds
//! does not need keep-alive, and a fresh connection cannot be stuck on an
//! API server replica that went away. The whole exchange (connect, TLS,
//! request, body) is bounded by [`KubernetesTarget::timeout`], 3 s by
//! default, so a hung API server delays the membership controller by at
//! most that, and the controller keeps the last count it read.
//!
//! The RBAC this needs, and nothing more: a Role in the pod's namespace with
//! `apiGroups: ["apps"]`, `resources: ["statefulsets"]`, `verbs: ["get"]`,
//! `resourceNames: [<the StatefulSet>]`, bound to the pod's service account
//! (k8s/base/rbac.yaml).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where a pod's service account credentials are mounted (the kubelet's
/// fixed path for `automountServiceAccountToken: true`).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The default bound on one read: connect, TLS handshake, request and body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A StatefulSet object is a few KiB; anything near this is not one, and
/// reading it whole would only cost memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The StatefulSet to read, and how to reach the API server.
///
/// [`KubernetesTarget::in_cluster`] fills it in from the pod's environment;
/// [`KubernetesTarget::new`] points it anywhere (the tests point it at a
/// local HTTPS server).
#[derive(Clone, Debug)]
pub struct KubernetesTarget {
    /// `https://<host>:<port>` of the API server, without a trailing slash.
    /// `None` in a pod: built from `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, which the kubelet sets in every container,
    /// at each read (so a missing variable is an error of the read, with
    /// the reason, rather than of start-up).
    pub api_base: Option<String>,
    /// PEM file of the CA(s) that sign the API server's certificate; the
    /// only roots trusted.
    pub ca_path: PathBuf,
    /// File holding the bearer token; re-read at every request because
    /// projected service account tokens are rotated in place.
    pub token_path: PathBuf,
    /// The namespace of the StatefulSet. `None` in a pod: read from the
    /// service account's `namespace` file next to the token at each read.
    pub namespace: Option<String>,
    /// The StatefulSet's name.
    pub statefulset: String,
    /// Bound on one whole read.
    pub timeout: Duration,
}

impl KubernetesTarget {
    /// The pod's own StatefulSet, through the in-cluster service account:
    /// the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the CA, token
    /// and namespace from [`SERVICE_ACCOUNT_DIR`].
    pub fn in_cluster(statefulset: &str) -> Self {
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        KubernetesTarget {
            api_base: None,
            ca_path: dir.join("ca.crt"),
            token_path: dir.join("token"),
            namespace: None,
            statefulset: statefulset.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A StatefulSet behind any API server: `api_base` is
    /// `https://<host>:<port>`; the CA and token are files, read at each
    /// request as in a pod.
    pub fn new(
        api_base: impl Into<String>,
        ca_path: impl Into<PathBuf>,
        token_path: impl Into<PathBuf>,
        namespace: impl Into<String>,
        statefulset: impl Into<String>,
    ) -> Self {
        KubernetesTarget {
            api_base: Some(api_base.into().trim_end_matches('/').to_string()),
            ca_path: ca_path.into(),
            token_path: token_path.into(),
            namespace: Some(namespace.into()),
            statefulset: statefulset.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Reads `spec.replicas` of the StatefulSet. The error names the URL,
    /// and the HTTP status when there was one.
    pub async fn statefulset_replicas(&self) -> Result<u32, String> {
        let base = self.api_base()?;
        let namespace = self.namespace().await?;
        check_name("namespace", &namespace)?;
        check_name("StatefulSet name", &self.statefulset)?;
        let path = format!(
            "/apis/apps/v1/namespaces/{namespace}/statefulsets/{}",
            self.statefulset
        );
        let url = format!("{base}{path}");
        let (status, body) = tokio::time::timeout(self.timeout, self.get(&url, &path))
            .await
            .map_err(|_| format!("GET {url}: no answer within {:?}", self.timeout))?
            .map_err(|e| format!("GET {url}: {e}"))?;
        if status != StatusCode::OK {
            return Err(self.explain_status(&url, &namespace, status, &body));
        }
        replicas_of(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    fn api_base(&self) -> Result<String, String> {
        if let Some(base) = &self.api_base {
            return Ok(base.clone());
        }
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!("{name} is not set: not in a pod, or the kubelet did not inject it")
                })
        };
        let host = var("KUBERNETES_SERVICE_HOST")?;
        let port = var("KUBERNETES_SERVICE_PORT")?;
        // An IPv6 service address (single-stack IPv6 or IPv6-first dual
        // stack clusters) must be bracketed in a URL.
        if host.contains(':') {
            Ok(format!("https://[{host}]:{port}"))
        } else {
            Ok(format!("https://{host}:{port}"))
        }
    }

    async fn namespace(&self) -> Result<String, String> {
        if let Some(ns) = &self.namespace {
            return Ok(ns.clone());
        }
        let path = Path::new(SERVICE_ACCOUNT_DIR).join("namespace");
        let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
            format!(
                "reading the pod's namespace from {}: {e} \
                 (is automountServiceAccountToken false?)",
                path.display()
            )
        })?;
        Ok(text.trim().to_string())
    }

    /// One GET on a fresh TLS connection; returns the status and the body.
    async fn get(&self, url: &str, path: &str) -> Result<(StatusCode, Bytes), String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err("the API server must be reached over https".to_string());
        }
        let authority = uri
            .authority()
            .ok_or_else(|| "the URL has no host".to_string())?
            .clone();
        // Uri keeps the brackets of an IPv6 literal; neither a socket
        // address nor a certificate's IP SAN has them.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(443);

        let token = self.token().await?;
        let tls = self.tls_connector().await?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| format!("{host:?} is not a name a certificate can carry: {e}"))?;

        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let stream = tls.connect(server_name, tcp).await.map_err(|e| {
            format!(
                "TLS handshake failed (does {} hold the CA that signed the API server's \
                 certificate?): {e}",
                self.ca_path.display()
            )
        })?;

        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let request = Request::get(path)
            // The connection-level API sends no Host header of its own.
            .header(http::header::HOST, authority.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("kvstore/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("sending the request: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the response body ({status}): {e}"))?
                .to_bytes();
            // Dropping the sender here lets `connection` finish once idle,
            // so the join below ends and no task outlives the read.
            drop(sender);
            Ok::<_, String>((status, body))
        };
        // The connection is driven here, not in a spawned task: nothing
        // keeps running after the timeout above drops this future.
        let (result, _closed) = tokio::join!(exchange, connection);
        result
    }

    async fn token(&self) -> Result<String, String> {
        let text = tokio::fs::read_to_string(&self.token_path)
            .await
            .map_err(|e| {
                format!(
                    "reading the service account token {}: {e} \
                     (is automountServiceAccountToken false?)",
                    self.token_path.display()
                )
            })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!(
                "the service account token {} is empty",
                self.token_path.display()
            ));
        }
        Ok(token.to_string())
    }

    async fn tls_connector(&self) -> Result<TlsConnector, String> {
        let ca = self.ca_path.display();
        let pem = tokio::fs::read(&self.ca_path)
            .await
            .map_err(|e| format!("reading the cluster CA {ca}: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("the cluster CA {ca} is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate in {ca} is not usable as a CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("the cluster CA {ca} holds no certificate"));
        }
        // The provider is named here rather than taken from the process
        // default: rustls panics in `builder()` when it cannot tell which
        // provider to use, and this build compiles in only ring.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    fn explain_status(
        &self,
        url: &str,
        namespace: &str,
        status: StatusCode,
        body: &[u8],
    ) -> String {
        let name = &self.statefulset;
        let detail = match status_message(body) {
            Some(message) => format!(" ({message})"),
            None => String::new(),
        };
        match status {
            StatusCode::UNAUTHORIZED => format!(
                "GET {url}: HTTP {status}: the API server did not accept the token in {}; \
                 it expired or belongs to another cluster{detail}",
                self.token_path.display()
            ),
            StatusCode::FORBIDDEN => format!(
                "GET {url}: HTTP {status}: the pod's service account may not read the \
                 StatefulSet; the Role must allow `get` on statefulsets (apiGroup apps) \
                 named {name} in namespace {namespace}, and a RoleBinding must grant it to \
                 the pod's service account (k8s/base/rbac.yaml){detail}"
            ),
            StatusCode::NOT_FOUND => format!(
                "GET {url}: HTTP {status}: no StatefulSet {name} in namespace {namespace} \
                 (the set's name is taken from the pod name){detail}"
            ),
            _ => format!("GET {url}: HTTP {status}{detail}"),
        }
    }
}

/// Namespaces and object names are DNS labels or subdomains; anything else
/// would change the path of the request.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {name:?} is not a Kubernetes object name"))
    }
}

/// `spec.replicas` of a StatefulSet object.
fn replicas_of(body: &[u8]) -> Result<u32, String> {
    let object: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if let Some(kind) = object.get("kind").and_then(|k| k.as_str()) {
        if kind != "StatefulSet" {
            return Err(format!("the answer is a {kind}, not a StatefulSet"));
        }
    }
    // The API server defaults spec.replicas on every write, so a missing
    // one is not "1" but something other than a StatefulSet from apps/v1:
    // better keep the last count than act on a guess.
    let replicas = object
        .pointer("/spec/replicas")
        .ok_or_else(|| "the StatefulSet has no spec.replicas".to_string())?;
    replicas
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("spec.replicas is {replicas}, not a count"))
}

/// The `message` of a `Status` object, which the API server sends with
/// every error; truncated, since it ends up in a log line.
fn status_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("message")?.as_str()?;
    Some(message.chars().take(300).collect())
}

/// The real Kubernetes API server cannot run on the machine that runs these
/// tests, so they stand one in: a local HTTPS server on 127.0.0.1 (port 0)
/// with a certificate made here by rcgen, speaking the same endpoint, the
/// same bearer-token check and the same JSON (a StatefulSet object as
/// `kubectl get statefulset kvstore -o json` prints it, and the `Status`
/// object the API server sends with a 403).
#[cfg(test)]
#[path = "kubernetes_tests.rs"]
mod tests;
