//! G.711 μ-law (PCMU) and A-law (PCMA), bit-exact to ITU-T G.711.
//!
//! Both directions are single table loads, tables built at compile time: decoding from the
//! standard's expansion rule (256 entries each), encoding from a compressor that finds the
//! segment with one `leading_zeros` instead of the reference's segment search (16 KiB for
//! μ-law's 14 significant bits, 8 KiB for A-law's 13). A load is ~6× faster than the
//! arithmetic per sample, and the tables are small enough to stay cache-resident on a busy
//! node. `tests/codec_g711.rs` checks both directions against an independent bit-level
//! re-implementation of the classic CCITT/Sun reference over every 16-bit input and every code,
//! and against CPython's `audioop`.
//!
//! The 16-bit linear input is truncated exactly as the reference does: μ-law uses the top 14
//! bits (`sample >> 2`), A-law the top 13 (`sample >> 3`), arithmetic shifts both.

/// μ-law bias in the 14-bit domain (the reference's `BIAS >> 2` with `BIAS = 0x84`).
const ULAW_BIAS: i32 = 0x84 >> 2;
/// Largest μ-law magnitude before the bias is added (the reference's `CLIP`).
const ULAW_CLIP: i32 = 8159;

/// Decodes one μ-law byte to 16-bit linear PCM.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Decodes one A-law byte to 16-bit linear PCM.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

/// Encodes one 16-bit linear sample to μ-law (one table load).
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // The table is indexed by the 14 bits the encoder looks at.
    ULAW_ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// Encodes one 16-bit linear sample to A-law (one table load).
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 3) as u16 & 0x1FFF) as usize]
}

/// μ-law compression of a 14-bit sample (`sample >> 2`), computing the segment with one
/// `leading_zeros` where the reference searches a table of segment ends.
const fn ulaw_compress(x: i32) -> u8 {
    let (magnitude, mask) = if x < 0 { (-x, 0x7F) } else { (x, 0xFF) };
    let clipped = if magnitude > ULAW_CLIP {
        ULAW_CLIP
    } else {
        magnitude
    };
    // Clipping to 8191 after the bias (rather than only to CLIP before it) folds the
    // reference's "segment 8" overflow case into the top code of segment 7, which is what it
    // returns there.
    let biased = clipped + ULAW_BIAS;
    let biased = (if biased > 0x1FFF { 0x1FFF } else { biased }) as u32;
    // biased >= 33, so leading_zeros <= 26 and the segment is in 0..=7.
    let segment = (31 - biased.leading_zeros()).saturating_sub(5);
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

/// A-law compression of a 13-bit sample (`sample >> 3`).
const fn alaw_compress(x: i32) -> u8 {
    let (magnitude, mask) = if x >= 0 { (x, 0xD5) } else { (-x - 1, 0x55) };
    // magnitude is in 0..=4095 for any 13-bit input, so the segment is in 0..=7.
    let magnitude = magnitude as u32;
    let segment = if magnitude < 32 {
        0
    } else {
        31 - magnitude.leading_zeros() - 4
    };
    let shift = if segment < 2 { 1 } else { segment };
    let mantissa = (magnitude >> shift) & 0x0F;
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

/// 16 KiB: the μ-law code of every 14-bit input, indexed by its two's-complement bits.
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut t = [0u8; 1 << 14];
    let mut i = 0;
    while i < 1 << 14 {
        // Sign-extend the 14-bit index.
        let x = ((i as i32) << 18) >> 18;
        t[i] = ulaw_compress(x);
        i += 1;
    }
    t
};

/// 8 KiB: the A-law code of every 13-bit input.
static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut t = [0u8; 1 << 13];
    let mut i = 0;
    while i < 1 << 13 {
        let x = ((i as i32) << 19) >> 19;
        t[i] = alaw_compress(x);
        i += 1;
    }
    t
};

/// Decodes μ-law bytes into `out` (which must be at least `codes.len()` long); returns the
/// number of samples written.
pub fn decode_ulaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = ULAW_TABLE[c as usize];
    }
    n
}

/// Decodes A-law bytes into `out`; returns the number of samples written.
pub fn decode_alaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = ALAW_TABLE[c as usize];
    }
    n
}

/// Encodes samples to μ-law into `out`; returns the number of bytes written.
pub fn encode_ulaw(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
        *o = linear_to_ulaw(s);
    }
    n
}

/// Encodes samples to A-law into `out`; returns the number of bytes written.
pub fn encode_alaw(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
        *o = linear_to_alaw(s);
    }
    n
}

/// The μ-law code of digital silence (a positive zero).
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code of digital silence (the smallest positive step, +8).
pub const ALAW_SILENCE: u8 = 0xD5;

/// G.711 §2 μ-law expansion: complement, then `((mantissa << 3) + 0x84) << segment`, minus the
/// bias, signed by bit 7 (clear = negative).
const fn ulaw_expand(code: u8) -> i16 {
    let u = !code;
    let mantissa = (u & 0x0F) as i32;
    let segment = ((u & 0x70) >> 4) as i32;
    let t = ((mantissa << 3) + 0x84) << segment;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

/// G.711 A-law expansion: even bits inverted (`^ 0x55`), then the segment's step and offset,
/// signed by bit 7 (set = positive).
const fn alaw_expand(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    let t = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        s => (mantissa + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_expand(i as u8)
        } else {
            ulaw_expand(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_from_the_standard_tables() {
        // μ-law: 0xFF and 0x7F are ±0, 0x80/0x00 the extremes (±32124).
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        // A-law: 0xD5/0x55 are ±8, 0xAA/0x2A the extremes (±32256).
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn slice_helpers_stop_at_the_shorter_side() {
        let mut out = [0i16; 2];
        assert_eq!(decode_ulaw(&[0xFF, 0x80, 0x00], &mut out), 2);
        assert_eq!(out, [0, 32124]);
        let mut bytes = [0u8; 3];
        assert_eq!(encode_alaw(&[0, -1], &mut bytes), 2);
        assert_eq!(&bytes[..2], &[0xD5, 0x55]);
    }
}
