//! Feeds arbitrary bytes to the TCP stream framer in pieces (the first byte picks the piece
//! size): it never panics, never holds more than a message and a piece, and what it frames
//! does not depend on how the stream was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaani_media::sip::message::{SipMessage, MAX_MESSAGE_SIZE};
use vaani_media::sip::stream::{Framed, StreamFramer};

fn run(data: &[u8], piece: usize) -> Vec<Option<Framed>> {
    let mut f = StreamFramer::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        f.push(chunk);
        assert!(f.buffered() <= MAX_MESSAGE_SIZE + chunk.len());
        while let Some(r) = f.next_frame() {
            match r {
                Ok(Framed::Message(m)) => {
                    let _ = SipMessage::parse(&m);
                    out.push(Some(Framed::Message(m)));
                }
                Ok(Framed::Ping) => out.push(Some(Framed::Ping)),
                Err(e) => {
                    if let Some(reply) = e.reply("fuzz") {
                        assert!(reply.starts_with(b"SIP/2.0 400 "));
                    }
                    out.push(None);
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let whole = run(rest, rest.len().max(1));
    let pieces = run(rest, usize::from(first % 64) + 1);
    assert_eq!(whole, pieces, "framing depends on the read size");
});
