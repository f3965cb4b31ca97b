//! One ledger of what was sent and not yet confirmed, for every transport that cannot see
//! its peer while it sends (email, SMS): the store's `sent` table, one entry per transport
//! and peer (a member, a phone number, `*` for all of a send's readers, `*snapshot`), each
//! what this node held when it last sent and since when sends to that peer have gone
//! unconfirmed.
//!
//! The rule every such transport plans by: what was sent within its window (a week by
//! email, a day by SMS) and is not yet covered by what the peer confirmed is taken as on its
//! way — sending twice does not pay twice, and a laptop away for weeks does not make every
//! send carry the same changes again. Once the window has passed without a confirmation,
//! it is sent again; the window counts from the oldest unconfirmed send, so a member that
//! never confirms gets everything again once per window, not never.

use ferry_model::VersionVector;

/// A ledger entry: what this node held when it sent, and the oldest unconfirmed send (ms).
pub(crate) type Entry = (VersionVector, u64);

/// What to take as on its way to a peer that has confirmed `confirmed`: the last send, if it
/// was within `window_ms` of `now` and is not covered yet.
pub(crate) fn on_its_way<'e>(
    entry: Option<&'e Entry>,
    confirmed: &VersionVector,
    now: u64,
    window_ms: u64,
) -> Option<&'e Entry> {
    entry.filter(|(sent, since)| {
        now.saturating_sub(*since) < window_ms && !confirmed.dominates(sent)
    })
}

/// The `since` to record with a send made `now`: the oldest send still unconfirmed, or now.
pub(crate) fn since_after_send(
    entry: Option<&Entry>,
    confirmed: &VersionVector,
    now: u64,
    window_ms: u64,
) -> u64 {
    on_its_way(entry, confirmed, now, window_ms).map_or(now, |(_, since)| *since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::MemberId;

    fn vv(pairs: &[(u32, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for &(m, s) in pairs {
            v.set(MemberId(m), s);
        }
        v
    }

    #[test]
    fn a_send_is_on_its_way_until_confirmed_or_its_window_passes_counted_from_the_oldest() {
        const DAY: u64 = 86_400_000;
        let sent: Entry = (vv(&[(1, 10)]), 1_000);
        let nothing = vv(&[]);
        // Within the window, not confirmed: on its way.
        assert_eq!(
            on_its_way(Some(&sent), &nothing, 1_000 + DAY - 1, DAY),
            Some(&sent)
        );
        // Confirmed (the peer's receipt covers it): no longer.
        assert_eq!(on_its_way(Some(&sent), &vv(&[(1, 10)]), 2_000, DAY), None);
        assert_eq!(
            on_its_way(Some(&sent), &vv(&[(1, 11), (2, 1)]), 2_000, DAY),
            None
        );
        // Partly confirmed: still on its way.
        assert_eq!(
            on_its_way(Some(&sent), &vv(&[(1, 9)]), 2_000, DAY),
            Some(&sent)
        );
        // The window passed: sent again.
        assert_eq!(on_its_way(Some(&sent), &nothing, 1_000 + DAY, DAY), None);
        assert_eq!(on_its_way(None, &nothing, 0, DAY), None);
        // A new send keeps the oldest unconfirmed time, so the window does not slide forever.
        assert_eq!(since_after_send(Some(&sent), &nothing, 5_000, DAY), 1_000);
        assert_eq!(
            since_after_send(Some(&sent), &vv(&[(1, 10)]), 5_000, DAY),
            5_000
        );
        assert_eq!(since_after_send(None, &nothing, 5_000, DAY), 5_000);
        assert_eq!(
            since_after_send(Some(&sent), &nothing, 1_000 + DAY, DAY),
            1_000 + DAY
        );
    }
}
