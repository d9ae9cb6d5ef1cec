//! Prometheus metrics: one process-wide recorder, the `/metrics` handler, and the
//! middleware that counts and times every request by route.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

/// Counter: HTTP requests, labelled `route` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "surge_http_requests_total";
/// Histogram: HTTP request duration until the response head, labelled `route`.
pub const HTTP_REQUEST_SECONDS: &str = "surge_http_request_duration_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (later calls reuse it).
/// Returns `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            Some(handle)
        })
        .as_ref()
}

/// `GET /metrics`: every metric in Prometheus text format.
pub async fn render() -> Response {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                )],
                handle.render(),
            )
                .into_response()
        }
        None => crate::Problem::new(
            crate::ProblemKind::Unavailable,
            "metrics recorder not installed",
        )
        .into_response(),
    }
}

/// The metric handles of one (route, status), resolved once: the hot path then
/// updates atomics instead of building label sets and looking names up.
#[derive(Clone)]
struct RouteHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// status → route → handles (`Box<str>` keys can be looked up by `&str`).
type HandleMap = HashMap<u16, HashMap<Box<str>, RouteHandles>>;

static ROUTE_HANDLES: LazyLock<RwLock<HandleMap>> = LazyLock::new(Default::default);

fn route_handles(route: &str, status: u16) -> RouteHandles {
    if let Some(h) = ROUTE_HANDLES.read().ok().and_then(|map| {
        map.get(&status)
            .and_then(|routes| routes.get(route))
            .cloned()
    }) {
        return h;
    }
    let handles = RouteHandles {
        requests: metrics::counter!(HTTP_REQUESTS_TOTAL, "route" => route.to_owned(), "status" => status_label(status)),
        duration: metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route.to_owned()),
    };
    if let Ok(mut map) = ROUTE_HANDLES.write() {
        map.entry(status)
            .or_default()
            .insert(route.into(), handles.clone());
    }
    handles
}

/// Middleware: counts and times each request by its matched route, inside a
/// `request` span with stable fields (`method`, `route`, `status`).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::debug_span!("request", method = %request.method(), route = %route, status = tracing::field::Empty);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    let handles = route_handles(route, status);
    handles.duration.record(started.elapsed().as_secs_f64());
    handles.requests.increment(1);
    response
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        406 => "406",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// A process's own liveness, readiness and metrics (`/healthz`, `/readyz`,
/// `/metrics`), for a node whose roles have none of their own: an edge in front of
/// remote catalog nodes, an inventory or payments node.
pub fn ops_router() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(render))
}
