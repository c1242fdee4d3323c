//! Calls the node places: [`SipNode::dial`](super::SipNode::dial) and its HTTP face,
//! `POST /node/calls` ([`router`]); and blind transfer of any call (REFER):
//! [`SipNode::transfer`](super::SipNode::transfer), `POST /node/calls/{call_id}/transfer`.
//!
//! A REFER from the far end (a PBX transferring the call to someone else, RFC 3515, the node
//! being the transferee of RFC 5589 §6) is carried out when its target is safe to call: a
//! `sip:` URI without headers (so no `Replaces`: attended transfer is not supported) whose
//! host is an IP inside a trunk's networks (`--sip-allow`, or `allow` in `--sip-trunks`), the
//! networks trusted to send us calls, reachable over UDP (or TCP already open); anything else is
//! declined (`603`), as the node must not become a way to place calls anywhere. The node
//! answers `202`, places the new call (same tenant, our call id with `.transfer`, From
//! `vaani`) running the app afresh, and reports it in NOTIFYs (`100`, each provisional, then
//! the final status); the far end ends the first call when it sees `200`.
//!
//! A call goes out of the node's SIP socket with our SDP offer (the node's codecs and
//! `telephone-event`), counts against `max_calls` from the moment it is dialled, appears in the
//! call registry with `direction: "outbound"`, and once answered its media runs the node's app
//! through the same `start_media` path as an answered incoming call. Its end is counted like
//! any call's (`not_connected` when it never connected).
//!
//! The node does no DNS lookups on the call path: a target whose host is a name is refused
//! unless an outbound proxy (an IP and port) is configured, which then receives the INVITE
//! with a `Route` to itself.
//!
//! A target with `;transport=tcp` is called over TCP (RFC 3261 §18.1.1): the node opens a
//! connection to the next hop (or reuses one open to it), says TCP in its Via and
//! `;transport=tcp` in its Contact, and sends the call's requests over that connection, which
//! stays open while the call lives. UDP otherwise; the node places no calls over TLS (it only
//! takes them: [`super::tcp`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::app::CallInfo;
use super::registry::CallRecord;
use super::{plan_from_answer, random_u64, CallEntry, Driver, SipCmd};
use crate::metrics::{EndReason as CallEndReason, Transport};
use crate::sip::digest::Credentials;
use crate::sip::header::Transport as SipTransport;
use crate::sip::sdp::{self, SessionDescription};
use crate::sip::uas::{CallHandle, Dial, EndReason, TransferState, UasError};
use crate::sip::{Host, NameAddr, SipUri, Uri};

/// How long opening a TCP connection for a call may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call we place may ring before we cancel it, unless the request says otherwise.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest answer timeout a request may ask for.
pub const MAX_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// The call id a tenant-wide dial token is issued for: it lets its holder place any call for
/// the tenant (the node then picks the call id). A token for one call id allows only that one.
pub const ANY_CALL: &str = "*";

/// A call to place.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// The target: a `sip:` URI, e.g. `sip:+919800000000@192.0.2.7:5060`.
    pub to: String,
    /// The From user (a caller id or name): 1–64 of `A-Z a-z 0-9 + - _ . * #`.
    pub from_user: String,
    /// Digest credentials for a trunk that challenges (401/407).
    pub credentials: Option<Credentials>,
    /// The call context, like an incoming call's: the tenant, our call id and the agent
    /// (`None`: the app's default).
    pub tenant: Option<String>,
    pub call_id: Option<String>,
    pub agent: Option<String>,
    /// Cancel the call when it has rung this long.
    pub answer_timeout: Duration,
    /// Extra header fields for the INVITE (e.g. `X-Vaani-Call-Id` / `X-Vaani-Token` when
    /// calling another Vaani node). Names must be tokens and values single-line.
    pub headers: Vec<(String, String)>,
}

/// A call that went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dialed {
    /// The node's handle (the `id` in `/debug/sip/calls`).
    pub handle: u64,
    pub sip_call_id: String,
    pub call_id: Option<String>,
    /// The same handle, for the node's own use.
    #[serde(skip)]
    pub(crate) call: CallHandle,
}

/// Why a call was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("the target must be a sip: URI without headers, e.g. sip:alice@192.0.2.7:5060")]
    BadTarget,
    #[error(
        "the target's host is a name: the node does no DNS lookups, so give an IP address \
         (sip:user@192.0.2.7:5060) or configure an outbound proxy"
    )]
    NeedsDns,
    #[error("the From user must be 1-64 characters of A-Z a-z 0-9 + - _ . * #")]
    BadFrom,
    #[error("the target's transport must be udp or tcp")]
    UnsupportedTransport,
    #[error("{0}")]
    Connect(String),
    #[error("{0} is outside every trunk's networks: not called for a REFER")]
    Untrusted(IpAddr),
    #[error("no agent {0:?} here")]
    UnknownAgent(String),
    #[error("the node is draining and places no new calls")]
    Draining,
    #[error("the node is at capacity ({0} calls)")]
    Full(u32),
    #[error("no free RTP port")]
    NoPort,
    #[error("the node's SIP side has stopped")]
    Stopped,
    #[error("SIP: {0}")]
    Sip(UasError),
}

impl DialError {
    /// The HTTP status `POST /node/calls` answers with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            DialError::BadTarget
            | DialError::NeedsDns
            | DialError::BadFrom
            | DialError::UnsupportedTransport => StatusCode::BAD_REQUEST,
            DialError::Connect(_) => StatusCode::BAD_GATEWAY,
            DialError::Untrusted(_) => StatusCode::FORBIDDEN,
            DialError::UnknownAgent(_) => StatusCode::NOT_FOUND,
            DialError::Draining | DialError::Full(_) | DialError::NoPort | DialError::Stopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DialError::Sip(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A blind transfer to ask for.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// Our call id of the call (inbound or outbound) to transfer.
    pub call_id: String,
    /// The tenant the call must belong to (`None`: any).
    pub tenant: Option<String>,
    /// Where the far end should call: a `sip:` or `tel:` URI.
    pub to: String,
}

/// Why a transfer was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("no live call with that call id")]
    UnknownCall,
    #[error("the transfer target must be a sip: or tel: URI without headers")]
    BadTarget,
    #[error("the call is not up yet")]
    NotUp,
    #[error("a transfer of this call is already under way")]
    Pending,
    #[error("the node's SIP side has stopped")]
    Stopped,
}

impl TransferError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            TransferError::UnknownCall => StatusCode::NOT_FOUND,
            TransferError::BadTarget => StatusCode::BAD_REQUEST,
            TransferError::NotUp | TransferError::Pending => StatusCode::CONFLICT,
            TransferError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Places calls through a running node's SIP task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dialer {
    commands: mpsc::Sender<SipCmd>,
}

impl Dialer {
    pub(super) fn new(commands: mpsc::Sender<SipCmd>) -> Dialer {
        Dialer { commands }
    }

    /// Sends the INVITE and returns once it is on its way (not when it is answered).
    pub async fn dial(&self, request: DialRequest) -> Result<Dialed, DialError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(SipCmd::Dial {
                request: Box::new(request),
                reply,
            })
            .await
            .map_err(|_| DialError::Stopped)?;
        answer.await.map_err(|_| DialError::Stopped)?
    }

    /// Sends the REFER and returns once it is on its way; the outcome shows in the call's
    /// registry record (`transfer`) and, on success, its end.
    pub async fn transfer(&self, request: TransferRequest) -> Result<(), TransferError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(SipCmd::Transfer { request, reply })
            .await
            .map_err(|_| TransferError::Stopped)?;
        answer.await.map_err(|_| TransferError::Stopped)?
    }
}

/// A From user we put in a URI as it is: phone numbers and simple names.
fn valid_from_user(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_' | b'.' | b'*' | b'#')
        })
}

/// Where a target goes: its own address when the host is an IP literal, else the outbound
/// proxy (with a loose Route to it), else nowhere.
fn route_target(
    target: &SipUri,
    proxy: Option<SocketAddr>,
) -> Result<(SocketAddr, Vec<NameAddr>), DialError> {
    let ip = match &target.host {
        Host::V4(a) => Some(IpAddr::V4(*a)),
        Host::V6(a) => Some(IpAddr::V6(*a)),
        Host::Name(_) => None,
    };
    match (ip, proxy) {
        (_, Some(proxy)) => {
            let mut uri = SipUri::new(match proxy.ip() {
                IpAddr::V4(a) => Host::V4(a),
                IpAddr::V6(a) => Host::V6(a),
            });
            uri.port = Some(proxy.port());
            uri.params
                .push(crate::sip::Param::new("lr", None::<String>));
            Ok((proxy, vec![NameAddr::new(Uri::Sip(uri))]))
        }
        (Some(ip), None) => {
            let default = if target.secure { 5061 } else { 5060 };
            Ok((
                SocketAddr::new(ip, target.port.unwrap_or(default)),
                Vec::new(),
            ))
        }
        (None, None) => Err(DialError::NeedsDns),
    }
}

/// The transport a target asks for with its `transport` parameter (UDP without one).
fn target_transport(target: &SipUri) -> Result<SipTransport, DialError> {
    match target.transport_param().as_deref() {
        None | Some("udp") => Ok(SipTransport::Udp),
        Some("tcp") => Ok(SipTransport::Tcp),
        Some(_) => Err(DialError::UnsupportedTransport),
    }
}

/// A request's target, checked: the URI, where the INVITE goes first, its route set, and the
/// transport.
fn plan_target(
    req: &DialRequest,
    proxy: Option<SocketAddr>,
) -> Result<(SipUri, SocketAddr, Vec<NameAddr>, SipTransport), DialError> {
    let target = match Uri::parse(req.to.trim()) {
        Some(Uri::Sip(u)) if !u.secure && u.headers.is_empty() => u,
        _ => return Err(DialError::BadTarget),
    };
    if !valid_from_user(&req.from_user) {
        return Err(DialError::BadFrom);
    }
    let transport = target_transport(&target)?;
    let (next_hop, route) = route_target(&target, proxy)?;
    Ok((target, next_hop, route, transport))
}

impl Driver {
    /// [`Dialer::dial`] arrived: placed at once over UDP or an open TCP connection; over TCP
    /// with none open yet, a task opens one first and hands the request back
    /// ([`SipCmd::DialOver`](super::SipCmd::DialOver)).
    pub(super) fn dial_cmd(
        &mut self,
        req: DialRequest,
        reply: oneshot::Sender<Result<Dialed, DialError>>,
    ) {
        let next_hop = match plan_target(&req, self.config.outbound_proxy) {
            Ok((_, hop, _, SipTransport::Tcp)) if !self.tcp.contains_key(&hop) => hop,
            Ok(_) | Err(_) => {
                let _ = reply.send(self.dial(Instant::now(), req));
                return;
            }
        };
        if self.shutdown.is_some() || self.config.metrics.is_draining() {
            let _ = reply.send(Err(DialError::Draining));
            return;
        }
        let (conns, commands) = (self.conns.clone(), self.self_tx.clone());
        tokio::spawn(async move {
            match conns.connect(next_hop, CONNECT_TIMEOUT).await {
                Ok(conn) => {
                    let cmd = SipCmd::DialOver {
                        peer: next_hop,
                        conn,
                        request: Box::new(req),
                        reply,
                    };
                    // If the SIP task is gone, the reply's drop tells the caller.
                    let _ = commands.send(cmd).await;
                }
                Err(e) => {
                    tracing::info!(to = %next_hop, error = %e, "call not placed");
                    let _ = reply.send(Err(DialError::Connect(e.to_string())));
                }
            }
        });
    }

    /// Places a call (the SIP task's side of [`Dialer::dial`]); a TCP call's connection is
    /// open by now ([`Self::dial_cmd`]).
    pub(super) fn dial(&mut self, now: Instant, req: DialRequest) -> Result<Dialed, DialError> {
        if self.shutdown.is_some() || self.config.metrics.is_draining() {
            return Err(DialError::Draining);
        }
        let (target, next_hop, route, transport) = plan_target(&req, self.config.outbound_proxy)?;
        if let Some(a) = &req.agent {
            if !self.config.app.has_agent(req.tenant.as_deref(), a) {
                return Err(DialError::UnknownAgent(a.clone()));
            }
        }
        let conn_calls = match transport {
            SipTransport::Tcp => match self.tcp.get(&next_hop) {
                Some(conn) => Some(conn.calls.clone()),
                None => {
                    return Err(DialError::Connect(format!(
                        "the TCP connection to {next_hop} closed before the call was placed"
                    )))
                }
            },
            _ => None,
        };
        let open = self.config.active.fetch_add(1, Ordering::AcqRel);
        if open >= self.config.max_calls {
            self.config.active.fetch_sub(1, Ordering::AcqRel);
            return Err(DialError::Full(self.config.max_calls));
        }
        let Some(reserved) = self.media.reserve() else {
            self.config.active.fetch_sub(1, Ordering::AcqRel);
            return Err(DialError::NoPort);
        };
        let port = reserved.port();
        let session_id = random_u64() >> 1;
        let offer = sdp::offer(&self.local_media(port, session_id, 1)).to_bytes();
        let mut from_uri = SipUri::new(self.uas.contact().host.clone());
        from_uri.user = Some(req.from_user.clone());
        let dial = Dial {
            target: Uri::Sip(target),
            from: NameAddr::new(Uri::Sip(from_uri)),
            next_hop,
            transport: transport.clone(),
            route,
            headers: req
                .headers
                .iter()
                .filter(|(n, v)| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
                        && !v.chars().any(char::is_control)
                })
                .cloned()
                .collect(),
            sdp: Bytes::from(offer),
            credentials: req.credentials,
            answer_timeout: Some(req.answer_timeout.min(MAX_ANSWER_TIMEOUT)),
        };
        if transport == SipTransport::Udp {
            // We call it over UDP now: a closed connection's memory must not swallow this.
            self.closed_streams.remove(&next_hop);
        }
        let call = match self.uas.dial(now, dial) {
            Ok(c) => c,
            Err(e) => {
                self.config.active.fetch_sub(1, Ordering::AcqRel);
                return Err(DialError::Sip(e));
            }
        };
        let sip_call_id = self.uas.sip_call_id(call).unwrap_or_default().to_string();
        if let Some(calls) = &conn_calls {
            calls.fetch_add(1, Ordering::AcqRel);
        }
        tracing::info!(
            call = %call,
            to = %next_hop,
            transport = transport.as_str(),
            rtp_port = port,
            vaani_call_id = ?req.call_id,
            "placing a call"
        );
        let info = CallInfo {
            call_id: req.call_id.clone(),
            tenant: req.tenant.clone(),
            agent: req.agent.clone(),
            sip_call_id: sip_call_id.clone(),
        };
        self.config.registry.add(CallRecord {
            id: call.as_u64(),
            sip_call_id: sip_call_id.clone(),
            call_id: req.call_id.clone(),
            tenant: req.tenant.clone(),
            source: next_hop.to_string(),
            direction: "outbound".into(),
            trunk: None,
            agent: req.agent.clone(),
            codec: String::new(),
            rtp_port: port,
            latched: None,
            state: "dialing".into(),
            end_reason: None,
            digits: String::new(),
            transfer: None,
            rtp_received: 0,
            rtp_sent: 0,
            started_at: chrono::Utc::now().to_rfc3339(),
            answered_at: None,
            ended_at: None,
        });
        self.config.metrics.call_started(Transport::Sip);
        self.calls.insert(
            call,
            CallEntry {
                media: None,
                plan: None,
                call_id: req.call_id.clone(),
                tenant: req.tenant,
                agent: req.agent,
                waiting: Some((reserved, info)),
                port,
                sdp_session_id: session_id,
                sdp_version: 1,
                hangup: None,
                started_at: chrono::Utc::now(),
                tcp: conn_calls,
            },
        );
        Ok(Dialed {
            handle: call.as_u64(),
            sip_call_id,
            call_id: req.call_id,
            call,
        })
    }

    /// The call's app asked for a blind transfer: REFER, or hang up when the call cannot be
    /// transferred (the caller must not be left hanging).
    pub(super) fn transfer_call(&mut self, now: Instant, call: CallHandle, to: &str) {
        let target = match Uri::parse(to.trim()) {
            Some(Uri::Sip(u)) if u.headers.is_empty() => Some(Uri::Sip(u)),
            Some(u @ Uri::Other { .. }) if to.trim().starts_with("tel:") => Some(u),
            _ => None,
        };
        let result = match &target {
            Some(t) => self.uas.transfer(now, call, t).map_err(|e| e.to_string()),
            None => Err("not a sip: or tel: URI".to_string()),
        };
        match result {
            Ok(()) => {
                tracing::info!(call = %call, "blind transfer requested by the app (REFER)");
                self.config
                    .registry
                    .update(call.as_u64(), |r| r.transfer = Some("requested".into()));
            }
            Err(e) => {
                tracing::warn!(call = %call, error = %e, "transfer not possible: hanging up");
                self.hang_up(
                    now,
                    call,
                    200,
                    "transfer failed",
                    CallEndReason::AgentHangup,
                );
            }
        }
    }

    /// Starts a blind transfer (the SIP task's side of [`Dialer::transfer`]).
    pub(super) fn transfer(
        &mut self,
        now: Instant,
        req: TransferRequest,
    ) -> Result<(), TransferError> {
        let call = self
            .calls
            .iter()
            .find(|(_, e)| {
                e.call_id.as_deref() == Some(req.call_id.as_str())
                    && req
                        .tenant
                        .as_ref()
                        .is_none_or(|t| e.tenant.as_ref() == Some(t))
                    && e.hangup.is_none()
            })
            .map(|(h, _)| *h)
            .ok_or(TransferError::UnknownCall)?;
        let target = match Uri::parse(req.to.trim()) {
            Some(Uri::Sip(u)) if u.headers.is_empty() => Uri::Sip(u),
            Some(u @ Uri::Other { .. }) if req.to.trim().starts_with("tel:") => u,
            _ => return Err(TransferError::BadTarget),
        };
        self.uas.transfer(now, call, &target).map_err(|e| match e {
            UasError::UnknownCall => TransferError::UnknownCall,
            UasError::TransferPending => TransferError::Pending,
            UasError::BadTarget => TransferError::BadTarget,
            _ => TransferError::NotUp,
        })?;
        tracing::info!(call = %call, "blind transfer requested (REFER)");
        self.config
            .registry
            .update(call.as_u64(), |r| r.transfer = Some("requested".into()));
        Ok(())
    }

    /// How a transfer we asked for is going.
    pub(super) fn on_transfer(&mut self, call: CallHandle, state: TransferState) {
        let text = match state {
            TransferState::Accepted => "accepted".to_string(),
            TransferState::Progress(s) => format!("trying: {s}"),
            TransferState::Succeeded(s) => format!("succeeded: {s}"),
            TransferState::Failed(s) => format!("failed: {s}"),
        };
        tracing::info!(call = %call, transfer = %text, "transfer");
        if let TransferState::Succeeded(_) = state {
            // The core is ending our leg with BYE: count it as the agent's hang-up.
            if let Some(e) = self.calls.get_mut(&call) {
                e.hangup.get_or_insert(CallEndReason::AgentHangup);
            }
        }
        self.config
            .registry
            .update(call.as_u64(), |r| r.transfer = Some(text));
    }

    /// The far end of `call` asks us to call `refer_to` (REFER).
    pub(super) fn on_refer_requested(&mut self, now: Instant, call: CallHandle, refer_to: &str) {
        // `Refer-To` is a name-addr (`<sip:…>`) or a bare URI.
        let target = NameAddr::parse(refer_to, false)
            .map(|n| n.uri)
            .ok_or(DialError::BadTarget);
        let placed = target.and_then(|uri| {
            self.refer_target_allowed(&uri)?;
            let to = uri.to_string();
            let entry = self.calls.get(&call).ok_or(DialError::Stopped)?;
            let request = DialRequest {
                to,
                from_user: "vaani".into(),
                credentials: None,
                tenant: entry.tenant.clone(),
                call_id: entry.call_id.as_ref().map(|id| format!("{id}.transfer")),
                agent: entry.agent.clone(),
                answer_timeout: DEFAULT_ANSWER_TIMEOUT,
                headers: Vec::new(),
            };
            self.dial(now, request)
        });
        let accept = match placed {
            Ok(dialed) => {
                let new_call = dialed.call;
                tracing::info!(call = %call, new_call = %new_call, "REFER from the far end: calling its target");
                self.referred.insert(new_call, call);
                true
            }
            Err(e) => {
                tracing::info!(call = %call, error = %e, "REFER from the far end: declined (603)");
                false
            }
        };
        let text = if accept {
            "referred: accepted"
        } else {
            "referred: declined"
        };
        self.config
            .registry
            .update(call.as_u64(), |r| r.transfer = Some(text.into()));
        if let Err(e) = self.uas.answer_refer(now, call, accept) {
            tracing::debug!(call = %call, error = %e, "REFER answer refused");
        }
    }

    /// Only `sip:` targets at an IP inside a trunk's networks (`--sip-allow`) are called for a
    /// far end's REFER.
    fn refer_target_allowed(&self, target: &Uri) -> Result<(), DialError> {
        let target = match target {
            Uri::Sip(u) if !u.secure && u.headers.is_empty() => u,
            _ => return Err(DialError::BadTarget),
        };
        let ip = match &target.host {
            Host::V4(a) => IpAddr::V4(*a),
            Host::V6(a) => IpAddr::V6(*a),
            Host::Name(_) => return Err(DialError::NeedsDns),
        };
        if self.config.trunks.trusts(ip) {
            Ok(())
        } else {
            Err(DialError::Untrusted(ip))
        }
    }

    /// A call placed for a REFER made progress (or was answered: `200`): NOTIFY its referrer.
    pub(super) fn refer_call_progress(&mut self, now: Instant, call: CallHandle, status: u16) {
        let Some(&referrer) = self.referred.get(&call) else {
            return;
        };
        if status >= 200 {
            self.referred.remove(&call);
        }
        let text = format!("referred: {status}");
        self.config
            .registry
            .update(referrer.as_u64(), |r| r.transfer = Some(text));
        // The referrer may have hung up already: nobody to tell.
        if let Err(e) = self.uas.notify_refer(now, referrer, status) {
            tracing::debug!(call = %referrer, error = %e, "NOTIFY for a REFER not sent");
        }
    }

    /// A call placed for a REFER ended; if it never got an answer, its referrer learns why.
    pub(super) fn refer_call_ended(&mut self, now: Instant, call: CallHandle, reason: &EndReason) {
        if !self.referred.contains_key(&call) {
            return;
        }
        let status = match reason {
            EndReason::Rejected(s) | EndReason::Failed(s) => *s,
            EndReason::Timeout => 408,
            EndReason::NoAnswer => 480,
            _ => 487,
        };
        self.refer_call_progress(now, call, status);
    }

    /// 180/183 for a call we placed.
    pub(super) fn on_progress(&mut self, call: CallHandle, status: u16, body: &[u8]) {
        let state = if status == 183 || !body.is_empty() {
            "early"
        } else {
            "ringing"
        };
        tracing::info!(call = %call, status, early_sdp = !body.is_empty(), "call progress");
        self.config
            .registry
            .update(call.as_u64(), |r| r.state = state.into());
    }

    /// A call we placed was answered (and acknowledged): its media starts with the answer.
    pub(super) fn on_answered(&mut self, now: Instant, call: CallHandle, body: &[u8]) {
        tracing::info!(call = %call, "outgoing call answered");
        let at = chrono::Utc::now().to_rfc3339();
        self.config.registry.update(call.as_u64(), |r| {
            r.state = "confirmed".into();
            r.answered_at = Some(at);
        });
        let plan = SessionDescription::parse(body)
            .map_err(|e| e.to_string())
            .and_then(|a| plan_from_answer(&a).map_err(|e| e.to_string()));
        match plan {
            Ok(plan) => self.start_media(now, call, plan),
            Err(error) => {
                tracing::info!(call = %call, %error, "no usable SDP answer in the 2xx");
                self.hang_up(now, call, 488, "no usable SDP answer", CallEndReason::Error);
            }
        }
    }
}

/// What `POST /node/calls` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    /// The target `sip:` URI.
    pub to: String,
    /// The From user (default `vaani`).
    pub from: Option<String>,
    pub tenant: String,
    /// Our call id; when absent the node makes one (the token must then be a tenant-wide
    /// one, issued for [`ANY_CALL`]).
    pub call_id: Option<String>,
    /// Seconds the call may ring (default 60, at most 300).
    pub answer_timeout: Option<u64>,
    /// Digest credentials for a trunk that challenges.
    pub auth: Option<AuthBody>,
    /// The agent that talks on the call (default: the node's).
    pub agent: Option<String>,
}

/// Digest credentials in a [`DialBody`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBody {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AuthBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthBody")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What `POST /node/calls` answers with (`201`).
#[derive(Debug, Serialize)]
struct DialReply {
    call_id: String,
    sip_call_id: String,
    /// The node's handle: the `id` of the call in `/debug/sip/calls`.
    node_call: u64,
}

#[derive(Clone)]
struct DialState {
    dialer: Dialer,
    token_key: Arc<Vec<u8>>,
}

/// `POST /node/calls`: places a call from this node. JSON [`DialBody`]; authorized by
/// `Authorization: Bearer <media token>` issued (`vaani_core::token`) for the body's tenant
/// and call id (or [`ANY_CALL`] when the body has none). `201` with the call ids; `400` for a
/// bad body or target, `401` for a missing or wrong token, `503` (with `Retry-After`) when the
/// node is draining or full.
pub fn router(dialer: Dialer, token_key: Arc<Vec<u8>>) -> axum::Router {
    axum::Router::new()
        .route("/node/calls", axum::routing::post(post_call))
        .route(
            "/node/calls/{call_id}/transfer",
            axum::routing::post(post_transfer),
        )
        .with_state(DialState { dialer, token_key })
}

/// What `POST /node/calls/{call_id}/transfer` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// Where the far end should call: `sip:` or `tel:`.
    pub to: String,
    pub tenant: String,
}

/// The bearer token of a request, verified for `(tenant, call_id)`.
fn authorize(
    headers: &HeaderMap,
    key: &[u8],
    tenant: &str,
    call_id: &str,
) -> Result<(), Box<Response>> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <media token> required",
        )));
    };
    vaani_core::token::verify(key, token, tenant, call_id, chrono::Utc::now()).map_err(|e| {
        tracing::info!(%tenant, reason = %e, "node call API refused: token");
        Box::new(error(StatusCode::UNAUTHORIZED, &e.to_string()))
    })
}

/// `POST /node/calls/{call_id}/transfer`: blind-transfers the call with our call id
/// `call_id` (REFER). JSON [`TransferBody`]; the bearer token must be issued for the tenant
/// and that call id. `202` once the REFER is sent (the outcome shows as `transfer` in
/// `/debug/sip/calls`); `404` no such live call, `409` not up yet or already transferring.
async fn post_transfer(
    State(state): State<DialState>,
    axum::extract::Path(call_id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<TransferBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be JSON: {\"to\":\"sip:...\",\"tenant\":\"...\"}",
        );
    };
    if !vaani_core::tenant::valid_id(&body.tenant) || !super::admission::valid_call_id(&call_id) {
        return error(StatusCode::BAD_REQUEST, "bad tenant or call id");
    }
    if let Err(r) = authorize(&headers, &state.token_key, &body.tenant, &call_id) {
        return *r;
    }
    let request = TransferRequest {
        call_id: call_id.clone(),
        tenant: Some(body.tenant),
        to: body.to,
    };
    match state.dialer.transfer(request).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "call_id": call_id, "transfer": "requested" })),
        )
            .into_response(),
        Err(e) => error(e.http_status(), &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message });
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
    }
    r
}

async fn post_call(State(state): State<DialState>, headers: HeaderMap, body: Bytes) -> Response {
    let body: DialBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body must be JSON: {\"to\":\"sip:...\",\"tenant\":\"...\"} with optional from, call_id, answer_timeout, auth, agent",
            )
        }
    };
    if !vaani_core::tenant::valid_id(&body.tenant) {
        return error(StatusCode::BAD_REQUEST, "bad tenant id");
    }
    if let Some(id) = &body.call_id {
        if !super::admission::valid_call_id(id) {
            return error(StatusCode::BAD_REQUEST, "bad call_id");
        }
    }
    if body
        .agent
        .as_deref()
        .is_some_and(|a| !super::admission::valid_agent_id(a))
    {
        return error(StatusCode::BAD_REQUEST, "bad agent id");
    }
    let scope = body.call_id.as_deref().unwrap_or(ANY_CALL);
    if let Err(r) = authorize(&headers, &state.token_key, &body.tenant, scope) {
        return *r;
    }
    let call_id = body
        .call_id
        .clone()
        .unwrap_or_else(|| format!("out-{:016x}", random_u64()));
    let request = DialRequest {
        to: body.to,
        from_user: body.from.unwrap_or_else(|| "vaani".into()),
        credentials: body.auth.map(|a| Credentials {
            username: a.username,
            password: a.password,
        }),
        tenant: Some(body.tenant),
        call_id: Some(call_id.clone()),
        agent: body.agent,
        answer_timeout: body
            .answer_timeout
            .map_or(DEFAULT_ANSWER_TIMEOUT, Duration::from_secs),
        headers: Vec::new(),
    };
    match state.dialer.dial(request).await {
        Ok(d) => (
            StatusCode::CREATED,
            axum::Json(DialReply {
                call_id,
                sip_call_id: d.sip_call_id,
                node_call: d.handle,
            }),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = %e, "dial refused");
            error(e.http_status(), &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_need_an_ip_or_a_proxy() {
        let t = |s: &str| match Uri::parse(s) {
            Some(Uri::Sip(u)) => u,
            _ => panic!("{s}"),
        };
        let (hop, route) = route_target(&t("sip:bob@192.0.2.7"), None).unwrap();
        assert_eq!(hop, "192.0.2.7:5060".parse::<SocketAddr>().unwrap());
        assert!(route.is_empty());
        let (hop, _) = route_target(&t("sip:bob@[2001:db8::1]:5080"), None).unwrap();
        assert_eq!(hop, "[2001:db8::1]:5080".parse::<SocketAddr>().unwrap());
        assert_eq!(
            route_target(&t("sip:bob@trunk.example.com"), None),
            Err(DialError::NeedsDns)
        );
        let proxy = "192.0.2.9:5090".parse().unwrap();
        let (hop, route) = route_target(&t("sip:bob@trunk.example.com"), Some(proxy)).unwrap();
        assert_eq!(hop, proxy);
        assert_eq!(route[0].to_string(), "<sip:192.0.2.9:5090;lr>");
        assert!(DialError::NeedsDns.to_string().contains("no DNS"));
    }

    #[test]
    fn from_users() {
        for ok in ["vaani", "+919800000000", "a.b_c-d", "*99#"] {
            assert!(valid_from_user(ok), "{ok}");
        }
        for bad in ["", "a b", "a@b", "a;b", "<x>", &"x".repeat(65)] {
            assert!(!valid_from_user(bad), "{bad}");
        }
    }
}
