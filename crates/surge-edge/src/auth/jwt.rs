//! Access tokens: EdDSA (Ed25519) JWTs with a `kid`, issued and verified strictly.
//!
//! Verification (`jsonwebtoken` on aws-lc) accepts exactly one algorithm, EdDSA; the key
//! is chosen by the header's `kid` from the known set (an unknown or malformed `kid` is
//! refused before any key is tried); `exp`, `nbf`, `iat`, `iss`, `aud` and `sub` are all
//! required; `iss`/`aud` must match; the leeway is at most 5 s; tokens longer than
//! [`MAX_TOKEN_BYTES`] are refused unread. A verified token is cached (bounded) until it
//! expires, so a hot token costs one hash lookup instead of a signature check.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The longest token read at all, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The largest leeway allowed for clock differences.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5);

/// The claims of a Surge access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session (login) id; revocation targets it.
    pub sid: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// Why a token was refused. Callers answer one 401 (expired is told apart so the edge
/// can refresh silently or ask the client to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    Oversized,
    /// Not a JWT, no `kid`, a `kid` with characters a key id never has, or bad claims.
    #[error("malformed token")]
    Malformed,
    /// A `kid` this process does not know.
    #[error("unknown key id")]
    UnknownKey,
    /// Not EdDSA (e.g. `none`, or HS256 with a public key as the secret).
    #[error("algorithm not accepted")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp` (beyond the leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// Wrong or missing `iss`/`aud`, or a required claim is missing.
    #[error("claims rejected")]
    BadClaims,
}

/// How tokens are issued and checked.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `iss` of issued tokens, required on verified ones.
    pub issuer: String,
    /// `aud` of issued tokens, required on verified ones.
    pub audience: String,
    /// Life of an access token.
    pub ttl: Duration,
    /// Allowed clock difference (at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// Verified tokens remembered at once.
    pub cache_entries: usize,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            issuer: "surge".into(),
            audience: "surge".into(),
            ttl: Duration::from_secs(15 * 60),
            leeway: Duration::from_secs(5),
            cache_entries: 100_000,
        }
    }
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    x: String,
}

struct Keys {
    current: SigningKey,
    verifying: HashMap<String, (DecodingKey, String)>,
}

/// Issues and verifies access tokens with a rotating set of Ed25519 keys.
pub struct Jwt {
    settings: JwtSettings,
    validation: Validation,
    keys: RwLock<Keys>,
    verified: quick_cache::sync::Cache<String, Arc<Claims>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn generate(kid: String) -> Result<SigningKey, String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| "cannot read the generated Ed25519 key".to_owned())?;
    Ok(SigningKey {
        kid,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        x: B64.encode(pair.public_key().as_ref()),
    })
}

impl Jwt {
    /// A token service with a fresh signing key named `kid`.
    pub fn new(settings: JwtSettings, kid: &str) -> Result<Self, String> {
        if settings.leeway > MAX_LEEWAY {
            return Err(format!(
                "jwt leeway must be at most {} s",
                MAX_LEEWAY.as_secs()
            ));
        }
        if !valid_kid(kid) {
            return Err(format!(
                "key id {kid:?} must be 1-64 characters of A-Z a-z 0-9 - _"
            ));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let current = generate(kid.to_owned())?;
        let decoding = DecodingKey::from_ed_components(&current.x)
            .map_err(|e| format!("cannot use the generated key: {e}"))?;
        let verifying = HashMap::from([(kid.to_owned(), (decoding, current.x.clone()))]);
        Ok(Jwt {
            verified: quick_cache::sync::Cache::new(settings.cache_entries.max(16)),
            settings,
            validation,
            keys: RwLock::new(Keys { current, verifying }),
        })
    }

    /// Starts signing with a new key `kid`; tokens signed with older keys still verify
    /// until [`Jwt::retire`] removes them (rotation with overlap).
    pub fn rotate(&self, kid: &str) -> Result<(), String> {
        if !valid_kid(kid) {
            return Err(format!("bad key id {kid:?}"));
        }
        let key = generate(kid.to_owned())?;
        let decoding =
            DecodingKey::from_ed_components(&key.x).map_err(|e| format!("bad new key: {e}"))?;
        let mut keys = self
            .keys
            .write()
            .map_err(|_| "key set poisoned".to_owned())?;
        keys.verifying
            .insert(kid.to_owned(), (decoding, key.x.clone()));
        keys.current = key;
        Ok(())
    }

    /// Stops accepting tokens signed with `kid` (never the current key).
    pub fn retire(&self, kid: &str) {
        if let Ok(mut keys) = self.keys.write()
            && keys.current.kid != kid
        {
            keys.verifying.remove(kid);
            // Cached tokens of that key must not outlive it.
            self.verified.clear();
        }
    }

    /// A token for user `sub` in session `sid`, valid from now for the configured life.
    pub fn issue(&self, sub: &str, sid: &str) -> Result<String, String> {
        let now = now_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.settings.ttl.as_secs(),
        };
        let keys = self
            .keys
            .read()
            .map_err(|_| "key set poisoned".to_owned())?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current.kid.clone());
        jsonwebtoken::encode(&header, &claims, &keys.current.encoding)
            .map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// The claims of `token` if it passes every check (see the module docs).
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let now = now_secs();
        let leeway = self.settings.leeway.as_secs();
        if let Some(claims) = self.verified.get(token) {
            if now <= claims.exp + leeway {
                return Ok(claims);
            }
            self.verified.remove(token);
            return Err(TokenError::Expired);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        if !valid_kid(&kid) {
            return Err(TokenError::Malformed);
        }
        let keys = self.keys.read().map_err(|_| TokenError::UnknownKey)?;
        let (key, _) = keys.verifying.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => TokenError::BadSignature,
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAlgorithm => TokenError::WrongAlgorithm,
                // Json: a signed payload whose claims are missing or of the wrong type.
                K::InvalidIssuer | K::InvalidAudience | K::MissingRequiredClaim(_) | K::Json(_) => {
                    TokenError::BadClaims
                }
                _ => TokenError::Malformed,
            }
        })?;
        drop(keys);
        let claims = Arc::new(data.claims);
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// The public keys as a JWK Set (`GET /.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let keys = match self.keys.read() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        let mut list: Vec<_> = keys
            .verifying
            .iter()
            .map(|(kid, (_, x))| {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x})
            })
            .collect();
        list.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        serde_json::json!({ "keys": list })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn service() -> Jwt {
        Jwt::new(JwtSettings::default(), "k1").unwrap()
    }

    fn forge(header: serde_json::Value, claims: serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    fn claims(now: u64) -> serde_json::Value {
        serde_json::json!({"sub": "u1", "sid": "s1", "iss": "surge", "aud": "surge",
                           "iat": now, "nbf": now, "exp": now + 600})
    }

    /// Signs arbitrary claims with the service's current key (to test claim checks).
    fn sign_claims(jwt: &Jwt, claims: &serde_json::Value) -> String {
        let keys = jwt.keys.read().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current.kid.clone());
        jsonwebtoken::encode(&header, claims, &keys.current.encoding).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_are_cached() {
        let jwt = service();
        let t = jwt.issue("u1", "s1").unwrap();
        let c = jwt.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.sid.as_str()), ("u1", "s1"));
        assert!(
            Arc::ptr_eq(&c, &jwt.verify(&t).unwrap()),
            "second check is a cache hit"
        );
    }

    #[test]
    fn rotation_overlaps_and_retirement_ends_it() {
        let jwt = service();
        let old = jwt.issue("u1", "s1").unwrap();
        jwt.rotate("k2").unwrap();
        let new = jwt.issue("u1", "s1").unwrap();
        assert!(jwt.verify(&old).is_ok() && jwt.verify(&new).is_ok());
        let kids: Vec<_> = jwt.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, ["k1", "k2"]);
        jwt.retire("k1");
        assert_eq!(
            jwt.verify(&old),
            Err(TokenError::UnknownKey),
            "even though it was cached"
        );
        assert!(jwt.verify(&new).is_ok());
        jwt.retire("k2"); // the current key is never retired
        assert!(jwt.verify(&new).is_ok());
    }

    #[test]
    fn the_negative_matrix() {
        let jwt = service();
        let now = now_secs();
        let good = jwt.issue("u1", "s1").unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let sig = parts[2];

        // alg: none, with and without a signature.
        for s in ["", sig] {
            let t = forge(
                serde_json::json!({"alg": "none", "kid": "k1"}),
                claims(now),
                s,
            );
            assert!(jwt.verify(&t).is_err(), "alg none");
        }
        // Key confusion: HS256 with the public key (raw and as published) as the secret.
        let x = jwt.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        for secret in [B64.decode(&x).unwrap(), x.clone().into_bytes()] {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            let t =
                jsonwebtoken::encode(&h, &claims(now), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(
                jwt.verify(&t),
                Err(TokenError::WrongAlgorithm),
                "key confusion"
            );
        }
        // Unknown kid; kid with path or SQL characters; no kid.
        let with_kid = |kid: serde_json::Value| {
            forge(
                serde_json::json!({"alg": "EdDSA", "kid": kid}),
                claims(now),
                sig,
            )
        };
        assert_eq!(
            jwt.verify(&with_kid("k9".into())),
            Err(TokenError::UnknownKey)
        );
        for kid in ["../../etc/passwd", "k1' OR '1'='1", ""] {
            assert_eq!(
                jwt.verify(&with_kid(kid.into())),
                Err(TokenError::Malformed),
                "{kid}"
            );
        }
        assert_eq!(
            jwt.verify(&forge(
                serde_json::json!({"alg": "EdDSA"}),
                claims(now),
                sig
            )),
            Err(TokenError::Malformed)
        );
        // Wrong or missing aud / iss; missing exp.
        for (field, value) in [
            ("aud", Some("other")),
            ("iss", Some("evil")),
            ("aud", None),
            ("iss", None),
            ("exp", None),
        ] {
            let mut c = claims(now);
            match value {
                Some(v) => c[field] = v.into(),
                None => {
                    c.as_object_mut().unwrap().remove(field);
                }
            }
            assert_eq!(
                jwt.verify(&sign_claims(&jwt, &c)),
                Err(TokenError::BadClaims),
                "{field} {value:?}"
            );
        }
        // nbf beyond the leeway; expired beyond the leeway; within the leeway passes.
        let mut c = claims(now);
        c["nbf"] = (now + 60).into();
        assert_eq!(
            jwt.verify(&sign_claims(&jwt, &c)),
            Err(TokenError::NotYetValid)
        );
        let mut c = claims(now);
        c["exp"] = (now - 60).into();
        assert_eq!(jwt.verify(&sign_claims(&jwt, &c)), Err(TokenError::Expired));
        let mut c = claims(now);
        c["exp"] = (now - 2).into();
        assert!(
            jwt.verify(&sign_claims(&jwt, &c)).is_ok(),
            "2 s late is within the 5 s leeway"
        );
        // Tampered payload (another user) with the original signature; tampered signature.
        let mut other = claims(now);
        other["sub"] = "u2".into();
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(other.to_string()), sig);
        assert_eq!(jwt.verify(&tampered), Err(TokenError::BadSignature));
        let mut bad = B64.decode(sig).unwrap();
        bad[0] ^= 1;
        let t = format!("{}.{}.{}", parts[0], parts[1], B64.encode(bad));
        assert_eq!(jwt.verify(&t), Err(TokenError::BadSignature));
        // Signed by another issuer's key under our kid.
        let other_service = service();
        assert_eq!(
            jwt.verify(&other_service.issue("u1", "s1").unwrap()),
            Err(TokenError::BadSignature)
        );
        // Oversized; garbage.
        assert_eq!(
            jwt.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::Oversized)
        );
        assert_eq!(jwt.verify("not a token"), Err(TokenError::Malformed));
        // And the good one still passes after all that.
        assert!(jwt.verify(&good).is_ok());
    }

    #[test]
    fn settings_are_checked() {
        let s = JwtSettings {
            leeway: Duration::from_secs(6),
            ..JwtSettings::default()
        };
        assert!(Jwt::new(s, "k1").is_err());
        assert!(Jwt::new(JwtSettings::default(), "k/1").is_err());
    }
}
