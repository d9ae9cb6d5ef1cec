//! **A simulated payment provider** for development, tests and chaos runs — not a
//! real PSP and never moves money.
//!
//! [`ProviderSimulator`] keeps the contract of [`PaymentProvider`] the way Stripe or
//! Adyen do: every request is recorded under its idempotency key, the same key with the
//! same request replays the recorded answer with no second effect, and the same key with
//! a different request is [`ProviderError::Rejected`]. On top of that it injects the
//! failures a real PSP shows, at configurable rates ([`SimulatorConfig`]) or scripted
//! one call at a time ([`ProviderSimulator::script`]):
//! - **timeout**: the call fails with [`ProviderError::Timeout`] and had no effect;
//! - **lost reply**: the call takes effect and is recorded under its key, but the caller
//!   gets [`ProviderError::Timeout`] — the case that double-charges a careless client;
//! - **unavailable** (scripted only): [`ProviderError::Unavailable`], no effect;
//! - **declines**: method token `tok_decline` is always declined (`card_declined`);
//!   any other token (e.g. `tok_ok`) is declined (`insufficient_funds`) with probability
//!   `decline_rate`. Only authorizations are declined.
//!
//! ## The ledger
//! What the "provider" did lives in a SQLite ledger: a file when
//! [`SimulatorConfig::ledger`] is set, so it outlives a SIGKILL'd surge process the way
//! a real PSP's books do, or in memory. Tests read it ([`ProviderSimulator::ledger`]) to
//! check invariants such as "never double-charged" against the provider itself rather
//! than against our own records. Each request runs in one `BEGIN IMMEDIATE`
//! transaction, so concurrent requests (and other processes sharing the file) are
//! serialised.
//!
//! Latency is added with [`tokio::time::sleep`], so tests can run it on paused time.
//! The ledger connection is taken with no tokio timeout, which keeps paused time safe.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};

use super::provider::{PaymentProvider, ProviderAuth, ProviderError};

#[cfg(test)]
mod tests;

/// The method token that is always declined.
pub const DECLINE_TOKEN: &str = "tok_decline";

/// Settings of the [`ProviderSimulator`]. Every field has a default; rates are
/// probabilities between 0 and 1, drawn once per call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Mean latency added to every call, in milliseconds; each call waits a uniform
    /// random time between 0 and twice this. Default 0 (no added latency).
    pub latency_ms: u64,
    /// Probability that an authorization with an ordinary token is declined. Default 0.
    pub decline_rate: f64,
    /// Probability that a call fails with a timeout and has no effect. Default 0.
    pub timeout_rate: f64,
    /// Probability that a call takes effect at the provider but its reply is lost: the
    /// caller gets a timeout. Default 0. `timeout_rate + lost_reply_rate` is at most 1.
    pub lost_reply_rate: f64,
    /// Seed of the random draws, for reproducible runs. Default: none (seeded from the
    /// clock).
    pub seed: Option<u64>,
    /// Path of the SQLite file that holds the ledger, created if missing. Default: none
    /// (the ledger lives in memory and dies with the process).
    pub ledger: Option<PathBuf>,
}

impl SimulatorConfig {
    /// Checks the rates, naming the bad key and value.
    pub fn validate(&self) -> Result<(), SimulatorError> {
        for (key, rate) in [
            ("decline_rate", self.decline_rate),
            ("timeout_rate", self.timeout_rate),
            ("lost_reply_rate", self.lost_reply_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimulatorError::Config(format!(
                    "simulator.{key} must be between 0 and 1, got {rate}"
                )));
            }
        }
        if self.timeout_rate + self.lost_reply_rate > 1.0 {
            return Err(SimulatorError::Config(format!(
                "simulator.timeout_rate + simulator.lost_reply_rate must be at most 1, got {} + {}",
                self.timeout_rate, self.lost_reply_rate
            )));
        }
        Ok(())
    }
}

/// Errors of the simulator itself (not of the calls it simulates).
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The configuration is invalid.
    #[error("invalid payment simulator configuration: {0}")]
    Config(String),
    /// The ledger could not be opened, read or written.
    #[error("payment simulator ledger: {0}")]
    Ledger(#[from] sqlx::Error),
}

/// A failure to inject into one call, see [`ProviderSimulator::script`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No failure: the call goes through.
    None,
    /// The call fails with [`ProviderError::Timeout`] and has no effect.
    Timeout,
    /// The call takes effect, then fails with [`ProviderError::Timeout`].
    LostReply,
    /// The call fails with [`ProviderError::Unavailable`] and has no effect.
    Unavailable,
}

/// What the simulated provider holds for one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The idempotency key of the authorize call that made it.
    pub authorize_key: String,
    /// The authorization id handed out.
    pub auth_ref: String,
    /// Authorized, in minor units.
    pub amount_minor: i64,
    /// The currency.
    pub currency: String,
    /// Captured, in minor units (0 or the one capture's amount).
    pub captured_minor: i64,
    /// Released by a void, in minor units (0 or the authorized amount).
    pub voided_minor: i64,
    /// Refunded, in minor units; never more than captured.
    pub refunded_minor: i64,
    /// How many captures took effect (0 or 1).
    pub captures: i64,
    /// How many refunds took effect.
    pub refunds: i64,
}

/// The simulated provider. See the [module docs](self).
pub struct ProviderSimulator {
    config: SimulatorConfig,
    draws: Mutex<Draws>,
    ledger: Ledger,
}

/// Work for the ledger's connection.
type LedgerJob = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, ()> + Send>;

/// A boxed future that may borrow for `'a`.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The ledger's connection, owned by a thread of its own that runs one request at a
/// time. Each request is several round trips to SQLite; as a task among the request
/// tasks, every round trip could wait for a busy runtime worker while the ledger is
/// locked, and all calls queue behind that.
struct Ledger {
    jobs: tokio::sync::mpsc::Sender<LedgerJob>,
}

impl Ledger {
    /// Most requests waiting for the ledger; callers beyond it wait for room.
    const QUEUE: usize = 1024;

    fn start(mut conn: SqliteConnection) -> std::io::Result<Self> {
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<LedgerJob>(Self::QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("psp-simulator-ledger".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        job(&mut conn).await;
                    }
                    let _ = conn.close().await;
                });
            })?;
        Ok(Ledger { jobs })
    }

    /// Runs `f` on the ledger's connection, after the requests queued before it.
    async fn run<T, F>(&self, f: F) -> Result<T, sqlx::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: LedgerJob = Box::new(move |conn| {
            Box::pin(async move {
                // The caller may have gone away: nothing to tell.
                let _ = reply.send(f(conn).await);
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)
    }
}

/// The random and scripted inputs of the calls.
struct Draws {
    rng: SmallRng,
    script: VecDeque<Fault>,
    random_faults: bool,
}

/// What one call is asked to do.
enum Request {
    Authorize {
        amount_minor: i64,
        currency: String,
        method_token: String,
    },
    Capture {
        auth_ref: String,
        amount_minor: i64,
    },
    Void {
        auth_ref: String,
    },
    Refund {
        auth_ref: String,
        amount_minor: i64,
    },
}

impl Request {
    /// What identifies the request under its key: another request under the same key is
    /// refused.
    fn fingerprint(&self) -> String {
        match self {
            Request::Authorize {
                amount_minor,
                currency,
                method_token,
            } => format!("authorize {amount_minor} {currency} {method_token}"),
            Request::Capture {
                auth_ref,
                amount_minor,
            } => format!("capture {auth_ref} {amount_minor}"),
            Request::Void { auth_ref } => format!("void {auth_ref}"),
            Request::Refund {
                auth_ref,
                amount_minor,
            } => format!("refund {auth_ref} {amount_minor}"),
        }
    }
}

/// A recorded answer, replayed for the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Authorized(String),
    Declined(String),
    Done,
}

impl Answer {
    fn encode(&self) -> String {
        match self {
            Answer::Authorized(auth_ref) => format!("authorized:{auth_ref}"),
            Answer::Declined(reason) => format!("declined:{reason}"),
            Answer::Done => "ok".into(),
        }
    }

    fn decode(s: &str) -> Result<Self, ProviderError> {
        if let Some(auth_ref) = s.strip_prefix("authorized:") {
            Ok(Answer::Authorized(auth_ref.into()))
        } else if let Some(reason) = s.strip_prefix("declined:") {
            Ok(Answer::Declined(reason.into()))
        } else if s == "ok" {
            Ok(Answer::Done)
        } else {
            Err(ProviderError::Unavailable(format!(
                "simulator ledger holds an unknown answer {s:?}"
            )))
        }
    }
}

const LEDGER_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sim_requests (idempotency_key TEXT PRIMARY KEY, \
     request TEXT NOT NULL, answer TEXT NOT NULL, at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sim_authorizations (auth_ref TEXT PRIMARY KEY, \
     authorize_key TEXT NOT NULL UNIQUE, amount_minor INTEGER NOT NULL, currency TEXT NOT NULL, \
     captured_minor INTEGER NOT NULL DEFAULT 0, voided_minor INTEGER NOT NULL DEFAULT 0, \
     refunded_minor INTEGER NOT NULL DEFAULT 0, captures INTEGER NOT NULL DEFAULT 0, \
     refunds INTEGER NOT NULL DEFAULT 0, at_ms INTEGER NOT NULL)",
];

const ENTRY_COLUMNS: &str = "SELECT authorize_key, auth_ref, amount_minor, currency, captured_minor, \
     voided_minor, refunded_minor, captures, refunds FROM sim_authorizations";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ledger_failure(e: sqlx::Error) -> ProviderError {
    ProviderError::Unavailable(format!("simulator ledger: {e}"))
}

fn rejected(msg: impl Into<String>) -> Result<Answer, ProviderError> {
    Err(ProviderError::Rejected(msg.into()))
}

impl ProviderSimulator {
    /// Opens the simulator and its ledger (creating the file and tables if missing).
    pub async fn new(config: SimulatorConfig) -> Result<Self, SimulatorError> {
        config.validate()?;
        let options = match &config.ledger {
            Some(path) => SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Survives a killed process (not power loss), like the rest of a dev setup.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5)),
            None => SqliteConnectOptions::from_str("sqlite::memory:")?,
        };
        let mut conn = options.connect().await?;
        for ddl in LEDGER_DDL {
            sqlx::query(*ddl).execute(&mut conn).await?;
        }
        let seed = config.seed.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            // Truncation is fine: any bits make a seed.
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        });
        Ok(ProviderSimulator {
            config,
            draws: Mutex::new(Draws {
                rng: SmallRng::seed_from_u64(seed),
                script: VecDeque::new(),
                random_faults: true,
            }),
            ledger: Ledger::start(conn).map_err(sqlx::Error::Io)?,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    /// Queues faults for the next calls, one per call in call order (any call:
    /// authorize, capture, void, refund or find), before the random rates apply.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.draws().script.extend(faults);
    }

    /// Drops the faults still queued by [`ProviderSimulator::script`].
    pub fn clear_script(&self) {
        self.draws().script.clear();
    }

    /// Turns the random timeouts and lost replies on or off (scripted faults and
    /// declines still apply). Lets a test retry everything to completion.
    pub fn set_random_faults(&self, enabled: bool) {
        self.draws().random_faults = enabled;
    }

    /// Everything the provider holds, one entry per authorization, oldest first.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, SimulatorError> {
        let sql = sqlx::AssertSqlSafe(format!("{ENTRY_COLUMNS} ORDER BY at_ms, auth_ref"));
        let rows = self
            .ledger
            .run(|conn| Box::pin(sqlx::query(sql).fetch_all(conn)))
            .await??;
        Ok(rows.iter().map(decode_entry).collect::<Result<_, _>>()?)
    }

    /// The authorization made with `authorize_key`, if any.
    pub async fn ledger_entry(
        &self,
        authorize_key: &str,
    ) -> Result<Option<LedgerEntry>, SimulatorError> {
        let sql = sqlx::AssertSqlSafe(format!("{ENTRY_COLUMNS} WHERE authorize_key = $1"));
        let key = authorize_key.to_owned();
        let row = self
            .ledger
            .run(|conn| Box::pin(sqlx::query(sql).bind(key).fetch_optional(conn)))
            .await??;
        Ok(row.as_ref().map(decode_entry).transpose()?)
    }

    /// How many requests the provider recorded under idempotency keys (each effect or
    /// decline once, however often it was replayed).
    pub async fn recorded_requests(&self) -> Result<i64, SimulatorError> {
        Ok(self
            .ledger
            .run(|conn| {
                Box::pin(sqlx::query_scalar("SELECT COUNT(*) FROM sim_requests").fetch_one(conn))
            })
            .await??)
    }

    fn draws(&self) -> std::sync::MutexGuard<'_, Draws> {
        self.draws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws this call's fault, latency and decline (always all three, so a seeded run
    /// draws the same sequence whatever the branches).
    fn draw(&self) -> (Fault, Duration, bool) {
        let c = &self.config;
        let mut d = self.draws();
        let fault_roll: f64 = d.rng.random();
        let decline_roll: f64 = d.rng.random();
        let latency = d.rng.random_range(0..=c.latency_ms.saturating_mul(2));
        let fault = match d.script.pop_front() {
            Some(f) => f,
            None if !d.random_faults => Fault::None,
            None if fault_roll < c.timeout_rate => Fault::Timeout,
            None if fault_roll < c.timeout_rate + c.lost_reply_rate => Fault::LostReply,
            None => Fault::None,
        };
        (
            fault,
            Duration::from_millis(latency),
            decline_roll < c.decline_rate,
        )
    }

    /// Waits the call's latency and applies a fault that stops the call before the
    /// provider: `Err` when the call must fail without effect, else whether the reply
    /// is to be lost.
    async fn arrive(&self) -> Result<(bool, bool), ProviderError> {
        let (fault, latency, decline) = self.draw();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Fault::Timeout => Err(ProviderError::Timeout),
            Fault::Unavailable => Err(ProviderError::Unavailable("simulated outage".into())),
            Fault::LostReply => Ok((true, decline)),
            Fault::None => Ok((false, decline)),
        }
    }

    /// Runs one keyed request: replays it, refuses it, or applies and records it.
    async fn call(&self, key: &str, request: Request) -> Result<Answer, ProviderError> {
        let (lose_reply, decline) = self.arrive().await?;
        let key = key.to_owned();
        let answer = self
            .ledger
            .run(move |conn| Box::pin(async move { apply(conn, &key, &request, decline).await }))
            .await
            .map_err(ledger_failure)
            .and_then(|answer| answer);
        if lose_reply {
            return Err(ProviderError::Timeout);
        }
        match answer? {
            Answer::Declined(reason) => Err(ProviderError::Declined { reason }),
            other => Ok(other),
        }
    }
}

/// Runs one keyed request on the ledger: replays it, refuses it, or applies and records
/// it.
async fn apply(
    conn: &mut SqliteConnection,
    key: &str,
    request: &Request,
    decline: bool,
) -> Result<Answer, ProviderError> {
    let fingerprint = request.fingerprint();
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(ledger_failure)?;
    let seen = sqlx::query("SELECT request, answer FROM sim_requests WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ledger_failure)?;
    if let Some(row) = seen {
        let earlier: String = row.try_get(0).map_err(ledger_failure)?;
        if earlier != fingerprint {
            return rejected(format!(
                "idempotency key {key:?} was used for another request ({earlier})"
            ));
        }
        let answer: String = row.try_get(1).map_err(ledger_failure)?;
        return Answer::decode(&answer);
    }
    let answer = match request {
        Request::Authorize {
            amount_minor,
            currency,
            method_token,
        } => {
            let amount_minor = *amount_minor;
            if amount_minor <= 0 || currency.is_empty() {
                return rejected(format!("cannot authorize {amount_minor} {currency:?}"));
            }
            if method_token == DECLINE_TOKEN {
                Answer::Declined("card_declined".into())
            } else if decline {
                Answer::Declined("insufficient_funds".into())
            } else {
                let auth_ref = format!(
                    "simauth_{:016x}",
                    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
                );
                sqlx::query(
                        "INSERT INTO sim_authorizations (auth_ref, authorize_key, amount_minor, currency, at_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&auth_ref)
                    .bind(key)
                    .bind(amount_minor)
                    .bind(currency)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(ledger_failure)?;
                Answer::Authorized(auth_ref)
            }
        }
        Request::Capture {
            auth_ref,
            amount_minor,
        } => {
            let amount_minor = *amount_minor;
            let Some((amount, captured, voided, _)) = auth(&mut tx, auth_ref).await? else {
                return rejected(format!("no authorization {auth_ref}"));
            };
            if voided > 0 {
                return rejected(format!("authorization {auth_ref} is voided"));
            }
            if captured > 0 {
                return rejected(format!("authorization {auth_ref} is captured already"));
            }
            if amount_minor <= 0 || amount_minor > amount {
                return rejected(format!("cannot capture {amount_minor} of {amount}"));
            }
            update(
                    &mut tx,
                    "UPDATE sim_authorizations SET captured_minor = $2, captures = captures + 1 WHERE auth_ref = $1",
                    auth_ref,
                    amount_minor,
                )
                .await?;
            Answer::Done
        }
        Request::Void { auth_ref } => {
            let Some((amount, captured, voided, _)) = auth(&mut tx, auth_ref).await? else {
                return rejected(format!("no authorization {auth_ref}"));
            };
            if voided > 0 {
                return rejected(format!("authorization {auth_ref} is voided already"));
            }
            if captured > 0 {
                return rejected(format!("authorization {auth_ref} is captured"));
            }
            update(
                &mut tx,
                "UPDATE sim_authorizations SET voided_minor = $2 WHERE auth_ref = $1",
                auth_ref,
                amount,
            )
            .await?;
            Answer::Done
        }
        Request::Refund {
            auth_ref,
            amount_minor,
        } => {
            let amount_minor = *amount_minor;
            let Some((_, captured, _, refunded)) = auth(&mut tx, auth_ref).await? else {
                return rejected(format!("no authorization {auth_ref}"));
            };
            if amount_minor <= 0 || refunded + amount_minor > captured {
                return rejected(format!(
                    "cannot refund {amount_minor}: {refunded} of {captured} captured is refunded"
                ));
            }
            update(
                    &mut tx,
                    "UPDATE sim_authorizations SET refunded_minor = refunded_minor + $2, refunds = refunds + 1 \
                     WHERE auth_ref = $1",
                    auth_ref,
                    amount_minor,
                )
                .await?;
            Answer::Done
        }
    };
    sqlx::query(
            "INSERT INTO sim_requests (idempotency_key, request, answer, at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(&fingerprint)
        .bind(answer.encode())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(ledger_failure)?;
    tx.commit().await.map_err(ledger_failure)?;
    Ok(answer)
}

/// (authorized, captured, voided, refunded) of one authorization.
async fn auth(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    auth_ref: &str,
) -> Result<Option<(i64, i64, i64, i64)>, ProviderError> {
    let row = sqlx::query(
        "SELECT amount_minor, captured_minor, voided_minor, refunded_minor FROM sim_authorizations \
         WHERE auth_ref = $1",
    )
    .bind(auth_ref)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ledger_failure)?;
    row.map(|r| {
        Ok((
            r.try_get(0).map_err(ledger_failure)?,
            r.try_get(1).map_err(ledger_failure)?,
            r.try_get(2).map_err(ledger_failure)?,
            r.try_get(3).map_err(ledger_failure)?,
        ))
    })
    .transpose()
}

async fn update(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    sql: &'static str,
    auth_ref: &str,
    value: i64,
) -> Result<(), ProviderError> {
    sqlx::query(sql)
        .bind(auth_ref)
        .bind(value)
        .execute(&mut **tx)
        .await
        .map_err(ledger_failure)?;
    Ok(())
}

fn decode_entry(row: &sqlx::sqlite::SqliteRow) -> Result<LedgerEntry, sqlx::Error> {
    Ok(LedgerEntry {
        authorize_key: row.try_get(0)?,
        auth_ref: row.try_get(1)?,
        amount_minor: row.try_get(2)?,
        currency: row.try_get(3)?,
        captured_minor: row.try_get(4)?,
        voided_minor: row.try_get(5)?,
        refunded_minor: row.try_get(6)?,
        captures: row.try_get(7)?,
        refunds: row.try_get(8)?,
    })
}

#[async_trait]
impl PaymentProvider for ProviderSimulator {
    async fn authorize(
        &self,
        idempotency_key: &str,
        amount_minor: i64,
        currency: &str,
        method_token: &str,
    ) -> Result<ProviderAuth, ProviderError> {
        let request = Request::Authorize {
            amount_minor,
            currency: currency.to_owned(),
            method_token: method_token.to_owned(),
        };
        match self.call(idempotency_key, request).await? {
            Answer::Authorized(auth_ref) => Ok(ProviderAuth { auth_ref }),
            other => Err(ProviderError::Rejected(format!(
                "idempotency key {idempotency_key:?} holds {other:?}, not an authorization"
            ))),
        }
    }

    async fn capture(
        &self,
        idempotency_key: &str,
        auth_ref: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError> {
        let request = Request::Capture {
            auth_ref: auth_ref.to_owned(),
            amount_minor,
        };
        self.call(idempotency_key, request).await.map(|_| ())
    }

    async fn void(&self, idempotency_key: &str, auth_ref: &str) -> Result<(), ProviderError> {
        let auth_ref = auth_ref.to_owned();
        self.call(idempotency_key, Request::Void { auth_ref })
            .await
            .map(|_| ())
    }

    async fn refund(
        &self,
        idempotency_key: &str,
        auth_ref: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError> {
        let request = Request::Refund {
            auth_ref: auth_ref.to_owned(),
            amount_minor,
        };
        self.call(idempotency_key, request).await.map(|_| ())
    }

    async fn find(
        &self,
        authorize_idempotency_key: &str,
    ) -> Result<Option<ProviderAuth>, ProviderError> {
        // A lookup has no effect: a lost reply is just a timeout.
        let (lose_reply, _) = self.arrive().await?;
        if lose_reply {
            return Err(ProviderError::Timeout);
        }
        let key = authorize_idempotency_key.to_owned();
        let auth_ref: Option<String> = self
            .ledger
            .run(|conn| {
                Box::pin(
                    sqlx::query_scalar(
                        "SELECT auth_ref FROM sim_authorizations WHERE authorize_key = $1",
                    )
                    .bind(key)
                    .fetch_optional(conn),
                )
            })
            .await
            .and_then(|r| r)
            .map_err(ledger_failure)?;
        Ok(auth_ref.map(|auth_ref| ProviderAuth { auth_ref }))
    }
}
