//! G.711 against an independent re-implementation of the classic CCITT/Sun reference
//! (`g711.c`: linear segment search, explicit bias and clipping), exhaustively.

use vaani_media::codec::g711;

/// The reference's segment end points.
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn search(val: i32, table: &[i32; 8]) -> usize {
    table.iter().position(|&end| val <= end).unwrap_or(8)
}

fn ref_linear2ulaw(pcm: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 8159;
    let mut v = i32::from(pcm) >> 2;
    let mask: i32 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    if v > CLIP {
        v = CLIP;
    }
    v += BIAS >> 2;
    let seg = search(v, &SEG_UEND);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        let uval = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0xF);
        (uval ^ mask) as u8
    }
}

fn ref_ulaw2linear(code: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = i32::from(!code);
    let mut t = ((u & 0x0F) << 3) + BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

fn ref_linear2alaw(pcm: i16) -> u8 {
    let mut v = i32::from(pcm) >> 3;
    let mask: i32 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = search(v, &SEG_AEND);
    if seg >= 8 {
        (0x7F ^ mask) as u8
    } else {
        let mut aval = (seg as i32) << 4;
        if seg < 2 {
            aval |= (v >> 1) & 0xF;
        } else {
            aval |= (v >> seg) & 0xF;
        }
        (aval ^ mask) as u8
    }
}

fn ref_alaw2linear(code: u8) -> i16 {
    let a = i32::from(code ^ 0x55);
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[test]
fn ulaw_encode_matches_the_reference_for_every_sample() {
    for s in i16::MIN..=i16::MAX {
        assert_eq!(g711::linear_to_ulaw(s), ref_linear2ulaw(s), "sample {s}");
    }
}

#[test]
fn alaw_encode_matches_the_reference_for_every_sample() {
    for s in i16::MIN..=i16::MAX {
        assert_eq!(g711::linear_to_alaw(s), ref_linear2alaw(s), "sample {s}");
    }
}

#[test]
fn decoders_match_the_reference_for_every_code() {
    for c in 0..=255u8 {
        assert_eq!(
            g711::ulaw_to_linear(c),
            ref_ulaw2linear(c),
            "μ-law {c:#04x}"
        );
        assert_eq!(
            g711::alaw_to_linear(c),
            ref_alaw2linear(c),
            "A-law {c:#04x}"
        );
    }
}

#[test]
fn every_code_survives_decode_then_encode() {
    for c in 0..=255u8 {
        // μ-law 0x7F is negative zero; it re-encodes as the positive zero 0xFF.
        let expect = if c == 0x7F { 0xFF } else { c };
        assert_eq!(g711::linear_to_ulaw(g711::ulaw_to_linear(c)), expect);
        assert_eq!(g711::linear_to_alaw(g711::alaw_to_linear(c)), c);
    }
}

#[test]
fn quantization_is_monotonic_and_bounded() {
    let mut prev_u = i16::MIN;
    let mut prev_a = i16::MIN;
    for s in i16::MIN..=i16::MAX {
        let u = g711::ulaw_to_linear(g711::linear_to_ulaw(s));
        let a = g711::alaw_to_linear(g711::linear_to_alaw(s));
        assert!(u >= prev_u && a >= prev_a, "not monotonic at {s}");
        prev_u = u;
        prev_a = a;
        // Error within half the largest step (1024 for μ-law's top segment, 1024 for A-law's),
        // plus clipping at the extremes.
        let err_u = (i32::from(u) - i32::from(s)).abs();
        let err_a = (i32::from(a) - i32::from(s)).abs();
        assert!(
            err_u <= 1024 || s.unsigned_abs() > 32124,
            "{s}: μ-law error {err_u}"
        );
        assert!(
            err_a <= 1024 || s.unsigned_abs() > 32256,
            "{s}: A-law error {err_a}"
        );
    }
}

#[test]
fn bulk_helpers_agree_with_the_scalar_functions() {
    let samples: Vec<i16> = (0..4096).map(|i| (i * 16 - 32768) as i16).collect();
    let mut u = vec![0u8; samples.len()];
    let mut a = vec![0u8; samples.len()];
    assert_eq!(g711::encode_ulaw(&samples, &mut u), samples.len());
    assert_eq!(g711::encode_alaw(&samples, &mut a), samples.len());
    let mut back = vec![0i16; samples.len()];
    g711::decode_ulaw(&u, &mut back);
    for (i, &s) in samples.iter().enumerate() {
        assert_eq!(u[i], g711::linear_to_ulaw(s));
        assert_eq!(a[i], g711::linear_to_alaw(s));
        assert_eq!(back[i], g711::ulaw_to_linear(u[i]));
    }
    g711::decode_alaw(&a, &mut back);
    for i in 0..samples.len() {
        assert_eq!(back[i], g711::alaw_to_linear(a[i]));
    }
}

/// FNV-1a, to compare whole tables with digests computed elsewhere.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn whole_tables_match_cpython_audioop() {
    // Third opinion: CPython's `audioop` (also the Sun algorithm), digests computed with
    // `fnv1a(audioop.lin2ulaw(struct.pack('<65536h', *range(-32768, 32768)), 2))` etc. and
    // little-endian 16-bit output for the decoders.
    let all = i16::MIN..=i16::MAX;
    assert_eq!(
        fnv1a(all.clone().map(g711::linear_to_ulaw)),
        0xd5ee_23f7_d0ff_ae91
    );
    assert_eq!(fnv1a(all.map(g711::linear_to_alaw)), 0xf030_666e_b780_cf25);
    let le = |f: fn(u8) -> i16| (0..=255u8).flat_map(move |c| f(c).to_le_bytes());
    assert_eq!(fnv1a(le(g711::ulaw_to_linear)), 0xb91e_65d6_8481_a1a8);
    assert_eq!(fnv1a(le(g711::alaw_to_linear)), 0x693a_40ca_62a3_d2a5);
}
