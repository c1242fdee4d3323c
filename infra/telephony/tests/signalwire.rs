//! SignalWire (compatibility API / cXML): both signature schemes against the SDK's canonical
//! vectors, fixtures parsed into full `CallEvent`s, cXML, REST paths, and property tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};
use vaani_telephony::rest::{CallControl, OutboundCall, RedirectTarget, RestConfig};
use vaani_telephony::signalwire::{self, SignalWireClient};
use vaani_telephony::{twilio, VerifyConfig, VerifyError, WebhookRequest};

use support::{form_body, form_raw, pairs, seen, FORM};

fn sample(name: &str) -> Vec<u8> {
    support::sample("signalwire", name)
}

fn request(
    url: &str,
    ct: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> WebhookRequest {
    let mut h = HeaderMap::new();
    if let Some(ct) = ct {
        h.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    WebhookRequest {
        method: Method::POST,
        url: url.into(),
        headers: h,
        body: body.into(),
        source_ip: None,
    }
}

fn cfg(key: &str) -> VerifyConfig {
    VerifyConfig::new(key, Utc::now())
}

const SW: &str = "x-signalwire-signature";
const TW: &str = "x-twilio-signature";

// ---------------------------------------------------------------------------------------------
// Signatures: canonical vectors of signalwire-typescript tests/WebhookValidator.test.ts
// ---------------------------------------------------------------------------------------------

#[test]
fn vector_a_hex_over_url_and_raw_body() {
    let key = "PSKtest1234567890abcdef";
    let url = "https://example.ngrok.io/webhook";
    let body = r#"{"event":"call.state","params":{"call_id":"abc-123","state":"answered"}}"#;
    let sig = "c3c08c1fefaf9ee198a100d5906765a6f394bf0f";
    assert_eq!(signalwire::sign_raw_body(url, body.as_bytes(), key), sig);
    let ok = request(url, Some("application/json"), &[(SW, sig)], body);
    assert_eq!(signalwire::verify(&ok, &cfg(key)), Ok(()));

    let tampered = request(
        url,
        Some("application/json"),
        &[(SW, sig)],
        body.replace("answered", "ringing"),
    );
    assert_eq!(
        signalwire::verify(&tampered, &cfg(key)),
        Err(VerifyError::SignatureMismatch)
    );
    let wrong_key = request(url, Some("application/json"), &[(SW, sig)], body);
    assert_eq!(
        signalwire::verify(&wrong_key, &cfg("wrong-key")),
        Err(VerifyError::SignatureMismatch)
    );
    let other_path = request(
        "https://example.ngrok.io/different",
        Some("application/json"),
        &[(SW, sig)],
        body,
    );
    assert_eq!(
        signalwire::verify(&other_path, &cfg(key)),
        Err(VerifyError::SignatureMismatch)
    );
    // Twilio has no such scheme.
    let as_twilio = request(url, Some("application/json"), &[(TW, sig)], body);
    assert!(twilio::verify(&as_twilio, &cfg(key)).is_err());
}

#[test]
fn vector_b_form_params() {
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    assert_eq!(signalwire::sign(url, &params, "12345"), sig);
    for header in [SW, TW] {
        let req = request(url, Some(FORM), &[(header, sig)], form_body(&params));
        assert_eq!(signalwire::verify(&req, &cfg("12345")), Ok(()), "{header}");
    }
}

#[test]
fn vector_c_body_sha256() {
    let key = "PSKtest1234567890abcdef";
    let body = r#"{"event":"call.state"}"#;
    let url = "https://example.ngrok.io/webhook?bodySHA256=69f3cbfc18e386ef8236cb7008cd5a54b7fed637a8cb3373b5a1591d7f0fd5f4";
    let sig = "dfO9ek8mxyFtn2nMz24plPmPfIY=";
    let ok = request(url, Some("application/json"), &[(SW, sig)], body);
    assert_eq!(signalwire::verify(&ok, &cfg(key)), Ok(()));
    let wrong_body = request(
        url,
        Some("application/json"),
        &[(SW, sig)],
        r#"{"event":"DIFFERENT"}"#,
    );
    assert_eq!(
        signalwire::verify(&wrong_body, &cfg(key)),
        Err(VerifyError::BodyHashMismatch)
    );
}

#[test]
fn headers() {
    let url = "https://hooks.vaani.example/sw/status";
    let params = pairs(&[("CallSid", "d1"), ("CallStatus", "completed")]);
    let sig = signalwire::sign(url, &params, "PSKkey");
    let none = request(url, Some(FORM), &[], form_body(&params));
    assert_eq!(
        signalwire::verify(&none, &cfg("PSKkey")),
        Err(VerifyError::MissingHeader("X-SignalWire-Signature"))
    );
    // A bad SignalWire header does not hide a good Twilio-compatible one.
    let both = request(
        url,
        Some(FORM),
        &[(SW, "bogus"), (TW, &sig)],
        form_body(&params),
    );
    assert_eq!(signalwire::verify(&both, &cfg("PSKkey")), Ok(()));
    let bad = request(
        url,
        Some(FORM),
        &[(SW, "bogus"), (TW, "bogus2")],
        form_body(&params),
    );
    assert_eq!(
        signalwire::verify(&bad, &cfg("PSKkey")),
        Err(VerifyError::SignatureMismatch)
    );
}

fn b64_hmac(key: &str, data: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn repeated_keys_in_submission_order() {
    let url = "https://example.com/hook";
    // SignalWire's SDK: sorted by key, repeated values in submission order.
    let sig_ba = b64_hmac("test-key", &format!("{url}TobToa"));
    let req = request(url, Some(FORM), &[(SW, &sig_ba)], "To=b&To=a");
    assert_eq!(signalwire::verify(&req, &cfg("test-key")), Ok(()));
    // Twilio sorts the values, so the same request fails there.
    let req = request(url, Some(FORM), &[(TW, &sig_ba)], "To=b&To=a");
    assert_eq!(
        twilio::verify(&req, &cfg("test-key")),
        Err(VerifyError::SignatureMismatch)
    );
    // Twilio's sorted order is accepted for SignalWire too (its older compatibility SDK sorts).
    let sig_ab = b64_hmac("test-key", &format!("{url}ToaTob"));
    let req = request(url, Some(FORM), &[(SW, &sig_ab)], "To=b&To=a");
    assert_eq!(signalwire::verify(&req, &cfg("test-key")), Ok(()));
}

#[test]
fn ports() {
    let key = "test-key";
    let sig = b64_hmac(key, "https://example.com:443/webhook");
    let req = request("https://example.com/webhook", None, &[(SW, &sig)], "");
    assert_eq!(signalwire::verify(&req, &cfg(key)), Ok(()));
    let sig = b64_hmac(key, "http://example.com/path");
    let req = request("http://example.com:80/path", None, &[(SW, &sig)], "");
    assert_eq!(signalwire::verify(&req, &cfg(key)), Ok(()));
    let sig8080 = b64_hmac(key, "https://example.com:8080/path");
    let req = request("https://example.com:443/path", None, &[(SW, &sig8080)], "");
    assert_eq!(
        signalwire::verify(&req, &cfg(key)),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn url_only_signature_does_not_cover_a_body() {
    // signalwire-typescript also accepts a URL-only scheme-B signature for any body; that
    // would let a captured signature be replayed with a forged body, so Vaani refuses it.
    let key = "test-key";
    let url = "https://example.com/hook";
    let sig = b64_hmac(key, url);
    let with_body = request(
        url,
        Some(FORM),
        &[(SW, &sig)],
        "CallSid=forged&CallStatus=completed",
    );
    assert_eq!(
        signalwire::verify(&with_body, &cfg(key)),
        Err(VerifyError::SignatureMismatch)
    );
    let json = request(url, Some("application/json"), &[(SW, &sig)], "{}");
    assert_eq!(
        signalwire::verify(&json, &cfg(key)),
        Err(VerifyError::SignatureMismatch)
    );
    let empty = request(url, Some(FORM), &[(SW, &sig)], "");
    assert_eq!(signalwire::verify(&empty, &cfg(key)), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

#[test]
fn status_callback_completed() {
    let body = sample("status-callback-completed.form");
    let ev = signalwire::parse(Some(FORM), &body, Some("vaani_call_id=call-42")).unwrap();
    let want = CallEvent {
        call_id: Some("call-42".into()),
        status: Some(CallStatus::Completed),
        direction: Some(Direction::Outbound),
        from: Some("+12025550147".into()),
        to: Some("+918047491899".into()),
        duration_s: Some(125),
        billed_duration_s: Some(180),
        sequence: Some(3),
        occurred_at: Some(
            Utc.with_ymd_and_hms(2025, 1, 15, 6, 12, 44)
                .single()
                .unwrap(),
        ),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Signalwire, "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6")
    };
    assert_eq!(ev, want);
}

#[test]
fn answer_inbound() {
    let body = sample("answer-inbound.form");
    let ev = signalwire::parse(Some(FORM), &body, None).unwrap();
    let want = CallEvent {
        status: Some(CallStatus::Ringing),
        direction: Some(Direction::Inbound),
        from: Some("+919876543210".into()),
        to: Some("+12025550147".into()),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Signalwire, "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d")
    };
    assert_eq!(ev, want);
}

#[test]
fn recording_status() {
    let body = sample("recording-status.form");
    let ev = signalwire::parse(Some(FORM), &body, Some("vaani_call_id=call-42")).unwrap();
    let want = CallEvent {
        call_id: Some("call-42".into()),
        recording_url: Some(
            "https://example.signalwire.com/api/laml/2010-04-01/Accounts/7f3c2a1e-5b4d-4c6e-8f90-1a2b3c4d5e6f/Recordings/4b5c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d"
                .into(),
        ),
        raw: form_raw(&body),
        ..CallEvent::new(Provider::Signalwire, "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6")
    };
    assert_eq!(ev, want);
}

#[test]
fn cxml_matches_twiml() {
    for action in [
        AnswerAction::ConnectSip {
            uri: "sip:vaani@10.0.1.5".into(),
        },
        AnswerAction::ConnectStream {
            url: "wss://node.vaani.example/s".into(),
        },
        AnswerAction::PlayAndHangup {
            message: "a & b".into(),
            language: Some("hi-IN".into()),
        },
        AnswerAction::RejectBusy,
    ] {
        let plan = AnswerPlan {
            tenant: "acme".into(),
            call_id: "c1".into(),
            token: "t1".into(),
            action,
        };
        assert_eq!(
            signalwire::render_answer(&plan),
            twilio::render_answer(&plan)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rest_paths_and_auth() {
    let (base, mock) = support::serve(
        &[],
        (201, r#"{"sid":"5c1e9e0a-8d6f-4b7e-9a3c-2f1d0e9b8a7c"}"#),
        Some("application/json"),
    )
    .await;
    let project = "7f3c2a1e-5b4d-4c6e-8f90-1a2b3c4d5e6f";
    let mut rc = RestConfig::new(&base, project, "PTapitoken");
    rc.backoff_base = Duration::from_millis(1);
    let c = SignalWireClient::new(rc).unwrap();
    let call = OutboundCall {
        from: "+12025550147".into(),
        to: "+918047491899".into(),
        call_id: "call-42".into(),
        answer_url: "https://hooks.vaani.example/sw/answer".into(),
        status_url: "https://hooks.vaani.example/sw/status".into(),
        ring_timeout_s: 25,
        machine_detection: false,
        idempotency_key: String::new(),
    };
    let r = c.originate(&call).await.unwrap();
    assert_eq!(r.provider_call_id, "5c1e9e0a-8d6f-4b7e-9a3c-2f1d0e9b8a7c");
    c.hangup(&r.provider_call_id).await.unwrap();
    c.redirect(
        &r.provider_call_id,
        &RedirectTarget::Url("https://hooks.vaani.example/sw/next".into()),
    )
    .await
    .unwrap();

    let hits = seen(&mock);
    let basic = support::basic(project, "PTapitoken");
    assert_eq!(hits.len(), 3);
    assert_eq!(
        hits[0].path,
        format!("/api/laml/2010-04-01/Accounts/{project}/Calls.json")
    );
    let call_path = format!(
        "/api/laml/2010-04-01/Accounts/{project}/Calls/{}.json",
        r.provider_call_id
    );
    assert_eq!(hits[1].path, call_path);
    assert_eq!(hits[2].path, call_path);
    assert!(hits
        .iter()
        .all(|h| h.auth.as_deref() == Some(basic.as_str())));
    let get = |k: &str| {
        hits[0]
            .form
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        get("StatusCallback"),
        ["https://hooks.vaani.example/sw/status?vaani_call_id=call-42"]
    );
    assert_eq!(
        get("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(get("Timeout"), ["25"]);
    assert!(get("MachineDetection").is_empty());
    assert_eq!(hits[1].form, pairs(&[("Status", "completed")]));
}

#[test]
fn space_urls() {
    assert_eq!(
        signalwire::space_url("example").unwrap(),
        "https://example.signalwire.com"
    );
    assert_eq!(
        signalwire::space_url("Example.signalwire.com").unwrap(),
        "https://example.signalwire.com"
    );
    for bad in ["", "a/b", "evil.com#", "-x", "a b"] {
        assert!(signalwire::space_url(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..512), json in any::<bool>(), q in prop::option::of(".{0,64}")) {
        let ct = if json { "application/json" } else { FORM };
        let _ = signalwire::parse(Some(ct), &body, q.as_deref());
        let _ = signalwire::parse(None, &body, q.as_deref());
    }

    #[test]
    fn verify_never_panics(
        url in ".{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        sw in prop::collection::vec(any::<u8>(), 0..64),
        tw in prop::collection::vec(any::<u8>(), 0..64),
        json in any::<bool>(),
        key in ".{0,16}",
    ) {
        let mut req = request(&url, Some(if json { "application/json" } else { FORM }), &[], body);
        if let Ok(v) = HeaderValue::from_bytes(&sw) { req.headers.insert(SW, v); }
        if let Ok(v) = HeaderValue::from_bytes(&tw) { req.headers.insert(TW, v); }
        let _ = signalwire::verify(&req, &cfg(&key));
    }

    #[test]
    fn scheme_b_round_trips(
        params in prop::collection::vec((prop_oneof![Just("To".to_string()), "[A-Za-z]{1,6}", any::<String>()], any::<String>()), 0..10),
        key in ".{1,32}",
        pick in any::<prop::sample::Index>(),
    ) {
        let url = "https://hooks.vaani.example/sw/status?vaani_call_id=c1";
        let sig = signalwire::sign(url, &params, &key);
        let req = request(url, Some(FORM), &[(SW, &sig)], form_body(&params));
        prop_assert_eq!(signalwire::verify(&req, &cfg(&key)), Ok(()));
        if !params.is_empty() {
            let mut changed = params.clone();
            changed[pick.index(params.len())].1.push('x');
            let req = request(url, Some(FORM), &[(SW, &sig)], form_body(&changed));
            prop_assert_eq!(signalwire::verify(&req, &cfg(&key)), Err(VerifyError::SignatureMismatch));
        }
    }

    #[test]
    fn scheme_a_round_trips(body in prop::collection::vec(any::<u8>(), 0..256), key in ".{1,32}", flip in any::<prop::sample::Index>()) {
        let url = "https://relay.vaani.example/swml";
        let sig = signalwire::sign_raw_body(url, &body, &key);
        let req = request(url, Some("application/json"), &[(SW, &sig)], body.clone());
        prop_assert_eq!(signalwire::verify(&req, &cfg(&key)), Ok(()));
        let mut changed = body.clone();
        if changed.is_empty() { changed.push(b'{') } else { let i = flip.index(changed.len()); changed[i] ^= 1; }
        let req = request(url, Some("application/json"), &[(SW, &sig)], changed);
        prop_assert_eq!(signalwire::verify(&req, &cfg(&key)), Err(VerifyError::SignatureMismatch));
    }
}
