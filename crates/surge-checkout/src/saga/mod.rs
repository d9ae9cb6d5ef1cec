//! The checkout saga: its steps, and the pure rule that decides what comes after a
//! step's outcome ([`decide`]). The driver (`driver.rs`) runs steps against the
//! participants and makes each decision durable with a compare-and-set on the order.
//!
//! ```text
//! forward:  hold_stock → authorize → (confirm) → commit_stock → capture → (emit OrderConfirmed) → done
//!                 |            |          ^ point of no return
//!                 |            +-- declined ----------+
//!                 +-- sold out ---------------------+ |
//! backward:                   release_stock ← void_payment ← (cancel, emit OrderCancelled) → done
//! ```
//!
//! `confirm`, `cancel` and the events are local to the orders service: they are written
//! in the same transaction as the result of the step before them. A business failure
//! (sold out, declined) before the point of no return compensates at once; a transient
//! one retries with exponential backoff and full jitter until the step's deadline, then
//! the saga pauses (forward) or goes to manual review (compensation). After the point of
//! no return the saga only moves forward.

pub mod driver;

use surge_store::{Advance, NewEvent, OrderRow, SagaState, StepLog};

/// A step that calls a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Inventory: hold every line.
    HoldStock,
    /// Payments: authorize the total.
    Authorize,
    /// Inventory: turn the holds into sales (after the point of no return).
    CommitStock,
    /// Payments: capture the authorization (after the point of no return).
    Capture,
    /// Compensation — payments: void the authorization (if any).
    VoidPayment,
    /// Compensation — inventory: release the holds (if any).
    ReleaseStock,
    /// Nothing left to run.
    Finished,
}

impl Step {
    /// Every step, in saga order.
    pub const ALL: [Step; 7] = [
        Step::HoldStock,
        Step::Authorize,
        Step::CommitStock,
        Step::Capture,
        Step::VoidPayment,
        Step::ReleaseStock,
        Step::Finished,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::HoldStock => "hold_stock",
            Step::Authorize => "authorize",
            Step::CommitStock => "commit_stock",
            Step::Capture => "capture",
            Step::VoidPayment => "void_payment",
            Step::ReleaseStock => "release_stock",
            Step::Finished => "finished",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }

    /// Whether this step undoes an earlier one.
    pub fn is_compensation(self) -> bool {
        matches!(self, Step::VoidPayment | Step::ReleaseStock)
    }
}

/// What running a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step's effect is in place (now or by an earlier run).
    Done,
    /// A final "no" (sold out, declined): retrying would not help. The text is for
    /// the user.
    Business(String),
    /// It may work later (timeout, database down). The text is for operators.
    Transient(String),
}

/// Timings [`decide`] needs, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Forward steps retry until this long after they started.
    pub step_deadline_ms: i64,
    /// Compensations retry until this long after they started.
    pub compensation_deadline_ms: i64,
    /// First retry delay.
    pub retry_base_ms: i64,
    /// Longest retry delay.
    pub retry_max_ms: i64,
}

/// The longest a backoff exponent goes (2^20 × base is far above any sane maximum).
const MAX_EXPONENT: i64 = 20;

/// Retry delay for the `attempts`-th failure: exponential, capped, with full jitter
/// (`jitter` in [0, 1)), never below 1 ms.
pub fn backoff(timing: &Timing, attempts: i64, jitter: f64) -> i64 {
    let exp = attempts.clamp(1, MAX_EXPONENT) - 1;
    let ceiling = timing
        .retry_base_ms
        .saturating_mul(1_i64 << exp)
        .min(timing.retry_max_ms);
    // Full jitter: uniform in [0, ceiling).
    ((ceiling as f64 * jitter.clamp(0.0, 1.0)) as i64).max(1)
}

fn line(step: &str, outcome: &str, detail: impl Into<String>) -> StepLog {
    StepLog {
        step: step.into(),
        outcome: outcome.into(),
        detail: detail.into(),
        at_ms: 0,
    }
}

fn event(order: &OrderRow, kind: &str, extra: serde_json::Value) -> NewEvent {
    let mut payload = serde_json::json!({
        "event_id": format!("{}:{kind}", order.id),
        "type": kind,
        "order_id": order.id,
        "user_id": order.user_id,
        "market": order.market,
        "total_minor": order.total_minor,
        "currency": order.currency,
    });
    if let (Some(p), serde_json::Value::Object(extra)) = (payload.as_object_mut(), extra) {
        p.extend(extra);
    }
    NewEvent {
        event_id: format!("{}:{kind}", order.id),
        kind: kind.into(),
        order_id: order.id.clone(),
        payload: payload.to_string(),
    }
}

/// The `OrderPlaced` event of a new order.
pub fn order_placed(order: &OrderRow) -> NewEvent {
    event(order, "OrderPlaced", serde_json::Value::Null)
}

/// What comes after `outcome` of the order's current step, at `now_ms`: the move to
/// make durable (its `expected_version` is the order's). `jitter` in [0, 1) spreads
/// retries. Pure: the same inputs give the same move.
pub fn decide(
    order: &OrderRow,
    outcome: &Outcome,
    now_ms: i64,
    t: &Timing,
    jitter: f64,
) -> Advance {
    let step = Step::parse(&order.step).unwrap_or(Step::Finished);
    let mut mv = Advance {
        order_id: order.id.clone(),
        expected_version: order.version,
        ..Advance::default()
    };
    let forward = |mv: &mut Advance, next: Step| {
        mv.step = Some(next.as_str().into());
        mv.attempts = 0;
        mv.next_at_ms = now_ms;
        mv.step_deadline_ms = now_ms.saturating_add(t.step_deadline_ms);
        mv.log.push(line(next.as_str(), "intent", ""));
    };
    let compensate = |mv: &mut Advance, first: Step, reason: &str| {
        mv.saga_state = Some(SagaState::Compensating);
        mv.reason = Some(reason.to_owned());
        mv.step = Some(first.as_str().into());
        mv.attempts = 0;
        mv.next_at_ms = now_ms;
        mv.step_deadline_ms = now_ms.saturating_add(t.compensation_deadline_ms);
        mv.log.push(line(first.as_str(), "intent", ""));
    };
    let name = step.as_str();
    match (outcome, step) {
        (_, Step::Finished) => {
            // Nothing to run: make sure the saga is marked done.
            mv.saga_state = Some(SagaState::Done);
            mv.next_at_ms = now_ms;
            mv.step_deadline_ms = order.step_deadline_ms;
        }
        (Outcome::Transient(why), _) => {
            let attempts = order.attempts.saturating_add(1);
            mv.attempts = attempts;
            mv.step_deadline_ms = order.step_deadline_ms;
            if now_ms >= order.step_deadline_ms {
                let parked = if step.is_compensation() {
                    SagaState::Review
                } else {
                    SagaState::Paused
                };
                mv.saga_state = Some(parked);
                mv.next_at_ms = now_ms;
                mv.log.push(line(
                    name,
                    if parked == SagaState::Review {
                        "review"
                    } else {
                        "paused"
                    },
                    format!("gave up after {attempts} attempts: {why}"),
                ));
            } else {
                mv.next_at_ms = now_ms.saturating_add(backoff(t, attempts, jitter));
                mv.log.push(line(name, "retry", why.clone()));
            }
        }
        (Outcome::Business(why), Step::HoldStock) => {
            mv.log.push(line(name, "failed", why.clone()));
            compensate(&mut mv, Step::ReleaseStock, why);
        }
        (Outcome::Business(why), Step::Authorize) => {
            mv.log.push(line(name, "failed", why.clone()));
            compensate(&mut mv, Step::VoidPayment, why);
        }
        (Outcome::Business(why), _) => {
            // After the point of no return, or a compensation that was refused: only a
            // person can sort this out.
            mv.saga_state = Some(SagaState::Review);
            mv.attempts = order.attempts;
            mv.next_at_ms = now_ms;
            mv.step_deadline_ms = order.step_deadline_ms;
            mv.log.push(line(name, "review", why.clone()));
        }
        (Outcome::Done, Step::HoldStock) => {
            mv.log.push(line(name, "done", ""));
            forward(&mut mv, Step::Authorize);
        }
        (Outcome::Done, Step::Authorize) => {
            // The point of no return: the order is confirmed with the authorization.
            mv.log.push(line(name, "done", ""));
            mv.status = Some("confirmed".into());
            mv.log.push(line("confirm", "done", "point of no return"));
            forward(&mut mv, Step::CommitStock);
        }
        (Outcome::Done, Step::CommitStock) => {
            mv.log.push(line(name, "done", ""));
            forward(&mut mv, Step::Capture);
        }
        (Outcome::Done, Step::Capture) => {
            mv.log.push(line(name, "done", ""));
            mv.saga_state = Some(SagaState::Done);
            mv.step = Some(Step::Finished.as_str().into());
            mv.next_at_ms = now_ms;
            mv.step_deadline_ms = now_ms;
            mv.events
                .push(event(order, "OrderConfirmed", serde_json::Value::Null));
        }
        (Outcome::Done, Step::VoidPayment) => {
            mv.log.push(line(name, "compensated", ""));
            mv.step = Some(Step::ReleaseStock.as_str().into());
            mv.next_at_ms = now_ms;
            mv.step_deadline_ms = now_ms.saturating_add(t.compensation_deadline_ms);
            mv.log.push(line(Step::ReleaseStock.as_str(), "intent", ""));
        }
        (Outcome::Done, Step::ReleaseStock) => {
            mv.log.push(line(name, "compensated", ""));
            mv.status = Some("cancelled".into());
            mv.log.push(line(
                "cancel",
                "done",
                order.reason.clone().unwrap_or_default(),
            ));
            mv.saga_state = Some(SagaState::Done);
            mv.step = Some(Step::Finished.as_str().into());
            mv.next_at_ms = now_ms;
            mv.step_deadline_ms = now_ms;
            mv.events.push(event(
                order,
                "OrderCancelled",
                serde_json::json!({ "reason": order.reason }),
            ));
        }
    }
    mv
}

/// An operator's "retry": a paused saga, or one in manual review, runs its current step
/// again with a fresh deadline. `None` when the saga is not parked.
pub fn resume(order: &OrderRow, now_ms: i64, t: &Timing, actor: &str) -> Option<Advance> {
    if !matches!(order.saga_state, SagaState::Paused | SagaState::Review) {
        return None;
    }
    let step = Step::parse(&order.step)?;
    let (state, deadline) = if step.is_compensation() {
        (SagaState::Compensating, t.compensation_deadline_ms)
    } else {
        (SagaState::Running, t.step_deadline_ms)
    };
    Some(Advance {
        order_id: order.id.clone(),
        expected_version: order.version,
        saga_state: Some(state),
        attempts: 0,
        next_at_ms: now_ms,
        step_deadline_ms: now_ms.saturating_add(deadline),
        log: vec![line(step.as_str(), "resumed", format!("by {actor}"))],
        ..Advance::default()
    })
}

/// Compensates a saga that has not reached the point of no return (an operator's
/// "force-compensate", or the sweeper when its holds expired): void, release, cancel
/// with `reason`. `None` when the order is confirmed or the saga is done or already
/// compensating.
pub fn force_compensate(
    order: &OrderRow,
    reason: &str,
    now_ms: i64,
    t: &Timing,
) -> Option<Advance> {
    if order.status != "pending"
        || matches!(order.saga_state, SagaState::Done | SagaState::Compensating)
    {
        return None;
    }
    Some(Advance {
        order_id: order.id.clone(),
        expected_version: order.version,
        saga_state: Some(SagaState::Compensating),
        step: Some(Step::VoidPayment.as_str().into()),
        reason: Some(reason.to_owned()),
        attempts: 0,
        next_at_ms: now_ms,
        step_deadline_ms: now_ms.saturating_add(t.compensation_deadline_ms),
        log: vec![
            line(&order.step, "abandoned", reason),
            line(Step::VoidPayment.as_str(), "intent", ""),
        ],
        ..Advance::default()
    })
}

/// Applies a move to a copy of the order as the store would (for tests and for
/// reasoning about moves without a store).
pub fn apply(order: &OrderRow, mv: &Advance) -> OrderRow {
    let mut o = order.clone();
    if let Some(s) = mv.saga_state {
        o.saga_state = s;
    }
    if let Some(s) = &mv.step {
        o.step = s.clone();
    }
    if let Some(s) = &mv.status {
        o.status = s.clone();
    }
    if let Some(r) = &mv.reason {
        o.reason = Some(r.clone());
    }
    o.attempts = mv.attempts;
    o.next_at_ms = mv.next_at_ms;
    o.step_deadline_ms = mv.step_deadline_ms;
    o.version += 1;
    o
}

#[cfg(test)]
mod tests;
