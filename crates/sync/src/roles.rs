//! More than one admin (bundles/SPEC.md §15): who may act as an admin, judged in each
//! commit's causal context, and the member numbers each admin hands out.
//!
//! The founding member (#1) is an admin from the dataset's genesis. An admin promotes
//! member N by writing `admin = true` into `_members/N`, and demotes it with `admin = false`
//! (and `invites_upto`, the highest number of N's range the demoter knew was used). When
//! such a write is applied, the engine keeps it as a *role event* in the derived record
//! `_roles/N`, with the causal context of the commit that made it; no commit may write
//! `_roles` itself.
//!
//! An admin action (a write to a reserved collection other than the author's own
//! `_members` fields and `_forks`) counts when its author is an admin *in the commit's
//! causal context*: among N's role events that context holds, the latest ones (those no
//! other one there follows) decide — a demotion among them wins over a concurrent
//! promotion; none at all leaves only the founder an admin. Because a commit is applied only
//! after everything in its context, every laptop reaches the same verdict in any order.
//!
//! Each admin draws the member numbers of its invitations from its own range, so admins
//! inviting offline never collide: the founder from 2 … 65,535, an admin numbered M (below
//! 65,536) from M × 65,536 … M × 65,536 + 65,535. A join is checked against the key of the
//! admin whose range holds its number.

use crate::engine::st;
use crate::{IngestError, Storage};
use ferry_model::record::Entry;
use ferry_model::{Dot, MemberId, Op, RecordState, Stamp, Value, VersionVector};
use serde::{Deserialize, Serialize};

/// The derived collection of role events: `_roles/N` holds every promotion and demotion of
/// member N (written by the engine only).
pub const ROLES: &str = "_roles";

/// The field of `_roles/N` that holds each role event, side by side.
pub const ROLE_FIELD: &str = "event";

/// The field of `_members/N` where an admin promotes (`true`) or demotes (`false`) N.
pub const MEMBER_ADMIN_FIELD: &str = "admin";

/// The field of `_members/N` written with a demotion: the highest member number of N's
/// range the demoter knew was used. A join numbered higher in N's range is refused by every
/// laptop that knows the demotion.
pub const MEMBER_INVITES_UPTO_FIELD: &str = "invites_upto";

/// How many member numbers each admin's range holds.
pub const RANGE: u32 = 1 << 16;

/// The admin whose range holds `member`'s number: the one whose signature its invitation
/// must carry.
pub fn inviter(member: MemberId) -> MemberId {
    match member.0 < RANGE {
        true => MemberId::ADMIN,
        false => MemberId(member.0 / RANGE),
    }
}

/// The member numbers admin `admin` hands out, first and last; `None` for a member numbered
/// 65,536 or more (it has no range: it can do every admin action but invite).
pub fn range(admin: MemberId) -> Option<(u32, u32)> {
    match admin {
        MemberId::ADMIN => Some((2, RANGE - 1)),
        MemberId(m) if (2..RANGE).contains(&m) => Some((m * RANGE, m * RANGE + (RANGE - 1))),
        _ => None,
    }
}

/// One promotion or demotion, as `_roles/N` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleEvent {
    /// `true` for a promotion, `false` for a demotion.
    pub admin: bool,
    /// With a demotion: the highest number of the member's range that still joins.
    pub invites_upto: Option<u32>,
    /// The causal context of the commit that made it.
    pub context: VersionVector,
}

/// The role events of a `_roles/N` record: the commit that made each, and the event.
pub fn role_events(rec: Option<&RecordState>) -> Vec<(Dot, RoleEvent)> {
    rec.and_then(|r| r.fields.get(ROLE_FIELD))
        .into_iter()
        .flatten()
        .filter_map(|sib| match &sib.entry {
            Entry::Value(Value::Bytes(b)) => postcard::from_bytes::<RoleEvent>(b)
                .ok()
                .map(|e| (sib.stamp.dot, e)),
            _ => None,
        })
        .collect()
}

/// Whether member `m` is an admin in the causal context `ctx`, from its role events.
pub fn admin_in(m: MemberId, events: &[(Dot, RoleEvent)], ctx: &VersionVector) -> bool {
    let inside: Vec<&(Dot, RoleEvent)> = events.iter().filter(|(d, _)| ctx.covers(*d)).collect();
    let latest = inside.iter().filter(|(d, _)| {
        !inside
            .iter()
            .any(|(d2, e2)| d2 != d && e2.context.covers(*d))
    });
    let mut verdict = None;
    for (_, e) in latest {
        verdict = Some(verdict.unwrap_or(true) && e.admin);
    }
    verdict.unwrap_or(m == MemberId::ADMIN)
}

/// The role event a commit's ops on `_members/N` make, if they promote or demote N.
pub(crate) fn role_event(ops: &[Op], context: &VersionVector) -> Option<RoleEvent> {
    let admin = ops.iter().rev().find_map(|op| match op {
        Op::Set(f, Value::Bool(b)) if f == MEMBER_ADMIN_FIELD => Some(*b),
        _ => None,
    })?;
    let invites_upto = ops.iter().rev().find_map(|op| match op {
        Op::Set(f, Value::Int(n)) if f == MEMBER_INVITES_UPTO_FIELD => u32::try_from(*n).ok(),
        _ => None,
    });
    Some(RoleEvent {
        admin,
        invites_upto: invites_upto.filter(|_| !admin),
        context: context.clone(),
    })
}

/// Keeps a role event in `_roles/N` beside the others (it supersedes none).
pub(crate) fn record_event<S: Storage>(
    store: &mut S,
    member: MemberId,
    stamp: Stamp,
    event: &RoleEvent,
) -> Result<(), IngestError<S::Error>> {
    let id = member.0.to_string();
    let mut rec = st::<S, _>(store.record(ROLES, &id))?.unwrap_or_default();
    let bytes = postcard::to_allocvec(event).expect("a role event encodes");
    rec.apply_owned(
        stamp,
        &VersionVector::new(),
        Op::Set(ROLE_FIELD.into(), Value::Bytes(bytes)),
    );
    st::<S, _>(store.put_record(ROLES, &id, &rec))
}

/// Whether `m` is an admin in `ctx`, as the store's role events say.
pub(crate) fn is_admin_in<S: Storage>(
    store: &S,
    m: MemberId,
    ctx: &VersionVector,
) -> Result<bool, IngestError<S::Error>> {
    let rec = st::<S, _>(store.record(ROLES, &m.0.to_string()))?;
    let mut events = role_events(rec.as_ref());
    // An event made by a commit its author's freeze excludes (a removed admin's changes
    // after its cutoff, a forked history) counts for nothing, also where it was applied
    // before the freeze became known.
    let mut kept = Vec::with_capacity(events.len());
    for (d, e) in events.drain(..) {
        if st::<S, _>(store.frozen(d.author))?.is_none_or(|k| d.seq < k) {
            kept.push((d, e));
        }
    }
    Ok(admin_in(m, &kept, ctx))
}

/// Whether `m` is an admin in the context `applied` (what a laptop has applied: now).
pub fn is_admin_now<S: Storage>(
    store: &S,
    m: MemberId,
    applied: &VersionVector,
) -> Result<bool, IngestError<S::Error>> {
    is_admin_in(store, m, applied)
}

/// Whether `m` was an admin when it wrote its commit `seq` (in that commit's causal
/// context, SPEC §15), for a statement it signed there, such as a key epoch's grant
/// (SPEC §16): `None` while that commit is not applied here (or was compacted away). A
/// commit its author's freeze excludes never makes an admin.
pub fn admin_at<S: Storage>(
    store: &S,
    m: MemberId,
    seq: u64,
) -> Result<Option<bool>, IngestError<S::Error>> {
    if st::<S, _>(store.frozen(m))?.is_some_and(|k| seq >= k) {
        return Ok(Some(false));
    }
    if seq == 0 || seq > st::<S, _>(store.applied())?.get(m) {
        return Ok(None);
    }
    match st::<S, _>(store.commit(m, seq))? {
        Some(c) => {
            let mut ctx = c.deps.clone();
            ctx.set(m, seq - 1);
            is_admin_in(store, m, &ctx).map(Some)
        }
        None => Ok(None),
    }
}

/// Whether the dataset has had more than one admin, as far as this store knows: a role
/// event for a member whose join is known (its bundles are then version 7, SPEC §15).
pub fn any<S: Storage>(store: &S) -> Result<bool, IngestError<S::Error>> {
    for m in st::<S, _>(store.members())? {
        if st::<S, _>(store.record(ROLES, &m.member.0.to_string()))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a join numbered `member` may be admitted, as far as its inviter's role events
/// here say: `Ok(true)` yes, `Ok(false)` not yet (the inviter's promotion has not reached
/// this laptop), `Err(reason)` never (the inviter has no range, or was demoted with a
/// limit below the number).
pub(crate) fn join_allowed<S: Storage>(
    store: &S,
    member: MemberId,
) -> Result<Result<bool, String>, IngestError<S::Error>> {
    let by = inviter(member);
    let rec = st::<S, _>(store.record(ROLES, &by.0.to_string()))?;
    let events = role_events(rec.as_ref());
    if admin_in(by, &events, &st::<S, _>(store.applied())?) {
        return Ok(Ok(true));
    }
    // (The founder is an admin from the genesis; another only once promoted.)
    if by != MemberId::ADMIN && !events.iter().any(|(_, e)| e.admin) {
        return Ok(Ok(false));
    }
    // Demoted: the demotion's limit counts once it is known (nothing already admitted is
    // retracted).
    let limit = events
        .iter()
        .filter(|(_, e)| !e.admin)
        .filter_map(|(_, e)| e.invites_upto)
        .max();
    if limit.is_none_or(|l| member.0 > l) {
        return Ok(Err(format!(
            "member {member} was invited by member {by}, whose admin role was withdrawn"
        )));
    }
    Ok(Ok(true))
}

/// Every member that is an admin now, as far as this store knows (in the context of
/// everything applied here). Only a member whose join is known can act.
pub fn admins<S: Storage>(store: &S) -> Result<Vec<MemberId>, IngestError<S::Error>> {
    let applied = st::<S, _>(store.applied())?;
    let mut out = Vec::new();
    let mut candidates: Vec<MemberId> = st::<S, _>(store.members())?
        .into_iter()
        .map(|m| m.member)
        .collect();
    candidates.push(MemberId::ADMIN);
    candidates.sort();
    candidates.dedup();
    for m in candidates {
        if is_admin_in(store, m, &applied)? {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u32, u64)]) -> VersionVector {
        entries.iter().map(|&(m, n)| (MemberId(m), n)).collect()
    }

    fn ev(admin: bool, context: VersionVector) -> RoleEvent {
        RoleEvent {
            admin,
            invites_upto: None,
            context,
        }
    }

    #[test]
    fn the_founder_is_an_admin_until_demoted_and_others_only_once_promoted() {
        let none: Vec<(Dot, RoleEvent)> = Vec::new();
        assert!(admin_in(MemberId(1), &none, &vv(&[(1, 5)])));
        assert!(!admin_in(MemberId(2), &none, &vv(&[(1, 5)])));
        let promoted = vec![(Dot::new(MemberId(1), 3), ev(true, vv(&[(1, 2)])))];
        // Outside the context the promotion does not count; inside it does.
        assert!(!admin_in(MemberId(2), &promoted, &vv(&[(1, 2)])));
        assert!(admin_in(MemberId(2), &promoted, &vv(&[(1, 3)])));
        let demoted_founder = vec![(Dot::new(MemberId(2), 4), ev(false, vv(&[(1, 3)])))];
        assert!(!admin_in(MemberId(1), &demoted_founder, &vv(&[(2, 4)])));
        assert!(admin_in(MemberId(1), &demoted_founder, &vv(&[(2, 3)])));
    }

    #[test]
    fn a_demotion_wins_over_a_concurrent_promotion_and_loses_to_a_later_one() {
        let p1 = (Dot::new(MemberId(1), 3), ev(true, vv(&[(1, 2)])));
        // Member 4 demotes 2 having seen the promotion; member 1 promotes 2 again concurrently.
        let d = (Dot::new(MemberId(4), 7), ev(false, vv(&[(1, 3), (4, 6)])));
        let p2 = (Dot::new(MemberId(1), 9), ev(true, vv(&[(1, 8)])));
        let events = vec![p1.clone(), d.clone(), p2.clone()];
        assert!(!admin_in(MemberId(2), &events, &vv(&[(1, 9), (4, 7)])));
        assert!(admin_in(MemberId(2), &events, &vv(&[(1, 9), (4, 6)])));
        // A promotion that has seen the demotion overrides it.
        let p3 = (Dot::new(MemberId(1), 10), ev(true, vv(&[(1, 9), (4, 7)])));
        let events = vec![p1, d, p2, p3];
        assert!(admin_in(MemberId(2), &events, &vv(&[(1, 10), (4, 7)])));
    }

    #[test]
    fn two_admins_demoting_each_other_at_once_both_lose_the_role() {
        // Member 2 was promoted (1:3); then 1 demotes 2 and 2 demotes 1, concurrently.
        let p = (Dot::new(MemberId(1), 3), ev(true, vv(&[(1, 2)])));
        let d1 = (Dot::new(MemberId(1), 5), ev(false, vv(&[(1, 4), (2, 1)])));
        let d2 = (Dot::new(MemberId(2), 2), ev(false, vv(&[(1, 3), (2, 1)])));
        let of_2 = vec![p, d1];
        let of_1 = vec![d2];
        let both = vv(&[(1, 5), (2, 2)]);
        assert!(!admin_in(MemberId(2), &of_2, &both));
        assert!(!admin_in(MemberId(1), &of_1, &both));
        // Each still was an admin when it made its own demotion of the other.
        assert!(admin_in(MemberId(1), &of_1, &vv(&[(1, 4), (2, 1)])));
        assert!(admin_in(MemberId(2), &of_2, &vv(&[(1, 3), (2, 1)])));
    }

    #[test]
    fn ranges_never_overlap_and_name_their_inviter() {
        assert_eq!(range(MemberId(1)), Some((2, 65_535)));
        assert_eq!(range(MemberId(2)), Some((131_072, 196_607)));
        assert_eq!(range(MemberId(65_535)).map(|r| r.1), Some(u32::MAX));
        assert_eq!(range(MemberId(65_536)), None);
        for m in [1u32, 2, 3, 300, 65_535] {
            let (lo, hi) = range(MemberId(m)).unwrap();
            assert_eq!(inviter(MemberId(lo)), MemberId(m));
            assert_eq!(inviter(MemberId(hi)), MemberId(m));
        }
        assert_eq!(inviter(MemberId(65_536)), MemberId(1));
    }
}
