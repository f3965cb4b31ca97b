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
use ferry_bundle::{DatasetKey, EpochGrant, EpochId, Header, Keyring, Removal, Standing};
use ferry_model::{Change, MemberId, Op, Value};
use ferry_store::StoreTx;
use ferry_sync::Storage;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
        let mut judged = self.judge_epochs(Some(member))?;
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
        judged.removals.retain(|r| r.member != member);
        judged.removals.push(Removal { member, cutoff });
        let (ring, members) = new_epoch(&self.keys, &judged, &self.id, &mut tx, now)?;
        tx.commit()?;
        self.keys = ring;
        Ok(RekeyReport {
            removed: Some((member.0, label)),
            cutoff: Some(cutoff),
            epoch: self.keys.current().0.number,
            members,
        })
    }

    /// Moves the dataset to a new key epoch without removing anyone (admin only): bundles
    /// from now on are sealed with a new key every member is given; older bundles stay
    /// readable by members.
    pub fn rekey(&mut self) -> Result<RekeyReport, NodeError> {
        self.require_admin("change the dataset key")?;
        let judged = self.judge_epochs(None)?;
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        let (ring, members) =
            begin_epoch(&self.engine, &self.keys, &judged, &self.id, &mut tx, now)?;
        tx.commit()?;
        self.keys = ring;
        Ok(RekeyReport {
            removed: None,
            cutoff: None,
            epoch: self.keys.current().0.number,
            members,
        })
    }

    /// How this laptop judges each key epoch it holds (bundles/SPEC.md §16 6., see
    /// [`Standing`]), and the removals it holds (records, and what counting grants
    /// announced), to announce in a new grant. `removing` is judged as removed already (a
    /// removal being made).
    pub(crate) fn judge_epochs(&mut self, removing: Option<MemberId>) -> Result<Judged, NodeError> {
        let admins = self.grant_admins()?;
        let mut tx = self.store.read()?;
        let mut removals: BTreeMap<MemberId, u64> = BTreeMap::new();
        tx.for_each_record(ferry_sync::MEMBERS, false, |id, r| {
            if let (Ok(n), Some(rm)) = (id.parse::<u32>(), ferry_sync::removal(Some(r))) {
                removals.insert(MemberId(n), rm.cutoff);
            }
            Ok(())
        })?;
        for m in self.keys.removals() {
            let (cutoff, _) = self.keys.removal(m).unwrap_or_default();
            let c = removals.entry(m).or_insert(cutoff);
            *c = (*c).max(cutoff);
        }
        let gone = |m: &MemberId| removals.contains_key(m) || removing == Some(*m);
        let mut standings = BTreeMap::new();
        for (id, _) in self.keys.keys() {
            if id == EpochId::ZERO {
                continue;
            }
            let grant = self.keys.grant_of(id);
            // Vouched for: its grant signed by an admin (then), or its key handed on by an
            // invitation or a vouched grant's history (no grant held).
            let vouched = match &grant {
                Some(g) => match ferry_sync::roles::admin_at(&tx, id.signer, g.body.admin_seq)? {
                    Some(at) => at,
                    None => admins.contains(&id.signer),
                },
                None => true,
            };
            let trusted = vouched && !gone(&id.signer);
            let clean = trusted
                && match &grant {
                    Some(g) => !g.body.wraps.iter().any(|w| gone(&w.member)),
                    None => removals.is_empty() && removing.is_none(),
                };
            let counts = trusted && grant.is_some() && admins.contains(&id.signer);
            standings.insert(
                id,
                Standing {
                    safe: clean && counts,
                    clean,
                    trusted,
                    counts,
                },
            );
        }
        // Epoch 0, the dataset key every member ever had: safe only until a key changes or
        // a member is removed.
        let later = standings.values().any(|s| s.trusted);
        let zero_clean = removals.is_empty() && removing.is_none();
        standings.insert(
            EpochId::ZERO,
            Standing {
                safe: zero_clean && !later,
                clean: zero_clean,
                trusted: true,
                counts: true,
            },
        );
        Ok(Judged {
            standings,
            removals: removals
                .into_iter()
                .map(|(member, cutoff)| Removal { member, cutoff })
                .collect(),
        })
    }

    /// Lifts the freezes of removals that grants announced and that turned out not to
    /// count: the grant's signer was removed before it signed it (its commit past the
    /// signer's cutoff), or was no admin in that commit's causal context. A member frozen
    /// by its own removal record, or by fork evidence, stays frozen.
    fn lift_void_freezes(&mut self, ring: &mut Keyring) -> Result<(), NodeError> {
        let noted: Vec<MemberId> = ring.removals().collect();
        if noted.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.transaction(now_ms())?;
        let mut lifted = false;
        for m in noted {
            let Some((signer, seq)) = ring.removal_by(m) else {
                continue;
            };
            let id = m.0.to_string();
            if ferry_sync::removal(tx.record(ferry_sync::MEMBERS, &id)?.as_ref()).is_some() {
                continue;
            }
            let by = tx.record(ferry_sync::MEMBERS, &signer.0.to_string())?;
            let signer_gone = ferry_sync::removal(by.as_ref()).is_some_and(|r| seq > r.cutoff);
            let no_admin = ferry_sync::roles::admin_at(&tx, signer, seq)? == Some(false);
            if !(signer_gone || no_admin) {
                continue;
            }
            ring.forget_removal(m);
            if tx.record(ferry_sync::FORKS, &id)?.is_none() {
                ferry_sync::Storage::unfreeze(&mut tx, m)?;
            }
            lifted = true;
        }
        if lifted {
            tx.commit()?;
        }
        Ok(())
    }

    /// Chooses the key epoch this laptop seals with ([`Keyring::choose`]) and keeps the
    /// choice; returns the judgement it chose by. Lifts void freezes first.
    pub(crate) fn choose_epoch(&mut self) -> Result<Judged, NodeError> {
        let mut ring = self.keys.clone();
        self.lift_void_freezes(&mut ring)?;
        if ring != self.keys {
            let tx = self.store.transaction(now_ms())?;
            tx.set_meta(KEYRING, &ring.to_bytes())?;
            tx.commit()?;
            self.keys = ring;
        }
        let judged = self.judge_epochs(None)?;
        let mut ring = self.keys.clone();
        ring.choose(|id, _| judged.standings.get(&id).copied().unwrap_or_default());
        if ring != self.keys {
            let tx = self.store.transaction(now_ms())?;
            tx.set_meta(KEYRING, &ring.to_bytes())?;
            tx.commit()?;
            self.keys = ring;
        }
        Ok(judged)
    }

    /// After bundles are applied: chooses the epoch to seal with, and on an admin's laptop
    /// begins a new one when none it holds is safe — a removal (its own or another
    /// admin's) that no epoch excludes yet, or a key whose signer was removed or is no
    /// admin any more (bundles/SPEC.md §16 6.). It writes a change of its own, so it runs
    /// after bundles are applied (never while a bundle is being planned).
    pub(crate) fn rekey_if_unsafe(&mut self) -> Result<(), NodeError> {
        let judged = self.choose_epoch()?;
        if judged.seal(&self.keys).safe || !self.is_admin()? {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        match begin_epoch(&self.engine, &self.keys, &judged, &self.id, &mut tx, now) {
            Ok((ring, _)) => {
                tx.commit()?;
                self.keys = ring;
            }
            // (No epoch number left: the sync goes on; `ferry rekey` says so.)
            Err(NodeError::BadArgument(_)) => drop(tx),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The admin that began the epoch this laptop seals with keeps its grant covering every
    /// member: a laptop that joined after the key changed (with an invitation made before)
    /// gets the key in a new grant of the same epoch. Run before a bundle is written.
    pub(crate) fn refresh_grant(&mut self) -> Result<(), NodeError> {
        let Some(grant) = self.keys.current_grant() else {
            return Ok(());
        };
        if grant.body.signer != self.id.me || !self.is_admin()? {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        let mut members = grant_members(&mut tx)?;
        // Never a member the grant itself removes.
        members.retain(|(m, _)| !grant.body.removed.iter().any(|r| r.member == *m));
        let covered: BTreeSet<MemberId> = grant.body.wraps.iter().map(|w| w.member).collect();
        if members.iter().all(|(m, _)| covered.contains(m)) {
            return Ok(());
        }
        let (id, key) = self.keys.current();
        let key = key.clone();
        let admin_seq = tx
            .chain(self.id.me)?
            .map_or(0, |c| c.seq)
            .max(grant.body.admin_seq);
        let wider = issue(
            &self.keys,
            &self.id,
            id,
            &key,
            admin_seq,
            grant.body.at_ms,
            grant.body.removed.clone(),
            &members,
            grant.body.version,
        )?;
        let mut ring = self.keys.clone();
        ring.install(&[], Some(&wider));
        tx.set_meta(KEYRING, &ring.to_bytes())?;
        tx.commit()?;
        self.keys = ring;
        Ok(())
    }

    /// Learns the keys a bundle's header grants this laptop, kept at
    /// once: a grant a member signed gives keys to read with whatever the rest of the
    /// bundle turns out to be (what is read is checked by its own signatures). Whether it
    /// is sealed with, and whether the removals it announces count, depends on whether its
    /// signer is an admin that was not removed ([`Node::choose_epoch`]).
    pub(crate) fn learn_keys(&mut self, header: &Header) -> Result<(), NodeError> {
        if header.grant.is_empty() {
            return Ok(());
        }
        let grant = {
            let tx = self.store.read()?;
            let admin = self.id.admin_key;
            let key_of = |m: MemberId| match m {
                MemberId::ADMIN => Some(admin),
                m => tx.member(m).ok().flatten().map(|i| i.key),
            };
            EpochGrant::read_for_header(
                &header.grant,
                self.id.dataset,
                header.grant_format,
                header.epoch_id(),
                key_of,
            )
        };
        let Ok(grant) = grant else {
            return Ok(());
        };
        let signer = grant.body.signer;
        // The removals it announces count at once when its signer is an admin now (as far
        // as this laptop knows) that was not removed and was not shown to be no admin when
        // it signed. A removed, or known demoted, admin's laptop removes nobody.
        let admins = self.grant_admins()?;
        let (trusted, vouched) = {
            let tx = self.store.read()?;
            let rec = tx.record(ferry_sync::MEMBERS, &signer.0.to_string())?;
            let at = ferry_sync::roles::admin_at(&tx, signer, grant.body.admin_seq)?;
            let kept = ferry_sync::removal(rec.as_ref()).is_none();
            (
                kept && admins.contains(&signer) && at != Some(false),
                kept && at.unwrap_or(admins.contains(&signer)),
            )
        };
        let told = trusted;
        let mut ring = self.keys.clone();
        if trusted {
            // Its removals of members count at once (so that what they wrote after their
            // cutoff, on the same stick, is never applied here); its removals of admins
            // only when their records apply, judged in their causal context — a demoted
            // admin whose demotion has not reached this laptop must not freeze the admin
            // that demoted it, nor anyone once the demotion is known.
            let mut members_only = grant.clone();
            members_only
                .body
                .removed
                .retain(|r| !admins.contains(&r.member) && r.member != self.id.me);
            let mut tx = self.store.transaction(now_ms())?;
            let mut news = false;
            for r in &members_only.body.removed {
                news |= tx.frozen(r.member)?.is_none_or(|f| f > r.cutoff + 1);
            }
            if news {
                self.engine.honour_grant(&mut tx, &members_only)?;
                tx.commit()?;
            } else {
                drop(tx);
            }
            ring.note_removals(&members_only);
        }
        // A grant of an admin's that removes this laptop, whose key it lacks, says so: the
        // removal record itself is sealed under that key.
        if told {
            if let Some(r) = grant.body.removed.iter().find(|r| r.member == self.id.me) {
                if self.keys.key(grant.body.id()).is_none() {
                    self.remember_removed(r.cutoff, grant.body.at_ms)?;
                }
            }
        }
        // Whatever it gave (keys, a grant to carry), even if it does not open here.
        // Its history only when an admin vouches for it: a member's grant could name a
        // wrong key for an epoch this laptop lacks.
        let learned = ring.learn(
            &grant,
            self.id.dataset,
            self.id.me,
            &self.id.secret,
            vouched,
        );
        if learned.is_ok_and(|l| l.epochs.contains(&grant.body.id())) {
            // It reads again: whatever said it was removed is past.
            self.forget_removed()?;
        }
        if ring != self.keys {
            let tx = self.store.transaction(now_ms())?;
            tx.set_meta(KEYRING, &ring.to_bytes())?;
            tx.commit()?;
            self.keys = ring;
            self.choose_epoch()?;
        }
        Ok(())
    }

    /// The admins as far as key grants go: [`Node::admins`], and the admin that invited
    /// this laptop while no promotion or demotion of it has reached here (its invitation,
    /// which it signed as an admin, is this laptop's word for it: a laptop that has just
    /// joined reads its inviter's grant, and the removals it announces, before the
    /// promotion arrives inside the bundles that grant seals).
    pub(crate) fn grant_admins(&mut self) -> Result<BTreeSet<MemberId>, NodeError> {
        let mut admins: BTreeSet<MemberId> = self.admins()?.into_iter().collect();
        let inviter = ferry_sync::roles::inviter(self.id.me);
        let unknown = self
            .store
            .read()?
            .record(ferry_sync::roles::ROLES, &inviter.0.to_string())?
            .is_none();
        if inviter != self.id.me && unknown {
            admins.insert(inviter);
        }
        Ok(admins)
    }

    /// Whether the founding laptop (member 1) was removed, as far as this laptop knows.
    pub(crate) fn founder_removed(&mut self) -> Result<bool, NodeError> {
        let rec = self.store.read()?.record(ferry_sync::MEMBERS, "1")?;
        Ok(ferry_sync::removal(rec.as_ref()).is_some())
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

    /// Forgets that a grant said this laptop was removed (a later key reached it).
    fn forget_removed(&mut self) -> Result<(), NodeError> {
        if self
            .store
            .read()?
            .meta(REMOVED_HERE)?
            .is_none_or(|b| b.is_empty())
        {
            return Ok(());
        }
        let tx = self.store.transaction(now_ms())?;
        tx.set_meta(REMOVED_HERE, &[])?;
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
    /// (`to`, or every member for a shared medium) is not known to hold the signer's change
    /// that began the epoch.
    pub(crate) fn grant_needed(&mut self, to: Option<MemberId>) -> Result<bool, NodeError> {
        let Some((seq, _, _)) = self.keys.grant() else {
            return Ok(false);
        };
        let signer = self.keys.current().0.signer;
        let peers = match to {
            Some(m) => vec![m],
            None => self.known_peers()?,
        };
        let tx = self.store.read()?;
        for p in peers {
            if p != signer && tx.peer(p)?.get(signer) < seq {
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

/// How a laptop judges the key epochs it holds, and the removals it holds
/// ([`Node::judge_epochs`]).
pub(crate) struct Judged {
    standings: BTreeMap<EpochId, Standing>,
    removals: Vec<Removal>,
}

impl Judged {
    /// How the epoch `keys` seals with is judged.
    fn seal(&self, keys: &Keyring) -> Standing {
        self.standings
            .get(&keys.current().0)
            .copied()
            .unwrap_or_default()
    }

    /// The number of the next epoch this laptop begins: one past the highest of the
    /// epochs that count here (a key a member, a demoted or a removed laptop chose is not
    /// numbered past, so it cannot use up the numbers) and of this laptop's own.
    fn next_number(&self, me: MemberId) -> u32 {
        self.standings
            .iter()
            .filter(|(id, st)| st.counts || id.signer == me)
            .map(|(id, _)| id.number)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The keys an invitation made now hands on (epoch 0 aside): those of the trusted
    /// epochs, up to the one sealed with (a number a member chose past it is not handed
    /// on).
    pub(crate) fn invitable(&self, keys: &Keyring) -> Vec<(EpochId, DatasetKey)> {
        let top = keys.current().0.number;
        keys.keys()
            .filter(|(e, _)| *e != EpochId::ZERO && e.number <= top)
            .filter(|(e, _)| self.standings.get(e).is_some_and(|s| s.trusted))
            .map(|(e, k)| (e, k.clone()))
            .collect()
    }

    /// Whether member 1 may still write a version 5 grant: every epoch that counts is its
    /// own.
    fn founder_only(&self) -> bool {
        self.standings
            .iter()
            .all(|(id, st)| !st.counts || id.signer == MemberId::ADMIN)
    }
}

/// A change of this laptop's own that begins the next epoch (members that hold it hold
/// the key; until then bundles carry the grant, §14.3), then the epoch's key and grant
/// (`new_epoch`), in `tx`.
fn begin_epoch(
    engine: &ferry_sync::Engine,
    keys: &Keyring,
    judged: &Judged,
    id: &Identity,
    tx: &mut StoreTx<'_>,
    now: u64,
) -> Result<(Keyring, usize), NodeError> {
    let next = judged.next_number(id.me);
    engine.commit_local(
        tx,
        vec![Change::Record {
            collection: ferry_sync::MEMBERS.into(),
            id: id.me.0.to_string(),
            ops: vec![Op::Set(EPOCH_FIELD.into(), Value::Int(i64::from(next)))],
        }],
        now,
    )?;
    new_epoch(keys, judged, id, tx, now)
}

/// Draws the next epoch's key ([`Judged::next_number`]) and seals it to the members in a
/// grant signed by this laptop that announces the removals `judged` holds, kept (in `tx`)
/// with the keyring it returns, which seals with it. Also returns how many members the
/// grant is for.
fn new_epoch(
    keys: &Keyring,
    judged: &Judged,
    id: &Identity,
    tx: &mut StoreTx<'_>,
    now: u64,
) -> Result<(Keyring, usize), NodeError> {
    let number = judged.next_number(id.me);
    if number > ferry_bundle::MAX_EPOCH {
        return Err(NodeError::BadArgument(format!(
            "the dataset has changed its key {} times, the most the format allows",
            ferry_bundle::MAX_EPOCH
        )));
    }
    let key = DatasetKey(crate::node::random());
    let removed = judged.removals.clone();
    let mut members = grant_members(tx)?;
    members.retain(|(m, _)| !removed.iter().any(|r| r.member == *m));
    let admin_seq = tx.chain(id.me)?.map_or(0, |c| c.seq);
    let epoch = EpochId {
        number,
        signer: id.me,
    };
    // Member 1's grants stay version 5 while every epoch that counts is its own and
    // numbered without a gap (older readers read them); any other admin's, or one whose
    // history names another admin's epoch, is version 9 (SPEC §16).
    let version = if id.me == MemberId::ADMIN
        && judged.founder_only()
        && keys.founder_keys_below(number).is_some()
    {
        ferry_bundle::VERSION_EPOCHS
    } else {
        ferry_bundle::VERSION_KEYS
    };
    let grant = issue(
        keys, id, epoch, &key, admin_seq, now, removed, &members, version,
    )?;
    let mut ring = keys.clone();
    ring.install(&[(epoch, key)], Some(&grant));
    tx.set_meta(KEYRING, &ring.to_bytes())?;
    Ok((ring, members.len()))
}

/// Signs a grant of `epoch` with `key` in format `version`, carrying every other key
/// `keys` holds.
#[allow(clippy::too_many_arguments)]
fn issue(
    keys: &Keyring,
    id: &Identity,
    epoch: EpochId,
    key: &DatasetKey,
    admin_seq: u64,
    at_ms: u64,
    removed: Vec<Removal>,
    members: &[(MemberId, ferry_model::crypto::PublicKey)],
    version: u8,
) -> Result<EpochGrant, NodeError> {
    if version == ferry_bundle::VERSION_EPOCHS {
        let history = keys.founder_keys_below(epoch.number).ok_or_else(|| {
            NodeError::BadArgument("this laptop lacks an earlier key epoch".into())
        })?;
        return Ok(EpochGrant::issue(
            &id.secret,
            id.dataset,
            key,
            &history,
            admin_seq,
            at_ms,
            removed,
            members,
            crate::node::random(),
        ));
    }
    let history: Vec<_> = keys
        .history()
        .into_iter()
        .filter(|(e, _)| e.number < epoch.number)
        .collect();
    Ok(EpochGrant::issue_v8(
        &id.secret,
        id.dataset,
        key,
        &history,
        ferry_bundle::GrantBody {
            version,
            epoch: epoch.number,
            signer: epoch.signer,
            admin_seq,
            at_ms,
            removed,
            ephemeral: [0; 32],
            wraps: Vec::new(),
            history: Vec::new(),
        },
        members,
        crate::node::random(),
    ))
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

    /// hq and a laptop per label in `base`, all synced on a stick `first`, with clinic-a
    /// made an admin when `promote`: the stick and the laptops, hq first.
    fn founded(base: &Path, labels: &[&str], promote: bool) -> (std::path::PathBuf, Vec<Node>) {
        let first = stick(base, "first");
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
        let mut nodes: Vec<Node> = labels.iter().map(|l| join(&mut hq, base, l)).collect();
        nodes.insert(0, hq);
        let rounds = if promote { 2 } else { 1 };
        for round in 0..rounds {
            if round == 1 {
                nodes[0].promote("clinic-a").unwrap();
            }
            let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
            sync_all(&mut all, &first);
        }
        (first, nodes)
    }

    /// [`founded`] with clinic-a and clinic-b: (stick, hq, clinic-a, clinic-b).
    fn three(base: &Path, promote: bool) -> (std::path::PathBuf, Node, Node, Node) {
        let (first, mut n) = founded(base, &["clinic-a", "clinic-b"], promote);
        let (b, a, hq) = (n.pop().unwrap(), n.pop().unwrap(), n.pop().unwrap());
        (first, hq, a, b)
    }

    /// [`founded`] with clinic-a (an admin), clinic-b and clinic-c.
    fn four(base: &Path) -> (std::path::PathBuf, Node, Node, Node, Node) {
        let (first, mut n) = founded(base, &["clinic-a", "clinic-b", "clinic-c"], true);
        let c = n.pop().unwrap();
        let (b, a, hq) = (n.pop().unwrap(), n.pop().unwrap(), n.pop().unwrap());
        (first, hq, a, b, c)
    }

    /// The founding laptop is lost and demoted; whoever holds it signs a key change that
    /// announces a removal of an honest member. The others learn nothing from that removal:
    /// only the admins' removal records count. (Before the demotion the same grant would
    /// freeze the member at once.)
    #[test]
    fn a_demoted_founders_key_change_removes_nobody() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (stick, mut hq, mut a, mut b) = three(base, true);
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
        let bogus = vec![Removal {
            member: MemberId(3),
            cutoff: 0,
        }];
        let mut judged = hq.judge_epochs(None).unwrap();
        judged.removals = bogus;
        let mut tx = hq.store.transaction(now).unwrap();
        let (ring, _) = new_epoch(&hq.keys, &judged, &hq.id, &mut tx, now).unwrap();
        tx.commit().unwrap();
        hq.keys = ring;
        let other = base.join("thief");
        std::fs::create_dir_all(&other).unwrap();
        let wrote = hq.sync(&other, &NoProgress).unwrap();
        let read = a.sync(&other, &NoProgress).unwrap();
        assert!(
            a.keys.key(EpochId::founder(1)).is_some(),
            "the grant was read: {wrote:?} {read:?}"
        );
        assert_eq!(
            a.keys.current().0,
            EpochId::ZERO,
            "but its key is not sealed with"
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
        let (_stick, mut hq, mut a, mut b) = three(base, true);
        let r = a.remove_member("hq", Some("stolen")).unwrap();
        assert_eq!(r.epoch, 1, "clinic-a changed the key itself");
        // The thief, not knowing, changes the key.
        let thief = hq.rekey().unwrap();
        assert_eq!(thief.epoch, 1);
        // And "removes" clinic-b, whose laptop must not believe it.
        hq.remove_member("clinic-b", Some("thief")).unwrap();
        let other = base.join("other");
        std::fs::create_dir_all(&other).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        b.sync(&other, &NoProgress).unwrap();
        hq.sync(&other, &NoProgress).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        b.sync(&other, &NoProgress).unwrap();
        let by_a = EpochId {
            number: 1,
            signer: MemberId(2),
        };
        for n in [&a, &b] {
            assert_eq!(n.keys.current().0, by_a, "no key of the thief's");
        }
        assert!(
            hq.keys.key(by_a).is_none(),
            "the thief never got clinic-a's key"
        );
        assert!(
            b.removed_here().unwrap().is_none(),
            "clinic-b is not told it was removed"
        );
        assert_eq!(a.store.read().unwrap().frozen(MemberId(3)).unwrap(), None);
        put(&mut b, "b-after");
        b.sync(&other, &NoProgress).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        assert!(a.get("visits", "b-after").unwrap().is_some());
    }

    fn put(n: &mut Node, id: &str) {
        n.put("visits", id, &[("village".into(), Value::Str(id.into()))])
            .unwrap();
    }

    fn stick(base: &Path, name: &str) -> std::path::PathBuf {
        let p = base.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The founding laptop is away for good; another admin removes a member: the key
    /// changes at once, the others seal with the new key (version 9), and the removed
    /// laptop reads nothing written after.
    #[test]
    fn another_admin_changes_the_key_when_it_removes_with_the_founder_away() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (_first, _hq, mut a, mut b, mut c) = four(base);
        // From here on the founding laptop never syncs again.
        let r = a.remove_member("clinic-b", Some("left")).unwrap();
        let by_a = EpochId {
            number: 1,
            signer: MemberId(2),
        };
        assert_eq!((r.epoch, a.keys.current().0), (1, by_a));
        put(&mut a, "after-removal-a");
        let field = stick(base, "field");
        for _ in 0..2 {
            for n in [&mut a, &mut c, &mut b] {
                n.sync(&field, &NoProgress).unwrap();
            }
        }
        assert_eq!(
            c.keys.current().0,
            by_a,
            "clinic-c seals with clinic-a's key"
        );
        put(&mut c, "after-removal-c");
        c.sync(&field, &NoProgress).unwrap();
        a.sync(&field, &NoProgress).unwrap();
        b.sync(&field, &NoProgress).unwrap();
        assert!(a.get("visits", "after-removal-c").unwrap().is_some());
        assert!(c.get("visits", "after-removal-a").unwrap().is_some());
        for id in ["after-removal-a", "after-removal-c"] {
            assert!(
                b.get("visits", id).unwrap().is_none(),
                "{id} reached the removed laptop"
            );
        }
        assert!(b.keys.key(by_a).is_none());
        assert!(
            b.removed_here().unwrap().is_some(),
            "clinic-b is told it was removed"
        );
        // What clinic-c writes is sealed under clinic-a's epoch: version 11 (every laptop
        // here reads it), carrying clinic-a's grant as a version 9 grant.
        let mut nine = 0;
        let mut dirs = vec![field.clone()];
        while let Some(d) = dirs.pop() {
            for f in std::fs::read_dir(&d).unwrap().flatten() {
                if f.path().is_dir() {
                    dirs.push(f.path());
                } else if let Some((h, v)) = crate::exchange::header_of_for_tests(&f.path()) {
                    if h.sender == MemberId(4) && h.epoch_id() == by_a {
                        assert_eq!(v, ferry_bundle::VERSION_COLUMNS);
                        assert!(h.grant.is_empty() || h.grant_format == ferry_bundle::VERSION_KEYS);
                        nine += 1;
                    }
                }
            }
        }
        assert!(nine > 0, "clinic-c wrote under clinic-a's key");
    }

    /// Two admins remove the same member at once, each changing the key: every laptop ends
    /// up sealing with the same epoch (the lower signer's), and the removed one reads none.
    #[test]
    fn two_admins_removing_at_once_agree_on_one_key() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (_first, mut hq, mut a, mut b, mut c) = four(base);
        hq.remove_member("clinic-b", None).unwrap();
        a.remove_member("clinic-b", None).unwrap();
        let (e1, e2) = (
            EpochId::founder(1),
            EpochId {
                number: 1,
                signer: MemberId(2),
            },
        );
        assert_eq!((hq.keys.current().0, a.keys.current().0), (e1, e2));
        let later = stick(base, "later");
        for _ in 0..3 {
            for n in [&mut hq, &mut a, &mut c, &mut b] {
                n.sync(&later, &NoProgress).unwrap();
            }
        }
        for n in [&hq, &a, &c] {
            assert_eq!(n.keys.current().0, e1, "{}", n.id.label);
        }
        assert!(b.keys.key(e1).is_none() && b.keys.key(e2).is_none());
        put(&mut c, "c-after");
        c.sync(&later, &NoProgress).unwrap();
        hq.sync(&later, &NoProgress).unwrap();
        a.sync(&later, &NoProgress).unwrap();
        b.sync(&later, &NoProgress).unwrap();
        assert!(hq.get("visits", "c-after").unwrap().is_some());
        assert!(a.get("visits", "c-after").unwrap().is_some());
        assert!(b.get("visits", "c-after").unwrap().is_none());
    }

    /// A member (no admin) signs a grant of a key it chose that leaves another member out:
    /// the others read its bundles with that key, but never seal with it, so nobody is cut
    /// off and the member does not choose the dataset's key.
    #[test]
    fn a_members_own_key_change_is_read_with_but_never_sealed_with() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (_first, mut hq, mut a, mut b) = three(base, false);
        // clinic-b, a member, begins "epoch 1" itself and seals it to clinic-a only.
        put(&mut b, "from-b");
        let now = now_ms();
        let mut tx = b.store.transaction(now).unwrap();
        let mut members = grant_members(&mut tx).unwrap();
        members.retain(|(m, _)| *m != MemberId::ADMIN);
        let mine = EpochId {
            number: 1,
            signer: MemberId(3),
        };
        let key = DatasetKey(crate::node::random());
        let head = tx.chain(b.id.me).unwrap().map_or(0, |c| c.seq);
        let g = issue(
            &b.keys,
            &b.id,
            mine,
            &key,
            head,
            now,
            vec![],
            &members,
            ferry_bundle::VERSION_KEYS,
        )
        .unwrap();
        let mut ring = b.keys.clone();
        ring.install(&[(mine, key)], Some(&g));
        tx.set_meta(KEYRING, &ring.to_bytes()).unwrap();
        tx.commit().unwrap();
        b.keys = ring;
        let other = stick(base, "other");
        b.sync(&other, &NoProgress).unwrap();
        a.sync(&other, &NoProgress).unwrap();
        assert!(
            a.get("visits", "from-b").unwrap().is_some(),
            "read with b's key"
        );
        assert!(a.keys.key(mine).is_some());
        assert_eq!(a.keys.current().0, EpochId::ZERO, "but not sealed with it");
        // What clinic-a writes and relays (clinic-b's visit too) is sealed with the dataset's
        // key, which hq holds.
        put(&mut a, "from-a");
        let to_hq = stick(base, "to-hq");
        a.sync(&to_hq, &NoProgress).unwrap();
        hq.sync(&to_hq, &NoProgress).unwrap();
        for id in ["from-a", "from-b"] {
            assert!(
                hq.get("visits", id).unwrap().is_some(),
                "hq is not cut off: {id}"
            );
        }
        assert!(hq.keys.key(mine).is_none());
    }

    /// Seeded field runs: three admins (the founder among them) and three members on two
    /// sticks, in random order; admins remove members (an admin too) and change the key
    /// concurrently, removed laptops go on writing, syncing, removing and changing the key. At the end every remaining laptop seals
    /// with the same key, which no removed laptop holds, and every record a remaining
    /// laptop wrote reached every other.
    #[test]
    fn admins_changing_the_key_concurrently_converge_in_random_runs() {
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: u64) -> u64 {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) % n
            }
        }
        let (mut removals, mut rekeys, mut epochs_seen) = (0, 0, BTreeSet::new());
        for seed in 0..8u64 {
            let mut rng = Rng(seed);
            let base = tempfile::tempdir().unwrap();
            let base = base.path();
            let sticks = [stick(base, "s0"), stick(base, "s1")];
            let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
            let mut nodes = vec![];
            for l in ["a", "b", "c", "d", "e"] {
                nodes.push(join(&mut hq, base, l));
            }
            nodes.insert(0, hq);
            {
                let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
                sync_all(&mut all, &sticks[0]);
            }
            nodes[0].promote("a").unwrap();
            nodes[0].promote("b").unwrap();
            {
                let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
                sync_all(&mut all, &sticks[0]);
            }
            let mut removed: BTreeSet<usize> = BTreeSet::new();
            let mut written: Vec<(usize, String)> = vec![];
            for step in 0..40 {
                let i = rng.below(6) as usize;
                match rng.below(10) {
                    0 if i < 3 => {
                        // An admin removes a member (admin b among them, 2 to 5) it has
                        // not removed yet; a removed admin goes on trying.
                        let victim = 2 + rng.below(4) as usize;
                        if victim == i {
                            continue;
                        }
                        let label = ["hq", "a", "b", "c", "d", "e"][victim];
                        if !removed.contains(&i) && nodes[i].remove_member(label, None).is_ok() {
                            removed.insert(victim);
                            removals += 1;
                        } else if removed.contains(&i) {
                            let _ = nodes[i].remove_member(label, None);
                        }
                    }
                    1 if i < 3 => {
                        if nodes[i].rekey().is_ok() {
                            rekeys += 1;
                        }
                    }
                    2..=5 => {
                        let id = format!("s{seed}-{step}-{i}");
                        put(&mut nodes[i], &id);
                        written.push((i, id));
                    }
                    _ => {
                        let k = rng.below(2) as usize;
                        nodes[i].sync(&sticks[k], &NoProgress).unwrap();
                    }
                }
            }
            // Everyone meets on one stick, a few times.
            for _ in 0..4 {
                for n in nodes.iter_mut() {
                    n.sync(&sticks[0], &NoProgress).unwrap();
                }
            }
            let live: Vec<usize> = (0..6).filter(|i| !removed.contains(i)).collect();
            // (What a removed laptop wrote after its cutoff stays where it was applied
            // before the removal arrived, and nowhere else: only the others' records are
            // compared.)
            let seal = nodes[live[0]].keys.current().0;
            epochs_seen.insert(seal);
            for &i in &live {
                assert_eq!(nodes[i].keys.current().0, seal, "seed {seed}: laptop {i}");
                for (w, id) in &written {
                    if live.contains(w) && nodes[i].get("visits", id).unwrap().is_none() {
                        // What the laptop waits for, for the failure message.
                        let r = nodes[i].sync(&sticks[0], &NoProgress).unwrap();
                        let files: Vec<String> = (r.import.files.iter())
                            .map(|f| format!("{:?}", f.result))
                            .filter(|f| !f.contains("AlreadyHad"))
                            .collect();
                        panic!(
                            "seed {seed}: {id} (by {w}) missing at {i}; removed {removed:?}; waiting {:?}; files {files:?}",
                            r.import.waiting
                        );
                    }
                }
            }
            for &r in &removed {
                assert!(
                    nodes[r].keys.key(seal).is_none(),
                    "seed {seed}: removed laptop {r} holds the key sealed with ({seal})"
                );
            }
        }
        // (8 seeds: 12 removals, 13 key changes; the runs end on 7 different epochs, of
        // three signers.)
        assert!(
            removals > 0 && rekeys > 0 && epochs_seen.iter().any(|e| e.signer != MemberId::ADMIN),
            "the runs exercised nothing: {removals} removals, {rekeys} rekeys, {epochs_seen:?}"
        );
    }

    /// Signs a version 9 grant as `n` would (whatever its role): epoch `number`, naming its
    /// commit `admin_seq`, announcing `removed`, sealed to `to`; installs it so that `n`
    /// seals with it.
    fn forge(n: &mut Node, number: u32, admin_seq: u64, removed: Vec<Removal>, to: &[u32]) {
        let now = now_ms();
        let mut tx = n.store.transaction(now).unwrap();
        let mut members = grant_members(&mut tx).unwrap();
        members.retain(|(m, _)| to.contains(&m.0));
        let epoch = EpochId {
            number,
            signer: n.id.me,
        };
        let key = DatasetKey(crate::node::random());
        let g = issue(
            &n.keys,
            &n.id,
            epoch,
            &key,
            admin_seq,
            now,
            removed,
            &members,
            ferry_bundle::VERSION_KEYS,
        )
        .unwrap();
        let mut ring = n.keys.clone();
        ring.install(&[(epoch, key)], Some(&g));
        tx.set_meta(KEYRING, &ring.to_bytes()).unwrap();
        tx.commit().unwrap();
        n.keys = ring;
    }

    /// A demoted admin signs a grant naming one of its commits from before its demotion,
    /// announcing the removal of the admin that demoted it and of a member, and leaving
    /// that member out; a plain member signs one of the last epoch number the format
    /// allows. Nobody is frozen or told it was removed, nobody seals with either key, and
    /// the admins still remove members and change the key.
    #[test]
    fn grants_of_a_demoted_admin_or_a_member_steer_nobody() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (first, mut hq, mut a, mut b, mut c) = four(base);
        let before_demotion = a.store.read().unwrap().chain(a.id.me).unwrap().unwrap().seq;
        hq.demote("clinic-a").unwrap();
        sync_all(&mut [&mut hq, &mut a, &mut b, &mut c], &first);
        assert_eq!(hq.admins().unwrap(), vec![MemberId::ADMIN]);
        // clinic-a, demoted: "removes" hq and clinic-c, sealing to clinic-b only.
        let removals = vec![
            Removal {
                member: MemberId::ADMIN,
                cutoff: 1,
            },
            Removal {
                member: MemberId(4),
                cutoff: 1,
            },
        ];
        forge(&mut a, 7, before_demotion, removals, &[2, 3]);
        put(&mut a, "from-a");
        // clinic-b, a member: the last epoch number, sealed to everyone.
        forge(&mut b, ferry_bundle::MAX_EPOCH, 2, vec![], &[1, 2, 3, 4]);
        put(&mut b, "from-b");
        let second = stick(base, "second");
        for _ in 0..2 {
            for n in [&mut a, &mut b, &mut c, &mut hq] {
                n.sync(&second, &NoProgress).unwrap();
            }
        }
        for n in [&mut hq, &mut c] {
            for m in [1, 4] {
                assert_eq!(
                    n.store.read().unwrap().frozen(MemberId(m)).unwrap(),
                    None,
                    "{}: member {m}",
                    n.id.label
                );
            }
        }
        assert!(c.removed_here().unwrap().is_none(), "clinic-c told nothing");
        assert!(
            c.get("visits", "from-b").unwrap().is_some(),
            "read with b's key"
        );
        for n in [&hq, &c] {
            let seal = n.keys.current().0;
            assert!(
                seal.signer == MemberId::ADMIN,
                "{} seals with {seal}",
                n.id.label
            );
        }
        // clinic-a's laptop is stolen: promoted again by mistake, it signs the last epoch
        // number before anyone knows; its removal still changes the key.
        hq.promote("clinic-a").unwrap();
        sync_all(&mut [&mut hq, &mut a], &second);
        forge(
            &mut a,
            ferry_bundle::MAX_EPOCH,
            before_demotion + 100,
            vec![],
            &[1, 2, 3, 4],
        );
        put(&mut a, "a-stolen");
        a.sync(&second, &NoProgress).unwrap();
        hq.sync(&second, &NoProgress).unwrap();
        assert!(hq.remove_member("clinic-a", Some("stolen")).is_ok());
        // The founder still removes and changes the key: numbers are not used up.
        let r = hq.remove_member("clinic-b", None).unwrap();
        assert_eq!(r.epoch, 2, "numbered past hq's own epochs only");
        hq.rekey().unwrap();
        assert_eq!(hq.keys.current().0, EpochId::founder(3));
        put(&mut hq, "after");
        let third = stick(base, "third");
        hq.sync(&third, &NoProgress).unwrap();
        c.sync(&third, &NoProgress).unwrap();
        assert!(c.get("visits", "after").unwrap().is_some());
        assert_eq!(c.keys.current().0, EpochId::founder(3));
    }

    /// A laptop invited after a removal changed the key seals with that key from its first
    /// bundle on (not with the dataset key the removed laptop holds), and one that joined
    /// with an older invitation is given the key by the admin's wider grant.
    #[test]
    fn laptops_joining_after_a_key_change_seal_with_the_new_key() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let first = stick(base, "first");
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
        let mut a = join(&mut hq, base, "clinic-a");
        let mut b = join(&mut hq, base, "clinic-b");
        // clinic-c's invitation is made before the key changes; clinic-d's after.
        let inv_c = base.join("clinic-c.invite");
        let code_c = hq.invite(&inv_c, Some("clinic-c")).unwrap().code;
        sync_all(&mut [&mut hq, &mut a, &mut b], &first);
        hq.remove_member("clinic-b", None).unwrap();
        let mut d = join(&mut hq, base, "clinic-d");
        let file = InvitationFile::read(&inv_c).unwrap();
        let mut c =
            Node::join(&Home::at(base.join("clinic-c")), None, &file, Some(&code_c)).unwrap();
        let second = stick(base, "second");
        for _ in 0..3 {
            for n in [&mut hq, &mut a, &mut d, &mut c, &mut b] {
                n.sync(&second, &NoProgress).unwrap();
            }
        }
        let one = EpochId::founder(1);
        for n in [&hq, &a, &c, &d] {
            assert_eq!(n.keys.current().0, one, "{}", n.id.label);
        }
        put(&mut d, "from-d");
        put(&mut c, "from-c");
        for n in [&mut d, &mut c, &mut hq, &mut a, &mut b] {
            n.sync(&second, &NoProgress).unwrap();
        }
        for id in ["from-d", "from-c"] {
            assert!(hq.get("visits", id).unwrap().is_some(), "{id}");
            assert!(a.get("visits", id).unwrap().is_some(), "{id}");
            assert!(
                b.get("visits", id).unwrap().is_none(),
                "{id} reached the removed laptop"
            );
        }
    }

    /// An admin changes the key, then steps down: the others go on sealing with its key
    /// (never back to the dataset key), and the founding laptop, seeing a key whose signer
    /// is no admin, changes it.
    #[test]
    fn a_key_whose_signer_stepped_down_is_replaced_not_undone() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (first, mut hq, mut a, mut b) = three(base, true);
        a.rekey().unwrap();
        let by_a = EpochId {
            number: 1,
            signer: MemberId(2),
        };
        sync_all(&mut [&mut a, &mut b], &first);
        assert_eq!(b.keys.current().0, by_a);
        a.demote("clinic-a").unwrap();
        sync_all(&mut [&mut a, &mut b], &first);
        assert_eq!(b.admins().unwrap(), vec![MemberId::ADMIN]);
        assert_eq!(b.keys.current().0, by_a, "not back to the dataset key");
        sync_all(&mut [&mut hq, &mut a, &mut b], &first);
        // (Numbered past the epochs that count: clinic-a's no longer does, so hq's new one
        // is number 1 too, told apart by its signer.)
        let by_hq = hq.keys.current().0;
        assert_eq!(by_hq.signer, MemberId::ADMIN);
        assert_ne!(by_hq, EpochId::ZERO);
        for n in [&a, &b] {
            assert_eq!(n.keys.current().0, by_hq, "{}", n.id.label);
        }
    }

    /// Once the founding laptop (the only one that writes snapshots) is removed, the others
    /// stop compacting, so that a laptop another admin invites later replays the whole
    /// history instead of waiting for a snapshot nobody can write.
    #[test]
    fn without_the_founding_laptop_history_stays_whole_for_later_laptops() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let first = stick(base, "first");
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits").unwrap();
        let mut a = join(&mut hq, base, "clinic-a");
        let mut b = join(&mut hq, base, "clinic-b");
        put(&mut hq, "h0");
        sync_all(&mut [&mut hq, &mut a, &mut b], &first);
        hq.promote("clinic-a").unwrap();
        sync_all(&mut [&mut hq, &mut a, &mut b], &first);
        a.remove_member("hq", Some("lost")).unwrap();
        put(&mut b, "b1");
        sync_all(&mut [&mut a, &mut b], &first);
        for n in [&mut a, &mut b] {
            let r = n.compact(false, &NoProgress).unwrap();
            assert_eq!(r.dropped, 0, "{}", n.id.label);
        }
        let mut c = join(&mut a, base, "clinic-c");
        let later = stick(base, "later");
        sync_all(&mut [&mut a, &mut b, &mut c], &later);
        for id in ["h0", "b1"] {
            assert!(c.get("visits", id).unwrap().is_some(), "{id}");
        }
    }
}
