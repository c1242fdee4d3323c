//! Tenant identifiers: what may name a tenant in URLs, store keys and SIP headers.

/// Longest tenant id.
pub const MAX_ID_LEN: usize = 64;

/// A tenant id is 1–64 characters of `A-Z a-z 0-9 - _`: safe in URL paths, store keys, media
/// tokens and SIP header values without escaping.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("acme"));
        assert!(valid_id("acme-India_2"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("ācme"));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(valid_id(&"a".repeat(64)));
    }
}
