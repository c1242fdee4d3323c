//! Batched UDP I/O for the RTP engine: one non-blocking socket, a fixed set of receive and send
//! slots allocated once, and on Linux `recvmmsg(2)` / `sendmmsg(2)` to move up to [`BATCH`]
//! datagrams per system call (through `nix`'s safe wrappers; the workspace denies unsafe
//! code). [`IoMode::PerPacket`] (and every target other than Linux) does the same with one
//! `recv_from` / `send_to` per datagram: the portable fallback, also kept on Linux to measure
//! what batching buys.
//!
//! Errors are handled here, not passed up per packet:
//! - `EAGAIN`/`EWOULDBLOCK` on receive ends the batch; on send, the rest of the batch is
//!   dropped and counted ([`UdpCounters::send_dropped`]): a real-time packet that cannot go now
//!   is worthless later.
//! - `EINTR` is retried.
//! - Any other send error drops the one datagram it was about (a bad destination) and the rest
//!   of the batch goes on.
//! - A datagram larger than a receive slot arrives truncated; it is dropped and counted.
//!
//! Nothing here allocates after [`BatchSocket::new`].

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram received (larger ones are dropped as truncated).
pub const RX_SLOT: usize = 2048;
/// Room for one datagram sent (an RTP packet of 20 ms G.711 is 172 bytes; RTCP a few hundred).
pub const TX_SLOT: usize = 1500;

/// How datagrams move between the socket and the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// `recvmmsg`/`sendmmsg` on Linux (per packet elsewhere).
    #[default]
    Batched,
    /// One system call per datagram.
    PerPacket,
}

impl std::str::FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batched" => Ok(IoMode::Batched),
            "per-packet" => Ok(IoMode::PerPacket),
            _ => Err("expected batched or per-packet".into()),
        }
    }
}

/// What happened on the socket, for metrics and the load run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub received: u64,
    pub sent: u64,
    /// Receive system calls made (`recvmmsg` or `recv_from`).
    pub recv_calls: u64,
    /// Send system calls made.
    pub send_calls: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub send_dropped: u64,
    /// Datagrams the kernel refused for another reason (bad destination…).
    pub send_errors: u64,
    /// Datagrams too large for a receive slot.
    pub truncated: u64,
}

/// A non-blocking UDP socket with preallocated batches. See the module docs.
pub struct BatchSocket {
    socket: UdpSocket,
    mode: IoMode,
    rx: Box<[[u8; RX_SLOT]; BATCH]>,
    /// Per datagram kept: its slot, length and source.
    rx_slot: [usize; BATCH],
    rx_len: [usize; BATCH],
    rx_from: [SocketAddr; BATCH],
    rx_count: usize,
    tx: Box<[[u8; TX_SLOT]; BATCH]>,
    tx_len: [usize; BATCH],
    tx_to: [SocketAddr; BATCH],
    tx_count: usize,
    counters: UdpCounters,
    #[cfg(target_os = "linux")]
    mm: linux::Headers,
}

impl std::fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSocket")
            .field("local", &self.socket.local_addr().ok())
            .field("mode", &self.mode)
            .field("counters", &self.counters)
            .finish()
    }
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl BatchSocket {
    /// Wraps `socket` (made non-blocking here). Asks for `buffer_bytes` of kernel receive and
    /// send buffer (the kernel caps it at `net.core.rmem_max`/`wmem_max` unless we may force
    /// it); [`BatchSocket::buffer_sizes`] says what was granted.
    pub fn new(socket: UdpSocket, mode: IoMode, buffer_bytes: usize) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        #[cfg(target_os = "linux")]
        linux::grow_buffers(&socket, buffer_bytes);
        #[cfg(not(target_os = "linux"))]
        let _ = buffer_bytes;
        Ok(BatchSocket {
            socket,
            mode,
            rx: Box::new([[0; RX_SLOT]; BATCH]),
            rx_slot: [0; BATCH],
            rx_len: [0; BATCH],
            rx_from: [UNSPECIFIED; BATCH],
            rx_count: 0,
            tx: Box::new([[0; TX_SLOT]; BATCH]),
            tx_len: [0; BATCH],
            tx_to: [UNSPECIFIED; BATCH],
            tx_count: 0,
            counters: UdpCounters::default(),
            #[cfg(target_os = "linux")]
            mm: linux::Headers::new(),
        })
    }

    /// The socket back (its buffer sizes and non-blocking mode stay).
    pub fn into_inner(self) -> UdpSocket {
        self.socket
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub fn mode(&self) -> IoMode {
        self.mode
    }

    pub fn counters(&self) -> UdpCounters {
        self.counters
    }

    /// The kernel's receive and send buffer sizes, in bytes (Linux; `None` elsewhere).
    pub fn buffer_sizes(&self) -> Option<(usize, usize)> {
        #[cfg(target_os = "linux")]
        return linux::buffer_sizes(&self.socket);
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Receives what is waiting, up to [`BATCH`] datagrams, without blocking; returns how many
    /// (0 when none). Read them with [`BatchSocket::received`]. Call again while it returns
    /// `BATCH`.
    pub fn recv_batch(&mut self) -> usize {
        self.rx_count = 0;
        #[cfg(target_os = "linux")]
        if self.mode == IoMode::Batched {
            let n = linux::recv(
                &self.socket,
                &mut self.mm,
                &mut self.rx,
                &mut self.rx_slot,
                &mut self.rx_len,
                &mut self.rx_from,
                &mut self.counters,
            );
            self.rx_count = n;
            return n;
        }
        while self.rx_count < BATCH {
            let i = self.rx_count;
            self.counters.recv_calls += 1;
            match self.socket.recv_from(&mut self.rx[i]) {
                Ok((len, from)) => {
                    // std cannot tell a truncated datagram; a full slot is treated as one.
                    if len >= RX_SLOT {
                        self.counters.truncated += 1;
                        continue;
                    }
                    self.rx_slot[i] = i;
                    self.rx_len[i] = len;
                    self.rx_from[i] = from;
                    self.rx_count += 1;
                    self.counters.received += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock ends the batch; other receive errors (an ICMP error queued on the
                // socket) are not about any datagram we could read.
                Err(_) => break,
            }
        }
        self.rx_count
    }

    /// Datagram `i` of the last [`BatchSocket::recv_batch`] and its source.
    pub fn received(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.rx_count {
            return None;
        }
        let len = self.rx_len[i].min(RX_SLOT);
        let slot = self.rx.get(self.rx_slot[i])?;
        Some((&slot[..len], self.rx_from[i]))
    }

    /// The next free send slot (sending the batch first when every slot is taken). Write a
    /// datagram into it and [`BatchSocket::commit`] it.
    pub fn slot(&mut self) -> &mut [u8; TX_SLOT] {
        if self.tx_count >= BATCH {
            self.flush();
        }
        let i = self.tx_count.min(BATCH - 1);
        &mut self.tx[i]
    }

    /// Queues the datagram written into the last [`BatchSocket::slot`]: `len` bytes to `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        if self.tx_count >= BATCH {
            self.flush();
        }
        let i = self.tx_count;
        self.tx_len[i] = len.min(TX_SLOT);
        self.tx_to[i] = to;
        self.tx_count += 1;
        if self.tx_count == BATCH {
            self.flush();
        }
    }

    /// Queues a copy of `data` to `to`.
    pub fn queue(&mut self, data: &[u8], to: SocketAddr) {
        let len = data.len().min(TX_SLOT);
        self.slot()[..len].copy_from_slice(&data[..len]);
        self.commit(len, to);
    }

    /// Datagrams queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.tx_count
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        let n = std::mem::take(&mut self.tx_count);
        if n == 0 {
            return;
        }
        #[cfg(target_os = "linux")]
        if self.mode == IoMode::Batched {
            linux::send(
                &self.socket,
                &mut self.mm,
                &self.tx,
                &self.tx_len,
                &self.tx_to,
                n,
                &mut self.counters,
            );
            return;
        }
        let mut i = 0;
        while i < n {
            self.counters.send_calls += 1;
            match self
                .socket
                .send_to(&self.tx[i][..self.tx_len[i]], self.tx_to[i])
            {
                Ok(_) => {
                    self.counters.sent += 1;
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.counters.send_dropped += (n - i) as u64;
                    return;
                }
                Err(_) => {
                    self.counters.send_errors += 1;
                    i += 1;
                }
            }
        }
    }

    /// Blocks until the socket is readable or `timeout` passes; `true` when readable.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        wait_readable(&self.socket, None, timeout)
    }
}

/// Blocks until `a` (or `b`) is readable or `timeout` passes; `true` when one is.
pub fn wait_readable(a: &UdpSocket, b: Option<&UdpSocket>, timeout: Duration) -> bool {
    #[cfg(target_os = "linux")]
    return linux::wait(a, b, timeout);
    #[cfg(not(target_os = "linux"))]
    {
        // Portable: block on the first socket with a read timeout (at least 1 ms), then go
        // back to non-blocking. The second one is read on the next turn of the loop.
        let _ = b;
        let t = timeout.max(Duration::from_millis(1));
        let mut probe = [0u8; 1];
        let readable = a.set_nonblocking(false).is_ok()
            && a.set_read_timeout(Some(t)).is_ok()
            && a.peek_from(&mut probe).is_ok();
        let _ = a.set_nonblocking(true);
        readable
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags};
    use nix::sys::socket::{
        recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders,
        SockaddrStorage,
    };
    use nix::sys::time::TimeSpec;

    use super::{UdpCounters, BATCH, RX_SLOT, TX_SLOT, UNSPECIFIED};

    /// The `mmsghdr` arrays, allocated once.
    pub struct Headers {
        rx: MultiHeaders<SockaddrStorage>,
        tx: MultiHeaders<SockaddrStorage>,
        to: [Option<SockaddrStorage>; BATCH],
    }

    impl Headers {
        pub fn new() -> Self {
            Headers {
                rx: MultiHeaders::preallocate(BATCH, None),
                tx: MultiHeaders::preallocate(BATCH, None),
                to: [None; BATCH],
            }
        }
    }

    fn std_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = s.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
        }
        s.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }

    pub fn grow_buffers(socket: &UdpSocket, bytes: usize) {
        if bytes == 0 {
            return;
        }
        // Forcing past rmem_max needs CAP_NET_ADMIN; otherwise take what the cap allows.
        if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
            let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
        }
        if setsockopt(socket, sockopt::SndBufForce, &bytes).is_err() {
            let _ = setsockopt(socket, sockopt::SndBuf, &bytes);
        }
    }

    pub fn buffer_sizes(socket: &UdpSocket) -> Option<(usize, usize)> {
        let r = nix::sys::socket::getsockopt(socket, sockopt::RcvBuf).ok()?;
        let s = nix::sys::socket::getsockopt(socket, sockopt::SndBuf).ok()?;
        Some((r, s))
    }

    pub fn recv(
        socket: &UdpSocket,
        mm: &mut Headers,
        rx: &mut [[u8; RX_SLOT]; BATCH],
        rx_slot: &mut [usize; BATCH],
        rx_len: &mut [usize; BATCH],
        rx_from: &mut [SocketAddr; BATCH],
        counters: &mut UdpCounters,
    ) -> usize {
        loop {
            let mut slices = rx.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
            counters.recv_calls += 1;
            let result = recvmmsg(
                socket.as_raw_fd(),
                &mut mm.rx,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            );
            match result {
                Ok(messages) => {
                    let mut n = 0;
                    for (slot, m) in messages.enumerate() {
                        if m.flags.contains(MsgFlags::MSG_TRUNC) {
                            counters.truncated += 1;
                            continue;
                        }
                        let Some(from) = m.address.as_ref().and_then(std_addr) else {
                            continue;
                        };
                        rx_slot[n] = slot;
                        rx_len[n] = m.bytes.min(RX_SLOT);
                        rx_from[n] = from;
                        n += 1;
                    }
                    counters.received += n as u64;
                    return n;
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: nothing waiting. Others (an ICMP error queued on the socket) are not
                // about a datagram we could read.
                Err(_) => return 0,
            }
        }
    }

    pub fn send(
        socket: &UdpSocket,
        mm: &mut Headers,
        tx: &[[u8; TX_SLOT]; BATCH],
        tx_len: &[usize; BATCH],
        tx_to: &[SocketAddr; BATCH],
        n: usize,
        counters: &mut UdpCounters,
    ) {
        for (slot, to) in mm.to.iter_mut().zip(tx_to.iter()).take(n) {
            *slot = (*to != UNSPECIFIED).then(|| SockaddrStorage::from(*to));
        }
        let slices: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&tx[i][..tx_len[i].min(TX_SLOT)])]);
        let mut at = 0;
        while at < n {
            counters.send_calls += 1;
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut mm.tx,
                slices[at..n].iter(),
                &mm.to[at..n],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(done) => {
                    let sent = done.count();
                    counters.sent += sent as u64;
                    at += sent.max(1);
                    if sent == 0 {
                        counters.send_errors += 1;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    counters.send_dropped += (n - at) as u64;
                    return;
                }
                // The first datagram left was refused (its destination): skip it.
                Err(_) => {
                    counters.send_errors += 1;
                    at += 1;
                }
            }
        }
    }

    pub fn wait(a: &UdpSocket, b: Option<&UdpSocket>, timeout: Duration) -> bool {
        let ts = TimeSpec::from_duration(timeout);
        let result = match b {
            Some(b) => nix::poll::ppoll(
                &mut [
                    PollFd::new(a.as_fd(), PollFlags::POLLIN),
                    PollFd::new(b.as_fd(), PollFlags::POLLIN),
                ],
                Some(ts),
                None,
            ),
            None => nix::poll::ppoll(
                &mut [PollFd::new(a.as_fd(), PollFlags::POLLIN)],
                Some(ts),
                None,
            ),
        };
        matches!(result, Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair(mode: IoMode) -> (BatchSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (BatchSocket::new(a, mode, 1 << 20).unwrap(), b)
    }

    fn round_trip(mode: IoMode) {
        let (mut s, peer) = pair(mode);
        let to = s.local_addr().unwrap();
        let from = peer.local_addr().unwrap();
        assert_eq!(s.recv_batch(), 0, "nothing waiting");
        for i in 0..150u32 {
            peer.send_to(&i.to_be_bytes(), to).unwrap();
        }
        assert!(s.wait_readable(Duration::from_secs(1)));
        let mut got = Vec::new();
        loop {
            let n = s.recv_batch();
            for i in 0..n {
                let (d, src) = s.received(i).unwrap();
                assert_eq!(src, from);
                got.push(u32::from_be_bytes(d.try_into().unwrap()));
            }
            if n < BATCH {
                break;
            }
        }
        assert_eq!(got, (0..150).collect::<Vec<_>>());
        assert!(s.received(BATCH).is_none());
        // Send 100 back, in two batches and a flush.
        for i in 0..100u32 {
            s.queue(&i.to_be_bytes(), from);
        }
        assert_eq!(s.pending(), 100 - BATCH);
        s.flush();
        assert_eq!(s.pending(), 0);
        peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 16];
        for i in 0..100u32 {
            let (n, src) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(src, to);
            assert_eq!(&buf[..n], &i.to_be_bytes());
        }
        let c = s.counters();
        assert_eq!((c.received, c.sent), (150, 100));
        if mode == IoMode::Batched && cfg!(target_os = "linux") {
            assert!(c.send_calls <= 3, "{c:?}");
            assert!(c.recv_calls <= 5, "{c:?}");
        }
    }

    #[test]
    fn batched_round_trip() {
        round_trip(IoMode::Batched);
    }

    #[test]
    fn per_packet_round_trip() {
        round_trip(IoMode::PerPacket);
    }

    #[test]
    fn a_bad_destination_does_not_sink_the_batch() {
        let (mut s, peer) = pair(IoMode::Batched);
        let good = peer.local_addr().unwrap();
        // IPv6 destination on an IPv4 socket: refused by the kernel.
        s.queue(b"a", good);
        s.queue(b"x", "[::1]:9".parse().unwrap());
        s.queue(b"b", good);
        s.flush();
        peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 4];
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a");
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"b");
        let c = s.counters();
        assert_eq!((c.sent, c.send_errors), (2, 1), "{c:?}");
    }

    #[test]
    fn oversized_datagrams_are_dropped() {
        let (mut s, peer) = pair(IoMode::Batched);
        let to = s.local_addr().unwrap();
        peer.send_to(&[0u8; RX_SLOT + 10], to).unwrap();
        peer.send_to(b"ok", to).unwrap();
        assert!(s.wait_readable(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(20));
        let n = s.recv_batch();
        let kept: Vec<&[u8]> = (0..n).map(|i| s.received(i).unwrap().0).collect();
        assert_eq!(kept, vec![b"ok" as &[u8]]);
        assert_eq!(s.counters().truncated, 1);
    }

    #[test]
    fn waiting_times_out() {
        let (s, _peer) = pair(IoMode::Batched);
        let t = std::time::Instant::now();
        assert!(!s.wait_readable(Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
