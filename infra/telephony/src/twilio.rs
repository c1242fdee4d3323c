//! Twilio's wire formats: the `X-Twilio-Signature` webhook signature, voice / status /
//! recording-status callbacks into [`CallEvent`], TwiML answer documents, and REST call control
//! over the 2010-04-01 Calls resource.
//!
//! SignalWire's compatibility API (cXML, formerly LaML) speaks the same dialect, so the
//! building blocks here are `pub(crate)` and parameterized ([`Dialect`], [`CompatApi`]);
//! `signalwire.rs` is a thin layer over them.

use std::io::Cursor;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::Method;
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use vaani_core::answer::{CALL_ID_HEADER, CALL_ID_PARAM, TENANT_HEADER, TOKEN_HEADER, TOKEN_PARAM};
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};

use crate::common::*;
use crate::rest::{
    CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestClient, RestConfig, RestError,
    RestResponse,
};

/// Twilio's REST API host.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Header Twilio signs webhooks with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// How a Twilio-shaped provider signs its webhooks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// Signature headers, tried in order; the first is the one named when none is present.
    pub signature_headers: &'static [&'static str],
    /// Also accept SignalWire's RELAY/SWML scheme: lowercase hex of
    /// HMAC-SHA1(key, URL + raw body), whatever the body's type.
    pub hex_raw_body: bool,
    /// Also accept the values of a repeated key in the order they were submitted (SignalWire's
    /// SDK sorts by key only, with a stable sort) besides Twilio's sorted order.
    pub submission_order: bool,
}

pub(crate) const TWILIO: Dialect = Dialect {
    signature_headers: &[SIGNATURE_HEADER],
    hex_raw_body: false,
    submission_order: false,
};

/// Compute the `X-Twilio-Signature` Twilio sends for a form-encoded webhook: Base64 of
/// HMAC-SHA1 keyed with the auth token over `url` followed by every parameter as `name + value`
/// (no delimiters), names in byte order, the values of a repeated name sorted too
/// (twilio-python `RequestValidator.compute_signature`). For JSON webhooks and GET requests pass
/// no params: Twilio signs the URL alone.
pub fn sign(url: &str, params: &[(String, String)], token: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_unstable();
    b64_signature(token.as_bytes(), url, &pairs).unwrap_or_default()
}

/// Verify `X-Twilio-Signature` against `cfg.secret` (the account's auth token).
///
/// - Form bodies: the signature covers the public URL plus the sorted params ([`sign`]).
/// - JSON bodies: Twilio appends `bodySHA256=<hex SHA-256 of the body>` to the URL and signs
///   the URL alone; the body's hash is then checked against it.
/// - GET: the URL alone (the params are in its query).
///
/// The URL is tried as given, with the scheme's default port added when it has none, and
/// without its port when it has one, because Twilio's signing is inconsistent about ports.
pub fn verify(req: &WebhookRequest, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    verify_with(&TWILIO, req, cfg)
}

pub(crate) fn verify_with(
    d: &Dialect,
    req: &WebhookRequest,
    cfg: &VerifyConfig,
) -> Result<(), VerifyError> {
    let sigs: Vec<&[u8]> = d
        .signature_headers
        .iter()
        .filter_map(|h| req.headers.get(*h))
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|v| !v.is_empty())
        .collect();
    if sigs.is_empty() {
        return Err(VerifyError::MissingHeader(
            d.signature_headers
                .first()
                .copied()
                .unwrap_or(SIGNATURE_HEADER),
        ));
    }
    let key = cfg.secret.as_bytes();
    if key.is_empty() {
        return Err(VerifyError::BadKey(
            "the auth token / signing key is empty".into(),
        ));
    }
    let matches = |expected: Option<String>| {
        expected.is_some_and(|e| sigs.iter().any(|s| ct_eq(s, e.as_bytes())))
    };
    let urls = url_variants(&req.url);

    if d.hex_raw_body
        && urls
            .iter()
            .any(|u| matches(hmac_sha1(key, &[u.as_bytes(), &req.body]).map(hex::encode)))
    {
        return Ok(());
    }

    if let Some(expected_hash) = body_sha256_param(req.query()) {
        // The signature covers the URL, bodySHA256 included; the hash binds the body.
        if !urls.iter().any(|u| matches(b64_signature(key, u, &[]))) {
            return Err(VerifyError::SignatureMismatch);
        }
        let actual = hex::encode(Sha256::digest(&req.body));
        let expected = expected_hash.trim().to_ascii_lowercase();
        return if ct_eq(actual.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(VerifyError::BodyHashMismatch)
        };
    }

    let params: Vec<(String, String)> = if req.method == Method::GET || req.body.is_empty() {
        Vec::new()
    } else if is_json(req.content_type()) {
        // Without bodySHA256 nothing would bind the body to the signature.
        if d.hex_raw_body {
            return Err(VerifyError::SignatureMismatch);
        }
        return Err(VerifyError::Malformed {
            what: "webhook URL",
            detail: "a JSON webhook must carry bodySHA256 in its URL".into(),
        });
    } else {
        form_urlencoded::parse(&req.body).into_owned().collect()
    };

    let mut orders: Vec<Vec<(&str, &str)>> = Vec::with_capacity(2);
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if d.submission_order && has_repeated_key(&sorted) {
        let mut by_key = sorted.clone();
        by_key.sort_by(|a, b| a.0.cmp(b.0));
        orders.push(by_key);
    }
    sorted.sort_unstable();
    orders.insert(0, sorted);

    let ok = urls
        .iter()
        .any(|u| orders.iter().any(|p| matches(b64_signature(key, u, p))));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// HMAC-SHA1 over the concatenation of `parts`. `None` only if the MAC cannot be keyed, which
/// HMAC never refuses; callers treat `None` as "no match".
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().to_vec())
}

/// Base64 HMAC-SHA1 over `url` followed by `name + value` for each pair, in the order given.
pub(crate) fn b64_signature(key: &[u8], url: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

fn has_repeated_key(pairs: &[(&str, &str)]) -> bool {
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

fn is_json(content_type: Option<&str>) -> bool {
    media_type(content_type).contains("json")
}

/// The decoded `bodySHA256` query parameter, when present.
fn body_sha256_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

/// The URL as given, plus the same URL with the scheme's default port added (when it has no
/// port) or with its port removed (when it has one). twilio-python does the same: its tests
/// accept a signature made without the port for `https://host:1234/…`, because Twilio's
/// signing has dropped ports (historically every port on https URLs).
pub(crate) fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = split_port(host_port);
    if host.is_empty() {
        return out;
    }
    match port {
        None => out.push(format!("{scheme}://{userinfo}{host}:{default_port}{tail}")),
        Some(_) => out.push(format!("{scheme}://{userinfo}{host}{tail}")),
    }
    out
}

/// Split `host[:port]` (IPv6 hosts in brackets); the port must be all digits.
fn split_port(host_port: &str) -> (&str, Option<&str>) {
    let search_from = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(close) => close + 1,
            None => return (host_port, None),
        }
    } else {
        0
    };
    match host_port[search_from..].rfind(':') {
        Some(i) => {
            let colon = search_from + i;
            let port = &host_port[colon + 1..];
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                (&host_port[..colon], Some(port))
            } else {
                (host_port, None)
            }
        }
        None => (host_port, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook parsing
// ---------------------------------------------------------------------------------------------

/// Parse a Twilio voice request, call status callback or recording status callback (form
/// encoded; JSON with the same field names is accepted too). Field names are matched without
/// regard to case or separators. Our call id comes from a `vaani_call_id` field in the body or
/// in `url_query` (the callback URL we gave Twilio).
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    parse_as(Provider::Twilio, content_type, body, url_query)
}

pub(crate) fn parse_as(
    provider: Provider,
    content_type: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    let mut f = Fields::from_body(content_type, body)?;
    // `raw` is what the provider sent; the query string is ours.
    let raw = f.raw();
    if let Some(q) = url_query {
        f.extend_query(q);
    }
    let sid = f
        .get(&["CallSid"])
        .map(str::trim)
        .ok_or(ParseError::MissingField("CallSid"))?;
    let mut ev = CallEvent::new(provider, sid);
    ev.call_id = f.get(&[CALL_ID_PARAM]).map(|s| s.trim().to_string());

    ev.status = match (f.get(&["CallStatus"]), f.get(&["StatusCallbackEvent"])) {
        (Some(s), _) => Some(map_status("CallStatus", s)?),
        (None, Some(s)) => Some(map_status("StatusCallbackEvent", s)?),
        // Recording-status callbacks and the like carry no call status. `CallbackSource`
        // (always `call-progress-events` on status callbacks) names the kind of callback, not a
        // status, so it is kept in `raw` only.
        (None, None) => None,
    };
    ev.direction = f.get(&["Direction"]).and_then(map_direction);
    ev.from = f.get(&["From", "Caller"]).and_then(phone_or_raw);
    ev.to = f.get(&["To", "Called"]).and_then(phone_or_raw);

    let call_duration = f
        .get(&["CallDuration"])
        .map(|s| parse_u64("CallDuration", s))
        .transpose()?;
    // Twilio bills voice per started minute. Status callbacks carry `CallDuration` (talk time
    // in seconds) and, on the final callback, `Duration` (the billed length in whole minutes,
    // e.g. CallDuration=49 comes with Duration=1). Billed seconds are Duration × 60 when
    // Duration is present, else CallDuration rounded up to the next whole minute.
    let billed_minutes = f
        .get(&["Duration"])
        .map(|s| parse_u64("Duration", s))
        .transpose()?;
    ev.duration_s = call_duration;
    ev.billed_duration_s = match (billed_minutes, call_duration) {
        (Some(m), _) => Some(m.saturating_mul(60)),
        (None, Some(s)) => Some(pulse_round(s, 60)),
        (None, None) => None,
    };

    ev.price = f
        .get(&["Price", "CallPrice"])
        .map(|s| parse_decimal("Price", s))
        .transpose()?;
    ev.currency = f.get(&["PriceUnit"]).map(|s| s.trim().to_string());
    ev.recording_url = f.get(&["RecordingUrl"]).map(|s| s.trim().to_string());
    ev.answered_by = f.get(&["AnsweredBy"]).map(|s| s.trim().to_string());
    ev.sequence = f
        .get(&["SequenceNumber"])
        .map(|s| parse_u64("SequenceNumber", s))
        .transpose()?;
    // A timestamp in an unexpected shape must not cost us a billing event: it stays in `raw`.
    ev.occurred_at = f
        .get(&["Timestamp"])
        .and_then(|s| parse_time("Timestamp", s, UTC).ok());
    ev.raw = raw;
    Ok(ev)
}

/// Twilio's call status vocabulary (and the `StatusCallbackEvent` names) onto ours. Case,
/// `-`, `_` and spaces are ignored, so `in-progress`, `IN_PROGRESS` and `no answer` all map.
fn map_status(field: &'static str, s: &str) -> Result<CallStatus, ParseError> {
    let k: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    Ok(match k.as_str() {
        "queued" | "initiated" => CallStatus::Initiated,
        "ringing" => CallStatus::Ringing,
        "inprogress" | "answered" => CallStatus::InProgress,
        "completed" => CallStatus::Completed,
        "busy" => CallStatus::Busy,
        "noanswer" => CallStatus::NoAnswer,
        "failed" => CallStatus::Failed,
        "canceled" | "cancelled" => CallStatus::Canceled,
        _ => {
            return Err(ParseError::BadValue {
                field,
                value: s.to_string(),
            })
        }
    })
}

/// `inbound`; `outbound-api` (REST-originated) and `outbound-dial` (a `<Dial>` child leg).
/// Anything else (e.g. Elastic SIP Trunking's `trunking-*`) is left unknown.
fn map_direction(s: &str) -> Option<Direction> {
    let d = s.trim().to_ascii_lowercase();
    if d == "inbound" {
        Some(Direction::Inbound)
    } else if d == "outbound" || d.starts_with("outbound-") {
        Some(Direction::Outbound)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// TwiML answer documents
// ---------------------------------------------------------------------------------------------

/// Render `plan` as TwiML.
/// Twilio connects media streams over `wss://` only. Plain `ws://` is accepted for loopback
/// hosts, so `vaani dev` and its tests (which play the provider themselves) work without TLS.
fn stream_url_ok(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let host_ok = parsed.host_str().is_some_and(|h| !h.is_empty());
    match parsed.scheme() {
        "wss" => host_ok,
        "ws" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

pub fn render_answer(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    render_twiml(plan)
}

/// TwiML (and SignalWire cXML, which has the same verbs) for an [`AnswerPlan`]:
///
/// - `ConnectSip`: `<Dial><Sip>uri?X-Vaani-Tenant=…&X-Vaani-Call-Id=…&X-Vaani-Token=…</Sip></Dial>`; Twilio
///   turns URI parameters starting with `X-` into SIP headers on the INVITE.
/// - `ConnectStream`: `<Connect><Stream url="wss://…">` with `<Parameter>`s `vaani_call_id`
///   and `vaani_token` (they arrive in the stream's `start.customParameters`).
/// - `PlayAndHangup`: `<Say language=…>message</Say><Hangup/>`.
/// - `RejectBusy`: `<Reject reason="busy"/>`.
///
/// Everything is written through quick-xml, which escapes text and attribute values.
pub(crate) fn render_twiml(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    let body = match &plan.action {
        AnswerAction::ConnectSip { uri } => {
            let mut headers = Vec::with_capacity(3);
            if !plan.tenant.is_empty() {
                headers.push((TENANT_HEADER, plan.tenant.as_str()));
            }
            headers.push((CALL_ID_HEADER, plan.call_id.as_str()));
            headers.push((TOKEN_HEADER, plan.token.as_str()));
            let target = sip_uri_with_headers(uri, &headers)?;
            response(|w| {
                w.create_element("Dial").write_inner_content(|w| {
                    w.create_element("Sip")
                        .write_text_content(BytesText::new(&target))?;
                    Ok(())
                })?;
                Ok(())
            })?
        }
        AnswerAction::ConnectStream { url } => {
            let url = url.trim();
            if !stream_url_ok(url) {
                return Err(RenderError::Invalid {
                    what: "stream URL",
                    detail: "media streams need an absolute wss:// URL (ws:// only on loopback)"
                        .into(),
                });
            }
            let url = xml_chars(url);
            let call_id = xml_chars(&plan.call_id);
            let token = xml_chars(&plan.token);
            response(|w| {
                w.create_element("Connect").write_inner_content(|w| {
                    w.create_element("Stream")
                        .with_attribute(("url", url.as_str()))
                        .write_inner_content(|w| {
                            w.create_element("Parameter")
                                .with_attribute(("name", CALL_ID_PARAM))
                                .with_attribute(("value", call_id.as_str()))
                                .write_empty()?;
                            w.create_element("Parameter")
                                .with_attribute(("name", TOKEN_PARAM))
                                .with_attribute(("value", token.as_str()))
                                .write_empty()?;
                            Ok(())
                        })?;
                    Ok(())
                })?;
                Ok(())
            })?
        }
        AnswerAction::PlayAndHangup { message, language } => {
            let message = xml_chars(message);
            let language = language.as_deref().map(str::trim).filter(|l| !l.is_empty());
            let language = language.map(xml_chars);
            response(|w| {
                let say = w.create_element("Say");
                let say = match &language {
                    Some(l) => say.with_attribute(("language", l.as_str())),
                    None => say,
                };
                say.write_text_content(BytesText::new(&message))?;
                w.create_element("Hangup").write_empty()?;
                Ok(())
            })?
        }
        AnswerAction::RejectBusy => response(|w| {
            w.create_element("Reject")
                .with_attribute(("reason", "busy"))
                .write_empty()?;
            Ok(())
        })?,
    };
    Ok(AnswerDocument {
        content_type: "application/xml",
        body,
    })
}

/// `<?xml …?><Response>…</Response>` around what `inner` writes.
pub(crate) fn response<F>(inner: F) -> Result<String, RenderError>
where
    F: FnOnce(&mut Writer<Cursor<Vec<u8>>>) -> std::io::Result<()>,
{
    let mut w = Writer::new(Cursor::new(Vec::new()));
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(xml_err)?;
    w.create_element("Response")
        .write_inner_content(inner)
        .map_err(xml_err)?;
    String::from_utf8(w.into_inner().into_inner()).map_err(|e| RenderError::Xml(e.to_string()))
}

fn xml_err(e: std::io::Error) -> RenderError {
    RenderError::Xml(e.to_string())
}

/// Drop characters XML 1.0 cannot carry even escaped (controls other than tab, CR, LF; the
/// non-characters U+FFFE/U+FFFF). quick-xml escapes `&<>"'` but does not filter these.
pub(crate) fn xml_chars(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}

/// `sip:`/`sips:` URI with `headers` appended as URI headers (`?Name=value&…`), values
/// %-escaped per RFC 3261 (`hvalue` characters other than unreserved ones are escaped).
pub(crate) fn sip_uri_with_headers(
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<String, RenderError> {
    let uri = uri.trim();
    let lower = uri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let is_sip = lower.starts_with("sip:") || lower.starts_with("sips:");
    if !is_sip || uri.len() <= 5 || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError::Invalid {
            what: "SIP URI",
            detail: "expected sip:user@host or sips:user@host".into(),
        });
    }
    let mut out = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (name, value) in headers {
        out.push(sep);
        out.push_str(name);
        out.push('=');
        out.push_str(&sip_escape(value));
        sep = '&';
    }
    Ok(out)
}

/// %-escape everything but RFC 3261 `unreserved` (alphanumerics and `-_.!~*'()`).
fn sip_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<Response><Dial>…</Dial></Response>` for a blind transfer: `<Sip>` for SIP URIs, the
/// number as `<Dial>` text otherwise.
pub(crate) fn transfer_twiml(target: &str) -> Result<String, RenderError> {
    let target = xml_chars(target.trim());
    if target.is_empty() {
        return Err(RenderError::Invalid {
            what: "transfer target",
            detail: "empty".into(),
        });
    }
    let lower = target.to_ascii_lowercase();
    let sip = lower.starts_with("sip:") || lower.starts_with("sips:");
    response(|w| {
        let dial = w.create_element("Dial");
        if sip {
            dial.write_inner_content(|w| {
                w.create_element("Sip")
                    .write_text_content(BytesText::new(&target))?;
                Ok(())
            })?;
        } else {
            dial.write_text_content(BytesText::new(&target))?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// REST call control
// ---------------------------------------------------------------------------------------------

/// The Calls resource of the 2010-04-01 API, as Twilio and SignalWire's compatibility API
/// serve it (SignalWire under `/api/laml`).
#[derive(Debug, Clone)]
pub(crate) struct CompatApi {
    rest: RestClient,
    /// Path before `/Accounts/…`: `/2010-04-01` (Twilio) or `/api/laml/2010-04-01` (SignalWire).
    prefix: &'static str,
}

/// Twilio's idempotency header name, sent with the outbound-call request.
pub const IDEMPOTENCY_HEADER: &str = "I-Twilio-Idempotency-Token";

#[derive(serde::Deserialize)]
struct CallResource {
    sid: String,
}

impl CompatApi {
    pub(crate) fn new(
        provider: &'static str,
        cfg: RestConfig,
        prefix: &'static str,
    ) -> Result<Self, RestError> {
        check_sid("account", &cfg.account)?;
        Ok(CompatApi {
            rest: RestClient::new(provider, cfg)?,
            prefix,
        })
    }

    fn calls_path(&self) -> String {
        format!(
            "{}/Accounts/{}/Calls.json",
            self.prefix, self.rest.cfg.account
        )
    }

    fn call_path(&self, sid: &str) -> Result<String, RestError> {
        check_sid("call id", sid)?;
        Ok(format!(
            "{}/Accounts/{}/Calls/{}.json",
            self.prefix, self.rest.cfg.account, sid
        ))
    }

    async fn post_form(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency: Option<http::HeaderValue>,
    ) -> Result<RestResponse, RestError> {
        let url = self.rest.url(path);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let (user, token) = (&self.rest.cfg.account, &self.rest.cfg.token);
        self.rest
            .send(|c| {
                let b = c
                    .post(&url)
                    .basic_auth(user, Some(token))
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .header(http::header::ACCEPT, "application/json")
                    .body(body.clone());
                match &idempotency {
                    Some(h) => b.header(IDEMPOTENCY_HEADER, h.clone()),
                    None => b,
                }
            })
            .await
    }

    pub(crate) async fn originate(
        &self,
        call: &OutboundCall,
    ) -> Result<ProviderCallRef, RestError> {
        for (what, v) in [("to", &call.to), ("from", &call.from)] {
            if v.trim().is_empty() {
                return Err(RestError::Invalid(format!(
                    "outbound call needs a {what} number"
                )));
            }
        }
        let answer_url = with_call_id(&call.answer_url, &call.call_id)?;
        let status_url = with_call_id(&call.status_url, &call.call_id)?;
        let mut form: Vec<(&str, String)> = vec![
            ("To", call.to.trim().to_string()),
            ("From", call.from.trim().to_string()),
            ("Url", answer_url),
            ("Method", "POST".into()),
            ("StatusCallback", status_url),
            ("StatusCallbackMethod", "POST".into()),
        ];
        for event in ["initiated", "ringing", "answered", "completed"] {
            form.push(("StatusCallbackEvent", event.into()));
        }
        if call.ring_timeout_s > 0 {
            // Twilio rejects a Timeout above 600 seconds; 0 means "provider default" (60 s).
            form.push(("Timeout", call.ring_timeout_s.min(600).to_string()));
        }
        if call.machine_detection {
            form.push(("MachineDetection", "Enable".into()));
        }
        let idempotency = match call.idempotency_key.trim() {
            "" => None,
            k => Some(http::HeaderValue::from_str(k).map_err(|_| {
                RestError::Invalid("idempotency key is not a valid header value".into())
            })?),
        };
        let resp = self
            .post_form(&self.calls_path(), &form, idempotency)
            .await?;
        let call: CallResource =
            serde_json::from_slice(&resp.body).map_err(|e| RestError::Decode {
                provider: self.rest.provider,
                detail: e.to_string(),
            })?;
        if call.sid.trim().is_empty() {
            return Err(RestError::Decode {
                provider: self.rest.provider,
                detail: "empty call sid".into(),
            });
        }
        Ok(ProviderCallRef {
            provider_call_id: call.sid,
        })
    }

    pub(crate) async fn hangup(&self, sid: &str) -> Result<(), RestError> {
        let path = self.call_path(sid)?;
        self.post_form(&path, &[("Status", "completed".into())], None)
            .await
            .map(|_| ())
    }

    pub(crate) async fn redirect(
        &self,
        sid: &str,
        target: &RedirectTarget,
    ) -> Result<(), RestError> {
        let path = self.call_path(sid)?;
        let form: Vec<(&str, String)> = match target {
            RedirectTarget::Url(url) => {
                check_http_url("redirect URL", url)?;
                vec![("Url", url.trim().to_string()), ("Method", "POST".into())]
            }
            RedirectTarget::Transfer(to) => {
                let twiml = transfer_twiml(to).map_err(|e| RestError::Invalid(e.to_string()))?;
                vec![("Twiml", twiml)]
            }
        };
        self.post_form(&path, &form, None).await.map(|_| ())
    }
}

/// SIDs and account ids go into URL paths: allow only what Twilio (`CA…`, `AC…`) and
/// SignalWire (UUIDs) use.
fn check_sid(what: &str, s: &str) -> Result<(), RestError> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(RestError::Invalid(format!(
            "{what} must be 1-64 letters, digits or '-'"
        )));
    }
    Ok(())
}

fn check_http_url(what: &str, url: &str) -> Result<(), RestError> {
    let u = url.trim().to_ascii_lowercase();
    if (u.starts_with("https://") || u.starts_with("http://")) && !u.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(RestError::Invalid(format!(
            "{what} must be an absolute http(s) URL"
        )))
    }
}

/// `url` with `vaani_call_id=<call_id>` added to its query, unless it already has one.
pub(crate) fn with_call_id(url: &str, call_id: &str) -> Result<String, RestError> {
    check_http_url("callback URL", url)?;
    let url = url.trim();
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let has_param = base.split_once('?').is_some_and(|(_, q)| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == CALL_ID_PARAM)
    });
    let mut out = base.to_string();
    if !has_param && !call_id.is_empty() {
        let pair = form_urlencoded::Serializer::new(String::new())
            .append_pair(CALL_ID_PARAM, call_id)
            .finish();
        let sep = match base.split_once('?') {
            None => "?",
            Some((_, "")) => "",
            Some((_, q)) if q.ends_with('&') => "",
            Some(_) => "&",
        };
        out.push_str(sep);
        out.push_str(&pair);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Ok(out)
}

/// Twilio call control: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` and friends, with
/// HTTP Basic auth `AccountSid:AuthToken` (`cfg.account`, `cfg.token`).
#[derive(Debug, Clone)]
pub struct TwilioClient {
    api: CompatApi,
}

impl TwilioClient {
    /// `cfg.base_url` is normally [`DEFAULT_BASE_URL`]; tests point it at a local server.
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        Ok(TwilioClient {
            api: CompatApi::new("twilio", cfg, "/2010-04-01")?,
        })
    }
}

#[async_trait]
impl CallControl for TwilioClient {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_test_vector() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            sign(
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params,
                "12345"
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("http://u:p@a.example:80"),
            vec!["http://u:p@a.example:80", "http://u:p@a.example"]
        );
        assert_eq!(
            url_variants("https://a.example:8443/x"),
            vec!["https://a.example:8443/x", "https://a.example/x"]
        );
        assert_eq!(
            url_variants("wss://[::1]/s"),
            vec!["wss://[::1]/s", "wss://[::1]:443/s"]
        );
        assert_eq!(url_variants("not a url"), vec!["not a url"]);
        assert_eq!(url_variants("https://"), vec!["https://"]);
    }

    #[test]
    fn status_vocabulary() {
        for (s, want) in [
            ("queued", CallStatus::Initiated),
            ("initiated", CallStatus::Initiated),
            ("ringing", CallStatus::Ringing),
            ("in-progress", CallStatus::InProgress),
            ("answered", CallStatus::InProgress),
            ("completed", CallStatus::Completed),
            ("busy", CallStatus::Busy),
            ("no-answer", CallStatus::NoAnswer),
            ("failed", CallStatus::Failed),
            ("canceled", CallStatus::Canceled),
            ("IN_PROGRESS", CallStatus::InProgress),
        ] {
            assert_eq!(map_status("CallStatus", s), Ok(want), "{s}");
        }
        assert!(map_status("CallStatus", "exploded").is_err());
    }

    #[test]
    fn call_id_is_added_once() {
        assert_eq!(
            with_call_id("https://h/s", "c 1").ok().as_deref(),
            Some("https://h/s?vaani_call_id=c+1")
        );
        assert_eq!(
            with_call_id("https://h/s?t=1#frag", "c1").ok().as_deref(),
            Some("https://h/s?t=1&vaani_call_id=c1#frag")
        );
        assert_eq!(
            with_call_id("https://h/s?vaani_call_id=x", "c1")
                .ok()
                .as_deref(),
            Some("https://h/s?vaani_call_id=x")
        );
        assert!(with_call_id("ftp://h/s", "c1").is_err());
    }

    #[test]
    fn sip_headers_are_escaped() {
        assert_eq!(
            sip_uri_with_headers(
                "sip:agent@10.0.0.1:5060",
                &[("X-A", "a b&c"), ("X-B", "t.k")]
            )
            .ok()
            .as_deref(),
            Some("sip:agent@10.0.0.1:5060?X-A=a%20b%26c&X-B=t.k")
        );
        assert!(sip_uri_with_headers("tel:+1", &[]).is_err());
        assert!(sip_uri_with_headers("sip:a b@c", &[]).is_err());
    }

    #[test]
    fn xml_chars_drops_controls() {
        assert_eq!(xml_chars("a\u{0}b\u{1b}c\td\n"), "abc\td\n");
    }
}
