//! Exotel: webhook authentication, StatusCallback / Passthru / ExoML event parsing, the
//! Voicebot applet's dynamic-URL answer, and REST call origination.
//!
//! # Authenticating Exotel webhooks
//!
//! **Exotel does not sign its webhooks**: no Exotel document describes a signature header, so
//! there is nothing to verify cryptographically. What a tenant can configure instead, and what
//! [`verify`] checks, in this order:
//!
//! 1. **Source allowlist** (optional). When `cfg.exotel.allow_cidrs` is non-empty, the request's
//!    source address must fall inside one of them, else 403 ([`VerifyError::SourceNotAllowed`],
//!    or [`VerifyError::SourceUnknown`] when the address is not known). Exotel publishes its
//!    egress ranges only on request (support or account manager).
//! 2. **A per-tenant secret token** (`cfg.secret`), presented either
//!    * as `token=<secret>` in the query string of the URL configured at Exotel
//!      (`https://…/webhooks/exotel/<tenant>?token=…`), or
//!    * as the password of HTTP Basic credentials, which Exotel sends when the configured URL
//!      embeds them (`https://<user>:<secret>@…`; the same form works for the Voicebot
//!      WebSocket URL). When `cfg.exotel.basic_user` is set the user name must match too.
//!
//!    Anything else is 401: [`VerifyError::NoCredentials`] when nothing was presented,
//!    [`VerifyError::BadCredentials`] when something was presented and did not match.
//!    Comparisons are constant-time. An empty configured secret never matches.
//!
//! Treat the token like a password: it is in every callback URL, so use HTTPS only, rotate it
//! per tenant, and never log the URL's query. Provider retries are deduplicated elsewhere
//! (`CallSid`, `X-Exotel-Request-Id`), and reconciliation through the Call Details API covers
//! callbacks Exotel fails to deliver.
//!
//! # Parsing
//!
//! [`parse`] accepts the v1 StatusCallback (form or JSON; `Status`, `ConversationDuration`,
//! `Legs`…), the Passthru applet's GET parameters (pass the query string as a form body:
//! `CallFrom`, `CallTo`, `DialCallDuration`, `CurrentTime`, `digits`…; `EndTime` there is the
//! placeholder `1970-01-01 05:30:00` and is ignored) and the ExoML/CPaaS v2 HTTPS event
//! endpoint's JSON (`event_name`, `data.leg_sid`, `data.state`…). Naive timestamps are IST.
//!
//! Exotel bills in 60-second pulses, `ceil(duration / 60)`, and not at all for unanswered
//! calls, so `billed_duration_s` is derived that way (Exotel sends no billed duration), and only
//! once the status is terminal: a Passthru request mid-flow or an `answered` event bills nothing
//! yet. `DialCallDuration` (Passthru) counts from when the second leg was triggered, ringing
//! included, so it over-states talk time when a Connect applet rang; `ConversationDuration` is
//! preferred when both are present. `Price` (Call Details API shape) is taken in INR unless a
//! currency field says otherwise.
//!
//! Our call id comes back as `vaani_call_id` on the callback URL, or in `CustomField` (set by
//! [`ExotelClient::originate`]), either plain or as `vaani_call_id=…`.
//!
//! # Answer documents
//!
//! Exotel flows are built in App Bazaar, not scripted by webhook responses. The one answer
//! this module renders is for the **Voicebot applet configured with an HTTPS URL**: Exotel
//! fetches it and expects JSON `{"url": "wss://…"}`, then connects the call's audio to that
//! WebSocket. Our call id and media token ride as query parameters, which Exotel hands to the
//! media node in `start.custom_parameters` (at most 3 custom parameters, 256 characters in
//! all; `sample-rate` is Exotel's own and not counted).
//!
//! Everything else is refused with [`RenderError::Unsupported`], honestly:
//! * `ConnectSip`: the Voicebot answer can only name a WebSocket. SIP to a media node goes
//!   through an Exotel SIP trunk configured out of band.
//! * `PlayAndHangup` / `RejectBusy`: the Voicebot URL cannot return speech or a reject.
//!   Configure the flow so that a failed Voicebot applet continues to a Greeting applet ("all
//!   our agents are busy") and a Hangup applet; the webhook handler then answers the dynamic
//!   URL with an HTTP error to take that branch. (The Passthru applet likewise only branches on
//!   200 vs 302.)
//!
//! # REST
//!
//! [`ExotelClient::originate`] uses `POST /v1/Accounts/{sid}/Calls/connect.json` with HTTP
//! Basic `api_key:token`. Exotel's v1 API has **no call hangup or redirect**: a Voicebot call
//! ends when the media node closes the WebSocket (the flow moves on to its Hangup applet), so
//! `hangup` and `redirect` return [`RestError::Unsupported`]. Exotel has no idempotency key;
//! creation is retried only on 429.

use async_trait::async_trait;
use ipnet::IpNet;
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};

use crate::common::{
    basic_credentials, ct_eq, parse_time, pulse_round, AnswerDocument, Fields, ParseError,
    RenderError, VerifyConfig, VerifyError, WebhookRequest,
};
use crate::plivo::{
    call_id_from_query, checked_call_id, is_call_id, is_provider_id, opt_decimal, opt_time,
    opt_u64, phone, present, required_id, secs_between, send_unreplayable, stream_url_with_ids,
    tag_callback_url,
};
use crate::rest::{
    CallControl, OutboundCall, ProviderCallRef, RedirectTarget, RestClient, RestConfig, RestError,
};

const PROVIDER: &str = "exotel";

/// Exotel API base URLs by region.
pub const API_BASE_MUMBAI: &str = "https://api.in.exotel.com";
pub const API_BASE_SINGAPORE: &str = "https://api.exotel.com";

/// Exotel bills in 60-second pulses.
pub const BILLING_PULSE_S: u64 = 60;

/// Voicebot custom parameters: at most 3, 256 characters of query in all.
const CUSTOM_PARAMS_MAX: usize = 3;
const CUSTOM_PARAMS_CHARS_MAX: usize = 256;

/// `CustomField` length limit on the connect API.
const CUSTOM_FIELD_MAX: usize = 128;

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

fn source_allowed(ip: std::net::IpAddr, cidrs: &[IpNet]) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    cidrs.iter().any(|n| n.contains(&ip))
}

/// Authenticate an Exotel webhook (see the module docs for what is checked and why).
pub fn verify(req: &WebhookRequest, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    let allow = &cfg.exotel.allow_cidrs;
    if !allow.is_empty() {
        let ip = req.source_ip.ok_or(VerifyError::SourceUnknown)?;
        if !source_allowed(ip, allow) {
            return Err(VerifyError::SourceNotAllowed(ip.to_string()));
        }
    }
    if cfg.secret.is_empty() {
        return Err(VerifyError::BadKey("empty Exotel tenant token".into()));
    }
    let secret = cfg.secret.as_bytes();
    let mut presented = false;
    let mut ok = false;

    if let Some(q) = req.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "token" {
                presented = true;
                ok |= ct_eq(v.as_bytes(), secret);
            }
        }
    }
    if req.header("authorization").is_some() {
        presented = true;
        if let Some((user, pass)) = basic_credentials(req) {
            let user_ok = cfg
                .exotel
                .basic_user
                .as_deref()
                .is_none_or(|want| ct_eq(user.as_bytes(), want.as_bytes()));
            ok |= user_ok & ct_eq(pass.as_bytes(), secret);
        }
    }
    match (ok, presented) {
        (true, _) => Ok(()),
        (false, true) => Err(VerifyError::BadCredentials),
        (false, false) => Err(VerifyError::NoCredentials),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn map_status(s: &str) -> Option<CallStatus> {
    match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "queued" | "initiated" | "created" | "connecting" => Some(CallStatus::Initiated),
        "ringing" => Some(CallStatus::Ringing),
        "in-progress" | "answered" => Some(CallStatus::InProgress),
        "completed" => Some(CallStatus::Completed),
        "busy" => Some(CallStatus::Busy),
        "failed" => Some(CallStatus::Failed),
        "no-answer" | "noanswer" => Some(CallStatus::NoAnswer),
        "canceled" | "cancelled" => Some(CallStatus::Canceled),
        _ => None,
    }
}

fn map_direction(s: &str) -> Option<Direction> {
    match s.trim().to_ascii_lowercase().as_str() {
        "inbound" | "incoming" => Some(Direction::Inbound),
        "outbound" | "outbound-dial" | "outbound-api" | "outgoing" => Some(Direction::Outbound),
        _ => None,
    }
}

fn unanswered(s: Option<CallStatus>) -> bool {
    matches!(
        s,
        Some(CallStatus::Busy | CallStatus::NoAnswer | CallStatus::Failed | CallStatus::Canceled)
    )
}

/// What Exotel bills for a finished call: whole 60 s pulses of talk time, nothing when it was
/// not answered. `None` while the call is not over (a Passthru mid-flow, an `answered` event).
fn billed(status: Option<CallStatus>, duration_s: Option<u64>) -> Option<u64> {
    if !status.is_some_and(CallStatus::is_terminal) {
        return None;
    }
    if unanswered(status) {
        return Some(0);
    }
    duration_s.map(|d| pulse_round(d, BILLING_PULSE_S))
}

/// Our call id from a `CustomField` / custom parameter: `vaani_call_id=…` (possibly among
/// other `&`-separated pairs) or the plain id. Values that are neither are someone else's.
fn call_id_from_custom(v: &str) -> Result<Option<String>, ParseError> {
    let v = v.trim();
    if v.contains('=') {
        let f = Fields::from_form(v.as_bytes());
        return f
            .get(&[vaani_core::answer::CALL_ID_PARAM])
            .map(checked_call_id)
            .transpose();
    }
    Ok(is_call_id(v).then(|| v.to_string()))
}

fn answered_by(f: &Fields) -> Option<String> {
    let usable = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && !v.eq_ignore_ascii_case("na") && !v.eq_ignore_ascii_case("null"))
            .then(|| v.to_ascii_lowercase())
    };
    if let Some(v) = f.get(&["AnsweredBy"]).and_then(usable) {
        return Some(v);
    }
    if let Some(legs) = f
        .json()
        .and_then(|j| j.get("Legs"))
        .and_then(|l| l.as_array())
    {
        return legs
            .iter()
            .filter_map(|leg| leg.get("AnsweredBy").and_then(|a| a.as_str()))
            .find_map(usable);
    }
    // Form bodies flatten the array: `Legs[0][AnsweredBy]=HUMAN`.
    f.pairs().iter().find_map(|(k, v)| {
        let k = crate::common::norm_key(k);
        (k.starts_with("legs") && k.ends_with("answeredby"))
            .then(|| usable(v))
            .flatten()
    })
}

/// The `digits` a caller pressed, from a Passthru request (Exotel wraps them in double quotes).
pub fn passthru_digits(ct: Option<&str>, body: &[u8]) -> Result<Option<String>, ParseError> {
    let f = Fields::from_body(ct, body)?;
    Ok(present(f.get(&["digits"]))
        .map(|d| d.trim_matches('"').trim().to_string())
        .filter(|d| !d.is_empty()))
}

/// Parse an Exotel StatusCallback, Passthru request or ExoML event into a [`CallEvent`].
pub fn parse(
    ct: Option<&str>,
    body: &[u8],
    url_query: Option<&str>,
) -> Result<CallEvent, ParseError> {
    let f = Fields::from_body(ct, body)?;
    if f.json_pointer("/data/leg_sid").is_some()
        || f.json().is_some_and(|j| j.get("event_sid").is_some())
    {
        return parse_v2_event(&f, url_query);
    }
    let sid = required_id(&f, "CallSid", &["CallSid"])?;
    let mut ev = CallEvent::new(Provider::Exotel, sid);
    ev.raw = f.raw();

    ev.call_id = match call_id_from_query(url_query)? {
        Some(id) => Some(id),
        None => match present(f.get(&["CustomField"])) {
            Some(cf) => call_id_from_custom(cf)?,
            None => None,
        },
    };
    if ev.call_id.is_none() {
        ev.call_id = present(f.get(&[vaani_core::answer::CALL_ID_PARAM]))
            .map(checked_call_id)
            .transpose()?;
    }

    // The Connect applet's agent passthru reports the *agent's* state as Status=busy/free
    // next to DialWhomNumber; that is not the call's status.
    let agent_passthru = present(f.get(&["DialWhomNumber"])).is_some()
        && present(f.get(&["Status"]))
            .is_some_and(|s| s.eq_ignore_ascii_case("busy") || s.eq_ignore_ascii_case("free"));
    let status_field = if agent_passthru {
        f.get(&["CallStatus"])
    } else {
        f.get(&["Status", "CallStatus"])
    };
    ev.status = present(status_field).and_then(map_status).or_else(|| {
        present(f.get(&["EventType"])).and_then(|e| match e.to_ascii_lowercase().as_str() {
            "answered" => Some(CallStatus::InProgress),
            "ringing" => Some(CallStatus::Ringing),
            _ => None,
        })
    });
    ev.direction = present(f.get(&["Direction"])).and_then(map_direction);
    ev.from = phone(&f, &["From", "CallFrom"]);
    ev.to = phone(&f, &["To", "CallTo"]);

    let start = opt_time(&f, "StartTime", &["StartTime"])?;
    let end = opt_time(&f, "EndTime", &["EndTime"])?;
    ev.duration_s = match opt_u64(&f, "ConversationDuration", &["ConversationDuration"])? {
        Some(d) => Some(d),
        None => match opt_u64(&f, "DialCallDuration", &["DialCallDuration"])? {
            Some(d) => Some(d),
            None => match (start, end) {
                (Some(s), Some(e)) => secs_between(s, e),
                _ => None,
            },
        },
    };
    ev.billed_duration_s = billed(ev.status, ev.duration_s);
    ev.price = opt_decimal(&f, "Price", &["Price"])?;
    if ev.price.is_some() {
        // Exotel prices in the account's currency; Indian accounts are billed in INR.
        ev.currency = Some(
            present(f.get(&["Currency", "PriceUnit"]))
                .unwrap_or("INR")
                .to_ascii_uppercase(),
        );
    }
    ev.recording_url = present(f.get(&["RecordingUrl"])).map(str::to_string);
    ev.answered_by = answered_by(&f);
    ev.occurred_at = match opt_time(&f, "DateUpdated", &["DateUpdated"])? {
        Some(t) => Some(t),
        None => match opt_time(&f, "CurrentTime", &["CurrentTime"])? {
            Some(t) => Some(t),
            None => end.or(start),
        },
    };
    Ok(ev)
}

fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    present(v.get(key).and_then(|x| x.as_str()))
}

fn json_time(
    v: &serde_json::Value,
    key: &'static str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ParseError> {
    json_str(v, key)
        .map(|s| parse_time(key, s, crate::common::IST))
        .transpose()
}

/// The ExoML HTTPS event endpoint: `{event_sid, event_name, event_timestamp,
/// action_custom_parameter, data: {leg_sid, contact_uri, exophone, state, start_time, end_time…}}`.
fn parse_v2_event(f: &Fields, url_query: Option<&str>) -> Result<CallEvent, ParseError> {
    let root = f.json().ok_or(ParseError::Syntax("JSON object"))?;
    let data = root
        .get("data")
        .filter(|d| d.is_object())
        .ok_or(ParseError::MissingField("data"))?;
    let sid = json_str(data, "leg_sid")
        .or_else(|| json_str(data, "call_sid"))
        .ok_or(ParseError::MissingField("data.leg_sid"))?;
    if !is_provider_id(sid) {
        return Err(ParseError::BadValue {
            field: "data.leg_sid",
            value: sid.chars().take(64).collect(),
        });
    }
    let mut ev = CallEvent::new(Provider::Exotel, sid);
    ev.raw = f.raw();

    ev.call_id = match call_id_from_query(url_query)? {
        Some(id) => Some(id),
        None => match json_str(root, "action_custom_parameter")
            .or_else(|| json_str(data, "custom_param"))
        {
            Some(cp) => call_id_from_custom(cp)?,
            None => None,
        },
    };
    let event_name = json_str(root, "event_name")
        .unwrap_or_default()
        .to_ascii_lowercase();
    ev.status = json_str(data, "state").and_then(map_status).or_else(|| {
        if event_name.contains("ringing") {
            Some(CallStatus::Ringing)
        } else if event_name.contains("answered") {
            Some(CallStatus::InProgress)
        } else {
            None
        }
    });
    ev.direction = json_str(data, "direction").and_then(map_direction);
    // Legs created through the API are outbound: ExoPhone → contact. Inbound legs reverse it.
    let contact = json_str(data, "contact_uri").and_then(crate::common::phone_or_raw);
    let exophone = json_str(data, "exophone").and_then(crate::common::phone_or_raw);
    if ev.direction == Some(Direction::Inbound) {
        (ev.from, ev.to) = (contact, exophone);
    } else {
        (ev.from, ev.to) = (exophone, contact);
    }
    let start = json_time(data, "start_time")?;
    let end = json_time(data, "end_time")?;
    ev.duration_s = match data.get("duration").and_then(|d| d.as_u64()) {
        Some(d) => Some(d),
        None => match (start, end) {
            (Some(s), Some(e)) => secs_between(s, e),
            _ => None,
        },
    };
    ev.billed_duration_s = billed(ev.status, ev.duration_s);
    ev.occurred_at = match json_time(root, "event_timestamp")? {
        Some(t) => Some(t),
        None => json_time(data, "date_updated")?,
    };
    Ok(ev)
}

// ---------------------------------------------------------------------------------------------
// Answer documents
// ---------------------------------------------------------------------------------------------

/// Render the Voicebot applet's dynamic-URL answer (see the module docs).
pub fn render_answer(plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    match &plan.action {
        AnswerAction::ConnectStream { url } => {
            let url = stream_url_with_ids(url, plan)?;
            let query = url.split_once('?').map_or("", |(_, q)| q);
            let query = query.split_once('#').map_or(query, |(q, _)| q);
            let custom = query
                .split('&')
                .filter(|p| !p.is_empty() && p.split('=').next() != Some("sample-rate"))
                .count();
            if custom > CUSTOM_PARAMS_MAX || query.len() > CUSTOM_PARAMS_CHARS_MAX {
                return Err(RenderError::Invalid {
                    what: "stream URL",
                    detail: format!(
                        "Exotel allows {CUSTOM_PARAMS_MAX} custom parameters and {CUSTOM_PARAMS_CHARS_MAX} characters of query; this has {custom} and {}",
                        query.len()
                    ),
                });
            }
            let body = serde_json::json!({ "url": url }).to_string();
            Ok(AnswerDocument { content_type: "application/json", body })
        }
        AnswerAction::ConnectSip { .. } => Err(RenderError::Unsupported {
            provider: PROVIDER,
            what: "connect a call to a SIP URI from the Voicebot answer (use an Exotel SIP trunk)",
        }),
        AnswerAction::PlayAndHangup { .. } => Err(RenderError::Unsupported {
            provider: PROVIDER,
            what: "play a message from the Voicebot answer (route the flow's failure branch to a Greeting and Hangup applet)",
        }),
        AnswerAction::RejectBusy => Err(RenderError::Unsupported {
            provider: PROVIDER,
            what: "reject a call from the Voicebot answer (route the flow's failure branch to a Hangup applet)",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// Exotel REST call control (v1 Calls API).
///
/// `RestConfig.account` is the account SID, `api_key` the API key (Basic user), `token` the
/// API token (Basic password); `base_url` is [`API_BASE_MUMBAI`] or [`API_BASE_SINGAPORE`].
///
/// Exotel has **no idempotency key**: [`OutboundCall::idempotency_key`] is not sent and
/// `originate` is retried only on 429.
#[derive(Debug, Clone)]
pub struct ExotelClient {
    rest: RestClient,
    once: RestClient,
}

impl ExotelClient {
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        let once_cfg = RestConfig {
            max_retries: 0,
            ..cfg.clone()
        };
        Ok(ExotelClient {
            rest: RestClient::new(PROVIDER, cfg)?,
            once: RestClient::new(PROVIDER, once_cfg)?,
        })
    }
}

/// The `Call.Sid` of a connect response, JSON (`{"Call":{"Sid":…}}`) or XML
/// (`<TwilioResponse><Call><Sid>…</Sid>…`).
fn call_sid_from_response(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return v
            .pointer("/Call/Sid")
            .and_then(|s| s.as_str())
            .map(str::to_string);
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            quick_xml::events::Event::Start(e) => path.push(e.name().as_ref().to_vec()),
            quick_xml::events::Event::End(_) => {
                path.pop();
            }
            quick_xml::events::Event::Text(t) => {
                let n = path.len();
                if n >= 2 && path[n - 1] == b"Sid" && path[n - 2] == b"Call" {
                    return t.unescape().ok().map(|s| s.trim().to_string());
                }
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
        buf.clear();
    }
}

#[async_trait]
impl CallControl for ExotelClient {
    /// `POST /v1/Accounts/{sid}/Calls/connect.json` (form). Exotel dials `From` first, so the
    /// callee (`call.to`) goes in `From` and our ExoPhone (`call.from`) in `CallerId`.
    /// A `ws(s)://` answer URL connects the answered call straight to the media node
    /// (`StreamUrl`, `StreamType=bidirectional`; include any custom parameters in the URL);
    /// any other URL is taken as an Exotel flow URL
    /// (`http://my.exotel.com/{sid}/exoml/start_voice/{app_id}`). Our call id goes in
    /// `CustomField` and on the status callback URL. Answering-machine detection is not offered
    /// by this API and is ignored.
    async fn originate(&self, call: &OutboundCall) -> Result<ProviderCallRef, RestError> {
        if !is_call_id(&call.call_id) || call.call_id.len() > CUSTOM_FIELD_MAX {
            return Err(RestError::Invalid(
                "call id must be ≤128 characters of A-Z a-z 0-9 - _ . ~".into(),
            ));
        }
        let sid = crate::plivo::path_id(&self.rest.cfg.account).map_err(|_| {
            RestError::Invalid("Exotel account SID has unexpected characters".into())
        })?;
        let status_url = tag_callback_url(&call.status_url, &call.call_id)?;
        let answer = call.answer_url.trim();
        let lower = answer.to_ascii_lowercase();
        let is_stream = lower.starts_with("wss://") || lower.starts_with("ws://");
        url::Url::parse(answer)
            .map_err(|_| RestError::Invalid("answer URL is not a URL".into()))?;

        // The serializer is not Send: finish it before any await.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("From", &call.to)
                .append_pair("CallerId", &call.from)
                .append_pair("CustomField", &call.call_id)
                .append_pair("StatusCallback", &status_url)
                .append_pair("StatusCallbackEvents[]", "answered")
                .append_pair("StatusCallbackEvents[]", "terminal")
                .append_pair("TimeOut", &call.ring_timeout_s.to_string());
            if is_stream {
                form.append_pair("StreamUrl", answer)
                    .append_pair("StreamType", "bidirectional");
            } else {
                form.append_pair("Url", answer);
            }
            form.finish()
        };
        let url = self
            .rest
            .url(&format!("/v1/Accounts/{sid}/Calls/connect.json"));
        let cfg = &self.rest.cfg;
        let resp = send_unreplayable(&self.once, cfg.max_retries, |c| {
            c.post(&url)
                .basic_auth(&cfg.api_key, Some(&cfg.token))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
        })
        .await?;
        let sid = call_sid_from_response(&resp.body)
            .filter(|s| is_provider_id(s))
            .ok_or(RestError::Decode {
                provider: PROVIDER,
                detail: "no Call.Sid in response".into(),
            })?;
        Ok(ProviderCallRef {
            provider_call_id: sid,
        })
    }

    /// Exotel's v1 API cannot hang up a call: close the media WebSocket instead (the flow then
    /// reaches its Hangup applet).
    async fn hangup(&self, _provider_call_id: &str) -> Result<(), RestError> {
        Err(RestError::Unsupported {
            provider: PROVIDER,
            what: "hanging up a call over the v1 API",
        })
    }

    /// Exotel's v1 API cannot redirect or transfer a live call.
    async fn redirect(
        &self,
        _provider_call_id: &str,
        _target: &RedirectTarget,
    ) -> Result<(), RestError> {
        Err(RestError::Unsupported {
            provider: PROVIDER,
            what: "redirecting a live call over the v1 API",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_field_shapes() {
        assert_eq!(
            call_id_from_custom("c-1").ok().flatten(),
            Some("c-1".to_string())
        );
        assert_eq!(
            call_id_from_custom("vaani_call_id=c-2&x=1").ok().flatten(),
            Some("c-2".to_string())
        );
        assert_eq!(call_id_from_custom("order 12345").ok().flatten(), None);
        assert!(call_id_from_custom("vaani_call_id=a b").is_err());
    }

    #[test]
    fn sid_from_xml_and_json() {
        assert_eq!(
            call_sid_from_response(br#"{"Call":{"Sid":"abc123"}}"#),
            Some("abc123".into())
        );
        let xml = b"<?xml version=\"1.0\"?><TwilioResponse><Call><Sid>def456</Sid><Status>in-progress</Status></Call></TwilioResponse>";
        assert_eq!(call_sid_from_response(xml), Some("def456".into()));
        assert_eq!(call_sid_from_response(b"<x><Sid>no</Sid></x>"), None);
        assert_eq!(call_sid_from_response(b"garbage <<"), None);
    }

    #[test]
    fn v4_mapped_sources() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| IpNet::default())];
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3"
            .parse()
            .unwrap_or(std::net::IpAddr::from([0u8; 4]));
        assert!(source_allowed(mapped, &nets));
    }
}
