//! Exotel Voicebot applet (bidirectional AgentStream).
//!
//! Sources: developer.exotel.com/docs/agentstream/websocket-protocol and
//! /docs/agentstream/stream-voicebot-applet; support.exotel.com 3000108630 (chunk rules);
//! PROVIDERS.md § Exotel.
//!
//! - Field names are **snake_case**: `stream_sid`, `sequence_number` (a string), `call_sid`,
//!   `account_sid`, `custom_parameters`, `media_format{encoding:"audio/x-raw",
//!   sample_rate:"8000", bit_rate:"16"}`.
//! - In: `connected`, `start`, `media` (`media.{chunk, timestamp, payload}`: ~100 ms of raw
//!   16-bit little-endian PCM), `dtmf` (`dtmf.{digit, duration}`), `mark` (`mark.{name}`),
//!   `stop` (`stop.{call_sid, account_sid, reason}`).
//! - Out: `media` / `mark` / `clear`, each with `stream_sid`.
//! - The sample rate (8000, 16000 or 24000) is chosen by `?sample-rate=` on the stream URL;
//!   the `start` message's `media_format` is authoritative, the query is only a fallback.
//!   The newer `StartStream` API defaults to `audio/x-mulaw;rate=8000`, which is accepted too.
//!
//! # Outbound chunks
//!
//! Exotel wants every outbound chunk at least 3.2 KB, at most 100 KB and a multiple of 320
//! bytes; a chunk that is not a multiple of 320 bytes leaves a 20 ms gap. So chunks are
//! 100 ms by default (raised to 3200 bytes, i.e. 200 ms at 8 kHz), and the tail of an
//! utterance, when a mark or [`super::Session::flush`] ends it, is merged into the last chunk
//! when that keeps it within the limits, and otherwise **padded with silence** up to a
//! multiple of 320 bytes and at least 3200 bytes. The padding (at most 200 ms at 8 kHz) plays
//! after the utterance, before its mark. Note that Exotel's "3.2 KB = 100 ms" holds at 16 kHz;
//! at 8 kHz 16-bit, 3200 bytes are 200 ms.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vaani_events::Provider;

use super::session::{Dialect, Framing, Sealed, Session};
use super::wire::{self, to_json, Num, Raw, WireEvent, WireMedia, WireStart};
use super::{AudioFormat, Encoding, SampleRate, StreamError};

/// Smallest outbound chunk Exotel plays without jitter trouble.
pub const CHUNK_MIN_BYTES: usize = 3200;
/// Largest outbound chunk ("100k"; larger ones time out).
pub const CHUNK_MAX_BYTES: usize = 100_000;
/// Every outbound chunk is a multiple of this.
pub const CHUNK_MULTIPLE_BYTES: usize = 320;

/// Exotel's dialect of the media-stream protocol.
#[derive(Debug, Clone, Copy)]
pub struct Exotel;

/// An Exotel Voicebot connection.
pub type ExotelSession = Session<Exotel>;

impl Sealed for Exotel {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    sequence_number: Option<Num>,
    #[serde(default, borrow)]
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
struct StartBody {
    stream_sid: Option<String>,
    call_sid: Option<String>,
    account_sid: Option<String>,
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
    bit_rate: Option<Num>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
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
    #[serde(default)]
    duration: Option<Num>,
}

#[derive(Deserialize)]
struct MarkBody {
    name: String,
}

#[derive(Deserialize)]
struct StopBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Parse one Exotel text frame.
pub fn parse(text: &str) -> Result<WireEvent, StreamError> {
    let env: Envelope = serde_json::from_str(text).map_err(wire::json_err)?;
    Ok(match env.event.as_ref() {
        "connected" => WireEvent::Connected,
        "start" => {
            let b: StartBody = wire::sub(env.start, "start")?;
            let stream_id = b
                .stream_sid
                .or(env.stream_sid.map(Cow::into_owned))
                .ok_or(StreamError::MissingField("start.stream_sid"))?;
            WireEvent::Start(WireStart {
                provider_call_id: b
                    .call_sid
                    .ok_or(StreamError::MissingField("start.call_sid"))?,
                stream_id,
                account_id: b.account_sid,
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
                track: None,
                chunk: m.chunk.map(|n| n.0),
                timestamp_ms: m.timestamp.map(|n| n.0),
                sequence: env.sequence_number.map(|n| n.0),
            })
        }
        "dtmf" => {
            let d: DtmfBody = wire::sub(env.dtmf, "dtmf")?;
            WireEvent::Dtmf {
                digit: wire::dtmf_digit(&d.digit)?,
                duration_ms: d.duration.map(|n| n.0),
            }
        }
        "mark" => {
            let m: MarkBody = wire::sub(env.mark, "mark")?;
            WireEvent::Mark { name: m.name }
        }
        "stop" => {
            let s: Option<StopBody> = wire::opt_sub(env.stop)?;
            WireEvent::Stop {
                reason: s.and_then(|s| s.reason),
            }
        }
        other => wire::unknown(other),
    })
}

fn format(f: FormatBody) -> Result<AudioFormat, StreamError> {
    let name = f.encoding.as_deref().unwrap_or("audio/x-raw");
    let rate = wire::check_rate(f.sample_rate.map_or(8000, |n| n.0))?;
    match wire::encoding_from_name(name) {
        Some(Encoding::S16Le) if f.bit_rate.is_none_or(|b| b.0 == 16) => {
            Ok(AudioFormat::new(Encoding::S16Le, rate))
        }
        Some(e @ (Encoding::Pcmu | Encoding::Pcma)) => Ok(AudioFormat::new(e, rate)),
        _ => Err(StreamError::UnsupportedFormat(format!(
            "{} ({} bits) at {} Hz",
            wire::shown(name),
            f.bit_rate.map_or(16, |b| b.0),
            rate.hz()
        ))),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Exotel's chunk rules for `outbound`, aiming at `frame` (default 100 ms) per chunk.
pub fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing {
    // Whole 20 ms frames and whole multiples of 320 bytes.
    let frame_20ms = outbound.frame_bytes().max(1);
    let unit = CHUNK_MULTIPLE_BYTES / gcd(CHUNK_MULTIPLE_BYTES, frame_20ms) * frame_20ms;
    let min = CHUNK_MIN_BYTES.div_ceil(unit) * unit;
    let max = (CHUNK_MAX_BYTES / unit) * unit;
    let want = outbound.bytes_in(frame.unwrap_or(Duration::from_millis(100)));
    let target = want
        .div_ceil(unit)
        .saturating_mul(unit)
        .clamp(min, max.max(min));
    Framing {
        target,
        unit,
        min,
        max,
    }
}

#[derive(Serialize)]
struct MediaOut<'a> {
    event: &'static str,
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
    stream_sid: &'a str,
}

impl Dialect for Exotel {
    const PROVIDER: Provider = Provider::Exotel;
    /// Exotel's docs say nothing about marks after a `clear`; stale ones are ignored anyway.
    const ECHOES_MARKS_ON_CLEAR: bool = false;
    const REORDERS: bool = false;

    fn parse(text: &str) -> Result<WireEvent, StreamError> {
        parse(text)
    }

    fn default_format(query_rate: Option<u32>) -> AudioFormat {
        let rate = query_rate
            .filter(|r| matches!(r, 8000 | 16000 | 24000))
            .and_then(SampleRate::from_hz);
        AudioFormat::new(Encoding::S16Le, rate.unwrap_or(SampleRate::Hz8000))
    }

    fn outbound_format(
        inbound: AudioFormat,
        _configured: Option<AudioFormat>,
    ) -> Result<AudioFormat, StreamError> {
        Ok(inbound)
    }

    fn framing(outbound: AudioFormat, frame: Option<Duration>) -> Framing {
        framing(outbound, frame)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_rules_per_rate() {
        for (rate, target, unit) in [
            (SampleRate::Hz8000, 3200, 320),
            (SampleRate::Hz16000, 3200, 640),
            (SampleRate::Hz24000, 4800, 960),
        ] {
            let f = framing(AudioFormat::new(Encoding::S16Le, rate), None);
            assert_eq!((f.target, f.unit), (target, unit), "{rate:?}");
            assert!(f.min >= CHUNK_MIN_BYTES && f.max <= CHUNK_MAX_BYTES);
            assert_eq!(
                (f.min % CHUNK_MULTIPLE_BYTES, f.max % CHUNK_MULTIPLE_BYTES),
                (0, 0)
            );
        }
        let big = framing(AudioFormat::S16LE_8K, Some(Duration::from_secs(30)));
        assert_eq!(big.target, big.max);
        let huge = framing(AudioFormat::S16LE_8K, Some(Duration::MAX));
        assert_eq!(huge.target, huge.max);
    }
}
