//! A checkout over real SQLite stores (orders, inventory, payments, and a catalog for
//! prices) and the payment provider simulator, called through its router with signed
//! Envelopes, as the edge would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use surge_checkout::payments::simulator::ProviderSimulator;
use surge_checkout::pricing::CatalogPricing;
use surge_checkout::{Checkout, CheckoutConfig, Stores};
use surge_http::admin::AdminToken;
use surge_http::envelope::{Envelope, EnvelopeKeys, HEADER};
use surge_store::{CatalogStore, Offer, StoreOptions};
use tokio::sync::watch;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-secret";
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

pub struct Harness {
    pub checkout: Checkout,
    pub router: Router,
    pub keys: EnvelopeKeys,
    pub stores: Stores,
    pub catalog: Arc<dyn CatalogStore>,
    pub provider: Arc<ProviderSimulator>,
    pub stop: watch::Sender<bool>,
    pub dir: Arc<tempfile::TempDir>,
}

/// A reply: status, headers, body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Checkout config for tests: short deadlines, quick retries.
pub fn test_config() -> CheckoutConfig {
    let mut c = CheckoutConfig::default();
    c.saga.retry_base_ms = 5;
    c.saga.retry_max_ms = 50;
    c.saga.step_deadline_ms = 2_000;
    c.saga.compensation_deadline_ms = 2_000;
    c.saga.lease_ms = 5_000;
    c.respond_within_ms = 5_000;
    c
}

pub async fn harness(config: CheckoutConfig) -> Harness {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    harness_in(dir, config).await
}

/// A checkout over the stores in `dir` (a second call on the same dir is a restart).
pub async fn harness_in(dir: Arc<tempfile::TempDir>, config: CheckoutConfig) -> Harness {
    let url = |f: &str| format!("sqlite://{}", dir.path().join(f).display());
    let options = StoreOptions::default();
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
    let mut provider_config = config.provider.clone();
    if provider_config.ledger.is_none() {
        provider_config.ledger = Some(dir.path().join("provider.db"));
    }
    let provider = Arc::new(ProviderSimulator::new(provider_config).await.unwrap());
    let (stop, stop_rx) = watch::channel(false);
    let checkout = surge_checkout::build(
        &config,
        stores.clone(),
        provider.clone(),
        Arc::new(CatalogPricing::new(catalog.clone())),
        stop_rx,
    )
    .unwrap();
    let keys = EnvelopeKeys::new(
        "k1",
        [("k1", KEY)],
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .unwrap();
    let inventory = checkout.inventory.clone().unwrap();
    let router = checkout.router(keys.clone(), AdminToken::new(ADMIN)).merge(
        surge_checkout::api::inventory_router(inventory, AdminToken::new(ADMIN)),
    );
    Harness {
        checkout,
        router,
        keys,
        stores,
        catalog,
        provider,
        stop,
        dir,
    }
}

impl Harness {
    /// The inventory service (in this process).
    pub fn inventory(&self) -> &surge_checkout::inventory::Inventory {
        self.checkout.inventory.as_ref().unwrap()
    }

    /// Offers `sku` (`product:merchant`) in DE at `price_minor` EUR with `units` in stock.
    pub async fn offer(&self, sku: &str, price_minor: i64, units: i64) {
        let (product, merchant) = sku.split_once(':').unwrap();
        self.catalog
            .upsert_offers(&[Offer {
                product_id: product.into(),
                merchant_id: merchant.into(),
                market: "DE".into(),
                price_minor,
                currency: "EUR".into(),
                stock: units,
                updated_at_ms: 0,
            }])
            .await
            .unwrap();
        self.stores
            .inventory
            .restock(sku, "DE", units)
            .await
            .unwrap();
    }

    pub async fn call(&self, request: Request<Body>) -> Reply {
        let r = self.router.clone().oneshot(request).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    fn envelope(&self, user: &str, method: &str, path: &str) -> http::HeaderValue {
        self.keys.sign(&Envelope {
            user_id: user.into(),
            session_id: format!("s-{user}"),
            market: "DE".into(),
            method: method.into(),
            path: path.into(),
            issued_at_ms: surge_http::envelope::now_ms(),
            ..Envelope::default()
        })
    }

    /// `POST /checkout` as `user` with `key` (none when `None`).
    pub async fn checkout(&self, user: &str, key: Option<&str>, body: &serde_json::Value) -> Reply {
        let mut req = Request::post("/checkout")
            .header("content-type", "application/json")
            .header(HEADER, self.envelope(user, "POST", "/checkout"));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        self.call(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// `GET path` as `user`.
    pub async fn get(&self, user: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header(HEADER, self.envelope(user, "GET", path))
            .body(Body::empty())
            .unwrap();
        self.call(req).await
    }

    /// An admin call.
    pub async fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        self.call(req).await
    }

    /// Waits (up to 10 s) until the order's saga is done; returns its status. Wakes on
    /// the orchestrator's progress signal, not on a timer.
    pub async fn settled(&self, id: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut progress = self.checkout.saga.progress();
        loop {
            progress.mark_unchanged();
            let o = self.stores.orders.order(id).await.unwrap().unwrap();
            if o.saga_state == surge_store::SagaState::Done {
                return o.status;
            }
            let moved = tokio::time::timeout_at(deadline, progress.changed()).await;
            assert!(moved.is_ok(), "saga {id} did not finish: {o:?}");
        }
    }
}

/// A checkout body for `items` of (sku, qty).
pub fn body(items: &[(&str, i64)], token: &str) -> serde_json::Value {
    serde_json::json!({
        "items": items.iter().map(|(sku, qty)| serde_json::json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        "market": "DE",
        "payment_method": token,
        "shipping_address": {
            "name": "Ada Lovelace", "line1": "Hauptstr. 1", "postal_code": "10115",
            "city": "Berlin", "country": "DE"
        }
    })
}
