//! Login brute-force limits: per account and per client IP, local to the process.
//!
//! GCRA limiters (`governor`) keyed by account name and by IP. A login attempt is
//! allowed only if both keys have budget; each attempt (successful or not) spends from
//! both, so guessing one account from many IPs and many accounts from one IP are both
//! slowed. The refusal carries how long to wait (for `Retry-After`). Key state is
//! bounded: [`LoginLimiter::sweep`] (call it on a timer) drops keys whose budget is full
//! again; at `max_keys` an attempt sweeps (at most once a second) and is refused if that
//! made no room, so a flood of new IPs degrades logins instead of growing memory.
//! The general per-route limits of the edge come with issue 4.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limits for login attempts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimits {
    /// Attempts per account per minute (and the burst). Default 5.
    pub per_account_per_minute: u32,
    /// Attempts per IP per minute (and the burst). Default 20.
    pub per_ip_per_minute: u32,
    /// Keys (accounts + IPs) tracked at most. Default 100,000.
    pub max_keys: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_account_per_minute: 5,
            per_ip_per_minute: 20,
            max_keys: 100_000,
        }
    }
}

/// The two keyed limiters.
pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<String>,
    ips: DefaultKeyedRateLimiter<IpAddr>,
    max_keys: usize,
    last_forced_sweep: Mutex<Option<Instant>>,
}

fn quota(per_minute: u32) -> Quota {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(n)
}

impl LoginLimiter {
    /// Limiters with `limits`.
    pub fn new(limits: &LoginLimits) -> Self {
        LoginLimiter {
            accounts: RateLimiter::keyed(quota(limits.per_account_per_minute)),
            ips: RateLimiter::keyed(quota(limits.per_ip_per_minute)),
            max_keys: limits.max_keys.max(2),
            last_forced_sweep: Mutex::new(None),
        }
    }

    /// `Ok`: the attempt may proceed (and was counted). `Err(wait)`: refused; try again
    /// after `wait`.
    pub fn attempt(&self, account: &str, ip: IpAddr) -> Result<(), Duration> {
        let account = account.trim().to_lowercase();
        if self.keys() >= self.max_keys {
            let mut last = self
                .last_forced_sweep
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                drop(last);
                self.sweep();
            }
            if self.keys() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let now = DefaultClock::default().now();
        // The IP pays first: an attempt then refused for its account has still spent the
        // IP's budget, so hammering one account from one IP also locks out that IP.
        let wait_for =
            |r: Result<(), governor::NotUntil<_>>| r.err().map(|n| n.wait_time_from(now));
        if let Some(wait) = wait_for(self.ips.check_key(&ip)) {
            return Err(wait);
        }
        if let Some(wait) = wait_for(self.accounts.check_key(&account)) {
            return Err(wait);
        }
        Ok(())
    }

    /// Drops keys whose budget has refilled (call periodically).
    pub fn sweep(&self) {
        self.accounts.retain_recent();
        self.ips.retain_recent();
        self.accounts.shrink_to_fit();
        self.ips.shrink_to_fit();
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.accounts.len() + self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_account_from_many_ips_is_limited() {
        let l = LoginLimiter::new(&LoginLimits::default());
        for n in 0..5 {
            assert!(l.attempt("alice@example.com", ip(n)).is_ok());
        }
        let wait = l.attempt(" Alice@Example.com", ip(9)).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert!(
            l.attempt("bob@example.com", ip(9)).is_ok(),
            "other accounts unaffected"
        );
    }

    #[test]
    fn many_accounts_from_one_ip_are_limited() {
        let l = LoginLimiter::new(&LoginLimits::default());
        for n in 0..20 {
            assert!(l.attempt(&format!("user{n}"), ip(1)).is_ok());
        }
        assert!(l.attempt("user99", ip(1)).is_err());
        assert!(l.attempt("user99", ip(2)).is_ok(), "other IPs unaffected");
    }

    #[test]
    fn key_state_is_bounded() {
        let l = LoginLimiter::new(&LoginLimits {
            max_keys: 10,
            ..LoginLimits::default()
        });
        for n in 0..5 {
            assert!(l.attempt(&format!("u{n}"), ip(n)).is_ok());
        }
        assert_eq!(l.keys(), 10);
        // Full, and a sweep frees nothing (no budget has refilled): refused, memory flat.
        assert!(l.attempt("newcomer", ip(50)).is_err());
        assert_eq!(l.keys(), 10);
    }
}
