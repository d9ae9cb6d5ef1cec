//! Checkout's services on separate processes, talking HTTP: an inventory + payments
//! node, an orders node (`--roles checkout` with `checkout.remote.*` pointing at it,
//! no edge: it reads the Envelope keys from the identity store) and an edge node in
//! front (`edge.upstreams.checkout` and `.inventory`). Every user request goes through
//! the edge; the orders node never opens the inventory or payments store.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Http, Surge, wait_for};
use serde_json::{Value, json};

/// Quick retries, so a saga waiting out a dead services node moves on soon after.
const FAST: [(&str, &str); 3] = [
    ("SURGE_CHECKOUT__SAGA__RETRY_BASE_MS", "10"),
    ("SURGE_CHECKOUT__SAGA__RETRY_MAX_MS", "100"),
    ("SURGE_CHECKOUT__RESPOND_WITHIN_MS", "5000"),
];

const SERVICES: [&str; 3] = ["serve", "--roles", "inventory,payments"];

fn parse(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// The three processes, with a signed-up user.
struct Cluster {
    /// Behind a lock, so a test can kill and replace it while clients run.
    services: std::sync::Mutex<Surge>,
    /// Where the services node listens (it comes back there after a kill).
    services_at: String,
    orders: Surge,
    _edge: Surge,
    /// The edge's base URL.
    base: String,
    token: String,
    http: Http,
}

/// A free loopback address.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

impl Cluster {
    /// Starts the services node, the orders node and the edge on `data`, offers
    /// `offers` (`(product, price, stock)`, merchant `m1`, DE) and waits until the
    /// inventory has their stock.
    async fn start(data: &Path, offers: &[(&str, i64, i64)]) -> Cluster {
        let http = Http::new();
        let services_at = free_address();
        let services = Surge::spawn_at(&SERVICES, data, &FAST, &services_at);
        let services_url = format!("http://{services_at}");
        wait_for(
            &http,
            &format!("{services_url}/healthz"),
            200,
            Duration::from_secs(30),
        )
        .await;
        let mut env = FAST.to_vec();
        env.push(("SURGE_CHECKOUT__REMOTE__INVENTORY", services_url.as_str()));
        env.push(("SURGE_CHECKOUT__REMOTE__PAYMENTS", services_url.as_str()));
        let orders = Surge::spawn_env(&["serve", "--roles", "checkout"], data, &env);
        let config = data.join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "[edge.upstreams]\ncheckout = {:?}\ninventory = {services_url:?}\n",
                orders.base
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
        let list: Vec<Value> = offers
            .iter()
            .map(|(product, price, stock)| {
                json!({"product_id": product, "merchant_id": "m1", "market": "DE",
                "price": {"amount_minor": price, "currency": "EUR"}, "stock": stock})
            })
            .collect();
        let (s, b) = http
            .send(
                "POST",
                &format!("{base}/admin/offers"),
                Some(json!({ "offers": list })),
            )
            .await
            .unwrap();
        assert!(s < 300, "offers: {s} {}", String::from_utf8_lossy(&b));
        for (product, _, stock) in offers {
            let sku = format!("{product}:m1");
            common::poll_until(
                Duration::from_secs(20),
                "the feed declares the stock",
                || {
                    let (http, base, sku) = (http.clone(), base.clone(), sku.clone());
                    async move {
                        let (s, v) = http
                            .get_json(&format!("{base}/admin/inventory/{sku}/DE"))
                            .await;
                        s == 200 && v["available"] == *stock
                    }
                },
            )
            .await;
        }

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
        Cluster {
            services: std::sync::Mutex::new(services),
            services_at,
            orders,
            _edge: edge,
            base,
            token,
            http,
        }
    }

    /// One `POST /checkout` through the edge.
    async fn buy(&self, key: &str, sku: &str, qty: i64, method: &str) -> (u16, Value) {
        let body = json!({"items": [{"sku": sku, "qty": qty}], "market": "DE",
            "payment_method": method,
            "shipping_address": {"name": "Far", "line1": "Str. 1", "postal_code": "1",
            "city": "Berlin", "country": "DE"}});
        match self
            .http
            .send_headers(
                "POST",
                &format!("{}/checkout", self.base),
                Some(&self.token),
                &[("idempotency-key", key)],
                Some(body),
            )
            .await
        {
            Ok((s, b)) => (s, parse(&b)),
            Err(e) => (0, json!(e)),
        }
    }

    /// `(available, held, sold)` of `sku` in DE, through the edge.
    async fn counters(&self, sku: &str) -> (i64, i64, i64) {
        let (s, v) = self
            .http
            .get_json(&format!("{}/admin/inventory/{sku}/DE", self.base))
            .await;
        assert_eq!(s, 200, "{v}");
        let n = |f: &str| v[f].as_i64().unwrap();
        (n("available"), n("held"), n("sold"))
    }

    /// The order's status once its saga is done (polls the owner's `GET /orders/{id}`).
    async fn settled(&self, id: &str) -> String {
        let url = format!("{}/orders/{id}", self.base);
        let status = std::sync::Mutex::new(String::new());
        common::poll_until(
            Duration::from_secs(60),
            &format!("order {id} settled"),
            || async {
                let Ok((200, b)) = self
                    .http
                    .send_as("GET", &url, Some(&self.token), None)
                    .await
                else {
                    return false;
                };
                let now = parse(&b)["status"].as_str().unwrap_or("").to_owned();
                let done = now != "pending";
                *status.lock().unwrap() = now;
                done
            },
        )
        .await;
        status.into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_inventory_and_payments_on_three_processes_behind_an_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), &[("P-1", 2500, 10), ("HOT-1", 9900, 1)]).await;
    // The services node's internal API wants the admin token.
    let (s, _) = c
        .http
        .send_as(
            "POST",
            &format!(
                "http://{}/internal/inventory/holds/o1/commit",
                c.services_at
            ),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 401);

    // A checkout: held, authorized, sold and captured across the processes.
    let (s, order) = c.buy("k1", "P-1:m1", 2, "tok_ok").await;
    assert_eq!(
        (s, order["status"].as_str()),
        (201, Some("confirmed")),
        "{order}"
    );
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(c.counters("P-1:m1").await, (8, 0, 2));
    assert_eq!(c.settled(&id).await, "confirmed");
    // The same key again: the stored answer, no second order.
    let (s, again) = c.buy("k1", "P-1:m1", 2, "tok_ok").await;
    assert_eq!((s, again["id"].as_str()), (201, Some(id.as_str())));

    // A declined card: compensated, the stock comes back.
    let (s, declined) = c.buy("k2", "P-1:m1", 1, "tok_decline").await;
    assert_eq!(s, 201, "{declined}");
    assert_eq!(declined["status"], "cancelled", "{declined}");
    assert!(
        declined["reason"].as_str().unwrap().contains("declined"),
        "{declined}"
    );
    assert_eq!(c.counters("P-1:m1").await, (8, 0, 2));

    // The hot SKU: one unit. The first buyer gets it, the second is cancelled as sold
    // out, and the third is refused by the orders node from memory (409, no order).
    let (_, first) = c.buy("h1", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(first["status"], "confirmed", "{first}");
    let (_, second) = c.buy("h2", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(second["status"], "cancelled", "{second}");
    let (s, third) = c.buy("h3", "HOT-1:m1", 1, "tok_ok").await;
    assert_eq!(s, 409, "{third}");
    assert!(
        third["type"].as_str().unwrap().contains("sold-out"),
        "{third}"
    );
    let (available, _, sold) = c.counters("HOT-1:m1").await;
    assert_eq!((available, sold), (0, 1));

    // The services node answered the internal calls (its own metrics say so).
    let (_, page) = c
        .http
        .send(
            "GET",
            &format!("{}/metrics", c.services.lock().unwrap().base),
            None,
        )
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page).into_owned();
    assert!(page.contains("/internal/inventory/holds/{order}"), "{page}");
    assert!(
        page.contains("/internal/payments/{order}/authorize"),
        "{page}"
    );
    // And the orders node called them over HTTP (its metrics count the calls).
    let (_, page) = c
        .http
        .send("GET", &format!("{}/metrics", c.orders.base), None)
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page).into_owned();
    for service in ["inventory", "payments"] {
        let calls: f64 = page
            .lines()
            .filter(|l| {
                l.contains(&format!("service=\"{service}\"")) && l.contains("outcome=\"ok\"")
            })
            .map(|l| common::metric_sum(l, "surge_checkout_remote_calls_total"))
            .sum();
        assert!(calls > 0.0, "no {service} calls in {page}");
    }
}

/// The services node is killed with SIGKILL while checkouts run, and comes back on the
/// same address: calls that took effect without their answer are repeated harmlessly,
/// and once everything settles every order is confirmed or cancelled, nothing was sold
/// twice or lost, and every confirmed order was captured exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_node_killed_mid_run_loses_nothing() {
    const STOCK: i64 = 12;
    const CHECKOUTS: usize = 30;
    const WORKERS: usize = 6;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(Cluster::start(dir.path(), &[("P-1", 2500, STOCK)]).await);

    let (acked_tx, mut acked) = tokio::sync::watch::channel(0_usize);
    let acked_tx = Arc::new(acked_tx);
    let mut clients = Vec::new();
    for w in 0..WORKERS {
        let (c, acked_tx) = (c.clone(), acked_tx.clone());
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (w..CHECKOUTS).step_by(WORKERS) {
                let key = format!("k{n}");
                // The same key until the answer is final (bounded), through the one
                // polling helper of these tests.
                let order = std::sync::Mutex::new(None);
                common::poll_until(
                    Duration::from_secs(60),
                    &format!("key {key} answered"),
                    || async {
                        match c.buy(&key, "P-1:m1", 1, "tok_ok").await {
                            (201 | 202, v) => {
                                *order.lock().unwrap() = Some(v["id"].as_str().unwrap().to_owned());
                                true
                            }
                            // Sold out from memory: final, no order.
                            (409, v) if v["type"].as_str().unwrap_or("").contains("sold-out") => {
                                true
                            }
                            (s, v) if (400..500).contains(&s) && s != 409 && s != 429 => {
                                panic!("client error {s}: {v}")
                            }
                            // In use, unavailable, or the node is down: again.
                            _ => false,
                        }
                    },
                )
                .await;
                if let Some(id) = order.into_inner().unwrap() {
                    ids.push(id);
                    acked_tx.send_modify(|n| *n += 1);
                }
            }
            ids
        }));
    }
    // Kill the services node once some checkouts are in, bring it back on its address.
    acked.wait_for(|n| *n >= 5).await.unwrap();
    {
        let mut services = c.services.lock().unwrap();
        services.child.kill().unwrap(); // SIGKILL: no shutdown hook runs
        let _ = services.child.wait();
        *services = Surge::spawn_at(&SERVICES, dir.path(), &FAST, &c.services_at);
    }
    let mut ids = Vec::new();
    for client in clients {
        ids.extend(client.await.unwrap());
    }
    let (_, page) = c
        .http
        .send("GET", &format!("{}/metrics", c.orders.base), None)
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page).into_owned();
    // The kill hit sagas in flight: steps failed transiently and were retried.
    let retried: f64 = page
        .lines()
        .filter(|l| l.contains("outcome=\"transient\""))
        .map(|l| common::metric_sum(l, "surge_checkout_saga_steps_total"))
        .sum();
    assert!(retried > 0.0, "{page}");
    let mut confirmed = 0;
    for id in &ids {
        match c.settled(id).await.as_str() {
            "confirmed" => confirmed += 1,
            "cancelled" => {}
            other => panic!("order {id} ended {other}"),
        }
    }
    let (available, held, sold) = c.counters("P-1:m1").await;
    assert_eq!(held, 0);
    assert_eq!(available + sold, STOCK, "units conserved");
    assert_eq!(sold, confirmed, "one unit per confirmed order");
    assert!(sold <= STOCK);
    // Every confirmed order captured its total once, every cancelled one nothing: read
    // from the payments store itself.
    let url = format!("sqlite://{}", dir.path().join("payments.db").display());
    let payments = surge_store::open_payments(&url, &surge_store::StoreOptions::default())
        .await
        .unwrap();
    for id in &ids {
        let p = payments.payment(id).await.unwrap();
        let captured = p.map_or(0, |p| p.captured_minor - p.refunded_minor);
        let (_, doc) = c
            .http
            .send_as(
                "GET",
                &format!("{}/orders/{id}", c.base),
                Some(&c.token),
                None,
            )
            .await
            .unwrap();
        let doc = parse(&doc);
        let expected = if doc["status"] == "confirmed" {
            doc["total_minor"].as_i64().unwrap()
        } else {
            0
        };
        assert_eq!(captured, expected, "order {id}: {doc}");
    }
    payments.close().await;
}
