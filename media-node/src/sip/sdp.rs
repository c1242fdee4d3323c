//! SDP (RFC 8866) for audio calls and the RFC 3264 offer/answer the node needs: G.711
//! (PCMU/PCMA), G.722, Opus, `telephone-event` (RFC 4733), `ptime` and the media direction.
//!
//! [`SessionDescription::parse`] keeps every line it does not model (as [`Attribute`]s or
//! `other` lines) so a description is written back complete; [`answer`] picks the first audio
//! stream and codec both sides support and says where to send RTP.

use std::fmt;
use std::net::IpAddr;

/// Why an SDP body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP too large")]
    TooLarge,
    #[error("malformed SDP line")]
    Line,
    #[error("SDP does not start with v=0")]
    Version,
    #[error("malformed SDP origin (o=)")]
    Origin,
    #[error("malformed SDP connection (c=)")]
    Connection,
    #[error("malformed SDP media (m=)")]
    Media,
    #[error("malformed SDP attribute")]
    Attribute,
    #[error("SDP offer has no usable audio stream")]
    NoAudio,
    #[error("no codec in common")]
    NoCommonCodec,
    #[error("SDP offer has no connection address for its audio")]
    NoAddress,
}

/// Largest SDP body accepted.
pub const MAX_SDP_SIZE: usize = 16 * 1024;

/// Media direction (RFC 3264 §5.1 / RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer uses for an offer with this direction (RFC 3264 §6.1).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Intersects with what we want to do.
    pub fn and(self, other: Direction) -> Direction {
        let send = self.sends() && other.sends();
        let recv = self.receives() && other.receives();
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// The audio codecs the node knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    Opus,
    TelephoneEvent,
    Other(String),
}

impl Codec {
    fn from_name(name: &str) -> Codec {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Codec::Pcmu,
            "PCMA" => Codec::Pcma,
            "G722" => Codec::G722,
            "OPUS" => Codec::Opus,
            "TELEPHONE-EVENT" => Codec::TelephoneEvent,
            _ => Codec::Other(name.to_string()),
        }
    }

    /// The encoding name, clock rate and channels we write in `a=rtpmap`.
    pub fn rtpmap(&self) -> (&str, u32, Option<u8>) {
        match self {
            Codec::Pcmu => ("PCMU", 8000, None),
            Codec::Pcma => ("PCMA", 8000, None),
            // RFC 3551: G.722's RTP clock is 8000 although it samples at 16 kHz.
            Codec::G722 => ("G722", 8000, None),
            Codec::Opus => ("opus", 48000, Some(2)),
            Codec::TelephoneEvent => ("telephone-event", 8000, None),
            Codec::Other(n) => (n, 8000, None),
        }
    }

    /// The static payload type (RFC 3551 table 4), if the codec has one.
    pub fn static_payload_type(&self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            _ => None,
        }
    }

    fn from_static(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }
}

/// Our `a=fmtp` for Opus (RFC 7587 §6.1): we send and want mono, and welcome in-band FEC.
pub const OPUS_FMTP: &str = "useinbandfec=1; stereo=0; sprop-stereo=0";
/// The dynamic payload type our offers give Opus (the usual one; an answer echoes the
/// offerer's).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The payload type our offers give `telephone-event/48000` (RFC 4733 events on Opus'
/// clock) when they offer Opus.
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 110;

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

/// `a=name[:value]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// `c=IN IP4 192.0.2.1`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub address: IpAddr,
}

impl Connection {
    fn parse(v: &str) -> Result<Connection, SdpError> {
        let mut it = v.split(' ');
        let (net, kind, addr) = (it.next(), it.next(), it.next());
        if net != Some("IN") || it.next().is_some() {
            return Err(SdpError::Connection);
        }
        // A multicast TTL suffix ("/127") is not for us; the address is what matters.
        let addr = addr
            .and_then(|a| a.split('/').next())
            .ok_or(SdpError::Connection)?;
        let address: IpAddr = addr.parse().map_err(|_| SdpError::Connection)?;
        match (kind, address) {
            (Some("IP4"), IpAddr::V4(_)) | (Some("IP6"), IpAddr::V6(_)) => {
                Ok(Connection { address })
            }
            _ => Err(SdpError::Connection),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "IN IP4 {a}"),
            IpAddr::V6(a) => write!(f, "IN IP6 {a}"),
        }
    }
}

/// `o=<username> <sess-id> <sess-version> IN IP4 <address>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    /// "IN IP4 host" kept as written (the address may be a name).
    pub address: String,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub protocol: String,
    /// Payload types for RTP profiles, in preference order.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <params>`
    pub fmtps: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    pub fn is_rtp_audio(&self) -> bool {
        self.media == "audio" && self.protocol.starts_with("RTP/")
    }

    /// The payload types with their codec, in the offer's preference order.
    pub fn codecs(&self) -> Vec<(u8, Codec, u32)> {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| {
                if let Some(m) = self.rtpmaps.iter().find(|m| m.payload_type == pt) {
                    Some((pt, Codec::from_name(&m.encoding), m.clock_rate))
                } else {
                    Codec::from_static(pt).map(|c| (pt, c.clone(), c.rtpmap().1))
                }
            })
            .collect()
    }

    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, s)| s.as_str())
    }
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    /// Session-level direction (applies to media without their own).
    pub direction: Option<Direction>,
    /// Session-level attributes other than the direction.
    pub attributes: Vec<Attribute>,
    /// Session-level lines we do not model (`i=`, `u=`, `b=`, `t=` beyond the first, …) as
    /// `(type, value)`.
    pub other: Vec<(char, String)>,
    pub media: Vec<MediaDescription>,
}

fn parse_attribute(v: &str) -> Result<Attribute, SdpError> {
    let (name, value) = match v.split_once(':') {
        Some((n, val)) => (n, Some(val.to_string())),
        None => (v, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SdpError::Attribute);
    }
    Ok(Attribute {
        name: name.to_string(),
        value,
    })
}

fn parse_rtpmap(v: &str) -> Result<RtpMap, SdpError> {
    let (pt, rest) = v.split_once(' ').ok_or(SdpError::Attribute)?;
    let payload_type: u8 = pt.parse().map_err(|_| SdpError::Attribute)?;
    if payload_type > 127 {
        return Err(SdpError::Attribute);
    }
    let mut parts = rest.trim().split('/');
    let encoding = parts
        .next()
        .filter(|e| !e.is_empty())
        .ok_or(SdpError::Attribute)?;
    let clock_rate = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .ok_or(SdpError::Attribute)?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse().map_err(|_| SdpError::Attribute)?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(SdpError::Attribute);
    }
    Ok(RtpMap {
        payload_type,
        encoding: encoding.to_string(),
        clock_rate,
        channels,
    })
}

impl SessionDescription {
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        if body.len() > MAX_SDP_SIZE {
            return Err(SdpError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty());
        if lines.next() != Some("v=0") {
            return Err(SdpError::Version);
        }
        let mut origin = None;
        let mut session_name = String::new();
        let mut connection = None;
        let mut direction = None;
        let mut attributes = Vec::new();
        let mut other = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();
        for line in lines {
            let mut chars = line.chars();
            let kind = chars.next().ok_or(SdpError::Line)?;
            if chars.next() != Some('=') || !kind.is_ascii_lowercase() {
                return Err(SdpError::Line);
            }
            let value = line.get(2..).ok_or(SdpError::Line)?;
            if let Some(m) = media.last_mut() {
                match kind {
                    'c' => m.connection = Some(Connection::parse(value)?),
                    'a' => {
                        let a = parse_attribute(value)?;
                        match (a.name.as_str(), a.value.as_deref()) {
                            ("rtpmap", Some(v)) => m.rtpmaps.push(parse_rtpmap(v)?),
                            ("fmtp", Some(v)) => {
                                let (pt, params) = v.split_once(' ').ok_or(SdpError::Attribute)?;
                                let pt = pt.parse().map_err(|_| SdpError::Attribute)?;
                                m.fmtps.push((pt, params.trim().to_string()));
                            }
                            ("ptime", Some(v)) => {
                                m.ptime = Some(v.trim().parse().map_err(|_| SdpError::Attribute)?)
                            }
                            (d, None) if Direction::parse(d).is_some() => {
                                m.direction = Direction::parse(d)
                            }
                            _ => m.attributes.push(a),
                        }
                    }
                    'm' => media.push(parse_media(value)?),
                    // i=, b=, k= at media level: not needed, not kept.
                    _ => {}
                }
                continue;
            }
            match kind {
                'o' => origin = Some(parse_origin(value)?),
                's' => session_name = value.to_string(),
                'c' => connection = Some(Connection::parse(value)?),
                'a' => {
                    let a = parse_attribute(value)?;
                    match Direction::parse(&a.name).filter(|_| a.value.is_none()) {
                        Some(d) => direction = Some(d),
                        None => attributes.push(a),
                    }
                }
                'm' => media.push(parse_media(value)?),
                _ => other.push((kind, value.to_string())),
            }
        }
        // s= and t= are mandatory; a peer that leaves them out gets the usual values so the
        // description we hold (and would write) is complete.
        if session_name.is_empty() {
            session_name.push('-');
        }
        if !other.iter().any(|(k, _)| *k == 't') {
            other.push(('t', "0 0".to_string()));
        }
        Ok(SessionDescription {
            origin: origin.ok_or(SdpError::Origin)?,
            session_name,
            connection,
            direction,
            attributes,
            other,
            media,
        })
    }

    /// The direction of media section `i`, falling back to the session's (default sendrecv).
    pub fn media_direction(&self, i: usize) -> Direction {
        self.media
            .get(i)
            .and_then(|m| m.direction)
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Where the peer wants RTP for media section `i`.
    pub fn media_address(&self, i: usize) -> Option<std::net::SocketAddr> {
        let m = self.media.get(i)?;
        let c = m.connection.as_ref().or(self.connection.as_ref())?;
        Some(std::net::SocketAddr::new(c.address, m.port))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

fn parse_origin(v: &str) -> Result<Origin, SdpError> {
    let mut it = v.splitn(4, ' ');
    let username = it
        .next()
        .filter(|u| !u.is_empty())
        .ok_or(SdpError::Origin)?;
    let session_id = it
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(SdpError::Origin)?;
    let session_version = it
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(SdpError::Origin)?;
    let address = it
        .next()
        .filter(|a| a.starts_with("IN "))
        .ok_or(SdpError::Origin)?;
    Ok(Origin {
        username: username.to_string(),
        session_id,
        session_version,
        address: address.to_string(),
    })
}

fn parse_media(v: &str) -> Result<MediaDescription, SdpError> {
    let mut it = v.split(' ');
    let media = it.next().filter(|m| !m.is_empty()).ok_or(SdpError::Media)?;
    let port_part = it.next().ok_or(SdpError::Media)?;
    // "<port>/<number of ports>": we use one.
    let port = port_part
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(SdpError::Media)?;
    let protocol = it.next().filter(|p| !p.is_empty()).ok_or(SdpError::Media)?;
    let formats: Vec<String> = it.filter(|f| !f.is_empty()).map(str::to_string).collect();
    if formats.is_empty() {
        return Err(SdpError::Media);
    }
    if protocol.starts_with("RTP/")
        && !formats
            .iter()
            .all(|f| f.parse::<u8>().is_ok_and(|p| p <= 127))
    {
        return Err(SdpError::Media);
    }
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        protocol: protocol.to_string(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        attributes: Vec::new(),
    })
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(
            f,
            "v=0\r\no={} {} {} {}\r\ns={}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            o.address,
            if self.session_name.is_empty() {
                "-"
            } else {
                &self.session_name
            }
        )?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        let mut wrote_t = false;
        for (k, v) in &self.other {
            wrote_t |= *k == 't';
            write!(f, "{k}={v}\r\n")?;
        }
        if !wrote_t {
            f.write_str("t=0 0\r\n")?;
        }
        for a in &self.attributes {
            write_attr(f, a)?;
        }
        if let Some(d) = self.direction {
            write!(f, "a={}\r\n", d.as_str())?;
        }
        for m in &self.media {
            write!(
                f,
                "m={} {} {} {}\r\n",
                m.media,
                m.port,
                m.protocol,
                m.formats.join(" ")
            )?;
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            for r in &m.rtpmaps {
                write!(
                    f,
                    "a=rtpmap:{} {}/{}",
                    r.payload_type, r.encoding, r.clock_rate
                )?;
                if let Some(ch) = r.channels {
                    write!(f, "/{ch}")?;
                }
                f.write_str("\r\n")?;
            }
            for (pt, p) in &m.fmtps {
                write!(f, "a=fmtp:{pt} {p}\r\n")?;
            }
            if let Some(p) = m.ptime {
                write!(f, "a=ptime:{p}\r\n")?;
            }
            for a in &m.attributes {
                write_attr(f, a)?;
            }
            if let Some(d) = m.direction {
                write!(f, "a={}\r\n", d.as_str())?;
            }
        }
        Ok(())
    }
}

fn write_attr(f: &mut fmt::Formatter<'_>, a: &Attribute) -> fmt::Result {
    match &a.value {
        Some(v) => write!(f, "a={}:{v}\r\n", a.name),
        None => write!(f, "a={}\r\n", a.name),
    }
}

/// What we can do, for building answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address we advertise (public IP behind NAT).
    pub address: IpAddr,
    pub port: u16,
    /// Codecs in our order of preference (only those we can decode).
    pub codecs: Vec<Codec>,
    /// Offer/accept RFC 4733 events.
    pub telephone_event: bool,
    pub ptime: u32,
    /// What we want to do (sendrecv normally; sendonly to hold).
    pub direction: Direction,
    pub session_id: u64,
    pub session_version: u64,
}

/// The outcome of an offer/answer exchange for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the audio m-line used.
    pub media_index: usize,
    pub payload_type: u8,
    pub codec: Codec,
    pub clock_rate: u32,
    /// The peer's `telephone-event` payload type, if both sides do RFC 4733.
    pub dtmf_payload_type: Option<u8>,
    /// Where to send RTP.
    pub remote: std::net::SocketAddr,
    /// The peer's packetization time, if it asked for one.
    pub remote_ptime: Option<u32>,
    /// Our direction for this stream.
    pub direction: Direction,
    /// The peer holds the call (`sendonly`/`inactive`, or the RFC 2543 `c=0.0.0.0`).
    pub on_hold: bool,
}

/// Answers `offer` (RFC 3264 §6): the first RTP audio stream with a codec in common is
/// accepted with that single codec (plus `telephone-event` when both do it), every other
/// stream is refused with port 0, and the payload types of the offer are kept.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(SessionDescription, Negotiated), SdpError> {
    let mut chosen: Option<(usize, u8, Codec, u32)> = None;
    for (i, m) in offer.media.iter().enumerate() {
        if m.port == 0 || !m.is_rtp_audio() {
            continue;
        }
        let offered = m.codecs();
        // Our preference decides among what the peer offers.
        let pick = local.codecs.iter().find_map(|want| {
            offered
                .iter()
                // RFC 7587: Opus is always `opus/48000/2`, whatever it carries; RFC 3551:
                // G.722 is `G722/8000` (a `G722/16000` would leave its timestamps ambiguous).
                .find(|(_, c, rate)| {
                    c == want
                        && match c {
                            Codec::Opus => *rate == 48_000,
                            Codec::G722 => *rate == 8000,
                            _ => true,
                        }
                })
                .map(|(pt, c, rate)| (*pt, c.clone(), *rate))
        });
        if let Some((pt, c, rate)) = pick {
            chosen = Some((i, pt, c, rate));
            break;
        }
    }
    let Some((index, pt, codec, clock_rate)) = chosen else {
        return Err(if offer.media.iter().any(MediaDescription::is_rtp_audio) {
            SdpError::NoCommonCodec
        } else {
            SdpError::NoAudio
        });
    };
    let remote = offer.media_address(index).ok_or(SdpError::NoAddress)?;
    let offered_m = offer.media.get(index).ok_or(SdpError::NoAudio)?;
    // Events run on the audio's RTP clock (RFC 4733 §2.1): 8000 for G.711, 48000 for Opus.
    let dtmf = if local.telephone_event {
        offered_m
            .codecs()
            .into_iter()
            .find(|(_, c, rate)| *c == Codec::TelephoneEvent && *rate == clock_rate)
            .map(|(pt, _, _)| pt)
    } else {
        None
    };
    let offered_dir = offer.media_direction(index);
    let on_hold = matches!(offered_dir, Direction::SendOnly | Direction::Inactive)
        || remote.ip().is_unspecified();
    let direction = offered_dir.reversed().and(local.direction);

    let mut media = Vec::with_capacity(offer.media.len());
    for (i, m) in offer.media.iter().enumerate() {
        if i != index {
            // Refused streams keep their media type, protocol and formats with port 0.
            media.push(MediaDescription {
                port: 0,
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                direction: None,
                attributes: Vec::new(),
                ..m.clone()
            });
            continue;
        }
        let (name, _, channels) = codec.rtpmap();
        let mut formats = vec![pt.to_string()];
        let mut rtpmaps = vec![RtpMap {
            payload_type: pt,
            encoding: name.to_string(),
            clock_rate,
            channels: if codec == Codec::Opus { channels } else { None },
        }];
        let mut fmtps = Vec::new();
        // Opus' fmtp says what we want to receive (RFC 7587 §7): ours, not the offerer's.
        if codec == Codec::Opus {
            fmtps.push((pt, OPUS_FMTP.to_string()));
        }
        if let Some(d) = dtmf {
            formats.push(d.to_string());
            rtpmaps.push(RtpMap {
                payload_type: d,
                encoding: "telephone-event".into(),
                clock_rate,
                channels: None,
            });
            fmtps.push((d, m.fmtp(d).unwrap_or("0-16").to_string()));
        }
        media.push(MediaDescription {
            media: "audio".into(),
            port: local.port,
            protocol: m.protocol.clone(),
            formats,
            connection: None,
            rtpmaps,
            fmtps,
            ptime: Some(local.ptime),
            direction: Some(direction),
            attributes: Vec::new(),
        });
    }
    let sdp = SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            address: Connection {
                address: local.address,
            }
            .to_string(),
        },
        session_name: "vaani".into(),
        connection: Some(Connection {
            address: local.address,
        }),
        direction: None,
        attributes: Vec::new(),
        other: vec![('t', "0 0".into())],
        media,
    };
    let negotiated = Negotiated {
        media_index: index,
        payload_type: pt,
        codec,
        clock_rate,
        dtmf_payload_type: dtmf,
        remote,
        remote_ptime: offered_m.ptime,
        direction,
        on_hold,
    };
    Ok((sdp, negotiated))
}

/// Builds an offer for one audio stream with `local`'s codecs (static payload types where
/// they exist, 111 for Opus with our fmtp, dynamic from 96 otherwise; `telephone-event` at 101,
/// and `telephone-event/48000` at 110 alongside Opus).
pub fn offer(local: &LocalMedia) -> SessionDescription {
    let mut formats = Vec::new();
    let mut rtpmaps = Vec::new();
    let mut fmtps = Vec::new();
    let mut next_dynamic = 96u8;
    for c in &local.codecs {
        let pt = c.static_payload_type().unwrap_or_else(|| {
            if *c == Codec::Opus {
                return OPUS_PAYLOAD_TYPE;
            }
            let pt = next_dynamic;
            next_dynamic = next_dynamic.saturating_add(1);
            pt
        });
        let (name, rate, channels) = c.rtpmap();
        formats.push(pt.to_string());
        rtpmaps.push(RtpMap {
            payload_type: pt,
            encoding: name.to_string(),
            clock_rate: rate,
            channels,
        });
        if *c == Codec::Opus {
            fmtps.push((pt, OPUS_FMTP.to_string()));
        }
    }
    if local.telephone_event && local.codecs.contains(&Codec::Opus) {
        formats.push(TELEPHONE_EVENT_48K_PAYLOAD_TYPE.to_string());
        rtpmaps.push(RtpMap {
            payload_type: TELEPHONE_EVENT_48K_PAYLOAD_TYPE,
            encoding: "telephone-event".into(),
            clock_rate: 48_000,
            channels: None,
        });
        fmtps.push((TELEPHONE_EVENT_48K_PAYLOAD_TYPE, "0-16".to_string()));
    }
    if local.telephone_event {
        formats.push("101".into());
        rtpmaps.push(RtpMap {
            payload_type: 101,
            encoding: "telephone-event".into(),
            clock_rate: 8000,
            channels: None,
        });
        fmtps.push((101, "0-16".to_string()));
    }
    SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            address: Connection {
                address: local.address,
            }
            .to_string(),
        },
        session_name: "vaani".into(),
        connection: Some(Connection {
            address: local.address,
        }),
        direction: None,
        attributes: Vec::new(),
        other: vec![('t', "0 0".into())],
        media: vec![MediaDescription {
            media: "audio".into(),
            port: local.port,
            protocol: "RTP/AVP".into(),
            formats,
            connection: None,
            rtpmaps,
            fmtps,
            ptime: Some(local.ptime),
            direction: Some(local.direction),
            attributes: Vec::new(),
        }],
    }
}
