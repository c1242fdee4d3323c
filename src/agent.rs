//! The agent `vaani dev` answers with: its spec, its engines (offline ones unless cloud keys
//! are configured) and the pipeline app that runs it on every call.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use vaani_media::agent::AgentSpec;
use vaani_media::pipeline::apps::PipelineApp;
use vaani_media::pipeline::cache::CachedTts;
use vaani_media::pipeline::call::{CallReport, PipelineConfig};
use vaani_media::pipeline::dialogue::EmbeddedLlm;
use vaani_media::pipeline::embedded::{EmbeddedFlite, EmbeddedStt, EmbeddedTts, WebrtcVad};
use vaani_media::pipeline::engines::Engines;
use vaani_media::services::vad::VadMode;

/// The sample agent, built in so `vaani dev` works from any directory.
pub const SAMPLE_AGENT: &str = include_str!("../agents/sample.toml");

/// Synthesised phrases kept per node.
const PHRASE_CACHE: usize = 256;

pub fn load_spec(path: Option<&Path>) -> anyhow::Result<AgentSpec> {
    match path {
        Some(p) => AgentSpec::load(p).map_err(|e| anyhow::anyhow!("agent spec: {e}")),
        None => AgentSpec::parse(SAMPLE_AGENT).map_err(|e| anyhow::anyhow!("sample agent: {e}")),
    }
}

/// The pipeline app for the agent in `path` (or the sample agent), and where its calls'
/// reports arrive.
pub async fn build(
    path: Option<&Path>,
) -> anyhow::Result<(Arc<PipelineApp>, mpsc::UnboundedReceiver<CallReport>)> {
    let spec = load_spec(path)?;
    let resolved = spec.resolve();
    let stt =
        EmbeddedStt::load().context("offline speech recogniser (install pocketsphinx-en-us)")?;
    let phrases = spec.expected_phrases();
    stt.prewarm(&phrases, 2)
        .context("compiling the agent's phrases into a grammar")?;
    let voice = spec.voice.clone().unwrap_or_else(|| "en-us".to_string());
    let espeak = EmbeddedTts::new(&voice, vaani_media::services::tts::espeak::DEFAULT_RATE_WPM)
        .context("offline speech synthesiser (install espeak-ng)")?;
    // Cloud engines where their keys are set (DEEPGRAM_API_KEY, ANTHROPIC_API_KEY, …), in the
    // agent's fallback chains, with the offline engines where the chains name them.
    let cloud = vaani_media::cloud::from_env(&resolved)
        .map_err(|e| anyhow::anyhow!("cloud engine settings: {e}"))?;
    let fallback = vaani_media::cloud::FallbackConfig::from_vars(|n| std::env::var(n).ok())
        .map_err(|e| anyhow::anyhow!("fallback settings: {e}"))?;
    let engines = cloud
        .engines(
            &resolved,
            &vaani_media::cloud::Embedded {
                stt: Some(Arc::new(stt)),
                llm: Some(Arc::new(EmbeddedLlm::new(spec.clone()))),
                tts: Some(Arc::new(espeak)),
                flite: if resolved
                    .tts_chain
                    .contains(&vaani_media::agent::TtsEngine::Flite)
                {
                    Some(Arc::new(
                        EmbeddedFlite::new().context("Flite (install flite1-dev)")?,
                    ))
                } else {
                    None
                },
            },
            fallback,
            None,
        )
        .map_err(|e| anyhow::anyhow!("agent {:?}: {e}", spec.name))?;
    let tts = CachedTts::new(engines.tts.clone(), PHRASE_CACHE);
    // Greeting prefetch, and the fixed phrases every call may need.
    let mut fixed = vec![
        spec.greeting.clone(),
        spec.fallback_reply.clone(),
        "Are you still there?".to_string(),
    ];
    for i in &spec.intents {
        if !i.reply.contains('{') {
            fixed.push(i.reply.clone());
        }
        fixed.extend(i.slots.iter().map(|s| s.prompt.clone()));
    }
    let mut sentences = Vec::new();
    for text in fixed {
        let mut s = vaani_media::pipeline::sentences::SentenceSplitter::new();
        sentences.extend(s.push(&text));
        sentences.extend(s.finish());
    }
    tts.prefetch(&sentences, resolved.settings.tts.voice.as_deref())
        .await
        .context("synthesising the greeting")?;
    let (tx, rx) = mpsc::unbounded_channel();
    let config = PipelineConfig {
        engines: Engines {
            stt: engines.stt.clone(),
            llm: engines.llm.clone(),
            tts: Arc::new(tts),
        },
        agent: Arc::new(resolved),
        vad: Arc::new(|| Box::new(WebrtcVad::new(VadMode::Aggressive))),
        reports: Some(tx),
        runtime: tokio::runtime::Handle::current(),
    };
    tracing::info!(
        agent = %spec.name,
        stt = engines.stt.name(),
        llm = engines.llm.name(),
        tts = engines.tts.name(),
        "agent ready"
    );
    Ok((Arc::new(PipelineApp { config }), rx))
}
