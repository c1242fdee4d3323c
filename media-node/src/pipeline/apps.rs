//! The pipeline as the media node's app: one [`PipelineApp`] answers SIP calls
//! ([`SipApp`]) and provider media streams ([`MediaApp`]) alike. Each call's media driver
//! hands caller audio in frame by frame and, on the same tick, takes at most one frame of
//! agent audio (or a clear / hang-up) from the call's [`OutQueue`](super::out::OutQueue).

use std::time::Instant;

use super::call::{self, CallIds, CallLink, Input, PipelineConfig};
use super::out::Outgoing;
use crate::codec::{AudioFormat, FrameDecoder, FrameEncoder, PcmFrame, Reframer, FRAME_SAMPLES};
use crate::server::{Action, CallHandler, MediaApp};
use crate::sipnode::app::{AppAction, CallInfo, SipApp, SipCall};
use crate::streams::{Event, StartInfo};

/// `--app agent`: every call talks to the agent.
pub struct PipelineApp {
    pub config: PipelineConfig,
}

impl SipApp for PipelineApp {
    fn start(&self, info: &CallInfo) -> Box<dyn SipCall> {
        let link = call::start(
            &self.config,
            CallIds {
                call_id: info.call_id.clone(),
                tenant: info.tenant.clone(),
                transport_id: info.sip_call_id.clone(),
            },
        );
        Box::new(SipPipeline { link })
    }
}

struct SipPipeline {
    link: CallLink,
}

/// Turn what the out queue gives into what a SIP call does; `true` when it was audio.
fn sip_action(out: Option<Outgoing>, actions: &mut Vec<AppAction>) -> bool {
    match out {
        Some(Outgoing::Audio(pcm)) => {
            let mut frame = PcmFrame::silence();
            let n = pcm.len().min(FRAME_SAMPLES);
            frame.samples[..n].copy_from_slice(&pcm[..n]);
            actions.push(AppAction::Play(frame));
            true
        }
        Some(Outgoing::Clear) => {
            actions.push(AppAction::Clear);
            false
        }
        Some(Outgoing::Hangup(reason)) => {
            actions.push(AppAction::Hangup(reason));
            false
        }
        Some(Outgoing::Transfer(target)) => {
            actions.push(AppAction::Transfer(target));
            false
        }
        None => false,
    }
}

impl SipCall for SipPipeline {
    fn on_audio(&mut self, frame: &PcmFrame, actions: &mut Vec<AppAction>) {
        let audible = sip_action(self.link.out.take(Instant::now()), actions);
        self.link.send(Input::Frame {
            pcm: frame.samples.to_vec(),
            agent_audible: audible,
        });
    }

    fn on_dtmf(&mut self, digit: char, _actions: &mut Vec<AppAction>) {
        self.link.send(Input::Dtmf(digit));
    }
}

impl MediaApp for PipelineApp {
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler> {
        let link = call::start(
            &self.config,
            CallIds {
                call_id: info.call_id.clone(),
                tenant: None,
                transport_id: info.stream_id.clone(),
            },
        );
        Box::new(StreamPipeline::new(link, info.format, info.outbound_format))
    }
}

struct StreamPipeline {
    link: CallLink,
    decoder: FrameDecoder,
    reframer: Reframer,
    encoder: FrameEncoder,
    /// A 16-bit sample split across two chunks.
    carry: Vec<u8>,
    pcm: Vec<i16>,
}

impl StreamPipeline {
    fn new(link: CallLink, inbound: AudioFormat, outbound: AudioFormat) -> Self {
        StreamPipeline {
            link,
            decoder: FrameDecoder::new(inbound),
            reframer: Reframer::new(),
            encoder: FrameEncoder::new(outbound),
            carry: Vec::new(),
            pcm: Vec::new(),
        }
    }

    fn on_media(&mut self, payload: &[u8], actions: &mut Vec<Action>) {
        let bps = self.decoder.format().encoding.unit_bytes();
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(payload);
        let whole = input.len() / bps * bps;
        self.pcm.resize(self.decoder.output_len(whole), 0);
        let n = match self.decoder.decode(&input[..whole], &mut self.pcm) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "stream audio not decoded");
                return;
            }
        };
        self.carry = input[whole..].to_vec();
        let StreamPipeline {
            link,
            reframer,
            encoder,
            pcm,
            ..
        } = self;
        let mut audio = Vec::new();
        let mut controls = Vec::new();
        reframer.push(pcm.get(..n).unwrap_or_default(), |frame| {
            let out = link.out.take(Instant::now());
            let audible = matches!(out, Some(Outgoing::Audio(_)));
            match out {
                Some(Outgoing::Audio(agent)) => {
                    let start = audio.len();
                    audio.resize(start + encoder.output_len(agent.len()), 0);
                    match encoder.encode(&agent, &mut audio[start..]) {
                        Ok(w) => audio.truncate(start + w),
                        Err(_) => audio.truncate(start),
                    }
                }
                Some(Outgoing::Clear) => controls.push(Action::Clear),
                Some(Outgoing::Hangup(_)) | Some(Outgoing::Transfer(_)) => {
                    controls.push(Action::Hangup)
                }
                None => {}
            }
            link.send(Input::Frame {
                pcm: frame.samples.to_vec(),
                agent_audible: audible,
            });
        });
        // A clear drops what was queued before it, so it goes first.
        if controls.contains(&Action::Clear) {
            actions.push(Action::Clear);
        }
        if !audio.is_empty() {
            actions.push(Action::Audio(audio));
        }
        if controls.contains(&Action::Hangup) {
            actions.push(Action::Flush);
            actions.push(Action::Hangup);
        }
    }
}

impl CallHandler for StreamPipeline {
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>) {
        match event {
            Event::Media(m) => self.on_media(&m.payload, actions),
            Event::Dtmf { digit, .. } => self.link.send(Input::Dtmf(*digit)),
            _ => {}
        }
    }
}
