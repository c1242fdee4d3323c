//! Plivo: webhook signatures (V3), answer/hangup/callback parsing, Plivo XML answer documents
//! and REST call control.
//!
//! # Signature V3
//!
//! Plivo signs every voice callback with `X-Plivo-Signature-V3` (the account's or sub-account's
//! auth token) and, for sub-accounts, `X-Plivo-Signature-Ma-V3` (the main account's token),
//! both over the same string and `X-Plivo-Signature-V3-Nonce`:
//!
//! ```text
//! sig = Base64(HMAC-SHA256(token, base_url + "." + nonce))
//! ```
//!
//! `base_url` follows the official SDKs (plivo-python `utils/signature_v3.py`, plivo-node
//! `lib/utils/v3Security.js`):
//!
//! * `base = scheme://netloc + path` (the port, when written, stays in `netloc`; query and
//!   fragment are dropped);
//! * the query is decoded into name → values;
//! * **GET**: the GET parameters and the query are merged (a query name replaces a parameter
//!   of the same name, as `dict.update` does in the Python SDK), and `base + "?" + sorted query`
//!   is signed when the query is non-empty;
//! * **POST**: `base + "?" + sorted query` when the query *or* the body has parameters (so a
//!   bare `?` when only the body has some), then `"."` when both have some, then every body
//!   parameter as `name + value` in sorted order with no delimiters (a nested JSON object
//!   recurses as `name + sorted(object)`).
//!
//! The signature header may hold a comma-separated list (Plivo rotates tokens); any element
//! that matches is accepted. Because proxies disagree about default ports, the URL is tried as
//! given and with the scheme's default port added or removed (the Twilio SDK does the same).
//!
//! Voice callbacks are form-encoded. JSON bodies are accepted on a best-effort basis: strings
//! as they are, other scalars as their JSON text (`true`, `12`, `null`); the SDKs disagree on
//! how to print non-strings (Python `True`, Node `true`), so do not rely on JSON signing for
//! anything but string fields.
//!
//! # Answer documents
//!
//! * `ConnectSip` → `<Dial><User sipHeaders="Vaanitenant=…,Vaanicallid=…,Vaanitoken=…">sip:…</User></Dial>`.
//!   Plivo only forwards custom SIP headers whose **name** is alphanumeric (`X-PH-` is
//!   prepended; the support article asks for a capital first letter then lowercase, at most 24
//!   characters) and whose **value** is alphanumeric or `%` (at most 120 characters); pairs
//!   that break the rules are silently dropped. So the names are `Vaanitenant`, `Vaanicallid`
//!   and `Vaanitoken` (the media node sees `X-PH-Vaanitenant` / `X-PH-Vaanicallid` /
//!   `X-PH-Vaanitoken`) and every value
//!   byte outside `[A-Za-z0-9]` is percent-encoded (`-` → `%2D`); the media node
//!   percent-decodes. Ids or tokens with characters outside `[A-Za-z0-9._~-]`, or values that
//!   would exceed 120 characters encoded, are refused with [`RenderError::Invalid`] rather
//!   than dropped by Plivo.
//! * `ConnectStream` → `<Stream bidirectional="true" keepCallAlive="true"
//!   contentType="audio/x-mulaw;rate=8000">wss://…?vaani_call_id=…&vaani_token=…</Stream>`.
//!   `extraHeaders` allows only `[A-Za-z0-9]` in names *and* values (not even `%`, `_` or `=`
//!   inside a value), which cannot carry our ids losslessly, so the call id and token travel
//!   as query parameters of the WebSocket URL instead; the media node reads them from the
//!   upgrade request.
//! * `PlayAndHangup` → `<Speak language=…>…</Speak><Hangup/>`; `RejectBusy` →
//!   `<Hangup reason="busy"/>` (the call is refused with a busy signal, not answered).
//!
//! All XML goes through `quick_xml::Writer`, which escapes text and attributes; characters
//! XML 1.0 cannot carry at all (most C0 controls) are removed from spoken text.
//!
//! # REST
//!
//! [`PlivoClient`] implements [`CallControl`]. Plivo documents no idempotency key for the Call
//! API, so creating a call (and transferring one) is retried **only on 429**, where Plivo
//! refused the request; a 5xx or a timeout could mean the call was placed, and retrying it
//! would ring the callee twice. Hangup is idempotent and uses the full retry policy.
//!
//! # Shared helpers
//!
//! A few `pub(crate)` helpers here are also used by `exotel.rs`: id validation, optional
//! numeric/time fields, the 429-only retry loop and callback-URL tagging.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::Sha256;
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};

use crate::common::{
    ct_eq, parse_decimal, parse_time, parse_u64, phone_or_raw, pulse_round, AnswerDocument, Fields,
    ParseError, RenderError, VerifyConfig, VerifyError, WebhookRequest, IST,
};
use crate::rest::{
    backoff_delay, CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestClient,
    RestConfig, RestError, RestResponse,
};

const PROVIDER: &str = "plivo";

/// Plivo's REST API base URL.
pub const API_BASE: &str = "https://api.plivo.com";

/// Plivo bills voice in 60-second increments with a 60-second minimum once answered.
pub const BILLING_PULSE_S: u64 = 60;

/// Names of the custom SIP headers (without Plivo's `X-PH-` prefix) carrying our tenant, call
/// id and media token on `ConnectSip`.
pub const SIP_HEADER_TENANT: &str = "Vaanitenant";
pub const SIP_HEADER_CALL_ID: &str = "Vaanicallid";
pub const SIP_HEADER_TOKEN: &str = "Vaanitoken";

/// Plivo's limit on a custom SIP header value.
const SIP_HEADER_VALUE_MAX: usize = 120;

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------------------
// Signature V3
// ---------------------------------------------------------------------------------------------

/// A decoded request parameter as the SDKs see it: a list of values, or a nested object
/// (JSON bodies only).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    Values(Vec<String>),
    Nested(BTreeMap<String, Param>),
}

type ParamMap = BTreeMap<String, Param>;

fn params_from_pairs<I>(pairs: I) -> ParamMap
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut m = ParamMap::new();
    for (k, v) in pairs {
        match m.entry(k).or_insert_with(|| Param::Values(Vec::new())) {
            Param::Values(vs) => vs.push(v),
            Param::Nested(_) => {}
        }
    }
    m
}

fn json_scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn params_from_json(obj: &serde_json::Map<String, serde_json::Value>) -> ParamMap {
    obj.iter()
        .map(|(k, v)| {
            let p = match v {
                serde_json::Value::Object(inner) => Param::Nested(params_from_json(inner)),
                serde_json::Value::Array(items) => {
                    Param::Values(items.iter().map(json_scalar_text).collect())
                }
                scalar => Param::Values(vec![json_scalar_text(scalar)]),
            };
            (k.clone(), p)
        })
        .collect()
}

/// `name=value` pairs for every name (sorted) and every value (sorted), joined with `&`.
fn sorted_query(m: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = Vec::new();
    for (k, vs) in m {
        let mut vs = vs.clone();
        vs.sort();
        for v in vs {
            out.push(format!("{k}={v}"));
        }
    }
    out.join("&")
}

/// `name + value` for every name and value in sorted order, no delimiters; objects recurse.
fn sorted_params(m: &ParamMap) -> String {
    let mut out = String::new();
    for (k, p) in m {
        match p {
            Param::Values(vs) => {
                let mut vs = vs.clone();
                vs.sort();
                for v in vs {
                    out.push_str(k);
                    out.push_str(&v);
                }
            }
            Param::Nested(inner) => {
                out.push_str(k);
                out.push_str(&sorted_params(inner));
            }
        }
    }
    out
}

/// A URL cut the way Python's `urlparse` cuts it, keeping the pieces verbatim.
struct UrlParts<'a> {
    scheme: String,
    netloc: &'a str,
    path: &'a str,
    query: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let netloc_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (netloc, after) = rest.split_at(netloc_end);
    let (path, query) = after.split_once('?').unwrap_or((after, ""));
    Some(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        netloc,
        path,
        query,
    })
}

/// The netloc with the scheme's default port added (when absent) or removed (when present).
fn netloc_port_variant(scheme: &str, netloc: &str) -> Option<String> {
    let default = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return None,
    };
    let host_start = netloc.rfind('@').map_or(0, |i| i + 1);
    let (userinfo, hostport) = netloc.split_at(host_start);
    if hostport.is_empty() {
        return None;
    }
    let port_at = hostport
        .rfind(':')
        .filter(|&i| !hostport[i..].contains(']'));
    match port_at {
        Some(i) if &hostport[i + 1..] == default => Some(format!("{userinfo}{}", &hostport[..i])),
        Some(_) => None,
        None => Some(format!("{netloc}:{default}")),
    }
}

fn base_string(is_get: bool, parts: &UrlParts<'_>, netloc: &str, body: &ParamMap) -> String {
    let mut base = format!("{}://{}{}", parts.scheme, netloc, parts.path);
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(parts.query.as_bytes()) {
        query
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    if is_get {
        let mut merged: BTreeMap<String, Vec<String>> = body
            .iter()
            .map(|(k, p)| {
                let vs = match p {
                    Param::Values(vs) => vs.clone(),
                    Param::Nested(inner) => vec![sorted_params(inner)],
                };
                (k.clone(), vs)
            })
            .collect();
        merged.extend(query);
        let q = sorted_query(&merged);
        if !q.is_empty() {
            base.push('?');
            base.push_str(&q);
        }
    } else {
        let q = sorted_query(&query);
        if !q.is_empty() || !body.is_empty() {
            base.push('?');
            base.push_str(&q);
        }
        if !q.is_empty() && !body.is_empty() {
            base.push('.');
        }
        base.push_str(&sorted_params(body));
    }
    base
}

fn hmac_b64(token: &str, base: &str, nonce: &str) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).ok()?;
    mac.update(base.as_bytes());
    mac.update(b".");
    mac.update(nonce.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The string Plivo signs for `method` `url` with these body (POST) or extra (GET) parameters,
/// before `"." + nonce` is appended. `None` when `url` has no `scheme://`.
pub fn signature_base(method: &str, url: &str, params: &[(&str, &str)]) -> Option<String> {
    let parts = split_url(url)?;
    let body = params_from_pairs(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Some(base_string(
        method.eq_ignore_ascii_case("GET"),
        &parts,
        parts.netloc,
        &body,
    ))
}

/// Compute `X-Plivo-Signature-V3` for a request, for tests and `vaani webhook sign`.
///
/// `params` are the decoded form parameters (POST body, or extra GET parameters); the URL's
/// own query is taken from `url`. Returns an empty string when `url` is not absolute.
pub fn sign_v3(
    method: &str,
    url: &str,
    params: &[(&str, &str)],
    nonce: &str,
    token: &str,
) -> String {
    signature_base(method, url, params)
        .and_then(|base| hmac_b64(token, &base, nonce))
        .unwrap_or_default()
}

/// The decoded body parameters of a webhook, for signing.
fn body_params(req: &WebhookRequest) -> Result<ParamMap, VerifyError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParamMap::new());
    }
    let ct = crate::common::media_type(req.content_type());
    if ct.contains("json") || (ct.is_empty() && crate::common::looks_like_json(&req.body)) {
        let v: serde_json::Value =
            serde_json::from_slice(&req.body).map_err(|_| VerifyError::Malformed {
                what: "body",
                detail: "invalid JSON".into(),
            })?;
        let serde_json::Value::Object(obj) = v else {
            return Err(VerifyError::Malformed {
                what: "body",
                detail: "JSON body is not an object".into(),
            });
        };
        return Ok(params_from_json(&obj));
    }
    if ct.is_empty() || ct == "application/x-www-form-urlencoded" || ct == "text/plain" {
        return Ok(params_from_pairs(
            form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())),
        ));
    }
    Err(VerifyError::Malformed {
        what: "body",
        detail: format!("unsupported content type {ct:?}"),
    })
}

fn header_matches(header: &str, expected: &str) -> bool {
    // No early exit: every element is compared.
    header
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .fold(false, |hit, s| {
            ct_eq(s.as_bytes(), expected.as_bytes()) | hit
        })
}

/// Verify `X-Plivo-Signature-V3` (and `X-Plivo-Signature-Ma-V3` when a main-account token is
/// configured) against `cfg.secret` / `cfg.main_account_secret`.
pub fn verify(req: &WebhookRequest, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    let nonce = req
        .header("x-plivo-signature-v3-nonce")
        .ok_or(VerifyError::MissingHeader("X-Plivo-Signature-V3-Nonce"))?;
    let v3 = req.header("x-plivo-signature-v3");
    let ma = cfg
        .main_account_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|secret| req.header("x-plivo-signature-ma-v3").map(|h| (secret, h)));
    if v3.is_none() && ma.is_none() {
        return Err(VerifyError::MissingHeader("X-Plivo-Signature-V3"));
    }
    if cfg.secret.is_empty() && ma.is_none() {
        return Err(VerifyError::BadKey("empty Plivo auth token".into()));
    }
    let parts = split_url(&req.url).ok_or_else(|| VerifyError::Malformed {
        what: "url",
        detail: "not an absolute URL".into(),
    })?;
    let body = body_params(req)?;
    let is_get = req.method == http::Method::GET;

    let mut netlocs = vec![parts.netloc.to_string()];
    netlocs.extend(netloc_port_variant(&parts.scheme, parts.netloc));

    let mut ok = false;
    for netloc in &netlocs {
        let base = base_string(is_get, &parts, netloc, &body);
        if let Some(header) = v3 {
            if !cfg.secret.is_empty() {
                if let Some(sig) = hmac_b64(&cfg.secret, &base, nonce) {
                    ok |= header_matches(header, &sig);
                }
            }
        }
        if let Some((secret, header)) = ma {
            if let Some(sig) = hmac_b64(secret, &base, nonce) {
                ok |= header_matches(header, &sig);
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing (helpers shared with exotel.rs)
// ---------------------------------------------------------------------------------------------

/// Longest provider call id / our call id we accept.
const ID_MAX: usize = 128;

/// A provider's call id: 1–128 printable ASCII characters, no spaces.
pub(crate) fn is_provider_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_MAX && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Our call id: 1–128 characters of `[A-Za-z0-9._~-]` (URL-unreserved, so it survives query
/// strings and custom parameters untouched).
pub(crate) fn is_call_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_MAX && s.bytes().all(is_unreserved)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// The provider call id field, required and sane.
pub(crate) fn required_id(
    f: &Fields,
    field: &'static str,
    names: &[&str],
) -> Result<String, ParseError> {
    let v = f.get(names).ok_or(ParseError::MissingField(field))?.trim();
    if !is_provider_id(v) {
        return Err(ParseError::BadValue {
            field,
            value: v.chars().take(64).collect(),
        });
    }
    Ok(v.to_string())
}

/// An explicit `vaani_call_id` value: must look like one of ours.
pub(crate) fn checked_call_id(v: &str) -> Result<String, ParseError> {
    let v = v.trim();
    if is_call_id(v) {
        Ok(v.to_string())
    } else {
        Err(ParseError::BadValue {
            field: vaani_core::answer::CALL_ID_PARAM,
            value: v.chars().take(64).collect(),
        })
    }
}

/// `vaani_call_id` from the callback URL's query string, when present.
pub(crate) fn call_id_from_query(url_query: Option<&str>) -> Result<Option<String>, ParseError> {
    let Some(q) = url_query else { return Ok(None) };
    let qf = Fields::from_form(q.as_bytes());
    qf.get(&[vaani_core::answer::CALL_ID_PARAM])
        .map(checked_call_id)
        .transpose()
}

/// Treat the literal strings some providers send for "nothing" as absent.
pub(crate) fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| {
        !s.is_empty() && !s.eq_ignore_ascii_case("null") && !s.eq_ignore_ascii_case("none")
    })
}

pub(crate) fn opt_u64(
    f: &Fields,
    field: &'static str,
    names: &[&str],
) -> Result<Option<u64>, ParseError> {
    present(f.get(names))
        .map(|v| parse_u64(field, v))
        .transpose()
}

pub(crate) fn opt_decimal(
    f: &Fields,
    field: &'static str,
    names: &[&str],
) -> Result<Option<Decimal>, ParseError> {
    present(f.get(names))
        .map(|v| parse_decimal(field, v))
        .transpose()
}

/// A timestamp field (naive values taken as IST); `None` when absent or the Unix epoch, which
/// Exotel sends as a placeholder (`1970-01-01 05:30:00`) for "not yet known".
pub(crate) fn opt_time(
    f: &Fields,
    field: &'static str,
    names: &[&str],
) -> Result<Option<DateTime<Utc>>, ParseError> {
    let Some(v) = present(f.get(names)) else {
        return Ok(None);
    };
    let t = parse_time(field, v, IST)?;
    Ok((t.timestamp() > 86_400).then_some(t))
}

/// Whole seconds from `a` to `b`, when `b` is not before `a`.
pub(crate) fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> Option<u64> {
    u64::try_from((b - a).num_seconds()).ok()
}

pub(crate) fn phone(f: &Fields, names: &[&str]) -> Option<String> {
    present(f.get(names)).and_then(phone_or_raw)
}

fn map_status(s: &str) -> Option<CallStatus> {
    match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "queued" | "initiated" => Some(CallStatus::Initiated),
        "ringing" => Some(CallStatus::Ringing),
        "in-progress" | "answered" => Some(CallStatus::InProgress),
        "completed" => Some(CallStatus::Completed),
        "busy" => Some(CallStatus::Busy),
        "failed" => Some(CallStatus::Failed),
        // Plivo: `timeout` is the ring timeout expiring, `no-answer` the callee not picking up.
        "timeout" | "no-answer" | "noanswer" => Some(CallStatus::NoAnswer),
        "cancel" | "canceled" | "cancelled" => Some(CallStatus::Canceled),
        _ => None,
    }
}

fn map_direction(s: &str) -> Option<Direction> {
    match s.trim().to_ascii_lowercase().as_str() {
        "inbound" | "incoming" => Some(Direction::Inbound),
        "outbound" | "outgoing" => Some(Direction::Outbound),
        _ => None,
    }
}

/// Percent-decode a value (SIP header values arrive percent-encoded, see the module docs).
fn percent_decode(s: &str) -> String {
    // form_urlencoded would turn '+' into ' '; our ids never contain '+', and a '+' in a
    // hostile value stays harmless because the result is validated afterwards.
    form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Parse a Plivo answer, ring, hangup, machine-detection or stream-status callback (form or
/// JSON) into a [`CallEvent`].
pub fn parse(
    ct: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    let f = Fields::from_body(ct, body)?;
    let uuid = required_id(&f, "CallUUID", &["CallUUID"])?;
    let mut ev = CallEvent::new(Provider::Plivo, uuid);
    ev.raw = f.raw();

    ev.call_id = match call_id_from_query(url_query)? {
        Some(id) => Some(id),
        None => match present(f.get(&[vaani_core::answer::CALL_ID_PARAM])) {
            Some(v) => Some(checked_call_id(v)?),
            // `X-PH-Vaanicallid` (ours), also matches `X-PH-vaani_call_id` / `X-PH-Vaani-Call-Id`
            // because field names are compared without case, `-` or `_`.
            None => present(f.get(&["X-PH-Vaanicallid"]))
                .map(|v| checked_call_id(&percent_decode(v)))
                .transpose()?,
        },
    };

    ev.status = present(f.get(&["CallStatus"])).and_then(map_status);
    ev.direction = present(f.get(&["Direction"])).and_then(map_direction);
    ev.from = phone(&f, &["From"]);
    ev.to = phone(&f, &["To"]);

    let start = opt_time(&f, "StartTime", &["StartTime"])?;
    let answer = opt_time(&f, "AnswerTime", &["AnswerTime"])?;
    let end = opt_time(&f, "EndTime", &["EndTime"])?;

    ev.duration_s = match opt_u64(&f, "Duration", &["Duration"])? {
        Some(d) => Some(d),
        None => match (answer, end) {
            (Some(a), Some(e)) => secs_between(a, e),
            _ => None,
        },
    };
    // The docs call BillDuration "the billed duration", while the Call object separates
    // bill_duration (seconds talked) from billed_duration (rounded). Rounding up to the 60 s
    // pulse is right in both readings (it is idempotent on an already rounded value).
    // Without BillDuration, bill the talk time, and nothing for a call that was never answered.
    let unanswered = matches!(
        ev.status,
        Some(CallStatus::Busy | CallStatus::NoAnswer | CallStatus::Failed | CallStatus::Canceled)
    );
    ev.billed_duration_s = match opt_u64(&f, "BillDuration", &["BillDuration"])? {
        Some(b) => Some(pulse_round(b, BILLING_PULSE_S)),
        None if unanswered => ev.duration_s.map(|_| 0),
        None => ev.duration_s.map(|d| pulse_round(d, BILLING_PULSE_S)),
    };

    ev.price = opt_decimal(&f, "TotalCost", &["TotalCost", "TotalAmount"])?;
    if ev.price.is_some() {
        ev.currency = Some(
            present(f.get(&["Currency", "TotalCostCurrency"]))
                .unwrap_or("USD")
                .to_ascii_uppercase(),
        );
    }
    ev.recording_url = present(f.get(&["RecordUrl", "RecordingUrl"])).map(str::to_string);
    ev.answered_by =
        present(f.get(&["Machine"])).and_then(|m| match m.to_ascii_lowercase().as_str() {
            "true" => Some("machine".to_string()),
            "false" => Some("human".to_string()),
            _ => None,
        });
    ev.occurred_at = end.or_else(|| match (start, answer) {
        (Some(s), Some(a)) => Some(s.max(a)),
        (s, a) => s.or(a),
    });
    Ok(ev)
}

// ---------------------------------------------------------------------------------------------
// Answer documents
// ---------------------------------------------------------------------------------------------

fn xml_err(e: std::io::Error) -> RenderError {
    RenderError::Xml(e.to_string())
}

/// Characters XML 1.0 can carry (anything else is removed from spoken text).
fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || c >= '\u{10000}'
}

pub(crate) fn xml_clean(s: &str) -> String {
    s.chars().filter(|c| xml_char_ok(*c)).collect()
}

/// Refuse an id or token that cannot travel unencoded-ambiguous (see module docs).
pub(crate) fn check_unreserved(what: &'static str, v: &str) -> Result<(), RenderError> {
    if v.is_empty() || !v.bytes().all(is_unreserved) {
        return Err(RenderError::Invalid {
            what,
            detail: "must be non-empty and use only A-Z a-z 0-9 - _ . ~".into(),
        });
    }
    Ok(())
}

/// The media-stream WebSocket URL with our call id and media token as query parameters, for
/// providers whose stream start carries no custom parameters of ours (Plivo, Exotel). Both
/// values must be URL-unreserved so they survive every provider's URL handling unescaped.
pub(crate) fn stream_url_with_ids(url: &str, plan: &AnswerPlan) -> Result<String, RenderError> {
    check_ws_url("stream URL", url)?;
    check_unreserved("call id", &plan.call_id)?;
    check_unreserved("media token", &plan.token)?;
    Ok(append_query(
        url.trim(),
        &[
            (vaani_core::answer::CALL_ID_PARAM, &plan.call_id),
            (vaani_core::answer::TOKEN_PARAM, &plan.token),
        ],
    ))
}

/// A URL with the given query parameters appended (existing query kept).
pub(crate) fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, frag) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let extra = ser.finish();
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!("{base}{sep}{extra}");
    if let Some(f) = frag {
        out.push('#');
        out.push_str(f);
    }
    out
}

pub(crate) fn check_ws_url(what: &'static str, url: &str) -> Result<(), RenderError> {
    let lower = url.trim().to_ascii_lowercase();
    let scheme_ok = lower.starts_with("wss://") || lower.starts_with("ws://");
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError::Invalid {
            what,
            detail: "must be a ws:// or wss:// URL".into(),
        });
    }
    Ok(())
}

/// Percent-encode every byte outside `[A-Za-z0-9]` (Plivo SIP header value rules).
fn sip_header_value(what: &'static str, v: &str) -> Result<String, RenderError> {
    check_unreserved(what, v)?;
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > SIP_HEADER_VALUE_MAX {
        return Err(RenderError::Invalid {
            what,
            detail: format!(
                "{} characters once encoded; Plivo allows {SIP_HEADER_VALUE_MAX}",
                out.len()
            ),
        });
    }
    Ok(out)
}

fn check_sip_uri(uri: &str) -> Result<(), RenderError> {
    let lower = uri.to_ascii_lowercase();
    let ok = (lower.starts_with("sip:") || lower.starts_with("sips:"))
        && uri.len() > 4
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','));
    if ok {
        Ok(())
    } else {
        Err(RenderError::Invalid {
            what: "SIP URI",
            detail: "must be a sip: or sips: URI".into(),
        })
    }
}

fn check_language(lang: &str) -> Result<(), RenderError> {
    if lang.is_empty()
        || lang.len() > 16
        || !lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(RenderError::Invalid {
            what: "language",
            detail: "expected a BCP-47 tag such as en-IN".into(),
        });
    }
    Ok(())
}

/// Render the Plivo XML answer document for `plan`.
pub fn render_answer(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(xml_err)?;
    match &plan.action {
        AnswerAction::ConnectSip { uri } => {
            check_sip_uri(uri)?;
            let tenant = if plan.tenant.is_empty() {
                String::new()
            } else {
                format!(
                    "{SIP_HEADER_TENANT}={},",
                    sip_header_value("tenant", &plan.tenant)?
                )
            };
            let headers = format!(
                "{tenant}{SIP_HEADER_CALL_ID}={},{SIP_HEADER_TOKEN}={}",
                sip_header_value("call id", &plan.call_id)?,
                sip_header_value("media token", &plan.token)?,
            );
            w.create_element("Response")
                .write_inner_content(|w| {
                    w.create_element("Dial").write_inner_content(|w| {
                        w.create_element("User")
                            .with_attribute(("sipHeaders", headers.as_str()))
                            .write_text_content(BytesText::new(uri))?;
                        Ok(())
                    })?;
                    Ok(())
                })
                .map_err(xml_err)?;
        }
        AnswerAction::ConnectStream { url } => {
            let url = stream_url_with_ids(url, plan)?;
            w.create_element("Response")
                .write_inner_content(|w| {
                    w.create_element("Stream")
                        .with_attribute(("bidirectional", "true"))
                        .with_attribute(("keepCallAlive", "true"))
                        .with_attribute(("contentType", "audio/x-mulaw;rate=8000"))
                        .write_text_content(BytesText::new(&url))?;
                    Ok(())
                })
                .map_err(xml_err)?;
        }
        AnswerAction::PlayAndHangup { message, language } => {
            let text = xml_clean(message);
            if text.trim().is_empty() {
                return Err(RenderError::Invalid {
                    what: "message",
                    detail: "empty".into(),
                });
            }
            if let Some(lang) = language {
                check_language(lang)?;
            }
            w.create_element("Response")
                .write_inner_content(|w| {
                    let speak = w.create_element("Speak");
                    let speak = match language {
                        Some(lang) => speak.with_attribute(("language", lang.as_str())),
                        None => speak,
                    };
                    speak.write_text_content(BytesText::new(&text))?;
                    w.create_element("Hangup").write_empty()?;
                    Ok(())
                })
                .map_err(xml_err)?;
        }
        AnswerAction::RejectBusy => {
            w.create_element("Response")
                .write_inner_content(|w| {
                    w.create_element("Hangup")
                        .with_attribute(("reason", "busy"))
                        .write_empty()?;
                    Ok(())
                })
                .map_err(xml_err)?;
        }
    }
    let body = String::from_utf8(w.into_inner()).map_err(|e| RenderError::Xml(e.to_string()))?;
    Ok(AnswerDocument {
        content_type: "application/xml",
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// Send a request that must not be replayed blindly (it creates something and the provider
/// has no idempotency key): retried only when the provider answered 429, i.e. refused it.
pub(crate) async fn send_unreplayable<F>(
    once: &RestClient,
    max_retries: u32,
    build: F,
) -> Result<RestResponse, RestError>
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
{
    let mut attempt = 0u32;
    loop {
        match once.send(&build).await {
            Err(RestError::Status { status: 429, .. }) if attempt < max_retries => {
                let delay = backoff_delay(attempt, once.cfg.backoff_base, once.cfg.backoff_max);
                tracing::warn!(
                    provider = once.provider,
                    attempt,
                    ?delay,
                    "rate limited; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `url` with `vaani_call_id=<call_id>` added to its query, unless it already has one.
pub(crate) fn tag_callback_url(url: &str, call_id: &str) -> Result<String, RestError> {
    let parsed =
        url::Url::parse(url).map_err(|_| RestError::Invalid(format!("not a URL: {url:?}")))?;
    if !matches!(parsed.scheme(), "http" | "https" | "ws" | "wss") {
        return Err(RestError::Invalid(format!(
            "unsupported URL scheme in {url:?}"
        )));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| k == vaani_core::answer::CALL_ID_PARAM)
    {
        return Ok(url.to_string());
    }
    Ok(append_query(
        url,
        &[(vaani_core::answer::CALL_ID_PARAM, call_id)],
    ))
}

/// A path segment we put provider ids into: refuse anything that could change the path.
pub(crate) fn path_id(id: &str) -> Result<&str, RestError> {
    if !id.is_empty()
        && id.len() <= ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(RestError::Invalid(
            "provider call id has unexpected characters".into(),
        ))
    }
}

/// Plivo REST call control (Call API v1).
///
/// `RestConfig.account` is the Auth ID, `token` the Auth Token (HTTP Basic `auth_id:token`).
///
/// Plivo has **no idempotency key** on the Call API: [`OutboundCall::idempotency_key`] is not
/// sent, and `originate`/`redirect` are retried only on 429 (see the module docs).
#[derive(Debug, Clone)]
pub struct PlivoClient {
    rest: RestClient,
    once: RestClient,
}

#[derive(Deserialize)]
struct CallFired {
    request_uuid: serde_json::Value,
}

impl PlivoClient {
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        let once_cfg = RestConfig {
            max_retries: 0,
            ..cfg.clone()
        };
        Ok(PlivoClient {
            rest: RestClient::new(PROVIDER, cfg)?,
            once: RestClient::new(PROVIDER, once_cfg)?,
        })
    }

    fn account_path(&self) -> Result<String, RestError> {
        let auth_id = path_id(&self.rest.cfg.account)
            .map_err(|_| RestError::Invalid("Plivo auth id has unexpected characters".into()))?;
        Ok(format!("/v1/Account/{auth_id}/Call/"))
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.basic_auth(&self.rest.cfg.account, Some(&self.rest.cfg.token))
    }
}

#[async_trait]
impl CallControl for PlivoClient {
    /// `POST /v1/Account/{auth_id}/Call/`. Returns Plivo's `request_uuid`: a **request** id.
    /// The call's `CallUUID` arrives with the first callback, which also carries this value
    /// as `RequestUUID`; the DELETE endpoint accepts either (it cancels a queued request).
    async fn originate(&self, call: &OutboundCall) -> Result<ProviderCallRef, RestError> {
        if !is_call_id(&call.call_id) {
            return Err(RestError::Invalid(
                "call id must use only A-Z a-z 0-9 - _ . ~".into(),
            ));
        }
        // `<` separates destinations in Plivo's `to` (bulk calls): one call means one callee.
        for (what, v) in [("from", &call.from), ("to", &call.to)] {
            if v.trim().is_empty() || v.contains('<') || v.chars().any(char::is_control) {
                return Err(RestError::Invalid(format!("unusable {what} number")));
            }
        }
        let answer_url = tag_callback_url(&call.answer_url, &call.call_id)?;
        let status_url = tag_callback_url(&call.status_url, &call.call_id)?;
        let mut body = serde_json::json!({
            "from": call.from,
            "to": call.to,
            "answer_url": answer_url,
            "answer_method": "POST",
            "hangup_url": status_url,
            "hangup_method": "POST",
            "ring_url": status_url,
            "ring_method": "POST",
            "ring_timeout": call.ring_timeout_s,
        });
        if call.machine_detection {
            body["machine_detection"] = "true".into();
            body["machine_detection_url"] = status_url.clone().into();
            body["machine_detection_method"] = "POST".into();
        }
        let url = self.rest.url(&self.account_path()?);
        let resp = send_unreplayable(&self.once, self.rest.cfg.max_retries, |c| {
            self.auth(c.post(&url)).json(&body)
        })
        .await?;
        let fired: CallFired =
            serde_json::from_slice(&resp.body).map_err(|e| RestError::Decode {
                provider: PROVIDER,
                detail: e.to_string(),
            })?;
        // Plivo documents a string; a bulk call (several `to`) answers with a list.
        let id = match &fired.request_uuid {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) if a.len() == 1 => a
                .first()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        if !is_provider_id(&id) {
            return Err(RestError::Decode {
                provider: PROVIDER,
                detail: "no usable request_uuid".into(),
            });
        }
        Ok(ProviderCallRef {
            provider_call_id: id,
        })
    }

    /// `DELETE /v1/Account/{auth_id}/Call/{uuid}/` (204). A 404 means the call already ended.
    async fn hangup(&self, provider_call_id: &str) -> Result<(), RestError> {
        let id = path_id(provider_call_id)?;
        let url = self.rest.url(&format!("{}{id}/", self.account_path()?));
        match self.rest.send(|c| self.auth(c.delete(&url))).await {
            Ok(_) | Err(RestError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/Account/{auth_id}/Call/{uuid}/` with `legs=aleg`, `aleg_url` (202): the call
    /// fetches new XML from the URL. Plivo's REST API cannot transfer straight to a number;
    /// point a URL at XML with `<Dial>` instead ([`RedirectTarget::Transfer`] is refused).
    async fn redirect(
        &self,
        provider_call_id: &str,
        target: &RedirectTarget,
    ) -> Result<(), RestError> {
        let id = path_id(provider_call_id)?;
        let aleg_url = match target {
            RedirectTarget::Url(u) => u,
            RedirectTarget::Transfer(_) => {
                return Err(RestError::Unsupported {
                    provider: PROVIDER,
                    what: "transfer to a number over REST (redirect to a URL returning <Dial>)",
                })
            }
        };
        url::Url::parse(aleg_url)
            .map_err(|_| RestError::Invalid("redirect URL is not a URL".into()))?;
        let body =
            serde_json::json!({ "legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST" });
        let url = self.rest.url(&format!("{}{id}/", self.account_path()?));
        send_unreplayable(&self.once, self.rest.cfg.max_retries, |c| {
            self.auth(c.post(&url)).json(&body)
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_split_keeps_port_and_path() {
        let p = split_url("HTTPS://Ex.com:8443/a/b?x=1#frag");
        assert!(p.is_some());
        if let Some(p) = p {
            assert_eq!(p.scheme, "https");
            assert_eq!(p.netloc, "Ex.com:8443");
            assert_eq!(p.path, "/a/b");
            assert_eq!(p.query, "x=1");
        }
        assert!(split_url("example.com/x").is_none());
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            netloc_port_variant("https", "ex.com"),
            Some("ex.com:443".into())
        );
        assert_eq!(
            netloc_port_variant("https", "ex.com:443"),
            Some("ex.com".into())
        );
        assert_eq!(
            netloc_port_variant("http", "u:p@ex.com:80"),
            Some("u:p@ex.com".into())
        );
        assert_eq!(netloc_port_variant("https", "ex.com:8443"), None);
        assert_eq!(
            netloc_port_variant("https", "[::1]"),
            Some("[::1]:443".into())
        );
        assert_eq!(netloc_port_variant("ftp", "ex.com"), None);
    }

    #[test]
    fn json_params_recurse() {
        let v = serde_json::json!({"b": {"y": "2", "x": 1}, "a": [true, "z"]});
        let m = match &v {
            serde_json::Value::Object(o) => params_from_json(o),
            _ => ParamMap::new(),
        };
        assert_eq!(sorted_params(&m), "atrueazbx1y2");
    }

    #[test]
    fn sip_header_values_are_percent_encoded() {
        assert_eq!(
            sip_header_value("x", "ab-c_1.2").ok(),
            Some("ab%2Dc%5F1%2E2".to_string())
        );
        assert!(sip_header_value("x", "a b").is_err());
        assert!(sip_header_value("x", &"-".repeat(41)).is_err());
        assert_eq!(percent_decode("ab%2Dc%5F1%2E2"), "ab-c_1.2");
    }

    #[test]
    fn append_query_variants() {
        assert_eq!(append_query("wss://h/p", &[("a", "1")]), "wss://h/p?a=1");
        assert_eq!(
            append_query("wss://h/p?x=2", &[("a", "1")]),
            "wss://h/p?x=2&a=1"
        );
        assert_eq!(
            append_query("wss://h/p?", &[("a", "1 2")]),
            "wss://h/p?a=1+2"
        );
        assert_eq!(
            append_query("https://h/p#f", &[("a", "1")]),
            "https://h/p?a=1#f"
        );
    }
}
