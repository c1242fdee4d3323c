//! The jitter buffer and reception statistics in virtual time: a simulated network delays,
//! reorders, duplicates and drops packets; a simulated driver pops every millisecond. No sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vaani_media::rtp::jitter::{JitterBuffer, JitterConfig, Playout, PushOutcome};
use vaani_media::rtp::packet::{RtpHeader, RtpPacket};
use vaani_media::rtp::stats::ReceiverStats;

/// Small deterministic PRNG (xorshift64*), so every scenario replays exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    at_ms: u64,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Frame { seq: u16, ts: u32, tag: u8 },
    Missing { ts: u32 },
}

/// Sends `n` 20 ms packets (G.711: 160 timestamp units) from `seq0`/`ts0`; packet *k* leaves at
/// `20k` ms. The payload's first byte tags the packet so frames can be traced to packets.
fn stream(n: usize, seq0: u16, ts0: u32, ssrc: u32, start_ms: u64) -> Vec<Arrival> {
    (0..n)
        .map(|k| Arrival {
            at_ms: start_ms + 20 * k as u64,
            seq: seq0.wrapping_add(k as u16),
            ts: ts0.wrapping_add(160 * k as u32),
            ssrc,
        })
        .collect()
}

fn packet_bytes(a: &Arrival) -> Vec<u8> {
    let mut v = Vec::new();
    RtpHeader {
        marker: false,
        payload_type: 0,
        sequence: a.seq,
        timestamp: a.ts,
        ssrc: a.ssrc,
    }
    .write_to_vec(&[a.seq as u8; 160], &mut v)
    .unwrap();
    v
}

struct Sim {
    jb: JitterBuffer,
    t0: Instant,
    /// `(pop time in ms, output)`.
    out: Vec<(u64, Out)>,
    outcomes: Vec<(u16, PushOutcome)>,
}

impl Sim {
    fn new(config: JitterConfig) -> Self {
        Sim {
            jb: JitterBuffer::new(config).unwrap(),
            t0: Instant::now(),
            out: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Delivers `arrivals` (any order; sorted stably by time here) and pops every millisecond
    /// until `until_ms`.
    fn run(&mut self, mut arrivals: Vec<Arrival>, until_ms: u64) {
        arrivals.sort_by_key(|a| a.at_ms);
        let mut next = 0;
        for ms in 0..=until_ms {
            let now = self.at(ms);
            while next < arrivals.len() && arrivals[next].at_ms == ms {
                let bytes = packet_bytes(&arrivals[next]);
                let p = RtpPacket::parse(&bytes).unwrap();
                let outcome = self.jb.push(now, &p);
                self.outcomes.push((arrivals[next].seq, outcome));
                next += 1;
            }
            loop {
                match self.jb.pop(now) {
                    Playout::Frame(f) => {
                        assert_eq!(f.payload.len(), 160);
                        self.out.push((
                            ms,
                            Out::Frame {
                                seq: f.sequence,
                                ts: f.timestamp,
                                tag: f.payload[0],
                            },
                        ));
                    }
                    Playout::Missing {
                        timestamp,
                        duration,
                    } => {
                        assert!(duration > 0);
                        self.out.push((ms, Out::Missing { ts: timestamp }));
                    }
                    Playout::NotYet { next } => {
                        if let Some(next) = next {
                            assert!(next > now, "NotYet must point to the future");
                        }
                        break;
                    }
                }
            }
        }
    }

    fn frames(&self) -> Vec<u16> {
        self.out
            .iter()
            .filter_map(|(_, o)| match o {
                Out::Frame { seq, .. } => Some(*seq),
                Out::Missing { .. } => None,
            })
            .collect()
    }
}

fn config() -> JitterConfig {
    JitterConfig::default() // 8 kHz, 60 ms target, 200 ms cap, 32 slots
}

/// Adds a network delay drawn from `0..max_jitter_ms` (plus 5 ms) to every packet.
fn jittered(mut arrivals: Vec<Arrival>, rng: &mut Rng, max_jitter_ms: u64) -> Vec<Arrival> {
    for a in &mut arrivals {
        a.at_ms += 5 + rng.below(max_jitter_ms);
    }
    arrivals
}

#[test]
fn in_order_stream_plays_every_frame_on_a_steady_20ms_clock() {
    let mut sim = Sim::new(config());
    sim.run(stream(100, 1000, 8000, 7, 5), 2200);
    let frames: Vec<_> = sim.out.iter().take(100).collect();
    for (k, (ms, out)) in frames.iter().enumerate() {
        // First packet arrives at 5 ms, plays at 5 + 60; then every 20 ms.
        assert_eq!(*ms, 65 + 20 * k as u64);
        assert_eq!(
            *out,
            Out::Frame {
                seq: 1000 + k as u16,
                ts: 8000 + 160 * k as u32,
                tag: (1000 + k) as u8
            }
        );
    }
    // After the stream ends, the clock keeps running and reports loss, paced.
    let after: Vec<_> = sim.out[100..].iter().collect();
    assert!(!after.is_empty());
    for (i, (ms, out)) in after.iter().enumerate() {
        assert_eq!(*ms, 65 + 20 * (100 + i) as u64);
        assert!(matches!(out, Out::Missing { .. }));
    }
    let c = sim.jb.counters();
    assert_eq!((c.pushed, c.played, c.late, c.duplicates), (100, 100, 0, 0));
}

#[test]
fn reordering_within_the_target_delay_is_invisible() {
    let mut rng = Rng(0x5EED);
    let mut sim = Sim::new(config());
    // Up to 45 ms of jitter against 20 ms spacing: heavy reordering, all within the 60 ms target.
    let arrivals = jittered(stream(500, 40_000, 1 << 20, 9, 0), &mut rng, 45);
    let reordered = arrivals
        .windows(2)
        .filter(|w| w[1].at_ms < w[0].at_ms)
        .count();
    assert!(
        reordered > 50,
        "the scenario must actually reorder ({reordered})"
    );
    sim.run(arrivals, 10_200);
    let frames = sim.frames();
    assert_eq!(
        frames[..500],
        (0..500).map(|k| 40_000u16 + k).collect::<Vec<_>>()[..]
    );
    // None missing while the stream lasted.
    assert!(sim.out[..500]
        .iter()
        .all(|(_, o)| matches!(o, Out::Frame { .. })));
    // Paced: one frame per 20 ms.
    for w in sim.out[..500].windows(2) {
        assert_eq!(w[1].0 - w[0].0, 20);
    }
}

#[test]
fn duplicates_play_once() {
    let mut rng = Rng(77);
    let mut sim = Sim::new(config());
    let mut arrivals = Vec::new();
    for a in stream(300, 10, 0, 1, 0) {
        for _ in 0..1 + rng.below(3) {
            let mut copy = a;
            copy.at_ms += 5 + rng.below(40);
            arrivals.push(copy);
        }
    }
    let extra = arrivals.len() - 300;
    sim.run(arrivals, 6100);
    assert_eq!(sim.frames()[..300], (10..310).collect::<Vec<u16>>()[..]);
    let c = sim.jb.counters();
    assert_eq!(c.duplicates + c.late, extra as u64);
    assert!(c.duplicates > 0);
    // Duplicates count as received for RFC 3550 (A.3), so cumulative loss goes negative.
    assert!(sim.jb.stats().cumulative_lost() < 0);
}

#[test]
fn lost_packets_become_missing_frames_at_their_timestamps() {
    let mut rng = Rng(4242);
    let mut sim = Sim::new(config());
    let mut arrivals = stream(400, 0, 0, 3, 0);
    let mut lost = Vec::new();
    // Keep the first two (A.1 probation) and the last; drop ~10% of the rest.
    arrivals.retain(|a| {
        let keep = a.seq < 2 || a.seq == 399 || rng.below(10) != 0;
        if !keep {
            lost.push(a.ts);
        }
        keep
    });
    let arrivals = jittered(arrivals, &mut rng, 30);
    sim.run(arrivals, 8100);
    let outputs: Vec<Out> = sim.out.iter().take(400).map(|(_, o)| *o).collect();
    let missing: Vec<u32> = outputs
        .iter()
        .filter_map(|o| match o {
            Out::Missing { ts } => Some(*ts),
            _ => None,
        })
        .collect();
    assert_eq!(missing, lost);
    assert_eq!(outputs.len() - missing.len(), 400 - lost.len());
    // RFC 3550 A.3 on the same stream: all 400 expected after probation (the first packet is
    // the probation packet), the lost ones missing.
    let stats = sim.jb.stats();
    assert_eq!(stats.expected(), 399);
    assert_eq!(stats.cumulative_lost(), lost.len() as i32);
}

#[test]
fn sequence_numbers_wrap_at_65535() {
    let mut rng = Rng(99);
    let mut sim = Sim::new(config());
    let arrivals = jittered(stream(200, 65_436, 0, 5, 0), &mut rng, 40);
    sim.run(arrivals, 4100);
    let expected: Vec<u16> = (0..200u16).map(|k| 65_436u16.wrapping_add(k)).collect();
    assert_eq!(sim.frames()[..200], expected[..]);
    assert!(sim.out[..200]
        .iter()
        .all(|(_, o)| matches!(o, Out::Frame { .. })));
    // A.1/A.3 see one wrap.
    let stats = sim.jb.stats();
    assert_eq!(stats.extended_max(), 65_536 + 99);
    assert_eq!(stats.cumulative_lost(), 0);
}

#[test]
fn timestamps_wrap_at_u32_max() {
    let mut rng = Rng(1234);
    let mut sim = Sim::new(config());
    // Wraps after 50 packets, and the sequence wraps too (both at once is the hard case).
    let arrivals = jittered(
        stream(200, 65_500, u32::MAX - 160 * 50 + 1, 5, 0),
        &mut rng,
        40,
    );
    sim.run(arrivals, 4100);
    let ts: Vec<u32> = sim
        .out
        .iter()
        .take(200)
        .map(|(_, o)| match o {
            Out::Frame { ts, .. } => *ts,
            Out::Missing { ts } => panic!("unexpected loss at {ts}"),
        })
        .collect();
    let expected: Vec<u32> = (0..200u32)
        .map(|k| (u32::MAX - 160 * 50 + 1).wrapping_add(160 * k))
        .collect();
    assert_eq!(ts, expected);
    assert!(ts.contains(&0), "the wrap happened inside the stream");
}

#[test]
fn a_new_ssrc_resets_and_strays_from_the_old_one_are_dropped() {
    let mut sim = Sim::new(config());
    let first = stream(50, 100, 5000, 0xAAAA, 0);
    // The far end switches source at 1000 ms: new sequence and timestamp bases.
    let second = stream(50, 30_000, 9_999_999, 0xBBBB, 1000);
    // One packet of the old source, reordered behind the switch.
    let stray = Arrival {
        at_ms: 1010,
        seq: 149,
        ts: 5000 + 160 * 49,
        ssrc: 0xAAAA,
    };
    let mut arrivals = first;
    arrivals.extend(second);
    arrivals.push(stray);
    sim.run(arrivals, 2200);
    // The latest push of each sequence number (the stray reuses 149).
    let outcome = |seq| {
        sim.outcomes
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, o)| *o)
    };
    assert_eq!(outcome(30_000), Some(PushOutcome::Reset));
    assert_eq!(outcome(149), Some(PushOutcome::StaleSource));
    assert_eq!(sim.jb.ssrc(), Some(0xBBBB));
    assert_eq!(sim.jb.counters().resets, 1);
    // Every frame of the new source plays, in order, starting 60 ms after its first packet.
    let new_frames: Vec<(u64, u16)> = sim
        .out
        .iter()
        .filter_map(|(ms, o)| match o {
            Out::Frame { seq, .. } if *seq >= 30_000 => Some((*ms, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(new_frames.len(), 50);
    assert_eq!(new_frames[0], (1060, 30_000));
    // Statistics restarted for the new source.
    assert_eq!(sim.jb.stats().ssrc(), 0xBBBB);
    assert_eq!(sim.jb.stats().expected(), 49);
}

#[test]
fn a_packet_later_than_the_target_is_concealed_then_dropped() {
    let mut sim = Sim::new(config());
    let mut arrivals = stream(100, 0, 0, 1, 0);
    arrivals[50].at_ms += 150; // 150 ms late, far past the 60 ms target
    sim.run(arrivals, 2100);
    let outputs: Vec<Out> = sim.out.iter().take(100).map(|(_, o)| *o).collect();
    assert_eq!(outputs[50], Out::Missing { ts: 50 * 160 });
    assert_eq!(
        sim.outcomes.iter().find(|(s, _)| *s == 50).map(|(_, o)| *o),
        Some(PushOutcome::Late)
    );
    let frames = sim.frames();
    assert!(!frames.contains(&50));
    assert_eq!(frames.len(), 99);
}

#[test]
fn a_delay_spike_raises_the_delay_then_the_cap_brings_it_back() {
    let mut sim = Sim::new(config());
    let mut arrivals = stream(300, 0, 0, 1, 0);
    // Packets 100..110 are held by the network and released together with packet 110.
    for a in &mut arrivals[100..110] {
        a.at_ms = 110 * 20 + 5;
    }
    for a in &mut arrivals[110..] {
        a.at_ms += 5;
    }
    for a in &mut arrivals[..100] {
        a.at_ms += 5;
    }
    sim.run(arrivals.clone(), 6200);
    let c = sim.jb.counters();
    assert!(c.resyncs >= 1, "{c:?}");
    // Played frames are strictly increasing: nothing plays twice.
    let frames = sim.frames();
    assert!(frames.windows(2).all(|w| w[1] > w[0]), "{frames:?}");
    // By the end the delay is back within the cap: the last packet plays at most
    // max_delay after it arrived.
    let (played_at, _) = sim
        .out
        .iter()
        .find(|(_, o)| matches!(o, Out::Frame { seq: 299, .. }))
        .copied()
        .unwrap();
    let arrived = arrivals[299].at_ms;
    assert!(played_at - arrived <= 200, "{}", played_at - arrived);
    assert!(frames.len() >= 280);
}

#[test]
fn a_burst_beyond_the_slots_is_trimmed_and_never_panics() {
    let mut sim = Sim::new(config());
    let mut arrivals = stream(200, 0, 0, 1, 0);
    // The sender bursts 80 packets (1.6 s of audio) at once, more than the 32 slots.
    for a in &mut arrivals[50..130] {
        a.at_ms = 50 * 20;
    }
    sim.run(arrivals, 4200);
    let c = sim.jb.counters();
    assert!(c.dropped > 0, "{c:?}");
    let frames = sim.frames();
    assert!(frames.windows(2).all(|w| w[1] > w[0]));
    assert!(frames.contains(&199));
}

#[test]
fn a_sequence_restart_needs_two_packets_to_be_believed() {
    let mut sim = Sim::new(config());
    let mut arrivals = stream(50, 100, 0, 1, 0);
    // One wild packet (a stray), then the stream continues.
    arrivals.push(Arrival {
        at_ms: 505,
        seq: 40_000,
        ts: 123,
        ssrc: 1,
    });
    // At 1000 ms the sender restarts its sequence and timestamps (same SSRC).
    arrivals.extend(stream(50, 20_000, 777_777, 1, 1000));
    sim.run(arrivals, 2200);
    let outcome = |seq| {
        sim.outcomes
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, o)| *o)
    };
    assert_eq!(outcome(40_000), Some(PushOutcome::Jump));
    assert_eq!(outcome(20_000), Some(PushOutcome::Jump));
    assert_eq!(outcome(20_001), Some(PushOutcome::Resynced));
    let frames = sim.frames();
    // The old numbering plays until the restart is confirmed at 1020 ms; what was still
    // waiting then (at most the 60 ms target: 147..=149) is given up with the old numbering.
    assert!((100..=146).all(|s| frames.contains(&s)));
    assert!(!frames.contains(&149));
    assert!(!frames.contains(&40_000));
    assert!((20_001..20_050).all(|s| frames.contains(&s)));
}

#[test]
fn packet_duration_is_learned_from_the_stream() {
    // 30 ms packets (240 timestamp units): a loss is concealed as one 240-unit frame.
    let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
    let t0 = Instant::now();
    let mut missing = Vec::new();
    for k in 0..20u32 {
        let now = t0 + Duration::from_millis(30 * u64::from(k));
        if k != 10 {
            let bytes = packet_bytes(&Arrival {
                at_ms: 0,
                seq: k as u16,
                ts: 240 * k,
                ssrc: 1,
            });
            jb.push(now, &RtpPacket::parse(&bytes).unwrap());
        }
        while let Some(due) = jb.poll_timeout() {
            if due > now {
                break;
            }
            if let Playout::Missing {
                timestamp,
                duration,
            } = jb.pop(now)
            {
                missing.push((timestamp, duration));
            }
        }
    }
    assert_eq!(missing, vec![(2400, 240)]);
}

#[test]
fn oversized_payloads_are_refused() {
    let mut jb = JitterBuffer::new(JitterConfig {
        max_payload: 100,
        ..JitterConfig::default()
    })
    .unwrap();
    let bytes = packet_bytes(&Arrival {
        at_ms: 0,
        seq: 1,
        ts: 0,
        ssrc: 1,
    });
    assert_eq!(
        jb.push(Instant::now(), &RtpPacket::parse(&bytes).unwrap()),
        PushOutcome::TooLarge
    );
    assert_eq!(jb.pop(Instant::now()), Playout::NotYet { next: None });
}

#[test]
fn bad_configurations_are_refused() {
    use vaani_media::rtp::jitter::JitterConfigError as E;
    let d = JitterConfig::default();
    let ms = Duration::from_millis;
    assert_eq!(
        JitterBuffer::new(JitterConfig { clock_rate: 0, ..d }).err(),
        Some(E::ClockRate)
    );
    assert_eq!(
        JitterBuffer::new(JitterConfig {
            max_delay: ms(70),
            ..d
        })
        .err(),
        Some(E::MaxDelay)
    );
    assert_eq!(
        JitterBuffer::new(JitterConfig { capacity: 5, ..d }).err(),
        Some(E::Capacity)
    );
    assert_eq!(
        JitterBuffer::new(JitterConfig {
            max_payload: 0,
            ..d
        })
        .err(),
        Some(E::MaxPayload)
    );
    assert_eq!(
        JitterBuffer::new(JitterConfig { ptime: ms(0), ..d }).err(),
        Some(E::Ptime)
    );
}

// ---------------------------------------------------------------- statistics

#[test]
fn stats_follow_rfc_3550_a1_probation_and_a3_loss() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(42, 8000);
    // First packet: on probation, not valid yet.
    assert!(!s.on_packet(t0, 1000, 0));
    assert_eq!(s.expected(), 0);
    // Second, in sequence: source validated, counting starts here.
    assert!(s.on_packet(t0, 1001, 160));
    // 1002..=1010 with 1005 and 1006 lost.
    for seq in (1002u16..=1010).filter(|s| *s != 1005 && *s != 1006) {
        assert!(s.on_packet(t0, seq, 160 * u32::from(seq - 1000)));
    }
    assert_eq!(s.expected(), 10);
    assert_eq!(s.received(), 8);
    assert_eq!(s.cumulative_lost(), 2);
    let rb = s.report_block(t0);
    assert_eq!(rb.ssrc, 42);
    assert_eq!(rb.fraction_lost, (2 * 256 / 10) as u8);
    assert_eq!(rb.cumulative_lost, 2);
    assert_eq!(rb.extended_highest_seq, 1010);
    assert_eq!((rb.last_sr, rb.delay_since_last_sr), (0, 0));
    // Next interval: 10 more, none lost → fraction 0, cumulative unchanged.
    for seq in 1011u16..=1020 {
        s.on_packet(t0, seq, 0);
    }
    let rb = s.report_block(t0);
    assert_eq!((rb.fraction_lost, rb.cumulative_lost), (0, 2));
    // A late straggler from the first interval arrives: counts as received (A.3).
    s.on_packet(t0, 1005, 0);
    let rb = s.report_block(t0);
    assert_eq!((rb.fraction_lost, rb.cumulative_lost), (0, 1));
}

#[test]
fn stats_detect_a_restart_only_after_two_sequential_packets() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(1, 8000);
    for seq in 0u16..10 {
        s.on_packet(t0, seq, 0);
    }
    assert!(!s.on_packet(t0, 30_000, 0), "a lone jump is not believed");
    assert_eq!(s.extended_max(), 9);
    assert!(
        s.on_packet(t0, 30_001, 0),
        "the next in sequence confirms the restart"
    );
    assert_eq!(s.extended_max(), 30_001);
    assert_eq!(s.expected(), 1);
}

#[test]
fn lsr_and_dlsr_echo_the_last_sender_report() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(1, 8000);
    s.on_packet(t0, 0, 0);
    s.on_packet(t0, 1, 160);
    s.on_sender_report(t0, 0xAAAA_BBBB_CCCC_DDDD);
    let rb = s.report_block(t0 + Duration::from_millis(1500));
    assert_eq!(rb.last_sr, 0xBBBB_CCCC);
    assert_eq!(rb.delay_since_last_sr, 98_304); // 1.5 × 65536
}

#[test]
fn jitter_is_the_rfc_3550_a8_estimate() {
    // Independent float version of A.8 on the same arrivals: J += (|D| − J) / 16.
    let t0 = Instant::now();
    let mut rng = Rng(31337);
    let mut s = ReceiverStats::new(1, 8000);
    let mut j = 0.0f64;
    let mut prev_transit: Option<f64> = None;
    for k in 0..2000u32 {
        let send_us = 20_000 * u64::from(k);
        let arrival_us = send_us + 10_000 + rng.below(30_000);
        let now = t0 + Duration::from_micros(arrival_us);
        let ts = 160 * k;
        s.on_packet(now, k as u16, ts);
        let transit = arrival_us as f64 * 8000.0 / 1e6 - f64::from(ts);
        if let Some(p) = prev_transit {
            j += ((transit - p).abs() - j) / 16.0;
        }
        prev_transit = Some(transit);
    }
    let got = f64::from(s.jitter());
    assert!((got - j).abs() <= 2.0, "integer A.8 {got} vs float {j}");
    // Uniform 0..30 ms delay: E|D| = 10 ms = 80 units.
    assert!((60.0..100.0).contains(&got), "{got}");
    // A constant delay gives zero jitter.
    let mut s = ReceiverStats::new(1, 8000);
    for k in 0..100u32 {
        s.on_packet(
            t0 + Duration::from_millis(20 * u64::from(k) + 7),
            k as u16,
            160 * k,
        );
    }
    assert_eq!(s.jitter(), 0);
}

#[test]
fn jitter_survives_the_timestamp_wrap() {
    let t0 = Instant::now();
    let mut s = ReceiverStats::new(1, 8000);
    let base = u32::MAX - 160 * 10;
    for k in 0..100u32 {
        s.on_packet(
            t0 + Duration::from_millis(20 * u64::from(k)),
            k as u16,
            base.wrapping_add(160 * k),
        );
    }
    assert_eq!(s.jitter(), 0);
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any network within the target delay — reorder, duplicate, lose — gives each sent packet
    /// exactly once if it arrived, a Missing at its timestamp if not, in order, paced.
    #[test]
    fn within_the_target_every_packet_is_accounted_for(
        seed in any::<u64>(),
        seq0 in any::<u16>(),
        ts0 in any::<u32>(),
        loss_pct in 0u64..30,
        dup_pct in 0u64..30,
    ) {
        let mut rng = Rng(seed | 1);
        let n = 150;
        let mut arrivals = Vec::new();
        let mut lost = Vec::new();
        for (k, a) in stream(n, seq0, ts0, 1, 0).into_iter().enumerate() {
            // The first packet must arrive (it anchors the clock) and the last (so the stream
            // has a defined end).
            if k != 0 && k != n - 1 && rng.below(100) < loss_pct {
                lost.push(a.ts);
                continue;
            }
            let copies = if rng.below(100) < dup_pct { 2 } else { 1 };
            for c in 0..copies {
                let mut copy = a;
                // The first packet arrives with the least delay so no packet is ever due
                // before the anchor; the rest within 0..50 ms (< 60 ms target).
                copy.at_ms += if k == 0 && c == 0 { 0 } else { rng.below(50) };
                arrivals.push(copy);
            }
        }
        let mut sim = Sim::new(config());
        sim.run(arrivals, 20 * n as u64 + 100);
        let outs: Vec<Out> = sim.out.iter().take(n).map(|(_, o)| *o).collect();
        prop_assert_eq!(outs.len(), n);
        let mut missing = Vec::new();
        for (k, o) in outs.iter().enumerate() {
            let ts = ts0.wrapping_add(160 * k as u32);
            match *o {
                Out::Frame { seq, ts: t, .. } => {
                    prop_assert_eq!(seq, seq0.wrapping_add(k as u16));
                    prop_assert_eq!(t, ts);
                }
                Out::Missing { ts: t } => {
                    prop_assert_eq!(t, ts);
                    missing.push(t);
                }
            }
        }
        prop_assert_eq!(missing, lost);
        for w in sim.out[..n].windows(2) {
            prop_assert_eq!(w[1].0 - w[0].0, 20);
        }
    }

    /// Arbitrary packets at arbitrary times: never panics, frames never repeat a sequence
    /// number back-to-back, and pops always terminate.
    #[test]
    fn arbitrary_traffic_never_panics(
        packets in proptest::collection::vec(
            (0u64..50, any::<u16>(), any::<u32>(), 0u32..3, 0usize..600),
            1..200,
        ),
    ) {
        let mut jb = JitterBuffer::new(config()).unwrap();
        let t0 = Instant::now();
        let mut ms = 0;
        let payload = vec![0u8; 600];
        for (gap, seq, ts, ssrc, len) in packets {
            ms += gap;
            let now = t0 + Duration::from_millis(ms);
            let mut v = Vec::new();
            RtpHeader { marker: false, payload_type: 0, sequence: seq, timestamp: ts, ssrc }
                .write_to_vec(&payload[..len], &mut v)
                .unwrap();
            jb.push(now, &RtpPacket::parse(&v).unwrap());
            let mut pops = 0;
            while !matches!(jb.pop(now), Playout::NotYet { .. }) {
                pops += 1;
                prop_assert!(pops < 100_000, "pop loop did not terminate");
            }
        }
    }
}
