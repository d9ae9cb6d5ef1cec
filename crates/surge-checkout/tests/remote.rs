//! The orchestrator calling inventory and payments over HTTP ([`RemoteInventory`],
//! [`RemotePayments`]) against their real routers on a loopback port: the same sagas
//! as in process, a services node that goes away and comes back mid-saga, and the
//! internal API refusing bad calls.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN, Harness, body, harness, test_config};
use http::StatusCode;
use surge_checkout::inventory::Inventory;
use surge_checkout::payments::Payments;
use surge_checkout::remote::{RemoteInventory, RemotePayments};
use surge_checkout::{CheckoutConfig, Participants};
use surge_http::admin::AdminToken;
use surge_store::StockLevel;
use tokio::sync::oneshot;

/// The services' routers served on `addr` (port 0: any) until the sender is dropped.
async fn serve_services(
    inventory: Inventory,
    payments: Payments,
    addr: SocketAddr,
) -> (SocketAddr, oneshot::Sender<()>) {
    let admin = AdminToken::new(ADMIN);
    let router = surge_checkout::api::inventory_router(inventory, admin.clone())
        .merge(surge_checkout::api::payments_router(payments, admin));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(surge_http::server::serve(listener, router, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// A harness whose orchestrator reaches the (in-process) inventory and payments
/// services of `local` only over HTTP, at `addr`. Returns it, the local inventory and
/// payments (for the test's own reads) and the server's stop handle.
async fn remote_harness(
    config: CheckoutConfig,
) -> (
    Harness,
    Inventory,
    Payments,
    SocketAddr,
    oneshot::Sender<()>,
) {
    let local = harness(config.clone()).await;
    let inventory = local.checkout.inventory.clone().unwrap();
    let payments = local.checkout.payments.clone().unwrap();
    let (addr, stop) = serve_services(
        inventory.clone(),
        payments.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let base = format!("http://{addr}");
    let timeout = Duration::from_secs(5);
    let participants = Participants {
        inventory: Arc::new(
            RemoteInventory::new(&base, ADMIN, timeout, Duration::from_secs(1)).unwrap(),
        ),
        payments: Arc::new(RemotePayments::new(&base, ADMIN, timeout).unwrap()),
    };
    let checkout = surge_checkout::build_with(
        &config,
        local.stores.orders.clone(),
        participants,
        Arc::new(surge_checkout::pricing::CatalogPricing::new(
            local.catalog.clone(),
        )),
        local.stop.subscribe(),
    )
    .unwrap();
    let router = checkout.router(local.keys.clone(), AdminToken::new(ADMIN));
    let h = Harness {
        checkout,
        router,
        ..local
    };
    (h, inventory, payments, addr, stop)
}

fn level(available: i64, held: i64, sold: i64) -> Option<StockLevel> {
    Some(StockLevel {
        available,
        held,
        sold,
        declared: 0,
        owed: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_over_http_confirm_compensate_and_remember_sold_out() {
    let (h, _inventory, payments, _addr, _stop) = remote_harness(test_config()).await;
    h.offer("p1:m1", 1000, 3).await;
    h.offer("hot:m1", 5000, 1).await;

    let ok = h
        .checkout("alice", Some("a1"), &body(&[("p1:m1", 2)], "tok_ok"))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    assert_eq!(ok.json()["status"], "confirmed", "{}", ok.text());
    let id = ok.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(1, 0, 2)
    );
    let paid = payments.payment(&id).await.unwrap().unwrap();
    assert_eq!(paid.captured_minor, 2000);

    // Declined: voided, released, cancelled with a reason.
    let no = h
        .checkout("alice", Some("a2"), &body(&[("p1:m1", 1)], "tok_decline"))
        .await;
    assert_eq!(no.json()["status"], "cancelled", "{}", no.text());
    assert!(no.json()["reason"].as_str().unwrap().contains("declined"));
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(1, 0, 2)
    );

    // One unit of the hot SKU: bob gets it, carol's saga is cancelled as sold out, and
    // dave is refused by the orchestrator's own memory (409, no order).
    let bob = h
        .checkout("bob", Some("b"), &body(&[("hot:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(bob.json()["status"], "confirmed", "{}", bob.text());
    let carol = h
        .checkout("carol", Some("c"), &body(&[("hot:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(carol.json()["status"], "cancelled", "{}", carol.text());
    let dave = h
        .checkout("dave", Some("d"), &body(&[("hot:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(dave.status, StatusCode::CONFLICT, "{}", dave.text());
    assert!(dave.text().contains("sold-out"));
    assert_eq!(
        h.get("dave", "/orders").await.json()["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_waits_out_a_services_node_that_is_down_and_finishes_when_it_is_back() {
    let mut config = test_config();
    config.saga.step_deadline_ms = 60_000;
    config.respond_within_ms = 200;
    let (h, inventory, payments, addr, stop) = remote_harness(config).await;
    h.offer("p1:m1", 1000, 5).await;
    // The services node goes away: the hold cannot be made, the saga keeps retrying.
    drop(stop);
    let pending = h
        .checkout("alice", Some("a"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(pending.status, StatusCode::ACCEPTED, "{}", pending.text());
    assert_eq!(pending.json()["status"], "pending");
    let id = pending.json()["id"].as_str().unwrap().to_owned();
    // Nothing reached the inventory meanwhile.
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(5, 0, 0)
    );
    // Back on the same address: the next retry goes through.
    let (_, _stop) = serve_services(inventory, payments, addr).await;
    assert_eq!(h.settled(&id).await, "confirmed");
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(4, 0, 1)
    );
}

#[tokio::test]
async fn the_internal_api_wants_the_token_and_refuses_bad_calls() {
    let h = harness(test_config()).await;
    let admin = AdminToken::new(ADMIN);
    let inventory = h.checkout.inventory.clone().unwrap();
    let payments = h.checkout.payments.clone().unwrap();
    let h = Harness {
        router: surge_checkout::api::inventory_router(inventory, admin.clone())
            .merge(surge_checkout::api::payments_router(payments, admin)),
        ..h
    };
    let hold = |lines: serde_json::Value| serde_json::json!({"lines": lines, "expires_at_ms": 1});
    // No token.
    let r = h
        .call(
            http::Request::post("/internal/inventory/holds/o1/commit")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A line of 0 units, and no lines at all: 422 naming the field.
    let r = h
        .admin(
            "POST",
            "/internal/inventory/holds/o1",
            Some(hold(
                serde_json::json!([{"sku": "p1:m1", "market": "DE", "qty": 0}]),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("/lines/0/qty"), "{}", r.text());
    let r = h
        .admin(
            "POST",
            "/internal/inventory/holds/o1",
            Some(hold(serde_json::json!([]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    // An unknown field, and a limit out of range: 4xx problem+json, never a 500.
    let r = h
        .admin(
            "POST",
            "/internal/payments/o1/authorize",
            Some(serde_json::json!({"amount_minor": 1, "currency": "EUR", "method_token": "t", "x": 1})),
        )
        .await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    let r = h
        .admin(
            "GET",
            "/internal/inventory/expired-holds?now_ms=1&limit=0",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    // A bad currency.
    let r = h
        .admin(
            "POST",
            "/internal/payments/o1/authorize",
            Some(serde_json::json!({"amount_minor": 1, "currency": "euro", "method_token": "t"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    // A good call: a hold of what is there, and the stock moves.
    h.offer("p1:m1", 1000, 2).await;
    let r = h
        .admin(
            "POST",
            "/internal/inventory/holds/o1",
            Some(
                serde_json::json!({"lines": [{"sku": "p1:m1", "market": "DE", "qty": 2}],
                "expires_at_ms": surge_http::envelope::now_ms() + 60_000}),
            ),
        )
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"outcome": "held"}),
        "{}",
        r.text()
    );
    let r = h
        .admin(
            "POST",
            "/internal/inventory/holds/o2",
            Some(
                serde_json::json!({"lines": [{"sku": "p1:m1", "market": "DE", "qty": 1}],
                "expires_at_ms": surge_http::envelope::now_ms() + 60_000}),
            ),
        )
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"outcome": "out_of_stock", "sku": "p1:m1", "market": "DE", "sold_out": true}),
        "{}",
        r.text()
    );
    let r = h
        .admin("POST", "/internal/inventory/holds/o1/commit", None)
        .await;
    assert_eq!(r.json(), serde_json::json!({"units": 2}));
}
