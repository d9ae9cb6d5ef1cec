//! The edge role: the only public door. Being built (issue 3); so far: the access-token
//! issuer and strict verifier, authenticators, revocation filter, passwords and login
//! limits ([`auth`]), the route table ([`routes`]) and the authentication layer that
//! signs the Envelope for upstreams ([`pipeline::authenticate`]). Upstreams verify the
//! Envelope with `surge_http::envelope`, without depending on this crate.

pub mod auth;
pub mod pipeline;
pub mod routes;
