//! Plivo: signature V3 (PROVIDERS.md vectors), webhook parsing against fixtures, Plivo XML
//! answers, and the REST client against a local server.

mod support;

use axum::http::Method;
use base64::Engine;
use chrono::Utc;
use proptest::prelude::*;
use rust_decimal::Decimal;
use vaani_core::{AnswerAction, AnswerPlan};
use vaani_events::{CallEvent, CallStatus, Direction, Provider};
use vaani_telephony::plivo::{self, PlivoClient};
use vaani_telephony::{
    CallControl, OutboundCall, ParseError, RedirectTarget, RenderError, RestError, VerifyConfig,
    VerifyError, WebhookRequest,
};

use support::{basic, form_raw, ist, seen, Mock, FORM};

const TOKEN: &str = "MAXXXXXXXXXXXXXXXXXX_token";

fn sample(name: &str) -> Vec<u8> {
    support::sample("plivo", name)
}

fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    ct: Option<&str>,
    body: &[u8],
) -> WebhookRequest {
    let mut h = support::header_map(headers);
    if let Some(ct) = ct {
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(ct).unwrap_or(http::HeaderValue::from_static("x")),
        );
    }
    WebhookRequest {
        method,
        url: url.to_string(),
        headers: h,
        body: bytes::Bytes::copy_from_slice(body),
        source_ip: None,
    }
}

fn cfg() -> VerifyConfig {
    VerifyConfig::new(TOKEN, Utc::now())
}

fn form_body(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

// ------------------------------------------------------------------------------------------
// Signature V3: the PROVIDERS.md vectors
// ------------------------------------------------------------------------------------------

struct Vector {
    method: &'static str,
    url: &'static str,
    params: &'static [(&'static str, &'static str)],
    nonce: &'static str,
    base: &'static str,
    sig: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        method: "POST",
        url: "https://example.com/answer",
        params: &[
            ("CallUUID", "c1"),
            ("From", "+919876543210"),
            ("To", "+918047491899"),
        ],
        nonce: "05429567804466091622",
        base: "https://example.com/answer?CallUUIDc1From+919876543210To+918047491899",
        sig: "EVYqVV0jb+5DoTZuooxQ+kHekaNgGQl+gZDbpbFWHwM=",
    },
    Vector {
        method: "POST",
        url: "https://example.com/answer?b=2&a=1",
        params: &[("CallUUID", "c1"), ("From", "+919876543210")],
        nonce: "123",
        base: "https://example.com/answer?a=1&b=2.CallUUIDc1From+919876543210",
        sig: "jGKfXsRLL7ca2mgkU7wHtKCJbqyic/6bhEhVVh2zjKI=",
    },
    Vector {
        method: "GET",
        url: "https://example.com/hangup?b=2&a=1",
        params: &[],
        nonce: "123",
        base: "https://example.com/hangup?a=1&b=2",
        sig: "Q6UWput+p7OKAw/lzmFDP1burJ/LMs61cmShP8cwyu0=",
    },
    Vector {
        method: "POST",
        url: "https://example.com/empty",
        params: &[],
        nonce: "123",
        base: "https://example.com/empty",
        sig: "CPwxDr3CvPoy/gnTEE/EBwonMbWXbFg3DzOleDIuOfU=",
    },
    // Not in PROVIDERS.md: computed with a line-by-line transcription of plivo-python's
    // signature_v3.py. Explicit port, repeated and blank query values, repeated body values
    // (sorted), a space in a value.
    Vector {
        method: "POST",
        url: "https://example.com:8443/x?a=1&a=0&c=",
        params: &[("Z", "2"), ("Z", "1"), ("b", "x y")],
        nonce: "n",
        base: "https://example.com:8443/x?a=0&a=1&c=.Z1Z2bx y",
        sig: "5PRsJZavqPcJ4e7jmrdU2DLaik+8Lz4pcE0d+T1rRcc=",
    },
];

#[test]
fn providers_md_vectors_sign() {
    for v in VECTORS {
        assert_eq!(
            plivo::signature_base(v.method, v.url, v.params).as_deref(),
            Some(v.base),
            "{}",
            v.url
        );
        assert_eq!(
            plivo::sign_v3(v.method, v.url, v.params, v.nonce, TOKEN),
            v.sig,
            "{}",
            v.url
        );
    }
}

#[test]
fn providers_md_vectors_verify() {
    for v in VECTORS {
        let method = if v.method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        let body = form_body(v.params);
        let req = request(
            method,
            v.url,
            &[
                ("X-Plivo-Signature-V3", v.sig),
                ("X-Plivo-Signature-V3-Nonce", v.nonce),
            ],
            (!v.params.is_empty()).then_some(FORM),
            body.as_bytes(),
        );
        assert_eq!(plivo::verify(&req, &cfg()), Ok(()), "{}", v.url);
        let wrong = VerifyConfig::new("another_token", Utc::now());
        assert_eq!(
            plivo::verify(&req, &wrong),
            Err(VerifyError::SignatureMismatch),
            "{}",
            v.url
        );
    }
}

fn vector1_request(sig_header: &str) -> WebhookRequest {
    let v = &VECTORS[0];
    request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-V3", sig_header),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        form_body(v.params).as_bytes(),
    )
}

#[test]
fn comma_separated_signatures() {
    let sig = VECTORS[0].sig;
    assert_eq!(
        plivo::verify(&vector1_request(&format!("bogus=,{sig}")), &cfg()),
        Ok(())
    );
    assert_eq!(
        plivo::verify(&vector1_request(&format!("{sig} , bogus")), &cfg()),
        Ok(())
    );
    assert_eq!(
        plivo::verify(&vector1_request(&format!(" x, y ,{sig} ")), &cfg()),
        Ok(())
    );
    assert_eq!(
        plivo::verify(
            &vector1_request("EVYqVV0jb+5DoTZuooxQ+kHekaNgGQl+gZDbpbFWHwN=,abc"),
            &cfg()
        ),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        plivo::verify(&vector1_request(",,"), &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn main_account_signature() {
    let v = &VECTORS[1];
    let main = "MAIN_ACCOUNT_TOKEN";
    let ma_sig = plivo::sign_v3(v.method, v.url, v.params, v.nonce, main);
    let body = form_body(v.params);
    let req = request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-V3", "not-the-signature"),
            ("X-Plivo-Signature-Ma-V3", &ma_sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    // Without a main-account token configured, the Ma header is not trusted.
    assert_eq!(
        plivo::verify(&req, &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
    let mut with_main = cfg();
    with_main.main_account_secret = Some(main.to_string());
    assert_eq!(plivo::verify(&req, &with_main), Ok(()));
    // The Ma header is checked against the main token only, never the sub-account token.
    let sub_sig_in_ma = request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-Ma-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&sub_sig_in_ma, &with_main),
        Err(VerifyError::SignatureMismatch)
    );
    // A sub-account V3 signature still works when a main token is configured.
    let sub = request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(plivo::verify(&sub, &with_main), Ok(()));
}

#[test]
fn missing_headers_and_tampering() {
    let v = &VECTORS[0];
    let body = form_body(v.params);
    let no_nonce = request(
        Method::POST,
        v.url,
        &[("X-Plivo-Signature-V3", v.sig)],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&no_nonce, &cfg()),
        Err(VerifyError::MissingHeader("X-Plivo-Signature-V3-Nonce"))
    );
    let no_sig = request(
        Method::POST,
        v.url,
        &[("X-Plivo-Signature-V3-Nonce", v.nonce)],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&no_sig, &cfg()),
        Err(VerifyError::MissingHeader("X-Plivo-Signature-V3"))
    );

    let tampered = form_body(&[
        ("CallUUID", "c1"),
        ("From", "+919876543211"),
        ("To", "+918047491899"),
    ]);
    let req = request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        tampered.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&req, &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
    // Same body, other nonce.
    let req = request(
        Method::POST,
        v.url,
        &[
            ("X-Plivo-Signature-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", "05429567804466091623"),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&req, &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
    // Another path.
    let req = request(
        Method::POST,
        "https://example.com/answer2",
        &[
            ("X-Plivo-Signature-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&req, &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
    // An empty configured token never verifies anything.
    let empty = VerifyConfig::new("", Utc::now());
    assert!(matches!(
        plivo::verify(&vector1_request(v.sig), &empty),
        Err(VerifyError::BadKey(_))
    ));
    // A relative URL cannot be verified.
    let rel = request(
        Method::POST,
        "/answer",
        &[
            ("X-Plivo-Signature-V3", v.sig),
            ("X-Plivo-Signature-V3-Nonce", v.nonce),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert!(matches!(
        plivo::verify(&rel, &cfg()),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn default_port_either_way() {
    let params = [("CallUUID", "c1")];
    let body = form_body(&params);
    // Plivo signed the URL with the explicit default port; our public URL has none.
    let sig = plivo::sign_v3(
        "POST",
        "https://example.com:443/answer",
        &params,
        "9",
        TOKEN,
    );
    let req = request(
        Method::POST,
        "https://example.com/answer",
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "9"),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(plivo::verify(&req, &cfg()), Ok(()));
    // And the other way round.
    let sig = plivo::sign_v3("POST", "https://example.com/answer", &params, "9", TOKEN);
    let req = request(
        Method::POST,
        "https://example.com:443/answer",
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "9"),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(plivo::verify(&req, &cfg()), Ok(()));
    // A non-default port is part of what is signed.
    let req = request(
        Method::POST,
        "https://example.com:8443/answer",
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "9"),
        ],
        Some(FORM),
        body.as_bytes(),
    );
    assert_eq!(
        plivo::verify(&req, &cfg()),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn fixture_hangup_verifies() {
    let body = sample("hangup_completed.form");
    let url = "https://hooks.vaani.example/plivo/status?vaani_call_id=call-0001&tenant=t1";
    let params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = plivo::sign_v3("POST", url, &refs, "31337", TOKEN);
    let req = request(
        Method::POST,
        url,
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "31337"),
        ],
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        &body,
    );
    assert_eq!(plivo::verify(&req, &cfg()), Ok(()));
}

#[test]
fn json_body_verifies() {
    let body = br#"{"CallUUID":"c1","Nested":{"b":"2","a":"1"},"List":["y","x"]}"#;
    // POST with query: "?q=1." then sorted params, nested objects recurse.
    let url = "https://example.com/cb?q=1";
    let base = "https://example.com/cb?q=1.CallUUIDc1ListxListyNesteda1b2";
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(TOKEN.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(format!("{base}.n1").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let req = request(
        Method::POST,
        url,
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "n1"),
        ],
        Some("application/json"),
        body,
    );
    assert_eq!(plivo::verify(&req, &cfg()), Ok(()));
    let bad = request(
        Method::POST,
        url,
        &[
            ("X-Plivo-Signature-V3", &sig),
            ("X-Plivo-Signature-V3-Nonce", "n1"),
        ],
        Some("application/json"),
        b"[1,2]",
    );
    assert!(matches!(
        plivo::verify(&bad, &cfg()),
        Err(VerifyError::Malformed { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

#[test]
fn parse_answer_inbound() {
    let body = sample("answer_inbound.form");
    let ev = plivo::parse(Some(FORM), &body, Some("vaani_call_id=call-0000"));
    let mut want = CallEvent::new(Provider::Plivo, "57a1b60a-5c0b-11e7-9082-ef888d0400e9");
    want.call_id = Some("call-0000".into());
    want.status = Some(CallStatus::Ringing);
    want.direction = Some(Direction::Inbound);
    want.from = Some("+919876543210".into());
    want.to = Some("+918047491899".into());
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_hangup_completed() {
    let body = sample("hangup_completed.form");
    let ev = plivo::parse(Some(FORM), &body, Some("vaani_call_id=call-0001&tenant=t1"));
    let mut want = CallEvent::new(Provider::Plivo, "eba53b9e-8fbd-45c1-9444-696d2172fbc8");
    want.call_id = Some("call-0001".into());
    want.status = Some(CallStatus::Completed);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+918047491899".into());
    want.to = Some("+919876543210".into());
    want.duration_s = Some(47);
    want.billed_duration_s = Some(60);
    want.price = Some(Decimal::new(850, 5));
    want.currency = Some("USD".into());
    want.occurred_at = Some(ist(2024, 1, 15, 14, 26, 5));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
    if let Ok(ev) = plivo::parse(Some(FORM), &body, None) {
        assert_eq!(ev.raw["HangupCause"], "NORMAL_CLEARING");
        assert_eq!(ev.call_id, None);
    }
}

#[test]
fn parse_hangup_busy() {
    let body = sample("hangup_busy.form");
    let ev = plivo::parse(Some(FORM), &body, None);
    let mut want = CallEvent::new(Provider::Plivo, "3b9a6d73-4c8f-4b2d-8e1f-7a2c3d4e5f60");
    want.status = Some(CallStatus::Busy);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+918047491899".into());
    want.to = Some("+919812345678".into());
    want.duration_s = Some(0);
    want.billed_duration_s = Some(0);
    want.price = Some(Decimal::new(0, 5));
    want.currency = Some("USD".into());
    want.occurred_at = Some(ist(2024, 1, 15, 15, 2, 9));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_hangup_no_answer() {
    let body = sample("hangup_no_answer.form");
    let ev = plivo::parse(Some(FORM), &body, None);
    let mut want = CallEvent::new(Provider::Plivo, "4c0b7e84-5d9f-4c3e-9f20-8b3d4e5f6071");
    want.status = Some(CallStatus::NoAnswer);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+918047491899".into());
    want.to = Some("+919812345679".into());
    want.occurred_at = Some(ist(2024, 1, 15, 16, 10, 40));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_hangup_inbound_sip_headers_and_derived_duration() {
    let body = sample("hangup_inbound_sip.form");
    let ev = plivo::parse(Some(FORM), &body, None);
    let mut want = CallEvent::new(Provider::Plivo, "5d1c8f95-6e0a-4d4f-a031-9c4e5f607182");
    // X-PH-Vaanicallid=call%2D0004, percent-decoded.
    want.call_id = Some("call-0004".into());
    want.status = Some(CallStatus::Completed);
    want.direction = Some(Direction::Inbound);
    want.from = Some("+919876543210".into());
    want.to = Some("+918047491899".into());
    // No Duration: AnswerTime 18:00:03 → EndTime 18:01:04 is 61 s, billed as two pulses.
    want.duration_s = Some(61);
    want.billed_duration_s = Some(120);
    want.occurred_at = Some(ist(2024, 1, 15, 18, 1, 4));
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_machine_detection() {
    let body = sample("machine_detection.form");
    let ev = plivo::parse(Some(FORM), &body, Some("vaani_call_id=call-0001"));
    let mut want = CallEvent::new(Provider::Plivo, "eba53b9e-8fbd-45c1-9444-696d2172fbc8");
    want.call_id = Some("call-0001".into());
    want.status = Some(CallStatus::InProgress);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+918047491899".into());
    want.to = Some("+919876543210".into());
    want.answered_by = Some("machine".into());
    want.raw = form_raw(&body);
    assert_eq!(ev, Ok(want));
}

#[test]
fn parse_hangup_json() {
    let body = sample("hangup_completed.json");
    let ev = plivo::parse(Some("application/json"), &body, None);
    let mut want = CallEvent::new(Provider::Plivo, "6e2d9fa6-7f1b-4e50-b142-ad5f60718293");
    want.call_id = Some("call-0005".into());
    want.status = Some(CallStatus::Completed);
    want.direction = Some(Direction::Outbound);
    want.from = Some("+918047491899".into());
    want.to = Some("+919876543210".into());
    want.duration_s = Some(61);
    want.billed_duration_s = Some(120);
    want.price = Some(Decimal::new(1700, 5));
    want.currency = Some("USD".into());
    want.occurred_at = Some(ist(2024, 1, 15, 19, 1, 6));
    want.raw = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    assert_eq!(ev, Ok(want));
    // Sniffed without a content type too.
    assert!(plivo::parse(None, &body, None).is_ok());
}

#[test]
fn parse_statuses_and_sip_header_spellings() {
    let cases = [
        ("ringing", CallStatus::Ringing),
        ("in-progress", CallStatus::InProgress),
        ("completed", CallStatus::Completed),
        ("busy", CallStatus::Busy),
        ("failed", CallStatus::Failed),
        ("timeout", CallStatus::NoAnswer),
        ("no-answer", CallStatus::NoAnswer),
        ("cancel", CallStatus::Canceled),
    ];
    for (raw, want) in cases {
        let body = form_body(&[("CallUUID", "u1"), ("CallStatus", raw)]);
        assert_eq!(
            plivo::parse(Some(FORM), body.as_bytes(), None).map(|e| e.status),
            Ok(Some(want)),
            "{raw}"
        );
    }
    for key in [
        "X-PH-vaani_call_id",
        "X-PH-Vaani-Call-Id",
        "X-PH-Vaanicallid",
    ] {
        let body = form_body(&[("CallUUID", "u1"), (key, "c-9")]);
        assert_eq!(
            plivo::parse(Some(FORM), body.as_bytes(), None).map(|e| e.call_id),
            Ok(Some("c-9".to_string())),
            "{key}"
        );
    }
    // The callback URL's vaani_call_id wins over anything in the body.
    let body = form_body(&[("CallUUID", "u1"), ("X-PH-Vaanicallid", "body")]);
    assert_eq!(
        plivo::parse(Some(FORM), body.as_bytes(), Some("vaani_call_id=url")).map(|e| e.call_id),
        Ok(Some("url".to_string()))
    );
    // BillDuration absent: derived from Duration; unanswered calls bill nothing.
    let body = form_body(&[
        ("CallUUID", "u1"),
        ("CallStatus", "completed"),
        ("Duration", "1"),
    ]);
    assert_eq!(
        plivo::parse(Some(FORM), body.as_bytes(), None).map(|e| e.billed_duration_s),
        Ok(Some(60))
    );
    let body = form_body(&[
        ("CallUUID", "u1"),
        ("CallStatus", "no-answer"),
        ("Duration", "25"),
    ]);
    assert_eq!(
        plivo::parse(Some(FORM), body.as_bytes(), None).map(|e| e.billed_duration_s),
        Ok(Some(0))
    );
    let body = form_body(&[("CallUUID", "u1"), ("Machine", "false")]);
    assert_eq!(
        plivo::parse(Some(FORM), body.as_bytes(), None).map(|e| e.answered_by),
        Ok(Some("human".to_string()))
    );
}

#[test]
fn parse_malformed() {
    let bad: &[(&[u8], Option<&str>)] = &[
        (b"From=1&To=2", Some(FORM)),
        (b"CallUUID=", Some(FORM)),
        (b"CallUUID=has space", Some(FORM)),
        (b"CallUUID=u1&Duration=-3", Some(FORM)),
        (b"CallUUID=u1&Duration=abc", Some(FORM)),
        (b"CallUUID=u1&TotalCost=lots", Some(FORM)),
        (b"CallUUID=u1&EndTime=yesterday", Some(FORM)),
        (b"CallUUID=u1&vaani_call_id=a%20b", Some(FORM)),
        (b"CallUUID=u1&X-PH-Vaanicallid=a%253Cb", Some(FORM)),
        (b"{\"CallUUID\":", Some("application/json")),
        (b"[\"CallUUID\"]", Some("application/json")),
        (b"--x\r\n", Some("multipart/form-data; boundary=x")),
        (b"<xml/>", Some("text/xml")),
    ];
    for (body, ct) in bad {
        assert!(
            plivo::parse(*ct, body, None).is_err(),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        plivo::parse(Some(FORM), b"From=1", None),
        Err(ParseError::MissingField("CallUUID"))
    );
    assert!(plivo::parse(Some(FORM), b"CallUUID=u1", Some("vaani_call_id=%00")).is_err());
}

// ------------------------------------------------------------------------------------------
// Answer documents
// ------------------------------------------------------------------------------------------

fn plan(action: AnswerAction) -> AnswerPlan {
    AnswerPlan {
        tenant: "acme".into(),
        call_id: "call-0001".into(),
        token: "tok_en.1".into(),
        action,
    }
}

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

#[test]
fn render_connect_sip() {
    let doc = plivo::render_answer(&plan(AnswerAction::ConnectSip {
        uri: "sip:agent@10.0.0.5:5060".into(),
    }));
    let Ok(doc) = doc else { panic!("{doc:?}") };
    assert_eq!(doc.content_type, "application/xml");
    assert_eq!(
        doc.body,
        format!(
            "{DECL}<Response><Dial><User sipHeaders=\"Vaanitenant=acme,Vaanicallid=call%2D0001,Vaanitoken=tok%5Fen%2E1\">sip:agent@10.0.0.5:5060</User></Dial></Response>"
        )
    );
}

#[test]
fn render_connect_stream() {
    let doc = plivo::render_answer(&plan(AnswerAction::ConnectStream {
        url: "wss://node1.vaani.example/plivo?x=1".into(),
    }));
    let Ok(doc) = doc else { panic!("{doc:?}") };
    assert_eq!(
        doc.body,
        format!(
            "{DECL}<Response><Stream bidirectional=\"true\" keepCallAlive=\"true\" contentType=\"audio/x-mulaw;rate=8000\">wss://node1.vaani.example/plivo?x=1&amp;vaani_call_id=call-0001&amp;vaani_token=tok_en.1</Stream></Response>"
        )
    );
}

#[test]
fn render_play_and_hangup_and_reject() {
    let doc = plivo::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: "Sorry, all agents are busy.".into(),
        language: Some("en-IN".into()),
    }));
    assert_eq!(
        doc.map(|d| d.body),
        Ok(format!(
            "{DECL}<Response><Speak language=\"en-IN\">Sorry, all agents are busy.</Speak><Hangup/></Response>"
        ))
    );
    let doc = plivo::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: "Bye".into(),
        language: None,
    }));
    assert_eq!(
        doc.map(|d| d.body),
        Ok(format!(
            "{DECL}<Response><Speak>Bye</Speak><Hangup/></Response>"
        ))
    );
    let doc = plivo::render_answer(&plan(AnswerAction::RejectBusy));
    assert_eq!(
        doc.map(|d| d.body),
        Ok(format!(
            "{DECL}<Response><Hangup reason=\"busy\"/></Response>"
        ))
    );
}

/// Element names and the text of every `Speak`, read back with an XML parser.
fn read_back(xml: &str) -> Result<(Vec<String>, Vec<String>), quick_xml::Error> {
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut names, mut texts) = (Vec::new(), Vec::new());
    let mut in_speak = false;
    loop {
        match r.read_event()? {
            quick_xml::events::Event::Start(e) => {
                let n = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                in_speak = n == "Speak";
                names.push(n);
            }
            quick_xml::events::Event::Empty(e) => {
                names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
            }
            quick_xml::events::Event::Text(t) if in_speak => texts.push(t.unescape()?.into_owned()),
            quick_xml::events::Event::End(_) => in_speak = false,
            quick_xml::events::Event::Eof => return Ok((names, texts)),
            _ => {}
        }
    }
}

#[test]
fn render_hostile_text() {
    let hostile = "</Speak><Dial><Number>+1900</Number></Dial><Speak>&amp; \"q\" 'a' <b>\u{0}\u{1b}ok\u{FFFE}";
    let doc = plivo::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: hostile.into(),
        language: None,
    }));
    let Ok(doc) = doc else { panic!("{doc:?}") };
    let parsed = read_back(&doc.body);
    let Ok((names, texts)) = parsed else {
        panic!("not well-formed: {}", doc.body)
    };
    assert_eq!(names, ["Response", "Speak", "Hangup"]);
    assert_eq!(
        texts,
        ["</Speak><Dial><Number>+1900</Number></Dial><Speak>&amp; \"q\" 'a' <b>ok"]
    );

    // Hostile attribute values are refused, not pasted.
    let bad_lang = plivo::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: "hi".into(),
        language: Some("en\" onload=\"x".into()),
    }));
    assert!(matches!(bad_lang, Err(RenderError::Invalid { .. })));
    let empty = plivo::render_answer(&plan(AnswerAction::PlayAndHangup {
        message: "\u{0} ".into(),
        language: None,
    }));
    assert!(matches!(empty, Err(RenderError::Invalid { .. })));
}

#[test]
fn render_refuses_what_plivo_would_drop() {
    let sip = |call_id: &str, token: &str, uri: &str| {
        plivo::render_answer(&AnswerPlan {
            tenant: "acme".into(),
            call_id: call_id.into(),
            token: token.into(),
            action: AnswerAction::ConnectSip { uri: uri.into() },
        })
    };
    assert!(matches!(
        sip("call 1", "t", "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("c", "t,Vaanitoken=evil", "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("c", "t\"", "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("", "t", "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    // 120 characters once encoded is the limit.
    assert!(sip("c", &"a".repeat(120), "sip:a@b").is_ok());
    assert!(matches!(
        sip("c", &"a".repeat(121), "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("c", &".".repeat(41), "sip:a@b"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("c", "t", "tel:+911234"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        sip("c", "t", "sip:a@b\r\nX: y"),
        Err(RenderError::Invalid { .. })
    ));
    let stream = |url: &str, token: &str| {
        plivo::render_answer(&AnswerPlan {
            tenant: "acme".into(),
            call_id: "c".into(),
            token: token.into(),
            action: AnswerAction::ConnectStream { url: url.into() },
        })
    };
    assert!(matches!(
        stream("https://not-ws.example", "t"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(matches!(
        stream("wss://ok.example", "t&x=1"),
        Err(RenderError::Invalid { .. })
    ));
    assert!(stream("ws://127.0.0.1:9000/s", "t").is_ok());
}

// ------------------------------------------------------------------------------------------
// REST client against a local server
// ------------------------------------------------------------------------------------------

async fn mock(replies: &[(u16, &str)]) -> (String, Mock) {
    support::serve(replies, (500, "{}"), Some("application/json")).await
}

fn client(base: &str) -> PlivoClient {
    let cfg = support::fast_rest(base, "MAXXXXXXXXXXXXXXXXXX", "secret-token");
    PlivoClient::new(cfg).unwrap_or_else(|e| panic!("client: {e}"))
}

fn outbound() -> OutboundCall {
    OutboundCall {
        from: "+918047491899".into(),
        to: "+919876543210".into(),
        call_id: "call-0001".into(),
        answer_url: "https://hooks.vaani.example/plivo/answer".into(),
        status_url: "https://hooks.vaani.example/plivo/status?tenant=t1".into(),
        ring_timeout_s: 25,
        machine_detection: true,
        idempotency_key: "call-0001".into(),
    }
}

const FIRED: &str = r#"{"message":"call fired","request_uuid":"9834029e-58b6-11e1-b8b7-a5bd0e4e126f","api_id":"97ceeb52-58b6-11e1-86da-77300b68f8bb"}"#;

#[tokio::test]
async fn originate_posts_json_with_basic_auth() {
    let (base, log) = mock(&[(201, FIRED)]).await;
    let r = client(&base).originate(&outbound()).await;
    assert_eq!(
        r.map(|r| r.provider_call_id).ok(),
        Some("9834029e-58b6-11e1-b8b7-a5bd0e4e126f".into())
    );
    let s = seen(&log);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].method, "POST");
    assert_eq!(s[0].path, "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/");
    assert_eq!(
        s[0].auth.as_deref(),
        Some(basic("MAXXXXXXXXXXXXXXXXXX", "secret-token").as_str())
    );
    assert_eq!(s[0].content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&s[0].body).unwrap_or_default();
    assert_eq!(
        body,
        serde_json::json!({
            "from": "+918047491899",
            "to": "+919876543210",
            "answer_url": "https://hooks.vaani.example/plivo/answer?vaani_call_id=call-0001",
            "answer_method": "POST",
            "hangup_url": "https://hooks.vaani.example/plivo/status?tenant=t1&vaani_call_id=call-0001",
            "hangup_method": "POST",
            "ring_url": "https://hooks.vaani.example/plivo/status?tenant=t1&vaani_call_id=call-0001",
            "ring_method": "POST",
            "ring_timeout": 25,
            "machine_detection": "true",
            "machine_detection_url": "https://hooks.vaani.example/plivo/status?tenant=t1&vaani_call_id=call-0001",
            "machine_detection_method": "POST",
        })
    );
}

#[tokio::test]
async fn originate_retries_429_only() {
    let (base, log) = mock(&[(429, r#"{"error":"too many"}"#), (201, FIRED)]).await;
    assert!(client(&base).originate(&outbound()).await.is_ok());
    assert_eq!(seen(&log).len(), 2);

    let (base, log) = mock(&[(400, r#"{"error":"invalid to"}"#), (201, FIRED)]).await;
    let r = client(&base).originate(&outbound()).await;
    assert!(
        matches!(r, Err(RestError::Status { status: 400, .. })),
        "{r:?}"
    );
    assert_eq!(seen(&log).len(), 1);

    // A 5xx may have placed the call: creating it again could ring the callee twice.
    let (base, log) = mock(&[(500, "{}"), (201, FIRED)]).await;
    let r = client(&base).originate(&outbound()).await;
    assert!(
        matches!(r, Err(RestError::Status { status: 500, .. })),
        "{r:?}"
    );
    assert_eq!(seen(&log).len(), 1);

    // 429 forever: gives up after max_retries (3) retries.
    let (base, log) = mock(&[
        (429, "{}"),
        (429, "{}"),
        (429, "{}"),
        (429, "{}"),
        (429, "{}"),
    ])
    .await;
    let r = client(&base).originate(&outbound()).await;
    assert!(
        matches!(r, Err(RestError::Status { status: 429, .. })),
        "{r:?}"
    );
    assert_eq!(seen(&log).len(), 4);

    let (base, log) = mock(&[(201, r#"{"message":"call fired"}"#)]).await;
    assert!(matches!(
        client(&base).originate(&outbound()).await,
        Err(RestError::Decode { .. })
    ));

    // A second destination smuggled into `to` would make it a bulk call: refused before sending.
    let mut bulk = outbound();
    bulk.to = "+919876543210<+919876543211".into();
    assert!(matches!(
        client(&base).originate(&bulk).await,
        Err(RestError::Invalid(_))
    ));
    assert_eq!(seen(&log).len(), 1);
}

#[tokio::test]
async fn hangup_deletes_and_treats_404_as_done() {
    let (base, log) = mock(&[(204, "")]).await;
    assert!(client(&base)
        .hangup("eba53b9e-8fbd-45c1-9444-696d2172fbc8")
        .await
        .is_ok());
    let s = seen(&log);
    assert_eq!(
        (s[0].method.as_str(), s[0].path.as_str()),
        (
            "DELETE",
            "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/eba53b9e-8fbd-45c1-9444-696d2172fbc8/"
        )
    );
    assert_eq!(
        s[0].auth.as_deref(),
        Some(basic("MAXXXXXXXXXXXXXXXXXX", "secret-token").as_str())
    );

    let (base, _) = mock(&[(404, r#"{"error":"not found"}"#)]).await;
    assert!(client(&base).hangup("u1").await.is_ok());

    // Hangup is idempotent: 5xx is retried.
    let (base, log) = mock(&[(503, "{}"), (204, "")]).await;
    assert!(client(&base).hangup("u1").await.is_ok());
    assert_eq!(seen(&log).len(), 2);

    let (base, log) = mock(&[(401, "{}")]).await;
    assert!(matches!(
        client(&base).hangup("u1").await,
        Err(RestError::Status { status: 401, .. })
    ));
    assert_eq!(seen(&log).len(), 1);

    assert!(matches!(
        client(&base).hangup("../../Account").await,
        Err(RestError::Invalid(_))
    ));
}

#[tokio::test]
async fn redirect_transfers_aleg() {
    let (base, log) = mock(&[(202, r#"{"message":"call transferred"}"#)]).await;
    let r = client(&base)
        .redirect(
            "u1",
            &RedirectTarget::Url("https://hooks.vaani.example/next".into()),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    let s = seen(&log);
    assert_eq!(
        (s[0].method.as_str(), s[0].path.as_str()),
        ("POST", "/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/u1/")
    );
    let body: serde_json::Value = serde_json::from_slice(&s[0].body).unwrap_or_default();
    assert_eq!(
        body,
        serde_json::json!({"legs": "aleg", "aleg_url": "https://hooks.vaani.example/next", "aleg_method": "POST"})
    );
    let r = client(&base)
        .redirect("u1", &RedirectTarget::Transfer("+919876543210".into()))
        .await;
    assert!(matches!(r, Err(RestError::Unsupported { .. })));
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

fn ct_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(FORM.to_string())),
        Just(Some("application/json".to_string())),
        Just(Some("text/plain".to_string())),
        ".{0,20}".prop_map(Some),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), ct in ct_strategy(), q in proptest::option::of(".{0,64}")) {
        let _ = plivo::parse(ct.as_deref(), &body, q.as_deref());
    }

    #[test]
    fn parse_never_panics_on_plausible_forms(
        pairs in proptest::collection::vec((
            prop_oneof![Just("CallUUID".to_string()), Just("Duration".to_string()), Just("EndTime".to_string()),
                        Just("AnswerTime".to_string()), Just("TotalCost".to_string()), Just("X-PH-Vaanicallid".to_string()),
                        Just("CallStatus".to_string()), Just("Machine".to_string()), "[A-Za-z_-]{1,12}"],
            ".{0,24}"), 0..12)
    ) {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = plivo::parse(Some(FORM), form_body(&refs).as_bytes(), None);
    }

    #[test]
    fn verify_never_panics(
        url in ".{0,80}",
        sig in ".{0,60}",
        nonce in "[ -~]{0,20}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ct in ct_strategy(),
        get in any::<bool>(),
    ) {
        let headers = [("X-Plivo-Signature-V3", sig.as_str()), ("X-Plivo-Signature-V3-Nonce", nonce.as_str()), ("X-Plivo-Signature-Ma-V3", sig.as_str())];
        let req = request(if get { Method::GET } else { Method::POST }, &url, &headers, ct.as_deref(), &body);
        let mut c = cfg();
        c.main_account_secret = Some("main".into());
        let _ = plivo::verify(&req, &c);
        let _ = plivo::signature_base(if get { "GET" } else { "POST" }, &url, &[]);
    }

    #[test]
    fn sign_then_verify_round_trips(
        path in "(/[a-z0-9]{1,8}){0,3}",
        query in proptest::collection::vec(("[a-z]{1,4}", "[A-Za-z0-9 +%&=.]{0,6}"), 0..3),
        params in proptest::collection::vec(("[A-Za-z]{1,8}", "[ -~]{0,12}"), 0..6),
        nonce in "[0-9]{1,20}",
        token in "[A-Za-z0-9_]{1,40}",
        get in any::<bool>(),
    ) {
        let mut url = format!("https://hooks.example.com{path}");
        if !query.is_empty() {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &query {
                ser.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&ser.finish());
        }
        let refs: Vec<(&str, &str)> = if get { Vec::new() } else { params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect() };
        let method = if get { "GET" } else { "POST" };
        let sig = plivo::sign_v3(method, &url, &refs, &nonce, &token);
        let body = form_body(&refs);
        let req = request(
            if get { Method::GET } else { Method::POST },
            &url,
            &[("X-Plivo-Signature-V3", sig.as_str()), ("X-Plivo-Signature-V3-Nonce", nonce.as_str())],
            (!refs.is_empty()).then_some(FORM),
            body.as_bytes(),
        );
        prop_assert_eq!(plivo::verify(&req, &VerifyConfig::new(token.clone(), Utc::now())), Ok(()));
        let other = format!("{token}x");
        prop_assert_eq!(plivo::verify(&req, &VerifyConfig::new(other, Utc::now())), Err(VerifyError::SignatureMismatch));
    }

    #[test]
    fn render_never_panics(call_id in ".{0,40}", token in ".{0,60}", text in ".{0,80}", url in ".{0,40}") {
        for action in [
            AnswerAction::ConnectSip { uri: url.clone() },
            AnswerAction::ConnectStream { url: url.clone() },
            AnswerAction::PlayAndHangup { message: text.clone(), language: Some(url.clone()) },
            AnswerAction::RejectBusy,
        ] {
            if let Ok(doc) = plivo::render_answer(&AnswerPlan { tenant: "acme".into(), call_id: call_id.clone(), token: token.clone(), action }) {
                prop_assert!(read_back(&doc.body).is_ok(), "not well-formed: {}", doc.body);
            }
        }
    }
}
