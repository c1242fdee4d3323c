//! A real SIP phone calls the node: baresip → `vaani dev --sip` (echo app) over loopback UDP.
//!
//! baresip runs headless from a config dir written from `tests/baresip/` (free ports chosen at
//! run time): it plays a 1 kHz tone from a WAV file (`aufile`), and `sndfile` records the audio
//! it decodes from the far end. The test dials `sip:echo@<node>` over `ctrl_tcp`, lets the call
//! run a few seconds, hangs up, and checks that what baresip *heard* is our tone coming back:
//! the dominant frequency is 1 kHz (Goertzel against neighbouring frequencies), the level is
//! about what was sent, and it lasted most of the call. The node's own record of the call
//! (`GET /debug/sip/calls`) must show it ended by the caller's BYE.
//!
//! A second call does the same in G.722 (`vaani dev --sip-codecs g722`, baresip with only its
//! spandsp-based `g722` module): a 6 kHz tone at 16 kHz, which no 8 kHz leg could carry, must
//! come back: our decoder, echo and encoder interoperate with another implementation.
//!
//! node → baresip is `tests/sip_outbound.rs`.
//!
//! Skipped (with a printed line) when baresip is not installed, unless `VAANI_REQUIRE_BARESIP`
//! is set, as `scripts/test.sh` does after installing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::baresip::{
    assert_heard, baresip_available, ended_call, write_tone, Baresip, PhoneSetup, Tone,
};
use common::start_dev_with;

/// How long the call runs before we hang up.
const CALL: Duration = Duration::from_secs(4);

/// One call from baresip (config template `config`, account `accounts`, playing `tone`) to
/// `vaani dev --app echo` with `dev_args`, hung up after [`CALL`]; checks the node's record
/// (ended by baresip's BYE, in `codec`, 50 packets/s both ways) and baresip's recording.
fn echo_call(config: &str, accounts: &str, tone: Tone, dev_args: &[&str], codec: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The tone lasts far longer than the call: baresip hangs up when its source file ends.
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 30, tone);
    let setup = PhoneSetup::write_with_config(dir.path(), config, accounts, &wav);

    let mut args = vec!["--app", "echo"];
    args.extend_from_slice(dev_args);
    let dev = start_dev_with(data.to_str().unwrap(), &args);
    let mut phone = Baresip::start(&setup.cfg, setup.ctrl_port);
    phone.command("dial", &format!("sip:echo@{}", dev.sip));
    let established = phone.event("CALL_ESTABLISHED", Duration::from_secs(10));
    let sip_call_id = established["id"].as_str().unwrap().to_string();
    std::thread::sleep(CALL);
    phone.command("hangup", "");
    phone.event("CALL_CLOSED", Duration::from_secs(10));
    phone.quit();

    let r = ended_call(&dev.addr, &sip_call_id);
    assert_eq!(r["end_reason"], "remote_bye", "{r}");
    assert_eq!(r["direction"], "inbound", "{r}");
    assert_eq!(r["codec"], codec, "{r}");
    assert_eq!(r["source"], format!("127.0.0.1:{}", setup.sip_port), "{r}");
    let (received, sent) = (
        r["rtp_received"].as_u64().unwrap(),
        r["rtp_sent"].as_u64().unwrap(),
    );
    // 50 packets/s for the 4 s call.
    assert!(received >= 150 && sent >= 150, "{r}");

    // What baresip decoded from the node is our tone coming back.
    assert_heard(&setup.rec, 2.5, &phone.output(), tone);
}

#[test]
fn baresip_calls_the_echo_app_and_hears_its_tone_back() {
    if baresip_available() {
        echo_call("config", "accounts", Tone::NARROW, &[], "PCMU");
    }
}

#[test]
fn baresip_calls_in_g722_and_hears_a_wideband_tone_back() {
    if baresip_available() {
        let codecs = ["--sip-codecs", "g722,pcmu"];
        echo_call("config-g722", "accounts-g722", Tone::WIDE, &codecs, "G722");
    }
}
