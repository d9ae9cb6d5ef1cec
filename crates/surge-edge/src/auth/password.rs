//! Password hashing with Argon2id (PHC strings, so parameters can change over time).
//!
//! Parameters: 19 MiB of memory, 2 passes, 1 lane (OWASP's minimum for Argon2id), about
//! 20–40 ms per hash on the project's machines: slow for an attacker with a stolen table,
//! bearable for logins, which are also rate limited ([`super::login_limit`]). A login
//! for an unknown account still runs one verification against a fixed dummy hash, so
//! response times do not reveal which accounts exist. Passwords are never logged: this
//! module takes them as `&str` and returns only hashes and booleans.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted at signup.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    // 19 MiB, 2 iterations, 1 lane, 32-byte output: valid constants.
    let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The hasher failed (should not happen).
    #[error("cannot hash the password")]
    Hashing,
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) to store for `password`.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PasswordError::Hashing)?;
    let salt = SaltString::encode_b64(&bytes).map_err(|_| PasswordError::Hashing)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash("not a real password, only for timing").unwrap_or_default());

/// Whether `password` matches `stored` (a PHC string); `stored: None` (unknown account)
/// costs the same time and is always `false`.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let (target, real) = match stored {
        Some(s) => (s, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(target) else {
        return false;
    };
    // Verification uses the parameters recorded in the stored string.
    let ok = argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hashes_verify_and_are_salted_argon2id() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_ne!(h, hash("correct horse battery").unwrap(), "salted");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse battery!", Some(&h)));
        assert!(!verify("correct horse battery", None), "unknown account");
        assert!(!verify("correct horse battery", Some("not a phc string")));
    }

    #[test]
    fn length_limits() {
        assert_eq!(hash("short"), Err(PasswordError::TooShort));
        assert_eq!(
            hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
        let h = hash("long enough password").unwrap();
        assert!(!verify(&"x".repeat(MAX_PASSWORD_BYTES + 1), Some(&h)));
    }
}
