//! Anthropic Messages API, streamed, with tool use and prompt caching.
//!
//! Wire protocol (https://docs.anthropic.com/en/api/messages-streaming,
//! https://docs.anthropic.com/en/docs/build-with-claude/tool-use,
//! https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching):
//!
//! - `POST {base}/v1/messages` with `x-api-key`, `anthropic-version: 2023-06-01`,
//!   `content-type: application/json`; body `{model, max_tokens, temperature, stream: true,
//!   system: [{type: "text", text, cache_control}], tools: [{name, description,
//!   input_schema}], messages}`.
//! - Prompt caching: `cache_control: {"type": "ephemeral"}` on the system block, on the
//!   last tool (the cache prefix runs tools → system → messages) and on the last block of
//!   the last message, so a long call re-reads its history from the cache each turn.
//! - The answer is server-sent events: `message_start` (usage: `input_tokens`,
//!   `cache_creation_input_tokens`, `cache_read_input_tokens`), `content_block_start`
//!   (`text` or `tool_use` with `id`, `name`), `content_block_delta` (`text_delta.text` or
//!   `input_json_delta.partial_json`), `content_block_stop`, `message_delta` (`stop_reason`,
//!   cumulative `usage.output_tokens`), `message_stop`, any number of `ping`, and `error`
//!   (`{"type": "error", "error": {"type": "overloaded_error", "message": …}}`).
//! - Tool use: the assistant turn's `tool_use` blocks are answered by a user turn of
//!   `tool_result` blocks (`tool_use_id`, `content`, `is_error`), and the model continues.
//! - HTTP errors carry `{"type": "error", "error": {"type", "message"}}`; 429, 5xx and 529
//!   (overloaded) are retryable, other 4xx are not.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::llm::{self, AgentContext, Item, Provider, ToolCall, ToolDef, Turn, UsageMeter};
use super::net::{self, ApiKey};
use super::sse::SseDecoder;
use crate::pipeline::engines::{EngineError, LlmEngine, LlmSession, LlmUsage};

const ENGINE: &str = "anthropic";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
pub const DEFAULT_MODEL: &str = "claude-3-5-haiku-latest";

/// Settings of the Anthropic engine.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    pub api_key: ApiKey,
    /// `https://api.anthropic.com`, or a proxy / test server.
    pub base_url: String,
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub prompt_caching: bool,
    /// Connect timeout; the first-byte timeout is the fallback chain's.
    pub connect_timeout: Duration,
    /// Longest a whole streamed response may take.
    pub request_timeout: Duration,
}

impl AnthropicConfig {
    pub fn new(api_key: ApiKey) -> Self {
        AnthropicConfig {
            api_key,
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            max_tokens: 300,
            temperature: 0.6,
            prompt_caching: true,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The Anthropic dialogue engine: one session per call.
pub struct AnthropicLlm {
    provider: Arc<AnthropicProvider>,
    ctx: Arc<AgentContext>,
    tools_http: reqwest::Client,
}

impl std::fmt::Debug for AnthropicLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicLlm")
            .field("config", &self.provider.cfg)
            .finish_non_exhaustive()
    }
}

impl AnthropicLlm {
    pub fn new(cfg: AnthropicConfig, ctx: AgentContext) -> Result<Self, EngineError> {
        let (http, tools_http) =
            super::llm::http_clients(ENGINE, cfg.connect_timeout, cfg.request_timeout)?;
        Ok(AnthropicLlm {
            provider: Arc::new(AnthropicProvider {
                cfg,
                http,
                system: ctx.system_prompt.clone(),
            }),
            ctx: Arc::new(ctx),
            tools_http,
        })
    }

    pub fn config(&self) -> &AnthropicConfig {
        &self.provider.cfg
    }
}

impl LlmEngine for AnthropicLlm {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn session(&self) -> Result<Box<dyn LlmSession>, EngineError> {
        Ok(Box::new(llm::Session::new(
            self.provider.clone(),
            self.ctx.clone(),
            self.tools_http.clone(),
        )))
    }
}

struct AnthropicProvider {
    cfg: AnthropicConfig,
    http: reqwest::Client,
    system: String,
}

impl AnthropicProvider {
    fn body(&self, items: &[Item], tools: &[ToolDef]) -> Value {
        let cache = self.cfg.prompt_caching;
        let mut body = json!({
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "stream": true,
            "messages": messages(items, cache),
        });
        if !self.system.trim().is_empty() {
            let mut block = json!({"type": "text", "text": self.system});
            if cache {
                block["cache_control"] = json!({"type": "ephemeral"});
            }
            body["system"] = json!([block]);
        }
        if !tools.is_empty() {
            let mut list: Vec<Value> = tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
                .collect();
            if cache {
                if let Some(last) = list.last_mut() {
                    last["cache_control"] = json!({"type": "ephemeral"});
                }
            }
            body["tools"] = Value::Array(list);
        }
        body
    }
}

/// The conversation as Messages API turns: roles alternate (neighbours of one role are
/// merged), the first turn is the user's, tool results follow their calls.
pub fn messages(items: &[Item], cache_last: bool) -> Vec<Value> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => out.push((role.to_string(), blocks)),
        }
    };
    for item in items {
        match item {
            Item::User(t) => push("user", vec![json!({"type": "text", "text": t})]),
            Item::Assistant { text, calls } => {
                let mut blocks = Vec::new();
                if !text.trim().is_empty() {
                    blocks.push(json!({"type": "text", "text": text.trim_end()}));
                }
                for c in calls {
                    let input = if c.input.is_object() { c.input.clone() } else { json!({}) };
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                push("assistant", blocks);
            }
            Item::Results(results) => push(
                "user",
                results
                    .iter()
                    .map(|r| {
                        let mut b = json!({"type": "tool_result", "tool_use_id": r.id, "content": r.content});
                        if r.is_error {
                            b["is_error"] = json!(true);
                        }
                        b
                    })
                    .collect(),
            ),
        }
    }
    if out.first().is_some_and(|(r, _)| r == "assistant") {
        out.insert(
            0,
            (
                "user".into(),
                vec![json!({"type": "text", "text": llm::CALL_ANSWERED})],
            ),
        );
    }
    let mut msgs: Vec<Value> = out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    if cache_last {
        if let Some(block) = msgs
            .last_mut()
            .and_then(|m| m.get_mut("content"))
            .and_then(Value::as_array_mut)
            .and_then(|c| c.last_mut())
        {
            block["cache_control"] = json!({"type": "ephemeral"});
        }
    }
    msgs
}

impl Provider for AnthropicProvider {
    async fn round(
        &self,
        items: &[Item],
        tools: &[ToolDef],
        turn: &mut Turn,
    ) -> Result<Vec<ToolCall>, EngineError> {
        let key = &self.cfg.api_key;
        let url = format!("{}/v1/messages", net::trim_base(&self.cfg.base_url));
        let body = self.body(items, tools);
        let mut key_header = reqwest::header::HeaderValue::from_str(key.expose())
            .map_err(|_| EngineError::fatal(ENGINE, "the API key is not a valid header value"))?;
        key_header.set_sensitive(true);
        let response = self
            .http
            .post(url)
            .header("x-api-key", key_header)
            .header("anthropic-version", API_VERSION)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
            .await
            .map_err(|e| net::http_error(ENGINE, e, Some(key)))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            return Err(net::status_error(ENGINE, status, &body, Some(key)));
        }
        let mut response = response;
        let mut decoder = SseDecoder::default();
        let mut state = StreamState::default();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| net::http_error(ENGINE, e, Some(key)))?;
            let Some(chunk) = chunk else {
                return Err(EngineError::retryable(
                    ENGINE,
                    "stream ended before message_stop",
                ));
            };
            let events = decoder
                .push(&chunk)
                .map_err(|e| EngineError::retryable(ENGINE, e.to_string()))?;
            for ev in events {
                let Some(event) = parse_event(&ev.data) else {
                    tracing::debug!(event = %ev.event, "anthropic: unreadable event skipped");
                    continue;
                };
                for action in state.on_event(event)? {
                    match action {
                        Action::Text(t) => {
                            if !turn.text(&t).await {
                                return Ok(Vec::new());
                            }
                        }
                        Action::Usage(u) => {
                            if !turn.usage(u).await {
                                return Ok(Vec::new());
                            }
                        }
                        Action::Done => return Ok(std::mem::take(&mut state.calls)),
                    }
                }
            }
        }
    }
}

/// The events of the stream this adapter acts on (others are skipped).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u64,
        delta: Delta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop,
    Ping,
    Error {
        error: ApiError,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StartMessage {
    #[serde(default)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// One event's JSON, or `None` when it is not JSON of a known shape.
pub fn parse_event(data: &str) -> Option<Event> {
    serde_json::from_str(data).ok()
}

/// What the round does about an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Text(String),
    Usage(LlmUsage),
    Done,
}

/// A round's stream, folded event by event.
#[derive(Debug, Default)]
pub struct StreamState {
    usage: LlmUsage,
    meter: UsageMeter,
    /// Tool-use blocks being received: index, id, name, input JSON so far.
    open_tools: Vec<(u64, String, String, String)>,
    pub calls: Vec<ToolCall>,
    pub stop_reason: Option<String>,
}

/// Longest tool input JSON accepted from the stream.
const MAX_TOOL_INPUT: usize = 64 << 10;

impl StreamState {
    pub fn on_event(&mut self, event: Event) -> Result<Vec<Action>, EngineError> {
        let mut out = Vec::new();
        match event {
            Event::MessageStart { message } => {
                self.merge(&message.usage);
                out.push(Action::Usage(self.meter.delta(self.usage)));
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => out.push(Action::Text(text)),
                Block::ToolUse { id, name } => {
                    self.open_tools.push((index, id, name, String::new()))
                }
                _ => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                Delta::TextDelta { text } if !text.is_empty() => out.push(Action::Text(text)),
                Delta::InputJsonDelta { partial_json } => {
                    if let Some(t) = self.open_tools.iter_mut().find(|t| t.0 == index) {
                        if t.3.len() + partial_json.len() > MAX_TOOL_INPUT {
                            return Err(EngineError::fatal(ENGINE, "tool input too long"));
                        }
                        t.3.push_str(&partial_json);
                    }
                }
                _ => {}
            },
            Event::ContentBlockStop { index } => {
                if let Some(pos) = self.open_tools.iter().position(|t| t.0 == index) {
                    let (_, id, name, json) = self.open_tools.remove(pos);
                    let input = if json.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&json).unwrap_or_else(|_| json!({}))
                    };
                    self.calls.push(ToolCall { id, name, input });
                }
            }
            Event::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.merge(&usage);
                let d = self.meter.delta(self.usage);
                if d != LlmUsage::default() {
                    out.push(Action::Usage(d));
                }
            }
            Event::MessageStop => {
                // Tool calls count when the model stopped for them (or said nothing of why).
                if self.stop_reason.as_deref().is_some_and(|r| r != "tool_use") {
                    self.calls.clear();
                }
                out.push(Action::Done);
            }
            Event::Error { error } => {
                let retryable = !matches!(
                    error.kind.as_str(),
                    "invalid_request_error"
                        | "authentication_error"
                        | "permission_error"
                        | "not_found_error"
                        | "request_too_large"
                        | "billing_error"
                );
                return Err(EngineError {
                    engine: ENGINE,
                    message: format!("{}: {}", error.kind, net::clip(&error.message, 300)),
                    retryable,
                });
            }
            Event::Ping | Event::Other => {}
        }
        Ok(out)
    }

    /// Counts only grow: take the larger of what we had and what the event says.
    fn merge(&mut self, u: &Usage) {
        let m = |a: &mut u64, b: Option<u64>| {
            if let Some(b) = b {
                *a = (*a).max(b);
            }
        };
        m(&mut self.usage.input_tokens, u.input_tokens);
        m(&mut self.usage.output_tokens, u.output_tokens);
        m(
            &mut self.usage.cache_write_tokens,
            u.cache_creation_input_tokens,
        );
        m(&mut self.usage.cache_read_tokens, u.cache_read_input_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_text_stream_folds() {
        // The frames of the "Basic streaming request" example in the streaming docs.
        let frames = [
            r#"{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-3-5-haiku-latest", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 900}}}"#,
            r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
            r#"{"type": "ping"}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}"#,
            r#"{"type": "content_block_stop", "index": 0}"#,
            r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}"#,
            r#"{"type": "message_stop"}"#,
        ];
        let mut s = StreamState::default();
        let mut actions = Vec::new();
        for f in frames {
            actions.extend(s.on_event(parse_event(f).unwrap()).unwrap());
        }
        let text: String = actions
            .iter()
            .filter_map(|a| match a {
                Action::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Hello!");
        let mut total = LlmUsage::default();
        for a in &actions {
            if let Action::Usage(u) = a {
                total.input_tokens += u.input_tokens;
                total.output_tokens += u.output_tokens;
                total.cache_read_tokens += u.cache_read_tokens;
                total.cache_write_tokens += u.cache_write_tokens;
            }
        }
        assert_eq!(
            total,
            LlmUsage {
                input_tokens: 25,
                output_tokens: 15,
                cache_read_tokens: 900,
                cache_write_tokens: 7
            }
        );
        assert_eq!(actions.last(), Some(&Action::Done));
        assert!(s.calls.is_empty());
    }

    #[test]
    fn tool_use_input_is_assembled() {
        let frames = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":400,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut s = StreamState::default();
        for f in frames {
            s.on_event(parse_event(f).unwrap()).unwrap();
        }
        assert_eq!(
            s.calls,
            vec![ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                input: json!({"location": "San Francisco, CA"})
            }]
        );
    }

    #[test]
    fn error_events_classify() {
        let mut s = StreamState::default();
        let e = s
            .on_event(
                parse_event(r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#)
                    .unwrap(),
            )
            .unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.message, "overloaded_error: Overloaded");
        let e = s
            .on_event(
                parse_event(
                    r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
                )
                .unwrap(),
            )
            .unwrap_err();
        assert!(!e.retryable);
    }

    #[test]
    fn messages_alternate_and_start_with_the_user() {
        let items = vec![
            Item::Assistant {
                text: "Hello, this is Acme.".into(),
                calls: vec![],
            },
            Item::User("my bill".into()),
            Item::Assistant {
                text: String::new(),
                calls: vec![ToolCall {
                    id: "t1".into(),
                    name: "lookup".into(),
                    input: json!({"a": 1}),
                }],
            },
            Item::Results(vec![llm::ToolResult {
                id: "t1".into(),
                content: "42".into(),
                is_error: false,
            }]),
            Item::User("and?".into()),
        ];
        let m = messages(&items, true);
        let roles: Vec<&str> = m.iter().map(|v| v["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(m[0]["content"][0]["text"], llm::CALL_ANSWERED);
        let last = &m[4]["content"];
        assert_eq!(last[0]["type"], "tool_result");
        assert_eq!(last[1]["text"], "and?");
        assert_eq!(last[1]["cache_control"]["type"], "ephemeral");
        assert!(last[0].get("cache_control").is_none());
    }

    #[test]
    fn malformed_and_unknown_events_are_skipped() {
        assert!(parse_event("{not json").is_none());
        assert!(parse_event(r#"{"type":"message_start"}"#).is_none());
        assert!(parse_event(
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"x"}}"#
        )
        .is_none());
        let mut s = StreamState::default();
        for f in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"x"}}"#,
            r#"{"type":"brand_new_event","x":1}"#,
            r#"{"type":"content_block_stop","index":7}"#,
        ] {
            assert_eq!(s.on_event(parse_event(f).unwrap()).unwrap(), vec![]);
        }
        // A tool input that is not JSON becomes an empty input, not a failure.
        for f in [
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"n"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": "}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            s.on_event(parse_event(f).unwrap()).unwrap();
        }
        assert_eq!(s.calls[0].input, json!({}));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_events_never_panic(data in "\\PC{0,300}") {
            if let Some(ev) = parse_event(&data) {
                let _ = StreamState::default().on_event(ev);
            }
        }

        #[test]
        fn shaped_events_never_panic(
            kind in "(message_start|content_block_start|content_block_delta|content_block_stop|message_delta|message_stop|error|ping)",
            index in 0u64..3,
            body in "\\PC{0,40}",
        ) {
            let frames = [
                format!(r#"{{"type":"{kind}","index":{index},"content_block":{{"type":"tool_use","id":"{body:?}","name":"x"}}}}"#),
                format!(r#"{{"type":"{kind}","index":{index},"delta":{{"type":"input_json_delta","partial_json":{body:?}}}}}"#),
                format!(r#"{{"type":"{kind}","message":{{"usage":{{"input_tokens":{index}}}}},"usage":{{"output_tokens":18446744073709551615}}}}"#),
            ];
            let mut s = StreamState::default();
            for f in frames {
                if let Some(ev) = parse_event(&f) {
                    let _ = s.on_event(ev);
                }
            }
            let _ = s.on_event(Event::ContentBlockStop { index });
        }
    }
}
