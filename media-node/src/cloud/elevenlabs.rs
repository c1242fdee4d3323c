//! ElevenLabs text-to-speech over its input-streaming WebSocket.
//!
//! Wire protocol (https://elevenlabs.io/docs/api-reference/websocket, "WebSocket",
//! `WSS /v1/text-to-speech/:voice_id/stream-input`):
//!
//! - `GET wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input?model_id=…
//!   &output_format=pcm_16000` with the `xi-api-key` header.
//! - Client → server (text frames): first `{"text": " ", "voice_settings": {"stability",
//!   "similarity_boost"}}` (opens the stream; the text is a single space), then text chunks
//!   `{"text": "Hello there. ", "flush": true}` (ending in a space; `flush` makes it speak
//!   what it has without waiting for more), then `{"text": ""}` (end of input: the server
//!   finishes and closes).
//! - Server → client: `{"audio": BASE64, "isFinal": null, "normalizedAlignment": {…},
//!   "alignment": {…}}` chunks, then `{"isFinal": true}`. Errors are a JSON frame such as
//!   `{"message": "…", "error": "invalid_input_message", "code": 1008}` before the close
//!   (elevenlabs/elevenlabs-python#167), or a 1008 close ("Have not received a new text
//!   input within the timeout…", elevenlabs/elevenlabs-docs#426).
//!
//! `pcm_16000` is raw signed 16-bit little-endian mono at 16 kHz: the node's own format.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, ApiKey, Ws};
use super::pcm::PcmDecoder;
use crate::pipeline::engines::{EngineError, TtsEngine, TtsEvent};

const ENGINE: &str = "elevenlabs";
pub const DEFAULT_BASE_URL: &str = "wss://api.elevenlabs.io";
pub const DEFAULT_MODEL: &str = "eleven_turbo_v2_5";
/// "Rachel", a premade voice from ElevenLabs' library (used in its docs' examples).
pub const DEFAULT_VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

/// Settings of the ElevenLabs engine.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    pub api_key: ApiKey,
    pub base_url: String,
    pub model: String,
    /// Used when the synthesis names no ElevenLabs voice id.
    pub default_voice: String,
    /// 8000, 16000, 24000 or 48000 (`pcm_{rate}`); other than 16 kHz is resampled.
    pub sample_rate: u32,
    pub stability: f32,
    pub similarity_boost: f32,
    pub connect_timeout: Duration,
}

impl ElevenLabsConfig {
    pub fn new(api_key: ApiKey) -> Self {
        ElevenLabsConfig {
            api_key,
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            default_voice: DEFAULT_VOICE.into(),
            sample_rate: 16_000,
            stability: 0.5,
            similarity_boost: 0.75,
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// The stream-input URL for `voice`.
    pub fn url(&self, voice: &str) -> String {
        format!(
            "{}/v1/text-to-speech/{}/stream-input?model_id={}&output_format=pcm_{}",
            net::trim_base(&self.base_url),
            net::pct(voice),
            net::pct(&self.model),
            self.sample_rate
        )
    }
}

/// Whether `v` looks like an ElevenLabs voice id (20 letters and digits).
pub fn is_voice_id(v: &str) -> bool {
    v.len() == 20 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The ElevenLabs TTS engine: a WebSocket per sentence.
#[derive(Debug, Clone)]
pub struct ElevenLabsTts {
    cfg: Arc<ElevenLabsConfig>,
}

impl ElevenLabsTts {
    pub fn new(cfg: ElevenLabsConfig) -> Self {
        ElevenLabsTts { cfg: Arc::new(cfg) }
    }

    pub fn config(&self) -> &ElevenLabsConfig {
        &self.cfg
    }
}

impl TtsEngine for ElevenLabsTts {
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
            _ => self.cfg.default_voice.clone(),
        };
        tokio::spawn(synthesize(self.cfg.clone(), text.to_string(), voice, tx));
        rx
    }
}

/// The client's messages for one sentence, in order.
pub fn messages(cfg: &ElevenLabsConfig, text: &str) -> [String; 3] {
    let mut text = text.trim().to_string();
    text.push(' ');
    [
        serde_json::json!({
            "text": " ",
            "voice_settings": {"stability": cfg.stability, "similarity_boost": cfg.similarity_boost},
        })
        .to_string(),
        serde_json::json!({"text": text, "flush": true}).to_string(),
        serde_json::json!({"text": ""}).to_string(),
    ]
}

async fn synthesize(
    cfg: Arc<ElevenLabsConfig>,
    text: String,
    voice: String,
    tx: mpsc::Sender<Result<TtsEvent, EngineError>>,
) {
    let characters = text.chars().count() as u64;
    let Some(mut decoder) = PcmDecoder::new(cfg.sample_rate) else {
        let _ = tx
            .send(Err(EngineError::fatal(ENGINE, "unsupported sample rate")))
            .await;
        return;
    };
    let key = &cfg.api_key;
    let ws = net::connect_ws(
        ENGINE,
        &cfg.url(&voice),
        &[("xi-api-key", key.expose())],
        cfg.connect_timeout,
        Some(key),
    )
    .await;
    let mut ws: Ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            tracing::warn!(error = %e, "elevenlabs: connect failed");
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    for m in messages(&cfg, &text) {
        if let Err(e) = ws.send(Message::text(m)).await {
            let _ = tx.send(Err(net::ws_error(ENGINE, e, Some(key)))).await;
            return;
        }
    }
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tx.closed() => {
                let _ = ws.close(None).await;
                return;
            }
        };
        let frame = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                // 1008 is ElevenLabs' policy close (bad input, quota, idle input).
                let e = EngineError {
                    engine: ENGINE,
                    message: format!("closed by server: {code} {}", net::clip(&reason, 200)),
                    retryable: code != 1008,
                };
                let _ = tx.send(Err(e)).await;
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                let _ = tx.send(Err(net::ws_error(ENGINE, e, Some(key)))).await;
                return;
            }
            None => {
                let _ = tx
                    .send(Err(EngineError::retryable(ENGINE, "socket closed")))
                    .await;
                return;
            }
        };
        match parse(&frame) {
            Reply::Audio { bytes, last } => {
                let pcm = decoder.push(&bytes);
                if !pcm.is_empty() && tx.send(Ok(TtsEvent::Audio(pcm))).await.is_err() {
                    return;
                }
                if last {
                    let _ = tx.send(Ok(TtsEvent::Usage { characters })).await;
                    let _ = ws.close(None).await;
                    return;
                }
            }
            Reply::Error(e) => {
                tracing::warn!(error = %e, "elevenlabs: synthesis failed");
                let _ = tx.send(Err(e)).await;
                return;
            }
            Reply::Skip => {}
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    audio: Option<String>,
    is_final: Option<bool>,
    message: Option<String>,
    error: Option<String>,
    code: Option<serde_json::Value>,
}

/// What a server frame means.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Audio (possibly none) and whether this was the last frame.
    Audio {
        bytes: Vec<u8>,
        last: bool,
    },
    Error(EngineError),
    Skip,
}

/// Error kinds worth trying again (or on another engine) rather than fatal.
const TRANSIENT: [&str; 5] = [
    "rate_limit",
    "too_many_concurrent_requests",
    "system_busy",
    "internal",
    "server",
];

pub fn parse(text: &str) -> Reply {
    let Ok(r) = serde_json::from_str::<Response>(text) else {
        return Reply::Skip;
    };
    if r.error.is_some() || (r.message.is_some() && r.audio.is_none() && r.is_final.is_none()) {
        let kind = r.error.unwrap_or_default();
        let detail = r.message.unwrap_or_default();
        let code = r.code.map(|c| c.to_string()).unwrap_or_default();
        return Reply::Error(EngineError {
            engine: ENGINE,
            message: format!(
                "{} {}: {}",
                net::clip(&kind, 60),
                net::clip(&code, 10),
                net::clip(&detail, 300)
            ),
            retryable: TRANSIENT.iter().any(|t| kind.contains(t)),
        });
    }
    let last = r.is_final == Some(true);
    match r.audio.as_deref() {
        Some(a) => match base64::engine::general_purpose::STANDARD.decode(a) {
            Ok(bytes) => Reply::Audio { bytes, last },
            Err(_) => Reply::Error(EngineError::retryable(ENGINE, "audio chunk is not base64")),
        },
        None if last => Reply::Audio {
            bytes: Vec::new(),
            last,
        },
        None => Reply::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_messages() {
        let cfg = ElevenLabsConfig::new(ApiKey::new("k").unwrap());
        assert_eq!(
            cfg.url(DEFAULT_VOICE),
            "wss://api.elevenlabs.io/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input?model_id=eleven_turbo_v2_5&output_format=pcm_16000"
        );
        let [open, text, end] = messages(&cfg, "Hello there.");
        let open: serde_json::Value = serde_json::from_str(&open).unwrap();
        assert_eq!(open["text"], " ");
        assert_eq!(open["voice_settings"]["stability"], 0.5);
        let text: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"text": "Hello there. ", "flush": true})
        );
        assert_eq!(end, r#"{"text":""}"#);
    }

    #[test]
    fn frames_parse() {
        assert_eq!(
            parse(
                r#"{"audio":"AQACAA==","isFinal":null,"normalizedAlignment":{"charStartTimesMs":[0,3],"charsDurationsMs":[3,4],"chars":["H","e"]},"alignment":null}"#
            ),
            Reply::Audio {
                bytes: vec![1, 0, 2, 0],
                last: false
            }
        );
        assert_eq!(
            parse(r#"{"isFinal":true}"#),
            Reply::Audio {
                bytes: vec![],
                last: true
            }
        );
        let Reply::Error(e) = parse(
            r#"{"message":"Could not parse input message, make sure it is a json and follows the schema outlined in protocol.","error":"invalid_input_message","code":1008}"#,
        ) else {
            panic!("not an error")
        };
        assert!(!e.retryable);
        let Reply::Error(e) =
            parse(r#"{"message":"Too many","error":"too_many_concurrent_requests","code":1008}"#)
        else {
            panic!("not an error")
        };
        assert!(e.retryable);
        assert!(is_voice_id(DEFAULT_VOICE) && !is_voice_id("en-us"));
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(parse("[1,2"), Reply::Skip);
        assert_eq!(parse(r#"{"isFinal":false}"#), Reply::Skip);
        assert_eq!(parse(r#"{"audio":null,"isFinal":null}"#), Reply::Skip);
        assert!(
            matches!(parse(r#"{"audio":"%%%","isFinal":null}"#), Reply::Error(e) if e.retryable)
        );
        assert!(matches!(parse(r#"{"message":"odd"}"#), Reply::Error(_)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(data in "\\PC{0,300}") {
            let _ = parse(&data);
        }

        #[test]
        fn shaped_frames_never_panic(a in "\\PC{0,40}", fin in "(true|false|null)") {
            let _ = parse(&format!(r#"{{"audio":{a:?},"isFinal":{fin},"message":{a:?}}}"#));
            let _ = parse(&format!(r#"{{"error":{a:?},"code":{a:?}}}"#));
        }
    }
}
