//! The dataset's zstd dictionaries (bundles/SPEC.md §18): an admin trains one on the
//! dataset's own records and publishes it as the record `_dicts/K`; once every member holds
//! it, small bundles are compressed with it, which makes ten new records fit six text SMS
//! where they took seven.

use crate::engine::{Engine, IngestError, MEMBERS, frozen_from, member_reads};
use crate::storage::Storage;
use ferry_bundle::Dictionary;
use ferry_model::commit::{ChainContext, Commit};
use ferry_model::record::Entry;
use ferry_model::{Change, Dot, Hlc, MemberId, Op, Value};

// wire-format: begin
/// The reserved collection that holds the dataset's dictionaries: record `K` (decimal).
pub const DICTS: &str = "_dicts";
/// The field of `_dicts/K` that holds the dictionary's bytes.
pub const DICT_FIELD: &str = "zstd";
// wire-format: end

/// The field of `_dicts/K` that says how many records the admin held when it trained it.
pub const DICT_RECORDS_FIELD: &str = "records";

/// An admin trains the dataset's first dictionary once it holds this many records…
pub const DICT_FIRST_AT: u64 = 1_000;
/// …and a new one each time the records grow this many times over…
pub const DICT_GROWTH: u64 = 8;
/// …until one was trained on at least this many.
pub const DICT_LAST_AT: u64 = 100_000;
/// How large a dictionary an admin trains (bytes): measured best for ten-visit bundles
/// among 1, 2, 4 and 8 KiB (crates/bench, `ferry-bench all`).
pub const DICT_SIZE: usize = 2 * 1024;
/// How many records it trains on (each encoded as a one-record commit).
pub const DICT_SAMPLES: usize = 4_000;

type Res<T, S> = Result<T, IngestError<<S as Storage>::Error>>;

fn st<S: Storage, T>(r: Result<T, S::Error>) -> Res<T, S> {
    r.map_err(IngestError::Storage)
}

/// Dictionary `k` as `store` holds it, with the commit that wrote it: only while the field
/// `zstd` of `_dicts/K` holds exactly one value, bytes of 1 to
/// [`ferry_bundle::MAX_DICTIONARY`] (SPEC §18; only admins' writes are ever stored there).
pub fn dictionary<S: Storage>(store: &S, k: u32) -> Result<Option<(Vec<u8>, Dot)>, S::Error> {
    let Some(rec) = store.record(DICTS, &k.to_string())? else {
        return Ok(None);
    };
    Ok(match rec.fields.get(DICT_FIELD).map(Vec::as_slice) {
        Some(
            [
                ferry_model::record::Sibling {
                    stamp,
                    entry: Entry::Value(Value::Bytes(b)),
                },
            ],
        ) if !b.is_empty() && b.len() <= ferry_bundle::MAX_DICTIONARY => {
            Some((b.clone(), stamp.dot))
        }
        _ => None,
    })
}

/// When zstd cannot train a dictionary (too few samples, under ten times the dictionary's
/// size, or too uniform ones), the samples themselves serve as one (zstd's raw-content dictionary, SPEC §18): the last
/// [`DICT_SIZE`] bytes of them, or `None` under 256 bytes.
fn raw_dictionary(samples: &[Vec<u8>]) -> Option<Vec<u8>> {
    let all = samples.concat();
    if all.len() < 256 {
        return None;
    }
    let mut raw = all[all.len().saturating_sub(DICT_SIZE)..].to_vec();
    // Bytes that start with a trained dictionary's magic number would be read as one.
    if raw.starts_with(&[0x37, 0xA4, 0x30, 0xEC]) {
        raw[0] = 0;
    }
    Some(raw)
}

/// The dictionaries `_dicts/1`, `_dicts/2`, … this store holds a record of, in order (ferry
/// numbers them without gaps).
fn numbered<S: Storage>(store: &S) -> Result<Vec<(u32, ferry_model::RecordState)>, S::Error> {
    let mut out = Vec::new();
    for k in 1u32.. {
        match store.record(DICTS, &k.to_string())? {
            Some(r) => out.push((k, r)),
            None => break,
        }
    }
    Ok(out)
}

impl Engine {
    /// The newest dictionary every member is known to hold and read (SPEC §18): each member
    /// that is neither removed nor cancelled says it reads version 13, and its receipts
    /// show the commit that wrote the dictionary. With `recipient`, only that member (a
    /// bundle only it receives). `None` when there is none, so a bundle is compressed
    /// without one.
    pub fn shared_dictionary<S: Storage>(
        &self,
        store: &S,
        recipient: Option<MemberId>,
    ) -> Res<Option<Dictionary>, S> {
        let mut members = Vec::new();
        for m in st::<S, _>(store.members())? {
            if recipient.is_some_and(|r| r != m.member) {
                continue;
            }
            let rec = st::<S, _>(store.record(MEMBERS, &m.member.0.to_string()))?;
            if rec.as_ref().is_some_and(|r| frozen_from(r).is_some()) {
                continue;
            }
            if member_reads(rec.as_ref()) < i64::from(ferry_bundle::VERSION_DICTS) {
                return Ok(None);
            }
            if m.member != self.me {
                members.push(st::<S, _>(store.peer(m.member))?);
            }
        }
        let all = st::<S, _>(numbered(store))?;
        for (k, _) in all.iter().rev() {
            let Some((bytes, dot)) = st::<S, _>(dictionary(store, *k))? else {
                continue;
            };
            if members.iter().all(|held| held.covers(dot)) {
                return Ok(Some(Dictionary { number: *k, bytes }));
            }
        }
        Ok(None)
    }

    /// The dictionary `k` as this node holds it, for reading a bundle that names it.
    pub(crate) fn dictionary_bytes<S: Storage>(store: &S, k: u32) -> Option<Vec<u8>> {
        dictionary(store, k).ok().flatten().map(|(b, _)| b)
    }

    /// When this node is an admin and a dictionary is due (the first at
    /// [`DICT_FIRST_AT`] records, then each time they grow [`DICT_GROWTH`] times over,
    /// until one was trained on [`DICT_LAST_AT`]), trains one on its records and returns
    /// the change that publishes it as `_dicts/K`, for the caller to commit. `None` when
    /// none is due, or when zstd could not train one (too few distinct records).
    pub fn train_dictionary<S: Storage>(&self, store: &S) -> Res<Option<Change>, S> {
        self.train_dictionary_from(store, DICT_FIRST_AT)
    }

    /// [`Engine::train_dictionary`] with the first dictionary due at `first_at` records (a
    /// seeded simulation's datasets are small).
    pub fn train_dictionary_from<S: Storage>(
        &self,
        store: &S,
        first_at: u64,
    ) -> Res<Option<Change>, S> {
        let applied = st::<S, _>(store.applied())?;
        if !crate::roles::is_admin_now(store, self.me, &applied)? {
            return Ok(None);
        }
        let all = st::<S, _>(numbered(store))?;
        let trained_on = all
            .last()
            .map(|(_, r)| {
                r.fields
                    .get(DICT_RECORDS_FIELD)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| match &s.entry {
                        Entry::Value(Value::Int(n)) => u64::try_from(*n).ok(),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(u64::MAX)
            })
            .unwrap_or(0);
        if trained_on >= DICT_LAST_AT {
            return Ok(None);
        }
        let count = st::<S, _>(store.record_count())?;
        let due = if all.is_empty() {
            count >= first_at
        } else {
            count >= trained_on.saturating_mul(DICT_GROWTH)
        };
        if !due {
            return Ok(None);
        }
        let samples = self.samples(store, count)?;
        // zstd trains well on samples of many times the dictionary's size; on fewer, the
        // samples themselves do as well, at once.
        let bytes: usize = samples.iter().map(Vec::len).sum();
        let trained = if bytes >= 10 * DICT_SIZE {
            zstd::dict::from_samples(&samples, DICT_SIZE).ok()
        } else {
            None
        };
        let Some(dict) = trained.or_else(|| raw_dictionary(&samples)) else {
            return Ok(None);
        };
        let k = all.len() as u32 + 1;
        Ok(Some(Change::Record {
            collection: DICTS.into(),
            id: k.to_string(),
            ops: vec![
                Op::Set(DICT_FIELD.into(), Value::Bytes(dict)),
                Op::Set(
                    DICT_RECORDS_FIELD.into(),
                    Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
                ),
            ],
        }))
    }

    /// Up to [`DICT_SAMPLES`] of the records outside the reserved collections, spread over
    /// all of them, each as the row-form bytes of a commit of this node's writing that
    /// record's values: what small bundles carry.
    fn samples<S: Storage>(&self, store: &S, count: u64) -> Res<Vec<Vec<u8>>, S> {
        let base = st::<S, _>(store.chain(self.me))?
            .unwrap_or_else(|| ChainContext::new(self.dataset, self.me));
        // Every `step`-th record from the start, so a large store is not read whole.
        let step = (count / DICT_SAMPLES as u64).clamp(1, 16);
        let mut picked = Vec::new();
        let mut i = 0u64;
        let mut full = false;
        let visited = store.visit_records(&mut |collection, id, state| {
            if picked.len() >= DICT_SAMPLES {
                full = true;
                return Err(S::missing("(enough samples)".into()));
            }
            if collection.starts_with('_') {
                return Ok(());
            }
            i += 1;
            if i % step != 0 {
                return Ok(());
            }
            let ops: Vec<Op> = state
                .fields
                .iter()
                .filter_map(|(f, sibs)| match sibs.first().map(|s| &s.entry) {
                    Some(Entry::Value(v)) => Some(Op::Set(f.clone(), v.clone())),
                    _ => None,
                })
                .collect();
            if !ops.is_empty() {
                picked.push(Change::Record {
                    collection: collection.to_string(),
                    id: id.to_string(),
                    ops,
                });
            }
            Ok(())
        });
        if !full {
            st::<S, _>(visited)?;
        }
        // The first sample brings the names into the author's table, as its first commit
        // of them would; the others are encoded after it, as later commits are.
        let mut ctx = base;
        let mut hlc = ctx.hlc;
        let mut out = Vec::with_capacity(picked.len());
        for (n, change) in picked.into_iter().enumerate() {
            hlc = Hlc::from_parts(hlc.ms() + 600_000, 0);
            let commit = Commit {
                author: self.me,
                seq: ctx.seq + 1,
                hlc,
                deps: ferry_model::VersionVector::new(),
                seen: None,
                changes: vec![change],
            };
            let mut c = ctx.clone();
            if let Ok(bytes) = c.encode(&commit) {
                out.push(bytes);
                if n == 0 {
                    ctx = c;
                }
            }
        }
        Ok(out)
    }
}
