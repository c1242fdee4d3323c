//! Vaani's boundary messages: the neutral `CallEvent` every provider webhook becomes,
//! and the envelopes put on the call-events queue.
//!
//! Place in the architecture: produced by `functions/webhooks` (control plane) and by the
//! media nodes, consumed by the ledger and the store. Versioned with `serde`; adding an
//! optional field is compatible, renaming one is not.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A telephony provider Vaani speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Twilio,
    Exotel,
    Plivo,
    Telnyx,
    Signalwire,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Twilio,
        Provider::Exotel,
        Provider::Plivo,
        Provider::Telnyx,
        Provider::Signalwire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Exotel => "exotel",
            Provider::Plivo => "plivo",
            Provider::Telnyx => "telnyx",
            Provider::Signalwire => "signalwire",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected one of twilio, exotel, plivo, telnyx, signalwire)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownProvider(s.to_string()))
    }
}

/// The fixed call-status vocabulary. Every provider's status maps onto exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl CallStatus {
    pub const ALL: [CallStatus; 8] = [
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Failed,
        CallStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Initiated => "initiated",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in_progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no_answer",
            CallStatus::Failed => "failed",
            CallStatus::Canceled => "canceled",
        }
    }

    /// Terminal statuses end a call; nothing moves a call out of one.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::Busy
                | CallStatus::NoAnswer
                | CallStatus::Failed
                | CallStatus::Canceled
        )
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown call status {s:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One provider webhook, normalized. Produced by `vaani_telephony::parse`.
///
/// Field names are part of the CLI contract (`vaani webhook parse`): do not rename.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub provider: Provider,
    pub provider_call_id: String,
    /// Our call id, when the provider echoed it back (custom field / custom parameters / callback URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `None` for webhooks that carry no call status (e.g. a recording-ready callback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CallStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// E.164, or the provider's string as sent when it is not a phone number (SIP URI, client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Talk time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// Seconds the provider bills for (pulse-rounded for Exotel/Plivo, minutes×60 for Twilio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_duration_s: Option<u64>,
    /// Provider-reported price, as the provider sent it (Twilio sends negative amounts).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::float_option"
    )]
    pub price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    /// Answering-machine detection result as the provider reported it (`human`, `machine_start`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// Provider ordering number (Twilio `SequenceNumber`, stream sequence) when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Every field the provider sent, unmodified (strings as strings, JSON as JSON).
    #[serde(default)]
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl CallEvent {
    /// An empty event for `provider`/`provider_call_id`; parsers fill in the rest.
    pub fn new(provider: Provider, provider_call_id: impl Into<String>) -> Self {
        CallEvent {
            provider,
            provider_call_id: provider_call_id.into(),
            call_id: None,
            status: None,
            direction: None,
            from: None,
            to: None,
            duration_s: None,
            billed_duration_s: None,
            price: None,
            currency: None,
            recording_url: None,
            answered_by: None,
            sequence: None,
            occurred_at: None,
            raw: serde_json::Map::new(),
        }
    }

    /// A stable identity for deduplication: the same webhook delivered twice (a provider retry)
    /// has the same id; two different webhooks for one call do not.
    ///
    /// Built from the raw payload, which providers resend byte-for-byte on retry, minus fields
    /// that some providers change between attempts.
    pub fn dedupe_id(&self) -> String {
        use sha2::{Digest, Sha256};
        const VOLATILE: [&str; 3] = ["attempt", "delivery_attempt", "retry_count"];
        let mut h = Sha256::new();
        h.update(self.provider.as_str().as_bytes());
        h.update([0]);
        h.update(self.provider_call_id.as_bytes());
        h.update([0]);
        // serde_json::Map is a BTreeMap here (no preserve_order), so iteration is sorted.
        for (k, v) in &self.raw {
            if VOLATILE.iter().any(|x| k.eq_ignore_ascii_case(x)) {
                continue;
            }
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.to_string().as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// What goes on the call-events queue: one per distinct accepted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEventEnvelope {
    /// Schema version of this envelope.
    pub v: u32,
    pub tenant: String,
    pub call_id: String,
    pub event_id: String,
    pub received_at: DateTime<Utc>,
    pub event: CallEvent,
}

impl CallEventEnvelope {
    pub const VERSION: u32 = 1;
}

/// What a media node puts on the call-events queue when one of our calls (one that carries
/// our call id) ends on it: how it reached the node and why it ended. Additive to
/// [`CallEventEnvelope`]: consumers tell the two apart by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCallEnded {
    /// Always [`MediaCallEnded::KIND`].
    pub kind: String,
    /// Schema version of this envelope.
    pub v: u32,
    pub tenant: String,
    pub call_id: String,
    /// The media node's registry id.
    pub node_id: String,
    /// `stream` (provider media stream) or `sip`.
    pub transport: String,
    /// `caller_hangup` (the far end hung up), `agent_hangup`, `rtp_timeout`, `max_duration`,
    /// `error`, `shutdown`, or `not_connected` (a call the node placed was never answered).
    pub reason: String,
    pub ended_at: DateTime<Utc>,
    pub duration_ms: u64,
}

impl MediaCallEnded {
    pub const KIND: &'static str = "media_call_ended";
    pub const VERSION: u32 = 1;

    /// The queue's deduplication id: the same for every report of this call's end on this
    /// node over this transport, whatever its timing, so a resend is dropped.
    pub fn dedupe_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            Self::KIND,
            &self.tenant,
            &self.call_id,
            &self.node_id,
            &self.transport,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Engine usage of one call on a media node, for cost accounting: audio seconds sent to STT,
/// LLM tokens (with prompt-cache reads and writes) and TTS characters, by engine. Additive to
/// the other envelopes on the call-events queue; told apart by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCallUsage {
    /// Always [`MediaCallUsage::KIND`].
    pub kind: String,
    pub v: u32,
    pub tenant: String,
    /// Our call id, or the SIP Call-ID / stream id for calls that came straight to the node.
    pub call_id: String,
    pub node_id: String,
    pub stt_engine: String,
    pub stt_audio_ms: u64,
    pub llm_engine: String,
    pub llm_input_tokens: u64,
    pub llm_output_tokens: u64,
    pub llm_cache_read_tokens: u64,
    pub llm_cache_write_tokens: u64,
    pub tts_engine: String,
    pub tts_characters: u64,
    pub ended_at: DateTime<Utc>,
}

impl MediaCallUsage {
    pub const KIND: &'static str = "media_call_usage";
    pub const VERSION: u32 = 1;

    /// One usage report per call per node.
    pub fn dedupe_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [Self::KIND, &self.tenant, &self.call_id, &self.node_id] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_call_usage_round_trips_and_dedupes_per_call() {
        let a = MediaCallUsage {
            kind: MediaCallUsage::KIND.into(),
            v: MediaCallUsage::VERSION,
            tenant: "demo".into(),
            call_id: "c1".into(),
            node_id: "dev".into(),
            stt_engine: "embedded".into(),
            stt_audio_ms: 5200,
            llm_engine: "anthropic".into(),
            llm_input_tokens: 900,
            llm_output_tokens: 60,
            llm_cache_read_tokens: 800,
            llm_cache_write_tokens: 0,
            tts_engine: "cartesia".into(),
            tts_characters: 140,
            ended_at: Utc::now(),
        };
        let mut b = a.clone();
        b.tts_characters = 1;
        assert_eq!(a.dedupe_id(), b.dedupe_id());
        b.call_id = "c2".into();
        assert_ne!(a.dedupe_id(), b.dedupe_id());
        let v = serde_json::to_value(&a).unwrap_or_default();
        assert_eq!(v["kind"], "media_call_usage");
        assert_eq!(serde_json::from_value::<MediaCallUsage>(v).ok(), Some(a));
    }

    #[test]
    fn media_call_ended_dedupes_on_the_call_not_the_timing() {
        let a = MediaCallEnded {
            kind: MediaCallEnded::KIND.into(),
            v: MediaCallEnded::VERSION,
            tenant: "demo".into(),
            call_id: "c1".into(),
            node_id: "dev".into(),
            transport: "sip".into(),
            reason: "caller_hangup".into(),
            ended_at: Utc::now(),
            duration_ms: 1200,
        };
        let mut b = a.clone();
        b.duration_ms = 1300;
        b.reason = "shutdown".into();
        assert_eq!(a.dedupe_id(), b.dedupe_id());
        assert_eq!(a.dedupe_id().len(), 32);
        b.call_id = "c2".into();
        assert_ne!(a.dedupe_id(), b.dedupe_id());
        let v = serde_json::to_value(&a).unwrap_or_default();
        assert_eq!(v["kind"], "media_call_ended");
        assert_eq!(v["transport"], "sip");
        let back: Option<MediaCallEnded> = serde_json::from_value(v).ok();
        assert_eq!(back, Some(a));
    }

    #[test]
    fn provider_round_trips() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert_eq!(
                serde_json::to_value(p).ok(),
                Some(serde_json::json!(p.as_str()))
            );
        }
        assert!("skype".parse::<Provider>().is_err());
    }

    #[test]
    fn status_serializes_to_vocabulary() {
        for s in CallStatus::ALL {
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
            assert_eq!(s.as_str().parse::<CallStatus>(), Ok(s));
        }
    }

    #[test]
    fn dedupe_id_ignores_attempt_counters() {
        let mut a = CallEvent::new(Provider::Exotel, "c1");
        a.raw.insert("Status".into(), "completed".into());
        let mut b = a.clone();
        b.raw.insert("attempt".into(), "2".into());
        assert_eq!(a.dedupe_id(), b.dedupe_id());
        b.raw.insert("Status".into(), "busy".into());
        assert_ne!(a.dedupe_id(), b.dedupe_id());
    }

    #[test]
    fn price_serializes_as_number() {
        let mut e = CallEvent::new(Provider::Twilio, "CA1");
        e.price = Some(Decimal::new(-85, 4));
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(v["price"], serde_json::json!(-0.0085));
    }
}
