//! The UAS core in virtual time: INVITE → 100 → 200 (retransmitted until ACK, BYE after
//! 64·T1), BYE, CANCEL/487, re-INVITE, INFO DTMF, OPTIONS, 405/501/416/420/481/482/500,
//! the source allowlist, malformed datagrams, local hangup, and a property test that hostile
//! input never panics and every call's state goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use vaani_media::sip::message::{Response, SipMessage};
use vaani_media::sip::transaction::Timers;
use vaani_media::sip::uas::{CallHandle, EndReason, Uas, UasConfig, UasEvent, UasOutput};
use vaani_media::sip::{Host, Method, SipUri};

const MS: fn(u64) -> Duration = Duration::from_millis;
const UAC: &str = "192.0.2.10:5070";

fn uac() -> SocketAddr {
    UAC.parse().unwrap()
}

fn config() -> UasConfig {
    let mut contact = SipUri::new(Host::V4("192.0.2.1".parse().unwrap()));
    contact.user = Some("vaani".into());
    contact.port = Some(5060);
    UasConfig {
        contact,
        allow: vec!["192.0.2.0/24".parse().unwrap(), "::1/128".parse().unwrap()],
        timers: Timers {
            trying_delay: Duration::ZERO,
            ..Timers::default()
        },
        seed: 42,
        server: "vaani".into(),
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

/// A request from the UAC. `to_tag` puts it in a dialog; `extra` adds header lines.
fn req(
    method: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:vaani@192.0.2.1>;tag={t}"),
        None => "<sip:vaani@192.0.2.1>".into(),
    };
    // INVITE bodies are SDP; other bodies bring their Content-Type in `extra`.
    let ct = if method == "INVITE" && !body.is_empty() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "{method} sip:vaani@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {UAC};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=alice\r\n\
         To: {to}\r\n\
         Call-ID: call-1@192.0.2.10\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@{UAC}>\r\n\
         {extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn invite(branch: &str) -> String {
    req("INVITE", branch, 1, None, "", SDP)
}

/// What came out, with the virtual time it came out at.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Out {
    Sent(Duration, SocketAddr, SipMessage),
    /// Bytes our parser refuses: only the 400 for a request whose broken fields it copies.
    Raw(SocketAddr, Vec<u8>),
    Event(UasEvent),
}

struct H {
    uas: Uas,
    t0: Instant,
    now: Instant,
    log: Vec<Out>,
}

impl H {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(cfg: UasConfig) -> Self {
        let t0 = Instant::now();
        H {
            uas: Uas::new(cfg),
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.uas.poll_output() {
            let t = self.now - self.t0;
            self.log.push(match o {
                UasOutput::Transmit { to, data } => match SipMessage::parse(&data) {
                    Ok(m) => Out::Sent(t, to, m),
                    Err(_) => Out::Raw(to, data),
                },
                UasOutput::Event(e) => Out::Event(e),
            });
        }
    }

    fn recv_from(&mut self, text: &str, from: SocketAddr) {
        self.uas.receive(self.now, text.as_bytes(), from);
        self.drain();
    }

    fn recv(&mut self, text: &str) {
        self.recv_from(text, uac());
    }

    fn at(&mut self, d: Duration) {
        self.run_until(d);
    }

    fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        while let Some(d) = self.uas.next_deadline().filter(|d| *d <= end) {
            assert!(d >= self.now, "deadline in the past");
            self.now = d;
            self.uas.handle_timeout(d);
            self.drain();
        }
        self.now = end;
    }

    fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.log)
    }

    fn responses(&mut self) -> Vec<Response> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Out::Sent(_, _, SipMessage::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status).collect()
    }

    /// INVITE, Incoming, accept; returns the call and our tag, log cleared.
    fn answered(&mut self) -> (CallHandle, String) {
        self.recv(&invite("z9hG4bKinv1"));
        let call = self.incoming().expect("incoming call");
        self.uas
            .accept(self.now, call, Bytes::from_static(b"v=0\r\n"))
            .unwrap();
        self.drain();
        let ok = self
            .responses()
            .into_iter()
            .find(|r| r.status == 200)
            .unwrap();
        (call, ok.headers.to.tag().unwrap().to_string())
    }

    fn confirmed(&mut self) -> (CallHandle, String) {
        let (call, tag) = self.answered();
        self.recv(&req("ACK", "z9hG4bKack1", 1, Some(&tag), "", ""));
        self.take();
        (call, tag)
    }

    fn incoming(&self) -> Option<CallHandle> {
        self.log.iter().find_map(|o| match o {
            Out::Event(UasEvent::Incoming { call, .. }) => Some(*call),
            _ => None,
        })
    }

    fn events(&self) -> Vec<UasEvent> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Out::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn invite_answer_ack_bye() {
    let mut h = H::new();
    h.recv(&invite("z9hG4bKinv1"));
    // The call for the driver, and 100 Trying at once.
    let Out::Sent(_, to, SipMessage::Response(trying)) = &h.log[1] else {
        panic!("{:?}", h.log)
    };
    assert_eq!((trying.status, *to), (100, uac()));
    assert!(trying.headers.to.tag().is_none());
    let call = h.incoming().unwrap();
    let Out::Event(UasEvent::Incoming { invite, source, .. }) = &h.log[0] else {
        panic!()
    };
    assert_eq!(*source, uac());
    assert_eq!(invite.body.as_ref(), SDP.as_bytes());
    h.take();
    assert_eq!(h.uas.active_calls(), 1);

    h.uas
        .accept(h.now, call, Bytes::from_static(b"v=0\r\n"))
        .unwrap();
    h.drain();
    let out = h.take();
    let Out::Sent(_, to, SipMessage::Response(ok)) = &out[0] else {
        panic!()
    };
    assert_eq!((ok.status, *to), (200, uac()));
    let tag = ok.headers.to.tag().unwrap().to_string();
    assert_eq!(
        ok.headers.contact[0].to_string(),
        "<sip:vaani@192.0.2.1:5060>"
    );
    assert_eq!(ok.headers.content_type.as_deref(), Some("application/sdp"));
    assert_eq!(ok.body.as_ref(), b"v=0\r\n");
    assert_eq!(ok.headers.get("Server"), Some("vaani"));

    h.recv(&req("ACK", "z9hG4bKack1", 1, Some(&tag), "", ""));
    assert_eq!(
        h.events(),
        [UasEvent::Confirmed {
            call,
            body: Bytes::new()
        }]
    );
    h.take();
    // Nothing is retransmitted after the ACK.
    h.at(Duration::from_secs(40));
    assert!(h.take().iter().all(|o| !matches!(o, Out::Sent(..))));

    h.recv(&req("BYE", "z9hG4bKbye1", 2, Some(&tag), "", ""));
    assert_eq!(
        h.events(),
        [UasEvent::Ended {
            call,
            reason: EndReason::RemoteBye
        }]
    );
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.uas.active_calls(), 0);
    assert_eq!(h.uas.calls_held(), 0);
    // A retransmitted BYE gets the same 200 from its transaction; a late one after it ended 481.
    h.recv(&req("BYE", "z9hG4bKbye1", 2, Some(&tag), "", ""));
    assert_eq!(h.statuses(), [200]);
    h.recv(&req("BYE", "z9hG4bKbye2", 3, Some(&tag), "", ""));
    assert_eq!(h.statuses(), [481]);
}

#[test]
fn record_route_is_copied_into_the_2xx() {
    let mut h = H::new();
    let rr = "Record-Route: <sip:192.0.2.50;lr>\r\n";
    h.recv(&req("INVITE", "z9hG4bKrr", 1, None, rr, SDP));
    let call = h.incoming().unwrap();
    h.uas.accept(h.now, call, Bytes::new()).unwrap();
    h.drain();
    let ok = h.responses().into_iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.headers.record_route.len(), 1);
    assert!(ok.headers.content_type.is_none());
}

#[test]
fn two_xx_is_retransmitted_until_ack_then_bye_after_64_t1() {
    let mut h = H::new();
    let (call, tag) = h.answered();
    h.at(MS(32_200));
    let sent: Vec<(Duration, String)> = h
        .log
        .iter()
        .filter_map(|o| match o {
            Out::Sent(t, _, SipMessage::Response(r)) => Some((*t, format!("{}", r.status))),
            Out::Sent(t, to, SipMessage::Request(r)) => {
                assert_eq!(*to, uac(), "BYE goes to the Contact");
                Some((*t, r.method.to_string()))
            }
            _ => None,
        })
        .collect();
    // T1 doubling to T2: 0.5, 1.5, 3.5, 7.5, then every 4 s; 64·T1 = 32 s: BYE.
    let expected: Vec<(Duration, String)> = [
        500u64, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .iter()
    .map(|ms| (MS(*ms), "200".to_string()))
    .chain([(MS(32_000), "BYE".to_string())])
    .collect();
    assert_eq!(sent, expected);
    let bye = h
        .log
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, _, SipMessage::Request(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(bye.uri.to_string(), format!("sip:alice@{UAC}"));
    assert_eq!(bye.headers.from.tag(), Some(tag.as_str()));
    assert_eq!(bye.headers.to.tag(), Some("alice"));
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=408;text=\"ACK timeout\"")
    );
    assert!(h.events().contains(&UasEvent::Ended {
        call,
        reason: EndReason::AckTimeout
    }));
    // The BYE's 200 clears the call's state.
    assert_eq!(h.uas.calls_held(), 1);
    let ok = bye.response(200, None);
    h.recv(std::str::from_utf8(&ok.to_bytes()).unwrap());
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn retransmitted_invite_after_the_2xx_is_absorbed() {
    let mut h = H::new();
    let (_, tag) = h.answered();
    h.recv(&invite("z9hG4bKinv1"));
    assert!(h.take().is_empty(), "the Accepted transaction absorbs it");
    h.recv(&req("ACK", "z9hG4bKack1", 1, Some(&tag), "", ""));
    assert_eq!(h.events().len(), 1);
}

#[test]
fn cancel_before_the_answer() {
    let mut h = H::new();
    h.recv(&invite("z9hG4bKinv1"));
    let call = h.incoming().unwrap();
    h.uas.ring(h.now, call).unwrap();
    h.drain();
    let ringing = h.responses().into_iter().find(|r| r.status == 180).unwrap();
    let tag = ringing.headers.to.tag().unwrap().to_string();
    h.recv(&req("CANCEL", "z9hG4bKinv1", 1, None, "", ""));
    let rs = h.responses();
    let got: Vec<(u16, Method, Option<String>)> = rs
        .iter()
        .map(|r| {
            (
                r.status,
                r.headers.cseq.method.clone(),
                r.headers.to.tag().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (200, Method::Cancel, Some(tag.clone())),
            (487, Method::Invite, Some(tag.clone()))
        ]
    );
    // The events were taken with the responses; check the call ended.
    assert_eq!(h.uas.active_calls(), 0);
    // The 487 is retransmitted until its ACK (Timer G), which the transaction absorbs.
    h.at(MS(600));
    assert_eq!(h.statuses(), [487]);
    h.recv(&req("ACK", "z9hG4bKinv1", 1, Some(&tag), "", ""));
    h.at(Duration::from_secs(10));
    assert!(h.take().is_empty());
    // Accepting now is refused.
    assert!(h.uas.accept(h.now, call, Bytes::new()).is_err());
}

#[test]
fn cancel_events_and_edge_cases() {
    let mut h = H::new();
    h.recv(&invite("z9hG4bKinv1"));
    let call = h.incoming().unwrap();
    h.take();
    h.recv(&req("CANCEL", "z9hG4bKinv1", 1, None, "", ""));
    assert!(h.events().contains(&UasEvent::Ended {
        call,
        reason: EndReason::Cancelled
    }));
    // A CANCEL that matches nothing.
    let mut h = H::new();
    h.recv(&req("CANCEL", "z9hG4bKnothing", 1, None, "", ""));
    assert_eq!(h.statuses(), [481]);
    // After the answer the CANCEL changes nothing.
    let mut h = H::new();
    let (call, _) = h.answered();
    h.recv(&req("CANCEL", "z9hG4bKinv1", 1, None, "", ""));
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.uas.active_calls(), 1);
    let _ = call;
}

#[test]
fn options_and_methods_we_do_not_do() {
    let mut h = H::new();
    h.recv(&req("OPTIONS", "z9hG4bKo", 1, None, "", ""));
    let r = h.responses();
    assert_eq!(r[0].status, 200);
    assert_eq!(
        r[0].headers.get("Allow"),
        Some("INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY")
    );
    assert!(r[0].headers.to.tag().is_some());
    h.recv(&req("REGISTER", "z9hG4bKr", 1, None, "", ""));
    let r = h.responses();
    assert_eq!(r[0].status, 405);
    assert!(r[0].headers.get("Allow").is_some());
    h.recv(&req("FOO", "z9hG4bKf", 1, None, "", ""));
    assert_eq!(h.statuses(), [501]);
    let tel = req("OPTIONS", "z9hG4bKt", 1, None, "", "").replacen(
        "OPTIONS sip:vaani@192.0.2.1:5060",
        "OPTIONS tel:+911234567890",
        1,
    );
    h.recv(&tel);
    assert_eq!(h.statuses(), [416]);
    h.recv(&req(
        "INVITE",
        "z9hG4bKq",
        1,
        None,
        "Require: 100rel, timer\r\n",
        SDP,
    ));
    let r = h.responses();
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 420]);
    assert_eq!(r[1].headers.get("Unsupported"), Some("100rel, timer"));
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn invite_checks() {
    let mut h = H::new();
    // No Contact.
    let no_contact = invite("z9hG4bKnc").replace(&format!("Contact: <sip:alice@{UAC}>\r\n"), "");
    h.recv(&no_contact);
    let r = h.responses();
    assert_eq!(r[1].status, 400);
    assert_eq!(r[1].reason, "Missing Contact Header");
    // Not SDP.
    let text = invite("z9hG4bKct").replace("application/sdp", "text/plain");
    h.recv(&text);
    let r = h.responses();
    assert_eq!(r[1].status, 415);
    assert_eq!(r[1].headers.get("Accept"), Some("application/sdp"));
    // Unknown dialog.
    h.recv(&req("INVITE", "z9hG4bKre", 2, Some("nosuch"), "", SDP));
    assert_eq!(h.statuses(), [100, 481]);
    // Merged request: the same INVITE by another path.
    let mut h = H::new();
    h.recv(&invite("z9hG4bKpath1"));
    h.take();
    h.recv(&invite("z9hG4bKpath2"));
    assert_eq!(h.statuses(), [100, 482]);
    assert_eq!(h.uas.active_calls(), 1);
}

#[test]
fn allowlist_refuses_statelessly() {
    let mut h = H::new();
    let stranger: SocketAddr = "203.0.113.5:5060".parse().unwrap();
    h.recv_from(&invite("z9hG4bKx"), stranger);
    let out = h.take();
    assert_eq!(out.len(), 1);
    let Out::Sent(_, to, SipMessage::Response(r)) = &out[0] else {
        panic!()
    };
    assert_eq!(r.status, 403);
    // No rport: to `received` (the source IP) and the Via's port (§18.2.2).
    assert_eq!(*to, "203.0.113.5:5070".parse::<SocketAddr>().unwrap());
    assert_eq!(h.uas.calls_held(), 0);
    assert!(h.uas.next_deadline().is_none(), "no transaction kept");
    // With rport: to the source.
    let rport =
        invite("z9hG4bKy").replace(&format!("{UAC};branch"), &format!("{UAC};rport;branch"));
    h.recv_from(&rport, stranger);
    let Out::Sent(_, to, _) = &h.take()[0] else {
        panic!()
    };
    assert_eq!(*to, stranger);
    // ACKs, responses and garbage from there: nothing.
    h.recv_from(&req("ACK", "z9hG4bKa", 1, Some("t"), "", ""), stranger);
    h.recv_from("SIP/2.0 200 OK\r\n\r\n", stranger);
    h.recv_from("garbage", stranger);
    assert!(h.take().is_empty());
    assert_eq!(h.uas.counters().forbidden, 3);
    // IPv4-mapped IPv6 sources are checked as IPv4.
    let mapped: SocketAddr = "[::ffff:192.0.2.10]:5070".parse().unwrap();
    h.recv_from(&req("OPTIONS", "z9hG4bKm", 1, None, "", ""), mapped);
    assert_eq!(h.statuses(), [200]);
}

#[test]
fn rport_and_via_addressing() {
    let mut h = H::new();
    let nat: SocketAddr = "192.0.2.77:40000".parse().unwrap();
    let rport =
        invite("z9hG4bKn").replace(&format!("{UAC};branch"), &format!("{UAC};rport;branch"));
    h.recv_from(&rport, nat);
    let call = h.incoming().unwrap();
    let out = h.take();
    let Out::Sent(_, to, SipMessage::Response(trying)) = &out[1] else {
        panic!()
    };
    assert_eq!(*to, nat);
    let via = trying.headers.top_via().unwrap();
    assert_eq!(via.received(), Some(nat.ip()));
    assert_eq!(via.rport(), Some(Some(40000)));
    h.uas.accept(h.now, call, Bytes::new()).unwrap();
    h.drain();
    h.at(MS(600));
    // First copy and the retransmission both go to the NAT's address.
    let tos: Vec<SocketAddr> = h
        .take()
        .iter()
        .filter_map(|o| match o {
            Out::Sent(_, to, _) => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(tos, [nat, nat]);
}

#[test]
fn malformed_datagrams() {
    let mut h = H::new();
    // A request with a usable Via but a broken header: 400 to the source.
    let bad = invite("z9hG4bKbad").replace("CSeq: 1 INVITE", "CSeq: x INVITE");
    h.recv(&bad);
    let out = h.take();
    let [Out::Raw(to, data)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*to, uac());
    let text = String::from_utf8_lossy(data);
    assert!(
        text.starts_with("SIP/2.0 400 Malformed CSeq Header\r\n"),
        "{text}"
    );
    assert!(
        text.contains("CSeq: x INVITE\r\n"),
        "copied so the client can match it"
    );
    // Keep-alives, empty, binary, broken responses: nothing.
    for junk in [
        &b"\r\n\r\n"[..],
        b"",
        b"\x00\xff\x10",
        b"SIP/2.0 999 Huh\r\n\r\n",
        b"INVITE\r\n\r\n",
    ] {
        h.uas.receive(h.now, junk, uac());
        h.drain();
    }
    assert!(h.take().is_empty());
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn in_dialog_cseq_and_unknown_dialogs() {
    let mut h = H::new();
    let (_, tag) = h.confirmed();
    h.recv(&req("INFO", "z9hG4bKi1", 5, Some(&tag), "", ""));
    assert_eq!(h.statuses(), [200]);
    h.recv(&req("BYE", "z9hG4bKb1", 4, Some(&tag), "", ""));
    assert_eq!(h.statuses(), [500], "CSeq went back");
    h.recv(&req("BYE", "z9hG4bKb2", 6, Some("other"), "", ""));
    assert_eq!(h.statuses(), [481]);
    h.recv(&req("BYE", "z9hG4bKb3", 6, Some(&tag), "", ""));
    assert_eq!(h.statuses(), [200]);
}

#[test]
fn info_dtmf() {
    let mut h = H::new();
    let (call, tag) = h.confirmed();
    let relay = "Content-Type: application/dtmf-relay\r\n";
    h.recv(&req(
        "INFO",
        "z9hG4bKi1",
        2,
        Some(&tag),
        relay,
        "Signal=5\r\nDuration=160\r\n",
    ));
    assert_eq!(
        h.events(),
        [UasEvent::InfoDtmf {
            call,
            digit: '5',
            duration_ms: Some(160)
        }]
    );
    assert_eq!(h.statuses(), [200]);
    h.recv(&req(
        "INFO",
        "z9hG4bKi2",
        3,
        Some(&tag),
        "Content-Type: application/dtmf\r\n",
        "#",
    ));
    assert!(matches!(
        h.events()[..],
        [UasEvent::InfoDtmf { digit: '#', .. }]
    ));
    assert_eq!(h.statuses(), [200]);
    h.recv(&req(
        "INFO",
        "z9hG4bKi3",
        4,
        Some(&tag),
        relay,
        "Signal=x\r\n",
    ));
    assert_eq!(h.statuses(), [400]);
    h.recv(&req(
        "INFO",
        "z9hG4bKi4",
        5,
        Some(&tag),
        "Content-Type: text/plain\r\n",
        "hi",
    ));
    assert_eq!(h.statuses(), [415]);
    h.recv(&req(
        "INFO",
        "z9hG4bKi5",
        6,
        Some(&tag),
        "Info-Package: foo\r\n",
        "",
    ));
    let r = h.responses();
    assert_eq!(
        (r[0].status, r[0].reason.as_str()),
        (469, "Bad Info Package")
    );
}

#[test]
fn reinvite_hold_and_pending_rules() {
    let mut h = H::new();
    let (call, tag) = h.confirmed();
    let hold = SDP.replace("m=audio", "a=sendonly\r\nm=audio");
    h.recv(&req("INVITE", "z9hG4bKre1", 2, Some(&tag), "", &hold));
    let events = h.events();
    assert!(matches!(&events[..], [UasEvent::Reinvite { call: c, .. }] if *c == call));
    assert_eq!(h.statuses(), [100]);
    // A second re-INVITE while the first waits: 500 with Retry-After.
    h.recv(&req("INVITE", "z9hG4bKre2", 3, Some(&tag), "", SDP));
    let r = h.responses();
    assert_eq!(r[1].status, 500);
    assert!(r[1].headers.get("Retry-After").is_some());
    // Answer the first; until its ACK a new one gets 491.
    h.uas
        .accept(h.now, call, Bytes::from_static(b"v=0\r\n"))
        .unwrap();
    h.drain();
    let ok = h.responses().into_iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.headers.to.tag(), Some(tag.as_str()));
    assert_eq!(ok.headers.cseq.seq, 2);
    h.recv(&req("INVITE", "z9hG4bKre3", 4, Some(&tag), "", SDP));
    assert_eq!(h.statuses(), [100, 491]);
    h.recv(&req("ACK", "z9hG4bKack2", 2, Some(&tag), "", ""));
    h.at(Duration::from_secs(5));
    // (the 491 is retransmitted by its transaction: it got no ACK here)
    assert!(
        h.responses().iter().all(|r| r.status != 200),
        "no more 2xx after the ACK"
    );
    // Refusing a re-INVITE keeps the call.
    h.recv(&req("INVITE", "z9hG4bKre4", 5, Some(&tag), "", SDP));
    h.uas.reject(h.now, call, 488, &[]).unwrap();
    h.drain();
    assert_eq!(h.statuses(), [100, 488]);
    assert_eq!(h.uas.active_calls(), 1);
    // A BYE with a re-INVITE pending: 200, and 487 for the re-INVITE.
    h.recv(&req("INVITE", "z9hG4bKre5", 6, Some(&tag), "", SDP));
    h.take();
    h.recv(&req("BYE", "z9hG4bKbye", 7, Some(&tag), "", ""));
    let mut s = h.statuses();
    s.sort();
    assert_eq!(s, [200, 487]);
}

#[test]
fn local_hangup_in_each_state() {
    // Confirmed: BYE with Reason, then the state goes with the BYE's 200.
    let mut h = H::new();
    let (call, _) = h.confirmed();
    h.uas.hangup(h.now, call, 408, "RTP timeout").unwrap();
    h.drain();
    let out = h.take();
    let bye = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, to, SipMessage::Request(r)) if r.method == Method::Bye => {
                assert_eq!(*to, uac());
                Some(r.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=408;text=\"RTP timeout\"")
    );
    assert!(bye.headers.top_via().unwrap().rport().is_some());
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended {
            reason: EndReason::LocalHangup { .. },
            ..
        })
    )));
    assert_eq!(h.uas.active_calls(), 0);
    assert_eq!(h.uas.calls_held(), 1);
    // BYE retransmitted (Timer E) until answered.
    h.at(MS(600));
    assert_eq!(h.take().len(), 1);
    let ok = bye.response(200, None);
    h.recv(std::str::from_utf8(&ok.to_bytes()).unwrap());
    assert_eq!(h.uas.calls_held(), 0);

    // Answered but not acknowledged: the BYE waits for the ACK (§15).
    let mut h = H::new();
    let (call, tag) = h.answered();
    h.uas.hangup(h.now, call, 200, "agent hung up").unwrap();
    h.drain();
    let out = h.take();
    assert!(out
        .iter()
        .all(|o| !matches!(o, Out::Sent(_, _, SipMessage::Request(_)))));
    h.recv(&req("ACK", "z9hG4bKack1", 1, Some(&tag), "", ""));
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Request(r)) if r.method == Method::Bye)));
    assert!(out
        .iter()
        .all(|o| !matches!(o, Out::Event(UasEvent::Confirmed { .. }))));

    // Not answered: a final response.
    let mut h = H::new();
    h.recv(&invite("z9hG4bKinv1"));
    let call = h.incoming().unwrap();
    h.take();
    h.uas
        .hangup(h.now, call, 503, "node shutting down")
        .unwrap();
    h.drain();
    assert_eq!(h.statuses(), [503]);
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn reject_with_extra_headers() {
    let mut h = H::new();
    h.recv(&invite("z9hG4bKinv1"));
    let call = h.incoming().unwrap();
    h.take();
    assert!(h.uas.reject(h.now, call, 200, &[]).is_err());
    h.uas
        .reject(h.now, call, 503, &[("Retry-After", "5")])
        .unwrap();
    h.drain();
    let events = h.events();
    let r = h.responses();
    assert_eq!(r[0].status, 503);
    assert_eq!(r[0].headers.get("Retry-After"), Some("5"));
    assert_eq!(
        events,
        [UasEvent::Ended {
            call,
            reason: EndReason::Rejected(503)
        }]
    );
}

fn arb_datagram() -> impl Strategy<Value = Vec<u8>> {
    let templates = vec![
        invite("z9hG4bKp1"),
        req("ACK", "z9hG4bKp2", 1, Some("x"), "", ""),
        req("BYE", "z9hG4bKp3", 2, Some("x"), "", ""),
        req("CANCEL", "z9hG4bKp1", 1, None, "", ""),
        req(
            "INFO",
            "z9hG4bKp4",
            3,
            Some("x"),
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=1",
        ),
        req("OPTIONS", "z9hG4bKp5", 1, None, "", ""),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        (
            proptest::sample::select(templates),
            any::<u16>(),
            any::<u8>(),
            0usize..8
        )
            .prop_map(|(t, pos, byte, kind)| {
                let mut b = t.into_bytes();
                let i = pos as usize % b.len();
                match kind {
                    0 => b[i] = byte,
                    1 => b.truncate(i),
                    2 => b.insert(i, byte),
                    _ => {}
                }
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dtmf_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = vaani_media::sip::uas::parse_dtmf_relay(&body);
        let _ = vaani_media::sip::uas::parse_dtmf(&body);
    }

    /// Hostile datagrams never panic, and with the driver answering every call, all state is
    /// gone once the timers have run out and every call was hung up.
    #[test]
    fn never_panics_and_never_leaks(
        datagrams in proptest::collection::vec(arb_datagram(), 1..12),
        decisions in proptest::collection::vec(0u8..4, 12),
    ) {
        let mut h = H::new();
        let mut d = decisions.into_iter().cycle();
        for (i, data) in datagrams.iter().enumerate() {
            let t = h.now - h.t0 + MS(10 * i as u64);
            h.run_until(t);
            h.uas.receive(h.now, data, uac());
            h.drain();
            for e in h.events() {
                if let UasEvent::Incoming { call, .. } = e {
                    let _ = match d.next().unwrap_or(0) {
                        0 => h.uas.accept(h.now, call, Bytes::from_static(b"v=0\r\n")),
                        1 => h.uas.reject(h.now, call, 486, &[]),
                        2 => h.uas.ring(h.now, call),
                        _ => h.uas.hangup(h.now, call, 200, "x"),
                    };
                }
            }
            h.take();
        }
        h.uas.hangup_all(h.now, 503, "end");
        h.drain();
        h.run_until(Duration::from_secs(200));
        prop_assert_eq!(h.uas.active_calls(), 0);
        prop_assert_eq!(h.uas.calls_held(), 0);
        prop_assert!(h.uas.next_deadline().is_none());
    }
}

/// A call over TCP: every response, the 2xx's retransmissions and our BYE go back to the
/// connection's address (not the Via's sent-by port), the BYE's Via says TCP, and a request
/// from outside the allowlist gets its 403 on the connection too.
#[test]
fn tcp_call_goes_back_on_the_connection() {
    use vaani_media::sip::Transport;
    let mut h = H::new();
    let conn: SocketAddr = "192.0.2.10:41000".parse().unwrap();
    let inv = invite("z9hG4bKtcp").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    h.uas
        .receive_on(h.now, inv.as_bytes(), conn, Transport::Tcp);
    h.drain();
    let call = h.incoming().unwrap();
    h.uas.accept(h.now, call, Bytes::new()).unwrap();
    h.drain();
    h.at(MS(600));
    let out = h.take();
    let sent: Vec<(SocketAddr, u16)> = out
        .iter()
        .filter_map(|o| match o {
            Out::Sent(_, to, SipMessage::Response(r)) => Some((*to, r.status)),
            _ => None,
        })
        .collect();
    // 100, 200, and the 200 again at T1 (the UAS core's job whatever the transport).
    assert_eq!(sent, [(conn, 100), (conn, 200), (conn, 200)]);
    let tag = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, _, SipMessage::Response(r)) if r.status == 200 => {
                r.headers.to.tag().map(str::to_string)
            }
            _ => None,
        })
        .unwrap();
    let ack =
        req("ACK", "z9hG4bKtack", 1, Some(&tag), "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    h.uas
        .receive_on(h.now, ack.as_bytes(), conn, Transport::Tcp);
    h.drain();
    h.uas.hangup(h.now, call, 200, "done").unwrap();
    h.drain();
    h.at(MS(5000));
    let out = h.take();
    let byes: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Out::Sent(_, to, SipMessage::Request(r)) if r.method == Method::Bye => {
                Some((*to, r.headers.top_via().unwrap().transport.clone()))
            }
            _ => None,
        })
        .collect();
    // Sent once: no retransmission over a reliable transport.
    assert_eq!(byes, [(conn, Transport::Tcp)]);

    let outsider: SocketAddr = "198.51.100.7:42000".parse().unwrap();
    let inv = invite("z9hG4bKout").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    h.uas
        .receive_on(h.now, inv.as_bytes(), outsider, Transport::Tcp);
    h.drain();
    let out = h.take();
    assert!(matches!(
        out.as_slice(),
        [Out::Sent(_, to, SipMessage::Response(r))] if *to == outsider && r.status == 403
    ));
}
