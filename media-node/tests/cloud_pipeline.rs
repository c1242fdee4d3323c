//! A whole call through the pipeline on cloud engines built from the environment
//! (`cloud::from_vars`) with the sample agent, each engine a local server speaking its
//! provider's protocol; then the same call with the LLM provider down, recovered by the
//! fallback chain without the caller noticing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cloud_support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use vaani_media::agent::AgentSpec;
use vaani_media::cloud::{self, Embedded, EngineSwitch, FallbackConfig};
use vaani_media::pipeline::call::{self, CallIds, CallReport, Input, PipelineConfig};
use vaani_media::pipeline::dialogue::EmbeddedLlm;
use vaani_media::pipeline::engines::Speaker;
use vaani_media::pipeline::fake::{FakeStt, FakeTts};
use vaani_media::pipeline::out::Outgoing;
use vaani_media::pipeline::vad::EnergyVad;

/// Deepgram: the caller's words once `Finalize` arrives.
async fn deepgram() -> WsMock {
    ws_mock(|mut ws, _| async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.contains("Finalize") {
                    let r = json!({"type": "Results", "is_final": true, "speech_final": true, "from_finalize": true,
                        "channel": {"alternatives": [{"transcript": "I have a question about my bill", "confidence": 0.97}]}});
                    ws.send(Message::text(r.to_string())).await.unwrap();
                }
                if t.contains("CloseStream") {
                    return;
                }
            }
        }
    })
    .await
}

/// Cartesia: 200 ms of a tone per sentence.
async fn cartesia() -> WsMock {
    ws_mock(|mut ws, _| async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let req: Value = serde_json::from_str(&t).unwrap();
            let pcm: Vec<i16> = (0..3200).map(|i| ((i as f32 * 0.2).sin() * 5000.0) as i16).collect();
            let data = base64::engine::general_purpose::STANDARD.encode(le_bytes(&pcm));
            let c = json!({"type": "chunk", "data": data, "done": false, "status_code": 206, "step_time": 5.0, "context_id": req["context_id"]});
            ws.send(Message::text(c.to_string())).await.unwrap();
            let d = json!({"type": "done", "done": true, "status_code": 200, "context_id": req["context_id"]});
            ws.send(Message::text(d.to_string())).await.unwrap();
        }
    })
    .await
}

fn claude_answer(text: &str) -> Reply {
    Reply::stream(sse(&[
        ("message_start", r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-3-5-haiku-latest","usage":{"input_tokens":1200,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024}}}"#),
        ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ("content_block_delta", &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text": text}}).to_string()),
        ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":14}}"#),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]))
}

struct Call {
    cfg: PipelineConfig,
    reports: mpsc::UnboundedReceiver<CallReport>,
    switches: Arc<Mutex<Vec<EngineSwitch>>>,
}

async fn setup(claude: &LlmMock, dg: &WsMock, car: &WsMock) -> Call {
    let spec = AgentSpec::parse(include_str!("../../agents/sample.toml")).unwrap();
    let agent = spec.resolve();
    let vars: HashMap<&str, String> = HashMap::from([
        ("DEEPGRAM_API_KEY", "dg-pipeline-key".to_string()),
        ("ANTHROPIC_API_KEY", "ant-pipeline-key".to_string()),
        ("CARTESIA_API_KEY", "car-pipeline-key".to_string()),
        ("VAANI_DEEPGRAM_URL", dg.url()),
        ("VAANI_ANTHROPIC_URL", claude.base.clone()),
        ("VAANI_CARTESIA_URL", car.url()),
    ]);
    let cloud = cloud::from_vars(&agent, |k| vars.get(k).cloned()).unwrap();
    let embedded = Embedded {
        stt: Some(Arc::new(FakeStt::new(
            Duration::from_millis(20),
            &["unused"],
        ))),
        llm: Some(Arc::new(EmbeddedLlm::new(spec.clone()))),
        tts: Some(Arc::new(FakeTts {
            first_byte: Duration::from_millis(5),
            ms_per_char: 10,
            log: None,
        })),
        flite: None,
    };
    let switches = Arc::new(Mutex::new(Vec::new()));
    let s = switches.clone();
    let engines = cloud
        .engines(
            &agent,
            &embedded,
            FallbackConfig::default(),
            Some(Arc::new(move |sw: &EngineSwitch| {
                s.lock().unwrap().push(sw.clone())
            })),
        )
        .unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    let cfg = PipelineConfig {
        agent: Arc::new(agent),
        engines,
        vad: Arc::new(|| Box::new(EnergyVad::new())),
        reports: Some(tx),
        runtime: tokio::runtime::Handle::current(),
    };
    Call {
        cfg,
        reports,
        switches,
    }
}

/// Drive a call: silence until the greeting has played, a second of speech, then silence
/// until the reply has played; returns the report.
async fn converse(call: &mut Call) -> CallReport {
    let link = call::start(
        &call.cfg,
        CallIds {
            call_id: Some("c-cloud".into()),
            tenant: None,
            transport_id: "sip-cloud".into(),
        },
    );
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    let mut audio_ticks = Vec::new();
    for tick in 0..400 {
        interval.tick().await;
        let out = link.out.take(Instant::now());
        let audible = matches!(out, Some(Outgoing::Audio(_)));
        audio_ticks.push(audible);
        let talking = (60..110).contains(&tick);
        let pcm: Vec<i16> = if talking {
            (0..320)
                .map(|i| ((i as f32 * 0.31).sin() * 6000.0) as i16)
                .collect()
        } else {
            vec![0; 320]
        };
        link.send(Input::Frame {
            pcm,
            agent_audible: audible,
        });
        // Done once the reply to the question has played and gone quiet.
        if tick > 150
            && audio_ticks[110..].iter().any(|a| *a)
            && audio_ticks[tick - 20..].iter().all(|a| !a)
        {
            break;
        }
    }
    assert!(audio_ticks[..60].iter().any(|a| *a), "the greeting played");
    drop(link);
    tokio::time::timeout(Duration::from_secs(5), call.reports.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_cloud_engines() {
    capture_logs();
    let claude = llm_mock("/v1/messages").await;
    claude.push(claude_answer("Sure, I can help with your bill."));
    let dg = deepgram().await;
    let car = cartesia().await;
    let mut call = setup(&claude, &dg, &car).await;
    let report = converse(&mut call).await;
    let lines: Vec<(Speaker, &str)> = report
        .transcript
        .iter()
        .map(|e| (e.speaker, e.text.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                Speaker::Agent,
                "Hello, this is Vaani at Acme Telecom. How can I help you today?"
            ),
            (Speaker::Caller, "I have a question about my bill"),
            (Speaker::Agent, "Sure, I can help with your bill."),
        ],
        "{report:#?}"
    );
    assert!(
        report.engine_errors.is_empty(),
        "{:?}",
        report.engine_errors
    );
    assert_eq!(report.usage.llm.input_tokens, 1200);
    assert_eq!(report.usage.llm.cache_read_tokens, 1024);
    assert_eq!(report.usage.llm.output_tokens, 14);
    assert!(report.usage.tts_characters > 60);
    assert!(
        report.usage.stt_audio_ms >= 900,
        "{}",
        report.usage.stt_audio_ms
    );
    assert!(report.turns[0].total_ms.is_some());
    assert!(call.switches.lock().unwrap().is_empty());
    // The model was asked with the sample agent's prompt, cached, and the conversation.
    let body = claude.request(0).body;
    assert!(body["system"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("You are Vaani"));
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(body["max_tokens"], 150);
    let logged = logs();
    for key in ["dg-pipeline-key", "ant-pipeline-key", "car-pipeline-key"] {
        assert!(!logged.contains(key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_its_llm_going_down() {
    capture_logs();
    let claude = llm_mock("/v1/messages").await;
    claude.push(Reply::error(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ));
    let dg = deepgram().await;
    let car = cartesia().await;
    let mut call = setup(&claude, &dg, &car).await;
    let report = converse(&mut call).await;
    let reply = &report.transcript[2];
    assert_eq!(reply.speaker, Speaker::Agent);
    assert!(
        reply.text.starts_with("Sure, I can help with your bill."),
        "{report:#?}"
    );
    assert!(
        report.engine_errors.is_empty(),
        "{:?}",
        report.engine_errors
    );
    let switches = call.switches.lock().unwrap();
    assert_eq!(switches.len(), 1);
    assert_eq!(
        switches[0].to_string(),
        "llm engine switched from anthropic to embedded: anthropic: HTTP 529: Overloaded"
    );
}
