//! One conformance suite for every [`InventoryStore`] backend (SQLite always; PostgreSQL
//! with `--features pg-tests` and `SURGE_TEST_POSTGRES_URL`, failing loudly without it).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::sync::Arc;

use surge_store::{Declared, HoldLine, HoldOutcome, InventoryStore, StockEvent, StockLevel};

mod common;

type Backend = common::Backend<dyn InventoryStore>;

async fn sqlite() -> Backend {
    common::sqlite("inventory.db", |url, options| async move {
        surge_store::open_inventory(&url, &options).await
    })
    .await
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Backend {
    common::postgres(
        |url, options| async move { surge_store::open_inventory(&url, &options).await },
    )
    .await
}

fn line(sku: &str, qty: i64) -> HoldLine {
    HoldLine {
        sku: sku.into(),
        market: "DE".into(),
        qty,
    }
}

fn level(available: i64, held: i64, sold: i64) -> Option<StockLevel> {
    Some(StockLevel {
        available,
        held,
        sold,
        ..StockLevel::default()
    })
}

const LATER: i64 = i64::MAX / 2;

async fn holds_sales_and_releases_conserve_stock(s: &dyn InventoryStore) {
    assert_eq!(s.stock("A", "DE").await.unwrap(), None);
    s.restock("A", "DE", 10).await.unwrap();
    assert_eq!(
        s.hold("o1", &[line("A", 3)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 3, 0));
    // A re-run of the same hold changes nothing.
    assert_eq!(
        s.hold("o1", &[line("A", 3)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 3, 0));
    assert_eq!(s.commit("o1").await.unwrap(), 3);
    assert_eq!(s.commit("o1").await.unwrap(), 0, "sold once");
    assert_eq!(
        s.release("o1").await.unwrap(),
        0,
        "sold units are not released"
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 0, 3));
    assert_eq!(
        s.hold("o1", &[line("A", 3)], LATER).await.unwrap(),
        HoldOutcome::Settled
    );

    // Does not fit: nothing held.
    assert_eq!(
        s.hold("o2", &[line("A", 8)], LATER).await.unwrap(),
        HoldOutcome::OutOfStock {
            sku: "A".into(),
            market: "DE".into()
        }
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 0, 3));
    // All or nothing across lines (B has no stock at all).
    assert_eq!(
        s.hold("o3", &[line("A", 2), line("B", 1)], LATER)
            .await
            .unwrap(),
        HoldOutcome::OutOfStock {
            sku: "B".into(),
            market: "DE".into()
        }
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 0, 3));
    assert_eq!(s.release("o3").await.unwrap(), 0);

    // Released units come back once; the order cannot hold again.
    assert_eq!(
        s.hold("o4", &[line("A", 5)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(s.release("o4").await.unwrap(), 5);
    assert_eq!(s.release("o4").await.unwrap(), 0);
    assert_eq!(
        s.commit("o4").await.unwrap(),
        0,
        "released units are not sold"
    );
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(7, 0, 3));
    assert_eq!(
        s.hold("o4", &[line("A", 5)], LATER).await.unwrap(),
        HoldOutcome::Settled
    );
    // Restocks add to what is available; the total moves only with them.
    assert_eq!(
        s.restock("A", "DE", 5).await.unwrap(),
        StockLevel {
            available: 12,
            held: 0,
            sold: 3,
            ..StockLevel::default()
        }
    );
    assert_eq!(s.stock("A", "DE").await.unwrap().unwrap().total(), 15);
}

async fn bad_holds_are_refused(s: &dyn InventoryStore) {
    s.restock("A", "DE", 10).await.unwrap();
    assert!(s.hold("o1", &[line("A", 0)], LATER).await.is_err());
    assert!(
        s.hold("o1", &[line("A", 1), line("A", 2)], LATER)
            .await
            .is_err()
    );
    assert!(s.restock("A", "DE", 0).await.is_err());
    assert_eq!(s.stock("A", "DE").await.unwrap(), level(10, 0, 0));
}

async fn expired_holds_are_listed_until_released(s: &dyn InventoryStore) {
    s.restock("A", "DE", 10).await.unwrap();
    s.hold("old", &[line("A", 1)], 1_000).await.unwrap();
    s.hold("new", &[line("A", 1)], LATER).await.unwrap();
    assert_eq!(s.expired_holds(2_000, 10).await.unwrap(), ["old"]);
    assert_eq!(s.release("old").await.unwrap(), 1);
    assert!(s.expired_holds(2_000, 10).await.unwrap().is_empty());
}

/// Many buyers, little stock: exactly the stock is held, never more, and settling the
/// holds concurrently (each twice) moves every unit exactly once.
async fn concurrent_holds_never_oversell(s: Arc<dyn InventoryStore>) {
    s.restock("HOT", "DE", 50).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let order = format!("o{i}");
                let out = s.hold(&order, &[line("HOT", 1)], LATER).await.unwrap();
                (order, out)
            })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        let (order, out) = t.await.unwrap();
        match out {
            HoldOutcome::Held => held.push(order),
            HoldOutcome::OutOfStock { .. } => {}
            HoldOutcome::Settled => panic!("a fresh order was settled"),
        }
    }
    assert_eq!(held.len(), 50, "exactly the stock is held");
    assert_eq!(s.stock("HOT", "DE").await.unwrap(), level(0, 50, 0));
    let tasks: Vec<_> = held
        .iter()
        .enumerate()
        .flat_map(|(i, order)| (0..2).map(move |_| (i, order.clone())))
        .map(|(i, order)| {
            let s = s.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    s.commit(&order).await.unwrap()
                } else {
                    s.release(&order).await.unwrap()
                }
            })
        })
        .collect();
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    assert_eq!(moved, 50, "each unit moved once");
    assert_eq!(s.stock("HOT", "DE").await.unwrap(), level(25, 0, 25));
}

/// Many multi-line holds at once (on SQLite they share group commits): those whose
/// second line does not fit undo their first line while the others are kept, and each
/// caller gets its own outcome.
async fn concurrent_holds_undo_alone(s: Arc<dyn InventoryStore>) {
    s.restock("PLENTY", "DE", 1_000).await.unwrap();
    s.restock("SCARCE", "DE", 40).await.unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let order = format!("o{i}");
                let lines = [line("PLENTY", 2), line("SCARCE", 1)];
                let out = s.hold(&order, &lines, LATER).await.unwrap();
                (order, out)
            })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        let (order, out) = t.await.unwrap();
        match out {
            HoldOutcome::Held => held.push(order),
            HoldOutcome::OutOfStock { sku, .. } => assert_eq!(sku, "SCARCE"),
            HoldOutcome::Settled => panic!("a fresh order was settled"),
        }
    }
    assert_eq!(held.len(), 40);
    // The refused holds left nothing behind: no units, no hold rows.
    assert_eq!(s.stock("PLENTY", "DE").await.unwrap(), level(920, 80, 0));
    assert_eq!(s.stock("SCARCE", "DE").await.unwrap(), level(0, 40, 0));
    let mut released = 0;
    for i in 0..300 {
        released += s.release(&format!("o{i}")).await.unwrap();
    }
    assert_eq!(released, 40 * 3, "only the kept holds had rows to release");
    assert_eq!(s.stock("PLENTY", "DE").await.unwrap(), level(1_000, 0, 0));
}

fn declared(sku: &str, units: i64) -> Declared {
    Declared {
        sku: sku.into(),
        market: "DE".into(),
        units,
    }
}

/// (available, held, sold, declared, owed)
fn counters(l: Option<StockLevel>) -> (i64, i64, i64, i64, i64) {
    let l = l.unwrap();
    (l.available, l.held, l.sold, l.declared, l.owed)
}

async fn declared_stock_moves_available_and_owes_what_it_cannot_take(s: &dyn InventoryStore) {
    const F: &str = "catalog-offers";
    assert_eq!(s.feed_position(F).await.unwrap(), 0);
    assert!(s.declare(F, 0, 4, &[declared("A", 10)]).await.unwrap());
    assert_eq!(s.feed_position(F).await.unwrap(), 4);
    assert_eq!(
        counters(s.stock("A", "DE").await.unwrap()),
        (10, 0, 0, 10, 0)
    );
    // The same declaration again (a re-read entry) changes nothing.
    assert!(s.declare(F, 4, 5, &[declared("A", 10)]).await.unwrap());
    assert_eq!(
        counters(s.stock("A", "DE").await.unwrap()),
        (10, 0, 0, 10, 0)
    );
    // A feed not where the caller thinks it is: nothing applied, position kept.
    assert!(!s.declare(F, 4, 9, &[declared("A", 99)]).await.unwrap());
    assert_eq!(s.feed_position(F).await.unwrap(), 5);
    assert_eq!(
        counters(s.stock("A", "DE").await.unwrap()),
        (10, 0, 0, 10, 0)
    );

    // 6 held, 1 sold; then the merchant declares 4: 3 were available, 3 more are owed.
    assert_eq!(
        s.hold("o1", &[line("A", 5)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(
        s.hold("o2", &[line("A", 1)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(s.commit("o2").await.unwrap(), 1);
    assert!(s.declare(F, 5, 6, &[declared("A", 4)]).await.unwrap());
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (0, 5, 1, 4, 2));
    // Released units pay the debt first: 2 of the 5 go to it.
    assert_eq!(s.release("o1").await.unwrap(), 5);
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (3, 0, 1, 4, 0));
    // Declared 4, sold 1: 3 can still be sold, never more.
    assert_eq!(
        s.hold("o3", &[line("A", 4)], LATER).await.unwrap(),
        HoldOutcome::OutOfStock {
            sku: "A".into(),
            market: "DE".into()
        }
    );
    // Down to 0 with 3 available and 1 sold: the sold unit is owed (sold more than is
    // declared now); up to 2: the debt is paid, 1 is available.
    assert!(s.declare(F, 6, 7, &[declared("A", 0)]).await.unwrap());
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (0, 0, 1, 0, 1));
    assert!(s.declare(F, 7, 8, &[declared("A", 2)]).await.unwrap());
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (1, 0, 1, 2, 0));
    // An increase and a restock pay what is owed before adding to available.
    assert_eq!(
        s.hold("o4", &[line("A", 1)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert!(s.declare(F, 8, 9, &[declared("A", 0)]).await.unwrap());
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (0, 1, 1, 0, 2));
    assert!(s.declare(F, 9, 10, &[declared("A", 1)]).await.unwrap());
    assert_eq!(counters(s.stock("A", "DE").await.unwrap()), (0, 1, 1, 1, 1));
    let l = s.restock("A", "DE", 3).await.unwrap();
    assert_eq!(counters(Some(l)), (2, 1, 1, 1, 0));
    // available + held + sold - owed = declared + restocked, throughout.
    assert_eq!(l.total(), 1 + 3);
    // Several levels and a move in one call; a negative level is refused.
    assert!(
        s.declare(F, 10, 11, &[declared("B", 3), declared("C", 0)])
            .await
            .unwrap()
    );
    assert_eq!(counters(s.stock("B", "DE").await.unwrap()), (3, 0, 0, 3, 0));
    assert_eq!(counters(s.stock("C", "DE").await.unwrap()), (0, 0, 0, 0, 0));
    assert!(s.declare(F, 11, 12, &[declared("B", -1)]).await.is_err());
    assert_eq!(s.feed_position(F).await.unwrap(), 11);
    // Feeds are independent.
    assert_eq!(s.feed_position("other").await.unwrap(), 0);
}

async fn concurrent_feeds_apply_each_batch_once(s: Arc<dyn InventoryStore>) {
    // Eight nodes try to apply the same batch (0 -> 1, +5 units each time it lands).
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.declare("f", 0, 1, &[declared("A", 5 + i)]).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    let l = s.stock("A", "DE").await.unwrap().unwrap();
    assert_eq!(l.available, l.declared);
    assert_eq!(s.feed_position("f").await.unwrap(), 1);
}

/// (sku, cause, order, available, held, sold) of every event after `after`.
async fn changes(
    s: &dyn InventoryStore,
    after: i64,
) -> Vec<(String, String, Option<String>, i64, i64, i64)> {
    s.events(after, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e: StockEvent| {
            (
                e.sku,
                e.cause,
                e.order_id,
                e.level.available,
                e.level.held,
                e.level.sold,
            )
        })
        .collect()
}

fn change(
    sku: &str,
    cause: &str,
    order: Option<&str>,
    (available, held, sold): (i64, i64, i64),
) -> (String, String, Option<String>, i64, i64, i64) {
    (
        sku.into(),
        cause.into(),
        order.map(Into::into),
        available,
        held,
        sold,
    )
}

/// Every change of the counters appends one event with the counters after it, in
/// order; re-runs, refused holds and declarations that change nothing append none.
async fn every_stock_change_is_an_event(s: &dyn InventoryStore) {
    s.restock("A", "DE", 10).await.unwrap();
    assert!(s.declare("f", 0, 1, &[declared("B", 4)]).await.unwrap());
    // Two lines: each is its own event.
    let lines = [line("A", 3), line("B", 1)];
    assert_eq!(
        s.hold("o1", &lines, LATER).await.unwrap(),
        HoldOutcome::Held
    );
    // Nothing new: a re-run, a refused hold, an unchanged declaration.
    assert_eq!(
        s.hold("o1", &lines, LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert!(matches!(
        s.hold("o2", &[line("A", 1), line("B", 9)], LATER)
            .await
            .unwrap(),
        HoldOutcome::OutOfStock { .. }
    ));
    assert!(s.declare("f", 1, 2, &[declared("B", 4)]).await.unwrap());
    assert!(!s.declare("f", 0, 2, &[declared("B", 9)]).await.unwrap());
    assert_eq!(s.commit("o1").await.unwrap(), 4);
    assert_eq!(s.commit("o1").await.unwrap(), 0);
    assert_eq!(
        s.hold("o3", &[line("A", 2)], LATER).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(s.release("o3").await.unwrap(), 2);
    assert_eq!(s.release("o3").await.unwrap(), 0);

    let all = s.events(0, 1_000).await.unwrap();
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let ids: std::collections::HashSet<String> = all.iter().map(StockEvent::event_id).collect();
    assert_eq!(ids.len(), all.len(), "event ids are unique");
    let mut got = changes(s, 0).await;
    // The lines of one hold are one write: their events may come in any order.
    got[2..4].sort();
    assert_eq!(
        got,
        vec![
            change("A", "restocked", None, (10, 0, 0)),
            change("B", "declared", None, (4, 0, 0)),
            change("A", "held", Some("o1"), (7, 3, 0)),
            change("B", "held", Some("o1"), (3, 1, 0)),
            change("A", "sold", Some("o1"), (7, 0, 3)),
            change("B", "sold", Some("o1"), (3, 0, 1)),
            change("A", "held", Some("o3"), (5, 2, 3)),
            change("A", "released", Some("o3"), (7, 0, 3)),
        ]
    );
    // Read in pages after a position.
    let first = all[1].position;
    assert_eq!(changes(s, first).await.len(), all.len() - 2);
    assert_eq!(s.events(first, 2).await.unwrap().len(), 2);
    // Pruning takes the oldest first and leaves the rest readable.
    assert_eq!(s.prune_events(i64::MAX, 3).await.unwrap(), 3);
    let left = s.events(0, 1_000).await.unwrap();
    assert_eq!(left.len(), all.len() - 3);
    assert_eq!(left[0].position, all[3].position);
    assert_eq!(s.prune_events(0, 100).await.unwrap(), 0);
}

/// Concurrent holds on one SKU: one event per hold that won, each with the counters
/// it made (so they chain up: held grows by one per event, none twice).
async fn concurrent_holds_each_emit_their_own_counters(s: Arc<dyn InventoryStore>) {
    s.restock("HOT", "DE", 30).await.unwrap();
    let after = s.events(0, 1_000).await.unwrap().last().unwrap().position;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.hold(&format!("h{i}"), &[line("HOT", 1)], LATER)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let held: Vec<i64> = s
        .events(after, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.cause, "held");
            assert_eq!(e.level.available + e.level.held, 30);
            e.level.held
        })
        .collect();
    assert_eq!(held, (1..=30).collect::<Vec<i64>>());
}

macro_rules! conformance {
    ($module:ident, $open:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn holds_sales_and_releases_conserve_stock() {
                let b = $open().await;
                super::holds_sales_and_releases_conserve_stock(&*b.store).await;
            }

            #[tokio::test]
            async fn bad_holds_are_refused() {
                let b = $open().await;
                super::bad_holds_are_refused(&*b.store).await;
            }

            #[tokio::test]
            async fn expired_holds_are_listed_until_released() {
                let b = $open().await;
                super::expired_holds_are_listed_until_released(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_holds_never_oversell() {
                let b = $open().await;
                super::concurrent_holds_never_oversell(b.store.clone()).await;
            }

            #[tokio::test]
            async fn declared_stock_moves_available_and_owes_what_it_cannot_take() {
                let b = $open().await;
                super::declared_stock_moves_available_and_owes_what_it_cannot_take(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_feeds_apply_each_batch_once() {
                let b = $open().await;
                super::concurrent_feeds_apply_each_batch_once(b.store.clone()).await;
            }

            #[tokio::test]
            async fn every_stock_change_is_an_event() {
                let b = $open().await;
                super::every_stock_change_is_an_event(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_holds_each_emit_their_own_counters() {
                let b = $open().await;
                super::concurrent_holds_each_emit_their_own_counters(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_holds_undo_alone() {
                let b = $open().await;
                super::concurrent_holds_undo_alone(b.store.clone()).await;
            }
        }
    };
}

conformance!(sqlite_backend, sqlite);
#[cfg(feature = "pg-tests")]
conformance!(postgres_backend, postgres);
