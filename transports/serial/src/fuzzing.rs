//! Entry points for the fuzz targets (`tests/fuzz/`): the receiving side of the link as the
//! session's reader thread runs it (deframing, KISS/AX.25 unwrapping, frame decoding). Not a
//! stable API.

use crate::crc::crc32;
use crate::link::{Deframer, Unwrapped};
use crate::wire::{Frame, TRAILER};
use crate::{AX25_HEADER, DATA_FRAME_OVERHEAD, FrameKind};

/// What one piece of a received byte stream turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A frame that decodes: its kind, and whether it re-encodes to bytes that decode to
    /// the same frame (always true; the fuzz targets check it).
    Frame {
        /// Its kind.
        kind: FrameKind,
        /// Encoding it again gives a frame that decodes to the same frame.
        round_trips: bool,
    },
    /// Bytes between delimiters that do not decode (or cannot be a frame).
    Damaged,
    /// Another application's AX.25 frame.
    Foreign,
}

/// Feeds `chunks` (as successive reads of the device) through the deframer in raw or KISS
/// mode and decodes every frame found. With `fix_crc`, each frame's CRC is first set to
/// the right value, so that what follows the CRC check is reached.
pub fn read_link(kiss: bool, fix_crc: bool, chunks: &[&[u8]]) -> Vec<Piece> {
    let max = usize::from(crate::config::MAX_MTU) + DATA_FRAME_OVERHEAD + AX25_HEADER + 64;
    let mut deframer = Deframer::new(kiss, max);
    let mut out = Vec::new();
    let mut pieces = Vec::new();
    for chunk in chunks {
        deframer.push(chunk, &mut out);
        for u in out.drain(..) {
            pieces.push(match u {
                Unwrapped::Frame { mut bytes, .. } => {
                    if fix_crc && bytes.len() >= TRAILER {
                        let at = bytes.len() - TRAILER;
                        let crc = crc32(&bytes[..at]).to_le_bytes();
                        bytes[at..].copy_from_slice(&crc);
                    }
                    match Frame::decode(&bytes) {
                        Ok(f) => Piece::Frame {
                            kind: f.body.kind(),
                            round_trips: Frame::decode(&f.encode()).as_ref() == Ok(&f),
                        },
                        Err(_) => Piece::Damaged,
                    }
                }
                Unwrapped::Garbage => Piece::Damaged,
                Unwrapped::Foreign => Piece::Foreign,
            });
        }
    }
    pieces
}

/// Real bytes on the link, to seed the fuzzer: one frame of every kind, wrapped as the
/// session writes them (raw, or KISS/AX.25 from callsign `N0CALL-1`).
pub fn sample_stream(kiss: bool) -> Vec<u8> {
    use crate::wire::Body;
    let encap = if kiss {
        crate::link::Encap::kiss("N0CALL-1".parse().expect("a valid callsign"))
    } else {
        crate::link::Encap::Raw
    };
    let message = b"a ferry bundle carried over the radio";
    let bodies = [
        Body::Hello {
            version: crate::wire::VERSION,
            echo: 0,
            mtu: 200,
        },
        Body::Ack {
            largest: 3,
            bitmap: 0b101,
        },
        Body::Offer {
            slot: 0,
            len: message.len() as u32,
            hash: crate::MessageHash::of(message).0,
        },
        Body::Need {
            slot: 0,
            more: false,
            ranges: vec![(0, 10), (20, message.len() as u32 - 20)],
        },
        Body::Data {
            slot: 0,
            offset: 0,
            data: message.to_vec(),
        },
        Body::Done { slot: 0 },
        Body::Refuse { slot: 1, reason: 2 },
        Body::Probe,
        Body::Close,
    ];
    let mut out = Vec::new();
    for (seq, body) in bodies.into_iter().enumerate() {
        let f = Frame {
            epoch: 0x1234,
            seq: seq as u16,
            poll: seq % 3 == 0,
            body,
        };
        out.extend(encap.wrap(&f.encode()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed stream is real: every frame in it reads back, in both encapsulations, also
    /// when cut into two reads.
    #[test]
    fn the_sample_stream_reads_back_as_one_frame_of_each_kind() {
        for kiss in [false, true] {
            let s = sample_stream(kiss);
            let (one, two) = s.split_at(s.len() / 3);
            let pieces = read_link(kiss, false, &[one, two]);
            assert_eq!(pieces.len(), 9, "{pieces:?}");
            assert!(
                pieces.iter().all(|p| matches!(
                    p,
                    Piece::Frame {
                        round_trips: true,
                        ..
                    }
                )),
                "{pieces:?}"
            );
        }
    }
}
