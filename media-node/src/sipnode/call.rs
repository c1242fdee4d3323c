//! One call's media task: owns the call's RTP socket and runs its sans-IO [`RtpSession`] and
//! app handler against real time. It talks to the SIP task through two bounded channels: it
//! gets [`MediaCmd`]s (renegotiation, INFO key presses, stop) and sends [`SipCmd::Hangup`]
//! when the media says the call is over (RTP timeout, the app hanging up).

use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use std::sync::Arc;

use super::app::{AppAction, SipCall};
use super::registry::CallRegistry;
use super::SipCmd;
use crate::metrics::{EndReason as CallEndReason, Metrics};
use crate::rtp::session::{MediaEvent, RtpSession, DEFAULT_DTMF_DURATION};
use crate::sip::sdp::Direction;
use crate::sip::uas::CallHandle;

/// What the SIP task tells a call's media task.
#[derive(Debug)]
pub enum MediaCmd {
    /// A re-INVITE changed where and whether to send.
    Update {
        remote: Option<std::net::SocketAddr>,
        direction: Direction,
        /// The codec, when it changed: the session restarts with it.
        codec: Option<(crate::codec::AudioFormat, u8, Option<u8>)>,
    },
    /// A key press arrived by SIP INFO.
    Dtmf(char),
}

/// Everything a call's task owns.
pub(super) struct CallTask {
    pub call: CallHandle,
    pub socket: UdpSocket,
    pub session: RtpSession,
    pub app: Box<dyn SipCall>,
    pub commands: mpsc::Receiver<MediaCmd>,
    pub sip: mpsc::Sender<SipCmd>,
    pub registry: CallRegistry,
    pub metrics: Arc<Metrics>,
    /// RTP counts already added to the node's metrics (the session's counters restart with a
    /// codec change).
    pub published: Published,
}

/// What a call's task has added to the node's RTP counters so far.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Published {
    received: u64,
    lost: u64,
}

impl CallTask {
    /// Runs until the SIP task drops the command channel (the call ended).
    pub async fn run(mut self) {
        let mut inbound = vec![0u8; 2048];
        let mut outbound = vec![0u8; 1500];
        let mut actions = Vec::with_capacity(8);
        let id = self.call.as_u64();
        let mut last_published = Instant::now();
        loop {
            let now = Instant::now();
            self.session.handle_timeout(now);
            while let Some(frame) = self.session.poll_audio() {
                self.app.on_audio(&frame, &mut actions);
            }
            while let Some(event) = self.session.poll_event() {
                match event {
                    MediaEvent::Dtmf { digit, duration } => {
                        tracing::info!(call = id, %digit, ms = duration.as_millis() as u64, "DTMF (RFC 4733)");
                        self.registry.update(id, |r| r.digits.push(digit));
                        self.app.on_dtmf(digit, &mut actions);
                    }
                    MediaEvent::DtmfBegan { .. } => {}
                    MediaEvent::Latched(addr) => {
                        tracing::debug!(call = id, %addr, "RTP latched");
                        self.registry
                            .update(id, |r| r.latched = Some(addr.to_string()));
                    }
                    MediaEvent::Timeout => {
                        tracing::info!(call = id, "no RTP: hanging up");
                        let _ = self
                            .sip
                            .send(SipCmd::Hangup {
                                call: self.call,
                                cause: 408,
                                text: "RTP timeout".into(),
                                reason: CallEndReason::RtpTimeout,
                            })
                            .await;
                    }
                }
            }
            self.apply(&mut actions).await;
            while let Some(t) = self.session.poll_transmit(now, &mut outbound) {
                if let Err(e) = self.socket.send_to(&outbound[..t.len], t.to).await {
                    tracing::debug!(call = id, error = %e, "RTP send failed");
                }
            }
            if now.duration_since(last_published).as_millis() >= 500 {
                last_published = now;
                self.publish();
            }
            let sleep = self
                .session
                .next_deadline()
                .map(|d| tokio::time::sleep_until(tokio::time::Instant::from_std(d)));
            tokio::select! {
                r = self.socket.recv_from(&mut inbound) => {
                    if let Ok((n, from)) = r {
                        self.session.receive(Instant::now(), &inbound[..n], from);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(MediaCmd::Update { remote, direction, codec }) => {
                        self.renegotiate(remote, direction, codec);
                    }
                    Some(MediaCmd::Dtmf(digit)) => {
                        self.registry.update(id, |r| r.digits.push(digit));
                        self.app.on_dtmf(digit, &mut actions);
                    }
                },
                () = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
            }
        }
        self.publish();
        self.metrics
            .rtp_jitter(self.session.jitter().stats().jitter_duration());
    }

    fn renegotiate(
        &mut self,
        remote: Option<std::net::SocketAddr>,
        direction: Direction,
        codec: Option<(crate::codec::AudioFormat, u8, Option<u8>)>,
    ) {
        let now = Instant::now();
        if let Some((format, payload_type, dtmf)) = codec {
            let mut cfg = self.session.config().clone();
            cfg.format = format;
            cfg.payload_type = payload_type;
            cfg.dtmf_payload_type = dtmf;
            cfg.remote = remote.or(cfg.remote);
            cfg.direction = direction;
            match RtpSession::new(now, cfg) {
                Ok(s) => {
                    // The new session counts from zero.
                    self.publish();
                    self.published = Published::default();
                    self.session = s;
                }
                Err(e) => {
                    tracing::warn!(call = self.call.as_u64(), error = %e, "codec change failed")
                }
            }
        } else {
            self.session.update(now, remote, direction);
        }
    }

    fn publish(&mut self) {
        let c = self.session.counters();
        let lost = u64::try_from(self.session.jitter().stats().cumulative_lost()).unwrap_or(0);
        self.metrics
            .rtp_received(c.received.saturating_sub(self.published.received));
        self.metrics
            .rtp_lost(lost.saturating_sub(self.published.lost));
        self.published = Published {
            received: c.received.max(self.published.received),
            lost: lost.max(self.published.lost),
        };
        self.registry.update(self.call.as_u64(), |r| {
            r.rtp_received = c.received;
            r.rtp_sent = c.sent;
        });
    }

    async fn apply(&mut self, actions: &mut Vec<AppAction>) {
        for action in actions.drain(..) {
            match action {
                AppAction::Play(frame) => {
                    self.session.send_audio(&frame);
                }
                AppAction::Clear => self.session.clear_audio(),
                AppAction::SendDtmf(digit) => {
                    if let Err(e) = self.session.send_dtmf(digit, DEFAULT_DTMF_DURATION) {
                        tracing::debug!(call = self.call.as_u64(), error = %e, "DTMF not sent");
                    }
                }
                AppAction::Hangup(text) => {
                    let _ = self
                        .sip
                        .send(SipCmd::Hangup {
                            call: self.call,
                            cause: 200,
                            text,
                            reason: CallEndReason::AgentHangup,
                        })
                        .await;
                }
                AppAction::Transfer(to) => {
                    let _ = self
                        .sip
                        .send(SipCmd::TransferCall {
                            call: self.call,
                            to,
                        })
                        .await;
                }
            }
        }
    }
}
