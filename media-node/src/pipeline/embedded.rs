//! The offline engines behind the pipeline's traits: pocketsphinx STT with a grammar of the
//! agent's expected phrases, espeak-ng TTS, and webrtc-vad. The native engines are
//! synchronous and take milliseconds per call, so each STT stream decodes on its own thread
//! and each synthesis runs on tokio's blocking pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::engines::{
    EngineError, SttEngine, SttEvent, SttInput, SttOptions, SttStream, TtsEngine, TtsEvent,
};
use super::vad::VoiceDetector;
use crate::codec::FRAME_SAMPLES;
use crate::services::stt::{Grammar, SphinxModel};
use crate::services::tts::{EspeakTts, FliteTts};
use crate::services::vad::{Vad, VadMode};

const STT: &str = "embedded-stt";
const TTS: &str = "embedded-tts";

/// Frames between interim results (pocketsphinx's partial hypothesis is not free).
const INTERIM_EVERY: u32 = 10;

/// pocketsphinx, one decoder per call; grammars are compiled once per phrase list.
pub struct EmbeddedStt {
    model: SphinxModel,
    grammars: Mutex<HashMap<Vec<String>, Grammar>>,
}

impl EmbeddedStt {
    pub fn load() -> Result<Self, EngineError> {
        let model =
            SphinxModel::load_default().map_err(|e| EngineError::fatal(STT, e.to_string()))?;
        Ok(EmbeddedStt {
            model,
            grammars: Mutex::new(HashMap::new()),
        })
    }

    fn grammar(&self, phrases: &[String]) -> Result<Option<Grammar>, EngineError> {
        if phrases.is_empty() {
            return Ok(None);
        }
        let mut cache = self
            .grammars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(g) = cache.get(phrases) {
            return Ok(Some(g.clone()));
        }
        let g = Grammar::from_phrases(&self.model, phrases)
            .map_err(|e| EngineError::fatal(STT, e.to_string()))?;
        if !g.unknown_words().is_empty() {
            tracing::info!(words = ?g.unknown_words(), "words the offline recogniser does not know were left out of the grammar");
        }
        cache.insert(phrases.to_vec(), g.clone());
        Ok(Some(g))
    }

    /// Build the decoders for `phrases` ahead of the first call.
    pub fn prewarm(&self, phrases: &[String], streams: usize) -> Result<(), EngineError> {
        let g = self.grammar(phrases)?;
        self.model
            .prewarm(g.as_ref(), streams)
            .map_err(|e| EngineError::fatal(STT, e.to_string()))
    }
}

impl SttEngine for EmbeddedStt {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn open(&self, options: &SttOptions) -> Result<SttStream, EngineError> {
        let grammar = self.grammar(&options.phrases)?;
        let mut stream = self
            .model
            .stream(grammar.as_ref())
            .map_err(|e| EngineError::fatal(STT, e.to_string()))?;
        let (in_tx, mut in_rx) = mpsc::channel::<SttInput>(256);
        let (ev_tx, ev_rx) = mpsc::channel(32);
        let interims = options.interim_results;
        std::thread::Builder::new()
            .name("vaani-stt".into())
            .spawn(move || {
                let mut audio_ms = 0u64;
                let mut frames = 0u32;
                let mut last_partial = String::new();
                while let Some(input) = in_rx.blocking_recv() {
                    let event = match input {
                        SttInput::Audio(pcm) => {
                            audio_ms += pcm.len() as u64 / 16;
                            if let Err(e) = stream.push(&pcm) {
                                Some(Err(EngineError::fatal(STT, e.to_string())))
                            } else {
                                frames += 1;
                                if interims && frames.is_multiple_of(INTERIM_EVERY) {
                                    stream.partial().filter(|p| *p != last_partial).map(|p| {
                                        last_partial.clone_from(&p);
                                        Ok(SttEvent::Interim(p))
                                    })
                                } else {
                                    None
                                }
                            }
                        }
                        SttInput::EndOfSpeech => {
                            frames = 0;
                            last_partial.clear();
                            let fin = match stream.finish() {
                                Ok(Some(r)) => SttEvent::Final {
                                    text: r.text,
                                    confidence: r.confidence as f32,
                                },
                                Ok(None) => SttEvent::Final {
                                    text: String::new(),
                                    confidence: 0.0,
                                },
                                Err(e) => {
                                    let _ = ev_tx
                                        .blocking_send(Err(EngineError::fatal(STT, e.to_string())));
                                    continue;
                                }
                            };
                            let _ = ev_tx.blocking_send(Ok(SttEvent::Usage { audio_ms }));
                            Some(Ok(fin))
                        }
                    };
                    if let Some(ev) = event {
                        if ev_tx.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| EngineError::fatal(STT, format!("no decoder thread: {e}")))?;
        Ok(SttStream {
            input: in_tx,
            events: ev_rx,
        })
    }
}

/// espeak-ng.
pub struct EmbeddedTts {
    default_voice: String,
    rate_wpm: u32,
    voices: Mutex<HashMap<String, Arc<EspeakTts>>>,
}

impl EmbeddedTts {
    /// Checks that espeak-ng and `voice` work.
    pub fn new(voice: &str, rate_wpm: u32) -> Result<Self, EngineError> {
        let tts =
            EspeakTts::new(voice, rate_wpm).map_err(|e| EngineError::fatal(TTS, e.to_string()))?;
        let mut voices = HashMap::new();
        voices.insert(voice.to_string(), Arc::new(tts));
        Ok(EmbeddedTts {
            default_voice: voice.to_string(),
            rate_wpm,
            voices: Mutex::new(voices),
        })
    }

    fn voice(&self, voice: Option<&str>) -> Result<Arc<EspeakTts>, EngineError> {
        let name = voice.unwrap_or(&self.default_voice);
        let mut voices = self
            .voices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = voices.get(name) {
            return Ok(v.clone());
        }
        let v = Arc::new(
            EspeakTts::new(name, self.rate_wpm)
                .map_err(|e| EngineError::fatal(TTS, e.to_string()))?,
        );
        voices.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

impl TtsEngine for EmbeddedTts {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(4);
        let tts = match self.voice(voice) {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.try_send(Err(e));
                return rx;
            }
        };
        let text = text.to_string();
        tokio::task::spawn_blocking(move || {
            let characters = text.chars().count() as u64;
            match tts.synthesize(&text) {
                Ok(pcm) => {
                    let _ = tx.blocking_send(Ok(TtsEvent::Audio(pcm)));
                    let _ = tx.blocking_send(Ok(TtsEvent::Usage { characters }));
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(EngineError::fatal(TTS, e.to_string())));
                }
            }
        });
        rx
    }
}

/// Flite, the other offline voice (`tts = ["flite"]` in an agent's chain).
pub struct EmbeddedFlite {
    tts: Arc<FliteTts>,
}

impl EmbeddedFlite {
    pub fn new() -> Result<Self, EngineError> {
        Ok(EmbeddedFlite {
            tts: Arc::new(FliteTts::new().map_err(|e| EngineError::fatal("flite", e.to_string()))?),
        })
    }
}

impl TtsEngine for EmbeddedFlite {
    fn name(&self) -> &'static str {
        "flite"
    }

    fn synthesize(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(4);
        let tts = self.tts.clone();
        let text = text.to_string();
        tokio::task::spawn_blocking(move || {
            let characters = text.chars().count() as u64;
            let ev = tts
                .synthesize(&text)
                .map(TtsEvent::Audio)
                .map_err(|e| EngineError::fatal("flite", e.to_string()));
            let ok = ev.is_ok();
            let _ = tx.blocking_send(ev);
            if ok {
                let _ = tx.blocking_send(Ok(TtsEvent::Usage { characters }));
            }
        });
        rx
    }
}

/// webrtc-vad as the pipeline's voice detector.
pub struct WebrtcVad(Vad);

impl WebrtcVad {
    pub fn new(mode: VadMode) -> Self {
        WebrtcVad(Vad::new(mode))
    }
}

impl VoiceDetector for WebrtcVad {
    fn is_voiced(&mut self, frame: &[i16]) -> bool {
        match <&[i16; FRAME_SAMPLES]>::try_from(frame) {
            Ok(f) => self.0.is_speech(f),
            Err(_) => false,
        }
    }
}
