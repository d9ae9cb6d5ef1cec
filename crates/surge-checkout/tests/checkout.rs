//! `POST /checkout` end to end through the checkout router: the saga's outcomes
//! (confirmed, sold out, declined), the five `Idempotency-Key` cases, the owner-only
//! order views, and the operators' routes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{body, harness, test_config};
use http::StatusCode;
use surge_checkout::api::checkout::{CheckoutRequest, request_hash};
use surge_checkout::payments::simulator::Fault;
use surge_http::envelope::now_ms;
use surge_store::{Created, NewOrder, OrderRow, SagaState, StockLevel};

fn level(available: i64, held: i64, sold: i64) -> Option<StockLevel> {
    Some(StockLevel {
        available,
        held,
        sold,
        ..StockLevel::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_holds_authorizes_confirms_sells_and_captures() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1999, 5).await;
    h.offer("p2:m1", 500, 5).await;
    let r = h
        .checkout(
            "alice",
            Some("k1"),
            &body(&[("p1:m1", 2), ("p2:m1", 1)], "tok_ok"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let order = r.json();
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total_minor"], 2 * 1999 + 500);
    assert_eq!(order["currency"], "EUR");
    assert!(
        order.get("payment_method").is_none(),
        "the token is never shown"
    );
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/orders/{id}")
    );

    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(3, 0, 2)
    );
    assert_eq!(
        h.stores.inventory.stock("p2:m1", "DE").await.unwrap(),
        level(4, 0, 1)
    );
    let payment = h.stores.payments.payment(&id).await.unwrap().unwrap();
    assert_eq!(payment.captured_minor, 2 * 1999 + 500);

    // The owner sees the order and its saga history; nobody else does.
    let mine = h.get("alice", &format!("/orders/{id}")).await;
    assert_eq!(mine.status, StatusCode::OK);
    let steps: Vec<String> = mine.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "done")
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        [
            "create_order",
            "hold_stock",
            "authorize",
            "confirm",
            "commit_stock",
            "capture"
        ]
    );
    let theirs = h.get("bob", &format!("/orders/{id}")).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs.headers["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let list = h.get("alice", "/orders?limit=10").await.json();
    assert_eq!(list["orders"][0]["id"], id.as_str());
    assert_eq!(
        h.get("bob", "/orders").await.json()["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Events: placed, then confirmed.
    let events = h.admin("GET", "/admin/checkout/events", None).await.json();
    let kinds: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["OrderPlaced", "OrderConfirmed"]);

    // StockChanged: the stock arriving, then each line held, then sold.
    let stock = h.admin("GET", "/admin/inventory/events", None).await.json();
    let stock = stock["events"].as_array().unwrap();
    assert!(stock.iter().all(|e| e["type"] == "StockChanged"));
    let causes = |order: Option<&str>| -> Vec<String> {
        stock
            .iter()
            .filter(|e| e["order_id"].as_str() == order)
            .map(|e| e["cause"].as_str().unwrap().to_owned())
            .collect()
    };
    let mine = causes(Some(&id));
    let lines = mine.iter().filter(|c| *c == "held").count();
    assert!(lines > 0, "{stock:?}");
    assert_eq!(mine.len(), 2 * lines, "{mine:?}");
    assert!(mine[lines..].iter().all(|c| c == "sold"), "{mine:?}");
    assert!(
        !causes(None).is_empty(),
        "the stock's arrival is an event too"
    );
    let sold = stock.iter().rev().find(|e| e["cause"] == "sold").unwrap();
    assert!(
        sold["sold"].as_i64().unwrap() > 0 && sold["held"] == 0,
        "{sold}"
    );
    let page = h
        .admin("GET", "/admin/inventory/events?after=0&limit=1", None)
        .await
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let bad = h
        .admin("GET", "/admin/inventory/events?limit=0", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_and_declined_checkouts_are_cancelled_with_a_reason_and_undone() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 1).await;
    let first = h
        .checkout("alice", Some("a"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(first.json()["status"], "confirmed");
    let second = h
        .checkout("bob", Some("b"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    let sold_out = second.json();
    assert_eq!(sold_out["status"], "cancelled");
    assert!(
        sold_out["reason"].as_str().unwrap().contains("sold out"),
        "{sold_out}"
    );
    // A third attempt is refused from memory: 409 sold-out, no order at all.
    let third = h
        .checkout("carol", Some("c"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(third.status, StatusCode::CONFLICT);
    assert!(third.text().contains("sold-out"), "{}", third.text());
    let carols = h.get("carol", "/orders").await.json();
    assert_eq!(carols["orders"].as_array().unwrap().len(), 0);
    // A restock through the inventory service clears the mark at once.
    let inventory = h.inventory();
    inventory.restock("p1:m1", "DE", 1).await.unwrap();
    let fourth = h
        .checkout("carol", Some("c"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(fourth.json()["status"], "confirmed", "{}", fourth.text());
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(0, 0, 2)
    );

    // Declined: the hold is released, the (tombstoned) payment never captured.
    h.offer("p2:m1", 700, 3).await;
    let declined = h
        .checkout("dave", Some("d"), &body(&[("p2:m1", 2)], "tok_decline"))
        .await
        .json();
    assert_eq!(declined["status"], "cancelled");
    assert!(
        declined["reason"].as_str().unwrap().contains("declined"),
        "{declined}"
    );
    assert_eq!(
        h.stores.inventory.stock("p2:m1", "DE").await.unwrap(),
        level(3, 0, 0)
    );
    let id = declined["id"].as_str().unwrap();
    let p = h.stores.payments.payment(id).await.unwrap();
    assert!(p.is_none_or(|p| p.captured_minor == 0));
    let history = h.get("dave", &format!("/orders/{id}")).await.json();
    let outcomes: Vec<String> = history["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["step"].as_str().unwrap(),
                s["outcome"].as_str().unwrap()
            )
        })
        .collect();
    let void = outcomes
        .iter()
        .position(|s| s == "void_payment:compensated")
        .unwrap();
    let release = outcomes
        .iter()
        .position(|s| s == "release_stock:compensated")
        .unwrap();
    assert!(void < release, "compensations run in reverse: {outcomes:?}");
    assert!(outcomes.contains(&"cancel:done".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_missing_reused_and_replayed() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 10).await;
    let b = body(&[("p1:m1", 1)], "tok_ok");

    // 1. Missing → 400.
    let r = h.checkout("alice", None, &b).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("idempotency-key-missing"), "{}", r.text());

    // 4. After completion → the stored answer, byte for byte.
    let first = h.checkout("alice", Some("k"), &b).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = h.checkout("alice", Some("k"), &b).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "replayed byte for byte");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);
    // The same body in another key order and spacing is the same request.
    let reordered = serde_json::json!({
        "shipping_address": b["shipping_address"], "payment_method": "tok_ok",
        "market": "DE", "items": [{"qty": 1, "sku": "p1:m1"}],
    });
    assert_eq!(
        h.checkout("alice", Some("k"), &reordered).await.body,
        first.body
    );

    // 2. Same key, different body → 422.
    let other = h
        .checkout("alice", Some("k"), &body(&[("p1:m1", 2)], "tok_ok"))
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(other.text().contains("idempotency-key-reused"));

    // Keys are scoped to the user: bob's "k" is a new checkout.
    let bobs = h.checkout("bob", Some("k"), &b).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_ne!(bobs.json()["id"], first.json()["id"]);
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(8, 0, 2)
    );
}

fn pending_order(id: &str, user: &str) -> OrderRow {
    OrderRow {
        id: id.into(),
        user_id: user.into(),
        market: "DE".into(),
        currency: "EUR".into(),
        total_minor: 1000,
        document: serde_json::json!({
            "lines": [{"sku": "p1:m1", "qty": 1, "unit_price_minor": 1000}],
            "shipping_address": {"name": "A", "line1": "B", "postal_code": "1", "city": "C", "country": "DE"},
            "payment_method": "tok_ok",
        })
        .to_string(),
        status: "pending".into(),
        reason: None,
        saga_state: SagaState::Running,
        step: "hold_stock".into(),
        attempts: 0,
        next_at_ms: 0,
        step_deadline_ms: i64::MAX / 2,
        lease_owner: "local".into(),
        lease_until_ms: 0,
        version: 1,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_flight_is_409_and_a_dead_first_request_is_answered_from_its_order() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 10).await;
    let b = body(&[("p1:m1", 1)], "tok_ok");
    let parsed: CheckoutRequest = serde_json::from_value(b.clone()).unwrap();
    // The first request claimed the key and is still running (its lock is live).
    let now = now_ms();
    let new = |id: &str, key: &str, locked_until_ms: i64| NewOrder {
        order: pending_order(id, "alice"),
        idempotency_key: key.into(),
        request_hash: request_hash(&parsed),
        locked_until_ms,
        key_expires_at_ms: now + 60_000,
        log: Vec::new(),
        events: Vec::new(),
    };
    assert_eq!(
        h.stores
            .orders
            .create(&new("o-live", "k-live", now + 60_000))
            .await
            .unwrap(),
        Created::New
    );
    // 3. In flight → 409 with Retry-After.
    let r = h.checkout("alice", Some("k-live"), &b).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("idempotency-key-in-use"));
    assert_eq!(r.headers["retry-after"], "1");

    // The first request died (its lock ran out): the retry answers from its order,
    // which the recovery poller drives to the end.
    h.stores
        .orders
        .create(&new("o-dead", "k-dead", now - 1))
        .await
        .unwrap();
    let r = h.checkout("alice", Some("k-dead"), &b).await;
    assert!(
        matches!(r.status, StatusCode::ACCEPTED | StatusCode::CREATED),
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.json()["id"], "o-dead");
    h.checkout.saga.poll_once(true).await.unwrap();
    assert_eq!(h.settled("o-dead").await, "confirmed");
    assert_eq!(h.settled("o-live").await, "confirmed", "reclaimed as well");
    // That answer is stored now and replayed.
    let again = h.checkout("alice", Some("k-dead"), &b).await;
    assert_eq!(again.body, r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_order() {
    let h = std::sync::Arc::new(harness(test_config()).await);
    h.offer("p1:m1", 1000, 100).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.checkout("alice", Some("same"), &body(&[("p1:m1", 1)], "tok_ok"))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::CREATED | StatusCode::ACCEPTED => {
                ids.insert(r.json()["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => assert_eq!(r.headers["retry-after"], "1"),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(ids.len(), 1, "one order for one key");
    let orders = h.get("alice", "/orders").await.json();
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(99, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_problems_not_orders() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 10).await;
    let cases = [
        (body(&[], "tok_ok"), "/items"),
        (body(&[("p1:m1", 0)], "tok_ok"), "/items/0/qty"),
        (body(&[("nope", 1)], "tok_ok"), "/items/0/sku"),
        (body(&[("p9:m1", 1)], "tok_ok"), "/items/0/sku"),
        (
            body(&[("p1:m1", 1), ("p1:m1", 1)], "tok_ok"),
            "/items/1/sku",
        ),
        (body(&[("p1:m1", 1)], ""), "/payment_method"),
    ];
    for (b, pointer) in cases {
        let r = h.checkout("alice", Some("k"), &b).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{b}: {}",
            r.text()
        );
        assert!(r.text().contains(pointer), "{pointer}: {}", r.text());
    }
    let mut b = body(&[("p1:m1", 1)], "tok_ok");
    b["extra"] = serde_json::json!(1);
    assert_eq!(
        h.checkout("alice", Some("k"), &b).await.status,
        StatusCode::BAD_REQUEST
    );
    // No order came of any of them, and the key is still free.
    assert_eq!(
        h.get("alice", "/orders").await.json()["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        h.checkout("alice", Some("k"), &body(&[("p1:m1", 1)], "tok_ok"))
            .await
            .status,
        StatusCode::CREATED
    );
    // Without an Envelope: 401.
    let r = h
        .call(
            http::Request::post("/checkout")
                .header("idempotency-key", "x")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.get("alice", "/orders?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.get("alice", "/orders?cursor=zz").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_pauses_the_saga_and_an_operator_resumes_it() {
    let mut config = test_config();
    config.saga.step_deadline_ms = 200;
    config.respond_within_ms = 2_000;
    let h = harness(config).await;
    h.offer("p1:m1", 1000, 10).await;
    // Every authorize times out until the deadline.
    h.provider
        .script(std::iter::repeat_n(Fault::Unavailable, 10_000));
    let r = h
        .checkout("alice", Some("k"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let o = h.stores.orders.order(&id).await.unwrap().unwrap();
    assert_eq!(
        (o.saga_state, o.step.as_str()),
        (SagaState::Paused, "authorize")
    );
    let stuck = h
        .admin("GET", "/admin/sagas?state=paused", None)
        .await
        .json();
    assert_eq!(stuck["sagas"][0]["id"], id.as_str());

    // Only pending orders can be compensated, only parked sagas retried.
    h.provider.clear_script();
    let retried = h
        .admin(
            "POST",
            &format!("/admin/sagas/{id}/retry"),
            Some(serde_json::json!({"actor": "ops-1", "note": "PSP is back"})),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
    assert_eq!(h.settled(&id).await, "confirmed");
    let again = h
        .admin("POST", &format!("/admin/sagas/{id}/retry"), None)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let comp = h
        .admin("POST", &format!("/admin/sagas/{id}/compensate"), None)
        .await;
    assert_eq!(comp.status, StatusCode::CONFLICT);
    let shown = h
        .admin("GET", &format!("/admin/sagas/{id}"), None)
        .await
        .json();
    assert_eq!(shown["audit"][0]["actor"], "ops-1");
    assert_eq!(shown["audit"][0]["action"], "retry");
    assert_eq!(
        h.admin("GET", "/admin/sagas?state=bogus", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_compensates_a_pending_order_whose_hold_expired() {
    let mut config = test_config();
    config.hold_ms = 1; // expired as soon as it is taken
    config.saga.step_deadline_ms = 200;
    config.respond_within_ms = 2_000;
    let h = harness(config).await;
    h.offer("p1:m1", 1000, 5).await;
    // The provider is down: the saga holds stock, then pauses at authorize.
    h.provider
        .script(std::iter::repeat_n(Fault::Unavailable, 10_000));
    let r = h
        .checkout("alice", Some("k"), &body(&[("p1:m1", 2)], "tok_ok"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let o = h.stores.orders.order(&id).await.unwrap().unwrap();
    assert_eq!(o.saga_state, SagaState::Paused);
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(3, 2, 0)
    );

    h.provider.clear_script();
    assert_eq!(h.checkout.saga.sweep_once().await.unwrap(), 1);
    assert_eq!(h.settled(&id).await, "cancelled");
    let o = h.stores.orders.order(&id).await.unwrap().unwrap();
    assert!(
        o.reason.as_deref().unwrap().contains("reservation expired"),
        "{o:?}"
    );
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(5, 0, 0)
    );
    // Nothing left to sweep; a confirmed order's units are sold, never swept back.
    assert_eq!(h.checkout.saga.sweep_once().await.unwrap(), 0);
    let ok = h
        .checkout("bob", Some("k"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(ok.json()["status"], "confirmed", "{}", ok.text());
    assert_eq!(h.checkout.saga.sweep_once().await.unwrap(), 0);
    assert_eq!(
        h.stores.inventory.stock("p1:m1", "DE").await.unwrap(),
        level(4, 0, 1)
    );
}

/// The orchestrator's sweeper deletes checkout's outbox events, and the inventory
/// service's upkeep its `StockChanged` events, once they are past their retention,
/// and both keep them before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_prunes_outbox_events_past_their_retention() {
    let counts = |h: &common::Harness| {
        let (orders, inventory) = (h.stores.orders.clone(), h.stores.inventory.clone());
        async move {
            (
                orders.events(0, 100).await.unwrap().len(),
                inventory.events(0, 100).await.unwrap().len(),
            )
        }
    };
    // The default retention (7 days): a sweep keeps everything.
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 5).await;
    let r = h
        .checkout("alice", Some("a"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(r.json()["status"], "confirmed");
    let week = 7 * 86_400_000;
    h.checkout.saga.sweep_once().await.unwrap();
    h.inventory().prune_events(now_ms(), week).await.unwrap();
    assert_eq!(counts(&h).await, (2, 3));

    // A retention of 1 ms: the first sweep after that millisecond deletes them all.
    let mut config = test_config();
    config.event_retention_ms = 1;
    config.inventory.event_retention_ms = 1;
    let h = harness(config).await;
    h.offer("p1:m1", 1000, 5).await;
    let r = h
        .checkout("alice", Some("a"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(r.json()["status"], "confirmed");
    loop {
        h.checkout.saga.sweep_once().await.unwrap();
        h.inventory().prune_events(now_ms(), 1).await.unwrap();
        if counts(&h).await == (0, 0) {
            break;
        }
        tokio::task::yield_now().await;
    }
}
