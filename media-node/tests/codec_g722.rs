//! G.722 against the reference: vectors made by `scripts/g722-vectors.py` with the PyPI
//! `g722` package (libg722, the public-domain spandsp code Asterisk, FreeSWITCH and baresip
//! use). Bit-exact both ways, including codes no encoder makes.

use vaani_media::codec::g722::{Decoder, Encoder};

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/g722/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pcm(name: &str) -> Vec<i16> {
    data(name)
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The first index where two sequences differ, for a readable failure.
fn first_difference<T: PartialEq + Copy + std::fmt::Debug>(a: &[T], b: &[T]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("lengths {} and {}", a.len(), b.len()));
    }
    let i = a.iter().zip(b).position(|(x, y)| x != y)?;
    let hi = (i + 4).min(a.len());
    Some(format!(
        "index {i}: ours {:?}, reference {:?}",
        &a[i..hi],
        &b[i..hi]
    ))
}

#[test]
fn the_encoder_matches_the_reference() {
    let input = pcm("input.s16");
    let want = data("encoded.g722");
    // In 20 ms frames, as the RTP session codes them: state carries across calls.
    let mut enc = Encoder::new();
    let mut got = Vec::new();
    for frame in input.chunks(320) {
        let mut out = [0u8; 160];
        let n = enc.encode(frame, &mut out);
        got.extend_from_slice(&out[..n]);
    }
    assert_eq!(first_difference(&got, &want), None);
}

#[test]
fn the_decoder_matches_the_reference() {
    for (codes, reference) in [("encoded.g722", "decoded.s16"), ("codes.g722", "codes.s16")] {
        let input = data(codes);
        let want = pcm(reference);
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        // Odd chunk sizes: nothing depends on where packets split.
        for chunk in input.chunks(37) {
            let mut out = [0i16; 74];
            let n = dec.decode(chunk, &mut out);
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(first_difference(&got, &want), None, "{codes}");
    }
}
