//! Finding a whole cluster from the few endpoints given: every node's
//! status names its peers and the client address it resolves each to, so
//! one endpoint that answers leads to the others (`kvctl status`,
//! `kvctl top`).

use kvstore_proto::kv::StatusResponse;

use crate::TlsOptions;

/// A peer some node reports that was not asked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnseenPeer {
    /// Its client address, as the reporting node resolved it.
    pub client_address: String,
    /// Its stable DNS name, which its certificate carries.
    pub dns_name: String,
}

/// The peers that `statuses` report and that are neither among the nodes
/// that answered (by name) nor at an address in `asked`; each address
/// once, in the order first reported. A peer whose address has not
/// resolved yet is left out: there is nothing to ask.
pub fn unseen_peers<'a>(
    statuses: impl IntoIterator<Item = &'a StatusResponse> + Clone,
    asked: &[String],
) -> Vec<UnseenPeer> {
    let answered: Vec<&str> = statuses
        .clone()
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut unseen: Vec<UnseenPeer> = Vec::new();
    for p in statuses.into_iter().flat_map(|s| &s.peers) {
        if !answered.contains(&p.name.as_str())
            && !p.client_address.is_empty()
            && !asked.contains(&p.client_address)
            && !unseen.iter().any(|u| u.client_address == p.client_address)
        {
            unseen.push(UnseenPeer {
                client_address: p.client_address.clone(),
                dns_name: p.dns_name.clone(),
            });
        }
    }
    unseen
}

/// The TLS for a peer found through [`unseen_peers`]: it is reached by the
/// address a node reports, which no certificate need name, so its
/// certificate is checked for its stable DNS name instead (what the pods'
/// certificates carry).
pub fn tls_for_peer(tls: &TlsOptions, dns_name: &str) -> TlsOptions {
    let name = dns_name.trim_end_matches('.');
    TlsOptions {
        server_name: (!name.is_empty())
            .then(|| name.to_string())
            .or_else(|| tls.server_name.clone()),
        ..tls.clone()
    }
}
