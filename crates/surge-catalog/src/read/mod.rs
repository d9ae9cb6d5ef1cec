//! The read API: product, offers, product+offers and batch documents, served from the
//! read cache as ready-made bytes. Combined and batch documents are joined from the
//! cached pieces (see [`crate::views::gzip`]), never re-serialised.

pub mod negotiate;
mod query;
mod respond;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, IF_NONE_MATCH};
use surge_http::{Problem, ProblemKind};

use crate::api::{AppState, PathId};
use crate::cache::Entry;
use crate::model::{check_id, check_market};
use crate::views::render::offers_document;
use crate::views::{Format, View, offers_key, product_key};
use respond::{Joined, PIECES};

/// What every read handler decides first.
struct Ask {
    format: Format,
    gzip: bool,
}

fn ask(headers: &http::HeaderMap) -> Result<Ask, Problem> {
    Ok(Ask {
        format: negotiate::format(headers.get(ACCEPT))?,
        gzip: negotiate::gzip(headers.get(ACCEPT_ENCODING)),
    })
}

fn market_param(raw: Option<&str>) -> Result<String, Problem> {
    let market = query::param(raw, "market")?
        .ok_or_else(|| Problem::bad_param("market", "is required, e.g. ?market=DE"))?;
    check_market(&market).map_err(|e| Problem::bad_param("market", e))
}

fn unavailable(e: &surge_store::StoreError) -> Problem {
    tracing::warn!(error = %e, "view store unavailable");
    Problem::unavailable("the catalog store is unavailable; retry shortly", 1)
}

fn not_found(what: &str, id: &str) -> Problem {
    Problem::new(ProblemKind::NotFound, format!("no {what} with id {id}"))
}

async fn lookup(state: &AppState, key: &str) -> Result<Arc<Entry>, Problem> {
    state.cache.get(key).await.map_err(|e| unavailable(&e))
}

/// The offers view of a product in a market; an existing product with no offers there
/// gets an empty list, an unknown product a 404.
async fn offers_view(
    state: &AppState,
    format: Format,
    id: &str,
    market: &str,
) -> Result<View, Problem> {
    let entry = lookup(state, &offers_key(format, id, market)).await?;
    if let Some(view) = &entry.view {
        return Ok(view.clone());
    }
    if lookup(state, &product_key(format, id))
        .await?
        .view
        .is_none()
    {
        return Err(not_found("product", id));
    }
    Ok(View::build(
        Bytes::from(offers_document(format, id, market, &[])),
        1,
    ))
}

/// `GET /products/{id}`
#[utoipa::path(get, path = "/products/{id}", tag = "read",
    params(("id" = String, Path, description = "Product id, e.g. P0000001")),
    responses(
        (status = 200, description = "The product in the negotiated format (Accept); gzip on Accept-Encoding"),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "Invalid id", content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", content_type = "application/problem+json"),
        (status = 406, description = "No acceptable format", content_type = "application/problem+json"),
    ))]
pub async fn product(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    request: Request,
) -> Result<Response, Problem> {
    let headers = request.headers();
    let ask = ask(headers)?;
    let entry = lookup(&state, &product_key(ask.format, &id)).await?;
    let view = entry
        .view
        .as_ref()
        .ok_or_else(|| not_found("product", &id))?;
    Ok(respond::view(
        &state,
        &ask,
        view,
        headers.get(IF_NONE_MATCH),
    ))
}

/// `GET /products/{id}/offers?market=DE`
#[utoipa::path(get, path = "/products/{id}/offers", tag = "read",
    params(("id" = String, Path, description = "Product id"),
           ("market" = String, Query, description = "ISO 3166-1 alpha-2 market, e.g. DE")),
    responses(
        (status = 200, description = "The product's offers in that market (an empty list when it has none)"),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "Invalid id or market", content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", content_type = "application/problem+json"),
    ))]
pub async fn offers(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    request: Request,
) -> Result<Response, Problem> {
    let headers = request.headers();
    let raw = request.uri().query();
    let market = market_param(raw)?;
    let ask = ask(headers)?;
    let view = offers_view(&state, ask.format, &id, &market).await?;
    Ok(respond::view(
        &state,
        &ask,
        &view,
        headers.get(IF_NONE_MATCH),
    ))
}

/// `GET /product-offers/{id}?market=DE`
#[utoipa::path(get, path = "/product-offers/{id}", tag = "read",
    params(("id" = String, Path, description = "Product id"),
           ("market" = String, Query, description = "ISO 3166-1 alpha-2 market, e.g. DE")),
    responses(
        (status = 200, description = "`{\"product\": …, \"offers\": …}` joined from the cached documents"),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "Invalid id or market", content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", content_type = "application/problem+json"),
    ))]
pub async fn product_offers(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    request: Request,
) -> Result<Response, Problem> {
    let headers = request.headers();
    let raw = request.uri().query();
    let market = market_param(raw)?;
    let ask = ask(headers)?;
    let product = lookup(&state, &product_key(ask.format, &id)).await?;
    let product = product
        .view
        .as_ref()
        .ok_or_else(|| not_found("product", &id))?;
    let offers = offers_view(&state, ask.format, &id, &market).await?;
    let hash = xxhash_rust::xxh3::xxh3_64(
        &[product.hash.to_le_bytes(), offers.hash.to_le_bytes()].concat(),
    );
    if negotiate::not_modified(headers.get(IF_NONE_MATCH), hash) {
        return Ok(respond::not_modified(&state, &ask, hash));
    }
    let mut out = Joined::new(&ask, product.identity.len() + offers.identity.len() + 32);
    out.piece(&PIECES.product_open);
    out.view(product);
    out.piece(&PIECES.offers_sep);
    out.view(&offers);
    out.piece(&PIECES.close_object);
    Ok(respond::bytes(&state, &ask, out.finish(), Some(hash)))
}

/// `GET /products?ids=a,b,c`
#[utoipa::path(get, path = "/products", tag = "read",
    params(("ids" = String, Query, description = "Comma-separated product ids, at most `http.max_batch_ids` (default 100)")),
    responses(
        (status = 200, description = "A JSON array with one element per requested id, in order; `null` for unknown ids"),
        (status = 400, description = "Missing, invalid or too many ids", content_type = "application/problem+json"),
    ))]
pub async fn batch(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, Problem> {
    let headers = request.headers();
    let raw = request.uri().query();
    let ids = query::param(raw, "ids")?
        .ok_or_else(|| Problem::bad_param("ids", "is required, e.g. ?ids=P0000001,P0000002"))?;
    let ids: Vec<&str> = ids.split(',').collect();
    let max = state.http.max_batch_ids;
    if ids.len() > max {
        return Err(Problem::bad_param(
            "ids",
            format!("at most {max} ids per request, got {}", ids.len()),
        ));
    }
    for id in &ids {
        check_id(id).map_err(|e| Problem::bad_param("ids", format!("{id:?} {e}")))?;
    }
    let ask = ask(headers)?;
    let entries = futures_util::future::join_all(ids.iter().map(|id| {
        let key = product_key(ask.format, id);
        let state = &state;
        async move { lookup(state, &key).await }
    }))
    .await;
    let mut size = 2;
    let mut views = Vec::with_capacity(entries.len());
    for e in entries {
        let e = e?;
        size += e.view.as_ref().map_or(5, |v| v.identity.len() + 1);
        views.push(e);
    }
    let mut out = Joined::new(&ask, size);
    out.piece(&PIECES.open_array);
    for (i, e) in views.iter().enumerate() {
        if i > 0 {
            out.piece(&PIECES.comma);
        }
        match &e.view {
            Some(v) => out.view(v),
            None => out.piece(&PIECES.null),
        }
    }
    out.piece(&PIECES.close_array);
    Ok(respond::bytes(&state, &ask, out.finish(), None))
}
