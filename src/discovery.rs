//! Finding peers by name through DNS, as a StatefulSet behind a headless
//! Service allows.
//!
//! Every peer is addressed by its stable per-pod name, built from a template
//! (by default the Kubernetes form
//! `<set>-<n>.<service>.<namespace>.svc.<cluster-domain>.`) on the peer port.
//! The name is resolved again at every connect and in a background refresh,
//! and the resolver's cache is capped at one second, so a pod rescheduled with
//! a new IP is found within a few seconds. A name that does not resolve (the
//! pod is starting, DNS lags) is retried with capped exponential backoff;
//! that is logged once per change of state and is never fatal.
//!
//! The SRV records of the headless Service's `peer` port list the pods that
//! exist right now; the status view shows which peers are listed.
//!
//! In a pod the resolver reads /etc/resolv.conf (search list and ndots as
//! Kubernetes writes them); `--dns-server` points it at another server, such
//! as the embedded one of `kvstore local` (`kvstore_box::dns`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::PodName;
use crate::server::{DirectoryEntry, PeerDirectory};
use kvstore_client::backoff::Backoff;

/// Errors of discovery set-up. Lookups themselves never fail fatally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The name template is malformed.
    #[error("malformed --peer-name-template {template:?}: {reason}")]
    BadTemplate {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// `--dns-server` does not name a reachable address.
    #[error("cannot resolve --dns-server {0:?}: {1}")]
    BadDnsServer(String, String),
    /// The system resolver configuration cannot be read.
    #[error("cannot read the system DNS configuration (/etc/resolv.conf): {0}; pass --dns-server HOST:PORT")]
    SystemConfig(String),
    /// A replica count of zero.
    #[error("--replicas must be at least 1")]
    NoReplicas,
    /// A lookup failed (not fatal: retried).
    #[error("{name}: {reason}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// Why it failed.
        reason: String,
    },
}

/// The default per-pod name: the Kubernetes headless-Service form.
pub const DEFAULT_TEMPLATE: &str = "{set}-{ordinal}.{service}.{namespace}.svc.{domain}.";

const PLACEHOLDERS: [&str; 5] = ["set", "ordinal", "service", "namespace", "domain"];

/// A validated per-pod name template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    /// Checks that the template has `{ordinal}`, only known placeholders and
    /// balanced braces.
    pub fn parse(template: &str) -> Result<Self, DiscoveryError> {
        let bad = |reason: &str| DiscoveryError::BadTemplate {
            template: template.to_string(),
            reason: reason.to_string(),
        };
        let mut rest = template;
        let mut has_ordinal = false;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(bad("a '}' without its '{'"));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| bad("a '{' without its '}'"))?;
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(bad(&format!(
                    "unknown placeholder {{{name}}}; known: {{set}} {{ordinal}} {{service}} {{namespace}} {{domain}}"
                )));
            }
            has_ordinal |= name == "ordinal";
            rest = &after[close + 1..];
        }
        if !has_ordinal {
            return Err(bad(
                "it must contain {ordinal}, or every peer gets the same name",
            ));
        }
        Ok(NameTemplate(template.to_string()))
    }

    /// The name of pod `ordinal`.
    pub fn render(&self, vars: &NameVars, ordinal: u32) -> String {
        self.0
            .replace("{set}", &vars.set)
            .replace("{ordinal}", &ordinal.to_string())
            .replace("{service}", &vars.service)
            .replace("{namespace}", &vars.namespace)
            .replace("{domain}", &vars.domain)
    }
}

/// What fills a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameVars {
    /// The StatefulSet name.
    pub set: String,
    /// The headless Service.
    pub service: String,
    /// The namespace.
    pub namespace: String,
    /// The cluster domain.
    pub domain: String,
}

/// How discovery is set up.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// This node.
    pub me: PodName,
    /// The number of members.
    pub replicas: u32,
    /// Template variables.
    pub vars: NameVars,
    /// The per-pod name template.
    pub template: NameTemplate,
    /// The port peers listen on for replication.
    pub peer_port: u16,
    /// The name of the Service port whose SRV records list the pods.
    pub srv_port_name: String,
    /// A DNS server to use instead of /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
}

/// Resolves `--dns-server HOST:PORT` (HOST may be a name) once, at start-up.
pub fn parse_dns_server(spec: &str) -> Result<SocketAddr, DiscoveryError> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs = spec
        .to_socket_addrs()
        .map_err(|e| DiscoveryError::BadDnsServer(spec.to_string(), e.to_string()))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| DiscoveryError::BadDnsServer(spec.to_string(), "no address".into()))
}

/// What is known of one peer's name.
#[derive(Clone, Debug)]
struct PeerEntry {
    dns_name: String,
    address: Option<SocketAddr>,
    /// The last lookup error, while lookups fail.
    failing: Option<String>,
}

/// Peer discovery over DNS.
pub struct Discovery {
    cfg: DiscoveryConfig,
    resolver: TokioResolver,
    peers: Mutex<BTreeMap<u32, PeerEntry>>,
    srv: Mutex<(BTreeSet<u32>, Option<String>)>,
}

fn resolver_options(mut opts: ResolverOpts) -> ResolverOpts {
    // A rescheduled pod keeps its name, not its IP: never trust a cached
    // address for more than a second.
    opts.positive_max_ttl = Some(Duration::from_secs(1));
    opts.negative_max_ttl = Some(Duration::from_secs(1));
    opts.cache_size = 64;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts
}

impl Discovery {
    /// Builds the resolver (from /etc/resolv.conf unless `dns_server` is
    /// set). Must run inside a tokio runtime.
    pub fn new(cfg: DiscoveryConfig) -> Result<Arc<Discovery>, DiscoveryError> {
        if cfg.replicas == 0 {
            return Err(DiscoveryError::NoReplicas);
        }
        let provider = TokioRuntimeProvider::default();
        let resolver = match cfg.dns_server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let config = ResolverConfig::from_name_servers(vec![server]);
                TokioResolver::builder_with_config(config, provider)
                    .with_options(resolver_options(ResolverOpts::default()))
                    .build()
            }
            None => {
                let mut builder = TokioResolver::builder(provider)
                    .map_err(|e| DiscoveryError::SystemConfig(e.to_string()))?;
                let opts = resolver_options(builder.options_mut().clone());
                *builder.options_mut() = opts;
                builder.build()
            }
        }
        .map_err(|e| DiscoveryError::SystemConfig(e.to_string()))?;
        let peers = (0..cfg.replicas)
            .filter(|&o| o != cfg.me.ordinal)
            .map(|o| {
                let entry = PeerEntry {
                    dns_name: cfg.template.render(&cfg.vars, o),
                    address: None,
                    failing: None,
                };
                (o, entry)
            })
            .collect();
        Ok(Arc::new(Discovery {
            cfg,
            resolver,
            peers: Mutex::new(peers),
            srv: Mutex::new((BTreeSet::new(), None)),
        }))
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, PeerEntry>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The DNS name of peer `ordinal`.
    pub fn peer_name(&self, ordinal: u32) -> String {
        self.cfg.template.render(&self.cfg.vars, ordinal)
    }

    /// The name whose SRV records list the pods.
    pub fn srv_name(&self) -> String {
        format!(
            "_{}._tcp.{}.{}.svc.{}.",
            self.cfg.srv_port_name,
            self.cfg.vars.service,
            self.cfg.vars.namespace,
            self.cfg.vars.domain.trim_end_matches('.')
        )
    }

    /// Looks peer `ordinal` up now (the cache holds answers for at most a
    /// second) and records the result; logs when its state changes.
    pub async fn resolve(&self, ordinal: u32) -> Result<SocketAddr, DiscoveryError> {
        let name = self.peer_name(ordinal);
        let result = match self.resolver.lookup_ip(name.as_str()).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                // Prefer IPv4, as a dual-stack pod is reached either way.
                let ip = ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied();
                ip.map(|ip| SocketAddr::new(ip, self.cfg.peer_port))
                    .ok_or_else(|| DiscoveryError::Lookup {
                        name: name.clone(),
                        reason: "no address records".into(),
                    })
            }
            Err(e) => Err(DiscoveryError::Lookup {
                name: name.clone(),
                reason: e.to_string(),
            }),
        };
        let mut peers = self.lock_peers();
        // A peer beyond the ones known at start (the StatefulSet scaled up)
        // is recorded at its first lookup.
        let entry = peers.entry(ordinal).or_insert_with(|| PeerEntry {
            dns_name: name.clone(),
            address: None,
            failing: None,
        });
        {
            match &result {
                Ok(addr) => {
                    if entry.address != Some(*addr) || entry.failing.is_some() {
                        match entry.address {
                            Some(old) if old != *addr => {
                                tracing::info!(peer = ordinal, name = %name, %old, new = %addr, "peer moved to a new address")
                            }
                            _ => {
                                tracing::info!(peer = ordinal, name = %name, %addr, "peer resolved")
                            }
                        }
                    }
                    entry.address = Some(*addr);
                    entry.failing = None;
                }
                Err(e) => {
                    let reason = e.to_string();
                    if entry.failing.is_none() {
                        tracing::warn!(peer = ordinal, error = %reason, "peer does not resolve (yet); retrying with backoff");
                    }
                    entry.failing = Some(reason);
                }
            }
        }
        result
    }

    /// Looks up the SRV records of the peer port and records which ordinals
    /// they list.
    pub async fn refresh_srv(&self) -> Result<BTreeSet<u32>, DiscoveryError> {
        let name = self.srv_name();
        let result = match self.resolver.srv_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut ordinals = BTreeSet::new();
                let targets = lookup.answers().iter().filter_map(|r| match &r.data {
                    hickory_proto::rr::RData::SRV(srv) => Some(srv.target.to_string()),
                    _ => None,
                });
                for target in targets {
                    let host = target.split('.').next().unwrap_or_default();
                    if let Ok(n) = PodName::parse(host) {
                        if n.set == self.cfg.me.set {
                            ordinals.insert(n.ordinal);
                        }
                    }
                }
                Ok(ordinals)
            }
            Err(e) => Err(DiscoveryError::Lookup {
                name: name.clone(),
                reason: e.to_string(),
            }),
        };
        let mut srv = self.srv.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(ordinals) => {
                if srv.0 != *ordinals || srv.1.is_some() {
                    tracing::info!(srv = %name, pods = ?ordinals, "pods listed by the headless service");
                }
                srv.0 = ordinals.clone();
                srv.1 = None;
            }
            Err(e) => {
                if srv.1.is_none() {
                    tracing::info!(error = %e, "no SRV records for the peer port (yet)");
                }
                srv.0.clear();
                srv.1 = Some(e.to_string());
            }
        }
        result
    }

    /// Keeps every peer's address and the SRV view fresh in the background:
    /// every second while names resolve, with capped exponential backoff
    /// (jittered) while they do not. The tasks run on `tasks` until `stop`
    /// is cancelled, so that `serve` can wait for them to end.
    pub fn spawn_refresh(self: &Arc<Self>, tasks: &TaskTracker, stop: &CancellationToken) {
        let ordinals: Vec<u32> = self.lock_peers().keys().copied().collect();
        for ordinal in ordinals {
            let me = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
                loop {
                    // A lookup of a pod that is gone can take seconds to
                    // time out: a stop does not wait for it.
                    let resolved = tokio::select! {
                        r = me.resolve(ordinal) => r,
                        _ = stop.cancelled() => return,
                    };
                    let pause = match resolved {
                        Ok(_) => {
                            backoff.reset();
                            Duration::from_secs(1)
                        }
                        Err(_) => backoff.next_delay(),
                    };
                    if sleep_unless_stopped(pause, &stop).await.is_err() {
                        return;
                    }
                }
            });
        }
        let me = self.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = me.refresh_srv() => {}
                    _ = stop.cancelled() => return,
                }
                if sleep_unless_stopped(Duration::from_secs(2), &stop)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// The last known address of peer `ordinal`.
    pub fn last_address(&self, ordinal: u32) -> Option<SocketAddr> {
        self.lock_peers().get(&ordinal).and_then(|e| e.address)
    }
}

impl PeerDirectory for Discovery {
    fn entries(&self) -> Vec<DirectoryEntry> {
        let srv = self.srv.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        self.lock_peers()
            .iter()
            .map(|(&ordinal, e)| DirectoryEntry {
                ordinal,
                dns_name: e.dns_name.trim_end_matches('.').to_string(),
                address: e.address.map(|a| a.to_string()),
                in_srv: srv.contains(&ordinal),
            })
            .collect()
    }

    fn dns_name(&self, ordinal: u32) -> String {
        self.peer_name(ordinal).trim_end_matches('.').to_string()
    }
}

/// Sleeps for `pause`; `Err` if `stop` is cancelled first.
async fn sleep_unless_stopped(pause: Duration, stop: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        _ = tokio::time::sleep(pause) => Ok(()),
        _ = stop.cancelled() => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> NameVars {
        NameVars {
            set: "kvstore".into(),
            service: "kvstore-headless".into(),
            namespace: "prod".into(),
            domain: "cluster.local".into(),
        }
    }

    /// The default template gives the Kubernetes per-pod name.
    #[test]
    fn default_template_is_the_kubernetes_name() {
        let t = NameTemplate::parse(DEFAULT_TEMPLATE).expect("default");
        assert_eq!(
            t.render(&vars(), 2),
            "kvstore-2.kvstore-headless.prod.svc.cluster.local."
        );
        let compose = NameTemplate::parse("{set}-{ordinal}").expect("compose");
        assert_eq!(compose.render(&vars(), 0), "kvstore-0");
    }

    /// Malformed templates are refused, saying why.
    #[test]
    fn malformed_templates_are_refused() {
        for (t, why) in [
            ("{set}.{service}", "{ordinal}"),
            ("{set}-{ordinal", "without its '}'"),
            ("{set}-{ordinal}}", "without its '{'"),
            ("{pod}-{ordinal}", "unknown placeholder"),
        ] {
            let err = NameTemplate::parse(t).expect_err(t).to_string();
            assert!(err.contains(why), "{t}: {err}");
        }
    }
}
