//! Each provider's wire formats, and nothing else: webhook signatures, status/answer webhook
//! parsing into the neutral [`CallEvent`], answer documents rendered from an [`AnswerPlan`],
//! and REST call control.
//!
//! Place in the architecture: used by `functions/webhooks` (control plane) and the CLI. Only
//! the modules named after a provider know that provider's field names (DESIGN.md §3.2).

pub mod common;
pub mod exotel;
pub mod plivo;
pub mod rest;
pub mod signalwire;
pub mod telnyx;
pub mod twilio;

pub use common::{
    AnswerDocument, ParseError, RenderError, VerifyConfig, VerifyError, WebhookRequest,
};
pub use rest::{CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestConfig, RestError};

use vaani_core::AnswerPlan;
use vaani_events::{CallEvent, Provider};

/// Verify that `req` really comes from `provider`, before anything acts on it.
pub fn verify(
    provider: Provider,
    req: &WebhookRequest,
    cfg: &VerifyConfig,
) -> Result<(), VerifyError> {
    match provider {
        Provider::Twilio => twilio::verify(req, cfg),
        Provider::Exotel => exotel::verify(req, cfg),
        Provider::Plivo => plivo::verify(req, cfg),
        Provider::Telnyx => telnyx::verify(req, cfg),
        Provider::Signalwire => signalwire::verify(req, cfg),
    }
}

/// Parse a status or answer webhook body into a [`CallEvent`].
///
/// `content_type` picks form or JSON (`None`: sniffed from the body). `url_query` is the query
/// string of the URL the webhook was sent to; our call id may travel there (`vaani_call_id=`).
pub fn parse(
    provider: Provider,
    content_type: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    match provider {
        Provider::Twilio => twilio::parse(content_type, body, url_query),
        Provider::Exotel => exotel::parse(content_type, body, url_query),
        Provider::Plivo => plivo::parse(content_type, body, url_query),
        Provider::Telnyx => telnyx::parse(content_type, body, url_query),
        Provider::Signalwire => signalwire::parse(content_type, body, url_query),
    }
}

/// Render the provider's answer document (TwiML, Plivo XML, TeXML, LaML, Exotel applet JSON).
pub fn render_answer(provider: Provider, plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    match provider {
        Provider::Twilio => twilio::render_answer(plan),
        Provider::Exotel => exotel::render_answer(plan),
        Provider::Plivo => plivo::render_answer(plan),
        Provider::Telnyx => telnyx::render_answer(plan),
        Provider::Signalwire => signalwire::render_answer(plan),
    }
}

/// Guess the provider from a webhook's headers and body, for the universal status endpoint.
/// Signature headers decide first; field names second. `None` when nothing matches.
pub fn detect_provider(req: &WebhookRequest) -> Option<Provider> {
    let h = |name: &str| req.headers.contains_key(name);
    // SignalWire may send X-Twilio-Signature too, so its own header decides first.
    if h("x-signalwire-signature") {
        return Some(Provider::Signalwire);
    }
    if h("x-twilio-signature") {
        return Some(Provider::Twilio);
    }
    if h("x-plivo-signature-v3") || h("x-plivo-signature-v2") || h("x-plivo-signature") {
        return Some(Provider::Plivo);
    }
    if h("telnyx-signature-ed25519") {
        return Some(Provider::Telnyx);
    }
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ua.starts_with("Exotel") || h("x-exotel-event-sid") {
        return Some(Provider::Exotel);
    }
    let fields = common::Fields::from_body(req.content_type(), &req.body).ok()?;
    if fields.get(&["CallUUID"]).is_some() {
        return Some(Provider::Plivo);
    }
    if fields
        .json_pointer("/data/payload/call_control_id")
        .is_some()
    {
        return Some(Provider::Telnyx);
    }
    if fields.get(&["CallSid"]).is_some() {
        // Twilio and SignalWire share field names; Exotel's have Status rather than CallStatus.
        if fields.get(&["CallStatus"]).is_none() && fields.get(&["Status"]).is_some() {
            return Some(Provider::Exotel);
        }
        let account = fields.get(&["AccountSid"]).unwrap_or_default();
        if account.starts_with("AC") {
            return Some(Provider::Twilio);
        }
        if !account.is_empty() {
            return Some(Provider::Signalwire);
        }
        return Some(Provider::Exotel);
    }
    None
}

/// Why signature headers could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("bad signing key: {0}")]
    BadKey(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// The authentication headers `provider` would send with `req` (its method, URL, content type
/// and body): what `vaani webhook sign` prints, and what tests and benchmarks use to make
/// signed webhooks.
///
/// `secret` is the auth token, or for Telnyx the Ed25519 private key seed (base64, 32 bytes).
/// `nonce` is Plivo's nonce or Telnyx's timestamp (default: random / `now`). Exotel does not
/// sign; it gets HTTP Basic credentials `exotel:<secret>`.
pub fn sign_headers(
    provider: Provider,
    secret: &str,
    req: &WebhookRequest,
    nonce: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, String)>, SignError> {
    use base64::Engine;
    let (method, url, body) = (req.method.as_str(), req.url.as_str(), &req.body[..]);
    let is_json = req
        .content_type()
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    let is_get = req.method == http::Method::GET;
    let form: Vec<(String, String)> = if is_json || is_get {
        Vec::new()
    } else {
        form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let h = |k: &str, v: String| (k.to_string(), v);
    Ok(match provider {
        Provider::Twilio => vec![h(
            twilio::SIGNATURE_HEADER,
            twilio::sign(url, &form, secret),
        )],
        Provider::Signalwire if is_json => vec![h(
            signalwire::SIGNATURE_HEADER,
            signalwire::sign_raw_body(url, body, secret),
        )],
        Provider::Signalwire => vec![h(
            signalwire::SIGNATURE_HEADER,
            signalwire::sign(url, &form, secret),
        )],
        Provider::Plivo => {
            let nonce = match nonce {
                Some(n) => n.to_string(),
                None => {
                    use rand::Rng;
                    rand::thread_rng()
                        .gen_range(10_000_000_000_000_000u64..u64::MAX)
                        .to_string()
                }
            };
            let params: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            vec![
                h(
                    "X-Plivo-Signature-V3",
                    plivo::sign_v3(method, url, &params, &nonce, secret),
                ),
                h("X-Plivo-Signature-V3-Nonce", nonce),
            ]
        }
        Provider::Telnyx => {
            let seed = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|_| SignError::BadKey("the Telnyx signing key must be base64"))?;
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| SignError::BadKey("the Telnyx signing key must be a 32-byte seed"))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let ts = nonce.map_or_else(|| now.timestamp().to_string(), str::to_string);
            vec![
                h(telnyx::SIGNATURE_HEADER, telnyx::sign(body, &ts, &key)),
                h(telnyx::TIMESTAMP_HEADER, ts),
            ]
        }
        Provider::Exotel => {
            let creds =
                base64::engine::general_purpose::STANDARD.encode(format!("exotel:{secret}"));
            vec![h("Authorization", format!("Basic {creds}"))]
        }
    })
}
