//! The membership calls of the client and `kvctl member`, against a real
//! one-member cluster.
//!
//! The node runs in this process (the test kit's `in_process`): the real
//! replication thread and gRPC servers on loopback port 0. It runs no
//! scaling controller (`kvstore serve` starts that), so nothing but the test
//! changes the configuration and every step below is deterministic. The
//! desired replica count is recorded on the node's handle, as the
//! controller would, only so that the output has one to show; it is 2, so
//! that the learner the test adds is one the count wants.
//!
//! The learner added, `kvstore-1`, is a pod that does not exist: it never
//! answers, so the leader never counts it caught up and a promotion is
//! refused every time.

use std::process::Command;
use std::time::{Duration, Instant};

use kvstore_client::{Client, RetryPolicy};
use kvstore_proto::kv::{Member, MemberListResponse};
use kvstore_testkit::in_process::{start_node, InProcessNode};
use kvstore_testkit::process::run_bounded;
use serde_json::Value;
use tonic::Code;

/// Runs kvctl against `endpoint` and returns (exit code, stdout, stderr).
async fn kvctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    cmd.arg("--endpoints").arg(endpoint).args(args);
    // kvctl blocks this thread until it exits, while the node it talks to
    // is served by this runtime: wait for it off the runtime's threads.
    tokio::task::spawn_blocking(move || run_bounded(&mut cmd, Duration::from_secs(60)))
        .await
        .expect("the kvctl runner")
}

/// The cells of the table row of member `name`, if there is one.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().collect())
}

/// The member names and roles of a JSON answer of `kvctl --json member`.
fn json_roles(out: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(out.trim()).expect("kvctl prints JSON");
    v["members"]
        .as_array()
        .expect("a members array")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The member names and whether each is a learner.
fn roles(members: &[Member]) -> Vec<(&str, bool)> {
    members
        .iter()
        .map(|m| (m.name.as_str(), m.learner))
        .collect()
}

/// Starts the node and waits (generously) until it leads, so that every
/// answer after this carries the leader's view.
async fn leading_node() -> InProcessNode {
    let node = start_node().await;
    node.handle.set_desired_replicas(2);
    let mut client = node.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: Option<MemberListResponse> = client.member_list().await.ok();
        if list
            .and_then(|l| l.header)
            .is_some_and(|h| h.leader == "kvstore-0")
        {
            return node;
        }
        assert!(Instant::now() < deadline, "kvstore-0 did not become leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (generously) until the member list shows exactly `want`: names,
/// and whether each is a learner. A change's own answer lists the members
/// from the node's published replication status, which can trail the
/// change's apply by a moment (the answer may still show the configuration
/// before it); the list catches up, and then stays, since nothing else
/// changes the configuration here.
async fn wait_for_members(endpoint: &str, want: &[(&str, bool)]) {
    let mut client = kvstore_testkit::client_for(endpoint.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = client.member_list().await.expect("member list");
        if roles(&list.members) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the members are {:?}, not {want:?}",
            roles(&list.members)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port on loopback that nothing listens on.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

/// `kvctl member list|add|promote|remove`: the list shows the one voter and
/// the desired count; an added pod shows as a learner (in the list and in
/// `kvctl status`); promoting a learner that has
/// not caught up, adding a pod of another StatefulSet, and removing the
/// last voter are refused with the server's reason and exit 2; removing the
/// learner leaves the one voter.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_member_commands() {
    let node = leading_node().await;
    let ep = node.endpoint();

    let (code, out, err) = kvctl(&ep, &["member", "list"]).await;
    assert_eq!(code, 0, "member list: {err}");
    assert_eq!(
        row(&out, "kvstore-0"),
        Some(vec!["kvstore-0", "0", "voter", "*", "-", "yes"]),
        "{out}"
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("kvstore-")).count(), 1);
    assert!(out.contains("desired replicas: 2"), "{out}");
    let (code, out, err) = kvctl(&ep, &["--json", "member", "list"]).await;
    assert_eq!(code, 0, "member list --json: {err}");
    assert_eq!(json_roles(&out), [("kvstore-0".into(), "voter".into())]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["desired_replicas"], 2);
    assert_eq!(v["leader"], "kvstore-0");

    let (code, out, err) = kvctl(&ep, &["member", "add", "kvstore-1"]).await;
    assert_eq!(code, 0, "member add: {err}");
    assert!(
        out.contains("Member kvstore-1 added as a learner (revision "),
        "{out}"
    );
    assert!(
        row(&out, "kvstore-0").is_some(),
        "the members follow: {out}"
    );
    wait_for_members(&ep, &[("kvstore-0", false), ("kvstore-1", true)]).await;
    let (code, out, err) = kvctl(&ep, &["member", "list"]).await;
    assert_eq!(code, 0, "member list: {err}");
    // The pod does not exist: nothing replicated. (Not asserted: REACHABLE,
    // which the leader reports yes for a new member until an election
    // timeout passes without an answer.)
    assert_eq!(
        row(&out, "kvstore-1").map(|r| r[..4].to_vec()),
        Some(vec!["kvstore-1", "1", "learner", "0"]),
        "{out}"
    );
    let (code, out, err) = kvctl(&ep, &["status", "--no-follow"]).await;
    assert_eq!(code, 0, "status: {err}");
    assert!(
        out.contains("voters kvstore-0; learners kvstore-1; desired replicas 2"),
        "{out}"
    );
    let (code, out, err) = kvctl(&ep, &["--json", "status", "--no-follow"]).await;
    assert_eq!(code, 0, "status --json: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v[0]["membership"], "voter");
    assert_eq!(v[0]["learners"], serde_json::json!([1]));
    let peer = &v[0]["peers"][0];
    assert_eq!(
        (&peer["name"], &peer["learner"]),
        (&"kvstore-1".into(), &true.into())
    );

    let (code, out, err) = kvctl(&ep, &["member", "promote", "kvstore-1"]).await;
    assert_eq!(code, 2, "promote refused: {out}{err}");
    assert!(
        err.contains("failed precondition") && err.contains("has not caught up"),
        "{err}"
    );
    assert!(out.is_empty(), "a refusal prints no table: {out}");

    let (code, out, err) = kvctl(&ep, &["--json", "member", "remove", "kvstore-1"]).await;
    assert_eq!(code, 0, "member remove: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        (&v["name"], &v["change"]),
        (&"kvstore-1".into(), &"remove".into())
    );
    assert!(!json_roles(&out).is_empty(), "the members follow: {out}");
    wait_for_members(&ep, &[("kvstore-0", false)]).await;

    let (code, _, err) = kvctl(&ep, &["member", "add", "other-3"]).await;
    assert_eq!(code, 2, "a pod of another StatefulSet: {err}");
    assert!(
        err.contains("invalid argument") && err.contains("not a pod of StatefulSet"),
        "{err}"
    );
    let (code, _, err) = kvctl(&ep, &["member", "remove", "kvstore-0"]).await;
    assert_eq!(code, 2, "the last voter: {err}");
    assert!(err.contains("last voter"), "{err}");

    let (code, out, err) = kvctl(&ep, &["member", "list"]).await;
    assert_eq!(code, 0, "member list: {err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("kvstore-")).count(), 1);
    node.stop().await;
}

/// The client's membership calls: an endpoint that cannot be reached is
/// passed over (the change was never sent), and refusals come back with
/// their codes as the server gave them.
#[tokio::test(flavor = "multi_thread")]
async fn client_membership_calls() {
    let node = leading_node().await;
    let endpoints = [closed_endpoint(), node.endpoint()];
    let client = || {
        Client::new(&endpoints, RetryPolicy::default(), Duration::from_secs(10)).expect("client")
    };

    let added = client()
        .member_add("kvstore-1")
        .await
        .expect("added past the dead endpoint");
    assert!(added.header.is_some_and(|h| h.revision > 0));
    wait_for_members(
        &node.endpoint(),
        &[("kvstore-0", false), ("kvstore-1", true)],
    )
    .await;
    let list = client().member_list().await.expect("member list");
    assert_eq!(
        roles(&list.members),
        [("kvstore-0", false), ("kvstore-1", true)]
    );
    assert_eq!(list.desired_replicas, 2);

    let mut c = client();
    let refused = |r: Result<_, kvstore_client::ClientError>| r.err().and_then(|e| e.code());
    assert_eq!(
        refused(c.member_promote("kvstore-1").await),
        Some(Code::FailedPrecondition),
        "not caught up"
    );
    assert_eq!(
        refused(c.member_add("kvstore-1").await),
        Some(Code::FailedPrecondition),
        "a member already"
    );
    assert_eq!(
        refused(c.member_add("other-3").await),
        Some(Code::InvalidArgument)
    );
    c.member_remove("kvstore-1").await.expect("removed");
    wait_for_members(&node.endpoint(), &[("kvstore-0", false)]).await;
    assert_eq!(
        refused(c.member_remove("kvstore-0").await),
        Some(Code::FailedPrecondition),
        "the last voter"
    );
    node.stop().await;
}
