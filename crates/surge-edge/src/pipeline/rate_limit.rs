//! Layer: per-IP and per-caller rate limits (GCRA, `governor`), per route class.
//!
//! The layer runs twice in the pipeline: the `ip` rules before authentication (a flood of
//! bad credentials is limited before any signature is checked), the `user` rules after
//! it. Each rule names the route classes it covers, what it keys on (`ip`: the client
//! address; `user`: the caller the edge authenticated — user id, or API key id for
//! partners; requests without one are not counted by a `user` rule) and a quota
//! (`requests` per `per_seconds`, `burst`). A request passes only if every rule that
//! applies has budget; a refused request gets 429 `too-many-requests` with `Retry-After`
//! (from the limiter) and the IETF `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers); allowed responses carry them too, for the rule
//! with the least budget left. A **shadow** rule only counts and logs what it would
//! refuse. Key state is bounded: a sweep (on a timer, and when a rule reaches
//! `max_keys`) drops keys whose budget is full again; a rule still at `max_keys` after
//! a sweep puts new keys into one shared overflow bucket, so a flood of fresh addresses
//! is limited together instead of growing memory.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, Request};
use serde::{Deserialize, Serialize};
use surge_http::{Problem, ProblemKind};
use tower::{Layer, Service};

use crate::routes::RouteTable;

/// Counter: rate-limit decisions, labelled `rule` and `decision` (`allowed`, `limited`,
/// `shadow_limited`).
pub const DECISIONS_TOTAL: &str = "surge_edge_ratelimit_decisions_total";

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyBy {
    /// The client's address.
    Ip,
    /// The authenticated caller (user id, or API key id).
    User,
}

/// One rate-limit rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Name, used in `RateLimit-Policy` and metrics (`[A-Za-z0-9_-]`).
    pub name: String,
    /// Route classes it covers; empty: every class.
    #[serde(default)]
    pub classes: Vec<String>,
    /// What it counts by.
    pub key: KeyBy,
    /// Requests allowed per `per_seconds`.
    pub requests: u32,
    /// The window of `requests`, in seconds.
    pub per_seconds: u32,
    /// Requests allowed at once (default: `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Count and log what would be refused, refuse nothing.
    #[serde(default)]
    pub shadow: bool,
}

/// The authenticated caller (user id, or API key id), put into the request by the
/// authentication layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller(pub Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Caller(Arc<str>),
    /// The shared bucket of keys that found a full table.
    Overflow,
}

type Limiter<C> = RateLimiter<Key, DashMapStateStore<Key>, C, StateInformationMiddleware>;

struct Rule<C: Clock> {
    spec: RateRule,
    limiter: Limiter<C>,
    policy: HeaderValue,
    clock: C,
}

/// Rules and their limiters, shared by every connection.
pub struct RateLimits<C: Clock = DefaultClock> {
    rules: Vec<Rule<C>>,
    routes: Arc<RouteTable>,
    max_keys: usize,
}

impl RateLimits<DefaultClock> {
    /// Limits with the real clock.
    pub fn new(
        rules: &[RateRule],
        routes: Arc<RouteTable>,
        max_keys: usize,
    ) -> Result<Self, String> {
        Self::with_clock(rules, routes, max_keys, &DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limits on `clock` (tests use a fake one).
    pub fn with_clock(
        rules: &[RateRule],
        routes: Arc<RouteTable>,
        max_keys: usize,
        clock: &C,
    ) -> Result<Self, String> {
        let mut built = Vec::new();
        for r in rules {
            if r.name.is_empty()
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "rate rule name {:?} must be [A-Za-z0-9_-]+",
                    r.name
                ));
            }
            let requests = NonZeroU32::new(r.requests)
                .ok_or_else(|| format!("rate rule {:?}: requests must be > 0", r.name))?;
            if r.per_seconds == 0 {
                return Err(format!("rate rule {:?}: per_seconds must be > 0", r.name));
            }
            let burst = NonZeroU32::new(r.burst.unwrap_or(r.requests))
                .ok_or_else(|| format!("rate rule {:?}: burst must be > 0", r.name))?;
            let period = Duration::from_secs(u64::from(r.per_seconds)) / requests.get();
            let quota = Quota::with_period(period)
                .ok_or_else(|| format!("rate rule {:?}: the rate is too high", r.name))?
                .allow_burst(burst);
            let policy = HeaderValue::try_from(format!(
                "\"{}\";q={};w={}",
                r.name, r.requests, r.per_seconds
            ))
            .map_err(|e| format!("rate rule {:?}: {e}", r.name))?;
            built.push(Rule {
                spec: r.clone(),
                limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
                policy,
                clock: clock.clone(),
            });
        }
        Ok(RateLimits {
            rules: built,
            routes,
            max_keys: max_keys.max(16),
        })
    }
}

/// The verdict on one request.
enum Verdict {
    /// Allowed; the headers to add (for the rule with the least budget left).
    Allowed(Option<(HeaderValue, HeaderValue)>),
    /// Refused by a rule: its policy, and how long to wait.
    Refused(HeaderValue, String, Duration),
}

impl<C: Clock> RateLimits<C> {
    /// Drops keys whose budget is full again (call on a timer). Returns the keys left.
    pub fn sweep(&self) -> usize {
        self.rules
            .iter()
            .map(|r| {
                r.limiter.retain_recent();
                r.limiter.shrink_to_fit();
                r.limiter.len()
            })
            .sum()
    }

    /// Keys tracked now, over every rule.
    pub fn keys(&self) -> usize {
        self.rules.iter().map(|r| r.limiter.len()).sum()
    }

    /// Whether any rule exists (no rules: the layer is a pass-through).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn has(&self, key: KeyBy) -> bool {
        self.rules.iter().any(|r| r.spec.key == key)
    }

    fn decide(&self, only: KeyBy, class: &str, ip: IpAddr, caller: Option<&Caller>) -> Verdict {
        let mut tightest: Option<(u32, &Rule<C>, u64)> = None;
        for rule in &self.rules {
            let spec = &rule.spec;
            if spec.key != only {
                continue;
            }
            if !spec.classes.is_empty() && !spec.classes.iter().any(|c| c == class) {
                continue;
            }
            let mut key = match (spec.key, caller) {
                (KeyBy::Ip, _) => Key::Ip(ip),
                (KeyBy::User, Some(c)) => Key::Caller(c.0.clone()),
                (KeyBy::User, None) => continue,
            };
            if rule.limiter.len() >= self.max_keys {
                rule.limiter.retain_recent();
                if rule.limiter.len() >= self.max_keys {
                    key = Key::Overflow;
                }
            }
            match rule.limiter.check_key(&key) {
                Ok(snapshot) => {
                    metrics::counter!(DECISIONS_TOTAL, "rule" => spec.name.clone(), "decision" => "allowed")
                        .increment(1);
                    let left = snapshot.remaining_burst_capacity();
                    // Seconds until the budget is full again.
                    let burst = spec.burst.unwrap_or(spec.requests);
                    let refill = u64::from(burst.saturating_sub(left))
                        * u64::from(spec.per_seconds)
                        / u64::from(spec.requests.max(1));
                    if tightest.is_none_or(|(l, _, _)| left < l) {
                        tightest = Some((left, rule, refill));
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(rule.clock.now());
                    if spec.shadow {
                        metrics::counter!(DECISIONS_TOTAL, "rule" => spec.name.clone(), "decision" => "shadow_limited")
                            .increment(1);
                        tracing::info!(rule = %spec.name, class, "rate limit would refuse (shadow)");
                        continue;
                    }
                    metrics::counter!(DECISIONS_TOTAL, "rule" => spec.name.clone(), "decision" => "limited")
                        .increment(1);
                    return Verdict::Refused(rule.policy.clone(), spec.name.clone(), wait);
                }
            }
        }
        Verdict::Allowed(tightest.and_then(|(left, rule, reset)| {
            let state =
                HeaderValue::try_from(format!("\"{}\";r={left};t={reset}", rule.spec.name)).ok()?;
            Some((rule.policy.clone(), state))
        }))
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The layer, applying the rules that count by one kind of key.
#[derive(Clone)]
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    limits: Arc<RateLimits<C>>,
    only: KeyBy,
}

impl<C: Clock> RateLimitLayer<C> {
    /// A layer applying the rules of `limits` that count by `only`.
    pub fn new(limits: Arc<RateLimits<C>>, only: KeyBy) -> Self {
        RateLimitLayer { limits, only }
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
            active: self.limits.has(self.only),
            only: self.only,
        }
    }
}

/// The service the layer wraps.
pub struct RateLimit<S, C: Clock = DefaultClock> {
    inner: S,
    limits: Arc<RateLimits<C>>,
    active: bool,
    only: KeyBy,
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
            active: self.active,
            only: self.only,
        }
    }
}

pub use future::RateLimitFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::response::{IntoResponse, Response};
    use http::HeaderValue;
    use surge_http::{Problem, ProblemKind};

    pin_project_lite::pin_project! {
        /// The future of one request through the layer (nothing boxed).
        #[project = RateLimitFutureProj]
        pub enum RateLimitFuture<F> {
            /// Refused (429).
            Refused { response: Option<Response> },
            /// Allowed; the upstream is running, the headers go on its response.
            Allowed { #[pin] call: F, headers: Option<(HeaderValue, HeaderValue)> },
        }
    }

    impl<F> Future for RateLimitFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                RateLimitFutureProj::Refused { response } => {
                    Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        Problem::new(ProblemKind::Internal, "polled after completion")
                            .into_response()
                    })))
                }
                RateLimitFutureProj::Allowed { call, headers } => match call.poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(mut response)) => {
                        // An inner (per-caller) layer's headers stay.
                        if let Some((policy, state)) = headers.take()
                            && !response.headers().contains_key("ratelimit")
                        {
                            let h = response.headers_mut();
                            h.insert("ratelimit-policy", policy);
                            h.insert("ratelimit", state);
                        }
                        Poll::Ready(Ok(response))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                },
            }
        }
    }
}

impl<S, C> Service<Request<Body>> for RateLimit<S, C>
where
    S: Service<Request<Body>, Response = Response, Error = std::convert::Infallible>,
    C: Clock,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !self.active {
            return RateLimitFuture::Allowed {
                call: self.inner.call(request),
                headers: None,
            };
        }
        let class = self
            .limits
            .routes
            .find(request.uri().path())
            .map_or("", |r| r.class.as_str());
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        match self
            .limits
            .decide(self.only, class, ip, request.extensions().get::<Caller>())
        {
            Verdict::Allowed(headers) => RateLimitFuture::Allowed {
                call: self.inner.call(request),
                headers,
            },
            Verdict::Refused(policy, name, wait) => {
                let secs = ceil_secs(wait).max(1);
                let mut response =
                    Problem::new(ProblemKind::TooManyRequests, "too many requests; slow down")
                        .with_retry_after(secs)
                        .into_response();
                let h = response.headers_mut();
                h.insert("ratelimit-policy", policy);
                if let Ok(v) = HeaderValue::try_from(format!("\"{name}\";r=0;t={secs}")) {
                    h.insert("ratelimit", v);
                }
                RateLimitFuture::Refused {
                    response: Some(response),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use governor::clock::FakeRelativeClock;
    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::routes::{Access, Route};

    fn routes() -> Arc<RouteTable> {
        let route = |prefix: &str, class: &str| Route {
            prefix: prefix.into(),
            upstream: "catalog".into(),
            access: Access::Public,
            authenticators: vec![],
            cacheable: false,
            class: class.into(),
            timeout_ms: None,
            fallback: None,
        };
        Arc::new(
            RouteTable::new(
                vec![route("/auth", "auth"), route("/products", "browse")],
                &[],
            )
            .unwrap(),
        )
    }

    fn rule(name: &str, key: KeyBy, classes: &[&str], burst: u32) -> RateRule {
        RateRule {
            name: name.into(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            key,
            requests: 1,
            per_seconds: 1,
            burst: Some(burst),
            shadow: false,
        }
    }

    struct Harness {
        clock: FakeRelativeClock,
        limits: Arc<RateLimits<FakeRelativeClock>>,
    }

    fn harness(rules: &[RateRule], max_keys: usize) -> Harness {
        let clock = FakeRelativeClock::default();
        let limits = Arc::new(RateLimits::with_clock(rules, routes(), max_keys, &clock).unwrap());
        Harness { clock, limits }
    }

    impl Harness {
        /// (status, Retry-After, RateLimit, RateLimit-Policy)
        async fn call(
            &self,
            path: &str,
            ip: &str,
            caller: Option<&str>,
        ) -> (StatusCode, String, String, String) {
            let inner = tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            });
            let svc = RateLimitLayer::new(self.limits.clone(), KeyBy::Ip)
                .layer(RateLimitLayer::new(self.limits.clone(), KeyBy::User).layer(inner));
            let mut req = Request::get(path).body(Body::empty()).unwrap();
            let addr: SocketAddr = format!("{ip}:1000").parse().unwrap();
            req.extensions_mut().insert(ConnectInfo(addr));
            if let Some(c) = caller {
                req.extensions_mut().insert(Caller(Arc::from(c)));
            }
            let r = svc.oneshot(req).await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            (
                r.status(),
                h("retry-after"),
                h("ratelimit"),
                h("ratelimit-policy"),
            )
        }
    }

    #[tokio::test]
    async fn per_ip_budget_with_headers_and_retry_after() {
        let h = harness(&[rule("per-ip", KeyBy::Ip, &[], 3)], 1000);
        for left in [2, 1, 0] {
            let (s, _, state, policy) = h.call("/products/P1", "10.0.0.1", None).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(policy, "\"per-ip\";q=1;w=1");
            assert!(
                state.starts_with(&format!("\"per-ip\";r={left};")),
                "{state}"
            );
        }
        let (s, retry, state, _) = h.call("/products/P1", "10.0.0.1", None).await;
        assert_eq!((s, retry.as_str()), (StatusCode::TOO_MANY_REQUESTS, "1"));
        assert_eq!(state, "\"per-ip\";r=0;t=1");
        // Another address has its own budget; time refills this one.
        assert_eq!(
            h.call("/products/P1", "10.0.0.2", None).await.0,
            StatusCode::OK
        );
        h.clock.advance(Duration::from_secs(1));
        assert_eq!(
            h.call("/products/P1", "10.0.0.1", None).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn user_rules_count_callers_and_classes_scope_rules() {
        let h = harness(
            &[
                rule("per-user", KeyBy::User, &["browse"], 1),
                rule("auth-ip", KeyBy::Ip, &["auth"], 1),
            ],
            1000,
        );
        // Anonymous requests are not counted by a user rule.
        for _ in 0..3 {
            assert_eq!(
                h.call("/products/P1", "10.0.0.1", None).await.0,
                StatusCode::OK
            );
        }
        assert_eq!(
            h.call("/products/P1", "10.0.0.1", Some("u1")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            h.call("/products/P1", "10.0.0.9", Some("u1")).await.0,
            StatusCode::TOO_MANY_REQUESTS,
            "the same user from another address"
        );
        assert_eq!(
            h.call("/products/P1", "10.0.0.1", Some("u2")).await.0,
            StatusCode::OK
        );
        // The auth rule covers /auth only.
        assert_eq!(
            h.call("/auth/login", "10.0.0.1", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            h.call("/auth/login", "10.0.0.1", None).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn shadow_rules_refuse_nothing() {
        let mut r = rule("shadow", KeyBy::Ip, &[], 1);
        r.shadow = true;
        let h = harness(&[r], 1000);
        for _ in 0..5 {
            assert_eq!(
                h.call("/products/P1", "10.0.0.1", None).await.0,
                StatusCode::OK
            );
        }
    }

    #[tokio::test]
    async fn key_state_is_bounded_and_swept() {
        let h = harness(&[rule("per-ip", KeyBy::Ip, &[], 1)], 16);
        for i in 0..16 {
            let ip = format!("10.0.1.{i}");
            assert_eq!(h.call("/products/P1", &ip, None).await.0, StatusCode::OK);
        }
        assert_eq!(h.limits.keys(), 16);
        // The table is full: new addresses share one overflow bucket.
        assert_eq!(
            h.call("/products/P1", "10.0.2.1", None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            h.call("/products/P1", "10.0.2.2", None).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(h.limits.keys(), 17, "16 addresses and the overflow bucket");
        // Once budgets are full again a sweep forgets them.
        h.clock.advance(Duration::from_secs(5));
        assert_eq!(h.limits.sweep(), 0);
        assert_eq!(
            h.call("/products/P1", "10.0.2.2", None).await.0,
            StatusCode::OK
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let clock = FakeRelativeClock::default();
        let mut r = rule("x", KeyBy::Ip, &[], 1);
        r.requests = 0;
        assert!(RateLimits::with_clock(&[r], routes(), 10, &clock).is_err());
        let r = rule("bad name", KeyBy::Ip, &[], 1);
        assert!(RateLimits::with_clock(&[r], routes(), 10, &clock).is_err());
        let mut r = rule("x", KeyBy::Ip, &[], 1);
        r.burst = Some(0);
        assert!(RateLimits::with_clock(&[r], routes(), 10, &clock).is_err());
    }
}
