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
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Dev { child, addr, sip };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("vaani dev did not print a ready line");
}

/// A minimal HTTP/1.1 POST over a plain socket (loopback only).
pub fn post(addr: &str, path: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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
