//! The user-agent client half of the core (RFC 3261 §8.1, §9.1, §13.2, §22.2): calls we
//! place, from INVITE to the answer or its failure.
//!
//! - [`Uas::dial`] sends an INVITE with our SDP offer (a Via with `rport`, our Contact, an
//!   optional pre-existing route set for an outbound proxy). Provisional responses become
//!   [`UasEvent::Progress`] (183 with SDP carries early media's description).
//! - A **2xx** creates the dialog (§12.1.2: route set = Record-Route reversed, remote target =
//!   Contact) and is acknowledged by this core with an ACK built in that dialog (§13.2.2.4:
//!   the INVITE's CSeq number, its credentials), sent again for every retransmission of the
//!   2xx, also after the transaction ended; the driver gets [`UasEvent::Answered`]. A 2xx
//!   from a second fork is acknowledged and ended with BYE.
//! - A **300–699** is acknowledged by the transaction layer; the call ends with
//!   [`EndReason::Failed`]. A 401/407 with [`Dial::credentials`] is retried once with a
//!   Digest answer (RFC 2617/7616, `qop=auth`, a fresh `cnonce`, `nc=00000001`).
//! - **Hang-up before the answer** ([`Uas::hangup`]) sends CANCEL (§9.1) once a provisional
//!   response has arrived (before one, it waits for it); should a 2xx cross the CANCEL, it is
//!   acknowledged and the call ended with BYE. Without a final response 64·T1 after the
//!   CANCEL, the INVITE transaction is abandoned.
//! - **Timeouts**: Timer B (no response at all) ends the call with [`EndReason::Timeout`];
//!   [`Dial::answer_timeout`] (ringing too long) cancels it with [`EndReason::NoAnswer`].
//!
//! Once answered, the call is like any other: the far end's BYE, re-INVITE, INFO and OPTIONS
//! are handled by the server half, and our hang-up is a BYE.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{reason_text, CallHandle, CallState, EndReason, Uas, UasError, UasEvent, ALLOW};
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::digest::{self, Challenge, Credentials, DigestRequest};
use crate::sip::header::{CSeq, Method, NameAddr, Transport};
use crate::sip::message::{Headers, Request, Response};
use crate::sip::transaction::{Peer, TransactionId};
use crate::sip::uri::{SipUri, Uri};

/// A call to place.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The Request-URI and To: a `sip:` URI.
    pub target: Uri,
    /// Who calls (From); the core adds our tag.
    pub from: NameAddr,
    /// Where the INVITE goes first: the target's own address, or the outbound proxy's. The
    /// driver resolves it (the core does no DNS).
    pub next_hop: SocketAddr,
    /// UDP, or TCP (the driver has a connection to `next_hop` open before the INVITE goes):
    /// our Via names it, our Contact carries `;transport=tcp`, and the whole call's requests
    /// go over that connection.
    pub transport: Transport,
    /// A pre-existing route set (§8.1.2), e.g. the outbound proxy with `lr`.
    pub route: Vec<NameAddr>,
    /// Extra header fields for the INVITE.
    pub headers: Vec<(String, String)>,
    /// Our SDP offer.
    pub sdp: Bytes,
    /// Answers one 401/407 challenge when present.
    pub credentials: Option<Credentials>,
    /// Cancel the call when it has rung this long without an answer.
    pub answer_timeout: Option<Duration>,
}

/// What only a call we placed keeps.
#[derive(Debug)]
pub(super) struct Outbound {
    /// A provisional response arrived for the current INVITE: CANCEL may go (§9.1).
    provisional: bool,
    /// Hung up before any provisional response: CANCEL as soon as one arrives.
    cancel_wanted: bool,
    /// The cause and text of our hang-up, for the CANCEL, or the BYE should a 2xx cross it.
    hangup: Option<(u16, String)>,
    /// The ACK for the 2xx that made the dialog and where it went, resent for each
    /// retransmission of that 2xx.
    ack: Option<(Vec<u8>, SocketAddr)>,
    credentials: Option<Credentials>,
    auth_retried: bool,
    answer_at: Option<Instant>,
    /// 64·T1 after our CANCEL (or a hang-up before any response): give up on the INVITE.
    give_up_at: Option<Instant>,
    /// The dialog's first hop when it is not where the INVITE went (counted as a dialed
    /// peer while the call lives).
    dialog_peer: Option<std::net::IpAddr>,
}

impl Outbound {
    pub(super) fn dialog_peer(&self) -> Option<std::net::IpAddr> {
        self.dialog_peer
    }
}

impl Uas {
    /// Places a call: sends the INVITE and returns its handle. What happens next comes as
    /// events ([`UasEvent::Progress`], [`UasEvent::Answered`], [`UasEvent::Ended`]).
    pub fn dial(&mut self, now: Instant, dial: Dial) -> Result<CallHandle, UasError> {
        let target_ok = dial.target.as_sip().is_some_and(|u| {
            u.headers.is_empty() && u.param("method").is_none() && u.param("maddr").is_none()
        });
        if !target_ok {
            return Err(UasError::BadTarget);
        }
        let transport = dial.transport;
        let via = self.our_via_for(transport.clone());
        let local_tag = self.ids.tag();
        let call_id = format!(
            "{:016x}{:08x}@{}",
            self.ids.next(),
            self.ids.next() as u32,
            self.config.contact.host
        );
        let mut from = dial.from;
        from.set_tag(&local_tag);
        let mut headers = Headers::new(
            via,
            from,
            NameAddr::new(dial.target.clone()),
            call_id,
            CSeq {
                seq: 1,
                method: Method::Invite,
            },
        );
        headers.max_forwards = Some(70);
        headers.contact = vec![NameAddr::new(Uri::Sip(self.contact_for(&transport)))];
        headers.route = dial.route;
        headers.push("Allow", ALLOW);
        if !self.config.server.is_empty() {
            headers.push("User-Agent", self.config.server.clone());
        }
        for (k, v) in dial.headers {
            headers.push(k, v);
        }
        if !dial.sdp.is_empty() {
            headers.content_type = Some("application/sdp".into());
        }
        let invite = Request {
            method: Method::Invite,
            uri: dial.target,
            headers,
            body: dial.sdp,
        };
        let peer = Peer {
            addr: dial.next_hop,
            transport: transport.clone(),
        };
        let tx = self
            .tx
            .send_request(now, invite.clone(), peer)
            .map_err(|_| UasError::Transaction)?;
        let call = self.alloc_call();
        self.counters.dialed += 1;
        let answer_at = dial.answer_timeout.map(|d| now + d);
        self.calls.insert(
            call,
            super::Call {
                state: CallState::Outgoing,
                invite,
                invite_tx: tx,
                source: dial.next_hop,
                transport,
                local_tag,
                dialog: None,
                reinvite: None,
                pending: None,
                bye_after_ack: None,
                bye_tx: None,
                ended: false,
                out: Some(Box::new(Outbound {
                    provisional: false,
                    cancel_wanted: false,
                    hangup: None,
                    ack: None,
                    credentials: dial.credentials,
                    auth_retried: false,
                    answer_at,
                    give_up_at: None,
                    dialog_peer: None,
                })),
                refer_out: None,
                refer_in: None,
            },
        );
        // Counted once for the call and once for its INVITE transaction, which outlives the
        // call when it fails (retransmitted final responses still need their ACK).
        self.peer_up(dial.next_hop.ip());
        self.peer_up(dial.next_hop.ip());
        self.by_uac_tx.insert(tx, (call, dial.next_hop.ip()));
        if answer_at.is_some() {
            self.dialing.insert(call);
        }
        self.pump(now);
        Ok(call)
    }

    pub(super) fn peer_up(&mut self, ip: std::net::IpAddr) {
        *self
            .dialed_peers
            .entry(super::canonical_ip(ip))
            .or_insert(0) += 1;
    }

    pub(super) fn peer_down(&mut self, ip: std::net::IpAddr) {
        let ip = super::canonical_ip(ip);
        if let Some(n) = self.dialed_peers.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.dialed_peers.remove(&ip);
            }
        }
    }

    /// The earliest answer timeout or CANCEL give-up among calls we placed.
    pub(super) fn uac_deadline(&self) -> Option<Instant> {
        self.dialing
            .iter()
            .filter_map(|h| self.calls.get(h)?.out.as_ref())
            .flat_map(|o| [o.answer_at, o.give_up_at])
            .flatten()
            .min()
    }

    /// Runs the answer timeouts and CANCEL give-ups due at `now`.
    pub(super) fn uac_timeouts(&mut self, now: Instant) {
        let mut due: Vec<CallHandle> = self.dialing.iter().copied().collect();
        due.sort();
        for h in due {
            let Some(c) = self.calls.get_mut(&h) else {
                self.dialing.remove(&h);
                continue;
            };
            let outgoing = c.state == CallState::Outgoing;
            let tx = c.invite_tx;
            let Some(o) = c.out.as_mut() else {
                self.dialing.remove(&h);
                continue;
            };
            if o.give_up_at.is_some_and(|t| t <= now) {
                tracing::info!(call = %h, "no final response after CANCEL: giving up");
                self.tx.abandon(tx);
                self.end(h, EndReason::Timeout);
                self.remove_call(h);
                continue;
            }
            if o.answer_at.is_some_and(|t| t <= now) {
                o.answer_at = None;
                if outgoing {
                    tracing::info!(call = %h, "no answer: cancelling");
                    self.end(h, EndReason::NoAnswer);
                    self.cancel_outgoing(now, h, 480, "no answer");
                }
            }
            let left = self
                .calls
                .get(&h)
                .and_then(|c| c.out.as_ref())
                .is_some_and(|o| o.answer_at.is_some() || o.give_up_at.is_some());
            if !left {
                self.dialing.remove(&h);
            }
        }
    }

    /// Our hang-up before the answer: CANCEL now if a provisional response came, else as soon
    /// as one comes (§9.1). Either way the INVITE is given up 64·T1 from now.
    pub(super) fn cancel_outgoing(
        &mut self,
        now: Instant,
        call: CallHandle,
        cause: u16,
        text: &str,
    ) {
        let give_up = now + self.config.timers.long();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(o) = c.out.as_mut() else {
            return;
        };
        o.hangup = Some((cause, text.to_string()));
        o.answer_at = None;
        o.give_up_at = Some(give_up);
        self.dialing.insert(call);
        if o.provisional {
            self.send_cancel(now, call);
        } else {
            o.cancel_wanted = true;
        }
    }

    /// CANCEL for the call's INVITE (§9.1): its Request-URI, Call-ID, From, To, CSeq number
    /// and Route, and its top Via (same branch), with our Reason (RFC 3326).
    fn send_cancel(&mut self, now: Instant, call: CallHandle) {
        let server = self.config.server.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let inv = &c.invite;
        let Some(via) = inv.headers.via.first().cloned() else {
            return;
        };
        let mut headers = Headers::new(
            via,
            inv.headers.from.clone(),
            inv.headers.to.clone(),
            inv.headers.call_id.clone(),
            CSeq {
                seq: inv.headers.cseq.seq,
                method: Method::Cancel,
            },
        );
        headers.max_forwards = Some(70);
        headers.route = inv.headers.route.clone();
        if let Some((cause, text)) = c.out.as_ref().and_then(|o| o.hangup.as_ref()) {
            let reason = format!("SIP;cause={cause};text=\"{}\"", reason_text(text));
            headers.push("Reason", reason);
        }
        if !server.is_empty() {
            headers.push("User-Agent", server);
        }
        let cancel = Request {
            method: Method::Cancel,
            uri: inv.uri.clone(),
            headers,
            body: Bytes::new(),
        };
        let peer = Peer {
            addr: c.source,
            transport: c.transport.clone(),
        };
        // Its 200 (or its silence) changes nothing: the INVITE's final response decides.
        if let Err(e) = self.tx.send_request(now, cancel, peer) {
            tracing::debug!(call = %call, error = %e, "CANCEL refused by the transaction layer");
        }
    }

    /// A response on one of our INVITE client transactions.
    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        tx: TransactionId,
        response: Response,
    ) {
        let Some(&(call, _)) = self.by_uac_tx.get(&tx) else {
            return;
        };
        match response.status {
            100..=199 => self.on_provisional(now, call, tx, response),
            200..=299 => self.on_invite_2xx(now, call, response),
            _ => self.on_invite_failure(now, call, tx, &response),
        }
    }

    fn on_provisional(&mut self, now: Instant, call: CallHandle, tx: TransactionId, r: Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.invite_tx != tx || c.state != CallState::Outgoing {
            return;
        }
        let ended = c.ended;
        let Some(o) = c.out.as_mut() else {
            return;
        };
        o.provisional = true;
        if std::mem::take(&mut o.cancel_wanted) {
            self.send_cancel(now, call);
            return;
        }
        if r.status > 100 && !ended {
            self.event(UasEvent::Progress {
                call,
                status: r.status,
                body: r.body,
            });
        }
    }

    /// A 2xx to our INVITE: the dialog, its ACK, and the answer for the driver (or a BYE when
    /// we hung up meanwhile). Retransmissions get the same ACK again.
    fn on_invite_2xx(&mut self, now: Instant, call: CallHandle, response: Response) {
        let Some(id) = DialogId::of_response(&response) else {
            tracing::info!(call = %call, "2xx without a To tag: cannot make a dialog");
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let Some(d) = &c.dialog {
            if d.id == id {
                self.resend_ack(call);
            } else {
                // §13.2.2.4: another fork answered too; acknowledge it and end that dialog.
                let (invite, source, transport) = (c.invite.clone(), c.source, c.transport.clone());
                self.ack_and_bye_fork(now, &invite, (source, transport), &response);
            }
            return;
        }
        if c.state != CallState::Outgoing {
            return;
        }
        let Some(dialog) = Dialog::uac(&c.invite, &response) else {
            return;
        };
        let via = self.our_via_for(c.transport.clone());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let ack = build_ack(&dialog, &c.invite, via);
        let to = super::in_dialog_peer(c.source, &c.transport, &dialog).addr;
        let source_ip = c.source.ip();
        let data = ack.to_bytes();
        self.by_dialog.insert(dialog.id.clone(), call);
        c.dialog = Some(dialog);
        c.state = CallState::Confirmed;
        let ended = c.ended;
        let Some(o) = c.out.as_mut() else {
            return;
        };
        o.ack = Some((data.clone(), to));
        o.answer_at = None;
        o.give_up_at = None;
        o.cancel_wanted = false;
        let hangup = o.hangup.take();
        if to.ip() != source_ip {
            o.dialog_peer = Some(to.ip());
            self.peer_up(to.ip());
        }
        self.dialing.remove(&call);
        self.transmit(to, data);
        if ended {
            // We hung up (or gave up on the answer) while this 2xx was on its way.
            let (cause, text) = hangup.unwrap_or((487, "cancelled".to_string()));
            tracing::info!(call = %call, "2xx after our CANCEL: ACK, then BYE");
            self.send_bye(now, call, cause, &text);
        } else {
            self.event(UasEvent::Answered {
                call,
                body: response.body,
            });
        }
    }

    fn resend_ack(&mut self, call: CallHandle) {
        let ack = self
            .calls
            .get(&call)
            .and_then(|c| c.out.as_ref())
            .and_then(|o| o.ack.clone());
        if let Some((data, to)) = ack {
            self.transmit(to, data);
        }
    }

    /// A 2xx from a fork we do not keep: ACK it in its own dialog, then BYE that dialog.
    fn ack_and_bye_fork(
        &mut self,
        now: Instant,
        invite: &Request,
        (source, transport): (SocketAddr, Transport),
        response: &Response,
    ) {
        let Some(mut dialog) = Dialog::uac(invite, response) else {
            return;
        };
        let peer = super::in_dialog_peer(source, &transport, &dialog);
        let via = self.our_via_for(transport.clone());
        let ack = build_ack(&dialog, invite, via);
        self.transmit(peer.addr, ack.to_bytes());
        let via = self.our_via_for(transport);
        let mut bye = dialog.request(Method::Bye, via);
        bye.headers
            .push("Reason", "SIP;cause=200;text=\"call answered elsewhere\"");
        if let Err(e) = self.tx.send_request(now, bye, peer) {
            tracing::debug!(error = %e, "BYE to a second fork refused");
        }
    }

    fn on_invite_failure(
        &mut self,
        now: Instant,
        call: CallHandle,
        tx: TransactionId,
        response: &Response,
    ) {
        let current = self
            .calls
            .get(&call)
            .is_some_and(|c| c.invite_tx == tx && c.state == CallState::Outgoing);
        if !current {
            return;
        }
        if matches!(response.status, 401 | 407) && self.retry_with_credentials(now, call, response)
        {
            return;
        }
        tracing::info!(call = %call, status = response.status, "outgoing call failed");
        self.end(call, EndReason::Failed(response.status));
        self.remove_call(call);
    }

    /// Answers a 401/407 once: the INVITE again with a new branch, CSeq + 1, and the
    /// Authorization (401) or Proxy-Authorization (407) computed from the first challenge we
    /// can answer. `false` when there is nothing to answer with.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        call: CallHandle,
        response: &Response,
    ) -> bool {
        let (challenge_header, answer_header) = if response.status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(o) = c.out.as_ref() else {
            return false;
        };
        if c.ended || o.auth_retried {
            return false;
        }
        let Some(credentials) = o.credentials.clone() else {
            return false;
        };
        let challenge = response
            .headers
            .get_all(challenge_header)
            .filter_map(|v| Challenge::parse(v).ok())
            .find(|ch| ch.choose_qop().is_ok());
        let Some(challenge) = challenge else {
            tracing::info!(call = %call, "no Digest challenge we can answer");
            return false;
        };
        let mut invite = c.invite.clone();
        let (next_hop, transport) = (c.source, c.transport.clone());
        let cnonce = format!("{:016x}", self.ids.next());
        invite.headers.via = vec![self.our_via_for(transport.clone())];
        invite.headers.cseq.seq = invite.headers.cseq.seq.saturating_add(1);
        invite.headers.remove(answer_header);
        let uri = invite.uri.to_string();
        let answer = digest::authorization(
            &challenge,
            &credentials,
            &DigestRequest {
                method: "INVITE",
                uri: &uri,
                body: &invite.body,
                cnonce: &cnonce,
                nc: 1,
            },
        );
        let Ok(answer) = answer else {
            return false;
        };
        invite.headers.push(answer_header, answer);
        let peer = Peer {
            addr: next_hop,
            transport,
        };
        let Ok(tx) = self.tx.send_request(now, invite.clone(), peer) else {
            return false;
        };
        tracing::info!(call = %call, status = response.status, "answering the challenge");
        self.peer_up(next_hop.ip());
        self.by_uac_tx.insert(tx, (call, next_hop.ip()));
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        c.invite = invite;
        c.invite_tx = tx;
        if let Some(o) = c.out.as_mut() {
            o.auth_retried = true;
            o.provisional = false;
        }
        true
    }

    /// Timer B (or a transport error) on an INVITE client transaction: the call never got an
    /// answer.
    pub(super) fn invite_timeout(&mut self, tx: TransactionId) {
        let Some(&(call, _)) = self.by_uac_tx.get(&tx) else {
            return;
        };
        let current = self
            .calls
            .get(&call)
            .is_some_and(|c| c.invite_tx == tx && c.state == CallState::Outgoing);
        if current {
            tracing::info!(call = %call, "no response to our INVITE");
            self.end(call, EndReason::Timeout);
            self.remove_call(call);
        }
    }

    /// A response no transaction wanted: a 2xx to our INVITE retransmitted after the
    /// transaction ended (Timer M) gets its ACK again.
    pub(super) fn on_stray_response(&mut self, response: &Response) {
        if !(200..300).contains(&response.status) || response.headers.cseq.method != Method::Invite
        {
            return;
        }
        let call = DialogId::of_response(response).and_then(|id| self.by_dialog.get(&id).copied());
        let Some(call) = call else {
            return;
        };
        let same_invite = self.calls.get(&call).is_some_and(|c| {
            c.out.is_some() && c.invite.headers.cseq.seq == response.headers.cseq.seq
        });
        if same_invite {
            self.resend_ack(call);
        }
    }

    /// The handle of a call we placed, by its SIP Call-ID (tests and logs).
    pub fn outgoing_call(&self, sip_call_id: &str) -> Option<CallHandle> {
        self.calls
            .iter()
            .find(|(_, c)| c.out.is_some() && c.invite.headers.call_id == sip_call_id)
            .map(|(h, _)| *h)
    }

    /// Whether `call` is one we placed.
    pub fn is_outgoing(&self, call: CallHandle) -> bool {
        self.calls.get(&call).is_some_and(|c| c.out.is_some())
    }

    /// How many peers we called are let past the allowlist now (zero once every call we placed
    /// and its transactions are gone).
    pub fn dialed_peers(&self) -> usize {
        self.dialed_peers.len()
    }

    /// Our Contact URI (for the From of calls we place).
    pub fn contact(&self) -> &SipUri {
        &self.config.contact
    }
}

/// The ACK for a 2xx (§13.2.2.4): built in the dialog with the INVITE's CSeq number and the
/// INVITE's credentials.
fn build_ack(dialog: &Dialog, invite: &Request, via: crate::sip::header::Via) -> Request {
    let mut ack = dialog.ack(invite.headers.cseq.seq, via);
    for name in ["Authorization", "Proxy-Authorization"] {
        for v in invite.headers.get_all(name) {
            ack.headers.push(name, v);
        }
    }
    ack
}
