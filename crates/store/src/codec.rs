//! The on-disk encoding of a record's merge state.
//!
//! Each record is one row. Its blob lists the distinct commit stamps once and refers to
//! them by position, and names fields by local numbers (table `local_names`), so a record
//! written by one commit costs one stamp, not one per field.
//!
//! A record as most records are — every field holding one value, all written by one
//! commit, nothing deleted or retired — is written in a shorter *plain* form: [`PLAIN`],
//! the stamp (its clock as milliseconds and counter), then (local field name, value) of
//! each field. Blobs written before it
//! existed still read.

use ferry_model::record::{Entry, Ghost, Sibling};
use ferry_model::{Dot, Hlc, MemberId, RecordState, Stamp, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored blob; `E` is `Entry` when reading and `&Entry` when writing (same bytes,
/// no copies).
#[derive(Serialize, Deserialize)]
struct Blob<E> {
    /// (author, seq, hlc, rank − clock ms as a signed number) of every stamp used below.
    stamps: Vec<StampRow>,
    /// (local field name, [(stamp index, entry)]).
    fields: Vec<(u32, Vec<(u32, E)>)>,
    /// Stamp indices of surviving deletes.
    tombstones: Vec<u32>,
    /// (local field name, stamp index, entry) of retired first values.
    firsts: Vec<(u32, u32, E)>,
}

/// Ghosts (see [`ferry_model::record::Ghost`]), written after the blob only when a record
/// has any, so records without them keep the bytes they had before ghosts existed:
/// (local field name, stamp index, entry, deletes that count it, burying writes).
type GhostRow<E> = (u32, u32, E, Vec<(u32, u64)>, Vec<(u32, u64)>);

/// The first bytes of a plain blob. (A blob of the general form that starts with 0 has no
/// stamps, so no fields either: it is exactly `[0, 0, 0, 0]`.)
pub const PLAIN: [u8; 2] = [0, 1];

/// A stamp as the blob writes it: (author, seq, hlc, rank − clock ms as a signed number).
type StampRow = (u32, u64, u64, i64);

/// A plain blob after [`PLAIN`]: the stamp, then (local field name, value) of each field.
type PlainBlob = (PlainStamp, Vec<(u32, Value)>);

/// The stamp of a plain blob: (author, seq, clock ms, clock counter, rank − clock ms), the
/// clock in two numbers (7 bytes today where its single number takes 9).
type PlainStamp = (u32, u64, u64, u16, i64);

fn plain_stamp_row(s: &Stamp) -> PlainStamp {
    (
        s.dot.author.0,
        s.dot.seq,
        s.hlc.ms(),
        s.hlc.counter(),
        s.rank.wrapping_sub(s.hlc.ms()) as i64,
    )
}

fn plain_row_stamp(&(a, seq, ms, counter, r): &PlainStamp) -> Result<Stamp, CodecError> {
    if ms >= 1 << 48 {
        return Err(CodecError("a clock past its range".into()));
    }
    let hlc = Hlc((ms << 16) | u64::from(counter));
    Ok(Stamp {
        dot: Dot::new(MemberId(a), seq),
        hlc,
        rank: ms.wrapping_add(r as u64),
    })
}

fn stamp_row(s: &Stamp) -> StampRow {
    (
        s.dot.author.0,
        s.dot.seq,
        s.hlc.0,
        s.rank.wrapping_sub(s.hlc.ms()) as i64,
    )
}

fn row_stamp(&(a, s, h, r): &StampRow) -> Stamp {
    Stamp {
        dot: Dot::new(MemberId(a), s),
        hlc: Hlc(h),
        rank: Hlc(h).ms().wrapping_add(r as u64),
    }
}

/// The one stamp of a record that can be written plain: at least one field, each holding
/// one value, all of the same stamp; no delete, retired first value or ghost.
fn plain_stamp(state: &RecordState) -> Option<Stamp> {
    if !state.tombstones.is_empty() || !state.firsts.is_empty() || !state.ghosts.is_empty() {
        return None;
    }
    let mut stamp = None;
    for sibs in state.fields.values() {
        let [sib] = sibs.as_slice() else {
            return None;
        };
        if !matches!(sib.entry, Entry::Value(_)) || stamp.is_some_and(|s| s != sib.stamp) {
            return None;
        }
        stamp = Some(sib.stamp);
    }
    stamp
}

/// Writes the plain form: [`PLAIN`], the stamp, (field number, value) of each field.
fn write_plain(
    stamp: &Stamp,
    fields: &[(u32, &Value)],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    struct Fields<'a>(&'a [(u32, &'a Value)]);
    impl Serialize for Fields<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter())
        }
    }
    let blob = (plain_stamp_row(stamp), Fields(fields));
    // Written into a slice (several times faster than growing a vector byte by byte); a
    // record larger than the room there is measured first. (Not the buffer's whole
    // capacity: after one large record, every later one would clear all of it.)
    let mut room = 512;
    loop {
        out.clear();
        out.resize(room, 0);
        out[..PLAIN.len()].copy_from_slice(&PLAIN);
        match postcard::to_slice(&blob, &mut out[PLAIN.len()..]) {
            Ok(used) => {
                let n = PLAIN.len() + used.len();
                out.truncate(n);
                return Ok(());
            }
            Err(postcard::Error::SerializeBufferFull) => {
                let size =
                    postcard::serialize_with_flavor(&blob, postcard::ser_flavors::Size::default())
                        .map_err(|e| CodecError(e.to_string()))?;
                room = PLAIN.len() + size;
            }
            Err(e) => return Err(CodecError(e.to_string())),
        }
    }
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("stored record state is corrupt: {0}")]
pub struct CodecError(pub(crate) String);

/// Encodes `state`, numbering field names with `name_id`.
pub fn encode(
    state: &RecordState,
    name_id: impl FnMut(&str) -> Result<u32, CodecError>,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(state, name_id, &mut out)?;
    Ok(out)
}

/// [`encode`] into `out` (cleared first), which the caller reuses from record to record: the
/// blob is written straight from the state, the same bytes as [`Blob`] with its stamp
/// table, without building the blob first.
pub fn encode_into(
    state: &RecordState,
    mut name_id: impl FnMut(&str) -> Result<u32, CodecError>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.clear();
    if let Some(stamp) = plain_stamp(state) {
        let mut numbered = Vec::with_capacity(state.fields.len());
        for (name, sibs) in &state.fields {
            let Entry::Value(v) = &sibs[0].entry else {
                unreachable!("plain_stamp checked")
            };
            numbered.push((name_id(name)?, v));
        }
        return write_plain(&stamp, &numbered, out);
    }
    // Distinct stamps in order of first use (a record written by one commit has one).
    let mut stamps: Vec<Stamp> = Vec::with_capacity(4);
    let mut index = |s: &Stamp| -> u32 {
        match stamps.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                stamps.push(*s);
                (stamps.len() - 1) as u32
            }
        }
    };
    let mut field_ids = Vec::with_capacity(state.fields.len() + state.firsts.len());
    let mut sibling_stamps = Vec::with_capacity(state.fields.len());
    for (name, sibs) in &state.fields {
        field_ids.push(name_id(name)?);
        sibling_stamps.extend(sibs.iter().map(|s| index(&s.stamp)));
    }
    let tombstones: Vec<u32> = state.tombstones.iter().map(&mut index).collect();
    for (name, sib) in &state.firsts {
        field_ids.push(name_id(name)?);
        sibling_stamps.push(index(&sib.stamp));
    }
    let mut ghosts: Vec<GhostRow<&Entry>> = Vec::with_capacity(state.ghosts.len());
    for g in &state.ghosts {
        ghosts.push((
            name_id(&g.field)?,
            index(&g.sibling.stamp),
            &g.sibling.entry,
            g.under.iter().map(|d| (d.author.0, d.seq)).collect(),
            g.buried.iter().map(|&(m, s)| (m.0, s)).collect(),
        ));
    }
    let view = BlobView {
        state,
        stamps: &stamps,
        field_ids: &field_ids,
        sibling_stamps: &sibling_stamps,
        tombstones: &tombstones,
    };
    let taken = std::mem::take(out);
    *out = postcard::to_extend(&view, taken).map_err(|e| CodecError(e.to_string()))?;
    if !ghosts.is_empty() {
        let taken = std::mem::take(out);
        *out = postcard::to_extend(&ghosts, taken).map_err(|e| CodecError(e.to_string()))?;
    }
    Ok(())
}

/// A [`Blob`] read from the state it encodes: `field_ids` are the local numbers of the
/// state's fields then of its retired first values, `sibling_stamps` the stamp index of each
/// of their writes in the same order.
struct BlobView<'a> {
    state: &'a RecordState,
    stamps: &'a [Stamp],
    field_ids: &'a [u32],
    sibling_stamps: &'a [u32],
    tombstones: &'a [u32],
}

impl Serialize for BlobView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        /// The stamp table.
        struct Stamps<'a>(&'a [Stamp]);
        impl Serialize for Stamps<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(stamp_row))
            }
        }
        /// One field's writes: (stamp index, entry).
        struct Writes<'a>(&'a [Sibling], &'a [u32]);
        impl Serialize for Writes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.1.iter().zip(self.0).map(|(i, sib)| (*i, &sib.entry)))
            }
        }
        /// (field number, writes) of every field.
        struct Fields<'a>(&'a BlobView<'a>);
        impl Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let v = self.0;
                let mut seq = s.serialize_seq(Some(v.state.fields.len()))?;
                let mut at = 0;
                for (id, sibs) in v.field_ids.iter().zip(v.state.fields.values()) {
                    let idx = &v.sibling_stamps[at..at + sibs.len()];
                    at += sibs.len();
                    seq.serialize_element(&(*id, Writes(sibs, idx)))?;
                }
                seq.end()
            }
        }
        /// (field number, stamp index, entry) of every retired first value.
        struct Firsts<'a>(&'a BlobView<'a>);
        impl Serialize for Firsts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let v = self.0;
                let n = v.state.fields.len();
                let writes: usize = v.state.fields.values().map(Vec::len).sum();
                s.collect_seq(
                    v.field_ids[n..]
                        .iter()
                        .zip(&v.sibling_stamps[writes..])
                        .zip(v.state.firsts.values())
                        .map(|((id, i), sib)| (*id, *i, &sib.entry)),
                )
            }
        }
        let mut st = s.serialize_struct("Blob", 4)?;
        st.serialize_field("stamps", &Stamps(self.stamps))?;
        st.serialize_field("fields", &Fields(self))?;
        st.serialize_field("tombstones", self.tombstones)?;
        st.serialize_field("firsts", &Firsts(self))?;
        st.end()
    }
}

/// [`encode_into`] of the state a new record takes when one commit (`stamp`) sets each of
/// its fields once (`sets`, sorted by name and numbered: (local name, value)), written
/// without building the state.
pub fn encode_new_into(
    stamp: Stamp,
    sets: &[(u32, &Value)],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if sets.is_empty() {
        // No field: the general form's empty state.
        out.clear();
        out.extend_from_slice(&[0, 0, 0, 0]);
        return Ok(());
    }
    write_plain(&stamp, sets, out)
}

/// Decodes a blob, turning local field numbers back into names with `name`.
pub fn decode(
    bytes: &[u8],
    mut name: impl FnMut(u32) -> Result<String, CodecError>,
) -> Result<RecordState, CodecError> {
    if let Some(plain) = bytes.strip_prefix(&PLAIN) {
        match decode_plain(plain, &mut name) {
            Ok(state) => return Ok(state),
            // The only blobs of the general form that start like a plain one hold one field
            // with no writes and nothing else (4 to 8 bytes, as a malformed snapshot may
            // bring): they never read as plain, and read here as what they are.
            Err(plain_error) => {
                return decode_general(bytes, name).map_err(|_| plain_error);
            }
        }
    }
    decode_general(bytes, name)
}

/// Reads a plain blob after its [`PLAIN`] prefix.
fn decode_plain(
    plain: &[u8],
    name: &mut impl FnMut(u32) -> Result<String, CodecError>,
) -> Result<RecordState, CodecError> {
    {
        let ((row, fields), rest): (PlainBlob, &[u8]) =
            postcard::take_from_bytes(plain).map_err(|e| CodecError(e.to_string()))?;
        if !rest.is_empty() || fields.is_empty() {
            return Err(CodecError(
                "a plain record with trailing bytes or no field".into(),
            ));
        }
        let stamp = plain_row_stamp(&row)?;
        let mut state = RecordState::default();
        for (id, v) in fields {
            let sib = Sibling {
                stamp,
                entry: Entry::Value(v),
            };
            if state.fields.insert(name(id)?, vec![sib]).is_some() {
                return Err(CodecError(format!("field {id} twice in a plain record")));
            }
        }
        Ok(state)
    }
}

/// Reads a blob of the general form.
fn decode_general(
    bytes: &[u8],
    mut name: impl FnMut(u32) -> Result<String, CodecError>,
) -> Result<RecordState, CodecError> {
    let (blob, rest): (Blob<Entry>, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError(e.to_string()))?;
    let ghost_rows: Vec<GhostRow<Entry>> = if rest.is_empty() {
        Vec::new()
    } else {
        postcard::from_bytes(rest).map_err(|e| CodecError(e.to_string()))?
    };
    let stamps: Vec<Stamp> = blob.stamps.iter().map(row_stamp).collect();
    let stamp = |i: u32| {
        stamps
            .get(i as usize)
            .copied()
            .ok_or_else(|| CodecError(format!("stamp {i} out of range")))
    };
    let mut fields = BTreeMap::new();
    for (id, entries) in blob.fields {
        let mut sibs = Vec::with_capacity(entries.len());
        for (i, entry) in entries {
            sibs.push(Sibling {
                stamp: stamp(i)?,
                entry,
            });
        }
        fields.insert(name(id)?, sibs);
    }
    let tombstones = blob
        .tombstones
        .into_iter()
        .map(stamp)
        .collect::<Result<_, _>>()?;
    let mut firsts = BTreeMap::new();
    for (id, i, entry) in blob.firsts {
        firsts.insert(
            name(id)?,
            Sibling {
                stamp: stamp(i)?,
                entry,
            },
        );
    }
    let mut ghosts = Vec::with_capacity(ghost_rows.len());
    for (id, i, entry, under, buried) in ghost_rows {
        ghosts.push(Ghost {
            field: name(id)?,
            sibling: Sibling {
                stamp: stamp(i)?,
                entry,
            },
            under: under
                .into_iter()
                .map(|(a, s)| Dot::new(MemberId(a), s))
                .collect(),
            buried: buried.into_iter().map(|(a, s)| (MemberId(a), s)).collect(),
        });
    }
    Ok(RecordState {
        fields,
        tombstones,
        firsts,
        ghosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{Op, Value, VersionVector};

    /// The blob built whole, as the codec first wrote it: [`encode_into`] must write the
    /// same bytes.
    fn encode_reference(state: &RecordState, name_id: impl Fn(&str) -> u32) -> Vec<u8> {
        let mut stamps: Vec<Stamp> = Vec::new();
        let mut index = |s: &Stamp| -> u32 {
            match stamps.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => {
                    stamps.push(*s);
                    (stamps.len() - 1) as u32
                }
            }
        };
        let mut fields = Vec::new();
        for (name, sibs) in &state.fields {
            let entries: Vec<(u32, &Entry)> =
                sibs.iter().map(|s| (index(&s.stamp), &s.entry)).collect();
            fields.push((name_id(name), entries));
        }
        let tombstones = state.tombstones.iter().map(&mut index).collect();
        let mut firsts = Vec::new();
        for (name, sib) in &state.firsts {
            firsts.push((name_id(name), index(&sib.stamp), &sib.entry));
        }
        let mut ghosts: Vec<GhostRow<&Entry>> = Vec::new();
        for g in &state.ghosts {
            ghosts.push((
                name_id(&g.field),
                index(&g.sibling.stamp),
                &g.sibling.entry,
                g.under.iter().map(|d| (d.author.0, d.seq)).collect(),
                g.buried.iter().map(|&(m, s)| (m.0, s)).collect(),
            ));
        }
        let blob = Blob {
            stamps: stamps
                .iter()
                .map(|s| {
                    (
                        s.dot.author.0,
                        s.dot.seq,
                        s.hlc.0,
                        s.rank.wrapping_sub(s.hlc.ms()) as i64,
                    )
                })
                .collect(),
            fields,
            tombstones,
            firsts,
        };
        let mut out = postcard::to_allocvec(&blob).unwrap();
        if !ghosts.is_empty() {
            out.extend(postcard::to_allocvec(&ghosts).unwrap());
        }
        out
    }

    #[test]
    fn blobs_written_from_the_state_are_the_blobs_built_whole() {
        let names = ["a", "b", "c", "tags", "n"];
        let id = |n: &str| names.iter().position(|x| *x == n).unwrap() as u32;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |k: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % k
        };
        let mut buf = Vec::new();
        let mut kinds = [0usize; 4];
        let mut plain = 0;
        for _ in 0..300 {
            let mut r = RecordState::default();
            let mut seqs = [0u64; 3];
            for _ in 0..next(12) + 1 {
                let a = next(3) as usize;
                seqs[a] += 1;
                let mut ctx = VersionVector::new();
                for (o, &n) in seqs.iter().enumerate() {
                    let seen = if o == a { n - 1 } else { next(n + 1) };
                    ctx.set(MemberId(o as u32 + 1), seen);
                }
                let stamp = Stamp::new(
                    Dot::new(MemberId(a as u32 + 1), seqs[a]),
                    Hlc::from_parts(1_763_000_000_000 + next(100_000), 0),
                );
                let f = names[next(3) as usize].to_string();
                let op = match next(7) {
                    0 => Op::Delete,
                    1 => Op::Incr("n".into(), next(9) as i64 - 4),
                    2 => Op::Add("tags".into(), format!("t{}", next(3))),
                    3 => Op::Remove("tags".into(), format!("t{}", next(3))),
                    4 => Op::Set(f, Value::Float(next(1000) as f64 / 10.0)),
                    5 => Op::Set(f, Value::Str("x".repeat(next(4) as usize))),
                    _ => Op::Set(f, Value::Int(next(100) as i64)),
                };
                r.apply_owned(stamp, &ctx, op);
            }
            kinds[0] += usize::from(!r.ghosts.is_empty());
            kinds[1] += usize::from(!r.firsts.is_empty());
            kinds[2] += usize::from(!r.tombstones.is_empty());
            kinds[3] += usize::from(r.fields.values().any(|s| s.len() > 1));
            encode_into(&r, |n| Ok(id(n)), &mut buf).unwrap();
            let whole = encode_reference(&r, id);
            match plain_stamp(&r) {
                // Plain records take the short form, and less room.
                Some(_) => {
                    plain += 1;
                    assert!(buf.starts_with(&PLAIN) && buf.len() < whole.len(), "{r:?}");
                }
                None => assert_eq!(buf, whole, "{r:?}"),
            }
            assert_eq!(decode(&buf, |i| Ok(names[i as usize].into())).unwrap(), r);
            // Blobs of the general form, as stores wrote them before the plain one,
            // still read.
            assert_eq!(decode(&whole, |i| Ok(names[i as usize].into())).unwrap(), r);
        }
        // Every part of the blob was exercised.
        assert!(kinds.iter().all(|&k| k > 10), "{kinds:?}");
        assert!(plain > 10, "{plain} plain records");
    }

    #[test]
    fn new_records_written_from_their_sets_are_the_states_they_make() {
        let names = ["age", "note", "village", "weight"];
        let stamp = Stamp::ranked(
            Dot::new(MemberId(4), 12),
            Hlc::from_parts(1_763_000_000_500, 3),
            Some(Hlc::from_parts(1_762_000_000_000, 0)),
        );
        let values = [
            Value::Int(34),
            // (Longer than the room a blob is first written into.)
            Value::Str("a long note ".repeat(500)),
            Value::Str("Kisumu".into()),
            Value::Float(61.5),
        ];
        let mut buf = Vec::new();
        // Every subset of the fields, including none.
        for mask in 0..16u32 {
            let mut state = RecordState::default();
            let mut sets: Vec<(u32, &Value)> = Vec::new();
            for (i, (name, v)) in names.iter().zip(&values).enumerate() {
                if mask & (1 << i) != 0 {
                    state.apply_owned(
                        stamp,
                        &VersionVector::new(),
                        Op::Set((*name).into(), v.clone()),
                    );
                    sets.push((i as u32, v));
                }
            }
            encode_new_into(stamp, &sets, &mut buf).unwrap();
            let id = |n: &str| Ok(names.iter().position(|x| *x == n).unwrap() as u32);
            assert_eq!(buf, encode(&state, id).unwrap(), "fields {mask:#b}");
        }
    }

    #[test]
    fn a_general_blob_that_starts_like_a_plain_one_reads_as_what_it_is() {
        // One field with no writes (a malformed snapshot may bring it): the general form
        // writes [0, 1, field, 0, 0, 0].
        let mut r = RecordState::default();
        r.fields.insert("age".into(), Vec::new());
        let bytes = encode(&r, |_| Ok(3)).unwrap();
        assert_eq!(bytes, [0, 1, 3, 0, 0, 0]);
        assert_eq!(decode(&bytes, |_| Ok("age".into())).unwrap(), r);
        for id in [0u32, 127, 128, 1 << 20, u32::MAX] {
            let mut bytes = encode_reference(&r, |_| id);
            assert!(bytes.starts_with(&PLAIN));
            assert_eq!(decode(&bytes, |_| Ok("age".into())).unwrap(), r, "{id}");
            // A plain blob cut short is refused, never read as something else.
            bytes.truncate(3);
            assert!(decode(&bytes, |_| Ok("age".into())).is_err());
        }
    }

    #[test]
    fn record_state_round_trips_and_shares_stamps() {
        let mut r = RecordState::default();
        let a = Stamp::new(
            Dot::new(MemberId(1), 7),
            Hlc::from_parts(1_763_000_000_000, 2),
        );
        let b = Stamp::ranked(
            Dot::new(MemberId(2), 3),
            Hlc::from_parts(1_763_000_000_500, 0),
            Some(Hlc::from_parts(1_762_000_000_000, 0)),
        );
        let none = VersionVector::new();
        for (f, v) in [
            ("village", Value::Str("Kisumu".into())),
            ("age", Value::Int(34)),
        ] {
            r.apply(a, &none, &Op::Set(f.into(), v));
        }
        r.apply(b, &none, &Op::Set("age".into(), Value::Int(35)));
        let covers_a: VersionVector = [(MemberId(1), 7)].into_iter().collect();
        r.apply(
            b,
            &covers_a,
            &Op::Set("village".into(), Value::Str("Obunga".into())),
        );
        assert!(!r.firsts.is_empty(), "the first village was retired");
        let names = ["age", "village"];
        let bytes = encode(&r, |n| {
            Ok(names.iter().position(|x| *x == n).unwrap() as u32)
        })
        .unwrap();
        let back = decode(&bytes, |i| Ok(names[i as usize].to_string())).unwrap();
        assert_eq!(back, r);
        assert!(bytes.len() < 90, "{} bytes", bytes.len());
        assert!(decode(&bytes[..bytes.len() - 1], |i| Ok(names[i as usize].into())).is_err());

        // Deleted by member 3: the values stay as ghosts, written after the old layout.
        let c = Stamp::new(
            Dot::new(MemberId(3), 1),
            Hlc::from_parts(1_763_000_001_000, 0),
        );
        let seen: VersionVector = [(MemberId(1), 7), (MemberId(2), 3)].into_iter().collect();
        r.apply(c, &seen, &Op::Delete);
        assert_eq!(r.ghosts.len(), 3, "two concurrent ages and the village");
        let with_ghosts = encode(&r, |n| {
            Ok(names.iter().position(|x| *x == n).unwrap() as u32)
        })
        .unwrap();
        let back = decode(&with_ghosts, |i| Ok(names[i as usize].to_string())).unwrap();
        assert_eq!(back, r);
        assert!(
            decode(&with_ghosts[..with_ghosts.len() - 1], |i| Ok(names
                [i as usize]
                .into()))
            .is_err()
        );
    }
}
