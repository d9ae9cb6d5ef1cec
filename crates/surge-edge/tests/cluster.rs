//! The cluster upstream against real HTTP nodes on loopback ports: placement by
//! consistent hashing with bounded load, spilling, failover when a node dies, retries
//! and their budget, breakers, health checks, outlier ejection, batch fan-out and route
//! deadlines. (`crates/surge/tests/cluster.rs` does the same with real catalog processes.)

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use surge_edge::cluster::breaker::BreakerConfig;
use surge_edge::cluster::health::OutlierConfig;
use surge_edge::cluster::{Balance, Cluster, ClusterConfig, Deadline};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// What a test node does.
struct NodeState {
    index: usize,
    /// 0: answer; 1: 503 everywhere but /healthz; 2: 500 on /products.
    mode: AtomicU8,
    healthy: AtomicBool,
    /// Hold `/products/HOT` until `release`.
    hold: AtomicBool,
    arrived: Notify,
    release: Notify,
    /// Paths (with query) this node served.
    seen: Mutex<Vec<String>>,
}

struct Node {
    url: String,
    state: Arc<NodeState>,
    kill: watch::Sender<bool>,
}

impl Node {
    fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    fn served(&self, prefix: &str) -> usize {
        self.seen().iter().filter(|p| p.starts_with(prefix)).count()
    }
}

async fn product(state: Arc<NodeState>, Path(id): Path<String>) -> axum::response::Response {
    state.seen.lock().unwrap().push(format!("/products/{id}"));
    match state.mode.load(Ordering::SeqCst) {
        1 => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        2 => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => {}
    }
    if id == "HOT" && state.hold.load(Ordering::SeqCst) {
        let released = state.release.notified();
        state.arrived.notify_one();
        released.await;
    }
    if id == "SLOW" {
        std::future::pending::<()>().await;
    }
    axum::Json(json!({"id": id, "node": state.index})).into_response()
}

async fn batch(state: Arc<NodeState>, RawQuery(q): RawQuery) -> axum::response::Response {
    let q = q.unwrap_or_default();
    state.seen.lock().unwrap().push(format!("/products?{q}"));
    let ids = q
        .split('&')
        .find_map(|p| p.strip_prefix("ids="))
        .unwrap_or("");
    if ids.split(',').any(|id| id == "BAD") {
        return (StatusCode::BAD_REQUEST, "bad id").into_response();
    }
    let docs: Vec<Value> = ids
        .split(',')
        .map(|id| {
            if id.starts_with("NONE") {
                Value::Null
            } else {
                json!({"id": id, "node": state.index})
            }
        })
        .collect();
    axum::Json(docs).into_response()
}

/// Starts a node on a loopback port; it serves until killed (listener and every
/// connection dropped).
async fn node(index: usize) -> Node {
    let state = Arc::new(NodeState {
        index,
        mode: AtomicU8::new(0),
        healthy: AtomicBool::new(true),
        hold: AtomicBool::new(false),
        arrived: Notify::new(),
        release: Notify::new(),
        seen: Mutex::new(Vec::new()),
    });
    let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state.clone());
    let router = Router::new()
        .route("/products/{id}", get(move |p| product(s1.clone(), p)))
        .route("/products", get(move |q| batch(s2.clone(), q)))
        .route(
            "/orders",
            post(move |body: String| async move {
                s3.seen.lock().unwrap().push("/orders".into());
                if s3.mode.load(Ordering::SeqCst) == 1 {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                format!("node {} got {body}", s3.index).into_response()
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                if s4.healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (kill, mut killed) = watch::channel(false);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = killed.changed() => {
                    connections.abort_all();
                    return;
                }
            }
        }
    });
    Node {
        url: format!("http://{addr}"),
        state,
        kill,
    }
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(node(i).await);
    }
    all
}

fn config(nodes: &[Node]) -> ClusterConfig {
    ClusterConfig {
        nodes: nodes.iter().map(|n| n.url.clone()).collect(),
        ..ClusterConfig::default()
    }
}

fn cluster(config: ClusterConfig) -> Cluster {
    Cluster::new("catalog", config, 16, Duration::from_secs(10)).unwrap()
}

async fn send(cluster: &Cluster, request: Request<Body>) -> (StatusCode, String) {
    let r = cluster.clone().oneshot(request).await.unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_path(cluster: &Cluster, path: &str) -> (StatusCode, String) {
    send(cluster, Request::get(path).body(Body::empty()).unwrap()).await
}

fn node_of(body: &str) -> usize {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["node"].as_u64().unwrap() as usize
}

#[tokio::test]
async fn each_product_is_served_by_its_owner_node_only() {
    let nodes = nodes(3).await;
    let c = cluster(config(&nodes));
    let mut per_node = [0usize; 3];
    for round in 0..3 {
        for k in 0..60 {
            let id = format!("P{k:04}");
            let (s, body) = get_path(&c, &format!("/products/{id}")).await;
            assert_eq!(s, StatusCode::OK);
            let served_by = node_of(&body);
            assert_eq!(Some(served_by), c.owner(&id), "{id} round {round}");
            per_node[served_by] += 1;
        }
    }
    assert!(per_node.iter().all(|&n| n > 20), "uneven: {per_node:?}");
    // A keyless path goes anywhere (power of two choices); it is still answered.
    let (s, _) = get_path(&c, "/products?ids=P0001").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_hot_key_spills_to_the_next_node_once_its_owner_is_over_capacity() {
    let nodes = nodes(3).await;
    let c = cluster(config(&nodes));
    let owner = c.owner("HOT").unwrap();
    nodes[owner].state.hold.store(true, Ordering::SeqCst);
    // First request: held on the owner.
    let arrived = nodes[owner].state.arrived.notified();
    let c1 = c.clone();
    let first = tokio::spawn(async move { get_path(&c1, "/products/HOT").await });
    arrived.await;
    assert_eq!(c.in_flight()[owner], 1);
    // Capacity is now ⌈1.25 · (1 + 1) / 3⌉ = 1: the owner is full, the key walks on.
    let (s, body) = get_path(&c, "/products/HOT").await;
    assert_eq!(s, StatusCode::OK);
    let spilled_to = node_of(&body);
    assert_ne!(spilled_to, owner, "the hot key stayed on its full owner");
    // Once the owner is free again, the key comes home.
    nodes[owner].state.hold.store(false, Ordering::SeqCst);
    nodes[owner].state.release.notify_waiters();
    let (s, body) = first.await.unwrap();
    assert_eq!((s, node_of(&body)), (StatusCode::OK, owner));
    let (_, body) = get_path(&c, "/products/HOT").await;
    assert_eq!(node_of(&body), owner);
}

#[tokio::test]
async fn a_killed_node_keys_move_to_the_others_with_no_failed_request() {
    let nodes = nodes(3).await;
    let c = cluster(config(&nodes));
    let ids: Vec<String> = (0..90).map(|k| format!("K{k:03}")).collect();
    for id in &ids {
        assert_eq!(
            get_path(&c, &format!("/products/{id}")).await.0,
            StatusCode::OK
        );
    }
    let victim = 1;
    nodes[victim].kill.send(true).unwrap();
    let mut moved_to = HashSet::new();
    for id in &ids {
        let (s, body) = get_path(&c, &format!("/products/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{id}: {body}");
        let now = node_of(&body);
        assert_ne!(now, victim);
        if c.owner(id) == Some(victim) {
            moved_to.insert(now);
        } else {
            assert_eq!(
                Some(now),
                c.owner(id),
                "{id} moved though its node is alive"
            );
        }
    }
    assert!(!moved_to.is_empty(), "no key of the killed node was asked");
}

#[tokio::test]
async fn retries_only_idempotent_requests_on_another_node_within_the_budget() {
    let nodes = nodes(2).await;
    let mut cfg = config(&nodes);
    cfg.outlier.enabled = false;
    let c = cluster(cfg.clone());
    // Find a key node 0 owns; node 0 answers 503.
    let id = (0..)
        .map(|k| format!("R{k}"))
        .find(|id| c.owner(id) == Some(0))
        .unwrap();
    nodes[0].state.mode.store(1, Ordering::SeqCst);
    let (s, body) = get_path(&c, &format!("/products/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(node_of(&body), 1, "retried on the next node");
    assert_eq!(nodes[0].served("/products/"), 1);

    // POST without an Idempotency-Key: never sent twice.
    let post = |key: Option<&str>| {
        let mut b = Request::post("/orders");
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        b.body(Body::from("order-1")).unwrap()
    };
    nodes[1].state.mode.store(1, Ordering::SeqCst);
    let (s, _) = send(&c, post(None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let posts = nodes[0].served("/orders") + nodes[1].served("/orders");
    assert_eq!(posts, 1, "a POST without a key was retried");
    // With a key: retried, and the body is sent again.
    nodes[1].state.mode.store(0, Ordering::SeqCst);
    let mut answered = 0;
    for _ in 0..10 {
        let (s, body) = send(&c, post(Some("k-1"))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body, "node 1 got order-1");
        answered += 1;
    }
    assert_eq!(answered, 10);

    // No budget: the first 503 is the answer.
    cfg.retry.budget_percent = 0.0;
    cfg.retry.budget_min_per_second = 0;
    let stingy = cluster(cfg);
    let (s, _) = get_path(&stingy, &format!("/products/{id}")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_open_breaker_fails_fast_without_calling_the_node() {
    let nodes = nodes(1).await;
    let mut cfg = config(&nodes);
    cfg.outlier.enabled = false;
    cfg.breaker = BreakerConfig {
        minimum_calls: 4,
        window: 10,
        failure_rate_percent: 50,
        open_ms: 60_000,
        ..BreakerConfig::default()
    };
    let c = cluster(cfg);
    nodes[0].state.mode.store(2, Ordering::SeqCst);
    for _ in 0..4 {
        // 500s are the upstream's answer: passed on, not retried.
        assert_eq!(
            get_path(&c, "/products/X").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(nodes[0].served("/products/"), 4);
    let r = c
        .clone()
        .oneshot(Request::get("/products/X").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        nodes[0].served("/products/"),
        4,
        "an open breaker called the node"
    );
}

#[tokio::test]
async fn consecutive_failures_eject_a_node_and_its_keys_go_next() {
    let nodes = nodes(3).await;
    let mut cfg = config(&nodes);
    cfg.breaker.enabled = false;
    cfg.outlier = OutlierConfig {
        consecutive_failures: 3,
        base_ejection_ms: 60_000,
        ..OutlierConfig::default()
    };
    let c = cluster(cfg);
    let id = (0..)
        .map(|k| format!("E{k}"))
        .find(|id| c.owner(id) == Some(2))
        .unwrap();
    nodes[2].state.mode.store(2, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(
            get_path(&c, &format!("/products/{id}")).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // Ejected: the key is served by the next node, node 2 is not asked.
    let (s, body) = get_path(&c, &format!("/products/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(node_of(&body), 2);
    assert_eq!(nodes[2].served("/products/"), 3);
}

#[tokio::test]
async fn nodes_failing_health_checks_get_no_traffic() {
    let nodes = nodes(3).await;
    let c = cluster(config(&nodes));
    nodes[0].state.healthy.store(false, Ordering::SeqCst);
    // Two failed rounds make it unhealthy (unhealthy_after = 2).
    c.check_health().await;
    c.check_health().await;
    for k in 0..60 {
        let (s, body) = get_path(&c, &format!("/products/H{k}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_ne!(node_of(&body), 0);
    }
    assert_eq!(nodes[0].served("/products/"), 0);
    // Healthy again after one good round.
    nodes[0].state.healthy.store(true, Ordering::SeqCst);
    c.check_health().await;
    let id = (0..)
        .map(|k| format!("H{k}"))
        .find(|id| c.owner(id) == Some(0))
        .unwrap();
    let (_, body) = get_path(&c, &format!("/products/{id}")).await;
    assert_eq!(node_of(&body), 0);
}

#[tokio::test]
async fn a_batch_is_split_by_owner_and_merged_in_order() {
    let nodes = nodes(3).await;
    let c = cluster(config(&nodes));
    let ids: Vec<String> = (0..30).map(|k| format!("B{k:02}")).collect();
    let mut asked = ids.clone();
    asked.insert(5, "NONE1".into());
    let (s, body) = get_path(&c, &format!("/products?ids={}&market=DE", asked.join(","))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let docs: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(docs.len(), asked.len());
    for (id, doc) in asked.iter().zip(&docs) {
        if id == "NONE1" {
            assert!(doc.is_null());
            continue;
        }
        assert_eq!(doc["id"], id.as_str());
        // Each id was answered by the node owning it (locality).
        let owner = c.owner(id).unwrap();
        assert_eq!(doc["node"], owner, "{id}");
    }
    let mut parts = HashMap::new();
    for n in &nodes {
        for p in n.seen() {
            assert!(p.ends_with("&market=DE"), "other parameters are kept: {p}");
            *parts.entry(n.state.index).or_insert(0) += 1;
        }
    }
    assert_eq!(parts.len(), 3, "one part per node: {parts:?}");
    assert!(parts.values().all(|&n| n == 1));
    // A bad id fails the whole batch, as on one node.
    let (s, _) = get_path(&c, &format!("/products?ids={},BAD", ids.join(","))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_route_deadline_bounds_the_call() {
    let nodes = nodes(1).await;
    let c = cluster(config(&nodes));
    let mut r = Request::get("/products/SLOW").body(Body::empty()).unwrap();
    r.extensions_mut().insert(Deadline(
        tokio::time::Instant::now() + Duration::from_millis(100),
    ));
    let (s, _) = send(&c, r).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn round_robin_spreads_keys_without_locality() {
    let nodes = nodes(3).await;
    let mut cfg = config(&nodes);
    cfg.balance = Balance::RoundRobin;
    let c = cluster(cfg);
    let mut served = HashSet::new();
    for _ in 0..6 {
        let (_, body) = get_path(&c, "/products/SAME").await;
        served.insert(node_of(&body));
    }
    assert_eq!(served.len(), 3);
}
