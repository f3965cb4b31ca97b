//! Removing a member and changing the dataset key: key epochs (bundles/SPEC.md §14).
//!
//! The admin removes a member by recording, in `_members/N`, why and the member's cutoff
//! (its last commit that still counts: what the admin had applied of it), and by moving the
//! dataset to a new key epoch whose key it seals to every remaining member alone (X25519)
//! in a signed grant. From then on every laptop that holds the new key seals with it, and
//! bundles carry the grant in their header until every member is known to hold it, so a
//! laptop that was away learns the new key from whichever bundle reaches it first. The
//! removed laptop cannot open the grant: it reads nothing sealed after its removal, and is
//! told so in one line.

use crate::identity::Identity;
use crate::node::KEYRING;
use crate::time::now_ms;
use crate::{Node, NodeError};
use ferry_bundle::{DatasetKey, EpochGrant, Header, Keyring, Removal};
use ferry_model::{Change, MemberId, Op, Value};
use ferry_store::StoreTx;
use ferry_sync::Storage;
use serde::Serialize;
use std::collections::BTreeSet;

/// What `ferry member remove` or `ferry rekey` did.
#[derive(Clone, Debug, Serialize)]
pub struct RekeyReport {
    /// The member removed (number, label), for a removal.
    pub removed: Option<(u32, String)>,
    /// Its last change that still counts, for a removal.
    pub cutoff: Option<u64>,
    /// The new key epoch.
    pub epoch: u32,
    /// How many members the new key was sealed to (this laptop included).
    pub members: usize,
    /// The key changes later: a removal by an admin other than the founder, whose laptop
    /// moves the dataset to a new key when it learns of it (bundles/SPEC.md §15).
    pub key_pending: bool,
}

impl Node {
    /// Removes `who` (admin only): records the removal with its cutoff and moves the dataset
    /// to a new key epoch that the removed laptop is not given.
    pub fn remove_member(
        &mut self,
        who: &str,
        reason: Option<&str>,
    ) -> Result<RekeyReport, NodeError> {
        let (member, label) = self.admin_names("remove members", who)?;
        if member == self.id.me {
            return Err(NodeError::BadArgument(format!(
                "{label} is this laptop, an admin: it cannot remove itself"
            )));
        }

        let why = reason.map_or_else(
            || "removed with `ferry member remove`".to_string(),
            str::to_string,
        );
        crate::node::check_label("--reason", &why)?;
        let mut removed = self.removed_in_grants();
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        let rec = tx.record(ferry_sync::MEMBERS, &member.0.to_string())?;
        if let Some(r) = ferry_sync::removal(rec.as_ref()) {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) was already removed on {} ({}); nothing it wrote after its change {} counts",
                member.0,
                crate::time::format_utc(r.at_ms),
                r.reason,
                r.cutoff
            )));
        }
        if ferry_sync::cancellation(rec.as_ref()).is_some() {
            return Err(NodeError::BadArgument(format!(
                "the invitation of {label} (#{}) was cancelled: it never became a member; if its invitation file may have been copied, run `ferry rekey`",
                member.0
            )));
        }
        if tx.member(member)?.is_none() {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) has not joined (its first bundle has not reached this laptop): cancel its invitation with `ferry invite cancel {label}`, then run `ferry rekey` if its invitation file may have been copied",
                member.0
            )));
        }
        let cutoff = tx.applied()?.get(member);
        let mut ops = vec![
            Op::Set(ferry_sync::MEMBER_REMOVED_FIELD.into(), Value::Str(why)),
            Op::Set(
                ferry_sync::MEMBER_CUTOFF_FIELD.into(),
                Value::Int(i64::try_from(cutoff).unwrap_or(i64::MAX)),
            ),
        ];
        // A removed admin is no admin any more, and invitations of its range that this
        // laptop does not know of count nowhere (SPEC §15).
        let applied = tx.applied()?;
        if ferry_sync::roles::is_admin_now(&tx, member, &applied)? {
            let upto = used_in_range(&mut tx, member)?;
            ops.push(Op::Set(
                ferry_sync::roles::MEMBER_ADMIN_FIELD.into(),
                Value::Bool(false),
            ));
            ops.push(Op::Set(
                ferry_sync::roles::MEMBER_INVITES_UPTO_FIELD.into(),
                Value::Int(i64::from(upto)),
            ));
        }
        self.engine.commit_local(
            &mut tx,
            vec![Change::Record {
                collection: ferry_sync::MEMBERS.into(),
                id: member.0.to_string(),
                ops,
            }],
            now,
        )?;
        // Key grants are the founder's to sign (bundles/SPEC.md §14–15): another admin's
        // removal counts at once, and the founder's laptop changes the key when it learns
        // of it ([`Node::refresh_grant`]).
        if !self.id.is_founder() {
            tx.commit()?;
            return Ok(RekeyReport {
                removed: Some((member.0, label)),
                cutoff: Some(cutoff),
                epoch: self.keys.current().0,
                members: 0,
                key_pending: true,
            });
        }
        removed.retain(|r| r.member != member);
        removed.push(Removal { member, cutoff });
        let (ring, members) = new_epoch(&self.keys, &self.id, &mut tx, removed, now)?;
        tx.commit()?;
        self.keys = ring;
        Ok(RekeyReport {
            removed: Some((member.0, label)),
            cutoff: Some(cutoff),
            epoch: self.keys.current().0,
            members,
            key_pending: false,
        })
    }

    /// Moves the dataset to a new key epoch without removing anyone (admin only): bundles
    /// from now on are sealed with a new key every member is given; older bundles stay
    /// readable by members.
    pub fn rekey(&mut self) -> Result<RekeyReport, NodeError> {
        self.require_admin("change the dataset key")?;
        if !self.id.is_founder() {
            let founder = self
                .labels()?
                .get(&MemberId::ADMIN)
                .cloned()
                .unwrap_or_else(|| "#1".into());
            return Err(NodeError::BadArgument(format!(
                "only the laptop that founded the dataset ({founder}, #1) signs key changes; a removal made here takes effect in the key when that laptop next syncs"
            )));
        }
        let removed = self.removed_in_grants();
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        let (ring, members) =
            begin_epoch(&self.engine, &self.keys, &self.id, &mut tx, removed, now)?;
        tx.commit()?;
        self.keys = ring;
        Ok(RekeyReport {
            removed: None,
            cutoff: None,
            epoch: self.keys.current().0,
            members,
            key_pending: false,
        })
    }

    /// The removals the current grant announces (so that a later grant keeps telling a
    /// removed laptop why it cannot read).
    fn removed_in_grants(&self) -> Vec<Removal> {
        self.keys
            .current_grant()
            .map(|g| g.body.removed)
            .unwrap_or_default()
    }

    /// On the founding laptop: moves the dataset to a new key epoch when it holds a removal
    /// (another admin's, SPEC §15) that no grant announces yet. It writes a change of its
    /// own, so it runs after bundles are applied (never while a bundle is being planned).
    pub(crate) fn rekey_for_removals(&mut self) -> Result<(), NodeError> {
        if !self.id.is_founder() {
            return Ok(());
        }
        let now = now_ms();
        let announced: BTreeSet<MemberId> =
            self.removed_in_grants().iter().map(|r| r.member).collect();
        let mut tx = self.store.transaction(now)?;
        let joined: BTreeSet<MemberId> = tx.members()?.iter().map(|m| m.member).collect();
        let mut news = Vec::new();
        tx.for_each_record(ferry_sync::MEMBERS, false, |id, r| {
            if let (Ok(n), Some(rm)) = (id.parse::<u32>(), ferry_sync::removal(Some(r))) {
                if joined.contains(&MemberId(n)) {
                    news.push(Removal {
                        member: MemberId(n),
                        cutoff: rm.cutoff,
                    });
                }
            }
            Ok(())
        })?;
        if news.iter().any(|r| !announced.contains(&r.member)) {
            let (ring, _) = begin_epoch(&self.engine, &self.keys, &self.id, &mut tx, news, now)?;
            tx.commit()?;
            self.keys = ring;
        }
        Ok(())
    }

    /// The admin keeps its grant covering every member: a laptop that joined after the key
    /// changed (with an invitation made before) gets the key in a new grant of the same
    /// epoch. Run before the admin writes a bundle.
    pub(crate) fn refresh_grant(&mut self) -> Result<(), NodeError> {
        if !self.id.is_founder() {
            return Ok(());
        }
        let now = now_ms();
        let Some(grant) = self.keys.current_grant() else {
            return Ok(());
        };
        let mut tx = self.store.transaction(now)?;
        let mut members = grant_members(&mut tx)?;
        // Never a member the grant itself removes.
        members.retain(|(m, _)| !grant.body.removed.iter().any(|r| r.member == *m));
        let covered: BTreeSet<MemberId> = grant.body.wraps.iter().map(|w| w.member).collect();
        if members.iter().all(|(m, _)| covered.contains(m)) {
            return Ok(());
        }
        let history = self.keys.history().ok_or_else(|| {
            NodeError::BadArgument("this laptop lacks an earlier key epoch".into())
        })?;
        let (key, earlier) = history.split_last().expect("epoch 0 at least");
        let admin_seq = tx.chain(self.id.me)?.map_or(0, |c| c.seq);
        let wider = EpochGrant::issue(
            &self.id.secret,
            self.id.dataset,
            key,
            earlier,
            admin_seq.max(grant.body.admin_seq),
            grant.body.at_ms,
            grant.body.removed.clone(),
            &members,
            crate::node::random(),
        );
        let mut ring = self.keys.clone();
        ring.install(&[], Some(&wider));
        tx.set_meta(KEYRING, &ring.to_bytes())?;
        tx.commit()?;
        self.keys = ring;
        Ok(())
    }

    /// Learns the keys a bundle's header grants this laptop (kept at once: a grant the
    /// admin signed is good whatever the rest of the bundle turns out to be).
    pub(crate) fn learn_keys(&mut self, header: &Header) -> Result<(), NodeError> {
        if header.grant.is_empty() {
            return Ok(());
        }
        let Ok(grant) = EpochGrant::from_bytes(&header.grant, self.id.dataset, &self.id.admin_key)
        else {
            return Ok(());
        };
        // The founding laptop was removed (lost or stolen): its key changes count for nothing.
        let founder = self.store.read()?.record(ferry_sync::MEMBERS, "1")?;
        if ferry_sync::removal(founder.as_ref()).is_some() && !self.id.is_founder() {
            return Ok(());
        }
        // The removals it announces count at once (the admin signed them) — unless the
        // founding laptop was demoted (lost or stolen, say): then only the removal records
        // of the admins count, when they apply.
        if self.admins()?.contains(&MemberId::ADMIN) {
            let mut tx = self.store.transaction(now_ms())?;
            let mut news = false;
            for r in &grant.body.removed {
                news |=
                    r.member != self.id.me && tx.frozen(r.member)?.is_none_or(|f| f > r.cutoff + 1);
            }
            if news {
                self.engine.honour_grant(&mut tx, &grant)?;
                tx.commit()?;
            }
        }
        let mut ring = self.keys.clone();
        let learned = ring.learn(
            &header.grant,
            self.id.dataset,
            &self.id.admin_key,
            self.id.me,
            &self.id.secret,
        );
        // Whatever it gave (keys, a grant to carry, removals it announced), even if it does
        // not open here.
        let _ = learned;
        if ring != self.keys {
            let tx = self.store.transaction(now_ms())?;
            tx.set_meta(KEYRING, &ring.to_bytes())?;
            tx.commit()?;
            self.keys = ring;
        }
        Ok(())
    }

    /// Keeps that a grant removed this laptop (after its change `cutoff`, at `at_ms` by the
    /// admin's clock), so that it says so for every bundle it cannot read from then on.
    pub(crate) fn remember_removed(&mut self, cutoff: u64, at_ms: u64) -> Result<(), NodeError> {
        let tx = self.store.transaction(now_ms())?;
        tx.set_meta(
            REMOVED_HERE,
            &postcard::to_allocvec(&(cutoff, at_ms)).expect("encodes"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The line that says this laptop was removed, if a grant said so.
    pub(crate) fn removed_here(&mut self) -> Result<Option<String>, NodeError> {
        let Some(bytes) = self.store.read()?.meta(REMOVED_HERE)? else {
            return Ok(None);
        };
        let Ok((cutoff, at_ms)) = postcard::from_bytes::<(u64, u64)>(&bytes) else {
            return Ok(None);
        };
        let e: ferry_sync::IngestError<NodeError> =
            ferry_sync::IngestError::RemovedHere { cutoff, at_ms };
        Ok(Some(e.to_string()))
    }

    /// Whether bundles should carry the current grant: some member this laptop writes for
    /// (`to`, or every member for a shared medium) is not known to hold the admin's change
    /// that began the epoch.
    pub(crate) fn grant_needed(&mut self, to: Option<MemberId>) -> Result<bool, NodeError> {
        let Some((seq, _)) = self.keys.grant() else {
            return Ok(false);
        };
        let peers = match to {
            Some(m) => vec![m],
            None => self.known_peers()?,
        };
        let tx = self.store.read()?;
        for p in peers {
            if p != MemberId::ADMIN && tx.peer(p)?.get(MemberId::ADMIN) < seq {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The highest member number of `admin`'s range (SPEC §15) this laptop knows is used (0:
/// none, or no range).
fn used_in_range(tx: &mut StoreTx<'_>, admin: MemberId) -> Result<u32, NodeError> {
    let Some((lo, hi)) = ferry_sync::roles::range(admin) else {
        return Ok(0);
    };
    let mut upto = 0u32;
    let mut used = |n: u32| {
        if (lo..=hi).contains(&n) {
            upto = upto.max(n);
        }
    };
    for m in tx.members()? {
        used(m.member.0);
    }
    tx.for_each_record(ferry_sync::MEMBERS, false, |id, _| {
        if let Ok(n) = id.parse::<u32>() {
            used(n);
        }
        Ok(())
    })?;
    Ok(upto)
}

/// The field of the admin's own `_members` record where `ferry rekey` writes the new epoch
/// number (a change of its own that begins the epoch; readers keep it like any field).
const EPOCH_FIELD: &str = "epoch";

/// The `meta` key where a removed laptop keeps that it was removed.
const REMOVED_HERE: &str = "removed_here";

/// Members that are no longer waited for: invitation cancelled, or removed.
pub(crate) fn gone_members(tx: &mut StoreTx<'_>) -> Result<BTreeSet<MemberId>, NodeError> {
    let mut out = BTreeSet::new();
    tx.for_each_record(ferry_sync::MEMBERS, false, |id, r| {
        let gone =
            ferry_sync::cancellation(Some(r)).is_some() || ferry_sync::removal(Some(r)).is_some();
        if let (Ok(n), true) = (id.parse::<u32>(), gone) {
            out.insert(MemberId(n));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The members a grant is for: every joined member not removed and whose invitation was not
/// cancelled (the admin included).
fn grant_members(
    tx: &mut StoreTx<'_>,
) -> Result<Vec<(MemberId, ferry_model::crypto::PublicKey)>, NodeError> {
    let gone = gone_members(tx)?;
    Ok(tx
        .members()?
        .into_iter()
        .filter(|m| !gone.contains(&m.member))
        .map(|m| (m.member, m.key))
        .collect())
}

/// A change of this laptop's own that begins the next epoch (members that hold it hold
/// the key; until then bundles carry the grant, §14.3), then the epoch's key and grant
/// (`new_epoch`), in `tx`.
fn begin_epoch(
    engine: &ferry_sync::Engine,
    keys: &Keyring,
    id: &Identity,
    tx: &mut StoreTx<'_>,
    removed: Vec<Removal>,
    now: u64,
) -> Result<(Keyring, usize), NodeError> {
    let next = keys.current().0 + 1;
    engine.commit_local(
        tx,
        vec![Change::Record {
            collection: ferry_sync::MEMBERS.into(),
            id: id.me.0.to_string(),
            ops: vec![Op::Set(EPOCH_FIELD.into(), Value::Int(i64::from(next)))],
        }],
        now,
    )?;
    new_epoch(keys, id, tx, removed, now)
}

/// Draws the next epoch's key and seals it to the members in a grant, kept (in `tx`) with
/// the keyring it returns. Also returns how many members the grant is for.
fn new_epoch(
    keys: &Keyring,
    id: &Identity,
    tx: &mut StoreTx<'_>,
    removed: Vec<Removal>,
    now: u64,
) -> Result<(Keyring, usize), NodeError> {
    let history = keys
        .history()
        .ok_or_else(|| NodeError::BadArgument("this laptop lacks an earlier key epoch".into()))?;
    if history.len() > ferry_bundle::MAX_EPOCH as usize {
        return Err(NodeError::BadArgument(format!(
            "the dataset has changed its key {} times, the most the format allows",
            ferry_bundle::MAX_EPOCH
        )));
    }
    let key = DatasetKey(crate::node::random());
    let mut members = grant_members(tx)?;
    members.retain(|(m, _)| !removed.iter().any(|r| r.member == *m));
    let admin_seq = tx.chain(id.me)?.map_or(0, |c| c.seq);
    let grant = EpochGrant::issue(
        &id.secret,
        id.dataset,
        &key,
        &history,
        admin_seq,
        now,
        removed,
        &members,
        crate::node::random(),
    );
    let mut all = history;
    all.push(key);
    let mut ring = keys.clone();
    ring.install(&all, Some(&grant));
    tx.set_meta(KEYRING, &ring.to_bytes())?;
    Ok((ring, members.len()))
}

impl Node {
    /// Makes member `who` (`#N` or its label) an admin too (admin only): from its next
    /// change on it may invite (from its own range of member numbers), remove, cancel
    /// invitations, set rules and promote or demote others (bundles/SPEC.md §15).
    pub fn promote(&mut self, who: &str) -> Result<(u32, String), NodeError> {
        let (member, label) = self.admin_names("promote members", who)?;
        if self.admins()?.contains(&member) {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) is already an admin",
                member.0
            )));
        }
        let tx = self.store.read()?;
        let rec = tx.record(ferry_sync::MEMBERS, &member.0.to_string())?;
        let gone = ferry_sync::removal(rec.as_ref()).is_some()
            || ferry_sync::cancellation(rec.as_ref()).is_some();
        let joined = tx.member(member)?.is_some();
        drop(tx);
        if gone {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) was removed or its invitation cancelled: it cannot be an admin",
                member.0
            )));
        }
        if !joined {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) has not joined yet (its first bundle has not reached this laptop): promote it once it has",
                member.0
            )));
        }
        self.commit(vec![Change::Record {
            collection: ferry_sync::MEMBERS.into(),
            id: member.0.to_string(),
            ops: vec![Op::Set(
                ferry_sync::roles::MEMBER_ADMIN_FIELD.into(),
                Value::Bool(true),
            )],
        }])?;
        Ok((member.0, label))
    }

    /// Withdraws member `who`'s admin role (admin only; an admin may step down itself):
    /// from the changes that have seen this on, its admin actions count no more, and joins
    /// numbered in its range above the highest number this laptop knows it used are
    /// refused. Refused when it would leave the dataset without an admin.
    pub fn demote(&mut self, who: &str) -> Result<(u32, String), NodeError> {
        let (member, label) = self.admin_names("demote admins", who)?;
        let admins = self.admins()?;
        if !admins.contains(&member) {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) is not an admin",
                member.0
            )));
        }
        if admins.len() == 1 {
            return Err(NodeError::BadArgument(format!(
                "{label} (#{}) is the dataset's only admin: promote another member first",
                member.0
            )));
        }
        // The highest number of its range in use as far as this laptop knows: invitations
        // it made before up to there still join.
        let upto = used_in_range(&mut self.store.read()?, member)?;
        self.commit(vec![Change::Record {
            collection: ferry_sync::MEMBERS.into(),
            id: member.0.to_string(),
            ops: vec![
                Op::Set(
                    ferry_sync::roles::MEMBER_ADMIN_FIELD.into(),
                    Value::Bool(false),
                ),
                Op::Set(
                    ferry_sync::roles::MEMBER_INVITES_UPTO_FIELD.into(),
                    Value::Int(i64::from(upto)),
                ),
            ],
        }])?;
        Ok((member.0, label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Home, InvitationFile, NoProgress};
    use std::path::Path;

    fn join(hq: &mut Node, base: &Path, label: &str) -> Node {
        let inv = base.join(format!("{label}.invite"));
        let code = hq.invite(&inv, Some(label)).unwrap().code;
        let file = InvitationFile::read(&inv).unwrap();
        Node::join(&Home::at(base.join(label)), None, &file, Some(&code)).unwrap()
    }

    fn sync_all(nodes: &mut [&mut Node], stick: &Path) {
        for _ in 0..2 {
            for n in nodes.iter_mut() {
                n.sync(stick, &NoProgress).unwrap();
            }
        }
    }

    /// The founding laptop is lost and demoted; whoever holds it signs a key change that
    /// announces a removal of an honest member. The others learn nothing from that removal:
    /// only the admins' removal records count. (Before the demotion the same grant would
    /// freeze the member at once.)
    #[test]
    fn a_demoted_founders_key_change_removes_nobody() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let stick = base.join("stick");
        std::fs::create_dir_all(&stick).unwrap();
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
        let mut a = join(&mut hq, base, "clinic-a");
        let mut b = join(&mut hq, base, "clinic-b");
        sync_all(&mut [&mut hq, &mut a, &mut b], &stick);
        hq.promote("clinic-a").unwrap();
        sync_all(&mut [&mut hq, &mut a, &mut b], &stick);
        a.demote("hq").unwrap();
        sync_all(&mut [&mut a, &mut hq, &mut b], &stick);
        assert_eq!(hq.admins().unwrap(), vec![MemberId(2)]);
        // The thief: a new change, then a grant removing clinic-b, signed with the founding
        // key (which every laptop checks grants against).
        hq.put(
            "visits",
            "v1",
            &[("village".into(), Value::Str("x".into()))],
        )
        .unwrap();
        let now = now_ms();
        let mut tx = hq.store.transaction(now).unwrap();
        let bogus = vec![Removal {
            member: MemberId(3),
            cutoff: 0,
        }];
        let (ring, _) = new_epoch(&hq.keys, &hq.id, &mut tx, bogus, now).unwrap();
        tx.commit().unwrap();
        hq.keys = ring;
        let other = base.join("thief");
        std::fs::create_dir_all(&other).unwrap();
        let wrote = hq.sync(&other, &NoProgress).unwrap();
        let read = a.sync(&other, &NoProgress).unwrap();
        assert_eq!(
            a.keys.current().0,
            1,
            "the grant was read: {wrote:?} {read:?}"
        );
        assert_eq!(a.store.read().unwrap().frozen(MemberId(3)).unwrap(), None);
        // clinic-b's new changes still count at clinic-a.
        b.put(
            "visits",
            "b1",
            &[("village".into(), Value::Str("y".into()))],
        )
        .unwrap();
        let last = base.join("last");
        std::fs::create_dir_all(&last).unwrap();
        b.sync(&last, &NoProgress).unwrap();
        a.sync(&last, &NoProgress).unwrap();
        assert!(a.get("visits", "b1").unwrap().is_some());
    }

    /// Once the founding laptop is removed, a key change it signs afterwards gives nobody
    /// anything: the others do not move to a key its holder chose.
    #[test]
    fn a_removed_founders_key_change_is_ignored() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let stick = base.join("stick");
        std::fs::create_dir_all(&stick).unwrap();
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
        let mut a = join(&mut hq, base, "clinic-a");
        let mut b = join(&mut hq, base, "clinic-b");
        sync_all(&mut [&mut hq, &mut a, &mut b], &stick);
        hq.promote("clinic-a").unwrap();
        sync_all(&mut [&mut hq, &mut a, &mut b], &stick);
        let r = a.remove_member("hq", Some("stolen")).unwrap();
        assert!(r.key_pending);
        // The thief, not knowing, changes the key.
        let thief = hq.rekey().unwrap();
        assert_eq!(thief.epoch, 1);
        let other = base.join("other");
        std::fs::create_dir_all(&other).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        b.sync(&other, &NoProgress).unwrap();
        hq.sync(&other, &NoProgress).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        b.sync(&other, &NoProgress).unwrap();
        for n in [&a, &b] {
            assert_eq!(n.keys.current().0, 0, "no key of the thief's");
        }
    }
}
