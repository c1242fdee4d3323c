//! RFC 4733 telephone-events (DTMF over RTP): the payload, a receiver that turns packet
//! streams into key presses, and a sender that produces the packets for one.
//!
//! # Payload (RFC 4733 §2.3)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |     event     |E|R| volume    |          duration             |
//! ```
//!
//! # How an event travels
//!
//! All packets of one event carry the RTP timestamp of its *start*; the first has the marker
//! bit; updates carry the growing duration; the last has the E bit and is sent three times in
//! total (§2.5.1.4), each with its own sequence number (§2.5.1.6) — though some senders (sipp's
//! bundled DTMF captures) repeat the same sequence number. Packets can be lost, duplicated or
//! reordered, and the marker or every end packet may be lost.
//!
//! The receiver therefore keys an event on `(SSRC, timestamp)`: the first packet seen for a new
//! key begins an event (whatever its marker), the first E packet ends it, and any later packet
//! for an ended key is a retransmission and ignored — for `timeout` after the last such packet,
//! after which the same key is a new press (sipp replays one capture, timestamps and all, for
//! every press of a digit). A different key while an event is open ends
//! that one (its end packets were lost) — except the continuation of a long event split into
//! segments (§2.5.1.3: the new timestamp is the old one plus its duration, same event code).
//! An open event with no packets for `timeout` is ended by [`DtmfReceiver::poll`].

use std::time::{Duration, Instant};

use super::packet::RtpHeader;

/// Errors for telephone-event payloads and sender requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// Fewer than 4 payload bytes.
    #[error("telephone-event payload too short: {0} bytes")]
    TooShort(usize),
    /// A character that is not a DTMF key.
    #[error("not a DTMF key: {0:?}")]
    NotADigit(char),
    /// Volume above 63.
    #[error("telephone-event volume {0} is above 63")]
    BadVolume(u8),
    /// A zero duration, or an interval of zero.
    #[error("telephone-event duration and interval must be positive")]
    ZeroDuration,
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–9, 10 `*`, 11 `#`, 12–15 `A`–`D`, 16 flash, others per the IANA registry).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level below 0 dBm0, 0–63.
    pub volume: u8,
    /// Duration so far, in timestamp units from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of a payload (the R bit is ignored, as §2.3.3 requires).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let b = payload.get(..4).ok_or(DtmfError::TooShort(payload.len()))?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload (R bit zero; volume masked to 6 bits).
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// The DTMF key for an event code (0–15), if it is one.
pub fn event_to_digit(event: u8) -> Option<char> {
    const KEYS: &[u8; 16] = b"0123456789*#ABCD";
    KEYS.get(event as usize).map(|&k| k as char)
}

/// The event code for a DTMF key (`0`–`9`, `*`, `#`, `A`–`D`, lower case accepted).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// What the receiver noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfNotice {
    /// A key went down (for barge-in). Exactly one per event.
    Began {
        /// Event code.
        event: u8,
        /// Source.
        ssrc: u32,
        /// RTP timestamp of the event's start.
        timestamp: u32,
    },
    /// A key press finished. Exactly one per event, after its `Began`.
    Ended {
        /// Event code.
        event: u8,
        /// Source.
        ssrc: u32,
        /// RTP timestamp of the event's start.
        timestamp: u32,
        /// Total duration in timestamp units (summed over segments of a long event).
        duration: u32,
        /// Volume of the last packet.
        volume: u8,
        /// How it ended.
        how: EndReason,
    },
}

impl DtmfNotice {
    /// The key, for DTMF events.
    pub fn digit(&self) -> Option<char> {
        match self {
            DtmfNotice::Began { event, .. } | DtmfNotice::Ended { event, .. } => {
                event_to_digit(*event)
            }
        }
    }
}

/// How an event was seen to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A packet with the E bit.
    EndBit,
    /// A new event started first (the end packets were lost).
    Superseded,
    /// No packets for the receiver's timeout.
    TimedOut,
}

#[derive(Debug, Clone, Copy)]
struct OpenEvent {
    ssrc: u32,
    /// Timestamp of the current segment.
    timestamp: u32,
    /// Timestamp of the first segment (reported).
    first_timestamp: u32,
    event: u8,
    volume: u8,
    /// Duration of the current segment.
    duration: u16,
    /// Durations of the completed earlier segments.
    earlier: u32,
    last_seen: Instant,
}

/// How many ended events are remembered to ignore their retransmissions.
const REMEMBERED: usize = 8;

/// Receives telephone-events of one RTP session. Feed it every packet whose payload type is the
/// negotiated `telephone-event` one.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    open: Option<OpenEvent>,
    /// Recently ended events: `(ssrc, timestamp, last packet seen)`.
    ended: [Option<(u32, u32, Instant)>; REMEMBERED],
    next_ended: usize,
    timeout: Duration,
}

impl Default for DtmfReceiver {
    fn default() -> Self {
        DtmfReceiver::new(Duration::from_millis(1000))
    }
}

/// Up to three notices from one packet (an implicit end, a begin, and an end).
pub type Notices = std::iter::Flatten<std::array::IntoIter<Option<DtmfNotice>, 3>>;

impl DtmfReceiver {
    /// A receiver that ends an open event after `timeout` without packets.
    pub fn new(timeout: Duration) -> Self {
        DtmfReceiver {
            open: None,
            ended: [None; REMEMBERED],
            next_ended: 0,
            timeout,
        }
    }

    /// Whether a key is down now.
    pub fn active(&self) -> Option<u8> {
        self.open.map(|o| o.event)
    }

    fn remember(&mut self, ssrc: u32, timestamp: u32, at: Instant) {
        self.ended[self.next_ended] = Some((ssrc, timestamp, at));
        self.next_ended = (self.next_ended + 1) % REMEMBERED;
    }

    /// Whether `(ssrc, timestamp)` ended recently; a hit refreshes the entry, so a run of
    /// retransmissions stays recognised however long it lasts.
    fn was_ended(&mut self, ssrc: u32, timestamp: u32, now: Instant) -> bool {
        let timeout = self.timeout;
        for entry in self.ended.iter_mut().flatten() {
            if entry.0 == ssrc
                && entry.1 == timestamp
                && now.saturating_duration_since(entry.2) < timeout
            {
                entry.2 = entry.2.max(now);
                return true;
            }
        }
        false
    }

    fn close(&mut self, how: EndReason, now: Instant) -> Option<DtmfNotice> {
        let o = self.open.take()?;
        self.remember(o.ssrc, o.timestamp, now.max(o.last_seen));
        Some(DtmfNotice::Ended {
            event: o.event,
            ssrc: o.ssrc,
            timestamp: o.first_timestamp,
            duration: o.earlier + u32::from(o.duration),
            volume: o.volume,
            how,
        })
    }

    /// Takes one telephone-event packet: its header fields and payload. A payload shorter than
    /// 4 bytes is an error and changes nothing.
    pub fn push(
        &mut self,
        now: Instant,
        header: &RtpHeader,
        payload: &[u8],
    ) -> Result<Notices, DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        let (ssrc, ts) = (header.ssrc, header.timestamp);
        let mut out = [None, None, None];
        if self.was_ended(ssrc, ts, now) {
            return Ok(out.into_iter().flatten());
        }
        if let Some(open) = &mut self.open {
            if open.ssrc == ssrc && open.timestamp == ts {
                open.duration = open.duration.max(ev.duration);
                open.volume = ev.volume;
                open.last_seen = now;
                if ev.end {
                    out[0] = self.close(EndReason::EndBit, now);
                }
                return Ok(out.into_iter().flatten());
            }
            let continues = open.ssrc == ssrc
                && open.event == ev.event
                && ts == open.timestamp.wrapping_add(u32::from(open.duration));
            if continues {
                // §2.5.1.3: the next segment of a long event.
                let previous = (open.ssrc, open.timestamp);
                open.earlier += u32::from(open.duration);
                open.timestamp = ts;
                open.duration = ev.duration;
                open.volume = ev.volume;
                open.last_seen = now;
                self.remember(previous.0, previous.1, now);
                if ev.end {
                    out[0] = self.close(EndReason::EndBit, now);
                }
                return Ok(out.into_iter().flatten());
            }
            out[0] = self.close(EndReason::Superseded, now);
        }
        self.open = Some(OpenEvent {
            ssrc,
            timestamp: ts,
            first_timestamp: ts,
            event: ev.event,
            volume: ev.volume,
            duration: ev.duration,
            earlier: 0,
            last_seen: now,
        });
        out[1] = Some(DtmfNotice::Began {
            event: ev.event,
            ssrc,
            timestamp: ts,
        });
        if ev.end {
            out[2] = self.close(EndReason::EndBit, now);
        }
        Ok(out.into_iter().flatten())
    }

    /// When [`poll`](Self::poll) would time out the open event.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.open.map(|o| o.last_seen + self.timeout)
    }

    /// Ends the open event if it has gone quiet for the timeout.
    pub fn poll(&mut self, now: Instant) -> Option<DtmfNotice> {
        let open = self.open?;
        if now.saturating_duration_since(open.last_seen) >= self.timeout {
            self.close(EndReason::TimedOut, now)
        } else {
            None
        }
    }
}

/// One packet of an outgoing event, and when to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Send at the event's start plus this.
    pub offset: Duration,
    /// Marker bit (first packet only).
    pub marker: bool,
    /// RTP timestamp: the event's start, on every packet.
    pub timestamp: u32,
    /// The payload.
    pub event: TelephoneEvent,
}

impl EventPacket {
    /// The RTP header for this packet, given the stream's SSRC, the negotiated payload type and
    /// the next sequence number of the stream (events share the audio's sequence space).
    pub fn header(&self, ssrc: u32, payload_type: u8, sequence: u16) -> RtpHeader {
        RtpHeader {
            marker: self.marker,
            payload_type,
            sequence,
            timestamp: self.timestamp,
            ssrc,
        }
    }
}

/// Plans the packets of outgoing telephone-events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfSender {
    clock_rate: u32,
    interval: Duration,
    volume: u8,
}

/// The update interval [`DtmfSender::default`] uses: the usual audio packet interval, so event
/// packets take the place of the audio packets they replace.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

impl Default for DtmfSender {
    /// 8 kHz clock, an update every 20 ms, volume 10 (−10 dBm0).
    fn default() -> Self {
        DtmfSender {
            clock_rate: 8000,
            interval: DEFAULT_INTERVAL,
            volume: 10,
        }
    }
}

impl DtmfSender {
    /// A sender for a `telephone-event/<clock_rate>` stream, sending an update every
    /// `interval`, at `volume` dB below 0 dBm0.
    pub fn new(clock_rate: u32, interval: Duration, volume: u8) -> Result<Self, DtmfError> {
        if volume > 63 {
            return Err(DtmfError::BadVolume(volume));
        }
        if interval.is_zero() || clock_rate == 0 {
            return Err(DtmfError::ZeroDuration);
        }
        Ok(DtmfSender {
            clock_rate,
            interval,
            volume,
        })
    }

    /// The packets for `digit` held for `duration`, starting at RTP timestamp `start`.
    ///
    /// Packet *k* goes out at `k × interval` and reports the event as lasting to the end of its
    /// interval; the packet whose interval reaches `duration` has the E bit and the exact
    /// total, and is sent three times, one interval apart (RFC 4733 §2.5.1.4). Durations are
    /// capped at the 16-bit field (8.19 s at 8 kHz).
    pub fn plan(
        &self,
        digit: char,
        duration: Duration,
        start: u32,
    ) -> Result<impl Iterator<Item = EventPacket>, DtmfError> {
        let event = digit_to_event(digit).ok_or(DtmfError::NotADigit(digit))?;
        self.plan_event(event, duration, start)
    }

    /// Like [`plan`](Self::plan), for any event code.
    pub fn plan_event(
        &self,
        event: u8,
        duration: Duration,
        start: u32,
    ) -> Result<impl Iterator<Item = EventPacket>, DtmfError> {
        if duration.is_zero() {
            return Err(DtmfError::ZeroDuration);
        }
        let units = |d: Duration| -> u32 {
            (d.as_micros() * u128::from(self.clock_rate) / 1_000_000).min(u128::from(u16::MAX))
                as u32
        };
        let total = units(duration).max(1) as u16;
        let step = units(self.interval).max(1);
        let updates = (u32::from(total) - 1) / step; // packets before the end packet
        let interval = self.interval;
        let volume = self.volume;
        let packet = move |k: u32| {
            let end = k >= updates;
            let reported = if end { total } else { ((k + 1) * step) as u16 };
            EventPacket {
                offset: interval * k,
                marker: k == 0,
                timestamp: start,
                event: TelephoneEvent {
                    event,
                    end,
                    volume,
                    duration: reported,
                },
            }
        };
        Ok((0..updates + 3).map(packet))
    }
}
