//! Requests too large to decode answer INVALID_ARGUMENT naming the limit.
//!
//! tonic refuses a message over the decoding limit before any handler runs,
//! with OUT_OF_RANGE "decoded message length too large"; to a client that
//! reads as "start later", not "fix your request". This layer rewrites that
//! one answer, as every other input error is answered.

use http::HeaderValue;
use tower::util::MapResponseLayer;

/// The gRPC code tonic answers an oversized request with.
const OUT_OF_RANGE: &str = "11";
/// INVALID_ARGUMENT.
const INVALID_ARGUMENT: &str = "3";

/// The layer, for a server whose requests may be at most `limit` bytes.
pub fn layer<B>(
    limit: usize,
) -> MapResponseLayer<impl Fn(http::Response<B>) -> http::Response<B> + Clone> {
    MapResponseLayer::new(move |mut response: http::Response<B>| {
        rewrite(response.headers_mut(), limit);
        response
    })
}

fn rewrite(headers: &mut http::HeaderMap, limit: usize) {
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("decoded%20message%20length%20too%20large"));
    if !oversized {
        return;
    }
    let message = format!(
        "the request is larger than the request limit of {limit} bytes (one key of at most --max-key-bytes, one value of at most --max-value-bytes, and room for framing; a transaction's operations together)"
    );
    headers.insert("grpc-status", HeaderValue::from_static(INVALID_ARGUMENT));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
}

/// gRPC's percent-encoding of a message header.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only tonic's oversized-message answer is rewritten.
    #[test]
    fn only_the_oversized_answer_changes() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%205%20bytes",
            ),
        );
        rewrite(&mut h, 100);
        assert_eq!(h["grpc-status"], "3");
        assert!(h["grpc-message"]
            .to_str()
            .expect("ascii")
            .contains("limit of 100 bytes"));
        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert(
            "grpc-message",
            HeaderValue::from_static("revision%205%20is%20compacted"),
        );
        rewrite(&mut other, 100);
        assert_eq!(other["grpc-status"], "11");
    }
}
