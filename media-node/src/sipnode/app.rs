//! What answers a SIP call's audio: the echo app now, the AI pipeline later. Sans-IO: the
//! call driver hands each 20 ms frame and key press in, and carries out the returned actions.

use crate::codec::PcmFrame;

/// Facts about a call the app may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// Our call id, when the answer webhook sent the call (`X-Vaani-Call-Id`).
    pub call_id: Option<String>,
    pub tenant: Option<String>,
    /// The agent asked for (`X-Vaani-Agent`, or the trunk's); `None`: the app's default.
    pub agent: Option<String>,
    /// The SIP Call-ID (for logs).
    pub sip_call_id: String,
}

/// Makes one handler per call.
pub trait SipApp: Send + Sync + 'static {
    fn start(&self, info: &CallInfo) -> Box<dyn SipCall>;

    /// Whether this app can answer a call for `tenant` asking for `agent` (an INVITE asking
    /// for one it cannot is refused with `404`). Apps without agents take any call.
    fn has_agent(&self, tenant: Option<&str>, agent: &str) -> bool {
        let _ = (tenant, agent);
        true
    }
}

/// One call's audio logic.
pub trait SipCall: Send {
    /// 20 ms of the caller's audio at 16 kHz.
    fn on_audio(&mut self, frame: &PcmFrame, actions: &mut Vec<AppAction>);
    /// A key press (RFC 4733 or SIP INFO).
    fn on_dtmf(&mut self, digit: char, actions: &mut Vec<AppAction>);
    /// The caller started (`true`) or stopped speaking, by the media engine's energy VAD
    /// ([`crate::codec::vad`]). Called before the frame that changed it.
    fn on_speech(&mut self, speaking: bool, actions: &mut Vec<AppAction>) {
        let _ = (speaking, actions);
    }
}

/// What an app asks of the call driver.
// The frame is carried inline (640 bytes): boxing it would allocate per frame on the media
// hot path; the driver's action buffer is allocated once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppAction {
    /// Queue 20 ms of audio (16 kHz) to play.
    Play(PcmFrame),
    /// Drop queued audio (barge-in).
    Clear,
    /// Send a key press to the caller (RFC 4733).
    SendDtmf(char),
    /// End the call with this reason text.
    Hangup(String),
    /// Blind-transfer the caller to this `sip:`/`tel:` target (REFER); calls that cannot be
    /// transferred are hung up.
    Transfer(String),
}

/// `--app echo`: plays back what it hears (after the jitter buffer's delay) and sends every
/// key press back as RFC 4733; `0` also clears what is queued, like the stream echo app.
pub struct EchoApp;

impl SipApp for EchoApp {
    fn start(&self, _info: &CallInfo) -> Box<dyn SipCall> {
        Box::new(Echo)
    }
}

struct Echo;

impl SipCall for Echo {
    fn on_audio(&mut self, frame: &PcmFrame, actions: &mut Vec<AppAction>) {
        actions.push(AppAction::Play(frame.clone()));
    }

    fn on_dtmf(&mut self, digit: char, actions: &mut Vec<AppAction>) {
        if digit == '0' {
            actions.push(AppAction::Clear);
        }
        actions.push(AppAction::SendDtmf(digit));
    }
}
