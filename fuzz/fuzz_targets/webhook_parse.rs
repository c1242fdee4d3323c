//! Provider webhook bodies (form and JSON) through every provider's parser and verifier:
//! never a panic, and anything that parses serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaani_events::Provider;

fuzz_target!(|data: &[u8]| {
    let (selector, body) = data.split_first().map_or((0, data), |(s, b)| (*s, b));
    let provider = Provider::ALL[usize::from(selector) % Provider::ALL.len()];
    let content_type = match selector / 8 % 3 {
        0 => Some("application/x-www-form-urlencoded"),
        1 => Some("application/json"),
        _ => None,
    };
    if let Ok(event) = vaani_telephony::parse(provider, content_type, body, Some("vaani_call_id=c1")) {
        assert!(serde_json::to_string(&event).is_ok());
        let _ = event.dedupe_id();
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("x-twilio-signature", "AAAA"),
        ("x-plivo-signature-v3", "AAAA,BBBB"),
        ("x-plivo-signature-v3-nonce", "1"),
        ("telnyx-signature-ed25519", "AAAA"),
        ("telnyx-timestamp", "1700000000"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    if let Some(ct) = content_type {
        headers.insert("content-type", http::HeaderValue::from_static(ct));
    }
    let req = vaani_telephony::WebhookRequest {
        method: http::Method::POST,
        url: format!("https://h.example/v1/t/{provider}/status?token=x"),
        headers,
        body: body.to_vec().into(),
        source_ip: None,
    };
    let cfg = vaani_telephony::VerifyConfig::new("secret", chrono::DateTime::UNIX_EPOCH);
    let _ = vaani_telephony::verify(provider, &req, &cfg);
    let _ = vaani_telephony::detect_provider(&req);
});
