//! Certificates for `kvstore local --tls`, made with rcgen: one CA per run
//! of the supervisor, and per pod, as cert-manager would issue them in a
//! cluster, a peer certificate naming the pod's stable DNS name and a
//! client-port certificate naming that name, the pod's address and
//! `localhost`. kvctl gets a client certificate of the same CA.
//!
//! Files, in the TLS dir: `ca.crt`, `client.crt`/`.key`, and per pod
//! `<pod>-peer.crt`/`.key` and `<pod>-server.crt`/`.key`. A pod's files are
//! issued again each time it is started, so a pod added by a scale gets
//! its own.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The box's CA, in memory (its key is never written out).
pub struct BoxCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("TLS for the box: {what}: {e}")
}

impl BoxCa {
    /// Makes a new CA, writes `ca.crt` and kvctl's client pair into `dir`.
    pub fn create(dir: &Path) -> Result<BoxCa, String> {
        fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))?;
        let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kvstore cluster-in-a-box CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(|e| err("CA", e))?;
        write(&dir.join("ca.crt"), &cert.pem())?;
        let ca = BoxCa {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        };
        ca.issue(
            "client",
            &[SanType::DnsName(
                "kvctl".try_into().map_err(|e| err("name", e))?,
            )],
        )?;
        Ok(ca)
    }

    /// Issues the peer and client-port pairs of pod `pod`, whose stable
    /// DNS name is `dns_name` and whose address is `ip`.
    pub fn issue_pod(&self, pod: &str, dns_name: &str, ip: IpAddr) -> Result<(), String> {
        let name = dns_name.trim_end_matches('.');
        let dns = |n: &str| {
            n.to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| err("name", e))
        };
        self.issue(&format!("{pod}-peer"), &[dns(name)?])?;
        self.issue(
            &format!("{pod}-server"),
            &[dns(name)?, dns("localhost")?, SanType::IpAddress(ip)],
        )
    }

    /// Writes `<file>.crt` and `<file>.key` for `sans`, signed by the CA.
    fn issue(&self, file: &str, sans: &[SanType]) -> Result<(), String> {
        let key = KeyPair::generate().map_err(|e| err("key", e))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(file, e))?;
        write(&self.dir.join(format!("{file}.key")), &key.serialize_pem())?;
        write(&self.dir.join(format!("{file}.crt")), &cert.pem())
    }

    /// The flags that give `kvstore serve` its pod's files (`{pod}` is the
    /// pod's name, see `LocalConfig::serve_args`).
    pub fn serve_args(dir: &Path) -> Vec<String> {
        let path = |f: &str| dir.join(f).display().to_string();
        [
            ("--peer-tls-cert", path("{pod}-peer.crt")),
            ("--peer-tls-key", path("{pod}-peer.key")),
            ("--peer-tls-ca", path("ca.crt")),
            ("--tls-cert", path("{pod}-server.crt")),
            ("--tls-key", path("{pod}-server.key")),
            ("--tls-client-ca", path("ca.crt")),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

/// Writes `contents` to `path` by a rename, so that a pod reading it sees
/// the old file or the new one, never half of one.
fn write(path: &Path, contents: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(|e| err(&tmp.display().to_string(), e))?;
    #[cfg(unix)]
    if path.extension().is_some_and(|e| e == "key") {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600));
    }
    fs::rename(&tmp, path).map_err(|e| err(&path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_a_peer_and_a_server_pair_of_the_box_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = BoxCa::create(dir.path()).expect("CA");
        ca.issue_pod(
            "kvstore-1",
            "kvstore-1.kvstore-headless.default.svc.cluster.local.",
            "127.0.0.11".parse().expect("ip"),
        )
        .expect("pod");
        for f in [
            "ca.crt",
            "client.crt",
            "client.key",
            "kvstore-1-peer.crt",
            "kvstore-1-peer.key",
            "kvstore-1-server.crt",
            "kvstore-1-server.key",
        ] {
            let text = fs::read_to_string(dir.path().join(f)).expect(f);
            assert!(text.starts_with("-----BEGIN"), "{f} is PEM");
        }
        let args = BoxCa::serve_args(dir.path());
        assert!(args.iter().any(|a| a.ends_with("{pod}-peer.crt")));
        assert_eq!(args.len(), 12);
    }
}
