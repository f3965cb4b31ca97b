//! Deciding what a bundle must carry: pure functions over version vectors.

use ferry_model::{MemberId, VersionVector};

/// A contiguous range of one author's commits that some bundle carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Coverage {
    /// The author.
    pub author: MemberId,
    /// First commit number.
    pub first: u64,
    /// Last commit number (inclusive).
    pub last: u64,
}

/// One run to put into a bundle: `author`'s commits `first..=last`.
pub type ExportRun = Coverage;

/// The runs a bundle must carry so that every peer gets what it lacks, given what this node
/// holds (`stored`), what each peer is known to hold, and what other bundles already on the
/// same medium carry (`carried`).
///
/// For each author, the run goes from the oldest commit some peer lacks up to the newest
/// one held here (a run always ends at a commit this node holds a proof for). The part at
/// its start that bundles already on the medium carry is left out; so is the whole run when
/// they carry all of it; so are commits whose bodies this node has compacted away
/// (`compacted`: for each author, the last such commit) — a peer that lacks those needs a
/// snapshot ([`needs_snapshot`]).
///
/// ```
/// use ferry_model::{MemberId, VersionVector};
/// use ferry_sync::plan::{plan_export, Coverage};
///
/// let stored: VersionVector = [(MemberId(1), 5), (MemberId(2), 3)].into_iter().collect();
/// let hq: VersionVector = [(MemberId(1), 5), (MemberId(2), 1)].into_iter().collect();
/// let clinic: VersionVector = [(MemberId(1), 2), (MemberId(2), 3)].into_iter().collect();
/// let on_stick = [Coverage { author: MemberId(1), first: 1, last: 4 }];
/// let runs = plan_export(&stored, &[hq, clinic], &on_stick, &VersionVector::new());
/// assert_eq!(runs, vec![
///     Coverage { author: MemberId(1), first: 5, last: 5 },
///     Coverage { author: MemberId(2), first: 2, last: 3 },
/// ]);
/// ```
pub fn plan_export(
    stored: &VersionVector,
    peers: &[VersionVector],
    carried: &[Coverage],
    compacted: &VersionVector,
) -> Vec<ExportRun> {
    let mut runs = Vec::new();
    for (author, last) in stored.iter() {
        let Some(lowest) = peers.iter().map(|p| p.get(author)).min() else {
            continue;
        };
        if lowest >= last {
            continue;
        }
        let first = (carried_through(author, lowest + 1, carried) + 1)
            .max(compacted.get(author).saturating_add(1));
        if first <= last {
            runs.push(Coverage {
                author,
                first,
                last,
            });
        }
    }
    runs
}

/// The last commit of `author` such that `carried` covers every commit from `from` up to
/// it (`from − 1` when it does not cover `from`).
fn carried_through(author: MemberId, from: u64, carried: &[Coverage]) -> u64 {
    let mut ranges: Vec<_> = carried
        .iter()
        .filter(|c| c.author == author)
        .map(|c| (c.first, c.last))
        .collect();
    ranges.sort_unstable();
    let mut next = from;
    for (first, last) in ranges {
        if first > next {
            break;
        }
        next = next.max(last + 1);
    }
    next - 1
}

/// Whether some peer lacks commits this node has compacted away, and so needs a snapshot.
pub fn needs_snapshot(peers: &[VersionVector], compacted: &VersionVector) -> bool {
    peers
        .iter()
        .any(|p| compacted.iter().any(|(a, c)| p.get(a) < c))
}

/// Whether the ranges in `carried` together cover all of `run`.
pub fn is_carried(run: &Coverage, carried: &[Coverage]) -> bool {
    carried_through(run.author, run.first, carried) >= run.last
}

/// Whether every peer already holds everything in `coverage` (so a bundle carrying only
/// that may be removed from a shared medium).
pub fn acknowledged_by_all(coverage: &[Coverage], peers: &[VersionVector]) -> bool {
    coverage
        .iter()
        .all(|c| peers.iter().all(|p| p.get(c.author) >= c.last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(a: u32, first: u64, last: u64) -> Coverage {
        Coverage {
            author: MemberId(a),
            first,
            last,
        }
    }

    #[test]
    fn carried_ranges_must_cover_the_whole_run() {
        let run = cov(1, 3, 9);
        assert!(is_carried(&run, &[cov(1, 1, 9)]));
        assert!(is_carried(&run, &[cov(1, 6, 9), cov(1, 3, 5)]));
        assert!(is_carried(&run, &[cov(1, 1, 4), cov(1, 5, 12)]));
        assert!(!is_carried(&run, &[cov(1, 1, 4), cov(1, 6, 12)]));
        assert!(!is_carried(&run, &[cov(2, 1, 12)]));
        assert!(!is_carried(&run, &[cov(1, 4, 12)]));
    }

    #[test]
    fn nothing_is_planned_without_peers_or_when_all_are_current() {
        let stored: VersionVector = [(MemberId(1), 4)].into_iter().collect();
        let none = VersionVector::new();
        assert!(plan_export(&stored, &[], &[], &none).is_empty());
        assert!(plan_export(&stored, std::slice::from_ref(&stored), &[], &none).is_empty());
        let behind = VersionVector::new();
        assert_eq!(
            plan_export(&stored, std::slice::from_ref(&behind), &[], &none),
            vec![cov(1, 1, 4)]
        );
        assert!(
            plan_export(
                &stored,
                std::slice::from_ref(&behind),
                &[cov(1, 1, 4)],
                &none
            )
            .is_empty()
        );
        assert_eq!(
            plan_export(
                &stored,
                std::slice::from_ref(&behind),
                &[cov(1, 1, 2)],
                &none
            ),
            vec![cov(1, 3, 4)],
            "the carried start is left out"
        );
        assert_eq!(
            plan_export(
                &stored,
                std::slice::from_ref(&behind),
                &[cov(1, 2, 4)],
                &none
            ),
            vec![cov(1, 1, 4)],
            "a gap at the start means the whole run"
        );
        let compacted: VersionVector = [(MemberId(1), 3)].into_iter().collect();
        assert_eq!(
            plan_export(&stored, std::slice::from_ref(&behind), &[], &compacted),
            vec![cov(1, 4, 4)],
            "compacted commits cannot be sent"
        );
        assert!(needs_snapshot(&[behind], &compacted));
        assert!(!needs_snapshot(&[stored], &compacted));
    }

    #[test]
    fn acknowledgement_needs_every_peer() {
        let a: VersionVector = [(MemberId(1), 4)].into_iter().collect();
        let b: VersionVector = [(MemberId(1), 2)].into_iter().collect();
        assert!(acknowledged_by_all(
            &[cov(1, 1, 4)],
            std::slice::from_ref(&a)
        ));
        assert!(!acknowledged_by_all(&[cov(1, 1, 4)], &[a, b]));
    }
}
