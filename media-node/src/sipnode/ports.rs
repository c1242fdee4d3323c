//! The RTP port range and the sockets taken from it.
//!
//! One UDP socket per call, bound to an even port of the range (RFC 3550 §11: RTP on an even
//! port, RTCP on the next odd one, which is left free for it). A rotating cursor spreads calls
//! over the range, and a port another socket holds is simply skipped: binding is the
//! allocation, so nothing needs returning when a call's socket closes.
//!
//! The media engine ([`super::engine`], the default) takes one pair per worker thread
//! ([`PortPool::bind_pair`]) and shares it among the worker's calls; the per-call-socket mode
//! (`--rtp-engine per-call`) takes one socket per call ([`PortPool::bind`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// An inclusive range of UDP ports, written `LOW-HIGH` (e.g. `20000-20999`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

/// Why a port range was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("port range must look like LOW-HIGH, e.g. 20000-20999")]
    Syntax,
    #[error("port range must be within 1024-65535, LOW <= HIGH, and hold at least one even port")]
    Bounds,
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.trim().split_once('-').ok_or(PortRangeError::Syntax)?;
        let low: u16 = a.trim().parse().map_err(|_| PortRangeError::Syntax)?;
        let high: u16 = b.trim().parse().map_err(|_| PortRangeError::Syntax)?;
        PortRange::new(low, high)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl PortRange {
    pub fn new(low: u16, high: u16) -> Result<Self, PortRangeError> {
        let first_even = low.checked_add(low % 2).ok_or(PortRangeError::Bounds)?;
        if low < 1024 || low > high || first_even > high {
            return Err(PortRangeError::Bounds);
        }
        Ok(PortRange { low, high })
    }

    /// The even ports of the range, in order.
    fn even_ports(&self) -> impl Iterator<Item = u16> {
        let first = self.low + self.low % 2;
        (first..=self.high).step_by(2)
    }

    fn even_count(&self) -> u32 {
        self.even_ports().count() as u32
    }
}

/// Hands out sockets bound to the range's even ports.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    range: PortRange,
    cursor: AtomicU32,
}

impl PortPool {
    pub fn new(ip: IpAddr, range: PortRange) -> Self {
        PortPool {
            ip,
            range,
            cursor: AtomicU32::new(0),
        }
    }

    /// A non-blocking socket on the next free even port; `None` when every port is taken.
    pub fn bind(&self) -> Option<UdpSocket> {
        let n = self.range.even_count();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let index = (start + i) % n;
            let port = self.range.low + self.range.low % 2 + (index as u16) * 2;
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(self.ip, port)) {
                if s.set_nonblocking(true).is_ok() {
                    self.cursor.store(index + 1, Ordering::Relaxed);
                    return Some(s);
                }
            }
        }
        None
    }

    /// A socket on a free even port and one on the odd port after it (RTP and RTCP, RFC 3550
    /// §11), for the media engine's workers; `None` when no such pair is free.
    pub fn bind_pair(&self) -> Option<(UdpSocket, UdpSocket)> {
        for _ in 0..self.range.even_count() {
            let rtp = self.bind()?;
            let port = rtp.local_addr().ok()?.port();
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(self.ip, next)) {
                if rtcp.set_nonblocking(true).is_ok() {
                    return Some((rtp, rtcp));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_ranges() {
        assert_eq!(
            "20000-20999".parse::<PortRange>(),
            Ok(PortRange {
                low: 20000,
                high: 20999
            })
        );
        assert_eq!(
            "20001-20001".parse::<PortRange>(),
            Err(PortRangeError::Bounds)
        );
        assert_eq!(
            "30000-20000".parse::<PortRange>(),
            Err(PortRangeError::Bounds)
        );
        assert_eq!("80-90".parse::<PortRange>(), Err(PortRangeError::Bounds));
        assert_eq!("20000".parse::<PortRange>(), Err(PortRangeError::Syntax));
        assert_eq!("a-b".parse::<PortRange>(), Err(PortRangeError::Syntax));
        assert_eq!(
            PortRange::new(65535, 65535),
            Err(PortRangeError::Bounds),
            "no even port and no overflow"
        );
    }

    #[test]
    fn binds_even_ports_and_skips_taken_ones() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Find a free pair of even ports to test on.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        let Ok(range) = PortRange::new(base.max(1024), base.max(1024) + 3) else {
            return;
        };
        let pool = PortPool::new(ip, range);
        let Some(a) = pool.bind() else { return };
        let pa = a.local_addr().unwrap().port();
        assert_eq!(pa % 2, 0);
        if let Some(b) = pool.bind() {
            let pb = b.local_addr().unwrap().port();
            assert_ne!(pa, pb);
            assert_eq!(pb % 2, 0);
            // Both taken: nothing left.
            assert!(pool.bind().is_none());
            drop(b);
            assert_eq!(pool.bind().unwrap().local_addr().unwrap().port(), pb);
        }
    }
}
