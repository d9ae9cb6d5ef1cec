//! Plain data crossing the store boundary.

use bytes::Bytes;

/// A product to create or replace: its id and its (validated, normalised) JSON body.
#[derive(Debug, Clone)]
pub struct ProductWrite {
    /// Product id.
    pub id: String,
    /// The standard JSON document.
    pub body: Bytes,
}

/// What a committed product write returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReceipt {
    /// Product id.
    pub id: String,
    /// Version after the write: 1 for a new product, +1 on every replace.
    pub version: i64,
    /// Outbox position of the write.
    pub position: i64,
}

/// A stored product document.
#[derive(Debug, Clone)]
pub struct ProductRecord {
    /// Product id.
    pub id: String,
    /// The standard JSON document.
    pub body: Bytes,
    /// Number of writes so far.
    pub version: i64,
    /// Last write time, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// One merchant's offer for a product in a market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Product id.
    pub product_id: String,
    /// Merchant id.
    pub merchant_id: String,
    /// ISO 3166-1 alpha-2 market code, upper case.
    pub market: String,
    /// Price in minor units of the currency (cents).
    pub price_minor: i64,
    /// ISO 4217 currency code, upper case.
    pub currency: String,
    /// Units in stock.
    pub stock: i64,
    /// Last write time, milliseconds since the Unix epoch (set by the store on write).
    pub updated_at_ms: i64,
}

/// What an outbox entry announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A product was created or replaced.
    Product,
    /// A product was deleted.
    ProductDeleted,
    /// Offers of a product in one market changed.
    Offers,
}

impl OutboxKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Product => "product",
            OutboxKind::ProductDeleted => "product_deleted",
            OutboxKind::Offers => "offers",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "product" => Some(OutboxKind::Product),
            "product_deleted" => Some(OutboxKind::ProductDeleted),
            "offers" => Some(OutboxKind::Offers),
            _ => None,
        }
    }
}

/// One outbox entry. Entries carry keys, not bodies: the projector reads the current
/// state, so applying an entry twice has no second effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox (strictly increasing in commit order).
    pub position: i64,
    /// What changed.
    pub kind: OutboxKind,
    /// The product concerned.
    pub product_id: String,
    /// The market, for [`OutboxKind::Offers`].
    pub market: Option<String>,
    /// When the entry was written, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// A projected view as stored: the gzip member of its bytes and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredView {
    /// The view's bytes as one gzip member.
    pub gzip: Bytes,
    /// Entity tag of the identity bytes (without quotes).
    pub etag: String,
}

/// A view to write.
#[derive(Debug, Clone)]
pub struct ViewPut {
    /// View key (see the catalog's `views::key` module).
    pub key: String,
    /// The stored form.
    pub view: StoredView,
}

/// What one projector step writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct ViewBatch {
    /// The applied position this batch starts from.
    pub from_position: i64,
    /// The applied position after this batch.
    pub to_position: i64,
    /// Views to create or replace.
    pub puts: Vec<ViewPut>,
    /// View keys to delete.
    pub deletes: Vec<String>,
}
