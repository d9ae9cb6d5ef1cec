//! Checkout configuration: plain data with documented units and defaults.

use serde::{Deserialize, Serialize};

use crate::fulfilment::FulfilmentConfig;
use crate::inventory::feed::FeedConfig;
use crate::payments::simulator::SimulatorConfig;

/// Everything the checkout role needs to know.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutConfig {
    /// This orchestrator's name in saga leases. Every node of a cluster needs its own;
    /// a node that restarts with the same name takes its sagas back at once. Default
    /// `local`.
    pub node_id: String,
    /// How long stock stays held for an order that is not confirmed, in ms. Default
    /// 600,000 (10 min).
    pub hold_ms: u64,
    /// How long `POST /checkout` waits for the saga to finish before answering 202 with
    /// the pending order, in ms. Default 5,000.
    pub respond_within_ms: u64,
    /// How long an `Idempotency-Key` is remembered, in ms. Default 86,400,000 (24 h).
    pub idempotency_retention_ms: u64,
    /// How long `OrderPlaced`, `OrderConfirmed` and `OrderCancelled` events stay in the
    /// checkout outbox, in ms; the sweeper deletes older ones. Default 7 days.
    pub event_retention_ms: u64,
    /// How long a second request with a key gets 409 while the first is running, in
    /// ms; after that (the first request's process died) the key is answered from the
    /// order. Default 30,000.
    pub idempotency_lock_ms: u64,
    /// The saga's timings.
    pub saga: SagaConfig,
    /// Limits of the HTTP API.
    pub http: HttpConfig,
    /// The inventory service.
    pub inventory: InventoryConfig,
    /// The payment provider. Only the simulator exists so far.
    pub provider: SimulatorConfig,
    /// Warehouses' shipping capacity and what to do when it is reached.
    pub fulfilment: FulfilmentConfig,
    /// The relay of checkout's events to the event stream (NATS JetStream).
    pub events: crate::relay::RelayConfig,
    /// Where the inventory and payments services run when not in this process.
    pub remote: RemoteConfig,
}

/// Where the orchestrator finds the inventory and payments services. Empty (default):
/// in this process. `http://host:port`: a `surge serve --roles inventory` (or
/// `payments`) node, called over HTTP with the admin token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// The inventory service's base URL, or empty for this process.
    pub inventory: String,
    /// The payments service's base URL, or empty for this process.
    pub payments: String,
    /// How long one call to a remote service may take, in ms; after it the saga step
    /// is retried. Keep it above the payment provider's own timeout. Default 10,000.
    pub timeout_ms: u64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            inventory: String::new(),
            payments: String::new(),
            timeout_ms: 10_000,
        }
    }
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig {
            node_id: "local".into(),
            hold_ms: 600_000,
            respond_within_ms: 5_000,
            idempotency_retention_ms: 86_400_000,
            event_retention_ms: 7 * 86_400_000,
            idempotency_lock_ms: 30_000,
            saga: SagaConfig::default(),
            http: HttpConfig::default(),
            inventory: InventoryConfig::default(),
            provider: SimulatorConfig::default(),
            fulfilment: FulfilmentConfig::default(),
            events: crate::relay::RelayConfig::default(),
            remote: RemoteConfig::default(),
        }
    }
}

/// How sagas retry, give up and are recovered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// How long a forward step retries transient failures before the saga pauses (and
    /// is listed as stuck), in ms. Default 30,000.
    pub step_deadline_ms: u64,
    /// How long a compensation retries before the saga goes to manual review, in ms.
    /// Default 120,000.
    pub compensation_deadline_ms: u64,
    /// First retry delay, in ms; doubles per attempt, with full jitter. Default 50.
    pub retry_base_ms: u64,
    /// Longest retry delay, in ms. Default 5,000.
    pub retry_max_ms: u64,
    /// How long a node's claim on a saga lasts without progress, in ms: another node
    /// takes a saga over after this. Default 30,000.
    pub lease_ms: u64,
    /// How often due sagas are looked for (recovery, retries), in ms. Default 500.
    pub poll_ms: u64,
    /// How often expired holds and idempotency keys are swept, in ms. Default 5,000.
    pub sweep_ms: u64,
    /// Most sagas running at once in this process; `POST /checkout` answers 503 when
    /// they are all busy. Default 4,096.
    pub max_active: usize,
    /// A saga not finished this long after its last change is listed as stuck, in ms.
    /// Default 60,000.
    pub stuck_after_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            step_deadline_ms: 30_000,
            compensation_deadline_ms: 120_000,
            retry_base_ms: 50,
            retry_max_ms: 5_000,
            lease_ms: 30_000,
            poll_ms: 500,
            sweep_ms: 5_000,
            max_active: 4_096,
            stuck_after_ms: 60_000,
        }
    }
}

/// Limits of the checkout API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Most lines in one checkout. Default 50.
    pub max_lines: usize,
    /// Most units of one line. Default 100.
    pub max_qty: i64,
    /// Most orders in one page of `GET /orders`. Default 100.
    pub max_page: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            max_lines: 50,
            max_qty: 100,
            max_page: 100,
        }
    }
}

/// The inventory service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// How long a SKU found sold out is answered from memory, without asking the
    /// database, in ms. Releases and restocks through this node clear it at once;
    /// this bounds how long a release on another node goes unseen. Default 1,000.
    pub sold_out_ttl_ms: u64,
    /// The feed of stock from the catalog's offers.
    pub feed: FeedConfig,
    /// How long `StockChanged` events stay in the inventory outbox, in ms; the sweeper
    /// deletes older ones. Default 7 days.
    pub event_retention_ms: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            sold_out_ttl_ms: 1_000,
            feed: FeedConfig::default(),
            event_retention_ms: 7 * 86_400_000,
        }
    }
}

impl CheckoutConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return Err(format!(
                "checkout.node_id must be 1..=64 characters, got {:?}",
                self.node_id
            ));
        }
        let positive = [
            ("checkout.hold_ms", self.hold_ms),
            ("checkout.respond_within_ms", self.respond_within_ms),
            (
                "checkout.idempotency_retention_ms",
                self.idempotency_retention_ms,
            ),
            ("checkout.idempotency_lock_ms", self.idempotency_lock_ms),
            ("checkout.event_retention_ms", self.event_retention_ms),
            (
                "checkout.inventory.event_retention_ms",
                self.inventory.event_retention_ms,
            ),
            ("checkout.saga.step_deadline_ms", self.saga.step_deadline_ms),
            (
                "checkout.saga.compensation_deadline_ms",
                self.saga.compensation_deadline_ms,
            ),
            ("checkout.saga.retry_base_ms", self.saga.retry_base_ms),
            ("checkout.saga.lease_ms", self.saga.lease_ms),
            ("checkout.saga.poll_ms", self.saga.poll_ms),
            ("checkout.saga.sweep_ms", self.saga.sweep_ms),
            ("checkout.remote.timeout_ms", self.remote.timeout_ms),
        ];
        if let Some((key, v)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be > 0, got {v}"));
        }
        self.inventory.feed.validate()?;
        self.fulfilment.validate()?;
        self.events.validate()?;
        if self.saga.retry_max_ms < self.saga.retry_base_ms {
            return Err(format!(
                "checkout.saga.retry_max_ms ({}) must be >= retry_base_ms ({})",
                self.saga.retry_max_ms, self.saga.retry_base_ms
            ));
        }
        if self.saga.lease_ms <= self.saga.retry_max_ms {
            return Err(format!(
                "checkout.saga.lease_ms ({}) must be longer than retry_max_ms ({}): a node sleeping \
                 between retries would lose its sagas",
                self.saga.lease_ms, self.saga.retry_max_ms
            ));
        }
        if self.idempotency_retention_ms < self.idempotency_lock_ms {
            return Err(format!(
                "checkout.idempotency_retention_ms ({}) must be >= idempotency_lock_ms ({})",
                self.idempotency_retention_ms, self.idempotency_lock_ms
            ));
        }
        if !(1..=1_000_000).contains(&self.saga.max_active) {
            return Err(format!(
                "checkout.saga.max_active must be 1..=1000000, got {}",
                self.saga.max_active
            ));
        }
        if !(1..=1000).contains(&self.http.max_lines) {
            return Err(format!(
                "checkout.http.max_lines must be 1..=1000, got {}",
                self.http.max_lines
            ));
        }
        if self.http.max_qty < 1 {
            return Err(format!(
                "checkout.http.max_qty must be >= 1, got {}",
                self.http.max_qty
            ));
        }
        if !(1..=1000).contains(&self.http.max_page) {
            return Err(format!(
                "checkout.http.max_page must be 1..=1000, got {}",
                self.http.max_page
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            return Err(format!(
                "checkout.http.max_body_bytes must be 1024..=16777216, got {}",
                self.http.max_body_bytes
            ));
        }
        Ok(())
    }
}
