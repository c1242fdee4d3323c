//! Exotel: token / Basic / allowlist authentication, StatusCallback / Passthru / ExoML event
//! parsing against fixtures, the Voicebot dynamic-URL answer, and the REST client against a
//! local server.

mod support;

use std::net::IpAddr;

use axum::http::Method;
use chrono::Utc;
use proptest::prelude::*;
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};
use vaani_telephony::exotel::{self, ExotelClient};
use vaani_telephony::{
    CallControl, OutboundCall, RedirectTarget, RenderError, RestError, VerifyConfig, VerifyError,
    WebhookRequest,
};

use support::{basic, form_pairs, form_raw, ist, pairs, seen, Mock, FORM};

const SECRET: &str = "t0k3n-for-tenant-1";

fn sample(name: &str) -> Vec<u8> {
    support::sample("exotel", name)
}

fn json_raw(body: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

fn utc_ms(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

fn request(url: &str, headers: &[(&str, &str)], ip: Option<&str>) -> WebhookRequest {
    WebhookRequest {
        method: Method::POST,
        url: url.to_string(),
        headers: support::header_map(headers),
        body: bytes::Bytes::from_static(b"CallSid=abc&Status=completed"),
        source_ip: ip.and_then(|s| s.parse::<IpAddr>().ok()),
    }
}

fn cfg() -> VerifyConfig {
    VerifyConfig::new(SECRET, Utc::now())
}

const URL: &str = "https://hooks.vaani.example/exotel/status/t1";

// ------------------------------------------------------------------------------------------
// Authentication
// ------------------------------------------------------------------------------------------

#[test]
fn query_token() {
    let ok = request(&format!("{URL}?vaani_call_id=c1&token={SECRET}"), &[], None);
    assert_eq!(exotel::verify(&ok, &cfg()), Ok(()));
    let encoded = request(&format!("{URL}?token=t0k3n%2Dfor%2Dtenant%2D1"), &[], None);
    assert_eq!(exotel::verify(&encoded, &cfg()), Ok(()));
    let wrong = request(&format!("{URL}?token=t0k3n-for-tenant-2"), &[], None);
    assert_eq!(
        exotel::verify(&wrong, &cfg()),
        Err(VerifyError::BadCredentials)
    );
    assert_eq!(VerifyError::BadCredentials.http_status(), 401);
    let prefix = request(&format!("{URL}?token=t0k3n"), &[], None);
    assert_eq!(
        exotel::verify(&prefix, &cfg()),
        Err(VerifyError::BadCredentials)
    );
    let none = request(URL, &[], None);
    assert_eq!(
        exotel::verify(&none, &cfg()),
        Err(VerifyError::NoCredentials)
    );
    assert_eq!(VerifyError::NoCredentials.http_status(), 401);
    // vaani_token is not the webhook token.
    let other = request(&format!("{URL}?vaani_token={SECRET}"), &[], None);
    assert_eq!(
        exotel::verify(&other, &cfg()),
        Err(VerifyError::NoCredentials)
    );
    // The fragment is not part of the query.
    let frag = request(&format!("{URL}#token={SECRET}"), &[], None);
    assert_eq!(
        exotel::verify(&frag, &cfg()),
        Err(VerifyError::NoCredentials)
    );
    // An empty tenant secret never matches an empty token.
    let empty = request(&format!("{URL}?token="), &[], None);
    assert!(matches!(
        exotel::verify(&empty, &VerifyConfig::new("", Utc::now())),
        Err(VerifyError::BadKey(_))
    ));
}

#[test]
fn basic_credentials() {
    let auth = basic("exotel_api_key", SECRET);
    let ok = request(URL, &[("Authorization", &auth)], None);
    assert_eq!(exotel::verify(&ok, &cfg()), Ok(()));

    let mut with_user = cfg();
    with_user.exotel.basic_user = Some("exotel_api_key".into());
    assert_eq!(exotel::verify(&ok, &with_user), Ok(()));
    let other_user = request(URL, &[("Authorization", &basic("someone", SECRET))], None);
    assert_eq!(
        exotel::verify(&other_user, &with_user),
        Err(VerifyError::BadCredentials)
    );

    let wrong_pass = request(
        URL,
        &[("Authorization", &basic("exotel_api_key", "nope"))],
        None,
    );
    assert_eq!(
        exotel::verify(&wrong_pass, &cfg()),
        Err(VerifyError::BadCredentials)
    );
    let garbage = request(URL, &[("Authorization", "Basic !!!not-base64")], None);
    assert_eq!(
        exotel::verify(&garbage, &cfg()),
        Err(VerifyError::BadCredentials)
    );
    let bearer = request(URL, &[("Authorization", &format!("Bearer {SECRET}"))], None);
    assert_eq!(
        exotel::verify(&bearer, &cfg()),
        Err(VerifyError::BadCredentials)
    );
    // Either mechanism is enough.
    let both = request(
        &format!("{URL}?token=wrong"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(exotel::verify(&both, &cfg()), Ok(()));
}

#[test]
fn source_allowlist_first() {
    let mut c = cfg();
    c.exotel.allow_cidrs = vec!["203.0.113.0/24".parse().unwrap_or_else(|e| panic!("{e}"))];
    let good_url = format!("{URL}?token={SECRET}");

    assert_eq!(
        exotel::verify(&request(&good_url, &[], Some("203.0.113.9")), &c),
        Ok(())
    );
    assert_eq!(
        exotel::verify(&request(&good_url, &[], Some("::ffff:203.0.113.9")), &c),
        Ok(())
    );

    let outside = exotel::verify(&request(&good_url, &[], Some("198.51.100.7")), &c);
    assert_eq!(
        outside,
        Err(VerifyError::SourceNotAllowed("198.51.100.7".into()))
    );
    assert_eq!(outside.err().map(|e| e.http_status()), Some(403));

    let unknown = exotel::verify(&request(&good_url, &[], None), &c);
    assert_eq!(unknown, Err(VerifyError::SourceUnknown));
    assert_eq!(unknown.err().map(|e| e.http_status()), Some(403));

    // Checked before credentials: a bad source with bad credentials is still 403.
    let both_bad = exotel::verify(&request(URL, &[], Some("198.51.100.7")), &c);
    assert_eq!(both_bad.err().map(|e| e.http_status()), Some(403));
    // Allowed source, no credentials: 401.
    assert_eq!(
        exotel::verify(&request(URL, &[], Some("203.0.113.1")), &c),
        Err(VerifyError::NoCredentials)
    );
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

#[test]
fn parse_status_callback_minimal() {
    let body = sample("status_callback_minimal.form");
    let ev = exotel::parse(Some(FORM), &body, Some("vaani_call_id=call-0001&token=x"));
    let mut want = CallEvent::new(Provider::Exotel, "80bfbec2d78bbbf10fb851f4fa165211");
    want.call_id = Some("call-0001".into());
    want.status = Some(CallStatus::Completed);
    want.recording_url =
        Some("https://s3-ap-southeast-1.amazonaws.com/recordings/abc123.mp3".into());
    want.occurred_at = Some(ist(2024, 1, 15, 14, 30, 45));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_status_callback_terminal_json() {
    let body = sample("status_callback_terminal.json");
    let ev = exotel::parse(Some("application/json"), &body, None);
    let mut want = CallEvent::new(Provider::Exotel, "80bfbec2d78bbbf10fb851f4fa165211");
    // CustomField "order_12345" has the shape of a call id and is taken as one.
    want.call_id = Some("order_12345".into());
    want.status = Some(CallStatus::Completed);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+919876543210".into());
    want.to = Some("+919123456789".into());
    want.duration_s = Some(320);
    want.billed_duration_s = Some(360);
    want.recording_url =
        Some("https://s3-ap-southeast-1.amazonaws.com/recordings/abc123.mp3".into());
    want.answered_by = Some("human".into());
    want.occurred_at = Some(ist(2024, 1, 15, 14, 30, 45));
    want.raw = json_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_status_callback_busy() {
    let body = sample("status_callback_busy.form");
    let ev = exotel::parse(Some(FORM), &body, None);
    let mut want = CallEvent::new(Provider::Exotel, "b6cfaf5f5cef3ca0fc937749ef960e25");
    want.call_id = Some("call-0002".into());
    want.status = Some(CallStatus::Busy);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+919812345678".into());
    want.to = Some("+919812345678".into());
    want.duration_s = Some(0);
    want.billed_duration_s = Some(0);
    want.occurred_at = Some(ist(2024, 1, 15, 15, 0, 12));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_status_callback_no_answer() {
    let body = sample("status_callback_no_answer.form");
    let ev = exotel::parse(Some(FORM), &body, None);
    let mut want = CallEvent::new(Provider::Exotel, "c7d0b0606df04db1a0d048850fa07f36");
    want.status = Some(CallStatus::NoAnswer);
    want.billed_duration_s = Some(0);
    want.occurred_at = Some(ist(2024, 1, 15, 16, 0, 45));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_passthru() {
    let body = sample("passthru.query");
    let ev = exotel::parse(Some(FORM), &body, Some("vaani_call_id=call-0006"));
    let mut want = CallEvent::new(Provider::Exotel, "d8e1c1717e015ec2b1e159961fb18047");
    want.call_id = Some("call-0006".into());
    want.direction = Some(Direction::Inbound);
    want.from = Some("+919876543210".into());
    want.to = Some("+918047491899".into());
    want.duration_s = Some(0);
    // Mid-flow: no terminal status, so nothing billed yet; EndTime is Exotel's placeholder.
    want.occurred_at = Some(ist(2024, 1, 15, 17, 2, 13));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
    assert_eq!(
        exotel::passthru_digits(Some(FORM), &body),
        Ok(Some("12".to_string()))
    );
    assert_eq!(
        exotel::passthru_digits(Some(FORM), b"CallSid=a&digits=%22%22"),
        Ok(None)
    );
    assert_eq!(exotel::passthru_digits(Some(FORM), b"CallSid=a"), Ok(None));
}

#[test]
fn parse_v2_events() {
    let body = sample("v2_leg_answered.json");
    let ev = exotel::parse(Some("application/json"), &body, None);
    let mut want = CallEvent::new(Provider::Exotel, "leg_4f5e6d7c8b9a");
    want.call_id = Some("call-0003".into());
    want.status = Some(CallStatus::InProgress);
    want.from = Some("+918047491899".into());
    want.to = Some("+919876543210".into());
    want.occurred_at = Some(utc_ms("2026-01-15T10:30:00.529Z"));
    want.raw = json_raw(&body);
    assert_eq!(ev, Ok(want));

    let body = sample("v2_leg_terminated.json");
    let ev = exotel::parse(Some("application/json"), &body, None);
    let mut want = CallEvent::new(Provider::Exotel, "leg_4f5e6d7c8b9a");
    want.call_id = Some("call-0003".into());
    want.status = Some(CallStatus::Completed);
    want.from = Some("+918047491899".into());
    want.to = Some("+919876543210".into());
    // 10:30:00.112 → 10:32:04.987: 124 s, three pulses.
    want.duration_s = Some(124);
    want.billed_duration_s = Some(180);
    want.occurred_at = Some(utc_ms("2026-01-15T10:32:05.101Z"));
    want.raw = json_raw(&body);
    assert_eq!(ev, Ok(want));

    assert!(exotel::parse(
        Some("application/json"),
        br#"{"event_sid":"e1","data":{}}"#,
        None
    )
    .is_err());
    assert!(exotel::parse(Some("application/json"), br#"{"event_sid":"e1"}"#, None).is_err());
}

#[test]
fn parse_field_variants() {
    let p = |body: &str, q: Option<&str>| exotel::parse(Some(FORM), body.as_bytes(), q);
    for (raw, want) in [
        ("completed", CallStatus::Completed),
        ("failed", CallStatus::Failed),
        ("busy", CallStatus::Busy),
        ("no-answer", CallStatus::NoAnswer),
        ("ringing", CallStatus::Ringing),
        ("in-progress", CallStatus::InProgress),
        ("answered", CallStatus::InProgress),
        ("canceled", CallStatus::Canceled),
        ("queued", CallStatus::Initiated),
    ] {
        assert_eq!(
            p(&format!("CallSid=s1&Status={raw}"), None).map(|e| e.status),
            Ok(Some(want)),
            "{raw}"
        );
        assert_eq!(
            p(&format!("CallSid=s1&CallStatus={raw}"), None).map(|e| e.status),
            Ok(Some(want)),
            "{raw}"
        );
    }
    assert_eq!(
        p("CallSid=s1&EventType=answered", None).map(|e| e.status),
        Ok(Some(CallStatus::InProgress))
    );
    // The Connect applet's agent passthru: Status is the agent's busy/free, not the call's.
    assert_eq!(
        p("CallSid=s1&Status=busy&DialWhomNumber=09812345678", None).map(|e| e.status),
        Ok(None)
    );
    for (raw, want) in [
        ("inbound", Direction::Inbound),
        ("incoming", Direction::Inbound),
        ("outbound-dial", Direction::Outbound),
        ("outbound-api", Direction::Outbound),
    ] {
        assert_eq!(
            p(&format!("CallSid=s1&Direction={raw}"), None).map(|e| e.direction),
            Ok(Some(want))
        );
    }
    // Duration from StartTime/EndTime when no duration field; 61 s is two pulses.
    let ev = p("CallSid=s1&Status=completed&StartTime=2024-01-15+10%3A00%3A00&EndTime=2024-01-15+10%3A01%3A01", None);
    assert_eq!(
        ev.as_ref().map(|e| (e.duration_s, e.billed_duration_s)),
        Ok((Some(61), Some(120)))
    );
    // DialCallDuration when there is no ConversationDuration.
    let ev = p("CallSid=s1&Status=completed&DialCallDuration=59", None);
    assert_eq!(
        ev.map(|e| (e.duration_s, e.billed_duration_s)),
        Ok((Some(59), Some(60)))
    );
    // Price, in INR unless told otherwise.
    let ev = p("CallSid=s1&Status=completed&Price=1.20", None);
    assert_eq!(
        ev.map(|e| (e.price, e.currency)),
        Ok((
            Some(rust_decimal::Decimal::new(120, 2)),
            Some("INR".to_string())
        ))
    );
    // CustomField forms.
    assert_eq!(
        p("CallSid=s1&CustomField=vaani_call_id%3Dc-7", None).map(|e| e.call_id),
        Ok(Some("c-7".to_string()))
    );
    assert_eq!(
        p("CallSid=s1&CustomField=c-8", None).map(|e| e.call_id),
        Ok(Some("c-8".to_string()))
    );
    assert_eq!(
        p("CallSid=s1&CustomField=some+crm+note", None).map(|e| e.call_id),
        Ok(None)
    );
    assert_eq!(
        p("CallSid=s1&CustomField=c-8", Some("vaani_call_id=c-9")).map(|e| e.call_id),
        Ok(Some("c-9".to_string()))
    );
    // "null" is nothing.
    assert_eq!(
        p("CallSid=s1&RecordingUrl=null", None).map(|e| e.recording_url),
        Ok(None)
    );
}

#[test]
fn parse_malformed() {
    let bad: &[(&[u8], Option<&str>)] = &[
        (b"Status=completed", Some(FORM)),
        (b"CallSid=", Some(FORM)),
        (b"CallSid=a%0Ab", Some(FORM)),
        (b"CallSid=s1&ConversationDuration=ten", Some(FORM)),
        (b"CallSid=s1&DateUpdated=15%2F01%2F2024", Some(FORM)),
        (b"CallSid=s1&Price=free", Some(FORM)),
        (
            b"CallSid=s1&CustomField=vaani_call_id%3Da%2520b",
            Some(FORM),
        ),
        (b"{\"CallSid\": 1", Some("application/json")),
        (b"\"CallSid\"", Some("application/json")),
        (
            b"{\"data\":{\"leg_sid\":\"bad sid\"}}",
            Some("application/json"),
        ),
        (
            b"{\"data\":{\"leg_sid\":\"l1\",\"end_time\":\"soon\"}}",
            Some("application/json"),
        ),
        (b"CallSid=s1", Some("text/html")),
    ];
    for (body, ct) in bad {
        assert!(
            exotel::parse(*ct, body, None).is_err(),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

// ------------------------------------------------------------------------------------------
// Answer
// ------------------------------------------------------------------------------------------

fn plan(action: AnswerAction) -> AnswerPlan {
    AnswerPlan {
        tenant: "acme".into(),
        call_id: "call-0001".into(),
        token: "tok_en.1".into(),
        action,
    }
}

#[test]
fn render_voicebot_url() {
    let doc = exotel::render_answer(&plan(AnswerAction::ConnectStream {
        url: "wss://node1.vaani.example/exotel?sample-rate=8000".into(),
    }));
    let Ok(doc) = doc else { panic!("{doc:?}") };
    assert_eq!(doc.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&doc.body).unwrap_or_default();
    assert_eq!(
        v,
        serde_json::json!({"url": "wss://node1.vaani.example/exotel?sample-rate=8000&vaani_call_id=call-0001&vaani_token=tok_en.1"})
    );
    assert_eq!(
        doc.body,
        r#"{"url":"wss://node1.vaani.example/exotel?sample-rate=8000&vaani_call_id=call-0001&vaani_token=tok_en.1"}"#
    );
}

#[test]
fn render_voicebot_limits_and_unsupported() {
    let stream = |url: &str, token: &str| {
        exotel::render_answer(&AnswerPlan {
            tenant: "acme".into(),
            call_id: "c1".into(),
            token: token.into(),
            action: AnswerAction::ConnectStream { url: url.into() },
        })
    };
    // Two custom parameters of ours plus one of the URL's own: three, the limit.
    assert!(stream("wss://n.example/s?tenant=t1", "t").is_ok());
    assert!(matches!(
        stream("wss://n.example/s?a=1&b=2", "t"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        stream("wss://n.example/s", &"t".repeat(240)),
        Err(RenderError::Invalid { .. })
    ));
    assert!(stream("wss://n.example/s", &"t".repeat(200)).is_ok());
    assert!(matches!(
        stream("https://n.example/s", "t"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        stream("wss://n.example/s", "t&a=b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        stream("wss://n.example/s", "\"}"),
        Err(RenderError::Invalid { .. })
    ));

    for action in [
        AnswerAction::ConnectSip {
            uri: "sip:node@10.0.0.1".into(),
        },
        AnswerAction::PlayAndHangup {
            message: "busy".into(),
            language: None,
        },
        AnswerAction::RejectBusy,
    ] {
        let r = exotel::render_answer(&plan(action));
        assert!(
            matches!(
                r,
                Err(RenderError::Unsupported {
                    provider: "exotel",
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// REST client against a local server
// ------------------------------------------------------------------------------------------

async fn mock(replies: &[(u16, &str)]) -> (String, Mock) {
    support::serve(replies, (500, "{}"), None).await
}

fn client(base: &str) -> ExotelClient {
    let mut cfg = support::fast_rest(base, "vaani1", "api-token");
    cfg.api_key = "api-key".into();
    ExotelClient::new(cfg).unwrap_or_else(|e| panic!("client: {e}"))
}

fn outbound(answer_url: &str) -> OutboundCall {
    OutboundCall {
        from: "08047491899".into(),
        to: "+919876543210".into(),
        call_id: "call-0001".into(),
        answer_url: answer_url.into(),
        status_url: "https://hooks.vaani.example/exotel/status/t1?token=abc".into(),
        ring_timeout_s: 30,
        machine_detection: false,
        idempotency_key: "call-0001".into(),
    }
}

const CONNECTED: &str = r#"{"Call":{"Sid":"b6cfaf5f5cef3ca0fc937749ef960e25","AccountSid":"vaani1","Status":"in-progress","Direction":"outbound-api"}}"#;

#[tokio::test]
async fn originate_to_flow() {
    let (base, log) = mock(&[(200, CONNECTED)]).await;
    let r = client(&base)
        .originate(&outbound(
            "http://my.exotel.com/vaani1/exoml/start_voice/228144",
        ))
        .await;
    assert_eq!(
        r.map(|r| r.provider_call_id).ok(),
        Some("b6cfaf5f5cef3ca0fc937749ef960e25".into())
    );
    let s = seen(&log);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].method.as_str(), s[0].path.as_str()),
        ("POST", "/v1/Accounts/vaani1/Calls/connect.json")
    );
    assert_eq!(
        s[0].auth.as_deref(),
        Some(basic("api-key", "api-token").as_str())
    );
    assert_eq!(s[0].content_type.as_deref(), Some(FORM));
    assert_eq!(
        form_pairs(&s[0].body),
        pairs(&[
            ("From", "+919876543210"),
            ("CallerId", "08047491899"),
            ("CustomField", "call-0001"),
            (
                "StatusCallback",
                "https://hooks.vaani.example/exotel/status/t1?token=abc&vaani_call_id=call-0001"
            ),
            ("StatusCallbackEvents[]", "answered"),
            ("StatusCallbackEvents[]", "terminal"),
            ("TimeOut", "30"),
            (
                "Url",
                "http://my.exotel.com/vaani1/exoml/start_voice/228144"
            ),
        ])
    );
}

#[tokio::test]
async fn originate_to_stream_and_xml_response() {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TwilioResponse>\n <Call>\n  <Sid>e9f2d2828f126fd3c2f26aa72ac29158</Sid>\n  <Status>in-progress</Status>\n </Call>\n</TwilioResponse>";
    let (base, log) = mock(&[(200, xml)]).await;
    let r = client(&base)
        .originate(&outbound(
            "wss://node1.vaani.example/exotel?vaani_call_id=call-0001",
        ))
        .await;
    assert_eq!(
        r.map(|r| r.provider_call_id).ok(),
        Some("e9f2d2828f126fd3c2f26aa72ac29158".into())
    );
    let body = form_pairs(&seen(&log)[0].body);
    assert!(body.contains(&(
        "StreamUrl".into(),
        "wss://node1.vaani.example/exotel?vaani_call_id=call-0001".into()
    )));
    assert!(body.contains(&("StreamType".into(), "bidirectional".into())));
    assert!(!body.iter().any(|(k, _)| k == "Url"));
}

#[tokio::test]
async fn originate_retries_429_only() {
    let (base, log) = mock(&[
        (429, r#"{"RestException":{"Status":429}}"#),
        (200, CONNECTED),
    ])
    .await;
    assert!(client(&base)
        .originate(&outbound("http://my.exotel.com/vaani1/exoml/start_voice/1"))
        .await
        .is_ok());
    assert_eq!(seen(&log).len(), 2);

    let (base, log) = mock(&[
        (
            400,
            r#"{"RestException":{"Status":400,"Message":"bad From"}}"#,
        ),
        (200, CONNECTED),
    ])
    .await;
    let r = client(&base)
        .originate(&outbound("http://my.exotel.com/vaani1/exoml/start_voice/1"))
        .await;
    assert!(
        matches!(r, Err(RestError::Status { status: 400, .. })),
        "{r:?}"
    );
    assert_eq!(seen(&log).len(), 1);

    let (base, log) = mock(&[(502, ""), (200, CONNECTED)]).await;
    let r = client(&base)
        .originate(&outbound("http://my.exotel.com/vaani1/exoml/start_voice/1"))
        .await;
    assert!(
        matches!(r, Err(RestError::Status { status: 502, .. })),
        "{r:?}"
    );
    assert_eq!(seen(&log).len(), 1);

    let (base, _) = mock(&[(200, r#"{"Call":{}}"#)]).await;
    let r = client(&base)
        .originate(&outbound("http://my.exotel.com/vaani1/exoml/start_voice/1"))
        .await;
    assert!(matches!(r, Err(RestError::Decode { .. })), "{r:?}");

    let mut bad = outbound("http://my.exotel.com/x");
    bad.call_id = "has space".into();
    assert!(matches!(
        client(&base).originate(&bad).await,
        Err(RestError::Invalid(_))
    ));
}

#[tokio::test]
async fn hangup_and_redirect_unsupported() {
    let (base, log) = mock(&[]).await;
    let c = client(&base);
    assert!(matches!(
        c.hangup("b6cf").await,
        Err(RestError::Unsupported {
            provider: "exotel",
            ..
        })
    ));
    assert!(matches!(
        c.redirect("b6cf", &RedirectTarget::Url("https://x.example".into()))
            .await,
        Err(RestError::Unsupported {
            provider: "exotel",
            ..
        })
    ));
    assert!(seen(&log).is_empty());
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

fn ct_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(FORM.to_string())),
        Just(Some("application/json".to_string())),
        ".{0,20}".prop_map(Some),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), ct in ct_strategy(), q in proptest::option::of(".{0,64}")) {
        let _ = exotel::parse(ct.as_deref(), &body, q.as_deref());
        let _ = exotel::passthru_digits(ct.as_deref(), &body);
    }

    #[test]
    fn parse_never_panics_on_plausible_json(
        leg in proptest::option::of(".{0,16}"),
        state in ".{0,12}",
        start in ".{0,30}",
        end in ".{0,30}",
        dur in any::<i64>(),
        custom in ".{0,40}",
    ) {
        let body = serde_json::json!({
            "event_sid": "e", "action_custom_parameter": custom,
            "data": {"leg_sid": leg, "state": state, "start_time": start, "end_time": end, "duration": dur}
        });
        let _ = exotel::parse(Some("application/json"), body.to_string().as_bytes(), None);
        let v1 = serde_json::json!({"CallSid": "s", "Status": state, "StartTime": start, "EndTime": end,
            "ConversationDuration": dur, "CustomField": custom, "Legs": [{"AnsweredBy": state}]});
        let _ = exotel::parse(Some("application/json"), v1.to_string().as_bytes(), None);
    }

    #[test]
    fn verify_never_panics(
        url in ".{0,80}",
        auth in ".{0,60}",
        ip in proptest::option::of(any::<[u8; 4]>()),
        secret in ".{0,20}",
        user in proptest::option::of(".{0,10}"),
    ) {
        let mut req = request(&url, &[("Authorization", auth.as_str())], None);
        req.source_ip = ip.map(IpAddr::from);
        let mut c = VerifyConfig::new(secret, Utc::now());
        c.exotel.basic_user = user;
        let _ = exotel::verify(&req, &c);
        c.exotel.allow_cidrs = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let _ = exotel::verify(&req, &c);
    }

    #[test]
    fn token_round_trip(secret in "[ -~]{1,40}", other in "[ -~]{1,40}") {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("token", &secret);
        let req = request(&format!("{URL}?{}", ser.finish()), &[], None);
        prop_assert_eq!(exotel::verify(&req, &VerifyConfig::new(secret.clone(), Utc::now())), Ok(()));
        if other != secret {
            prop_assert_eq!(exotel::verify(&req, &VerifyConfig::new(other, Utc::now())), Err(VerifyError::BadCredentials));
        }
        let basic_req = request(URL, &[("Authorization", &basic("k", &secret))], None);
        prop_assert_eq!(exotel::verify(&basic_req, &VerifyConfig::new(secret, Utc::now())), Ok(()));
    }

    #[test]
    fn render_never_panics(call_id in ".{0,40}", token in ".{0,60}", url in ".{0,60}") {
        if let Ok(doc) = exotel::render_answer(&AnswerPlan { tenant: "acme".into(), call_id, token, action: AnswerAction::ConnectStream { url } }) {
            let v: Result<serde_json::Value, _> = serde_json::from_str(&doc.body);
            prop_assert!(v.is_ok());
        }
    }
}
