//! Telnyx: signatures, Call Control and TeXML webhooks (fixtures in events/samples/telnyx),
//! TeXML answer documents, and Call Control REST against a local server.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use quick_xml::events::Event;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use support::{seen, Mock};
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};
use vaani_telephony::telnyx::{self, TelnyxClient, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use vaani_telephony::{
    CallControl, OutboundCall, ParseError, RedirectTarget, RenderError, RestConfig, RestError,
    VerifyConfig, VerifyError, WebhookRequest,
};

const CALL_ID: &str = "01J9ZK3M8Q4V6W2X5Y7A1B3C4D";
const CCID: &str = "v3:Rzae0d1JdOKdwLbuRkvxHZ2rQ3T6eZ5Ob9XkN4bY1mFqvC7a2TwQg";

fn sample(name: &str) -> Vec<u8> {
    support::sample("telnyx", name)
}

fn json_map(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => m,
        other => panic!("not a JSON object: {other:?}"),
    }
}

/// The fixture as the parser should keep it: everything except `meta` (attempt, delivered_to).
fn raw_of(bytes: &[u8]) -> Map<String, Value> {
    let mut m = json_map(bytes);
    m.remove("meta");
    m
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn parse_json(bytes: &[u8]) -> CallEvent {
    telnyx::parse(Some("application/json"), bytes, None).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn public_b64(k: &SigningKey) -> String {
    STANDARD.encode(k.verifying_key().to_bytes())
}

const NOW: i64 = 1_756_804_686; // 2025-09-02T09:18:06Z

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).single().unwrap_or_default()
}

fn request(body: &[u8], headers: &[(&'static str, &str)]) -> WebhookRequest {
    let mut map = HeaderMap::new();
    map.insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        map.insert(
            *k,
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    WebhookRequest {
        method: Method::POST,
        url: "https://hooks.example.com/telnyx/status".into(),
        headers: map,
        body: Bytes::copy_from_slice(body),
        source_ip: None,
    }
}

fn signed(body: &[u8], ts: i64, k: &SigningKey) -> WebhookRequest {
    let ts = ts.to_string();
    let sig = telnyx::sign(body, &ts, k);
    request(body, &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)])
}

fn cfg(secret: &str) -> VerifyConfig {
    VerifyConfig::new(secret, now())
}

#[test]
fn good_signature_verifies() {
    let k = key();
    let body = sample("call.hangup.normal.json");
    let req = signed(&body, NOW - 2, &k);
    assert_eq!(telnyx::verify(&req, &cfg(&public_b64(&k))), Ok(()));
    // Through the provider-neutral dispatch and detection too.
    assert_eq!(
        vaani_telephony::verify(Provider::Telnyx, &req, &cfg(&public_b64(&k))),
        Ok(())
    );
    assert_eq!(
        vaani_telephony::detect_provider(&req),
        Some(Provider::Telnyx)
    );
}

#[test]
fn signature_covers_timestamp_pipe_body_exactly() {
    // Built by hand, without `sign`, so the test pins the wire format itself.
    use ed25519_dalek::Signer;
    let k = key();
    let body = br#"{"data":{"event_type":"call.initiated"}}"#;
    let ts = NOW.to_string();
    let mut msg = ts.clone().into_bytes();
    msg.push(b'|');
    msg.extend_from_slice(body);
    let sig = STANDARD.encode(k.sign(&msg).to_bytes());
    assert_eq!(telnyx::sign(body, &ts, &k), sig);
    let req = request(body, &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &ts)]);
    assert_eq!(telnyx::verify(&req, &cfg(&public_b64(&k))), Ok(()));
}

#[test]
fn tampered_body_is_refused() {
    let k = key();
    let body = sample("call.hangup.normal.json");
    let mut req = signed(&body, NOW, &k);
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|b| *b == b'2').unwrap_or(0);
    tampered[pos] = b'3';
    req.body = Bytes::from(tampered);
    assert_eq!(
        telnyx::verify(&req, &cfg(&public_b64(&k))),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn tampered_timestamp_is_refused() {
    let k = key();
    let body = sample("call.initiated.json");
    let sig = telnyx::sign(&body, &NOW.to_string(), &k);
    let other = (NOW - 10).to_string();
    let req = request(
        &body,
        &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, &other)],
    );
    assert_eq!(
        telnyx::verify(&req, &cfg(&public_b64(&k))),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn another_accounts_key_is_refused() {
    let body = sample("call.initiated.json");
    let req = signed(&body, NOW, &key());
    let other = SigningKey::from_bytes(&[9u8; 32]);
    assert_eq!(
        telnyx::verify(&req, &cfg(&public_b64(&other))),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn stale_timestamps_are_refused_both_ways() {
    let k = key();
    let body = sample("call.initiated.json");
    let pk = public_b64(&k);
    let old = signed(&body, NOW - 301, &k);
    assert_eq!(
        telnyx::verify(&old, &cfg(&pk)),
        Err(VerifyError::Stale {
            age_s: 301,
            window_s: 300
        })
    );
    let future = signed(&body, NOW + 301, &k);
    assert_eq!(
        telnyx::verify(&future, &cfg(&pk)),
        Err(VerifyError::Stale {
            age_s: -301,
            window_s: 300
        })
    );
    // The window is inclusive.
    assert_eq!(
        telnyx::verify(&signed(&body, NOW - 300, &k), &cfg(&pk)),
        Ok(())
    );
    assert_eq!(
        telnyx::verify(&signed(&body, NOW + 300, &k), &cfg(&pk)),
        Ok(())
    );
    // A configured window is honoured.
    let mut narrow = cfg(&pk);
    narrow.replay_window = Duration::from_secs(10);
    assert_eq!(
        telnyx::verify(&signed(&body, NOW - 11, &k), &narrow),
        Err(VerifyError::Stale {
            age_s: 11,
            window_s: 10
        })
    );
    // Far-off values don't overflow.
    assert!(matches!(
        telnyx::verify(&signed(&body, i64::MIN, &k), &cfg(&pk)),
        Err(VerifyError::Stale { .. })
    ));
}

#[test]
fn bad_keys_are_reported_without_the_key() {
    let body = sample("call.initiated.json");
    let req = signed(&body, NOW, &key());
    let short = STANDARD.encode([1u8; 31]);
    for secret in ["not base64 at all!!", short.as_str(), "", "AAAA"] {
        match telnyx::verify(&req, &cfg(secret)) {
            Err(e @ VerifyError::BadKey(_)) => {
                let shown = e.to_string();
                assert!(
                    secret.len() < 5 || !shown.contains(secret),
                    "key echoed: {shown}"
                );
                assert_eq!(e.code(), "bad_verification_key");
            }
            other => panic!("{secret:?}: {other:?}"),
        }
    }
}

#[test]
fn key_forms_accepted() {
    let k = key();
    let body = sample("call.initiated.json");
    let req = signed(&body, NOW, &k);
    let raw = k.verifying_key().to_bytes();
    // Unpadded base64, and the SPKI (DER) form some tools export.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&raw);
    for secret in [
        STANDARD_NO_PAD.encode(raw),
        STANDARD.encode(&spki),
        format!("  {}\n", STANDARD.encode(raw)),
    ] {
        assert_eq!(telnyx::verify(&req, &cfg(&secret)), Ok(()), "{secret}");
    }
}

#[test]
fn missing_headers() {
    let k = key();
    let pk = public_b64(&k);
    let body = sample("call.initiated.json");
    let sig = telnyx::sign(&body, &NOW.to_string(), &k);
    let ts = NOW.to_string();
    assert_eq!(
        telnyx::verify(&request(&body, &[(TIMESTAMP_HEADER, &ts)]), &cfg(&pk)),
        Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
    );
    assert_eq!(
        telnyx::verify(&request(&body, &[(SIGNATURE_HEADER, &sig)]), &cfg(&pk)),
        Err(VerifyError::MissingHeader(TIMESTAMP_HEADER))
    );
    assert_eq!(
        telnyx::verify(
            &request(&body, &[(SIGNATURE_HEADER, " "), (TIMESTAMP_HEADER, &ts)]),
            &cfg(&pk)
        ),
        Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
    );
    assert_eq!(
        telnyx::verify(&request(&body, &[]), &cfg(&pk)).map_err(|e| e.http_status()),
        Err(401)
    );
}

#[test]
fn malformed_headers() {
    let k = key();
    let pk = public_b64(&k);
    let body = sample("call.initiated.json");
    let ts = NOW.to_string();
    let short_sig = STANDARD.encode([0u8; 63]);
    let long_sig = STANDARD.encode([0u8; 65]);
    for sig in ["%%%not-base64%%%", short_sig.as_str(), long_sig.as_str()] {
        let req = request(&body, &[(SIGNATURE_HEADER, sig), (TIMESTAMP_HEADER, &ts)]);
        assert!(
            matches!(telnyx::verify(&req, &cfg(&pk)), Err(VerifyError::Malformed { what, .. }) if what == SIGNATURE_HEADER),
            "{sig}"
        );
    }
    let sig = telnyx::sign(&body, "soon", &k);
    for ts in ["soon", "1756804686.5", "0x10"] {
        let req = request(&body, &[(SIGNATURE_HEADER, &sig), (TIMESTAMP_HEADER, ts)]);
        assert!(
            matches!(telnyx::verify(&req, &cfg(&pk)), Err(VerifyError::Malformed { what, .. }) if what == TIMESTAMP_HEADER),
            "{ts}"
        );
    }
    // A 64-byte signature of zeros is well-formed but wrong.
    let zeros = STANDARD.encode([0u8; 64]);
    let req = request(
        &body,
        &[(SIGNATURE_HEADER, &zeros), (TIMESTAMP_HEADER, &ts)],
    );
    assert_eq!(
        telnyx::verify(&req, &cfg(&pk)),
        Err(VerifyError::SignatureMismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// Call Control webhooks
// ---------------------------------------------------------------------------------------------

#[test]
fn call_initiated() {
    let body = sample("call.initiated.json");
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some(CALL_ID.into());
    want.status = Some(CallStatus::Initiated);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+12182950349".into());
    want.to = Some("+919876543210".into());
    want.occurred_at = Some(at("2025-09-02T09:17:38.204311Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn call_answered_with_json_client_state() {
    let body = sample("call.answered.json");
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some(CALL_ID.into());
    want.status = Some(CallStatus::InProgress);
    want.from = Some("+12182950349".into());
    want.to = Some("+919876543210".into());
    want.occurred_at = Some(at("2025-09-02T09:17:44.601583Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn call_hangup_normal_clearing() {
    let body = sample("call.hangup.normal.json");
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some(CALL_ID.into());
    want.status = Some(CallStatus::Completed);
    want.from = Some("+12182950349".into());
    want.to = Some("+919876543210".into());
    // 09:17:44.596122 .. 09:18:06.396120 is 21.8 s: 22 s talked, one 60 s increment billed.
    want.duration_s = Some(22);
    want.billed_duration_s = Some(60);
    want.occurred_at = Some(at("2025-09-02T09:18:06.412730Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn call_hangup_busy() {
    let body = sample("call.hangup.busy.json");
    let mut want = CallEvent::new(
        Provider::Telnyx,
        "v3:Kq8cT2vWm0XoFhN5sJbL3yRaZ9uEgD1iPw6tY4nVxHc7OeSr2M",
    );
    want.call_id = Some(CALL_ID.into());
    want.status = Some(CallStatus::Busy);
    want.from = Some("+12182950349".into());
    want.to = Some("+918047491899".into());
    want.duration_s = Some(0);
    want.billed_duration_s = Some(0);
    want.occurred_at = Some(at("2025-09-02T10:02:11.950244Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn machine_detection_ended() {
    let body = sample("call.machine.detection.ended.json");
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some(CALL_ID.into());
    want.from = Some("+12182950349".into());
    want.to = Some("+919876543210".into());
    want.answered_by = Some("machine".into());
    want.occurred_at = Some(at("2025-09-02T09:17:47.884102Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn recording_saved_falls_back_to_query_call_id() {
    // Its client_state is someone else's ("have a nice day =]"), so our id comes from the URL.
    let body = sample("call.recording.saved.json");
    let got = telnyx::parse(
        Some("application/json"),
        &body,
        Some("tenant=t1&vaani_call_id=c-from-url"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some("c-from-url".into());
    want.recording_url = Some(
        "https://s3.amazonaws.com/telephony-recorder-prod/0f7511f9fc75/2025-09-02/\
         aebb45bc-87e1-11f0-9a2d-02420aef3e20-1756804664.mp3?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600"
            .into(),
    );
    want.occurred_at = Some(at("2025-09-02T09:18:07.508869Z"));
    want.raw = raw_of(&body);
    assert_eq!(got, want);
    // Without the query there is no call id to be had.
    assert_eq!(parse_json(&body).call_id, None);
}

#[test]
fn call_cost() {
    let body = sample("call.cost.json");
    let mut want = CallEvent::new(Provider::Telnyx, CCID);
    want.call_id = Some(CALL_ID.into());
    want.billed_duration_s = Some(60);
    want.price = Some(Decimal::new(125, 4));
    want.currency = Some("USD".into());
    want.occurred_at = Some(at("2025-09-02T09:18:09.102345Z"));
    want.raw = raw_of(&body);
    assert_eq!(parse_json(&body), want);
}

#[test]
fn content_type_is_sniffed() {
    let body = sample("call.initiated.json");
    assert_eq!(telnyx::parse(None, &body, None), Ok(parse_json(&body)));
    assert_eq!(
        vaani_telephony::parse(
            Provider::Telnyx,
            Some("application/json; charset=utf-8"),
            &body,
            None
        ),
        Ok(parse_json(&body))
    );
}

fn hangup_with(cause: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"data": {"event_type": "call.hangup", "id": "e1",
        "occurred_at": "2025-09-02T09:18:06Z",
        "payload": {"call_control_id": "cc1", "hangup_cause": cause, "start_time": "2025-09-02T09:17:06Z"}}}))
    .unwrap_or_default()
}

#[test]
fn hangup_causes_map_to_statuses() {
    for (cause, status) in [
        ("normal_clearing", CallStatus::Completed),
        ("time_limit", CallStatus::Completed),
        ("unspecified", CallStatus::Completed),
        ("user_busy", CallStatus::Busy),
        ("timeout", CallStatus::NoAnswer),
        ("no_answer", CallStatus::NoAnswer),
        ("originator_cancel", CallStatus::Canceled),
        ("call_rejected", CallStatus::Failed),
        ("not_found", CallStatus::Failed),
        ("unallocated_number", CallStatus::Failed),
        ("something_new", CallStatus::Failed),
    ] {
        let ev = parse_json(&hangup_with(cause));
        assert_eq!(ev.status, Some(status), "{cause}");
        if status == CallStatus::Completed {
            // No end_time: occurred_at ends the call.
            assert_eq!(
                (ev.duration_s, ev.billed_duration_s),
                (Some(60), Some(60)),
                "{cause}"
            );
        } else {
            assert_eq!(
                (ev.duration_s, ev.billed_duration_s),
                (Some(0), Some(0)),
                "{cause}"
            );
        }
    }
}

#[test]
fn other_call_events_carry_no_status_and_bridged_is_in_progress() {
    let ev = |t: &str| {
        parse_json(
            &serde_json::to_vec(
                &json!({"data": {"event_type": t, "payload": {"call_control_id": "cc1"}}}),
            )
            .unwrap_or_default(),
        )
    };
    assert_eq!(ev("call.bridged").status, Some(CallStatus::InProgress));
    assert_eq!(ev("call.playback.ended").status, None);
    assert_eq!(ev("call.machine.premium.detection.ended").answered_by, None);
}

#[test]
fn retries_and_failover_keep_the_dedupe_id() {
    let first = sample("call.hangup.normal.json");
    let mut retry = json_map(&first);
    retry.insert(
        "meta".into(),
        json!({"attempt": 5, "delivered_to": "https://failover.example.com/telnyx"}),
    );
    let retry = serde_json::to_vec(&retry).unwrap_or_default();
    let a = parse_json(&first);
    let b = parse_json(&retry);
    assert_eq!(a.dedupe_id(), b.dedupe_id());
    // Other meta keys, were Telnyx to add some, stay in raw.
    let mut extra = json_map(&first);
    extra.insert("meta".into(), json!({"attempt": 1, "trace": "x"}));
    let c = parse_json(&serde_json::to_vec(&extra).unwrap_or_default());
    assert_eq!(c.raw.get("meta"), Some(&json!({"trace": "x"})));
    // A different event for the same call is a different id.
    let other = parse_json(&sample("call.answered.json"));
    assert_ne!(a.dedupe_id(), other.dedupe_id());
}

#[test]
fn client_state_shapes() {
    let ev = |cs: &str, q: Option<&str>| {
        let body = serde_json::to_vec(&json!({"data": {"event_type": "call.answered",
            "payload": {"call_control_id": "cc1", "client_state": cs}}}))
        .unwrap_or_default();
        telnyx::parse(Some("application/json"), &body, q)
            .unwrap_or_else(|e| panic!("{e}"))
            .call_id
    };
    let b = |s: &str| STANDARD.encode(s);
    assert_eq!(
        ev(&telnyx::client_state_for("c 1&2"), None).as_deref(),
        Some("c 1&2")
    );
    assert_eq!(ev(&b("x=1&vaani_call_id=c2"), None).as_deref(), Some("c2"));
    assert_eq!(
        ev(&b(r#"{"vaani_call_id":"c3","other":1}"#), None).as_deref(),
        Some("c3")
    );
    assert_eq!(
        ev(&STANDARD_NO_PAD.encode("vaani_call_id=c4"), None).as_deref(),
        Some("c4")
    );
    // Not ours, or not base64: the URL's query decides.
    assert_eq!(
        ev(&b("have a nice day"), Some("vaani_call_id=q1")).as_deref(),
        Some("q1")
    );
    assert_eq!(ev("***", Some("vaani_call_id=q2")).as_deref(), Some("q2"));
    assert_eq!(ev(&b(r#"{"vaani_call_id":7}"#), None), None);
    assert_eq!(ev(&b("vaani_call_id="), Some("vaani_call_id=")), None);
}

#[test]
fn malformed_call_control_bodies() {
    let p = |v: Value| {
        telnyx::parse(
            Some("application/json"),
            &serde_json::to_vec(&v).unwrap_or_default(),
            None,
        )
    };
    assert_eq!(
        p(json!({"data": "x"})),
        Err(ParseError::MissingField("data"))
    );
    assert_eq!(
        p(json!({"data": {"payload": {}}})),
        Err(ParseError::MissingField("data.event_type"))
    );
    assert_eq!(
        p(json!({"data": {"event_type": "call.hangup"}})),
        Err(ParseError::MissingField("data.payload"))
    );
    assert_eq!(
        p(json!({"data": {"event_type": "call.hangup", "payload": {"call_control_id": 5}}})),
        Err(ParseError::MissingField("call_control_id"))
    );
    assert_eq!(
        p(json!({"data": {"event_type": "message.received", "payload": {"id": "m1"}}})),
        Err(ParseError::NotACallEvent("message.received".into()))
    );
    assert!(matches!(
        p(
            json!({"data": {"event_type": "call.hangup", "occurred_at": "yesterday", "payload": {"call_control_id": "c"}}})
        ),
        Err(ParseError::BadValue {
            field: "data.occurred_at",
            ..
        })
    ));
    assert!(matches!(
        p(
            json!({"data": {"event_type": "call.cost", "payload": {"call_control_id": "c", "total_cost": "cheap"}}})
        ),
        Err(ParseError::BadValue {
            field: "total_cost",
            ..
        })
    ));
    let long = "x".repeat(10_000);
    match p(json!({"data": {"event_type": long, "payload": {}}})) {
        Err(ParseError::NotACallEvent(s)) => assert!(s.len() <= 80),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        telnyx::parse(Some("application/json"), b"{not json", None),
        Err(ParseError::Syntax("JSON"))
    );
    assert!(matches!(
        telnyx::parse(Some("image/png"), b"x", None),
        Err(ParseError::ContentType(_))
    ));
    // A JSON body that is neither Call Control nor TeXML.
    assert_eq!(
        p(json!({"hello": "world"})),
        Err(ParseError::MissingField("CallSid"))
    );
}

// ---------------------------------------------------------------------------------------------
// TeXML status callbacks
// ---------------------------------------------------------------------------------------------

#[test]
fn texml_status_callback() {
    let body = sample("texml-status-completed.form");
    let got = telnyx::parse(
        Some("application/x-www-form-urlencoded"),
        &body,
        Some(&format!("vaani_call_id={CALL_ID}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sid = "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ";
    let mut want = CallEvent::new(Provider::Telnyx, sid);
    want.call_id = Some(CALL_ID.into());
    want.status = Some(CallStatus::Completed);
    want.direction = Some(Direction::Inbound);
    want.from = Some("+919876543210".into());
    want.to = Some("+12182950349".into());
    want.duration_s = Some(22);
    want.billed_duration_s = Some(60);
    want.sequence = Some(3);
    want.occurred_at = Some(at("2025-09-02T09:18:06.731479Z"));
    let mut raw = Map::new();
    for (k, v) in [
        ("AccountSid", "cb6cfbbc-eb00-41af-a3f3-0d7b32009e4b"),
        ("CallDuration", "22"),
        ("CallSid", sid),
        ("CallSidLegacy", sid),
        ("CallStatus", "completed"),
        ("CallbackSource", "call-progress-events"),
        ("ConnectionId", "1684641123236054244"),
        ("Direction", "inbound"),
        ("From", "+919876543210"),
        ("HangupSource", "caller"),
        ("SequenceNumber", "3"),
        ("Timestamp", "2025-09-02 09:18:06.731479Z"),
        ("To", "+12182950349"),
    ] {
        raw.insert(k.into(), Value::String(v.into()));
    }
    want.raw = raw;
    assert_eq!(got, want);
}

#[test]
fn texml_statuses_and_shapes() {
    let p = |body: &str| {
        telnyx::parse(
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
            None,
        )
    };
    for (s, want) in [
        ("queued", CallStatus::Initiated),
        ("initiated", CallStatus::Initiated),
        ("ringing", CallStatus::Ringing),
        ("in-progress", CallStatus::InProgress),
        ("completed", CallStatus::Completed),
        ("busy", CallStatus::Busy),
        ("no-answer", CallStatus::NoAnswer),
        ("failed", CallStatus::Failed),
        ("canceled", CallStatus::Canceled),
    ] {
        let ev = p(&format!("CallSid=c1&CallStatus={s}&CallDuration=61"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.status, Some(want), "{s}");
        // Durations only count once the call is over.
        let billed = if want.is_terminal() { Some(120) } else { None };
        assert_eq!(ev.billed_duration_s, billed, "{s}");
    }
    assert!(matches!(
        p("CallSid=c1&CallStatus=dancing"),
        Err(ParseError::BadValue {
            field: "CallStatus",
            ..
        })
    ));
    assert_eq!(
        p("CallStatus=completed"),
        Err(ParseError::MissingField("CallSid"))
    );
    assert!(matches!(
        p("CallSid=c1&CallStatus=completed&CallDuration=-3"),
        Err(ParseError::BadValue { .. })
    ));
    assert!(matches!(
        p("CallSid=c1&SequenceNumber=x"),
        Err(ParseError::BadValue { .. })
    ));
    assert!(matches!(
        p("CallSid=c1&Timestamp=someday"),
        Err(ParseError::BadValue { .. })
    ));
    let ev = p("CallSid=c1&Direction=outbound-api&Timestamp=Tue,%2002%20Sep%202025%2009:18:06%20%2B0000&AnsweredBy=human")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ev.direction, Some(Direction::Outbound));
    assert_eq!(ev.occurred_at, Some(at("2025-09-02T09:18:06Z")));
    assert_eq!(ev.answered_by.as_deref(), Some("human"));
    // Recording callback: no status.
    let ev =
        p("CallSid=c1&RecordingStatus=completed&RecordingUrl=https%3A%2F%2Frec.example%2Fr.mp3")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (ev.status, ev.recording_url.as_deref()),
        (None, Some("https://rec.example/r.mp3"))
    );
    // GET callback: everything in the query, and raw keeps it.
    let ev = telnyx::parse(
        None,
        b"",
        Some("CallSid=c9&CallStatus=ringing&vaani_call_id=v9"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            ev.provider_call_id.as_str(),
            ev.status,
            ev.call_id.as_deref()
        ),
        ("c9", Some(CallStatus::Ringing), Some("v9"))
    );
    assert_eq!(ev.raw.get("CallSid"), Some(&json!("c9")));
    // Flat JSON (no `data`) is read the same way.
    let ev = telnyx::parse(
        Some("application/json"),
        br#"{"CallSid":"c7","CallStatus":"busy"}"#,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ev.status, Some(CallStatus::Busy));
}

// ---------------------------------------------------------------------------------------------
// TeXML answer documents
// ---------------------------------------------------------------------------------------------

fn plan(action: AnswerAction) -> AnswerPlan {
    AnswerPlan {
        tenant: "acme".into(),
        call_id: "c-42".into(),
        token: "tok.abc_123".into(),
        action,
    }
}

fn render(action: AnswerAction) -> String {
    let doc = telnyx::render_answer(&plan(action)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.content_type, "text/xml");
    doc.body
}

/// Element names, attributes and text, in document order, from a strict XML read.
fn xml_outline(doc: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(doc);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let mut s = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                for a in e.attributes() {
                    let a = a.unwrap_or_else(|err| panic!("{err}"));
                    let v = a.unescape_value().unwrap_or_else(|err| panic!("{err}"));
                    s.push_str(&format!(" {}={v}", String::from_utf8_lossy(a.key.as_ref())));
                }
                out.push(s);
            }
            Ok(Event::Text(t)) => out.push(format!(
                "text:{}",
                t.unescape().unwrap_or_else(|err| panic!("{err}"))
            )),
            Ok(Event::End(e)) => {
                out.push(format!("/{}", String::from_utf8_lossy(e.name().as_ref())))
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed: {e}\n{doc}"),
        }
    }
    out
}

#[test]
fn texml_connect_sip() {
    let body = render(AnswerAction::ConnectSip {
        uri: "sip:media-1@10.0.0.5:5060;transport=tcp".into(),
    });
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial><Sip>\
         sip:media-1@10.0.0.5:5060;transport=tcp?X-Vaani-Tenant=acme&amp;X-Vaani-Call-Id=c-42&amp;X-Vaani-Token=tok.abc_123\
         </Sip></Dial></Response>"
    );
}

#[test]
fn texml_connect_stream() {
    let body = render(AnswerAction::ConnectStream {
        url: "wss://node-1.vaani.example/telnyx?x=1&y=2".into(),
    });
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
         <Stream url=\"wss://node-1.vaani.example/telnyx?x=1&amp;y=2\" bidirectionalMode=\"rtp\" bidirectionalCodec=\"PCMU\">\
         <Parameter name=\"vaani_call_id\" value=\"c-42\"/><Parameter name=\"vaani_token\" value=\"tok.abc_123\"/>\
         </Stream></Connect></Response>"
    );
}

#[test]
fn texml_play_and_hangup_and_reject() {
    assert_eq!(
        render(AnswerAction::PlayAndHangup { message: "All agents are busy.".into(), language: None }),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>All agents are busy.</Say><Hangup/></Response>"
    );
    assert_eq!(
        render(AnswerAction::PlayAndHangup { message: "नमस्ते".into(), language: Some("hi-IN".into()) }),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say voice=\"alice\" language=\"hi-IN\">नमस्ते</Say><Hangup/></Response>"
    );
    assert_eq!(
        render(AnswerAction::RejectBusy),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject reason=\"busy\"/></Response>"
    );
}

#[test]
fn hostile_text_is_escaped_not_injected() {
    let evil = "</Say><Dial>+15550000000</Dial><Say>&amp; \"quoted\" 'single' <!-- --> ]]> \u{0}\u{1b}\u{fffe}";
    let body = render(AnswerAction::PlayAndHangup {
        message: evil.into(),
        language: None,
    });
    assert_eq!(
        xml_outline(&body),
        vec![
            "Response".to_string(),
            "Say".into(),
            // Control characters XML cannot carry are dropped; everything else survives as text.
            "text:</Say><Dial>+15550000000</Dial><Say>&amp; \"quoted\" 'single' <!-- --> ]]> "
                .into(),
            "/Say".into(),
            "Hangup".into(),
            "/Response".into(),
        ]
    );

    let mut p = plan(AnswerAction::ConnectStream {
        url: "wss://n.example/s?a=\"><Hangup/>".into(),
    });
    p.call_id = "id\"/><Hangup/><x a=\"".into();
    p.token = "t&<>'".into();
    let body = telnyx::render_answer(&p)
        .unwrap_or_else(|e| panic!("{e}"))
        .body;
    assert_eq!(
        xml_outline(&body),
        vec![
            "Response",
            "Connect",
            "Stream url=wss://n.example/s?a=\"><Hangup/> bidirectionalMode=rtp bidirectionalCodec=PCMU",
            "Parameter name=vaani_call_id value=id\"/><Hangup/><x a=\"",
            "Parameter name=vaani_token value=t&<>'",
            "/Stream",
            "/Connect",
            "/Response",
        ]
    );

    // In a SIP URI the ids are percent-encoded, so they cannot add URI headers or parameters.
    let mut p = plan(AnswerAction::ConnectSip {
        uri: "sip:node@10.0.0.5?X-Existing=1".into(),
    });
    p.call_id = "a&X-Admin=1;b".into();
    let body = telnyx::render_answer(&p)
        .unwrap_or_else(|e| panic!("{e}"))
        .body;
    assert_eq!(
        xml_outline(&body)[3],
        "text:sip:node@10.0.0.5?X-Existing=1&X-Vaani-Tenant=acme&X-Vaani-Call-Id=a%26X-Admin%3D1%3Bb&X-Vaani-Token=tok.abc_123"
    );
}

#[test]
fn invalid_plans_are_refused() {
    let bad = |p: AnswerPlan| matches!(telnyx::render_answer(&p), Err(RenderError::Invalid { .. }));
    assert!(bad(plan(AnswerAction::ConnectSip {
        uri: "http://x".into()
    })));
    assert!(bad(plan(AnswerAction::ConnectSip { uri: "sip:".into() })));
    assert!(bad(plan(AnswerAction::ConnectSip {
        uri: "sip:a b@c".into()
    })));
    assert!(bad(plan(AnswerAction::ConnectSip {
        uri: "sip:a@c\r\nX-Evil: 1".into()
    })));
    assert!(bad(plan(AnswerAction::ConnectStream {
        url: "https://x.example/s".into()
    })));
    assert!(bad(plan(AnswerAction::ConnectStream {
        url: "not a url".into()
    })));
    assert!(bad(plan(AnswerAction::PlayAndHangup {
        message: "hi".into(),
        language: Some("en\" x=\"".into())
    })));
    let mut p = plan(AnswerAction::ConnectStream {
        url: "wss://x.example/s".into(),
    });
    p.token = String::new();
    assert!(bad(p));
    let mut p = plan(AnswerAction::ConnectSip {
        uri: "sip:a@b".into(),
    });
    p.call_id = "a\u{0}b".into();
    assert!(bad(p));
    // Through the dispatch as well.
    assert!(
        vaani_telephony::render_answer(Provider::Telnyx, &plan(AnswerAction::RejectBusy)).is_ok()
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn scalar_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "call.hangup",
            "call.initiated",
            "call.cost",
            "call.recording.saved",
            "2025-09-02T09:18:06Z",
            "normal_clearing",
            "user_busy",
            "-1",
            "1e400",
            "dmFhbmlfY2FsbF9pZD0x",
            "incoming",
        ])
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn payload_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "call_control_id",
        "client_state",
        "from",
        "to",
        "direction",
        "start_time",
        "end_time",
        "hangup_cause",
        "result",
        "recording_urls",
        "public_recording_urls",
        "billed_duration_secs",
        "total_cost",
        "cost_parts",
    ]);
    let leaf = scalar_json();
    let value = leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["mp3", "wav", "currency", "x"]).prop_map(String::from),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(keys.prop_map(String::from), value, 0..10)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512), q in ".{0,60}") {
        for ct in [None, Some("application/json"), Some("application/x-www-form-urlencoded"), Some("text/plain")] {
            let _ = telnyx::parse(ct, &body, Some(&q));
        }
    }

    #[test]
    fn parse_never_panics_on_call_control_shapes(
        event_type in scalar_json(), occurred_at in scalar_json(), payload in payload_json(), meta in scalar_json()
    ) {
        let body = json!({"data": {"event_type": event_type, "occurred_at": occurred_at, "payload": payload}, "meta": meta});
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if let Ok(ev) = telnyx::parse(Some("application/json"), &bytes, Some("vaani_call_id=q")) {
            prop_assert!(!ev.provider_call_id.is_empty());
            let _ = ev.dedupe_id();
        }
    }

    #[test]
    fn parse_never_panics_on_texml_forms(
        pairs in prop::collection::vec((prop::sample::select(vec![
            "CallSid", "CallStatus", "CallDuration", "SequenceNumber", "Timestamp", "Direction", "From", "To",
            "AnsweredBy", "RecordingUrl", "vaani_call_id",
        ]), ".{0,30}"), 0..12)
    ) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let _ = telnyx::parse(Some("application/x-www-form-urlencoded"), body.as_bytes(), None);
    }

    #[test]
    fn verify_never_panics(
        sig in ".{0,100}", ts in ".{0,20}", secret in ".{0,60}", body in prop::collection::vec(any::<u8>(), 0..128)
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&sig) { headers.insert(SIGNATURE_HEADER, v); }
        if let Ok(v) = HeaderValue::from_str(&ts) { headers.insert(TIMESTAMP_HEADER, v); }
        let req = WebhookRequest {
            method: Method::POST, url: "https://x.example/t".into(), headers, body: Bytes::from(body), source_ip: None,
        };
        prop_assert!(telnyx::verify(&req, &cfg(&secret)).is_err());
    }

    #[test]
    fn sign_verify_round_trip(
        seed in any::<[u8; 32]>(), body in prop::collection::vec(any::<u8>(), 0..512), skew in -300i64..=300,
        flip in any::<prop::sample::Index>()
    ) {
        let k = SigningKey::from_bytes(&seed);
        let pk = public_b64(&k);
        let req = signed(&body, NOW + skew, &k);
        prop_assert_eq!(telnyx::verify(&req, &cfg(&pk)), Ok(()));
        // Any single changed byte of the body breaks it.
        if !body.is_empty() {
            let mut bad = body.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x01;
            let mut req = req;
            req.body = Bytes::from(bad);
            prop_assert_eq!(telnyx::verify(&req, &cfg(&pk)), Err(VerifyError::SignatureMismatch));
        }
    }

    #[test]
    fn rendered_documents_are_well_formed(
        message in any::<String>(), call_id in "[^\u{0}-\u{1f}]{1,30}", token in "[^\u{0}-\u{1f}]{1,30}",
        host in "[a-z]{1,10}", path in ".{0,20}"
    ) {
        let url = format!("wss://{host}.example/{}", path.replace(char::is_control, ""));
        for action in [
            AnswerAction::PlayAndHangup { message: message.clone(), language: None },
            AnswerAction::ConnectStream { url: url.clone() },
            AnswerAction::ConnectSip { uri: format!("sip:{host}@10.0.0.1") },
            AnswerAction::RejectBusy,
        ] {
            let p = AnswerPlan { tenant: "acme".into(), call_id: call_id.clone(), token: token.clone(), action };
            if let Ok(doc) = telnyx::render_answer(&p) {
                let outline = xml_outline(&doc.body);
                prop_assert_eq!(outline.first().map(String::as_str), Some("Response"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST call control against a local server
// ---------------------------------------------------------------------------------------------

async fn server(replies: &[(u16, &str)]) -> (String, Mock) {
    support::serve(replies, (500, "script ran out"), None).await
}

fn client(base: &str, max_retries: u32) -> TelnyxClient {
    let mut cfg = support::fast_rest(base, "conn-1684641123", "KEY0123secret");
    cfg.max_retries = max_retries;
    TelnyxClient::new(cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn outbound() -> OutboundCall {
    OutboundCall {
        from: "+12182950349".into(),
        to: "+919876543210".into(),
        call_id: CALL_ID.into(),
        answer_url: "https://hooks.example.com/telnyx/answer".into(),
        status_url: "https://hooks.example.com/telnyx/status?tenant=t1".into(),
        ring_timeout_s: 30,
        machine_detection: true,
        idempotency_key: CALL_ID.into(),
    }
}

const DIAL_OK: &str = r#"{"data":{"call_control_id":"v3:new-call","call_leg_id":"2dc6fc34-f9e0-11ea-b68e-02420a0f7768","call_session_id":"2dc1b3c8-f9e0-11ea-bc5a-02420a0f7768","is_alive":false,"record_type":"call"}}"#;

#[tokio::test]
async fn originate_posts_a_dial_command() {
    let (base, script) = server(&[(200, DIAL_OK)]).await;
    let got = client(&base, 3)
        .originate(&outbound())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.provider_call_id, "v3:new-call");
    let seen = seen(&script);
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path_and_query.as_str()),
        ("POST", "/v2/calls")
    );
    assert_eq!(r.auth.as_deref(), Some("Bearer KEY0123secret"));
    assert!(r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(
        r.json,
        json!({
            "connection_id": "conn-1684641123",
            "to": "+919876543210",
            "from": "+12182950349",
            "webhook_url": format!("https://hooks.example.com/telnyx/status?tenant=t1&vaani_call_id={CALL_ID}"),
            "client_state": STANDARD.encode(format!("vaani_call_id={CALL_ID}")),
            "timeout_secs": 30,
            "answering_machine_detection": "detect",
            "command_id": CALL_ID,
        })
    );
    // What we put in client_state comes back out of the webhooks as our call id.
    let hook = json!({"data": {"event_type": "call.answered",
        "payload": {"call_control_id": "v3:new-call", "client_state": r.json["client_state"]}}});
    assert_eq!(
        parse_json(&serde_json::to_vec(&hook).unwrap_or_default())
            .call_id
            .as_deref(),
        Some(CALL_ID)
    );
}

#[tokio::test]
async fn originate_minimal_and_clamped() {
    let (base, script) = server(&[(200, DIAL_OK)]).await;
    let mut call = outbound();
    call.status_url = format!("https://h.example/s?vaani_call_id={CALL_ID}");
    call.machine_detection = false;
    call.idempotency_key = String::new();
    call.ring_timeout_s = 2;
    client(&base, 0)
        .originate(&call)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = &seen(&script)[0].json;
    assert_eq!(
        body["webhook_url"],
        json!(format!("https://h.example/s?vaani_call_id={CALL_ID}"))
    );
    assert_eq!(body["timeout_secs"], json!(5));
    assert!(body.get("answering_machine_detection").is_none());
    assert!(body.get("command_id").is_none());
}

#[tokio::test]
async fn retries_on_429_and_5xx_then_succeeds() {
    let (base, script) = server(&[
        (429, r#"{"errors":[{"code":"10011"}]}"#),
        (500, "oops"),
        (503, ""),
        (200, DIAL_OK),
    ])
    .await;
    let got = client(&base, 3)
        .originate(&outbound())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.provider_call_id, "v3:new-call");
    let seen = seen(&script);
    assert_eq!(seen.len(), 4);
    // Every attempt is the same request, command_id included, so Telnyx dials once.
    assert!(seen
        .iter()
        .all(|s| s.json == seen[0].json && s.path_and_query == "/v2/calls"));
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let (base, script) = server(&[(500, "a"), (502, "b"), (500, "c"), (200, DIAL_OK)]).await;
    match client(&base, 2).originate(&outbound()).await {
        Err(RestError::Status { status: 500, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(seen(&script).len(), 3);
}

#[tokio::test]
async fn does_not_retry_422() {
    let body = r#"{"errors":[{"code":"10015","title":"Invalid value for connection_id"}]}"#;
    let (base, script) = server(&[(422, body), (200, DIAL_OK)]).await;
    match client(&base, 3).originate(&outbound()).await {
        Err(e @ RestError::Status { status: 422, .. }) => assert!(!e.is_retryable()),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen(&script).len(), 1);
}

#[tokio::test]
async fn dial_reply_without_call_control_id_is_a_decode_error() {
    let (base, _script) = server(&[(200, r#"{"data":{}}"#)]).await;
    assert!(matches!(
        client(&base, 0).originate(&outbound()).await,
        Err(RestError::Decode { .. })
    ));
    let (base, _script) = server(&[(200, "not json")]).await;
    assert!(matches!(
        client(&base, 0).originate(&outbound()).await,
        Err(RestError::Decode { .. })
    ));
}

#[tokio::test]
async fn originate_refuses_incomplete_requests_without_sending() {
    let (base, script) = server(&[]).await;
    let mut call = outbound();
    call.to = " ".into();
    assert!(matches!(
        client(&base, 0).originate(&call).await,
        Err(RestError::Invalid(_))
    ));
    let mut cfg = RestConfig::new(&base, "", "KEY");
    cfg.max_retries = 0;
    let no_conn = TelnyxClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        no_conn.originate(&outbound()).await,
        Err(RestError::Invalid(_))
    ));
    assert!(seen(&script).is_empty());
}

#[tokio::test]
async fn hangup_posts_an_idempotent_command() {
    let ok = r#"{"data":{"result":"ok"}}"#;
    let (base, script) = server(&[(200, ok), (200, ok)]).await;
    let c = client(&base, 0);
    c.hangup(CCID).await.unwrap_or_else(|e| panic!("{e}"));
    c.hangup(CCID).await.unwrap_or_else(|e| panic!("{e}"));
    let seen = seen(&script);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path_and_query,
        format!("/v2/calls/{CCID}/actions/hangup")
    );
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer KEY0123secret"));
    let cmd = seen[0].json["command_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cmd.starts_with("vaani-hangup-"), "{cmd}");
    assert_eq!(seen[1].json, seen[0].json);
    assert!(matches!(c.hangup("").await, Err(RestError::Invalid(_))));
}

#[tokio::test]
async fn call_ids_cannot_escape_their_path_segment() {
    let (base, script) = server(&[(200, "{}")]).await;
    client(&base, 0)
        .hangup("../../v2/other?x=1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        seen(&script)[0].path_and_query,
        "/v2/calls/..%2F..%2Fv2%2Fother%3Fx=1/actions/hangup"
    );
    for id in [".", ".."] {
        assert!(
            matches!(
                client(&base, 0).hangup(id).await,
                Err(RestError::Invalid(_))
            ),
            "{id}"
        );
    }
    assert_eq!(seen(&script).len(), 1);
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let (base, script) = server(&[(200, "{}")]).await;
    client(&format!("{base}/proxy/telnyx/"), 0)
        .hangup("cc1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        seen(&script)[0].path_and_query,
        "/proxy/telnyx/v2/calls/cc1/actions/hangup"
    );
}

#[tokio::test]
async fn transfer_and_redirect() {
    let (base, script) = server(&[(200, r#"{"data":{"result":"ok"}}"#)]).await;
    let c = client(&base, 0);
    c.redirect(CCID, &RedirectTarget::Transfer("+919812345678".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &seen(&script)[0];
    assert_eq!(
        r.path_and_query,
        format!("/v2/calls/{CCID}/actions/transfer")
    );
    assert_eq!(r.json["to"], json!("+919812345678"));
    assert!(r.json["command_id"]
        .as_str()
        .is_some_and(|s| s.starts_with("vaani-transfer-")));
    match c
        .redirect(
            CCID,
            &RedirectTarget::Url("https://x.example/answer".into()),
        )
        .await
    {
        Err(RestError::Unsupported {
            provider: "telnyx", ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.redirect(CCID, &RedirectTarget::Transfer(" ".into()))
            .await,
        Err(RestError::Invalid(_))
    ));
    assert_eq!(seen(&script).len(), 1);
}

#[tokio::test]
async fn errors_do_not_leak_the_api_key() {
    let (base, _script) = server(&[(
        401,
        r#"{"errors":[{"code":"10009","title":"Authentication failed"}]}"#,
    )])
    .await;
    let err = client(&base, 0)
        .hangup("cc1")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("401") && !err.contains("KEY0123secret"),
        "{err}"
    );
}
