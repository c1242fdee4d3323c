//! RTP packets (RFC 3550 §5.1): a zero-copy parser with validation and a writer.
//!
//! Parsing never panics and never allocates: every length is checked before it is used, and a
//! malformed packet is an [`RtpError`]. The header extension (§5.3.1) is bounds-checked and
//! exposed as opaque bytes; nothing in it is interpreted.

/// The fixed header length.
pub const HEADER_LEN: usize = 12;
/// The only RTP version there is.
pub const VERSION: u8 = 2;

/// Why a datagram is not an acceptable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the fixed header.
    #[error("RTP packet too short: {0} bytes")]
    TooShort(usize),
    /// Version field other than 2.
    #[error("unsupported RTP version {0}")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the datagram.
    #[error("CSRC list ({count} entries) runs past the end of a {len}-byte packet")]
    CsrcOverrun {
        /// CC field.
        count: u8,
        /// Datagram length.
        len: usize,
    },
    /// The header extension runs past the end of the datagram.
    #[error("header extension runs past the end of the packet")]
    ExtensionOverrun,
    /// The padding count is zero or larger than what follows the header.
    #[error("bad padding count {0}")]
    BadPadding(u8),
    /// A payload type above 127 was given to the writer.
    #[error("payload type {0} does not fit in 7 bits")]
    BadPayloadType(u8),
    /// Too many CSRCs given to the writer (at most 15).
    #[error("{0} CSRCs do not fit (at most 15)")]
    TooManyCsrcs(usize),
    /// A CSRC list given to the writer that is not a whole number of 32-bit words.
    #[error("CSRC list of {0} bytes is not a whole number of 32-bit words")]
    BadCsrcList(usize),
    /// An extension body given to the writer is not a whole number of 32-bit words, or is too
    /// long for the 16-bit length field.
    #[error("header extension body of {0} bytes is not a whole number of 32-bit words")]
    BadExtensionLength(usize),
    /// The output buffer is too small.
    #[error("RTP output needs {needed} bytes, got {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// A header extension (RFC 3550 §5.3.1): a 16-bit profile-defined tag and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte headers, …).
    pub profile: u16,
    /// The body, a whole number of 32-bit words.
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// M bit.
    pub marker: bool,
    /// PT (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// The CSRC list as raw big-endian words (`csrc_count() * 4` bytes); see [`Self::csrcs`].
    pub csrc: &'a [u8],
    /// Header extension, if the X bit was set.
    pub extension: Option<Extension<'a>>,
    /// Payload, without padding.
    pub payload: &'a [u8],
    /// Padding octets that followed the payload (0 when the P bit was clear).
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// Parses and validates one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort(buf.len()));
        }
        let b0 = buf[0];
        let version = b0 >> 6;
        if version != VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let cc = b0 & 0x0F;
        let b1 = buf[1];
        let mut at = HEADER_LEN;
        let csrc_end = at + 4 * cc as usize;
        let csrc = buf.get(at..csrc_end).ok_or(RtpError::CsrcOverrun {
            count: cc,
            len: buf.len(),
        })?;
        at = csrc_end;
        let extension = if has_extension {
            let head = buf.get(at..at + 4).ok_or(RtpError::ExtensionOverrun)?;
            let profile = u16::from_be_bytes([head[0], head[1]]);
            let words = u16::from_be_bytes([head[2], head[3]]) as usize;
            let body_end = at + 4 + 4 * words;
            let data = buf
                .get(at + 4..body_end)
                .ok_or(RtpError::ExtensionOverrun)?;
            at = body_end;
            Some(Extension { profile, data })
        } else {
            None
        };
        let mut end = buf.len();
        let mut padding = 0;
        if has_padding {
            // buf.len() >= at >= 12 here, so there is a last byte.
            padding = buf[end - 1];
            if padding == 0 || padding as usize > end - at {
                return Err(RtpError::BadPadding(padding));
            }
            end -= padding as usize;
        }
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            csrc,
            extension,
            payload: &buf[at..end],
            padding,
        })
    }

    /// The fixed header fields.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        }
    }

    /// Number of CSRCs.
    pub fn csrc_count(&self) -> usize {
        self.csrc.len() / 4
    }

    /// The CSRC identifiers.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    }

    /// Bytes [`write`](Self::write) produces.
    pub fn serialized_len(&self) -> usize {
        HEADER_LEN
            + self.csrc.len()
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
            + self.padding as usize
    }

    /// Writes this packet (padding bytes as zeros, count last) to the front of `out`.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if self.payload_type > 0x7F {
            return Err(RtpError::BadPayloadType(self.payload_type));
        }
        if self.csrc.len() & 3 != 0 {
            return Err(RtpError::BadCsrcList(self.csrc.len()));
        }
        if self.csrc.len() > 60 {
            return Err(RtpError::TooManyCsrcs(self.csrc.len() / 4));
        }
        if let Some(e) = self.extension {
            if e.data.len() & 3 != 0 || e.data.len() / 4 > u16::MAX as usize {
                return Err(RtpError::BadExtensionLength(e.data.len()));
            }
        }
        let needed = self.serialized_len();
        if out.len() < needed {
            return Err(RtpError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut b0 = VERSION << 6 | (self.csrc.len() / 4) as u8;
        if self.padding > 0 {
            b0 |= 0x20;
        }
        if self.extension.is_some() {
            b0 |= 0x10;
        }
        out[0] = b0;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = HEADER_LEN;
        out[at..at + self.csrc.len()].copy_from_slice(self.csrc);
        at += self.csrc.len();
        if let Some(e) = self.extension {
            out[at..at + 2].copy_from_slice(&e.profile.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&((e.data.len() / 4) as u16).to_be_bytes());
            out[at + 4..at + 4 + e.data.len()].copy_from_slice(e.data);
            at += 4 + e.data.len();
        }
        out[at..at + self.payload.len()].copy_from_slice(self.payload);
        at += self.payload.len();
        if self.padding > 0 {
            let p = self.padding as usize;
            out[at..at + p - 1].fill(0);
            out[at + p - 1] = self.padding;
            at += p;
        }
        Ok(at)
    }
}

/// The fixed-header fields an RTP sender sets per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeader {
    /// M bit (first packet of a talkspurt; first packet of a DTMF event).
    pub marker: bool,
    /// PT (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes a packet with this header, no CSRCs, no extension, no padding, and `payload`, to
    /// the front of `out`; returns its length. The hot send path: no allocation.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        if self.payload_type > 0x7F {
            return Err(RtpError::BadPayloadType(self.payload_type));
        }
        let needed = HEADER_LEN + payload.len();
        if out.len() < needed {
            return Err(RtpError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        out[0] = VERSION << 6;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[HEADER_LEN..needed].copy_from_slice(payload);
        Ok(needed)
    }

    /// Appends a packet with this header and `payload` to `out`.
    pub fn write_to_vec(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpError> {
        let start = out.len();
        out.resize(start + HEADER_LEN + payload.len(), 0);
        self.write(payload, &mut out[start..]).map(|_| ())
    }
}

/// RFC 5761 §4 demultiplexing of RTP and RTCP on one port: the second octet of an RTCP packet
/// (its packet type) is in 192..=223, which RTP's marker + payload type never is for the
/// payload types in use (72–95 with the marker set are reserved for this reason).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] >> 6 == VERSION && (192..=223).contains(&datagram[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_pcmu_packet() {
        let mut buf = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0x01, 0x40, 0xDE, 0xAD, 0xBE, 0xEF,
        ];
        buf.extend_from_slice(&[0xFF; 160]);
        let p = RtpPacket::parse(&buf).unwrap();
        assert!(!p.marker);
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 320);
        assert_eq!(p.ssrc, 0xDEAD_BEEF);
        assert_eq!(p.payload.len(), 160);
        assert_eq!(p.csrc_count(), 0);
        assert!(p.extension.is_none());
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut buf = vec![0xB2, 0xE5, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 11]); // 2 CSRCs
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-word extension
        buf.extend_from_slice(b"payload");
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::parse(&buf).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 101);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(
            p.extension,
            Some(Extension {
                profile: 0xBEDE,
                data: &[0x10, 0xAA, 0, 0]
            })
        );
        assert_eq!(p.payload, b"payload");
        assert_eq!(p.padding, 3);
        let mut out = vec![0u8; p.serialized_len()];
        assert_eq!(p.write(&mut out).unwrap(), buf.len());
        assert_eq!(out, buf);
    }

    #[test]
    fn header_writer_round_trips() {
        let h = RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 65535,
            timestamp: u32::MAX,
            ssrc: 7,
        };
        let mut v = Vec::new();
        h.write_to_vec(&[1, 2, 3], &mut v).unwrap();
        let p = RtpPacket::parse(&v).unwrap();
        assert_eq!(p.header(), h);
        assert_eq!(p.payload, &[1, 2, 3]);
        let bad = RtpHeader {
            payload_type: 128,
            ..h
        };
        assert_eq!(
            bad.write(&[], &mut [0; 12]),
            Err(RtpError::BadPayloadType(128))
        );
        assert_eq!(
            h.write(&[0; 4], &mut [0; 15]),
            Err(RtpError::BufferTooSmall {
                needed: 16,
                available: 15
            })
        );
    }

    #[test]
    fn rtcp_demux() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
        assert!(!is_rtcp(&[0x80, 0x00]));
        assert!(!is_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_rtcp(&[0x80]));
    }
}
