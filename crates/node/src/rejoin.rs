//! One invitation used on two laptops: telling the second one so, and carrying its records
//! into a fresh membership (`ferry rejoin`).
//!
//! The admin accepts the first join of a member number it sees and records that device's
//! key in `_members/N` ([`ferry_sync::MEMBER_KEY_FIELD`]). A laptop whose own key is not
//! the one recorded learns from it that the admin took another laptop as this member:
//! nothing it writes will ever be accepted, and the changes of the admin and the others
//! name commits of "its" member number that are really the other laptop's. `rejoin` keeps
//! the old database aside (never deleted), joins with a new invitation, and writes again,
//! as the new member, every value this laptop wrote.

use crate::error::NodeError;
use crate::history::held_commit;
use crate::home::Home;
use crate::node::{InvitationFile, Node};
use crate::time::now_ms;
use ferry_model::record::Entry;
use ferry_model::{Change, MemberId, Op, RecordState};
use ferry_sync::{MEMBERS, Storage as _, accepted_keys};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The admin accepted another laptop as this laptop's member number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedMembership {
    /// This laptop's member number.
    pub member: u32,
    /// Its label.
    pub label: String,
    /// The admin's label.
    pub admin: String,
    /// This laptop's key fingerprint.
    pub this_key: String,
    /// The fingerprint(s) of the key(s) the admin accepted for this member number.
    pub accepted: Vec<String>,
    /// Why, when the admin cancelled this laptop's invitation instead (`invite cancel`, or
    /// its first bundle reached the admin after the invitation expired).
    pub cancelled: Option<String>,
}

impl std::fmt::Display for RefusedMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.cancelled {
            return write!(
                f,
                "{admin} cancelled the invitation this laptop joined with as {label} (member #{member}): {why}; {admin} and every laptop that knows take nothing this laptop writes. Ask {admin} for a new invitation, then run `ferry rejoin --join NEW_INVITE_FILE` here: it joins again as the new member and writes this laptop's records again (the old database is kept)",
                admin = self.admin,
                label = self.label,
                member = self.member,
            );
        }
        let accepted = self.accepted.join(", ");
        write!(
            f,
            "{admin} accepted another laptop as {label} (member #{member}, key {accepted}; this laptop's key is {this}): the invitation was used on two laptops, and {admin} takes nothing this laptop writes. Ask {admin} for a new invitation, then run `ferry rejoin --join NEW_INVITE_FILE` here: it joins again as the new member and writes this laptop's records again (the old database is kept)",
            admin = self.admin,
            label = self.label,
            member = self.member,
            this = self.this_key,
        )
    }
}

/// What [`Node::rejoin`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RejoinReport {
    /// The old member number and the new one.
    pub old_member: u32,
    /// The new member number.
    pub new_member: u32,
    /// Records written again as the new member.
    pub records: u64,
    /// Field values among them.
    pub values: u64,
    /// Records this laptop had deleted: a delete cannot be carried (the new membership has
    /// not received those records yet), so they are listed to be deleted again after the
    /// first sync, as `collection/id`.
    pub deletes_not_carried: Vec<String>,
    /// Where the old database was kept.
    pub kept: PathBuf,
}

/// The store meta key listing the content names of bundles this laptop wrote under a
/// membership the admin refused.
const REFUSED_BUNDLES: &str = "refused_bundles";

/// What a refused laptop wrote: the changes that write it again, how many values they
/// carry, and the records it deleted (`collection/id`).
type OwnWrites = (Vec<Change>, u64, Vec<String>);

/// Changes per commit when writing the carried records (as `load` does in bulk).
const REJOIN_BATCH: usize = 1000;

impl Node {
    /// Whether the admin accepted another laptop as this member (see the module doc):
    /// `Some` when `_members/ME` holds an accepted key written by the admin and none is
    /// this laptop's.
    pub fn membership_refused(&mut self) -> Result<Option<RefusedMembership>, NodeError> {
        if self.id.is_founder() {
            return Ok(None);
        }
        let me = self.id.me;
        let mine = self.id.secret.public();
        let cancelled = {
            let tx = self.read()?;
            ferry_sync::cancellation(tx.record(MEMBERS, &me.0.to_string())?.as_ref())
        };
        if let Some((why, _)) = cancelled {
            let labels = self.labels()?;
            return Ok(Some(RefusedMembership {
                member: me.0,
                label: labels
                    .get(&me)
                    .cloned()
                    .unwrap_or_else(|| self.id.label.clone()),
                admin: labels
                    .get(&MemberId::ADMIN)
                    .cloned()
                    .unwrap_or_else(|| "the admin".into()),
                this_key: mine.fingerprint(),
                accepted: Vec::new(),
                cancelled: Some(why),
            }));
        }
        let accepted = {
            let tx = self.read()?;
            let mut keys = accepted_keys(tx.record(MEMBERS, &me.0.to_string())?.as_ref());
            // The admin's change that records the key may wait here unapplied: it follows
            // the other laptop's changes as member ME, which this laptop will never hold.
            // The admin's chain is checked when stored, so what it says is the admin's.
            let (stored, applied) = (
                tx.stored()?.get(MemberId::ADMIN),
                tx.applied()?.get(MemberId::ADMIN),
            );
            if let (true, Some(chain)) = (stored > applied, tx.chain(MemberId::ADMIN)?) {
                for seq in applied + 1..=stored {
                    let Some(commit) = held_commit(&tx, &chain, MemberId::ADMIN, seq)? else {
                        continue;
                    };
                    for ch in &commit.changes {
                        if let Change::Record {
                            collection,
                            id,
                            ops,
                        } = ch
                        {
                            if collection != MEMBERS || *id != me.0.to_string() {
                                continue;
                            }
                            for op in ops {
                                if let Op::Set(f, ferry_model::Value::Bytes(b)) = op {
                                    if f == ferry_sync::MEMBER_KEY_FIELD {
                                        if let Ok(k) = <[u8; 32]>::try_from(b.as_slice()) {
                                            keys.push(ferry_model::crypto::PublicKey(k));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            keys
        };
        if accepted.is_empty() || accepted.contains(&mine) {
            return Ok(None);
        }
        let labels = self.labels()?;
        Ok(Some(RefusedMembership {
            member: me.0,
            label: self.id.label.clone(),
            admin: labels
                .get(&MemberId::ADMIN)
                .cloned()
                .unwrap_or_else(|| "the admin".into()),
            this_key: mine.fingerprint(),
            accepted: accepted.iter().map(|k| k.fingerprint()).collect(),
            cancelled: None,
        }))
    }

    /// The bundles among `on_medium` (file names) that this laptop wrote under a membership
    /// the admin refused ([`Node::rejoin`]): nobody can use them, so a sync removes them.
    pub(crate) fn refused_own_bundles<'a>(
        &mut self,
        on_medium: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<String>, NodeError> {
        let Some(bytes) = self.read()?.meta(REFUSED_BUNDLES)? else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = postcard::from_bytes(&bytes).unwrap_or_default();
        Ok(on_medium
            .filter(|file| {
                file.strip_suffix(".ferry")
                    .is_some_and(|n| names.binary_search_by(|x| x.as_str().cmp(n)).is_ok())
            })
            .map(str::to_string)
            .collect())
    }

    /// What this laptop wrote, as changes a new member can make again: per record, the
    /// values it set that still stand, its counter increments (summed per field) and the
    /// set elements it added; records it deleted are returned apart (`collection/id`).
    fn own_writes(&mut self) -> Result<OwnWrites, NodeError> {
        if let Some(found) = self.own_writes_from_history()? {
            return Ok(found);
        }
        let me = self.id.me;
        let collections: Vec<String> = self.collections()?.into_iter().map(|(c, _)| c).collect();
        let mut changes = Vec::new();
        let mut values = 0u64;
        let mut deletes = Vec::new();
        let mut tx = self.read()?;
        for collection in collections {
            tx.for_each_record(&collection, false, |id, state| {
                let ops = own_ops(state, me);
                if ops.is_empty() {
                    if state.tombstones.iter().any(|t| t.dot.author == me) {
                        deletes.push(format!("{collection}/{id}"));
                    }
                    return Ok(());
                }
                values += ops.len() as u64;
                changes.push(Change::Record {
                    collection: collection.clone(),
                    id: id.to_string(),
                    ops,
                });
                Ok(())
            })?;
        }
        Ok((changes, values, deletes))
    }

    /// [`Node::own_writes`] from this laptop's own commits, replayed on their own: what it
    /// wrote, whatever the changes of others did to it here (the others' changes that
    /// claim to have seen "its" commits saw the other laptop's). `None` when some of its
    /// commits were compacted away (then the records' states are read instead).
    fn own_writes_from_history(&mut self) -> Result<Option<OwnWrites>, NodeError> {
        let me = self.id.me;
        let tx = self.read()?;
        let top = tx.stored()?.get(me);
        let Some(chain) = tx.chain(me)? else {
            return Ok(None);
        };
        let mut states: std::collections::BTreeMap<(String, String), RecordState> =
            std::collections::BTreeMap::new();
        for seq in 2..=top {
            let Some(commit) = held_commit(&tx, &chain, me, seq)? else {
                return Ok(None);
            };
            let (stamp, ctx) = (commit.stamp(), commit.context());
            for ch in commit.changes {
                if let Change::Record {
                    collection,
                    id,
                    ops,
                } = ch
                {
                    if collection.starts_with('_') {
                        continue;
                    }
                    let state = states.entry((collection, id)).or_default();
                    for op in &ops {
                        state.apply(stamp, &ctx, op);
                    }
                }
            }
        }
        let (mut changes, mut values, mut deletes) = (Vec::new(), 0u64, Vec::new());
        for ((collection, id), state) in states {
            let ops = own_ops(&state, me);
            if ops.is_empty() {
                if !state.tombstones.is_empty() {
                    deletes.push(format!("{collection}/{id}"));
                }
                continue;
            }
            values += ops.len() as u64;
            changes.push(Change::Record {
                collection,
                id,
                ops,
            });
        }
        Ok(Some((changes, values, deletes)))
    }

    /// Joins again with a new invitation after the admin accepted another laptop as this
    /// one's member ([`Node::membership_refused`]; `force` rejoins without that, when the
    /// admin said so some other way): the new membership is built beside the old one, with
    /// every value this laptop wrote written again as the new member in one transaction,
    /// and only then swapped in; the old database moves to `refused/` in the home (never
    /// deleted). Any failure before the swap leaves the home as it was. `label` defaults to
    /// the old one.
    pub fn rejoin(
        home: &Home,
        label: Option<&str>,
        invite: &InvitationFile,
        code: Option<&str>,
        force: bool,
    ) -> Result<(Node, RejoinReport), NodeError> {
        let mut old = Node::open(home)?;
        // The founding laptop joins again only from a backup (`force`), with an invitation
        // from another admin: a restored founder writing on as member 1 would fork.
        if old.id.is_founder() && !force {
            return Err(NodeError::BadArgument(
                "this laptop is the dataset's admin: it cannot join its own dataset again".into(),
            ));
        }
        if let Some((pid, what, _)) = home.others().into_iter().next() {
            return Err(NodeError::Medium(format!(
                "another ferry process ({what}, process {pid}) uses this home: stop it, then run `ferry rejoin` again (its database is about to be moved aside)"
            )));
        }
        let refused = old.membership_refused()?;
        if !force && refused.is_none() {
            return Err(NodeError::NotRefused {
                label: old.id.label.clone(),
                member: old.id.me.0,
            });
        }
        let inv = invite.open(code)?;
        if inv.dataset != old.id.dataset {
            return Err(NodeError::BadArgument(format!(
                "{} is an invitation to dataset {:?} ({}), not to this laptop's {:?} ({}): ask {} for an invitation to {:?}",
                invite.path().display(),
                inv.dataset_name,
                inv.dataset.to_hex(),
                old.id.dataset_name,
                old.id.dataset.to_hex(),
                inv.admin_label,
                old.id.dataset_name
            )));
        }
        if old.id.is_founder() && ferry_sync::roles::inviter(inv.member()) == MemberId::ADMIN {
            return Err(NodeError::BadArgument(format!(
                "{} was made by the founding laptop itself; a backup of the founding laptop joins again with an invitation from another admin (see `ferry member list`)",
                invite.path().display()
            )));
        }
        if inv.member() == old.id.me {
            return Err(NodeError::BadArgument(format!(
                "{} is the invitation this laptop already used (member #{}): ask {} for a new invitation",
                invite.path().display(),
                old.id.me.0,
                inv.admin_label
            )));
        }
        let (changes, values, deletes) = old.own_writes()?;
        // The bundles it wrote as the refused member: every laptop that follows the admin
        // refuses them, so this laptop removes them from the media it syncs
        // ([`Node::refused_own_bundles`]). Not when forced: others may have taken them.
        let old_me = old.id.me;
        let old_bundles = match refused {
            Some(_) => old.read()?.bundles_sent_by(old_me)?,
            None => Vec::new(),
        };
        let old_member = old_me.0;
        drop(old);

        // Build the new membership beside the old one.
        let staging = Home::at(home.root().join(format!(".rejoin-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(staging.root());
        let records = changes.len() as u64;
        let built = (|| {
            let mut node = Node::join(&staging, label, invite, code)?;
            let now = now_ms();
            let mut tx = node.store.transaction(now)?;
            tx.set_meta(
                REFUSED_BUNDLES,
                &postcard::to_stdvec(&old_bundles).unwrap_or_default(),
            )?;
            let mut batch = Vec::new();
            let (mut ops, mut bytes) = (0usize, 0usize);
            for change in changes {
                let (o, b) = crate::load::change_size(&change);
                if !batch.is_empty()
                    && (batch.len() == REJOIN_BATCH
                        || ops + o > crate::load::LOAD_BATCH_OPS
                        || bytes + b > crate::load::LOAD_BATCH_BYTES)
                {
                    node.engine
                        .commit_local(&mut tx, std::mem::take(&mut batch), now)?;
                    (ops, bytes) = (0, 0);
                }
                batch.push(change);
                ops += o;
                bytes += b;
            }
            if !batch.is_empty() {
                node.engine.commit_local(&mut tx, batch, now)?;
            }
            tx.commit()?;
            Ok::<u32, NodeError>(node.id.me.0)
        })();
        let new_member = match built {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(staging.root());
                return Err(e);
            }
        };

        // Swap: the old database (and its outbox) aside, the new one in its place.
        let kept = home.root().join("refused").join(format!(
            "{}-member-{old_member}",
            crate::time::format_utc(now_ms()).replace(':', "")
        ));
        let swapped = (|| {
            std::fs::create_dir_all(&kept)
                .map_err(|e| NodeError::io("cannot create folder", &kept, e))?;
            let moved = move_db(home, &kept)?;
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", staging.db().display()));
                let to = PathBuf::from(format!("{}{suffix}", home.db().display()));
                if !from.exists() {
                    continue;
                }
                if let Err(e) = std::fs::rename(&from, &to) {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", home.db().display()));
                    }
                    for (f, t) in moved.iter().rev() {
                        let _ = std::fs::rename(t, f);
                    }
                    return Err(NodeError::io("cannot move", &from, e));
                }
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(staging.root());
        swapped?;
        let node = Node::open(home)?;
        let report = RejoinReport {
            old_member,
            new_member,
            records,
            values,
            deletes_not_carried: deletes,
            kept,
        };
        Ok((node, report))
    }
}

/// The ops that write again what `me` wrote in `state` and still stands.
fn own_ops(state: &RecordState, me: MemberId) -> Vec<Op> {
    let mut ops = Vec::new();
    for (field, siblings) in &state.fields {
        let mut incr: i64 = 0;
        let mut latest: Option<(&ferry_model::Stamp, &ferry_model::Value)> = None;
        for sib in siblings.iter().filter(|s| s.stamp.dot.author == me) {
            match &sib.entry {
                Entry::Value(v) => {
                    if latest.is_none_or(|(s, _)| s.dot.seq < sib.stamp.dot.seq) {
                        latest = Some((&sib.stamp, v));
                    }
                }
                Entry::Incr(n) => incr = incr.saturating_add(*n),
                Entry::Elem(e) => ops.push(Op::Add(field.clone(), e.clone())),
            }
        }
        if let Some((_, v)) = latest {
            ops.push(Op::Set(field.clone(), v.clone()));
        }
        if incr != 0 {
            ops.push(Op::Incr(field.clone(), incr));
        }
    }
    ops
}

/// Moves the database files and the outbox of `home` into `to`; returns (from, to) of each file moved.
fn move_db(home: &Home, to: &Path) -> Result<Vec<(PathBuf, PathBuf)>, NodeError> {
    let db = home.db();
    let mut moved = Vec::new();
    // The outbox holds bundles signed as the refused member: sent later, they would only
    // be refused again.
    let paths = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .chain([home.outbox()]);
    for from in paths {
        if !from.exists() {
            continue;
        }
        let name = from.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = to.join(name);
        if let Err(e) = std::fs::rename(&from, &dest) {
            for (f, t) in moved.iter().rev() {
                let _ = std::fs::rename(t, f);
            }
            return Err(NodeError::io("cannot move", &from, e));
        }
        moved.push((from, dest));
    }
    Ok(moved)
}
