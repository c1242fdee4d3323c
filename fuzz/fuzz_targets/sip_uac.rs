//! Places a call and feeds the UAC core datagrams (the input split at `\0\0`) from the peer it
//! called; each datagram's first byte picks how the INVITE is answered first (a response of
//! that status built from the INVITE as sent, with a Digest challenge for 401/407), then the
//! datagram itself arrives, and every so often the call is hung up. Nothing may panic, and
//! once every call is hung up and the timers have run out, no state may be left.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaani_media::sip::digest::Credentials;
use vaani_media::sip::message::SipMessage;
use vaani_media::sip::transaction::Timers;
use vaani_media::sip::uas::{Dial, Uas, UasConfig, UasOutput};
use vaani_media::sip::{Host, Method, NameAddr, SipUri, Uri};

const STATUSES: [u16; 12] = [100, 180, 183, 200, 202, 302, 401, 407, 486, 487, 503, 603];

fuzz_target!(|data: &[u8]| {
    let mut contact = SipUri::new(Host::V4([192, 0, 2, 1].into()));
    contact.port = Some(5060);
    let mut uas = Uas::new(UasConfig {
        contact: contact.clone(),
        allow: vec!["192.0.2.0/24".parse().unwrap()],
        timers: Timers::default(),
        seed: 1,
        server: "vaani".into(),
    });
    let peer = "198.51.100.7:5080".parse().unwrap();
    let t0 = Instant::now();
    let mut now = t0;
    let dial = Dial {
        target: Uri::parse("sip:bob@198.51.100.7:5080").unwrap(),
        from: NameAddr::new(Uri::Sip(contact)),
        next_hop: peer,
        transport: vaani_media::sip::header::Transport::Udp,
        route: Vec::new(),
        headers: Vec::new(),
        sdp: bytes::Bytes::from_static(b"v=0\r\n"),
        credentials: Some(Credentials {
            username: "u".into(),
            password: "p".into(),
        }),
        answer_timeout: Some(Duration::from_secs(20)),
    };
    let Ok(call) = uas.dial(now, dial) else {
        return;
    };
    let mut invite = None;
    let drain = |uas: &mut Uas, invite: &mut Option<vaani_media::sip::Request>| {
        while let Some(out) = uas.poll_output() {
            if let UasOutput::Transmit { data, .. } = out {
                if let Ok(SipMessage::Request(r)) = SipMessage::parse(&data) {
                    if r.method == Method::Invite {
                        *invite = Some(r);
                    }
                }
            }
        }
    };
    drain(&mut uas, &mut invite);
    for (i, datagram) in split(data).enumerate() {
        now += Duration::from_millis(u64::from(datagram.len() as u8 % 50) * 20);
        uas.handle_timeout(now);
        let pick = datagram.first().copied().unwrap_or(0);
        if let Some(inv) = &invite {
            let status = STATUSES[usize::from(pick) % STATUSES.len()];
            let mut r = inv.response(status, (pick & 0x10 != 0).then_some("t1"));
            match status {
                401 => r
                    .headers
                    .push("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\", qop=auth"),
                407 => r
                    .headers
                    .push("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"n\""),
                200..=299 => r.headers.push("Contact", "<sip:bob@198.51.100.7:5090>"),
                _ => {}
            }
            uas.receive(now, &r.to_bytes(), peer);
        }
        uas.receive(now, datagram, peer);
        if pick & 0x20 != 0 && i % 3 == 2 {
            let _ = uas.hangup(now, call, 200, "x");
        }
        drain(&mut uas, &mut invite);
    }
    uas.hangup_all(now, 503, "end");
    let end = now + Duration::from_secs(400);
    while let Some(d) = uas.next_deadline().filter(|d| *d <= end) {
        now = d.max(now);
        uas.handle_timeout(now);
        while uas.poll_output().is_some() {}
    }
    assert_eq!(uas.calls_held(), 0, "state left behind");
    assert_eq!(uas.dialed_peers(), 0, "a peer left on the allowlist");
});

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.windows(2).position(|w| w == b"\0\0") {
            Some(i) => {
                let (d, r) = rest.split_at(i);
                rest = &r[2..];
                Some(d)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}
