//! The identity service: accounts, logins, rotating refresh tokens, revocation, and the
//! profiles that fill the Envelope. Its HTTP face is [`http`]; the edge pipeline uses it
//! through the small traits of [`crate::pipeline::authenticate`].
//!
//! Passwords are argon2id hashes (verified on the blocking pool: ~20 ms of CPU each).
//! Refresh tokens are 256-bit random strings, stored as SHA-256 hashes; each use rotates
//! it, and presenting a used one revokes the session (the token family). Revocations go
//! to the store first, then into this node's Bloom filter before the call returns;
//! other nodes follow the store's revocation log ([`feed`]).

pub mod config;
pub mod feed;
pub mod http;
pub mod keys;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures_util::future::BoxFuture;
use surge_store::{
    IdentityStore, NewAccount, NewSession, Profile, Refresh, Revocation, RevocationKind, StoreError,
};

use crate::auth::authenticator::hash_api_key as sha256_hex;
use crate::auth::jwt::Jwt;
use crate::auth::login_limit::LoginLimiter;
use crate::auth::password::{self, PasswordError};
use crate::auth::revocation::{RevocationFilter, Revoked};
use crate::pipeline::authenticate::{
    Issued, ProfileSource, RefreshError, Refresher, RevocationCheck,
};
pub use config::IdentityConfig;
use keys::KeyManager;

/// Why an identity call failed; [`http`] maps each to one problem type.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Bad input; the message names the field.
    #[error("{field}: {detail}")]
    Invalid {
        /// JSON pointer of the field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The e-mail has an account already.
    #[error("an account with this e-mail exists")]
    EmailTaken,
    /// Wrong e-mail or password (never says which).
    #[error("wrong e-mail or password")]
    BadCredentials,
    /// The account is banned.
    #[error("this account is suspended")]
    Suspended,
    /// Too many attempts; try again after this long.
    #[error("too many attempts")]
    TooManyAttempts(Duration),
    /// The refresh token is unknown, expired, or its session is gone.
    #[error("refresh token refused")]
    RefreshRefused,
    /// A used refresh token was presented: the session is now revoked.
    #[error("refresh token reused; the session is revoked")]
    RefreshReused,
    /// No such session or user.
    #[error("not found")]
    NotFound,
    /// The store failed.
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
    /// Something that should not fail did (key material, randomness).
    #[error("{0}")]
    Internal(String),
}

/// A user's view of who they are, as the Envelope says (`GET /auth/me`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Me {
    /// User id.
    pub user_id: String,
    /// Session id.
    pub session_id: String,
    /// Market.
    pub market: String,
    /// Cohorts.
    pub cohorts: Vec<String>,
    /// Subscription tier.
    pub tier: String,
}

/// The identity service; cheap to share behind an `Arc`.
pub struct Identity {
    config: IdentityConfig,
    store: Arc<dyn IdentityStore>,
    keys: KeyManager,
    revoked: Arc<RevocationFilter>,
    /// The highest revocation-log position applied to the filter (for waiters and tools).
    applied: tokio::sync::watch::Sender<i64>,
    limiter: LoginLimiter,
    profiles: quick_cache::sync::Cache<String, (Arc<Profile>, Instant)>,
    /// Results of recent rotations by old-token hash (see `refresh_reuse_window_seconds`).
    recent_refreshes: quick_cache::sync::Cache<String, (Issued, Instant)>,
}

fn random_token(bytes: usize) -> Result<String, IdentityError> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IdentityError::Internal("the system random generator failed".into()))?;
    Ok(B64.encode(b))
}

fn random_id(prefix: &str) -> Result<String, IdentityError> {
    let mut b = [0u8; 12];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IdentityError::Internal("the system random generator failed".into()))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{prefix}{hex}"))
}

/// Trims and lower-cases an e-mail; refuses what cannot be one.
pub fn normalise_email(raw: &str) -> Result<String, IdentityError> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && email.matches('@').count() == 1
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email)
    } else {
        Err(IdentityError::Invalid {
            field: "/email",
            detail: "must be an e-mail address".into(),
        })
    }
}

fn check_market(raw: &str) -> Result<String, IdentityError> {
    if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(IdentityError::Invalid {
            field: "/market",
            detail: "must be a two-letter market code such as DE".into(),
        })
    }
}

fn check_label(field: &'static str, raw: &str) -> Result<(), IdentityError> {
    if (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(IdentityError::Invalid {
            field,
            detail: "must be 1-64 characters of A-Z a-z 0-9 - _".into(),
        })
    }
}

impl Identity {
    /// Opens the service on `store`: loads (or creates) the signing keys and fills the
    /// revocation filter from the log.
    pub async fn open(
        config: IdentityConfig,
        store: Arc<dyn IdentityStore>,
    ) -> Result<Arc<Self>, String> {
        config.validate()?;
        let keys = KeyManager::load(store.clone(), &config).await?;
        let revoked = Arc::new(RevocationFilter::new(
            config.revocation.expected_entries,
            config.revocation.false_positive_rate,
            config.token_span(),
        )?);
        Ok(Arc::new(Identity {
            limiter: LoginLimiter::new(&config.login),
            profiles: quick_cache::sync::Cache::new(config.profile_cache_entries.max(16)),
            recent_refreshes: quick_cache::sync::Cache::new(10_000),
            applied: tokio::sync::watch::Sender::new(0),
            config,
            store,
            keys,
            revoked,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IdentityStore> {
        &self.store
    }

    /// The access-token service.
    pub fn jwt(&self) -> Arc<Jwt> {
        self.keys.jwt()
    }

    /// The key manager (rotation schedule, unknown-`kid` re-reads).
    pub fn keys(&self) -> &KeyManager {
        &self.keys
    }

    /// The revocation filter every request consults.
    pub fn revocation_filter(&self) -> Arc<RevocationFilter> {
        self.revoked.clone()
    }

    /// The login limiter (swept on a timer by [`feed`]).
    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }

    /// Creates an account and logs it in.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        market: Option<&str>,
        ip: IpAddr,
    ) -> Result<Issued, IdentityError> {
        let email = normalise_email(email)?;
        let market = check_market(market.unwrap_or(&self.config.default_market))?;
        self.limiter
            .attempt(&email, ip)
            .map_err(IdentityError::TooManyAttempts)?;
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| IdentityError::Internal(format!("hashing task failed: {e}")))?
            .map_err(|e| match e {
                PasswordError::TooShort | PasswordError::TooLong => IdentityError::Invalid {
                    field: "/password",
                    detail: e.to_string(),
                },
                other => IdentityError::Internal(other.to_string()),
            })?;
        let id = random_id("u_")?;
        let account = NewAccount {
            id: id.clone(),
            email,
            password_hash: hash,
            profile: Profile {
                market,
                tier: self.config.default_tier.clone(),
                cohorts: Vec::new(),
            },
        };
        match self.store.create_account(&account).await {
            Ok(()) => {}
            Err(StoreError::Duplicate) => return Err(IdentityError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user_id = %id, "account created");
        self.start_session(&id).await
    }

    /// Checks a password and starts a session.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<Issued, IdentityError> {
        let email = normalise_email(email).map_err(|_| IdentityError::BadCredentials)?;
        self.limiter
            .attempt(&email, ip)
            .map_err(IdentityError::TooManyAttempts)?;
        let account = self.store.account_by_email(&email).await?;
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let password = password.to_owned();
        // Unknown accounts are checked against a dummy hash: same time either way.
        let ok =
            tokio::task::spawn_blocking(move || password::verify(&password, stored.as_deref()))
                .await
                .map_err(|e| IdentityError::Internal(format!("hashing task failed: {e}")))?;
        let account = match account {
            Some(a) if ok => a,
            _ => {
                tracing::info!("login refused");
                return Err(IdentityError::BadCredentials);
            }
        };
        if account.banned_at_ms.is_some() {
            return Err(IdentityError::Suspended);
        }
        self.start_session(&account.id).await
    }

    async fn start_session(&self, user_id: &str) -> Result<Issued, IdentityError> {
        let session_id = random_id("s_")?;
        let refresh = format!("rt_{}", random_token(32)?);
        self.store
            .create_session(&NewSession {
                id: session_id.clone(),
                user_id: user_id.to_owned(),
                expires_at_ms: surge_http::envelope::now_ms()
                    + i64::try_from(self.config.session_ttl_seconds.saturating_mul(1000))
                        .unwrap_or(i64::MAX),
                refresh_hash: sha256_hex(&refresh),
            })
            .await?;
        tracing::info!(user_id, session_id = %session_id, "session started");
        self.issue(user_id, &session_id, refresh)
    }

    fn issue(
        &self,
        user_id: &str,
        session_id: &str,
        refresh: String,
    ) -> Result<Issued, IdentityError> {
        let access = self
            .jwt()
            .issue(user_id, session_id)
            .map_err(IdentityError::Internal)?;
        Ok(Issued {
            access_token: access,
            expires_in: self.config.access_ttl_seconds,
            refresh_token: refresh,
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
        })
    }

    /// Rotates a refresh token. The same token presented again within the reuse window
    /// gets the same answer; later, it revokes the session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, IdentityError> {
        if refresh_token.len() > 256 || !refresh_token.starts_with("rt_") {
            return Err(IdentityError::RefreshRefused);
        }
        let old = sha256_hex(refresh_token);
        let window = Duration::from_secs(self.config.refresh_reuse_window_seconds);
        if let Some((issued, at)) = self.recent_refreshes.get(&old)
            && at.elapsed() < window
        {
            return Ok(issued);
        }
        let new = format!("rt_{}", random_token(32)?);
        match self.store.rotate_refresh(&old, &sha256_hex(&new)).await? {
            Refresh::Rotated {
                session_id,
                user_id,
            } => {
                let issued = self.issue(&user_id, &session_id, new)?;
                if !window.is_zero() {
                    self.recent_refreshes
                        .insert(old, (issued.clone(), Instant::now()));
                }
                Ok(issued)
            }
            Refresh::Reused(entry) => {
                tracing::warn!(session_id = %entry.subject, "refresh token reused; session revoked");
                self.apply(&entry);
                Err(IdentityError::RefreshReused)
            }
            Refresh::Invalid => Err(IdentityError::RefreshRefused),
        }
    }

    /// Revokes one session (logout or admin).
    pub async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
    ) -> Result<Revocation, IdentityError> {
        let entry = self
            .store
            .revoke_session(session_id, reason)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.apply(&entry);
        tracing::info!(session_id, reason, "session revoked");
        Ok(entry)
    }

    /// Bans a user: every session revoked, no more logins.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        reason: &str,
    ) -> Result<Revocation, IdentityError> {
        let entry = self
            .store
            .revoke_user(user_id, reason)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.apply(&entry);
        tracing::info!(user_id, reason, "user revoked");
        Ok(entry)
    }

    /// Puts a stored revocation into this node's filter.
    pub fn apply(&self, entry: &Revocation) {
        self.revoked.insert(match entry.kind {
            RevocationKind::Session => Revoked::Session(&entry.subject),
            RevocationKind::User => Revoked::User(&entry.subject),
        });
        self.applied.send_if_modified(|seq| {
            let newer = entry.seq > *seq;
            if newer {
                *seq = entry.seq;
            }
            newer
        });
    }

    /// Follows the highest revocation-log position this node's filter holds: a revocation
    /// with `seq` ≤ the value is enforced here.
    pub fn revocations_applied(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Replaces a user's profile (admin); takes effect at once on this node and within
    /// `profile_cache_ttl_ms` on others.
    pub async fn set_profile(&self, user_id: &str, profile: Profile) -> Result<(), IdentityError> {
        check_market(&profile.market)?;
        check_label("/tier", &profile.tier)?;
        if profile.cohorts.len() > 32 {
            return Err(IdentityError::Invalid {
                field: "/cohorts",
                detail: "at most 32 cohorts".into(),
            });
        }
        for c in &profile.cohorts {
            check_label("/cohorts", c)?;
        }
        let profile = Profile {
            market: profile.market.to_ascii_uppercase(),
            ..profile
        };
        if !self.store.set_profile(user_id, &profile).await? {
            return Err(IdentityError::NotFound);
        }
        self.profiles.remove(user_id);
        Ok(())
    }

    /// A user's profile, cached for `profile_cache_ttl_ms`.
    pub async fn profile(&self, user_id: &str) -> Result<Arc<Profile>, IdentityError> {
        if let Some(p) = ProfileSource::cached(self, user_id) {
            return Ok(p);
        }
        let profile = Arc::new(
            self.store
                .account(user_id)
                .await?
                .map(|a| a.profile)
                .unwrap_or_default(),
        );
        self.profiles
            .insert(user_id.to_owned(), (profile.clone(), Instant::now()));
        Ok(profile)
    }
}

impl RevocationCheck for Identity {
    fn is_revoked(&self, session: &str, user: &str) -> BoxFuture<'static, bool> {
        let store = self.store.clone();
        let (session, user) = (session.to_owned(), user.to_owned());
        Box::pin(async move {
            match store.is_revoked(&session, &user).await {
                Ok(r) => r,
                Err(e) => {
                    // The filter said "maybe" and the store cannot answer: refuse.
                    tracing::warn!(error = %e, "cannot confirm a revocation; refusing the request");
                    true
                }
            }
        })
    }
}

impl ProfileSource for Identity {
    fn cached(&self, user_id: &str) -> Option<Arc<Profile>> {
        let ttl = Duration::from_millis(self.config.profile_cache_ttl_ms);
        self.profiles
            .get(user_id)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(p, _)| p)
    }

    fn profile(self: Arc<Self>, user_id: &str) -> BoxFuture<'static, Option<Arc<Profile>>> {
        let user_id = user_id.to_owned();
        Box::pin(async move {
            match Identity::profile(&self, &user_id).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load a profile; the Envelope carries none");
                    None
                }
            }
        })
    }
}

impl Refresher for Identity {
    fn grace(&self) -> Duration {
        Duration::from_secs(self.config.silent_refresh_grace_seconds)
    }

    fn refresh(
        self: Arc<Self>,
        refresh_token: String,
    ) -> BoxFuture<'static, Result<Issued, RefreshError>> {
        Box::pin(async move {
            Identity::refresh(&self, &refresh_token)
                .await
                .map_err(|e| match e {
                    IdentityError::RefreshReused => RefreshError::Revoked,
                    IdentityError::Store(_) | IdentityError::Internal(_) => {
                        RefreshError::Unavailable
                    }
                    _ => RefreshError::Refused,
                })
        })
    }

    fn cookie_secure(&self) -> bool {
        self.config.cookie_secure
    }

    fn verify_expired(&self, token: &str) -> Option<crate::auth::jwt::Claims> {
        self.jwt().verify_expired(token, self.grace()).ok()
    }

    fn cookie_ages(&self) -> (u64, u64) {
        let c = &self.config;
        (
            c.access_ttl_seconds + c.silent_refresh_grace_seconds,
            c.session_ttl_seconds,
        )
    }

    fn refetch_keys(self: Arc<Self>) -> BoxFuture<'static, bool> {
        Box::pin(async move { self.keys.refetch().await })
    }
}
