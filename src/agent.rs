//! The agents `vaani dev` answers with: each one's spec, its engines (offline ones unless
//! cloud keys are configured) and the pipeline app that runs it; the default agent answers
//! every call that names none ([`AgentSet`]).

use std::collections::HashMap;
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
use vaani_media::server::{CallHandler, MediaApp};
use vaani_media::services::vad::VadMode;
use vaani_media::sipnode::app::{CallInfo, SipApp, SipCall};
use vaani_media::streams::StartInfo;

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

/// The node's agents: the default one, and more by id, each shared by every tenant
/// (`DIR/ID.toml`) or one tenant's own (`DIR/TENANT/ID.toml`, which wins for that tenant's
/// calls). A call names its agent with `X-Vaani-Agent` (or its trunk's `agent`); media streams
/// and browser calls get the default.
pub struct AgentSet {
    default: Arc<PipelineApp>,
    shared: HashMap<String, Arc<PipelineApp>>,
    by_tenant: HashMap<(String, String), Arc<PipelineApp>>,
}

impl AgentSet {
    fn find(&self, tenant: Option<&str>, id: &str) -> Option<&Arc<PipelineApp>> {
        tenant
            .and_then(|t| self.by_tenant.get(&(t.to_string(), id.to_string())))
            .or_else(|| self.shared.get(id))
    }

    /// The agent for a call (the default when it names none).
    fn pick(&self, tenant: Option<&str>, agent: Option<&str>) -> &Arc<PipelineApp> {
        agent
            .and_then(|id| self.find(tenant, id))
            .unwrap_or(&self.default)
    }
}

impl SipApp for AgentSet {
    fn start(&self, info: &CallInfo) -> Box<dyn SipCall> {
        SipApp::start(
            self.pick(info.tenant.as_deref(), info.agent.as_deref())
                .as_ref(),
            info,
        )
    }

    fn has_agent(&self, tenant: Option<&str>, agent: &str) -> bool {
        self.find(tenant, agent).is_some()
    }
}

impl MediaApp for AgentSet {
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler> {
        MediaApp::start(self.default.as_ref(), info)
    }
}

/// The default agent (`path`, or the sample agent) and those in `agents_dir`, and where all
/// their calls' reports arrive.
pub async fn build_set(
    path: Option<&Path>,
    agents_dir: Option<&Path>,
) -> anyhow::Result<(Arc<AgentSet>, mpsc::UnboundedReceiver<CallReport>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let default = build(load_spec(path)?, tx.clone()).await?;
    let mut set = AgentSet {
        default,
        shared: HashMap::new(),
        by_tenant: HashMap::new(),
    };
    if let Some(dir) = agents_dir {
        for (tenant, id, file) in agent_files(dir)? {
            let spec = AgentSpec::load(&file)
                .map_err(|e| anyhow::anyhow!("agent {}: {e}", file.display()))?;
            let app = build(spec, tx.clone()).await?;
            tracing::info!(agent = %id, tenant = tenant.as_deref().unwrap_or("*"), "agent loaded");
            match tenant {
                Some(t) => set.by_tenant.insert((t, id), app),
                None => set.shared.insert(id, app),
            };
        }
    }
    Ok((Arc::new(set), rx))
}

/// `DIR/ID.toml` (shared) and `DIR/TENANT/ID.toml` (a tenant's), sorted; anything else in
/// `DIR` that looks like an agent but has a bad name is an error, not skipped silently.
fn agent_files(dir: &Path) -> anyhow::Result<Vec<(Option<String>, String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    let read = |d: &Path| -> anyhow::Result<Vec<std::path::PathBuf>> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .with_context(|| format!("reading --agents {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let stem_id = |p: &Path| -> anyhow::Result<String> {
        let id = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !vaani_media::sipnode::admission::valid_agent_id(&id) {
            anyhow::bail!(
                "{}: an agent file's name is its id: 1-64 of A-Z a-z 0-9 - _",
                p.display()
            );
        }
        Ok(id)
    };
    for path in read(dir)? {
        if path.is_dir() {
            let tenant = path
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if !vaani_core::tenant::valid_id(&tenant) {
                anyhow::bail!("{}: not a tenant id", path.display());
            }
            for file in read(&path)? {
                if file.extension().is_some_and(|e| e == "toml") {
                    out.push((Some(tenant.clone()), stem_id(&file)?, file));
                }
            }
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push((None, stem_id(&path)?, path));
        }
    }
    Ok(out)
}

/// The pipeline app for `spec`, its calls' reports sent to `reports`.
async fn build(
    spec: AgentSpec,
    reports: mpsc::UnboundedSender<CallReport>,
) -> anyhow::Result<Arc<PipelineApp>> {
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
    let config = PipelineConfig {
        engines: Engines {
            stt: engines.stt.clone(),
            llm: engines.llm.clone(),
            tts: Arc::new(tts),
        },
        agent: Arc::new(resolved),
        vad: Arc::new(|| Box::new(WebrtcVad::new(VadMode::Aggressive))),
        reports: Some(reports),
        runtime: tokio::runtime::Handle::current(),
    };
    tracing::info!(
        agent = %spec.name,
        stt = engines.stt.name(),
        llm = engines.llm.name(),
        tts = engines.tts.name(),
        "agent ready"
    );
    Ok(Arc::new(PipelineApp { config }))
}
