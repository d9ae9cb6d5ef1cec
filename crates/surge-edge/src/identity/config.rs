//! Settings of the identity service (accounts, tokens, keys, revocation).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::jwt::{JwtSettings, MAX_LEEWAY};
use crate::auth::login_limit::LoginLimits;

/// How accounts, tokens, keys and revocations behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// `iss` of access tokens (and required on them). Default `surge`.
    pub issuer: String,
    /// `aud` of access tokens (and required on them). Default `surge`.
    pub audience: String,
    /// Life of an access token, in seconds. Default 900 (15 min).
    pub access_ttl_seconds: u64,
    /// Life of a login session (how long refresh tokens work), in seconds. Default 30 days.
    pub session_ttl_seconds: u64,
    /// Clock leeway for `exp`/`nbf`, in seconds (at most 5). Default 5.
    pub leeway_seconds: u64,
    /// Silent refresh: an access token that expired at most this long ago, sent with a
    /// valid refresh cookie, is replaced on the fly, in seconds. 0 turns it off. Default 300.
    pub silent_refresh_grace_seconds: u64,
    /// A refresh token presented again within this many seconds of its rotation (a
    /// browser's parallel requests) gets the same new tokens instead of counting as
    /// reuse. Per edge node. Default 10.
    pub refresh_reuse_window_seconds: u64,
    /// Signing keys (JWT and Envelope) rotate after this many hours; the old key keeps
    /// verifying until every token it signed has expired. Default 24.
    pub key_rotation_hours: u64,
    /// How often the key set and the rotation schedule are checked, in seconds. Default 60.
    pub key_check_seconds: u64,
    /// Cookies carry `Secure` (browsers send them only over HTTPS or to localhost).
    /// Default true.
    pub cookie_secure: bool,
    /// Verified access tokens remembered at once. Default 100,000.
    pub verified_token_cache_entries: usize,
    /// Profiles (market, tier, cohorts) cached at once. Default 100,000.
    pub profile_cache_entries: usize,
    /// How long a cached profile is used, in milliseconds. Default 30,000.
    pub profile_cache_ttl_ms: u64,
    /// Market of a new account when signup names none. Default `DE`.
    pub default_market: String,
    /// Tier of a new account. Default `free`.
    pub default_tier: String,
    /// The revocation filter.
    pub revocation: RevocationConfig,
    /// Login (and signup) brute-force limits.
    pub login: LoginLimits,
}

/// The Bloom filter of revocations and how it follows the revocation log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// Revocations per generation the filter is sized for. Default 1,000,000 (~1.8 MB
    /// per generation at 0.1 %).
    pub expected_entries: usize,
    /// False-positive rate of the filter (a positive costs one store lookup). Default 0.001.
    pub false_positive_rate: f64,
    /// How often the revocation log is polled for other nodes' revocations, in
    /// milliseconds. Revocations made on this node apply before the call returns.
    /// Default 250.
    pub poll_ms: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            expected_entries: 1_000_000,
            false_positive_rate: 0.001,
            poll_ms: 250,
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            issuer: "surge".into(),
            audience: "surge".into(),
            access_ttl_seconds: 900,
            session_ttl_seconds: 30 * 24 * 3600,
            leeway_seconds: 5,
            silent_refresh_grace_seconds: 300,
            refresh_reuse_window_seconds: 10,
            key_rotation_hours: 24,
            key_check_seconds: 60,
            cookie_secure: true,
            verified_token_cache_entries: 100_000,
            profile_cache_entries: 100_000,
            profile_cache_ttl_ms: 30_000,
            default_market: "DE".into(),
            default_tier: "free".into(),
            revocation: RevocationConfig::default(),
            login: LoginLimits::default(),
        }
    }
}

impl IdentityConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("edge.identity.issuer and .audience must not be empty".into());
        }
        if self.access_ttl_seconds == 0 || self.session_ttl_seconds < self.access_ttl_seconds {
            return Err(format!(
                "edge.identity.access_ttl_seconds must be > 0 and at most session_ttl_seconds, \
                 got {} and {}",
                self.access_ttl_seconds, self.session_ttl_seconds
            ));
        }
        if Duration::from_secs(self.leeway_seconds) > MAX_LEEWAY {
            return Err(format!(
                "edge.identity.leeway_seconds must be at most {}, got {}",
                MAX_LEEWAY.as_secs(),
                self.leeway_seconds
            ));
        }
        if self.key_rotation_hours == 0 || self.key_check_seconds == 0 {
            return Err(
                "edge.identity.key_rotation_hours and key_check_seconds must be > 0".into(),
            );
        }
        let fp = self.revocation.false_positive_rate;
        if !(fp > 0.0 && fp <= 0.001) {
            return Err(format!(
                "edge.identity.revocation.false_positive_rate must be in (0, 0.001], got {fp}"
            ));
        }
        if self.revocation.poll_ms == 0 || self.revocation.poll_ms > 1_000 {
            return Err(format!(
                "edge.identity.revocation.poll_ms must be 1..=1000 (revocations apply within 1 s), got {}",
                self.revocation.poll_ms
            ));
        }
        if self.default_market.len() != 2
            || !self.default_market.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return Err(format!(
                "edge.identity.default_market must be a two-letter market, got {:?}",
                self.default_market
            ));
        }
        Ok(())
    }

    /// Token settings for [`crate::auth::jwt::Jwt`].
    pub fn jwt(&self) -> JwtSettings {
        JwtSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            ttl: Duration::from_secs(self.access_ttl_seconds),
            leeway: Duration::from_secs(self.leeway_seconds),
            cache_entries: self.verified_token_cache_entries,
        }
    }

    /// The longest an access token can be accepted after issue: a revocation must stay
    /// in the filter at least this long.
    pub fn token_span(&self) -> Duration {
        Duration::from_secs(self.access_ttl_seconds + self.leeway_seconds)
    }

    /// How long a retired signing key keeps verifying.
    pub fn key_overlap(&self) -> Duration {
        self.token_span() + Duration::from_secs(self.silent_refresh_grace_seconds)
    }
}
