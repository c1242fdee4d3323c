//! SDP parsing and RFC 3264 offer/answer for the audio the node speaks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use proptest::prelude::*;
use vaani_media::sip::sdp::{
    answer, offer, Codec, Direction, LocalMedia, SdpError, SessionDescription,
};

/// An offer shaped like the ones carriers and sipp send.
const OFFER: &str = "v=0\r\n\
o=root 1821 1821 IN IP4 198.51.100.7\r\n\
s=Twilio Media Gateway\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

fn local() -> LocalMedia {
    LocalMedia {
        address: "203.0.113.50".parse().unwrap(),
        port: 20000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event: true,
        ptime: 20,
        direction: Direction::SendRecv,
        session_id: 42,
        session_version: 1,
    }
}

fn parse(s: &str) -> SessionDescription {
    SessionDescription::parse(s.as_bytes()).unwrap()
}

#[test]
fn parses_a_carrier_offer() {
    let o = parse(OFFER);
    assert_eq!(o.origin.session_id, 1821);
    assert_eq!(o.media.len(), 1);
    let m = &o.media[0];
    assert_eq!(m.port, 16384);
    assert_eq!(m.ptime, Some(20));
    assert_eq!(m.direction, Some(Direction::SendRecv));
    assert_eq!(
        m.codecs(),
        vec![
            (0, Codec::Pcmu, 8000),
            (8, Codec::Pcma, 8000),
            (101, Codec::TelephoneEvent, 8000)
        ]
    );
    assert_eq!(m.fmtp(101), Some("0-16"));
    assert_eq!(m.attributes[0].name, "maxptime");
    assert_eq!(
        o.media_address(0),
        Some("198.51.100.7:16384".parse().unwrap())
    );
    // Written back and read again: the same description.
    assert_eq!(SessionDescription::parse(&o.to_bytes()).unwrap(), o);
}

#[test]
fn answers_with_our_preferred_codec_and_dtmf() {
    let (a, n) = answer(&parse(OFFER), &local()).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    assert_eq!(n.payload_type, 0);
    assert_eq!(n.dtmf_payload_type, Some(101));
    assert_eq!(
        n.remote,
        "198.51.100.7:16384"
            .parse::<std::net::SocketAddr>()
            .unwrap()
    );
    assert_eq!(n.remote_ptime, Some(20));
    assert_eq!(n.direction, Direction::SendRecv);
    assert!(!n.on_hold);
    assert_eq!(
        String::from_utf8(a.to_bytes()).unwrap(),
        "v=0\r\n\
         o=- 42 1 IN IP4 203.0.113.50\r\n\
         s=vaani\r\n\
         c=IN IP4 203.0.113.50\r\n\
         t=0 0\r\n\
         m=audio 20000 RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
    // Preference is ours: with PCMA first, PCMA is chosen although the peer listed PCMU first.
    let mut l = local();
    l.codecs = vec![Codec::Pcma, Codec::Pcmu];
    l.telephone_event = false;
    let (a, n) = answer(&parse(OFFER), &l).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.dtmf_payload_type),
        (Codec::Pcma, 8, None)
    );
    assert_eq!(a.media[0].formats, vec!["8"]);
}

#[test]
fn static_payload_types_need_no_rtpmap_and_dynamic_ones_keep_the_offers_number() {
    let o = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 8 96\r\nc=IN IP4 192.0.2.1\r\n\
         a=rtpmap:96 telephone-event/8000\r\n",
    );
    let (_, n) = answer(&o, &local()).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.dtmf_payload_type),
        (Codec::Pcma, 8, Some(96))
    );
    assert_eq!(
        n.remote,
        "192.0.2.1:4000".parse::<std::net::SocketAddr>().unwrap()
    );
    let opus = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n",
    );
    let mut l = local();
    l.codecs = vec![Codec::Opus, Codec::Pcmu];
    let (a, n) = answer(&opus, &l).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.clock_rate),
        (Codec::Opus, 111, 48000)
    );
    let text = String::from_utf8(a.to_bytes()).unwrap();
    assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
    // The fmtp is ours (what we want to receive, RFC 7587 §7), not an echo of the offer's.
    assert!(
        text.contains("a=fmtp:111 useinbandfec=1; stereo=0; sprop-stereo=0\r\n"),
        "{text}"
    );
}

/// A softphone's offer: Opus on its own dynamic type (107) with a 48 kHz telephone-event,
/// then PCMU with an 8 kHz one.
const OPUS_OFFER: &str = "v=0\r\n\
o=- 7 7 IN IP4 192.0.2.5\r\n\
s=-\r\n\
c=IN IP4 192.0.2.5\r\n\
t=0 0\r\n\
m=audio 5004 RTP/AVP 107 0 98 101\r\n\
a=rtpmap:107 opus/48000/2\r\n\
a=fmtp:107 stereo=1; sprop-stereo=1; maxplaybackrate=48000\r\n\
a=rtpmap:98 telephone-event/48000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n";

#[test]
fn opus_answer_follows_our_preference_and_echoes_the_payload_type() {
    let o = parse(OPUS_OFFER);
    // G.711 first (the default): PCMU wins even though the offer lists Opus first.
    let mut l = local();
    l.codecs = vec![Codec::Pcmu, Codec::Pcma, Codec::Opus];
    let (_, n) = answer(&o, &l).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.clock_rate, n.dtmf_payload_type),
        (Codec::Pcmu, 0, 8000, Some(101))
    );
    // Opus first: Opus on the offerer's 107, with the telephone-event on its 48 kHz clock.
    l.codecs = vec![Codec::Opus, Codec::Pcmu];
    let (a, n) = answer(&o, &l).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.clock_rate, n.dtmf_payload_type),
        (Codec::Opus, 107, 48000, Some(98))
    );
    let m = &a.media[0];
    assert_eq!(m.formats, vec!["107", "98"]);
    let text = String::from_utf8(a.to_bytes()).unwrap();
    assert!(text.contains("m=audio 20000 RTP/AVP 107 98\r\n"), "{text}");
    assert!(text.contains("a=rtpmap:107 opus/48000/2\r\n"), "{text}");
    assert!(
        text.contains("a=fmtp:107 useinbandfec=1; stereo=0; sprop-stereo=0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:98 telephone-event/48000\r\n"),
        "{text}"
    );
    assert!(!text.contains("stereo=1"), "{text}");
    // No 48 kHz telephone-event offered: Opus without events.
    let no_te48 = OPUS_OFFER
        .replace(" 98 101", " 101")
        .replace("a=rtpmap:98 telephone-event/48000\r\n", "");
    let (_, n) = answer(&parse(&no_te48), &l).unwrap();
    assert_eq!((n.codec, n.dtmf_payload_type), (Codec::Opus, None));
    // Opus only, and we only do G.711: no common codec.
    let only_opus = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
    assert_eq!(
        answer(&parse(only_opus), &local()).err(),
        Some(SdpError::NoCommonCodec)
    );
    // "opus" at another clock is not RFC 7587 Opus.
    let mut l = local();
    l.codecs = vec![Codec::Opus];
    let odd = only_opus.replace("opus/48000/2", "opus/16000/1");
    assert_eq!(
        answer(&parse(&odd), &l).err(),
        Some(SdpError::NoCommonCodec)
    );
    assert!(answer(&parse(only_opus), &l).is_ok());
}

/// G.722 is `G722/8000` on static type 9 (RFC 3551 §4.5.2): chosen where we prefer it, with
/// the 8 kHz telephone-event; offered after G.711 when listed so; `G722/16000` (a common
/// mistake) is not taken for it.
#[test]
fn g722_is_answered_and_offered_on_its_8000_clock() {
    let g722_offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 9 0 101\r\na=rtpmap:9 G722/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    let mut l = local();
    l.codecs = vec![Codec::G722, Codec::Pcmu];
    let (a, n) = answer(&parse(g722_offer), &l).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.clock_rate, n.dtmf_payload_type),
        (Codec::G722, 9, 8000, Some(101))
    );
    let text = String::from_utf8(a.to_bytes()).unwrap();
    assert!(text.contains("m=audio 20000 RTP/AVP 9 101\r\n"), "{text}");
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
    // G.711 preferred: PCMU, though the offer lists G.722 first.
    l.codecs = vec![Codec::Pcmu, Codec::G722];
    let (_, n) = answer(&parse(g722_offer), &l).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    // A 16 kHz "G722" clock: not RFC 3551 G.722, so PCMU (or nothing).
    let odd = g722_offer
        .replace("RTP/AVP 9 0 101", "RTP/AVP 96 0 101")
        .replace("a=rtpmap:9 G722/8000", "a=rtpmap:96 G722/16000");
    l.codecs = vec![Codec::G722, Codec::Pcmu];
    let (_, n) = answer(&parse(&odd), &l).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    l.codecs = vec![Codec::G722];
    assert_eq!(
        answer(&parse(&odd), &l).err(),
        Some(SdpError::NoCommonCodec)
    );
    // Our offer: static 9 with its rtpmap, in our order.
    l.codecs = vec![Codec::Pcmu, Codec::G722];
    let text = String::from_utf8(offer(&l).to_bytes()).unwrap();
    assert!(text.contains("RTP/AVP 0 9 101\r\n"), "{text}");
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
}

#[test]
fn our_offer_lists_opus_as_rfc7587_says() {
    let mut l = local();
    l.codecs = vec![Codec::Pcmu, Codec::Pcma, Codec::Opus];
    let text = String::from_utf8(offer(&l).to_bytes()).unwrap();
    assert!(
        text.contains("m=audio 20000 RTP/AVP 0 8 111 110 101\r\n"),
        "{text}"
    );
    assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
    assert!(
        text.contains("a=fmtp:111 useinbandfec=1; stereo=0; sprop-stereo=0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:110 telephone-event/48000\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
        "{text}"
    );
    // Without Opus the offer is the G.711 one it always was.
    let text = String::from_utf8(offer(&local()).to_bytes()).unwrap();
    assert!(text.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{text}");
    assert!(!text.contains("opus") && !text.contains("48000"), "{text}");
    // The offer parses back to the codecs it lists.
    let back = parse(&String::from_utf8(offer(&l).to_bytes()).unwrap());
    assert_eq!(
        back.media[0].codecs(),
        vec![
            (0, Codec::Pcmu, 8000),
            (8, Codec::Pcma, 8000),
            (111, Codec::Opus, 48000),
            (110, Codec::TelephoneEvent, 48000),
            (101, Codec::TelephoneEvent, 8000)
        ]
    );
}

#[test]
fn hold_and_direction() {
    for (offered, ours, hold) in [
        ("sendonly", Direction::RecvOnly, true),
        ("recvonly", Direction::SendOnly, false),
        ("inactive", Direction::Inactive, true),
        ("sendrecv", Direction::SendRecv, false),
    ] {
        let o = parse(&OFFER.replace("a=sendrecv", &format!("a={offered}")));
        let (a, n) = answer(&o, &local()).unwrap();
        assert_eq!(n.direction, ours, "{offered}");
        assert_eq!(n.on_hold, hold, "{offered}");
        assert_eq!(a.media[0].direction, Some(ours));
    }
    // Session-level direction applies when the media has none.
    let o = parse(
        &OFFER
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"),
    );
    assert_eq!(
        answer(&o, &local()).unwrap().1.direction,
        Direction::RecvOnly
    );
    // RFC 2543 hold: c=0.0.0.0.
    let o = parse(&OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0"));
    assert!(answer(&o, &local()).unwrap().1.on_hold);
    // We hold: our sendonly against their sendrecv.
    let mut l = local();
    l.direction = Direction::SendOnly;
    assert_eq!(
        answer(&parse(OFFER), &l).unwrap().1.direction,
        Direction::SendOnly
    );
}

#[test]
fn other_streams_are_refused_with_port_zero_and_order_kept() {
    let o = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=video 5000 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\n\
         m=audio 0 RTP/AVP 0\r\n\
         m=audio 6000 RTP/AVP 18 0\r\n",
    );
    let (a, n) = answer(&o, &local()).unwrap();
    assert_eq!(n.media_index, 2);
    assert_eq!(a.media.len(), 3);
    assert_eq!((a.media[0].media.as_str(), a.media[0].port), ("video", 0));
    assert_eq!(a.media[1].port, 0);
    assert_eq!(a.media[2].port, 20000);
    assert_eq!(a.media[2].formats, vec!["0"]);
    assert!(SessionDescription::parse(&a.to_bytes()).is_ok());
}

#[test]
fn refusals() {
    let g729 = OFFER
        .replace("0 8 101", "18")
        .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "");
    assert_eq!(
        answer(&parse(&g729), &local()).unwrap_err(),
        SdpError::NoCommonCodec
    );
    let video = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 31\r\n";
    assert_eq!(
        answer(&parse(video), &local()).unwrap_err(),
        SdpError::NoAudio
    );
    let no_c = OFFER.replace("c=IN IP4 198.51.100.7\r\n", "");
    assert_eq!(
        answer(&parse(&no_c), &local()).unwrap_err(),
        SdpError::NoAddress
    );
    for (bad, err) in [
        ("", SdpError::Version),
        ("v=1\r\n", SdpError::Version),
        ("v=0\r\ns=-\r\n", SdpError::Origin),
        ("v=0\r\no=- x 1 IN IP4 a\r\n", SdpError::Origin),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 300.1.1.1\r\n",
            SdpError::Connection,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP6 192.0.2.1\r\n",
            SdpError::Connection,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio x RTP/AVP 0\r\n",
            SdpError::Media,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP\r\n",
            SdpError::Media,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 300\r\n",
            SdpError::Media,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
            SdpError::Attribute,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 0\r\na=ptime:x\r\n",
            SdpError::Attribute,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm =audio 5 RTP/AVP 0\r\n",
            SdpError::Line,
        ),
    ] {
        assert_eq!(
            SessionDescription::parse(bad.as_bytes()).unwrap_err(),
            err,
            "{bad:?}"
        );
    }
    assert_eq!(
        SessionDescription::parse(&[0xff, 0xfe]).unwrap_err(),
        SdpError::NotUtf8
    );
}

#[test]
fn our_offer_is_answerable_by_ourselves() {
    let mut l = local();
    l.codecs = vec![Codec::Opus, Codec::G722, Codec::Pcmu];
    let o = offer(&l);
    let text = String::from_utf8(o.to_bytes()).unwrap();
    assert!(
        // Opus on 111 with its 48 kHz telephone-event on 110 (RFC 4733 §2.1: the audio's clock).
        text.contains("m=audio 20000 RTP/AVP 111 9 0 110 101\r\n"),
        "{text}"
    );
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"));
    let parsed = SessionDescription::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed, o);
    let mut peer = local();
    peer.address = IpAddr::from([192, 0, 2, 9]);
    peer.codecs = vec![Codec::G722, Codec::Pcmu];
    let (_, n) = answer(&parsed, &peer).unwrap();
    assert_eq!(
        (n.codec, n.payload_type, n.dtmf_payload_type),
        (Codec::G722, 9, Some(101))
    );
    assert_eq!(
        n.remote,
        "203.0.113.50:20000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
    );
}

proptest! {
    #[test]
    fn sdp_never_panics_and_round_trips(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = SessionDescription::parse(&data) {
            prop_assert_eq!(SessionDescription::parse(&s.to_bytes()).unwrap(), s.clone());
            let _ = answer(&s, &local());
        }
    }

    #[test]
    fn sdp_like_text_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("v=0".to_string()),
                Just("o=- 1 2 IN IP4 192.0.2.1".to_string()),
                "[a-z]=[ -~]{0,30}",
                "m=audio [0-9]{1,6} RTP/AVP( [0-9]{1,3}){0,4}",
                "a=(rtpmap|fmtp|ptime|sendonly|inactive):[ -~]{0,20}",
                "c=IN IP[46] [0-9.:a-f]{0,20}",
            ],
            0..16,
        )
    ) {
        let text = lines.join("\r\n");
        if let Ok(s) = SessionDescription::parse(text.as_bytes()) {
            prop_assert_eq!(SessionDescription::parse(&s.to_bytes()).unwrap(), s.clone());
            let _ = answer(&s, &local());
        }
    }
}
