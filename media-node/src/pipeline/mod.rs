//! The realtime AI pipeline of a call: VAD → turn detection → STT → dialogue/LLM → sentence
//! splitter → TTS → audio out, with barge-in. The decisions (turns, interruptions, what to
//! say) are pure and tested in virtual time; engines sit behind traits
//! ([`engines`]); [`call`] is the one task per call that moves data between them.

pub mod apps;
pub mod cache;
pub mod call;
pub mod dialogue;
pub mod embedded;
pub mod engines;
pub mod fake;
pub mod out;
pub mod sentences;
pub mod turn;
pub mod vad;
