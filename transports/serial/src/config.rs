//! The `[serial]` table of ferry.toml, and the values derived from it.

use crate::error::SerialError;
use crate::link::Callsign;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of a serial or radio link. Every field has a default, so an empty `[serial]`
/// table (or none) is valid; the CLI overrides fields with its flags.
///
/// ```
/// let cfg: ferry_transport_serial::SerialConfig = toml::from_str(r#"
///     device = "/dev/ttyUSB0"
///     kiss = true
///     callsign = "N0CALL-1"
///     rate = 120
///     duty_cycle = 10.0
/// "#).unwrap();
/// assert_eq!(cfg.mtu, 200);
/// cfg.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialConfig {
    /// Serial device or pseudo-terminal (`/dev/ttyUSB0`, `/dev/pts/3`, a socat link).
    pub device: Option<PathBuf>,
    /// Line speed in bits per second (8N1). Default 9600.
    pub baud: u32,
    /// Talk KISS to a TNC (Direwolf, a hardware TNC) instead of raw framing. Default false.
    pub kiss: bool,
    /// Station callsign (`N0CALL` or `N0CALL-7`): the AX.25 source address in KISS mode,
    /// where it is required.
    pub callsign: Option<String>,
    /// Message bytes carried by one frame (default 200). A frame adds 17 bytes, plus 16 of
    /// AX.25 in KISS mode; choose 230 for a LoRa modem with 255-byte packets.
    pub mtu: u16,
    /// Send-rate cap in bytes per second. Default: the line speed (baud / 10) in raw mode;
    /// 145 (AFSK 1200 on the air) in KISS mode, where the line to the TNC is faster than
    /// the radio.
    pub rate: Option<u32>,
    /// Largest share of airtime, in percent, over any sliding hour (1.0 for EU868 LoRa).
    /// Default: no limit.
    pub duty_cycle: Option<f64>,
    /// Seconds the other end may stay silent while this end waits for it, before the
    /// session gives up (received parts are kept). Default 60.
    pub timeout: u64,
    /// Frames sent before waiting for an acknowledgement (1–32). Default 8: short enough
    /// for half-duplex turnarounds, long enough to keep a duplex cable busy.
    pub window: u16,
}

impl Default for SerialConfig {
    fn default() -> SerialConfig {
        SerialConfig {
            device: None,
            baud: 9600,
            kiss: false,
            callsign: None,
            mtu: 200,
            rate: None,
            duty_cycle: None,
            timeout: 60,
            window: 8,
        }
    }
}

/// Default on-air byte rate behind a KISS TNC: AFSK 1200 bit/s less HDLC bit stuffing.
pub(crate) const KISS_DEFAULT_RATE: u32 = 145;
/// Largest `mtu`: AX.25 frames must stay within Direwolf's 2123 bytes.
pub const MAX_MTU: u16 = 2048;
/// Smallest `mtu`.
pub const MIN_MTU: u16 = 32;
/// Largest `window`.
pub const MAX_WINDOW: u16 = 32;

fn bad(field: &'static str, problem: impl Into<String>) -> SerialError {
    SerialError::Config {
        field,
        problem: problem.into(),
    }
}

impl SerialConfig {
    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<(), SerialError> {
        if self.baud == 0 {
            return Err(bad("baud", "must be a positive number of bits per second"));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(bad(
                "mtu",
                format!("{} is outside {MIN_MTU}–{MAX_MTU}", self.mtu),
            ));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(bad(
                "window",
                format!("{} is outside 1–{MAX_WINDOW}", self.window),
            ));
        }
        if self.rate == Some(0) {
            return Err(bad("rate", "must be at least 1 byte per second"));
        }
        if let Some(d) = self.duty_cycle {
            if !(d > 0.0 && d <= 100.0) {
                return Err(bad(
                    "duty_cycle",
                    format!("{d} is not a percentage in (0, 100]"),
                ));
            }
        }
        if self.timeout == 0 {
            return Err(bad("timeout", "must be at least 1 second"));
        }
        match (&self.callsign, self.kiss) {
            (Some(c), _) => {
                c.parse::<Callsign>().map_err(|e| bad("callsign", e))?;
            }
            (None, true) => {
                return Err(bad(
                    "callsign",
                    "KISS mode needs a callsign (--callsign N0CALL)",
                ));
            }
            (None, false) => {}
        }
        Ok(())
    }

    /// The send-rate cap in bytes per second, after defaults.
    pub fn effective_rate(&self) -> u32 {
        let line = (self.baud / 10).max(1);
        match (self.rate, self.kiss) {
            (Some(r), false) => r.min(line),
            (None, false) => line,
            (Some(r), true) => r,
            (None, true) => KISS_DEFAULT_RATE,
        }
    }

    /// How long the other end may stay silent.
    pub fn silence_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    pub(crate) fn parsed_callsign(&self) -> Option<Callsign> {
        self.callsign.as_deref().and_then(|c| c.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rejects_each_bad_field_by_name() {
        let cases: Vec<(&str, SerialConfig)> = vec![
            (
                "baud",
                SerialConfig {
                    baud: 0,
                    ..Default::default()
                },
            ),
            (
                "mtu",
                SerialConfig {
                    mtu: 4000,
                    ..Default::default()
                },
            ),
            (
                "window",
                SerialConfig {
                    window: 0,
                    ..Default::default()
                },
            ),
            (
                "rate",
                SerialConfig {
                    rate: Some(0),
                    ..Default::default()
                },
            ),
            (
                "duty_cycle",
                SerialConfig {
                    duty_cycle: Some(150.0),
                    ..Default::default()
                },
            ),
            (
                "timeout",
                SerialConfig {
                    timeout: 0,
                    ..Default::default()
                },
            ),
            (
                "callsign",
                SerialConfig {
                    kiss: true,
                    ..Default::default()
                },
            ),
            (
                "callsign",
                SerialConfig {
                    callsign: Some("bad call".into()),
                    ..Default::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            match cfg.validate() {
                Err(SerialError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        SerialConfig::default().validate().unwrap();
    }

    #[test]
    fn rate_defaults_follow_the_link() {
        let raw = SerialConfig {
            baud: 1200,
            ..Default::default()
        };
        assert_eq!(raw.effective_rate(), 120);
        assert_eq!(
            SerialConfig {
                rate: Some(50),
                ..raw.clone()
            }
            .effective_rate(),
            50
        );
        assert_eq!(
            SerialConfig {
                rate: Some(500),
                ..raw
            }
            .effective_rate(),
            120
        );
        let kiss = SerialConfig {
            kiss: true,
            baud: 115_200,
            ..Default::default()
        };
        assert_eq!(kiss.effective_rate(), KISS_DEFAULT_RATE);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<SerialConfig>("bauds = 9600").is_err());
        let c: SerialConfig = toml::from_str("").unwrap();
        assert_eq!(c, SerialConfig::default());
    }
}
