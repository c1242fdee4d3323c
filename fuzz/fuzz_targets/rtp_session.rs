//! Feeds datagrams (the input split at byte 0xA5) to an RTP session from two sources while it
//! plays out and sends; nothing may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaani_media::codec::AudioFormat;
use vaani_media::rtp::session::{RtpSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut cfg = SessionConfig::g711(AudioFormat::PCMU, 0, 1, 2, 3);
    cfg.dtmf_payload_type = Some(101);
    cfg.remote = Some("192.0.2.10:4000".parse().unwrap());
    let Ok(mut s) = RtpSession::new(t0, cfg) else {
        return;
    };
    let mut now = t0;
    let mut buf = [0u8; 1500];
    for (i, d) in data.split(|&b| b == 0xA5).enumerate() {
        let port = if i % 3 == 0 { 4000 } else { 4002 };
        let ip = if i % 7 == 6 {
            [198, 51, 100, 1]
        } else {
            [192, 0, 2, 10]
        };
        now += Duration::from_millis(u64::from(d.first().copied().unwrap_or(7) % 40));
        s.receive(now, d, (ip, port).into());
        s.handle_timeout(now);
        while s.poll_event().is_some() {}
        while let Some(frame) = s.poll_audio() {
            s.send_audio(&frame);
        }
        if d.len() == 3 {
            let _ = s.send_dtmf(char::from(d[1]), Duration::from_millis(u64::from(d[2])));
        }
        while s.poll_transmit(now, &mut buf).is_some() {}
    }
});
