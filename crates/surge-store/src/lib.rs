//! Storage for the catalog (source-of-truth tables, the outbox, the projected views),
//! for the edge's identity data ([`IdentityStore`]) and for checkout's inventory
//! ([`InventoryStore`]), orders ([`OrdersStore`]) and payments ([`PaymentsStore`]).
//!
//! Roles talk to the [`CatalogStore`] and [`IdentityStore`] traits only. Two backends implement it with the
//! same SQL ([`sql`]): embedded SQLite (the default, one file under the data directory)
//! and PostgreSQL for scale-out. [`open`] picks one from a URL; one conformance suite
//! (`tests/conformance.rs`) runs against both.
//!
//! On SQLite, checkout's stores write through a group commit ([`group`]): the writes
//! waiting for a store's single writer connection share one transaction and one fsync,
//! and each caller is answered once that commit is durable. On PostgreSQL every write
//! keeps a transaction of its own (many connections already commit in parallel).

pub mod checkpoint;
mod error;
mod fulfilment;
pub mod group;
mod identity;
mod inventory;
mod metrics;
mod migrations;
mod model;
mod orders;
mod payments;
pub mod sql;

use async_trait::async_trait;

pub use error::StoreError;
pub use fulfilment::FulfilmentStore;
pub use identity::{
    Account, IdentityStore, NewAccount, NewSession, Profile, Refresh, Revocation, RevocationKind,
    SigningKey, Switch,
};
pub use inventory::{Declared, HoldLine, HoldOutcome, InventoryStore, StockEvent, StockLevel};
pub use model::{
    Offer, OutboxEntry, OutboxKind, ProductRecord, ProductWrite, StoredView, ViewBatch, ViewPut,
    WriteReceipt,
};
pub use orders::{
    Advance, AuditEntry, CheckoutEvent, Created, KeyRecord, KeyResponse, NewEvent, NewOrder,
    OrderRow, OrdersStore, SagaState, StepLog,
};
pub use payments::{
    PaymentOperation, PaymentRecord, PaymentState, PaymentUpdate, PaymentsStore, Transition,
};
pub use sql::{StoreOptions, open, open_identity, open_inventory, open_orders, open_payments};

/// Result type of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The catalog's storage: commands write products and offers (each write with its
/// outbox entry, in one transaction); the projector reads the outbox and writes views
/// together with its position; the read API loads views on a cache miss.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Creates or replaces products. One transaction for the whole slice: each product
    /// row and one outbox entry per product are committed together or not at all.
    async fn put_products(&self, products: &[ProductWrite]) -> Result<Vec<WriteReceipt>>;

    /// Deletes a product (its offers stay). Returns `false` when it did not exist.
    async fn delete_product(&self, id: &str) -> Result<bool>;

    /// The stored source document of a product.
    async fn get_product(&self, id: &str) -> Result<Option<ProductRecord>>;

    /// Creates or updates offers in one transaction, with one outbox entry per
    /// distinct (product, market) touched. Never touches product rows. Returns the
    /// number of outbox entries written.
    async fn upsert_offers(&self, offers: &[Offer]) -> Result<u64>;

    /// All offers of a product in one market, ordered by merchant id.
    async fn offers_for(&self, product_id: &str, market: &str) -> Result<Vec<Offer>>;

    /// Every offer, a page at a time, in (product, market, merchant) order: the page
    /// after the offer `after` names (`None`: the first page), at most `limit`. For
    /// consumers that rebuild their state from the whole catalog.
    async fn offers_page(&self, after: Option<&Offer>, limit: u32) -> Result<Vec<Offer>>;

    /// The highest outbox position written so far (0 when empty).
    async fn outbox_head(&self) -> Result<i64>;

    /// Outbox entries with a position greater than `after`, oldest first.
    async fn read_outbox(&self, after: i64, limit: u32) -> Result<Vec<OutboxEntry>>;

    /// The outbox position the projector has applied (stored with the views).
    async fn applied_position(&self) -> Result<i64>;

    /// Writes and deletes views and records the new applied position, in one
    /// transaction. Fails with [`StoreError::PositionConflict`] when the stored
    /// position is not `batch.from_position` (another projector got there first).
    async fn apply_views(&self, batch: &ViewBatch) -> Result<()>;

    /// Deletes at most `max_rows` of the oldest outbox entries with a position up to
    /// `up_to` (entries the projector has applied and no one needs any more). Returns
    /// how many were deleted.
    async fn prune_outbox(&self, up_to: i64, max_rows: u32) -> Result<u64>;

    /// Loads one view by key.
    async fn get_view(&self, key: &str) -> Result<Option<StoredView>>;

    /// Counts of rows, for the admin status page and tests: (products, offers, views).
    async fn counts(&self) -> Result<(i64, i64, i64)>;

    /// Closes the connections; every later call fails with [`StoreError::Closed`].
    async fn close(&self);
}
