//! RFC 4475 torture messages against `sip::message`: every valid message parses (and survives a
//! serialize → parse round trip), every invalid one is rejected, and rejected requests get the
//! answer the RFC asks for when one can be addressed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use vaani_media::sip::message::{ErrorKind, SipMessage};
use vaani_media::sip::Method;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.dat"))).unwrap()
}

/// `(name, section, class)` from expected.txt.
fn cases() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir().join("expected.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_message_gets_the_verdict_the_rfc_asks_for() {
    let cases = cases();
    assert_eq!(cases.len(), 49, "RFC 4475 has 49 messages");
    let mut wrong = Vec::new();
    for (name, section, class) in &cases {
        let data = load(name);
        let result = SipMessage::parse(&data);
        match (class.as_str(), &result) {
            ("valid", Ok(m)) => {
                let again = SipMessage::parse(&m.to_bytes())
                    .unwrap_or_else(|e| panic!("{name}: reserialized form fails: {e}"));
                assert_eq!(&again, m, "{name}: round trip changed the message");
            }
            ("invalid", Err(_)) | ("either", _) => {}
            _ => wrong.push(format!("{name} ({section}, {class}): {:?}", result.err())),
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn rejected_requests_are_answered_where_the_rfc_says() {
    // (message, expected kind, expected reply status or None for "drop")
    let expected: &[(&str, ErrorKind, Option<u16>)] = &[
        ("badinv01", ErrorKind::Malformed("Via"), None),
        ("clerr", ErrorKind::BodyTruncated, Some(400)),
        ("ncl", ErrorKind::Malformed("Content-Length"), Some(400)),
        ("scalar02", ErrorKind::Malformed("CSeq"), Some(400)),
        ("scalarlg", ErrorKind::Malformed("CSeq"), None),
        ("quotbal", ErrorKind::Malformed("To"), Some(400)),
        ("ltgtruri", ErrorKind::RequestUri, Some(400)),
        ("lwsruri", ErrorKind::StartLine, Some(400)),
        ("lwsstart", ErrorKind::StartLine, Some(400)),
        ("trws", ErrorKind::StartLine, Some(400)),
        ("escruri", ErrorKind::RequestUri, Some(400)),
        ("regbadct", ErrorKind::Malformed("Contact"), Some(400)),
        ("badaspec", ErrorKind::Malformed("To"), Some(400)),
        ("baddn", ErrorKind::Incomplete, Some(400)),
        ("badvers", ErrorKind::Version, Some(505)),
        ("mismatch01", ErrorKind::CSeqMismatch, Some(400)),
        ("mismatch02", ErrorKind::CSeqMismatch, Some(400)),
        ("bigcode", ErrorKind::StatusCode, None),
        ("insuf", ErrorKind::Missing("From"), Some(400)),
        ("multi01", ErrorKind::Multiple("CSeq"), Some(400)),
        ("mcl01", ErrorKind::Multiple("Content-Length"), Some(400)),
    ];
    let well_formed_reply = [
        "clerr",
        "ncl",
        "ltgtruri",
        "lwsruri",
        "lwsstart",
        "trws",
        "escruri",
        "regbadct",
        "mismatch01",
        "mismatch02",
        "mcl01",
    ];
    for (name, kind, status) in expected {
        let err = SipMessage::parse(&load(name)).unwrap_err();
        assert_eq!(err.kind(), *kind, "{name}");
        assert_eq!(err.reply_status(), *status, "{name}");
        match err.reply("ourtag") {
            None => assert!(status.is_none(), "{name}: no reply built"),
            Some(bytes) => {
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(
                    text.starts_with(&format!("SIP/2.0 {} {kind}\r\n", status.unwrap())),
                    "{name}: {text}"
                );
                assert!(text.contains("\r\nVia: "), "{name}: {text}");
                if *name != "multi01" {
                    assert!(text.contains("\r\nCSeq: "), "{name}: {text}");
                }
                // Where the request's From/To/Call-ID/CSeq were sound, the reply is itself a
                // well-formed response with our To tag.
                if well_formed_reply.contains(name) {
                    let SipMessage::Response(r) =
                        SipMessage::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
                    else {
                        panic!("{name}: reply is not a response")
                    };
                    assert!(r.headers.to.tag().is_some(), "{name}: To tag");
                }
            }
        }
    }
}

#[test]
fn valid_messages_carry_the_values_the_rfc_describes() {
    let SipMessage::Request(r) = SipMessage::parse(&load("wsinv")).unwrap() else {
        panic!()
    };
    let h = &r.headers;
    assert_eq!(h.to.tag(), Some("1918181833n"));
    assert_eq!(h.from.display.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(h.from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards, Some(68));
    assert_eq!(h.cseq.seq, 9);
    assert_eq!(h.via.len(), 3);
    assert_eq!(h.via[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(h.via[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(h.get("Subject"), Some(""));
    assert_eq!(
        h.get("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(h.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(h.contact[0].display.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(
        h.contact[0].param("q").and_then(|p| p.value.as_deref()),
        Some("0.33")
    );
    assert_eq!(r.body.len(), 150);

    let SipMessage::Request(r) = SipMessage::parse(&load("intmeth")).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    assert_eq!(
        r.headers.to.display.as_deref(),
        Some("BEL:\u{7} NUL:\0 DEL:\u{7f}")
    );
    assert_eq!(r.headers.from.tag(), Some("_token~1'+`*%!-."));

    // dblreq: the second request in the datagram is not part of the first.
    let SipMessage::Request(r) = SipMessage::parse(&load("dblreq")).unwrap() else {
        panic!()
    };
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());

    // mpart01: a binary body comes through byte for byte.
    let raw = load("mpart01");
    let m = SipMessage::parse(&raw).unwrap();
    assert_eq!(m.body().len(), 553);
    assert!(raw.ends_with(m.body()));

    // noreason: empty reason phrase.
    let SipMessage::Response(r) = SipMessage::parse(&load("noreason")).unwrap() else {
        panic!()
    };
    assert_eq!((r.status, r.reason.as_str()), (100, ""));

    // inv2543: no branch, no Max-Forwards, no Content-Length (body to the end of the datagram).
    let SipMessage::Request(r) = SipMessage::parse(&load("inv2543")).unwrap() else {
        panic!()
    };
    assert_eq!(r.headers.via[0].branch(), None);
    assert_eq!(r.headers.max_forwards, None);
    assert!(r.body.starts_with(b"v=0"));
}
