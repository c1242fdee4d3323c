//! Engines with fixed delays and scripted results, for tests and the platform-latency
//! benchmark: they take no CPU worth measuring, so what a turn costs beyond their delays is
//! what the platform added.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::engines::{
    EngineError, LlmEngine, LlmEvent, LlmInput, LlmSession, SttEngine, SttEvent, SttInput,
    SttOptions, SttStream, TtsEngine, TtsEvent,
};
use crate::codec::FRAME_SAMPLES;

/// One wait on a fake engine, measured by the engine: from the request reaching it to its
/// answer leaving it (timer overshoot included, so what remains of a turn is the platform's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineWait {
    pub kind: &'static str,
    pub start: Instant,
    pub end: Instant,
}

/// Where fake engines record their waits, in order.
pub type WaitLog = Arc<Mutex<Vec<EngineWait>>>;

fn record(log: &Option<WaitLog>, kind: &'static str, start: Instant) {
    if let Some(log) = log {
        let end = Instant::now();
        if let Ok(mut l) = log.lock() {
            l.push(EngineWait { kind, start, end });
        }
    }
}

/// STT that answers each end of speech with the next scripted text after `delay`.
pub struct FakeStt {
    pub delay: Duration,
    pub script: Arc<Mutex<VecDeque<String>>>,
    /// Said when the script is used up (empty: nothing recognised).
    pub otherwise: String,
    pub log: Option<WaitLog>,
}

impl FakeStt {
    pub fn new(delay: Duration, lines: &[&str]) -> Self {
        FakeStt {
            delay,
            script: Arc::new(Mutex::new(lines.iter().map(|s| s.to_string()).collect())),
            otherwise: String::new(),
            log: None,
        }
    }

    /// Recognises `text` every time.
    pub fn repeating(delay: Duration, text: &str) -> Self {
        FakeStt {
            delay,
            script: Arc::new(Mutex::new(VecDeque::new())),
            otherwise: text.to_string(),
            log: None,
        }
    }
}

impl SttEngine for FakeStt {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn open(&self, _options: &SttOptions) -> Result<SttStream, EngineError> {
        let (in_tx, mut in_rx) = mpsc::channel::<SttInput>(256);
        let (ev_tx, ev_rx) = mpsc::channel(16);
        let delay = self.delay;
        let script = self.script.clone();
        let otherwise = self.otherwise.clone();
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut audio_ms = 0u64;
            while let Some(input) = in_rx.recv().await {
                match input {
                    SttInput::Audio(pcm) => {
                        audio_ms += (pcm.len() as u64 * 1000) / 16_000;
                    }
                    SttInput::EndOfSpeech => {
                        let start = Instant::now();
                        let text = script
                            .lock()
                            .ok()
                            .and_then(|mut s| s.pop_front())
                            .unwrap_or_else(|| otherwise.clone());
                        let tx = ev_tx.clone();
                        let log = log.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep_until((start + delay).into()).await;
                            record(&log, "stt", start);
                            let _ = tx
                                .send(Ok(SttEvent::Final {
                                    text,
                                    confidence: 1.0,
                                }))
                                .await;
                        });
                        let _ = ev_tx.send(Ok(SttEvent::Usage { audio_ms })).await;
                    }
                }
            }
        });
        Ok(SttStream {
            input: in_tx,
            events: ev_rx,
        })
    }
}

/// Wraps a dialogue engine, delaying each response's first token by `delay`.
pub struct DelayedLlm<E> {
    pub inner: E,
    pub delay: Duration,
    pub log: Option<WaitLog>,
}

impl<E: LlmEngine> LlmEngine for DelayedLlm<E> {
    fn name(&self) -> &'static str {
        "delayed"
    }

    fn session(&self) -> Result<Box<dyn LlmSession>, EngineError> {
        Ok(Box::new(DelayedSession {
            inner: self.inner.session()?,
            delay: self.delay,
            log: self.log.clone(),
        }))
    }
}

struct DelayedSession {
    inner: Box<dyn LlmSession>,
    delay: Duration,
    log: Option<WaitLog>,
}

impl LlmSession for DelayedSession {
    fn respond(&mut self, input: LlmInput) -> mpsc::Receiver<Result<LlmEvent, EngineError>> {
        let start = Instant::now();
        let mut inner = self.inner.respond(input);
        let (tx, rx) = mpsc::channel(64);
        let delay = self.delay;
        let log = self.log.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + delay).into()).await;
            record(&log, "llm", start);
            while let Some(ev) = inner.recv().await {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn truncate_last(&mut self, spoken: &str) {
        self.inner.truncate_last(spoken);
    }
}

/// TTS that answers after `first_byte` with a 440 Hz tone, `ms_per_char` long per
/// character, in 20 ms chunks as fast as they are read.
pub struct FakeTts {
    pub first_byte: Duration,
    pub ms_per_char: u32,
    pub log: Option<WaitLog>,
}

impl TtsEngine for FakeTts {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn synthesize(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(8);
        let chars = text.chars().count() as u64;
        let total_ms = chars * u64::from(self.ms_per_char);
        let delay = self.first_byte;
        let start = Instant::now();
        let log = self.log.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + delay).into()).await;
            record(&log, "tts", start);
            let frames = total_ms.div_ceil(20);
            let tone = tone_frame();
            for _ in 0..frames {
                if tx.send(Ok(TtsEvent::Audio(tone.to_vec()))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(TtsEvent::Usage { characters: chars })).await;
        });
        rx
    }
}

/// 20 ms of a 400 Hz tone (a whole number of periods, so frames join seamlessly).
fn tone_frame() -> &'static [i16; FRAME_SAMPLES] {
    static TONE: std::sync::OnceLock<[i16; FRAME_SAMPLES]> = std::sync::OnceLock::new();
    TONE.get_or_init(|| {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            let t = i as f32 / 16_000.0;
            *s = ((2.0 * std::f32::consts::PI * 400.0 * t).sin() * 8000.0) as i16;
        }
        f
    })
}
