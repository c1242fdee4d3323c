//! Hostile input: every parser and session survives arbitrary text and arbitrary call
//! sequences, and refuses the malformed regression inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "streams_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use support::*;
use vaani_media::streams::{
    exotel, plivo, telnyx, twilio, Dialect, Event, ExotelSession, PlivoSession, Session,
    SessionConfig, StreamError, TelnyxSession, TwilioSession, WireEvent,
};

type Parser = fn(&str) -> Result<WireEvent, StreamError>;
const PARSERS: [(&str, Parser); 4] = [
    ("twilio", twilio::parse),
    ("exotel", exotel::parse),
    ("plivo", plivo::parse),
    ("telnyx", telnyx::parse),
];

#[test]
fn malformed_inputs_are_errors_for_every_provider() {
    let names = fixture_names("malformed");
    assert!(names.len() >= 10);
    for name in names {
        let text = fixture("malformed", &name);
        for (provider, parse) in PARSERS {
            assert!(parse(&text).is_err(), "{provider} accepted {name}");
        }
    }
}

#[test]
fn unknown_events_are_counted_not_errors() {
    let t = Instant::now();
    let mut s = PlivoSession::new(SessionConfig::unauthenticated(), t, t0_utc());
    assert_eq!(
        s.on_text(t, r#"{"event":"somethingNew","x":[1,2]}"#),
        Ok(vec![])
    );
    assert_eq!(
        s.on_text(t, r#"{"event":"","media":{"payload":"AA=="}}"#),
        Ok(vec![])
    );
    assert_eq!(s.unknown_events(), 2);
}

/// Text that looks like a provider message: a known event name with random bodies, or any
/// string at all.
fn message() -> impl Strategy<Value = String> {
    let event = prop_oneof![
        proptest::sample::select(vec![
            "connected",
            "start",
            "media",
            "dtmf",
            "mark",
            "stop",
            "clearedAudio",
            "playedStream",
            "error",
        ])
        .prop_map(String::from),
        "[a-z]{0,8}",
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        Just("1".to_string()),
        Just("\"1\"".to_string()),
        Just("\"AAAA\"".to_string()),
        Just("{}".to_string()),
        Just("[]".to_string()),
        Just(r#"{"payload":"//79/A=="}"#.to_string()),
        Just(r#"{"digit":"5"}"#.to_string()),
        Just(r#"{"name":"m"}"#.to_string()),
        Just(r#"{"streamSid":"S","callSid":"C","stream_sid":"S","call_sid":"C","callId":"C","streamId":"S","call_control_id":"C"}"#.to_string()),
        "\"[ -~]{0,12}\"",
    ];
    let key = prop_oneof![
        Just("start"),
        Just("media"),
        Just("dtmf"),
        Just("mark"),
        Just("stop"),
        Just("error"),
        Just("name"),
        Just("streamSid"),
        Just("stream_sid"),
        Just("streamId"),
        Just("stream_id"),
        Just("sequenceNumber"),
        Just("sequence_number"),
        Just("extra_headers"),
    ];
    prop_oneof![
        3 => (event, proptest::collection::vec((key, value), 0..5)).prop_map(|(e, kv)| {
            let mut s = format!(r#"{{"event":"{e}""#);
            for (k, v) in kv {
                s.push_str(&format!(r#","{k}":{v}"#));
            }
            s.push('}');
            s
        }),
        1 => ".{0,200}",
        1 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Audio(usize),
    Mark,
    Flush,
    Clear,
    Advance(u64),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => message().prop_map(Op::Text),
        2 => (0usize..5000).prop_map(Op::Audio),
        1 => Just(Op::Mark),
        1 => Just(Op::Flush),
        1 => Just(Op::Clear),
        2 => (0u64..300).prop_map(Op::Advance),
        1 => Just(Op::Close),
    ]
}

/// Run random operations against a session; check the invariants that must always hold.
fn exercise<D: Dialect>(start_fixture: Option<String>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut s: Session<D> = Session::new(SessionConfig::unauthenticated(), t0, t0_utc());
    let mut now = t0;
    if let Some(start) = start_fixture {
        let _ = s.on_text(now, &start);
    }
    let mut last_sent = 0;
    let mut marks = 0u32;
    for op in ops {
        match op {
            Op::Text(text) => {
                if let Ok(events) = s.on_text(now, &text) {
                    for e in events {
                        if let Event::Media(m) = e {
                            prop_assert!(m.payload.len() <= text.len());
                        }
                    }
                }
            }
            Op::Audio(n) => {
                let _ = s.send_audio(now, &vec![7u8; n]);
            }
            Op::Mark => {
                marks += 1;
                let _ = s.mark(format!("m{marks}"));
            }
            Op::Flush => s.flush(),
            Op::Clear => {
                let r = s.clear(now);
                prop_assert!(r.played_estimate_ms <= r.sent_ms);
            }
            Op::Advance(ms) => now += Duration::from_millis(ms),
            Op::Close => {
                let _ = s.on_close(now);
            }
        }
        let mut polled = 0;
        while let Some(frame) = s.poll_transmit(now) {
            prop_assert!(
                serde_json::from_str::<serde_json::Value>(&frame).is_ok(),
                "{}",
                frame
            );
            polled += 1;
            prop_assert!(polled < 10_000);
        }
        if let Some(d) = s.next_deadline() {
            prop_assert!(d > now || s.poll_transmit(now).is_some());
        }
        prop_assert!(s.sent_ms() >= last_sent);
        last_sent = s.sent_ms();
        prop_assert!(s.played_ms() <= s.sent_ms());
        prop_assert!(s.estimated_played_ms(now) <= s.sent_ms());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic_on_arbitrary_strings(s in ".*") {
        for (_, parse) in PARSERS {
            let _ = parse(&s);
        }
    }

    #[test]
    fn parsers_never_panic_on_message_like_text(s in message()) {
        for (_, parse) in PARSERS {
            let _ = parse(&s);
        }
    }

    #[test]
    fn sessions_never_panic_and_keep_their_invariants(
        ops in proptest::collection::vec(op(), 0..40),
        started in any::<bool>(),
    ) {
        let start = |p: &str| started.then(|| fixture(p, "start.json"));
        exercise::<twilio::Twilio>(start("twilio"), ops.clone())?;
        exercise::<exotel::Exotel>(start("exotel"), ops.clone())?;
        exercise::<plivo::Plivo>(start("plivo"), ops.clone())?;
        exercise::<telnyx::Telnyx>(start("telnyx"), ops)?;
    }
}

#[test]
fn session_type_aliases_name_their_provider() {
    use vaani_events::Provider;
    let t = Instant::now();
    let cfg = SessionConfig::unauthenticated;
    assert_eq!(
        TwilioSession::new(cfg(), t, t0_utc()).provider(),
        Provider::Twilio
    );
    assert_eq!(
        ExotelSession::new(cfg(), t, t0_utc()).provider(),
        Provider::Exotel
    );
    assert_eq!(
        PlivoSession::new(cfg(), t, t0_utc()).provider(),
        Provider::Plivo
    );
    assert_eq!(
        TelnyxSession::new(cfg(), t, t0_utc()).provider(),
        Provider::Telnyx
    );
}
