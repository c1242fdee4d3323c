//! The per-packet media path allocates nothing after construction: parse, jitter buffer
//! push/pop, DTMF, decode + resample to 16 kHz, and resample + encode + RTP write back out.
//! A counting global allocator (per thread, so parallel tests do not interfere) checks it.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use vaani_media::codec::{AudioFormat, FrameDecoder, FrameEncoder, FRAME_SAMPLES};
use vaani_media::rtp::dtmf::{DtmfReceiver, TelephoneEvent};
use vaani_media::rtp::jitter::{JitterBuffer, JitterConfig, Playout};
use vaani_media::rtp::packet::{RtpHeader, RtpPacket};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(10);
    drop(v);
    assert_eq!(allocations() - before, 1);
}

#[test]
fn the_per_packet_path_never_allocates() {
    let t0 = Instant::now();
    // Everything a call leg holds, built up front.
    let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
    let mut dtmf = DtmfReceiver::default();
    let mut decoder = FrameDecoder::new(AudioFormat::PCMU);
    let mut encoder = FrameEncoder::new(AudioFormat::PCMU);
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut wire_out = [0u8; 1500];
    let mut payload_out = [0u8; 160];
    let datagrams: Vec<Vec<u8>> = (0..600u32)
        .map(|k| {
            let mut v = Vec::new();
            let (pt, payload): (u8, Vec<u8>) = if k % 50 == 49 {
                let ev = TelephoneEvent {
                    event: 5,
                    end: true,
                    volume: 10,
                    duration: 800,
                };
                (101, ev.to_bytes().to_vec())
            } else {
                (0, vec![(k % 256) as u8; 160])
            };
            RtpHeader {
                marker: false,
                payload_type: pt,
                sequence: 65_000u16.wrapping_add(k as u16),
                timestamp: (u32::MAX - 20_000).wrapping_add(160 * k),
                ssrc: 0x1234,
            }
            .write_to_vec(&payload, &mut v)
            .unwrap();
            v
        })
        .collect();

    let mut step = |k: usize, datagram: &[u8]| -> usize {
        let now = t0 + Duration::from_millis(20 * k as u64 + (k as u64 * 7) % 13);
        let mut out_bytes = 0;
        let p = RtpPacket::parse(datagram).unwrap();
        if p.payload_type == 101 {
            let n = dtmf.push(now, &p.header(), p.payload).unwrap().count();
            out_bytes += n;
        } else {
            jb.push(now, &p);
        }
        loop {
            match jb.pop(now) {
                Playout::Frame(f) => {
                    assert_eq!(decoder.decode(f.payload, &mut pcm).unwrap(), FRAME_SAMPLES);
                }
                Playout::Missing { .. } => pcm.fill(0),
                Playout::NotYet { .. } => break,
            }
            let n = encoder.encode(&pcm, &mut payload_out).unwrap();
            out_bytes += RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: k as u16,
                timestamp: 160 * k as u32,
                ssrc: 9,
            }
            .write(&payload_out[..n], &mut wire_out)
            .unwrap();
        }
        out_bytes
    };

    // Warm-up, then measure (the sequence and timestamp wraps fall in the measured part).
    let mut total = 0;
    for (k, d) in datagrams.iter().enumerate().take(100) {
        total += step(k, d);
    }
    let before = allocations();
    for (k, d) in datagrams.iter().enumerate().skip(100) {
        total += step(k, d);
    }
    let during = allocations() - before;
    assert!(total > 0);
    assert_eq!(during, 0, "{during} allocations in 500 packets");
    assert!(jb.counters().played > 400);
}
