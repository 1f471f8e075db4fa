//! Which ordinal a peer may speak as: the one its certificate names.
//!
//! A member's peer certificate carries its stable name,
//! `kvstore-N.kvstore-headless.<ns>.svc.<domain>`, as a DNS SAN. A message
//! that says it is `from` ordinal N is accepted only on a connection whose
//! client certificate is valid for N's name. A wildcard certificate (valid
//! for every pod's name) names no ordinal and is refused: with one, any pod
//! could speak as any other.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

use super::incoming::ConnInfo;

/// Why a peer's claim was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The connection carries no client certificate.
    #[error("no client certificate on the connection")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("client certificate unreadable: {0}")]
    Unreadable(String),
    /// The certificate does not name the claimed ordinal.
    #[error("the client certificate is not valid for {claimed}, the member it claims to be")]
    NotThatMember {
        /// The name of the ordinal the peer claimed.
        claimed: String,
    },
    /// The certificate is valid for a name no member has (a wildcard).
    #[error(
        "the client certificate is valid for any member's name ({0}); each member needs its own"
    )]
    Wildcard(String),
}

/// The stable name of each ordinal, as peers' certificates must carry it.
#[derive(Clone)]
pub struct PeerNames(Arc<dyn Fn(u32) -> String + Send + Sync>);

impl std::fmt::Debug for PeerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerNames({})", self.name(0))
    }
}

impl PeerNames {
    /// Names from `name_of`, which gives an ordinal's DNS name (a trailing
    /// dot is ignored).
    pub fn new(name_of: impl Fn(u32) -> String + Send + Sync + 'static) -> Self {
        PeerNames(Arc::new(name_of))
    }

    /// The DNS name of `ordinal`, without a trailing dot.
    pub fn name(&self, ordinal: u32) -> String {
        (self.0)(ordinal).trim_end_matches('.').to_string()
    }

    /// Accepts `claimed` as the speaker on the connection `info`, or says
    /// why not.
    pub fn check(&self, info: Option<&ConnInfo>, claimed: u32) -> Result<(), IdentityError> {
        let der = info
            .and_then(|i| i.client_cert.as_ref())
            .ok_or(IdentityError::NoCertificate)?;
        self.check_cert(der, claimed)
    }

    /// The ordinal the connection's certificate names: the member the peer
    /// is, whatever it claims.
    pub fn member_of(&self, info: Option<&ConnInfo>) -> Result<u32, IdentityError> {
        let der = info
            .and_then(|i| i.client_cert.as_ref())
            .ok_or(IdentityError::NoCertificate)?;
        let cert = webpki::EndEntityCert::try_from(der)
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        // Each number in each name is a candidate ordinal; check_cert then
        // decides, with webpki's own name matching.
        let candidates: Vec<u32> = cert
            .valid_dns_names()
            .flat_map(|name| {
                name.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|digits| digits.parse::<u32>().ok())
                    .filter(|&n| self.name(n) == name)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut refusal = IdentityError::NotThatMember {
            claimed: "any member".into(),
        };
        for n in candidates {
            match self.check_cert(der, n) {
                Ok(()) => return Ok(n),
                Err(e) => refusal = e,
            }
        }
        if self
            .check_cert(der, u32::MAX)
            .is_err_and(|e| matches!(e, IdentityError::Wildcard(_)))
        {
            return Err(IdentityError::Wildcard(self.name(u32::MAX)));
        }
        Err(refusal)
    }

    fn check_cert(&self, der: &CertificateDer<'_>, claimed: u32) -> Result<(), IdentityError> {
        let cert = webpki::EndEntityCert::try_from(der)
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let valid_for = |name: &str| -> bool {
            ServerName::try_from(name.to_string())
                .map(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
                .unwrap_or(false)
        };
        // No StatefulSet reaches this ordinal: a certificate valid for its
        // name is valid for every pod's.
        let nobody = self.name(u32::MAX);
        if valid_for(&nobody) {
            return Err(IdentityError::Wildcard(nobody));
        }
        let name = self.name(claimed);
        if !valid_for(&name) {
            return Err(IdentityError::NotThatMember { claimed: name });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PeerNames {
        PeerNames::new(|n| format!("kvstore-{n}.kvstore-headless.prod.svc.cluster.local."))
    }

    fn cert_for(sans: &[&str]) -> CertificateDer<'static> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(sans).expect("params");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn info(cert: CertificateDer<'static>) -> ConnInfo {
        ConnInfo {
            remote: None,
            client_cert: Some(cert),
        }
    }

    #[test]
    fn a_member_speaks_only_as_its_own_ordinal() {
        let two = info(cert_for(&[
            "kvstore-2.kvstore-headless.prod.svc.cluster.local",
        ]));
        assert_eq!(names().check(Some(&two), 2), Ok(()));
        assert!(matches!(
            names().check(Some(&two), 0),
            Err(IdentityError::NotThatMember { .. })
        ));
    }

    #[test]
    fn a_wildcard_or_missing_certificate_names_no_member() {
        let any = info(cert_for(&["*.kvstore-headless.prod.svc.cluster.local"]));
        assert!(matches!(
            names().check(Some(&any), 1),
            Err(IdentityError::Wildcard(_))
        ));
        assert_eq!(names().check(None, 1), Err(IdentityError::NoCertificate));
        let plain = ConnInfo::default();
        assert_eq!(
            names().check(Some(&plain), 1),
            Err(IdentityError::NoCertificate)
        );
    }

    #[test]
    fn the_certificate_names_the_member() {
        let two = info(cert_for(&[
            "kvstore-2.kvstore-headless.prod.svc",
            "kvstore-2.kvstore-headless.prod.svc.cluster.local",
        ]));
        assert_eq!(names().member_of(Some(&two)), Ok(2));
        let any = info(cert_for(&["*.kvstore-headless.prod.svc.cluster.local"]));
        assert!(matches!(
            names().member_of(Some(&any)),
            Err(IdentityError::Wildcard(_))
        ));
        let stranger = info(cert_for(&["client.example.com"]));
        assert!(names().member_of(Some(&stranger)).is_err());
        assert_eq!(names().member_of(None), Err(IdentityError::NoCertificate));
    }

    #[test]
    fn another_namespace_is_another_member() {
        let other = info(cert_for(&[
            "kvstore-1.kvstore-headless.staging.svc.cluster.local",
        ]));
        assert!(names().check(Some(&other), 1).is_err());
    }
}
