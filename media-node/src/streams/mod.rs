//! The providers' bidirectional media-stream WebSockets (Twilio `<Connect><Stream>`, Exotel
//! Voicebot, Plivo `<Stream bidirectional>`, Telnyx media streaming) as sans-IO protocol cores
//! (DESIGN.md §3.1).
//!
//! Place in the architecture: the media node's driver accepts the provider's WebSocket, checks
//! the upgrade ([`verify_twilio_upgrade`], [`verify_exotel_upgrade`]), builds one [`Session`]
//! per connection and then only shuttles text frames and timer ticks:
//!
//! ```text
//!   socket text frame ──► session.on_text(now, text) ──► Vec<Event> ──► pipeline
//!   pipeline audio    ──► session.send_audio(now, bytes) / mark(name) / clear(now)
//!   timer / wakeup    ──► while let Some(frame) = session.poll_transmit(now) { socket.send(frame) }
//!                         sleep until session.next_deadline()
//!   socket closed     ──► session.on_close(now)
//! ```
//!
//! The session never reads the clock or touches a socket: every call takes `now`, so tests run
//! in virtual time. What it owns:
//!
//! - **Parsing** each provider's exact JSON (one module per provider: [`twilio`], [`exotel`],
//!   [`plivo`], [`telnyx`]) into the neutral [`Event`]s below. Unknown events are counted and
//!   ignored; malformed JSON is an error, never a panic.
//! - **Authentication** of the media leg: the `start` message must carry our call id and a
//!   valid media token ([`vaani_core::token`]) when the session is built with a [`TokenAuth`].
//!   Nothing but `connected` is delivered before that check passes.
//! - **Real-time pacing** of outbound audio: a frame is never handed out more than
//!   [`SessionConfig::lead`] before it is due to start playing, so barge-in ([`Session::clear`])
//!   has little to flush at the provider.
//! - **Marks** and what has really been played (for truncating the agent's transcript after a
//!   barge-in): see [`Session::played_ms`] and [`ClearReport`].
//!
//! # Audio
//!
//! Audio crosses this module as raw bytes in a [`crate::codec::AudioFormat`] (re-exported
//! here): what providers send parses to [`Encoding::Pcmu`], [`Encoding::Pcma`] or
//! [`Encoding::S16Le`] (16-bit **little-endian** linear PCM) at one of the codec's
//! [`SampleRate`]s; any other rate is refused as [`StreamError::UnsupportedFormat`].
//! Converting to and from the pipeline's internal PCM (decoding G.711, resampling) is the
//! [`crate::codec`] module's job ([`crate::codec::FrameDecoder`] /
//! [`crate::codec::FrameEncoder`] take these formats as they are); this module only frames,
//! paces and (for Telnyx L16, which is big-endian on the wire like any RTP L16 payload) fixes
//! the byte order.

use std::collections::BTreeMap;

pub mod exotel;
pub mod plivo;
pub mod telnyx;
pub mod twilio;

mod auth;
mod reorder;
mod session;
mod wire;

pub use auth::{verify_exotel_upgrade, verify_twilio_upgrade, AuthError, TokenAuth};
pub use session::{ClearReport, Dialect, Framing, Session, SessionConfig};
pub use wire::{WireEvent, WireMedia, WireStart};

pub use exotel::{Exotel, ExotelSession};
pub use plivo::{Plivo, PlivoSession};
pub use telnyx::{Telnyx, TelnyxSession};
pub use twilio::{Twilio, TwilioSession};

/// The stream formats are the codec's: one definition in the crate.
pub use crate::codec::{AudioFormat, Encoding, SampleRate};

/// A chunk of the caller's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Raw audio in the stream's [`StartInfo::format`] (Telnyx L16 already swapped to
    /// little-endian [`Encoding::S16Le`]).
    pub payload: Vec<u8>,
    /// The provider's timestamp: milliseconds since the stream started (Twilio, Exotel,
    /// Telnyx) or Unix milliseconds (Plivo).
    pub timestamp_ms: Option<u64>,
    /// The provider's chunk counter, when it sends one.
    pub chunk: Option<u64>,
    /// The message's sequence number, when the provider sends one.
    pub sequence: Option<u64>,
}

/// What the provider's `start` message said, plus our ids lifted out of it.
#[derive(Clone, PartialEq, Eq)]
pub struct StartInfo {
    /// The provider's call id: Twilio/Exotel `CallSid`, Plivo `callId`, Telnyx `call_control_id`.
    pub provider_call_id: String,
    /// The provider's stream id (`streamSid`, `stream_sid`, `streamId`, `stream_id`).
    pub stream_id: String,
    pub account_id: Option<String>,
    /// Caller and callee, where the provider sends them (Exotel, Telnyx).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Custom parameters (Twilio/Telnyx `<Parameter>`s, Exotel URL parameters, Plivo
    /// `extra_headers`) without `vaani_call_id` / `vaani_token`, which are lifted into
    /// [`StartInfo::call_id`] / [`StartInfo::token`].
    pub custom_parameters: BTreeMap<String, String>,
    /// The format of the caller's audio in [`Event::Media`].
    pub format: AudioFormat,
    /// The format [`Session::send_audio`] expects.
    pub outbound_format: AudioFormat,
    /// Our call id (`vaani_call_id`), from the custom parameters or the upgrade URL's query.
    pub call_id: Option<String>,
    /// Our media token (`vaani_token`), same sources. Already verified when the session has
    /// a [`TokenAuth`].
    pub token: Option<String>,
}

impl std::fmt::Debug for StartInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |n: &Option<String>| n.as_deref().map(vaani_core::phone::mask);
        f.debug_struct("StartInfo")
            .field("provider_call_id", &self.provider_call_id)
            .field("stream_id", &self.stream_id)
            .field("account_id", &self.account_id)
            .field("from", &mask(&self.from))
            .field("to", &mask(&self.to))
            .field("custom_parameters", &self.custom_parameters)
            .field("format", &self.format)
            .field("outbound_format", &self.outbound_format)
            .field("call_id", &self.call_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a stream tells the pipeline, the same for every provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The provider's `connected` message (Twilio, Exotel, Telnyx).
    Connected,
    /// The stream started and, when the session checks tokens, authenticated.
    Start(StartInfo),
    /// Caller audio, in order (Telnyx frames are reordered first).
    Media(Media),
    /// A keypress: `0-9`, `*`, `#`, `A-D`.
    Dtmf {
        digit: char,
        duration_ms: Option<u64>,
    },
    /// The audio queued before mark `name` has been played (Twilio/Exotel/Telnyx `mark`,
    /// Plivo `playedStream`). Marks dropped by a clear are reported by [`Session::clear`]
    /// instead, never here.
    Mark { name: String },
    /// The provider confirmed a clear (Plivo `clearedAudio`).
    Cleared,
    /// The provider ended the stream (`stop`).
    Stop { reason: Option<String> },
    /// The socket closed without a `stop`: the normal end of a Plivo stream (Plivo has no
    /// `stop` event), an abnormal end for the others.
    Closed,
    /// The provider reported an error on the stream (Telnyx `error` frames).
    ProviderError {
        code: Option<String>,
        title: Option<String>,
        detail: Option<String>,
    },
}

/// Why a message was refused. The driver closes the socket on any of these; [`StreamError::is_auth`]
/// tells it to close with a policy-violation code. `Display` never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("malformed JSON message: {0}")]
    Json(String),
    #[error("message is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field} has an unusable value")]
    BadField { field: &'static str },
    #[error("unsupported media format {0}")]
    UnsupportedFormat(String),
    #[error("{0} before the stream's start")]
    NotStarted(&'static str),
    #[error("a second start on one stream")]
    DuplicateStart,
    #[error("the stream has ended")]
    Ended,
    #[error("outbound audio queue is full")]
    OutboundFull,
    #[error("media stream not authenticated: {0}")]
    Auth(#[from] AuthError),
}

impl StreamError {
    /// The stream was refused for want of a valid token.
    pub fn is_auth(&self) -> bool {
        matches!(self, StreamError::Auth(_))
    }

    /// Stable error code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            StreamError::Json(_) => "stream_bad_json",
            StreamError::TooLarge(_) => "stream_too_large",
            StreamError::MissingField(_) => "stream_missing_field",
            StreamError::BadField { .. } => "stream_bad_field",
            StreamError::UnsupportedFormat(_) => "stream_unsupported_format",
            StreamError::NotStarted(_) => "stream_not_started",
            StreamError::DuplicateStart => "stream_duplicate_start",
            StreamError::Ended => "stream_ended",
            StreamError::OutboundFull => "stream_outbound_full",
            StreamError::Auth(_) => "stream_unauthenticated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_debug_hides_token_and_numbers() {
        let s = StartInfo {
            provider_call_id: "CA1".into(),
            stream_id: "MZ1".into(),
            account_id: None,
            from: Some("+919876543210".into()),
            to: None,
            custom_parameters: BTreeMap::new(),
            format: AudioFormat::PCMU,
            outbound_format: AudioFormat::PCMU,
            call_id: Some("c1".into()),
            token: Some("v1.123.secretsig".into()),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("secretsig"));
        assert!(!d.contains("9876543210"));
    }
}
