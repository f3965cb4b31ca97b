//! Airtime of frames on common links, to plan transfers and to check duty-cycle budgets.
//! The figures count the bits each link puts on the air for the bytes given.

use crate::crc::crc16_x25;
use std::time::Duration;

/// Time `bytes` take on an asynchronous serial line (8N1: 10 bits per byte).
pub fn serial(bytes: usize, baud: u32) -> Duration {
    Duration::from_secs_f64(bytes as f64 * 10.0 / f64::from(baud))
}

/// Time an AX.25 frame (addresses, control, PID, information; without FCS) takes as HDLC
/// at `bit_rate` (1200 for AFSK 1200): the FCS is added, bits are stuffed exactly as the
/// TNC does, and one opening and one closing flag are counted. A TNC also keys up the
/// transmitter for TXDELAY (Direwolf: 300 ms) once per transmission, not counted here.
pub fn ax25_hdlc(frame: &[u8], bit_rate: u32) -> Duration {
    let fcs = crc16_x25(frame).to_le_bytes();
    let mut bits = 16u64; // two flags
    let mut ones = 0;
    for &byte in frame.iter().chain(fcs.iter()) {
        for i in 0..8 {
            bits += 1;
            if byte >> i & 1 == 1 {
                ones += 1;
                if ones == 5 {
                    bits += 1;
                    ones = 0;
                }
            } else {
                ones = 0;
            }
        }
    }
    Duration::from_secs_f64(bits as f64 / f64::from(bit_rate))
}

/// A LoRa modulation (Semtech SX127x/SX126x time-on-air formula, AN1200.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoRa {
    /// Spreading factor, 6–12.
    pub spreading_factor: u8,
    /// Bandwidth in hertz (125 000 is the usual).
    pub bandwidth_hz: u32,
    /// Coding rate denominator: 5 for 4/5 … 8 for 4/8.
    pub coding_rate: u8,
    /// Preamble symbols (8 is the usual).
    pub preamble: u16,
    /// Explicit header (the usual).
    pub explicit_header: bool,
    /// Payload CRC (the usual).
    pub crc: bool,
}

impl LoRa {
    /// SF9, 125 kHz, CR 4/5, preamble 8, explicit header, CRC on.
    pub fn sf9_125khz() -> LoRa {
        LoRa {
            spreading_factor: 9,
            bandwidth_hz: 125_000,
            coding_rate: 5,
            preamble: 8,
            explicit_header: true,
            crc: true,
        }
    }

    /// Time on air of one packet of `payload` bytes (at most 255).
    pub fn airtime(&self, payload: usize) -> Duration {
        let sf = f64::from(self.spreading_factor);
        let t_sym = f64::from(1u32 << self.spreading_factor) / f64::from(self.bandwidth_hz);
        let de = if t_sym > 0.016 { 1.0 } else { 0.0 };
        let ih = if self.explicit_header { 0.0 } else { 1.0 };
        let crc = if self.crc { 1.0 } else { 0.0 };
        let num = 8.0 * payload as f64 - 4.0 * sf + 28.0 + 16.0 * crc - 20.0 * ih;
        let per = (num / (4.0 * (sf - 2.0 * de))).ceil().max(0.0) * f64::from(self.coding_rate);
        let symbols = f64::from(self.preamble) + 4.25 + 8.0 + per;
        Duration::from_secs_f64(symbols * t_sym)
    }
}

/// What the DATA frames carrying one message cost on the air (a session adds its hellos,
/// offers, acknowledgements and close, a few hundred bytes, whatever the message).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MessageAirtime {
    /// DATA frames.
    pub frames: usize,
    /// Bytes written to a raw serial line (framing and escapes included).
    pub raw_bytes: usize,
    /// On a 1200-baud serial line (8N1).
    pub serial_1200: Duration,
    /// As AX.25 UI frames over AFSK 1200 (a TNC such as Direwolf), without TXDELAY.
    pub afsk_1200: Duration,
    /// On LoRa SF9, 125 kHz, one packet per frame (a frame longer than a LoRa packet's
    /// 255 bytes is counted as the packets it needs).
    pub lora_sf9: Duration,
}

/// The airtime of the DATA frames that carry `message` at `mtu` payload bytes per frame,
/// with the frames' real headers and escapes (the sequence and offset fields are counted as
/// they would be for a fresh session).
pub fn message(message: &[u8], mtu: usize) -> MessageAirtime {
    use crate::link::{AX25_HEADER, Encap};
    use crate::wire::{Body, Frame};
    let raw = Encap::Raw;
    let lora = LoRa::sf9_125khz();
    let mut out = MessageAirtime {
        frames: 0,
        raw_bytes: 0,
        serial_1200: Duration::ZERO,
        afsk_1200: Duration::ZERO,
        lora_sf9: Duration::ZERO,
    };
    let mut offset = 0usize;
    for (seq, chunk) in message.chunks(mtu.max(1)).enumerate() {
        let frame = Frame {
            epoch: 1,
            seq: seq as u16,
            poll: false,
            body: Body::Data {
                slot: 0,
                offset: offset as u32,
                data: chunk.to_vec(),
            },
        }
        .encode();
        offset += chunk.len();
        let wire = raw.wrap(&frame).len();
        let mut ax = vec![0x40u8; AX25_HEADER];
        ax.extend_from_slice(&frame);
        out.frames += 1;
        out.raw_bytes += wire;
        out.serial_1200 += serial(wire, 1200);
        out.afsk_1200 += ax25_hdlc(&ax, 1200);
        out.lora_sf9 += (0..wire.div_ceil(255))
            .map(|i| lora.airtime((wire - i * 255).min(255)))
            .sum::<Duration>();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_matches_the_published_figures() {
        // ANCHORS.md: a full 255-byte frame at 125 kHz, CR 4/5: SF7 0.40 s, SF9 1.25 s, SF12 9.0 s.
        let sf = |s| LoRa {
            spreading_factor: s,
            ..LoRa::sf9_125khz()
        };
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(sf(7).airtime(255)) / 10, 39); // 397 ms
        assert_eq!(ms(sf(9).airtime(255)) / 10, 125); // 1.25 s
        assert_eq!(ms(sf(12).airtime(255)) / 100, 90); // 9.0 s
    }

    #[test]
    fn a_message_takes_one_data_frame_per_mtu() {
        let m: Vec<u8> = (0..450u32).map(|i| (i * 7) as u8).collect();
        let a = message(&m, 200);
        assert_eq!(a.frames, 3);
        // Payload, 17 bytes of frame overhead and two delimiters per frame, and escapes.
        assert!(
            a.raw_bytes >= 450 + 3 * (crate::DATA_FRAME_OVERHEAD + 2),
            "{a:?}"
        );
        assert!(
            a.raw_bytes < 450 + 3 * (crate::DATA_FRAME_OVERHEAD + 2) + 20,
            "{a:?}"
        );
        let diff = a.serial_1200.abs_diff(serial(a.raw_bytes, 1200));
        assert!(diff < Duration::from_micros(10), "{a:?}");
        // AFSK adds an AX.25 header and HDLC stuffing; LoRa pays a preamble per packet.
        assert!(a.afsk_1200 > Duration::from_secs_f64(a.raw_bytes as f64 * 8.0 / 1200.0));
        assert!(a.lora_sf9 > LoRa::sf9_125khz().airtime(200) * 2);
    }

    #[test]
    fn hdlc_counts_stuffed_bits() {
        // 0xFF bytes stuff one bit per five ones.
        let plain = ax25_hdlc(&[0x00; 30], 1200);
        let ones = ax25_hdlc(&[0xFF; 30], 1200);
        assert!(ones > plain);
        assert_eq!(serial(120, 1200), Duration::from_secs(1));
    }
}
