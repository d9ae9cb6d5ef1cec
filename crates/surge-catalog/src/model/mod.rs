//! What the catalog accepts: ids, product documents, offers. Validation names every
//! bad field with a JSON pointer so the client can fix all of them at once.

pub mod offer;
pub mod product;

/// Longest accepted id (product or merchant).
pub const MAX_ID_LEN: usize = 64;

/// Checks an id: 1–64 characters from `A-Z a-z 0-9 - _ .`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("must be 1 to {MAX_ID_LEN} characters long"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain A-Z, a-z, 0-9, '-', '_' and '.'".into());
    }
    Ok(())
}

/// Normalises a market code: two ASCII letters, returned upper case.
pub fn check_market(market: &str) -> Result<String, String> {
    if market.len() == 2 && market.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(market.to_ascii_uppercase())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code such as DE".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("P0000001").is_ok());
        assert!(check_id("a-b_c.d").is_ok());
        for bad in [
            "",
            "a/b",
            "a b",
            "ü",
            "x'; DROP TABLE products;--",
            &"x".repeat(65),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn markets() {
        assert_eq!(check_market("de"), Ok("DE".into()));
        assert!(check_market("DEU").is_err());
        assert!(check_market("1A").is_err());
    }
}
