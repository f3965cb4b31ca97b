//! The node: identity, local edits and what the store knows.

use crate::home::{Home, Presence, write_private};
use crate::identity::Identity;
use crate::invite::{self, InviteCode, KdfParams, Parsed};
use crate::time::now_ms;
use crate::{NodeError, json};
use ferry_bundle::{DatasetKey, EpochId, Keyring};
use ferry_model::crypto::{JoinError, PublicKey, SecretKey};
use ferry_model::{Change, DatasetId, MemberId, Op, RecordState, Rule, Value, limits};
use ferry_store::{Store, StoreTx};
use ferry_sync::{Engine, Invitation, MemberInfo, Storage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Opens the store of `home`, and its key when the home has a passphrase.
///
/// A passphrase change seals the new store key in `store.key.next`, re-encrypts the store
/// under it, then renames `store.key.next` over `store.key`; an open finds where a change
/// that stopped midway got to and finishes it, or undoes what it had begun (see
/// `Node::set_passphrase`).
fn open_store(home: &Home) -> Result<(Store, Option<[u8; 32]>), NodeError> {
    let path = home.store_key_file();
    let next = home.store_key_next_file();
    let Some(sealed) = read_if_there(&path)? else {
        return Ok((Store::open(&home.db())?, None));
    };
    let Some(passphrase) = home.passphrase() else {
        return Err(NodeError::PassphraseNeeded(home.root().to_path_buf()));
    };
    let current = crate::lock::open(&sealed, passphrase.as_str());
    let pending = read_if_there(&next)?.map(|b| crate::lock::open(&b, passphrase.as_str()));
    if let Some(Ok(key)) = pending {
        // The store was re-encrypted under the new key: finish the change.
        if let Ok(store) = Store::open_encrypted(&home.db(), &key) {
            // The sealed key already on disk is moved into place (not fsutil's write).
            std::fs::rename(&next, &path).map_err(|e| NodeError::io("cannot replace", &path, e))?;
            return Ok((store, Some(key)));
        }
    }
    match current {
        Ok(key) => match open_encrypted(home, &key) {
            Ok(store) => {
                if pending.is_some() {
                    // A change that stopped before the store was touched: it did not happen.
                    let _ = std::fs::remove_file(&next);
                }
                Ok((store, Some(key)))
            }
            Err(_) if pending.is_some() => Err(NodeError::PassphraseChangeUnfinished {
                home: home.root().to_path_buf(),
                which: "the new one",
            }),
            Err(e) => Err(e),
        },
        Err(crate::lock::LockError::WrongPassphrase) => match pending {
            Some(Ok(_)) => Err(NodeError::PassphraseChangeUnfinished {
                home: home.root().to_path_buf(),
                which: "the one it had before",
            }),
            _ => Err(NodeError::WrongPassphrase(home.root().to_path_buf())),
        },
        Err(crate::lock::LockError::Damaged) => Err(NodeError::DamagedStoreKey(path)),
    }
}

/// A file's bytes, or `None` when it is not there.
fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, NodeError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::io("cannot read", path, e)),
    }
}

/// Opens the encrypted store; finishes a `passphrase set` that stopped after `store.key` was
/// written but before the encrypted store replaced the plain one.
fn open_encrypted(home: &Home, key: &[u8; 32]) -> Result<Store, NodeError> {
    match Store::open_encrypted(&home.db(), key) {
        Err(ferry_store::StoreError::WrongKey) => {
            let plain = Store::open(&home.db())?;
            crate::passphrase::replace_with_encrypted(home, plain, key)?;
            Ok(Store::open_encrypted(&home.db(), key)?)
        }
        other => Ok(other?),
    }
}

/// The `meta` key of the keyring (key epochs after 0, and the grant to carry).
pub(crate) const KEYRING: &str = "keyring";

/// One ferry node, opened from its home folder.
pub struct Node {
    pub(crate) home: Home,
    pub(crate) store: Store,
    pub(crate) id: Identity,
    pub(crate) engine: Engine,
    /// The dataset's key epochs this laptop holds (bundles/SPEC.md §14).
    pub(crate) keys: Keyring,
    /// The key the store is encrypted under, when the home has a passphrase.
    pub(crate) store_key: Option<[u8; 32]>,
    /// The one member the bundle being written is for, when it is for one only (an SMS):
    /// the key grant rides along only if that member lacks it.
    pub(crate) bundle_for: Option<MemberId>,
    /// This process's note in the home's `running/` (whom another command waits for).
    _presence: Option<Presence>,
}

/// What `invite` produced.
#[derive(Clone, Debug, Serialize)]
pub struct InviteReport {
    /// The file written.
    pub path: PathBuf,
    /// The member number reserved.
    pub member: u32,
    /// The label.
    pub label: String,
    /// The one-time code that opens the file, `XXXX-XXXX-XXXX`: it travels another way
    /// than the file (read out, or on paper).
    pub code: String,
    /// When it expires (ISO 8601), if it does.
    pub expires: Option<String>,
}

/// An invitation file, read and checked for damage but not opened yet.
#[derive(Debug)]
pub struct InvitationFile {
    path: PathBuf,
    bytes: Vec<u8>,
    sealed: bool,
}

impl InvitationFile {
    /// Reads the invitation in `path`. A file that is not an invitation, or is damaged or
    /// truncated, is refused here, before anyone is asked for a code.
    pub fn read(path: &Path) -> Result<InvitationFile, NodeError> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| NodeError::io("cannot read", path, e))?;
        let mut bytes = Vec::new();
        file.take(invite::MAX_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| NodeError::io("cannot read", path, e))?;
        let mut f = InvitationFile {
            path: path.to_path_buf(),
            bytes,
            sealed: false,
        };
        if f.bytes.len() > invite::MAX_FILE {
            return Err(f.bad("it is far larger than an invitation file"));
        }
        f.sealed = match invite::parse(&f.bytes) {
            Ok(Parsed::Sealed(_)) => true,
            Ok(Parsed::Clear(_)) => false,
            Err(e) => return Err(f.bad(&e.to_string())),
        };
        Ok(f)
    }

    /// Whether a one-time code is needed to open it. `false` for the invitations in clear
    /// that earlier versions of ferry wrote: whoever holds such a file can use it.
    pub fn needs_code(&self) -> bool {
        self.sealed
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, reason: &str) -> NodeError {
        NodeError::BadInvite {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The invitation, opened with `code` as a person typed it (ignored for a file in clear).
    pub(crate) fn open(&self, code: Option<&str>) -> Result<Invitation, NodeError> {
        self.open_with_extras(code).map(|(inv, _)| inv)
    }

    /// [`InvitationFile::open`], with what the file says beside the invitation (its expiry).
    pub(crate) fn open_with_extras(
        &self,
        code: Option<&str>,
    ) -> Result<(Invitation, invite::InviteExtras), NodeError> {
        let sealed = match invite::parse(&self.bytes).map_err(|e| self.bad(&e.to_string()))? {
            Parsed::Clear(inv) => return Ok((*inv, invite::InviteExtras::default())),
            Parsed::Sealed(sealed) => sealed,
        };
        let code = code.ok_or_else(|| NodeError::InviteCodeNeeded(self.path.clone()))?;
        let wrong = |reason: Option<String>| NodeError::WrongInviteCode {
            path: self.path.clone(),
            reason,
        };
        let code = InviteCode::parse(code).map_err(|e| wrong(Some(e.to_string())))?;
        sealed.open_with_extras(&code).map_err(|e| match e {
            invite::OpenError::WrongCode => wrong(None),
            other => self.bad(&other.to_string()),
        })
    }
}

/// An invitation as the admin's laptop sees it (`ferry invite list`).
#[derive(Clone, Debug, Serialize)]
pub struct InvitationView {
    /// The member number it admits.
    pub member: u32,
    /// The label it gives.
    pub label: String,
    /// When it was written (ISO 8601, the admin's clock).
    pub issued: Option<String>,
    /// When it expires (ISO 8601), if it does.
    pub expires: Option<String>,
    /// `open`, `expired`, `cancelled` or `joined`.
    pub state: &'static str,
    /// Why it was cancelled, when it was.
    pub cancelled: Option<String>,
}

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// Member number.
    pub member: u32,
    /// Label.
    pub label: String,
    /// Whether this is the local node.
    pub you: bool,
    /// Whether it is the admin.
    pub admin: bool,
    /// Whether its join has reached this node (else: invited only).
    pub joined: bool,
    /// Its key fingerprint, when joined.
    pub fingerprint: Option<String>,
    /// When it joined (ISO 8601, by its own clock when its first change is still held here,
    /// else when the admin accepted it), if this laptop can tell.
    pub joined_at: Option<String>,
    /// How many commits it is known to hold.
    pub holds: u64,
    /// How many commits this node holds that it is not known to hold.
    pub lacks_from_us: u64,
    /// When this node last learned something about it (ISO 8601), if ever.
    pub last_heard: Option<String>,
    /// The change from which it is frozen, when its history forked (a restored backup or a
    /// cloned disk wrote again): nothing more is accepted from it.
    pub frozen_from: Option<u64>,
    /// Why the admin cancelled its invitation, when it did: nothing of it is accepted.
    pub cancelled: Option<String>,
    /// Its removal by the admin, when it was removed.
    pub removed: Option<RemovedView>,
}

/// A member's removal, as `ferry status` and `ferry member list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemovedView {
    /// Why (as the admin wrote it).
    pub reason: String,
    /// When (ISO 8601, by the admin's clock).
    pub at: String,
    /// Its last change that still counts.
    pub cutoff: u64,
}

/// Changes of one member that wait on this laptop, and whose changes they need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitingChanges {
    /// Whose changes wait (label).
    pub author: String,
    /// How many.
    pub changes: u64,
    /// What the first of them needs that this laptop does not have.
    pub needs: Vec<NeededChanges>,
}

/// Changes of one member that something waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeededChanges {
    /// The member (label).
    pub member: String,
    /// Up to which of its changes this laptop has applied.
    pub holds: u64,
    /// Up to which one is needed.
    pub needs: u64,
}

/// `ferry status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Home folder.
    pub home: String,
    /// This node's label.
    pub label: String,
    /// This node's member number.
    pub member: u32,
    /// Dataset name.
    pub dataset: String,
    /// Dataset id (hex).
    pub dataset_id: String,
    /// Members.
    pub members: Vec<MemberStatus>,
    /// Live records (excluding dataset metadata).
    pub records: u64,
    /// Records with unresolved concurrent writes.
    pub conflicts: u64,
    /// Commits held but waiting for commits they depend on.
    pub pending: u64,
    /// Commits kept aside until their author's earlier commits or membership arrive.
    pub waiting_for_prerequisites: u64,
    /// What the pending and kept-aside changes wait for, per author.
    pub waiting: Vec<WaitingChanges>,
    /// Inputs refused and kept in quarantine.
    pub quarantined: u64,
    /// The most recent quarantine entries (at most 5): time, source, reason.
    pub recent_quarantine: Vec<(String, String, String)>,
    /// Bundles waiting in the email outbox: (name, attempts, last error).
    pub email_outbox: Vec<(String, u32, Option<String>)>,
    /// SMS counters per member.
    pub sms: Vec<crate::SmsCounters>,
    /// When another device also writes as this member (evidence of a fork of this laptop's
    /// own history reached it): the change from which the others accept nothing from it.
    pub own_fork: Option<u64>,
    /// When a key grant said the admin removed this laptop: that line.
    pub removed_here: Option<String>,
    /// Bundles that came by a transport and wait, unused, until they can be checked.
    pub waiting_bundles: u64,
    /// The admin accepted another laptop as this member (one invitation used twice).
    pub refused_membership: Option<crate::rejoin::RefusedMembership>,
    /// The members that hold back compaction and purge here, the longest silent first.
    pub held_back_by: Vec<crate::HoldBack>,
    /// Changes of other members applied here from a bundle whose import stopped between two
    /// of its steps (their author's signature is in the part not read yet), per member:
    /// (label, how many). They are passed on once the rest of the bundle is imported.
    pub unfinished: Vec<(String, u64)>,
}

/// The merge rules of the dataset: (collection, field) → rule; `conflict` when unset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules(BTreeMap<(String, String), Rule>);

impl Rules {
    /// The rule of one field.
    pub fn of(&self, collection: &str, field: &str) -> Rule {
        self.0
            .get(&(collection.to_string(), field.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Every rule that is set: (collection, field, rule), sorted.
    pub fn list(&self) -> Vec<(String, String, Rule)> {
        self.0
            .iter()
            .map(|((c, f), r)| (c.clone(), f.clone(), *r))
            .collect()
    }
}

/// One value of a conflicted field.
#[derive(Clone, Debug, Serialize)]
pub struct ConflictValue {
    /// The value.
    #[serde(serialize_with = "ser_value")]
    pub value: Value,
    /// The author's label.
    pub author: String,
    /// The author's member number.
    pub member: u32,
    /// When it was written (ISO 8601, from the hybrid clock).
    pub at: String,
}

/// One conflicted field (`ferry conflicts`).
#[derive(Clone, Debug, Serialize)]
pub struct ConflictView {
    /// Collection.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// Field.
    pub field: String,
    /// The value shown everywhere.
    #[serde(serialize_with = "ser_value")]
    pub winner: Value,
    /// Every concurrent value, the winner first.
    pub values: Vec<ConflictValue>,
}

/// Whether `a` and `b` are the same number written as an integer and as a float.
fn same_number(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(f), Value::Int(i)) | (Value::Int(i), Value::Float(f)) => *i as f64 == *f,
        _ => false,
    }
}

pub(crate) fn ser_value<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    json::to_json(v).serialize(s)
}

pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    b
}

pub(crate) fn check_label(what: &str, s: &str) -> Result<(), NodeError> {
    if s.trim().is_empty() || s.len() > limits::MAX_LABEL || s.chars().any(char::is_control) {
        return Err(NodeError::BadArgument(format!(
            "{what} must be 1 to {} characters, without control characters",
            limits::MAX_LABEL
        )));
    }
    if s.starts_with('#') {
        return Err(NodeError::BadArgument(format!(
            "{what} cannot start with #: #N names member number N wherever a label is asked for"
        )));
    }
    Ok(())
}

/// The member a person named: `#N` (its number) or its label, compared without regard to
/// case or surrounding spaces (labels are unique that way).
pub(crate) fn find_member(labels: &BTreeMap<MemberId, String>, name: &str) -> Option<MemberId> {
    let name = name.trim();
    if let Some(n) = name.strip_prefix('#') {
        let n: u32 = n.parse().ok()?;
        return labels.contains_key(&MemberId(n)).then_some(MemberId(n));
    }
    labels
        .iter()
        .find(|(_, l)| same_label(l, name))
        .map(|(&m, _)| m)
}

/// The usage mistake of naming a member nobody is: it lists who there is.
pub(crate) fn no_such_member(labels: &BTreeMap<MemberId, String>, who: &str) -> NodeError {
    let known: Vec<String> = labels
        .iter()
        .map(|(m, l)| format!("#{} {l}", m.0))
        .collect();
    NodeError::BadArgument(format!(
        "no member is {who:?}: name one by its label or as #N; members: {}",
        known.join(", ")
    ))
}

/// Whether two labels name the same member (case and surrounding spaces aside).
fn same_label(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Checks a collection name a person gave: 1 to 256 bytes, not starting with `_` (reserved
/// for ferry's own data).
pub fn check_collection(c: &str) -> Result<(), NodeError> {
    if c.is_empty() || c.len() > limits::MAX_NAME {
        return Err(NodeError::BadArgument(format!(
            "collection names must be 1 to {} bytes",
            limits::MAX_NAME
        )));
    }
    if c.starts_with('_') {
        return Err(NodeError::BadArgument(format!(
            "collection {c:?}: names starting with '_' are reserved for ferry's own metadata"
        )));
    }
    Ok(())
}

pub(crate) fn check_id(id: &str) -> Result<(), NodeError> {
    if id.is_empty() || id.len() > limits::MAX_RECORD_ID {
        return Err(NodeError::BadArgument(format!(
            "record ids must be 1 to {} bytes",
            limits::MAX_RECORD_ID
        )));
    }
    Ok(())
}

pub(crate) fn check_field(f: &str) -> Result<(), NodeError> {
    if f.is_empty() || f.len() > limits::MAX_NAME {
        return Err(NodeError::BadArgument(format!(
            "field names must be 1 to {} bytes",
            limits::MAX_NAME
        )));
    }
    if f == "id" {
        return Err(NodeError::BadArgument(
            "\"id\" is the record id, not a field; choose another field name".into(),
        ));
    }
    Ok(())
}

impl Node {
    /// Creates a node in `home` and a new dataset with it as admin.
    pub fn create(home: &Home, label: &str, dataset_name: &str) -> Result<Node, NodeError> {
        check_label("--name", label)?;
        check_label("the dataset name", dataset_name)?;
        if home.exists() {
            return Err(NodeError::AlreadyInitialized(home.root().to_path_buf()));
        }
        let secret = SecretKey::from_bytes(random());
        let id = Identity {
            dataset: DatasetId(random()),
            dataset_name: dataset_name.to_string(),
            dataset_key: DatasetKey(random()),
            admin_key: secret.public(),
            me: MemberId::ADMIN,
            label: label.to_string(),
            secret,
        };
        let genesis = Change::Genesis {
            name: dataset_name.to_string(),
            label: label.to_string(),
            admin_key: id.admin_key,
        };
        let keys = Keyring::new(id.dataset_key.clone());
        Self::init(home, id, Vec::new(), genesis, keys)
    }

    /// Creates a node in `home` that joins a dataset with the invitation `invite`, opened
    /// with its one-time `code` as a person typed it (files from earlier ferry need none).
    ///
    /// The laptop takes the label the admin gave the invitation (labels belong to the admin,
    /// so that no laptop can take another's name); `label`, when given, must be that one.
    pub fn join(
        home: &Home,
        label: Option<&str>,
        invite: &InvitationFile,
        code: Option<&str>,
    ) -> Result<Node, NodeError> {
        if let Some(label) = label {
            check_label("--name", label)?;
        }
        if home.exists() {
            return Err(NodeError::AlreadyInitialized(home.root().to_path_buf()));
        }
        let (inv, extras) = invite.open_with_extras(code)?;
        if let Some(at) = extras.expires_ms.filter(|&at| now_ms() > at) {
            return Err(invite.bad(&format!(
                "the invitation expired at {} (by this laptop's clock); ask {} for a new one",
                crate::time::format_utc(at),
                inv.admin_label
            )));
        }
        let invited = inv.cert.label.as_str();
        if let Some(label) = label.filter(|&l| l != invited) {
            return Err(NodeError::BadArgument(format!(
                "{} invites this laptop as {invited:?}, not {label:?}: labels are given by the admin, so that no laptop can take another's name; run the command again without --name, or ask {} for an invitation with --label {label:?}",
                invite.path().display(),
                inv.admin_label
            )));
        }
        let label = invited;
        let secret = SecretKey::from_bytes(random());
        let proof = inv.join_proof(&secret.public());
        proof.verify(inv.dataset, inv.member(), &inv.admin_key).map_err(|e| match e {
            // The file was opened, so its admin signature failing means bytes changed
            // after `ferry invite` wrote them: damage, as far as anyone can tell here.
            JoinError::BadCert | JoinError::BadJoinSig => invite.bad(
                "the file is damaged: its admin signature does not match its content (it changed after `ferry invite` wrote it); ask the admin for the file again, or for a new invitation",
            ),
            other => invite.bad(&other.to_string()),
        })?;
        // The invitation is signed by the admin whose range holds the member's number; the
        // founder (the dataset's admin key) is named in its extras when that is another.
        let inviter = ferry_sync::roles::inviter(inv.member());
        let (admin_key, mut admins) = match (&extras.founder, inviter) {
            (Some(f), by) if by != MemberId::ADMIN => (
                PublicKey(f.key),
                vec![
                    MemberInfo {
                        member: MemberId::ADMIN,
                        key: PublicKey(f.key),
                        label: f.label.clone(),
                    },
                    MemberInfo {
                        member: by,
                        key: inv.admin_key,
                        label: inv.admin_label.clone(),
                    },
                ],
            ),
            (None, MemberId::ADMIN) => (
                inv.admin_key,
                vec![MemberInfo {
                    member: MemberId::ADMIN,
                    key: inv.admin_key,
                    label: inv.admin_label.clone(),
                }],
            ),
            _ => {
                return Err(invite.bad(
                    "the file is damaged: its member number and the admin that signed it do not match",
                ));
            }
        };
        let id = Identity {
            dataset: inv.dataset,
            dataset_name: inv.dataset_name.clone(),
            dataset_key: DatasetKey(inv.dataset_key),
            admin_key,
            me: inv.member(),
            label: label.to_string(),
            secret,
        };
        admins.sort_by_key(|m| m.member);
        // The keys of the epochs the dataset went through before the invitation was made.
        let mut keys = Keyring::new(id.dataset_key.clone());
        let epochs: Vec<(EpochId, DatasetKey)> = (extras.epoch_keys.iter().enumerate())
            .map(|(e, k)| (EpochId::founder(e as u32 + 1), DatasetKey(*k)))
            .chain(extras.other_epochs.iter().map(|&(number, signer, k)| {
                let signer = MemberId(signer);
                (EpochId { number, signer }, DatasetKey(k))
            }))
            .collect();
        keys.install(&epochs, None);
        Self::init(home, id, admins, Change::Join(proof), keys)
    }

    /// Makes the home, stores the identity (and the admin, known from an invitation), and
    /// writes the node's first commit.
    fn init(
        home: &Home,
        id: Identity,
        admins: Vec<MemberInfo>,
        first: Change,
        keys: Keyring,
    ) -> Result<Node, NodeError> {
        home.create()?;
        let result = (|| {
            // With a passphrase, the store is encrypted from its first byte.
            let store_key = match home.passphrase() {
                Some(p) => {
                    let key: [u8; 32] = random();
                    let sealed =
                        crate::lock::seal(&key, p.as_str(), random(), crate::lock::PASSPHRASE_KDF);
                    write_private(&home.store_key_file(), &sealed)?;
                    Some(key)
                }
                None => None,
            };
            let mut store = match &store_key {
                Some(key) => Store::open_encrypted(&home.db(), key)?,
                None => Store::open(&home.db())?,
            };
            let engine = Engine {
                dataset: id.dataset,
                admin_key: id.admin_key,
                me: id.me,
            };
            let now = now_ms();
            let mut tx = store.transaction(now)?;
            tx.set_meta("identity", &id.to_bytes())?;
            if keys.current().0.number > 0 {
                tx.set_meta(KEYRING, &keys.to_bytes())?;
            }
            for admin in &admins {
                tx.put_member(admin)?;
            }
            // The first commit also says which bundle versions this ferry reads.
            engine.commit_local(&mut tx, vec![first, reads_change(id.me)], now)?;
            tx.commit()?;
            Ok(Node {
                home: home.clone(),
                store,
                id,
                engine,
                keys,
                store_key,
                bundle_for: None,
                _presence: None,
            })
        })();
        if result.is_err() {
            // Leave no half-made node behind.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", home.db().display()));
            }
            let _ = std::fs::remove_file(home.store_key_file());
        }
        result
    }

    /// Opens the node in `home`.
    pub fn open(home: &Home) -> Result<Node, NodeError> {
        if !home.exists() {
            return Err(NodeError::NoNode(home.root().to_path_buf()));
        }
        let (mut store, store_key) = open_store(home)?;
        let id = {
            let tx = store.read()?;
            let bytes = tx
                .meta("identity")?
                .ok_or_else(|| NodeError::NoNode(home.root().to_path_buf()))?;
            Identity::from_bytes(&bytes).map_err(|source| NodeError::CorruptIdentity {
                path: home.db(),
                source,
            })?
        };
        let keys = match store.read()?.meta(KEYRING)? {
            None => Keyring::new(id.dataset_key.clone()),
            Some(b) => Keyring::from_bytes(id.dataset_key.clone(), &b).map_err(|source| {
                NodeError::CorruptIdentity {
                    path: home.db(),
                    source,
                }
            })?,
        };
        let engine = Engine {
            dataset: id.dataset,
            admin_key: id.admin_key,
            me: id.me,
        };
        // Temporary files of an export or receive that was killed give their space back
        // at the next command; those of live writers (a listener) are left alone.
        home.sweep_staging();
        let what = std::env::args()
            .enumerate()
            .map(|(i, a)| match i {
                // The program by its name, not its path.
                0 => Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |n| n.to_string_lossy().into_owned()),
                _ => a,
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut node = Node {
            home: home.clone(),
            store,
            id,
            engine,
            keys,
            store_key,
            bundle_for: None,
            _presence: home.announce(&what),
        };
        node.finish_interrupted_import()?;
        Ok(node)
    }

    /// After an import killed between two steps of a large bundle (ferry_store::UNSETTLED),
    /// does what that import would have done at its end: applies what the steps made ready
    /// (others' changes that waited for them, kept-aside runs), on an admin's laptop records
    /// new members' keys, and tries the bundles that wait here again. Left to the import
    /// itself while another ferry uses the home (it may be that import).
    fn finish_interrupted_import(&mut self) -> Result<(), NodeError> {
        if self.store.read()?.meta(ferry_store::UNSETTLED)?.is_none()
            || !self.home.others().is_empty()
        {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        self.engine.settle(&mut tx, now)?;
        tx.delete_meta(ferry_store::UNSETTLED)?;
        tx.commit()?;
        self.retry_waiting(&crate::NoProgress)?;
        Ok(())
    }

    /// Calls `notice` with one line whenever a change to the store has waited a second for
    /// another process writing to this home: which process (its id and command) and since
    /// when. The wait goes on (up to the store's limit).
    pub fn on_wait(&mut self, mut notice: impl FnMut(&str) + Send + 'static) {
        let home = self.home.clone();
        self.store.set_on_wait(Some(Box::new(move || {
            let others = home.others();
            let now = now_ms();
            let line = if others.is_empty() {
                format!(
                    "waiting for another program that is writing to {} to finish",
                    home.db().display()
                )
            } else {
                let who: Vec<String> = others
                    .iter()
                    .map(|(pid, what, since)| {
                        format!(
                            "process {pid} `{what}`, running since {} ({} s)",
                            crate::time::format_utc(*since),
                            now.saturating_sub(*since) / 1000
                        )
                    })
                    .collect();
                format!(
                    "waiting for another ferry on this home to finish its change: {}",
                    who.join("; ")
                )
            };
            notice(&line);
        })));
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// The home folder.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.id.secret.public()
    }

    /// Commits changes made by this node (used by other modules of the crate).
    pub(crate) fn commit_changes(&mut self, changes: Vec<Change>) -> Result<(), NodeError> {
        self.commit(changes)
    }

    pub(crate) fn commit(&mut self, changes: Vec<Change>) -> Result<(), NodeError> {
        self.commit_noting(changes, None)
    }

    /// [`Node::commit`] with a metadata value set in the same transaction; with no change,
    /// only the value is set.
    pub(crate) fn commit_noting(
        &mut self,
        mut changes: Vec<Change>,
        note: Option<(&str, &[u8])>,
    ) -> Result<(), NodeError> {
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        if let Some((key, value)) = note {
            tx.set_meta(key, value)?;
        }
        if changes.is_empty() {
            tx.commit()?;
            return Ok(());
        }
        if !reads_announced(&tx, self.id.me)? {
            changes.push(reads_change(self.id.me));
        }
        // Read in the write transaction, so a bundle applied meanwhile (a listener) is seen.
        for change in &mut changes {
            if let Change::Record {
                collection,
                id,
                ops,
            } = change
            {
                let state = tx.record(collection, id)?;
                *ops = with_revival(state.as_ref(), std::mem::take(ops));
            }
        }
        self.engine.commit_local(&mut tx, changes, now)?;
        tx.commit()?;
        Ok(())
    }

    /// On an admin's laptop, trains the dataset's compression dictionary when one is due
    /// (bundles/SPEC.md §18: the first at 1,000 records) and commits it as `_dicts/K`, so
    /// that once every member holds it, small bundles (SMS, radio) shrink. Called before
    /// planning what to send; does nothing on other laptops.
    pub(crate) fn train_dictionary(&mut self) -> Result<(), NodeError> {
        let engine = self.engine.clone();
        let change = engine.train_dictionary(&self.read()?)?;
        if let Some(change) = change {
            self.commit(vec![change])?;
        }
        Ok(())
    }

    /// Writes an invitation for a new member to `out` (admin only), sealed with a fresh
    /// one-time code that the report carries.
    ///
    /// The member number is read, reserved (`last_invited`) and recorded (the `_members/N`
    /// label) in one write transaction, which SQLite serializes across processes, so two
    /// invites at once never get the same number. The file is written only after that
    /// transaction committed: a crash in between leaves a number reserved and unused, never
    /// a file whose number the next invite hands out again. If the file cannot be written,
    /// the number stays used up (a partly written file may exist somewhere) and the label is
    /// deleted again, so no member that can never join is waited for.
    pub fn invite(&mut self, out: &Path, label: Option<&str>) -> Result<InviteReport, NodeError> {
        self.invite_until(out, label, None)
    }

    /// [`Node::invite`], for an invitation that expires `valid_ms` from now (by this
    /// laptop's clock): the joining laptop refuses it after that, and the admin refuses a
    /// join whose first bundle reaches it later (and cancels the invitation for everyone).
    pub fn invite_until(
        &mut self,
        out: &Path,
        label: Option<&str>,
        valid_ms: Option<u64>,
    ) -> Result<InviteReport, NodeError> {
        self.require_admin("invite new members")?;
        let labels = self.labels()?;
        if let Some(label) = label {
            check_label("--label", label)?;
            if let Some(m) = find_member(&labels, label) {
                return Err(NodeError::BadArgument(format!(
                    "{label:?} is already the label of member #{}: each label names one laptop; choose another --label",
                    m.0
                )));
            }
        }
        // Refused before a number is used up; `write_private` checks again, atomically.
        if out.symlink_metadata().is_ok() {
            return Err(already_exists(out));
        }
        // Each admin draws numbers from its own range, so admins inviting offline never
        // collide (bundles/SPEC.md §15).
        let Some((lo, hi)) = ferry_sync::roles::range(self.id.me) else {
            return Err(NodeError::BadArgument(format!(
                "this laptop is member #{}: only admins numbered below {} have member numbers to give; ask another admin to invite",
                self.id.me.0,
                ferry_sync::roles::RANGE
            )));
        };
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        let mut top = lo - 1;
        let mut used = |n: u32| {
            if (lo..=hi).contains(&n) {
                top = top.max(n);
            }
        };
        for m in tx.members()? {
            used(m.member.0);
        }
        tx.for_each_record("_members", false, |id, _| {
            if let Ok(n) = id.parse::<u32>() {
                used(n);
            }
            Ok(())
        })?;
        if let Some(n) = tx.meta("last_invited")? {
            used(u32::from_le_bytes(n.try_into().unwrap_or_default()));
        }
        if top >= hi {
            return Err(NodeError::BadArgument(format!(
                "this admin has given all {} of its member numbers; ask another admin to invite",
                hi - lo + 1
            )));
        }
        let member = MemberId(top + 1);
        let label = label.map_or_else(
            || {
                // `member-N`, unless the admin already gave that label to another laptop.
                (1..)
                    .map(|k| match k {
                        1 => format!("member-{}", member.0),
                        k => format!("member-{}.{k}", member.0),
                    })
                    .find(|l| find_member(&labels, l).is_none())
                    .unwrap_or_default()
            },
            str::to_string,
        );
        tx.set_meta("last_invited", &member.0.to_le_bytes())?;
        let expires_ms = valid_ms.map(|v| now.saturating_add(v));
        let mut record = member_label(member, &label);
        if let (Some(at), Change::Record { ops, .. }) = (expires_ms, &mut record) {
            ops.push(Op::Set(
                ferry_sync::MEMBER_EXPIRES_FIELD.into(),
                Value::Int(i64::try_from(at).unwrap_or(i64::MAX)),
            ));
        }
        self.engine.commit_local(&mut tx, vec![record], now)?;
        tx.commit()?;

        let admin_label = labels
            .get(&self.id.me)
            .cloned()
            .unwrap_or_else(|| self.id.label.clone());
        let inv = Invitation::issue(
            &self.id.secret,
            &admin_label,
            self.id.dataset,
            &self.id.dataset_name,
            self.id.dataset_key.0,
            member,
            &label,
            random(),
        );
        let code = InviteCode::from_random(random());
        // A laptop invited after a key change reads with the keys of the epochs so far.
        // Numbered 1, 2, … while they are the founder's without a gap (as earlier ferry
        // reads them), else each with its number and signer.
        let keys = self.judge_epochs(None)?.invitable(&self.keys);
        let dense = keys
            .iter()
            .enumerate()
            .all(|(i, (e, _))| *e == EpochId::founder(i as u32 + 1));
        let (epoch_keys, other_epochs) = if dense {
            (keys.iter().map(|(_, k)| k.0).collect(), Vec::new())
        } else {
            (
                Vec::new(),
                keys.iter()
                    .map(|(e, k)| (e.number, e.signer.0, k.0))
                    .collect(),
            )
        };
        // An invitation by another admin than the founder names the founder too.
        let founder = match self.id.me {
            MemberId::ADMIN => None,
            _ => Some(invite::Founder {
                key: self.id.admin_key.0,
                label: labels.get(&MemberId::ADMIN).cloned().unwrap_or_default(),
            }),
        };
        let extras = invite::InviteExtras {
            expires_ms,
            epoch_keys,
            founder,
            other_epochs,
        };
        let bytes = invite::seal_with(&inv, extras, &code, random(), KdfParams::DEFAULT);
        if let Err(e) = write_private(out, &bytes) {
            // `cannot write` comes after `write_private` created the file: remove what it
            // wrote. (Any other error: the file is not ours, or was never made.)
            if matches!(&e, NodeError::Io { what, .. } if *what == "cannot write") {
                let _ = std::fs::remove_file(out);
            }
            // Best effort: if this fails too, the member shows as invited and never
            // joining; the next invite still gets a new number.
            let _ = self.commit(vec![Change::Record {
                collection: "_members".into(),
                id: member.0.to_string(),
                ops: vec![Op::Delete],
            }]);
            return Err(e);
        }
        Ok(InviteReport {
            path: out.to_path_buf(),
            member: member.0,
            label,
            code: code.to_string(),
            expires: expires_ms.map(crate::time::format_utc),
        })
    }

    /// Every invitation the admin wrote (on any laptop: the `_members` records), and what
    /// became of it.
    pub fn invitations(&mut self) -> Result<Vec<InvitationView>, NodeError> {
        let labels = self.labels()?;
        let now = now_ms();
        let mut tx = self.store.read()?;
        let joined: BTreeSet<MemberId> = tx.members()?.into_iter().map(|m| m.member).collect();
        let mut out = Vec::new();
        tx.for_each_record("_members", false, |id, r| {
            let Ok(n) = id.parse::<u32>() else {
                return Ok(());
            };
            let m = MemberId(n);
            if m == MemberId::ADMIN {
                return Ok(());
            }
            let issued = r
                .fields
                .get("label")
                .into_iter()
                .flatten()
                .filter(|sib| sib.stamp.dot.author != m)
                .map(|sib| sib.stamp.hlc.ms())
                .min();
            let expires = ferry_sync::invitation_expiry(Some(r));
            let cancelled = ferry_sync::cancellation(Some(r));
            let accepted = !ferry_sync::accepted_keys(Some(r)).is_empty();
            let state = match (&cancelled, accepted || joined.contains(&m)) {
                (Some(_), _) => "cancelled",
                (None, true) => "joined",
                (None, false) if expires.is_some_and(|e| now > e) => "expired",
                (None, false) => "open",
            };
            out.push(InvitationView {
                member: n,
                label: labels.get(&m).cloned().unwrap_or_else(|| m.to_string()),
                issued: issued.map(crate::time::format_utc),
                expires: expires.map(crate::time::format_utc),
                state,
                cancelled: cancelled.map(|(why, _)| why),
            });
            Ok(())
        })?;
        out.sort_by_key(|v| v.member);
        Ok(out)
    }

    /// Cancels the invitation of member `who` (`#N` or its label; admin only): from the
    /// next sync on, every laptop refuses that member — nothing it writes is applied, nothing
    /// it sends is accepted — and compaction and purge stop waiting for it. An invitation
    /// whose laptop has joined (its first bundle reached this admin) cannot be cancelled.
    /// Returns the member's number and label.
    pub fn cancel_invitation(
        &mut self,
        who: &str,
        reason: Option<&str>,
    ) -> Result<(u32, String), NodeError> {
        let (member, label) = self.admin_names("cancel invitations", who)?;
        if member == self.id.me {
            return Err(NodeError::BadArgument(format!(
                "{label} is this laptop, the admin: it has no invitation to cancel"
            )));
        }
        let view = self
            .invitations()?
            .into_iter()
            .find(|v| v.member == member.0);
        match view.as_ref().map(|v| v.state) {
            Some("joined") => {
                return Err(NodeError::BadArgument(format!(
                    "{label} (#{}) has joined: its first bundle reached this laptop, so its invitation can no longer be cancelled",
                    member.0
                )));
            }
            Some("cancelled") => {
                return Err(NodeError::BadArgument(format!(
                    "the invitation of {label} (#{}) is already cancelled",
                    member.0
                )));
            }
            _ => {}
        }
        let why = reason.map_or_else(
            || "cancelled with `ferry invite cancel`".to_string(),
            str::to_string,
        );
        check_label("--reason", &why)?;
        self.commit(vec![Change::Record {
            collection: "_members".into(),
            id: member.0.to_string(),
            ops: vec![Op::Set(
                ferry_sync::MEMBER_CANCELLED_FIELD.into(),
                Value::Str(why),
            )],
        }])?;
        Ok((member.0, label))
    }

    /// Sets fields of one record in one commit, and returns how many fields it changed: a
    /// field that already shows the value (and is not in conflict) is left out, and a put
    /// that changes nothing makes no commit, so nothing travels for it.
    pub fn put(
        &mut self,
        collection: &str,
        id: &str,
        fields: &[(String, Value)],
    ) -> Result<usize, NodeError> {
        check_collection(collection)?;
        check_id(id)?;
        if fields.is_empty() {
            return Err(NodeError::BadArgument(
                "give at least one FIELD=VALUE".into(),
            ));
        }
        for (f, _) in fields {
            check_field(f)?;
        }
        let state = self.get(collection, id)?;
        let ops = changing_ops(
            state.as_ref(),
            fields
                .iter()
                .map(|(f, v)| Op::Set(f.clone(), v.clone()))
                .collect(),
            true,
        );
        let changed = ops.len();
        if changed > 0 {
            self.commit(vec![Change::Record {
                collection: collection.into(),
                id: id.into(),
                ops,
            }])?;
        }
        Ok(changed)
    }

    /// Deletes a record. Returns `false` if there was no such live record.
    pub fn delete(&mut self, collection: &str, id: &str) -> Result<bool, NodeError> {
        check_collection(collection)?;
        check_id(id)?;
        if !self.get(collection, id)?.is_some_and(|r| r.is_live()) {
            return Ok(false);
        }
        self.commit(vec![Change::Record {
            collection: collection.into(),
            id: id.into(),
            ops: vec![Op::Delete],
        }])?;
        Ok(true)
    }

    /// A record's merge state.
    pub fn get(&mut self, collection: &str, id: &str) -> Result<Option<RecordState>, NodeError> {
        let tx = self.store.read()?;
        Ok(tx.record(collection, id)?)
    }

    /// The collections this laptop holds records of (live, or deleted and not purged yet),
    /// with how many live records each, by name; ferry's own (`_members`, …) left out.
    pub fn collections(&mut self) -> Result<Vec<(String, u64)>, NodeError> {
        let mut tx = self.store.read()?;
        let mut all = tx.collections()?;
        all.retain(|(c, _)| !c.starts_with('_'));
        Ok(all)
    }

    /// Fails with [`NodeError::NoCollection`], naming the collections there are, when this
    /// laptop holds no record of `collection` at all (live, or deleted and not purged yet).
    pub fn require_collection(&mut self, collection: &str) -> Result<(), NodeError> {
        if self.store.read()?.has_collection(collection)? {
            return Ok(());
        }
        Err(NodeError::NoCollection {
            name: collection.to_string(),
            here: self.collections()?,
        })
    }

    /// Calls `f` with every live record of `collection`, in id order, as the store reads
    /// them (nothing is collected in memory; none for a collection this laptop has no
    /// record of: [`Node::require_collection`] tells the two apart).
    pub fn for_each_record(
        &mut self,
        collection: &str,
        f: impl FnMut(&str, &RecordState) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let mut tx = self.store.read()?;
        for_each_live(&mut tx, collection, f)
    }

    /// What waits on this laptop, per author, and whose changes it needs.
    pub fn waiting_changes(&mut self) -> Result<Vec<WaitingChanges>, NodeError> {
        let labels = self.labels()?;
        let label = |m: MemberId| {
            labels
                .get(&m)
                .cloned()
                .unwrap_or_else(|| format!("member #{}", m.0))
        };
        let engine = self.engine.clone();
        let blocked = {
            let tx = self.read()?;
            engine.blocked(&tx)?
        };
        Ok(blocked
            .into_iter()
            .map(|b| WaitingChanges {
                author: label(b.author),
                changes: b.waiting,
                needs: b
                    .needs
                    .iter()
                    .map(|n| NeededChanges {
                        member: label(n.member),
                        holds: n.held,
                        needs: n.needed,
                    })
                    .collect(),
            })
            .collect())
    }

    /// `Ok` on the admin's laptop; else the error that names the admin and what only it can
    /// do (`to`, e.g. "invite new members").
    /// The member `who` (`#N` or its label) an admin-only action `to` names: its number and
    /// label; refused on a laptop that is not the admin, or for no such member.
    pub(crate) fn admin_names(
        &mut self,
        to: &'static str,
        who: &str,
    ) -> Result<(MemberId, String), NodeError> {
        self.require_admin(to)?;
        let labels = self.labels()?;
        let Some(member) = find_member(&labels, who) else {
            return Err(no_such_member(&labels, who));
        };
        Ok((member, labels.get(&member).cloned().unwrap_or_default()))
    }

    pub(crate) fn require_admin(&mut self, to: &'static str) -> Result<(), NodeError> {
        let admins = self.admins()?;
        if admins.contains(&self.id.me) {
            return Ok(());
        }
        let labels = self.labels()?;
        let admin = admins
            .iter()
            .map(|m| labels.get(m).cloned().unwrap_or_else(|| m.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(NodeError::NotAdmin { admin, to })
    }

    /// The dataset's admins as this laptop knows them now (bundles/SPEC.md §15).
    pub fn admins(&mut self) -> Result<Vec<MemberId>, NodeError> {
        let tx = self.store.read()?;
        Ok(ferry_sync::roles::admins(&tx)?)
    }

    /// Whether this laptop is one of the dataset's admins now.
    pub fn is_admin(&mut self) -> Result<bool, NodeError> {
        let me = self.id.me;
        Ok(self.admins()?.contains(&me))
    }

    /// Member number → label: the label the admin wrote in `_members/N` (its invitation, or
    /// a rename), else the label of the invitation the member joined with (which the admin
    /// signed). Labels belong to the admin: a label a member wrote for itself (earlier ferry
    /// let a joining laptop choose one) does not count.
    pub fn labels(&mut self) -> Result<BTreeMap<MemberId, String>, NodeError> {
        let mut tx = self.store.read()?;
        let mut out: BTreeMap<MemberId, String> = tx
            .members()?
            .into_iter()
            .map(|m| (m.member, m.label))
            .collect();
        tx.for_each_record("_members", false, |id, r| {
            let Ok(n) = id.parse::<u32>() else {
                return Ok(());
            };
            if let Some(l) = admin_label(MemberId(n), r) {
                out.insert(MemberId(n), l);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every member this node knows of (joined or invited), itself excluded.
    ///
    /// A member whose invitation was cancelled is not waited for: nothing of it counts.
    pub(crate) fn known_peers(&mut self) -> Result<Vec<MemberId>, NodeError> {
        let mut peers: BTreeSet<MemberId> = self.labels()?.into_keys().collect();
        peers.remove(&self.id.me);
        let mut tx = self.store.read()?;
        for m in crate::epochs::gone_members(&mut tx)? {
            peers.remove(&m);
        }
        Ok(peers.into_iter().collect())
    }

    /// Unresolved concurrent writes: fields under the `conflict` rule with more than one
    /// value, and records deleted on one laptop while edited on another (field `(record)`,
    /// values `deleted` and `kept`).
    pub fn conflicts(&mut self) -> Result<Vec<ConflictView>, NodeError> {
        let labels = self.labels()?;
        let rules = self.rules()?;
        let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
        let mut tx = self.store.read()?;
        let mut out = Vec::new();
        for row in tx.conflicts()? {
            if row.collection.starts_with('_') {
                continue;
            }
            for field in row.state.conflicted_fields() {
                if rules.of(&row.collection, field) != Rule::Conflict {
                    continue;
                }
                let values: Vec<ConflictValue> = row
                    .state
                    .values(field)
                    .into_iter()
                    .map(|(stamp, v)| ConflictValue {
                        value: v.clone(),
                        author: label(stamp.dot.author),
                        member: stamp.dot.author.0,
                        at: crate::time::format_utc(stamp.hlc.ms()),
                    })
                    .collect();
                out.push(ConflictView {
                    collection: row.collection.clone(),
                    id: row.id.clone(),
                    field: field.to_string(),
                    winner: values[0].value.clone(),
                    values,
                });
            }
            if row.state.delete_conflict() {
                let mut values: Vec<ConflictValue> = row
                    .state
                    .tombstones
                    .iter()
                    .map(|t| ConflictValue {
                        value: Value::Str("deleted".into()),
                        author: label(t.dot.author),
                        member: t.dot.author.0,
                        at: crate::time::format_utc(t.hlc.ms()),
                    })
                    .collect();
                let mut edits: Vec<_> = row.state.stamps().map(|(_, s)| s.stamp).collect();
                edits.sort_by(|a, b| b.cmp_rank(a));
                edits.dedup_by_key(|s| s.dot);
                values.splice(
                    0..0,
                    edits.iter().map(|s| ConflictValue {
                        value: Value::Str("kept".into()),
                        author: label(s.dot.author),
                        member: s.dot.author.0,
                        at: crate::time::format_utc(s.hlc.ms()),
                    }),
                );
                out.push(ConflictView {
                    collection: row.collection.clone(),
                    id: row.id.clone(),
                    field: "(record)".into(),
                    winner: Value::Str("kept".into()),
                    values,
                });
            }
        }
        Ok(out)
    }

    /// The dataset's merge rules.
    pub fn rules(&mut self) -> Result<Rules, NodeError> {
        let mut tx = self.store.read()?;
        let mut out = BTreeMap::new();
        tx.for_each_record("_rules", true, |collection, r| {
            for (field, v) in r.shown() {
                if let Value::Str(name) = v {
                    if let Ok(rule) = name.parse::<Rule>() {
                        out.insert((collection.to_string(), field.to_string()), rule);
                    }
                }
            }
            Ok(())
        })?;
        Ok(Rules(out))
    }

    /// Sets the merge rule of a field (admin only); replicated to every member.
    pub fn set_rule(&mut self, collection: &str, field: &str, rule: Rule) -> Result<(), NodeError> {
        check_collection(collection)?;
        check_field(field)?;
        self.require_admin("set merge rules")?;
        self.commit(vec![Change::Record {
            collection: "_rules".into(),
            id: collection.into(),
            ops: vec![Op::Set(field.into(), Value::Str(rule.name().into()))],
        }])
    }

    /// Gives member `who` (`#N` or its label) the label `new` (admin only): labels belong
    /// to the admin and name one laptop each. Returns the member's number and old label.
    pub fn rename_member(&mut self, who: &str, new: &str) -> Result<(u32, String), NodeError> {
        self.require_admin("rename members")?;
        check_label("the new label", new)?;
        let labels = self.labels()?;
        let Some(member) = find_member(&labels, who) else {
            return Err(no_such_member(&labels, who));
        };
        let old = labels.get(&member).cloned().unwrap_or_default();
        if let Some(other) = find_member(&labels, new).filter(|&m| m != member) {
            return Err(NodeError::BadArgument(format!(
                "{new:?} is already the label of member #{}: each label names one laptop; choose another",
                other.0
            )));
        }
        if old != new {
            self.commit(vec![member_label(member, new)])?;
        }
        Ok((member.0, old))
    }

    /// Writes ops on one field of a record in one commit, after checking the names.
    fn edit(
        &mut self,
        collection: &str,
        id: &str,
        field: &str,
        ops: Vec<Op>,
    ) -> Result<(), NodeError> {
        check_collection(collection)?;
        check_id(id)?;
        check_field(field)?;
        self.commit(vec![Change::Record {
            collection: collection.into(),
            id: id.into(),
            ops,
        }])
    }

    /// Adds `by` to a counter field (concurrent increments add up). Refused on a field whose
    /// rule is not `counter` ([`NodeError::WrongRule`]).
    pub fn incr(
        &mut self,
        collection: &str,
        id: &str,
        field: &str,
        by: i64,
    ) -> Result<(), NodeError> {
        self.require_rule(collection, field, Rule::Counter, "incr")?;
        self.edit(collection, id, field, vec![Op::Incr(field.into(), by)])
    }

    /// Refuses an edit that only means something under `rule` on a field whose rule is
    /// another.
    fn require_rule(
        &mut self,
        collection: &str,
        field: &str,
        rule: Rule,
        verb: &'static str,
    ) -> Result<(), NodeError> {
        check_collection(collection)?;
        check_field(field)?;
        let has = self.rules()?.of(collection, field);
        if has == rule {
            return Ok(());
        }
        Err(NodeError::WrongRule {
            collection: collection.into(),
            field: field.into(),
            rule: has,
            verb,
        })
    }

    /// Adds strings to a set field.
    pub fn set_add(
        &mut self,
        collection: &str,
        id: &str,
        field: &str,
        elems: &[String],
    ) -> Result<(), NodeError> {
        self.require_rule(collection, field, Rule::Set, "add")?;
        let ops = elems
            .iter()
            .map(|e| Op::Add(field.into(), e.clone()))
            .collect();
        self.edit(collection, id, field, ops)
    }

    /// Removes strings from a set field (the adds this laptop has seen; a concurrent add
    /// elsewhere wins).
    pub fn set_remove(
        &mut self,
        collection: &str,
        id: &str,
        field: &str,
        elems: &[String],
    ) -> Result<(), NodeError> {
        self.require_rule(collection, field, Rule::Set, "remove")?;
        let ops = elems
            .iter()
            .map(|e| Op::Remove(field.into(), e.clone()))
            .collect();
        self.edit(collection, id, field, ops)
    }

    /// Resolves a conflicted field with `value`: a write that supersedes every value this
    /// laptop holds, so once it has travelled the conflict is gone everywhere.
    pub fn resolve(
        &mut self,
        collection: &str,
        id: &str,
        field: &str,
        value: Value,
    ) -> Result<(), NodeError> {
        let Some(conflict) = self
            .conflicts()?
            .into_iter()
            .find(|c| c.collection == collection && c.id == id && c.field == field)
        else {
            return Err(NodeError::NoConflict {
                collection: collection.into(),
                id: id.into(),
                field: field.into(),
            });
        };
        if field == "(record)" {
            return Err(NodeError::ResolveDeleted);
        }
        // A number equal to one of the conflicting values keeps that value's kind: a
        // browser (JavaScript) sends the float 62.0 back as 62.
        let value = conflict
            .values
            .into_iter()
            .map(|v| v.value)
            .find(|v| same_number(v, &value))
            .unwrap_or(value);
        self.edit(collection, id, field, vec![Op::Set(field.into(), value)])
    }

    /// What this node knows about itself, the dataset and its members.
    pub fn status(&mut self) -> Result<Status, NodeError> {
        let labels = self.labels()?;
        let conflicts = self.conflicts()?.len() as u64;
        let email_outbox = self.email_outbox()?;
        let sms = self.sms_counters()?;
        let admins = self.admins()?;
        let tx = self.store.read()?;
        let stored = tx.stored()?;
        let applied = tx.applied()?;
        let keys: BTreeMap<MemberId, PublicKey> = tx
            .members()?
            .into_iter()
            .map(|m| (m.member, m.key))
            .collect();
        let heard: BTreeMap<MemberId, (ferry_model::VersionVector, u64)> = tx
            .peers()?
            .into_iter()
            .map(|p| (p.member, (p.vv, p.updated_ms)))
            .collect();
        let mut members = Vec::new();
        for (&m, label) in &labels {
            let you = m == self.id.me;
            let (vv, at) = if you {
                (stored.clone(), None)
            } else {
                heard
                    .get(&m)
                    .map_or((Default::default(), None), |(vv, at)| {
                        (vv.clone(), Some(*at))
                    })
            };
            let lacks: u64 = stored
                .iter()
                .map(|(a, n)| n.saturating_sub(vv.get(a)))
                .sum();
            let joined = keys.contains_key(&m);
            let joined_ms = match ferry_sync::Storage::commit(&tx, m, 1)? {
                Some(c) if joined => Some(c.hlc.ms()),
                _ if joined => tx.record("_members", &m.0.to_string())?.and_then(|r| {
                    r.fields
                        .get(ferry_sync::MEMBER_KEY_FIELD)?
                        .iter()
                        .map(|sib| sib.stamp.hlc.ms())
                        .min()
                }),
                _ => None,
            };
            members.push(MemberStatus {
                member: m.0,
                label: label.clone(),
                you,
                admin: admins.contains(&m),
                joined,
                fingerprint: keys.get(&m).map(|k| k.fingerprint()),
                joined_at: joined_ms.map(crate::time::format_utc),
                holds: vv.total(),
                lacks_from_us: if you { 0 } else { lacks },
                last_heard: at.filter(|&t| t > 0).map(crate::time::format_utc),
                frozen_from: if you { None } else { tx.frozen(m)? },
                cancelled: tx
                    .record("_members", &m.0.to_string())?
                    .and_then(|r| ferry_sync::cancellation(Some(&r)))
                    .map(|(why, _)| why),
                removed: tx
                    .record("_members", &m.0.to_string())?
                    .and_then(|r| ferry_sync::removal(Some(&r)))
                    .map(|r| RemovedView {
                        reason: r.reason,
                        at: crate::time::format_utc(r.at_ms),
                        cutoff: r.cutoff,
                    }),
            });
        }
        // Evidence about this laptop itself: another device writes as this member.
        let own_fork = tx
            .record(ferry_sync::FORKS, &self.id.me.0.to_string())?
            .and_then(|r| {
                r.values(ferry_sync::FORK_FIELD)
                    .into_iter()
                    .filter_map(|(_, v)| match v {
                        Value::Bytes(b) => ferry_sync::ForkEvidence::from_bytes(b),
                        _ => None,
                    })
                    .filter(|ev| ev.author == self.id.me)
                    .map(|ev| ev.seq())
                    .min()
            });
        let waiting_bundles = tx.waiting()?.len() as u64;
        let sendable = ferry_sync::sendable(&tx, self.id.me)?;
        let mut unfinished = Vec::new();
        for (a, n) in stored.iter() {
            // (History received as a snapshot carries no proof, and is never sent anyway.)
            let sent_up_to = sendable.get(a).max(ferry_sync::Storage::compacted(&tx, a)?);
            if n > sent_up_to {
                let label = labels.get(&a).cloned().unwrap_or_else(|| a.to_string());
                unfinished.push((label, n - sent_up_to));
            }
        }
        let pending = stored.total() - applied.total().min(stored.total());
        let stashed = tx.stashed()?.iter().map(|(_, n)| n).sum();
        let (quarantined, quarantine) = tx.quarantine_recent(5)?;
        let records = tx.record_count()?;
        let mut status = Status {
            home: self.home.root().display().to_string(),
            label: labels
                .get(&self.id.me)
                .cloned()
                .unwrap_or_else(|| self.id.label.clone()),
            member: self.id.me.0,
            dataset: self.id.dataset_name.clone(),
            dataset_id: self.id.dataset.to_hex(),
            members,
            records,
            conflicts,
            pending,
            waiting_for_prerequisites: stashed,
            waiting: Vec::new(),
            quarantined,
            recent_quarantine: quarantine
                .iter()
                .rev()
                .take(5)
                .map(|q| {
                    (
                        crate::time::format_utc(q.at_ms),
                        q.source.clone(),
                        q.reason.clone(),
                    )
                })
                .collect(),
            email_outbox,
            sms,
            own_fork,
            removed_here: None,
            waiting_bundles,
            refused_membership: None,
            held_back_by: Vec::new(),
            unfinished,
        };
        drop(tx);
        status.held_back_by = self.holding_back()?;
        status.waiting = self.waiting_changes()?;
        status.refused_membership = self.membership_refused()?;
        status.removed_here = self.removed_here()?;
        Ok(status)
    }

    pub(crate) fn read(&mut self) -> Result<StoreTx<'_>, NodeError> {
        Ok(self.store.read()?)
    }
}

/// The label an admin wrote in member `m`'s `_members/N` record: its latest (by the same
/// order that picks a shown value), ignoring what the member wrote there itself (only
/// admins write other members' records; the founder's own label is its own).
fn admin_label(m: MemberId, r: &RecordState) -> Option<String> {
    r.fields
        .get("label")?
        .iter()
        .filter(|sib| sib.stamp.dot.author != m || m == MemberId::ADMIN)
        .filter_map(|sib| match &sib.entry {
            ferry_model::record::Entry::Value(Value::Str(l)) => Some((sib.stamp, l)),
            _ => None,
        })
        .max_by(|a, b| a.0.cmp_rank(&b.0))
        .map(|(_, l)| l.clone())
}

/// The `_members/N` label an invitation records.
fn member_label(member: MemberId, label: &str) -> Change {
    Change::Record {
        collection: "_members".into(),
        id: member.0.to_string(),
        ops: vec![Op::Set("label".into(), Value::Str(label.into()))],
    }
}

/// The ops of `ops` that change the record, whatever the merge rules (which may arrive or
/// change later): a `Set` of the value every one of the field's surviving writes holds (no
/// increments or set elements beside it) is left out, as is an `Add` of
/// an element the field holds. A `Set` on a field in conflict is kept when `settle` (a
/// `put` settles it), and left out without it when its value is one of those in conflict
/// (reloading a dump keeps the conflict for a person). A record deleted on one laptop while
/// edited on another is compared with all it shows (a reloaded dump of it writes nothing);
/// a `put` (`settle`) keeps every op. The caller adds [`with_revival`] to what is left.
pub(crate) fn changing_ops(state: Option<&RecordState>, ops: Vec<Op>, settle: bool) -> Vec<Op> {
    use ferry_model::record::Entry;
    let Some(state) = state.filter(|s| s.is_live()) else {
        return ops;
    };
    if state.delete_conflict() && settle {
        return ops;
    }
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|op| match op {
            Op::Set(f, v) => {
                let sibs = state.visible_siblings(f);
                if sibs.is_empty() {
                    return true;
                }
                let values = sibs.iter().all(|s| matches!(s.entry, Entry::Value(_)));
                let holds = |x: &Entry| matches!(x, Entry::Value(w) if w == v);
                let all_equal = values && sibs.iter().all(|s| holds(&s.entry));
                let one_of = values && sibs.iter().any(|s| holds(&s.entry));
                !(all_equal || (!settle && one_of))
            }
            Op::Add(f, e) => !state
                .visible_siblings(f)
                .iter()
                .any(|s| matches!(&s.entry, Entry::Elem(x) if x == e)),
            _ => true,
        })
        .collect();
    ops
}

/// `ops` preceded by the ops that keep what a record deleted on one laptop while edited on
/// another shows from before the delete ([`RecordState::revival_ops`]): a write that has
/// seen the delete ends the conflict, and keeps the record as its author saw it.
pub(crate) fn with_revival(state: Option<&RecordState>, ops: Vec<Op>) -> Vec<Op> {
    match state {
        Some(s) if s.delete_conflict() => {
            let mut all = s.revival_ops(&ops);
            all.extend(ops);
            all
        }
        _ => ops,
    }
}

/// The error for an invitation file that is already there (the words `write_private` uses).
fn already_exists(path: &Path) -> NodeError {
    NodeError::AlreadyExists(path.to_path_buf())
}

/// Calls `f` with every live record of `collection` in `tx`, in id order; an error from `f`
/// stops the walk and is returned as it is.
pub(crate) fn for_each_live(
    tx: &mut StoreTx<'_>,
    collection: &str,
    f: impl FnMut(&str, &RecordState) -> Result<(), NodeError>,
) -> Result<(), NodeError> {
    for_each_live_after(tx, collection, "", f)
}

/// [`for_each_live`] from the first id after `after` on.
pub(crate) fn for_each_live_after(
    tx: &mut StoreTx<'_>,
    collection: &str,
    after: &str,
    mut f: impl FnMut(&str, &RecordState) -> Result<(), NodeError>,
) -> Result<(), NodeError> {
    let mut inner_err = None;
    tx.for_each_record_after(collection, true, after, |id, r| {
        if let Err(e) = f(id, r) {
            inner_err = Some(e);
            return Err(ferry_store::StoreError::Missing("(stopped)".into()));
        }
        Ok(())
    })
    .or_else(|e| if inner_err.is_some() { Ok(()) } else { Err(e) })?;
    match inner_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The change by which a laptop says, in its own `_members/N`, the highest bundle version
/// its ferry reads (13; bundles/SPEC.md §17.2, §18): once every member reads 11, commits of
/// many records are written in the columnar form, and once every member reads 13 and holds
/// the dataset's dictionary, small bundles are compressed with it.
pub(crate) fn reads_change(me: MemberId) -> Change {
    Change::Record {
        collection: ferry_sync::MEMBERS.to_string(),
        id: me.0.to_string(),
        ops: vec![Op::Set(
            ferry_sync::MEMBER_READS_FIELD.to_string(),
            Value::Int(i64::from(ferry_bundle::READS)),
        )],
    }
}

/// Whether this laptop's own `_members/N` already says it reads this ferry's versions (13).
pub(crate) fn reads_announced(tx: &StoreTx<'_>, me: MemberId) -> Result<bool, NodeError> {
    let rec = tx.record(ferry_sync::MEMBERS, &me.0.to_string())?;
    Ok(ferry_sync::member_reads(rec.as_ref()) >= i64::from(ferry_bundle::READS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileResult, InvitationFile, NoProgress};

    /// An admin and one member that joined, with a stick folder between them.
    fn pair(base: &Path) -> (Node, Node, std::path::PathBuf) {
        let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "labels").unwrap();
        let inv = base.join("a.invite");
        let code = hq.invite(&inv, Some("clinic-a")).unwrap().code;
        let file = InvitationFile::read(&inv).unwrap();
        let a = Node::join(&Home::at(base.join("a")), None, &file, Some(&code)).unwrap();
        let stick = base.join("stick");
        std::fs::create_dir_all(&stick).unwrap();
        (hq, a, stick)
    }

    /// bundles/SPEC.md §18 at the node: the admin trains the dataset's dictionary before it
    /// sends; a laptop that meets a bundle compressed with it before the dictionary keeps it
    /// waiting (nothing applied, nothing quarantined) and reads it once the admin's bundle
    /// has brought the dictionary.
    #[test]
    fn a_bundle_met_before_its_dictionary_waits_and_is_read_once_it_came() {
        let base = tempfile::tempdir().unwrap();
        let (mut hq, mut a, stick) = pair(base.path());
        let visits: Vec<Change> = (0..1_200)
            .map(|i| Change::Record {
                collection: "visits".into(),
                id: format!("v-{i:05}"),
                ops: vec![
                    Op::Set(
                        "village".into(),
                        Value::Str(["Obunga", "Nyalenda", "Manyatta"][i % 3].into()),
                    ),
                    Op::Set("age".into(), Value::Int((i * 7 % 90) as i64)),
                ],
            })
            .collect();
        hq.commit(visits).unwrap();
        for _ in 0..2 {
            hq.sync(&stick, &NoProgress).unwrap();
            a.sync(&stick, &NoProgress).unwrap();
        }
        let dictionary = |n: &mut Node| {
            let tx = n.read().unwrap();
            ferry_sync::dicts::dictionary(&tx, 1)
                .unwrap()
                .map(|(b, _)| b)
        };
        let trained = dictionary(&mut hq).expect("HQ trained the dictionary when it synced");
        assert_eq!(dictionary(&mut a), Some(trained));
        // A third laptop joins; an SMS-style bundle HQ writes for clinic-a alone uses the
        // dictionary, and reaches the new laptop first.
        let inv = base.path().join("b.invite");
        let code = hq.invite(&inv, Some("clinic-b")).unwrap().code;
        let file = InvitationFile::read(&inv).unwrap();
        let mut b = Node::join(&Home::at(base.path().join("b")), None, &file, Some(&code)).unwrap();
        hq.commit(vec![Change::Record {
            collection: "visits".into(),
            id: "v-new".into(),
            ops: vec![
                Op::Set("village".into(), Value::Str("Obunga".into())),
                Op::Set("age".into(), Value::Int(7)),
                Op::Set(
                    "note".into(),
                    Value::Str("fever for 3 days; fever again; fever".repeat(3)),
                ),
            ],
        }])
        .unwrap();
        let head = hq.read().unwrap().stored().unwrap().get(MemberId::ADMIN);
        let runs = [ferry_sync::Coverage {
            author: MemberId::ADMIN,
            first: head,
            last: head,
        }];
        let (_, _, staged, _) = hq
            .write_bundle_to(Some(&runs), Some(MemberId(2)), &NoProgress)
            .unwrap();
        let sms = base.path().join("sms.ferry");
        std::fs::copy(staged.path(), &sms).unwrap();
        drop(staged);
        let bytes = std::fs::read(&sms).unwrap();
        assert_eq!(bytes[1], ferry_bundle::VERSION_DICTS);
        // (Its payload is compressed with the dictionary: reading it needs it.)
        let key = hq.keys.current().1.clone();
        let opener = ferry_bundle::BundleReader::open(&bytes[..]).unwrap();
        assert!(matches!(
            opener.decrypt(&key),
            Err(ferry_bundle::BundleError::NoDictionary(1))
        ));
        let report = b.import(std::slice::from_ref(&sms), &NoProgress).unwrap();
        match &report.files[0].result {
            FileResult::Waiting { reason, .. } => {
                assert!(reason.contains("dictionary number 1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(b.get("visits", "v-new").unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(b.home().quarantine()).map_or(0, |d| d.count()),
            0
        );
        // Clinic-b's join reaches HQ, HQ's full bundle (which does without the dictionary,
        // clinic-b not holding it) reaches clinic-b; then the waiting bundle reads.
        b.sync(&stick, &NoProgress).unwrap();
        hq.sync(&stick, &NoProgress).unwrap();
        b.sync(&stick, &NoProgress).unwrap();
        assert!(dictionary(&mut b).is_some());
        let report = b.import(std::slice::from_ref(&sms), &NoProgress).unwrap();
        assert!(
            matches!(report.files[0].result, FileResult::Applied { .. }),
            "{:?}",
            report.files[0].result
        );
        assert!(b.get("visits", "v-new").unwrap().is_some());
    }

    #[test]
    fn a_member_that_writes_a_label_for_itself_or_the_admin_changes_no_label() {
        let base = tempfile::tempdir().unwrap();
        let (mut hq, mut a, stick) = pair(base.path());
        assert_eq!(a.identity().label, "clinic-a", "the invitation's label");
        // What earlier ferry let a joining laptop do, and what a crafted commit can do: a
        // member labels itself "hq" (its own `_members` record, which it may write) and
        // tries the admin's record too (skipped by every node).
        a.commit(vec![member_label(MemberId(2), "hq")]).unwrap();
        a.commit(vec![member_label(MemberId::ADMIN, "clinic-a")])
            .unwrap();
        for _ in 0..2 {
            a.sync(&stick, &NoProgress).unwrap();
            hq.sync(&stick, &NoProgress).unwrap();
        }
        for node in [&mut hq, &mut a] {
            let labels = node.labels().unwrap();
            assert_eq!(labels[&MemberId::ADMIN], "hq");
            assert_eq!(labels[&MemberId(2)], "clinic-a");
            assert_eq!(find_member(&labels, "HQ"), Some(MemberId::ADMIN));
            assert_eq!(find_member(&labels, "#2"), Some(MemberId(2)));
            assert_eq!(find_member(&labels, "#9"), None);
        }
        // The admin renames it; the member cannot rename anyone, itself included.
        assert!(matches!(
            a.rename_member("#2", "clinic-kisumu"),
            Err(NodeError::NotAdmin { .. })
        ));
        assert!(matches!(
            hq.rename_member("clinic-a", "HQ"),
            Err(NodeError::BadArgument(_))
        ));
        assert_eq!(
            hq.rename_member("clinic-a", "clinic-kisumu").unwrap(),
            (2, "clinic-a".to_string())
        );
        hq.sync(&stick, &NoProgress).unwrap();
        a.sync(&stick, &NoProgress).unwrap();
        assert_eq!(a.labels().unwrap()[&MemberId(2)], "clinic-kisumu");
        assert_eq!(a.status().unwrap().label, "clinic-kisumu");
        // An invitation with a label another member has is refused, whatever its case.
        let taken = hq.invite(&base.path().join("b.invite"), Some("Clinic-Kisumu"));
        assert!(matches!(taken, Err(NodeError::BadArgument(_))), "{taken:?}");
    }

    #[test]
    fn joining_under_another_label_than_the_invitations_is_refused_and_creates_nothing() {
        let base = tempfile::tempdir().unwrap();
        let mut hq = Node::create(&Home::at(base.path().join("hq")), "hq", "labels").unwrap();
        let inv = base.path().join("a.invite");
        let code = hq.invite(&inv, Some("clinic-a")).unwrap().code;
        let file = InvitationFile::read(&inv).unwrap();
        let home = Home::at(base.path().join("a"));
        let Err(err) = Node::join(&home, Some("hq"), &file, Some(&code)) else {
            panic!("joined under another label");
        };
        assert!(
            matches!(&err, NodeError::BadArgument(m) if m.contains("\"clinic-a\"")),
            "{err}"
        );
        assert!(!home.exists(), "nothing was created");
        let a = Node::join(&home, Some("clinic-a"), &file, Some(&code)).unwrap();
        assert_eq!(a.identity().label, "clinic-a");
    }
}
