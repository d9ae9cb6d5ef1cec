//! Revoked sessions and users, checked on every request in tens of nanoseconds.
//!
//! A revocation (logout, an admin ban, reuse of a rotated refresh token) is recorded
//! durably by the identity store and added here. Requests ask
//! [`RevocationFilter::might_be_revoked`]: a Bloom filter (`fastbloom`, sized for
//! `expected` entries per generation at the configured false-positive rate) answers "no"
//! for almost every request without a lock or a lookup; a "maybe" must be confirmed
//! against the authoritative store before a request is refused.
//!
//! A Bloom filter cannot forget, so entries live in **generations**: inserts go to the
//! current one, checks look at the current and the previous one, and [`rotate`] (every
//! `span`, at least the longest token lifetime) drops the previous generation. An entry
//! is therefore kept for at least one `span`, by which time every token it could match
//! has expired, and the filter's size stays bounded however many revocations there are.
//!
//! [`rotate`]: RevocationFilter::rotate

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fastbloom::AtomicBloomFilter;

/// What is revoked: one login session, or every session of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked<'a> {
    /// A session id.
    Session(&'a str),
    /// A user id (all of the user's sessions).
    User(&'a str),
}

/// The filter key: a tag byte keeps session and user ids apart in the one filter
/// (hashed as a tuple, without building a buffer).
fn hashable(what: Revoked<'_>) -> (u8, &str) {
    match what {
        Revoked::Session(id) => (b's', id),
        Revoked::User(id) => (b'u', id),
    }
}

fn bloom(false_positive: f64, expected: usize) -> Arc<AtomicBloomFilter> {
    Arc::new(AtomicBloomFilter::with_false_pos(false_positive).expected_items(expected))
}

struct Generations {
    current: Arc<AtomicBloomFilter>,
    previous: Arc<AtomicBloomFilter>,
    rotated_at: Instant,
}

/// Generational Bloom filter of revocations.
pub struct RevocationFilter {
    generations: RwLock<Generations>,
    expected: usize,
    false_positive: f64,
    span: Duration,
}

impl RevocationFilter {
    /// A filter for `expected` revocations per generation at `false_positive` (e.g.
    /// 0.001), whose generations last `span` (at least the longest token lifetime).
    pub fn new(expected: usize, false_positive: f64, span: Duration) -> Result<Self, String> {
        if !(false_positive > 0.0 && false_positive < 1.0) {
            return Err(format!(
                "revocation false-positive rate must be in (0, 1), got {false_positive}"
            ));
        }
        let expected = expected.max(1);
        Ok(RevocationFilter {
            generations: RwLock::new(Generations {
                current: bloom(false_positive, expected),
                previous: bloom(false_positive, expected),
                rotated_at: Instant::now(),
            }),
            expected,
            false_positive,
            span,
        })
    }

    /// Records a revocation (after it is stored durably).
    pub fn insert(&self, what: Revoked<'_>) {
        let key = hashable(what);
        let g = self.generations.read().unwrap_or_else(|p| p.into_inner());
        g.current.insert(&key);
    }

    /// `false`: certainly not revoked. `true`: maybe; confirm with the store.
    pub fn might_be_revoked(&self, session: &str, user: &str) -> bool {
        let s = hashable(Revoked::Session(session));
        let u = hashable(Revoked::User(user));
        let g = self.generations.read().unwrap_or_else(|p| p.into_inner());
        [&g.current, &g.previous]
            .iter()
            .any(|f| f.contains(&s) || f.contains(&u))
    }

    /// Starts a new generation and forgets the oldest.
    pub fn rotate(&self) {
        let fresh = bloom(self.false_positive, self.expected);
        let mut g = self.generations.write().unwrap_or_else(|p| p.into_inner());
        g.previous = std::mem::replace(&mut g.current, fresh);
        g.rotated_at = Instant::now();
    }

    /// Rotates if the current generation is older than the span; returns whether it did.
    pub fn rotate_if_due(&self) -> bool {
        let due = self
            .generations
            .read()
            .map(|g| g.rotated_at.elapsed() >= self.span)
            .unwrap_or(true);
        if due {
            self.rotate();
        }
        due
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn revoked_sessions_and_users_are_caught_for_two_generations() {
        let f = RevocationFilter::new(1000, 0.001, Duration::from_secs(3600)).unwrap();
        assert!(!f.might_be_revoked("s1", "u1"));
        f.insert(Revoked::Session("s1"));
        f.insert(Revoked::User("u2"));
        assert!(f.might_be_revoked("s1", "u1"));
        assert!(
            f.might_be_revoked("s9", "u2"),
            "every session of a revoked user"
        );
        assert!(
            !f.might_be_revoked("u2", "s1"),
            "session and user ids do not mix"
        );
        f.rotate();
        assert!(
            f.might_be_revoked("s1", "u1"),
            "still caught one generation later"
        );
        f.rotate();
        assert!(
            !f.might_be_revoked("s1", "u1"),
            "forgotten after two rotations"
        );
        assert!(!f.rotate_if_due(), "an hour-long generation is not due yet");
    }

    #[test]
    fn false_positives_stay_near_the_configured_rate() {
        let f = RevocationFilter::new(10_000, 0.001, Duration::from_secs(3600)).unwrap();
        for i in 0..10_000 {
            f.insert(Revoked::Session(&format!("revoked-{i}")));
        }
        let fp = (0..100_000)
            .filter(|i| f.might_be_revoked(&format!("live-{i}"), "nobody"))
            .count();
        // Two keys per check against a full generation: about 2 x 0.1 %.
        assert!(fp < 400, "{fp} false positives in 100k checks");
    }

    #[test]
    fn bad_rates_are_refused() {
        assert!(RevocationFilter::new(10, 0.0, Duration::from_secs(1)).is_err());
        assert!(RevocationFilter::new(10, 1.5, Duration::from_secs(1)).is_err());
    }
}
