//! `kvctl member list|add|promote|remove`: the configuration (voters and
//! learners), shown and changed one member at a time as `etcdctl member`
//! does.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};

use kvstore_client::{Client, ClientError};
use kvstore_proto::kv::{Member, ResponseHeader};

use crate::cli::MemberCmd;
use crate::exit::{fail, fail_change};

/// Runs one `kvctl member` subcommand.
pub(crate) async fn member(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    action: MemberCmd,
) -> ExitCode {
    match action {
        MemberCmd::List => list(client, out, json_out).await,
        MemberCmd::Add { name } => change(client, out, json_out, Change::Add, name).await,
        MemberCmd::Promote { name } => change(client, out, json_out, Change::Promote, name).await,
        MemberCmd::Remove { name } => change(client, out, json_out, Change::Remove, name).await,
    }
}

/// `kvctl member list`: the members as a table (or JSON), then the desired
/// replica count.
async fn list(client: &mut Client, out: &mut impl Write, json_out: bool) -> ExitCode {
    let resp = match client.member_list().await {
        Ok(resp) => resp,
        Err(e) => return fail(e),
    };
    let header = resp.header.unwrap_or_default();
    let progress = leads(&header);
    // 0 is the server's "not read yet".
    let desired = (resp.desired_replicas != 0).then_some(resp.desired_replicas);
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({
                "members": members_json(&resp.members, progress),
                "desired_replicas": desired,
                "answered_by": header.node,
                "leader": (!header.leader.is_empty()).then_some(&header.leader),
            })
        );
        return ExitCode::SUCCESS;
    }
    print_members(out, &resp.members, progress, &header);
    match desired {
        Some(n) => {
            let _ = writeln!(out, "desired replicas: {n}");
        }
        None => {
            let _ = writeln!(out, "desired replicas: unknown (not read yet)");
        }
    }
    ExitCode::SUCCESS
}

/// A change to one member.
#[derive(Clone, Copy, Debug)]
enum Change {
    Add,
    Promote,
    Remove,
}

impl Change {
    /// The change's name, as the subcommand spells it.
    fn verb(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Promote => "promote",
            Change::Remove => "remove",
        }
    }

    /// What happened to the member, for the line before the table.
    fn done(self) -> &'static str {
        match self {
            Change::Add => "added as a learner",
            Change::Promote => "promoted to voter",
            Change::Remove => "removed",
        }
    }
}

/// `kvctl member add|promote|remove NAME`: makes the change, then prints
/// the configuration it produced. A refusal prints the server's reason and
/// exits 2; a change whose outcome is unknown exits 4.
async fn change(
    client: &mut Client,
    out: &mut impl Write,
    json_out: bool,
    change: Change,
    name: String,
) -> ExitCode {
    let result: Result<_, ClientError> = match change {
        Change::Add => client.member_add(&name).await,
        Change::Promote => client.member_promote(&name).await,
        Change::Remove => client.member_remove(&name).await,
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return fail_change(e),
    };
    let header = resp.header.unwrap_or_default();
    let progress = leads(&header);
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            json!({
                "name": name,
                "change": change.verb(),
                "revision": header.revision,
                "members": members_json(&resp.members, progress),
            })
        );
    } else {
        let _ = writeln!(
            out,
            "Member {name} {} (revision {})",
            change.done(),
            header.revision
        );
        print_members(out, &resp.members, progress, &header);
    }
    ExitCode::SUCCESS
}

/// Whether the answering node leads: only then do the answer's match
/// revisions and reachability mean anything.
fn leads(header: &ResponseHeader) -> bool {
    !header.leader.is_empty() && header.leader == header.node
}

/// A member's role in the configuration.
fn role(m: &Member) -> &'static str {
    if m.learner {
        "learner"
    } else {
        "voter"
    }
}

/// The members as JSON; progress the answer does not carry (it came from a
/// follower, or is the leader's own) is null rather than a made-up zero.
fn members_json(members: &[Member], progress: bool) -> Vec<Value> {
    members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "ordinal": m.ordinal,
                "role": role(m),
                "leader": m.leader,
                "match_revision": (progress && !m.leader).then_some(m.match_revision),
                "reachable": progress.then_some(m.reachable),
            })
        })
        .collect()
}

/// The members as a table, the leader marked `*`; MATCH and REACHABLE are
/// `-` where the answer does not know them, with a line saying why.
fn print_members(
    out: &mut impl Write,
    members: &[Member],
    progress: bool,
    header: &ResponseHeader,
) {
    let width = members
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:<7} {:<6} {:>8} REACHABLE",
        "NAME", "ORDINAL", "ROLE", "LEADER", "MATCH"
    );
    for m in members {
        let matched = if progress && !m.leader {
            m.match_revision.to_string()
        } else {
            "-".to_string()
        };
        let reachable = match (progress, m.reachable) {
            (false, _) => "-",
            (true, true) => "yes",
            (true, false) => "no",
        };
        let _ = writeln!(
            out,
            "{:<width$} {:>7} {:<7} {:<6} {:>8} {}",
            m.name,
            m.ordinal,
            role(m),
            if m.leader { "*" } else { "" },
            matched,
            reachable
        );
    }
    if !progress {
        let _ = writeln!(
            out,
            "(answered by {}, which does not lead: only the leader knows MATCH and REACHABLE)",
            if header.node.is_empty() {
                "a node"
            } else {
                &header.node
            }
        );
    }
}
