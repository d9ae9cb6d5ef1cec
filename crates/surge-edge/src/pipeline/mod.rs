//! The edge's tower pipeline, one file per layer, read top to bottom:
//!
//! 1. [`request_limits`]: 413 for oversized bodies, 504 when the upstream is too slow.
//! 2. [`kill_switch`]: a route an operator switched off answers its fallback at once.
//! 3. [`rate_limit`] (per-IP rules): GCRA by route class, 429 with `Retry-After` and
//!    `RateLimit` headers (shadow rules only count) — before any credential is checked.
//! 4. [`authenticate`]: find the route (404 `no-route`), verify credentials once (401),
//!    check revocation, refresh silently, sign the Envelope.
//! 5. [`rate_limit`] (per-caller rules): the same, keyed by the authenticated caller.
//! 6. [`micro_cache`]: anonymous answers on cacheable routes, kept for a second, with
//!    request coalescing and serve-stale-on-error (hits skip everything below).
//! 7. [`shed`]: concurrency limit per route class with a bounded (LIFO or FIFO) queue,
//!    shedding at once when it is full (503), priorities, adaptive limits.
//! 8. [`dispatch`]: call the route's upstream — in process ([`dispatch::upstream`] over
//!    a role's router) or on another node ([`remote::Remote`]).
//!
//! [`crate::Edge`] assembles them.

pub mod authenticate;
pub mod dispatch;
pub mod kill_switch;
pub mod micro_cache;
pub mod rate_limit;
pub mod remote;
pub mod request_limits;
pub mod shed;
