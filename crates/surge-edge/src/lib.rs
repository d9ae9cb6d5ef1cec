//! The edge role: the only public door. This crate holds its parts as they are built;
//! so far the access-token issuer and strict verifier ([`auth::jwt`]). The Envelope it
//! hands upstreams is in `surge_http::envelope` (upstreams verify it without this crate).

pub mod auth;
