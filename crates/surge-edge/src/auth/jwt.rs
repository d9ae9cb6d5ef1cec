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
    /// `validation` without the expiry check, for silent refresh.
    expired_ok: Validation,
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

/// A fresh Ed25519 key as a PKCS#8 document (what the identity store keeps).
pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| "cannot generate an Ed25519 key".to_owned())
}

fn signing_key(kid: &str, pkcs8: &[u8]) -> Result<SigningKey, String> {
    if !valid_kid(kid) {
        return Err(format!(
            "key id {kid:?} must be 1-64 characters of A-Z a-z 0-9 - _"
        ));
    }
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|_| format!("key {kid:?} is not an Ed25519 PKCS#8 document"))?;
    Ok(SigningKey {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ed_der(pkcs8),
        x: B64.encode(pair.public_key().as_ref()),
    })
}

/// Builds the key set from `(kid, pkcs8)` pairs; the last one signs.
fn key_set(keys: &[(String, Vec<u8>)]) -> Result<Keys, String> {
    let mut verifying = HashMap::new();
    let mut current = None;
    for (kid, pkcs8) in keys {
        let key = signing_key(kid, pkcs8)?;
        let decoding = DecodingKey::from_ed_components(&key.x)
            .map_err(|e| format!("cannot use key {kid:?}: {e}"))?;
        verifying.insert(kid.clone(), (decoding, key.x.clone()));
        current = Some(key);
    }
    let current = current.ok_or("the key set is empty")?;
    Ok(Keys { current, verifying })
}

impl Jwt {
    /// A token service with a fresh signing key named `kid` (tests, tools).
    pub fn new(settings: JwtSettings, kid: &str) -> Result<Self, String> {
        Self::with_keys(settings, &[(kid.to_owned(), generate_pkcs8()?)])
    }

    /// A token service over stored keys `(kid, pkcs8)`, oldest first; the last signs.
    pub fn with_keys(settings: JwtSettings, keys: &[(String, Vec<u8>)]) -> Result<Self, String> {
        if settings.leeway > MAX_LEEWAY {
            return Err(format!(
                "jwt leeway must be at most {} s",
                MAX_LEEWAY.as_secs()
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
        let mut expired_ok = validation.clone();
        expired_ok.validate_exp = false;
        Ok(Jwt {
            verified: quick_cache::sync::Cache::new(settings.cache_entries.max(16)),
            settings,
            validation,
            expired_ok,
            keys: RwLock::new(key_set(keys)?),
        })
    }

    /// Replaces the key set with `keys` (oldest first; the last signs), e.g. after the
    /// store gained a rotated key. Cached tokens of keys no longer present are dropped.
    pub fn install(&self, keys: &[(String, Vec<u8>)]) -> Result<(), String> {
        let set = key_set(keys)?;
        let mut current = self
            .keys
            .write()
            .map_err(|_| "key set poisoned".to_owned())?;
        let removed = current
            .verifying
            .keys()
            .any(|k| !set.verifying.contains_key(k));
        *current = set;
        drop(current);
        if removed {
            self.verified.clear();
        }
        Ok(())
    }

    /// How tokens are issued and checked.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The key ids accepted now, sorted.
    pub fn kids(&self) -> Vec<String> {
        let keys = match self.keys.read() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        let mut kids: Vec<String> = keys.verifying.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Starts signing with a new key `kid`; tokens signed with older keys still verify
    /// until [`Jwt::retire`] removes them (rotation with overlap).
    pub fn rotate(&self, kid: &str) -> Result<(), String> {
        if !valid_kid(kid) {
            return Err(format!("bad key id {kid:?}"));
        }
        let key = signing_key(kid, &generate_pkcs8()?)?;
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
        let claims = Arc::new(self.decode(token, &self.validation)?);
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// The claims of a token that passes every check except expiry, provided it expired
    /// at most `grace` ago (silent refresh). Never cached.
    pub fn verify_expired(&self, token: &str, grace: Duration) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let claims = self.decode(token, &self.expired_ok)?;
        if now_secs() > claims.exp.saturating_add(grace.as_secs()) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn decode(&self, token: &str, validation: &Validation) -> Result<Claims, TokenError> {
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
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
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
        Ok(data.claims)
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
    fn expired_tokens_verify_only_within_the_grace_and_never_if_forged() {
        let jwt = service();
        let now = now_secs();
        let mut c = claims(now - 700);
        c["exp"] = (now - 100).into();
        let t = sign_claims(&jwt, &c);
        assert_eq!(jwt.verify(&t), Err(TokenError::Expired));
        let back = jwt.verify_expired(&t, Duration::from_secs(300)).unwrap();
        assert_eq!(back.sid, "s1");
        assert_eq!(
            jwt.verify_expired(&t, Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(
            jwt.verify_expired(&forged, Duration::from_secs(300))
                .is_err()
        );
        c["aud"] = "other".into();
        let wrong_aud = sign_claims(&jwt, &c);
        assert_eq!(
            jwt.verify_expired(&wrong_aud, Duration::from_secs(300)),
            Err(TokenError::BadClaims)
        );
    }

    #[test]
    fn stored_keys_load_and_install_replaces_them() {
        let k1 = generate_pkcs8().unwrap();
        let k2 = generate_pkcs8().unwrap();
        let jwt = Jwt::with_keys(JwtSettings::default(), &[("k1".into(), k1.clone())]).unwrap();
        let old = jwt.issue("u1", "s1").unwrap();
        jwt.install(&[("k1".into(), k1.clone()), ("k2".into(), k2.clone())])
            .unwrap();
        assert_eq!(jwt.kids(), ["k1", "k2"]);
        let new = jwt.issue("u1", "s1").unwrap();
        assert!(new.len() > 10 && jwt.verify(&old).is_ok() && jwt.verify(&new).is_ok());
        // Another node with the same stored keys verifies both.
        let other = Jwt::with_keys(
            JwtSettings::default(),
            &[("k1".into(), k1), ("k2".into(), k2.clone())],
        )
        .unwrap();
        assert!(other.verify(&old).is_ok() && other.verify(&new).is_ok());
        jwt.install(&[("k2".into(), k2)]).unwrap();
        assert_eq!(
            jwt.verify(&old),
            Err(TokenError::UnknownKey),
            "cache dropped"
        );
        assert!(Jwt::with_keys(JwtSettings::default(), &[]).is_err());
        assert!(Jwt::with_keys(JwtSettings::default(), &[("bad kid".into(), vec![1])]).is_err());
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
