//! The SIP side of the media node: the driver that owns the SIP socket, the calls' RTP sockets
//! and their timers (DESIGN.md §3.1), around the sans-IO cores [`crate::sip::uas::Uas`] and
//! [`crate::rtp::session::RtpSession`].
//!
//! One task runs the UAS: it reads datagrams from the SIP socket, feeds them to the core, sends
//! what the core asks, sleeps until the core's next deadline, and decides about new calls:
//! capacity (`503` + `Retry-After` above `max_calls`), the call context and token
//! ([`admission`], `403` when bad), the SDP offer (`488` when nothing in common, `400` when
//! unreadable), an RTP port (`503` when none is free). An accepted call's media runs on the
//! media [`engine`] (worker threads sharing one socket each; or, with
//! [`MediaMode::PerCallSocket`], a task and socket of its own, [`call`]), behind one interface
//! ([`media`]): the SIP task tells it about re-INVITEs, INFO key presses and the end of the
//! call, and it asks the SIP task to hang up on RTP timeout.
//!
//! Calls the node places ([`SipNode::dial`], [`outbound`]) go out of the same socket and,
//! once answered, get their media exactly like answered incoming calls.
//!
//! Start it with [`SipNode::start`]; [`SipNode::shutdown`] hangs every call up (BYE, reason
//! "node shutting down") and stops.

pub mod admission;
pub mod app;
mod call;
pub mod engine;
mod media;
pub mod outbound;
pub mod ports;
pub mod registry;
pub mod tcp;
pub mod trunks;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::codec::AudioFormat;
use crate::metrics::{CallEnd, EndReason as CallEndReason, Metrics, Transport as MetricsTransport};
use crate::rtp::session::SessionConfig;
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, SdpError, SessionDescription};
use crate::sip::transaction::Timers;
use crate::sip::uas::{CallHandle, EndReason, Uas, UasConfig, UasEvent, UasOutput};
use crate::sip::{Host, Request, SipUri, Transport};

use admission::AdmissionPolicy;
use app::{CallInfo, SipApp};
use call::MediaCmd;
pub use media::MediaMode;
use media::{Media, Reserved};
use ports::PortRange;
use registry::{CallRecord, CallRegistry};
use trunks::Admission;

/// The `Server` / `User-Agent` value.
const SERVER: &str = "vaani";

/// Settings of the SIP node.
pub struct SipNodeConfig {
    /// Where SIP listens: UDP, and TCP on the same address and port.
    pub bind: SocketAddr,
    /// The address advertised in SDP and, when `bind` is a wildcard, in Contact.
    pub media_address: IpAddr,
    pub rtp_ports: PortRange,
    /// Who may call: each trunk's networks and/or Digest credentials, and its tenant
    /// ([`trunks`]); INVITEs matching none get `403` (or a `401` challenge where a trunk takes
    /// Digest from anywhere).
    pub trunks: trunks::Trunks,
    pub admission: AdmissionPolicy,
    /// Calls (SIP and streams together, through `active`) above which INVITEs get `503`.
    pub max_calls: u32,
    pub active: Arc<AtomicU32>,
    /// No RTP for this long ends the call with BYE.
    pub rtp_timeout: Duration,
    /// Codecs offered/accepted, in our order of preference: PCMU, PCMA, G.722 and Opus are carried
    /// (others are left out of offers and answers).
    pub codecs: Vec<Codec>,
    pub app: Arc<dyn SipApp>,
    pub registry: CallRegistry,
    /// The node's counters and draining flag: while draining, INVITEs get `503`.
    pub metrics: Arc<Metrics>,
    /// Where calls the node places go when their target is not an IP address (an IP and
    /// port: the node does no DNS). `None`: targets must be IP literals.
    pub outbound_proxy: Option<SocketAddr>,
    /// How RTP runs: the media engine (default) or a socket per call.
    pub media: MediaMode,
    /// SIP over TLS: where to listen, and the server side of the handshake
    /// ([`tcp::tls_acceptor`]). `None`: no TLS.
    pub tls: Option<(SocketAddr, tokio_rustls::TlsAcceptor)>,
}

/// Why the node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding SIP to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the SIP address {0} is a wildcard: give the address to advertise")]
    Wildcard(IpAddr),
    #[error("no codec the node can carry over RTP (PCMU/PCMA/G722/opus)")]
    NoCodec,
    #[error("starting the media engine: {0}")]
    Media(std::io::Error),
}

/// What call tasks ask of the SIP task.
#[derive(Debug)]
pub(crate) enum SipCmd {
    Hangup {
        call: CallHandle,
        cause: u16,
        text: String,
        /// What the call's end is counted as.
        reason: CallEndReason,
    },
    Shutdown(oneshot::Sender<()>),
    /// Place a call ([`SipNode::dial`]).
    Dial {
        request: Box<outbound::DialRequest>,
        reply: oneshot::Sender<Result<outbound::Dialed, outbound::DialError>>,
    },
    /// Place a call over TCP now that its connection to `peer` is open.
    DialOver {
        peer: SocketAddr,
        conn: tcp::TcpConn,
        request: Box<outbound::DialRequest>,
        reply: oneshot::Sender<Result<outbound::Dialed, outbound::DialError>>,
    },
    /// Blind-transfer a call its app asked to transfer ([`AppAction::Transfer`]).
    TransferCall {
        call: CallHandle,
        to: String,
    },
    /// Blind-transfer a call ([`SipNode::transfer`]).
    Transfer {
        request: outbound::TransferRequest,
        reply: oneshot::Sender<Result<(), outbound::TransferError>>,
    },
}

/// A running SIP node.
pub struct SipNode {
    local: SocketAddr,
    /// Where SIP over TLS listens, if it does.
    tls_local: Option<SocketAddr>,
    advertised: SocketAddr,
    registry: CallRegistry,
    commands: mpsc::Sender<SipCmd>,
    task: tokio::task::JoinHandle<()>,
}

impl SipNode {
    /// Binds the SIP socket and starts the SIP task.
    pub async fn start(config: SipNodeConfig) -> Result<SipNode, StartError> {
        if !config.codecs.iter().any(carried) {
            return Err(StartError::NoCodec);
        }
        // UDP and TCP share the port; when the OS picks it (port 0), another program may hold
        // the same number on TCP: pick again a few times.
        let mut attempt = 0;
        let (socket, local, listener) = loop {
            attempt += 1;
            let socket = UdpSocket::bind(config.bind)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.bind,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
            match TcpListener::bind(local).await {
                Ok(listener) => break (socket, local, listener),
                Err(_) if config.bind.port() == 0 && attempt < 8 => continue,
                Err(source) => {
                    return Err(StartError::Bind {
                        addr: local,
                        source,
                    })
                }
            }
        };
        let host_ip = if local.ip().is_unspecified() {
            if config.media_address.is_unspecified() {
                return Err(StartError::Wildcard(local.ip()));
            }
            config.media_address
        } else {
            local.ip()
        };
        let advertised = SocketAddr::new(host_ip, local.port());
        let mut contact = SipUri::new(match host_ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        });
        contact.user = Some("vaani".into());
        contact.port = Some(local.port());
        let timers = Timers {
            // Answer every INVITE with 100 Trying at once: it stops the caller's INVITE
            // retransmissions even while a slow admission check runs.
            trying_delay: Duration::ZERO,
            ..Timers::default()
        };
        // The core lets in what any trunk may send; the driver matches INVITEs to trunks.
        let core_allow = config.trunks.core_allow();
        let mut uas = Uas::new(UasConfig {
            contact,
            allow: core_allow,
            timers,
            seed: random_u64(),
            server: SERVER.into(),
        });
        let tls = match config.tls.clone() {
            Some((addr, acceptor)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let local_tls = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                uas.set_tls_port(Some(local_tls.port()));
                Some((listener, acceptor, local_tls))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(256);
        let registry = config.registry.clone();
        let rtp_ip = if local.ip().is_unspecified() {
            local.ip()
        } else {
            host_ip
        };
        let shared = engine::Shared {
            sip: tx.clone(),
            registry: config.registry.clone(),
            metrics: config.metrics.clone(),
        };
        let media = Media::new(rtp_ip, config.rtp_ports, config.media, shared)
            .map_err(StartError::Media)?;
        let (tcp_tx, tcp_rx) = mpsc::channel(256);
        let conns = tcp::Connections::new(tcp_tx, tcp::IDLE_TIMEOUT, tcp::MAX_CONNECTIONS);
        let tcp_task = tokio::spawn(tcp::listen(listener, conns.clone()));
        let (tls_task, tls_local) = match tls {
            Some((listener, acceptor, local_tls)) => (
                Some(AbortOnDrop(tokio::spawn(tcp::listen_tls(
                    listener,
                    acceptor,
                    conns.clone(),
                )))),
                Some(local_tls),
            ),
            None => (None, None),
        };
        let driver = Driver {
            socket,
            tcp_events: tcp_rx,
            tcp: HashMap::new(),
            conns,
            referred: HashMap::new(),
            closed_streams: HashMap::new(),
            _tcp_task: AbortOnDrop(tcp_task),
            _tls_task: tls_task,
            uas,
            media,
            calls: HashMap::new(),
            commands: rx,
            self_tx: tx.clone(),
            config,
            shutdown: None,
        };
        let task = tokio::spawn(driver.run());
        tracing::info!(sip = %local, %advertised, tls = ?tls_local, "SIP listening (UDP and TCP)");
        Ok(SipNode {
            local,
            tls_local,
            advertised,
            registry,
            commands: tx,
            task,
        })
    }

    /// The bound SIP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where SIP over TLS listens, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// The address in our Contact (and the node's `sip_uri`).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// `sip:vaani@<advertised>` for the node registry.
    pub fn sip_uri(&self) -> String {
        format!("sip:vaani@{}", self.advertised)
    }

    pub fn registry(&self) -> &CallRegistry {
        &self.registry
    }

    /// A handle that places calls from this node (see [`outbound`]); it may outlive `self`
    /// and then answers [`outbound::DialError::Stopped`].
    pub fn dialer(&self) -> outbound::Dialer {
        outbound::Dialer::new(self.commands.clone())
    }

    /// Blind-transfers a call (REFER): the far end is asked to call `request.to`; when it
    /// reports success the node's leg ends with BYE.
    pub async fn transfer(
        &self,
        request: outbound::TransferRequest,
    ) -> Result<(), outbound::TransferError> {
        self.dialer().transfer(request).await
    }

    /// Places a call from the node's SIP socket; once answered its media runs the node's app
    /// like an incoming call's.
    pub async fn dial(
        &self,
        request: outbound::DialRequest,
    ) -> Result<outbound::Dialed, outbound::DialError> {
        self.dialer().dial(request).await
    }

    /// Hangs every call up and stops, waiting at most `grace` for the BYEs to be answered.
    pub async fn shutdown(self, grace: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(SipCmd::Shutdown(done_tx)).await.is_ok() {
            let _ = tokio::time::timeout(grace, done_rx).await;
        }
        self.task.abort();
    }
}

/// OS randomness without a new dependency: std's hasher keys are drawn from the OS.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// How long a closed TCP/TLS connection's address is remembered (the calls it carried end by
/// then: their in-dialog requests time out after 64·T1), and how many are remembered at most.
const CLOSED_STREAM_MEMORY: Duration = Duration::from_secs(120);
const MAX_CLOSED_STREAMS: usize = 4096;

/// What the offer/answer settled for a call's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaPlan {
    codec: Codec,
    payload_type: u8,
    dtmf_payload_type: Option<u8>,
    remote: SocketAddr,
    direction: Direction,
}

impl From<&sdp::Negotiated> for MediaPlan {
    fn from(n: &sdp::Negotiated) -> Self {
        MediaPlan {
            codec: n.codec.clone(),
            payload_type: n.payload_type,
            dtmf_payload_type: n.dtmf_payload_type,
            remote: n.remote,
            direction: n.direction,
        }
    }
}

impl MediaPlan {
    fn format(&self) -> AudioFormat {
        match self.codec {
            Codec::Pcma => AudioFormat::PCMA,
            Codec::G722 => AudioFormat::G722,
            Codec::Opus => AudioFormat::OPUS,
            _ => AudioFormat::PCMU,
        }
    }
}

/// The codecs the RTP session carries.
fn carried(c: &Codec) -> bool {
    matches!(c, Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::Opus)
}

/// `codec` at `rate` is one we carry: G.711 and G.722 on an 8 kHz clock (RFC 3551), Opus
/// at 48 kHz (RFC 7587).
fn carried_at(codec: &Codec, rate: u32) -> bool {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G722 => rate == 8000,
        Codec::Opus => rate == 48_000,
        _ => false,
    }
}

/// Reads the answer to our offer (a late offer's answer comes in the ACK, RFC 3264 §6): the
/// first audio stream the peer kept, the first of its codecs we carry (it may only list what
/// we offered), its `telephone-event` type, and our direction as the answer allows it.
fn plan_from_answer(answer: &SessionDescription) -> Result<MediaPlan, SdpError> {
    for (i, m) in answer.media.iter().enumerate() {
        if m.port == 0 || !m.is_rtp_audio() {
            continue;
        }
        let codecs = m.codecs();
        let Some((pt, codec, clock)) = codecs
            .iter()
            .find(|(_, c, rate)| carried_at(c, *rate))
            .cloned()
        else {
            return Err(SdpError::NoCommonCodec);
        };
        // Events on the audio's clock (RFC 4733 §2.1).
        let dtmf = codecs
            .iter()
            .find(|(_, c, rate)| *c == Codec::TelephoneEvent && *rate == clock)
            .map(|(pt, _, _)| *pt);
        let remote = answer.media_address(i).ok_or(SdpError::NoAddress)?;
        return Ok(MediaPlan {
            codec,
            payload_type: pt,
            dtmf_payload_type: dtmf,
            remote,
            direction: answer.media_direction(i).reversed(),
        });
    }
    Err(SdpError::NoAudio)
}

/// What the SIP task keeps per accepted call.
struct CallEntry {
    /// The media task's commands (`None` until media starts: a late offer waits for the ACK).
    media: Option<mpsc::Sender<MediaCmd>>,
    /// What media runs with now.
    plan: Option<MediaPlan>,
    /// The RTP port and call facts until media starts.
    waiting: Option<(Reserved, CallInfo)>,
    port: u16,
    sdp_session_id: u64,
    sdp_version: u64,
    /// Why we hung up, once we did.
    hangup: Option<CallEndReason>,
    call_id: Option<String>,
    tenant: Option<String>,
    /// The agent answering it (for a call placed for its REFER, too).
    agent: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
    /// The TCP connection the call came over (counted in its `calls` while the call lives).
    tcp: Option<Arc<AtomicUsize>>,
}

/// Aborts a task when dropped (the TCP listener goes with the SIP task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Driver {
    socket: UdpSocket,
    /// What the TCP connections read.
    tcp_events: mpsc::Receiver<tcp::TcpEvent>,
    /// Open TCP connections by peer address: what goes to one of them goes over it.
    tcp: HashMap<SocketAddr, tcp::TcpConn>,
    /// Opens connections for calls we place over TCP.
    conns: tcp::Connections,
    /// Calls placed for a far end's REFER → the call it came in (told how they go).
    referred: HashMap<CallHandle, CallHandle>,
    /// Addresses whose TCP/TLS connection closed, and when: nothing for them goes over UDP.
    closed_streams: HashMap<SocketAddr, Instant>,
    _tcp_task: AbortOnDrop,
    _tls_task: Option<AbortOnDrop>,
    uas: Uas,
    media: Media,
    calls: HashMap<CallHandle, CallEntry>,
    commands: mpsc::Receiver<SipCmd>,
    self_tx: mpsc::Sender<SipCmd>,
    config: SipNodeConfig,
    /// Set once shutting down: told when the last call's state is gone.
    shutdown: Option<oneshot::Sender<()>>,
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; 65_535];
        loop {
            self.flush().await;
            if self.shutdown.is_some() && self.uas.calls_held() == 0 {
                if let Some(done) = self.shutdown.take() {
                    let _ = done.send(());
                }
                return;
            }
            let sleep = self
                .uas
                .next_deadline()
                .map(|d| tokio::time::sleep_until(tokio::time::Instant::from_std(d)));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        // The address speaks UDP now: what is meant for it may go there again.
                        if !self.closed_streams.is_empty() {
                            self.closed_streams.remove(&from);
                        }
                        self.uas.receive(Instant::now(), &buf[..n], from);
                    }
                    Err(e) => tracing::debug!(error = %e, "SIP receive failed"),
                },
                Some(ev) = self.tcp_events.recv() => self.on_tcp(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(SipCmd::Hangup { call, cause, text, reason }) => {
                        self.hang_up(Instant::now(), call, cause, &text, reason);
                    }
                    Some(SipCmd::Dial { request, reply }) => self.dial_cmd(*request, reply),
                    Some(SipCmd::DialOver { peer, conn, request, reply }) => {
                        // The connection's `Opened` may still be queued: this is the same.
                        self.tcp.entry(peer).or_insert(conn);
                        let _ = reply.send(self.dial(Instant::now(), *request));
                    }
                    Some(SipCmd::Transfer { request, reply }) => {
                        let _ = reply.send(self.transfer(Instant::now(), request));
                    }
                    Some(SipCmd::TransferCall { call, to }) => {
                        self.transfer_call(Instant::now(), call, &to);
                    }
                    Some(SipCmd::Shutdown(done)) => {
                        tracing::info!(calls = self.uas.active_calls(), "SIP shutting down: hanging up every call");
                        for entry in self.calls.values_mut() {
                            entry.hangup.get_or_insert(CallEndReason::Shutdown);
                        }
                        self.uas.hangup_all(Instant::now(), 503, "node shutting down");
                        self.shutdown = Some(done);
                    }
                    None => return,
                },
                () = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {
                    self.uas.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Sends what the core produced and acts on its events, until it is quiet.
    async fn flush(&mut self) {
        while let Some(out) = self.uas.poll_output() {
            match out {
                UasOutput::Transmit { to, data } => {
                    self.config.metrics.sip_datagram_sent(&data);
                    if let Some(conn) = self.tcp.get(&to) {
                        match conn.tx.try_send(data) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                // Its task has ended; its `Closed` is on the way.
                                tracing::debug!(%to, "SIP TCP connection gone: send dropped");
                                if let Some(conn) = self.tcp.remove(&to) {
                                    self.stream_gone(to, &conn);
                                }
                            }
                            Err(e) => tracing::debug!(%to, error = %e, "SIP TCP send dropped"),
                        }
                        continue;
                    }
                    if self.closed_streams.contains_key(&to) {
                        // Its TCP/TLS connection closed: what was meant for it must not go out
                        // over UDP (in clear, for a TLS call) to what was a connection's port.
                        tracing::debug!(%to, "SIP peer's connection closed: send dropped");
                        continue;
                    }
                    if let Err(e) = self.socket.send_to(&data, to).await {
                        tracing::debug!(%to, error = %e, "SIP send failed");
                    }
                }
                UasOutput::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_tcp(&mut self, event: tcp::TcpEvent) {
        match event {
            tcp::TcpEvent::Opened { peer, conn } => {
                self.closed_streams.remove(&peer);
                self.tcp.insert(peer, conn);
            }
            tcp::TcpEvent::Message { peer, data } => {
                let tls = self.tcp.get(&peer).is_some_and(|c| c.tls);
                let transport = if tls { Transport::Tls } else { Transport::Tcp };
                self.uas.receive_on(Instant::now(), &data, peer, transport);
            }
            tcp::TcpEvent::Closed { peer, id } => {
                if self.tcp.get(&peer).is_some_and(|c| c.id == id) {
                    if let Some(conn) = self.tcp.remove(&peer) {
                        self.stream_gone(peer, &conn);
                    }
                }
            }
        }
    }

    /// `conn` to `peer` closed: if calls were still on it, remembers the address (for
    /// [`CLOSED_STREAM_MEMORY`], or until a datagram comes from it) so that those calls'
    /// messages are not sent over UDP instead.
    fn stream_gone(&mut self, peer: SocketAddr, conn: &tcp::TcpConn) {
        if conn.calls.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = Instant::now();
        if self.closed_streams.len() >= MAX_CLOSED_STREAMS {
            self.closed_streams
                .retain(|_, at| now.duration_since(*at) < CLOSED_STREAM_MEMORY);
        }
        if self.closed_streams.len() < MAX_CLOSED_STREAMS {
            self.closed_streams.insert(peer, now);
        }
    }

    fn on_event(&mut self, event: UasEvent) {
        let now = Instant::now();
        match event {
            UasEvent::Incoming {
                call,
                invite,
                source,
            } => self.on_incoming(now, call, &invite, source),
            UasEvent::Confirmed { call, body } => self.on_confirmed(now, call, &body),
            UasEvent::Reinvite { call, request } => self.on_reinvite(now, call, &request),
            UasEvent::InfoDtmf { call, digit, .. } => {
                tracing::info!(call = %call, %digit, "DTMF (SIP INFO)");
                if let Some(media) = self.calls.get(&call).and_then(|e| e.media.as_ref()) {
                    let _ = media.try_send(MediaCmd::Dtmf(digit));
                }
            }
            UasEvent::Progress { call, status, body } => {
                self.refer_call_progress(now, call, status);
                self.on_progress(call, status, &body);
            }
            UasEvent::Answered { call, body } => {
                self.refer_call_progress(now, call, 200);
                self.on_answered(now, call, &body);
            }
            UasEvent::Transfer { call, state } => self.on_transfer(call, state),
            UasEvent::ReferRequested { call, refer_to } => {
                self.on_refer_requested(now, call, &refer_to);
            }
            UasEvent::Ended { call, reason } => {
                self.refer_call_ended(now, call, &reason);
                self.on_ended(call, &reason);
            }
        }
    }

    fn reject(&mut self, now: Instant, call: CallHandle, status: u16, extra: &[(&str, &str)]) {
        if let Err(e) = self.uas.reject(now, call, status, extra) {
            tracing::debug!(call = %call, error = %e, "reject refused");
        }
    }

    fn on_incoming(
        &mut self,
        now: Instant,
        call: CallHandle,
        invite: &Request,
        source: SocketAddr,
    ) {
        if self.shutdown.is_some() || self.config.metrics.is_draining() {
            tracing::info!(%source, "INVITE refused: node draining");
            return self.reject(now, call, 503, &[("Retry-After", "5")]);
        }
        let now_unix = chrono::Utc::now().timestamp().max(0).unsigned_abs();
        let trunk = match self.config.trunks.admit(
            source.ip(),
            invite.method.as_str(),
            &invite.uri.to_string(),
            invite.headers.get("Authorization"),
            now_unix,
        ) {
            Admission::Trunk(t) => {
                tracing::info!(%source, trunk = %t.name, digest = t.auth.is_some(), "INVITE from a trunk");
                (t.name.clone(), t.tenant.clone(), t.agent.clone())
            }
            Admission::Challenge(challenges) => {
                tracing::info!(%source, "INVITE challenged (401)");
                let extra: Vec<(&str, &str)> = challenges
                    .iter()
                    .map(|c| ("WWW-Authenticate", c.as_str()))
                    .collect();
                return self.reject(now, call, 401, &extra);
            }
            Admission::Refuse(reason) => {
                tracing::warn!(%source, %reason, "INVITE refused: no trunk");
                return self.reject(now, call, 403, &[]);
            }
        };
        // Capacity: reserve a slot first so a burst cannot overshoot.
        let open = self.config.active.fetch_add(1, Ordering::AcqRel);
        if open >= self.config.max_calls {
            self.config.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%source, open, max = self.config.max_calls, "INVITE refused: node full");
            return self.reject(now, call, 503, &[("Retry-After", "5")]);
        }
        // Until the call is in `self.calls` (whose end releases it), failures release the slot.
        let refuse = |d: &mut Self, status: u16, extra: &[(&str, &str)]| {
            d.config.active.fetch_sub(1, Ordering::AcqRel);
            d.reject(now, call, status, extra);
        };
        let context = match self.config.admission.admit(
            &invite.headers,
            trunk.1.as_deref(),
            chrono::Utc::now(),
        ) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(%source, %reason, "INVITE refused: call context");
                return refuse(self, 403, &[]);
            }
        };
        // The agent the call context names, else its trunk's, else the app's default.
        let agent = context.agent.clone().or(trunk.2);
        if let Some(a) = &agent {
            if !self.config.app.has_agent(context.tenant.as_deref(), a) {
                tracing::warn!(%source, agent = %a, "INVITE refused: no such agent");
                return refuse(self, 404, &[("Warning", "399 vaani \"unknown agent\"")]);
            }
        }
        // No body: a late offer (RFC 3261 §13.2.1): our 2xx offers, the ACK answers.
        let offer = if invite.body.is_empty() {
            None
        } else {
            match SessionDescription::parse(&invite.body) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::info!(%source, error = %e, "INVITE refused: unreadable SDP");
                    return refuse(self, 400, &[]);
                }
            }
        };
        let Some(reserved) = self.media.reserve() else {
            tracing::warn!("INVITE refused: no free RTP port");
            return refuse(self, 503, &[("Retry-After", "5")]);
        };
        let port = reserved.port();
        let session_id = random_u64() >> 1;
        let local = self.local_media(port, session_id, 1);
        let (sdp_body, plan) = match &offer {
            Some(offer) => match sdp::answer(offer, &local) {
                Ok((answer, negotiated)) => (answer.to_bytes(), Some(MediaPlan::from(&negotiated))),
                Err(e) => {
                    tracing::info!(%source, error = %e, "INVITE refused: SDP");
                    let warning = match e {
                        SdpError::NoCommonCodec => "305 vaani \"Incompatible media format\"",
                        _ => "304 vaani \"Media type not available\"",
                    };
                    return refuse(self, 488, &[("Warning", warning)]);
                }
            },
            None => (sdp::offer(&local).to_bytes(), None),
        };
        if let Err(e) = self.uas.accept(now, call, Bytes::from(sdp_body)) {
            tracing::warn!(call = %call, error = %e, "accept refused");
            self.config.active.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let info = CallInfo {
            call_id: context.call_id.clone(),
            tenant: context.tenant.clone(),
            agent,
            sip_call_id: invite.headers.call_id.clone(),
        };
        tracing::info!(
            call = %call,
            %source,
            rtp_port = port,
            late_offer = offer.is_none(),
            vaani_call_id = ?context.call_id,
            "call answered"
        );
        self.config.registry.add(CallRecord {
            id: call.as_u64(),
            sip_call_id: info.sip_call_id.clone(),
            call_id: context.call_id,
            tenant: context.tenant,
            source: source.to_string(),
            direction: "inbound".into(),
            trunk: Some(trunk.0),
            agent: info.agent.clone(),
            codec: String::new(),
            rtp_port: port,
            latched: None,
            state: "answered".into(),
            end_reason: None,
            digits: String::new(),
            transfer: None,
            rtp_received: 0,
            rtp_sent: 0,
            started_at: chrono::Utc::now().to_rfc3339(),
            answered_at: Some(chrono::Utc::now().to_rfc3339()),
            ended_at: None,
        });
        self.config.metrics.call_started(MetricsTransport::Sip);
        let tcp = self.tcp.get(&source).map(|c| {
            c.calls.fetch_add(1, Ordering::AcqRel);
            c.calls.clone()
        });
        self.calls.insert(
            call,
            CallEntry {
                media: None,
                plan: None,
                call_id: info.call_id.clone(),
                tenant: info.tenant.clone(),
                agent: info.agent.clone(),
                waiting: Some((reserved, info)),
                port,
                sdp_session_id: session_id,
                sdp_version: 1,
                hangup: None,
                started_at: chrono::Utc::now(),
                tcp,
            },
        );
        if let Some(plan) = plan {
            self.start_media(now, call, plan);
        }
    }

    /// The ACK arrived; with a late offer it carries the answer, and media starts now.
    fn on_confirmed(&mut self, now: Instant, call: CallHandle, body: &[u8]) {
        tracing::info!(call = %call, "call confirmed (ACK)");
        self.config
            .registry
            .update(call.as_u64(), |r| r.state = "confirmed".into());
        let waiting_for_answer = self
            .calls
            .get(&call)
            .is_some_and(|e| e.plan.is_none() && e.waiting.is_some());
        if !waiting_for_answer {
            return;
        }
        let plan = SessionDescription::parse(body)
            .map_err(|e| e.to_string())
            .and_then(|a| plan_from_answer(&a).map_err(|e| e.to_string()));
        match plan {
            Ok(plan) => self.start_media(now, call, plan),
            Err(error) => {
                tracing::info!(call = %call, %error, "no usable SDP answer in the ACK");
                self.hang_up(now, call, 488, "no usable SDP answer", CallEndReason::Error);
            }
        }
    }

    /// Starts the call's media task with the negotiated `plan`.
    fn start_media(&mut self, now: Instant, call: CallHandle, plan: MediaPlan) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let Some((reserved, info)) = entry.waiting.take() else {
            return;
        };
        let ids = random_u64();
        let mut scfg = SessionConfig::g711(
            plan.format(),
            plan.payload_type,
            (ids >> 32) as u32,
            (ids >> 16) as u16,
            random_u64() as u32,
        );
        scfg.dtmf_payload_type = plan.dtmf_payload_type;
        scfg.remote = Some(plan.remote);
        scfg.direction = plan.direction;
        scfg.inactivity_timeout = Some(self.config.rtp_timeout);
        let app = self.config.app.start(&info);
        let media_tx = match self
            .media
            .start(now, call, reserved, scfg, app, &self.shared())
        {
            Ok(tx) => tx,
            Err(error) => {
                tracing::warn!(call = %call, %error, "media setup failed");
                self.hang_up(now, call, 500, "media setup failed", CallEndReason::Error);
                return;
            }
        };
        let codec = plan.format().encoding.sdp_name().to_string();
        tracing::info!(call = %call, %codec, remote = %plan.remote, "media started");
        self.config
            .registry
            .update(call.as_u64(), |r| r.codec = codec);
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        entry.media = Some(media_tx);
        entry.plan = Some(plan);
    }

    /// What a call's media shares with the SIP side.
    fn shared(&self) -> engine::Shared {
        engine::Shared {
            sip: self.self_tx.clone(),
            registry: self.config.registry.clone(),
            metrics: self.config.metrics.clone(),
        }
    }

    fn local_media(&self, port: u16, session_id: u64, version: u64) -> LocalMedia {
        LocalMedia {
            address: self.config.media_address,
            port,
            codecs: self
                .config
                .codecs
                .iter()
                .filter(|c| carried(c))
                .cloned()
                .collect(),
            telephone_event: true,
            ptime: crate::codec::FRAME_MS,
            direction: Direction::SendRecv,
            session_id,
            session_version: version,
        }
    }

    /// A re-INVITE: answer its offer on the same port. Hold and unhold change the direction
    /// (we stop sending while held); a change of codec or payload type restarts the call's RTP
    /// session with the new one. An INVITE without offer gets 488 for now.
    fn on_reinvite(&mut self, now: Instant, call: CallHandle, request: &Request) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return self.reject(now, call, 481, &[]);
        };
        if entry.media.is_none() {
            // Media never started (a late offer still waiting); nothing to renegotiate.
            return self.reject(now, call, 500, &[("Retry-After", "1")]);
        }
        if request.body.is_empty() {
            // RFC 3261 §14.2 allows an INVITE without offer; we would have to offer here.
            return self.reject(
                now,
                call,
                488,
                &[("Warning", "399 vaani \"offer required\"")],
            );
        }
        let Ok(offer) = SessionDescription::parse(&request.body) else {
            return self.reject(now, call, 400, &[]);
        };
        entry.sdp_version += 1;
        let (port, sid, ver) = (entry.port, entry.sdp_session_id, entry.sdp_version);
        let local = self.local_media(port, sid, ver);
        let Ok((answer, negotiated)) = sdp::answer(&offer, &local) else {
            return self.reject(now, call, 488, &[]);
        };
        let plan = MediaPlan::from(&negotiated);
        if let Some(entry) = self.calls.get_mut(&call) {
            let changed = entry.plan.as_ref().is_none_or(|p| {
                p.codec != plan.codec
                    || p.payload_type != plan.payload_type
                    || p.dtmf_payload_type != plan.dtmf_payload_type
            });
            let codec = changed.then(|| (plan.format(), plan.payload_type, plan.dtmf_payload_type));
            if let Some(media) = &entry.media {
                let _ = media.try_send(MediaCmd::Update {
                    remote: Some(plan.remote),
                    direction: plan.direction,
                    codec,
                });
            }
            entry.plan = Some(plan);
        }
        tracing::info!(
            call = %call,
            direction = negotiated.direction.as_str(),
            on_hold = negotiated.on_hold,
            "re-INVITE answered"
        );
        if let Err(e) = self.uas.accept(now, call, Bytes::from(answer.to_bytes())) {
            tracing::debug!(call = %call, error = %e, "re-INVITE accept refused");
        }
    }

    /// Hangs `call` up (BYE), remembering what its end counts as.
    fn hang_up(
        &mut self,
        now: Instant,
        call: CallHandle,
        cause: u16,
        text: &str,
        reason: CallEndReason,
    ) {
        if self.uas.hangup(now, call, cause, text).is_ok() {
            if let Some(entry) = self.calls.get_mut(&call) {
                entry.hangup.get_or_insert(reason);
            }
        }
    }

    fn on_ended(&mut self, call: CallHandle, reason: &EndReason) {
        let label = match reason {
            EndReason::LocalHangup { text, .. } => format!("local_hangup: {text}"),
            EndReason::Rejected(status) => format!("rejected: {status}"),
            EndReason::Failed(status) => format!("failed: {status}"),
            other => other.code().to_string(),
        };
        tracing::debug!(call = %call, reason = %label, "SIP dialog ended");
        if let Some(entry) = self.calls.remove(&call) {
            // Dropping the command channel stops the media task.
            self.config.active.fetch_sub(1, Ordering::AcqRel);
            if let Some(calls) = &entry.tcp {
                calls.fetch_sub(1, Ordering::AcqRel);
            }
            self.config.registry.end(call.as_u64(), &label);
            let counted = end_reason(reason, entry.hangup);
            self.config.metrics.call_ended(CallEnd {
                transport: MetricsTransport::Sip,
                reason: counted,
                call_id: entry.call_id,
                tenant: entry.tenant,
                started_at: entry.started_at,
                ended_at: chrono::Utc::now(),
            });
        }
    }
}

/// What a call's end counts as: our own hang-up says why we hung up; otherwise the far end
/// ended it (BYE, CANCEL), the dialog failed (no ACK), or a call we placed never connected.
fn end_reason(ended: &EndReason, hangup: Option<CallEndReason>) -> CallEndReason {
    match (ended, hangup) {
        (EndReason::Failed(_) | EndReason::Timeout | EndReason::NoAnswer, _) => {
            CallEndReason::NotConnected
        }
        (EndReason::RemoteBye | EndReason::Cancelled, _) => CallEndReason::CallerHangup,
        (_, Some(reason)) => reason,
        (EndReason::LocalHangup { cause: 408, .. }, None) => CallEndReason::RtpTimeout,
        (EndReason::LocalHangup { cause: 503, .. }, None) => CallEndReason::Shutdown,
        (EndReason::LocalHangup { cause: 200, .. }, None) => CallEndReason::AgentHangup,
        (EndReason::LocalHangup { .. } | EndReason::AckTimeout | EndReason::Rejected(_), None) => {
            CallEndReason::Error
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer_with(m: &str) -> SessionDescription {
        let text =
            format!("v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n{m}");
        SessionDescription::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn answers_to_our_offers_give_opus_g722_or_g711_plans() {
        // Opus on the answerer's PT with the 48 kHz telephone-event, not the 8 kHz one.
        let a = answer_with(
            "m=audio 4000 RTP/AVP 111 110 101\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtpmap:110 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let plan = plan_from_answer(&a).unwrap();
        assert_eq!(
            (
                plan.codec.clone(),
                plan.payload_type,
                plan.dtmf_payload_type
            ),
            (Codec::Opus, 111, Some(110))
        );
        assert_eq!(plan.format(), AudioFormat::OPUS);
        assert_eq!(plan.remote, "192.0.2.7:4000".parse::<SocketAddr>().unwrap());
        // PCMA keeps its 8 kHz telephone-event.
        let a = answer_with("m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let plan = plan_from_answer(&a).unwrap();
        assert_eq!(
            (plan.format(), plan.payload_type, plan.dtmf_payload_type),
            (AudioFormat::PCMA, 8, Some(101))
        );
        // G.722 on its static type and 8 kHz clock, with the 8 kHz telephone-event.
        let a = answer_with("m=audio 4000 RTP/AVP 9 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let plan = plan_from_answer(&a).unwrap();
        assert_eq!(
            (plan.format(), plan.payload_type, plan.dtmf_payload_type),
            (AudioFormat::G722, 9, Some(101))
        );
        // "opus" or "G722" on another clock is nothing we carry.
        for m in [
            "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/16000/1\r\n",
            "m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 G722/16000\r\n",
        ] {
            assert_eq!(
                plan_from_answer(&answer_with(m)).err(),
                Some(SdpError::NoCommonCodec)
            );
        }
    }
}
