//! Text to speech, offline.
//!
//! - [`espeak`]: espeak-ng through a small hand-written FFI (`libespeak-ng`): formant
//!   synthesis, robotic but clear, ~ms per sentence, dozens of languages.
//! - [`flite`]: CMU Flite's 16 kHz US English diphone voice, the alternative (`tts = "flite"`).

pub mod espeak;
pub mod flite;

pub use espeak::EspeakTts;
pub use flite::FliteTts;

/// What can go wrong synthesizing speech.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    /// The engine could not start (its data directory is missing or unreadable).
    #[error("speech synthesizer failed to initialise: {0}")]
    Init(String),
    /// No voice by that name.
    #[error("unknown voice {0:?}")]
    UnknownVoice(String),
    /// The speaking rate is outside what the engine supports.
    #[error("speaking rate {rate} wpm outside {min}..={max}")]
    InvalidRate {
        /// The rate asked for.
        rate: u32,
        /// The slowest rate supported.
        min: u32,
        /// The fastest rate supported.
        max: u32,
    },
    /// The text is longer than one synthesis call accepts.
    #[error("text of {len} bytes exceeds the limit of {max}")]
    TextTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The engine reported a failure while synthesizing.
    #[error("speech synthesis failed: {0}")]
    Synthesis(String),
}
