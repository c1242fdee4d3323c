//! Framing SIP messages out of a byte stream (TCP, later TLS), sans-IO.
//!
//! On a stream transport a message ends where its header section ends (CRLFCRLF) plus exactly
//! `Content-Length` bytes of body; the header is mandatory there (RFC 3261 §18.3). Between
//! messages a peer may send CRLF keep-alives: a double CRLF is a ping that wants a single
//! CRLF pong (RFC 5626 §3.5.1, §4.4.1).
//!
//! [`StreamFramer`] takes bytes in whatever pieces the socket hands them over
//! ([`StreamFramer::push`]) and gives back, in order, whole messages, pings and at most one
//! error ([`StreamFramer::next_frame`]). An error means the stream cannot be resynchronized
//! (no or a bad `Content-Length`, a message over [`MAX_MESSAGE_SIZE`]): the driver answers with
//! [`StreamError::reply`] when there is one and closes the connection. The buffer never holds
//! more than [`MAX_MESSAGE_SIZE`] plus the last piece pushed.

use super::message::{frame_stream, ParseError, SipMessage, StreamFrame, MAX_MESSAGE_SIZE};

/// What came out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// One whole message (header section and body), for [`SipMessage::parse`].
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping: answer with a single CRLF.
    Ping,
}

/// Why the stream cannot go on. Neither `Display` nor `Debug` shows message content.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct StreamError {
    error: ParseError,
    /// The header section of the message that failed, when it was complete.
    head: Option<Vec<u8>>,
}

impl std::fmt::Debug for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamError")
            .field("error", &self.error)
            .field("head_len", &self.head.as_ref().map(Vec::len))
            .finish()
    }
}

impl StreamError {
    pub fn error(&self) -> &ParseError {
        &self.error
    }

    /// The `400` for the request that broke the stream, when its header section was complete
    /// and names enough to address a response (`None` for responses, ACKs and garbage).
    /// `to_tag` becomes the To tag.
    pub fn reply(&self, to_tag: &str) -> Option<Vec<u8>> {
        let head = self.head.as_deref()?;
        match SipMessage::parse(head) {
            Ok(SipMessage::Request(r)) if r.method != super::Method::Ack => {
                let mut resp = r.response(400, Some(to_tag));
                resp.reason = self.error.to_string();
                Some(resp.to_bytes())
            }
            Ok(_) => None,
            Err(e) => e.reply(to_tag),
        }
    }
}

/// Frames messages out of one stream. See the module docs.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// CRLF bytes seen since the last message (keep-alives).
    crlf_run: usize,
    /// Pings framed but not yet returned.
    pings: usize,
    failed: bool,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream. Ignored once the stream failed.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether an error was returned (nothing more will come).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The next frame, `None` when more bytes are needed (or after an error).
    pub fn next_frame(&mut self) -> Option<Result<Framed, StreamError>> {
        loop {
            if self.pings > 0 {
                self.pings -= 1;
                return Some(Ok(Framed::Ping));
            }
            if self.failed {
                return None;
            }
            match frame_stream(&self.buf) {
                Ok(StreamFrame::Incomplete) => return None,
                Ok(StreamFrame::Keepalive { len, .. }) => {
                    let len = len.min(self.buf.len());
                    self.buf.drain(..len);
                    self.crlf_run += len;
                    self.pings += self.crlf_run / 4;
                    self.crlf_run %= 4;
                }
                Ok(StreamFrame::Message { len }) => {
                    let len = len.min(self.buf.len());
                    self.crlf_run = 0;
                    let rest = self.buf.split_off(len);
                    let message = std::mem::replace(&mut self.buf, rest);
                    return Some(Ok(Framed::Message(message)));
                }
                Err(error) => {
                    self.failed = true;
                    let head = self
                        .buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .filter(|&i| i + 4 <= MAX_MESSAGE_SIZE)
                        .and_then(|i| self.buf.get(..i + 4))
                        .map(<[u8]>::to_vec);
                    self.buf = Vec::new();
                    return Some(Err(StreamError { error, head }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:vaani@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
        From: <sip:a@127.0.0.1>;tag=1\r\n\
        To: <sip:vaani@127.0.0.1>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn all(f: &mut StreamFramer) -> Vec<Result<Framed, StreamError>> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn frames_messages_split_anywhere() {
        let two = format!("{INVITE}{INVITE}");
        for cut in 0..=two.len() {
            let mut f = StreamFramer::new();
            let mut got = Vec::new();
            f.push(&two.as_bytes()[..cut]);
            got.extend(all(&mut f));
            f.push(&two.as_bytes()[cut..]);
            got.extend(all(&mut f));
            let want = vec![Ok(Framed::Message(INVITE.as_bytes().to_vec())); 2];
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn pings_across_pieces() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n");
        assert!(all(&mut f).is_empty());
        f.push(b"\r\n");
        assert_eq!(all(&mut f), vec![Ok(Framed::Ping)]);
        f.push(b"\r\n\r\n\r\n\r\n");
        assert_eq!(all(&mut f), vec![Ok(Framed::Ping), Ok(Framed::Ping)]);
        // A lone CRLF before a message is not a ping.
        f.push(b"\r\n");
        f.push(INVITE.as_bytes());
        assert_eq!(
            all(&mut f),
            vec![Ok(Framed::Message(INVITE.as_bytes().to_vec()))]
        );
    }

    #[test]
    fn missing_content_length_is_answered_and_ends_the_stream() {
        let bad = INVITE.replace("Content-Length: 4\r\n", "");
        let mut f = StreamFramer::new();
        f.push(bad.as_bytes());
        let got = all(&mut f);
        assert_eq!(got.len(), 1);
        let Err(e) = &got[0] else {
            panic!("expected an error, got {got:?}")
        };
        let reply = String::from_utf8(e.reply("t").unwrap()).unwrap();
        assert!(
            reply.starts_with("SIP/2.0 400 Missing Content-Length"),
            "{reply}"
        );
        assert!(reply.contains("Call-ID: c1\r\n"), "{reply}");
        assert!(reply.contains(";tag=t"), "{reply}");
        assert!(f.is_failed());
        f.push(INVITE.as_bytes());
        assert!(all(&mut f).is_empty());
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn bad_and_oversized_content_length() {
        for value in ["abc", "-1", "70000", "4, 5"] {
            let bad = INVITE.replace("Content-Length: 4", &format!("Content-Length: {value}"));
            let mut f = StreamFramer::new();
            f.push(bad.as_bytes());
            let got = all(&mut f);
            assert!(matches!(got.as_slice(), [Err(_)]), "{value}: {got:?}");
            if let [Err(e)] = got.as_slice() {
                assert!(e.reply("t").is_some(), "{value}");
            }
        }
    }

    #[test]
    fn endless_header_section_is_capped() {
        let mut f = StreamFramer::new();
        let chunk = vec![b'a'; 4096];
        let mut failed = false;
        for _ in 0..40 {
            f.push(&chunk);
            if let Some(r) = f.next_frame() {
                assert!(r.is_err());
                failed = true;
                break;
            }
            assert!(f.buffered() <= MAX_MESSAGE_SIZE + chunk.len());
        }
        assert!(failed);
        // No header section was complete: nothing to answer.
        assert!(f.next_frame().is_none());
    }

    #[test]
    fn responses_get_no_reply() {
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-1\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:b@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n";
        let mut f = StreamFramer::new();
        f.push(resp.as_bytes());
        let got = all(&mut f);
        let [Err(e)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(e.reply("t").is_none());
    }
}
