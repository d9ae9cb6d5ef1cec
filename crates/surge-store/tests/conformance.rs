//! One conformance suite for every [`CatalogStore`] backend.
//!
//! SQLite always runs. PostgreSQL runs with `--features pg-tests` and needs
//! `SURGE_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); each test
//! gets a fresh schema. With the feature on and no URL, the PostgreSQL tests fail
//! loudly instead of skipping.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::sync::Arc;

use bytes::Bytes;
use surge_store::{
    CatalogStore, Offer, OutboxKind, ProductWrite, StoreError, StoreOptions, StoredView, ViewBatch,
    ViewPut,
};

mod common;

type Backend = common::Backend<dyn CatalogStore>;

async fn sqlite() -> Backend {
    common::sqlite("catalog.db", |url, options| async move {
        surge_store::open(&url, &options).await
    })
    .await
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Backend {
    common::postgres(|url, options| async move { surge_store::open(&url, &options).await }).await
}

fn product(id: &str, body: &str) -> ProductWrite {
    ProductWrite {
        id: id.into(),
        body: Bytes::from(body.to_owned()),
    }
}

fn offer(product: &str, merchant: &str, market: &str, price: i64, stock: i64) -> Offer {
    Offer {
        product_id: product.into(),
        merchant_id: merchant.into(),
        market: market.into(),
        price_minor: price,
        currency: "EUR".into(),
        stock,
        updated_at_ms: 0,
    }
}

async fn put_get_replace_delete(s: &dyn CatalogStore) {
    assert!(s.get_product("P1").await.unwrap().is_none());
    let r = s
        .put_products(&[product("P1", r#"{"id":"P1"}"#), product("P2", "{}")])
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].version, r[1].version), (1, 1));
    assert!(r[0].position < r[1].position);
    let r2 = s
        .put_products(&[product("P1", r#"{"id":"P1","v":2}"#)])
        .await
        .unwrap();
    assert_eq!(r2[0].version, 2);
    let got = s.get_product("P1").await.unwrap().unwrap();
    assert_eq!(got.body.as_ref(), br#"{"id":"P1","v":2}"#);
    assert_eq!(got.version, 2);
    assert!(s.delete_product("P1").await.unwrap());
    assert!(!s.delete_product("P1").await.unwrap());
    assert!(s.get_product("P1").await.unwrap().is_none());
    let kinds: Vec<_> = s
        .read_outbox(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.product_id))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (OutboxKind::Product, "P1".to_string()),
            (OutboxKind::Product, "P2".to_string()),
            (OutboxKind::Product, "P1".to_string()),
            (OutboxKind::ProductDeleted, "P1".to_string()),
        ]
    );
    assert_eq!(
        s.outbox_head().await.unwrap(),
        s.read_outbox(0, 100).await.unwrap()[3].position
    );
}

async fn offers_never_touch_products(s: &dyn CatalogStore) {
    s.put_products(&[product("P1", "{}")]).await.unwrap();
    let head = s.outbox_head().await.unwrap();
    let n = s
        .upsert_offers(&[
            offer("P1", "M2", "DE", 1999, 3),
            offer("P1", "M1", "DE", 2099, 0),
            offer("P1", "M1", "FR", 2199, 7),
            offer("P1", "M2", "DE", 1899, 2),
        ])
        .await
        .unwrap();
    assert_eq!(n, 2, "one outbox entry per (product, market)");
    let entries = s.read_outbox(head, 100).await.unwrap();
    assert!(entries.iter().all(|e| e.kind == OutboxKind::Offers));
    assert_eq!(entries[0].market.as_deref(), Some("DE"));
    assert_eq!(entries[1].market.as_deref(), Some("FR"));
    let de = s.offers_for("P1", "DE").await.unwrap();
    assert_eq!(
        de.iter()
            .map(|o| (o.merchant_id.as_str(), o.price_minor, o.stock))
            .collect::<Vec<_>>(),
        vec![("M1", 2099, 0), ("M2", 1899, 2)]
    );
    assert!(de[0].updated_at_ms > 0);
    assert_eq!(s.get_product("P1").await.unwrap().unwrap().version, 1);
    assert_eq!(s.counts().await.unwrap(), (1, 3, 0));
}

async fn views_and_position_are_atomic(s: &dyn CatalogStore) {
    assert_eq!(s.applied_position().await.unwrap(), 0);
    let view = StoredView {
        gzip: Bytes::from_static(b"gz"),
        etag: "e1".into(),
    };
    let batch = ViewBatch {
        from_position: 0,
        to_position: 5,
        puts: vec![ViewPut {
            key: "p:std:P1".into(),
            view: view.clone(),
        }],
        deletes: vec![],
    };
    s.apply_views(&batch).await.unwrap();
    assert_eq!(s.applied_position().await.unwrap(), 5);
    assert_eq!(s.get_view("p:std:P1").await.unwrap(), Some(view));
    // Re-applying the same batch is refused: nothing is applied twice.
    let err = s.apply_views(&batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::PositionConflict {
                expected: 0,
                found: 5
            }
        ),
        "{err}"
    );
    let del = ViewBatch {
        from_position: 5,
        to_position: 6,
        puts: vec![],
        deletes: vec!["p:std:P1".into()],
    };
    s.apply_views(&del).await.unwrap();
    assert_eq!(s.get_view("p:std:P1").await.unwrap(), None);
    assert_eq!(s.applied_position().await.unwrap(), 6);
}

async fn outbox_reads_in_pages(s: &dyn CatalogStore) {
    for i in 0..25 {
        s.put_products(&[product(&format!("P{i:03}"), "{}")])
            .await
            .unwrap();
    }
    let first = s.read_outbox(0, 10).await.unwrap();
    assert_eq!(first.len(), 10);
    let rest = s.read_outbox(first[9].position, 100).await.unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].product_id, "P010");
    assert!(rest.windows(2).all(|w| w[0].position < w[1].position));
}

async fn concurrent_writers_commit_in_position_order(s: Arc<dyn CatalogStore>) {
    // Every entry a reader sees below the head must stay visible: positions come out
    // in commit order, so a projector that follows the head never skips one.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.put_products(&[product(&format!("W{w}-{i}"), "{}")])
                    .await
                    .unwrap();
            }
        }));
    }
    let mut seen = 0i64;
    let mut count = 0usize;
    while count < 100 {
        for e in s.read_outbox(seen, 1000).await.unwrap() {
            assert!(e.position > seen);
            seen = e.position;
            count += 1;
        }
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(count, 100);
    assert_eq!(s.read_outbox(0, 1000).await.unwrap().len(), 100);
}

async fn pruning_keeps_positions_and_the_head(s: &dyn CatalogStore) {
    for i in 0..10 {
        s.put_products(&[product(&format!("P{i}"), "{}")])
            .await
            .unwrap();
    }
    let all = s.read_outbox(0, 100).await.unwrap();
    let cut = all[6].position;
    assert_eq!(s.prune_outbox(cut, 3).await.unwrap(), 3, "at most max_rows");
    assert_eq!(s.prune_outbox(cut, 100).await.unwrap(), 4);
    assert_eq!(s.prune_outbox(cut, 100).await.unwrap(), 0);
    let left = s.read_outbox(0, 100).await.unwrap();
    assert_eq!(left.len(), 3);
    assert_eq!(left[0].position, all[7].position);
    assert_eq!(s.outbox_head().await.unwrap(), all[9].position);
    // Positions are never reused after pruning.
    let r = s.put_products(&[product("P10", "{}")]).await.unwrap();
    assert!(r[0].position > all[9].position);
}

async fn closed_store_fails_cleanly(s: &dyn CatalogStore) {
    s.close().await;
    assert!(matches!(s.get_view("x").await, Err(StoreError::Closed)));
    assert!(matches!(
        s.put_products(&[product("P1", "{}")]).await,
        Err(StoreError::Closed)
    ));
}

async fn every_offer_reads_in_pages(s: &dyn CatalogStore) {
    assert!(s.offers_page(None, 10).await.unwrap().is_empty());
    let mut all = vec![
        offer("P2", "M1", "DE", 100, 1),
        offer("P1", "M2", "FR", 100, 2),
        offer("P1", "M1", "FR", 100, 3),
        offer("P1", "M1", "DE", 100, 4),
        offer("P10", "M1", "AT", 100, 5),
    ];
    s.upsert_offers(&all).await.unwrap();
    all.sort_by(|a, b| {
        (&a.product_id, &a.market, &a.merchant_id).cmp(&(&b.product_id, &b.market, &b.merchant_id))
    });
    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = s.offers_page(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else {
            break;
        };
        read.extend(page);
        after = Some(last);
    }
    let key = |o: &Offer| {
        (
            o.product_id.clone(),
            o.market.clone(),
            o.merchant_id.clone(),
            o.stock,
        )
    };
    assert_eq!(
        read.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>()
    );
}

macro_rules! conformance {
    ($module:ident, $open:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn put_get_replace_delete() {
                let b = $open().await;
                super::put_get_replace_delete(&*b.store).await;
            }

            #[tokio::test]
            async fn offers_never_touch_products() {
                let b = $open().await;
                super::offers_never_touch_products(&*b.store).await;
            }

            #[tokio::test]
            async fn views_and_position_are_atomic() {
                let b = $open().await;
                super::views_and_position_are_atomic(&*b.store).await;
            }

            #[tokio::test]
            async fn every_offer_reads_in_pages() {
                let b = $open().await;
                super::every_offer_reads_in_pages(&*b.store).await;
            }

            #[tokio::test]
            async fn outbox_reads_in_pages() {
                let b = $open().await;
                super::outbox_reads_in_pages(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers_commit_in_position_order() {
                let b = $open().await;
                super::concurrent_writers_commit_in_position_order(b.store.clone()).await;
            }

            #[tokio::test]
            async fn pruning_keeps_positions_and_the_head() {
                let b = $open().await;
                super::pruning_keeps_positions_and_the_head(&*b.store).await;
            }

            #[tokio::test]
            async fn closed_store_fails_cleanly() {
                let b = $open().await;
                super::closed_store_fails_cleanly(&*b.store).await;
            }
        }
    };
}

conformance!(sqlite_backend, sqlite);
#[cfg(feature = "pg-tests")]
conformance!(postgres_backend, postgres);

#[tokio::test]
async fn bad_urls_are_config_errors() {
    let err = surge_store::open("mysql://x", &StoreOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Config(_)));
    let bad = StoreOptions {
        sqlite_synchronous: "sometimes".into(),
        ..StoreOptions::default()
    };
    let err = surge_store::open("sqlite::memory:", &bad)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("sqlite_synchronous"), "{err}");
}
