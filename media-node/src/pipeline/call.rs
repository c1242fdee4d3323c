//! One call's pipeline task: the single loop that owns the call's turn detector, STT
//! stream, dialogue session and TTS streams, and feeds the [`OutQueue`] the media driver
//! plays from. Decisions come from the pure parts ([`TurnDetector`], the dialogue engine,
//! [`SentenceSplitter`]); this loop only moves data between them and the engines, and
//! keeps the call's transcript, per-turn latencies and engine usage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::dialogue::NextStep;
use super::engines::{
    EngineError, Engines, LlmEvent, LlmInput, LlmSession, LlmUsage, Speaker, SttEvent, SttInput,
    SttOptions, SttStream, TtsEvent,
};
use super::out::{OutQueue, Played, SegmentCount};
use super::sentences::SentenceSplitter;
use super::turn::{TurnDetector, TurnEvent, FRAME_MS};
use super::vad::VoiceDetector;
use crate::agent::ResolvedAgent;
use crate::codec::FRAME_SAMPLES;

/// Frames of audio before detected speech that are sent to the STT with it.
const PREROLL_FRAMES: usize = 15;
/// How long to wait for the STT's final after the end of speech.
const FINAL_TIMEOUT: Duration = Duration::from_millis(2000);
/// Keys pressed within this of each other form one entry (`#` ends it at once).
const DTMF_GAP: Duration = Duration::from_millis(700);
/// Frames queued toward the pipeline before new ones are dropped.
const INPUT_QUEUE: usize = 64;

/// What the media side sends the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// 20 ms of caller audio (16 kHz) and whether agent audio played during it.
    Frame {
        pcm: Vec<i16>,
        agent_audible: bool,
    },
    Dtmf(char),
}

/// Who the call is, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallIds {
    pub call_id: Option<String>,
    pub tenant: Option<String>,
    /// SIP Call-ID or provider stream id.
    pub transport_id: String,
}

/// One line of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptEntry {
    pub speaker: Speaker,
    pub text: String,
    /// Milliseconds from the start of the call.
    pub at_ms: u64,
    /// An agent line cut short by the caller: `text` is what was heard.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// When each stage of one turn happened, in ms from the start of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnLatency {
    pub turn: u32,
    /// End of the caller's speech (last voiced frame), or the last key press.
    pub speech_end_ms: u64,
    pub stt_final_ms: Option<u64>,
    pub llm_first_token_ms: Option<u64>,
    pub first_sentence_ms: Option<u64>,
    pub tts_first_byte_ms: Option<u64>,
    pub first_audio_ms: Option<u64>,
    /// End of speech → first agent audio sent.
    pub total_ms: Option<u64>,
    /// Time spent waiting on engines within `total_ms` (STT final, LLM first token, TTS
    /// first byte): the rest is what the platform added.
    pub engine_wait_ms: Option<u64>,
    /// What the platform itself added, in µs: from the end-of-turn decision to the first
    /// agent frame queued for sending, minus the time spent waiting on engines (the STT's
    /// final after end of speech, the LLM's first speakable sentence, the TTS's first audio).
    /// The wait for the next 20 ms send slot is pacing, not counted. Engine waits are as the
    /// pipeline saw them (event received), so task wake-ups count as engine time here; the
    /// benchmark subtracts fake engines' fixed delays from `decided_to_queued_us` instead.
    pub platform_us: Option<u64>,
    /// End-of-turn decision → first agent frame queued, in µs.
    pub decided_to_queued_us: Option<u64>,
}

/// Precise instants of one turn (for `platform_us`).
#[derive(Debug, Clone, Copy)]
struct TurnClock {
    decided: Instant,
    stt_final: Instant,
    tts_asked: Option<Instant>,
    tts_first: Option<Instant>,
    queued: Option<Instant>,
}

impl TurnClock {
    fn new(decided: Instant, stt_final: Instant) -> Self {
        TurnClock {
            decided,
            stt_final,
            tts_asked: None,
            tts_first: None,
            queued: None,
        }
    }

    /// The platform's share once the first frame is queued.
    fn platform(&self) -> Option<Duration> {
        let (asked, first, queued) = (self.tts_asked?, self.tts_first?, self.queued?);
        // The LLM is asked right at the final; waiting for its first sentence, then for the
        // TTS's first audio, is engine time.
        let engine = self.stt_final.saturating_duration_since(self.decided)
            + asked.saturating_duration_since(self.stt_final)
            + first.saturating_duration_since(asked);
        Some(
            queued
                .saturating_duration_since(self.decided)
                .saturating_sub(engine),
        )
    }
}

/// Engine usage of a call, for cost accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub stt_audio_ms: u64,
    pub llm: LlmUsage,
    pub tts_characters: u64,
}

/// p50/p90/p99 of the calls' turns' end-of-speech → first-audio times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub turns: usize,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// Which engines a call used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineNames {
    pub stt: String,
    pub llm: String,
    pub tts: String,
}

/// What a call's pipeline leaves behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallReport {
    #[serde(flatten)]
    pub ids: CallIds,
    pub agent: String,
    /// The engines the call used (STT, dialogue, TTS).
    pub engines: EngineNames,
    pub transcript: Vec<TranscriptEntry>,
    pub turns: Vec<TurnLatency>,
    pub latency: LatencySummary,
    pub usage: Usage,
    /// Engine failures during the call (`engine: message`).
    pub engine_errors: Vec<String>,
    /// Fallback-chain switches during the call (`llm engine switched from anthropic to
    /// embedded: …`).
    pub engine_switches: Vec<String>,
    /// Caller frames dropped because the pipeline fell behind.
    pub dropped_frames: u64,
}

/// Nearest-rank percentile.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Everything a call's pipeline needs.
#[derive(Clone)]
pub struct PipelineConfig {
    pub agent: Arc<ResolvedAgent>,
    pub engines: Engines,
    pub vad: Arc<dyn Fn() -> Box<dyn VoiceDetector> + Send + Sync>,
    /// Where finished calls' reports go.
    pub reports: Option<mpsc::UnboundedSender<CallReport>>,
    /// The runtime the pipeline tasks run on (media drivers may call from other threads).
    pub runtime: tokio::runtime::Handle,
}

/// The media side's handle on a call's pipeline.
pub struct CallLink {
    input: mpsc::Sender<Input>,
    pub out: Arc<OutQueue>,
    dropped: Arc<AtomicU64>,
}

impl CallLink {
    /// Hand one input to the pipeline without waiting; a full queue drops it (counted).
    pub fn send(&self, input: Input) {
        if self.input.try_send(input).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Start a call's pipeline.
pub fn start(cfg: &PipelineConfig, ids: CallIds) -> CallLink {
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (played_tx, played_rx) = mpsc::unbounded_channel();
    let out = Arc::new(OutQueue::new(played_tx));
    let dropped = Arc::new(AtomicU64::new(0));
    let cfg2 = cfg.clone();
    let out2 = out.clone();
    let dropped2 = dropped.clone();
    cfg.runtime.spawn(async move {
        // Engine chains report their switches to the call they serve through this sink.
        let (switch_tx, mut switches) = mpsc::unbounded_channel();
        let pipeline = async {
            match Pipeline::new(cfg2.clone(), ids.clone(), out2, played_rx, dropped2) {
                Ok(p) => p.run(input_rx).await,
                Err(e) => {
                    tracing::error!(error = %e, "pipeline could not start");
                    CallReport {
                        ids,
                        engine_errors: vec![e.to_string()],
                        ..CallReport::default()
                    }
                }
            }
        };
        let mut report = crate::cloud::record_switches(switch_tx, pipeline).await;
        while let Ok(s) = switches.try_recv() {
            report.engine_switches.push(s.to_string());
        }
        if let Some(tx) = &cfg2.reports {
            let _ = tx.send(report);
        }
    });
    CallLink {
        input: input_tx,
        out,
        dropped,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The caller turn whose final text is awaited.
struct PendingTurn {
    /// When the end of the turn was decided (and the STT asked for its final).
    decided: Instant,
    speech_start: Instant,
    speech_end: Instant,
    deadline: Instant,
    /// A backchannel: its text is thrown away.
    discard: bool,
}

/// The reply being produced.
struct Reply {
    id: u32,
    splitter: SentenceSplitter,
    sentences: VecDeque<String>,
    /// The segment being synthesised and its text.
    synth: Option<(u64, String)>,
    carry: Vec<i16>,
    next: NextStep,
    llm_done: bool,
    /// Index into `turns` of this reply's latency record.
    latency: Option<usize>,
    /// Index into `transcript` of this reply's line, once it has one.
    entry: Option<usize>,
}

impl Reply {
    fn new(id: u32, latency: Option<usize>, llm_done: bool) -> Self {
        Reply {
            id,
            splitter: SentenceSplitter::new(),
            sentences: VecDeque::new(),
            synth: None,
            carry: Vec::new(),
            next: NextStep::Listen,
            llm_done,
            latency,
            entry: None,
        }
    }
}

struct Pipeline {
    cfg: PipelineConfig,
    ids: CallIds,
    started: Instant,
    turn: TurnDetector,
    vad: Box<dyn VoiceDetector>,
    stt: Option<SttStream>,
    llm: Box<dyn LlmSession>,
    out: Arc<OutQueue>,
    played_rx: mpsc::UnboundedReceiver<Played>,
    dropped: Arc<AtomicU64>,
    frames: u64,
    preroll: VecDeque<Vec<i16>>,
    last_voiced: Instant,
    speech_start: Instant,
    heard: Vec<String>,
    pending: Option<PendingTurn>,
    /// Text of a caller turn whose reply was cancelled because the caller kept talking.
    superseded: Option<(String, usize)>,
    llm_rx: Option<mpsc::Receiver<Result<LlmEvent, EngineError>>>,
    tts_rx: Option<mpsc::Receiver<Result<TtsEvent, EngineError>>>,
    reply: Option<Reply>,
    next_reply: u32,
    next_segment: u64,
    /// Segments queued to the caller and not yet known to be heard, with their text and
    /// the transcript entry they belong to.
    audible: Vec<(u64, String, usize)>,
    /// What the agent had left to say when interrupted (resumed if the caller said nothing).
    unheard: Option<String>,
    /// Latency records by reply id, until the reply's first audio goes out.
    awaiting_audio: Vec<(u32, usize)>,
    transcript: Vec<TranscriptEntry>,
    turns: Vec<TurnLatency>,
    /// Parallel to `turns`.
    clocks: Vec<TurnClock>,
    usage: Usage,
    errors: Vec<String>,
    last_activity: Instant,
    dtmf: String,
    dtmf_deadline: Option<Instant>,
    hanging_up: bool,
}

impl Pipeline {
    fn new(
        cfg: PipelineConfig,
        ids: CallIds,
        out: Arc<OutQueue>,
        played_rx: mpsc::UnboundedReceiver<Played>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Self, EngineError> {
        let agent = &cfg.agent;
        let options = SttOptions {
            language: agent.spec.language.clone(),
            model: agent.settings.stt.model.clone(),
            phrases: agent.spec.expected_phrases(),
            interim_results: agent.settings.stt.interim_results,
        };
        let llm = cfg.engines.llm.session()?;
        let stt = match cfg.engines.stt.open(&options) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "STT unavailable: the agent will not hear speech");
                None
            }
        };
        let now = Instant::now();
        Ok(Pipeline {
            turn: TurnDetector::new(agent.settings.turn),
            vad: (cfg.vad)(),
            ids,
            started: now,
            stt,
            llm,
            out,
            played_rx,
            dropped,
            frames: 0,
            preroll: VecDeque::with_capacity(PREROLL_FRAMES + 1),
            last_voiced: now,
            speech_start: now,
            heard: Vec::new(),
            pending: None,
            superseded: None,
            llm_rx: None,
            tts_rx: None,
            reply: None,
            next_reply: 0,
            next_segment: 0,
            audible: Vec::new(),
            unheard: None,
            awaiting_audio: Vec::new(),
            transcript: Vec::new(),
            turns: Vec::new(),
            clocks: Vec::new(),
            usage: Usage::default(),
            errors: Vec::new(),
            last_activity: now,
            dtmf: String::new(),
            dtmf_deadline: None,
            hanging_up: false,
            cfg,
        })
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, mut input: mpsc::Receiver<Input>) -> CallReport {
        self.start_reply(LlmInput::Start, None);
        let max_call = Duration::from_secs(u64::from(self.cfg.agent.spec.max_call_seconds));
        let silence = Duration::from_secs(u64::from(self.cfg.agent.spec.silence_timeout_seconds));
        loop {
            let deadline = self.next_deadline(max_call, silence);
            tokio::select! {
                msg = input.recv() => match msg {
                    Some(Input::Frame { pcm, agent_audible }) => self.on_frame(pcm, agent_audible),
                    Some(Input::Dtmf(d)) => self.on_dtmf(d),
                    None => break,
                },
                ev = recv_opt_stt(&mut self.stt) => self.on_stt(ev),
                ev = recv_opt(&mut self.llm_rx) => self.on_llm(ev),
                ev = recv_opt(&mut self.tts_rx) => self.on_tts(ev),
                Some(p) = self.played_rx.recv() => self.on_played(p),
                _ = tokio::time::sleep_until(deadline.into()) => self.on_deadline(max_call, silence),
            }
        }
        self.finish()
    }

    fn next_deadline(&self, max_call: Duration, silence: Duration) -> Instant {
        let mut d = self.started + max_call;
        if let Some(p) = &self.pending {
            d = d.min(p.deadline);
        }
        if let Some(t) = self.dtmf_deadline {
            d = d.min(t);
        }
        if self.idle() {
            d = d.min(self.last_activity + silence);
        }
        d
    }

    /// Nobody is talking or about to.
    fn idle(&self) -> bool {
        self.reply.is_none()
            && self.pending.is_none()
            && self.audible.is_empty()
            && !self.turn.caller_speaking()
            && self.dtmf.is_empty()
            && !self.hanging_up
    }

    fn on_deadline(&mut self, max_call: Duration, silence: Duration) {
        let now = Instant::now();
        if now >= self.started + max_call && !self.hanging_up {
            tracing::info!(call = %self.ids.transport_id, "max call duration reached");
            self.cancel_reply();
            self.out.clear();
            self.out.push_hangup("max duration".into());
            self.hanging_up = true;
            return;
        }
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline) {
            self.complete_turn(now);
        }
        if self.dtmf_deadline.is_some_and(|t| now >= t) {
            self.flush_dtmf(now);
        }
        if self.idle() && now >= self.last_activity + silence {
            self.last_activity = now;
            self.start_reply(LlmInput::Silence, None);
        }
    }

    fn on_frame(&mut self, pcm: Vec<i16>, agent_audible: bool) {
        let now = Instant::now();
        let t = self.frames * FRAME_MS;
        self.frames += 1;
        let voiced = self.vad.is_voiced(&pcm);
        if voiced {
            self.last_voiced = now;
        }
        let was_speaking = self.turn.caller_speaking();
        let event = self.turn.on_frame(t, voiced, agent_audible);
        if was_speaking || self.turn.caller_speaking() {
            if !was_speaking {
                // Speech began a few frames ago: send what led up to it.
                for f in std::mem::take(&mut self.preroll) {
                    self.stt_send(SttInput::Audio(f));
                }
            }
            self.stt_send(SttInput::Audio(pcm));
        } else {
            if self.preroll.len() >= PREROLL_FRAMES {
                self.preroll.pop_front();
            }
            self.preroll.push_back(pcm);
        }
        match event {
            Some(TurnEvent::SpeechStarted { .. }) => self.on_speech_started(now),
            Some(TurnEvent::Interrupt { .. }) => {
                if !was_speaking {
                    self.on_speech_started(now);
                }
                self.interrupt();
            }
            Some(TurnEvent::EndOfTurn { .. }) => self.on_end_of_speech(now, false),
            Some(TurnEvent::Backchannel { .. }) => self.on_end_of_speech(now, true),
            None => {}
        }
    }

    fn on_speech_started(&mut self, now: Instant) {
        let frames_back = super::turn::START_FRAMES;
        self.speech_start = now
            .checked_sub(Duration::from_millis(FRAME_MS * u64::from(frames_back)))
            .unwrap_or(now);
        self.last_activity = now;
        self.heard.clear();
        // The caller kept talking before the reply to their last words was heard: drop that
        // reply and answer everything together.
        if self.reply.is_some() && self.audible.is_empty() && !self.hanging_up {
            if let Some(idx) = self
                .transcript
                .iter()
                .rposition(|e| e.speaker == Speaker::Caller)
            {
                self.superseded = Some((self.transcript[idx].text.clone(), idx));
            }
            self.cancel_reply();
        }
    }

    fn on_end_of_speech(&mut self, now: Instant, discard: bool) {
        self.last_activity = now;
        self.stt_send(SttInput::EndOfSpeech);
        self.pending = Some(PendingTurn {
            decided: now,
            speech_start: self.speech_start,
            speech_end: self.last_voiced + Duration::from_millis(FRAME_MS),
            deadline: now + FINAL_TIMEOUT,
            discard,
        });
        if self.stt.is_none() {
            self.complete_turn(now);
        }
    }

    fn stt_send(&mut self, input: SttInput) {
        let Some(stt) = &self.stt else { return };
        if let Err(e) = stt.input.try_send(input) {
            if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                self.errors.push("stt: stream closed".into());
                self.stt = None;
            }
        }
    }

    fn on_stt(&mut self, ev: Option<Result<SttEvent, EngineError>>) {
        match ev {
            Some(Ok(SttEvent::Interim(text))) => self.turn.on_interim(&text),
            Some(Ok(SttEvent::Final { text, .. })) => {
                if !text.trim().is_empty() {
                    self.heard.push(text.trim().to_string());
                }
                if self.pending.is_some() {
                    self.complete_turn(Instant::now());
                }
            }
            Some(Ok(SttEvent::Usage { audio_ms })) => self.usage.stt_audio_ms = audio_ms,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "STT failed");
                self.errors.push(e.to_string());
                self.stt = None;
            }
            None => {
                self.stt = None;
            }
        }
    }

    /// The caller's turn is over and its text is known (or given up on).
    fn complete_turn(&mut self, now: Instant) {
        let Some(p) = self.pending.take() else { return };
        let text = std::mem::take(&mut self.heard).join(" ");
        if p.discard {
            return;
        }
        if text.is_empty() {
            // Noise, or an interruption without words: carry on where the agent was.
            if let Some(rest) = self.unheard.take() {
                self.speak_text(rest);
            }
            return;
        }
        self.unheard = None;
        let (text, entry) = match self.superseded.take() {
            Some((before, idx)) => {
                let joined = format!("{before} {text}");
                if let Some(e) = self.transcript.get_mut(idx) {
                    e.text.clone_from(&joined);
                }
                (joined, None)
            }
            None => (text, Some(())),
        };
        if entry.is_some() {
            let at_ms = self.ms(p.speech_start);
            self.transcript.push(TranscriptEntry {
                speaker: Speaker::Caller,
                text: text.clone(),
                at_ms,
                interrupted: false,
            });
        }
        let idx = self.turns.len();
        let speech_end_ms = self.ms(p.speech_end);
        let stt_final_ms = self.ms(now);
        self.turns.push(TurnLatency {
            turn: u32::try_from(idx + 1).unwrap_or(u32::MAX),
            speech_end_ms,
            stt_final_ms: Some(stt_final_ms),
            ..TurnLatency::default()
        });
        self.clocks.push(TurnClock::new(p.decided, now));
        self.start_reply(LlmInput::Utterance(text), Some(idx));
    }

    fn on_dtmf(&mut self, digit: char) {
        let now = Instant::now();
        self.last_activity = now;
        if !self.audible.is_empty() || self.out.is_playing() {
            // Keys interrupt the agent like speech does.
            self.interrupt();
        }
        if digit == '#' {
            self.flush_dtmf(now);
            return;
        }
        self.dtmf.push(digit);
        self.dtmf_deadline = Some(now + DTMF_GAP);
    }

    fn flush_dtmf(&mut self, now: Instant) {
        self.dtmf_deadline = None;
        let keys = std::mem::take(&mut self.dtmf);
        if keys.is_empty() {
            return;
        }
        self.unheard = None;
        let at_ms = self.ms(now);
        self.transcript.push(TranscriptEntry {
            speaker: Speaker::Caller,
            text: format!("[keys {keys}]"),
            at_ms,
            interrupted: false,
        });
        let idx = self.turns.len();
        self.turns.push(TurnLatency {
            turn: u32::try_from(idx + 1).unwrap_or(u32::MAX),
            speech_end_ms: at_ms,
            stt_final_ms: None,
            ..TurnLatency::default()
        });
        self.clocks.push(TurnClock::new(now, now));
        self.start_reply(LlmInput::Dtmf(keys), Some(idx));
    }

    fn start_reply(&mut self, input: LlmInput, latency: Option<usize>) {
        self.cancel_reply();
        self.next_reply += 1;
        self.llm_rx = Some(self.llm.respond(input));
        if let Some(idx) = latency {
            self.awaiting_audio.push((self.next_reply, idx));
        }
        self.reply = Some(Reply::new(self.next_reply, latency, false));
    }

    /// Say `text` without asking the dialogue (resuming after a wordless interruption).
    fn speak_text(&mut self, text: String) {
        self.cancel_reply();
        self.next_reply += 1;
        let mut reply = Reply::new(self.next_reply, None, true);
        reply.sentences.extend(reply.splitter.push(&text));
        reply.sentences.extend(reply.splitter.finish());
        self.reply = Some(reply);
        self.pump_tts();
    }

    fn cancel_reply(&mut self) {
        self.llm_rx = None;
        self.tts_rx = None;
        self.reply = None;
    }

    fn latency_mut(&mut self) -> Option<&mut TurnLatency> {
        let idx = self.reply.as_ref()?.latency?;
        self.turns.get_mut(idx)
    }

    fn on_llm(&mut self, ev: Option<Result<LlmEvent, EngineError>>) {
        let now = Instant::now();
        let now_ms = self.ms(now);
        match ev {
            Some(Ok(LlmEvent::Text(t))) => {
                if let Some(l) = self.latency_mut() {
                    if l.llm_first_token_ms.is_none() {
                        l.llm_first_token_ms = Some(now_ms);
                    }
                }
                if let Some(r) = &mut self.reply {
                    let chunks = r.splitter.push(&t);
                    r.sentences.extend(chunks);
                }
                self.pump_tts();
            }
            Some(Ok(LlmEvent::Next(step))) => {
                if let Some(r) = &mut self.reply {
                    r.next = step;
                }
            }
            Some(Ok(LlmEvent::Usage(u))) => {
                let l = &mut self.usage.llm;
                l.input_tokens += u.input_tokens;
                l.output_tokens += u.output_tokens;
                l.cache_read_tokens += u.cache_read_tokens;
                l.cache_write_tokens += u.cache_write_tokens;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "dialogue engine failed");
                self.errors.push(e.to_string());
                self.llm_rx = None;
                if let Some(r) = &mut self.reply {
                    r.llm_done = true;
                    if r.sentences.is_empty() && r.synth.is_none() {
                        r.sentences
                            .push_back(self.cfg.agent.spec.fallback_reply.clone());
                    }
                }
                self.pump_tts();
            }
            None => {
                self.llm_rx = None;
                if let Some(r) = &mut self.reply {
                    r.llm_done = true;
                    r.sentences.extend(r.splitter.finish());
                }
                self.pump_tts();
            }
        }
    }

    /// Start synthesising the next sentence if none is being synthesised; finish the reply
    /// when everything is queued.
    fn pump_tts(&mut self) {
        let now = Instant::now();
        let now_ms = self.ms(now);
        let Some(r) = &mut self.reply else { return };
        if r.synth.is_some() {
            return;
        }
        if let Some(text) = r.sentences.pop_front() {
            let segment = self.next_segment;
            self.next_segment += 1;
            let voice = self.cfg.agent.settings.tts.voice.clone();
            self.tts_rx = Some(self.cfg.engines.tts.synthesize(&text, voice.as_deref()));
            r.synth = Some((segment, text.clone()));
            // The reply's line in the transcript grows sentence by sentence.
            let entry = match r.entry {
                Some(e) => e,
                None => {
                    self.transcript.push(TranscriptEntry {
                        speaker: Speaker::Agent,
                        text: String::new(),
                        at_ms: now_ms,
                        interrupted: false,
                    });
                    let e = self.transcript.len() - 1;
                    r.entry = Some(e);
                    e
                }
            };
            if let Some(t) = self.transcript.get_mut(entry) {
                if !t.text.is_empty() {
                    t.text.push(' ');
                }
                t.text.push_str(&text);
            }
            self.audible.push((segment, text, entry));
            if let Some(l) = r.latency.and_then(|i| self.turns.get_mut(i)) {
                if l.first_sentence_ms.is_none() {
                    l.first_sentence_ms = Some(now_ms);
                }
            }
            if let Some(c) = r.latency.and_then(|i| self.clocks.get_mut(i)) {
                c.tts_asked.get_or_insert(now);
            }
            return;
        }
        if r.llm_done {
            // Everything of this reply is queued: then what?
            match std::mem::replace(&mut r.next, NextStep::Listen) {
                NextStep::Listen => {}
                NextStep::Hangup => {
                    self.out.push_hangup("agent hangup".into());
                    self.hanging_up = true;
                }
                NextStep::Transfer(target) => {
                    self.out.push_transfer(target);
                    self.hanging_up = true;
                }
            }
            self.reply = None;
            self.last_activity = now;
        }
    }

    fn on_tts(&mut self, ev: Option<Result<TtsEvent, EngineError>>) {
        let now = Instant::now();
        let now_ms = self.ms(now);
        match ev {
            Some(Ok(TtsEvent::Audio(pcm))) => {
                if let Some(l) = self.latency_mut() {
                    if l.tts_first_byte_ms.is_none() {
                        l.tts_first_byte_ms = Some(now_ms);
                    }
                }
                let Some(r) = &mut self.reply else { return };
                let Some((segment, _)) = &r.synth else { return };
                r.carry.extend_from_slice(&pcm);
                let carry = std::mem::take(&mut r.carry);
                let whole = carry.len() >= FRAME_SAMPLES;
                r.carry = self.out.push_audio(r.id, *segment, &carry, false);
                if let Some(i) = r.latency {
                    self.mark_queued(i, now, whole);
                }
            }
            Some(Ok(TtsEvent::Usage { characters })) => self.usage.tts_characters += characters,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "TTS failed");
                self.errors.push(e.to_string());
                self.end_segment();
            }
            None => self.end_segment(),
        }
    }

    /// The sentence being synthesised is complete.
    fn end_segment(&mut self) {
        self.tts_rx = None;
        let now = Instant::now();
        if let Some(r) = &mut self.reply {
            if let Some((segment, _)) = r.synth.take() {
                let carry = std::mem::take(&mut r.carry);
                let some = !carry.is_empty();
                self.out.push_audio(r.id, segment, &carry, true);
                if let Some(i) = r.latency {
                    self.mark_queued(i, now, some);
                }
            }
        }
        self.pump_tts();
    }

    /// TTS audio arrived for turn `i` (`queued`: a whole frame went to the out queue).
    fn mark_queued(&mut self, i: usize, now: Instant, queued: bool) {
        let Some(c) = self.clocks.get_mut(i) else {
            return;
        };
        c.tts_first.get_or_insert(now);
        if queued && c.queued.is_none() {
            c.queued = Some(now);
            let platform = c.platform();
            let span = now.saturating_duration_since(c.decided);
            if let Some(l) = self.turns.get_mut(i) {
                l.decided_to_queued_us = Some(u64::try_from(span.as_micros()).unwrap_or(u64::MAX));
                l.platform_us = platform.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            }
        }
    }

    fn on_played(&mut self, p: Played) {
        match p {
            Played::ReplyStarted { reply, at } => {
                let Some(pos) = self.awaiting_audio.iter().position(|(r, _)| *r == reply) else {
                    return;
                };
                let (_, idx) = self.awaiting_audio.remove(pos);
                let at_ms = self.ms(at);
                if let Some(l) = self.turns.get_mut(idx) {
                    l.first_audio_ms = Some(at_ms);
                    l.total_ms = Some(at_ms.saturating_sub(l.speech_end_ms));
                    // Engine time: STT final after speech end, LLM first token after the
                    // final, TTS first byte after the first sentence.
                    let d = |a: Option<u64>, b: Option<u64>| match (a, b) {
                        (Some(a), Some(b)) => b.saturating_sub(a),
                        _ => 0,
                    };
                    let asked = l.stt_final_ms.or(Some(l.speech_end_ms));
                    l.engine_wait_ms = Some(
                        d(Some(l.speech_end_ms), l.stt_final_ms)
                            + d(asked, l.llm_first_token_ms)
                            + d(l.first_sentence_ms, l.tts_first_byte_ms),
                    );
                }
            }
            Played::Drained { at } => {
                // Everything queued was heard.
                if !self.out.is_playing() {
                    for (segment, _, _) in self.audible.drain(..) {
                        self.out.forget(segment);
                    }
                    self.last_activity = at;
                }
            }
        }
    }

    /// The caller interrupted: stop talking, keep the transcript to what was heard.
    fn interrupt(&mut self) {
        if self.audible.is_empty() && self.reply.is_none() {
            return;
        }
        if self.hanging_up {
            // The goodbye is already on its way; let it finish.
            return;
        }
        let counts = self.out.clear();
        let mut heard_text = String::new();
        let mut unheard = Vec::new();
        let mut entries = Vec::new();
        for (segment, text, entry) in self.audible.drain(..) {
            let c = counts.get(&segment).copied().unwrap_or_default();
            let (heard, rest) = split_heard(&text, c);
            if !heard.is_empty() {
                if !heard_text.is_empty() {
                    heard_text.push(' ');
                }
                heard_text.push_str(&heard);
            }
            if !rest.is_empty() {
                unheard.push(rest);
            }
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        // Sentences not even synthesised yet are unheard too.
        if let Some(r) = &self.reply {
            unheard.extend(r.sentences.iter().cloned());
        }
        for e in entries {
            if let Some(t) = self.transcript.get_mut(e) {
                t.text.clone_from(&heard_text);
                t.interrupted = true;
            }
        }
        self.llm.truncate_last(&heard_text);
        self.cancel_reply();
        let rest = unheard.join(" ");
        self.unheard = (!rest.trim().is_empty()).then_some(rest);
        tracing::debug!(call = %self.ids.transport_id, "barge-in: agent stopped");
    }

    fn finish(mut self) -> CallReport {
        // What was still queued when the call ended was not heard.
        if !self.audible.is_empty() {
            let counts = self.out.clear();
            let mut by_entry: Vec<(usize, String)> = Vec::new();
            let mut cut = false;
            for (segment, text, entry) in self.audible.drain(..) {
                let c = counts.get(&segment).copied().unwrap_or_default();
                let (heard, rest) = split_heard(&text, c);
                cut |= !rest.is_empty();
                match by_entry.iter_mut().find(|(e, _)| *e == entry) {
                    Some((_, t)) => {
                        if !heard.is_empty() {
                            t.push(' ');
                            t.push_str(&heard);
                        }
                    }
                    None => by_entry.push((entry, heard)),
                }
            }
            if cut {
                for (e, text) in by_entry {
                    if let Some(t) = self.transcript.get_mut(e) {
                        t.text = text.trim().to_string();
                        t.interrupted = true;
                    }
                }
            }
        }
        self.transcript
            .retain(|e| !(e.speaker == Speaker::Agent && e.text.is_empty()));
        let mut totals: Vec<u64> = self.turns.iter().filter_map(|t| t.total_ms).collect();
        totals.sort_unstable();
        CallReport {
            agent: self.cfg.agent.spec.name.clone(),
            engines: EngineNames {
                stt: self.cfg.engines.stt.name().to_string(),
                llm: self.cfg.engines.llm.name().to_string(),
                tts: self.cfg.engines.tts.name().to_string(),
            },
            latency: LatencySummary {
                turns: totals.len(),
                p50_ms: percentile(&totals, 50.0),
                p90_ms: percentile(&totals, 90.0),
                p99_ms: percentile(&totals, 99.0),
            },
            ids: self.ids,
            transcript: self.transcript,
            turns: self.turns,
            usage: self.usage,
            engine_errors: self.errors,
            engine_switches: Vec::new(),
            dropped_frames: self.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn recv_opt_stt(stt: &mut Option<SttStream>) -> Option<Result<SttEvent, EngineError>> {
    match stt {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Split `text` into what the caller heard and the rest, by the share of its frames that
/// played (by words: a word counts as heard once its share of the audio has played).
pub fn split_heard(text: &str, count: SegmentCount) -> (String, String) {
    let words: Vec<&str> = text.split_whitespace().collect();
    if count.queued == 0 || count.played == 0 {
        return (String::new(), words.join(" "));
    }
    if count.played >= count.queued {
        return (words.join(" "), String::new());
    }
    let n = (words.len() as u64 * u64::from(count.played) / u64::from(count.queued)) as usize;
    (words[..n].join(" "), words[n..].join(" "))
}
