//! RTCP (RFC 3550 §6): sender and receiver reports, source description (CNAME), BYE, and
//! compound packets.
//!
//! RTCP runs at a few packets per second per call, so these are plain owned types. The parser
//! checks every length against the datagram (never panics on garbage) and applies the RFC 3550
//! A.2 header checks that still hold under RFC 5506 reduced-size RTCP: version 2, lengths that
//! tile the datagram exactly, padding only on the last packet. Packet types it does not model
//! (APP, feedback, XR) come back as [`RtcpPacket::Other`].

use std::time::Duration;

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;

/// SDES item type of the canonical name.
pub const SDES_CNAME: u8 = 1;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why a datagram is not acceptable RTCP, or a packet cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Empty datagram, or fewer than 4 bytes left for a header.
    #[error("RTCP packet truncated at byte {0}")]
    Truncated(usize),
    /// Version other than 2.
    #[error("unsupported RTCP version {0}")]
    BadVersion(u8),
    /// A packet's length field runs past the datagram.
    #[error("RTCP length field runs past the datagram at byte {0}")]
    LengthOverrun(usize),
    /// A packet's body is too short for the count it declares.
    #[error("RTCP packet type {packet_type} too short for its count")]
    BodyTooShort {
        /// The packet type.
        packet_type: u8,
    },
    /// Bad padding count, or padding on a packet other than the last.
    #[error("bad RTCP padding")]
    BadPadding,
    /// An SDES chunk or item runs past its packet.
    #[error("malformed SDES chunk")]
    BadSdes,
    /// A BYE reason runs past its packet.
    #[error("malformed BYE reason")]
    BadBye,
    /// More than 31 report blocks or sources in one packet.
    #[error("{0} entries do not fit in one RTCP packet (at most 31)")]
    TooMany(usize),
    /// A text field longer than 255 bytes.
    #[error("RTCP text field of {0} bytes is longer than 255")]
    TextTooLong(usize),
    /// A packet longer than the 16-bit length field can describe.
    #[error("RTCP packet too long")]
    TooLong,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost: a 24-bit signed value.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

/// The sender-info section of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// Wall-clock time of this report, 64-bit NTP format.
    pub ntp_timestamp: u64,
    /// The same instant on the media clock.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// A sender report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReport {
    /// The sender.
    pub ssrc: u32,
    /// What it sent.
    pub info: SenderInfo,
    /// What it received (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// A receiver report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReport {
    /// The reporter.
    pub ssrc: u32,
    /// What it received (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: u32,
    /// `(item type, text)` pairs; text decoded as UTF-8 (lossily).
    pub items: Vec<(u8, String)>,
}

impl SdesChunk {
    /// A chunk carrying only a CNAME.
    pub fn cname(ssrc: u32, cname: &str) -> Self {
        SdesChunk {
            ssrc,
            items: vec![(SDES_CNAME, cname.to_owned())],
        }
    }

    /// The CNAME item, if present.
    pub fn get_cname(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|(t, _)| *t == SDES_CNAME)
            .map(|(_, v)| v.as_str())
    }
}

/// A BYE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bye {
    /// The sources leaving.
    pub sources: Vec<u32>,
    /// Optional reason text.
    pub reason: Option<String>,
}

/// One RTCP packet of a compound datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR.
    SenderReport(SenderReport),
    /// RR.
    ReceiverReport(ReceiverReport),
    /// SDES.
    SourceDescription(Vec<SdesChunk>),
    /// BYE.
    Bye(Bye),
    /// Any other type, kept as its header fields and raw body (padding removed).
    Other {
        /// Packet type.
        packet_type: u8,
        /// The 5-bit count/subtype field.
        count: u8,
        /// Body after the 4-byte header.
        body: Vec<u8>,
    },
}

/// Parses a compound RTCP datagram into its packets.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Truncated(0));
    }
    let mut packets = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let head = buf.get(at..at + 4).ok_or(RtcpError::Truncated(at))?;
        let version = head[0] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion(version));
        }
        let padded = head[0] & 0x20 != 0;
        let count = head[0] & 0x1F;
        let packet_type = head[1];
        let len = (u16::from_be_bytes([head[2], head[3]]) as usize + 1) * 4;
        let packet = buf.get(at..at + len).ok_or(RtcpError::LengthOverrun(at))?;
        let mut body = &packet[4..];
        if padded {
            if at + len != buf.len() {
                return Err(RtcpError::BadPadding);
            }
            let pad = *body.last().ok_or(RtcpError::BadPadding)? as usize;
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::BadPadding);
            }
            body = &body[..body.len() - pad];
        }
        packets.push(parse_one(packet_type, count, body)?);
        at += len;
    }
    Ok(packets)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_blocks(body: &[u8], count: usize) -> Vec<ReportBlock> {
    body.chunks_exact(24)
        .take(count)
        .map(|b| {
            let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            // Sign-extend the 24-bit field.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                cumulative_lost,
                extended_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect()
}

fn parse_one(packet_type: u8, count: u8, body: &[u8]) -> Result<RtcpPacket, RtcpError> {
    let n = count as usize;
    let short = RtcpError::BodyTooShort { packet_type };
    match packet_type {
        PT_SR => {
            if body.len() < 24 + 24 * n {
                return Err(short);
            }
            let info = SenderInfo {
                ntp_timestamp: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                rtp_timestamp: be32(body, 12),
                packet_count: be32(body, 16),
                octet_count: be32(body, 20),
            };
            Ok(RtcpPacket::SenderReport(SenderReport {
                ssrc: be32(body, 0),
                info,
                reports: parse_blocks(&body[24..], n),
            }))
        }
        PT_RR => {
            if body.len() < 4 + 24 * n {
                return Err(short);
            }
            Ok(RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: be32(body, 0),
                reports: parse_blocks(&body[4..], n),
            }))
        }
        PT_SDES => parse_sdes(body, n).map(RtcpPacket::SourceDescription),
        PT_BYE => {
            if body.len() < 4 * n {
                return Err(short);
            }
            let sources = body[..4 * n].chunks_exact(4).map(|w| be32(w, 0)).collect();
            let rest = &body[4 * n..];
            let reason = match rest.first() {
                Some(&len) if len > 0 => {
                    let text = rest.get(1..1 + len as usize).ok_or(RtcpError::BadBye)?;
                    Some(String::from_utf8_lossy(text).into_owned())
                }
                _ => None,
            };
            Ok(RtcpPacket::Bye(Bye { sources, reason }))
        }
        _ => Ok(RtcpPacket::Other {
            packet_type,
            count,
            body: body.to_vec(),
        }),
    }
}

fn parse_sdes(body: &[u8], chunks: usize) -> Result<Vec<SdesChunk>, RtcpError> {
    let mut out = Vec::with_capacity(chunks.min(31));
    let mut at = 0;
    for _ in 0..chunks {
        let ssrc_bytes = body.get(at..at + 4).ok_or(RtcpError::BadSdes)?;
        let mut chunk = SdesChunk {
            ssrc: be32(ssrc_bytes, 0),
            items: Vec::new(),
        };
        at += 4;
        loop {
            let item_type = *body.get(at).ok_or(RtcpError::BadSdes)?;
            if item_type == 0 {
                // End of list: skip the null octet(s) to the next 32-bit boundary.
                at = (at + 4) & !3;
                break;
            }
            let len = *body.get(at + 1).ok_or(RtcpError::BadSdes)? as usize;
            let text = body.get(at + 2..at + 2 + len).ok_or(RtcpError::BadSdes)?;
            chunk
                .items
                .push((item_type, String::from_utf8_lossy(text).into_owned()));
            at += 2 + len;
        }
        if at > body.len() {
            return Err(RtcpError::BadSdes);
        }
        out.push(chunk);
    }
    Ok(out)
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_block(out: &mut Vec<u8>, b: &ReportBlock) {
    put32(out, b.ssrc);
    let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
    put32(out, u32::from(b.fraction_lost) << 24 | lost);
    put32(out, b.extended_highest_seq);
    put32(out, b.jitter);
    put32(out, b.last_sr);
    put32(out, b.delay_since_last_sr);
}

impl RtcpPacket {
    /// Appends this packet (no padding) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = out.len();
        let (count, packet_type) = match self {
            RtcpPacket::SenderReport(sr) => (sr.reports.len(), PT_SR),
            RtcpPacket::ReceiverReport(rr) => (rr.reports.len(), PT_RR),
            RtcpPacket::SourceDescription(chunks) => (chunks.len(), PT_SDES),
            RtcpPacket::Bye(bye) => (bye.sources.len(), PT_BYE),
            RtcpPacket::Other {
                packet_type, count, ..
            } => (usize::from(*count & 0x1F), *packet_type),
        };
        if count > 31 {
            return Err(RtcpError::TooMany(count));
        }
        out.extend_from_slice(&[0x80 | count as u8, packet_type, 0, 0]);
        let result = self.write_body(out);
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        while (out.len() - start) & 3 != 0 {
            out.push(0);
        }
        let words = (out.len() - start) / 4 - 1;
        let Ok(words) = u16::try_from(words) else {
            out.truncate(start);
            return Err(RtcpError::TooLong);
        };
        out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
        Ok(())
    }

    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        match self {
            RtcpPacket::SenderReport(sr) => {
                put32(out, sr.ssrc);
                put32(out, (sr.info.ntp_timestamp >> 32) as u32);
                put32(out, sr.info.ntp_timestamp as u32);
                put32(out, sr.info.rtp_timestamp);
                put32(out, sr.info.packet_count);
                put32(out, sr.info.octet_count);
                sr.reports.iter().for_each(|b| put_block(out, b));
            }
            RtcpPacket::ReceiverReport(rr) => {
                put32(out, rr.ssrc);
                rr.reports.iter().for_each(|b| put_block(out, b));
            }
            RtcpPacket::SourceDescription(chunks) => {
                for chunk in chunks {
                    let chunk_start = out.len();
                    put32(out, chunk.ssrc);
                    for (item_type, text) in &chunk.items {
                        if *item_type == 0 {
                            continue;
                        }
                        let len = u8::try_from(text.len())
                            .map_err(|_| RtcpError::TextTooLong(text.len()))?;
                        out.push(*item_type);
                        out.push(len);
                        out.extend_from_slice(text.as_bytes());
                    }
                    // At least one null octet, then to the 32-bit boundary.
                    out.push(0);
                    while (out.len() - chunk_start) & 3 != 0 {
                        out.push(0);
                    }
                }
            }
            RtcpPacket::Bye(bye) => {
                bye.sources.iter().for_each(|&s| put32(out, s));
                if let Some(reason) = &bye.reason {
                    let len = u8::try_from(reason.len())
                        .map_err(|_| RtcpError::TextTooLong(reason.len()))?;
                    out.push(len);
                    out.extend_from_slice(reason.as_bytes());
                }
            }
            RtcpPacket::Other { body, .. } => out.extend_from_slice(body),
        }
        Ok(())
    }
}

/// Appends a compound packet made of `packets`, in order, to `out`. RFC 3550 §6.1 wants an SR
/// or RR first and an SDES CNAME in every compound packet; that is the caller's choice.
pub fn write_compound(packets: &[RtcpPacket], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    let start = out.len();
    for p in packets {
        if let Err(e) = p.write_to(out) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// The 64-bit NTP timestamp for a wall-clock time given as time since the Unix epoch (the
/// driver reads the clock; this stays pure).
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// The middle 32 bits of an NTP timestamp: the LSR field that echoes an SR.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion() {
        // 1970-01-01 + 0.5 s.
        let ntp = ntp_from_unix(Duration::from_millis(500));
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET);
        assert_eq!(ntp as u32, 1 << 31);
        assert_eq!(ntp_middle(0x0000_1234_5678_0000), 0x1234_5678);
    }

    #[test]
    fn cumulative_lost_is_24_bit_signed_both_ways() {
        for lost in [0, 1, -1, 0x7F_FFFF, -0x80_0000, 12345] {
            let rr = RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 1,
                reports: vec![ReportBlock {
                    cumulative_lost: lost,
                    ..Default::default()
                }],
            });
            let mut v = Vec::new();
            rr.write_to(&mut v).unwrap();
            assert_eq!(parse_compound(&v).unwrap(), vec![rr]);
        }
    }
}
