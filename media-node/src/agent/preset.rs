//! Quality presets: concrete engine settings for a latency/quality/cost trade-off. An agent
//! names one (`preset = "balanced"`) and may override single engines in `[engines]`.

use serde::{Deserialize, Serialize};

/// The five presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    UltraLowLatency,
    LowLatency,
    Balanced,
    HighQuality,
    CostOptimized,
}

impl Preset {
    pub const ALL: [Preset; 5] = [
        Preset::UltraLowLatency,
        Preset::LowLatency,
        Preset::Balanced,
        Preset::HighQuality,
        Preset::CostOptimized,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::UltraLowLatency => "ultra_low_latency",
            Preset::LowLatency => "low_latency",
            Preset::Balanced => "balanced",
            Preset::HighQuality => "high_quality",
            Preset::CostOptimized => "cost_optimized",
        }
    }

    /// The concrete settings of this preset.
    pub fn settings(self) -> PresetSettings {
        use LlmEngine::*;
        use SttEngine::*;
        use TtsEngine::*;
        match self {
            Preset::UltraLowLatency => PresetSettings {
                stt: SttSettings {
                    engine: Deepgram,
                    model: "nova-3".into(),
                    interim_results: true,
                    endpointing_ms: 200,
                },
                llm: LlmSettings {
                    engine: Anthropic,
                    model: "claude-3-5-haiku-latest".into(),
                    max_tokens: 120,
                    temperature: 0.4,
                    prompt_caching: true,
                },
                tts: TtsSettings {
                    engine: Cartesia,
                    model: "sonic-turbo".into(),
                    voice: None,
                },
                turn: TurnSettings {
                    end_of_turn_silence_ms: 350,
                    min_interruption_ms: 250,
                    min_interruption_words: 1,
                },
                sentence_streaming: true,
                greeting_prefetch: true,
            },
            Preset::LowLatency => PresetSettings {
                stt: SttSettings {
                    engine: Deepgram,
                    model: "nova-3".into(),
                    interim_results: true,
                    endpointing_ms: 300,
                },
                llm: LlmSettings {
                    engine: Anthropic,
                    model: "claude-3-5-haiku-latest".into(),
                    max_tokens: 200,
                    temperature: 0.5,
                    prompt_caching: true,
                },
                tts: TtsSettings {
                    engine: Cartesia,
                    model: "sonic-2".into(),
                    voice: None,
                },
                turn: TurnSettings {
                    end_of_turn_silence_ms: 500,
                    min_interruption_ms: 350,
                    min_interruption_words: 2,
                },
                sentence_streaming: true,
                greeting_prefetch: true,
            },
            Preset::Balanced => PresetSettings {
                stt: SttSettings {
                    engine: Deepgram,
                    model: "nova-3".into(),
                    interim_results: true,
                    endpointing_ms: 400,
                },
                llm: LlmSettings {
                    engine: Anthropic,
                    model: "claude-sonnet-4-5".into(),
                    max_tokens: 300,
                    temperature: 0.6,
                    prompt_caching: true,
                },
                tts: TtsSettings {
                    engine: Cartesia,
                    model: "sonic-2".into(),
                    voice: None,
                },
                turn: TurnSettings {
                    end_of_turn_silence_ms: 600,
                    min_interruption_ms: 450,
                    min_interruption_words: 2,
                },
                sentence_streaming: true,
                greeting_prefetch: true,
            },
            Preset::HighQuality => PresetSettings {
                stt: SttSettings {
                    engine: Deepgram,
                    model: "nova-3".into(),
                    interim_results: true,
                    endpointing_ms: 500,
                },
                llm: LlmSettings {
                    engine: Anthropic,
                    model: "claude-sonnet-4-5".into(),
                    max_tokens: 500,
                    temperature: 0.7,
                    prompt_caching: true,
                },
                tts: TtsSettings {
                    engine: ElevenLabs,
                    model: "eleven_turbo_v2_5".into(),
                    voice: None,
                },
                turn: TurnSettings {
                    end_of_turn_silence_ms: 800,
                    min_interruption_ms: 500,
                    min_interruption_words: 3,
                },
                sentence_streaming: true,
                greeting_prefetch: true,
            },
            Preset::CostOptimized => PresetSettings {
                stt: SttSettings {
                    engine: Deepgram,
                    model: "nova-2".into(),
                    interim_results: true,
                    endpointing_ms: 400,
                },
                llm: LlmSettings {
                    engine: Anthropic,
                    model: "claude-3-5-haiku-latest".into(),
                    max_tokens: 150,
                    temperature: 0.5,
                    prompt_caching: true,
                },
                tts: TtsSettings {
                    engine: Cartesia,
                    model: "sonic".into(),
                    voice: None,
                },
                turn: TurnSettings {
                    end_of_turn_silence_ms: 600,
                    min_interruption_ms: 450,
                    min_interruption_words: 2,
                },
                sentence_streaming: true,
                greeting_prefetch: true,
            },
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Speech-to-text engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SttEngine {
    Deepgram,
    /// pocketsphinx, with a grammar from the agent's expected phrases.
    Embedded,
}

/// Dialogue engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmEngine {
    Anthropic,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    /// The offline dialogue engine driven by the agent's intents.
    Embedded,
}

/// Text-to-speech engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtsEngine {
    Cartesia,
    #[serde(rename = "elevenlabs")]
    ElevenLabs,
    /// espeak-ng.
    Embedded,
    /// CMU Flite (16 kHz US English), the other offline voice.
    Flite,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SttSettings {
    pub engine: SttEngine,
    pub model: String,
    pub interim_results: bool,
    /// The engine's own endpointing (Deepgram `endpointing`), in ms of silence.
    pub endpointing_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmSettings {
    pub engine: LlmEngine,
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f32,
    /// `cache_control` on the system prompt and tools (Anthropic).
    pub prompt_caching: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtsSettings {
    pub engine: TtsEngine,
    pub model: String,
    /// Engine voice id; `None`: the agent's `voice`.
    pub voice: Option<String>,
}

/// When a turn ends and when the caller's speech interrupts the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnSettings {
    /// Silence after speech that ends the caller's turn.
    pub end_of_turn_silence_ms: u32,
    /// Caller speech shorter than this while the agent talks never interrupts (backchannels,
    /// coughs).
    pub min_interruption_ms: u32,
    /// ... nor speech with fewer recognised words than this (when the STT has words yet).
    pub min_interruption_words: u32,
}

/// Everything a preset fixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetSettings {
    pub stt: SttSettings,
    pub llm: LlmSettings,
    pub tts: TtsSettings,
    pub turn: TurnSettings,
    /// LLM text goes to TTS sentence by sentence as it streams.
    pub sentence_streaming: bool,
    /// The greeting is synthesised before the call is answered.
    pub greeting_prefetch: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_optimized_is_what_the_issue_asks() {
        let s = Preset::CostOptimized.settings();
        assert_eq!(s.stt.engine, SttEngine::Deepgram);
        assert_eq!(s.stt.model, "nova-2");
        assert_eq!(s.tts.engine, TtsEngine::Cartesia);
        assert_eq!(s.tts.model, "sonic");
        assert_eq!(s.llm.engine, LlmEngine::Anthropic);
        assert!(s.llm.model.contains("haiku"));
        assert!(s.llm.prompt_caching);
        assert_eq!(s.llm.max_tokens, 150);
        assert!(s.sentence_streaming && s.greeting_prefetch);
    }

    #[test]
    fn latency_presets_end_turns_sooner() {
        let t = |p: Preset| p.settings().turn.end_of_turn_silence_ms;
        assert!(t(Preset::UltraLowLatency) < t(Preset::LowLatency));
        assert!(t(Preset::LowLatency) < t(Preset::Balanced));
        assert!(t(Preset::Balanced) < t(Preset::HighQuality));
        for p in Preset::ALL {
            let name = serde_json::to_string(&p).unwrap();
            assert_eq!(name, format!("\"{}\"", p.name()));
        }
    }
}
