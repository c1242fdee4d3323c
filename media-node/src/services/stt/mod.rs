//! Speech to text, offline.
//!
//! - [`sphinx`]: pocketsphinx through a small hand-written FFI (`libpocketsphinx`): grammar
//!   recognition of the phrases an agent expects, or open vocabulary.

pub mod sphinx;

pub use sphinx::{Grammar, Recognized, SphinxConfig, SphinxModel, SphinxStream};

use std::path::PathBuf;

/// What can go wrong recognizing speech.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SttError {
    /// A model file is missing or unreadable (install `pocketsphinx-en-us`, or fix the path).
    #[error("speech model file missing or unreadable: {0}")]
    ModelMissing(PathBuf),
    /// The recognizer could not be created.
    #[error("speech recognizer failed to initialise: {0}")]
    Init(String),
    /// The phrase list could not be made into a grammar.
    #[error("grammar: {0}")]
    Grammar(String),
    /// The decoder failed while decoding.
    #[error("speech recognition failed: {0}")]
    Decode(String),
}
