//! The webhooks Lambda's handler: provider webhooks in, verified and normalized call events
//! and answer documents out.
//!
//! Place in the architecture: control plane, behind API Gateway. `main.rs` adapts Lambda
//! events to [`handle`]; `vaani dev` serves the very same [`handle`] over local HTTP with the
//! embedded store. Nothing here knows a provider's field names (that is `vaani_telephony`).
//!
//! Routes:
//! - `POST|GET /v1/{tenant}/{provider}/status`: status callback → stored event, state transition,
//!   call-events queue.
//! - `POST|GET /v1/{tenant}/{provider}/answer`: the same, then the answer document, bridging the
//!   call to the live, non-draining media node with the most free capacity, or the tenant's
//!   fallback (say a message and hang up).
//! - `POST|GET /v1/{tenant}/status`: status callback from any provider, detected from the payload.
//! - `GET /healthz`.

#[cfg(feature = "lambda")]
pub mod lambda;
pub mod process;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use vaani_events::Provider;
use vaani_store::Stores;
use vaani_telephony::WebhookRequest;

pub use process::{process_event, Processed};

/// What the handler needs from the outside world; tests and `vaani dev` build their own.
#[derive(Clone)]
pub struct Deps {
    pub stores: Stores,
    /// Current time (injectable for tests; give the store the same clock).
    pub clock: vaani_store::Clock,
    /// HMAC key for media tokens placed in answer documents.
    pub media_token_key: Arc<Vec<u8>>,
    /// How long stored call events live (DynamoDB TTL).
    pub event_ttl: chrono::Duration,
    /// Telnyx replay window.
    pub replay_window: std::time::Duration,
}

impl Deps {
    pub fn new(stores: Stores, media_token_key: Vec<u8>) -> Self {
        Deps {
            stores,
            clock: Arc::new(Utc::now),
            media_token_key: Arc::new(media_token_key),
            event_ttl: chrono::Duration::days(90),
            replay_window: std::time::Duration::from_secs(300),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// A handler response, independent of Lambda or axum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Response {
    fn json(status: u16, v: serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: Bytes::from(v.to_string()),
        }
    }

    /// An error body with a stable code (see README, "Error codes").
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Response::json(
            status,
            serde_json::json!({"error": code, "message": message}),
        )
    }
}

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Status {
        tenant: String,
        provider: Option<Provider>,
    },
    Answer {
        tenant: String,
        provider: Provider,
    },
}

/// Parse a request path (no query). `Err` carries the response for unknown paths.
pub fn route(path: &str) -> Result<Route, Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || Response::error(404, "not_found", "no such endpoint");
    let tenant_ok = |t: &str| vaani_core::tenant::valid_id(t);
    match segs.as_slice() {
        ["healthz"] => Ok(Route::Health),
        ["v1", tenant, "status"] if tenant_ok(tenant) => Ok(Route::Status {
            tenant: tenant.to_string(),
            provider: None,
        }),
        ["v1", tenant, provider, kind] if tenant_ok(tenant) => {
            let provider: Provider = provider.parse().map_err(|_| {
                Response::error(404, "unknown_provider", "unknown provider in path")
            })?;
            match *kind {
                "status" => Ok(Route::Status {
                    tenant: tenant.to_string(),
                    provider: Some(provider),
                }),
                "answer" => Ok(Route::Answer {
                    tenant: tenant.to_string(),
                    provider,
                }),
                _ => Err(not_found()),
            }
        }
        _ => Err(not_found()),
    }
}

/// Path part of a URL (`https://h/v1/x?y` → `/v1/x`).
pub fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path_and_query
        .split(['?', '#'])
        .next()
        .unwrap_or(path_and_query)
}

/// Handle one webhook. Never panics on hostile input; every failure is a response.
///
/// Nothing is acknowledged before it is durable: the store's writes are synced first, and a
/// failed sync turns the answer into a 503 so the provider retries (processing is idempotent).
pub async fn handle(req: WebhookRequest, deps: &Deps) -> Response {
    let resp = route_and_handle(req, deps).await;
    if resp.status >= 500 {
        return resp;
    }
    match deps.stores.durability.sync().await {
        Ok(()) => resp,
        Err(e) => {
            tracing::error!(error = %e, "store sync failed");
            Response::error(503, "store_unavailable", "temporary storage failure, retry")
        }
    }
}

async fn route_and_handle(req: WebhookRequest, deps: &Deps) -> Response {
    let route = match route(url_path(&req.url)) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !matches!(req.method, http::Method::GET | http::Method::POST) {
        return Response::error(405, "method_not_allowed", "use POST (or GET)");
    }
    match route {
        Route::Health if req.method != http::Method::GET => {
            Response::error(405, "method_not_allowed", "use GET")
        }
        Route::Health => Response::json(200, serde_json::json!({"status": "ok"})),
        Route::Status { tenant, provider } => {
            let provider = match provider.or_else(|| vaani_telephony::detect_provider(&req)) {
                Some(p) => p,
                None => {
                    return Response::error(
                        400,
                        "unknown_provider",
                        "could not tell the provider from the request",
                    )
                }
            };
            match process::accept(&req, &tenant, provider, deps).await {
                Ok(p) => Response::json(
                    200,
                    serde_json::json!({
                        "ok": true,
                        "call_id": p.call_id,
                        "event_id": p.event_id,
                        "duplicate": p.duplicate,
                        "status": p.status,
                    }),
                ),
                Err(resp) => resp,
            }
        }
        Route::Answer { tenant, provider } => {
            match process::accept(&req, &tenant, provider, deps).await {
                Ok(p) => process::answer(&tenant, provider, &p, deps).await,
                Err(resp) => resp,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Ok(Route::Health));
        assert_eq!(
            route("/v1/acme/twilio/status"),
            Ok(Route::Status {
                tenant: "acme".into(),
                provider: Some(Provider::Twilio)
            })
        );
        assert_eq!(
            route("/v1/acme/plivo/answer/"),
            Ok(Route::Answer {
                tenant: "acme".into(),
                provider: Provider::Plivo
            })
        );
        assert_eq!(
            route("/v1/acme/status"),
            Ok(Route::Status {
                tenant: "acme".into(),
                provider: None
            })
        );
        assert!(route("/v1/acme/skype/status").is_err());
        assert!(route("/v1/ac%20me/twilio/status").is_err());
        assert!(route("/v1/acme/twilio/other").is_err());
        assert!(route("/").is_err());
    }

    proptest::proptest! {
        #[test]
        fn routing_never_panics(url in ".{0,80}") {
            let _ = route(url_path(&url));
        }
    }

    #[test]
    fn paths_from_urls() {
        assert_eq!(
            url_path("https://h.example/v1/a/twilio/status?x=1"),
            "/v1/a/twilio/status"
        );
        assert_eq!(url_path("http://127.0.0.1:8080"), "/");
        assert_eq!(url_path("/healthz?x"), "/healthz");
    }
}
