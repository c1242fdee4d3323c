//! Scaffolding shared by the provider test files: fixture loading, form helpers, Basic auth, and
//! a local mock of a provider's REST API (records every request, answers from a queue).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{TimeZone, Utc};
use serde_json::{Map, Value};
use vaani_telephony::RestConfig;

pub const FORM: &str = "application/x-www-form-urlencoded";

/// Where the provider fixtures live.
pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/samples");

/// The bytes of `events/samples/{provider}/{name}`.
pub fn sample(provider: &str, name: &str) -> Vec<u8> {
    let path = format!("{SAMPLES}/{provider}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A form body's pairs as the `raw` map, computed independently of the parser.
pub fn form_raw(body: &[u8]) -> Map<String, Value> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// A form body's pairs, in order, repeats kept.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pairs form-encoded, in order.
pub fn form_body(p: &[(String, String)]) -> Bytes {
    Bytes::from(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .finish(),
    )
}

/// Headers from name/value pairs, appended in order; an unusable name or value becomes a
/// placeholder rather than a panic.
pub fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::WARNING),
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
        );
    }
    h
}

/// A wall-clock time in IST (UTC+05:30), as UTC.
pub fn ist(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .unwrap_or_default()
        - chrono::Duration::minutes(330)
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A `RestConfig` whose retries back off in milliseconds (1 ms base, 5 ms cap, 5 s timeout).
pub fn fast_rest(base: &str, account: &str, token: &str) -> RestConfig {
    let mut cfg = RestConfig::new(base, account, token);
    cfg.backoff_base = Duration::from_millis(1);
    cfg.backoff_max = Duration::from_millis(5);
    cfg.timeout = Duration::from_secs(5);
    cfg
}

// ---------------------------------------------------------------------------------------------
// Mock REST API
// ---------------------------------------------------------------------------------------------

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub path_and_query: String,
    pub auth: Option<String>,
    /// Twilio's `I-Twilio-Idempotency-Token`.
    pub idempotency: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The body read as a form.
    pub form: Vec<(String, String)>,
    /// The body read as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// The mock's state: what it saw, and what it answers.
#[derive(Clone)]
pub struct Mock {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<VecDeque<(u16, String)>>>,
    /// The reply once the queue is empty.
    when_empty: (u16, String),
    /// A `content-type` header on every reply (none: axum's default for a string).
    reply_content_type: Option<&'static str>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the mock has seen so far, in order.
pub fn seen(m: &Mock) -> Vec<Seen> {
    lock(&m.seen).clone()
}

async fn record(
    State(m): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    lock(&m.seen).push(Seen {
        method,
        path: uri.path().to_string(),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        auth: h("authorization"),
        idempotency: h("i-twilio-idempotency-token"),
        content_type: h("content-type"),
        body: body.to_vec(),
        form: form_pairs(&body),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let (status, reply) = lock(&m.replies)
        .pop_front()
        .unwrap_or_else(|| m.when_empty.clone());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match m.reply_content_type {
        Some(ct) => (status, [(header::CONTENT_TYPE, ct)], reply).into_response(),
        None => (status, reply).into_response(),
    }
}

/// Starts a mock on 127.0.0.1:0 that answers with `replies` in order, then with `when_empty`;
/// returns its base URL and its state.
pub async fn serve(
    replies: &[(u16, &str)],
    when_empty: (u16, &str),
    reply_content_type: Option<&'static str>,
) -> (String, Mock) {
    let m = Mock {
        seen: Arc::default(),
        replies: Arc::new(Mutex::new(
            replies.iter().map(|(s, b)| (*s, b.to_string())).collect(),
        )),
        when_empty: (when_empty.0, when_empty.1.to_string()),
        reply_content_type,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let app = axum::Router::new().fallback(record).with_state(m.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), m)
}
