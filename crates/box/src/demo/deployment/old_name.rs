//! A client of the killed pod's stable DNS name
//! (`kvstore-0.kvstore-headless.default.svc.cluster.local`), as an
//! application pinned to one member would be: it resolves the name through
//! the box's DNS, keeps its connection while reads succeed, and after a
//! failure resolves the name again before the next read. Every outcome is
//! recorded with its time, to be counted around the kill.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::OldNameReads;
use kvstore_client::TlsOptions;
use kvstore_proto::kv::kv_client::KvClient;
use kvstore_proto::kv::{Consistency, GetRequest};

/// Bounds the reads, should nobody stop the client.
const MAX_READS: usize = 100_000;

/// The pause between reads.
const PACE: Duration = Duration::from_millis(20);

/// How one read went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered.
    Ok,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// Anything else: no address, nothing listening, refused, timed out.
    Failed,
}

/// Where the client reads, and how.
pub(super) struct Target {
    /// The box's DNS server.
    pub(super) dns: SocketAddr,
    /// The pod's fully qualified name.
    pub(super) name: String,
    /// The client port.
    pub(super) port: u16,
    /// The key read.
    pub(super) key: String,
    /// The box's client TLS, with `--tls`.
    pub(super) tls: Option<TlsOptions>,
}

/// The running client.
pub(super) struct OldNameClient {
    log: Arc<Mutex<Vec<(Instant, Outcome)>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OldNameClient {
    /// Starts reading `target` (inside the runtime).
    pub(super) fn start(target: Target) -> Result<OldNameClient, String> {
        let resolver = resolver(target.dns)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let reader = Reader {
            target,
            resolver,
            channel: None,
        };
        let task = tokio::spawn(reader.run(log.clone(), stopped));
        Ok(OldNameClient { log, stop, task })
    }

    fn log(&self) -> MutexGuard<'_, Vec<(Instant, Outcome)>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any read was answered yet.
    pub(super) fn answered(&self) -> bool {
        self.log().iter().any(|(_, o)| *o == Outcome::Ok)
    }

    /// The counts so far (see [`tally`]).
    pub(super) fn tally(&self, killed_at: Instant, gone_at: Instant) -> OldNameReads {
        tally(&self.log(), killed_at, gone_at)
    }

    /// Stops reading; gives the final counts.
    pub(super) async fn stop(self, killed_at: Instant, gone_at: Instant) -> OldNameReads {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        tally(&log, killed_at, gone_at)
    }
}

/// The outcomes counted before `killed_at` (the kill) and after `gone_at`
/// (once the killed process was seen gone, so that a read it answered while
/// dying is not taken for one after the kill).
fn tally(log: &[(Instant, Outcome)], killed_at: Instant, gone_at: Instant) -> OldNameReads {
    let after = |o: Outcome| log.iter().filter(move |(t, x)| *x == o && *t > gone_at);
    OldNameReads {
        ok_before_kill: log
            .iter()
            .filter(|(t, x)| *x == Outcome::Ok && *t < killed_at)
            .count(),
        ok_after_kill: after(Outcome::Ok).count(),
        nxdomain_after_kill: after(Outcome::NxDomain).count(),
        errors_after_kill: after(Outcome::Failed).count(),
        first_ok_after_kill: after(Outcome::Ok)
            .next()
            .map(|(t, _)| t.duration_since(killed_at)),
    }
}

/// A resolver that asks only the box's DNS server and caches nothing, so
/// every look-up shows what the server answers now.
fn resolver(dns: SocketAddr) -> Result<TokioResolver, String> {
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.port();
    let server = NameServerConfig::new(dns.ip(), true, vec![udp, tcp]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_millis(500);
    opts.attempts = 1;
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| format!("a resolver for the box's DNS: {e}"))
}

/// The reading task's state.
struct Reader {
    target: Target,
    resolver: TokioResolver,
    /// The connection to the address the name last resolved to.
    channel: Option<Channel>,
}

impl Reader {
    async fn run(
        mut self,
        log: Arc<Mutex<Vec<(Instant, Outcome)>>>,
        stopped: watch::Receiver<bool>,
    ) {
        for _ in 0..MAX_READS {
            if *stopped.borrow() {
                return;
            }
            let outcome = self.read_once().await;
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), outcome));
            tokio::time::sleep(PACE).await;
        }
    }

    /// One read; a failure drops the connection, so that the next read
    /// resolves the name again.
    async fn read_once(&mut self) -> Outcome {
        let channel = match self.channel.clone() {
            Some(c) => c,
            None => match self.connect().await {
                Ok(c) => c,
                Err(outcome) => return outcome,
            },
        };
        let request = GetRequest {
            key: self.target.key.clone().into(),
            consistency: Consistency::Linearizable as i32,
            min_revision: 0,
        };
        match KvClient::new(channel.clone()).get(request).await {
            Ok(_) => {
                self.channel = Some(channel);
                Outcome::Ok
            }
            Err(_) => {
                self.channel = None;
                Outcome::Failed
            }
        }
    }

    /// Resolves the name and makes a connection to its address.
    async fn connect(&mut self) -> Result<Channel, Outcome> {
        let lookup = self
            .resolver
            .lookup_ip(self.target.name.as_str())
            .await
            .map_err(|e| {
                if e.is_nx_domain() {
                    Outcome::NxDomain
                } else {
                    Outcome::Failed
                }
            })?;
        let ip = lookup.iter().find(IpAddr::is_ipv4).ok_or(Outcome::Failed)?;
        let address = SocketAddr::new(ip, self.target.port).to_string();
        let endpoint = kvstore_client::endpoint(&address, self.target.tls.as_ref())
            .map_err(|_| Outcome::Failed)?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        Ok(endpoint.connect_lazy())
    }
}
