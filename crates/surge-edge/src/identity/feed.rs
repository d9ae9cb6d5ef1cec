//! Background upkeep of the identity service: follow the revocation log, rotate the
//! filter's generations, sweep login limits, rotate signing keys, prune old rows.
//!
//! ## Why a log and not only the in-process call
//! A revocation made on this node is in its filter before the call returns. Other edge
//! nodes learn it from the store's revocation log, read every `revocation.poll_ms`
//! (≤ 1 s) from the last `seq` seen: the log is the interface an event stream (NATS
//! JetStream, later) can carry without changing the filter side — a [`RevocationSource`]
//! hands out entries after a position, whoever produced them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use surge_store::{IdentityStore, Revocation, StoreError};
use tokio::sync::watch;

use super::Identity;

/// Where revocations made elsewhere come from.
#[async_trait]
pub trait RevocationSource: Send + Sync {
    /// Entries after `after`, recorded at or after `since_ms`, oldest first.
    async fn after(&self, after: i64, since_ms: i64) -> Result<Vec<Revocation>, StoreError>;
}

/// The store's revocation log as a source.
pub struct StoreLog(pub Arc<dyn IdentityStore>);

#[async_trait]
impl RevocationSource for StoreLog {
    async fn after(&self, after: i64, since_ms: i64) -> Result<Vec<Revocation>, StoreError> {
        self.0.revocations(after, since_ms, 10_000).await
    }
}

/// Reads everything after `seq` into the filter; returns the new position.
pub async fn catch_up(
    identity: &Identity,
    source: &dyn RevocationSource,
    mut seq: i64,
) -> Result<i64, StoreError> {
    let since = surge_http::envelope::now_ms()
        - i64::try_from(identity.config().token_span().as_millis()).unwrap_or(i64::MAX);
    loop {
        let batch = source.after(seq, since).await?;
        let Some(last) = batch.last() else {
            return Ok(seq);
        };
        seq = last.seq;
        for entry in &batch {
            identity.apply(entry);
        }
    }
}

/// Runs the upkeep until `shutdown` turns true.
pub async fn run(
    identity: Arc<Identity>,
    source: Arc<dyn RevocationSource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let poll = Duration::from_millis(identity.config().revocation.poll_ms);
    let key_check = Duration::from_secs(identity.config().key_check_seconds);
    let mut seq = 0;
    let mut last_keys = Instant::now();
    let mut last_prune: Option<Instant> = None;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match catch_up(&identity, &*source, seq).await {
            Ok(s) => seq = s,
            Err(e) => tracing::warn!(error = %e, "cannot read the revocation log; retrying"),
        }
        // An entry stays for two generations, at least one token span.
        identity.revocation_filter().rotate_if_due();
        if last_keys.elapsed() >= key_check {
            last_keys = Instant::now();
            identity.limiter().sweep();
            if let Err(e) = identity.keys().tick().await {
                tracing::warn!(error = %e, "signing key upkeep failed; keeping the current keys");
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(Instant::now());
            // Keep revocations at least one token span and one day.
            let keep = identity
                .config()
                .token_span()
                .max(Duration::from_secs(86_400));
            let before = surge_http::envelope::now_ms()
                - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            match identity.store().prune(before).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "pruned identity rows"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune identity rows"),
            }
        }
    }
}
