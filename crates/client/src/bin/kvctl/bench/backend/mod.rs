//! What the bench needs of a store, and the connections to it: each
//! backend (kvstore, etcd) speaks its store's own gRPC API through the
//! generated clients directly (no retries: the bench measures the server,
//! not a retry layer), and finds its store's leader its own way.

pub(crate) mod etcd;
pub(crate) mod kvstore;

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::cli::Consistency;

use super::args::{Plan, Target};

/// How often the leader search asks the endpoints again.
const LEADER_POLL: Duration = Duration::from_millis(200);

/// What one endpoint says of the leader.
pub(crate) enum View {
    /// It leads.
    Leads,
    /// It names a leader, at this client endpoint if it knows one.
    Names(Option<String>),
    /// It knows of none.
    NoLeader,
}

/// Asks every endpoint through `view` until one leads (its endpoint) or
/// names the leader's client endpoint, for up to `timeout`. Both backends
/// search this way; only the question (`view`) differs.
pub(crate) async fn poll_for_leader<F, Fut>(
    endpoints: &[String],
    timeout: Duration,
    view: F,
) -> Result<String, SetupError>
where
    F: Fn(String, Duration) -> Fut,
    Fut: Future<Output = Result<View, SetupError>>,
{
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("no answer");
    loop {
        let mut named = None;
        for endpoint in endpoints {
            match view(endpoint.clone(), timeout).await {
                Ok(View::Leads) => return Ok(endpoint.clone()),
                Ok(View::Names(addr)) => named = named.or(addr),
                Ok(View::NoLeader) => last = format!("{endpoint} knows no leader"),
                Err(e @ SetupError::BadEndpoint { .. }) => return Err(e),
                Err(e) => last = e.to_string(),
            }
        }
        if let Some(addr) = named {
            return Ok(addr);
        }
        if std::time::Instant::now() >= deadline {
            return Err(SetupError::NoLeader {
                endpoints: endpoints.join(","),
                timeout_s: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}

/// What a compare-and-swap expects the key to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// This value.
    Value(Bytes),
    /// No value: the key does not exist.
    Absent,
}

/// How a compare-and-swap ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cas {
    /// The compare held and the new value was written.
    Swapped,
    /// The compare failed; the key holds this now.
    CompareFailed(Expected),
}

/// The values of the PUT events of a watch, one batch per message.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<Vec<Bytes>, Status>> + Send>>;

/// One worker's handle on the store, over one shared gRPC channel. Each
/// call is one request; the caller has one in flight at a time.
pub(crate) trait Conn: Clone + Send + Sync + 'static {
    /// A handle on `channel`.
    fn new(channel: Channel) -> Self;

    /// Finds the leader through `endpoints` and gives its client endpoint
    /// (`host:port`), waiting up to `timeout` for one to be elected.
    fn find_leader(
        endpoints: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<String, SetupError>> + Send;

    /// Sets `key` to `value`.
    fn put(&mut self, key: Bytes, value: Bytes) -> impl Future<Output = Result<(), Status>> + Send;

    /// Reads `key`.
    fn get(
        &mut self,
        key: Bytes,
        consistency: Consistency,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Sets `key` to `new` if it holds `expected`, in one transaction that
    /// also reads the key when the compare fails.
    fn cas(
        &mut self,
        key: Bytes,
        expected: Expected,
        new: Bytes,
    ) -> impl Future<Output = Result<Cas, Status>> + Send;

    /// Watches every key under `prefix` from now on; resolves once the
    /// watch is in place (changes after that are delivered).
    fn watch(&mut self, prefix: Bytes) -> impl Future<Output = Result<EventStream, Status>> + Send;
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// An endpoint that is not an address.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An endpoint that could not be connected to.
    #[error("cannot connect to {endpoint}: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The connection error.
        reason: String,
    },
    /// No endpoint named a leader in time.
    #[error("no leader found through {endpoints} within {timeout_s} s: {last}")]
    NoLeader {
        /// The endpoints asked.
        endpoints: String,
        /// How long the search went on.
        timeout_s: u64,
        /// What the last answer said.
        last: String,
    },
    /// The keyspace could not be written before the measured reads.
    #[error("preloading the keyspace failed for {failed} keys: {last}")]
    Preload {
        /// Keys not written.
        failed: u64,
        /// The last error.
        last: String,
    },
    /// A watch stream could not be opened.
    #[error("opening watch stream {index} failed: {reason}")]
    Watch {
        /// Which stream.
        index: usize,
        /// The error.
        reason: String,
    },
}

impl SetupError {
    /// kvctl's exit code for it: 2 for a request that is wrong, 3 for a
    /// cluster that cannot be reached or has no leader (see `main.rs`).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            SetupError::BadEndpoint { .. } => 2,
            _ => 3,
        }
    }
}

/// The channels a run uses, and where they go.
pub(crate) struct Connections<C> {
    /// One handle per channel.
    pub(crate) conns: Vec<C>,
    /// The endpoint of each channel.
    pub(crate) endpoints: Vec<String>,
}

impl<C: Conn> Connections<C> {
    /// The connections the plan asks for: `connections` channels, all to
    /// the leader with `--target leader`, else spread round-robin over the
    /// endpoints (at least one per endpoint, so that every endpoint gets
    /// load).
    pub(crate) async fn open(plan: &Plan) -> Result<Connections<C>, SetupError> {
        let (targets, count) = match plan.target {
            Target::Leader => (
                vec![C::find_leader(&plan.endpoints, plan.request_timeout).await?],
                plan.connections,
            ),
            Target::All => (
                plan.endpoints.clone(),
                plan.connections.max(plan.endpoints.len()),
            ),
        };
        let mut conns = Vec::with_capacity(count);
        let mut endpoints = Vec::with_capacity(count);
        for i in 0..count {
            let endpoint = &targets[i % targets.len()];
            conns.push(C::new(connect(endpoint, plan.request_timeout).await?));
            endpoints.push(endpoint.clone());
        }
        Ok(Connections { conns, endpoints })
    }

    /// The handle for worker (or stream) `i`: connections round-robin.
    pub(crate) fn for_worker(&self, i: usize) -> C {
        self.conns[i % self.conns.len()].clone()
    }
}

/// `endpoint` as a URI: `http://` unless a scheme is given.
pub(crate) fn uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// One gRPC channel (one HTTP/2 connection) to `endpoint`, connected now
/// so that an unreachable endpoint fails the setup, not the first request.
pub(crate) async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel, SetupError> {
    let ep = Endpoint::from_shared(uri(endpoint))
        .map_err(|e| SetupError::BadEndpoint {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout)
        // Small requests and answers: Nagle's algorithm would hold them
        // back for delayed ACKs.
        .tcp_nodelay(true);
    ep.connect().await.map_err(|e| SetupError::Unreachable {
        endpoint: endpoint.to_string(),
        reason: error_chain(&e),
    })
}

/// An error and its sources on one line (a transport error alone says
/// only "transport error").
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The name a failed request is counted under: its gRPC code's name, as
/// tonic spells it ("Unavailable", "DeadlineExceeded", ...).
pub(crate) fn error_kind(status: &Status) -> String {
    format!("{:?}", status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_named_by_grpc_code() {
        assert_eq!(error_kind(&Status::unavailable("x")), "Unavailable");
        assert_eq!(
            error_kind(&Status::deadline_exceeded("x")),
            "DeadlineExceeded"
        );
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(uri("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(uri("https://h:1"), "https://h:1");
    }
}
