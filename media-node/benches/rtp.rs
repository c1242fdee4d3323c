//! Per-packet cost of the G.711 media path, one 20 ms packet per iteration, in virtual time.
//!
//! - `inbound`: parse + jitter push/pop + μ-law decode + resample 8 → 16 kHz;
//! - `outbound`: resample 16 → 8 kHz + μ-law encode + RTP header write;
//! - and each stage alone, with G.722's encode and decode of a 20 ms frame for comparison.
//!
//! After criterion's runs, a plain timed loop prints the implied calls per core: a call is
//! 50 packets/s in each direction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use vaani_media::codec::{
    g711, AudioFormat, FrameDecoder, FrameEncoder, Resampler, SampleRate, FRAME_SAMPLES,
};
use vaani_media::rtp::jitter::{JitterBuffer, JitterConfig, Playout};
use vaani_media::rtp::packet::{RtpHeader, RtpPacket};

/// A μ-law speech-like payload (a tone, so the decoder sees varied codes).
fn payload() -> [u8; 160] {
    let mut p = [0u8; 160];
    for (i, b) in p.iter_mut().enumerate() {
        let s = (9000.0 * (i as f64 * 0.39).sin()) as i16;
        *b = g711::linear_to_ulaw(s);
    }
    p
}

/// One inbound leg: a datagram buffer the "socket" writes into, and the leg's state.
struct Inbound {
    datagram: Vec<u8>,
    jb: JitterBuffer,
    decoder: FrameDecoder,
    pcm: [i16; FRAME_SAMPLES],
    t0: Instant,
    k: u64,
}

impl Inbound {
    fn new() -> Self {
        let mut datagram = Vec::new();
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc: 0x5EED,
        }
        .write_to_vec(&payload(), &mut datagram)
        .unwrap();
        Inbound {
            datagram,
            jb: JitterBuffer::new(JitterConfig::default()).unwrap(),
            decoder: FrameDecoder::new(AudioFormat::PCMU),
            pcm: [0; FRAME_SAMPLES],
            t0: Instant::now(),
            k: 0,
        }
    }

    /// The next packet arrives (sequence and timestamp patched in place, as a receive into
    /// the same buffer would) and everything due is played and decoded.
    fn step(&mut self) -> i16 {
        let k = self.k;
        self.k += 1;
        self.datagram[2..4].copy_from_slice(&(k as u16).to_be_bytes());
        self.datagram[4..8].copy_from_slice(&((k as u32).wrapping_mul(160)).to_be_bytes());
        let now = self.t0 + Duration::from_millis(20 * k);
        let packet = RtpPacket::parse(black_box(&self.datagram)).unwrap();
        self.jb.push(now, &packet);
        let mut acc = 0i16;
        loop {
            match self.jb.pop(now) {
                Playout::Frame(f) => {
                    self.decoder.decode(f.payload, &mut self.pcm).unwrap();
                    acc = acc.wrapping_add(self.pcm[7]);
                }
                Playout::Missing { .. } => {}
                Playout::NotYet { .. } => break,
            }
        }
        acc
    }
}

struct Outbound {
    encoder: FrameEncoder,
    pcm: [i16; FRAME_SAMPLES],
    payload: [u8; 160],
    datagram: [u8; 172],
    k: u32,
}

impl Outbound {
    fn new() -> Self {
        let mut pcm = [0i16; FRAME_SAMPLES];
        for (i, s) in pcm.iter_mut().enumerate() {
            *s = (9000.0 * (i as f64 * 0.2).sin()) as i16;
        }
        Outbound {
            encoder: FrameEncoder::new(AudioFormat::PCMU),
            pcm,
            payload: [0; 160],
            datagram: [0; 172],
            k: 0,
        }
    }

    fn step(&mut self) -> usize {
        self.k = self.k.wrapping_add(1);
        let n = self
            .encoder
            .encode(black_box(&self.pcm), &mut self.payload)
            .unwrap();
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: self.k as u16,
            timestamp: self.k.wrapping_mul(160),
            ssrc: 9,
        }
        .write(&self.payload[..n], &mut self.datagram)
        .unwrap()
    }
}

fn stages(c: &mut Criterion) {
    let mut inbound = Inbound::new();
    c.bench_function("inbound: parse + jitter + ulaw decode + 8k->16k", |b| {
        b.iter(|| inbound.step())
    });
    let mut outbound = Outbound::new();
    c.bench_function("outbound: 16k->8k + ulaw encode + rtp write", |b| {
        b.iter(|| outbound.step())
    });

    let datagram = Inbound::new().datagram;
    c.bench_function("stage: rtp parse", |b| {
        b.iter(|| {
            RtpPacket::parse(black_box(&datagram))
                .unwrap()
                .payload
                .len()
        })
    });

    let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
    let mut buf = datagram.clone();
    let t0 = Instant::now();
    let mut k = 0u64;
    c.bench_function("stage: jitter push + pop", |b| {
        b.iter(|| {
            buf[2..4].copy_from_slice(&(k as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&((k as u32).wrapping_mul(160)).to_be_bytes());
            let now = t0 + Duration::from_millis(20 * k);
            k += 1;
            let p = RtpPacket::parse(&buf).unwrap();
            jb.push(now, &p);
            let mut n = 0;
            while let Playout::Frame(f) = jb.pop(now) {
                n += f.payload.len();
            }
            n
        })
    });

    let ulaw = payload();
    let mut pcm8 = [0i16; 160];
    c.bench_function("stage: ulaw decode 160", |b| {
        b.iter(|| g711::decode_ulaw(black_box(&ulaw), &mut pcm8))
    });
    let mut enc = [0u8; 160];
    c.bench_function("stage: ulaw encode 160", |b| {
        b.iter(|| g711::encode_ulaw(black_box(&pcm8), &mut enc))
    });

    let mut up = Resampler::new(SampleRate::Hz8000, SampleRate::Hz16000);
    let mut pcm16 = [0i16; 320];
    c.bench_function("stage: resample 8k->16k (20 ms)", |b| {
        b.iter(|| up.process(black_box(&pcm8), &mut pcm16).unwrap())
    });
    let mut down = Resampler::new(SampleRate::Hz16000, SampleRate::Hz8000);
    c.bench_function("stage: resample 16k->8k (20 ms)", |b| {
        b.iter(|| down.process(black_box(&pcm16), &mut pcm8).unwrap())
    });

    // G.722 codes 16 kHz directly: no resampling, but sub-band ADPCM in both directions.
    let mut g722_enc = FrameEncoder::new(AudioFormat::G722);
    let mut g722_dec = FrameDecoder::new(AudioFormat::G722);
    up.process(&pcm8, &mut pcm16).unwrap();
    let mut wideband = [0u8; 160];
    c.bench_function("stage: g722 encode 320 (20 ms)", |b| {
        b.iter(|| g722_enc.encode(black_box(&pcm16), &mut wideband).unwrap())
    });
    let mut pcm16_out = [0i16; 320];
    c.bench_function("stage: g722 decode 160 (20 ms)", |b| {
        b.iter(|| {
            g722_dec
                .decode(black_box(&wideband), &mut pcm16_out)
                .unwrap()
        })
    });
}

criterion_group!(benches, stages);

/// Times `n` steps of `f` and returns nanoseconds per step.
fn per_step(n: u32, mut f: impl FnMut() -> u64) -> f64 {
    let mut sink = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        sink = sink.wrapping_add(f());
    }
    let elapsed = start.elapsed();
    black_box(sink);
    elapsed.as_nanos() as f64 / f64::from(n)
}

fn summary() {
    let mut inbound = Inbound::new();
    let mut outbound = Outbound::new();
    // VAANI_BENCH_PACKETS shortens the run, e.g. for `valgrind --tool=callgrind` instruction
    // counts, which are repeatable where wall time on a shared machine is not.
    let n = std::env::var("VAANI_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let inbound_ns = per_step(n, || inbound.step() as u64);
    let outbound_ns = per_step(n, || outbound.step() as u64);
    // 50 packets/s each way per call.
    let inbound_calls = 1e9 / (inbound_ns * 50.0);
    let duplex_calls = 1e9 / ((inbound_ns + outbound_ns) * 50.0);
    println!(
        "\nsummary: inbound {inbound_ns:.0} ns/packet -> {inbound_calls:.0} calls/core (receive side only); \
         outbound {outbound_ns:.0} ns/packet; both ways {:.0} ns per call per 20 ms -> {duplex_calls:.0} calls/core",
        inbound_ns + outbound_ns
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only `cargo bench` passes `--bench`: `cargo test --all-targets` runs this target in test
    // mode with no flag, where a million packets of an unoptimized build take minutes.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
