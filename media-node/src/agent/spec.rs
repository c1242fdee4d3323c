//! The agent spec file (TOML): who the agent is, what it says, which engines it uses, what it
//! understands and may do. Parsed with unknown keys refused and then validated, so every
//! mistake is reported with the key it is about (`intents[1].examples: ...`).
//!
//! ```toml
//! name = "Acme billing desk"
//! language = "en-IN"
//! voice = "en-us"                 # engine voice (espeak voice, Cartesia/ElevenLabs voice id)
//! preset = "cost_optimized"       # ultra_low_latency | low_latency | balanced | high_quality | cost_optimized
//! greeting = "Hello, this is Acme. How can I help you today?"
//! system_prompt = "You are the Acme billing assistant. ..."
//! fallback_reply = "Sorry, I did not catch that. Could you say it again?"
//! max_call_seconds = 600
//! silence_timeout_seconds = 10
//!
//! [engines]                       # fallback chains; default: the preset's engine, then embedded
//! stt = ["deepgram", "embedded"]
//! llm = ["anthropic", "embedded"]
//! tts = ["cartesia", "embedded"]
//!
//! [turn]                          # optional overrides of the preset's turn settings
//! end_of_turn_silence_ms = 600
//!
//! [[intents]]
//! name = "billing"
//! examples = ["i have a question about my bill", "billing question"]
//! reply = "Sure, I can help with your bill. What is your account number?"
//! action = "continue"             # continue | hangup | transfer
//!
//! [dtmf]
//! "1" = "billing"
//!
//! [[tools]]
//! name = "lookup_balance"
//! description = "Look up the balance of an account"
//! url = "https://api.example.com/balance"
//! method = "POST"
//! timeout_ms = 2000
//! parameters = { type = "object", properties = { account = { type = "string" } } }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::preset::{LlmEngine, Preset, PresetSettings, SttEngine, TtsEngine, TurnSettings};

/// A mistake in an agent spec, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    /// Not TOML, a wrong type, or an unknown key (the parser's message names key and line).
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// One engine or a fallback chain of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Chain<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> Chain<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            Chain::One(t) => vec![*t],
            Chain::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engines {
    pub stt: Option<Chain<SttEngine>>,
    pub llm: Option<Chain<LlmEngine>>,
    pub tts: Option<Chain<TtsEngine>>,
    pub stt_model: Option<String>,
    pub llm_model: Option<String>,
    pub tts_model: Option<String>,
    /// Base URL of an OpenAI-compatible endpoint (`https://api.openai.com/v1`, a vLLM server…).
    pub llm_base_url: Option<String>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnOverrides {
    pub end_of_turn_silence_ms: Option<u32>,
    pub min_interruption_ms: Option<u32>,
    pub min_interruption_words: Option<u32>,
}

/// What happens after an intent's reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentAction {
    #[default]
    Continue,
    Hangup,
    Transfer,
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// Spoken or keyed digits ("one two three", DTMF) → "123".
    Digits,
    /// Yes or no.
    YesNo,
    /// Whatever the caller says.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    pub kind: SlotKind,
    /// Asked when the slot is still empty.
    pub prompt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub name: String,
    /// Phrases that mean this intent (also what the offline recogniser listens for).
    pub examples: Vec<String>,
    /// Said when the intent is recognised and its slots are filled; `{slot}` and `{agent}`
    /// are replaced.
    pub reply: String,
    #[serde(default)]
    pub action: IntentAction,
    /// `sip:`/`tel:` target of `action = "transfer"`.
    pub transfer_to: Option<String>,
    #[serde(default)]
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ToolMethod {
    Get,
    #[default]
    Post,
}

/// An HTTP function the LLM may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub url: String,
    #[serde(default)]
    pub method: ToolMethod,
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u32,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: serde_json::Value,
}

fn default_tool_timeout() -> u32 {
    3000
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn default_language() -> String {
    "en-IN".into()
}

fn default_preset() -> Preset {
    Preset::Balanced
}

fn default_fallback() -> String {
    "Sorry, I did not catch that. Could you say it again?".into()
}

fn default_max_call() -> u32 {
    600
}

fn default_silence() -> u32 {
    10
}

/// An agent, as written in its spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// Engine voice; `None`: the engine's default.
    pub voice: Option<String>,
    #[serde(default = "default_preset")]
    pub preset: Preset,
    pub greeting: String,
    /// Persona and instructions for an LLM.
    #[serde(default)]
    pub system_prompt: String,
    /// Said when nothing the caller said matched (embedded dialogue engine).
    #[serde(default = "default_fallback")]
    pub fallback_reply: String,
    #[serde(default = "default_max_call")]
    pub max_call_seconds: u32,
    /// The agent speaks up (or hangs up after asking twice) after this much caller silence.
    #[serde(default = "default_silence")]
    pub silence_timeout_seconds: u32,
    #[serde(default)]
    pub engines: Engines,
    #[serde(default)]
    pub turn: TurnOverrides,
    #[serde(default)]
    pub intents: Vec<Intent>,
    /// Key → intent name.
    #[serde(default)]
    pub dtmf: BTreeMap<String, String>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// More phrases the offline recogniser should expect besides the intents' examples.
    #[serde(default)]
    pub phrases: Vec<String>,
}

/// An agent with its preset and overrides resolved into one set of settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedAgent {
    pub spec: AgentSpec,
    pub settings: PresetSettings,
    pub stt_chain: Vec<SttEngine>,
    pub llm_chain: Vec<LlmEngine>,
    pub tts_chain: Vec<TtsEngine>,
}

const MAX_TEXT: usize = 4000;
const MAX_PROMPT: usize = 100_000;

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_text(key: &str, s: &str, max: usize, required: bool) -> Result<(), SpecError> {
    if required && s.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if s.len() > max {
        return Err(invalid(key, format!("longer than {max} bytes")));
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(invalid(key, "contains control characters"));
    }
    Ok(())
}

fn check_chain<T: PartialEq + Copy + std::fmt::Debug>(
    key: &str,
    chain: &Option<Chain<T>>,
) -> Result<(), SpecError> {
    if let Some(c) = chain {
        let v = c.to_vec();
        if v.is_empty() {
            return Err(invalid(key, "needs at least one engine"));
        }
        for (i, e) in v.iter().enumerate() {
            if v[..i].contains(e) {
                return Err(invalid(key, format!("{e:?} is listed twice")));
            }
        }
    }
    Ok(())
}

/// Template fields a reply may use: the intent's slots and `agent`.
fn check_template(key: &str, text: &str, slots: &[Slot]) -> Result<(), SpecError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(invalid(key, "has a `{` without a closing `}`"));
        };
        let field = &after[..close];
        if field != "agent" && !slots.iter().any(|s| s.name == field) {
            return Err(invalid(
                key,
                format!("uses {{{field}}}, which is not one of this intent's slots"),
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

impl AgentSpec {
    /// Parse and validate spec text. `origin` names the file in messages.
    pub fn parse(text: &str) -> Result<AgentSpec, SpecError> {
        let spec: AgentSpec =
            toml::from_str(text).map_err(|e| SpecError::Syntax(e.to_string().trim().into()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<AgentSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        AgentSpec::parse(&text).map_err(|e| match e {
            SpecError::Syntax(m) => SpecError::Syntax(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Every rule the types cannot express.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_text("name", &self.name, 200, true)?;
        check_text("greeting", &self.greeting, MAX_TEXT, true)?;
        check_text("system_prompt", &self.system_prompt, MAX_PROMPT, false)?;
        check_text("fallback_reply", &self.fallback_reply, MAX_TEXT, true)?;
        let lang_ok = (2..=16).contains(&self.language.len())
            && self
                .language
                .split('-')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !lang_ok {
            return Err(invalid("language", "expected a BCP-47 tag such as en-IN"));
        }
        if let Some(v) = &self.voice {
            check_text("voice", v, 200, true)?;
        }
        if !(10..=14_400).contains(&self.max_call_seconds) {
            return Err(invalid("max_call_seconds", "must be between 10 and 14400"));
        }
        if !(1..=300).contains(&self.silence_timeout_seconds) {
            return Err(invalid(
                "silence_timeout_seconds",
                "must be between 1 and 300",
            ));
        }
        check_chain("engines.stt", &self.engines.stt)?;
        check_chain("engines.llm", &self.engines.llm)?;
        check_chain("engines.tts", &self.engines.tts)?;
        if let Some(u) = &self.engines.llm_base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid("engines.llm_base_url", "must be an http(s) URL"));
            }
        }
        if let Some(m) = self.engines.max_tokens {
            if !(1..=8192).contains(&m) {
                return Err(invalid("engines.max_tokens", "must be between 1 and 8192"));
            }
        }
        if let Some(ms) = self.turn.end_of_turn_silence_ms {
            if !(100..=5000).contains(&ms) {
                return Err(invalid(
                    "turn.end_of_turn_silence_ms",
                    "must be between 100 and 5000",
                ));
            }
        }
        if let Some(ms) = self.turn.min_interruption_ms {
            if ms > 5000 {
                return Err(invalid("turn.min_interruption_ms", "must be at most 5000"));
            }
        }
        let mut names = HashSet::new();
        for (i, intent) in self.intents.iter().enumerate() {
            let key = |k: &str| format!("intents[{i}].{k}");
            if !is_name(&intent.name) {
                return Err(invalid(key("name"), "use 1-64 letters, digits, `_` or `-`"));
            }
            if !names.insert(intent.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is used by another intent", intent.name),
                ));
            }
            if intent.examples.is_empty() {
                return Err(invalid(key("examples"), "needs at least one phrase"));
            }
            for (j, ex) in intent.examples.iter().enumerate() {
                check_text(&format!("intents[{i}].examples[{j}]"), ex, 500, true)?;
            }
            check_text(&key("reply"), &intent.reply, MAX_TEXT, true)?;
            check_template(&key("reply"), &intent.reply, &intent.slots)?;
            let mut slot_names = HashSet::new();
            for (j, slot) in intent.slots.iter().enumerate() {
                let k = format!("intents[{i}].slots[{j}]");
                if !is_name(&slot.name) || slot.name == "agent" {
                    return Err(invalid(
                        format!("{k}.name"),
                        "use 1-64 letters, digits, `_` or `-` (not `agent`)",
                    ));
                }
                if !slot_names.insert(slot.name.as_str()) {
                    return Err(invalid(format!("{k}.name"), "used twice"));
                }
                check_text(&format!("{k}.prompt"), &slot.prompt, MAX_TEXT, true)?;
            }
            match (intent.action, &intent.transfer_to) {
                (IntentAction::Transfer, None) => {
                    return Err(invalid(
                        key("transfer_to"),
                        "is required when action = \"transfer\"",
                    ))
                }
                (IntentAction::Transfer, Some(t)) => {
                    let lower = t.to_ascii_lowercase();
                    let scheme_ok = lower.starts_with("sip:")
                        || lower.starts_with("sips:")
                        || lower.starts_with("tel:");
                    if !scheme_ok || t.len() < 6 || t.chars().any(char::is_whitespace) {
                        return Err(invalid(key("transfer_to"), "must be a sip: or tel: URI"));
                    }
                }
                (_, Some(_)) => {
                    return Err(invalid(
                        key("transfer_to"),
                        "only applies to action = \"transfer\"",
                    ))
                }
                (_, None) => {}
            }
        }
        for (k, intent) in &self.dtmf {
            let key_ok = k.len() == 1
                && k.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'));
            if !key_ok {
                return Err(invalid(
                    format!("dtmf.{k}"),
                    "keys are single characters 0-9, *, #, A-D",
                ));
            }
            if !names.contains(intent.as_str()) {
                return Err(invalid(
                    format!("dtmf.{k}"),
                    format!("names intent `{intent}`, which is not defined"),
                ));
            }
        }
        let mut tool_names = HashSet::new();
        for (i, tool) in self.tools.iter().enumerate() {
            let key = |k: &str| format!("tools[{i}].{k}");
            if !is_name(&tool.name) {
                return Err(invalid(key("name"), "use 1-64 letters, digits, `_` or `-`"));
            }
            if !tool_names.insert(tool.name.as_str()) {
                return Err(invalid(key("name"), "used twice"));
            }
            check_text(&key("description"), &tool.description, 1024, true)?;
            let url_ok = (tool.url.starts_with("https://") || tool.url.starts_with("http://"))
                && url_host_present(&tool.url);
            if !url_ok {
                return Err(invalid(key("url"), "must be an http(s) URL with a host"));
            }
            if !(1..=30_000).contains(&tool.timeout_ms) {
                return Err(invalid(key("timeout_ms"), "must be between 1 and 30000"));
            }
            if tool.parameters.get("type").and_then(|t| t.as_str()) != Some("object") {
                return Err(invalid(
                    key("parameters"),
                    "must be a JSON Schema with type = \"object\"",
                ));
            }
        }
        for (i, p) in self.phrases.iter().enumerate() {
            check_text(&format!("phrases[{i}]"), p, 500, true)?;
        }
        Ok(())
    }

    /// The preset's settings with this agent's overrides, and its engine chains. A chain not
    /// given is the preset's engine followed by the embedded one.
    pub fn resolve(&self) -> ResolvedAgent {
        let mut settings = self.preset.settings();
        let e = &self.engines;
        let stt_chain = e.stt.as_ref().map_or_else(
            || dedup(vec![settings.stt.engine, SttEngine::Embedded]),
            Chain::to_vec,
        );
        let llm_chain = e.llm.as_ref().map_or_else(
            || dedup(vec![settings.llm.engine, LlmEngine::Embedded]),
            Chain::to_vec,
        );
        let tts_chain = e.tts.as_ref().map_or_else(
            || dedup(vec![settings.tts.engine, TtsEngine::Embedded]),
            Chain::to_vec,
        );
        if let Some(m) = &e.stt_model {
            settings.stt.model.clone_from(m);
        }
        if let Some(m) = &e.llm_model {
            settings.llm.model.clone_from(m);
        }
        if let Some(m) = &e.tts_model {
            settings.tts.model.clone_from(m);
        }
        if let Some(m) = e.max_tokens {
            settings.llm.max_tokens = m;
        }
        if settings.tts.voice.is_none() {
            settings.tts.voice.clone_from(&self.voice);
        }
        let t = &self.turn;
        settings.turn = TurnSettings {
            end_of_turn_silence_ms: t
                .end_of_turn_silence_ms
                .unwrap_or(settings.turn.end_of_turn_silence_ms),
            min_interruption_ms: t
                .min_interruption_ms
                .unwrap_or(settings.turn.min_interruption_ms),
            min_interruption_words: t
                .min_interruption_words
                .unwrap_or(settings.turn.min_interruption_words),
        };
        ResolvedAgent {
            spec: self.clone(),
            settings,
            stt_chain,
            llm_chain,
            tts_chain,
        }
    }

    /// Every phrase the agent expects to hear: intents' examples, extra phrases, and the
    /// yes/no and digit words slots need.
    pub fn expected_phrases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |p: &str| {
            let p = p.trim().to_lowercase();
            if !p.is_empty() && !out.contains(&p) {
                out.push(p);
            }
        };
        for i in &self.intents {
            for e in &i.examples {
                push(e);
            }
        }
        for p in &self.phrases {
            push(p);
        }
        for w in [
            "yes",
            "no",
            "yeah",
            "nope",
            "okay",
            "goodbye",
            "bye",
            "thank you",
        ] {
            push(w);
        }
        out
    }
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn url_host_present(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    !host.is_empty() && !host.starts_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "Test"
greeting = "Hello"
"#;

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = AgentSpec::parse(MINIMAL).unwrap();
        assert_eq!(s.language, "en-IN");
        assert_eq!(s.preset, Preset::Balanced);
        assert_eq!(s.max_call_seconds, 600);
        let r = s.resolve();
        assert_eq!(r.stt_chain, vec![SttEngine::Deepgram, SttEngine::Embedded]);
        assert_eq!(r.llm_chain, vec![LlmEngine::Anthropic, LlmEngine::Embedded]);
        assert_eq!(r.tts_chain, vec![TtsEngine::Cartesia, TtsEngine::Embedded]);
    }

    fn err(extra: &str) -> String {
        AgentSpec::parse(&format!("{MINIMAL}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn mistakes_name_their_key() {
        assert!(
            err("greting = \"x\"\n").contains("greting"),
            "{}",
            err("greting = \"x\"\n")
        );
        assert!(err("preset = \"fast\"\n").contains("fast"));
        assert!(err("max_call_seconds = 5\n").starts_with("max_call_seconds:"));
        let e = err("[[intents]]\nname = \"a\"\nexamples = []\nreply = \"r\"\n");
        assert_eq!(e, "intents[0].examples: needs at least one phrase");
        let e = err("[[intents]]\nname = \"a\"\nexamples = [\"x\"]\nreply = \"r {acct}\"\n");
        assert!(e.starts_with("intents[0].reply:"), "{e}");
        let e = err(
            "[[intents]]\nname = \"a\"\nexamples = [\"x\"]\nreply = \"r\"\naction = \"transfer\"\n",
        );
        assert!(e.starts_with("intents[0].transfer_to:"), "{e}");
        let e = err("[dtmf]\n\"1\" = \"nope\"\n");
        assert!(e.starts_with("dtmf.1:") && e.contains("nope"), "{e}");
        let e = err("[dtmf]\n\"12\" = \"x\"\n");
        assert!(e.starts_with("dtmf.12:"), "{e}");
        let e = err("[[tools]]\nname = \"t\"\ndescription = \"d\"\nurl = \"ftp://x\"\n");
        assert!(e.starts_with("tools[0].url:"), "{e}");
        let e = err("[engines]\nstt = [\"embedded\", \"embedded\"]\n");
        assert!(e.starts_with("engines.stt:"), "{e}");
        let e = err("[engines]\nllm = \"gpt\"\n");
        assert!(e.contains("engines") || e.contains("llm"), "{e}");
        let e = err("[turn]\nend_of_turn_silence_ms = 50\n");
        assert!(e.starts_with("turn.end_of_turn_silence_ms:"), "{e}");
        let e = AgentSpec::parse("name = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("greeting"), "{e}");
    }

    #[test]
    fn overrides_apply() {
        let s = AgentSpec::parse(&format!(
            "{MINIMAL}preset = \"cost_optimized\"\nvoice = \"en-gb\"\n[engines]\nstt = \"embedded\"\nllm = [\"openai\", \"embedded\"]\nllm_model = \"gpt-4o-mini\"\nmax_tokens = 99\n[turn]\nend_of_turn_silence_ms = 700\n"
        ))
        .unwrap();
        let r = s.resolve();
        assert_eq!(r.stt_chain, vec![SttEngine::Embedded]);
        assert_eq!(r.llm_chain, vec![LlmEngine::Openai, LlmEngine::Embedded]);
        assert_eq!(r.settings.llm.model, "gpt-4o-mini");
        assert_eq!(r.settings.llm.max_tokens, 99);
        assert_eq!(r.settings.turn.end_of_turn_silence_ms, 700);
        assert_eq!(r.settings.tts.voice.as_deref(), Some("en-gb"));
        assert_eq!(r.settings.stt.model, "nova-2");
        let s = AgentSpec::parse(&format!(
            "{MINIMAL}[engines]\ntts = [\"flite\", \"embedded\"]\n"
        ))
        .unwrap();
        assert_eq!(
            s.resolve().tts_chain,
            vec![TtsEngine::Flite, TtsEngine::Embedded]
        );
    }

    #[test]
    fn the_sample_agent_is_valid() {
        let text = include_str!("../../../agents/sample.toml");
        let s = AgentSpec::parse(text).unwrap();
        assert!(s
            .expected_phrases()
            .contains(&"i have a question about my bill".to_string()));
        assert!(!s.dtmf.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_text_never_panics(text in "\\PC{0,400}") {
            let _ = AgentSpec::parse(&text);
        }
    }
}
