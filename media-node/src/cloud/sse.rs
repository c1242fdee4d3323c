//! A server-sent-events decoder (the `text/event-stream` format of the HTML standard,
//! §9.2.6 "Interpreting an event stream"), fed arbitrary byte chunks as they come off the
//! socket. Both LLM APIs stream this way: Anthropic names its events (`event:` lines),
//! OpenAI-compatible servers send bare `data:` lines ending in `data: [DONE]`.
//!
//! Lines end in CR LF, LF or CR (a CR at the end of one chunk and an LF at the start of the
//! next are one line end); `:` lines are comments; `data:` lines of one event join with LF;
//! a blank line dispatches the event if it has data. Pure: no I/O.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when the event did not name itself.
    pub event: String,
    pub data: String,
}

/// The stream broke the decoder's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream line or event longer than {0} bytes")]
pub struct SseTooLong(pub usize);

/// Incremental decoder.
#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    after_cr: bool,
    max: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

impl SseDecoder {
    /// A decoder refusing lines and events longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
            after_cr: false,
            max,
        }
    }

    /// Feed bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseTooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line)? {
                        out.push(ev);
                    }
                }
                _ => {
                    if self.line.len() >= self.max {
                        return Err(SseTooLong(self.max));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseTooLong> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let had = std::mem::replace(&mut self.has_data, false);
            return Ok(had.then_some(SseEvent { event, data }));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseTooLong(self.max));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<SseEvent> {
        SseDecoder::default().push(bytes).unwrap()
    }

    #[test]
    fn named_and_bare_events() {
        let s = b"event: message_start\ndata: {\"a\":1}\n\n: comment\ndata: [DONE]\n\n";
        assert_eq!(
            all(s),
            vec![
                SseEvent {
                    event: "message_start".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn multi_line_data_and_line_ends() {
        let s = b"data:a\r\ndata: b\r\rdata:c\r\n\r\n";
        let evs = all(s);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].data, "a\nb");
        assert_eq!(evs[1].data, "c");
    }

    #[test]
    fn events_without_data_are_dropped() {
        assert!(all(b"event: ping\n\n").is_empty());
        assert_eq!(all(b"event: ping\ndata:\n\n")[0].data, "");
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut d = SseDecoder::new(16);
        assert!(d.push(&[b'x'; 40]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = SseDecoder::new(64).push(&bytes);
        }

        #[test]
        fn chunking_does_not_matter(
            text in "(event: [a-z_]{1,8}\r?\n|data: [ -~]{0,12}(\r\n|\n|\r)|: c\n|\n|\r\n){0,20}",
            split in 1usize..9,
        ) {
            let whole = SseDecoder::default().push(text.as_bytes()).unwrap();
            let mut d = SseDecoder::default();
            let mut parts = Vec::new();
            for c in text.as_bytes().chunks(split) {
                parts.extend(d.push(c).unwrap());
            }
            proptest::prop_assert_eq!(whole, parts);
        }
    }
}
