//! Unit tests of the client's error classification.

use super::*;
use kvstore_proto::KIND_METADATA;

/// Nothing listens on the port, or the name does not resolve: the
/// request reached no server. Any other failure, whatever its words,
/// is not a connect failure.
#[tokio::test]
async fn connect_failures_are_found_in_the_source_chain() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    for endpoint in [
        format!("127.0.0.1:{port}"),
        "kvstore-0.does-not-exist.invalid:7379".to_string(),
    ] {
        let policy = RetryPolicy {
            budget: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut client = Client::new(
            std::slice::from_ref(&endpoint),
            policy,
            Duration::from_secs(5),
        )
        .expect("client");
        match client.put("k", "v").await {
            Err(ClientError::Unreachable { .. }) => {}
            other => panic!("{endpoint}: want Unreachable, got {other:?}"),
        }
    }
    let worded = Status::unavailable("tcp connect error: Connection refused");
    assert!(
        !connect_failed(&worded),
        "words alone are not a connect failure"
    );
    assert!(!certainly_not_applied(&worded));
}

/// A membership change is sent again only when the server says it did
/// not happen (or no connection was made): never after
/// DEADLINE_EXCEEDED or a broken connection, never after a refusal.
#[test]
fn membership_changes_are_retried_only_when_nothing_changed() {
    let with_kind = |mut status: Status, kind: &'static str| {
        status.metadata_mut().insert(
            KIND_METADATA,
            tonic::metadata::MetadataValue::from_static(kind),
        );
        status
    };
    for kind in ["unavailable", "no-leader", "not-applied", "shutting-down"] {
        let status = with_kind(Status::unavailable("not the leader"), kind);
        assert!(membership_change_retryable(&status), "{kind}");
    }
    let refused = [
        with_kind(
            Status::deadline_exceeded("the write's outcome is unknown"),
            "outcome-unknown",
        ),
        Status::deadline_exceeded("the request timed out"),
        // A connection that broke after the request was sent.
        Status::unavailable("error reading a body from connection"),
        Status::failed_precondition("learner 1 has not caught up with the log yet"),
        Status::invalid_argument("\"other-3\" is not a pod of StatefulSet \"kvstore\""),
    ];
    for status in refused {
        assert!(!membership_change_retryable(&status), "{status:?}");
    }
}

/// A leader hint names the endpoint whose host is that pod.
#[test]
fn leader_hint_matches_pod_names() {
    assert!(host_names(
        "kvstore-1.kvstore-headless.default.svc.cluster.local:7379",
        "kvstore-1"
    ));
    assert!(!host_names("kvstore-10.kvstore-headless:7379", "kvstore-1"));
    assert!(host_names("http://kvstore-2:7379", "kvstore-2"));
}
