//! What a SKU costs: the catalog's offer price at the moment of checkout.
//!
//! A SKU is `<product id>:<merchant id>`; its price in a market is that merchant's
//! offer for the product there. Checkout asks the catalog through its store trait (the
//! catalog's API), never through the catalog's tables.

use std::sync::Arc;

use async_trait::async_trait;
use surge_store::{CatalogStore, StoreError};

/// A unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Minor units (cents).
    pub unit_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
}

/// Prices SKUs.
#[async_trait]
pub trait Pricing: Send + Sync + 'static {
    /// The price of `sku` in `market`, `None` when it is not offered there.
    async fn price(&self, sku: &str, market: &str) -> Result<Option<Price>, StoreError>;
}

/// Prices from the catalog's offers.
pub struct CatalogPricing {
    catalog: Arc<dyn CatalogStore>,
}

impl CatalogPricing {
    /// Prices from `catalog`.
    pub fn new(catalog: Arc<dyn CatalogStore>) -> Self {
        CatalogPricing { catalog }
    }
}

/// Splits a SKU into product and merchant.
pub fn split_sku(sku: &str) -> Option<(&str, &str)> {
    sku.split_once(':')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
}

#[async_trait]
impl Pricing for CatalogPricing {
    async fn price(&self, sku: &str, market: &str) -> Result<Option<Price>, StoreError> {
        let Some((product, merchant)) = split_sku(sku) else {
            return Ok(None);
        };
        let offers = self.catalog.offers_for(product, market).await?;
        Ok(offers
            .into_iter()
            .find(|o| o.merchant_id == merchant)
            .map(|o| Price {
                unit_minor: o.price_minor,
                currency: o.currency,
            }))
    }
}
