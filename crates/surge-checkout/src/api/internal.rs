//! The services' own HTTP APIs, for the orchestrator when inventory or payments run on
//! other machines (`checkout.remote`). Callers present the admin token; the edge never
//! routes `/internal`. Business outcomes (out of stock, declined) are `200` answers
//! with an `outcome`; errors are problem+json (`400`/`422` for a malformed call, `503`
//! with `Retry-After` when the service's store cannot be reached: retry).
//!
//! ```text
//! POST /internal/inventory/holds/{order}          {"lines":[{"sku","market","qty"}],"expires_at_ms"}
//!      → {"outcome":"held"} | {"outcome":"out_of_stock","sku","market","sold_out"} | {"outcome":"settled"}
//! POST /internal/inventory/holds/{order}/release  {"lines":[…]}  → {"units": n}
//! POST /internal/inventory/holds/{order}/commit                 → {"units": n}
//! GET  /internal/inventory/expired-holds?now_ms=&limit=         → {"orders": […]}
//! POST /internal/payments/{order}/authorize       {"amount_minor","currency","method_token"}
//! POST /internal/payments/{order}/capture
//! POST /internal/payments/{order}/void
//!      → {"outcome":"ok"} | {"outcome":"declined","reason"} | {"outcome":"conflict","why"}
//! ```
//!
//! Every call is idempotent per order, as the in-process call is: the orchestrator
//! repeats a call whose answer it did not get.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use surge_http::Problem;
use surge_http::admin::{AdminToken, require_admin};
use surge_http::problem::FieldError;
use surge_store::{HoldLine, HoldOutcome};

use super::store_problem;
use crate::inventory::Inventory;
use crate::payments::{AuthorizeRequest, PaymentError, Payments};

/// Largest body of an internal call, in bytes.
const MAX_BODY: usize = 256 * 1024;
/// Most lines in one hold.
const MAX_LINES: usize = 1_000;
/// Most orders in one answer of `expired-holds`.
const MAX_EXPIRED: u32 = 10_000;

/// Body of a hold: `L` is `Vec<HoldLine>` where it is read, a borrowed slice where it
/// is sent (no copy of the lines).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody<L> {
    /// The lines, all or nothing.
    pub lines: L,
    /// When the hold lapses, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Body of a release (`L` as in [`HoldBody`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody<L> {
    /// The order's lines (their sold-out marks are cleared); may be empty or absent.
    #[serde(default)]
    pub lines: L,
}

/// What a hold did.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HoldReply {
    /// Every line is held.
    Held,
    /// This line does not fit; nothing is held.
    OutOfStock {
        /// The SKU.
        sku: String,
        /// The market.
        market: String,
        /// Whether the service now knows the SKU sold out (callers may remember it).
        sold_out: bool,
    },
    /// The order's holds were already released or sold.
    Settled,
}

/// Units released or sold.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnitsReply {
    /// How many.
    pub units: i64,
}

/// Query of `expired-holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiredQuery {
    /// Holds that lapsed before this, ms since the Unix epoch.
    pub now_ms: i64,
    /// Most orders, 1..=10,000.
    pub limit: u32,
}

/// Orders with expired holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExpiredReply {
    /// Their ids.
    pub orders: Vec<String>,
}

/// Body of an authorization.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// Minor units, > 0.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The provider's token for the payment method.
    pub method_token: String,
}

/// What a payments call did.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PaymentReply {
    /// Done (now, or by an earlier run of the same call).
    Ok,
    /// The provider declined: final.
    Declined {
        /// The provider's reason.
        reason: String,
    },
    /// The payment's state does not allow the call: final.
    Conflict {
        /// Why.
        why: String,
    },
}

/// The inventory service's internal routes (admin token).
pub fn inventory_routes(inventory: Inventory, admin: AdminToken) -> Router {
    Router::new()
        .route("/internal/inventory/holds/{order}", post(hold))
        .route("/internal/inventory/holds/{order}/release", post(release))
        .route("/internal/inventory/holds/{order}/commit", post(commit))
        .route("/internal/inventory/expired-holds", get(expired))
        .route_layer(axum::middleware::from_fn_with_state(admin, require_admin))
        .with_state(inventory)
}

/// The payments service's internal routes (admin token).
pub fn payments_routes(payments: Payments, admin: AdminToken) -> Router {
    Router::new()
        .route("/internal/payments/{order}/authorize", post(authorize))
        .route("/internal/payments/{order}/capture", post(capture))
        .route("/internal/payments/{order}/void", post(void))
        .route_layer(axum::middleware::from_fn_with_state(admin, require_admin))
        .with_state(payments)
}

/// An order id as the services accept it: 1..=128 visible ASCII characters.
fn order_id(id: &str) -> Result<(), Problem> {
    if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Problem::bad_param(
            "order",
            "the order id is 1..=128 visible ASCII characters",
        ))
    }
}

/// Checks the lines of a call: how many (at least one for a hold), and each line's
/// units, SKU and market; the errors name each field.
fn check_lines(lines: &[HoldLine], at_least_one: bool) -> Result<(), Problem> {
    if lines.len() > MAX_LINES || (at_least_one && lines.is_empty()) {
        return Err(Problem::validation(vec![FieldError::new(
            "/lines",
            format!("must hold 1..={MAX_LINES} lines"),
        )]));
    }
    let mut errors = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.qty < 1 {
            errors.push(FieldError::new(format!("/lines/{i}/qty"), "must be >= 1"));
        }
        if !(1..=256).contains(&l.sku.len()) {
            errors.push(FieldError::new(format!("/lines/{i}/sku"), "1..=256 bytes"));
        }
        if !(1..=16).contains(&l.market.len()) {
            errors.push(FieldError::new(
                format!("/lines/{i}/market"),
                "1..=16 bytes",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    Ok(())
}

async fn hold(
    State(inventory): State<Inventory>,
    Path(order): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    order_id(&order)?;
    let b: HoldBody<Vec<HoldLine>> = surge_http::body::json(&headers, body, MAX_BODY).await?;
    check_lines(&b.lines, true)?;
    let reply = match inventory
        .hold(&order, &b.lines, b.expires_at_ms)
        .await
        .map_err(store_problem)?
    {
        HoldOutcome::Held => HoldReply::Held,
        HoldOutcome::OutOfStock { sku, market } => HoldReply::OutOfStock {
            sold_out: inventory.is_sold_out(&sku, &market),
            sku,
            market,
        },
        HoldOutcome::Settled => HoldReply::Settled,
    };
    Ok(Json(reply).into_response())
}

async fn release(
    State(inventory): State<Inventory>,
    Path(order): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    order_id(&order)?;
    let b: ReleaseBody<Vec<HoldLine>> = surge_http::body::json(&headers, body, MAX_BODY).await?;
    check_lines(&b.lines, false)?;
    let units = inventory
        .release(&order, &b.lines)
        .await
        .map_err(store_problem)?;
    Ok(Json(UnitsReply { units }).into_response())
}

async fn commit(
    State(inventory): State<Inventory>,
    Path(order): Path<String>,
) -> Result<Response, Problem> {
    order_id(&order)?;
    let units = inventory.commit(&order).await.map_err(store_problem)?;
    Ok(Json(UnitsReply { units }).into_response())
}

async fn expired(
    State(inventory): State<Inventory>,
    query: Result<Query<ExpiredQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_param("query", e.body_text()))?;
    if !(1..=MAX_EXPIRED).contains(&q.limit) {
        return Err(Problem::bad_param(
            "limit",
            format!("must be 1..={MAX_EXPIRED}"),
        ));
    }
    let orders = inventory
        .store()
        .expired_holds(q.now_ms, q.limit)
        .await
        .map_err(store_problem)?;
    Ok(Json(ExpiredReply { orders }).into_response())
}

/// A payments result as the caller gets it: business outcomes are answers, the rest
/// a 503 to retry.
fn payment_reply(r: Result<(), PaymentError>) -> Result<Response, Problem> {
    let reply = match r {
        Ok(()) => PaymentReply::Ok,
        Err(PaymentError::Declined { reason }) => PaymentReply::Declined { reason },
        Err(PaymentError::Conflict(why)) => PaymentReply::Conflict { why },
        Err(PaymentError::Store(e)) => return Err(store_problem(e)),
        Err(PaymentError::Transient(why)) => {
            tracing::debug!(why, "payment provider unavailable");
            return Err(Problem::unavailable(
                format!("the payment provider is unavailable: {why}"),
                1,
            ));
        }
    };
    Ok(Json(reply).into_response())
}

async fn authorize(
    State(payments): State<Payments>,
    Path(order): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    order_id(&order)?;
    let b: AuthorizeBody = surge_http::body::json(&headers, body, MAX_BODY).await?;
    let mut errors = Vec::new();
    if b.amount_minor < 1 {
        errors.push(FieldError::new("/amount_minor", "must be >= 1"));
    }
    if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
        errors.push(FieldError::new("/currency", "an ISO 4217 code, e.g. EUR"));
    }
    if !(1..=256).contains(&b.method_token.len()) {
        errors.push(FieldError::new("/method_token", "1..=256 bytes"));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let request = AuthorizeRequest {
        order_id: order,
        amount_minor: b.amount_minor,
        currency: b.currency,
        method_token: b.method_token,
    };
    payment_reply(payments.authorize(&request).await.map(|_| ()))
}

async fn capture(
    State(payments): State<Payments>,
    Path(order): Path<String>,
) -> Result<Response, Problem> {
    order_id(&order)?;
    payment_reply(payments.capture(&order).await.map(|_| ()))
}

async fn void(
    State(payments): State<Payments>,
    Path(order): Path<String>,
) -> Result<Response, Problem> {
    order_id(&order)?;
    payment_reply(payments.void(&order).await)
}
