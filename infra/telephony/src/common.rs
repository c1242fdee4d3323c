//! Types and helpers shared by the provider modules: the raw webhook request, verification
//! settings and errors, and [`Fields`], a case- and separator-insensitive view of a webhook's
//! form or JSON fields.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use ipnet::IpNet;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// A webhook exactly as it arrived, before anything trusts it.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: Method,
    /// The **public** URL the provider requested (scheme, host, optional port, path, query),
    /// not the internal one API Gateway or a proxy rewrote it to.
    pub url: String,
    pub headers: HeaderMap,
    /// Raw body bytes (already base64-decoded when API Gateway set `isBase64Encoded`).
    pub body: Bytes,
    /// The peer address, for allowlists (API Gateway `requestContext.http.sourceIp`).
    pub source_ip: Option<IpAddr>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The query string of `url`, if any.
    pub fn query(&self) -> Option<&str> {
        let q = self.url.split_once('?')?.1;
        Some(q.split_once('#').map_or(q, |(q, _)| q))
    }
}

/// Exotel does not sign webhooks; these are the checks a tenant can configure instead.
#[derive(Debug, Clone, Default)]
pub struct ExotelAuth {
    /// Expected HTTP Basic user name (the API key), when Basic auth is used.
    pub basic_user: Option<String>,
    /// Allowed source networks. Empty: no IP check.
    pub allow_cidrs: Vec<IpNet>,
}

/// Everything needed to verify one tenant's webhooks from one provider.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Auth token (Twilio, SignalWire signing key, Plivo, Exotel URL/Basic token), or for Telnyx
    /// the account's Ed25519 public key in base64.
    pub secret: String,
    /// Plivo main-account auth token, checked against `X-Plivo-Signature-Ma-V3` when set.
    pub main_account_secret: Option<String>,
    pub exotel: ExotelAuth,
    /// Telnyx: how old a `telnyx-timestamp` may be (either direction). Default 5 minutes.
    pub replay_window: Duration,
    /// Current time, passed in so verification is testable.
    pub now: DateTime<Utc>,
}

impl VerifyConfig {
    pub fn new(secret: impl Into<String>, now: DateTime<Utc>) -> Self {
        VerifyConfig {
            secret: secret.into(),
            main_account_secret: None,
            exotel: ExotelAuth::default(),
            replay_window: Duration::from_secs(300),
            now,
        }
    }
}

/// Why a webhook failed verification. The `Display` text never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("signature mismatch")]
    SignatureMismatch,
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("timestamp outside the replay window ({age_s} s old, window {window_s} s)")]
    Stale { age_s: i64, window_s: u64 },
    #[error("body hash does not match bodySHA256")]
    BodyHashMismatch,
    #[error("no credentials presented")]
    NoCredentials,
    #[error("credentials rejected")]
    BadCredentials,
    #[error("source address {0} not in the allowlist")]
    SourceNotAllowed(String),
    #[error("source address unknown and an allowlist is configured")]
    SourceUnknown,
    #[error("bad verification key: {0}")]
    BadKey(String),
}

impl VerifyError {
    /// HTTP status to answer with: 403 for a refused source, 401 for everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            VerifyError::SourceNotAllowed(_) | VerifyError::SourceUnknown => 403,
            _ => 401,
        }
    }

    /// Stable error code for logs and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_signature",
            VerifyError::SignatureMismatch => "bad_signature",
            VerifyError::Malformed { .. } => "malformed_signature",
            VerifyError::Stale { .. } => "stale_timestamp",
            VerifyError::BodyHashMismatch => "bad_body_hash",
            VerifyError::NoCredentials => "missing_credentials",
            VerifyError::BadCredentials => "bad_credentials",
            VerifyError::SourceNotAllowed(_) | VerifyError::SourceUnknown => "source_not_allowed",
            VerifyError::BadKey(_) => "bad_verification_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid {0}")]
    Syntax(&'static str),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field} has an unusable value {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("unsupported content type {0:?}")]
    ContentType(String),
    #[error("not a call webhook: {0}")]
    NotACallEvent(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("XML writer failed: {0}")]
    Xml(String),
    #[error("{provider} cannot {what}")]
    Unsupported {
        provider: &'static str,
        what: &'static str,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// A rendered answer document, ready to return as the HTTP response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerDocument {
    pub content_type: &'static str,
    pub body: String,
}

/// Fields of a webhook, from a form body, a query string or a JSON object, looked up by name
/// without regard to case, `_` or `-` (providers and their SDKs disagree: `CallSid`, `callsid`,
/// `call_sid`). The original names and values are kept for [`vaani_events::CallEvent::raw`].
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
    json: Option<Value>,
}

/// Lowercase and drop `_`, `-`, `[`, `]` and spaces, so `Call_Sid`, `callSid` and `CALL-SID` meet.
pub fn norm_key(k: &str) -> String {
    k.chars()
        .filter(|c| !matches!(c, '_' | '-' | '[' | ']' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `norm_key(a) == norm_key(b)` without allocating: lookups run for every field of every
/// webhook, so this is on the hot path.
pub fn same_key(a: &str, b: &str) -> bool {
    fn chars(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | '[' | ']' | ' '))
            .flat_map(char::to_lowercase)
    }
    chars(a).eq(chars(b))
}

/// The media type of a `Content-Type` value, lowercased and without parameters
/// (`application/json; charset=utf-8` → `application/json`); empty when absent.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a body's first non-blank byte opens a JSON object.
pub fn looks_like_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

impl Fields {
    /// Parse a body by content type; with no content type, JSON if it looks like JSON, else form.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Fields, ParseError> {
        let ct = media_type(content_type);
        if ct.contains("json") || (ct.is_empty() && looks_like_json(body)) {
            Fields::from_json(body)
        } else if ct.is_empty() || ct == "application/x-www-form-urlencoded" || ct == "text/plain" {
            Ok(Fields::from_form(body))
        } else {
            Err(ParseError::ContentType(ct))
        }
    }

    pub fn from_form(body: &[u8]) -> Fields {
        Fields {
            pairs: form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            json: None,
        }
    }

    pub fn from_json(body: &[u8]) -> Result<Fields, ParseError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| ParseError::Syntax("JSON"))?;
        let Value::Object(map) = &v else {
            return Err(ParseError::Syntax("JSON object"));
        };
        let pairs = map
            .iter()
            .filter_map(|(k, v)| scalar_string(v).map(|s| (k.clone(), s)))
            .collect();
        Ok(Fields {
            pairs,
            json: Some(v),
        })
    }

    /// Add query-string pairs (e.g. `vaani_call_id` on a callback URL) after the body's own.
    pub fn extend_query(&mut self, query: &str) {
        self.pairs.extend(
            form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }

    /// First non-empty value of any of `names` (matched as by [`norm_key`]).
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.pairs
                .iter()
                .find(|(k, v)| !v.trim().is_empty() && same_key(k, n))
                .map(|(_, v)| v.as_str())
        })
    }

    /// All values of `name` (repeated form keys).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| same_key(k, name))
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The parsed JSON document, when the body was JSON.
    pub fn json(&self) -> Option<&Value> {
        self.json.as_ref()
    }

    /// A JSON value by RFC 6901 pointer, when the body was JSON.
    pub fn json_pointer(&self, ptr: &str) -> Option<&Value> {
        self.json.as_ref()?.pointer(ptr)
    }

    /// Everything the provider sent: the JSON object as is, or form pairs as strings (a key
    /// repeated in the form becomes an array of its values).
    pub fn raw(&self) -> Map<String, Value> {
        if let Some(Value::Object(m)) = &self.json {
            return m.clone();
        }
        let mut m = Map::new();
        for (k, v) in &self.pairs {
            match m.get_mut(k) {
                None => {
                    m.insert(k.clone(), Value::String(v.clone()));
                }
                Some(Value::Array(a)) => a.push(Value::String(v.clone())),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(v.clone())]);
                }
            }
        }
        m
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Normalize a phone-ish string to E.164 with India as the default region; values that are
/// not phone numbers (SIP URIs, `client:alice`, `anonymous`) are returned trimmed as they came.
pub fn phone_or_raw(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Some(vaani_core::phone::normalize(s, "IN").unwrap_or_else(|_| s.to_string()))
}

/// A non-negative integer, tolerating `"12"`, `"12.0"`, `" 12 "` and JSON numbers.
pub fn parse_u64(field: &'static str, s: &str) -> Result<u64, ParseError> {
    let t = s.trim().trim_matches('"');
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(f) if (0.0..1e15).contains(&f) => Ok(f.round() as u64),
        _ => Err(ParseError::BadValue {
            field,
            value: s.to_string(),
        }),
    }
}

/// A money amount as sent (`"-0.0085"`, `"0.85"`).
pub fn parse_decimal(field: &'static str, s: &str) -> Result<Decimal, ParseError> {
    let t = s.trim();
    t.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| ParseError::BadValue {
            field,
            value: s.to_string(),
        })
}

/// Timestamps in the shapes providers send: RFC 3339, RFC 2822 (Twilio `Timestamp`),
/// `YYYY-MM-DD HH:MM:SS` (Exotel, Plivo; taken as `offset`, IST for those two), and Unix seconds
/// or milliseconds.
pub fn parse_time(
    field: &'static str,
    s: &str,
    naive_offset: chrono::FixedOffset,
) -> Result<DateTime<Utc>, ParseError> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            if let Some(d) = n.and_local_timezone(naive_offset).single() {
                return Ok(d.with_timezone(&Utc));
            }
        }
    }
    if let Ok(n) = t.parse::<i64>() {
        let ms = if n > 100_000_000_000 {
            n
        } else {
            n.saturating_mul(1000)
        };
        if let Some(d) = DateTime::from_timestamp_millis(ms) {
            return Ok(d);
        }
    }
    Err(ParseError::BadValue {
        field,
        value: s.to_string(),
    })
}

/// India Standard Time, the zone Exotel and Plivo (India) use for naive timestamps.
pub const IST: chrono::FixedOffset = match chrono::FixedOffset::east_opt(5 * 3600 + 1800) {
    Some(o) => o,
    None => panic!("IST offset is in range"),
};

/// UTC as a fixed offset, for providers whose naive timestamps are UTC.
pub const UTC: chrono::FixedOffset = match chrono::FixedOffset::east_opt(0) {
    Some(o) => o,
    None => panic!("zero offset is in range"),
};

/// Bill in whole pulses: `ceil(seconds / pulse) * pulse`, zero stays zero.
pub fn pulse_round(seconds: u64, pulse: u64) -> u64 {
    if pulse == 0 {
        return seconds;
    }
    seconds.div_ceil(pulse) * pulse
}

/// Constant-time equality for secrets and signatures.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Read a tenant's Exotel/HTTP Basic credentials from an `Authorization` header.
pub fn basic_credentials(req: &WebhookRequest) -> Option<(String, String)> {
    use base64::Engine;
    let v = req.header("authorization")?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Default timeout for provider HTTP calls.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_ignore_case_and_separators() {
        let f = Fields::from_form(b"call_sid=CA1&CALLSTATUS=completed&Empty=");
        assert_eq!(f.get(&["CallSid"]), Some("CA1"));
        assert_eq!(f.get(&["callStatus"]), Some("completed"));
        assert_eq!(f.get(&["Empty"]), None);
    }

    proptest::proptest! {
        #[test]
        fn same_key_agrees_with_norm_key(a in "[A-Za-z_ \\-\\[\\]İ]{0,12}", b in "[A-Za-z_ \\-\\[\\]İ]{0,12}") {
            proptest::prop_assert_eq!(same_key(&a, &b), norm_key(&a) == norm_key(&b));
            let shouted = a.to_ascii_uppercase().replace('_', "-");
            proptest::prop_assert!(same_key(&a, &shouted));
        }
    }

    #[test]
    fn raw_keeps_repeated_keys() {
        let f = Fields::from_form(b"a=1&a=2&b=3");
        let raw = f.raw();
        assert_eq!(raw["a"], serde_json::json!(["1", "2"]));
        assert_eq!(raw["b"], serde_json::json!("3"));
    }

    #[test]
    fn times_in_provider_shapes() {
        let utc = UTC;
        let a = parse_time("t", "Wed, 01 Jan 2025 10:00:00 +0000", utc);
        let b = parse_time("t", "2025-01-01T10:00:00Z", utc);
        let c = parse_time("t", "2025-01-01 15:30:00", IST);
        let d = parse_time("t", "1735725600", utc);
        assert!(a.is_ok());
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(c, d);
    }

    #[test]
    fn pulses() {
        assert_eq!(pulse_round(0, 60), 0);
        assert_eq!(pulse_round(1, 60), 60);
        assert_eq!(pulse_round(60, 60), 60);
        assert_eq!(pulse_round(61, 60), 120);
    }
}
