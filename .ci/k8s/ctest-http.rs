//! A one-request HTTP client for .ci/k8s/container-test.sh: it plays
//! Prometheus (and the kubelet) from a container of its own on the test's
//! network, where no image with curl or Python can be pulled. The test
//! compiles it with plain `rustc` (std only) and runs it on the same
//! imported glibc base as the kvstore image.
//!
//! usage: ctest-http http://HOST:PORT/PATH
//!
//! Prints the response body to stdout. Exits 0 on status 200, 1 on any
//! other status (printed to stderr), 2 when there is no answer within 5 s.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    conn.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: the server closes the connection after the response and
    // sends the body as it is (no chunked encoding), so reading to the end
    // is reading the body.
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: kvstore-ctest\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .map_err(|e| format!("{addr}: {e}"))?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no complete response header"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr}: bad status line in {head:?}"))?;
    Ok((status, raw[head_end + 4..].to_vec()))
}

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: ctest-http http://HOST:PORT/PATH");
        return ExitCode::from(2);
    };
    match get(&url) {
        Ok((status, body)) => {
            let _ = std::io::stdout().write_all(&body);
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                eprintln!("ctest-http: {url}: HTTP {status}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ctest-http: {e}");
            ExitCode::from(2)
        }
    }
}
