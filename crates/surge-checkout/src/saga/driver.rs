//! The orchestrator: drives each saga to a terminal state and keeps driving after a
//! crash.
//!
//! A saga is driven by one task at a time. `POST /checkout` starts that task right
//! after the order is created; the task runs a step, asks [`super::decide`] what comes
//! next and makes the answer durable with [`OrdersStore::advance`] (a compare-and-set
//! that also renews this node's lease), then runs the next step, sleeping through retry
//! delays itself. The task belongs to the orchestrator, not to the request: a client
//! that hangs up does not stop its saga.
//!
//! Recovery: a poller claims sagas whose lease ran out (their node died) and, once
//! after start, every saga this node owned before it stopped that is due within a lease
//! (one queued for a later fulfilment minute waits until it is due). A sweeper turns
//! expired holds into compensations (before the point of no return) or sales (after
//! it), forgets idempotency keys past their retention and deletes checkout outbox
//! events past theirs. Steps are idempotent, so a step that
//! ran but whose result was lost to a crash just runs again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use surge_store::{AuditEntry, KeyResponse, OrderRow, OrdersStore, SagaState, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{Outcome, Step, Timing, decide, force_compensate, resume};
use crate::config::CheckoutConfig;
use crate::metrics;
use crate::order::{OrderDocument, OrderView};
use crate::payments::{AuthorizeRequest, PaymentError};
use crate::services::{InventoryApi, PaymentsApi, ServiceError};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    surge_http::envelope::now_ms()
}

/// Most sagas claimed by one poll.
const CLAIM_BATCH: usize = 256;
/// Most expired holds handled by one sweep.
const SWEEP_BATCH: u32 = 500;
/// Most idempotency keys deleted by one sweep.
const PURGE_BATCH: u32 = 5_000;

/// Why an operator's action on a saga was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such order.
    #[error("no such order")]
    NotFound,
    /// The saga is not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The saga orchestrator (cheap to clone).
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    orders: Arc<dyn OrdersStore>,
    inventory: Arc<dyn InventoryApi>,
    payments: Arc<dyn PaymentsApi>,
    timing: Timing,
    node: String,
    lease_ms: i64,
    hold_ms: i64,
    poll: Duration,
    sweep: Duration,
    stuck_after_ms: i64,
    /// How long events are kept in the checkout outbox.
    event_retention_ms: i64,
    active: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// Bumped whenever a saga driven here moves (for waiting on progress).
    progress: watch::Sender<u64>,
}

/// Removes a saga from the active set when its task ends, however it ends.
struct Active {
    inner: Arc<Inner>,
    id: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&self.id);
        ::metrics::gauge!(metrics::ACTIVE_SAGAS).set(active.len() as f64);
    }
}

/// A duration in ms as the stores' i64, saturating.
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Orchestrator {
    /// An orchestrator over the orders store and the two other services (in this
    /// process or remote). `stop` ends the drivers between steps (their sagas are taken
    /// up again at the next start).
    pub fn new(
        orders: Arc<dyn OrdersStore>,
        inventory: Arc<dyn InventoryApi>,
        payments: Arc<dyn PaymentsApi>,
        config: &CheckoutConfig,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let s = &config.saga;
        Orchestrator {
            inner: Arc::new(Inner {
                orders,
                inventory,
                payments,
                timing: Timing {
                    step_deadline_ms: ms(s.step_deadline_ms),
                    compensation_deadline_ms: ms(s.compensation_deadline_ms),
                    retry_base_ms: ms(s.retry_base_ms),
                    retry_max_ms: ms(s.retry_max_ms),
                },
                node: config.node_id.clone(),
                lease_ms: ms(s.lease_ms),
                hold_ms: ms(config.hold_ms),
                poll: Duration::from_millis(s.poll_ms),
                sweep: Duration::from_millis(s.sweep_ms),
                stuck_after_ms: ms(s.stuck_after_ms),
                event_retention_ms: ms(config.event_retention_ms),
                active: Mutex::default(),
                permits: Arc::new(Semaphore::new(s.max_active)),
                stop,
                progress: watch::Sender::new(0),
            }),
        }
    }

    /// The orders store.
    pub fn orders(&self) -> &Arc<dyn OrdersStore> {
        &self.inner.orders
    }

    /// The inventory service (in this process or remote).
    pub fn inventory(&self) -> &Arc<dyn InventoryApi> {
        &self.inner.inventory
    }

    /// This node's name in leases.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// A counter that moves whenever a saga driven by this process moves: wait on
    /// `changed()` instead of polling the store.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.inner.progress.subscribe()
    }

    /// The saga timings.
    pub fn timing(&self) -> Timing {
        self.inner.timing
    }

    /// How long this node's claim lasts, in ms.
    pub fn lease_ms(&self) -> i64 {
        self.inner.lease_ms
    }

    /// A saga older than this (ms since its last change) and not done is stuck.
    pub fn stuck_after_ms(&self) -> i64 {
        self.inner.stuck_after_ms
    }

    /// A slot to drive one more saga, or `None` when `max_active` are running.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.permits.clone().try_acquire_owned().ok()
    }

    /// Starts driving `order` in its own task (unless this process drives it already).
    /// The task ends with the saga parked or done (its last row), or `None` when it
    /// stopped early (shutdown, or another driver moved the saga).
    pub fn start(
        &self,
        order: OrderRow,
        slot: OwnedSemaphorePermit,
    ) -> Option<tokio::task::JoinHandle<Option<OrderRow>>> {
        {
            let mut active = self.inner.active.lock().unwrap_or_else(|p| p.into_inner());
            if !active.insert(order.id.clone()) {
                return None;
            }
            ::metrics::gauge!(metrics::ACTIVE_SAGAS).set(active.len() as f64);
        }
        let guard = Active {
            inner: self.inner.clone(),
            id: order.id.clone(),
            _permit: slot,
        };
        let this = self.clone();
        Some(tokio::spawn(async move {
            let _guard = guard;
            this.drive(order).await
        }))
    }

    fn is_active(&self, id: &str) -> bool {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    async fn drive(&self, mut order: OrderRow) -> Option<OrderRow> {
        let inner = &self.inner;
        let mut stop = inner.stop.clone();
        let mut store_failures = 0_i64;
        // The document never changes after the order is created: read it once.
        let doc = serde_json::from_str::<OrderDocument>(&order.document).map_err(|e| {
            tracing::error!(order = %order.id, error = %e, "unreadable order document");
        });
        loop {
            if !matches!(
                order.saga_state,
                SagaState::Running | SagaState::Compensating
            ) {
                return Some(order);
            }
            if *stop.borrow() {
                return None;
            }
            let wait = order.next_at_ms.saturating_sub(now_ms());
            if wait > 0 {
                let nap = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                tokio::select! {
                    () = tokio::time::sleep(nap) => {}
                    _ = stop.changed() => return None,
                }
            }
            let step = Step::parse(&order.step).unwrap_or(Step::Finished);
            let outcome = match &doc {
                Ok(doc) => self.run_step(step, &order, doc).await,
                Err(()) => Outcome::Business("the order could not be read".into()),
            };
            let label = match &outcome {
                Outcome::Done => "done",
                Outcome::Business(_) => "business",
                Outcome::Transient(_) => "transient",
            };
            ::metrics::counter!(metrics::STEPS_TOTAL, "step" => step.as_str(), "outcome" => label)
                .increment(1);
            let now = now_ms();
            let mut mv = decide(&order, &outcome, now, &inner.timing, rand::random());
            mv.lease = Some((inner.node.clone(), now.saturating_add(inner.lease_ms)));
            if mv.saga_state == Some(SagaState::Done) {
                // The order's answer goes on its key in the same transaction, so the
                // request waiting for it has nothing left to write.
                mv.response = doc
                    .as_ref()
                    .ok()
                    .and_then(|doc| final_answer(&order, doc, &mv));
            }
            match inner.orders.advance(&mv).await {
                Ok(Some(next)) => {
                    store_failures = 0;
                    inner.progress.send_modify(|n| *n = n.wrapping_add(1));
                    observe(&order, &next);
                    if next.saga_state == SagaState::Done
                        && next.status == "cancelled"
                        && let Err(e) = inner.orders.return_slot(&next.id).await
                    {
                        // The slot stays taken: capacity goes unused, never exceeded.
                        tracing::warn!(order = %next.id, error = %e, "cannot give a cancelled order's fulfilment slot back");
                    }
                    order = next;
                }
                // Someone else moved it (an operator, the sweeper, another node).
                Ok(None) => return inner.orders.order(&order.id).await.ok().flatten(),
                Err(e) => {
                    // The result may or may not be durable: wait, read the row back, and
                    // carry on from whatever it says (a step re-run has no second effect).
                    store_failures += 1;
                    tracing::warn!(order = %order.id, error = %e, "cannot record a saga step");
                    let nap = super::backoff(&inner.timing, store_failures, rand::random());
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(u64::try_from(nap).unwrap_or(1))) => {}
                        _ = stop.changed() => return None,
                    }
                    if let Ok(Some(row)) = inner.orders.order(&order.id).await {
                        if row.version != order.version && row.lease_owner != inner.node {
                            return Some(row);
                        }
                        order = row;
                    }
                }
            }
        }
    }

    async fn run_step(&self, step: Step, order: &OrderRow, doc: &OrderDocument) -> Outcome {
        let inner = &self.inner;
        let transient = |e: &dyn std::fmt::Display| Outcome::Transient(e.to_string());
        match step {
            Step::HoldStock => {
                let expires = now_ms().saturating_add(inner.hold_ms);
                match inner
                    .inventory
                    .hold(&order.id, &doc.hold_lines(&order.market), expires)
                    .await
                {
                    Ok(surge_store::HoldOutcome::Held) => Outcome::Done,
                    Ok(surge_store::HoldOutcome::OutOfStock { sku, .. }) => {
                        Outcome::Business(format!("{sku} is sold out"))
                    }
                    Ok(surge_store::HoldOutcome::Settled) => {
                        Outcome::Business("the reservation of this order expired".into())
                    }
                    Err(e) => transient(&e),
                }
            }
            Step::Authorize => {
                let request = AuthorizeRequest {
                    order_id: order.id.clone(),
                    amount_minor: order.total_minor,
                    currency: order.currency.clone(),
                    method_token: doc.payment_method.clone(),
                };
                payment_outcome(inner.payments.authorize(&request).await)
            }
            Step::CommitStock => match inner.inventory.commit(&order.id).await {
                Ok(_) => Outcome::Done,
                Err(e) => transient(&e),
            },
            Step::Capture => payment_outcome(inner.payments.capture(&order.id).await),
            Step::VoidPayment => payment_outcome(inner.payments.void(&order.id).await),
            Step::ReleaseStock => match inner
                .inventory
                .release(&order.id, &doc.hold_lines(&order.market))
                .await
            {
                Ok(_) => Outcome::Done,
                Err(e) => transient(&e),
            },
            Step::Finished => Outcome::Done,
        }
    }

    /// Runs the poller and the sweeper until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(self.inner.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(self.inner.sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reclaim_own = true;
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    match self.poll_once(reclaim_own).await {
                        Ok(full) => reclaim_own = reclaim_own && full,
                        Err(e) => tracing::warn!(error = %e, "cannot claim due sagas"),
                    }
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep_once().await {
                        tracing::warn!(error = %e, "cannot sweep expired holds");
                    }
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Claims due sagas (with `reclaim_own`, every saga this node owned that is due
    /// within a lease) and starts them. Returns whether the batch was full (there may
    /// be more).
    pub async fn poll_once(&self, reclaim_own: bool) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let free = inner.permits.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            return Ok(true);
        }
        let now = now_ms();
        let due = inner
            .orders
            .claim_due(
                &inner.node,
                now,
                now.saturating_add(inner.lease_ms),
                reclaim_own,
                u32::try_from(free).unwrap_or(u32::MAX),
            )
            .await?;
        let full = due.len() == free;
        for order in due {
            if self.is_active(&order.id) {
                continue;
            }
            let Some(slot) = self.try_slot() else { break };
            ::metrics::counter!(metrics::SAGAS_RESUMED_TOTAL).increment(1);
            tracing::info!(order = %order.id, step = %order.step, "resuming saga");
            drop(self.start(order, slot));
        }
        Ok(full)
    }

    /// Acts on expired holds, forgets expired idempotency keys and deletes checkout
    /// outbox events past their retention (the inventory service prunes its own:
    /// [`crate::inventory::Inventory::upkeep`]). Returns the number of expired holds
    /// acted on.
    pub async fn sweep_once(&self) -> Result<usize, ServiceError> {
        let inner = &self.inner;
        let now = now_ms();
        let expired = inner.inventory.expired_holds(now, SWEEP_BATCH).await?;
        let mut acted = 0;
        for id in expired {
            if self.is_active(&id) {
                continue;
            }
            let order = inner.orders.order(&id).await?;
            let action = match &order {
                // A hold without an order (or of a cancelled one): give it back.
                None => {
                    inner.inventory.release(&id, &[]).await?;
                    "release"
                }
                Some(o) if o.status == "cancelled" => {
                    inner.inventory.release(&id, &[]).await?;
                    "release"
                }
                // Past the point of no return the units are sold, whatever the saga does.
                Some(o) if o.status == "confirmed" => {
                    inner.inventory.commit(&id).await?;
                    "commit"
                }
                // Another node is driving it.
                Some(o) if o.lease_until_ms > now && o.lease_owner != inner.node => continue,
                Some(o) => {
                    let Some(mut mv) = force_compensate(
                        o,
                        "the reservation expired before the payment went through",
                        now,
                        &inner.timing,
                    ) else {
                        continue;
                    };
                    mv.lease = Some((inner.node.clone(), now.saturating_add(inner.lease_ms)));
                    if let Some(next) = inner.orders.advance(&mv).await?
                        && let Some(slot) = self.try_slot()
                    {
                        drop(self.start(next, slot));
                    }
                    "compensate"
                }
            };
            ::metrics::counter!(metrics::EXPIRED_HOLDS_TOTAL, "action" => action).increment(1);
            acted += 1;
        }
        // Slots of past minutes can no longer be given back usefully.
        inner.orders.prune_slots(now.div_euclid(60_000) - 1).await?;
        let purged = inner.orders.purge_keys(now, PURGE_BATCH).await?;
        if purged > 0 {
            tracing::debug!(purged, "forgot expired idempotency keys");
        }
        let pruned = inner
            .orders
            .prune_events(now.saturating_sub(inner.event_retention_ms), PURGE_BATCH)
            .await?;
        if pruned > 0 {
            tracing::debug!(pruned, "deleted outbox events past their retention");
        }
        Ok(acted)
    }

    /// An operator's "retry" of a paused saga or one in manual review.
    pub async fn retry(&self, id: &str, actor: &str, note: &str) -> Result<OrderRow, AdminError> {
        let order = self
            .inner
            .orders
            .order(id)
            .await?
            .ok_or(AdminError::NotFound)?;
        let now = now_ms();
        let mut mv = resume(&order, now, &self.inner.timing, actor).ok_or_else(|| {
            AdminError::Conflict(format!(
                "the saga is {}, only paused sagas and those in review can be retried",
                order.saga_state.as_str()
            ))
        })?;
        mv.lease = Some((
            self.inner.node.clone(),
            now.saturating_add(self.inner.lease_ms),
        ));
        self.operate(order, mv, actor, "retry", note).await
    }

    /// An operator's "force-compensate" of a saga before the point of no return.
    pub async fn force_compensate(
        &self,
        id: &str,
        actor: &str,
        note: &str,
    ) -> Result<OrderRow, AdminError> {
        let order = self
            .inner
            .orders
            .order(id)
            .await?
            .ok_or(AdminError::NotFound)?;
        let now = now_ms();
        let reason = "the order was cancelled by the shop";
        let mut mv = force_compensate(&order, reason, now, &self.inner.timing).ok_or_else(|| {
            AdminError::Conflict(format!(
                "the order is {} and its saga {}: only pending orders whose saga is not already \
                 compensating can be compensated",
                order.status,
                order.saga_state.as_str()
            ))
        })?;
        mv.lease = Some((
            self.inner.node.clone(),
            now.saturating_add(self.inner.lease_ms),
        ));
        self.operate(order, mv, actor, "force_compensate", note)
            .await
    }

    async fn operate(
        &self,
        order: OrderRow,
        mv: surge_store::Advance,
        actor: &str,
        action: &str,
        note: &str,
    ) -> Result<OrderRow, AdminError> {
        if self.is_active(&order.id) {
            return Err(AdminError::Conflict(
                "the saga is being driven right now; try again when it has paused".into(),
            ));
        }
        let next = self.inner.orders.advance(&mv).await?.ok_or_else(|| {
            AdminError::Conflict("the saga moved meanwhile; look at it again".into())
        })?;
        self.inner
            .orders
            .audit(&AuditEntry {
                order_id: order.id.clone(),
                actor: actor.to_owned(),
                action: action.to_owned(),
                note: note.to_owned(),
                at_ms: 0,
            })
            .await?;
        tracing::info!(order = %order.id, actor, action, "operator action on a saga");
        if let Some(slot) = self.try_slot() {
            drop(self.start(next.clone(), slot));
        }
        Ok(next)
    }
}

/// The answer to the order's checkout once `mv` has applied (see
/// [`crate::order::checkout_answer`]), or `None` when it cannot be rendered (then the
/// move stores no answer, and the key is answered from the order once its lock lapses).
fn final_answer(
    order: &OrderRow,
    doc: &OrderDocument,
    mv: &surge_store::Advance,
) -> Option<KeyResponse> {
    let mut view = OrderView::new(order, doc, None);
    if let Some(status) = &mv.status {
        view.status = status;
    }
    if let Some(reason) = &mv.reason {
        view.reason = Some(reason);
    }
    let (status, body) = crate::order::checkout_answer(&view).ok()?;
    Some(KeyResponse {
        user_id: order.user_id.clone(),
        status,
        content_type: "application/json".into(),
        body,
    })
}

fn payment_outcome(r: Result<(), PaymentError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(PaymentError::Declined { reason }) => {
            Outcome::Business(format!("the payment was declined: {reason}"))
        }
        Err(PaymentError::Conflict(why)) => Outcome::Business(why),
        Err(e) => Outcome::Transient(e.to_string()),
    }
}

fn observe(before: &OrderRow, after: &OrderRow) {
    if after.saga_state == before.saga_state {
        return;
    }
    match after.saga_state {
        SagaState::Done => {
            let status = if after.status == "confirmed" {
                "confirmed"
            } else {
                "cancelled"
            };
            ::metrics::counter!(metrics::SAGAS_FINISHED_TOTAL, "status" => status).increment(1);
            let took = (after.updated_at_ms - after.created_at_ms).max(0) as f64 / 1000.0;
            ::metrics::histogram!(metrics::SAGA_SECONDS, "status" => status).record(took);
        }
        SagaState::Paused | SagaState::Review => {
            tracing::warn!(order = %after.id, step = %after.step, state = after.saga_state.as_str(), "saga parked");
            ::metrics::counter!(metrics::SAGAS_PARKED_TOTAL, "state" => after.saga_state.as_str())
                .increment(1);
        }
        SagaState::Running | SagaState::Compensating => {}
    }
}
