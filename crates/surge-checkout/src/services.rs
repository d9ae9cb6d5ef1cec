//! What the orchestrator asks of the inventory and payments services, whether they run
//! in this process ([`Inventory`], [`Payments`]) or on other machines, reached over
//! HTTP ([`crate::remote`]). Every call carries the order id, and the services key
//! their effects on (order, step), so a call repeated after a crash or a lost reply
//! has no second effect.

use async_trait::async_trait;
use surge_store::{HoldLine, HoldOutcome, StoreError};

use crate::inventory::Inventory;
use crate::payments::{AuthorizeRequest, PaymentError, Payments};

/// Why a call to a participant service failed. Either way the saga retries the step.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service's store failed (in process).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The remote service could not be reached or did not answer as expected.
    #[error("the {service} service: {why}")]
    Remote {
        /// `inventory` or `payments`.
        service: &'static str,
        /// What went wrong.
        why: String,
    },
}

/// The inventory service as the orchestrator sees it.
#[async_trait]
pub trait InventoryApi: Send + Sync + 'static {
    /// Whether `sku` is known to be sold out in `market`, from memory only (a hint:
    /// see [`crate::inventory::SoldOut`]).
    fn is_sold_out(&self, sku: &str, market: &str) -> bool;

    /// Holds every line for `order_id` until `expires_at_ms`, all or nothing.
    async fn hold(
        &self,
        order_id: &str,
        lines: &[HoldLine],
        expires_at_ms: i64,
    ) -> Result<HoldOutcome, ServiceError>;

    /// Gives the order's held units back (idempotent); `lines` name the SKUs whose
    /// sold-out marks to clear. Returns the units released.
    async fn release(&self, order_id: &str, lines: &[HoldLine]) -> Result<i64, ServiceError>;

    /// Turns the order's held units into sold ones (idempotent). Returns the units sold.
    async fn commit(&self, order_id: &str) -> Result<i64, ServiceError>;

    /// Orders with a hold that expired before `now_ms`, at most `limit`.
    async fn expired_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, ServiceError>;
}

#[async_trait]
impl InventoryApi for Inventory {
    fn is_sold_out(&self, sku: &str, market: &str) -> bool {
        Inventory::is_sold_out(self, sku, market)
    }

    async fn hold(
        &self,
        order_id: &str,
        lines: &[HoldLine],
        expires_at_ms: i64,
    ) -> Result<HoldOutcome, ServiceError> {
        Ok(Inventory::hold(self, order_id, lines, expires_at_ms).await?)
    }

    async fn release(&self, order_id: &str, lines: &[HoldLine]) -> Result<i64, ServiceError> {
        Ok(Inventory::release(self, order_id, lines).await?)
    }

    async fn commit(&self, order_id: &str) -> Result<i64, ServiceError> {
        Ok(Inventory::commit(self, order_id).await?)
    }

    async fn expired_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, ServiceError> {
        Ok(self.store().expired_holds(now_ms, limit).await?)
    }
}

/// The payments service as the orchestrator sees it. Each call is idempotent per
/// order (see [`Payments`]).
#[async_trait]
pub trait PaymentsApi: Send + Sync + 'static {
    /// Authorizes the order's amount.
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<(), PaymentError>;
    /// Captures the order's authorization.
    async fn capture(&self, order_id: &str) -> Result<(), PaymentError>;
    /// Voids the order's authorization (or makes sure none will stand).
    async fn void(&self, order_id: &str) -> Result<(), PaymentError>;
}

#[async_trait]
impl PaymentsApi for Payments {
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<(), PaymentError> {
        Payments::authorize(self, request).await.map(|_| ())
    }

    async fn capture(&self, order_id: &str) -> Result<(), PaymentError> {
        Payments::capture(self, order_id).await.map(|_| ())
    }

    async fn void(&self, order_id: &str) -> Result<(), PaymentError> {
        Payments::void(self, order_id).await
    }
}
