//! Where checkout's supply comes from and where it stops: the catalog's offers feed the
//! inventory (including a resync after the outbox was pruned), and the warehouses'
//! shipping capacity refuses or queues checkouts beyond it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{body, harness, test_config};
use http::StatusCode;
use surge_checkout::fulfilment::{Overflow, WarehouseConfig};
use surge_checkout::inventory::feed::{FEED, FeedConfig, FeedStep, OfferFeed};
use surge_store::{Offer, SagaState};

fn offer(product: &str, merchant: &str, stock: i64) -> Offer {
    Offer {
        product_id: product.into(),
        merchant_id: merchant.into(),
        market: "DE".into(),
        price_minor: 1000,
        currency: "EUR".into(),
        stock,
        updated_at_ms: 0,
    }
}

fn feed(h: &common::Harness, batch: u32) -> OfferFeed {
    OfferFeed::new(
        h.catalog.clone(),
        h.inventory().clone(),
        FeedConfig {
            batch,
            ..FeedConfig::default()
        },
    )
}

/// (available, held, sold, declared, owed) of `sku` in DE.
async fn counters(h: &common::Harness, sku: &str) -> (i64, i64, i64, i64, i64) {
    let l = h
        .stores
        .inventory
        .stock(sku, "DE")
        .await
        .unwrap()
        .unwrap_or_default();
    (l.available, l.held, l.sold, l.declared, l.owed)
}

/// Steps the feed until it is caught up; returns the steps that did something.
async fn drain(f: &OfferFeed) -> Vec<FeedStep> {
    let mut steps = Vec::new();
    loop {
        match f.step().await.unwrap() {
            FeedStep::CaughtUp => return steps,
            s => steps.push(s),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogs_offers_feed_the_inventory_and_a_sale_never_exceeds_them() {
    let h = harness(test_config()).await;
    let f = feed(&h, 500);
    h.catalog
        .upsert_offers(&[
            offer("p1", "m1", 2),
            offer("p1", "m2", 7),
            offer("p2", "m1", 0),
        ])
        .await
        .unwrap();
    let head = h.catalog.outbox_head().await.unwrap();
    assert_eq!(drain(&f).await, vec![FeedStep::Applied(head)]);
    assert_eq!(counters(&h, "p1:m1").await, (2, 0, 0, 2, 0));
    assert_eq!(counters(&h, "p1:m2").await, (7, 0, 0, 7, 0));
    assert_eq!(counters(&h, "p2:m1").await, (0, 0, 0, 0, 0));
    assert_eq!(h.stores.inventory.feed_position(FEED).await.unwrap(), head);

    // The two declared units sell; a third buyer is refused.
    for (user, key) in [("alice", "k1"), ("bob", "k2")] {
        let r = h
            .checkout(user, Some(key), &body(&[("p1:m1", 1)], "tok_ok"))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        assert_eq!(r.json()["status"], "confirmed");
    }
    let r = h
        .checkout("carol", Some("k3"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(r.json()["status"], "cancelled", "{}", r.text());
    assert_eq!(counters(&h, "p1:m1").await, (0, 0, 2, 2, 0));

    // The merchant adds 3 and lowers the other offer: only the difference moves, and a
    // price-only rewrite of the same stock changes nothing.
    let mut repriced = offer("p1", "m2", 4);
    repriced.price_minor = 900;
    h.catalog
        .upsert_offers(&[offer("p1", "m1", 5), repriced])
        .await
        .unwrap();
    drain(&f).await;
    assert_eq!(counters(&h, "p1:m1").await, (3, 0, 2, 5, 0));
    assert_eq!(counters(&h, "p1:m2").await, (4, 0, 0, 4, 0));
    h.catalog
        .upsert_offers(&[offer("p1", "m2", 4)])
        .await
        .unwrap();
    drain(&f).await;
    assert_eq!(counters(&h, "p1:m2").await, (4, 0, 0, 4, 0));
    // Product writes are not stock: the feed moves past them and changes nothing.
    h.catalog
        .put_products(&[surge_store::ProductWrite {
            id: "p1".into(),
            body: bytes::Bytes::from_static(b"{}"),
        }])
        .await
        .unwrap();
    assert_eq!(drain(&f).await.len(), 1);
    assert_eq!(counters(&h, "p1:m1").await, (3, 0, 2, 5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_missed_pruned_entries_resyncs_from_every_offer() {
    let h = harness(test_config()).await;
    // Written in small transactions, so the outbox has many entries.
    for i in 0..12 {
        h.catalog
            .upsert_offers(&[offer(&format!("p{i:02}"), "m1", i + 1)])
            .await
            .unwrap();
    }
    // A price change after the last stock change; then the projector prunes all.
    h.catalog
        .upsert_offers(&[offer("p03", "m1", 40)])
        .await
        .unwrap();
    let head = h.catalog.outbox_head().await.unwrap();
    h.catalog.prune_outbox(head - 1, 1000).await.unwrap();

    // Pages of 5 offers: 13 units of work in 3 pages, then the move to the head.
    let f = feed(&h, 5);
    assert_eq!(drain(&f).await, vec![FeedStep::Resynced(head)]);
    for i in 0..12 {
        let units = if i == 3 { 40 } else { i + 1 };
        assert_eq!(
            counters(&h, &format!("p{i:02}:m1")).await,
            (units, 0, 0, units, 0),
            "p{i:02}"
        );
    }
    // From there on it follows the outbox as usual.
    h.catalog
        .upsert_offers(&[offer("p00", "m1", 3)])
        .await
        .unwrap();
    assert_eq!(
        drain(&f).await,
        vec![FeedStep::Applied(h.catalog.outbox_head().await.unwrap())]
    );
    assert_eq!(counters(&h, "p00:m1").await, (3, 0, 0, 3, 0));
}

fn capped(overflow: Overflow, per_minute: u32) -> surge_checkout::CheckoutConfig {
    let mut c = test_config();
    c.fulfilment.overflow = overflow;
    c.fulfilment.warehouses.insert(
        "berlin".into(),
        WarehouseConfig {
            orders_per_minute: per_minute,
            markets: vec!["DE".into()],
        },
    );
    c
}

fn minute() -> i64 {
    surge_http::envelope::now_ms().div_euclid(60_000)
}

/// Runs `scenario` until one run stays within one wall-clock minute (capacity is per
/// minute: a run that crosses a minute sees two minutes' slots). Returns its result.
async fn within_one_minute<T, F, Fut>(scenario: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..3 {
        let started = minute();
        let out = scenario().await;
        if minute() == started {
            return out;
        }
    }
    panic!("three runs in a row crossed a minute boundary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_warehouse_refuses_with_retry_after_and_a_cancelled_order_frees_its_slot() {
    let (h, replies) = within_one_minute(refuse_scenario).await;
    let [declined, first, second, refused] = replies;
    assert_eq!(
        declined.json()["status"],
        "cancelled",
        "{}",
        declined.text()
    );
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text());
    let r = refused;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Nothing was written for the refused checkout: the key is free for a retry.
    assert!(h.stores.orders.key("bob", "k3").await.unwrap().is_none());
    let stock = counters(&h, "p1:m1").await;
    assert_eq!((stock.0, stock.2), (48, 2));
    // A replay of an answered key is still answered.
    let r = h
        .checkout("alice", Some("k1"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Other markets are not limited by this warehouse.
    let mut fr = body(&[("p1:m1", 1)], "tok_ok");
    fr["market"] = "FR".into();
    let r = h.checkout("bob", Some("fr"), &fr).await;
    assert_ne!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

/// A warehouse of 2 orders a minute in refuse mode: a declined checkout, two good
/// ones, and one too many.
async fn refuse_scenario() -> (common::Harness, [common::Reply; 4]) {
    let h = harness(capped(Overflow::Refuse, 2)).await;
    h.offer("p1:m1", 1000, 50).await;
    // A declined payment cancels its order: its slot goes back.
    let declined = h
        .checkout("alice", Some("d1"), &body(&[("p1:m1", 1)], "tok_decline"))
        .await;
    let first = h
        .checkout("alice", Some("k1"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    let second = h
        .checkout("alice", Some("k2"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    let refused = h
        .checkout("bob", Some("k3"), &body(&[("p1:m1", 1)], "tok_ok"))
        .await;
    (h, [declined, first, second, refused])
}

/// A warehouse of 1 order a minute in queue mode: three checkouts.
async fn queue_scenario() -> (common::Harness, [common::Reply; 3]) {
    let h = harness(capped(Overflow::Queue, 1)).await;
    h.offer("p1:m1", 1000, 50).await;
    let mut replies = Vec::new();
    for (user, key) in [("alice", "k1"), ("bob", "k2"), ("carol", "k3")] {
        replies.push(
            h.checkout(user, Some(key), &body(&[("p1:m1", 1)], "tok_ok"))
                .await,
        );
    }
    let replies: [common::Reply; 3] = replies.try_into().unwrap_or_else(|_| unreachable!());
    (h, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_a_checkout_is_queued_durably_for_a_later_minute() {
    let (h, [first, r, third]) = within_one_minute(queue_scenario).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let order = h.stores.orders.order(&id).await.unwrap().unwrap();
    let now = surge_http::envelope::now_ms();
    let next_minute = (order.created_at_ms.div_euclid(60_000) + 1) * 60_000;
    assert_eq!(order.status, "pending");
    assert_eq!(order.saga_state, SagaState::Running);
    assert_eq!(order.next_at_ms, next_minute, "starts with the next minute");
    assert!(order.lease_until_ms <= now, "left to the recovery poller");
    let log = h.stores.orders.log(&id).await.unwrap();
    assert!(log.iter().any(|l| l.step == "queued"), "{log:?}");
    // A third goes to the minute after; the poller leaves them alone until then.
    assert_eq!(third.status, StatusCode::ACCEPTED, "{}", third.text());
    let third = third.json()["id"].as_str().unwrap().to_owned();
    let third = h.stores.orders.order(&third).await.unwrap().unwrap();
    assert_eq!(third.next_at_ms, next_minute + 60_000);
    h.checkout.saga.poll_once(false).await.unwrap();
    assert_eq!(
        counters(&h, "p1:m1").await.1 + counters(&h, "p1:m1").await.2,
        1
    );
    // The queue is the orders table: a restart finds the orders where they were.
    let order = h.stores.orders.order(&id).await.unwrap().unwrap();
    assert_eq!(order.status, "pending");
    assert_eq!(order.next_at_ms, next_minute);
}
