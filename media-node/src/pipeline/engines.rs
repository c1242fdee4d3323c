//! The engine traits the pipeline talks to. Every engine works as a task behind channels, so
//! the pipeline's one loop can `select!` over all of them and cancel any by dropping its
//! handle. Audio is the node's internal format: 16 kHz mono i16.
//!
//! - STT: [`SttEngine::open`] → an [`SttStream`]: audio in, interim/final text out.
//! - Dialogue/LLM: [`LlmEngine::session`] → an [`LlmSession`] per call (it keeps the
//!   conversation); each [`LlmSession::respond`] streams text and actions.
//! - TTS: [`TtsEngine::synthesize`] streams audio for one chunk of text.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::dialogue::NextStep;

/// Why an engine failed. `retryable` failures (timeouts, 5xx, dropped sockets) make a
/// fallback chain switch to its next engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{engine}: {message}")]
pub struct EngineError {
    pub engine: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl EngineError {
    pub fn retryable(engine: &'static str, message: impl Into<String>) -> Self {
        EngineError {
            engine,
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(engine: &'static str, message: impl Into<String>) -> Self {
        EngineError {
            engine,
            message: message.into(),
            retryable: false,
        }
    }
}

/// What the pipeline sends an STT stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttInput {
    /// 20 ms of caller audio.
    Audio(Vec<i16>),
    /// The caller stopped speaking: finalise what was heard.
    EndOfSpeech,
}

/// What an STT stream reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    Interim(String),
    /// The text of one utterance (possibly empty: nothing recognised).
    Final {
        text: String,
        confidence: f32,
    },
    /// Audio sent to the engine so far in this stream (for cost accounting).
    Usage {
        audio_ms: u64,
    },
}

/// One call's STT stream. Dropping it ends the stream.
pub struct SttStream {
    pub input: mpsc::Sender<SttInput>,
    pub events: mpsc::Receiver<Result<SttEvent, EngineError>>,
}

/// What an STT stream is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SttOptions {
    pub language: String,
    pub model: String,
    /// Phrases the caller is expected to say (grammars, keyword boosts).
    pub phrases: Vec<String>,
    pub interim_results: bool,
}

pub trait SttEngine: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn open(&self, options: &SttOptions) -> Result<SttStream, EngineError>;
}

/// What the caller did that the dialogue must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmInput {
    /// The call was answered: greet.
    Start,
    Utterance(String),
    /// Keys pressed (one key, or several collected for a digits slot).
    Dtmf(String),
    /// The caller was silent for the agent's silence timeout.
    Silence,
}

/// Who said a line of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Caller,
    Agent,
}

/// Token and cache counts of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LlmUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// What a response streams.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Text(String),
    /// What to do after speaking.
    Next(NextStep),
    Usage(LlmUsage),
}

/// One call's conversation with a dialogue engine.
pub trait LlmSession: Send {
    /// Answer `input`. The stream ends (channel closed) when the response is complete;
    /// dropping the receiver cancels it.
    fn respond(&mut self, input: LlmInput) -> mpsc::Receiver<Result<LlmEvent, EngineError>>;
    /// The caller heard only `spoken` of the last response (barge-in): keep the history
    /// truthful.
    fn truncate_last(&mut self, spoken: &str);
    /// Replace what this session remembers of the conversation with `history` (oldest
    /// first). A fallback chain calls it when it moves a call to this engine mid-call, so
    /// the new engine knows what was said. Engines that keep no history ignore it.
    fn restore(&mut self, _history: &[(Speaker, String)]) {}
}

pub trait LlmEngine: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn session(&self) -> Result<Box<dyn LlmSession>, EngineError>;
}

/// What a synthesis streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtsEvent {
    /// 16 kHz mono audio, any length.
    Audio(Vec<i16>),
    /// Characters billed for this synthesis.
    Usage { characters: u64 },
}

pub trait TtsEngine: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Synthesise `text`. The stream ends when the audio is complete; dropping the receiver
    /// cancels it.
    fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>>;
}

/// The engines one call uses.
#[derive(Clone)]
pub struct Engines {
    pub stt: Arc<dyn SttEngine>,
    pub llm: Arc<dyn LlmEngine>,
    pub tts: Arc<dyn TtsEngine>,
}
