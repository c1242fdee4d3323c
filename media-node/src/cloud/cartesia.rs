//! Cartesia Sonic text-to-speech over its WebSocket.
//!
//! Wire protocol (https://docs.cartesia.ai/api-reference/tts/websocket,
//! https://docs.cartesia.ai/use-the-api/tts-websocket/contexts, and the official SDK
//! cartesia-ai/cartesia-python `tts/_async_websocket.py` and `tts/types/web_socket_response.py`):
//!
//! - `GET wss://api.cartesia.ai/tts/websocket?api_key=KEY&cartesia_version=VERSION` (the
//!   SDK's form; [`CartesiaAuth::Header`] sends `X-API-Key` and `Cartesia-Version` headers
//!   instead). One socket carries many generations, each with its own `context_id`.
//! - Request (text frame): `{"model_id": "sonic-2", "transcript": "…", "voice": {"mode":
//!   "id", "id": VOICE}, "output_format": {"container": "raw", "encoding": "pcm_s16le",
//!   "sample_rate": 16000}, "context_id": "…", "continue": false, "language": "en"}`;
//!   `{"context_id": "…", "cancel": true}` stops a generation.
//! - Responses (text frames, each with `context_id`, `status_code`, `done`):
//!   `{"type": "chunk", "data": BASE64, "step_time", "status_code": 206, "done": false}`,
//!   `{"type": "done", "status_code": 200, "done": true}`,
//!   `{"type": "error", "error": "…", "status_code": 400, "done": true}`, and
//!   `timestamps` / `phoneme_timestamps` / `flush_done`, which this adapter skips.
//!
//! Each synthesis is one context; sockets are kept and reused between sentences (a new
//! TLS handshake per sentence would cost more than Sonic's first byte). A reused socket that
//! turns out dead before any audio is replaced once, silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, ApiKey, Ws};
use super::pcm::PcmDecoder;
use crate::pipeline::engines::{EngineError, TtsEngine, TtsEvent};

const ENGINE: &str = "cartesia";
pub const DEFAULT_BASE_URL: &str = "wss://api.cartesia.ai";
pub const DEFAULT_VERSION: &str = "2025-04-16";
pub const DEFAULT_MODEL: &str = "sonic-2";
/// A voice from Cartesia's public library (used in its SDK's examples).
pub const DEFAULT_VOICE: &str = "a0e99841-438c-4a64-b679-ae501e7d6091";
/// Idle sockets kept for reuse.
const POOL_SIZE: usize = 8;
/// An idle socket older than this is not reused.
const POOL_MAX_IDLE: Duration = Duration::from_secs(60);

/// Where the key goes on the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartesiaAuth {
    /// `?api_key=…&cartesia_version=…` (the official SDK's form).
    Query,
    /// `X-API-Key` and `Cartesia-Version` headers.
    Header,
}

/// Settings of the Cartesia engine.
#[derive(Debug, Clone)]
pub struct CartesiaConfig {
    pub api_key: ApiKey,
    pub base_url: String,
    pub version: String,
    pub auth: CartesiaAuth,
    pub model: String,
    /// Used when the synthesis names no Cartesia voice id.
    pub default_voice: String,
    /// `language` of the request (`en`, `hi`…); `None`: the model's default.
    pub language: Option<String>,
    /// Rate asked of Cartesia; other than 16 kHz is resampled.
    pub sample_rate: u32,
    pub connect_timeout: Duration,
}

impl CartesiaConfig {
    pub fn new(api_key: ApiKey) -> Self {
        CartesiaConfig {
            api_key,
            base_url: DEFAULT_BASE_URL.into(),
            version: DEFAULT_VERSION.into(),
            auth: CartesiaAuth::Query,
            model: DEFAULT_MODEL.into(),
            default_voice: DEFAULT_VOICE.into(),
            language: None,
            sample_rate: 16_000,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// The Cartesia TTS engine.
pub struct CartesiaTts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CartesiaTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartesiaTts")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: CartesiaConfig,
    idle: Mutex<Vec<(Ws, Instant)>>,
    next_context: AtomicU64,
}

impl CartesiaTts {
    pub fn new(cfg: CartesiaConfig) -> Self {
        CartesiaTts {
            inner: Arc::new(Inner {
                cfg,
                idle: Mutex::new(Vec::new()),
                next_context: AtomicU64::new(1),
            }),
        }
    }

    pub fn config(&self) -> &CartesiaConfig {
        &self.inner.cfg
    }
}

/// Whether `v` looks like a Cartesia voice id (a UUID); anything else (an espeak voice name
/// meant for the embedded engine) falls back to the configured voice.
pub fn is_voice_id(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl TtsEngine for CartesiaTts {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> mpsc::Receiver<Result<TtsEvent, EngineError>> {
        let (tx, rx) = mpsc::channel(32);
        let voice = match voice {
            Some(v) if is_voice_id(v) => v.to_string(),
            _ => self.inner.cfg.default_voice.clone(),
        };
        let n = self.inner.next_context.fetch_add(1, Ordering::Relaxed);
        let context_id = format!("vaani-{}-{n}", std::process::id());
        let request = request_json(&self.inner.cfg, text, &voice, &context_id);
        let characters = text.chars().count() as u64;
        tokio::spawn(synthesize(
            self.inner.clone(),
            request,
            context_id,
            characters,
            tx,
        ));
        rx
    }
}

/// The generation request for one sentence.
pub fn request_json(cfg: &CartesiaConfig, text: &str, voice: &str, context_id: &str) -> String {
    let mut v = serde_json::json!({
        "model_id": cfg.model,
        "transcript": text,
        "voice": {"mode": "id", "id": voice},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": cfg.sample_rate},
        "context_id": context_id,
        "continue": false,
    });
    if let Some(lang) = &cfg.language {
        v["language"] = serde_json::Value::String(lang.clone());
    }
    v.to_string()
}

impl Inner {
    fn url(&self) -> String {
        let base = net::trim_base(&self.cfg.base_url);
        match self.cfg.auth {
            CartesiaAuth::Query => format!(
                "{base}/tts/websocket?api_key={}&cartesia_version={}",
                net::pct(self.cfg.api_key.expose()),
                net::pct(&self.cfg.version)
            ),
            CartesiaAuth::Header => format!("{base}/tts/websocket"),
        }
    }

    async fn connect(&self) -> Result<Ws, EngineError> {
        let key = &self.cfg.api_key;
        let headers: Vec<(&str, &str)> = match self.cfg.auth {
            CartesiaAuth::Query => Vec::new(),
            CartesiaAuth::Header => vec![
                ("X-API-Key", key.expose()),
                ("Cartesia-Version", self.cfg.version.as_str()),
            ],
        };
        net::connect_ws(
            ENGINE,
            &self.url(),
            &headers,
            self.cfg.connect_timeout,
            Some(key),
        )
        .await
    }

    fn take_idle(&self) -> Option<Ws> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((ws, at)) = idle.pop() {
            if at.elapsed() < POOL_MAX_IDLE {
                return Some(ws);
            }
        }
        None
    }

    fn put_idle(&self, ws: Ws) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < POOL_SIZE {
                idle.push((ws, Instant::now()));
            }
        }
    }
}

/// How a generation on one socket ended.
enum Ended {
    /// Complete; the socket can be reused.
    Done(Box<Ws>),
    /// The receiver went away.
    Cancelled,
    /// Failed; `audio` tells whether any audio was delivered.
    Failed { error: EngineError, audio: bool },
}

async fn synthesize(
    inner: Arc<Inner>,
    request: String,
    context_id: String,
    characters: u64,
    tx: mpsc::Sender<Result<TtsEvent, EngineError>>,
) {
    let Some(decoder) = PcmDecoder::new(inner.cfg.sample_rate) else {
        let _ = tx
            .send(Err(EngineError::fatal(ENGINE, "unsupported sample rate")))
            .await;
        return;
    };
    let mut decoder = decoder;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (ws, reused) = match inner.take_idle() {
            Some(ws) if attempt == 1 => (ws, true),
            _ => match inner.connect().await {
                Ok(ws) => (ws, false),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            },
        };
        match generate(
            ws,
            &request,
            &context_id,
            &mut decoder,
            &tx,
            &inner.cfg.api_key,
        )
        .await
        {
            Ended::Done(ws) => {
                inner.put_idle(*ws);
                let _ = tx.send(Ok(TtsEvent::Usage { characters })).await;
                return;
            }
            Ended::Cancelled => return,
            Ended::Failed { error, audio } => {
                if reused && !audio && error.retryable && attempt == 1 {
                    tracing::debug!(error = %error, "cartesia: idle socket was dead; reconnecting");
                    continue;
                }
                tracing::warn!(error = %error, "cartesia: synthesis failed");
                let _ = tx.send(Err(error)).await;
                return;
            }
        }
    }
}

async fn generate(
    mut ws: Ws,
    request: &str,
    context_id: &str,
    decoder: &mut PcmDecoder,
    tx: &mpsc::Sender<Result<TtsEvent, EngineError>>,
    key: &ApiKey,
) -> Ended {
    let mut audio = false;
    if let Err(e) = ws.send(Message::text(request.to_string())).await {
        return Ended::Failed {
            error: net::ws_error(ENGINE, e, Some(key)),
            audio,
        };
    }
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tx.closed() => {
                let cancel = serde_json::json!({"context_id": context_id, "cancel": true}).to_string();
                let _ = ws.send(Message::text(cancel)).await;
                let _ = ws.close(None).await;
                return Ended::Cancelled;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                let reason = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return Ended::Failed {
                    error: EngineError::retryable(
                        ENGINE,
                        format!("closed by server: {}", net::clip(&reason, 200)),
                    ),
                    audio,
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Ended::Failed {
                    error: net::ws_error(ENGINE, e, Some(key)),
                    audio,
                }
            }
            None => {
                return Ended::Failed {
                    error: EngineError::retryable(ENGINE, "socket closed"),
                    audio,
                }
            }
        };
        match parse(&text, context_id) {
            Reply::Audio(bytes) => {
                let pcm = decoder.push(&bytes);
                if pcm.is_empty() {
                    continue;
                }
                audio = true;
                if tx.send(Ok(TtsEvent::Audio(pcm))).await.is_err() {
                    return Ended::Cancelled;
                }
            }
            Reply::Done => return Ended::Done(Box::new(ws)),
            Reply::Error(e) => return Ended::Failed { error: e, audio },
            Reply::Skip => {}
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Response {
    #[serde(default, rename = "type")]
    kind: String,
    context_id: Option<String>,
    data: Option<String>,
    status_code: Option<u16>,
    #[serde(default)]
    done: bool,
    error: Option<String>,
    title: Option<String>,
    message: Option<String>,
}

/// What a server frame means for the generation `context_id`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Audio(Vec<u8>),
    Done,
    Error(EngineError),
    Skip,
}

/// Read one server frame. Frames of other contexts (a reused socket's leftovers) and kinds
/// this adapter does not use are skipped; audio that is not base64 is an error.
pub fn parse(text: &str, context_id: &str) -> Reply {
    let Ok(r) = serde_json::from_str::<Response>(text) else {
        return Reply::Skip;
    };
    if r.context_id.as_deref().is_some_and(|c| c != context_id) {
        return Reply::Skip;
    }
    match r.kind.as_str() {
        "chunk" => match r
            .data
            .as_deref()
            .map(|d| base64::engine::general_purpose::STANDARD.decode(d))
        {
            Some(Ok(bytes)) => Reply::Audio(bytes),
            Some(Err(_)) => {
                Reply::Error(EngineError::retryable(ENGINE, "audio chunk is not base64"))
            }
            None => Reply::Skip,
        },
        "done" => Reply::Done,
        "error" => {
            let status = r.status_code.unwrap_or(500);
            let detail = r.error.or(r.message).or(r.title).unwrap_or_default();
            Reply::Error(EngineError {
                engine: ENGINE,
                message: format!("error {status}: {}", net::clip(&detail, 300)),
                retryable: net::status_retryable(status),
            })
        }
        _ if r.done && r.kind.is_empty() => Reply::Done,
        _ => Reply::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_shaped_like_the_docs() {
        let mut cfg = CartesiaConfig::new(ApiKey::new("k").unwrap());
        cfg.language = Some("en".into());
        let v: serde_json::Value =
            serde_json::from_str(&request_json(&cfg, "Hello there.", DEFAULT_VOICE, "ctx-1"))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model_id": "sonic-2", "transcript": "Hello there.",
                "voice": {"mode": "id", "id": DEFAULT_VOICE},
                "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
                "context_id": "ctx-1", "continue": false, "language": "en"
            })
        );
    }

    #[test]
    fn responses_parse() {
        let chunk = r#"{"type":"chunk","data":"AAABAA==","done":false,"status_code":206,"step_time":12.5,"context_id":"c"}"#;
        assert_eq!(parse(chunk, "c"), Reply::Audio(vec![0, 0, 1, 0]));
        assert_eq!(parse(chunk, "other"), Reply::Skip);
        assert_eq!(
            parse(
                r#"{"type":"done","done":true,"status_code":200,"context_id":"c"}"#,
                "c"
            ),
            Reply::Done
        );
        let Reply::Error(e) = parse(
            r#"{"type":"error","error":"Invalid voice id","done":true,"status_code":400,"context_id":"c"}"#,
            "c",
        ) else {
            panic!("not an error")
        };
        assert!(!e.retryable);
        assert!(e.message.contains("Invalid voice id"));
        let Reply::Error(e) = parse(
            r#"{"type":"error","error":"busy","done":true,"status_code":503}"#,
            "c",
        ) else {
            panic!("not an error")
        };
        assert!(e.retryable);
        assert_eq!(
            parse(
                r#"{"type":"timestamps","word_timestamps":{"words":["a"],"start":[0],"end":[1]},"context_id":"c","status_code":206,"done":false}"#,
                "c"
            ),
            Reply::Skip
        );
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(parse("{", "c"), Reply::Skip);
        assert_eq!(
            parse(r#"{"type":"chunk","context_id":"c"}"#, "c"),
            Reply::Skip
        );
        assert_eq!(
            parse(r#"{"type":"chunk","data":7,"context_id":"c"}"#, "c"),
            Reply::Skip
        );
        let Reply::Error(e) = parse(r#"{"type":"chunk","data":"***","context_id":"c"}"#, "c")
        else {
            panic!("bad base64 must fail")
        };
        assert!(e.retryable);
        let Reply::Error(e) = parse(r#"{"type":"error","context_id":"c"}"#, "c") else {
            panic!("an error without a status is still an error")
        };
        assert!(e.retryable);
    }

    #[test]
    fn voice_ids_are_recognised() {
        assert!(is_voice_id(DEFAULT_VOICE));
        assert!(!is_voice_id("en-us"));
        assert!(!is_voice_id("a0e99841-438c-4a64-b679-ae501e7d609"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(data in "\\PC{0,300}") {
            let _ = parse(&data, "c");
        }

        #[test]
        fn shaped_frames_never_panic(kind in "(chunk|done|error|timestamps|x)", data in "\\PC{0,40}", code in 0u16..700) {
            let frame = format!(r#"{{"type":"{kind}","data":{data:?},"error":{data:?},"status_code":{code},"done":true,"context_id":"c"}}"#);
            let _ = parse(&frame, "c");
        }
    }
}
