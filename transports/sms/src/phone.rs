//! Phone numbers as gateways write them, reduced to one comparable form.

use crate::error::SmsError;
use serde::{Deserialize, Serialize};

/// A phone number in one normal form: an optional leading `+` and digits only
/// (`+15550001`). Spaces, dashes, dots, slashes and brackets are dropped, a leading `00`
/// becomes `+`, and a leading space is read as a `+` that a gateway's form decoding turned
/// into a space.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// Parses a number; errors on anything but digits and the usual separators.
    pub fn parse(raw: &str) -> Result<Phone, SmsError> {
        let bad = || SmsError::InvalidPhone {
            number: raw.to_string(),
        };
        let mut s = raw.trim_end();
        let mut plus = false;
        if s.starts_with(' ') {
            // `+` sent unencoded in a URL arrives as a space.
            plus = true;
        }
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('+') {
            plus = true;
            s = rest;
        }
        let mut digits = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '/' | '(' | ')' => {}
                _ => return Err(bad()),
            }
        }
        if !plus && digits.starts_with("00") {
            plus = true;
            digits.drain(..2);
        }
        if digits.len() < 3 || digits.len() > 20 {
            return Err(bad());
        }
        Ok(Phone(if plus { format!("+{digits}") } else { digits }))
    }

    /// The normal form (`+15550001`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without a leading `+`.
    pub fn digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// Whether two numbers name the same phone: equal digits, with or without `+` (gateways
    /// differ in whether they keep it).
    pub fn same_as(&self, other: &Phone) -> bool {
        self.digits() == other.digits()
    }
}

impl std::fmt::Display for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Phone {
    type Err = SmsError;
    fn from_str(s: &str) -> Result<Phone, SmsError> {
        Phone::parse(s)
    }
}

impl TryFrom<String> for Phone {
    type Error = SmsError;
    fn try_from(s: String) -> Result<Phone, SmsError> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// A member the transport exchanges SMS with: its number and a label for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The member's phone number.
    pub phone: Phone,
    /// How reports name it (the member's label, say `clinic-a`).
    pub label: String,
}

impl Peer {
    /// A peer with a label.
    pub fn new(phone: Phone, label: impl Into<String>) -> Peer {
        Peer {
            phone,
            label: label.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_what_gateways_write() {
        for (raw, want) in [
            ("+15550001", "+15550001"),
            (" 15550001", "+15550001"),
            ("0015550001", "+15550001"),
            ("+1 (555) 000-01", "+155500001"),
            ("15550001", "15550001"),
        ] {
            assert_eq!(Phone::parse(raw).unwrap().as_str(), want, "{raw}");
        }
        assert!(
            Phone::parse("+15550001")
                .unwrap()
                .same_as(&Phone::parse("15550001").unwrap())
        );
        for bad in ["", "MPESA", "+1", "12ab34"] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }
}
