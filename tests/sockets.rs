//! Socket options of accepted connections: both servers turn Nagle's
//! algorithm off (a response that carries a value must not wait for the
//! client's delayed ACK) and turn TCP keepalive on (a peer that vanished
//! without a reset must not hold a connection forever).

use std::net::SocketAddr;
use std::os::fd::RawFd;

use kvstore::proto::kv::kv_client::KvClient;
use kvstore::proto::kv::GetRequest;
use kvstore::proto::peer::peer_client::PeerClient;
use kvstore::proto::peer::ReadIndexRequest;
use kvstore_testkit::in_process::start_node;

fn sockopt(fd: RawFd, level: i32, name: i32) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt on fd {fd}");
    value
}

fn address(fd: RawFd, peer: bool) -> Option<SocketAddr> {
    // SAFETY: the storage is large enough for any socket address, and the
    // kernel writes at most `len` bytes.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let ptr = &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr;
        let rc = if peer {
            libc::getpeername(fd, ptr, &mut len)
        } else {
            libc::getsockname(fd, ptr, &mut len)
        };
        if rc != 0 || i32::from(storage.ss_family) != libc::AF_INET {
            return None;
        }
        let v4 = &*(ptr as *const libc::sockaddr_in);
        Some(SocketAddr::from((
            u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
            u16::from_be(v4.sin_port),
        )))
    }
}

/// The connected sockets of this process whose local end is `server`: the
/// connections that server accepted.
fn accepted_by(server: SocketAddr) -> Vec<RawFd> {
    let mut fds = Vec::new();
    for item in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(item) = item else { continue };
        let Ok(fd) = item.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let is_socket = std::fs::read_link(item.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if is_socket && address(fd, false) == Some(server) && address(fd, true).is_some() {
            fds.push(fd);
        }
    }
    fds
}

fn assert_options(what: &str, server: SocketAddr) {
    let fds = accepted_by(server);
    assert!(!fds.is_empty(), "{what}: no accepted connection found");
    for fd in fds {
        assert_eq!(
            sockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY),
            1,
            "{what}: an accepted socket has Nagle's algorithm on"
        );
        assert_eq!(
            sockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            1,
            "{what}: an accepted socket has no TCP keepalive"
        );
    }
}

/// Every connection the client and the peer server accept has TCP_NODELAY
/// and SO_KEEPALIVE set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_nodelay_and_keepalive() {
    let node = start_node().await;
    let mut kv = KvClient::connect(node.client_uri()).await.expect("connect");
    kv.get(GetRequest {
        key: "k".into(),
        ..Default::default()
    })
    .await
    .expect("get");
    let mut peer = PeerClient::connect(node.peer_uri()).await.expect("connect");
    // The answer does not matter (a one-member node may refuse); the
    // connection is what is checked.
    let _ = peer.read_index(ReadIndexRequest { cluster_id: 0 }).await;
    assert_options("client server", node.client_addr);
    assert_options("peer server", node.peer_addr);
    drop((kv, peer));
    node.stop().await;
}
