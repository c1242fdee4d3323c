//! Routes datagrams (the input split at byte 0xA5) from a handful of sources, some sharing an
//! address, through the shared-socket demultiplexer into RTP sessions, the way a media engine
//! worker does (latching and SSRC binding fed back after each accepted packet); calls come and
//! go and move. Nothing may panic, and nothing may be routed to a call that is not there.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaani_media::codec::AudioFormat;
use vaani_media::rtp::demux::Demux;
use vaani_media::rtp::session::{RtpSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let sources: Vec<SocketAddr> = (0..6u16)
        .map(|i| SocketAddr::from(([192, 0, 2, 1 + (i % 3) as u8], 4000 + i)))
        .collect();
    let mut demux = Demux::new();
    let mut sessions: Vec<Option<RtpSession>> = Vec::new();
    let mut now = t0;
    let mut buf = [0u8; 1500];
    for (i, d) in data.split(|&b| b == 0xA5).enumerate() {
        let selector = d.first().copied().unwrap_or(0);
        now += Duration::from_millis(u64::from(selector % 30));
        let key = usize::from(selector % 5);
        match selector >> 5 {
            // Add (or replace) a call expecting one of the sources.
            0 => {
                let mut cfg = SessionConfig::g711(AudioFormat::PCMU, 0, key as u32, 1, 2);
                cfg.dtmf_payload_type = Some(101);
                cfg.remote = Some(sources[usize::from(selector % 6)]);
                if let Ok(s) = RtpSession::new(now, cfg) {
                    demux.insert(key, s.config().remote);
                    if sessions.len() <= key {
                        sessions.resize_with(key + 1, || None);
                    }
                    sessions[key] = Some(s);
                }
            }
            1 => {
                demux.remove(key);
                if let Some(s) = sessions.get_mut(key) {
                    *s = None;
                }
            }
            2 => demux.set_address(key, Some(sources[usize::from(selector % 6)])),
            _ => {
                let from = sources[i % sources.len()];
                let ssrc = d
                    .get(8..12)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(k) = demux.route(from, ssrc) {
                    let s = sessions
                        .get_mut(k)
                        .and_then(Option::as_mut)
                        .expect("routed to a live call");
                    let before = s.counters().received;
                    s.receive(now, d, from);
                    if s.counters().received > before {
                        demux.confirm(k, ssrc);
                        if let Some(l) = s.latched() {
                            demux.set_address(k, Some(l));
                        }
                    }
                    s.handle_timeout(now);
                    while s.poll_audio().is_some() {}
                    while s.poll_event().is_some() {}
                    while s.poll_transmit(now, &mut buf).is_some() {}
                    let _ = s.poll_rtcp(now, Duration::from_secs(1), &mut buf);
                }
            }
        }
    }
});
