//! A cheap per-frame energy voice-activity detector: speech or silence for each 20 ms frame.
//!
//! The frame's mean square is compared with a noise floor that follows the quietest recent
//! frames (down at once, up by ~0.07 dB per frame, so ~3.4 dB/s) and with an absolute floor
//! (−50 dBFS). Speech starts after [`ONSET_FRAMES`] loud frames in a row (a click is not
//! speech) and ends after [`HANGOVER_FRAMES`] quiet ones (word gaps stay speech); a steady
//! sound that never dips (a tone) becomes the floor after ~3 s and stops counting. Integer
//! arithmetic only; a few hundred adds per frame. A statistical VAD (webrtc-vad) can replace it
//! behind the same [`EnergyVad::process`].

/// Loud frames in a row that start speech (40 ms).
pub const ONSET_FRAMES: u32 = 2;
/// Quiet frames in a row that end speech (300 ms).
pub const HANGOVER_FRAMES: u32 = 15;
/// Mean square of −50 dBFS: (32768 · 10^(−50/20))².
const ABSOLUTE_FLOOR: u64 = 10_737;
/// Loud means above the noise floor by this factor of power (≈ 9 dB).
const ABOVE_FLOOR: u64 = 8;
/// The noise floor never goes below this (≈ −75 dBFS), so digital silence does not make
/// every breath speech.
const MIN_FLOOR: u64 = 340;

/// The detector's state for one stream.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    floor: u64,
    speech: bool,
    loud_run: u32,
    quiet_run: u32,
    speech_frames: u64,
    frames: u64,
}

impl Default for EnergyVad {
    fn default() -> Self {
        EnergyVad::new()
    }
}

/// What one frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadChange {
    /// Still the same state.
    None,
    /// Speech started with this frame.
    SpeechStarted,
    /// Speech ended with this frame.
    SpeechEnded,
}

impl EnergyVad {
    pub const fn new() -> Self {
        EnergyVad {
            floor: MIN_FLOOR,
            speech: false,
            loud_run: 0,
            quiet_run: 0,
            speech_frames: 0,
            frames: 0,
        }
    }

    /// Whether the last frame was (in) speech.
    pub fn is_speech(&self) -> bool {
        self.speech
    }

    /// Frames judged speech so far.
    pub fn speech_frames(&self) -> u64 {
        self.speech_frames
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Mean square of `samples` (0 for none).
    pub fn mean_square(samples: &[i16]) -> u64 {
        if samples.is_empty() {
            return 0;
        }
        let sum: u64 = samples
            .iter()
            .map(|&s| {
                let v = i64::from(s);
                (v * v) as u64
            })
            .sum();
        sum / samples.len() as u64
    }

    /// Judges one frame.
    pub fn process(&mut self, samples: &[i16]) -> VadChange {
        let energy = Self::mean_square(samples);
        self.frames += 1;
        let loud = energy > ABSOLUTE_FLOOR && energy > self.floor.saturating_mul(ABOVE_FLOOR);
        // Follow the floor: down at once to a quieter frame, up slowly otherwise.
        if energy < self.floor {
            self.floor = energy.max(MIN_FLOOR);
        } else {
            self.floor = self.floor.saturating_add((self.floor / 64).max(1));
        }
        let mut change = VadChange::None;
        if loud {
            self.loud_run = self.loud_run.saturating_add(1);
            self.quiet_run = 0;
            if !self.speech && self.loud_run >= ONSET_FRAMES {
                self.speech = true;
                change = VadChange::SpeechStarted;
            }
        } else {
            self.quiet_run = self.quiet_run.saturating_add(1);
            self.loud_run = 0;
            if self.speech && self.quiet_run >= HANGOVER_FRAMES {
                self.speech = false;
                change = VadChange::SpeechEnded;
            }
        }
        if self.speech {
            self.speech_frames += 1;
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amplitude * (i as f64 * 0.3).sin()) as i16)
            .collect()
    }

    #[test]
    fn silence_noise_and_speech() {
        let mut v = EnergyVad::new();
        let silence = [0i16; 320];
        for _ in 0..50 {
            assert_eq!(v.process(&silence), VadChange::None);
        }
        assert!(!v.is_speech());
        // Steady low noise (~−60 dBFS) is not speech.
        let noise = tone(40.0, 320);
        for _ in 0..100 {
            assert_eq!(v.process(&noise), VadChange::None);
        }
        // A loud frame alone is a click.
        let loud = tone(8000.0, 320);
        assert_eq!(v.process(&loud), VadChange::None);
        assert_eq!(v.process(&noise), VadChange::None);
        // Two in a row start speech.
        assert_eq!(v.process(&loud), VadChange::None);
        assert_eq!(v.process(&loud), VadChange::SpeechStarted);
        assert!(v.is_speech());
        for _ in 0..20 {
            v.process(&loud);
        }
        // A short gap stays speech; a long one ends it.
        for _ in 0..HANGOVER_FRAMES - 1 {
            assert_eq!(v.process(&noise), VadChange::None);
        }
        assert_eq!(v.process(&noise), VadChange::SpeechEnded);
        assert!(v.speech_frames() >= 21);
        assert_eq!(v.frames(), 50 + 100 + 4 + 20 + u64::from(HANGOVER_FRAMES));
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut v = EnergyVad::new();
        for _ in 0..1000 {
            v.process(&[i16::MIN; 320]);
        }
        assert_eq!(EnergyVad::mean_square(&[i16::MIN; 320]), 1 << 30);
        assert_eq!(EnergyVad::mean_square(&[]), 0);
        // After a long loud stretch the floor has risen, but not past the signal forever.
        assert!(v.speech_frames() > 0);
    }
}
