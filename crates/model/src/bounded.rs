//! Decoding with bounded allocation: sequences that refuse more than a stated number of
//! elements *before* allocating them, and a per-commit budget of ops.
//!
//! postcard states a sequence's length up front, so a hostile length is caught before any
//! element is decoded. Without these bounds a 16 MiB item of one-byte elements would decode
//! into hundreds of megabytes of structures (bundles/SPEC.md §8 lists the limits).

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// Which limit a bounded sequence enforces (the const parameter of [`vec`]), so a refusal can
/// name it: postcard keeps no message of a custom decoding error.
pub mod what {
    /// Entries of a version vector.
    pub const VECTOR: u8 = 0;
    /// Names in an author's name table.
    pub const NAMES: u8 = 1;
    /// Changes in one commit.
    pub const CHANGES: u8 = 2;
    /// Ops in one commit.
    pub const OPS: u8 = 3;
    /// Causal-context entries of a commit.
    pub const DEPS: u8 = 4;
}

/// A limit that input went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// What was counted (one of [`what`]).
    pub what: u8,
    /// The limit.
    pub max: usize,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = match self.what {
            what::VECTOR => "members in one version vector",
            what::NAMES => "names in one name table",
            what::CHANGES => "changes in one commit",
            what::OPS => "ops in one commit",
            what::DEPS => "causal-context entries in one commit",
            _ => "elements",
        };
        write!(f, "more than {} {noun} (the limit)", self.max)
    }
}

thread_local! {
    /// Ops the commit being decoded on this thread may still hold (see [`OpBudget`]).
    static OPS_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// The last limit a decode on this thread went over ([`take_exceeded`]).
    static EXCEEDED: Cell<Option<Exceeded>> = const { Cell::new(None) };
}

/// The limit the last failed decode on this thread went over, if that is why it failed.
/// Call it right after a decoding error; it forgets the limit.
pub fn take_exceeded() -> Option<Exceeded> {
    EXCEEDED.with(|c| c.take())
}

/// Forgets a limit recorded by an earlier decode (call before decoding).
pub fn clear_exceeded() {
    EXCEEDED.with(|c| c.set(None));
}

pub(crate) fn exceeded<E: Error>(what: u8, max: usize) -> E {
    let e = Exceeded { what, max };
    EXCEEDED.with(|c| c.set(Some(e)));
    E::custom(e)
}

/// Deserializes a `Vec<T>` of at most `MAX` elements; more is a decoding error, recorded for
/// [`take_exceeded`]. Use with
/// `#[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX, { what::NAMES }>")]`.
pub fn vec<'de, D, T, const MAX: usize, const WHAT: u8>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, const MAX: usize, const WHAT: u8>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize, const WHAT: u8> Visitor<'de> for V<T, MAX, WHAT> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            if hint > MAX {
                return Err(exceeded(WHAT, MAX));
            }
            // Never trust a stated length for the allocation beyond a small start.
            let mut out = Vec::with_capacity(hint.min(4096));
            while let Some(x) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(exceeded(WHAT, MAX));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T, MAX, WHAT>(PhantomData))
}

/// The ops budget of one decode (a commit, a snapshot's record state): while it lives,
/// decoding ops (or siblings, tombstones) on this thread draws from it, and input with more
/// than [`crate::limits::MAX_OPS`] fails before they are allocated. Decoding is synchronous,
/// so a thread-local budget is exact.
pub struct OpBudget {
    previous: Option<usize>,
}

impl OpBudget {
    /// Starts a budget of `max` ops for the decode that follows.
    pub fn start(max: usize) -> OpBudget {
        OpBudget {
            previous: OPS_LEFT.with(|c| c.replace(Some(max))),
        }
    }
}

impl Drop for OpBudget {
    fn drop(&mut self) {
        OPS_LEFT.with(|c| c.set(self.previous));
    }
}

/// Deserializes a commit's `Vec` of ops (or a record's siblings), drawing each from the
/// current [`OpBudget`].
pub(crate) fn ops<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence of ops")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            let take = |n: usize| -> Result<(), A::Error> {
                OPS_LEFT.with(|c| match c.get() {
                    Some(left) if left < n => Err(exceeded(what::OPS, crate::limits::MAX_OPS)),
                    Some(left) => {
                        c.set(Some(left - n));
                        Ok(())
                    }
                    None => Ok(()),
                })
            };
            // The stated length is checked against the budget before anything is allocated.
            take(hint)?;
            let mut out = Vec::with_capacity(hint.min(4096));
            while let Some(x) = seq.next_element()? {
                if out.len() >= hint {
                    take(1)?;
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T>(PhantomData))
}

/// A `Vec` deserialized through [`ops`] (for map values).
struct OpsVec<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OpsVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ops(d).map(OpsVec)
    }
}

/// Deserializes a map of at most `MAX` entries whose values are sequences drawn from the
/// current [`OpBudget`] (a record's fields and their siblings).
pub(crate) fn map_of_ops<'de, D, K, T, const MAX: usize, const WHAT: u8>(
    d: D,
) -> Result<std::collections::BTreeMap<K, Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    T: Deserialize<'de>,
{
    let m: std::collections::BTreeMap<K, OpsVec<T>> = map::<_, _, _, MAX, WHAT>(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Deserializes a map of at most `MAX` entries (counted before they are allocated).
pub(crate) fn map<'de, D, K, V, const MAX: usize, const WHAT: u8>(
    d: D,
) -> Result<std::collections::BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct M<K, V, const MAX: usize, const WHAT: u8>(PhantomData<(K, V)>);
    impl<'de, K, V, const MAX: usize, const WHAT: u8> Visitor<'de> for M<K, V, MAX, WHAT>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        type Value = std::collections::BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of at most {MAX} entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            if m.size_hint().unwrap_or(0) > MAX {
                return Err(exceeded(WHAT, MAX));
            }
            let mut out = std::collections::BTreeMap::new();
            let mut n = 0usize;
            while let Some((k, v)) = m.next_entry()? {
                n += 1;
                if n > MAX {
                    return Err(exceeded(WHAT, MAX));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(M::<K, V, MAX, WHAT>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Small(#[serde(deserialize_with = "vec::<_, _, 3, { what::NAMES }>")] Vec<u8>);

    #[derive(Deserialize, Debug)]
    struct Ops(#[serde(deserialize_with = "ops")] Vec<u8>);

    #[test]
    fn a_stated_length_above_the_limit_fails_before_allocating() {
        assert_eq!(
            postcard::from_bytes::<Small>(&[3, 1, 2, 3]).unwrap().0,
            [1, 2, 3]
        );
        // Length 4 (one more than allowed), and a length of 2^32 with no elements at all.
        clear_exceeded();
        assert!(postcard::from_bytes::<Small>(&[4, 1, 2, 3, 4]).is_err());
        let e = take_exceeded().expect("the limit is recorded");
        assert_eq!(
            e,
            Exceeded {
                what: what::NAMES,
                max: 3
            }
        );
        assert_eq!(
            e.to_string(),
            "more than 3 names in one name table (the limit)"
        );
        // A stated length of 2^32 with nothing behind it (postcard itself refuses lengths
        // longer than the input).
        assert!(postcard::from_bytes::<Small>(&[0x80, 0x80, 0x80, 0x80, 0x10]).is_err());
    }

    #[test]
    fn the_op_budget_spans_every_sequence_of_one_decode() {
        let _b = OpBudget::start(3);
        assert_eq!(postcard::from_bytes::<Ops>(&[2, 7, 7]).unwrap().0, [7, 7]);
        // One left: a second sequence of two exceeds the budget.
        assert!(postcard::from_bytes::<Ops>(&[2, 7, 7]).is_err());
        assert_eq!(take_exceeded().map(|e| e.what), Some(what::OPS));
        drop(_b);
        // Without a budget, nothing is counted.
        assert!(postcard::from_bytes::<Ops>(&[2, 7, 7]).is_ok());
    }
}
