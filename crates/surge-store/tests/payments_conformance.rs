//! One conformance suite for every [`PaymentsStore`] backend (SQLite always; PostgreSQL
//! with `--features pg-tests` and `SURGE_TEST_POSTGRES_URL`, failing loudly without it).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::sync::Arc;

use surge_store::{
    PaymentOperation, PaymentRecord, PaymentState, PaymentUpdate, PaymentsStore, StoreError,
    Transition,
};

mod common;

type Backend = common::Backend<dyn PaymentsStore>;

async fn sqlite() -> Backend {
    common::sqlite("payments.db", |url, options| async move {
        surge_store::open_payments(&url, &options).await
    })
    .await
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Backend {
    common::postgres(|url, options| async move { surge_store::open_payments(&url, &options).await })
        .await
}

/// The record of a transition that must have changed the payment.
fn applied(t: Transition) -> PaymentRecord {
    match t {
        Transition::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// The record of a transition that must have changed nothing.
fn unchanged(t: Transition) -> PaymentRecord {
    match t {
        Transition::Unchanged(r) => r,
        other => panic!("expected Unchanged, got {other:?}"),
    }
}

async fn authorize_capture_refund(s: &dyn PaymentsStore) {
    assert_eq!(s.payment("o1").await.unwrap(), None);
    let r = applied(s.begin_authorize("o1", 1_000, "EUR").await.unwrap());
    assert_eq!(r.state, PaymentState::Authorizing);
    assert_eq!((r.amount_minor, r.currency.as_str()), (1_000, "EUR"));
    assert_eq!(r.provider_ref, None);
    // A re-run, even with another amount, reports the payment that is there.
    let again = unchanged(s.begin_authorize("o1", 999, "USD").await.unwrap());
    assert_eq!(
        (again.amount_minor, again.currency.as_str()),
        (1_000, "EUR")
    );

    let r = applied(s.record_authorized("o1", "auth_1").await.unwrap());
    assert_eq!(r.state, PaymentState::Authorized);
    assert_eq!(r.provider_ref.as_deref(), Some("auth_1"));
    let r = unchanged(s.record_authorized("o1", "auth_2").await.unwrap());
    assert_eq!(r.provider_ref.as_deref(), Some("auth_1"), "first ref stays");
    assert_eq!(
        unchanged(s.record_declined("o1", "late").await.unwrap()).state,
        PaymentState::Authorized
    );
    assert_eq!(
        unchanged(s.begin_authorize("o1", 1_000, "EUR").await.unwrap()).state,
        PaymentState::Authorized
    );

    let r = applied(s.record_captured("o1", 1_000).await.unwrap());
    assert_eq!((r.state, r.captured_minor), (PaymentState::Captured, 1_000));
    let r = unchanged(s.record_captured("o1", 1_000).await.unwrap());
    assert_eq!(r.captured_minor, 1_000, "captured once");
    // Captured payments are not voided.
    assert_eq!(
        unchanged(s.record_voided("o1", Some("auth_1")).await.unwrap()).state,
        PaymentState::Captured
    );
    assert_eq!(
        unchanged(s.record_voided("o1", None).await.unwrap()).state,
        PaymentState::Captured
    );

    let r = applied(s.record_refund("o1", 0, 300).await.unwrap());
    assert_eq!(
        (r.state, r.refunded_minor, r.refunds),
        (PaymentState::Captured, 300, 1)
    );
    // Recording refund 0 again adds nothing.
    let r = unchanged(s.record_refund("o1", 0, 300).await.unwrap());
    assert_eq!((r.refunded_minor, r.refunds), (300, 1));
    let r = applied(s.record_refund("o1", 1, 700).await.unwrap());
    assert_eq!(
        (r.state, r.refunded_minor, r.refunds),
        (PaymentState::Refunded, 1_000, 2)
    );
    assert_eq!(
        unchanged(s.record_refund("o1", 2, 1).await.unwrap()).refunded_minor,
        1_000
    );
    assert!(r.updated_at_ms >= r.created_at_ms);
    assert_eq!(s.payment("o1").await.unwrap(), Some(r));
}

async fn declines_are_final(s: &dyn PaymentsStore) {
    applied(s.begin_authorize("o1", 500, "EUR").await.unwrap());
    let r = applied(s.record_declined("o1", "insufficient_funds").await.unwrap());
    assert_eq!(r.state, PaymentState::Declined);
    assert_eq!(r.decline_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(
        unchanged(s.record_authorized("o1", "auth_1").await.unwrap()).state,
        PaymentState::Declined
    );
    assert_eq!(
        unchanged(s.record_captured("o1", 500).await.unwrap()).state,
        PaymentState::Declined
    );
    assert_eq!(
        unchanged(s.record_voided("o1", None).await.unwrap()).state,
        PaymentState::Declined
    );
    assert_eq!(
        unchanged(s.begin_authorize("o1", 500, "EUR").await.unwrap()).state,
        PaymentState::Declined
    );
}

async fn void_tombstone_refuses_authorize(s: &dyn PaymentsStore) {
    // Void before any authorize: a tombstone.
    let r = applied(s.record_voided("o1", None).await.unwrap());
    assert_eq!(r.state, PaymentState::Voided);
    assert_eq!((r.amount_minor, r.provider_ref.as_deref()), (0, None));
    unchanged(s.record_voided("o1", None).await.unwrap());
    let r = unchanged(s.begin_authorize("o1", 500, "EUR").await.unwrap());
    assert_eq!(r.state, PaymentState::Voided, "a late authorize finds it");
    assert_eq!(
        unchanged(s.record_authorized("o1", "auth_1").await.unwrap()).state,
        PaymentState::Voided
    );
    // The authorization a late authorize made anyway is attached once voided.
    let r = applied(s.record_voided("o1", Some("auth_1")).await.unwrap());
    assert_eq!(
        (r.state, r.provider_ref.as_deref()),
        (PaymentState::Voided, Some("auth_1"))
    );
    let r = unchanged(s.record_voided("o1", Some("auth_2")).await.unwrap());
    assert_eq!(r.provider_ref.as_deref(), Some("auth_1"));

    // Void while authorizing, the provider having no authorization.
    applied(s.begin_authorize("o2", 500, "EUR").await.unwrap());
    let r = applied(s.record_voided("o2", None).await.unwrap());
    assert_eq!((r.state, r.amount_minor), (PaymentState::Voided, 500));
    unchanged(s.record_authorized("o2", "auth_2").await.unwrap());
}

async fn void_of_an_authorization(s: &dyn PaymentsStore) {
    applied(s.begin_authorize("o1", 500, "EUR").await.unwrap());
    applied(s.record_authorized("o1", "auth_1").await.unwrap());
    // "Nothing to void" does not apply to an authorized payment.
    assert_eq!(
        unchanged(s.record_voided("o1", None).await.unwrap()).state,
        PaymentState::Authorized
    );
    let r = applied(s.record_voided("o1", Some("auth_1")).await.unwrap());
    assert_eq!(r.state, PaymentState::Voided);
    unchanged(s.record_voided("o1", Some("auth_1")).await.unwrap());
    assert_eq!(
        unchanged(s.record_captured("o1", 500).await.unwrap()).state,
        PaymentState::Voided
    );

    // A void that found the authorization while the payment was still authorizing.
    applied(s.begin_authorize("o2", 500, "EUR").await.unwrap());
    let r = applied(s.record_voided("o2", Some("auth_2")).await.unwrap());
    assert_eq!(
        (r.state, r.provider_ref.as_deref()),
        (PaymentState::Voided, Some("auth_2"))
    );
    // A missing payment stays missing when given a ref.
    assert_eq!(
        s.record_voided("nope", Some("auth_x")).await.unwrap(),
        Transition::Missing
    );
}

async fn refunds_never_exceed_capture(s: &dyn PaymentsStore) {
    applied(s.begin_authorize("o1", 100, "EUR").await.unwrap());
    // Nothing is refunded before a capture.
    unchanged(s.record_refund("o1", 0, 10).await.unwrap());
    applied(s.record_authorized("o1", "auth_1").await.unwrap());
    unchanged(s.record_refund("o1", 0, 10).await.unwrap());
    // More than authorized is not captured.
    unchanged(s.record_captured("o1", 101).await.unwrap());
    applied(s.record_captured("o1", 80).await.unwrap());
    applied(s.record_refund("o1", 0, 60).await.unwrap());
    // 60 + 30 > 80.
    let r = unchanged(s.record_refund("o1", 1, 30).await.unwrap());
    assert_eq!(r.refunded_minor, 60);
    // A refund number out of turn is not recorded.
    unchanged(s.record_refund("o1", 3, 10).await.unwrap());
    let r = applied(s.record_refund("o1", 1, 20).await.unwrap());
    assert_eq!((r.state, r.refunded_minor), (PaymentState::Refunded, 80));
    unchanged(s.record_refund("o1", 2, 1).await.unwrap());
}

async fn bad_input_and_missing_payments(s: &dyn PaymentsStore) {
    for amount in [0, -5] {
        assert!(matches!(
            s.begin_authorize("o1", amount, "EUR").await,
            Err(StoreError::Config(_))
        ));
    }
    assert!(s.begin_authorize("o1", 5, "").await.is_err());
    assert_eq!(s.payment("o1").await.unwrap(), None);
    assert_eq!(
        s.record_authorized("o1", "a").await.unwrap(),
        Transition::Missing
    );
    assert_eq!(
        s.record_declined("o1", "x").await.unwrap(),
        Transition::Missing
    );
    assert_eq!(
        s.record_captured("o1", 5).await.unwrap(),
        Transition::Missing
    );
    assert_eq!(
        s.record_refund("o1", 0, 5).await.unwrap(),
        Transition::Missing
    );
    assert!(s.record_captured("o1", 0).await.is_err());
    assert!(s.record_refund("o1", 0, 0).await.is_err());
    assert_eq!(s.payment("o1").await.unwrap(), None);
}

async fn list_and_operations_log(s: &dyn PaymentsStore) {
    for id in ["c", "a", "d", "b"] {
        applied(s.begin_authorize(id, 10, "EUR").await.unwrap());
    }
    let ids = |v: Vec<PaymentRecord>| v.into_iter().map(|r| r.order_id).collect::<Vec<_>>();
    assert_eq!(ids(s.payments("", 3).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(ids(s.payments("c", 3).await.unwrap()), ["d"]);
    assert!(s.payments("d", 3).await.unwrap().is_empty());

    s.log_operation("a", "authorize", "a:authorize", "timeout")
        .await
        .unwrap();
    s.log_operation("b", "authorize", "b:authorize", "ok auth_9")
        .await
        .unwrap();
    s.log_operation("a", "authorize", "a:authorize", "ok auth_1")
        .await
        .unwrap();
    let ops = s.operations("a").await.unwrap();
    assert_eq!(
        ops.iter()
            .map(|o| (
                o.op.as_str(),
                o.idempotency_key.as_str(),
                o.outcome.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("authorize", "a:authorize", "timeout"),
            ("authorize", "a:authorize", "ok auth_1")
        ]
    );
    assert!(ops.iter().all(|o| o.order_id == "a" && o.at_ms > 0));
    assert!(s.operations("z").await.unwrap().is_empty());
}

fn call(order: &str, op: &str, outcome: &str) -> PaymentOperation {
    PaymentOperation {
        order_id: order.into(),
        op: op.into(),
        idempotency_key: format!("{order}:{op}"),
        outcome: outcome.into(),
        at_ms: 0,
    }
}

/// `log_and_update` is `log_operation` then the transition: the call is logged whatever
/// the transition does; an invalid transition is refused before anything is written.
async fn log_and_update_logs_then_transitions(s: &dyn PaymentsStore) {
    applied(s.begin_authorize("o1", 500, "EUR").await.unwrap());
    let update = PaymentUpdate::Authorized {
        provider_ref: "auth_1".into(),
    };
    let r = applied(
        s.log_and_update(&call("o1", "authorize", "ok auth_1"), update.clone())
            .await
            .unwrap(),
    );
    assert_eq!(r.state, PaymentState::Authorized);
    assert_eq!(r.provider_ref.as_deref(), Some("auth_1"));
    // Again: nothing changes, the call is logged.
    let r = unchanged(
        s.log_and_update(&call("o1", "authorize", "ok auth_1"), update)
            .await
            .unwrap(),
    );
    assert_eq!(r.state, PaymentState::Authorized);
    let captured = PaymentUpdate::Captured { amount_minor: 500 };
    let r = applied(
        s.log_and_update(&call("o1", "capture", "ok"), captured)
            .await
            .unwrap(),
    );
    assert_eq!((r.state, r.captured_minor), (PaymentState::Captured, 500));
    // No payment: the call is logged, the transition finds nothing.
    let voided = PaymentUpdate::Voided {
        provider_ref: Some("auth_x".into()),
    };
    assert_eq!(
        s.log_and_update(&call("o2", "void", "ok"), voided)
            .await
            .unwrap(),
        Transition::Missing
    );
    let bad = PaymentUpdate::Refund {
        seq: 0,
        amount_minor: 0,
    };
    assert!(matches!(
        s.log_and_update(&call("o1", "refund", "ok"), bad).await,
        Err(StoreError::Config(_))
    ));
    let ops = |id: &'static str| async move {
        s.operations(id)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.op)
            .collect::<Vec<_>>()
    };
    assert_eq!(ops("o1").await, ["authorize", "authorize", "capture"]);
    assert_eq!(ops("o2").await, ["void"]);
    // A tombstone through the same path.
    let tombstone = PaymentUpdate::Voided { provider_ref: None };
    let r = applied(
        s.log_and_update(&call("o3", "find", "not found"), tombstone)
            .await
            .unwrap(),
    );
    assert_eq!((r.state, r.amount_minor), (PaymentState::Voided, 0));
}

/// Many captures, voids and refunds of the same payments at once: each transition wins
/// exactly once.
async fn concurrent_transitions_apply_once(s: Arc<dyn PaymentsStore>) {
    for i in 0..10 {
        let order = format!("o{i}");
        applied(s.begin_authorize(&order, 100, "EUR").await.unwrap());
        applied(
            s.record_authorized(&order, &format!("auth_{i}"))
                .await
                .unwrap(),
        );
    }
    // Orders 0..5: 8 captures each at once. Orders 5..10: 4 captures and 4 voids.
    let tasks: Vec<_> = (0..10)
        .flat_map(|i| (0..8).map(move |k| (i, k)))
        .map(|(i, k)| {
            let s = s.clone();
            tokio::spawn(async move {
                let order = format!("o{i}");
                let t = if i >= 5 && k % 2 == 1 {
                    s.record_voided(&order, Some(&format!("auth_{i}")))
                        .await
                        .unwrap()
                } else {
                    s.record_captured(&order, 100).await.unwrap()
                };
                (i, t)
            })
        })
        .collect();
    let mut wins = [0; 10];
    for t in tasks {
        let (i, t) = t.await.unwrap();
        if t.applied() {
            wins[i] += 1;
        }
    }
    assert_eq!(wins, [1; 10], "one transition per payment");
    for i in 0..5 {
        let r = s.payment(&format!("o{i}")).await.unwrap().unwrap();
        assert_eq!((r.state, r.captured_minor), (PaymentState::Captured, 100));
    }

    // Refund number 0 recorded by 8 callers at once: added once.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.record_refund("o0", 0, 40).await.unwrap().applied() })
        })
        .collect();
    let mut applied_refunds = 0;
    for t in tasks {
        applied_refunds += usize::from(t.await.unwrap());
    }
    assert_eq!(applied_refunds, 1);
    let r = s.payment("o0").await.unwrap().unwrap();
    assert_eq!((r.refunded_minor, r.refunds), (40, 1));
}

macro_rules! conformance {
    ($module:ident, $open:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn authorize_capture_refund() {
                let b = $open().await;
                super::authorize_capture_refund(&*b.store).await;
            }

            #[tokio::test]
            async fn declines_are_final() {
                let b = $open().await;
                super::declines_are_final(&*b.store).await;
            }

            #[tokio::test]
            async fn void_tombstone_refuses_authorize() {
                let b = $open().await;
                super::void_tombstone_refuses_authorize(&*b.store).await;
            }

            #[tokio::test]
            async fn void_of_an_authorization() {
                let b = $open().await;
                super::void_of_an_authorization(&*b.store).await;
            }

            #[tokio::test]
            async fn refunds_never_exceed_capture() {
                let b = $open().await;
                super::refunds_never_exceed_capture(&*b.store).await;
            }

            #[tokio::test]
            async fn bad_input_and_missing_payments() {
                let b = $open().await;
                super::bad_input_and_missing_payments(&*b.store).await;
            }

            #[tokio::test]
            async fn log_and_update_logs_then_transitions() {
                let b = $open().await;
                super::log_and_update_logs_then_transitions(&*b.store).await;
            }

            #[tokio::test]
            async fn list_and_operations_log() {
                let b = $open().await;
                super::list_and_operations_log(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_transitions_apply_once() {
                let b = $open().await;
                super::concurrent_transitions_apply_once(b.store.clone()).await;
            }
        }
    };
}

conformance!(sqlite_backend, sqlite);
#[cfg(feature = "pg-tests")]
conformance!(postgres_backend, postgres);
