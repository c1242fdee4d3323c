//! RFC 3261 §17 timer values (Table 4 of Appendix A).

use std::time::Duration;

/// The base timers; every transaction timer derives from these. Defaults are the RFC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
    /// How long an INVITE server transaction waits for the TU's first response before it
    /// sends `100 Trying` itself (§17.2.1: "within 200 ms"). Zero sends it at once.
    pub trying_delay: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

impl Timers {
    /// Timers B, F, H, J (unreliable), L and M: 64·T1.
    pub fn long(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D: at least 32 s over unreliable transports, zero over reliable ones.
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.long())
        }
    }

    /// Timers I and K: T4 over unreliable transports, zero over reliable ones.
    pub fn t4_or_zero(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64·T1 over unreliable transports, zero over reliable ones.
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.long()
        }
    }
}
