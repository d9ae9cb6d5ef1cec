//! Layer: a short-lived cache of anonymous responses on cacheable routes, with request
//! coalescing and serve-stale-on-error.
//!
//! Only `GET` requests on routes marked `cacheable`, from callers the edge did not
//! authenticate and that sent no credentials (no `Authorization`, `X-Api-Key` or
//! `Cookie`), are cached; personalised responses never are. The key is the path and
//! query plus `Accept` and `Accept-Encoding` (the market travels in the query). A
//! response is kept for `ttl_ms` (default 1 s) when it is a 200 or 404, sets no cookie,
//! is not `private`/`no-store`, and its body is at most `max_body_bytes`. Concurrent
//! requests for a missing or expired key **coalesce**: one goes upstream, the others
//! wait for its answer — one upstream call per key per TTL however many clients ask.
//! When that call fails (5xx, or a non-cacheable answer) and the previous copy is at most
//! `stale_ms` old, the previous copy is served (and kept) instead. Every answer on a
//! cacheable route carries `Age` and `x-cache: HIT | MISS | STALE | BYPASS`.
//! Memory is bounded by `max_bytes` (bodies and keys, evicted by quick_cache).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AGE, AUTHORIZATION, CACHE_CONTROL, COOKIE, SET_COOKIE,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::rate_limit::Caller;
use crate::auth::authenticator::API_KEY_HEADER;
use crate::routes::RouteTable;

/// Header saying how the micro-cache answered.
pub const CACHE_STATUS: &str = "x-cache";
/// Counter: micro-cache answers, labelled `status` (`hit`, `miss`, `stale`).
pub const ANSWERS_TOTAL: &str = "surge_edge_microcache_answers_total";

/// Micro-cache settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicroCacheConfig {
    /// How long an answer is served from the cache, in ms. 0 turns the cache off.
    /// Default 1,000.
    pub ttl_ms: u64,
    /// How old a copy may be and still be served when the upstream fails, in ms.
    /// Default 10,000.
    pub stale_ms: u64,
    /// Bodies and keys held at most, in bytes. Default 64 MiB.
    pub max_bytes: u64,
    /// Largest body cached, in bytes (larger answers pass through). Default 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for MicroCacheConfig {
    fn default() -> Self {
        MicroCacheConfig {
            ttl_ms: 1_000,
            stale_ms: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// One cached answer.
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Arc<Entry>> for Weight {
    fn weight(&self, key: &String, entry: &Arc<Entry>) -> u64 {
        (key.len() + entry.body.len() + 64 * entry.headers.len() + 128) as u64
    }
}

type Store = quick_cache::sync::Cache<String, Arc<Entry>, Weight>;

/// The cache, shared by every connection.
pub struct MicroCache {
    config: MicroCacheConfig,
    store: Store,
    routes: Arc<RouteTable>,
}

impl MicroCache {
    /// A cache for the `cacheable` routes of `routes`.
    pub fn new(config: MicroCacheConfig, routes: Arc<RouteTable>) -> Self {
        let estimated = (config.max_bytes / 16_384).clamp(64, 1_000_000) as usize;
        MicroCache {
            store: Store::with_weighter(estimated, config.max_bytes.max(1), Weight),
            config,
            routes,
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.config.ttl_ms)
    }

    fn stale(&self) -> Duration {
        Duration::from_millis(self.config.stale_ms)
    }
}

fn respond(entry: &Entry, status: &'static str) -> Response {
    metrics::counter!(ANSWERS_TOTAL, "status" => status).increment(1);
    let mut r = Response::new(Body::from(entry.body.clone()));
    *r.status_mut() = entry.status;
    *r.headers_mut() = entry.headers.clone();
    let age = entry.stored.elapsed().as_secs();
    r.headers_mut().insert(AGE, HeaderValue::from(age));
    r.headers_mut()
        .insert(CACHE_STATUS, HeaderValue::from_static(status_value(status)));
    r
}

fn status_value(status: &'static str) -> &'static str {
    match status {
        "hit" => "HIT",
        "stale" => "STALE",
        _ => "MISS",
    }
}

fn cacheable_answer(r: &Response) -> bool {
    let h = r.headers();
    matches!(r.status(), StatusCode::OK | StatusCode::NOT_FOUND)
        && !h.contains_key(SET_COOKIE)
        && !h
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("private") || v.contains("no-store"))
}

/// Calls upstream; returns the answer to give and, if it may be stored, the entry.
async fn fetch<S>(
    inner: S,
    request: Request<Body>,
    max_body: usize,
) -> (Response, Option<Arc<Entry>>)
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let Ok(response) = inner.oneshot(request).await;
    if !cacheable_answer(&response) {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match http_body_util::Limited::new(body, max_body).collect().await {
        Ok(collected) => {
            let entry = Arc::new(Entry {
                status: parts.status,
                headers: parts.headers,
                body: collected.to_bytes(),
                stored: Instant::now(),
            });
            (respond(&entry, "miss"), Some(entry))
        }
        Err(e) => {
            // Too large to cache, or the body broke: the client gets a clean error
            // rather than a truncated body.
            tracing::warn!(error = %e, "micro-cache could not read an upstream body");
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            (r, None)
        }
    }
}

/// The layer.
#[derive(Clone)]
pub struct MicroCacheLayer {
    cache: Arc<MicroCache>,
}

impl MicroCacheLayer {
    /// A layer over `cache`.
    pub fn new(cache: Arc<MicroCache>) -> Self {
        MicroCacheLayer { cache }
    }
}

impl<S> Layer<S> for MicroCacheLayer {
    type Service = MicroCached<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MicroCached {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service the layer wraps.
#[derive(Clone)]
pub struct MicroCached<S> {
    inner: S,
    cache: Arc<MicroCache>,
}

pub use future::MicroCacheFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::response::Response;
    use futures_util::future::BoxFuture;

    pin_project_lite::pin_project! {
        /// The future of one request through the layer.
        #[project = MicroCacheFutureProj]
        pub enum MicroCacheFuture<F> {
            /// Not a cacheable request: straight through.
            Pass { #[pin] call: F },
            /// A cacheable route, but a personal or non-GET request: through, marked.
            Bypass { #[pin] call: F },
            /// Answered from, or through, the cache.
            Cached { future: BoxFuture<'static, Result<Response, Infallible>> },
        }
    }

    impl<F> Future for MicroCacheFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                MicroCacheFutureProj::Pass { call } => call.poll(cx),
                MicroCacheFutureProj::Bypass { call } => match call.poll(cx) {
                    Poll::Ready(Ok(mut r)) => {
                        r.headers_mut().insert(
                            super::CACHE_STATUS,
                            http::HeaderValue::from_static("BYPASS"),
                        );
                        Poll::Ready(Ok(r))
                    }
                    other => other,
                },
                MicroCacheFutureProj::Cached { future } => future.as_mut().poll(cx),
            }
        }
    }
}

fn key(request: &Request<Body>) -> String {
    let h = request.headers();
    let get = |name| {
        h.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    let pq = request.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{pq}\n{}\n{}", get(ACCEPT), get(ACCEPT_ENCODING))
}

impl<S> Service<Request<Body>> for MicroCached<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MicroCacheFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let cache = &self.cache;
        let route_cacheable = cache
            .routes
            .find(request.uri().path())
            .is_some_and(|r| r.cacheable);
        if !route_cacheable || cache.config.ttl_ms == 0 {
            return MicroCacheFuture::Pass {
                call: self.inner.call(request),
            };
        }
        let h = request.headers();
        let anonymous = request.extensions().get::<Caller>().is_none()
            && !h.contains_key(AUTHORIZATION)
            && !h.contains_key(API_KEY_HEADER)
            && !h.contains_key(COOKIE);
        if request.method() != Method::GET || !anonymous {
            return MicroCacheFuture::Bypass {
                call: self.inner.call(request),
            };
        }
        let key = key(&request);
        let ttl = cache.ttl();
        let previous = cache.store.get(&key);
        if let Some(entry) = &previous
            && entry.stored.elapsed() < ttl
        {
            let response = respond(entry, "hit");
            return MicroCacheFuture::Cached {
                future: Box::pin(async move { Ok(response) }),
            };
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let cache = cache.clone();
        MicroCacheFuture::Cached {
            future: Box::pin(async move {
                if previous.is_some() {
                    // Expired: the next arrival goes upstream, the rest wait for it.
                    cache.store.remove(&key);
                }
                let guard = match cache.store.get_value_or_guard_async(&key).await {
                    Ok(fresh) => return Ok(respond(&fresh, "hit")),
                    Err(guard) => guard,
                };
                let (response, entry) = fetch(inner, request, cache.config.max_body_bytes).await;
                if let Some(entry) = entry {
                    let _ = guard.insert(entry);
                    return Ok(response);
                }
                let stale = previous.filter(|p| {
                    response.status().is_server_error() && p.stored.elapsed() < cache.stale()
                });
                match stale {
                    Some(p) => {
                        let answer = respond(&p, "stale");
                        let _ = guard.insert(p);
                        Ok(answer)
                    }
                    None => Ok(response),
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    use super::*;
    use crate::routes::{Access, Route};

    fn routes() -> Arc<RouteTable> {
        let route = |prefix: &str, cacheable| Route {
            prefix: prefix.into(),
            upstream: "catalog".into(),
            access: Access::Public,
            authenticators: vec![],
            cacheable,
            class: "browse".into(),
            timeout_ms: None,
            fallback: None,
        };
        Arc::new(
            RouteTable::new(vec![route("/products", true), route("/auth", false)], &[]).unwrap(),
        )
    }

    /// An upstream that counts calls, takes 10 ms, and answers with `status`.
    #[derive(Clone, Default)]
    struct Upstream {
        calls: Arc<AtomicUsize>,
        status: Arc<AtomicU16>,
    }

    impl Upstream {
        fn service(
            &self,
        ) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static {
            let u = self.clone();
            u.status.store(200, Ordering::SeqCst);
            tower::service_fn(move |req: Request<Body>| {
                let u = u.clone();
                async move {
                    let n = u.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let mut r = Response::new(Body::from(format!("{} #{n}", req.uri().path())));
                    *r.status_mut() =
                        StatusCode::from_u16(u.status.load(Ordering::SeqCst)).unwrap();
                    Ok::<_, Infallible>(r)
                }
            })
        }
    }

    async fn get(
        svc: &MicroCached<
            impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
            + Clone
            + Send
            + 'static,
        >,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, String) {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = svc
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let cache = r
            .headers()
            .get(CACHE_STATUS)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (status, cache, body)
    }

    fn layer(
        up: &Upstream,
    ) -> MicroCached<
        impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
    > {
        let cache = Arc::new(MicroCache::new(MicroCacheConfig::default(), routes()));
        MicroCacheLayer::new(cache).layer(up.service())
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_concurrent_clients_make_one_upstream_call_per_ttl() {
        let up = Upstream::default();
        let svc = layer(&up);
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { get(&svc, "/products/HOT", &[]).await })
            })
            .collect();
        let mut misses = 0;
        for t in tasks {
            let (status, cache, body) = t.await.unwrap();
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "/products/HOT #1")
            );
            misses += usize::from(cache == "MISS");
        }
        assert_eq!(up.calls.load(Ordering::SeqCst), 1, "one upstream call");
        assert_eq!(misses, 1);
        // Within the TTL: a hit; after it: one more call.
        assert_eq!(get(&svc, "/products/HOT", &[]).await.1, "HIT");
        tokio::time::advance(Duration::from_millis(1_100)).await;
        let (_, cache, body) = get(&svc, "/products/HOT", &[]).await;
        assert_eq!(
            (cache.as_str(), body.as_str()),
            ("MISS", "/products/HOT #2")
        );
        assert_eq!(up.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn personal_and_uncacheable_requests_bypass_and_keys_vary() {
        let up = Upstream::default();
        let svc = layer(&up);
        assert_eq!(
            get(&svc, "/products/A", &[("authorization", "Bearer t")])
                .await
                .1,
            "BYPASS"
        );
        assert_eq!(
            get(&svc, "/products/A", &[("cookie", "surge_access=t")])
                .await
                .1,
            "BYPASS"
        );
        assert_eq!(
            get(&svc, "/auth/x", &[]).await.1,
            "",
            "not a cacheable route"
        );
        assert_eq!(get(&svc, "/products/A", &[]).await.1, "MISS");
        assert_eq!(
            get(&svc, "/products/A", &[("accept-encoding", "gzip")])
                .await
                .1,
            "MISS"
        );
        assert_eq!(get(&svc, "/products/A?market=FR", &[]).await.1, "MISS");
        assert_eq!(get(&svc, "/products/A", &[]).await.1, "HIT");
        assert_eq!(up.calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_upstream_is_covered_by_the_stale_copy() {
        let up = Upstream::default();
        let svc = layer(&up);
        assert_eq!(get(&svc, "/products/B", &[]).await.2, "/products/B #1");
        up.status.store(503, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let (status, cache, body) = get(&svc, "/products/B", &[]).await;
        assert_eq!(
            (status, cache.as_str(), body.as_str()),
            (StatusCode::OK, "STALE", "/products/B #1")
        );
        // Past the stale window the failure shows.
        tokio::time::advance(Duration::from_secs(11)).await;
        let (status, _, _) = get(&svc, "/products/B", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
