//! Reception statistics of one RTP source, as RFC 3550 Appendix A specifies them.
//!
//! - A.1: sequence-number validation with probation, wrap counting, and restart detection;
//! - A.3: expected and lost packets, cumulative and per-interval (fraction lost);
//! - A.8: interarrival jitter, in timestamp units, with the integer 1/16 gain of the reference.
//!
//! Fed once per received packet (duplicates included, as A.3 intends) with the arrival instant
//! supplied by the caller; [`ReceiverStats::report_block`] turns them into an RTCP report block.

use std::time::{Duration, Instant};

use super::rtcp::ReportBlock;

const RTP_SEQ_MOD: u32 = 1 << 16;
/// A.1: a jump forward of less than this is a gap (loss), not a restart.
const MAX_DROPOUT: u32 = 3000;
/// A.1: a jump backward of less than this is reordering or a duplicate.
const MAX_MISORDER: u32 = 100;
/// A.1: sequential packets needed before a new source is believed.
const MIN_SEQUENTIAL: u32 = 2;

/// Statistics for one SSRC.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Relative transit time of the last packet, in timestamp units.
    transit: Option<u32>,
    /// Jitter × 16 (A.8 keeps the estimate scaled to avoid fractions).
    jitter_q4: u32,
    /// Origin of the arrival clock, in the same units as the media clock.
    epoch: Option<Instant>,
    last_sr: Option<(u32, Instant)>,
    started: bool,
}

impl ReceiverStats {
    /// Fresh statistics for `ssrc`, whose media clock runs at `clock_rate` Hz.
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        ReceiverStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            epoch: None,
            last_sr: None,
            started: false,
        }
    }

    /// The source these statistics describe.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq`: returns whether the packet counts as valid.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the sender restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // else: duplicate or reordered packet; counted, no state change.
        self.received = self.received.wrapping_add(1);
        true
    }

    /// Records one received packet; returns whether A.1 deems it valid (a packet on probation
    /// or after an unconfirmed jump is not). Jitter is updated for valid packets.
    pub fn on_packet(&mut self, now: Instant, sequence: u16, timestamp: u32) -> bool {
        let epoch = *self.epoch.get_or_insert(now);
        if !self.started {
            self.started = true;
            // First packet ever: A.1's initialisation before the probation packets.
            self.init_seq(sequence);
            self.max_seq = sequence.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let valid = self.update_seq(sequence);
        if valid || self.transit.is_none() {
            let arrival = self.arrival_units(now, epoch);
            let transit = arrival.wrapping_sub(timestamp);
            if let Some(prev) = self.transit {
                let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
                // A.8: J += (|D| - J) / 16, with J kept × 16.
                self.jitter_q4 = self
                    .jitter_q4
                    .wrapping_add(d)
                    .wrapping_sub((self.jitter_q4 + 8) >> 4);
            }
            self.transit = Some(transit);
        }
        valid
    }

    fn arrival_units(&self, now: Instant, epoch: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(epoch);
        (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    /// Records the arrival of a sender report from this source (for LSR/DLSR).
    pub fn on_sender_report(&mut self, now: Instant, ntp_timestamp: u64) {
        self.last_sr = Some(((ntp_timestamp >> 16) as u32, now));
    }

    /// Packets received (A.3 `received`; duplicates included).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The extended highest sequence number received (cycles + max_seq).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected (A.3).
    pub fn expected(&self) -> u32 {
        if self.received == 0 && self.probation > 0 {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost (A.3), clamped to the 24-bit signed field of a report block.
    /// Negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = i64::from(self.expected()) - i64::from(self.received);
        lost.clamp(-0x80_0000, 0x7F_FFFF) as i32
    }

    /// Interarrival jitter estimate in timestamp units (A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_nanos(u64::from(self.jitter()) * 1_000_000_000 / u64::from(self.clock_rate))
    }

    /// Builds a report block for this source and starts a new reporting interval (the fraction
    /// lost covers the packets since the previous call).
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (
                    lsr,
                    (d.as_nanos() * 65_536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32,
                )
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_max(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}
