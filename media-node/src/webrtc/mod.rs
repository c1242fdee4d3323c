//! Browser calls over WebRTC: WHIP-style signalling (RFC 9725) over the node's HTTP port, Opus
//! audio, and the same app as SIP calls ([`SipApp`]).
//!
//! - `POST /webrtc/{tenant}?call_id=…` with `Content-Type: application/sdp` and a media token
//!   (`Authorization: Bearer …` or `?token=`): the body is the browser's offer (non-trickle:
//!   its candidates inside). Answered `201 Created` with `Location: /webrtc/{tenant}/{session}`
//!   and the answer SDP, sent once our ICE gathering is complete (one host candidate).
//! - `DELETE /webrtc/{tenant}/{session}` with the same token hangs up (`200`).
//! - `GET /debug/webrtc/calls`: live and recently ended calls (see [`router`]).
//!
//! Refusals are plain text `code: message` with a status from [`whip::WhipError::status`]; `503`
//! with `Retry-After` when the node is full or draining.
//!
//! Each call gets one UDP socket on the media address, on an even port of the node's RTP range
//! (taken like a SIP call's, then handed to the `webrtc` crate, which binds it itself: the
//! crate takes addresses, not sockets, so a port freed and retaken in between is retried). ICE
//! has no STUN or TURN servers and mDNS is off: the only candidate is the media address, and
//! the node checks only the browser's candidates on the same side of loopback as it
//! ([`whip::usable_candidates`]).
//!
//! The `webrtc` crate (0.21: an async driver over the sans-IO `rtc` core) owns ICE, DTLS and
//! SRTP inside its own task per call; [`call`] owns the audio and decides when a call ends.

mod call;
/// Opus moved to [`crate::codec::opus`] (SIP/RTP uses it too).
pub use crate::codec::opus;
pub mod whip;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use call::{CallTimers, SetupError};

use crate::metrics::{Metrics, Transport};
use crate::sip::sdp::MAX_SDP_SIZE;
use crate::sipnode::app::{CallInfo, SipApp};
use crate::sipnode::ports::{PortPool, PortRange};
use crate::sipnode::registry::{self, CallRegistry, Record};
use call::{ActiveGuard, CallLink, Negotiated};
use whip::{Credentials, WhipError};

/// One WebRTC call's record in `GET /debug/webrtc/calls`. No tokens, no SDP.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WebRtcCallRecord {
    #[serde(skip)]
    pub id: u64,
    /// The session id in the call's URL.
    pub session: String,
    pub call_id: String,
    pub tenant: String,
    /// Who sent the offer (HTTP peer `ip:port`), when known.
    pub source: Option<String>,
    pub codec: String,
    /// Our UDP port (ICE, DTLS and SRTP all on it).
    pub udp_port: u16,
    /// `connecting`, `connected`, `disconnected`, `ended`.
    pub state: String,
    pub end_reason: Option<String>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
}

impl Record for WebRtcCallRecord {
    fn id(&self) -> u64 {
        self.id
    }

    fn mark_ended(&mut self, reason: &str, at: String) {
        self.state = "ended".into();
        self.end_reason = Some(reason.to_string());
        self.ended_at = Some(at);
    }
}

/// Settings and shared state of the WebRTC endpoint.
pub struct WebRtcConfig {
    /// The address ICE binds and advertises (a local address: no 1:1 NAT mapping yet).
    pub media_address: IpAddr,
    /// Ports are taken from this range (even ports, as for RTP).
    pub ports: PortRange,
    /// HMAC key of media tokens.
    pub token_key: Arc<Vec<u8>>,
    pub app: Arc<dyn SipApp>,
    /// Calls (all transports, through `active`) above which offers get `503`.
    pub max_calls: u32,
    pub active: Arc<AtomicU32>,
    /// The node's counters and draining flag: while draining, offers get `503`.
    pub metrics: Arc<Metrics>,
    pub registry: CallRegistry<WebRtcCallRecord>,
    /// Becomes `true` when the node stops for good: calls still up are hung up.
    pub closing: watch::Receiver<bool>,
    pub timers: CallTimers,
}

/// How many used call ids are remembered (a media token starts one call).
const REMEMBERED_CALL_IDS: usize = 4096;
/// Tries at binding a port the crate then fails to take.
const BIND_TRIES: usize = 3;

/// A live session: what `DELETE` needs.
struct Session {
    tenant: String,
    call_id: String,
    hangup: mpsc::Sender<()>,
}

/// The WebRTC endpoint: its config, port pool and live sessions.
pub struct WebRtcNode {
    config: WebRtcConfig,
    pool: PortPool,
    sessions: Mutex<HashMap<u64, Session>>,
    /// Call ids that already started a call (oldest first), so a token cannot start two.
    used: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl WebRtcNode {
    pub fn new(config: WebRtcConfig) -> Arc<WebRtcNode> {
        Arc::new(WebRtcNode {
            pool: PortPool::new(config.media_address, config.ports),
            config,
            sessions: Mutex::new(HashMap::new()),
            used: Mutex::new((HashSet::new(), VecDeque::new())),
        })
    }

    pub fn registry(&self) -> &CallRegistry<WebRtcCallRecord> {
        &self.config.registry
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `call_id` used; `false` if it already was.
    fn claim(&self, call_id: &str) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *used;
        if !set.insert(call_id.to_string()) {
            return false;
        }
        order.push_back(call_id.to_string());
        if order.len() > REMEMBERED_CALL_IDS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    /// Forgets that `call_id` was used (its call could not be set up).
    fn unclaim(&self, call_id: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.0.remove(call_id);
    }

    /// Builds the peer connection on a port of the range and answers `offer`.
    async fn negotiate(&self, offer: &str) -> Result<(Negotiated, u16), SetupError> {
        let mut last = SetupError::Local("no free UDP port in the range".into());
        for _ in 0..BIND_TRIES {
            let Some(port) = self
                .pool
                .bind()
                .and_then(|s| s.local_addr().ok())
                .map(|a| a.port())
            else {
                break;
            };
            let addr = SocketAddr::new(self.config.media_address, port);
            let offer = whip::usable_candidates(offer, self.config.media_address);
            match Negotiated::answer(offer, addr, self.config.timers).await {
                Ok(n) => return Ok((n, port)),
                Err(SetupError::Offer(e)) => return Err(SetupError::Offer(e)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// `POST /webrtc/{tenant}`, `DELETE /webrtc/{tenant}/{session}` and
/// `GET /debug/webrtc/calls`.
pub fn router(node: Arc<WebRtcNode>) -> axum::Router {
    axum::Router::new()
        .route("/webrtc/{tenant}", axum::routing::post(offer))
        .route("/webrtc/{tenant}/{session}", axum::routing::delete(hang_up))
        .with_state(node.clone())
        .merge(registry::routes(
            "/debug/webrtc/calls",
            node.config.registry.clone(),
        ))
}

fn refuse(e: &WhipError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!("{}: {e}\n", e.code());
    if status == StatusCode::UNAUTHORIZED {
        (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
    } else {
        (status, body).into_response()
    }
}

fn unavailable(why: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        format!("{why}\n"),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The answer to an offer the WebRTC stack could not take up.
fn setup_refused(tenant: &str, e: &SetupError) -> Response {
    match e {
        SetupError::Offer(_) => {
            tracing::info!(%tenant, error = %e, "WebRTC offer refused by the stack");
            (StatusCode::BAD_REQUEST, format!("bad_sdp: {e}\n")).into_response()
        }
        SetupError::Local(_) => {
            tracing::warn!(%tenant, error = %e, "WebRTC setup failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "setup_failed: WebRTC setup failed\n",
            )
                .into_response()
        }
    }
}

async fn offer(
    State(node): State<Arc<WebRtcNode>>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    if !vaani_core::tenant::valid_id(&tenant) {
        return (StatusCode::NOT_FOUND, "no such tenant endpoint\n").into_response();
    }
    if node.config.metrics.is_draining() {
        tracing::info!("WebRTC offer refused: node draining");
        return unavailable("media node draining");
    }
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let (parts, body) = request.into_parts();
    if let Err(e) = whip::check_content_type(header_str(&parts.headers, header::CONTENT_TYPE)) {
        return refuse(&e);
    }
    let creds = Credentials::from_request(
        header_str(&parts.headers, header::AUTHORIZATION),
        parts.uri.query(),
    );
    let call_id = match creds.authorize(&node.config.token_key, &tenant, chrono::Utc::now()) {
        Ok(c) => c.to_string(),
        Err(e) => {
            tracing::warn!(%tenant, code = e.code(), "WebRTC offer refused: media token");
            return refuse(&e);
        }
    };
    let Ok(body) = axum::body::to_bytes(Body::new(body), MAX_SDP_SIZE + 1).await else {
        return refuse(&WhipError::TooLarge);
    };
    if let Err(e) = whip::check_offer(&body) {
        tracing::info!(%tenant, code = e.code(), "WebRTC offer refused");
        return refuse(&e);
    }
    let Ok(sdp) = std::str::from_utf8(&body) else {
        return refuse(&WhipError::BadSdp(crate::sip::sdp::SdpError::NotUtf8));
    };
    // Capacity: reserve a slot first so a burst cannot overshoot.
    let open = node.config.active.fetch_add(1, Ordering::AcqRel);
    let guard = ActiveGuard(node.config.active.clone());
    if open >= node.config.max_calls {
        tracing::warn!(
            open,
            max = node.config.max_calls,
            "WebRTC offer refused: node full"
        );
        return unavailable("media node at capacity");
    }
    if !node.claim(&call_id) {
        return (
            StatusCode::CONFLICT,
            "call_id_used: this media token already started a call\n",
        )
            .into_response();
    }
    let (negotiated, port) = match node.negotiate(sdp).await {
        Ok(n) => n,
        Err(e) => {
            node.unclaim(&call_id);
            return setup_refused(&tenant, &e);
        }
    };
    let answer = negotiated.answer.clone();
    let id = rand::random::<u64>();
    let session = whip::session_path(id);
    let location = format!("/webrtc/{tenant}/{session}");
    let (hangup_tx, hangup) = mpsc::channel(1);
    node.sessions().insert(
        id,
        Session {
            tenant: tenant.clone(),
            call_id: call_id.clone(),
            hangup: hangup_tx,
        },
    );
    node.config.registry.add(WebRtcCallRecord {
        id,
        session: session.clone(),
        call_id: call_id.clone(),
        tenant: tenant.clone(),
        source,
        codec: "opus/48000".into(),
        udp_port: port,
        state: "connecting".into(),
        end_reason: None,
        packets_received: 0,
        packets_sent: 0,
        started_at: chrono::Utc::now().to_rfc3339(),
        ended_at: None,
    });
    node.config.metrics.call_started(Transport::WebRtc);
    let info = CallInfo {
        call_id: Some(call_id.clone()),
        tenant: Some(tenant.clone()),
        agent: None,
        sip_call_id: format!("webrtc-{session}"),
    };
    let link = CallLink {
        id,
        call_id,
        tenant,
        app: node.config.app.start(&info),
        registry: node.config.registry.clone(),
        metrics: node.config.metrics.clone(),
        hangup,
        closing: node.config.closing.clone(),
        timers: node.config.timers,
        guard,
    };
    tracing::info!(%session, port, "WebRTC call answered");
    let task_node = node.clone();
    tokio::spawn(async move {
        call::run(negotiated, link).await;
        task_node.sessions().remove(&id);
    });
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        answer,
    )
        .into_response()
}

async fn hang_up(
    State(node): State<Arc<WebRtcNode>>,
    Path((tenant, session)): Path<(String, String)>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let found = whip::parse_session(&session).and_then(|id| {
        node.sessions()
            .get(&id)
            .filter(|s| s.tenant == tenant)
            .map(|s| (s.call_id.clone(), s.hangup.clone()))
    });
    let Some((call_id, hangup)) = found else {
        return (StatusCode::NOT_FOUND, "no_session: no such session\n").into_response();
    };
    let creds = Credentials::from_request(
        header_str(&headers, header::AUTHORIZATION),
        query.as_deref(),
    );
    if let Err(e) = creds.authorize_call(
        &node.config.token_key,
        &tenant,
        &call_id,
        chrono::Utc::now(),
    ) {
        tracing::warn!(%session, code = e.code(), "WebRTC hang-up refused: media token");
        return refuse(&e);
    }
    let _ = hangup.try_send(());
    (StatusCode::OK, "hung up\n").into_response()
}
