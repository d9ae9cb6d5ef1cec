//! Metric names of checkout.

/// Counter: checkouts accepted (an order was created), labelled `market`.
pub const CHECKOUTS_TOTAL: &str = "surge_checkout_orders_created_total";
/// Counter: sagas that finished, labelled `status` (`confirmed`, `cancelled`).
pub const SAGAS_FINISHED_TOTAL: &str = "surge_checkout_sagas_finished_total";
/// Counter: saga step runs, labelled `step` and `outcome` (`done`, `business`, `transient`).
pub const STEPS_TOTAL: &str = "surge_checkout_saga_steps_total";
/// Counter: sagas that paused (stuck) or went to manual review, labelled `state`.
pub const SAGAS_PARKED_TOTAL: &str = "surge_checkout_sagas_parked_total";
/// Histogram: from order creation to a terminal state, in seconds, labelled `status`.
pub const SAGA_SECONDS: &str = "surge_checkout_saga_duration_seconds";
/// Gauge: sagas being driven by this process.
pub const ACTIVE_SAGAS: &str = "surge_checkout_active_sagas";
/// Counter: sagas taken up by the recovery poller (after a crash, a retry delay, or
/// from another node).
pub const SAGAS_RESUMED_TOTAL: &str = "surge_checkout_sagas_resumed_total";
/// Counter: holds refused from the sold-out memory, without a database round trip.
pub const SOLD_OUT_FROM_MEMORY_TOTAL: &str = "surge_checkout_sold_out_from_memory_total";
/// Counter: idempotent replays answered from a stored response.
pub const REPLAYS_TOTAL: &str = "surge_checkout_idempotent_replays_total";
/// Counter: expired holds the sweeper acted on, labelled `action` (`release`, `commit`,
/// `compensate`).
pub const EXPIRED_HOLDS_TOTAL: &str = "surge_checkout_expired_holds_total";
/// Counter: checkouts refused because their warehouse's capacity was reached, labelled
/// `warehouse`.
pub const FULFILMENT_REFUSED_TOTAL: &str = "surge_checkout_fulfilment_refused_total";
/// Counter: checkouts queued for a later minute of their warehouse, labelled `warehouse`.
pub const FULFILMENT_QUEUED_TOTAL: &str = "surge_checkout_fulfilment_queued_total";
/// Gauge: the catalog outbox position the offer feed has applied to the inventory.
pub const FEED_POSITION: &str = "surge_checkout_offer_feed_position";
/// Counter: times the offer feed found a gap (pruned entries) and declared every offer.
pub const FEED_RESYNCS_TOTAL: &str = "surge_checkout_offer_feed_resyncs_total";
/// Counter: failed steps of the offer feed.
pub const FEED_FAILURES_TOTAL: &str = "surge_checkout_offer_feed_failures_total";
/// Gauge: the outbox position the event relay has published, labelled `subject`.
pub const RELAY_POSITION: &str = "surge_checkout_event_relay_position";
/// Counter: events the relay published to the event stream.
pub const RELAY_PUBLISHED_TOTAL: &str = "surge_checkout_event_relay_published_total";
/// Counter: failed steps (or connections) of the event relay.
pub const RELAY_FAILURES_TOTAL: &str = "surge_checkout_event_relay_failures_total";
/// Counter: calls to a remote service (`checkout.remote`), labelled `service`
/// (`inventory`, `payments`) and `outcome` (`ok`, `error`: no connection, a timeout, an
/// answer other than 200, or one that cannot be read).
pub const REMOTE_CALLS_TOTAL: &str = "surge_checkout_remote_calls_total";
/// Histogram: how long a call to a remote service took, in seconds, labelled `service`.
pub const REMOTE_CALL_SECONDS: &str = "surge_checkout_remote_call_seconds";
