//! Twilio Media Streams, bidirectional (`<Connect><Stream>`).
//!
//! Source: twilio.com/docs/voice/media-streams/websocket-messages (PROVIDERS.md § Twilio).
//!
//! - In: `connected`, `start` (`start.{streamSid, accountSid, callSid, tracks,
//!   customParameters, mediaFormat{encoding:"audio/x-mulaw", sampleRate:8000, channels:1}}`),
//!   `media` (`media.{track, chunk, timestamp, payload}`), `dtmf` (`dtmf.{track, digit}`),
//!   `mark` (`mark.{name}`), `stop` (`stop.{accountSid, callSid}`); every message but
//!   `connected` carries `sequenceNumber` as a **string** and `streamSid`.
//! - Out: `{"event":"media","streamSid":…,"media":{"payload":…}}` (base64 μ-law 8 kHz, no
//!   header), `{"event":"mark","streamSid":…,"mark":{"name":…}}`,
//!   `{"event":"clear","streamSid":…}`.
//! - μ-law 8 kHz is the only format. Outbound audio goes out as 20 ms (160-byte) frames.
//! - After a `clear`, Twilio sends back the marks it dropped; the session swallows them.
//! - The upgrade request is signed: [`super::verify_twilio_upgrade`].

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vaani_events::Provider;

use super::session::{Dialect, Framing, Sealed, Session};
use super::wire::{self, to_json, Num, Raw, WireEvent, WireMedia, WireStart};
use super::{AudioFormat, Encoding, StreamError};

/// Twilio's dialect of the media-stream protocol.
#[derive(Debug, Clone, Copy)]
pub struct Twilio;

/// A Twilio media-stream connection.
pub type TwilioSession = Session<Twilio>;

impl Sealed for Twilio {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: Option<Num>,
    #[serde(rename = "streamSid", default, borrow)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    start: Raw<'a>,
    #[serde(default, borrow)]
    media: Raw<'a>,
    #[serde(default, borrow)]
    dtmf: Raw<'a>,
    #[serde(default, borrow)]
    mark: Raw<'a>,
    #[serde(default, borrow)]
    stop: Raw<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    stream_sid: Option<String>,
    account_sid: Option<String>,
    call_sid: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: Option<Map<String, Value>>,
    media_format: Option<FormatBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FormatBody {
    encoding: Option<String>,
    sample_rate: Option<Num>,
    channels: Option<Num>,
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

#[derive(Deserialize)]
struct MarkBody {
    name: String,
}

/// Parse one Twilio text frame.
pub fn parse(text: &str) -> Result<WireEvent, StreamError> {
    let env: Envelope = serde_json::from_str(text).map_err(wire::json_err)?;
    Ok(match env.event.as_ref() {
        "connected" => WireEvent::Connected,
        "start" => {
            let b: StartBody = wire::sub(env.start, "start")?;
            let stream_id = b
                .stream_sid
                .or(env.stream_sid.map(Cow::into_owned))
                .ok_or(StreamError::MissingField("start.streamSid"))?;
            let format = b.media_format.map(format).transpose()?;
            WireEvent::Start(WireStart {
                provider_call_id: b
                    .call_sid
                    .ok_or(StreamError::MissingField("start.callSid"))?,
                stream_id,
                account_id: b.account_sid,
                from: None,
                to: None,
                tracks: b.tracks,
                custom_parameters: b
                    .custom_parameters
                    .map(wire::params_to_strings)
                    .unwrap_or_default(),
                format,
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
        "mark" => {
            let m: MarkBody = wire::sub(env.mark, "mark")?;
            WireEvent::Mark { name: m.name }
        }
        "stop" => {
            // stop.{accountSid, callSid}: nothing the session needs, but it must be an object
            // when present.
            let _: Option<Map<String, Value>> = wire::opt_sub(env.stop)?;
            WireEvent::Stop { reason: None }
        }
        other => wire::unknown(other),
    })
}

fn format(f: FormatBody) -> Result<AudioFormat, StreamError> {
    let encoding = f.encoding.as_deref().unwrap_or("audio/x-mulaw");
    let rate = f.sample_rate.map_or(8000, |n| n.0);
    let channels = f.channels.map_or(1, |n| n.0);
    match (wire::encoding_from_name(encoding), rate, channels) {
        (Some(Encoding::Pcmu), 8000, 1) => Ok(AudioFormat::PCMU),
        _ => Err(StreamError::UnsupportedFormat(format!(
            "{} at {} Hz, {} channel(s)",
            wire::shown(encoding),
            rate,
            channels
        ))),
    }
}

#[derive(Serialize)]
struct MediaOut<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    media: PayloadOut,
}

#[derive(Serialize)]
struct PayloadOut {
    payload: String,
}

#[derive(Serialize)]
struct MarkOut<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    mark: NameOut<'a>,
}

#[derive(Serialize)]
struct NameOut<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ClearOut<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
}

impl Dialect for Twilio {
    const PROVIDER: Provider = Provider::Twilio;
    const ECHOES_MARKS_ON_CLEAR: bool = true;
    const REORDERS: bool = false;

    fn parse(text: &str) -> Result<WireEvent, StreamError> {
        parse(text)
    }

    fn default_format(_query_rate: Option<u32>) -> AudioFormat {
        AudioFormat::PCMU
    }

    fn outbound_format(
        _inbound: AudioFormat,
        _configured: Option<AudioFormat>,
    ) -> Result<AudioFormat, StreamError> {
        Ok(AudioFormat::PCMU)
    }

    fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing {
        Framing::fixed(outbound.bytes_in(frame.unwrap_or(Duration::from_millis(20))))
    }

    fn media_frame(stream_id: &str, _outbound: AudioFormat, audio: &[u8]) -> String {
        to_json(&MediaOut {
            event: "media",
            stream_sid: stream_id,
            media: PayloadOut {
                payload: wire::encode_b64(audio),
            },
        })
    }

    fn mark_frame(stream_id: &str, name: &str) -> String {
        to_json(&MarkOut {
            event: "mark",
            stream_sid: stream_id,
            mark: NameOut { name },
        })
    }

    fn clear_frame(stream_id: &str) -> String {
        to_json(&ClearOut {
            event: "clear",
            stream_sid: stream_id,
        })
    }
}
