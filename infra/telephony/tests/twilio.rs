//! Twilio: signatures against the SDK's published vectors, fixtures parsed into full
//! `CallEvent`s, TwiML byte-exact, REST call control against a local server, and property tests
//! for hostile input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};
use vaani_telephony::rest::{CallControl, OutboundCall, RedirectTarget, RestConfig, RestError};
use vaani_telephony::twilio::{self, TwilioClient};
use vaani_telephony::{ParseError, RenderError, VerifyConfig, VerifyError, WebhookRequest};

use support::{form_body, form_raw, pairs, seen, Mock, FORM};

fn sample(name: &str) -> Vec<u8> {
    support::sample("twilio", name)
}

fn request(
    method: Method,
    url: &str,
    ct: Option<&str>,
    sig: Option<&str>,
    body: Bytes,
) -> WebhookRequest {
    let mut headers = HeaderMap::new();
    if let Some(ct) = ct {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    if let Some(sig) = sig {
        headers.insert("x-twilio-signature", HeaderValue::from_str(sig).unwrap());
    }
    WebhookRequest {
        method,
        url: url.to_string(),
        headers,
        body,
        source_ip: None,
    }
}

fn cfg(token: &str) -> VerifyConfig {
    VerifyConfig::new(token, Utc::now())
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// twilio-python tests/unit/test_request_validator.py.
const SDK_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
fn sdk_params() -> Vec<(String, String)> {
    pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ])
}

#[test]
fn providers_md_vector() {
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]);
    let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    assert_eq!(twilio::sign(SDK_URL, &params, "12345"), sig);
    let req = request(
        Method::POST,
        SDK_URL,
        Some(FORM),
        Some(sig),
        form_body(&params),
    );
    assert_eq!(twilio::verify(&req, &cfg("12345")), Ok(()));
}

#[test]
fn sdk_vectors() {
    assert_eq!(
        twilio::sign(SDK_URL, &sdk_params(), "12345"),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    // Repeated key: values sorted (Digits1234 before Digits5678).
    let dup = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
    ]);
    assert_eq!(
        twilio::sign(SDK_URL, &dup, "12345"),
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    );
    let req = request(
        Method::POST,
        SDK_URL,
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        Some("IK+Dwps556ElfBT0I3Rgjkr1wJU="),
        Bytes::from_static(b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234"),
    );
    assert_eq!(twilio::verify(&req, &cfg("12345")), Ok(()));
}

#[test]
fn sdk_port_vectors() {
    let body = form_body(&sdk_params());
    let cases = [
        // Signed with :443 added, request URL without a port.
        (SDK_URL.to_string(), "kvajT1Ptam85bY51eRf/AJRuM3w="),
        // Signed with :80 added (http).
        (
            SDK_URL.replace("https", "http"),
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        ),
        // Request URL with a port, signed without it.
        (
            SDK_URL.replace(".com", ".com:1234"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
        // http with port 1234, signed with it.
        (
            SDK_URL
                .replace(".com", ".com:1234")
                .replace("https", "http"),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),
        // Request URL with the default port, signed without.
        (
            SDK_URL.replace(".com", ".com:443"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
    ];
    for (url, sig) in cases {
        let req = request(Method::POST, &url, Some(FORM), Some(sig), body.clone());
        assert_eq!(twilio::verify(&req, &cfg("12345")), Ok(()), "{url}");
    }
}

#[test]
fn json_body_sha256() {
    // twilio-python: body hash and signature of the URL carrying bodySHA256.
    let body = r#"{"property": "value", "boolean": true}"#;
    let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let url = format!("{SDK_URL}&bodySHA256={hash}");
    let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
    let ok = request(
        Method::POST,
        &url,
        Some("application/json"),
        Some(sig),
        Bytes::from(body),
    );
    assert_eq!(twilio::verify(&ok, &cfg("12345")), Ok(()));
    assert_eq!(twilio::sign(&url, &[], "12345"), sig);

    let tampered = request(
        Method::POST,
        &url,
        Some("application/json"),
        Some(sig),
        Bytes::from(body.replace("value", "other")),
    );
    assert_eq!(
        twilio::verify(&tampered, &cfg("12345")),
        Err(VerifyError::BodyHashMismatch)
    );

    let wrong_sig = request(
        Method::POST,
        &url,
        Some("application/json"),
        Some("AAAA"),
        Bytes::from(body),
    );
    assert_eq!(
        twilio::verify(&wrong_sig, &cfg("12345")),
        Err(VerifyError::SignatureMismatch)
    );

    // JSON without bodySHA256: nothing would bind the body to the signature.
    let unbound = request(
        Method::POST,
        SDK_URL,
        Some("application/json"),
        Some(&twilio::sign(SDK_URL, &[], "12345")),
        Bytes::from(body),
    );
    assert!(matches!(
        twilio::verify(&unbound, &cfg("12345")),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn get_signs_the_url_alone() {
    let url =
        "https://hooks.example.in/twilio/status?CallSid=CA1&CallStatus=completed&vaani_call_id=c1";
    let sig = twilio::sign(url, &[], "tok");
    let req = request(Method::GET, url, None, Some(&sig), Bytes::new());
    assert_eq!(twilio::verify(&req, &cfg("tok")), Ok(()));
    // A changed query fails.
    let other = url.replace("completed", "busy");
    let req = request(Method::GET, &other, None, Some(&sig), Bytes::new());
    assert_eq!(
        twilio::verify(&req, &cfg("tok")),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn verify_failures() {
    let params = sdk_params();
    let body = form_body(&params);
    let sig = twilio::sign(SDK_URL, &params, "12345");

    let none = request(Method::POST, SDK_URL, Some(FORM), None, body.clone());
    assert_eq!(
        twilio::verify(&none, &cfg("12345")),
        Err(VerifyError::MissingHeader("X-Twilio-Signature"))
    );
    let empty = request(Method::POST, SDK_URL, Some(FORM), Some(""), body.clone());
    assert_eq!(
        twilio::verify(&empty, &cfg("12345")),
        Err(VerifyError::MissingHeader("X-Twilio-Signature"))
    );

    let padded = request(
        Method::POST,
        SDK_URL,
        Some(FORM),
        Some(&format!(" {sig} ")),
        body.clone(),
    );
    assert_eq!(twilio::verify(&padded, &cfg("12345")), Ok(()));

    let wrong_token = request(Method::POST, SDK_URL, Some(FORM), Some(&sig), body.clone());
    assert_eq!(
        twilio::verify(&wrong_token, &cfg("54321")),
        Err(VerifyError::SignatureMismatch)
    );
    assert!(matches!(
        twilio::verify(&wrong_token, &cfg("")),
        Err(VerifyError::BadKey(_))
    ));

    let mut changed = params.clone();
    changed[1].1 = "9999".into();
    let req = request(
        Method::POST,
        SDK_URL,
        Some(FORM),
        Some(&sig),
        form_body(&changed),
    );
    assert_eq!(
        twilio::verify(&req, &cfg("12345")),
        Err(VerifyError::SignatureMismatch)
    );

    let other_path = request(
        Method::POST,
        "https://mycompany.com/other.php?foo=1&bar=2",
        Some(FORM),
        Some(&sig),
        body.clone(),
    );
    assert_eq!(
        twilio::verify(&other_path, &cfg("12345")),
        Err(VerifyError::SignatureMismatch)
    );

    // A signature over the URL alone does not cover a form body.
    let url_only = twilio::sign(SDK_URL, &[], "12345");
    let req = request(
        Method::POST,
        SDK_URL,
        Some(FORM),
        Some(&url_only),
        body.clone(),
    );
    assert_eq!(
        twilio::verify(&req, &cfg("12345")),
        Err(VerifyError::SignatureMismatch)
    );

    // Non-UTF-8 header bytes are a mismatch, not a panic.
    let mut req = request(Method::POST, SDK_URL, Some(FORM), None, body);
    req.headers.insert(
        "x-twilio-signature",
        HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(
        twilio::verify(&req, &cfg("12345")),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn secret_never_in_errors() {
    let req = request(
        Method::POST,
        SDK_URL,
        Some(FORM),
        Some("x"),
        Bytes::from_static(b"a=1"),
    );
    let err = twilio::verify(&req, &cfg("super-secret-token")).unwrap_err();
    assert!(!err.to_string().contains("super-secret-token"));
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
}

const OUT_SID: &str = "CA8d2c4e6a0b1f3d5c7e9a1b3c5d7e9f10";

#[test]
fn status_callback_completed() {
    let body = sample("status-callback-completed.form");
    let ev = twilio::parse(Some(FORM), &body, Some("vaani_call_id=call-7f3a")).unwrap();
    let want = CallEvent {
        call_id: Some("call-7f3a".into()),
        status: Some(CallStatus::Completed),
        direction: Some(Direction::Outbound),
        from: Some("+14155238886".into()),
        to: Some("+919876543210".into()),
        duration_s: Some(49),
        billed_duration_s: Some(60),
        answered_by: Some("human".into()),
        sequence: Some(3),
        occurred_at: Some(ts(2025, 1, 14, 9, 41, 7)),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Twilio, OUT_SID)
    };
    assert_eq!(ev, want);
    assert_eq!(ev.raw["CallbackSource"], "call-progress-events");
    assert!(
        !ev.raw.contains_key("vaani_call_id"),
        "raw holds what Twilio sent, not our query"
    );
}

#[test]
fn status_callback_completed_json() {
    let body = sample("status-callback-completed.json");
    let ev = twilio::parse(
        Some("application/json"),
        &body,
        Some("vaani_call_id=call-7f3a"),
    )
    .unwrap();
    let raw: Map<String, Value> = serde_json::from_slice(&body).unwrap();
    let want = CallEvent {
        call_id: Some("call-7f3a".into()),
        status: Some(CallStatus::Completed),
        direction: Some(Direction::Outbound),
        from: Some("+14155238886".into()),
        to: Some("+919876543210".into()),
        duration_s: Some(49),
        billed_duration_s: Some(60),
        answered_by: Some("human".into()),
        sequence: Some(3),
        occurred_at: Some(ts(2025, 1, 14, 9, 41, 7)),
        raw,
        ..CallEvent::new(Provider::Twilio, OUT_SID)
    };
    assert_eq!(ev, want);
    // Sniffed as JSON without a content type too.
    assert_eq!(
        twilio::parse(None, &body, Some("vaani_call_id=call-7f3a")).unwrap(),
        want
    );
}

#[test]
fn status_ringing() {
    let body = sample("status-ringing.form");
    let ev = twilio::parse(Some(FORM), &body, None).unwrap();
    let want = CallEvent {
        status: Some(CallStatus::Ringing),
        direction: Some(Direction::Outbound),
        from: Some("+14155238886".into()),
        to: Some("+919876543210".into()),
        sequence: Some(1),
        occurred_at: Some(ts(2025, 1, 14, 9, 40, 9)),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Twilio, OUT_SID)
    };
    assert_eq!(ev, want);
}

#[test]
fn status_busy_bills_nothing() {
    let body = sample("status-busy.form");
    let ev = twilio::parse(Some(FORM), &body, Some("vaani_call_id=call-9")).unwrap();
    let want = CallEvent {
        call_id: Some("call-9".into()),
        status: Some(CallStatus::Busy),
        direction: Some(Direction::Outbound),
        from: Some("+14155238886".into()),
        to: Some("+919876543210".into()),
        duration_s: Some(0),
        billed_duration_s: Some(0),
        sequence: Some(2),
        occurred_at: Some(ts(2025, 1, 14, 10, 2, 31)),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Twilio, OUT_SID)
    };
    assert_eq!(ev, want);
}

#[test]
fn answer_inbound() {
    let body = sample("answer-inbound.form");
    let ev = twilio::parse(Some(FORM), &body, None).unwrap();
    let want = CallEvent {
        status: Some(CallStatus::Ringing),
        direction: Some(Direction::Inbound),
        from: Some("+919876543210".into()),
        to: Some("+14155238886".into()),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Twilio, "CA1b3d5f7a9c2e4a6c8e0a2c4e6a8c0e2f")
    };
    assert_eq!(ev, want);
}

#[test]
fn recording_status() {
    let body = sample("recording-status.form");
    let ev = twilio::parse(Some(FORM), &body, Some("vaani_call_id=call-7f3a")).unwrap();
    let want = CallEvent {
        call_id: Some("call-7f3a".into()),
        recording_url: Some(
            "https://api.twilio.com/2010-04-01/Accounts/AC3f9e5b1c7a2d4e6f8091a2b3c4d5e6f7/Recordings/RE5e7a9c1b3d5f7a9c1e3a5c7e9b1d3f50"
                .into(),
        ),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Twilio, OUT_SID)
    };
    assert_eq!(ev, want);
}

#[test]
fn odd_field_names_and_values() {
    let body = b"callsid=CA9&call_status=IN_PROGRESS&DIRECTION=outbound-dial&from=09876543210&TO=sip%3Aagent%40pbx.example.in&vaani_call_id=body-id";
    let ev = twilio::parse(Some(FORM), body, Some("vaani_call_id=query-id")).unwrap();
    assert_eq!(ev.provider_call_id, "CA9");
    assert_eq!(ev.status, Some(CallStatus::InProgress));
    assert_eq!(ev.direction, Some(Direction::Outbound));
    assert_eq!(ev.from.as_deref(), Some("+919876543210"));
    assert_eq!(ev.to.as_deref(), Some("sip:agent@pbx.example.in"));
    assert_eq!(
        ev.call_id.as_deref(),
        Some("body-id"),
        "the body's own field wins"
    );

    let ev = twilio::parse(
        Some(FORM),
        b"CallSid=CA1&From=client%3Aalice&Direction=trunking-originating",
        None,
    )
    .unwrap();
    assert_eq!(ev.from.as_deref(), Some("client:alice"));
    assert_eq!(ev.direction, None);
}

#[test]
fn status_from_status_callback_event() {
    let ev = twilio::parse(
        Some(FORM),
        b"CallSid=CA1&StatusCallbackEvent=answered",
        None,
    )
    .unwrap();
    assert_eq!(ev.status, Some(CallStatus::InProgress));
    let ev = twilio::parse(
        Some(FORM),
        b"CallSid=CA1&CallStatus=queued&StatusCallbackEvent=answered",
        None,
    )
    .unwrap();
    assert_eq!(ev.status, Some(CallStatus::Initiated), "CallStatus wins");
    let ev = twilio::parse(
        Some(FORM),
        b"CallSid=CA1&CallbackSource=call-progress-events",
        None,
    )
    .unwrap();
    assert_eq!(ev.status, None);
}

#[test]
fn billing_rules() {
    // Only CallDuration: rounded up to whole minutes.
    for (secs, billed) in [(0, 0), (1, 60), (60, 60), (61, 120)] {
        let body = format!("CallSid=CA1&CallStatus=completed&CallDuration={secs}");
        let ev = twilio::parse(Some(FORM), body.as_bytes(), None).unwrap();
        assert_eq!(
            (ev.duration_s, ev.billed_duration_s),
            (Some(secs), Some(billed))
        );
    }
    // Duration (billed minutes) wins over the derived value.
    let ev = twilio::parse(Some(FORM), b"CallSid=CA1&CallDuration=61&Duration=3", None).unwrap();
    assert_eq!(ev.billed_duration_s, Some(180));
    let ev = twilio::parse(Some(FORM), b"CallSid=CA1&Price=-0.0085&PriceUnit=USD", None).unwrap();
    assert_eq!(ev.price, Some(Decimal::new(-85, 4)));
    assert_eq!(ev.currency.as_deref(), Some("USD"));
}

#[test]
fn malformed_inputs() {
    let cases: [(&[u8], Option<&str>, ParseError); 7] = [
        (
            b"CallStatus=completed",
            Some(FORM),
            ParseError::MissingField("CallSid"),
        ),
        (
            b"CallSid=&CallStatus=completed",
            Some(FORM),
            ParseError::MissingField("CallSid"),
        ),
        (
            b"CallSid=CA1&CallStatus=exploded",
            Some(FORM),
            ParseError::BadValue {
                field: "CallStatus",
                value: "exploded".into(),
            },
        ),
        (
            b"CallSid=CA1&CallDuration=ten",
            Some(FORM),
            ParseError::BadValue {
                field: "CallDuration",
                value: "ten".into(),
            },
        ),
        (
            b"CallSid=CA1&SequenceNumber=-1",
            Some(FORM),
            ParseError::BadValue {
                field: "SequenceNumber",
                value: "-1".into(),
            },
        ),
        (
            b"{\"CallSid\":",
            Some("application/json"),
            ParseError::Syntax("JSON"),
        ),
        (
            b"<xml/>",
            Some("text/xml"),
            ParseError::ContentType("text/xml".into()),
        ),
    ];
    for (body, ct, want) in cases {
        assert_eq!(
            twilio::parse(ct, body, None),
            Err(want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // An unreadable timestamp is kept in raw, not fatal.
    let ev = twilio::parse(Some(FORM), b"CallSid=CA1&Timestamp=yesterday", None).unwrap();
    assert_eq!(ev.occurred_at, None);
    assert_eq!(ev.raw["Timestamp"], "yesterday");
    // Invalid UTF-8 in a form body is decoded lossily, not a panic.
    assert!(twilio::parse(Some(FORM), b"CallSid=CA\xff1", None).is_ok());
}

// ---------------------------------------------------------------------------------------------
// TwiML
// ---------------------------------------------------------------------------------------------

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn plan(action: AnswerAction) -> AnswerPlan {
    AnswerPlan {
        tenant: "acme".into(),
        call_id: "c-1".into(),
        token: "t.k/=".into(),
        action,
    }
}

#[test]
fn twiml_connect_sip() {
    let doc = twilio::render_answer(&plan(AnswerAction::ConnectSip {
        uri: "sip:vaani@10.0.1.5:5060;transport=udp".into(),
    }))
    .unwrap();
    assert_eq!(doc.content_type, "application/xml");
    assert_eq!(
        doc.body,
        format!(
            "{DECL}<Response><Dial><Sip>sip:vaani@10.0.1.5:5060;transport=udp?X-Vaani-Tenant=acme&amp;X-Vaani-Call-Id=c-1&amp;X-Vaani-Token=t.k%2F%3D</Sip></Dial></Response>"
        )
    );
    assert!(matches!(
        twilio::render_answer(&plan(AnswerAction::ConnectSip {
            uri: "http://x".into()
        })),
        Err(RenderError::Invalid { .. })
    ));
}

#[test]
fn twiml_connect_stream() {
    let mut p = plan(AnswerAction::ConnectStream {
        url: "wss://node-1.vaani.example/stream".into(),
    });
    p.call_id = r#"a"b<c&d"#.into();
    let doc = twilio::render_answer(&p).unwrap();
    assert_eq!(
        doc.body,
        format!(
            "{DECL}<Response><Connect><Stream url=\"wss://node-1.vaani.example/stream\"><Parameter name=\"vaani_call_id\" value=\"a&quot;b&lt;c&amp;d\"/><Parameter name=\"vaani_token\" value=\"t.k/=\"/></Stream></Connect></Response>"
        )
    );
    for bad in ["https://node/stream", "ws://node/stream", "wss://", ""] {
        assert!(
            matches!(
                twilio::render_answer(&plan(AnswerAction::ConnectStream { url: bad.into() })),
                Err(RenderError::Invalid { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn twiml_say_escapes_hostile_text() {
    let hostile = "Tom & \"Jerry\" <Hangup/> 'x' ]]> \u{0}bell\u{7}";
    let doc = twilio::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: hostile.into(),
        language: Some("en-IN".into()),
    }))
    .unwrap();
    assert_eq!(
        doc.body,
        format!(
            "{DECL}<Response><Say language=\"en-IN\">Tom &amp; &quot;Jerry&quot; &lt;Hangup/&gt; &apos;x&apos; ]]&gt; bell</Say><Hangup/></Response>"
        )
    );
    // Read it back: one <Say> whose text is the message (minus the unencodable controls).
    let mut reader = quick_xml::Reader::from_str(&doc.body);
    let mut texts = Vec::new();
    let mut elements = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                elements.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
            }
            quick_xml::events::Event::Text(t) => texts.push(t.unescape().unwrap().into_owned()),
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(elements, ["Response", "Say", "Hangup"]);
    assert_eq!(texts, ["Tom & \"Jerry\" <Hangup/> 'x' ]]> bell"]);

    let doc = twilio::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: "Busy".into(),
        language: None,
    }))
    .unwrap();
    assert_eq!(
        doc.body,
        format!("{DECL}<Response><Say>Busy</Say><Hangup/></Response>")
    );
}

#[test]
fn twiml_reject() {
    let doc = twilio::render_answer(&plan(AnswerAction::RejectBusy)).unwrap();
    assert_eq!(
        doc.body,
        format!("{DECL}<Response><Reject reason=\"busy\"/></Response>")
    );
}

// ---------------------------------------------------------------------------------------------
// REST call control against a local server
// ---------------------------------------------------------------------------------------------

/// Answers with `statuses` in order, then 200; a Twilio call resource below 300, an error above.
async fn start_fake(statuses: &[u16]) -> (Mock, String) {
    const CALL: &str = r#"{"sid":"CA0f1e2d3c4b5a69788796a5b4c3d2e1f0","status":"queued"}"#;
    const ERROR: &str = r#"{"code":20003,"message":"nope","status":400}"#;
    let replies: Vec<(u16, &str)> = statuses
        .iter()
        .map(|&s| (s, if s < 300 { CALL } else { ERROR }))
        .collect();
    let (base, fake) = support::serve(&replies, (200, CALL), Some("application/json")).await;
    (fake, base)
}

const ACCOUNT: &str = "AC3f9e5b1c7a2d4e6f8091a2b3c4d5e6f7";
const TOKEN: &str = "s3cr3t-auth-token";

fn client(base: &str) -> TwilioClient {
    let mut cfg = support::fast_rest(base, ACCOUNT, TOKEN);
    cfg.max_retries = 3;
    cfg.backoff_base = Duration::from_millis(2);
    TwilioClient::new(cfg).unwrap()
}

fn outbound() -> OutboundCall {
    OutboundCall {
        from: "+14155238886".into(),
        to: "+919876543210".into(),
        call_id: "call-7f3a".into(),
        answer_url: "https://hooks.vaani.example/twilio/answer?tenant=t1".into(),
        status_url: "https://hooks.vaani.example/twilio/status".into(),
        ring_timeout_s: 30,
        machine_detection: true,
        idempotency_key: "call-7f3a".into(),
    }
}

fn basic() -> String {
    support::basic(ACCOUNT, TOKEN)
}

#[tokio::test]
async fn originate_retries_429_then_succeeds() {
    let (fake, base) = start_fake(&[429, 201]).await;
    let r = client(&base).originate(&outbound()).await.unwrap();
    assert_eq!(r.provider_call_id, "CA0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    let hits = seen(&fake);
    assert_eq!(hits.len(), 2, "one retry after 429");
    for hit in &hits {
        assert_eq!(hit.method, Method::POST);
        assert_eq!(
            hit.path,
            format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
        );
        assert_eq!(hit.auth.as_deref(), Some(basic().as_str()));
        assert_eq!(hit.idempotency.as_deref(), Some("call-7f3a"));
        assert_eq!(hit.content_type.as_deref(), Some(FORM));
        assert_eq!(
            hit.form,
            pairs(&[
                ("To", "+919876543210"),
                ("From", "+14155238886"),
                (
                    "Url",
                    "https://hooks.vaani.example/twilio/answer?tenant=t1&vaani_call_id=call-7f3a"
                ),
                ("Method", "POST"),
                (
                    "StatusCallback",
                    "https://hooks.vaani.example/twilio/status?vaani_call_id=call-7f3a"
                ),
                ("StatusCallbackMethod", "POST"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
                ("Timeout", "30"),
                ("MachineDetection", "Enable"),
            ])
        );
    }
}

#[tokio::test]
async fn originate_400_is_not_retried() {
    let (fake, base) = start_fake(&[400, 201]).await;
    let err = client(&base).originate(&outbound()).await.unwrap_err();
    assert!(
        matches!(err, RestError::Status { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(TOKEN));
    assert_eq!(seen(&fake).len(), 1);
}

#[tokio::test]
async fn server_errors_give_up_after_max_retries() {
    let (fake, base) = start_fake(&[503, 503, 503, 503, 503]).await;
    let err = client(&base).hangup("CA1").await.unwrap_err();
    assert!(matches!(err, RestError::Status { status: 503, .. }));
    assert_eq!(seen(&fake).len(), 4, "first try + 3 retries");
}

#[tokio::test]
async fn hangup_and_redirect() {
    let (fake, base) = start_fake(&[]).await;
    let c = client(&base);
    c.hangup("CA0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        .await
        .unwrap();
    c.redirect(
        "CA0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        &RedirectTarget::Url("https://hooks.vaani.example/next".into()),
    )
    .await
    .unwrap();
    c.redirect(
        "CA0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        &RedirectTarget::Transfer("+919876543210".into()),
    )
    .await
    .unwrap();
    c.redirect(
        "CA0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        &RedirectTarget::Transfer("sip:desk@pbx.example.in".into()),
    )
    .await
    .unwrap();
    let hits = seen(&fake);
    let path =
        format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/CA0f1e2d3c4b5a69788796a5b4c3d2e1f0.json");
    assert!(hits
        .iter()
        .all(|h| h.path == path && h.method == Method::POST && h.idempotency.is_none()));
    assert_eq!(hits[0].form, pairs(&[("Status", "completed")]));
    assert_eq!(
        hits[1].form,
        pairs(&[
            ("Url", "https://hooks.vaani.example/next"),
            ("Method", "POST")
        ])
    );
    assert_eq!(
        hits[2].form,
        pairs(&[(
            "Twiml",
            &format!("{DECL}<Response><Dial>+919876543210</Dial></Response>")
        )])
    );
    assert_eq!(
        hits[3].form,
        pairs(&[(
            "Twiml",
            &format!("{DECL}<Response><Dial><Sip>sip:desk@pbx.example.in</Sip></Dial></Response>")
        )])
    );
}

#[tokio::test]
async fn invalid_requests_never_leave_the_process() {
    let (fake, base) = start_fake(&[]).await;
    let c = client(&base);
    assert!(matches!(
        c.hangup("../../Accounts/x").await,
        Err(RestError::Invalid(_))
    ));
    assert!(matches!(c.hangup("").await, Err(RestError::Invalid(_))));
    assert!(matches!(
        c.redirect("CA1", &RedirectTarget::Url("javascript:alert(1)".into()))
            .await,
        Err(RestError::Invalid(_))
    ));
    let mut call = outbound();
    call.idempotency_key = "bad\nkey".into();
    assert!(matches!(
        c.originate(&call).await,
        Err(RestError::Invalid(_))
    ));
    let mut call = outbound();
    call.to = " ".into();
    assert!(matches!(
        c.originate(&call).await,
        Err(RestError::Invalid(_))
    ));
    assert!(seen(&fake).is_empty());
    assert!(TwilioClient::new(RestConfig::new(&base, "AC/../x", TOKEN)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(FORM.to_string())),
        Just(Some("application/json".to_string())),
        Just(Some("text/xml".to_string())),
        ".{0,40}".prop_map(Some),
    ]
}

/// Keys from a small set (so repeats happen) or arbitrary unicode.
fn param() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("Digits".to_string()),
            Just("CallSid".to_string()),
            "[A-Za-z]{1,6}",
            any::<String>(),
        ],
        any::<String>(),
    )
}

proptest! {
    #[test]
    fn parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..512), ct in content_type(), q in prop::option::of(".{0,64}")) {
        let _ = twilio::parse(ct.as_deref(), &body, q.as_deref());
    }

    #[test]
    fn parse_never_panics_on_form_shaped_input(
        fields in prop::collection::vec((prop_oneof![
            Just("CallSid"), Just("CallStatus"), Just("CallDuration"), Just("Duration"), Just("From"),
            Just("To"), Just("Timestamp"), Just("SequenceNumber"), Just("Price"), Just("Direction"),
        ], any::<String>()), 0..12)
    ) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let _ = twilio::parse(Some(FORM), body.as_bytes(), None);
    }

    #[test]
    fn verify_never_panics(
        url in ".{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        sig in prop::collection::vec(any::<u8>(), 0..64),
        ct in content_type(),
        get in any::<bool>(),
        secret in ".{0,16}",
    ) {
        let mut req = request(if get { Method::GET } else { Method::POST }, &url, None, None, Bytes::from(body));
        if let Some(ct) = ct.and_then(|c| HeaderValue::from_str(&c).ok()) {
            req.headers.insert("content-type", ct);
        }
        if let Ok(v) = HeaderValue::from_bytes(&sig) {
            req.headers.insert("x-twilio-signature", v);
        }
        let _ = twilio::verify(&req, &cfg(&secret));
    }

    #[test]
    fn sign_then_verify_round_trips(
        params in prop::collection::vec(param(), 0..10),
        url in prop_oneof![
            Just("https://hooks.vaani.example/twilio/status?vaani_call_id=c1".to_string()),
            Just("http://127.0.0.1:8080/t".to_string()),
            Just("https://h.example:443/x".to_string()),
        ],
        token in ".{1,32}",
        pick in any::<prop::sample::Index>(),
    ) {
        let sig = twilio::sign(&url, &params, &token);
        let req = request(Method::POST, &url, Some(FORM), Some(&sig), form_body(&params));
        prop_assert_eq!(twilio::verify(&req, &cfg(&token)), Ok(()));

        // Params in any order sign the same.
        let mut reversed = params.clone();
        reversed.reverse();
        prop_assert_eq!(twilio::sign(&url, &reversed, &token), sig.clone());

        if !params.is_empty() {
            let mut changed = params.clone();
            changed[pick.index(params.len())].1.push('x');
            let req = request(Method::POST, &url, Some(FORM), Some(&sig), form_body(&changed));
            prop_assert_eq!(twilio::verify(&req, &cfg(&token)), Err(VerifyError::SignatureMismatch));
        }
    }
}

#[test]
fn stream_urls_must_be_wss_except_on_loopback() {
    use vaani_core::{AnswerAction, AnswerPlan};
    let plan = |url: &str| AnswerPlan {
        tenant: "acme".into(),
        call_id: "call-1".into(),
        token: "v1.1.abc".into(),
        action: AnswerAction::ConnectStream { url: url.into() },
    };
    for ok in [
        "wss://media.example.test/streams/acme/twilio",
        "ws://127.0.0.1:8080/streams/acme/twilio",
        "ws://[::1]:8080/streams/acme/twilio",
        "ws://localhost:8080/streams/acme/twilio",
    ] {
        assert!(
            vaani_telephony::twilio::render_answer(&plan(ok)).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "ws://media.example.test/streams/acme/twilio",
        "ws://10.0.0.1/streams",
        "https://media.example.test/streams",
        "wss://",
        "not a url",
    ] {
        assert!(
            vaani_telephony::twilio::render_answer(&plan(bad)).is_err(),
            "{bad}"
        );
    }
}
