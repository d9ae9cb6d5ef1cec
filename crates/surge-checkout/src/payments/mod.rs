//! Checkout's payments service: authorizes, captures, voids and refunds the payment of
//! an order, in front of a [`PaymentProvider`], keeping its own record in a
//! [`PaymentsStore`]. The saga orchestrator calls [`Payments`] in-process.
//!
//! ## Why it cannot charge twice
//! Every provider call carries an idempotency key derived from the order and the step
//! (`{order}:authorize`, `{order}:capture`, `{order}:void`, `{order}:refund:{n}`), and
//! the provider replays the first result of a key with no second effect. Every store
//! write is a conditional transition that reports what is there when it does not apply.
//! So any call can be re-run — after a timeout, an error, or a crash between the
//! provider's answer and the store write — and it ends where one run would have:
//! - **authorize** records `authorizing` *before* calling the provider. A retry calls the
//!   provider again with the same key, which replays the authorization if the first
//!   call happened but its reply was lost.
//! - **void** of a payment still `authorizing` (the authorize reply was lost) asks the
//!   provider ([`PaymentProvider::find`]) whether that key made an authorization, and
//!   voids it if so. If it finds none it writes `voided` while the payment is still
//!   `authorizing` (or a tombstone when there is no payment), so a late authorize is
//!   refused. An authorize whose answer arrives after such a void voids its own
//!   authorization.
//! - **capture** captures the authorized amount under one key, so two captures at once,
//!   or a re-run after a crash, capture once.
//! - **refund** `n` is keyed by the number of refunds already recorded; see
//!   [`Payments::refund`].
//!
//! What is left: a process that dies between an authorization at the provider and the
//! void that an earlier void's tombstone obliges it to do leaves an authorization
//! nobody captures; the provider releases it when it expires. It is never captured,
//! because captures start only from a payment recorded `authorized`.

pub mod metrics;
pub mod provider;
pub mod simulator;

use std::sync::Arc;
use std::time::Instant;

use surge_store::{PaymentOperation, PaymentUpdate, PaymentsStore, StoreError, Transition};

pub use surge_store::{PaymentRecord, PaymentState};

use provider::{PaymentProvider, ProviderError};

/// What to authorize for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The order; one payment per order.
    pub order_id: String,
    /// The amount in minor units (cents), > 0.
    pub amount_minor: i64,
    /// ISO 4217 currency code, e.g. `EUR`.
    pub currency: String,
    /// The provider's token for the buyer's payment method.
    pub method_token: String,
}

/// Why a payments call failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider declined the payment. A business outcome and final: compensate.
    #[error("payment declined: {reason}")]
    Declined {
        /// The provider's reason, e.g. `card_declined`.
        reason: String,
    },
    /// The provider timed out or is unavailable; the outcome may be unknown. Retry
    /// later with the same call.
    #[error("payment provider unavailable, retry: {0}")]
    Transient(String),
    /// The payment's state does not allow the call (capture after void, authorize after
    /// void, refund beyond the capture) or the call contradicts it (another amount for
    /// the same order). Final.
    #[error("payment conflict: {0}")]
    Conflict(String),
    /// The payments store failed. Retry later.
    #[error("payments store: {0}")]
    Store(#[from] StoreError),
}

impl PaymentError {
    /// Whether retrying the same call may succeed: [`Transient`](Self::Transient) and
    /// [`Store`](Self::Store).
    pub fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Transient(_) | PaymentError::Store(_))
    }
}

/// The provider idempotency key of an order's authorization.
pub fn authorize_key(order_id: &str) -> String {
    format!("{order_id}:authorize")
}

/// The provider idempotency key of an order's capture.
pub fn capture_key(order_id: &str) -> String {
    format!("{order_id}:capture")
}

/// The provider idempotency key of an order's void.
pub fn void_key(order_id: &str) -> String {
    format!("{order_id}:void")
}

/// The provider idempotency key of an order's refund number `seq` (from 0).
pub fn refund_key(order_id: &str, seq: i64) -> String {
    format!("{order_id}:refund:{seq}")
}

/// The payments service: a cheap [`Clone`] handle.
#[derive(Clone)]
pub struct Payments {
    store: Arc<dyn PaymentsStore>,
    provider: Arc<dyn PaymentProvider>,
}

/// How many times [`Payments::void`] re-reads a payment that moved under it before
/// giving up with a transient error. States only move forward, so this is enough for
/// the longest path: none → tombstone race → authorized → voided.
const VOID_PASSES: usize = 4;

impl Payments {
    /// A service on `store` in front of `provider`.
    pub fn new(store: Arc<dyn PaymentsStore>, provider: Arc<dyn PaymentProvider>) -> Self {
        Payments { store, provider }
    }

    /// Authorizes `req.amount_minor` for the order. Idempotent per order: a re-run
    /// returns the payment as it is (authorized, or captured/refunded later), `Declined`
    /// again for a declined one, and `Conflict` for a voided order or another amount or
    /// currency. After a [`PaymentError::Transient`] retry with the same request: it
    /// ends authorized exactly once.
    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<PaymentRecord, PaymentError> {
        let order = req.order_id.as_str();
        if order.is_empty() || req.amount_minor <= 0 || req.currency.is_empty() {
            return Err(PaymentError::Conflict(format!(
                "cannot authorize {} {:?} for order {order:?}",
                req.amount_minor, req.currency
            )));
        }
        let current = self
            .store
            .begin_authorize(order, req.amount_minor, &req.currency)
            .await?;
        let current = present(order, current)?;
        if current.state == PaymentState::Voided {
            if current.provider_ref.is_none() && current.amount_minor > 0 {
                // Voided while an authorize was in doubt, finding nothing then: an
                // authorize reply lost after that void may have authorized after all.
                self.void_authorizing(order).await?;
            }
            return Err(PaymentError::Conflict(format!("order {order} was voided")));
        }
        if current.amount_minor != req.amount_minor || current.currency != req.currency {
            return Err(PaymentError::Conflict(format!(
                "order {order} has a payment of {} {}, not {} {}",
                current.amount_minor, current.currency, req.amount_minor, req.currency
            )));
        }
        if current.state != PaymentState::Authorizing {
            return settled_authorization(current);
        }
        let key = authorize_key(order);
        let started = Instant::now();
        let result = self
            .provider
            .authorize(&key, req.amount_minor, &req.currency, &req.method_token)
            .await;
        let outcome = match &result {
            Ok(auth) => format!("ok {}", auth.auth_ref),
            Err(e) => describe(e),
        };
        let call = observe(order, "authorize", &key, started, &result, outcome);
        match result {
            Ok(auth) => {
                let update = PaymentUpdate::Authorized {
                    provider_ref: auth.auth_ref.clone(),
                };
                let recorded = self.store.log_and_update(&call, update).await?;
                self.authorized(order, &auth.auth_ref, recorded).await
            }
            Err(ProviderError::Declined { reason }) => {
                let update = PaymentUpdate::Declined { reason };
                let declined = self.store.log_and_update(&call, update).await?;
                settled_authorization(present(order, declined)?)
            }
            Err(ProviderError::Rejected(msg)) => {
                self.log(&call).await?;
                Err(PaymentError::Conflict(msg))
            }
            Err(e) => {
                self.log(&call).await?;
                // A void may have written `voided` while this call was out, having found
                // no authorization yet: if this call made one after all, void it.
                if let Some(p) = self.store.payment(order).await?
                    && p.state == PaymentState::Voided
                    && p.provider_ref.is_none()
                {
                    self.void_authorizing(order).await?;
                    return Err(PaymentError::Conflict(format!("order {order} was voided")));
                }
                Err(PaymentError::Transient(e.to_string()))
            }
        }
    }

    /// What recording authorization `auth_ref` did; if a void overtook the authorize,
    /// voids it.
    async fn authorized(
        &self,
        order: &str,
        auth_ref: &str,
        recorded: Transition,
    ) -> Result<PaymentRecord, PaymentError> {
        let record = present(order, recorded)?;
        if record.state == PaymentState::Voided {
            tracing::warn!(
                order_id = order,
                auth_ref,
                "authorization arrived after the order was voided; voiding it"
            );
            self.void_at_provider(order, auth_ref).await?;
            return Err(PaymentError::Conflict(format!("order {order} was voided")));
        }
        settled_authorization(record)
    }

    /// Voids the order's payment. Idempotent. An order with no payment gets a `voided`
    /// tombstone, so a later [`authorize`](Self::authorize) returns `Conflict`; a
    /// payment whose authorize reply was lost is looked up at the provider and voided
    /// there. A declined payment needs no void (`Ok`); a captured one cannot be voided
    /// (`Conflict`: refund it).
    pub async fn void(&self, order_id: &str) -> Result<(), PaymentError> {
        for _ in 0..VOID_PASSES {
            let Some(p) = self.store.payment(order_id).await? else {
                self.store.record_voided(order_id, None).await?;
                continue;
            };
            match p.state {
                PaymentState::Voided | PaymentState::Declined => return Ok(()),
                PaymentState::Captured | PaymentState::Refunded => {
                    return Err(PaymentError::Conflict(format!(
                        "order {order_id} is {}; refund it instead",
                        p.state
                    )));
                }
                PaymentState::Authorized => {
                    let auth_ref = provider_ref(&p)?;
                    self.void_at_provider(order_id, &auth_ref).await?;
                }
                PaymentState::Authorizing => self.void_authorizing(order_id).await?,
            }
        }
        Err(PaymentError::Transient(format!(
            "the payment of order {order_id} kept changing while voiding it"
        )))
    }

    /// Voids whatever authorization the order's authorize key made at the provider, or
    /// records that there is none.
    async fn void_authorizing(&self, order: &str) -> Result<(), PaymentError> {
        let key = authorize_key(order);
        let started = Instant::now();
        let found = self.provider.find(&key).await;
        let outcome = match &found {
            Ok(Some(auth)) => format!("found {}", auth.auth_ref),
            Ok(None) => "not found".into(),
            Err(e) => describe(e),
        };
        let call = observe(order, "find", &key, started, &found, outcome);
        if let Ok(None) = found {
            let update = PaymentUpdate::Voided { provider_ref: None };
            self.store.log_and_update(&call, update).await?;
            return Ok(());
        }
        self.log(&call).await?;
        match found.map_err(provider_failure)? {
            Some(auth) => self.void_at_provider(order, &auth.auth_ref).await,
            None => {
                self.store.record_voided(order, None).await?;
                Ok(())
            }
        }
    }

    /// Voids `auth_ref` at the provider, then records it.
    async fn void_at_provider(&self, order: &str, auth_ref: &str) -> Result<(), PaymentError> {
        let key = void_key(order);
        let started = Instant::now();
        let result = self.provider.void(&key, auth_ref).await;
        let outcome = result.as_ref().map_or_else(describe, |_| "ok".into());
        let call = observe(order, "void", &key, started, &result, outcome);
        if let Err(e) = result {
            self.log(&call).await?;
            return Err(provider_failure(e));
        }
        let update = PaymentUpdate::Voided {
            provider_ref: Some(auth_ref.to_owned()),
        };
        self.store.log_and_update(&call, update).await?;
        Ok(())
    }

    /// Captures the authorized amount. Idempotent: a re-run (or a concurrent call)
    /// returns the captured payment and the provider captures once. `Conflict` unless
    /// the payment is authorized (or captured already).
    pub async fn capture(&self, order_id: &str) -> Result<PaymentRecord, PaymentError> {
        let p = self.existing(order_id).await?;
        match p.state {
            PaymentState::Captured | PaymentState::Refunded => return Ok(p),
            PaymentState::Authorized => {}
            other => {
                return Err(PaymentError::Conflict(format!(
                    "order {order_id} is {other}, not authorized"
                )));
            }
        }
        let auth_ref = provider_ref(&p)?;
        let key = capture_key(order_id);
        let started = Instant::now();
        let result = self.provider.capture(&key, &auth_ref, p.amount_minor).await;
        let outcome = result.as_ref().map_or_else(describe, |_| "ok".into());
        let call = observe(order_id, "capture", &key, started, &result, outcome);
        if let Err(e) = result {
            self.log(&call).await?;
            return Err(provider_failure(e));
        }
        let update = PaymentUpdate::Captured {
            amount_minor: p.amount_minor,
        };
        let captured = self.store.log_and_update(&call, update).await?;
        let record = present(order_id, captured)?;
        match record.state {
            PaymentState::Captured | PaymentState::Refunded => Ok(record),
            other => Err(PaymentError::Conflict(format!(
                "order {order_id} is {other} after the provider captured it"
            ))),
        }
    }

    /// Refunds `amount_minor` (> 0) of what was captured; the total refunded never
    /// exceeds the capture (`Conflict`).
    ///
    /// Refunds are numbered per order and refund `n` is sent under key
    /// `{order}:refund:{n}`, `n` being the number of refunds recorded so far. So a call
    /// retried after [`PaymentError::Transient`] (or after a crash before the store
    /// recorded it) completes the same refund once; a refund with another amount while
    /// one is in doubt gets `Conflict` until that one is retried. Once a call has
    /// returned `Ok`, calling again is a *new* refund: the API has no refund id, so a
    /// caller that must not repeat a completed refund checks
    /// [`payment`](Self::payment) first.
    pub async fn refund(
        &self,
        order_id: &str,
        amount_minor: i64,
    ) -> Result<PaymentRecord, PaymentError> {
        if amount_minor <= 0 {
            return Err(PaymentError::Conflict(format!(
                "cannot refund {amount_minor} minor units"
            )));
        }
        let p = self.existing(order_id).await?;
        if p.state != PaymentState::Captured {
            return Err(PaymentError::Conflict(format!(
                "order {order_id} is {}, nothing to refund",
                p.state
            )));
        }
        if p.refunded_minor + amount_minor > p.captured_minor {
            return Err(PaymentError::Conflict(format!(
                "order {order_id}: refunding {amount_minor} more than the {} of {} captured left",
                p.captured_minor - p.refunded_minor,
                p.captured_minor
            )));
        }
        let auth_ref = provider_ref(&p)?;
        let seq = p.refunds;
        let key = refund_key(order_id, seq);
        let started = Instant::now();
        let result = self.provider.refund(&key, &auth_ref, amount_minor).await;
        let outcome = result.as_ref().map_or_else(describe, |_| "ok".into());
        let call = observe(order_id, "refund", &key, started, &result, outcome);
        if let Err(e) = result {
            self.log(&call).await?;
            return Err(provider_failure(e));
        }
        let update = PaymentUpdate::Refund { seq, amount_minor };
        match self.store.log_and_update(&call, update).await? {
            Transition::Applied(r) => Ok(r),
            // A concurrent call made (and recorded) the same refund under the same key.
            Transition::Unchanged(r) if r.refunds > seq => Ok(r),
            Transition::Unchanged(r) => Err(PaymentError::Conflict(format!(
                "order {order_id}: refund {seq} of {amount_minor} does not fit a {} payment \
                 with {} of {} refunded",
                r.state, r.refunded_minor, r.captured_minor
            ))),
            Transition::Missing => Err(missing(order_id)),
        }
    }

    /// The order's payment, if it has one.
    pub async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>, PaymentError> {
        Ok(self.store.payment(order_id).await?)
    }

    /// The order's payment, or `Conflict` when it has none.
    async fn existing(&self, order_id: &str) -> Result<PaymentRecord, PaymentError> {
        self.store
            .payment(order_id)
            .await?
            .ok_or_else(|| PaymentError::Conflict(format!("order {order_id} has no payment")))
    }

    /// Appends a provider call to the store's operations log (when no transition goes
    /// with it: see [`PaymentsStore::log_and_update`]).
    async fn log(&self, call: &PaymentOperation) -> Result<(), PaymentError> {
        self.store
            .log_operation(
                &call.order_id,
                &call.op,
                &call.idempotency_key,
                &call.outcome,
            )
            .await?;
        Ok(())
    }
}

/// Records one provider call in the metrics and the trace, and returns it as the
/// operations log takes it. Every call is logged in the store too, before anything
/// else the call leads to is recorded (or in the same write).
fn observe<T>(
    order: &str,
    op: &'static str,
    key: &str,
    started: Instant,
    result: &Result<T, ProviderError>,
    outcome: String,
) -> PaymentOperation {
    let label = match result {
        Ok(_) => "ok",
        Err(ProviderError::Declined { .. }) => "declined",
        Err(ProviderError::Timeout) => "timeout",
        Err(ProviderError::Unavailable(_)) => "unavailable",
        Err(ProviderError::Rejected(_)) => "rejected",
    };
    metrics::record_call(op, label, started);
    tracing::debug!(
        order_id = order,
        op,
        idempotency_key = key,
        outcome,
        "payment provider call"
    );
    PaymentOperation {
        order_id: order.to_owned(),
        op: op.to_owned(),
        idempotency_key: key.to_owned(),
        outcome,
        at_ms: 0,
    }
}

/// The result an authorize reports for a payment past `authorizing`.
fn settled_authorization(p: PaymentRecord) -> Result<PaymentRecord, PaymentError> {
    match p.state {
        PaymentState::Authorized | PaymentState::Captured | PaymentState::Refunded => Ok(p),
        PaymentState::Declined => Err(PaymentError::Declined {
            reason: p.decline_reason.unwrap_or_default(),
        }),
        PaymentState::Voided => Err(PaymentError::Conflict(format!(
            "order {} was voided",
            p.order_id
        ))),
        PaymentState::Authorizing => Err(PaymentError::Transient(format!(
            "the authorization of order {} is still in doubt",
            p.order_id
        ))),
    }
}

/// The record of a transition on a payment that must exist.
fn present(order: &str, t: Transition) -> Result<PaymentRecord, PaymentError> {
    t.into_record().ok_or_else(|| missing(order))
}

fn missing(order: &str) -> PaymentError {
    // Payments are never deleted: only a store that lost data gets here.
    PaymentError::Transient(format!("the payment of order {order} disappeared"))
}

fn provider_ref(p: &PaymentRecord) -> Result<String, PaymentError> {
    p.provider_ref.clone().ok_or_else(|| {
        PaymentError::Conflict(format!(
            "order {} is {} without a provider reference",
            p.order_id, p.state
        ))
    })
}

fn provider_failure(e: ProviderError) -> PaymentError {
    match e {
        ProviderError::Declined { reason } => PaymentError::Declined { reason },
        ProviderError::Rejected(msg) => PaymentError::Conflict(msg),
        transient => PaymentError::Transient(transient.to_string()),
    }
}

fn describe(e: &ProviderError) -> String {
    match e {
        ProviderError::Declined { reason } => format!("declined: {reason}"),
        ProviderError::Timeout => "timeout".into(),
        ProviderError::Unavailable(msg) => format!("unavailable: {msg}"),
        ProviderError::Rejected(msg) => format!("rejected: {msg}"),
    }
}
