//! Checkout's events as their consumers see them: the JSON of an event of the checkout
//! outbox (`OrderPlaced`, `OrderConfirmed`, `OrderCancelled`) and of the inventory
//! outbox (`StockChanged`), the same in the admin API and on the event stream.

use serde_json::{Value, json};
use surge_store::{CheckoutEvent, StockEvent};

/// An event of the checkout outbox.
pub fn checkout_event_json(e: &CheckoutEvent) -> Value {
    let payload: Value = serde_json::from_str(&e.event.payload).unwrap_or(Value::Null);
    json!({
        "position": e.position, "event_id": e.event.event_id, "type": e.event.kind,
        "order_id": e.event.order_id, "payload": payload, "created_at_ms": e.created_at_ms,
    })
}

/// A `StockChanged` event of the inventory outbox.
pub fn stock_event_json(e: &StockEvent) -> Value {
    json!({
        "position": e.position, "event_id": e.event_id(), "type": "StockChanged",
        "sku": e.sku, "market": e.market, "cause": e.cause, "order_id": e.order_id,
        "available": e.level.available, "held": e.level.held, "sold": e.level.sold,
        "declared": e.level.declared, "owed": e.level.owed,
        "created_at_ms": e.created_at_ms,
    })
}
