//! Where a SIP call's media runs: on the shared-socket [`engine`](super::engine) (the default),
//! or on a socket and tokio task of its own ([`super::call`], kept to compare against and as a
//! fallback). The SIP task sees one interface: [`Media::reserve`] a port when it writes its SDP,
//! [`Media::start`] the call with the negotiated session, and talk to it through the returned
//! [`MediaCmd`] channel (dropping it ends the call's media).

use std::net::IpAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::app::SipCall;
use super::call::{CallTask, MediaCmd};
use super::engine::{Engine, EngineConfig, NewCall, Placement, Shared};
use super::ports::{PortPool, PortRange};
use crate::rtp::session::{RtpSession, SessionConfig};
use crate::sip::uas::CallHandle;

/// How the node runs RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// Worker threads with one shared socket each, batched I/O.
    Engine(EngineConfig),
    /// One socket and tokio task per call.
    PerCallSocket,
}

impl Default for MediaMode {
    fn default() -> Self {
        MediaMode::Engine(EngineConfig::default())
    }
}

/// The running media side.
pub(crate) enum Media {
    Engine(Engine),
    PerCall(PortPool),
}

/// A call's RTP port, held from its SDP until its media starts (or the call fails).
#[derive(Debug)]
pub(crate) enum Reserved {
    Socket(std::net::UdpSocket),
    Worker(Placement),
}

impl Reserved {
    pub fn port(&self) -> u16 {
        match self {
            Reserved::Socket(s) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            Reserved::Worker(p) => p.port(),
        }
    }
}

impl Media {
    pub fn new(
        ip: IpAddr,
        range: PortRange,
        mode: MediaMode,
        shared: Shared,
    ) -> std::io::Result<Self> {
        Ok(match mode {
            MediaMode::Engine(config) => Media::Engine(Engine::start(ip, range, config, shared)?),
            MediaMode::PerCallSocket => Media::PerCall(PortPool::new(ip, range)),
        })
    }

    /// A port for a new call's SDP; `None` when none is free.
    pub fn reserve(&self) -> Option<Reserved> {
        match self {
            Media::Engine(e) => e.place().map(Reserved::Worker),
            Media::PerCall(pool) => pool.bind().map(Reserved::Socket),
        }
    }

    /// Starts a call's media on what was reserved for it.
    pub fn start(
        &self,
        now: Instant,
        call: CallHandle,
        reserved: Reserved,
        session: SessionConfig,
        app: Box<dyn SipCall>,
        shared: &Shared,
    ) -> Result<mpsc::Sender<MediaCmd>, String> {
        let (tx, rx) = mpsc::channel(32);
        match (self, reserved) {
            (Media::Engine(engine), Reserved::Worker(placement)) => {
                engine
                    .start_call(NewCall {
                        call,
                        session,
                        app,
                        commands: rx,
                        placement,
                    })
                    .map_err(str::to_string)?;
            }
            (_, Reserved::Socket(std_socket)) => {
                let session = RtpSession::new(now, session).map_err(|e| e.to_string())?;
                let socket = UdpSocket::from_std(std_socket).map_err(|e| e.to_string())?;
                let task = CallTask {
                    call,
                    socket,
                    session,
                    app,
                    commands: rx,
                    sip: shared.sip.clone(),
                    registry: shared.registry.clone(),
                    metrics: shared.metrics.clone(),
                    published: Default::default(),
                };
                tokio::spawn(task.run());
            }
            (Media::PerCall(_), Reserved::Worker(_)) => {
                return Err("a worker seat without an engine".into());
            }
        }
        Ok(tx)
    }
}
