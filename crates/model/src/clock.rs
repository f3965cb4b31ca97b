//! Clocks: version vectors for causality, hybrid logical clocks for time.
//!
//! A [`VersionVector`] says which commits a replica (or a commit's author) has seen: for each
//! member, the highest commit number such that all of that member's commits up to it are
//! known. Causality and concurrency are decided only by version vectors.
//!
//! An [`Hlc`] (hybrid logical clock) stamps each commit with a time close to the wall clock
//! that never goes backwards and is always later than everything its author had seen. It is
//! used for display and as a deterministic tie-break between concurrent writes, never to
//! decide what happened before what.

use crate::{Dot, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

// wire-format: begin
/// A hybrid logical clock reading: milliseconds since the Unix epoch in the high 48 bits and a
/// logical counter in the low 16 bits. Comparing two `Hlc`s compares time first, then counter.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Hlc(pub u64);
// wire-format: end

impl Hlc {
    /// Largest physical time an `Hlc` can carry (year 10889).
    pub const MAX_MS: u64 = (1 << 48) - 1;

    /// Builds a reading from milliseconds and a counter. Milliseconds above [`Hlc::MAX_MS`]
    /// are clamped.
    pub fn from_parts(ms: u64, counter: u16) -> Hlc {
        Hlc((ms.min(Self::MAX_MS) << 16) | counter as u64)
    }

    /// Milliseconds since the Unix epoch.
    pub fn ms(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter.
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The reading for a new local event at wall time `now_ms`, given the latest reading this
    /// node has issued or seen (`self`). Strictly greater than `self`; `None` only when
    /// `self` is the largest reading there is.
    pub fn tick(self, now_ms: u64) -> Option<Hlc> {
        let now_ms = now_ms.min(Self::MAX_MS);
        if now_ms > self.ms() {
            Some(Hlc::from_parts(now_ms, 0))
        } else if self.counter() < u16::MAX {
            Some(Hlc(self.0 + 1))
        } else if self.ms() < Self::MAX_MS {
            Some(Hlc::from_parts(self.ms() + 1, 0))
        } else {
            None
        }
    }

    /// What a node remembers after receiving a commit stamped `other` at wall time `now_ms`:
    /// the later reading, but never more than [`MAX_DRIFT_MS`] ahead of its own wall clock.
    /// A device whose clock is far ahead therefore cannot drag every other clock with it;
    /// causality never depends on this (it is decided by version vectors).
    pub fn observe(self, other: Hlc, now_ms: u64) -> Hlc {
        let ceiling = Hlc::from_parts(now_ms.saturating_add(MAX_DRIFT_MS), u16::MAX);
        self.max(other.min(ceiling))
    }
}

/// How far ahead of the local wall clock a received clock reading may move the local hybrid
/// clock (one hour).
pub const MAX_DRIFT_MS: u64 = 3_600_000;

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms(), self.counter())
    }
}

// wire-format: begin
/// For each member, how many of its commits (a prefix 1..=n) are covered. Members that are
/// absent count as 0. Encoded as a postcard map of `(member, n)` pairs in member order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize)]
pub struct VersionVector(BTreeMap<MemberId, u64>);

/// Decoding refuses more than [`crate::limits::MAX_VECTOR`] entries (before allocating them)
/// and members out of ascending order; zero entries are dropped.
impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version vector")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionVector, A::Error> {
                use serde::de::Error;
                let max = crate::limits::MAX_VECTOR;
                if map.size_hint().unwrap_or(0) > max {
                    return Err(crate::bounded::exceeded(crate::bounded::what::VECTOR, max));
                }
                let mut out = BTreeMap::new();
                let mut last: Option<MemberId> = None;
                let mut count = 0usize;
                while let Some((m, n)) = map.next_entry::<MemberId, u64>()? {
                    count += 1;
                    if count > max {
                        return Err(crate::bounded::exceeded(crate::bounded::what::VECTOR, max));
                    }
                    if last.is_some_and(|l| m <= l) {
                        return Err(A::Error::custom("version vector members out of order"));
                    }
                    last = Some(m);
                    if n > i64::MAX as u64 {
                        return Err(A::Error::custom("a commit number past the largest"));
                    }
                    if n > 0 {
                        out.insert(m, n);
                    }
                }
                Ok(VersionVector(out))
            }
        }
        d.deserialize_map(V)
    }
}
// wire-format: end

impl VersionVector {
    /// The empty vector: nothing seen.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// How many of `member`'s commits are covered.
    pub fn get(&self, member: MemberId) -> u64 {
        self.0.get(&member).copied().unwrap_or(0)
    }

    /// Sets the entry for `member`; 0 removes it.
    pub fn set(&mut self, member: MemberId, n: u64) {
        if n == 0 {
            self.0.remove(&member);
        } else {
            self.0.insert(member, n);
        }
    }

    /// Whether the event `dot` is covered (happened before or is included).
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.author) >= dot.seq
    }

    /// Raises every entry to at least `other`'s (the least upper bound).
    pub fn merge(&mut self, other: &VersionVector) {
        for (&m, &n) in &other.0 {
            if n > self.get(m) {
                self.0.insert(m, n);
            }
        }
    }

    /// Whether every entry of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&m, &n)| self.get(m) >= n)
    }

    /// The entries, in member order, without zeros.
    pub fn iter(&self) -> impl Iterator<Item = (MemberId, u64)> + '_ {
        self.0.iter().map(|(&m, &n)| (m, n)).filter(|&(_, n)| n > 0)
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Total number of commits covered (saturating: receipts come from other nodes).
    pub fn total(&self) -> u64 {
        self.iter().fold(0u64, |a, (_, n)| a.saturating_add(n))
    }

    /// The entries where `self` is ahead of `base`, with `self`'s value.
    pub fn changed_since(&self, base: &VersionVector) -> Vec<(MemberId, u64)> {
        self.iter().filter(|&(m, n)| n != base.get(m)).collect()
    }
}

impl FromIterator<(MemberId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (MemberId, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (m, n) in iter {
            if n > v.get(m) {
                v.set(m, n);
            }
        }
        v
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (m, n)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{m}:{n}")?;
        }
        f.write_str("]")
    }
}

/// `ms` since the epoch as an ISO 8601 UTC timestamp, to the second
/// (e.g. `2026-11-22T04:15:05Z`).
///
/// ```
/// assert_eq!(ferry_model::clock::format_utc(0), "1970-01-01T00:00:00Z");
/// assert_eq!(ferry_model::clock::format_utc(1_795_320_905_000), "2026-11-22T04:15:05Z");
/// ```
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01
/// (Howard Hinnant's civil-from-days).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tick_always_moves_forward_and_tracks_the_wall_clock(h in any::<u64>(), now in 0..Hlc::MAX_MS) {
            let h = Hlc(h);
            match h.tick(now) {
                Some(next) => {
                    prop_assert!(next > h);
                    prop_assert!(next.ms() >= now.min(Hlc::MAX_MS));
                }
                None => prop_assert_eq!(h, Hlc(u64::MAX)),
            }
        }

        #[test]
        fn observe_never_goes_back_and_never_jumps_past_the_drift_bound(
            local in 0..(1u64 << 62), remote in any::<u64>(), now in 0..(1u64 << 46)
        ) {
            let (local, remote) = (Hlc(local), Hlc(remote));
            let seen = local.observe(remote, now);
            prop_assert!(seen >= local);
            prop_assert!(seen == local || seen.ms() <= now + MAX_DRIFT_MS);
            prop_assert!(seen <= local.max(remote));
        }

        #[test]
        fn merge_is_the_least_upper_bound(
            a in proptest::collection::vec((1u32..6, 0u64..20), 0..6),
            b in proptest::collection::vec((1u32..6, 0u64..20), 0..6),
        ) {
            let a: VersionVector = a.into_iter().map(|(m, n)| (MemberId(m), n)).collect();
            let b: VersionVector = b.into_iter().map(|(m, n)| (MemberId(m), n)).collect();
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            prop_assert!(ab.dominates(&a) && ab.dominates(&b));
            for (m, n) in ab.iter() {
                prop_assert_eq!(n, a.get(m).max(b.get(m)));
            }
        }
    }

    #[test]
    fn hlc_tick_is_strictly_monotonic_even_when_the_wall_clock_goes_back() {
        let h = Hlc::from_parts(5_000, 3);
        assert_eq!(h.tick(6_000), Some(Hlc::from_parts(6_000, 0)));
        assert_eq!(h.tick(4_000), Some(Hlc::from_parts(5_000, 4)));
        let full = Hlc::from_parts(5_000, u16::MAX);
        assert_eq!(full.tick(0), Some(Hlc::from_parts(5_001, 0)));
        assert_eq!(
            Hlc(u64::MAX).tick(0),
            None,
            "the last reading has no successor"
        );
    }

    #[test]
    fn a_far_future_reading_moves_the_local_clock_only_up_to_the_drift_bound() {
        let now = 1_763_000_000_000;
        let local = Hlc::from_parts(now, 0);
        let years_ahead = Hlc::from_parts(now + 2 * 365 * 86_400_000, 0);
        let seen = local.observe(years_ahead, now);
        assert_eq!(seen.ms(), now + MAX_DRIFT_MS);
        assert_eq!(
            local.observe(Hlc(u64::MAX), now).tick(now).map(|h| h.ms()),
            Some(now + MAX_DRIFT_MS + 1)
        );
        let behind = Hlc::from_parts(now - 1000, 0);
        assert_eq!(local.observe(behind, now), local);
    }

    #[test]
    fn hlc_parts_round_trip_and_clamp() {
        let h = Hlc::from_parts(1_763_000_000_000, 7);
        assert_eq!((h.ms(), h.counter()), (1_763_000_000_000, 7));
        assert_eq!(Hlc::from_parts(u64::MAX, 0).ms(), Hlc::MAX_MS);
    }

    #[test]
    fn version_vector_covers_merges_and_dominates() {
        let mut a: VersionVector = [(MemberId(1), 3), (MemberId(2), 1)].into_iter().collect();
        let b: VersionVector = [(MemberId(2), 4)].into_iter().collect();
        assert!(a.covers(Dot::new(MemberId(1), 3)));
        assert!(!a.covers(Dot::new(MemberId(1), 4)));
        assert!(!a.covers(Dot::new(MemberId(3), 1)));
        assert!(!a.dominates(&b));
        a.merge(&b);
        assert!(a.dominates(&b));
        assert_eq!(a.get(MemberId(2)), 4);
        assert_eq!(a.total(), 7);
        a.set(MemberId(1), 0);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![(MemberId(2), 4)]);
    }
}
