//! One call's RTP session, sans-IO: inbound packets to 16 kHz PCM frames and key presses,
//! outbound frames and key presses to packets paced at real time.
//!
//! The driver feeds [`RtpSession::receive`] with each datagram of the call's socket and calls
//! [`RtpSession::handle_timeout`] when [`RtpSession::next_deadline`] comes; it takes
//! [`MediaEvent`]s from [`RtpSession::poll_event`] and decoded audio from
//! [`RtpSession::poll_audio`], gives audio to send with
//! [`RtpSession::send_audio`] and puts what [`RtpSession::poll_transmit`] writes on the wire.
//!
//! - **Inbound**: RTP is parsed ([`RtpPacket::parse`]); the negotiated audio payload type goes
//!   through the [`JitterBuffer`] and [`FrameDecoder`] and a [`Reframer`] into 20 ms
//!   [`PcmFrame`]s (lost frames come out as silence), the `telephone-event` payload type
//!   through the [`DtmfReceiver`] into [`MediaEvent::Dtmf`].
//! - **RTCP** (RFC 3550 §6): [`RtpSession::poll_rtcp`] writes a compound report every
//!   [`SessionConfig::rtcp_interval`] (randomized over 0.5–1.5 × it, §6.3.1): an SR while we
//!   send, else an RR, with a report block about the peer's stream once it has sent, and an SDES
//!   CNAME. It goes to the RTP destination when RTCP is multiplexed
//!   ([`SessionConfig::rtcp_mux`], RFC 5761), else to where the peer's RTCP last came from, else
//!   to the RTP destination's port + 1. Incoming SRs and RRs (multiplexed on the RTP port, or
//!   through [`RtpSession::receive_rtcp`] from the RTCP port) feed [`RtpSession::remote_report`]:
//!   what the peer says it lost, its jitter, and the round trip from its LSR/DLSR echo of our
//!   SR. Reports allocate a few small buffers each (every few seconds, not per packet).
//! - **Symmetric RTP** (RFC 4961, "latching"): we send to the address in the peer's SDP until
//!   the first packet of a negotiated payload type arrives, then to that packet's source for
//!   the rest of the call, whatever a NAT did to the SDP's address. After latching, packets
//!   from another IP address are dropped; other ports of the same address are accepted (sipp
//!   replays its DTMF capture from a different port).
//! - **Outbound**: the [`Pacer`] ticks every 20 ms of media time against the local clock; each
//!   tick sends one packet: a DTMF event packet while a key press is being sent (RFC 4733:
//!   event packets take the place of audio), else the next queued frame encoded, else
//!   silence (so NATs and the peer's RTP timeout see a live stream). Sequence numbers grow by
//!   one per packet sent and timestamps by 20 ms of the codec clock per tick (160 for G.711
//!   and G.722, whose RTP clock is 8000 Hz though it samples at 16 kHz, RFC 3551 §4.5.2;
//!   960 for Opus, RFC 7587) from random starts (RFC 3550 §5.1);
//!   the first packet, and the first after a gap, carry the marker bit (RFC 3551 §4.1). A
//!   driver woken late sends the ticks it missed at once, up to
//!   [`SessionConfig::max_burst`]; beyond that, the missed ticks are skipped (timestamps keep
//!   following real time).
//! - **Inactivity**: no RTP for [`SessionConfig::inactivity_timeout`] while the peer is
//!   supposed to send gives one [`MediaEvent::Timeout`].
//!
//! Per-packet work allocates nothing: buffers are sized in [`RtpSession::new`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dtmf::{DtmfError, DtmfReceiver, DtmfSender, EventPacket};
use super::jitter::{JitterBuffer, JitterConfig, JitterConfigError, Playout};
use super::packet::{is_rtcp, RtpHeader, RtpPacket, HEADER_LEN};
use super::rtcp::{
    self, ReceiverReport, ReportBlock, RtcpPacket, SdesChunk, SenderInfo, SenderReport,
};
use crate::codec::g711;
use crate::codec::opus::{OpusDecoder, OpusEncoder};
use crate::codec::{AudioFormat, Encoding, FrameDecoder, FrameEncoder, PcmFrame, Reframer};
use crate::sip::sdp::Direction;

/// How long a key press is sent for by default (RFC 4733 senders typically use 100 ms or more).
pub const DEFAULT_DTMF_DURATION: Duration = Duration::from_millis(120);
/// RTCP report interval (RFC 3550 §6.2's recommended minimum).
pub const DEFAULT_RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The session's settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The negotiated audio format: 8 kHz G.711, G.722 ([`AudioFormat::G722`]) or 48 kHz
    /// Opus ([`AudioFormat::OPUS`]).
    pub format: AudioFormat,
    pub payload_type: u8,
    /// The negotiated `telephone-event` payload type, if any.
    pub dtmf_payload_type: Option<u8>,
    /// Where the peer's SDP says to send (until latching).
    pub remote: Option<SocketAddr>,
    /// Our direction from the offer/answer.
    pub direction: Direction,
    pub jitter: JitterConfig,
    /// `None`: never time out.
    pub inactivity_timeout: Option<Duration>,
    pub ssrc: u32,
    pub initial_sequence: u16,
    pub initial_timestamp: u32,
    /// Send silence when nothing is queued (keeps NAT bindings and the peer's timers alive).
    pub send_silence: bool,
    /// Most frames waiting to be sent; [`RtpSession::send_audio`] refuses beyond it.
    pub max_queue: usize,
    /// Most overdue ticks sent at once after a late wake-up.
    pub max_burst: u32,
    /// RTCP rides on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Mean time between our RTCP reports; `None`: send none.
    pub rtcp_interval: Option<Duration>,
}

impl SessionConfig {
    /// G.711 at 20 ms with the default jitter buffer, 30 s inactivity timeout, silence fill,
    /// a 1 s send queue, and the given identifiers (draw them at random, RFC 3550 §5.1).
    pub fn g711(
        format: AudioFormat,
        payload_type: u8,
        ssrc: u32,
        initial_sequence: u16,
        initial_timestamp: u32,
    ) -> Self {
        SessionConfig {
            format,
            payload_type,
            dtmf_payload_type: None,
            remote: None,
            direction: Direction::SendRecv,
            jitter: JitterConfig::default(),
            inactivity_timeout: Some(Duration::from_secs(30)),
            ssrc,
            initial_sequence,
            initial_timestamp,
            send_silence: true,
            max_queue: 50,
            max_burst: 3,
            rtcp_mux: false,
            rtcp_interval: Some(DEFAULT_RTCP_INTERVAL),
        }
    }
}

/// Why a session could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("only 8 kHz G.711 and 48 kHz Opus are carried over RTP")]
    UnsupportedFormat,
    #[error("the Opus codec could not be opened")]
    Opus,
    #[error(transparent)]
    Jitter(#[from] JitterConfigError),
    #[error(transparent)]
    Dtmf(#[from] DtmfError),
    #[error("no telephone-event payload type was negotiated")]
    NoDtmf,
    #[error("too many key presses waiting to be sent")]
    DtmfQueueFull,
}

/// Key presses queued for sending at most (a typed number plus `#`).
const MAX_PENDING_DTMF: usize = 32;

/// What the session noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A key went down (RFC 4733 event start; for barge-in).
    DtmfBegan { digit: char },
    /// A key press ended.
    Dtmf { digit: char, duration: Duration },
    /// Latched onto the peer's media source.
    Latched(SocketAddr),
    /// No RTP for the inactivity timeout.
    Timeout,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub received: u64,
    pub audio_received: u64,
    pub dtmf_packets_received: u64,
    pub rtcp_received: u64,
    pub malformed: u64,
    /// From an address other than the latched one (or a payload type not negotiated before
    /// latching).
    pub foreign: u64,
    pub unknown_payload_type: u64,
    pub sent: u64,
    pub dtmf_packets_sent: u64,
    pub frames_played: u64,
    pub frames_concealed: u64,
    /// Ticks skipped after a late wake-up.
    pub ticks_skipped: u64,
    /// Frames refused by `send_audio` (queue full).
    pub send_refused: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
    /// Decoded frames dropped because nobody polled them.
    pub audio_dropped: u64,
    /// Payload octets sent (RTP, for the SR).
    pub octets_sent: u64,
    /// RTCP compound packets sent.
    pub rtcp_sent: u64,
    /// RTCP datagrams that did not parse.
    pub rtcp_malformed: u64,
}

/// What the peer's RTCP says about our stream and its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// Sender reports received.
    pub sender_reports: u64,
    /// Receiver reports received.
    pub receiver_reports: u64,
    /// From the last report block about our SSRC: fraction lost (1/256), cumulative lost,
    /// interarrival jitter (timestamp units).
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub jitter: u32,
    /// Round trip from the last block that echoed one of our SRs (RFC 3550 §6.4.1).
    pub round_trip: Option<Duration>,
    /// Packets the peer said it had sent, in its last SR.
    pub peer_packets_sent: u32,
}

/// One tick of the pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The RTP timestamp of the media this tick carries.
    pub timestamp: u32,
    /// Ticks dropped just before this one (the driver was too late to send them).
    pub skipped: u32,
}

/// Real-time pacing of one outbound stream: a tick every `interval` from `start`, each
/// advancing the RTP timestamp by `interval` of media clock. Pure: the caller says what time
/// it is.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    step: u32,
    next_at: Instant,
    timestamp: u32,
    max_burst: u32,
}

impl Pacer {
    /// First tick at `start`. `max_burst` (at least 1) overdue ticks are delivered one by one
    /// after a late call; more than that are skipped.
    pub fn new(
        start: Instant,
        interval: Duration,
        clock_rate: u32,
        initial_timestamp: u32,
        max_burst: u32,
    ) -> Self {
        let step = (interval.as_micros() * u128::from(clock_rate) / 1_000_000) as u32;
        Pacer {
            interval,
            step,
            next_at: start,
            timestamp: initial_timestamp,
            max_burst: max_burst.max(1),
        }
    }

    /// When the next tick is due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Timestamp units per tick.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// The RTP timestamp of the next tick.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The media clock at `now` (interpolated back from the next tick).
    pub fn timestamp_at(&self, now: Instant) -> u32 {
        let ahead = self.next_at.saturating_duration_since(now);
        let units = ahead.as_nanos() * u128::from(self.step) / self.interval.as_nanos().max(1);
        self.timestamp
            .wrapping_sub(units.min(u128::from(u32::MAX)) as u32)
    }

    /// The next due tick, if one is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Option<Tick> {
        if now < self.next_at {
            return None;
        }
        let behind = now.duration_since(self.next_at).as_nanos() / self.interval.as_nanos().max(1);
        let mut skipped = 0;
        if behind >= u128::from(self.max_burst) {
            // Keep the last `max_burst - 1` overdue ticks plus the current one.
            let skip = (behind - u128::from(self.max_burst) + 1).min(u128::from(u32::MAX)) as u32;
            self.next_at += self.interval * skip;
            self.timestamp = self.timestamp.wrapping_add(self.step.wrapping_mul(skip));
            skipped = skip;
        }
        let tick = Tick {
            timestamp: self.timestamp,
            skipped,
        };
        self.next_at += self.interval;
        self.timestamp = self.timestamp.wrapping_add(self.step);
        Some(tick)
    }
}

/// A packet [`RtpSession::poll_transmit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
}

/// The payload coder of a session.
// One per session, made once and never moved: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Coder {
    /// G.711 and G.722, coded by [`FrameDecoder`]/[`FrameEncoder`]; a lost frame plays as
    /// silence. G.722's coder adapts, so it encodes silent frames rather than a fill byte.
    Frame {
        decoder: FrameDecoder,
        encoder: FrameEncoder,
    },
    /// Opus: a lost frame is concealed by libopus; silence is encoded like speech.
    Opus {
        decoder: Box<OpusDecoder>,
        encoder: Box<OpusEncoder>,
    },
}

/// Largest Opus payload accepted (RFC 6716 §3.2.1: a 20 ms frame is at most 1275 bytes).
const MAX_OPUS_PAYLOAD: usize = 1275;

/// The RTP session of one call. See the module docs.
#[derive(Debug)]
pub struct RtpSession {
    config: SessionConfig,
    jitter: JitterBuffer,
    coder: Coder,
    reframer: Reframer,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: DtmfSender,
    pacer: Pacer,
    sequence: u16,
    /// The next packet starts a talkspurt (marker bit).
    marker: bool,
    latched: Option<SocketAddr>,
    last_rx: Instant,
    timed_out: bool,
    send_queue: VecDeque<PcmFrame>,
    /// A key press waiting for the next tick, then its packets.
    /// Key presses waiting to be sent, in order.
    dtmf_pending: std::collections::VecDeque<(char, Duration)>,
    dtmf_packets: VecDeque<EventPacket>,
    events: VecDeque<MediaEvent>,
    /// Decoded 20 ms frames waiting for [`RtpSession::poll_audio`].
    audio: VecDeque<PcmFrame>,
    decoded: Box<[i16]>,
    payload: Box<[u8]>,
    silence: Box<[u8]>,
    counters: SessionCounters,
    rtcp: RtcpState,
}

/// Our side of RTCP.
#[derive(Debug)]
struct RtcpState {
    next_at: Instant,
    /// xorshift state for the interval's randomization.
    rng: u32,
    /// Packets sent at the previous report (an SR only when we sent since).
    sent_at_last: u64,
    /// The last SR we sent: its NTP middle bits, and when.
    last_sr: Option<(u32, Instant)>,
    /// Where the peer's RTCP came from (RTCP port), for symmetric RTCP.
    source: Option<SocketAddr>,
    cname: String,
    buf: Vec<u8>,
    remote: RemoteReport,
}

impl RtcpState {
    fn new(now: Instant, ssrc: u32, interval: Option<Duration>) -> Self {
        let mut state = RtcpState {
            next_at: now,
            rng: ssrc | 1,
            sent_at_last: 0,
            last_sr: None,
            source: None,
            cname: format!("vaani-{ssrc:08x}"),
            buf: Vec::with_capacity(256),
            remote: RemoteReport::default(),
        };
        if let Some(i) = interval {
            state.next_at = now + state.spread(i);
        }
        state
    }

    /// `interval` × a factor drawn from [0.5, 1.5) (RFC 3550 §6.3.1).
    fn spread(&mut self, interval: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let permille = 500 + u64::from(self.rng % 1000);
        Duration::from_nanos(
            u64::try_from(interval.as_nanos().saturating_mul(u128::from(permille)) / 1000)
                .unwrap_or(u64::MAX),
        )
    }
}

/// Most events held for the driver before the oldest are dropped.
const MAX_EVENTS: usize = 256;
/// Most decoded frames held for the driver (320 ms) before the oldest are dropped.
const MAX_AUDIO: usize = 16;

impl RtpSession {
    /// A session whose clock starts at `now` (first packet sent at `now`).
    pub fn new(now: Instant, config: SessionConfig) -> Result<Self, SessionError> {
        let opus = match (config.format.encoding, config.format.rate.hz()) {
            (Encoding::Pcmu | Encoding::Pcma, 8000) | (Encoding::G722, 16_000) => false,
            (Encoding::Opus, 48_000) => true,
            _ => return Err(SessionError::UnsupportedFormat),
        };
        let mut jcfg = config.jitter;
        let clock = config.format.rtp_clock();
        jcfg.clock_rate = clock;
        if opus {
            jcfg.max_payload = jcfg.max_payload.max(MAX_OPUS_PAYLOAD);
        }
        let jitter = JitterBuffer::new(jcfg)?;
        let (coder, decoded_len, frame_bytes) = if opus {
            let coder = Coder::Opus {
                decoder: Box::new(OpusDecoder::new().map_err(|_| SessionError::Opus)?),
                encoder: Box::new(OpusEncoder::new().map_err(|_| SessionError::Opus)?),
            };
            (coder, OpusDecoder::max_output(), MAX_OPUS_PAYLOAD)
        } else {
            let decoder = FrameDecoder::new(config.format);
            let encoder = FrameEncoder::new(config.format);
            let decoded_len = decoder.output_len(jcfg.max_payload) + 16;
            let frame_bytes = encoder.output_len(crate::codec::FRAME_SAMPLES);
            (Coder::Frame { decoder, encoder }, decoded_len, frame_bytes)
        };
        let decoded = vec![0i16; decoded_len].into_boxed_slice();
        let payload = vec![0u8; frame_bytes.max(4)].into_boxed_slice();
        // G.711's silence; Opus and G.722 encode silent frames instead (none here).
        let silence = match config.format.encoding {
            Encoding::Pcma => vec![g711::linear_to_alaw(0); frame_bytes],
            Encoding::Opus | Encoding::G722 => Vec::new(),
            _ => vec![g711::linear_to_ulaw(0); frame_bytes],
        }
        .into_boxed_slice();
        let interval = Duration::from_millis(u64::from(crate::codec::FRAME_MS));
        let dtmf_tx = DtmfSender::new(clock, interval, 10)?;
        let pacer = Pacer::new(
            now,
            interval,
            clock,
            config.initial_timestamp,
            config.max_burst,
        );
        Ok(RtpSession {
            jitter,
            coder,
            reframer: Reframer::new(),
            dtmf_rx: DtmfReceiver::new(Duration::from_millis(500)),
            dtmf_tx,
            pacer,
            sequence: config.initial_sequence,
            marker: true,
            latched: None,
            last_rx: now,
            timed_out: false,
            send_queue: VecDeque::with_capacity(config.max_queue),
            dtmf_pending: std::collections::VecDeque::new(),
            dtmf_packets: VecDeque::new(),
            events: VecDeque::with_capacity(16),
            audio: VecDeque::with_capacity(MAX_AUDIO),
            decoded,
            payload,
            silence,
            counters: SessionCounters::default(),
            rtcp: RtcpState::new(now, config.ssrc, config.rtcp_interval),
            config,
        })
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// The address packets go to now: the latched source, else the SDP's.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched
            .or(self.config.remote)
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Frames queued for sending.
    pub fn queued(&self) -> usize {
        self.send_queue.len()
    }

    fn push_event(&mut self, e: MediaEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// A re-negotiation (re-INVITE): new direction and, if it changed, the SDP's address (which
    /// also drops the latch, to learn the new source). The inactivity timer restarts.
    pub fn update(&mut self, now: Instant, remote: Option<SocketAddr>, direction: Direction) {
        let usable = remote.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        if usable.is_some() && usable != self.config.remote {
            self.config.remote = usable;
            self.latched = None;
        }
        if !direction.sends() {
            self.send_queue.clear();
        }
        if direction.sends() && !self.config.direction.sends() {
            self.marker = true;
        }
        self.config.direction = direction;
        self.last_rx = now;
        self.timed_out = false;
    }

    /// One datagram from the call's socket.
    pub fn receive(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        if is_rtcp(datagram) {
            self.on_rtcp(now, datagram, from);
            return;
        }
        let Ok(packet) = RtpPacket::parse(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        let pt = packet.payload_type;
        let negotiated =
            pt == self.config.payload_type || Some(pt) == self.config.dtmf_payload_type;
        match self.latched {
            None if negotiated && from.port() != 0 => {
                self.latched = Some(from);
                self.push_event(MediaEvent::Latched(from));
            }
            None => {
                self.counters.foreign += 1;
                return;
            }
            Some(l) if l.ip() != from.ip() => {
                self.counters.foreign += 1;
                return;
            }
            Some(_) => {}
        }
        self.counters.received += 1;
        if !negotiated {
            self.counters.unknown_payload_type += 1;
            return;
        }
        self.last_rx = now;
        if !self.config.direction.receives() {
            return;
        }
        if Some(pt) == self.config.dtmf_payload_type {
            self.counters.dtmf_packets_received += 1;
            if let Ok(notices) = self.dtmf_rx.push(now, &packet.header(), packet.payload) {
                for n in notices {
                    self.on_dtmf_notice(n);
                }
            }
        } else {
            self.counters.audio_received += 1;
            self.jitter.push(now, &packet);
        }
    }

    /// One datagram from the RTCP port (RTCP not multiplexed): our reports then go back to
    /// where it came from.
    pub fn receive_rtcp(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        if self.on_rtcp(now, datagram, from) {
            self.rtcp.source = Some(from);
        }
    }

    /// What the peer's RTCP said.
    pub fn remote_report(&self) -> RemoteReport {
        self.rtcp.remote
    }

    /// Reads a compound RTCP datagram; `true` when it was acceptable.
    fn on_rtcp(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) -> bool {
        self.counters.rtcp_received += 1;
        if let Some(l) = self.latched {
            if l.ip() != from.ip() {
                self.counters.foreign += 1;
                return false;
            }
        }
        let Ok(packets) = rtcp::parse_compound(datagram) else {
            self.counters.rtcp_malformed += 1;
            return false;
        };
        for p in &packets {
            let blocks = match p {
                RtcpPacket::SenderReport(sr) => {
                    self.rtcp.remote.sender_reports += 1;
                    self.rtcp.remote.peer_packets_sent = sr.info.packet_count;
                    if self.jitter.stats().ssrc() == sr.ssrc {
                        self.jitter
                            .stats_mut()
                            .on_sender_report(now, sr.info.ntp_timestamp);
                    }
                    &sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => {
                    self.rtcp.remote.receiver_reports += 1;
                    &rr.reports
                }
                _ => continue,
            };
            for b in blocks.iter().filter(|b| b.ssrc == self.config.ssrc) {
                let r = &mut self.rtcp.remote;
                r.fraction_lost = b.fraction_lost;
                r.cumulative_lost = b.cumulative_lost;
                r.jitter = b.jitter;
                if let Some((lsr, sent)) = self.rtcp.last_sr {
                    if b.last_sr == lsr && lsr != 0 {
                        let dlsr = Duration::from_nanos(
                            u64::from(b.delay_since_last_sr) * 1_000_000_000 / 65_536,
                        );
                        r.round_trip =
                            Some(now.saturating_duration_since(sent).saturating_sub(dlsr));
                    }
                }
            }
        }
        true
    }

    /// Where our RTCP goes (see the module docs).
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.config.rtcp_mux {
            return self.destination();
        }
        if let Some(s) = self.rtcp.source {
            return Some(s);
        }
        let mut d = self.destination()?;
        d.set_port(d.port().checked_add(1)?);
        Some(d)
    }

    /// Writes our next RTCP report into `out` when one is due, and says where it goes.
    /// `wallclock` is the time since the Unix epoch (for the SR's NTP timestamp). Call on each
    /// tick; the report interval is kept here.
    pub fn poll_rtcp(
        &mut self,
        now: Instant,
        wallclock: Duration,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let interval = self.config.rtcp_interval?;
        if now < self.rtcp.next_at {
            return None;
        }
        let wait = self.rtcp.spread(interval);
        self.rtcp.next_at = now + wait;
        let to = self.rtcp_destination()?;
        let block =
            (self.jitter.stats().received() > 0).then(|| self.jitter.stats_mut().report_block(now));
        let reports: Vec<ReportBlock> = block.into_iter().collect();
        let sending = self.counters.sent > self.rtcp.sent_at_last;
        self.rtcp.sent_at_last = self.counters.sent;
        let first = if sending {
            let ntp = rtcp::ntp_from_unix(wallclock);
            self.rtcp.last_sr = Some((rtcp::ntp_middle(ntp), now));
            RtcpPacket::SenderReport(SenderReport {
                ssrc: self.config.ssrc,
                info: SenderInfo {
                    ntp_timestamp: ntp,
                    rtp_timestamp: self.pacer.timestamp_at(now),
                    packet_count: self.counters.sent as u32,
                    octet_count: self.counters.octets_sent as u32,
                },
                reports,
            })
        } else {
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: self.config.ssrc,
                reports,
            })
        };
        let sdes = RtcpPacket::SourceDescription(vec![SdesChunk::cname(
            self.config.ssrc,
            &self.rtcp.cname,
        )]);
        self.rtcp.buf.clear();
        rtcp::write_compound(&[first, sdes], &mut self.rtcp.buf).ok()?;
        let len = self.rtcp.buf.len();
        out.get_mut(..len)?.copy_from_slice(&self.rtcp.buf);
        self.counters.rtcp_sent += 1;
        Some(Transmit { to, len })
    }

    fn on_dtmf_notice(&mut self, n: super::dtmf::DtmfNotice) {
        use super::dtmf::DtmfNotice;
        let Some(digit) = n.digit() else {
            return;
        };
        let e = match n {
            DtmfNotice::Began { .. } => MediaEvent::DtmfBegan { digit },
            DtmfNotice::Ended { duration, .. } => MediaEvent::Dtmf {
                digit,
                duration: Duration::from_micros(
                    u64::from(duration) * 1_000_000 / u64::from(self.config.format.rtp_clock()),
                ),
            },
        };
        self.push_event(e);
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut t = self.jitter.poll_timeout();
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        consider(self.dtmf_rx.poll_timeout());
        if let (Some(limit), false, true) = (
            self.config.inactivity_timeout,
            self.timed_out,
            self.config.direction.receives(),
        ) {
            consider(Some(self.last_rx + limit));
        }
        if self.config.direction.sends() {
            consider(Some(self.pacer.next_at()));
        }
        t
    }

    /// Plays out what is due: decoded frames, key-press timeouts, the inactivity timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.play_out(now);
        if let Some(n) = self.dtmf_rx.poll(now) {
            self.on_dtmf_notice(n);
        }
        if let Some(limit) = self.config.inactivity_timeout {
            if !self.timed_out
                && self.config.direction.receives()
                && now.saturating_duration_since(self.last_rx) >= limit
            {
                self.timed_out = true;
                self.push_event(MediaEvent::Timeout);
            }
        }
    }

    fn play_out(&mut self, now: Instant) {
        // Internal samples per RTP timestamp unit (2 for G.711 and G.722, 0 for Opus, which
        // conceals by itself).
        let rate_ratio = crate::codec::INTERNAL_RATE.hz() / self.config.format.rtp_clock().max(1);
        loop {
            let samples = match self.jitter.pop(now) {
                Playout::Frame(f) => {
                    self.counters.frames_played += 1;
                    match &mut self.coder {
                        Coder::Frame { decoder, .. } => {
                            decoder.decode(f.payload, &mut self.decoded).unwrap_or(0)
                        }
                        Coder::Opus { decoder, .. } => decoder
                            .decode_into(Some(f.payload), 0, &mut self.decoded)
                            .unwrap_or(0),
                    }
                }
                Playout::Missing { duration, .. } => {
                    self.counters.frames_concealed += 1;
                    match &mut self.coder {
                        Coder::Frame { .. } => {
                            let n =
                                (duration as usize * rate_ratio as usize).min(self.decoded.len());
                            self.decoded[..n].fill(0);
                            n
                        }
                        // `duration` is in 48 kHz timestamp units: samples to conceal.
                        Coder::Opus { decoder, .. } => decoder
                            .decode_into(None, duration as usize, &mut self.decoded)
                            .unwrap_or(0),
                    }
                }
                Playout::NotYet { .. } => break,
            };
            let audio = &mut self.audio;
            let counters = &mut self.counters;
            self.reframer.push(&self.decoded[..samples], |frame| {
                if audio.len() >= MAX_AUDIO {
                    audio.pop_front();
                    counters.audio_dropped += 1;
                }
                audio.push_back(frame.clone());
            });
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next 20 ms of the peer's audio at 16 kHz (silence where packets were lost).
    pub fn poll_audio(&mut self) -> Option<PcmFrame> {
        let frame = self.audio.pop_front();
        if self.audio.is_empty() {
            // Back to the ring's first slot: a queue that is usually near empty then keeps
            // reusing the same (cached) memory instead of walking through all of it.
            self.audio.clear();
        }
        frame
    }

    /// Queues a 20 ms frame to send; `false` (and dropped) when the queue is full or we may
    /// not send (hold).
    pub fn send_audio(&mut self, frame: &PcmFrame) -> bool {
        if self.send_queue.len() >= self.config.max_queue || !self.config.direction.sends() {
            self.counters.send_refused += 1;
            return false;
        }
        self.send_queue.push_back(frame.clone());
        true
    }

    /// Drops everything queued (barge-in).
    pub fn clear_audio(&mut self) {
        self.send_queue.clear();
    }

    /// Sends key `digit` for `duration` as RFC 4733 events, starting at the next tick. Presses
    /// queue up: each is sent after the one before it has ended.
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) -> Result<(), SessionError> {
        if self.config.dtmf_payload_type.is_none() {
            return Err(SessionError::NoDtmf);
        }
        // Validate now, plan at the tick that starts it.
        let _ = self.dtmf_tx.plan(digit, duration, 0)?;
        if self.dtmf_pending.len() >= MAX_PENDING_DTMF {
            return Err(SessionError::DtmfQueueFull);
        }
        self.dtmf_pending.push_back((digit, duration));
        Ok(())
    }

    /// Writes the next due packet into `out` (room for a header and a 20 ms payload: 1500
    /// bytes is plenty) and says where it goes; `None` when nothing is due. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        loop {
            let tick = self.pacer.tick(now)?;
            if tick.skipped > 0 {
                self.counters.ticks_skipped += u64::from(tick.skipped);
                self.marker = true;
            }
            if let Some(t) = self.on_tick(tick, out) {
                return Some(t);
            }
        }
    }

    /// What one tick sends.
    fn on_tick(&mut self, tick: Tick, out: &mut [u8]) -> Option<Transmit> {
        let sends = self.config.direction.sends();
        // Every tick consumes the frame of its 20 ms, sent or not, so latency stays put.
        let frame = self.send_queue.pop_front();
        if self.send_queue.is_empty() {
            // As in `poll_audio`: reuse the ring's first slot.
            self.send_queue.clear();
        }
        if !sends {
            self.marker = true;
            return None;
        }
        if self.dtmf_packets.is_empty() {
            if let Some((digit, duration)) = self.dtmf_pending.pop_front() {
                if let Ok(plan) = self.dtmf_tx.plan(digit, duration, tick.timestamp) {
                    self.dtmf_packets.extend(plan);
                }
            }
        }
        let Some(to) = self.destination() else {
            // Nowhere to send yet: keep the timeline; the next packet starts a talkspurt.
            self.dtmf_packets.pop_front();
            self.marker = true;
            return None;
        };
        if let Some(ev) = self.dtmf_packets.pop_front() {
            let pt = self.config.dtmf_payload_type.unwrap_or(101);
            let header = ev.header(self.config.ssrc, pt, self.sequence);
            let len = header.write(&ev.event.to_bytes(), out).ok()?;
            self.counters.octets_sent += 4;
            self.sequence = self.sequence.wrapping_add(1);
            self.counters.sent += 1;
            self.counters.dtmf_packets_sent += 1;
            // The audio after an event starts a new talkspurt.
            self.marker = true;
            return Some(Transmit { to, len });
        }
        if frame.is_none() && !self.config.send_silence {
            self.marker = true;
            return None;
        }
        let encoded = match (&mut self.coder, &frame) {
            (Coder::Frame { encoder, .. }, Some(f)) => {
                encoder.encode(&f.samples, &mut self.payload).ok()
            }
            // G.722 adapts to what it codes: silence is coded, not filled in.
            (Coder::Frame { encoder, .. }, None) if encoder.format().encoding == Encoding::G722 => {
                encoder
                    .encode(&PcmFrame::silence().samples, &mut self.payload)
                    .ok()
            }
            (Coder::Frame { .. }, None) => None,
            (Coder::Opus { encoder, .. }, f) => {
                let silent = PcmFrame::silence();
                match encoder.encode(f.as_ref().unwrap_or(&silent)) {
                    Ok(p) => self.payload.get_mut(..p.len()).map(|dst| {
                        dst.copy_from_slice(p);
                        p.len()
                    }),
                    Err(_) => None,
                }
            }
        };
        let payload: &[u8] = match encoded {
            Some(n) => &self.payload[..n],
            None => &self.silence,
        };
        if payload.is_empty() {
            // Opus that failed to encode: nothing to send this tick.
            self.marker = true;
            return None;
        }
        let header = RtpHeader {
            marker: self.marker,
            payload_type: self.config.payload_type,
            sequence: self.sequence,
            timestamp: tick.timestamp,
            ssrc: self.config.ssrc,
        };
        if out.len() < HEADER_LEN + payload.len() {
            return None;
        }
        let len = header.write(payload, out).ok()?;
        self.sequence = self.sequence.wrapping_add(1);
        self.marker = false;
        self.counters.sent += 1;
        self.counters.octets_sent += payload.len() as u64;
        Some(Transmit { to, len })
    }
}
