//! `--max-connection-age-s`: a client connection older than the limit is
//! asked to go (HTTP/2 GOAWAY) and closes, so that clients spread over the
//! pods again after one comes back; without the limit it stays open.

use std::time::Duration;

use kvstore::server::ServeOptions;
use kvstore_testkit::in_process::start_node_with;
use tokio::net::TcpStream;

/// Whether a raw HTTP/2 connection to `addr` is closed by the server
/// within `within`.
async fn closed_by_server(addr: std::net::SocketAddr, within: Duration) -> bool {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (_client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // `_client` is kept: dropping it would close the connection from our
    // side.
    tokio::time::timeout(within, connection).await.is_ok()
}

#[tokio::test]
async fn an_old_connection_is_asked_to_go() {
    let node = start_node_with(ServeOptions {
        max_connection_age: Some(Duration::from_secs(1)),
        ..ServeOptions::default()
    })
    .await;
    assert!(
        closed_by_server(node.client_addr, Duration::from_secs(20)).await,
        "the connection outlived its age"
    );
}

#[tokio::test]
async fn without_a_limit_a_connection_stays() {
    let node = start_node_with(ServeOptions::default()).await;
    assert!(
        !closed_by_server(node.client_addr, Duration::from_secs(3)).await,
        "the server closed a connection without an age limit"
    );
}
