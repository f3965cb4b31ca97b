//! Sets of byte ranges: which parts of a message are held, requested, sent or acknowledged.

/// Disjoint, sorted, non-adjacent half-open ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    pub(crate) fn new() -> RangeSet {
        RangeSet { r: Vec::new() }
    }

    /// The set `[0, len)`.
    pub(crate) fn full(len: u64) -> RangeSet {
        let mut s = RangeSet::new();
        s.insert(0, len);
        s
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Total bytes covered.
    pub(crate) fn len(&self) -> u64 {
        self.r.iter().map(|(a, b)| b - a).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.r.iter().copied()
    }

    pub(crate) fn first(&self) -> Option<(u64, u64)> {
        self.r.first().copied()
    }

    /// Adds `[start, end)`.
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.r.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.r {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.r = out;
    }

    /// Removes `[start, end)`.
    pub(crate) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut out = Vec::with_capacity(self.r.len() + 1);
        for &(a, b) in &self.r {
            if b <= start || a >= end {
                out.push((a, b));
                continue;
            }
            if a < start {
                out.push((a, start));
            }
            if b > end {
                out.push((end, b));
            }
        }
        self.r = out;
    }

    /// Removes every range of `other`.
    pub(crate) fn subtract(&mut self, other: &RangeSet) {
        for (a, b) in other.iter() {
            self.remove(a, b);
        }
    }

    /// Bytes of `[start, end)` that are in the set.
    pub(crate) fn overlap(&self, start: u64, end: u64) -> u64 {
        self.r
            .iter()
            .map(|&(a, b)| b.min(end).saturating_sub(a.max(start)))
            .sum()
    }

    /// Whether the whole of `[start, end)` is in the set.
    pub(crate) fn contains(&self, start: u64, end: u64) -> bool {
        self.overlap(start, end) == end.saturating_sub(start)
    }

    /// The parts of `[0, len)` not in the set.
    pub(crate) fn missing(&self, len: u64) -> RangeSet {
        let mut m = RangeSet::full(len);
        m.subtract(self);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    fn set(v: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in v {
            s.insert(a, b);
        }
        s
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent_ranges() {
        let s = set(&[(10, 20), (30, 40), (20, 25), (0, 5), (39, 50)]);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(0, 5), (10, 25), (30, 50)]
        );
        assert_eq!(s.len(), 5 + 15 + 20);
        let s = set(&[(0, 100), (10, 20)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 100)]);
    }

    #[test]
    fn remove_splits_ranges() {
        let mut s = set(&[(0, 100)]);
        s.remove(10, 20);
        s.remove(90, 200);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 10), (20, 90)]);
        assert_eq!(
            s.missing(100).iter().collect::<Vec<_>>(),
            vec![(10, 20), (90, 100)]
        );
        assert_eq!(s.overlap(5, 25), 10);
        assert!(s.contains(20, 90) && !s.contains(9, 11));
    }
}
