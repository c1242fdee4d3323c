//! The media node: every call's audio flows through here (DESIGN.md §1, media plane).
//!
//! Sans-IO style (DESIGN.md §3): the protocol cores in these modules are pure state machines
//! fed `(now, input)` that return outputs and their next deadline; they never read the clock
//! or own a socket. The driver that owns sockets and timers comes with the node binary.
//!
//! - [`codec`]: G.711 μ-law/A-law, the internal PCM format (16 kHz mono) and resampling;
//! - [`rtp`]: RTP/RTCP packets, the jitter buffer, RFC 4733 DTMF, stream statistics;
//! - [`streams`]: the providers' media-stream WebSocket protocols (Twilio, Exotel, Plivo, Telnyx);
//! - [`sip`]: SIP messages, transactions and dialogs;
//! - [`server`]: the driver that owns the media-stream WebSockets, and the echo app;
//! - [`services`]: the embedded offline speech engines (VAD, espeak-ng TTS, pocketsphinx STT);
//! - [`sipnode`]: the driver that owns the SIP and RTP sockets: SIP calls end to end;
//! - [`webrtc`]: browser calls: WHIP-style signalling, Opus, the `webrtc` crate's ICE/DTLS/SRTP;
//! - [`metrics`]: the counters the drivers share, `/metrics` and `/node/healthz`;
//! - [`udp`]: batched UDP I/O (`recvmmsg`/`sendmmsg`) for the RTP engine and the load generator.

pub mod agent;
pub mod cloud;
pub mod codec;
pub mod metrics;
pub mod pipeline;
pub mod rtp;
pub mod server;
pub mod services;
pub mod sip;
pub mod sipnode;
pub mod streams;
pub mod udp;
pub mod webrtc;
