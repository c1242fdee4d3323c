//! RTP and RTCP parsing and writing: round trips, byte-exact layouts, malformed inputs, and
//! never panicking on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vaani_media::rtp::dtmf::TelephoneEvent;
use vaani_media::rtp::packet::{Extension, RtpError, RtpHeader, RtpPacket};
use vaani_media::rtp::rtcp::{
    self, Bye, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SdesChunk, SenderInfo,
    SenderReport,
};

// ---------------------------------------------------------------- RTP

/// Malformed RTP datagrams and the error each must give. Kept inline rather than in a folder.
fn malformed_rtp() -> Vec<(&'static str, Vec<u8>, RtpError)> {
    let hdr = |b0: u8| vec![b0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    let mut cases = vec![
        ("empty", vec![], RtpError::TooShort(0)),
        ("one byte", vec![0x80], RtpError::TooShort(1)),
        ("11 bytes", vec![0x80; 11], RtpError::TooShort(11)),
        ("version 0", hdr(0x00), RtpError::BadVersion(0)),
        ("version 1", hdr(0x40), RtpError::BadVersion(1)),
        ("version 3", hdr(0xC0), RtpError::BadVersion(3)),
        (
            "CC=15 with no CSRCs",
            hdr(0x8F),
            RtpError::CsrcOverrun { count: 15, len: 12 },
        ),
        (
            "X set, no extension header",
            hdr(0x90),
            RtpError::ExtensionOverrun,
        ),
        (
            "padding bit, count 0",
            {
                let mut v = hdr(0xA0);
                v.extend_from_slice(&[1, 2, 0]);
                v
            },
            RtpError::BadPadding(0),
        ),
        (
            "padding count larger than the packet body",
            {
                let mut v = hdr(0xA0);
                v.extend_from_slice(&[1, 2, 9]);
                v
            },
            RtpError::BadPadding(9),
        ),
        (
            "padding bit on a bare header (count read from the SSRC)",
            hdr(0xA0),
            RtpError::BadPadding(3),
        ),
    ];
    // CSRC list cut short by one byte.
    let mut v = hdr(0x82);
    v.extend_from_slice(&[0; 7]);
    cases.push((
        "CSRC list one byte short",
        v,
        RtpError::CsrcOverrun { count: 2, len: 19 },
    ));
    // Extension claiming 2 words with 1 present.
    let mut v = hdr(0x90);
    v.extend_from_slice(&[0xBE, 0xDE, 0, 2, 1, 2, 3, 4]);
    cases.push(("extension length overruns", v, RtpError::ExtensionOverrun));
    // Extension with the maximum length field.
    let mut v = hdr(0x90);
    v.extend_from_slice(&[0xBE, 0xDE, 0xFF, 0xFF]);
    cases.push((
        "extension length 65535 words",
        v,
        RtpError::ExtensionOverrun,
    ));
    // Padding that would eat into the extension.
    let mut v = hdr(0xB0);
    v.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0, 0, 0, 4]);
    cases.push((
        "padding reaching into the extension",
        v,
        RtpError::BadPadding(4),
    ));
    cases
}

#[test]
fn malformed_rtp_is_refused_with_the_right_error() {
    for (name, bytes, expected) in malformed_rtp() {
        assert_eq!(RtpPacket::parse(&bytes), Err(expected), "{name}");
    }
}

#[test]
fn edge_cases_that_are_valid() {
    // Padding that consumes the whole payload.
    let v = [0xA0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
    let p = RtpPacket::parse(&v).unwrap();
    assert!(p.payload.is_empty());
    assert_eq!(p.padding, 4);
    // Zero-length extension body; empty payload.
    let v = [0x90, 0x80, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x10, 0x00, 0, 0];
    let p = RtpPacket::parse(&v).unwrap();
    assert_eq!(
        p.extension,
        Some(Extension {
            profile: 0x1000,
            data: &[]
        })
    );
    assert!(p.marker);
    assert_eq!(p.payload_type, 0);
    assert!(p.payload.is_empty());
    // 15 CSRCs.
    let mut v = vec![0x8F, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    for i in 0..15u32 {
        v.extend_from_slice(&i.to_be_bytes());
    }
    let p = RtpPacket::parse(&v).unwrap();
    assert_eq!(p.csrcs().collect::<Vec<_>>(), (0..15).collect::<Vec<_>>());
}

#[test]
fn writer_refuses_what_cannot_be_encoded() {
    let payload = [0u8; 4];
    let base = RtpPacket {
        marker: false,
        payload_type: 0,
        sequence: 1,
        timestamp: 2,
        ssrc: 3,
        csrc: &[],
        extension: None,
        payload: &payload,
        padding: 0,
    };
    let mut out = [0u8; 2048];
    assert_eq!(
        RtpPacket {
            payload_type: 200,
            ..base
        }
        .write(&mut out),
        Err(RtpError::BadPayloadType(200))
    );
    let csrc = [0u8; 64];
    assert_eq!(
        RtpPacket {
            csrc: &csrc,
            ..base
        }
        .write(&mut out),
        Err(RtpError::TooManyCsrcs(16))
    );
    assert_eq!(
        RtpPacket {
            csrc: &csrc[..5],
            ..base
        }
        .write(&mut out),
        Err(RtpError::BadCsrcList(5))
    );
    let ext = [0u8; 3];
    assert_eq!(
        RtpPacket {
            extension: Some(Extension {
                profile: 1,
                data: &ext
            }),
            ..base
        }
        .write(&mut out),
        Err(RtpError::BadExtensionLength(3))
    );
    assert_eq!(
        base.write(&mut out[..15]),
        Err(RtpError::BufferTooSmall {
            needed: 16,
            available: 15
        })
    );
}

#[derive(Debug, Clone)]
struct Owned {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    csrc: Vec<u8>,
    extension: Option<(u16, Vec<u8>)>,
    payload: Vec<u8>,
    padding: u8,
}

impl Owned {
    fn view(&self) -> RtpPacket<'_> {
        RtpPacket {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            csrc: &self.csrc,
            extension: self.extension.as_ref().map(|(profile, data)| Extension {
                profile: *profile,
                data,
            }),
            payload: &self.payload,
            padding: self.padding,
        }
    }
}

fn owned_packet() -> impl Strategy<Value = Owned> {
    (
        any::<bool>(),
        0u8..128,
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        (0usize..16).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4)),
        proptest::option::of((
            any::<u16>(),
            (0usize..8).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4)),
        )),
        proptest::collection::vec(any::<u8>(), 0..400),
        any::<u8>(),
    )
        .prop_map(
            |(
                marker,
                payload_type,
                sequence,
                timestamp,
                ssrc,
                csrc,
                extension,
                payload,
                padding,
            )| {
                Owned {
                    marker,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc,
                    csrc,
                    extension,
                    payload,
                    padding,
                }
            },
        )
}

proptest! {
    #[test]
    fn rtp_round_trips(p in owned_packet()) {
        let view = p.view();
        let mut buf = vec![0u8; view.serialized_len()];
        let n = view.write(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let parsed = RtpPacket::parse(&buf).unwrap();
        prop_assert_eq!(parsed, view);
    }

    #[test]
    fn rtp_parse_never_panics_and_reserializes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = RtpPacket::parse(&bytes) {
            // Whatever parses can be written back to the same length, and parses the same.
            let mut out = vec![0u8; p.serialized_len()];
            prop_assert_eq!(p.write(&mut out).unwrap(), bytes.len());
            prop_assert_eq!(RtpPacket::parse(&out).unwrap(), p);
            // The bytes match except padding filler (written as zeros).
            let body = bytes.len() - p.padding as usize;
            prop_assert_eq!(&out[..body], &bytes[..body]);
        }
    }

    /// Arbitrary bytes behind a valid-looking first octet reach the deeper checks.
    #[test]
    fn rtp_parse_never_panics_on_version_2(first in 0x80u8..0xC0, rest in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut bytes = vec![first];
        bytes.extend_from_slice(&rest);
        let _ = RtpPacket::parse(&bytes);
    }

    #[test]
    fn header_writer_agrees_with_the_parser(
        marker in any::<bool>(), pt in 0u8..128, seq in any::<u16>(), ts in any::<u32>(),
        ssrc in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..200)
    ) {
        let h = RtpHeader { marker, payload_type: pt, sequence: seq, timestamp: ts, ssrc };
        let mut buf = vec![0u8; 12 + payload.len()];
        h.write(&payload, &mut buf).unwrap();
        let p = RtpPacket::parse(&buf).unwrap();
        prop_assert_eq!(p.header(), h);
        prop_assert_eq!(p.payload, &payload[..]);
    }

    #[test]
    fn telephone_event_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
        match TelephoneEvent::parse(&bytes) {
            Ok(ev) => prop_assert_eq!(&ev.to_bytes()[..], &{
                let mut b = [0u8; 4];
                b.copy_from_slice(&bytes[..4]);
                b[1] &= 0xBF; // the R bit is not kept
                b
            }[..]),
            Err(_) => prop_assert!(bytes.len() < 4),
        }
    }
}

// ---------------------------------------------------------------- RTCP

fn block(ssrc: u32) -> ReportBlock {
    ReportBlock {
        ssrc,
        fraction_lost: 64,
        cumulative_lost: -3,
        extended_highest_seq: 0x0001_0005,
        jitter: 12,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 65_536,
    }
}

#[test]
fn sender_report_bytes_are_laid_out_as_rfc_3550_6_4_1() {
    let sr = RtcpPacket::SenderReport(SenderReport {
        ssrc: 0xAABB_CCDD,
        info: SenderInfo {
            ntp_timestamp: 0x0102_0304_0506_0708,
            rtp_timestamp: 0x1111_2222,
            packet_count: 3,
            octet_count: 480,
        },
        reports: vec![block(0x0A0B_0C0D)],
    });
    let mut v = Vec::new();
    sr.write_to(&mut v).unwrap();
    #[rustfmt::skip]
    let expected: [u8; 52] = [
        0x81, 200, 0, 12,                  // V=2 RC=1, SR, length 12 words (52 bytes)
        0xAA, 0xBB, 0xCC, 0xDD,            // sender SSRC
        0x01, 0x02, 0x03, 0x04,            // NTP, most significant word
        0x05, 0x06, 0x07, 0x08,            // NTP, least significant word
        0x11, 0x11, 0x22, 0x22,            // RTP timestamp
        0, 0, 0, 3,                        // packet count
        0, 0, 0x01, 0xE0,                  // octet count
        0x0A, 0x0B, 0x0C, 0x0D,            // SSRC_1
        64, 0xFF, 0xFF, 0xFD,              // fraction lost, cumulative lost (-3, 24 bits)
        0, 1, 0, 5,                        // extended highest sequence number
        0, 0, 0, 12,                       // jitter
        0x12, 0x34, 0x56, 0x78,            // LSR
        0, 1, 0, 0,                        // DLSR
    ];
    assert_eq!(v, expected);
    assert_eq!(rtcp::parse_compound(&v).unwrap(), vec![sr]);
}

#[test]
fn compound_rr_sdes_bye_round_trips() {
    let packets = vec![
        RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 1,
            reports: vec![block(2), block(3)],
        }),
        RtcpPacket::SourceDescription(vec![
            SdesChunk::cname(1, "vaani@127.0.0.1"),
            SdesChunk {
                ssrc: 9,
                items: vec![(1, "x".into()), (6, "tool".into())],
            },
        ]),
        RtcpPacket::Bye(Bye {
            sources: vec![1, 7],
            reason: Some("call ended".into()),
        }),
        RtcpPacket::Other {
            packet_type: 205,
            count: 1,
            body: vec![0, 0, 0, 1, 0, 0, 0, 2],
        },
    ];
    let mut v = Vec::new();
    rtcp::write_compound(&packets, &mut v).unwrap();
    assert_eq!(v.len() % 4, 0);
    let parsed = rtcp::parse_compound(&v).unwrap();
    assert_eq!(parsed, packets);
    match &parsed[1] {
        RtcpPacket::SourceDescription(chunks) => {
            assert_eq!(chunks[0].get_cname(), Some("vaani@127.0.0.1"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_rr_and_bye_without_reason() {
    let packets = vec![
        RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 5,
            reports: vec![],
        }),
        RtcpPacket::Bye(Bye {
            sources: vec![5],
            reason: None,
        }),
    ];
    let mut v = Vec::new();
    rtcp::write_compound(&packets, &mut v).unwrap();
    assert_eq!(
        v,
        [0x80, 201, 0, 1, 0, 0, 0, 5, 0x81, 203, 0, 1, 0, 0, 0, 5]
    );
    assert_eq!(rtcp::parse_compound(&v).unwrap(), packets);
}

#[test]
fn padding_on_the_last_packet_is_accepted() {
    // RR (no blocks) + BYE with 4 bytes of padding.
    let v = [
        0x80, 201, 0, 1, 0, 0, 0, 5, 0xA1, 203, 0, 2, 0, 0, 0, 5, 0, 0, 0, 4,
    ];
    let parsed = rtcp::parse_compound(&v).unwrap();
    assert_eq!(
        parsed[1],
        RtcpPacket::Bye(Bye {
            sources: vec![5],
            reason: None
        })
    );
}

/// Malformed RTCP datagrams and their errors.
fn malformed_rtcp() -> Vec<(&'static str, Vec<u8>, RtcpError)> {
    vec![
        ("empty", vec![], RtcpError::Truncated(0)),
        ("three bytes", vec![0x80, 201, 0], RtcpError::Truncated(0)),
        (
            "version 1",
            vec![0x40, 201, 0, 1, 0, 0, 0, 1],
            RtcpError::BadVersion(1),
        ),
        (
            "length past the end",
            vec![0x80, 201, 0, 5, 0, 0, 0, 1],
            RtcpError::LengthOverrun(0),
        ),
        (
            "second packet truncated",
            vec![0x80, 201, 0, 1, 0, 0, 0, 1, 0x80, 203],
            RtcpError::Truncated(8),
        ),
        (
            "SR too short for its sender info",
            vec![0x80, 200, 0, 1, 0, 0, 0, 1],
            RtcpError::BodyTooShort { packet_type: 200 },
        ),
        (
            "RR claiming two blocks, carrying none",
            vec![0x82, 201, 0, 1, 0, 0, 0, 1],
            RtcpError::BodyTooShort { packet_type: 201 },
        ),
        (
            "BYE claiming three sources",
            vec![0x83, 203, 0, 1, 0, 0, 0, 1],
            RtcpError::BodyTooShort { packet_type: 203 },
        ),
        (
            "BYE reason overruns",
            vec![0x81, 203, 0, 2, 0, 0, 0, 1, 9, b'a', b'b', b'c'],
            RtcpError::BadBye,
        ),
        (
            "SDES item overruns",
            vec![0x81, 202, 0, 2, 0, 0, 0, 1, 1, 200, b'a', b'b'],
            RtcpError::BadSdes,
        ),
        (
            "SDES chunk without terminator",
            vec![0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b'],
            RtcpError::BadSdes,
        ),
        (
            "SDES with more chunks than bytes",
            vec![0x83, 202, 0, 1, 0, 0, 0, 1],
            RtcpError::BadSdes,
        ),
        (
            "padding on a packet that is not last",
            vec![0xA0, 201, 0, 1, 0, 0, 0, 4, 0x80, 201, 0, 1, 0, 0, 0, 1],
            RtcpError::BadPadding,
        ),
        (
            "padding count zero",
            vec![0xA0, 201, 0, 1, 0, 0, 0, 0],
            RtcpError::BadPadding,
        ),
        (
            "padding count past the body",
            vec![0xA0, 201, 0, 1, 0, 0, 0, 9],
            RtcpError::BadPadding,
        ),
    ]
}

#[test]
fn malformed_rtcp_is_refused_with_the_right_error() {
    for (name, bytes, expected) in malformed_rtcp() {
        assert_eq!(rtcp::parse_compound(&bytes), Err(expected), "{name}");
    }
}

#[test]
fn rtcp_writer_limits() {
    let too_many = RtcpPacket::ReceiverReport(ReceiverReport {
        ssrc: 1,
        reports: vec![block(1); 32],
    });
    let mut v = vec![0xEE];
    assert_eq!(too_many.write_to(&mut v), Err(RtcpError::TooMany(32)));
    assert_eq!(v, [0xEE], "nothing half-written");
    let long = RtcpPacket::Bye(Bye {
        sources: vec![1],
        reason: Some("x".repeat(256)),
    });
    assert_eq!(long.write_to(&mut v), Err(RtcpError::TextTooLong(256)));
    assert_eq!(v, [0xEE]);
    let ok = RtcpPacket::Bye(Bye {
        sources: vec![],
        reason: None,
    });
    assert_eq!(
        rtcp::write_compound(&[ok, long], &mut v),
        Err(RtcpError::TextTooLong(256))
    );
    assert_eq!(v, [0xEE], "a failed compound leaves nothing behind");
}

fn arb_block() -> impl Strategy<Value = ReportBlock> + Clone {
    (
        any::<u32>(),
        any::<u8>(),
        -0x80_0000i32..=0x7F_FFFF,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(ssrc, fraction_lost, cumulative_lost, ext, jitter, lsr, dlsr)| ReportBlock {
                ssrc,
                fraction_lost,
                cumulative_lost,
                extended_highest_seq: ext,
                jitter,
                last_sr: lsr,
                delay_since_last_sr: dlsr,
            },
        )
}

fn arb_rtcp() -> impl Strategy<Value = RtcpPacket> {
    let blocks = proptest::collection::vec(arb_block(), 0..31);
    let text = "[a-zA-Z0-9@. ]{0,40}";
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            blocks.clone()
        )
            .prop_map(
                |(ssrc, ntp, rtp, pc, oc, reports)| RtcpPacket::SenderReport(SenderReport {
                    ssrc,
                    info: SenderInfo {
                        ntp_timestamp: ntp,
                        rtp_timestamp: rtp,
                        packet_count: pc,
                        octet_count: oc
                    },
                    reports
                })
            ),
        (any::<u32>(), blocks).prop_map(|(ssrc, reports)| RtcpPacket::ReceiverReport(
            ReceiverReport { ssrc, reports }
        )),
        proptest::collection::vec(
            (
                any::<u32>(),
                proptest::collection::vec((1u8..9, text), 0..4)
            ),
            0..5
        )
        .prop_map(|chunks| RtcpPacket::SourceDescription(
            chunks
                .into_iter()
                .map(|(ssrc, items)| SdesChunk { ssrc, items })
                .collect()
        )),
        (
            proptest::collection::vec(any::<u32>(), 0..31),
            proptest::option::of("[a-z ]{1,60}")
        )
            .prop_map(|(sources, reason)| RtcpPacket::Bye(Bye { sources, reason })),
    ]
}

proptest! {
    #[test]
    fn rtcp_compounds_round_trip(packets in proptest::collection::vec(arb_rtcp(), 1..5)) {
        let mut v = Vec::new();
        rtcp::write_compound(&packets, &mut v).unwrap();
        prop_assert_eq!(v.len() % 4, 0);
        prop_assert_eq!(rtcp::parse_compound(&v).unwrap(), packets);
    }

    #[test]
    fn rtcp_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = rtcp::parse_compound(&bytes);
    }

    /// Garbage behind well-formed headers, so the body parsers get exercised, not just the
    /// header checks.
    #[test]
    fn rtcp_bodies_never_panic(
        count in 0u8..32,
        pt in prop_oneof![Just(200u8), Just(201), Just(202), Just(203), Just(204), any::<u8>()],
        padded in any::<bool>(),
        body_words in proptest::collection::vec(any::<[u8; 4]>(), 0..40),
    ) {
        let mut v = vec![0x80 | (u8::from(padded) << 5) | count, pt];
        v.extend_from_slice(&(body_words.len() as u16).to_be_bytes());
        for w in &body_words {
            v.extend_from_slice(w);
        }
        let _ = rtcp::parse_compound(&v);
    }
}
