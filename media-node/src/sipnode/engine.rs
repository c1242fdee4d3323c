//! The media engine: a few worker threads (one per core by default), each owning one RTP socket
//! and one RTCP socket shared by all of its calls, running them on a 20 ms tick.
//!
//! # A worker
//!
//! - **Sockets**: an even port of the RTP range for RTP and the odd one after it for RTCP
//!   ([`PortPool::bind_pair`]); the SDP of every call placed on the worker advertises that port.
//!   We do not offer or accept `a=rtcp-mux`, so RTCP goes to the peer's RTP port + 1 (or back to
//!   where its RTCP came from), per RFC 3550 §11; RTCP a peer multiplexes onto our RTP port
//!   anyway is read there too.
//! - **Receive**: datagrams are read in batches ([`BatchSocket`]: `recvmmsg`) and routed to
//!   calls by source address and SSRC ([`Demux`]; the SDP's address until the call latches onto
//!   its first accepted packet's source), then through the call's [`RtpSession`] (latching
//!   checks, jitter buffer; RFC 4733 events).
//! - **Tick**: every 20 ms, in four phases 5 ms apart (each call belongs to one, so a worker's
//!   packets leave spread over the 20 ms rather than in one burst): for each call of the phase,
//!   its commands from the SIP task (re-INVITE changes, INFO key presses; a closed channel ends
//!   the call), the jitter buffer's due frames decoded to 16 kHz, the energy VAD
//!   ([`EnergyVad`]), the app ([`SipCall`]), what it queued encoded and sent in pace, RTCP
//!   when due; the worker's send batch goes out with `sendmmsg`.
//! - **Out to the SIP task**: hang-up requests (RTP timeout, the app hanging up) over its
//!   command channel, never blocking (retried on the next tick when it is full); per-call
//!   counters into the [`CallRegistry`] and the node's [`Metrics`] once a second.
//!
//! Nothing on the per-packet path allocates: sockets' batches, sessions' buffers and the action
//! buffer are allocated when the worker or the call starts (RTCP reports, every few seconds, do
//! allocate a little; see [`RtpSession::poll_rtcp`]).
//!
//! Calls are placed on the worker with the fewest calls ([`Engine::place`]). Dropping the
//! [`Engine`] stops the workers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::app::{AppAction, SipCall};
use super::call::MediaCmd;
use super::ports::{PortPool, PortRange};
use super::registry::CallRegistry;
use super::SipCmd;
use crate::codec::vad::{EnergyVad, VadChange};
use crate::metrics::{EndReason as CallEndReason, Metrics};
use crate::rtp::demux::Demux;
use crate::rtp::packet::is_rtcp;
use crate::rtp::session::{MediaEvent, RtpSession, SessionConfig, DEFAULT_DTMF_DURATION};
use crate::sip::sdp::Direction;
use crate::sip::uas::CallHandle;
use crate::udp::{wait_readable, BatchSocket, IoMode, BATCH};

/// The tick: one packet per call each.
pub const TICK: Duration = Duration::from_millis(20);
/// Phases of the tick (calls are spread over them).
pub const PHASES: usize = 4;
/// Receive batches read before the tick is looked at again (under overload the tick still runs).
const MAX_BATCHES_PER_TURN: usize = 16;
/// How often a call's counters are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Settings of the media engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Worker threads; 0: one per core.
    pub workers: usize,
    pub io: IoMode,
    /// Kernel socket buffer asked for each worker socket, in bytes (capped by
    /// `net.core.rmem_max`/`wmem_max` unless the process may force it).
    pub socket_buffer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 0,
            io: IoMode::Batched,
            socket_buffer: 4 << 20,
        }
    }
}

/// A call to run, from the SIP task.
pub(crate) struct NewCall {
    pub call: CallHandle,
    pub session: SessionConfig,
    pub app: Box<dyn SipCall>,
    pub commands: mpsc::Receiver<MediaCmd>,
    pub placement: Placement,
}

/// A call's seat on a worker, taken when its SDP is written (the port is the worker's); gives
/// the seat back when dropped unless a worker took the call.
#[derive(Debug)]
pub(crate) struct Placement {
    worker: usize,
    port: u16,
    load: Arc<AtomicUsize>,
    held: bool,
}

impl Placement {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hands the seat to the worker running the call (it releases it when the call ends).
    fn take(mut self) -> Arc<AtomicUsize> {
        self.held = false;
        self.load.clone()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if self.held {
            self.load.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct WorkerHandle {
    port: u16,
    load: Arc<AtomicUsize>,
    control: std::sync::mpsc::Sender<NewCall>,
}

/// The running engine. See the module docs.
pub(crate) struct Engine {
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What every worker shares with the SIP side.
#[derive(Clone)]
pub(crate) struct Shared {
    pub sip: mpsc::Sender<SipCmd>,
    pub registry: CallRegistry,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// Binds a port pair per worker from `range` on `ip` and starts the workers.
    pub fn start(
        ip: IpAddr,
        range: PortRange,
        config: EngineConfig,
        shared: Shared,
    ) -> std::io::Result<Engine> {
        let n = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = PortPool::new(ip, range);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let Some((rtp, rtcp)) = pool.bind_pair() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("no free RTP/RTCP port pair in {range} for media worker {i}"),
                ));
            };
            let port = rtp.local_addr()?.port();
            let (tx, rx) = std::sync::mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let core = WorkerCore::new(shared.clone());
            let stop = stop.clone();
            // The batches hold raw pointers (not Send): they are made on the worker's thread.
            let rtp = BatchSocket::new(rtp, config.io, config.socket_buffer)?.into_inner();
            let rtcp = BatchSocket::new(rtcp, config.io, 256 << 10)?.into_inner();
            std::thread::Builder::new()
                .name(format!("rtp-worker-{i}"))
                .spawn(move || {
                    let (rtp, rtcp) = match (
                        BatchSocket::new(rtp, config.io, 0),
                        BatchSocket::new(rtcp, config.io, 0),
                    ) {
                        (Ok(a), Ok(b)) => (a, b),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(worker = i, error = %e, "media worker failed to start");
                            return;
                        }
                    };
                    if let Some((r, s)) = rtp.buffer_sizes() {
                        tracing::debug!(
                            worker = i,
                            port,
                            rcvbuf = r,
                            sndbuf = s,
                            "media worker socket"
                        );
                    }
                    Worker {
                        core,
                        rtp,
                        rtcp,
                        control: rx,
                        stop,
                    }
                    .run()
                })?;
            workers.push(WorkerHandle {
                port,
                load,
                control: tx,
            });
        }
        tracing::info!(
            workers = n,
            ports = ?workers.iter().map(|w| w.port).collect::<Vec<_>>(),
            io = ?config.io,
            "media engine started"
        );
        Ok(Engine { workers, stop })
    }

    /// A seat on the worker with the fewest calls.
    pub fn place(&self) -> Option<Placement> {
        let (worker, w) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.load.load(Ordering::Acquire))?;
        w.load.fetch_add(1, Ordering::AcqRel);
        Some(Placement {
            worker,
            port: w.port,
            load: w.load.clone(),
            held: true,
        })
    }

    /// Hands a call to its worker.
    pub fn start_call(&self, call: NewCall) -> Result<(), &'static str> {
        let w = self
            .workers
            .get(call.placement.worker)
            .ok_or("no such media worker")?;
        w.control.send(call).map_err(|_| "media worker stopped")
    }
}

/// A worker thread: the sockets and the loop around a [`WorkerCore`].
struct Worker {
    core: WorkerCore,
    rtp: BatchSocket,
    rtcp: BatchSocket,
    control: std::sync::mpsc::Receiver<NewCall>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(&mut self) {
        let phase_len = TICK / PHASES as u32;
        let mut phase = 0;
        let mut next = Instant::now() + phase_len;
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            self.receive(now);
            let now = Instant::now();
            if now >= next {
                while let Ok(call) = self.control.try_recv() {
                    self.core.add(now, call);
                }
                self.core
                    .tick(now, phase, &mut self.rtp, &mut self.rtcp, unix_now());
                self.rtp.flush();
                self.rtcp.flush();
                phase = (phase + 1) % PHASES;
                next += phase_len;
                if next + TICK * 5 < now {
                    // Far behind (the machine stalled): start the schedule again from now.
                    next = now + phase_len;
                }
                continue;
            }
            wait_readable(
                self.rtp.socket(),
                Some(self.rtcp.socket()),
                next.saturating_duration_since(now),
            );
        }
    }

    fn receive(&mut self, now: Instant) {
        for _ in 0..MAX_BATCHES_PER_TURN {
            let n = self.rtp.recv_batch();
            for i in 0..n {
                if let Some((data, from)) = self.rtp.received(i) {
                    self.core.on_rtp(now, data, from);
                }
            }
            if n < BATCH {
                break;
            }
        }
        let n = self.rtcp.recv_batch();
        for i in 0..n {
            if let Some((data, from)) = self.rtcp.received(i) {
                self.core.on_rtcp(now, data, from);
            }
        }
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// What a worker's call has added to the node's RTP counters so far.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    received: u64,
    lost: u64,
}

/// One call on a worker.
struct Slot {
    call: CallHandle,
    session: RtpSession,
    app: Box<dyn SipCall>,
    commands: mpsc::Receiver<MediaCmd>,
    vad: EnergyVad,
    published: Published,
    next_publish: Instant,
    load: Arc<AtomicUsize>,
    /// A hang-up the SIP task's channel had no room for yet.
    hangup: Option<(u16, &'static str, CallEndReason)>,
    /// The app asked to hang up with this text (sent with `hangup`).
    app_hangup_text: Option<String>,
}

/// A worker's calls and their routing, without the sockets' loop (tests drive it directly).
pub(crate) struct WorkerCore {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    phases: [Vec<usize>; PHASES],
    demux: Demux,
    shared: Shared,
    actions: Vec<AppAction>,
    /// Datagrams no call took.
    pub unrouted: u64,
}

impl WorkerCore {
    pub fn new(shared: Shared) -> Self {
        WorkerCore {
            slots: Vec::new(),
            free: Vec::new(),
            phases: Default::default(),
            demux: Demux::new(),
            shared,
            actions: Vec::with_capacity(16),
            unrouted: 0,
        }
    }

    /// Calls running.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }

    pub fn add(&mut self, now: Instant, new: NewCall) {
        let load = new.placement.take();
        let remote = new.session.remote;
        let session = match RtpSession::new(now, new.session) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(call = %new.call, error = %e, "media setup failed");
                load.fetch_sub(1, Ordering::AcqRel);
                let _ = self.shared.sip.try_send(SipCmd::Hangup {
                    call: new.call,
                    cause: 500,
                    text: "media setup failed".into(),
                    reason: CallEndReason::Error,
                });
                return;
            }
        };
        let phase = (0..PHASES)
            .min_by_key(|&p| self.phases[p].len())
            .unwrap_or(0);
        let slot = Slot {
            call: new.call,
            session,
            app: new.app,
            commands: new.commands,
            vad: EnergyVad::new(),
            published: Published::default(),
            next_publish: now + PUBLISH_EVERY,
            load,
            hangup: None,
            app_hangup_text: None,
        };
        let key = match self.free.pop() {
            Some(k) => {
                self.slots[k] = Some(slot);
                k
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.demux.insert(key, remote);
        self.phases[phase].push(key);
    }

    /// A datagram on the RTP port (RTP, or RTCP multiplexed onto it).
    pub fn on_rtp(&mut self, now: Instant, data: &[u8], from: SocketAddr) {
        let rtcp = is_rtcp(data);
        let ssrc_at = if rtcp { 4 } else { 8 };
        let Some(ssrc) = data
            .get(ssrc_at..ssrc_at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            self.unrouted += 1;
            return;
        };
        let Some(key) = self.demux.route(from, ssrc) else {
            self.unrouted += 1;
            return;
        };
        let Some(Some(slot)) = self.slots.get_mut(key) else {
            self.unrouted += 1;
            return;
        };
        let before = slot.session.counters().received;
        slot.session.receive(now, data, from);
        if !rtcp && slot.session.counters().received > before {
            self.demux.confirm(key, ssrc);
            if let Some(l) = slot.session.latched() {
                self.demux.set_address(key, Some(l));
            }
        }
    }

    /// A datagram on the RTCP port.
    pub fn on_rtcp(&mut self, now: Instant, data: &[u8], from: SocketAddr) {
        let Some(ssrc) = data
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            self.unrouted += 1;
            return;
        };
        match self.demux.route(from, ssrc) {
            Some(key) => {
                if let Some(Some(slot)) = self.slots.get_mut(key) {
                    slot.session.receive_rtcp(now, data, from);
                }
            }
            None => self.unrouted += 1,
        }
    }

    /// Runs phase `phase`'s calls at `now`: everything of a 20 ms tick, sending into the
    /// sockets' batches.
    pub fn tick(
        &mut self,
        now: Instant,
        phase: usize,
        rtp: &mut BatchSocket,
        rtcp: &mut BatchSocket,
        wallclock: Duration,
    ) {
        if phase >= PHASES {
            return;
        }
        let mut i = 0;
        while let Some(&key) = self.phases[phase].get(i) {
            if self.run_call(now, key, rtp, rtcp, wallclock) {
                i += 1;
            } else {
                // The last call takes its place in the list, and runs next.
                self.phases[phase].swap_remove(i);
                self.finish(key);
            }
        }
    }

    /// One tick of one call; `false` when the call is over.
    fn run_call(
        &mut self,
        now: Instant,
        key: usize,
        rtp: &mut BatchSocket,
        rtcp: &mut BatchSocket,
        wallclock: Duration,
    ) -> bool {
        let Some(Some(slot)) = self.slots.get_mut(key) else {
            return false;
        };
        let id = slot.call.as_u64();
        let actions = &mut self.actions;
        actions.clear();
        loop {
            match slot.commands.try_recv() {
                Ok(MediaCmd::Update {
                    remote,
                    direction,
                    codec,
                }) => {
                    let (latched, sdp) = (slot.session.latched(), slot.session.config().remote);
                    renegotiate(slot, now, remote, direction, codec, &self.shared);
                    // A codec change makes a new session, not latched yet: while the SDP's
                    // address is the same, the peer's media still comes from where it did.
                    let sdp_now = slot.session.config().remote;
                    let kept = latched.filter(|_| sdp_now == sdp);
                    self.demux
                        .set_address(key, slot.session.latched().or(kept).or(sdp_now));
                }
                Ok(MediaCmd::Dtmf(digit)) => {
                    self.shared.registry.update(id, |r| r.digits.push(digit));
                    slot.app.on_dtmf(digit, actions);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        slot.session.handle_timeout(now);
        while let Some(frame) = slot.session.poll_audio() {
            match slot.vad.process(&frame.samples) {
                VadChange::None => {}
                VadChange::SpeechStarted => slot.app.on_speech(true, actions),
                VadChange::SpeechEnded => slot.app.on_speech(false, actions),
            }
            slot.app.on_audio(&frame, actions);
        }
        while let Some(event) = slot.session.poll_event() {
            match event {
                MediaEvent::Dtmf { digit, duration } => {
                    tracing::info!(call = id, %digit, ms = duration.as_millis() as u64, "DTMF (RFC 4733)");
                    self.shared.registry.update(id, |r| r.digits.push(digit));
                    slot.app.on_dtmf(digit, actions);
                }
                MediaEvent::DtmfBegan { .. } => {}
                MediaEvent::Latched(addr) => {
                    tracing::debug!(call = id, %addr, "RTP latched");
                    self.shared
                        .registry
                        .update(id, |r| r.latched = Some(addr.to_string()));
                    self.demux.set_address(key, Some(addr));
                }
                MediaEvent::Timeout => {
                    tracing::info!(call = id, "no RTP: hanging up");
                    slot.hangup = Some((408, "RTP timeout", CallEndReason::RtpTimeout));
                }
            }
        }
        for action in actions.drain(..) {
            match action {
                AppAction::Play(frame) => {
                    slot.session.send_audio(&frame);
                }
                AppAction::Clear => slot.session.clear_audio(),
                AppAction::SendDtmf(digit) => {
                    if let Err(e) = slot.session.send_dtmf(digit, DEFAULT_DTMF_DURATION) {
                        tracing::debug!(call = id, error = %e, "DTMF not sent");
                    }
                }
                AppAction::Hangup(text) => {
                    slot.app_hangup_text = Some(text);
                    slot.hangup = Some((200, "", CallEndReason::AgentHangup));
                }
                AppAction::Transfer(to) => {
                    if self
                        .shared
                        .sip
                        .try_send(SipCmd::TransferCall {
                            call: slot.call,
                            to,
                        })
                        .is_err()
                    {
                        tracing::warn!(call = id, "transfer not passed on: SIP task busy");
                    }
                }
            }
        }
        if let Some((cause, text, reason)) = slot.hangup {
            let text = match slot.app_hangup_text.take() {
                Some(t) if cause == 200 => t,
                _ => text.to_string(),
            };
            match self.shared.sip.try_send(SipCmd::Hangup {
                call: slot.call,
                cause,
                text,
                reason,
            }) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => slot.hangup = None,
                Err(mpsc::error::TrySendError::Full(SipCmd::Hangup { text, .. })) => {
                    // Try again next tick.
                    if cause == 200 {
                        slot.app_hangup_text = Some(text);
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        while let Some(t) = slot.session.poll_transmit(now, rtp.slot()) {
            rtp.commit(t.len, t.to);
        }
        let mux = slot.session.config().rtcp_mux;
        let socket = if mux { &mut *rtp } else { &mut *rtcp };
        if let Some(t) = slot.session.poll_rtcp(now, wallclock, socket.slot()) {
            socket.commit(t.len, t.to);
        }
        if now >= slot.next_publish {
            slot.next_publish = now + PUBLISH_EVERY;
            publish(slot, &self.shared);
        }
        true
    }

    /// The call ended (the caller took it off its phase list): last counters out, its seat
    /// given back.
    fn finish(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key).and_then(Option::take) else {
            return;
        };
        let mut slot = slot;
        publish(&mut slot, &self.shared);
        let remote = slot.session.remote_report();
        let c = slot.session.counters();
        tracing::debug!(
            call = slot.call.as_u64(),
            received = c.received,
            sent = c.sent,
            rtcp_sent = c.rtcp_sent,
            rtcp_received = c.rtcp_received,
            peer_fraction_lost = remote.fraction_lost,
            peer_jitter = remote.jitter,
            rtt_ms = remote.round_trip.map(|d| d.as_secs_f64() * 1e3),
            speech_frames = slot.vad.speech_frames(),
            "call media ended"
        );
        self.shared
            .metrics
            .rtp_jitter(slot.session.jitter().stats().jitter_duration());
        slot.load.fetch_sub(1, Ordering::AcqRel);
        self.demux.remove(key);
        self.free.push(key);
    }
}

fn renegotiate(
    slot: &mut Slot,
    now: Instant,
    remote: Option<SocketAddr>,
    direction: Direction,
    codec: Option<(crate::codec::AudioFormat, u8, Option<u8>)>,
    shared: &Shared,
) {
    if let Some((format, payload_type, dtmf)) = codec {
        let mut cfg = slot.session.config().clone();
        cfg.format = format;
        cfg.payload_type = payload_type;
        cfg.dtmf_payload_type = dtmf;
        cfg.remote = remote.or(cfg.remote);
        cfg.direction = direction;
        match RtpSession::new(now, cfg) {
            Ok(s) => {
                // The new session counts from zero.
                publish(slot, shared);
                slot.published = Published::default();
                slot.session = s;
            }
            Err(e) => {
                tracing::warn!(call = slot.call.as_u64(), error = %e, "codec change failed")
            }
        }
    } else {
        slot.session.update(now, remote, direction);
    }
}

fn publish(slot: &mut Slot, shared: &Shared) {
    let c = slot.session.counters();
    let lost = u64::try_from(slot.session.jitter().stats().cumulative_lost()).unwrap_or(0);
    shared
        .metrics
        .rtp_received(c.received.saturating_sub(slot.published.received));
    shared
        .metrics
        .rtp_lost(lost.saturating_sub(slot.published.lost));
    slot.published = Published {
        received: c.received.max(slot.published.received),
        lost: lost.max(slot.published.lost),
    };
    shared.registry.update(slot.call.as_u64(), |r| {
        r.rtp_received = c.received;
        r.rtp_sent = c.sent;
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::app::{CallInfo, EchoApp, SipApp};
    use super::*;
    use crate::codec::{g711, AudioFormat};
    use crate::rtp::packet::{RtpHeader, RtpPacket};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::UdpSocket;

    fn shared() -> (Shared, mpsc::Receiver<SipCmd>) {
        let (tx, rx) = mpsc::channel(16);
        (
            Shared {
                sip: tx,
                registry: CallRegistry::default(),
                metrics: Metrics::new(),
            },
            rx,
        )
    }

    fn sockets() -> (BatchSocket, BatchSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (
            BatchSocket::new(a, IoMode::Batched, 1 << 20).unwrap(),
            BatchSocket::new(b, IoMode::Batched, 0).unwrap(),
        )
    }

    fn new_call(
        id: u64,
        remote: SocketAddr,
        tweak: impl FnOnce(&mut SessionConfig),
    ) -> (NewCall, mpsc::Sender<MediaCmd>, Arc<AtomicUsize>) {
        let mut cfg = SessionConfig::g711(AudioFormat::PCMU, 0, 0xA000 + id as u32, 1, 2);
        cfg.dtmf_payload_type = Some(101);
        cfg.remote = Some(remote);
        tweak(&mut cfg);
        let (tx, rx) = mpsc::channel(8);
        let load = Arc::new(AtomicUsize::new(1));
        (
            NewCall {
                call: CallHandle::for_test(id),
                session: cfg,
                app: EchoApp.start(&CallInfo {
                    call_id: None,
                    tenant: None,
                    agent: None,
                    sip_call_id: format!("test-{id}"),
                }),
                commands: rx,
                placement: Placement {
                    worker: 0,
                    port: 0,
                    load: load.clone(),
                    held: true,
                },
            },
            tx,
            load,
        )
    }

    fn tone_packet(seq: u16, ssrc: u32) -> Vec<u8> {
        let payload: Vec<u8> = (0..160)
            .map(|i| {
                let t = f64::from(u32::from(seq) * 160 + i) / 8000.0;
                g711::linear_to_ulaw(
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
                )
            })
            .collect();
        let mut out = Vec::new();
        RtpHeader {
            marker: seq == 0,
            payload_type: 0,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
        }
        .write_to_vec(&payload, &mut out)
        .unwrap();
        out
    }

    /// Runs every phase of one 20 ms tick at `now`.
    fn full_tick(
        core: &mut WorkerCore,
        now: Instant,
        rtp: &mut BatchSocket,
        rtcp: &mut BatchSocket,
    ) {
        for p in 0..PHASES {
            core.tick(now, p, rtp, rtcp, Duration::from_secs(1_700_000_000));
        }
        rtp.flush();
        rtcp.flush();
    }

    fn drain(peer: &UdpSocket) -> Vec<Vec<u8>> {
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = peer.recv_from(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    #[test]
    fn two_calls_sharing_a_source_address_are_echoed_apart() {
        let (sh, _sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = peer.local_addr().unwrap();
        let t0 = Instant::now();
        let (c0, _tx0, load0) = new_call(1, from, |_| {});
        let (c1, _tx1, _) = new_call(2, from, |_| {});
        core.add(t0, c0);
        core.add(t0, c1);
        assert_eq!(core.len(), 2);
        // Call 1 speaks a tone, call 2 sends silence.
        for k in 0..100u16 {
            let now = t0 + Duration::from_millis(20 * u64::from(k));
            core.on_rtp(now, &tone_packet(k, 0x1111), from);
            let mut silent = tone_packet(k, 0x2222);
            silent[12..].fill(0xFF);
            core.on_rtp(now, &silent, from);
            full_tick(&mut core, now, &mut rtp, &mut rtcp);
        }
        assert_eq!(core.unrouted, 0);
        assert_eq!(core.demux.get(0).unwrap().1, Some(0x1111));
        assert_eq!(core.demux.get(1).unwrap().1, Some(0x2222));
        let mut by_ssrc: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        for d in drain(&peer) {
            let p = RtpPacket::parse(&d).unwrap();
            by_ssrc.entry(p.ssrc).or_default().push(p.payload.to_vec());
        }
        let loud = |payloads: &[Vec<u8>]| {
            payloads
                .iter()
                .flat_map(|p| p.iter())
                .map(|&b| i64::from(g711::ulaw_to_linear(b)).abs())
                .max()
                .unwrap_or(0)
        };
        let a = &by_ssrc[&0xA001];
        let b = &by_ssrc[&0xA002];
        assert!(a.len() >= 98 && b.len() >= 98, "{} {}", a.len(), b.len());
        assert!(loud(a) > 4000, "call 1 hears its tone back");
        assert!(loud(b) < 100, "call 2 hears only its silence");
        assert_eq!(load0.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_closed_channel_ends_the_call_and_frees_its_seat() {
        let (sh, _sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let t0 = Instant::now();
        let (c, tx, load) = new_call(1, "127.0.0.1:9".parse().unwrap(), |_| {});
        core.add(t0, c);
        let (c2, _tx2, _) = new_call(2, "127.0.0.1:11".parse().unwrap(), |_| {});
        core.add(t0, c2);
        full_tick(&mut core, t0, &mut rtp, &mut rtcp);
        drop(tx);
        full_tick(&mut core, t0 + TICK, &mut rtp, &mut rtcp);
        assert_eq!(core.len(), 1);
        assert_eq!(load.load(Ordering::Acquire), 0);
        assert_eq!(core.demux.len(), 1);
        // The freed slot is reused.
        let (c3, _tx3, _) = new_call(3, "127.0.0.1:13".parse().unwrap(), |_| {});
        core.add(t0, c3);
        assert_eq!(core.slots.len(), 2);
    }

    #[test]
    fn a_latched_nat_source_survives_a_codec_change() {
        let (sh, _sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let t0 = Instant::now();
        let sdp: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (c, tx, _) = new_call(1, sdp, |_| {});
        core.add(t0, c);
        // The only call waiting, and a stranger's address: latched (a NAT).
        core.on_rtp(t0, &tone_packet(0, 0x55), nat);
        full_tick(&mut core, t0, &mut rtp, &mut rtcp);
        assert_eq!(core.demux.get(0), Some((Some(nat), Some(0x55))));
        // A re-INVITE moves to PCMA (payload type 8), same SDP address.
        tx.try_send(MediaCmd::Update {
            remote: Some(sdp),
            direction: Direction::SendRecv,
            codec: Some((AudioFormat::PCMA, 8, Some(101))),
        })
        .unwrap();
        full_tick(&mut core, t0 + TICK, &mut rtp, &mut rtcp);
        assert_eq!(core.demux.get(0).unwrap().0, Some(nat));
        let mut pcma = tone_packet(1, 0x55);
        pcma[1] = 8;
        core.on_rtp(t0 + TICK, &pcma, nat);
        assert_eq!(core.unrouted, 0);
        let slot = core.slots[0].as_ref().unwrap();
        assert_eq!(slot.session.latched(), Some(nat));
        assert_eq!(slot.session.counters().audio_received, 1);
    }

    #[test]
    fn silence_times_out_into_a_hangup_request() {
        let (sh, mut sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let t0 = Instant::now();
        let (c, _tx, _) = new_call(7, "127.0.0.1:9".parse().unwrap(), |cfg| {
            cfg.inactivity_timeout = Some(Duration::from_millis(100));
        });
        core.add(t0, c);
        for k in 0..10 {
            full_tick(&mut core, t0 + TICK * k, &mut rtp, &mut rtcp);
        }
        match sip.try_recv() {
            Ok(SipCmd::Hangup {
                call,
                cause,
                text,
                reason,
            }) => {
                assert_eq!(call.as_u64(), 7);
                assert_eq!(cause, 408);
                assert_eq!(text, "RTP timeout");
                assert_eq!(reason, CallEndReason::RtpTimeout);
            }
            other => panic!("{other:?}"),
        }
        assert!(sip.try_recv().is_err(), "asked once");
    }

    #[test]
    fn info_dtmf_is_echoed_as_rfc4733_and_rtcp_goes_to_port_plus_one() {
        let (sh, _sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_rtcp_port = peer.local_addr().unwrap().port() + 1;
        let peer_rtcp = UdpSocket::bind(("127.0.0.1", peer_rtcp_port)).ok();
        let t0 = Instant::now();
        let (c, tx, _) = new_call(1, peer.local_addr().unwrap(), |cfg| {
            cfg.rtcp_interval = Some(Duration::from_millis(100));
        });
        core.add(t0, c);
        tx.try_send(MediaCmd::Dtmf('5')).unwrap();
        for k in 0..20 {
            full_tick(&mut core, t0 + TICK * k, &mut rtp, &mut rtcp);
        }
        let events: Vec<u8> = drain(&peer)
            .iter()
            .filter_map(|d| RtpPacket::parse(d).ok())
            .filter(|p| p.payload_type == 101)
            .map(|p| p.payload[0])
            .collect();
        assert!(
            !events.is_empty() && events.iter().all(|&e| e == 5),
            "{events:?}"
        );
        if let Some(peer_rtcp) = peer_rtcp {
            let reports = drain(&peer_rtcp);
            assert!(!reports.is_empty(), "RTCP every ~100 ms");
            assert!(crate::rtp::rtcp::parse_compound(&reports[0]).is_ok());
        }
    }

    /// A counting global allocator for this test binary (per thread, so parallel tests do not
    /// interfere): it defers to the system allocator and only counts.
    #[allow(unsafe_code)]
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        }

        // SAFETY: every call goes to the system allocator unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract is passed on.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: the caller's contract is passed on.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract is passed on.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn allocations() -> u64 {
            ALLOCATIONS.with(Cell::get)
        }
    }

    /// The engine's packet loop, socket to socket (receive batch → demux → session → tick:
    /// jitter buffer, decode, VAD, echo app, encode → send batch), allocates nothing once the
    /// calls are up. RTCP is off here: a report every few seconds allocates a little.
    #[test]
    fn the_packet_loop_does_not_allocate() {
        let (sh, _sip) = shared();
        let mut core = WorkerCore::new(sh);
        let (mut rtp, mut rtcp) = sockets();
        let node = rtp.local_addr().unwrap();
        let peers: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let p = UdpSocket::bind("127.0.0.1:0").unwrap();
                p.set_nonblocking(true).unwrap();
                p
            })
            .collect();
        let t0 = Instant::now();
        let mut keep = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let (c, tx, _) = new_call(i as u64, p.local_addr().unwrap(), |cfg| {
                cfg.rtcp_interval = None;
            });
            core.add(t0, c);
            keep.push(tx);
        }
        let packets: Vec<Vec<u8>> = (0..400u16).map(|k| tone_packet(k, 0x7777)).collect();
        let mut buf = [0u8; 2048];
        let mut echoed = 0;
        let mut run = |core: &mut WorkerCore, range: std::ops::Range<u16>| {
            for k in range {
                let now = t0 + Duration::from_millis(20 * u64::from(k));
                for p in &peers {
                    p.send_to(&packets[usize::from(k)], node).unwrap();
                }
                // Loopback delivery is synchronous: the datagrams are waiting.
                loop {
                    let n = rtp.recv_batch();
                    for i in 0..n {
                        if let Some((d, from)) = rtp.received(i) {
                            core.on_rtp(now, d, from);
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
                full_tick(core, now, &mut rtp, &mut rtcp);
                for p in &peers {
                    while p.recv_from(&mut buf).is_ok() {
                        echoed += 1;
                    }
                }
            }
        };
        // The counter counts.
        let c = counting::allocations();
        drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
        assert_eq!(counting::allocations() - c, 1);
        // Warm up: latching, jitter buffer fill, queues at their working size, a publish.
        run(&mut core, 0..150);
        let before = counting::allocations();
        run(&mut core, 150..400);
        let after = counting::allocations();
        assert_eq!(after - before, 0, "allocations in 250 ticks of 3 calls");
        assert_eq!(core.unrouted, 0);
        assert!(echoed >= 3 * 390, "{echoed} packets came back");
        drop(keep);
    }

    proptest! {
        /// Arbitrary datagrams from a handful of sources, on both ports, between ticks: no
        /// panic, and nothing is routed to a call that is not there.
        #[test]
        fn arbitrary_datagrams_never_panic(
            datagrams in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..200), 0u8..6, any::<bool>()),
                0..60,
            )
        ) {
            let (sh, _sip) = shared();
            let mut core = WorkerCore::new(sh);
            let (mut rtp, mut rtcp) = sockets();
            let t0 = Instant::now();
            let sources: Vec<SocketAddr> = (0..6u16)
                .map(|i| SocketAddr::from(([127, 0, 0, 1 + (i % 2) as u8], 9 + i)))
                .collect();
            let (c0, _t0, _) = new_call(1, sources[0], |_| {});
            let (c1, _t1, _) = new_call(2, sources[0], |_| {});
            let (c2, _t2, _) = new_call(3, sources[3], |_| {});
            core.add(t0, c0);
            core.add(t0, c1);
            core.add(t0, c2);
            for (i, (mut d, src, on_rtcp_port)) in datagrams.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(7 * i as u64);
                // Half of them look like RTP of a negotiated type.
                if i % 2 == 0 && d.len() >= 12 {
                    d[0] = 0x80;
                    d[1] &= 0x7F;
                    d[1] = if d[1] % 3 == 0 { 101 } else { 0 };
                }
                let from = sources[usize::from(src)];
                if on_rtcp_port {
                    core.on_rtcp(now, &d, from);
                } else {
                    core.on_rtp(now, &d, from);
                }
                if i % 3 == 0 {
                    full_tick(&mut core, now, &mut rtp, &mut rtcp);
                }
            }
            prop_assert_eq!(core.len(), 3);
        }
    }
}
