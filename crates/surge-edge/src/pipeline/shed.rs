//! Layer: concurrency limits with a bounded queue per route class, shedding at once when
//! the queue is full, and an adaptive limit.
//!
//! Each configured class admits up to its concurrency limit; further requests wait in a
//! bounded queue (at most `queue_timeout_ms`); when the queue is full a request is shed
//! **immediately** with 503 `unavailable` and `Retry-After`, without waiting for
//! anything. Latency-sensitive classes serve the queue newest-first (LIFO: under
//! overload the freshest requests, whose clients are still waiting, go first).
//! **Priorities**: requests with an authenticated caller, and classes marked `priority`,
//! wait in a high queue that is served first; a high request that finds the queue full
//! evicts the newest low-priority waiter instead of being shed.
//! **Adaptive limit** (AIMD on measured latency, as in Netflix's concurrency-limits): a
//! response slower than `latency_target_ms` cuts the limit by 10 % (at most once per
//! 100 ms), and every `limit` fast responses raise it by one, between `min_concurrency`
//! and `max_concurrency`. A static limit is `adaptive = false`.
//! **Event-loop lag** (as Node's `toobusy` or Envoy's overload manager): a concurrency
//! limit only sees requests that are being worked on; when the process is CPU-bound,
//! the waiting happens before that — requests sit in sockets until the runtime gets to
//! them. A probe task measures how long a freshly woken task waits to run (an EWMA of
//! `yield_now` round trips, every millisecond); above a class's `max_lag_ms`, new
//! low-priority requests of that class are shed at once with a probability growing
//! with the excess (all of them at twice the threshold), so the work admitted stays what
//! the CPU can serve without a backlog.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::Request;
use serde::{Deserialize, Serialize};
use surge_http::Problem;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::rate_limit::Caller;
use crate::routes::RouteTable;

/// Counter: requests shed, labelled `class` and `reason` (`overloaded`, `queue_full`,
/// `queue_timeout`, `evicted`).
pub const SHED_TOTAL: &str = "surge_edge_shed_total";
/// Gauge: the current concurrency limit of a class, labelled `class`.
pub const LIMIT: &str = "surge_edge_concurrency_limit";

/// Shedding settings of one route class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedClass {
    /// The route class.
    pub class: String,
    /// Concurrency limit (static), or the ceiling of the adaptive limit.
    pub max_concurrency: usize,
    /// Floor of the adaptive limit (and its start). Default 8.
    #[serde(default = "default_min")]
    pub min_concurrency: usize,
    /// Adapt the limit to latency (AIMD). Default false.
    #[serde(default)]
    pub adaptive: bool,
    /// A response slower than this cuts the adaptive limit, in ms. Default 100.
    #[serde(default = "default_target")]
    pub latency_target_ms: u64,
    /// Requests waiting at most; beyond, requests are shed at once. Default 128.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Longest wait in the queue before a 503, in ms. Default 500.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_ms: u64,
    /// Serve the queue newest-first. Default false.
    #[serde(default)]
    pub lifo: bool,
    /// Every request of this class waits in the high-priority queue (e.g. checkout).
    #[serde(default)]
    pub priority: bool,
    /// Event-loop lag, in ms, above which new low-priority requests of this class are
    /// shed at once (probabilistically up to twice it). 0: never. Default 0.
    #[serde(default)]
    pub max_lag_ms: f64,
}

fn default_min() -> usize {
    8
}
fn default_target() -> u64 {
    100
}
fn default_queue() -> usize {
    128
}
fn default_queue_timeout() -> u64 {
    500
}

struct Queues {
    in_flight: usize,
    limit: f64,
    high: VecDeque<oneshot::Sender<()>>,
    low: VecDeque<oneshot::Sender<()>>,
    fast_since_raise: usize,
    last_cut: Option<Instant>,
}

struct ClassState {
    spec: ShedClass,
    queues: Mutex<Queues>,
}

/// Admission state of every configured class.
pub struct Shedding {
    classes: HashMap<String, Arc<ClassState>>,
    routes: Arc<RouteTable>,
    lag: Arc<LoopLag>,
}

/// The runtime's scheduling lag, measured by [`LoopLag::probe`].
#[derive(Debug, Default)]
pub struct LoopLag {
    /// EWMA of the lag, in microseconds.
    micros: std::sync::atomic::AtomicU64,
}

/// Gauge: the runtime's scheduling lag (EWMA), in seconds.
pub const LOOP_LAG: &str = "surge_edge_loop_lag_seconds";

impl LoopLag {
    /// The current lag estimate, in ms.
    pub fn ms(&self) -> f64 {
        self.micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
    }

    /// Sets the estimate (tests).
    pub fn set_ms(&self, ms: f64) {
        self.micros
            .store((ms * 1000.0) as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Measures the lag every millisecond until `shutdown` turns true.
    pub async fn probe(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let gauge = metrics::gauge!(LOOP_LAG);
        let mut ewma = 0.0f64;
        let mut n = 0u32;
        loop {
            let t = std::time::Instant::now();
            tokio::task::yield_now().await;
            let sample = t.elapsed().as_secs_f64() * 1e6;
            ewma += 0.25 * (sample - ewma);
            self.micros
                .store(ewma as u64, std::sync::atomic::Ordering::Relaxed);
            n += 1;
            if n.is_multiple_of(1000) {
                gauge.set(ewma / 1e6);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Whether to shed at `max_ms` (0: never): certainly from twice it, with a growing
    /// probability above it.
    fn shed(&self, max_ms: f64) -> bool {
        if max_ms <= 0.0 {
            return false;
        }
        let lag = self.ms();
        if lag <= max_ms {
            return false;
        }
        let p = ((lag - max_ms) / max_ms).min(1.0);
        (crate::cluster::retry::random() % 10_000) as f64 / 10_000.0 < p
    }
}

enum Admission {
    Now(Permit),
    Wait(oneshot::Receiver<()>),
    Shed,
}

/// A slot in a class; releasing it hands it to the next waiter.
pub struct Permit {
    class: Arc<ClassState>,
    started: Instant,
}

impl Shedding {
    /// Shedding for `classes` (classes not listed are never limited).
    pub fn new(classes: &[ShedClass], routes: Arc<RouteTable>) -> Result<Self, String> {
        let mut map = HashMap::new();
        for c in classes {
            if c.max_concurrency == 0
                || c.min_concurrency == 0
                || c.min_concurrency > c.max_concurrency
            {
                return Err(format!(
                    "shedding class {:?}: need 0 < min_concurrency <= max_concurrency",
                    c.class
                ));
            }
            let start = if c.adaptive {
                c.min_concurrency
            } else {
                c.max_concurrency
            };
            let state = ClassState {
                spec: c.clone(),
                queues: Mutex::new(Queues {
                    in_flight: 0,
                    limit: start as f64,
                    high: VecDeque::new(),
                    low: VecDeque::new(),
                    fast_since_raise: 0,
                    last_cut: None,
                }),
            };
            if map.insert(c.class.clone(), Arc::new(state)).is_some() {
                return Err(format!("shedding class {:?} appears twice", c.class));
            }
        }
        Ok(Shedding {
            classes: map,
            routes,
            lag: Arc::new(LoopLag::default()),
        })
    }

    /// The event-loop lag estimate this shedding acts on (run [`LoopLag::probe`]).
    pub fn lag(&self) -> Arc<LoopLag> {
        self.lag.clone()
    }

    /// The current limit and in-flight count of `class`.
    pub fn state(&self, class: &str) -> Option<(usize, usize)> {
        let c = self.classes.get(class)?;
        let q = c.queues.lock().unwrap_or_else(|p| p.into_inner());
        Some((q.limit as usize, q.in_flight))
    }
}

impl ClassState {
    fn admit(self: &Arc<Self>, high: bool) -> Admission {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if q.in_flight < q.limit as usize && q.high.is_empty() && q.low.is_empty() {
            q.in_flight += 1;
            return Admission::Now(Permit {
                class: self.clone(),
                started: Instant::now(),
            });
        }
        let room = q.high.len() + q.low.len() < self.spec.queue;
        // A full queue: a high-priority arrival drops the newest low-priority waiter
        // (its request answers 503); anyone else is shed without a channel being made.
        let queued = room || (high && q.low.pop_back().is_some());
        if !queued {
            return Admission::Shed;
        }
        let (tx, rx) = oneshot::channel();
        if high {
            q.high.push_back(tx);
        } else {
            q.low.push_back(tx);
        }
        Admission::Wait(rx)
    }

    /// Called when a request ends: adapt the limit, then hand the slot on.
    fn release(&self, latency: Duration) {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if self.spec.adaptive {
            let before = q.limit;
            let (min, max) = (
                self.spec.min_concurrency as f64,
                self.spec.max_concurrency as f64,
            );
            if latency > Duration::from_millis(self.spec.latency_target_ms) {
                let now = Instant::now();
                if q.last_cut
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100))
                {
                    q.limit = (q.limit * 0.9).max(min);
                    q.last_cut = Some(now);
                    q.fast_since_raise = 0;
                }
            } else {
                q.fast_since_raise += 1;
                if q.fast_since_raise >= q.limit as usize {
                    q.limit = (q.limit + 1.0).min(max);
                    q.fast_since_raise = 0;
                }
            }
            if q.limit != before {
                metrics::gauge!(LIMIT, "class" => self.spec.class.clone()).set(q.limit);
            }
        }
        if q.in_flight <= q.limit as usize {
            // Hand the slot to a waiter that is still there.
            loop {
                let next = if self.spec.lifo {
                    q.high.pop_back().or_else(|| q.low.pop_back())
                } else {
                    q.high.pop_front().or_else(|| q.low.pop_front())
                };
                match next {
                    Some(tx) => {
                        if tx.send(()).is_ok() {
                            return;
                        }
                    }
                    None => break,
                }
            }
        }
        q.in_flight -= 1;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.class.release(self.started.elapsed());
    }
}

/// Header naming why a request was shed (`overloaded`, `queue_full`, `queue_timeout`,
/// `evicted`).
pub const SHED_HEADER: &str = "x-surge-shed";

fn shed(class: &str, reason: &'static str) -> Response {
    metrics::counter!(SHED_TOTAL, "class" => class.to_owned(), "reason" => reason).increment(1);
    Problem::unavailable("the service is at capacity; try again shortly", 1)
        .with_header(
            http::HeaderName::from_static(SHED_HEADER),
            http::HeaderValue::from_static(reason),
        )
        .into_response()
}

/// The layer.
#[derive(Clone)]
pub struct ShedLayer {
    shedding: Arc<Shedding>,
}

impl ShedLayer {
    /// A layer over `shedding`.
    pub fn new(shedding: Arc<Shedding>) -> Self {
        ShedLayer { shedding }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            shedding: self.shedding.clone(),
        }
    }
}

/// The service the layer wraps.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    shedding: Arc<Shedding>,
}

pub use future::ShedFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::response::{IntoResponse, Response};
    use futures_util::future::BoxFuture;
    use surge_http::{Problem, ProblemKind};

    use super::Permit;

    pin_project_lite::pin_project! {
        /// The future of one request through the layer.
        #[project = ShedFutureProj]
        pub enum ShedFuture<F> {
            /// Not limited, or admitted at once (the permit is released when it ends).
            Running { #[pin] call: F, permit: Option<Permit> },
            /// Shed (503).
            Shed { response: Option<Response> },
            /// Waiting in the queue, then running.
            Queued { future: BoxFuture<'static, Result<Response, Infallible>> },
        }
    }

    impl<F> Future for ShedFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                ShedFutureProj::Running { call, permit } => {
                    let out = call.poll(cx);
                    if out.is_ready() {
                        drop(permit.take());
                    }
                    out
                }
                ShedFutureProj::Shed { response } => {
                    Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        Problem::new(ProblemKind::Internal, "polled after completion")
                            .into_response()
                    })))
                }
                ShedFutureProj::Queued { future } => future.as_mut().poll(cx),
            }
        }
    }
}

impl<S> Service<Request<Body>> for Shed<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let class = self
            .shedding
            .routes
            .find(request.uri().path())
            .and_then(|r| self.shedding.classes.get(&r.class));
        let Some(class) = class.cloned() else {
            return ShedFuture::Running {
                call: self.inner.call(request),
                permit: None,
            };
        };
        let high = class.spec.priority || request.extensions().get::<Caller>().is_some();
        if !high && self.shedding.lag.shed(class.spec.max_lag_ms) {
            return ShedFuture::Shed {
                response: Some(shed(&class.spec.class, "overloaded")),
            };
        }
        match class.admit(high) {
            Admission::Now(permit) => ShedFuture::Running {
                call: self.inner.call(request),
                permit: Some(permit),
            },
            Admission::Shed => ShedFuture::Shed {
                response: Some(shed(&class.spec.class, "queue_full")),
            },
            Admission::Wait(rx) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let wait = Duration::from_millis(class.spec.queue_timeout_ms);
                let future: BoxFuture<'static, Result<Response, Infallible>> =
                    Box::pin(async move {
                        let mut rx = rx;
                        let slot = tokio::select! {
                            biased;
                            r = &mut rx => r.map_err(|_| "evicted"),
                            () = tokio::time::sleep(wait) => {
                                // A slot handed over just now still counts: close, then look.
                                rx.close();
                                rx.try_recv().map_err(|_| "queue_timeout")
                            }
                        };
                        match slot {
                            Ok(()) => {
                                let permit = Permit {
                                    class: class.clone(),
                                    started: Instant::now(),
                                };
                                let response = inner.oneshot(request).await;
                                drop(permit);
                                response
                            }
                            Err(reason) => Ok(shed(&class.spec.class, reason)),
                        }
                    });
                ShedFuture::Queued { future }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::routes::{Access, Route};

    fn class(max: usize, queue: usize) -> ShedClass {
        ShedClass {
            class: "browse".into(),
            max_concurrency: max,
            min_concurrency: 1,
            adaptive: false,
            latency_target_ms: 100,
            queue,
            queue_timeout_ms: 500,
            lifo: false,
            priority: false,
            max_lag_ms: 0.0,
        }
    }

    fn routes() -> Arc<RouteTable> {
        Arc::new(
            RouteTable::new(
                vec![Route {
                    prefix: "/products".into(),
                    upstream: "catalog".into(),
                    access: Access::Public,
                    authenticators: vec![],
                    cacheable: false,
                    class: "browse".into(),
                    timeout_ms: None,
                    fallback: None,
                }],
                &[],
            )
            .unwrap(),
        )
    }

    /// An upstream that records the order requests reach it and holds each until the
    /// test adds a permit to `gate`.
    #[derive(Clone)]
    struct Gate {
        gate: Arc<Semaphore>,
        order: Arc<Mutex<Vec<String>>>,
        entered: Arc<AtomicUsize>,
    }

    impl Gate {
        fn new() -> Self {
            Gate {
                gate: Arc::new(Semaphore::new(0)),
                order: Arc::default(),
                entered: Arc::default(),
            }
        }

        fn service(
            &self,
        ) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static {
            let g = self.clone();
            tower::service_fn(move |req: Request<Body>| {
                let g = g.clone();
                async move {
                    g.order.lock().unwrap().push(req.uri().path().to_owned());
                    g.entered.fetch_add(1, Ordering::SeqCst);
                    g.gate.acquire().await.unwrap().forget();
                    Ok::<_, Infallible>(Response::new(Body::empty()))
                }
            })
        }
    }

    fn spawn_call(
        svc: &Shed<
            impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
            + Clone
            + Send
            + 'static,
        >,
        path: &str,
        caller: bool,
    ) -> tokio::task::JoinHandle<Response> {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        if caller {
            req.extensions_mut().insert(Caller(Arc::from("u1")));
        }
        let svc = svc.clone();
        tokio::spawn(async move { svc.oneshot(req).await.unwrap() })
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn build(
        c: ShedClass,
        gate: &Gate,
    ) -> (
        Arc<Shedding>,
        Shed<
            impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
            + Clone
            + Send
            + 'static,
        >,
    ) {
        let shedding = Arc::new(Shedding::new(&[c], routes()).unwrap());
        let svc = ShedLayer::new(shedding.clone()).layer(gate.service());
        (shedding, svc)
    }

    #[tokio::test(start_paused = true)]
    async fn event_loop_lag_sheds_anonymous_requests_at_once() {
        let gate = Gate::new();
        let mut c = class(100, 100);
        c.max_lag_ms = 5.0;
        let (shedding, svc) = build(c, &gate);
        gate.gate.add_permits(1_000);
        // Under the threshold: admitted.
        shedding.lag().set_ms(4.0);
        let r = spawn_call(&svc, "/products/a", false).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // At twice the threshold every anonymous request is shed, at once and named.
        shedding.lag().set_ms(10.0);
        for _ in 0..20 {
            let r = spawn_call(&svc, "/products/b", false).await.unwrap();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[SHED_HEADER], "overloaded");
        }
        // Authenticated callers are not shed for lag.
        let r = spawn_call(&svc, "/products/c", true).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // In between, some are shed and some admitted.
        shedding.lag().set_ms(7.5);
        let mut shed = 0;
        for _ in 0..400 {
            let r = spawn_call(&svc, "/products/d", false).await.unwrap();
            shed += usize::from(r.status() == StatusCode::SERVICE_UNAVAILABLE);
        }
        assert!((100..300).contains(&shed), "p = 0.5 gave {shed} of 400");
        assert_eq!(gate.entered.load(Ordering::SeqCst), 2 + 400 - shed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_at_once_and_a_release_admits_the_next() {
        let gate = Gate::new();
        let (shedding, svc) = build(class(2, 1), &gate);
        let a = spawn_call(&svc, "/products/a", false);
        let b = spawn_call(&svc, "/products/b", false);
        settle().await;
        let c = spawn_call(&svc, "/products/c", false); // queued
        settle().await;
        // Queue full: shed without waiting for anything.
        let d = spawn_call(&svc, "/products/d", false);
        let d = d.await.unwrap();
        assert_eq!(d.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(d.headers()["retry-after"], "1");
        assert_eq!(shedding.state("browse"), Some((2, 2)));
        assert_eq!(gate.entered.load(Ordering::SeqCst), 2);
        gate.gate.add_permits(1);
        settle().await;
        assert_eq!(gate.entered.load(Ordering::SeqCst), 3, "c was admitted");
        gate.gate.add_permits(2);
        for h in [a, b, c] {
            assert_eq!(h.await.unwrap().status(), StatusCode::OK);
        }
        assert_eq!(
            shedding.state("browse"),
            Some((2, 0)),
            "every slot returned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lifo_serves_the_newest_waiter_first_and_waits_time_out() {
        let gate = Gate::new();
        let mut c = class(1, 3);
        c.lifo = true;
        let (_, svc) = build(c, &gate);
        let first = spawn_call(&svc, "/products/first", false);
        settle().await;
        let waiters: Vec<_> = ["w1", "w2", "w3"]
            .iter()
            .map(|w| spawn_call(&svc, &format!("/products/{w}"), false))
            .collect();
        settle().await;
        gate.gate.add_permits(1);
        settle().await;
        assert_eq!(
            gate.order.lock().unwrap().as_slice(),
            ["/products/first", "/products/w3"]
        );
        assert_eq!(first.await.unwrap().status(), StatusCode::OK);
        // w1 and w2 are still queued; past the queue timeout they answer 503.
        tokio::time::advance(Duration::from_millis(600)).await;
        settle().await;
        let mut statuses = Vec::new();
        gate.gate.add_permits(10);
        for h in waiters {
            statuses.push(h.await.unwrap().status());
        }
        assert_eq!(
            statuses,
            [
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::OK
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn authenticated_requests_outrank_anonymous_ones() {
        let gate = Gate::new();
        let (_, svc) = build(class(1, 2), &gate);
        let running = spawn_call(&svc, "/products/running", false);
        settle().await;
        let anon1 = spawn_call(&svc, "/products/anon1", false);
        settle().await;
        let anon2 = spawn_call(&svc, "/products/anon2", false);
        settle().await;
        // The queue is full of anonymous requests: a signed-in one evicts the newest.
        let user = spawn_call(&svc, "/products/user", true);
        settle().await;
        assert_eq!(
            anon2.await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        gate.gate.add_permits(1);
        settle().await;
        assert_eq!(
            gate.order.lock().unwrap().as_slice(),
            ["/products/running", "/products/user"],
            "the high queue is served first"
        );
        gate.gate.add_permits(10);
        for h in [running, user, anon1] {
            assert_eq!(h.await.unwrap().status(), StatusCode::OK);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_adaptive_limit_shrinks_on_slow_answers_and_grows_on_fast_ones() {
        let mut c = class(64, 16);
        c.adaptive = true;
        c.min_concurrency = 4;
        c.latency_target_ms = 50;
        let shedding = Shedding::new(&[c], routes()).unwrap();
        let state = shedding.classes["browse"].clone();
        let limit = || shedding.state("browse").unwrap().0;
        assert_eq!(limit(), 4, "starts at the floor");
        // Fast answers: +1 per `limit` answers.
        for _ in 0..4 + 5 + 6 + 7 {
            let Admission::Now(p) = state.admit(false) else {
                panic!("not admitted")
            };
            drop(p);
        }
        assert_eq!(limit(), 8);
        // Slow answers: -10 % at most every 100 ms, never below the floor.
        for _ in 0..10 {
            let Admission::Now(p) = state.admit(false) else {
                panic!("not admitted")
            };
            tokio::time::advance(Duration::from_millis(200)).await;
            drop(p);
        }
        assert_eq!(limit(), 4);
        assert!(Shedding::new(&[class(0, 1)], routes()).is_err());
    }
}
