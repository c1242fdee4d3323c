//! Plivo audio streaming, bidirectional (`<Stream bidirectional="true">`).
//!
//! Sources: plivo.com/docs/voice/audio-streaming/audio-streaming (Stream Event Protocol),
//! plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference, the
//! checkpoint / playAudio / clearAudio pages under docs.plivo.com/docs/voice/xml/audiostream,
//! support.plivo.com 32800564168345 (older `played` event); PROVIDERS.md § Plivo.
//!
//! - In: `start` (`sequenceNumber` a **number**, `start.{callId, streamId, accountId, tracks,
//!   mediaFormat{encoding, sampleRate}}`, top-level `extra_headers` string such as
//!   `"userId=12345;sessionId=abc-xyz"`), `media` (`streamId`, `media.{track, timestamp
//!   (Unix ms, string), chunk (number), payload}`), `dtmf` (`dtmf.{digit}`), `playedStream`
//!   (older docs: `played`) with top-level `name` answering a `checkpoint`, `clearedAudio`.
//! - There is **no `connected` and no `stop`**: the stream ends when the socket closes, so
//!   [`super::Session::on_close`] reports [`super::Event::Closed`].
//! - Out: `{"event":"playAudio","media":{"contentType","sampleRate","payload"}}`,
//!   `{"event":"checkpoint","streamId","name"}`, `{"event":"clearAudio","streamId"}`.
//!   `playAudio` must use the stream's own format (audio is silently not heard otherwise,
//!   plivo-python#290), so outbound = inbound format: `audio/x-l16` at 8000/16000 or
//!   `audio/x-mulaw` at 8000. Plivo's default is L16 8 kHz, not μ-law.
//! - After `clearAudio` Plivo never acknowledges the checkpoints it dropped (bolna PR #842):
//!   [`super::Session::clear`] resolves them itself.
//! - Our call id and token travel in the stream URL's query (`extraHeaders` cannot carry
//!   them), so pass the upgrade request's query in [`super::SessionConfig::with_query`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vaani_events::Provider;

use super::session::{Dialect, Framing, Sealed, Session};
use super::wire::{self, to_json, Num, Raw, WireEvent, WireMedia, WireStart};
use super::{AudioFormat, Encoding, SampleRate, StreamError};

/// Plivo's dialect of the media-stream protocol.
#[derive(Debug, Clone, Copy)]
pub struct Plivo;

/// A Plivo audio-stream connection.
pub type PlivoSession = Session<Plivo>;

impl Sealed for Plivo {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: Option<Num>,
    #[serde(rename = "streamId", default, borrow)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    extra_headers: Option<Value>,
    #[serde(default, borrow)]
    start: Raw<'a>,
    #[serde(default, borrow)]
    media: Raw<'a>,
    #[serde(default, borrow)]
    dtmf: Raw<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    call_id: Option<String>,
    stream_id: Option<String>,
    account_id: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    media_format: Option<FormatBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FormatBody {
    encoding: Option<String>,
    sample_rate: Option<Num>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    chunk: Option<Num>,
    #[serde(default)]
    timestamp: Option<Num>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DtmfBody<'a> {
    #[serde(borrow)]
    digit: Cow<'a, str>,
}

/// Parse one Plivo text frame.
pub fn parse(text: &str) -> Result<WireEvent, StreamError> {
    let env: Envelope = serde_json::from_str(text).map_err(wire::json_err)?;
    Ok(match env.event.as_ref() {
        "start" => {
            let b: StartBody = wire::sub(env.start, "start")?;
            let stream_id = b
                .stream_id
                .or(env.stream_id.map(Cow::into_owned))
                .ok_or(StreamError::MissingField("start.streamId"))?;
            WireEvent::Start(WireStart {
                provider_call_id: b.call_id.ok_or(StreamError::MissingField("start.callId"))?,
                stream_id,
                account_id: b.account_id,
                from: None,
                to: None,
                tracks: b.tracks,
                custom_parameters: env.extra_headers.map(extra_headers).unwrap_or_default(),
                format: b.media_format.map(format).transpose()?,
            })
        }
        "media" => {
            let m: MediaBody = wire::sub(env.media, "media")?;
            WireEvent::Media(WireMedia {
                payload: wire::decode_b64(&m.payload, "media.payload")?,
                track: m.track,
                chunk: m.chunk.map(|n| n.0),
                timestamp_ms: m.timestamp.map(|n| n.0),
                sequence: env.sequence_number.map(|n| n.0),
            })
        }
        "dtmf" => {
            let d: DtmfBody = wire::sub(env.dtmf, "dtmf")?;
            WireEvent::Dtmf {
                digit: wire::dtmf_digit(&d.digit)?,
                duration_ms: None,
            }
        }
        "playedStream" | "played" => WireEvent::Mark {
            name: env.name.ok_or(StreamError::MissingField("name"))?,
        },
        "clearedAudio" => WireEvent::Cleared,
        other => wire::unknown(other),
    })
}

/// `extra_headers`: `k=v` pairs separated by `;` or `,` (Plivo's docs show both), or an
/// object.
fn extra_headers(v: Value) -> BTreeMap<String, String> {
    match v {
        Value::String(s) => s
            .split([';', ','])
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let k = k.trim();
                (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
            })
            .collect(),
        Value::Object(m) => wire::params_to_strings(m),
        _ => BTreeMap::new(),
    }
}

fn format(f: FormatBody) -> Result<AudioFormat, StreamError> {
    let name = f.encoding.as_deref().unwrap_or("audio/x-l16");
    let rate = f.sample_rate.map_or(8000, |n| n.0);
    match (wire::encoding_from_name(name), rate) {
        (Some(Encoding::S16Le), 8000) => Ok(AudioFormat::S16LE_8K),
        (Some(Encoding::S16Le), 16000) => {
            Ok(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000))
        }
        (Some(Encoding::Pcmu), 8000) => Ok(AudioFormat::PCMU),
        _ => Err(StreamError::UnsupportedFormat(format!(
            "{} at {rate} Hz",
            wire::shown(name)
        ))),
    }
}

#[derive(Serialize)]
struct PlayAudioOut {
    event: &'static str,
    media: PlayMedia,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlayMedia {
    content_type: &'static str,
    sample_rate: u32,
    payload: String,
}

#[derive(Serialize)]
struct CheckpointOut<'a> {
    event: &'static str,
    #[serde(rename = "streamId")]
    stream_id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct ClearOut<'a> {
    event: &'static str,
    #[serde(rename = "streamId")]
    stream_id: &'a str,
}

impl Dialect for Plivo {
    const PROVIDER: Provider = Provider::Plivo;
    const ECHOES_MARKS_ON_CLEAR: bool = false;
    const REORDERS: bool = false;

    fn parse(text: &str) -> Result<WireEvent, StreamError> {
        parse(text)
    }

    fn default_format(_query_rate: Option<u32>) -> AudioFormat {
        AudioFormat::S16LE_8K
    }

    fn outbound_format(
        inbound: AudioFormat,
        _configured: Option<AudioFormat>,
    ) -> Result<AudioFormat, StreamError> {
        Ok(inbound)
    }

    fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing {
        Framing::fixed(outbound.bytes_in(frame.unwrap_or(Duration::from_millis(20))))
    }

    fn media_frame(_stream_id: &str, outbound: AudioFormat, audio: &[u8]) -> String {
        let content_type = match outbound.encoding {
            Encoding::Pcmu => "audio/x-mulaw",
            // Only μ-law and little-endian L16 streams get past `format`.
            Encoding::Pcma | Encoding::L16 | Encoding::S16Le | Encoding::Opus | Encoding::G722 => {
                "audio/x-l16"
            }
        };
        to_json(&PlayAudioOut {
            event: "playAudio",
            media: PlayMedia {
                content_type,
                sample_rate: outbound.rate.hz(),
                payload: wire::encode_b64(audio),
            },
        })
    }

    fn mark_frame(stream_id: &str, name: &str) -> String {
        to_json(&CheckpointOut {
            event: "checkpoint",
            stream_id,
            name,
        })
    }

    fn clear_frame(stream_id: &str) -> String {
        to_json(&ClearOut {
            event: "clearAudio",
            stream_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_headers_forms() {
        let m = extra_headers(Value::String("userId=12345;sessionId=abc-xyz".into()));
        assert_eq!(m.get("userId").map(String::as_str), Some("12345"));
        assert_eq!(m.get("sessionId").map(String::as_str), Some("abc-xyz"));
        let m = extra_headers(Value::String("test1=12,test2=123,junk".into()));
        assert_eq!(m.len(), 2);
        assert!(extra_headers(Value::Null).is_empty());
    }
}
