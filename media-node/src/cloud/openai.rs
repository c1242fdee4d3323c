//! OpenAI-compatible chat completions, streamed, with tool calls: OpenAI itself and the
//! servers that speak its API (vLLM, TGI, Groq, llama.cpp, Ollama…).
//!
//! Wire protocol (https://platform.openai.com/docs/api-reference/chat/create,
//! https://platform.openai.com/docs/api-reference/chat-streaming,
//! https://platform.openai.com/docs/guides/function-calling):
//!
//! - `POST {base}/chat/completions` with `Authorization: Bearer KEY` (left out when no key
//!   is configured: local servers need none); body `{model, messages, stream: true,
//!   stream_options: {include_usage: true}, max_tokens, temperature, tools: [{type:
//!   "function", function: {name, description, parameters}}]}`.
//! - The answer is server-sent events of `data: {…chat.completion.chunk…}` lines, ending in
//!   `data: [DONE]`. Each chunk's `choices[0].delta` holds `content` text, or pieces of
//!   `tool_calls` (`index`, then `id`, `function.name` once and `function.arguments` in
//!   fragments); `choices[0].finish_reason` is `stop`, `length` or `tool_calls`. With
//!   `include_usage` a last chunk with empty `choices` carries `usage` (`prompt_tokens`,
//!   `completion_tokens`, `prompt_tokens_details.cached_tokens`).
//! - Tool results go back as `{"role": "tool", "tool_call_id", "content"}` messages after
//!   the assistant message that made the calls.
//! - Errors: HTTP status with `{"error": {"message", "type", "code"}}`; some servers send the
//!   same object as a `data:` line mid-stream.
//!
//! Usage is mapped so that `input_tokens` are the uncached prompt tokens and
//! `cache_read_tokens` the cached ones (OpenAI's `prompt_tokens` counts both).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::llm::{self, AgentContext, Item, Provider, ToolCall, ToolDef, Turn};
use super::net::{self, ApiKey};
use super::sse::SseDecoder;
use crate::pipeline::engines::{EngineError, LlmEngine, LlmSession, LlmUsage};

const ENGINE: &str = "openai";
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Settings of an OpenAI-compatible engine.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// `None`: no `Authorization` header (a local server).
    pub api_key: Option<ApiKey>,
    /// Up to and including the version path: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl OpenAiConfig {
    pub fn new(api_key: Option<ApiKey>) -> Self {
        OpenAiConfig {
            api_key,
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            max_tokens: 300,
            temperature: 0.6,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The OpenAI-compatible dialogue engine.
pub struct OpenAiLlm {
    provider: Arc<OpenAiProvider>,
    ctx: Arc<AgentContext>,
    tools_http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiLlm")
            .field("config", &self.provider.cfg)
            .finish_non_exhaustive()
    }
}

impl OpenAiLlm {
    pub fn new(cfg: OpenAiConfig, ctx: AgentContext) -> Result<Self, EngineError> {
        let (http, tools_http) =
            super::llm::http_clients(ENGINE, cfg.connect_timeout, cfg.request_timeout)?;
        Ok(OpenAiLlm {
            provider: Arc::new(OpenAiProvider {
                cfg,
                http,
                system: ctx.system_prompt.clone(),
            }),
            ctx: Arc::new(ctx),
            tools_http,
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.provider.cfg
    }
}

impl LlmEngine for OpenAiLlm {
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

struct OpenAiProvider {
    cfg: OpenAiConfig,
    http: reqwest::Client,
    system: String,
}

impl OpenAiProvider {
    fn body(&self, items: &[Item], tools: &[ToolDef]) -> Value {
        let mut msgs = Vec::new();
        if !self.system.trim().is_empty() {
            msgs.push(json!({"role": "system", "content": self.system}));
        }
        msgs.extend(messages(items));
        let mut body = json!({
            "model": self.cfg.model,
            "messages": msgs,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
        });
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.schema}})
                })
                .collect();
        }
        body
    }
}

/// The conversation as chat messages (without the system message).
pub fn messages(items: &[Item]) -> Vec<Value> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::User(t) => out.push(json!({"role": "user", "content": t})),
            Item::Assistant { text, calls } => {
                let mut m = json!({"role": "assistant", "content": text.trim_end()});
                if !calls.is_empty() {
                    if text.trim().is_empty() {
                        m["content"] = Value::Null;
                    }
                    m["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function", "function": {
                                "name": c.name, "arguments": c.input.to_string()}})
                        })
                        .collect();
                }
                out.push(m);
            }
            Item::Results(results) => {
                for r in results {
                    out.push(json!({"role": "tool", "tool_call_id": r.id, "content": r.content}));
                }
            }
        }
    }
    out
}

impl Provider for OpenAiProvider {
    async fn round(
        &self,
        items: &[Item],
        tools: &[ToolDef],
        turn: &mut Turn,
    ) -> Result<Vec<ToolCall>, EngineError> {
        let key = self.cfg.api_key.as_ref();
        let url = format!("{}/chat/completions", net::trim_base(&self.cfg.base_url));
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .json(&self.body(items, tools));
        if let Some(k) = key {
            request = request.bearer_auth(k.expose());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| net::http_error(ENGINE, e, key))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            return Err(net::status_error(ENGINE, status, &body, key));
        }
        let mut decoder = SseDecoder::default();
        let mut state = StreamState::default();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| net::http_error(ENGINE, e, key))?;
            let Some(chunk) = chunk else {
                if state.finished {
                    // Some servers end without `[DONE]`: the finish reason is enough.
                    let _ = turn.usage(state.usage).await;
                    return Ok(state.take_calls());
                }
                return Err(EngineError::retryable(ENGINE, "stream ended before [DONE]"));
            };
            let events = decoder
                .push(&chunk)
                .map_err(|e| EngineError::retryable(ENGINE, e.to_string()))?;
            for ev in events {
                match state.on_data(&ev.data)? {
                    Step::Text(t) => {
                        if !turn.text(&t).await {
                            return Ok(Vec::new());
                        }
                    }
                    Step::Nothing => {}
                    Step::Done => {
                        // One usage report per round, zero when the server sent none, so
                        // a round always ends in an event.
                        if !turn.usage(state.usage).await {
                            return Ok(Vec::new());
                        }
                        return Ok(state.take_calls());
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
    pub error: Option<ApiError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub delta: ChoiceDelta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChoiceDelta {
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u64,
    pub id: Option<String>,
    #[serde(default)]
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionDelta {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

/// What one `data:` line means for the round.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Text(String),
    Nothing,
    Done,
}

/// Longest tool argument JSON accepted from the stream.
const MAX_TOOL_ARGS: usize = 64 << 10;

/// A round's stream, folded line by line.
#[derive(Debug, Default)]
pub struct StreamState {
    pub usage: LlmUsage,
    /// Calls by index: id, name, arguments so far.
    calls: Vec<(u64, String, String, String)>,
    pub finish_reason: Option<String>,
    finished: bool,
}

impl StreamState {
    pub fn on_data(&mut self, data: &str) -> Result<Step, EngineError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Step::Done);
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            tracing::debug!("openai: unreadable chunk skipped");
            return Ok(Step::Nothing);
        };
        if let Some(err) = chunk.error {
            let kind = err.kind.unwrap_or_default();
            let retryable = !matches!(
                kind.as_str(),
                "invalid_request_error" | "authentication_error" | "permission_error"
            );
            return Err(EngineError {
                engine: ENGINE,
                message: format!("{}: {}", kind, net::clip(&err.message, 300)),
                retryable,
            });
        }
        if let Some(u) = chunk.usage {
            let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
            self.usage = LlmUsage {
                input_tokens: u.prompt_tokens.saturating_sub(cached),
                output_tokens: u.completion_tokens,
                cache_read_tokens: cached,
                cache_write_tokens: 0,
            };
        }
        let mut text = String::new();
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(c) = choice.delta.content {
                text = c;
            }
            for d in choice.delta.tool_calls {
                let pos = match self.calls.iter().position(|c| c.0 == d.index) {
                    Some(p) => p,
                    None => {
                        if self.calls.len() >= 16 {
                            return Err(EngineError::fatal(ENGINE, "too many tool calls"));
                        }
                        self.calls
                            .push((d.index, String::new(), String::new(), String::new()));
                        self.calls.len() - 1
                    }
                };
                let entry = &mut self.calls[pos];
                if let Some(id) = d.id {
                    entry.1 = id;
                }
                if let Some(name) = d.function.name {
                    entry.2.push_str(&name);
                }
                if let Some(args) = d.function.arguments {
                    if entry.3.len() + args.len() > MAX_TOOL_ARGS {
                        return Err(EngineError::fatal(ENGINE, "tool arguments too long"));
                    }
                    entry.3.push_str(&args);
                }
            }
            if let Some(r) = choice.finish_reason {
                self.finish_reason = Some(r);
                self.finished = true;
            }
        }
        Ok(if text.is_empty() {
            Step::Nothing
        } else {
            Step::Text(text)
        })
    }

    /// The assembled tool calls (none unless the model stopped to call tools).
    pub fn take_calls(&mut self) -> Vec<ToolCall> {
        if self.finish_reason.as_deref() != Some("tool_calls") && self.finish_reason.is_some() {
            self.calls.clear();
        }
        std::mem::take(&mut self.calls)
            .into_iter()
            .filter(|c| !c.2.is_empty())
            .enumerate()
            .map(|(i, (_, id, name, args))| ToolCall {
                id: if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                },
                name,
                input: if args.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&args).unwrap_or_else(|_| json!({}))
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_stream_folds() {
        let lines = [
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":9,"total_tokens":1209,"prompt_tokens_details":{"cached_tokens":1024}}}"#,
        ];
        let mut s = StreamState::default();
        let steps: Vec<Step> = lines.iter().map(|l| s.on_data(l).unwrap()).collect();
        assert_eq!(steps[1], Step::Text("Hello".into()));
        assert_eq!(s.on_data("[DONE]").unwrap(), Step::Done);
        assert_eq!(
            s.usage,
            LlmUsage {
                input_tokens: 176,
                output_tokens: 9,
                cache_read_tokens: 1024,
                cache_write_tokens: 0
            }
        );
        assert!(s.take_calls().is_empty());
    }

    #[test]
    fn tool_calls_are_assembled_from_fragments() {
        let lines = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_current_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Boston, MA\"}"}}]},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let mut s = StreamState::default();
        for l in lines {
            s.on_data(l).unwrap();
        }
        assert_eq!(
            s.take_calls(),
            vec![ToolCall {
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_current_weather".into(),
                input: json!({"location": "Boston, MA"})
            }]
        );
    }

    #[test]
    fn error_lines_fail_the_round() {
        let mut s = StreamState::default();
        let e = s
            .on_data(r#"{"error":{"message":"The server had an error","type":"server_error","code":null}}"#)
            .unwrap_err();
        assert!(e.retryable);
    }

    #[test]
    fn tool_messages_follow_their_call() {
        let items = vec![
            Item::User("weather?".into()),
            Item::Assistant {
                text: String::new(),
                calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "w".into(),
                    input: json!({"city": "Pune"}),
                }],
            },
            Item::Results(vec![llm::ToolResult {
                id: "c1".into(),
                content: "sunny".into(),
                is_error: false,
            }]),
        ];
        let m = messages(&items);
        assert_eq!(m[1]["content"], Value::Null);
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Pune"}"#
        );
        assert_eq!(m[2]["role"], "tool");
        assert_eq!(m[2]["tool_call_id"], "c1");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut s = StreamState::default();
        for l in [
            "{",
            "null",
            "[]",
            r#"{"choices":"x"}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":"a"}]}}]}"#,
        ] {
            assert_eq!(s.on_data(l).unwrap(), Step::Nothing, "{l}");
        }
        // A call without a name is dropped; arguments that are not JSON become `{}`.
        s.on_data(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        )
        .unwrap();
        s.on_data(r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c","function":{"name":"n","arguments":"{oops"}}]},"finish_reason":"tool_calls"}]}"#).unwrap();
        let calls = s.take_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].input, json!({}));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(data in "\\PC{0,300}") {
            let mut s = StreamState::default();
            let _ = s.on_data(&data);
            let _ = s.take_calls();
        }

        #[test]
        fn shaped_lines_never_panic(index in 0u64..40, frag in "\\PC{0,30}", fin in "(stop|tool_calls|length|null)") {
            let mut s = StreamState::default();
            let line = format!(
                r#"{{"choices":[{{"delta":{{"content":{frag:?},"tool_calls":[{{"index":{index},"id":{frag:?},"function":{{"name":"n","arguments":{frag:?}}}}}]}},"finish_reason":"{fin}"}}],"usage":{{"prompt_tokens":1,"prompt_tokens_details":{{"cached_tokens":{index}}}}}}}"#
            );
            let _ = s.on_data(&line);
            let _ = s.take_calls();
        }
    }
}
