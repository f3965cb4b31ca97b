//! One SMS worth of ferry: the frame format (wire format, version 1).
//!
//! A message (an opaque bundle) is cut into parts; each part travels as one *frame*, and a
//! frame is one SMS: written in text by [`crate::text`] (123 bytes in 160 characters) or
//! sent as-is in a binary SMS (140 bytes). Every frame ends with a CRC-16 (CCITT-FALSE:
//! polynomial 0x1021, initial 0xFFFF, big-endian) over all bytes before it, so a mangled
//! SMS is dropped and asked for again instead of breaking a whole bundle.
//!
//! The first two bits say what a frame is:
//!
//! ```text
//! kind 0, one part:      [00 tag:14] payload… crc:16                     4 bytes of header
//! kind 1, 2–16 parts:    [01 tag:14] [index:4 count-1:4] payload… crc   5 bytes
//! kind 2, 2–256 parts:   [10 tag:14] [index:8] [count-1:8] payload… crc 6 bytes
//! kind 3, control:       [11 subtype:6] entries… crc:16
//! ```
//!
//! The *tag* names a message among those one sender has in flight to one receiver; senders
//! number their messages per receiver from a random start, so 16 384 messages must pass
//! before a tag comes back, and a receiver forgets finished tags after the expiry time.
//! Parts are cut to the largest payload the kind allows; only the last part is shorter.
//!
//! Control subtypes (receivers never confuse them with data: the kind bits differ):
//!
//! ```text
//! 0 missing (receiver → sender): entries [form:2 tag:14] [count-1:8] then
//!     form 0: [n:8] n part indexes (one byte each)
//!     form 1: a bitmap of count bits, bit i (least significant first) = part i missing
//! 1 gone (sender → receiver, "I no longer hold these"): entries [00 tag:14] [count-1:8]
//! ```
//!
//! A request uses whichever form is shorter; several entries share one SMS.

/// Number of distinct tags (14 bits).
pub const TAG_LIMIT: u16 = 1 << 14;
/// Most parts one message may have.
pub const MAX_PARTS: usize = 256;
/// Bytes of one binary SMS (GSM 03.40 user data, 8-bit).
pub const BINARY_FRAME: usize = 140;
/// Header and CRC bytes of a one-part message.
pub const SINGLE_OVERHEAD: usize = 4;
/// Header and CRC bytes of each part of a message of 2–16 parts.
pub const SHORT_OVERHEAD: usize = 5;
/// Header and CRC bytes of each part of a message of 17–256 parts.
pub const LONG_OVERHEAD: usize = 6;
/// Most parts the short form numbers.
const SHORT_MAX: usize = 16;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One part of a message.
    Data {
        /// The message's tag.
        tag: u16,
        /// This part's index, below `count`.
        index: u16,
        /// How many parts the message has.
        count: u16,
        /// This part's bytes.
        payload: Vec<u8>,
    },
    /// A receiver asks for parts again.
    Missing(Vec<Missing>),
    /// A sender no longer holds these messages.
    Gone(Vec<Gone>),
}

/// "Parts `parts` of message `tag` (of `count`) never arrived."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The message.
    pub tag: u16,
    /// Its number of parts, as the receiver saw it.
    pub count: u16,
    /// The missing part indexes, ascending.
    pub parts: Vec<u16>,
}

/// "I no longer hold message `tag`; stop waiting for it."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone {
    /// The message.
    pub tag: u16,
    /// Its number of parts.
    pub count: u16,
}

/// Why a frame does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the smallest frame.
    TooShort(usize),
    /// The CRC does not match: the SMS was damaged on the way, or is not ferry's.
    BadChecksum,
    /// The header is inconsistent (for instance a part index beyond the count).
    BadHeader(&'static str),
    /// A control message of a kind this version does not know.
    UnknownControl(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "{n} bytes is shorter than any ferry SMS"),
            FrameError::BadChecksum => f.write_str("checksum mismatch (damaged, or not ferry's)"),
            FrameError::BadHeader(why) => write!(f, "bad header: {why}"),
            FrameError::UnknownControl(k) => {
                write!(
                    f,
                    "control message of unknown kind {k} (from a newer ferry?)"
                )
            }
        }
    }
}

/// CRC-16/CCITT-FALSE.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn seal(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame
}

/// How a message of some length is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of parts (SMS).
    pub count: usize,
    /// Payload bytes per part (the last one may carry fewer).
    pub chunk: usize,
}

/// The layout of a `len`-byte message in frames of `frame_bytes`, or `None` when it needs
/// more than [`MAX_PARTS`] parts.
pub fn layout(len: usize, frame_bytes: usize) -> Option<Layout> {
    if frame_bytes <= LONG_OVERHEAD {
        return None;
    }
    if len <= frame_bytes - SINGLE_OVERHEAD {
        return Some(Layout {
            count: 1,
            chunk: frame_bytes - SINGLE_OVERHEAD,
        });
    }
    let short = frame_bytes - SHORT_OVERHEAD;
    let count = len.div_ceil(short);
    if count <= SHORT_MAX {
        return Some(Layout {
            count,
            chunk: short,
        });
    }
    let long = frame_bytes - LONG_OVERHEAD;
    let count = len.div_ceil(long);
    (count <= MAX_PARTS).then_some(Layout { count, chunk: long })
}

/// The largest message that fits in [`MAX_PARTS`] frames of `frame_bytes`.
pub fn max_message(frame_bytes: usize) -> usize {
    MAX_PARTS * frame_bytes.saturating_sub(LONG_OVERHEAD)
}

/// Frame `index` of `message` cut by `layout`, under `tag`.
pub fn data_frame(tag: u16, message: &[u8], layout: Layout, index: usize) -> Vec<u8> {
    debug_assert!(tag < TAG_LIMIT && index < layout.count);
    let start = (index * layout.chunk).min(message.len());
    let end = ((index + 1) * layout.chunk).min(message.len());
    let kind: u8 = match layout.count {
        1 => 0,
        2..=SHORT_MAX => 1,
        _ => 2,
    };
    let mut f = Vec::with_capacity(end - start + LONG_OVERHEAD);
    f.push((kind << 6) | (tag >> 8) as u8);
    f.push(tag as u8);
    match kind {
        1 => f.push(((index as u8) << 4) | (layout.count - 1) as u8),
        2 => {
            f.push(index as u8);
            f.push((layout.count - 1) as u8);
        }
        _ => {}
    }
    f.extend_from_slice(&message[start..end]);
    seal(f)
}

const CONTROL_MISSING: u8 = 0;
const CONTROL_GONE: u8 = 1;

fn missing_entry(m: &Missing) -> Vec<u8> {
    let count = usize::from(m.count);
    let bitmap_len = count.div_ceil(8);
    let list_len = 1 + m.parts.len();
    let mut e = Vec::new();
    if list_len <= bitmap_len {
        e.push((m.tag >> 8) as u8);
        e.push(m.tag as u8);
        e.push((count - 1) as u8);
        e.push(m.parts.len() as u8);
        e.extend(m.parts.iter().map(|&p| p as u8));
    } else {
        e.push(0x40 | (m.tag >> 8) as u8);
        e.push(m.tag as u8);
        e.push((count - 1) as u8);
        let mut bits = vec![0u8; bitmap_len];
        for &p in &m.parts {
            bits[usize::from(p) / 8] |= 1 << (p % 8);
        }
        e.extend(bits);
    }
    e
}

fn control_frames(subtype: u8, entries: Vec<Vec<u8>>, frame_bytes: usize) -> Vec<Vec<u8>> {
    let room = frame_bytes - 3;
    let mut frames = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for e in entries {
        if !body.is_empty() && body.len() + e.len() > room {
            frames.push(std::mem::take(&mut body));
        }
        body.extend(e);
    }
    if !body.is_empty() {
        frames.push(body);
    }
    frames
        .into_iter()
        .map(|b| {
            let mut f = Vec::with_capacity(b.len() + 3);
            f.push(0xC0 | subtype);
            f.extend(b);
            seal(f)
        })
        .collect()
}

/// "Missing" requests packed into as few frames of `frame_bytes` as possible.
pub fn missing_frames(requests: &[Missing], frame_bytes: usize) -> Vec<Vec<u8>> {
    let entries = requests.iter().map(missing_entry).collect();
    control_frames(CONTROL_MISSING, entries, frame_bytes)
}

/// "Gone" notices packed into as few frames of `frame_bytes` as possible.
pub fn gone_frames(gone: &[Gone], frame_bytes: usize) -> Vec<Vec<u8>> {
    let entries = gone
        .iter()
        .map(|g| vec![(g.tag >> 8) as u8, g.tag as u8, (g.count - 1) as u8])
        .collect();
    control_frames(CONTROL_GONE, entries, frame_bytes)
}

/// Decodes one frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() < 4 {
        return Err(FrameError::TooShort(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 2);
    if crc16(body) != u16::from_be_bytes([crc[0], crc[1]]) {
        return Err(FrameError::BadChecksum);
    }
    let kind = body[0] >> 6;
    let tag = (u16::from(body[0] & 0x3F) << 8) | u16::from(body[1]);
    match kind {
        0 => Ok(Frame::Data {
            tag,
            index: 0,
            count: 1,
            payload: body[2..].to_vec(),
        }),
        1 => {
            let b = *body.get(2).ok_or(FrameError::TooShort(bytes.len()))?;
            let (index, count) = (u16::from(b >> 4), u16::from(b & 0x0F) + 1);
            if count < 2 || index >= count {
                return Err(FrameError::BadHeader("part index beyond the part count"));
            }
            Ok(Frame::Data {
                tag,
                index,
                count,
                payload: body[3..].to_vec(),
            })
        }
        2 => {
            if body.len() < 4 {
                return Err(FrameError::TooShort(bytes.len()));
            }
            let (index, count) = (u16::from(body[2]), u16::from(body[3]) + 1);
            if count < 2 || index >= count {
                return Err(FrameError::BadHeader("part index beyond the part count"));
            }
            Ok(Frame::Data {
                tag,
                index,
                count,
                payload: body[4..].to_vec(),
            })
        }
        _ => {
            let subtype = body[0] & 0x3F;
            let mut rest = &body[1..];
            match subtype {
                CONTROL_MISSING => {
                    let mut out = Vec::new();
                    while !rest.is_empty() {
                        if rest.len() < 4 {
                            return Err(FrameError::BadHeader("truncated missing-parts entry"));
                        }
                        let form = rest[0] >> 6;
                        let tag = (u16::from(rest[0] & 0x3F) << 8) | u16::from(rest[1]);
                        let count = u16::from(rest[2]) + 1;
                        let mut parts = Vec::new();
                        match form {
                            0 => {
                                let n = usize::from(rest[3]);
                                let list = rest
                                    .get(4..4 + n)
                                    .ok_or(FrameError::BadHeader("truncated part list"))?;
                                parts.extend(list.iter().map(|&p| u16::from(p)));
                                rest = &rest[4 + n..];
                            }
                            1 => {
                                let len = usize::from(count).div_ceil(8);
                                let bits = rest
                                    .get(3..3 + len)
                                    .ok_or(FrameError::BadHeader("truncated part bitmap"))?;
                                for i in 0..count {
                                    if bits[usize::from(i) / 8] & (1 << (i % 8)) != 0 {
                                        parts.push(i);
                                    }
                                }
                                rest = &rest[3 + len..];
                            }
                            _ => return Err(FrameError::BadHeader("unknown missing-parts form")),
                        }
                        if parts.iter().any(|&p| p >= count) {
                            return Err(FrameError::BadHeader("missing part beyond the count"));
                        }
                        parts.sort_unstable();
                        parts.dedup();
                        out.push(Missing { tag, count, parts });
                    }
                    Ok(Frame::Missing(out))
                }
                CONTROL_GONE => {
                    if rest.is_empty() || rest.len() % 3 != 0 {
                        return Err(FrameError::BadHeader("truncated gone entry"));
                    }
                    Ok(Frame::Gone(
                        rest.chunks(3)
                            .map(|e| Gone {
                                tag: (u16::from(e[0] & 0x3F) << 8) | u16::from(e[1]),
                                count: u16::from(e[2]) + 1,
                            })
                            .collect(),
                    ))
                }
                other => Err(FrameError::UnknownControl(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn two_text_sms_carry_236_bytes_and_two_binary_sms_270() {
        let text = crate::text::bytes_for(160);
        assert_eq!(layout(236, text).unwrap().count, 2);
        assert_eq!(layout(237, text).unwrap().count, 3);
        assert_eq!(layout(270, BINARY_FRAME).unwrap().count, 2);
        assert_eq!(layout(271, BINARY_FRAME).unwrap().count, 3);
        assert_eq!(layout(119, text).unwrap().count, 1);
        assert_eq!(layout(120, text).unwrap().count, 2);
        assert_eq!(layout(max_message(text), text).unwrap().count, MAX_PARTS);
        assert_eq!(layout(max_message(text) + 1, text), None);
    }

    #[test]
    fn data_frames_round_trip_in_every_form() {
        for len in [0usize, 1, 119, 120, 233, 118 * 16, 118 * 16 + 1, 5000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let lay = layout(len, 123).unwrap();
            let mut back = Vec::new();
            for i in 0..lay.count {
                let f = data_frame(0x2ABC, &msg, lay, i);
                assert!(f.len() <= 123);
                match decode(&f).unwrap() {
                    Frame::Data {
                        tag,
                        index,
                        count,
                        payload,
                    } => {
                        assert_eq!(
                            (tag, usize::from(index), usize::from(count)),
                            (0x2ABC, i, lay.count)
                        );
                        back.extend(payload);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn control_frames_round_trip_and_pack() {
        let reqs = vec![
            Missing {
                tag: 7,
                count: 2,
                parts: vec![1],
            },
            Missing {
                tag: 16383,
                count: 200,
                parts: (0..150).collect(),
            },
        ];
        let frames = missing_frames(&reqs, 123);
        assert_eq!(frames.len(), 1);
        assert_eq!(decode(&frames[0]).unwrap(), Frame::Missing(reqs));
        let gone = vec![Gone { tag: 9, count: 3 }, Gone { tag: 10, count: 1 }];
        let frames = gone_frames(&gone, 123);
        assert_eq!(decode(&frames[0]).unwrap(), Frame::Gone(gone));
        let many: Vec<Missing> = (0..100)
            .map(|t| Missing {
                tag: t,
                count: 4,
                parts: vec![0, 3],
            })
            .collect();
        let frames = missing_frames(&many, 123);
        assert!(frames.len() > 1);
        let mut back = Vec::new();
        for f in frames {
            match decode(&f).unwrap() {
                Frame::Missing(m) => back.extend(m),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, many);
    }

    #[test]
    fn damage_is_detected() {
        let f = data_frame(1, b"hello", layout(5, 123).unwrap(), 0);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert_eq!(decode(&g), Err(FrameError::BadChecksum));
        }
        assert_eq!(decode(b"ok"), Err(FrameError::TooShort(2)));
    }
}
