//! Shared helpers for the cloud-engine tests: local WebSocket and HTTP servers on
//! 127.0.0.1 that speak a provider's protocol from a script, a log capture that lets tests
//! check no key is ever logged, and event collectors.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::WebSocketStream;

pub type ServerWs = WebSocketStream<TcpStream>;

/// The handshake of one WebSocket connection a mock accepted.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// The decoded values of query parameter `name`.
    pub fn query(&self, name: &str) -> Vec<String> {
        let q = self.uri.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

/// A WebSocket server on 127.0.0.1 running `script` for each connection (with its index).
pub struct WsMock {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
}

impl WsMock {
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.handshakes.lock().unwrap().len()
    }

    pub fn handshake(&self, i: usize) -> Handshake {
        self.handshakes.lock().unwrap()[i].clone()
    }
}

pub async fn ws_mock<F, Fut>(script: F) -> WsMock
where
    F: Fn(ServerWs, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let script = script.clone();
            let index = n;
            n += 1;
            tokio::spawn(async move {
                let record = |req: &Request, resp: Response| {
                    let uri = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    seen.lock().unwrap().push(Handshake { uri, headers });
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, record).await {
                    script(ws, index).await;
                }
            });
        }
    });
    WsMock { addr, handshakes }
}

/// A server that answers every WebSocket handshake with HTTP `status` and `body`.
pub async fn refusing_server(status: u16, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\ndg-error: refused by test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Serve `router` on 127.0.0.1; returns its base URL.
pub async fn http_server(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// How a scripted streaming body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Clean,
    /// The connection breaks off mid-body.
    Abort,
}

/// A body that sends `chunks` (each after its delay) and then ends as `end` says.
pub fn streamed(chunks: Vec<(Duration, String)>, end: End) -> Body {
    let items: Vec<(Duration, Result<Bytes, std::io::Error>)> = chunks
        .into_iter()
        .map(|(d, c)| (d, Ok(Bytes::from(c))))
        .chain((end == End::Abort).then(|| {
            (
                Duration::from_millis(20),
                Err(std::io::Error::other("test: connection dropped")),
            )
        }))
        .collect();
    let stream = futures::stream::unfold(items.into_iter(), |mut it| async move {
        let (delay, item) = it.next()?;
        tokio::time::sleep(delay).await;
        Some((item, it))
    });
    Body::from_stream(stream)
}

/// SSE frames for `(event, data)` pairs (an empty event name gives a bare `data:` frame).
pub fn sse(frames: &[(&str, &str)]) -> Vec<(Duration, String)> {
    frames
        .iter()
        .map(|(ev, data)| {
            let text = if ev.is_empty() {
                format!("data: {data}\n\n")
            } else {
                format!("event: {ev}\ndata: {data}\n\n")
            };
            (Duration::from_millis(5), text)
        })
        .collect()
}

/// Everything logged (all levels) by the code under test in this test binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture every log line of this test binary (call first in each test).
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buf = log_buffer().clone();
        // Everything, including the `log` records of the WebSocket library (bridged the way
        // the `vaani` binary's `init()` bridges them), under the directives the binary uses.
        let filter = format!("trace,{}", vaani_media::cloud::LOG_DIRECTIVES);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || Capture(buf.clone()))
            .try_init();
    });
}

/// Everything `rx` yields until it closes (or `limit` passes: then the test fails).
pub async fn drain<T>(rx: &mut mpsc::Receiver<T>, limit: Duration) -> Vec<T> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => out.push(x),
            Ok(None) => return out,
            Err(_) => panic!("stream did not end within {limit:?}"),
        }
    }
}

/// The next item of `rx` within `limit`.
pub async fn next<T>(rx: &mut mpsc::Receiver<T>, limit: Duration) -> Option<T> {
    tokio::time::timeout(limit, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing within {limit:?}"))
}

/// `n` samples of a recognisable ramp.
pub fn ramp(n: usize, start: i16) -> Vec<i16> {
    (0..n)
        .map(|i| start.wrapping_add((i as i16).wrapping_mul(37)))
        .collect()
}

pub fn le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}
