//! Feeds datagrams (the input split at `\0\0`) to the UAS core from an allowed and a refused
//! source, answering every call one of four ways; nothing may panic, and once every call is
//! hung up and the timers have run out, no state may be left.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaani_media::sip::transaction::Timers;
use vaani_media::sip::uas::{Uas, UasConfig, UasEvent, UasOutput};
use vaani_media::sip::{Host, SipUri};

fuzz_target!(|data: &[u8]| {
    let mut contact = SipUri::new(Host::V4([192, 0, 2, 1].into()));
    contact.port = Some(5060);
    let mut uas = Uas::new(UasConfig {
        contact,
        allow: vec!["192.0.2.0/24".parse().unwrap()],
        timers: Timers::default(),
        seed: 1,
        server: "vaani".into(),
    });
    let t0 = Instant::now();
    let mut now = t0;
    let allowed = "192.0.2.10:5060".parse().unwrap();
    let refused = "203.0.113.1:5060".parse().unwrap();
    let mut choice = 0u8;
    for datagram in split(data) {
        let from = if datagram.first() == Some(&b'!') {
            refused
        } else {
            allowed
        };
        now += Duration::from_millis(u64::from(datagram.len() as u8 % 50));
        uas.handle_timeout(now);
        uas.receive(now, datagram, from);
        while let Some(out) = uas.poll_output() {
            if let UasOutput::Event(
                UasEvent::Incoming { call, .. } | UasEvent::Reinvite { call, .. },
            ) = out
            {
                choice = choice.wrapping_add(1);
                let _ = match choice % 4 {
                    0 => uas.accept(now, call, bytes::Bytes::from_static(b"v=0\r\n")),
                    1 => uas.reject(now, call, 486, &[]),
                    2 => uas.ring(now, call),
                    _ => uas.hangup(now, call, 200, "x"),
                };
            }
        }
    }
    uas.hangup_all(now, 503, "end");
    let end = now + Duration::from_secs(300);
    while let Some(d) = uas.next_deadline().filter(|d| *d <= end) {
        now = d.max(now);
        uas.handle_timeout(now);
        while uas.poll_output().is_some() {}
    }
    assert_eq!(uas.calls_held(), 0, "state left behind");
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
