//! `POST /checkout`: validate, price, claim the `Idempotency-Key`, create the order and
//! start its saga, answer with the order once the saga is done (or 202 while it runs).
//!
//! `Idempotency-Key` semantics (IETF httpapi draft, Stripe practice), keys scoped to the
//! user:
//! - no key → 400 `idempotency-key-missing`;
//! - a key used before with a different request → 422 `idempotency-key-reused`;
//! - a key whose first request is still running → 409 `idempotency-key-in-use` with
//!   `Retry-After`;
//! - a key whose first request was answered → that answer again, byte for byte, with
//!   `Idempotent-Replayed: true`;
//! - a key whose first request died before answering (its lock ran out) → the order it
//!   created, as it is now (that answer is then stored).
//!
//! Each checkout takes a slot of its warehouse's shipping capacity before its order is
//! created ([`crate::fulfilment`]): when the capacity is reached it is refused with 503
//! and `Retry-After`, or queued for a later minute (202, the saga starts then).
//!
//! A SKU this node knows to be sold out is answered 409 `sold-out` from memory before
//! anything is written (no order, nothing stored under the key: a retry asks again).
//!
//! "Different request" means a different parsed request (same items, market, payment
//! method and address in any key order and spacing count as the same).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use surge_http::envelope::Envelope;
use surge_http::problem::FieldError;
use surge_http::{Problem, ProblemKind};
use surge_store::{Created, NewOrder, OrderRow, SagaState, StepLog};

use super::{Api, store_problem};
use crate::fulfilment::Admission;
use crate::metrics;
use crate::order::{Address, OrderDocument, OrderLine, OrderView};
use crate::saga::driver::now_ms;
use crate::saga::{Step, order_placed};

/// The header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// `Retry-After` of a 409 for a key in use, and of a 503 when no saga slot is free.
const RETRY_AFTER_SECS: u64 = 1;

/// The request body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// What to buy.
    pub items: Vec<Item>,
    /// The market, ISO 3166-1 alpha-2 (e.g. `DE`).
    pub market: String,
    /// The payment provider's token for the payment method.
    pub payment_method: String,
    /// Where to ship.
    pub shipping_address: Address,
}

/// One item of the request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The SKU: `<product id>:<merchant id>`.
    pub sku: String,
    /// Units, 1..=`checkout.http.max_qty`.
    pub qty: i64,
}

fn key_of(headers: &HeaderMap) -> Result<String, Problem> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(Problem::new(
            ProblemKind::IdempotencyKeyMissing,
            "POST /checkout needs an Idempotency-Key header (e.g. a UUID), so that a retry \
             cannot place a second order",
        ));
    };
    let bytes = v.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_BYTES
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(Problem::bad_param(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn validate(r: &CheckoutRequest, api: &Api) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let limits = &api.config.http;
    if r.items.is_empty() {
        errors.push(FieldError::new("/items", "at least one item is needed"));
    }
    if r.items.len() > limits.max_lines {
        errors.push(FieldError::new(
            "/items",
            format!("at most {} items", limits.max_lines),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in r.items.iter().enumerate() {
        if !valid_sku(&item.sku) {
            errors.push(FieldError::new(
                format!("/items/{i}/sku"),
                "must be <product id>:<merchant id>, 1 to 128 characters of [A-Za-z0-9._:-]",
            ));
        } else if !seen.insert(item.sku.as_str()) {
            errors.push(FieldError::new(
                format!("/items/{i}/sku"),
                "appears twice; put the units on one item",
            ));
        }
        if !(1..=limits.max_qty).contains(&item.qty) {
            errors.push(FieldError::new(
                format!("/items/{i}/qty"),
                format!("must be 1..={}", limits.max_qty),
            ));
        }
    }
    if r.market.len() != 2 || !r.market.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(FieldError::new(
            "/market",
            "must be an ISO 3166-1 alpha-2 code, e.g. DE",
        ));
    }
    if r.payment_method.is_empty()
        || r.payment_method.len() > 128
        || !r.payment_method.bytes().all(|b| b.is_ascii_graphic())
    {
        errors.push(FieldError::new(
            "/payment_method",
            "must be a payment method token, 1 to 128 visible ASCII characters",
        ));
    }
    let a = &r.shipping_address;
    for (field, value, max) in [
        ("name", &a.name, 200),
        ("line1", &a.line1, 200),
        ("postal_code", &a.postal_code, 20),
        ("city", &a.city, 100),
    ] {
        if value.trim().is_empty() || value.len() > max {
            errors.push(FieldError::new(
                format!("/shipping_address/{field}"),
                format!("must be 1 to {max} characters"),
            ));
        }
    }
    if a.line2.as_ref().is_some_and(|l| l.len() > 200) {
        errors.push(FieldError::new(
            "/shipping_address/line2",
            "must be at most 200 characters",
        ));
    }
    if a.country.len() != 2 || !a.country.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(FieldError::new(
            "/shipping_address/country",
            "must be an ISO 3166-1 alpha-2 code, e.g. DE",
        ));
    }
    errors
}

fn valid_sku(sku: &str) -> bool {
    (3..=128).contains(&sku.len())
        && sku
            .split_once(':')
            .is_some_and(|(p, m)| !p.is_empty() && !m.is_empty())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A stable hash of the parsed request (key order and spacing do not matter).
pub fn request_hash(r: &CheckoutRequest) -> String {
    let canonical = serde_json::to_vec(r).unwrap_or_default();
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&canonical))
}

/// `POST /checkout`.
pub async fn post(
    State(api): State<Api>,
    Extension(env): Extension<Envelope>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    if env.user_id.is_empty() {
        return Err(Problem::new(
            ProblemKind::Forbidden,
            "only a signed-in user can check out",
        ));
    }
    let key = key_of(&headers)?;
    let request: CheckoutRequest =
        surge_http::body::json(&headers, body, api.config.http.max_body_bytes).await?;
    let errors = validate(&request, &api);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let hash = request_hash(&request);
    let orders = api.saga.orders();
    if let Some(existing) = orders
        .key(&env.user_id, &key)
        .await
        .map_err(store_problem)?
        && existing.expires_at_ms > now_ms()
    {
        return answer_existing(&api, &env.user_id, &key, &hash, existing).await;
    }

    // A SKU known to be sold out is refused from memory: no order, no write.
    let inventory = api.saga.inventory();
    if let Some(item) = request
        .items
        .iter()
        .find(|i| inventory.is_sold_out(&i.sku, &request.market))
    {
        ::metrics::counter!(metrics::SOLD_OUT_FROM_MEMORY_TOTAL).increment(1);
        return Err(Problem::new(
            ProblemKind::SoldOut,
            format!("{} is sold out in {}", item.sku, request.market),
        ));
    }

    // Price the lines (the catalog's price now is the order's price).
    let mut lines = Vec::with_capacity(request.items.len());
    let mut currency: Option<String> = None;
    let mut errors = Vec::new();
    for (i, item) in request.items.iter().enumerate() {
        match api.pricing.price(&item.sku, &request.market).await {
            Ok(Some(price)) => {
                if currency.get_or_insert_with(|| price.currency.clone()) != &price.currency {
                    errors.push(FieldError::new(
                        format!("/items/{i}/sku"),
                        "is priced in another currency than the other items",
                    ));
                }
                lines.push(OrderLine {
                    sku: item.sku.clone(),
                    qty: item.qty,
                    unit_price_minor: price.unit_minor,
                });
            }
            Ok(None) => errors.push(FieldError::new(
                format!("/items/{i}/sku"),
                format!("is not offered in {}", request.market),
            )),
            Err(e) => return Err(store_problem(e)),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let total = lines
        .iter()
        .try_fold(0_i64, |sum, l| {
            sum.checked_add(l.unit_price_minor.checked_mul(l.qty)?)
        })
        .ok_or_else(|| {
            Problem::validation(vec![FieldError::new("/items", "the total is too large")])
        })?;
    let Some(slot) = api.saga.try_slot() else {
        return Err(Problem::unavailable(
            "checkout is at capacity; try again shortly",
            RETRY_AFTER_SECS,
        ));
    };

    let now = now_ms();
    let timing = api.saga.timing();
    let id = new_order_id();
    let admission = api
        .fulfilment
        .admit(orders.as_ref(), &id, &request.market, now)
        .await
        .map_err(store_problem)?;
    let (starts_at, queued) = match &admission {
        Admission::Full {
            warehouse,
            retry_after_secs,
        } => {
            ::metrics::counter!(metrics::FULFILMENT_REFUSED_TOTAL, "warehouse" => warehouse.clone())
                .increment(1);
            return Err(Problem::unavailable(
                format!(
                    "the warehouse that ships to {} has no capacity left for now; try again later",
                    request.market
                ),
                *retry_after_secs,
            ));
        }
        Admission::Queued { warehouse, at_ms } => {
            ::metrics::counter!(metrics::FULFILMENT_QUEUED_TOTAL, "warehouse" => warehouse.clone())
                .increment(1);
            (
                *at_ms,
                Some(format!(
                    "waiting for a shipping slot of warehouse {warehouse}"
                )),
            )
        }
        Admission::Now | Admission::Unlimited => (now, None),
    };
    let doc = OrderDocument {
        lines,
        shipping_address: request.shipping_address.clone(),
        payment_method: request.payment_method.clone(),
    };
    let order = OrderRow {
        id: id.clone(),
        user_id: env.user_id.clone(),
        market: request.market.clone(),
        currency: currency.unwrap_or_default(),
        total_minor: total,
        document: serde_json::to_string(&doc).map_err(|e| Problem::internal(&e))?,
        status: "pending".into(),
        reason: None,
        saga_state: SagaState::Running,
        step: Step::HoldStock.as_str().into(),
        attempts: 0,
        next_at_ms: starts_at,
        step_deadline_ms: starts_at.saturating_add(timing.step_deadline_ms),
        lease_owner: api.saga.node().to_owned(),
        // A queued saga is left to the recovery poller, which takes it up when due.
        lease_until_ms: if queued.is_some() {
            now
        } else {
            now.saturating_add(api.saga.lease_ms())
        },
        version: 1,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let new = NewOrder {
        idempotency_key: key.clone(),
        request_hash: hash.clone(),
        locked_until_ms: now.saturating_add(api.lock_ms),
        key_expires_at_ms: now.saturating_add(api.retention_ms),
        log: [
            Some(StepLog {
                step: "create_order".into(),
                outcome: "done".into(),
                detail: String::new(),
                at_ms: now,
            }),
            queued.clone().map(|detail| StepLog {
                step: "queued".into(),
                outcome: "intent".into(),
                detail,
                at_ms: now,
            }),
            Some(StepLog {
                step: Step::HoldStock.as_str().into(),
                outcome: "intent".into(),
                detail: String::new(),
                at_ms: starts_at,
            }),
        ]
        .into_iter()
        .flatten()
        .collect(),
        events: vec![order_placed(&order)],
        order,
    };
    let created = orders.create(&new).await;
    if !matches!(created, Ok(Created::New)) && admission != Admission::Unlimited {
        // No order was created here: its fulfilment slot goes back (should that fail,
        // the slot stays taken: capacity unused, never exceeded).
        if let Err(e) = orders.return_slot(&id).await {
            tracing::warn!(order = %id, error = %e, "cannot give a fulfilment slot back");
        }
    }
    match created.map_err(store_problem)? {
        Created::New => {}
        Created::Existing(existing) => {
            // A concurrent request with the same key won the race.
            drop(slot);
            return answer_existing(&api, &env.user_id, &key, &hash, existing).await;
        }
    }
    ::metrics::counter!(metrics::CHECKOUTS_TOTAL, "market" => request.market.clone()).increment(1);
    let mut row = new.order;
    row.version = 1;
    if queued.is_some() {
        // Its saga starts when its minute comes: 202 with the pending order.
        drop(slot);
        return respond_and_store(&api, &env.user_id, &key, &row, &doc, false).await;
    }
    let handle = api.saga.start(row.clone(), slot);
    let finished = match handle {
        Some(h) => {
            match tokio::time::timeout(Duration::from_millis(api.config.respond_within_ms), h).await
            {
                Ok(Ok(Some(done))) => Some(done),
                _ => None,
            }
        }
        None => None,
    };
    // A saga that finished stored its answer on the key with its last move.
    let (row, stored) = match finished {
        Some(r) => {
            let done = r.saga_state == SagaState::Done;
            (r, done)
        }
        None => (
            orders
                .order(&id)
                .await
                .map_err(store_problem)?
                .unwrap_or(row),
            false,
        ),
    };
    respond_and_store(&api, &env.user_id, &key, &row, &doc, stored).await
}

/// The answer for a key that exists already.
async fn answer_existing(
    api: &Api,
    user: &str,
    key: &str,
    hash: &str,
    existing: surge_store::KeyRecord,
) -> Result<Response, Problem> {
    if existing.request_hash != hash {
        return Err(Problem::new(
            ProblemKind::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request; use a new key for a new checkout",
        ));
    }
    if let Some((status, content_type, body)) = existing.response {
        ::metrics::counter!(metrics::REPLAYS_TOTAL).increment(1);
        return Ok(replay(status, &content_type, body, &existing.order_id));
    }
    let now = now_ms();
    if existing.locked_until_ms > now {
        return Err(Problem::new(
            ProblemKind::IdempotencyKeyInUse,
            "the first request with this Idempotency-Key is still running; retry shortly",
        )
        .with_retry_after(RETRY_AFTER_SECS));
    }
    // The first request died before answering: answer from the order as it is now.
    let orders = api.saga.orders();
    if !orders
        .relock_key(user, key, now, now.saturating_add(api.lock_ms))
        .await
        .map_err(store_problem)?
    {
        // Another retry took it over a moment ago (or answered it).
        return match orders.key(user, key).await.map_err(store_problem)? {
            Some(k) if k.response.is_some() => {
                let (status, content_type, body) = k.response.unwrap_or_default();
                Ok(replay(status, &content_type, body, &k.order_id))
            }
            _ => Err(Problem::new(
                ProblemKind::IdempotencyKeyInUse,
                "another request with this Idempotency-Key is running; retry shortly",
            )
            .with_retry_after(RETRY_AFTER_SECS)),
        };
    }
    let row = orders
        .order(&existing.order_id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::internal(&"an idempotency key names a missing order"))?;
    let doc: OrderDocument =
        serde_json::from_str(&row.document).map_err(|e| Problem::internal(&e))?;
    respond_and_store(api, user, key, &row, &doc, false).await
}

fn replay(status: u16, content_type: &str, body: Vec<u8>, order_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/orders/{order_id}")) {
        h.insert(LOCATION, v);
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

/// 201 with the order once its saga is done (confirmed or cancelled: the body says
/// which, and why), 202 while it is still running; the answer is stored for replays.
/// `stored`: the saga stored this very answer with its last move already. When another
/// answer got stored first (the saga finished while this request gave up waiting), that
/// one is replayed instead, so a key has one answer.
async fn respond_and_store(
    api: &Api,
    user: &str,
    key: &str,
    row: &OrderRow,
    doc: &OrderDocument,
    stored: bool,
) -> Result<Response, Problem> {
    let (status, body) = crate::order::checkout_answer(&OrderView::new(row, doc, None))
        .map_err(|e| Problem::internal(&e))?;
    if !stored {
        let orders = api.saga.orders();
        let fresh = orders
            .store_response(user, key, status, "application/json", &body)
            .await
            .map_err(store_problem)?;
        if !fresh
            && let Some(k) = orders.key(user, key).await.map_err(store_problem)?
            && let Some((status, content_type, body)) = k.response
            && k.order_id == row.id
        {
            return Ok(replay(status, &content_type, body, &k.order_id));
        }
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("/orders/{}", row.id)) {
        h.insert(LOCATION, v);
    }
    Ok(r)
}

/// A new order id: time-ordered, 26 characters of Crockford base32 (a ULID).
pub fn new_order_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = u128::try_from(now_ms()).unwrap_or(0) & ((1 << 48) - 1);
    let random: u128 = rand::random::<u128>() & ((1 << 80) - 1);
    let mut v = (ms << 80) | random;
    let mut out = [0_u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn order_ids_are_ulids_in_time_order() {
        let a = new_order_id();
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, new_order_id());
    }

    #[test]
    fn the_request_hash_ignores_key_order_and_spacing() {
        let a: CheckoutRequest = serde_json::from_str(
            r#"{"items":[{"sku":"p1:m1","qty":1}],"market":"DE","payment_method":"tok",
               "shipping_address":{"name":"A","line1":"B 1","postal_code":"1","city":"C","country":"DE"}}"#,
        )
        .unwrap();
        let b: CheckoutRequest = serde_json::from_str(
            r#"{"market":"DE","payment_method":"tok","items":[{"qty":1,"sku":"p1:m1"}],
               "shipping_address":{"country":"DE","city":"C","postal_code":"1","line1":"B 1","name":"A"}}"#,
        )
        .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let mut c = a.clone();
        c.items[0].qty = 2;
        assert_ne!(request_hash(&a), request_hash(&c));
    }

    #[test]
    fn skus_name_a_product_and_a_merchant() {
        assert!(valid_sku("p-1:m_2"));
        assert!(!valid_sku("p1"));
        assert!(!valid_sku(":m"));
        assert!(!valid_sku("p:"));
        assert!(!valid_sku("p 1:m"));
    }
}
