//! The media node's I/O driver for provider media streams: the one place that owns the
//! WebSocket sockets and timers (DESIGN.md §3.1). Each connection runs one sans-IO
//! [`Session`] and one [`CallHandler`] from the node's [`MediaApp`]; the driver only shuttles
//! text frames, timer ticks and the handler's actions between them.
//!
//! Route: `GET /streams/{tenant}/{provider}` (WebSocket upgrade), the URL the answer webhook
//! puts in the provider's answer document (`{node ws_url}/{tenant}/{provider}`). The
//! provider's own signature on the upgrade, where it signs one (Twilio), is checked by the
//! node's [`UpgradeAuth`] before the upgrade is accepted; the media token in the stream's
//! `start` is checked for that tenant before any audio flows.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use vaani_events::Provider;

use crate::codec::{AudioFormat, CodecError, FrameDecoder, FrameEncoder, Reframer, FRAME_SAMPLES};
use crate::metrics::{CallEnd, EndReason, Metrics, Transport};
use crate::streams::{
    Dialect, Event, Exotel, Plivo, Session, SessionConfig, StartInfo, Telnyx, TokenAuth, Twilio,
};

/// What the node does with a call's audio: the echo app now, the AI pipeline later.
pub trait MediaApp: Send + Sync + 'static {
    /// A stream started (and authenticated): the handler for this call.
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler>;
}

/// One call's audio logic. Gets every stream event, returns what to do.
pub trait CallHandler: Send {
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>);
}

/// What a handler asks the driver to do on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play audio, in the stream's outbound format.
    Audio(Vec<u8>),
    /// Send what is queued even if it ends in a partial frame (end of an utterance).
    Flush,
    /// Report back (as [`Event::Mark`]) when everything queued before it has played.
    Mark(String),
    /// Drop everything not yet played (barge-in).
    Clear,
    /// End the stream (the provider then continues its call flow or hangs up).
    Hangup,
}

/// A stream's WebSocket upgrade request, as the provider's signature check needs it.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    pub tenant: &'a str,
    pub provider: Provider,
    /// Path and query exactly as received (`/streams/demo/twilio?…`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub source_ip: Option<IpAddr>,
}

/// Why an upgrade was refused before it was accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// Missing or wrong provider signature: `401`.
    #[error("{0}")]
    Unauthorized(String),
    /// The tenant does not take this provider's streams, or the source is not allowed: `403`.
    #[error("{0}")]
    Forbidden(String),
    /// The check could not be made (store down): `503`.
    #[error("{0}")]
    Unavailable(String),
}

/// The provider-signature layer of stream authentication (see `streams::auth`): given the
/// tenant's credentials, checks what the provider signs on the upgrade.
pub trait UpgradeAuth: Send + Sync + 'static {
    fn check<'a>(&'a self, req: UpgradeRequest<'a>) -> BoxFuture<'a, Result<(), UpgradeRefusal>>;
}

/// Settings and shared state of the stream server.
pub struct StreamServer {
    /// HMAC key of media tokens (the same key the answer webhook signs with).
    pub token_key: Arc<Vec<u8>>,
    /// Refuse streams without a valid media token. Only local tests turn this off.
    pub require_token: bool,
    /// Checks the provider's signature on the upgrade (none: only the media token is checked).
    pub upgrade_auth: Option<Arc<dyn UpgradeAuth>>,
    pub app: Arc<dyn MediaApp>,
    /// Above this many concurrent streams, upgrades are refused with 503 + `Retry-After`.
    pub max_calls: u32,
    /// Streams open now (exported to the registry heartbeat and metrics).
    pub active: Arc<AtomicU32>,
    /// The node's counters and draining flag: while draining, upgrades get 503.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the node stops for good: open streams are closed.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// The `/streams/{tenant}/{provider}` routes.
pub fn router(server: Arc<StreamServer>) -> axum::Router {
    axum::Router::new()
        .route("/streams/{tenant}/{provider}", axum::routing::get(upgrade))
        .with_state(server)
}

/// Counts an open stream for as long as it lives.
struct ActiveGuard(Arc<AtomicU32>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn upgrade(
    State(server): State<Arc<StreamServer>>,
    Path((tenant, provider)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(provider) = provider.parse::<Provider>() else {
        return (StatusCode::NOT_FOUND, "unknown provider").into_response();
    };
    if !vaani_core::tenant::valid_id(&tenant) || provider == Provider::Signalwire {
        return (StatusCode::NOT_FOUND, "no such stream endpoint").into_response();
    }
    if let Some(auth) = &server.upgrade_auth {
        let request = UpgradeRequest {
            tenant: &tenant,
            provider,
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &headers,
            source_ip: extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        };
        if let Err(refusal) = auth.check(request).await {
            tracing::warn!(tenant = %tenant, %provider, %refusal, "stream upgrade refused");
            let status = match refusal {
                UpgradeRefusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                UpgradeRefusal::Forbidden(_) => StatusCode::FORBIDDEN,
                UpgradeRefusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (status, refusal.to_string()).into_response();
        }
    }
    if server.metrics.is_draining() {
        tracing::info!(%provider, "stream refused: node draining");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "media node draining",
        )
            .into_response();
    }
    // Reserve a slot before upgrading, so the limit holds under a burst.
    let open = server.active.fetch_add(1, Ordering::AcqRel);
    let guard = ActiveGuard(server.active.clone());
    if open >= server.max_calls {
        tracing::warn!(%provider, open, max = server.max_calls, "stream refused: node full");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            "media node at capacity",
        )
            .into_response();
    }
    let mut cfg = if server.require_token {
        SessionConfig::authenticated(TokenAuth::new(server.token_key.as_slice(), tenant.clone()))
    } else {
        SessionConfig::unauthenticated()
    };
    if let Some(q) = query {
        cfg = cfg.with_query(q);
    }
    let app = server.app.clone();
    let metrics = server.metrics.clone();
    let closing = server.closing.clone();
    ws.on_upgrade(move |socket| async move {
        let _guard = guard;
        metrics.call_started(Transport::Stream);
        let started_at = chrono::Utc::now();
        let link = Link {
            metrics: &metrics,
            closing,
        };
        let outcome = match provider {
            Provider::Twilio => drive::<Twilio>(socket, cfg, app, link).await,
            Provider::Exotel => drive::<Exotel>(socket, cfg, app, link).await,
            Provider::Plivo => drive::<Plivo>(socket, cfg, app, link).await,
            Provider::Telnyx => drive::<Telnyx>(socket, cfg, app, link).await,
            Provider::Signalwire => Outcome::error(None, "no SignalWire streams".into()),
        };
        if let Some(reason) = &outcome.error {
            tracing::warn!(tenant = %tenant, %provider, %reason, "stream ended with an error");
        }
        metrics.call_ended(CallEnd {
            transport: Transport::Stream,
            reason: outcome.reason,
            call_id: outcome.call_id,
            tenant: Some(tenant),
            started_at,
            ended_at: chrono::Utc::now(),
        });
    })
}

/// What a stream's driver shares with the node.
struct Link<'a> {
    metrics: &'a Metrics,
    closing: tokio::sync::watch::Receiver<bool>,
}

/// How a stream ended.
struct Outcome {
    reason: EndReason,
    /// Our call id, once the stream's `start` carried one.
    call_id: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn ended(reason: EndReason, call_id: Option<String>) -> Self {
        Outcome {
            reason,
            call_id,
            error: None,
        }
    }

    fn error(call_id: Option<String>, error: String) -> Self {
        Outcome {
            reason: EndReason::Error,
            call_id,
            error: Some(error),
        }
    }
}

/// WebSocket close code for a refused token (RFC 6455 §7.4.1: policy violation).
const CLOSE_POLICY: u16 = 1008;
/// Close code for a protocol error on the provider's side (unsupported data).
const CLOSE_PROTOCOL: u16 = 1002;

async fn close(
    socket: &mut futures::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

/// Close code when the node shuts down with the stream still open (RFC 6455 §7.4.1: going
/// away).
const CLOSE_GOING_AWAY: u16 = 1001;

/// Run one stream until it ends: the session decides what goes on the wire and when; the
/// handler decides what audio to play.
async fn drive<D: Dialect>(
    socket: WebSocket,
    cfg: SessionConfig,
    app: Arc<dyn MediaApp>,
    mut link: Link<'_>,
) -> Outcome {
    let (mut tx, mut rx) = socket.split();
    let started = Instant::now();
    let mut session = Session::<D>::new(cfg, started, chrono::Utc::now());
    let mut handler: Option<Box<dyn CallHandler>> = None;
    let mut call_id: Option<String> = None;
    let mut actions = Vec::new();
    loop {
        let now = Instant::now();
        while let Some(frame) = session.poll_transmit(now) {
            if let Err(e) = tx.send(Message::Text(frame.into())).await {
                return Outcome::error(call_id, format!("send failed: {e}"));
            }
            link.metrics.stream_frame_out();
        }
        if session.is_ended() {
            let _ = tx.close().await;
            return Outcome::ended(EndReason::CallerHangup, call_id);
        }
        if *link.closing.borrow() {
            close(&mut tx, CLOSE_GOING_AWAY, "node shutting down").await;
            return Outcome::ended(EndReason::Shutdown, call_id);
        }
        let sleep = session
            .next_deadline()
            .map(|d| tokio::time::sleep_until(tokio::time::Instant::from_std(d)));
        let closing = async {
            if link.closing.changed().await.is_err() {
                // The node dropped its sender: it can no longer ask to close.
                std::future::pending::<()>().await;
            }
        };
        let msg = match sleep {
            Some(sleep) => tokio::select! {
                m = rx.next() => m,
                () = sleep => continue,
                () = closing => continue,
            },
            None => tokio::select! {
                m = rx.next() => m,
                () = closing => continue,
            },
        };
        let now = Instant::now();
        let events = match msg {
            Some(Ok(Message::Text(text))) => {
                link.metrics.stream_frame_in();
                match session.on_text(now, text.as_str()) {
                    Ok(events) => events,
                    Err(e) => {
                        let code = if e.is_auth() {
                            CLOSE_POLICY
                        } else {
                            CLOSE_PROTOCOL
                        };
                        close(&mut tx, code, e.code()).await;
                        return Outcome::error(call_id, e.to_string());
                    }
                }
            }
            Some(Ok(Message::Close(_))) | None => session.on_close(now),
            Some(Ok(_)) => continue, // ping/pong are answered by the library; binary is unused
            Some(Err(e)) => {
                session.on_close(now);
                return Outcome::error(call_id, format!("socket error: {e}"));
            }
        };
        for event in &events {
            if let Event::Start(info) = event {
                tracing::info!(provider = %D::PROVIDER, call_id = ?info.call_id, stream = %info.stream_id, "stream started");
                call_id.clone_from(&info.call_id);
                handler = Some(app.start(info));
            }
            if let Some(h) = handler.as_mut() {
                h.on_event(event, &mut actions);
            }
            if matches!(event, Event::Stop { .. } | Event::Closed) {
                tracing::info!(provider = %D::PROVIDER, "stream stopped");
            }
        }
        for action in actions.drain(..) {
            let result = match action {
                Action::Audio(bytes) => session.send_audio(now, &bytes),
                Action::Flush => {
                    session.flush();
                    Ok(())
                }
                Action::Mark(name) => session.mark(name),
                Action::Clear => {
                    session.clear(now);
                    Ok(())
                }
                Action::Hangup => {
                    let _ = tx.close().await;
                    return Outcome::ended(EndReason::AgentHangup, call_id);
                }
            };
            if let Err(e) = result {
                tracing::warn!(provider = %D::PROVIDER, error = %e, "stream action refused");
            }
        }
        if matches!(events.last(), Some(Event::Stop { .. } | Event::Closed)) {
            return Outcome::ended(EndReason::CallerHangup, call_id);
        }
    }
}

/// `--app echo`: plays back what it hears, for media tests. Keypresses drive the playout
/// controls the pipeline will use: `0` clears (barge-in), any other digit flushes and places
/// a mark named `dtmf-<digit>` behind the audio queued so far.
///
/// When the stream's inbound and outbound formats are the same (every provider's default
/// setup) the caller's bytes go back untouched, bit-exact. Otherwise each chunk is converted
/// the way the pipeline will: decoded to the internal 16 kHz PCM ([`FrameDecoder`]), cut
/// into 20 ms frames ([`Reframer`]) and encoded to the outbound format ([`FrameEncoder`]);
/// less than one frame may wait for the next chunk (also across a flush), and the
/// resamplers delay the audio by their filters' group delay.
pub struct EchoApp;

impl MediaApp for EchoApp {
    fn start(&self, info: &StartInfo) -> Box<dyn CallHandler> {
        Box::new(Echo::new(info.format, info.outbound_format))
    }
}

struct Echo {
    /// `None` when inbound and outbound formats agree: pass-through.
    convert: Option<Transcoder>,
}

impl Echo {
    fn new(inbound: AudioFormat, outbound: AudioFormat) -> Self {
        Echo {
            convert: (inbound != outbound).then(|| Transcoder::new(inbound, outbound)),
        }
    }
}

impl CallHandler for Echo {
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>) {
        match event {
            Event::Media(m) => match self.convert.as_mut() {
                None => actions.push(Action::Audio(m.payload.clone())),
                Some(t) => match t.convert(&m.payload) {
                    Ok(audio) if audio.is_empty() => {}
                    Ok(audio) => actions.push(Action::Audio(audio)),
                    Err(e) => tracing::debug!(error = %e, "echo: chunk not converted"),
                },
            },
            Event::Dtmf { digit: '0', .. } => actions.push(Action::Clear),
            Event::Dtmf { digit, .. } => {
                actions.push(Action::Flush);
                actions.push(Action::Mark(format!("dtmf-{digit}")));
            }
            _ => {}
        }
    }
}

/// One direction's conversion between two wire formats through the internal 16 kHz PCM.
struct Transcoder {
    decoder: FrameDecoder,
    reframer: Reframer,
    encoder: FrameEncoder,
    /// The start of a 16-bit sample split across two chunks (never a whole sample).
    carry: Vec<u8>,
    /// Decoded 16 kHz samples of the chunk being converted (reused).
    pcm: Vec<i16>,
}

impl Transcoder {
    fn new(inbound: AudioFormat, outbound: AudioFormat) -> Self {
        Transcoder {
            decoder: FrameDecoder::new(inbound),
            reframer: Reframer::new(),
            encoder: FrameEncoder::new(outbound),
            carry: Vec::new(),
            pcm: Vec::new(),
        }
    }

    /// Converts one inbound chunk (any length); returns the outbound bytes of every 20 ms
    /// frame it completed, possibly none.
    fn convert(&mut self, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
        let bps = self.decoder.format().encoding.unit_bytes();
        let joined;
        let input = if self.carry.is_empty() {
            payload
        } else {
            let mut j = std::mem::take(&mut self.carry);
            j.extend_from_slice(payload);
            joined = j;
            joined.as_slice()
        };
        let (whole, rest) = input.split_at(input.len() / bps * bps);
        self.pcm.resize(self.decoder.output_len(whole.len()), 0);
        let n = self.decoder.decode(whole, &mut self.pcm)?;
        self.carry = rest.to_vec();

        let Transcoder {
            reframer,
            encoder,
            pcm,
            ..
        } = self;
        let decoded = pcm.get(..n).unwrap_or_default();
        let frames = (reframer.pending() + decoded.len()) / FRAME_SAMPLES;
        let mut out = Vec::with_capacity(frames * encoder.format().frame_bytes());
        let mut failed = None;
        reframer.push(decoded, |frame| {
            let start = out.len();
            out.resize(start + encoder.output_len(FRAME_SAMPLES), 0);
            match encoder.encode(&frame.samples, &mut out[start..]) {
                Ok(written) => out.truncate(start + written),
                Err(e) => {
                    out.truncate(start);
                    failed.get_or_insert(e);
                }
            }
        });
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::f64::consts::PI;

    use super::*;
    use crate::codec::{g711, Encoding, SampleRate};
    use crate::streams::Media;

    fn info(format: AudioFormat, outbound_format: AudioFormat) -> StartInfo {
        StartInfo {
            provider_call_id: "call".into(),
            stream_id: "stream".into(),
            account_id: None,
            from: None,
            to: None,
            custom_parameters: BTreeMap::new(),
            format,
            outbound_format,
            call_id: None,
            token: None,
        }
    }

    fn media(payload: &[u8]) -> Event {
        Event::Media(Media {
            payload: payload.to_vec(),
            timestamp_ms: None,
            chunk: None,
            sequence: None,
        })
    }

    /// Feeds `payload` to a fresh echo handler in chunks of the given sizes (cycled) and
    /// returns everything it asked to play, checking it asked for nothing else.
    fn echo(
        inbound: AudioFormat,
        outbound: AudioFormat,
        payload: &[u8],
        sizes: &[usize],
    ) -> Vec<u8> {
        let mut handler = EchoApp.start(&info(inbound, outbound));
        let mut actions = Vec::new();
        handler.on_event(&Event::Start(info(inbound, outbound)), &mut actions);
        assert!(actions.is_empty());
        let mut rest = payload;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            handler.on_event(&media(chunk), &mut actions);
            rest = tail;
        }
        let mut played = Vec::new();
        for action in actions {
            match action {
                Action::Audio(bytes) => played.extend(bytes),
                other => panic!("unexpected {other:?}"),
            }
        }
        played
    }

    fn tone(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the `freq` component of `x` (Goertzel; exact for whole periods).
    fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / x.len() as f64
    }

    /// Checks that 8 kHz μ-law `out` is a clean 440 Hz tone of `amplitude`, past the
    /// resamplers' start-up.
    fn assert_tone_440(out: &[u8], amplitude: f64) {
        let mut pcm = vec![0i16; out.len()];
        g711::decode_ulaw(out, &mut pcm);
        // 0.5 s from 100 ms in: exactly 220 periods of 440 Hz.
        let window = &pcm[800..4800];
        let peak = (200..=3400)
            .step_by(10)
            .map(|f| (f, goertzel(window, 8000, f64::from(f))))
            .fold(
                (0, 0.0),
                |best, (f, a)| if a > best.1 { (f, a) } else { best },
            );
        assert_eq!(peak.0, 440, "strongest component {peak:?}");
        let level_db = 20.0 * (peak.1 / amplitude).log10();
        assert!(level_db.abs() < 0.5, "level off by {level_db:.2} dB");
        let rms = (window.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / window.len() as f64)
            .sqrt();
        // What is not the tone: quantization noise of two G.711 codecs, about -35 dB.
        let tone_power = peak.1 * peak.1 / 2.0;
        let noise_db = 10.0 * ((rms * rms - tone_power).max(1e-9) / tone_power).log10();
        assert!(
            noise_db < -30.0,
            "anything but the tone at {noise_db:.1} dB"
        );
        eprintln!("440 Hz at {level_db:+.2} dB, the rest at {noise_db:.1} dB");
    }

    #[test]
    fn pcma_in_pcmu_out_is_converted() {
        let pcm = tone(8000, 440.0, 8000.0, 1.0);
        let mut alaw = vec![0u8; pcm.len()];
        g711::encode_alaw(&pcm, &mut alaw);
        // Telnyx's 20 ms chunks, and odd sizes that split the 20 ms frames.
        for sizes in [&[160][..], &[77, 203, 1]] {
            let out = echo(AudioFormat::PCMA, AudioFormat::PCMU, &alaw, sizes);
            assert_eq!(out.len(), 8000, "one second of whole 20 ms frames");
            assert_tone_440(&out, 8000.0);
        }
    }

    #[test]
    fn wideband_pcm_in_pcmu_out_is_converted() {
        let inbound = AudioFormat::new(Encoding::S16Le, SampleRate::Hz16000);
        let pcm = tone(16000, 440.0, 8000.0, 1.0);
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        // Exotel's 100 ms chunks, and odd sizes that split samples across chunks.
        for sizes in [&[3200][..], &[3201, 3199, 641, 1, 7]] {
            let out = echo(inbound, AudioFormat::PCMU, &bytes, sizes);
            assert_eq!(out.len(), 8000);
            assert_tone_440(&out, 8000.0);
        }
    }

    #[test]
    fn equal_formats_pass_through_bit_exact() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for format in [AudioFormat::PCMU, AudioFormat::S16LE_8K] {
            // Byte for byte, chunk for chunk, even a partial sample.
            let out = echo(format, format, &bytes, &[333, 1]);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn conversion_waits_for_whole_frames_and_keeps_the_controls() {
        let mut h = EchoApp.start(&info(AudioFormat::PCMA, AudioFormat::PCMU));
        let mut actions = Vec::new();
        // 10 ms: not a frame yet; one odd byte of nothing: nothing.
        h.on_event(&media(&[0xD5; 80]), &mut actions);
        h.on_event(&media(&[]), &mut actions);
        assert_eq!(actions, vec![]);
        h.on_event(&media(&[0xD5; 80]), &mut actions);
        // A-law has no zero: its quietest code is ±8, which stays that quiet in μ-law.
        let [Action::Audio(out)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        let mut pcm = [0i16; 160];
        assert_eq!(g711::decode_ulaw(out, &mut pcm), 160);
        assert!(pcm.iter().all(|v| v.abs() <= 8), "{pcm:?}");
        actions.clear();
        h.on_event(
            &Event::Dtmf {
                digit: '5',
                duration_ms: None,
            },
            &mut actions,
        );
        h.on_event(
            &Event::Dtmf {
                digit: '0',
                duration_ms: None,
            },
            &mut actions,
        );
        assert_eq!(
            actions,
            vec![Action::Flush, Action::Mark("dtmf-5".into()), Action::Clear]
        );
    }

    #[test]
    fn hostile_chunks_never_panic() {
        let inbound = AudioFormat::new(Encoding::S16Le, SampleRate::Hz48000);
        let mut h = EchoApp.start(&info(inbound, AudioFormat::PCMA));
        let mut actions = Vec::new();
        let mut produced = 0;
        for len in [1usize, 0, 3, 1 << 20, 5, 96_001] {
            h.on_event(&media(&vec![0x80; len]), &mut actions);
        }
        for a in &actions {
            if let Action::Audio(b) = a {
                assert_eq!(b.len() % 160, 0, "whole 8 kHz frames");
                produced += b.len();
            }
        }
        // 1 + 3 + 2^20 + 5 + 96_001 bytes: 572_293 whole samples at 48 kHz, 190_764 at
        // 16 kHz: 596 whole frames.
        assert_eq!(produced, 596 * 160);
    }

    fn any_format() -> impl proptest::strategy::Strategy<Value = AudioFormat> {
        use proptest::prelude::*;
        let encoding = prop_oneof![
            Just(Encoding::Pcmu),
            Just(Encoding::Pcma),
            Just(Encoding::L16),
            Just(Encoding::S16Le)
        ];
        let rate = prop_oneof![
            Just(SampleRate::Hz8000),
            Just(SampleRate::Hz16000),
            Just(SampleRate::Hz24000),
            Just(SampleRate::Hz48000)
        ];
        (encoding, rate).prop_map(|(e, r)| AudioFormat::new(e, r))
    }

    proptest::proptest! {
        #[test]
        fn any_chunks_in_any_formats_never_panic(
            inbound in any_format(),
            outbound in any_format(),
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..2000), 0..8),
        ) {
            let mut h = EchoApp.start(&info(inbound, outbound));
            let mut actions = Vec::new();
            for c in &chunks {
                h.on_event(&media(c), &mut actions);
            }
            let total: usize = chunks.iter().map(Vec::len).sum();
            let played: usize = actions
                .iter()
                .map(|a| match a {
                    Action::Audio(b) => b.len(),
                    _ => 0,
                })
                .sum();
            if inbound == outbound {
                proptest::prop_assert_eq!(played, total);
            } else {
                // Whole outbound frames, never more audio than came in (give or take the
                // resampler's rounding, under one frame).
                proptest::prop_assert_eq!(played % outbound.frame_bytes(), 0);
                let frames_in = total / inbound.frame_bytes();
                proptest::prop_assert!(played / outbound.frame_bytes() <= frames_in + 1);
            }
        }
    }
}
