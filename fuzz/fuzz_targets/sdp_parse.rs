//! Feeds arbitrary bytes to the SDP parser and the offer/answer; accepted descriptions must
//! survive a serialize → parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaani_media::sip::sdp::{answer, Codec, Direction, LocalMedia, SessionDescription};

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = SessionDescription::parse(data) {
        match SessionDescription::parse(&sdp.to_bytes()) {
            Ok(again) => assert_eq!(again, sdp, "round trip changed the description"),
            Err(e) => panic!("reserialized SDP rejected: {e}"),
        }
        let local = LocalMedia {
            address: std::net::IpAddr::from([192, 0, 2, 1]),
            port: 20000,
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus],
            telephone_event: true,
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: 1,
            session_version: 1,
        };
        if let Ok((ans, _)) = answer(&sdp, &local) {
            assert!(SessionDescription::parse(&ans.to_bytes()).is_ok());
        }
    }
});
