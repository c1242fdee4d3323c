//! Calls the node places, end to end against `vaani dev --app echo` over loopback:
//!
//! - sipp as UAS (`tests/sip/uas_media.xml`) ← `vaani dial --wait`: 180, 200 + SDP, our ACK,
//!   sipp streams 3 s of a tone, the node's RTP timeout hangs up with BYE, sipp answers 200
//!   and exits 0; the node's registry shows the call outbound, answered, with sipp's RTP.
//!   Again over TCP: a `;transport=tcp` target and sipp `-t t1`.
//! - baresip auto-answering (`tests/baresip/accounts-answer`) ← `POST /node/calls`: baresip
//!   plays a 1 kHz tone, the node's echo app plays it back, and the recording of what baresip
//!   received is checked for the tone's frequency and level (Goertzel).
//! - Blind transfer out: sipp (`tests/sip/uas_refer.xml`) answers the node's call, takes
//!   its REFER (`POST /node/calls/{call_id}/transfer`) with 202, sends NOTIFYs (sipfrag 100,
//!   then 200), and the node ends its leg with BYE.
//! - The node as transferee: sipp (`tests/sip/uac_refer_in.xml`) calls it and REFERs it to
//!   a second sipp; the node calls that one and NOTIFYs sipfrag 100/180/200; a REFER to an
//!   address outside `--sip-allow` (`uac_refer_declined.xml`) gets 603.
//! - `POST /node/calls` refusals (token, tenant, call id, DNS-needing target, bad JSON) and a
//!   call refused with 486 by a Rust UAS: `vaani dial --wait` reports it and exits 1, the
//!   registry and metrics count it `not_connected`.
//!
//! sipp and baresip tests are skipped when the tool is missing, unless `VAANI_REQUIRE_SIPP` /
//! `VAANI_REQUIRE_BARESIP` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::baresip::{
    assert_heard_tone, baresip_available, get, write_tone_wav, Baresip, PhoneSetup,
};
use common::{post, start_dev_with, stdout};
use vaani_media::codec::g711;
use vaani_media::sip::message::SipMessage;

/// The node's record of the call with this SIP Call-ID, once `pred` holds for it.
fn call_record(
    http: &str,
    sip_call_id: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
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

/// A media token for `(tenant, call_id)` signed with the key `vaani dev` keeps in `data`.
fn token(data: &std::path::Path, tenant: &str, call_id: &str) -> String {
    let key = hex::decode(
        std::fs::read_to_string(data.join("media-token.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    vaani_core::token::issue(&key, tenant, call_id, chrono::Utc::now(), 300)
}

fn dial_body(to: &str, call_id: &str) -> String {
    serde_json::json!({"to": to, "from": "vaani", "tenant": "demo", "call_id": call_id}).to_string()
}

fn bearer(t: &str) -> Vec<(String, String)> {
    vec![
        ("Authorization".into(), format!("Bearer {t}")),
        ("Content-Type".into(), "application/json".into()),
    ]
}

fn free_even_udp_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p & 1 == 0 && p < 65_000 && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

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
fn sipp_uas_answers_a_call_placed_with_vaani_dial() {
    sipp_uas_answers_over(Transport::Udp);
}

/// The same over TCP: `;transport=tcp` in the target makes the node connect to sipp (`-t t1`,
/// which takes nothing else) and carry the whole call's signalling on that connection.
#[test]
fn sipp_uas_answers_a_call_placed_over_tcp() {
    sipp_uas_answers_over(Transport::Tcp);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

fn sipp_uas_answers_over(transport: Transport) {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with(data.to_str().unwrap(), &["--rtp-timeout", "2"]);
    let (sipp, sip_port) = start_sipp_uas(dir.path(), "uas_media.xml", transport);
    let target_param = match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };

    let dial = Command::new(env!("CARGO_BIN_EXE_vaani"))
        .args([
            "dial",
            &format!("sip:service@127.0.0.1:{sip_port}{target_param}"),
        ])
        .args(["--dev", &format!("http://{}", dev.addr)])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--from",
            "+911140000000",
            "--wait",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = stdout(&dial);
    assert_sipp_ok(sipp);
    assert_eq!(dial.status.code(), Some(0), "{out}\n{dial:?}");
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    let sip_call_id = first
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("sip_call_id="))
        .unwrap()
        .to_string();
    assert!(first.starts_with("call_id=dial-"), "{out}");
    assert!(out.contains("\nconfirmed\n"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("ended: local_hangup: RTP timeout (connected: yes"),
        "{out}"
    );

    let r = call_record(&dev.addr, &sip_call_id, |r| r["state"] == "ended");
    assert_eq!(r["direction"], "outbound", "{r}");
    assert_eq!(r["tenant"], "demo", "{r}");
    assert_eq!(r["source"], format!("127.0.0.1:{sip_port}"), "{r}");
    assert_eq!(r["codec"], "PCMU", "{r}");
    assert!(!r["answered_at"].is_null(), "{r}");
    assert!(
        r["latched"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r}"
    );
    // 3 s of audio at 50 packets/s came from sipp; the echo went back.
    assert!(r["rtp_received"].as_u64().unwrap() >= 140, "{r}");
    assert!(r["rtp_sent"].as_u64().unwrap() >= 140, "{r}");
}

/// sipp with `scenario` as UAS on a free port over `transport` (waits until it listens),
/// streaming 3 s of a 440 Hz tone after the ACK.
fn start_sipp_uas(
    dir: &std::path::Path,
    scenario: &str,
    transport: Transport,
) -> (std::process::Child, u16) {
    let audio = dir.join("tone.ul");
    let ulaw: Vec<u8> = (0..24_000)
        .map(|i| {
            let x = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin();
            g711::linear_to_ulaw(x as i16)
        })
        .collect();
    std::fs::write(&audio, ulaw).unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/tests/sip/{scenario}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("@AUDIO_UL@", audio.to_str().unwrap());
    let sf = dir.join(scenario);
    std::fs::write(&sf, text).unwrap();
    let (sip_port, media_port) = (free_even_udp_port(), free_even_udp_port());
    let sipp_transport = match transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
    };
    let sipp = Command::new("sipp")
        .args(["-sf", sf.to_str().unwrap(), "-i", "127.0.0.1"])
        .args(["-p", &sip_port.to_string(), "-mi", "127.0.0.1"])
        .args(["-mp", &media_port.to_string(), "-t", sipp_transport])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sipp");
    // sipp listens once its port is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    let free = |port| match transport {
        Transport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_ok(),
        Transport::Tcp => std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
    };
    while free(sip_port) {
        assert!(Instant::now() < deadline, "sipp did not bind {sip_port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (sipp, sip_port)
}

fn assert_sipp_ok(sipp: std::process::Child) {
    let out = sipp.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sipp_takes_a_blind_transfer_and_the_node_leaves() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with(data.to_str().unwrap(), &[]);
    let (sipp, port) = start_sipp_uas(dir.path(), "uas_refer.xml", Transport::Udp);
    let call_id = "xfer-1";
    let auth = bearer(&token(&data, "demo", call_id));
    let (status, body) = post(
        &dev.addr,
        "/node/calls",
        &auth,
        &dial_body(&format!("sip:service@127.0.0.1:{port}"), call_id),
    );
    assert_eq!(status, 201, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sip_call_id = reply["sip_call_id"].as_str().unwrap().to_string();
    call_record(&dev.addr, &sip_call_id, |r| r["state"] == "confirmed");

    let transfer = |token: &str, to: &str| {
        post(
            &dev.addr,
            &format!("/node/calls/{call_id}/transfer"),
            &bearer(token),
            &serde_json::json!({"to": to, "tenant": "demo"}).to_string(),
        )
    };
    // A token for another call, a target that is not a URI, an unknown call.
    let (status, _) = transfer(&token(&data, "demo", "xfer-2"), "sip:carol@127.0.0.1:5099");
    assert_eq!(status, 401);
    let (status, _) = transfer(&token(&data, "demo", call_id), "carol");
    assert_eq!(status, 400);
    let (status, _) = post(
        &dev.addr,
        "/node/calls/xfer-2/transfer",
        &bearer(&token(&data, "demo", "xfer-2")),
        &serde_json::json!({"to": "sip:carol@127.0.0.1:5099", "tenant": "demo"}).to_string(),
    );
    assert_eq!(status, 404);
    let (status, body) = transfer(&token(&data, "demo", call_id), "sip:carol@127.0.0.1:5099");
    assert_eq!(status, 202, "{body}");

    assert_sipp_ok(sipp);
    let r = call_record(&dev.addr, &sip_call_id, |r| r["state"] == "ended");
    assert_eq!(r["transfer"], "succeeded: 200", "{r}");
    assert_eq!(r["end_reason"], "local_hangup: transferred", "{r}");
    let metrics = get(&dev.addr, "/metrics");
    assert!(
        metrics.contains("vaani_calls_ended_total{transport=\"sip\",reason=\"agent_hangup\"} 1"),
        "{metrics}"
    );
}

#[test]
fn node_calls_baresip_and_baresip_hears_its_tone_back() {
    if !baresip_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 30 s of tone: baresip hangs up when its source ends, long after this call.
    let wav = dir.path().join("tone.wav");
    write_tone_wav(&wav, 30);
    let setup = PhoneSetup::write(dir.path(), "accounts-answer", &wav);
    let dev = start_dev_with(data.to_str().unwrap(), &["--app", "echo"]);
    let mut phone = Baresip::start(&setup.cfg, setup.ctrl_port);

    let call_id = "out-baresip-1";
    let (status, body) = post(
        &dev.addr,
        "/node/calls",
        &bearer(&token(&data, "demo", call_id)),
        &dial_body(&format!("sip:uas@127.0.0.1:{}", setup.sip_port), call_id),
    );
    assert_eq!(status, 201, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["call_id"], call_id);
    let sip_call_id = reply["sip_call_id"].as_str().unwrap().to_string();

    let established = phone.event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert_eq!(established["id"], sip_call_id.as_str(), "{established}");
    let r = call_record(&dev.addr, &sip_call_id, |r| r["state"] == "confirmed");
    assert_eq!(r["direction"], "outbound", "{r}");
    std::thread::sleep(Duration::from_secs(4));
    phone.command("hangup", "");
    phone.event("CALL_CLOSED", Duration::from_secs(10));
    phone.quit();

    let r = call_record(&dev.addr, &sip_call_id, |r| r["state"] == "ended");
    assert_eq!(r["end_reason"], "remote_bye", "{r}");
    assert_eq!(r["call_id"], call_id, "{r}");
    assert_eq!(r["codec"], "PCMU", "{r}");
    assert!(
        r["rtp_received"].as_u64().unwrap() >= 150 && r["rtp_sent"].as_u64().unwrap() >= 150,
        "{r}"
    );
    // What baresip decoded from the node is its own tone, echoed.
    assert_heard_tone(&setup.rec, 2.5, &phone.output());
    let metrics = get(&dev.addr, "/metrics");
    assert!(
        metrics.contains("vaani_calls_ended_total{transport=\"sip\",reason=\"caller_hangup\"} 1"),
        "{metrics}"
    );
}

/// A UAS that refuses one INVITE with 486 and takes the ACK; returns the INVITE's text.
fn busy_uas(socket: UdpSocket) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 65_535];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let Ok(SipMessage::Request(invite)) = SipMessage::parse(&buf[..n]) else {
            panic!("not a request: {text}")
        };
        let busy = invite.response(486, Some("busy1"));
        socket.send_to(&busy.to_bytes(), from).unwrap();
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"ACK "), "expected the ACK");
        text
    })
}

#[test]
fn node_calls_api_refusals_and_a_busy_callee() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with(data.to_str().unwrap(), &[]);
    let to = "sip:bob@127.0.0.1:9";
    let ok_token = token(&data, "demo", "c-1");

    // No token, a token for another tenant or call, a bad signature: 401.
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    let (status, body) = post(&dev.addr, "/node/calls", &json, &dial_body(to, "c-1"));
    assert_eq!(status, 401, "{body}");
    for t in [
        token(&data, "other", "c-1"),
        token(&data, "demo", "c-2"),
        format!("{ok_token}x"),
    ] {
        let (status, body) = post(&dev.addr, "/node/calls", &bearer(&t), &dial_body(to, "c-1"));
        assert_eq!(status, 401, "{body}");
    }
    // Without a call id the token must be tenant-wide ("*").
    let no_id = serde_json::json!({"to": to, "tenant": "demo"}).to_string();
    let (status, _) = post(&dev.addr, "/node/calls", &bearer(&ok_token), &no_id);
    assert_eq!(status, 401);
    let dial_to = |to: &str| {
        post(
            &dev.addr,
            "/node/calls",
            &bearer(&ok_token),
            &dial_body(to, "c-1"),
        )
    };
    // A host name needs DNS, which the node does not do; bad JSON; bad From.
    let (status, body) = dial_to("sip:bob@trunk.example.com");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("DNS"), "{body}");
    let (status, _) = post(&dev.addr, "/node/calls", &bearer(&ok_token), "{");
    assert_eq!(status, 400);
    let bad_from = serde_json::json!({"to": to, "tenant": "demo", "call_id": "c-1", "from": "a b"});
    let (status, _) = post(
        &dev.addr,
        "/node/calls",
        &bearer(&ok_token),
        &bad_from.to_string(),
    );
    assert_eq!(status, 400);
    // TLS is not offered; a TCP target with nobody listening is a gateway failure.
    let (status, body) = dial_to("sip:bob@127.0.0.1:5999;transport=tls");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("udp or tcp"), "{body}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (status, body) = dial_to(&format!("sip:bob@127.0.0.1:{closed_port};transport=tcp"));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TCP connection"), "{body}");

    // A tenant-wide token places a call; the callee is busy.
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = callee.local_addr().unwrap().port();
    let uas = busy_uas(callee);
    let (status, body) = post(
        &dev.addr,
        "/node/calls",
        &bearer(&token(&data, "demo", "*")),
        &serde_json::json!({"to": format!("sip:bob@127.0.0.1:{port}"), "tenant": "demo"})
            .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(reply["call_id"].as_str().unwrap().starts_with("out-"));
    let invite = uas.join().unwrap();
    assert!(invite.starts_with(&format!("INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n")));
    assert!(invite.contains(";rport"), "{invite}");
    assert!(invite.contains("m=audio "), "{invite}");
    assert!(invite.contains("telephone-event/8000"), "{invite}");
    let r = call_record(&dev.addr, reply["sip_call_id"].as_str().unwrap(), |r| {
        r["state"] == "ended"
    });
    assert_eq!(r["end_reason"], "failed: 486", "{r}");
    assert!(r["answered_at"].is_null(), "{r}");

    // `vaani dial --wait` says so and exits 1.
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = callee.local_addr().unwrap().port();
    let uas = busy_uas(callee);
    let dial = Command::new(env!("CARGO_BIN_EXE_vaani"))
        .args(["dial", &format!("sip:bob@127.0.0.1:{port}"), "--wait"])
        .args(["--dev", &format!("http://{}", dev.addr)])
        .args(["--data", data.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    uas.join().unwrap();
    let out = stdout(&dial);
    assert_eq!(dial.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("ended: failed: 486 (connected: no"),
        "{out}"
    );
    let metrics = get(&dev.addr, "/metrics");
    assert!(
        metrics.contains("vaani_calls_ended_total{transport=\"sip\",reason=\"not_connected\"} 2"),
        "{metrics}"
    );
}

/// Runs sipp as UAC with `scenario` against the node at `node`, its REFER naming `target`;
/// returns once sipp has exited successfully.
fn run_sipp_uac(dir: &std::path::Path, scenario: &str, node: &str, target: &str) {
    let sf = format!("{}/tests/sip/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let sipp = Command::new("sipp")
        .arg(node)
        .args(["-sf", &sf, "-i", "127.0.0.1", "-s", "echo"])
        .args(["-p", &free_even_udp_port().to_string()])
        .args(["-mi", "127.0.0.1", "-mp", &free_even_udp_port().to_string()])
        .args(["-set", "target", target])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sipp");
    assert_sipp_ok(sipp);
}

/// The node as transferee (RFC 5589 §6): sipp calls it, then REFERs it to a second sipp (a
/// UAS inside `--sip-allow`); the node answers 202, calls the target, and reports the call in
/// NOTIFYs (sipfrag 100, 180, 200) before the first sipp hangs up. A REFER to an address
/// outside `--sip-allow` is declined with 603, and nothing is sent there.
#[test]
fn the_node_carries_out_a_refer_from_the_far_end() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with(data.to_str().unwrap(), &["--rtp-timeout", "5"]);
    let (target, port) = start_sipp_uas(dir.path(), "uas_media.xml", Transport::Udp);
    run_sipp_uac(
        dir.path(),
        "uac_refer_in.xml",
        &dev.sip,
        &format!("127.0.0.1:{port}"),
    );
    // The target's call ends by the node's RTP timeout after sipp's 3 s of audio.
    assert_sipp_ok(target);
    let calls: serde_json::Value =
        serde_json::from_str(&get(&dev.addr, "/debug/sip/calls")).unwrap();
    let all: Vec<serde_json::Value> = ["live", "ended"]
        .iter()
        .flat_map(|k| calls[k].as_array().cloned().unwrap_or_default())
        .collect();
    let first = all
        .iter()
        .find(|r| r["direction"] == "inbound")
        .expect("the referrer's call");
    assert_eq!(first["transfer"], "referred: 200", "{first}");
    assert_eq!(first["end_reason"], "remote_bye", "{first}");
    let second = all
        .iter()
        .find(|r| r["direction"] == "outbound")
        .expect("the call to the target");
    assert_eq!(second["source"], format!("127.0.0.1:{port}"), "{second}");
    assert!(!second["answered_at"].is_null(), "{second}");

    // Outside --sip-allow (127.0.0.0/8 here): declined.
    run_sipp_uac(
        dir.path(),
        "uac_refer_declined.xml",
        &dev.sip,
        "192.0.2.9:5060",
    );
    let calls: serde_json::Value =
        serde_json::from_str(&get(&dev.addr, "/debug/sip/calls")).unwrap();
    let declined = ["live", "ended"]
        .iter()
        .flat_map(|k| calls[k].as_array().cloned().unwrap_or_default())
        .filter(|r| r["transfer"] == "referred: declined")
        .count();
    assert_eq!(declined, 1, "{calls}");
    let outbound = ["live", "ended"]
        .iter()
        .flat_map(|k| calls[k].as_array().cloned().unwrap_or_default())
        .filter(|r| r["direction"] == "outbound")
        .count();
    assert_eq!(
        outbound, 1,
        "no call placed for the declined REFER: {calls}"
    );
}
