//! Storage for the edge's identity: accounts with their profile, login sessions, rotating
//! refresh tokens (stored as hashes), the revocation log and the signing keys.
//!
//! The same SQL runs on SQLite and PostgreSQL ([`identity_store!`] only names the types).
//! Two operations carry the security properties and are single statements or one
//! transaction on both backends:
//! - [`IdentityStore::rotate_refresh`] marks the presented token used with a conditional
//!   `UPDATE … WHERE used_at_ms IS NULL`, so of two concurrent refreshes with one token
//!   exactly one wins; presenting a token that was already used revokes its whole session
//!   (the token family) in the same transaction.
//! - Every revocation (logout, admin ban, reuse) appends to the `revocations` log, whose
//!   increasing `seq` lets every edge node follow it ([`IdentityStore::revocations`]).
//! - Every change of a kill switch ([`IdentityStore::set_switch`]) takes the next value of
//!   one counter row (`UPDATE … SET seq = seq + 1`), whose row lock is held until commit:
//!   switch changes commit in `seq` order, so a node that has read everything up to a
//!   `seq` can never see an older change appear later ([`IdentityStore::switches`]).

use async_trait::async_trait;
use sqlx::{Postgres, Row, Sqlite};

use crate::metrics::record;
use crate::sql::{SqlStore, now_ms};
use crate::{Result, StoreError};

/// A new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Account (user) id.
    pub id: String,
    /// E-mail, already normalised by the caller (unique).
    pub email: String,
    /// The argon2id PHC string, never the password.
    pub password_hash: String,
    /// The profile.
    pub profile: Profile,
}

/// What upstreams learn about a user through the Envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// Market, e.g. `de`.
    pub market: String,
    /// Subscription tier, e.g. `free`, `plus`.
    pub tier: String,
    /// Cohorts, e.g. `sneaker-fan`.
    pub cohorts: Vec<String>,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Account (user) id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The profile.
    pub profile: Profile,
    /// When an operator banned the account (`None`: not banned).
    pub banned_at_ms: Option<i64>,
}

/// A new login session with its first refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Session id.
    pub id: String,
    /// The account.
    pub user_id: String,
    /// When the session (and every refresh token of it) stops being refreshable.
    pub expires_at_ms: i64,
    /// SHA-256 (hex) of the first refresh token.
    pub refresh_hash: String,
}

/// What kind of thing a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// One login session.
    Session,
    /// Every session of a user (a ban).
    User,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Session => "session",
            RevocationKind::User => "user",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "session" => Ok(RevocationKind::Session),
            "user" => Ok(RevocationKind::User),
            other => Err(StoreError::Corrupt(format!("revocation kind {other:?}"))),
        }
    }
}

/// One entry of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position in the log (increasing).
    pub seq: i64,
    /// Session or user.
    pub kind: RevocationKind,
    /// The session or user id.
    pub subject: String,
    /// When it was recorded.
    pub at_ms: i64,
    /// Why: `logout`, `admin`, `refresh-reuse`.
    pub reason: String,
}

/// The result of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The token was current: it is now used and the new one replaces it.
    Rotated {
        /// The session.
        session_id: String,
        /// Its user.
        user_id: String,
    },
    /// The token had been used before: the session is now revoked (the entry logged).
    Reused(Revocation),
    /// Unknown token, or its session expired, was revoked, or its user is banned.
    Invalid,
}

/// Key material kept by the store so every edge node signs and verifies with the same keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// What the key is for (`jwt`, `envelope`).
    pub purpose: String,
    /// The secret (PKCS#8 document or HMAC key).
    pub secret: Vec<u8>,
    /// When it was created; the newest key of a purpose signs.
    pub created_at_ms: i64,
}

/// The stored state of one kill switch of the edge (a route or a route class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// What it switches: `route:<prefix>` or `class:<name>`.
    pub target: String,
    /// Whether the target is switched off.
    pub off: bool,
    /// Why, as the operator said.
    pub reason: String,
    /// Who changed it, if they said.
    pub actor: Option<String>,
    /// Position of the last change among all switch changes (increasing, commit order).
    pub seq: i64,
    /// When it last changed (the writer's clock; order by `seq`, not by this).
    pub updated_at_ms: i64,
}

/// The identity store.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Creates an account. [`StoreError::Duplicate`] when the e-mail or id is taken.
    async fn create_account(&self, account: &NewAccount) -> Result<()>;

    /// The account with this (normalised) e-mail.
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>>;

    /// The account with this id.
    async fn account(&self, id: &str) -> Result<Option<Account>>;

    /// Replaces a profile. `false` when there is no such account.
    async fn set_profile(&self, user_id: &str, profile: &Profile) -> Result<bool>;

    /// Stores a new session and its first refresh token in one transaction.
    async fn create_session(&self, session: &NewSession) -> Result<()>;

    /// Presents refresh token `old_hash`; when current, replaces it with `new_hash`.
    async fn rotate_refresh(&self, old_hash: &str, new_hash: &str) -> Result<Refresh>;

    /// Revokes a session; `None` when there is no such session. Revoking twice logs
    /// once and returns the first entry's kind and subject again.
    async fn revoke_session(&self, session_id: &str, reason: &str) -> Result<Option<Revocation>>;

    /// Bans a user: every session revoked, no more logins. `None` when no such user.
    async fn revoke_user(&self, user_id: &str, reason: &str) -> Result<Option<Revocation>>;

    /// Whether `session_id` is revoked or `user_id` banned (the authoritative check).
    async fn is_revoked(&self, session_id: &str, user_id: &str) -> Result<bool>;

    /// Revocation log entries after `after_seq` recorded at or after `since_ms`, oldest
    /// first, at most `limit`.
    async fn revocations(
        &self,
        after_seq: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>>;

    /// Deletes what no one needs any more: revocation log entries and used or expired
    /// refresh tokens older than `before_ms`, and sessions that expired before it.
    /// Returns the number of rows deleted.
    async fn prune(&self, before_ms: i64) -> Result<u64>;

    /// Adds a signing key (a kid that exists is left as it is).
    async fn put_signing_key(&self, key: &SigningKey) -> Result<()>;

    /// Every key of `purpose`, oldest first.
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKey>>;

    /// Deletes keys of `purpose` created before `before_ms`, never the newest one.
    async fn retire_signing_keys(&self, purpose: &str, before_ms: i64) -> Result<u64>;

    /// Sets a kill switch (creating its row on first use) and returns the stored state,
    /// with a `seq` greater than that of every change committed before.
    async fn set_switch(
        &self,
        target: &str,
        off: bool,
        reason: &str,
        actor: Option<&str>,
    ) -> Result<Switch>;

    /// Switches changed after `after_seq` (0: every switch), oldest change first.
    async fn switches(&self, after_seq: i64) -> Result<Vec<Switch>>;

    /// Closes the connections.
    async fn close(&self);
}

fn cohorts_to_text(cohorts: &[String]) -> String {
    cohorts.join(",")
}

fn cohorts_from_text(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

macro_rules! identity_store {
    ($db:ty, $name:literal) => {
        impl SqlStore<$db> {
            fn account_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Account> {
                let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                Ok(Account {
                    id: row.try_get("id").map_err(get)?,
                    email: row.try_get("email").map_err(get)?,
                    password_hash: row.try_get("password_hash").map_err(get)?,
                    profile: Profile {
                        market: row.try_get("market").map_err(get)?,
                        tier: row.try_get("tier").map_err(get)?,
                        cohorts: cohorts_from_text(row.try_get::<&str, _>("cohorts").map_err(get)?),
                    },
                    banned_at_ms: row.try_get("banned_at_ms").map_err(get)?,
                })
            }

            async fn log_revocation(
                tx: &mut sqlx::Transaction<'static, $db>,
                kind: RevocationKind,
                subject: &str,
                at_ms: i64,
                reason: &str,
            ) -> Result<Revocation> {
                let seq = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO revocations (kind, subject, at_ms, reason) VALUES ($1, $2, $3, $4) \
                     RETURNING seq",
                )
                .bind(kind.as_str())
                .bind(subject)
                .bind(at_ms)
                .bind(reason)
                .fetch_one(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(Revocation { seq, kind, subject: subject.to_owned(), at_ms, reason: reason.to_owned() })
            }

            /// Revokes one session inside `tx` (logging it once); `None` if no such session.
            async fn revoke_session_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                session_id: &str,
                reason: &str,
            ) -> Result<Option<Revocation>> {
                let at = now_ms();
                let exists = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT revoked_at_ms FROM sessions WHERE id = $1",
                )
                .bind(session_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                match exists {
                    None => Ok(None),
                    Some(Some(when)) => Ok(Some(Revocation {
                        seq: 0,
                        kind: RevocationKind::Session,
                        subject: session_id.to_owned(),
                        at_ms: when,
                        reason: "already revoked".to_owned(),
                    })),
                    Some(None) => {
                        sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE id = $2")
                            .bind(at)
                            .bind(session_id)
                            .execute(&mut **tx)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                        Self::log_revocation(tx, RevocationKind::Session, session_id, at, reason)
                            .await
                            .map(Some)
                    }
                }
            }
        }

        #[async_trait]
        impl IdentityStore for SqlStore<$db> {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn create_account(&self, a: &NewAccount) -> Result<()> {
                let started = std::time::Instant::now();
                let r = sqlx::query(
                    "INSERT INTO accounts (id, email, password_hash, market, tier, cohorts, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(a.id.as_str())
                .bind(a.email.as_str())
                .bind(a.password_hash.as_str())
                .bind(a.profile.market.as_str())
                .bind(a.profile.tier.as_str())
                .bind(cohorts_to_text(&a.profile.cohorts))
                .bind(now_ms())
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate } else { StoreError::from_sqlx(e) });
                record($name, "create_account", started, &r);
                r
            }

            async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
                let row = sqlx::query("SELECT * FROM accounts WHERE email = $1")
                    .bind(email)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(Self::account_from_row).transpose()
            }

            async fn account(&self, id: &str) -> Result<Option<Account>> {
                let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(Self::account_from_row).transpose()
            }

            async fn set_profile(&self, user_id: &str, p: &Profile) -> Result<bool> {
                let n = sqlx::query("UPDATE accounts SET market = $1, tier = $2, cohorts = $3 WHERE id = $4")
                    .bind(p.market.as_str())
                    .bind(p.tier.as_str())
                    .bind(cohorts_to_text(&p.cohorts))
                    .bind(user_id)
                    .execute(&self.writer)
                    .await
                    .map_err(StoreError::from_sqlx)?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn create_session(&self, s: &NewSession) -> Result<()> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = async {
                    let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                    sqlx::query(
                        "INSERT INTO sessions (id, user_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(s.id.as_str())
                    .bind(s.user_id.as_str())
                    .bind(at)
                    .bind(s.expires_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    sqlx::query(
                        "INSERT INTO refresh_tokens (hash, session_id, issued_at_ms) VALUES ($1, $2, $3)",
                    )
                    .bind(s.refresh_hash.as_str())
                    .bind(s.id.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    tx.commit().await.map_err(StoreError::from_sqlx)
                }
                .await;
                record($name, "create_session", started, &r);
                r
            }

            async fn rotate_refresh(&self, old_hash: &str, new_hash: &str) -> Result<Refresh> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = async {
                    let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                    // The session must be live and its user not banned.
                    let row = sqlx::query(
                        "SELECT r.used_at_ms, s.id, s.user_id, s.expires_at_ms, s.revoked_at_ms, a.banned_at_ms \
                         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
                         LEFT JOIN accounts a ON a.id = s.user_id WHERE r.hash = $1",
                    )
                    .bind(old_hash)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    let Some(row) = row else { return Ok(Refresh::Invalid) };
                    let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                    let used: Option<i64> = row.try_get(0).map_err(get)?;
                    let session_id: String = row.try_get(1).map_err(get)?;
                    let user_id: String = row.try_get(2).map_err(get)?;
                    let expires: i64 = row.try_get(3).map_err(get)?;
                    let revoked: Option<i64> = row.try_get(4).map_err(get)?;
                    let banned: Option<i64> = row.try_get(5).map_err(get)?;
                    if revoked.is_some() || banned.is_some() || expires <= at {
                        return Ok(Refresh::Invalid);
                    }
                    if used.is_some() {
                        let entry = Self::revoke_session_in(&mut tx, &session_id, "refresh-reuse").await?;
                        tx.commit().await.map_err(StoreError::from_sqlx)?;
                        return Ok(entry.map_or(Refresh::Invalid, Refresh::Reused));
                    }
                    // Conditional: of two concurrent rotations of one token, one wins.
                    let won = sqlx::query(
                        "UPDATE refresh_tokens SET used_at_ms = $1 WHERE hash = $2 AND used_at_ms IS NULL",
                    )
                    .bind(at)
                    .bind(old_hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?
                    .rows_affected();
                    if won == 0 {
                        let entry = Self::revoke_session_in(&mut tx, &session_id, "refresh-reuse").await?;
                        tx.commit().await.map_err(StoreError::from_sqlx)?;
                        return Ok(entry.map_or(Refresh::Invalid, Refresh::Reused));
                    }
                    sqlx::query(
                        "INSERT INTO refresh_tokens (hash, session_id, issued_at_ms) VALUES ($1, $2, $3)",
                    )
                    .bind(new_hash)
                    .bind(session_id.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    tx.commit().await.map_err(StoreError::from_sqlx)?;
                    Ok(Refresh::Rotated { session_id, user_id })
                }
                .await;
                record($name, "rotate_refresh", started, &r);
                r
            }

            async fn revoke_session(&self, session_id: &str, reason: &str) -> Result<Option<Revocation>> {
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let r = Self::revoke_session_in(&mut tx, session_id, reason).await?;
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(r)
            }

            async fn revoke_user(&self, user_id: &str, reason: &str) -> Result<Option<Revocation>> {
                let at = now_ms();
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let n = sqlx::query(
                    "UPDATE accounts SET banned_at_ms = COALESCE(banned_at_ms, $1) WHERE id = $2",
                )
                .bind(at)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?
                .rows_affected();
                if n == 0 {
                    return Ok(None);
                }
                sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL")
                    .bind(at)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                let entry = Self::log_revocation(&mut tx, RevocationKind::User, user_id, at, reason).await?;
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(Some(entry))
            }

            async fn is_revoked(&self, session_id: &str, user_id: &str) -> Result<bool> {
                let started = std::time::Instant::now();
                let r = sqlx::query_scalar::<_, i64>(
                    "SELECT (SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_at_ms IS NOT NULL) \
                     + (SELECT COUNT(*) FROM accounts WHERE id = $2 AND banned_at_ms IS NOT NULL)",
                )
                .bind(session_id)
                .bind(user_id)
                .fetch_one(&self.reader)
                .await
                .map(|n| n > 0)
                .map_err(StoreError::from_sqlx);
                record($name, "is_revoked", started, &r);
                r
            }

            async fn revocations(&self, after_seq: i64, since_ms: i64, limit: u32) -> Result<Vec<Revocation>> {
                let rows = sqlx::query(
                    "SELECT seq, kind, subject, at_ms, reason FROM revocations \
                     WHERE seq > $1 AND at_ms >= $2 ORDER BY seq LIMIT $3",
                )
                .bind(after_seq)
                .bind(since_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
                rows.iter()
                    .map(|row| {
                        let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                        Ok(Revocation {
                            seq: row.try_get(0).map_err(get)?,
                            kind: RevocationKind::parse(row.try_get::<&str, _>(1).map_err(get)?)?,
                            subject: row.try_get(2).map_err(get)?,
                            at_ms: row.try_get(3).map_err(get)?,
                            reason: row.try_get(4).map_err(get)?,
                        })
                    })
                    .collect()
            }

            async fn prune(&self, before_ms: i64) -> Result<u64> {
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let mut n = 0;
                for sql in [
                    "DELETE FROM revocations WHERE at_ms < $1",
                    "DELETE FROM refresh_tokens WHERE session_id IN \
                     (SELECT id FROM sessions WHERE expires_at_ms < $1)",
                    "DELETE FROM refresh_tokens WHERE used_at_ms < $1",
                    "DELETE FROM sessions WHERE expires_at_ms < $1",
                ] {
                    n += sqlx::query(sql)
                        .bind(before_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::from_sqlx)?
                        .rows_affected();
                }
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(n)
            }

            async fn put_signing_key(&self, k: &SigningKey) -> Result<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, purpose, secret, created_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (kid) DO NOTHING",
                )
                .bind(k.kid.as_str())
                .bind(k.purpose.as_str())
                .bind(k.secret.as_slice())
                .bind(k.created_at_ms)
                .execute(&self.writer)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKey>> {
                let rows = sqlx::query(
                    "SELECT kid, purpose, secret, created_at_ms FROM signing_keys WHERE purpose = $1 \
                     ORDER BY created_at_ms, kid",
                )
                .bind(purpose)
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
                rows.iter()
                    .map(|row| {
                        let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                        Ok(SigningKey {
                            kid: row.try_get(0).map_err(get)?,
                            purpose: row.try_get(1).map_err(get)?,
                            secret: row.try_get(2).map_err(get)?,
                            created_at_ms: row.try_get(3).map_err(get)?,
                        })
                    })
                    .collect()
            }

            async fn retire_signing_keys(&self, purpose: &str, before_ms: i64) -> Result<u64> {
                let n = sqlx::query(
                    "DELETE FROM signing_keys WHERE purpose = $1 AND created_at_ms < $2 AND kid <> \
                     (SELECT kid FROM signing_keys WHERE purpose = $1 ORDER BY created_at_ms DESC, kid DESC LIMIT 1)",
                )
                .bind(purpose)
                .bind(before_ms)
                .execute(&self.writer)
                .await
                .map_err(StoreError::from_sqlx)?
                .rows_affected();
                Ok(n)
            }

            async fn set_switch(
                &self,
                target: &str,
                off: bool,
                reason: &str,
                actor: Option<&str>,
            ) -> Result<Switch> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = async {
                    let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                    // The counter row's lock orders concurrent changes until commit.
                    let seq = sqlx::query_scalar::<_, i64>(
                        "UPDATE kill_switch_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq",
                    )
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    sqlx::query(
                        "INSERT INTO kill_switches (target, off, reason, actor, seq, updated_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (target) DO UPDATE SET \
                         off = excluded.off, reason = excluded.reason, actor = excluded.actor, \
                         seq = excluded.seq, updated_at_ms = excluded.updated_at_ms",
                    )
                    .bind(target)
                    .bind(off)
                    .bind(reason)
                    .bind(actor)
                    .bind(seq)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    tx.commit().await.map_err(StoreError::from_sqlx)?;
                    Ok(Switch {
                        target: target.to_owned(),
                        off,
                        reason: reason.to_owned(),
                        actor: actor.map(str::to_owned),
                        seq,
                        updated_at_ms: at,
                    })
                }
                .await;
                record($name, "set_switch", started, &r);
                r
            }

            async fn switches(&self, after_seq: i64) -> Result<Vec<Switch>> {
                let started = std::time::Instant::now();
                let r = async {
                    let rows = sqlx::query(
                        "SELECT target, off, reason, actor, seq, updated_at_ms FROM kill_switches \
                         WHERE seq > $1 ORDER BY seq",
                    )
                    .bind(after_seq)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    rows.iter()
                        .map(|row| {
                            let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                            Ok(Switch {
                                target: row.try_get(0).map_err(get)?,
                                off: row.try_get(1).map_err(get)?,
                                reason: row.try_get(2).map_err(get)?,
                                actor: row.try_get(3).map_err(get)?,
                                seq: row.try_get(4).map_err(get)?,
                                updated_at_ms: row.try_get(5).map_err(get)?,
                            })
                        })
                        .collect()
                }
                .await;
                record($name, "switches", started, &r);
                r
            }

            async fn close(&self) {
                self.shut().await;
            }
        }
    };
}

identity_store!(Sqlite, "sqlite");
identity_store!(Postgres, "postgres");
