//! Fallback chains: an engine of each kind made of several, tried in order, so a call
//! survives a provider's bad minute.
//!
//! - **Per request.** A TTS synthesis or an LLM response goes to the first engine whose
//!   circuit breaker is closed. If it fails (an error event, a dropped socket, a 5xx, or no
//!   first event within the first-byte timeout), the same request goes to the next engine,
//!   and the caller never hears the failure. Fatal errors (a revoked key) switch too: a call
//!   must not go mute because one provider refused it. A TTS failure after some audio
//!   re-synthesises the whole sentence on the next engine; an LLM failure after some text
//!   was delivered cannot be undone and is passed on.
//! - **Per call (STT).** A failing stream (error, closed socket, or no final within
//!   `stt_final_timeout` of the end of speech) is replaced by the next engine for the rest
//!   of the call; the audio of the utterance in progress is replayed into it, so the words
//!   are not lost.
//! - **Circuit breaker.** Each engine of a chain has one, shared by all calls:
//!   `failure_threshold` consecutive failures open it for `cooldown`; while open the engine
//!   is tried only after all others; after the cool-down one trial decides (success closes
//!   it, failure re-opens it).
//! - **Switches are reported** as [`EngineSwitch`]es, three ways: an info log line (engine
//!   names and reason; never a key), an optional observer on the chain
//!   ([`SwitchObserver`], e.g. a metrics counter), and — for per-call records — to the
//!   sender installed with [`record_switches`] around the call's pipeline task: the chain
//!   captures it when the pipeline opens a stream, starts a response or a synthesis, so each
//!   switch lands on the call it happened in. The pipeline can append them to the call
//!   report (`engine switched from X to Y: reason`).
//! - **LLM history.** When a call's responses move to another LLM, the new session is first
//!   given the conversation so far through [`LlmSession::restore`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::pipeline::engines::{
    EngineError, LlmEngine, LlmEvent, LlmInput, LlmSession, Speaker, SttEngine, SttEvent, SttInput,
    SttOptions, SttStream, TtsEngine, TtsEvent,
};

/// Tuning of the chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackConfig {
    /// Consecutive failures that open an engine's breaker.
    pub failure_threshold: u32,
    /// How long an open breaker keeps its engine at the back of the chain.
    pub cooldown: Duration,
    /// An LLM response with no event this long after it was asked for has failed.
    pub llm_first_byte: Duration,
    /// A synthesis with no audio this long after it was asked for has failed.
    pub tts_first_byte: Duration,
    /// An STT stream with no final this long after the end of speech has failed (below
    /// the pipeline's own 2 s patience, so the next engine still has time).
    pub stt_final_timeout: Duration,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(30),
            llm_first_byte: Duration::from_secs(4),
            tts_first_byte: Duration::from_millis(2500),
            stt_final_timeout: Duration::from_millis(1200),
        }
    }
}

/// Which kind of engine switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    Stt,
    Llm,
    Tts,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Stt => "stt",
            EngineKind::Llm => "llm",
            EngineKind::Tts => "tts",
        })
    }
}

/// A request or stream moved from one engine to the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineSwitch {
    pub kind: EngineKind,
    pub from: &'static str,
    pub to: &'static str,
    /// Why `from` was given up (its error, already free of secrets).
    pub reason: String,
}

impl std::fmt::Display for EngineSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} engine switched from {} to {}: {}",
            self.kind, self.from, self.to, self.reason
        )
    }
}

/// Called on every switch of a chain.
pub type SwitchObserver = Arc<dyn Fn(&EngineSwitch) + Send + Sync>;

tokio::task_local! {
    static CALL_SWITCHES: mpsc::UnboundedSender<EngineSwitch>;
}

/// Run `fut` (a call's pipeline task) so that every switch of a chain used from within it
/// is also sent to `sink`.
pub async fn record_switches<F: Future>(
    sink: mpsc::UnboundedSender<EngineSwitch>,
    fut: F,
) -> F::Output {
    CALL_SWITCHES.scope(sink, fut).await
}

#[derive(Clone)]
struct Reporter {
    observer: Option<SwitchObserver>,
    call: Option<mpsc::UnboundedSender<EngineSwitch>>,
}

impl Reporter {
    /// The observer plus the current call's sink, if the caller runs inside
    /// [`record_switches`].
    fn capture(observer: &Option<SwitchObserver>) -> Self {
        Reporter {
            observer: observer.clone(),
            call: CALL_SWITCHES.try_with(Clone::clone).ok(),
        }
    }

    fn report(&self, switch: EngineSwitch) {
        tracing::info!(kind = %switch.kind, from = switch.from, to = switch.to, reason = %switch.reason, "engine switched");
        if let Some(o) = &self.observer {
            o(&switch);
        }
        if let Some(c) = &self.call {
            let _ = c.send(switch);
        }
    }
}

/// One engine's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// Whether the engine may be tried first (closed, or cooled down).
    pub fn allows(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.open_until.is_none_or(|t| Instant::now() >= t))
            .unwrap_or(true)
    }

    /// Whether the breaker is open now.
    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    pub fn success(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failures = 0;
            s.open_until = None;
        }
    }

    /// Count a failure; true when this opened (or re-opened) the breaker.
    pub fn failure(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.failures = s.failures.saturating_add(1);
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
            true
        } else {
            false
        }
    }
}

struct Member<E: ?Sized> {
    engine: Arc<E>,
    breaker: Arc<Breaker>,
}

impl<E: ?Sized> Clone for Member<E> {
    fn clone(&self) -> Self {
        Member {
            engine: self.engine.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

fn members<E: ?Sized>(engines: Vec<Arc<E>>, cfg: &FallbackConfig) -> Vec<Member<E>> {
    engines
        .into_iter()
        .map(|engine| Member {
            engine,
            breaker: Arc::new(Breaker::new(cfg.failure_threshold, cfg.cooldown)),
        })
        .collect()
}

/// The order to try members in: closed breakers first (chain order), then open ones.
fn order<E: ?Sized>(members: &[Member<E>]) -> Vec<usize> {
    let (mut first, open): (Vec<usize>, Vec<usize>) =
        (0..members.len()).partition(|&i| members[i].breaker.allows());
    first.extend(open);
    first
}

/// A fallback chain of engines of one kind: [`TtsChain`], [`LlmChain`], [`SttChain`].
pub struct Chain<E: ?Sized> {
    members: Vec<Member<E>>,
    cfg: FallbackConfig,
    observer: Option<SwitchObserver>,
}

impl<E: ?Sized> Chain<E> {
    pub fn new(engines: Vec<Arc<E>>, cfg: FallbackConfig) -> Self {
        Chain {
            members: members(engines, &cfg),
            cfg,
            observer: None,
        }
    }

    pub fn with_observer(mut self, observer: SwitchObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The breaker of the `i`-th engine.
    pub fn breaker(&self, i: usize) -> Option<&Breaker> {
        self.members.get(i).map(|m| &*m.breaker)
    }
}

// ---------------------------------------------------------------------------------------
// TTS

/// A chain of TTS engines.
pub type TtsChain = Chain<dyn TtsEngine>;

impl TtsEngine for TtsChain {
    fn name(&self) -> &'static str {
        self.members
            .first()
            .map_or("tts-chain", |m| m.engine.name())
    }

    fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(32);
        let chain: Vec<Member<dyn TtsEngine>> = order(&self.members)
            .into_iter()
            .map(|i| self.members[i].clone())
            .collect();
        let reporter = Reporter::capture(&self.observer);
        let text = text.to_string();
        let voice = voice.map(str::to_string);
        let first_byte = self.cfg.tts_first_byte;
        tokio::spawn(async move {
            let work = tts_chain(chain, text, voice, first_byte, reporter, tx.clone());
            tokio::select! {
                _ = work => {}
                _ = tx.closed() => {}
            }
        });
        rx
    }
}

async fn tts_chain(
    chain: Vec<Member<dyn TtsEngine>>,
    text: String,
    voice: Option<String>,
    first_byte: Duration,
    reporter: Reporter,
    tx: mpsc::Sender<Result<TtsEvent, EngineError>>,
) {
    let last = chain.len().saturating_sub(1);
    let mut gave_up: Option<(&'static str, String)> = None;
    for (pos, m) in chain.iter().enumerate() {
        let name = m.engine.name();
        if let Some((from, reason)) = gave_up.take() {
            reporter.report(EngineSwitch {
                kind: EngineKind::Tts,
                from,
                to: name,
                reason,
            });
        }
        let mut rx = m.engine.synthesize(&text, voice.as_deref());
        let deadline = Instant::now() + first_byte;
        let mut audio = false;
        let outcome = loop {
            let ev = if audio {
                rx.recv().await
            } else {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        break Err(EngineError::retryable(
                            name,
                            format!("no audio within {} ms", first_byte.as_millis()),
                        ))
                    }
                }
            };
            match ev {
                Some(Ok(TtsEvent::Audio(pcm))) => {
                    audio = true;
                    if tx.send(Ok(TtsEvent::Audio(pcm))).await.is_err() {
                        return;
                    }
                }
                Some(Ok(usage)) => {
                    if tx.send(Ok(usage)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        match outcome {
            Ok(()) => {
                m.breaker.success();
                return;
            }
            Err(e) => {
                if m.breaker.failure() {
                    tracing::warn!(engine = name, "TTS breaker open");
                }
                if pos == last {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                gave_up = Some((name, e.to_string()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// LLM

/// A chain of dialogue engines.
pub type LlmChain = Chain<dyn LlmEngine>;

impl LlmEngine for LlmChain {
    fn name(&self) -> &'static str {
        self.members
            .first()
            .map_or("llm-chain", |m| m.engine.name())
    }

    fn session(&self) -> Result<Box<dyn LlmSession>, EngineError> {
        if self.members.is_empty() {
            return Err(EngineError::fatal("llm-chain", "no engines"));
        }
        Ok(Box::new(ChainSession {
            members: self.members.clone(),
            first_byte: self.cfg.llm_first_byte,
            observer: self.observer.clone(),
            state: Arc::new(Mutex::new(ChainState {
                sessions: (0..self.members.len()).map(|_| None).collect(),
                history: Vec::new(),
                owner: None,
                gen: 0,
            })),
        }))
    }
}

struct ChainState {
    sessions: Vec<Option<Box<dyn LlmSession>>>,
    /// The conversation as the caller heard it, for [`LlmSession::restore`].
    history: Vec<(Speaker, String)>,
    /// The session that answered last (and knows the history).
    owner: Option<usize>,
    gen: u64,
}

impl ChainState {
    /// Start the response of member `i` to `input`, first giving its session the history if
    /// it was not the one that answered before.
    fn start(
        &mut self,
        i: usize,
        member: &Member<dyn LlmEngine>,
        input: LlmInput,
        history: &[(Speaker, String)],
    ) -> Result<mpsc::Receiver<Result<LlmEvent, EngineError>>, EngineError> {
        let slot = self
            .sessions
            .get_mut(i)
            .ok_or_else(|| EngineError::fatal("llm-chain", "no such engine"))?;
        if slot.is_none() {
            *slot = Some(member.engine.session()?);
        }
        let Some(session) = slot.as_mut() else {
            return Err(EngineError::fatal("llm-chain", "session unavailable"));
        };
        if self.owner != Some(i) {
            if !history.is_empty() || self.owner.is_some() {
                session.restore(history);
            }
            self.owner = Some(i);
        }
        Ok(session.respond(input))
    }

    fn append_agent(&mut self, gen: u64, text: &str) {
        if gen != self.gen {
            return;
        }
        match self.history.last_mut() {
            Some((Speaker::Agent, t)) => t.push_str(text),
            _ => self.history.push((Speaker::Agent, text.to_string())),
        }
    }
}

struct ChainSession {
    members: Vec<Member<dyn LlmEngine>>,
    first_byte: Duration,
    observer: Option<SwitchObserver>,
    state: Arc<Mutex<ChainState>>,
}

impl LlmSession for ChainSession {
    fn respond(&mut self, input: LlmInput) -> mpsc::Receiver<Result<LlmEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(64);
        let (gen, history) = match self.state.lock() {
            Ok(mut s) => {
                s.gen += 1;
                let before: Vec<(Speaker, String)> = s
                    .history
                    .iter()
                    .filter(|(_, t)| !t.trim().is_empty())
                    .cloned()
                    .collect();
                match &input {
                    LlmInput::Utterance(t) => s.history.push((Speaker::Caller, t.clone())),
                    LlmInput::Dtmf(k) => s.history.push((Speaker::Caller, format!("[keys {k}]"))),
                    LlmInput::Start | LlmInput::Silence => {}
                }
                (s.gen, before)
            }
            Err(_) => {
                let _ = tx.try_send(Err(EngineError::fatal("llm-chain", "state lock poisoned")));
                return rx;
            }
        };
        let chain: Vec<(usize, Member<dyn LlmEngine>)> = order(&self.members)
            .into_iter()
            .map(|i| (i, self.members[i].clone()))
            .collect();
        let reporter = Reporter::capture(&self.observer);
        let job = LlmJob {
            chain,
            state: self.state.clone(),
            first_byte: self.first_byte,
            reporter,
            gen,
            history,
        };
        tokio::spawn(async move {
            let work = job.run(input, tx.clone());
            tokio::select! {
                _ = work => {}
                _ = tx.closed() => {}
            }
        });
        rx
    }

    fn truncate_last(&mut self, spoken: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        s.gen += 1;
        if let Some(pos) = s
            .history
            .iter()
            .rposition(|(who, _)| *who == Speaker::Agent)
        {
            if spoken.trim().is_empty() {
                s.history.remove(pos);
            } else {
                s.history[pos].1 = spoken.trim().to_string();
            }
        }
        if let Some(owner) = s.owner {
            if let Some(Some(session)) = s.sessions.get_mut(owner) {
                session.truncate_last(spoken);
            }
        }
    }

    fn restore(&mut self, history: &[(Speaker, String)]) {
        let Ok(mut s) = self.state.lock() else { return };
        s.gen += 1;
        s.history = history.to_vec();
        s.owner = None;
    }
}

struct LlmJob {
    chain: Vec<(usize, Member<dyn LlmEngine>)>,
    state: Arc<Mutex<ChainState>>,
    first_byte: Duration,
    reporter: Reporter,
    gen: u64,
    history: Vec<(Speaker, String)>,
}

impl LlmJob {
    async fn run(self, input: LlmInput, tx: mpsc::Sender<Result<LlmEvent, EngineError>>) {
        let last = self.chain.len().saturating_sub(1);
        let mut gave_up: Option<(&'static str, String)> = None;
        for (pos, (i, m)) in self.chain.iter().enumerate() {
            let name = m.engine.name();
            if let Some((from, reason)) = gave_up.take() {
                self.reporter.report(EngineSwitch {
                    kind: EngineKind::Llm,
                    from,
                    to: name,
                    reason,
                });
            }
            let started = match self.state.lock() {
                Ok(mut s) => s.start(*i, m, input.clone(), &self.history),
                Err(_) => Err(EngineError::fatal("llm-chain", "state lock poisoned")),
            };
            let mut delivered = false;
            let outcome = match started {
                Err(e) => Err(e),
                Ok(mut rx) => {
                    let deadline = Instant::now() + self.first_byte;
                    let mut first = true;
                    loop {
                        let ev = if first {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(ev) => ev,
                                Err(_) => {
                                    break Err(EngineError::retryable(
                                        name,
                                        format!(
                                            "no response within {} ms",
                                            self.first_byte.as_millis()
                                        ),
                                    ))
                                }
                            }
                        } else {
                            rx.recv().await
                        };
                        first = false;
                        match ev {
                            Some(Ok(LlmEvent::Text(t))) => {
                                if !t.is_empty() {
                                    delivered = true;
                                    if let Ok(mut s) = self.state.lock() {
                                        s.append_agent(self.gen, &t);
                                    }
                                }
                                if tx.send(Ok(LlmEvent::Text(t))).await.is_err() {
                                    return;
                                }
                            }
                            Some(Ok(other)) => {
                                if tx.send(Ok(other)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => break Err(e),
                            None => break Ok(()),
                        }
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    m.breaker.success();
                    return;
                }
                Err(e) => {
                    if m.breaker.failure() {
                        tracing::warn!(engine = name, "LLM breaker open");
                    }
                    if pos == last || delivered {
                        // Text already went to the caller: the answer cannot be redone.
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    gave_up = Some((name, e.to_string()));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// STT

/// Most audio kept for replay into a replacement engine: the last 4.8 s since the last
/// final (finals come every few seconds of speech), and few enough frames to fit an engine's
/// input queue at once.
const REPLAY_FRAMES: usize = 240;

/// A chain of STT engines.
pub type SttChain = Chain<dyn SttEngine>;

impl SttEngine for SttChain {
    fn name(&self) -> &'static str {
        self.members
            .first()
            .map_or("stt-chain", |m| m.engine.name())
    }

    fn open(&self, options: &SttOptions) -> Result<SttStream, EngineError> {
        let chain: Vec<Member<dyn SttEngine>> = order(&self.members)
            .into_iter()
            .map(|i| self.members[i].clone())
            .collect();
        let reporter = Reporter::capture(&self.observer);
        // Open the first engine that opens, here, so a chain that cannot open at all says so.
        let mut pos = 0;
        let mut gave_up: Option<(&'static str, String)> = None;
        let stream = loop {
            let Some(m) = chain.get(pos) else {
                let reason = gave_up.map_or_else(|| "no engines".to_string(), |(_, r)| r);
                return Err(EngineError::fatal("stt-chain", reason));
            };
            if let Some((from, reason)) = gave_up.take() {
                reporter.report(EngineSwitch {
                    kind: EngineKind::Stt,
                    from,
                    to: m.engine.name(),
                    reason,
                });
            }
            match m.engine.open(options) {
                Ok(s) => break s,
                Err(e) => {
                    m.breaker.failure();
                    gave_up = Some((m.engine.name(), e.to_string()));
                    pos += 1;
                }
            }
        };
        let (in_tx, in_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let job = SttJob {
            chain,
            pos,
            current: stream,
            options: options.clone(),
            reporter,
            final_timeout: self.cfg.stt_final_timeout,
            replay: VecDeque::new(),
            awaiting: None,
            base_ms: 0,
            engine_ms: 0,
        };
        tokio::spawn(job.run(in_rx, ev_tx));
        Ok(SttStream {
            input: in_tx,
            events: ev_rx,
        })
    }
}

struct SttJob {
    chain: Vec<Member<dyn SttEngine>>,
    pos: usize,
    current: SttStream,
    options: SttOptions,
    reporter: Reporter,
    final_timeout: Duration,
    /// Audio since the last final, for replay.
    replay: VecDeque<Vec<i16>>,
    /// When the final of the last end of speech is due.
    awaiting: Option<Instant>,
    /// Audio billed by engines given up earlier in the call.
    base_ms: u64,
    /// Audio the current engine has reported.
    engine_ms: u64,
}

type SttEvents = mpsc::Sender<Result<SttEvent, EngineError>>;

impl SttJob {
    async fn run(mut self, mut input: mpsc::Receiver<SttInput>, events: SttEvents) {
        loop {
            let due = self.awaiting;
            let failure = tokio::select! {
                msg = input.recv() => match msg {
                    Some(SttInput::Audio(pcm)) => {
                        if self.replay.len() >= REPLAY_FRAMES {
                            self.replay.pop_front();
                        }
                        self.replay.push_back(pcm.clone());
                        self.forward(SttInput::Audio(pcm))
                    }
                    Some(SttInput::EndOfSpeech) => {
                        self.awaiting = Some(Instant::now() + self.final_timeout);
                        self.forward(SttInput::EndOfSpeech)
                    }
                    None => return,
                },
                ev = self.current.events.recv() => match ev {
                    Some(Ok(SttEvent::Final { text, confidence })) => {
                        self.awaiting = None;
                        self.replay.clear();
                        if let Some(m) = self.chain.get(self.pos) {
                            m.breaker.success();
                        }
                        if events.send(Ok(SttEvent::Final { text, confidence })).await.is_err() {
                            return;
                        }
                        None
                    }
                    Some(Ok(SttEvent::Usage { audio_ms })) => {
                        self.engine_ms = audio_ms;
                        let total = self.base_ms + audio_ms;
                        if events.send(Ok(SttEvent::Usage { audio_ms: total })).await.is_err() {
                            return;
                        }
                        None
                    }
                    Some(Ok(other)) => {
                        if events.send(Ok(other)).await.is_err() {
                            return;
                        }
                        None
                    }
                    Some(Err(e)) => Some(e),
                    None => Some(EngineError::retryable(self.name(), "stream ended")),
                },
                _ = sleep_until_opt(due) => {
                    Some(EngineError::retryable(
                        self.name(),
                        format!("no final within {} ms of the end of speech", self.final_timeout.as_millis()),
                    ))
                }
            };
            if let Some(e) = failure {
                if !self.fail_over(e, &events).await {
                    return;
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        self.chain
            .get(self.pos)
            .map_or("stt-chain", |m| m.engine.name())
    }

    /// Hand input to the current engine without waiting (waiting on an engine that is
    /// itself waiting for us to read its events would deadlock): a closed or stuck
    /// engine has failed.
    fn forward(&self, input: SttInput) -> Option<EngineError> {
        match self.current.input.try_send(input) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Some(EngineError::retryable(self.name(), "stream closed"))
            }
            Err(mpsc::error::TrySendError::Full(_)) => Some(EngineError::retryable(
                self.name(),
                "engine not keeping up with the audio",
            )),
        }
    }

    /// Move to the next engine that opens and replay the utterance into it; false when
    /// there is none (the error went to the pipeline).
    async fn fail_over(&mut self, error: EngineError, events: &SttEvents) -> bool {
        let timed_out = self.awaiting.is_some_and(|t| Instant::now() >= t);
        if let Some(m) = self.chain.get(self.pos) {
            if m.breaker.failure() {
                tracing::warn!(engine = m.engine.name(), "STT breaker open");
            }
        }
        if self.pos + 1 >= self.chain.len() {
            if timed_out {
                // The last engine is only slow: keep it, the pipeline has its own patience.
                self.awaiting = None;
                return true;
            }
            let _ = events.send(Err(error)).await;
            return false;
        }
        let mut from = self.name();
        let mut reason = error.to_string();
        loop {
            self.pos += 1;
            let Some(m) = self.chain.get(self.pos) else {
                let _ = events
                    .send(Err(EngineError::fatal("stt-chain", reason)))
                    .await;
                return false;
            };
            self.reporter.report(EngineSwitch {
                kind: EngineKind::Stt,
                from,
                to: m.engine.name(),
                reason: reason.clone(),
            });
            match m.engine.open(&self.options) {
                Ok(stream) => {
                    self.current = stream;
                    break;
                }
                Err(e) => {
                    m.breaker.failure();
                    from = m.engine.name();
                    reason = e.to_string();
                }
            }
        }
        self.base_ms += self.engine_ms;
        self.engine_ms = 0;
        for frame in &self.replay {
            if self
                .current
                .input
                .try_send(SttInput::Audio(frame.clone()))
                .is_err()
            {
                break;
            }
        }
        if self.awaiting.is_some() {
            let _ = self.current.input.try_send(SttInput::EndOfSpeech);
            self.awaiting = Some(Instant::now() + self.final_timeout);
        }
        true
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_and_cools_down() {
        let b = Breaker::new(2, Duration::from_millis(40));
        assert!(b.allows());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(b.failure());
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allows(), "half-open after the cool-down");
        assert!(b.failure(), "one more failure re-opens it");
        assert!(b.is_open());
        b.success();
        assert!(b.allows());
    }

    #[test]
    fn switches_read_well() {
        let s = EngineSwitch {
            kind: EngineKind::Tts,
            from: "cartesia",
            to: "espeak",
            reason: "cartesia: no audio within 2500 ms".into(),
        };
        assert_eq!(
            s.to_string(),
            "tts engine switched from cartesia to espeak: cartesia: no audio within 2500 ms"
        );
    }
}
