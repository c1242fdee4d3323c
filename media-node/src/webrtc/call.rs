//! One WebRTC call: the peer connection's setup (offer in, answer out once ICE gathering is
//! done) and the task that carries its audio until it ends.
//!
//! The `webrtc` crate's driver owns the call's UDP socket, ICE, DTLS and SRTP; this task owns
//! the audio: inbound Opus packets are decoded into 20 ms frames for the app ([`SipCall`]), and
//! what the app plays is queued and sent as one Opus packet every 20 ms. It also decides when
//! the call is over: a `DELETE`, the browser closing the connection, ICE failing or never
//! completing, no RTP for the node's RTP timeout, the app hanging up, or the node stopping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use ::webrtc::media_stream::track_local::TrackLocal;
use ::webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use ::webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, watch};

use super::opus::{OpusDecoder, OpusEncoder};
use super::WebRtcCallRecord;
use crate::codec::{PcmFrame, FRAME_MS};
use crate::metrics::{CallEnd, EndReason, Metrics, Transport};
use crate::sipnode::app::{AppAction, SipCall};
use crate::sipnode::registry::CallRegistry;

/// The payload type we register Opus under; the answer uses the offer's own number.
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Most frames queued to play (1 s); older ones are dropped when the app gets ahead.
const MAX_QUEUED: usize = 50;
/// How long ICE gathering may take before the offer is refused (host candidates only: instant).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound packets waiting for the call task; more are dropped (and counted).
const INBOUND_QUEUE: usize = 64;

/// Why a call could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The offer was refused by the WebRTC stack (400).
    #[error("offer refused: {0}")]
    Offer(String),
    /// A local failure: no socket, gathering never finished (500).
    #[error("WebRTC setup failed: {0}")]
    Local(String),
}

/// Events the peer connection's driver reports to the call task.
enum PcEvent {
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

/// The crate's event handler: forwards to the call task, never blocks the driver.
struct Handler {
    events: mpsc::Sender<PcEvent>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.try_send(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.try_send(PcEvent::Track(track));
    }
}

/// Timers of a call.
#[derive(Debug, Clone, Copy)]
pub struct CallTimers {
    /// ICE and DTLS must complete within this after the answer.
    pub connect: Duration,
    /// No RTP for this long ends a connected call.
    pub rtp: Duration,
    /// ICE: no traffic for this long makes the connection "disconnected", and this much
    /// longer "failed" (which ends the call).
    pub ice_disconnected: Duration,
    pub ice_failed: Duration,
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            connect: Duration::from_secs(15),
            rtp: Duration::from_secs(30),
            ice_disconnected: Duration::from_secs(5),
            ice_failed: Duration::from_secs(10),
        }
    }
}

/// A negotiated peer connection, ready for its call task.
pub(crate) struct Negotiated {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    events: mpsc::Receiver<PcEvent>,
    /// The answer SDP, with our host candidate in it.
    pub answer: String,
}

impl Negotiated {
    /// Builds a peer connection on `addr` (one UDP socket: its host candidate is the only
    /// one; no STUN/TURN servers, no mDNS), answers `offer` and waits for gathering to end.
    pub(crate) async fn answer(
        offer: String,
        addr: SocketAddr,
        timers: CallTimers,
    ) -> Result<Negotiated, SetupError> {
        let local = |e: &dyn std::fmt::Display| SetupError::Local(e.to_string());
        let opus = RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus.clone(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(|e| local(&e))?;
        let interceptors =
            register_default_interceptors(Registry::new(), &mut media).map_err(|e| local(&e))?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(true)
            .with_ice_timeouts(
                Some(timers.ice_disconnected),
                Some(timers.ice_failed),
                Some(Duration::from_secs(2)),
            )
            .build();
        let (events_tx, events) = mpsc::channel(16);
        let (gathered_tx, mut gathered) = watch::channel(false);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .with_interceptor_registry(interceptors)
            .with_handler(Arc::new(Handler {
                events: events_tx,
                gathered: gathered_tx,
            }))
            .with_udp_addrs(vec![addr])
            .build()
            .await
            .map_err(|e| local(&e))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        match Self::negotiate(&pc, offer, opus, &mut gathered).await {
            Ok((track, ssrc, payload_type, answer)) => Ok(Negotiated {
                pc,
                track,
                ssrc,
                payload_type,
                events,
                answer,
            }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn negotiate(
        pc: &Arc<dyn PeerConnection>,
        offer: String,
        opus: RTCRtpCodec,
        gathered: &mut watch::Receiver<bool>,
    ) -> Result<(Arc<TrackLocalStaticSample>, u32, u8, String), SetupError> {
        let local = |e: &dyn std::fmt::Display| SetupError::Local(e.to_string());
        let ssrc = rand::random::<u32>();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "vaani".to_owned(),
                    "vaani-audio".to_owned(),
                    "vaani".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: opus,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(|e| local(&e))?,
        );
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| local(&e))?;
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| SetupError::Offer(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| SetupError::Offer(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| SetupError::Offer(e.to_string()))?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| local(&e))?;
        tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done))
            .await
            .map_err(|_| SetupError::Local("ICE gathering did not finish".into()))?
            .map_err(|e| local(&e))?;
        let answer = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| SetupError::Local("no local description".into()))?;
        let payload_type = sender
            .get_parameters()
            .await
            .map_err(|e| local(&e))?
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| SetupError::Offer("no codec negotiated".into()))?;
        Ok((track, ssrc, payload_type, answer))
    }
}

/// Counts a WebRTC call toward the node's capacity for as long as it lives.
pub(crate) struct ActiveGuard(pub(crate) Arc<AtomicU32>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a call task shares with the node.
pub(crate) struct CallLink {
    pub id: u64,
    pub call_id: String,
    pub tenant: String,
    pub app: Box<dyn SipCall>,
    pub registry: CallRegistry<WebRtcCallRecord>,
    pub metrics: Arc<Metrics>,
    pub hangup: mpsc::Receiver<()>,
    pub closing: watch::Receiver<bool>,
    pub timers: CallTimers,
    pub guard: ActiveGuard,
}

/// What arrives from the remote track's reader.
enum Inbound {
    Rtp { seq: u16, payload: bytes::Bytes },
    Ended,
}

/// How the call ended: the counted reason and the registry's label.
struct Ending(EndReason, &'static str);

/// Runs the call until it ends, then closes the peer connection and reports the end.
pub(crate) async fn run(neg: Negotiated, mut link: CallLink) {
    let started_at = chrono::Utc::now();
    let mut call = Call {
        neg,
        decoder: None,
        encoder: None,
        queue: VecDeque::new(),
        received: 0,
        sent: 0,
        published: (0, 0),
    };
    let ending = call.drive(&mut link).await;
    let _ = call.neg.pc.close().await;
    call.publish(&link);
    tracing::info!(
        session = %super::whip::session_path(link.id),
        reason = ending.1,
        received = call.received,
        sent = call.sent,
        "WebRTC call ended"
    );
    link.registry.end(link.id, ending.1);
    link.metrics.call_ended(CallEnd {
        transport: Transport::WebRtc,
        reason: ending.0,
        call_id: Some(link.call_id.clone()),
        tenant: Some(link.tenant.clone()),
        started_at,
        ended_at: chrono::Utc::now(),
    });
    // The slot is given back last, once the end is on record.
    let CallLink { guard, .. } = link;
    drop(guard);
}

struct Call {
    neg: Negotiated,
    /// Made when the first packet comes, so a call that never connects costs no codec.
    decoder: Option<OpusDecoder>,
    encoder: Option<OpusEncoder>,
    queue: VecDeque<PcmFrame>,
    received: u64,
    sent: u64,
    /// What was last published to the metrics (received, sent).
    published: (u64, u64),
}

impl Call {
    async fn drive(&mut self, link: &mut CallLink) -> Ending {
        let frame = Duration::from_millis(u64::from(FRAME_MS));
        let mut tick = tokio::time::interval(frame);
        let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
        let mut readers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let answered = Instant::now();
        let mut connected = false;
        let mut last_rtp = Instant::now();
        // Counts down to the next publication of the packet counts (once a second).
        let mut publish_in: u32 = 50;
        let mut actions = Vec::new();
        let mut closing = link.closing.clone();
        let shutdown = async move {
            if closing.wait_for(|c| *c).await.is_err() {
                // The node dropped its sender: it can no longer ask to close.
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(shutdown);
        let ending = loop {
            tokio::select! {
                () = &mut shutdown => break Ending(EndReason::Shutdown, "shutdown"),
                Some(()) = link.hangup.recv() => break Ending(EndReason::CallerHangup, "delete"),
                event = self.neg.events.recv() => match event {
                    Some(PcEvent::Track(track)) => {
                        readers.push(tokio::spawn(read_track(track, inbound_tx.clone())));
                    }
                    Some(PcEvent::State(state)) => {
                        tracing::debug!(session = %super::whip::session_path(link.id), %state, "WebRTC connection state");
                        match state {
                            RTCPeerConnectionState::Connected => {
                                if !connected {
                                    connected = true;
                                    last_rtp = Instant::now();
                                }
                                link.registry.update(link.id, |r| r.state = "connected".into());
                            }
                            RTCPeerConnectionState::Disconnected => {
                                link.registry.update(link.id, |r| r.state = "disconnected".into());
                            }
                            RTCPeerConnectionState::Failed => break Ending(EndReason::IceFailed, "ice_failed"),
                            RTCPeerConnectionState::Closed => break Ending(EndReason::CallerHangup, "closed"),
                            _ => {}
                        }
                    }
                    None => break Ending(EndReason::Error, "driver_stopped"),
                },
                Some(packet) = inbound.recv() => match packet {
                    Inbound::Rtp { seq, payload } => {
                        last_rtp = Instant::now();
                        self.received += 1;
                        if let Some(end) = self.on_rtp(link, seq, &payload, &mut actions) {
                            break end;
                        }
                    }
                    Inbound::Ended => break Ending(EndReason::CallerHangup, "track_ended"),
                },
                _ = tick.tick() => {
                    if !connected {
                        if answered.elapsed() > link.timers.connect {
                            break Ending(EndReason::IceFailed, "ice_timeout");
                        }
                        continue;
                    }
                    if last_rtp.elapsed() > link.timers.rtp {
                        break Ending(EndReason::RtpTimeout, "rtp_timeout");
                    }
                    self.send_frame(link.id).await;
                    publish_in -= 1;
                    if publish_in == 0 {
                        publish_in = 50;
                        self.publish(link);
                    }
                }
            }
        };
        for r in readers {
            r.abort();
        }
        ending
    }

    /// Decodes one inbound packet and hands its frames to the app.
    fn on_rtp(
        &mut self,
        link: &mut CallLink,
        seq: u16,
        payload: &[u8],
        actions: &mut Vec<AppAction>,
    ) -> Option<Ending> {
        if self.decoder.is_none() {
            match OpusDecoder::new() {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "Opus decoder not created");
                    return Some(Ending(EndReason::Error, "codec"));
                }
            }
        }
        let decoder = self.decoder.as_mut()?;
        let app = &mut link.app;
        if let Err(e) = decoder.decode(seq, payload, |frame| app.on_audio(frame, actions)) {
            tracing::debug!(error = %e, "Opus packet not decoded");
        }
        for action in actions.drain(..) {
            match action {
                AppAction::Play(frame) => {
                    if self.queue.len() >= MAX_QUEUED {
                        self.queue.pop_front();
                    }
                    self.queue.push_back(frame);
                }
                AppAction::Clear => self.queue.clear(),
                AppAction::SendDtmf(digit) => {
                    tracing::debug!(%digit, "WebRTC calls send no DTMF");
                }
                AppAction::Hangup(text) => {
                    tracing::info!(%text, "app hung up the WebRTC call");
                    return Some(Ending(EndReason::AgentHangup, "agent_hangup"));
                }
                AppAction::Transfer(_) => {
                    // A browser call cannot be handed to a phone number: end it.
                    tracing::info!("transfer asked on a WebRTC call: hanging up");
                    return Some(Ending(EndReason::AgentHangup, "agent_hangup"));
                }
            }
        }
        None
    }

    /// Sends the next queued frame, or silence, as one 20 ms Opus packet.
    async fn send_frame(&mut self, id: u64) {
        if self.encoder.is_none() {
            match OpusEncoder::new() {
                Ok(e) => self.encoder = Some(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Opus encoder not created");
                    return;
                }
            }
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return;
        };
        let frame = self.queue.pop_front().unwrap_or_default();
        let data = match encoder.encode(&frame) {
            Ok(p) => bytes::Bytes::copy_from_slice(p),
            Err(e) => {
                tracing::debug!(error = %e, "frame not encoded");
                return;
            }
        };
        let sample = Sample {
            data,
            duration: Duration::from_millis(u64::from(FRAME_MS)),
            ..Sample::new(Instant::now())
        };
        match self
            .neg
            .track
            .sample_writer(self.neg.ssrc, self.neg.payload_type)
            .write_sample(&sample)
            .await
        {
            Ok(()) => self.sent += 1,
            Err(e) => tracing::debug!(session = id, error = %e, "Opus packet not sent"),
        }
    }

    /// Publishes the packet counts to the registry and the node's counters.
    fn publish(&mut self, link: &CallLink) {
        let (received, sent) = (self.received, self.sent);
        link.metrics
            .webrtc_received(received.saturating_sub(self.published.0));
        link.metrics
            .webrtc_sent(sent.saturating_sub(self.published.1));
        self.published = (received, sent);
        link.registry.update(link.id, |r| {
            r.packets_received = received;
            r.packets_sent = sent;
        });
    }
}

/// Forwards the remote track's RTP packets to the call task until the track ends.
async fn read_track(track: Arc<dyn TrackRemote>, to: mpsc::Sender<Inbound>) {
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let packet = Inbound::Rtp {
                    seq: p.header.sequence_number,
                    payload: p.payload,
                };
                match to.try_send(packet) {
                    Ok(()) => {}
                    // The call task fell behind: late audio is worth less than none.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!("WebRTC inbound packet dropped: call task behind");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    let _ = to.send(Inbound::Ended).await;
}
