//! Wiring checkout's three services: orders (with the orchestrator and the public
//! API), inventory and payments, each over its own store. Each runs in this process
//! or, for inventory and payments, on another node named in `checkout.remote`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use surge_checkout::inventory::Inventory;
use surge_checkout::payments::Payments;
use surge_checkout::payments::simulator::ProviderSimulator;
use surge_checkout::pricing::CatalogPricing;
use surge_checkout::remote::{RemoteInventory, RemotePayments};
use surge_checkout::{Checkout, Participants};
use surge_store::CatalogStore;
use tokio::sync::watch;

use crate::config::Config;
use crate::serve::redact;

/// Something to close at shutdown.
pub type Closer = Box<dyn FnOnce() -> BoxFuture<'static, ()>>;

/// Which of checkout's services run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Orders, the orchestrator and the public API (the `checkout` role).
    pub orders: bool,
    /// The inventory service.
    pub inventory: bool,
    /// The payments service.
    pub payments: bool,
}

impl Wanted {
    /// What runs here: the `inventory` and `payments` roles, and with the `checkout`
    /// role every service that `checkout.remote` does not place elsewhere. A service
    /// both run here and named remote is a mistake, refused.
    pub fn of(
        config: &Config,
        checkout: bool,
        inventory: bool,
        payments: bool,
    ) -> anyhow::Result<Self> {
        let remote = &config.checkout.remote;
        for (name, here, url) in [
            ("inventory", inventory, &remote.inventory),
            ("payments", payments, &remote.payments),
        ] {
            if here && !url.is_empty() {
                anyhow::bail!(
                    "the {name} role runs in this process, yet checkout.remote.{name} points \
                     elsewhere ({url}): drop one of them"
                );
            }
        }
        Ok(Wanted {
            orders: checkout,
            inventory: inventory || (checkout && remote.inventory.is_empty()),
            payments: payments || (checkout && remote.payments.is_empty()),
        })
    }

    /// Whether any of checkout's services runs here.
    pub fn any(&self) -> bool {
        self.orders || self.inventory || self.payments
    }
}

/// Checkout's services running in this process.
pub struct Services {
    /// Orders and the orchestrator.
    pub checkout: Option<Checkout>,
    /// The inventory service.
    pub inventory: Option<Inventory>,
    /// The payments service.
    pub payments: Option<Payments>,
}

/// Opens one service's store (`$open(url, options)`), logs its backend and closes it at
/// shutdown.
macro_rules! open_store {
    ($name:literal, $url:expr, $open:path, $options:expr, $closers:expr) => {{
        let url = $url;
        let store = $open(&url, $options)
            .await
            .with_context(|| format!("cannot open the {} store {}", $name, redact(&url)))?;
        tracing::info!(store = store.backend(), concat!($name, " store open"));
        let closing = store.clone();
        $closers.push(Box::new(move || {
            Box::pin(async move { closing.close().await })
        }));
        store
    }};
}

/// Opens the stores of the services `wanted` here and builds them. The provider
/// simulator keeps its ledger in `<data_dir>/provider-simulator.db` unless configured
/// otherwise, so that, like a real provider, it outlives a restart of Surge. Orders
/// prices from `catalog`; `admin` is the token remote services want.
pub async fn start(
    config: &Config,
    wanted: Wanted,
    catalog: Option<Arc<dyn CatalogStore>>,
    admin: &str,
    stop: watch::Receiver<bool>,
    closers: &mut Vec<Closer>,
) -> anyhow::Result<Services> {
    let options = &config.store_options;
    let c = &config.checkout;
    let inventory = if wanted.inventory {
        let store = open_store!(
            "inventory",
            config.inventory_store_url(),
            surge_store::open_inventory,
            options,
            closers
        );
        Some(Inventory::new(store, &c.inventory))
    } else {
        None
    };
    let payments = if wanted.payments {
        let store = open_store!(
            "payments",
            config.payments_store_url(),
            surge_store::open_payments,
            options,
            closers
        );
        let mut provider_config = c.provider.clone();
        if provider_config.ledger.is_none() {
            provider_config.ledger = Some(config.data_dir.join("provider-simulator.db"));
        }
        let provider = ProviderSimulator::new(provider_config)
            .await
            .map_err(anyhow::Error::msg)
            .context("cannot start the payment provider simulator")?;
        tracing::warn!("payments go to the provider SIMULATOR: no real money moves");
        Some(Payments::new(store, Arc::new(provider)))
    } else {
        None
    };
    let checkout = if wanted.orders {
        let timeout = Duration::from_millis(c.remote.timeout_ms);
        let participants = Participants {
            inventory: match &inventory {
                Some(local) => Arc::new(local.clone()),
                None => Arc::new(
                    RemoteInventory::new(
                        &c.remote.inventory,
                        admin,
                        timeout,
                        Duration::from_millis(c.inventory.sold_out_ttl_ms),
                    )
                    .map_err(anyhow::Error::msg)?,
                ),
            },
            payments: match &payments {
                Some(local) => Arc::new(local.clone()),
                None => Arc::new(
                    RemotePayments::new(&c.remote.payments, admin, timeout)
                        .map_err(anyhow::Error::msg)?,
                ),
            },
        };
        if inventory.is_none() || payments.is_none() {
            tracing::info!(
                inventory = if inventory.is_some() {
                    "here"
                } else {
                    c.remote.inventory.as_str()
                },
                payments = if payments.is_some() {
                    "here"
                } else {
                    c.remote.payments.as_str()
                },
                "checkout calls remote services"
            );
        }
        let orders = open_store!(
            "orders",
            config.orders_store_url(),
            surge_store::open_orders,
            options,
            closers
        );
        let catalog = catalog.context("checkout prices from the catalog store")?;
        let checkout = surge_checkout::build_with(
            c,
            orders,
            participants,
            Arc::new(CatalogPricing::new(catalog)),
            stop,
        )
        .map_err(anyhow::Error::msg)
        .context("cannot build checkout")?;
        Some(checkout)
    } else {
        c.validate().map_err(anyhow::Error::msg)?;
        None
    };
    Ok(Services {
        checkout,
        inventory,
        payments,
    })
}
