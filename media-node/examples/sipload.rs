//! SIP + RTP load generator for the media node (issue 3's load run; see bench/README.md).
//!
//! Sets up N calls to a running node (`vaani dev --app echo`) with INVITE/200/ACK over UDP,
//! streams 20 ms μ-law (or, with `--codec g722`, G.722) RTP for every call from a few sockets (batched `sendmmsg`, each call's
//! packets at its own phase of the 20 ms so the load is even), receives the echoes, holds for
//! a measurement window, then BYEs every call. Reports:
//!
//! - calls set up and still up at the end (none hung up by the node);
//! - packets sent / echoed in the window, and loss both ways: *down* (node → generator) from
//!   the echo streams' sequence numbers plus ticks the node never sent (echoes received vs
//!   one per call per 20 ms), *up* (generator → node) from the node's own counters
//!   (`vaani_rtp_packets_{received,lost}_total` on `/metrics`, when `--http` is given) and the
//!   kernel's UDP drop counters (`/proc/net/snmp`, whole machine);
//! - the node's CPU over the window (`/proc/PID/stat` utime + stime) as a fraction of one
//!   core, and per call per second; the generator's own CPU the same way (if it is near 100%
//!   the run measured the generator);
//! - the node's RSS growth per call (`VmRSS` before the first INVITE vs during the hold);
//! - call setup time (INVITE sent → 200 OK received) p50/p99.
//!
//! ```text
//! cargo build --release -p vaani-media --example sipload
//! taskset -c 1 target/release/examples/sipload --sip 127.0.0.1:5060 --http 127.0.0.1:8080 \
//!     --pid $(pidof vaani) --calls 2000 --rate 400 --hold 20
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use vaani_media::codec::g711;
use vaani_media::rtp::packet::RtpHeader;
use vaani_media::sip::message::SipMessage;
use vaani_media::sip::sdp::SessionDescription;
use vaani_media::udp::{BatchSocket, IoMode, BATCH};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    sip: SocketAddr,
    http: Option<String>,
    pid: Option<u32>,
    calls: usize,
    rate: f64,
    warmup: Duration,
    hold: Duration,
    sockets: usize,
    io: IoMode,
    /// `pcmu` or `g722`: what the calls offer and send.
    codec: LoadCodec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadCodec {
    Pcmu,
    G722,
}

impl LoadCodec {
    fn payload_type(self) -> u8 {
        match self {
            LoadCodec::Pcmu => 0,
            LoadCodec::G722 => 9,
        }
    }
}

impl std::str::FromStr for LoadCodec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pcmu" => Ok(LoadCodec::Pcmu),
            "g722" => Ok(LoadCodec::G722),
            other => Err(format!("--codec {other}: pcmu or g722")),
        }
    }
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        sip: "127.0.0.1:5060".parse()?,
        http: None,
        pid: None,
        calls: 100,
        rate: 200.0,
        warmup: Duration::from_secs(3),
        hold: Duration::from_secs(20),
        sockets: 4,
        io: IoMode::Batched,
        codec: LoadCodec::Pcmu,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sip" => a.sip = value()?.parse()?,
            "--http" => a.http = Some(value()?),
            "--pid" => a.pid = Some(value()?.parse()?),
            "--calls" => a.calls = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--warmup" => a.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--hold" => a.hold = Duration::from_secs_f64(value()?.parse()?),
            "--sockets" => a.sockets = value()?.parse::<usize>()?.max(1),
            "--io" => a.io = value()?.parse()?,
            "--codec" => a.codec = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "sipload --sip ADDR [--http ADDR] [--pid PID] [--calls N] [--rate CPS] \
                     [--warmup S] [--hold S] [--sockets K] [--io batched|per-packet] \
                     [--codec pcmu|g722]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// One call's state.
struct Call {
    call_id: String,
    socket: usize,
    ssrc: u32,
    seq: u16,
    ts: u32,
    invited_at: Option<Instant>,
    setup: Option<Duration>,
    to_tag: Option<String>,
    /// Where the node wants our RTP (its SDP answer).
    node_rtp: Option<SocketAddr>,
    cseq: u32,
    /// The node hung up (BYE from it).
    ended_by_node: bool,
    bye_answered: bool,
}

/// Echo stream statistics per node SSRC.
#[derive(Default, Clone, Copy)]
struct Echo {
    count: u64,
    ext_max: Option<u64>,
    /// Snapshot at the window's start.
    count_at_start: u64,
    ext_at_start: Option<u64>,
}

impl Echo {
    fn on_seq(&mut self, seq: u16) {
        self.count += 1;
        self.ext_max = Some(match self.ext_max {
            None => u64::from(seq),
            Some(max) => {
                let cur = max as u16;
                let delta = seq.wrapping_sub(cur);
                if delta < 0x8000 {
                    max + u64::from(delta)
                } else {
                    max
                }
            }
        });
    }
}

/// CPU seconds (utime + stime) of a process.
fn cpu_seconds(pid: &str, tick: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: field 3 (state) is index 0; utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / tick)
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// UDP InErrors + RcvbufErrors of the whole machine.
fn udp_drops() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |n: &str| -> Option<u64> {
        let i = names.iter().position(|x| *x == n)?;
        values.get(i)?.parse().ok()
    };
    Some(get("InErrors")? + get("RcvbufErrors").unwrap_or(0))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn node_rtp_counters(http: &Option<String>) -> Option<(u64, u64)> {
    let text = http_get(http.as_deref()?, "/metrics")?;
    Some((
        metric(&text, "vaani_rtp_packets_received_total")?,
        metric(&text, "vaani_rtp_packets_lost_total")?,
    ))
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Load {
    args: Args,
    sip: UdpSocket,
    local_sip: SocketAddr,
    rtp: Vec<BatchSocket>,
    rtp_addrs: Vec<SocketAddr>,
    calls: Vec<Call>,
    by_call_id: HashMap<String, usize>,
    echoes: HashMap<u32, Echo>,
    /// 1 ms buckets of the 20 ms: calls sending in each.
    wheel: Vec<Vec<usize>>,
    payloads: Vec<[u8; 160]>,
    sent: u64,
    sent_at_start: u64,
    late_slots: u64,
    sip_buf: Vec<u8>,
    tag: String,
}

impl Load {
    fn new(args: Args) -> Res<Load> {
        let sip = UdpSocket::bind("127.0.0.1:0")?;
        sip.set_nonblocking(true)?;
        let local_sip = sip.local_addr()?;
        let mut rtp = Vec::new();
        let mut rtp_addrs = Vec::new();
        for _ in 0..args.sockets {
            let s = BatchSocket::new(UdpSocket::bind("127.0.0.1:0")?, args.io, 8 << 20)?;
            rtp_addrs.push(s.local_addr()?);
            rtp.push(s);
        }
        // One second of a 440 Hz tone at −10 dBFS: 440 whole cycles, so it loops seamlessly.
        // Both codecs fill 160 bytes per 20 ms (μ-law at 8 kHz, G.722 at 16 kHz).
        let tone = |rate: f64, n: usize| {
            10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / rate).sin()
        };
        let mut g722 = vaani_media::codec::g722::Encoder::new();
        let payloads = (0..50)
            .map(|f| {
                let mut p = [0u8; 160];
                match args.codec {
                    LoadCodec::Pcmu => {
                        for (i, b) in p.iter_mut().enumerate() {
                            *b = g711::linear_to_ulaw(tone(8000.0, f * 160 + i) as i16);
                        }
                    }
                    LoadCodec::G722 => {
                        let pcm: Vec<i16> = (0..320)
                            .map(|i| tone(16_000.0, f * 320 + i) as i16)
                            .collect();
                        g722.encode(&pcm, &mut p);
                    }
                }
                p
            })
            .collect();
        let tag = format!("{:x}", std::process::id());
        let calls = (0..args.calls)
            .map(|i| Call {
                call_id: format!("load-{tag}-{i}"),
                socket: i % args.sockets,
                ssrc: 0x4000_0000 + i as u32,
                seq: (i as u16).wrapping_mul(7919),
                ts: (i as u32).wrapping_mul(104_729),
                invited_at: None,
                setup: None,
                to_tag: None,
                node_rtp: None,
                cseq: 1,
                ended_by_node: false,
                bye_answered: false,
            })
            .collect::<Vec<_>>();
        let by_call_id = calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c.call_id.clone(), i))
            .collect();
        Ok(Load {
            args,
            sip,
            local_sip,
            rtp,
            rtp_addrs,
            calls,
            by_call_id,
            echoes: HashMap::new(),
            wheel: vec![Vec::new(); 20],
            payloads,
            sent: 0,
            sent_at_start: 0,
            late_slots: 0,
            sip_buf: vec![0u8; 65_535],
            tag,
        })
    }

    fn request(&self, i: usize, method: &str, cseq: u32, body: &str) -> String {
        let c = &self.calls[i];
        let to_tag = c
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
            "{method} sip:echo@{node} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{tag}x{i}x{method}{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:load@{local}>;tag=l{i}\r\n\
             To: <sip:echo@{node}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:load@{local}>\r\n\
             {ct}Content-Length: {len}\r\n\r\n{body}",
            node = self.args.sip,
            local = self.local_sip,
            tag = self.tag,
            call_id = c.call_id,
            len = body.len(),
        )
    }

    fn invite(&mut self, i: usize) {
        let rtp = self.rtp_addrs[self.calls[i].socket];
        let (pt, rtpmap) = match self.args.codec {
            LoadCodec::Pcmu => (0, "a=rtpmap:0 PCMU/8000\r\n"),
            LoadCodec::G722 => (9, "a=rtpmap:9 G722/8000\r\n"),
        };
        let sdp = format!(
            "v=0\r\no=load {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {pt} 101\r\n{rtpmap}a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            rtp.port()
        );
        let text = self.request(i, "INVITE", 1, &sdp);
        let _ = self.sip.send_to(text.as_bytes(), self.args.sip);
        self.calls[i].invited_at = Some(Instant::now());
    }

    /// Reads and answers SIP until the socket is empty.
    fn pump_sip(&mut self) {
        loop {
            let (n, from) = match self.sip.recv_from(&mut self.sip_buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            let Ok(msg) = SipMessage::parse(&self.sip_buf[..n]) else {
                continue;
            };
            match msg {
                SipMessage::Response(r) => {
                    let Some(&i) = self.by_call_id.get(&r.headers.call_id) else {
                        continue;
                    };
                    let method = r.headers.cseq.method.as_str().to_string();
                    if method == "INVITE" && r.status >= 200 {
                        let first = self.calls[i].setup.is_none();
                        if r.status < 300 {
                            if first {
                                let c = &mut self.calls[i];
                                c.setup = c.invited_at.map(|t| t.elapsed());
                                c.to_tag = r.headers.to.tag().map(str::to_string);
                                c.node_rtp = SessionDescription::parse(&r.body)
                                    .ok()
                                    .and_then(|s| s.media_address(0));
                                if c.node_rtp.is_some() {
                                    self.wheel[i % 20].push(i);
                                }
                            }
                            // ACK every 2xx (a retransmitted 200 lost our ACK).
                            let ack = self.request(i, "ACK", 1, "");
                            let _ = self.sip.send_to(ack.as_bytes(), from);
                        } else if first {
                            eprintln!("call {i}: INVITE got {}", r.status);
                            self.calls[i].setup = Some(Duration::MAX);
                        }
                    } else if method == "BYE" && r.status >= 200 {
                        self.calls[i].bye_answered = true;
                    }
                }
                SipMessage::Request(req) => {
                    if let Some(&i) = self.by_call_id.get(&req.headers.call_id) {
                        if req.method.as_str() == "BYE" {
                            self.calls[i].ended_by_node = true;
                            self.wheel[i % 20].retain(|&k| k != i);
                        }
                    }
                    let ok = req.response(200, None);
                    let _ = self.sip.send_to(&ok.to_bytes(), from);
                }
            }
        }
    }

    /// Sends the RTP of wheel bucket `b`.
    fn send_bucket(&mut self, b: usize) {
        let self_pt = self.args.codec.payload_type();
        let Load {
            wheel,
            calls,
            rtp,
            payloads,
            sent,
            ..
        } = self;
        for &i in &wheel[b] {
            let c = &mut calls[i];
            let Some(to) = c.node_rtp else { continue };
            let frame = &payloads[(c.ts / 160) as usize % payloads.len()];
            let s = &mut rtp[c.socket];
            let slot = s.slot();
            let header = RtpHeader {
                marker: false,
                payload_type: self_pt,
                sequence: c.seq,
                timestamp: c.ts,
                ssrc: c.ssrc,
            };
            if let Ok(len) = header.write(frame, slot) {
                s.commit(len, to);
                *sent += 1;
            }
            c.seq = c.seq.wrapping_add(1);
            c.ts = c.ts.wrapping_add(160);
        }
        for s in rtp.iter_mut() {
            s.flush();
        }
    }

    fn receive(&mut self) {
        for s in self.rtp.iter_mut() {
            loop {
                let n = s.recv_batch();
                for k in 0..n {
                    let Some((d, _)) = s.received(k) else {
                        continue;
                    };
                    if d.len() < 12 || d[0] >> 6 != 2 || d[1] & 0x7F >= 72 && d[1] & 0x7F <= 76 {
                        continue;
                    }
                    let seq = u16::from_be_bytes([d[2], d[3]]);
                    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                    self.echoes.entry(ssrc).or_default().on_seq(seq);
                }
                if n < BATCH {
                    break;
                }
            }
        }
    }

    /// Runs the RTP wheel and SIP until `until`; `invite` says which calls to INVITE when.
    fn run_until(
        &mut self,
        base: Instant,
        slot: &mut u64,
        until: Instant,
        mut invite: impl FnMut(&mut Self, Instant),
    ) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            invite(self, now);
            self.pump_sip();
            self.receive();
            let mut due = 0;
            while base + Duration::from_millis(*slot) <= now {
                self.send_bucket((*slot % 20) as usize);
                *slot += 1;
                due += 1;
            }
            if due > 1 {
                self.late_slots += due - 1;
            }
            let next = (base + Duration::from_millis(*slot)).min(until);
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                vaani_media::udp::wait_readable(self.rtp[0].socket(), Some(&self.sip), wait);
            }
        }
    }
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let tick = clk_tck();
    let pid = args.pid.map(|p| p.to_string());
    let me = std::process::id().to_string();
    let n = args.calls;
    let rate = args.rate.max(1.0);
    let hold = args.hold;
    let warmup = args.warmup;
    let http = args.http.clone();
    let mut load = Load::new(args)?;

    let rss_before = pid.as_deref().and_then(rss_kib);
    let base = Instant::now();
    let mut slot = 0u64;

    // Setup: INVITEs at `rate` per second while streaming for the calls already up.
    let mut next_invite = 0usize;
    let setup_deadline = base + Duration::from_secs_f64(n as f64 / rate) + Duration::from_secs(10);
    while Instant::now() < setup_deadline
        && (next_invite < n || load.calls.iter().any(|c| c.setup.is_none()))
    {
        let until = (Instant::now() + Duration::from_millis(50)).min(setup_deadline);
        load.run_until(base, &mut slot, until, |l, now| {
            let due = ((now - base).as_secs_f64() * rate) as usize + 1;
            while next_invite < n.min(due) {
                l.invite(next_invite);
                next_invite += 1;
            }
        });
    }
    let set_up = load.calls.iter().filter(|c| c.node_rtp.is_some()).count();
    let mut setups: Vec<Duration> = load
        .calls
        .iter()
        .filter_map(|c| c.setup.filter(|d| *d != Duration::MAX))
        .collect();
    setups.sort();
    eprintln!("{set_up}/{n} calls up; warming up {warmup:?}");

    // Warm-up, then the measured window.
    let t = Instant::now();
    load.run_until(base, &mut slot, t + warmup, |_, _| {});
    let rss_hold = pid.as_deref().and_then(rss_kib);
    for e in load.echoes.values_mut() {
        e.count_at_start = e.count;
        e.ext_at_start = e.ext_max;
    }
    load.sent_at_start = load.sent;
    let late_at_start = load.late_slots;
    let node_cpu0 = pid.as_deref().and_then(|p| cpu_seconds(p, tick));
    let gen_cpu0 = cpu_seconds(&me, tick);
    let counters0 = node_rtp_counters(&http);
    let drops0 = udp_drops();
    let w0 = Instant::now();
    load.run_until(base, &mut slot, w0 + hold, |_, _| {});
    let window = w0.elapsed().as_secs_f64();
    let node_cpu1 = pid.as_deref().and_then(|p| cpu_seconds(p, tick));
    let gen_cpu1 = cpu_seconds(&me, tick);
    let counters1 = node_rtp_counters(&http);
    let drops1 = udp_drops();

    let held = load
        .calls
        .iter()
        .filter(|c| c.node_rtp.is_some() && !c.ended_by_node)
        .count();
    let sent = load.sent - load.sent_at_start;
    let (mut echoed, mut expected_seq) = (0u64, 0u64);
    for e in load.echoes.values() {
        echoed += e.count - e.count_at_start;
        if let (Some(a), Some(b)) = (e.ext_at_start, e.ext_max) {
            expected_seq += b - a;
        }
    }
    let ideal = (held as f64 * window * 50.0).round() as u64;
    let down_seq = 1.0 - echoed as f64 / expected_seq.max(1) as f64;
    let down_rate = 1.0 - echoed as f64 / ideal.max(1) as f64;
    let up = match (counters0, counters1) {
        (Some((r0, l0)), Some((r1, l1))) => {
            let (r, l) = (r1.saturating_sub(r0), l1.saturating_sub(l0));
            Some((r, l, l as f64 / (r + l).max(1) as f64))
        }
        _ => None,
    };
    let node_cpu = match (node_cpu0, node_cpu1) {
        (Some(a), Some(b)) => Some((b - a) / window),
        _ => None,
    };
    let gen_cpu = match (gen_cpu0, gen_cpu1) {
        (Some(a), Some(b)) => Some((b - a) / window),
        _ => None,
    };
    let rss_per_call = match (rss_before, rss_hold) {
        (Some(a), Some(b)) if held > 0 => Some(b.saturating_sub(a) as f64 / held as f64),
        _ => None,
    };

    println!("calls requested        {n}");
    println!("calls set up           {set_up}");
    println!("calls held (window)    {held}");
    println!("window                 {window:.1} s");
    println!(
        "packets sent (window)  {sent}  ({:.0}/s)",
        sent as f64 / window
    );
    println!(
        "packets echoed         {echoed}  ({:.0}/s)",
        echoed as f64 / window
    );
    println!("down loss (seq gaps)   {:.4}%", down_seq.max(0.0) * 100.0);
    println!("down loss (vs 50/s)    {:.4}%", down_rate.max(0.0) * 100.0);
    match up {
        Some((r, l, f)) => println!(
            "up loss (node counts)  {:.4}%  (received {r}, lost {l})",
            f * 100.0
        ),
        None => println!("up loss (node counts)  n/a (no --http)"),
    }
    if let (Some(a), Some(b)) = (drops0, drops1) {
        println!("kernel UDP drops       {}", b.saturating_sub(a));
    }
    println!("generator late slots   {}", load.late_slots - late_at_start);
    if let Some(c) = node_cpu {
        println!("node CPU               {:.1}% of a core", c * 100.0);
        if held > 0 {
            println!(
                "node CPU per call      {:.1} µs per call per second",
                c * 1e6 / held as f64
            );
        }
    }
    if let Some(c) = gen_cpu {
        println!("generator CPU          {:.1}% of a core", c * 100.0);
    }
    if let Some(r) = rss_per_call {
        println!("node RSS per call      {r:.1} KiB");
    }
    println!(
        "setup p50 / p99        {:.2} / {:.2} ms",
        percentile(&setups, 0.5).as_secs_f64() * 1e3,
        percentile(&setups, 0.99).as_secs_f64() * 1e3
    );
    // One line for the table.
    println!(
        "RESULT n={n} held={held} down_loss_pct={:.4} up_loss_pct={} node_cpu_pct={} cpu_us_per_call_s={} rss_kib_per_call={} setup_p50_ms={:.2} setup_p99_ms={:.2} gen_cpu_pct={}",
        down_seq.max(down_rate).max(0.0) * 100.0,
        up.map_or("n/a".into(), |u| format!("{:.4}", u.2 * 100.0)),
        node_cpu.map_or("n/a".into(), |c| format!("{:.1}", c * 100.0)),
        node_cpu.filter(|_| held > 0).map_or("n/a".into(), |c| format!("{:.1}", c * 1e6 / held as f64)),
        rss_per_call.map_or("n/a".into(), |r| format!("{r:.1}")),
        percentile(&setups, 0.5).as_secs_f64() * 1e3,
        percentile(&setups, 0.99).as_secs_f64() * 1e3,
        gen_cpu.map_or("n/a".into(), |c| format!("{:.1}", c * 100.0)),
    );

    // Hang everything up, 1000 BYEs per second, streaming until each is answered.
    let live: Vec<usize> = (0..n)
        .filter(|&i| load.calls[i].node_rtp.is_some() && !load.calls[i].ended_by_node)
        .collect();
    let t = Instant::now();
    let mut next_bye = 0usize;
    let bye_deadline =
        t + Duration::from_secs_f64(live.len() as f64 / 1000.0) + Duration::from_secs(5);
    while Instant::now() < bye_deadline
        && (next_bye < live.len() || live.iter().any(|&i| !load.calls[i].bye_answered))
    {
        let until = (Instant::now() + Duration::from_millis(50)).min(bye_deadline);
        load.run_until(base, &mut slot, until, |l, now| {
            let due = ((now - t).as_secs_f64() * 1000.0) as usize + 1;
            while next_bye < live.len().min(due) {
                let i = live[next_bye];
                l.calls[i].cseq += 1;
                let cseq = l.calls[i].cseq;
                let bye = l.request(i, "BYE", cseq, "");
                let _ = l.sip.send_to(bye.as_bytes(), l.args.sip);
                l.wheel[i % 20].retain(|&k| k != i);
                next_bye += 1;
            }
        });
    }
    let answered = live.iter().filter(|&&i| load.calls[i].bye_answered).count();
    println!("BYEs answered          {answered}/{}", live.len());
    Ok(())
}
