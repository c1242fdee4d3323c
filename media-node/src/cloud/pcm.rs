//! Engine audio → the node's internal 16 kHz mono i16. TTS engines send little-endian
//! 16-bit PCM in chunks that need not end on a sample boundary (a base64 chunk can split a
//! sample), at whatever rate was asked for; this keeps the odd byte for the next chunk and
//! resamples other rates to 16 kHz.

use crate::codec::{Resampler, SampleRate, INTERNAL_RATE};

/// Streaming s16le bytes → 16 kHz samples.
#[derive(Debug)]
pub(crate) struct PcmDecoder {
    carry: Option<u8>,
    resampler: Option<Resampler>,
}

impl PcmDecoder {
    /// A decoder for audio at `rate` Hz; `None` for a rate the resampler does not know.
    pub(crate) fn new(rate: u32) -> Option<Self> {
        let from = SampleRate::from_hz(rate)?;
        let resampler = (from != INTERNAL_RATE).then(|| Resampler::new(from, INTERNAL_RATE));
        Some(PcmDecoder {
            carry: None,
            resampler,
        })
    }

    /// The samples `bytes` completes (possibly none).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<i16> {
        let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let Some(lo) = self.carry.take() {
            match rest.split_first() {
                Some((&hi, tail)) => {
                    samples.push(i16::from_le_bytes([lo, hi]));
                    rest = tail;
                }
                None => {
                    self.carry = Some(lo);
                    return samples;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            samples.push(i16::from_le_bytes([p[0], p[1]]));
        }
        if let [odd] = pairs.remainder() {
            self.carry = Some(*odd);
        }
        match &mut self.resampler {
            None => samples,
            Some(r) => {
                let mut out = vec![0i16; r.output_len(samples.len())];
                match r.process(&samples, &mut out) {
                    Ok(n) => {
                        out.truncate(n);
                        out
                    }
                    Err(_) => Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_splits_give_the_same_samples() {
        let samples: Vec<i16> = (0..100).map(|i| (i * 331 - 9000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for split in [1usize, 3, 7, 199] {
            let mut d = PcmDecoder::new(16_000).unwrap();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                got.extend(d.push(chunk));
            }
            assert_eq!(got, samples, "split {split}");
        }
    }

    #[test]
    fn other_rates_are_resampled() {
        let mut d = PcmDecoder::new(24_000).unwrap();
        let bytes = vec![0u8; 480 * 2];
        assert_eq!(d.push(&bytes).len(), 320);
        assert!(PcmDecoder::new(22_050).is_none());
    }
}
