//! `kvctl status`: every node of the cluster as a table (or JSON).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use kvstore_client::peers::{tls_for_peer, unseen_peers};
use kvstore_client::{Client, ClientError, RetryPolicy, TlsOptions};
use kvstore_proto::kv::{Role, StatusResponse};
use kvstore_proto::{membership, role_name};

/// One node asked: the endpoint, and its status or why it did not answer.
type Row = (String, Result<StatusResponse, ClientError>);

/// Asks every endpoint given; then, unless `no_follow`, every peer they
/// report that was not seen yet (by the client address each node resolves
/// it to), so one endpoint shows the whole cluster. Exits 3 if no node
/// answers.
pub(crate) async fn status(
    client: &Client,
    out: &mut impl Write,
    json_out: bool,
    policy: RetryPolicy,
    no_follow: bool,
) -> ExitCode {
    let given = client.endpoints().to_vec();
    let mut rows: Vec<Row> = futures::future::join_all(
        given
            .iter()
            .map(|e| query(e.clone(), policy, Duration::from_secs(3), client.tls())),
    )
    .await;
    if !no_follow {
        follow_peers(&given, policy, client.tls(), &mut rows).await;
    }
    if rows.iter().all(|(_, r)| r.is_err()) {
        let reasons: Vec<String> = rows
            .iter()
            .filter_map(|(e, r)| r.as_ref().err().map(|err| format!("{e}: {}", err.reason())))
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
    if json_out {
        let items: Vec<Value> = rows.iter().map(|row| row_json(row, max_commit)).collect();
        let _ = writeln!(out, "{}", Value::Array(items));
    } else {
        print_table(out, &rows, max_commit);
        print_members(out, &rows);
        print_nospace_alarm(out, &rows);
    }
    ExitCode::SUCCESS
}

/// Asks one endpoint for its status, with a client of its own.
async fn query(
    endpoint: String,
    policy: RetryPolicy,
    timeout: Duration,
    tls: Option<&TlsOptions>,
) -> Row {
    let result = match Client::with_tls(std::slice::from_ref(&endpoint), policy, timeout, tls) {
        Ok(one) => one.status_of(0).await,
        Err(e) => Err(e),
    };
    (endpoint, result)
}

/// Adds a row for every peer the nodes in `rows` report that is neither
/// among them nor among the endpoints `given`.
async fn follow_peers(
    given: &[String],
    policy: RetryPolicy,
    tls: Option<&TlsOptions>,
    rows: &mut Vec<Row>,
) {
    let answered = rows.iter().filter_map(|(_, r)| r.as_ref().ok());
    let follow = unseen_peers(answered, given);
    let followed = futures::future::join_all(follow.into_iter().map(|peer| {
        let tls = tls.map(|t| tls_for_peer(t, &peer.dns_name));
        async move {
            query(
                peer.client_address,
                policy,
                Duration::from_secs(1),
                tls.as_ref(),
            )
            .await
        }
    }))
    .await;
    let mut names: BTreeSet<String> = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|s| s.name.clone()))
        .collect();
    for (e, r) in followed {
        // Two addresses can reach the same node: show it once.
        if let Ok(s) = &r {
            if !names.insert(s.name.clone()) {
                continue;
            }
        }
        rows.push((e, r));
    }
}

/// One row as JSON; `lag` is how far the node's applied revision is behind
/// the highest commit revision any node reported.
fn row_json((e, r): &Row, max_commit: u64) -> Value {
    match r {
        Ok(s) => json!({
            "endpoint": e, "name": s.name, "ordinal": s.ordinal, "role": role_name(s.role),
            "term": s.term, "leader": s.leader, "commit": s.commit_revision,
            "applied": s.applied_revision, "lag": max_commit.saturating_sub(s.applied_revision),
            "ready": s.ready, "voter": s.voter, "cluster_id": s.cluster_id,
            "data_size_bytes": s.data_size_bytes, "version": s.version,
            "stored_bytes": s.stored_bytes, "quota_bytes": s.quota_bytes,
            "nospace_alarms": s.nospace_alarms,
            "membership": membership(s), "voters": s.voters, "learners": s.learners,
            // 0 is the node's "not read yet".
            "desired_replicas": (s.desired_replicas != 0).then_some(s.desired_replicas),
            "peers": s.peers.iter().map(|p| json!({
                "name": p.name, "ordinal": p.ordinal, "dns_name": p.dns_name, "address": p.address,
                "client_address": p.client_address, "in_srv": p.in_srv, "match": p.match_revision,
                "lag": p.lag, "reachable": p.reachable, "voter": p.voter, "learner": p.learner,
            })).collect::<Vec<_>>(),
        }),
        Err(err) => json!({ "endpoint": e, "error": err.to_string() }),
    }
}

/// The table: a header, then one line per node.
fn print_table(out: &mut impl Write, rows: &[Row], max_commit: u64) {
    let _ = writeln!(
        out,
        "{:>3} {:<12} {:<22} {:<10} {:<7} {:>5} {:<12} {:>8} {:>8} {:>6} {:<7}",
        "ORD",
        "NAME",
        "ENDPOINT",
        "ROLE",
        "MEMBER",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAG",
        "HEALTHY"
    );
    for (e, r) in rows {
        match r {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{:>3} {:<12} {:<22} {:<10} {:<7} {:>5} {:<12} {:>8} {:>8} {:>6} {:<7}",
                    s.ordinal,
                    s.name,
                    e,
                    role_name(s.role),
                    membership(s),
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
                    err.reason()
                );
            }
        }
    }
}

/// A line under the table with the configuration, from the leader's row
/// (the configuration a follower knows may lag behind it) or else the first
/// node that answered: the voters, the learners (members that receive the
/// log but do not vote yet) and the replica count the StatefulSet asks for.
/// Members that did not answer appear here even though they have no row.
fn print_members(out: &mut impl Write, rows: &[Row]) {
    let answered = || rows.iter().filter_map(|(_, r)| r.as_ref().ok());
    let Some(s) = answered()
        .find(|s| s.role == Role::Leader as i32)
        .or_else(|| answered().next())
    else {
        return;
    };
    let names = |ordinals: &[u32]| {
        if ordinals.is_empty() {
            return "none".to_string();
        }
        let names: Vec<String> = ordinals
            .iter()
            .map(|o| format!("{}-{o}", s.set_name))
            .collect();
        names.join(", ")
    };
    let desired = match s.desired_replicas {
        0 => "unknown".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(
        out,
        "members (as {} sees them): voters {}; learners {}; desired replicas {desired}",
        s.name,
        names(&s.voters),
        names(&s.learners),
    );
}

/// A line under the table when the NOSPACE alarm is raised. The alarm is
/// replicated, so every member reports the same and the first one is
/// enough.
fn print_nospace_alarm(out: &mut impl Write, rows: &[Row]) {
    if let Some(s) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| !s.nospace_alarms.is_empty())
    {
        let members: Vec<String> = s.nospace_alarms.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(
            out,
            "NOSPACE alarm raised by member(s) {}: writes that add data are refused; delete data to clear it",
            members.join(", ")
        );
    }
}
