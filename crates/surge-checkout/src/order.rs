//! What an order holds (the `document` of its row) and how it is shown to its owner.

use serde::{Deserialize, Serialize};
use surge_store::{HoldLine, OrderRow, StepLog};

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The SKU: `<product id>:<merchant id>`.
    pub sku: String,
    /// Units.
    pub qty: i64,
    /// Price of one unit when the order was placed, in minor units.
    pub unit_price_minor: i64,
}

/// The content of an order, stored as JSON in its row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDocument {
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Where to ship (as the client sent it, validated).
    pub shipping_address: Address,
    /// The payment provider's token for the payment method (never shown back).
    pub payment_method: String,
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// More of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// Postal code.
    pub postal_code: String,
    /// City.
    pub city: String,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
}

impl OrderDocument {
    /// The hold lines of this order in `market`.
    pub fn hold_lines(&self, market: &str) -> Vec<HoldLine> {
        self.lines
            .iter()
            .map(|l| HoldLine {
                sku: l.sku.clone(),
                market: market.to_owned(),
                qty: l.qty,
            })
            .collect()
    }
}

/// An order as its owner sees it (`GET /orders/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct OrderView<'a> {
    /// The order id.
    pub id: &'a str,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: &'a str,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The market.
    pub market: &'a str,
    /// The currency.
    pub currency: &'a str,
    /// What it costs, in minor units.
    pub total_minor: i64,
    /// The lines.
    pub lines: &'a [OrderLine],
    /// Where it ships.
    pub shipping_address: &'a Address,
    /// Created at, ms since the epoch.
    pub created_at_ms: i64,
    /// The saga's step history (only in `GET /orders/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView<'a>>>,
}

/// One line of the saga history.
#[derive(Debug, Clone, Serialize)]
pub struct StepView<'a> {
    /// The step.
    pub step: &'a str,
    /// What happened.
    pub outcome: &'a str,
    /// Details.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub detail: &'a str,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

impl<'a> OrderView<'a> {
    /// The view of `row` with its parsed `doc`, and its history when `log` is given.
    pub fn new(row: &'a OrderRow, doc: &'a OrderDocument, log: Option<&'a [StepLog]>) -> Self {
        OrderView {
            id: &row.id,
            status: &row.status,
            reason: row.reason.as_deref(),
            market: &row.market,
            currency: &row.currency,
            total_minor: row.total_minor,
            lines: &doc.lines,
            shipping_address: &doc.shipping_address,
            created_at_ms: row.created_at_ms,
            steps: log.map(|log| {
                log.iter()
                    .map(|l| StepView {
                        step: &l.step,
                        outcome: &l.outcome,
                        detail: &l.detail,
                        at_ms: l.at_ms,
                    })
                    .collect()
            }),
        }
    }
}

/// The answer to `POST /checkout` for an order seen as `view` (without history):
/// `201` once the order is confirmed or cancelled, `202` while it is pending, with the
/// view as JSON. It is what the request answers and what its `Idempotency-Key`
/// replays, byte for byte; a saga that finishes stores it with its last move (see
/// [`surge_store::Advance::response`]).
pub fn checkout_answer(view: &OrderView<'_>) -> serde_json::Result<(u16, Vec<u8>)> {
    let status = if view.status == "pending" { 202 } else { 201 };
    Ok((status, serde_json::to_vec(view)?))
}
