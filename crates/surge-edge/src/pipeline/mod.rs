//! The edge's tower pipeline, one file per layer, read top to bottom:
//!
//! 1. [`request_limits`]: 413 for oversized bodies, 504 when the upstream is too slow.
//! 2. [`authenticate`]: find the route (404 `no-route`), verify credentials once (401),
//!    check revocation, refresh silently, sign the Envelope.
//! 3. [`dispatch`]: call the route's upstream — in process ([`dispatch::upstream`] over
//!    a role's router) or on another node ([`remote::Remote`]).
//!
//! [`crate::Edge`] assembles them.

pub mod authenticate;
pub mod dispatch;
pub mod remote;
pub mod request_limits;
