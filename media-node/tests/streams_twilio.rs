//! Twilio media streams: documented messages, session flow, pacing, marks, clear, tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "streams_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use vaani_core::token::TokenError;
use vaani_media::streams::{
    twilio, AudioFormat, AuthError, Event, SessionConfig, StreamError, TwilioSession, WireEvent,
};

const MZ: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
const P: &str = "twilio";

fn started(cfg: SessionConfig) -> (TwilioSession, Instant) {
    let t = Instant::now();
    let mut s = TwilioSession::new(cfg, t, t0_utc());
    let ev = s.on_text(t, &fixture(P, "start-vaani.json")).unwrap();
    assert!(matches!(ev.as_slice(), [Event::Start(_)]), "{ev:?}");
    (s, t)
}

#[test]
fn every_fixture_parses() {
    for name in fixture_names(P) {
        let text = fixture(P, &name);
        let ev = twilio::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!matches!(ev, WireEvent::Unknown { .. }), "{name}");
    }
}

#[test]
fn documented_messages_parse_to_their_fields() {
    assert_eq!(
        twilio::parse(&fixture(P, "connected.json")).unwrap(),
        WireEvent::Connected
    );
    let WireEvent::Start(s) = twilio::parse(&fixture(P, "start.json")).unwrap() else {
        panic!("start");
    };
    assert_eq!(s.provider_call_id, "CA5a1ebd8dcc0ff4c2a2ea3fcbbdf3a1c4");
    assert_eq!(s.stream_id, MZ);
    assert_eq!(s.format, Some(AudioFormat::PCMU));
    assert_eq!(s.custom_parameters.get("FirstName").unwrap(), "Jane");
    assert_eq!(s.tracks, vec!["inbound"]);

    let WireEvent::Media(m) = twilio::parse(&fixture(P, "media.json")).unwrap() else {
        panic!("media");
    };
    assert_eq!(m.payload.len(), 160);
    assert_eq!(
        (m.chunk, m.timestamp_ms, m.sequence),
        (Some(1), Some(5), Some(3))
    );
    assert_eq!(m.track.as_deref(), Some("inbound"));

    assert_eq!(
        twilio::parse(&fixture(P, "dtmf.json")).unwrap(),
        WireEvent::Dtmf {
            digit: '1',
            duration_ms: None
        }
    );
    assert_eq!(
        twilio::parse(&fixture(P, "mark.json")).unwrap(),
        WireEvent::Mark {
            name: "my label".into()
        }
    );
    assert_eq!(
        twilio::parse(&fixture(P, "stop.json")).unwrap(),
        WireEvent::Stop { reason: None }
    );
}

#[test]
fn a_whole_call_flows_through_the_session() {
    let t = Instant::now();
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert_eq!(
        s.on_text(t, &fixture(P, "connected.json")).unwrap(),
        vec![Event::Connected]
    );
    let ev = s.on_text(t, &fixture(P, "start-vaani.json")).unwrap();
    let [Event::Start(info)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(info.call_id.as_deref(), Some(CALL_ID));
    assert_eq!(info.token.as_deref(), Some(token(CALL_ID).as_str()));
    assert!(info.custom_parameters.is_empty(), "ours are lifted out");
    assert_eq!(info.provider_call_id, "CA5a1ebd8dcc0ff4c2a2ea3fcbbdf3a1c4");
    assert_eq!(s.stream_id(), Some(MZ));

    let media = fixture(P, "media.json");
    let ev = s.on_text(t, &media).unwrap();
    let [Event::Media(m)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    let expected = unb64(json(&media)["media"]["payload"].as_str().unwrap());
    assert_eq!(m.payload, expected);
    assert_eq!(m.timestamp_ms, Some(5));

    assert_eq!(
        s.on_text(t, &fixture(P, "dtmf.json")).unwrap(),
        vec![Event::Dtmf {
            digit: '1',
            duration_ms: None
        }]
    );
    assert_eq!(
        s.on_text(t, r#"{"event":"futureThing","streamSid":"MZ1"}"#)
            .unwrap(),
        vec![]
    );
    assert_eq!(s.unknown_events(), 1);
    assert_eq!(
        s.on_text(t, &fixture(P, "stop.json")).unwrap(),
        vec![Event::Stop { reason: None }]
    );
    assert!(s.is_ended());
    assert_eq!(s.send_audio(t, &[0xFF; 160]), Err(StreamError::Ended));
    assert_eq!(s.poll_transmit(t), None);
    assert_eq!(s.on_close(t), vec![], "stop already ended it");
}

#[test]
fn one_second_sent_at_once_goes_out_at_fifty_frames_per_second() {
    let (mut s, t) = started(auth_config());
    let audio: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
    s.send_audio(t, &audio).unwrap();
    s.flush();
    let frames = run(&mut s, t, t + Duration::from_secs(5));
    assert_eq!(frames.len(), 50);
    let lead_frames = 3; // 60 ms lead: frames 0..=3 leave at once, then one per 20 ms
    let mut joined = Vec::new();
    for (k, (at, frame)) in frames.iter().enumerate() {
        let due = Duration::from_millis(20 * (k.saturating_sub(lead_frames)) as u64);
        assert_eq!(*at, due, "frame {k}");
        let v = json(frame);
        assert_eq!(v["event"], "media");
        assert_eq!(v["streamSid"], MZ);
        assert_eq!(v.as_object().unwrap().len(), 3, "{frame}");
        let p = media_payload(frame).unwrap();
        assert_eq!(p.len(), 160);
        joined.extend(p);
    }
    assert_eq!(joined, audio);
    // Never more than 50 frames in any one second, and never ahead of playout by more than the lead.
    for (k, (at, _)) in frames.iter().enumerate() {
        let in_window = frames[k..]
            .iter()
            .filter(|(b, _)| *b < *at + Duration::from_secs(1))
            .count();
        assert!(in_window <= 50 + lead_frames, "{in_window}");
        let playout_start = Duration::from_millis(20 * k as u64);
        assert!(playout_start.saturating_sub(*at) <= Duration::from_millis(60));
    }
    assert_eq!(s.sent_ms(), 1000);
}

#[test]
fn a_zero_lead_sends_exactly_one_frame_per_frame_time() {
    let mut cfg = auth_config();
    cfg.lead = Duration::ZERO;
    let (mut s, t) = started(cfg);
    s.send_audio(t, &[0x55; 1600]).unwrap();
    let frames = run(&mut s, t, t + Duration::from_secs(1));
    let times: Vec<u64> = frames.iter().map(|(at, _)| at.as_millis() as u64).collect();
    assert_eq!(times, (0..10).map(|k| k * 20).collect::<Vec<_>>());
}

#[test]
fn a_partial_frame_waits_for_more_audio_or_a_flush() {
    let (mut s, t) = started(auth_config());
    s.send_audio(t, &[1; 100]).unwrap();
    assert_eq!(drain(&mut s, t), Vec::<String>::new());
    assert_eq!(s.next_deadline(), None);
    s.send_audio(t, &[2; 100]).unwrap();
    let out = drain(&mut s, t);
    assert_eq!(out.len(), 1);
    s.flush();
    let out = drain(&mut s, t);
    let tail = media_payload(&out[0]).unwrap();
    assert_eq!(tail.len(), 160, "padded to a whole frame");
    assert_eq!(&tail[..40], &[2; 40]);
    assert!(tail[40..].iter().all(|&b| b == 0xFF), "μ-law silence");
}

#[test]
fn clear_mid_stream_drops_the_rest_and_sends_clear() {
    let (mut s, t) = started(auth_config());
    s.send_audio(t, &[0x11; 8000]).unwrap();
    s.mark("utt-1").unwrap();
    let before = run(&mut s, t, t + Duration::from_millis(200));
    let sent_frames = before.len();
    assert_eq!(sent_frames, 14, "frames 0..=13 by 200 ms");
    let now = t + Duration::from_millis(200);
    let report = s.clear(now);
    assert_eq!(report.cleared_marks, vec!["utt-1"]);
    assert_eq!(report.sent_ms, 280);
    assert_eq!(report.played_estimate_ms, 200);
    // At most lead + one frame was buffered at Twilio when the caller barged in.
    assert!(report.sent_ms - report.played_estimate_ms <= 80);
    let after = run(&mut s, now, now + Duration::from_secs(2));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        json(&after[0].1),
        json(&format!(r#"{{"event":"clear","streamSid":"{MZ}"}}"#))
    );
    assert_eq!(s.queued_ms(), 0);
    assert_eq!(s.pending_marks().count(), 0);
    // New audio after the clear plays at once.
    s.send_audio(now, &[0x22; 160]).unwrap();
    assert_eq!(drain(&mut s, now).len(), 1);
}

#[test]
fn marks_are_sent_after_their_audio_and_resolve_in_order() {
    let (mut s, t) = started(auth_config());
    s.send_audio(t, &[1; 800]).unwrap();
    s.mark("a").unwrap();
    s.send_audio(t, &[2; 800]).unwrap();
    s.mark("b").unwrap();
    s.mark("c").unwrap();
    let frames = run(&mut s, t, t + Duration::from_secs(1));
    let kinds: Vec<String> = frames
        .iter()
        .map(|(_, f)| json(f)["event"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec!["media"; 5];
    expected.push("mark");
    expected.extend(vec!["media"; 5]);
    expected.extend(["mark", "mark"]);
    assert_eq!(kinds, expected);
    assert_eq!(
        json(&frames[5].1),
        json(&format!(
            r#"{{"event":"mark","streamSid":"{MZ}","mark":{{"name":"a"}}}}"#
        ))
    );
    assert_eq!(s.pending_marks().collect::<Vec<_>>(), vec!["a", "b", "c"]);

    let ack = |name: &str| {
        format!(
            r#"{{"event":"mark","sequenceNumber":"9","streamSid":"{MZ}","mark":{{"name":"{name}"}}}}"#
        )
    };
    let now = t + Duration::from_millis(100);
    assert_eq!(
        s.on_text(now, &ack("a")).unwrap(),
        vec![Event::Mark { name: "a".into() }]
    );
    assert_eq!(s.played_ms(), 100);
    // "c" played implies "b" did.
    assert_eq!(
        s.on_text(now, &ack("c")).unwrap(),
        vec![
            Event::Mark { name: "b".into() },
            Event::Mark { name: "c".into() }
        ]
    );
    assert_eq!(s.played_ms(), 200);
    assert_eq!(s.on_text(now, &ack("zzz")).unwrap(), vec![]);
    assert_eq!(s.stale_marks(), 1);
}

#[test]
fn marks_twilio_returns_after_a_clear_are_not_reported_played() {
    let (mut s, t) = started(auth_config());
    s.send_audio(t, &[1; 160]).unwrap();
    s.mark("x").unwrap();
    s.send_audio(t, &[1; 1600]).unwrap();
    s.mark("y").unwrap();
    let now = t + Duration::from_millis(40);
    run(&mut s, t, now);
    assert_eq!(s.pending_marks().collect::<Vec<_>>(), vec!["x", "y"]);
    let report = s.clear(now);
    assert_eq!(report.cleared_marks, vec!["x", "y"]);
    // "x" was already sent, so Twilio returns it after the clear: swallowed.
    let echo = format!(
        r#"{{"event":"mark","sequenceNumber":"7","streamSid":"{MZ}","mark":{{"name":"x"}}}}"#
    );
    assert_eq!(s.on_text(now, &echo).unwrap(), vec![]);
    assert_eq!(s.stale_marks(), 0);
    assert_eq!(s.played_ms(), 0);
    // A new mark of the same name is reported normally.
    s.send_audio(now, &[1; 160]).unwrap();
    s.mark("x").unwrap();
    run(&mut s, now, now + Duration::from_millis(100));
    assert_eq!(
        s.on_text(now, &echo).unwrap(),
        vec![Event::Mark { name: "x".into() }]
    );
}

#[test]
fn audio_queued_before_start_waits_for_it() {
    let t = Instant::now();
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    s.send_audio(t, &[7; 320]).unwrap();
    assert_eq!(s.poll_transmit(t), None);
    assert_eq!(s.next_deadline(), None);
    s.on_text(t, &fixture(P, "start-vaani.json")).unwrap();
    assert_eq!(drain(&mut s, t).len(), 2);
}

fn start_with(params: &str) -> String {
    fixture(P, "start.json").replace(
        r#""FirstName": "Jane""#,
        &format!(r#""FirstName": "Jane", {params}"#),
    )
}

#[test]
fn tokens_are_checked_on_start() {
    let t = Instant::now();
    let good = start_with(&format!(
        r#""vaani_call_id": "{CALL_ID}", "vaani_token": "{}""#,
        token(CALL_ID)
    ));
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert!(s.on_text(t, &good).is_ok());

    // Expired: the stream starts 301 s after the token was issued (virtual time).
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    let late = t + Duration::from_secs(301);
    assert_eq!(
        s.on_text(late, &good),
        Err(StreamError::Auth(AuthError::Token(TokenError::Expired)))
    );
    assert!(s.is_ended());
    assert_eq!(s.on_text(late, &fixture(P, "media.json")).unwrap(), vec![]);

    // A token issued for another call.
    let wrong = start_with(&format!(
        r#""vaani_call_id": "{CALL_ID}", "vaani_token": "{}""#,
        token("call-2")
    ));
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    let err = s.on_text(t, &wrong).unwrap_err();
    assert_eq!(
        err,
        StreamError::Auth(AuthError::Token(TokenError::BadSignature))
    );
    assert!(err.is_auth());
    assert!(!err.to_string().contains(&token("call-2")));

    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert_eq!(
        s.on_text(t, &fixture(P, "start.json")),
        Err(StreamError::Auth(AuthError::MissingCallId))
    );
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert_eq!(
        s.on_text(t, &start_with(r#""vaani_call_id": "call-1""#)),
        Err(StreamError::Auth(AuthError::MissingToken))
    );
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert!(matches!(
        s.on_text(
            t,
            &start_with(r#""vaani_call_id": "call-1", "vaani_token": "garbage""#)
        ),
        Err(StreamError::Auth(AuthError::Token(TokenError::Malformed)))
    ));

    // Without a TokenAuth (local development) anything starts.
    let mut s = TwilioSession::new(SessionConfig::unauthenticated(), t, t0_utc());
    assert!(s.on_text(t, &fixture(P, "start.json")).is_ok());
}

#[test]
fn protocol_violations_are_errors() {
    let t = Instant::now();
    let mut s = TwilioSession::new(auth_config(), t, t0_utc());
    assert_eq!(
        s.on_text(t, &fixture(P, "media.json")),
        Err(StreamError::NotStarted("media"))
    );
    assert_eq!(
        s.on_text(t, &fixture(P, "mark.json")),
        Err(StreamError::NotStarted("mark"))
    );
    s.on_text(t, &fixture(P, "start-vaani.json")).unwrap();
    assert_eq!(
        s.on_text(t, &fixture(P, "start-vaani.json")),
        Err(StreamError::DuplicateStart)
    );
    assert!(matches!(s.on_text(t, "{"), Err(StreamError::Json(_))));
    let mut cfg = auth_config();
    cfg.max_message_bytes = 64;
    let mut s = TwilioSession::new(cfg, t, t0_utc());
    assert_eq!(
        s.on_text(t, &fixture(P, "start.json")).map(|_| ()),
        Err(StreamError::TooLarge(fixture(P, "start.json").len()))
    );
    let unsupported = fixture(P, "start.json").replace("audio/x-mulaw", "audio/x-l16");
    let mut s = TwilioSession::new(SessionConfig::unauthenticated(), t, t0_utc());
    assert!(matches!(
        s.on_text(t, &unsupported),
        Err(StreamError::UnsupportedFormat(_))
    ));
}

#[test]
fn close_without_stop_reports_closed() {
    let (mut s, t) = started(auth_config());
    assert_eq!(s.on_close(t), vec![Event::Closed]);
    assert!(s.is_ended());
}

#[test]
fn the_outbound_queue_is_bounded() {
    let mut cfg = auth_config();
    cfg.max_queued_bytes = 1000;
    let (mut s, t) = started(cfg);
    s.send_audio(t, &[0; 1000]).unwrap();
    assert_eq!(s.send_audio(t, &[0; 1]), Err(StreamError::OutboundFull));
}
