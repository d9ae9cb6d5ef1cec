//! The relay: checkout's outboxes onto the event stream (NATS JetStream).
//!
//! Events are written to an outbox in the same transaction as the change they describe
//! (the checkout outbox by orders, the inventory outbox by inventory). The relay reads
//! each outbox by position and publishes every event to one JetStream stream, on
//! `<prefix>.checkout.events` or `<prefix>.inventory.events`, as the JSON of
//! [`crate::events`], with headers:
//! - `Nats-Msg-Id`: the event id. JetStream drops a second message with an id it has
//!   seen within the stream's duplicate window, so an event published again after a
//!   crash (published, not yet known to be) is stored once; consumers dedupe on the
//!   same id beyond the window;
//! - `Surge-Position`: the outbox position, and `Surge-Type`: the event type.
//!
//! A batch is published, then every acknowledgement awaited (the stream has stored
//! each message) before the relay moves on. Where it stands is not kept anywhere else:
//! on start it reads the `Surge-Position` of the last message on each subject, so the
//! stream itself is the relay's cursor and a restart publishes nothing twice (beyond
//! what the duplicate window absorbs).
//!
//! Each process relays the outboxes of the services it runs ([`Outboxes`]): with the
//! services on separate nodes, the orders node relays the checkout outbox and the
//! inventory node the inventory outbox, to the same stream.
//!
//! Events reach the stream in position order per outbox. Outboxes are pruned by age
//! (`checkout.event_retention_ms`, `checkout.inventory.event_retention_ms`): a relay
//! stopped for longer than that loses the events pruned meanwhile.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, StorageType};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use surge_store::{InventoryStore, OrdersStore, StoreError};
use tokio::sync::watch;

/// The relay's settings (`[checkout.events]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`. Unset (the default): no relay;
    /// the events are read from the admin API.
    pub nats_url: Option<String>,
    /// The JetStream stream, created if missing. Default `SURGE_EVENTS`.
    pub stream: String,
    /// The first token of the subjects. Default `surge`.
    pub subject_prefix: String,
    /// How long the stream keeps a message, in ms (0: for ever). Default 7 days.
    pub max_age_ms: u64,
    /// JetStream's duplicate window, in ms. Default 120,000.
    pub duplicate_window_ms: u64,
    /// How often the outboxes are looked at when the relay is caught up, in ms.
    /// Default 200.
    pub poll_ms: u64,
    /// Most events published before their acknowledgements are awaited. Default 500.
    pub batch: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            nats_url: None,
            stream: "SURGE_EVENTS".into(),
            subject_prefix: "surge".into(),
            max_age_ms: 7 * 86_400_000,
            duplicate_window_ms: 120_000,
            poll_ms: 200,
            batch: 500,
        }
    }
}

impl RelayConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let token = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token(&self.stream) {
            return Err(format!(
                "checkout.events.stream must be [A-Za-z0-9_-]+, got {:?}",
                self.stream
            ));
        }
        if !token(&self.subject_prefix) {
            return Err(format!(
                "checkout.events.subject_prefix must be [A-Za-z0-9_-]+, got {:?}",
                self.subject_prefix
            ));
        }
        if self.poll_ms == 0 || self.duplicate_window_ms == 0 {
            return Err("checkout.events.poll_ms and duplicate_window_ms must be > 0".to_owned());
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(format!(
                "checkout.events.batch must be 1..=10000, got {}",
                self.batch
            ));
        }
        if let Some(url) = &self.nats_url
            && !url.starts_with("nats://")
        {
            return Err(format!(
                "checkout.events.nats_url must be nats://host:port, got {url:?}"
            ));
        }
        Ok(())
    }
}

/// Why the relay cannot go on (it retries).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An outbox could not be read.
    #[error("reading the outbox: {0}")]
    Store(#[from] StoreError),
    /// NATS or JetStream refused or did not answer.
    #[error("the event stream: {0}")]
    Stream(String),
}

fn stream_error(e: impl std::fmt::Display) -> RelayError {
    RelayError::Stream(e.to_string())
}

/// An event on its way to the stream.
struct Outgoing {
    position: i64,
    id: String,
    kind: String,
    payload: Bytes,
}

/// An outbox the relay reads.
enum Source {
    Checkout(Arc<dyn OrdersStore>),
    Inventory(Arc<dyn InventoryStore>),
}

impl Source {
    async fn after(&self, position: i64, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        let json = |v: serde_json::Value| Bytes::from(v.to_string());
        Ok(match self {
            Source::Checkout(store) => store
                .events(position, limit)
                .await?
                .iter()
                .map(|e| Outgoing {
                    position: e.position,
                    id: e.event.event_id.clone(),
                    kind: e.event.kind.clone(),
                    payload: json(crate::events::checkout_event_json(e)),
                })
                .collect(),
            Source::Inventory(store) => store
                .events(position, limit)
                .await?
                .iter()
                .map(|e| Outgoing {
                    position: e.position,
                    id: e.event_id(),
                    kind: "StockChanged".into(),
                    payload: json(crate::events::stock_event_json(e)),
                })
                .collect(),
        })
    }
}

/// The outboxes a process relays: those of the services it runs (orders', inventory's,
/// or both).
#[derive(Clone, Default)]
pub struct Outboxes {
    /// The checkout outbox (`OrderPlaced`, `OrderConfirmed`, `OrderCancelled`).
    pub orders: Option<Arc<dyn OrdersStore>>,
    /// The inventory outbox (`StockChanged`).
    pub inventory: Option<Arc<dyn InventoryStore>>,
}

impl Outboxes {
    /// Both outboxes.
    pub fn both(orders: Arc<dyn OrdersStore>, inventory: Arc<dyn InventoryStore>) -> Self {
        Outboxes {
            orders: Some(orders),
            inventory: Some(inventory),
        }
    }
}

/// One outbox, its subject and how far it has been relayed.
struct Lane {
    source: Source,
    /// Cheap to clone (shared bytes), once per message.
    subject: async_nats::Subject,
    position: i64,
}

/// The relay of checkout's two outboxes to one JetStream stream.
pub struct Relay {
    js: jetstream::Context,
    lanes: Vec<Lane>,
    batch: u32,
}

impl Relay {
    /// Connects, creates the stream if it is missing and finds where each outbox was
    /// relayed to (the last message on its subject).
    pub async fn connect(config: &RelayConfig, outboxes: &Outboxes) -> Result<Relay, RelayError> {
        let url = config
            .nats_url
            .as_deref()
            .ok_or_else(|| RelayError::Stream("no checkout.events.nats_url".into()))?;
        let client = async_nats::connect(url).await.map_err(stream_error)?;
        let js = jetstream::new(client);
        let checkout = format!("{}.checkout.events", config.subject_prefix);
        let inventory_subject = format!("{}.inventory.events", config.subject_prefix);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: vec![checkout.clone(), inventory_subject.clone()],
                max_age: Duration::from_millis(config.max_age_ms),
                duplicate_window: Duration::from_millis(config.duplicate_window_ms),
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(stream_error)?;
        let mut lanes = Vec::with_capacity(2);
        if let Some(orders) = &outboxes.orders {
            lanes.push(Lane {
                source: Source::Checkout(orders.clone()),
                subject: checkout.into(),
                position: 0,
            });
        }
        if let Some(inventory) = &outboxes.inventory {
            lanes.push(Lane {
                source: Source::Inventory(inventory.clone()),
                subject: inventory_subject.into(),
                position: 0,
            });
        }
        for lane in &mut lanes {
            lane.position = match stream
                .get_last_raw_message_by_subject(lane.subject.as_str())
                .await
            {
                Ok(last) => last
                    .headers
                    .get(POSITION)
                    .and_then(|v| v.as_str().parse().ok())
                    .ok_or_else(|| {
                        RelayError::Stream(format!(
                            "the last message on {} has no {POSITION} header",
                            lane.subject
                        ))
                    })?,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
                Err(e) => return Err(stream_error(e)),
            };
            tracing::info!(subject = %lane.subject, position = lane.position, "event relay resumes");
        }
        Ok(Relay {
            js,
            lanes,
            batch: config.batch,
        })
    }

    /// Publishes what each outbox holds past where it was relayed to (at most one batch
    /// each). Returns how many events were published.
    pub async fn step(&mut self) -> Result<usize, RelayError> {
        let mut published = 0;
        for lane in &mut self.lanes {
            let events = lane.source.after(lane.position, self.batch).await?;
            let mut acks = Vec::with_capacity(events.len());
            for e in &events {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, e.id.as_str());
                headers.insert(POSITION, e.position.to_string().as_str());
                headers.insert(TYPE, e.kind.as_str());
                let ack = self
                    .js
                    .publish_with_headers(lane.subject.clone(), headers, e.payload.clone())
                    .await
                    .map_err(stream_error)?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(stream_error)?;
            }
            if let Some(last) = events.last() {
                lane.position = last.position;
                published += events.len();
                ::metrics::gauge!(crate::metrics::RELAY_POSITION, "subject" => lane.subject.to_string())
                    .set(last.position as f64);
            }
        }
        ::metrics::counter!(crate::metrics::RELAY_PUBLISHED_TOTAL).increment(published as u64);
        Ok(published)
    }
}

/// The header with an event's outbox position.
pub const POSITION: &str = "Surge-Position";
/// The header with an event's type.
pub const TYPE: &str = "Surge-Type";

/// Runs the relay until `stop` turns true: connects (again, after a failure, with
/// backoff up to 30 s), publishes, and polls every `poll_ms` once caught up.
pub async fn run(config: RelayConfig, outboxes: Outboxes, mut stop: watch::Receiver<bool>) {
    let poll = Duration::from_millis(config.poll_ms);
    let mut failures = 0_u32;
    let mut relay: Option<Relay> = None;
    loop {
        let outcome = match relay.as_mut() {
            Some(r) => r.step().await,
            None => match Relay::connect(&config, &outboxes).await {
                Ok(r) => {
                    relay = Some(r);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        let nap = match outcome {
            // More may be waiting: go on at once.
            Ok(n) if n > 0 => {
                failures = 0;
                Duration::ZERO
            }
            Ok(_) => {
                failures = 0;
                poll
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                ::metrics::counter!(crate::metrics::RELAY_FAILURES_TOTAL).increment(1);
                tracing::warn!(error = %e, failures, "the event relay failed; retrying");
                // Start again from the stream's own record of what it holds.
                relay = None;
                poll.saturating_mul(2_u32.saturating_pow(failures.min(8)))
                    .min(Duration::from_secs(30))
            }
        };
        if *stop.borrow() {
            return;
        }
        if !nap.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
