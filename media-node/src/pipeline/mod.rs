//! The realtime AI pipeline of a call: VAD → turn detection → STT → dialogue/LLM → sentence
//! splitter → TTS → audio out, with barge-in. The decisions (turns, interruptions, what to
//! say) are pure and tested in virtual time; engines sit behind traits.

pub mod dialogue;
pub mod sentences;
pub mod turn;
