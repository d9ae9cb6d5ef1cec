//! Checkout's services on separate processes, talking HTTP: an inventory + payments
//! node, an orders node (`--roles checkout` with `checkout.remote.*` pointing at it,
//! no edge: it reads the Envelope keys from the identity store) and an edge node in
//! front (`edge.upstreams.checkout` and `.inventory`). Every user request goes through
//! the edge; the orders node never opens the inventory or payments store.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

mod common;

use std::time::Duration;

use common::{Http, Surge, wait_for};
use serde_json::{Value, json};

fn parse(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// `(available, held, sold)` of `sku` in DE, through the edge.
async fn counters(http: &Http, base: &str, sku: &str) -> (i64, i64, i64) {
    let (s, v) = http
        .get_json(&format!("{base}/admin/inventory/{sku}/DE"))
        .await;
    assert_eq!(s, 200, "{v}");
    let n = |f: &str| v[f].as_i64().unwrap();
    (n("available"), n("held"), n("sold"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_inventory_and_payments_on_three_processes_behind_an_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let http = Http::new();
    let fast = [
        ("SURGE_CHECKOUT__SAGA__RETRY_BASE_MS", "10"),
        ("SURGE_CHECKOUT__SAGA__RETRY_MAX_MS", "100"),
        ("SURGE_CHECKOUT__RESPOND_WITHIN_MS", "5000"),
    ];

    // The services node: inventory (fed from the catalog's offers) and payments.
    let services = Surge::spawn_env(&["serve", "--roles", "inventory,payments"], data, &fast);
    wait_for(
        &http,
        &format!("{}/healthz", services.base),
        200,
        Duration::from_secs(30),
    )
    .await;
    // Its internal API wants the admin token.
    let (s, _) = http
        .send_as(
            "POST",
            &format!("{}/internal/inventory/holds/o1/commit", services.base),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 401);

    // The orders node, calling the services node.
    let mut env = fast.to_vec();
    env.push(("SURGE_CHECKOUT__REMOTE__INVENTORY", services.base.as_str()));
    env.push(("SURGE_CHECKOUT__REMOTE__PAYMENTS", services.base.as_str()));
    let orders = Surge::spawn_env(&["serve", "--roles", "checkout"], data, &env);

    // The edge (with the catalog), in front of both.
    let config = data.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[edge.upstreams]\ncheckout = {:?}\ninventory = {:?}\n",
            orders.base, services.base
        ),
    )
    .unwrap();
    let edge = Surge::spawn_with(
        &[
            "serve",
            "--roles",
            "edge,catalog,projector",
            "--config",
            config.to_str().unwrap(),
        ],
        data,
    );
    let base = edge.base.clone();
    wait_for(
        &http,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await;

    // Stock comes from the catalog's offers, through the services node's feed.
    let offers = json!({"offers": [
        {"product_id": "P-1", "merchant_id": "m1", "market": "DE",
         "price": {"amount_minor": 2500, "currency": "EUR"}, "stock": 10},
        {"product_id": "HOT-1", "merchant_id": "m1", "market": "DE",
         "price": {"amount_minor": 9900, "currency": "EUR"}, "stock": 1},
    ]});
    let (s, b) = http
        .send("POST", &format!("{base}/admin/offers"), Some(offers))
        .await
        .unwrap();
    assert!(s < 300, "offers: {s} {}", String::from_utf8_lossy(&b));
    common::poll_until(
        Duration::from_secs(20),
        "the feed declares the stock",
        || {
            let http = http.clone();
            let base = base.clone();
            async move {
                let (s, v) = http
                    .get_json(&format!("{base}/admin/inventory/HOT-1:m1/DE"))
                    .await;
                s == 200 && v["available"] == 1
            }
        },
    )
    .await;

    let (s, b) = http
        .send(
            "POST",
            &format!("{base}/auth/signup"),
            Some(json!({"email": "far@example.com", "password": "a long enough password"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let token = parse(&b)["access_token"].as_str().unwrap().to_owned();
    let buy = |key: &'static str, sku: &'static str, qty: i64, method: &'static str| {
        let http = http.clone();
        let url = format!("{base}/checkout");
        let token = token.clone();
        async move {
            let body = json!({"items": [{"sku": sku, "qty": qty}], "market": "DE",
                "payment_method": method,
                "shipping_address": {"name": "Far", "line1": "Str. 1", "postal_code": "1",
                "city": "Berlin", "country": "DE"}});
            let (s, b) = http
                .send_headers(
                    "POST",
                    &url,
                    Some(&token),
                    &[("idempotency-key", key)],
                    Some(body),
                )
                .await
                .unwrap();
            (s, parse(&b))
        }
    };

    // A checkout: held, authorized, sold and captured across the processes.
    let (s, order) = buy("k1", "P-1:m1", 2, "tok_ok").await;
    assert_eq!(
        (s, order["status"].as_str()),
        (201, Some("confirmed")),
        "{order}"
    );
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(counters(&http, &base, "P-1:m1").await, (8, 0, 2));
    let (s, doc) = http
        .send_as("GET", &format!("{base}/orders/{id}"), Some(&token), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(parse(&doc)["status"], "confirmed");
    // The same key again: the stored answer, no second order.
    let (s, again) = buy("k1", "P-1:m1", 2, "tok_ok").await;
    assert_eq!((s, again["id"].as_str()), (201, Some(id.as_str())));

    // A declined card: compensated, the stock comes back.
    let (s, declined) = buy("k2", "P-1:m1", 1, "tok_decline").await;
    assert_eq!(s, 201, "{declined}");
    assert_eq!(declined["status"], "cancelled", "{declined}");
    assert!(
        declined["reason"].as_str().unwrap().contains("declined"),
        "{declined}"
    );
    assert_eq!(counters(&http, &base, "P-1:m1").await, (8, 0, 2));

    // The hot SKU: one unit. The first buyer gets it, the second is cancelled as sold
    // out, and the third is refused by the orders node from memory (409, no order).
    let (_, first) = buy("h1", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(first["status"], "confirmed", "{first}");
    let (_, second) = buy("h2", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(second["status"], "cancelled", "{second}");
    let (s, third) = buy("h3", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(s, 409, "{third}");
    assert!(
        third["type"].as_str().unwrap().contains("sold-out"),
        "{third}"
    );
    let (available, _, sold) = counters(&http, &base, "HOT-1:m1").await;
    assert_eq!((available, sold), (0, 1));

    // Each node's metrics show who did the work: the orders node never touched stock
    // or payments itself; the services node answered its internal calls.
    let (_, page) = http
        .send("GET", &format!("{}/metrics", services.base), None)
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page).into_owned();
    assert!(page.contains("/internal/inventory/holds/{order}"), "{page}");
    assert!(
        page.contains("/internal/payments/{order}/authorize"),
        "{page}"
    );
    drop(orders);
    drop(services);
}
