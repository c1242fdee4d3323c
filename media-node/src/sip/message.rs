//! SIP messages: bytes → validated [`SipMessage`] → bytes.
//!
//! [`SipMessage::parse`] takes one datagram (or one message cut out of a stream by
//! [`frame_stream`]) and returns a message whose mandatory header fields (RFC 3261 §8.1.1:
//! Via, From, To, Call-ID, CSeq) are present, single where they must be single, and
//! well-formed, whose CSeq method matches the request method, and whose Content-Length fits
//! what arrived. The rules come from RFC 3261 §7 and §25 and the invalid messages of RFC 4475
//! (see `README.md` beside this file for the conformance table).
//!
//! A message that fails returns a [`ParseError`] that says why (the text is a reason phrase
//! built from fixed strings only, never from message content) and, when the message was a
//! request with a usable Via, can build the `400` (or `505`) answer (RFC 3261 §21.4.1 asks that
//! the reason phrase name the problem).
//!
//! Header fields the node acts on are typed ([`Headers`]); every other field is kept as text in
//! arrival order and written back unchanged.

use std::fmt::Write as _;

use bytes::Bytes;

use super::grammar::{is_token, is_word_char, split_list, Cursor};
use super::header::{expand_compact, name_is, CSeq, Header, Method, NameAddr, Via};
use super::uri::{read_header_params, Uri};

/// The largest message accepted (a UDP datagram cannot be larger, and nothing we exchange over
/// TCP comes close).
pub const MAX_MESSAGE_SIZE: usize = 65_535;
/// The most header fields (after unfolding) a message may have.
pub const MAX_HEADERS: usize = 256;

/// Why a message was rejected. `Display` is a reason phrase (RFC 3261 §21.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("Empty Message")]
    Empty,
    #[error("Message Too Large")]
    TooLarge,
    #[error("Incomplete Header Section")]
    Incomplete,
    #[error("Header Section Not UTF-8")]
    NotUtf8,
    #[error("Malformed Start Line")]
    StartLine,
    #[error("Malformed Request-URI")]
    RequestUri,
    #[error("Malformed Status Code")]
    StatusCode,
    #[error("Version Not Supported")]
    Version,
    #[error("Malformed Header Line")]
    HeaderLine,
    #[error("Too Many Header Fields")]
    TooManyHeaders,
    #[error("Missing {0} Header")]
    Missing(&'static str),
    #[error("Malformed {0} Header")]
    Malformed(&'static str),
    #[error("Multiple {0} Headers")]
    Multiple(&'static str),
    #[error("Content-Length Exceeds Message")]
    BodyTruncated,
    #[error("CSeq Method Does Not Match")]
    CSeqMismatch,
}

/// A rejected message: the reason, and what is needed to answer it if it was a request.
/// Neither `Display` nor `Debug` shows message content (caller numbers, credentials).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ErrorKind,
    salvage: Option<Box<Salvage>>,
}

impl std::fmt::Debug for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParseError")
            .field("kind", &self.kind)
            .field("can_reply", &self.can_reply())
            .finish()
    }
}

/// The header fields of a rejected request that a response copies (RFC 3261 §8.2.6.2). Via
/// values are re-serialized from their parsed form (they address the response, so they must be
/// well-formed); From, To, Call-ID and CSeq are too when they parse, and are otherwise copied
/// as received (a single header line, so no CR or LF can be smuggled into our output), so that
/// the client can still match the answer to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Salvage {
    via: Vec<String>,
    from: Option<String>,
    to: Option<Result<NameAddr, String>>,
    call_id: Option<String>,
    cseq: Option<String>,
}

impl ParseError {
    fn new(kind: ErrorKind) -> Self {
        ParseError {
            kind,
            salvage: None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether a response can be sent: the message was a request and it had at least one
    /// well-formed Via, so the response can be addressed and matched by the client.
    /// Responses that fail to parse are dropped (RFC 3261 §18.1.2).
    pub fn can_reply(&self) -> bool {
        self.salvage.is_some()
    }

    /// The status of that response: `505` for an unsupported SIP version, else `400`.
    pub fn reply_status(&self) -> Option<u16> {
        self.salvage.as_ref().map(|_| match self.kind {
            ErrorKind::Version => 505,
            _ => 400,
        })
    }

    /// Builds the response (`400 <reason>` or `505`), copying the Via, From, To, Call-ID and
    /// CSeq fields that survived, and adding `to_tag` to a To without a tag.
    pub fn reply(&self, to_tag: &str) -> Option<Vec<u8>> {
        let s = self.salvage.as_deref()?;
        let status = self.reply_status()?;
        let mut out = format!("SIP/2.0 {status} {}\r\n", self.kind);
        for v in &s.via {
            let _ = write!(out, "Via: {v}\r\n");
        }
        if let Some(f) = &s.from {
            let _ = write!(out, "From: {f}\r\n");
        }
        match &s.to {
            Some(Ok(t)) => {
                let mut t = t.clone();
                if t.tag().is_none() && is_token(to_tag) {
                    t.set_tag(to_tag);
                }
                let _ = write!(out, "To: {t}\r\n");
            }
            Some(Err(raw)) => {
                let _ = write!(out, "To: {raw}\r\n");
            }
            None => {}
        }
        if let Some(c) = &s.call_id {
            let _ = write!(out, "Call-ID: {c}\r\n");
        }
        if let Some(c) = &s.cseq {
            let _ = write!(out, "CSeq: {c}\r\n");
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        Some(out.into_bytes())
    }
}

impl From<ErrorKind> for ParseError {
    fn from(kind: ErrorKind) -> Self {
        ParseError::new(kind)
    }
}

/// The header fields of a message: the ones the node acts on, typed, and the rest as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// All Via values, top first.
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    /// Absent in responses and in some RFC 2543 requests.
    pub max_forwards: Option<u8>,
    /// Contact values (empty when absent or `*`).
    pub contact: Vec<NameAddr>,
    /// `Contact: *` (REGISTER only).
    pub contact_wildcard: bool,
    pub route: Vec<NameAddr>,
    pub record_route: Vec<NameAddr>,
    /// The media type as written, e.g. `application/sdp`.
    pub content_type: Option<String>,
    /// Every other header field, in arrival order.
    pub other: Vec<Header>,
}

impl Headers {
    /// The minimal set for a new request or response.
    pub fn new(via: Via, from: NameAddr, to: NameAddr, call_id: String, cseq: CSeq) -> Self {
        Headers {
            via: vec![via],
            from,
            to,
            call_id,
            cseq,
            max_forwards: None,
            contact: Vec::new(),
            contact_wildcard: false,
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: None,
            other: Vec::new(),
        }
    }

    /// The first untyped field called `name` (long or compact form, any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        let long = expand_compact(name).unwrap_or(name);
        self.other
            .iter()
            .find(|h| name_is(&h.name, long))
            .map(|h| h.value.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let long = expand_compact(name).unwrap_or(name);
        self.other
            .iter()
            .filter(move |h| name_is(&h.name, long))
            .map(|h| h.value.as_str())
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.other.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Removes every untyped field called `name`.
    pub fn remove(&mut self, name: &str) {
        let long = expand_compact(name).unwrap_or(name).to_string();
        self.other.retain(|h| !name_is(&h.name, &long));
    }

    pub fn top_via(&self) -> Option<&Via> {
        self.via.first()
    }

    fn write(&self, out: &mut String, body_len: usize) {
        for v in &self.via {
            let _ = write!(out, "Via: {v}\r\n");
        }
        for r in &self.route {
            let _ = write!(out, "Route: {r}\r\n");
        }
        for r in &self.record_route {
            let _ = write!(out, "Record-Route: {r}\r\n");
        }
        let _ = write!(out, "From: {}\r\nTo: {}\r\n", self.from, self.to);
        let _ = write!(out, "Call-ID: {}\r\nCSeq: {}\r\n", self.call_id, self.cseq);
        if let Some(m) = self.max_forwards {
            let _ = write!(out, "Max-Forwards: {m}\r\n");
        }
        if self.contact_wildcard {
            out.push_str("Contact: *\r\n");
        }
        for c in &self.contact {
            let _ = write!(out, "Contact: {c}\r\n");
        }
        for h in &self.other {
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        if let Some(ct) = &self.content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        let _ = write!(out, "Content-Length: {body_len}\r\n\r\n");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

/// The usual reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Progress",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

impl Request {
    /// A response to this request as RFC 3261 §8.2.6 builds it: the Via fields, From, Call-ID
    /// and CSeq copied, To copied with `to_tag` added if it has none (not for `100`, which
    /// also copies Timestamp). Dialog fields (Contact, Record-Route) are the dialog layer's.
    pub fn response(&self, status: u16, to_tag: Option<&str>) -> Response {
        let h = &self.headers;
        let mut to = h.to.clone();
        if status > 100 && to.tag().is_none() {
            if let Some(tag) = to_tag {
                to.set_tag(tag);
            }
        }
        let mut headers = Headers {
            via: h.via.clone(),
            from: h.from.clone(),
            to,
            call_id: h.call_id.clone(),
            cseq: h.cseq.clone(),
            max_forwards: None,
            contact: Vec::new(),
            contact_wildcard: false,
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: None,
            other: Vec::new(),
        };
        if status == 100 {
            if let Some(ts) = h.get("Timestamp") {
                headers.push("Timestamp", ts);
            }
        }
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        self.headers.write(&mut out, self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        self.headers.write(&mut out, self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

impl SipMessage {
    /// Parses one message from a datagram. Leading CRLFs are skipped; octets after the body
    /// that Content-Length announces are ignored (RFC 3261 §18.3); without Content-Length the
    /// body is the rest of the datagram.
    pub fn parse(data: &[u8]) -> Result<SipMessage, ParseError> {
        let data = skip_crlf(data);
        if data.is_empty() {
            return Err(ErrorKind::Empty.into());
        }
        if data.len() > MAX_MESSAGE_SIZE {
            return Err(ErrorKind::TooLarge.into());
        }
        parse_inner(data).map_err(|kind| ParseError {
            kind,
            salvage: salvage(data).map(Box::new),
        })
    }

    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            SipMessage::Request(r) => &mut r.headers,
            SipMessage::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

fn skip_crlf(mut data: &[u8]) -> &[u8] {
    while let Some(rest) = data.strip_prefix(b"\r\n") {
        data = rest;
    }
    data
}

fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The unfolded `(name, value)` header fields of a header section.
type Fields<'a> = Vec<(&'a str, String)>;

/// Splits a header section into its start line and unfolded fields.
fn split_head(head: &str) -> Result<(&str, Fields<'_>), ErrorKind> {
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("");
    let mut fields: Vec<(&str, String)> = Vec::new();
    for line in lines {
        if line.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(ErrorKind::HeaderLine);
        }
        if line.starts_with([' ', '\t']) {
            // Folding: CRLF followed by whitespace continues the previous field.
            let Some((_, value)) = fields.last_mut() else {
                return Err(ErrorKind::HeaderLine);
            };
            let cont = line.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(cont);
            }
            continue;
        }
        let colon = line.find(':').ok_or(ErrorKind::HeaderLine)?;
        let name = line
            .get(..colon)
            .unwrap_or("")
            .trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ErrorKind::HeaderLine);
        }
        let value = line
            .get(colon + 1..)
            .unwrap_or("")
            .trim_matches([' ', '\t']);
        if fields.len() >= MAX_HEADERS {
            return Err(ErrorKind::TooManyHeaders);
        }
        fields.push((name, value.to_string()));
    }
    Ok((start, fields))
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

fn parse_version(v: &str) -> Result<(), ErrorKind> {
    // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive, RFC 3261 §7.1)
    let rest = match v.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("SIP/") => v.get(4..).unwrap_or(""),
        _ => return Err(ErrorKind::StartLine),
    };
    let (major, minor) = rest.split_once('.').ok_or(ErrorKind::StartLine)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Err(ErrorKind::StartLine);
    }
    if major.trim_start_matches('0') == "2" && minor.trim_start_matches('0').is_empty() {
        Ok(())
    } else {
        Err(ErrorKind::Version)
    }
}

fn parse_start(line: &str) -> Result<StartLine, ErrorKind> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = line.splitn(3, ' ');
        parse_version(parts.next().unwrap_or(""))?;
        let code = parts.next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ErrorKind::StatusCode);
        }
        let status: u16 = code.parse().map_err(|_| ErrorKind::StatusCode)?;
        if !(100..=699).contains(&status) {
            return Err(ErrorKind::StatusCode);
        }
        let reason = parts.next().unwrap_or("");
        if reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ErrorKind::StartLine);
        }
        return Ok(StartLine::Response(status, reason.to_string()));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let mut parts = line.splitn(3, ' ');
    let method = Method::parse(parts.next().unwrap_or("")).ok_or(ErrorKind::StartLine)?;
    let uri = parts.next().unwrap_or("");
    let version = parts.next().ok_or(ErrorKind::StartLine)?;
    if uri.is_empty() || version.contains(' ') {
        return Err(ErrorKind::StartLine);
    }
    parse_version(version)?;
    let uri = Uri::parse(uri).ok_or(ErrorKind::RequestUri)?;
    if let Uri::Sip(u) = &uri {
        // Headers in a Request-URI are not allowed (RFC 3261 §19.1.1 table, RFC 4475 §3.1.2.11).
        if !u.headers.is_empty() {
            return Err(ErrorKind::RequestUri);
        }
    }
    Ok(StartLine::Request(method, uri))
}

fn valid_call_id(s: &str) -> bool {
    // callid = word [ "@" word ]
    let mut parts = s.splitn(2, '@');
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
    parts.next().is_some_and(word) && parts.next().is_none_or(word)
}

fn valid_media_type(s: &str) -> bool {
    let mut c = Cursor::new(s);
    let ok = c.token().is_some() && c.eat_sep(b'/') && c.token().is_some();
    ok && read_header_params(&mut c).is_some() && {
        c.skip_ws();
        c.at_end()
    }
}

fn parse_u8_field(v: &str) -> Option<u8> {
    let t = v.trim_start_matches('0');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || t.len() > 3 {
        return None;
    }
    if t.is_empty() {
        Some(0)
    } else {
        t.parse().ok()
    }
}

/// Content-Length: `1*DIGIT`. `Ok(None)` for a number too large to be any message of ours.
fn parse_content_length(v: &str) -> Result<Option<usize>, ErrorKind> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorKind::Malformed("Content-Length"));
    }
    let t = v.trim_start_matches('0');
    if t.len() > 9 {
        return Ok(None);
    }
    Ok(Some(if t.is_empty() {
        0
    } else {
        t.parse()
            .map_err(|_| ErrorKind::Malformed("Content-Length"))?
    }))
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: Option<T>,
    name: &'static str,
) -> Result<(), ErrorKind> {
    if slot.is_some() {
        return Err(ErrorKind::Multiple(name));
    }
    *slot = Some(value.ok_or(ErrorKind::Malformed(name))?);
    Ok(())
}

fn parse_inner(data: &[u8]) -> Result<SipMessage, ErrorKind> {
    let head_end = find_head_end(data).ok_or(ErrorKind::Incomplete)?;
    let head = std::str::from_utf8(data.get(..head_end).unwrap_or_default())
        .map_err(|_| ErrorKind::NotUtf8)?;
    let body_area = data.get(head_end + 4..).unwrap_or_default();
    let (start, fields) = split_head(head)?;
    let start = parse_start(start)?;

    let mut via = Vec::new();
    let mut from = None;
    let mut to = None;
    let mut call_id = None;
    let mut cseq = None;
    let mut max_forwards = None;
    let mut content_length: Option<Option<usize>> = None;
    let mut content_type = None;
    let mut contact = Vec::new();
    let mut contact_wildcard = false;
    let mut route = Vec::new();
    let mut record_route = Vec::new();
    let mut other = Vec::new();

    for (name, value) in fields {
        let long = expand_compact(name).unwrap_or(name);
        match long.to_ascii_lowercase().as_str() {
            "via" => {
                let parts = split_list(&value).ok_or(ErrorKind::Malformed("Via"))?;
                for part in parts {
                    via.push(Via::parse(part).ok_or(ErrorKind::Malformed("Via"))?);
                }
            }
            "from" => set_once(&mut from, NameAddr::parse(&value, false), "From")?,
            "to" => set_once(&mut to, NameAddr::parse(&value, false), "To")?,
            "call-id" => set_once(
                &mut call_id,
                valid_call_id(&value).then(|| value.clone()),
                "Call-ID",
            )?,
            "cseq" => set_once(&mut cseq, CSeq::parse(&value), "CSeq")?,
            "max-forwards" => set_once(&mut max_forwards, parse_u8_field(&value), "Max-Forwards")?,
            "content-length" => {
                let v = parse_content_length(&value)?;
                set_once(&mut content_length, Some(v), "Content-Length")?;
            }
            "content-type" => set_once(
                &mut content_type,
                valid_media_type(&value).then(|| value.clone()),
                "Content-Type",
            )?,
            "contact" => {
                if value == "*" {
                    contact_wildcard = true;
                } else {
                    let list = NameAddr::parse_list(&value, false)
                        .ok_or(ErrorKind::Malformed("Contact"))?;
                    contact.extend(list);
                }
                if contact_wildcard && !contact.is_empty() {
                    return Err(ErrorKind::Malformed("Contact"));
                }
            }
            "route" => route
                .extend(NameAddr::parse_list(&value, true).ok_or(ErrorKind::Malformed("Route"))?),
            "record-route" => record_route.extend(
                NameAddr::parse_list(&value, true).ok_or(ErrorKind::Malformed("Record-Route"))?,
            ),
            _ => other.push(Header {
                name: long.to_string(),
                value,
            }),
        }
    }

    if via.is_empty() {
        return Err(ErrorKind::Missing("Via"));
    }
    let from = from.ok_or(ErrorKind::Missing("From"))?;
    let to = to.ok_or(ErrorKind::Missing("To"))?;
    let call_id = call_id.ok_or(ErrorKind::Missing("Call-ID"))?;
    let cseq = cseq.ok_or(ErrorKind::Missing("CSeq"))?;

    let body = match content_length {
        Some(Some(n)) if n <= body_area.len() => body_area.get(..n).unwrap_or_default(),
        Some(_) => return Err(ErrorKind::BodyTruncated),
        None => body_area,
    };
    let headers = Headers {
        via,
        from,
        to,
        call_id,
        cseq,
        max_forwards,
        contact,
        contact_wildcard,
        route,
        record_route,
        content_type,
        other,
    };
    let body = Bytes::copy_from_slice(body);
    Ok(match start {
        StartLine::Request(method, uri) => {
            if headers.cseq.method != method {
                return Err(ErrorKind::CSeqMismatch);
            }
            SipMessage::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    })
}

/// Recovers what a 400 needs from a request that failed validation. `None` when the message
/// is not a request or has no well-formed Via.
fn salvage(data: &[u8]) -> Option<Salvage> {
    let head = match find_head_end(data) {
        Some(end) => data.get(..end)?,
        None => data,
    };
    let head = String::from_utf8_lossy(head);
    // Best effort: split the lines, ignoring malformed ones.
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let first = start.split(' ').next()?;
    if first
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        || !is_token(first)
    {
        return None;
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            if fields.len() >= MAX_HEADERS {
                break;
            }
            fields.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let single = |long: &str| {
        let mut it = fields.iter().filter(|(n, _)| name_is(n, long));
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    };
    let mut via = Vec::new();
    for (_, v) in fields.iter().filter(|(n, _)| name_is(n, "Via")) {
        for part in split_list(v)? {
            // A request of another SIP version is answered (505) with its Vias as they came.
            let parsed = Via::parse_version(part, true)?;
            if Via::parse(part).is_some() {
                via.push(parsed.to_string());
            } else {
                via.push(part.trim().to_string());
            }
        }
    }
    if via.is_empty() {
        return None;
    }
    Some(Salvage {
        via,
        from: single("From")
            .map(|v| NameAddr::parse(v, false).map_or_else(|| v.to_string(), |n| n.to_string())),
        to: single("To").map(|v| NameAddr::parse(v, false).ok_or_else(|| v.to_string())),
        call_id: single("Call-ID").map(str::to_string),
        cseq: single("CSeq")
            .map(|v| CSeq::parse(v).map_or_else(|| v.to_string(), |c| c.to_string())),
    })
}

/// What [`frame_stream`] found at the front of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// `len` bytes of CRLF keep-alive to drop; `ping` when it was a double-CRLF ping that
    /// wants a single-CRLF pong (RFC 5626 §4.4.1).
    Keepalive { len: usize, ping: bool },
    /// A whole message occupies the first `len` bytes; hand them to [`SipMessage::parse`].
    Message { len: usize },
}

/// Finds the message boundary in a stream (TCP/TLS) buffer, where Content-Length is mandatory
/// (RFC 3261 §18.3). An error means the stream cannot be resynchronized: close it.
pub fn frame_stream(buf: &[u8]) -> Result<StreamFrame, ParseError> {
    let rest = skip_crlf(buf);
    let skipped = buf.len() - rest.len();
    if skipped > 0 {
        return Ok(StreamFrame::Keepalive {
            len: skipped,
            ping: skipped >= 4,
        });
    }
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() > MAX_MESSAGE_SIZE {
            Err(ErrorKind::TooLarge.into())
        } else {
            Ok(StreamFrame::Incomplete)
        };
    };
    let head = buf.get(..head_end).unwrap_or_default();
    let mut length = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(line.get(..colon).unwrap_or_default());
        if name_is(name.trim_end(), "Content-Length") {
            let value = String::from_utf8_lossy(line.get(colon + 1..).unwrap_or_default());
            let n = parse_content_length(value.trim())?.ok_or(ErrorKind::TooLarge)?;
            if length.replace(n).is_some() {
                return Err(ErrorKind::Multiple("Content-Length").into());
            }
        }
    }
    let n = length.ok_or(ErrorKind::Missing("Content-Length"))?;
    let total = head_end + 4 + n;
    if total > MAX_MESSAGE_SIZE {
        return Err(ErrorKind::TooLarge.into());
    }
    Ok(if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message { len: total }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@example.com>\r\n\
        From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@10.0.0.1>\r\n\
        Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
        X-Vaani-Call: abc\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 5\r\n\r\nv=0\r\n";

    fn parse(s: &str) -> SipMessage {
        SipMessage::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_an_invite() {
        let SipMessage::Request(r) = parse(INVITE) else {
            panic!("request")
        };
        assert_eq!(r.method, Method::Invite);
        let h = &r.headers;
        assert_eq!(h.via[0].branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(h.from.tag(), Some("1928301774"));
        assert_eq!(h.to.tag(), None);
        assert_eq!(h.cseq.seq, 314159);
        assert_eq!(h.max_forwards, Some(70));
        assert_eq!(h.record_route.len(), 2);
        assert_eq!(h.get("x-vaani-call"), Some("abc"));
        assert_eq!(&r.body[..], b"v=0\r\n");
    }

    #[test]
    fn round_trips() {
        let m = parse(INVITE);
        let again = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn builds_responses() {
        let SipMessage::Request(r) = parse(INVITE) else {
            panic!("request")
        };
        let resp = r.response(180, Some("xyz"));
        assert_eq!(resp.headers.to.tag(), Some("xyz"));
        let bytes = resp.to_bytes();
        let SipMessage::Response(p) = SipMessage::parse(&bytes).unwrap() else {
            panic!("response")
        };
        assert_eq!(p.status, 180);
        assert_eq!(p.reason, "Ringing");
        assert_eq!(p.headers.via, r.headers.via);
        assert_eq!(r.response(100, Some("xyz")).headers.to.tag(), None);
    }

    #[test]
    fn rejects_with_a_reply_when_possible() {
        let bad = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        let e = SipMessage::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CSeqMismatch);
        assert!(e.can_reply());
        let reply = e.reply("t1").unwrap();
        let SipMessage::Response(r) = SipMessage::parse(&reply).unwrap() else {
            panic!("response")
        };
        assert_eq!(r.status, 400);
        assert_eq!(r.reason, "CSeq Method Does Not Match");
        assert_eq!(r.headers.to.tag(), Some("t1"));
        assert_eq!(r.headers.cseq.seq, 314159);

        let no_via = INVITE.replace(
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n",
            "",
        );
        let e = SipMessage::parse(no_via.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Missing("Via"));
        assert!(!e.can_reply());

        let v3 = INVITE.replace("SIP/2.0\r\n", "SIP/3.0\r\n");
        let e = SipMessage::parse(v3.as_bytes()).unwrap_err();
        assert_eq!(e.reply_status(), Some(505));
    }

    #[test]
    fn errors_show_no_message_content() {
        let bad = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        let e = SipMessage::parse(bad.as_bytes()).unwrap_err();
        for shown in [format!("{e}"), format!("{e:?}")] {
            assert!(!shown.contains("alice"), "{shown}");
            assert!(!shown.contains("10.0.0.1"), "{shown}");
        }
    }

    #[test]
    fn content_length_rules() {
        let long = INVITE.replace("Content-Length: 5", "Content-Length: 5000");
        assert_eq!(
            SipMessage::parse(long.as_bytes()).unwrap_err().kind(),
            ErrorKind::BodyTruncated
        );
        let neg = INVITE.replace("Content-Length: 5", "Content-Length: -4");
        assert_eq!(
            SipMessage::parse(neg.as_bytes()).unwrap_err().kind(),
            ErrorKind::Malformed("Content-Length")
        );
        let huge = INVITE.replace("Content-Length: 5", "Content-Length: 99999999999999999999");
        assert_eq!(
            SipMessage::parse(huge.as_bytes()).unwrap_err().kind(),
            ErrorKind::BodyTruncated
        );
        let none = INVITE.replace("Content-Length: 5\r\n", "");
        let m = SipMessage::parse(none.as_bytes()).unwrap();
        assert_eq!(&m.body()[..], b"v=0\r\n");
    }

    #[test]
    fn frames_a_stream() {
        let mut buf = b"\r\n\r\n".to_vec();
        assert_eq!(
            frame_stream(&buf).unwrap(),
            StreamFrame::Keepalive { len: 4, ping: true }
        );
        buf.clear();
        buf.extend_from_slice(INVITE.as_bytes());
        let len = INVITE.len();
        assert_eq!(
            frame_stream(&buf[..len - 1]).unwrap(),
            StreamFrame::Incomplete
        );
        assert_eq!(frame_stream(&buf[..20]).unwrap(), StreamFrame::Incomplete);
        buf.extend_from_slice(b"OPTIONS");
        assert_eq!(frame_stream(&buf).unwrap(), StreamFrame::Message { len });
        let no_cl = INVITE.replace("Content-Length: 5\r\n", "");
        assert!(frame_stream(no_cl.as_bytes()).is_err());
    }
}
