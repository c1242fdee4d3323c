//! What the answer webhook tells a provider to do with a call, independent of any provider's
//! markup. `vaani_telephony` renders an `AnswerPlan` into TwiML, Plivo XML, TeXML, LaML or
//! Exotel's applet response.

use serde::{Deserialize, Serialize};

/// Name of the custom parameter / SIP header value carrying our call id.
pub const CALL_ID_PARAM: &str = "vaani_call_id";
/// Name of the custom parameter carrying the short-lived signed media token.
pub const TOKEN_PARAM: &str = "vaani_token";
/// SIP header names used when connecting by SIP URI.
pub const CALL_ID_HEADER: &str = "X-Vaani-Call-Id";
pub const TOKEN_HEADER: &str = "X-Vaani-Token";
/// SIP header naming the tenant the call belongs to (the token verifies only for it).
pub const TENANT_HEADER: &str = "X-Vaani-Tenant";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerPlan {
    /// The tenant the call belongs to. Streams carry it in the URL path; SIP bridges carry
    /// it as `X-Vaani-Tenant` so a node shared by tenants checks the token against it.
    #[serde(default)]
    pub tenant: String,
    /// Our call id, carried to the media node so it can find the call.
    pub call_id: String,
    /// Short-lived signed token the media node checks before accepting the media leg.
    pub token: String,
    pub action: AnswerAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnswerAction {
    /// Bridge the call to a media node over SIP (`sip:…` URI). Tenant, call id and token travel
    /// as `X-Vaani-Tenant` / `X-Vaani-Call-Id` / `X-Vaani-Token` headers (URI headers where the
    /// provider only takes a URI).
    ConnectSip { uri: String },
    /// Bridge the call to a media node over the provider's bidirectional media-stream WebSocket
    /// (`wss://…`). Call id and token travel as custom parameters `vaani_call_id` / `vaani_token`.
    ConnectStream { url: String },
    /// Say `message` (text-to-speech at the provider) and hang up. Used when no node is free.
    PlayAndHangup {
        message: String,
        /// BCP-47 language for the provider's TTS, e.g. `en-IN`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// Refuse the call with a busy signal.
    RejectBusy,
}
