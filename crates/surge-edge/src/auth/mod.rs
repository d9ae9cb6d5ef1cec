//! Authentication: ways a caller proves who they are.

pub mod authenticator;
pub mod cookies;
pub mod jwt;
pub mod login_limit;
pub mod password;
pub mod revocation;
