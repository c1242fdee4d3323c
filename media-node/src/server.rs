//! The media node's I/O driver for provider media streams: the one place that owns the
//! WebSocket sockets and timers (DESIGN.md §3.1). Each connection runs one sans-IO
//! [`Session`] and one [`CallHandler`] from the node's [`MediaApp`]; the driver only shuttles
//! text frames, timer ticks and the handler's actions between them.
//!
//! Route: `GET /streams/{tenant}/{provider}` (WebSocket upgrade), the URL the answer webhook
//! puts in the provider's answer document (`{node ws_url}/{tenant}/{provider}`). The media
//! token in the stream's `start` is checked for that tenant before any audio flows.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use vaani_events::Provider;

use crate::streams::{
    Dialect, Event, Exotel, Plivo, Session, SessionConfig, StartInfo, Telnyx, TokenAuth, Twilio,
};

/// What the node does with a call's audio: the echo app now, the AI pipeline later.
pub trait MediaApp: Send + Sync + 'static {
    /// A stream started (and authenticated): the handler for this call.
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler>;
}

/// One call's audio logic. Gets every stream event, returns what to do.
pub trait CallHandler: Send {
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>);
}

/// What a handler asks the driver to do on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play audio, in the stream's outbound format.
    Audio(Vec<u8>),
    /// Send what is queued even if it ends in a partial frame (end of an utterance).
    Flush,
    /// Report back (as [`Event::Mark`]) when everything queued before it has played.
    Mark(String),
    /// Drop everything not yet played (barge-in).
    Clear,
    /// End the stream (the provider then continues its call flow or hangs up).
    Hangup,
}

/// Settings and shared state of the stream server.
pub struct StreamServer {
    /// HMAC key of media tokens (the same key the answer webhook signs with).
    pub token_key: Arc<Vec<u8>>,
    /// Refuse streams without a valid media token. Only local tests turn this off.
    pub require_token: bool,
    pub app: Arc<dyn MediaApp>,
    /// Above this many concurrent streams, upgrades are refused with 503 + `Retry-After`.
    pub max_calls: u32,
    /// Streams open now (exported to the registry heartbeat and metrics).
    pub active: Arc<AtomicU32>,
}

/// The `/streams/{tenant}/{provider}` routes.
pub fn router(server: Arc<StreamServer>) -> axum::Router {
    axum::Router::new()
        .route("/streams/{tenant}/{provider}", axum::routing::get(upgrade))
        .with_state(server)
}

/// Counts an open stream for as long as it lives.
struct ActiveGuard(Arc<AtomicU32>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn upgrade(
    State(server): State<Arc<StreamServer>>,
    Path((tenant, provider)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(provider) = provider.parse::<Provider>() else {
        return (StatusCode::NOT_FOUND, "unknown provider").into_response();
    };
    if !valid_tenant(&tenant) || provider == Provider::Signalwire {
        return (StatusCode::NOT_FOUND, "no such stream endpoint").into_response();
    }
    // Reserve a slot before upgrading, so the limit holds under a burst.
    let open = server.active.fetch_add(1, Ordering::AcqRel);
    let guard = ActiveGuard(server.active.clone());
    if open >= server.max_calls {
        tracing::warn!(%provider, open, max = server.max_calls, "stream refused: node full");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "media node at capacity",
        )
            .into_response();
    }
    let mut cfg = if server.require_token {
        SessionConfig::authenticated(TokenAuth::new(server.token_key.as_slice(), tenant.clone()))
    } else {
        SessionConfig::unauthenticated()
    };
    if let Some(q) = query {
        cfg = cfg.with_query(q);
    }
    let app = server.app.clone();
    ws.on_upgrade(move |socket| async move {
        let _guard = guard;
        let result = match provider {
            Provider::Twilio => drive::<Twilio>(socket, cfg, app).await,
            Provider::Exotel => drive::<Exotel>(socket, cfg, app).await,
            Provider::Plivo => drive::<Plivo>(socket, cfg, app).await,
            Provider::Telnyx => drive::<Telnyx>(socket, cfg, app).await,
            Provider::Signalwire => Ok(()),
        };
        if let Err(reason) = result {
            tracing::warn!(tenant = %tenant, %provider, %reason, "stream ended with an error");
        }
    })
}

/// WebSocket close code for a refused token (RFC 6455 §7.4.1: policy violation).
const CLOSE_POLICY: u16 = 1008;
/// Close code for a protocol error on the provider's side (unsupported data).
const CLOSE_PROTOCOL: u16 = 1002;

async fn close(
    socket: &mut futures::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

/// Run one stream until it ends: the session decides what goes on the wire and when; the
/// handler decides what audio to play.
async fn drive<D: Dialect>(
    socket: WebSocket,
    cfg: SessionConfig,
    app: Arc<dyn MediaApp>,
) -> Result<(), String> {
    let (mut tx, mut rx) = socket.split();
    let started = Instant::now();
    let mut session = Session::<D>::new(cfg, started, chrono::Utc::now());
    let mut handler: Option<Box<dyn CallHandler>> = None;
    let mut actions = Vec::new();
    loop {
        let now = Instant::now();
        while let Some(frame) = session.poll_transmit(now) {
            tx.send(Message::Text(frame.into()))
                .await
                .map_err(|e| format!("send failed: {e}"))?;
        }
        if session.is_ended() {
            let _ = tx.close().await;
            return Ok(());
        }
        let sleep = session
            .next_deadline()
            .map(|d| tokio::time::sleep_until(tokio::time::Instant::from_std(d)));
        let msg = match sleep {
            Some(sleep) => tokio::select! {
                m = rx.next() => m,
                () = sleep => continue,
            },
            None => rx.next().await,
        };
        let now = Instant::now();
        let events = match msg {
            Some(Ok(Message::Text(text))) => match session.on_text(now, text.as_str()) {
                Ok(events) => events,
                Err(e) => {
                    let code = if e.is_auth() {
                        CLOSE_POLICY
                    } else {
                        CLOSE_PROTOCOL
                    };
                    close(&mut tx, code, e.code()).await;
                    return Err(e.to_string());
                }
            },
            Some(Ok(Message::Close(_))) | None => session.on_close(now),
            Some(Ok(_)) => continue, // ping/pong are answered by the library; binary is unused
            Some(Err(e)) => {
                session.on_close(now);
                return Err(format!("socket error: {e}"));
            }
        };
        for event in &events {
            if let Event::Start(info) = event {
                tracing::info!(provider = %D::PROVIDER, call_id = ?info.call_id, stream = %info.stream_id, "stream started");
                handler = Some(app.start(info));
            }
            if let Some(h) = handler.as_mut() {
                h.on_event(event, &mut actions);
            }
            if matches!(event, Event::Stop { .. } | Event::Closed) {
                tracing::info!(provider = %D::PROVIDER, "stream stopped");
            }
        }
        for action in actions.drain(..) {
            let result = match action {
                Action::Audio(bytes) => session.send_audio(now, &bytes),
                Action::Flush => {
                    session.flush();
                    Ok(())
                }
                Action::Mark(name) => session.mark(name),
                Action::Clear => {
                    session.clear(now);
                    Ok(())
                }
                Action::Hangup => {
                    let _ = tx.close().await;
                    return Ok(());
                }
            };
            if let Err(e) = result {
                tracing::warn!(provider = %D::PROVIDER, error = %e, "stream action refused");
            }
        }
        if matches!(events.last(), Some(Event::Stop { .. } | Event::Closed)) {
            return Ok(());
        }
    }
}

/// `--app echo`: plays back what it hears, for media tests. Keypresses drive the playout
/// controls the pipeline will use: `0` clears (barge-in), any other digit flushes and places
/// a mark named `dtmf-<digit>` behind the audio queued so far.
pub struct EchoApp;

impl MediaApp for EchoApp {
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler> {
        Box::new(Echo {
            same_format: info.format == info.outbound_format,
        })
    }
}

struct Echo {
    /// Inbound and outbound formats agree (true for every provider's default setup); when
    /// they do not, echo stays silent rather than playing noise.
    same_format: bool,
}

impl CallHandler for Echo {
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>) {
        match event {
            Event::Media(m) if self.same_format => actions.push(Action::Audio(m.payload.clone())),
            Event::Dtmf { digit: '0', .. } => actions.push(Action::Clear),
            Event::Dtmf { digit, .. } => {
                actions.push(Action::Flush);
                actions.push(Action::Mark(format!("dtmf-{digit}")));
            }
            _ => {}
        }
    }
}
