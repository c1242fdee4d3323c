//! What every provider's parser produces ([`WireEvent`]), and the small JSON helpers the
//! provider modules share. Field names live in the provider modules, not here.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{AudioFormat, Encoding, SampleRate, StreamError};

/// One provider message after parsing, before the session's checks (authentication, ordering,
/// mark bookkeeping). Each provider module's `parse` returns this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireEvent {
    Connected,
    Start(WireStart),
    Media(WireMedia),
    Dtmf {
        digit: char,
        duration_ms: Option<u64>,
    },
    Mark {
        name: String,
    },
    Cleared,
    Stop {
        reason: Option<String>,
    },
    Error {
        code: Option<String>,
        title: Option<String>,
        detail: Option<String>,
    },
    /// An event this parser does not know (the name, cut to 64 bytes).
    Unknown {
        event: String,
    },
}

/// A provider's `start` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireStart {
    pub provider_call_id: String,
    pub stream_id: String,
    pub account_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tracks: Vec<String>,
    /// Every custom parameter as sent (ours included).
    pub custom_parameters: BTreeMap<String, String>,
    /// The caller's audio format; `None` when the message has none (the provider's default
    /// applies).
    pub format: Option<AudioFormat>,
}

/// A provider's `media` message, payload decoded from base64 (byte order untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMedia {
    pub payload: Vec<u8>,
    pub track: Option<String>,
    pub chunk: Option<u64>,
    pub timestamp_ms: Option<u64>,
    pub sequence: Option<u64>,
}

/// An unsigned number sent either as a JSON number or as a string of digits (Twilio and
/// Exotel send `"sequenceNumber":"1"`, Plivo sends `1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Num(pub u64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned integer or a string of digits")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                u64::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom("negative number"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
                    Ok(Num(v as u64))
                } else {
                    Err(E::custom("not an unsigned integer"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse::<u64>()
                    .map(Num)
                    .map_err(|_| E::custom("string is not an unsigned integer"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The first layer of every provider message: the event name plus the raw sub-objects, so a
/// sub-object is only parsed for the event that uses it.
pub(crate) type Raw<'a> = Option<&'a RawValue>;

/// A map of custom parameters with every value as text (numbers and booleans as their JSON
/// text, strings unquoted).
pub(crate) fn params_to_strings(map: Map<String, Value>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

/// Parse a sub-object that the event requires.
pub(crate) fn sub<'a, T: Deserialize<'a>>(
    raw: Raw<'a>,
    field: &'static str,
) -> Result<T, StreamError> {
    let raw = raw.ok_or(StreamError::MissingField(field))?;
    serde_json::from_str(raw.get()).map_err(json_err)
}

/// Parse an optional sub-object.
pub(crate) fn opt_sub<'a, T: Deserialize<'a>>(raw: Raw<'a>) -> Result<Option<T>, StreamError> {
    raw.map(|r| serde_json::from_str(r.get()).map_err(json_err))
        .transpose()
}

/// A JSON error as text, without any quoted input (a bad value could be a secret).
pub(crate) fn json_err(e: serde_json::Error) -> StreamError {
    let msg = e.to_string();
    let mut out = String::with_capacity(msg.len().min(160));
    let mut in_quotes = false;
    for c in msg.chars() {
        if c == '"' {
            if !in_quotes {
                out.push_str("\"…\"");
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(c);
        }
        if out.len() > 160 {
            break;
        }
    }
    StreamError::Json(out)
}

/// Decode a base64 payload; padding is optional.
pub(crate) fn decode_b64(s: &str, field: &'static str) -> Result<Vec<u8>, StreamError> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    LENIENT
        .decode(s.trim())
        .map_err(|_| StreamError::BadField { field })
}

/// An outbound frame as JSON text. Serializing the plain structs used here cannot fail; an
/// empty frame would be refused by the peer.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A DTMF digit: exactly one of `0-9 * # A-D` (letters upper-cased).
pub(crate) fn dtmf_digit(s: &str) -> Result<char, StreamError> {
    let mut chars = s.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#') => Ok(c),
        (Some(c), None) if matches!(c.to_ascii_uppercase(), 'A'..='D') => {
            Ok(c.to_ascii_uppercase())
        }
        _ => Err(StreamError::BadField {
            field: "dtmf.digit",
        }),
    }
}

/// An encoding from the names providers use: `audio/x-mulaw`, `PCMU`, `audio/x-alaw`,
/// `PCMA`, `audio/x-l16`, `L16`, `audio/x-raw`, `raw/slin`. Parameters after `;` are ignored.
/// Linear PCM is [`Encoding::S16Le`], the byte order streams carry it in (Telnyx's big-endian
/// L16 is swapped on arrival).
pub(crate) fn encoding_from_name(name: &str) -> Option<Encoding> {
    let base = name.split(';').next().unwrap_or_default().trim();
    let lower = base.to_ascii_lowercase();
    match lower.as_str() {
        "audio/x-mulaw" | "audio/mulaw" | "audio/pcmu" | "pcmu" | "mulaw" | "ulaw" => {
            Some(Encoding::Pcmu)
        }
        "audio/x-alaw" | "audio/alaw" | "audio/pcma" | "pcma" | "alaw" => Some(Encoding::Pcma),
        "audio/x-l16" | "audio/l16" | "l16" | "audio/x-raw" | "raw/slin" | "slin" => {
            Some(Encoding::S16Le)
        }
        _ => None,
    }
}

/// A provider's format name for error messages: printable ASCII, cut to 40 characters.
pub(crate) fn shown(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect()
}

/// An event name for [`WireEvent::Unknown`], cut to 64 bytes on a character boundary.
pub(crate) fn unknown(name: &str) -> WireEvent {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    WireEvent::Unknown {
        event: name[..end].to_string(),
    }
}

/// A provider's sample rate, if it is one the codec converts (8, 16, 24 or 48 kHz).
pub(crate) fn check_rate(rate: u64) -> Result<SampleRate, StreamError> {
    u32::try_from(rate)
        .ok()
        .and_then(SampleRate::from_hz)
        .ok_or_else(|| {
            StreamError::UnsupportedFormat(format!("sample rate {}", rate.min(u64::from(u32::MAX))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_accepts_numbers_and_digit_strings() {
        let n: Num = serde_json::from_str("\"42\"").unwrap_or(Num(0));
        assert_eq!(n, Num(42));
        let n: Num = serde_json::from_str("7").unwrap_or(Num(0));
        assert_eq!(n, Num(7));
        assert!(serde_json::from_str::<Num>("-1").is_err());
        assert!(serde_json::from_str::<Num>("\"x1\"").is_err());
        assert!(serde_json::from_str::<Num>("1.5").is_err());
        assert!(serde_json::from_str::<Num>("null").is_err());
    }

    #[test]
    fn json_errors_drop_quoted_input() {
        let e = serde_json::from_str::<Num>("\"v1.99.secret\"")
            .err()
            .map(json_err);
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn digits_and_encodings() {
        assert_eq!(dtmf_digit("5"), Ok('5'));
        assert_eq!(dtmf_digit("#"), Ok('#'));
        assert_eq!(dtmf_digit("b"), Ok('B'));
        assert!(dtmf_digit("").is_err());
        assert!(dtmf_digit("12").is_err());
        assert!(dtmf_digit("E").is_err());
        assert_eq!(encoding_from_name("audio/x-mulaw"), Some(Encoding::Pcmu));
        assert_eq!(encoding_from_name("PCMU"), Some(Encoding::Pcmu));
        assert_eq!(encoding_from_name("PCMA"), Some(Encoding::Pcma));
        assert_eq!(encoding_from_name("audio/x-raw"), Some(Encoding::S16Le));
        assert_eq!(
            encoding_from_name("audio/x-l16;rate=16000"),
            Some(Encoding::S16Le)
        );
        assert_eq!(encoding_from_name("OPUS"), None);
    }

    #[test]
    fn only_the_codec_rates_are_accepted() {
        assert_eq!(check_rate(8000), Ok(SampleRate::Hz8000));
        assert_eq!(check_rate(16000), Ok(SampleRate::Hz16000));
        assert_eq!(check_rate(24000), Ok(SampleRate::Hz24000));
        assert_eq!(check_rate(48000), Ok(SampleRate::Hz48000));
        for bad in [0, 11_025, 22_050, 32_000, 44_100, 96_000, u64::MAX] {
            assert!(
                matches!(check_rate(bad), Err(StreamError::UnsupportedFormat(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_names_are_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        match unknown(&long) {
            WireEvent::Unknown { event } => assert!(event.len() <= 64),
            other => panic!("{other:?}"),
        }
    }
}
