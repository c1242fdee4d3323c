//! Shared helpers for the media-stream tests: fixtures, tokens and a virtual-time driver.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;
use vaani_media::streams::{Dialect, Session, SessionConfig, TokenAuth};

pub const KEY: &[u8] = b"test-media-key";
pub const TENANT: &str = "acme";
pub const CALL_ID: &str = "call-1";

pub fn t0_utc() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// A media token for `call_id`, issued at `t0_utc()` and valid for 300 s.
pub fn token(call_id: &str) -> String {
    vaani_core::token::issue(KEY, TENANT, call_id, t0_utc(), 300)
}

pub fn auth_config() -> SessionConfig {
    SessionConfig::authenticated(TokenAuth::new(KEY, TENANT))
}

fn dir(provider: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events/samples/streams")
        .join(provider)
}

/// The text of `events/samples/streams/<provider>/<name>`, with `@TOKEN@` replaced by a valid
/// token for `CALL_ID`.
pub fn fixture(provider: &str, name: &str) -> String {
    let p = dir(provider).join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.replace("@TOKEN@", &token(CALL_ID))
}

/// Every fixture file name of a provider, sorted.
pub fn fixture_names(provider: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir(provider))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Everything due at `now`.
pub fn drain<D: Dialect>(s: &mut Session<D>, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(f) = s.poll_transmit(now) {
        out.push(f);
    }
    out
}

/// Drive the session in virtual time from `start` until nothing is pending or `until`,
/// jumping from deadline to deadline. Returns each frame with its send time since `start`.
pub fn run<D: Dialect>(
    s: &mut Session<D>,
    start: Instant,
    until: Instant,
) -> Vec<(Duration, String)> {
    let mut now = start;
    let mut out = Vec::new();
    loop {
        while let Some(f) = s.poll_transmit(now) {
            out.push((now - start, f));
        }
        match s.next_deadline() {
            None => break,
            Some(d) => {
                assert!(
                    d > now,
                    "deadline {d:?} not after {now:?} yet nothing was sent"
                );
                if d > until {
                    break;
                }
                now = d;
            }
        }
    }
    out
}

/// The decoded `media.payload` of an outbound media frame (Twilio/Exotel/Telnyx `media`,
/// Plivo `playAudio`), or `None` for other frames.
pub fn media_payload(frame: &str) -> Option<Vec<u8>> {
    let v = json(frame);
    match v["event"].as_str()? {
        "media" | "playAudio" => Some(unb64(v["media"]["payload"].as_str()?)),
        _ => None,
    }
}
