//! What every cloud adapter shares: the API key that never prints, WebSocket connects over
//! our own rustls configuration, and how an HTTP status or a transport failure maps to a
//! retryable or fatal [`EngineError`].

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::pipeline::engines::EngineError;

/// A connected WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest message or frame a provider may send us (audio chunks are a few KiB).
const MAX_WS_MESSAGE: usize = 8 << 20;
/// How much of an error body goes into an error message.
const ERROR_BODY_CHARS: usize = 300;

/// An API key. Its `Debug` and `Display` print `ApiKey(***)`, never the key, so it can sit
/// in configs that get logged; error messages built from transport errors pass through
/// [`ApiKey::redact`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// `None` for an empty or blank key.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(Arc::from(key)))
    }

    /// The key itself, for the one header or query parameter that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key (and of its percent-encoded form) replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.replace(&*self.0, "[redacted]");
        let encoded = pct(&self.0);
        if encoded != *self.0 {
            out = out.replace(&encoded, "[redacted]");
        }
        out
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Percent-encode a query or path component (RFC 3986 unreserved characters kept).
pub(crate) fn pct(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// `base` without a trailing `/`.
pub(crate) fn trim_base(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// Whether an HTTP status means "try again / try another engine": timeouts, rate limits and
/// server errors. Other 4xx (bad key, bad request) are fatal.
pub fn status_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429) || (500..=599).contains(&status)
}

/// At most `n` characters of `s`, on a character boundary, with control characters removed.
pub(crate) fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(n + 1).collect();
    if out.chars().count() > n {
        out = out.chars().take(n).collect();
        out.push('…');
    }
    out
}

/// The error for a non-2xx HTTP answer (handshake or request), with a clipped, redacted
/// piece of its body.
pub(crate) fn status_error(
    engine: &'static str,
    status: u16,
    body: &[u8],
    key: Option<&ApiKey>,
) -> EngineError {
    let text = String::from_utf8_lossy(body);
    let detail = error_detail(&text);
    let detail = match key {
        Some(k) => k.redact(&detail),
        None => detail,
    };
    let message = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    EngineError {
        engine,
        message,
        retryable: status_retryable(status),
    }
}

/// The human part of a provider's JSON error body (`error.message`, `message`, `error`,
/// `detail`, `err_msg`), or the clipped body itself.
pub(crate) fn error_detail(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("error"),
            v.get("detail"),
            v.get("err_msg"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Some(s) = c.as_str() {
                return clip(s, ERROR_BODY_CHARS);
            }
        }
    }
    clip(body.trim(), ERROR_BODY_CHARS)
}

/// Our rustls client configuration: the webpki roots and the `ring` provider, chosen
/// explicitly so that a binary that also links another provider (the AWS SDK's) never
/// has to guess.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(b) => Some(Arc::new(
                    b.with_root_certificates(roots).with_no_client_auth(),
                )),
                Err(e) => {
                    tracing::error!(error = %e, "TLS configuration unavailable");
                    None
                }
            }
        })
        .clone()
}

/// Open a WebSocket to `url` with `headers`, within `timeout`. Header values are marked
/// sensitive (never printed by `http`'s `Debug`); errors are redacted with `key`.
pub(crate) async fn connect_ws(
    engine: &'static str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    key: Option<&ApiKey>,
) -> Result<Ws, EngineError> {
    let redact = |s: String| match key {
        Some(k) => k.redact(&s),
        None => s,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| EngineError::fatal(engine, redact(format!("bad URL: {e}"))))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| EngineError::fatal(engine, format!("bad header name {name}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| EngineError::fatal(engine, format!("bad value for header {name}")))?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    let connector = if url.starts_with("wss:") {
        let config =
            tls_config().ok_or_else(|| EngineError::fatal(engine, "no TLS configuration"))?;
        Connector::Rustls(config)
    } else {
        Connector::Plain
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(EngineError::retryable(
            engine,
            format!("connect timed out after {} ms", timeout.as_millis()),
        )),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(ws_error(engine, e, key)),
    }
}

/// Map a WebSocket failure to an engine error: a refused handshake by its HTTP status,
/// network trouble retryable, configuration trouble fatal.
pub(crate) fn ws_error(engine: &'static str, e: WsError, key: Option<&ApiKey>) -> EngineError {
    let redact = |s: String| match key {
        Some(k) => k.redact(&s),
        None => s,
    };
    match e {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let mut err = status_error(engine, status, body, key);
            if let Some(dg) = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
            {
                err.message = redact(format!("{}: {}", err.message, clip(dg, 200)));
            }
            err
        }
        WsError::Url(u) => EngineError::fatal(engine, redact(format!("bad URL: {u}"))),
        WsError::Tls(t) => EngineError::fatal(engine, redact(format!("TLS: {t}"))),
        WsError::Capacity(c) => EngineError::retryable(engine, format!("message too large: {c}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            EngineError::retryable(engine, "connection closed")
        }
        other => EngineError::retryable(engine, redact(format!("socket: {other}"))),
    }
}

/// Map a reqwest failure (connect, timeout, body read) to a retryable engine error without
/// the request URL, which may carry a key.
pub(crate) fn http_error(
    engine: &'static str,
    e: reqwest::Error,
    key: Option<&ApiKey>,
) -> EngineError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "response body broken off"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let detail = e.without_url().to_string();
    let detail = match key {
        Some(k) => k.redact(&detail),
        None => detail,
    };
    EngineError::retryable(engine, format!("{kind}: {}", clip(&detail, 200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-secret-123").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "ApiKey(***)");
        assert_eq!(
            key.redact("url?api_key=sk-secret-123&x=1"),
            "url?api_key=[redacted]&x=1"
        );
        let odd = ApiKey::new("a b/c").unwrap();
        assert_eq!(odd.redact("k=a%20b%2Fc"), "k=[redacted]");
        assert!(ApiKey::new("  ").is_none());
    }

    #[test]
    fn statuses_classify() {
        for s in [408, 429, 500, 502, 503, 529] {
            assert!(status_retryable(s), "{s}");
        }
        for s in [400, 401, 402, 403, 404, 422] {
            assert!(!status_retryable(s), "{s}");
        }
        let e = status_error(
            "x",
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            None,
        );
        assert_eq!(e.message, "HTTP 401: invalid x-api-key");
        assert!(!e.retryable);
    }

    #[test]
    fn clip_is_char_safe() {
        assert_eq!(clip("héllo wörld", 4), "héll…");
        assert_eq!(clip("a\u{0}b", 10), "ab");
    }
}
