//! SignalWire's compatibility API (cXML, formerly LaML): Twilio-shaped webhooks, answer
//! documents and REST, so this module reuses `twilio.rs` and only says where SignalWire
//! differs.
//!
//! Differences that matter:
//! - Webhooks are signed with the project's **Signing Key** (Dashboard → API credentials) and
//!   carry `X-SignalWire-Signature`; compatibility callbacks may carry `X-Twilio-Signature`
//!   instead. Either is accepted.
//! - Two signature schemes are in use (signalwire-typescript `src/WebhookValidator.ts`):
//!   - A, for RELAY/SWML/JSON callbacks: lowercase hex HMAC-SHA1(key, URL + raw body);
//!   - B, for compatibility/cXML form callbacks: Twilio's Base64 HMAC-SHA1 over URL + sorted
//!     params (with the same default-port variants and `bodySHA256` handling). SignalWire's
//!     SDK keeps a repeated key's values in submission order; Twilio sorts them. Both orders
//!     are accepted.
//!
//!   The SDK also accepts a scheme-B signature over the URL alone for any body; that would
//!   let a captured signature be replayed with a different body, so it is accepted here only
//!   when there is no body (GET or empty POST).
//! - Ids are UUIDs (`AccountSid` is the project id); REST lives at
//!   `https://{space}.signalwire.com/api/laml/2010-04-01/Accounts/{project}/…`, Basic auth
//!   `project:api_token`.

use async_trait::async_trait;
use vaani_core::AnswerPlan;
use vaani_events::{CallEvent, Provider};

use crate::common::*;
use crate::rest::{
    CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestConfig, RestError,
};
use crate::twilio::{self, CompatApi, Dialect};

/// The header SignalWire signs webhooks with.
pub const SIGNATURE_HEADER: &str = "X-SignalWire-Signature";

const SIGNALWIRE: Dialect = Dialect {
    signature_headers: &[SIGNATURE_HEADER, twilio::SIGNATURE_HEADER],
    hex_raw_body: true,
    submission_order: true,
};

/// Scheme B (compatibility/cXML form callbacks): the same computation as [`twilio::sign`],
/// keyed with the Signing Key.
pub fn sign(url: &str, params: &[(String, String)], signing_key: &str) -> String {
    twilio::sign(url, params, signing_key)
}

/// Scheme A (RELAY/SWML/JSON callbacks): lowercase hex HMAC-SHA1 over `url` followed by the
/// raw body bytes.
pub fn sign_raw_body(url: &str, body: &[u8], signing_key: &str) -> String {
    twilio::hmac_sha1(signing_key.as_bytes(), &[url.as_bytes(), body])
        .map(hex::encode)
        .unwrap_or_default()
}

/// Verify `X-SignalWire-Signature` (or `X-Twilio-Signature`) against `cfg.secret`, the
/// project's Signing Key, under either scheme (see the module docs).
pub fn verify(req: &WebhookRequest, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    twilio::verify_with(&SIGNALWIRE, req, cfg)
}

/// Parse a cXML voice request, status callback or recording status callback; the fields are
/// Twilio's (see [`twilio::parse`]).
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    twilio::parse_as(Provider::Signalwire, content_type, body, url_query)
}

/// Render `plan` as cXML. SignalWire supports the same verbs Vaani uses (`<Dial><Sip>`,
/// `<Connect><Stream>` with `<Parameter>`, `<Say>`, `<Hangup>`, `<Reject>`).
pub fn render_answer(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    twilio::render_twiml(plan)
}

/// SignalWire call control over the compatibility REST API. `cfg.account` is the project id,
/// `cfg.token` the API token, `cfg.base_url` the space URL ([`space_url`]).
#[derive(Debug, Clone)]
pub struct SignalWireClient {
    api: CompatApi,
}

/// `https://{space}.signalwire.com` for a space name such as `example` (a full host such as
/// `example.signalwire.com` is accepted too).
pub fn space_url(space: &str) -> Result<String, RestError> {
    let s = space.trim().trim_end_matches(".signalwire.com");
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        return Err(RestError::Invalid(
            "SignalWire space must be a DNS label".into(),
        ));
    }
    Ok(format!("https://{}.signalwire.com", s.to_ascii_lowercase()))
}

impl SignalWireClient {
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        Ok(SignalWireClient {
            api: CompatApi::new("signalwire", cfg, "/api/laml/2010-04-01")?,
        })
    }
}

#[async_trait]
impl CallControl for SignalWireClient {
    async fn originate(&self, call: &OutboundCall) -> Result<ProviderCallRef, RestError> {
        self.api.originate(call).await
    }

    async fn hangup(&self, provider_call_id: &str) -> Result<(), RestError> {
        self.api.hangup(provider_call_id).await
    }

    async fn redirect(
        &self,
        provider_call_id: &str,
        target: &RedirectTarget,
    ) -> Result<(), RestError> {
        self.api.redirect(provider_call_id, target).await
    }
}
