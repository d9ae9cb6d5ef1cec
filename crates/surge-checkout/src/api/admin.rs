//! Operators' routes: sagas by state (including stuck ones), one saga with its history
//! and audit trail, retry and force-compensate (both audited), stock levels and
//! restocks, and the checkout outbox.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;
use surge_http::{Problem, ProblemKind};
use surge_store::{OrderRow, SagaState};

use super::orders::{cursor_param, encode_cursor};
use super::{Api, no_order, store_problem};
use crate::inventory::Inventory;
use crate::saga::driver::{AdminError, now_ms};

/// Query of `GET /admin/sagas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaQuery {
    /// `running`, `compensating`, `paused`, `review`, `done`, or `stuck` (not done and
    /// unchanged for `checkout.saga.stuck_after_ms`). Default: every saga not done.
    pub state: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn saga_json(o: &OrderRow) -> serde_json::Value {
    serde_json::json!({
        "id": o.id,
        "user_id": o.user_id,
        "status": o.status,
        "reason": o.reason,
        "saga_state": o.saga_state.as_str(),
        "step": o.step,
        "attempts": o.attempts,
        "next_at_ms": o.next_at_ms,
        "step_deadline_ms": o.step_deadline_ms,
        "lease_owner": o.lease_owner,
        "lease_until_ms": o.lease_until_ms,
        "total_minor": o.total_minor,
        "currency": o.currency,
        "created_at_ms": o.created_at_ms,
        "updated_at_ms": o.updated_at_ms,
    })
}

fn admin_problem(e: AdminError) -> Problem {
    match e {
        AdminError::NotFound => no_order(),
        AdminError::Conflict(why) => Problem::new(ProblemKind::Conflict, why),
        AdminError::Store(e) => store_problem(e),
    }
}

/// `GET /admin/sagas?state=stuck`.
pub async fn list(
    State(api): State<Api>,
    query: Result<Query<SagaQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_param("query", e.body_text()))?;
    let limit = page_size(q.limit)?;
    let (state, changed_before) = match q.state.as_deref() {
        None => (None, i64::MAX),
        Some("stuck") => (None, now_ms().saturating_sub(api.saga.stuck_after_ms())),
        Some(s) => (
            Some(SagaState::parse(s).ok_or_else(|| {
                Problem::bad_param(
                    "state",
                    "must be running, compensating, paused, review, done or stuck",
                )
            })?),
            i64::MAX,
        ),
    };
    let after = cursor_param(q.cursor.as_deref())?;
    let rows = api
        .saga
        .orders()
        .sagas(state, changed_before, after, limit)
        .await
        .map_err(store_problem)?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| encode_cursor(r.updated_at_ms, &r.id)))
        .flatten();
    let sagas: Vec<_> = rows.iter().map(saga_json).collect();
    Ok(Json(serde_json::json!({ "sagas": sagas, "next_cursor": next })).into_response())
}

/// `GET /admin/sagas/{id}`: the saga, its step history, its audit trail, its payment.
pub async fn show(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, Problem> {
    let orders = api.saga.orders();
    let row = orders
        .order(&id)
        .await
        .map_err(store_problem)?
        .ok_or_else(no_order)?;
    let log = orders.log(&id).await.map_err(store_problem)?;
    let audit = orders.audit_of(&id).await.map_err(store_problem)?;
    let mut body = saga_json(&row);
    body["steps"] = log
        .iter()
        .map(|l| serde_json::json!({"step": l.step, "outcome": l.outcome, "detail": l.detail, "at_ms": l.at_ms}))
        .collect();
    body["audit"] = audit
        .iter()
        .map(|a| serde_json::json!({"actor": a.actor, "action": a.action, "note": a.note, "at_ms": a.at_ms}))
        .collect();
    Ok(Json(body).into_response())
}

/// Body of the operator actions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Who does it (default `admin`).
    #[serde(default)]
    pub actor: Option<String>,
    /// Why, for the audit trail.
    #[serde(default)]
    pub note: String,
}

async fn action_body(headers: &HeaderMap, body: Body) -> Result<ActionBody, Problem> {
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map_err(|_| Problem::new(ProblemKind::PayloadTooLarge, "at most 16 KiB"))?;
    if bytes.is_empty() {
        return Ok(ActionBody::default());
    }
    let b: ActionBody = surge_http::body::json(headers, Body::from(bytes), 16 * 1024).await?;
    if b.note.len() > 1000
        || b.actor
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.len() > 100)
    {
        return Err(Problem::bad_param(
            "body",
            "actor is 1 to 100 characters, note at most 1000",
        ));
    }
    Ok(b)
}

/// An operator action on a saga.
#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Compensate,
}

async fn act(
    api: &Api,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    action: Action,
) -> Result<Response, Problem> {
    let b = action_body(headers, body).await?;
    let actor = b.actor.as_deref().unwrap_or("admin");
    let row = match action {
        Action::Retry => api.saga.retry(id, actor, &b.note).await,
        Action::Compensate => api.saga.force_compensate(id, actor, &b.note).await,
    }
    .map_err(admin_problem)?;
    Ok(Json(saga_json(&row)).into_response())
}

/// `POST /admin/sagas/{id}/retry`: a paused saga, or one in review, runs its step again.
pub async fn retry(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    act(&api, &id, &headers, body, Action::Retry).await
}

/// `POST /admin/sagas/{id}/compensate`: cancels an order before the point of no return.
pub async fn compensate(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    act(&api, &id, &headers, body, Action::Compensate).await
}

fn level_json(sku: &str, market: &str, level: surge_store::StockLevel) -> Response {
    Json(serde_json::json!({
        "sku": sku, "market": market,
        "available": level.available, "held": level.held, "sold": level.sold,
        "declared": level.declared, "owed": level.owed,
    }))
    .into_response()
}

/// `GET /admin/inventory/{sku}/{market}`.
pub async fn stock(
    State(inventory): State<Inventory>,
    Path((sku, market)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let level = inventory
        .stock(&sku, &market)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::NotFound,
                "no stock record for this SKU in this market",
            )
        })?;
    Ok(level_json(&sku, &market, level))
}

/// Body of a restock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockBody {
    /// Units to add, 1..=10,000,000.
    pub units: i64,
}

/// `POST /admin/inventory/{sku}/{market}` with `{"units": n}`: adds stock.
pub async fn restock(
    State(inventory): State<Inventory>,
    Path((sku, market)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let b: RestockBody = surge_http::body::json(&headers, body, 4096).await?;
    if !(1..=10_000_000).contains(&b.units) {
        return Err(Problem::validation(vec![
            surge_http::problem::FieldError::new("/units", "must be 1..=10000000"),
        ]));
    }
    if crate::pricing::split_sku(&sku).is_none() || market.len() != 2 {
        return Err(Problem::bad_param(
            "path",
            "the SKU is <product id>:<merchant id> and the market two letters",
        ));
    }
    let level = inventory
        .restock(&sku, &market, b.units)
        .await
        .map_err(store_problem)?;
    Ok(level_json(&sku, &market, level))
}

/// `GET /admin/inventory/events?after=N`: the inventory outbox (`StockChanged`).
pub async fn stock_events(
    State(inventory): State<Inventory>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (after, limit) = events_page(query)?;
    let events = inventory
        .store()
        .events(after, limit)
        .await
        .map_err(store_problem)?;
    Ok(events_reply(
        events.iter().map(crate::events::stock_event_json),
    ))
}

/// The position after which, and how many, events a page asks for.
fn events_page(
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(i64, u32), Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_param("query", e.body_text()))?;
    Ok((q.after.unwrap_or(0), page_size(q.limit)?))
}

/// A page of events.
fn events_reply(events: impl Iterator<Item = serde_json::Value>) -> Response {
    let list: Vec<_> = events.collect();
    Json(serde_json::json!({ "events": list })).into_response()
}

/// A page size from a query: 1..=1000, default 100.
fn page_size(limit: Option<u32>) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_param("limit", "must be 1..=1000"));
    }
    Ok(limit)
}

/// Query of `GET /admin/checkout/events` and `GET /admin/inventory/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this outbox position (default 0).
    pub after: Option<i64>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
}

/// `GET /admin/checkout/events?after=N`: the checkout outbox.
pub async fn events(
    State(api): State<Api>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (after, limit) = events_page(query)?;
    let events = api
        .saga
        .orders()
        .events(after, limit)
        .await
        .map_err(store_problem)?;
    Ok(events_reply(
        events.iter().map(crate::events::checkout_event_json),
    ))
}
