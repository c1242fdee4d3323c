//! End-to-end tests of the `vaani` binary: the exact CLI surface the README documents, and
//! `vaani dev` serving real HTTP over the embedded store.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{post, start_dev, stdout, vaani, vaani_stdin};

const VECTOR_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const VECTOR_BODY: &str =
    "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";

#[test]
fn verify_prints_valid_or_invalid_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, VECTOR_BODY).unwrap();
    let body = body.to_str().unwrap();
    let ok = vaani(&[
        "webhook",
        "verify",
        "--provider",
        "twilio",
        "--secret",
        "12345",
        "--url",
        VECTOR_URL,
        "-H",
        "X-Twilio-Signature: 0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--body-file",
        body,
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(stdout(&ok), "valid");

    let bad = vaani(&[
        "webhook",
        "verify",
        "--provider",
        "twilio",
        "--secret",
        "54321",
        "--url",
        VECTOR_URL,
        "-H",
        "X-Twilio-Signature: 0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
        "--body-file",
        body,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).starts_with("invalid: "), "{}", stdout(&bad));

    let stdin = vaani_stdin(
        &[
            "webhook",
            "verify",
            "--provider",
            "twilio",
            "--secret",
            "12345",
            "--url",
            VECTOR_URL,
            "-H",
            "X-Twilio-Signature: 0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
            "--body-file",
            "-",
        ],
        VECTOR_BODY.as_bytes(),
    );
    assert_eq!(stdout(&stdin), "valid");

    let usage = vaani(&[
        "webhook",
        "verify",
        "--provider",
        "twilio",
        "--url",
        VECTOR_URL,
    ]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --secret is a usage error"
    );
    let usage = vaani(&[
        "webhook",
        "verify",
        "--provider",
        "skype",
        "--secret",
        "x",
        "--url",
        VECTOR_URL,
    ]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = vaani(&[
        "webhook",
        "verify",
        "--provider",
        "twilio",
        "--secret",
        "x",
        "--url",
        VECTOR_URL,
        "-H",
        "no-colon",
    ]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn parse_prints_one_normalized_event() {
    let out = vaani_stdin(
        &["webhook", "parse", "--provider", "twilio"],
        b"CallSid=CA1&AccountSid=AC1&CallStatus=no-answer&Direction=outbound-api&From=09876543210&To=%2B14155550100&CallDuration=0&SequenceNumber=2",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["provider"], "twilio");
    assert_eq!(v["provider_call_id"], "CA1");
    assert_eq!(v["status"], "no_answer");
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["from"], "+919876543210");
    assert_eq!(v["to"], "+14155550100");
    assert_eq!(v["sequence"], 2);
    assert_eq!(v["raw"]["CallStatus"], "no-answer");

    let bad = vaani_stdin(
        &[
            "webhook",
            "parse",
            "--provider",
            "telnyx",
            "--content-type",
            "application/json",
        ],
        b"{not json",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("malformed"));
}

#[test]
fn dev_serves_verified_webhooks_into_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let dev = start_dev(data);
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "twilio",
        "--secret",
        "dev-token",
        "--data",
        data,
    ]);
    assert_eq!(set.status.code(), Some(0), "{set:?}");

    let url = format!("http://{}/v1/demo/twilio/status", dev.addr);
    let body = "CallSid=CAe2e&AccountSid=AC1&CallStatus=completed&Direction=inbound&From=%2B919876543210&To=%2B918047491899&CallDuration=61&SequenceNumber=4";
    let body_file = dir.path().join("status.form");
    std::fs::write(&body_file, body).unwrap();
    let signed = vaani(&[
        "webhook",
        "sign",
        "--provider",
        "twilio",
        "--secret",
        "dev-token",
        "--url",
        &url,
        "--body-file",
        body_file.to_str().unwrap(),
    ]);
    assert_eq!(signed.status.code(), Some(0), "{signed:?}");
    let mut headers: Vec<(String, String)> = stdout(&signed)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    headers.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));

    // Unsigned: refused, nothing stored.
    let (code, _) = post(
        &dev.addr,
        "/v1/demo/twilio/status",
        &headers[headers.len() - 1..],
        body,
    );
    assert_eq!(code, 401);
    // Signed, three times (a provider retrying): one call, one event.
    for _ in 0..3 {
        let (code, resp) = post(&dev.addr, "/v1/demo/twilio/status", &headers, body);
        assert_eq!(code, 200, "{resp}");
    }
    let (code, _) = post(&dev.addr, "/healthz", &[], "");
    assert_eq!(code, 405, "healthz answers GET only");

    let list = vaani(&["calls", "list", "--json", "--data", data]);
    let calls: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(calls.as_array().map(Vec::len), Some(1), "{calls}");
    assert_eq!(calls[0]["status"], "completed");
    assert_eq!(calls[0]["duration_s"], 61);
    let show = vaani(&["calls", "show", "CAe2e", "--json", "--data", data]);
    let call: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(call["provider_call_id"], "CAe2e");
    assert_eq!(call["events"].as_array().map(Vec::len), Some(1));
    let table = vaani(&["calls", "list", "--data", data]);
    assert!(
        stdout(&table).contains("+91********10"),
        "numbers are masked: {}",
        stdout(&table)
    );
    let missing = vaani(&["calls", "show", "nope", "--data", data]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn dev_refuses_sip_codecs_it_cannot_carry() {
    let data = tempfile::tempdir().unwrap();
    for bad in ["g729", "pcmu,speex", ""] {
        let out = vaani(&[
            "dev",
            "--http",
            "127.0.0.1:0",
            "--sip",
            "127.0.0.1:0",
            "--data",
            data.path().to_str().unwrap(),
            "--sip-codecs",
            bad,
        ]);
        assert!(!out.status.success(), "--sip-codecs {bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("sip-codecs"), "{bad:?}: {err}");
    }
}
