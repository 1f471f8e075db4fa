//! A tower layer that counts and times every RPC of the client port:
//! `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}` and
//! `grpc_server_handling_seconds`, the names go-grpc-prometheus gives them.
//!
//! A gRPC status travels either in the response headers (an error before
//! any message: "trailers-only") or in the trailers after the body, so the
//! layer looks at the headers first and otherwise watches the body for its
//! trailers. A body dropped before its trailers (the client went away, a
//! watch cancelled) counts as `Canceled`. Calls answered UNIMPLEMENTED
//! (a path no service serves) share one `unknown` series, so that the
//! series stay bounded whatever paths clients send.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::metrics::{GrpcMetrics, RpcCodeLabels, RpcLabels};

/// The layer, measuring into `metrics`.
#[derive(Clone)]
pub struct MeteredLayer {
    metrics: GrpcMetrics,
}

impl MeteredLayer {
    /// Measures into `metrics`.
    pub fn new(metrics: GrpcMetrics) -> Self {
        MeteredLayer { metrics }
    }
}

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call {
            rpc: rpc_of(request.uri().path()),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        };
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// One RPC being measured; recorded once, with its status.
struct Call {
    rpc: RpcLabels,
    started: Instant,
    metrics: GrpcMetrics,
}

impl Call {
    fn finish(mut self, grpc_code: &'static str) {
        // A path no service serves is answered UNIMPLEMENTED: one series
        // for all of them, or any client could add series without end.
        if grpc_code == "Unimplemented" {
            self.rpc = RpcLabels {
                grpc_service: "unknown".to_string(),
                grpc_method: "unknown".to_string(),
            };
        }
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics
            .handling
            .get_or_create(&self.rpc)
            .observe(seconds);
        let labels = RpcCodeLabels {
            grpc_service: self.rpc.grpc_service,
            grpc_method: self.rpc.grpc_method,
            grpc_code,
        };
        self.metrics.handled.get_or_create(&labels).inc();
    }
}

pin_project! {
    /// The response future: finds the status in the headers, or hands the
    /// call to the body.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                let in_headers = status_in(response.headers());
                let call = match (call, in_headers) {
                    (Some(call), Some(code)) => {
                        call.finish(code);
                        None
                    }
                    (call, _) => call,
                };
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(e) => {
                // The connection failed under the call: no status was sent.
                if let Some(call) = call {
                    call.finish("Unavailable");
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response body: records the call when its trailers pass, or when
    /// it ends or is dropped without them.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish("Canceled");
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => f.trailers_ref().map(|t| status_in(t).unwrap_or("Unknown")),
            Some(Err(_)) => Some("Internal"),
            None => Some("Unknown"),
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.finish(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `/kvstore.v1.KV/Put` -> (`kvstore.v1.KV`, `Put`). A path that is no
/// gRPC method keeps its whole text as the method, under service `unknown`.
fn rpc_of(path: &str) -> RpcLabels {
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => RpcLabels {
            grpc_service: service.to_string(),
            grpc_method: method.to_string(),
        },
        _ => RpcLabels {
            grpc_service: "unknown".to_string(),
            grpc_method: path.to_string(),
        },
    }
}

/// The status code named in `headers`, if any.
fn status_in(headers: &http::HeaderMap) -> Option<&'static str> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(code_name(tonic::Code::from_i32(code)))
}

/// gRPC's own spelling of each code (Go's `codes.Code.String()`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "Canceled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_service_and_method() {
        let rpc = rpc_of("/kvstore.v1.KV/Put");
        assert_eq!(rpc.grpc_service, "kvstore.v1.KV");
        assert_eq!(rpc.grpc_method, "Put");
        assert_eq!(rpc_of("/odd").grpc_service, "unknown");
    }

    /// However many paths clients try, the unanswered ones are one series.
    #[test]
    fn unimplemented_paths_share_one_series() {
        let metrics = GrpcMetrics::default();
        for path in ["/a.B/C", "/d.E/F", "/kvstore.v1.KV/Nope"] {
            let call = Call {
                rpc: rpc_of(path),
                started: Instant::now(),
                metrics: metrics.clone(),
            };
            call.finish("Unimplemented");
        }
        let unknown = RpcCodeLabels {
            grpc_service: "unknown".into(),
            grpc_method: "unknown".into(),
            grpc_code: "Unimplemented",
        };
        assert_eq!(metrics.handled.get_or_create(&unknown).get(), 3);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("handled", "", metrics.handled.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert_eq!(text.matches("grpc_method=").count(), 1, "{text}");
    }

    #[test]
    fn codes_take_grpc_spelling() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status_in(&headers), Some("Unavailable"));
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(status_in(&headers), Some("OK"));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_in(&headers), None);
    }
}
