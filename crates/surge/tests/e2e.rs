//! End-to-end tests of the real `surge` binary: it starts on port 0, serves reads and
//! writes, survives `kill -9` in the middle of a bulk ingest without losing or
//! double-applying an acknowledged write, and prints its configuration.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

mod common;

use common::{Http, Surge, TOKEN, metric_sum, wait_for};

fn product(n: usize) -> Value {
    json!({"id": format!("K{n:05}"), "name": {"en": format!("Product {n}")},
           "attributes": [{"key": "n", "value": n}], "filler": "x".repeat(2000)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Http::new();
    let surge = Surge::start(dir.path(), &http).await;
    let (s, _) = http
        .send(
            "PUT",
            &format!("{}/admin/products/K00001", surge.base),
            Some(product(1)),
        )
        .await
        .expect("put");
    assert_eq!(s, 201);
    wait_for(
        &http,
        &format!("{}/products/K00001", surge.base),
        200,
        Duration::from_secs(10),
    )
    .await;
    let (s, doc) = http
        .get_json(&format!("{}/products/K00001", surge.base))
        .await;
    assert_eq!((s, doc), (200, product(1)));
    let (s, problem) = http
        .get_json(&format!(
            "{}/products?ids={}",
            surge.base,
            vec!["K1"; 101].join(",")
        ))
        .await;
    assert_eq!(s, 400);
    assert_eq!(problem["type"], "https://surge.dev/problems/bad-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Http::new();
    let surge = Surge::start(dir.path(), &http).await;

    // Writers PUT products and offers as fast as they can; the test kills the
    // process once enough writes have been acknowledged.
    let acked_products = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acked_offers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..8usize {
        let (http, base) = (http.clone(), surge.base.clone());
        let (acked_products, acked_offers, stop, progress) = (
            acked_products.clone(),
            acked_offers.clone(),
            stop.clone(),
            progress.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0..10_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = i * 8 + w;
                let id = format!("K{n:05}");
                match http.send("PUT", &format!("{base}/admin/products/{id}"), Some(product(n))).await {
                    Ok((201, _)) => {
                        acked_products.lock().expect("lock").push(n);
                        progress.notify_one();
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {}", String::from_utf8_lossy(&body)),
                    Err(_) => break, // the process is gone
                }
                let offer = json!({"offers": [{"product_id": id, "merchant_id": "M1", "market": "DE",
                    "price": {"amount_minor": 1000 + n, "currency": "EUR"}, "stock": n}]});
                match http.send("POST", &format!("{base}/admin/offers"), Some(offer)).await {
                    Ok((200, _)) => acked_offers.lock().expect("lock").push(n),
                    Ok((status, body)) => panic!("unexpected {status}: {}", String::from_utf8_lossy(&body)),
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_products.lock().expect("lock").len() < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        let woke = tokio::time::timeout(left, progress.notified()).await;
        assert!(woke.is_ok(), "writers made no progress");
    }
    surge.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let products = acked_products.lock().expect("lock").clone();
    let offers = acked_offers.lock().expect("lock").clone();
    assert!(products.len() >= 300);

    // Restart on the same data directory; the projector resumes from its position.
    let surge = Surge::start(dir.path(), &http).await;
    let (_, status) = http
        .get_json(&format!("{}/admin/projector", surge.base))
        .await;
    assert_eq!(status["lag_entries"], 0, "{status}");
    for &n in &products {
        let id = format!("K{n:05}");
        let (s, doc) = http
            .get_json(&format!("{}/products/{id}", surge.base))
            .await;
        assert_eq!(
            (s, doc),
            (200, product(n)),
            "acknowledged product {id} lost"
        );
        let (s, body) = http
            .send("GET", &format!("{}/admin/products/{id}", surge.base), None)
            .await
            .expect("get");
        assert_eq!(s, 200);
        assert!(!body.is_empty());
    }
    for &n in &offers {
        let id = format!("K{n:05}");
        let (s, doc) = http
            .get_json(&format!("{}/products/{id}/offers?market=DE", surge.base))
            .await;
        assert_eq!(s, 200);
        assert_eq!(
            doc["offers"][0]["price"]["amount_minor"],
            1000 + n as i64,
            "acknowledged offer of {id} lost"
        );
    }
    // Nothing applied twice: each product was written once, so its version is 1, and
    // the views match the source one for one.
    let (_, status) = http
        .get_json(&format!("{}/admin/projector", surge.base))
        .await;
    assert_eq!(status["applied_position"], status["outbox_head"]);
    for &n in products.iter().take(50) {
        let url = format!("{}/admin/products/K{n:05}", surge.base);
        let req = http::Request::get(&url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .expect("req");
        let resp = http.0.request(req).await.expect("get");
        assert_eq!(resp.headers()["x-surge-version"], "1");
    }
}

/// Status and problem type (or `user_id`) of `GET /auth/me` with `access`.
async fn me(http: &Http, base: &str, access: &str) -> (u16, String) {
    let (s, b) = http
        .send_as("GET", &format!("{base}/auth/me"), Some(access), None)
        .await
        .expect("me");
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let what = v["user_id"].as_str().or(v["type"].as_str()).unwrap_or("");
    (s, what.rsplit('/').next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Http::new();
    let surge = Surge::start(dir.path(), &http).await;
    let credentials = json!({"email": "kim@example.com", "password": "a long enough password"});
    let (s, body) = http
        .send(
            "POST",
            &format!("{}/auth/signup", surge.base),
            Some(credentials.clone()),
        )
        .await
        .expect("signup");
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let first: Value = serde_json::from_slice(&body).unwrap();
    let (s, body) = http
        .send(
            "POST",
            &format!("{}/auth/login", surge.base),
            Some(credentials),
        )
        .await
        .expect("login");
    assert_eq!(s, 200);
    let second: Value = serde_json::from_slice(&body).unwrap();
    let (keep, drop) = (
        first["access_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
    );
    let user = first["user_id"].as_str().unwrap();
    assert_eq!(me(&http, &surge.base, keep).await, (200, user.to_owned()));
    let (s, _) = http
        .send_as(
            "POST",
            &format!("{}/auth/logout", surge.base),
            Some(drop),
            None,
        )
        .await
        .expect("logout");
    assert_eq!(s, 204);
    assert_eq!(
        me(&http, &surge.base, drop).await,
        (401, "revoked".to_owned())
    );
    surge.kill9();

    // The signing keys and the revocation are stored: after a restart the live token
    // still works and the logged-out one is still refused.
    let surge = Surge::start(dir.path(), &http).await;
    assert_eq!(me(&http, &surge.base, keep).await, (200, user.to_owned()));
    assert_eq!(
        me(&http, &surge.base, drop).await,
        (401, "revoked".to_owned())
    );
    let (s, body) = http
        .send(
            "GET",
            &format!("{}/.well-known/jwks.json", surge.base),
            None,
        )
        .await
        .expect("jwks");
    assert_eq!(s, 200);
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
}

#[test]
fn config_dump_prints_the_effective_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["config", "--dump", "--listen", "127.0.0.1:9999"])
        .env("SURGE_ADMIN_TOKEN", "secret-value")
        .env("SURGE_CATALOG__CACHE__TTL_SECONDS", "30")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("ttl_seconds = 30"), "{text}");
    assert!(!text.contains("secret-value"));
    let bad = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["config", "--dump"])
        .env("SURGE_CATALOG__CACHE__MAX_BYTES", "12")
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cache.max_bytes"));
}

/// Three catalog processes on one store behind an edge process that lists them as
/// nodes: every product is loaded into exactly one node's cache (consistent hashing),
/// and killing a node with SIGKILL fails no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_spreads_products_over_three_catalog_processes_and_survives_losing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Http::new();
    let data = dir.path().join("catalog");
    let ready = |s: &Surge| format!("{}/readyz", s.base);
    // One node projects; all three serve reads from the shared store.
    let mut nodes = Vec::new();
    for roles in ["catalog,projector", "catalog", "catalog"] {
        let node = Surge::spawn_with(&["serve", "--roles", roles], &data);
        wait_for(&http, &ready(&node), 200, Duration::from_secs(60)).await;
        nodes.push(node);
    }
    let products = 30;
    for n in 0..products {
        let url = format!("{}/admin/products/K{n:05}", nodes[0].base);
        let (s, _) = http.send("PUT", &url, Some(product(n))).await.expect("put");
        assert_eq!(s, 201);
    }
    let projector = format!("{}/admin/projector", nodes[0].base);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get_json(&projector).await.1["caught_up"] != true {
        assert!(Instant::now() < deadline, "the projector never caught up");
        tokio::task::yield_now().await;
    }

    let node_list: Vec<String> = nodes.iter().map(|n| format!("{:?}", n.base)).collect();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[edge.upstreams.catalog]\nnodes = [{}]\n[edge.upstreams.catalog.health]\ninterval_ms = 500\n[edge.micro_cache]\nttl_ms = 0\n",
            node_list.join(", ")
        ),
    )
    .unwrap();
    let edge = Surge::spawn_with(
        &[
            "serve",
            "--roles",
            "edge",
            "--config",
            config.to_str().unwrap(),
        ],
        &dir.path().join("edge"),
    );
    for round in 0..3 {
        for n in 0..products {
            let (s, doc) = http
                .get_json(&format!("{}/products/K{n:05}", edge.base))
                .await;
            assert_eq!((s, doc), (200, product(n)), "round {round}");
        }
    }
    // Each product was loaded once, by the one node owning it; the other reads hit (the
    // edge's micro-cache is off so that every read reaches a node).
    let mut misses = Vec::new();
    let mut hits = 0.0;
    for node in &nodes {
        let (_, page) = http
            .send("GET", &format!("{}/metrics", node.base), None)
            .await
            .expect("metrics");
        let page = String::from_utf8_lossy(&page).into_owned();
        misses.push(metric_sum(&page, "surge_cache_misses_total"));
        hits += metric_sum(&page, "surge_cache_hits_total");
    }
    assert_eq!(
        misses.iter().sum::<f64>(),
        products as f64,
        "misses per node {misses:?}"
    );
    assert!(
        misses.iter().all(|&m| m > 0.0),
        "a node got no product: {misses:?}"
    );
    assert_eq!(hits, 2.0 * products as f64);

    // The edge answers for itself: its own metrics, not a catalog node's.
    let (s, page) = http
        .send("GET", &format!("{}/metrics", edge.base), None)
        .await
        .expect("edge metrics");
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(s, 200);
    assert!(
        metric_sum(&page, "surge_edge_upstream_calls_total") >= 3.0 * products as f64,
        "{page}"
    );
    assert_eq!(metric_sum(&page, "surge_cache_hits_total"), 0.0);

    // SIGKILL one node: its products move to the others, no request fails.
    nodes.pop().expect("node").kill9();
    for n in 0..products {
        let (s, doc) = http
            .get_json(&format!("{}/products/K{n:05}", edge.base))
            .await;
        assert_eq!((s, doc), (200, product(n)), "after the kill");
    }
}
