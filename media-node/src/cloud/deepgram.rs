//! Deepgram live (streaming) speech-to-text over a WebSocket.
//!
//! Wire protocol (https://developers.deepgram.com/reference/speech-to-text/listen-streaming,
//! https://developers.deepgram.com/docs/finalize, /docs/close-stream, /docs/audio-keep-alive,
//! /docs/utterance-end, /docs/understand-endpointing-interim-results,
//! /docs/stt-troubleshooting-websocket-data-and-net-errors):
//!
//! - `GET wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000
//!   &channels=1&interim_results=true&endpointing=MS&utterance_end_ms=MS&punctuate=true
//!   &smart_format=true[&language=…][&keyterm=…]` with `Authorization: Token KEY`. A refused
//!   handshake is an HTTP 4xx/5xx (with a `dg-error` header).
//! - Client → server: binary frames of raw audio (16-bit little-endian, 16 kHz, mono);
//!   text frames `{"type": "Finalize"}` (flush: the caller stopped talking),
//!   `{"type": "KeepAlive"}` (at least every 10 s without audio, or the server closes with
//!   NET-0001) and `{"type": "CloseStream"}` (finish and close).
//! - Server → client: `{"type": "Results", "is_final", "speech_final", "from_finalize",
//!   "channel": {"alternatives": [{"transcript", "confidence", "words"}]}, …}`,
//!   `{"type": "UtteranceEnd", "channel", "last_word_end"}`, `{"type": "SpeechStarted"}`,
//!   `{"type": "Metadata", "request_id", "duration", …}`; errors arrive as a close frame
//!   (1008 DATA-0000: audio it cannot decode; 1011 NET-0000: its own failure).
//!
//! Mapping: interim results → [`SttEvent::Interim`] (the utterance so far); `is_final`
//! results → [`SttEvent::Final`]. After [`SttInput::EndOfSpeech`] the adapter sends
//! `Finalize` and gathers the final results into one `Final` for the turn, completed by the
//! `from_finalize` answer, an `UtteranceEnd`, or a short grace period when Deepgram had
//! nothing left to flush.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, ApiKey};
use crate::pipeline::engines::{EngineError, SttEngine, SttEvent, SttInput, SttOptions, SttStream};

const ENGINE: &str = "deepgram";
pub const DEFAULT_BASE_URL: &str = "wss://api.deepgram.com";
pub const DEFAULT_MODEL: &str = "nova-3";
/// Most key terms put on the URL.
const MAX_KEYTERMS: usize = 20;

/// Settings of the Deepgram engine.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    pub api_key: ApiKey,
    /// `wss://api.deepgram.com`, or a proxy / test server (`ws://127.0.0.1:PORT`).
    pub base_url: String,
    /// Used when the stream's options name no model.
    pub model: String,
    /// Deepgram's own end-of-speech detection (`endpointing`), ms of silence.
    pub endpointing_ms: u32,
    /// `utterance_end_ms` (Deepgram's minimum is 1000).
    pub utterance_end_ms: u32,
    pub punctuate: bool,
    pub smart_format: bool,
    pub connect_timeout: Duration,
    /// A `KeepAlive` goes out after this long without audio.
    pub keepalive: Duration,
    /// How long to wait for Deepgram's answer to `Finalize` before closing the turn with
    /// what was heard.
    pub finalize_grace: Duration,
}

impl DeepgramConfig {
    pub fn new(api_key: ApiKey) -> Self {
        DeepgramConfig {
            api_key,
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            punctuate: true,
            smart_format: true,
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(3),
            finalize_grace: Duration::from_millis(600),
        }
    }

    /// The `/v1/listen` URL for a stream with `options`. Interim results are always asked
    /// for: `utterance_end_ms` needs them, and the turn detector counts their words.
    pub fn listen_url(&self, options: &SttOptions) -> String {
        let model = if options.model.trim().is_empty() {
            self.model.as_str()
        } else {
            options.model.trim()
        };
        let mut q: Vec<(String, String)> = vec![
            ("model".into(), model.into()),
            ("encoding".into(), "linear16".into()),
            ("sample_rate".into(), "16000".into()),
            ("channels".into(), "1".into()),
            ("interim_results".into(), "true".into()),
            ("endpointing".into(), self.endpointing_ms.to_string()),
            (
                "utterance_end_ms".into(),
                self.utterance_end_ms.max(1000).to_string(),
            ),
            ("punctuate".into(), self.punctuate.to_string()),
            ("smart_format".into(), self.smart_format.to_string()),
        ];
        if !options.language.trim().is_empty() {
            q.push(("language".into(), options.language.trim().into()));
        }
        // Key terms (multi-word phrases) are a Nova-3 feature.
        if model.starts_with("nova-3") {
            for p in options.phrases.iter().take(MAX_KEYTERMS) {
                let p = p.trim();
                if !p.is_empty() && p.len() <= 100 {
                    q.push(("keyterm".into(), p.into()));
                }
            }
        }
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", net::pct(v)))
            .collect();
        format!(
            "{}/v1/listen?{}",
            net::trim_base(&self.base_url),
            query.join("&")
        )
    }
}

/// The Deepgram STT engine: a WebSocket per call.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    cfg: Arc<DeepgramConfig>,
}

impl DeepgramStt {
    pub fn new(cfg: DeepgramConfig) -> Self {
        DeepgramStt { cfg: Arc::new(cfg) }
    }

    pub fn config(&self) -> &DeepgramConfig {
        &self.cfg
    }
}

impl SttEngine for DeepgramStt {
    fn name(&self) -> &'static str {
        ENGINE
    }

    fn open(&self, options: &SttOptions) -> Result<SttStream, EngineError> {
        let (in_tx, in_rx) = mpsc::channel::<SttInput>(256);
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let url = self.cfg.listen_url(options);
        tokio::spawn(run(self.cfg.clone(), url, in_rx, ev_tx));
        Ok(SttStream {
            input: in_tx,
            events: ev_rx,
        })
    }
}

type Events = mpsc::Sender<Result<SttEvent, EngineError>>;

async fn run(
    cfg: Arc<DeepgramConfig>,
    url: String,
    mut input: mpsc::Receiver<SttInput>,
    events: Events,
) {
    let key = cfg.api_key.clone();
    let auth = format!("Token {}", key.expose());
    let ws = match net::connect_ws(
        ENGINE,
        &url,
        &[("Authorization", auth.as_str())],
        cfg.connect_timeout,
        Some(&key),
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::warn!(error = %e, "deepgram: connect failed");
            let _ = events.send(Err(e)).await;
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let mut state = Transcriber::default();
    let mut audio_ms: u64 = 0;
    let mut samples: u64 = 0;
    let mut last_sent = Instant::now();
    let mut grace: Option<Instant> = None;
    let failure = loop {
        let keepalive_at = last_sent + cfg.keepalive;
        let grace_at = grace.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = input.recv() => match msg {
                Some(SttInput::Audio(pcm)) => {
                    samples += pcm.len() as u64;
                    audio_ms = samples * 1000 / 16_000;
                    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
                    if let Err(e) = sink.send(Message::binary(bytes)).await {
                        break Some(net::ws_error(ENGINE, e, Some(&key)));
                    }
                    last_sent = Instant::now();
                }
                Some(SttInput::EndOfSpeech) => {
                    if let Err(e) = sink.send(Message::text(r#"{"type":"Finalize"}"#)).await {
                        break Some(net::ws_error(ENGINE, e, Some(&key)));
                    }
                    last_sent = Instant::now();
                    state.end_of_speech();
                    grace = Some(Instant::now() + cfg.finalize_grace);
                    if events.send(Ok(SttEvent::Usage { audio_ms })).await.is_err() {
                        break None;
                    }
                }
                None => break None,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let out = state.on_message(&text);
                    if !state.awaiting() {
                        grace = None;
                    }
                    let mut gone = false;
                    for ev in out {
                        if events.send(Ok(ev)).await.is_err() {
                            gone = true;
                        }
                    }
                    if gone {
                        break None;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    let retryable = code != u16::from(CloseCode::Policy);
                    break Some(EngineError {
                        engine: ENGINE,
                        message: format!("closed by server: {code} {}", net::clip(&reason, 200)),
                        retryable,
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(net::ws_error(ENGINE, e, Some(&key))),
                None => break Some(EngineError::retryable(ENGINE, "socket closed")),
            },
            _ = tokio::time::sleep_until(keepalive_at) => {
                if let Err(e) = sink.send(Message::text(r#"{"type":"KeepAlive"}"#)).await {
                    break Some(net::ws_error(ENGINE, e, Some(&key)));
                }
                last_sent = Instant::now();
            }
            _ = tokio::time::sleep_until(grace_at), if grace.is_some() => {
                grace = None;
                if let Some(ev) = state.grace_expired() {
                    if events.send(Ok(ev)).await.is_err() {
                        break None;
                    }
                }
            }
        }
    };
    match failure {
        Some(e) => {
            tracing::warn!(error = %e, "deepgram: stream failed");
            let _ = events.send(Ok(SttEvent::Usage { audio_ms })).await;
            let _ = events.send(Err(e)).await;
        }
        None => {
            // The pipeline is done with the stream: let Deepgram finish and close.
            let _ = sink.send(Message::text(r#"{"type":"CloseStream"}"#)).await;
            let drain = async {
                while let Some(Ok(msg)) = stream.next().await {
                    match msg {
                        Message::Text(text) => {
                            for ev in state.on_message(&text) {
                                let _ = events.try_send(Ok(ev));
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            let _ = events.try_send(Ok(SttEvent::Usage { audio_ms }));
            let _ = sink.close().await;
        }
    }
}

/// A server message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    Results(Results),
    UtteranceEnd {},
    SpeechStarted {},
    Metadata {
        #[serde(default)]
        duration: f64,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub is_final: bool,
    #[serde(default)]
    pub speech_final: bool,
    #[serde(default)]
    pub from_finalize: bool,
    #[serde(default)]
    pub channel: Channel,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Channel {
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Alternative {
    #[serde(default)]
    pub transcript: String,
    #[serde(default)]
    pub confidence: f64,
}

/// Deepgram's messages folded into the pipeline's events. Pure.
#[derive(Debug, Default)]
pub struct Transcriber {
    /// Final text of the current utterance so far (for interim context).
    utterance: String,
    /// An end of speech is waiting for its final.
    awaiting: bool,
    /// Final text gathered since the end of speech.
    gathered: String,
    confidence: f64,
    finals: u32,
}

impl Transcriber {
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// The caller stopped talking (`Finalize` was sent).
    pub fn end_of_speech(&mut self) {
        self.awaiting = true;
    }

    /// Deepgram said nothing more in time: close the turn with what was gathered.
    pub fn grace_expired(&mut self) -> Option<SttEvent> {
        self.awaiting.then(|| self.complete())
    }

    fn complete(&mut self) -> SttEvent {
        self.awaiting = false;
        self.utterance.clear();
        let text = std::mem::take(&mut self.gathered);
        let confidence = if self.finals > 0 {
            (self.confidence / f64::from(self.finals)) as f32
        } else {
            0.0
        };
        self.confidence = 0.0;
        self.finals = 0;
        SttEvent::Final { text, confidence }
    }

    /// One text frame from Deepgram.
    pub fn on_message(&mut self, text: &str) -> Vec<SttEvent> {
        let Ok(msg) = serde_json::from_str::<ServerMessage>(text) else {
            tracing::debug!("deepgram: unreadable message skipped");
            return Vec::new();
        };
        let mut out = Vec::new();
        match msg {
            ServerMessage::Results(r) => {
                let alt = r
                    .channel
                    .alternatives
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let words = alt.transcript.trim();
                if !r.is_final {
                    if !words.is_empty() {
                        out.push(SttEvent::Interim(join(&self.utterance, words)));
                    }
                    return out;
                }
                let confidence = if alt.confidence.is_finite() {
                    alt.confidence.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                if self.awaiting {
                    if !words.is_empty() {
                        self.gathered = join(&self.gathered, words);
                        self.confidence += confidence;
                        self.finals += 1;
                    }
                    if r.from_finalize {
                        out.push(self.complete());
                    }
                    return out;
                }
                if !words.is_empty() {
                    self.utterance = join(&self.utterance, words);
                    out.push(SttEvent::Final {
                        text: words.to_string(),
                        confidence: confidence as f32,
                    });
                }
                if r.speech_final {
                    self.utterance.clear();
                }
            }
            ServerMessage::UtteranceEnd {} => {
                if self.awaiting {
                    out.push(self.complete());
                } else {
                    self.utterance.clear();
                }
            }
            ServerMessage::Metadata { duration } => {
                tracing::debug!(seconds = duration, "deepgram: stream metadata");
            }
            ServerMessage::SpeechStarted {} | ServerMessage::Other => {}
        }
        out
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a} {b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(
        transcript: &str,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> String {
        serde_json::json!({
            "type": "Results", "channel_index": [0, 1], "duration": 1.98, "start": 5.99,
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.9,
                "words": [{"word": "x", "start": 0.1, "end": 0.2, "confidence": 0.9}]}]},
            "metadata": {"request_id": "d1a2", "model_info": {"name": "2-general-nova", "version": "2024-01-18.26916", "arch": "nova-3"}, "model_uuid": "c0d1"}
        })
        .to_string()
    }

    #[test]
    fn url_carries_the_settings() {
        let cfg = DeepgramConfig::new(ApiKey::new("k").unwrap());
        let url = cfg.listen_url(&SttOptions {
            language: "en-IN".into(),
            model: "nova-3".into(),
            phrases: vec!["my bill".into()],
            interim_results: true,
        });
        assert_eq!(
            url,
            "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1&interim_results=true&endpointing=300&utterance_end_ms=1000&punctuate=true&smart_format=true&language=en-IN&keyterm=my%20bill"
        );
        let url = cfg.listen_url(&SttOptions {
            model: "nova-2".into(),
            phrases: vec!["x".into()],
            ..SttOptions::default()
        });
        assert!(url.contains("model=nova-2") && !url.contains("keyterm"));
    }

    #[test]
    fn interim_and_final_results_map() {
        let mut t = Transcriber::default();
        assert_eq!(
            t.on_message(&results("I have", false, false, false)),
            vec![SttEvent::Interim("I have".into())]
        );
        assert_eq!(
            t.on_message(&results("I have a question", true, false, false)),
            vec![SttEvent::Final {
                text: "I have a question".into(),
                confidence: 0.9
            }]
        );
        assert_eq!(
            t.on_message(&results("about", false, false, false)),
            vec![SttEvent::Interim("I have a question about".into())]
        );
        t.end_of_speech();
        assert!(t
            .on_message(&results("about my bill", true, true, false))
            .is_empty());
        assert_eq!(
            t.on_message(&results("", true, false, true)),
            vec![SttEvent::Final {
                text: "about my bill".into(),
                confidence: 0.9
            }]
        );
        assert!(!t.awaiting());
    }

    #[test]
    fn utterance_end_or_grace_closes_the_turn() {
        let mut t = Transcriber::default();
        t.end_of_speech();
        let ue = r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.395}"#;
        assert_eq!(
            t.on_message(ue),
            vec![SttEvent::Final {
                text: String::new(),
                confidence: 0.0
            }]
        );
        t.end_of_speech();
        assert!(t.grace_expired().is_some());
        assert!(t.grace_expired().is_none());
        let meta = r#"{"type":"Metadata","transaction_key":"deprecated","request_id":"8c8ebea9-dbec-45fa-a035-e4632cb05b5f","sha256":"e3b0","created":"2024-08-29T22:37:55.202Z","duration":0.0,"channels":0}"#;
        assert!(t.on_message(meta).is_empty());
    }

    #[test]
    fn malformed_messages_are_skipped() {
        let mut t = Transcriber::default();
        for m in [
            "",
            "not json",
            r#"{"type":"Results","channel":5}"#,
            r#"{"type":"Results","is_final":"yes"}"#,
            r#"{"no_type":true}"#,
            r#"{"type":"Error","description":"x"}"#,
        ] {
            assert!(t.on_message(m).is_empty(), "{m}");
        }
        // Results without alternatives are an empty transcript.
        t.end_of_speech();
        assert_eq!(
            t.on_message(r#"{"type":"Results","is_final":true,"from_finalize":true,"channel":{"alternatives":[]}}"#),
            vec![SttEvent::Final {
                text: String::new(),
                confidence: 0.0
            }]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic(data in "\\PC{0,300}") {
            let mut t = Transcriber::default();
            let _ = t.on_message(&data);
            t.end_of_speech();
            let _ = t.on_message(&data);
        }

        #[test]
        fn shaped_messages_never_panic(
            kind in "(Results|UtteranceEnd|Metadata|SpeechStarted|Other)",
            text in "\\PC{0,30}",
            conf in proptest::num::f64::ANY,
            flags in 0u8..8,
        ) {
            let msg = format!(
                r#"{{"type":"{kind}","is_final":{},"speech_final":{},"from_finalize":{},"channel":{{"alternatives":[{{"transcript":{text:?},"confidence":{}}}]}},"duration":{}}}"#,
                flags & 1 == 1, flags & 2 == 2, flags & 4 == 4,
                if conf.is_finite() { conf.to_string() } else { "1e999".into() },
                if conf.is_finite() { conf.to_string() } else { "0".into() },
            );
            let mut t = Transcriber::default();
            let _ = t.on_message(&msg);
            t.end_of_speech();
            let _ = t.on_message(&msg);
            let _ = t.grace_expired();
        }
    }
}
