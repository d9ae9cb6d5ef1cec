//! Checkout: orders, inventory and payments kept consistent by a durable saga.
//!
//! Three services each own their database and talk only through their APIs (in-process
//! calls in all-in-one mode, HTTP when they run on separate nodes: [`services`],
//! [`remote`], [`api::internal`]): **orders** (orders, the saga log, idempotency keys),
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
pub mod remote;
pub mod saga;
pub mod services;

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
    /// The inventory service, when it runs in this process.
    pub inventory: Option<inventory::Inventory>,
    /// The payments service, when it runs in this process.
    pub payments: Option<payments::Payments>,
}

impl Checkout {
    /// The orders API (users' routes check the Envelope with `keys`) and the operators'
    /// saga routes; the in-process services' routes are [`api::inventory_router`] and
    /// [`api::payments_router`].
    pub fn router(&self, keys: EnvelopeKeys, admin: AdminToken) -> axum::Router {
        api::router(self.api.clone(), keys, admin)
    }
}

/// The participants the orchestrator calls, in this process or remote.
pub struct Participants {
    /// The inventory service.
    pub inventory: Arc<dyn services::InventoryApi>,
    /// The payments service.
    pub payments: Arc<dyn services::PaymentsApi>,
}

/// Builds checkout with all three services in this process, over their stores:
/// inventory, payments (in front of `provider`), the orchestrator and the API.
pub fn build(
    config: &CheckoutConfig,
    stores: Stores,
    provider: Arc<dyn payments::provider::PaymentProvider>,
    pricing: Arc<dyn pricing::Pricing>,
    stop: watch::Receiver<bool>,
) -> Result<Checkout, String> {
    let inventory = inventory::Inventory::new(stores.inventory, &config.inventory);
    let payments = payments::Payments::new(stores.payments, provider);
    let participants = Participants {
        inventory: Arc::new(inventory.clone()),
        payments: Arc::new(payments.clone()),
    };
    let mut checkout = build_with(config, stores.orders, participants, pricing, stop)?;
    checkout.inventory = Some(inventory);
    checkout.payments = Some(payments);
    Ok(checkout)
}

/// Builds the orders service and the orchestrator over `orders`, calling
/// `participants` (in this process or remote).
pub fn build_with(
    config: &CheckoutConfig,
    orders: Arc<dyn OrdersStore>,
    participants: Participants,
    pricing: Arc<dyn pricing::Pricing>,
    stop: watch::Receiver<bool>,
) -> Result<Checkout, String> {
    config.validate()?;
    let saga = Orchestrator::new(
        orders,
        participants.inventory,
        participants.payments,
        config,
        stop,
    );
    let ms = saga::driver::ms;
    let api = api::Api {
        saga: saga.clone(),
        pricing,
        config: Arc::new(config.clone()),
        lock_ms: ms(config.idempotency_lock_ms),
        retention_ms: ms(config.idempotency_retention_ms),
        fulfilment: fulfilment::Fulfilment::new(config.fulfilment.clone()),
    };
    Ok(Checkout {
        saga,
        api,
        inventory: None,
        payments: None,
    })
}
