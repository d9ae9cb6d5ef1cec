//! Completed checkouts per second through the checkout router (in process, no HTTP),
//! on durable SQLite (synchronous = full) or PostgreSQL, with the provider simulator.
//!
//! ```text
//! cargo bench -p surge-checkout --bench throughput -- [checkouts] [concurrency] [postgres-url]
//! ```
//! Prints completed checkouts/s and latency percentiles. Extra arguments: `hot` (every
//! checkout buys the same SKU; stock = checkouts / 20), `rate=N` (open loop: checkout
//! n is due at n/N s and its latency counts from then, so queueing is included) and
//! `remote` (the orchestrator calls the inventory and payments services over HTTP on
//! loopback, as in scale-out, instead of in process).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use surge_checkout::payments::simulator::{ProviderSimulator, SimulatorConfig};
use surge_checkout::pricing::CatalogPricing;
use surge_checkout::remote::{RemoteInventory, RemotePayments};
use surge_checkout::{CheckoutConfig, Stores};
use surge_http::admin::AdminToken;
use surge_http::envelope::{Envelope, EnvelopeKeys, HEADER};
use surge_store::{Offer, StoreOptions};
use tower::ServiceExt;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let total: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let pg = args.get(2).filter(|a| a.starts_with("postgres")).cloned();
    let hot = args.iter().any(|a| a == "hot");
    let remote = args.iter().any(|a| a == "remote");
    let rate: Option<f64> = args
        .iter()
        .find_map(|a| a.strip_prefix("rate=").and_then(|r| r.parse().ok()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(total, concurrency, pg, hot, rate, remote));
}

async fn run(
    total: usize,
    concurrency: usize,
    pg: Option<String>,
    hot: bool,
    rate: Option<f64>,
    remote: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let url = |f: &str| match &pg {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join(f).display()),
    };
    let schema = format!("bench_{}", std::process::id());
    let options = StoreOptions {
        pg_schema: pg.as_ref().map(|_| schema.clone()),
        max_connections: 16,
        ..StoreOptions::default()
    };
    let stores = Stores::open(
        &url("orders.db"),
        &url("inventory.db"),
        &url("payments.db"),
        &options,
    )
    .await
    .unwrap();
    let catalog = surge_store::open(&url("catalog.db"), &options)
        .await
        .unwrap();
    let skus = if hot { 1 } else { 100 };
    let stock = if hot {
        (total / 20).max(1) as i64
    } else {
        total as i64
    };
    for i in 0..skus {
        catalog
            .upsert_offers(&[Offer {
                product_id: format!("p{i}"),
                merchant_id: "m1".into(),
                market: "DE".into(),
                price_minor: 1000,
                currency: "EUR".into(),
                stock,
                updated_at_ms: 0,
            }])
            .await
            .unwrap();
        stores
            .inventory
            .restock(&format!("p{i}:m1"), "DE", stock)
            .await
            .unwrap();
    }
    let provider = Arc::new(
        ProviderSimulator::new(SimulatorConfig::default())
            .await
            .unwrap(),
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let pricing = Arc::new(CatalogPricing::new(catalog.clone()));
    let mut checkout = surge_checkout::build(
        &CheckoutConfig::default(),
        stores.clone(),
        provider,
        pricing.clone(),
        stop_rx.clone(),
    )
    .unwrap();
    if remote {
        // The same services, reached over HTTP: their routers on a loopback port.
        let admin = AdminToken::new("x");
        let services = surge_checkout::api::inventory_router(
            checkout.inventory.clone().unwrap(),
            admin.clone(),
        )
        .merge(surge_checkout::api::payments_router(
            checkout.payments.clone().unwrap(),
            admin,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(surge_http::server::serve(
            listener,
            services,
            std::future::pending(),
        ));
        let timeout = Duration::from_secs(10);
        let participants = surge_checkout::Participants {
            inventory: Arc::new(
                RemoteInventory::new(&base, "x", timeout, Duration::from_secs(1)).unwrap(),
            ),
            payments: Arc::new(RemotePayments::new(&base, "x", timeout).unwrap()),
        };
        checkout = surge_checkout::build_with(
            &CheckoutConfig::default(),
            stores.orders.clone(),
            participants,
            pricing,
            stop_rx,
        )
        .unwrap();
    }
    let keys = EnvelopeKeys::new(
        "k",
        [("k", &[7u8; 32][..])],
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .unwrap();
    let router = checkout.router(keys.clone(), AdminToken::new("x"));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (router, keys, next) = (router.clone(), keys.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut outcomes = [0usize; 3];
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return (lat, outcomes);
                }
                let due = match rate {
                    Some(r) => {
                        let at = started + Duration::from_secs_f64(n as f64 / r);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let sku = format!("p{}:m1", n % skus);
                let body = serde_json::json!({
                    "items": [{"sku": sku, "qty": 1}], "market": "DE", "payment_method": "tok_ok",
                    "shipping_address": {"name": "A", "line1": "B 1", "postal_code": "1", "city": "C", "country": "DE"}
                });
                let env = keys.sign(&Envelope {
                    user_id: format!("u{}", n % 1000),
                    method: "POST".into(),
                    path: "/checkout".into(),
                    issued_at_ms: surge_http::envelope::now_ms(),
                    ..Envelope::default()
                });
                let req = Request::post("/checkout")
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("key-{n}"))
                    .header(HEADER, env)
                    .body(Body::from(body.to_string()))
                    .unwrap();
                let r = router.clone().oneshot(req).await.unwrap();
                let status = r.status().as_u16();
                let bytes = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
                lat.push(due.elapsed());
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                match (status, v["status"].as_str()) {
                    (201, Some("confirmed")) => outcomes[0] += 1,
                    (201, Some("cancelled")) => outcomes[1] += 1,
                    _ => outcomes[2] += 1,
                }
            }
        }));
    }
    let mut lat = Vec::new();
    let mut outcomes = [0usize; 3];
    for t in tasks {
        let (l, o) = t.await.unwrap();
        lat.extend(l);
        for i in 0..3 {
            outcomes[i] += o[i];
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let p =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    let backend = if pg.is_some() { "postgres" } else { "sqlite" };
    println!(
        "backend={backend} hot={hot} remote={remote} paced={rate:?} checkouts={total} concurrency={concurrency} decided_per_s={:.0} confirmed={} cancelled={} other={} p50_ms={:.2} p99_ms={:.2}",
        total as f64 / secs,
        outcomes[0],
        outcomes[1],
        outcomes[2],
        p(0.5),
        p(0.99)
    );
    if hot {
        let level = stores
            .inventory
            .stock("p0:m1", "DE")
            .await
            .unwrap()
            .unwrap();
        println!(
            "hot sku: stock={stock} sold={} held={} available={} oversold={}",
            level.sold,
            level.held,
            level.available,
            (level.sold - stock).max(0)
        );
    }
    stores.close().await;
    catalog.close().await;
    if let Some(url) = &pg {
        // Leave nothing behind: every run makes its own schema.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let drop = format!("DROP SCHEMA \"{schema}\" CASCADE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
