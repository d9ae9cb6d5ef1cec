//! Fulfilment backpressure: the shop never sells more than its warehouses can ship.
//!
//! Each warehouse ships at most `orders_per_minute` orders a minute. A checkout takes a
//! slot of its warehouse's current minute, durably, in the orders store, before its
//! order is created; a cancelled order gives its slot back. When the minute is full the
//! checkout is, by configuration, either refused (503 with `Retry-After` up to the next
//! minute) or queued: it takes a slot of the first later minute with room (at most
//! `max_queue_minutes` ahead), and its order is created at once but its saga starts
//! only when that minute comes (the order row's wake-up time; the queue is the orders
//! table, so it survives a crash).
//!
//! A warehouse serves the markets it lists; one that lists none serves every market no
//! other warehouse lists. A market no warehouse serves has no limit, and so does a shop
//! with no warehouses configured (the default).
//!
//! Queue mode remembers, per warehouse, the first minute it found with room, so a deep
//! queue costs one slot attempt per checkout rather than one per full minute. A slot
//! given back (a cancelled order) in a minute this node already passed over is used
//! only by checkouts that start their search there: at worst capacity goes unused, it
//! is never exceeded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use surge_store::{OrdersStore, StoreError};

/// What a checkout does when its warehouse's minute is full.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Answer 503 with `Retry-After` (the default).
    #[default]
    Refuse,
    /// Queue the order for a later minute, durably.
    Queue,
}

/// One warehouse.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Orders it can ship a minute (>= 1). Default 60.
    pub orders_per_minute: u32,
    /// Markets it ships to (ISO 3166-1 alpha-2). Empty: every market no other
    /// warehouse lists. Default empty.
    pub markets: Vec<String>,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            orders_per_minute: 60,
            markets: Vec::new(),
        }
    }
}

/// Fulfilment capacity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FulfilmentConfig {
    /// `refuse` (503 + `Retry-After`) or `queue` (a later minute). Default `refuse`.
    pub overflow: Overflow,
    /// In `queue` mode, how many minutes ahead a checkout may be queued; beyond that
    /// it is refused. Default 60.
    pub max_queue_minutes: u32,
    /// Warehouses by name. Default none: no limit.
    pub warehouses: BTreeMap<String, WarehouseConfig>,
}

impl Default for FulfilmentConfig {
    fn default() -> Self {
        FulfilmentConfig {
            overflow: Overflow::Refuse,
            max_queue_minutes: 60,
            warehouses: BTreeMap::new(),
        }
    }
}

impl FulfilmentConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_080).contains(&self.max_queue_minutes) {
            return Err(format!(
                "checkout.fulfilment.max_queue_minutes must be 1..=10080, got {}",
                self.max_queue_minutes
            ));
        }
        let mut catch_all = None;
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for (name, w) in &self.warehouses {
            let key = format!("checkout.fulfilment.warehouses.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{key}: a warehouse name is 1 to 64 characters of [A-Za-z0-9_-]"
                ));
            }
            if w.orders_per_minute == 0 {
                return Err(format!("{key}.orders_per_minute must be >= 1, got 0"));
            }
            if w.markets.is_empty()
                && let Some(other) = catch_all.replace(name)
            {
                return Err(format!(
                    "{key}.markets is empty, and so is that of warehouse {other:?}: only \
                     one warehouse may serve every other market"
                ));
            }
            for m in &w.markets {
                if m.len() != 2 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(format!(
                        "{key}.markets: {m:?} is not an ISO 3166-1 alpha-2 code such as DE"
                    ));
                }
                if let Some(other) = owner.insert(m, name) {
                    return Err(format!(
                        "{key}.markets: {m} is served by warehouse {other:?} already"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The answer to a checkout asking for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No warehouse limits this market: nothing was taken.
    Unlimited,
    /// A slot of the current minute was taken.
    Now,
    /// A slot of a later minute was taken: start the saga at `at_ms`.
    Queued {
        /// The warehouse.
        warehouse: String,
        /// The start of the minute, in ms since the Unix epoch.
        at_ms: i64,
    },
    /// No slot within reach: refuse, and suggest a retry after this many seconds.
    Full {
        /// The warehouse.
        warehouse: String,
        /// Seconds until a slot may be free.
        retry_after_secs: u64,
    },
}

const MINUTE_MS: i64 = 60_000;

/// Fulfilment admission (cheap to clone).
#[derive(Clone)]
pub struct Fulfilment {
    config: Arc<FulfilmentConfig>,
    /// Queue mode: per warehouse, the first minute last found with room.
    open_from: Arc<Mutex<HashMap<String, i64>>>,
}

impl Fulfilment {
    /// Admission by `config` (validated).
    pub fn new(config: FulfilmentConfig) -> Self {
        Fulfilment {
            config: Arc::new(config),
            open_from: Arc::default(),
        }
    }

    /// The warehouse that ships to `market`, with its capacity a minute.
    pub fn warehouse_for(&self, market: &str) -> Option<(&str, u32)> {
        let ws = &self.config.warehouses;
        ws.iter()
            .find(|(_, w)| w.markets.iter().any(|m| m == market))
            .or_else(|| ws.iter().find(|(_, w)| w.markets.is_empty()))
            .map(|(name, w)| (name.as_str(), w.orders_per_minute))
    }

    /// Takes a slot for `order_id` shipping to `market`, at `now_ms`.
    pub async fn admit(
        &self,
        orders: &dyn OrdersStore,
        order_id: &str,
        market: &str,
        now_ms: i64,
    ) -> Result<Admission, StoreError> {
        let Some((warehouse, capacity)) = self.warehouse_for(market) else {
            return Ok(Admission::Unlimited);
        };
        let now_minute = now_ms.div_euclid(MINUTE_MS);
        let capacity = i64::from(capacity);
        let full = |minutes_ahead: i64| Admission::Full {
            warehouse: warehouse.to_owned(),
            retry_after_secs: u64::try_from(
                ((now_minute + minutes_ahead) * MINUTE_MS - now_ms + 999) / 1000,
            )
            .unwrap_or(1)
            .max(1),
        };
        if self.config.overflow == Overflow::Refuse {
            return Ok(
                if orders
                    .take_slot(order_id, warehouse, now_minute, capacity)
                    .await?
                {
                    Admission::Now
                } else {
                    full(1)
                },
            );
        }
        let last = now_minute + i64::from(self.config.max_queue_minutes);
        let mut minute = self.hint(warehouse).max(now_minute);
        while minute <= last {
            if orders
                .take_slot(order_id, warehouse, minute, capacity)
                .await?
            {
                self.remember(warehouse, minute);
                return Ok(if minute == now_minute {
                    Admission::Now
                } else {
                    Admission::Queued {
                        warehouse: warehouse.to_owned(),
                        at_ms: minute * MINUTE_MS,
                    }
                });
            }
            minute += 1;
        }
        self.remember(warehouse, last + 1);
        Ok(full(1))
    }

    fn hint(&self, warehouse: &str) -> i64 {
        let map = self.open_from.lock().unwrap_or_else(|p| p.into_inner());
        map.get(warehouse).copied().unwrap_or(0)
    }

    fn remember(&self, warehouse: &str, minute: i64) {
        let mut map = self.open_from.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(warehouse.to_owned()).or_insert(minute);
        *entry = (*entry).max(minute);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> FulfilmentConfig {
        toml::from_str(toml).expect("test config parses")
    }

    #[test]
    fn a_market_goes_to_the_warehouse_that_lists_it_else_to_the_catch_all() {
        let c = config(
            r#"
            [warehouses.berlin]
            orders_per_minute = 5
            markets = ["DE", "AT"]
            [warehouses.rest]
            orders_per_minute = 9
            "#,
        );
        c.validate().expect("valid");
        let f = Fulfilment::new(c);
        assert_eq!(f.warehouse_for("AT"), Some(("berlin", 5)));
        assert_eq!(f.warehouse_for("FR"), Some(("rest", 9)));
        let none = Fulfilment::new(FulfilmentConfig::default());
        assert_eq!(none.warehouse_for("DE"), None);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        for (toml, needle) in [
            (
                "[warehouses.a]\norders_per_minute = 0",
                "warehouses.a.orders_per_minute",
            ),
            ("[warehouses.a]\nmarkets = [\"de\"]", "warehouses.a.markets"),
            (
                "[warehouses.a]\nmarkets = [\"DE\"]\n[warehouses.b]\nmarkets = [\"DE\"]",
                "served by warehouse \"a\"",
            ),
            ("[warehouses.a]\n[warehouses.b]", "only one warehouse"),
            ("[warehouses.\"a b\"]", "warehouse name"),
            ("max_queue_minutes = 0", "max_queue_minutes"),
        ] {
            let err = config(toml).validate().expect_err(toml);
            assert!(err.contains(needle), "{toml}: {err}");
        }
        assert!(toml::from_str::<FulfilmentConfig>("overflow = \"drop\"").is_err());
    }
}
