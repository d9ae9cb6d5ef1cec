//! Authentication: ways a caller proves who they are.

pub mod authenticator;
pub mod jwt;
pub mod revocation;
