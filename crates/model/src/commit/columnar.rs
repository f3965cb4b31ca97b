//! The columnar form of a commit (bundles/SPEC.md §17): the same fields as the row form up
//! to the name table, an empty membership change (a commit 1 is never columnar), then the
//! record changes one *block* per collection, column by column.
//!
//! ```text
//! columnar = postcard(Head) ‖ varint(blocks) ‖ block…
//! block    = coll(varint) ‖ n(varint) ‖ ids(front-coded) ‖ shapes ‖ which ‖ columns
//! shapes   = varint(count) ‖ per shape: varint(ops) ‖ per op: kind(1) ‖ field(varint)
//! which    = each record's shape index in ⌈log2(count)⌉ bits, lowest bit first, padding 0
//! columns  = one column (crate::columns) per (field, kind) slot, in order of first use in
//!            the shapes: that slot's values, record after record
//! kind     = 0 set | 1 incr | 2 add | 3 remove | 4 delete (no column)
//! ```
//!
//! Decoding gives the row form's changes (records grouped by collection, in block order),
//! so everything after it is shared with the row form.

use super::{CommitError, WireChange, WireCommit, WireOp};
use crate::bounded::{self, what};
use crate::columns::{
    ColumnError, put_column, put_front, put_varint, take_column, take_front, take_varint,
};
use crate::value::{from_decimal, to_decimal};
use crate::{Value, limits};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

// wire-format: begin
/// The columnar form's fields before its blocks: the row form's, and the membership
/// change of a commit 1.
#[derive(Serialize, Deserialize)]
struct Head {
    ms: u64,
    lc: u16,
    #[serde(deserialize_with = "bounded::vec::<_, _, { limits::MAX_VECTOR }, { what::DEPS }>")]
    deps: Vec<(u32, u64)>,
    seen: Option<i64>,
    #[serde(
        deserialize_with = "bounded::vec::<_, _, { limits::MAX_NAME_TABLE }, { what::NAMES }>"
    )]
    names: Vec<String>,
    /// A genesis or join (only in a commit 1), else nothing.
    #[serde(deserialize_with = "bounded::vec::<_, _, 1, { what::CHANGES }>")]
    membership: Vec<WireChange>,
}

const SET: u8 = 0;
const INCR: u8 = 1;
const ADD: u8 = 2;
const REMOVE: u8 = 3;
const DELETE: u8 = 4;
// wire-format: end

impl From<ColumnError> for CommitError {
    fn from(e: ColumnError) -> Self {
        CommitError::Columnar(e.0)
    }
}

/// An op's slot: (kind, field); a delete has field 0.
fn slot(op: &WireOp) -> (u8, u32) {
    match op {
        WireOp::Null(f)
        | WireOp::False(f)
        | WireOp::True(f)
        | WireOp::Int(f, _)
        | WireOp::Dec(f, ..)
        | WireOp::F64(f, _)
        | WireOp::Str(f, _)
        | WireOp::Bytes(f, _) => (SET, *f),
        WireOp::Incr(f, _) => (INCR, *f),
        WireOp::Add(f, _) => (ADD, *f),
        WireOp::Remove(f, _) => (REMOVE, *f),
        WireOp::Delete => (DELETE, 0),
    }
}

/// The value an op carries into its column (none for a delete).
fn value(op: &WireOp) -> Option<Value> {
    Some(match op {
        WireOp::Null(_) => Value::Null,
        WireOp::False(_) => Value::Bool(false),
        WireOp::True(_) => Value::Bool(true),
        WireOp::Int(_, i) | WireOp::Incr(_, i) => Value::Int(*i),
        WireOp::Dec(_, m, e) => Value::Float(from_decimal(*m, *e)?),
        WireOp::F64(_, x) => Value::Float(*x),
        WireOp::Str(_, s) | WireOp::Add(_, s) | WireOp::Remove(_, s) => Value::Str(s.clone()),
        WireOp::Bytes(_, b) => Value::Bytes(b.clone()),
        WireOp::Delete => return None,
    })
}

/// The op of slot `(kind, field)` carrying `v`.
fn op_of((kind, field): (u8, u32), v: Value) -> Result<WireOp, CommitError> {
    let bad = || CommitError::Columnar("a value of the wrong kind for its op");
    Ok(match (kind, v) {
        (SET, Value::Null) => WireOp::Null(field),
        (SET, Value::Bool(false)) => WireOp::False(field),
        (SET, Value::Bool(true)) => WireOp::True(field),
        (SET, Value::Int(i)) => WireOp::Int(field, i),
        (SET, Value::Float(x)) => match to_decimal(x) {
            Some((m, e)) => WireOp::Dec(field, m, e),
            None => WireOp::F64(field, x),
        },
        (SET, Value::Str(s)) => WireOp::Str(field, s),
        (SET, Value::Bytes(b)) => WireOp::Bytes(field, b),
        (INCR, Value::Int(i)) => WireOp::Incr(field, i),
        (ADD, Value::Str(s)) => WireOp::Add(field, s),
        (REMOVE, Value::Str(s)) => WireOp::Remove(field, s),
        _ => return Err(bad()),
    })
}

/// Bits needed to number `count` shapes (0 for one).
fn width(count: usize) -> u32 {
    match count {
        0 | 1 => 0,
        n => usize::BITS - (n - 1).leading_zeros(),
    }
}

/// A record's id and ops, borrowed from the row form.
type RecordRef<'a> = (&'a str, &'a [WireOp]);

/// Writes `wire` (already checked by the row encoder) in the columnar form.
pub(super) fn encode(wire: &WireCommit) -> Result<Vec<u8>, CommitError> {
    let membership: Vec<WireChange> = wire
        .changes
        .iter()
        .filter(|c| !matches!(c, WireChange::Record { .. }))
        .map(|c| match c {
            WireChange::Genesis {
                name,
                label,
                admin_key,
            } => WireChange::Genesis {
                name: name.clone(),
                label: label.clone(),
                admin_key: *admin_key,
            },
            WireChange::Join(p) => WireChange::Join(p.clone()),
            WireChange::Record { .. } => unreachable!("filtered"),
        })
        .collect();
    let head = Head {
        ms: wire.ms,
        lc: wire.lc,
        deps: wire.deps.clone(),
        seen: wire.seen,
        names: wire.names.clone(),
        membership,
    };
    let mut out = postcard::to_allocvec(&head)?;
    // Blocks: collections in order of first write, records in order.
    let mut blocks: Vec<(u32, Vec<RecordRef<'_>>)> = Vec::new();
    let mut block_of: HashMap<u32, usize> = HashMap::new();
    for change in &wire.changes {
        if let WireChange::Record { coll, id, ops } = change {
            let b = *block_of.entry(*coll).or_insert_with(|| {
                blocks.push((*coll, Vec::new()));
                blocks.len() - 1
            });
            blocks[b].1.push((id, ops));
        }
    }
    put_varint(blocks.len() as u64, &mut out);
    for (coll, records) in &blocks {
        put_varint(u64::from(*coll), &mut out);
        put_varint(records.len() as u64, &mut out);
        put_front(records.iter().map(|(id, _)| *id), &mut out);
        let mut shapes: Vec<Vec<(u8, u32)>> = Vec::new();
        let mut shape_of: HashMap<Vec<(u8, u32)>, usize> = HashMap::new();
        let which: Vec<usize> = records
            .iter()
            .map(|(_, ops)| {
                let shape: Vec<(u8, u32)> = ops.iter().map(slot).collect();
                *shape_of.entry(shape.clone()).or_insert_with(|| {
                    shapes.push(shape);
                    shapes.len() - 1
                })
            })
            .collect();
        put_varint(shapes.len() as u64, &mut out);
        for shape in &shapes {
            put_varint(shape.len() as u64, &mut out);
            for &(kind, field) in shape {
                out.push(kind);
                put_varint(u64::from(field), &mut out);
            }
        }
        put_bits(&which, width(shapes.len()), &mut out);
        // Each slot's values, in one pass over the records.
        let order = slots(&shapes);
        let index: HashMap<(u8, u32), usize> =
            order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut values: Vec<Vec<Value>> = vec![Vec::new(); order.len()];
        for (_, ops) in records {
            for op in *ops {
                if let Some(&i) = index.get(&slot(op)) {
                    values[i].push(value(op).ok_or(CommitError::BadValue)?);
                }
            }
        }
        for column in &values {
            put_column(column, &mut out);
        }
    }
    Ok(out)
}

/// The slots of `shapes` that carry values, in order of first use.
fn slots(shapes: &[Vec<(u8, u32)>]) -> Vec<(u8, u32)> {
    let mut seen = std::collections::HashSet::new();
    shapes
        .iter()
        .flatten()
        .filter(|&&(kind, _)| kind != DELETE)
        .filter(|s| seen.insert(**s))
        .copied()
        .collect()
}

fn put_bits(values: &[usize], width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    let (mut acc, mut have) = (0u64, 0u32);
    for &v in values {
        acc |= (v as u64) << have;
        have += width;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
}

fn take_bits(
    input: &mut &[u8],
    n: usize,
    width: u32,
    below: usize,
) -> Result<Vec<usize>, CommitError> {
    if width == 0 {
        return Ok(vec![0; n]);
    }
    let bytes = (n as u64 * u64::from(width)).div_ceil(8);
    if bytes > input.len() as u64 {
        return Err(CommitError::Columnar("shape indices cut short"));
    }
    let (bits, rest) = input.split_at(bytes as usize);
    *input = rest;
    let mut out = Vec::with_capacity(n);
    let (mut acc, mut have, mut next) = (0u64, 0u32, 0usize);
    for _ in 0..n {
        while have < width {
            acc |= u64::from(bits[next]) << have;
            next += 1;
            have += 8;
        }
        let v = (acc & ((1 << width) - 1)) as usize;
        acc >>= width;
        have -= width;
        if v >= below {
            return Err(CommitError::Columnar("a shape index past the table"));
        }
        out.push(v);
    }
    if acc != 0 {
        return Err(CommitError::Columnar("padding bits set"));
    }
    Ok(out)
}

fn take_count(input: &mut &[u8], max: usize) -> Result<usize, CommitError> {
    let n = take_varint(input)?;
    if n > max as u64 {
        return Err(CommitError::Columnar("a count past the limits"));
    }
    Ok(n as usize)
}

fn take_u32(input: &mut &[u8]) -> Result<u32, CommitError> {
    u32::try_from(take_varint(input)?).map_err(|_| CommitError::Columnar("a number past 2^32"))
}

/// Reads a commit in the columnar form as the row form's fields.
pub(super) fn decode(bytes: &[u8]) -> Result<WireCommit, CommitError> {
    let head = {
        let _budget = bounded::OpBudget::start(limits::MAX_OPS);
        bounded::clear_exceeded();
        let (head, rest) = postcard::take_from_bytes::<Head>(bytes).map_err(|e| {
            match bounded::take_exceeded() {
                Some(limit) => CommitError::Limit(limit),
                None => CommitError::Malformed(e),
            }
        })?;
        let used = bytes.len() - rest.len();
        (head, used)
    };
    let (head, used) = head;
    let mut input = &bytes[used..];
    if head
        .membership
        .iter()
        .any(|c| matches!(c, WireChange::Record { .. }))
    {
        return Err(CommitError::Columnar(
            "a record among the membership changes",
        ));
    }
    let mut changes = head.membership;
    // What the blocks may decode to: the limits of the row form (SPEC.md §8), and as many
    // bytes of ids and values as a commit may hold.
    let (mut records, mut ops_left, mut shape_ops_left) = (
        limits::MAX_CHANGES - changes.len(),
        limits::MAX_OPS,
        limits::MAX_OPS,
    );
    let mut budget = limits::MAX_COMMIT;
    let blocks = take_count(&mut input, records)?;
    for _ in 0..blocks {
        let coll = take_u32(&mut input)?;
        let n = take_count(&mut input, records)?;
        records -= n;
        let ids = take_front(&mut input, n, limits::MAX_RECORD_ID, &mut budget)?;
        let count = take_count(&mut input, n)?;
        if n == 0 || count == 0 {
            return Err(CommitError::Columnar("a block without records or shapes"));
        }
        let mut shapes = Vec::with_capacity(count);
        for _ in 0..count {
            let len = take_count(&mut input, shape_ops_left)?;
            shape_ops_left -= len;
            let mut shape = Vec::with_capacity(len.min(input.len()));
            for _ in 0..len {
                let (&kind, rest) = input
                    .split_first()
                    .ok_or(CommitError::Columnar("a shape cut short"))?;
                input = rest;
                if kind > DELETE {
                    return Err(CommitError::Columnar("an unknown op kind"));
                }
                let field = take_u32(&mut input)?;
                if kind == DELETE && field != 0 {
                    return Err(CommitError::Columnar("a delete names a field"));
                }
                shape.push((kind, field));
            }
            shapes.push(shape);
        }
        let which = take_bits(&mut input, n, width(count), count)?;
        // How many records use each shape, then how many values each slot holds: one pass
        // over the records and one over the shapes (never records × slots).
        let mut users = vec![0usize; count];
        for &w in &which {
            users[w] += 1;
        }
        let over = || {
            CommitError::Limit(bounded::Exceeded {
                what: what::OPS,
                max: limits::MAX_OPS,
            })
        };
        let mut uses: HashMap<(u8, u32), usize> = HashMap::new();
        for (shape, &k) in shapes.iter().zip(&users) {
            let ops = shape.len().checked_mul(k).ok_or_else(over)?;
            ops_left = ops_left.checked_sub(ops).ok_or_else(over)?;
            for &s in shape {
                *uses.entry(s).or_default() += k;
            }
        }
        let mut columns: HashMap<(u8, u32), std::vec::IntoIter<Value>> = HashMap::new();
        for s in slots(&shapes) {
            let n = uses[&s];
            columns.insert(s, take_column(&mut input, n, &mut budget)?.into_iter());
        }
        for (id, w) in ids.into_iter().zip(which) {
            let mut record_ops = Vec::with_capacity(shapes[w].len());
            for &s in &shapes[w] {
                record_ops.push(match s.0 {
                    DELETE => WireOp::Delete,
                    _ => {
                        let v = columns
                            .get_mut(&s)
                            .and_then(Iterator::next)
                            .expect("a column holds a value for each use");
                        op_of(s, v)?
                    }
                });
            }
            changes.push(WireChange::Record {
                coll,
                id,
                ops: record_ops,
            });
        }
    }
    if !input.is_empty() {
        return Err(CommitError::TrailingBytes(input.len()));
    }
    Ok(WireCommit {
        ms: head.ms,
        lc: head.lc,
        deps: head.deps,
        seen: head.seen,
        names: head.names,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use crate::commit::tests::genesis;
    use crate::commit::{ChainContext, Change, Commit, Form, Op};
    use crate::{DatasetId, Hlc, MemberId, Value, VersionVector};

    const DS: DatasetId = DatasetId([5; 8]);

    /// Reference visits, as a load writes them.
    fn visits(seq: u64, n: usize) -> Commit {
        let villages = ["Kisumu", "Obunga", "Mukima", "Unmumu"];
        let changes = (0..n)
            .map(|i| Change::Record {
                collection: "visits".into(),
                id: format!("v-2026-{:06}", seq as usize * 1000 + i),
                ops: vec![
                    Op::Set(
                        "patient_id".into(),
                        Value::Str(format!("p-{:06}", (i * 7919) % 1_000_000)),
                    ),
                    Op::Set(
                        "visit_date".into(),
                        Value::Str(format!("2026-0{}-{:02}", 1 + i % 9, 1 + i % 28)),
                    ),
                    Op::Set("village".into(), Value::Str(villages[i % 4].into())),
                    Op::Set("age_years".into(), Value::Int((i % 90) as i64)),
                    Op::Set(
                        "weight_kg".into(),
                        Value::Float((100 + i % 700) as f64 / 10.0),
                    ),
                    Op::Set("followup".into(), Value::Bool(i % 3 == 0)),
                    Op::Set(
                        "note".into(),
                        match i % 5 {
                            0 => Value::Str("came back".into()),
                            _ => Value::Null,
                        },
                    ),
                ],
            })
            .collect();
        Commit {
            author: MemberId::ADMIN,
            seq,
            hlc: Hlc::from_parts(1_763_000_000_000 + seq * 1000, 0),
            deps: VersionVector::new(),
            seen: None,
            changes,
        }
    }

    /// Every kind of op, several collections interleaved, a record written twice.
    fn mixed(seq: u64) -> Commit {
        let rec = |c: &str, id: &str, ops: Vec<Op>| Change::Record {
            collection: c.into(),
            id: id.into(),
            ops,
        };
        Commit {
            author: MemberId::ADMIN,
            seq,
            hlc: Hlc::from_parts(1_763_000_000_000 + seq * 1000, 3),
            deps: [(MemberId(2), 7)].into_iter().collect(),
            seen: Some(Hlc::from_parts(1_762_999_000_000, 0)),
            changes: vec![
                rec(
                    "visits",
                    "a",
                    vec![Op::Set("x".into(), Value::Int(1)), Op::Delete],
                ),
                rec(
                    "_members",
                    "1",
                    vec![Op::Set("reads".into(), Value::Int(11))],
                ),
                rec(
                    "visits",
                    "b",
                    vec![
                        Op::Incr("n".into(), -4),
                        Op::Add("tags".into(), "tb".into()),
                        Op::Remove("tags".into(), "hiv".into()),
                        Op::Set("raw".into(), Value::Bytes(vec![0, 255])),
                        Op::Set("big".into(), Value::Float(1e300)),
                        Op::Set("x".into(), Value::Int(2)),
                        Op::Set("x".into(), Value::Int(3)),
                    ],
                ),
                rec(
                    "visits",
                    "a",
                    vec![Op::Set("y".into(), Value::Str("é".into()))],
                ),
                rec("visits", "c", vec![]),
            ],
        }
    }

    /// The changes grouped by collection in order of first write (what decoding the
    /// columnar form gives).
    fn grouped(changes: &[Change]) -> Vec<Change> {
        let mut order: Vec<&str> = Vec::new();
        for c in changes {
            if let Change::Record { collection, .. } = c {
                if !order.contains(&collection.as_str()) {
                    order.push(collection);
                }
            }
        }
        let mut out: Vec<Change> = changes
            .iter()
            .filter(|c| !matches!(c, Change::Record { .. }))
            .cloned()
            .collect();
        for coll in order {
            out.extend(
                changes
                    .iter()
                    .filter(
                        |c| matches!(c, Change::Record { collection, .. } if collection == coll),
                    )
                    .cloned(),
            );
        }
        out
    }

    #[test]
    fn columnar_commits_decode_to_the_row_commits_changes_and_chain_apart() {
        let mut last = visits(4, 1);
        // (Causal contexts only grow along a chain.)
        last.deps = mixed(3).deps;
        let commits = [genesis(), visits(2, 500), mixed(3), last];
        let (mut row_w, mut col_w) = (
            ChainContext::new(DS, MemberId::ADMIN),
            ChainContext::new(DS, MemberId::ADMIN),
        );
        let (mut row_r, mut col_r) = (row_w.clone(), col_w.clone());
        for c in &commits {
            let row = row_w.encode_as(c, Form::Row).unwrap();
            if c.seq == 1 {
                // A commit 1 (genesis or join) is never columnar, either way.
                assert!(col_w.clone().encode_as(c, Form::Columnar).is_err());
                assert!(col_r.clone().decode_as(&row, Form::Columnar).is_err());
                col_w.encode_as(c, Form::Row).unwrap();
                row_r.decode_as(&row, Form::Row).unwrap();
                col_r.decode_as(&row, Form::Row).unwrap();
                continue;
            }
            let col = col_w.encode_as(c, Form::Columnar).unwrap();
            let from_row = row_r.decode_as(&row, Form::Row).unwrap();
            let from_col = col_r.decode_as(&col, Form::Columnar).unwrap();
            assert_eq!(from_row, *c);
            assert_eq!(from_col.changes, grouped(&c.changes), "commit {}", c.seq);
            assert_eq!(
                (from_col.hlc, &from_col.deps, from_col.seen),
                (c.hlc, &c.deps, c.seen)
            );
            // The same bytes read as the other form are refused or differ; the chains
            // never meet.
            assert_ne!(row_r.hash, col_r.hash);
            let stored = col_r
                .decode_stored_as(c.seq, c.hlc, c.deps.clone(), &col, Form::Columnar)
                .unwrap();
            assert_eq!(stored.changes, from_col.changes);
            if c.seq == 2 {
                // 500 reference visits: the columnar form is far smaller.
                assert!(
                    col.len() * 2 < row.len(),
                    "{} columnar, {} row",
                    col.len(),
                    row.len()
                );
            }
        }
        assert_eq!(row_w.names, col_w.names);
    }

    #[test]
    fn every_cut_or_altered_columnar_commit_is_refused_or_reads_as_a_commit() {
        let mut w = ChainContext::new(DS, MemberId::ADMIN);
        let g = w.encode(&genesis()).unwrap();
        let before = w.clone();
        let bytes = w.encode_as(&mixed(2), Form::Columnar).unwrap();
        let _ = g;
        for cut in 0..bytes.len() {
            let mut r = before.clone();
            assert!(
                r.decode_as(&bytes[..cut], Form::Columnar).is_err(),
                "cut at {cut}"
            );
        }
        // Flipping any bit never panics: the commit is refused or decodes to some commit.
        let mut flipped = 0;
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let mut r = before.clone();
                if r.decode_as(&b, Form::Columnar).is_err() {
                    flipped += 1;
                }
            }
        }
        assert!(
            flipped > bytes.len(),
            "{flipped} of {} flips refused",
            bytes.len() * 8
        );
    }
}
