//! Bytes as text that survives real SMS gateways: a big-number encoding in base 73 over a
//! safe subset of the GSM-7 basic alphabet.
//!
//! **The alphabet** is the 73 characters `0-9 A-Z a-z ! ( ) * , - . / : = ?`. Every one is a
//! single septet of the GSM 03.38 *basic* table and plain ASCII, so it costs one of the 160
//! characters of an SMS and looks the same in every charset a gateway may convert through
//! (GSM-7, Latin-1, UTF-8, UCS-2). Left out on purpose, although they are in the basic
//! table:
//!
//! | left out | why |
//! |---|---|
//! | `@` | GSM-7 code 0x00: C gateways truncate at it as a NUL |
//! | `$` `_` | GSM-7 codes 0x02 and 0x11: swapped with `¤` or mangled by charset tables |
//! | space, CR, LF | trimmed, squeezed (Kannel's `%a`) or rewritten (CRLF ↔ LF) |
//! | `+` `%` `&` `#` `;` | URL and form decoding (`+` turns into a space, `;` separated parameters in older CGI parsers, `#` starts a fragment) |
//! | `"` `'` `<` `>` | HTML/XML/JSON escaping in web gateways, "smart" quotes |
//! | `£ ¥ è é …`, Greek capitals | non-ASCII: lost in Latin-1/UTF-8 conversions, Greek folded to Latin look-alikes |
//!
//! (`[ ] { } \ ^ ~ | €` are in the escape table and cost two septets; `` ` `` is not in
//! GSM-7 at all.)
//!
//! **The encoding** reads `k` bytes as one big-endian number and writes it in base 73 with
//! exactly `chars_for(k)` digits, the fewest with `73^c ≥ 256^k`: log2(73) ≈ 6.19 bits per
//! character, 123 bytes in 160 characters. Because every byte needs more than one
//! character, `chars_for` is strictly increasing, so the decoder knows `k` from the number
//! of characters alone; a length no `k` maps to is malformed.

/// The 73 safe characters, in digit order.
pub const ALPHABET: &[u8; 73] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!()*,-./:=?";

/// The base of the text encoding (the size of [`ALPHABET`]).
pub const BASE: u32 = ALPHABET.len() as u32;

/// Bits carried by one character: log2(73).
pub fn bits_per_char() -> f64 {
    f64::from(BASE).log2()
}

/// Characters needed for `k` bytes: the smallest `c` with `73^c ≥ 256^k`.
pub fn chars_for(k: usize) -> usize {
    // 8k / log2(73) is never an integer (log2(73) is irrational), and unit tests check the
    // result against exact big-number powers for every length an SMS can carry.
    ((k as f64 * 8.0) / bits_per_char()).ceil() as usize
}

/// Bytes that `c` characters carry: the largest `k` with `chars_for(k) ≤ c`.
pub fn bytes_for(c: usize) -> usize {
    ((c as f64 * bits_per_char()) / 8.0).floor() as usize
}

fn digit_of(c: u8) -> Option<u8> {
    Some(match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'a'..=b'z' => c - b'a' + 36,
        b'!' => 62,
        b'(' => 63,
        b')' => 64,
        b'*' => 65,
        b',' => 66,
        b'-' => 67,
        b'.' => 68,
        b'/' => 69,
        b':' => 70,
        b'=' => 71,
        b'?' => 72,
        _ => return None,
    })
}

/// Encodes bytes as `chars_for(bytes.len())` characters of [`ALPHABET`].
pub fn encode(bytes: &[u8]) -> String {
    let n = chars_for(bytes.len());
    let mut num = bytes.to_vec();
    let mut out = vec![ALPHABET[0]; n];
    let mut start = 0; // leading zero bytes of `num` already consumed
    for slot in out.iter_mut().rev() {
        while start < num.len() && num[start] == 0 {
            start += 1;
        }
        if start == num.len() {
            break;
        }
        let mut rem: u32 = 0;
        for b in &mut num[start..] {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / BASE) as u8;
            rem = cur % BASE;
        }
        *slot = ALPHABET[rem as usize];
    }
    // `out` is ASCII by construction.
    out.into_iter().map(char::from).collect()
}

/// Why a text does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextError {
    /// A character outside the alphabet (with its position).
    BadChar(usize, char),
    /// No byte length encodes to this many characters.
    BadLength(usize),
    /// The number is larger than its length allows.
    Overflow,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::BadChar(i, c) => write!(f, "character {c:?} at position {i} is not ferry's"),
            TextError::BadLength(n) => write!(f, "{n} characters is not a length ferry writes"),
            TextError::Overflow => f.write_str("the encoded number is out of range"),
        }
    }
}

/// Decodes a text written by [`encode`].
pub fn decode(text: &str) -> Result<Vec<u8>, TextError> {
    let chars = text.as_bytes();
    let n = chars.len();
    let k = bytes_for(n);
    if chars_for(k) != n {
        return Err(TextError::BadLength(n));
    }
    let mut num = vec![0u8; k];
    for (i, &c) in chars.iter().enumerate() {
        let Some(d) = digit_of(c) else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(TextError::BadChar(i, ch));
        };
        let mut carry = u32::from(d);
        for b in num.iter_mut().rev() {
            let cur = u32::from(*b) * BASE + carry;
            *b = cur as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return Err(TextError::Overflow);
        }
    }
    Ok(num)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact `base^exp` as big-endian bytes.
    fn pow(base: u32, exp: usize) -> Vec<u8> {
        let mut num = vec![1u8];
        for _ in 0..exp {
            let mut carry = 0u32;
            for b in num.iter_mut().rev() {
                let cur = u32::from(*b) * base + carry;
                *b = cur as u8;
                carry = cur >> 8;
            }
            while carry > 0 {
                num.insert(0, carry as u8);
                carry >>= 8;
            }
        }
        num
    }

    fn ge(a: &[u8], b: &[u8]) -> bool {
        let a = &a[a.iter().position(|&x| x != 0).unwrap_or(a.len())..];
        let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len())..];
        a.len() > b.len() || (a.len() == b.len() && a >= b)
    }

    #[test]
    fn lengths_are_exact_for_every_sms_size() {
        for k in 0..=400 {
            let c = chars_for(k);
            let two56k = pow(256, k);
            assert!(ge(&pow(BASE, c), &two56k), "73^{c} < 256^{k}");
            if c > 0 {
                assert!(
                    !ge(&pow(BASE, c - 1), &two56k),
                    "{c} is not minimal for {k}"
                );
            }
            assert_eq!(bytes_for(c), k, "bytes_for({c})");
        }
    }

    #[test]
    fn the_alphabet_is_safe_and_its_digits_invert() {
        for (i, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(digit_of(c), Some(i as u8));
            assert!(c.is_ascii_graphic());
            assert!(!b"@$_+%&#;\"'<>[]{}\\^~|`".contains(&c));
        }
        assert_eq!(bytes_for(160), 123);
    }

    #[test]
    fn round_trips_edge_values() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![255],
            vec![0; 50],
            vec![255; 123],
            (0..=255u8).collect(),
            (0..123).map(|i| (i * 37 % 251) as u8).collect(),
        ];
        for bytes in cases {
            let text = encode(&bytes);
            assert_eq!(text.len(), chars_for(bytes.len()));
            assert_eq!(decode(&text).unwrap(), bytes);
        }
    }

    #[test]
    fn rejects_foreign_text() {
        assert!(matches!(
            decode("Hello there"),
            Err(TextError::BadChar(5, ' '))
        ));
        assert_eq!(decode("a"), Err(TextError::BadLength(1)));
        assert_eq!(decode("abcde"), Err(TextError::BadLength(5)));
        // The largest 2-character number (73^2 - 1 = 5328) overflows one byte.
        assert_eq!(decode("??"), Err(TextError::Overflow));
    }
}
