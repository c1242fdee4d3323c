//! Shared helpers for the cloud-engine tests: local WebSocket and HTTP servers on
//! 127.0.0.1 that speak a provider's protocol from a script, a log capture that lets tests
//! check no key is ever logged, and event collectors.
#![allow(dead_code, clippy::result_large_err)]

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

/// One scripted HTTP answer of an LLM mock.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Before the status line goes out (a slow first byte).
    pub delay: Duration,
    pub body: Vec<(Duration, String)>,
    pub end: End,
}

impl Reply {
    pub fn stream(body: Vec<(Duration, String)>) -> Self {
        Reply {
            status: 200,
            delay: Duration::ZERO,
            body,
            end: End::Clean,
        }
    }

    pub fn error(status: u16, body: &str) -> Self {
        Reply {
            status,
            delay: Duration::ZERO,
            body: vec![(Duration::ZERO, body.to_string())],
            end: End::Clean,
        }
    }
}

/// A request an LLM mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

/// An HTTP server answering POSTs to `path` with the scripted replies in order, and
/// `/tools/...` endpoints for tool calls.
pub struct LlmMock {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Seen>>>,
    pub replies: Arc<Mutex<std::collections::VecDeque<Reply>>>,
    pub tool_calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl LlmMock {
    pub fn push(&self, r: Reply) {
        self.replies.lock().unwrap().push_back(r);
    }

    pub fn request(&self, i: usize) -> Seen {
        self.requests.lock().unwrap()[i].clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

pub async fn llm_mock(path: &'static str) -> LlmMock {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    #[derive(Clone)]
    struct St {
        requests: Arc<Mutex<Vec<Seen>>>,
        replies: Arc<Mutex<std::collections::VecDeque<Reply>>>,
        tool_calls: Arc<Mutex<Vec<(String, String)>>>,
    }
    async fn answer(
        State(st): State<St>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        st.requests.lock().unwrap().push(Seen { headers, body });
        let reply = st.replies.lock().unwrap().pop_front();
        let Some(r) = reply else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "no reply scripted").into_response();
        };
        tokio::time::sleep(r.delay).await;
        let status = StatusCode::from_u16(r.status).unwrap();
        let ct = if r.status == 200 {
            "text/event-stream"
        } else {
            "application/json"
        };
        (status, [("content-type", ct)], streamed(r.body, r.end)).into_response()
    }
    async fn balance(State(st): State<St>, body: Bytes) -> axum::response::Response {
        st.tool_calls.lock().unwrap().push((
            "balance".into(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        (
            [("content-type", "application/json")],
            r#"{"balance": 500, "currency": "INR"}"#,
        )
            .into_response()
    }
    async fn order(
        State(st): State<St>,
        Query(q): Query<std::collections::BTreeMap<String, String>>,
    ) -> axum::response::Response {
        st.tool_calls
            .lock()
            .unwrap()
            .push(("order".into(), serde_json::to_string(&q).unwrap()));
        "Order 7 ships tomorrow.".into_response()
    }
    async fn slow(State(st): State<St>) -> axum::response::Response {
        st.tool_calls
            .lock()
            .unwrap()
            .push(("slow".into(), String::new()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        "late".into_response()
    }
    let st = St {
        requests: Arc::new(Mutex::new(Vec::new())),
        replies: Arc::new(Mutex::new(std::collections::VecDeque::new())),
        tool_calls: Arc::new(Mutex::new(Vec::new())),
    };
    let router = axum::Router::new()
        .route(path, post(answer))
        .route("/tools/balance", post(balance))
        .route("/tools/order", get(order))
        .route("/tools/slow", post(slow))
        .with_state(st.clone());
    let base = http_server(router).await;
    LlmMock {
        base,
        requests: st.requests,
        replies: st.replies,
        tool_calls: st.tool_calls,
    }
}

/// The agent's side of an LLM session for tests: a prompt, a greeting, three tools served
/// by `mock` and a transfer target.
pub fn agent_context(mock_base: &str) -> vaani_media::cloud::llm::AgentContext {
    use vaani_media::agent::spec::{Tool, ToolMethod};
    vaani_media::cloud::llm::AgentContext {
        system_prompt: "You are the Acme billing assistant. Be brief.".into(),
        greeting: "Hello, this is Acme. How can I help?".into(),
        tools: vec![
            Tool {
                name: "lookup_balance".into(),
                description: "Look up the balance of an account".into(),
                url: format!("{mock_base}/tools/balance"),
                method: ToolMethod::Post,
                timeout_ms: 2000,
                parameters: serde_json::json!({"type": "object", "properties": {"account": {"type": "string"}}, "required": ["account"]}),
            },
            Tool {
                name: "order_status".into(),
                description: "Where an order is".into(),
                url: format!("{mock_base}/tools/order"),
                method: ToolMethod::Get,
                timeout_ms: 2000,
                parameters: serde_json::json!({"type": "object", "properties": {"order": {"type": "integer"}}}),
            },
            Tool {
                name: "slow_tool".into(),
                description: "Takes too long".into(),
                url: format!("{mock_base}/tools/slow"),
                method: ToolMethod::Post,
                timeout_ms: 200,
                parameters: serde_json::json!({"type": "object", "properties": {}}),
            },
        ],
        transfer_targets: vec!["sip:billing@example.com".into()],
    }
}

/// The text and other events of a response, in order.
pub fn texts(
    events: &[Result<
        vaani_media::pipeline::engines::LlmEvent,
        vaani_media::pipeline::engines::EngineError,
    >],
) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(vaani_media::pipeline::engines::LlmEvent::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The summed usage of a response.
pub fn usage(
    events: &[Result<
        vaani_media::pipeline::engines::LlmEvent,
        vaani_media::pipeline::engines::EngineError,
    >],
) -> vaani_media::pipeline::engines::LlmUsage {
    let mut u = vaani_media::pipeline::engines::LlmUsage::default();
    for e in events {
        if let Ok(vaani_media::pipeline::engines::LlmEvent::Usage(x)) = e {
            u.input_tokens += x.input_tokens;
            u.output_tokens += x.output_tokens;
            u.cache_read_tokens += x.cache_read_tokens;
            u.cache_write_tokens += x.cache_write_tokens;
        }
    }
    u
}
