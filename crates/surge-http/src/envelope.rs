//! The Envelope: who the edge says the caller is, signed by the edge, checked by every
//! upstream role.
//!
//! After authenticating a request once, the edge encodes an [`Envelope`] (protobuf, the
//! schema is `proto/surge/envelope.proto`) and passes it upstream in one header,
//! [`HEADER`]:
//!
//! ```text
//! x-surge-envelope: v1.<key id>.<base64url(protobuf)>.<base64url(HMAC-SHA256)>
//! ```
//!
//! The MAC covers `v1.<key id>.<payload>`. Upstreams never see the caller's token; they
//! verify the MAC with the key named by the id (keys rotate: the edge signs with the
//! newest, upstreams accept every key in their ring), and then check that the Envelope
//! is fresh (issued at most `max_age` ago, not in the future beyond `skew`) and was
//! issued for *this* request (method and path are inside the signed payload). So a
//! captured Envelope cannot be replayed by another caller on another route, nor later
//! than `max_age` on the same one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::HeaderValue;
use prost::Message;

use crate::problem::{Problem, ProblemKind};

/// The header that carries the Envelope upstream.
pub const HEADER: &str = "x-surge-envelope";

/// The longest Envelope header accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;

const VERSION: &str = "v1";

/// Who the caller is, as established by the edge. Field numbers are part of the wire
/// format: add fields, never renumber.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    /// The authenticated user (empty for a partner or service authenticated by API key).
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// The login session the access token belongs to (what revocation targets); for a
    /// partner authenticated by API key, the key's id.
    #[prost(string, tag = "2")]
    pub session_id: String,
    /// The caller's market, ISO 3166-1 alpha-2 (e.g. `DE`).
    #[prost(string, tag = "3")]
    pub market: String,
    /// Cohorts from the user's profile, e.g. `sneaker-fan`.
    #[prost(string, repeated, tag = "4")]
    pub cohorts: Vec<String>,
    /// Subscription tier, e.g. `free`, `plus`.
    #[prost(string, tag = "5")]
    pub tier: String,
    /// The edge's id for this request (also in its logs).
    #[prost(string, tag = "6")]
    pub request_id: String,
    /// When the edge issued it, milliseconds since the Unix epoch.
    #[prost(int64, tag = "7")]
    pub issued_at_ms: i64,
    /// The request method this Envelope was issued for.
    #[prost(string, tag = "8")]
    pub method: String,
    /// The request path and query this Envelope was issued for.
    #[prost(string, tag = "9")]
    pub path: String,
}

/// Why an Envelope was refused. The message is for logs; callers get one 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// No Envelope header on a route that needs one.
    #[error("no envelope")]
    Missing,
    /// Not `v1.<kid>.<payload>.<mac>`, too long, or not base64url.
    #[error("malformed envelope")]
    Malformed,
    /// Signed with a key this process does not know.
    #[error("unknown envelope key id")]
    UnknownKey,
    /// The MAC does not match.
    #[error("bad envelope signature")]
    BadSignature,
    /// Issued too long ago, or in the future.
    #[error("stale envelope")]
    Stale,
    /// Issued for another method or path.
    #[error("envelope issued for another request")]
    WrongRequest,
}

/// A key id: 1–32 characters of `[A-Za-z0-9_-]` (it travels in a header).
fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Ring {
    current: String,
    keys: HashMap<String, hmac::Key>,
}

/// The edge's signing key and every key upstreams accept, by id. Clones share one ring,
/// so [`EnvelopeKeys::install`] (a rotation) reaches every holder at once.
#[derive(Clone)]
pub struct EnvelopeKeys {
    ring: Arc<RwLock<Arc<Ring>>>,
    max_age: Duration,
    skew: Duration,
}

impl std::fmt::Debug for EnvelopeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        let ring = self.ring();
        f.debug_struct("EnvelopeKeys")
            .field("current", &ring.current)
            .field("ids", &ring.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EnvelopeKeys {
    /// A key ring signing with `current`; `keys` are `(id, secret)` pairs, secrets of at
    /// least 32 bytes. Envelopes older than `max_age` (or more than `skew` in the
    /// future) are refused.
    pub fn new<'a>(
        current: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        max_age: Duration,
        skew: Duration,
    ) -> Result<Self, String> {
        Ok(EnvelopeKeys {
            ring: Arc::new(RwLock::new(Arc::new(Self::ring_of(current, keys)?))),
            max_age,
            skew,
        })
    }

    /// Replaces the ring (a rotation): signs with `current` from now on, accepts `keys`.
    pub fn install<'a>(
        &self,
        current: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        let ring = Arc::new(Self::ring_of(current, keys)?);
        match self.ring.write() {
            Ok(mut r) => *r = ring,
            Err(p) => *p.into_inner() = ring,
        }
        Ok(())
    }

    /// The id of the key that signs.
    pub fn current(&self) -> String {
        self.ring().current.clone()
    }

    fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn ring_of<'a>(
        current: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Ring, String> {
        let mut ring = HashMap::new();
        for (id, secret) in keys {
            if !valid_key_id(id) {
                return Err(format!(
                    "envelope key id {id:?} must be 1-32 characters of A-Z a-z 0-9 - _"
                ));
            }
            if secret.len() < 32 {
                return Err(format!(
                    "envelope key {id:?} must be at least 32 bytes, got {}",
                    secret.len()
                ));
            }
            ring.insert(id.to_owned(), hmac::Key::new(hmac::HMAC_SHA256, secret));
        }
        if !ring.contains_key(current) {
            return Err(format!(
                "the current envelope key {current:?} is not among the keys"
            ));
        }
        Ok(Ring {
            current: current.to_owned(),
            keys: ring,
        })
    }

    /// Edge side: the header value carrying `envelope`, signed with the current key.
    pub fn sign(&self, envelope: &Envelope) -> HeaderValue {
        let ring = self.ring();
        let Some(key) = ring.keys.get(&ring.current) else {
            // `ring_of` checks that the current key is in the ring.
            return HeaderValue::from_static("");
        };
        let payload = envelope.encode_to_vec();
        // One buffer: "v1.<kid>.<payload>" is signed, then ".<tag>" appended.
        let mut out = String::with_capacity(8 + ring.current.len() + payload.len() * 4 / 3 + 48);
        out.push_str(VERSION);
        out.push('.');
        out.push_str(&ring.current);
        out.push('.');
        B64.encode_string(&payload, &mut out);
        let tag = hmac::sign(key, out.as_bytes());
        out.push('.');
        B64.encode_string(tag.as_ref(), &mut out);
        // Base64url and the key id charset are visible ASCII: always a valid header value.
        HeaderValue::try_from(out).unwrap_or(HeaderValue::from_static(""))
    }

    /// Upstream side: the Envelope in `header`, if it is authentic, fresh and was issued
    /// for a `method` request to `path` (path and query).
    pub fn verify(
        &self,
        header: Option<&HeaderValue>,
        method: &str,
        path: &str,
    ) -> Result<Envelope, EnvelopeError> {
        let raw = header.ok_or(EnvelopeError::Missing)?.as_bytes();
        if raw.len() > MAX_HEADER_BYTES {
            return Err(EnvelopeError::Malformed);
        }
        let raw = std::str::from_utf8(raw).map_err(|_| EnvelopeError::Malformed)?;
        let (signed, tag) = raw.rsplit_once('.').ok_or(EnvelopeError::Malformed)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(EnvelopeError::Malformed);
        };
        let ring = self.ring();
        let key = ring.keys.get(kid).ok_or(EnvelopeError::UnknownKey)?;
        let tag = B64.decode(tag).map_err(|_| EnvelopeError::Malformed)?;
        // Constant-time comparison inside aws-lc.
        hmac::verify(key, signed.as_bytes(), &tag).map_err(|_| EnvelopeError::BadSignature)?;
        let bytes = B64.decode(payload).map_err(|_| EnvelopeError::Malformed)?;
        let envelope = Envelope::decode(bytes.as_slice()).map_err(|_| EnvelopeError::Malformed)?;
        let now = now_ms();
        let age = now - envelope.issued_at_ms;
        if age > millis(self.max_age) || -age > millis(self.skew) {
            return Err(EnvelopeError::Stale);
        }
        if envelope.method != method || envelope.path != path {
            return Err(EnvelopeError::WrongRequest);
        }
        Ok(envelope)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Middleware for upstream routes that need an identity: verifies the Envelope and puts
/// it into the request's extensions, or answers 401 without calling the handler.
pub async fn require_envelope(
    State(keys): State<EnvelopeKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match keys.verify(
        request.headers().get(HEADER),
        request.method().as_str(),
        &path,
    ) {
        Ok(envelope) => {
            request.extensions_mut().insert(envelope);
            next.run(request).await
        }
        Err(e) => {
            tracing::info!(reason = %e, "request refused: no valid envelope");
            Problem::new(
                ProblemKind::Unauthorized,
                "this route needs a caller identity from the edge",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn ring(current: &str) -> EnvelopeKeys {
        EnvelopeKeys::new(
            current,
            [("k1", A), ("k2", B)],
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .unwrap()
    }

    fn alice(path: &str) -> Envelope {
        Envelope {
            user_id: "u-alice".into(),
            session_id: "s-1".into(),
            market: "DE".into(),
            cohorts: vec!["sneaker-fan".into()],
            tier: "plus".into(),
            request_id: "r-1".into(),
            issued_at_ms: now_ms(),
            method: "GET".into(),
            path: path.into(),
        }
    }

    #[test]
    fn wire_format_is_stable() {
        // The protobuf bytes other languages will decode (see proto/surge/envelope.proto).
        let e = Envelope {
            user_id: "u".into(),
            cohorts: vec!["a".into(), "b".into()],
            issued_at_ms: 1,
            path: "/p".into(),
            ..Envelope::default()
        };
        assert_eq!(
            e.encode_to_vec(),
            [
                0x0a, 1, b'u', 0x22, 1, b'a', 0x22, 1, b'b', 0x38, 1, 0x4a, 2, b'/', b'p'
            ]
        );
    }

    #[test]
    fn signed_envelopes_verify_across_rotation() {
        let old = ring("k1");
        let new = ring("k2");
        let h = old.sign(&alice("/auth/me"));
        assert!(h.to_str().unwrap().starts_with("v1.k1."));
        // An upstream that already signs with k2 still accepts k1 (overlap).
        assert_eq!(
            new.verify(Some(&h), "GET", "/auth/me").unwrap().user_id,
            "u-alice"
        );
    }

    #[test]
    fn refusals() {
        let keys = ring("k1");
        let good = keys.sign(&alice("/orders?page=2"));
        let s = good.to_str().unwrap().to_owned();
        let v = |h: &str| {
            keys.verify(
                Some(&HeaderValue::from_str(h).unwrap()),
                "GET",
                "/orders?page=2",
            )
        };
        assert!(v(&s).is_ok());
        assert_eq!(keys.verify(None, "GET", "/"), Err(EnvelopeError::Missing));
        assert_eq!(v("garbage"), Err(EnvelopeError::Malformed));
        assert_eq!(
            v(&s.replacen("v1.", "v2.", 1)),
            Err(EnvelopeError::Malformed)
        );
        assert_eq!(v(&"a".repeat(5000)), Err(EnvelopeError::Malformed));
        // Unknown key ids, including ones with path or SQL characters.
        for kid in ["k9", "../k1", "k1' OR '1'='1"] {
            let forged = s.replacen("v1.k1.", &format!("v1.{kid}."), 1);
            assert_eq!(v(&forged), Err(EnvelopeError::UnknownKey), "{kid}");
        }
        // Tampered payload: another user id, same MAC.
        let parts: Vec<&str> = s.split('.').collect();
        let mut bob = alice("/orders?page=2");
        bob.user_id = "u-bob".into();
        let tampered = format!("v1.k1.{}.{}", B64.encode(bob.encode_to_vec()), parts[3]);
        assert_eq!(v(&tampered), Err(EnvelopeError::BadSignature));
        // Tampered MAC.
        let mut mac = B64.decode(parts[3]).unwrap();
        mac[0] ^= 1;
        let bad_mac = format!("v1.k1.{}.{}", parts[2], B64.encode(mac));
        assert_eq!(v(&bad_mac), Err(EnvelopeError::BadSignature));
        // Signed with a key the upstream does not have (a forger's own key).
        let forger = EnvelopeKeys::new(
            "k1",
            [("k1", b"an attacker's key of 32 bytes!!!" as &[u8])],
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .unwrap();
        let forged = forger.sign(&alice("/orders?page=2"));
        assert_eq!(
            v(forged.to_str().unwrap()),
            Err(EnvelopeError::BadSignature)
        );
        // Replayed on another route or method.
        assert_eq!(
            keys.verify(Some(&good), "GET", "/orders?page=3"),
            Err(EnvelopeError::WrongRequest)
        );
        assert_eq!(
            keys.verify(Some(&good), "POST", "/orders?page=2"),
            Err(EnvelopeError::WrongRequest)
        );
        // Too old, or from the future beyond the skew.
        for at in [now_ms() - 11_000, now_ms() + 5_000] {
            let mut e = alice("/orders?page=2");
            e.issued_at_ms = at;
            assert_eq!(
                keys.verify(Some(&keys.sign(&e)), "GET", "/orders?page=2"),
                Err(EnvelopeError::Stale)
            );
        }
    }

    #[tokio::test]
    async fn the_middleware_lets_only_verified_callers_reach_the_handler() {
        use axum::routing::get;
        use axum::{Extension, Router};
        use http_body_util::BodyExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tower::ServiceExt;

        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let keys = ring("k1");
        let app = Router::new()
            .route(
                "/auth/me",
                get(move |Extension(e): Extension<Envelope>| async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    e.user_id
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                keys.clone(),
                require_envelope,
            ));
        let call = |h: Option<HeaderValue>| {
            let mut req = http::Request::get("/auth/me");
            if let Some(h) = h {
                req = req.header(HEADER, h);
            }
            app.clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
        };
        let ok = call(Some(keys.sign(&alice("/auth/me")))).await.unwrap();
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert_eq!(
            &ok.into_body().collect().await.unwrap().to_bytes()[..],
            b"u-alice"
        );
        // Missing, and issued for another route (another user's captured Envelope).
        for h in [None, Some(keys.sign(&alice("/orders")))] {
            let r = call(h).await.unwrap();
            assert_eq!(r.status(), http::StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "refused requests never reach the handler"
        );
    }

    #[test]
    fn key_ring_rules() {
        let d = Duration::from_secs(1);
        assert!(EnvelopeKeys::new("k1", [("k1", &A[..31])], d, d).is_err());
        assert!(EnvelopeKeys::new("k/1", [("k/1", A)], d, d).is_err());
        assert!(EnvelopeKeys::new("k2", [("k1", A)], d, d).is_err());
        let debug = format!("{:?}", ring("k1"));
        assert!(!debug.contains("0123456789abcdef"), "secrets never printed");
    }
}
