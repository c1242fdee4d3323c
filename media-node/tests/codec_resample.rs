//! Resampler quality: tones keep their frequency and purity, out-of-band tones are rejected
//! before they can alias, and frame boundaries leave no trace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;

use proptest::prelude::*;
use vaani_media::codec::{
    AudioFormat, Encoding, FrameDecoder, FrameEncoder, Resampler, SampleRate, FRAME_SAMPLES,
};

const RATES: [SampleRate; 4] = [
    SampleRate::Hz8000,
    SampleRate::Hz16000,
    SampleRate::Hz24000,
    SampleRate::Hz48000,
];

fn tone(freq: f64, rate: SampleRate, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (seconds * f64::from(rate.hz())) as usize;
    (0..n)
        .map(|i| {
            (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate.hz())).sin()).round() as i16
        })
        .collect()
}

/// Runs `input` through `r` in 20 ms frames, as the node does.
fn run_frames(r: &mut Resampler, input: &[i16]) -> Vec<i16> {
    let from = r.from_hz() as usize / 50;
    let mut out = Vec::new();
    let mut buf = vec![0i16; r.to_hz() as usize / 50 + 8];
    for frame in input.chunks(from) {
        let n = r.process(frame, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Goertzel power of `freq` in `x`.
fn goertzel(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The frequency in `lo..hi` (10 Hz grid) with the most Goertzel power.
fn peak_frequency(x: &[i16], rate: SampleRate, lo: u32, hi: u32) -> f64 {
    (lo / 10..hi / 10)
        .map(|f| f64::from(f * 10))
        .max_by(|&a, &b| {
            goertzel(x, a, f64::from(rate.hz())).total_cmp(&goertzel(x, b, f64::from(rate.hz())))
        })
        .unwrap()
}

/// SNR in dB of `x` against the best-fitting sinusoid of `freq` (least squares on sin, cos and
/// DC): everything else — distortion, imaging, aliasing, noise — counts as noise.
fn snr_db(x: &[i16], freq: f64, rate: SampleRate) -> f64 {
    let w = 2.0 * PI * freq / f64::from(rate.hz());
    let cols: Vec<[f64; 3]> = (0..x.len())
        .map(|i| [(w * i as f64).sin(), (w * i as f64).cos(), 1.0])
        .collect();
    // Normal equations, 3×3.
    let mut a = [[0.0f64; 3]; 3];
    let mut b = [0.0f64; 3];
    for (c, &v) in cols.iter().zip(x) {
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += c[i] * c[j];
            }
            b[i] += c[i] * f64::from(v);
        }
    }
    let coef = solve3(a, b);
    let (mut signal, mut noise) = (0.0, 0.0);
    for (c, &v) in cols.iter().zip(x) {
        let fit = coef[0] * c[0] + coef[1] * c[1] + coef[2] * c[2];
        signal += fit * fit;
        noise += (f64::from(v) - fit).powi(2);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

#[allow(clippy::needless_range_loop)] // Gaussian elimination reads best with indices.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let pivot = (col..3)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..3 {
            let f = a[row][col] / a[col][col];
            for k in col..3 {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Drops the filter's settling time at the start.
fn steady(x: &[i16], rate: SampleRate) -> &[i16] {
    &x[rate.frame_samples() * 5..]
}

#[test]
fn a_1khz_tone_survives_8k_16k_8k_with_its_frequency_and_40db_snr() {
    let input = tone(1000.0, SampleRate::Hz8000, 1.0, 12_000.0);
    let mut up = Resampler::new(SampleRate::Hz8000, SampleRate::Hz16000);
    let mut down = Resampler::new(SampleRate::Hz16000, SampleRate::Hz8000);
    let wide = run_frames(&mut up, &input);
    assert_eq!(wide.len(), 2 * input.len());
    let back = run_frames(&mut down, &wide);
    assert_eq!(back.len(), input.len());

    let wide_steady = steady(&wide, SampleRate::Hz16000);
    let back_steady = steady(&back, SampleRate::Hz8000);
    assert!((peak_frequency(wide_steady, SampleRate::Hz16000, 200, 7800) - 1000.0).abs() <= 10.0);
    assert!((peak_frequency(back_steady, SampleRate::Hz8000, 200, 3900) - 1000.0).abs() <= 10.0);
    let snr_wide = snr_db(wide_steady, 1000.0, SampleRate::Hz16000);
    let snr_back = snr_db(back_steady, 1000.0, SampleRate::Hz8000);
    assert!(snr_wide > 40.0, "8k→16k SNR {snr_wide:.1} dB");
    assert!(snr_back > 40.0, "8k→16k→8k SNR {snr_back:.1} dB");
    // And the level is kept (pass band is flat).
    let gain = rms(back_steady) / rms(&input);
    assert!((gain - 1.0).abs() < 0.01, "gain {gain}");
}

#[test]
fn a_5khz_tone_at_16k_is_removed_before_it_can_alias_to_3khz() {
    let input = tone(5000.0, SampleRate::Hz16000, 1.0, 16_000.0);
    let mut down = Resampler::new(SampleRate::Hz16000, SampleRate::Hz8000);
    let out = run_frames(&mut down, &input);
    let out = steady(&out, SampleRate::Hz8000);
    let attenuation = 20.0 * (rms(&input) / rms(out).max(1e-9)).log10();
    assert!(
        attenuation > 40.0,
        "5 kHz attenuated only {attenuation:.1} dB"
    );
    // A naive decimator (every other sample) would have put it at 3 kHz at full level.
    let naive: Vec<i16> = input.iter().step_by(2).copied().collect();
    assert!(20.0 * (rms(&input) / rms(&naive)).log10() < 1.0);
}

#[test]
fn every_rate_pair_carries_in_band_tones_cleanly() {
    for from in RATES {
        for to in RATES {
            let low = from.hz().min(to.hz());
            // Tones across the pass band of the narrower side (to 0.4 × its rate).
            for freq in [300.0, 1000.0, 0.4 * f64::from(low)] {
                let input = tone(freq, from, 0.5, 10_000.0);
                let mut r = Resampler::new(from, to);
                let out = run_frames(&mut r, &input);
                assert_eq!(
                    out.len() * from.hz() as usize,
                    input.len() * to.hz() as usize,
                    "{from:?}→{to:?}"
                );
                let out = steady(&out, to);
                let snr = snr_db(out, freq, to);
                assert!(snr > 50.0, "{from:?}→{to:?} at {freq} Hz: SNR {snr:.1} dB");
                let gain = rms(out) / rms(&input);
                assert!(
                    (gain - 1.0).abs() < 0.01,
                    "{from:?}→{to:?} at {freq} Hz: gain {gain}"
                );
            }
        }
    }
}

#[test]
fn every_downsampler_rejects_the_band_that_would_alias() {
    for from in RATES {
        for to in RATES {
            if to.hz() >= from.hz() {
                continue;
            }
            // Anything above 0.6 × the output rate folds into the output band.
            for fraction in [0.6, 0.75, 0.95] {
                let freq = fraction * f64::from(to.hz());
                if freq >= f64::from(from.hz()) / 2.0 {
                    continue;
                }
                let input = tone(freq, from, 0.5, 16_000.0);
                let mut r = Resampler::new(from, to);
                let out = run_frames(&mut r, &input);
                let out = steady(&out, to);
                let attenuation = 20.0 * (rms(&input) / rms(out).max(1e-9)).log10();
                assert!(
                    attenuation > 60.0,
                    "{from:?}→{to:?} at {freq} Hz: only {attenuation:.1} dB"
                );
            }
        }
    }
}

#[test]
fn upsampling_leaves_no_images() {
    // 8k → 48k: a 1 kHz tone must not bring its images at 7, 9, 15, 17 kHz … along.
    let input = tone(1000.0, SampleRate::Hz8000, 0.5, 12_000.0);
    let mut r = Resampler::new(SampleRate::Hz8000, SampleRate::Hz48000);
    let out = run_frames(&mut r, &input);
    let out = steady(&out, SampleRate::Hz48000);
    let signal = goertzel(out, 1000.0, 48_000.0);
    for image in [7000.0, 9000.0, 15_000.0, 17_000.0] {
        let leak = 10.0 * (signal / goertzel(out, image, 48_000.0).max(1e-9)).log10();
        assert!(leak > 60.0, "image at {image} Hz only {leak:.1} dB down");
    }
}

#[test]
fn output_is_delayed_by_the_stated_group_delay() {
    // A tone comes out shifted by `delay()` output samples, so the fit against the input shifted
    // by that much is near perfect.
    let input = tone(500.0, SampleRate::Hz8000, 0.5, 10_000.0);
    let mut r = Resampler::new(SampleRate::Hz8000, SampleRate::Hz16000);
    let out = run_frames(&mut r, &input);
    let delay = r.delay();
    let w = 2.0 * PI * 500.0 / 16_000.0;
    let worst = out
        .iter()
        .enumerate()
        .skip(400)
        .map(|(i, &v)| (f64::from(v) - 10_000.0 * (w * (i as f64 - delay)).sin()).abs())
        .fold(0.0, f64::max);
    assert!(worst < 20.0, "worst deviation {worst}");
}

proptest! {
    /// Any split of the input into chunks gives exactly the output of one big call: the state
    /// carried across calls is complete, so frame boundaries cannot click.
    #[test]
    fn chunking_never_changes_the_output(
        from in 0usize..4,
        to in 0usize..4,
        cuts in proptest::collection::vec(1usize..400, 1..20),
        seed in any::<u32>(),
    ) {
        let (from, to) = (RATES[from], RATES[to]);
        let mut state = seed | 1;
        let input: Vec<i16> = (0..3000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 16) as i16
            })
            .collect();
        let mut whole = Resampler::new(from, to);
        let mut expected = vec![0i16; whole.output_len(input.len())];
        let n = whole.process(&input, &mut expected).unwrap();
        prop_assert_eq!(n, expected.len());

        let mut pieces = Resampler::new(from, to);
        let mut got = Vec::new();
        let mut rest = &input[..];
        let mut i = 0;
        while !rest.is_empty() {
            let take = cuts[i % cuts.len()].min(rest.len());
            let mut buf = vec![0i16; pieces.output_len(take)];
            let n = pieces.process(&rest[..take], &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            rest = &rest[take..];
            i += 1;
        }
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn ulaw_8k_decodes_to_a_clean_16k_tone_through_the_frame_pipeline() {
    // The node's inbound path: μ-law bytes → FrameDecoder → 320-sample frames.
    let pcm = tone(1000.0, SampleRate::Hz8000, 1.0, 12_000.0);
    let mut wire = vec![0u8; pcm.len()];
    vaani_media::codec::g711::encode_ulaw(&pcm, &mut wire);
    let mut dec = FrameDecoder::new(AudioFormat::PCMU);
    let mut out = Vec::new();
    let mut frame = [0i16; FRAME_SAMPLES];
    for payload in wire.chunks(160) {
        assert_eq!(dec.decode(payload, &mut frame).unwrap(), FRAME_SAMPLES);
        out.extend_from_slice(&frame);
    }
    let out = steady(&out, SampleRate::Hz16000);
    assert!((peak_frequency(out, SampleRate::Hz16000, 200, 7800) - 1000.0).abs() <= 10.0);
    // μ-law itself limits SNR to ~38 dB for a tone at this level.
    let snr = snr_db(out, 1000.0, SampleRate::Hz16000);
    assert!(snr > 30.0, "SNR {snr:.1} dB");

    // And back out: 16k frames → FrameEncoder → μ-law at 8 kHz, still a 1 kHz tone.
    let mut enc = FrameEncoder::new(AudioFormat::new(Encoding::Pcmu, SampleRate::Hz8000));
    let mut wire_out = Vec::new();
    let mut payload = [0u8; 160];
    for frame in out.chunks_exact(FRAME_SAMPLES) {
        assert_eq!(enc.encode(frame, &mut payload).unwrap(), 160);
        wire_out.extend_from_slice(&payload);
    }
    let mut decoded = vec![0i16; wire_out.len()];
    vaani_media::codec::g711::decode_ulaw(&wire_out, &mut decoded);
    let decoded = steady(&decoded, SampleRate::Hz8000);
    assert!((peak_frequency(decoded, SampleRate::Hz8000, 200, 3900) - 1000.0).abs() <= 10.0);
}
