//! A sans-IO jitter buffer for one inbound audio stream.
//!
//! The driver calls [`JitterBuffer::push`] with each RTP packet as it arrives and
//! [`JitterBuffer::pop`] whenever [`JitterBuffer::poll_timeout`] comes due (or simply every
//! 20 ms), draining until [`Playout::NotYet`]. Each pop yields the next [`Frame`] in sequence,
//! a [`Playout::Missing`] for a frame whose time has come but whose packet has not (loss: the
//! consumer runs packet-loss concealment or plays silence), or `NotYet`.
//!
//! # Playout schedule
//!
//! The first packet of a source anchors the media clock to local time: its timestamp plays at
//! `arrival + target_delay`, and every later timestamp `ts` at
//! `anchor + (ts − anchor_ts) / clock_rate`. Frames leave in sequence order as their timestamp
//! comes due, so reordering within the target delay is invisible and each packet plays at most
//! once. A packet whose timestamp has already been played (or declared missing) is *late* and
//! dropped, with two exceptions that re-anchor the schedule (a *resync*):
//!
//! - the newest packet of the stream arrives late: the network delay grew past the target
//!   (or the sender's timestamps jumped back), so the delay is raised to fit it;
//! - a sequence jump of more than 3000 confirmed by a second consecutive packet (RFC 3550 A.1's
//!   rule): the sender restarted.
//!
//! When more than `max_delay` of audio is waiting (the delay grew after a spike, or the sender's
//! clock runs fast), the oldest frames are dropped back to `target_delay`: latency matters more
//! to a voice agent than the stale audio. A new SSRC resets everything (what was still waiting
//! from the old source, at most about `target_delay`, is dropped), except that stray packets of
//! the SSRC just replaced are dropped rather than flipping back. A confirmed sequence restart
//! does the same without changing the source.
//!
//! Sequence numbers and timestamps are unwrapped to 64 bits against the newest packet, so the
//! 16-bit sequence and 32-bit timestamp wraps are ordinary arithmetic.
//!
//! # Memory
//!
//! All storage (`capacity` slots of `max_payload` bytes) is allocated in [`JitterBuffer::new`];
//! push and pop never allocate.
//!
//! Payload types are not interpreted: the driver routes `telephone-event` packets to
//! [`super::dtmf::DtmfReceiver`] and audio (and comfort noise, if negotiated) here. Diverted
//! event packets leave gaps in the sequence numbers; playout follows timestamps, so a gap only
//! becomes `Missing` where the audio timestamps have one too.

use std::time::{Duration, Instant};

use super::packet::RtpPacket;
use super::stats::ReceiverStats;

/// A.1: forward sequence jump beyond which a packet is a restart, not a loss.
const MAX_DROPOUT: u16 = 3000;
/// A.1: backward sequence jump within which a packet is reordered, not a restart.
const MAX_MISORDER: u16 = 100;
/// Ignore measured packet durations longer than this (in ms); they are gaps, not ptime.
const MAX_PTIME_MS: i64 = 200;

/// Configuration, checked by [`JitterBuffer::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Media clock rate of the payload (8000 for G.711).
    pub clock_rate: u32,
    /// Delay between a stream's first packet and its playout.
    pub target_delay: Duration,
    /// Most audio held before the oldest is dropped back to `target_delay`.
    pub max_delay: Duration,
    /// Slots: packets held at once (reordering plus `max_delay`).
    pub capacity: usize,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// Packet duration assumed until two consecutive packets show the real one.
    pub ptime: Duration,
}

impl Default for JitterConfig {
    /// G.711 at 8 kHz, 20 ms packets, 60 ms target, 200 ms cap, 32 slots of 512 bytes.
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            target_delay: Duration::from_millis(60),
            max_delay: Duration::from_millis(200),
            capacity: 32,
            max_payload: 512,
            ptime: Duration::from_millis(20),
        }
    }
}

/// A configuration [`JitterBuffer::new`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JitterConfigError {
    /// Clock rate of zero.
    #[error("jitter buffer clock_rate must be positive")]
    ClockRate,
    /// `max_delay` below `target_delay + ptime`.
    #[error("jitter buffer max_delay must be at least target_delay + ptime")]
    MaxDelay,
    /// Capacity outside 2..=4096 or too small to hold `max_delay` of packets.
    #[error("jitter buffer capacity must be 2..=4096 and hold max_delay of packets")]
    Capacity,
    /// `max_payload` outside 1..=65535.
    #[error("jitter buffer max_payload must be 1..=65535")]
    MaxPayload,
    /// `ptime` of zero or over 200 ms.
    #[error("jitter buffer ptime must be 1..=200 ms")]
    Ptime,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Buffered,
    /// Stored, after a new SSRC reset the buffer.
    Reset,
    /// Stored, after the schedule was re-anchored on it.
    Resynced,
    /// Already buffered: dropped.
    Duplicate,
    /// Its time has passed (played or declared missing): dropped.
    Late,
    /// From the SSRC that was just replaced: dropped.
    StaleSource,
    /// A sequence jump not (yet) confirmed by a second packet: dropped.
    Jump,
    /// Payload longer than `max_payload`: dropped.
    TooLarge,
}

/// One packet's worth of media, in playout order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit (start of a talkspurt).
    pub marker: bool,
    /// The payload.
    pub payload: &'a [u8],
}

/// The result of [`JitterBuffer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next frame.
    Frame(Frame<'a>),
    /// A frame's time has come and its packet has not: conceal it.
    Missing {
        /// Its RTP timestamp.
        timestamp: u32,
        /// Its duration in timestamp units.
        duration: u32,
    },
    /// Nothing due yet; pop again at `next` (None: no stream yet).
    NotYet {
        /// When the next frame comes due.
        next: Option<Instant>,
    },
}

/// Running counts, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterCounters {
    /// Packets given to `push`.
    pub pushed: u64,
    /// Frames played.
    pub played: u64,
    /// Frames declared missing.
    pub missing: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Frames dropped to bound the delay or for lack of slots.
    pub dropped: u64,
    /// SSRC changes.
    pub resets: u64,
    /// Schedule re-anchorings.
    pub resyncs: u64,
    /// Other packets refused (stale source, unconfirmed jump, too large).
    pub refused: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Extended sequence number held, or `EMPTY`.
    seq: i64,
    ts: i64,
    payload_type: u8,
    marker: bool,
    len: u16,
}

const EMPTY: i64 = i64::MIN;

/// The jitter buffer of one inbound stream. See the module docs.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Box<[Slot]>,
    data: Box<[u8]>,
    ssrc: Option<u32>,
    previous_ssrc: Option<u32>,
    /// Newest packet (extended sequence and timestamp).
    highest_seq: i64,
    highest_ts: i64,
    /// Next frame to play out.
    next_seq: i64,
    next_ts: i64,
    /// `(instant, timestamp)`: when that extended timestamp plays.
    anchor: Option<(Instant, i64)>,
    /// Measured (or assumed) packet duration, in timestamp units.
    frame_ts: i64,
    /// Something was played or declared missing since the last (re)anchoring.
    started: bool,
    /// The last pop was Missing with nothing waiting behind it.
    underrun: bool,
    /// A.1 restart detection: the sequence number that would confirm a jump.
    bad_seq: Option<u16>,
    stats: ReceiverStats,
    counters: JitterCounters,
}

impl JitterBuffer {
    /// Allocates a buffer for `config`.
    pub fn new(config: JitterConfig) -> Result<Self, JitterConfigError> {
        if config.clock_rate == 0 {
            return Err(JitterConfigError::ClockRate);
        }
        if config.ptime.is_zero() || config.ptime > Duration::from_millis(MAX_PTIME_MS as u64) {
            return Err(JitterConfigError::Ptime);
        }
        if config.max_delay < config.target_delay + config.ptime {
            return Err(JitterConfigError::MaxDelay);
        }
        let frames_in_max = (config.max_delay.as_micros() / config.ptime.as_micros()) as usize;
        if !(2..=4096).contains(&config.capacity) || config.capacity < frames_in_max + 2 {
            return Err(JitterConfigError::Capacity);
        }
        if config.max_payload == 0 || config.max_payload > usize::from(u16::MAX) {
            return Err(JitterConfigError::MaxPayload);
        }
        let empty = Slot {
            seq: EMPTY,
            ts: 0,
            payload_type: 0,
            marker: false,
            len: 0,
        };
        Ok(JitterBuffer {
            config,
            slots: vec![empty; config.capacity].into_boxed_slice(),
            data: vec![0; config.capacity * config.max_payload].into_boxed_slice(),
            ssrc: None,
            previous_ssrc: None,
            highest_seq: 0,
            highest_ts: 0,
            next_seq: 0,
            next_ts: 0,
            anchor: None,
            frame_ts: ts_units(config.ptime, config.clock_rate),
            started: false,
            underrun: false,
            bad_seq: None,
            stats: ReceiverStats::new(0, config.clock_rate),
            counters: JitterCounters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// The current source, once a packet has arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// RFC 3550 reception statistics of the current source.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Mutable statistics (to record SRs and take report blocks).
    pub fn stats_mut(&mut self) -> &mut ReceiverStats {
        &mut self.stats
    }

    /// Running counts.
    pub fn counters(&self) -> JitterCounters {
        self.counters
    }

    /// Packets waiting to be played.
    pub fn buffered(&self) -> usize {
        if self.anchor.is_none() {
            return 0;
        }
        (self.next_seq..=self.highest_seq)
            .filter(|&s| self.slot(s).seq == s)
            .count()
    }

    /// When the next pop has something to give (None before the first packet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.anchor
            .map(|a| playout_at(a, self.next_ts, self.config.clock_rate))
    }

    fn slot_index(&self, seq: i64) -> usize {
        seq.rem_euclid(self.config.capacity as i64) as usize
    }

    fn slot(&self, seq: i64) -> &Slot {
        &self.slots[self.slot_index(seq)]
    }

    fn extend_seq(&self, seq: u16) -> i64 {
        self.highest_seq + i64::from(seq.wrapping_sub(self.highest_seq as u16) as i16)
    }

    fn extend_ts(&self, ts: u32) -> i64 {
        self.highest_ts + i64::from(ts.wrapping_sub(self.highest_ts as u32) as i32)
    }

    fn clear_slots(&mut self) {
        for s in self.slots.iter_mut() {
            s.seq = EMPTY;
        }
    }

    /// Re-anchors the schedule so that the packet `(seq, ts)` plays `target_delay` from now.
    fn anchor_on(&mut self, now: Instant, seq: i64, ts: i64) {
        self.next_seq = seq;
        self.next_ts = ts;
        self.anchor = Some((now + self.config.target_delay, ts));
        self.started = false;
        self.underrun = false;
    }

    /// Takes one arriving packet.
    pub fn push(&mut self, now: Instant, packet: &RtpPacket<'_>) -> PushOutcome {
        self.counters.pushed += 1;
        let mut outcome = PushOutcome::Buffered;
        match self.ssrc {
            Some(current) if current == packet.ssrc => {}
            Some(_) if self.previous_ssrc == Some(packet.ssrc) => {
                self.counters.refused += 1;
                return PushOutcome::StaleSource;
            }
            current => {
                if current.is_some() {
                    self.counters.resets += 1;
                    outcome = PushOutcome::Reset;
                }
                self.previous_ssrc = current;
                self.ssrc = Some(packet.ssrc);
                self.stats = ReceiverStats::new(packet.ssrc, self.config.clock_rate);
                self.clear_slots();
                self.anchor = None;
                self.bad_seq = None;
                self.frame_ts = ts_units(self.config.ptime, self.config.clock_rate);
            }
        }
        self.stats.on_packet(now, packet.sequence, packet.timestamp);
        if packet.payload.len() > self.config.max_payload {
            self.counters.refused += 1;
            return PushOutcome::TooLarge;
        }

        if self.anchor.is_none() {
            self.highest_seq = i64::from(packet.sequence);
            self.highest_ts = i64::from(packet.timestamp);
            self.anchor_on(now, self.highest_seq, self.highest_ts);
            self.store(self.highest_seq, self.highest_ts, packet);
            return outcome;
        }

        // Restart detection on the raw 16-bit distance, before unwrapping.
        let udelta = packet.sequence.wrapping_sub(self.highest_seq as u16);
        if (MAX_DROPOUT..u16::MAX - MAX_MISORDER).contains(&udelta) {
            if self.bad_seq == Some(packet.sequence) {
                // Two in a row: the sender restarted its sequence (and likely timestamps).
                self.bad_seq = None;
                self.clear_slots();
                self.highest_seq = i64::from(packet.sequence);
                self.highest_ts = i64::from(packet.timestamp);
                self.anchor_on(now, self.highest_seq, self.highest_ts);
                self.store(self.highest_seq, self.highest_ts, packet);
                self.counters.resyncs += 1;
                return PushOutcome::Resynced;
            }
            self.bad_seq = Some(packet.sequence.wrapping_add(1));
            self.counters.refused += 1;
            return PushOutcome::Jump;
        }
        self.bad_seq = None;

        let seq = self.extend_seq(packet.sequence);
        let ts = self.extend_ts(packet.timestamp);
        let newest = seq > self.highest_seq;
        if newest {
            if seq == self.highest_seq + 1 {
                let d = ts - self.highest_ts;
                if d > 0 && d <= i64::from(self.config.clock_rate) * MAX_PTIME_MS / 1000 {
                    self.frame_ts = d;
                }
            }
            self.highest_seq = seq;
            self.highest_ts = ts;
        }

        let capacity = self.config.capacity as i64;
        if !self.started && seq < self.next_seq && self.highest_seq - seq < capacity {
            // Reordered before playout began: start from the earlier packet instead.
            self.next_seq = seq;
            self.next_ts = self.next_ts.min(ts);
        }
        if seq < self.next_seq || (self.started && ts < self.next_ts) {
            if newest {
                // The stream is behind its schedule: raise the delay to fit.
                self.anchor_on(now, seq, ts);
                self.store(seq, ts, packet);
                self.counters.resyncs += 1;
                return PushOutcome::Resynced;
            }
            self.counters.late += 1;
            return PushOutcome::Late;
        }
        if self.slot(seq).seq == seq {
            self.counters.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        if seq - self.next_seq >= capacity {
            // No slot free for it: give up the oldest frames.
            let new_next = seq - capacity + 1;
            let dropped = (self.next_seq..new_next)
                .filter(|&s| self.slot(s).seq == s)
                .count();
            self.counters.dropped += dropped as u64;
            self.next_seq = new_next;
        }
        self.store(seq, ts, packet);
        outcome
    }

    fn store(&mut self, seq: i64, ts: i64, packet: &RtpPacket<'_>) {
        let index = self.slot_index(seq);
        let len = packet.payload.len();
        let start = index * self.config.max_payload;
        self.data[start..start + len].copy_from_slice(packet.payload);
        self.slots[index] = Slot {
            seq,
            ts,
            payload_type: packet.payload_type,
            marker: packet.marker,
            len: len as u16,
        };
    }

    /// The lowest-sequence waiting packet at or after `next_seq`.
    fn head(&self) -> Option<i64> {
        (self.next_seq..=self.highest_seq).find(|&s| self.slot(s).seq == s)
    }

    /// Gives the next frame if its time has come.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        let Some(anchor) = self.anchor else {
            return Playout::NotYet { next: None };
        };
        let due = playout_at(anchor, self.next_ts, self.config.clock_rate);
        if now < due {
            return Playout::NotYet { next: Some(due) };
        }
        let max_ts = ts_units(self.config.max_delay, self.config.clock_rate);
        if self.highest_ts - self.next_ts > max_ts {
            self.trim(now);
        }
        match self.head() {
            Some(seq) if self.slot(seq).ts <= self.next_ts => {
                let index = self.slot_index(seq);
                let slot = self.slots[index];
                self.slots[index].seq = EMPTY;
                self.next_seq = seq + 1;
                self.next_ts = self.next_ts.max(slot.ts + self.frame_ts);
                self.started = true;
                self.underrun = false;
                self.counters.played += 1;
                let start = index * self.config.max_payload;
                Playout::Frame(Frame {
                    sequence: seq as u16,
                    timestamp: slot.ts as u32,
                    payload_type: slot.payload_type,
                    marker: slot.marker,
                    payload: &self.data[start..start + slot.len as usize],
                })
            }
            head => {
                let timestamp = self.next_ts as u32;
                self.next_ts += self.frame_ts;
                self.started = true;
                self.underrun = head.is_none();
                self.counters.missing += 1;
                Playout::Missing {
                    timestamp,
                    duration: self.frame_ts as u32,
                }
            }
        }
    }

    /// Drops the oldest waiting frames so that `target_delay` of audio remains, and plays the
    /// new head now.
    fn trim(&mut self, now: Instant) {
        let keep_from =
            self.highest_ts - ts_units(self.config.target_delay, self.config.clock_rate);
        let mut dropped = 0;
        let mut new_head = None;
        for s in self.next_seq..=self.highest_seq {
            let index = self.slot_index(s);
            if self.slots[index].seq != s {
                continue;
            }
            if self.slots[index].ts < keep_from && s != self.highest_seq {
                self.slots[index].seq = EMPTY;
                dropped += 1;
            } else if new_head.is_none() {
                new_head = Some((s, self.slots[index].ts));
            }
        }
        self.counters.dropped += dropped;
        if let Some((seq, ts)) = new_head {
            self.next_seq = seq;
            self.next_ts = ts;
            self.anchor = Some((now, ts));
        }
    }
}

/// When extended timestamp `ts` plays, given the anchor `(instant, timestamp)`.
fn playout_at((at, anchor_ts): (Instant, i64), ts: i64, clock_rate: u32) -> Instant {
    let offset_us = (i128::from(ts - anchor_ts) * 1_000_000) / i128::from(clock_rate);
    let magnitude =
        Duration::from_micros(offset_us.unsigned_abs().min(u128::from(u64::MAX)) as u64);
    if offset_us >= 0 {
        at.checked_add(magnitude).unwrap_or(at)
    } else {
        at.checked_sub(magnitude).unwrap_or(at)
    }
}

fn ts_units(d: Duration, clock_rate: u32) -> i64 {
    (d.as_micros() * u128::from(clock_rate) / 1_000_000) as i64
}
