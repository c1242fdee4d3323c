//! Telnyx media streaming over WebSocket, bidirectional RTP mode (TeXML `<Connect><Stream
//! bidirectionalMode="rtp">` or Call Control `stream_bidirectional_mode=rtp`).
//!
//! Sources: developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket
//! (AsyncAPI), developers.telnyx.com/docs/voice/programmable-voice/media-streaming, the TeXML
//! `<Stream>` page; PROVIDERS.md § Telnyx.
//!
//! - Twilio-like but snake_case: top-level `stream_id` and `sequence_number` (a string);
//!   `start.{user_id, call_control_id, call_session_id, from, to, custom_parameters,
//!   client_state, media_format{encoding:"PCMU", sample_rate:8000, channels:1}}` (older
//!   examples: `encoding:"audio/x-mulaw"`); `media.{track, chunk, timestamp, payload}` (RTP
//!   payload without header); `dtmf.{digit}`; `mark.{name}`; `stop`; `error` frames
//!   (`{title, code, detail}`).
//! - "Media frame order is not guaranteed": frames are put back in `media.chunk` order
//!   (falling back to `sequence_number`) in a small window.
//! - Out: `{"event":"media","media":{"payload":…}}` (no stream id), `{"event":"mark",
//!   "mark":{"name":…}}`, `{"event":"clear"}`. Telnyx returns a mark when the media before it
//!   has played (immediately if nothing is queued), and returns queued marks on a `clear`.
//! - Outbound format: the stream's `bidirectionalCodec` / rate, which the caller of this
//!   module knows ([`super::SessionConfig::outbound_format`]); our TeXML pins PCMU 8 kHz.
//!   Inbound is the call's codec unless transcoded, so PCMA (A-law) is accepted too.
//! - L16 is big-endian on the wire (an RTP payload, RFC 3551). Inbound it is swapped to the
//!   little-endian [`Encoding::S16Le`] every stream delivers; outbound, audio queued as
//!   `S16Le` is swapped back, while audio queued as big-endian [`Encoding::L16`] (an outbound
//!   format configured that way) already has the wire's byte order and goes out as is.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vaani_events::Provider;

use super::session::{Dialect, Framing, Sealed, Session};
use super::wire::{self, to_json, Num, Raw, WireEvent, WireMedia, WireStart};
use super::{AudioFormat, Encoding, StreamError};

/// Telnyx's dialect of the media-stream protocol.
#[derive(Debug, Clone, Copy)]
pub struct Telnyx;

/// A Telnyx media-stream connection.
pub type TelnyxSession = Session<Telnyx>;

impl Sealed for Telnyx {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    sequence_number: Option<Num>,
    #[serde(default, borrow)]
    stream_id: Option<Cow<'a, str>>,
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
    #[serde(default, borrow)]
    error: Raw<'a>,
    #[serde(default, borrow)]
    payload: Raw<'a>,
}

#[derive(Deserialize)]
struct StartBody {
    user_id: Option<String>,
    call_control_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    custom_parameters: Option<Map<String, Value>>,
    media_format: Option<FormatBody>,
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<Value>,
    title: Option<String>,
    detail: Option<String>,
}

/// Parse one Telnyx text frame.
pub fn parse(text: &str) -> Result<WireEvent, StreamError> {
    let env: Envelope = serde_json::from_str(text).map_err(wire::json_err)?;
    Ok(match env.event.as_ref() {
        "connected" => WireEvent::Connected,
        "start" => {
            let b: StartBody = wire::sub(env.start, "start")?;
            WireEvent::Start(WireStart {
                provider_call_id: b
                    .call_control_id
                    .ok_or(StreamError::MissingField("start.call_control_id"))?,
                stream_id: env
                    .stream_id
                    .map(Cow::into_owned)
                    .ok_or(StreamError::MissingField("stream_id"))?,
                account_id: b.user_id,
                from: b.from,
                to: b.to,
                tracks: Vec::new(),
                custom_parameters: b
                    .custom_parameters
                    .map(wire::params_to_strings)
                    .unwrap_or_default(),
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
        "mark" => {
            let m: MarkBody = wire::sub(env.mark, "mark")?;
            WireEvent::Mark { name: m.name }
        }
        "stop" => {
            let _: Option<Map<String, Value>> = wire::opt_sub(env.stop)?;
            WireEvent::Stop { reason: None }
        }
        "error" => {
            let e: Option<ErrorBody> = wire::opt_sub(env.error.or(env.payload))?;
            let e = e.unwrap_or(ErrorBody {
                code: None,
                title: None,
                detail: None,
            });
            WireEvent::Error {
                code: e.code.map(|c| match c {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
                title: e.title,
                detail: e.detail,
            }
        }
        other => wire::unknown(other),
    })
}

fn format(f: FormatBody) -> Result<AudioFormat, StreamError> {
    let name = f.encoding.as_deref().unwrap_or("PCMU");
    let channels = f.channels.map_or(1, |n| n.0);
    let rate = wire::check_rate(f.sample_rate.map_or(8000, |n| n.0))?;
    match wire::encoding_from_name(name) {
        Some(e) if channels == 1 => Ok(AudioFormat::new(e, rate)),
        _ => Err(StreamError::UnsupportedFormat(format!(
            "{} at {} Hz, {channels} channel(s)",
            wire::shown(name),
            rate.hz()
        ))),
    }
}

/// Swap each 16-bit sample's bytes (big- ↔ little-endian). A trailing odd byte is kept.
fn swap16(mut b: Vec<u8>) -> Vec<u8> {
    for pair in b.chunks_exact_mut(2) {
        pair.swap(0, 1);
    }
    b
}

#[derive(Serialize)]
struct MediaOut {
    event: &'static str,
    media: PayloadOut,
}

#[derive(Serialize)]
struct PayloadOut {
    payload: String,
}

#[derive(Serialize)]
struct MarkOut<'a> {
    event: &'static str,
    mark: NameOut<'a>,
}

#[derive(Serialize)]
struct NameOut<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ClearOut {
    event: &'static str,
}

impl Dialect for Telnyx {
    const PROVIDER: Provider = Provider::Telnyx;
    const ECHOES_MARKS_ON_CLEAR: bool = true;
    const REORDERS: bool = true;

    fn parse(text: &str) -> Result<WireEvent, StreamError> {
        parse(text)
    }

    fn default_format(_query_rate: Option<u32>) -> AudioFormat {
        AudioFormat::PCMU
    }

    fn outbound_format(
        _inbound: AudioFormat,
        configured: Option<AudioFormat>,
    ) -> Result<AudioFormat, StreamError> {
        Ok(configured.unwrap_or(AudioFormat::PCMU))
    }

    fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing {
        Framing::fixed(outbound.bytes_in(frame.unwrap_or(Duration::from_millis(20))))
    }

    fn media_frame(_stream_id: &str, outbound: AudioFormat, audio: &[u8]) -> String {
        let payload = if outbound.encoding == Encoding::S16Le {
            wire::encode_b64(&swap16(audio.to_vec()))
        } else {
            wire::encode_b64(audio)
        };
        to_json(&MediaOut {
            event: "media",
            media: PayloadOut { payload },
        })
    }

    fn mark_frame(_stream_id: &str, name: &str) -> String {
        to_json(&MarkOut {
            event: "mark",
            mark: NameOut { name },
        })
    }

    fn clear_frame(_stream_id: &str) -> String {
        to_json(&ClearOut { event: "clear" })
    }

    fn inbound_payload(format: AudioFormat, payload: Vec<u8>) -> Vec<u8> {
        if format.encoding == Encoding::S16Le {
            swap16(payload)
        } else {
            payload
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::SampleRate;

    #[test]
    fn l16_is_swapped_both_ways() {
        assert_eq!(swap16(vec![0x12, 0x34, 0x56]), vec![0x34, 0x12, 0x56]);
        let f = AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000);
        assert_eq!(
            Telnyx::inbound_payload(f, vec![0x00, 0x01]),
            vec![0x01, 0x00]
        );
        let frame = Telnyx::media_frame("s", f, &[0x01, 0x00]);
        assert!(frame.contains(&wire::encode_b64(&[0x00, 0x01])), "{frame}");
        // Audio already big-endian goes out untouched.
        let be = AudioFormat::new(Encoding::L16, SampleRate::Hz16000);
        let frame = Telnyx::media_frame("s", be, &[0x00, 0x01]);
        assert!(frame.contains(&wire::encode_b64(&[0x00, 0x01])), "{frame}");
    }

    #[test]
    fn only_codec_rates_parse() {
        let start = |rate: &str| {
            format!(
                r#"{{"event":"start","stream_id":"s1","start":{{"call_control_id":"c1",
                "media_format":{{"encoding":"L16","sample_rate":{rate},"channels":1}}}}}}"#
            )
        };
        match parse(&start("16000")) {
            Ok(WireEvent::Start(s)) => assert_eq!(
                s.format,
                Some(AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000))
            ),
            other => panic!("{other:?}"),
        }
        for bad in ["44100", "11025", "0"] {
            assert!(
                matches!(parse(&start(bad)), Err(StreamError::UnsupportedFormat(_))),
                "{bad}"
            );
        }
    }
}
