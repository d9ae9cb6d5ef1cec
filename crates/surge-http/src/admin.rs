//! The operators' bearer token, shared by every role's admin routes, and a middleware
//! that guards a router with it.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};

use crate::{Problem, ProblemKind};

/// Middleware on admin routes: the request goes on only with the admin token.
pub async fn require_admin(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    match token.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

/// The configured admin token.
#[derive(Clone)]
pub struct AdminToken(std::sync::Arc<str>);

impl AdminToken {
    /// Wraps a token (must not be empty).
    pub fn new(token: &str) -> Self {
        AdminToken(token.into())
    }

    /// Accepts `Authorization: Bearer <token>`, compared in constant time.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.0.as_bytes()) => Ok(()),
            _ => Err(Problem::new(
                ProblemKind::Unauthorized,
                "a valid admin bearer token is required",
            )
            .with_header(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"surge-admin\""),
            )),
        }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_only() {
        let t = AdminToken::new("s3cret");
        let mut h = HeaderMap::new();
        assert!(t.check(&h).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(t.check(&h).is_ok());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cres"));
        assert!(t.check(&h).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic czNjcmV0"));
        assert!(t.check(&h).is_err());
    }
}
