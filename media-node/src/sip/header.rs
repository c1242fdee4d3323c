//! Typed forms of the header fields a user agent and its transactions act on: Via, From/To,
//! Contact, Route/Record-Route (name-addr), CSeq, and the request method.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::grammar::{is_token, is_ws, split_list, unquote, write_quoted, Cursor};
use super::uri::{find_param, read_header_params, read_port, write_params, Host, Param, Uri};

/// A request method. Methods are case-sensitive (RFC 3261 §7.1); anything that is a token but
/// not one of ours is an [`Method::Extension`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Prack,
    Update,
    Refer,
    Notify,
    Subscribe,
    Message,
    Extension(String),
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            other if is_token(other) => Method::Extension(other.to_string()),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transport of a Via header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other(String),
}

impl Transport {
    pub fn parse(s: &str) -> Transport {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => Transport::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// Whether the transport delivers reliably (RFC 3261 §17: no retransmissions, and the
    /// timers that only absorb retransmissions are zero).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp | Transport::Other(_))
    }
}

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_MAGIC: &str = "z9hG4bK";

/// One Via header field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    /// All via-params in order (branch, received, rport, ttl, maddr, extensions).
    pub params: Vec<Param>,
}

impl Via {
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Self {
        Via {
            transport,
            host,
            port,
            params: vec![Param::new("branch", Some(branch))],
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Via> {
        Via::parse_version(s, false)
    }

    /// `any_version` accepts a protocol version other than 2.0, which only the `505` answer to
    /// a request of another SIP version needs (RFC 4475 §3.1.2.16).
    pub(crate) fn parse_version(s: &str, any_version: bool) -> Option<Via> {
        let mut c = Cursor::new(s.trim_matches([' ', '\t']));
        let name = c.token()?;
        if !name.eq_ignore_ascii_case("SIP") || !c.eat_sep(b'/') {
            return None;
        }
        let version = c.token()?;
        if (version != "2.0" && !any_version) || !c.eat_sep(b'/') {
            return None;
        }
        let transport = Transport::parse(c.token()?);
        if !c.skip_ws() {
            return None;
        }
        let host = Host::read(&mut c)?;
        let port = if c.eat_sep(b':') {
            Some(read_port(&mut c)?)
        } else {
            None
        };
        let params = read_header_params(&mut c)?;
        c.skip_ws();
        if !c.at_end() {
            return None;
        }
        let via = Via {
            transport,
            host,
            port,
            params,
        };
        // Known parameters must have their own syntax.
        let branch_ok = via
            .param("branch")
            .is_none_or(|p| p.value.as_deref().is_some_and(is_token));
        let received_ok = via
            .param("received")
            .is_none_or(|p| p.value.as_deref().is_some_and(|v| parse_ip(v).is_some()));
        let rport_ok = via.param("rport").is_none_or(|p| {
            p.value
                .as_deref()
                .is_none_or(|v| v.len() <= 5 && v.parse::<u16>().is_ok())
        });
        (branch_ok && received_ok && rport_ok).then_some(via)
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// Whether the branch starts with the RFC 3261 magic cookie (and has something after it).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > BRANCH_MAGIC.len() && b.starts_with(BRANCH_MAGIC))
    }

    pub fn received(&self) -> Option<IpAddr> {
        self.param("received")
            .and_then(|p| p.value.as_deref())
            .and_then(parse_ip)
    }

    /// `None`: no rport; `Some(None)`: rport without a value (RFC 3581 request);
    /// `Some(Some(p))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// The sent-by as written: host and port (default 5060, or 5061 for TLS).
    pub fn sent_by(&self) -> (Host, u16) {
        let default = if self.transport == Transport::Tls {
            5061
        } else {
            5060
        };
        (self.host.clone(), self.port.unwrap_or(default))
    }

    fn set_param(&mut self, name: &str, value: Option<String>) {
        if let Some(p) = self.params.iter_mut().find(|p| p.name_matches(name)) {
            p.value = value;
        } else {
            self.params.push(Param {
                name: name.to_string(),
                value,
            });
        }
    }

    /// What a server transport does to the top Via of a request that came from `source`
    /// (RFC 3261 §18.2.1, RFC 3581 §4): add `received` when the sent-by host is not the source
    /// address, and when the client asked for `rport`, fill in the source port (and then always
    /// add `received`).
    pub fn stamp_received(&mut self, source: SocketAddr) {
        let wants_rport = self.rport().is_some();
        let host_is_source = match &self.host {
            Host::V4(a) => IpAddr::V4(*a) == source.ip(),
            Host::V6(a) => IpAddr::V6(*a) == source.ip(),
            Host::Name(_) => false,
        };
        if !host_is_source || wants_rport {
            self.set_param("received", Some(source.ip().to_string()));
        }
        if wants_rport {
            self.set_param("rport", Some(source.port().to_string()));
        }
    }

    /// Where a response to this (server-side, stamped) Via goes over an unreliable transport
    /// (RFC 3261 §18.2.2, RFC 3581 §4): `received` (else the sent-by IP) and `rport` (else the
    /// sent-by port). `None` when the sent-by is a name that would need resolving and no
    /// `received` is present.
    pub fn response_address(&self) -> Option<SocketAddr> {
        let (host, port) = self.sent_by();
        let ip = match (self.received(), host) {
            (Some(ip), _) => ip,
            (None, Host::V4(a)) => IpAddr::V4(a),
            (None, Host::V6(a)) => IpAddr::V6(a),
            (None, Host::Name(_)) => return None,
        };
        let port = self.rport().flatten().unwrap_or(port);
        Some(SocketAddr::new(ip, port))
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    inner.parse().ok()
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport.as_str(), self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (quoted-pair escapes removed; a token display name has its
    /// tokens joined by single spaces).
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses one value. `require_brackets` for Route/Record-Route, whose grammar is
    /// name-addr only.
    pub(crate) fn parse(s: &str, require_brackets: bool) -> Option<NameAddr> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let (display, uri) = if c.peek() == Some(b'"') || c.rest().contains('<') {
            let display = if c.peek() == Some(b'"') {
                let raw = c.quoted_raw()?;
                c.skip_ws();
                Some(unquote(raw))
            } else {
                // display-name = *(token LWS): read up to '<', every word a token.
                let before = c.take_while(|b| b != b'<');
                let words: Vec<&str> = before
                    .split([' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .collect();
                if !words.iter().all(|w| is_token(w)) {
                    return None;
                }
                (!words.is_empty()).then(|| words.join(" "))
            };
            if !c.eat(b'<') {
                return None;
            }
            // No LWS inside the brackets (LAQUOT = SWS "<", RAQUOT = ">" SWS).
            let inner = c.take_while(|b| b != b'>' && !is_ws(b));
            if !c.eat(b'>') {
                return None;
            }
            (display, Uri::parse(inner)?)
        } else {
            if require_brackets {
                return None;
            }
            // addr-spec form: the URI ends at the first ';' (header params follow) and may
            // not carry a comma, '?' or ';' of its own (RFC 3261 §20.10).
            let inner = c.take_while(|b| b != b';' && !is_ws(b) && b != b',');
            let uri = Uri::parse(inner)?;
            if let Uri::Sip(u) = &uri {
                if !u.headers.is_empty() || inner.contains('?') {
                    return None;
                }
            }
            (None, uri)
        };
        let params = read_header_params(&mut c)?;
        c.skip_ws();
        if !c.at_end() {
            return None;
        }
        Some(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// Parses a comma-separated list of values.
    pub(crate) fn parse_list(s: &str, require_brackets: bool) -> Option<Vec<NameAddr>> {
        split_list(s)?
            .into_iter()
            .map(|part| NameAddr::parse(part, require_brackets))
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    pub fn set_tag(&mut self, tag: &str) {
        if let Some(p) = self.params.iter_mut().find(|p| p.name_matches("tag")) {
            p.value = Some(tag.to_string());
        } else {
            self.params.push(Param::new("tag", Some(tag)));
        }
    }

    /// The Contact `expires` parameter, if it is a valid delta-seconds.
    pub fn expires(&self) -> Option<u32> {
        self.param("expires")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            let mut q = String::new();
            write_quoted(&mut q, d);
            write!(f, "{q} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// `CSeq: number method`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub(crate) fn parse(s: &str) -> Option<CSeq> {
        let mut c = Cursor::new(s.trim_matches([' ', '\t']));
        let digits = c.take_while(|b| b.is_ascii_digit());
        // Leading zeros are fine ("0009"); the value must fit 32 bits.
        let trimmed = digits.trim_start_matches('0');
        if digits.is_empty() || trimmed.len() > 10 {
            return None;
        }
        let seq = if trimmed.is_empty() {
            0
        } else {
            trimmed.parse::<u32>().ok()?
        };
        if !c.skip_ws() {
            return None;
        }
        let method = Method::parse(c.rest())?;
        Some(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A header field kept as text: every field without a typed form here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as received, except that compact forms are expanded (`k` → `Supported`).
    pub name: String,
    /// The value with folding undone and surrounding whitespace removed.
    pub value: String,
}

/// Expands a compact header name (RFC 3261 §7.3.3 and the registry) to its long form.
pub(crate) fn expand_compact(name: &str) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    Some(match name.as_bytes().first()?.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// Whether a header name (long or compact form) refers to `long`.
pub(crate) fn name_is(name: &str, long: &str) -> bool {
    name.eq_ignore_ascii_case(long) || expand_compact(name).is_some_and(|l| l == long)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0  /UDP     192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(v.rport(), Some(None));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse("SIP/2.0/TCP spindle.example.com   ;  branch  =   z9hG4bK9ikj8  ").unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/UNKNOWN t4.example.com:5070;branch=z9hG4bKasd0f3en").unwrap();
        assert_eq!(v.transport, Transport::Other("UNKNOWN".into()));
        assert_eq!(v.port, Some(5070));
    }

    #[test]
    fn via_rejects() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP host;branch=\"x\"",
            "SIP/2.0/UDP host;received=host.example.com",
            "SIP/2.0/UDP host;rport=99999",
            "SIP/3.0/UDP host",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(Via::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn stamping_and_response_address() {
        let mut v = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport").unwrap();
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        v.stamp_received(src);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=40000;received=203.0.113.9"
        );
        assert_eq!(v.response_address(), Some(src));
        let mut v = Via::parse("SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bKx").unwrap();
        v.stamp_received(src);
        assert!(v.received().is_none());
        assert_eq!(
            v.response_address(),
            Some("203.0.113.9:5070".parse().unwrap())
        );
        let v = Via::parse("SIP/2.0/UDP host.example.com;branch=z9hG4bKx").unwrap();
        assert_eq!(v.response_address(), None);
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
            false,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323", false).unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:j.user@example.com;tag=43251j3j324", false).unwrap();
        assert_eq!(n.tag(), Some("43251j3j324"));
        assert!(n.display.is_none());
        let n = NameAddr::parse("isbn:2983792873", false).unwrap();
        assert!(matches!(n.uri, Uri::Other { .. }));
        assert!(NameAddr::parse("sip:j.user@example.com", true).is_none());
        for bad in [
            r#""Mr J. User <sip:j.user@example.com>"#,
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "<sip:a@b> junk",
            "<sip:a@b",
        ] {
            assert!(NameAddr::parse(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse("0009\t INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("4294967295 ACK").unwrap().seq, u32::MAX);
        assert!(CSeq::parse("4294967296 ACK").is_none());
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse("-1 INVITE").is_none());
        assert!(CSeq::parse("1INVITE").is_none());
        assert!(CSeq::parse("1 INV ITE").is_none());
    }
}
