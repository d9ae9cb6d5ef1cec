//! The command API (admin only; [`require_admin`] guards every route): product and
//! offer writes. A 2xx means the write and
//! its outbox entry are committed; the projector is then woken to build the views.

mod auth;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use surge_http::{Problem, ProblemKind};
use surge_store::ProductWrite;
use utoipa::ToSchema;

pub use auth::{AdminToken, require_admin};

use crate::api::{AppState, PathId};
use crate::model::{self, offer};

fn store_error(e: &surge_store::StoreError) -> Problem {
    match e {
        surge_store::StoreError::Corrupt(_) | surge_store::StoreError::Config(_) => {
            Problem::internal(e)
        }
        _ => {
            tracing::warn!(error = %e, "store unavailable for a write");
            Problem::unavailable(
                "the catalog store is unavailable; the write was not applied, retry it",
                1,
            )
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The answer to a product write.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductWritten {
    /// Product id.
    pub id: String,
    /// Version after the write (1 when created).
    pub version: i64,
    /// Outbox position of the write; the projector status shows when it is applied.
    pub position: i64,
}

/// `PUT /admin/products/{id}`
#[utoipa::path(put, path = "/admin/products/{id}", tag = "command",
    params(("id" = String, Path, description = "Product id")),
    request_body(content = Object, content_type = "application/json",
        description = "The product document: a JSON object with at least `name`"),
    responses(
        (status = 201, description = "Created (durable)", body = ProductWritten),
        (status = 200, description = "Replaced (durable)", body = ProductWritten),
        (status = 400, description = "Invalid id or JSON", content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json"),
        (status = 413, description = "Body over http.max_body_bytes", content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", content_type = "application/problem+json"),
        (status = 422, description = "Validation failed; `errors` names each field", content_type = "application/problem+json"),
    ),
    security(("admin" = [])))]
pub async fn put_product(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let doc: serde_json::Value =
        surge_http::body::json(&headers, body, state.http.max_body_bytes).await?;
    let bytes = model::product::normalize(&id, doc).map_err(Problem::validation)?;
    let receipts = state
        .store
        .put_products(&[ProductWrite {
            id: id.clone(),
            body: bytes,
        }])
        .await
        .map_err(|e| store_error(&e))?;
    state.nudge.nudge();
    let r = receipts
        .into_iter()
        .next()
        .ok_or_else(|| Problem::internal(&"write returned no receipt"))?;
    let status = if r.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &ProductWritten {
            id: r.id,
            version: r.version,
            position: r.position,
        },
    ))
}

/// `DELETE /admin/products/{id}`
#[utoipa::path(delete, path = "/admin/products/{id}", tag = "command",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 204, description = "Deleted (durable); its offers are kept"),
        (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", content_type = "application/problem+json"),
    ),
    security(("admin" = [])))]
pub async fn delete_product(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
) -> Result<Response, Problem> {
    if state
        .store
        .delete_product(&id)
        .await
        .map_err(|e| store_error(&e))?
    {
        state.nudge.nudge();
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(
            ProblemKind::NotFound,
            format!("no product with id {id}"),
        ))
    }
}

/// `GET /admin/products/{id}`: the stored source document and its version.
#[utoipa::path(get, path = "/admin/products/{id}", tag = "command",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The source document; `X-Surge-Version` carries its version"),
        (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", content_type = "application/problem+json"),
    ),
    security(("admin" = [])))]
pub async fn get_product_source(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
) -> Result<Response, Problem> {
    let record = state
        .store
        .get_product(&id)
        .await
        .map_err(|e| store_error(&e))?;
    let record = record
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no product with id {id}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("x-surge-version"),
                HeaderValue::from(record.version),
            ),
        ],
        record.body,
    )
        .into_response())
}

/// The answer to an offer batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct OffersWritten {
    /// Offers created or updated.
    pub accepted: usize,
    /// Outbox entries written: one per distinct (product, market).
    pub outbox_entries: u64,
}

/// `POST /admin/offers`
#[utoipa::path(post, path = "/admin/offers", tag = "command",
    request_body(content = offer::OfferBatch, content_type = "application/json"),
    responses(
        (status = 200, description = "All offers written (durable), in one transaction", body = OffersWritten),
        (status = 400, description = "Invalid JSON", content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json"),
        (status = 413, description = "Body over http.max_body_bytes", content_type = "application/problem+json"),
        (status = 422, description = "Validation failed; `errors` names each field", content_type = "application/problem+json"),
    ),
    security(("admin" = [])))]
pub async fn post_offers(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let doc: serde_json::Value =
        surge_http::body::json(&headers, body, state.http.max_body_bytes).await?;
    let offers =
        offer::parse(&doc, state.http.max_offers_per_request).map_err(Problem::validation)?;
    let entries = state
        .store
        .upsert_offers(&offers)
        .await
        .map_err(|e| store_error(&e))?;
    state.nudge.nudge();
    Ok(json(
        StatusCode::OK,
        &OffersWritten {
            accepted: offers.len(),
            outbox_entries: entries,
        },
    ))
}

/// Projector progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectorState {
    /// Last applied outbox position.
    pub applied_position: i64,
    /// Highest outbox position written.
    pub outbox_head: i64,
    /// Entries written but not applied yet.
    pub lag_entries: i64,
    /// Whether everything in the outbox at start has been applied.
    pub caught_up: bool,
}

/// `GET /admin/projector`
#[utoipa::path(get, path = "/admin/projector", tag = "command",
    responses((status = 200, description = "Projector progress", body = ProjectorState),
              (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json")),
    security(("admin" = [])))]
pub async fn projector_state(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let head = state
        .store
        .outbox_head()
        .await
        .map_err(|e| store_error(&e))?;
    let applied = state
        .store
        .applied_position()
        .await
        .map_err(|e| store_error(&e))?;
    Ok(json(
        StatusCode::OK,
        &ProjectorState {
            applied_position: applied,
            outbox_head: head,
            lag_entries: (head - applied).max(0),
            caught_up: state.projector.as_ref().is_none_or(|s| s.caught_up()),
        },
    ))
}
