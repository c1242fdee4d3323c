//! A browser calls the node over WebRTC: headless Chromium opens `vaani dev`'s call page,
//! which signals WHIP-style to `/webrtc/demo` with the media token the page was served with.
//!
//! Chromium's fake microphone plays a 440 Hz WAV this test writes; the node's echo app sends
//! it back over Opus; the page (with `?measure=1`) analyses what it receives and publishes the
//! dominant frequency and level as `window.vaaniStats`, which the test reads over the DevTools
//! protocol (`Runtime.evaluate`). The test then hangs up through the page (a WHIP `DELETE`)
//! and checks the node's record of the call (`GET /debug/webrtc/calls`) and its metrics.
//!
//! Skipped (with a printed line) when Chromium is not installed, unless
//! `VAANI_REQUIRE_CHROMIUM` is set, as `scripts/test.sh` does after installing it. The
//! signalling refusals (`whip_refusals`) need no browser and always run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::f64::consts::PI;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{request, start_dev, start_dev_with, Dev};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 48_000;
const TONE_HZ: f64 = 440.0;
/// A quarter of full scale: an RMS level of -15.05 dBFS.
const AMPLITUDE: f64 = 8192.0;

fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("VAANI_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required (apt-get install chromium)"
        );
        eprintln!("skipping: Chromium not installed (apt-get install chromium)");
    }
    found
}

/// A 16-bit mono WAV of the test tone.
fn write_tone(path: &Path, seconds: u32) {
    let n = RATE * seconds;
    let mut wav = Vec::with_capacity(44 + 2 * n as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(2 * RATE).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let v = AMPLITUDE * (2.0 * PI * TONE_HZ * f64::from(i) / f64::from(RATE)).sin();
        wav.extend_from_slice(&(v.round() as i16).to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// Headless Chromium on `url`, killed on drop.
struct Browser {
    child: Child,
    /// `host:port` of its DevTools HTTP endpoint.
    devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(bin: &Path, dir: &Path, wav: &Path, url: &str) -> Browser {
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                // Loopback is all this test's node listens on; Chromium skips it unless told.
                "--allow-loopback-in-peer-connection",
                // The page plays and analyses the answer without a click.
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}",
                wav.display()
            ))
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut devtools = None;
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(ws) = line.strip_prefix("DevTools listening on ws://") {
                devtools = ws.split('/').next().map(str::to_string);
                break;
            }
        }
        // Keep draining stderr so Chromium never blocks on it.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let devtools = devtools.expect("Chromium printed no DevTools address");
        Browser { child, devtools }
    }

    /// The DevTools WebSocket URL of the page whose URL contains `needle`.
    fn page(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = request(&self.devtools, "GET", "/json/list", &[], "");
            if let Ok(targets) = serde_json::from_str::<serde_json::Value>(&r.body) {
                let found = targets.as_array().and_then(|ts| {
                    ts.iter().find(|t| {
                        t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(needle))
                    })
                });
                if let Some(ws) = found.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                    return ws.to_string();
                }
            }
            assert!(Instant::now() < deadline, "no page target: {}", r.body);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A DevTools session with one page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    async fn connect(url: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page { ws, next_id: 1 }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let cmd = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true, "awaitPromise": true },
        });
        self.ws
            .send(Message::Text(cmd.to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("DevTools answers")
                .expect("DevTools socket open")
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["result"]["exceptionDetails"].is_null(), "{v}");
                return v["result"]["result"]["value"].clone();
            }
        }
    }
}

fn calls(dev: &Dev) -> serde_json::Value {
    let r = request(&dev.addr, "GET", "/debug/webrtc/calls", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn metric(dev: &Dev, series: &str) -> Option<f64> {
    let r = request(&dev.addr, "GET", "/metrics", &[], "");
    r.body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .and_then(|v| v.parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_call_hears_its_tone_echoed() {
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 10);
    let data = dir.path().join("data");
    let dev = start_dev(data.to_str().unwrap());
    let url = format!("http://{}/?autocall=1&measure=1&raw=1", dev.addr);
    let browser = Browser::start(&bin, dir.path(), &wav, &url);
    let mut page = Page::connect(&browser.page("autocall=1")).await;

    // Three seconds of tone back: 15 loud analysis windows.
    let deadline = Instant::now() + Duration::from_secs(45);
    let stats = loop {
        let v = page
            .eval("({ state: window.vaaniState || null, stats: window.vaaniStats || null })")
            .await;
        if v["stats"]["loud"].as_u64().unwrap_or(0) >= 15 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no echoed audio in time: {v} (calls: {})",
            calls(&dev)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("page: {stats}");
    assert_eq!(stats["state"], "connected");
    let s = &stats["stats"];
    // The tone, not noise or a resampling artefact: the strongest component of nearly every
    // loud window is at 440 Hz (the page scans in 10 Hz steps).
    let at_tone = s["peaks"]["440"].as_u64().unwrap_or(0);
    let loud = s["loud"].as_u64().unwrap();
    assert!(at_tone * 10 >= loud * 9, "peaks {}", s["peaks"]);
    // At about the level sent: -15.05 dBFS (a quarter of full scale) through two Opus
    // codecs, two resamplers and the browser's playout.
    let level = s["levelDb"].as_f64().unwrap();
    let sent = 20.0 * (AMPLITUDE / 32768.0 / 2f64.sqrt()).log10();
    assert!(
        (level - sent).abs() < 3.0,
        "level {level:.1} dBFS, sent {sent:.1}"
    );

    let live = calls(&dev);
    let call = &live["live"][0];
    assert_eq!(call["state"], "connected", "{live}");
    assert_eq!(call["tenant"], "demo");
    assert!(call["call_id"].as_str().unwrap().starts_with("web-"));
    assert_eq!(
        metric(&dev, "vaani_active_calls{transport=\"webrtc\"}"),
        Some(1.0)
    );

    // Hang up from the page: a DELETE on the session URL.
    assert_eq!(
        page.eval("window.vaaniHangup().then(() => window.vaaniState)")
            .await,
        "ended"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let c = calls(&dev);
        if c["live"].as_array().unwrap().is_empty() && !c["ended"][0].is_null() {
            break c["ended"][0].clone();
        }
        assert!(Instant::now() < deadline, "call did not end: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended["end_reason"], "delete", "{ended}");
    assert_eq!(ended["session"], call["session"]);
    // Both directions carried the call: ~50 packets a second each way.
    assert!(ended["packets_received"].as_u64().unwrap() > 100, "{ended}");
    assert!(ended["packets_sent"].as_u64().unwrap() > 100, "{ended}");
    assert_eq!(
        metric(
            &dev,
            "vaani_calls_ended_total{transport=\"webrtc\",reason=\"caller_hangup\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&dev, "vaani_active_calls{transport=\"webrtc\"}"),
        Some(0.0)
    );
    // The page's token started its call; it cannot start another.
    let cfg = page
        .eval("JSON.parse(document.getElementById('vaani-config').textContent)")
        .await;
    let r = request(
        &dev.addr,
        "POST",
        &format!("/webrtc/demo?call_id={}", cfg["call_id"].as_str().unwrap()),
        &[
            ("Content-Type".into(), "application/sdp".into()),
            (
                "Authorization".into(),
                format!("Bearer {}", cfg["token"].as_str().unwrap()),
            ),
        ],
        include_str!("../media-node/src/webrtc/testdata/chrome_offer.sdp"),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    drop(browser);
}

/// The page's config: tenant, call id and token, as served.
fn page_config(dev: &Dev) -> serde_json::Value {
    let r = request(&dev.addr, "GET", "/", &[], "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Nothing from outside: no external scripts, styles or images.
    assert!(!r.body.contains("http://") && !r.body.contains("https://"));
    assert!(r.body.contains("id=\"transcript\""));
    let start = r.body.find("\"application/json\">").unwrap() + "\"application/json\">".len();
    let end = start + r.body[start..].find("</script>").unwrap();
    serde_json::from_str(&r.body[start..end]).unwrap()
}

#[test]
fn whip_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path().join("data").to_str().unwrap());
    let cfg = page_config(&dev);
    assert_eq!(cfg["tenant"], "demo");
    let call_id = cfg["call_id"].as_str().unwrap();
    let token = cfg["token"].as_str().unwrap();
    // Every page load mints a new call id.
    assert_ne!(page_config(&dev)["call_id"], cfg["call_id"]);

    let sdp = ("Content-Type".to_string(), "application/sdp".to_string());
    let bearer = |t: &str| ("Authorization".to_string(), format!("Bearer {t}"));
    let path = format!("/webrtc/demo?call_id={call_id}");
    let post = |headers: &[(String, String)], path: &str, body: &str| {
        request(&dev.addr, "POST", path, headers, body)
    };

    let r = post(&[bearer(token)], &path, "v=0\r\n");
    assert_eq!(r.status, 415, "no content type: {}", r.body);
    let r = post(
        &[bearer(token), ("Content-Type".into(), "text/plain".into())],
        &path,
        "v=0\r\n",
    );
    assert_eq!(r.status, 415);

    let r = post(std::slice::from_ref(&sdp), &path, "v=0\r\n");
    assert_eq!(r.status, 401, "no token: {}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.body.starts_with("missing_token"), "{}", r.body);
    let r = post(&[sdp.clone(), bearer("v1.1.abc")], &path, "v=0\r\n");
    assert_eq!(r.status, 401, "forged token: {}", r.body);
    let r = post(&[sdp.clone(), bearer(token)], "/webrtc/demo", "v=0\r\n");
    assert_eq!(r.status, 401, "no call id: {}", r.body);
    let r = post(
        &[sdp.clone(), bearer(token)],
        "/webrtc/demo?call_id=web-other",
        "v=0\r\n",
    );
    assert_eq!(r.status, 401, "token for another call: {}", r.body);
    let r = post(
        &[sdp.clone(), bearer(token)],
        &format!("/webrtc/acme?call_id={call_id}"),
        "v=0\r\n",
    );
    assert_eq!(r.status, 401, "token for another tenant: {}", r.body);
    // The token in the query works as well as in the header.
    let r = post(
        std::slice::from_ref(&sdp),
        &format!("{path}&token={token}"),
        "hello",
    );
    assert_eq!(r.status, 400, "unparsable SDP: {}", r.body);
    assert!(r.body.starts_with("bad_sdp"), "{}", r.body);
    let r = post(
        &[sdp.clone(), bearer(token)],
        &path,
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    );
    assert_eq!(r.status, 400, "a SIP phone's offer: {}", r.body);
    let r = post(&[sdp.clone(), bearer(token)], &path, &"a".repeat(20_000));
    assert_eq!(r.status, 413, "{}", r.body);
    let r = post(
        &[sdp.clone(), bearer(token)],
        "/webrtc/no%20such?x",
        "v=0\r\n",
    );
    assert_eq!(r.status, 404);

    let del = |path: &str, headers: &[(String, String)]| {
        request(&dev.addr, "DELETE", path, headers, "").status
    };
    assert_eq!(del("/webrtc/demo/0123456789abcdef", &[bearer(token)]), 404);
    assert_eq!(del("/webrtc/demo/not-a-session", &[bearer(token)]), 404);
    assert_eq!(calls(&dev)["live"], serde_json::json!([]));

    // A full node refuses before anything else is set up.
    let dir = tempfile::tempdir().unwrap();
    let full = start_dev_with(
        dir.path().join("data").to_str().unwrap(),
        &["--max-calls", "0"],
    );
    let cfg = page_config(&full);
    let path = format!("/webrtc/demo?call_id={}", cfg["call_id"].as_str().unwrap());
    let offer = include_str!("../media-node/src/webrtc/testdata/chrome_offer.sdp");
    let r = request(
        &full.addr,
        "POST",
        &path,
        &[sdp, bearer(cfg["token"].as_str().unwrap())],
        offer,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
}

/// A WHIP session end to end without a browser: Chromium's recorded offer (whose candidates
/// nobody answers) gets an answer and a session URL; the session hangs up on DELETE with the
/// call's own token only; the token cannot start a second call.
#[test]
fn whip_session_without_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev_with(
        dir.path().join("data").to_str().unwrap(),
        &["--rtp-ports", "31000-31099"],
    );
    let cfg = page_config(&dev);
    let other = page_config(&dev);
    let call_id = cfg["call_id"].as_str().unwrap();
    let token = cfg["token"].as_str().unwrap();
    let sdp = ("Content-Type".to_string(), "application/sdp".to_string());
    let bearer = |t: &str| ("Authorization".to_string(), format!("Bearer {t}"));
    let offer = include_str!("../media-node/src/webrtc/testdata/chrome_offer.sdp");
    let path = format!("/webrtc/demo?call_id={call_id}");
    let r = request(
        &dev.addr,
        "POST",
        &path,
        &[sdp.clone(), bearer(token)],
        offer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").unwrap().to_string();
    let session = location.strip_prefix("/webrtc/demo/").unwrap();
    assert_eq!(session.len(), 16, "{location}");
    // The answer: Opus, DTLS, and one host candidate on loopback in the RTP range.
    let answer = &r.body;
    assert!(answer.starts_with("v=0\r\n"), "{answer}");
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(answer.contains("a=fingerprint:sha-256 "), "{answer}");
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    // Component 1 (RTP) and 2 (RTCP, muxed on the same socket): one address, one port.
    assert!(!candidates.is_empty(), "{answer}");
    let ports: Vec<u16> = candidates
        .iter()
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            assert_eq!((f[2], f[4], f[7]), ("udp", "127.0.0.1", "host"), "{c}");
            f[5].parse().unwrap()
        })
        .collect();
    let port = ports[0];
    assert!(ports.iter().all(|p| *p == port), "{answer}");
    assert!((31000..=31099).contains(&port) && port & 1 == 0, "{port}");

    let c = calls(&dev);
    assert_eq!(c["live"][0]["session"], session, "{c}");
    assert_eq!(c["live"][0]["udp_port"], port);
    assert_eq!(c["live"][0]["state"], "connecting");
    assert_eq!(
        metric(&dev, "vaani_active_calls{transport=\"webrtc\"}"),
        Some(1.0)
    );

    // One token, one call.
    let again = request(&dev.addr, "POST", &path, &[sdp, bearer(token)], offer);
    assert_eq!(again.status, 409, "{}", again.body);

    let del = |headers: &[(String, String)]| request(&dev.addr, "DELETE", &location, headers, "");
    assert_eq!(del(&[]).status, 401);
    let r = del(&[bearer(other["token"].as_str().unwrap())]);
    assert_eq!(r.status, 401, "another call's token: {}", r.body);
    assert_eq!(del(&[bearer(token)]).status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = calls(&dev);
        if c["live"].as_array().unwrap().is_empty() {
            assert_eq!(c["ended"][0]["end_reason"], "delete", "{c}");
            break;
        }
        assert!(Instant::now() < deadline, "not ended: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(del(&[bearer(token)]).status, 404, "gone once ended");
    assert_eq!(
        metric(&dev, "vaani_active_calls{transport=\"webrtc\"}"),
        Some(0.0)
    );
}

/// SIGTERM drains the node: new offers get 503, and a WebRTC call still up at the drain
/// deadline is hung up with reason `shutdown`, which the call-events queue records.
#[test]
fn drain_refuses_offers_and_hangs_up_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev = start_dev_with(data.to_str().unwrap(), &["--drain-timeout", "1"]);
    let cfg = page_config(&dev);
    let later = page_config(&dev);
    let sdp = ("Content-Type".to_string(), "application/sdp".to_string());
    let bearer = |t: &serde_json::Value| {
        (
            "Authorization".to_string(),
            format!("Bearer {}", t.as_str().unwrap()),
        )
    };
    let offer = include_str!("../media-node/src/webrtc/testdata/chrome_offer.sdp");
    let post = |cfg: &serde_json::Value| {
        let path = format!("/webrtc/demo?call_id={}", cfg["call_id"].as_str().unwrap());
        request(
            &dev.addr,
            "POST",
            &path,
            &[sdp.clone(), bearer(&cfg["token"])],
            offer,
        )
    };
    // Nobody answers this offer's candidates: the call stays up, connecting, past the drain.
    let r = post(&cfg);
    assert_eq!(r.status, 201, "{}", r.body);

    let pid = dev.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = post(&later);
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("5"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offers still taken: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "vaani dev did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ends = rt.block_on(async {
        let store = vaani_store::embedded::EmbeddedStore::open(&data)
            .unwrap()
            .stores();
        let msgs = store
            .queue
            .receive(
                vaani_store::queues::CALL_EVENTS,
                10,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        msgs.into_iter()
            .map(|m| serde_json::from_str::<serde_json::Value>(&m.body).unwrap())
            .filter(|v| v["kind"] == vaani_events::MediaCallEnded::KIND)
            .collect::<Vec<_>>()
    });
    // The first call ended at the deadline. (An offer that raced SIGTERM, before the node
    // marked itself draining, may have been taken too: it ends the same way.)
    assert!(
        ends.iter().any(|e| e["call_id"] == cfg["call_id"]),
        "{ends:?}"
    );
    assert!(ends.len() <= 2, "{ends:?}");
    for e in &ends {
        assert_eq!(e["transport"], "webrtc");
        assert_eq!(e["reason"], "shutdown");
    }
}
