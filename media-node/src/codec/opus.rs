//! Opus over RTP (RFC 7587), for WebRTC and SIP: 48 kHz Opus packets ⇄ the node's internal 16 kHz
//! [`PcmFrame`]s, through libopus (`audiopus`, Debian `libopus-dev`) and the node's own
//! resampler. Pure apart from libopus' state: no I/O, no clock.
//!
//! Browsers offer `opus/48000/2` but send mono unless asked for stereo; the decoder is opened
//! mono, which libopus down-mixes a stereo stream into. Packets may carry 2.5-120 ms; whatever
//! they carry is re-cut into 20 ms frames. The encoder sends one 20 ms mono packet per frame.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate as OpusRate};

use crate::codec::{PcmFrame, Reframer, Resampler, SampleRate, FRAME_SAMPLES};

/// The most 48 kHz samples one Opus packet decodes to (120 ms, RFC 6716 §2).
const MAX_PACKET_SAMPLES: usize = 5760;
/// 48 kHz samples in 20 ms.
const FRAME_48K: usize = 960;
/// Largest encoded packet we write (libopus recommends 4000 bytes as a safe bound).
const MAX_PACKET_BYTES: usize = 4000;
/// Lost packets concealed (PLC) at most in a row; a longer gap is left silent.
const MAX_CONCEALED: u16 = 5;

/// Why Opus failed.
#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    #[error("opus: {0}")]
    Codec(#[from] audiopus::Error),
    #[error("opus: {0}")]
    Resample(#[from] crate::codec::ResampleError),
}

/// Inbound: Opus RTP payloads → 20 ms frames at 16 kHz.
pub struct OpusDecoder {
    decoder: Decoder,
    resampler: Resampler,
    reframer: Reframer,
    pcm48: Vec<i16>,
    pcm16: Vec<i16>,
    /// Sequence number expected next, once a packet came.
    next_seq: Option<u16>,
    /// 48 kHz samples of the last packet (what a concealed packet stands in for).
    last_samples: usize,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(OpusDecoder {
            decoder: Decoder::new(OpusRate::Hz48000, Channels::Mono)?,
            resampler: Resampler::new(SampleRate::Hz48000, SampleRate::Hz16000),
            reframer: Reframer::new(),
            pcm48: vec![0; MAX_PACKET_SAMPLES],
            pcm16: vec![0; MAX_PACKET_SAMPLES / 3 + 1],
            next_seq: None,
            last_samples: FRAME_48K,
        })
    }

    /// Decodes the packet with RTP sequence number `seq`, calling `on_frame` for every 20 ms
    /// frame completed. A late or repeated packet is dropped (`Ok(false)`); a short gap before
    /// it is concealed with libopus' packet-loss concealment.
    pub fn decode(
        &mut self,
        seq: u16,
        payload: &[u8],
        mut on_frame: impl FnMut(&PcmFrame),
    ) -> Result<bool, OpusError> {
        if let Some(expected) = self.next_seq {
            let ahead = seq.wrapping_sub(expected);
            if ahead >= 0x8000 {
                return Ok(false);
            }
            if ahead > 0 && ahead <= MAX_CONCEALED {
                for _ in 0..ahead {
                    let n = self.last_samples.min(MAX_PACKET_SAMPLES);
                    let out = self.pcm48.get_mut(..n).unwrap_or_default();
                    let got = self
                        .decoder
                        .decode(None::<&[u8]>, out, false)
                        .map_err(OpusError::Codec)?;
                    self.emit(got, &mut on_frame)?;
                }
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if payload.is_empty() {
            return Ok(true);
        }
        let got = self
            .decoder
            .decode(Some(payload), &mut self.pcm48[..], false)?;
        if got > 0 {
            self.last_samples = got;
        }
        self.emit(got, &mut on_frame)?;
        Ok(true)
    }

    /// Decodes one packet (`Some`), or conceals a lost one of `lost_samples` 48 kHz samples
    /// with libopus' packet-loss concealment (`None`, or an empty payload), writing 16 kHz
    /// samples to the front of `out`; returns how many. For a caller that orders packets and
    /// detects losses itself (the RTP session's jitter buffer); no reframing.
    pub fn decode_into(
        &mut self,
        payload: Option<&[u8]>,
        lost_samples: usize,
        out: &mut [i16],
    ) -> Result<usize, OpusError> {
        let got = match payload.filter(|p| !p.is_empty()) {
            Some(p) => {
                let got = self.decoder.decode(Some(p), &mut self.pcm48[..], false)?;
                if got > 0 {
                    self.last_samples = got;
                }
                got
            }
            None => {
                // libopus conceals whole 2.5 ms units (120 samples at 48 kHz).
                let n = (lost_samples.min(MAX_PACKET_SAMPLES) / 120) * 120;
                if n == 0 {
                    return Ok(0);
                }
                let buf = self.pcm48.get_mut(..n).unwrap_or_default();
                self.decoder.decode(None::<&[u8]>, buf, false)?
            }
        };
        let input = self.pcm48.get(..got).unwrap_or_default();
        Ok(self.resampler.process(input, out)?)
    }

    /// 16 kHz samples [`decode_into`](Self::decode_into) writes at most.
    pub const fn max_output() -> usize {
        MAX_PACKET_SAMPLES / 3 + 16
    }

    /// Resamples the first `n` decoded samples and re-cuts them into frames.
    fn emit(&mut self, n: usize, on_frame: &mut impl FnMut(&PcmFrame)) -> Result<(), OpusError> {
        let input = self.pcm48.get(..n).unwrap_or_default();
        let need = self.resampler.output_len(input.len());
        if self.pcm16.len() < need {
            self.pcm16.resize(need, 0);
        }
        let m = self.resampler.process(input, &mut self.pcm16)?;
        self.reframer
            .push(self.pcm16.get(..m).unwrap_or_default(), |f| on_frame(f));
        Ok(())
    }
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("next_seq", &self.next_seq)
            .field("last_samples", &self.last_samples)
            .finish_non_exhaustive()
    }
}

/// Outbound: 20 ms frames at 16 kHz → one Opus packet each.
pub struct OpusEncoder {
    encoder: Encoder,
    resampler: Resampler,
    pcm48: Vec<i16>,
    packet: Vec<u8>,
}

impl OpusEncoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(OpusEncoder {
            encoder: Encoder::new(OpusRate::Hz48000, Channels::Mono, Application::Voip)?,
            resampler: Resampler::new(SampleRate::Hz16000, SampleRate::Hz48000),
            pcm48: vec![0; FRAME_48K],
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes one frame; returns the Opus packet (20 ms).
    pub fn encode(&mut self, frame: &PcmFrame) -> Result<&[u8], OpusError> {
        let n = self.resampler.process(&frame.samples, &mut self.pcm48)?;
        debug_assert_eq!(n, FRAME_48K);
        debug_assert_eq!(frame.samples.len(), FRAME_SAMPLES);
        let len = self.encoder.encode(&self.pcm48[..n], &mut self.packet)?;
        Ok(self.packet.get(..len).unwrap_or_default())
    }
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::f64::consts::PI;

    use super::*;

    fn tone_frames(freq: f64, amplitude: f64, frames: usize) -> Vec<PcmFrame> {
        (0..frames)
            .map(|f| {
                let mut frame = PcmFrame::silence();
                for (i, s) in frame.samples.iter_mut().enumerate() {
                    let t = (f * FRAME_SAMPLES + i) as f64 / 16_000.0;
                    *s = (amplitude * (2.0 * PI * freq * t).sin()).round() as i16;
                }
                frame
            })
            .collect()
    }

    fn goertzel(x: &[i16], rate: f64, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / rate;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0).sqrt() / x.len() as f64
    }

    /// Encodes `frames`, decodes the packets (dropping those `lost` says), and returns the
    /// decoded 16 kHz samples.
    fn round_trip(frames: &[PcmFrame], lost: impl Fn(usize) -> bool) -> Vec<i16> {
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let packet = enc.encode(f).unwrap().to_vec();
            assert!(!packet.is_empty() && packet.len() < 400, "{}", packet.len());
            if lost(i) {
                continue;
            }
            let seq = 65_000u16.wrapping_add(i as u16);
            assert!(dec
                .decode(seq, &packet, |fr| out.extend_from_slice(&fr.samples))
                .unwrap());
        }
        out
    }

    #[test]
    fn a_tone_survives_the_round_trip() {
        let frames = tone_frames(440.0, 8000.0, 100);
        let out = round_trip(&frames, |_| false);
        assert_eq!(out.len(), 100 * FRAME_SAMPLES, "one frame out per frame in");
        // 1 s from 0.5 s in: whole periods of 440 Hz at 16 kHz.
        let window = &out[8000..24_000];
        let at = goertzel(window, 16_000.0, 440.0);
        for other in [300.0, 400.0, 480.0, 880.0, 1000.0] {
            assert!(goertzel(window, 16_000.0, other) < at / 10.0, "{other} Hz");
        }
        let level_db = 20.0 * (at / 8000.0).log10();
        assert!(level_db.abs() < 1.0, "level off by {level_db:.2} dB");
    }

    #[test]
    fn lost_packets_are_concealed_and_late_ones_dropped() {
        let frames = tone_frames(440.0, 8000.0, 50);
        // Two packets lost in a row (wrapping the sequence number): still 50 frames out.
        let out = round_trip(&frames, |i| i == 20 || i == 21);
        assert_eq!(out.len(), 50 * FRAME_SAMPLES);

        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let p = enc.encode(&frames[0]).unwrap().to_vec();
        let mut n = 0;
        assert!(dec.decode(10, &p, |_| n += 1).unwrap());
        assert!(!dec.decode(10, &p, |_| n += 1).unwrap(), "repeated");
        assert!(!dec.decode(9, &p, |_| n += 1).unwrap(), "late");
        // A long gap is not concealed: only the packet itself is decoded.
        assert!(dec.decode(1000, &p, |_| n += 1).unwrap());
        assert_eq!(n, 2);
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut frames = 0;
        for (seq, payload) in [
            vec![0xff; 3],
            vec![0x00],
            vec![0xfc, 0xff, 0xff],
            vec![0x0b; 1500],
            vec![],
        ]
        .into_iter()
        .enumerate()
        {
            let _ = dec.decode(seq as u16, &payload, |_| frames += 1);
        }
        assert!(frames < 50);
    }

    proptest::proptest! {
        #[test]
        fn any_payload_never_panics(
            packets in proptest::collection::vec(
                (proptest::num::u16::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..1500)),
                0..20,
            ),
        ) {
            let mut dec = OpusDecoder::new().unwrap();
            for (seq, payload) in &packets {
                let _ = dec.decode(*seq, payload, |_| {});
            }
        }
    }
}
