//! RFC 3261 §17 transactions in virtual time: retransmission schedules, timeouts, ACK
//! handling, absorption of retransmitted requests, reliable vs unreliable transports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vaani_media::sip::message::{Request, Response, SipMessage};
use vaani_media::sip::transaction::{
    branch_from, ClientState, Output, Peer, ServerState, Timers, TransactionLayer, TuEvent, TxError,
};
use vaani_media::sip::{Method, Transport};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn peer(transport: Transport) -> Peer {
    Peer {
        addr: "192.0.2.10:5060".parse().unwrap(),
        transport,
    }
}

fn request(method: &str, branch: &str, transport: &str) -> Request {
    let text = format!(
        "{method} sip:bob@192.0.2.20 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}\r\n\
         Route: <sip:proxy.example.com;lr>\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: call-1@192.0.2.10\r\n\
         CSeq: 7 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match SipMessage::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn response_to(req: &Request, status: u16, to_tag: &str) -> Response {
    req.response(status, Some(to_tag))
}

/// Outputs with the virtual time (offset from t0) they were produced at.
struct Clock {
    t0: Instant,
    now: Instant,
    log: Vec<(Duration, Output)>,
}

impl Clock {
    fn new() -> Self {
        let t0 = Instant::now();
        Clock {
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    fn drain(&mut self, layer: &mut TransactionLayer) {
        while let Some(o) = layer.poll_output() {
            self.log.push((self.now - self.t0, o));
        }
    }

    /// Runs every deadline up to `t0 + until`, jumping the clock from one to the next.
    fn run_until(&mut self, layer: &mut TransactionLayer, until: Duration) {
        let end = self.t0 + until;
        while let Some(d) = layer.next_deadline().filter(|d| *d <= end) {
            assert!(d >= self.now, "deadline in the past");
            self.now = d;
            layer.handle_timeout(d);
            self.drain(layer);
        }
        self.now = end;
    }

    fn set(&mut self, d: Duration) {
        assert!(self.t0 + d >= self.now);
        self.now = self.t0 + d;
    }

    fn sends(&self) -> Vec<(Duration, SipMessage)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Send { message, .. } => Some((*t, message.clone())),
                Output::Tu(_) => None,
            })
            .collect()
    }

    fn tu(&self) -> Vec<(Duration, TuEvent)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Tu(e) => Some((*t, e.clone())),
                Output::Send { .. } => None,
            })
            .collect()
    }

    fn send_times(&self) -> Vec<Duration> {
        self.sends().into_iter().map(|(t, _)| t).collect()
    }

    fn clear(&mut self) {
        self.log.clear();
    }
}

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|m| MS(*m)).collect()
}

fn status_of(m: &SipMessage) -> u16 {
    match m {
        SipMessage::Response(r) => r.status,
        SipMessage::Request(_) => 0,
    }
}

// ---------------------------------------------------------------- client transactions

#[test]
fn invite_client_over_udp_retransmits_with_timer_a_until_timer_b() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(1), "UDP");
    let tx = layer
        .send_request(c.now, inv, peer(Transport::Udp))
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, Duration::from_secs(60));
    // Timer A: T1 doubling without a cap; 7 transmissions before Timer B = 64·T1 = 32 s.
    assert_eq!(
        c.send_times(),
        ms(&[0, 500, 1500, 3500, 7500, 15500, 31500])
    );
    assert_eq!(
        c.tu(),
        vec![
            (MS(32000), TuEvent::Timeout { tx }),
            (MS(32000), TuEvent::Terminated { tx })
        ]
    );
    assert!(layer.is_empty());
}

#[test]
fn non_invite_client_over_udp_retransmits_with_timer_e_capped_at_t2() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let opt = request("OPTIONS", &branch_from(2), "UDP");
    let tx = layer
        .send_request(c.now, opt, peer(Transport::Udp))
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, Duration::from_secs(60));
    assert_eq!(
        c.send_times(),
        ms(&[0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
    );
    assert_eq!(c.tu()[0], (MS(32000), TuEvent::Timeout { tx }));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_client_retransmits_at_t2_once_proceeding_and_absorbs_retransmitted_finals() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let opt = request("OPTIONS", &branch_from(3), "UDP");
    let tx = layer
        .send_request(c.now, opt.clone(), peer(Transport::Udp))
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(1000));
    layer.receive(
        c.now,
        SipMessage::Response(response_to(&opt, 100, "b1")),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    assert_eq!(layer.client_state(tx), Some(ClientState::Proceeding));
    c.run_until(&mut layer, MS(6000));
    // E was due at 1.5 s, then every T2 = 4 s.
    assert_eq!(c.send_times(), ms(&[0, 500, 1500, 5500]));
    let ok = response_to(&opt, 200, "b1");
    layer.receive(
        c.now,
        SipMessage::Response(ok.clone()),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    c.set(MS(7000));
    layer.receive(c.now, SipMessage::Response(ok), peer(Transport::Udp));
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(20000));
    let tu: Vec<_> = c.tu();
    // 100 and 200 once each; the retransmitted 200 was absorbed; Timer K = T4 after the 200.
    assert!(
        matches!(&tu[0], (t, TuEvent::Response { response, .. }) if *t == MS(1000) && response.status == 100)
    );
    assert!(
        matches!(&tu[1], (t, TuEvent::Response { response, .. }) if *t == MS(6000) && response.status == 200)
    );
    assert_eq!(tu[2], (MS(11000), TuEvent::Terminated { tx }));
    assert_eq!(tu.len(), 3);
    assert_eq!(
        c.send_times().len(),
        4,
        "no retransmission after the final response"
    );
}

#[test]
fn clients_over_tcp_never_retransmit_and_end_at_once() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(4), "TCP");
    let itx = layer
        .send_request(c.now, inv.clone(), peer(Transport::Tcp))
        .unwrap();
    let opt = request("OPTIONS", &branch_from(5), "TCP");
    let otx = layer
        .send_request(c.now, opt.clone(), peer(Transport::Tcp))
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(10000));
    assert_eq!(c.send_times(), ms(&[0, 0]), "no retransmissions over TCP");
    // Final responses: Timers D and K are zero over TCP.
    layer.receive(
        c.now,
        SipMessage::Response(response_to(&inv, 486, "x")),
        peer(Transport::Tcp),
    );
    layer.receive(
        c.now,
        SipMessage::Response(response_to(&opt, 200, "y")),
        peer(Transport::Tcp),
    );
    c.drain(&mut layer);
    let tu = c.tu();
    assert!(tu.contains(&(MS(10000), TuEvent::Terminated { tx: itx })));
    assert!(tu.contains(&(MS(10000), TuEvent::Terminated { tx: otx })));
    assert!(layer.is_empty());
    // Timer B still guards an unanswered INVITE over TCP.
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let tx = layer
        .send_request(
            c.now,
            request("INVITE", &branch_from(6), "TCP"),
            peer(Transport::Tcp),
        )
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(40000));
    assert_eq!(c.tu()[0], (MS(32000), TuEvent::Timeout { tx }));
}

#[test]
fn invite_client_acks_a_failure_and_re_acks_its_retransmissions() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(7), "UDP");
    let tx = layer
        .send_request(c.now, inv.clone(), peer(Transport::Udp))
        .unwrap();
    c.drain(&mut layer);
    c.set(MS(200));
    let busy = response_to(&inv, 486, "callee");
    layer.receive(
        c.now,
        SipMessage::Response(busy.clone()),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    let sends = c.sends();
    assert_eq!(sends.len(), 2);
    let SipMessage::Request(ack) = &sends[1].1 else {
        panic!("ACK expected")
    };
    // §17.1.1.3
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, inv.uri);
    assert_eq!(ack.headers.via, vec![inv.headers.via[0].clone()]);
    assert_eq!(ack.headers.to.tag(), Some("callee"));
    assert_eq!(ack.headers.from, inv.headers.from);
    assert_eq!(ack.headers.call_id, inv.headers.call_id);
    assert_eq!(ack.headers.cseq.seq, 7);
    assert_eq!(ack.headers.cseq.method, Method::Ack);
    assert_eq!(ack.headers.route, inv.headers.route);
    assert!(ack.body.is_empty());
    assert_eq!(layer.client_state(tx), Some(ClientState::Completed));
    // The 486 is retransmitted: ACK again, TU not told twice.
    c.set(MS(700));
    layer.receive(c.now, SipMessage::Response(busy), peer(Transport::Udp));
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(60000));
    assert_eq!(
        c.send_times(),
        ms(&[0, 200, 700]),
        "no INVITE retransmission after 486"
    );
    let tu = c.tu();
    assert_eq!(tu.len(), 2);
    assert!(matches!(&tu[0].1, TuEvent::Response { response, .. } if response.status == 486));
    // Timer D = 32 s.
    assert_eq!(tu[1], (MS(32200), TuEvent::Terminated { tx }));
}

#[test]
fn invite_client_stops_retransmitting_on_provisional_and_passes_every_2xx() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(8), "UDP");
    let tx = layer
        .send_request(c.now, inv.clone(), peer(Transport::Udp))
        .unwrap();
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(600));
    layer.receive(
        c.now,
        SipMessage::Response(response_to(&inv, 180, "b")),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    // Ringing for a minute: no retransmission, and no Timer B in Proceeding.
    c.run_until(&mut layer, MS(60600));
    assert_eq!(c.send_times(), ms(&[0, 500]));
    assert_eq!(layer.client_state(tx), Some(ClientState::Proceeding));
    let ok = response_to(&inv, 200, "b");
    layer.receive(
        c.now,
        SipMessage::Response(ok.clone()),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    assert_eq!(layer.client_state(tx), Some(ClientState::Accepted));
    c.set(MS(61100));
    layer.receive(c.now, SipMessage::Response(ok), peer(Transport::Udp));
    c.drain(&mut layer);
    c.run_until(&mut layer, MS(200000));
    let tu = c.tu();
    let oks = tu
        .iter()
        .filter(|(_, e)| matches!(e, TuEvent::Response { response, .. } if response.status == 200))
        .count();
    assert_eq!(oks, 2, "each 2xx reaches the TU, which ACKs it (RFC 6026)");
    // The transaction sends no ACK for a 2xx itself.
    assert_eq!(c.sends().len(), 2);
    // Timer M = 64·T1 after the first 2xx.
    assert_eq!(
        tu.last().unwrap(),
        &(MS(60600 + 32000), TuEvent::Terminated { tx })
    );
}

// ---------------------------------------------------------------- server transactions

fn incoming(layer: &mut TransactionLayer, c: &mut Clock, req: &Request, transport: Transport) {
    layer.receive(c.now, SipMessage::Request(req.clone()), peer(transport));
    c.drain(layer);
}

fn new_tx(c: &Clock) -> vaani_media::sip::transaction::TransactionId {
    c.tu()
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            TuEvent::Request { tx, .. } => Some(*tx),
            _ => None,
        })
        .expect("a new server transaction")
}

#[test]
fn invite_server_sends_100_trying_after_200_ms_and_retransmits_a_failure_with_timer_g() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(9), "UDP");
    incoming(&mut layer, &mut c, &inv, Transport::Udp);
    let tx = new_tx(&c);
    c.run_until(&mut layer, MS(1000));
    let sends = c.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!((sends[0].0, status_of(&sends[0].1)), (MS(200), 100));
    let busy = layer.server_request(tx).unwrap().response(486, Some("srv"));
    layer.send_response(c.now, tx, busy).unwrap();
    c.drain(&mut layer);
    assert_eq!(layer.server_state(tx), Some(ServerState::Completed));
    c.run_until(&mut layer, MS(60000));
    // Timer G: T1 doubling to T2, until Timer H = 64·T1 after the 486.
    let times: Vec<_> = c.sends().iter().skip(1).map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        ms(&[1000, 1500, 2500, 4500, 8500, 12500, 16500, 20500, 24500, 28500, 32500])
    );
    assert!(c.sends().iter().skip(1).all(|(_, m)| status_of(m) == 486));
    let tu = c.tu();
    assert_eq!(tu[tu.len() - 2], (MS(33000), TuEvent::Timeout { tx }));
    assert_eq!(tu[tu.len() - 1], (MS(33000), TuEvent::Terminated { tx }));
    assert!(layer.is_empty());
}

#[test]
fn invite_server_absorbs_ack_and_its_retransmissions_then_ends_with_timer_i() {
    for (transport, t_end) in [(Transport::Udp, 7000), (Transport::Tcp, 2000)] {
        let tname = transport.as_str().to_string();
        let mut layer = TransactionLayer::default();
        let mut c = Clock::new();
        let inv = request("INVITE", &branch_from(10), &tname);
        incoming(&mut layer, &mut c, &inv, transport.clone());
        let tx = new_tx(&c);
        c.set(MS(100));
        let busy = layer.server_request(tx).unwrap().response(486, Some("srv"));
        layer.send_response(c.now, tx, busy.clone()).unwrap();
        c.drain(&mut layer);
        c.run_until(&mut layer, MS(2000));
        let sent_before_ack = c.sends().len();
        let ack = vaani_media::sip::transaction::ack_for(&inv, &busy).unwrap();
        incoming(&mut layer, &mut c, &ack, transport.clone());
        if transport == Transport::Udp {
            assert_eq!(layer.server_state(tx), Some(ServerState::Confirmed));
            c.set(MS(3000));
            incoming(&mut layer, &mut c, &ack, transport.clone());
        }
        c.run_until(&mut layer, MS(60000));
        assert_eq!(
            c.sends().len(),
            sent_before_ack,
            "no retransmission after the ACK"
        );
        let tu = c.tu();
        assert!(
            !tu.iter().any(|(_, e)| matches!(e, TuEvent::Ack { .. })),
            "the ACK of a non-2xx stays in the transaction"
        );
        assert_eq!(
            tu.last().unwrap(),
            &(MS(t_end), TuEvent::Terminated { tx }),
            "{tname}"
        );
        if transport == Transport::Tcp {
            // Over TCP the 486 was sent once.
            assert_eq!(sent_before_ack, 1);
        } else {
            // 486 at 0.1 s, Timer G at 0.6 and 1.6 s before the ACK at 2 s; no 100 (the TU
            // answered within 200 ms).
            assert_eq!(c.send_times(), ms(&[100, 600, 1600]));
        }
    }
}

#[test]
fn invite_server_repeats_the_last_provisional_and_absorbs_retransmissions_after_2xx() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(11), "UDP");
    incoming(&mut layer, &mut c, &inv, Transport::Udp);
    let tx = new_tx(&c);
    c.set(MS(50));
    let ringing = layer.server_request(tx).unwrap().response(180, Some("srv"));
    layer.send_response(c.now, tx, ringing).unwrap();
    c.drain(&mut layer);
    c.set(MS(500));
    incoming(&mut layer, &mut c, &inv, Transport::Udp);
    assert_eq!(
        c.sends()
            .iter()
            .map(|(t, m)| (*t, status_of(m)))
            .collect::<Vec<_>>(),
        vec![(MS(50), 180), (MS(500), 180)],
        "no 100 (answered within 200 ms); the retransmitted INVITE gets the 180 again"
    );
    let ok = layer.server_request(tx).unwrap().response(200, Some("srv"));
    c.set(MS(1000));
    layer.send_response(c.now, tx, ok).unwrap();
    c.drain(&mut layer);
    assert_eq!(layer.server_state(tx), Some(ServerState::Accepted));
    c.set(MS(1500));
    incoming(&mut layer, &mut c, &inv, Transport::Udp);
    assert_eq!(
        c.sends().len(),
        3,
        "INVITE retransmission after 2xx absorbed"
    );
    assert_eq!(
        c.tu()
            .iter()
            .filter(|(_, e)| matches!(e, TuEvent::Request { .. }))
            .count(),
        1,
        "and not seen as a new call"
    );
    // The ACK for the 2xx is its own transaction (new branch): it goes to the TU.
    let mut ack = inv.clone();
    ack.method = Method::Ack;
    ack.headers.cseq.method = Method::Ack;
    ack.headers.via[0] = vaani_media::sip::Via::new(
        Transport::Udp,
        vaani_media::sip::Host::V4("192.0.2.10".parse().unwrap()),
        Some(5060),
        &branch_from(99),
    );
    incoming(&mut layer, &mut c, &ack, Transport::Udp);
    assert!(matches!(c.tu().last().unwrap().1, TuEvent::Ack { .. }));
    // Timer L.
    c.run_until(&mut layer, MS(100000));
    assert_eq!(
        c.tu().last().unwrap(),
        &(MS(33000), TuEvent::Terminated { tx })
    );
}

#[test]
fn non_invite_server_answers_duplicates_with_the_last_response_until_timer_j() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let bye = request("BYE", &branch_from(12), "UDP");
    incoming(&mut layer, &mut c, &bye, Transport::Udp);
    let tx = new_tx(&c);
    c.set(MS(300));
    incoming(&mut layer, &mut c, &bye, Transport::Udp);
    assert!(c.sends().is_empty(), "Trying absorbs retransmissions");
    c.set(MS(400));
    let ok = layer.server_request(tx).unwrap().response(200, Some("t"));
    layer.send_response(c.now, tx, ok).unwrap();
    c.drain(&mut layer);
    for at in [900, 5000, 20000] {
        c.set(MS(at));
        incoming(&mut layer, &mut c, &bye, Transport::Udp);
    }
    assert_eq!(
        c.sends()
            .iter()
            .map(|(t, m)| (*t, status_of(m)))
            .collect::<Vec<_>>(),
        vec![
            (MS(400), 200),
            (MS(900), 200),
            (MS(5000), 200),
            (MS(20000), 200)
        ]
    );
    assert_eq!(
        layer.send_response(
            c.now,
            tx,
            layer.server_request(tx).unwrap().response(500, None)
        ),
        Err(TxError::InvalidState)
    );
    c.run_until(&mut layer, MS(40000));
    // Timer J = 64·T1 after the final response.
    assert_eq!(
        c.tu().last().unwrap(),
        &(MS(32400), TuEvent::Terminated { tx })
    );
    // Over TCP, J is zero.
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    incoming(
        &mut layer,
        &mut c,
        &request("BYE", &branch_from(13), "TCP"),
        Transport::Tcp,
    );
    let tx = new_tx(&c);
    let ok = layer.server_request(tx).unwrap().response(200, Some("t"));
    layer.send_response(c.now, tx, ok).unwrap();
    c.drain(&mut layer);
    assert_eq!(c.tu().last().unwrap().1, TuEvent::Terminated { tx });
    assert!(layer.is_empty());
}

#[test]
fn non_invite_server_repeats_its_provisional() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let reg = request("REGISTER", &branch_from(14), "UDP");
    incoming(&mut layer, &mut c, &reg, Transport::Udp);
    let tx = new_tx(&c);
    let trying = layer.server_request(tx).unwrap().response(100, None);
    layer.send_response(c.now, tx, trying).unwrap();
    c.set(MS(500));
    incoming(&mut layer, &mut c, &reg, Transport::Udp);
    assert_eq!(layer.server_state(tx), Some(ServerState::Proceeding));
    assert_eq!(c.sends().len(), 2);
    assert!(c.sends().iter().all(|(_, m)| status_of(m) == 100));
}

// ---------------------------------------------------------------- keying and addressing

#[test]
fn server_keys_follow_17_2_3() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(20), "UDP");
    incoming(&mut layer, &mut c, &inv, Transport::Udp);
    let itx = new_tx(&c);
    // Same branch, other sent-by: another transaction.
    let mut other = inv.clone();
    other.headers.via[0].port = Some(5070);
    incoming(&mut layer, &mut c, &other, Transport::Udp);
    assert_ne!(new_tx(&c), itx);
    // CANCEL: same branch, its own transaction, and it finds the INVITE.
    let mut cancel = inv.clone();
    cancel.method = Method::Cancel;
    cancel.headers.cseq.method = Method::Cancel;
    incoming(&mut layer, &mut c, &cancel, Transport::Udp);
    let ctx = new_tx(&c);
    assert_ne!(ctx, itx);
    assert_eq!(layer.invite_for_cancel(&cancel), Some(itx));
    assert_eq!(layer.len().1, 3);
    // RFC 2543 request (no magic cookie): its retransmission still matches.
    let mut old = request("OPTIONS", "oldbranch1", "UDP");
    old.headers.via[0].params.clear();
    c.clear();
    incoming(&mut layer, &mut c, &old, Transport::Udp);
    incoming(&mut layer, &mut c, &old, Transport::Udp);
    assert_eq!(
        c.tu()
            .iter()
            .filter(|(_, e)| matches!(e, TuEvent::Request { .. }))
            .count(),
        1
    );
}

#[test]
fn responses_go_where_rfc_3581_and_18_2_2_say() {
    let mut layer = TransactionLayer::new(Timers {
        trying_delay: Duration::ZERO,
        ..Timers::default()
    });
    let mut c = Clock::new();
    let nat_source = Peer {
        addr: "203.0.113.5:40001".parse().unwrap(),
        transport: Transport::Udp,
    };
    // rport: back to the source address and port; Via stamped.
    let mut inv = request("INVITE", &branch_from(30), "UDP");
    inv.headers.via[0]
        .params
        .push(vaani_media::sip::Param::new("rport", None::<String>));
    layer.receive(c.now, SipMessage::Request(inv), nat_source.clone());
    c.drain(&mut layer);
    let (to, trying) = match &c.log.last().unwrap().1 {
        Output::Send { to, message } => (to.clone(), message.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(to, nat_source);
    assert_eq!(
        trying.headers().via[0].to_string(),
        format!(
            "SIP/2.0/UDP 192.0.2.10:5060;branch={};rport=40001;received=203.0.113.5",
            branch_from(30)
        )
    );
    // No rport: to `received` and the sent-by port.
    c.clear();
    let inv = request("INVITE", &branch_from(31), "UDP");
    layer.receive(c.now, SipMessage::Request(inv), nat_source);
    c.drain(&mut layer);
    let to = match &c.log.last().unwrap().1 {
        Output::Send { to, .. } => to.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        to.addr,
        "203.0.113.5:5060".parse::<std::net::SocketAddr>().unwrap()
    );
}

#[test]
fn stray_and_multi_via_responses() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let inv = request("INVITE", &branch_from(40), "UDP");
    layer.receive(
        c.now,
        SipMessage::Response(response_to(&inv, 200, "x")),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    assert!(matches!(c.tu()[0].1, TuEvent::StrayResponse { .. }));
    c.clear();
    let _tx = layer
        .send_request(c.now, inv.clone(), peer(Transport::Udp))
        .unwrap();
    let mut two_vias = response_to(&inv, 180, "x");
    two_vias.headers.via.push(inv.headers.via[0].clone());
    layer.receive(c.now, SipMessage::Response(two_vias), peer(Transport::Udp));
    c.drain(&mut layer);
    assert!(c.tu().is_empty(), "§8.1.3.3: dropped");
    // A response to the same branch but another method is not this transaction's.
    let mut other_method = response_to(&inv, 200, "x");
    other_method.headers.cseq.method = Method::Cancel;
    layer.receive(
        c.now,
        SipMessage::Response(other_method),
        peer(Transport::Udp),
    );
    c.drain(&mut layer);
    assert!(matches!(c.tu()[0].1, TuEvent::StrayResponse { .. }));
}

#[test]
fn tu_mistakes_are_errors_not_panics() {
    let mut layer = TransactionLayer::default();
    let now = Instant::now();
    let mut no_cookie = request("OPTIONS", "plainbranch", "UDP");
    assert_eq!(
        layer.send_request(now, no_cookie.clone(), peer(Transport::Udp)),
        Err(TxError::NoBranch)
    );
    no_cookie.headers.via.clear();
    assert_eq!(
        layer.send_request(now, no_cookie, peer(Transport::Udp)),
        Err(TxError::NoBranch)
    );
    let opt = request("OPTIONS", &branch_from(50), "UDP");
    layer
        .send_request(now, opt.clone(), peer(Transport::Udp))
        .unwrap();
    assert_eq!(
        layer.send_request(now, opt.clone(), peer(Transport::Udp)),
        Err(TxError::DuplicateBranch)
    );
    let mut ack = opt.clone();
    ack.method = Method::Ack;
    assert_eq!(
        layer.send_request(now, ack, peer(Transport::Udp)),
        Err(TxError::AckIsNotATransaction)
    );
    let bogus = layer
        .send_request(
            now,
            request("INFO", &branch_from(51), "UDP"),
            peer(Transport::Udp),
        )
        .unwrap();
    assert_eq!(
        layer.send_response(now, bogus, opt.response(200, None)),
        Err(TxError::UnknownTransaction)
    );
}

#[test]
fn transport_errors_end_the_transaction() {
    let mut layer = TransactionLayer::default();
    let mut c = Clock::new();
    let tx = layer
        .send_request(
            c.now,
            request("INVITE", &branch_from(60), "TCP"),
            peer(Transport::Tcp),
        )
        .unwrap();
    layer.transport_error(tx);
    c.drain(&mut layer);
    assert_eq!(
        c.tu(),
        vec![
            (Duration::ZERO, TuEvent::TransportError { tx }),
            (Duration::ZERO, TuEvent::Terminated { tx })
        ]
    );
    assert!(layer.is_empty());
    assert_eq!(layer.next_deadline(), None);
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    Respond(u16),
    Retransmit,
    TuRespond(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..40_000).prop_map(Step::Wait),
        prop::sample::select(vec![100u16, 180, 200, 302, 486, 503]).prop_map(Step::Respond),
        Just(Step::Retransmit),
        prop::sample::select(vec![100u16, 183, 200, 404, 500]).prop_map(Step::TuRespond),
    ]
}

proptest! {
    /// Whatever arrives in whatever order, every transaction ends within the longest timer
    /// chain, leaving nothing behind, and no deadline is ever in the past.
    #[test]
    fn every_transaction_ends(
        steps in prop::collection::vec(step(), 0..30),
        method in prop::sample::select(vec!["INVITE", "OPTIONS", "BYE"]),
        reliable in any::<bool>(),
    ) {
        let (transport, tname) = if reliable { (Transport::Tcp, "TCP") } else { (Transport::Udp, "UDP") };
        let mut layer = TransactionLayer::default();
        let mut c = Clock::new();
        let client = request(method, &branch_from(70), tname);
        let server = request(method, &branch_from(71), tname);
        layer.send_request(c.now, client.clone(), peer(transport.clone())).unwrap();
        incoming(&mut layer, &mut c, &server, transport.clone());
        let stx = new_tx(&c);
        let mut elapsed = 0;
        for s in steps {
            match s {
                Step::Wait(d) => {
                    elapsed += d;
                    c.run_until(&mut layer, MS(elapsed));
                }
                Step::Respond(code) => {
                    layer.receive(c.now, SipMessage::Response(response_to(&client, code, "t")), peer(transport.clone()));
                }
                Step::Retransmit => incoming(&mut layer, &mut c, &server, transport.clone()),
                Step::TuRespond(code) => {
                    let _ = layer.send_response(c.now, stx, server.response(code, Some("s")));
                }
            }
            c.drain(&mut layer);
            if let Some(d) = layer.next_deadline() {
                prop_assert!(d >= c.now);
            }
        }
        // A server transaction that was never answered (including ones a retransmission
        // created after the first ended), or a client that got a provisional only, waits for
        // its TU or peer; answer them all and then let every timer run out.
        let servers: Vec<_> = c.tu().into_iter().filter_map(|(_, e)| match e {
            TuEvent::Request { tx, .. } => Some(tx),
            _ => None,
        }).collect();
        for tx in servers {
            let _ = layer.send_response(c.now, tx, server.response(500, Some("s")));
        }
        layer.receive(c.now, SipMessage::Response(response_to(&client, 500, "t")), peer(transport.clone()));
        c.drain(&mut layer);
        c.run_until(&mut layer, MS(elapsed + 120_000));
        prop_assert!(layer.is_empty(), "left: {:?}", layer.len());
        prop_assert_eq!(layer.next_deadline(), None);
    }
}
