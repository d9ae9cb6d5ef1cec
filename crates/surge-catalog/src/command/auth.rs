//! Admin authentication for the command API: one bearer token from configuration.
//! (The token itself lives in `surge_http::admin`, shared with the edge's admin routes.)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use surge_http::admin::AdminToken;

use crate::api::AppState;

/// Middleware on the admin routes: the request goes on only with the admin token.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match state.admin.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}
