//! Node operations end to end against `vaani dev`: `/metrics` follows a provider stream from
//! start to end with its reason, and SIGTERM drains the node: `/node/healthz` turns 503, the
//! registry entry says draining, new streams are refused with 503, the call up carries on,
//! and the process exits once it has ended. Every call's end is on the call-events queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{signed_post, start_dev_with, vaani};

/// The demo tenant's Twilio auth token in this test.
const TWILIO_SECRET: &str = "tw-token";
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use vaani_events::MediaCallEnded;
use vaani_store::embedded::EmbeddedStore;

/// `GET path`: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series in the node's `/metrics`.
fn metric(addr: &str, series: &str) -> Option<String> {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

/// Waits (up to 10 s) for a series to read `value`.
async fn wait_metric(addr: &str, series: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addr2 = addr.to_string();
        let s = series.to_string();
        let got = tokio::task::spawn_blocking(move || metric(&addr2, &s))
            .await
            .unwrap();
        if got.as_deref() == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer webhook for a new Twilio call (retried until the node has registered): the
/// stream URL, our call id and the media token.
async fn twilio_call(addr: &str, call_sid: &str) -> (String, String, String) {
    let addr = addr.to_string();
    let body = format!(
        "CallSid={call_sid}&AccountSid=AC1&CallStatus=ringing&Direction=inbound&From=%2B919876543210&To=%2B918047491899"
    );
    let xml = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            let (code, doc) =
                signed_post(&addr, "twilio", "tw-token", "/v1/demo/twilio/answer", &body);
            assert_eq!(code, 200, "{doc}");
            if doc.contains("ws://") {
                return doc;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the answer never routed to the dev media node");
    })
    .await
    .unwrap();
    let attr = |after: &str, name: &str| -> String {
        let rest = xml.split(after).nth(1).unwrap_or_default();
        rest.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    (
        attr("<Stream", "url").replace("&amp;", "&"),
        attr("name=\"vaani_call_id\"", "value"),
        attr("name=\"vaani_token\"", "value"),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket request to `url` with Twilio's upgrade signature.
fn signed(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in common::twilio_upgrade_signature(url, TWILIO_SECRET) {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

/// Opens a Twilio stream and sends `connected` + `start`.
async fn open_stream(url: &str, call_sid: &str, call_id: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(signed(url)).await.unwrap();
    ws.send(Message::text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    ))
    .await
    .unwrap();
    let start = serde_json::json!({
        "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": call_sid, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"vaani_call_id": call_id, "vaani_token": token}}
    });
    ws.send(Message::text(start.to_string())).await.unwrap();
    ws
}

async fn stop_stream(ws: &mut Ws, call_sid: &str) {
    let stop = serde_json::json!({"event": "stop", "sequenceNumber": "2", "streamSid": "MZ1",
        "stop": {"accountSid": "AC1", "callSid": call_sid}});
    ws.send(Message::text(stop.to_string())).await.unwrap();
    // The node closes its side.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
}

async fn registry_draining(data: &Path) -> Option<bool> {
    let store = EmbeddedStore::open(data).unwrap().stores();
    let nodes = store.nodes.list_nodes().await.unwrap();
    nodes.iter().find(|n| n.id == "dev").map(|n| n.draining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_calls_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let mut dev = start_dev_with(&data, &["--drain-timeout", "20"]);
    let set = vaani(&[
        "tenant",
        "set",
        "demo",
        "--provider",
        "twilio",
        "--secret",
        TWILIO_SECRET,
        "--data",
        &data,
    ]);
    assert_eq!(set.status.code(), Some(0));
    let addr = dev.addr.clone();
    let active = "vaani_active_calls{transport=\"stream\"}";
    let hangups = "vaani_calls_ended_total{transport=\"stream\",reason=\"caller_hangup\"}";
    assert_eq!(metric(&addr, active).as_deref(), Some("0"));
    assert_eq!(get(&addr, "/node/healthz").0, 200);

    // A call: up in the metrics while it lasts, ended with its reason after.
    let (url, call_1, token) = twilio_call(&addr, "CAops1").await;
    assert!(url.ends_with("/streams/demo/twilio"), "{url}");
    let mut ws = open_stream(&url, "CAops1", &call_1, &token).await;
    wait_metric(&addr, active, "1").await;
    assert_eq!(metric(&addr, hangups).as_deref(), Some("0"));
    stop_stream(&mut ws, "CAops1").await;
    wait_metric(&addr, active, "0").await;
    wait_metric(&addr, hangups, "1").await;
    let frames_in: u64 = metric(&addr, "vaani_stream_frames_received_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(frames_in >= 3, "connected, start and stop: {frames_in}");

    // A second call is up when SIGTERM comes.
    let (url, call_2, token) = twilio_call(&addr, "CAops2").await;
    let mut ws = open_stream(&url, "CAops2", &call_2, &token).await;
    wait_metric(&addr, active, "1").await;
    assert_eq!(registry_draining(dir.path()).await, Some(false));
    let pid = dev.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&addr, "/node/healthz").0 != 503 {
        assert!(Instant::now() < deadline, "/node/healthz never turned 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(&addr, "vaani_node_draining", "1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry_draining(dir.path()).await != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the registry never said draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New streams are refused; the call up carries on (the echo still answers).
    match tokio_tungstenite::connect_async(signed(&url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            assert_eq!(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("5")
            );
        }
        other => panic!("a new stream while draining: {other:?}"),
    }
    let media = serde_json::json!({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "//////////////////////////8="}});
    ws.send(Message::text(media.to_string())).await.unwrap();
    ws.send(Message::text(r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"3","dtmf":{"track":"inbound_track","digit":"5"}}"#)).await.unwrap();
    let mut marked = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v["event"] == "mark" {
                marked = true;
                break;
            }
        }
    }
    assert!(marked, "the call up stopped being served while draining");
    assert!(
        dev.child.try_wait().unwrap().is_none(),
        "exited with a call up"
    );

    // The call ends: the node exits soon after, well before the drain deadline.
    let ended = Instant::now();
    stop_stream(&mut ws, "CAops2").await;
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(10),
            "vaani dev did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    // Both ends are on the call-events queue, once each, with their reason.
    let store = EmbeddedStore::open(dir.path()).unwrap().stores();
    let mut ends = Vec::new();
    for _ in 0..5 {
        let msgs = store
            .queue
            .receive(
                vaani_store::queues::CALL_EVENTS,
                10,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            if v["kind"] == MediaCallEnded::KIND {
                ends.push(serde_json::from_value::<MediaCallEnded>(v).unwrap());
            }
        }
    }
    ends.sort_by_key(|e| e.ended_at);
    let got: Vec<_> = ends
        .iter()
        .map(|e| {
            (
                e.call_id.as_str(),
                e.tenant.as_str(),
                e.transport.as_str(),
                e.reason.as_str(),
                e.node_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (call_1.as_str(), "demo", "stream", "caller_hangup", "dev"),
            (call_2.as_str(), "demo", "stream", "caller_hangup", "dev"),
        ]
    );
    // The node left the registry.
    assert_eq!(registry_draining(dir.path()).await, None);
}
