//! REST call control shared by all providers: one `reqwest` client with timeouts, and retries
//! with exponential backoff and full jitter on 429 and 5xx only (never on 4xx: those will not
//! get better). Each provider module implements [`CallControl`] on top of [`RestClient`].

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Settings for a provider's REST client. `base_url` is overridable so tests can point it at a
/// local server that speaks the provider's API.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub base_url: String,
    /// Account id / SID / auth id (Twilio AccountSid, Plivo Auth ID, Exotel SID, SignalWire project).
    pub account: String,
    /// API key/user where the provider separates it from the account (Exotel API key); else empty.
    pub api_key: String,
    /// Auth token / API secret / Telnyx API key. Never logged.
    pub token: String,
    pub timeout: Duration,
    /// Retries after the first attempt, for 429/5xx and connection errors.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl RestConfig {
    pub fn new(
        base_url: impl Into<String>,
        account: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        RestConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            account: account.into(),
            api_key: String::new(),
            token: token.into(),
            timeout: crate::common::DEFAULT_HTTP_TIMEOUT,
            max_retries: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// An outbound call request, provider-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundCall {
    /// Caller id (E.164, a number the account owns).
    pub from: String,
    /// Callee (E.164 or SIP URI).
    pub to: String,
    /// Our call id; sent as the provider's custom field / client state where one exists, and
    /// as `vaani_call_id` on the callback URLs.
    pub call_id: String,
    /// URL the provider fetches the answer document from when the callee picks up.
    pub answer_url: String,
    /// URL for status callbacks.
    pub status_url: String,
    /// Ring timeout in seconds.
    pub ring_timeout_s: u32,
    /// Ask for answering-machine detection.
    pub machine_detection: bool,
    /// Idempotency key (our call id is a good one); sent where the provider supports it.
    pub idempotency_key: String,
}

/// The provider's id for a call it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCallRef {
    pub provider_call_id: String,
}

/// Where to send a live call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectTarget {
    /// Fetch new instructions (an answer document) from this URL.
    Url(String),
    /// Transfer (blind) to this number or SIP URI.
    Transfer(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{provider} API answered {status}: {body}")]
    Status {
        provider: &'static str,
        status: u16,
        body: String,
    },
    #[error("{provider} API unreachable: {detail}")]
    Transport {
        provider: &'static str,
        detail: String,
    },
    #[error("{provider} API returned an unexpected body: {detail}")]
    Decode {
        provider: &'static str,
        detail: String,
    },
    #[error("{provider} does not support {what}")]
    Unsupported {
        provider: &'static str,
        what: &'static str,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl RestError {
    /// Whether retrying later may help (429, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            RestError::Status { status, .. } => *status == 429 || *status >= 500,
            RestError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Call control a provider offers over REST.
#[async_trait]
pub trait CallControl: Send + Sync {
    async fn originate(&self, call: &OutboundCall) -> Result<ProviderCallRef, RestError>;
    async fn hangup(&self, provider_call_id: &str) -> Result<(), RestError>;
    async fn redirect(
        &self,
        provider_call_id: &str,
        target: &RedirectTarget,
    ) -> Result<(), RestError>;
}

/// A provider's HTTP client with retry policy.
#[derive(Debug, Clone)]
pub struct RestClient {
    pub provider: &'static str,
    pub cfg: RestConfig,
    http: reqwest::Client,
}

/// A response that ended the retry loop (2xx, or a non-retryable status).
#[derive(Debug)]
pub struct RestResponse {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl RestClient {
    pub fn new(provider: &'static str, cfg: RestConfig) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("vaani/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RestError::Transport {
                provider,
                detail: e.to_string(),
            })?;
        Ok(RestClient {
            provider,
            cfg,
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.cfg.base_url, path)
    }

    /// Send the request built by `build` (called once per attempt), retrying 429/5xx and
    /// transport errors with exponential backoff and full jitter. A `Retry-After` in seconds
    /// is honoured up to `backoff_max`. Returns the 2xx response, or the error.
    pub async fn send<F>(&self, build: F) -> Result<RestResponse, RestError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0u32;
        loop {
            let result = build(&self.http).send().await;
            let (err, retry_after) = match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = resp.bytes().await.map_err(|e| RestError::Transport {
                        provider: self.provider,
                        detail: e.to_string(),
                    })?;
                    if (200..300).contains(&status) {
                        return Ok(RestResponse { status, body });
                    }
                    let text = String::from_utf8_lossy(&body).chars().take(500).collect();
                    (
                        RestError::Status {
                            provider: self.provider,
                            status,
                            body: text,
                        },
                        retry_after,
                    )
                }
                Err(e) => (
                    RestError::Transport {
                        provider: self.provider,
                        detail: e.without_url().to_string(),
                    },
                    None,
                ),
            };
            if !err.is_retryable() || attempt >= self.cfg.max_retries {
                return Err(err);
            }
            let delay = retry_after
                .map(|d| d.min(self.cfg.backoff_max))
                .unwrap_or_else(|| {
                    backoff_delay(attempt, self.cfg.backoff_base, self.cfg.backoff_max)
                });
            tracing::warn!(provider = self.provider, attempt, ?delay, error = %err, "retrying provider API call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Like [`send`](Self::send), then decode the JSON body.
    pub async fn send_json<T, F>(&self, build: F) -> Result<T, RestError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let resp = self.send(build).await?;
        serde_json::from_slice(&resp.body).map_err(|e| RestError::Decode {
            provider: self.provider,
            detail: e.to_string(),
        })
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base * 2^attempt)]`.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = base
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            let d = backoff_delay(attempt, Duration::from_millis(100), Duration::from_secs(2));
            assert!(d <= Duration::from_secs(2));
        }
    }
}
