//! Link encapsulation: how frames are delimited on the byte stream.
//!
//! - **Raw** (cables, transparent radio modems): SLIP-style, `0xC0 frame 0xC0`, with `0xC0`
//!   inside sent as `0xDB 0xDC` and `0xDB` as `0xDB 0xDD`. A damaged delimiter costs at most
//!   the two frames around it: the receiver resynchronises on the next `0xC0`.
//! - **KISS** (TNCs such as Direwolf): the same escaping, a command byte `0x00` (port 0,
//!   data) after the opening `0xC0`, and the frame carried as the information field of an
//!   AX.25 UI frame (control `0x03`, PID `0xF0`) from the station's callsign to `FERRY`.
//!   The TNC adds the AX.25 FCS and HDLC flags on the air.

use std::fmt;
use std::str::FromStr;

const FEND: u8 = 0xC0;
const FESC: u8 = 0xDB;
const TFEND: u8 = 0xDC;
const TFESC: u8 = 0xDD;
/// AX.25 header of a UI frame without digipeaters: two addresses, control, PID.
pub const AX25_HEADER: usize = 16;
/// Destination of every ferry AX.25 frame.
const DEST: &str = "FERRY";

/// An amateur-radio station identifier: up to six letters and digits and an SSID 0–15,
/// written `N0CALL` or `N0CALL-7`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Callsign {
    call: String,
    ssid: u8,
}

impl Callsign {
    fn encode(&self, last: bool, command: bool) -> [u8; 7] {
        let mut a = [b' ' << 1; 7];
        for (i, c) in self.call.bytes().enumerate() {
            a[i] = c << 1;
        }
        a[6] = 0x60 | (self.ssid << 1) | u8::from(last) | if command { 0x80 } else { 0 };
        a
    }

    fn decode(a: &[u8]) -> Option<Callsign> {
        let mut call = String::new();
        for &b in &a[..6] {
            let c = (b >> 1) as char;
            if c == ' ' {
                continue;
            }
            if !c.is_ascii_alphanumeric() {
                return None;
            }
            call.push(c);
        }
        Some(Callsign {
            call,
            ssid: (a[6] >> 1) & 0x0F,
        })
    }
}

impl fmt::Display for Callsign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ssid == 0 {
            f.write_str(&self.call)
        } else {
            write!(f, "{}-{}", self.call, self.ssid)
        }
    }
}

impl FromStr for Callsign {
    type Err = String;

    fn from_str(s: &str) -> Result<Callsign, String> {
        let (call, ssid) = match s.split_once('-') {
            Some((c, n)) => (
                c,
                n.parse::<u8>().map_err(|_| format!("bad SSID in {s:?}"))?,
            ),
            None => (s, 0),
        };
        if call.is_empty() || call.len() > 6 || !call.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "{s:?} is not a callsign (1–6 letters and digits, optional -SSID)"
            ));
        }
        if ssid > 15 {
            return Err(format!("SSID of {s:?} must be 0–15"));
        }
        Ok(Callsign {
            call: call.to_ascii_uppercase(),
            ssid,
        })
    }
}

/// How frames are put on the byte stream.
#[derive(Clone, Debug)]
pub(crate) enum Encap {
    Raw,
    Kiss {
        header: [u8; AX25_HEADER],
        own: Callsign,
    },
}

fn escape_into(out: &mut Vec<u8>, data: &[u8]) {
    for &b in data {
        match b {
            FEND => out.extend_from_slice(&[FESC, TFEND]),
            FESC => out.extend_from_slice(&[FESC, TFESC]),
            b => out.push(b),
        }
    }
}

impl Encap {
    pub(crate) fn kiss(own: Callsign) -> Encap {
        let dest = Callsign {
            call: DEST.into(),
            ssid: 0,
        };
        let mut header = [0u8; AX25_HEADER];
        header[..7].copy_from_slice(&dest.encode(false, true));
        header[7..14].copy_from_slice(&own.encode(true, false));
        header[14] = 0x03;
        header[15] = 0xF0;
        Encap::Kiss { header, own }
    }

    /// The bytes written to the device for one frame.
    pub(crate) fn wrap(&self, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len() + frame.len() / 64 + 24);
        out.push(FEND);
        match self {
            Encap::Raw => escape_into(&mut out, frame),
            Encap::Kiss { header, .. } => {
                out.push(0x00);
                escape_into(&mut out, header);
                escape_into(&mut out, frame);
            }
        }
        out.push(FEND);
        out
    }

    pub(crate) fn own_callsign(&self) -> Option<&Callsign> {
        match self {
            Encap::Raw => None,
            Encap::Kiss { own, .. } => Some(own),
        }
    }
}

/// What the deframer found between two delimiters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unwrapped {
    /// A frame's bytes (not yet checked), and the AX.25 source in KISS mode.
    Frame {
        src: Option<Callsign>,
        bytes: Vec<u8>,
    },
    /// Bytes that cannot be a frame (bad escape, too long, not ours).
    Garbage,
    /// A valid AX.25 frame of some other application on the channel: not counted as damage.
    Foreign,
}

/// Splits a received byte stream into frames.
pub(crate) struct Deframer {
    kiss: bool,
    max: usize,
    buf: Vec<u8>,
    esc: bool,
    bad: bool,
}

impl Deframer {
    pub(crate) fn new(kiss: bool, max: usize) -> Deframer {
        Deframer {
            kiss,
            max,
            buf: Vec::new(),
            esc: false,
            bad: false,
        }
    }

    /// Feeds bytes; complete frames are appended to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<Unwrapped>) {
        for &b in data {
            if b == FEND {
                if !self.buf.is_empty() || self.bad {
                    out.push(self.finish());
                }
                self.buf.clear();
                self.esc = false;
                self.bad = false;
                continue;
            }
            if self.bad {
                continue;
            }
            let b = if self.esc {
                self.esc = false;
                match b {
                    TFEND => FEND,
                    TFESC => FESC,
                    _ => {
                        self.bad = true;
                        continue;
                    }
                }
            } else if b == FESC {
                self.esc = true;
                continue;
            } else {
                b
            };
            if self.buf.len() >= self.max {
                self.bad = true;
                continue;
            }
            self.buf.push(b);
        }
    }

    fn finish(&mut self) -> Unwrapped {
        if self.bad || self.esc {
            return Unwrapped::Garbage;
        }
        let buf = std::mem::take(&mut self.buf);
        if !self.kiss {
            return Unwrapped::Frame {
                src: None,
                bytes: buf,
            };
        }
        // KISS: command byte, then AX.25.
        if buf.is_empty() || buf[0] & 0x0F != 0 {
            return Unwrapped::Foreign;
        }
        let ax = &buf[1..];
        let mut i = 0;
        let mut addrs = Vec::new();
        loop {
            if ax.len() < i + 7 || addrs.len() == 10 {
                return Unwrapped::Garbage;
            }
            addrs.push(&ax[i..i + 7]);
            let last = ax[i + 6] & 1 != 0;
            i += 7;
            if last {
                break;
            }
        }
        if addrs.len() < 2 || ax.len() < i + 2 {
            return Unwrapped::Garbage;
        }
        let (Some(dest), Some(src)) = (Callsign::decode(addrs[0]), Callsign::decode(addrs[1]))
        else {
            return Unwrapped::Foreign;
        };
        if dest.call != DEST || ax[i] & !0x10 != 0x03 || ax[i + 1] != 0xF0 {
            return Unwrapped::Foreign;
        }
        Unwrapped::Frame {
            src: Some(src),
            bytes: ax[i + 2..].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_with_special_bytes_and_resync() {
        let e = Encap::Raw;
        let f1 = vec![1, FEND, 2, FESC, 3];
        let f2 = vec![FESC, FESC, FEND];
        let mut stream = vec![0x55, FESC, 0x01]; // noise with a bad escape before the first delimiter
        stream.extend(e.wrap(&f1));
        stream.extend(e.wrap(&f2));
        let mut d = Deframer::new(false, 100);
        let mut out = Vec::new();
        for chunk in stream.chunks(3) {
            d.push(chunk, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Unwrapped::Garbage,
                Unwrapped::Frame {
                    src: None,
                    bytes: f1
                },
                Unwrapped::Frame {
                    src: None,
                    bytes: f2
                },
            ]
        );
    }

    #[test]
    fn kiss_wraps_in_ax25_ui_and_unwraps() {
        let me: Callsign = "n0call-7".parse().unwrap();
        assert_eq!(me.to_string(), "N0CALL-7");
        let e = Encap::kiss(me.clone());
        let wire = e.wrap(&[FEND, 9]);
        assert_eq!(&wire[..2], &[FEND, 0x00]);
        let mut d = Deframer::new(true, 4096);
        let mut out = Vec::new();
        d.push(&wire, &mut out);
        assert_eq!(
            out,
            vec![Unwrapped::Frame {
                src: Some(me),
                bytes: vec![FEND, 9]
            }]
        );
    }

    #[test]
    fn callsigns_are_checked() {
        for bad in ["", "TOOLONG1", "N0-CALL", "N0CALL-16", "N0 CAL"] {
            assert!(bad.parse::<Callsign>().is_err(), "{bad}");
        }
        assert!("DL1ABC-15".parse::<Callsign>().is_ok());
    }

    #[test]
    fn oversized_frames_are_garbage() {
        let mut d = Deframer::new(false, 4);
        let mut out = Vec::new();
        d.push(&Encap::Raw.wrap(&[1, 2, 3, 4, 5]), &mut out);
        d.push(&Encap::Raw.wrap(&[1, 2, 3, 4]), &mut out);
        assert_eq!(
            out,
            vec![
                Unwrapped::Garbage,
                Unwrapped::Frame {
                    src: None,
                    bytes: vec![1, 2, 3, 4]
                }
            ]
        );
    }
}
