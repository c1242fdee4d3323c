//! Lexical pieces of the RFC 3261 §25 grammar that the header and URI parsers share.
//!
//! Everything works on `&str` that the message parser has already checked to be UTF-8; we only
//! ever split at ASCII bytes, so every slice boundary is a char boundary, and we still use
//! `str::get` so that a mistake here is an error, never a panic.

/// `alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"`
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// The characters of `word` (Call-ID): token characters plus `()<>:\"/[]?{}`.
pub(crate) fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// `unreserved = alphanum / mark`
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// `reserved`
pub(crate) fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Checks that every byte is allowed by `allowed` or is part of a well-formed `%HH` escape.
pub(crate) fn all_escaped_or(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes (used to compare URI parts; RFC 3261 §19.1.4).
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hi = b.get(i + 1).and_then(|h| (*h as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|h| (*h as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                // Both digits are < 16, so the value fits a byte.
                out.push(((hi << 4) | lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Writes `s` as a `quoted-string`, escaping what `qdtext` does not allow.
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        let needs_escape = match ch {
            '"' | '\\' => true,
            ' ' | '\t' => false,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => true,
            _ => false,
        };
        if needs_escape {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

/// Splits a header value at top-level commas (outside quoted strings and `<…>`), the list form
/// of RFC 3261 §7.3.1. Returns `None` if a quote or angle bracket is left open.
pub(crate) fn split_list(s: &str) -> Option<Vec<&str>> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    while i < b.len() {
        let c = b[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if in_angle {
            if c == b'>' {
                in_angle = false;
            }
        } else {
            match c {
                b'"' => in_quote = true,
                b'<' => in_angle = true,
                b',' => {
                    parts.push(s.get(start..i)?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if in_quote || in_angle {
        return None;
    }
    parts.push(s.get(start..)?);
    Some(parts)
}

/// A forward-only reader over one header value.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `SWS b SWS`: optional whitespace, the separator, optional whitespace. On a miss the
    /// position is left where it was.
    pub(crate) fn eat_sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.eat(b) {
            self.skip_ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// Reads a `quoted-string` starting at the opening quote and returns it raw (with its
    /// quotes and escapes), or `None` if it is unterminated or holds a bare CR/LF.
    pub(crate) fn quoted_raw(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return self.s.get(start..self.pos);
                }
                b'\\' => {
                    self.pos += 1;
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    match self.peek()? {
                        b'\n' | b'\r' => return None,
                        c if c > 0x7f => return None,
                        _ => self.pos += 1,
                    }
                }
                b'\r' | b'\n' => return None,
                _ => self.pos += 1,
            }
        }
    }
}

/// Removes the quotes and `\` escapes from a raw quoted string as returned by
/// [`Cursor::quoted_raw`].
pub(crate) fn unquote(raw: &str) -> String {
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let parts = split_list(r#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>"#).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(split_list("\"open").is_none());
        assert!(split_list("<sip:open").is_none());
    }

    #[test]
    fn quoted_strings() {
        let mut c = Cursor::new(r#""J Rosenberg \\\"" rest"#);
        let raw = c.quoted_raw().unwrap();
        assert_eq!(unquote(raw), r#"J Rosenberg \""#);
        assert!(Cursor::new("\"unterminated").quoted_raw().is_none());
        assert!(Cursor::new("\"bad\\").quoted_raw().is_none());
    }

    #[test]
    fn escapes() {
        assert!(all_escaped_or("a%20b", is_unreserved));
        assert!(!all_escaped_or("a%2", is_unreserved));
        assert!(!all_escaped_or("a%zz", is_unreserved));
        assert_eq!(unescape("%75se%72"), b"user");
        let mut s = String::new();
        write_quoted(&mut s, "a\"b\\c\u{7}");
        assert_eq!(s, "\"a\\\"b\\\\c\\\u{7}\"");
    }
}
