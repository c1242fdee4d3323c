//! Who may open a media stream.
//!
//! Two layers, both needed:
//! 1. **The upgrade request.** Twilio signs the WebSocket upgrade with `X-Twilio-Signature`
//!    computed over the `wss://` URL ([`verify_twilio_upgrade`]); Exotel signs nothing but can
//!    present HTTP Basic credentials and come from allow-listed networks
//!    ([`verify_exotel_upgrade`]). Plivo and Telnyx sign no upgrade.
//! 2. **Our media token** in the stream's `start` (or, for Plivo and Exotel, the upgrade URL's
//!    query): `vaani_call_id` + `vaani_token`, issued by the answer webhook with
//!    [`vaani_core::token::issue`] and checked here with [`vaani_core::token::verify`]. This
//!    layer works for every provider and binds the stream to one call of one tenant.

use std::net::IpAddr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use vaani_core::token::{self, TokenError};
use vaani_telephony::{VerifyConfig, VerifyError, WebhookRequest};

/// The key and tenant a session checks media tokens against.
#[derive(Clone)]
pub struct TokenAuth {
    key: Vec<u8>,
    tenant: String,
}

impl TokenAuth {
    pub fn new(key: impl Into<Vec<u8>>, tenant: impl Into<String>) -> Self {
        TokenAuth {
            key: key.into(),
            tenant: tenant.into(),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Check `token` for `call_id` at `now`.
    pub(crate) fn check(
        &self,
        call_id: Option<&str>,
        token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let call_id = call_id
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::MissingCallId)?;
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        token::verify(&self.key, token, &self.tenant, call_id, now).map_err(AuthError::Token)
    }
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("key", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why the media token check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no vaani_call_id in the start message or URL")]
    MissingCallId,
    #[error("no vaani_token in the start message or URL")]
    MissingToken,
    #[error(transparent)]
    Token(TokenError),
}

/// Check Twilio's `X-Twilio-Signature` on a media-stream WebSocket upgrade.
///
/// `public_wss_url` is the URL exactly as given in `<Stream url="wss://…">` (scheme `wss`,
/// public host, path and query), not the `https://` or internal URL the HTTP server sees:
/// Twilio signs the `wss://` URL, as a GET with no parameters. The default-port variants are
/// tried as for webhooks ([`vaani_telephony::twilio::verify`]).
pub fn verify_twilio_upgrade(
    public_wss_url: &str,
    headers: &HeaderMap,
    auth_token: &str,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let req = WebhookRequest {
        method: Method::GET,
        url: public_wss_url.to_string(),
        headers: headers.clone(),
        body: Bytes::new(),
        source_ip: None,
    };
    vaani_telephony::twilio::verify(&req, &VerifyConfig::new(auth_token, now))
}

/// Check an Exotel Voicebot WebSocket upgrade: Basic credentials
/// (`wss://user:token@host/…` becomes `Authorization: Basic …`) or a `token=` query
/// parameter, and the source network when `cfg.exotel.allow_cidrs` is set, exactly as for
/// Exotel's webhooks ([`vaani_telephony::exotel::verify`]).
pub fn verify_exotel_upgrade(
    public_wss_url: &str,
    headers: &HeaderMap,
    source_ip: Option<IpAddr>,
    cfg: &VerifyConfig,
) -> Result<(), VerifyError> {
    let req = WebhookRequest {
        method: Method::GET,
        url: public_wss_url.to_string(),
        headers: headers.clone(),
        body: Bytes::new(),
        source_ip,
    };
    vaani_telephony::exotel::verify(&req, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn twilio_upgrade_signature_is_over_the_wss_url() {
        let url = "wss://media.example.com/streams/twilio?node=n1";
        let sig = vaani_telephony::twilio::sign(url, &[], "tok");
        let mut h = HeaderMap::new();
        h.insert(
            "X-Twilio-Signature",
            HeaderValue::from_str(&sig).unwrap_or(HeaderValue::from_static("x")),
        );
        assert_eq!(verify_twilio_upgrade(url, &h, "tok", t0()), Ok(()));
        // With the default port spelled out, as Twilio sometimes signs.
        assert_eq!(
            verify_twilio_upgrade(
                "wss://media.example.com:443/streams/twilio?node=n1",
                &h,
                "tok",
                t0()
            ),
            Ok(())
        );
        assert_eq!(
            verify_twilio_upgrade(
                "https://media.example.com/streams/twilio?node=n1",
                &h,
                "tok",
                t0()
            ),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            verify_twilio_upgrade(url, &h, "other", t0()),
            Err(VerifyError::SignatureMismatch)
        );
        assert!(matches!(
            verify_twilio_upgrade(url, &HeaderMap::new(), "tok", t0()),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn exotel_upgrade_takes_basic_credentials() {
        use base64::Engine;
        let url = "wss://media.example.com/streams/exotel";
        let mut cfg = VerifyConfig::new("s3cret", t0());
        cfg.exotel.basic_user = Some("key".into());
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("key:s3cret");
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {basic}"))
                .unwrap_or(HeaderValue::from_static("x")),
        );
        assert_eq!(verify_exotel_upgrade(url, &h, None, &cfg), Ok(()));
        let bad = base64::engine::general_purpose::STANDARD.encode("key:nope");
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {bad}")).unwrap_or(HeaderValue::from_static("x")),
        );
        assert_eq!(
            verify_exotel_upgrade(url, &h, None, &cfg),
            Err(VerifyError::BadCredentials)
        );
        assert_eq!(
            verify_exotel_upgrade(url, &HeaderMap::new(), None, &cfg),
            Err(VerifyError::NoCredentials)
        );
    }

    #[test]
    fn token_auth_debug_hides_the_key() {
        let a = TokenAuth::new(b"very-secret-key".to_vec(), "acme");
        assert!(!format!("{a:?}").contains("very-secret"));
    }
}
