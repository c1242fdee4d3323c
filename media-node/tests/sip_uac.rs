//! The user-agent client half of the core in virtual time: INVITE → 100/180 → 200 with the
//! dialog's ACK (route set, remote target, CSeq), 2xx retransmissions (during and after the
//! transaction) → the same ACK, 486, CANCEL after a provisional (and waiting for one), the
//! CANCEL/200 race (ACK then BYE), Digest retry on 401/407 (hash checked independently and
//! against RFC 2617's vector), Timer B, the answer timeout, BYE both ways, re-INVITE/INFO
//! from the callee, a second fork's 2xx, the allowlist for dialed peers, REFER both ways
//! (blind transfer out with its NOTIFYs ending our leg; an incoming REFER accepted with
//! 202 + NOTIFYs or declined), and a property test that hostile responses never panic or
//! leak state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use proptest::prelude::*;
use vaani_media::sip::digest::{self, Challenge, Credentials, DigestRequest, Qop};
use vaani_media::sip::header::Transport;
use vaani_media::sip::message::{Request, Response, SipMessage};
use vaani_media::sip::transaction::Timers;
use vaani_media::sip::uas::{
    CallHandle, Dial, EndReason, TransferState, Uas, UasConfig, UasError, UasEvent, UasOutput,
};
use vaani_media::sip::{Host, Method, NameAddr, SipUri, Uri};

const MS: fn(u64) -> Duration = Duration::from_millis;
const SECS: fn(u64) -> Duration = Duration::from_secs;
/// The callee: outside the allowlist, so its messages pass only because we called it.
const CALLEE: &str = "198.51.100.7:5080";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANSWER: &str = "v=0\r\no=- 7 7 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
                      t=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";

fn callee() -> SocketAddr {
    CALLEE.parse().unwrap()
}

fn config() -> UasConfig {
    let mut contact = SipUri::new(Host::V4("192.0.2.1".parse().unwrap()));
    contact.user = Some("vaani".into());
    contact.port = Some(5060);
    UasConfig {
        contact,
        allow: vec!["192.0.2.0/24".parse().unwrap()],
        timers: Timers {
            trying_delay: Duration::ZERO,
            ..Timers::default()
        },
        seed: 7,
        server: "vaani".into(),
    }
}

fn dial_to(target: &str) -> Dial {
    let mut from = SipUri::new(Host::V4("192.0.2.1".parse().unwrap()));
    from.user = Some("+911140000000".into());
    Dial {
        target: Uri::parse(target).unwrap(),
        from: NameAddr::new(Uri::Sip(from)),
        next_hop: callee(),
        transport: Transport::Udp,
        route: Vec::new(),
        headers: vec![("X-Test".into(), "1".into())],
        sdp: Bytes::from_static(OFFER.as_bytes()),
        credentials: None,
        answer_timeout: None,
    }
}

fn dial() -> Dial {
    dial_to(&format!("sip:bob@{CALLEE}"))
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Out {
    Sent(Duration, SocketAddr, SipMessage),
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
        let t0 = Instant::now();
        H {
            uas: Uas::new(config()),
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.uas.poll_output() {
            let t = self.now - self.t0;
            self.log.push(match o {
                UasOutput::Transmit { to, data } => Out::Sent(
                    t,
                    to,
                    SipMessage::parse(&data).expect("we send what we parse"),
                ),
                UasOutput::Event(e) => Out::Event(e),
            });
        }
    }

    fn dial(&mut self, d: Dial) -> (CallHandle, Request) {
        let call = self.uas.dial(self.now, d).unwrap();
        self.drain();
        let invite = self.requests().pop().unwrap().1;
        (call, invite)
    }

    fn recv(&mut self, data: &[u8], from: SocketAddr) {
        self.uas.receive(self.now, data, from);
        self.drain();
    }

    fn respond(&mut self, r: &Response) {
        self.recv(&r.to_bytes(), callee());
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

    /// Requests sent, with where they went; the log is cleared.
    fn requests(&mut self) -> Vec<(SocketAddr, Request)> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Out::Sent(_, to, SipMessage::Request(r)) => Some((to, r)),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<UasEvent> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Out::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Dials, the callee rings and answers; returns the call, the INVITE and the 200.
    fn answered(&mut self) -> (CallHandle, Request, Response) {
        let (call, invite) = self.dial(dial());
        self.respond(&invite.response(100, None));
        self.respond(&ringing(&invite));
        let ok = ok(&invite, "");
        self.respond(&ok);
        self.take();
        (call, invite, ok)
    }
}

fn ringing(invite: &Request) -> Response {
    let mut r = invite.response(180, Some("bob1"));
    r.headers.push("Contact", "<sip:bob@198.51.100.7:5090>");
    r
}

/// A 200 for `invite` with our usual Contact and SDP, and `extra` header lines.
fn ok(invite: &Request, record_route: &str) -> Response {
    let mut r = invite.response(200, Some("bob1"));
    if !record_route.is_empty() {
        r.headers.push("Record-Route", record_route);
    }
    r.headers.push("Contact", "<sip:bob@198.51.100.7:5090>");
    r.headers.content_type = Some("application/sdp".into());
    r.body = Bytes::from_static(ANSWER.as_bytes());
    r
}

/// A request from the callee inside the dialog (its tag in From, ours in To).
fn from_callee(invite: &Request, method: &str, cseq: u32, extra: &str, body: &str) -> String {
    let our_tag = invite.headers.from.tag().unwrap();
    format!(
        "{method} sip:vaani@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5090;branch=z9hG4bK{method}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@198.51.100.7>;tag=bob1\r\n\
         To: {};tag={our_tag}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:bob@198.51.100.7:5090>\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        NameAddr::new(invite.headers.from.uri.clone()),
        invite.headers.call_id,
        body.len()
    )
}

#[test]
fn invite_ringing_answer_and_ack() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    // The INVITE: our offer, Contact, a Via with rport, a From tag, no To tag.
    let via = invite.headers.top_via().unwrap();
    assert!(via.has_rfc3261_branch());
    assert_eq!(via.rport(), Some(None));
    assert_eq!(
        via.to_string().split(';').next().unwrap(),
        "SIP/2.0/UDP 192.0.2.1:5060"
    );
    assert_eq!(invite.uri.to_string(), format!("sip:bob@{CALLEE}"));
    assert!(invite.headers.from.tag().is_some());
    assert_eq!(invite.headers.to.tag(), None);
    assert_eq!(invite.headers.cseq.seq, 1);
    assert_eq!(invite.headers.max_forwards, Some(70));
    assert_eq!(
        invite.headers.contact[0].to_string(),
        "<sip:vaani@192.0.2.1:5060>"
    );
    assert_eq!(
        invite.headers.content_type.as_deref(),
        Some("application/sdp")
    );
    assert_eq!(&invite.body[..], OFFER.as_bytes());
    assert_eq!(invite.headers.get("X-Test"), Some("1"));
    assert!(invite.headers.get("Allow").unwrap().contains("INVITE"));
    assert_eq!(
        h.uas.sip_call_id(call),
        Some(invite.headers.call_id.as_str())
    );
    assert!(h.uas.is_outgoing(call));

    // Timer A: the INVITE again at 500 ms, then the 100 stops it.
    h.run_until(MS(500));
    let again = h.requests();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, invite);
    h.run_until(MS(700));
    h.respond(&invite.response(100, None));
    h.respond(&ringing(&invite));
    assert_eq!(
        h.events(),
        [UasEvent::Progress {
            call,
            status: 180,
            body: Bytes::new()
        }]
    );
    h.run_until(SECS(20));
    assert!(h.requests().is_empty(), "no retransmission after a 1xx");

    // The 2xx, Record-Routed by two proxies: the route set is reversed.
    let rr = "<sip:198.51.100.51;lr>, <sip:198.51.100.50;lr>";
    h.respond(&ok(&invite, rr));
    let out = h.take();
    let (to, ack) = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, to, SipMessage::Request(r)) => Some((*to, r.clone())),
            _ => None,
        })
        .unwrap();
    let events: Vec<&UasEvent> = out
        .iter()
        .filter_map(|o| match o {
            Out::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        [&UasEvent::Answered {
            call,
            body: Bytes::from_static(ANSWER.as_bytes())
        }]
    );
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(
        to,
        "198.51.100.50:5060"
            .parse::<std::net::SocketAddr>()
            .unwrap(),
        "first route"
    );
    assert_eq!(
        ack.uri.to_string(),
        "sip:bob@198.51.100.7:5090",
        "remote target"
    );
    let routes: Vec<String> = ack.headers.route.iter().map(|r| r.to_string()).collect();
    assert_eq!(routes, ["<sip:198.51.100.50;lr>", "<sip:198.51.100.51;lr>"]);
    assert_eq!(ack.headers.cseq.seq, 1);
    assert_eq!(ack.headers.cseq.method, Method::Ack);
    assert_eq!(ack.headers.to.tag(), Some("bob1"));
    assert_eq!(ack.headers.from, invite.headers.from);
    assert_eq!(ack.headers.call_id, invite.headers.call_id);
    assert_ne!(
        ack.headers.top_via().unwrap().branch(),
        invite.headers.top_via().unwrap().branch(),
        "the ACK for a 2xx is a transaction of its own"
    );
    assert!(ack.body.is_empty());
    assert_eq!(h.uas.active_calls(), 1);
}

#[test]
fn retransmitted_2xx_gets_the_same_ack_even_after_the_transaction() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    let ok = ok(&invite, "");
    h.respond(&ok);
    let first = h.requests();
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].0,
        "198.51.100.7:5090".parse::<std::net::SocketAddr>().unwrap(),
        "the Contact"
    );
    h.run_until(MS(500));
    h.respond(&ok);
    let again = h.take();
    assert_eq!(again.len(), 1, "one ACK, no second Answered: {again:?}");
    let Out::Sent(_, _, SipMessage::Request(ack2)) = &again[0] else {
        panic!()
    };
    assert_eq!(ack2, &first[0].1);
    // Timer M (64·T1) ends the transaction; a late retransmission still gets its ACK.
    h.run_until(SECS(40));
    h.respond(&ok);
    let late = h.requests();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].1, first[0].1);
    assert!(h.uas.active_calls() == 1 && h.uas.live_calls() == [call]);
}

#[test]
fn busy_ends_the_call_and_the_transaction_acks() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    h.respond(&ringing(&invite));
    h.take();
    let busy = invite.response(486, Some("bob1"));
    h.respond(&busy);
    let out = h.take();
    let acks: Vec<&Request> = out
        .iter()
        .filter_map(|o| match o {
            Out::Sent(_, _, SipMessage::Request(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1);
    // §17.1.1.3: the non-2xx ACK has the INVITE's branch and Request-URI.
    assert_eq!(acks[0].method, Method::Ack);
    assert_eq!(acks[0].uri, invite.uri);
    assert_eq!(acks[0].headers.top_via(), invite.headers.top_via());
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended {
            call: c,
            reason: EndReason::Failed(486)
        }) if *c == call
    )));
    assert_eq!(h.uas.calls_held(), 0);
    // A retransmitted 486: ACKed again, nothing new for the driver.
    h.respond(&busy);
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0], Out::Sent(_, _, SipMessage::Request(r)) if r.method == Method::Ack));
    h.run_until(SECS(60));
    assert!(h.uas.next_deadline().is_none());
    assert_eq!(h.uas.dialed_peers(), 0, "the peer is let in no longer");
    h.respond(&busy);
    assert!(h.take().is_empty());
}

#[test]
fn cancel_after_ringing() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    h.respond(&ringing(&invite));
    h.take();
    h.uas.hangup(h.now, call, 487, "caller gave up").unwrap();
    h.drain();
    let out = h.take();
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended {
            reason: EndReason::LocalHangup { cause: 487, .. },
            ..
        })
    )));
    let cancel = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, to, SipMessage::Request(r)) if r.method == Method::Cancel => {
                Some((*to, r.clone()))
            }
            _ => None,
        })
        .expect("CANCEL");
    assert_eq!(cancel.0, callee());
    let c = cancel.1;
    assert_eq!(c.uri, invite.uri);
    assert_eq!(c.headers.top_via(), invite.headers.top_via(), "same branch");
    assert_eq!(c.headers.cseq.seq, invite.headers.cseq.seq);
    assert_eq!(c.headers.cseq.method, Method::Cancel);
    assert_eq!(c.headers.to, invite.headers.to);
    assert_eq!(c.headers.from, invite.headers.from);
    assert_eq!(
        c.headers.get("Reason"),
        Some("SIP;cause=487;text=\"caller gave up\"")
    );
    // 200 for the CANCEL, 487 for the INVITE (ACKed by the transaction).
    h.respond(&c.response(200, Some("bob1")));
    h.respond(&invite.response(487, Some("bob1")));
    let out = h.take();
    assert!(out.iter().all(|o| !matches!(o, Out::Event(_))), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Request(r)) if r.method == Method::Ack)));
    assert_eq!(h.uas.calls_held(), 0);
    h.run_until(SECS(60));
    assert!(h.uas.next_deadline().is_none());
}

#[test]
fn hangup_before_any_response_waits_for_a_provisional() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    h.run_until(MS(100));
    h.uas.hangup(h.now, call, 200, "bye").unwrap();
    h.drain();
    let out = h.take();
    assert!(
        out.iter().all(|o| !matches!(o, Out::Sent(..))),
        "§9.1: no CANCEL before a provisional response: {out:?}"
    );
    h.run_until(MS(700)); // one INVITE retransmission at 500 ms
    assert_eq!(h.requests().len(), 1);
    h.respond(&invite.response(100, None));
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1.method, Method::Cancel);
    // The callee never answers: the INVITE is given up 64·T1 after the hang-up.
    h.run_until(SECS(33));
    assert_eq!(h.uas.calls_held(), 0);
    h.run_until(SECS(100));
    assert!(h.uas.next_deadline().is_none());
}

#[test]
fn a_2xx_crossing_our_cancel_is_acked_then_byed() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    h.respond(&ringing(&invite));
    h.uas.hangup(h.now, call, 200, "agent done").unwrap();
    h.drain();
    h.take();
    // The callee answered before our CANCEL reached it.
    h.respond(&ok(&invite, ""));
    let out = h.take();
    let reqs: Vec<&Request> = out
        .iter()
        .filter_map(|o| match o {
            Out::Sent(_, _, SipMessage::Request(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        reqs.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        [Method::Ack, Method::Bye]
    );
    assert!(
        out.iter().all(|o| !matches!(o, Out::Event(_))),
        "ended already"
    );
    let bye = reqs[1];
    assert_eq!(bye.headers.cseq.seq, 2);
    assert_eq!(bye.headers.to.tag(), Some("bob1"));
    assert_eq!(bye.uri.to_string(), "sip:bob@198.51.100.7:5090");
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=200;text=\"agent done\"")
    );
    h.respond(&bye.response(200, None));
    // The 487 never comes (the INVITE was answered); the CANCEL's 200 may.
    assert_eq!(h.uas.calls_held(), 0);
}

fn challenge_401(invite: &Request, status: u16, header: &str) -> Response {
    let mut r = invite.response(status, Some("proxy1"));
    r.headers.push(
        header,
        "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
    );
    r
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The named `key="value"` or `key=value` of a Digest header value.
fn param<'a>(v: &'a str, key: &str) -> &'a str {
    let start = v.find(&format!("{key}=")).unwrap() + key.len() + 1;
    let rest = &v[start..];
    if let Some(q) = rest.strip_prefix('"') {
        &q[..q.find('"').unwrap()]
    } else {
        rest.split([',', ' ']).next().unwrap()
    }
}

#[test]
fn digest_retry_on_401() {
    // The RFC 2617 §3.5 vector, through the code the UAC uses.
    let rfc = Challenge::parse(
        "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
    )
    .unwrap();
    let creds = Credentials {
        username: "Mufasa".into(),
        password: "Circle Of Life".into(),
    };
    let rfc_req = DigestRequest {
        method: "GET",
        uri: "/dir/index.html",
        body: b"",
        cnonce: "0a4f113b",
        nc: 1,
    };
    assert_eq!(
        digest::response(&rfc, &creds, Qop::Auth, &rfc_req),
        "6629fae49393a05397450978507c4ef1"
    );

    let mut h = H::new();
    let mut d = dial();
    d.credentials = Some(creds);
    let (call, invite) = h.dial(d);
    h.respond(&challenge_401(&invite, 401, "WWW-Authenticate"));
    let reqs = h.requests();
    assert_eq!(
        reqs.iter()
            .map(|(_, r)| r.method.clone())
            .collect::<Vec<_>>(),
        [Method::Ack, Method::Invite]
    );
    let retry = &reqs[1].1;
    assert_eq!(retry.headers.cseq.seq, 2);
    assert_eq!(retry.headers.call_id, invite.headers.call_id);
    assert_eq!(retry.headers.from, invite.headers.from);
    assert_eq!(retry.headers.to.tag(), None);
    assert_ne!(
        retry.headers.top_via().unwrap().branch(),
        invite.headers.top_via().unwrap().branch()
    );
    assert_eq!(retry.body, invite.body);
    let auth = retry.headers.get("Authorization").unwrap();
    assert!(auth.starts_with("Digest "), "{auth}");
    assert_eq!(param(auth, "username"), "Mufasa");
    assert_eq!(param(auth, "realm"), "testrealm@host.com");
    assert_eq!(param(auth, "nonce"), "dcd98b7102dd2f0e8b11d0f600bfb0c093");
    assert_eq!(param(auth, "opaque"), "5ccc069c403ebaf9f0171e9517f40e41");
    assert_eq!(param(auth, "uri"), format!("sip:bob@{CALLEE}"));
    assert_eq!(param(auth, "qop"), "auth");
    assert_eq!(param(auth, "nc"), "00000001");
    assert_eq!(param(auth, "algorithm"), "MD5");
    let cnonce = param(auth, "cnonce");
    assert!(cnonce.len() >= 8);
    // The response hash, computed here independently (RFC 2617 §3.2.2.1).
    let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
    let ha2 = md5_hex(&format!("INVITE:sip:bob@{CALLEE}"));
    let expected = md5_hex(&format!(
        "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:{cnonce}:auth:{ha2}"
    ));
    assert_eq!(param(auth, "response"), expected);
    assert!(h.events().is_empty(), "no end: the retry is under way");

    // Answered: the ACK carries the INVITE's CSeq number and credentials.
    h.respond(&ok(retry, ""));
    let out = h.take();
    let ack = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, _, SipMessage::Request(r)) if r.method == Method::Ack => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ack.headers.cseq.seq, 2);
    assert_eq!(ack.headers.get("Authorization"), Some(auth));
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Event(UasEvent::Answered { call: c, .. }) if *c == call)));
}

#[test]
fn digest_retry_on_407_only_once() {
    let mut h = H::new();
    let mut d = dial();
    d.credentials = Some(Credentials {
        username: "u".into(),
        password: "p".into(),
    });
    let (call, invite) = h.dial(d);
    h.respond(&challenge_401(&invite, 407, "Proxy-Authenticate"));
    let reqs = h.requests();
    let retry = reqs[1].1.clone();
    assert!(retry.headers.get("Proxy-Authorization").is_some());
    assert!(retry.headers.get("Authorization").is_none());
    // Challenged again: no second retry.
    h.respond(&challenge_401(&retry, 407, "Proxy-Authenticate"));
    let out = h.take();
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended { call: c, reason: EndReason::Failed(407) }) if *c == call
    )));
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Out::Sent(_, _, SipMessage::Request(r)) if r.method == Method::Invite))
            .count(),
        0
    );
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn challenge_without_credentials_fails() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    h.respond(&challenge_401(&invite, 401, "WWW-Authenticate"));
    assert_eq!(
        h.events(),
        [UasEvent::Ended {
            call,
            reason: EndReason::Failed(401)
        }]
    );
}

#[test]
fn timer_b_ends_an_unanswered_invite() {
    let mut h = H::new();
    let (call, _) = h.dial(dial());
    h.run_until(SECS(40));
    let out = h.take();
    let sent: Vec<Duration> = out
        .iter()
        .filter_map(|o| match o {
            Out::Sent(t, _, _) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [MS(500), MS(1500), MS(3500), MS(7500), MS(15500), MS(31500)]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended { call: c, reason: EndReason::Timeout }) if *c == call
    )));
    assert_eq!(h.uas.calls_held(), 0);
    assert!(h.uas.next_deadline().is_none());
}

#[test]
fn answer_timeout_cancels_and_gives_up() {
    let mut h = H::new();
    let mut d = dial();
    d.answer_timeout = Some(SECS(10));
    let (call, invite) = h.dial(d);
    h.respond(&ringing(&invite));
    h.take();
    h.run_until(SECS(10));
    let out = h.take();
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended { call: c, reason: EndReason::NoAnswer }) if *c == call
    )));
    let cancel = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(t, _, SipMessage::Request(r)) if r.method == Method::Cancel => {
                Some((*t, r.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(cancel.0, SECS(10));
    assert_eq!(
        cancel.1.headers.get("Reason"),
        Some("SIP;cause=480;text=\"no answer\"")
    );
    // Nobody answers the CANCEL or the INVITE: 64·T1 later it is all gone.
    h.run_until(SECS(41));
    assert_eq!(h.uas.calls_held(), 1);
    h.run_until(SECS(43));
    assert_eq!(h.uas.calls_held(), 0);
    assert!(h.events().is_empty(), "one Ended only");
    h.run_until(SECS(100));
    assert!(h.uas.next_deadline().is_none());
}

#[test]
fn bye_from_the_callee() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    // From the callee's Contact address (also outside the allowlist).
    let bye = from_callee(&invite, "BYE", 1, "", "");
    h.recv(bye.as_bytes(), "198.51.100.7:5090".parse().unwrap());
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Response(r)) if r.status == 200)));
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended { call: c, reason: EndReason::RemoteBye }) if *c == call
    )));
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn bye_from_us() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    h.uas.hangup(h.now, call, 200, "done").unwrap();
    h.drain();
    let out = h.take();
    let (to, bye) = out
        .iter()
        .find_map(|o| match o {
            Out::Sent(_, to, SipMessage::Request(r)) => Some((*to, r.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(
        to,
        "198.51.100.7:5090".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(bye.headers.cseq.seq, 2, "after the INVITE's 1");
    assert_eq!(bye.headers.from, invite.headers.from);
    assert_eq!(bye.headers.to.tag(), Some("bob1"));
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::Ended {
            reason: EndReason::LocalHangup { cause: 200, .. },
            ..
        })
    )));
    assert_eq!(h.uas.calls_held(), 1, "until the BYE is answered");
    h.respond(&bye.response(200, None));
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn info_options_and_reinvite_from_the_callee() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    let contact: SocketAddr = "198.51.100.7:5090".parse().unwrap();
    let info = from_callee(
        &invite,
        "INFO",
        2,
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=7\r\nDuration=160\r\n",
    );
    h.recv(info.as_bytes(), contact);
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Response(r)) if r.status == 200)));
    assert!(out.iter().any(|o| matches!(
        o,
        Out::Event(UasEvent::InfoDtmf { call: c, digit: '7', duration_ms: Some(160) }) if *c == call
    )));
    h.recv(
        from_callee(&invite, "OPTIONS", 3, "", "").as_bytes(),
        contact,
    );
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Response(r)) if r.status == 200)));
    let reinvite = from_callee(
        &invite,
        "INVITE",
        4,
        "Content-Type: application/sdp\r\n",
        ANSWER,
    );
    h.recv(reinvite.as_bytes(), contact);
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Event(UasEvent::Reinvite { call: c, .. }) if *c == call)));
    h.uas
        .accept(h.now, call, Bytes::from_static(OFFER.as_bytes()))
        .unwrap();
    h.drain();
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Out::Sent(_, _, SipMessage::Response(r)) if r.status == 200 && r.headers.cseq.seq == 4)));
    // A CSeq going backwards is refused (§12.2.2).
    h.recv(from_callee(&invite, "INFO", 1, "", "").as_bytes(), contact);
    let out = h.take();
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Sent(_, _, SipMessage::Response(r)) if r.status == 500)));
}

#[test]
fn a_second_fork_is_acked_and_byed() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    let mut other = invite.response(200, Some("carol1"));
    other
        .headers
        .push("Contact", "<sip:carol@198.51.100.7:5091>");
    h.respond(&other);
    let reqs = h.requests();
    assert_eq!(
        reqs.iter()
            .map(|(to, r)| (
                to.to_string(),
                r.method.clone(),
                r.headers.to.tag().map(str::to_string)
            ))
            .collect::<Vec<_>>(),
        [
            (
                "198.51.100.7:5091".into(),
                Method::Ack,
                Some("carol1".into())
            ),
            (
                "198.51.100.7:5091".into(),
                Method::Bye,
                Some("carol1".into())
            ),
        ]
    );
    assert_eq!(h.uas.live_calls(), [call], "the first dialog stays");
}

#[test]
fn dialed_peers_pass_only_for_responses_and_dialogs() {
    let mut h = H::new();
    let (_call, _invite, _) = h.answered();
    // A new INVITE from the peer we called is still refused: it is not on the allowlist.
    let inv = "INVITE sip:vaani@192.0.2.1 SIP/2.0\r\n\
               Via: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKnew\r\n\
               From: <sip:x@198.51.100.7>;tag=x\r\nTo: <sip:vaani@192.0.2.1>\r\n\
               Call-ID: new@198.51.100.7\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
               Contact: <sip:x@198.51.100.7>\r\nContent-Length: 0\r\n\r\n";
    h.recv(inv.as_bytes(), callee());
    let out = h.take();
    assert!(matches!(&out[..], [Out::Sent(_, _, SipMessage::Response(r))] if r.status == 403));
    assert_eq!(h.uas.counters().forbidden, 1);
}

#[test]
fn bad_targets_are_refused() {
    let mut h = H::new();
    for t in [
        "tel:+911140000000",
        "sip:bob@198.51.100.7?Subject=x",
        "sip:bob@198.51.100.7;method=REGISTER",
    ] {
        assert!(h.uas.dial(h.now, dial_to(t)).is_err(), "{t}");
    }
    assert_eq!(h.uas.calls_held(), 0);
}

fn sipfrag_notify(invite: &Request, cseq: u32, id: u32, frag: &str, state: &str) -> String {
    from_callee(
        invite,
        "NOTIFY",
        cseq,
        &format!(
            "Event: refer;id={id}\r\nSubscription-State: {state}\r\n\
             Content-Type: message/sipfrag;version=2.0\r\n"
        ),
        frag,
    )
}

fn sent_responses(out: &[Out]) -> Vec<u16> {
    out.iter()
        .filter_map(|o| match o {
            Out::Sent(_, _, SipMessage::Response(r)) => Some(r.status),
            _ => None,
        })
        .collect()
}

fn sent_requests(out: &[Out]) -> Vec<Request> {
    out.iter()
        .filter_map(|o| match o {
            Out::Sent(_, _, SipMessage::Request(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn out_events(out: &[Out]) -> Vec<UasEvent> {
    out.iter()
        .filter_map(|o| match o {
            Out::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn blind_transfer_out_ends_our_leg_when_the_target_answers() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    let contact: SocketAddr = "198.51.100.7:5090".parse().unwrap();
    let target = Uri::parse("sip:carol@198.51.100.9").unwrap();
    h.uas.transfer(h.now, call, &target).unwrap();
    h.drain();
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    let (to, refer) = &reqs[0];
    assert_eq!(*to, contact);
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(refer.uri.to_string(), "sip:bob@198.51.100.7:5090");
    assert_eq!(refer.headers.cseq.seq, 2);
    assert_eq!(
        refer.headers.get("Refer-To"),
        Some("<sip:carol@198.51.100.9>")
    );
    assert!(refer
        .headers
        .get("Referred-By")
        .unwrap()
        .contains("+911140000000"));
    assert_eq!(refer.headers.to.tag(), Some("bob1"));
    assert_eq!(
        h.uas.transfer(h.now, call, &target),
        Err(UasError::TransferPending)
    );
    h.respond(&refer.response(202, None));
    assert_eq!(
        h.events(),
        [UasEvent::Transfer {
            call,
            state: TransferState::Accepted
        }]
    );
    h.recv(
        sipfrag_notify(&invite, 2, 2, "SIP/2.0 100 Trying\r\n", "active;expires=60").as_bytes(),
        contact,
    );
    let out = h.take();
    assert_eq!(sent_responses(&out), [200]);
    assert_eq!(
        out_events(&out),
        [UasEvent::Transfer {
            call,
            state: TransferState::Progress(100)
        }]
    );
    h.recv(
        sipfrag_notify(
            &invite,
            3,
            2,
            "SIP/2.0 200 OK\r\n",
            "terminated;reason=noresource",
        )
        .as_bytes(),
        contact,
    );
    let out = h.take();
    assert_eq!(sent_responses(&out), [200]);
    let events = out_events(&out);
    assert_eq!(
        events,
        [
            UasEvent::Transfer {
                call,
                state: TransferState::Succeeded(200)
            },
            UasEvent::Ended {
                call,
                reason: EndReason::LocalHangup {
                    cause: 200,
                    text: "transferred".into()
                }
            }
        ]
    );
    let bye = sent_requests(&out).pop().unwrap();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.cseq.seq, 3);
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=200;text=\"transferred\"")
    );
    h.respond(&bye.response(200, None));
    assert_eq!(h.uas.calls_held(), 0);
}

#[test]
fn failed_transfers_keep_the_call() {
    let mut h = H::new();
    let (call, invite) = h.dial(dial());
    let target = Uri::parse("sip:carol@198.51.100.9").unwrap();
    assert_eq!(
        h.uas.transfer(h.now, call, &target),
        Err(UasError::NotConfirmed),
        "not before the answer"
    );
    h.respond(&ok(&invite, ""));
    h.take();
    let contact: SocketAddr = "198.51.100.7:5090".parse().unwrap();
    // Refused.
    h.uas.transfer(h.now, call, &target).unwrap();
    h.drain();
    let refer = h.requests().pop().unwrap().1;
    h.respond(&refer.response(403, None));
    assert_eq!(
        h.events(),
        [UasEvent::Transfer {
            call,
            state: TransferState::Failed(403)
        }]
    );
    // Accepted, then the target was busy.
    h.uas.transfer(h.now, call, &target).unwrap();
    h.drain();
    let refer = h.requests().pop().unwrap().1;
    assert_eq!(refer.headers.cseq.seq, 3);
    h.respond(&refer.response(202, None));
    h.take();
    h.recv(
        sipfrag_notify(&invite, 1, 3, "SIP/2.0 486 Busy Here\r\n", "terminated").as_bytes(),
        contact,
    );
    let out = h.take();
    assert_eq!(sent_responses(&out), [200]);
    assert_eq!(
        out_events(&out),
        [UasEvent::Transfer {
            call,
            state: TransferState::Failed(486)
        }]
    );
    // A NOTIFY for another event package, and for a subscription we never made.
    h.recv(
        from_callee(&invite, "NOTIFY", 2, "Event: presence\r\n", "").as_bytes(),
        contact,
    );
    assert_eq!(sent_responses(&h.take()), [489]);
    h.recv(
        sipfrag_notify(&invite, 3, 99, "SIP/2.0 200 OK\r\n", "terminated").as_bytes(),
        contact,
    );
    assert_eq!(sent_responses(&h.take()), [481]);
    // No answer at all: Timer F.
    h.uas.transfer(h.now, call, &target).unwrap();
    h.drain();
    h.take();
    h.run_until(h.now - h.t0 + SECS(33));
    let events = h.events();
    assert_eq!(
        events,
        [UasEvent::Transfer {
            call,
            state: TransferState::Failed(408)
        }]
    );
    assert_eq!(h.uas.live_calls(), [call]);
}

#[test]
fn incoming_refer_accepted_with_notifies_or_declined() {
    let mut h = H::new();
    let (call, invite, _) = h.answered();
    let contact: SocketAddr = "198.51.100.7:5090".parse().unwrap();
    let refer = from_callee(
        &invite,
        "REFER",
        2,
        "Refer-To: <sip:dave@198.51.100.20>\r\n",
        "",
    );
    h.recv(refer.as_bytes(), contact);
    assert_eq!(
        h.events(),
        [UasEvent::ReferRequested {
            call,
            refer_to: "<sip:dave@198.51.100.20>".into()
        }]
    );
    // A second REFER while the first waits.
    let again = from_callee(
        &invite,
        "REFER",
        3,
        "Refer-To: <sip:erin@198.51.100.21>\r\n",
        "",
    );
    h.recv(again.as_bytes(), contact);
    assert_eq!(sent_responses(&h.take()), [491]);
    h.uas.answer_refer(h.now, call, true).unwrap();
    h.drain();
    let out = h.take();
    assert_eq!(sent_responses(&out), [202]);
    let notify = sent_requests(&out).pop().unwrap();
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(notify.headers.get("Event"), Some("refer;id=2"));
    assert_eq!(
        notify.headers.get("Subscription-State"),
        Some("active;expires=60")
    );
    assert_eq!(
        notify.headers.content_type.as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(&notify.body[..], b"SIP/2.0 100 Trying\r\n");
    assert_eq!(notify.headers.to.tag(), Some("bob1"));
    h.respond(&notify.response(200, None));
    h.uas.notify_refer(h.now, call, 200).unwrap();
    h.drain();
    let last = h.requests().pop().unwrap().1;
    assert_eq!(&last.body[..], b"SIP/2.0 200 OK\r\n");
    assert_eq!(
        last.headers.get("Subscription-State"),
        Some("terminated;reason=noresource")
    );
    assert!(last.headers.cseq.seq > notify.headers.cseq.seq);
    assert_eq!(
        h.uas.notify_refer(h.now, call, 200),
        Err(UasError::NothingToAnswer),
        "the subscription is over"
    );
    // Declined.
    let refer = from_callee(
        &invite,
        "REFER",
        4,
        "Refer-To: <sip:dave@198.51.100.20>\r\n",
        "",
    );
    h.recv(refer.as_bytes(), contact);
    h.take();
    h.uas.answer_refer(h.now, call, false).unwrap();
    h.drain();
    let out = h.take();
    assert_eq!(sent_responses(&out), [603]);
    assert!(sent_requests(&out).is_empty());
    // No Refer-To; and a REFER outside any dialog.
    h.recv(from_callee(&invite, "REFER", 5, "", "").as_bytes(), contact);
    assert_eq!(sent_responses(&h.take()), [400]);
    let outside = "REFER sip:vaani@192.0.2.1 SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKref\r\n\
                   From: <sip:x@192.0.2.10>;tag=x\r\nTo: <sip:vaani@192.0.2.1>\r\n\
                   Call-ID: refer-out@192.0.2.10\r\nCSeq: 1 REFER\r\nMax-Forwards: 70\r\n\
                   Refer-To: <sip:y@192.0.2.11>\r\nContact: <sip:x@192.0.2.10>\r\n\
                   Content-Length: 0\r\n\r\n";
    h.recv(outside.as_bytes(), "192.0.2.10:5070".parse().unwrap());
    assert_eq!(sent_responses(&h.take()), [405]);
    // A REFER still waiting when the call ends gets 487.
    let refer = from_callee(
        &invite,
        "REFER",
        6,
        "Refer-To: <sip:dave@198.51.100.20>\r\n",
        "",
    );
    h.recv(refer.as_bytes(), contact);
    h.take();
    h.uas.hangup(h.now, call, 200, "bye").unwrap();
    h.drain();
    assert_eq!(sent_responses(&h.take()), [487]);
}

fn arb_status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(100u16),
        Just(180),
        Just(183),
        Just(200),
        Just(401),
        Just(407),
        Just(486),
        Just(487),
        100u16..700,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Responses of any status, with and without tags and challenges, duplicated and in any
    /// order, hostile bytes, and hang-ups at any point: nothing panics, and once every call
    /// is hung up and the timers have run out, no state is left.
    #[test]
    fn never_panics_and_never_leaks(
        steps in proptest::collection::vec((arb_status(), 0u8..8, any::<bool>()), 1..12),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut h = H::new();
        let mut d = dial();
        d.credentials = Some(Credentials { username: "u".into(), password: "p".into() });
        d.answer_timeout = Some(SECS(20));
        let (call, mut invite) = h.dial(d);
        for (i, (status, action, tagged)) in steps.into_iter().enumerate() {
            h.run_until(h.now - h.t0 + MS(300 * i as u64));
            let tag = if tagged { Some("t1") } else { None };
            let mut r = invite.response(status, tag);
            if status == 401 {
                r.headers.push("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\", qop=auth");
            }
            if status == 407 {
                r.headers.push("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"n\"");
            }
            if (200..300).contains(&status) {
                r.headers.push("Contact", "<sip:bob@198.51.100.7:5090>");
            }
            h.respond(&r);
            match action {
                0 => { let _ = h.uas.hangup(h.now, call, 200, "x"); h.drain(); }
                1 => h.recv(&junk, callee()),
                2 => h.recv(from_callee(&invite, "BYE", 5, "", "").as_bytes(), callee()),
                _ => {}
            }
            // Follow a digest retry.
            for o in h.take() {
                if let Out::Sent(_, _, SipMessage::Request(req)) = o {
                    if req.method == Method::Invite {
                        invite = req;
                    }
                }
            }
        }
        h.uas.hangup_all(h.now, 503, "end");
        h.drain();
        h.run_until(SECS(400));
        prop_assert_eq!(h.uas.active_calls(), 0);
        prop_assert_eq!(h.uas.calls_held(), 0);
        prop_assert!(h.uas.next_deadline().is_none());
        prop_assert_eq!(h.uas.dialed_peers(), 0);
    }
}

/// A call placed over TCP: Via says TCP, Contact carries `;transport=tcp`, the INVITE is not
/// retransmitted (a reliable transport, RFC 3261 §17.1.1.2), and the ACK and our BYE go back
/// over the connection (to the address we connected to), not to the 2xx's Contact.
#[test]
fn a_call_over_tcp_keeps_to_its_connection() {
    let mut h = H::new();
    let mut d = dial_to(&format!("sip:bob@{CALLEE};transport=tcp"));
    d.transport = Transport::Tcp;
    let (call, invite) = h.dial(d);
    let via = &invite.headers.via[0];
    assert_eq!(via.transport, Transport::Tcp, "{via:?}");
    let contact = invite.headers.contact[0].uri.as_sip().unwrap();
    assert_eq!(contact.transport_param().as_deref(), Some("tcp"));
    // No retransmissions while it rings.
    h.run_until(SECS(3));
    assert!(h.requests().is_empty(), "INVITE resent over TCP");
    let over_tcp = |h: &mut H, r: &Response| {
        h.uas
            .receive_on(h.now, &r.to_bytes(), callee(), Transport::Tcp);
        h.drain();
    };
    over_tcp(&mut h, &ringing(&invite));
    over_tcp(&mut h, &ok(&invite, ""));
    let sent = h.requests();
    let (to, ack) = sent.iter().find(|(_, r)| r.method == Method::Ack).unwrap();
    assert_eq!(*to, callee(), "the ACK rides the connection");
    assert_eq!(ack.headers.via[0].transport, Transport::Tcp);
    h.uas.hangup(h.now, call, 200, "done").unwrap();
    h.drain();
    let sent = h.requests();
    let (to, bye) = sent.iter().find(|(_, r)| r.method == Method::Bye).unwrap();
    assert_eq!(*to, callee());
    assert_eq!(bye.headers.via[0].transport, Transport::Tcp);
    over_tcp(&mut h, &bye.response(200, None));
    assert_eq!(h.uas.calls_held(), 0);
}
