//! A circuit breaker per node, with Resilience4j's semantics.
//!
//! - **Closed**: calls go through; each outcome enters a sliding window, either the last
//!   `window` calls (count-based) or the calls of the last `window` seconds (time-based,
//!   one bucket per second). Once the window holds at least `minimum_calls` and the
//!   failure rate is ≥ `failure_rate_percent`, the breaker opens.
//! - **Open**: calls are refused at once (the edge answers 503 without trying the node)
//!   for `open_ms`; then the breaker is half-open.
//! - **Half-open**: `half_open_calls` trial calls go through, others are refused; once
//!   all trials have answered, the breaker closes (window emptied) if their failure rate
//!   is below the threshold, or opens again.
//!
//! A failure is an exchange that broke (connect error, reset, timeout) or a 5xx answer.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How the window is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    /// The last `window` calls.
    Count,
    /// The calls of the last `window` seconds.
    Time,
}

/// Breaker settings (per upstream; each node has its own breaker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether nodes have breakers at all. Default true.
    pub enabled: bool,
    /// `count` or `time`. Default `count`.
    pub window_kind: WindowKind,
    /// Calls (count) or seconds (time) in the window. Default 50.
    pub window: u32,
    /// Calls the window must hold before the breaker may open. Default 20.
    pub minimum_calls: u32,
    /// Failure rate, in percent, at which the breaker opens. Default 50.
    pub failure_rate_percent: u8,
    /// How long an open breaker refuses calls, in milliseconds. Default 10,000.
    pub open_ms: u64,
    /// Trial calls let through when half-open. Default 5.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_kind: WindowKind::Count,
            window: 50,
            minimum_calls: 20,
            failure_rate_percent: 50,
            open_ms: 10_000,
            half_open_calls: 5,
        }
    }
}

impl BreakerConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.window == 0 || self.window > 100_000 {
            return Err(format!("{at}.breaker.window must be 1..=100000"));
        }
        if self.minimum_calls == 0 || self.half_open_calls == 0 || self.open_ms == 0 {
            return Err(format!(
                "{at}.breaker.minimum_calls, half_open_calls and open_ms must be > 0"
            ));
        }
        if self.failure_rate_percent == 0 || self.failure_rate_percent > 100 {
            return Err(format!("{at}.breaker.failure_rate_percent must be 1..=100"));
        }
        Ok(())
    }
}

/// The state, as exported in the `surge_edge_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through (0).
    Closed,
    /// Calls are refused (1).
    Open,
    /// Trial calls go through (2).
    HalfOpen,
}

impl State {
    /// The gauge value.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
        }
    }
}

/// The sliding window of outcomes.
#[derive(Debug)]
enum Window {
    /// A ring of the last calls (true = failure).
    Count {
        ring: Vec<bool>,
        next: usize,
        len: usize,
        failures: u32,
    },
    /// Per-second buckets: (second, calls, failures).
    Time { buckets: Vec<(u64, u32, u32)> },
}

impl Window {
    fn new(config: &BreakerConfig) -> Window {
        match config.window_kind {
            WindowKind::Count => Window::Count {
                ring: vec![false; config.window as usize],
                next: 0,
                len: 0,
                failures: 0,
            },
            WindowKind::Time => Window::Time {
                buckets: vec![(u64::MAX, 0, 0); config.window as usize],
            },
        }
    }

    /// Records one outcome; answers (calls, failures) now in the window.
    fn record(&mut self, failed: bool, second: u64) -> (u32, u32) {
        match self {
            Window::Count {
                ring,
                next,
                len,
                failures,
            } => {
                if *len == ring.len() {
                    if ring[*next] {
                        *failures -= 1;
                    }
                } else {
                    *len += 1;
                }
                ring[*next] = failed;
                *failures += u32::from(failed);
                *next = (*next + 1) % ring.len();
                (*len as u32, *failures)
            }
            Window::Time { buckets } => {
                let n = buckets.len() as u64;
                let slot = &mut buckets[(second % n) as usize];
                if slot.0 != second {
                    *slot = (second, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u32::from(failed);
                buckets
                    .iter()
                    .filter(|b| b.0 != u64::MAX && b.0 + n > second)
                    .fold((0, 0), |(c, f), b| (c + b.1, f + b.2))
            }
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed(Window),
    Open {
        until: Instant,
    },
    HalfOpen {
        permits: u32,
        calls: u32,
        failures: u32,
    },
}

/// One node's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    started: Instant,
    inner: Mutex<Inner>,
}

/// Leave to make one call, from [`Breaker::try_acquire`]; give it back to
/// [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    trial: bool,
}

/// What a recorded outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The breaker moved to this state.
    To(State),
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        let window = Window::new(&config);
        Breaker {
            config,
            started: Instant::now(),
            inner: Mutex::new(Inner::Closed(window)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state at `now` (an open breaker past its time reads half-open).
    pub fn state(&self, now: Instant) -> State {
        if !self.config.enabled {
            return State::Closed;
        }
        match &*self.lock() {
            Inner::Closed(_) => State::Closed,
            Inner::Open { until } if now < *until => State::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// How long until an open breaker lets a trial through (zero if it is not open).
    pub fn open_for(&self, now: Instant) -> Duration {
        match &*self.lock() {
            Inner::Open { until } => until.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    /// Leave to call the node, or `None` when the breaker refuses (open, or half-open
    /// with every trial taken). The second value is a transition to report.
    pub fn try_acquire(&self, now: Instant) -> (Option<Permit>, Transition) {
        if !self.config.enabled {
            return (Some(Permit { trial: false }), Transition::None);
        }
        let mut inner = self.lock();
        let mut transition = Transition::None;
        if let Inner::Open { until } = &*inner {
            if now < *until {
                return (None, Transition::None);
            }
            *inner = Inner::HalfOpen {
                permits: self.config.half_open_calls,
                calls: 0,
                failures: 0,
            };
            transition = Transition::To(State::HalfOpen);
        }
        match &mut *inner {
            Inner::Closed(_) => (Some(Permit { trial: false }), transition),
            Inner::HalfOpen { permits, .. } if *permits > 0 => {
                *permits -= 1;
                (Some(Permit { trial: true }), transition)
            }
            _ => (None, transition),
        }
    }

    /// Gives a permit back without an outcome (the call was never made, or was
    /// cancelled before it answered).
    pub fn release(&self, permit: Permit) {
        if permit.trial
            && let Inner::HalfOpen { permits, .. } = &mut *self.lock()
        {
            *permits += 1;
        }
    }

    /// Records the outcome of a call made under `permit`.
    pub fn record(&self, permit: Permit, failed: bool, now: Instant) -> Transition {
        if !self.config.enabled {
            return Transition::None;
        }
        let threshold = u64::from(self.config.failure_rate_percent);
        let tripped =
            |calls: u32, failures: u32| u64::from(failures) * 100 >= threshold * u64::from(calls);
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed(window) => {
                let second = now.saturating_duration_since(self.started).as_secs();
                let (calls, failures) = window.record(failed, second);
                if calls >= self.config.minimum_calls && tripped(calls, failures) {
                    *inner = Inner::Open {
                        until: now + Duration::from_millis(self.config.open_ms),
                    };
                    return Transition::To(State::Open);
                }
                Transition::None
            }
            Inner::HalfOpen {
                calls, failures, ..
            } => {
                if !permit.trial {
                    // A call let through while closed, answering after the trip.
                    return Transition::None;
                }
                *calls += 1;
                *failures += u32::from(failed);
                if *calls < self.config.half_open_calls {
                    return Transition::None;
                }
                if tripped(*calls, *failures) {
                    *inner = Inner::Open {
                        until: now + Duration::from_millis(self.config.open_ms),
                    };
                    Transition::To(State::Open)
                } else {
                    *inner = Inner::Closed(Window::new(&self.config));
                    Transition::To(State::Closed)
                }
            }
            Inner::Open { .. } => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(kind: WindowKind) -> BreakerConfig {
        BreakerConfig {
            window_kind: kind,
            window: 10,
            minimum_calls: 4,
            failure_rate_percent: 50,
            open_ms: 1_000,
            half_open_calls: 2,
            enabled: true,
        }
    }

    fn call(b: &Breaker, failed: bool, now: Instant) -> Option<Transition> {
        let (permit, _) = b.try_acquire(now);
        permit.map(|p| b.record(p, failed, now))
    }

    #[test]
    fn opens_at_the_failure_rate_only_after_minimum_calls() {
        let b = Breaker::new(config(WindowKind::Count));
        let t = Instant::now();
        // Three failures: below minimum_calls, stays closed.
        for _ in 0..3 {
            assert_eq!(call(&b, true, t), Some(Transition::None));
        }
        assert_eq!(b.state(t), State::Closed);
        assert_eq!(call(&b, true, t), Some(Transition::To(State::Open)));
        assert_eq!(b.state(t), State::Open);
        assert!(call(&b, false, t).is_none(), "open refuses at once");
        assert_eq!(b.open_for(t), Duration::from_millis(1_000));
    }

    #[test]
    fn a_low_failure_rate_keeps_it_closed_and_old_calls_leave_the_window() {
        let b = Breaker::new(config(WindowKind::Count));
        let t = Instant::now();
        for i in 0..100 {
            // 40 % failures: never trips.
            assert_eq!(call(&b, i % 5 >= 3, t), Some(Transition::None));
        }
        // Ten successes fill the window; then 4 failures are 40 %: still closed.
        for _ in 0..10 {
            call(&b, false, t);
        }
        for _ in 0..4 {
            assert_eq!(call(&b, true, t), Some(Transition::None));
        }
        // The fifth makes 50 % of the last ten.
        assert_eq!(call(&b, true, t), Some(Transition::To(State::Open)));
    }

    #[test]
    fn half_open_lets_n_trials_through_then_closes_or_reopens() {
        let b = Breaker::new(config(WindowKind::Count));
        let t = Instant::now();
        for _ in 0..4 {
            call(&b, true, t);
        }
        let later = t + Duration::from_millis(1_000);
        assert_eq!(b.state(later), State::HalfOpen);
        let (p1, tr) = b.try_acquire(later);
        assert_eq!(tr, Transition::To(State::HalfOpen));
        let (p2, _) = b.try_acquire(later);
        let (p3, _) = b.try_acquire(later);
        assert!(p3.is_none(), "only two trials");
        assert_eq!(b.record(p1.unwrap(), false, later), Transition::None);
        assert_eq!(
            b.record(p2.unwrap(), false, later),
            Transition::To(State::Closed)
        );
        assert_eq!(b.state(later), State::Closed);

        // Trip again; a failed trial (1 of 2 = 50 %) reopens.
        for _ in 0..4 {
            call(&b, true, later);
        }
        let again = later + Duration::from_millis(1_000);
        let (p1, _) = b.try_acquire(again);
        let (p2, _) = b.try_acquire(again);
        b.record(p1.unwrap(), false, again);
        assert_eq!(
            b.record(p2.unwrap(), true, again),
            Transition::To(State::Open)
        );
        assert_eq!(b.state(again), State::Open);
    }

    #[test]
    fn a_released_trial_permit_is_handed_out_again() {
        let b = Breaker::new(config(WindowKind::Count));
        let t = Instant::now();
        for _ in 0..4 {
            call(&b, true, t);
        }
        let later = t + Duration::from_secs(1);
        let (p1, _) = b.try_acquire(later);
        let (p2, _) = b.try_acquire(later);
        assert!(b.try_acquire(later).0.is_none());
        b.release(p1.unwrap());
        let (p3, _) = b.try_acquire(later);
        assert!(p3.is_some());
        b.release(p2.unwrap());
        b.release(p3.unwrap());
    }

    #[test]
    fn time_window_forgets_failures_older_than_the_window() {
        let b = Breaker::new(config(WindowKind::Time));
        let t = b.started;
        for _ in 0..3 {
            call(&b, true, t);
        }
        // Eleven seconds later the three failures are out of the 10 s window.
        let later = t + Duration::from_secs(11);
        for _ in 0..3 {
            assert_eq!(call(&b, false, later), Some(Transition::None));
        }
        assert_eq!(call(&b, true, later), Some(Transition::None), "1 of 4");
        assert_eq!(b.state(later), State::Closed);
        // Within one window: 3 failures + 1 success + 1 failure at 14 s = 4 of 5.
        let in_window = t + Duration::from_secs(14);
        assert_eq!(call(&b, true, in_window), Some(Transition::None), "2 of 5");
        assert_eq!(
            call(&b, true, in_window),
            Some(Transition::To(State::Open)),
            "3 of 6"
        );
    }

    #[test]
    fn a_disabled_breaker_never_refuses() {
        let b = Breaker::new(BreakerConfig {
            enabled: false,
            ..config(WindowKind::Count)
        });
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(call(&b, true, t), Some(Transition::None));
        }
        assert_eq!(b.state(t), State::Closed);
    }
}
