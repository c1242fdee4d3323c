//! Telnyx wire formats: Ed25519 webhook signatures, Call Control (JSON) and TeXML (form)
//! webhooks, TeXML answer documents, and Call Control REST commands.
//!
//! Sources (checked against the providers' own material):
//! - Signatures: team-telnyx/telnyx-python `src/telnyx/lib/webhook_verification.py`: headers
//!   `telnyx-signature-ed25519` (base64 of a 64-byte Ed25519 signature) and `telnyx-timestamp`
//!   (Unix seconds); the signed bytes are `"{telnyx-timestamp}|{raw body}"`; the key is the
//!   account's 32-byte public key, base64, from Mission Control; 300 s tolerance either way.
//! - Call Control webhooks: `{"data":{"event_type","id","occurred_at","payload":{…}},"meta":{…}}`
//!   (developers.telnyx.com/api-reference/callbacks/*; the SDKs' `call_hangup`,
//!   `call_machine_detection_ended`, `call_recording_saved`, `call_cost_webhook_event` models).
//!   Hang-up causes: `call_rejected`, `normal_clearing`, `originator_cancel`, `timeout`,
//!   `time_limit`, `user_busy`, `not_found`, `no_answer`, `unspecified`. There is no
//!   `call.ringing` event in Call Control.
//! - TeXML status callbacks are Twilio-compatible form posts (`CallSid`, `CallStatus`,
//!   `CallDuration`, `SequenceNumber`, `Timestamp`, …; texml-verbs/hangup "Expected callbacks").
//! - TeXML verbs: `<Connect><Stream bidirectionalMode="rtp" bidirectionalCodec=…>` with
//!   `<Parameter name value>` children (texml-verbs/connect, texml-verbs/stream), `<Say voice
//!   language>` (language only applies to `alice`/premium voices), `<Reject reason="busy">`.
//! - REST: `POST /v2/calls` (dial) and `POST /v2/calls/{call_control_id}/actions/{hangup,transfer}`
//!   with `Authorization: Bearer <API key>`; `command_id` makes a command idempotent ("Telnyx
//!   will ignore any command with the same command_id for the same call_control_id").
//! - Billing: 60/60 increments for most destinations (support.telnyx.com "Billing increments";
//!   6-second increments are no longer offered). The `call.cost` webhook carries the exact
//!   `billed_duration_secs` and `total_cost` when the application enables it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::common::*;
use crate::rest::{
    CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestClient, RestConfig, RestError,
};
use vaani_core::answer::{CALL_ID_HEADER, CALL_ID_PARAM, TENANT_HEADER, TOKEN_HEADER, TOKEN_PARAM};
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};

/// Header carrying the base64 Ed25519 signature.
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// Header carrying the Unix time (seconds) the webhook was signed at.
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// Production API base.
pub const API_BASE: &str = "https://api.telnyx.com";
/// Seconds per billing increment (60/60 for most destinations).
pub const BILLING_PULSE_S: u64 = 60;

/// Base64 that accepts input with or without `=` padding (keys pasted from a portal, SDKs that
/// strip padding); the alphabet is the standard one Telnyx uses.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); accepted so a key exported as
/// SPKI base64 works as well as the raw 32 bytes Mission Control shows.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// Verify `telnyx-signature-ed25519` over `"{telnyx-timestamp}|{body}"` with the public key in
/// `cfg.secret`, and refuse timestamps further than `cfg.replay_window` from `cfg.now` in
/// either direction (replays, and clocks that are badly off).
pub fn verify(req: &WebhookRequest, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    let sig_b64 = req
        .header(SIGNATURE_HEADER)
        .filter(|s| !s.trim().is_empty())
        .ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
    let ts_raw = req
        .header(TIMESTAMP_HEADER)
        .filter(|s| !s.trim().is_empty())
        .ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| VerifyError::Malformed {
        what: TIMESTAMP_HEADER,
        detail: "not Unix seconds".into(),
    })?;
    let age_s = cfg.now.timestamp().saturating_sub(ts);
    let window_s = cfg.replay_window.as_secs();
    if age_s.unsigned_abs() > window_s {
        return Err(VerifyError::Stale { age_s, window_s });
    }
    let key = public_key(&cfg.secret)?;
    let sig_bytes = B64_LENIENT
        .decode(sig_b64.trim())
        .map_err(|_| VerifyError::Malformed {
            what: SIGNATURE_HEADER,
            detail: "not base64".into(),
        })?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| VerifyError::Malformed {
        what: SIGNATURE_HEADER,
        detail: format!("{} bytes, expected 64", sig_bytes.len()),
    })?;
    // The timestamp is signed exactly as sent, not as we parsed it.
    let msg = signed_payload(ts_raw, &req.body);
    key.verify_strict(&msg, &sig)
        .map_err(|_| VerifyError::SignatureMismatch)
}

/// Sign `body` the way Telnyx does (for tests and local tools): base64 of the Ed25519 signature
/// of `"{timestamp}|{body}"`. Send it as `telnyx-signature-ed25519`, `timestamp` as
/// `telnyx-timestamp`.
pub fn sign(body: &[u8], timestamp: &str, signing_key: &SigningKey) -> String {
    STANDARD.encode(
        signing_key
            .sign(&signed_payload(timestamp, body))
            .to_bytes(),
    )
}

fn signed_payload(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(timestamp.len() + 1 + body.len());
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b'|');
    msg.extend_from_slice(body);
    msg
}

/// The account's public key from its base64 form. Errors never contain the key.
fn public_key(b64: &str) -> Result<VerifyingKey, VerifyError> {
    let bytes = B64_LENIENT
        .decode(b64.trim())
        .map_err(|_| VerifyError::BadKey("Telnyx public key is not base64".into()))?;
    let raw: &[u8] = match bytes.len() {
        32 => &bytes,
        44 if bytes[..12] == SPKI_ED25519_PREFIX => &bytes[12..],
        n => {
            return Err(VerifyError::BadKey(format!(
                "Telnyx public key is {n} bytes, expected 32"
            )))
        }
    };
    let arr: [u8; 32] = raw
        .try_into()
        .map_err(|_| VerifyError::BadKey("Telnyx public key has the wrong length".into()))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| VerifyError::BadKey("Telnyx public key is not an Ed25519 point".into()))
}

// ---------------------------------------------------------------------------------------------
// Webhook parsing
// ---------------------------------------------------------------------------------------------

/// Parse a Telnyx webhook: a Call Control JSON event (`{"data":{…}}`), or a TeXML status
/// callback (Twilio-style form fields, also accepted as flat JSON or in the query of a GET).
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    let fields = Fields::from_body(content_type, body)?;
    match fields.json() {
        Some(Value::Object(root)) if root.contains_key("data") => {
            parse_call_control(root, url_query)
        }
        _ => parse_texml(fields, url_query),
    }
}

fn parse_call_control(
    root: &Map<String, Value>,
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    let data = root
        .get("data")
        .and_then(Value::as_object)
        .ok_or(ParseError::MissingField("data"))?;
    let event_type =
        str_of(data, "event_type").ok_or(ParseError::MissingField("data.event_type"))?;
    if !event_type.starts_with("call.") {
        return Err(ParseError::NotACallEvent(truncate(event_type, 80)));
    }
    let payload = data
        .get("payload")
        .and_then(Value::as_object)
        .ok_or(ParseError::MissingField("data.payload"))?;
    let call_control_id =
        str_of(payload, "call_control_id").ok_or(ParseError::MissingField("call_control_id"))?;

    let mut ev = CallEvent::new(Provider::Telnyx, call_control_id);
    ev.call_id = str_of(payload, "client_state")
        .and_then(call_id_from_client_state)
        .or_else(|| call_id_from_query(url_query));
    ev.from = str_of(payload, "from").and_then(phone_or_raw);
    ev.to = str_of(payload, "to").and_then(phone_or_raw);
    ev.direction = match str_of(payload, "direction") {
        Some("incoming") => Some(Direction::Inbound),
        Some("outgoing") => Some(Direction::Outbound),
        _ => None,
    };
    ev.occurred_at = time_of(data, "occurred_at", "data.occurred_at")?;

    match event_type {
        "call.initiated" => ev.status = Some(CallStatus::Initiated),
        "call.answered" | "call.bridged" => ev.status = Some(CallStatus::InProgress),
        "call.hangup" => {
            let status = hangup_status(str_of(payload, "hangup_cause"));
            ev.status = Some(status);
            if status == CallStatus::Completed {
                let start = time_of(payload, "start_time", "start_time")?;
                let end = match time_of(payload, "end_time", "end_time")? {
                    Some(t) => Some(t),
                    None => ev.occurred_at,
                };
                if let (Some(start), Some(end)) = (start, end) {
                    let secs = whole_seconds_between(start, end);
                    ev.duration_s = Some(secs);
                    ev.billed_duration_s = Some(pulse_round(secs, BILLING_PULSE_S));
                }
            } else {
                // Busy, unanswered, canceled or failed: nobody talked and nothing is billed.
                ev.duration_s = Some(0);
                ev.billed_duration_s = Some(0);
            }
        }
        "call.machine.detection.ended" | "call.machine.premium.detection.ended" => {
            ev.answered_by = str_of(payload, "result").map(str::to_string);
        }
        "call.recording.saved" => {
            ev.recording_url = recording_url(payload, "recording_urls")
                .or_else(|| recording_url(payload, "public_recording_urls"));
        }
        "call.cost" => {
            if let Some(v) = payload.get("billed_duration_secs").and_then(scalar) {
                ev.billed_duration_s = Some(parse_u64("billed_duration_secs", &v)?);
            }
            if let Some(v) = str_of(payload, "total_cost") {
                ev.price = Some(parse_decimal("total_cost", v)?);
            }
            ev.currency = payload
                .get("cost_parts")
                .and_then(Value::as_array)
                .and_then(|parts| {
                    parts
                        .iter()
                        .filter_map(Value::as_object)
                        .find_map(|p| str_of(p, "currency"))
                })
                .map(str::to_string);
        }
        _ => {}
    }
    ev.raw = raw_without_delivery_meta(root);
    Ok(ev)
}

/// Telnyx's `hangup_cause` as our status. `normal_clearing` (also when the call was never
/// answered), `time_limit` and `unspecified` end a call as completed; a cause we do not know
/// is a failure.
fn hangup_status(cause: Option<&str>) -> CallStatus {
    match cause.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("normal_clearing") | Some("time_limit") | Some("unspecified") => {
            CallStatus::Completed
        }
        Some("user_busy") => CallStatus::Busy,
        Some("timeout") | Some("no_answer") => CallStatus::NoAnswer,
        Some("originator_cancel") => CallStatus::Canceled,
        Some(_) => CallStatus::Failed,
    }
}

/// Talk time in whole seconds, rounding a started second up (never negative).
fn whole_seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    let ms = (end - start).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000)
}

fn recording_url(payload: &Map<String, Value>, key: &str) -> Option<String> {
    let urls = payload.get(key)?.as_object()?;
    str_of(urls, "mp3")
        .or_else(|| str_of(urls, "wav"))
        .map(str::to_string)
}

/// The event as Telnyx sent it, less the delivery bookkeeping in `meta`: `attempt` grows on
/// every retry and `delivered_to` changes when Telnyx falls over to the failover URL. Both
/// would give one event several [`CallEvent::dedupe_id`]s (which only skips a top-level
/// `attempt`); `data.id` and the payload are what identify the event.
fn raw_without_delivery_meta(root: &Map<String, Value>) -> Map<String, Value> {
    let mut raw = root.clone();
    let meta_empty = match raw.get_mut("meta") {
        Some(Value::Object(meta)) => {
            meta.remove("attempt");
            meta.remove("delivered_to");
            meta.is_empty()
        }
        _ => false,
    };
    if meta_empty {
        raw.remove("meta");
    }
    raw
}

fn parse_texml(fields: Fields, url_query: Option<&str>) -> Result<CallEvent, ParseError> {
    let body_is_empty = fields.pairs().is_empty() && fields.json().is_none();
    let mut fields = fields;
    // A GET callback carries its fields in the query; a POST carries them in the body and our
    // own `vaani_call_id` in the query.
    let raw = match (body_is_empty, url_query) {
        (true, Some(q)) => Fields::from_form(q.as_bytes()).raw(),
        _ => fields.raw(),
    };
    if let Some(q) = url_query {
        fields.extend_query(q);
    }
    let call_sid = fields
        .get(&["CallSid"])
        .ok_or(ParseError::MissingField("CallSid"))?;
    let mut ev = CallEvent::new(Provider::Telnyx, call_sid.trim());
    ev.call_id = fields.get(&[CALL_ID_PARAM]).map(|s| s.trim().to_string());
    ev.status = match fields.get(&["CallStatus"]) {
        Some(s) => Some(texml_status(s)?),
        None => None,
    };
    ev.direction = fields.get(&["Direction"]).and_then(|d| {
        let d = d.trim().to_ascii_lowercase();
        if d == "inbound" {
            Some(Direction::Inbound)
        } else if d.starts_with("outbound") {
            Some(Direction::Outbound)
        } else {
            None
        }
    });
    ev.from = fields.get(&["From"]).and_then(phone_or_raw);
    ev.to = fields.get(&["To"]).and_then(phone_or_raw);
    if ev.status.is_some_and(CallStatus::is_terminal) {
        if let Some(d) = fields.get(&["CallDuration"]) {
            let secs = parse_u64("CallDuration", d)?;
            ev.duration_s = Some(secs);
            ev.billed_duration_s = Some(pulse_round(secs, BILLING_PULSE_S));
        }
    }
    ev.sequence = fields
        .get(&["SequenceNumber"])
        .map(|s| parse_u64("SequenceNumber", s))
        .transpose()?;
    ev.occurred_at = fields.get(&["Timestamp"]).map(texml_time).transpose()?;
    ev.answered_by = fields.get(&["AnsweredBy"]).map(|s| s.trim().to_string());
    ev.recording_url = fields.get(&["RecordingUrl"]).map(|s| s.trim().to_string());
    ev.raw = raw;
    Ok(ev)
}

fn texml_status(s: &str) -> Result<CallStatus, ParseError> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "queued" | "initiated" => CallStatus::Initiated,
        "ringing" => CallStatus::Ringing,
        "in-progress" | "answered" => CallStatus::InProgress,
        "completed" => CallStatus::Completed,
        "busy" => CallStatus::Busy,
        "no-answer" => CallStatus::NoAnswer,
        "failed" => CallStatus::Failed,
        "canceled" => CallStatus::Canceled,
        _ => {
            return Err(ParseError::BadValue {
                field: "CallStatus",
                value: truncate(s, 80),
            })
        }
    })
}

/// TeXML `Timestamp`: documented as RFC 2822, sent in practice as `2021-04-28 21:51:18.731479Z`.
fn texml_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    parse_time("Timestamp", s, UTC).or_else(|e| {
        let t = s.trim();
        match t.split_once(' ') {
            Some((date, time)) if t.ends_with('Z') => {
                DateTime::parse_from_rfc3339(&format!("{date}T{time}"))
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| e)
            }
            _ => Err(e),
        }
    })
}

/// Our call id from `client_state`: base64 of `vaani_call_id=<id>` (what [`TelnyxClient`]
/// sends; other form pairs may sit beside it) or of a JSON object with `vaani_call_id`. Any
/// other client state (set by someone else's command) is ignored.
fn call_id_from_client_state(client_state: &str) -> Option<String> {
    let bytes = B64_LENIENT.decode(client_state.trim()).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?.trim();
    let id = if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).ok()?;
        v.get(CALL_ID_PARAM)?.as_str()?.to_string()
    } else {
        form_urlencoded::parse(text.as_bytes())
            .find(|(k, _)| k == CALL_ID_PARAM)?
            .1
            .into_owned()
    };
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn call_id_from_query(url_query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(url_query?.as_bytes())
        .find(|(k, v)| k == CALL_ID_PARAM && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string())
}

/// A non-empty string field of a JSON object.
fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time_of(
    obj: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, ParseError> {
    str_of(obj, key)
        .map(|s| parse_time(field, s, UTC))
        .transpose()
}

/// At most `max` characters of `s`, for error messages that echo outside input.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

// ---------------------------------------------------------------------------------------------
// TeXML answer documents
// ---------------------------------------------------------------------------------------------

/// Render the TeXML answer document for `plan`.
///
/// - `ConnectSip`: `<Dial><Sip>` to the media node; tenant, call id and token travel as RFC 3261
///   URI headers `X-Vaani-Tenant` / `X-Vaani-Call-Id` / `X-Vaani-Token`, the form TwiML uses for custom SIP headers
///   (TeXML is Twilio-compatible; Telnyx's `<Sip>` page does not spell out URI headers).
/// - `ConnectStream`: `<Connect><Stream>` (synchronous: the call lives as long as the stream)
///   with `bidirectionalMode="rtp"` (the default `mp3` mode cannot carry live audio back) and
///   `bidirectionalCodec="PCMU"` pinned, and our ids as `<Parameter>`s, which Telnyx puts in
///   the stream's `start` message.
/// - `PlayAndHangup`: `<Say>` then `<Hangup/>`; a language selects the `alice` voice, the only
///   one that honours `language` (`man`/`woman` speak en-US only).
/// - `RejectBusy`: `<Reject reason="busy"/>` (unanswered, so not billed).
pub fn render_answer(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    enum Doc<'a> {
        Sip(String),
        Stream(&'a str),
        Say {
            text: String,
            language: Option<&'a str>,
        },
        Reject,
    }
    let doc = match &plan.action {
        AnswerAction::ConnectSip { uri } => {
            check_ids(plan)?;
            Doc::Sip(sip_uri_with_headers(uri, plan)?)
        }
        AnswerAction::ConnectStream { url } => {
            check_ids(plan)?;
            check_stream_url(url)?;
            Doc::Stream(url)
        }
        AnswerAction::PlayAndHangup { message, language } => {
            if let Some(l) = language {
                check_language(l)?;
            }
            Doc::Say {
                text: xml_chars_only(message),
                language: language.as_deref(),
            }
        }
        AnswerAction::RejectBusy => Doc::Reject,
    };

    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(|e| RenderError::Xml(e.to_string()))?;
    w.create_element("Response")
        .write_inner_content(|w| {
            match &doc {
                Doc::Sip(uri) => {
                    w.create_element("Dial").write_inner_content(|w| {
                        w.create_element("Sip")
                            .write_text_content(BytesText::new(uri))?;
                        Ok(())
                    })?;
                }
                Doc::Stream(url) => {
                    w.create_element("Connect").write_inner_content(|w| {
                        w.create_element("Stream")
                            .with_attribute(("url", *url))
                            .with_attribute(("bidirectionalMode", "rtp"))
                            .with_attribute(("bidirectionalCodec", "PCMU"))
                            .write_inner_content(|w| {
                                for (name, value) in [
                                    (CALL_ID_PARAM, plan.call_id.as_str()),
                                    (TOKEN_PARAM, plan.token.as_str()),
                                ] {
                                    w.create_element("Parameter")
                                        .with_attribute(("name", name))
                                        .with_attribute(("value", value))
                                        .write_empty()?;
                                }
                                Ok(())
                            })?;
                        Ok(())
                    })?;
                }
                Doc::Say { text, language } => {
                    let say = w.create_element("Say");
                    let say = match language {
                        Some(l) => say
                            .with_attribute(("voice", "alice"))
                            .with_attribute(("language", *l)),
                        None => say,
                    };
                    say.write_text_content(BytesText::new(text))?;
                    w.create_element("Hangup").write_empty()?;
                }
                Doc::Reject => {
                    w.create_element("Reject")
                        .with_attribute(("reason", "busy"))
                        .write_empty()?;
                }
            }
            Ok(())
        })
        .map_err(|e| RenderError::Xml(e.to_string()))?;
    let body = String::from_utf8(w.into_inner()).map_err(|e| RenderError::Xml(e.to_string()))?;
    Ok(AnswerDocument {
        content_type: "text/xml",
        body,
    })
}

fn check_ids(plan: &AnswerPlan) -> Result<(), RenderError> {
    for (what, v) in [("call id", &plan.call_id), ("media token", &plan.token)] {
        if v.trim().is_empty() {
            return Err(RenderError::Invalid {
                what,
                detail: "empty".into(),
            });
        }
        if v.chars().any(|c| !is_xml_char(c) || c.is_control()) {
            return Err(RenderError::Invalid {
                what,
                detail: "contains control characters".into(),
            });
        }
    }
    Ok(())
}

/// `sip:`/`sips:` URI plus our ids as URI headers, percent-encoded.
fn sip_uri_with_headers(uri: &str, plan: &AnswerPlan) -> Result<String, RenderError> {
    let uri = uri.trim();
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("sips:")
        .or_else(|| lower.strip_prefix("sip:"));
    if rest.is_none_or(str::is_empty) {
        return Err(RenderError::Invalid {
            what: "SIP URI",
            detail: "must start with sip: or sips:".into(),
        });
    }
    if uri.chars().any(|c| {
        c.is_whitespace() || c.is_control() || !is_xml_char(c) || matches!(c, '<' | '>' | '"')
    }) {
        return Err(RenderError::Invalid {
            what: "SIP URI",
            detail: "contains characters a SIP URI cannot".into(),
        });
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    let tenant = if plan.tenant.is_empty() {
        String::new()
    } else {
        format!("{TENANT_HEADER}={}&", pct_encode(&plan.tenant))
    };
    Ok(format!(
        "{uri}{sep}{tenant}{CALL_ID_HEADER}={}&{TOKEN_HEADER}={}",
        pct_encode(&plan.call_id),
        pct_encode(&plan.token)
    ))
}

fn check_stream_url(url: &str) -> Result<(), RenderError> {
    let parsed = url::Url::parse(url.trim()).map_err(|_| RenderError::Invalid {
        what: "stream URL",
        detail: "not a URL".into(),
    })?;
    if !matches!(parsed.scheme(), "wss" | "ws") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(RenderError::Invalid {
            what: "stream URL",
            detail: "must be a wss:// URL".into(),
        });
    }
    if url.chars().any(|c| c.is_control() || !is_xml_char(c)) {
        return Err(RenderError::Invalid {
            what: "stream URL",
            detail: "contains control characters".into(),
        });
    }
    Ok(())
}

/// A BCP-47-shaped tag (`en-IN`, `hi-IN`): letters, digits and `-` only.
fn check_language(l: &str) -> Result<(), RenderError> {
    let ok =
        !l.is_empty() && l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RenderError::Invalid {
            what: "language",
            detail: "not a BCP-47 language tag".into(),
        })
    }
}

/// Characters XML 1.0 allows; anything else makes the document unparseable for Telnyx.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Text to speak, minus characters XML cannot carry (escaping of `<`, `&`, quotes is the
/// writer's job).
fn xml_chars_only(s: &str) -> String {
    s.chars().filter(|c| is_xml_char(*c)).collect()
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// REST call control
// ---------------------------------------------------------------------------------------------

/// Telnyx Call Control over REST. `RestConfig.token` is the API key (sent as a bearer token),
/// `RestConfig.account` the Call Control application (connection) id.
#[derive(Debug, Clone)]
pub struct TelnyxClient {
    rest: RestClient,
}

impl TelnyxClient {
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        Ok(TelnyxClient {
            rest: RestClient::new("telnyx", cfg)?,
        })
    }

    /// Settings for the production API.
    pub fn config(api_key: impl Into<String>, connection_id: impl Into<String>) -> RestConfig {
        RestConfig::new(API_BASE, connection_id, api_key)
    }

    /// `base_url` + the given path segments, each percent-encoded as one segment (call control
    /// ids such as `v3:…` go into the path).
    fn endpoint(&self, segments: &[&str]) -> Result<String, RestError> {
        let mut url = url::Url::parse(&self.rest.cfg.base_url)
            .map_err(|_| RestError::Invalid("Telnyx base URL is not a URL".into()))?;
        url.path_segments_mut()
            .map_err(|_| RestError::Invalid("Telnyx base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url.into())
    }

    async fn command(
        &self,
        call_control_id: &str,
        action: &str,
        body: Value,
    ) -> Result<(), RestError> {
        // `.` and `..` would be dropped as dot-segments and send the command elsewhere.
        if matches!(call_control_id.trim(), "" | "." | "..") {
            return Err(RestError::Invalid("empty or dot call control id".into()));
        }
        let url = self.endpoint(&["v2", "calls", call_control_id, "actions", action])?;
        let token = &self.rest.cfg.token;
        self.rest
            .send(|c| c.post(&url).bearer_auth(token).json(&body))
            .await?;
        Ok(())
    }
}

/// `client_state` for a call we place: base64 of `vaani_call_id=<id>`, echoed in every webhook.
pub fn client_state_for(call_id: &str) -> String {
    let pair = form_urlencoded::Serializer::new(String::new())
        .append_pair(CALL_ID_PARAM, call_id)
        .finish();
    STANDARD.encode(pair)
}

/// `url` with `vaani_call_id=<call_id>` in its query, unless one is there already.
fn with_call_id(url: &str, call_id: &str) -> Result<String, RestError> {
    let mut u =
        url::Url::parse(url).map_err(|_| RestError::Invalid("status URL is not a URL".into()))?;
    if !u.query_pairs().any(|(k, _)| k == CALL_ID_PARAM) {
        u.query_pairs_mut().append_pair(CALL_ID_PARAM, call_id);
    }
    Ok(u.into())
}

/// A stable `command_id` for one logical command, so a retried request is ignored by Telnyx.
fn command_id(kind: &str, detail: &str) -> String {
    let h = Sha256::digest(detail.as_bytes());
    format!("vaani-{kind}-{}", hex::encode(&h[..12]))
}

#[async_trait::async_trait]
impl CallControl for TelnyxClient {
    /// `POST /v2/calls`. Call Control has no answer-document URL: every event, the answer
    /// included, goes to `webhook_url` (our status URL), so `OutboundCall::answer_url` is not
    /// sent. Our call id rides in `client_state` and in the webhook URL's query.
    async fn originate(&self, call: &OutboundCall) -> Result<ProviderCallRef, RestError> {
        let connection_id = self.rest.cfg.account.trim();
        if connection_id.is_empty() {
            return Err(RestError::Invalid(
                "Telnyx connection id (RestConfig.account) is empty".into(),
            ));
        }
        if call.to.trim().is_empty() || call.from.trim().is_empty() {
            return Err(RestError::Invalid("from and to are required".into()));
        }
        let mut body = Map::new();
        body.insert("connection_id".into(), connection_id.into());
        body.insert("to".into(), call.to.trim().into());
        body.insert("from".into(), call.from.trim().into());
        if !call.status_url.trim().is_empty() {
            body.insert(
                "webhook_url".into(),
                with_call_id(call.status_url.trim(), &call.call_id)?.into(),
            );
        }
        if !call.call_id.is_empty() {
            body.insert(
                "client_state".into(),
                client_state_for(&call.call_id).into(),
            );
        }
        // Telnyx accepts 5..=600 seconds.
        body.insert(
            "timeout_secs".into(),
            call.ring_timeout_s.clamp(5, 600).into(),
        );
        if call.machine_detection {
            body.insert("answering_machine_detection".into(), "detect".into());
        }
        if !call.idempotency_key.trim().is_empty() {
            body.insert("command_id".into(), call.idempotency_key.trim().into());
        }
        let body = Value::Object(body);
        let url = self.endpoint(&["v2", "calls"])?;
        let token = &self.rest.cfg.token;
        let resp: Value = self
            .rest
            .send_json(|c| c.post(&url).bearer_auth(token).json(&body))
            .await?;
        let id = resp
            .pointer("/data/call_control_id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RestError::Decode {
                provider: "telnyx",
                detail: "no data.call_control_id".into(),
            })?;
        Ok(ProviderCallRef {
            provider_call_id: id.to_string(),
        })
    }

    /// `POST /v2/calls/{id}/actions/hangup`.
    async fn hangup(&self, provider_call_id: &str) -> Result<(), RestError> {
        let body = serde_json::json!({ "command_id": command_id("hangup", provider_call_id) });
        self.command(provider_call_id, "hangup", body).await
    }

    /// `Transfer`: `POST /v2/calls/{id}/actions/transfer {to}`. `Url` (fetch a new answer
    /// document) exists only for calls run by TeXML, through the TeXML REST API, which needs the
    /// TeXML account sid we do not hold; Call Control calls have no such verb.
    async fn redirect(
        &self,
        provider_call_id: &str,
        target: &RedirectTarget,
    ) -> Result<(), RestError> {
        match target {
            RedirectTarget::Transfer(to) => {
                let to = to.trim();
                if to.is_empty() {
                    return Err(RestError::Invalid("empty transfer target".into()));
                }
                let body = serde_json::json!({
                    "to": to,
                    "command_id": command_id("transfer", &format!("{provider_call_id}\u{0}{to}")),
                });
                self.command(provider_call_id, "transfer", body).await
            }
            RedirectTarget::Url(_) => Err(RestError::Unsupported {
                provider: "telnyx",
                what: "redirecting a Call Control call to a new answer URL",
            }),
        }
    }
}
