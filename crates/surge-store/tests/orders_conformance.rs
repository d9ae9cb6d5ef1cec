//! One conformance suite for every [`OrdersStore`] backend (SQLite always; PostgreSQL
//! with `--features pg-tests` and `SURGE_TEST_POSTGRES_URL`, failing loudly without it).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::sync::Arc;

use surge_store::{
    Advance, AuditEntry, Created, KeyResponse, NewEvent, NewOrder, OrderRow, OrdersStore,
    SagaState, StepLog, StoreError,
};

mod common;

type Backend = common::Backend<dyn OrdersStore>;

async fn sqlite() -> Backend {
    common::sqlite("orders.db", |url, options| async move {
        surge_store::open_orders(&url, &options).await
    })
    .await
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Backend {
    common::postgres(|url, options| async move { surge_store::open_orders(&url, &options).await })
        .await
}

const LATER: i64 = i64::MAX / 2;

fn order(id: &str, user: &str, created_at_ms: i64) -> OrderRow {
    OrderRow {
        id: id.into(),
        user_id: user.into(),
        market: "DE".into(),
        currency: "EUR".into(),
        total_minor: 1999,
        document: r#"{"lines":[]}"#.into(),
        status: "pending".into(),
        reason: None,
        saga_state: SagaState::Running,
        step: "hold_stock".into(),
        attempts: 0,
        next_at_ms: 0,
        step_deadline_ms: LATER,
        lease_owner: "node-a".into(),
        lease_until_ms: 1_000,
        version: 1,
        created_at_ms,
        updated_at_ms: created_at_ms,
    }
}

fn new_order(id: &str, user: &str, key: &str, hash: &str) -> NewOrder {
    NewOrder {
        order: order(id, user, 0),
        idempotency_key: key.into(),
        request_hash: hash.into(),
        locked_until_ms: LATER,
        key_expires_at_ms: LATER,
        log: vec![log("create_order", "done")],
        events: vec![event(id, "OrderPlaced")],
    }
}

fn log(step: &str, outcome: &str) -> StepLog {
    StepLog {
        step: step.into(),
        outcome: outcome.into(),
        detail: String::new(),
        at_ms: 0,
    }
}

fn event(order: &str, kind: &str) -> NewEvent {
    NewEvent {
        event_id: format!("{order}:{kind}"),
        kind: kind.into(),
        order_id: order.into(),
        payload: format!(r#"{{"order":"{order}"}}"#),
    }
}

async fn keys_claim_once_per_user_and_replay(s: &dyn OrdersStore) {
    assert_eq!(
        s.create(&new_order("o1", "alice", "k1", "h1"))
            .await
            .unwrap(),
        Created::New
    );
    // The same key again: nothing written, the first claim is reported.
    let again = s
        .create(&new_order("o2", "alice", "k1", "h2"))
        .await
        .unwrap();
    let Created::Existing(k) = again else {
        panic!("expected the existing key, got {again:?}");
    };
    assert_eq!((k.request_hash.as_str(), k.order_id.as_str()), ("h1", "o1"));
    assert_eq!(k.response, None);
    assert!(s.order("o2").await.unwrap().is_none());
    // Keys are scoped to the user.
    assert_eq!(
        s.create(&new_order("o3", "bob", "k1", "h1")).await.unwrap(),
        Created::New
    );

    // The response is stored once, never replaced.
    assert!(
        s.store_response("alice", "k1", 201, "application/json", b"{\"a\":1}")
            .await
            .unwrap()
    );
    assert!(
        !s.store_response("alice", "k1", 500, "text/plain", b"other")
            .await
            .unwrap()
    );
    let k = s.key("alice", "k1").await.unwrap().unwrap();
    assert_eq!(
        k.response,
        Some((201, "application/json".into(), b"{\"a\":1}".to_vec()))
    );

    // The order, its log and its event were written with the claim.
    let o = s.order("o1").await.unwrap().unwrap();
    assert_eq!((o.version, o.status.as_str()), (1, "pending"));
    assert!(o.created_at_ms > 0, "the store stamps creation");
    assert_eq!(s.log("o1").await.unwrap()[0].step, "create_order");
    let events = s.events(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.event_id, "o1:OrderPlaced");
    assert!(events[1].position > events[0].position);
    // Pruning takes the oldest first and only what is older than asked.
    assert_eq!(s.prune_events(0, 10).await.unwrap(), 0);
    assert_eq!(s.prune_events(i64::MAX, 1).await.unwrap(), 1);
    let left = s.events(0, 10).await.unwrap();
    assert_eq!(left, events[1..]);
}

async fn expired_keys_are_reclaimed_and_purged(s: &dyn OrdersStore) {
    let mut first = new_order("o1", "alice", "k", "h1");
    first.key_expires_at_ms = 1; // long gone
    first.locked_until_ms = 1;
    assert_eq!(s.create(&first).await.unwrap(), Created::New);
    // An expired key is free again: a new order takes it.
    assert_eq!(
        s.create(&new_order("o2", "alice", "k", "h2"))
            .await
            .unwrap(),
        Created::New
    );
    assert_eq!(s.key("alice", "k").await.unwrap().unwrap().order_id, "o2");

    let mut old = new_order("o3", "bob", "k", "h");
    old.key_expires_at_ms = 5;
    s.create(&old).await.unwrap();
    assert_eq!(s.purge_keys(10, 100).await.unwrap(), 1);
    assert!(s.key("bob", "k").await.unwrap().is_none());
    assert!(s.key("alice", "k").await.unwrap().is_some());
    assert!(s.order("o3").await.unwrap().is_some(), "orders stay");
}

async fn a_stale_lock_is_taken_over_once(s: &dyn OrdersStore) {
    let mut n = new_order("o1", "alice", "k", "h");
    n.locked_until_ms = 100;
    s.create(&n).await.unwrap();
    assert!(
        !s.relock_key("alice", "k", 50, 1_000).await.unwrap(),
        "still locked"
    );
    assert!(s.relock_key("alice", "k", 150, 1_000).await.unwrap());
    assert!(
        !s.relock_key("alice", "k", 150, 2_000).await.unwrap(),
        "taken"
    );
    s.store_response("alice", "k", 202, "application/json", b"{}")
        .await
        .unwrap();
    assert!(
        !s.relock_key("alice", "k", 5_000, 6_000).await.unwrap(),
        "answered keys are never relocked"
    );
}

async fn advance_is_a_compare_and_set(s: &dyn OrdersStore) {
    s.create(&new_order("o1", "alice", "k", "h")).await.unwrap();
    let step = Advance {
        order_id: "o1".into(),
        expected_version: 1,
        step: Some("authorize".into()),
        attempts: 0,
        next_at_ms: 10,
        step_deadline_ms: 20,
        log: vec![log("hold_stock", "done"), log("authorize", "intent")],
        ..Advance::default()
    };
    let moved = s.advance(&step).await.unwrap().unwrap();
    assert_eq!((moved.version, moved.step.as_str()), (2, "authorize"));
    assert_eq!(moved.status, "pending", "unset fields keep their value");
    assert_eq!(moved.lease_owner, "node-a");
    // The same move again loses: the version moved.
    assert!(s.advance(&step).await.unwrap().is_none());
    let done = Advance {
        order_id: "o1".into(),
        expected_version: 2,
        saga_state: Some(SagaState::Done),
        step: Some("done".into()),
        status: Some("cancelled".into()),
        reason: Some("the card was declined".into()),
        lease: Some(("node-b".into(), 99)),
        log: vec![log("authorize", "failed")],
        events: vec![event("o1", "OrderCancelled"), event("o1", "OrderPlaced")],
        ..Advance::default()
    };
    let o = s.advance(&done).await.unwrap().unwrap();
    assert_eq!(o.saga_state, SagaState::Done);
    assert_eq!(o.reason.as_deref(), Some("the card was declined"));
    assert_eq!((o.lease_owner.as_str(), o.lease_until_ms), ("node-b", 99));
    let steps: Vec<_> = s
        .log("o1")
        .await
        .unwrap()
        .into_iter()
        .map(|l| format!("{}:{}", l.step, l.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            "create_order:done",
            "hold_stock:done",
            "authorize:intent",
            "authorize:failed"
        ]
    );
    // Events dedupe on their id: OrderPlaced was written once.
    let kinds: Vec<_> = s
        .events(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(kinds, ["OrderPlaced", "OrderCancelled"]);
}

async fn a_finishing_move_stores_the_answer_unless_one_is_there(s: &dyn OrdersStore) {
    let answer = |body: &[u8]| KeyResponse {
        user_id: "alice".into(),
        status: 201,
        content_type: "application/json".into(),
        body: body.to_vec(),
    };
    // The move stores the answer on the order's key, in its transaction.
    s.create(&new_order("o1", "alice", "k1", "h"))
        .await
        .unwrap();
    s.create(&new_order("o2", "bob", "k1", "h")).await.unwrap();
    let done = |id: &str, response: KeyResponse| Advance {
        order_id: id.into(),
        expected_version: 1,
        saga_state: Some(SagaState::Done),
        status: Some("confirmed".into()),
        response: Some(response),
        ..Advance::default()
    };
    assert!(
        s.advance(&done("o1", answer(b"first")))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.key("alice", "k1").await.unwrap().unwrap().response,
        Some((201, "application/json".into(), b"first".to_vec()))
    );
    // Another user's key with the same name is not touched.
    assert_eq!(s.key("bob", "k1").await.unwrap().unwrap().response, None);
    // A move that loses its compare-and-set stores nothing.
    let mut late = answer(b"late");
    late.user_id = "bob".into();
    let mut stale = done("o2", late.clone());
    stale.expected_version = 7;
    assert!(s.advance(&stale).await.unwrap().is_none());
    assert_eq!(s.key("bob", "k1").await.unwrap().unwrap().response, None);
    // An answer stored first (the request's 202) stays.
    assert!(
        s.store_response("bob", "k1", 202, "application/json", b"pending")
            .await
            .unwrap()
    );
    assert!(s.advance(&done("o2", late)).await.unwrap().is_some());
    assert_eq!(
        s.key("bob", "k1").await.unwrap().unwrap().response,
        Some((202, "application/json".into(), b"pending".to_vec()))
    );
}

async fn concurrent_advances_one_wins(s: Arc<dyn OrdersStore>) {
    s.create(&new_order("o1", "alice", "k", "h")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.advance(&Advance {
                order_id: "o1".into(),
                expected_version: 1,
                step: Some(format!("step-{i}")),
                log: vec![log(&format!("step-{i}"), "intent")],
                ..Advance::default()
            })
            .await
            .unwrap()
            .is_some()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(s.log("o1").await.unwrap().len(), 2);
}

/// Many creates at once (on SQLite they share group commits), one of which fails after
/// claiming its key (its order id exists): it leaves no trace, the others are created,
/// and each caller gets its own answer.
async fn concurrent_creates_fail_alone(s: Arc<dyn OrdersStore>) {
    s.create(&new_order("taken", "alice", "k-first", "h"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                // Every 50th reuses the taken order id under a fresh key; every 7th
                // reuses the first key.
                let (id, key) = match i {
                    i if i % 50 == 0 => ("taken".to_owned(), format!("k{i}")),
                    i if i % 7 == 0 => (format!("o{i}"), "k-first".to_owned()),
                    i => (format!("o{i}"), format!("k{i}")),
                };
                (i, s.create(&new_order(&id, "bob", &key, "h")).await)
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i % 50 == 0 {
            assert!(matches!(r, Err(StoreError::Duplicate)), "{i}: {r:?}");
            // The key it claimed before failing is not kept.
            assert_eq!(s.key("bob", &format!("k{i}")).await.unwrap(), None);
        } else if i % 7 == 0 {
            // bob never used k-first: the first of these claims it.
            match r.unwrap() {
                Created::New => created += 1,
                Created::Existing(k) => assert_eq!(k.request_hash, "h"),
            }
        } else {
            assert_eq!(r.unwrap(), Created::New, "{i}");
            created += 1;
            let o = s.order(&format!("o{i}")).await.unwrap().unwrap();
            assert_eq!(o.user_id, "bob");
            assert_eq!(s.log(&o.id).await.unwrap().len(), 1);
        }
    }
    // Of the 200: 4 fail, and of the 28 on k-first only one creates.
    assert_eq!(created, 200 - 4 - 28 + 1);
    let taken = s.order("taken").await.unwrap().unwrap();
    assert_eq!(taken.user_id, "alice");
    assert_eq!(s.log("taken").await.unwrap().len(), 1);
}

async fn lists_page_and_claims_lease(s: &dyn OrdersStore) {
    for i in 0..5 {
        let mut n = new_order(&format!("o{i}"), "alice", &format!("k{i}"), "h");
        n.order.created_at_ms = 100 + i;
        n.order.next_at_ms = 10 * i;
        s.create(&n).await.unwrap();
    }
    let mut n = new_order("x", "bob", "k", "h");
    n.order.created_at_ms = 100;
    s.create(&n).await.unwrap();

    let page = s.orders_of("alice", None, 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["o4", "o3"]);
    let last = page.last().unwrap();
    let page = s
        .orders_of("alice", Some((last.created_at_ms, last.id.clone())), 10)
        .await
        .unwrap();
    let ids: Vec<_> = page.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["o2", "o1", "o0"]);

    // Claims: due (next_at <= now) and lease free (until 1,000 by node-a).
    assert!(
        s.claim_due("node-b", 500, 2_000, false, 10)
            .await
            .unwrap()
            .is_empty(),
        "node-a's lease holds"
    );
    assert!(
        s.claim_due("node-a", 500, 2_000, false, 10)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not claimed again, even by its owner"
    );
    let mine = s.claim_due("node-a", 25, 3_000, true, 10).await.unwrap();
    assert_eq!(mine.len(), 6, "a restarted owner takes all its sagas back");
    let theirs = s
        .claim_due("node-b", 3_000, 9_000, false, 10)
        .await
        .unwrap();
    let ids: Vec<_> = theirs.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        theirs.len(),
        6,
        "every lease ran out and all are due: {ids:?}"
    );
    assert!(theirs.iter().all(|o| o.lease_owner == "node-b"));
    // Only the due ones once the lease runs out again.
    assert_eq!(
        s.claim_due("node-c", 9_000, 9_500, false, 10)
            .await
            .unwrap()
            .len(),
        6
    );
    // Done sagas are never claimed and not listed as open.
    let o = s.order("o0").await.unwrap().unwrap();
    s.advance(&Advance {
        order_id: "o0".into(),
        expected_version: o.version,
        saga_state: Some(SagaState::Done),
        ..Advance::default()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        s.claim_due("node-c", 10_000, 19_000, false, 10)
            .await
            .unwrap()
            .len(),
        5
    );
    let open = s.sagas(None, LATER, None, 3).await.unwrap();
    assert_eq!(open.len(), 3);
    let last = open.last().unwrap();
    let rest = s
        .sagas(None, LATER, Some((last.updated_at_ms, last.id.clone())), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(
        s.sagas(Some(SagaState::Done), LATER, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s.sagas(None, 0, None, 10).await.unwrap().is_empty());

    // A saga queued for much later (a fulfilment slot an hour away) is not taken back
    // early by its restarted owner: its driver would hold a slot of the orchestrator
    // until then. One due within the lease is.
    let mut q = new_order("queued", "carol", "k", "h");
    q.order.next_at_ms = 1_000_000;
    s.create(&q).await.unwrap();
    let mut soon = new_order("soon", "carol", "k2", "h");
    soon.order.next_at_ms = 20_500;
    s.create(&soon).await.unwrap();
    let mine = s
        .claim_due("node-a", 20_000, 21_000, true, 10)
        .await
        .unwrap();
    let ids: Vec<_> = mine.iter().map(|o| o.id.as_str()).collect();
    assert!(ids.contains(&"soon") && !ids.contains(&"queued"), "{ids:?}");
    let later = s
        .claim_due("node-a", 1_000_000, 1_001_000, false, 10)
        .await
        .unwrap();
    assert!(later.iter().any(|o| o.id == "queued"), "taken when due");

    s.audit(&AuditEntry {
        order_id: "o1".into(),
        actor: "admin".into(),
        action: "retry".into(),
        note: "card fixed".into(),
        at_ms: 0,
    })
    .await
    .unwrap();
    let trail = s.audit_of("o1").await.unwrap();
    assert_eq!(trail.len(), 1);
    assert!(trail[0].at_ms > 0);
    let counts = s.count_by_status().await.unwrap();
    assert_eq!(counts, [("pending".to_owned(), 8)]);
}

async fn fulfilment_slots_never_exceed_capacity(s: Arc<dyn OrdersStore>) {
    const MINUTE: i64 = 29_000_000;
    // 20 orders race for 5 slots of one minute.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.take_slot(&format!("o{i}"), "berlin", MINUTE, 5)
                .await
                .unwrap()
        }));
    }
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap() {
            won.push(format!("o{i}"));
        }
    }
    assert_eq!(won.len(), 5);
    assert_eq!(s.slots_used("berlin", MINUTE).await.unwrap(), 5);
    // Other minutes and warehouses are their own.
    assert!(s.take_slot("x1", "berlin", MINUTE + 1, 5).await.unwrap());
    assert!(s.take_slot("x2", "paris", MINUTE, 1).await.unwrap());
    assert!(!s.take_slot("x3", "paris", MINUTE, 1).await.unwrap());
    // A slot goes back once, and only an order's own; a loser has none to give.
    assert!(s.return_slot(&won[0]).await.unwrap());
    assert!(!s.return_slot(&won[0]).await.unwrap());
    assert!(!s.return_slot("o-never").await.unwrap());
    assert_eq!(s.slots_used("berlin", MINUTE).await.unwrap(), 4);
    assert!(s.take_slot("late", "berlin", MINUTE, 5).await.unwrap());
    assert!(!s.take_slot("later", "berlin", MINUTE, 5).await.unwrap());
    assert!(s.take_slot("x4", "paris", MINUTE, 0).await.is_err());
    // Pruning forgets past minutes only.
    assert!(s.prune_slots(MINUTE + 1).await.unwrap() >= 2);
    assert_eq!(s.slots_used("berlin", MINUTE).await.unwrap(), 0);
    assert_eq!(s.slots_used("berlin", MINUTE + 1).await.unwrap(), 1);
    assert!(!s.return_slot("late").await.unwrap());
    assert!(s.return_slot("x1").await.unwrap());
}

macro_rules! conformance {
    ($module:ident, $open:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn keys_claim_once_per_user_and_replay() {
                let b = $open().await;
                super::keys_claim_once_per_user_and_replay(&*b.store).await;
            }

            #[tokio::test]
            async fn expired_keys_are_reclaimed_and_purged() {
                let b = $open().await;
                super::expired_keys_are_reclaimed_and_purged(&*b.store).await;
            }

            #[tokio::test]
            async fn a_stale_lock_is_taken_over_once() {
                let b = $open().await;
                super::a_stale_lock_is_taken_over_once(&*b.store).await;
            }

            #[tokio::test]
            async fn advance_is_a_compare_and_set() {
                let b = $open().await;
                super::advance_is_a_compare_and_set(&*b.store).await;
            }

            #[tokio::test]
            async fn a_finishing_move_stores_the_answer_unless_one_is_there() {
                let b = $open().await;
                super::a_finishing_move_stores_the_answer_unless_one_is_there(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_advances_one_wins() {
                let b = $open().await;
                super::concurrent_advances_one_wins(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_creates_fail_alone() {
                let b = $open().await;
                super::concurrent_creates_fail_alone(b.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fulfilment_slots_never_exceed_capacity() {
                let b = $open().await;
                super::fulfilment_slots_never_exceed_capacity(b.store.clone()).await;
            }

            #[tokio::test]
            async fn lists_page_and_claims_lease() {
                let b = $open().await;
                super::lists_page_and_claims_lease(&*b.store).await;
            }
        }
    };
}

conformance!(sqlite_backend, sqlite);
#[cfg(feature = "pg-tests")]
conformance!(postgres_backend, postgres);
