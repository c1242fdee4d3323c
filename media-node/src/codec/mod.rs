//! Codecs and the node's internal audio format.
//!
//! Every call leg, whatever it speaks on the wire (PCMU/PCMA over RTP, 16-bit PCM at 8, 16 or
//! 24 kHz over a provider's WebSocket), is converted at the edge to one internal format:
//! **16 kHz mono signed 16-bit PCM in 20 ms frames of 320 samples** ([`PcmFrame`]). 16 kHz is
//! what the speech engines want, keeps the whole wideband voice range, and costs half of 32 kHz.
//!
//! - [`g711`]: μ-law/A-law, bit-exact to ITU-T G.711;
//! - [`g722`]: G.722 sub-band ADPCM (16 kHz audio at 64 kbit/s), bit-exact to libg722;
//! - [`opus`]: Opus (RFC 6716/7587) through libopus, 48 kHz packets ⇄ 16 kHz frames;
//! - [`resample`]: the polyphase resampler between 8/16/24/48 kHz;
//! - [`FrameDecoder`] / [`FrameEncoder`]: wire payload ⇄ internal 16 kHz PCM (decode + resample),
//!   allocation-free per frame after construction;
//! - [`Reframer`]: re-cuts arbitrary chunk sizes into exact 20 ms frames;
//! - [`vad`]: a per-frame energy voice-activity detector.
//!
//! All pure: no I/O, no clock.

pub mod g711;
pub mod g722;
pub mod opus;
pub mod resample;
pub mod vad;

pub use resample::{ResampleError, Resampler};

use std::time::Duration;

/// Milliseconds in one internal frame.
pub const FRAME_MS: u32 = 20;
/// The internal sample rate.
pub const INTERNAL_RATE: SampleRate = SampleRate::Hz16000;
/// Samples in one internal frame (20 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 320;

/// The sample rates the node converts between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz: narrowband telephony (G.711, most PSTN media streams).
    Hz8000,
    /// 16 kHz: wideband; the internal rate.
    Hz16000,
    /// 24 kHz: some TTS engines and Exotel's highest stream rate.
    Hz24000,
    /// 48 kHz: Opus / WebRTC.
    Hz48000,
}

impl SampleRate {
    /// The rate in hertz.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Hz8000 => 8_000,
            SampleRate::Hz16000 => 16_000,
            SampleRate::Hz24000 => 24_000,
            SampleRate::Hz48000 => 48_000,
        }
    }

    /// The rate for a hertz value, if it is one of ours.
    pub const fn from_hz(hz: u32) -> Option<Self> {
        match hz {
            8_000 => Some(SampleRate::Hz8000),
            16_000 => Some(SampleRate::Hz16000),
            24_000 => Some(SampleRate::Hz24000),
            48_000 => Some(SampleRate::Hz48000),
            _ => None,
        }
    }

    /// Samples in one 20 ms frame at this rate.
    pub const fn frame_samples(self) -> usize {
        (self.hz() / 50) as usize
    }

    /// Samples in `duration` at this rate (rounded down; saturates at `usize::MAX`).
    pub fn samples_in(self, duration: Duration) -> usize {
        let samples = duration.as_nanos() * u128::from(self.hz()) / 1_000_000_000;
        usize::try_from(samples).unwrap_or(usize::MAX)
    }
}

/// How samples are laid out in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// G.711 μ-law, one byte per sample (RTP static payload type 0).
    Pcmu,
    /// G.711 A-law, one byte per sample (RTP static payload type 8).
    Pcma,
    /// Signed 16-bit big-endian (network order): RTP `L16` (RFC 3551 §4.5.11).
    L16,
    /// Signed 16-bit little-endian: the raw PCM of provider media streams (Exotel, Plivo).
    S16Le,
    /// Opus (RFC 6716) at 48 kHz over RTP (RFC 7587): compressed, variable-size packets
    /// coded by [`opus`], not by [`FrameDecoder`]/[`FrameEncoder`].
    Opus,
    /// G.722 at 64 kbit/s: 16 kHz audio, one byte per two samples (RTP static payload type 9,
    /// on an 8000 Hz RTP clock: RFC 3551 §4.5.2). Its coder is stateful.
    G722,
}

impl Encoding {
    /// Bits per sample: 8 for G.711, 16 for linear PCM, 4 for G.722. Opus has none (its
    /// packets are compressed); it counts as the 16-bit PCM it decodes to, so sizes derived
    /// from it are upper bounds, never zero.
    pub const fn bits_per_sample(self) -> usize {
        match self {
            Encoding::Pcmu | Encoding::Pcma => 8,
            Encoding::L16 | Encoding::S16Le | Encoding::Opus => 16,
            Encoding::G722 => 4,
        }
    }

    /// The smallest whole piece of a payload, in bytes: a payload is a whole number of them
    /// (2 for 16-bit PCM, 1 otherwise).
    pub const fn unit_bytes(self) -> usize {
        self.bits_per_sample().div_ceil(8)
    }

    /// Samples in one [`unit_bytes`](Self::unit_bytes) piece (2 for G.722, 1 otherwise).
    pub const fn unit_samples(self) -> usize {
        self.unit_bytes() * 8 / self.bits_per_sample()
    }

    /// The RTP static payload type (RFC 3551 table 4), where one exists at 8 kHz.
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            Encoding::Pcmu => Some(0),
            Encoding::Pcma => Some(8),
            Encoding::G722 => Some(9),
            Encoding::L16 | Encoding::S16Le | Encoding::Opus => None,
        }
    }

    /// The byte that encodes silence (zero): 0xFF in μ-law, 0xD5 in A-law, 0 in linear PCM.
    /// Linear PCM silence is two such bytes per sample, whatever the byte order. G.722 has
    /// none (its coder adapts, so coders encode silent frames instead): 0xFF holds the
    /// smallest step of both sub-bands and decodes to near-silence once the decoder settles.
    pub const fn silence_byte(self) -> u8 {
        match self {
            Encoding::Pcmu | Encoding::G722 => 0xFF,
            Encoding::Pcma => 0xD5,
            Encoding::L16 | Encoding::S16Le | Encoding::Opus => 0x00,
        }
    }

    /// The SDP `rtpmap` encoding name.
    pub const fn sdp_name(self) -> &'static str {
        match self {
            Encoding::Pcmu => "PCMU",
            Encoding::Pcma => "PCMA",
            Encoding::L16 | Encoding::S16Le => "L16",
            Encoding::Opus => "opus",
            Encoding::G722 => "G722",
        }
    }
}

/// An audio format on the wire: encoding and sample rate (always mono).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Sample layout.
    pub encoding: Encoding,
    /// Sample rate.
    pub rate: SampleRate,
}

impl AudioFormat {
    /// G.711 μ-law at 8 kHz.
    pub const PCMU: AudioFormat = AudioFormat::new(Encoding::Pcmu, SampleRate::Hz8000);
    /// G.711 A-law at 8 kHz.
    pub const PCMA: AudioFormat = AudioFormat::new(Encoding::Pcma, SampleRate::Hz8000);
    /// 16-bit little-endian PCM at 8 kHz: Exotel's and Plivo's default stream format.
    pub const S16LE_8K: AudioFormat = AudioFormat::new(Encoding::S16Le, SampleRate::Hz8000);
    /// Opus at 48 kHz (RFC 7587's RTP clock), sent mono.
    pub const OPUS: AudioFormat = AudioFormat::new(Encoding::Opus, SampleRate::Hz48000);
    /// G.722: 16 kHz audio at 64 kbit/s.
    pub const G722: AudioFormat = AudioFormat::new(Encoding::G722, SampleRate::Hz16000);
    /// The internal format, as little-endian bytes.
    pub const INTERNAL: AudioFormat = AudioFormat::new(Encoding::S16Le, INTERNAL_RATE);

    /// A format from its parts.
    pub const fn new(encoding: Encoding, rate: SampleRate) -> Self {
        AudioFormat { encoding, rate }
    }

    /// The RTP timestamp clock: the sample rate, except G.722's 8000 Hz (RFC 3551 §4.5.2).
    pub const fn rtp_clock(self) -> u32 {
        match self.encoding {
            Encoding::G722 => g722::RTP_CLOCK,
            _ => self.rate.hz(),
        }
    }

    /// Payload bytes for `duration` of audio, rounded down to whole units (samples; pairs of
    /// samples in G.722; saturates at `usize::MAX`).
    pub fn bytes_in(self, duration: Duration) -> usize {
        let e = self.encoding;
        (self.rate.samples_in(duration) / e.unit_samples()).saturating_mul(e.unit_bytes())
    }

    /// Payload bytes of one second of audio.
    pub const fn bytes_per_second(self) -> u64 {
        self.rate.hz() as u64 * self.encoding.bits_per_sample() as u64 / 8
    }

    /// How long `bytes` of payload play (a trailing partial sample counts pro rata).
    pub fn duration_of(self, bytes: usize) -> Duration {
        let nanos = (bytes as u128) * 1_000_000_000 / u128::from(self.bytes_per_second());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Payload bytes in one 20 ms frame.
    pub const fn frame_bytes(self) -> usize {
        self.rate.frame_samples() * self.encoding.bits_per_sample() / 8
    }
}

/// One internal frame: 20 ms of 16 kHz mono PCM.
#[derive(Clone, PartialEq, Eq)]
pub struct PcmFrame {
    /// The samples.
    pub samples: [i16; FRAME_SAMPLES],
}

impl PcmFrame {
    /// A frame of digital silence.
    pub const fn silence() -> Self {
        PcmFrame {
            samples: [0; FRAME_SAMPLES],
        }
    }
}

impl Default for PcmFrame {
    fn default() -> Self {
        PcmFrame::silence()
    }
}

impl std::fmt::Debug for PcmFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peak = self
            .samples
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        write!(f, "PcmFrame {{ 320 samples, peak {peak} }}")
    }
}

/// Errors from the codec pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A 16-bit payload with an odd number of bytes.
    #[error("16-bit PCM payload has an odd length ({0} bytes)")]
    OddLength(usize),
    /// The output buffer is too small for what this input produces.
    #[error("codec output needs {needed} elements, got room for {available}")]
    OutputTooSmall {
        /// Elements this call would produce.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// The encoding is not sample-based (Opus): use [`opus`].
    #[error("{0:?} payloads are not coded frame by frame here")]
    Unsupported(Encoding),
}

/// Most samples decoded per inner step; longer payloads are processed in pieces.
const SCRATCH_SAMPLES: usize = 960;

/// Wire payload → internal 16 kHz PCM: decodes, then resamples. Holds the resampler state of
/// one stream, so use one per inbound leg.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    format: AudioFormat,
    resampler: Resampler,
    scratch: Box<[i16]>,
    /// G.722's adaptive state.
    g722: Option<Box<g722::Decoder>>,
}

impl FrameDecoder {
    /// A decoder for payloads in `format`.
    pub fn new(format: AudioFormat) -> Self {
        FrameDecoder {
            format,
            resampler: Resampler::new(format.rate, INTERNAL_RATE),
            scratch: vec![0; SCRATCH_SAMPLES].into_boxed_slice(),
            g722: (format.encoding == Encoding::G722).then(Box::default),
        }
    }

    /// The wire format.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// 16 kHz samples the next `decode` of `payload_len` bytes writes.
    pub fn output_len(&self, payload_len: usize) -> usize {
        let e = self.format.encoding;
        self.resampler
            .output_len(payload_len / e.unit_bytes() * e.unit_samples())
    }

    /// Decodes `payload`, writing 16 kHz samples to the front of `out`; returns how many. A
    /// 20 ms payload at any rate gives exactly [`FRAME_SAMPLES`].
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if self.format.encoding == Encoding::Opus {
            return Err(CodecError::Unsupported(Encoding::Opus));
        }
        let unit = self.format.encoding.unit_bytes();
        let unit_samples = self.format.encoding.unit_samples();
        if payload.len() / unit * unit != payload.len() {
            return Err(CodecError::OddLength(payload.len()));
        }
        let needed = self.output_len(payload.len());
        if out.len() < needed {
            return Err(CodecError::OutputTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut written = 0;
        for chunk in payload.chunks(SCRATCH_SAMPLES / unit_samples * unit) {
            let n = chunk.len() / unit * unit_samples;
            let pcm = &mut self.scratch[..n];
            match self.format.encoding {
                Encoding::Pcmu => {
                    g711::decode_ulaw(chunk, pcm);
                }
                Encoding::Pcma => {
                    g711::decode_alaw(chunk, pcm);
                }
                Encoding::L16 => {
                    for (s, b) in pcm.iter_mut().zip(chunk.chunks_exact(2)) {
                        *s = i16::from_be_bytes([b[0], b[1]]);
                    }
                }
                Encoding::S16Le => {
                    for (s, b) in pcm.iter_mut().zip(chunk.chunks_exact(2)) {
                        *s = i16::from_le_bytes([b[0], b[1]]);
                    }
                }
                Encoding::G722 => {
                    if let Some(g) = self.g722.as_mut() {
                        g.decode(chunk, pcm);
                    }
                }
                Encoding::Opus => return Err(CodecError::Unsupported(Encoding::Opus)),
            }
            written += self.resampler.process(pcm, &mut out[written..]).map_err(
                |ResampleError::OutputTooSmall { needed, available }| CodecError::OutputTooSmall {
                    needed,
                    available,
                },
            )?;
        }
        Ok(written)
    }

    /// Forgets resampler and G.722 history (after a stream restart).
    pub fn reset(&mut self) {
        self.resampler.reset();
        if let Some(g) = self.g722.as_mut() {
            **g = g722::Decoder::new();
        }
    }
}

/// Internal 16 kHz PCM → wire payload: resamples, then encodes. One per outbound leg.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    format: AudioFormat,
    resampler: Resampler,
    scratch: Box<[i16]>,
    /// G.722's adaptive state.
    g722: Option<Box<g722::Encoder>>,
}

impl FrameEncoder {
    /// An encoder producing payloads in `format`.
    pub fn new(format: AudioFormat) -> Self {
        FrameEncoder {
            format,
            resampler: Resampler::new(INTERNAL_RATE, format.rate),
            // 320 internal samples become at most 960 at 48 kHz; pieces are sized to fit.
            scratch: vec![0; SCRATCH_SAMPLES].into_boxed_slice(),
            g722: (format.encoding == Encoding::G722).then(Box::default),
        }
    }

    /// The wire format.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Bytes the next `encode` of `samples` 16 kHz samples writes (G.722 codes whole pairs:
    /// give it even counts, as frames are).
    pub fn output_len(&self, samples: usize) -> usize {
        let e = self.format.encoding;
        self.resampler.output_len(samples) / e.unit_samples() * e.unit_bytes()
    }

    /// Encodes 16 kHz `pcm` into the front of `out`; returns the byte count. One
    /// [`PcmFrame`] gives exactly one 20 ms payload ([`AudioFormat::frame_bytes`]).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let needed = self.output_len(pcm.len());
        if out.len() < needed {
            return Err(CodecError::OutputTooSmall {
                needed,
                available: out.len(),
            });
        }
        if self.format.encoding == Encoding::Opus {
            return Err(CodecError::Unsupported(Encoding::Opus));
        }
        let unit = self.format.encoding.unit_bytes();
        let unit_samples = self.format.encoding.unit_samples();
        // Input piece so that its output fits the scratch at any ratio up to 16k → 48k (×3);
        // even, so G.722 pairs never straddle two pieces.
        let piece = SCRATCH_SAMPLES / 3;
        let mut written = 0;
        for chunk in pcm.chunks(piece) {
            let n = self.resampler.process(chunk, &mut self.scratch).map_err(
                |ResampleError::OutputTooSmall { needed, available }| CodecError::OutputTooSmall {
                    needed,
                    available,
                },
            )?;
            let resampled = &self.scratch[..n];
            let len = n / unit_samples * unit;
            let dst = &mut out[written..written + len];
            match self.format.encoding {
                Encoding::Pcmu => {
                    g711::encode_ulaw(resampled, dst);
                }
                Encoding::Pcma => {
                    g711::encode_alaw(resampled, dst);
                }
                Encoding::L16 => {
                    for (b, s) in dst.chunks_exact_mut(2).zip(resampled) {
                        b.copy_from_slice(&s.to_be_bytes());
                    }
                }
                Encoding::S16Le => {
                    for (b, s) in dst.chunks_exact_mut(2).zip(resampled) {
                        b.copy_from_slice(&s.to_le_bytes());
                    }
                }
                Encoding::G722 => {
                    if let Some(g) = self.g722.as_mut() {
                        g.encode(resampled, dst);
                    }
                }
                Encoding::Opus => return Err(CodecError::Unsupported(Encoding::Opus)),
            }
            written += len;
        }
        Ok(written)
    }

    /// Forgets resampler and G.722 history.
    pub fn reset(&mut self) {
        self.resampler.reset();
        if let Some(g) = self.g722.as_mut() {
            **g = g722::Encoder::new();
        }
    }
}

/// Re-cuts a stream of 16 kHz samples arriving in arbitrary chunk sizes into exact 20 ms
/// [`PcmFrame`]s. Holds less than one frame between calls; never allocates.
#[derive(Debug, Clone)]
pub struct Reframer {
    pending: PcmFrame,
    filled: usize,
}

impl Default for Reframer {
    fn default() -> Self {
        Reframer::new()
    }
}

impl Reframer {
    /// An empty reframer.
    pub const fn new() -> Self {
        Reframer {
            pending: PcmFrame::silence(),
            filled: 0,
        }
    }

    /// Samples waiting for a full frame.
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// Feeds `samples`, calling `on_frame` for every frame completed.
    pub fn push(&mut self, mut samples: &[i16], mut on_frame: impl FnMut(&PcmFrame)) {
        while !samples.is_empty() {
            let take = (FRAME_SAMPLES - self.filled).min(samples.len());
            self.pending.samples[self.filled..self.filled + take].copy_from_slice(&samples[..take]);
            self.filled += take;
            samples = &samples[take..];
            if self.filled == FRAME_SAMPLES {
                on_frame(&self.pending);
                self.filled = 0;
            }
        }
    }

    /// Drops a partial frame.
    pub fn clear(&mut self) {
        self.filled = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_know_their_frame_sizes() {
        assert_eq!(AudioFormat::PCMU.frame_bytes(), 160);
        assert_eq!(AudioFormat::INTERNAL.frame_bytes(), 640);
        assert_eq!(
            AudioFormat::new(Encoding::S16Le, SampleRate::Hz24000).frame_bytes(),
            960
        );
        assert_eq!(AudioFormat::PCMA.bytes_in(Duration::from_millis(30)), 240);
        assert_eq!(SampleRate::from_hz(24_000), Some(SampleRate::Hz24000));
        assert_eq!(SampleRate::from_hz(44_100), None);
        assert_eq!(INTERNAL_RATE.frame_samples(), FRAME_SAMPLES);
        assert_eq!(Encoding::Pcma.static_payload_type(), Some(8));
        // G.722: 4 bits a sample at 16 kHz, on an 8000 Hz RTP clock.
        let g = AudioFormat::G722;
        assert_eq!(g.frame_bytes(), 160);
        assert_eq!(g.bytes_per_second(), 8000);
        assert_eq!(g.rtp_clock(), 8000);
        assert_eq!(AudioFormat::PCMU.rtp_clock(), 8000);
        assert_eq!(AudioFormat::OPUS.rtp_clock(), 48_000);
        assert_eq!(g.bytes_in(Duration::from_millis(30)), 240);
        assert_eq!(g.duration_of(160), Duration::from_millis(20));
        assert_eq!(Encoding::G722.static_payload_type(), Some(9));
        assert_eq!(
            (Encoding::G722.unit_bytes(), Encoding::G722.unit_samples()),
            (1, 2)
        );
        assert_eq!(
            (Encoding::L16.unit_bytes(), Encoding::L16.unit_samples()),
            (2, 1)
        );
    }

    #[test]
    fn g722_frames_code_through_the_frame_coders() {
        let mut enc = FrameEncoder::new(AudioFormat::G722);
        let mut dec = FrameDecoder::new(AudioFormat::G722);
        let mut frame = PcmFrame::silence();
        for (i, s) in frame.samples.iter_mut().enumerate() {
            *s = ((i as f64 * 0.7).sin() * 6000.0) as i16;
        }
        let mut wire = [0u8; 160];
        let mut back = [0i16; FRAME_SAMPLES];
        let mut reference = g722::Encoder::new();
        let mut want = [0u8; 160];
        for _ in 0..3 {
            assert_eq!(enc.encode(&frame.samples, &mut wire).unwrap(), 160);
            reference.encode(&frame.samples, &mut want);
            assert_eq!(
                wire, want,
                "the frame coder is the codec, state carried over"
            );
            assert_eq!(dec.output_len(160), FRAME_SAMPLES);
            assert_eq!(dec.decode(&wire, &mut back).unwrap(), FRAME_SAMPLES);
        }
        // Long payloads in pieces: 100 ms is 800 bytes and 1600 samples.
        let mut out = vec![0i16; 1600];
        assert_eq!(dec.decode(&[0x55; 800], &mut out).unwrap(), 1600);
        // A reset starts over: the same input codes as it did first.
        enc.reset();
        let mut fresh = g722::Encoder::new();
        fresh.encode(&frame.samples, &mut want);
        enc.encode(&frame.samples, &mut wire).unwrap();
        assert_eq!(wire, want);
    }

    #[test]
    fn durations_and_sizes() {
        let f = AudioFormat::PCMU;
        assert_eq!(f.duration_of(160), Duration::from_millis(20));
        assert_eq!(f.bytes_in(Duration::from_millis(20)), 160);
        let p = AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000);
        assert_eq!(p.bytes_per_second(), 32_000);
        assert_eq!(p.duration_of(640), Duration::from_millis(20));
        assert_eq!(p.bytes_in(Duration::from_millis(100)), 3200);
        // Whole samples only, counted from nanoseconds: one 48 kHz sample is 20833.3 ns.
        let hi = AudioFormat::new(Encoding::L16, SampleRate::Hz48000);
        assert_eq!(hi.bytes_in(Duration::from_nanos(20_833)), 0);
        assert_eq!(hi.bytes_in(Duration::from_nanos(20_900)), 2);
        assert_eq!(hi.bytes_in(Duration::MAX), usize::MAX);
        assert_eq!(f.duration_of(usize::MAX), Duration::from_nanos(u64::MAX));
        assert_eq!(f.encoding.silence_byte(), 0xFF);
        assert_eq!(Encoding::Pcma.silence_byte(), 0xD5);
        assert_eq!(p.encoding.silence_byte(), 0);
        // The silence bytes are what G.711 makes of zero.
        let mut b = [0u8; 1];
        g711::encode_ulaw(&[0], &mut b);
        assert_eq!(b[0], Encoding::Pcmu.silence_byte());
        g711::encode_alaw(&[0], &mut b);
        assert_eq!(b[0], Encoding::Pcma.silence_byte());
    }

    #[test]
    fn every_format_turns_a_frame_into_a_frame_both_ways() {
        let rates = [
            SampleRate::Hz8000,
            SampleRate::Hz16000,
            SampleRate::Hz24000,
            SampleRate::Hz48000,
        ];
        let encodings = [
            Encoding::Pcmu,
            Encoding::Pcma,
            Encoding::L16,
            Encoding::S16Le,
        ];
        for rate in rates {
            for encoding in encodings {
                let format = AudioFormat::new(encoding, rate);
                let mut enc = FrameEncoder::new(format);
                let mut dec = FrameDecoder::new(format);
                let frame = PcmFrame::silence();
                let mut wire = vec![0u8; format.frame_bytes()];
                let mut back = [0i16; FRAME_SAMPLES];
                for _ in 0..3 {
                    assert_eq!(
                        enc.encode(&frame.samples, &mut wire).unwrap(),
                        format.frame_bytes()
                    );
                    assert_eq!(dec.decode(&wire, &mut back).unwrap(), FRAME_SAMPLES);
                }
            }
        }
    }

    #[test]
    fn sixteen_bit_byte_orders_are_distinct() {
        let mut be = FrameDecoder::new(AudioFormat::new(Encoding::L16, SampleRate::Hz16000));
        let mut le = FrameDecoder::new(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000));
        let mut out = [0i16; 1];
        be.decode(&[0x01, 0x02], &mut out).unwrap();
        assert_eq!(out[0], 0x0102);
        le.decode(&[0x01, 0x02], &mut out).unwrap();
        assert_eq!(out[0], 0x0201);
        assert_eq!(
            le.decode(&[1, 2, 3], &mut out),
            Err(CodecError::OddLength(3))
        );
        assert_eq!(
            le.decode(&[0; 8], &mut out),
            Err(CodecError::OutputTooSmall {
                needed: 4,
                available: 1
            })
        );
    }

    #[test]
    fn long_payloads_are_processed_in_pieces() {
        // 100 ms of μ-law (800 bytes) → 1600 samples, and 200 ms of 48 kHz L16 (19200 bytes).
        let mut dec = FrameDecoder::new(AudioFormat::PCMU);
        let mut out = vec![0i16; 1600];
        assert_eq!(dec.decode(&[0xFF; 800], &mut out).unwrap(), 1600);
        let mut dec = FrameDecoder::new(AudioFormat::new(Encoding::L16, SampleRate::Hz48000));
        let mut out = vec![0i16; 3200];
        assert_eq!(dec.decode(&[0; 19200], &mut out).unwrap(), 3200);
        let mut enc = FrameEncoder::new(AudioFormat::new(Encoding::L16, SampleRate::Hz48000));
        let mut wire = vec![0u8; 19200];
        assert_eq!(enc.encode(&out, &mut wire).unwrap(), 19200);
    }

    #[test]
    fn reframer_cuts_exact_frames_from_odd_chunks() {
        let mut r = Reframer::new();
        let signal: Vec<i16> = (0..1000).map(|i| i as i16).collect();
        let mut frames = Vec::new();
        for chunk in signal.chunks(77) {
            r.push(chunk, |f| frames.push(f.clone()));
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(r.pending(), 1000 - 960);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(&f.samples[..], &signal[i * 320..(i + 1) * 320]);
        }
    }
}
