//! SIP over TCP (RFC 3261 §18.3): the listener beside the UDP socket, connections we open
//! for calls we place ([`Connections::connect`]), and one task per connection; and SIP over
//! TLS (RFC 3261 §26.3.1, RFC 5630), when configured: a second listener whose connections
//! run the same task once their TLS handshake (at most [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_HANDSHAKES`] at once) is done.
//!
//! A connection task reads, frames messages out of the stream ([`crate::sip::stream`]) and
//! hands each, with the peer's address, to the SIP task; it answers CRLF pings itself, and on
//! a framing error (no or a bad `Content-Length`, a message over 64 KiB) writes the `400`
//! when it can and closes. The SIP task writes through the connection's queue
//! ([`TcpConn`]): responses and requests for an address that has a connection go there,
//! everything else over UDP. A connection with no traffic for [`IDLE_TIMEOUT`] and no call
//! on it is closed; at most [`MAX_CONNECTIONS`] are open at once (more are refused).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::sip::stream::{Framed, StreamFramer};

/// No traffic for this long, and no call on it: the connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections open at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Messages queued for one connection's writer; beyond, sends to it are dropped.
const QUEUE: usize = 64;
/// How long a TLS client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; more connections are closed at once.
pub const MAX_HANDSHAKES: usize = 256;

/// What connection tasks tell the SIP task.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    Opened { peer: SocketAddr, conn: TcpConn },
    Message { peer: SocketAddr, data: Vec<u8> },
    Closed { peer: SocketAddr, id: u64 },
}

/// The SIP task's handle on one connection.
#[derive(Debug, Clone)]
pub(crate) struct TcpConn {
    pub id: u64,
    /// Bytes to write.
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Calls using the connection: while any, it is not closed for idleness.
    pub calls: Arc<AtomicUsize>,
    /// TLS (else plain TCP).
    pub tls: bool,
}

/// Why a connection for a call could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connection to {peer} failed: {source}")]
    Failed {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("TCP connection to {0} timed out")]
    TimedOut(SocketAddr),
    #[error("too many SIP TCP connections open")]
    TooMany,
    #[error("the node's SIP side has stopped")]
    Stopped,
}

/// The node's TCP connections, accepted and opened alike: one cap, one id sequence, one
/// event stream to the SIP task. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    events: mpsc::Sender<TcpEvent>,
    open: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    idle: Duration,
    max: usize,
}

impl Connections {
    pub fn new(events: mpsc::Sender<TcpEvent>, idle: Duration, max: usize) -> Connections {
        Connections {
            events,
            open: Arc::new(AtomicUsize::new(0)),
            next_id: Arc::new(AtomicU64::new(0)),
            idle,
            max,
        }
    }

    /// Registers `stream` with the SIP task (its `Opened` comes before any of its messages)
    /// and starts its task. `Err` when at the cap or the SIP task is gone.
    async fn adopt<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        tls: bool,
    ) -> Result<TcpConn, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnectError::TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::AcqRel) + 1;
        let (tx, rx) = mpsc::channel(QUEUE);
        let conn = TcpConn {
            id,
            tx,
            calls: Arc::new(AtomicUsize::new(0)),
            tls,
        };
        let opened = TcpEvent::Opened {
            peer,
            conn: conn.clone(),
        };
        if self.events.send(opened).await.is_err() {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnectError::Stopped);
        }
        let me = self.clone();
        let calls = conn.calls.clone();
        tokio::spawn(async move {
            run_connection(stream, peer, rx, &me.events, calls, me.idle).await;
            me.open.fetch_sub(1, Ordering::AcqRel);
            let _ = me.events.send(TcpEvent::Closed { peer, id }).await;
        });
        Ok(conn)
    }

    /// Opens a connection to `peer` (for a call we place), within `timeout`.
    pub async fn connect(
        &self,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpConn, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(peer)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ConnectError::Failed { peer, source }),
            Err(_) => return Err(ConnectError::TimedOut(peer)),
        };
        tracing::debug!(%peer, "SIP TCP connection opened");
        let _ = stream.set_nodelay(true);
        self.adopt(stream, peer, false).await
    }
}

/// The next connection on `listener` (no delay on its writes); a failed accept (out of file
/// descriptors, a reset before accept) is retried after 50 ms.
async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::debug!(error = %e, "SIP {what} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections until the SIP task goes away.
pub(crate) async fn listen(listener: TcpListener, conns: Connections) {
    loop {
        let (stream, peer) = accept(&listener, "TCP").await;
        match conns.adopt(stream, peer, false).await {
            Ok(_) => tracing::debug!(%peer, "SIP TCP connection"),
            Err(ConnectError::Stopped) => return,
            Err(e) => {
                tracing::warn!(%peer, max = conns.max, error = %e, "SIP TCP connection refused")
            }
        }
    }
}

/// Accepts TLS connections until the SIP task goes away: each handshake runs in its own task.
pub(crate) async fn listen_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    conns: Connections,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = accept(&listener, "TLS").await;
        if conns.events.is_closed() {
            return;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "SIP TLS connection refused: too many handshakes");
            continue;
        };
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(permit);
            match handshake {
                Ok(Ok(tls)) => match conns.adopt(tls, peer, true).await {
                    Ok(_) => tracing::debug!(%peer, "SIP TLS connection"),
                    Err(e) => tracing::warn!(%peer, error = %e, "SIP TLS connection refused"),
                },
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "SIP TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "SIP TLS handshake timed out"),
            }
        });
    }
}

/// The TLS server side from PEM files: the certificate chain (leaf first) and its private key.
pub fn tls_acceptor(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Cert(format!("{}: {e}", cert_pem.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Cert(format!(
            "{}: no certificate in it",
            cert_pem.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| TlsSetupError::Key(format!("{}: {e}", key_pem.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS certificate {0}")]
    Cert(String),
    #[error("TLS private key {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// One connection: reads and frames, writes what the SIP task queues, answers pings.
async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<TcpEvent>,
    calls: Arc<AtomicUsize>,
    idle: Duration,
) {
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                deadline = tokio::time::Instant::now() + idle;
                framer.push(buf.get(..n).unwrap_or_default());
                while let Some(frame) = framer.next_frame() {
                    match frame {
                        Ok(Framed::Message(data)) => {
                            if events.send(TcpEvent::Message { peer, data }).await.is_err() {
                                return;
                            }
                        }
                        Ok(Framed::Ping) => {
                            if stream.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "SIP TCP stream unreadable: closing");
                            let tag = format!("{:016x}", super::random_u64());
                            if let Some(reply) = e.reply(&tag) {
                                let _ = stream.write_all(&reply).await;
                            }
                            close_gracefully(&mut stream).await;
                            return;
                        }
                    }
                }
            }
            out = outgoing.recv() => {
                let Some(data) = out else { return };
                deadline = tokio::time::Instant::now() + idle;
                if stream.write_all(&data).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if calls.load(Ordering::Acquire) == 0 {
                    tracing::debug!(%peer, "SIP TCP connection idle: closing");
                    let _ = stream.shutdown().await;
                    return;
                }
                deadline = tokio::time::Instant::now() + idle;
            }
        }
    }
}

/// Closes our side, then reads and drops what the peer still sends (for at most a second and
/// 256 KiB), so that closing with unread bytes does not reset the connection and destroy the
/// `400` just written.
async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    async fn setup(idle: Duration, max: usize) -> (SocketAddr, mpsc::Receiver<TcpEvent>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(listen(listener, Connections::new(tx, idle, max)));
        (addr, rx)
    }

    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn messages_pings_writes_and_idle_close() {
        let (addr, mut rx) = setup(Duration::from_millis(300), 8).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let Some(TcpEvent::Opened { peer, conn }) = rx.recv().await else {
            panic!("no Opened")
        };
        assert_eq!(peer, c.local_addr().unwrap());
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        c.write_all(&msg[..10]).await.unwrap();
        c.write_all(&msg[10..]).await.unwrap();
        let Some(TcpEvent::Message { data, .. }) = rx.recv().await else {
            panic!("no Message")
        };
        assert_eq!(data, msg);
        c.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
        conn.tx.send(b"hello".to_vec()).await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // A call on the connection keeps it open past the idle timeout…
        conn.calls.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.write_all(b"\r\n\r\n").await.unwrap();
        c.read_exact(&mut pong).await.unwrap();
        // …and without one it is closed.
        conn.calls.fetch_sub(1, Ordering::AcqRel);
        assert!(closed(&mut c).await);
        assert!(matches!(rx.recv().await, Some(TcpEvent::Closed { id, .. }) if id == conn.id));
    }

    #[tokio::test]
    async fn bad_framing_gets_400_and_close() {
        let (addr, mut rx) = setup(Duration::from_secs(60), 8).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        // Held: dropping the SIP task's end of a connection closes it.
        let _opened = rx.recv().await;
        c.write_all(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n\
              From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("SIP/2.0 400 "), "{text}");
        assert!(matches!(rx.recv().await, Some(TcpEvent::Closed { .. })));
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused() {
        let (addr, mut rx) = setup(Duration::from_secs(60), 1).await;
        let _first = TcpStream::connect(addr).await.unwrap();
        let opened = rx.recv().await;
        assert!(matches!(opened, Some(TcpEvent::Opened { .. })));
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut second).await);
    }
}
