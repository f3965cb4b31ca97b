//! Deterministic replicas in memory, for tests and seeded simulations.
//!
//! A [`SimNode`] is a whole ferry node without files: an [`Engine`] over [`MemStorage`],
//! with keys and salts drawn from a seeded generator, so a scenario replays exactly from
//! its seed.

use crate::engine::{Accept, Engine, IngestError, IngestReport, Received};
use crate::mem::{MemError, MemStorage};
use crate::membership::Invitation;
use crate::plan::{Coverage, needs_snapshot, plan_export};
use crate::storage::Storage;
use ferry_bundle::{BundleReader, DatasetKey, Keyring, WriteOptions};
use ferry_model::crypto::SecretKey;
use ferry_model::{Change, Commit, DatasetId, MemberId, Op, Value, VersionVector};
use std::collections::{BTreeMap, BTreeSet};

/// The foundation issue's reference record (collection `visits`) for patient `patient`.
pub fn reference_record(patient: &str) -> Vec<Op> {
    let s = |v: &str| Value::Str(v.into());
    vec![
        Op::Set("patient_id".into(), s(patient)),
        Op::Set("visit_date".into(), s("2026-11-03")),
        Op::Set("village".into(), s("Kisumu Ndogo")),
        Op::Set("chw".into(), s("chw-017")),
        Op::Set("age_years".into(), Value::Int(34)),
        Op::Set("sex".into(), s("F")),
        Op::Set("weight_kg".into(), Value::Float(61.5)),
        Op::Set("muac_mm".into(), Value::Int(242)),
        Op::Set("temp_c".into(), Value::Float(37.8)),
        Op::Set("diagnosis".into(), s("malaria")),
        Op::Set("treatment".into(), s("ACT")),
        Op::Set("followup".into(), Value::Bool(true)),
    ]
}

/// SplitMix64: a tiny, well-mixed deterministic generator (not for real keys).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        out
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One replica.
#[derive(Clone, Debug)]
pub struct SimNode {
    /// Its engine.
    pub engine: Engine,
    /// Its storage.
    pub store: MemStorage,
    /// Its device key.
    pub secret: SecretKey,
    /// The dataset's keys (epoch 0: the dataset key).
    pub key: Keyring,
    /// Its label.
    pub label: String,
    /// The dataset name.
    pub dataset_name: String,
    /// Its random source.
    pub rng: SplitMix,
    /// Its wall clock (ms since the epoch): the latest time it wrote at, or set by a test.
    pub now_ms: u64,
    /// How its bundles are written (the simulation stores them uncompressed, for speed).
    pub options: WriteOptions,
    /// What it accepts (plaintext or not).
    pub accept: Accept,
    /// Bundles it could not check yet, kept to be tried again after each bundle it applies
    /// (as the node keeps them on the medium or in its waiting folder), oldest first.
    pub waiting: Vec<Vec<u8>>,
}

/// Most bundles a [`SimNode`] keeps waiting (the oldest is dropped beyond).
pub const SIM_WAITING: usize = 64;

/// The sim's ingest result.
pub type SimResult = Result<Received, IngestError<MemError>>;

/// The report of a bundle that was applied; panics otherwise (for tests that expect it).
pub fn applied(r: Received) -> IngestReport {
    match r {
        Received::Applied(report, _) => *report,
        other => panic!("expected the bundle to be applied: {other:?}"),
    }
}

impl SimNode {
    /// Creates a dataset with this node as admin.
    pub fn create(dataset_name: &str, label: &str, seed: u64, now_ms: u64) -> SimNode {
        let mut rng = SplitMix(seed);
        let secret = SecretKey::from_bytes(rng.bytes());
        let engine = Engine {
            dataset: DatasetId(rng.bytes()),
            admin_key: secret.public(),
            me: MemberId::ADMIN,
        };
        let mut node = SimNode {
            engine,
            store: MemStorage::default(),
            key: Keyring::new(DatasetKey(rng.bytes())),
            secret,
            label: label.to_string(),
            dataset_name: dataset_name.to_string(),
            rng,
            now_ms,
            options: WriteOptions::default(),
            accept: Accept::default(),
            waiting: Vec::new(),
        };
        let genesis = Change::Genesis {
            name: dataset_name.to_string(),
            label: label.to_string(),
            admin_key: node.secret.public(),
        };
        node.engine
            .commit_local(&mut node.store, vec![genesis], now_ms)
            .expect("genesis");
        node
    }

    /// The admin invites `member`, and records the invitation in `_members`.
    pub fn invite(&mut self, member: MemberId, label: &str, now_ms: u64) -> Invitation {
        let inv = Invitation::issue(
            &self.secret,
            &self.label,
            self.engine.dataset,
            &self.dataset_name,
            self.key.current().1.0,
            member,
            label,
            self.rng.bytes(),
        );
        self.write(
            "_members",
            &member.0.to_string(),
            vec![Op::Set("label".into(), Value::Str(label.into()))],
            now_ms,
        );
        inv
    }

    /// A new device joins with an invitation.
    pub fn join(inv: &Invitation, seed: u64, now_ms: u64) -> SimNode {
        let mut rng = SplitMix(seed);
        let secret = SecretKey::from_bytes(rng.bytes());
        let mut node = SimNode {
            engine: Engine {
                dataset: inv.dataset,
                admin_key: inv.admin_key,
                me: inv.member(),
            },
            store: MemStorage::default(),
            key: Keyring::new(DatasetKey(inv.dataset_key)),
            label: inv.cert.label.clone(),
            dataset_name: inv.dataset_name.clone(),
            secret,
            rng,
            now_ms,
            options: WriteOptions::default(),
            accept: Accept::default(),
            waiting: Vec::new(),
        };
        let proof = inv.join_proof(&node.secret.public());
        // The admin that signed it: the founder, or the admin whose range holds the number
        // (then `admin_key` stands for the founder's too: a simulated laptop invited by
        // another admin only sends, it never checks the genesis).
        node.store
            .put_member(&crate::MemberInfo {
                member: crate::roles::inviter(inv.member()),
                key: inv.admin_key,
                label: inv.admin_label.clone(),
            })
            .expect("mem");
        node.engine
            .commit_local(&mut node.store, vec![Change::Join(proof)], now_ms)
            .expect("join");
        node
    }

    /// This node's member number.
    pub fn me(&self) -> MemberId {
        self.engine.me
    }

    /// Writes many records in one local commit (a spreadsheet load): columnar once every
    /// member this node knows reads version 11 and a collection has 16 records or more.
    pub fn write_many(
        &mut self,
        collection: &str,
        records: Vec<(String, Vec<Op>)>,
        now_ms: u64,
    ) -> Commit {
        self.now_ms = self.now_ms.max(now_ms);
        let changes = records
            .into_iter()
            .map(|(id, ops)| Change::Record {
                collection: collection.into(),
                id,
                ops,
            })
            .collect();
        self.engine
            .commit_local(&mut self.store, changes, now_ms)
            .expect("local commit")
    }

    /// What a ferry admin laptop does before it sends: trains the dataset's dictionary when
    /// one is due and commits it (SPEC §18). Whether it did.
    pub fn train_dictionary(&mut self, now_ms: u64) -> bool {
        self.train_dictionary_from(now_ms, crate::dicts::DICT_FIRST_AT)
    }

    /// [`SimNode::train_dictionary`], the first one due at `first_at` records.
    pub fn train_dictionary_from(&mut self, now_ms: u64, first_at: u64) -> bool {
        self.now_ms = self.now_ms.max(now_ms);
        match self
            .engine
            .train_dictionary_from(&self.store, first_at)
            .expect("mem")
        {
            Some(change) => {
                self.engine
                    .commit_local(&mut self.store, vec![change], now_ms)
                    .expect("local commit");
                true
            }
            None => false,
        }
    }

    /// Says, in this node's own `_members/N`, the highest bundle version it reads (SPEC
    /// §17.2).
    pub fn announce_reads(&mut self, now_ms: u64) -> Commit {
        let me = self.me().0.to_string();
        self.write(
            crate::MEMBERS,
            &me,
            vec![Op::Set(
                crate::MEMBER_READS_FIELD.into(),
                Value::Int(i64::from(ferry_bundle::READS)),
            )],
            now_ms,
        )
    }

    /// Writes ops to one record in a local commit.
    pub fn write(&mut self, collection: &str, id: &str, ops: Vec<Op>, now_ms: u64) -> Commit {
        self.now_ms = self.now_ms.max(now_ms);
        self.engine
            .commit_local(
                &mut self.store,
                vec![Change::Record {
                    collection: collection.into(),
                    id: id.into(),
                    ops,
                }],
                now_ms,
            )
            .expect("local commit")
    }

    /// Removes `member` (the admin): records the removal with the cutoff (what it applied of
    /// the member) and moves to a new key epoch sealed to every other joined member that is
    /// not removed (SPEC §14). Returns the cutoff.
    pub fn remove(&mut self, member: MemberId, reason: &str, now_ms: u64) -> u64 {
        let cutoff = self.store.applied().expect("mem").get(member);
        self.write(
            crate::MEMBERS,
            &member.0.to_string(),
            vec![
                Op::Set(
                    crate::MEMBER_REMOVED_FIELD.into(),
                    Value::Str(reason.into()),
                ),
                Op::Set(crate::MEMBER_CUTOFF_FIELD.into(), Value::Int(cutoff as i64)),
            ],
            now_ms,
        );
        self.rekey(now_ms);
        cutoff
    }

    /// Moves to a new key epoch (the admin), sealed to every joined member not removed.
    pub fn rekey(&mut self, now_ms: u64) {
        let key = DatasetKey(self.rng.bytes());
        self.grant(key, true, now_ms);
    }

    /// The admin keeps its grant covering every joined member (one that joined after the
    /// epoch began gets a wider grant of the same epoch), as the node does before it writes.
    fn refresh_grant(&mut self) {
        if self.me() != MemberId::ADMIN {
            return;
        }
        let Some(grant) = self.key.current_grant() else {
            return;
        };
        let (members, _) = self.grant_members();
        if members
            .iter()
            .all(|(m, _)| grant.body.wraps.iter().any(|w| w.member == *m))
        {
            return;
        }
        let key = self.key.current().1.clone();
        self.grant(key, false, grant.body.at_ms);
    }

    /// The joined members a grant is for, and the removals to announce.
    fn grant_members(
        &self,
    ) -> (
        Vec<(MemberId, ferry_model::crypto::PublicKey)>,
        Vec<ferry_bundle::Removal>,
    ) {
        let mut removed = Vec::new();
        let mut members = Vec::new();
        for m in self.store.members().expect("mem") {
            let rec = self
                .store
                .record(crate::MEMBERS, &m.member.0.to_string())
                .expect("mem");
            match crate::removal(rec.as_ref()) {
                Some(r) => removed.push(ferry_bundle::Removal {
                    member: m.member,
                    cutoff: r.cutoff,
                }),
                None if crate::cancellation(rec.as_ref()).is_none() => {
                    members.push((m.member, m.key))
                }
                None => {}
            }
        }
        (members, removed)
    }

    /// Seals `key` to the members in a grant: of a new epoch (`next`), or again of the
    /// current one.
    fn grant(&mut self, key: DatasetKey, next: bool, at_ms: u64) {
        let (members, removed) = self.grant_members();
        let mut history = self.key.founder_history().expect("every epoch held");
        if !next {
            history.pop();
        }
        let admin_seq = self.store.stored().expect("mem").get(self.me());
        let grant = ferry_bundle::EpochGrant::issue(
            &self.secret,
            self.engine.dataset,
            &key,
            &history,
            admin_seq,
            at_ms,
            removed,
            &members,
            self.rng.bytes(),
        );
        let mut all = history;
        all.push(key);
        let all: Vec<_> = all
            .into_iter()
            .enumerate()
            .map(|(e, k)| (ferry_bundle::EpochId::founder(e as u32), k))
            .collect();
        self.key.install(&all, Some(&grant));
    }

    /// Members this node knows of (joined or invited), without itself.
    pub fn known_peers(&self) -> Vec<MemberId> {
        let mut peers: BTreeSet<MemberId> = self
            .store
            .members()
            .expect("mem")
            .into_iter()
            .map(|m| m.member)
            .collect();
        for (coll, id) in self.store.records.keys() {
            if coll == "_members" {
                if let Ok(n) = id.parse() {
                    peers.insert(MemberId(n));
                }
            }
        }
        peers.remove(&self.me());
        peers.into_iter().collect()
    }

    /// A bundle with everything some known peer lacks (minus what `carried` already holds).
    pub fn bundle(&mut self, carried: &[Coverage]) -> Vec<u8> {
        let peers = self.known_peers();
        self.bundle_for(&peers, carried)
    }

    /// A bundle with everything one of `peers` lacks (minus what `carried` already holds).
    pub fn bundle_for(&mut self, peers: &[MemberId], carried: &[Coverage]) -> Vec<u8> {
        // A bundle for one member may use what that member holds (its dictionary, SPEC
        // §18), as an SMS to its number does.
        let recipient = match peers {
            [one] => Some(*one),
            _ => None,
        };
        let peers: Vec<_> = peers
            .iter()
            .map(|&p| self.store.peer(p).expect("mem"))
            .collect();
        let stored = crate::storage::sendable(&self.store, self.me()).expect("mem");
        let runs = plan_export(&stored, &peers, carried, &self.compacted());
        let before = self.options.recipient;
        self.options.recipient = recipient;
        let bytes = self.bundle_with(&runs);
        self.options.recipient = before;
        bytes
    }

    /// For each author, the last commit compacted away here.
    pub fn compacted(&self) -> VersionVector {
        let stored = self.store.stored().expect("mem");
        stored
            .iter()
            .map(|(a, _)| (a, self.store.compacted(a).expect("mem")))
            .collect()
    }

    /// A snapshot bundle, if this node is the admin (only the admin authors snapshots) and
    /// some known peer lacks commits compacted away here.
    pub fn snapshot_if_needed(&mut self) -> Option<Vec<u8>> {
        if self.me() != MemberId::ADMIN {
            return None;
        }
        self.refresh_grant();
        let peers: Vec<_> = self
            .known_peers()
            .into_iter()
            .map(|p| self.store.peer(p).expect("mem"))
            .collect();
        if !needs_snapshot(&peers, &self.compacted()) {
            return None;
        }
        let salt = self.rng.bytes();
        let (bytes, _) = self
            .engine
            .export_snapshot(
                &self.store,
                Vec::new(),
                salt,
                &self.key,
                &self.secret,
                self.options,
            )
            .expect("snapshot");
        Some(bytes)
    }

    /// Compacts the history every known member holds (by what this node knows of them).
    /// Returns how many commit bodies were dropped.
    pub fn compact(&mut self) -> u64 {
        // What is applied here, not merely stored: a pending commit's body is still needed.
        let mut horizon = self.store.applied().expect("mem");
        for p in self.known_peers() {
            let vv = self.store.peer(p).expect("mem");
            horizon = horizon.iter().map(|(a, n)| (a, n.min(vv.get(a)))).collect();
        }
        self.store.compact(&horizon).expect("mem")
    }

    /// A bundle carrying exactly `runs`.
    pub fn bundle_with(&mut self, runs: &[Coverage]) -> Vec<u8> {
        self.refresh_grant();
        let salt = self.rng.bytes();
        let (bytes, _) = self
            .engine
            .export(
                &self.store,
                runs,
                &[],
                Vec::new(),
                salt,
                &self.key,
                &self.secret,
                self.options,
            )
            .expect("export");
        bytes
    }

    /// Authenticates, ingests and settles one bundle, leaving the store as it is if that
    /// fails midway (for callers that stop at the first error anyway; [`SimNode::ingest`]
    /// rolls back). Does not touch the waiting list.
    pub fn ingest_or_fail(&mut self, bytes: &[u8]) -> SimResult {
        self.engine.receive(
            &mut self.store,
            || BundleReader::open(bytes),
            &self.key,
            self.accept,
            self.now_ms,
        )
    }

    /// Receives one bundle, all or nothing: applied, refused (nothing kept), or not
    /// checkable yet (nothing kept; the bytes wait in [`SimNode::waiting`]). After a bundle
    /// is applied, the waiting ones are tried again until none makes progress.
    pub fn ingest(&mut self, bytes: &[u8]) -> SimResult {
        let result = self.try_once(bytes);
        match &result {
            Ok(Received::NotYet { .. })
            | Err(IngestError::Bundle(ferry_bundle::BundleError::NoDictionary(_)))
                if !self.waiting.iter().any(|w| w == bytes) =>
            {
                if self.waiting.len() == SIM_WAITING {
                    self.waiting.remove(0);
                }
                self.waiting.push(bytes.to_vec());
            }
            Ok(Received::Applied(..)) => self.retry_waiting(),
            _ => {}
        }
        result
    }

    /// Tries the waiting bundles again until none can be applied.
    pub fn retry_waiting(&mut self) {
        loop {
            let mut progress = false;
            for bytes in std::mem::take(&mut self.waiting) {
                match self.try_once(&bytes) {
                    Ok(Received::NotYet { .. })
                    | Err(IngestError::Bundle(ferry_bundle::BundleError::NoDictionary(_))) => {
                        self.waiting.push(bytes)
                    }
                    Ok(Received::Applied(..)) => progress = true,
                    _ => {}
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn try_once(&mut self, bytes: &[u8]) -> SimResult {
        // A grant in the header gives this node a new key epoch first (kept whatever the
        // bundle turns out to be), as the node does.
        if let Ok(opener) = BundleReader::open(bytes) {
            let grant = &opener.header().grant;
            let admin = |m: MemberId| (m == MemberId::ADMIN).then_some(self.engine.admin_key);
            if let Ok(g) = ferry_bundle::EpochGrant::from_bytes(
                grant,
                self.engine.dataset,
                opener.version(),
                admin,
            ) {
                let _ = self.engine.honour_grant(&mut self.store, &g);
                self.key.note_removals(&g);
                let _ = self
                    .key
                    .learn(&g, self.engine.dataset, self.engine.me, &self.secret, true);
                // Every grant here is the founder's, whom every node trusts.
                self.key.choose(|_, _| ferry_bundle::Standing {
                    safe: true,
                    clean: true,
                    trusted: true,
                    counts: true,
                });
            }
        }
        let before = self.store.clone();
        let result = self.ingest_or_fail(bytes);
        if result.is_err() {
            self.store = before;
        }
        // A refused second version of a member's history is recorded on its own, as the node
        // does: the member is frozen and the evidence travels.
        if let Err(IngestError::Fork {
            author,
            seq,
            evidence,
        }) = &result
        {
            match evidence {
                Some(ev) => {
                    let mut store = self.store.clone();
                    if self.engine.record_fork(&mut store, ev, self.now_ms).is_ok() {
                        self.store = store;
                    }
                }
                None => {
                    let _ = self.engine.freeze(&mut self.store, *author, *seq);
                }
            }
        }
        result
    }

    /// The visible records (collection, id) → shown fields, without reserved collections.
    pub fn listing(&self) -> BTreeMap<(String, String), BTreeMap<String, Value>> {
        self.store
            .records
            .iter()
            .filter(|((c, _), r)| !c.starts_with('_') && r.is_live())
            .map(|(k, r)| {
                let fields = r
                    .shown()
                    .into_iter()
                    .map(|(f, v)| (f.to_string(), v))
                    .collect();
                (k.clone(), fields)
            })
            .collect()
    }

    /// (collection, id, field) of every conflicted field.
    pub fn conflicts(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for ((c, id), r) in &self.store.records {
            for f in r.conflicted_fields() {
                out.push((c.clone(), id.clone(), f.to_string()));
            }
        }
        out
    }
}
