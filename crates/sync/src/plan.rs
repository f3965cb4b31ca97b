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
        // Commits compacted away here cannot be sent (a peer lacking them needs a
        // snapshot); from the first one that can, what the medium already carries is left
        // out, so a peer far behind does not make every bundle carry the same tail again.
        let start = (lowest + 1).max(compacted.get(author).saturating_add(1));
        let first = carried_through(author, start, carried) + 1;
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

/// Whether a snapshot reflecting `state` gives a peer everything this node has compacted
/// away (`compacted`), so that bundles on top of it can bring the peer up to date.
pub fn snapshot_serves(state: &VersionVector, compacted: &VersionVector) -> bool {
    compacted.iter().all(|(a, c)| state.get(a) >= c)
}

/// What a sender does for peers that lack history it compacted away ([`plan_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// Write a new snapshot (of `applied`).
    pub write: bool,
    /// The snapshot state peers that need one are planned for as holding: one already on
    /// its way that still serves, or the new one; `None` when there is neither.
    pub on_its_way: Option<VersionVector>,
}

/// Decides about snapshots for one medium. Only the admin writes them (SPEC §4.1: readers
/// ignore anyone else's), and only when some peer needs one and no admin snapshot already
/// on its way (`sent`: on the stick, or emailed recently) still holds everything compacted
/// here; a member away for weeks so costs one snapshot, not one per sync. The newest
/// serving snapshot is the one planned on.
pub fn plan_snapshot(
    admin: bool,
    peers: &[VersionVector],
    compacted: &VersionVector,
    sent: &[&VersionVector],
    applied: &VersionVector,
) -> SnapshotPlan {
    let serving = sent
        .iter()
        .filter(|state| snapshot_serves(state, compacted))
        .max_by_key(|state| state.total())
        .map(|state| (*state).clone());
    let write = admin && serving.is_none() && needs_snapshot(peers, compacted);
    let on_its_way = serving.or_else(|| write.then(|| applied.clone()));
    SnapshotPlan { write, on_its_way }
}

/// What each peer will hold for planning purposes once `snapshot` (a state on its way to
/// it, e.g. on the same stick) is installed: a peer that needs a snapshot
/// ([`needs_snapshot`]) is taken to hold the snapshot's state too, so the runs planned for
/// it start after the snapshot instead of at commits compacted away here. Peers that do
/// not need a snapshot are left as they are (they ignore it).
pub fn after_snapshot(
    peers: &[VersionVector],
    compacted: &VersionVector,
    snapshot: Option<&VersionVector>,
) -> Vec<VersionVector> {
    peers
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(state) = snapshot {
                if needs_snapshot(std::slice::from_ref(&p), compacted) {
                    p.merge(state);
                }
            }
            p
        })
        .collect()
}

/// The most a bundle on a shared medium spends on the beginnings of chains its content
/// depends on ([`carry_beginnings`]), per member: a join commit is a few hundred bytes.
pub const BEGINNING_BYTES: u64 = 4 * 1024;

/// The beginning of one member's chain, as this node can carry it: commits `1..=last`,
/// `bytes` long in all, `last` being a commit it holds a proof for (or the one before a run
/// the plan already has for that member, which the run's proof covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beginning {
    /// The member.
    pub author: MemberId,
    /// The last commit of the beginning.
    pub last: u64,
    /// Their total size.
    pub bytes: u64,
}

/// Adds to `runs`, for a bundle written on a shared medium, the beginnings of the chains
/// its content depends on: above all the members' joins (their first commits). A laptop
/// invited after the bundle was written holds none of the history, so without them it
/// could apply nothing of the bundle until another one brought, say, one clinic's join
/// that every laptop known here already had.
///
/// `beginnings` are what the node can carry (see [`Beginning`]), at most
/// [`BEGINNING_BYTES`] each; a beginning the medium already carries is left out; one that
/// reaches the start of the member's run in `runs` (or the commit before it) extends that
/// run to commit 1, since a bundle carries one run per member. Nothing is added to no
/// runs: a sync with nothing new still writes nothing.
///
/// ```
/// use ferry_model::MemberId;
/// use ferry_sync::plan::{carry_beginnings, Beginning, Coverage};
///
/// let hq = |first, last| Coverage { author: MemberId(1), first, last };
/// let clinic_join = Beginning { author: MemberId(2), last: 1, bytes: 310 };
/// let runs = carry_beginnings(&[hq(9, 12)], &[clinic_join], &[]);
/// assert_eq!(runs, vec![hq(9, 12), Coverage { author: MemberId(2), first: 1, last: 1 }]);
/// ```
pub fn carry_beginnings(
    runs: &[ExportRun],
    beginnings: &[Beginning],
    carried: &[Coverage],
) -> Vec<ExportRun> {
    let mut out = runs.to_vec();
    if runs.is_empty() {
        return out;
    }
    for b in beginnings {
        if b.last == 0
            || b.bytes > BEGINNING_BYTES
            || carried_through(b.author, 1, carried) >= b.last
        {
            continue;
        }
        match out.iter_mut().find(|r| r.author == b.author) {
            Some(run) if run.first <= b.last + 1 => run.first = 1,
            Some(_) => {}
            None => out.push(Coverage {
                author: b.author,
                first: 1,
                last: b.last,
            }),
        }
    }
    out
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

    /// A peer far behind, with history compacted here: once the medium carries the tail
    /// after the compacted part, the next plan carries only what is new (not the whole
    /// tail again, as when the carried ranges were looked up from the peer's position).
    #[test]
    fn a_peer_behind_compacted_history_gets_only_what_is_new() {
        let stored: VersionVector = [(MemberId(1), 10)].into_iter().collect();
        let away = VersionVector::new();
        let compacted: VersionVector = [(MemberId(1), 6)].into_iter().collect();
        assert_eq!(
            plan_export(&stored, std::slice::from_ref(&away), &[], &compacted),
            vec![cov(1, 7, 10)]
        );
        assert!(
            plan_export(
                &stored,
                std::slice::from_ref(&away),
                &[cov(1, 7, 10)],
                &compacted
            )
            .is_empty(),
            "the tail is on the medium already"
        );
        let more: VersionVector = [(MemberId(1), 11)].into_iter().collect();
        assert_eq!(
            plan_export(
                &more,
                std::slice::from_ref(&away),
                &[cov(1, 7, 10)],
                &compacted
            ),
            vec![cov(1, 11, 11)]
        );
    }

    /// Only the admin writes a snapshot, only for a peer that needs one, and not while one
    /// that still serves is on its way; a stale one (compaction went further) is replaced.
    #[test]
    fn a_snapshot_is_written_once_by_the_admin_and_again_only_when_stale() {
        let compacted: VersionVector = [(MemberId(1), 6)].into_iter().collect();
        let applied: VersionVector = [(MemberId(1), 9)].into_iter().collect();
        let away = VersionVector::new();
        let peers = std::slice::from_ref(&away);
        let plan = plan_snapshot(true, peers, &compacted, &[], &applied);
        assert_eq!(
            plan,
            SnapshotPlan {
                write: true,
                on_its_way: Some(applied.clone())
            }
        );
        let member = plan_snapshot(false, peers, &compacted, &[], &applied);
        assert_eq!(
            member,
            SnapshotPlan {
                write: false,
                on_its_way: None
            }
        );
        let sent: VersionVector = [(MemberId(1), 7)].into_iter().collect();
        let plan = plan_snapshot(true, peers, &compacted, &[&sent], &applied);
        assert_eq!(
            plan,
            SnapshotPlan {
                write: false,
                on_its_way: Some(sent.clone())
            }
        );
        let stale: VersionVector = [(MemberId(1), 5)].into_iter().collect();
        let plan = plan_snapshot(true, peers, &compacted, &[&stale], &applied);
        assert!(
            plan.write,
            "a snapshot older than what is compacted here is replaced"
        );
        let current = std::slice::from_ref(&applied);
        let plan = plan_snapshot(true, current, &compacted, &[], &applied);
        assert_eq!(
            plan,
            SnapshotPlan {
                write: false,
                on_its_way: None
            },
            "nobody needs one"
        );
    }

    /// A snapshot on its way serves a peer only when it holds everything compacted here;
    /// planning then starts after it, for the peers that need it only.
    #[test]
    fn a_snapshot_on_its_way_moves_only_the_peers_that_need_it() {
        let compacted: VersionVector = [(MemberId(1), 6), (MemberId(2), 2)].into_iter().collect();
        let old: VersionVector = [(MemberId(1), 6), (MemberId(2), 1)].into_iter().collect();
        let new: VersionVector = [(MemberId(1), 8), (MemberId(2), 2)].into_iter().collect();
        assert!(!snapshot_serves(&old, &compacted));
        assert!(snapshot_serves(&new, &compacted));
        let away = VersionVector::new();
        let current: VersionVector = [(MemberId(1), 7), (MemberId(2), 5)].into_iter().collect();
        let peers = after_snapshot(&[away, current.clone()], &compacted, Some(&new));
        assert_eq!(peers[0], new, "the absent peer will hold the snapshot");
        assert_eq!(peers[1], current, "a current peer ignores it");
        let stored: VersionVector = [(MemberId(1), 9), (MemberId(2), 5)].into_iter().collect();
        assert_eq!(
            plan_export(&stored, &peers, &[], &compacted),
            vec![cov(1, 8, 9), cov(2, 3, 5)]
        );
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

    #[test]
    fn beginnings_are_carried_once_small_and_joined_to_a_run_of_the_same_member() {
        let b = |a: u32, last: u64, bytes: u64| Beginning {
            author: MemberId(a),
            last,
            bytes,
        };
        let runs = [cov(1, 9, 12), cov(3, 2, 4)];
        // No runs: nothing to depend on, nothing written.
        assert!(carry_beginnings(&[], &[b(2, 1, 300)], &[]).is_empty());
        // A join of another member is added as its own run.
        assert_eq!(
            carry_beginnings(&runs, &[b(2, 1, 300)], &[]),
            vec![cov(1, 9, 12), cov(3, 2, 4), cov(2, 1, 1)]
        );
        // The beginning of a run's own member extends the run to commit 1 (one run per
        // member in a bundle); one that does not reach the run is left out.
        assert_eq!(
            carry_beginnings(&runs, &[b(3, 1, 300)], &[]),
            vec![cov(1, 9, 12), cov(3, 1, 4)]
        );
        assert_eq!(
            carry_beginnings(&runs, &[b(1, 5, 300)], &[]),
            runs.to_vec(),
            "commits 6–8 of member 1 would be missing in between"
        );
        // Already on the medium, or too big: left out.
        assert_eq!(
            carry_beginnings(&runs, &[b(2, 1, 300)], &[cov(2, 1, 7)]),
            runs.to_vec()
        );
        assert_eq!(
            carry_beginnings(&runs, &[b(2, 3, BEGINNING_BYTES + 1)], &[]),
            runs.to_vec()
        );
        assert_eq!(
            carry_beginnings(&runs, &[b(2, 3, 900)], &[cov(2, 1, 2)]),
            vec![cov(1, 9, 12), cov(3, 2, 4), cov(2, 1, 3)],
            "part of it on the medium is not enough"
        );
    }
}
