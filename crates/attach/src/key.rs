//! A row's key ↔ a ferry record id, reversibly.
//!
//! Each key column's value becomes one component; a composite key joins its components
//! with `/`. A component is:
//!
//! | SQLite value | component | example |
//! |---|---|---|
//! | TEXT | the text, with `~` written `~~` and `/` written `~s` | `MRN-0042`, `a~~b`, `x~sy` |
//! | INTEGER | `~i` and the number | `~i42`, `~i-7` |
//! | REAL | `~r` and the shortest text that reads back as the same number | `~r1.5` |
//! | BLOB | `~x` and lower-case hex | `~x00ff` |
//! | NULL | `~n` | `~n` |
//!
//! So text keys (UUIDs, patient numbers) read as themselves in `ferry list`, and the same
//! key gives the same id on every laptop. Decoding gives back the value with its type,
//! whatever the column's declared type.

use ferry_model::Value;

/// The record id of a key (one value per key column, in key order).
pub fn encode(key: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match v {
            Value::Str(s) => {
                for c in s.chars() {
                    match c {
                        '~' => out.push_str("~~"),
                        '/' => out.push_str("~s"),
                        c => out.push(c),
                    }
                }
            }
            Value::Int(n) => out.push_str(&format!("~i{n}")),
            Value::Bool(b) => out.push_str(&format!("~i{}", i64::from(*b))),
            Value::Float(f) => out.push_str(&format!("~r{f:?}")),
            Value::Bytes(b) => {
                out.push_str("~x");
                for x in b {
                    out.push_str(&format!("{x:02x}"));
                }
            }
            Value::Null => out.push_str("~n"),
        }
    }
    out
}

/// The key an id stands for, if it is one [`encode`] makes with `columns` components.
pub fn decode(id: &str, columns: usize) -> Option<Vec<Value>> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != columns {
        return None;
    }
    parts.into_iter().map(component).collect()
}

fn component(p: &str) -> Option<Value> {
    if let Some(n) = p.strip_prefix("~i") {
        let v: i64 = n.parse().ok()?;
        return (v.to_string() == n).then_some(Value::Int(v));
    }
    if let Some(r) = p.strip_prefix("~r") {
        let f: f64 = r.parse().ok()?;
        return (f.is_finite() && format!("{f:?}") == r).then_some(Value::Float(f));
    }
    if let Some(h) = p.strip_prefix("~x") {
        if h.len() % 2 != 0 || h.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        return (0..h.len() / 2)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Value::Bytes);
    }
    if p == "~n" {
        return Some(Value::Null);
    }
    let mut out = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '~' => out.push('~'),
            's' => out.push('/'),
            _ => return None,
        }
    }
    Some(Value::Str(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_keys_read_as_themselves_and_other_types_are_marked() {
        assert_eq!(encode(&[Value::Str("MRN-0042".into())]), "MRN-0042");
        assert_eq!(encode(&[Value::Int(42)]), "~i42");
        assert_eq!(encode(&[Value::Str("42".into())]), "42");
        assert_eq!(
            encode(&[Value::Str("a/b~c".into()), Value::Bytes(vec![0, 255])]),
            "a~sb~~c/~x00ff"
        );
        assert_eq!(encode(&[Value::Float(1.5), Value::Null]), "~r1.5/~n");
    }

    #[test]
    fn ids_that_no_key_makes_are_not_keys() {
        for bad in [
            "~", "~q", "~i", "~i01", "~i+1", "~x0", "~xZZ", "~rNaN", "~r1.50",
        ] {
            assert_eq!(decode(bad, 1), None, "{bad}");
        }
        assert_eq!(decode("a/b", 1), None);
        assert_eq!(decode("a", 2), None);
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            ".*".prop_map(Value::Str),
            "[~/a]{0,6}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
            Just(Value::Null),
        ]
    }

    proptest! {
        #[test]
        fn every_key_comes_back_with_its_type(key in proptest::collection::vec(value(), 1..4)) {
            let id = encode(&key);
            prop_assert_eq!(decode(&id, key.len()), Some(key.clone()));
        }

        #[test]
        fn different_keys_get_different_ids(a in proptest::collection::vec(value(), 1..3),
                                            b in proptest::collection::vec(value(), 1..3)) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }
    }
}
