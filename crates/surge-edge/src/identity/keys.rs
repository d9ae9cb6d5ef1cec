//! Signing keys: kept in the identity store so every edge node signs and verifies with
//! the same set, created on first start, rotated on a schedule with overlap.
//!
//! Two purposes: `jwt` (Ed25519 PKCS#8 documents for access tokens, published as JWKS)
//! and `envelope` (32-byte HMAC keys for the Envelope). The newest key of a purpose
//! signs; every stored key verifies. A key is created when the newest is older than the
//! rotation period; an old key is deleted once the key that replaced it has been signing
//! for longer than the overlap (the longest a token signed by the old key can live).
//! A token whose `kid` is unknown makes the edge re-read the set (single-flight, at most
//! once a second); a failed read keeps the last good set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use surge_http::envelope::EnvelopeKeys;
use surge_store::{IdentityStore, SigningKey};
use tokio::sync::Mutex;

use crate::auth::jwt::{Jwt, generate_pkcs8};
use crate::identity::config::IdentityConfig;

/// Oldest Envelope an upstream accepts (it is signed per request, just before the call).
pub const ENVELOPE_MAX_AGE: Duration = Duration::from_secs(30);
/// Largest clock difference between edge and upstream for Envelopes.
pub const ENVELOPE_SKEW: Duration = Duration::from_secs(5);

const JWT: &str = "jwt";
const ENVELOPE: &str = "envelope";
/// Unknown-`kid` re-reads happen at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(1);

/// Keeps [`Jwt`] and [`EnvelopeKeys`] in step with the stored keys.
pub struct KeyManager {
    store: Arc<dyn IdentityStore>,
    jwt: Arc<Jwt>,
    envelope: EnvelopeKeys,
    rotate_every: Duration,
    overlap: Duration,
    /// How long a new Envelope key is published before it signs.
    settle: Duration,
    last_refetch: Mutex<Option<Instant>>,
}

fn now_ms() -> i64 {
    surge_http::envelope::now_ms()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the system random generator failed".to_owned())?;
    Ok(b)
}

fn new_kid(prefix: &str) -> Result<String, String> {
    let r = random_bytes(3)?;
    Ok(format!(
        "{prefix}{:x}{:02x}{:02x}{:02x}",
        now_ms(),
        r[0],
        r[1],
        r[2]
    ))
}

impl KeyManager {
    /// Reads the stored keys (creating or rotating them when due) and builds the signers.
    pub async fn load(
        store: Arc<dyn IdentityStore>,
        config: &IdentityConfig,
    ) -> Result<Self, String> {
        let rotate_every = Duration::from_secs(config.key_rotation_hours * 3600);
        let overlap = config.key_overlap();
        let jwt_keys = ensure(&*store, JWT, rotate_every).await?;
        let env_keys = ensure(&*store, ENVELOPE, rotate_every).await?;
        let jwt = Jwt::with_keys(config.jwt(), &pairs(&jwt_keys))?;
        let settle = envelope_settle(config);
        let envelope = envelope_keys(&env_keys, settle, None)?;
        Ok(KeyManager {
            store,
            jwt: Arc::new(jwt),
            envelope,
            rotate_every,
            overlap,
            settle,
            last_refetch: Mutex::new(None),
        })
    }

    /// The access-token service.
    pub fn jwt(&self) -> Arc<Jwt> {
        self.jwt.clone()
    }

    /// The Envelope key ring (clones follow rotations).
    pub fn envelope(&self) -> EnvelopeKeys {
        self.envelope.clone()
    }

    /// One scheduled step: rotate when due, delete keys past their overlap, re-read.
    pub async fn tick(&self) -> Result<(), String> {
        for purpose in [JWT, ENVELOPE] {
            let keys = ensure(&*self.store, purpose, self.rotate_every).await?;
            // The newest key that has been signing for longer than the overlap: every
            // key older than it signed nothing still alive.
            let horizon = now_ms() - millis(self.overlap);
            if let Some(k) = keys.iter().rev().find(|k| k.created_at_ms < horizon) {
                let n = self
                    .store
                    .retire_signing_keys(purpose, k.created_at_ms)
                    .await
                    .map_err(|e| format!("cannot retire {purpose} keys: {e}"))?;
                if n > 0 {
                    tracing::info!(purpose, retired = n, "retired signing keys");
                }
            }
        }
        self.reload().await
    }

    /// Re-reads the key set after a token with an unknown `kid`: one read at a time, at
    /// most once a second. Returns whether a read happened.
    pub async fn refetch(&self) -> bool {
        let Ok(mut last) = self.last_refetch.try_lock() else {
            // Another request is reading; wait for it, then use its result.
            let _ = self.last_refetch.lock().await;
            return true;
        };
        if last.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "cannot re-read the signing keys; keeping the last good set");
        }
        true
    }

    /// Re-reads the stored keys into the signers (no rotation: a process that only
    /// verifies Envelopes, such as a checkout node without the edge, calls this on a
    /// schedule).
    pub async fn reload(&self) -> Result<(), String> {
        let jwt_keys = self
            .store
            .signing_keys(JWT)
            .await
            .map_err(|e| format!("cannot read jwt keys: {e}"))?;
        let env_keys = self
            .store
            .signing_keys(ENVELOPE)
            .await
            .map_err(|e| format!("cannot read envelope keys: {e}"))?;
        if jwt_keys.is_empty() || env_keys.is_empty() {
            return Err("the stored key set is empty".into());
        }
        self.jwt.install(&pairs(&jwt_keys))?;
        envelope_keys(&env_keys, self.settle, Some(&self.envelope))?;
        Ok(())
    }
}

/// The keys of `purpose`, after creating one if there is none or the newest is due.
async fn ensure(
    store: &dyn IdentityStore,
    purpose: &str,
    rotate_every: Duration,
) -> Result<Vec<SigningKey>, String> {
    let keys = store
        .signing_keys(purpose)
        .await
        .map_err(|e| format!("cannot read {purpose} keys: {e}"))?;
    let due = keys
        .last()
        .is_none_or(|k| now_ms() - k.created_at_ms >= millis(rotate_every));
    if !due {
        return Ok(keys);
    }
    let (kid, secret) = if purpose == JWT {
        (new_kid("j")?, generate_pkcs8()?)
    } else {
        (new_kid("e")?, random_bytes(32)?)
    };
    store
        .put_signing_key(&SigningKey {
            kid: kid.clone(),
            purpose: purpose.to_owned(),
            secret,
            created_at_ms: now_ms(),
        })
        .await
        .map_err(|e| format!("cannot store a new {purpose} key: {e}"))?;
    tracing::info!(purpose, kid, "new signing key");
    store
        .signing_keys(purpose)
        .await
        .map_err(|e| format!("cannot read {purpose} keys: {e}"))
}

fn pairs(keys: &[SigningKey]) -> Vec<(String, Vec<u8>)> {
    keys.iter()
        .map(|k| (k.kid.clone(), k.secret.clone()))
        .collect()
}

/// How long a new Envelope key waits before it signs: two key checks, so that every
/// process that verifies Envelopes and re-reads the keys on that schedule (a checkout
/// node without the edge) has it before the first Envelope it signs arrives. Tokens
/// have no such wait: edges re-read the set when a token's `kid` is unknown.
fn envelope_settle(config: &IdentityConfig) -> Duration {
    Duration::from_secs(config.key_check_seconds.saturating_mul(2))
}

/// The key that signs Envelopes: the newest one published for at least `settle`, or,
/// when none is that old (the very first key), the oldest one.
fn envelope_signer(keys: &[SigningKey], settle: Duration) -> Option<&SigningKey> {
    let horizon = now_ms() - millis(settle);
    keys.iter()
        .rev()
        .find(|k| k.created_at_ms <= horizon)
        .or_else(|| keys.first())
}

/// Builds a ring from stored keys (every key verifies, the [`envelope_signer`] signs),
/// or installs it into `into`.
fn envelope_keys(
    keys: &[SigningKey],
    settle: Duration,
    into: Option<&EnvelopeKeys>,
) -> Result<EnvelopeKeys, String> {
    let current = envelope_signer(keys, settle)
        .ok_or("no envelope key")?
        .kid
        .clone();
    let ring = keys.iter().map(|k| (k.kid.as_str(), k.secret.as_slice()));
    match into {
        Some(existing) => {
            existing.install(&current, ring)?;
            Ok(existing.clone())
        }
        None => EnvelopeKeys::new(&current, ring, ENVELOPE_MAX_AGE, ENVELOPE_SKEW),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn store() -> (Arc<dyn IdentityStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        let s = surge_store::open_identity(&url, &surge_store::StoreOptions::default())
            .await
            .unwrap();
        (s, dir)
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_share_keys_and_rotation_overlaps() {
        let (s, _dir) = store().await;
        let config = IdentityConfig::default();
        let a = KeyManager::load(s.clone(), &config).await.unwrap();
        let b = KeyManager::load(s.clone(), &config).await.unwrap();
        assert_eq!(a.jwt().kids(), b.jwt().kids(), "one key set");
        let token = a.jwt().issue("u1", "s1").unwrap();
        assert!(b.jwt().verify(&token).is_ok());
        assert_eq!(a.envelope().current(), b.envelope().current());

        // Another node rotates (a key with a newer creation time appears in the store).
        s.put_signing_key(&SigningKey {
            kid: "j-next".into(),
            purpose: JWT.into(),
            secret: generate_pkcs8().unwrap(),
            created_at_ms: now_ms() + 1,
        })
        .await
        .unwrap();
        let other =
            Jwt::with_keys(config.jwt(), &pairs(&s.signing_keys(JWT).await.unwrap())).unwrap();
        let new_token = other.issue("u1", "s1").unwrap();
        assert!(
            a.jwt().verify(&new_token).is_err(),
            "unknown kid before re-reading"
        );
        assert!(a.refetch().await);
        assert!(!a.refetch().await, "rate-limited");
        assert!(a.jwt().verify(&new_token).is_ok());
        assert!(a.jwt().verify(&token).is_ok(), "the old key still verifies");
        // The old key goes only once the new one has signed for longer than the overlap.
        a.tick().await.unwrap();
        assert_eq!(a.jwt().kids().len(), 2);
    }

    #[tokio::test]
    async fn a_new_envelope_key_verifies_at_once_and_signs_only_once_published_long_enough() {
        let (s, _dir) = store().await;
        let config = IdentityConfig::default();
        let edge = KeyManager::load(s.clone(), &config).await.unwrap();
        let first = edge.envelope().current();
        // A rotation: a newer key appears in the store (a millisecond later at least,
        // so the two never tie on creation time).
        s.put_signing_key(&SigningKey {
            kid: "e-next".into(),
            purpose: ENVELOPE.into(),
            secret: vec![9; 32],
            created_at_ms: now_ms() + 1,
        })
        .await
        .unwrap();
        edge.reload().await.unwrap();
        assert_eq!(
            edge.envelope().current(),
            first,
            "the old key signs while the new one is being published"
        );
        // Once it has been published for two key checks, it signs.
        let key = |kid: &str, created_at_ms: i64| SigningKey {
            kid: kid.into(),
            purpose: ENVELOPE.into(),
            secret: vec![1; 32],
            created_at_ms,
        };
        let settle = millis(envelope_settle(&config));
        let keys = [
            key("a", 0),
            key("b", now_ms() - settle - 1),
            key("c", now_ms()),
        ];
        assert_eq!(
            envelope_signer(&keys, envelope_settle(&config))
                .unwrap()
                .kid,
            "b"
        );
        // The very first key signs at once.
        let keys = [key("only", now_ms())];
        assert_eq!(
            envelope_signer(&keys, envelope_settle(&config))
                .unwrap()
                .kid,
            "only"
        );
    }

    #[tokio::test]
    async fn keys_survive_a_restart() {
        let (s, _dir) = store().await;
        let config = IdentityConfig::default();
        let token = KeyManager::load(s.clone(), &config)
            .await
            .unwrap()
            .jwt()
            .issue("u1", "s1")
            .unwrap();
        let again = KeyManager::load(s, &config).await.unwrap();
        assert!(again.jwt().verify(&token).is_ok());
    }
}
