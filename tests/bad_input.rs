//! Bad input over every RPC and at the HTTP/2 layer: each gets a clear
//! error, nothing crashes, and nothing already stored is lost. Runs against
//! an in-process node (real servers on port 0, a real sled dir).

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::in_process::start_node;
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
