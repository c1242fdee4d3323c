//! SIP calls end to end against `vaani dev --app echo`: real peers over loopback UDP.
//!
//! - sipp as UAC (scenario `tests/sip/uac_media.xml`): INVITE/100/200/ACK, a tone streamed as
//!   RTP, the RFC 4733 capture replayed when we are root (pcap replay needs raw sockets), BYE.
//! - A Rust UAC built on our own `sip::message` and RTP code: sends 1 s of a 440 Hz μ-law tone
//!   paced at 20 ms and an RFC 4733 key press, checks the echoed audio's pitch (Goertzel),
//!   the echoed key press, the digit the node logged, and BYE → 200.
//! - Opus (RFC 7587): a Rust UAC offering only Opus to `--sip-codecs opus,pcmu` sends an
//!   Opus tone and decodes the echoed Opus back to it.
//! - Tokens, the allowlist, OPTIONS, malformed datagrams, and the RTP inactivity timeout.
//!
//! The node's view of its calls comes from `GET /debug/sip/calls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_dev, start_dev_with, start_dev_with_env};
use vaani_media::codec::g711;
use vaani_media::rtp::dtmf::{DtmfSender, TelephoneEvent};
use vaani_media::rtp::{RtpHeader, RtpPacket};
use vaani_media::sip::message::{Response, SipMessage};
use vaani_media::sip::sdp::SessionDescription;
use vaani_media::sip::Request;

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The node's record of the call with this SIP Call-ID, once `pred` holds for it.
fn call_record(
    http: &str,
    sip_call_id: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&get(http, "/debug/sip/calls")).unwrap();
        let found = ["live", "ended"]
            .iter()
            .flat_map(|k| v[k].as_array().cloned().unwrap_or_default())
            .find(|r| r["sip_call_id"] == sip_call_id);
        match found {
            Some(r) if pred(&r) => return r,
            other if Instant::now() > deadline => panic!("no matching record: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn free_udp_port() -> u16 {
    // An even port with the next one free too (sipp's RTP and RTCP).
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p & 1 == 0 && p < 65_000 && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// 16-bit samples of a `freq` Hz tone at 8 kHz.
fn tone_8k(freq: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (8000.0 * seconds) as usize;
    (0..n)
        .map(|i| (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

fn goertzel(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether sipp is here; without it the sipp test is skipped, unless `VAANI_REQUIRE_SIPP` is set
/// (as `scripts/test.sh` does after installing it).
fn sipp_available() -> bool {
    let ok = Command::new("sipp").arg("-v").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("VAANI_REQUIRE_SIPP").is_none(),
            "sipp is required (apt-get install sip-tester)"
        );
        eprintln!("skipping: sipp not installed (apt-get install sip-tester)");
    }
    ok
}

#[test]
fn sipp_uac_call_with_media_and_dtmf() {
    if !sipp_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev(data.path().to_str().unwrap());
    // 3 s of 440 Hz as headerless μ-law, the format sipp's rtp_stream plays.
    let audio = data.path().join("tone.ul");
    let ulaw: Vec<u8> = tone_8k(440.0, 3.0, 8000.0)
        .iter()
        .map(|&s| g711::linear_to_ulaw(s))
        .collect();
    std::fs::write(&audio, ulaw).unwrap();
    let root = is_root();
    let dtmf = if root {
        r#"<nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_1.pcap"/></action></nop>"#
    } else {
        eprintln!("not root: the RFC 4733 pcap replay is left out (the Rust UAC test covers DTMF)");
        ""
    };
    let scenario = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sip/uac_media.xml"
    ))
    .unwrap()
    .replace("@AUDIO_UL@", audio.to_str().unwrap())
    .replace("@DTMF@", dtmf);
    let sf = data.path().join("uac.xml");
    std::fs::write(&sf, scenario).unwrap();
    let (sip_port, media_port) = (free_udp_port(), free_udp_port());
    let out = Command::new("sipp")
        .args([
            &dev.sip,
            "-sf",
            sf.to_str().unwrap(),
            "-s",
            "vaani",
            "-i",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &sip_port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media_port.to_string(),
        ])
        .args([
            "-m",
            "1",
            "-l",
            "1",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .current_dir(data.path())
        .output()
        .expect("run sipp");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp failed:\n{}\n{}",
        stdout.lines().rev().take(30).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // sipp's Call-ID is `1-<pid>@127.0.0.1`; find the one call that ended.
    let v: serde_json::Value = serde_json::from_str(&get(&dev.addr, "/debug/sip/calls")).unwrap();
    let sip_call_id = v["ended"][0]["sip_call_id"].as_str().unwrap().to_string();
    let r = call_record(&dev.addr, &sip_call_id, |r| r["end_reason"] == "remote_bye");
    assert_eq!(r["codec"], "PCMU");
    assert_eq!(r["latched"], format!("127.0.0.1:{media_port}"));
    // 3 s of audio at 50 packets/s came in; our echo went out all call long.
    let received = r["rtp_received"].as_u64().unwrap();
    let sent = r["rtp_sent"].as_u64().unwrap();
    assert!(received >= 140, "{r}");
    assert!(sent >= 150, "{r}");
    if root {
        assert_eq!(r["digits"], "1", "{r}");
    }
}

/// A minimal UAC speaking to the node over one UDP socket.
struct Uac {
    sip: UdpSocket,
    node: SocketAddr,
    local: SocketAddr,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
}

impl Uac {
    fn new(node: &str, call_id: &str) -> Uac {
        Uac::from_ip("127.0.0.1", node, call_id)
    }

    /// A UAC whose socket is on `ip` (any 127.x address is loopback on Linux).
    fn from_ip(ip: &str, node: &str, call_id: &str) -> Uac {
        let sip = UdpSocket::bind((ip, 0)).unwrap();
        sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = sip.local_addr().unwrap();
        Uac {
            sip,
            node: node.parse().unwrap(),
            local,
            call_id: call_id.to_string(),
            cseq: 0,
            to_tag: None,
        }
    }

    fn request(&mut self, method: &str, extra: &str, body: &str) -> String {
        let ct = if body.is_empty() {
            ""
        } else {
            "application/sdp"
        };
        self.request_typed(method, extra, ct, body)
    }

    fn request_typed(
        &mut self,
        method: &str,
        extra: &str,
        content_type: &str,
        body: &str,
    ) -> String {
        if method != "ACK" {
            self.cseq += 1;
        }
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ct = if content_type.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {content_type}\r\n")
        };
        format!(
            "{method} sip:vaani@{node} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{method}{cseq}{rand};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:caller@{local}>;tag=uac1\r\n\
             To: <sip:vaani@{node}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local}>\r\n\
             {extra}{ct}Content-Length: {len}\r\n\r\n{body}",
            node = self.node,
            local = self.local,
            cseq = self.cseq,
            rand = std::process::id(),
            call_id = self.call_id,
            len = body.len(),
        )
    }

    fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.node).unwrap();
    }

    fn recv(&self) -> SipMessage {
        let mut buf = [0u8; 65_535];
        let (n, _) = self
            .sip
            .recv_from(&mut buf)
            .expect("a SIP message from the node");
        SipMessage::parse(&buf[..n]).expect("the node sends valid SIP")
    }

    /// The final response to our last request (skipping provisionals).
    fn final_response(&self) -> Response {
        loop {
            if let SipMessage::Response(r) = self.recv() {
                if r.status >= 200 && r.headers.cseq.seq == self.cseq {
                    return r;
                }
            }
        }
    }

    fn offer(rtp: SocketAddr) -> String {
        Self::offer_with(rtp, 1, "sendrecv")
    }

    fn offer_with(rtp: SocketAddr, version: u32, direction: &str) -> String {
        format!(
            "v=0\r\no=uac 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n",
            rtp.port()
        )
    }

    /// INVITE with an offer for `rtp`; returns the final response.
    fn invite(&mut self, rtp: SocketAddr, extra: &str) -> Response {
        self.invite_sdp(&Self::offer(rtp), extra)
    }

    /// INVITE with the offer `sdp`; returns the final response.
    fn invite_sdp(&mut self, sdp: &str, extra: &str) -> Response {
        let text = self.request("INVITE", extra, sdp);
        self.send(&text);
        let r = self.final_response();
        self.to_tag = r.headers.to.tag().map(str::to_string);
        r
    }

    /// The ACK for a 2xx (a new transaction, §13.2.2.4).
    fn ack(&mut self) {
        let ack = self.request("ACK", "", "");
        self.send(&ack);
    }

    fn bye(&mut self) -> Response {
        let text = self.request("BYE", "", "");
        self.send(&text);
        self.final_response()
    }
}

/// Where the node's answer says to send RTP.
fn answer_address(ok: &Response) -> SocketAddr {
    let sdp = SessionDescription::parse(&ok.body).expect("SDP answer");
    sdp.media_address(0).expect("audio address")
}

#[test]
fn rust_uac_tone_and_dtmf_are_echoed() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev(data.path().to_str().unwrap());
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-1@127.0.0.1");
    let ok = uac.invite(rtp.local_addr().unwrap(), "");
    assert_eq!(ok.status, 200);
    assert!(ok.headers.to.tag().is_some());
    let node_rtp = answer_address(&ok);
    let sdp = String::from_utf8_lossy(&ok.body).to_string();
    assert!(
        sdp.contains("m=audio ") && sdp.contains(" RTP/AVP 0 101\r\n"),
        "{sdp}"
    );
    assert!(
        sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"),
        "{sdp}"
    );
    uac.ack();
    call_record(&dev.addr, &uac.call_id, |r| r["state"] == "confirmed");

    // Receive everything the node sends while we talk.
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let rtp = rtp.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Acquire) {
                if let Ok((n, from)) = rtp.recv_from(&mut buf) {
                    assert_eq!(from, node_rtp, "symmetric RTP: from the port in the SDP");
                    let p = RtpPacket::parse(&buf[..n]).unwrap();
                    got.push((p.payload_type, p.payload.to_vec()));
                }
            }
            got
        })
    };

    // 1 s of 440 Hz, paced at 20 ms, then a key press of '5'.
    let tone = tone_8k(440.0, 1.0, 8000.0);
    let ssrc = 0x5eed_0001;
    let (mut seq, mut ts) = (1000u16, 50_000u32);
    let t0 = Instant::now();
    let mut k = 0u32;
    let pace = |k: u32| {
        let at = t0 + Duration::from_millis(20 * u64::from(k));
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    };
    for chunk in tone.chunks(160) {
        pace(k);
        let payload: Vec<u8> = chunk.iter().map(|&s| g711::linear_to_ulaw(s)).collect();
        let mut pkt = Vec::new();
        RtpHeader {
            marker: k == 0,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
        .write_to_vec(&payload, &mut pkt)
        .unwrap();
        rtp.send_to(&pkt, node_rtp).unwrap();
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        k += 1;
    }
    for ev in DtmfSender::default()
        .plan('5', Duration::from_millis(100), ts)
        .unwrap()
    {
        pace(k);
        let mut pkt = Vec::new();
        ev.header(ssrc, 101, seq)
            .write_to_vec(&ev.event.to_bytes(), &mut pkt)
            .unwrap();
        rtp.send_to(&pkt, node_rtp).unwrap();
        seq = seq.wrapping_add(1);
        k += 1;
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Release);
    let got = rx.join().unwrap();

    // The echo: decode, keep the loud 20 ms packets, check the pitch.
    let audio: Vec<Vec<i16>> = got
        .iter()
        .filter(|(pt, _)| *pt == 0)
        .map(|(_, p)| p.iter().map(|&c| g711::ulaw_to_linear(c)).collect())
        .collect();
    let energy =
        |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64;
    let loud: Vec<i16> = audio
        .iter()
        .filter(|p| energy(p) > 1e6)
        .flatten()
        .copied()
        .collect();
    assert!(
        loud.len() >= 45 * 160,
        "most of the second came back: {} loud packets of {}",
        loud.len() / 160,
        audio.len()
    );
    let at = |f: f64| goertzel(&loud, 8000.0, f);
    for other in [300.0, 600.0, 1000.0, 2000.0, 3000.0] {
        assert!(at(440.0) > 50.0 * at(other), "440 Hz dominates {other} Hz");
    }
    // The echo app sends the key press back as RFC 4733.
    let events: Vec<TelephoneEvent> = got
        .iter()
        .filter(|(pt, _)| *pt == 101)
        .map(|(_, p)| TelephoneEvent::parse(p).unwrap())
        .collect();
    assert!(events.iter().all(|e| e.event == 5), "{events:?}");
    assert!(events.iter().filter(|e| e.end).count() >= 3, "{events:?}");

    let r = call_record(&dev.addr, &uac.call_id, |r| r["digits"] == "5");
    assert_eq!(r["latched"], rtp.local_addr().unwrap().to_string());
    let ok = uac.bye();
    assert_eq!((ok.status, ok.headers.cseq.method.as_str()), (200, "BYE"));
    call_record(&dev.addr, &uac.call_id, |r| r["end_reason"] == "remote_bye");
    // The node's metrics: the caller's BYE ended it; its RTP was counted.
    let m = |series: &str| metric(&dev.addr, series).unwrap_or_default();
    assert_eq!(
        m("vaani_calls_ended_total{transport=\"sip\",reason=\"caller_hangup\"}"),
        "1"
    );
    assert_eq!(m("vaani_active_calls{transport=\"sip\"}"), "0");
    // The call's media winds down on its worker's next tick, just after the SIP side ended it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while m("vaani_rtp_jitter_seconds_count") != "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let received: u64 = m("vaani_rtp_packets_received_total").parse().unwrap();
    assert!(received >= 50, "{received} RTP packets counted");
    assert_eq!(m("vaani_rtp_jitter_seconds_count"), "1");
    // 200 to the INVITE (and its retransmissions, if any) and to the BYE.
    let ok: u64 = m("vaani_sip_responses_sent_total{code=\"200\"}")
        .parse()
        .unwrap();
    assert!(ok >= 2, "{ok}");
}

/// One series of the node's `/metrics`.
fn metric(http: &str, series: &str) -> Option<String> {
    get(http, "/metrics").lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

#[test]
fn options_garbage_tokens_and_allowlist() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev(data.path().to_str().unwrap());
    let mut uac = Uac::new(&dev.sip, "rust-uac-2@127.0.0.1");
    // OPTIONS: 200 with Allow.
    let text = uac.request("OPTIONS", "", "");
    uac.send(&text);
    let r = uac.final_response();
    assert_eq!(r.status, 200);
    assert!(r.headers.get("Allow").unwrap().contains("INVITE"));
    // Garbage is ignored; a request with a broken header gets 400 and the node carries on.
    uac.send("\x00\x01\x02 not sip");
    let bad = uac
        .request("OPTIONS", "", "")
        .replace("Max-Forwards: 70", "Max-Forwards: lots");
    uac.send(&bad);
    let r = uac.final_response();
    assert_eq!(r.status, 400);
    let text = uac.request("FOO", "", "");
    uac.send(&text);
    assert_eq!(uac.final_response().status, 501);

    // A bad token: 403. The right one (issued with the node's key for demo): answered.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bad = uac.invite(
        rtp.local_addr().unwrap(),
        "X-Vaani-Call-Id: call-77\r\nX-Vaani-Token: v1.9999999999.AAAA\r\n",
    );
    assert_eq!(bad.status, 403);
    let key_hex = std::fs::read_to_string(data.path().join("media-token.key")).unwrap();
    let key = hex::decode(key_hex.trim()).unwrap();
    let token = vaani_core::token::issue(&key, "demo", "call-77", chrono::Utc::now(), 300);
    let mut uac = Uac::new(&dev.sip, "rust-uac-3@127.0.0.1");
    let ok = uac.invite(
        rtp.local_addr().unwrap(),
        &format!("X-Vaani-Call-Id: call-77\r\nX-Vaani-Token: {token}\r\n"),
    );
    assert_eq!(ok.status, 200);
    uac.ack();
    let r = call_record(&dev.addr, &uac.call_id, |r| r["state"] == "confirmed");
    assert_eq!(r["call_id"], "call-77");
    assert_eq!(r["tenant"], "demo");
    assert_eq!(uac.bye().status, 200);
    // The same token for another tenant: 403.
    let mut uac = Uac::new(&dev.sip, "rust-uac-4@127.0.0.1");
    let r = uac.invite(
        rtp.local_addr().unwrap(),
        &format!("X-Vaani-Call-Id: call-77\r\nX-Vaani-Token: {token}\r\nX-Vaani-Tenant: acme\r\n"),
    );
    assert_eq!(r.status, 403);

    // A node that only takes calls from 10.0.0.0/8 refuses us with 403.
    let data2 = tempfile::tempdir().unwrap();
    let strict = start_dev_with(
        data2.path().to_str().unwrap(),
        &["--sip-allow", "10.0.0.0/8"],
    );
    let mut uac = Uac::new(&strict.sip, "rust-uac-5@127.0.0.1");
    let text = uac.request("OPTIONS", "", "");
    uac.send(&text);
    assert_eq!(uac.final_response().status, 403);
    let r = uac.invite(rtp.local_addr().unwrap(), "");
    assert_eq!(r.status, 403);
    let v: serde_json::Value =
        serde_json::from_str(&get(&strict.addr, "/debug/sip/calls")).unwrap();
    assert_eq!(
        v["live"].as_array().unwrap().len() + v["ended"].as_array().unwrap().len(),
        0
    );
}

#[test]
fn rtp_timeout_hangs_up_with_bye() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &["--rtp-timeout", "1"]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-6@127.0.0.1");
    assert_eq!(uac.invite(rtp.local_addr().unwrap(), "").status, 200);
    uac.ack();
    let started = Instant::now();
    // We send no RTP: the node hangs up after about a second.
    let bye: Request = loop {
        match uac.recv() {
            SipMessage::Request(r) if r.method.as_str() == "BYE" => break r,
            _ => assert!(started.elapsed() < Duration::from_secs(5), "no BYE"),
        }
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=408;text=\"RTP timeout\"")
    );
    assert_eq!(bye.headers.call_id, uac.call_id);
    let ok = bye.response(200, None);
    uac.send(std::str::from_utf8(&ok.to_bytes()).unwrap());
    let r = call_record(&dev.addr, &uac.call_id, |r| r["state"] == "ended");
    assert_eq!(r["end_reason"], "local_hangup: RTP timeout");
    assert_eq!(
        metric(
            &dev.addr,
            "vaani_calls_ended_total{transport=\"sip\",reason=\"rtp_timeout\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// Counts the node's RTP packets arriving in a window.
fn count_rtp(rtp: &UdpSocket, window: Duration) -> usize {
    rtp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let end = Instant::now() + window;
    let mut n = 0;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if rtp.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn reinvite_hold_unhold_and_info_dtmf() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev(data.path().to_str().unwrap());
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local_rtp = rtp.local_addr().unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-hold@127.0.0.1");
    assert_eq!(uac.invite(local_rtp, "").status, 200);
    uac.ack();
    // The node sends (silence) from the start: about 25 packets in half a second.
    assert!(count_rtp(&rtp, Duration::from_millis(500)) >= 15);

    // We put the node on hold (we only send): it answers recvonly and goes quiet.
    let text = uac.request("INVITE", "", &Uac::offer_with(local_rtp, 2, "sendonly"));
    uac.send(&text);
    let ok = uac.final_response();
    assert_eq!(ok.status, 200);
    let sdp = String::from_utf8_lossy(&ok.body).to_string();
    assert!(sdp.contains("a=recvonly\r\n"), "{sdp}");
    assert!(sdp.contains(" 2 IN IP4 "), "session version went up: {sdp}");
    uac.ack();
    let _ = count_rtp(&rtp, Duration::from_millis(100)); // what was in flight
    assert_eq!(
        count_rtp(&rtp, Duration::from_millis(500)),
        0,
        "held: nothing sent"
    );

    // Off hold: sendrecv again, and the packets come back.
    let text = uac.request("INVITE", "", &Uac::offer_with(local_rtp, 3, "sendrecv"));
    uac.send(&text);
    let ok = uac.final_response();
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=sendrecv\r\n"));
    uac.ack();
    assert!(count_rtp(&rtp, Duration::from_millis(500)) >= 15);

    // A key press by SIP INFO (application/dtmf-relay).
    let text = uac.request_typed(
        "INFO",
        "",
        "application/dtmf-relay",
        "Signal=7\r\nDuration=160\r\n",
    );
    uac.send(&text);
    assert_eq!(uac.final_response().status, 200);
    call_record(&dev.addr, &uac.call_id, |r| r["digits"] == "7");
    assert_eq!(uac.bye().status, 200);
}

#[test]
fn capacity_gives_503_with_retry_after() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &["--max-calls", "1"]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut first = Uac::new(&dev.sip, "rust-uac-cap1@127.0.0.1");
    assert_eq!(first.invite(rtp.local_addr().unwrap(), "").status, 200);
    first.ack();
    let mut second = Uac::new(&dev.sip, "rust-uac-cap2@127.0.0.1");
    let busy = second.invite(rtp.local_addr().unwrap(), "");
    assert_eq!(busy.status, 503);
    assert_eq!(busy.headers.get("Retry-After"), Some("5"));
    assert_eq!(
        metric(&dev.addr, "vaani_sip_responses_sent_total{code=\"503\"}").as_deref(),
        Some("1")
    );
    assert_eq!(first.bye().status, 200);
    // The slot is free again.
    let mut third = Uac::new(&dev.sip, "rust-uac-cap3@127.0.0.1");
    assert_eq!(third.invite(rtp.local_addr().unwrap(), "").status, 200);
    third.ack();
    assert_eq!(third.bye().status, 200);
}

#[test]
fn sigterm_hangs_up_calls_with_bye() {
    let data = tempfile::tempdir().unwrap();
    // The call outlives the drain: at its deadline the node hangs it up.
    let mut dev = start_dev_with(data.path().to_str().unwrap(), &["--drain-timeout", "2"]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-term@127.0.0.1");
    assert_eq!(uac.invite(rtp.local_addr().unwrap(), "").status, 200);
    uac.ack();
    call_record(&dev.addr, &uac.call_id, |r| r["state"] == "confirmed");
    let pid = dev.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Draining: new calls are refused while the one up carries on.
    let drained = Instant::now() + Duration::from_secs(5);
    // The sample line itself: the family's HELP text also reads "vaani_node_draining 1 …".
    while !get(&dev.addr, "/metrics")
        .lines()
        .any(|l| l == "vaani_node_draining 1")
    {
        assert!(Instant::now() < drained, "not draining");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut late = Uac::new(&dev.sip, "rust-uac-late-term@127.0.0.1");
    let refused = late.invite(rtp.local_addr().unwrap(), "");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers.get("Retry-After"), Some("5"));
    let bye: Request = loop {
        if let SipMessage::Request(r) = uac.recv() {
            if r.method.as_str() == "BYE" {
                break r;
            }
        }
    };
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=503;text=\"node shutting down\"")
    );
    let ok = bye.response(200, None);
    uac.send(std::str::from_utf8(&ok.to_bytes()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "vaani dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn late_offer_answer_in_the_ack() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev(data.path().to_str().unwrap());
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local_rtp = rtp.local_addr().unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-late@127.0.0.1");
    // INVITE without SDP: the node's 200 carries its offer.
    let text = uac.request("INVITE", "", "");
    uac.send(&text);
    let ok = uac.final_response();
    assert_eq!(ok.status, 200);
    uac.to_tag = ok.headers.to.tag().map(str::to_string);
    let offer = String::from_utf8_lossy(&ok.body).to_string();
    assert!(offer.contains(" RTP/AVP 0 8 101\r\n"), "{offer}");
    let node_rtp = answer_address(&ok);
    // We answer in the ACK with PCMA only.
    let answer = format!(
        "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=sendrecv\r\n",
        local_rtp.port()
    );
    let ack = uac.request_typed("ACK", "", "application/sdp", &answer);
    uac.send(&ack);
    let r = call_record(&dev.addr, &uac.call_id, |r| r["codec"] == "PCMA");
    assert_eq!(r["state"], "confirmed");
    // Media flows in PCMA, from the port the offer named.
    rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = rtp.recv_from(&mut buf).unwrap();
    assert_eq!(from, node_rtp);
    assert_eq!(RtpPacket::parse(&buf[..n]).unwrap().payload_type, 8);
    assert_eq!(uac.bye().status, 200);
}

/// Opus end to end (RFC 7587): a UAC offering only Opus (on its own dynamic payload type 107)
/// to `vaani dev --app echo --sip-codecs opus,pcmu` gets Opus on 107 in the 200's SDP, sends
/// 1 s of a 440 Hz tone as 20 ms Opus packets (48 kHz timestamps), and decodes the echoed
/// Opus back to the tone. A G.711-only caller on the same node still gets PCMU.
#[test]
fn rust_uac_opus_tone_is_echoed() {
    use vaani_media::codec::opus::{OpusDecoder, OpusEncoder};
    use vaani_media::codec::{PcmFrame, FRAME_SAMPLES};

    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(
        data.path().to_str().unwrap(),
        &["--app", "echo", "--sip-codecs", "opus,pcmu"],
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut uac = Uac::new(&dev.sip, "rust-uac-opus@127.0.0.1");
    let offer = format!(
        "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 107\r\na=rtpmap:107 opus/48000/2\r\n\
         a=fmtp:107 useinbandfec=1\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.local_addr().unwrap().port()
    );
    let ok = uac.invite_sdp(&offer, "");
    assert_eq!(ok.status, 200);
    let node_rtp = answer_address(&ok);
    let sdp = String::from_utf8_lossy(&ok.body).to_string();
    assert!(sdp.contains(" RTP/AVP 107\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtpmap:107 opus/48000/2\r\n"), "{sdp}");
    assert!(
        sdp.contains("a=fmtp:107 useinbandfec=1; stereo=0; sprop-stereo=0\r\n"),
        "{sdp}"
    );
    uac.ack();
    let r = call_record(&dev.addr, &uac.call_id, |r| r["state"] == "confirmed");
    assert_eq!(r["codec"], "opus", "{r}");

    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let rtp = rtp.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got: Vec<RtpHeader> = Vec::new();
            let mut dec = OpusDecoder::new().unwrap();
            let mut pcm: Vec<i16> = Vec::new();
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Acquire) {
                if let Ok((n, from)) = rtp.recv_from(&mut buf) {
                    assert_eq!(from, node_rtp, "symmetric RTP");
                    let p = RtpPacket::parse(&buf[..n]).unwrap();
                    assert_eq!(p.payload_type, 107, "the payload type we offered");
                    got.push(p.header());
                    dec.decode(p.sequence, p.payload, |f| pcm.extend_from_slice(&f.samples))
                        .unwrap();
                }
            }
            (got, pcm)
        })
    };

    // 1 s of 440 Hz at 16 kHz, 20 ms per Opus packet, timestamps +960 (48 kHz).
    let mut enc = OpusEncoder::new().unwrap();
    let ssrc = 0x0905_0001;
    let (mut seq, mut ts) = (3000u16, 77_000u32);
    let t0 = Instant::now();
    for k in 0..50u32 {
        let at = t0 + Duration::from_millis(20 * u64::from(k));
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let mut frame = PcmFrame::silence();
        for (i, s) in frame.samples.iter_mut().enumerate() {
            let n = (k as usize * FRAME_SAMPLES + i) as f64;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / 16_000.0).sin()) as i16;
        }
        let payload = enc.encode(&frame).unwrap().to_vec();
        let mut pkt = Vec::new();
        RtpHeader {
            marker: k == 0,
            payload_type: 107,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
        .write_to_vec(&payload, &mut pkt)
        .unwrap();
        rtp.send_to(&pkt, node_rtp).unwrap();
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Release);
    let (headers, pcm) = rx.join().unwrap();

    // The node's stream: 48 kHz timestamps, one 20 ms packet per sequence number.
    assert!(headers.len() >= 60, "{} packets", headers.len());
    for w in headers.windows(2) {
        if w[1].sequence == w[0].sequence.wrapping_add(1) {
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp) % 960, 0);
        }
    }
    let energy =
        |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64;
    let loud: Vec<i16> = pcm
        .chunks(FRAME_SAMPLES)
        .filter(|c| energy(c) > 1e6)
        .flatten()
        .copied()
        .collect();
    assert!(
        loud.len() >= 45 * FRAME_SAMPLES,
        "most of the second came back: {} loud frames of {}",
        loud.len() / FRAME_SAMPLES,
        pcm.len() / FRAME_SAMPLES
    );
    let at = |f: f64| goertzel(&loud, 16_000.0, f);
    for other in [300.0, 600.0, 1000.0, 2000.0, 3000.0] {
        assert!(at(440.0) > 50.0 * at(other), "440 Hz dominates {other} Hz");
    }
    let rms = energy(&loud).sqrt();
    let level_db = 20.0 * (rms / (8000.0 / 2f64.sqrt())).log10();
    assert!(level_db.abs() < 3.0, "echo level off by {level_db:.2} dB");
    let ok = uac.bye();
    assert_eq!((ok.status, ok.headers.cseq.method.as_str()), (200, "BYE"));

    // A G.711-only caller is still answered, with PCMU.
    let rtp2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac2 = Uac::new(&dev.sip, "rust-uac-opus-2@127.0.0.1");
    let ok = uac2.invite(rtp2.local_addr().unwrap(), "");
    assert_eq!(ok.status, 200);
    let sdp = String::from_utf8_lossy(&ok.body).to_string();
    assert!(sdp.contains(" RTP/AVP 0 101\r\n"), "{sdp}");
    uac2.ack();
    let r = call_record(&dev.addr, &uac2.call_id, |r| r["state"] == "confirmed");
    assert_eq!(r["codec"], "PCMU", "{r}");
    let ok = uac2.bye();
    assert_eq!(ok.status, 200);
}

/// Trunks from `--sip-trunks`: a carrier by its network (its calls are its tenant's, and a call
/// context naming another tenant is refused), an office PBX by Digest from any address (the
/// challenge answered with its user picks it, with its tenant), strangers refused.
#[test]
fn trunks_admit_by_network_or_digest_and_own_their_calls() {
    use vaani_media::sip::digest::{authorization, Challenge, Credentials, DigestRequest};
    let dir = tempfile::tempdir().unwrap();
    let trunks = dir.path().join("trunks.toml");
    std::fs::write(
        &trunks,
        "[[trunk]]\nname = \"carrier\"\ntenant = \"acme\"\nallow = [\"127.0.0.2/32\"]\n\n\
         [[trunk]]\nname = \"office-pbx\"\ntenant = \"globex\"\nauth_user = \"pbx\"\n\
         auth_password_env = \"VAANI_TEST_PBX_PASSWORD\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with_env(
        data.to_str().unwrap(),
        &["--sip-trunks", trunks.to_str().unwrap()],
        &[("VAANI_TEST_PBX_PASSWORD", "s3cret")],
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp_addr = rtp.local_addr().unwrap();

    // The carrier's network: answered, the call is acme's.
    let mut carrier = Uac::from_ip("127.0.0.2", &dev.sip, "trunk-carrier-1");
    let ok = carrier.invite(rtp_addr, "");
    assert_eq!(ok.status, 200);
    carrier.ack();
    let r = call_record(&dev.addr, "trunk-carrier-1", |_| true);
    assert_eq!(r["trunk"], "carrier", "{r}");
    assert_eq!(r["tenant"], "acme", "{r}");
    assert_eq!(carrier.bye().status, 200);
    // A context claiming another tenant from the carrier: 403.
    let mut liar = Uac::from_ip("127.0.0.2", &dev.sip, "trunk-carrier-2");
    assert_eq!(
        liar.invite(rtp_addr, "X-Vaani-Tenant: demo\r\n").status,
        403
    );

    // Elsewhere: a Digest challenge; the PBX's answer is admitted as the PBX, globex's.
    let mut pbx = Uac::from_ip("127.0.0.3", &dev.sip, "trunk-pbx-1");
    let challenged = pbx.invite(rtp_addr, "");
    assert_eq!(challenged.status, 401);
    let ch = challenged.headers.get("WWW-Authenticate").unwrap();
    let ch = Challenge::parse(ch).unwrap();
    let answer = |password: &str| {
        authorization(
            &ch,
            &Credentials {
                username: "pbx".into(),
                password: password.into(),
            },
            &DigestRequest {
                method: "INVITE",
                uri: &format!("sip:vaani@{}", dev.sip),
                body: b"",
                cnonce: "f00d",
                nc: 1,
            },
        )
        .unwrap()
    };
    pbx.to_tag = None;
    let ok = pbx.invite(
        rtp_addr,
        &format!("Authorization: {}\r\n", answer("s3cret")),
    );
    assert_eq!(ok.status, 200);
    pbx.ack();
    let r = call_record(&dev.addr, "trunk-pbx-1", |_| true);
    assert_eq!(r["trunk"], "office-pbx", "{r}");
    assert_eq!(r["tenant"], "globex", "{r}");
    assert_eq!(pbx.bye().status, 200);
    let mut guesser = Uac::from_ip("127.0.0.3", &dev.sip, "trunk-pbx-2");
    let wrong = guesser.invite(rtp_addr, &format!("Authorization: {}\r\n", answer("guess")));
    assert_eq!(wrong.status, 403);
}
