//! SIP for the media node (DESIGN.md §1 media plane, §3 sans-IO): message parsing and
//! serialization, and the RFC 3261 transaction layer.
//!
//! - [`message`]: bytes → validated [`message::SipMessage`] → bytes, the `400` for requests
//!   that fail validation, and stream framing for TCP. Hand-written: the `rsip`/`rsipstack`
//!   crates were measured against the RFC 4475 torture messages and fell short (see
//!   `README.md` beside this file).
//! - [`transaction`]: the four RFC 3261 §17 transaction state machines and a table that keys
//!   them (§17.1.3, §17.2.3); fed `(now, event)`, they return messages to send, notifications
//!   for the transaction user and the next deadline. They never read the clock or own a socket.
//!
//! - [`sdp`]: SDP parse/serialize with a typed audio model, and RFC 3264 offer/answer for
//!   PCMU/PCMA/G.722/Opus, `telephone-event`, `ptime` and direction (hold).
//!
//! - [`dialog`]: RFC 3261 §12 dialogs (id, route set, remote target, CSeq rules) and the
//!   requests built inside them.
//! - [`uas`]: the user-agent core on top of the transactions: calls from INVITE to
//!   BYE, CANCEL, re-INVITE, INFO DTMF, OPTIONS, the trunk allowlist, 2xx retransmission;
//!   and ([`uas::uac`]) the calls we place: INVITE, ACK, CANCEL, Digest retry.
//! - [`stream`]: framing messages out of a TCP byte stream (Content-Length, keep-alive pings).
//! - [`digest`]: Digest authentication (RFC 2617/7616) for the calls we place;
//!   [`digest_server`]: challenging and checking it for calls we answer (stateless nonces).

pub mod dialog;
pub mod digest;
pub mod digest_server;
mod grammar;
pub mod header;
pub mod message;
pub mod sdp;
pub mod stream;
pub mod transaction;
pub mod uas;
pub mod uri;

pub use header::{CSeq, Header, Method, NameAddr, Transport, Via};
pub use message::{ParseError, Request, Response, SipMessage};
pub use uri::{Host, Param, SipUri, Uri};
