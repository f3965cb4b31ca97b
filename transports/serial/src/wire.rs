//! The frames of the session protocol, byte by byte.
//!
//! ```text
//! offset  size  field
//! 0       1     kind (low 7 bits) | POLL flag (0x80: "answer with an ACK now")
//! 1       2     epoch of the sender's session (little-endian; random, never 0)
//! 3       2     sequence number (numbered kinds; 0 for HELLO and ACK)
//! 5       2     payload length N
//! 7       N     payload (per kind, below)
//! 7+N     4     CRC-32 (IEEE) of bytes 0..7+N
//! ```
//!
//! Payloads (integers little-endian):
//!
//! | kind | name   | payload |
//! |------|--------|---------|
//! | 1    | HELLO  | "FY", version u8, echo u16 (the peer's epoch, 0 if unknown), mtu u16 |
//! | 2    | ACK    | largest u16 (highest sequence number received), bitmap u64 (bit i: largest-1-i received) |
//! | 3    | OFFER  | slot u16, length u32, BLAKE3 hash [32] |
//! | 4    | NEED   | slot u16, flags u8 (1: more ranges missing than listed), count u8, count × (offset u32, length u32) |
//! | 5    | DATA   | slot u16, offset u32, bytes |
//! | 6    | DONE   | slot u16 |
//! | 7    | CLOSE  | (empty) |
//! | 8    | PROBE  | (empty) |
//! | 9    | REFUSE | slot u16, reason u8 |
//!
//! HELLO and ACK are unnumbered; every other kind takes the next sequence number of its
//! sender and is acknowledged. Sequence numbers are never reused within a session: a lost
//! frame's content is sent again under a new number (as QUIC does), so an ACK is never
//! ambiguous and every round-trip sample is clean.

use crate::crc::crc32;

/// Protocol version carried in HELLO.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER: usize = 7;
/// Bytes after the payload (CRC-32).
pub(crate) const TRAILER: usize = 4;
/// Bytes of a DATA payload before the data.
pub(crate) const DATA_HEADER: usize = 6;
/// Bytes a DATA frame adds to its data, before link encapsulation.
pub const DATA_FRAME_OVERHEAD: usize = HEADER + TRAILER + DATA_HEADER;
const POLL: u8 = 0x80;

/// The kinds of frame, for progress and airtime accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Session opening (unnumbered).
    Hello,
    /// Acknowledgement (unnumbered).
    Ack,
    /// A message is announced: slot, length, hash.
    Offer,
    /// The receiver lists the byte ranges it still lacks.
    Need,
    /// Message bytes.
    Data,
    /// The receiver holds a whole message and checked its hash.
    Done,
    /// The sender has nothing more to send.
    Close,
    /// Asks for an acknowledgement after a timeout.
    Probe,
    /// The receiver will not take a message.
    Refuse,
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Hello {
        version: u8,
        echo: u16,
        mtu: u16,
    },
    Ack {
        largest: u16,
        bitmap: u64,
    },
    Offer {
        slot: u16,
        len: u32,
        hash: [u8; 32],
    },
    Need {
        slot: u16,
        more: bool,
        ranges: Vec<(u32, u32)>,
    },
    Data {
        slot: u16,
        offset: u32,
        data: Vec<u8>,
    },
    Done {
        slot: u16,
    },
    Close,
    Probe,
    Refuse {
        slot: u16,
        reason: u8,
    },
}

impl Body {
    pub(crate) fn kind(&self) -> FrameKind {
        match self {
            Body::Hello { .. } => FrameKind::Hello,
            Body::Ack { .. } => FrameKind::Ack,
            Body::Offer { .. } => FrameKind::Offer,
            Body::Need { .. } => FrameKind::Need,
            Body::Data { .. } => FrameKind::Data,
            Body::Done { .. } => FrameKind::Done,
            Body::Close => FrameKind::Close,
            Body::Probe => FrameKind::Probe,
            Body::Refuse { .. } => FrameKind::Refuse,
        }
    }

    fn code(&self) -> u8 {
        match self {
            Body::Hello { .. } => 1,
            Body::Ack { .. } => 2,
            Body::Offer { .. } => 3,
            Body::Need { .. } => 4,
            Body::Data { .. } => 5,
            Body::Done { .. } => 6,
            Body::Close => 7,
            Body::Probe => 8,
            Body::Refuse { .. } => 9,
        }
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) epoch: u16,
    pub(crate) seq: u16,
    pub(crate) poll: bool,
    pub(crate) body: Body,
}

/// Why received bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The CRC does not match: the frame was damaged on the way.
    Crc,
    /// The CRC matches but the content is not a frame of this protocol.
    Malformed,
}

impl Frame {
    /// The frame's bytes, CRC included.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        match &self.body {
            Body::Hello { version, echo, mtu } => {
                p.extend_from_slice(b"FY");
                p.push(*version);
                p.extend_from_slice(&echo.to_le_bytes());
                p.extend_from_slice(&mtu.to_le_bytes());
            }
            Body::Ack { largest, bitmap } => {
                p.extend_from_slice(&largest.to_le_bytes());
                p.extend_from_slice(&bitmap.to_le_bytes());
            }
            Body::Offer { slot, len, hash } => {
                p.extend_from_slice(&slot.to_le_bytes());
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(hash);
            }
            Body::Need { slot, more, ranges } => {
                p.extend_from_slice(&slot.to_le_bytes());
                p.push(u8::from(*more));
                p.push(ranges.len() as u8);
                for (o, l) in ranges {
                    p.extend_from_slice(&o.to_le_bytes());
                    p.extend_from_slice(&l.to_le_bytes());
                }
            }
            Body::Data { slot, offset, data } => {
                p.extend_from_slice(&slot.to_le_bytes());
                p.extend_from_slice(&offset.to_le_bytes());
                p.extend_from_slice(data);
            }
            Body::Done { slot } => p.extend_from_slice(&slot.to_le_bytes()),
            Body::Close | Body::Probe => {}
            Body::Refuse { slot, reason } => {
                p.extend_from_slice(&slot.to_le_bytes());
                p.push(*reason);
            }
        }
        let mut out = Vec::with_capacity(HEADER + p.len() + TRAILER);
        out.push(self.body.code() | if self.poll { POLL } else { 0 });
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&(p.len() as u16).to_le_bytes());
        out.extend_from_slice(&p);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks one frame.
    pub(crate) fn decode(b: &[u8]) -> Result<Frame, DecodeError> {
        if b.len() < HEADER + TRAILER {
            return Err(DecodeError::Crc);
        }
        let (body, crc) = b.split_at(b.len() - TRAILER);
        if crc32(body).to_le_bytes() != crc {
            return Err(DecodeError::Crc);
        }
        let n = u16::from_le_bytes([b[5], b[6]]) as usize;
        if n != body.len() - HEADER {
            return Err(DecodeError::Malformed);
        }
        let p = &body[HEADER..];
        let u16at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
        let u32at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let need = |len: usize| {
            if p.len() == len {
                Ok(())
            } else {
                Err(DecodeError::Malformed)
            }
        };
        let body = match b[0] & !POLL {
            1 => {
                need(7)?;
                if &p[..2] != b"FY" {
                    return Err(DecodeError::Malformed);
                }
                Body::Hello {
                    version: p[2],
                    echo: u16at(3),
                    mtu: u16at(5),
                }
            }
            2 => {
                need(10)?;
                let mut bm = [0u8; 8];
                bm.copy_from_slice(&p[2..10]);
                Body::Ack {
                    largest: u16at(0),
                    bitmap: u64::from_le_bytes(bm),
                }
            }
            3 => {
                need(38)?;
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&p[6..38]);
                Body::Offer {
                    slot: u16at(0),
                    len: u32at(2),
                    hash,
                }
            }
            4 => {
                if p.len() < 4 {
                    return Err(DecodeError::Malformed);
                }
                let count = p[3] as usize;
                need(4 + 8 * count)?;
                let ranges = (0..count)
                    .map(|i| (u32at(4 + 8 * i), u32at(8 + 8 * i)))
                    .collect();
                Body::Need {
                    slot: u16at(0),
                    more: p[2] & 1 != 0,
                    ranges,
                }
            }
            5 => {
                if p.len() < DATA_HEADER + 1 {
                    return Err(DecodeError::Malformed);
                }
                Body::Data {
                    slot: u16at(0),
                    offset: u32at(2),
                    data: p[DATA_HEADER..].to_vec(),
                }
            }
            6 => {
                need(2)?;
                Body::Done { slot: u16at(0) }
            }
            7 => {
                need(0)?;
                Body::Close
            }
            8 => {
                need(0)?;
                Body::Probe
            }
            9 => {
                need(3)?;
                Body::Refuse {
                    slot: u16at(0),
                    reason: p[2],
                }
            }
            _ => return Err(DecodeError::Malformed),
        };
        let epoch = u16::from_le_bytes([b[1], b[2]]);
        if epoch == 0 {
            return Err(DecodeError::Malformed);
        }
        Ok(Frame {
            epoch,
            seq: u16::from_le_bytes([b[3], b[4]]),
            poll: b[0] & POLL != 0,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies() -> Vec<Body> {
        vec![
            Body::Hello {
                version: 1,
                echo: 0xBEEF,
                mtu: 200,
            },
            Body::Ack {
                largest: 65535,
                bitmap: 0x8000_0000_0000_0001,
            },
            Body::Offer {
                slot: 3,
                len: 123_456,
                hash: [0xC0; 32],
            },
            Body::Need {
                slot: 1,
                more: true,
                ranges: vec![(0, 10), (4000, 1)],
            },
            Body::Data {
                slot: 2,
                offset: 99,
                data: vec![0xC0, 0xDB, 0, 255],
            },
            Body::Done { slot: 9 },
            Body::Close,
            Body::Probe,
            Body::Refuse { slot: 4, reason: 1 },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, body) in bodies().into_iter().enumerate() {
            let f = Frame {
                epoch: 0x1234,
                seq: i as u16,
                poll: i % 2 == 0,
                body,
            };
            assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }
    }

    #[test]
    fn data_frame_overhead_is_as_documented() {
        let f = Frame {
            epoch: 1,
            seq: 0,
            poll: false,
            body: Body::Data {
                slot: 0,
                offset: 0,
                data: vec![0; 200],
            },
        };
        assert_eq!(f.encode().len(), 200 + DATA_FRAME_OVERHEAD);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = Frame {
            epoch: 7,
            seq: 1,
            poll: true,
            body: Body::Done { slot: 1 },
        };
        let bytes = f.encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(Frame::decode(&b), Err(DecodeError::Crc), "bit {i}");
        }
        assert_eq!(
            Frame::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Crc)
        );
    }
}
