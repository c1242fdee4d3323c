//! Call transfer with REFER (RFC 3515), both ways, inside a confirmed dialog of either kind of
//! call (one that came in or one we placed).
//!
//! - **Blind transfer out** ([`Uas::transfer`]): REFER with `Refer-To` and `Referred-By`. Its
//!   final response and the NOTIFYs that follow (`Event: refer`, a `message/sipfrag` body with
//!   the status line of the far end's call to the target) become [`UasEvent::Transfer`]; each
//!   NOTIFY gets `200`. When a NOTIFY reports a 2xx the transfer succeeded and the core ends our
//!   leg with BYE (`Reason: SIP;cause=200;text="transferred"`); a 3xx–6xx in a NOTIFY, a
//!   refused REFER or no answer (Timer F) fails it and the call stays up.
//! - **An incoming REFER** becomes [`UasEvent::ReferRequested`]; the driver answers it with
//!   [`Uas::answer_refer`]: `202` and a first NOTIFY (`SIP/2.0 100 Trying`), or `603 Decline`.
//!   [`Uas::notify_refer`] reports how the new call went (a final status ends the implicit
//!   subscription: `Subscription-State: terminated`). A REFER without exactly one `Refer-To`
//!   gets `400`; a second one while the first is open gets `491`; REFER and NOTIFY outside a
//!   dialog are not supported (`405`), nor NOTIFY for any event but `refer` (`489`).

use std::time::Instant;

use bytes::Bytes;

use super::{CallHandle, CallState, Uas, UasError, UasEvent};
use crate::sip::header::{Method, NameAddr};
use crate::sip::message::Request;
use crate::sip::transaction::TransactionId;
use crate::sip::uri::Uri;

/// Where a transfer we asked for stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// The far end took the REFER (`202`).
    Accepted,
    /// A NOTIFY reported this provisional status of its call to the target.
    Progress(u16),
    /// A NOTIFY reported this 2xx: the target answered; our leg is ending with BYE.
    Succeeded(u16),
    /// The REFER was refused, got no answer (`408`), or a NOTIFY reported this failure.
    Failed(u16),
}

/// A REFER of ours.
#[derive(Debug)]
pub(super) struct ReferOut {
    tx: TransactionId,
    /// Its CSeq number: the `id` of the implicit subscription (RFC 3515 §2.4.6).
    id: u32,
    done: bool,
}

/// A REFER from the far end.
#[derive(Debug)]
pub(super) struct ReferIn {
    /// The server transaction still waiting for our `202`/`603`.
    pending: Option<(TransactionId, Request)>,
    id: u32,
    /// Accepted and not yet reported final.
    active: bool,
}

/// The status in a `message/sipfrag` body: its first line, `SIP/2.0 NNN reason`.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body.get(..body.len().min(512))?).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code = rest.get(..3)?;
    let status: u16 = code.parse().ok()?;
    let after = rest.get(3..)?;
    ((100..=699).contains(&status) && (after.is_empty() || after.starts_with(' ')))
        .then_some(status)
}

/// The `id` parameter of an `Event: refer;id=N` value, and whether the event is `refer`.
fn refer_event(value: &str) -> Option<Option<u32>> {
    let mut parts = value.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("refer") {
        return None;
    }
    Some(parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("id")
            .then(|| v.trim().parse().ok())
            .flatten()
    }))
}

impl Uas {
    /// Blind transfer: sends REFER to the far end of a confirmed call asking it to call
    /// `target`. What follows comes as [`UasEvent::Transfer`]; on success our leg ends.
    pub fn transfer(
        &mut self,
        now: Instant,
        call: CallHandle,
        target: &Uri,
    ) -> Result<(), UasError> {
        let c = self.calls.get(&call).ok_or(UasError::UnknownCall)?;
        if c.ended || c.state != CallState::Confirmed || c.dialog.is_none() {
            return Err(UasError::NotConfirmed);
        }
        if c.refer_out.as_ref().is_some_and(|r| !r.done) {
            return Err(UasError::TransferPending);
        }
        if target.as_sip().is_some_and(|u| !u.headers.is_empty()) {
            return Err(UasError::BadTarget);
        }
        let via = self.our_via_for(self.call_transport(call));
        let contact = self.contact_for(&self.call_transport(call));
        let server = self.config.server.clone();
        let c = self.calls.get_mut(&call).ok_or(UasError::UnknownCall)?;
        let (source, transport) = (c.source, c.transport.clone());
        let d = c.dialog.as_mut().ok_or(UasError::NotConfirmed)?;
        let mut refer = d.request(Method::Refer, via);
        refer
            .headers
            .push("Refer-To", NameAddr::new(target.clone()).to_string());
        refer.headers.push("Referred-By", d.local.to_string());
        refer.headers.contact = vec![NameAddr::new(Uri::Sip(contact))];
        if !server.is_empty() {
            refer.headers.push("User-Agent", server);
        }
        let id = refer.headers.cseq.seq;
        let peer = super::in_dialog_peer(source, &transport, d);
        let tx = self
            .tx
            .send_request(now, refer, peer)
            .map_err(|_| UasError::Transaction)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.refer_out = Some(ReferOut {
                tx,
                id,
                done: false,
            });
        }
        self.by_refer_tx.insert(tx, call);
        self.pump(now);
        Ok(())
    }

    /// The final response to our REFER (or Timer F: 408).
    pub(super) fn on_refer_response(&mut self, tx: TransactionId, status: u16) {
        let Some(call) = self.by_refer_tx.remove(&tx) else {
            return;
        };
        let Some(r) = self.calls.get_mut(&call).and_then(|c| c.refer_out.as_mut()) else {
            return;
        };
        if r.tx != tx || r.done {
            return;
        }
        let state = if (200..300).contains(&status) {
            TransferState::Accepted
        } else {
            r.done = true;
            TransferState::Failed(status)
        };
        self.event(UasEvent::Transfer { call, state });
    }

    /// `true` when the transaction is a REFER of ours (its responses go to
    /// [`Self::on_refer_response`]).
    pub(super) fn is_refer_tx(&self, tx: TransactionId) -> bool {
        self.by_refer_tx.contains_key(&tx)
    }

    /// A NOTIFY in a dialog: progress of a transfer we asked for.
    pub(super) fn on_notify(&mut self, now: Instant, tx: TransactionId, request: &Request) {
        let Some(call) = self.dialog_call(now, tx, request) else {
            return;
        };
        let event = request.headers.get("Event").and_then(refer_event);
        let Some(event_id) = event else {
            // RFC 6665 §4.1.3: an event package we never subscribed to.
            return self.reply(now, tx, request, 489, &[]);
        };
        let open = self
            .calls
            .get(&call)
            .and_then(|c| c.refer_out.as_ref())
            .filter(|r| event_id.is_none_or(|id| id == r.id))
            .map(|r| r.done);
        let Some(done) = open else {
            return self.reply(now, tx, request, 481, &[]);
        };
        let Some(status) = sipfrag_status(&request.body) else {
            return self.reply(now, tx, request, 400, &[]);
        };
        self.reply(now, tx, request, 200, &[]);
        if done {
            return;
        }
        let state = match status {
            100..=199 => TransferState::Progress(status),
            200..=299 => TransferState::Succeeded(status),
            _ => TransferState::Failed(status),
        };
        if !matches!(state, TransferState::Progress(_)) {
            if let Some(r) = self.calls.get_mut(&call).and_then(|c| c.refer_out.as_mut()) {
                r.done = true;
            }
        }
        self.event(UasEvent::Transfer { call, state });
        if matches!(state, TransferState::Succeeded(_)) {
            let _ = self.hangup(now, call, 200, "transferred");
        }
    }

    /// A REFER in a dialog: for the driver to accept or refuse.
    pub(super) fn on_refer(&mut self, now: Instant, tx: TransactionId, request: &Request) {
        let Some(call) = self.dialog_call(now, tx, request) else {
            return;
        };
        let targets: Vec<&str> = request.headers.get_all("Refer-To").collect();
        let [target] = targets[..] else {
            return self.reply(now, tx, request, 400, &[]);
        };
        let busy = self.calls.get(&call).is_none_or(|c| {
            c.ended
                || c.refer_in
                    .as_ref()
                    .is_some_and(|r| r.pending.is_some() || r.active)
        });
        if busy {
            return self.reply(now, tx, request, 491, &[]);
        }
        let refer_to = target.trim().to_string();
        if let Some(c) = self.calls.get_mut(&call) {
            c.refer_in = Some(ReferIn {
                pending: Some((tx, request.clone())),
                id: request.headers.cseq.seq,
                active: false,
            });
        }
        self.event(UasEvent::ReferRequested { call, refer_to });
    }

    /// Answers the far end's REFER: `202 Accepted` and a NOTIFY saying `100 Trying`, or
    /// `603 Decline`.
    pub fn answer_refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        accept: bool,
    ) -> Result<(), UasError> {
        let contact = self.contact_for(&self.call_transport(call));
        let c = self.calls.get_mut(&call).ok_or(UasError::UnknownCall)?;
        let r = c.refer_in.as_mut().ok_or(UasError::NothingToAnswer)?;
        let (tx, request) = r.pending.take().ok_or(UasError::NothingToAnswer)?;
        r.active = accept;
        let local_tag = c.local_tag.clone();
        let mut resp = request.response(if accept { 202 } else { 603 }, Some(&local_tag));
        if accept {
            resp.headers.contact = vec![NameAddr::new(Uri::Sip(contact))];
        }
        self.respond(now, tx, resp);
        if accept {
            self.send_notify(now, call, 100);
        } else if let Some(c) = self.calls.get_mut(&call) {
            c.refer_in = None;
        }
        self.pump(now);
        Ok(())
    }

    /// Reports the status of the call the far end's REFER asked for (a final status ends the
    /// subscription).
    pub fn notify_refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
    ) -> Result<(), UasError> {
        if !(100..=699).contains(&status) {
            return Err(UasError::BadStatus);
        }
        let active = self
            .calls
            .get(&call)
            .ok_or(UasError::UnknownCall)?
            .refer_in
            .as_ref()
            .is_some_and(|r| r.active);
        if !active {
            return Err(UasError::NothingToAnswer);
        }
        self.send_notify(now, call, status);
        self.pump(now);
        Ok(())
    }

    /// The call is ending: a REFER of the far end's still waiting for our answer gets `487`.
    pub(super) fn drop_refer_in(&mut self, now: Instant, call: CallHandle) {
        let pending = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.refer_in.take())
            .and_then(|r| r.pending);
        if let Some((tx, request)) = pending {
            let r = request.response(487, None);
            self.respond(now, tx, r);
        }
    }

    /// NOTIFY for the far end's REFER with a `message/sipfrag` of `status`.
    fn send_notify(&mut self, now: Instant, call: CallHandle, status: u16) {
        let via = self.our_via_for(self.call_transport(call));
        let contact = self.contact_for(&self.call_transport(call));
        let server = self.config.server.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (source, transport) = (c.source, c.transport.clone());
        let Some(r) = c.refer_in.as_mut() else {
            return;
        };
        let id = r.id;
        let last = status >= 200;
        if last {
            r.active = false;
        }
        let Some(d) = c.dialog.as_mut() else {
            return;
        };
        let mut notify = d.request(Method::Notify, via);
        notify.headers.push("Event", format!("refer;id={id}"));
        notify.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            },
        );
        notify.headers.contact = vec![NameAddr::new(Uri::Sip(contact))];
        if !server.is_empty() {
            notify.headers.push("User-Agent", server);
        }
        notify.headers.content_type = Some("message/sipfrag;version=2.0".into());
        notify.body = Bytes::from(format!(
            "SIP/2.0 {status} {}\r\n",
            crate::sip::message::reason_phrase(status)
        ));
        let peer = super::in_dialog_peer(source, &transport, d);
        if let Err(e) = self.tx.send_request(now, notify, peer) {
            tracing::debug!(call = %call, error = %e, "NOTIFY refused by the transaction layer");
        }
        if last {
            if let Some(c) = self.calls.get_mut(&call) {
                c.refer_in = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_and_event() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 603\r\n"), Some(603));
        assert_eq!(sipfrag_status(b"SIP/2.0 2000 x"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 099 x"), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(refer_event("refer;id=7"), Some(Some(7)));
        assert_eq!(refer_event("Refer"), Some(None));
        assert_eq!(refer_event("presence"), None);
        assert_eq!(refer_event("refer;id=x"), Some(None));
    }
}
