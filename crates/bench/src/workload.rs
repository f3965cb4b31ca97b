//! The reference workload: seeded patient visits shaped like the foundation issue's
//! reference record.
//!
//! Each visit has 12 fields:
//!
//! | field | kind |
//! |---|---|
//! | `patient_id` | id, `p-` and 6 digits |
//! | `visit_date` | date in 2026, `YYYY-MM-DD` |
//! | `village` | one of 200 village names |
//! | `chw` | community health worker id, `chw-` and 3 digits (100 of them) |
//! | `age_years` | integer 0–90 |
//! | `sex` | `F` or `M` |
//! | `weight_kg` | one decimal, 3.0–99.9 |
//! | `muac_mm` | integer 100–300 |
//! | `diagnosis` | one of 8 |
//! | `treatment` | one of 8, sometimes empty |
//! | `followup` | bool (30 % true) |
//! | `note` | empty 70 % of the time, else a short phrase |
//!
//! Record ids are `v-2026-NNNNNN`. The edit mix gives 20 % of records 1–3 field edits made on
//! another laptop; a tenth of those are also edited, concurrently, at the origin.

use ferry_model::Value;
use ferry_sync::sim::SplitMix;

/// The field names, in a fixed order (the CSV column order).
pub const FIELDS: [&str; 12] = [
    "patient_id",
    "visit_date",
    "village",
    "chw",
    "age_years",
    "sex",
    "weight_kg",
    "muac_mm",
    "diagnosis",
    "treatment",
    "followup",
    "note",
];

const DIAGNOSES: [&str; 8] = [
    "malaria",
    "pneumonia",
    "diarrhoea",
    "malnutrition",
    "anaemia",
    "measles",
    "none",
    "other",
];
const TREATMENTS: [&str; 8] = [
    "ACT",
    "ORS",
    "zinc",
    "amoxicillin",
    "RUTF",
    "iron",
    "referral",
    "",
];
const NOTES: [&str; 6] = [
    "mother reports fever for 3 days",
    "referred to health centre",
    "second visit this month",
    "vaccination card missing",
    "child sleeping poorly",
    "follow up in one week",
];
const SYLLABLES: [&str; 20] = [
    "ki", "su", "mu", "ndo", "go", "ob", "un", "ga", "nya", "len", "da", "kon", "de", "le", "ma",
    "nya", "tta", "ra", "bu", "si",
];

/// One of 200 village names, deterministic.
pub fn village(i: u64) -> String {
    let a = SYLLABLES[(i % 20) as usize];
    let b = SYLLABLES[((i / 20) % 20) as usize];
    let c = SYLLABLES[((i * 7) % 20) as usize];
    let mut name = format!("{a}{b}{c}");
    name[..1].make_ascii_uppercase();
    if i % 3 == 0 {
        name.push_str(" Ndogo");
    }
    name
}

/// Visits up to this many keep their ids in order: `v-2026-` and seven digits. (With six,
/// ids from 1,000,000 on sorted in among the earlier ones — `v-2026-1000000` right after
/// `v-2026-100000` — so the 10M point of the scale run measured another insertion pattern
/// from the smaller sizes.)
pub const MAX_VISITS: u64 = 10_000_000;

/// The `i`-th visit of the workload of `seed`: (id, fields in [`FIELDS`] order).
pub fn visit(seed: u64, i: u64) -> (String, Vec<Value>) {
    let mut r = SplitMix(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let s = |v: String| Value::Str(v);
    let month = 1 + r.below(12);
    let day = 1 + r.below(28);
    let note = if r.below(10) < 7 {
        String::new()
    } else {
        NOTES[r.below(6) as usize].to_string()
    };
    let fields = vec![
        s(format!("p-{:06}", r.below(1_000_000))),
        s(format!("2026-{month:02}-{day:02}")),
        s(village(r.below(200))),
        s(format!("chw-{:03}", r.below(100))),
        Value::Int(r.below(91) as i64),
        s(if r.below(2) == 0 { "F" } else { "M" }.to_string()),
        Value::Float((30 + r.below(970)) as f64 / 10.0),
        Value::Int(100 + r.below(201) as i64),
        s(DIAGNOSES[r.below(8) as usize].to_string()),
        s(TREATMENTS[r.below(8) as usize].to_string()),
        Value::Bool(r.below(10) < 3),
        s(note),
    ];
    (format!("v-2026-{i:07}"), fields)
}

/// The `i`-th visit of the workload of `seed` as a record id and the ops that write it.
pub fn visit_ops(seed: u64, i: u64) -> (String, Vec<ferry_model::Op>) {
    let (id, fields) = visit(seed, i);
    let ops = FIELDS
        .iter()
        .zip(fields)
        .map(|(name, v)| ferry_model::Op::Set((*name).into(), v))
        .collect();
    (id, ops)
}

/// One edited record: its index, the (field index, new value) pairs, and whether the origin
/// edits it concurrently.
pub type Edit = (u64, Vec<(usize, Value)>, bool);

/// The edit mix: for each edited record, (id index, [(field index, new value)]), and whether
/// the origin edits one of the same fields concurrently.
pub fn edits(seed: u64, n: u64) -> Vec<Edit> {
    let mut r = SplitMix(seed.wrapping_add(0xed17));
    let mut out = Vec::new();
    for i in 0..n {
        if r.below(5) != 0 {
            continue;
        }
        let k = 1 + r.below(3) as usize;
        let mut fields = Vec::new();
        for _ in 0..k {
            let (f, v) = match r.below(5) {
                0 => (6, Value::Float((30 + r.below(970)) as f64 / 10.0)),
                1 => (7, Value::Int(100 + r.below(201) as i64)),
                2 => (11, Value::Str(NOTES[r.below(6) as usize].to_string())),
                3 => (10, Value::Bool(r.below(2) == 0)),
                _ => (8, Value::Str(DIAGNOSES[r.below(8) as usize].to_string())),
            };
            if !fields.iter().any(|(g, _)| *g == f) {
                fields.push((f, v));
            }
        }
        out.push((i, fields, r.below(10) == 0));
    }
    out
}

/// A visit as one JSON line (the `ferry load` format, and the "zip a JSON file" baseline).
pub fn json_line(id: &str, fields: &[Value]) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), id.into());
    for (name, v) in FIELDS.iter().zip(fields) {
        obj.insert(name.to_string(), ferry_node::json::to_json(v));
    }
    serde_json::Value::Object(obj).to_string()
}

/// A visit's values as one CSV line (the information-floor baseline).
pub fn csv_line(id: &str, fields: &[Value]) -> String {
    let mut cells = vec![id.to_string()];
    for v in fields {
        let text = match v {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\n']) {
            cells.push(format!("\"{}\"", text.replace('"', "\"\"")));
        } else {
            cells.push(text);
        }
    }
    cells.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic_and_has_200_villages() {
        assert_eq!(visit(1, 5), visit(1, 5));
        assert_ne!(visit(1, 5), visit(2, 5));
        let villages: std::collections::BTreeSet<_> = (0..200).map(village).collect();
        assert_eq!(villages.len(), 200);
        let e = edits(1, 10_000);
        let share = e.len() as f64 / 10_000.0;
        assert!((0.18..0.22).contains(&share), "{share}");
        assert!(e.iter().all(|(_, f, _)| (1..=3).contains(&f.len())));
    }
}
