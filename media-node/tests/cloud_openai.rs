//! OpenAI-compatible chat completions against a local server streaming `data:` chunks in
//! the documented shapes: text, usage with cached tokens, tool calls assembled from
//! fragments and answered through a local tool endpoint, errors, a broken-off stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cloud_support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use vaani_media::cloud::openai::{OpenAiConfig, OpenAiLlm};
use vaani_media::cloud::ApiKey;
use vaani_media::pipeline::engines::{LlmEngine, LlmInput, LlmUsage};

const KEY: &str = "sk-proj-test-91ac04";
const T: Duration = Duration::from_secs(5);

fn engine(mock: &LlmMock, key: Option<&str>) -> OpenAiLlm {
    let mut cfg = OpenAiConfig::new(key.and_then(ApiKey::new));
    cfg.base_url = format!("{}/v1/", mock.base);
    cfg.model = "gpt-4o-mini".into();
    cfg.max_tokens = 150;
    OpenAiLlm::new(cfg, agent_context(&mock.base)).unwrap()
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
    .to_string()
}

fn usage_chunk(prompt: u64, completion: u64, cached: u64) -> String {
    json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}})
    .to_string()
}

fn answer(parts: &[&str], prompt: u64, cached: u64) -> Vec<(Duration, String)> {
    let mut lines = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    for p in parts {
        lines.push(chunk(json!({"content": p}), None));
    }
    lines.push(chunk(json!({}), Some("stop")));
    lines.push(usage_chunk(prompt, 7, cached));
    lines.push("[DONE]".into());
    let refs: Vec<(&str, &str)> = lines.iter().map(|l| ("", l.as_str())).collect();
    sse(&refs)
}

#[tokio::test]
async fn streams_text_and_maps_usage() {
    capture_logs();
    let mock = llm_mock("/v1/chat/completions").await;
    mock.push(Reply::stream(answer(
        &["Hello", "! How can I help?"],
        1300,
        1024,
    )));
    let llm = engine(&mock, Some(KEY));
    let mut s = llm.session().unwrap();
    assert_eq!(
        texts(&drain(&mut s.respond(LlmInput::Start), T).await),
        "Hello, this is Acme. How can I help?"
    );
    let events = drain(&mut s.respond(LlmInput::Utterance("hi".into())), T).await;
    assert_eq!(texts(&events), "Hello! How can I help?");
    assert_eq!(
        usage(&events),
        LlmUsage {
            input_tokens: 276,
            output_tokens: 7,
            cache_read_tokens: 1024,
            cache_write_tokens: 0
        }
    );
    let r = mock.request(0);
    assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
    let b = r.body;
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    assert_eq!(b["max_tokens"], 150);
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "You are the Acme billing assistant. Be brief."},
            {"role": "assistant", "content": "Hello, this is Acme. How can I help?"},
            {"role": "user", "content": "hi"},
        ])
    );
    let tools = b["tools"].as_array().unwrap();
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "lookup_balance");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["account"])
    );
    assert!(!logs().contains(KEY));
}

#[tokio::test]
async fn tool_calls_are_assembled_run_and_answered() {
    capture_logs();
    let mock = llm_mock("/v1/chat/completions").await;
    let lines = [
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function", "function": {"name": "order_status", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ord"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "er\": 7}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(300, 20, 0),
        "[DONE]".into(),
    ];
    let refs: Vec<(&str, &str)> = lines.iter().map(|l| ("", l.as_str())).collect();
    mock.push(Reply::stream(sse(&refs)));
    mock.push(Reply::stream(answer(&["Order 7 ships tomorrow."], 350, 0)));
    let llm = engine(&mock, Some(KEY));
    let mut s = llm.session().unwrap();
    let events = drain(
        &mut s.respond(LlmInput::Utterance("where is order 7?".into())),
        T,
    )
    .await;
    assert_eq!(texts(&events), "Order 7 ships tomorrow.");
    assert_eq!(usage(&events).input_tokens, 650);
    assert_eq!(
        mock.tool_calls.lock().unwrap().clone(),
        vec![("order".to_string(), r#"{"order":"7"}"#.to_string())]
    );
    let msgs = mock.request(1).body["messages"].clone();
    assert_eq!(
        msgs[2],
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "type": "function", "function": {"name": "order_status", "arguments": "{\"order\":7}"}}]})
    );
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "content": "Order 7 ships tomorrow."})
    );
}

#[tokio::test]
async fn errors_classify() {
    capture_logs();
    for (status, retryable) in [
        (401, false),
        (404, false),
        (429, true),
        (500, true),
        (503, true),
    ] {
        let mock = llm_mock("/v1/chat/completions").await;
        mock.push(Reply::error(
            status,
            r#"{"error": {"message": "Incorrect API key provided: sk-proj-****04.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#,
        ));
        let llm = engine(&mock, Some(KEY));
        let mut s = llm.session().unwrap();
        let events = drain(&mut s.respond(LlmInput::Utterance("hi".into())), T).await;
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.retryable, retryable, "{status}: {e}");
        assert!(
            e.message
                .starts_with(&format!("HTTP {status}: Incorrect API key")),
            "{e}"
        );
    }
    // An error object in the stream, and a stream broken off.
    let mock = llm_mock("/v1/chat/completions").await;
    let mut lines = answer(&["Hel"], 5, 0);
    lines.truncate(2);
    lines.extend(sse(&[(
        "",
        r#"{"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}"#,
    )]));
    mock.push(Reply::stream(lines));
    let mut broken = answer(&["Hel", "lo"], 5, 0);
    broken.truncate(3);
    mock.push(Reply {
        end: End::Abort,
        ..Reply::stream(broken)
    });
    let llm = engine(&mock, None);
    let mut s = llm.session().unwrap();
    for expect in ["server_error", "response body broken off"] {
        let events = drain(&mut s.respond(LlmInput::Utterance("hi".into())), T).await;
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert!(e.retryable && e.message.contains(expect), "{e}");
    }
    assert!(
        mock.request(0).headers.get("authorization").is_none(),
        "no key, no header"
    );
}

#[test]
fn the_key_never_prints() {
    let mut cfg = OpenAiConfig::new(ApiKey::new(KEY));
    cfg.base_url = "http://127.0.0.1:9/v1".into();
    let e = OpenAiLlm::new(cfg.clone(), agent_context("http://127.0.0.1:9")).unwrap();
    let shown = format!("{cfg:?} {e:?}");
    assert!(
        !shown.contains(KEY) && shown.contains("ApiKey(***)"),
        "{shown}"
    );
}
