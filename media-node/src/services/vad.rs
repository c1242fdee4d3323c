//! Voice activity detection: one speech/non-speech decision per internal 20 ms frame.
//!
//! A thin wrapper over the WebRTC VAD (the `webrtc-vad` crate, which builds `libfvad`, the
//! standalone extraction of WebRTC's detector, from source). The detector itself always works at
//! 8 kHz; fed 16 kHz it first halves the rate with WebRTC's own all-pass decimator, in place on
//! the stack. So we hand it our 16 kHz frames directly: no resampler of ours, no allocation per
//! frame (the only allocation is the C instance in [`Vad::new`]).
//!
//! A new detector has not yet learnt the line's noise floor: in modes 0–2 it may call the first
//! ~100 ms of steady noise speech (measured on faint white noise: frames 1–5), so a turn
//! detector should not trust a stream's first few frames.
//!
//! The decision is per frame and deliberately raw: smoothing ("speech starts after N voiced
//! frames", hangover at the end) belongs to the turn detector above it, which owns the
//! thresholds per preset.

use std::fmt;
use std::str::FromStr;

use crate::codec::FRAME_SAMPLES;

/// How eagerly frames are called speech. Higher modes report speech less often (fewer false
/// alarms in noise, more missed soft speech). The names are WebRTC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VadMode {
    /// Mode 0: the most permissive.
    #[default]
    Quality,
    /// Mode 1.
    LowBitrate,
    /// Mode 2.
    Aggressive,
    /// Mode 3: the most restrictive; the usual choice on noisy phone lines.
    VeryAggressive,
}

impl VadMode {
    /// Every mode, most permissive first.
    pub const ALL: [VadMode; 4] = [
        VadMode::Quality,
        VadMode::LowBitrate,
        VadMode::Aggressive,
        VadMode::VeryAggressive,
    ];

    /// WebRTC's number for the mode (0–3).
    pub const fn level(self) -> u8 {
        match self {
            VadMode::Quality => 0,
            VadMode::LowBitrate => 1,
            VadMode::Aggressive => 2,
            VadMode::VeryAggressive => 3,
        }
    }

    /// The name used in agent specs and presets.
    pub const fn name(self) -> &'static str {
        match self {
            VadMode::Quality => "quality",
            VadMode::LowBitrate => "low_bitrate",
            VadMode::Aggressive => "aggressive",
            VadMode::VeryAggressive => "very_aggressive",
        }
    }

    fn to_webrtc(self) -> webrtc_vad::VadMode {
        match self {
            VadMode::Quality => webrtc_vad::VadMode::Quality,
            VadMode::LowBitrate => webrtc_vad::VadMode::LowBitrate,
            VadMode::Aggressive => webrtc_vad::VadMode::Aggressive,
            VadMode::VeryAggressive => webrtc_vad::VadMode::VeryAggressive,
        }
    }
}

impl fmt::Display for VadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name or number that is not one of [`VadMode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown VAD mode {0:?}: expected quality, low_bitrate, aggressive, very_aggressive or 0-3"
)]
pub struct UnknownVadMode(pub String);

impl FromStr for VadMode {
    type Err = UnknownVadMode;

    /// Accepts the names of [`VadMode::name`] (case-insensitive, `-` for `_`) or `0`–`3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase().replace('-', "_");
        VadMode::ALL
            .into_iter()
            .find(|m| m.name() == key || m.level().to_string() == key)
            .ok_or_else(|| UnknownVadMode(s.chars().take(40).collect()))
    }
}

/// A voice activity detector for one audio stream (it keeps per-stream noise estimates, so
/// never share one between calls).
pub struct Vad {
    inner: webrtc_vad::Vad,
    mode: VadMode,
}

// SAFETY: `webrtc_vad::Vad` is `!Send` only because it holds the raw pointer to its C instance.
// That instance (`Fvad` from libfvad) is plain heap state owned exclusively by this value; the
// library has no global or thread-local state, so moving the owner to another thread is sound.
// It is not `Sync`: `is_speech` takes `&mut self`, so there is never concurrent access.
#[allow(unsafe_code)]
unsafe impl Send for Vad {}

impl fmt::Debug for Vad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vad").field("mode", &self.mode).finish()
    }
}

impl Vad {
    /// A detector for 16 kHz frames of [`FRAME_SAMPLES`] samples in the given mode.
    pub fn new(mode: VadMode) -> Self {
        Vad {
            inner: webrtc_vad::Vad::new_with_rate_and_mode(
                webrtc_vad::SampleRate::Rate16kHz,
                mode.to_webrtc(),
            ),
            mode,
        }
    }

    /// The mode it runs in.
    pub fn mode(&self) -> VadMode {
        self.mode
    }

    /// Changes the mode, keeping the noise estimates learnt so far.
    pub fn set_mode(&mut self, mode: VadMode) {
        self.inner.set_mode(mode.to_webrtc());
        self.mode = mode;
    }

    /// Whether this 20 ms frame (16 kHz mono) holds speech. Allocation-free.
    pub fn is_speech(&mut self, frame: &[i16; FRAME_SAMPLES]) -> bool {
        // The only error the detector reports is a frame length other than 10/20/30 ms, which
        // the array type rules out.
        self.inner.is_voice_segment(frame).unwrap_or(false)
    }

    /// Forgets what was learnt about the stream (as new), keeping the mode.
    pub fn reset(&mut self) {
        // fvad_reset also puts rate and mode back to their defaults (8 kHz, mode 0).
        self.inner.reset();
        self.inner
            .set_sample_rate(webrtc_vad::SampleRate::Rate16kHz);
        self.inner.set_mode(self.mode.to_webrtc());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence (xorshift), so the tests need no rand crate.
    fn noise(seed: u64, amplitude: i16, frames: usize) -> Vec<[i16; FRAME_SAMPLES]> {
        let mut x = seed | 1;
        (0..frames)
            .map(|_| {
                std::array::from_fn(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x % (2 * amplitude as u64 + 1)) as i64 - i64::from(amplitude)) as i16
                })
            })
            .collect()
    }

    /// A crude voiced sound: a 140 Hz pulse train through formant-like resonances at 700 and
    /// 1 200 Hz, amplitude-modulated at 4 Hz like syllables.
    fn voiced(frames: usize) -> Vec<[i16; FRAME_SAMPLES]> {
        let mut out = Vec::new();
        let (mut y1, mut y2, mut z1, mut z2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let resonator = |f: f64| {
            let r = 0.97f64;
            let w = 2.0 * std::f64::consts::PI * f / 16_000.0;
            (2.0 * r * w.cos(), -r * r)
        };
        let (a1, a2) = resonator(700.0);
        let (b1, b2) = resonator(1_200.0);
        for n in 0..frames {
            out.push(std::array::from_fn(|i| {
                let t = n * FRAME_SAMPLES + i;
                let phase = t % (16_000 / 140);
                let pulse = if phase == 0 { 1.0 } else { 0.0 };
                let y = pulse + a1 * y1 + a2 * y2;
                (y2, y1) = (y1, y);
                let z = y + b1 * z1 + b2 * z2;
                (z2, z1) = (z1, z);
                let envelope =
                    0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * t as f64 / 16_000.0).sin();
                (z * 300.0 * envelope).clamp(-32_000.0, 32_000.0) as i16
            }));
        }
        out
    }

    #[test]
    fn digital_silence_is_never_speech() {
        for mode in VadMode::ALL {
            let mut vad = Vad::new(mode);
            assert!(
                (0..100).all(|_| !vad.is_speech(&[0; FRAME_SAMPLES])),
                "{mode}"
            );
        }
    }

    #[test]
    fn a_voiced_signal_is_speech_and_faint_hiss_is_not() {
        for mode in VadMode::ALL {
            let mut vad = Vad::new(mode);
            // The detector learns the noise floor over its first ~100 ms: modes 0-2 call the
            // first few frames of a new stream's hiss speech (measured: frames 1-5), never later.
            let hiss = noise(7, 30, 100);
            let late: Vec<usize> = (0..hiss.len())
                .filter(|&i| vad.is_speech(&hiss[i]) && i >= 10)
                .collect();
            assert!(
                late.is_empty(),
                "{mode}: hiss called speech at frames {late:?}"
            );
            let voice = voiced(100);
            let hits = voice.iter().filter(|f| vad.is_speech(f)).count();
            assert!(
                hits >= 80,
                "{mode}: only {hits}/100 voiced frames called speech"
            );
        }
    }

    #[test]
    fn reset_keeps_the_mode_and_rate() {
        let mut vad = Vad::new(VadMode::VeryAggressive);
        vad.reset();
        assert_eq!(vad.mode(), VadMode::VeryAggressive);
        // Still accepts 320-sample frames (at the default 8 kHz rate 320 samples is 40 ms and
        // would be rejected, which `is_speech` reports as silence).
        let voice = voiced(50);
        assert!(voice.iter().filter(|f| vad.is_speech(f)).count() > 30);
    }

    #[test]
    fn modes_parse_by_name_or_number() {
        for mode in VadMode::ALL {
            assert_eq!(mode.name().parse::<VadMode>(), Ok(mode));
            assert_eq!(mode.level().to_string().parse::<VadMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.name());
        }
        assert_eq!(" Very-Aggressive ".parse(), Ok(VadMode::VeryAggressive));
        assert!("4".parse::<VadMode>().is_err());
        assert!("loud".parse::<VadMode>().is_err());
    }

    #[test]
    fn vad_moves_between_threads() {
        let mut vad = Vad::new(VadMode::Aggressive);
        let frames = voiced(20);
        let hits = std::thread::spawn(move || frames.iter().filter(|f| vad.is_speech(f)).count())
            .join()
            .unwrap();
        assert!(hits > 10);
    }
}
