//! Wiring the checkout role: its three stores, the payment provider, pricing from the
//! catalog.

use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;
use surge_checkout::payments::simulator::ProviderSimulator;
use surge_checkout::pricing::CatalogPricing;
use surge_checkout::{Checkout, Stores};
use surge_store::CatalogStore;
use tokio::sync::watch;

use crate::config::Config;

/// Something to close at shutdown.
pub type Closer = Box<dyn FnOnce() -> BoxFuture<'static, ()>>;

/// Opens checkout's stores and builds the role. The provider simulator keeps its
/// ledger in `<data_dir>/provider-simulator.db` unless configured otherwise, so that,
/// like a real provider, it outlives a restart of Surge.
pub async fn start(
    config: &Config,
    catalog: Arc<dyn CatalogStore>,
    stop: watch::Receiver<bool>,
    closers: &mut Vec<Closer>,
) -> anyhow::Result<Checkout> {
    let stores = Stores::open(
        &config.orders_store_url(),
        &config.inventory_store_url(),
        &config.payments_store_url(),
        &config.store_options,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open checkout's stores: {e}"))?;
    tracing::info!(
        orders = stores.orders.backend(),
        inventory = stores.inventory.backend(),
        payments = stores.payments.backend(),
        "checkout stores open"
    );
    let mut provider_config = config.checkout.provider.clone();
    if provider_config.ledger.is_none() {
        provider_config.ledger = Some(config.data_dir.join("provider-simulator.db"));
    }
    let provider = ProviderSimulator::new(provider_config)
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot start the payment provider simulator")?;
    tracing::warn!("payments go to the provider SIMULATOR: no real money moves");
    let checkout = surge_checkout::build(
        &config.checkout,
        stores.clone(),
        Arc::new(provider),
        Arc::new(CatalogPricing::new(catalog)),
        stop,
    )
    .map_err(anyhow::Error::msg)
    .context("cannot build checkout")?;
    closers.push(Box::new(move || {
        Box::pin(async move { stores.close().await })
    }));
    Ok(checkout)
}
