//! The shape of every background chore: do something every period until shutdown.

use std::time::Duration;

use tokio::sync::watch;

/// Runs `chore` every `period` (the first time at once; a late tick waits a whole
/// period again) until `shutdown` turns true.
pub(crate) async fn every<F, Fut>(
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut chore: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        chore().await;
    }
}
