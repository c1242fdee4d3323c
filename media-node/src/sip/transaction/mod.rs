//! The RFC 3261 §17 transaction layer, sans-IO.
//!
//! [`TransactionLayer`] holds every client and server transaction, keyed as §17.1.3 and
//! §17.2.3 say. It is driven by `(now, event)` calls:
//!
//! - [`receive`](TransactionLayer::receive): a message arrived from a peer;
//! - [`send_request`](TransactionLayer::send_request): the transaction user (TU) starts a client
//!   transaction;
//! - [`send_response`](TransactionLayer::send_response): the TU answers a server transaction;
//! - [`send_stateless`](TransactionLayer::send_stateless): the TU sends outside any transaction
//!   (the ACK for a 2xx, 2xx retransmissions);
//! - [`transport_error`](TransactionLayer::transport_error): a send failed;
//! - [`handle_timeout`](TransactionLayer::handle_timeout): the deadline from
//!   [`next_deadline`](TransactionLayer::next_deadline) has passed.
//!
//! and it answers through [`poll_output`](TransactionLayer::poll_output): messages to put on
//! the wire ([`Output::Send`]) and notifications for the TU ([`Output::Tu`]). It never reads a
//! clock, owns a socket or draws a random number.
//!
//! Retransmission follows the transport of each transaction: over UDP the timers of §17
//! (T1 = 500 ms doubling to T2 = 4 s, 64·T1 timeouts); over TCP/TLS nothing is retransmitted
//! and the timers that only absorb retransmissions (D, I, J, K) are zero. The INVITE machines
//! include the "Accepted" state of RFC 6026 (Timers L and M), which keeps a retransmitted
//! INVITE after a 2xx from looking like a new call.

mod client;
mod server;
mod timers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

pub use client::{ack_for, ClientState};
pub use server::ServerState;
pub use timers::Timers;

use client::ClientTx;
use server::ServerTx;

use super::header::{Method, Transport, Via};
use super::message::{Request, Response, SipMessage};

/// Identifies one transaction for the life of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

/// The far end of a hop: the address and transport a message came from or goes to. For
/// stream transports the driver maps the address to its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// What the layer asks of its driver and its TU.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Put this message on the wire.
    Send {
        to: Peer,
        message: SipMessage,
    },
    Tu(TuEvent),
}

/// Notifications for the transaction user.
#[derive(Debug, Clone, PartialEq)]
pub enum TuEvent {
    /// A new request and the server transaction created for it. The top Via already carries
    /// `received`/`rport` (§18.2.1, RFC 3581), so responses built from it route correctly.
    Request {
        tx: TransactionId,
        request: Request,
        from: Peer,
    },
    /// An ACK outside any transaction (the ACK for a 2xx, §17.2.3 / §13.3.1.4) or one that
    /// reached an INVITE server transaction in the Accepted state.
    Ack {
        request: Request,
        from: Peer,
    },
    /// A response for a client transaction (provisional, final, and in Accepted each 2xx).
    Response {
        tx: TransactionId,
        response: Response,
    },
    /// A response that matched no client transaction, e.g. a 2xx retransmission after the
    /// transaction ended; the TU (dialog layer) decides.
    StrayResponse {
        response: Response,
        from: Peer,
    },
    /// A client transaction got no final response (Timer B/F: the TU treats it as 408), or an
    /// INVITE server transaction got no ACK for its final response (Timer H).
    Timeout {
        tx: TransactionId,
    },
    TransportError {
        tx: TransactionId,
    },
    /// The transaction is gone; its id will not appear again.
    Terminated {
        tx: TransactionId,
    },
}

/// Why the layer refused a TU call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("the request has no Via with an RFC 3261 branch")]
    NoBranch,
    #[error("a transaction with this branch and method already exists")]
    DuplicateBranch,
    #[error("ACK is sent by the INVITE transaction (non-2xx) or statelessly (2xx)")]
    AckIsNotATransaction,
    #[error("no such transaction")]
    UnknownTransaction,
    #[error("the transaction cannot send this response in its current state")]
    InvalidState,
}

/// §17.2.3 server matching key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    /// branch + sent-by + method (ACK counts as INVITE).
    Rfc3261 {
        branch: String,
        host: String,
        port: Option<u16>,
        method: String,
    },
    /// An RFC 2543 peer without the magic cookie: match on what the old spec used.
    Rfc2543 {
        uri: String,
        call_id: String,
        from_tag: Option<String>,
        cseq: u32,
        method: String,
        via: String,
    },
}

fn server_method(m: &Method) -> String {
    match m {
        Method::Ack => Method::Invite.as_str().to_string(),
        other => other.as_str().to_string(),
    }
}

fn server_key(request: &Request, method: &Method) -> Option<ServerKey> {
    let via = request.headers.top_via()?;
    let method = server_method(method);
    Some(if via.has_rfc3261_branch() {
        ServerKey::Rfc3261 {
            branch: via.branch()?.to_string(),
            host: via.host.to_string().to_ascii_lowercase(),
            port: via.port,
            method,
        }
    } else {
        let h = &request.headers;
        ServerKey::Rfc2543 {
            uri: request.uri.to_string(),
            call_id: h.call_id.clone(),
            from_tag: h.from.tag().map(str::to_string),
            cseq: h.cseq.seq,
            method,
            via: sent_by_text(via),
        }
    })
}

fn sent_by_text(via: &Via) -> String {
    format!(
        "{}:{:?}",
        via.host.to_string().to_ascii_lowercase(),
        via.port
    )
}

/// §17.1.3 client matching key: branch + CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: String,
}

/// A fresh RFC 3261 branch from caller-supplied randomness (the layer draws none itself).
pub fn branch_from(random: u64) -> String {
    format!("{}{random:016x}", super::header::BRANCH_MAGIC)
}

/// All transactions of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    next_id: u64,
    servers: HashMap<TransactionId, (ServerKey, ServerTx)>,
    clients: HashMap<TransactionId, (ClientKey, ClientTx)>,
    server_keys: HashMap<ServerKey, TransactionId>,
    client_keys: HashMap<ClientKey, TransactionId>,
    /// Lazily cleaned: an entry may be stale, never missing.
    deadlines: BinaryHeap<Reverse<(Instant, TransactionId)>>,
    out: VecDeque<Output>,
}

impl Default for TransactionLayer {
    fn default() -> Self {
        TransactionLayer::new(Timers::default())
    }
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        TransactionLayer {
            timers,
            next_id: 0,
            servers: HashMap::new(),
            clients: HashMap::new(),
            server_keys: HashMap::new(),
            client_keys: HashMap::new(),
            deadlines: BinaryHeap::new(),
            out: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// How many transactions are alive (client, server).
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    fn alloc_id(&mut self) -> TransactionId {
        self.next_id += 1;
        TransactionId(self.next_id)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if self.deadline_of(id) == Some(t) {
                return Some(t);
            }
            self.deadlines.pop();
        }
        None
    }

    fn deadline_of(&self, id: TransactionId) -> Option<Instant> {
        if let Some((_, tx)) = self.servers.get(&id) {
            return tx.next_deadline();
        }
        self.clients.get(&id).and_then(|(_, tx)| tx.next_deadline())
    }

    /// After a transaction ran: schedule its next deadline, or drop it if it ended.
    fn settle(&mut self, id: TransactionId) {
        let server_done = self
            .servers
            .get(&id)
            .is_some_and(|(_, tx)| tx.state == ServerState::Terminated);
        if server_done {
            if let Some((key, _)) = self.servers.remove(&id) {
                self.server_keys.remove(&key);
            }
            return;
        }
        let client_done = self
            .clients
            .get(&id)
            .is_some_and(|(_, tx)| tx.state == ClientState::Terminated);
        if client_done {
            if let Some((key, _)) = self.clients.remove(&id) {
                self.client_keys.remove(&key);
            }
            return;
        }
        if let Some(t) = self.deadline_of(id) {
            self.deadlines.push(Reverse((t, id)));
        }
    }

    /// A message arrived from `from`.
    pub fn receive(&mut self, now: Instant, message: SipMessage, from: Peer) {
        match message {
            SipMessage::Request(request) => self.receive_request(now, request, from),
            SipMessage::Response(response) => self.receive_response(now, response, from),
        }
    }

    fn receive_request(&mut self, now: Instant, mut request: Request, from: Peer) {
        let Some(key) = server_key(&request, &request.method) else {
            return;
        };
        if let Some(&id) = self.server_keys.get(&key) {
            if let Some((_, tx)) = self.servers.get_mut(&id) {
                tx.on_request(now, request, from, &self.timers, &mut self.out);
            }
            self.settle(id);
            return;
        }
        if request.method == Method::Ack {
            self.out
                .push_back(Output::Tu(TuEvent::Ack { request, from }));
            return;
        }
        // §18.2.1 / RFC 3581: the server transport stamps the top Via.
        if let Some(via) = request.headers.via.first_mut() {
            via.stamp_received(from.addr);
        }
        let reply_to = response_peer(&request, &from);
        let id = self.alloc_id();
        self.out.push_back(Output::Tu(TuEvent::Request {
            tx: id,
            request: request.clone(),
            from,
        }));
        let tx = ServerTx::new(id, request, reply_to, now, &self.timers, &mut self.out);
        self.server_keys.insert(key.clone(), id);
        self.servers.insert(id, (key, tx));
        self.settle(id);
    }

    fn receive_response(&mut self, now: Instant, response: Response, from: Peer) {
        // §8.1.3.3: a response with more than one Via is not for us.
        if response.headers.via.len() != 1 {
            tracing::debug!(
                status = response.status,
                "dropping response with several Vias"
            );
            return;
        }
        let id = response
            .headers
            .top_via()
            .and_then(Via::branch)
            .and_then(|branch| {
                self.client_keys.get(&ClientKey {
                    branch: branch.to_string(),
                    method: response.headers.cseq.method.as_str().to_string(),
                })
            })
            .copied();
        let Some(id) = id else {
            self.out
                .push_back(Output::Tu(TuEvent::StrayResponse { response, from }));
            return;
        };
        if let Some((_, tx)) = self.clients.get_mut(&id) {
            tx.on_response(now, response, &self.timers, &mut self.out);
        }
        self.settle(id);
    }

    /// Starts a client transaction: sends `request` to `to` and retransmits it as §17.1 says.
    /// The request's top Via must carry an RFC 3261 branch (see [`branch_from`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        to: Peer,
    ) -> Result<TransactionId, TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let branch = request
            .headers
            .top_via()
            .filter(|v| v.has_rfc3261_branch())
            .and_then(Via::branch)
            .ok_or(TxError::NoBranch)?;
        let key = ClientKey {
            branch: branch.to_string(),
            method: request.method.as_str().to_string(),
        };
        if self.client_keys.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = self.alloc_id();
        let tx = ClientTx::new(id, request, to, now, &self.timers, &mut self.out);
        self.client_keys.insert(key.clone(), id);
        self.clients.insert(id, (key, tx));
        self.settle(id);
        Ok(id)
    }

    /// The TU answers server transaction `tx`.
    pub fn send_response(
        &mut self,
        now: Instant,
        tx: TransactionId,
        response: Response,
    ) -> Result<(), TxError> {
        let (_, server) = self
            .servers
            .get_mut(&tx)
            .ok_or(TxError::UnknownTransaction)?;
        let result = server.on_tu_response(now, response, &self.timers, &mut self.out);
        self.settle(tx);
        result
    }

    /// Sends a message outside any transaction (ACK for a 2xx, TU retransmission of a 2xx).
    pub fn send_stateless(&mut self, message: SipMessage, to: Peer) {
        self.out.push_back(Output::Send { to, message });
    }

    /// The driver could not deliver a message of transaction `tx` (§17.1.4, §17.2.4).
    pub fn transport_error(&mut self, tx: TransactionId) {
        if let Some((_, t)) = self.servers.get_mut(&tx) {
            t.on_transport_error(&mut self.out);
        } else if let Some((_, t)) = self.clients.get_mut(&tx) {
            t.on_transport_error(&mut self.out);
        }
        self.settle(tx);
    }

    /// The TU gives up on client transaction `tx`: it ends now (`Terminated`), whatever its
    /// state. For an INVITE still without a final response 64·T1 after its CANCEL (§9.1: the
    /// client "SHOULD then consider the original transaction cancelled").
    pub fn abandon(&mut self, tx: TransactionId) {
        if let Some((_, t)) = self.clients.get_mut(&tx) {
            t.abandon(&mut self.out);
        }
        self.settle(tx);
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if !due.contains(&id) {
                due.push(id);
            }
        }
        for id in due {
            if self.deadline_of(id).is_none_or(|t| t > now) {
                // Stale entry; `settle` pushed the real deadline when it changed.
                continue;
            }
            if let Some((_, tx)) = self.servers.get_mut(&id) {
                tx.on_timer(now, &self.timers, &mut self.out);
            } else if let Some((_, tx)) = self.clients.get_mut(&id) {
                tx.on_timer(now, &self.timers, &mut self.out);
            }
            self.settle(id);
        }
    }

    /// The INVITE server transaction a CANCEL refers to (§9.2: same key but the method).
    pub fn invite_for_cancel(&self, cancel: &Request) -> Option<TransactionId> {
        let key = server_key(cancel, &Method::Invite)?;
        self.server_keys.get(&key).copied()
    }

    pub fn server_state(&self, tx: TransactionId) -> Option<ServerState> {
        self.servers.get(&tx).map(|(_, t)| t.state)
    }

    pub fn client_state(&self, tx: TransactionId) -> Option<ClientState> {
        self.clients.get(&tx).map(|(_, t)| t.state)
    }

    /// The request that created server transaction `tx` (with its stamped Via).
    pub fn server_request(&self, tx: TransactionId) -> Option<&Request> {
        self.servers.get(&tx).map(|(_, t)| &t.request)
    }
}

/// Where responses of a new server transaction go (§18.2.2): back over the same connection
/// for stream transports, to the source address when the client asked for `rport`
/// (RFC 3581), else to `received` and the sent-by port.
fn response_peer(request: &Request, from: &Peer) -> Peer {
    let via = request.headers.top_via();
    if from.transport.is_reliable() || via.is_some_and(|v| v.rport().is_some()) {
        return from.clone();
    }
    let addr = via.and_then(Via::response_address).unwrap_or(from.addr);
    Peer {
        addr,
        transport: from.transport.clone(),
    }
}
