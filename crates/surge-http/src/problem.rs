//! The one error shape of every Surge role: `application/problem+json` (RFC 9457).
//!
//! Each [`ProblemKind`] has a stable `type` URI and status. Clients never see internal
//! error text: [`Problem::internal`] logs the cause and answers a generic detail.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://surge.dev/problems/";

/// The kinds of problem Surge answers, each with a stable `type` and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: the request is malformed (bad JSON, bad id, bad query).
    BadRequest,
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 401: the session was revoked (logout, ban, refresh-token reuse): log in again.
    Revoked,
    /// 401: the access token expired: refresh it.
    TokenExpired,
    /// 403: authenticated, but not allowed (e.g. a suspended account).
    Forbidden,
    /// 404: no such resource.
    NotFound,
    /// 404: no such route.
    NoRoute,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 406: none of the acceptable representations is offered.
    NotAcceptable,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 409: the request conflicts with the current state (e.g. the e-mail is taken).
    Conflict,
    /// 422: well-formed JSON that fails validation.
    ValidationFailed,
    /// 400: a write that needs an `Idempotency-Key` header came without one.
    IdempotencyKeyMissing,
    /// 422: the `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused,
    /// 409: the first request with this `Idempotency-Key` is still running;
    /// `Retry-After` says when to look again.
    IdempotencyKeyInUse,
    /// 409: an item of the checkout is sold out; no order was created.
    SoldOut,
    /// 429: too many requests; `Retry-After` says when to try again.
    TooManyRequests,
    /// 503: a dependency is unavailable; try again.
    Unavailable,
    /// 503: an operator switched this route off for now (an edge kill switch).
    SwitchedOff,
    /// 502: an upstream failed or answered something unusable.
    BadGateway,
    /// 504: an upstream did not answer in time.
    GatewayTimeout,
    /// 500: a bug or an unexpected failure (details only in the log).
    Internal,
}

impl ProblemKind {
    /// The stable slug appended to [`TYPE_BASE`].
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "bad-request",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Revoked => "revoked",
            ProblemKind::TokenExpired => "token-expired",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::NoRoute => "no-route",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::NotAcceptable => "not-acceptable",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::Conflict => "conflict",
            ProblemKind::ValidationFailed => "validation-failed",
            ProblemKind::IdempotencyKeyMissing => "idempotency-key-missing",
            ProblemKind::IdempotencyKeyReused => "idempotency-key-reused",
            ProblemKind::IdempotencyKeyInUse => "idempotency-key-in-use",
            ProblemKind::SoldOut => "sold-out",
            ProblemKind::TooManyRequests => "too-many-requests",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::SwitchedOff => "switched-off",
            ProblemKind::BadGateway => "bad-gateway",
            ProblemKind::GatewayTimeout => "gateway-timeout",
            ProblemKind::Internal => "internal",
        }
    }

    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::BadRequest | ProblemKind::IdempotencyKeyMissing => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized | ProblemKind::Revoked | ProblemKind::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::NotFound | ProblemKind::NoRoute => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::Conflict | ProblemKind::IdempotencyKeyInUse | ProblemKind::SoldOut => {
                StatusCode::CONFLICT
            }
            ProblemKind::ValidationFailed | ProblemKind::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ProblemKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Unavailable | ProblemKind::SwitchedOff => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::BadGateway => StatusCode::BAD_GATEWAY,
            ProblemKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "Bad request",
            ProblemKind::Unauthorized => "Unauthorized",
            ProblemKind::Revoked => "Session revoked",
            ProblemKind::TokenExpired => "Access token expired",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::NotFound => "Not found",
            ProblemKind::NoRoute => "No such route",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::NotAcceptable => "Not acceptable",
            ProblemKind::PayloadTooLarge => "Payload too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::Conflict => "Conflict",
            ProblemKind::ValidationFailed => "Validation failed",
            ProblemKind::IdempotencyKeyMissing => "Idempotency-Key missing",
            ProblemKind::IdempotencyKeyReused => "Idempotency-Key reused",
            ProblemKind::IdempotencyKeyInUse => "Idempotency-Key in use",
            ProblemKind::SoldOut => "Sold out",
            ProblemKind::TooManyRequests => "Too many requests",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::SwitchedOff => "Switched off",
            ProblemKind::BadGateway => "Bad gateway",
            ProblemKind::GatewayTimeout => "Gateway timeout",
            ProblemKind::Internal => "Internal error",
        }
    }
}

/// One invalid field, located by a JSON pointer (RFC 6901) or a parameter name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where: `/attributes/3/key` for a body field, `ids` for a query parameter.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldError {
    /// A field error at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// An RFC 9457 problem, ready to become a response.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemKind,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_secs: Option<u64>,
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    /// A problem of `kind` with a human-readable `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
            extra_headers: Vec::new(),
        }
    }

    /// A 422 listing the invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.pointer, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(ProblemKind::ValidationFailed, detail)
        }
    }

    /// A 400 naming one invalid parameter.
    pub fn bad_param(name: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Problem {
            errors: vec![FieldError::new(name, detail.clone())],
            ..Problem::new(ProblemKind::BadRequest, format!("{name}: {detail}"))
        }
    }

    /// A 500 whose cause goes to the log, not to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            ProblemKind::Internal,
            "an internal error occurred; it has been logged",
        )
    }

    /// A 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Problem {
            retry_after_secs: Some(retry_after_secs),
            ..Problem::new(ProblemKind::Unavailable, detail)
        }
    }

    /// Adds `Retry-After` (e.g. to a 429).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds a response header (e.g. `WWW-Authenticate`).
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.extra_headers.push((name, value));
        self
    }

    /// The kind of this problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The field errors.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            type_uri: format!("{TYPE_BASE}{}", self.kind.slug()),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        let bytes = serde_json::to_vec(&body)
            .map(Bytes::from)
            .unwrap_or_else(|_| {
                Bytes::from_static(
                    br#"{"type":"https://surge.dev/problems/internal","status":500}"#,
                )
            });
        let mut response = (self.kind.status(), bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.extra_headers {
            headers.insert(name, value);
        }
        response
    }
}

/// Router fallback: 404 problem for unknown paths.
pub async fn no_route() -> Problem {
    Problem::new(ProblemKind::NoRoute, "no route matches this path")
}

/// Router fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        "this route does not accept this method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_problem_names_fields() {
        let p = Problem::validation(vec![FieldError::new("/name", "is required")]);
        let r = p.into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn every_kind_has_a_distinct_slug() {
        let kinds = [
            ProblemKind::BadRequest,
            ProblemKind::Unauthorized,
            ProblemKind::Revoked,
            ProblemKind::TokenExpired,
            ProblemKind::NotFound,
            ProblemKind::NoRoute,
            ProblemKind::MethodNotAllowed,
            ProblemKind::NotAcceptable,
            ProblemKind::PayloadTooLarge,
            ProblemKind::UnsupportedMediaType,
            ProblemKind::ValidationFailed,
            ProblemKind::Unavailable,
            ProblemKind::SwitchedOff,
            ProblemKind::BadGateway,
            ProblemKind::GatewayTimeout,
            ProblemKind::Internal,
        ];
        let mut slugs: Vec<_> = kinds.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), kinds.len());
    }
}
