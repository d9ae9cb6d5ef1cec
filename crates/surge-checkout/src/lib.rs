//! Checkout: orders, inventory and payments kept consistent by a durable saga.
//!
//! Three services each own their database and talk only through their APIs (in-process
//! calls in all-in-one mode): **orders** (orders, the saga log, idempotency keys),
//! **inventory** (stock and holds) and **payments** (authorizations, captures, voids,
//! refunds, in front of a [`payments::provider::PaymentProvider`]). The orchestrator
//! lives with orders and drives each checkout's saga to a terminal state, across
//! crashes.

pub mod api;
pub mod config;
pub mod events;
pub mod fulfilment;
pub mod inventory;
pub mod metrics;
pub mod order;
pub mod payments;
pub mod pricing;
pub mod relay;
pub mod saga;

use std::sync::Arc;

use surge_http::admin::AdminToken;
use surge_http::envelope::EnvelopeKeys;
use surge_store::{InventoryStore, OrdersStore, PaymentsStore};
use tokio::sync::watch;

pub use config::CheckoutConfig;
pub use saga::driver::Orchestrator;

/// The stores of the three services.
#[derive(Clone)]
pub struct Stores {
    /// The orders service's store.
    pub orders: Arc<dyn OrdersStore>,
    /// The inventory service's store.
    pub inventory: Arc<dyn InventoryStore>,
    /// The payments service's store.
    pub payments: Arc<dyn PaymentsStore>,
}

impl Stores {
    /// Opens the three stores (`sqlite://PATH` or `postgres://…` each). The error names
    /// the store that failed.
    pub async fn open(
        orders: &str,
        inventory: &str,
        payments: &str,
        options: &surge_store::StoreOptions,
    ) -> Result<Stores, String> {
        let named =
            |name: &'static str| move |e: surge_store::StoreError| format!("the {name} store: {e}");
        Ok(Stores {
            orders: surge_store::open_orders(orders, options)
                .await
                .map_err(named("orders"))?,
            inventory: surge_store::open_inventory(inventory, options)
                .await
                .map_err(named("inventory"))?,
            payments: surge_store::open_payments(payments, options)
                .await
                .map_err(named("payments"))?,
        })
    }

    /// Closes the three stores.
    pub async fn close(&self) {
        self.orders.close().await;
        self.inventory.close().await;
        self.payments.close().await;
    }
}

/// A built checkout role.
pub struct Checkout {
    /// The orchestrator: run [`Orchestrator::run`] for recovery and sweeping.
    pub saga: Orchestrator,
    /// Makes the router once the Envelope keys are known.
    pub api: api::Api,
}

impl Checkout {
    /// The HTTP router (users' routes check the Envelope with `keys`).
    pub fn router(&self, keys: EnvelopeKeys, admin: AdminToken) -> axum::Router {
        api::router(self.api.clone(), keys, admin)
    }
}

/// Builds checkout over its stores: the inventory and payments services (payments
/// in front of `provider`), the orchestrator and the API.
pub fn build(
    config: &CheckoutConfig,
    stores: Stores,
    provider: Arc<dyn payments::provider::PaymentProvider>,
    pricing: Arc<dyn pricing::Pricing>,
    stop: watch::Receiver<bool>,
) -> Result<Checkout, String> {
    config.validate()?;
    let inventory = inventory::Inventory::new(stores.inventory, &config.inventory);
    let payments = payments::Payments::new(stores.payments, provider);
    let saga = Orchestrator::new(stores.orders, inventory, payments, config, stop);
    let ms = saga::driver::ms;
    let api = api::Api {
        saga: saga.clone(),
        pricing,
        config: Arc::new(config.clone()),
        lock_ms: ms(config.idempotency_lock_ms),
        retention_ms: ms(config.idempotency_retention_ms),
        fulfilment: fulfilment::Fulfilment::new(config.fulfilment.clone()),
    };
    Ok(Checkout { saga, api })
}
