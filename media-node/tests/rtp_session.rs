//! The RTP session and its pacer in virtual time: one packet per 20 ms with RFC 3550
//! sequence/timestamp/SSRC rules and RFC 3551 markers, catch-up and skipping after late
//! wake-ups, RFC 4733 events in place of audio, latching, inactivity, hold, and a two-session
//! echo loop whose returned audio is checked for the tone that was sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vaani_media::codec::{g711, AudioFormat, PcmFrame, FRAME_SAMPLES};
use vaani_media::rtp::dtmf::TelephoneEvent;
use vaani_media::rtp::session::{MediaEvent, Pacer, RtpSession, SessionConfig};
use vaani_media::rtp::{RtpHeader, RtpPacket};
use vaani_media::sip::sdp::Direction;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn peer() -> SocketAddr {
    "192.0.2.10:4000".parse().unwrap()
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::g711(AudioFormat::PCMU, 0, 0x1234_5678, 65_530, 4_294_967_000);
    c.dtmf_payload_type = Some(101);
    c.remote = Some(peer());
    c
}

/// Sends every due packet at `now`; returns (time offset, header, payload, destination).
fn transmit(
    s: &mut RtpSession,
    t0: Instant,
    now: Instant,
) -> Vec<(Duration, RtpHeader, Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        let p = RtpPacket::parse(&buf[..t.len]).unwrap();
        out.push((now - t0, p.header(), p.payload.to_vec(), t.to));
    }
    out
}

/// Runs the session's deadlines up to `t0 + until`, collecting what it sends.
fn run(
    s: &mut RtpSession,
    t0: Instant,
    now: &mut Instant,
    until: Duration,
) -> Vec<(Duration, RtpHeader, Vec<u8>, SocketAddr)> {
    let end = t0 + until;
    let mut sent = Vec::new();
    while let Some(d) = s.next_deadline().filter(|d| *d <= end) {
        *now = d.max(*now);
        s.handle_timeout(*now);
        sent.extend(transmit(s, t0, *now));
    }
    *now = end;
    sent
}

fn tone(freq: f64, index: usize, amplitude: f64) -> PcmFrame {
    let mut f = PcmFrame::silence();
    for (i, s) in f.samples.iter_mut().enumerate() {
        let n = (index * FRAME_SAMPLES + i) as f64;
        *s = (amplitude * (2.0 * std::f64::consts::PI * freq * n / 16_000.0).sin()) as i16;
    }
    f
}

/// Relative power at `freq` (Goertzel) over `samples` at `rate`.
fn goertzel(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

/// `received` (16 kHz) holds, for 1 s from 100 ms after it became loud, a tone at `freq`
/// (100× the power of each of `others`) within 1.5 dB of the 8000-amplitude tone sent.
fn assert_tone(received: &[i16], freq: f64, others: &[f64]) {
    let energy = |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64;
    let start = received
        .chunks(FRAME_SAMPLES)
        .position(|c| energy(c) > 1e6)
        .expect("the tone arrived");
    let window = &received[(start + 5) * FRAME_SAMPLES..(start + 55) * FRAME_SAMPLES];
    let at = |f: f64| goertzel(window, 16_000.0, f);
    for other in others {
        assert!(
            at(freq) > 100.0 * at(*other),
            "{freq} Hz dominates {other} Hz"
        );
    }
    let rms = energy(window).sqrt();
    let level_db = 20.0 * (rms / (8000.0 / 2f64.sqrt())).log10();
    assert!(level_db.abs() < 1.5, "level off by {level_db:.2} dB");
}

fn rtp(seq: u16, ts: u32, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    RtpHeader {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    }
    .write_to_vec(payload, &mut v)
    .unwrap();
    v
}

#[test]
fn pacer_ticks_every_interval_and_skips_when_far_behind() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, MS(20), 8000, u32::MAX - 100, 3);
    assert_eq!(p.step(), 160);
    assert_eq!(p.tick(t0 - MS(1)), None);
    let a = p.tick(t0).unwrap();
    assert_eq!((a.timestamp, a.skipped), (u32::MAX - 100, 0));
    assert_eq!(p.tick(t0 + MS(19)), None);
    let b = p.tick(t0 + MS(20)).unwrap();
    assert_eq!(b.timestamp, 59, "wraps");
    // 45 ms late (2 ticks behind): both overdue ticks come out, none skipped.
    let now = t0 + MS(85);
    let got: Vec<_> = std::iter::from_fn(|| p.tick(now)).collect();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|t| t.skipped == 0));
    assert_eq!(p.next_at(), t0 + MS(100));
    // 200 ms late: 10 ticks behind, the oldest 8 are skipped, the last 3 come out.
    let now = t0 + MS(300);
    let got: Vec<_> = std::iter::from_fn(|| p.tick(now)).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].skipped, 8);
    assert_eq!(got[1].timestamp, got[0].timestamp + 160);
    assert_eq!(p.next_at(), t0 + MS(320));
}

#[test]
fn sends_one_packet_per_20ms_with_rfc3550_numbering() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = RtpSession::new(t0, config()).unwrap();
    for i in 0..3 {
        assert!(s.send_audio(&tone(440.0, i, 8000.0)));
    }
    let sent = run(&mut s, t0, &mut now, MS(1000));
    assert_eq!(sent.len(), 51, "t = 0, 20, …, 1000 ms");
    for (i, (t, h, payload, to)) in sent.iter().enumerate() {
        assert_eq!(*t, MS(20 * i as u64));
        assert_eq!(h.ssrc, 0x1234_5678);
        assert_eq!(h.payload_type, 0);
        assert_eq!(h.sequence, 65_530u16.wrapping_add(i as u16));
        assert_eq!(h.timestamp, 4_294_967_000u32.wrapping_add(160 * i as u32));
        assert_eq!(h.marker, i == 0, "marker on the first packet only");
        assert_eq!(payload.len(), 160);
        assert_eq!(*to, peer());
    }
    // The first three carry the tone, the rest silence.
    let decoded: Vec<i16> = sent[1].2.iter().map(|&c| g711::ulaw_to_linear(c)).collect();
    assert!(goertzel(&decoded, 8000.0, 440.0) > 100.0 * goertzel(&decoded, 8000.0, 1000.0));
    assert!(sent[10].2.iter().all(|&c| c == g711::linear_to_ulaw(0)));
    assert_eq!(s.counters().sent, 51);
}

#[test]
fn without_silence_fill_gaps_end_talkspurts() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut cfg = config();
    cfg.send_silence = false;
    let mut s = RtpSession::new(t0, cfg).unwrap();
    s.send_audio(&tone(440.0, 0, 8000.0));
    s.send_audio(&tone(440.0, 1, 8000.0));
    let first = run(&mut s, t0, &mut now, MS(100));
    assert_eq!(first.len(), 2);
    s.send_audio(&tone(440.0, 2, 8000.0));
    let second = run(&mut s, t0, &mut now, MS(200));
    assert_eq!(second.len(), 1);
    let (t, h, _, _) = &second[0];
    assert_eq!(*t, MS(120));
    assert!(h.marker, "a new talkspurt");
    assert_eq!(
        h.sequence,
        first[1].1.sequence.wrapping_add(1),
        "no gap in sequence"
    );
    assert_eq!(
        h.timestamp,
        first[0].1.timestamp.wrapping_add(160 * 6),
        "time advanced"
    );
}

#[test]
fn late_driver_catches_up_then_skips() {
    let t0 = Instant::now();
    let mut s = RtpSession::new(t0, config()).unwrap();
    let a = transmit(&mut s, t0, t0);
    assert_eq!(a.len(), 1);
    // 50 ms late: the two overdue packets go at once.
    let b = transmit(&mut s, t0, t0 + MS(50));
    assert_eq!(b.len(), 2);
    // 500 ms late: three packets, the rest skipped; the first after the gap has the marker.
    let c = transmit(&mut s, t0, t0 + MS(560));
    assert_eq!(c.len(), 3);
    assert!(c[0].1.marker);
    assert_eq!(c[0].1.sequence, b[1].1.sequence.wrapping_add(1));
    assert_eq!(c[2].1.timestamp, a[0].1.timestamp.wrapping_add(160 * 28));
    assert_eq!(s.counters().ticks_skipped, 23);
}

#[test]
fn dtmf_events_take_the_place_of_audio() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = RtpSession::new(t0, config()).unwrap();
    let _ = run(&mut s, t0, &mut now, MS(30)); // packets at 0 and 20 ms
    s.send_dtmf('7', MS(100)).unwrap();
    assert!(s.send_dtmf('x', MS(100)).is_err());
    let sent = run(&mut s, t0, &mut now, MS(300));
    let events: Vec<_> = sent.iter().filter(|p| p.1.payload_type == 101).collect();
    // 100 ms at 20 ms: 4 updates and the end packet three times.
    assert_eq!(events.len(), 7);
    let start_ts = events[0].1.timestamp;
    assert_eq!(events[0].0, MS(40), "starts at the next tick");
    assert!(events[0].1.marker);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.0,
            MS(40 + 20 * i as u64),
            "one per tick, no audio in between"
        );
        assert_eq!(e.1.timestamp, start_ts);
        let ev = TelephoneEvent::parse(&e.2).unwrap();
        assert_eq!(ev.event, 7);
        assert_eq!(ev.end, i >= 4);
        if i >= 4 {
            assert_eq!(ev.duration, 800);
        }
    }
    let seqs: Vec<u16> = sent.iter().map(|p| p.1.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "one sequence space"
    );
    let after = sent.iter().find(|p| p.0 == MS(180)).unwrap();
    assert_eq!(after.1.payload_type, 0);
    assert!(after.1.marker, "audio after an event starts a talkspurt");
    assert_eq!(s.counters().dtmf_packets_sent, 7);
    let mut no_dtmf = config();
    no_dtmf.dtmf_payload_type = None;
    assert!(RtpSession::new(t0, no_dtmf)
        .unwrap()
        .send_dtmf('1', MS(100))
        .is_err());
}

#[test]
fn latching_and_receiving() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.remote = Some("198.51.100.1:9999".parse().unwrap()); // what the SDP said (behind NAT)
    let mut s = RtpSession::new(t0, cfg).unwrap();
    let nat: SocketAddr = "203.0.113.7:30000".parse().unwrap();
    assert_eq!(s.destination(), Some("198.51.100.1:9999".parse().unwrap()));
    // An unnegotiated payload type does not latch.
    s.receive(t0, &rtp(1, 0, 9, 96, &[0; 10]), nat);
    assert_eq!(s.latched(), None);
    // Garbage neither.
    s.receive(t0, b"\x00\x01", nat);
    assert_eq!(s.counters().malformed, 1);
    let payload = [g711::linear_to_ulaw(1000); 160];
    s.receive(t0, &rtp(1, 0, 9, 0, &payload), nat);
    assert_eq!(s.latched(), Some(nat));
    assert_eq!(s.poll_event(), Some(MediaEvent::Latched(nat)));
    assert_eq!(s.destination(), Some(nat));
    // Another host is ignored; another port of the same host is heard (sipp's DTMF replays).
    s.receive(
        t0 + MS(20),
        &rtp(2, 160, 9, 0, &payload),
        "192.0.2.99:30000".parse().unwrap(),
    );
    assert_eq!(s.counters().foreign, 2);
    let ev = TelephoneEvent {
        event: 5,
        end: true,
        volume: 10,
        duration: 800,
    };
    s.receive(
        t0 + MS(20),
        &rtp(2, 160, 77, 101, &ev.to_bytes()),
        "203.0.113.7:0".parse().unwrap(),
    );
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        [
            MediaEvent::DtmfBegan { digit: '5' },
            MediaEvent::Dtmf {
                digit: '5',
                duration: MS(100)
            }
        ]
    );
    // Audio plays out after the jitter buffer's 60 ms as 16 kHz frames.
    s.handle_timeout(t0 + MS(59));
    assert!(s.poll_audio().is_none());
    s.handle_timeout(t0 + MS(60));
    let frame = s.poll_audio().unwrap();
    assert!(
        frame
            .samples
            .iter()
            .skip(40)
            .all(|&x| (x - 1000).abs() < 100),
        "{frame:?}"
    );
    // The next frame never came: concealed with silence.
    s.handle_timeout(t0 + MS(80));
    let concealed = s.poll_audio().unwrap();
    assert!(concealed.samples.iter().all(|&x| x.abs() < 300));
    assert_eq!(s.counters().frames_concealed, 1);
}

#[test]
fn inactivity_timeout_and_hold() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.inactivity_timeout = Some(Duration::from_secs(30));
    let mut s = RtpSession::new(t0, cfg).unwrap();
    let mut now = t0;
    let _ = run(&mut s, t0, &mut now, Duration::from_secs(10));
    s.receive(now, &rtp(1, 0, 9, 0, &[0xff; 160]), peer());
    let _ = run(&mut s, t0, &mut now, Duration::from_secs(39) + MS(990));
    assert!(std::iter::from_fn(|| s.poll_event()).all(|e| e != MediaEvent::Timeout));
    let _ = run(&mut s, t0, &mut now, Duration::from_secs(40));
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(events, [MediaEvent::Timeout], "30 s after the last packet");
    let _ = run(&mut s, t0, &mut now, Duration::from_secs(100));
    assert!(s.poll_event().is_none(), "once");

    // Held by the peer (it sends nothing, we only send): no timeout.
    let mut s = RtpSession::new(t0, config()).unwrap();
    let mut now = t0;
    s.update(t0, None, Direction::SendOnly);
    let sent = run(&mut s, t0, &mut now, Duration::from_secs(100));
    assert!(std::iter::from_fn(|| s.poll_event()).all(|e| e != MediaEvent::Timeout));
    assert_eq!(sent.len(), 5001);
    // We hold (inactive): nothing is sent; unhold resumes with a marker.
    s.update(now, None, Direction::Inactive);
    assert!(!s.send_audio(&PcmFrame::silence()));
    let sent = run(&mut s, t0, &mut now, Duration::from_secs(101));
    assert!(sent.is_empty());
    s.update(now, None, Direction::SendRecv);
    let sent = run(&mut s, t0, &mut now, Duration::from_secs(101) + MS(50));
    assert!(!sent.is_empty());
    assert!(sent[0].1.marker);
}

#[test]
fn echo_loop_returns_the_tone() {
    // A caller session and the node's session wired back to back; the node echoes every
    // decoded frame. The caller sends 1 s of 440 Hz and checks what comes back.
    let t0 = Instant::now();
    let caller_addr: SocketAddr = "192.0.2.10:4000".parse().unwrap();
    let node_addr: SocketAddr = "192.0.2.1:20000".parse().unwrap();
    let mut caller_cfg = config();
    caller_cfg.remote = Some(node_addr);
    caller_cfg.send_silence = false;
    let mut node_cfg = SessionConfig::g711(AudioFormat::PCMU, 0, 99, 1, 1);
    node_cfg.remote = Some(caller_addr);
    let mut caller = RtpSession::new(t0, caller_cfg).unwrap();
    let mut node = RtpSession::new(t0, node_cfg).unwrap();
    let mut received: Vec<i16> = Vec::new();
    let mut buf = [0u8; 1500];
    let mut now = t0;
    let mut next_frame = 0usize;
    while now < t0 + MS(1600) {
        if next_frame < 50 && caller.queued() < 2 {
            caller.send_audio(&tone(440.0, next_frame, 8000.0));
            next_frame += 1;
        }
        caller.handle_timeout(now);
        node.handle_timeout(now);
        while let Some(f) = node.poll_audio() {
            node.send_audio(&f);
        }
        while let Some(f) = caller.poll_audio() {
            received.extend_from_slice(&f.samples);
        }
        while let Some(t) = caller.poll_transmit(now, &mut buf) {
            assert_eq!(t.to, node_addr);
            node.receive(now, &buf[..t.len], caller_addr);
        }
        while let Some(t) = node.poll_transmit(now, &mut buf) {
            caller.receive(now, &buf[..t.len], node_addr);
        }
        now += MS(5);
    }
    let energy = |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64;
    // Find the echoed tone and check its pitch against other bins.
    let loud: Vec<i16> = received
        .chunks(FRAME_SAMPLES)
        .filter(|c| energy(c) > 1e6)
        .flatten()
        .copied()
        .collect();
    assert!(
        loud.len() >= 40 * FRAME_SAMPLES,
        "most of the second came back: {}",
        loud.len()
    );
    let at = |f: f64| goertzel(&loud, 16_000.0, f);
    for other in [300.0, 600.0, 1000.0, 2000.0] {
        assert!(at(440.0) > 50.0 * at(other), "440 Hz dominates {other} Hz");
    }
}

proptest! {
    #[test]
    fn receive_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), port in any::<u16>()) {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, config()).unwrap();
        let from = SocketAddr::new("192.0.2.10".parse().unwrap(), port);
        s.receive(t0, &data, from);
        let mut d = data.clone();
        if d.len() >= 12 {
            d[0] = 0x80;
            d[1] = if port % 2 == 0 { 0 } else { 101 };
        }
        s.receive(t0 + MS(1), &d, from);
        s.handle_timeout(t0 + Duration::from_secs(1));
        while s.poll_event().is_some() {}
        while s.poll_audio().is_some() {}
        let mut buf = [0u8; 1500];
        while s.poll_transmit(t0 + Duration::from_secs(1), &mut buf).is_some() {}
    }
}

/// Two sessions exchange RTP for 12 s of virtual time while polling RTCP on every tick: each
/// sends an SR every 2.5–7.5 s with a report block about the other, reports go to the RTP
/// port + 1 (no rtcp-mux) or back to where the peer's RTCP came from, and once an RR echoes
/// our SR the round trip is known.
#[test]
fn rtcp_reports_both_ways() {
    let t0 = Instant::now();
    let a_addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    let mut ca = config();
    ca.remote = Some(b_addr);
    let mut cb = SessionConfig::g711(AudioFormat::PCMU, 0, 0xBBBB, 1, 2);
    cb.remote = Some(a_addr);
    let mut a = RtpSession::new(t0, ca).unwrap();
    let mut b = RtpSession::new(t0, cb).unwrap();
    let wall = Duration::from_secs(1_700_000_000);
    let mut sr_seen = 0;
    let mut now = t0;
    let step = |me: &mut RtpSession, other: &mut RtpSession, my_addr: SocketAddr, now: Instant| {
        let mut buf = [0u8; 1500];
        let mut srs = 0;
        me.handle_timeout(now);
        while me.poll_audio().is_some() {}
        while let Some(t) = me.poll_transmit(now, &mut buf) {
            other.receive(now + MS(5), &buf[..t.len], my_addr);
        }
        if let Some(t) = me.poll_rtcp(now, wall + (now - t0), &mut buf) {
            // Port + 1 until the peer's RTCP told us where it comes from.
            assert_eq!(t.to.port() % 2, 1, "{:?}", t.to);
            let packets = vaani_media::rtp::rtcp::parse_compound(&buf[..t.len]).unwrap();
            assert!(matches!(
                packets[0],
                vaani_media::rtp::RtcpPacket::SenderReport(_)
            ));
            assert!(matches!(
                &packets[1],
                vaani_media::rtp::RtcpPacket::SourceDescription(c) if c[0].get_cname().is_some()
            ));
            srs += 1;
            let mut from = my_addr;
            from.set_port(from.port() + 1);
            other.receive_rtcp(now + MS(5), &buf[..t.len], from);
        }
        srs
    };
    while now < t0 + Duration::from_secs(12) {
        sr_seen += step(&mut a, &mut b, a_addr, now);
        sr_seen += step(&mut b, &mut a, b_addr, now);
        now += MS(20);
    }
    assert!(sr_seen >= 3, "{sr_seen}");
    for s in [&a, &b] {
        let r = s.remote_report();
        assert!(r.sender_reports >= 1, "{r:?}");
        assert_eq!(r.cumulative_lost, 0);
        assert!(r.peer_packets_sent > 100);
        assert!(s.counters().rtcp_sent >= 1);
    }
    // Somebody's SR was echoed by the other's later report: the round trip is the two 5 ms
    // hops (the DLSR takes out the time it sat at the peer), to the 1/65536 s of DLSR.
    let rtt = a
        .remote_report()
        .round_trip
        .or(b.remote_report().round_trip)
        .expect("a round trip");
    assert!(rtt >= MS(9) && rtt <= MS(11), "{rtt:?}");
    // Garbage on the RTCP port is counted, not believed.
    a.receive_rtcp(now, &[0x80, 200, 0, 50], b_addr);
    assert_eq!(a.counters().rtcp_malformed, 1);
}

/// Opus (RFC 7587) through a session pair in virtual time: 48 kHz timestamps stepping 960 per
/// 20 ms packet, the negotiated dynamic payload type, compressed payloads of varying size;
/// the receiver decodes a 440 Hz tone at its level, and a lost packet is concealed.
#[test]
fn opus_session_pair_carries_a_tone() {
    let t0 = Instant::now();
    let a_addr: SocketAddr = "192.0.2.10:4000".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.1:20000".parse().unwrap();
    let mut a_cfg = SessionConfig::g711(AudioFormat::OPUS, 111, 7, 65_500, 4_294_960_000);
    a_cfg.remote = Some(b_addr);
    let mut b_cfg = SessionConfig::g711(AudioFormat::OPUS, 111, 8, 1, 1);
    b_cfg.remote = Some(a_addr);
    let mut a = RtpSession::new(t0, a_cfg).unwrap();
    let mut b = RtpSession::new(t0, b_cfg).unwrap();
    let mut received: Vec<i16> = Vec::new();
    let mut headers = Vec::new();
    let mut sizes = std::collections::BTreeSet::new();
    let mut buf = [0u8; 1500];
    let mut now = t0;
    let mut next_frame = 0usize;
    let mut packets = 0usize;
    while now < t0 + MS(1700) {
        if next_frame < 75 && a.queued() < 2 {
            a.send_audio(&tone(440.0, next_frame, 8000.0));
            next_frame += 1;
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(f) = b.poll_audio() {
            received.extend_from_slice(&f.samples);
        }
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            assert_eq!(t.to, b_addr);
            let p = RtpPacket::parse(&buf[..t.len]).unwrap();
            headers.push(p.header());
            sizes.insert(p.payload.len());
            packets += 1;
            // Packet 60 (during silence, after the tone) is lost on the way.
            if packets != 60 {
                b.receive(now, &buf[..t.len], a_addr);
            }
        }
        while b.poll_transmit(now, &mut buf).is_some() {}
        now += MS(5);
    }
    // Wire: PT 111, +1 sequence and +960 timestamp per packet (wrapping), marker first only.
    assert!(headers.len() >= 80, "{}", headers.len());
    assert!(headers.iter().all(|h| h.payload_type == 111 && h.ssrc == 7));
    assert!(headers[0].marker && headers[1..].iter().all(|h| !h.marker));
    for w in headers.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(960));
    }
    assert!(sizes.len() > 1, "Opus payload sizes vary: {sizes:?}");
    assert!(sizes.iter().all(|&n| (1..=400).contains(&n)), "{sizes:?}");
    // The tone: 1 s from where it became loud, at 440 Hz and within 1.5 dB of 8000.
    assert_tone(&received, 440.0, &[300.0, 400.0, 480.0, 880.0, 1000.0]);
    let c = b.counters();
    assert_eq!(c.frames_concealed, 1, "{c:?}");
    assert!(c.frames_played >= 75, "{c:?}");
}

#[test]
fn opus_needs_its_48_khz_clock() {
    use vaani_media::codec::{Encoding, SampleRate};
    use vaani_media::rtp::session::SessionError;
    let t0 = Instant::now();
    let wrong = AudioFormat::new(Encoding::Opus, SampleRate::Hz8000);
    let cfg = SessionConfig::g711(wrong, 111, 1, 1, 1);
    assert_eq!(
        RtpSession::new(t0, cfg).err(),
        Some(SessionError::UnsupportedFormat)
    );
    let l16 = AudioFormat::new(Encoding::L16, SampleRate::Hz16000);
    assert!(RtpSession::new(t0, SessionConfig::g711(l16, 96, 1, 1, 1)).is_err());
}

/// Feeds arbitrary packets of payload type `pt` to a session in `format`: nothing panics.
fn receive_anything(format: AudioFormat, pt: u8, packets: &[(u16, u32, Vec<u8>)]) {
    let t0 = Instant::now();
    let mut cfg = SessionConfig::g711(format, pt, 1, 1, 1);
    cfg.remote = Some(peer());
    let mut s = RtpSession::new(t0, cfg).unwrap();
    for (i, (seq, ts, payload)) in packets.iter().enumerate() {
        let now = t0 + MS(20 * i as u64);
        s.receive(now, &rtp(*seq, *ts, 5, pt, payload), peer());
        s.handle_timeout(now);
        while s.poll_audio().is_some() {}
    }
    s.handle_timeout(t0 + Duration::from_secs(2));
    while s.poll_audio().is_some() {}
}

proptest! {
    #[test]
    fn opus_receive_never_panics(packets in proptest::collection::vec(
        (any::<u16>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..1400)), 0..12)
    ) {
        receive_anything(AudioFormat::OPUS, 111, &packets);
    }

    #[test]
    fn g722_receive_never_panics(packets in proptest::collection::vec(
        (any::<u16>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..1400)), 0..12)
    ) {
        receive_anything(AudioFormat::G722, 9, &packets);
    }
}

/// Key presses in an Opus call run on its 48 kHz clock (RFC 4733 §2.1, `telephone-event/48000`):
/// 100 ms is 4800 units, and the receiving session reports the press with its real length.
#[test]
fn opus_dtmf_runs_on_the_48_khz_clock() {
    let t0 = Instant::now();
    let mut now = t0;
    let node: SocketAddr = "192.0.2.1:20000".parse().unwrap();
    let mut cfg = SessionConfig::g711(AudioFormat::OPUS, 111, 9, 1, 1);
    cfg.dtmf_payload_type = Some(110);
    cfg.remote = Some(node);
    let mut s = RtpSession::new(t0, cfg).unwrap();
    let mut rcfg = SessionConfig::g711(AudioFormat::OPUS, 111, 10, 1, 1);
    rcfg.dtmf_payload_type = Some(110);
    rcfg.remote = Some(peer());
    let mut r = RtpSession::new(t0, rcfg).unwrap();
    s.send_dtmf('9', MS(100)).unwrap();
    let sent = run(&mut s, t0, &mut now, MS(300));
    let events: Vec<_> = sent.iter().filter(|p| p.1.payload_type == 110).collect();
    assert_eq!(events.len(), 7);
    let last = TelephoneEvent::parse(&events[6].2).unwrap();
    assert_eq!((last.event, last.end, last.duration), (9, true, 4800));
    for (at, h, payload, _) in &sent {
        let mut pkt = Vec::new();
        h.write_to_vec(payload, &mut pkt).unwrap();
        r.receive(t0 + *at, &pkt, peer());
    }
    r.handle_timeout(now);
    let mut got = Vec::new();
    while let Some(e) = r.poll_event() {
        got.push(e);
    }
    assert!(
        got.contains(&MediaEvent::Dtmf {
            digit: '9',
            duration: MS(100)
        }),
        "{got:?}"
    );
}

/// G.722 through a session pair: payload type 9, 160-byte payloads, timestamps stepping 160
/// per 20 ms on its 8000 Hz RTP clock although the audio is 16 kHz (RFC 3551 §4.5.2). A
/// 5 kHz tone, which no 8 kHz codec carries, arrives at its level; a lost packet plays as
/// silence; key presses run on the 8000 Hz clock (100 ms = 800 units).
#[test]
fn g722_session_pair_carries_a_wideband_tone() {
    let t0 = Instant::now();
    let a_addr: SocketAddr = "192.0.2.10:4000".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.1:20000".parse().unwrap();
    let mut a_cfg = SessionConfig::g711(AudioFormat::G722, 9, 7, 65_500, 4_294_967_200);
    a_cfg.remote = Some(b_addr);
    a_cfg.dtmf_payload_type = Some(101);
    let mut b_cfg = SessionConfig::g711(AudioFormat::G722, 9, 8, 1, 1);
    b_cfg.remote = Some(a_addr);
    b_cfg.dtmf_payload_type = Some(101);
    let mut a = RtpSession::new(t0, a_cfg).unwrap();
    let mut b = RtpSession::new(t0, b_cfg).unwrap();
    let mut received: Vec<i16> = Vec::new();
    let mut headers = Vec::new();
    let mut buf = [0u8; 1500];
    let mut now = t0;
    let mut next_frame = 0usize;
    let mut packets = 0usize;
    let mut dtmf = Vec::new();
    while now < t0 + MS(2000) {
        if next_frame < 75 && a.queued() < 2 {
            a.send_audio(&tone(5000.0, next_frame, 8000.0));
            next_frame += 1;
        }
        if next_frame == 75 && now == t0 + MS(1700) {
            a.send_dtmf('4', MS(100)).unwrap();
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(f) = b.poll_audio() {
            received.extend_from_slice(&f.samples);
        }
        while let Some(e) = b.poll_event() {
            dtmf.push(e);
        }
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let p = RtpPacket::parse(&buf[..t.len]).unwrap();
            if p.header().payload_type == 9 {
                assert_eq!(p.payload.len(), 160);
                headers.push(p.header());
            }
            packets += 1;
            // Packet 85 (during silence, after the tone) is lost on the way.
            if packets != 85 {
                b.receive(now, &buf[..t.len], a_addr);
            }
        }
        while b.poll_transmit(now, &mut buf).is_some() {}
        now += MS(5);
    }
    assert!(headers.len() >= 90, "{}", headers.len());
    assert!(headers.iter().all(|h| h.ssrc == 7));
    for w in headers[..80].windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(160));
    }
    assert_tone(&received, 5000.0, &[3000.0, 4000.0, 4500.0, 5500.0, 6000.0]);
    // Silence after the tone is coded silence, quiet once the decoder settles.
    let tail = &received[received.len() - 10 * FRAME_SAMPLES..];
    assert!(tail.iter().all(|s| s.abs() < 50), "quiet tail");
    // The lost packet, and the seven event packets that took the audio's place.
    let c = b.counters();
    assert_eq!(c.frames_concealed, 1 + 7, "{c:?}");
    assert!(
        dtmf.contains(&MediaEvent::Dtmf {
            digit: '4',
            duration: MS(100)
        }),
        "{dtmf:?}"
    );
}
