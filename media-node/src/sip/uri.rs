//! SIP and SIPS URIs (RFC 3261 §19.1) and other absolute URIs, parsed strictly.
//!
//! Parts are kept in their escaped wire form so that a URI is written back exactly as it came;
//! [`SipUri::user_unescaped`] and [`Param::name_matches`] give the decoded view that comparisons
//! need (RFC 3261 §19.1.4).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::grammar::{all_escaped_or, is_reserved, is_token_char, is_unreserved, unescape, Cursor};

/// A `;name[=value]` parameter of a URI or header field. The value is kept as written (a token,
/// host or raw quoted string; for URIs possibly with `%HH` escapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        Param {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    /// Case-insensitive name match on the unescaped name.
    pub fn name_matches(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || (self.name.contains('%')
                && unescape(&self.name).eq_ignore_ascii_case(name.as_bytes()))
    }
}

pub(crate) fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name_matches(name))
}

pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        match &p.value {
            Some(v) => write!(f, ";{}={}", p.name, v)?,
            None => write!(f, ";{}", p.name)?,
        }
    }
    Ok(())
}

/// The host part of a URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A domain name as written (compare case-insensitively).
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &str) -> Option<Host> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            return inner.parse().ok().map(Host::V6);
        }
        if s.is_empty() || s.len() > 255 {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s.parse().ok().map(Host::V4);
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; labels of alphanum and inner '-'.
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        let labels_ok = trimmed.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        labels_ok.then(|| Host::Name(s.to_string()))
    }

    /// Reads a host from the cursor (stops at the first byte that cannot be part of one).
    pub(crate) fn read(c: &mut Cursor<'_>) -> Option<Host> {
        let text = if c.peek() == Some(b'[') {
            let inner = c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return None;
            }
            return inner
                .strip_prefix('[')
                .and_then(|i| i.parse().ok())
                .map(Host::V6);
        } else {
            c.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        Host::parse(text)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Reads `1*DIGIT` as a port (0–65535).
pub(crate) fn read_port(c: &mut Cursor<'_>) -> Option<u16> {
    let digits = c.take_while(|b| b.is_ascii_digit());
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    digits.parse().ok()
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part, escaped as on the wire.
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// `?name=value&…` headers, escaped as on the wire.
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    pub fn new(host: Host) -> Self {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `transport` URI parameter, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.param("transport")
            .and_then(|p| p.value.as_deref())
            .map(str::to_ascii_lowercase)
    }

    /// Whether this is a loose router (`;lr`, RFC 3261 §16.12).
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }

    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_deref().map(unescape)
    }

    /// Parses what follows `sip:` / `sips:`.
    fn parse_after_scheme(secure: bool, s: &str) -> Option<SipUri> {
        // userinfo ends at the first '@': no other part of a SIP URI may hold a bare '@'.
        let (userinfo, rest) = match s.find('@') {
            Some(at) => (Some(s.get(..at)?), s.get(at + 1..)?),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(i) => (ui.get(..i)?, Some(ui.get(i + 1..)?)),
                    None => (ui, None),
                };
                // user = 1*( unreserved / escaped / user-unreserved )
                let user_ok = !u.is_empty()
                    && all_escaped_or(u, |b| {
                        is_unreserved(b)
                            || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
                    });
                let pass_ok = p.is_none_or(|p| {
                    all_escaped_or(p, |b| {
                        is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
                    })
                });
                if !user_ok || !pass_ok {
                    return None;
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
        };
        let mut c = Cursor::new(rest);
        let host = Host::read(&mut c)?;
        let port = if c.eat(b':') {
            Some(read_port(&mut c)?)
        } else {
            None
        };
        let paramchar =
            |b: u8| is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$');
        let mut params = Vec::new();
        while c.eat(b';') {
            let name = c.take_while(|b| paramchar(b) || b == b'%');
            if name.is_empty() || !all_escaped_or(name, paramchar) {
                return None;
            }
            let value = if c.eat(b'=') {
                let v = c.take_while(|b| paramchar(b) || b == b'%');
                if v.is_empty() || !all_escaped_or(v, paramchar) {
                    return None;
                }
                Some(v.to_string())
            } else {
                None
            };
            params.push(Param {
                name: name.to_string(),
                value,
            });
        }
        let hchar =
            |b: u8| is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$');
        let mut headers = Vec::new();
        if c.eat(b'?') {
            loop {
                let name = c.take_while(|b| hchar(b) || b == b'%');
                if name.is_empty() || !all_escaped_or(name, hchar) || !c.eat(b'=') {
                    return None;
                }
                let value = c.take_while(|b| hchar(b) || b == b'%');
                if !all_escaped_or(value, hchar) {
                    return None;
                }
                headers.push((name.to_string(), value.to_string()));
                if !c.eat(b'&') {
                    break;
                }
            }
        }
        if !c.at_end() {
            return None;
        }
        Some(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// A Request-URI or the URI of a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// Any other `absoluteURI` (`tel:`, `http:`, …), kept opaque. `scheme` is as written.
    Other {
        scheme: String,
        rest: String,
    },
}

impl Uri {
    /// Parses a complete URI. Whitespace anywhere makes it invalid.
    pub fn parse(s: &str) -> Option<Uri> {
        let colon = s.find(':')?;
        let scheme = s.get(..colon)?;
        let rest = s.get(colon + 1..)?;
        let mut sb = scheme.bytes();
        let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
            && sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return None;
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            let secure = scheme.eq_ignore_ascii_case("sips");
            return SipUri::parse_after_scheme(secure, rest).map(Uri::Sip);
        }
        // absoluteURI = scheme ":" ( hier-part / opaque-part ), all `uric` characters.
        if rest.is_empty() || !all_escaped_or(rest, |b| is_reserved(b) || is_unreserved(b)) {
            return None;
        }
        Some(Uri::Other {
            scheme: scheme.to_string(),
            rest: rest.to_string(),
        })
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => write!(f, "{u}"),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// `gen-value = token / host / quoted-string`, read raw.
pub(crate) fn read_gen_value<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    if c.peek() == Some(b'"') {
        return c.quoted_raw();
    }
    let v = c.take_while(|b| is_token_char(b) || matches!(b, b'[' | b']' | b':'));
    (!v.is_empty()).then_some(v)
}

/// Reads `*( SEMI generic-param )` of a header field, allowing LWS around `;` and `=`.
pub(crate) fn read_header_params(c: &mut Cursor<'_>) -> Option<Vec<Param>> {
    let mut params = Vec::new();
    while c.eat_sep(b';') {
        let name = c.token()?;
        let value = if c.eat_sep(b'=') {
            Some(read_gen_value(c)?.to_string())
        } else {
            None
        };
        params.push(Param {
            name: name.to_string(),
            value,
        });
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Some(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_parts() {
        let u = sip("sip:alice:secret@[2001:db8::1]:5061;transport=TCP;lr?subject=x&h=");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport_param().as_deref(), Some("tcp"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@[2001:db8::1]:5061;transport=TCP;lr?subject=x&h="
        );
    }

    #[test]
    fn torture_uris() {
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_unescaped().unwrap(), b"sips:user@example.com");
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert!(u.param("lr").is_some());
        assert!(Uri::parse("soap.beep://192.0.2.103:3002").is_some());
        assert!(Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").is_some());
        assert_eq!(
            sip("sip:192.0.2.1").host,
            Host::V4("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:user@exa mple.com",
            "sip:user@",
            "sip:@host",
            "sip:user@host:99999",
            "sip:user@host:",
            "sip:user@host;",
            "sip:user@host;a=",
            "sip:user@host?",
            "sip:user@-host",
            "sip:a%2@host",
            "sip:user@[::1",
            "sip:user@1.2.3.999",
            "1sip:user@host",
            "tel:",
            ":x",
            "x",
        ] {
            assert!(Uri::parse(bad).is_none(), "{bad} should be rejected");
        }
    }
}
