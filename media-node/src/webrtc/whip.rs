//! The WHIP-style signalling requests, checked before any WebRTC machinery runs: pure
//! functions over the request's parts, each refusal with the HTTP status it maps to.
//!
//! `POST /webrtc/{tenant}` carries an SDP offer (`Content-Type: application/sdp`, RFC 9725
//! §4.2) and a media token: `Authorization: Bearer <token>` (RFC 6750 §2.1) or `?token=`
//! (§2.3), with the call id it was issued for in `?call_id=` (a media token binds a tenant and
//! a call, [`vaani_core::token`]). `DELETE` on the session URL the `201` named hangs up; it
//! takes the same token.

use chrono::{DateTime, Utc};
use vaani_core::token::{self, TokenError};

use crate::sip::sdp::{Codec, SdpError, SessionDescription, MAX_SDP_SIZE};

/// Why a signalling request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    #[error("Content-Type must be application/sdp")]
    UnsupportedMediaType,
    #[error("the offer is larger than {MAX_SDP_SIZE} bytes")]
    TooLarge,
    #[error("the body is not an SDP offer: {0}")]
    BadSdp(SdpError),
    #[error("the offer is not a WebRTC offer (no ICE credentials or DTLS fingerprint)")]
    NotWebRtc,
    #[error("the offer has no audio stream with Opus at 48 kHz")]
    NoOpus,
    #[error("no media token (Authorization: Bearer, or ?token=)")]
    MissingToken,
    #[error("no call id (?call_id=) for the media token")]
    MissingCallId,
    #[error(transparent)]
    Token(TokenError),
}

impl WhipError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            WhipError::UnsupportedMediaType => 415,
            WhipError::TooLarge => 413,
            WhipError::BadSdp(_) | WhipError::NotWebRtc | WhipError::NoOpus => 400,
            WhipError::MissingToken | WhipError::MissingCallId | WhipError::Token(_) => 401,
        }
    }

    /// A stable code for logs and response bodies.
    pub fn code(&self) -> &'static str {
        match self {
            WhipError::UnsupportedMediaType => "unsupported_media_type",
            WhipError::TooLarge => "offer_too_large",
            WhipError::BadSdp(_) => "bad_sdp",
            WhipError::NotWebRtc => "not_webrtc",
            WhipError::NoOpus => "no_opus",
            WhipError::MissingToken => "missing_token",
            WhipError::MissingCallId => "missing_call_id",
            WhipError::Token(TokenError::Expired) => "token_expired",
            WhipError::Token(_) => "bad_token",
        }
    }
}

/// Checks that the body is declared as SDP (parameters such as `charset` are ignored).
pub fn check_content_type(content_type: Option<&str>) -> Result<(), WhipError> {
    if vaani_telephony::common::media_type(content_type) == "application/sdp" {
        Ok(())
    } else {
        Err(WhipError::UnsupportedMediaType)
    }
}

/// What the node needs to know about an acceptable offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The Opus payload type of the first usable audio stream.
    pub opus_payload_type: u8,
    /// `m=` sections in the offer (the answer keeps their number; only audio is accepted).
    pub media_sections: usize,
}

/// Checks that `body` is an SDP offer a WebRTC browser would send: parseable, with ICE
/// credentials and a DTLS fingerprint (session or media level), and an active audio stream over
/// an SRTP profile that offers Opus at 48 kHz.
pub fn check_offer(body: &[u8]) -> Result<OfferSummary, WhipError> {
    if body.len() > MAX_SDP_SIZE {
        return Err(WhipError::TooLarge);
    }
    let sdp = SessionDescription::parse(body).map_err(|e| match e {
        SdpError::TooLarge => WhipError::TooLarge,
        other => WhipError::BadSdp(other),
    })?;
    let has = |name: &str, media: &crate::sip::sdp::MediaDescription| {
        media.attributes.iter().any(|a| a.name == name)
            || sdp.attributes.iter().any(|a| a.name == name)
    };
    let mut opus = None;
    for m in &sdp.media {
        let srtp = m.protocol.ends_with("RTP/SAVPF") || m.protocol.ends_with("RTP/SAVP");
        if m.media != "audio" || m.port == 0 || !srtp {
            continue;
        }
        if !(has("ice-ufrag", m) && has("ice-pwd", m) && has("fingerprint", m)) {
            return Err(WhipError::NotWebRtc);
        }
        if let Some((pt, _, _)) = m
            .codecs()
            .into_iter()
            .find(|(_, codec, rate)| *codec == Codec::Opus && *rate == 48_000)
        {
            opus = Some(pt);
            break;
        }
    }
    let opus_payload_type = opus.ok_or(WhipError::NoOpus)?;
    Ok(OfferSummary {
        opus_payload_type,
        media_sections: sdp.media.len(),
    })
}

/// The offer with only the ICE candidates the node may send to: when the media address is
/// loopback, loopback candidates (a browser on this machine also offers its other interfaces,
/// which are no business of a loopback-only node); otherwise any but loopback. mDNS (`.local`)
/// candidates are dropped either way: the node resolves no names. Checks from other addresses
/// still reach the node, and ICE answers them where they came from (peer-reflexive).
pub fn usable_candidates(offer: &str, media_address: std::net::IpAddr) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let keep = match line.trim_end().strip_prefix("a=candidate:") {
            None => true,
            // foundation component transport priority address port typ …
            Some(c) => match c.split_ascii_whitespace().nth(4) {
                Some(addr) => match addr.parse::<std::net::IpAddr>() {
                    Ok(ip) => ip.is_loopback() == media_address.is_loopback(),
                    Err(_) => false,
                },
                None => false,
            },
        };
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The media token and call id a request presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    pub call_id: Option<String>,
}

impl Credentials {
    /// Reads `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1),
    /// else `token=` in the query; and `call_id=` from the query. Empty values count as absent.
    pub fn from_request(authorization: Option<&str>, query: Option<&str>) -> Credentials {
        let mut creds = Credentials::default();
        if let Some(q) = query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                match k.as_ref() {
                    "token" if creds.token.is_none() && !v.is_empty() => {
                        creds.token = Some(v.into_owned());
                    }
                    "call_id" if creds.call_id.is_none() && !v.is_empty() => {
                        creds.call_id = Some(v.into_owned());
                    }
                    _ => {}
                }
            }
        }
        if let Some(bearer) = authorization.and_then(bearer_token) {
            creds.token = Some(bearer.to_string());
        }
        creds
    }

    /// Checks the token for `(tenant, call id)` at `now`; returns the call id.
    pub fn authorize(
        &self,
        key: &[u8],
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<&str, WhipError> {
        let token = self.token.as_deref().ok_or(WhipError::MissingToken)?;
        let call_id = self.call_id.as_deref().ok_or(WhipError::MissingCallId)?;
        token::verify(key, token, tenant, call_id, now).map_err(WhipError::Token)?;
        Ok(call_id)
    }

    /// Checks the token for a known call (a session's own call id) at `now`.
    pub fn authorize_call(
        &self,
        key: &[u8],
        tenant: &str,
        call_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WhipError> {
        let token = self.token.as_deref().ok_or(WhipError::MissingToken)?;
        token::verify(key, token, tenant, call_id, now).map_err(WhipError::Token)
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty() && !token.contains(' ')).then_some(token)
}

/// A session's id as it appears in its URL: 16 lowercase hex digits.
pub fn session_path(id: u64) -> String {
    format!("{id:016x}")
}

/// The session id in a URL's last segment; `None` unless exactly what [`session_path`] writes.
pub fn parse_session(segment: &str) -> Option<u64> {
    if segment.len() != 16
        || !segment
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(segment, 16).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An audio-only offer from Chromium 156 (headless, fake microphone), candidates inside.
    pub(crate) const CHROME_OFFER: &str = include_str!("testdata/chrome_offer.sdp");

    #[test]
    fn content_types() {
        assert_eq!(check_content_type(Some("application/sdp")), Ok(()));
        assert_eq!(
            check_content_type(Some("Application/SDP; charset=utf-8")),
            Ok(())
        );
        for bad in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/sdp+x"),
        ] {
            assert_eq!(
                check_content_type(bad),
                Err(WhipError::UnsupportedMediaType),
                "{bad:?}"
            );
        }
        assert_eq!(WhipError::UnsupportedMediaType.status(), 415);
    }

    #[test]
    fn chrome_offer_is_accepted() {
        let s = check_offer(CHROME_OFFER.as_bytes()).unwrap();
        assert_eq!(s.opus_payload_type, 111);
        assert_eq!(s.media_sections, 1);
    }

    #[test]
    fn offers_that_are_not_webrtc_audio_are_refused() {
        let cases: Vec<(String, WhipError)> = vec![
            ("hello".into(), WhipError::BadSdp(SdpError::Version)),
            (String::new(), WhipError::BadSdp(SdpError::Version)),
            // A SIP phone's offer: plain RTP, no ICE, no DTLS.
            (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                    .into(),
                WhipError::NoOpus,
            ),
            (
                CHROME_OFFER.replace("a=fingerprint", "a=x-fingerprint"),
                WhipError::NotWebRtc,
            ),
            (
                CHROME_OFFER.replace("a=ice-pwd", "a=x-ice-pwd"),
                WhipError::NotWebRtc,
            ),
            (
                CHROME_OFFER.replace("opus/48000/2", "opus/16000/2"),
                WhipError::NoOpus,
            ),
            (
                CHROME_OFFER.replace("m=audio 43552 ", "m=audio 0 "),
                WhipError::NoOpus,
            ),
            (
                CHROME_OFFER.replace("m=audio", "m=video"),
                WhipError::NoOpus,
            ),
            (
                CHROME_OFFER.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111"),
                WhipError::BadSdp(SdpError::Attribute),
            ),
        ];
        for (body, want) in cases {
            let got = check_offer(body.as_bytes());
            assert_eq!(got, Err(want.clone()), "{body:?}");
            assert_eq!(want.status(), 400);
        }
        let huge = format!("{CHROME_OFFER}{}", "a=x:y\r\n".repeat(4000));
        assert_eq!(check_offer(huge.as_bytes()), Err(WhipError::TooLarge));
        assert_eq!(WhipError::TooLarge.status(), 413);
        assert_eq!(
            check_offer(&[0xff, 0xfe, 0x00]),
            Err(WhipError::BadSdp(SdpError::NotUtf8))
        );
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn credentials_from_header_or_query() {
        let c = Credentials::from_request(Some("Bearer abc.def"), Some("call_id=c-1"));
        assert_eq!(c.token.as_deref(), Some("abc.def"));
        assert_eq!(c.call_id.as_deref(), Some("c-1"));
        let c = Credentials::from_request(None, Some("token=v1.1.x&call_id=c%2D2&x=1"));
        assert_eq!(c.token.as_deref(), Some("v1.1.x"));
        assert_eq!(c.call_id.as_deref(), Some("c-2"));
        // The header wins over the query; the scheme is case-insensitive.
        let c = Credentials::from_request(Some("bearer  hdr "), Some("token=q"));
        assert_eq!(c.token.as_deref(), Some("hdr"));
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc"] {
            let c = Credentials::from_request(Some(header), None);
            assert_eq!(c.token, None, "{header}");
        }
        let c = Credentials::from_request(None, Some("token=&call_id="));
        assert_eq!(c, Credentials::default());
    }

    #[test]
    fn tokens_bind_tenant_and_call() {
        let tok = token::issue(b"k", "demo", "call-1", t0(), 60);
        let ok = Credentials {
            token: Some(tok.clone()),
            call_id: Some("call-1".into()),
        };
        assert_eq!(ok.authorize(b"k", "demo", t0()), Ok("call-1"));
        assert_eq!(ok.authorize_call(b"k", "demo", "call-1", t0()), Ok(()));
        assert_eq!(
            ok.authorize(b"k", "other", t0()),
            Err(WhipError::Token(TokenError::BadSignature))
        );
        assert_eq!(
            ok.authorize_call(b"k", "demo", "call-2", t0()),
            Err(WhipError::Token(TokenError::BadSignature))
        );
        let late = t0() + chrono::Duration::seconds(61);
        let expired = ok.authorize(b"k", "demo", late).unwrap_err();
        assert_eq!(expired, WhipError::Token(TokenError::Expired));
        assert_eq!((expired.status(), expired.code()), (401, "token_expired"));
        let no_call = Credentials {
            token: Some(tok),
            call_id: None,
        };
        assert_eq!(
            no_call.authorize(b"k", "demo", t0()),
            Err(WhipError::MissingCallId)
        );
        assert_eq!(
            Credentials::default().authorize(b"k", "demo", t0()),
            Err(WhipError::MissingToken)
        );
    }

    #[test]
    fn session_ids_round_trip_strictly() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(parse_session(&session_path(id)), Some(id));
        }
        for bad in [
            "",
            "0",
            "DEADBEEFDEADBEEF",
            "+eadbeefdeadbeef",
            "00000000000000000",
        ] {
            assert_eq!(parse_session(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_candidates_on_the_media_side_are_kept() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n\
a=candidate:2 1 udp 2113937151 192.0.2.2 50001 typ host\r\n\
a=candidate:3 1 udp 2113937151 ::1 50002 typ host\r\n\
a=candidate:4 1 udp 2113937151 4f1c5a2e-0d4e-4a63-9a0e-2b8c2d0e9b11.local 50003 typ host\r\n\
a=candidate:5 1 udp\r\n\
a=mid:0\r\n";
        let loopback = usable_candidates(offer, "127.0.0.1".parse().unwrap());
        assert!(loopback.contains("127.0.0.1 50000"));
        assert!(loopback.contains("::1 50002"));
        assert!(!loopback.contains("192.0.2.2"));
        assert!(!loopback.contains(".local"));
        assert!(!loopback.contains("candidate:5"));
        assert!(loopback.starts_with("v=0\r\nm=audio") && loopback.ends_with("a=mid:0\r\n"));
        let public = usable_candidates(offer, "192.0.2.10".parse().unwrap());
        assert!(public.contains("192.0.2.2 50001"));
        assert!(!public.contains("127.0.0.1") && !public.contains("::1 "));
        // An offer without candidates, or without line ends, passes through.
        assert_eq!(
            usable_candidates("v=0", "127.0.0.1".parse().unwrap()),
            "v=0"
        );
    }

    proptest::proptest! {
        #[test]
        fn candidate_filter_never_panics(s in ".*") {
            let _ = usable_candidates(&s, "127.0.0.1".parse().unwrap());
            let _ = usable_candidates(&format!("a=candidate:{s}\n"), "::1".parse().unwrap());
        }

        #[test]
        fn offer_check_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = check_offer(&body);
        }

        #[test]
        fn mutated_offers_never_panic(cut in 0usize..2000, junk in ".{0,40}") {
            let mut s = CHROME_OFFER.to_string();
            let at = cut.min(s.len());
            if s.is_char_boundary(at) {
                s.insert_str(at, &junk);
            }
            let _ = check_offer(s.as_bytes());
        }

        #[test]
        fn credentials_never_panic(auth in proptest::option::of(".*"), query in proptest::option::of(".*"), seg in ".*") {
            let c = Credentials::from_request(auth.as_deref(), query.as_deref());
            let _ = c.authorize(b"k", "demo", t0());
            let _ = parse_session(&seg);
            let _ = check_content_type(auth.as_deref());
        }
    }
}
