//! Cartesia and ElevenLabs TTS against local servers speaking their WebSocket protocols:
//! documented request and response frames, audio decoded exactly (odd chunk boundaries
//! included), usage, socket reuse, error frames, refused handshakes, dropped sockets and
//! the TTS fallback chain (slow first byte, mid-stream failure, breaker).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cloud_support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use vaani_media::cloud::cartesia::{CartesiaAuth, CartesiaConfig, CartesiaTts};
use vaani_media::cloud::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
use vaani_media::cloud::{record_switches, ApiKey, EngineKind, FallbackConfig, TtsChain};
use vaani_media::pipeline::engines::{EngineError, TtsEngine, TtsEvent};
use vaani_media::pipeline::fake::FakeTts;

const CARTESIA_KEY: &str = "sk_car_test_0c8e1f";
const ELEVEN_KEY: &str = "xi-test-key-4b7d2a";
const VOICE: &str = "694f9389-aac1-45b6-b726-9d9369183238";
const T: Duration = Duration::from_secs(5);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Audio and usage of a synthesis, or its error.
async fn synth(
    engine: &dyn TtsEngine,
    text: &str,
    voice: Option<&str>,
) -> (Vec<i16>, Vec<u64>, Option<EngineError>) {
    let mut rx = engine.synthesize(text, voice);
    let mut audio = Vec::new();
    let mut usage = Vec::new();
    let mut error = None;
    for ev in drain(&mut rx, T).await {
        match ev {
            Ok(TtsEvent::Audio(pcm)) => audio.extend(pcm),
            Ok(TtsEvent::Usage { characters }) => usage.push(characters),
            Err(e) => error = Some(e),
        }
    }
    (audio, usage, error)
}

// ---------------------------------------------------------------------------------------
// Cartesia

fn cartesia(url: &str) -> CartesiaConfig {
    let mut c = CartesiaConfig::new(ApiKey::new(CARTESIA_KEY).unwrap());
    c.base_url = url.into();
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// A Cartesia that answers each request with its audio in chunks cut at odd byte offsets,
/// then `done`; it records the requests.
fn cartesia_speaking(
    requests: Arc<Mutex<Vec<Value>>>,
    audio: Vec<u8>,
) -> impl Fn(ServerWs, usize) -> futures::future::BoxFuture<'static, ()> {
    move |mut ws, _| {
        let requests = requests.clone();
        let audio = audio.clone();
        Box::pin(async move {
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let req: Value = serde_json::from_str(&t).unwrap();
                requests.lock().unwrap().push(req.clone());
                if req.get("cancel").is_some() {
                    continue;
                }
                let ctx = req["context_id"].as_str().unwrap().to_string();
                // A stray frame of another context first: must be ignored.
                let stray = json!({"type": "chunk", "data": b64(&[9, 9]), "done": false, "status_code": 206, "step_time": 1.0, "context_id": "someone-else"});
                ws.send(Message::text(stray.to_string())).await.unwrap();
                for part in audio.chunks(301) {
                    let chunk = json!({"type": "chunk", "data": b64(part), "done": false, "status_code": 206, "step_time": 12.5, "context_id": ctx});
                    ws.send(Message::text(chunk.to_string())).await.unwrap();
                }
                let ts = json!({"type": "timestamps", "word_timestamps": {"words": ["Hello"], "start": [0.0], "end": [0.4]}, "context_id": ctx, "status_code": 206, "done": false});
                ws.send(Message::text(ts.to_string())).await.unwrap();
                let done =
                    json!({"type": "done", "done": true, "status_code": 200, "context_id": ctx});
                ws.send(Message::text(done.to_string())).await.unwrap();
            }
        })
    }
}

#[tokio::test]
async fn cartesia_streams_audio_and_reuses_its_socket() {
    capture_logs();
    let samples = ramp(1200, -3000);
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mock = ws_mock(cartesia_speaking(requests.clone(), le_bytes(&samples))).await;
    let mut cfg = cartesia(&mock.url());
    cfg.language = Some("en".into());
    let tts = CartesiaTts::new(cfg);
    let (audio, usage, err) = synth(&tts, "Hello there.", Some(VOICE)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        audio, samples,
        "PCM arrives intact across odd chunk boundaries"
    );
    assert_eq!(usage, [12]);
    // The agent's voice is an espeak name here: the configured Cartesia voice is used.
    let (audio, _, err) = synth(&tts, "Second sentence.", Some("en-us")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(audio.len(), samples.len());
    assert_eq!(
        mock.connections(),
        1,
        "the socket is kept for the next sentence"
    );

    let h = mock.handshake(0);
    assert_eq!(h.path(), "/tts/websocket");
    assert_eq!(h.query("api_key"), [CARTESIA_KEY]);
    assert_eq!(h.query("cartesia_version"), ["2025-04-16"]);
    let reqs = requests.lock().unwrap();
    let r = &reqs[0];
    assert_eq!(r["model_id"], "sonic-2");
    assert_eq!(r["transcript"], "Hello there.");
    assert_eq!(r["voice"], json!({"mode": "id", "id": VOICE}));
    assert_eq!(
        r["output_format"],
        json!({"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000})
    );
    assert_eq!(r["continue"], false);
    assert_eq!(r["language"], "en");
    assert_ne!(reqs[0]["context_id"], reqs[1]["context_id"]);
    assert_eq!(
        reqs[1]["voice"]["id"],
        vaani_media::cloud::cartesia::DEFAULT_VOICE
    );
    assert!(!logs().contains(CARTESIA_KEY));
}

#[tokio::test]
async fn cartesia_header_auth_and_resampling() {
    capture_logs();
    // 24 kHz from the engine becomes 16 kHz: 480 samples in, 320 out.
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mock = ws_mock(cartesia_speaking(requests.clone(), vec![0u8; 480 * 2])).await;
    let mut cfg = cartesia(&mock.url());
    cfg.auth = CartesiaAuth::Header;
    cfg.sample_rate = 24_000;
    let tts = CartesiaTts::new(cfg);
    let (audio, _, err) = synth(&tts, "Hi.", Some(VOICE)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(audio.len(), 320);
    let h = mock.handshake(0);
    assert!(h.query("api_key").is_empty());
    assert_eq!(h.header("x-api-key"), Some(CARTESIA_KEY));
    assert_eq!(h.header("cartesia-version"), Some("2025-04-16"));
    assert_eq!(
        requests.lock().unwrap()[0]["output_format"]["sample_rate"],
        24000
    );
}

#[tokio::test]
async fn cartesia_errors_classify() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let req: Value = serde_json::from_str(&t).unwrap();
            let err = json!({"type": "error", "context_id": req["context_id"], "status_code": 400, "done": true,
                "error": "Invalid voice ID. Please check the voice ID and try again."});
            ws.send(Message::text(err.to_string())).await.unwrap();
        }
    })
    .await;
    let (_, usage, err) = synth(&CartesiaTts::new(cartesia(&mock.url())), "Hi.", None).await;
    let e = err.unwrap();
    assert!(
        !e.retryable && e.message.contains("Invalid voice ID"),
        "{e}"
    );
    assert!(usage.is_empty());

    for (status, retryable) in [(401, false), (402, false), (429, true), (500, true)] {
        let addr = refusing_server(status, r#"{"error":"refused"}"#).await;
        let (_, _, err) = synth(
            &CartesiaTts::new(cartesia(&format!("ws://{addr}"))),
            "Hi.",
            None,
        )
        .await;
        let e = err.unwrap();
        assert_eq!(e.retryable, retryable, "{status}: {e}");
        assert!(!e.to_string().contains(CARTESIA_KEY), "{e}");
    }
    let (_, _, err) = synth(
        &CartesiaTts::new(cartesia(&format!("ws://{}", dead_port().await))),
        "Hi.",
        None,
    )
    .await;
    let e = err.unwrap();
    assert!(e.retryable && !e.to_string().contains(CARTESIA_KEY), "{e}");
    assert!(!logs().contains(CARTESIA_KEY));
}

#[tokio::test]
async fn cartesia_dropped_mid_stream_is_retryable() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            let req: Value = serde_json::from_str(&t).unwrap();
            let chunk = json!({"type": "chunk", "data": b64(&[1, 0, 2, 0]), "done": false, "status_code": 206, "step_time": 3.0, "context_id": req["context_id"]});
            ws.send(Message::text(chunk.to_string())).await.unwrap();
        }
        // Gone, no close frame.
    })
    .await;
    let (audio, usage, err) = synth(&CartesiaTts::new(cartesia(&mock.url())), "Hi.", None).await;
    assert_eq!(audio, [1, 2]);
    assert!(usage.is_empty());
    assert!(err.unwrap().retryable);
}

#[tokio::test]
async fn a_dead_pooled_socket_is_replaced_silently() {
    capture_logs();
    // The first connection serves one sentence and then closes while idle.
    let mock = ws_mock(|mut ws, i| async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let req: Value = serde_json::from_str(&t).unwrap();
            let ctx = req["context_id"].clone();
            let chunk = json!({"type": "chunk", "data": b64(&[5, 0]), "done": false, "status_code": 206, "step_time": 1.0, "context_id": ctx});
            ws.send(Message::text(chunk.to_string())).await.unwrap();
            let done = json!({"type": "done", "done": true, "status_code": 200, "context_id": ctx});
            ws.send(Message::text(done.to_string())).await.unwrap();
            if i == 0 {
                let _ = ws.close(None).await;
                return;
            }
        }
    })
    .await;
    let tts = CartesiaTts::new(cartesia(&mock.url()));
    let (a, _, e) = synth(&tts, "One.", None).await;
    assert!(e.is_none() && a == [5], "{e:?} {a:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a, _, e) = synth(&tts, "Two.", None).await;
    assert!(e.is_none(), "{e:?}");
    assert_eq!(a, [5]);
    assert_eq!(mock.connections(), 2);
}

// ---------------------------------------------------------------------------------------
// ElevenLabs

fn eleven(url: &str) -> ElevenLabsConfig {
    let mut c = ElevenLabsConfig::new(ApiKey::new(ELEVEN_KEY).unwrap());
    c.base_url = url.into();
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn eleven_speaking(
    received: Arc<Mutex<Vec<Value>>>,
    audio: Vec<u8>,
) -> impl Fn(ServerWs, usize) -> futures::future::BoxFuture<'static, ()> {
    move |mut ws, _| {
        let received = received.clone();
        let audio = audio.clone();
        Box::pin(async move {
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let m: Value = serde_json::from_str(&t).unwrap();
                received.lock().unwrap().push(m.clone());
                if m["text"] == "" {
                    for part in audio.chunks(333) {
                        let frame = json!({"audio": b64(part), "isFinal": null,
                            "normalizedAlignment": {"charStartTimesMs": [0, 3, 7], "charsDurationsMs": [3, 4, 5], "chars": ["H", "e", "l"]},
                            "alignment": {"charStartTimesMs": [0, 3, 7], "charsDurationsMs": [3, 4, 5], "chars": ["H", "e", "l"]}});
                        ws.send(Message::text(frame.to_string())).await.unwrap();
                    }
                    ws.send(Message::text(r#"{"isFinal":true}"#)).await.unwrap();
                    let _ = ws.close(None).await;
                    return;
                }
            }
        })
    }
}

#[tokio::test]
async fn elevenlabs_streams_audio() {
    capture_logs();
    let samples = ramp(900, 1234);
    let received = Arc::new(Mutex::new(Vec::new()));
    let mock = ws_mock(eleven_speaking(received.clone(), le_bytes(&samples))).await;
    let tts = ElevenLabsTts::new(eleven(&mock.url()));
    let (audio, usage, err) = synth(&tts, "Hello there.", Some("pNInz6obpgDQGcFmaJgB")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(audio, samples);
    assert_eq!(usage, [12]);
    let h = mock.handshake(0);
    assert_eq!(
        h.path(),
        "/v1/text-to-speech/pNInz6obpgDQGcFmaJgB/stream-input"
    );
    assert_eq!(h.query("model_id"), ["eleven_turbo_v2_5"]);
    assert_eq!(h.query("output_format"), ["pcm_16000"]);
    assert_eq!(h.header("xi-api-key"), Some(ELEVEN_KEY));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["text"], " ");
    assert!(got[0]["voice_settings"]["stability"].is_number());
    assert_eq!(got[1], json!({"text": "Hello there. ", "flush": true}));
    assert_eq!(got[2], json!({"text": ""}));
    assert!(!logs().contains(ELEVEN_KEY));
}

#[tokio::test]
async fn elevenlabs_errors_classify() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        let _ = ws.next().await;
        ws.send(Message::text(r#"{"message":"Could not parse input message, make sure it is a json and follows the schema outlined in protocol.","error":"invalid_input_message","code":1008}"#)).await.unwrap();
        let _ = ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: "invalid_input_message".into() })).await;
    })
    .await;
    let (_, _, err) = synth(&ElevenLabsTts::new(eleven(&mock.url())), "Hi.", None).await;
    let e = err.unwrap();
    assert!(
        !e.retryable && e.message.contains("invalid_input_message"),
        "{e}"
    );

    let mock = ws_mock(|mut ws, _| async move {
        let _ = ws.next().await;
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "Have not received a new text input within the timeout of 20 seconds."
                    .into(),
            }))
            .await;
    })
    .await;
    let (_, _, err) = synth(&ElevenLabsTts::new(eleven(&mock.url())), "Hi.", None).await;
    assert!(!err.unwrap().retryable);

    let mock = ws_mock(|mut ws, _| async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            if t.as_str() == r#"{"text":""}"# {
                let f = json!({"audio": b64(&[1, 0]), "isFinal": null});
                ws.send(Message::text(f.to_string())).await.unwrap();
                return; // dropped before isFinal
            }
        }
    })
    .await;
    let (audio, usage, err) = synth(&ElevenLabsTts::new(eleven(&mock.url())), "Hi.", None).await;
    assert_eq!(audio, [1]);
    assert!(usage.is_empty() && err.unwrap().retryable);

    for (status, retryable) in [(401, false), (429, true), (503, true)] {
        let addr = refusing_server(
            status,
            r#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#,
        )
        .await;
        let (_, _, err) = synth(
            &ElevenLabsTts::new(eleven(&format!("ws://{addr}"))),
            "Hi.",
            None,
        )
        .await;
        let e = err.unwrap();
        assert_eq!(e.retryable, retryable, "{status}: {e}");
        assert!(!e.to_string().contains(ELEVEN_KEY));
    }
    assert!(!logs().contains(ELEVEN_KEY));
}

// ---------------------------------------------------------------------------------------
// Fallback

fn fake() -> Arc<dyn TtsEngine> {
    Arc::new(FakeTts {
        first_byte: Duration::from_millis(5),
        ms_per_char: 10,
        log: None,
    })
}

#[tokio::test]
async fn a_slow_first_byte_switches_to_the_next_engine() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        // Accepts the request, never answers.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let cartesia: Arc<dyn TtsEngine> = Arc::new(CartesiaTts::new(cartesia(&mock.url())));
    let cfg = FallbackConfig {
        tts_first_byte: Duration::from_millis(300),
        ..FallbackConfig::default()
    };
    let chain = TtsChain::new(vec![cartesia, fake()], cfg);
    let (sink, mut switches) = mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    let (audio, usage, err) = record_switches(sink, synth(&chain, "Hello.", None)).await;
    assert!(err.is_none(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(audio.len(), 60 / 20 * 320, "the fake engine's 60 ms");
    assert_eq!(usage, [6]);
    let sw = switches.try_recv().unwrap();
    assert_eq!(
        (sw.kind, sw.from, sw.to),
        (EngineKind::Tts, "cartesia", "fake")
    );
    assert!(sw.reason.contains("no audio within 300 ms"), "{sw}");
}

#[tokio::test]
async fn a_failure_mid_sentence_resynthesizes_it_on_the_next_engine() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            if t.as_str() == r#"{"text":""}"# {
                let f = json!({"audio": b64(&[1, 0, 1, 0]), "isFinal": null});
                ws.send(Message::text(f.to_string())).await.unwrap();
                return;
            }
        }
    })
    .await;
    let eleven: Arc<dyn TtsEngine> = Arc::new(ElevenLabsTts::new(eleven(&mock.url())));
    let observed = Arc::new(Mutex::new(Vec::new()));
    let o = observed.clone();
    let chain = TtsChain::new(vec![eleven, fake()], FallbackConfig::default())
        .with_observer(Arc::new(move |s| o.lock().unwrap().push(s.clone())));
    let (audio, usage, err) = synth(&chain, "Hi there.", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(&audio[..2], &[1, 1], "what ElevenLabs sent first");
    assert_eq!(
        audio.len(),
        2 + 100 / 20 * 320,
        "then the whole sentence again"
    );
    assert_eq!(usage, [9]);
    assert_eq!(observed.lock().unwrap()[0].from, "elevenlabs");
}

#[tokio::test]
async fn the_breaker_skips_a_failing_engine() {
    capture_logs();
    let addr = refusing_server(503, r#"{"error":"overloaded"}"#).await;
    let cartesia: Arc<dyn TtsEngine> =
        Arc::new(CartesiaTts::new(cartesia(&format!("ws://{addr}"))));
    let cfg = FallbackConfig {
        failure_threshold: 2,
        cooldown: Duration::from_millis(1000),
        ..FallbackConfig::default()
    };
    let observed = Arc::new(Mutex::new(0usize));
    let o = observed.clone();
    let chain = TtsChain::new(vec![cartesia, fake()], cfg)
        .with_observer(Arc::new(move |_| *o.lock().unwrap() += 1));
    for _ in 0..2 {
        let (audio, _, err) = synth(&chain, "Hi.", None).await;
        assert!(err.is_none() && !audio.is_empty());
    }
    assert!(chain.breaker(0).unwrap().is_open());
    let (_, _, err) = synth(&chain, "Hi.", None).await;
    assert!(err.is_none());
    assert_eq!(
        *observed.lock().unwrap(),
        2,
        "the open engine was not tried first"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, err) = synth(&chain, "Hi.", None).await;
    assert!(err.is_none());
    assert_eq!(
        *observed.lock().unwrap(),
        3,
        "after the cool-down it gets one more try"
    );
    assert!(chain.breaker(0).unwrap().is_open());
}

#[tokio::test]
async fn the_last_engines_error_reaches_the_pipeline() {
    capture_logs();
    let a = refusing_server(500, "{}").await;
    let b = refusing_server(401, "{}").await;
    let one: Arc<dyn TtsEngine> = Arc::new(CartesiaTts::new(cartesia(&format!("ws://{a}"))));
    let two: Arc<dyn TtsEngine> = Arc::new(ElevenLabsTts::new(eleven(&format!("ws://{b}"))));
    let chain = TtsChain::new(vec![one, two], FallbackConfig::default());
    let (_, _, err) = synth(&chain, "Hi.", None).await;
    let e = err.unwrap();
    assert_eq!(e.engine, "elevenlabs");
    assert!(!e.retryable);
}

#[test]
fn keys_never_print() {
    let c = cartesia("ws://127.0.0.1:9");
    let e = eleven("ws://127.0.0.1:9");
    let shown = format!(
        "{c:?} {e:?} {:?} {:?}",
        CartesiaTts::new(c.clone()),
        ElevenLabsTts::new(e.clone())
    );
    assert!(
        !shown.contains(CARTESIA_KEY) && !shown.contains(ELEVEN_KEY),
        "{shown}"
    );
}
