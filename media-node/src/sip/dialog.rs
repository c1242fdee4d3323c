//! Dialogs (RFC 3261 §12), sans-IO: the state two user agents share for the life of a call,
//! and the rules for building requests inside it.
//!
//! A [`Dialog`] is made by the UAS from the INVITE it answers with a 2xx ([`Dialog::uas`],
//! §12.1.1): its id is the Call-ID, our tag (the To tag we chose) and the peer's tag (From);
//! the remote target is the INVITE's Contact; the route set is its Record-Route, in order.
//! [`Dialog::check_remote_cseq`] applies §12.2.2 to every request that arrives in it, and
//! [`Dialog::request`] builds our own requests (BYE) with the Request-URI, Route set and
//! CSeq §12.2.1.1 asks for, loose or strict routing alike.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::header::{CSeq, Method, NameAddr, Via};
use super::message::{Headers, Request, Response};
use super::uri::{Host, Uri};

/// Identifies a dialog from our side (§12): Call-ID, our tag, the peer's tag (empty for an
/// RFC 2543 peer that sent no From tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The id of the dialog an incoming request belongs to, seen from the UAS: our tag is in
    /// To, the peer's in From. `None` when the request has no To tag (it starts a dialog).
    pub fn of_incoming(request: &Request) -> Option<DialogId> {
        let h = &request.headers;
        Some(DialogId {
            call_id: h.call_id.clone(),
            local_tag: h.to.tag()?.to_string(),
            remote_tag: h.from.tag().unwrap_or_default().to_string(),
        })
    }

    /// The id of the dialog a response to one of our requests belongs to, seen from the UAC:
    /// our tag is in From, the peer's in To. `None` without a To tag.
    pub fn of_response(response: &Response) -> Option<DialogId> {
        let h = &response.headers;
        Some(DialogId {
            call_id: h.call_id.clone(),
            local_tag: h.from.tag()?.to_string(),
            remote_tag: h.to.tag()?.to_string(),
        })
    }
}

/// Why an in-dialog request was refused (§12.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// Its CSeq is lower than one already seen: answer `500`.
    #[error("CSeq out of order")]
    CSeqOutOfOrder,
}

/// One dialog, from our side (UAS or UAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    /// Our URI (UAS: the INVITE's To; UAC: its From), with our tag: the From of our requests.
    pub local: NameAddr,
    /// The peer's URI (UAS: the INVITE's From; UAC: the 2xx's To), with its tag.
    pub remote: NameAddr,
    /// Where in-dialog requests go (the peer's Contact, refreshed by re-INVITEs).
    pub remote_target: Uri,
    /// Record-Route of the INVITE, in order (§12.1.1); of the 2xx, reversed (§12.1.2).
    pub route_set: Vec<NameAddr>,
    /// The CSeq of our last request (`None`: we have sent none yet).
    pub local_seq: Option<u32>,
    /// The highest CSeq seen from the peer (a UAC starts at 0: "empty", §12.1.2).
    pub remote_seq: u32,
    /// A `sips` Request-URI: every request in the dialog must stay secure.
    pub secure: bool,
}

impl Dialog {
    /// The dialog a UAS creates by answering `invite` with a 2xx carrying `local_tag`
    /// (§12.1.1). `None` when the INVITE has no Contact (§8.1.1.8 makes it mandatory).
    pub fn uas(invite: &Request, local_tag: &str) -> Option<Dialog> {
        let h = &invite.headers;
        let remote_target = h.contact.first()?.uri.clone();
        let mut local = h.to.clone();
        local.set_tag(local_tag);
        Some(Dialog {
            id: DialogId {
                call_id: h.call_id.clone(),
                local_tag: local_tag.to_string(),
                remote_tag: h.from.tag().unwrap_or_default().to_string(),
            },
            local,
            remote: h.from.clone(),
            remote_target,
            route_set: h.record_route.clone(),
            local_seq: None,
            remote_seq: h.cseq.seq,
            secure: invite.uri.as_sip().is_some_and(|u| u.secure),
        })
    }

    /// The dialog a UAC creates from its INVITE and a 2xx to it (§12.1.2): the id is the
    /// Call-ID, our From tag and the 2xx's To tag; the remote target is the 2xx's Contact (the
    /// Request-URI when a broken peer sent none); the route set is the 2xx's Record-Route in
    /// reverse; our sequence number is the INVITE's. `None` when the 2xx has no To tag.
    pub fn uac(invite: &Request, ok: &Response) -> Option<Dialog> {
        let h = &ok.headers;
        let remote_tag = h.to.tag()?.to_string();
        let local_tag = invite.headers.from.tag()?.to_string();
        let remote_target = h
            .contact
            .first()
            .map_or_else(|| invite.uri.clone(), |c| c.uri.clone());
        let mut route_set = h.record_route.clone();
        route_set.reverse();
        Some(Dialog {
            id: DialogId {
                call_id: invite.headers.call_id.clone(),
                local_tag,
                remote_tag,
            },
            local: invite.headers.from.clone(),
            remote: h.to.clone(),
            remote_target,
            route_set,
            local_seq: Some(invite.headers.cseq.seq),
            remote_seq: 0,
            secure: invite.uri.as_sip().is_some_and(|u| u.secure),
        })
    }

    /// §12.2.2: a request whose CSeq is lower than the last one seen is out of order (`500`);
    /// otherwise the remote sequence number moves up to it. ACK and CANCEL carry the CSeq of
    /// the request they refer to and are not checked.
    pub fn check_remote_cseq(&mut self, request: &Request) -> Result<(), DialogError> {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let seq = request.headers.cseq.seq;
        if seq < self.remote_seq {
            return Err(DialogError::CSeqOutOfOrder);
        }
        self.remote_seq = seq;
        Ok(())
    }

    /// A target refresh (re-INVITE with a Contact) replaces the remote target (§12.2.2).
    pub fn refresh_target(&mut self, request: &Request) {
        if let Some(c) = request.headers.contact.first() {
            self.remote_target = c.uri.clone();
        }
    }

    /// The next CSeq number for a request of ours. The first is 1 (§12.1.1 leaves the local
    /// sequence number empty until then, and any value below 2³¹ will do).
    fn next_local_seq(&mut self) -> u32 {
        let next = self.local_seq.map_or(1, |s| s.wrapping_add(1));
        self.local_seq = Some(next);
        next
    }

    /// Builds a request inside the dialog (§12.2.1.1) with `via` as its only Via. With an
    /// empty route set or a loose first route, the Request-URI is the remote target and the
    /// Route header is the route set; with a strict first route (no `lr`), the Request-URI is
    /// that route's URI and the remote target is appended as the last Route.
    pub fn request(&mut self, method: Method, via: Via) -> Request {
        let seq = if method == Method::Ack {
            self.remote_seq
        } else {
            self.next_local_seq()
        };
        self.build(method, seq, via)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `invite_seq` (§13.2.2.4): built like
    /// any request in the dialog, but with the INVITE's sequence number.
    pub fn ack(&self, invite_seq: u32, via: Via) -> Request {
        self.build(Method::Ack, invite_seq, via)
    }

    fn build(&self, method: Method, seq: u32, via: Via) -> Request {
        let (uri, route) = match self.route_set.first() {
            Some(first) if !first.uri.as_sip().is_some_and(|u| u.is_loose_route()) => {
                let mut route: Vec<NameAddr> = self.route_set[1..].to_vec();
                route.push(NameAddr::new(self.remote_target.clone()));
                (strip_uri_headers(&first.uri), route)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let mut headers = Headers::new(
            via,
            self.local.clone(),
            self.remote.clone(),
            self.id.call_id.clone(),
            CSeq {
                seq,
                method: method.clone(),
            },
        );
        headers.max_forwards = Some(70);
        headers.route = route;
        Request {
            method,
            uri,
            headers,
            body: Bytes::new(),
        }
    }

    /// Where a request of ours goes first: the first Route if there is one, else the remote
    /// target (§8.1.2). Only IP literals are resolved (the node does no DNS on the call
    /// path); `None` otherwise, and the caller falls back to the address the dialog's INVITE
    /// came from.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = self
            .route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target);
        uri_address(uri)
    }
}

/// The socket address of a SIP URI whose host is an IP literal (`maddr` wins when it is one);
/// port 5060 (5061 for `sips`) when absent.
pub fn uri_address(uri: &Uri) -> Option<SocketAddr> {
    let sip = uri.as_sip()?;
    let default_port = if sip.secure { 5061 } else { 5060 };
    let port = sip.port.unwrap_or(default_port);
    if let Some(m) = sip.param("maddr").and_then(|p| p.value.as_deref()) {
        if let Ok(ip) = m.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
    }
    match sip.host {
        Host::V4(a) => Some(SocketAddr::new(IpAddr::V4(a), port)),
        Host::V6(a) => Some(SocketAddr::new(IpAddr::V6(a), port)),
        Host::Name(_) => None,
    }
}

/// A Route URI used as a Request-URI may not keep URI headers (§12.2.1.1 / §19.1.5).
fn strip_uri_headers(uri: &Uri) -> Uri {
    match uri {
        Uri::Sip(s) => {
            let mut s = s.clone();
            s.headers.clear();
            Uri::Sip(s)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sip::header::Transport;
    use crate::sip::message::SipMessage;

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:vaani@192.0.2.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKa\r\n\
             {extra}\
             From: \"Alice\" <sip:alice@example.com>;tag=alice1\r\n\
             To: <sip:vaani@192.0.2.1>\r\n\
             Call-ID: c1@192.0.2.9\r\n\
             CSeq: 10 INVITE\r\n\
             Contact: <sip:alice@192.0.2.9:5070>\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match SipMessage::parse(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn via() -> Via {
        Via::new(
            Transport::Udp,
            Host::V4("192.0.2.1".parse().unwrap()),
            Some(5060),
            "z9hG4bKours",
        )
    }

    #[test]
    fn uas_dialog_from_invite() {
        let d = Dialog::uas(&invite(""), "vaani1").unwrap();
        assert_eq!(d.id.call_id, "c1@192.0.2.9");
        assert_eq!(d.id.local_tag, "vaani1");
        assert_eq!(d.id.remote_tag, "alice1");
        assert_eq!(d.remote_seq, 10);
        assert_eq!(d.next_hop(), Some("192.0.2.9:5070".parse().unwrap()));
    }

    #[test]
    fn bye_without_routes_goes_to_the_contact() {
        let mut d = Dialog::uas(&invite(""), "vaani1").unwrap();
        let bye = d.request(Method::Bye, via());
        let text = String::from_utf8(bye.to_bytes()).unwrap();
        assert!(
            text.starts_with("BYE sip:alice@192.0.2.9:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("From: <sip:vaani@192.0.2.1>;tag=vaani1\r\n"),
            "{text}"
        );
        assert!(text.contains("To: \"Alice\" <sip:alice@example.com>;tag=alice1\r\n"));
        assert!(text.contains("CSeq: 1 BYE\r\n"));
        assert!(!text.contains("Route:"));
        let again = d.request(Method::Bye, via());
        assert_eq!(again.headers.cseq.seq, 2);
    }

    #[test]
    fn loose_and_strict_routes() {
        let rr = "Record-Route: <sip:p1.example.com;lr>, <sip:192.0.2.50;lr>\r\n";
        let mut d = Dialog::uas(&invite(rr), "t").unwrap();
        let bye = d.request(Method::Bye, via());
        assert_eq!(bye.uri.to_string(), "sip:alice@192.0.2.9:5070");
        assert_eq!(bye.headers.route.len(), 2);
        assert_eq!(
            bye.headers.route[0].uri.to_string(),
            "sip:p1.example.com;lr"
        );
        // First route is a name: no DNS, the caller falls back to the source address.
        assert_eq!(d.next_hop(), None);

        let rr = "Record-Route: <sip:192.0.2.60:5080>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n";
        let mut d = Dialog::uas(&invite(rr), "t").unwrap();
        let bye = d.request(Method::Bye, via());
        assert_eq!(bye.uri.to_string(), "sip:192.0.2.60:5080");
        let routes: Vec<String> = bye
            .headers
            .route
            .iter()
            .map(|r| r.uri.to_string())
            .collect();
        assert_eq!(
            routes,
            ["sip:p2.example.com;lr", "sip:alice@192.0.2.9:5070"]
        );
        assert_eq!(d.next_hop(), Some("192.0.2.60:5080".parse().unwrap()));
    }

    #[test]
    fn remote_cseq_must_not_go_back() {
        let mut d = Dialog::uas(&invite(""), "t").unwrap();
        let mut r = invite("");
        r.method = Method::Bye;
        r.headers.cseq = CSeq {
            seq: 9,
            method: Method::Bye,
        };
        assert_eq!(d.check_remote_cseq(&r), Err(DialogError::CSeqOutOfOrder));
        r.headers.cseq.seq = 11;
        assert_eq!(d.check_remote_cseq(&r), Ok(()));
        assert_eq!(d.remote_seq, 11);
        r.method = Method::Ack;
        r.headers.cseq = CSeq {
            seq: 1,
            method: Method::Ack,
        };
        assert_eq!(d.check_remote_cseq(&r), Ok(()));
    }

    #[test]
    fn no_contact_no_dialog() {
        let mut r = invite("");
        r.headers.contact.clear();
        assert!(Dialog::uas(&r, "t").is_none());
    }

    #[test]
    fn maddr_and_default_ports() {
        let u = Uri::parse("sip:a@example.com;maddr=192.0.2.7").unwrap();
        assert_eq!(uri_address(&u), Some("192.0.2.7:5060".parse().unwrap()));
        let u = Uri::parse("sips:a@[2001:db8::1]").unwrap();
        assert_eq!(uri_address(&u), Some("[2001:db8::1]:5061".parse().unwrap()));
        assert_eq!(uri_address(&Uri::parse("tel:+911234").unwrap()), None);
    }
}
