//! Short-lived signed media tokens.
//!
//! The answer webhook puts a token in the answer document (custom parameter or SIP header);
//! the media node accepts a call's media leg only with a valid, unexpired token for that call.
//! Format: `v1.{expires_unix}.{base64url(HMAC-SHA256(key, "v1|{tenant}|{call_id}|{expires_unix}"))}`;
//! only `[A-Za-z0-9._-]`, so it fits every provider's custom-parameter rules.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a token stays valid after the answer webhook: the provider connects within seconds.
pub const DEFAULT_TTL_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed media token")]
    Malformed,
    #[error("media token expired")]
    Expired,
    #[error("media token signature mismatch")]
    BadSignature,
}

fn mac(key: &[u8], tenant: &str, call_id: &str, expires: i64) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(format!("v1|{tenant}|{call_id}|{expires}").as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Issue a token for `(tenant, call_id)` valid until `now + ttl_secs`.
pub fn issue(key: &[u8], tenant: &str, call_id: &str, now: DateTime<Utc>, ttl_secs: i64) -> String {
    let expires = now.timestamp().saturating_add(ttl_secs);
    let sig =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac(key, tenant, call_id, expires));
    format!("v1.{expires}.{sig}")
}

/// Check a token presented for `(tenant, call_id)` at `now`.
pub fn verify(
    key: &[u8],
    token: &str,
    tenant: &str,
    call_id: &str,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(exp), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let expires: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = Hmac::<Sha256>::new_from_slice(key).map_err(|_| TokenError::BadSignature)?;
    m.update(format!("v1|{tenant}|{call_id}|{expires}").as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    if now.timestamp() > expires {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn issued_tokens_verify_until_expiry() {
        let tok = issue(b"k", "acme", "call-1", t0(), 300);
        assert_eq!(verify(b"k", &tok, "acme", "call-1", t0()), Ok(()));
        let later = t0() + chrono::Duration::seconds(301);
        assert_eq!(
            verify(b"k", &tok, "acme", "call-1", later),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"k", &tok, "acme", "call-2", t0()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"k", &tok, "other", "call-1", t0()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"x", &tok, "acme", "call-1", t0()),
            Err(TokenError::BadSignature)
        );
        assert!(tok
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
    }

    #[test]
    fn extended_expiry_is_rejected() {
        let tok = issue(b"k", "acme", "c", t0(), 10);
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged = (t0().timestamp() + 10_000).to_string();
        parts[1] = &forged;
        assert_eq!(
            verify(b"k", &parts.join("."), "acme", "c", t0()),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in ".*") {
            let _ = verify(b"k", &s, "t", "c", t0());
        }
    }
}
