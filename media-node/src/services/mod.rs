//! Embedded, offline speech engines for the realtime pipeline (DESIGN.md §1, media plane:
//! "pipeline: VAD → turn → STT → LLM → TTS"; §4 "Speech, offline").
//!
//! Small synchronous building blocks that work with nothing outside the machine; the pipeline
//! wraps them into its per-call async engines (on blocking threads: every call here may take
//! milliseconds).
//!
//! - [`vad`]: WebRTC voice activity detection per 20 ms frame;
//! - [`tts`]: speech synthesis (espeak-ng through a small hand-written FFI);
//! - [`stt`]: speech recognition (pocketsphinx through a small hand-written FFI), with grammars
//!   compiled from the phrases an agent expects, or open vocabulary.
//!
//! All audio in and out is the node's internal format: 16 kHz mono signed 16-bit PCM
//! ([`crate::codec`]).
//!
//! The native libraries (Debian `libespeak-ng-dev`, `libpocketsphinx-dev`) are needed to link;
//! their data (`espeak-ng-data`, `pocketsphinx-en-us`) only when an engine is created, which
//! then fails with a typed error naming what is missing.

pub mod stt;
pub mod tts;
pub mod vad;
