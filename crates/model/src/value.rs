//! Field values and their compact encoding.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a field holds.
///
/// Floats are always finite: decoders reject NaN and infinities, and [`Value::parse`] turns
/// such text into a string.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "CompactValue")]
pub enum Value {
    /// No value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A finite 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// Why a piece of text could not become a value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ValueParseError {
    /// A float was NaN or infinite.
    #[error("numbers must be finite")]
    NotFinite,
    /// A decimal had a mantissa of 2^53 or more or an exponent above 22.
    #[error("decimal number out of range")]
    BadDecimal,
}

impl Value {
    /// Reads a value typed on the command line: an integer, a float, `true`, `false` or `null`;
    /// anything else is a string. Text in double quotes is always a string (the quotes are
    /// removed), so `'"0042"'` stays the text `0042`.
    ///
    /// ```
    /// use ferry_model::Value;
    /// assert_eq!(Value::parse("34"), Value::Int(34));
    /// assert_eq!(Value::parse("61.5"), Value::Float(61.5));
    /// assert_eq!(Value::parse("true"), Value::Bool(true));
    /// assert_eq!(Value::parse("0042"), Value::Str("0042".into()));
    /// assert_eq!(Value::parse("\"34\""), Value::Str("34".into()));
    /// assert_eq!(Value::parse("Kisumu Ndogo"), Value::Str("Kisumu Ndogo".into()));
    /// ```
    pub fn parse(text: &str) -> Value {
        match text {
            "null" => return Value::Null,
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
        if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
            return Value::Str(text[1..text.len() - 1].to_string());
        }
        if is_canonical_int(text) {
            if let Ok(i) = text.parse::<i64>() {
                return Value::Int(i);
            }
        }
        if is_plain_float(text) {
            if let Ok(f) = text.parse::<f64>() {
                if f.is_finite() {
                    return Value::Float(f);
                }
            }
        }
        Value::Str(text.to_string())
    }

    /// The text that [`Value::parse`] reads back as exactly this value, as one would type it
    /// after `FIELD=`: `None` for bytes, which have no such text. Text that would read as
    /// something else (`34`, `true`, `null`, the empty string, text already in double quotes)
    /// is put in double quotes, so it stays text; floats always show a fraction or an
    /// exponent (`2.0`, `1e20`), so they stay floats.
    ///
    /// ```
    /// use ferry_model::Value;
    /// assert_eq!(Value::Str("34".into()).to_typed_text().unwrap(), "\"34\"");
    /// assert_eq!(Value::Str("Kisumu".into()).to_typed_text().unwrap(), "Kisumu");
    /// assert_eq!(Value::Float(2.0).to_typed_text().unwrap(), "2.0");
    /// for v in [Value::Int(34), Value::Str(String::new()), Value::Float(1e20)] {
    ///     assert_eq!(Value::parse(&v.to_typed_text().unwrap()), v);
    /// }
    /// ```
    pub fn to_typed_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            // Debug is the shortest text that reads back to the same float, and it always
            // has a `.` or an exponent (`2.0`, `1e20`, `-0.0`).
            Value::Float(x) => format!("{x:?}"),
            Value::Str(s) if s.is_empty() || Value::parse(s) != *self => format!("\"{s}\""),
            Value::Str(s) => s.clone(),
            Value::Bytes(_) => return None,
        })
    }

    /// A float value, refusing NaN and infinities.
    pub fn float(f: f64) -> Result<Value, ValueParseError> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(ValueParseError::NotFinite)
        }
    }

    /// The name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
        }
    }

    /// A total order used to break ties deterministically: by type, then by value.
    pub fn total_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Int(_) => 2,
                Value::Float(_) => 3,
                Value::Str(_) => 4,
                Value::Bytes(_) => 5,
            }
        }
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)).then(Ordering::Equal),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e16 => write!(f, "{x:.1}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

fn is_canonical_int(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

fn is_plain_float(t: &str) -> bool {
    let body = t.strip_prefix('-').unwrap_or(t);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let int_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    int_ok && frac_ok && exp_ok && (frac.is_some() || exp.is_some())
}

// wire-format: begin
/// Exact powers of ten representable in an f64 (10^0 ..= 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
// wire-format: end

// wire-format: begin
/// Writes `x` as `mantissa / 10^exp` when that is exact and short (e.g. 61.5 → (615, 1)), so
/// that typical measurements take 2–4 bytes instead of 8.
pub(crate) fn to_decimal(x: f64) -> Option<(i64, u8)> {
    if !x.is_finite() || (x == 0.0 && x.is_sign_negative()) {
        return None;
    }
    match decimal_exact(x) {
        Some(found) => found,
        None => decimal_by_text(x),
    }
}

/// [`to_decimal`] through the shortest text that reads back to the same float (what
/// `Display` prints, without exponent): the definition.
fn decimal_by_text(x: f64) -> Option<(i64, u8)> {
    let text = format!("{x}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    if frac.len() > 22 || int.len() + frac.len() > 17 {
        return None;
    }
    let mantissa: i64 = format!("{int}{frac}").parse().ok()?;
    if mantissa.unsigned_abs() >= 1 << 53 {
        return None;
    }
    let exp = frac.len() as u8;
    (from_decimal(mantissa, exp)? == x).then_some((mantissa, exp))
}
// wire-format: end

/// [`decimal_by_text`] without text, for a finite `x` other than −0: the shortest decimal
/// that reads back to `x` has the fewest fraction digits `e` for which a multiple of 10^−e
/// reads back to it, and among two such multiples `Display` prints the nearer. `x · 10^e`
/// is computed exactly (x = M · 2^E with M < 2^53, and 10^e ≤ 10^22 < 2^74, so the product
/// fits 128 bits); reading back is `from_decimal`, the correctly rounded quotient, as
/// parsing is. `None` when it cannot tell (two candidates equally near): ask the text.
fn decimal_exact(x: f64) -> Option<Option<(i64, u8)>> {
    let a = x.abs();
    let bits = a.to_bits();
    let (exp_bits, frac_bits) = ((bits >> 52) as i32, bits & ((1 << 52) - 1));
    let (m, e2) = match exp_bits {
        0 => (frac_bits, -1074),
        _ => (frac_bits | (1 << 52), exp_bits - 1075),
    };
    let sign = i64::from(x < 0.0);
    if e2 >= 0 || m == 0 {
        // An integer: printed in full; a mantissa of 2^53 or more is refused either way.
        return Some((a < (1u64 << 53) as f64).then(|| {
            let v = a as i64;
            (if x < 0.0 { -v } else { v }, 0)
        }));
    }
    let k = (-e2) as u32;
    for e in 0..=22u8 {
        let num = u128::from(m) * 10u128.pow(u32::from(e));
        let (q, r, half) = match k {
            k if k < 128 => (num >> k, num & ((1u128 << k) - 1), 1u128 << (k - 1)),
            // Below 2^−127 of a unit: the quotient is 0 and the remainder all of it.
            _ => (0, num, u128::MAX),
        };
        if q + 1 >= 1 << 53 {
            // A candidate past the mantissa bound: which one the text would print decides
            // whether it refuses, so let the text decide.
            return None;
        }
        let reads_back = |c: u128| from_decimal(c as i64, e) == Some(a);
        let (lo, hi) = (reads_back(q), r != 0 && reads_back(q + 1));
        let c = match (lo, hi) {
            (false, false) => continue,
            (true, false) => q,
            (false, true) => q + 1,
            (true, true) if r < half => q,
            (true, true) if r > half => q + 1,
            (true, true) => return None,
        };
        // What `Display` prints: the integer part (at least "0", with the sign) and `e`
        // fraction digits.
        let int_digits = match c / 10u128.pow(u32::from(e)) {
            0 => 1,
            n => n.ilog10() as i64 + 1,
        };
        if int_digits + sign + i64::from(e) > 17 {
            return Some(None);
        }
        let v = c as i64;
        return Some(Some((if x < 0.0 { -v } else { v }, e)));
    }
    // More than 22 fraction digits.
    Some(None)
}

// wire-format: begin
/// The inverse of [`to_decimal`]: exact and platform-independent, because both operands are
/// exactly representable and IEEE division rounds correctly.
pub(crate) fn from_decimal(mantissa: i64, exp: u8) -> Option<f64> {
    if mantissa.unsigned_abs() >= 1 << 53 {
        return None;
    }
    let p = *POW10.get(exp as usize)?;
    Some(mantissa as f64 / p)
}

/// Serialized exactly as [`CompactValue`], without copying the value first.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleVariant;
        const NAME: &str = "CompactValue";
        match self {
            Value::Null => s.serialize_unit_variant(NAME, 0, "Null"),
            Value::Bool(false) => s.serialize_unit_variant(NAME, 1, "False"),
            Value::Bool(true) => s.serialize_unit_variant(NAME, 2, "True"),
            Value::Int(i) => s.serialize_newtype_variant(NAME, 3, "Int", i),
            Value::Float(x) => match to_decimal(*x) {
                Some((m, e)) => {
                    let mut t = s.serialize_tuple_variant(NAME, 4, "Dec", 2)?;
                    t.serialize_field(&m)?;
                    t.serialize_field(&e)?;
                    t.end()
                }
                None => s.serialize_newtype_variant(NAME, 5, "F64", x),
            },
            Value::Str(x) => s.serialize_newtype_variant(NAME, 6, "Str", x),
            Value::Bytes(b) => s.serialize_newtype_variant(NAME, 7, "Bytes", b),
        }
    }
}

/// The encoding of a [`Value`] (bundles/SPEC.md §5.3): integers as zig-zag varints, floats as
/// short decimals where exact.
#[derive(Serialize, Deserialize)]
pub(crate) enum CompactValue {
    Null,
    False,
    True,
    Int(i64),
    Dec(i64, u8),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
}
// wire-format: end

#[cfg(test)]
impl From<Value> for CompactValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => CompactValue::Null,
            Value::Bool(false) => CompactValue::False,
            Value::Bool(true) => CompactValue::True,
            Value::Int(i) => CompactValue::Int(i),
            Value::Float(f) => match to_decimal(f) {
                Some((m, e)) => CompactValue::Dec(m, e),
                None => CompactValue::F64(f),
            },
            Value::Str(s) => CompactValue::Str(s),
            Value::Bytes(b) => CompactValue::Bytes(b),
        }
    }
}

// wire-format: begin
impl TryFrom<CompactValue> for Value {
    type Error = ValueParseError;

    fn try_from(v: CompactValue) -> Result<Self, Self::Error> {
        Ok(match v {
            CompactValue::Null => Value::Null,
            CompactValue::False => Value::Bool(false),
            CompactValue::True => Value::Bool(true),
            CompactValue::Int(i) => Value::Int(i),
            CompactValue::Dec(m, e) => {
                Value::Float(from_decimal(m, e).ok_or(ValueParseError::BadDecimal)?)
            }
            CompactValue::F64(f) => Value::float(f)?,
            CompactValue::Str(s) => Value::Str(s),
            CompactValue::Bytes(b) => Value::Bytes(b),
        })
    }
}
// wire-format: end

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact computation of a float's short decimal agrees with the text definition
    /// (`Display` then parse), on every kind of float.
    fn decimal_agrees(x: f64) {
        if !x.is_finite() || (x == 0.0 && x.is_sign_negative()) {
            return;
        }
        let exact = decimal_exact(x).unwrap_or_else(|| decimal_by_text(x));
        assert_eq!(exact, decimal_by_text(x), "{x:e} ({:#x})", x.to_bits());
    }

    #[test]
    fn short_decimals_of_edge_floats_agree_with_their_text() {
        let edges = [
            0.0,
            1.0,
            -1.0,
            0.1,
            0.2,
            0.3,
            61.5,
            -61.5,
            1e-7,
            1.5e-7,
            1e-17,
            1e-16,
            1e-22,
            1e-23,
            123456789012345.6,
            1234567890123456.7,
            9007199254740991.0,
            9007199254740992.0,
            -9007199254740991.0,
            0.1234567890123456,
            -0.1234567890123456,
            0.30000000000000004,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            2.5,
            0.125,
            1e15,
            1e16,
            4.35,
            2.675,
            1.005,
            100.0,
            1e21,
            1e22,
            1e23,
            // Both 9007199254740991 and …992 × 10^−e read back, and the nearer is past the
            // mantissa bound.
            9007199254.740992,
            900719925.4740992,
            9007.199254740992,
            -9007.199254740992,
        ];
        for x in edges {
            decimal_agrees(x);
        }
        for m in -2000i64..2000 {
            for e in 0..=22u8 {
                let x = m as f64 / POW10[e as usize];
                decimal_agrees(x);
                // (The exact way answers by itself, without the text.)
                assert!(decimal_exact(x).is_some(), "{x:e}");
            }
        }
    }

    proptest! {
        #[test]
        fn short_decimals_agree_with_their_text(
            bits in any::<u64>(),
            m in -(1i64 << 53)..(1i64 << 53),
            e in 0..=22u8,
            small in -10_000_000i64..10_000_000,
        ) {
            decimal_agrees(f64::from_bits(bits));
            decimal_agrees(m as f64 / POW10[e as usize]);
            decimal_agrees(small as f64 / POW10[e as usize]);
            decimal_agrees(small as f64 / 1000.0 + 0.1);
        }
    }

    #[test]
    fn parse_follows_the_cli_contract() {
        let cases = [
            ("0", Value::Int(0)),
            ("-17", Value::Int(-17)),
            ("007", Value::Str("007".into())),
            ("1.", Value::Str("1.".into())),
            ("-0.5", Value::Float(-0.5)),
            ("2.5e3", Value::Float(2500.0)),
            ("NaN", Value::Str("NaN".into())),
            ("inf", Value::Str("inf".into())),
            ("null", Value::Null),
            ("false", Value::Bool(false)),
            ("\"null\"", Value::Str("null".into())),
            (
                "99999999999999999999",
                Value::Str("99999999999999999999".into()),
            ),
            ("", Value::Str(String::new())),
        ];
        for (text, want) in cases {
            assert_eq!(Value::parse(text), want, "parsing {text:?}");
        }
    }

    #[test]
    fn the_direct_encoding_is_the_compact_one() {
        for v in [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-5),
            Value::Float(61.5),
            Value::Float(1e300),
            Value::Str("Kisumu".into()),
            Value::Bytes(vec![0, 255]),
        ] {
            let direct = postcard::to_allocvec(&v).unwrap();
            let compact = postcard::to_allocvec(&CompactValue::from(v.clone())).unwrap();
            assert_eq!(direct, compact, "{v:?}");
        }
    }

    #[test]
    fn measurements_encode_as_short_decimals() {
        for (x, want) in [
            (61.5, (615, 1)),
            (37.8, (378, 1)),
            (0.1, (1, 1)),
            (-2.25, (-225, 2)),
        ] {
            assert_eq!(to_decimal(x), Some(want), "{x}");
        }
        let bytes = postcard::to_allocvec(&Value::Float(37.8)).unwrap();
        assert_eq!(bytes.len(), 4, "tag + 2-byte mantissa + exponent");
        assert_eq!(to_decimal(-0.0), None);
        assert_eq!(to_decimal(1e300), None);
    }

    #[test]
    fn typed_text_reads_back_as_the_same_value() {
        let cases = [
            (Value::Null, "null"),
            (Value::Bool(true), "true"),
            (Value::Int(-17), "-17"),
            (Value::Float(61.5), "61.5"),
            (Value::Float(2.0), "2.0"),
            (Value::Float(1e20), "1e20"),
            (Value::Float(-0.0), "-0.0"),
            (Value::Float(1e-7), "1e-7"),
            (Value::Str("Kisumu Ndogo".into()), "Kisumu Ndogo"),
            (Value::Str("007".into()), "007"),
            (Value::Str("34".into()), "\"34\""),
            (Value::Str("2.5e3".into()), "\"2.5e3\""),
            (Value::Str("null".into()), "\"null\""),
            (Value::Str("false".into()), "\"false\""),
            (Value::Str(String::new()), "\"\""),
            (Value::Str("\"".into()), "\""),
            (Value::Str("\"quoted\"".into()), "\"\"quoted\"\""),
            (Value::Str("a,b\n\"c\"".into()), "a,b\n\"c\""),
        ];
        for (v, text) in cases {
            assert_eq!(v.to_typed_text().as_deref(), Some(text), "{v:?}");
            assert_eq!(Value::parse(text), v, "{text:?}");
        }
        assert_eq!(Value::Bytes(vec![1]).to_typed_text(), None);
    }

    proptest! {
        #[test]
        fn every_finite_float_round_trips_bit_exactly(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let bytes = postcard::to_allocvec(&Value::Float(x)).unwrap();
            let back: Value = postcard::from_bytes(&bytes).unwrap();
            match back {
                Value::Float(y) => prop_assert_eq!(y.to_bits(), x.to_bits()),
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn every_finite_float_reads_back_from_its_typed_text(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let text = Value::Float(x).to_typed_text().unwrap();
            match Value::parse(&text) {
                Value::Float(y) => prop_assert_eq!(y.to_bits(), x.to_bits(), "{}", text),
                other => prop_assert!(false, "{} read as {:?}", text, other),
            }
        }

        #[test]
        fn every_string_reads_back_from_its_typed_text(s in ".*") {
            let v = Value::Str(s);
            prop_assert_eq!(Value::parse(&v.to_typed_text().unwrap()), v);
        }

        #[test]
        fn short_decimals_round_trip(m in -100_000_000i64..100_000_000, e in 0u8..6) {
            let x = from_decimal(m, e).unwrap();
            let bytes = postcard::to_allocvec(&Value::Float(x)).unwrap();
            let back: Value = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back, Value::Float(x));
        }
    }
}
