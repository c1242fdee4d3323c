//! Flite (CMU's small synthesiser), the alternative offline voice to espeak-ng: diphone
//! synthesis, more natural than espeak's formants and a little slower. Debian `flite1-dev`
//! (`libflite`, the US English lexicon and language, and the 16 kHz `cmu_us_kal16` voice, which
//! matches the node's internal rate so no resampling is needed).
//!
//! The FFI is four functions. Flite keeps global state (the lexicon, the registered voice), so
//! every call goes through one process-wide lock, like espeak-ng's.
#![allow(unsafe_code)] // This module is the FFI boundary; every unsafe block carries its SAFETY argument.

use std::ffi::CString;
use std::sync::Mutex;

use super::espeak::{MAX_AUDIO_SECONDS, MAX_TEXT_BYTES};
use super::TtsError;

mod ffi {
    use std::ffi::{c_char, c_int, c_short, c_void};

    /// `cst_wave`.
    #[repr(C)]
    pub struct Wave {
        pub kind: *const c_char,
        pub sample_rate: c_int,
        pub num_samples: c_int,
        pub num_channels: c_int,
        pub samples: *mut c_short,
    }

    /// An opaque `cst_voice`.
    pub type Voice = c_void;

    #[link(name = "flite")]
    extern "C" {
        pub fn flite_init() -> c_int;
        pub fn flite_text_to_wave(text: *const c_char, voice: *mut Voice) -> *mut Wave;
        pub fn delete_wave(wave: *mut Wave);
    }

    #[link(name = "flite_cmu_us_kal16")]
    extern "C" {
        pub fn register_cmu_us_kal16(voxdir: *const c_char) -> *mut Voice;
    }

    // The voice needs the US English language and the CMU lexicon.
    #[link(name = "flite_usenglish")]
    extern "C" {}
    #[link(name = "flite_cmulex")]
    extern "C" {}
}

/// The registered voice (never freed: it lives as long as the process).
struct Engine {
    voice: *mut ffi::Voice,
}

// SAFETY: the voice pointer is only used while holding `ENGINE`'s lock, one thread at a time.
unsafe impl Send for Engine {}

static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

/// The `kal16` voice of Flite: 16 kHz mono.
#[derive(Debug, Clone, Default)]
pub struct FliteTts;

impl FliteTts {
    /// Initialises Flite on first use and registers its voice.
    pub fn new() -> Result<Self, TtsError> {
        let mut guard = ENGINE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            // SAFETY: no arguments; flite_init only sets up global tables.
            unsafe { ffi::flite_init() };
            // SAFETY: a null voxdir is what flite's own voice registration passes; it
            // returns a voice allocated by the library, or null.
            let voice = unsafe { ffi::register_cmu_us_kal16(std::ptr::null()) };
            if voice.is_null() {
                return Err(TtsError::Init(
                    "flite: the kal16 voice did not register".into(),
                ));
            }
            *guard = Some(Engine { voice });
        }
        Ok(FliteTts)
    }

    /// Speaks `text`: 16 kHz mono PCM, empty when there is nothing to say.
    pub fn synthesize(&self, text: &str) -> Result<Vec<i16>, TtsError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(TtsError::TextTooLong {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if clean.trim().is_empty() {
            return Ok(Vec::new());
        }
        let clean = CString::new(clean)
            .map_err(|_| TtsError::Synthesis("text contains NUL after cleaning".into()))?;
        let guard = ENGINE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine = guard
            .as_ref()
            .ok_or_else(|| TtsError::Init("flite not initialised".into()))?;
        // SAFETY: `clean` is a NUL-terminated string alive for the call; the voice was
        // registered and is used under the lock. The result is a library-owned wave or null.
        let wave = unsafe { ffi::flite_text_to_wave(clean.as_ptr(), engine.voice) };
        if wave.is_null() {
            return Err(TtsError::Synthesis("flite returned no audio".into()));
        }
        // SAFETY: `wave` is non-null and points to a `cst_wave` the library filled in.
        let (rate, n, channels, samples) = unsafe {
            let w = &*wave;
            (w.sample_rate, w.num_samples, w.num_channels, w.samples)
        };
        let n = usize::try_from(n).unwrap_or(0);
        let channels = usize::try_from(channels).unwrap_or(1).max(1);
        let result = if rate != 16_000 {
            Err(TtsError::Synthesis(format!(
                "flite produced {rate} Hz, expected 16000"
            )))
        } else if n > MAX_AUDIO_SECONDS * 16_000 * channels {
            Err(TtsError::Synthesis(format!(
                "output exceeds {MAX_AUDIO_SECONDS} s of audio"
            )))
        } else if samples.is_null() || n == 0 {
            Ok(Vec::new())
        } else {
            // SAFETY: `samples` holds `num_samples` interleaved frames of `num_channels` shorts
            // (flite's layout), owned by `wave` until it is deleted below.
            let all = unsafe { std::slice::from_raw_parts(samples, n * channels) };
            Ok(all.iter().step_by(channels).copied().collect())
        };
        // SAFETY: `wave` came from flite_text_to_wave and is freed exactly once.
        unsafe { ffi::delete_wave(wave) };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_at_16k_and_handles_odd_text() {
        let tts = FliteTts::new().unwrap();
        let pcm = tts.synthesize("I have a question about my bill.").unwrap();
        // Roughly a second or two of speech, and not silence.
        assert!(
            pcm.len() > 16_000 / 2 && pcm.len() < 16_000 * 5,
            "{}",
            pcm.len()
        );
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak > 3000, "{peak}");
        assert!(tts.synthesize("   ").unwrap().is_empty());
        assert!(tts.synthesize("tab\tand\nnewline\u{7}").is_ok());
        assert!(matches!(
            tts.synthesize(&"a".repeat(MAX_TEXT_BYTES + 1)),
            Err(TtsError::TextTooLong { .. })
        ));
    }
}
