//! Field values as JSON, for `get --json`, `list --json`, `load` and `dump`.
//!
//! null, booleans, integers, floats and strings map to their JSON counterparts; integers
//! stay integers (`34`) and floats keep a fraction or exponent (`61.5`, `2.0`). Bytes are
//! written as `{"$base64": "…"}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferry_model::{RecordState, Rule, Shown, Value};
use serde_json::Value as Json;

/// A value as JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => serde_json::json!({ "$base64": STANDARD.encode(b) }),
    }
}

/// What a field shows, as JSON: its value, or an array of strings for a set.
pub fn shown_to_json(s: &Shown) -> Json {
    match s {
        Shown::Value(v) => to_json(v),
        Shown::Set(elems) => Json::Array(elems.iter().map(|e| Json::String(e.clone())).collect()),
    }
}

/// A record's fields as one JSON object (field → shown value), each field under its rule.
pub fn record_to_json(
    state: &RecordState,
    rule_of: impl Fn(&str) -> Rule,
) -> serde_json::Map<String, Json> {
    state
        .shown_with(rule_of)
        .into_iter()
        .map(|(f, s)| (f.to_string(), shown_to_json(&s)))
        .collect()
}

/// A JSON value as a field value; `Err` says why it cannot be one.
pub fn from_json(j: &Json) -> Result<Value, String> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(f) = n.as_f64() {
                Value::float(f).map_err(|e| e.to_string())?
            } else {
                return Err(format!("number {n} does not fit in 64 bits"));
            }
        }
        Json::String(s) => Value::Str(s.clone()),
        Json::Object(o) if o.len() == 1 && o.contains_key("$base64") => {
            let text = o["$base64"]
                .as_str()
                .ok_or("\"$base64\" must hold a string")?;
            Value::Bytes(
                STANDARD
                    .decode(text)
                    .map_err(|e| format!("invalid base64: {e}"))?,
            )
        }
        Json::Object(_) => return Err("nested objects are not supported".into()),
        Json::Array(_) => return Err("arrays are not supported".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_keeping_their_types() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Int(34),
            Value::Float(61.5),
            Value::Float(2.0),
            Value::Str("Kisumu".into()),
            Value::Bytes(vec![0, 1, 255]),
        ] {
            let text = serde_json::to_string(&to_json(&v)).unwrap();
            let back = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, v, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&to_json(&Value::Float(2.0))).unwrap(),
            "2.0"
        );
        assert!(from_json(&serde_json::json!([1])).is_err());
        assert!(from_json(&serde_json::json!({"a": 1})).is_err());
    }
}
