//! The on-disk encoding of a record's merge state.
//!
//! Each record is one row. Its blob lists the distinct commit stamps once and refers to
//! them by position, and names fields by local numbers (table `local_names`), so a record
//! written by one commit costs one stamp, not one per field.

use ferry_model::record::{Entry, Ghost, Sibling};
use ferry_model::{Dot, Hlc, MemberId, RecordState, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored blob; `E` is `Entry` when reading and `&Entry` when writing (same bytes,
/// no copies).
#[derive(Serialize, Deserialize)]
struct Blob<E> {
    /// (author, seq, hlc, rank − clock ms as a signed number) of every stamp used below.
    stamps: Vec<(u32, u64, u64, i64)>,
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

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("stored record state is corrupt: {0}")]
pub struct CodecError(pub(crate) String);

/// Encodes `state`, numbering field names with `name_id`.
pub fn encode(
    state: &RecordState,
    mut name_id: impl FnMut(&str) -> Result<u32, CodecError>,
) -> Result<Vec<u8>, CodecError> {
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
    let mut fields = Vec::with_capacity(state.fields.len());
    for (name, sibs) in &state.fields {
        let entries = sibs.iter().map(|s| (index(&s.stamp), &s.entry)).collect();
        fields.push((name_id(name)?, entries));
    }
    let tombstones = state.tombstones.iter().map(&mut index).collect();
    let mut firsts = Vec::with_capacity(state.firsts.len());
    for (name, sib) in &state.firsts {
        firsts.push((name_id(name)?, index(&sib.stamp), &sib.entry));
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
    // Sized first, so a record holding a large value takes its size once, not twice (a
    // growing vector doubles).
    let size = postcard::serialize_with_flavor(&blob, postcard::ser_flavors::Size::default())
        .map_err(|e| CodecError(e.to_string()))?;
    let out = postcard::to_extend(&blob, Vec::with_capacity(size))
        .map_err(|e| CodecError(e.to_string()))?;
    if ghosts.is_empty() {
        return Ok(out);
    }
    postcard::to_extend(&ghosts, out).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a blob, turning local field numbers back into names with `name`.
pub fn decode(
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
    let stamps: Vec<Stamp> = blob
        .stamps
        .iter()
        .map(|&(a, s, h, r)| Stamp {
            dot: Dot::new(MemberId(a), s),
            hlc: Hlc(h),
            rank: Hlc(h).ms().wrapping_add(r as u64),
        })
        .collect();
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
