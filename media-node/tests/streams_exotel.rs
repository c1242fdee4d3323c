//! Exotel Voicebot streams: documented messages, sample rates, tokens from the URL, and the
//! outbound chunk rules (≥ 3.2 KB, ≤ 100 KB, multiples of 320 bytes) under any write pattern.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "streams_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use support::*;
use vaani_media::streams::{
    exotel, AudioFormat, Encoding, Event, ExotelSession, SampleRate, SessionConfig, StreamError,
    WireEvent,
};

const P: &str = "exotel";
const SID: &str = "MZxxxxxxxxxxxxxxxxxxxxxxxx";

#[test]
fn every_fixture_parses() {
    for name in fixture_names(P) {
        let ev = exotel::parse(&fixture(P, &name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!matches!(ev, WireEvent::Unknown { .. }), "{name}");
    }
}

#[test]
fn documented_messages_parse_to_their_fields() {
    assert_eq!(
        exotel::parse(&fixture(P, "connected.json")).unwrap(),
        WireEvent::Connected
    );
    let WireEvent::Start(s) = exotel::parse(&fixture(P, "start.json")).unwrap() else {
        panic!()
    };
    assert_eq!(s.stream_id, SID);
    assert_eq!(s.provider_call_id, "CAxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_eq!(s.from.as_deref(), Some("+919876543210"));
    assert_eq!(s.to.as_deref(), Some("+918047491899"));
    assert_eq!(s.format, Some(AudioFormat::S16LE_8K));
    assert_eq!(s.custom_parameters.get("key1").unwrap(), "value1");
    let WireEvent::Media(m) = exotel::parse(&fixture(P, "media.json")).unwrap() else {
        panic!()
    };
    assert_eq!(m.payload.len(), 1600, "100 ms of 8 kHz 16-bit PCM");
    assert_eq!(
        (m.chunk, m.timestamp_ms, m.sequence),
        (Some(2), Some(200), Some(3))
    );
    assert_eq!(
        exotel::parse(&fixture(P, "dtmf.json")).unwrap(),
        WireEvent::Dtmf {
            digit: '5',
            duration_ms: Some(100)
        }
    );
    assert_eq!(
        exotel::parse(&fixture(P, "mark.json")).unwrap(),
        WireEvent::Mark {
            name: "utt-1".into()
        }
    );
    assert_eq!(
        exotel::parse(&fixture(P, "stop.json")).unwrap(),
        WireEvent::Stop {
            reason: Some("callended".into())
        }
    );
    // Twilio's camelCase is not Exotel's: the stream id is missing.
    let camel = fixture(P, "start.json").replace("stream_sid", "streamSid");
    assert_eq!(
        exotel::parse(&camel),
        Err(StreamError::MissingField("start.stream_sid"))
    );
}

#[test]
fn a_16_khz_stream_with_our_token_in_custom_parameters() {
    let t = Instant::now();
    let mut s = ExotelSession::new(auth_config(), t, t0_utc());
    s.on_text(t, &fixture(P, "connected.json")).unwrap();
    let ev = s.on_text(t, &fixture(P, "start-16k-vaani.json")).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        info.format,
        AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000)
    );
    assert_eq!(info.outbound_format, info.format);
    assert_eq!(info.call_id.as_deref(), Some(CALL_ID));
    let ev = s.on_text(t, &fixture(P, "media.json")).unwrap();
    let [Event::Media(m)] = ev.as_slice() else {
        panic!()
    };
    // The fixture is a 440 Hz tone as little-endian PCM: sample 1 = 8000·sin(2π·440/8000).
    let s1 = i16::from_le_bytes([m.payload[2], m.payload[3]]);
    assert_eq!(
        s1,
        (8000.0 * (2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin()) as i16
    );
    assert_eq!(
        s.on_text(t, &fixture(P, "dtmf.json")).unwrap(),
        vec![Event::Dtmf {
            digit: '5',
            duration_ms: Some(100)
        }]
    );
    assert_eq!(
        s.on_text(t, &fixture(P, "stop.json")).unwrap(),
        vec![Event::Stop {
            reason: Some("callended".into())
        }]
    );
}

#[test]
fn ids_and_sample_rate_may_come_from_the_url() {
    let t = Instant::now();
    let start = json(&fixture(P, "start.json"));
    let mut bare = start.clone();
    bare["start"]
        .as_object_mut()
        .unwrap()
        .remove("media_format");
    bare["start"]["custom_parameters"] = serde_json::json!({});
    let query = format!(
        "?sample-rate=16000&vaani_call_id={CALL_ID}&vaani_token={}",
        token(CALL_ID)
    );
    let mut s = ExotelSession::new(auth_config().with_query(query), t, t0_utc());
    let ev = s.on_text(t, &bare.to_string()).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!()
    };
    assert_eq!(
        info.format,
        AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000)
    );
    assert_eq!(info.call_id.as_deref(), Some(CALL_ID));

    let bad_query = format!("vaani_call_id=call-2&vaani_token={}", token(CALL_ID));
    let mut s = ExotelSession::new(auth_config().with_query(bad_query), t, t0_utc());
    assert!(s.on_text(t, &bare.to_string()).unwrap_err().is_auth());
}

fn started(rate: u32) -> (ExotelSession, Instant) {
    let t = Instant::now();
    let mut s = ExotelSession::new(SessionConfig::unauthenticated(), t, t0_utc());
    let start = fixture(P, "start.json").replace(
        r#""sample_rate": "8000""#,
        &format!(r#""sample_rate": "{rate}""#),
    );
    s.on_text(t, &start).unwrap();
    (s, t)
}

#[test]
fn outbound_frames_are_snake_case() {
    let (mut s, t) = started(8000);
    s.send_audio(t, &[1; 3200]).unwrap();
    s.mark("m1").unwrap();
    let frames = run(&mut s, t, t + Duration::from_secs(1));
    assert_eq!(frames.len(), 2);
    let v = json(&frames[0].1);
    assert_eq!(v["event"], "media");
    assert_eq!(v["stream_sid"], SID);
    assert_eq!(
        unb64(v["media"]["payload"].as_str().unwrap()),
        vec![1; 3200]
    );
    assert_eq!(
        json(&frames[1].1),
        json(&format!(
            r#"{{"event":"mark","stream_sid":"{SID}","mark":{{"name":"m1"}}}}"#
        ))
    );
    s.send_audio(t, &[1; 6400]).unwrap();
    let report = s.clear(t);
    assert!(report.cleared_marks.contains(&"m1".to_string()));
    assert_eq!(
        drain(&mut s, t),
        vec![format!(r#"{{"event":"clear","stream_sid":"{SID}"}}"#)]
    );
}

#[test]
fn a_short_utterance_is_padded_to_the_minimum_and_paced_by_its_length() {
    let (mut s, t) = started(8000);
    s.send_audio(t, &[9; 1000]).unwrap();
    s.flush();
    s.send_audio(t, &[8; 4000]).unwrap();
    s.flush();
    let frames = run(&mut s, t, t + Duration::from_secs(2));
    let sizes: Vec<usize> = frames
        .iter()
        .map(|(_, f)| media_payload(f).unwrap().len())
        .collect();
    assert_eq!(sizes, vec![3200, 4160]);
    let p0 = media_payload(&frames[0].1).unwrap();
    assert_eq!(&p0[..1000], &[9; 1000][..]);
    assert!(p0[1000..].iter().all(|&b| b == 0), "silence padding");
    // 3200 bytes at 8 kHz are 200 ms: the second chunk leaves 60 ms before they end.
    assert_eq!(frames[1].0, Duration::from_millis(140));
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Mark,
    Flush,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..12_000).prop_map(Op::Write),
        1 => (1usize..150_000).prop_map(Op::Write),
        2 => Just(Op::Mark),
        1 => Just(Op::Flush),
        2 => (0u64..500).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever sizes the pipeline writes in, every chunk Exotel receives obeys its rules,
    /// carries the written audio in order, and is never sent more than the lead ahead.
    #[test]
    fn chunks_always_obey_exotel_rules(
        rate in prop_oneof![Just(8000u32), Just(16000), Just(24000)],
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let (mut s, t0) = started(rate);
        let fmt = s.outbound_format().unwrap();
        let mut now = t0;
        let mut written = Vec::new();
        let mut frames = Vec::new();
        let mut byte = 1u8;
        for op in ops {
            match op {
                Op::Write(n) => {
                    let chunk: Vec<u8> = (0..n).map(|_| { byte = byte % 255 + 1; byte }).collect();
                    if s.send_audio(now, &chunk).is_ok() {
                        written.extend(chunk);
                    }
                }
                Op::Mark => s.mark("m").unwrap(),
                Op::Flush => s.flush(),
                Op::Wait(ms) => {
                    let until = now + Duration::from_millis(ms);
                    let from = now;
                    frames.extend(run(&mut s, from, until).into_iter().map(|(at, f)| (from + at, f)));
                    now = until;
                }
            }
        }
        s.flush();
        let from = now;
        frames.extend(run(&mut s, from, now + Duration::from_secs(3600)).into_iter().map(|(at, f)| (from + at, f)));

        let mut received = Vec::new();
        let mut playout_end = t0;
        for (at, f) in &frames {
            let Some(p) = media_payload(f) else { continue };
            prop_assert!(p.len() >= 3200, "{} bytes", p.len());
            prop_assert!(p.len() <= 100_000, "{} bytes", p.len());
            prop_assert_eq!(p.len() % 320, 0);
            let ahead = playout_end.saturating_duration_since(*at);
            prop_assert!(ahead <= Duration::from_millis(60), "{:?} ahead", ahead);
            playout_end = playout_end.max(*at) + fmt.duration_of(p.len());
            received.extend(p.into_iter().filter(|&b| b != 0));
        }
        prop_assert_eq!(received, written);
    }
}
