//! A watch rides through the loss of its node: kvstore-N serving it is
//! SIGKILLed in the middle of 1,000 writes, the client's resuming watch
//! opens again on another node, and every write's revision arrives exactly
//! once, in order.

use std::time::Duration;

use bytes::Bytes;
use kvstore_client::{Client, RetryPolicy};
use kvstore_proto::kv::WatchRequest;
use kvstore_testkit::box_cluster::BoxCluster;

const WRITES: u64 = 1_000;
const KILL_AFTER: u64 = 300;

#[test]
fn a_watch_resumes_on_another_node_with_every_revision_once_in_order() {
    let b = BoxCluster::start(3, &[], Duration::from_millis(500));
    let (leader, _) = b.wait("a leader", Duration::from_secs(60), |b| b.leader());
    // The watched node is a follower, so that the writes go on while it
    // is gone (a leader kill is the demo's subject, not this test's).
    let watched = (leader + 1) % 3;
    let mut endpoints = vec![b.pod_endpoint(watched)];
    endpoints.extend((0..3).filter(|&n| n != watched).map(|n| b.pod_endpoint(n)));
    let policy = RetryPolicy {
        budget: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut watch = rt.block_on(async {
        let client = Client::new(&endpoints, policy, Duration::from_secs(5)).expect("watch client");
        let req = WatchRequest {
            key: Bytes::from_static(b"wf/"),
            prefix: true,
            ..Default::default()
        };
        client.watch_resuming(req).await.expect("the watch opens")
    });
    let watcher = rt.spawn(async move {
        let mut revisions = Vec::new();
        while revisions.len() < WRITES as usize {
            match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
                Ok(Ok(event)) => revisions.push(event.revision),
                Ok(Err(e)) => panic!("the watch failed: {e}"),
                Err(_) => break,
            }
        }
        (revisions, watch.resumes())
    });

    let mut writer = b.client();
    let mut acknowledged = Vec::new();
    for i in 0..WRITES {
        if i == KILL_AFTER {
            b.signal(watched, libc::SIGKILL);
        }
        let put = rt.block_on(writer.put(format!("wf/{}", i % 10), format!("{i}")));
        let resp = put.unwrap_or_else(|e| panic!("write {i}: {e}"));
        acknowledged.push(resp.header.expect("a header").revision);
    }
    let (revisions, resumes) = rt.block_on(watcher).expect("the watch task");
    assert!(
        resumes >= 1,
        "the watch never had to resume: was its node killed?"
    );
    assert_eq!(
        revisions.len(),
        acknowledged.len(),
        "events received vs writes acknowledged"
    );
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions out of order or repeated"
    );
    assert_eq!(revisions, acknowledged, "every write's revision, once");
}
