//! Server transactions: INVITE (RFC 3261 §17.2.1 with the RFC 6026 "Accepted" state) and
//! non-INVITE (§17.2.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Output, Peer, Timers, TransactionId, TuEvent, TxError};
use crate::sip::header::Method;
use crate::sip::message::{Request, Response, SipMessage};

/// The states of both server machines (non-INVITE uses Trying/Proceeding/Completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub(super) struct ServerTx {
    pub(super) id: TransactionId,
    pub(super) invite: bool,
    pub(super) state: ServerState,
    pub(super) request: Request,
    peer: Peer,
    reliable: bool,
    last_response: Option<Response>,
    /// INVITE: when to send our own 100 Trying.
    trying_at: Option<Instant>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer H (Completed) or L (Accepted).
    timeout_at: Option<Instant>,
    /// Timer I (Confirmed) or J (Completed, non-INVITE).
    end_at: Option<Instant>,
}

impl ServerTx {
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
        let mut tx = ServerTx {
            id,
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            request,
            peer,
            reliable,
            last_response: None,
            trying_at: None,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            timeout_at: None,
            end_at: None,
        };
        if invite {
            if timers.trying_delay.is_zero() {
                tx.send_trying(out);
            } else {
                tx.trying_at = Some(now + timers.trying_delay);
            }
        }
        tx
    }

    fn send(&self, response: &Response, out: &mut VecDeque<Output>) {
        out.push_back(Output::Send {
            to: self.peer.clone(),
            message: SipMessage::Response(response.clone()),
        });
    }

    fn resend_last(&self, out: &mut VecDeque<Output>) {
        if let Some(r) = &self.last_response {
            self.send(r, out);
        }
    }

    fn send_trying(&mut self, out: &mut VecDeque<Output>) {
        let trying = self.request.response(100, None);
        self.send(&trying, out);
        self.last_response = Some(trying);
        self.trying_at = None;
    }

    fn terminate(&mut self, out: &mut VecDeque<Output>) {
        self.state = ServerState::Terminated;
        self.trying_at = None;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = None;
        out.push_back(Output::Tu(TuEvent::Terminated { tx: self.id }));
    }

    /// Enters a state that ends after `d` (zero over reliable transports: end now).
    fn end_after(&mut self, now: Instant, d: Duration, out: &mut VecDeque<Output>) {
        if d.is_zero() {
            self.terminate(out);
        } else {
            self.end_at = Some(now + d);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.trying_at,
            self.retransmit_at,
            self.timeout_at,
            self.end_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A request that matched this transaction: a retransmission, or the ACK for our non-2xx
    /// final response.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        request: Request,
        from: Peer,
        timers: &Timers,
        out: &mut VecDeque<Output>,
    ) {
        if request.method == Method::Ack {
            match self.state {
                ServerState::Completed if self.invite => {
                    self.state = ServerState::Confirmed;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    self.end_after(now, timers.t4_or_zero(self.reliable), out);
                }
                // RFC 6026 §7.1: an ACK in Accepted goes to the TU.
                ServerState::Accepted => {
                    out.push_back(Output::Tu(TuEvent::Ack { request, from }));
                }
                // Confirmed absorbs retransmitted ACKs; anything else is stray.
                _ => {}
            }
            return;
        }
        match self.state {
            // §17.2.1: retransmit the most recent provisional / the final response.
            ServerState::Proceeding | ServerState::Completed => self.resend_last(out),
            // Trying (non-INVITE) discards; Accepted and Confirmed absorb (RFC 6026).
            _ => {}
        }
    }

    /// The TU hands a response to send.
    pub(super) fn on_tu_response(
        &mut self,
        now: Instant,
        response: Response,
        timers: &Timers,
        out: &mut VecDeque<Output>,
    ) -> Result<(), TxError> {
        let status = response.status;
        match (self.invite, self.state, status) {
            (_, ServerState::Trying | ServerState::Proceeding, 100..=199) => {
                self.trying_at = None;
                self.state = ServerState::Proceeding;
                self.send(&response, out);
                self.last_response = Some(response);
            }
            (true, ServerState::Proceeding, 200..=299) => {
                self.trying_at = None;
                self.send(&response, out);
                self.last_response = Some(response);
                self.state = ServerState::Accepted;
                self.timeout_at = Some(now + timers.long()); // Timer L
            }
            // The TU retransmits its 2xx through the transaction while in Accepted.
            (true, ServerState::Accepted, 200..=299) => self.send(&response, out),
            (true, ServerState::Proceeding, 300..=699) => {
                self.trying_at = None;
                self.send(&response, out);
                self.last_response = Some(response);
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.retransmit_interval = timers.t1;
                    self.retransmit_at = Some(now + timers.t1); // Timer G
                }
                self.timeout_at = Some(now + timers.long()); // Timer H
            }
            (false, ServerState::Trying | ServerState::Proceeding, 200..=699) => {
                self.send(&response, out);
                self.last_response = Some(response);
                self.state = ServerState::Completed;
                self.end_after(now, timers.j(self.reliable), out); // Timer J
            }
            _ => return Err(TxError::InvalidState),
        }
        Ok(())
    }

    pub(super) fn on_timer(&mut self, now: Instant, timers: &Timers, out: &mut VecDeque<Output>) {
        if self.trying_at.is_some_and(|t| t <= now) {
            self.trying_at = None;
            if self.state == ServerState::Proceeding && self.last_response.is_none() {
                self.send_trying(out);
            }
        }
        if let Some(t) = self.retransmit_at.filter(|t| *t <= now) {
            if self.state == ServerState::Completed {
                self.resend_last(out);
                self.retransmit_interval =
                    self.retransmit_interval.saturating_mul(2).min(timers.t2);
                let next = t + self.retransmit_interval;
                self.retransmit_at = Some(if next > now {
                    next
                } else {
                    now + self.retransmit_interval
                });
            } else {
                self.retransmit_at = None;
            }
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.timeout_at = None;
            match self.state {
                // Timer H: the ACK never came.
                ServerState::Completed => {
                    out.push_back(Output::Tu(TuEvent::Timeout { tx: self.id }));
                    self.terminate(out);
                }
                // Timer L.
                ServerState::Accepted => self.terminate(out),
                _ => {}
            }
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.terminate(out);
        }
    }

    pub(super) fn on_transport_error(&mut self, out: &mut VecDeque<Output>) {
        out.push_back(Output::Tu(TuEvent::TransportError { tx: self.id }));
        self.terminate(out);
    }
}
