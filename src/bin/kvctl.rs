//! `kvctl`: the command-line client for kvstore.
//!
//! Exit codes, one meaning each: 0 done; 1 the answer is no (a key not
//! found, a compare that failed); 2 the request is wrong or was refused (bad
//! usage, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...); 3 no endpoint could be
//! reached or answered in time; 4 a write's outcome is unknown (it may have
//! been applied). Errors print one line on stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use kvstore::client::{Client, ClientError, RetryPolicy};
use kvstore::proto::kv::{
    response_op, Consistency as ProtoConsistency, DeleteRequest, EventType, GetRequest, KeyValue,
    PutRequest, Role, StatusResponse, WatchRequest,
};

/// kvctl: talk to a kvstore cluster.
#[derive(Parser, Debug)]
#[command(name = "kvctl", version, about)]
struct Cli {
    /// Comma-separated `host:port` client endpoints of the cluster's nodes.
    /// Default: the pods of the cluster in a box started from this
    /// directory (`.kvstore/local/state.json`), else 127.0.0.1:7379.
    #[arg(long, env = "KVCTL_ENDPOINTS", global = true)]
    endpoints: Option<String>,
    /// Read consistency.
    #[arg(long, value_enum, default_value = "linearizable", global = true)]
    consistency: Consistency,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a command after this many seconds of retries.
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Consistency {
    Linearizable,
    Serializable,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Print the previous value.
        #[arg(long)]
        prev: bool,
    },
    /// Read KEY.
    Get {
        key: String,
        /// Wait until the answering node has applied this revision.
        #[arg(long, default_value_t = 0)]
        min_revision: u64,
    },
    /// Delete KEY, or every key under it with --prefix.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// List keys in [START, END) in key order (all keys by default, read
    /// page by page).
    #[command(alias = "ls")]
    Range {
        /// First key (or the prefix with --prefix).
        start: Option<String>,
        /// End key, exclusive.
        end: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Most keys to print (0: all of them).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print only keys.
        #[arg(long)]
        keys_only: bool,
    },
    /// Compare-and-swap: set KEY to NEW only if its value is EXPECTED.
    /// With --absent, only if KEY does not exist (then give KEY and NEW).
    Cas {
        key: String,
        /// The expected value (omit with --absent).
        expected: Option<String>,
        /// The new value.
        new: Option<String>,
        /// Require that the key does not exist.
        #[arg(long)]
        absent: bool,
    },
    /// Print changes to KEY (or a prefix) as they happen. When the node
    /// answering it stops, the watch resumes on another from the next
    /// revision, so no change is missed or printed twice.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (replays history first).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Stop after this many events (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Show every node as a table: the endpoints given, and the peers they
    /// report (at the addresses they resolve them to).
    Status {
        /// Only ask the endpoints given (through a port-forward the peers'
        /// pod addresses are not reachable).
        #[arg(long)]
        no_follow: bool,
    },
    /// Move leadership to the member with this ordinal.
    TransferLeader { ordinal: u32 },
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A value as JSON: a string when it is UTF-8, else base64 with a marker.
fn json_bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": json_bytes(&kv.key),
        "value": json_bytes(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

/// The exit code of a failed command (see the module documentation).
fn exit_code(e: &ClientError, write: bool) -> u8 {
    use tonic::Code;
    match e {
        ClientError::Unreachable { .. } => 3,
        ClientError::BadEndpoint(..) => 2,
        ClientError::Status(_) if write && e.outcome_unknown() => 4,
        ClientError::Status(s) => match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => 3,
            _ => 2,
        },
    }
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("kvctl: {e}");
    ExitCode::from(exit_code(&e, false))
}

fn fail_write(e: ClientError) -> ExitCode {
    eprintln!("kvctl: {e}");
    if exit_code(&e, true) == 4 {
        eprintln!("kvctl: the write may have been applied; check before repeating it");
    }
    ExitCode::from(exit_code(&e, true))
}

/// Why one endpoint failed, without the endpoint list a client error repeats.
fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { last, .. } => last.clone(),
        other => other.to_string(),
    }
}

/// Prints the changes `req` asks for until `count` (0: forever). When the
/// stream ends or breaks (its node stopped), it is opened again, on any
/// endpoint, from the revision after the last one printed; a watch "from
/// now" first reads the current revision, so that the resumed watch misses
/// nothing in between.
async fn watch(
    client: &mut Client,
    mut req: WatchRequest,
    count: u64,
    json_out: bool,
    timeout_s: u64,
) -> ExitCode {
    let out = std::io::stdout();
    if req.start_revision == 0 {
        match client
            .range(kvstore::proto::kv::RangeRequest {
                key: req.key.clone(),
                limit: 1,
                keys_only: true,
                ..Default::default()
            })
            .await
        {
            Ok(r) => req.start_revision = r.header.map_or(0, |h| h.revision) + 1,
            Err(e) => return fail(e),
        }
    }
    let mut seen = 0u64;
    let mut broken_since: Option<std::time::Instant> = None;
    loop {
        let mut stream = match client.watch(req.clone()).await {
            Ok(s) => s,
            Err(e)
                if exit_code(&e, false) == 3
                    && broken_since
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(timeout_s)) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return fail(e),
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    let mut out = out.lock();
                    for ev in resp.events {
                        print_event(&mut out, &ev, json_out);
                        req.start_revision = req.start_revision.max(ev.revision + 1);
                        seen += 1;
                        if count > 0 && seen >= count {
                            return ExitCode::SUCCESS;
                        }
                    }
                }
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    return fail(ClientError::Status(status))
                }
                Err(_) => break,
            }
        }
        eprintln!(
            "kvctl: the watch's node went away; resuming on another from revision {}",
            req.start_revision
        );
        broken_since = Some(std::time::Instant::now());
    }
}

fn print_event(out: &mut impl Write, ev: &kvstore::proto::kv::Event, json_out: bool) {
    let kv = ev.kv.clone().unwrap_or_default();
    let kind = if ev.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({ "type": kind, "revision": ev.revision, "key": json_bytes(&kv.key), "value": json_bytes(&kv.value) })
        );
    } else if kind == "PUT" {
        let _ = writeln!(
            out,
            "{kind} {} = {} (revision {})",
            text(&kv.key),
            text(&kv.value),
            ev.revision
        );
    } else {
        let _ = writeln!(out, "{kind} {} (revision {})", text(&kv.key), ev.revision);
    }
    let _ = out.flush();
}

/// The endpoints to use when none are given: the pods of the cluster in a
/// box whose state file is under the current directory, else the usual
/// local port.
fn default_endpoints() -> String {
    let state = std::path::Path::new(".kvstore/local/state.json");
    let from_box = std::fs::read_to_string(state)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| {
            let pods = v.get("pods")?.as_array()?;
            let clients: Vec<&str> = pods
                .iter()
                .filter_map(|p| p.get("client")?.as_str())
                .collect();
            (!clients.is_empty()).then(|| clients.join(","))
        });
    from_box.unwrap_or_else(|| "127.0.0.1:7379".to_string())
}

fn role_name(raw: i32) -> &'static str {
    match Role::try_from(raw) {
        Ok(Role::Leader) => "leader",
        Ok(Role::Follower) => "follower",
        Ok(Role::Candidate) => "candidate",
        Ok(Role::PreCandidate) => "pre-candidate",
        _ => "unknown",
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoints: Vec<String> = cli
        .endpoints
        .clone()
        .unwrap_or_else(default_endpoints)
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    let policy = RetryPolicy {
        budget: Duration::from_secs(cli.timeout),
        ..RetryPolicy::default()
    };
    let mut client = match Client::new(&endpoints, policy, Duration::from_secs(cli.timeout.max(1)))
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let consistency = match cli.consistency {
        Consistency::Linearizable => ProtoConsistency::Linearizable,
        Consistency::Serializable => ProtoConsistency::Serializable,
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    match cli.command {
        Cmd::Put { key, value, prev } => {
            let req = PutRequest {
                key: key.into(),
                value: value.into(),
                prev_kv: prev,
            };
            match client.put_request(req).await {
                Ok(resp) => {
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    if cli.json {
                        let _ = writeln!(
                            out,
                            "{}",
                            json!({ "revision": rev, "prev_kv": resp.prev_kv.as_ref().map(kv_json) })
                        );
                    } else {
                        if let Some(p) = &resp.prev_kv {
                            let _ = writeln!(out, "previous: {}", text(&p.value));
                        }
                        let _ = writeln!(out, "OK (revision {rev})");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail_write(e),
            }
        }
        Cmd::Get { key, min_revision } => {
            let req = GetRequest {
                key: key.clone().into(),
                consistency: consistency as i32,
                min_revision,
            };
            match client.get_request(req).await {
                Ok(resp) => match resp.kv {
                    Some(kv) => {
                        if cli.json {
                            let _ = writeln!(out, "{}", kv_json(&kv));
                        } else {
                            let _ = writeln!(out, "{}", text(&kv.value));
                        }
                        ExitCode::SUCCESS
                    }
                    None => {
                        if cli.json {
                            let _ = writeln!(out, "null");
                        }
                        eprintln!("kvctl: key {key:?} not found");
                        ExitCode::from(1)
                    }
                },
                Err(e) => fail(e),
            }
        }
        Cmd::Del { key, prefix } => {
            let req = DeleteRequest {
                key: key.into(),
                prefix,
                ..Default::default()
            };
            match client.delete(req).await {
                Ok(resp) => {
                    if cli.json {
                        let _ = writeln!(out, "{}", json!({ "deleted": resp.deleted }));
                    } else {
                        let _ = writeln!(out, "{}", resp.deleted);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail_write(e),
            }
        }
        Cmd::Range {
            start,
            end,
            prefix,
            limit,
            keys_only,
        } => {
            let start: Bytes = start.unwrap_or_default().into();
            // A prefix is read as the explicit range [prefix, prefix_end).
            let end: Bytes = if prefix {
                kvstore::state::keys::prefix_end(&start)
                    .map(Bytes::from)
                    .unwrap_or_default()
            } else {
                end.unwrap_or_default().into()
            };
            let limit = if limit == 0 { u64::MAX } else { limit };
            let kvs = match client.scan(start, end, limit, consistency, keys_only).await {
                Ok(kvs) => kvs,
                Err(e) => return fail(e),
            };
            let mut items = Vec::new();
            for kv in &kvs {
                if cli.json {
                    items.push(kv_json(kv));
                } else if keys_only {
                    let _ = writeln!(out, "{}", text(&kv.key));
                } else {
                    let _ = writeln!(out, "{} = {}", text(&kv.key), text(&kv.value));
                }
            }
            if cli.json {
                let _ = writeln!(out, "{}", Value::Array(items));
            }
            ExitCode::SUCCESS
        }
        Cmd::Cas {
            key,
            expected,
            new,
            absent,
        } => {
            let (expected, new) = match (absent, expected, new) {
                (true, Some(new), None) => (None, new),
                (false, Some(expected), Some(new)) => (Some(Bytes::from(expected)), new),
                _ => {
                    eprintln!(
                        "kvctl: usage: kvctl cas KEY EXPECTED NEW, or kvctl cas --absent KEY NEW"
                    );
                    return ExitCode::from(2);
                }
            };
            match client.compare_and_swap(key, expected, new).await {
                Ok(resp) => {
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    let current = resp.responses.first().and_then(|r| match &r.response {
                        Some(response_op::Response::Range(range)) => range.kvs.first().cloned(),
                        _ => None,
                    });
                    if cli.json {
                        let _ = writeln!(
                            out,
                            "{}",
                            json!({ "succeeded": resp.succeeded, "revision": rev, "current": current.as_ref().map(kv_json) })
                        );
                    } else if resp.succeeded {
                        let _ = writeln!(out, "OK (revision {rev})");
                    } else {
                        let now = current.map_or("<absent>".to_string(), |kv| text(&kv.value));
                        let _ = writeln!(out, "FAILED: current value is {now}");
                    }
                    if resp.succeeded {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail_write(e),
            }
        }
        Cmd::Watch {
            key,
            prefix,
            rev,
            count,
        } => {
            let req = WatchRequest {
                key: key.into(),
                range_end: Bytes::new(),
                prefix,
                start_revision: rev,
                prev_kv: false,
            };
            tokio::select! {
                code = watch(&mut client, req, count, cli.json, cli.timeout) => code,
                _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            }
        }
        Cmd::Status { no_follow } => {
            // Ask every endpoint given; then, unless told not to, every peer
            // they report that was not seen yet (by the client address each
            // node resolves it to), so one endpoint shows the whole cluster.
            let query = |endpoint: String, timeout: Duration| async move {
                let result = match Client::new(std::slice::from_ref(&endpoint), policy, timeout) {
                    Ok(one) => one.status_of(0).await,
                    Err(e) => Err(e),
                };
                (endpoint, result)
            };
            let given = client.endpoints().to_vec();
            let mut rows: Vec<(String, Result<StatusResponse, ClientError>)> =
                futures::future::join_all(
                    given
                        .iter()
                        .map(|e| query(e.clone(), Duration::from_secs(3))),
                )
                .await;
            let mut names: std::collections::BTreeSet<String> = rows
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|s| s.name.clone()))
                .collect();
            if !no_follow {
                let mut follow = Vec::new();
                for (_, r) in &rows {
                    if let Ok(s) = r {
                        for p in &s.peers {
                            if !names.contains(&p.name)
                                && !p.client_address.is_empty()
                                && !given.contains(&p.client_address)
                                && !follow.contains(&p.client_address)
                            {
                                follow.push(p.client_address.clone());
                            }
                        }
                    }
                }
                let followed = futures::future::join_all(
                    follow.into_iter().map(|e| query(e, Duration::from_secs(1))),
                )
                .await;
                for (e, r) in followed {
                    if let Ok(s) = &r {
                        if !names.insert(s.name.clone()) {
                            continue;
                        }
                    }
                    rows.push((e, r));
                }
            }
            if rows.iter().all(|(_, r)| r.is_err()) {
                let reasons: Vec<String> = rows
                    .iter()
                    .filter_map(|(e, r)| {
                        r.as_ref().err().map(|err| format!("{e}: {}", reason(err)))
                    })
                    .collect();
                eprintln!("kvctl: no endpoint answers ({})", reasons.join("; "));
                return ExitCode::from(3);
            }
            rows.sort_by_key(|(e, r)| (r.as_ref().map_or(u32::MAX, |s| s.ordinal), e.clone()));
            let max_commit = rows
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|s| s.commit_revision))
                .max()
                .unwrap_or(0);
            if cli.json {
                let items: Vec<Value> = rows
                    .iter()
                    .map(|(e, r)| match r {
                        Ok(s) => json!({
                            "endpoint": e, "name": s.name, "ordinal": s.ordinal, "role": role_name(s.role),
                            "term": s.term, "leader": s.leader, "commit": s.commit_revision,
                            "applied": s.applied_revision, "lag": max_commit.saturating_sub(s.applied_revision),
                            "ready": s.ready, "voter": s.voter, "cluster_id": s.cluster_id,
                            "data_size_bytes": s.data_size_bytes, "version": s.version,
                            "stored_bytes": s.stored_bytes, "quota_bytes": s.quota_bytes,
                            "nospace_alarms": s.nospace_alarms,
                            "peers": s.peers.iter().map(|p| json!({
                                "name": p.name, "ordinal": p.ordinal, "dns_name": p.dns_name, "address": p.address,
                                "client_address": p.client_address, "in_srv": p.in_srv, "match": p.match_revision,
                                "lag": p.lag, "reachable": p.reachable, "voter": p.voter,
                            })).collect::<Vec<_>>(),
                        }),
                        Err(err) => json!({ "endpoint": e, "error": err.to_string() }),
                    })
                    .collect();
                let _ = writeln!(out, "{}", Value::Array(items));
            } else {
                let _ = writeln!(
                    out,
                    "{:>3} {:<12} {:<22} {:<10} {:>5} {:<12} {:>8} {:>8} {:>6} {:<7}",
                    "ORD",
                    "NAME",
                    "ENDPOINT",
                    "ROLE",
                    "TERM",
                    "LEADER",
                    "COMMIT",
                    "APPLIED",
                    "LAG",
                    "HEALTHY"
                );
                for (e, r) in &rows {
                    match r {
                        Ok(s) => {
                            let _ = writeln!(
                                out,
                                "{:>3} {:<12} {:<22} {:<10} {:>5} {:<12} {:>8} {:>8} {:>6} {:<7}",
                                s.ordinal,
                                s.name,
                                e,
                                role_name(s.role),
                                s.term,
                                if s.leader.is_empty() { "-" } else { &s.leader },
                                s.commit_revision,
                                s.applied_revision,
                                max_commit.saturating_sub(s.applied_revision),
                                if s.ready { "yes" } else { "no" }
                            );
                        }
                        Err(err) => {
                            let _ = writeln!(
                                out,
                                "{:>3} {:<12} {e:<22} unreachable: {}",
                                "-",
                                "-",
                                reason(err)
                            );
                        }
                    }
                }
                // The alarm is replicated: every member reports the same.
                if let Some(s) = rows
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .find(|s| !s.nospace_alarms.is_empty())
                {
                    let members: Vec<String> =
                        s.nospace_alarms.iter().map(|m| m.to_string()).collect();
                    let _ = writeln!(
                        out,
                        "NOSPACE alarm raised by member(s) {}: writes that add data are refused; delete data to clear it",
                        members.join(", ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::TransferLeader { ordinal } => match client.transfer_leadership(ordinal).await {
            Ok(()) => {
                let _ = writeln!(out, "leadership moved to ordinal {ordinal}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
