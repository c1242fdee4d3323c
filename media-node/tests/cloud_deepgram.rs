//! Deepgram live STT against a local server speaking its WebSocket protocol: results in the
//! documented shapes, control messages, handshake refusals, close frames, a dropped socket,
//! and the fallback chain moving a call to the next engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cloud_support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use vaani_media::cloud::deepgram::{DeepgramConfig, DeepgramStt};
use vaani_media::cloud::{record_switches, ApiKey, EngineKind, FallbackConfig, SttChain};
use vaani_media::pipeline::engines::{SttEngine, SttEvent, SttInput, SttOptions};
use vaani_media::pipeline::fake::FakeStt;

const KEY: &str = "dg-test-key-5f2c9a";
const T: Duration = Duration::from_secs(5);

fn results(text: &str, is_final: bool, speech_final: bool, from_finalize: bool) -> String {
    json!({
        "type": "Results", "channel_index": [0, 1], "duration": 1.2, "start": 0.0,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.98, "words": []}]},
        "metadata": {"request_id": "a3f1", "model_info": {"name": "2-general-nova", "version": "2024-01-18.26916", "arch": "nova-3"}, "model_uuid": "c0d1"}
    })
    .to_string()
}

fn config(url: &str) -> DeepgramConfig {
    let mut c = DeepgramConfig::new(ApiKey::new(KEY).unwrap());
    c.base_url = url.into();
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn options() -> SttOptions {
    SttOptions {
        language: "en-IN".into(),
        model: "nova-3".into(),
        phrases: vec!["billing question".into()],
        interim_results: true,
    }
}

/// What the mock received on one connection.
#[derive(Default, Debug)]
struct Received {
    audio: Vec<u8>,
    texts: Vec<String>,
}

/// A Deepgram that transcribes: interim after the first audio, a final after the fifth
/// frame, and the `from_finalize` answer to `Finalize`; `Metadata` and a close on
/// `CloseStream`.
fn transcribing(
    rec: Arc<Mutex<Received>>,
) -> impl Fn(ServerWs, usize) -> futures::future::BoxFuture<'static, ()> {
    move |mut ws, _| {
        let rec = rec.clone();
        Box::pin(async move {
            let mut frames = 0;
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Binary(b) => {
                        rec.lock().unwrap().audio.extend_from_slice(&b);
                        frames += 1;
                        if frames == 1 {
                            ws.send(Message::text(results("I have", false, false, false)))
                                .await
                                .unwrap();
                        }
                        if frames == 5 {
                            ws.send(Message::text(results(
                                "I have a question",
                                true,
                                false,
                                false,
                            )))
                            .await
                            .unwrap();
                            ws.send(Message::text(results("about", false, false, false)))
                                .await
                                .unwrap();
                        }
                    }
                    Message::Text(t) => {
                        rec.lock().unwrap().texts.push(t.to_string());
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        match v["type"].as_str() {
                            Some("Finalize") => {
                                ws.send(Message::text(results("about my bill", true, true, false)))
                                    .await
                                    .unwrap();
                                ws.send(Message::text(results("please", true, false, true)))
                                    .await
                                    .unwrap();
                            }
                            Some("CloseStream") => {
                                ws.send(Message::text(r#"{"type":"Metadata","transaction_key":"deprecated","request_id":"8c8ebea9-dbec-45fa-a035-e4632cb05b5f","sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","created":"2024-08-29T22:37:55.202Z","duration":0.2,"channels":1}"#)).await.unwrap();
                                let _ = ws.close(None).await;
                                return;
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        })
    }
}

#[tokio::test]
async fn transcribes_with_interim_and_final_results() {
    capture_logs();
    let rec = Arc::new(Mutex::new(Received::default()));
    let mock = ws_mock(transcribing(rec.clone())).await;
    let stt = DeepgramStt::new(config(&mock.url()));
    let mut s = stt.open(&options()).unwrap();
    let mut sent = Vec::new();
    for i in 0..10 {
        let frame = ramp(320, i * 100);
        sent.extend(le_bytes(&frame));
        s.input.send(SttInput::Audio(frame)).await.unwrap();
    }
    let mut events = Vec::new();
    while events.len() < 3 {
        events.push(next(&mut s.events, T).await.unwrap().unwrap());
    }
    s.input.send(SttInput::EndOfSpeech).await.unwrap();
    while events.len() < 5 {
        events.push(next(&mut s.events, T).await.unwrap().unwrap());
    }
    assert_eq!(events[0], SttEvent::Interim("I have".into()));
    assert_eq!(
        events[1],
        SttEvent::Final {
            text: "I have a question".into(),
            confidence: 0.98
        }
    );
    assert_eq!(
        events[2],
        SttEvent::Interim("I have a question about".into())
    );
    assert_eq!(events[3], SttEvent::Usage { audio_ms: 200 });
    // The finals after the end of speech arrive as one, closed by `from_finalize`.
    assert_eq!(
        events[4],
        SttEvent::Final {
            text: "about my bill please".into(),
            confidence: 0.98
        }
    );
    drop(s.input);
    let rest = drain(&mut s.events, T).await;
    assert!(
        rest.iter()
            .all(|e| matches!(e, Ok(SttEvent::Usage { audio_ms: 200 }))),
        "{rest:?}"
    );

    let h = mock.handshake(0);
    assert_eq!(h.path(), "/v1/listen");
    assert_eq!(
        h.header("authorization"),
        Some(format!("Token {KEY}").as_str())
    );
    for (k, v) in [
        ("model", "nova-3"),
        ("encoding", "linear16"),
        ("sample_rate", "16000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "300"),
        ("utterance_end_ms", "1000"),
        ("punctuate", "true"),
        ("smart_format", "true"),
        ("language", "en-IN"),
        ("keyterm", "billing question"),
    ] {
        assert_eq!(h.query(k), vec![v.to_string()], "{k}");
    }
    let rec = rec.lock().unwrap();
    assert_eq!(rec.audio, sent, "audio goes as raw 16-bit little-endian");
    let types: Vec<String> = rec
        .texts
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["Finalize", "CloseStream"]);
    assert!(!logs().contains(KEY));
}

#[tokio::test]
async fn keeps_the_socket_alive_while_nobody_talks() {
    capture_logs();
    let rec = Arc::new(Mutex::new(Received::default()));
    let mock = ws_mock(transcribing(rec.clone())).await;
    let mut cfg = config(&mock.url());
    cfg.keepalive = Duration::from_millis(100);
    let stt = DeepgramStt::new(cfg);
    let s = stt.open(&options()).unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let keepalives = rec
        .lock()
        .unwrap()
        .texts
        .iter()
        .filter(|t| t.as_str() == r#"{"type":"KeepAlive"}"#)
        .count();
    assert!(keepalives >= 2, "{keepalives} KeepAlive messages");
    drop(s);
}

#[tokio::test]
async fn refused_handshakes_classify_by_status() {
    capture_logs();
    for (status, retryable) in [
        (401, false),
        (403, false),
        (400, false),
        (429, true),
        (503, true),
    ] {
        let addr = refusing_server(
            status,
            r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#,
        )
        .await;
        let stt = DeepgramStt::new(config(&format!("ws://{addr}")));
        let mut s = stt.open(&options()).unwrap();
        let e = next(&mut s.events, T).await.unwrap().unwrap_err();
        assert_eq!(e.retryable, retryable, "{status}: {e}");
        assert!(e.message.contains(&status.to_string()), "{e}");
        assert!(!e.to_string().contains(KEY));
    }
    let stt = DeepgramStt::new(config(&format!("ws://{}", dead_port().await)));
    let mut s = stt.open(&options()).unwrap();
    let e = next(&mut s.events, T).await.unwrap().unwrap_err();
    assert!(e.retryable, "{e}");
    let logged = logs();
    assert!(
        logged.contains("deepgram: connect failed"),
        "the capture works"
    );
    assert!(!logged.contains(KEY));
}

#[tokio::test]
async fn a_dropped_socket_is_a_retryable_failure() {
    capture_logs();
    let mock = ws_mock(|ws, _| async move {
        let mut ws = ws;
        let _ = ws.next().await;
        // Gone without a close frame.
        drop(ws);
    })
    .await;
    let stt = DeepgramStt::new(config(&mock.url()));
    let mut s = stt.open(&options()).unwrap();
    s.input.send(SttInput::Audio(ramp(320, 0))).await.unwrap();
    let events = drain(&mut s.events, T).await;
    let e = events.last().unwrap().as_ref().unwrap_err();
    assert!(e.retryable, "{e}");
}

#[tokio::test]
async fn close_frames_say_whether_to_retry() {
    capture_logs();
    for (code, reason, retryable) in [
        (CloseCode::Error, "NET-0000: internal server error", true),
        (
            CloseCode::Policy,
            "DATA-0000: The payload cannot be decoded as audio.",
            false,
        ),
    ] {
        let mock = ws_mock(move |mut ws, _| async move {
            let _ = ws.next().await;
            let _ = ws
                .close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
                .await;
        })
        .await;
        let stt = DeepgramStt::new(config(&mock.url()));
        let mut s = stt.open(&options()).unwrap();
        s.input.send(SttInput::Audio(ramp(320, 0))).await.unwrap();
        let events = drain(&mut s.events, T).await;
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.retryable, retryable, "{e}");
        assert!(e.message.contains(&reason[..9]), "{e}");
    }
}

/// A Deepgram that takes audio but never answers `Finalize`.
async fn silent_mock() -> WsMock {
    ws_mock(|mut ws, _| async move { while let Some(Ok(_)) = ws.next().await {} }).await
}

#[tokio::test]
async fn chain_moves_to_the_next_engine_when_no_final_comes() {
    capture_logs();
    let mock = silent_mock().await;
    let dg: Arc<dyn SttEngine> = Arc::new(DeepgramStt::new(config(&mock.url())));
    let fake: Arc<dyn SttEngine> = Arc::new(FakeStt::new(Duration::from_millis(10), &["my bill"]));
    let cfg = FallbackConfig {
        stt_final_timeout: Duration::from_millis(300),
        ..FallbackConfig::default()
    };
    let chain = SttChain::new(vec![dg, fake], cfg);
    let (sink, mut switches) = mpsc::unbounded_channel();
    let mut s = record_switches(sink, async { chain.open(&options()).unwrap() }).await;
    for i in 0..5 {
        s.input.send(SttInput::Audio(ramp(320, i))).await.unwrap();
    }
    s.input.send(SttInput::EndOfSpeech).await.unwrap();
    let started = std::time::Instant::now();
    let mut finals = Vec::new();
    let mut usage = Vec::new();
    while finals.is_empty() {
        match next(&mut s.events, T).await.unwrap().unwrap() {
            SttEvent::Final { text, .. } => finals.push(text),
            SttEvent::Usage { audio_ms } => usage.push(audio_ms),
            SttEvent::Interim(_) => {}
        }
    }
    assert_eq!(finals, ["my bill"]);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let sw = switches.try_recv().unwrap();
    assert_eq!(
        (sw.kind, sw.from, sw.to),
        (EngineKind::Stt, "deepgram", "fake")
    );
    assert!(sw.reason.contains("no final"), "{sw}");
    // The replayed utterance is billed by the new engine, on top of what Deepgram had.
    assert_eq!(usage, [100, 200]);
}

#[tokio::test]
async fn chain_survives_a_dropped_socket_mid_call() {
    capture_logs();
    let mock = ws_mock(|mut ws, _| async move {
        let mut n = 0;
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Binary(_)) {
                n += 1;
                if n == 3 {
                    return; // dropped mid-utterance
                }
            }
        }
    })
    .await;
    let dg: Arc<dyn SttEngine> = Arc::new(DeepgramStt::new(config(&mock.url())));
    let fake: Arc<dyn SttEngine> =
        Arc::new(FakeStt::new(Duration::from_millis(5), &["hello again"]));
    let observed = Arc::new(Mutex::new(Vec::new()));
    let o = observed.clone();
    let chain = SttChain::new(vec![dg, fake], FallbackConfig::default())
        .with_observer(Arc::new(move |s| o.lock().unwrap().push(s.to_string())));
    let mut s = chain.open(&options()).unwrap();
    for i in 0..6 {
        s.input.send(SttInput::Audio(ramp(320, i))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.input.send(SttInput::EndOfSpeech).await.unwrap();
    let text = loop {
        if let SttEvent::Final { text, .. } = next(&mut s.events, T).await.unwrap().unwrap() {
            break text;
        }
    };
    assert_eq!(text, "hello again");
    let observed = observed.lock().unwrap();
    assert_eq!(observed.len(), 1);
    assert!(
        observed[0].starts_with("stt engine switched from deepgram to fake"),
        "{observed:?}"
    );
    assert!(chain.breaker(0).is_some_and(|b| !b.is_open()));
    assert!(!logs().contains(KEY));
}

#[test]
fn the_key_never_prints() {
    let cfg = config("ws://127.0.0.1:9");
    let shown = format!("{cfg:?} {:?}", DeepgramStt::new(cfg.clone()));
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("ApiKey(***)"));
}
