//! Voice activity per 20 ms frame, behind one trait so the pipeline can use webrtc-vad
//! (`services::vad`) or this module's energy detector (cheap, no model; used by the media
//! path's statistics and as a fallback).

/// Decides, frame by frame, whether the caller is talking.
pub trait VoiceDetector: Send {
    /// One 20 ms frame of 16 kHz audio.
    fn is_voiced(&mut self, frame: &[i16]) -> bool;
}

/// Energy against an adaptive noise floor: voiced when a frame is well above the floor and
/// above an absolute minimum.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    floor: f32,
}

/// Absolute minimum RMS of speech (about -45 dBFS).
const MIN_RMS: f32 = 180.0;
/// Speech is this many times the floor.
const RATIO: f32 = 3.0;

impl Default for EnergyVad {
    fn default() -> Self {
        EnergyVad {
            floor: MIN_RMS / RATIO,
        }
    }
}

impl EnergyVad {
    pub fn new() -> Self {
        Self::default()
    }
}

/// RMS of a frame.
pub fn rms(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return 0.0;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / frame.len() as f64).sqrt() as f32
}

impl VoiceDetector for EnergyVad {
    fn is_voiced(&mut self, frame: &[i16]) -> bool {
        let e = rms(frame);
        let voiced = e >= MIN_RMS && e >= self.floor * RATIO;
        // The floor follows quiet frames quickly and loud ones slowly.
        let rate = if e < self.floor { 0.2 } else { 0.001 };
        self.floor += (e - self.floor) * rate;
        self.floor = self.floor.max(10.0);
        voiced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_voiced_silence_is_not() {
        let mut v = EnergyVad::new();
        let silence = vec![0i16; 320];
        let noise: Vec<i16> = (0..320).map(|i| ((i * 7919) % 61) as i16 - 30).collect();
        let tone: Vec<i16> = (0..320)
            .map(|i| (3000.0 * (i as f32 * 0.2).sin()) as i16)
            .collect();
        for _ in 0..50 {
            assert!(!v.is_voiced(&silence));
            assert!(!v.is_voiced(&noise));
        }
        assert!(v.is_voiced(&tone));
        // A long tone stays voiced (the floor adapts slowly upwards).
        for _ in 0..100 {
            assert!(v.is_voiced(&tone));
        }
    }
}
