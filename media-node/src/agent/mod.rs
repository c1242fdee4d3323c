//! Agents: the spec file that says who an agent is and what it does, and the quality
//! presets it builds on.

pub mod preset;
pub mod spec;

pub use preset::{LlmEngine, Preset, PresetSettings, SttEngine, TtsEngine, TurnSettings};
pub use spec::{AgentSpec, Intent, IntentAction, ResolvedAgent, Slot, SlotKind, SpecError, Tool};
