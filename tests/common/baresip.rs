//! baresip as a test peer (headless, driven over `ctrl_tcp`), and what its recordings are
//! checked with: WAV read/write, RMS, Goertzel. Shared by `tests/baresip.rs` (baresip calls
//! the node) and `tests/sip_outbound.rs` (the node calls baresip).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RATE: u32 = 8000;
pub const TONE_HZ: f64 = 1000.0;
pub const AMPLITUDE: f64 = 12_000.0;

/// A test tone: the WAV baresip plays, and what its recording is checked for.
#[derive(Debug, Clone, Copy)]
pub struct Tone {
    /// Sample rate of the WAV and of baresip's recording.
    pub rate: u32,
    pub hz: f64,
    pub amplitude: f64,
}

impl Tone {
    /// 1 kHz at 8 kHz: what every G.711 call carries.
    pub const NARROW: Tone = Tone {
        rate: RATE,
        hz: TONE_HZ,
        amplitude: AMPLITUDE,
    };
    /// 6 kHz at 16 kHz: above what any 8 kHz leg can carry, so hearing it proves the call
    /// stayed wideband end to end.
    pub const WIDE: Tone = Tone {
        rate: 16_000,
        hz: 6000.0,
        amplitude: AMPLITUDE,
    };
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether baresip is here; without it the test is skipped, unless `VAANI_REQUIRE_BARESIP` is
/// set.
pub fn baresip_available() -> bool {
    let ok = find_on_path("baresip").is_some();
    if !ok {
        assert!(
            std::env::var_os("VAANI_REQUIRE_BARESIP").is_none(),
            "baresip is required (apt-get install baresip)"
        );
        eprintln!("skipping: baresip not installed (apt-get install baresip)");
    }
    ok
}

pub fn module_path() -> &'static str {
    ["/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"]
        .into_iter()
        .find(|p| Path::new(p).join("aufile.so").is_file())
        .expect("baresip modules (aufile.so) not found")
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A range of 8 free UDP ports starting at an even one, for baresip's RTP/RTCP.
pub fn free_rtp_range() -> (u16, u16) {
    loop {
        let p = free_udp_port() & !1;
        if !(1024..=65_000).contains(&p) {
            continue;
        }
        if (p..p + 8).all(|q| UdpSocket::bind(("127.0.0.1", q)).is_ok()) {
            return (p, p + 7);
        }
    }
}

/// A mono 16-bit PCM WAV file.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = u32::try_from(samples.len() * 2).unwrap();
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// Reads a mono 16-bit PCM WAV file (as libsndfile writes it), walking its chunks.
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    assert!(
        b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "{}: not a WAV file",
        path.display()
    );
    let (mut pos, mut rate, mut data) = (12usize, None, None);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &b[pos + 8..(pos + 8 + len).min(b.len())];
        match id {
            b"fmt " => {
                let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                assert_eq!(
                    (u16_at(0), u16_at(2), u16_at(14)),
                    (1, 1, 16),
                    "{}: expected mono 16-bit PCM",
                    path.display()
                );
                rate = Some(u32::from_le_bytes(body[4..8].try_into().unwrap()));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    let rate = rate.unwrap_or_else(|| panic!("{}: no fmt chunk", path.display()));
    let data = data.unwrap_or_else(|| panic!("{}: no data chunk", path.display()));
    let samples = data
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (rate, samples)
}

pub fn goertzel(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

pub fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// baresip as a child process, killed on drop; its output goes to a file for failure messages.
pub struct Baresip {
    child: Child,
    log: PathBuf,
    ctrl: Option<Ctrl>,
}

impl Baresip {
    pub fn start(config_dir: &Path, ctrl_port: u16) -> Baresip {
        let log = config_dir.join("baresip.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(config_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn baresip");
        let mut b = Baresip {
            child,
            log,
            ctrl: None,
        };
        // Ready once ctrl_tcp accepts connections.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!("baresip exited early ({status}):\n{}", b.output());
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                b.ctrl = Some(Ctrl::new(s));
                return b;
            }
            if Instant::now() > deadline {
                panic!("baresip's ctrl_tcp did not listen:\n{}", b.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of baresip's output (its status line is redrawn with `\r`: one line each).
    pub fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let text = text.replace('\r', "\n");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sends a command and waits for its response; panics with baresip's output on failure.
    pub fn command(&mut self, cmd: &str, params: &str) -> serde_json::Value {
        let r = self.ctrl.as_mut().unwrap().command(cmd, params);
        match r {
            Ok(v) if v["ok"] == true => v,
            other => panic!(
                "baresip command {cmd:?} {params:?} failed: {other:?}\n{}",
                self.output()
            ),
        }
    }

    /// Waits for an event of this type (earlier ones included).
    pub fn event(&mut self, ty: &str, timeout: Duration) -> serde_json::Value {
        let r = self.ctrl.as_mut().unwrap().event(ty, timeout);
        r.unwrap_or_else(|e| {
            panic!(
                "no {ty} event from baresip: {e}\nevents: {:?}\n{}",
                self.ctrl.as_ref().unwrap().events,
                self.output()
            )
        })
    }

    /// Asks baresip to quit (closing its recordings) and waits for it to exit.
    pub fn quit(&mut self) {
        let _ = self.ctrl.as_mut().unwrap().send("quit", "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("baresip did not quit:\n{}", self.output());
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// baresip's `ctrl_tcp`: JSON commands and replies/events, each framed as a netstring.
pub struct Ctrl {
    s: TcpStream,
    buf: Vec<u8>,
    /// Every event seen so far, in order.
    events: Vec<serde_json::Value>,
    token: u32,
}

impl Ctrl {
    fn new(s: TcpStream) -> Ctrl {
        Ctrl {
            s,
            buf: Vec::new(),
            events: Vec::new(),
            token: 0,
        }
    }

    fn send(&mut self, cmd: &str, params: &str) -> std::io::Result<String> {
        self.token += 1;
        let token = format!("t{}", self.token);
        let msg = serde_json::json!({"command": cmd, "params": params, "token": token}).to_string();
        self.s
            .write_all(format!("{}:{msg},", msg.len()).as_bytes())?;
        Ok(token)
    }

    /// The next netstring before `deadline`, or `None` on timeout.
    fn next(&mut self, deadline: Instant) -> Result<Option<serde_json::Value>, String> {
        loop {
            if let Some(colon) = self.buf.iter().position(|&c| c == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad netstring length in {:?}", self.buf))?;
                if self.buf.len() > colon + len + 1 {
                    if self.buf[colon + 1 + len] != b',' {
                        return Err("netstring without its trailing comma".into());
                    }
                    let v = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                        .map_err(|e| format!("bad JSON from ctrl_tcp: {e}"))?;
                    self.buf.drain(..colon + len + 2);
                    return Ok(Some(v));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("ctrl_tcp connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    pub fn command(&mut self, cmd: &str, params: &str) -> Result<serde_json::Value, String> {
        let token = self.send(cmd, params).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.next(deadline)? {
                Some(v) if v["event"] == true => self.events.push(v),
                Some(v) if v["response"] == true && v["token"] == token.as_str() => return Ok(v),
                Some(_) => {}
                None => return Err("no response within 10 s".into()),
            }
        }
    }

    pub fn event(&mut self, ty: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        if let Some(v) = self.events.iter().find(|e| e["type"] == ty) {
            return Ok(v.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline)? {
                Some(v) if v["event"] == true => {
                    self.events.push(v.clone());
                    if v["type"] == ty {
                        return Ok(v);
                    }
                }
                Some(_) => {}
                None => return Err(format!("timed out after {timeout:?}")),
            }
        }
    }
}

pub fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The node's record of the call with this SIP Call-ID, once it has ended.
pub fn ended_call(http: &str, sip_call_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&get(http, "/debug/sip/calls")).unwrap();
        let found = v["ended"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["sip_call_id"] == sip_call_id).cloned());
        match found {
            Some(r) => return r,
            None if Instant::now() > deadline => {
                panic!("the node has no ended call {sip_call_id:?}: {v}")
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A config directory for one baresip from `tests/baresip/` (`accounts` is the account
/// template: `accounts` dials out, `accounts-answer` auto-answers), playing `wav` and
/// recording into `rec`; free ports picked now.
pub struct PhoneSetup {
    pub cfg: PathBuf,
    pub rec: PathBuf,
    pub sip_port: u16,
    pub ctrl_port: u16,
}

impl PhoneSetup {
    pub fn write(dir: &Path, accounts: &str, wav: &Path) -> PhoneSetup {
        PhoneSetup::write_with_config(dir, "config", accounts, wav)
    }

    /// As [`write`](Self::write), from the config template `config` in `tests/baresip/`.
    pub fn write_with_config(dir: &Path, config: &str, accounts: &str, wav: &Path) -> PhoneSetup {
        let cfg = dir.join("baresip");
        let rec = dir.join("rec");
        for d in [&cfg, &rec] {
            std::fs::create_dir_all(d).unwrap();
        }
        let (sip_port, ctrl_port) = (free_udp_port(), free_tcp_port());
        let (rtp_lo, rtp_hi) = free_rtp_range();
        let fill = |template: &str| {
            std::fs::read_to_string(format!(
                "{}/tests/baresip/{template}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
            .replace("@SIP_PORT@", &sip_port.to_string())
            .replace("@CTRL_PORT@", &ctrl_port.to_string())
            .replace("@RTP_PORTS@", &format!("{rtp_lo}-{rtp_hi}"))
            .replace("@MODULE_PATH@", module_path())
            .replace("@AUDIO_WAV@", wav.to_str().unwrap())
            .replace("@REC_DIR@", rec.to_str().unwrap())
        };
        std::fs::write(cfg.join("config"), fill(config)).unwrap();
        std::fs::write(cfg.join("accounts"), fill(accounts)).unwrap();
        std::fs::write(cfg.join("contacts"), "").unwrap();
        PhoneSetup {
            cfg,
            rec,
            sip_port,
            ctrl_port,
        }
    }
}

/// `seconds` of the test tone at [`RATE`], as WAV: long enough that baresip, which hangs up
/// when its source ends, outlives the call.
pub fn write_tone_wav(path: &Path, seconds: usize) {
    write_tone(path, seconds, Tone::NARROW);
}

/// `seconds` of `tone`, as WAV.
pub fn write_tone(path: &Path, seconds: usize, tone: Tone) {
    let samples: Vec<i16> = (0..tone.rate as usize * seconds)
        .map(|i| {
            let t = i as f64 / f64::from(tone.rate);
            (tone.amplitude * (2.0 * std::f64::consts::PI * tone.hz * t).sin()) as i16
        })
        .collect();
    write_wav(path, tone.rate, &samples);
}

/// Checks what baresip decoded from the far end (`dump-<time>-dec.wav` in `rec`): at least
/// `min_loud_secs` of sound, at the level sent (±30%), with the tone dominant over its
/// neighbours (Goertzel).
pub fn assert_heard_tone(rec: &Path, min_loud_secs: f64, phone_output: &str) {
    assert_heard(rec, min_loud_secs, phone_output, Tone::NARROW);
}

/// [`assert_heard_tone`] for any [`Tone`]: neighbours at fixed ratios of its frequency, below
/// the recording's Nyquist frequency.
pub fn assert_heard(rec: &Path, min_loud_secs: f64, phone_output: &str, tone: Tone) {
    let dec: Vec<PathBuf> = std::fs::read_dir(rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .collect();
    assert_eq!(
        dec.len(),
        1,
        "expected one recording of received audio in {}: {dec:?}\n{phone_output}",
        rec.display(),
    );
    let (rate, heard) = read_wav(&dec[0]);
    assert_eq!(rate, tone.rate, "recording's sample rate");
    // 20 ms frames carrying sound: the echo of our tone, after its round trip.
    let frame = rate as usize / 50;
    let loud: Vec<i16> = heard
        .chunks_exact(frame)
        .filter(|f| rms(f) > tone.amplitude / 10.0)
        .flatten()
        .copied()
        .collect();
    let loud_secs = loud.len() as f64 / f64::from(rate);
    let heard_secs = heard.len() as f64 / f64::from(rate);
    assert!(
        loud_secs >= min_loud_secs,
        "only {loud_secs:.2} s of sound in {heard_secs:.2} s received"
    );
    let level = rms(&loud);
    let sent_level = tone.amplitude / std::f64::consts::SQRT_2;
    assert!(
        (0.7 * sent_level..1.3 * sent_level).contains(&level),
        "received level {level:.0} RMS, sent {sent_level:.0}"
    );
    let at = |f: f64| goertzel(&loud, f64::from(rate), f);
    let hz = tone.hz;
    let tone_power = at(hz);
    eprintln!(
        "heard {heard_secs:.2} s, {loud_secs:.2} s of it loud at {level:.0} RMS; {hz} Hz power {tone_power:.3e}"
    );
    let nyquist = f64::from(rate) / 2.0;
    for other in [0.25, 0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0, 3.0]
        .map(|r| r * hz)
        .into_iter()
        .filter(|f| *f < nyquist)
    {
        assert!(
            tone_power > 100.0 * at(other),
            "{hz} Hz power {tone_power:.3e} is not dominant over {other} Hz ({:.3e})",
            at(other)
        );
    }
}
