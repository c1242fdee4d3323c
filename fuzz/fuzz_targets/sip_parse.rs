//! Feeds arbitrary bytes to the SIP message parser, the stream framer and the 400 builder.
//! Accepted messages must survive a serialize → parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaani_media::sip::message::{frame_stream, SipMessage, StreamFrame};

fuzz_target!(|data: &[u8]| {
    match SipMessage::parse(data) {
        Ok(m) => {
            let bytes = m.to_bytes();
            match SipMessage::parse(&bytes) {
                Ok(again) => assert_eq!(again, m, "round trip changed the message"),
                Err(e) => panic!("reserialized message rejected: {e}"),
            }
            if let SipMessage::Request(r) = &m {
                let resp = r.response(486, Some("fuzz"));
                assert!(SipMessage::parse(&resp.to_bytes()).is_ok());
            }
        }
        Err(e) => {
            if let Some(reply) = e.reply("fuzz") {
                assert!(reply.starts_with(b"SIP/2.0 "));
            }
        }
    }
    if let Ok(StreamFrame::Message { len }) = frame_stream(data) {
        assert!(len <= data.len());
        let _ = SipMessage::parse(&data[..len]);
    }
});
