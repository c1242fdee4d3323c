//! Client transactions: INVITE (RFC 3261 §17.1.1 with the RFC 6026 "Accepted" state) and
//! non-INVITE (§17.1.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Output, Peer, Timers, TransactionId, TuEvent};
use crate::sip::header::{CSeq, Method};
use crate::sip::message::{Headers, Request, Response, SipMessage};

/// The states of both client machines (non-INVITE uses Trying/Proceeding/Completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(super) struct ClientTx {
    pub(super) id: TransactionId,
    pub(super) invite: bool,
    pub(super) state: ClientState,
    request: Request,
    peer: Peer,
    reliable: bool,
    /// Timer A (INVITE) or E (non-INVITE).
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer B / F, or M in Accepted.
    timeout_at: Option<Instant>,
    /// Timer D / K.
    end_at: Option<Instant>,
    /// The ACK for a non-2xx final response, resent for each retransmission of it.
    ack: Option<Request>,
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3): the
/// original Request-URI, top Via, From, Call-ID, CSeq number and Route set, the To of the
/// response (with its tag), and no body. `None` only for a request without a Via, which
/// [`super::TransactionLayer::send_request`] never accepts.
pub fn ack_for(request: &Request, response: &Response) -> Option<Request> {
    let h = &request.headers;
    let mut headers = Headers::new(
        h.via.first()?.clone(),
        h.from.clone(),
        response.headers.to.clone(),
        h.call_id.clone(),
        CSeq {
            seq: h.cseq.seq,
            method: Method::Ack,
        },
    );
    headers.max_forwards = Some(70);
    headers.route = h.route.clone();
    Some(Request {
        method: Method::Ack,
        uri: request.uri.clone(),
        headers,
        body: Bytes::new(),
    })
}

impl ClientTx {
    pub(super) fn new(
        id: TransactionId,
        request: Request,
        peer: Peer,
        now: Instant,
        timers: &Timers,
        out: &mut VecDeque<Output>,
    ) -> Self {
        let invite = request.method == Method::Invite;
        let reliable = peer.transport.is_reliable();
        let tx = ClientTx {
            id,
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            request,
            peer,
            reliable,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            retransmit_interval: timers.t1,
            timeout_at: Some(now + timers.long()),
            end_at: None,
            ack: None,
        };
        tx.send_request(out);
        tx
    }

    fn send_request(&self, out: &mut VecDeque<Output>) {
        out.push_back(Output::Send {
            to: self.peer.clone(),
            message: SipMessage::Request(self.request.clone()),
        });
    }

    fn send_ack(&self, out: &mut VecDeque<Output>) {
        if let Some(ack) = &self.ack {
            out.push_back(Output::Send {
                to: self.peer.clone(),
                message: SipMessage::Request(ack.clone()),
            });
        }
    }

    fn terminate(&mut self, out: &mut VecDeque<Output>) {
        self.state = ClientState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = None;
        out.push_back(Output::Tu(TuEvent::Terminated { tx: self.id }));
    }

    fn end_after(&mut self, now: Instant, d: Duration, out: &mut VecDeque<Output>) {
        if d.is_zero() {
            self.terminate(out);
        } else {
            self.end_at = Some(now + d);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        response: Response,
        timers: &Timers,
        out: &mut VecDeque<Output>,
    ) {
        let status = response.status;
        let to_tu = |response: Response, out: &mut VecDeque<Output>, id| {
            out.push_back(Output::Tu(TuEvent::Response { tx: id, response }));
        };
        if self.invite {
            match (self.state, status) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    // Proceeding: no more retransmissions, and Timer B no longer applies.
                    self.state = ClientState::Proceeding;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    to_tu(response, out, self.id);
                }
                (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                    self.state = ClientState::Accepted;
                    self.retransmit_at = None;
                    self.timeout_at = Some(now + timers.long()); // Timer M
                    to_tu(response, out, self.id);
                }
                (ClientState::Calling | ClientState::Proceeding, 300..=699) => {
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    self.ack = ack_for(&self.request, &response);
                    self.send_ack(out);
                    to_tu(response, out, self.id);
                    self.end_after(now, timers.d(self.reliable), out); // Timer D
                }
                // Retransmitted final response: ACK again, the TU has seen it.
                (ClientState::Completed, 300..=699) => self.send_ack(out),
                // RFC 6026: further 2xx (retransmissions, forks) go to the TU, which ACKs them.
                (ClientState::Accepted, 200..=299) => to_tu(response, out, self.id),
                _ => {}
            }
        } else {
            match (self.state, status) {
                (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                    self.state = ClientState::Proceeding;
                    to_tu(response, out, self.id);
                }
                (ClientState::Trying | ClientState::Proceeding, 200..=699) => {
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    to_tu(response, out, self.id);
                    self.end_after(now, timers.t4_or_zero(self.reliable), out); // Timer K
                }
                // Completed absorbs retransmitted responses.
                _ => {}
            }
        }
    }

    pub(super) fn on_timer(&mut self, now: Instant, timers: &Timers, out: &mut VecDeque<Output>) {
        if let Some(t) = self.retransmit_at.filter(|t| *t <= now) {
            let interval = match self.state {
                // Timer A doubles without a cap.
                ClientState::Calling => Some(self.retransmit_interval.saturating_mul(2)),
                // Timer E doubles up to T2 ...
                ClientState::Trying => {
                    Some(self.retransmit_interval.saturating_mul(2).min(timers.t2))
                }
                // ... and is T2 once a provisional response came.
                ClientState::Proceeding if !self.invite => Some(timers.t2),
                _ => None,
            };
            match interval {
                Some(interval) => {
                    self.send_request(out);
                    self.retransmit_interval = interval;
                    let next = t + interval;
                    self.retransmit_at = Some(if next > now { next } else { now + interval });
                }
                None => self.retransmit_at = None,
            }
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.timeout_at = None;
            match self.state {
                // Timer B / F: no final response.
                ClientState::Calling | ClientState::Trying | ClientState::Proceeding => {
                    out.push_back(Output::Tu(TuEvent::Timeout { tx: self.id }));
                    self.terminate(out);
                }
                // Timer M.
                ClientState::Accepted => self.terminate(out),
                _ => {}
            }
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.terminate(out);
        }
    }

    pub(super) fn abandon(&mut self, out: &mut VecDeque<Output>) {
        if self.state != ClientState::Terminated {
            self.terminate(out);
        }
    }

    pub(super) fn on_transport_error(&mut self, out: &mut VecDeque<Output>) {
        out.push_back(Output::Tu(TuEvent::TransportError { tx: self.id }));
        self.terminate(out);
    }
}
