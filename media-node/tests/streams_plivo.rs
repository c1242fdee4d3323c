//! Plivo audio streams: documented messages, the stream ends on socket close, playAudio /
//! checkpoint / clearAudio, ids from the URL, and checkpoints resolved on clear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "streams_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use vaani_media::streams::{
    plivo, AudioFormat, Encoding, Event, PlivoSession, SampleRate, SessionConfig, WireEvent,
};

const P: &str = "plivo";
const STREAM: &str = "87654321-4321-4321-4321-cba987654321";

#[test]
fn every_fixture_parses() {
    for name in fixture_names(P) {
        let ev = plivo::parse(&fixture(P, &name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!matches!(ev, WireEvent::Unknown { .. }), "{name}");
    }
}

#[test]
fn documented_messages_parse_to_their_fields() {
    let WireEvent::Start(s) = plivo::parse(&fixture(P, "start.json")).unwrap() else {
        panic!()
    };
    assert_eq!(s.provider_call_id, "12345678-1234-1234-1234-123456789abc");
    assert_eq!(s.stream_id, STREAM);
    assert_eq!(s.account_id.as_deref(), Some("MAXXXXXXXXXXXXXXXXXX"));
    assert_eq!(s.format, Some(AudioFormat::PCMU));
    assert_eq!(s.custom_parameters.get("userId").unwrap(), "12345");
    assert_eq!(s.custom_parameters.get("sessionId").unwrap(), "abc-xyz");
    let WireEvent::Start(s) = plivo::parse(&fixture(P, "start-l16.json")).unwrap() else {
        panic!()
    };
    assert_eq!(
        s.format,
        Some(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000))
    );

    let WireEvent::Media(m) = plivo::parse(&fixture(P, "media.json")).unwrap() else {
        panic!()
    };
    // sequenceNumber and chunk are JSON numbers here, timestamp a string of Unix ms.
    assert_eq!(
        (m.sequence, m.chunk, m.timestamp_ms),
        (Some(42), Some(41), Some(1_705_312_200_000))
    );
    assert_eq!(m.payload.len(), 160);
    assert_eq!(
        plivo::parse(&fixture(P, "dtmf.json")).unwrap(),
        WireEvent::Dtmf {
            digit: '5',
            duration_ms: None
        }
    );
    for name in ["playedStream.json", "played.json"] {
        assert_eq!(
            plivo::parse(&fixture(P, name)).unwrap(),
            WireEvent::Mark {
                name: "customer greeting audio".into()
            },
            "{name}"
        );
    }
    assert_eq!(
        plivo::parse(&fixture(P, "clearedAudio.json")).unwrap(),
        WireEvent::Cleared
    );
    // Plivo documents no stop event.
    assert!(matches!(
        plivo::parse(r#"{"event":"stop"}"#).unwrap(),
        WireEvent::Unknown { .. }
    ));
}

fn started(start: &str) -> (PlivoSession, Instant) {
    let t = Instant::now();
    let query = format!("vaani_call_id={CALL_ID}&vaani_token={}", token(CALL_ID));
    let mut s = PlivoSession::new(auth_config().with_query(query), t, t0_utc());
    let ev = s.on_text(t, &fixture(P, start)).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(info.call_id.as_deref(), Some(CALL_ID));
    (s, t)
}

#[test]
fn the_session_ends_when_the_socket_closes() {
    let (mut s, t) = started("start.json");
    let ev = s.on_text(t, &fixture(P, "media.json")).unwrap();
    assert!(matches!(ev.as_slice(), [Event::Media(_)]));
    assert_eq!(
        s.on_text(t, &fixture(P, "dtmf.json")).unwrap(),
        vec![Event::Dtmf {
            digit: '5',
            duration_ms: None
        }]
    );
    s.send_audio(t, &[0xFF; 1600]).unwrap();
    assert!(!s.is_ended());
    assert_eq!(s.on_close(t), vec![Event::Closed]);
    assert!(s.is_ended());
    assert_eq!(s.poll_transmit(t), None, "queued audio is dropped");
    assert_eq!(s.on_close(t), vec![]);
}

#[test]
fn play_audio_uses_the_streams_own_format() {
    let (mut s, t) = started("start.json");
    s.send_audio(t, &[0xAA; 160]).unwrap();
    let out = drain(&mut s, t);
    assert_eq!(
        json(&out[0]),
        json(&format!(
            r#"{{"event":"playAudio","media":{{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"{}"}}}}"#,
            b64(&[0xAA; 160])
        ))
    );

    let (mut s, t) = started("start-l16.json");
    s.send_audio(t, &[1; 640 * 3]).unwrap();
    let frames = run(&mut s, t, t + Duration::from_secs(1));
    assert_eq!(frames.len(), 3);
    for (_, f) in &frames {
        let v = json(f);
        assert_eq!(v["media"]["contentType"], "audio/x-l16");
        assert_eq!(v["media"]["sampleRate"], 16000);
        assert_eq!(media_payload(f).unwrap().len(), 640, "20 ms at 16 kHz");
    }
}

#[test]
fn the_default_format_is_l16_at_8_khz() {
    let t = Instant::now();
    let mut s = PlivoSession::new(SessionConfig::unauthenticated(), t, t0_utc());
    let mut start = json(&fixture(P, "start.json"));
    start["start"]
        .as_object_mut()
        .unwrap()
        .remove("mediaFormat");
    let ev = s.on_text(t, &start.to_string()).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!()
    };
    assert_eq!(info.format, AudioFormat::S16LE_8K);
}

#[test]
fn checkpoints_are_acknowledged_by_played_stream() {
    let (mut s, t) = started("start.json");
    s.send_audio(t, &[1; 160]).unwrap();
    s.mark("greeting").unwrap();
    let out = drain(&mut s, t);
    assert_eq!(
        json(&out[1]),
        json(&format!(
            r#"{{"event":"checkpoint","streamId":"{STREAM}","name":"greeting"}}"#
        ))
    );
    let played = format!(r#"{{"event":"playedStream","streamId":"{STREAM}","name":"greeting"}}"#);
    assert_eq!(
        s.on_text(t, &played).unwrap(),
        vec![Event::Mark {
            name: "greeting".into()
        }]
    );
    assert_eq!(s.played_ms(), 20);
}

#[test]
fn clear_audio_resolves_checkpoints_plivo_will_never_acknowledge() {
    let (mut s, t) = started("start.json");
    s.send_audio(t, &[1; 160]).unwrap();
    s.mark("a").unwrap();
    s.send_audio(t, &[1; 160]).unwrap();
    s.mark("b").unwrap();
    s.send_audio(t, &[1; 16000]).unwrap();
    s.mark("c").unwrap();
    let now = t + Duration::from_millis(10);
    run(&mut s, t, now);
    let report = s.clear(now);
    assert_eq!(report.cleared_marks, vec!["a", "b", "c"]);
    assert_eq!(
        drain(&mut s, now),
        vec![format!(r#"{{"event":"clearAudio","streamId":"{STREAM}"}}"#)]
    );
    assert_eq!(
        s.on_text(now, &fixture(P, "clearedAudio.json")).unwrap(),
        vec![Event::Cleared]
    );
    // Should a late acknowledgment still come, it is not "played".
    let late = format!(r#"{{"event":"playedStream","streamId":"{STREAM}","name":"a"}}"#);
    assert_eq!(s.on_text(now, &late).unwrap(), vec![]);
    assert_eq!(s.stale_marks(), 1);
    assert_eq!(s.pending_marks().count(), 0);
}

#[test]
fn a_wrong_token_in_the_url_is_refused() {
    let t = Instant::now();
    let query = format!("vaani_call_id=call-9&vaani_token={}", token(CALL_ID));
    let mut s = PlivoSession::new(auth_config().with_query(query), t, t0_utc());
    assert!(s
        .on_text(t, &fixture(P, "start.json"))
        .unwrap_err()
        .is_auth());
    let mut s = PlivoSession::new(auth_config(), t, t0_utc());
    assert!(s
        .on_text(t, &fixture(P, "start.json"))
        .unwrap_err()
        .is_auth());
}
