//! Column codecs for the columnar commit form (bundles/SPEC.md §17.1): the values one
//! slot of a block of records holds, written with the codec that suits them, and
//! front-coded texts (record ids).
//!
//! ```text
//! column  = codec(1 byte) ‖ [null bitmap when codec & 0x80] ‖ the non-null values
//! codec   = 0 plain: each value as a snapshot record state holds it (SPEC.md §4.1)
//!         | 1 bits: booleans, 8 to a byte, first value in the lowest bit, padding 0
//!         | 2 integers: zig-zag varints of each value minus the one before (0 first)
//!         | 3 decimals: exponent e (1 byte), then as 2 the mantissas m of m / 10^e
//!         | 4 dictionary: varint(k), k distinct texts (varint length ‖ UTF-8) in order of
//!           first use, then each value's index (varint)
//!         | 5 front-coded texts (below)
//!         | 6 dates: texts `YYYY-MM-DD` (years 0000–9999, exactly that text), as 2 the
//!           day numbers counted from 1970-01-01
//! null bitmap = ⌈n/8⌉ bytes, a set bit for each null value, padding 0
//! front   = per text: varint(bytes shared with the text before) ‖ varint(rest length)
//!           ‖ rest
//! ```
//!
//! A writer takes the smallest codec that fits every value; a reader accepts any codec
//! whose values decode, and refuses anything else: counts that do not match, indices out of
//! range, padding bits set, texts that are not UTF-8, dates that do not print back to their
//! text, decimals past exactness.

use crate::Value;
use crate::value::{from_decimal, to_decimal};

/// Why a column could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed column: {0}")]
pub struct ColumnError(pub &'static str);

type Res<T> = Result<T, ColumnError>;

const PLAIN: u8 = 0;
const BITS: u8 = 1;
const INTS: u8 = 2;
const DECIMALS: u8 = 3;
const DICTIONARY: u8 = 4;
const FRONT: u8 = 5;
const DATES: u8 = 6;
const NULLS: u8 = 0x80;

/// Appends `v` as an unsigned LEB128 varint (postcard's).
pub fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint of at most 10 bytes, minimal (no trailing zero group).
pub fn take_varint(input: &mut &[u8]) -> Res<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = input
            .split_first()
            .ok_or(ColumnError("ends inside a number"))?;
        *input = rest;
        if i == 9 && b > 1 {
            return Err(ColumnError("number too large"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(ColumnError("number not in its shortest form"));
            }
            return Ok(v);
        }
    }
    Err(ColumnError("number too long"))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn take_len(input: &mut &[u8]) -> Res<usize> {
    let n = take_varint(input)?;
    if n > input.len() as u64 {
        return Err(ColumnError("a length past the end"));
    }
    Ok(n as usize)
}

/// Charges `n` decoded bytes to `budget`: what a column may make of its input is bounded
/// (a dictionary or front coding repeats texts), as the row form's size bounds it.
fn charge(budget: &mut usize, n: usize) -> Res<()> {
    *budget = budget
        .checked_sub(n)
        .ok_or(ColumnError("decodes to more than the limit"))?;
    Ok(())
}

fn take_text(input: &mut &[u8]) -> Res<String> {
    let n = take_len(input)?;
    let (text, rest) = input.split_at(n);
    *input = rest;
    String::from_utf8(text.to_vec()).map_err(|_| ColumnError("text not UTF-8"))
}

/// Appends `texts` front-coded.
pub fn put_front<'a>(texts: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    let mut prev: &[u8] = &[];
    for t in texts {
        let t = t.as_bytes();
        let shared = t.iter().zip(prev).take_while(|(a, b)| a == b).count();
        put_varint(shared as u64, out);
        put_varint((t.len() - shared) as u64, out);
        out.extend_from_slice(&t[shared..]);
        prev = t;
    }
}

/// Reads `n` front-coded texts of at most `max_len` bytes each, charging their bytes to
/// `budget`.
pub fn take_front(
    input: &mut &[u8],
    n: usize,
    max_len: usize,
    budget: &mut usize,
) -> Res<Vec<String>> {
    let mut texts: Vec<String> = Vec::with_capacity(n.min(input.len()));
    for _ in 0..n {
        let shared = take_varint(input)?;
        let prev = texts.last().map_or(&[][..], |t| t.as_bytes());
        if shared > prev.len() as u64 {
            return Err(ColumnError("shares more than the text before holds"));
        }
        let rest = take_len(input)?;
        if shared as usize + rest > max_len {
            return Err(ColumnError("a text longer than allowed"));
        }
        charge(budget, shared as usize + rest)?;
        let mut t = prev[..shared as usize].to_vec();
        t.extend_from_slice(&input[..rest]);
        *input = &input[rest..];
        texts.push(String::from_utf8(t).map_err(|_| ColumnError("text not UTF-8"))?);
    }
    Ok(texts)
}

/// The day number (from 1970-01-01) of `text` when it is exactly `YYYY-MM-DD` of a real
/// date.
fn day_of(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `YYYY-MM-DD` of a day number, for years 0000–9999.
fn civil_from_days(z: i64) -> Option<String> {
    if !(-719_528..=2_932_896).contains(&z) {
        return None;
    }
    let (y, m, d) = crate::clock::civil_from_days(z);
    (0..=9999)
        .contains(&y)
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

fn put_deltas(values: impl Iterator<Item = i64>, out: &mut Vec<u8>) {
    let mut prev = 0i64;
    for v in values {
        put_varint(zigzag(v.wrapping_sub(prev)), out);
        prev = v;
    }
}

fn take_deltas(input: &mut &[u8], n: usize) -> Res<Vec<i64>> {
    let mut out = Vec::with_capacity(n.min(input.len()));
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(take_varint(input)?));
        out.push(prev);
    }
    Ok(out)
}

/// The decimal exponent and mantissas that write every one of `values` exactly, when all
/// are floats with short decimals.
fn decimals(values: &[&Value]) -> Option<(u8, Vec<i64>)> {
    let parts: Vec<(i64, u8)> = values
        .iter()
        .map(|v| match v {
            Value::Float(x) => to_decimal(*x),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let e = parts.iter().map(|&(_, e)| e).max()?;
    let mantissas = parts
        .iter()
        .map(|&(m, pe)| {
            let scaled = m.checked_mul(10i64.checked_pow(u32::from(e - pe))?)?;
            (scaled.unsigned_abs() < 1 << 53).then_some(scaled)
        })
        .collect::<Option<Vec<i64>>>()?;
    Some((e, mantissas))
}

/// Writes the non-null `values` with `codec`, or says it does not fit them.
fn put_base(codec: u8, values: &[&Value], out: &mut Vec<u8>) -> bool {
    let texts = || -> Option<Vec<&str>> {
        values
            .iter()
            .map(|v| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    };
    match codec {
        PLAIN => {
            for v in values {
                let bytes = postcard::to_allocvec(v).expect("values always encode");
                out.extend_from_slice(&bytes);
            }
        }
        BITS => {
            let Some(bits) = values
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<Option<Vec<bool>>>()
            else {
                return false;
            };
            for chunk in bits.chunks(8) {
                out.push(
                    chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &bit)| b | (u8::from(bit) << i)),
                );
            }
        }
        INTS => {
            let Some(ints) = values
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect::<Option<Vec<i64>>>()
            else {
                return false;
            };
            put_deltas(ints.into_iter(), out);
        }
        DECIMALS => {
            let Some((e, mantissas)) = decimals(values) else {
                return false;
            };
            out.push(e);
            put_deltas(mantissas.into_iter(), out);
        }
        DICTIONARY => {
            let Some(texts) = texts() else { return false };
            let mut distinct: Vec<&str> = Vec::new();
            let mut index = std::collections::HashMap::new();
            let indices: Vec<usize> = texts
                .iter()
                .map(|t| {
                    *index.entry(*t).or_insert_with(|| {
                        distinct.push(t);
                        distinct.len() - 1
                    })
                })
                .collect();
            put_varint(distinct.len() as u64, out);
            for t in &distinct {
                put_varint(t.len() as u64, out);
                out.extend_from_slice(t.as_bytes());
            }
            for i in indices {
                put_varint(i as u64, out);
            }
        }
        FRONT => {
            let Some(texts) = texts() else { return false };
            put_front(texts, out);
        }
        DATES => {
            let Some(days) =
                texts().and_then(|ts| ts.into_iter().map(day_of).collect::<Option<Vec<i64>>>())
            else {
                return false;
            };
            put_deltas(days.into_iter(), out);
        }
        _ => return false,
    }
    true
}

/// Appends a column holding `values`, with the codec that writes them in the fewest bytes.
pub fn put_column(values: &[Value], out: &mut Vec<u8>) {
    let nulls = values.iter().filter(|v| matches!(v, Value::Null)).count();
    // A bitmap only when some values are null and some are not: all-null is plain.
    let bitmap = nulls > 0 && nulls < values.len();
    let base: Vec<&Value> = values
        .iter()
        .filter(|v| !bitmap || !matches!(v, Value::Null))
        .collect();
    let mut best: Option<(u8, Vec<u8>)> = None;
    for codec in [PLAIN, BITS, INTS, DECIMALS, DICTIONARY, FRONT, DATES] {
        let mut body = Vec::new();
        if put_base(codec, &base, &mut body)
            && best.as_ref().is_none_or(|(_, b)| body.len() < b.len())
        {
            best = Some((codec, body));
        }
    }
    let (codec, body) = best.expect("plain always fits");
    out.push(codec | if bitmap { NULLS } else { 0 });
    if bitmap {
        for chunk in values.chunks(8) {
            out.push(chunk.iter().enumerate().fold(0u8, |b, (i, v)| {
                b | (u8::from(matches!(v, Value::Null)) << i)
            }));
        }
    }
    out.extend_from_slice(&body);
}

/// Reads a column of `n` values, charging the bytes of their texts and byte strings to
/// `budget`.
pub fn take_column(input: &mut &[u8], n: usize, budget: &mut usize) -> Res<Vec<Value>> {
    let (&codec, rest) = input.split_first().ok_or(ColumnError("no codec"))?;
    *input = rest;
    let mut null = vec![false; n];
    if codec & NULLS != 0 {
        let len = n.div_ceil(8);
        if input.len() < len {
            return Err(ColumnError("null bitmap cut short"));
        }
        let (bits, rest) = input.split_at(len);
        *input = rest;
        for (i, slot) in null.iter_mut().enumerate() {
            *slot = bits[i / 8] & (1 << (i % 8)) != 0;
        }
        if n % 8 != 0 && bits[len - 1] >> (n % 8) != 0 {
            return Err(ColumnError("padding bits set"));
        }
        if null.iter().all(|&x| x) || !null.iter().any(|&x| x) {
            return Err(ColumnError("a null bitmap with all or no values null"));
        }
    }
    let m = null.iter().filter(|&&x| !x).count();
    let base = take_base(codec & !NULLS, input, m, budget)?;
    let mut base = base.into_iter();
    Ok(null
        .into_iter()
        .map(|is_null| match is_null {
            true => Value::Null,
            false => base.next().expect("one per non-null slot"),
        })
        .collect())
}

fn take_base(codec: u8, input: &mut &[u8], m: usize, budget: &mut usize) -> Res<Vec<Value>> {
    Ok(match codec {
        PLAIN => {
            let mut out = Vec::with_capacity(m.min(input.len()));
            for _ in 0..m {
                let (v, rest) = postcard::take_from_bytes::<Value>(input)
                    .map_err(|_| ColumnError("a malformed value"))?;
                *input = rest;
                if let Value::Str(t) = &v {
                    charge(budget, t.len())?;
                } else if let Value::Bytes(b) = &v {
                    charge(budget, b.len())?;
                }
                out.push(v);
            }
            out
        }
        BITS => {
            let len = m.div_ceil(8);
            if input.len() < len {
                return Err(ColumnError("bits cut short"));
            }
            let (bits, rest) = input.split_at(len);
            *input = rest;
            if m % 8 != 0 && bits[len - 1] >> (m % 8) != 0 {
                return Err(ColumnError("padding bits set"));
            }
            (0..m)
                .map(|i| Value::Bool(bits[i / 8] & (1 << (i % 8)) != 0))
                .collect()
        }
        INTS => take_deltas(input, m)?.into_iter().map(Value::Int).collect(),
        DECIMALS => {
            let (&e, rest) = input.split_first().ok_or(ColumnError("no exponent"))?;
            *input = rest;
            take_deltas(input, m)?
                .into_iter()
                .map(|mant| {
                    from_decimal(mant, e)
                        .map(Value::Float)
                        .ok_or(ColumnError("a decimal past exactness"))
                })
                .collect::<Res<_>>()?
        }
        DICTIONARY => {
            let k = take_varint(input)?;
            if k > m as u64 {
                return Err(ColumnError("more texts than values"));
            }
            let mut distinct = Vec::with_capacity(k as usize);
            for _ in 0..k {
                distinct.push(take_text(input)?);
            }
            let mut out = Vec::with_capacity(m);
            for _ in 0..m {
                let i = take_varint(input)?;
                let t = distinct
                    .get(i as usize)
                    .ok_or(ColumnError("an index past the dictionary"))?;
                charge(budget, t.len())?;
                out.push(Value::Str(t.clone()));
            }
            out
        }
        FRONT => take_front(input, m, usize::MAX, budget)?
            .into_iter()
            .map(Value::Str)
            .collect(),
        DATES => take_deltas(input, m)?
            .into_iter()
            .map(|d| {
                charge(budget, 10)?;
                civil_from_days(d)
                    .map(Value::Str)
                    .ok_or(ColumnError("a date outside years 0000–9999"))
            })
            .collect::<Res<_>>()?,
        _ => return Err(ColumnError("unknown codec")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(values: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        put_column(values, &mut out);
        let mut input = &out[..];
        let mut budget = usize::MAX;
        let back = take_column(&mut input, values.len(), &mut budget).unwrap();
        assert!(input.is_empty(), "column read to its end");
        assert_eq!(back.len(), values.len());
        for (a, b) in back.iter().zip(values) {
            match (a, b) {
                (Value::Float(x), Value::Float(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                _ => assert_eq!(a, b),
            }
        }
        out
    }

    fn codec_of(values: &[Value]) -> u8 {
        round_trip(values)[0]
    }

    #[test]
    fn each_kind_of_column_takes_its_codec() {
        let s = |t: &str| Value::Str(t.into());
        let villages: Vec<Value> = (0..100)
            .map(|i| s(["Kisumu", "Obunga", "Mukima"][i % 3]))
            .collect();
        assert_eq!(codec_of(&villages), DICTIONARY);
        let dates: Vec<Value> = (0..50)
            .map(|i| s(&format!("2026-03-{:02}", 1 + i % 28)))
            .collect();
        assert_eq!(codec_of(&dates), DATES);
        let ids: Vec<Value> = (0..50)
            .map(|i| s(&format!("p-{:06}", 4511 + i * 7919)))
            .collect();
        assert_eq!(codec_of(&ids), FRONT);
        let ints: Vec<Value> = (0..50).map(|i| Value::Int(100 + i)).collect();
        assert_eq!(codec_of(&ints), INTS);
        let weights: Vec<Value> = [45.2, 9.1, 10.0, 61.55, -3.0]
            .into_iter()
            .map(Value::Float)
            .collect();
        assert_eq!(
            codec_of(&weights),
            DECIMALS,
            "exponents 1, 0 and 2 together"
        );
        let flags: Vec<Value> = (0..20).map(|i| Value::Bool(i % 3 == 0)).collect();
        assert_eq!(codec_of(&flags), BITS);
        let mut optional = ints.clone();
        optional[3] = Value::Null;
        optional[40] = Value::Null;
        assert_eq!(codec_of(&optional), INTS | NULLS);
        let mixed = vec![
            Value::Int(1),
            s("one"),
            Value::Float(1.5),
            Value::Bytes(vec![0, 1]),
        ];
        assert_eq!(codec_of(&mixed), PLAIN);
        assert_eq!(codec_of(&[Value::Null, Value::Null]), PLAIN);
        assert_eq!(codec_of(&[]), PLAIN);
        // Not dates: they would not print back as they were written.
        for text in ["2026-02-30", "2026-3-01", "26-03-01", "2026-03-01 "] {
            assert_ne!(codec_of(&[s(text), s("2026-01-01")]), DATES, "{text}");
        }
        // Dates near the ends of the range and across leap days.
        for text in [
            "0000-01-01",
            "9999-12-31",
            "2000-02-29",
            "1900-03-01",
            "1969-12-31",
        ] {
            assert_eq!(codec_of(&[s(text), s("2026-01-01")]), DATES, "{text}");
        }
    }

    #[test]
    fn malformed_columns_are_refused() {
        let refused =
            |bytes: &[u8], n: usize| take_column(&mut &bytes[..], n, &mut (1 << 20)).is_err();
        assert!(refused(&[], 1), "no codec");
        assert!(refused(&[9], 0), "unknown codec");
        assert!(refused(&[BITS, 0b1000], 3), "padding bit set");
        assert!(refused(&[BITS], 3), "bits cut short");
        assert!(
            refused(&[DICTIONARY, 1, 1, b'a', 1], 1),
            "index past the dictionary"
        );
        assert!(
            refused(&[DICTIONARY, 3, 1, b'a', 0], 1),
            "more texts than values"
        );
        assert!(
            refused(&[FRONT, 1, 1, b'a'], 1),
            "shares more than the text before"
        );
        assert!(refused(&[FRONT, 0, 1, 0xff], 1), "not UTF-8");
        assert!(
            refused(&[INTS, 0x80, 0x00], 1),
            "number not in its shortest form"
        );
        assert!(
            refused(&[INTS | NULLS, 0b11], 2),
            "every value null under a bitmap"
        );
        assert!(refused(&[DECIMALS, 23, 2], 1), "exponent past exactness");
        let far = zigzag(3_000_000);
        let mut bytes = vec![DATES];
        put_varint(far, &mut bytes);
        assert!(refused(&bytes, 1), "a date past year 9999");
        let mut bytes = vec![DATES];
        put_varint(u64::MAX, &mut bytes);
        assert!(refused(&bytes, 1), "a day number far outside any date");
        // A dictionary repeating a long text is charged for every value it makes.
        let mut bytes = vec![DICTIONARY, 1];
        put_varint(1000, &mut bytes);
        bytes.extend([b'x'; 1000]);
        bytes.extend([0u8; 100]);
        assert!(take_column(&mut &bytes[..], 100, &mut 100_000).is_ok());
        assert!(take_column(&mut &bytes[..], 100, &mut 99_999).is_err());
        // Front coding cannot grow texts past their limit by sharing.
        let mut texts = Vec::new();
        put_front(
            ["a".repeat(600).as_str(), "a".repeat(600).as_str()],
            &mut texts,
        );
        assert!(take_front(&mut &texts[..], 2, 600, &mut 1200).is_ok());
        let mut budget = usize::MAX;
        assert!(take_front(&mut &texts[..], 2, 599, &mut budget).is_err());
        assert!(take_front(&mut &texts[..], 2, 600, &mut 1199).is_err());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-100_000i64..100_000, 0u32..4)
                .prop_map(|(m, e)| Value::Float(m as f64 / 10f64.powi(e as i32))),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Float),
            "[a-c]{0,3}".prop_map(Value::Str),
            (0i64..3_000_000)
                .prop_map(|d| Value::Str(civil_from_days(d - 719_468).unwrap_or_default())),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn any_column_reads_back(
            kind in 0usize..8,
            values in proptest::collection::vec(arb_value(), 0..40),
            nulls in any::<u64>(),
        ) {
            // Columns of one kind (as blocks mostly hold), some with nulls, and mixed ones.
            let pick: Vec<Value> = values
                .iter()
                .filter(|v| kind == 7 || std::mem::discriminant(*v) == std::mem::discriminant(&values[0]))
                .cloned()
                .enumerate()
                .map(|(i, v)| if nulls >> (i % 64) & 1 == 1 && kind % 2 == 0 { Value::Null } else { v })
                .collect();
            round_trip(&pick);
        }

        #[test]
        fn front_coded_texts_read_back(texts in proptest::collection::vec("[ab\u{e9}]{0,5}", 0..30)) {
            let mut out = Vec::new();
            put_front(texts.iter().map(String::as_str), &mut out);
            let mut input = &out[..];
            let mut budget = usize::MAX;
            prop_assert_eq!(take_front(&mut input, texts.len(), 64, &mut budget).unwrap(), texts);
            prop_assert!(input.is_empty());
        }

        #[test]
        fn day_numbers_and_dates_agree(d in -719_528i64..2_932_896) {
            let text = civil_from_days(d).unwrap();
            prop_assert_eq!(day_of(&text), Some(d));
        }
    }
}
