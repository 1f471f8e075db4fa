//! Errors on the client port carry a google.rpc.ErrorInfo naming the
//! reason and the leader, readable with any gRPC library's richer error
//! model (here tonic-types; .ci/reflection_client.py reads it from Python).

use std::time::Duration;

use kvstore::error::Error;
use kvstore::proto::kv::kv_client::KvClient;
use kvstore::proto::kv::PutRequest;
use kvstore::server::error_info::{LeaderHint, ERROR_DOMAIN};
use kvstore_testkit::in_process::start_node;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn an_error_names_its_reason_and_the_leader() {
    let node = start_node().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.client_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut kv = KvClient::new(channel);
    // The one-member node elects itself; until then the leader is unknown.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let info = loop {
        let status = kv
            .put(PutRequest::default())
            .await
            .expect_err("an empty key is refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        if info.metadata.contains_key("leader") || tokio::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info.reason, "INVALID_ARGUMENT");
    assert_eq!(info.domain, ERROR_DOMAIN);
    assert_eq!(
        info.metadata.get("leader").map(String::as_str),
        Some("kvstore-0")
    );
    assert_eq!(
        info.metadata.get("leader_ordinal").map(String::as_str),
        Some("0")
    );

    // kvstore's own kinds become the reason.
    let hint = LeaderHint::new(node.handle.clone(), None, 7379);
    let status = hint.enrich(Error::NoLeader.into());
    assert_eq!(status.code(), Code::Unavailable);
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "NO_LEADER");
    // The metadata kvstore clients read stays.
    assert!(status
        .metadata()
        .get(kvstore::error::KIND_METADATA)
        .is_some());
}
