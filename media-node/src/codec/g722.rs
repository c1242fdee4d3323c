//! ITU-T G.722: 7 kHz wideband audio by sub-band ADPCM, at 64 kbit/s (mode 1, the only mode
//! RTP carries, RFC 3551 §4.5.2).
//!
//! Each pair of 16 kHz samples is split by a 24-tap quadrature mirror filter into a lower
//! (0–4 kHz) and a higher (4–8 kHz) sub-band sample at 8 kHz; the lower band is coded with a
//! 6-bit adaptive quantizer, the higher with a 2-bit one, each with its own pole-zero
//! predictor and log-domain scale factor. One byte carries both: `(high << 6) | low`.
//! The decoder mirrors the encoder's adaptation and recombines the bands with the same QMF.
//!
//! Written from the Recommendation's block description (its block names — QUANTL, INVQAL,
//! LOGSCL, SCALEL, UPPOL1/2, UPZERO, FILTEP, FILTEZ, PREDIC — are the comments below) in
//! 32-bit integer arithmetic with the 16-bit saturation the Recommendation specifies, so the
//! output is bit-exact with the reference implementations (checked in
//! `tests/g722_vectors.rs` against vectors made by the PyPI `g722` package, a wrapper of the
//! public-domain libg722/spandsp code that Asterisk, FreeSWITCH and baresip use).
//!
//! No crate fits: the one on crates.io (`ezk-g722`) allocates a `Vec` per call and pulls
//! in a media framework; this one writes into the caller's buffers and allocates nothing,
//! which the RTP engine's packet loop requires.
//!
//! Every byte is a valid code, so [`Decoder::decode`] accepts anything (property-tested).

/// `a=rtpmap` clock rate of G.722 (RFC 3551: 8000, for historical reasons, though the audio
/// is sampled at 16 kHz).
pub const RTP_CLOCK: u32 = 8_000;

/// The QMF's 12 distinct coefficients (the filter is 24 taps, symmetric): the even taps in
/// order; the odd taps are the same values reversed.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Lower sub-band decision levels of the 6-bit quantizer (QUANTL), scaled by 2^12 / det.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];
/// QUANTL's code for interval `i` of a negative / non-negative difference.
const ILN: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
const ILP: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// The 6-bit inverse quantizer (decoder output of the lower band), by code.
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// The 4-bit inverse quantizer (INVQAL) feeding the lower band's predictor, by code >> 2.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// LOGSCL: the 4-bit code's magnitude class, and the log scale factor's step per class.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// SCALEL/SCALEH: 2^(i/32) × 2048, the mantissa of the linear scale factor.
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Higher sub-band: the 2-bit inverse quantizer, QUANTH's codes (small/large magnitude for a
/// negative / non-negative difference), LOGSCH's class per code and step per class.
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const IHN: [u8; 3] = [0, 1, 0];
const IHP: [u8; 3] = [0, 3, 2];
const RH2: [usize; 4] = [2, 1, 2, 1];
const WH: [i32; 3] = [0, -214, 798];

/// Saturates to the 16-bit range.
fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// SCALEL/SCALEH: the linear scale factor from the log one (`shift` is 8 for the lower
/// band, 10 for the higher).
fn scale(nb: i32, shift: i32) -> i32 {
    let mantissa = ILB[((nb >> 6) & 31) as usize];
    let exp = shift - (nb >> 11);
    let linear = if exp < 0 {
        mantissa << -exp
    } else {
        mantissa >> exp
    };
    linear << 2
}

/// One sub-band's adaptive predictor and scale factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Band {
    /// Predicted signal (PREDIC), and its pole and zero parts.
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signal and partial signal history (index 1 = the last sample; index 0
    /// is unused, kept so indices read as the Recommendation's).
    r: [i32; 3],
    p: [i32; 3],
    /// Pole predictor coefficients (1 and 2).
    a: [i32; 3],
    /// Quantized difference history and the zero predictor coefficients (1 to 6).
    d: [i32; 7],
    b: [i32; 7],
    /// Log and linear scale factors.
    nb: i32,
    det: i32,
}

impl Band {
    const fn new(det: i32) -> Self {
        Band {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            p: [0; 3],
            a: [0; 3],
            d: [0; 7],
            b: [0; 7],
            nb: 0,
            det,
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: adapts the scale factor by `step`, the log scale
    /// limited to `max`.
    fn adapt_scale(&mut self, step: i32, max: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + step).clamp(0, max);
        self.det = scale(self.nb, shift);
    }

    /// Block 4: reconstruction, predictor adaptation and the next prediction from the
    /// quantized difference `d`.
    fn update(&mut self, d: i32) {
        // RECONS and PARREC.
        let r0 = sat(self.s + d);
        let p0 = sat(self.sz + d);

        // UPPOL2: the second pole coefficient.
        let sg0 = p0 >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let wd3 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 } + ((self.a[2] * 32512) >> 15);
        let ap2 = wd3.clamp(-12288, 12288);

        // UPPOL1: the first, bounded by the second.
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let limit = sat(15360 - ap2);
        let ap1 = sat(wd1 + ((self.a[1] * 32640) >> 15)).clamp(-limit, limit);

        // UPZERO: the six zero coefficients, by sign agreement of `d` with its history.
        let step = if d == 0 { 0 } else { 128 };
        let sgd = d >> 15;
        let mut bp = [0i32; 7];
        for ((bp, &b), &d) in bp.iter_mut().zip(&self.b).zip(&self.d).skip(1) {
            let wd2 = if (d >> 15) == sgd { step } else { -step };
            *bp = sat(wd2 + ((b * 32640) >> 15));
        }

        // DELAYA: shift the histories (index 1 becomes this sample's values).
        for i in (2..7).rev() {
            self.d[i] = self.d[i - 1];
        }
        self.d[1] = d;
        self.b[1..].copy_from_slice(&bp[1..]);
        self.r[2] = self.r[1];
        self.r[1] = r0;
        self.p[2] = self.p[1];
        self.p[1] = p0;
        self.a[1] = ap1;
        self.a[2] = ap2;

        // FILTEP: the pole part of the prediction.
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);
        // FILTEZ: the zero part.
        let mut sz = 0;
        for (&b, &d) in self.b[1..].iter().zip(&self.d[1..]) {
            sz += (b * sat(d + d)) >> 15;
        }
        self.sz = sat(sz);
        // PREDIC.
        self.s = sat(self.sp + self.sz);
    }
}

/// Initial linear scale factors of the lower and higher bands.
const LOW_DET: i32 = 32;
const HIGH_DET: i32 = 8;

/// The QMF's 24-sample history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Qmf {
    x: [i32; 24],
}

impl Qmf {
    /// Takes two samples in; returns the even- and odd-tap sums.
    fn push(&mut self, first: i32, second: i32) -> (i32, i32) {
        self.x.copy_within(2.., 0);
        self.x[22] = first;
        self.x[23] = second;
        let mut even = 0;
        let mut odd = 0;
        for ((pair, &c_even), &c_odd) in self.x.chunks_exact(2).zip(&QMF).zip(QMF.iter().rev()) {
            even += pair[0] * c_even;
            odd += pair[1] * c_odd;
        }
        (even, odd)
    }
}

/// The encoder's state: one per outbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder in the Recommendation's reset state.
    pub const fn new() -> Self {
        Encoder {
            qmf: Qmf { x: [0; 24] },
            low: Band::new(LOW_DET),
            high: Band::new(HIGH_DET),
        }
    }

    /// Bytes [`encode`](Self::encode) writes for `samples` 16 kHz samples (a trailing odd
    /// sample is not coded).
    pub const fn output_len(samples: usize) -> usize {
        samples / 2
    }

    /// Codes 16 kHz `pcm` into `out`, one byte per pair of samples; returns the bytes
    /// written: `min(pcm.len() / 2, out.len())` (callers size `out` with
    /// [`output_len`](Self::output_len)).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut n = 0;
        for (pair, byte) in pcm.chunks_exact(2).zip(out.iter_mut()) {
            *byte = self.encode_pair(i32::from(pair[0]), i32::from(pair[1]));
            n += 1;
        }
        n
    }

    fn encode_pair(&mut self, first: i32, second: i32) -> u8 {
        let (even, odd) = self.qmf.push(first, second);
        let xlow = (odd + even) >> 14;
        let xhigh = (odd - even) >> 14;

        // Lower band. SUBTRA, then QUANTL: the interval of |el| among the scaled levels.
        let el = sat(xlow - self.low.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let det = self.low.det;
        // The first level above the magnitude (30 past the last); the levels rise, so a
        // binary search finds it.
        let interval = 1 + Q6[1..].partition_point(|&q| (q * det) >> 12 <= magnitude);
        let ilow = if el < 0 { ILN[interval] } else { ILP[interval] };
        // INVQAL on the 4-bit code, then the scale factor and predictor.
        let ril = usize::from(ilow >> 2);
        let dlow = (det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // Higher band: SUBTRA, QUANTH (two magnitudes), INVQAH, LOGSCH/SCALEH, block 4.
        let eh = sat(xhigh - self.high.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let det = self.high.det;
        let large = magnitude >= (564 * det) >> 12;
        let mih = if large { 2 } else { 1 };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        let dhigh = (det * QM2[usize::from(ihigh)]) >> 15;
        self.high
            .adapt_scale(WH[RH2[usize::from(ihigh)]], 22528, 10);
        self.high.update(dhigh);

        (ihigh << 6) | ilow
    }
}

/// The decoder's state: one per inbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder in the Recommendation's reset state.
    pub const fn new() -> Self {
        Decoder {
            qmf: Qmf { x: [0; 24] },
            low: Band::new(LOW_DET),
            high: Band::new(HIGH_DET),
        }
    }

    /// Samples [`decode`](Self::decode) writes for `bytes` of payload.
    pub const fn output_len(bytes: usize) -> usize {
        bytes * 2
    }

    /// Decodes `data` into 16 kHz samples in `out`, two per byte; returns the samples
    /// written: `min(2 × data.len(), out.len())` rounded down to whole bytes.
    pub fn decode(&mut self, data: &[u8], out: &mut [i16]) -> usize {
        let mut n = 0;
        for (&code, pair) in data.iter().zip(out.chunks_exact_mut(2)) {
            let (first, second) = self.decode_byte(code);
            pair[0] = first;
            pair[1] = second;
            n += 2;
        }
        n
    }

    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3F);
        let ihigh = usize::from(code >> 6);

        // Lower band: INVQBL and RECONS give the output sample (LIMIT); INVQAL's 4-bit
        // difference drives the adaptation, as in the encoder.
        let det = self.low.det;
        let rlow = (self.low.s + ((det * QM6[ilow]) >> 15)).clamp(-16384, 16383);
        let ril = ilow >> 2;
        let dlow = (det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // Higher band: INVQAH, RECONS, LIMIT, LOGSCH/SCALEH, block 4.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh]], 22528, 10);
        self.high.update(dhigh);

        // Receive QMF.
        let (even, odd) = self.qmf.push(rlow + rhigh, rlow - rhigh);
        (to_i16(odd >> 11), to_i16(even >> 11))
    }
}

fn to_i16(x: i32) -> i16 {
    // Lossless after the clamp.
    sat(x) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / 16_000.0).sin()) as i16
            })
            .collect()
    }

    /// Signal-to-noise ratio in dB of `got` against `want` delayed by `delay` samples.
    fn snr(want: &[i16], got: &[i16], delay: usize) -> f64 {
        let mut signal = 0.0;
        let mut noise = 0.0;
        for (w, g) in want.iter().zip(&got[delay..]) {
            let w = f64::from(*w);
            signal += w * w;
            noise += (w - f64::from(*g)).powi(2);
        }
        10.0 * (signal / noise.max(1.0)).log10()
    }

    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut wire = vec![0u8; Encoder::output_len(pcm.len())];
        assert_eq!(enc.encode(pcm, &mut wire), pcm.len() / 2);
        let mut out = vec![0i16; Decoder::output_len(wire.len())];
        assert_eq!(dec.decode(&wire, &mut out), pcm.len());
        out
    }

    #[test]
    fn tones_in_both_bands_survive_a_round_trip() {
        // The two QMFs delay by 22 samples. Lower band (300 Hz to 3 kHz) and higher (6 kHz):
        // measured 61, 47, 41 and 27 dB.
        for freq in [300.0, 1000.0, 3000.0, 6000.0] {
            let pcm = tone(freq, 8000.0, 16_000);
            let out = round_trip(&pcm);
            // Skip the first 100 ms while the scale factors adapt.
            let quality = snr(&pcm[1600..15_000], &out[1600..], 22);
            assert!(quality > 25.0, "{freq} Hz: SNR {quality:.1} dB");
        }
    }

    #[test]
    fn silence_stays_silent_and_frames_are_160_bytes() {
        let pcm = [0i16; 320];
        let mut enc = Encoder::new();
        let mut wire = [0u8; 160];
        assert_eq!(enc.encode(&pcm, &mut wire), 160);
        let mut dec = Decoder::new();
        let mut out = [1i16; 320];
        assert_eq!(dec.decode(&wire, &mut out), 320);
        assert!(out.iter().all(|s| s.abs() <= 3), "{:?}", &out[..16]);
    }

    #[test]
    fn short_buffers_bound_the_work() {
        let mut enc = Encoder::new();
        let mut wire = [0u8; 3];
        assert_eq!(enc.encode(&[1; 11], &mut wire), 3);
        assert_eq!(enc.encode(&[1; 5], &mut wire), 2);
        let mut dec = Decoder::new();
        let mut out = [0i16; 5];
        assert_eq!(dec.decode(&[0x55; 4], &mut out), 4);
    }

    #[test]
    fn full_scale_square_waves_do_not_overflow() {
        let pcm: Vec<i16> = (0..8000)
            .map(|n| if (n / 3) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let out = round_trip(&pcm);
        assert_eq!(out.len(), pcm.len());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let mut dec = Decoder::new();
            let mut out = vec![0i16; Decoder::output_len(data.len())];
            proptest::prop_assert_eq!(dec.decode(&data, &mut out), data.len() * 2);
        }

        #[test]
        fn any_samples_encode(pcm in proptest::collection::vec(proptest::num::i16::ANY, 0..2000)) {
            let mut enc = Encoder::new();
            let mut wire = vec![0u8; Encoder::output_len(pcm.len())];
            proptest::prop_assert_eq!(enc.encode(&pcm, &mut wire), pcm.len() / 2);
        }
    }
}
