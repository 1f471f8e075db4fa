//! An embedded authoritative DNS server that answers exactly what CoreDNS
//! answers for a Kubernetes headless Service, so that the cluster in a box
//! (and the tests) discover peers through the same code path as pods do.
//!
//! For the StatefulSet `<set>` behind the headless Service `<service>` in
//! `<namespace>`, with cluster domain `<domain>`:
//!
//! | name | type | answer |
//! |---|---|---|
//! | `<set>-<n>.<service>.<namespace>.svc.<domain>` | A/AAAA | pod n's address |
//! | `<service>.<namespace>.svc.<domain>` | A/AAAA | every pod's address |
//! | `_<port>._tcp.<service>.<namespace>.svc.<domain>` | SRV | one record per pod: priority 0, weight 100/N, the port, the pod's name (with its A record as additional) |
//!
//! A name in the zone that does not exist is NXDOMAIN; a name that exists
//! without records of the asked type is an empty NOERROR answer; a name
//! outside the cluster domain is REFUSED. Records have a short TTL (5 s, as
//! CoreDNS's default) and change while the server runs: a pod that "moves"
//! gets a new address, a pod that is gone disappears.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

/// The records of one headless Service and its StatefulSet's pods.
#[derive(Clone, Debug)]
pub struct HeadlessService {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// The namespace.
    pub namespace: String,
    /// The headless Service's name.
    pub service: String,
    /// The StatefulSet's name.
    pub set: String,
    /// The Service's named ports: (name, port).
    pub ports: Vec<(String, u16)>,
    /// Pods that exist, by ordinal, with their addresses.
    pub pods: BTreeMap<u32, IpAddr>,
    /// TTL of every record, in seconds.
    pub ttl: u32,
}

/// What a query gets.
#[derive(Debug, PartialEq)]
enum Answer {
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    NxDomain,
    Refused,
}

fn fqdn(s: &str) -> String {
    let s = s.trim_end_matches('.').to_ascii_lowercase();
    format!("{s}.")
}

fn address_record(name: &str, ip: IpAddr, ttl: u32) -> Option<Record> {
    let name = Name::from_ascii(name).ok()?;
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Some(Record::from_rdata(name, ttl, rdata))
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

impl HeadlessService {
    /// `<service>.<namespace>.svc.<domain>.`
    pub fn service_name(&self) -> String {
        fqdn(&format!(
            "{}.{}.svc.{}",
            self.service, self.namespace, self.domain
        ))
    }

    /// `<set>-<n>.<service>.<namespace>.svc.<domain>.`
    pub fn pod_name(&self, ordinal: u32) -> String {
        fqdn(&format!("{}-{}.{}", self.set, ordinal, self.service_name()))
    }

    /// `_<port>._tcp.<service>.<namespace>.svc.<domain>.`
    pub fn srv_name(&self, port_name: &str) -> String {
        fqdn(&format!("_{}._tcp.{}", port_name, self.service_name()))
    }

    fn answer(&self, qname: &str, qtype: RecordType) -> Answer {
        let qname = fqdn(qname);
        if !qname.ends_with(&fqdn(&self.domain)) {
            return Answer::Refused;
        }
        let empty = Answer::Records {
            answers: Vec::new(),
            additionals: Vec::new(),
        };
        for (&ordinal, &ip) in &self.pods {
            let name = self.pod_name(ordinal);
            if qname == name {
                if !wants(qtype, ip) {
                    return empty;
                }
                return Answer::Records {
                    answers: address_record(&name, ip, self.ttl).into_iter().collect(),
                    additionals: Vec::new(),
                };
            }
        }
        if qname == self.service_name() {
            let answers = self
                .pods
                .values()
                .filter(|ip| wants(qtype, **ip))
                .filter_map(|ip| address_record(&qname, *ip, self.ttl))
                .collect();
            return Answer::Records {
                answers,
                additionals: Vec::new(),
            };
        }
        for (port_name, port) in &self.ports {
            if qname != self.srv_name(port_name) {
                continue;
            }
            if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
                return empty;
            }
            let weight = (100 / self.pods.len().max(1)) as u16;
            let mut answers = Vec::new();
            let mut additionals = Vec::new();
            for (&ordinal, &ip) in &self.pods {
                let target = self.pod_name(ordinal);
                let Ok(target_name) = Name::from_ascii(&target) else {
                    continue;
                };
                if let Ok(owner) = Name::from_ascii(&qname) {
                    let srv = SRV::new(0, weight, *port, target_name);
                    answers.push(Record::from_rdata(owner, self.ttl, RData::SRV(srv)));
                }
                additionals.extend(address_record(&target, ip, self.ttl));
            }
            return Answer::Records {
                answers,
                additionals,
            };
        }
        Answer::NxDomain
    }
}

/// Answers queries from the shared zone.
struct ZoneHandler {
    zone: Arc<RwLock<HeadlessService>>,
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let answer = match request.request_info() {
            Ok(info) => {
                let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
                zone.answer(&info.query.name().to_string(), info.query.query_type())
            }
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                Answer::Records {
                    answers: Vec::new(),
                    additionals: Vec::new(),
                }
            }
        };
        let sent = match &answer {
            Answer::Records {
                answers,
                additionals,
            } => {
                let response = builder.build(
                    metadata,
                    answers.iter(),
                    [].iter(),
                    [].iter(),
                    additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Answer::Refused => {
                metadata.response_code = ResponseCode::Refused;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        sent.unwrap_or_else(|_| {
            let mut failed = Metadata::response_from_request(&request.metadata);
            failed.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata: failed,
                counts: HeaderCounts::default(),
            }
            .into()
        })
    }
}

/// A running embedded DNS server (UDP and TCP on one port).
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<RwLock<HeadlessService>>,
    server: Server<ZoneHandler>,
}

impl DnsServer {
    /// Serves `zone` on `bind` (port 0 picks a port free for both UDP and
    /// TCP).
    pub async fn start(bind: SocketAddr, zone: HeadlessService) -> std::io::Result<DnsServer> {
        let zone = Arc::new(RwLock::new(zone));
        let mut last_err = None;
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind(bind).await?;
            let addr = udp.local_addr()?;
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let mut server = Server::new(ZoneHandler { zone: zone.clone() });
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 64);
                    return Ok(DnsServer { addr, zone, server });
                }
                Err(e) if bind.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or moves) pod `ordinal` to `ip`.
    pub fn set_pod(&self, ordinal: u32, ip: IpAddr) {
        self.zone
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .insert(ordinal, ip);
    }

    /// Removes pod `ordinal`'s records (the StatefulSet deleted it).
    pub fn remove_pod(&self, ordinal: u32) {
        self.zone
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .remove(&ordinal);
    }

    /// Stops serving.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> HeadlessService {
        HeadlessService {
            domain: "cluster.local".into(),
            namespace: "default".into(),
            service: "kvstore-headless".into(),
            set: "kvstore".into(),
            ports: vec![("grpc".into(), 7379), ("peer".into(), 7380)],
            pods: [
                (0, "10.0.0.1".parse().unwrap()),
                (1, "10.0.0.2".parse().unwrap()),
            ]
            .into_iter()
            .collect(),
            ttl: 5,
        }
    }

    /// Pod names, the service name and SRV records answer as CoreDNS does.
    #[test]
    fn answers_like_coredns() {
        let z = zone();
        let Answer::Records { answers, .. } = z.answer(
            "kvstore-1.kvstore-headless.default.svc.cluster.local",
            RecordType::A,
        ) else {
            panic!("pod name");
        };
        assert_eq!(answers.len(), 1);
        let Answer::Records {
            answers,
            additionals,
        } = z.answer(
            "_peer._tcp.kvstore-headless.default.svc.cluster.local.",
            RecordType::SRV,
        )
        else {
            panic!("srv");
        };
        assert_eq!((answers.len(), additionals.len()), (2, 2));
        let Answer::Records { answers, .. } =
            z.answer("kvstore-headless.default.svc.cluster.local.", RecordType::A)
        else {
            panic!("service");
        };
        assert_eq!(answers.len(), 2);
        assert_eq!(
            z.answer(
                "kvstore-7.kvstore-headless.default.svc.cluster.local.",
                RecordType::A
            ),
            Answer::NxDomain
        );
        assert_eq!(z.answer("example.com.", RecordType::A), Answer::Refused);
        let Answer::Records { answers, .. } = z.answer(
            "kvstore-0.kvstore-headless.default.svc.cluster.local.",
            RecordType::AAAA,
        ) else {
            panic!("nodata");
        };
        assert!(answers.is_empty(), "an IPv4 pod has no AAAA: NODATA");
    }
}
