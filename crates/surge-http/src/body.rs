//! Reading a JSON request body with a size limit, errors as problems.

use crate::{Problem, ProblemKind};
use axum::body::Body;
use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// Reads at most `limit` bytes and parses them as JSON. A `Content-Type` other than
/// JSON is a 415; a larger body a 413; malformed JSON a 400 saying where.
pub async fn json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Problem> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" && !media.ends_with("+json") {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                format!("expected application/json, got {media:?}"),
            ));
        }
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Problem::new(
                ProblemKind::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            Problem::new(ProblemKind::BadRequest, "the body could not be read")
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            ProblemKind::BadRequest,
            format!("the body is not valid JSON: {e}"),
        )
    })
}
