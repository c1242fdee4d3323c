//! Cloud speech and dialogue engines (DESIGN.md §1, the media node's pipeline), behind the
//! pipeline's engine traits ([`crate::pipeline::engines`]):
//!
//! - [`deepgram`]: streaming STT over Deepgram's live WebSocket;
//! - [`anthropic`]: Claude through the Messages API (streaming, tools, prompt caching);
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint (streaming, tools);
//! - [`cartesia`], [`elevenlabs`]: streaming TTS over their WebSockets;
//! - [`fallback`]: chains of engines with circuit breakers, so a provider failing mid-call
//!   costs the caller nothing but a moment;
//! - [`from_env`]: the engines an agent can use, from the keys in the environment.
//!
//! Keys are [`ApiKey`]s: they print as `ApiKey(***)` and are scrubbed from every error
//! message built from a transport error. Every parser of provider bytes here is pure and
//! proptested; the tests in `media-node/tests/cloud_*.rs` run each adapter against a local
//! server speaking the provider's wire protocol.
//!
//! # Environment
//!
//! | variable | what |
//! |---|---|
//! | `DEEPGRAM_API_KEY`, `ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `CARTESIA_API_KEY`, `ELEVENLABS_API_KEY` | the keys; an engine without its key is skipped |
//! | `OPENAI_BASE_URL` | OpenAI-compatible endpoint (the agent's `engines.llm_base_url` wins); with a non-default URL no key is needed |
//! | `VAANI_DEEPGRAM_URL`, `VAANI_ANTHROPIC_URL`, `VAANI_CARTESIA_URL`, `VAANI_ELEVENLABS_URL` | base-URL overrides (proxies, tests) |
//! | `VAANI_CARTESIA_VOICE`, `VAANI_ELEVENLABS_VOICE` | default voice ids (when the agent's `voice` is not one) |
//! | `VAANI_CARTESIA_VERSION` | `Cartesia-Version` (default [`cartesia::DEFAULT_VERSION`]) |
//! | `VAANI_FALLBACK_FAILURES`, `VAANI_FALLBACK_COOLDOWN_MS`, `VAANI_LLM_FIRST_BYTE_MS`, `VAANI_TTS_FIRST_BYTE_MS`, `VAANI_STT_FINAL_TIMEOUT_MS` | [`FallbackConfig`] |

pub mod anthropic;
pub mod cartesia;
pub mod deepgram;
pub mod elevenlabs;
pub mod fallback;
pub mod llm;
pub mod net;
pub mod openai;
pub(crate) mod pcm;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

pub use fallback::{
    record_switches, EngineKind, EngineSwitch, FallbackConfig, LlmChain, SttChain, SwitchObserver,
    TtsChain,
};
pub use net::ApiKey;

use crate::agent::{self, ResolvedAgent};
use crate::pipeline::engines::{EngineError, Engines, LlmEngine, SttEngine, TtsEngine};

/// Log filter directives to append to any `EnvFilter`: `tungstenite` logs whole handshake
/// requests, headers and all (keys included), at TRACE level, so it is held at DEBUG.
pub const LOG_DIRECTIVES: &str = "tungstenite=debug";

/// The cloud engines an agent may use, built from configuration. An engine is `None`
/// when the agent's chains do not name it or its key is missing.
#[derive(Default)]
pub struct CloudEngines {
    pub deepgram: Option<Arc<deepgram::DeepgramStt>>,
    pub anthropic: Option<Arc<anthropic::AnthropicLlm>>,
    pub openai: Option<Arc<openai::OpenAiLlm>>,
    pub cartesia: Option<Arc<cartesia::CartesiaTts>>,
    pub elevenlabs: Option<Arc<elevenlabs::ElevenLabsTts>>,
}

impl std::fmt::Debug for CloudEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudEngines")
            .field("deepgram", &self.deepgram)
            .field("anthropic", &self.anthropic)
            .field("openai", &self.openai)
            .field("cartesia", &self.cartesia)
            .field("elevenlabs", &self.elevenlabs)
            .finish()
    }
}

/// The embedded (offline) engines that stand for `embedded` in an agent's chains.
#[derive(Clone, Default)]
pub struct Embedded {
    pub stt: Option<Arc<dyn SttEngine>>,
    pub llm: Option<Arc<dyn LlmEngine>>,
    pub tts: Option<Arc<dyn TtsEngine>>,
    /// Flite, for chains that name `flite`.
    pub flite: Option<Arc<dyn TtsEngine>>,
}

/// [`from_vars`] over the process environment.
pub fn from_env(agent: &ResolvedAgent) -> Result<CloudEngines, EngineError> {
    from_vars(agent, |name| std::env::var(name).ok())
}

fn config_error(var: &str, message: &str) -> EngineError {
    EngineError::fatal("config", format!("{var}: {message}"))
}

/// A URL from `var`, checked to start with one of `schemes`.
fn url_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    schemes: &[&str],
) -> Result<Option<String>, EngineError> {
    match var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        None => Ok(None),
        Some(v) if schemes.iter().any(|s| v.starts_with(s)) => Ok(Some(v)),
        Some(_) => Err(config_error(
            name,
            &format!("must start with {}", schemes.join(" or ")),
        )),
    }
}

fn ms_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> Result<Duration, EngineError> {
    match var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=600_000).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| config_error(name, "expected milliseconds between 1 and 600000")),
    }
}

impl FallbackConfig {
    /// The defaults with the `VAANI_FALLBACK_*` / `*_FIRST_BYTE_MS` overrides of `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, EngineError> {
        let d = FallbackConfig::default();
        let failure_threshold = match var("VAANI_FALLBACK_FAILURES") {
            None => d.failure_threshold,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| config_error("VAANI_FALLBACK_FAILURES", "expected 1 to 100"))?,
        };
        Ok(FallbackConfig {
            failure_threshold,
            cooldown: ms_var(&var, "VAANI_FALLBACK_COOLDOWN_MS", d.cooldown)?,
            llm_first_byte: ms_var(&var, "VAANI_LLM_FIRST_BYTE_MS", d.llm_first_byte)?,
            tts_first_byte: ms_var(&var, "VAANI_TTS_FIRST_BYTE_MS", d.tts_first_byte)?,
            stt_final_timeout: ms_var(&var, "VAANI_STT_FINAL_TIMEOUT_MS", d.stt_final_timeout)?,
        })
    }
}

/// The key in `name`, or `None` (logged, without any value) when it is unset.
fn key_var(var: &impl Fn(&str) -> Option<String>, name: &str, engine: &str) -> Option<ApiKey> {
    let key = var(name).and_then(ApiKey::new);
    if key.is_none() {
        tracing::info!(engine, variable = name, "no API key set: engine skipped");
    }
    key
}

/// The model for cloud engine `engine` of chain `chain`: the agent's explicit `*_model`
/// when this is the first cloud engine of its chain; else the preset's model when the preset
/// uses this engine; else the engine's default.
fn model_for<T: PartialEq + Copy>(
    engine: T,
    chain: &[T],
    is_cloud: impl Fn(T) -> bool,
    preset: (T, &str),
    explicit: Option<&String>,
    default: &str,
) -> String {
    let first_cloud = chain.iter().copied().find(|e| is_cloud(*e));
    match explicit {
        Some(m) if first_cloud == Some(engine) => m.clone(),
        _ if engine == preset.0 && !preset.1.is_empty() => preset.1.to_string(),
        _ => default.to_string(),
    }
}

/// Build the cloud engines `agent` names, reading keys and overrides through `var`.
pub fn from_vars(
    agent: &ResolvedAgent,
    var: impl Fn(&str) -> Option<String>,
) -> Result<CloudEngines, EngineError> {
    use agent::{LlmEngine as L, SttEngine as S, TtsEngine as T};
    let s = &agent.settings;
    let spec = &agent.spec;
    // The preset's own models (the resolved settings already carry the agent's overrides).
    let preset = spec.preset.settings();
    let mut out = CloudEngines::default();
    let ctx = llm::AgentContext::from_agent(agent);

    if agent.stt_chain.contains(&S::Deepgram) {
        let base = url_var(&var, "VAANI_DEEPGRAM_URL", &["ws://", "wss://"])?;
        if let Some(key) = key_var(&var, "DEEPGRAM_API_KEY", "deepgram") {
            let mut cfg = deepgram::DeepgramConfig::new(key);
            if let Some(b) = base {
                cfg.base_url = b;
            }
            if s.stt.engine == S::Deepgram && !s.stt.model.is_empty() {
                cfg.model.clone_from(&s.stt.model);
            }
            cfg.endpointing_ms = s.stt.endpointing_ms;
            out.deepgram = Some(Arc::new(deepgram::DeepgramStt::new(cfg)));
        }
    }

    let llm_cloud = |e: L| e != L::Embedded;
    if agent.llm_chain.contains(&L::Anthropic) {
        let base = url_var(&var, "VAANI_ANTHROPIC_URL", &["http://", "https://"])?;
        if let Some(key) = key_var(&var, "ANTHROPIC_API_KEY", "anthropic") {
            let mut cfg = anthropic::AnthropicConfig::new(key);
            if let Some(b) = base {
                cfg.base_url = b;
            }
            cfg.model = model_for(
                L::Anthropic,
                &agent.llm_chain,
                llm_cloud,
                (preset.llm.engine, preset.llm.model.as_str()),
                spec.engines.llm_model.as_ref(),
                anthropic::DEFAULT_MODEL,
            );
            cfg.max_tokens = s.llm.max_tokens;
            cfg.temperature = s.llm.temperature;
            cfg.prompt_caching = s.llm.prompt_caching;
            out.anthropic = Some(Arc::new(anthropic::AnthropicLlm::new(cfg, ctx.clone())?));
        }
    }

    if agent.llm_chain.contains(&L::Openai) {
        let env_base = url_var(&var, "OPENAI_BASE_URL", &["http://", "https://"])?;
        let base = spec.engines.llm_base_url.clone().or(env_base);
        let custom = base
            .as_deref()
            .is_some_and(|b| openai::DEFAULT_BASE_URL != b.trim_end_matches('/'));
        let key = var("OPENAI_API_KEY").and_then(ApiKey::new);
        if key.is_some() || custom {
            let mut cfg = openai::OpenAiConfig::new(key);
            if let Some(b) = base {
                cfg.base_url = b;
            }
            cfg.model = model_for(
                L::Openai,
                &agent.llm_chain,
                llm_cloud,
                (preset.llm.engine, preset.llm.model.as_str()),
                spec.engines.llm_model.as_ref(),
                openai::DEFAULT_MODEL,
            );
            cfg.max_tokens = s.llm.max_tokens;
            cfg.temperature = s.llm.temperature;
            out.openai = Some(Arc::new(openai::OpenAiLlm::new(cfg, ctx.clone())?));
        } else {
            tracing::info!(
                engine = "openai",
                variable = "OPENAI_API_KEY",
                "no API key set: engine skipped"
            );
        }
    }

    let tts_cloud = |e: T| !matches!(e, T::Embedded | T::Flite);
    let language = spec
        .language
        .split('-')
        .next()
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.is_empty());
    if agent.tts_chain.contains(&T::Cartesia) {
        let base = url_var(&var, "VAANI_CARTESIA_URL", &["ws://", "wss://"])?;
        if let Some(key) = key_var(&var, "CARTESIA_API_KEY", "cartesia") {
            let mut cfg = cartesia::CartesiaConfig::new(key);
            if let Some(b) = base {
                cfg.base_url = b;
            }
            if let Some(v) = var("VAANI_CARTESIA_VERSION").filter(|v| !v.trim().is_empty()) {
                cfg.version = v.trim().to_string();
            }
            if let Some(v) = var("VAANI_CARTESIA_VOICE").filter(|v| cartesia::is_voice_id(v.trim()))
            {
                cfg.default_voice = v.trim().to_string();
            }
            cfg.model = model_for(
                T::Cartesia,
                &agent.tts_chain,
                tts_cloud,
                (preset.tts.engine, preset.tts.model.as_str()),
                spec.engines.tts_model.as_ref(),
                cartesia::DEFAULT_MODEL,
            );
            cfg.language.clone_from(&language);
            out.cartesia = Some(Arc::new(cartesia::CartesiaTts::new(cfg)));
        }
    }

    if agent.tts_chain.contains(&T::ElevenLabs) {
        let base = url_var(&var, "VAANI_ELEVENLABS_URL", &["ws://", "wss://"])?;
        if let Some(key) = key_var(&var, "ELEVENLABS_API_KEY", "elevenlabs") {
            let mut cfg = elevenlabs::ElevenLabsConfig::new(key);
            if let Some(b) = base {
                cfg.base_url = b;
            }
            if let Some(v) =
                var("VAANI_ELEVENLABS_VOICE").filter(|v| elevenlabs::is_voice_id(v.trim()))
            {
                cfg.default_voice = v.trim().to_string();
            }
            cfg.model = model_for(
                T::ElevenLabs,
                &agent.tts_chain,
                tts_cloud,
                (preset.tts.engine, preset.tts.model.as_str()),
                spec.engines.tts_model.as_ref(),
                elevenlabs::DEFAULT_MODEL,
            );
            out.elevenlabs = Some(Arc::new(elevenlabs::ElevenLabsTts::new(cfg)));
        }
    }
    Ok(out)
}

/// One engine, or a chain of several; `None` when none is available.
fn chain_of<E: ?Sized>(
    engines: Vec<Arc<E>>,
    make: impl FnOnce(Vec<Arc<E>>) -> Arc<E>,
) -> Option<Arc<E>> {
    match engines.len() {
        0 => None,
        1 => engines.into_iter().next(),
        _ => Some(make(engines)),
    }
}

impl CloudEngines {
    /// The pipeline's engines for `agent`: each of its chains with the engines that are
    /// available (missing ones skipped), as a fallback chain when more than one is left.
    pub fn engines(
        &self,
        agent: &ResolvedAgent,
        embedded: &Embedded,
        cfg: FallbackConfig,
        observer: Option<SwitchObserver>,
    ) -> Result<Engines, EngineError> {
        use agent::{LlmEngine as L, SttEngine as S, TtsEngine as T};
        let stt: Vec<Arc<dyn SttEngine>> = agent
            .stt_chain
            .iter()
            .filter_map(|e| match e {
                S::Deepgram => self.deepgram.clone().map(|d| d as Arc<dyn SttEngine>),
                S::Embedded => embedded.stt.clone(),
            })
            .collect();
        let llm: Vec<Arc<dyn LlmEngine>> = agent
            .llm_chain
            .iter()
            .filter_map(|e| match e {
                L::Anthropic => self.anthropic.clone().map(|a| a as Arc<dyn LlmEngine>),
                L::Openai => self.openai.clone().map(|o| o as Arc<dyn LlmEngine>),
                L::Embedded => embedded.llm.clone(),
            })
            .collect();
        let tts: Vec<Arc<dyn TtsEngine>> = agent
            .tts_chain
            .iter()
            .filter_map(|e| match e {
                T::Cartesia => self.cartesia.clone().map(|c| c as Arc<dyn TtsEngine>),
                T::ElevenLabs => self.elevenlabs.clone().map(|c| c as Arc<dyn TtsEngine>),
                T::Embedded => embedded.tts.clone(),
                T::Flite => embedded.flite.clone(),
            })
            .collect();
        let obs = observer.clone();
        let stt = chain_of(stt, |v| {
            let c = SttChain::new(v, cfg);
            Arc::new(match obs {
                Some(o) => c.with_observer(o),
                None => c,
            })
        })
        .ok_or_else(|| EngineError::fatal("config", "no STT engine available for this agent"))?;
        let obs = observer.clone();
        let llm = chain_of(llm, |v| {
            let c = LlmChain::new(v, cfg);
            Arc::new(match obs {
                Some(o) => c.with_observer(o),
                None => c,
            })
        })
        .ok_or_else(|| EngineError::fatal("config", "no LLM engine available for this agent"))?;
        let tts = chain_of(tts, |v| {
            let c = TtsChain::new(v, cfg);
            Arc::new(match observer {
                Some(o) => c.with_observer(o),
                None => c,
            })
        })
        .ok_or_else(|| EngineError::fatal("config", "no TTS engine available for this agent"))?;
        Ok(Engines { stt, llm, tts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentSpec;
    use std::collections::HashMap;

    fn agent(extra: &str) -> ResolvedAgent {
        AgentSpec::parse(&format!("name = \"t\"\ngreeting = \"Hello\"\n{extra}"))
            .unwrap()
            .resolve()
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn engines_without_keys_are_skipped() {
        let a = agent("preset = \"cost_optimized\"\n");
        let e = from_vars(&a, vars(&[("DEEPGRAM_API_KEY", "dg-secret")])).unwrap();
        assert!(e.deepgram.is_some() && e.anthropic.is_none() && e.cartesia.is_none());
        let d = e.deepgram.as_ref().unwrap().config();
        assert_eq!(d.model, "nova-2");
        let shown = format!("{e:?}");
        assert!(!shown.contains("dg-secret"), "{shown}");
        assert!(shown.contains("ApiKey(***)"));
    }

    #[test]
    fn models_follow_the_preset_and_overrides() {
        let a = agent(
            "preset = \"cost_optimized\"\n[engines]\nllm = [\"openai\", \"anthropic\", \"embedded\"]\nllm_model = \"gpt-4o-mini\"\ntts = [\"elevenlabs\", \"cartesia\"]\n",
        );
        let e = from_vars(
            &a,
            vars(&[
                ("ANTHROPIC_API_KEY", "a"),
                ("OPENAI_API_KEY", "o"),
                ("CARTESIA_API_KEY", "c"),
                ("ELEVENLABS_API_KEY", "e"),
                ("VAANI_CARTESIA_URL", "ws://127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert_eq!(e.openai.as_ref().unwrap().config().model, "gpt-4o-mini");
        // The preset's LLM is Anthropic: its model applies to Anthropic.
        assert_eq!(
            e.anthropic.as_ref().unwrap().config().model,
            "claude-3-5-haiku-latest"
        );
        assert_eq!(e.anthropic.as_ref().unwrap().config().max_tokens, 150);
        assert_eq!(e.cartesia.as_ref().unwrap().config().model, "sonic");
        assert_eq!(
            e.cartesia.as_ref().unwrap().config().base_url,
            "ws://127.0.0.1:9"
        );
        assert_eq!(
            e.cartesia.as_ref().unwrap().config().language.as_deref(),
            Some("en")
        );
        assert_eq!(
            e.elevenlabs.as_ref().unwrap().config().model,
            elevenlabs::DEFAULT_MODEL
        );
    }

    #[test]
    fn local_openai_servers_need_no_key() {
        let a = agent("[engines]\nllm = \"openai\"\nllm_base_url = \"http://127.0.0.1:8000/v1\"\n");
        let e = from_vars(&a, vars(&[])).unwrap();
        let o = e.openai.unwrap();
        assert!(o.config().api_key.is_none());
        assert_eq!(o.config().base_url, "http://127.0.0.1:8000/v1");
        let e = from_vars(&agent("[engines]\nllm = \"openai\"\n"), vars(&[])).unwrap();
        assert!(e.openai.is_none());
    }

    #[test]
    fn bad_overrides_name_their_variable() {
        let a = agent("");
        let err = from_vars(&a, vars(&[("VAANI_DEEPGRAM_URL", "https://x")])).unwrap_err();
        assert!(err.message.starts_with("VAANI_DEEPGRAM_URL:"), "{err}");
        let err =
            FallbackConfig::from_vars(vars(&[("VAANI_TTS_FIRST_BYTE_MS", "soon")])).unwrap_err();
        assert!(err.message.starts_with("VAANI_TTS_FIRST_BYTE_MS:"), "{err}");
        let c = FallbackConfig::from_vars(vars(&[("VAANI_FALLBACK_FAILURES", "5")])).unwrap();
        assert_eq!(c.failure_threshold, 5);
    }

    #[test]
    fn chains_use_what_is_available() {
        let a = agent("preset = \"cost_optimized\"\n");
        let cloud = from_vars(&a, vars(&[("DEEPGRAM_API_KEY", "k")])).unwrap();
        assert!(cloud
            .engines(&a, &Embedded::default(), FallbackConfig::default(), None)
            .is_err());
        let embedded = Embedded {
            stt: Some(Arc::new(crate::pipeline::fake::FakeStt::new(
                Duration::ZERO,
                &[],
            ))),
            llm: Some(Arc::new(crate::pipeline::dialogue::EmbeddedLlm::new(
                a.spec.clone(),
            ))),
            tts: Some(Arc::new(crate::pipeline::fake::FakeTts {
                first_byte: Duration::ZERO,
                ms_per_char: 1,
                log: None,
            })),
            flite: None,
        };
        let e = cloud
            .engines(&a, &embedded, FallbackConfig::default(), None)
            .unwrap();
        // Deepgram has a key: a chain led by it; the others are the embedded engines alone.
        assert_eq!(e.stt.name(), "deepgram");
        assert_eq!(e.llm.name(), "embedded");
        assert_eq!(e.tts.name(), "fake");
    }
}
