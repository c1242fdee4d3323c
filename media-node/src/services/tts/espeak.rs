//! espeak-ng through a small hand-written FFI.
//!
//! # Why by hand
//!
//! The `espeakng-sys` crate generates its bindings with bindgen at build time and panics when
//! built beside the workspace's other bindgen users (DESIGN.md §4). We need eight functions of
//! `speak_lib.h`, declared below against Debian's libespeak-ng 1.51 (API revision 12).
//!
//! # One engine per process
//!
//! espeak-ng keeps all its state in globals (current voice, parameters, the synthesis callback,
//! its phoneme tables) and is not thread-safe. So:
//!
//! - it is initialised once per process, lazily, by the first [`EspeakTts::new`], in
//!   `AUDIO_OUTPUT_SYNCHRONOUS` mode: `espeak_Synth` runs the whole synthesis on the calling
//!   thread and hands the samples to our callback before it returns;
//! - every call into the library happens under one global mutex ([`ENGINE`]). An [`EspeakTts`]
//!   is only a voice name and a rate; [`EspeakTts::synthesize`] takes the lock, switches voice
//!   and rate if the previous caller used others, synthesizes, and releases it. Calls from many
//!   threads therefore run one at a time; at ~1–2 ms of CPU per short sentence that is fine
//!   for the embedded engine's use (dev, tests, the test caller).
//!
//! espeak-ng's output is not bit-reproducible across histories: some state survives voice
//! switches (measured: the same en-us sentence came out up to 4 % longer after another voice
//! had been used). Tests compare lengths and recognizability, not samples.
//!
//! # Output
//!
//! espeak-ng speaks at 22 050 Hz; we resample to the node's 16 kHz with the codec's polyphase
//! resampler ([`Resampler::between_hz`]).
//!
//! # Input hygiene
//!
//! Text is plain text: SSML and espeak's `[[phoneme]]` input are off (neither flag is passed),
//! control characters become spaces, and the length is capped ([`MAX_TEXT_BYTES`]). Output is
//! capped too ([`MAX_AUDIO_SECONDS`]); the callback aborts synthesis beyond it.

#![allow(unsafe_code)] // This module is the FFI boundary; every unsafe block carries its SAFETY argument.

use std::ffi::{c_int, c_short, c_uint, c_void, CString};
use std::sync::{Mutex, MutexGuard};

use super::TtsError;
use crate::codec::Resampler;

/// The longest text one [`EspeakTts::synthesize`] call accepts, in bytes (a few paragraphs;
/// the pipeline sends a sentence at a time).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// The most audio one call may produce; synthesis stops there with an error.
pub const MAX_AUDIO_SECONDS: usize = 120;
/// The slowest speaking rate espeak-ng accepts, in words per minute.
pub const MIN_RATE_WPM: u32 = 80;
/// The fastest speaking rate espeak-ng accepts, in words per minute.
pub const MAX_RATE_WPM: u32 = 450;
/// espeak-ng's default speaking rate, in words per minute.
pub const DEFAULT_RATE_WPM: u32 = 175;

/// The hand-written subset of `espeak-ng/speak_lib.h`.
mod ffi {
    use std::ffi::{c_char, c_int, c_short, c_uint, c_void};

    /// `espeak_AUDIO_OUTPUT::AUDIO_OUTPUT_SYNCHRONOUS`.
    pub const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
    /// `espeakINITIALIZE_DONT_EXIT`: without it a missing data directory calls `exit()`.
    pub const INITIALIZE_DONT_EXIT: c_int = 0x8000;
    /// `espeakCHARS_UTF8`.
    pub const CHARS_UTF8: c_uint = 1;
    /// `espeak_POSITION_TYPE::POS_CHARACTER`.
    pub const POS_CHARACTER: c_int = 1;
    /// `espeak_PARAMETER::espeakRATE`.
    pub const PARAM_RATE: c_int = 1;
    /// `espeak_ERROR::EE_OK`.
    pub const EE_OK: c_int = 0;
    /// `espeak_ERROR::EE_NOT_FOUND`.
    pub const EE_NOT_FOUND: c_int = 2;

    /// `espeak_EVENT`. We read only `user_data`, but the layout must be exact for it to be
    /// found at the right offset.
    #[repr(C)]
    pub struct Event {
        pub kind: c_int,
        pub unique_identifier: c_uint,
        pub text_position: c_int,
        pub length: c_int,
        pub audio_position: c_int,
        pub sample: c_int,
        pub user_data: *mut c_void,
        /// The `id` union: `int`, `const char *` or `char[8]`; pointer-sized and -aligned.
        pub id: *const c_char,
    }

    /// `t_espeak_callback`: samples, sample count, event list. Return 0 to go on, 1 to abort.
    pub type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut Event) -> c_int;

    #[link(name = "espeak-ng")]
    extern "C" {
        pub fn espeak_Initialize(
            output: c_int,
            buflength: c_int,
            path: *const c_char,
            options: c_int,
        ) -> c_int;
        pub fn espeak_SetSynthCallback(callback: SynthCallback);
        pub fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
        pub fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
        pub fn espeak_Synth(
            text: *const c_void,
            size: usize,
            position: c_uint,
            position_type: c_int,
            end_position: c_uint,
            flags: c_uint,
            unique_identifier: *mut c_uint,
            user_data: *mut c_void,
        ) -> c_int;
    }
}

/// The process-wide engine state, behind [`ENGINE`].
struct Engine {
    /// espeak-ng's output rate (22 050 Hz with its own voices).
    sample_rate: u32,
    /// The voice and rate the library is set to now, so switching is done only when needed.
    voice: Option<CString>,
    rate: Option<u32>,
}

/// `None` until the first successful initialisation. Every call into libespeak-ng is made
/// while holding this lock.
static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

/// Where the synthesis callback collects samples: passed to `espeak_Synth` as `user_data`.
struct Collector {
    samples: Vec<i16>,
    max: usize,
    overflowed: bool,
}

/// Receives audio from `espeak_Synth` (on the calling thread, synchronous mode).
unsafe extern "C" fn collect(wav: *mut c_short, count: c_int, events: *mut ffi::Event) -> c_int {
    if events.is_null() {
        return 1;
    }
    // SAFETY: espeak-ng passes a valid, LIST_TERMINATED-ended event array whose first element
    // exists; we read one pointer field of it.
    let user_data = unsafe { (*events).user_data };
    if user_data.is_null() {
        return 1;
    }
    // SAFETY: `user_data` is the `&mut Collector` that `synthesize` passed to `espeak_Synth`,
    // which is still on its stack (synchronous mode: we are inside that call) and not otherwise
    // borrowed while espeak runs.
    let collector = unsafe { &mut *user_data.cast::<Collector>() };
    let Ok(count) = usize::try_from(count) else {
        return 0;
    };
    if wav.is_null() || count == 0 {
        return 0;
    }
    if collector.samples.len() + count > collector.max {
        collector.overflowed = true;
        return 1;
    }
    // SAFETY: espeak-ng hands `count` valid samples at `wav`, alive for this call.
    let chunk = unsafe { std::slice::from_raw_parts(wav, count) };
    collector.samples.extend_from_slice(chunk);
    0
}

fn lock_engine() -> MutexGuard<'static, Option<Engine>> {
    // A panic while holding the lock cannot leave espeak half-called (nothing in the locked
    // sections panics), so a poisoned lock is still usable.
    ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Initialises the library if this is the first use; returns the locked engine.
fn engine(guard: &mut Option<Engine>) -> Result<&mut Engine, TtsError> {
    if guard.is_none() {
        // SAFETY: called with the engine lock held, so no other thread is inside espeak-ng.
        // NULL path = Debian's default data directory; DONT_EXIT makes a missing directory an
        // error return instead of `exit()`. 0 ms buffer = espeak's default (60 ms chunks).
        let rate = unsafe {
            ffi::espeak_Initialize(
                ffi::AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                ffi::INITIALIZE_DONT_EXIT,
            )
        };
        let sample_rate = u32::try_from(rate)
            .ok()
            .filter(|&r| (8_000..=48_000).contains(&r))
            .ok_or_else(|| {
                TtsError::Init(format!(
                    "espeak_Initialize returned {rate} (is espeak-ng-data installed?)"
                ))
            })?;
        // SAFETY: lock held; `collect` has the exact `t_espeak_callback` signature.
        unsafe { ffi::espeak_SetSynthCallback(collect) };
        *guard = Some(Engine {
            sample_rate,
            voice: None,
            rate: None,
        });
    }
    guard
        .as_mut()
        .ok_or_else(|| TtsError::Init("espeak-ng engine missing".into()))
}

impl Engine {
    fn set_voice(&mut self, voice: &CString) -> Result<(), TtsError> {
        if self.voice.as_ref() == Some(voice) {
            return Ok(());
        }
        // SAFETY: lock held (we are reached only through the guard); `voice` is NUL-terminated
        // and outlives the call.
        let rc = unsafe { ffi::espeak_SetVoiceByName(voice.as_ptr()) };
        match rc {
            ffi::EE_OK => {
                self.voice = Some(voice.clone());
                // A voice change resets espeak's rate to the voice's default.
                self.rate = None;
                Ok(())
            }
            ffi::EE_NOT_FOUND => Err(TtsError::UnknownVoice(voice.to_string_lossy().into())),
            other => Err(TtsError::Synthesis(format!(
                "espeak_SetVoiceByName returned {other}"
            ))),
        }
    }

    fn set_rate(&mut self, wpm: u32) -> Result<(), TtsError> {
        if self.rate == Some(wpm) {
            return Ok(());
        }
        let value = c_int::try_from(wpm).unwrap_or(c_int::MAX);
        // SAFETY: lock held; plain integer arguments.
        let rc = unsafe { ffi::espeak_SetParameter(ffi::PARAM_RATE, value, 0) };
        if rc != ffi::EE_OK {
            return Err(TtsError::Synthesis(format!(
                "espeak_SetParameter(rate) returned {rc}"
            )));
        }
        self.rate = Some(wpm);
        Ok(())
    }

    /// Synthesizes sanitised text at the engine's native rate.
    fn synth(&mut self, text: &CString, max_samples: usize) -> Result<Vec<i16>, TtsError> {
        let mut collector = Collector {
            samples: Vec::new(),
            max: max_samples,
            overflowed: false,
        };
        let bytes = text.as_bytes_with_nul();
        // SAFETY: lock held. `text` is NUL-terminated UTF-8 that outlives the call (size is
        // its length including the NUL, as the header asks). `collector` outlives the call and
        // is reached only by `collect`, on this thread, while espeak_Synth runs (synchronous
        // mode); we do not touch it until the call returns. No SSML/phoneme flags: plain text.
        let rc = unsafe {
            ffi::espeak_Synth(
                bytes.as_ptr().cast::<c_void>(),
                bytes.len(),
                0,
                ffi::POS_CHARACTER,
                0,
                ffi::CHARS_UTF8,
                std::ptr::null_mut::<c_uint>(),
                (&mut collector as *mut Collector).cast::<c_void>(),
            )
        };
        if collector.overflowed {
            return Err(TtsError::Synthesis(format!(
                "output exceeds {MAX_AUDIO_SECONDS} s of audio"
            )));
        }
        if rc != ffi::EE_OK {
            return Err(TtsError::Synthesis(format!("espeak_Synth returned {rc}")));
        }
        Ok(collector.samples)
    }
}

/// An espeak-ng voice at a speaking rate. Cheap to create and clone; all instances share the
/// one process-wide engine (see the module docs).
#[derive(Debug, Clone)]
pub struct EspeakTts {
    voice: CString,
    rate_wpm: u32,
}

impl EspeakTts {
    /// A synthesizer speaking with `voice` (an espeak-ng voice name such as `en-us`, `en`,
    /// `hi`, `en-us+f3`) at `rate_wpm` words per minute ([`MIN_RATE_WPM`]..=[`MAX_RATE_WPM`];
    /// [`DEFAULT_RATE_WPM`] is espeak's own). Initialises espeak-ng on first use and checks
    /// that the voice exists.
    pub fn new(voice: &str, rate_wpm: u32) -> Result<Self, TtsError> {
        if !(MIN_RATE_WPM..=MAX_RATE_WPM).contains(&rate_wpm) {
            return Err(TtsError::InvalidRate {
                rate: rate_wpm,
                min: MIN_RATE_WPM,
                max: MAX_RATE_WPM,
            });
        }
        let voice_name = voice.trim();
        if voice_name.is_empty()
            || voice_name.len() > 64
            || voice_name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(TtsError::UnknownVoice(voice.chars().take(64).collect()));
        }
        let voice_c = CString::new(voice_name)
            .map_err(|_| TtsError::UnknownVoice(voice_name.chars().take(64).collect()))?;
        let mut guard = lock_engine();
        engine(&mut guard)?.set_voice(&voice_c)?;
        Ok(EspeakTts {
            voice: voice_c,
            rate_wpm,
        })
    }

    /// The voice name.
    pub fn voice(&self) -> &str {
        self.voice.to_str().unwrap_or_default()
    }

    /// The speaking rate in words per minute.
    pub fn rate_wpm(&self) -> u32 {
        self.rate_wpm
    }

    /// Speaks `text`: 16 kHz mono PCM, empty when the text has nothing to say. Blocks for the
    /// synthesis (serialised process-wide: see the module docs).
    pub fn synthesize(&self, text: &str) -> Result<Vec<i16>, TtsError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(TtsError::TextTooLong {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let clean = sanitize(text);
        if clean.is_empty() {
            return Ok(Vec::new());
        }
        // `sanitize` removed every NUL, so this cannot fail; map it anyway rather than unwrap.
        let clean = CString::new(clean)
            .map_err(|_| TtsError::Synthesis("text contains NUL after sanitising".into()))?;
        let (native, rate) = {
            let mut guard = lock_engine();
            let engine = engine(&mut guard)?;
            engine.set_voice(&self.voice)?;
            engine.set_rate(self.rate_wpm)?;
            let max = MAX_AUDIO_SECONDS * engine.sample_rate as usize;
            (engine.synth(&clean, max)?, engine.sample_rate)
        };
        to_16k(&native, rate)
    }
}

/// Plain text for espeak: control characters (NUL included) become spaces, runs of whitespace
/// collapse, ends are trimmed.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Resamples espeak's output to 16 kHz, flushing the filter so the end is not cut.
fn to_16k(native: &[i16], rate: u32) -> Result<Vec<i16>, TtsError> {
    let mut resampler = Resampler::between_hz(rate, 16_000)
        .ok_or_else(|| TtsError::Synthesis(format!("cannot resample from {rate} Hz")))?;
    // Trailing zeros push the last real samples through the filter (its length in input
    // samples is `taps_per_output`).
    let flush = vec![0i16; resampler.taps_per_output()];
    let mut out = vec![0i16; resampler.output_len(native.len()) + flush.len() + 2];
    let n = resampler
        .process(native, &mut out)
        .map_err(|e| TtsError::Synthesis(e.to_string()))?;
    let m = resampler
        .process(&flush, &mut out[n..])
        .map_err(|e| TtsError::Synthesis(e.to_string()))?;
    out.truncate(n + m);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_controls_and_collapses_space() {
        assert_eq!(
            sanitize("  hello\u{0}\tworld\r\n\u{1b}[31m!  "),
            "hello world [31m!"
        );
        assert_eq!(sanitize("\u{7}\u{0}\n"), "");
        assert_eq!(sanitize("नमस्ते दुनिया"), "नमस्ते दुनिया");
    }

    #[test]
    fn rates_and_voice_names_are_checked_before_the_library() {
        assert_eq!(
            EspeakTts::new("en-us", 79).unwrap_err(),
            TtsError::InvalidRate {
                rate: 79,
                min: 80,
                max: 450
            }
        );
        assert!(matches!(
            EspeakTts::new("en\u{0}us", 175),
            Err(TtsError::UnknownVoice(_))
        ));
        assert!(matches!(
            EspeakTts::new("", 175),
            Err(TtsError::UnknownVoice(_))
        ));
        assert!(matches!(
            EspeakTts::new("en us", 175),
            Err(TtsError::UnknownVoice(_))
        ));
    }

    #[test]
    fn too_long_text_is_an_error() {
        // Needs no engine: checked first.
        let tts = EspeakTts {
            voice: CString::default(),
            rate_wpm: 175,
        };
        assert_eq!(
            tts.synthesize(&"a".repeat(MAX_TEXT_BYTES + 1)),
            Err(TtsError::TextTooLong {
                len: MAX_TEXT_BYTES + 1,
                max: MAX_TEXT_BYTES
            })
        );
    }

    #[test]
    fn resampling_keeps_duration() {
        let one_second = vec![1000i16; 22_050];
        let out = to_16k(&one_second, 22_050).unwrap();
        assert!((16_000..16_100).contains(&out.len()), "{}", out.len());
        assert!(to_16k(&[], 22_050).unwrap().len() < 100);
        assert!(to_16k(&one_second, 0).is_err());
    }
}
