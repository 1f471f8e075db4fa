//! Bad input over every RPC and at the HTTP/2 layer: each gets a clear
//! error, nothing crashes, and nothing already stored is lost. Runs against
//! an in-process node (real servers on port 0, a real sled dir).

use std::time::Duration;

use bytes::Bytes;
use kvstore_testkit::in_process::start_node;
use tokio::net::TcpStream;

/// The gRPC framing of an empty protobuf message.
const EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// Opens `count` streams on one connection and resets each at once, as a
/// client whose calls time out does when a blocked link comes back; then
/// makes an ordinary call on the same connection. Returns whether that call
/// succeeded and, if the server closed the connection, why.
async fn burst_of_cancelled_streams(
    addr: std::net::SocketAddr,
    count: usize,
) -> (bool, Option<String>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut driver = tokio::spawn(connection);
    for _ in 0..count {
        let Ok((_, mut stream)) =
            client.send_request(grpc_request("/grpc.health.v1.Health/Check"), false)
        else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
    }
    let call = async {
        let mut client = client.ready().await.ok()?;
        let (response, mut body) = client
            .send_request(grpc_request("/grpc.health.v1.Health/Check"), false)
            .ok()?;
        body.send_data(Bytes::from_static(&EMPTY_MESSAGE), true)
            .ok()?;
        let response = response.await.ok()?;
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.ok()?;
        }
        let trailers = body.trailers().await.ok()??;
        Some(trailers.get("grpc-status")? == "0")
    };
    let ok = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    // An abusive client's connection is closed right after the burst; a
    // well-behaved one's stays open (its call above succeeded on it).
    let ended = if ok && !driver.is_finished() {
        None
    } else {
        tokio::time::timeout(Duration::from_secs(10), &mut driver)
            .await
            .ok()
    };
    driver.abort();
    let closed = ended.map(|result| format!("{result:?}"));
    (ok, closed)
}

/// A client whose calls are cancelled in a burst (deadlines expiring
/// together) keeps its connection: the server does not answer with GOAWAY
/// `too_many_resets`, and the next call on that connection succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cancelled_calls_keeps_the_connection() {
    let node = start_node().await;
    let (ok, closed) = burst_of_cancelled_streams(node.client_addr, 200).await;
    assert!(
        ok && closed.is_none(),
        "the connection was cut off: {closed:?}"
    );
    node.stop().await;
}

/// Rapid reset abuse is still bounded: a client that opens and resets tens
/// of thousands of streams at once is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_abuse_is_cut_off() {
    let node = start_node().await;
    let (_, closed) = burst_of_cancelled_streams(node.client_addr, 50_000).await;
    let closed = closed.expect("an abusive client kept its connection");
    // GOAWAY too_many_resets, or a broken pipe when the server closed the
    // socket before the client read the GOAWAY.
    assert!(
        closed.contains("too_many_resets") || closed.contains("BrokenPipe"),
        "{closed}"
    );
    node.stop().await;
}

mod rpcs {
    //! Every RPC with empty, oversized and boundary values, unknown enums,
    //! inverted and huge ranges.

    use std::time::Duration;

    use bytes::Bytes;
    use kvstore::proto::kv::cluster_client::ClusterClient;
    use kvstore::proto::kv::kv_client::KvClient;
    use kvstore::proto::kv::{
        request_op, Compare, DeleteRequest, GetRequest, PutRequest, RangeRequest, RequestOp,
        StatusRequest, TransferLeadershipRequest, TxnRequest, WatchRequest,
    };
    use kvstore::server::ServeOptions;
    use tonic::Code;

    use kvstore_testkit::in_process::start_node_with;

    const KEY_LIMIT: usize = 4096;
    const VALUE_LIMIT: usize = 1 << 20;

    fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
        }
    }

    fn op_put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::Put(put(key.to_string(), "v"))),
        }
    }

    /// One check: the outcome of a call, the code expected, and words the
    /// message must hold.
    struct Check {
        what: &'static str,
        got: Result<(), tonic::Status>,
        code: Code,
        says: &'static str,
    }

    fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
        r.map(|_| ())
    }

    fn check(
        what: &'static str,
        got: Result<(), tonic::Status>,
        code: Code,
        says: &'static str,
    ) -> Check {
        Check {
            what,
            got,
            code,
            says,
        }
    }

    /// Every bad request gets the code that tells the client what to do,
    /// with a message naming the rule or limit; boundary values are
    /// accepted; and afterwards the node still serves what it stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_rpc_refuses_bad_input_clearly_and_keeps_serving() {
        let node = start_node_with(ServeOptions {
            request_timeout: Duration::from_secs(1),
            ..ServeOptions::default()
        })
        .await;
        let mut kv = KvClient::connect(node.client_uri())
            .await
            .expect("connect")
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let mut cluster = ClusterClient::connect(node.client_uri())
            .await
            .expect("connect");
        kv.put(put("kept", "still here")).await.expect("put");
        let max_key = Bytes::from(vec![b'k'; KEY_LIMIT]);
        let max_value = Bytes::from(vec![b'v'; VALUE_LIMIT]);
        let checks = vec![
            check(
                "empty key",
                ok(kv.put(put("", "v")).await),
                Code::InvalidArgument,
                "empty",
            ),
            check(
                "key at the limit",
                ok(kv.put(put(max_key.clone(), "v")).await),
                Code::Ok,
                "",
            ),
            check(
                "key one byte over",
                ok(kv.put(put(vec![b'k'; KEY_LIMIT + 1], "v")).await),
                Code::InvalidArgument,
                "key limit of 4096 bytes",
            ),
            check(
                "value at the limit",
                ok(kv.put(put("big", max_value.clone())).await),
                Code::Ok,
                "",
            ),
            check(
                "value one byte over",
                ok(kv.put(put("big", vec![b'v'; VALUE_LIMIT + 1])).await),
                Code::InvalidArgument,
                "value limit of 1048576 bytes",
            ),
            check(
                "a 2 MiB put",
                ok(kv.put(put("big", vec![b'v'; 2 << 20])).await),
                Code::InvalidArgument,
                "request limit",
            ),
            check(
                "a 20 MiB put",
                ok(kv.put(put("big", vec![b'v'; 20 << 20])).await),
                Code::InvalidArgument,
                "request limit",
            ),
            check(
                "get of an empty key",
                ok(kv.get(GetRequest::default()).await),
                Code::InvalidArgument,
                "empty",
            ),
            check(
                "unknown consistency",
                ok(kv
                    .get(GetRequest {
                        key: "kept".into(),
                        consistency: 99,
                        min_revision: 0,
                    })
                    .await),
                Code::InvalidArgument,
                "unknown consistency",
            ),
            check(
                "a min_revision far in the future",
                ok(kv
                    .get(GetRequest {
                        key: "kept".into(),
                        consistency: 2,
                        min_revision: u64::MAX,
                    })
                    .await),
                Code::Unavailable,
                "has not applied revision",
            ),
            check(
                "inverted range",
                ok(kv
                    .range(RangeRequest {
                        key: "b".into(),
                        range_end: "a".into(),
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "inverted range",
            ),
            check(
                "prefix with range_end",
                ok(kv
                    .range(RangeRequest {
                        key: "a".into(),
                        range_end: "b".into(),
                        prefix: true,
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "cannot be combined",
            ),
            check(
                "the whole keyspace with a huge limit",
                ok(kv
                    .range(RangeRequest {
                        limit: u64::MAX,
                        ..Default::default()
                    })
                    .await),
                Code::Ok,
                "",
            ),
            check(
                "delete of an empty key",
                ok(kv.delete(DeleteRequest::default()).await),
                Code::InvalidArgument,
                "empty",
            ),
            check(
                "inverted delete range",
                ok(kv
                    .delete(DeleteRequest {
                        key: "z".into(),
                        range_end: "a".into(),
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "inverted range",
            ),
            check(
                "a transaction of 129 operations",
                ok(kv
                    .txn(TxnRequest {
                        success: (0..129).map(|i| op_put(&format!("t{i}"))).collect(),
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "limit of 128",
            ),
            check(
                "a transaction of 128 operations",
                ok(kv
                    .txn(TxnRequest {
                        success: (0..128).map(|i| op_put(&format!("t{i}"))).collect(),
                        ..Default::default()
                    })
                    .await),
                Code::Ok,
                "",
            ),
            check(
                "a transaction whose puts pass the request limit",
                ok(kv
                    .txn(TxnRequest {
                        success: (0..3)
                            .map(|i| RequestOp {
                                request: Some(request_op::Request::Put(put(
                                    format!("t{i}"),
                                    vec![b'v'; 512 << 10],
                                ))),
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "request limit",
            ),
            check(
                "unknown compare target",
                ok(kv
                    .txn(TxnRequest {
                        compare: vec![Compare {
                            key: "kept".into(),
                            target: 42,
                            result: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "unknown compare target",
            ),
            check(
                "unknown compare result",
                ok(kv
                    .txn(TxnRequest {
                        compare: vec![Compare {
                            key: "kept".into(),
                            target: 1,
                            result: -3,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "unknown compare result",
            ),
            check(
                "an empty transaction operation",
                ok(kv
                    .txn(TxnRequest {
                        success: vec![RequestOp { request: None }],
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "empty",
            ),
            check(
                "a key written twice",
                ok(kv
                    .txn(TxnRequest {
                        success: vec![op_put("a"), op_put("a")],
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "at most once",
            ),
            check(
                "a watch of an empty key",
                ok(kv.watch(WatchRequest::default()).await),
                Code::InvalidArgument,
                "empty",
            ),
            check(
                "a watch of an inverted range",
                ok(kv
                    .watch(WatchRequest {
                        key: "b".into(),
                        range_end: "a".into(),
                        ..Default::default()
                    })
                    .await),
                Code::InvalidArgument,
                "inverted range",
            ),
            check(
                "a transfer to a member that does not exist",
                ok(cluster
                    .transfer_leadership(TransferLeadershipRequest { to_ordinal: 99 })
                    .await),
                Code::InvalidArgument,
                "ordinal 99 is not a voting member",
            ),
            check(
                "status",
                ok(cluster.status(StatusRequest {}).await),
                Code::Ok,
                "",
            ),
        ];
        let mut failures = Vec::new();
        for c in &checks {
            let (code, message) = match &c.got {
                Ok(()) => (Code::Ok, String::new()),
                Err(s) => (s.code(), s.message().to_string()),
            };
            println!("{:48} {code:?}: {message}", c.what);
            if code != c.code || !message.contains(c.says) {
                failures.push(format!(
                    "{}: expected {:?} saying {:?}, got {code:?}: {message}",
                    c.what, c.code, c.says
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let kept = kv
            .get(GetRequest {
                key: "kept".into(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner()
            .kv
            .expect("kept");
        assert_eq!(kept.value, Bytes::from("still here"));
        node.stop().await;
    }

    /// A thousand watches at once each see a write; then a client that
    /// opens and cancels watch streams a thousand times over leaves the node
    /// serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_watches_and_cancelled_streams() {
        let node = start_node_with(ServeOptions::default()).await;
        let kv = KvClient::connect(node.client_uri()).await.expect("connect");
        let mut streams = Vec::new();
        for _ in 0..1000 {
            let mut kv = kv.clone();
            let stream = kv
                .watch(WatchRequest {
                    key: "w/".into(),
                    prefix: true,
                    ..Default::default()
                })
                .await
                .expect("watch")
                .into_inner();
            streams.push(stream);
        }
        let mut writer = kv.clone();
        writer.put(put("w/1", "seen")).await.expect("put");
        let mut seen = 0;
        for mut s in streams {
            let msg = tokio::time::timeout(Duration::from_secs(30), s.message())
                .await
                .expect("an event in time")
                .expect("stream")
                .expect("a response");
            assert_eq!(
                msg.events[0].kv.as_ref().expect("kv").value,
                Bytes::from("seen")
            );
            seen += 1;
        }
        assert_eq!(seen, 1000);
        for i in 0..1000 {
            let mut client = kv.clone();
            let call = client.watch(WatchRequest {
                key: format!("c/{i}").into(),
                ..Default::default()
            });
            // Dropped at once, or after the stream opened.
            if i % 2 == 0 {
                drop(call);
            } else {
                drop(call.await);
            }
        }
        let got = writer
            .get(GetRequest {
                key: "w/1".into(),
                ..Default::default()
            })
            .await
            .expect("still serving");
        assert!(got.into_inner().kv.is_some());
        node.stop().await;
    }
}

mod flags {
    //! Bad flags: each makes `kvstore serve` exit by itself, non-zero, with
    //! a message naming the flag.

    use std::process::Command;
    use std::time::Duration;

    use kvstore_testkit::process::{kvstore_bin, run_bounded};

    /// Every bad flag value is refused at start-up, naming it.
    #[test]
    fn bad_flags_are_refused_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(&[&str], &str)] = &[
            (&["--max-value-bytes", "9000000"], "--max-value-bytes"),
            (&["--max-key-bytes", "0"], "--max-key-bytes"),
            (&["--max-key-bytes", "100000"], "--max-key-bytes"),
            (&["--cluster-id", "zz"], "--cluster-id"),
            (&["--cluster-id", "0"], "never 0"),
            (&["--quota-bytes=-5"], "--quota-bytes"),
            (&["--listen", "nowhere"], "--listen"),
            (&["--heartbeat-ms", "soon"], "--heartbeat-ms"),
            // A pod above the desired count starts and waits as a
            // non-member (tests/scaling.rs); one that can never be a member
            // is refused.
            (&["--node-name", "kvstore-64"], "ordinal 64"),
            (&["--node-name", "kvstore"], "ordinal"),
            (&["--log-format", "xml"], "--log-format"),
        ];
        let mut failures = Vec::new();
        for (n, (args, names)) in cases.iter().enumerate() {
            let mut cmd = Command::new(kvstore_bin());
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(dir.path().join(format!("d{n}")))
                .args(["--peer-listen", "127.0.0.1:0"]);
            if !args.contains(&"--listen") {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
            if !args.contains(&"--node-name") {
                cmd.args(["--node-name", "kvstore-0"]);
            }
            cmd.args(*args);
            let (code, _, stderr) = run_bounded(&mut cmd, Duration::from_secs(20));
            let line = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            println!("{args:?}: exit {code}: {line}");
            if code == 0 || code == -1 || !stderr.contains(names) {
                failures.push(format!("{args:?}: exit {code}, stderr: {stderr}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

mod limits {
    //! Limits the README names that only show over gRPC.

    use std::time::Duration;

    use bytes::Bytes;
    use kvstore::proto::kv::kv_client::KvClient;
    use kvstore::proto::kv::{
        request_op, DeleteRequest, GetRequest, PutRequest, RequestOp, TxnRequest, WatchRequest,
    };
    use kvstore::server::ServeOptions;
    use tonic::Code;

    use kvstore_testkit::in_process::start_node_with;

    fn put(key: String, value: Bytes) -> PutRequest {
        PutRequest {
            key: key.into(),
            value,
            prev_kv: false,
        }
    }

    /// A delete with prev_kv over more than 8 MiB of values is refused
    /// with RESOURCE_EXHAUSTED, and deletes nothing; without prev_kv it
    /// deletes them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_with_prev_kv_is_bounded() {
        let node = start_node_with(ServeOptions::default()).await;
        let mut kv = KvClient::connect(node.client_uri())
            .await
            .expect("connect")
            .max_encoding_message_size(16 << 20)
            .max_decoding_message_size(64 << 20);
        let value = Bytes::from(vec![b'v'; 1 << 20]);
        for i in 0..10 {
            kv.put(put(format!("d/{i}"), value.clone()))
                .await
                .expect("put");
        }
        let delete = |prev_kv| DeleteRequest {
            key: "d/".into(),
            prefix: true,
            prev_kv,
            ..Default::default()
        };
        let err = kv
            .delete(delete(true))
            .await
            .expect_err("too much to return");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("8 MiB"), "{}", err.message());
        let kept = kv
            .get(GetRequest {
                key: "d/9".into(),
                ..Default::default()
            })
            .await
            .expect("get");
        assert!(kept.into_inner().kv.is_some(), "nothing was deleted");
        let done = kv.delete(delete(false)).await.expect("delete").into_inner();
        assert_eq!(done.deleted, 10);
        node.stop().await;
    }

    /// A revision's events are split across watch responses of about 1 MiB.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_responses_are_bounded() {
        let node = start_node_with(ServeOptions::default()).await;
        let mut kv = KvClient::connect(node.client_uri()).await.expect("connect");
        let mut watch = kv
            .clone()
            .watch(WatchRequest {
                key: "w/".into(),
                prefix: true,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        let value = Bytes::from(vec![b'v'; 350 << 10]);
        kv.txn(TxnRequest {
            success: (0..3)
                .map(|i| RequestOp {
                    request: Some(request_op::Request::Put(put(
                        format!("w/{i}"),
                        value.clone(),
                    ))),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("txn");
        let mut responses = Vec::new();
        let mut events = 0;
        while events < 3 {
            let resp = tokio::time::timeout(Duration::from_secs(10), watch.message())
                .await
                .expect("in time")
                .expect("stream")
                .expect("a response");
            events += resp.events.len();
            responses.push(resp.events.len());
        }
        assert!(
            responses.len() >= 2,
            "1,050 KiB of events of one revision in responses of {responses:?} events"
        );
        node.stop().await;
    }
}
