//! SIP over TCP end to end against `vaani dev --app echo`: a call whose INVITE arrives in
//! pieces, answered on the same connection, with RTP echoed and BYE → 200; a CRLF ping
//! answered; a request without Content-Length answered with 400 and the connection closed;
//! and, when sipp is here, sipp's built-in UAC over TCP (`-t t1`); Digest challenges; and a
//! call over TLS (`--sip-tls` with a certificate made by the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::start_dev_with;
use vaani_media::rtp::{RtpHeader, RtpPacket};
use vaani_media::sip::digest::{authorization, Challenge, Credentials, DigestRequest};
use vaani_media::sip::message::{Response, SipMessage};
use vaani_media::sip::sdp::SessionDescription;
use vaani_media::sip::stream::{Framed, StreamFramer};

/// A byte stream to the node: TCP, or TLS over TCP.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// A UAC over one TCP (or TLS) connection.
struct TcpUac {
    conn: Box<dyn Conn>,
    /// `tcp` or `tls`.
    transport: &'static str,
    framer: StreamFramer,
    node: SocketAddr,
    local: SocketAddr,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    /// Header lines added to the next requests.
    extra: String,
}

impl TcpUac {
    fn connect(node: &str, call_id: &str) -> TcpUac {
        let node: SocketAddr = node.parse().unwrap();
        let conn = TcpStream::connect(node).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = conn.local_addr().unwrap();
        TcpUac {
            conn: Box::new(conn),
            transport: "tcp",
            framer: StreamFramer::new(),
            node,
            local,
            call_id: call_id.into(),
            cseq: 0,
            to_tag: None,
            extra: String::new(),
        }
    }

    fn request(&mut self, method: &str, body: &str) -> String {
        if method != "ACK" {
            self.cseq += 1;
        }
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:vaani@{node};transport={transport} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {local};branch=z9hG4bK{method}{cseq}t{pid}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:caller@{local}>;tag=tcp1\r\n\
             To: <sip:vaani@{node}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local};transport={transport}>\r\n\
             {extra}{ct}Content-Length: {len}\r\n\r\n{body}",
            node = self.node,
            local = self.local,
            transport = self.transport,
            via = self.transport.to_ascii_uppercase(),
            cseq = self.cseq,
            pid = std::process::id(),
            call_id = self.call_id,
            extra = self.extra,
            len = body.len(),
        )
    }

    /// The next framed item from the node (`None`: the connection closed).
    fn next(&mut self) -> Option<Framed> {
        loop {
            if let Some(f) = self.framer.next_frame() {
                return Some(f.expect("the node frames its messages"));
            }
            let mut buf = [0u8; 4096];
            match self.conn.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.framer.push(&buf[..n]),
                Err(e) => panic!("reading from the node: {e}"),
            }
        }
    }

    fn recv(&mut self) -> SipMessage {
        loop {
            match self.next().expect("connection open") {
                Framed::Message(m) => return SipMessage::parse(&m).expect("valid SIP"),
                Framed::Ping => continue,
            }
        }
    }

    /// Responses to our last request up to the final one.
    fn responses(&mut self) -> Vec<Response> {
        let mut got = Vec::new();
        loop {
            if let SipMessage::Response(r) = self.recv() {
                if r.headers.cseq.seq == self.cseq {
                    let last = r.status >= 200;
                    got.push(r);
                    if last {
                        return got;
                    }
                }
            }
        }
    }
}

fn offer(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n",
        rtp.port()
    )
}

#[test]
fn tcp_call_with_echoed_rtp() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut uac = TcpUac::connect(&dev.sip, "tcp-call-1@127.0.0.1");

    // A ping first: one CRLF back.
    uac.conn.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    uac.conn.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");

    // The INVITE in three pieces, cut inside the header section and inside the body.
    let invite = uac.request("INVITE", &offer(rtp.local_addr().unwrap()));
    let bytes = invite.as_bytes();
    let (a, b) = (bytes.len() / 3, bytes.len() - 20);
    for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
        uac.conn.write_all(piece).unwrap();
        uac.conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let got = uac.responses();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&100), "{statuses:?}");
    let ok = got.last().unwrap();
    assert_eq!(ok.status, 200, "{statuses:?}");
    uac.to_tag = ok.headers.to.tag().map(str::to_string);
    assert!(uac.to_tag.is_some());
    // Our Contact says TCP, so in-dialog requests come back over TCP.
    let contact = ok.headers.contact[0].uri.as_sip().unwrap();
    assert_eq!(contact.transport_param().as_deref(), Some("tcp"), "{ok:?}");
    let node_rtp = SessionDescription::parse(&ok.body)
        .unwrap()
        .media_address(0)
        .unwrap();
    let ack = uac.request("ACK", "");
    uac.conn.write_all(ack.as_bytes()).unwrap();

    // 1 s of μ-law RTP; the echo app sends it back.
    let mut echoed = 0;
    let t0 = Instant::now();
    for k in 0..50u16 {
        let at = t0 + Duration::from_millis(20 * u64::from(k));
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let payload: Vec<u8> = (0..160)
            .map(|i| ((i * 7 + usize::from(k)) % 200) as u8)
            .collect();
        let mut pkt = Vec::new();
        RtpHeader {
            marker: k == 0,
            payload_type: 0,
            sequence: 100 + k,
            timestamp: 8000 + u32::from(k) * 160,
            ssrc: 0x7c9_0001,
        }
        .write_to_vec(&payload, &mut pkt)
        .unwrap();
        rtp.send_to(&pkt, node_rtp).unwrap();
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = rtp.recv_from(&mut buf) {
            assert_eq!(from, node_rtp);
            if RtpPacket::parse(&buf[..n]).is_ok_and(|p| p.payload_type == 0) {
                echoed += 1;
            }
        }
    }
    let drain_until = Instant::now() + Duration::from_millis(500);
    let mut buf = [0u8; 1500];
    while Instant::now() < drain_until {
        if let Ok((n, _)) = rtp.recv_from(&mut buf) {
            if RtpPacket::parse(&buf[..n]).is_ok_and(|p| p.payload_type == 0) {
                echoed += 1;
            }
        }
    }
    assert!(echoed >= 20, "only {echoed} RTP packets came back");

    let bye = uac.request("BYE", "");
    uac.conn.write_all(bye.as_bytes()).unwrap();
    let got = uac.responses();
    assert_eq!(got.last().map(|r| r.status), Some(200));
}

#[test]
fn tcp_framing_errors_get_400_and_close() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &[]);
    let mut uac = TcpUac::connect(&dev.sip, "tcp-bad-1@127.0.0.1");
    let options = uac.request("OPTIONS", "");
    // A well-framed OPTIONS first: 200 on the connection.
    uac.conn.write_all(options.as_bytes()).unwrap();
    assert_eq!(uac.responses().last().map(|r| r.status), Some(200));
    // The same without Content-Length cannot be framed: 400, then the node closes.
    let bad = uac
        .request("OPTIONS", "")
        .replace("Content-Length: 0\r\n", "");
    uac.conn.write_all(bad.as_bytes()).unwrap();
    let SipMessage::Response(r) = uac.recv() else {
        panic!("expected a response")
    };
    assert_eq!(r.status, 400);
    assert_eq!(r.headers.call_id, "tcp-bad-1@127.0.0.1");
    assert_eq!(uac.next(), None, "the node closes the connection");

    // An oversized Content-Length: 400 and closed too.
    let mut uac = TcpUac::connect(&dev.sip, "tcp-bad-2@127.0.0.1");
    let big = uac
        .request("OPTIONS", "")
        .replace("Content-Length: 0", "Content-Length: 1000000");
    uac.conn.write_all(big.as_bytes()).unwrap();
    // Body bytes keep coming after the node gave up; its 400 must still arrive.
    uac.conn.write_all(&[b'x'; 3000]).unwrap();
    let SipMessage::Response(r) = uac.recv() else {
        panic!("expected a response")
    };
    assert_eq!(r.status, 400);
    assert_eq!(uac.next(), None);
}

/// sipp's built-in UAC scenario over TCP (`-t t1`): INVITE, 200, ACK, BYE.
#[test]
fn sipp_uac_over_tcp() {
    let have = Command::new("sipp").arg("-v").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("VAANI_REQUIRE_SIPP").is_none(),
            "sipp is required (apt-get install sip-tester)"
        );
        eprintln!("skipping: sipp not installed (apt-get install sip-tester)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &[]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = Command::new("sipp")
        .args([
            &dev.sip,
            "-sn",
            "uac",
            "-t",
            "t1",
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
        ])
        .output()
        .expect("run sipp");
    assert!(
        out.status.success(),
        "sipp failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--sip-auth` with an allowlist that leaves loopback out: an INVITE without credentials gets
/// 401 with SHA-256 and MD5 challenges, one answering the MD5 challenge with the right password
/// is answered 200 (and the call works to BYE), and a wrong password gets 403.
#[test]
fn digest_auth_for_sources_outside_the_allowlist() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(
        data.path().to_str().unwrap(),
        &["--sip-allow", "192.0.2.0/24", "--sip-auth", "trunk1:s3cret"],
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = offer(rtp.local_addr().unwrap());
    let challenge_and_answer = |uac: &mut TcpUac, password: &str| -> Response {
        uac.extra.clear();
        let invite = uac.request("INVITE", &sdp);
        uac.conn.write_all(invite.as_bytes()).unwrap();
        let got = uac.responses();
        let r401 = got.last().unwrap();
        assert_eq!(r401.status, 401);
        let challenges: Vec<&str> = r401.headers.get_all("WWW-Authenticate").collect();
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert!(
            challenges[0].contains("algorithm=SHA-256"),
            "{challenges:?}"
        );
        // The ACK for a non-2xx belongs to the INVITE's transaction (same branch).
        let ack = uac
            .request("ACK", "")
            .replace("z9hG4bKACK", "z9hG4bKINVITE");
        uac.conn.write_all(ack.as_bytes()).unwrap();
        let ch = Challenge::parse(challenges[1]).unwrap();
        assert_eq!(ch.algorithm.as_str(), "MD5");
        let uri = format!("sip:vaani@{};transport=tcp", uac.node);
        let auth = authorization(
            &ch,
            &Credentials {
                username: "trunk1".into(),
                password: password.into(),
            },
            &DigestRequest {
                method: "INVITE",
                uri: &uri,
                body: b"",
                cnonce: "c0ffee",
                nc: 1,
            },
        )
        .unwrap();
        uac.extra = format!("Authorization: {auth}\r\n");
        let invite = uac.request("INVITE", &sdp);
        uac.conn.write_all(invite.as_bytes()).unwrap();
        uac.extra.clear();
        uac.responses().pop().unwrap()
    };

    let mut uac = TcpUac::connect(&dev.sip, "tcp-auth-1@127.0.0.1");
    let ok = challenge_and_answer(&mut uac, "s3cret");
    assert_eq!(ok.status, 200);
    uac.to_tag = ok.headers.to.tag().map(str::to_string);
    let ack = uac.request("ACK", "");
    uac.conn.write_all(ack.as_bytes()).unwrap();
    let bye = uac.request("BYE", "");
    uac.conn.write_all(bye.as_bytes()).unwrap();
    assert_eq!(uac.responses().last().map(|r| r.status), Some(200));

    let mut uac = TcpUac::connect(&dev.sip, "tcp-auth-2@127.0.0.1");
    let refused = challenge_and_answer(&mut uac, "guess");
    assert_eq!(refused.status, 403);
}

/// SIP over TLS (`--sip-tls` with a self-signed certificate made here): a Rust UAC completes
/// the handshake trusting that certificate, and its call (INVITE, 200, ACK, BYE) runs over the
/// TLS connection; our Contact names the TLS port with `transport=tls`. Plain TCP to the TLS
/// port gets no SIP answer: the node closes it.
#[test]
fn sip_over_tls() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, key.cert.pem()).unwrap();
    std::fs::write(&key_pem, key.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let dev = start_dev_with(
        data.to_str().unwrap(),
        &[
            "--sip-tls",
            "127.0.0.1:0",
            "--sip-tls-cert",
            cert_pem.to_str().unwrap(),
            "--sip-tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let tls_addr: SocketAddr = dev
        .sip_tls
        .as_deref()
        .expect("sip_tls= in the ready line")
        .parse()
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(tls_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut uac = TcpUac {
        conn: Box::new(rustls::StreamOwned::new(client, tcp)),
        transport: "tls",
        framer: StreamFramer::new(),
        node: tls_addr,
        local,
        call_id: "tls-1@127.0.0.1".into(),
        cseq: 0,
        to_tag: None,
        extra: String::new(),
    };
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = uac.request("INVITE", &offer(rtp.local_addr().unwrap()));
    uac.conn.write_all(invite.as_bytes()).unwrap();
    let ok = uac.responses().pop().unwrap();
    assert_eq!(ok.status, 200);
    uac.to_tag = ok.headers.to.tag().map(str::to_string);
    let contact = ok.headers.contact[0].uri.as_sip().unwrap();
    assert_eq!(contact.transport_param().as_deref(), Some("tls"));
    assert_eq!(contact.port, Some(tls_addr.port()));
    let ack = uac.request("ACK", "");
    uac.conn.write_all(ack.as_bytes()).unwrap();
    let bye = uac.request("BYE", "");
    uac.conn.write_all(bye.as_bytes()).unwrap();
    assert_eq!(uac.responses().last().map(|r| r.status), Some(200));

    // Plain SIP to the TLS port: no SIP comes back, the connection is closed.
    let mut plain = TcpStream::connect(tls_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = plain.write_all(b"OPTIONS sip:vaani@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"SIP/2.0"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A call over TCP whose connection the caller closes: when the node later hangs up (RTP
/// timeout), its BYE has no connection to go on, and it must not go out over UDP to the port
/// the connection came from instead.
#[test]
fn nothing_goes_over_udp_to_a_closed_connections_port() {
    let data = tempfile::tempdir().unwrap();
    let dev = start_dev_with(data.path().to_str().unwrap(), &["--rtp-timeout", "1"]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = TcpUac::connect(&dev.sip, "tcp-closed-1@127.0.0.1");
    let invite = uac.request("INVITE", &offer(rtp.local_addr().unwrap()));
    uac.conn.write_all(invite.as_bytes()).unwrap();
    let ok = uac.responses().pop().unwrap();
    assert_eq!(ok.status, 200);
    uac.to_tag = ok.headers.to.tag().map(str::to_string);
    let ack = uac.request("ACK", "");
    uac.conn.write_all(ack.as_bytes()).unwrap();
    let port = uac.local.port();
    drop(uac);
    // The same port number over UDP: where a wrong fallback would send the BYE.
    let trap = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    trap.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 2048];
    match trap.recv_from(&mut buf) {
        Ok((n, from)) => panic!(
            "{n} bytes over UDP from {from}: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}
