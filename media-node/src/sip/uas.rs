//! The user-agent server core (RFC 3261 §8.2, §12–§15), sans-IO: it turns datagrams into
//! calls and calls into datagrams, on top of the [`TransactionLayer`].
//!
//! Driven like the layers below it: [`Uas::receive`] (a datagram and its source),
//! [`Uas::handle_timeout`] at [`Uas::next_deadline`], and the driver's decisions about calls
//! ([`Uas::accept`], [`Uas::reject`], [`Uas::ring`], [`Uas::hangup`]); everything it wants
//! done comes out of [`Uas::poll_output`] as [`UasOutput::Transmit`] (bytes for an address)
//! or [`UasOutput::Event`]. It never reads a clock, owns a socket or draws a random number
//! (tags and branches come from a generator seeded through [`UasConfig::seed`]).
//!
//! What it does:
//!
//! - **Trunk allowlist**: requests from a source outside [`UasConfig::allow`] get a stateless
//!   `403` and create no state; anything else from there (responses, ACKs, unparseable bytes)
//!   is dropped.
//! - **Malformed requests** get the `400`/`505` that [`ParseError::reply`] builds, sent back to
//!   the source; malformed responses are dropped (§18.1.2).
//! - **INVITE** (§13.3): `100 Trying` comes from the transaction layer; the driver gets
//!   [`UasEvent::Incoming`] and answers with [`Uas::accept`] (a 2xx with our SDP, which
//!   creates the dialog, §12.1.1) or [`Uas::reject`]. The 2xx is retransmitted by this core,
//!   as §13.3.1.4 gives the job to the UAS core: at T1, doubling to T2, until the ACK arrives;
//!   after 64·T1 without it the call is ended with a BYE.
//! - **CANCEL** (§9.2): `200` for the CANCEL, `487` for the INVITE if it had no final response
//!   yet; `481` when it matches no INVITE.
//! - **BYE** (§15.1.2): `200`, and a pending re-INVITE gets `487`; `481` outside a dialog.
//! - **re-INVITE** (§14.2): the offer goes to the driver as [`UasEvent::Reinvite`] and is
//!   answered with the same `accept`/`reject`; `500` + `Retry-After` while one is pending,
//!   `491` while our last 2xx is unacknowledged.
//! - **INFO** with `application/dtmf-relay` or `application/dtmf` becomes
//!   [`UasEvent::InfoDtmf`]; INFO packages (RFC 6086) get `469`, other bodies `415`.
//! - **OPTIONS** gets `200` with Allow/Accept; methods we know but do not do get `405` with
//!   Allow, unknown methods `501` (§8.2.1); non-SIP Request-URIs `416` (§8.2.2.1); a
//!   `Require` naming any extension `420` with Unsupported (§8.2.2.3); a merged request `482`
//!   (§8.2.2.2); an INVITE body other than SDP `415`; an INVITE without Contact `400`.
//! - **Local hangup** ([`Uas::hangup`]): BYE with a `Reason` (RFC 3326), deferred until the
//!   ACK if our 2xx is not yet acknowledged (§15); before the answer, a final response.
//!
//! Out of dialog, requests for us are answered via Via/`received`/`rport` by the transaction
//! layer; our own requests in a dialog go to the first Route or the remote target when those
//! are IP literals, else to the address the INVITE came from.
//!
//! The same core places calls ([`Uas::dial`], the user-agent client half in [`uac`]): both
//! kinds share the transaction layer, the call handles, the in-dialog handling above (BYE,
//! re-INVITE, INFO, OPTIONS from the far end) and [`Uas::hangup`].

pub mod refer;
pub mod uac;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;

use super::dialog::{Dialog, DialogId};
use super::header::{Method, NameAddr, Transport, Via};
use super::message::{Request, Response, SipMessage};
use super::transaction::{
    branch_from, Output, Peer, Timers, TransactionId, TransactionLayer, TuEvent,
};
use super::uri::{SipUri, Uri};

pub use refer::TransferState;
pub use uac::Dial;

/// The methods we answer, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY";
/// Bodies we take, for `Accept` (INVITE/ACK: SDP; INFO: DTMF relay).
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";

/// Identifies one call of this UAS for its whole life (not the SIP Call-ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(u64);

impl CallHandle {
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// A handle for unit tests of the layers above the UAS.
    #[cfg(test)]
    pub(crate) fn for_test(id: u64) -> Self {
        CallHandle(id)
    }
}

impl std::fmt::Display for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Settings of a [`Uas`].
#[derive(Debug, Clone)]
pub struct UasConfig {
    /// Our Contact (and the sent-by of our Vias): `sip:vaani@<advertised address>:<port>`.
    pub contact: SipUri,
    /// Sources whose requests are served; everyone else gets `403`.
    pub allow: Vec<IpNet>,
    pub timers: Timers,
    /// Seeds the generator of tags and branches (give it real randomness).
    pub seed: u64,
    /// The `Server` header value.
    pub server: String,
}

/// What the core asks of its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum UasOutput {
    /// Send these bytes to this address (UDP).
    Transmit {
        to: SocketAddr,
        data: Vec<u8>,
    },
    Event(UasEvent),
}

/// What happened to calls.
#[derive(Debug, Clone, PartialEq)]
pub enum UasEvent {
    /// A new call: answer it with [`Uas::accept`] (or [`Uas::ring`] first) or refuse it with
    /// [`Uas::reject`]. `invite` is the request as received, its top Via stamped.
    Incoming {
        call: CallHandle,
        invite: Box<Request>,
        source: SocketAddr,
    },
    /// The ACK for our 2xx arrived; the call is up. `body` is the answer when our 2xx carried
    /// the offer (the INVITE had none).
    Confirmed { call: CallHandle, body: Bytes },
    /// A re-INVITE: answer it with [`Uas::accept`] or [`Uas::reject`] like the first.
    Reinvite {
        call: CallHandle,
        request: Box<Request>,
    },
    /// A key press sent as SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    InfoDtmf {
        call: CallHandle,
        digit: char,
        duration_ms: Option<u32>,
    },
    /// A call we placed got a provisional response (180 Ringing, 183 Session Progress…);
    /// `body` is its early-media SDP, if any.
    Progress {
        call: CallHandle,
        status: u16,
        body: Bytes,
    },
    /// A call we placed was answered (a 2xx, which the core has acknowledged): `body` is the
    /// SDP answer to our offer.
    Answered { call: CallHandle, body: Bytes },
    /// How a transfer we asked for ([`Uas::transfer`]) is going.
    Transfer {
        call: CallHandle,
        state: TransferState,
    },
    /// The far end asks us to call `refer_to` (REFER): answer with [`Uas::answer_refer`].
    ReferRequested { call: CallHandle, refer_to: String },
    /// The call is over; nothing more comes for it.
    Ended { call: CallHandle, reason: EndReason },
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before the answer.
    Cancelled,
    /// We refused it with this status.
    Rejected(u16),
    /// We hung up ([`Uas::hangup`]), with the cause and text of our Reason header.
    LocalHangup { cause: u16, text: String },
    /// Our 2xx was never acknowledged (64·T1); a BYE went out.
    AckTimeout,
    /// A call we placed got this final status (300–699; after one digest retry for
    /// 401/407).
    Failed(u16),
    /// A call we placed got no final response (Timer B), or none 64·T1 after our CANCEL.
    Timeout,
    /// A call we placed rang past its answer timeout; we cancelled it.
    NoAnswer,
}

impl EndReason {
    /// A short stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::RemoteBye => "remote_bye",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected(_) => "rejected",
            EndReason::LocalHangup { .. } => "local_hangup",
            EndReason::AckTimeout => "ack_timeout",
            EndReason::Failed(_) => "failed",
            EndReason::Timeout => "timeout",
            EndReason::NoAnswer => "no_answer",
        }
    }
}

/// Why a driver call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UasError {
    #[error("no such call")]
    UnknownCall,
    #[error("the call has no INVITE waiting for an answer")]
    NothingToAnswer,
    #[error("the INVITE has no Contact, so no dialog can be made")]
    NoContact,
    #[error("status must be 101-199 (ring), 2xx (accept) or 300-699 (reject)")]
    BadStatus,
    #[error("the target must be a sip: URI without headers or a method parameter")]
    BadTarget,
    #[error("the transaction layer refused the request")]
    Transaction,
    #[error("the call is not up (no confirmed dialog)")]
    NotConfirmed,
    #[error("a transfer of this call is already under way")]
    TransferPending,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UasCounters {
    pub datagrams: u64,
    pub malformed: u64,
    pub forbidden: u64,
    /// Calls that came in.
    pub calls: u64,
    /// Calls we placed.
    pub dialed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// The INVITE has no final response yet.
    Incoming,
    /// Our 2xx went out; waiting for the ACK.
    Answered,
    /// The ACK arrived.
    Confirmed,
    /// We sent BYE; waiting for its transaction to end (the driver already got `Ended`).
    Terminating,
    /// A call we placed: our INVITE has no final response yet.
    Outgoing,
}

/// A 2xx this core retransmits until the ACK (§13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    data: Vec<u8>,
    to: SocketAddr,
    cseq: u32,
    interval: Duration,
    next_at: Option<Instant>,
    give_up_at: Instant,
    initial: bool,
}

#[derive(Debug)]
struct Call {
    state: CallState,
    /// The initial INVITE (top Via stamped), kept to build its responses.
    invite: Request,
    invite_tx: TransactionId,
    source: SocketAddr,
    /// What the call's INVITE came over; over a stream, everything of the call goes back to
    /// `source` (the connection).
    transport: Transport,
    local_tag: String,
    dialog: Option<Dialog>,
    /// A re-INVITE waiting for the driver's answer.
    reinvite: Option<(TransactionId, Request)>,
    pending: Option<Pending2xx>,
    /// Hang up once the ACK arrives (§15: no BYE before it).
    bye_after_ack: Option<(u16, String)>,
    bye_tx: Option<TransactionId>,
    ended: bool,
    /// What only a call we placed has (`None` for incoming calls).
    out: Option<Box<uac::Outbound>>,
    /// Our REFER, and the far end's.
    refer_out: Option<refer::ReferOut>,
    refer_in: Option<refer::ReferIn>,
}

/// SplitMix64: tags and branches from the driver's seed.
#[derive(Debug, Clone)]
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn tag(&mut self) -> String {
        format!("{:016x}", self.next())
    }
}

/// The user-agent server. See the module docs.
#[derive(Debug)]
pub struct Uas {
    config: UasConfig,
    tx: TransactionLayer,
    ids: Ids,
    next_call: u64,
    calls: HashMap<CallHandle, Call>,
    by_dialog: HashMap<DialogId, CallHandle>,
    /// INVITE server transactions (initial and re-INVITEs) → their call.
    by_invite_tx: HashMap<TransactionId, CallHandle>,
    by_bye_tx: HashMap<TransactionId, CallHandle>,
    /// Calls with a 2xx being retransmitted.
    retransmitting: HashSet<CallHandle>,
    /// INVITE client transactions (calls we placed) → their call and where they went.
    by_uac_tx: HashMap<TransactionId, (CallHandle, IpAddr)>,
    /// Our REFER client transactions → their call.
    by_refer_tx: HashMap<TransactionId, CallHandle>,
    /// Calls we placed that have a deadline (answer timeout, CANCEL give-up).
    dialing: HashSet<CallHandle>,
    /// Addresses we placed live calls (or INVITE transactions) to, with how many: their
    /// responses and in-dialog requests pass even when the allowlist does not name them.
    dialed_peers: HashMap<IpAddr, u32>,
    out: VecDeque<UasOutput>,
    counters: UasCounters,
    /// Where we take SIP over TLS, if we do: our Via and Contact name it for calls over TLS.
    tls_port: Option<u16>,
}

impl Uas {
    /// Says we listen for SIP over TLS on `port` (of the Contact's host).
    pub fn set_tls_port(&mut self, port: Option<u16>) {
        self.tls_port = port;
    }

    /// Our port for `transport`: the TLS one over TLS, else the Contact's.
    fn port_for(&self, transport: &Transport) -> Option<u16> {
        match transport {
            Transport::Tls => self.tls_port.or(self.config.contact.port),
            _ => self.config.contact.port,
        }
    }

    pub fn new(config: UasConfig) -> Self {
        Uas {
            tx: TransactionLayer::new(config.timers),
            ids: Ids(config.seed),
            config,
            next_call: 0,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_invite_tx: HashMap::new(),
            by_bye_tx: HashMap::new(),
            retransmitting: HashSet::new(),
            by_uac_tx: HashMap::new(),
            by_refer_tx: HashMap::new(),
            dialing: HashSet::new(),
            dialed_peers: HashMap::new(),
            out: VecDeque::new(),
            counters: UasCounters::default(),
            tls_port: None,
        }
    }

    pub fn config(&self) -> &UasConfig {
        &self.config
    }

    pub fn counters(&self) -> UasCounters {
        self.counters
    }

    /// Calls that have not ended (what counts against capacity).
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| !c.ended).count()
    }

    /// Calls still holding state (ended ones wait for their BYE transaction).
    pub fn calls_held(&self) -> usize {
        self.calls.len()
    }

    /// The SIP Call-ID of a call, for logs.
    pub fn sip_call_id(&self, call: CallHandle) -> Option<&str> {
        self.calls
            .get(&call)
            .map(|c| c.invite.headers.call_id.as_str())
    }

    /// The ids of calls that have not ended.
    pub fn live_calls(&self) -> Vec<CallHandle> {
        let mut v: Vec<CallHandle> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.ended)
            .map(|(h, _)| *h)
            .collect();
        v.sort();
        v
    }

    pub fn poll_output(&mut self) -> Option<UasOutput> {
        self.out.pop_front()
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.config.allow.iter().any(|n| n.contains(&ip))
    }

    /// A message from a peer we called, outside the allowlist: its responses and in-dialog
    /// requests (with a To tag) are let through while the call lives; nothing that starts a
    /// dialog is.
    fn passes_as_dialed_peer(&self, ip: IpAddr, message: &SipMessage) -> bool {
        self.dialed_peers.contains_key(&canonical_ip(ip))
            && match message {
                SipMessage::Response(_) => true,
                SipMessage::Request(r) => r.headers.to.tag().is_some(),
            }
    }

    /// The transport of a call's INVITE, received or sent (UDP for calls we do not know).
    fn call_transport(&self, call: CallHandle) -> Transport {
        self.calls
            .get(&call)
            .map_or(Transport::Udp, |c| c.transport.clone())
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.out.push_back(UasOutput::Transmit { to, data });
    }

    fn event(&mut self, e: UasEvent) {
        self.out.push_back(UasOutput::Event(e));
    }

    /// A datagram arrived from `source`.
    pub fn receive(&mut self, now: Instant, data: &[u8], source: SocketAddr) {
        self.receive_on(now, data, source, Transport::Udp);
    }

    /// A message arrived from `source` over `transport`: a datagram, or one message framed
    /// out of a stream ([`super::stream`]). Over a stream transport, responses and the
    /// requests of a call it started go back to `source`, which the driver maps to the
    /// connection (RFC 3261 §18.2.2; connection reuse as in RFC 5923).
    pub fn receive_on(
        &mut self,
        now: Instant,
        data: &[u8],
        source: SocketAddr,
        transport: Transport,
    ) {
        self.counters.datagrams += 1;
        let allowed = self.allowed(source.ip());
        let message = match SipMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                // A bare CRLF keep-alive (RFC 5626 §3.5.1) parses as empty: not an error.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    return;
                }
                self.counters.malformed += 1;
                if allowed {
                    let tag = self.ids.tag();
                    if let Some(reply) = e.reply(&tag) {
                        tracing::debug!(%source, reason = %e, "answering a malformed request");
                        self.transmit(source, reply);
                    }
                }
                return;
            }
        };
        if !allowed && !self.passes_as_dialed_peer(source.ip(), &message) {
            self.counters.forbidden += 1;
            if let SipMessage::Request(r) = &message {
                if r.method != Method::Ack {
                    tracing::info!(%source, method = %r.method, "request from a source outside the allowlist: 403");
                    let tag = self.ids.tag();
                    let resp = with_server(r.response(403, Some(&tag)), &self.config.server);
                    let to = if transport.is_reliable() {
                        source
                    } else {
                        reply_address(r, source)
                    };
                    self.transmit(to, resp.to_bytes());
                }
            }
            return;
        }
        self.tx.receive(
            now,
            message,
            Peer {
                addr: source,
                transport,
            },
        );
        self.pump(now);
    }

    /// Runs what the transaction layer produced, until it is quiet.
    fn pump(&mut self, now: Instant) {
        while let Some(o) = self.tx.poll_output() {
            match o {
                Output::Send { to, message } => self.transmit(to.addr, message.to_bytes()),
                Output::Tu(ev) => self.on_tu(now, ev),
            }
        }
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let mut next = self.tx.next_deadline();
        if let Some(t) = self.uac_deadline() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        for h in &self.retransmitting {
            if let Some(p) = self.calls.get(h).and_then(|c| c.pending.as_ref()) {
                let t = p.next_at.map_or(p.give_up_at, |n| n.min(p.give_up_at));
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.pump(now);
        let mut due: Vec<CallHandle> = self.retransmitting.iter().copied().collect();
        due.sort();
        for h in due {
            let Some(call) = self.calls.get_mut(&h) else {
                self.retransmitting.remove(&h);
                continue;
            };
            let Some(p) = call.pending.as_mut() else {
                self.retransmitting.remove(&h);
                continue;
            };
            if p.give_up_at <= now {
                call.pending = None;
                self.retransmitting.remove(&h);
                tracing::info!(call = %h, "no ACK for our 2xx: ending the call with BYE");
                // §13.3.1.4: the dialog is confirmed, but the session ends with a BYE; a
                // hangup the driver asked for meanwhile keeps its own reason.
                let (cause, text) = call
                    .bye_after_ack
                    .take()
                    .unwrap_or((408, "ACK timeout".to_string()));
                call.state = CallState::Confirmed;
                self.send_bye(now, h, cause, &text);
                self.end(h, EndReason::AckTimeout);
                continue;
            }
            if let Some(at) = p.next_at.filter(|t| *t <= now) {
                let (to, data) = (p.to, p.data.clone());
                p.interval = p.interval.saturating_mul(2).min(self.config.timers.t2);
                let next = at + p.interval;
                p.next_at = Some(if next > now { next } else { now + p.interval });
                self.transmit(to, data);
            }
        }
        self.uac_timeouts(now);
        // BYEs and CANCELs started above sit in the transaction layer's queue.
        self.pump(now);
    }

    fn alloc_call(&mut self) -> CallHandle {
        self.next_call += 1;
        CallHandle(self.next_call)
    }

    fn remove_call(&mut self, call: CallHandle) {
        if let Some(c) = self.calls.remove(&call) {
            if let Some(d) = &c.dialog {
                self.by_dialog.remove(&d.id);
            }
            if let Some(o) = &c.out {
                self.peer_down(c.source.ip());
                if let Some(ip) = o.dialog_peer() {
                    self.peer_down(ip);
                }
            }
        }
        self.retransmitting.remove(&call);
        self.dialing.remove(&call);
    }

    /// Tells the driver the call ended (once).
    fn end(&mut self, call: CallHandle, reason: EndReason) {
        if let Some(c) = self.calls.get_mut(&call) {
            if !c.ended {
                c.ended = true;
                self.event(UasEvent::Ended { call, reason });
            }
        }
    }

    /// Sends a response on a server transaction; `pump` moves it out.
    fn respond(&mut self, now: Instant, tx: TransactionId, resp: Response) {
        let resp = with_server(resp, &self.config.server);
        if let Err(e) = self.tx.send_response(now, tx, resp) {
            tracing::debug!(error = %e, "response refused by the transaction layer");
        }
    }

    /// Answers `request` with `status` (a fresh To tag out of dialog) and extra header fields.
    fn reply(
        &mut self,
        now: Instant,
        tx: TransactionId,
        request: &Request,
        status: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = self.ids.tag();
        let mut r = request.response(status, Some(&tag));
        for (k, v) in extra {
            r.headers.push(*k, *v);
        }
        self.respond(now, tx, r);
    }

    fn on_tu(&mut self, now: Instant, ev: TuEvent) {
        match ev {
            TuEvent::Request { tx, request, from } => self.on_request(now, tx, request, from),
            TuEvent::Ack { request, .. } => self.on_ack(now, &request),
            TuEvent::Response { tx, response } => {
                if self.by_uac_tx.contains_key(&tx) {
                    self.on_invite_response(now, tx, response);
                } else if self.is_refer_tx(tx) {
                    if response.status >= 200 {
                        self.on_refer_response(tx, response.status);
                    }
                } else if response.status >= 200 {
                    self.bye_done(tx);
                }
            }
            TuEvent::Timeout { tx } | TuEvent::TransportError { tx } => {
                self.invite_timeout(tx);
                self.on_refer_response(tx, 408);
                self.bye_done(tx);
            }
            TuEvent::Terminated { tx } => {
                self.by_invite_tx.remove(&tx);
                if let Some((_, ip)) = self.by_uac_tx.remove(&tx) {
                    self.peer_down(ip);
                }
                self.bye_done(tx);
            }
            TuEvent::StrayResponse { response, .. } => self.on_stray_response(&response),
        }
    }

    /// Our BYE got its final response, or none came: the call's state can go.
    fn bye_done(&mut self, tx: TransactionId) {
        if let Some(call) = self.by_bye_tx.remove(&tx) {
            self.remove_call(call);
        }
    }

    fn on_request(&mut self, now: Instant, tx: TransactionId, request: Request, from: Peer) {
        // §8.2.2.1: only SIP URIs reach a UA.
        if request.uri.as_sip().is_none() {
            return self.reply(now, tx, &request, 416, &[]);
        }
        // §8.2.2.3: we support no extension, so any Require is unsupported.
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            let required: Vec<&str> = request
                .headers
                .get_all("Require")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if !required.is_empty() {
                let list = required.join(", ");
                return self.reply(now, tx, &request, 420, &[("Unsupported", &list)]);
            }
        }
        match request.method {
            Method::Invite => self.on_invite(now, tx, request, from),
            Method::Bye => self.on_bye(now, tx, &request),
            Method::Cancel => self.on_cancel(now, tx, &request),
            Method::Options => self.reply(
                now,
                tx,
                &request,
                200,
                &[("Allow", ALLOW), ("Accept", ACCEPT)],
            ),
            Method::Info => self.on_info(now, tx, &request),
            // RFC 3515 inside a dialog; a REFER or NOTIFY outside one is not supported.
            Method::Refer if request.headers.to.tag().is_some() => self.on_refer(now, tx, &request),
            Method::Notify if request.headers.to.tag().is_some() => {
                self.on_notify(now, tx, &request)
            }
            // ACKs never make a transaction; they arrive as `TuEvent::Ack`.
            Method::Ack => {}
            // §8.2.1: a method we do not know at all.
            Method::Extension(_) => self.reply(now, tx, &request, 501, &[("Allow", ALLOW)]),
            // A method we know but do not do here.
            _ => self.reply(now, tx, &request, 405, &[("Allow", ALLOW)]),
        }
    }

    fn on_invite(&mut self, now: Instant, tx: TransactionId, request: Request, from: Peer) {
        let Peer {
            addr: source,
            transport,
        } = from;
        if let Some(id) = DialogId::of_incoming(&request) {
            return self.on_reinvite(now, tx, request, &id);
        }
        let h = &request.headers;
        // §8.2.2.2: the same request reaching us twice by different paths.
        let merged = self.calls.values().any(|c| {
            let ih = &c.invite.headers;
            c.out.is_none()
                && c.invite_tx != tx
                && ih.call_id == h.call_id
                && ih.from.tag() == h.from.tag()
                && ih.cseq.seq == h.cseq.seq
        });
        if merged {
            return self.reply(now, tx, &request, 482, &[]);
        }
        if h.contact.is_empty() {
            let tag = self.ids.tag();
            let mut r = request.response(400, Some(&tag));
            r.reason = "Missing Contact Header".into();
            return self.respond(now, tx, r);
        }
        if !is_sdp_or_empty(&request) {
            return self.reply(now, tx, &request, 415, &[("Accept", "application/sdp")]);
        }
        let call = self.alloc_call();
        let local_tag = self.ids.tag();
        self.counters.calls += 1;
        self.calls.insert(
            call,
            Call {
                state: CallState::Incoming,
                invite: request.clone(),
                invite_tx: tx,
                source,
                transport,
                local_tag,
                dialog: None,
                reinvite: None,
                pending: None,
                bye_after_ack: None,
                bye_tx: None,
                ended: false,
                out: None,
                refer_out: None,
                refer_in: None,
            },
        );
        self.by_invite_tx.insert(tx, call);
        self.event(UasEvent::Incoming {
            call,
            invite: Box::new(request),
            source,
        });
    }

    /// The call of an in-dialog request and whether its CSeq is in order (§12.2.2); answers
    /// `481`/`500` itself when not.
    fn dialog_call(
        &mut self,
        now: Instant,
        tx: TransactionId,
        request: &Request,
    ) -> Option<CallHandle> {
        let call = DialogId::of_incoming(request)
            .and_then(|id| self.by_dialog.get(&id).copied())
            .filter(|c| self.calls.contains_key(c));
        let Some(call) = call else {
            self.reply(now, tx, request, 481, &[]);
            return None;
        };
        let in_order = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.dialog.as_mut())
            .map(|d| d.check_remote_cseq(request).is_ok());
        if in_order != Some(true) {
            self.reply(now, tx, request, 500, &[]);
            return None;
        }
        Some(call)
    }

    fn on_reinvite(&mut self, now: Instant, tx: TransactionId, request: Request, id: &DialogId) {
        let terminating = self
            .by_dialog
            .get(id)
            .and_then(|c| self.calls.get(c))
            .is_none_or(|c| c.state == CallState::Terminating);
        if terminating {
            return self.reply(now, tx, &request, 481, &[]);
        }
        let Some(call) = self.dialog_call(now, tx, &request) else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.reinvite.is_some() {
            // §14.2: an INVITE arrived while the previous one has no final response.
            let after = (self.ids.next() % 10).to_string();
            return self.reply(now, tx, &request, 500, &[("Retry-After", &after)]);
        }
        if c.pending.is_some() {
            // Our last 2xx (and the offer/answer it carried) is not acknowledged yet.
            return self.reply(now, tx, &request, 491, &[]);
        }
        if !is_sdp_or_empty(&request) {
            return self.reply(now, tx, &request, 415, &[("Accept", "application/sdp")]);
        }
        if let Some(c) = self.calls.get_mut(&call) {
            if let Some(d) = c.dialog.as_mut() {
                d.refresh_target(&request);
            }
            c.reinvite = Some((tx, request.clone()));
        }
        self.by_invite_tx.insert(tx, call);
        self.event(UasEvent::Reinvite {
            call,
            request: Box::new(request),
        });
    }

    fn on_bye(&mut self, now: Instant, tx: TransactionId, request: &Request) {
        let Some(call) = self.dialog_call(now, tx, request) else {
            return;
        };
        self.reply(now, tx, request, 200, &[]);
        // §15.1.2: pending requests of the dialog get 487.
        let pending = self.calls.get_mut(&call).and_then(|c| c.reinvite.take());
        if let Some((rtx, rreq)) = pending {
            let r = rreq.response(487, None);
            self.respond(now, rtx, r);
        }
        self.drop_refer_in(now, call);
        self.end(call, EndReason::RemoteBye);
        self.remove_call(call);
    }

    fn on_cancel(&mut self, now: Instant, tx: TransactionId, request: &Request) {
        let Some(itx) = self.tx.invite_for_cancel(request) else {
            return self.reply(now, tx, request, 481, &[]);
        };
        let call = self.by_invite_tx.get(&itx).copied();
        // §9.2: the 200 for the CANCEL carries the To tag of the INVITE's responses.
        let tag = call
            .and_then(|c| self.calls.get(&c))
            .map(|c| c.local_tag.clone())
            .unwrap_or_else(|| self.ids.tag());
        let ok = request.response(200, Some(&tag));
        self.respond(now, tx, ok);
        let Some(call) = call else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::Incoming && c.invite_tx == itx {
            let r = c.invite.response(487, Some(&c.local_tag));
            self.respond(now, itx, r);
            self.end(call, EndReason::Cancelled);
            self.remove_call(call);
        } else if c.reinvite.as_ref().is_some_and(|(t, _)| *t == itx) {
            if let Some((rtx, rreq)) = c.reinvite.take() {
                let r = rreq.response(487, None);
                self.respond(now, rtx, r);
            }
        }
        // Otherwise the INVITE already has its final response: the CANCEL has no effect.
    }

    fn on_info(&mut self, now: Instant, tx: TransactionId, request: &Request) {
        let Some(call) = self.dialog_call(now, tx, request) else {
            return;
        };
        if request.headers.get("Info-Package").is_some() {
            // RFC 6086 §4.2.2: we take no INFO packages.
            let mut r = request.response(469, None);
            r.reason = "Bad Info Package".into();
            return self.respond(now, tx, r);
        }
        if request.body.is_empty() {
            return self.reply(now, tx, request, 200, &[]);
        }
        let parsed = match media_type(request).as_deref() {
            Some("application/dtmf-relay") => parse_dtmf_relay(&request.body),
            Some("application/dtmf") => parse_dtmf(&request.body).map(|d| (d, None)),
            _ => {
                let accept = "application/dtmf-relay, application/dtmf";
                return self.reply(now, tx, request, 415, &[("Accept", accept)]);
            }
        };
        match parsed {
            Some((digit, duration_ms)) => {
                self.reply(now, tx, request, 200, &[]);
                self.event(UasEvent::InfoDtmf {
                    call,
                    digit,
                    duration_ms,
                });
            }
            None => self.reply(now, tx, request, 400, &[]),
        }
    }

    fn on_ack(&mut self, now: Instant, request: &Request) {
        let Some(call) =
            DialogId::of_incoming(request).and_then(|id| self.by_dialog.get(&id).copied())
        else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let matches = c
            .pending
            .as_ref()
            .is_some_and(|p| p.cseq == request.headers.cseq.seq);
        if !matches {
            return; // a retransmitted or stray ACK
        }
        let initial = c.pending.take().is_some_and(|p| p.initial);
        self.retransmitting.remove(&call);
        if !initial {
            return;
        }
        c.state = CallState::Confirmed;
        if let Some((cause, text)) = c.bye_after_ack.take() {
            self.send_bye(now, call, cause, &text);
        } else if !c.ended {
            self.event(UasEvent::Confirmed {
                call,
                body: request.body.clone(),
            });
        }
    }

    /// Sends BYE in the call's dialog; the call is `Terminating` until its transaction ends.
    fn send_bye(&mut self, now: Instant, call: CallHandle, cause: u16, text: &str) {
        self.drop_refer_in(now, call);
        let via = self.our_via_for(self.call_transport(call));
        let server = self.config.server.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_mut() else {
            self.remove_call(call);
            return;
        };
        let mut req = d.request(Method::Bye, via);
        req.headers.push(
            "Reason",
            format!("SIP;cause={cause};text=\"{}\"", reason_text(text)),
        );
        if !server.is_empty() {
            req.headers.push("User-Agent", server);
        }
        let peer = in_dialog_peer(c.source, &c.transport, d);
        c.state = CallState::Terminating;
        c.pending = None;
        match self.tx.send_request(now, req, peer) {
            Ok(btx) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.bye_tx = Some(btx);
                }
                self.by_bye_tx.insert(btx, call);
            }
            Err(e) => {
                tracing::warn!(error = %e, "BYE refused by the transaction layer");
                self.remove_call(call);
            }
        }
    }

    /// A Via for a new request of ours over `transport`: our address, a fresh branch, and
    /// `rport` (RFC 3581) so responses come back to the port we sent from.
    fn our_via_for(&mut self, transport: Transport) -> Via {
        let branch = branch_from(self.ids.next());
        let port = self.port_for(&transport);
        let contact = &self.config.contact;
        let mut via = Via::new(transport, contact.host.clone(), port, &branch);
        via.params
            .push(super::uri::Param::new("rport", None::<String>));
        via
    }

    /// Our Contact for a call over `transport`: with `;transport=tcp` over TCP, so the far end
    /// sends its in-dialog requests over TCP too (RFC 3261 §19.1.1).
    fn contact_for(&self, transport: &Transport) -> SipUri {
        let mut contact = self.config.contact.clone();
        contact.port = self.port_for(transport);
        if transport.is_reliable() {
            contact.params.push(super::uri::Param::new(
                "transport",
                Some(transport.as_str().to_ascii_lowercase()),
            ));
        }
        contact
    }

    /// Sends `180 Ringing` (with our tag and Contact) for a call not yet answered.
    pub fn ring(&mut self, now: Instant, call: CallHandle) -> Result<(), UasError> {
        let c = self.calls.get(&call).ok_or(UasError::UnknownCall)?;
        if c.state != CallState::Incoming || c.ended {
            return Err(UasError::NothingToAnswer);
        }
        let mut r = c.invite.response(180, Some(&c.local_tag));
        r.headers.contact = vec![NameAddr::new(Uri::Sip(self.contact_for(&c.transport)))];
        r.headers.record_route = c.invite.headers.record_route.clone();
        let tx = c.invite_tx;
        self.respond(now, tx, r);
        self.pump(now);
        Ok(())
    }

    /// Answers the call's waiting INVITE (the first, or a re-INVITE) with `200 OK` carrying
    /// `sdp` (empty: no body), and retransmits it until the ACK (§13.3.1.4).
    pub fn accept(&mut self, now: Instant, call: CallHandle, sdp: Bytes) -> Result<(), UasError> {
        let timers = self.config.timers;
        let contact = self.contact_for(&self.call_transport(call));
        let server = self.config.server.clone();
        let c = self.calls.get_mut(&call).ok_or(UasError::UnknownCall)?;
        if c.ended {
            return Err(UasError::UnknownCall);
        }
        let (tx, request, initial) = if c.state == CallState::Incoming {
            (c.invite_tx, c.invite.clone(), true)
        } else if let Some((t, r)) = c.reinvite.take() {
            (t, r, false)
        } else {
            return Err(UasError::NothingToAnswer);
        };
        if initial {
            let dialog = Dialog::uas(&request, &c.local_tag).ok_or(UasError::NoContact)?;
            self.by_dialog.insert(dialog.id.clone(), call);
            c.dialog = Some(dialog);
            c.state = CallState::Answered;
        }
        let mut resp = request.response(200, Some(&c.local_tag));
        resp.headers.contact = vec![NameAddr::new(Uri::Sip(contact))];
        // §12.1.1: the UAS copies Record-Route into its 2xx.
        resp.headers.record_route = request.headers.record_route.clone();
        resp.headers.push("Allow", ALLOW);
        if !sdp.is_empty() {
            resp.headers.content_type = Some("application/sdp".into());
            resp.body = sdp;
        }
        let resp = with_server(resp, &server);
        let first_retransmit = (!timers.t1.is_zero()).then(|| now + timers.t1);
        c.pending = Some(Pending2xx {
            data: resp.to_bytes(),
            to: if c.transport.is_reliable() {
                c.source
            } else {
                reply_address(&request, c.source)
            },
            cseq: request.headers.cseq.seq,
            interval: timers.t1,
            next_at: first_retransmit,
            give_up_at: now + timers.long(),
            initial,
        });
        self.retransmitting.insert(call);
        if let Err(e) = self.tx.send_response(now, tx, resp) {
            tracing::debug!(error = %e, "2xx refused by the transaction layer");
        }
        self.pump(now);
        Ok(())
    }

    /// Refuses the call's waiting INVITE with `status` (300–699) and extra header fields
    /// (e.g. `Retry-After` with a 503). Refusing the first INVITE ends the call; refusing a
    /// re-INVITE keeps it as it was.
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        extra: &[(&str, &str)],
    ) -> Result<(), UasError> {
        if !(300..=699).contains(&status) {
            return Err(UasError::BadStatus);
        }
        let c = self.calls.get_mut(&call).ok_or(UasError::UnknownCall)?;
        let (tx, mut resp, initial) = if c.state == CallState::Incoming && !c.ended {
            let r = c.invite.response(status, Some(&c.local_tag));
            (c.invite_tx, r, true)
        } else if let Some((t, r)) = c.reinvite.take() {
            (t, r.response(status, None), false)
        } else {
            return Err(UasError::NothingToAnswer);
        };
        for (k, v) in extra {
            resp.headers.push(*k, *v);
        }
        self.respond(now, tx, resp);
        if initial {
            self.end(call, EndReason::Rejected(status));
            self.remove_call(call);
        }
        self.pump(now);
        Ok(())
    }

    /// Ends the call from our side with a Reason (RFC 3326, `SIP;cause=…;text=…`): BYE once
    /// the dialog is confirmed (after the ACK, §15), or a final response (`cause` when it is
    /// 300–699, else 480) before the answer. The driver gets `Ended` at once.
    pub fn hangup(
        &mut self,
        now: Instant,
        call: CallHandle,
        cause: u16,
        text: &str,
    ) -> Result<(), UasError> {
        let c = self.calls.get_mut(&call).ok_or(UasError::UnknownCall)?;
        if c.ended {
            return Ok(());
        }
        let reason = EndReason::LocalHangup {
            cause,
            text: text.to_string(),
        };
        // A re-INVITE or REFER still waiting for us will never be answered now.
        if let Some((rtx, rreq)) = c.reinvite.take() {
            let r = rreq.response(487, None);
            self.respond(now, rtx, r);
        }
        self.drop_refer_in(now, call);
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(());
        };
        match c.state {
            CallState::Incoming => {
                let status = if (300..=699).contains(&cause) {
                    cause
                } else {
                    480
                };
                let mut r = c.invite.response(status, Some(&c.local_tag));
                r.headers.push(
                    "Reason",
                    format!("SIP;cause={cause};text=\"{}\"", reason_text(text)),
                );
                let tx = c.invite_tx;
                self.respond(now, tx, r);
                self.end(call, reason);
                self.remove_call(call);
            }
            CallState::Answered => {
                c.bye_after_ack = Some((cause, text.to_string()));
                self.end(call, reason);
            }
            CallState::Confirmed => {
                self.send_bye(now, call, cause, text);
                self.end(call, reason);
            }
            CallState::Outgoing => {
                self.end(call, reason);
                self.cancel_outgoing(now, call, cause, text);
            }
            CallState::Terminating => {}
        }
        self.pump(now);
        Ok(())
    }

    /// Hangs up every call (node shutdown).
    pub fn hangup_all(&mut self, now: Instant, cause: u16, text: &str) {
        for call in self.live_calls() {
            let _ = self.hangup(now, call, cause, text);
        }
    }
}

/// Where a request of ours in a call's dialog goes: over a stream, back on the connection the
/// call came in on; over UDP to the first Route or remote target (when an IP literal), else
/// to the address the call's INVITE came from (or went to).
fn in_dialog_peer(source: SocketAddr, transport: &Transport, dialog: &Dialog) -> Peer {
    if transport.is_reliable() {
        return Peer {
            addr: source,
            transport: transport.clone(),
        };
    }
    Peer {
        addr: dialog.next_hop().unwrap_or(source),
        transport: Transport::Udp,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so allowlists and peer sets compare alike.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Adds our `Server` header field.
fn with_server(mut r: Response, server: &str) -> Response {
    if !server.is_empty() {
        r.headers.push("Server", server);
    }
    r
}

/// Where a response to `request` (from `source`) goes over UDP (§18.2.2, RFC 3581): the top
/// Via stamped for that source decides; the source itself when it names no usable address.
fn reply_address(request: &Request, source: SocketAddr) -> SocketAddr {
    request
        .headers
        .top_via()
        .and_then(|v| {
            let mut v = v.clone();
            v.stamp_received(source);
            v.response_address()
        })
        .unwrap_or(source)
}

/// The media type of the body, lower-cased, without parameters.
fn media_type(request: &Request) -> Option<String> {
    request.headers.content_type.as_deref().map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// An INVITE/ACK body we can read: none, or SDP.
fn is_sdp_or_empty(request: &Request) -> bool {
    request.body.is_empty() || media_type(request).as_deref() == Some("application/sdp")
}

/// Text for a quoted Reason `text` parameter: printable ASCII without quotes or backslashes.
fn reason_text(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !matches!(c, '"' | '\\'))
        .take(100)
        .collect()
}

/// A DTMF key from its name: `0`–`9`, `*`, `#`, `A`–`D`, or the event codes 10 (`*`) and
/// 11 (`#`) that some gateways write.
fn dtmf_key(s: &str) -> Option<char> {
    match s {
        "10" => return Some('*'),
        "11" => return Some('#'),
        _ => {}
    }
    let mut chars = s.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')).then_some(c)
}

/// Parses an `application/dtmf-relay` body (`Signal=5` and optionally `Duration=160`, one per
/// line, as Cisco and most gateways send it). `None` without a valid Signal.
pub fn parse_dtmf_relay(body: &[u8]) -> Option<(char, Option<u32>)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut digit = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("Signal") {
            digit = Some(dtmf_key(v)?);
        } else if k.eq_ignore_ascii_case("Duration") {
            duration = v.parse::<u32>().ok();
        }
    }
    digit.map(|d| (d, duration))
}

/// Parses an `application/dtmf` body: the key alone.
pub fn parse_dtmf(body: &[u8]) -> Option<char> {
    dtmf_key(std::str::from_utf8(body).ok()?.trim())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dtmf_bodies() {
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', Some(160)))
        );
        assert_eq!(
            parse_dtmf_relay(b"signal= #\nduration=x"),
            Some(('#', None))
        );
        assert_eq!(parse_dtmf_relay(b"Signal=10"), Some(('*', None)));
        assert_eq!(parse_dtmf_relay(b"Signal=d"), Some(('D', None)));
        assert_eq!(parse_dtmf_relay(b"Signal=55"), None);
        assert_eq!(parse_dtmf_relay(b"Duration=100"), None);
        assert_eq!(parse_dtmf_relay(&[0xff, 0xfe]), None);
        assert_eq!(parse_dtmf(b" 7\r\n"), Some('7'));
        assert_eq!(parse_dtmf(b"x"), None);
    }

    #[test]
    fn reason_text_is_safe() {
        assert_eq!(reason_text("RTP \"time\\out\"\r\nX: y"), "RTP timeoutX: y");
    }
}
