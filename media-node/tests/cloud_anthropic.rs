//! Anthropic Messages API against a local server streaming the documented SSE events:
//! text, usage with cache counts, prompt-caching markers, tool use round trips through a
//! local tool endpoint, built-in call actions, HTTP and in-stream errors, a broken-off
//! stream, barge-in truncation, and a fallback to another LLM with the history carried over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cloud_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;
use vaani_media::cloud::anthropic::{AnthropicConfig, AnthropicLlm, API_VERSION};
use vaani_media::cloud::openai::{OpenAiConfig, OpenAiLlm};
use vaani_media::cloud::{llm, record_switches, ApiKey, EngineKind, FallbackConfig, LlmChain};
use vaani_media::pipeline::dialogue::NextStep;
use vaani_media::pipeline::engines::{LlmEngine, LlmEvent, LlmInput, LlmUsage};

const KEY: &str = "sk-ant-test-7d1e0b";
const T: Duration = Duration::from_secs(5);

fn engine(mock: &LlmMock) -> AnthropicLlm {
    let mut cfg = AnthropicConfig::new(ApiKey::new(KEY).unwrap());
    cfg.base_url = mock.base.clone();
    cfg.model = "claude-3-5-haiku-latest".into();
    cfg.max_tokens = 150;
    cfg.temperature = 0.5;
    AnthropicLlm::new(cfg, agent_context(&mock.base)).unwrap()
}

fn start(usage: Value) -> String {
    json!({"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message",
        "role": "assistant", "content": [], "model": "claude-3-5-haiku-latest", "stop_reason": null,
        "stop_sequence": null, "usage": usage}})
    .to_string()
}

/// The events of a streamed text answer, shaped like the docs' example.
fn text_answer(parts: &[&str], usage: Value, output_tokens: u64) -> Vec<(Duration, String)> {
    let mut frames: Vec<(String, String)> = vec![
        ("message_start".into(), start(usage)),
        (
            "content_block_start".into(),
            r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#.into(),
        ),
        ("ping".into(), r#"{"type": "ping"}"#.into()),
    ];
    for p in parts {
        frames.push((
            "content_block_delta".into(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}).to_string(),
        ));
    }
    frames.push((
        "content_block_stop".into(),
        r#"{"type": "content_block_stop", "index": 0}"#.into(),
    ));
    frames.push((
        "message_delta".into(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}).to_string(),
    ));
    frames.push(("message_stop".into(), r#"{"type": "message_stop"}"#.into()));
    let refs: Vec<(&str, &str)> = frames
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    sse(&refs)
}

/// A response that says `text` and then calls `name` with `input` (sent in two fragments).
fn tool_answer(text: &str, id: &str, name: &str, input: &str) -> Vec<(Duration, String)> {
    let (a, b) = input.split_at(input.len() / 2);
    let frames = vec![
        ("message_start".to_string(), start(json!({"input_tokens": 472, "output_tokens": 2}))),
        ("content_block_start".into(), r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into()),
        ("content_block_delta".into(), json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text": text}}).to_string()),
        ("content_block_stop".into(), r#"{"type":"content_block_stop","index":0}"#.into()),
        ("content_block_start".into(), json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id": id,"name": name,"input":{}}}).to_string()),
        ("content_block_delta".into(), r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#.into()),
        ("content_block_delta".into(), json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json": a}}).to_string()),
        ("content_block_delta".into(), json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json": b}}).to_string()),
        ("content_block_stop".into(), r#"{"type":"content_block_stop","index":1}"#.into()),
        ("message_delta".into(), r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#.into()),
        ("message_stop".into(), r#"{"type":"message_stop"}"#.into()),
    ];
    let refs: Vec<(&str, &str)> = frames
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    sse(&refs)
}

async fn respond(
    s: &mut Box<dyn vaani_media::pipeline::engines::LlmSession>,
    input: LlmInput,
) -> Vec<Result<LlmEvent, vaani_media::pipeline::engines::EngineError>> {
    let mut rx = s.respond(input);
    drain(&mut rx, T).await
}

#[tokio::test]
async fn greets_then_streams_answers_with_usage_and_caching() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    mock.push(Reply::stream(text_answer(
        &["Sure, ", "I can help with your bill."],
        json!({"input_tokens": 25, "output_tokens": 1, "cache_creation_input_tokens": 1100, "cache_read_input_tokens": 0}),
        15,
    )));
    mock.push(Reply::stream(text_answer(
        &["It is due on the 5th."],
        json!({"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1100}),
        9,
    )));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();

    let greeting = respond(&mut s, LlmInput::Start).await;
    assert_eq!(texts(&greeting), "Hello, this is Acme. How can I help?");
    assert_eq!(mock.count(), 0, "the greeting is said as written");

    let first = respond(
        &mut s,
        LlmInput::Utterance("I have a question about my bill".into()),
    )
    .await;
    assert_eq!(texts(&first), "Sure, I can help with your bill.");
    assert_eq!(
        usage(&first),
        LlmUsage {
            input_tokens: 25,
            output_tokens: 15,
            cache_read_tokens: 0,
            cache_write_tokens: 1100
        }
    );
    let second = respond(&mut s, LlmInput::Utterance("When is it due?".into())).await;
    assert_eq!(texts(&second), "It is due on the 5th.");
    assert_eq!(usage(&second).cache_read_tokens, 1100);

    let r = mock.request(1);
    assert_eq!(r.headers["x-api-key"], KEY);
    assert_eq!(r.headers["anthropic-version"], API_VERSION);
    assert_eq!(r.headers["content-type"], "application/json");
    let b = &r.body;
    assert_eq!(b["model"], "claude-3-5-haiku-latest");
    assert_eq!(b["max_tokens"], 150);
    assert_eq!(b["stream"], true);
    assert_eq!(b["system"][0]["type"], "text");
    assert_eq!(
        b["system"][0]["text"],
        "You are the Acme billing assistant. Be brief."
    );
    assert_eq!(
        b["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    let tools = b["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "lookup_balance",
            "order_status",
            "slow_tool",
            "end_call",
            "transfer_call"
        ]
    );
    assert_eq!(tools[0]["input_schema"]["required"], json!(["account"]));
    assert!(tools[..4].iter().all(|t| t.get("cache_control").is_none()));
    assert_eq!(tools[4]["cache_control"], json!({"type": "ephemeral"}));
    // The whole conversation so far, alternating, the agent's greeting included.
    let msgs = b["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(msgs[0]["content"][0]["text"], llm::CALL_ANSWERED);
    assert_eq!(
        msgs[1]["content"][0]["text"],
        "Hello, this is Acme. How can I help?"
    );
    assert_eq!(
        msgs[3]["content"][0]["text"],
        "Sure, I can help with your bill."
    );
    assert_eq!(msgs[4]["content"][0]["text"], "When is it due?");
    assert_eq!(
        msgs[4]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(msgs[2]["content"][0].get("cache_control").is_none());
    assert!(!logs().contains(KEY));
}

#[tokio::test]
async fn tool_calls_go_to_the_tool_and_back() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    mock.push(Reply::stream(tool_answer(
        "Let me check.",
        "toulu_01A09q90qw90lq917835lq9",
        "lookup_balance",
        r#"{"account": "AC-42"}"#,
    )));
    mock.push(Reply::stream(text_answer(
        &["Your balance is 500 rupees."],
        json!({"input_tokens": 520, "output_tokens": 1}),
        12,
    )));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();
    let events = respond(
        &mut s,
        LlmInput::Utterance("What is my balance? Account AC-42.".into()),
    )
    .await;
    assert_eq!(texts(&events), "Let me check.Your balance is 500 rupees.");
    assert_eq!(usage(&events).input_tokens, 472 + 520);
    assert_eq!(usage(&events).output_tokens, 89 + 12);
    assert_eq!(
        mock.tool_calls.lock().unwrap().clone(),
        vec![("balance".to_string(), r#"{"account":"AC-42"}"#.to_string())]
    );
    let msgs = mock.request(1).body["messages"].as_array().unwrap().clone();
    let n = msgs.len();
    assert_eq!(msgs[n - 2]["role"], "assistant");
    assert_eq!(
        msgs[n - 2]["content"][0],
        json!({"type": "text", "text": "Let me check."})
    );
    assert_eq!(
        msgs[n - 2]["content"][1],
        json!({"type": "tool_use", "id": "toulu_01A09q90qw90lq917835lq9", "name": "lookup_balance", "input": {"account": "AC-42"}})
    );
    assert_eq!(msgs[n - 1]["role"], "user");
    let result = &msgs[n - 1]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "toulu_01A09q90qw90lq917835lq9");
    assert_eq!(result["content"], r#"{"balance": 500, "currency": "INR"}"#);
    assert!(result.get("is_error").is_none());
}

#[tokio::test]
async fn a_tool_that_times_out_is_reported_to_the_model() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    mock.push(Reply::stream(tool_answer(
        "One moment.",
        "toolu_slow",
        "slow_tool",
        "{}",
    )));
    mock.push(Reply::stream(text_answer(
        &["Sorry, the system is slow today."],
        json!({"input_tokens": 9}),
        8,
    )));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();
    let started = std::time::Instant::now();
    let events = respond(&mut s, LlmInput::Utterance("check".into())).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the tool's 200 ms timeout holds"
    );
    assert_eq!(
        texts(&events),
        "One moment.Sorry, the system is slow today."
    );
    let msgs = mock.request(1).body["messages"].as_array().unwrap().clone();
    let result = &msgs.last().unwrap()["content"][0];
    assert_eq!(result["is_error"], true);
    assert!(
        result["content"].as_str().unwrap().contains("200 ms"),
        "{result}"
    );
}

#[tokio::test]
async fn built_in_actions_end_or_transfer_the_call() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    mock.push(Reply::stream(tool_answer(
        "Goodbye!",
        "toolu_end",
        "end_call",
        "{}",
    )));
    mock.push(Reply::stream(tool_answer(
        "Connecting you now.",
        "toolu_tr",
        "transfer_call",
        r#"{"target": "sip:billing@example.com"}"#,
    )));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();
    let events = respond(&mut s, LlmInput::Utterance("bye".into())).await;
    assert_eq!(texts(&events), "Goodbye!");
    assert!(
        matches!(events.last(), Some(Ok(LlmEvent::Next(NextStep::Hangup)))),
        "{events:?}"
    );
    let events = respond(&mut s, LlmInput::Utterance("a person please".into())).await;
    assert!(
        matches!(events.last(), Some(Ok(LlmEvent::Next(NextStep::Transfer(t)))) if t == "sip:billing@example.com"),
        "{events:?}"
    );
    assert_eq!(mock.count(), 2, "no model round after an action");
}

#[tokio::test]
async fn http_errors_classify() {
    capture_logs();
    for (status, kind, retryable) in [
        (401, "authentication_error", false),
        (400, "invalid_request_error", false),
        (429, "rate_limit_error", true),
        (500, "api_error", true),
        (529, "overloaded_error", true),
    ] {
        let mock = llm_mock("/v1/messages").await;
        mock.push(Reply::error(
            status,
            &json!({"type": "error", "error": {"type": kind, "message": format!("{kind} happened")}}).to_string(),
        ));
        let llm = engine(&mock);
        let mut s = llm.session().unwrap();
        let events = respond(&mut s, LlmInput::Utterance("hi".into())).await;
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.retryable, retryable, "{status}: {e}");
        assert_eq!(e.message, format!("HTTP {status}: {kind} happened"));
        assert!(!e.to_string().contains(KEY));
    }
}

#[tokio::test]
async fn in_stream_errors_and_broken_streams_are_retryable() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    let mut frames = text_answer(&["Hel"], json!({"input_tokens": 3}), 1);
    frames.truncate(4);
    frames.extend(sse(&[(
        "error",
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
    )]));
    mock.push(Reply::stream(frames));
    let mut broken = text_answer(&["Hel", "lo"], json!({"input_tokens": 3}), 1);
    broken.truncate(5);
    mock.push(Reply {
        end: End::Abort,
        ..Reply::stream(broken)
    });
    let mut unfinished = text_answer(&["Hi"], json!({"input_tokens": 3}), 1);
    unfinished.truncate(4);
    mock.push(Reply::stream(unfinished));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();
    for expect in [
        "overloaded_error: Overloaded",
        "response body broken off",
        "stream ended before message_stop",
    ] {
        let events = respond(&mut s, LlmInput::Utterance("hi".into())).await;
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(e.message.contains(expect), "{e}");
    }
}

#[tokio::test]
async fn barge_in_cuts_the_reply_to_what_was_heard() {
    capture_logs();
    let mock = llm_mock("/v1/messages").await;
    mock.push(Reply::stream(text_answer(
        &["Your bill is 500 rupees, ", "due on the fifth of June."],
        json!({"input_tokens": 5}),
        12,
    )));
    mock.push(Reply::stream(text_answer(
        &["Okay."],
        json!({"input_tokens": 5}),
        2,
    )));
    let llm = engine(&mock);
    let mut s = llm.session().unwrap();
    respond(&mut s, LlmInput::Utterance("my bill?".into())).await;
    s.truncate_last("Your bill is 500");
    respond(&mut s, LlmInput::Utterance("wait".into())).await;
    let msgs = mock.request(1).body["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][0]["text"], "Your bill is 500");
    assert_eq!(msgs[2]["content"][0]["text"], "wait");
}

#[tokio::test]
async fn a_slow_first_byte_falls_back_with_the_history() {
    capture_logs();
    let claude = llm_mock("/v1/messages").await;
    let gpt = llm_mock("/v1/chat/completions").await;
    claude.push(Reply::stream(text_answer(
        &["Sure, your account number?"],
        json!({"input_tokens": 5}),
        6,
    )));
    claude.push(Reply {
        delay: Duration::from_secs(3),
        ..Reply::stream(text_answer(&["too late"], json!({"input_tokens": 5}), 2))
    });
    gpt.push(Reply::stream(sse(&[
        ("", r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#),
        ("", r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Thanks, account 42 found."},"finish_reason":null}]}"#),
        ("", r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
        ("", "[DONE]"),
    ])));
    let mut ocfg = OpenAiConfig::new(ApiKey::new("sk-openai-fallback"));
    ocfg.base_url = format!("{}/v1", gpt.base);
    let openai: Arc<dyn LlmEngine> =
        Arc::new(OpenAiLlm::new(ocfg, agent_context(&gpt.base)).unwrap());
    let anthropic: Arc<dyn LlmEngine> = Arc::new(engine(&claude));
    let cfg = FallbackConfig {
        llm_first_byte: Duration::from_millis(800),
        ..FallbackConfig::default()
    };
    let chain = LlmChain::new(vec![anthropic, openai], cfg);
    let (sink, mut switches) = mpsc::unbounded_channel();
    let mut s = chain.session().unwrap();
    let (first, second) = record_switches(sink, async {
        let a = respond(&mut s, LlmInput::Utterance("my bill".into())).await;
        let b = respond(&mut s, LlmInput::Utterance("account 42".into())).await;
        (a, b)
    })
    .await;
    assert_eq!(texts(&first), "Sure, your account number?");
    assert_eq!(texts(&second), "Thanks, account 42 found.");
    let sw = switches.try_recv().unwrap();
    assert_eq!(
        (sw.kind, sw.from, sw.to),
        (EngineKind::Llm, "anthropic", "openai")
    );
    assert!(sw.reason.contains("no response within 800 ms"), "{sw}");
    // The new engine heard the conversation so far.
    let msgs = gpt.request(0).body["messages"].clone();
    assert_eq!(
        msgs,
        json!([
            {"role": "system", "content": "You are the Acme billing assistant. Be brief."},
            {"role": "user", "content": "my bill"},
            {"role": "assistant", "content": "Sure, your account number?"},
            {"role": "user", "content": "account 42"},
        ])
    );
    assert!(!logs().contains(KEY) && !logs().contains("sk-openai-fallback"));
}

#[tokio::test]
async fn a_server_error_falls_back_and_the_breaker_opens() {
    capture_logs();
    let claude = llm_mock("/v1/messages").await;
    for _ in 0..2 {
        claude.push(Reply::error(
            503,
            r#"{"type":"error","error":{"type":"api_error","message":"down"}}"#,
        ));
    }
    let gpt = llm_mock("/v1/chat/completions").await;
    for i in 0..3 {
        gpt.push(Reply::stream(sse(&[
            ("", &json!({"choices":[{"index":0,"delta":{"content": format!("answer {i}")},"finish_reason":"stop"}]}).to_string()),
            ("", "[DONE]"),
        ])));
    }
    let mut ocfg = OpenAiConfig::new(None);
    ocfg.base_url = format!("{}/v1", gpt.base);
    let openai: Arc<dyn LlmEngine> =
        Arc::new(OpenAiLlm::new(ocfg, agent_context(&gpt.base)).unwrap());
    let anthropic: Arc<dyn LlmEngine> = Arc::new(engine(&claude));
    let cfg = FallbackConfig {
        failure_threshold: 2,
        cooldown: Duration::from_secs(60),
        ..FallbackConfig::default()
    };
    let chain = LlmChain::new(vec![anthropic, openai], cfg);
    let mut s = chain.session().unwrap();
    for i in 0..3 {
        let events = respond(&mut s, LlmInput::Utterance(format!("q{i}"))).await;
        assert_eq!(texts(&events), format!("answer {i}"));
    }
    assert_eq!(claude.count(), 2, "after two failures Anthropic is skipped");
    assert!(chain.breaker(0).unwrap().is_open());
    assert!(gpt.request(0).headers.get("authorization").is_none());
}
