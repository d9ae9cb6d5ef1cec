//! Property tests of the saga state machine: whatever the participants answer, in
//! whatever order, and wherever the process crashes (a decided move that never became
//! durable), a saga ends terminal once the participants recover (and an operator resumes
//! what was parked), compensates in reverse order, and never goes back after the point
//! of no return.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use surge_store::{OrderRow, SagaState};

use super::*;

const T: Timing = Timing {
    step_deadline_ms: 1_000,
    compensation_deadline_ms: 2_000,
    retry_base_ms: 10,
    retry_max_ms: 200,
};

fn new_order() -> OrderRow {
    OrderRow {
        id: "o1".into(),
        user_id: "u1".into(),
        market: "DE".into(),
        currency: "EUR".into(),
        total_minor: 100,
        document: "{}".into(),
        status: "pending".into(),
        reason: None,
        saga_state: SagaState::Running,
        step: Step::HoldStock.as_str().into(),
        attempts: 0,
        next_at_ms: 0,
        step_deadline_ms: T.step_deadline_ms,
        lease_owner: "n".into(),
        lease_until_ms: 0,
        version: 1,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

#[derive(Debug, Clone)]
enum Event {
    Done,
    Business,
    Transient,
    /// The process dies after the step ran, before its result was durable.
    Crash,
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Event::Done),
            1 => Just(Event::Business),
            3 => Just(Event::Transient),
            1 => Just(Event::Crash),
        ],
        0..60,
    )
}

/// Drives a saga with `script` first, then with participants that always succeed and an
/// operator who resumes parked sagas. Returns the final order and every step run.
fn run(script: &[Event], jitter: f64) -> (OrderRow, Vec<(Step, SagaState, String)>) {
    let mut order = new_order();
    let mut now = 0_i64;
    let mut ran = Vec::new();
    let mut script = script.iter();
    for _ in 0..10_000 {
        match order.saga_state {
            SagaState::Done => return (order, ran),
            SagaState::Paused | SagaState::Review => {
                let mv = resume(&order, now, &T, "test").expect("parked sagas resume");
                order = apply(&order, &mv);
                continue;
            }
            SagaState::Running | SagaState::Compensating => {}
        }
        now = now.max(order.next_at_ms) + 1;
        let step = Step::parse(&order.step).unwrap();
        ran.push((step, order.saga_state, order.status.clone()));
        let outcome = match script.next() {
            Some(Event::Crash) => continue, // the move is lost; the step runs again
            Some(Event::Business) => Outcome::Business("no".into()),
            Some(Event::Transient) => Outcome::Transient("later".into()),
            Some(Event::Done) | None => Outcome::Done,
        };
        let mv = decide(&order, &outcome, now, &T, jitter);
        assert_eq!(mv.expected_version, order.version);
        // After the point of no return, nothing compensates or cancels.
        if order.status == "confirmed" {
            assert_ne!(mv.saga_state, Some(SagaState::Compensating));
            assert_ne!(mv.status.as_deref(), Some("cancelled"));
        }
        order = apply(&order, &mv);
    }
    panic!("the saga did not end: {order:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_saga_ends_terminal_and_compensates_in_reverse(script in events(), jitter in 0.0..1.0f64) {
        let (order, ran) = run(&script, jitter);
        prop_assert_eq!(order.saga_state, SagaState::Done);
        let steps: Vec<Step> = ran.iter().map(|r| r.0).collect();
        let first = |s: Step| steps.iter().position(|x| *x == s);
        match order.status.as_str() {
            "confirmed" => {
                // Every forward step ran, in order; no compensation ever ran.
                let (h, a, c, p) = (
                    first(Step::HoldStock).unwrap(),
                    first(Step::Authorize).unwrap(),
                    first(Step::CommitStock).unwrap(),
                    first(Step::Capture).unwrap(),
                );
                prop_assert!(h < a && a < c && c < p);
                prop_assert!(!steps.iter().any(|s| s.is_compensation()));
            }
            "cancelled" => {
                prop_assert!(order.reason.is_some(), "a cancelled order says why");
                // Never reached the point of no return.
                prop_assert!(first(Step::CommitStock).is_none() && first(Step::Capture).is_none());
                // Release always runs; void runs before it whenever authorize was tried.
                let release = first(Step::ReleaseStock).unwrap();
                if first(Step::Authorize).is_some() {
                    let void = first(Step::VoidPayment).unwrap();
                    prop_assert!(void < release);
                }
                // Compensations come after every forward step.
                let last_forward = steps.iter().rposition(|s| !s.is_compensation());
                let first_comp = steps.iter().position(|s| s.is_compensation()).unwrap();
                prop_assert!(last_forward.is_none_or(|l| l < first_comp));
            }
            other => prop_assert!(false, "status {other}"),
        }
    }

    #[test]
    fn backoff_grows_within_bounds(attempts in 0..100i64, jitter in 0.0..1.0f64) {
        let d = backoff(&T, attempts, jitter);
        prop_assert!((1..=T.retry_max_ms).contains(&d));
        let exp = attempts.clamp(1, 20) - 1;
        let ceiling = (T.retry_base_ms << exp).min(T.retry_max_ms);
        prop_assert!(d <= ceiling.max(1));
    }
}

#[test]
fn transient_failures_park_at_the_deadline() {
    let mut order = new_order();
    let mut now = 1;
    while order.saga_state == SagaState::Running {
        let mv = decide(&order, &Outcome::Transient("db down".into()), now, &T, 0.5);
        order = apply(&order, &mv);
        now = order.next_at_ms + 1;
    }
    assert_eq!(order.saga_state, SagaState::Paused);
    assert_eq!(order.step, "hold_stock", "paused where it was");
    assert!(order.attempts > 3);
    // A compensation that keeps failing goes to manual review, not to success.
    let mut comp = force_compensate(&order, "stuck", now, &T).unwrap();
    comp.expected_version = order.version;
    order = apply(&order, &comp);
    assert_eq!(order.saga_state, SagaState::Compensating);
    while order.saga_state == SagaState::Compensating {
        let mv = decide(&order, &Outcome::Transient("psp down".into()), now, &T, 0.5);
        order = apply(&order, &mv);
        now = order.next_at_ms + 1;
    }
    assert_eq!(order.saga_state, SagaState::Review);
    assert_eq!(order.status, "pending");
}

#[test]
fn a_confirmed_order_cannot_be_force_compensated() {
    let mut order = new_order();
    order.status = "confirmed".into();
    order.saga_state = SagaState::Paused;
    order.step = "capture".into();
    assert!(force_compensate(&order, "x", 0, &T).is_none());
    // It can only be resumed forward.
    let mv = resume(&order, 0, &T, "ops").unwrap();
    assert_eq!(mv.saga_state, Some(SagaState::Running));
}

#[test]
fn a_decline_after_authorize_compensates_with_a_readable_reason() {
    let mut order = new_order();
    order = apply(&order, &decide(&order, &Outcome::Done, 1, &T, 0.5));
    assert_eq!(order.step, "authorize");
    let mv = decide(
        &order,
        &Outcome::Business("the card was declined".into()),
        2,
        &T,
        0.5,
    );
    order = apply(&order, &mv);
    assert_eq!(
        (order.saga_state, order.step.as_str()),
        (SagaState::Compensating, "void_payment")
    );
    order = apply(&order, &decide(&order, &Outcome::Done, 3, &T, 0.5));
    assert_eq!(order.step, "release_stock");
    let last = decide(&order, &Outcome::Done, 4, &T, 0.5);
    assert_eq!(last.events[0].kind, "OrderCancelled");
    assert!(last.events[0].payload.contains("the card was declined"));
    order = apply(&order, &last);
    assert_eq!(
        (order.saga_state, order.status.as_str()),
        (SagaState::Done, "cancelled")
    );
}
