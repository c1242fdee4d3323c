//! `vaani call`: a test caller that is also a user feature. It places a real SIP call from
//! its own small SIP node, waits for the agent to finish speaking, says each `--say` line
//! with speech synthesis (or presses each `--dtmf` key), transcribes what the agent says with
//! the offline recogniser, hangs up, and prints the conversation with per-turn latencies (end
//! of the caller's speech → the agent's first audio, as heard at the caller).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vaani_media::codec::PcmFrame;
use vaani_media::metrics::Metrics;
use vaani_media::services::stt::{Grammar, SphinxModel, SphinxStream};
use vaani_media::services::tts::EspeakTts;
use vaani_media::services::vad::{Vad, VadMode};
use vaani_media::sipnode::admission::AdmissionPolicy;
use vaani_media::sipnode::app::{AppAction, CallInfo, SipApp, SipCall};
use vaani_media::sipnode::outbound::DialRequest;
use vaani_media::sipnode::registry::CallRegistry;
use vaani_media::sipnode::trunks::{Trunk, Trunks};
use vaani_media::sipnode::{SipNode, SipNodeConfig};

use crate::cli::CallArgs;

/// One step of the caller's script, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Say(String),
    /// Say this over the agent's next reply, [`INTERRUPT_AFTER`] into it (barge-in).
    Interrupt(String),
    /// Keys pressed one after another (one `--dtmf` value).
    Dtmf(String),
}

/// How far into the agent's reply an `--interrupt` line starts.
const INTERRUPT_AFTER: Duration = Duration::from_millis(1500);

/// The script from the raw arguments, keeping the order of `--say` and `--dtmf`.
pub fn script_from_args(args: &[String]) -> anyhow::Result<Vec<Step>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if flag != "--say" && flag != "--dtmf" && flag != "--interrupt" {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))?,
        };
        if flag == "--say" || flag == "--interrupt" {
            if value.trim().is_empty() {
                anyhow::bail!("{flag} needs some words");
            }
            out.push(if flag == "--say" {
                Step::Say(value)
            } else {
                Step::Interrupt(value)
            });
        } else {
            if value.is_empty() {
                anyhow::bail!("--dtmf needs keys");
            }
            for key in value.chars() {
                if !(key.is_ascii_digit() || matches!(key, '*' | '#' | 'A'..='D')) {
                    anyhow::bail!("--dtmf keys are 0-9, *, #, A-D (got {key:?})");
                }
            }
            out.push(Step::Dtmf(value));
        }
    }
    Ok(out)
}

/// One line of the conversation, as the caller experienced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub speaker: &'static str,
    pub text: String,
    /// From the start of the call (answer), in ms.
    pub started_ms: u64,
    /// For agent turns: end of the caller's speech (or key press) → the agent's first audio.
    pub latency_ms: Option<u64>,
}

#[derive(Default)]
struct Shared {
    turns: Vec<Turn>,
    done: bool,
    /// The call's app is gone: its last turn is in.
    finished: bool,
    error: Option<String>,
}

/// Silence after the agent's speech that means it has finished its turn.
const AGENT_PAUSE: Duration = Duration::from_millis(900);
/// Samples at or below this level after a line's speech are trailing silence.
const TRAILING_SILENCE_LEVEL: u16 = 300;

/// How long to wait for the agent to say anything before going on.
const AGENT_SILENT_LIMIT: Duration = Duration::from_secs(15);

struct CallerApp {
    script: Vec<Step>,
    /// Synthesised audio of each `Say` step (same order).
    speech: Vec<Vec<i16>>,
    model: SphinxModel,
    grammar: Option<Grammar>,
    pause: Duration,
    shared: Arc<Mutex<Shared>>,
}

enum Phase {
    /// Waiting for (or listening to) the agent.
    Listening,
    Speaking(VecDeque<PcmFrame>),
    Done,
}

struct CallerCall {
    script: VecDeque<Step>,
    speech: VecDeque<Vec<i16>>,
    vad: Vad,
    stt: Option<SphinxStream>,
    pause: Duration,
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    phase: Phase,
    listening_since: Instant,
    agent_start: Option<Instant>,
    last_voiced: Instant,
    /// When the caller's last line (or key) ended.
    caller_end: Option<Instant>,
}

impl SipApp for CallerApp {
    fn start(&self, _info: &CallInfo) -> Box<dyn SipCall> {
        let stt = match self.model.stream(self.grammar.as_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.with(|s| s.error = Some(format!("speech recogniser: {e}")));
                None
            }
        };
        let now = Instant::now();
        Box::new(CallerCall {
            script: self.script.clone().into(),
            speech: self.speech.clone().into(),
            vad: Vad::new(VadMode::Aggressive),
            stt,
            pause: self.pause,
            shared: self.shared.clone(),
            started: now,
            phase: Phase::Listening,
            listening_since: now,
            agent_start: None,
            last_voiced: now,
            caller_end: None,
        })
    }
}

impl CallerApp {
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        let mut g = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CallerCall {
    fn push_turn(&self, turn: Turn) {
        let mut g = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.turns.push(turn);
    }

    /// The agent finished (or never started) a turn: say or key the next step, or hang up.
    fn next_step(&mut self, now: Instant, actions: &mut Vec<AppAction>) {
        match self.script.pop_front() {
            Some(Step::Say(text) | Step::Interrupt(text)) => {
                let pcm = self.speech.pop_front().unwrap_or_default();
                let mut frames = VecDeque::new();
                for chunk in pcm.chunks(vaani_media::codec::FRAME_SAMPLES) {
                    let mut f = PcmFrame::silence();
                    f.samples[..chunk.len()].copy_from_slice(chunk);
                    frames.push_back(f);
                }
                self.push_turn(Turn {
                    speaker: "caller",
                    text,
                    started_ms: ms(now.saturating_duration_since(self.started)),
                    latency_ms: None,
                });
                self.phase = Phase::Speaking(frames);
            }
            Some(Step::Dtmf(keys)) => {
                // The session sends queued presses one after another.
                for key in keys.chars() {
                    actions.push(AppAction::SendDtmf(key));
                }
                self.push_turn(Turn {
                    speaker: "caller",
                    text: format!("[dtmf {keys}]"),
                    started_ms: ms(now.saturating_duration_since(self.started)),
                    latency_ms: None,
                });
                self.caller_end = Some(now);
                self.listen(now);
            }
            None => {
                actions.push(AppAction::Hangup("caller finished".into()));
                self.phase = Phase::Done;
                let mut g = self
                    .shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                g.done = true;
            }
        }
    }

    /// The agent's turn that began at `start` is over: transcribe it and keep it.
    fn agent_turn_heard(&mut self, start: Instant) {
        let text = match self.stt.as_mut().map(|s| s.finish()) {
            Some(Ok(Some(r))) => r.text,
            _ => String::new(),
        };
        let latency = self
            .caller_end
            .map(|end| ms(start.saturating_duration_since(end)));
        self.push_turn(Turn {
            speaker: "agent",
            text,
            started_ms: ms(start.saturating_duration_since(self.started)),
            latency_ms: latency,
        });
    }

    fn listen(&mut self, now: Instant) {
        self.phase = Phase::Listening;
        self.listening_since = now;
        self.agent_start = None;
    }
}

impl SipCall for CallerCall {
    fn on_audio(&mut self, frame: &PcmFrame, actions: &mut Vec<AppAction>) {
        let now = Instant::now();
        match &mut self.phase {
            Phase::Done => {}
            Phase::Speaking(frames) => {
                if let Some(f) = frames.pop_front() {
                    actions.push(AppAction::Play(f));
                }
                if frames.is_empty() {
                    // The last frame is queued; it plays within a tick.
                    self.caller_end = Some(now + Duration::from_millis(20));
                    self.listen(now);
                }
            }
            Phase::Listening => {
                let voiced = self.vad.is_speech(&frame.samples);
                if voiced {
                    if self.agent_start.is_none() {
                        self.agent_start = Some(now);
                    }
                    self.last_voiced = now;
                }
                if self.agent_start.is_some() {
                    if let Some(stt) = self.stt.as_mut() {
                        let _ = stt.push(&frame.samples);
                    }
                }
                let barge_in = matches!(self.script.front(), Some(Step::Interrupt(_)))
                    && self
                        .agent_start
                        .is_some_and(|s| now.saturating_duration_since(s) >= INTERRUPT_AFTER);
                let agent_done = barge_in
                    || self.agent_start.is_some_and(|_| {
                        now.saturating_duration_since(self.last_voiced) >= self.pause
                    });
                let agent_silent = self.agent_start.is_none()
                    && now.saturating_duration_since(self.listening_since) >= AGENT_SILENT_LIMIT;
                if agent_done {
                    self.agent_turn_heard(self.agent_start.unwrap_or(now));
                    self.next_step(now, actions);
                } else if agent_silent {
                    self.push_turn(Turn {
                        speaker: "agent",
                        text: String::new(),
                        started_ms: ms(now.saturating_duration_since(self.started)),
                        latency_ms: None,
                    });
                    self.next_step(now, actions);
                }
            }
        }
    }

    fn on_dtmf(&mut self, _digit: char, _actions: &mut Vec<AppAction>) {}
}

impl Drop for CallerCall {
    /// The call ended while the agent was talking (it said goodbye and hung up): keep what
    /// it said.
    fn drop(&mut self) {
        if let (Phase::Listening, Some(start)) = (&self.phase, self.agent_start) {
            self.agent_turn_heard(start);
        }
        let mut g = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every step was taken (the agent may have hung up first, after a goodbye).
        g.done |= self.script.is_empty();
        g.finished = true;
    }
}

/// Every line the agent in `spec` may say, whole and sentence by sentence: the recogniser's
/// grammar for transcribing it.
fn agent_lines(spec: &vaani_media::agent::AgentSpec) -> Vec<String> {
    let mut lines = vec![
        spec.greeting.clone(),
        spec.fallback_reply.clone(),
        "Are you still there?".to_string(),
        "I have not heard anything, so I will end the call now. Goodbye!".to_string(),
    ];
    for i in &spec.intents {
        // Template fields (slot values) are not known ahead: leave them out.
        let mut reply = String::new();
        let mut rest = i.reply.as_str();
        while let Some(open) = rest.find('{') {
            reply.push_str(&rest[..open]);
            rest = rest[open..].split_once('}').map_or("", |(_, r)| r);
        }
        reply.push_str(rest);
        lines.push(reply);
        lines.extend(i.slots.iter().map(|s| s.prompt.clone()));
    }
    let mut out = Vec::new();
    for line in lines {
        let mut split = vaani_media::pipeline::sentences::SentenceSplitter::new();
        let mut parts = split.push(&line);
        parts.extend(split.finish());
        if parts.len() > 1 {
            out.push(line.clone());
        }
        out.extend(parts);
    }
    out.sort();
    out.dedup();
    out
}

pub async fn run(a: CallArgs) -> anyhow::Result<ExitCode> {
    let raw: Vec<String> = std::env::args().collect();
    let script = script_from_args(&raw)?;
    let data = a.data.dir();
    // Where to call, and the call context when it is our own dev node.
    let (target, mut headers, call_id) = if a.target == "dev" {
        let info_path = data.join(crate::dev::DEV_INFO_FILE);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&info_path).with_context(|| {
                format!(
                    "no running vaani dev found ({} missing)",
                    info_path.display()
                )
            })?)
            .with_context(|| format!("reading {}", info_path.display()))?;
        let sip: SocketAddr = info["sip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} has no SIP address", info_path.display()))?;
        let key = crate::local::existing_media_token_key(&data)?;
        let call_id = format!("call-{}", hex::encode(crate::local::random_bytes(8)?));
        let token = vaani_core::token::issue(&key, &a.tenant, &call_id, chrono::Utc::now(), 300);
        (
            format!("sip:agent@{sip}"),
            vec![
                ("X-Vaani-Tenant".to_string(), a.tenant.clone()),
                ("X-Vaani-Call-Id".to_string(), call_id.clone()),
                ("X-Vaani-Token".to_string(), token),
            ],
            Some(call_id),
        )
    } else {
        (a.target.clone(), Vec::new(), None)
    };
    if let Some(agent) = &a.agent_id {
        if !vaani_media::sipnode::admission::valid_agent_id(agent) {
            anyhow::bail!("--agent-id must be 1-64 of A-Z a-z 0-9 - _");
        }
        headers.push((
            vaani_media::sipnode::admission::AGENT_HEADER.to_string(),
            agent.clone(),
        ));
    }

    // Speech: the caller's lines synthesised ahead, the agent's lines as the grammar.
    let tts = EspeakTts::new(
        &a.voice,
        vaani_media::services::tts::espeak::DEFAULT_RATE_WPM,
    )
    .context("speech synthesiser (install espeak-ng)")?;
    let mut speech = Vec::new();
    for step in &script {
        if let Step::Say(text) | Step::Interrupt(text) = step {
            let mut pcm = vec![0i16; 1600]; // 100 ms lead-in
            pcm.extend(
                tts.synthesize(text)
                    .with_context(|| format!("synthesising {text:?}"))?,
            );
            // The synthesiser's trailing silence would count as speaking time: end the line
            // 40 ms after its last audible sample, so latencies start at the real end.
            let last = pcm
                .iter()
                .rposition(|s| s.unsigned_abs() > TRAILING_SILENCE_LEVEL);
            pcm.truncate(last.map_or(pcm.len(), |i| (i + 641).min(pcm.len())));
            speech.push(pcm);
        }
    }
    let model = tokio::task::spawn_blocking(SphinxModel::load_default)
        .await?
        .context("speech recogniser (install pocketsphinx-en-us)")?;
    let spec = crate::agent::load_spec(a.agent.as_deref())?;
    let grammar = if a.open_vocabulary {
        None
    } else {
        Some(Grammar::from_phrases(&model, &agent_lines(&spec)).context("agent grammar")?)
    };
    let shared = Arc::new(Mutex::new(Shared::default()));
    let app = Arc::new(CallerApp {
        script,
        speech,
        model,
        grammar,
        pause: AGENT_PAUSE,
        shared: shared.clone(),
    });

    let registry = CallRegistry::default();
    let node = SipNode::start(SipNodeConfig {
        bind: a.sip,
        media_address: a.sip.ip(),
        rtp_ports: a.rtp_ports,
        trunks: Trunks::new(vec![Trunk {
            name: "loopback".into(),
            allow: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
            auth: None,
            tenant: None,
            agent: None,
        }])?,
        admission: AdmissionPolicy {
            token_key: Arc::new(Vec::new()),
            default_tenant: None,
            require_token: true,
        },
        max_calls: 1,
        active: Arc::new(AtomicU32::new(0)),
        rtp_timeout: Duration::from_secs(30),
        codecs: crate::dev::sip_codecs(&a.codecs),
        app,
        registry: registry.clone(),
        metrics: Metrics::new(),
        outbound_proxy: None,
        tls: None,
        // One call: a socket of its own is all it needs.
        media: vaani_media::sipnode::MediaMode::PerCallSocket,
    })
    .await
    .context("starting the caller's SIP node")?;
    let dialed = node
        .dial(DialRequest {
            to: target.clone(),
            from_user: "vaani-call".into(),
            credentials: None,
            tenant: None,
            call_id: None,
            agent: None,
            answer_timeout: Duration::from_secs(30),
            headers,
        })
        .await
        .with_context(|| format!("calling {target}"))?;

    // Until the script is done and the call is over, or the time limit.
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut ended = None;
    let mut codec = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snap = registry.snapshot();
        if let Some(r) = snap.ended.iter().find(|r| r.id == dialed.handle) {
            ended = Some(r.end_reason.clone().unwrap_or_default());
            codec = r.codec.clone();
            break;
        }
    }
    if ended.is_none() {
        eprintln!("vaani call: time limit reached, hanging up");
    }
    // The call's media winds down just after its SIP side: wait for its last turn.
    for _ in 0..40 {
        if shared.lock().map(|g| g.finished).unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown(Duration::from_secs(2)).await;
    let shared = shared
        .lock()
        .map(|g| (g.turns.clone(), g.done, g.error.clone()))
        .unwrap_or_default();
    let (turns, done, error) = shared;
    if let Some(e) = &error {
        eprintln!("vaani call: {e}");
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "call_id": call_id,
                "sip_call_id": dialed.sip_call_id,
                "ended": ended,
                "codec": codec,
                "turns": turns,
            })
        );
    } else {
        println!(
            "call {} ({})",
            call_id.as_deref().unwrap_or("-"),
            dialed.sip_call_id
        );
        for t in &turns {
            let latency = t
                .latency_ms
                .map(|l| format!("  [{l} ms]"))
                .unwrap_or_default();
            println!(
                "{:>7} ms  {:<6} {}{latency}",
                t.started_ms, t.speaker, t.text
            );
        }
        println!(
            "ended: {} (codec {codec})",
            ended.as_deref().unwrap_or("time limit")
        );
    }
    Ok(if done && error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_keeps_the_order() {
        let args: Vec<String> = [
            "vaani",
            "call",
            "dev",
            "--say",
            "hello there",
            "--dtmf",
            "12",
            "--json",
            "--say=bye",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            script_from_args(&args).unwrap(),
            vec![
                Step::Say("hello there".into()),
                Step::Dtmf("12".into()),
                Step::Say("bye".into())
            ]
        );
        let bad: Vec<String> = ["--dtmf", "x"].iter().map(|s| s.to_string()).collect();
        assert!(script_from_args(&bad).is_err());
    }
}
