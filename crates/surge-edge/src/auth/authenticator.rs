//! Pluggable authenticators: each turns a request's credentials into a [`Principal`].
//!
//! A route names the authenticators it accepts; [`Authenticators::authenticate`] asks
//! them in order. An authenticator that finds none of *its* credentials says
//! [`Outcome::NotMine`] and the next one is asked; one that finds its credentials decides
//! (accepted or refused: a bad bearer token is never "retried" as something else).
//! Built in: [`JwtAuthenticator`] (`Authorization: Bearer <access token>`, or the
//! `surge_access` cookie) and
//! [`ApiKeyAuthenticator`] (`X-Api-Key: <key>`, for partners and services; keys are
//! stored as SHA-256 hashes and scoped to path prefixes).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::digest;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::jwt::{Jwt, TokenError};

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Who the caller is, as an authenticator established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user.
    User {
        /// The user id.
        user_id: String,
        /// The login session.
        session_id: String,
    },
    /// A partner or service holding an API key.
    Partner {
        /// The key's id (never the key).
        key_id: String,
        /// The partner the key belongs to.
        partner: String,
    },
}

/// Why credentials were refused (every one is a 401 with its own problem type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The access token is refused (see [`TokenError`]).
    #[error("access token refused: {0}")]
    Token(TokenError),
    /// No such API key.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The API key is valid but not for this route.
    #[error("API key not valid for this route")]
    OutOfScope,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("unsupported authorization scheme")]
    Scheme,
}

/// What one authenticator made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// None of this authenticator's credentials are present.
    NotMine,
    /// Authenticated.
    Accepted(Principal),
    /// Its credentials are present and wrong.
    Refused(AuthError),
}

/// One way of authenticating a request.
pub trait Authenticator: Send + Sync {
    /// Short name, used in route configuration (`jwt`, `api-key`).
    fn name(&self) -> &'static str;
    /// Looks at the request head for this authenticator's credentials.
    fn authenticate(&self, path: &str, headers: &HeaderMap) -> Outcome;
}

/// Bearer access tokens.
pub struct JwtAuthenticator {
    jwt: Arc<Jwt>,
}

impl JwtAuthenticator {
    /// Verifies bearer tokens with `jwt`.
    pub fn new(jwt: Arc<Jwt>) -> Self {
        JwtAuthenticator { jwt }
    }
}

impl Authenticator for JwtAuthenticator {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn authenticate(&self, _path: &str, headers: &HeaderMap) -> Outcome {
        let token = match headers.get(AUTHORIZATION) {
            Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                Some(t) => t,
                None => return Outcome::Refused(AuthError::Scheme),
            },
            // Browsers: the access-token cookie.
            None => match super::cookies::get(headers, super::cookies::ACCESS) {
                Some(t) => t,
                None => return Outcome::NotMine,
            },
        };
        match self.jwt.verify(token.trim()) {
            Ok(claims) => Outcome::Accepted(Principal::User {
                user_id: claims.sub.clone(),
                session_id: claims.sid.clone(),
            }),
            Err(e) => Outcome::Refused(AuthError::Token(e)),
        }
    }
}

/// One API key as configured: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A name for the key (logs, metrics, the Envelope).
    pub key_id: String,
    /// The partner it belongs to.
    pub partner: String,
    /// Lowercase hex SHA-256 of the key.
    pub sha256_hex: String,
    /// Path prefixes the key may call (e.g. `/share/`).
    pub scopes: Vec<String>,
}

/// Lowercase hex SHA-256 of `key` (what configuration stores).
pub fn hash_api_key(key: &str) -> String {
    digest::digest(&digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// API keys for partners and services.
pub struct ApiKeyAuthenticator {
    by_hash: HashMap<String, ApiKeyEntry>,
}

impl ApiKeyAuthenticator {
    /// From configured entries; refuses malformed hashes and duplicate key ids.
    pub fn new(entries: impl IntoIterator<Item = ApiKeyEntry>) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for e in entries {
            let hex = e.sha256_hex.to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "API key {:?}: sha256 must be 64 hex digits",
                    e.key_id
                ));
            }
            if !ids.insert(e.key_id.clone()) {
                return Err(format!("API key id {:?} appears twice", e.key_id));
            }
            by_hash.insert(hex, e);
        }
        Ok(ApiKeyAuthenticator { by_hash })
    }
}

impl Authenticator for ApiKeyAuthenticator {
    fn name(&self) -> &'static str {
        "api-key"
    }

    fn authenticate(&self, path: &str, headers: &HeaderMap) -> Outcome {
        let Some(value) = headers.get(API_KEY_HEADER) else {
            return Outcome::NotMine;
        };
        // Keys are looked up by their hash, so the stored form never meets the raw key.
        let hash = hash_api_key(value.to_str().unwrap_or(""));
        match self.by_hash.get(&hash) {
            None => Outcome::Refused(AuthError::UnknownApiKey),
            Some(e) if !e.scopes.iter().any(|s| path.starts_with(s.as_str())) => {
                Outcome::Refused(AuthError::OutOfScope)
            }
            Some(e) => Outcome::Accepted(Principal::Partner {
                key_id: e.key_id.clone(),
                partner: e.partner.clone(),
            }),
        }
    }
}

/// The authenticators a route accepts, asked in order.
#[derive(Clone, Default)]
pub struct Authenticators(Vec<Arc<dyn Authenticator>>);

impl Authenticators {
    /// Accepts the given authenticators, in this order.
    pub fn new(list: Vec<Arc<dyn Authenticator>>) -> Self {
        Authenticators(list)
    }

    /// `Ok(None)`: no credentials the route accepts; `Ok(Some)`: authenticated;
    /// `Err`: credentials present and refused.
    pub fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, AuthError> {
        for a in &self.0 {
            match a.authenticate(path, headers) {
                Outcome::NotMine => continue,
                Outcome::Accepted(p) => return Ok(Some(p)),
                Outcome::Refused(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::auth::jwt::JwtSettings;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn chain() -> (Arc<Jwt>, Authenticators) {
        let jwt = Arc::new(Jwt::new(JwtSettings::default(), "k1").unwrap());
        let keys = ApiKeyAuthenticator::new([ApiKeyEntry {
            key_id: "acme-1".into(),
            partner: "acme".into(),
            sha256_hex: hash_api_key("sk_live_acme_secret"),
            scopes: vec!["/share/".into()],
        }])
        .unwrap();
        let list: Vec<Arc<dyn Authenticator>> =
            vec![Arc::new(JwtAuthenticator::new(jwt.clone())), Arc::new(keys)];
        (jwt, Authenticators::new(list))
    }

    #[test]
    fn each_authenticator_decides_on_its_own_credentials() {
        let (jwt, auth) = chain();
        let token = jwt.issue("u1", "s1").unwrap();
        assert_eq!(
            auth.authenticate(
                "/auth/me",
                &headers(&[("authorization", &format!("Bearer {token}"))])
            ),
            Ok(Some(Principal::User {
                user_id: "u1".into(),
                session_id: "s1".into()
            }))
        );
        assert_eq!(
            auth.authenticate(
                "/share/shares",
                &headers(&[(API_KEY_HEADER, "sk_live_acme_secret")])
            ),
            Ok(Some(Principal::Partner {
                key_id: "acme-1".into(),
                partner: "acme".into()
            }))
        );
        assert_eq!(
            auth.authenticate("/products/P1", &HeaderMap::new()),
            Ok(None)
        );
    }

    #[test]
    fn refusals_are_final() {
        let (_, auth) = chain();
        // A bad bearer token is refused even though an API key is also present.
        let both = headers(&[
            ("authorization", "Bearer nope"),
            (API_KEY_HEADER, "sk_live_acme_secret"),
        ]);
        assert_eq!(
            auth.authenticate("/share/x", &both),
            Err(AuthError::Token(TokenError::Malformed))
        );
        assert_eq!(
            auth.authenticate("/x", &headers(&[("authorization", "Basic dTpw")])),
            Err(AuthError::Scheme)
        );
        assert_eq!(
            auth.authenticate("/share/x", &headers(&[(API_KEY_HEADER, "guess")])),
            Err(AuthError::UnknownApiKey)
        );
        assert_eq!(
            auth.authenticate(
                "/admin/x",
                &headers(&[(API_KEY_HEADER, "sk_live_acme_secret")])
            ),
            Err(AuthError::OutOfScope)
        );
    }

    #[test]
    fn configuration_is_checked() {
        let entry = |id: &str, hex: &str| ApiKeyEntry {
            key_id: id.into(),
            partner: "p".into(),
            sha256_hex: hex.into(),
            scopes: vec![],
        };
        assert!(ApiKeyAuthenticator::new([entry("a", "abc")]).is_err());
        let h = hash_api_key("k");
        assert!(
            ApiKeyAuthenticator::new([entry("a", &h), entry("a", &hash_api_key("j"))]).is_err()
        );
        assert_eq!(h.len(), 64);
    }
}
