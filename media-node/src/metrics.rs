//! The media node's counters, shared by its drivers (provider streams, SIP/RTP, WebRTC), its
//! draining flag, and the HTTP routes that expose them: `GET /metrics` (Prometheus text
//! exposition format 0.0.4) and `GET /node/healthz` (200 while serving, 503 while draining).
//!
//! The exposition is written by hand rather than with the `prometheus-client` crate: the node
//! exports a fixed, small set of series (a handful of counters, two gauges, one summary
//! without quantiles) whose label values are all known at compile time, so the text format's
//! few rules (HELP/TYPE lines, `name{label="value"} number` samples, `_total` counters,
//! `_sum`/`_count` summaries) fit in one function, every counter stays a plain lock-free
//! atomic the hot paths bump, and no dependency is added.
//!
//! Every call that ends goes through [`Metrics::call_ended`]: it is logged at info with its
//! reason, counted, and handed to the node's optional sink (`vaani dev` turns it into a
//! `MediaCallEnded` event on the call-events queue).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// How a call reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A provider media stream (WebSocket).
    Stream,
    /// SIP signalling with RTP media.
    Sip,
    /// A browser over WebRTC (WHIP-style signalling, Opus over SRTP).
    WebRtc,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Stream, Transport::Sip, Transport::WebRtc];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stream => "stream",
            Transport::Sip => "sip",
            Transport::WebRtc => "webrtc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a call ended: a fixed vocabulary, the `reason` label of the ended-calls counter and
/// the `reason` of the call-ended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The far end ended it: the caller (or the provider on its behalf, or the callee of a call
    /// the node placed): BYE, CANCEL, stream `stop`/close.
    CallerHangup,
    /// The node's app hung up.
    AgentHangup,
    /// No RTP for the node's RTP timeout.
    RtpTimeout,
    /// The call reached the node's longest allowed duration.
    MaxDuration,
    /// Something failed: a protocol error, a refused token, media setup, a lost ACK.
    Error,
    /// The node shut down (drain deadline passed) while the call was up.
    Shutdown,
    /// A call the node placed was never answered: busy, declined, no answer, no response.
    NotConnected,
    /// A WebRTC call's ICE/DTLS connection failed or never came up.
    IceFailed,
}

impl EndReason {
    pub const ALL: [EndReason; 8] = [
        EndReason::CallerHangup,
        EndReason::AgentHangup,
        EndReason::RtpTimeout,
        EndReason::MaxDuration,
        EndReason::Error,
        EndReason::Shutdown,
        EndReason::NotConnected,
        EndReason::IceFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::RtpTimeout => "rtp_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::Error => "error",
            EndReason::Shutdown => "shutdown",
            EndReason::NotConnected => "not_connected",
            EndReason::IceFailed => "ice_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ended call, as the drivers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub transport: Transport,
    pub reason: EndReason,
    /// Our call id (`vaani_call_id` / `X-Vaani-Call-Id`), when the call carried one.
    pub call_id: Option<String>,
    /// The tenant the call belongs to, when known.
    pub tenant: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
}

impl CallEnd {
    pub fn duration(&self) -> Duration {
        (self.ended_at - self.started_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

/// SIP status codes are three digits, 100-699.
const SIP_CODES: usize = 600;
/// How many ended calls may wait for the sink before new ones are dropped (and counted).
const SINK_CAPACITY: usize = 1024;

/// The node's counters: plain atomics, bumped by the drivers, read by [`Metrics::render`].
pub struct Metrics {
    active: [AtomicU64; 3],
    ended: [[AtomicU64; 8]; 3],
    sip_responses: Vec<AtomicU64>,
    rtp_received: AtomicU64,
    rtp_lost: AtomicU64,
    /// Sum (µs) and count of each SIP call's last interarrival jitter estimate.
    rtp_jitter_us_sum: AtomicU64,
    rtp_jitter_count: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    webrtc_received: AtomicU64,
    webrtc_sent: AtomicU64,
    events_dropped: AtomicU64,
    /// End of caller speech → first agent audio, per answered turn: cumulative buckets
    /// ([`TURN_BUCKETS_MS`], then +Inf), sum in µs.
    turn_buckets: [AtomicU64; TURN_BUCKETS_MS.len() + 1],
    turn_sum_us: AtomicU64,
    draining: AtomicBool,
    sink: Mutex<Option<mpsc::Sender<CallEnd>>>,
}

/// Upper bounds (ms) of the turn-latency histogram's buckets.
pub const TURN_BUCKETS_MS: [u64; 10] = [100, 200, 300, 400, 500, 700, 1000, 1500, 2000, 5000];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            active: Default::default(),
            ended: Default::default(),
            sip_responses: (0..SIP_CODES).map(|_| AtomicU64::new(0)).collect(),
            rtp_received: AtomicU64::new(0),
            rtp_lost: AtomicU64::new(0),
            rtp_jitter_us_sum: AtomicU64::new(0),
            rtp_jitter_count: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            webrtc_received: AtomicU64::new(0),
            webrtc_sent: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            turn_buckets: Default::default(),
            turn_sum_us: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            sink: Mutex::new(None),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Metrics whose ended calls are also sent to the returned receiver (bounded: when it
    /// falls behind, ended calls are dropped from it and counted, never blocking a driver).
    pub fn with_sink() -> (Arc<Metrics>, mpsc::Receiver<CallEnd>) {
        let (tx, rx) = mpsc::channel(SINK_CAPACITY);
        let m = Metrics::default();
        if let Ok(mut s) = m.sink.lock() {
            *s = Some(tx);
        }
        (Arc::new(m), rx)
    }

    /// Stops sending ended calls to the sink: its receiver ends once it has read the rest.
    pub fn close_sink(&self) {
        if let Ok(mut s) = self.sink.lock() {
            s.take();
        }
    }

    /// A call was set up on `transport`; it must end with [`Metrics::call_ended`].
    pub fn call_started(&self, transport: Transport) {
        self.active[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended: log it, count it, and hand it to the sink.
    pub fn call_ended(&self, end: CallEnd) {
        let t = end.transport.index();
        // Never wrap below zero, even if a driver reported an end without a start.
        let _ = self.active[t].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
        self.ended[t][end.reason.index()].fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            transport = end.transport.as_str(),
            reason = end.reason.as_str(),
            call_id = ?end.call_id,
            duration_ms = end.duration().as_millis() as u64,
            "call ended"
        );
        if end.call_id.is_none() {
            return;
        }
        let Ok(sink) = self.sink.lock() else { return };
        if let Some(tx) = sink.as_ref() {
            if tx.try_send(end).is_err() {
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Calls up now on `transport`.
    pub fn active(&self, transport: Transport) -> u64 {
        self.active[transport.index()].load(Ordering::Relaxed)
    }

    /// Calls ended so far on `transport` for `reason`.
    pub fn ended(&self, transport: Transport, reason: EndReason) -> u64 {
        self.ended[transport.index()][reason.index()].load(Ordering::Relaxed)
    }

    /// A SIP response left the node (retransmissions included).
    pub fn sip_response_sent(&self, status: u16) {
        if let Some(c) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.sip_responses.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the response in an outgoing SIP datagram (requests are not counted).
    pub fn sip_datagram_sent(&self, data: &[u8]) {
        if let Some(code) = data
            .strip_prefix(b"SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u16>().ok())
        {
            self.sip_response_sent(code);
        }
    }

    pub fn rtp_received(&self, packets: u64) {
        self.rtp_received.fetch_add(packets, Ordering::Relaxed);
    }

    pub fn rtp_lost(&self, packets: u64) {
        self.rtp_lost.fetch_add(packets, Ordering::Relaxed);
    }

    /// A SIP call's interarrival jitter (RFC 3550 §6.4.1), observed once when it ends.
    pub fn rtp_jitter(&self, jitter: Duration) {
        let us = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        self.rtp_jitter_us_sum.fetch_add(us, Ordering::Relaxed);
        self.rtp_jitter_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A text frame came in on a provider stream.
    pub fn stream_frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A text frame went out on a provider stream.
    pub fn stream_frame_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
    }

    /// RTP packets received on WebRTC calls.
    pub fn webrtc_received(&self, packets: u64) {
        self.webrtc_received.fetch_add(packets, Ordering::Relaxed);
    }

    /// RTP packets sent on WebRTC calls.
    pub fn webrtc_sent(&self, packets: u64) {
        self.webrtc_sent.fetch_add(packets, Ordering::Relaxed);
    }

    /// Refuse new calls from now on (the node is leaving).
    /// An agent turn: end of the caller's speech → the agent's first audio sent.
    pub fn turn_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let bucket = TURN_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(TURN_BUCKETS_MS.len());
        if let Some(b) = self.turn_buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.turn_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        header_lines(o, "vaani_active_calls", "gauge", "Calls up now.");
        for t in Transport::ALL {
            let _ = writeln!(
                o,
                "vaani_active_calls{{transport=\"{}\"}} {}",
                t.as_str(),
                self.active(t)
            );
        }
        header_lines(
            o,
            "vaani_calls_ended_total",
            "counter",
            "Calls ended, by transport and reason.",
        );
        for t in Transport::ALL {
            for r in EndReason::ALL {
                let _ = writeln!(
                    o,
                    "vaani_calls_ended_total{{transport=\"{}\",reason=\"{}\"}} {}",
                    t.as_str(),
                    r.as_str(),
                    self.ended(t, r)
                );
            }
        }
        header_lines(
            o,
            "vaani_sip_responses_sent_total",
            "counter",
            "SIP responses sent, by status code (retransmissions included).",
        );
        for (i, c) in self.sip_responses.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    o,
                    "vaani_sip_responses_sent_total{{code=\"{}\"}} {n}",
                    i + 100
                );
            }
        }
        let simple: [(&str, &str, &AtomicU64); 7] = [
            (
                "vaani_rtp_packets_received_total",
                "RTP packets received on SIP calls.",
                &self.rtp_received,
            ),
            (
                "vaani_rtp_packets_lost_total",
                "RTP packets lost on SIP calls (expected minus received, RFC 3550 A.3).",
                &self.rtp_lost,
            ),
            (
                "vaani_stream_frames_received_total",
                "Text frames received on provider media streams.",
                &self.frames_in,
            ),
            (
                "vaani_stream_frames_sent_total",
                "Text frames sent on provider media streams.",
                &self.frames_out,
            ),
            (
                "vaani_webrtc_packets_received_total",
                "RTP packets received on WebRTC calls.",
                &self.webrtc_received,
            ),
            (
                "vaani_webrtc_packets_sent_total",
                "RTP packets sent on WebRTC calls.",
                &self.webrtc_sent,
            ),
            (
                "vaani_call_events_dropped_total",
                "Ended calls not queued as events because the queue writer fell behind.",
                &self.events_dropped,
            ),
        ];
        for (name, help, c) in simple {
            header_lines(o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", c.load(Ordering::Relaxed));
        }
        header_lines(
            o,
            "vaani_rtp_jitter_seconds",
            "summary",
            "Interarrival jitter of SIP calls (RFC 3550 6.4.1), one observation per call at its end.",
        );
        let sum_us = self.rtp_jitter_us_sum.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "vaani_rtp_jitter_seconds_sum {}.{:06}",
            sum_us / 1_000_000,
            sum_us % 1_000_000
        );
        let _ = writeln!(
            o,
            "vaani_rtp_jitter_seconds_count {}",
            self.rtp_jitter_count.load(Ordering::Relaxed)
        );
        header_lines(
            o,
            "vaani_turn_latency_seconds",
            "histogram",
            "Agent turns: end of the caller's speech to the agent's first audio sent.",
        );
        let mut cumulative = 0u64;
        for (i, b) in self.turn_buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match TURN_BUCKETS_MS.get(i) {
                Some(ms) => {
                    let _ = writeln!(
                        o,
                        "vaani_turn_latency_seconds_bucket{{le=\"{}.{:03}\"}} {cumulative}",
                        ms / 1000,
                        ms % 1000
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "vaani_turn_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum_us = self.turn_sum_us.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "vaani_turn_latency_seconds_sum {}.{:06}",
            sum_us / 1_000_000,
            sum_us % 1_000_000
        );
        let _ = writeln!(o, "vaani_turn_latency_seconds_count {cumulative}");
        header_lines(
            o,
            "vaani_node_draining",
            "gauge",
            "1 while the node drains (refuses new calls), else 0.",
        );
        let _ = writeln!(o, "vaani_node_draining {}", u8::from(self.is_draining()));
        out
    }
}

fn header_lines(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `GET /metrics` and `GET /node/healthz`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(serve_metrics))
        .route("/node/healthz", axum::routing::get(healthz))
        .with_state(metrics)
}

async fn serve_metrics(
    axum::extract::State(m): axum::extract::State<Arc<Metrics>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz(axum::extract::State(m): axum::extract::State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn turn_latency_histogram_is_cumulative() {
        let m = Metrics::default();
        m.turn_latency(Duration::from_millis(250));
        m.turn_latency(Duration::from_millis(650));
        m.turn_latency(Duration::from_secs(9));
        let text = m.render();
        assert!(
            text.contains("vaani_turn_latency_seconds_bucket{le=\"0.200\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vaani_turn_latency_seconds_bucket{le=\"0.300\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vaani_turn_latency_seconds_bucket{le=\"0.700\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vaani_turn_latency_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("vaani_turn_latency_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains("vaani_turn_latency_seconds_sum 9.900000"),
            "{text}"
        );
    }

    use super::*;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    fn end(transport: Transport, reason: EndReason, call_id: Option<&str>) -> CallEnd {
        let started_at = Utc::now();
        CallEnd {
            transport,
            reason,
            call_id: call_id.map(str::to_string),
            tenant: Some("demo".into()),
            started_at,
            ended_at: started_at + chrono::Duration::milliseconds(1500),
        }
    }

    #[test]
    fn fresh_node_exports_every_series_at_zero() {
        let text = Metrics::new().render();
        assert_eq!(
            sample(&text, "vaani_active_calls{transport=\"stream\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                "vaani_calls_ended_total{transport=\"sip\",reason=\"max_duration\"}"
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            sample(&text, "vaani_rtp_jitter_seconds_sum").as_deref(),
            Some("0.000000")
        );
        assert_eq!(sample(&text, "vaani_node_draining").as_deref(), Some("0"));
        assert!(!text.contains("vaani_sip_responses_sent_total{"));
        // Every sample's family is announced once with HELP and TYPE, before its samples.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(typed.insert(name.to_string()), "{name} typed twice");
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .or_else(|| name.strip_suffix("_bucket"))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line} before its TYPE");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn counts_calls_responses_rtp_and_frames() {
        let (m, mut rx) = Metrics::with_sink();
        m.call_started(Transport::Sip);
        m.call_started(Transport::Sip);
        m.call_started(Transport::Stream);
        let text = m.render();
        assert_eq!(
            sample(&text, "vaani_active_calls{transport=\"sip\"}").as_deref(),
            Some("2")
        );
        m.call_ended(end(Transport::Sip, EndReason::RtpTimeout, Some("c1")));
        m.call_ended(end(Transport::Stream, EndReason::CallerHangup, None));
        m.sip_datagram_sent(b"SIP/2.0 200 OK\r\n\r\n");
        m.sip_datagram_sent(b"SIP/2.0 503 Service Unavailable\r\n\r\n");
        m.sip_datagram_sent(b"SIP/2.0 503 Service Unavailable\r\n\r\n");
        m.sip_datagram_sent(b"BYE sip:a@b SIP/2.0\r\n\r\n");
        m.sip_datagram_sent(b"SIP/2.0 99");
        m.sip_response_sent(700);
        m.rtp_received(150);
        m.rtp_lost(3);
        m.rtp_jitter(Duration::from_micros(2_500));
        m.rtp_jitter(Duration::from_micros(1_000_500));
        m.stream_frame_in();
        m.stream_frame_out();
        m.stream_frame_out();
        m.start_draining();
        let text = m.render();
        let expect = [
            ("vaani_active_calls{transport=\"sip\"}", "1"),
            ("vaani_active_calls{transport=\"stream\"}", "0"),
            (
                "vaani_calls_ended_total{transport=\"sip\",reason=\"rtp_timeout\"}",
                "1",
            ),
            (
                "vaani_calls_ended_total{transport=\"stream\",reason=\"caller_hangup\"}",
                "1",
            ),
            (
                "vaani_calls_ended_total{transport=\"sip\",reason=\"caller_hangup\"}",
                "0",
            ),
            ("vaani_sip_responses_sent_total{code=\"200\"}", "1"),
            ("vaani_sip_responses_sent_total{code=\"503\"}", "2"),
            ("vaani_rtp_packets_received_total", "150"),
            ("vaani_rtp_packets_lost_total", "3"),
            ("vaani_rtp_jitter_seconds_sum", "1.003000"),
            ("vaani_rtp_jitter_seconds_count", "2"),
            ("vaani_stream_frames_received_total", "1"),
            ("vaani_stream_frames_sent_total", "2"),
            ("vaani_node_draining", "1"),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series}");
        }
        // Only requests, malformed lines and impossible codes were left out.
        assert_eq!(text.matches("vaani_sip_responses_sent_total{").count(), 2);
        // Only the call with our call id reaches the sink.
        let got = rx.try_recv().ok();
        assert_eq!(got.as_ref().and_then(|e| e.call_id.as_deref()), Some("c1"));
        assert_eq!(got.map(|e| e.duration()), Some(Duration::from_millis(1500)));
        assert!(rx.try_recv().is_err());
        m.close_sink();
        m.call_ended(end(Transport::Sip, EndReason::Shutdown, Some("c2")));
        assert!(rx.try_recv().is_err());
        // An end without a start never wraps the gauge.
        m.call_ended(end(Transport::Stream, EndReason::Error, None));
        assert_eq!(m.active(Transport::Stream), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_outgoing_datagram_is_counted_without_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let m = Metrics::default();
            m.sip_datagram_sent(&data);
            let text = m.render();
            let lines = text.matches("vaani_sip_responses_sent_total{").count();
            proptest::prop_assert!(lines <= 1, "{} response lines", lines);
        }
    }
}
