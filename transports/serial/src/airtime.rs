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
    fn hdlc_counts_stuffed_bits() {
        // 0xFF bytes stuff one bit per five ones.
        let plain = ax25_hdlc(&[0x00; 30], 1200);
        let ones = ax25_hdlc(&[0xFF; 30], 1200);
        assert!(ones > plain);
        assert_eq!(serial(120, 1200), Duration::from_secs(1));
    }
}
