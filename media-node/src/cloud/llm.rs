//! What the two LLM adapters share: the conversation each call keeps (in a neutral form each
//! adapter renders into its API's messages), the agent's HTTP tools and the built-in call
//! actions offered to the model, and the loop that streams a response, runs the tools the
//! model calls and streams again.
//!
//! The conversation sits behind a mutex shared by the session and the task answering the
//! latest input. Every new input, truncation or restore bumps a generation number; a task
//! whose generation is stale stops writing, so a reply cancelled by barge-in never grows
//! after [`LlmSession::truncate_last`] has cut it to what the caller heard.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::net::clip;
use crate::agent::spec::{Tool, ToolMethod};
use crate::pipeline::dialogue::NextStep;
use crate::pipeline::engines::{EngineError, LlmEvent, LlmInput, LlmUsage, Speaker};

/// Most model → tool → model rounds in one response.
pub const MAX_TOOL_ROUNDS: usize = 4;
/// Most characters of a tool's answer handed back to the model.
const TOOL_RESULT_CHARS: usize = 8000;
/// The built-in tool that ends the call.
pub const END_CALL: &str = "end_call";
/// The built-in tool that transfers the call.
pub const TRANSFER_CALL: &str = "transfer_call";
/// Said to the model in place of the first caller turn when the agent spoke first.
pub const CALL_ANSWERED: &str = "[The call was answered.]";

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub input: Value,
}

/// What a tool answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub id: String,
    pub content: String,
    pub is_error: bool,
}

/// One entry of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    User(String),
    Assistant { text: String, calls: Vec<ToolCall> },
    Results(Vec<ToolResult>),
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the input (type object).
    pub schema: Value,
}

/// A call's conversation.
#[derive(Debug, Default)]
pub struct Conversation {
    items: Vec<Item>,
    gen: u64,
}

pub type Shared = Arc<Mutex<Conversation>>;

impl Conversation {
    fn bump(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// The caller said something: a new generation.
    pub fn user(&mut self, text: String) -> u64 {
        self.items.push(Item::User(text));
        self.bump()
    }

    /// The agent said `text` without the model (the greeting).
    pub fn said(&mut self, text: String) -> u64 {
        self.items.push(Item::Assistant {
            text,
            calls: Vec::new(),
        });
        self.bump()
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The conversation for a request of generation `gen`, with an empty assistant entry
    /// opened for its answer; `None` once superseded.
    fn open_reply(&mut self, gen: u64) -> Option<Vec<Item>> {
        if gen != self.gen {
            return None;
        }
        let snapshot = self.items.clone();
        self.items.push(Item::Assistant {
            text: String::new(),
            calls: Vec::new(),
        });
        Some(snapshot)
    }

    fn append_text(&mut self, gen: u64, text: &str) {
        if gen != self.gen {
            return;
        }
        if let Some(Item::Assistant { text: t, .. }) = self.items.last_mut() {
            t.push_str(text);
        }
    }

    fn set_calls(&mut self, gen: u64, calls: &[ToolCall]) {
        if gen != self.gen {
            return;
        }
        if let Some(Item::Assistant { calls: c, .. }) = self.items.last_mut() {
            c.extend_from_slice(calls);
        }
    }

    fn push_results(&mut self, gen: u64, results: Vec<ToolResult>) {
        if gen == self.gen {
            self.items.push(Item::Results(results));
        }
    }

    /// Barge-in: the caller heard only `spoken` of the last reply.
    pub fn truncate_last(&mut self, spoken: &str) {
        self.bump();
        let Some(pos) = self
            .items
            .iter()
            .rposition(|i| matches!(i, Item::Assistant { .. }))
        else {
            return;
        };
        if let Some(Item::Assistant { text, calls }) = self.items.get_mut(pos) {
            *text = spoken.trim().to_string();
            if text.is_empty() && calls.is_empty() {
                self.items.remove(pos);
            }
        }
    }

    /// Replace everything with `history`.
    pub fn restore(&mut self, history: &[(Speaker, String)]) {
        self.items = history
            .iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(s, t)| match s {
                Speaker::Caller => Item::User(t.clone()),
                Speaker::Agent => Item::Assistant {
                    text: t.clone(),
                    calls: Vec::new(),
                },
            })
            .collect();
        self.bump();
    }
}

/// `items` made valid for an API: tool calls without results (a reply cancelled mid-tool)
/// and results without their call are dropped, and so are empty assistant turns.
pub fn sanitized(items: &[Item]) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::User(t) => out.push(Item::User(t.clone())),
            Item::Assistant { text, calls } => {
                let answered: Vec<&ToolResult> = match items.get(i + 1) {
                    Some(Item::Results(r)) => r.iter().collect(),
                    _ => Vec::new(),
                };
                let calls: Vec<ToolCall> = calls
                    .iter()
                    .filter(|c| answered.iter().any(|r| r.id == c.id))
                    .cloned()
                    .collect();
                if !text.trim().is_empty() || !calls.is_empty() {
                    out.push(Item::Assistant {
                        text: text.clone(),
                        calls,
                    });
                }
            }
            Item::Results(results) => {
                let called: Vec<&str> = match out.last() {
                    Some(Item::Assistant { calls, .. }) => {
                        calls.iter().map(|c| c.id.as_str()).collect()
                    }
                    _ => Vec::new(),
                };
                let kept: Vec<ToolResult> = results
                    .iter()
                    .filter(|r| called.contains(&r.id.as_str()))
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    out.push(Item::Results(kept));
                }
            }
        }
    }
    out
}

/// What the caller's input says to the model; `None` for the start of the call.
pub fn input_text(input: &LlmInput) -> Option<String> {
    match input {
        LlmInput::Start => None,
        LlmInput::Utterance(t) => Some(t.clone()),
        LlmInput::Dtmf(keys) => Some(format!("[The caller pressed the keys: {keys}]")),
        LlmInput::Silence => Some(
            "[The caller has said nothing for a while. Check whether they are still there.]".into(),
        ),
    }
}

/// The two HTTP clients an LLM adapter needs: one for the provider's API (with the request
/// timeout), one for the agent's tools (each call has the tool's own timeout).
pub fn http_clients(
    engine: &'static str,
    connect_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
) -> Result<(reqwest::Client, reqwest::Client), EngineError> {
    let client = |b: reqwest::ClientBuilder| {
        b.build()
            .map_err(|e| EngineError::fatal(engine, format!("HTTP client: {e}")))
    };
    Ok((
        client(
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .timeout(request_timeout),
        )?,
        client(reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(3)))?,
    ))
}

/// Everything about the agent an LLM session needs besides its API.
#[derive(Debug, Clone)]
pub struct AgentContext {
    pub system_prompt: String,
    pub greeting: String,
    pub tools: Vec<Tool>,
    /// `sip:`/`tel:` targets the model may transfer to (the agent's transfer intents).
    pub transfer_targets: Vec<String>,
}

impl AgentContext {
    pub fn from_agent(agent: &crate::agent::ResolvedAgent) -> Self {
        let mut targets: Vec<String> = Vec::new();
        for i in &agent.spec.intents {
            if let Some(t) = &i.transfer_to {
                if !targets.contains(t) {
                    targets.push(t.clone());
                }
            }
        }
        AgentContext {
            system_prompt: agent.spec.system_prompt.clone(),
            greeting: agent.spec.greeting.clone(),
            tools: agent.spec.tools.clone(),
            transfer_targets: targets,
        }
    }

    /// The tools offered to the model: the agent's, then the built-in call actions (unless
    /// the agent defines a tool of the same name).
    pub fn tool_defs(&self) -> Vec<ToolDef> {
        let mut defs: Vec<ToolDef> = self
            .tools
            .iter()
            .map(|t| ToolDef {
                name: t.name.clone(),
                description: t.description.clone(),
                schema: t.parameters.clone(),
            })
            .collect();
        let taken = |n: &str| self.tools.iter().any(|t| t.name == n);
        if !taken(END_CALL) {
            defs.push(ToolDef {
                name: END_CALL.into(),
                description:
                    "Hang up the phone call. Say goodbye in your reply before calling this.".into(),
                schema: json!({"type": "object", "properties": {}}),
            });
        }
        if !self.transfer_targets.is_empty() && !taken(TRANSFER_CALL) {
            defs.push(ToolDef {
                name: TRANSFER_CALL.into(),
                description:
                    "Transfer the caller to a person. Tell the caller before calling this.".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"target": {"type": "string", "enum": self.transfer_targets}},
                    "required": ["target"],
                }),
            });
        }
        defs
    }
}

/// Where a response's events go, and the conversation it writes to.
pub struct Turn {
    tx: mpsc::Sender<Result<LlmEvent, EngineError>>,
    conv: Shared,
    gen: u64,
}

impl Turn {
    /// Stream `text` to the caller and record it; false once the response was cancelled.
    pub async fn text(&mut self, text: &str) -> bool {
        if text.is_empty() {
            return !self.tx.is_closed();
        }
        if let Ok(mut c) = self.conv.lock() {
            c.append_text(self.gen, text);
        }
        self.tx
            .send(Ok(LlmEvent::Text(text.to_string())))
            .await
            .is_ok()
    }

    pub async fn usage(&mut self, usage: LlmUsage) -> bool {
        self.tx.send(Ok(LlmEvent::Usage(usage))).await.is_ok()
    }
}

/// One streamed request to a model API.
pub trait Provider: Send + Sync + 'static {
    /// Send `items` (already [`sanitized`]) with `tools`; stream the text through `turn`
    /// and report usage; return the tool calls the model made.
    fn round<'a>(
        &'a self,
        items: &'a [Item],
        tools: &'a [ToolDef],
        turn: &'a mut Turn,
    ) -> impl Future<Output = Result<Vec<ToolCall>, EngineError>> + Send + 'a;
}

/// One call's conversation with a provider: the history, and the client for the agent's
/// tools. Every adapter's [`LlmSession`] is this, over its own [`Provider`].
pub struct Session<P> {
    provider: Arc<P>,
    ctx: Arc<AgentContext>,
    http: reqwest::Client,
    conv: Shared,
}

impl<P: Provider> Session<P> {
    pub fn new(provider: Arc<P>, ctx: Arc<AgentContext>, http: reqwest::Client) -> Self {
        Session {
            provider,
            ctx,
            http,
            conv: Arc::new(Mutex::new(Conversation::default())),
        }
    }
}

impl<P: Provider> crate::pipeline::engines::LlmSession for Session<P> {
    fn respond(&mut self, input: LlmInput) -> mpsc::Receiver<Result<LlmEvent, EngineError>> {
        start(&self.provider, &self.ctx, &self.http, &self.conv, input)
    }

    fn truncate_last(&mut self, spoken: &str) {
        if let Ok(mut c) = self.conv.lock() {
            c.truncate_last(spoken);
        }
    }

    fn restore(&mut self, history: &[(Speaker, String)]) {
        if let Ok(mut c) = self.conv.lock() {
            c.restore(history);
        }
    }
}

/// Answer `input` on `conv` with `provider`: the greeting is said as written, everything
/// else goes to the model.
pub fn start<P: Provider>(
    provider: &Arc<P>,
    ctx: &Arc<AgentContext>,
    http: &reqwest::Client,
    conv: &Shared,
    input: LlmInput,
) -> mpsc::Receiver<Result<LlmEvent, EngineError>> {
    let (tx, rx) = mpsc::channel(64);
    let Some(text) = input_text(&input) else {
        let greeting = ctx.greeting.trim().to_string();
        if !greeting.is_empty() {
            if let Ok(mut c) = conv.lock() {
                c.said(greeting.clone());
            }
            let _ = tx.try_send(Ok(LlmEvent::Text(greeting)));
        }
        return rx;
    };
    let gen = match conv.lock() {
        Ok(mut c) => c.user(text),
        Err(_) => {
            let _ = tx.try_send(Err(EngineError::fatal("llm", "conversation lock poisoned")));
            return rx;
        }
    };
    tokio::spawn(respond(
        provider.clone(),
        ctx.clone(),
        http.clone(),
        conv.clone(),
        gen,
        tx,
    ));
    rx
}

/// Answer the input of generation `gen`: stream, run tools, stream again (at most
/// [`MAX_TOOL_ROUNDS`] tool rounds). Stops quietly when the receiver is dropped or the
/// conversation moved on.
pub async fn respond<P: Provider>(
    provider: Arc<P>,
    ctx: Arc<AgentContext>,
    http: reqwest::Client,
    conv: Shared,
    gen: u64,
    tx: mpsc::Sender<Result<LlmEvent, EngineError>>,
) {
    let tools = ctx.tool_defs();
    let mut turn = Turn {
        tx: tx.clone(),
        conv: conv.clone(),
        gen,
    };
    for round in 0..=MAX_TOOL_ROUNDS {
        let items = match conv.lock() {
            Ok(mut c) => c.open_reply(gen),
            Err(_) => None,
        };
        let Some(items) = items else { return };
        let items = sanitized(&items);
        let result = tokio::select! {
            r = provider.round(&items, &tools, &mut turn) => r,
            _ = tx.closed() => return,
        };
        let calls = match result {
            Ok(calls) => calls,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if calls.is_empty() {
            return;
        }
        if let Ok(mut c) = conv.lock() {
            c.set_calls(gen, &calls);
        }
        let (results, next) = run_calls(&ctx, &http, &calls).await;
        if let Ok(mut c) = conv.lock() {
            c.push_results(gen, results);
        }
        if let Some(step) = next {
            let _ = tx.send(Ok(LlmEvent::Next(step))).await;
            return;
        }
        if round == MAX_TOOL_ROUNDS {
            tracing::warn!("LLM kept calling tools; answer cut after {MAX_TOOL_ROUNDS} rounds");
        }
    }
}

/// Run the model's tool calls (HTTP tools concurrently); built-in actions become the
/// response's next step.
async fn run_calls(
    ctx: &AgentContext,
    http: &reqwest::Client,
    calls: &[ToolCall],
) -> (Vec<ToolResult>, Option<NextStep>) {
    let mut next = None;
    let futures = calls.iter().map(|call| {
        let tool = ctx.tools.iter().find(|t| t.name == call.name);
        async move {
            match tool {
                Some(tool) => {
                    let (content, is_error) = call_tool(http, tool, &call.input).await;
                    (None, content, is_error)
                }
                None => builtin(ctx, call),
            }
        }
    });
    let answers = futures::future::join_all(futures).await;
    let mut results = Vec::with_capacity(calls.len());
    for (call, (step, content, is_error)) in calls.iter().zip(answers) {
        if step.is_some() && next.is_none() {
            next = step;
        }
        results.push(ToolResult {
            id: call.id.clone(),
            content,
            is_error,
        });
    }
    (results, next)
}

fn builtin(ctx: &AgentContext, call: &ToolCall) -> (Option<NextStep>, String, bool) {
    match call.name.as_str() {
        END_CALL => (
            Some(NextStep::Hangup),
            "The call ends after your reply has been spoken.".into(),
            false,
        ),
        TRANSFER_CALL => {
            let target = call
                .input
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ctx.transfer_targets.iter().any(|t| t == target) {
                (
                    Some(NextStep::Transfer(target.to_string())),
                    "The caller is transferred after your reply has been spoken.".into(),
                    false,
                )
            } else {
                (None, "Unknown transfer target.".into(), true)
            }
        }
        other => (
            None,
            format!("There is no tool named {}.", clip(other, 64)),
            true,
        ),
    }
}

/// Call an agent tool: POST the input as JSON, or GET with its top-level fields as query
/// parameters; within the tool's timeout. Returns the answer for the model and whether it
/// is an error. The tool's URL is never logged (it may carry a key).
pub async fn call_tool(http: &reqwest::Client, tool: &Tool, input: &Value) -> (String, bool) {
    let timeout = Duration::from_millis(u64::from(tool.timeout_ms));
    let request = match tool.method {
        ToolMethod::Post => http.post(&tool.url).json(input),
        ToolMethod::Get => {
            let mut pairs: Vec<(String, String)> = Vec::new();
            if let Some(obj) = input.as_object() {
                for (k, v) in obj {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    pairs.push((k.clone(), v));
                }
            }
            http.get(&tool.url).query(&pairs)
        }
    };
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let response = request.timeout(timeout).send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    })
    .await;
    let elapsed = started.elapsed().as_millis();
    match result {
        Err(_) => {
            tracing::warn!(tool = %tool.name, ms = elapsed, "tool timed out");
            (
                format!("The tool did not answer within {} ms.", tool.timeout_ms),
                true,
            )
        }
        Ok(Err(e)) if e.is_timeout() => {
            tracing::warn!(tool = %tool.name, ms = elapsed, "tool timed out");
            (
                format!("The tool did not answer within {} ms.", tool.timeout_ms),
                true,
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(tool = %tool.name, error = %e.without_url(), "tool call failed");
            ("The tool could not be reached.".into(), true)
        }
        Ok(Ok((status, body))) => {
            tracing::debug!(tool = %tool.name, status = status.as_u16(), ms = elapsed, "tool answered");
            if status.is_success() {
                (clip_keep_lines(&body, TOOL_RESULT_CHARS), false)
            } else {
                (
                    format!(
                        "The tool failed with HTTP {}: {}",
                        status.as_u16(),
                        clip(&body, 500)
                    ),
                    true,
                )
            }
        }
    }
}

fn clip_keep_lines(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

/// Usage reported so far in a round, so a provider that learns counts in pieces reports
/// each piece once and the pipeline's sums come out right.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageMeter {
    reported: LlmUsage,
}

impl UsageMeter {
    /// The increase from what was reported to `now` (counts only grow).
    pub fn delta(&mut self, now: LlmUsage) -> LlmUsage {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let out = LlmUsage {
            input_tokens: d(now.input_tokens, self.reported.input_tokens),
            output_tokens: d(now.output_tokens, self.reported.output_tokens),
            cache_read_tokens: d(now.cache_read_tokens, self.reported.cache_read_tokens),
            cache_write_tokens: d(now.cache_write_tokens, self.reported.cache_write_tokens),
        };
        let m = |a: u64, b: u64| a.max(b);
        self.reported = LlmUsage {
            input_tokens: m(now.input_tokens, self.reported.input_tokens),
            output_tokens: m(now.output_tokens, self.reported.output_tokens),
            cache_read_tokens: m(now.cache_read_tokens, self.reported.cache_read_tokens),
            cache_write_tokens: m(now.cache_write_tokens, self.reported.cache_write_tokens),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "t".into(),
            input: json!({}),
        }
    }

    #[test]
    fn unanswered_calls_are_dropped() {
        let items = vec![
            Item::User("hi".into()),
            Item::Assistant {
                text: "checking".into(),
                calls: vec![call("a")],
            },
            Item::User("hello?".into()),
            Item::Assistant {
                text: String::new(),
                calls: vec![call("b"), call("c")],
            },
            Item::Results(vec![ToolResult {
                id: "b".into(),
                content: "ok".into(),
                is_error: false,
            }]),
            Item::Assistant {
                text: "  ".into(),
                calls: vec![],
            },
        ];
        let s = sanitized(&items);
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[1],
            Item::Assistant {
                text: "checking".into(),
                calls: vec![]
            }
        );
        assert_eq!(
            s[3],
            Item::Assistant {
                text: String::new(),
                calls: vec![call("b")]
            }
        );
    }

    #[test]
    fn stale_generations_do_not_write() {
        let mut c = Conversation::default();
        let g = c.user("hi".into());
        assert!(c.open_reply(g).is_some());
        c.append_text(g, "Hello there, how");
        c.truncate_last("Hello there,");
        c.append_text(g, " can I help?");
        assert_eq!(
            c.items().last(),
            Some(&Item::Assistant {
                text: "Hello there,".into(),
                calls: vec![]
            })
        );
        let g2 = c.user("bill".into());
        assert!(c.open_reply(g).is_none());
        assert!(c.open_reply(g2).is_some());
    }

    #[test]
    fn usage_meter_reports_each_piece_once() {
        let mut m = UsageMeter::default();
        let a = m.delta(LlmUsage {
            input_tokens: 10,
            cache_read_tokens: 5,
            output_tokens: 1,
            ..LlmUsage::default()
        });
        let b = m.delta(LlmUsage {
            input_tokens: 10,
            output_tokens: 30,
            ..LlmUsage::default()
        });
        assert_eq!(a.input_tokens + b.input_tokens, 10);
        assert_eq!(a.output_tokens + b.output_tokens, 30);
        assert_eq!(a.cache_read_tokens + b.cache_read_tokens, 5);
    }
}
