//! Layer: bound what a request may cost before and while it reaches an upstream.
//!
//! A declared body (`Content-Length`) over `max_body_bytes` is answered 413 at once; a
//! body without a length is wrapped so the upstream's read fails past the limit. The
//! upstream call (including reading the body) gets `timeout`; past it the edge answers
//! 504 and drops the call. Both answers use the one problem+json shape.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use http::header::CONTENT_LENGTH;
use surge_http::{Problem, ProblemKind};
use tower::{Layer, Service};

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest an upstream call may take.
    pub timeout: Duration,
}

/// The layer.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimitsLayer(pub RequestLimits);

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            limits: self.0,
        }
    }
}

/// The service the layer wraps.
#[derive(Debug, Clone)]
pub struct Limit<S> {
    inner: S,
    limits: RequestLimits,
}

impl<S> Service<Request<Body>> for Limit<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limits = self.limits;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            let detail = format!("the body is larger than {} bytes", limits.max_body_bytes);
            return LimitFuture::Refused {
                response: Some(Problem::new(ProblemKind::PayloadTooLarge, detail).into_response()),
            };
        }
        // A request that declares no body more than the limit, or is empty, goes as it is.
        let bounded = declared.is_some() || axum::body::HttpBody::is_end_stream(request.body());
        let call = if bounded {
            self.inner.call(request)
        } else {
            let (parts, body) = request.into_parts();
            let body = Body::new(http_body_util::Limited::new(body, limits.max_body_bytes));
            self.inner.call(Request::from_parts(parts, body))
        };
        LimitFuture::Timed {
            call: tokio::time::timeout(limits.timeout, call),
            after: limits.timeout,
        }
    }
}

pub use future::LimitFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::response::{IntoResponse, Response};
    use surge_http::{Problem, ProblemKind};

    pin_project_lite::pin_project! {
        /// The future of one request through the layer (nothing boxed).
        #[project = LimitFutureProj]
        pub enum LimitFuture<F> {
            /// Refused before the upstream was called (413).
            Refused { response: Option<Response> },
            /// The upstream call under its timeout.
            Timed { #[pin] call: tokio::time::Timeout<F>, after: Duration },
        }
    }

    impl<F> Future for LimitFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                LimitFutureProj::Refused { response } => {
                    Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        Problem::new(ProblemKind::Internal, "polled after completion")
                            .into_response()
                    })))
                }
                LimitFutureProj::Timed { call, after } => match call.poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(response)) => Poll::Ready(response),
                    Poll::Ready(Err(_)) => Poll::Ready(Ok(Problem::new(
                        ProblemKind::GatewayTimeout,
                        format!(
                            "the upstream did not answer within {} ms",
                            after.as_millis()
                        ),
                    )
                    .into_response())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Limit<axum::routing::RouterIntoService<Body>> {
        let upstream = Router::new()
            .route(
                "/echo",
                post(|body: Body| async move {
                    match body.collect().await {
                        Ok(b) => (StatusCode::OK, format!("{} bytes", b.to_bytes().len())),
                        Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too large".to_owned()),
                    }
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            );
        RequestLimitsLayer(RequestLimits {
            max_body_bytes: 16,
            timeout: Duration::from_secs(2),
        })
        .layer(upstream.into_service())
    }

    async fn send(req: Request<Body>) -> (StatusCode, String) {
        let r = app().oneshot(req).await.unwrap();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn declared_bodies_over_the_limit_are_refused_before_the_upstream() {
        let (status, body) = send(
            Request::post("/echo")
                .header(CONTENT_LENGTH, "17")
                .body(Body::from("x".repeat(17)))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains("payload-too-large"), "{body}");
        let (status, body) = send(
            Request::post("/echo")
                .body(Body::from("x".repeat(16)))
                .unwrap(),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "16 bytes"));
    }

    #[tokio::test]
    async fn undeclared_bodies_stop_at_the_limit() {
        let stream = futures_util::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"123456"))),
        );
        let (status, _) = send(
            Request::post("/echo")
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_upstreams_time_out_with_504() {
        let (status, body) = send(Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(body.contains("gateway-timeout"), "{body}");
    }
}
