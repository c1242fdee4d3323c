//! `sip::stream`: hostile bytes never panic the framer, and how a stream is cut into reads
//! never changes what comes out of it (no byte lost, none duplicated).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vaani_media::sip::message::MAX_MESSAGE_SIZE;
use vaani_media::sip::stream::{Framed, StreamFramer};

/// Pushes `data` in pieces cut at `cuts` and collects every frame (errors as `None`).
fn frames(data: &[u8], cuts: &[usize]) -> (Vec<Option<Framed>>, usize) {
    let mut f = StreamFramer::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.push(data.len());
    for p in points {
        f.push(&data[at..p]);
        at = p;
        while let Some(r) = f.next_frame() {
            if let Err(e) = &r {
                let _ = e.to_string();
                let _ = e.reply("t");
            }
            out.push(r.ok());
        }
        assert!(f.buffered() <= MAX_MESSAGE_SIZE + data.len());
    }
    (out, f.buffered())
}

fn message(i: usize, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "OPTIONS sip:vaani@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-{i}\r\n\
         From: <sip:a@127.0.0.1>;tag={i}\r\nTo: <sip:vaani@127.0.0.1>\r\n\
         Call-ID: c{i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096),
                    cuts in proptest::collection::vec(any::<usize>(), 0..16)) {
        let _ = frames(&data, &cuts);
    }

    #[test]
    fn never_panics_on_sip_like_bytes(data in "([A-Za-z: ;=0-9]{0,20}(\r\n)?){0,40}",
                                      cuts in proptest::collection::vec(any::<usize>(), 0..16)) {
        let _ = frames(data.as_bytes(), &cuts);
    }

    /// Messages with arbitrary bodies (CRLFs included) and pings between them come out whole
    /// and in order however the stream is split.
    #[test]
    fn split_points_change_nothing(
        items in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..200), 0usize..3), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, (body, pings)) in items.iter().enumerate() {
            for _ in 0..*pings {
                stream.extend_from_slice(b"\r\n\r\n");
                want.push(Some(Framed::Ping));
            }
            let m = message(i, body);
            stream.extend_from_slice(&m);
            want.push(Some(Framed::Message(m)));
        }
        let (whole, left) = frames(&stream, &[]);
        prop_assert_eq!(&whole, &want);
        prop_assert_eq!(left, 0);
        let (split, left) = frames(&stream, &cuts);
        prop_assert_eq!(split, want);
        prop_assert_eq!(left, 0);
    }
}
