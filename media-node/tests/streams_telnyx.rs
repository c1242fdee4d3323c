//! Telnyx media streams: documented messages, out-of-order media delivered in order, L16 byte
//! order, outbound frames, marks returned on clear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "streams_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use vaani_media::streams::{
    telnyx, AudioFormat, Encoding, Event, SampleRate, SessionConfig, TelnyxSession, WireEvent,
};

const P: &str = "telnyx";
const STREAM: &str = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC";
const CALL: &str = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ";

#[test]
fn every_fixture_parses() {
    for name in fixture_names(P) {
        let ev = telnyx::parse(&fixture(P, &name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!matches!(ev, WireEvent::Unknown { .. }), "{name}");
    }
}

#[test]
fn documented_messages_parse_to_their_fields() {
    for name in ["start.json", "start-legacy.json"] {
        let WireEvent::Start(s) = telnyx::parse(&fixture(P, name)).unwrap() else {
            panic!("{name}")
        };
        assert_eq!(s.stream_id, STREAM, "stream_id is top-level");
        assert_eq!(s.provider_call_id, CALL);
        assert_eq!(s.format, Some(AudioFormat::PCMU), "{name}");
    }
    let WireEvent::Start(s) = telnyx::parse(&fixture(P, "start.json")).unwrap() else {
        panic!()
    };
    assert_eq!(
        s.custom_parameters.get("customer_id").unwrap(),
        "customer_123"
    );
    assert_eq!(s.from.as_deref(), Some("+13122010094"));
    let WireEvent::Media(m) = telnyx::parse(&fixture(P, "media.json")).unwrap() else {
        panic!()
    };
    assert_eq!(
        (m.sequence, m.chunk, m.timestamp_ms),
        (Some(4), Some(2), Some(5))
    );
    assert_eq!(
        telnyx::parse(&fixture(P, "dtmf.json")).unwrap(),
        WireEvent::Dtmf {
            digit: '#',
            duration_ms: None
        }
    );
    assert_eq!(
        telnyx::parse(&fixture(P, "mark.json")).unwrap(),
        WireEvent::Mark {
            name: "utt-1".into()
        }
    );
    assert_eq!(
        telnyx::parse(&fixture(P, "stop.json")).unwrap(),
        WireEvent::Stop { reason: None }
    );
    assert_eq!(
        telnyx::parse(&fixture(P, "error.json")).unwrap(),
        WireEvent::Error {
            code: Some("100005".into()),
            title: Some("rate_limit_reached".into()),
            detail: Some("Too many requests".into())
        }
    );
    let opus = fixture(P, "start.json").replace("\"PCMU\"", "\"OPUS\"");
    assert!(telnyx::parse(&opus).is_err());
}

fn started(cfg: SessionConfig) -> (TelnyxSession, Instant) {
    let t = Instant::now();
    let mut s = TelnyxSession::new(cfg, t, t0_utc());
    s.on_text(t, &fixture(P, "connected.json")).unwrap();
    let ev = s.on_text(t, &fixture(P, "start.json")).unwrap();
    assert!(matches!(ev.as_slice(), [Event::Start(_)]));
    (s, t)
}

fn media(chunk: u64, byte: u8) -> String {
    format!(
        r#"{{"event":"media","sequence_number":"{}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{}"}},"stream_id":"{STREAM}"}}"#,
        chunk + 2,
        chunk * 20,
        b64(&[byte; 160])
    )
}

fn chunks(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Media(m) => m.chunk,
            _ => None,
        })
        .collect()
}

#[test]
fn out_of_order_media_is_delivered_in_order() {
    let (mut s, t) = started(SessionConfig::unauthenticated());
    let mut delivered = Vec::new();
    for c in [2, 1, 3, 5, 4, 6, 8, 7, 9] {
        delivered.extend(s.on_text(t, &media(c, c as u8)).unwrap());
    }
    assert_eq!(chunks(&delivered), (1..=9).collect::<Vec<_>>());
    // Payloads travel with their chunk.
    for e in &delivered {
        if let Event::Media(m) = e {
            assert_eq!(m.payload, vec![m.chunk.unwrap() as u8; 160]);
        }
    }
    assert_eq!(s.reorder_losses(), (0, 0));
}

#[test]
fn a_lost_frame_delays_at_most_the_window_and_late_ones_are_dropped() {
    let mut cfg = SessionConfig::unauthenticated();
    cfg.reorder_window = 3;
    let (mut s, t) = started(cfg);
    let mut delivered = Vec::new();
    for c in [1, 3, 4, 5] {
        delivered.extend(s.on_text(t, &media(c, 0)).unwrap());
    }
    assert_eq!(chunks(&delivered), vec![1], "3..5 wait for 2");
    delivered.extend(s.on_text(t, &media(6, 0)).unwrap());
    assert_eq!(chunks(&delivered), vec![1, 3, 4, 5, 6]);
    assert!(s.on_text(t, &media(2, 0)).unwrap().is_empty());
    assert!(s.on_text(t, &media(6, 0)).unwrap().is_empty());
    assert_eq!(s.reorder_losses(), (2, 1));
    // Held frames come out before the stop.
    assert!(s.on_text(t, &media(8, 0)).unwrap().is_empty());
    let end = s.on_text(t, &fixture(P, "stop.json")).unwrap();
    assert_eq!(chunks(&end), vec![8]);
    assert_eq!(end.last(), Some(&Event::Stop { reason: None }));
}

#[test]
fn our_own_track_is_ignored() {
    let (mut s, t) = started(SessionConfig::unauthenticated());
    let outbound = media(1, 0).replace("\"inbound\"", "\"outbound\"");
    assert!(s.on_text(t, &outbound).unwrap().is_empty());
    assert_eq!(s.ignored_messages(), 1);
}

#[test]
fn l16_is_big_endian_on_the_wire_and_little_endian_here() {
    let t = Instant::now();
    let mut cfg = auth_config();
    cfg.outbound_format = Some(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000));
    let mut s = TelnyxSession::new(cfg, t, t0_utc());
    let ev = s.on_text(t, &fixture(P, "start-l16-vaani.json")).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!()
    };
    assert_eq!(
        info.format,
        AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000)
    );
    assert_eq!(info.call_id.as_deref(), Some(CALL_ID));
    let wire = fixture(P, "media-l16.json");
    let raw = unb64(json(&wire)["media"]["payload"].as_str().unwrap());
    let ev = s.on_text(t, &wire).unwrap();
    let [Event::Media(m)] = ev.as_slice() else {
        panic!()
    };
    assert_eq!(m.payload.len(), raw.len());
    let s1_wire = i16::from_be_bytes([raw[2], raw[3]]);
    let s1 = i16::from_le_bytes([m.payload[2], m.payload[3]]);
    assert_eq!(s1, s1_wire);
    assert_eq!(
        s1,
        (8000.0 * (2.0 * std::f64::consts::PI * 440.0 / 16000.0).sin()) as i16
    );

    let pcm: Vec<u8> = (0..640u32).map(|i| i as u8).collect();
    s.send_audio(t, &pcm).unwrap();
    let out = drain(&mut s, t);
    let sent = media_payload(&out[0]).unwrap();
    assert_eq!(sent.len(), 640, "20 ms at 16 kHz");
    assert_eq!(&sent[..4], &[1, 0, 3, 2]);
}

#[test]
fn outbound_frames_and_marks_returned_on_clear() {
    let (mut s, t) = started(SessionConfig::unauthenticated());
    s.send_audio(t, &[0xAB; 160]).unwrap();
    s.mark("u1").unwrap();
    let out = drain(&mut s, t);
    assert_eq!(
        json(&out[0]),
        json(&format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            b64(&[0xAB; 160])
        ))
    );
    assert_eq!(
        json(&out[1]),
        json(r#"{"event":"mark","mark":{"name":"u1"}}"#)
    );
    let report = s.clear(t);
    assert_eq!(report.cleared_marks, vec!["u1"]);
    assert_eq!(drain(&mut s, t), vec![r#"{"event":"clear"}"#.to_string()]);
    // Telnyx returns queued marks on clear: not reported as played.
    let echo = fixture(P, "mark.json").replace("utt-1", "u1");
    assert_eq!(s.on_text(t, &echo).unwrap(), vec![]);
    assert_eq!(s.played_ms(), 0);

    s.send_audio(t, &[0xAB; 320]).unwrap();
    s.mark("u2").unwrap();
    run(&mut s, t, t + Duration::from_secs(1));
    let played = fixture(P, "mark.json").replace("utt-1", "u2");
    assert_eq!(
        s.on_text(t, &played).unwrap(),
        vec![Event::Mark { name: "u2".into() }]
    );
    assert_eq!(s.played_ms(), 60);
    assert_eq!(
        s.on_text(t, &fixture(P, "error.json")).unwrap(),
        vec![Event::ProviderError {
            code: Some("100005".into()),
            title: Some("rate_limit_reached".into()),
            detail: Some("Too many requests".into())
        }]
    );
}

#[test]
fn media_that_overtakes_start_is_held_until_the_stream_is_authenticated() {
    let t = Instant::now();
    let mut cfg = auth_config();
    cfg.outbound_format = Some(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000));
    let mut s = TelnyxSession::new(cfg.clone(), t, t0_utc());
    let early = fixture(P, "media-l16.json");
    assert_eq!(s.on_text(t, &early).unwrap(), vec![]);
    let ev = s.on_text(t, &fixture(P, "start-l16-vaani.json")).unwrap();
    assert!(
        matches!(ev.as_slice(), [Event::Start(_), Event::Media(_)]),
        "{ev:?}"
    );
    let Event::Media(m) = &ev[1] else { panic!() };
    let raw = unb64(json(&early)["media"]["payload"].as_str().unwrap());
    assert_eq!(
        m.payload[..2],
        [raw[1], raw[0]],
        "byte order fixed once the format is known"
    );

    // Unauthenticated: held frames are never delivered.
    let mut s = TelnyxSession::new(cfg.clone(), t, t0_utc());
    s.on_text(t, &early).unwrap();
    assert!(s
        .on_text(t, &fixture(P, "start.json"))
        .unwrap_err()
        .is_auth());
    assert_eq!(s.on_close(t), vec![]);

    // Only a window's worth is held.
    let mut s = TelnyxSession::new(cfg, t, t0_utc());
    for c in 1..=5 {
        s.on_text(t, &media(c, 0)).unwrap();
    }
    assert!(s.on_text(t, &media(6, 0)).is_err());
}
