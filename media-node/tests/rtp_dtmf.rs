//! RFC 4733 telephone-events: the sipp capture's shape, our sender's shape, and one key press
//! per event through loss, duplication and reordering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use vaani_media::rtp::dtmf::{
    digit_to_event, event_to_digit, DtmfError, DtmfNotice, DtmfReceiver, DtmfSender, EndReason,
    EventPacket, TelephoneEvent,
};
use vaani_media::rtp::packet::{RtpHeader, RtpPacket};

const PT: u8 = 101;

fn notices(
    rx: &mut DtmfReceiver,
    now: Instant,
    header: &RtpHeader,
    ev: &TelephoneEvent,
) -> Vec<DtmfNotice> {
    rx.push(now, header, &ev.to_bytes()).unwrap().collect()
}

/// The packets of sipp 3.6.1's `dtmf_2833_1.pcap` (digit 1), as read from the capture: one
/// SSRC of its own, PT 101, the event's timestamp on every packet, duration starting at 0 and
/// growing 320 per 20 ms, and the end packet sent three times *with the same sequence number*
/// at the same instant. `(ms, seq, end, duration)`.
const SIPP_DIGIT_1: [(u64, u16, bool, u16); 10] = [
    (0, 7984, false, 0),
    (20, 7985, false, 320),
    (40, 7986, false, 640),
    (60, 7987, false, 960),
    (80, 7988, false, 1280),
    (100, 7989, false, 1600),
    (120, 7990, false, 1920),
    (140, 7991, true, 2240),
    (140, 7991, true, 2240),
    (140, 7991, true, 2240),
];
const SIPP_SSRC: u32 = 0x0E05_384E;
const SIPP_TS: u32 = 13_280;

fn sipp_datagrams() -> Vec<(u64, Vec<u8>)> {
    SIPP_DIGIT_1
        .iter()
        .map(|&(ms, seq, end, duration)| {
            let mut v = Vec::new();
            RtpHeader {
                marker: seq == 7984,
                payload_type: PT,
                sequence: seq,
                timestamp: SIPP_TS,
                ssrc: SIPP_SSRC,
            }
            .write_to_vec(
                &TelephoneEvent {
                    event: 1,
                    end,
                    volume: 10,
                    duration,
                }
                .to_bytes(),
                &mut v,
            )
            .unwrap();
            (ms, v)
        })
        .collect()
}

#[test]
fn sipps_digit_capture_gives_exactly_one_key_press() {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::default();
    let mut seen = Vec::new();
    for (ms, datagram) in sipp_datagrams() {
        let p = RtpPacket::parse(&datagram).unwrap();
        assert_eq!(p.payload_type, PT);
        seen.extend(
            rx.push(t0 + Duration::from_millis(ms), &p.header(), p.payload)
                .unwrap(),
        );
    }
    assert_eq!(
        seen,
        vec![
            DtmfNotice::Began {
                event: 1,
                ssrc: SIPP_SSRC,
                timestamp: SIPP_TS
            },
            DtmfNotice::Ended {
                event: 1,
                ssrc: SIPP_SSRC,
                timestamp: SIPP_TS,
                duration: 2240,
                volume: 10,
                how: EndReason::EndBit
            },
        ]
    );
    assert_eq!(seen[1].digit(), Some('1'));
    assert_eq!(rx.active(), None);
    assert_eq!(rx.poll(t0 + Duration::from_secs(10)), None);
}

#[test]
fn sipps_capture_replayed_is_a_new_press_only_after_the_timeout() {
    // sipp replays the same capture, timestamp and all, for every press of a digit. Within the
    // receiver's timeout (1 s) a replay is indistinguishable from retransmission; after it, the
    // same key is a new press.
    let t0 = Instant::now();
    let presses = |gap_ms: u64| {
        let mut rx = DtmfReceiver::default();
        let mut ends = 0;
        for round in 0..2u64 {
            for (ms, datagram) in sipp_datagrams() {
                let p = RtpPacket::parse(&datagram).unwrap();
                let now = t0 + Duration::from_millis(ms + gap_ms * round);
                ends += rx
                    .push(now, &p.header(), p.payload)
                    .unwrap()
                    .filter(|n| matches!(n, DtmfNotice::Ended { .. }))
                    .count();
            }
        }
        ends
    };
    assert_eq!(presses(500), 1);
    assert_eq!(presses(1500), 2);
}

#[test]
fn the_same_digit_again_after_its_end_is_a_new_press() {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::default();
    let sender = DtmfSender::default();
    let mut digits = String::new();
    for (i, start) in [8000u32, 9600, 11_200].into_iter().enumerate() {
        let train = sender.plan('5', Duration::from_millis(100), start).unwrap();
        for (seq, p) in (100 * i as u16..).zip(train) {
            let h = p.header(1, PT, seq);
            for n in notices(&mut rx, t0 + p.offset, &h, &p.event) {
                if let DtmfNotice::Ended { .. } = n {
                    digits.push(n.digit().unwrap());
                }
            }
        }
    }
    assert_eq!(digits, "555");
}

/// Deterministic shuffle/duplicate/drop of a packet train, keeping at least one end packet.
fn mangle(packets: Vec<EventPacket>, seed: u64) -> Vec<(EventPacket, u16)> {
    let mut state = seed | 1;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let numbered: Vec<(EventPacket, u16)> = packets
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i as u16))
        .collect();
    let last_end = numbered.iter().rposition(|(p, _)| p.event.end).unwrap();
    let mut out = Vec::new();
    for (i, item) in numbered.iter().enumerate() {
        let drop = i != last_end && rand(4) == 0;
        if drop {
            continue;
        }
        out.push(*item);
        if rand(3) == 0 {
            out.push(*item);
        }
    }
    // Local reordering: swap random neighbours.
    for _ in 0..out.len() {
        let i = rand(out.len() as u64) as usize;
        if i + 1 < out.len() {
            out.swap(i, i + 1);
        }
    }
    out
}

#[test]
fn every_key_survives_loss_duplication_and_reordering_as_exactly_one_press() {
    let t0 = Instant::now();
    let keys = "0123456789*#ABCD";
    for seed in 1..40u64 {
        let mut rx = DtmfReceiver::default();
        let mut began = String::new();
        let mut ended = Vec::new();
        let sender = DtmfSender::new(8000, Duration::from_millis(50), 12).unwrap();
        let mut start = 1_000_000u32;
        let mut base_seq = 0u16;
        let mut clock = 0u64;
        for key in keys.chars() {
            let train: Vec<EventPacket> = sender
                .plan(key, Duration::from_millis(120), start)
                .unwrap()
                .collect();
            for (p, k) in mangle(train, seed * 31 + u64::from(key as u32)) {
                let h = p.header(0xD7, PT, base_seq.wrapping_add(k));
                let now = t0 + Duration::from_millis(clock) + p.offset;
                for n in notices(&mut rx, now, &h, &p.event) {
                    match n {
                        DtmfNotice::Began { .. } => began.push(n.digit().unwrap()),
                        DtmfNotice::Ended { duration, how, .. } => {
                            ended.push((n.digit().unwrap(), duration, how))
                        }
                    }
                }
            }
            base_seq = base_seq.wrapping_add(10);
            start = start.wrapping_add(8000);
            clock += 1000;
        }
        assert_eq!(began, keys, "seed {seed}");
        let ended_keys: String = ended.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(ended_keys, keys, "seed {seed}");
        for (k, duration, how) in ended {
            assert_eq!(how, EndReason::EndBit, "seed {seed} key {k}");
            assert_eq!(duration, 960, "seed {seed} key {k}: 120 ms at 8 kHz");
        }
    }
}

#[test]
fn when_every_end_packet_is_lost_the_next_event_ends_the_open_one() {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::default();
    let h = |ts| RtpHeader {
        marker: false,
        payload_type: PT,
        sequence: 0,
        timestamp: ts,
        ssrc: 9,
    };
    let ev = |event, duration, end| TelephoneEvent {
        event,
        end,
        volume: 10,
        duration,
    };
    notices(&mut rx, t0, &h(1000), &ev(7, 160, false));
    notices(&mut rx, t0, &h(1000), &ev(7, 320, false));
    let n = notices(&mut rx, t0, &h(3000), &ev(8, 160, false));
    assert_eq!(
        n,
        vec![
            DtmfNotice::Ended {
                event: 7,
                ssrc: 9,
                timestamp: 1000,
                duration: 320,
                volume: 10,
                how: EndReason::Superseded
            },
            DtmfNotice::Began {
                event: 8,
                ssrc: 9,
                timestamp: 3000
            },
        ]
    );
    // A late end packet of the superseded event changes nothing.
    assert!(notices(&mut rx, t0, &h(1000), &ev(7, 800, true)).is_empty());
    assert_eq!(rx.active(), Some(8));
}

#[test]
fn an_event_that_goes_quiet_times_out() {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::new(Duration::from_millis(500));
    let h = RtpHeader {
        marker: true,
        payload_type: PT,
        sequence: 1,
        timestamp: 42,
        ssrc: 1,
    };
    let ev = TelephoneEvent {
        event: 11,
        end: false,
        volume: 0,
        duration: 400,
    };
    assert_eq!(notices(&mut rx, t0, &h, &ev).len(), 1);
    assert_eq!(rx.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    assert_eq!(rx.poll(t0 + Duration::from_millis(499)), None);
    let n = rx.poll(t0 + Duration::from_millis(500)).unwrap();
    assert_eq!(n.digit(), Some('#'));
    assert!(matches!(
        n,
        DtmfNotice::Ended {
            how: EndReason::TimedOut,
            duration: 400,
            ..
        }
    ));
    assert_eq!(rx.poll_timeout(), None);
    // Its retransmissions, arriving later still, are recognised as the same event.
    assert!(notices(&mut rx, t0 + Duration::from_millis(800), &h, &ev).is_empty());
}

#[test]
fn a_long_event_split_into_segments_is_one_press() {
    // RFC 4733 §2.5.1.3: at 65535 units the sender starts a new segment whose timestamp is
    // the old one plus its duration.
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::default();
    let h = |ts| RtpHeader {
        marker: false,
        payload_type: PT,
        sequence: 0,
        timestamp: ts,
        ssrc: 4,
    };
    let ev = |duration, end| TelephoneEvent {
        event: 0,
        end,
        volume: 5,
        duration,
    };
    let first = u32::MAX - 1000; // and across the timestamp wrap
    let mut all = Vec::new();
    all.extend(notices(&mut rx, t0, &h(first), &ev(30_000, false)));
    all.extend(notices(&mut rx, t0, &h(first), &ev(65_535, false)));
    let second = first.wrapping_add(65_535);
    all.extend(notices(&mut rx, t0, &h(second), &ev(8_000, false)));
    all.extend(notices(&mut rx, t0, &h(second), &ev(10_000, true)));
    all.extend(notices(&mut rx, t0, &h(second), &ev(10_000, true)));
    // A late update of the first segment changes nothing either.
    all.extend(notices(&mut rx, t0, &h(first), &ev(65_535, false)));
    assert_eq!(
        all,
        vec![
            DtmfNotice::Began {
                event: 0,
                ssrc: 4,
                timestamp: first
            },
            DtmfNotice::Ended {
                event: 0,
                ssrc: 4,
                timestamp: first,
                duration: 75_535,
                volume: 5,
                how: EndReason::EndBit
            },
        ]
    );
}

#[test]
fn events_from_two_sources_do_not_merge() {
    // sipp's DTMF arrives with its own SSRC while audio (and possibly other events) use another.
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::default();
    let h = |ssrc| RtpHeader {
        marker: true,
        payload_type: PT,
        sequence: 0,
        timestamp: 500,
        ssrc,
    };
    let ev = TelephoneEvent {
        event: 3,
        end: true,
        volume: 10,
        duration: 800,
    };
    assert_eq!(notices(&mut rx, t0, &h(1), &ev).len(), 2);
    assert_eq!(notices(&mut rx, t0, &h(2), &ev).len(), 2);
    assert!(notices(&mut rx, t0, &h(1), &ev).is_empty());
}

#[test]
fn a_short_payload_is_an_error_and_changes_nothing() {
    let mut rx = DtmfReceiver::default();
    let h = RtpHeader::default();
    assert_eq!(
        rx.push(Instant::now(), &h, &[1, 2, 3]).err(),
        Some(DtmfError::TooShort(3))
    );
    assert_eq!(rx.active(), None);
}

#[test]
fn sender_shape_at_20ms_updates() {
    let sender = DtmfSender::default();
    let train: Vec<EventPacket> = sender
        .plan('9', Duration::from_millis(100), 0xFFFF_FF00)
        .unwrap()
        .collect();
    let shape: Vec<(u64, bool, bool, u16)> = train
        .iter()
        .map(|p| {
            assert_eq!(
                p.timestamp, 0xFFFF_FF00,
                "every packet carries the start timestamp"
            );
            assert_eq!(p.event.event, 9);
            assert_eq!(p.event.volume, 10);
            (
                p.offset.as_millis() as u64,
                p.marker,
                p.event.end,
                p.event.duration,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, true, false, 160),
            (20, false, false, 320),
            (40, false, false, 480),
            (60, false, false, 640),
            (80, false, true, 800),
            (100, false, true, 800),
            (120, false, true, 800),
        ]
    );
}

#[test]
fn sender_shape_at_50ms_updates() {
    let sender = DtmfSender::new(8000, Duration::from_millis(50), 6).unwrap();
    let train: Vec<EventPacket> = sender
        .plan('*', Duration::from_millis(200), 1000)
        .unwrap()
        .collect();
    let shape: Vec<(u64, bool, bool, u16)> = train
        .iter()
        .map(|p| {
            (
                p.offset.as_millis() as u64,
                p.marker,
                p.event.end,
                p.event.duration,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, true, false, 400),
            (50, false, false, 800),
            (100, false, false, 1200),
            (150, false, true, 1600),
            (200, false, true, 1600),
            (250, false, true, 1600),
        ]
    );
    // The wire bytes of the end packet.
    assert_eq!(train[3].event.to_bytes(), [10, 0x86, 0x06, 0x40]);
    let h = train[0].header(0x1234, PT, 77);
    assert!(h.marker);
    assert_eq!(
        (h.payload_type, h.sequence, h.timestamp, h.ssrc),
        (PT, 77, 1000, 0x1234)
    );
}

#[test]
fn a_digit_shorter_than_one_interval_is_a_single_marked_end_packet_sent_three_times() {
    let sender = DtmfSender::default();
    let train: Vec<EventPacket> = sender
        .plan('0', Duration::from_millis(10), 0)
        .unwrap()
        .collect();
    assert_eq!(train.len(), 3);
    assert!(train[0].marker && train[0].event.end);
    assert!(train.iter().all(|p| p.event.duration == 80 && p.event.end));
    assert!(!train[1].marker && !train[2].marker);
}

#[test]
fn sender_caps_the_duration_and_validates_its_input() {
    let sender = DtmfSender::default();
    let last = sender
        .plan('1', Duration::from_secs(10), 0)
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last.event.duration, u16::MAX);
    assert!(last.event.end);
    assert_eq!(
        sender.plan('x', Duration::from_millis(100), 0).err(),
        Some(DtmfError::NotADigit('x'))
    );
    assert_eq!(
        sender.plan('1', Duration::ZERO, 0).err(),
        Some(DtmfError::ZeroDuration)
    );
    assert_eq!(
        DtmfSender::new(8000, Duration::from_millis(20), 64).err(),
        Some(DtmfError::BadVolume(64))
    );
    assert_eq!(
        DtmfSender::new(8000, Duration::ZERO, 10).err(),
        Some(DtmfError::ZeroDuration)
    );
}

#[test]
fn payload_bytes_and_digit_names() {
    let ev = TelephoneEvent::parse(&[0x01, 0x8A, 0x08, 0xC0]).unwrap();
    assert_eq!(
        ev,
        TelephoneEvent {
            event: 1,
            end: true,
            volume: 10,
            duration: 2240
        }
    );
    // The reserved bit is ignored on receipt and not sent.
    let with_r = TelephoneEvent::parse(&[0x01, 0xCA, 0x08, 0xC0, 0xFF]).unwrap();
    assert_eq!(with_r, ev);
    assert_eq!(with_r.to_bytes(), [0x01, 0x8A, 0x08, 0xC0]);
    for (i, key) in "0123456789*#ABCD".chars().enumerate() {
        assert_eq!(digit_to_event(key), Some(i as u8));
        assert_eq!(event_to_digit(i as u8), Some(key));
    }
    assert_eq!(digit_to_event('a'), Some(12));
    assert_eq!(event_to_digit(16), None);
    assert_eq!(digit_to_event('E'), None);
}
