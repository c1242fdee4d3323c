//! Hostile input never panics `sip::message`, and what it accepts it writes back faithfully.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use proptest::prelude::*;
use vaani_media::sip::message::{frame_stream, SipMessage, StreamFrame, MAX_MESSAGE_SIZE};

/// Everything a caller might do with a rejected or accepted input.
fn exercise(data: &[u8]) {
    match SipMessage::parse(data) {
        Ok(m) => {
            let bytes = m.to_bytes();
            let again = SipMessage::parse(&bytes)
                .unwrap_or_else(|e| panic!("reserialized form rejected ({e}): {bytes:?}"));
            assert_eq!(again, m, "round trip changed the message");
            if let SipMessage::Request(r) = &m {
                let resp = r.response(400, Some("t"));
                SipMessage::parse(&resp.to_bytes()).expect("our response parses");
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if let Some(reply) = e.reply("tag1") {
                assert!(reply.starts_with(b"SIP/2.0 "));
                assert!(reply.ends_with(b"\r\n\r\n"));
                // No line of the reply is empty before the end: nothing smuggled a CRLF in.
                let text = String::from_utf8_lossy(&reply);
                let head = text.trim_end_matches("\r\n");
                assert!(!head.contains("\r\n\r\n"), "{text}");
            }
        }
    }
    match frame_stream(data) {
        Ok(StreamFrame::Message { len }) => assert!(len <= data.len()),
        Ok(StreamFrame::Keepalive { len, .. }) => assert!(len > 0 && len <= data.len()),
        Ok(StreamFrame::Incomplete) | Err(_) => {}
    }
}

fn torture_messages() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "dat").then(|| std::fs::read(p).ok())?
        })
        .collect();
    out.sort();
    out
}

#[test]
fn malformed_regressions() {
    let cases: &[&[u8]] = &[
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b"INVITE",
        b"INVITE sip:a@b SIP/2.0",
        b"INVITE sip:a@b SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\n Via: folded-without-a-field\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [::1\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: \"\\\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=\"\xff\"\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \xc3\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: ,,,,\r\n\r\n",
        b"SIP/2.0 99999999999999999999 x\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"SIP/\r\n\r\n",
        b"SIP/2.\r\n\r\n",
        b"\xff\xfe INVITE\r\n\r\n",
        b"INVITE sip:%\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContact: *, <sip:x@y>\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;rport=;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: sip:c@d\r\ni: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
    ];
    for c in cases {
        exercise(c);
    }
    // The last one is valid apart from the empty rport value.
    assert!(SipMessage::parse(cases[cases.len() - 1]).is_err());
    // A stream of many pipelined messages is cut correctly.
    let one = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";
    let mut stream = Vec::new();
    for _ in 0..5 {
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(one);
    }
    let mut pos = 0;
    let mut messages = 0;
    while pos < stream.len() {
        match frame_stream(&stream[pos..]).unwrap() {
            StreamFrame::Keepalive { len, ping } => {
                assert!(ping);
                pos += len;
            }
            StreamFrame::Message { len } => {
                let m = SipMessage::parse(&stream[pos..pos + len]).unwrap();
                assert_eq!(&m.body()[..], b"abc");
                pos += len;
                messages += 1;
            }
            StreamFrame::Incomplete => panic!("complete stream"),
        }
    }
    assert_eq!(messages, 5);
    // Oversized input is refused, not scanned forever.
    let big = vec![b'a'; MAX_MESSAGE_SIZE + 10];
    assert!(SipMessage::parse(&big).is_err());
    assert!(frame_stream(&big).is_err());
}

/// Tokens, hosts, display names and parameter values drawn from the characters the grammar
/// allows, including the unusual ones RFC 4475 exercises.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z][a-z0-9]{0,8}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn user() -> impl Strategy<Value = String> {
    "([A-Za-z0-9_.!~*'()&=+$,;?/-]|%[0-9A-F]{2}){1,16}"
}

fn display() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,20}".prop_map(|s| {
            let mut q = String::from("\"");
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push_str("\" ");
            q
        }),
        "[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2} ".prop_map(|s| s),
        "[ -~\u{80}-\u{10ffff}]{0,10}".prop_map(|s| {
            let mut q = String::from("\"");
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        }),
    ]
}

fn name_addr() -> impl Strategy<Value = String> {
    (
        display(),
        user(),
        host(),
        prop::option::of(1u16..),
        token(),
        prop::option::of(token()),
    )
        .prop_map(|(d, u, h, port, tag, p)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let extra = p.map(|p| format!(" ; x-{p} = {p}")).unwrap_or_default();
            format!("{d}<sip:{u}@{h}{port};transport=udp>;tag={tag}{extra}")
        })
}

fn generated_message() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just("INVITE".to_string()), Just("BYE".to_string()), token()],
        user(),
        host(),
        prop::collection::vec((host(), token(), any::<bool>()), 1..4),
        name_addr(),
        name_addr(),
        "[A-Za-z0-9.!%*_+`'~()<>:\\\\\"/?{}-]{1,20}(@[a-z0-9.]{1,10})?",
        any::<u32>(),
        prop::option::of(0u8..=255),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |(method, u, h, vias, from, to, call_id, seq, mf, body, response)| {
                let mut s = if response {
                    "SIP/2.0 183 Session Progress\r\n".to_string()
                } else {
                    format!("{method} sip:{u}@{h} SIP/2.0\r\n")
                };
                for (vh, branch, rport) in vias {
                    let rport = if rport { ";rport" } else { "" };
                    s.push_str(&format!(
                        "Via: SIP/2.0/UDP {vh}:5060;branch=z9hG4bK{branch}{rport}\r\n"
                    ));
                }
                s.push_str(&format!(
                    "From: {from}\r\nTo:\r\n {to}\r\nCall-ID: {call_id}\r\n"
                ));
                s.push_str(&format!("CSeq: {seq} {method}\r\n"));
                if let Some(mf) = mf {
                    s.push_str(&format!("Max-Forwards: {mf}\r\n"));
                }
                s.push_str("X-Custom:  a , b ;c\r\n");
                s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = s.into_bytes();
                bytes.extend_from_slice(&body);
                bytes
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&data);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[ -~\r\n\t]{0,600}") {
        exercise(s.as_bytes());
    }

    #[test]
    fn mutated_torture_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let all = torture_messages();
        let mut data = pick.get(&all).clone();
        for (at, byte, op) in edits {
            if data.is_empty() {
                break;
            }
            let i = at.index(data.len());
            match op {
                0 => data[i] = byte,
                1 => { data.remove(i); }
                2 => data.insert(i, byte),
                _ => data.truncate(i),
            }
        }
        exercise(&data);
    }

    #[test]
    fn generated_messages_parse_and_round_trip(data in generated_message()) {
        let m = SipMessage::parse(&data);
        prop_assert!(m.is_ok(), "{:?}: {}", m.err(), String::from_utf8_lossy(&data));
        exercise(&data);
    }
}
