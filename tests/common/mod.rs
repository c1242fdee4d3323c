//! Shared helpers of the end-to-end tests: run the `vaani` binary, start `vaani dev`, speak
//! HTTP to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod baresip;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn vaani(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaani"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vaani")
}

pub fn vaani_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaani"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaani");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub struct Dev {
    pub child: Child,
    /// The HTTP address (`http=` of the ready line).
    pub addr: String,
    /// The SIP address (`sip=` of the ready line).
    pub sip: String,
    /// The SIP over TLS address (`sip_tls=`), with `--sip-tls`.
    #[allow(dead_code)]
    pub sip_tls: Option<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vaani dev` on free ports (HTTP and SIP on port 0), waiting for its ready line.
pub fn start_dev(data: &str) -> Dev {
    start_dev_with(data, &[])
}

/// [`start_dev`] with extra arguments.
pub fn start_dev_with(data: &str, extra: &[&str]) -> Dev {
    start_dev_with_env(data, extra, &[])
}

/// [`start_dev_with`] with extra environment variables for `vaani dev`.
#[allow(dead_code)]
pub fn start_dev_with_env(data: &str, extra: &[&str], env: &[(&str, &str)]) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaani"))
        .args([
            "dev",
            "--http",
            "127.0.0.1:0",
            "--sip",
            "127.0.0.1:0",
            "--data",
            data,
        ])
        .args(extra)
        // Media tests talk to the echo app unless they ask for another.
        .args(if extra.contains(&"--app") {
            &[][..]
        } else {
            &["--app", "echo"][..]
        })
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vaani dev");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("ready ") {
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key))
                    .map(str::to_string)
            };
            let addr = field("http=").expect("ready line names the http address");
            let sip = field("sip=").expect("ready line names the SIP address");
            let sip_tls = field("sip_tls=");
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Dev {
                child,
                addr,
                sip,
                sip_tls,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("vaani dev did not print a ready line");
}

/// An HTTP response as [`request`] reads it.
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 request over a plain socket (loopback only; `Connection: close`, no
/// chunked bodies).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> Response {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    // Read the head, then the body by Content-Length (some servers, Chromium's DevTools
    // endpoint among them, keep the connection open after the body), else to EOF.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break raw.len();
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw.get(head_end + 4..).unwrap_or_default().to_vec();
    match headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body).unwrap();
        }
    }
    let body = String::from_utf8_lossy(&body).to_string();
    Response {
        status,
        headers,
        body,
    }
}

/// A minimal HTTP/1.1 POST over a plain socket (loopback only).
pub fn post(addr: &str, path: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let r = request(addr, "POST", path, headers, body);
    (r.status, r.body)
}

/// POST a form body to `vaani dev`, signed as `provider` would sign it (`vaani webhook sign`).
pub fn signed_post(
    addr: &str,
    provider: &str,
    secret: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let signed = vaani(&[
        "webhook",
        "sign",
        "--provider",
        provider,
        "--secret",
        secret,
        "--url",
        &url,
        "--body-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(signed.status.code(), Some(0), "{signed:?}");
    let mut headers: Vec<(String, String)> = stdout(&signed)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    headers.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    post(addr, path, &headers, body)
}

/// `X-Twilio-Signature` for a WebSocket upgrade to `url` (Twilio signs the URL as a GET).
pub fn twilio_upgrade_signature(url: &str, secret: &str) -> Vec<(String, String)> {
    let req = vaani_telephony::WebhookRequest {
        method: http::Method::GET,
        url: url.to_string(),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
        source_ip: None,
    };
    vaani_telephony::sign_headers(
        vaani_events::Provider::Twilio,
        secret,
        &req,
        None,
        chrono::Utc::now(),
    )
    .unwrap()
}
