//! The owner's view of orders: `GET /orders/{id}` (status and saga history) and
//! `GET /orders` (newest first, paginated with an opaque cursor).

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use surge_http::Problem;
use surge_http::envelope::Envelope;

use super::{Api, no_order, store_problem};
use crate::order::{OrderDocument, OrderView};

/// `GET /orders/{id}`: only its owner sees it; anyone else gets the same 404 as for an
/// order that does not exist.
pub async fn get(
    State(api): State<Api>,
    Extension(env): Extension<Envelope>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let orders = api.saga.orders();
    let row = orders
        .order(&id)
        .await
        .map_err(store_problem)?
        .filter(|o| !env.user_id.is_empty() && o.user_id == env.user_id)
        .ok_or_else(no_order)?;
    let log = orders.log(&id).await.map_err(store_problem)?;
    let doc: OrderDocument =
        serde_json::from_str(&row.document).map_err(|e| Problem::internal(&e))?;
    Ok(Json(OrderView::new(&row, &doc, Some(&log))).into_response())
}

/// Query of `GET /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 20, at most `checkout.http.max_page`).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Encodes a `(created_at_ms, id)` position.
pub fn encode_cursor(at: i64, id: &str) -> String {
    format!("{at}.{id}")
}

/// Decodes a cursor, `None` when it is not one of ours.
pub fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (at, id) = c.split_once('.')?;
    let at: i64 = at.parse().ok()?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| (at, id.to_owned()))
}

/// The `cursor` query parameter, decoded (400 when it is not one of ours).
pub fn cursor_param(c: Option<&str>) -> Result<Option<(i64, String)>, Problem> {
    c.map(|c| {
        decode_cursor(c)
            .ok_or_else(|| Problem::bad_param("cursor", "not a cursor from a previous page"))
    })
    .transpose()
}

/// `GET /orders`: the caller's orders, newest first.
pub async fn list(
    State(api): State<Api>,
    Extension(env): Extension<Envelope>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_param("query", e.body_text()))?;
    let max = api.config.http.max_page;
    let limit = q.limit.unwrap_or(20);
    if !(1..=max).contains(&limit) {
        return Err(Problem::bad_param("limit", format!("must be 1..={max}")));
    }
    let before = cursor_param(q.cursor.as_deref())?;
    let rows = api
        .saga
        .orders()
        .orders_of(&env.user_id, before, limit)
        .await
        .map_err(store_problem)?;
    let docs: Vec<OrderDocument> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.document))
        .collect::<Result<_, _>>()
        .map_err(|e| Problem::internal(&e))?;
    let views: Vec<OrderView<'_>> = rows
        .iter()
        .zip(&docs)
        .map(|(r, d)| OrderView::new(r, d, None))
        .collect();
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| encode_cursor(r.created_at_ms, &r.id)))
        .flatten();
    Ok(Json(serde_json::json!({ "orders": views, "next_cursor": next })).into_response())
}
