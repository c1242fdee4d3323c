//! RTP and RTCP, sans-IO.
//!
//! - [`packet`]: RTP packet parse/serialize (RFC 3550 §5), RTP/RTCP demultiplexing;
//! - [`jitter`]: the inbound jitter buffer (reordering, duplicates, loss, SSRC change, wraps);
//! - [`demux`]: which call a datagram on a shared RTP socket belongs to (address, then SSRC);
//! - [`dtmf`]: RFC 4733 telephone-events, receive and send;
//! - [`rtcp`]: SR, RR, SDES, BYE and compound packets (RFC 3550 §6);
//! - [`stats`]: per-source reception statistics (RFC 3550 A.1, A.3, A.8);
//! - [`session`]: one call's RTP session: latching, jitter buffer → 16 kHz frames, DTMF both
//!   ways, the real-time [`session::Pacer`] for sending, the inactivity timeout.
//!
//! Nothing here owns a socket or reads a clock: the driver passes the arrival instant of each
//! datagram and asks for output when [`JitterBuffer::poll_timeout`] or
//! [`DtmfReceiver::poll_timeout`] comes due. Parsers of network bytes never panic.
//!
//! The inbound path per datagram: [`is_rtcp`] → [`RtpPacket::parse`] → by payload type, either
//! [`DtmfReceiver::push`] or [`JitterBuffer::push`]; then, on the 20 ms tick,
//! [`JitterBuffer::pop`] → [`crate::codec::FrameDecoder::decode`] (or concealment on `Missing`).

pub mod demux;
pub mod dtmf;
pub mod jitter;
pub mod packet;
pub mod rtcp;
pub mod session;
pub mod stats;

pub use dtmf::{DtmfNotice, DtmfReceiver, DtmfSender, TelephoneEvent};
pub use jitter::{Frame, JitterBuffer, JitterConfig, Playout, PushOutcome};
pub use packet::{is_rtcp, RtpError, RtpHeader, RtpPacket};
pub use rtcp::{RtcpError, RtcpPacket};
pub use stats::ReceiverStats;
