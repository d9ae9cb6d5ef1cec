//! An upstream served by one or more nodes on other machines (scale-out mode).
//!
//! Per request, in order:
//! 1. **Pick a node.** Single-product paths (`hash_prefixes`, e.g. `/products/{id}`) are
//!    placed by consistent hashing with bounded load on the product id ([`ring`]), so
//!    each product is cached on one node; a batch (`GET /products?ids=…`) is split by
//!    owning node and the parts are fetched concurrently and merged ([`fanout`]); any
//!    other request goes to the less busy of two random nodes (power of two choices,
//!    least in-flight). `balance = "round-robin"` or `"p2c"` turn hashing off (for
//!    comparison). Only nodes that pass their active health checks, are not ejected as
//!    outliers and whose breaker is not open are candidates ([`health`], [`breaker`]);
//!    if health checks and ejections leave no node, all nodes with a closed breaker
//!    are tried (panic mode, as Envoy does). No candidate at all: 503 at once.
//! 2. **Call it** over a pooled connection ([`crate::pipeline::remote`]), bounded by
//!    `retry.try_timeout_ms` and by the route's deadline.
//! 3. **Record** the outcome (breaker window, outlier run).
//! 4. **Retry** on another node (clockwise for hashed keys) when the exchange broke,
//!    timed out or answered 502/503/504, the request is idempotent or carries an
//!    `Idempotency-Key`, attempts remain, the retry budget allows it and the backoff
//!    (full jitter) ends before the deadline ([`retry`]).

pub mod breaker;
pub mod fanout;
pub mod health;
pub mod retry;
pub mod ring;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use metrics::{Counter, Gauge, counter, gauge};
use serde::{Deserialize, Serialize};
use surge_http::{Problem, ProblemKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;
use tower::retry::budget::{Budget, TpsBudget};

use crate::pipeline::remote::{Remote, SendError, forwarded_headers};
use breaker::{Breaker, BreakerConfig, Permit, State, Transition};
use fanout::FanOutConfig;
use health::{HealthConfig, NodeHealth, OutlierConfig};
use retry::RetryConfig;
use ring::{MAX_NODES, NodeSet, Ring, bit};

/// Counter: calls to upstream nodes, by `upstream`, `node` and `outcome` (`ok`,
/// `failed`: broken, timed out or 5xx).
pub const CALLS_TOTAL: &str = "surge_edge_upstream_calls_total";
/// Counter: retries sent, by `upstream`.
pub const RETRIES_TOTAL: &str = "surge_edge_upstream_retries_total";
/// Counter: retries not sent because the budget was spent, by `upstream`.
pub const BUDGET_EXHAUSTED_TOTAL: &str = "surge_edge_upstream_retry_budget_exhausted_total";
/// Counter: requests answered 503 at once because no node could take them, by `upstream`.
pub const FAIL_FAST_TOTAL: &str = "surge_edge_upstream_fail_fast_total";
/// Counter: hashed requests placed on another node than their owner (bounded load), by
/// `upstream`.
pub const SPILLS_TOTAL: &str = "surge_edge_upstream_hash_spills_total";
/// Gauge: breaker state per node (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "surge_edge_breaker_state";
/// Counter: breaker transitions, by `upstream`, `node` and `to`.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "surge_edge_breaker_transitions_total";
/// Gauge: 1 when the active health checks find a node healthy.
pub const NODE_HEALTHY: &str = "surge_edge_upstream_node_healthy";
/// Counter: outlier ejections, by `upstream` and `node`.
pub const EJECTIONS_TOTAL: &str = "surge_edge_upstream_ejections_total";
/// Counter: batch requests split across nodes, by `upstream`.
pub const FANOUTS_TOTAL: &str = "surge_edge_upstream_fanouts_total";

/// How requests without a hash key — or all requests — are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Consistent hashing with bounded load for keyed paths, batch fan-out, power of two
    /// choices for the rest.
    ConsistentHash,
    /// Power of two choices (least in-flight) for everything.
    P2c,
    /// Round-robin for everything (for comparison).
    RoundRobin,
}

/// An upstream on other nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Base URLs of the nodes, `http://host:port` (at most 64).
    pub nodes: Vec<String>,
    /// `consistent-hash` (default), `p2c` or `round-robin`.
    pub balance: Balance,
    /// Bounded-load factor `c`: a node takes at most `⌈c · (in-flight + 1) / n⌉`
    /// requests before hashed keys spill to the next node. Default 1.25.
    pub load_factor: f64,
    /// Ring positions per node. Default 100.
    pub ring_points: usize,
    /// Path prefixes whose next segment is the hash key. Default `/products/` and
    /// `/product-offers/` (so a product, its offers and the combined document live on one
    /// node).
    pub hash_prefixes: Vec<String>,
    /// Batch fan-out.
    pub fan_out: FanOutConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Circuit breaker per node.
    pub breaker: BreakerConfig,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: Vec::new(),
            balance: Balance::ConsistentHash,
            load_factor: 1.25,
            ring_points: 100,
            hash_prefixes: vec!["/products/".into(), "/product-offers/".into()],
            fan_out: FanOutConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
        }
    }
}

impl ClusterConfig {
    /// One node with the default policies.
    pub fn single(url: &str) -> ClusterConfig {
        ClusterConfig {
            nodes: vec![url.to_owned()],
            ..ClusterConfig::default()
        }
    }

    /// Checks the values; `at` is the key (e.g. `edge.upstreams.catalog`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(format!("{at}.nodes must list 1..={MAX_NODES} node URLs"));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            if !n.starts_with("http://") {
                return Err(format!("{at}.nodes: {n:?} must be http://host:port"));
            }
            if !seen.insert(n.trim_end_matches('/')) {
                return Err(format!("{at}.nodes: {n:?} appears twice"));
            }
        }
        if !(1.0..=100.0).contains(&self.load_factor) {
            return Err(format!("{at}.load_factor must be 1.0..=100"));
        }
        if self.ring_points == 0 || self.ring_points > 10_000 {
            return Err(format!("{at}.ring_points must be 1..=10000"));
        }
        if let Some(p) = self
            .hash_prefixes
            .iter()
            .find(|p| !p.starts_with('/') || !p.ends_with('/'))
        {
            return Err(format!(
                "{at}.hash_prefixes: {p:?} must start and end with /"
            ));
        }
        self.fan_out.validate(at)?;
        self.retry.validate(at)?;
        self.breaker.validate(at)?;
        self.health.validate(at)?;
        self.outlier.validate(at)
    }
}

/// When the whole call (retries included) must be over; set by the dispatch layer from
/// the route's `timeout_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Which node a request should go to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The owner of a hash key (bounded load, clockwise on failure).
    Key(u64),
    /// Any node (power of two choices or round-robin).
    Any,
}

struct NodeMetrics {
    ok: Counter,
    failed: Counter,
    breaker: Gauge,
    healthy: Gauge,
    ejections: Counter,
}

struct Node {
    url: String,
    remote: Remote,
    in_flight: AtomicUsize,
    health: NodeHealth,
    breaker: Breaker,
    metrics: NodeMetrics,
}

struct ClusterMetrics {
    retries: Counter,
    budget_exhausted: Counter,
    fail_fast: Counter,
    spills: Counter,
    fanouts: Counter,
}

struct Inner {
    name: String,
    config: ClusterConfig,
    nodes: Vec<Node>,
    all: NodeSet,
    ring: Ring,
    budget: TpsBudget,
    next: AtomicUsize,
    epoch: Instant,
    default_timeout: Duration,
    metrics: ClusterMetrics,
}

/// An upstream's nodes and their policies; a `tower::Service` (cheap to clone).
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

/// Counts a call in flight on a node while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request body that can be sent again (buffered) or only once.
enum Replay {
    Bytes(bytes::Bytes),
    Once(Option<Body>),
}

impl Replay {
    fn take(&mut self) -> Option<Body> {
        match self {
            Replay::Bytes(b) => Some(Body::from(b.clone())),
            Replay::Once(b) => b.take(),
        }
    }
}

/// How one attempt ended.
enum Outcome {
    /// A non-5xx answer.
    Answer(Response),
    /// A 5xx answer.
    ServerError(Response),
    /// No connection, or the exchange broke.
    Broken(SendError),
    /// No answer within the attempt's time.
    TimedOut,
}

impl Cluster {
    /// The nodes of upstream `name`; `max_idle` idle connections are kept per node,
    /// `default_timeout` bounds calls whose route sets no `timeout_ms`.
    pub fn new(
        name: &str,
        config: ClusterConfig,
        max_idle: usize,
        default_timeout: Duration,
    ) -> Result<Cluster, String> {
        config.validate(&format!("edge.upstreams.{name}"))?;
        let mut nodes = Vec::with_capacity(config.nodes.len());
        for url in &config.nodes {
            let url = url.trim_end_matches('/').to_owned();
            let labels = [("upstream", name.to_owned()), ("node", url.clone())];
            let metrics = NodeMetrics {
                ok: counter!(
                    CALLS_TOTAL,
                    &[
                        labels[0].clone(),
                        labels[1].clone(),
                        ("outcome", "ok".to_owned())
                    ]
                ),
                failed: counter!(
                    CALLS_TOTAL,
                    &[
                        labels[0].clone(),
                        labels[1].clone(),
                        ("outcome", "failed".to_owned())
                    ]
                ),
                breaker: gauge!(BREAKER_STATE, &labels),
                healthy: gauge!(NODE_HEALTHY, &labels),
                ejections: counter!(EJECTIONS_TOTAL, &labels),
            };
            metrics.healthy.set(1.0);
            metrics.breaker.set(0.0);
            nodes.push(Node {
                remote: Remote::new(&url, max_idle)?,
                url,
                in_flight: AtomicUsize::new(0),
                health: NodeHealth::default(),
                breaker: Breaker::new(config.breaker.clone()),
                metrics,
            });
        }
        let names: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
        let ring = Ring::new(&names, config.ring_points);
        let label = [("upstream", name.to_owned())];
        let metrics = ClusterMetrics {
            retries: counter!(RETRIES_TOTAL, &label),
            budget_exhausted: counter!(BUDGET_EXHAUSTED_TOTAL, &label),
            fail_fast: counter!(FAIL_FAST_TOTAL, &label),
            spills: counter!(SPILLS_TOTAL, &label),
            fanouts: counter!(FANOUTS_TOTAL, &label),
        };
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            config.retry.budget_min_per_second,
            config.retry.budget_percent / 100.0,
        );
        Ok(Cluster(Arc::new(Inner {
            name: name.to_owned(),
            all: if nodes.len() == MAX_NODES {
                u64::MAX
            } else {
                bit(nodes.len()) - 1
            },
            nodes,
            ring,
            budget,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            default_timeout,
            metrics,
            config,
        })))
    }

    /// The node URLs, in configuration order.
    pub fn nodes(&self) -> Vec<String> {
        self.0.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// The node (index into [`Cluster::nodes`]) that owns `key` when every node is
    /// available and idle.
    pub fn owner(&self, key: &str) -> Option<usize> {
        self.0
            .ring
            .owner(ring::key_hash(key.as_bytes()), self.0.all)
    }

    /// Calls in flight per node.
    pub fn in_flight(&self) -> Vec<usize> {
        self.0
            .nodes
            .iter()
            .map(|n| n.in_flight.load(Ordering::Relaxed))
            .collect()
    }

    /// Active health checks until `shutdown` turns true (nothing when disabled).
    pub fn health_checks(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let config = &this.0.config.health;
            if config.enabled {
                let period = Duration::from_millis(config.interval_ms);
                crate::upkeep::every(period, shutdown, || this.check_health()).await;
            }
        }
    }

    /// One round of active health checks on every node.
    pub async fn check_health(&self) {
        let config = &self.0.config.health;
        let checks = self.0.nodes.iter().map(|node| async move {
            let timeout = Duration::from_millis(config.timeout_ms);
            let ok = match node.remote.send(
                Method::GET,
                &config.path,
                HeaderMap::new(),
                Body::empty(),
            ) {
                Ok(exchange) => match tokio::time::timeout(timeout, exchange.answer()).await {
                    Ok(Ok(r)) => {
                        let ok = r.status().is_success();
                        // Read the body so the connection goes back to the pool.
                        let _ = r.into_body().collect().await;
                        ok
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            if let Some(healthy) = node.health.checked(ok, config) {
                node.metrics.healthy.set(if healthy { 1.0 } else { 0.0 });
                if healthy {
                    tracing::info!(upstream = %self.0.name, node = %node.url, "node healthy again");
                } else {
                    tracing::warn!(upstream = %self.0.name, node = %node.url, "node failed its health checks");
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.0.epoch).as_millis() as u64
    }

    /// Nodes healthy and not ejected, and nodes whose breaker is not open.
    fn candidates(&self, now: Instant) -> (NodeSet, NodeSet) {
        let now_ms = self.now_ms(now);
        let mut healthy = 0;
        let mut closed = 0;
        for (i, n) in self.0.nodes.iter().enumerate() {
            if n.breaker.state(now) != State::Open {
                closed |= bit(i);
                if n.health.healthy() && !n.health.ejected(now_ms) {
                    healthy |= bit(i);
                }
            }
        }
        (healthy, closed)
    }

    /// Chooses a node not in `tried` (unless every candidate was tried) and takes a
    /// breaker permit on it.
    fn choose(&self, target: Target, tried: NodeSet, now: Instant) -> Option<(usize, Permit)> {
        let (healthy, closed) = self.candidates(now);
        let mut set = healthy & !tried;
        if set == 0 {
            set = healthy;
        }
        if set == 0 {
            // Panic mode: health checks and ejections left nobody; try every node whose
            // breaker lets calls through.
            set = if closed & !tried != 0 {
                closed & !tried
            } else {
                closed
            };
        }
        while set != 0 {
            let i = self.pick(target, set);
            let node = &self.0.nodes[i];
            let (permit, transition) = node.breaker.try_acquire(now);
            self.report(i, transition);
            match permit {
                Some(p) => return Some((i, p)),
                None => set &= !bit(i),
            }
        }
        None
    }

    fn pick(&self, target: Target, set: NodeSet) -> usize {
        let nodes = &self.0.nodes;
        let load = |i: usize| nodes[i].in_flight.load(Ordering::Relaxed);
        match (self.0.config.balance, target) {
            (Balance::ConsistentHash, Target::Key(h)) => {
                match self.0.ring.place(h, set, load, self.0.config.load_factor) {
                    Some(p) => {
                        if p.spilled {
                            self.0.metrics.spills.increment(1);
                        }
                        p.node
                    }
                    None => set.trailing_zeros() as usize,
                }
            }
            (Balance::RoundRobin, _) => {
                let n = set.count_ones() as usize;
                let k = self.0.next.fetch_add(1, Ordering::Relaxed) % n;
                nth_bit(set, k)
            }
            _ => {
                // Power of two choices: two distinct random candidates, the less busy wins.
                let n = set.count_ones() as usize;
                if n == 1 {
                    return set.trailing_zeros() as usize;
                }
                let r = retry::random();
                let a = (r % n as u64) as usize;
                let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                let (a, b) = (nth_bit(set, a), nth_bit(set, b));
                if load(b) < load(a) { b } else { a }
            }
        }
    }

    fn report(&self, i: usize, transition: Transition) {
        if let Transition::To(state) = transition {
            let node = &self.0.nodes[i];
            node.metrics.breaker.set(state.gauge());
            let to = match state {
                State::Closed => "closed",
                State::Open => "open",
                State::HalfOpen => "half-open",
            };
            counter!(BREAKER_TRANSITIONS_TOTAL, "upstream" => self.0.name.clone(), "node" => node.url.clone(), "to" => to)
                .increment(1);
            tracing::warn!(upstream = %self.0.name, node = %node.url, to, "circuit breaker");
        }
    }

    /// Records an attempt's outcome on the node's breaker and outlier run.
    fn record(&self, i: usize, permit: Permit, failed: bool, now: Instant) {
        let node = &self.0.nodes[i];
        if failed {
            node.metrics.failed.increment(1);
        } else {
            node.metrics.ok.increment(1);
        }
        let transition = node.breaker.record(permit, failed, now);
        self.report(i, transition);
        let now_ms = self.now_ms(now);
        if let Some(for_ms) = node.health.called(failed, now_ms, &self.0.config.outlier) {
            let out = self
                .0
                .nodes
                .iter()
                .filter(|n| n.health.ejected(now_ms))
                .count();
            let limit =
                (self.0.nodes.len() * usize::from(self.0.config.outlier.max_ejected_percent) / 100)
                    .max(1);
            if out < limit {
                node.health.eject(now_ms + for_ms);
                node.metrics.ejections.increment(1);
                tracing::warn!(upstream = %self.0.name, node = %node.url, for_ms, "node ejected as an outlier");
            }
        }
    }

    /// One request to the cluster: the node, the call, the retries.
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        mut body: Replay,
        target: Target,
        deadline: Instant,
    ) -> Response {
        let retry = &self.0.config.retry;
        let retryable = retry::may_retry(&method, headers);
        let retries_possible = retryable && retry.attempts > 1;
        if retries_possible {
            self.0.budget.deposit();
        }
        let mut tried: NodeSet = 0;
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            let Some((i, permit)) = self.choose(target, tried, now) else {
                return self.fail_fast(now);
            };
            let node = &self.0.nodes[i];
            let Some(b) = body.take() else {
                node.breaker.release(permit);
                return Problem::new(
                    ProblemKind::BadGateway,
                    "the request body could not be resent",
                )
                .into_response();
            };
            let budget = Duration::from_millis(retry.try_timeout_ms)
                .min(deadline.saturating_duration_since(now));
            let outcome = {
                let _in_flight = InFlight::new(&node.in_flight);
                match node
                    .remote
                    .send(method.clone(), path_and_query, headers.clone(), b)
                {
                    Err(e) => Outcome::Broken(e),
                    Ok(exchange) => match tokio::time::timeout(budget, exchange.answer()).await {
                        Err(_) => Outcome::TimedOut,
                        Ok(Err(e)) => Outcome::Broken(e),
                        Ok(Ok(r)) if r.status().is_server_error() => {
                            Outcome::ServerError(r.map(Body::new))
                        }
                        Ok(Ok(r)) => Outcome::Answer(r.map(Body::new)),
                    },
                }
            };
            let failed = !matches!(outcome, Outcome::Answer(_));
            self.record(i, permit, failed, Instant::now());
            let again = match &outcome {
                Outcome::Answer(_) => false,
                Outcome::ServerError(r) => retry::retry_status(r.status()),
                Outcome::Broken(_) | Outcome::TimedOut => true,
            };
            attempt += 1;
            tried |= bit(i);
            let give_up = !again || !retries_possible || attempt >= retry.attempts;
            let wait = retry.backoff(attempt);
            if give_up || Instant::now() + wait >= deadline {
                return self.answer(outcome, node);
            }
            if !self.0.budget.withdraw() {
                self.0.metrics.budget_exhausted.increment(1);
                return self.answer(outcome, node);
            }
            self.0.metrics.retries.increment(1);
            tracing::debug!(upstream = %self.0.name, node = %node.url, attempt, "retrying on another node");
            tokio::time::sleep(wait).await;
        }
    }

    fn answer(&self, outcome: Outcome, node: &Node) -> Response {
        match outcome {
            Outcome::Answer(r) | Outcome::ServerError(r) => r,
            Outcome::Broken(e) => {
                let (SendError::Connect(why) | SendError::Broken(why)) = &e;
                tracing::warn!(upstream = %self.0.name, node = %node.url, error = %why, "upstream call failed");
                Problem::new(ProblemKind::BadGateway, "the upstream could not be reached")
                    .into_response()
            }
            Outcome::TimedOut => Problem::new(
                ProblemKind::GatewayTimeout,
                "the upstream did not answer in time",
            )
            .into_response(),
        }
    }

    fn fail_fast(&self, now: Instant) -> Response {
        self.0.metrics.fail_fast.increment(1);
        let wait = self
            .0
            .nodes
            .iter()
            .map(|n| n.breaker.open_for(now))
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1));
        Problem::unavailable(
            format!(
                "no node of upstream {} can take requests now (circuit breakers open)",
                self.0.name
            ),
            wait.as_secs().max(1),
        )
        .into_response()
    }

    /// The hash key of a path, if it is a keyed one.
    fn key_of(&self, path: &str) -> Option<u64> {
        if self.0.config.balance != Balance::ConsistentHash {
            return None;
        }
        self.0.config.hash_prefixes.iter().find_map(|p| {
            let rest = path.strip_prefix(p.as_str())?;
            let key = rest.split('/').next().unwrap_or("");
            (!key.is_empty()).then(|| ring::key_hash(key.as_bytes()))
        })
    }

    async fn handle(self, request: Request<Body>) -> Response {
        let (parts, body) = request.into_parts();
        let deadline = parts
            .extensions
            .get::<Deadline>()
            .map_or_else(|| Instant::now() + self.0.default_timeout, |d| d.0);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let mut headers = parts.headers;
        forwarded_headers(&mut headers, peer);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let path = parts.uri.path();
        if self.0.config.balance == Balance::ConsistentHash
            && parts.method == Method::GET
            && let Some(batch) = self.0.config.fan_out.split(path, parts.uri.query())
        {
            return self.fan_out(batch, headers, deadline).await;
        }
        let target = self.key_of(path).map_or(Target::Any, Target::Key);
        let retryable = retry::may_retry(&parts.method, &headers);
        let body = if retryable && self.0.config.retry.attempts > 1 {
            match body.collect().await {
                Ok(b) => Replay::Bytes(b.to_bytes()),
                Err(e) => {
                    return Problem::new(
                        ProblemKind::PayloadTooLarge,
                        format!("the request body could not be read: {e}"),
                    )
                    .into_response();
                }
            }
        } else {
            Replay::Once(Some(body))
        };
        self.exchange(
            parts.method,
            &path_and_query,
            &headers,
            body,
            target,
            deadline,
        )
        .await
    }
}

/// The index of the `k`-th set bit of `set`.
fn nth_bit(mut set: NodeSet, k: usize) -> usize {
    for _ in 0..k {
        set &= set - 1;
    }
    set.trailing_zeros() as usize
}

impl Service<Request<Body>> for Cluster {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}
