//! Provider media streams end to end against `vaani dev --app echo`: the answer webhook routes
//! the call to the dev media node, a WebSocket client speaks the provider's stream protocol
//! with the token from the answer document, plays audio, and checks what comes back: the same
//! audio, paced and framed by the provider's rules, marks after the audio they follow, and
//! `clear` dropping what was not yet played.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::{signed_post, start_dev, twilio_upgrade_signature, vaani, Dev};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use vaani_media::codec::g711;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// μ-law encoding of one sample (ITU-T G.711), for making test audio.
fn mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = (s + BIAS).min(0x7FFF);
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// `ms` of a 440 Hz tone at 8 kHz as 16-bit samples.
fn tone(ms: usize) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0) as i16)
        .collect()
}

/// Pull `name="…" value="…"` parameters and the stream URL out of a TwiML answer.
fn twiml_stream(xml: &str) -> (String, String, String) {
    let attr = |after: &str, name: &str| -> String {
        let rest = xml.split(after).nth(1).unwrap_or_default();
        rest.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    (
        attr("<Stream", "url").replace("&amp;", "&"),
        attr("name=\"vaani_call_id\"", "value"),
        attr("name=\"vaani_token\"", "value"),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Option<serde_json::Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The answer webhook for a new call, retried until the dev node has registered itself.
fn answer(addr: &str, provider: &str, secret: &str, path: &str, body: &str) -> String {
    for _ in 0..50 {
        let (code, doc) = signed_post(addr, provider, secret, path, body);
        assert_eq!(code, 200, "{doc}");
        if doc.contains("ws://") {
            return doc;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the answer never connected to the dev media node");
}

/// Telnyx outbound frames until the mark `name`: the echoed audio before it.
async fn telnyx_echo_until_mark(ws: &mut Ws, name: &str) -> Vec<u8> {
    let mut echoed = Vec::new();
    loop {
        let v = next_json(ws).await.expect("the stream went quiet");
        match v["event"].as_str() {
            Some("media") => {
                echoed.extend(B64.decode(v["media"]["payload"].as_str().unwrap()).unwrap())
            }
            Some("mark") => {
                assert_eq!(v["mark"]["name"], name);
                return echoed;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_stream_echoes_audio_with_marks_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev(&data);
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "twilio",
        "--secret",
        "tw-token",
        "--data",
        &data,
    ]);
    assert_eq!(set.status.code(), Some(0));
    let addr = dev.addr.clone();
    let xml = tokio::task::spawn_blocking(move || {
        answer(&addr, "twilio", "tw-token", "/v1/demo/twilio/answer",
            "CallSid=CAstream1&AccountSid=AC1&CallStatus=ringing&Direction=inbound&From=%2B919876543210&To=%2B918047491899")
    })
    .await
    .unwrap();
    let (url, call_id, token) = twiml_stream(&xml);
    assert!(url.ends_with("/streams/demo/twilio"), "{xml}");
    assert!(!call_id.is_empty() && !token.is_empty(), "{xml}");

    // Twilio signs the upgrade: unsigned or wrongly signed upgrades are refused with 401
    // before any WebSocket exists.
    for secret in [None, Some("not-the-token")] {
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(secret) = secret {
            for (k, v) in twilio_upgrade_signature(&url, secret) {
                req.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{secret:?}")
            }
            other => panic!("unsigned upgrade accepted: {:?}", other.map(|_| ())),
        }
    }
    let signed = || {
        let mut req = url.as_str().into_client_request().unwrap();
        for (k, v) in twilio_upgrade_signature(&url, "tw-token") {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req
    };

    // A wrong token is refused with a policy-violation close.
    let (mut bad, _) = tokio_tungstenite::connect_async(signed()).await.unwrap();
    let start = |call: &str, tok: &str| {
        serde_json::json!({
        "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CAstream1", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"vaani_call_id": call, "vaani_token": tok}}
    }).to_string()
    };
    bad.send(Message::text(start(&call_id, "v1.0.forged")))
        .await
        .unwrap();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), bad.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(closed, Some(1008));

    let (mut ws, _) = tokio_tungstenite::connect_async(signed()).await.unwrap();
    ws.send(Message::text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(start(&call_id, &token)))
        .await
        .unwrap();

    // One second of tone in 20 ms frames, as Twilio sends it.
    let sent: Vec<u8> = tone(1000).into_iter().map(mulaw).collect();
    for (i, frame) in sent.chunks(160).enumerate() {
        let msg = serde_json::json!({"event": "media", "sequenceNumber": (i + 2).to_string(), "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": (i + 1).to_string(), "timestamp": (i * 20).to_string(),
                      "payload": B64.encode(frame)}});
        ws.send(Message::text(msg.to_string())).await.unwrap();
    }
    ws.send(Message::text(r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"60","dtmf":{"track":"inbound_track","digit":"5"}}"#)).await.unwrap();

    // The echo: the same bytes, in frames of 20 ms, then the mark placed behind them.
    let started = std::time::Instant::now();
    let mut echoed = Vec::new();
    let mut frames = 0;
    loop {
        let v = next_json(&mut ws).await.expect("the stream went quiet");
        match v["event"].as_str() {
            Some("media") => {
                assert_eq!(v["streamSid"], "MZ1");
                let bytes = B64.decode(v["media"]["payload"].as_str().unwrap()).unwrap();
                assert!(bytes.len() <= 160, "frames are 20 ms");
                echoed.extend(bytes);
                frames += 1;
            }
            Some("mark") => {
                assert_eq!(v["mark"]["name"], "dtmf-5");
                break;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert_eq!(echoed, sent, "echo returns exactly what was sent");
    assert_eq!(frames, 50);
    // Paced at real time: 1 s of audio cannot all have come back at once (60 ms lead).
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "sent faster than real time: {:?}",
        started.elapsed()
    );
    // Twilio acknowledges the mark once played.
    ws.send(Message::text(
        r#"{"event":"mark","streamSid":"MZ1","sequenceNumber":"61","mark":{"name":"dtmf-5"}}"#,
    ))
    .await
    .unwrap();

    // Barge-in: another second of audio, then `0` clears what was not yet sent.
    for (i, frame) in sent.chunks(160).enumerate() {
        let msg = serde_json::json!({"event": "media", "sequenceNumber": (i + 70).to_string(), "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": (i + 60).to_string(), "timestamp": (1200 + i * 20).to_string(),
                      "payload": B64.encode(frame)}});
        ws.send(Message::text(msg.to_string())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(Message::text(r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"200","dtmf":{"track":"inbound_track","digit":"0"}}"#)).await.unwrap();
    let mut before_clear = 0;
    loop {
        let v = next_json(&mut ws).await.expect("no clear");
        match v["event"].as_str() {
            Some("media") => before_clear += 1,
            Some("clear") => {
                assert_eq!(v["streamSid"], "MZ1");
                break;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert!(
        before_clear < 50,
        "clear came after the whole second was sent ({before_clear} frames)"
    );
    // Nothing more is played after the clear.
    ws.send(Message::text(r#"{"event":"stop","sequenceNumber":"201","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CAstream1"}}"#)).await.unwrap();
    while let Some(v) = next_json(&mut ws).await {
        assert_ne!(v["event"], "media", "audio after clear: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_stream_echoes_pcm_in_valid_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev(&data);
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "exotel",
        "--secret",
        "exo-token",
        "--data",
        &data,
    ]);
    assert_eq!(set.status.code(), Some(0));
    let addr = dev.addr.clone();
    let doc = tokio::task::spawn_blocking(move || {
        answer(
            &addr,
            "exotel",
            "exo-token",
            "/v1/demo/exotel/answer?token=exo-token",
            "CallSid=exo-stream-1&CallFrom=09876543210&CallTo=08047491899&Direction=incoming",
        )
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    assert!(
        url.contains("/streams/demo/exotel?") && url.contains("vaani_token="),
        "{url}"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(r#"{"event":"connected"}"#))
        .await
        .unwrap();
    ws.send(Message::text(serde_json::json!({"event": "start", "sequence_number": "1", "stream_sid": "S1",
        "start": {"stream_sid": "S1", "call_sid": "exo-stream-1", "account_sid": "acc",
                  "from": "09876543210", "to": "08047491899", "custom_parameters": {},
                  "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}}).to_string()))
        .await
        .unwrap();
    // One second of 16-bit little-endian PCM in 100 ms chunks, as Exotel sends it.
    let sent: Vec<u8> = tone(1000).into_iter().flat_map(i16::to_le_bytes).collect();
    for (i, chunk) in sent.chunks(1600).enumerate() {
        ws.send(Message::text(serde_json::json!({"event": "media", "sequence_number": (i + 2).to_string(), "stream_sid": "S1",
            "media": {"chunk": (i + 1).to_string(), "timestamp": (i * 100).to_string(), "payload": B64.encode(chunk)}}).to_string()))
            .await
            .unwrap();
    }
    ws.send(Message::text(r#"{"event":"dtmf","sequence_number":"20","stream_sid":"S1","dtmf":{"digit":"7","duration":"100"}}"#)).await.unwrap();
    let mut echoed = Vec::new();
    loop {
        let v = next_json(&mut ws).await.expect("the stream went quiet");
        match v["event"].as_str() {
            Some("media") => {
                assert_eq!(v["stream_sid"], "S1");
                let bytes = B64.decode(v["media"]["payload"].as_str().unwrap()).unwrap();
                assert!(
                    bytes.len() >= 3200 && bytes.len() <= 100_000 && bytes.len() % 320 == 0,
                    "Exotel chunk of {} bytes",
                    bytes.len()
                );
                echoed.extend(bytes);
            }
            Some("mark") => {
                assert_eq!(v["mark"]["name"], "dtmf-7");
                break;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert!(echoed.len() >= sent.len());
    assert_eq!(
        &echoed[..sent.len()],
        &sent[..],
        "echo returns the audio, padded only at the end"
    );
    assert!(
        echoed[sent.len()..].iter().all(|b| *b == 0),
        "padding is silence"
    );
}

/// Text of the first `<tag …>text</tag>` element.
fn element_text(xml: &str, tag: &str) -> String {
    xml.split(&format!("<{tag}"))
        .nth(1)
        .and_then(|s| s.split_once('>'))
        .and_then(|(_, rest)| rest.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plivo_stream_echoes_audio_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev(&data);
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "plivo",
        "--secret",
        "pl-token",
        "--data",
        &data,
    ]);
    assert_eq!(set.status.code(), Some(0));
    let addr = dev.addr.clone();
    let xml = tokio::task::spawn_blocking(move || {
        answer(&addr, "plivo", "pl-token", "/v1/demo/plivo/answer",
            "CallUUID=5a3b9c1e-0000-4000-8000-000000000001&From=919876543210&To=918047491899&CallStatus=ringing&Direction=inbound")
    })
    .await
    .unwrap();
    let url = element_text(&xml, "Stream");
    assert!(
        url.contains("/streams/demo/plivo?") && url.contains("vaani_token="),
        "{xml}"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Plivo sends no `connected`; its start carries numbers where Twilio has strings.
    ws.send(Message::text(serde_json::json!({"event": "start", "sequenceNumber": 1,
        "start": {"callId": "5a3b9c1e-0000-4000-8000-000000000001", "streamId": "st-1", "accountId": "MA1",
                  "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
        "extra_headers": ""}).to_string()))
        .await
        .unwrap();
    let sent: Vec<u8> = tone(400).into_iter().map(mulaw).collect();
    for (i, frame) in sent.chunks(160).enumerate() {
        ws.send(Message::text(serde_json::json!({"event": "media", "sequenceNumber": i + 2, "streamId": "st-1",
            "media": {"track": "inbound", "timestamp": (1_705_312_200_000u64 + i as u64 * 20).to_string(),
                      "chunk": i + 1, "payload": B64.encode(frame)}}).to_string()))
            .await
            .unwrap();
    }
    ws.send(Message::text(r#"{"event":"dtmf","sequenceNumber":40,"streamId":"st-1","dtmf":{"track":"inbound","digit":"5","timestamp":"1705312250000"}}"#)).await.unwrap();
    let mut echoed = Vec::new();
    loop {
        let v = next_json(&mut ws).await.expect("the stream went quiet");
        match v["event"].as_str() {
            Some("playAudio") => {
                assert_eq!(v["media"]["contentType"], "audio/x-mulaw");
                assert_eq!(v["media"]["sampleRate"], 8000);
                echoed.extend(B64.decode(v["media"]["payload"].as_str().unwrap()).unwrap());
            }
            Some("checkpoint") => {
                assert_eq!(v["name"], "dtmf-5");
                break;
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert_eq!(echoed, sent);
    ws.send(Message::text(
        r#"{"event":"playedStream","sequenceNumber":41,"streamId":"st-1","name":"dtmf-5"}"#,
    ))
    .await
    .unwrap();
    // Plivo has no stop event: closing the socket ends the stream.
    ws.close(None).await.unwrap();
}

/// A Telnyx tenant on `dev` and a TeXML answer for call `call`: the stream URL, our call id
/// and the media token.
async fn telnyx_answer(dev: &Dev, data: &str, call: &str) -> (String, String, String) {
    let seed = [42u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "telnyx",
        "--secret",
        &B64.encode(public),
        "--data",
        data,
    ]);
    assert_eq!(set.status.code(), Some(0));
    let addr = dev.addr.clone();
    let body = format!("CallSid={call}&AccountSid=acct&CallStatus=ringing&Direction=inbound&From=%2B919876543210&To=%2B918047491899");
    let xml = tokio::task::spawn_blocking(move || {
        // A TeXML voice webhook (Twilio-shaped form fields), signed with Ed25519.
        answer(
            &addr,
            "telnyx",
            &B64.encode(seed),
            "/v1/demo/telnyx/answer",
            &body,
        )
    })
    .await
    .unwrap();
    let (url, call_id, token) = twiml_stream(&xml);
    assert!(url.ends_with("/streams/demo/telnyx"), "{xml}");
    (url, call_id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_stream_reorders_and_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev(&data);
    let (url, call_id, token) = telnyx_answer(&dev, &data, "v3:telnyx-stream-1").await;

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(r#"{"event":"connected","version":"1.0.0"}"#))
        .await
        .unwrap();
    ws.send(Message::text(serde_json::json!({"event": "start", "sequence_number": "1", "stream_id": "S-T",
        "start": {"user_id": "u", "call_control_id": "v3:telnyx-stream-1", "from": "+919876543210", "to": "+918047491899",
                  "custom_parameters": {"vaani_call_id": call_id, "vaani_token": token},
                  "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}).to_string()))
        .await
        .unwrap();
    let sent: Vec<u8> = tone(400).into_iter().map(mulaw).collect();
    let frames: Vec<&[u8]> = sent.chunks(160).collect();
    // Telnyx does not guarantee order: deliver each pair of frames swapped.
    let mut order: Vec<usize> = (0..frames.len()).collect();
    for pair in order.chunks_mut(2) {
        pair.reverse();
    }
    for i in order {
        ws.send(Message::text(serde_json::json!({"event": "media", "sequence_number": (i + 2).to_string(), "stream_id": "S-T",
            "media": {"track": "inbound", "chunk": (i + 1).to_string(), "timestamp": (i * 20).to_string(),
                      "payload": B64.encode(frames[i])}}).to_string()))
            .await
            .unwrap();
    }
    ws.send(Message::text(
        r##"{"event":"dtmf","stream_id":"S-T","sequence_number":"40","dtmf":{"digit":"#"}}"##,
    ))
    .await
    .unwrap();
    let echoed = telnyx_echo_until_mark(&mut ws, "dtmf-#").await;
    assert_eq!(echoed, sent, "frames come back in order");
    ws.send(Message::text(r#"{"event":"stop","sequence_number":"41","stream_id":"S-T","stop":{"user_id":"u","call_control_id":"v3:telnyx-stream-1"}}"#)).await.unwrap();
}

/// Amplitude of the `freq` component of 8 kHz `x` (Goertzel).
fn goertzel(x: &[i16], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0).sqrt() / x.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_pcma_stream_is_echoed_as_pcmu() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev(&data);
    let (url, call_id, token) = telnyx_answer(&dev, &data, "v3:telnyx-stream-2").await;

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // A PCMA call streamed untranscoded; what we send back is μ-law, as our TeXML asks.
    ws.send(Message::text(
        serde_json::json!({"event": "start", "sequence_number": "1", "stream_id": "S-A",
        "start": {"user_id": "u", "call_control_id": "v3:telnyx-stream-2",
                  "custom_parameters": {"vaani_call_id": call_id, "vaani_token": token},
                  "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let pcm = tone(400);
    let mut sent = vec![0u8; pcm.len()];
    g711::encode_alaw(&pcm, &mut sent);
    for (i, frame) in sent.chunks(160).enumerate() {
        ws.send(Message::text(serde_json::json!({"event": "media", "sequence_number": (i + 2).to_string(), "stream_id": "S-A",
            "media": {"track": "inbound", "chunk": (i + 1).to_string(), "timestamp": (i * 20).to_string(),
                      "payload": B64.encode(frame)}}).to_string()))
            .await
            .unwrap();
    }
    ws.send(Message::text(
        r#"{"event":"dtmf","stream_id":"S-A","sequence_number":"40","dtmf":{"digit":"1"}}"#,
    ))
    .await
    .unwrap();
    let echoed = telnyx_echo_until_mark(&mut ws, "dtmf-1").await;
    assert_eq!(echoed.len(), sent.len(), "20 ms in, 20 ms out");
    let mut back = vec![0i16; echoed.len()];
    g711::decode_ulaw(&echoed, &mut back);
    // 200 ms from 100 ms in: 88 whole periods of 440 Hz.
    let window = &back[800..2400];
    let at_440 = goertzel(window, 440.0);
    let level_db = 20.0 * (at_440 / 8000.0).log10();
    assert!(level_db.abs() < 0.5, "440 Hz at {level_db:.2} dB");
    let strongest = (200..=3400)
        .step_by(10)
        .map(|f| (f, goertzel(window, f64::from(f))))
        .fold(
            (0, 0.0),
            |best, (f, a)| if a > best.1 { (f, a) } else { best },
        );
    assert_eq!(strongest.0, 440, "{strongest:?}");
    ws.send(Message::text(
        r#"{"event":"stop","sequence_number":"41","stream_id":"S-A","stop":{}}"#,
    ))
    .await
    .unwrap();
}
