//! Ingesting, settling, committing and exporting.

use crate::plan::{Coverage, ExportRun};
use crate::storage::{MemberInfo, Proof, Storage, StoredCommit};
use ferry_bundle::{
    BundleError, BundleReader, BundleWriter, DatasetKey, Header, Item, Opener, RunProof,
    WriteOptions,
};
use ferry_model::commit::{ChainContext, CommitError, chain_next, chain_root};
use ferry_model::crypto::{JoinError, PublicKey, SecretKey, head_message};
use ferry_model::{
    Change, Commit, DatasetId, Hash, Hlc, MemberId, RecordState, Stamp, VersionVector,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// The engine for one node in one dataset.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The dataset.
    pub dataset: DatasetId,
    /// The dataset admin's key (trust anchor for every join).
    pub admin_key: PublicKey,
    /// This node's member number.
    pub me: MemberId,
}

/// Why a bundle was refused. Nothing from a refused bundle may be kept: the caller rolls
/// back its transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError<E: std::error::Error + 'static> {
    /// The storage failed.
    #[error("storage error: {0}")]
    Storage(#[source] E),
    /// The bundle is damaged, truncated, malformed or of an unknown version.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle belongs to another dataset.
    #[error("bundle belongs to another dataset ({found}), not this one ({expected})")]
    WrongDataset {
        /// The bundle's dataset.
        found: DatasetId,
        /// This node's dataset.
        expected: DatasetId,
    },
    /// A commit inside is invalid.
    #[error("commit {seq} of member {author} is invalid: {source}")]
    Commit {
        /// Its author.
        author: MemberId,
        /// Its number.
        seq: u64,
        /// What is wrong.
        #[source]
        source: CommitError,
    },
    /// A signature does not match the member's key: forged, or damaged in a way the
    /// encryption did not catch (only a member could have made it).
    #[error(
        "signature of member {member} does not verify: the bundle is forged or was made by a device that is not that member"
    )]
    BadSignature {
        /// The member whose signature failed.
        member: MemberId,
    },
    /// A join proof does not verify: the sender is not a member of this dataset.
    #[error("member {member} is not a member of this dataset: {source}")]
    NotMember {
        /// The claimed member number.
        member: MemberId,
        /// What is wrong with the proof.
        #[source]
        source: JoinError,
    },
    /// A second device joined with an invitation that was already used.
    #[error(
        "member {member} already joined from another device; an invitation can be used only once"
    )]
    InvitationReused {
        /// The member number.
        member: MemberId,
    },
    /// The dataset genesis does not match the admin key this node trusts.
    #[error("the dataset's founding commit names a different admin key")]
    WrongGenesis,
    /// Two different commits with the same author and number: the author's device was
    /// restored from an old backup (or cloned) and wrote again.
    #[error(
        "member {author} has two different versions of commit {seq}; its device was probably restored from an old backup or cloned"
    )]
    Fork {
        /// The author.
        author: MemberId,
        /// The commit number.
        seq: u64,
    },
}

/// What ingesting one bundle did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestReport {
    /// The sender.
    pub sender: MemberId,
    /// Commits stored for the first time.
    pub new: u64,
    /// Commits already held.
    pub duplicates: u64,
    /// Commits kept aside because their author's earlier commits or membership are missing.
    pub stashed: u64,
    /// Commits applied to records right away.
    pub applied: u64,
    /// The runs the bundle carried.
    pub runs: Vec<RunSummary>,
    /// The runs kept aside, waiting for earlier commits or their author's membership.
    pub stashed_runs: Vec<RunSummary>,
    /// Whether the sender's signature was checked (false when the sender's own chain is not
    /// known here yet; its commits then wait, stashed).
    pub authenticated: bool,
    /// The sender's receipt, when authenticated.
    pub receipt: Option<VersionVector>,
}

/// One run of a bundle.
pub type RunSummary = Coverage;

/// What [`Engine::settle`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettleReport {
    /// Pending commits applied.
    pub applied: u64,
    /// Stashed commits that could now be checked and were stored.
    pub unstashed: u64,
    /// Stashed commits that failed their check and were dropped, with the reason.
    pub dropped: Vec<(MemberId, u64, String)>,
}

/// What [`Engine::export`] wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportReport {
    /// The runs.
    pub runs: Vec<ExportRun>,
    /// Number of commits.
    pub commits: u64,
    /// The signed digest.
    pub digest: [u8; 32],
}

type Res<T, S> = Result<T, IngestError<<S as Storage>::Error>>;

fn st<S: Storage, T>(r: Result<T, S::Error>) -> Res<T, S> {
    r.map_err(IngestError::Storage)
}

/// Whether `author` may write to `collection`/`id`. Reserved collections (names starting
/// with `_`) hold dataset metadata: `_members/N` may be written by the admin and by member
/// N; every other reserved collection only by the admin. Ops that break this are skipped,
/// the same way on every node.
pub fn may_write(author: MemberId, collection: &str, id: &str) -> bool {
    if !collection.starts_with('_') || author == MemberId::ADMIN {
        return true;
    }
    collection == "_members" && id == author.0.to_string()
}

impl Engine {
    /// Reads one bundle, storing and applying what it can. The caller checks nothing before
    /// (the header is checked here) and commits its transaction only on `Ok`.
    pub fn ingest<S: Storage, R: Read>(
        &self,
        store: &mut S,
        opener: Opener<R>,
        key: &DatasetKey,
    ) -> Res<IngestReport, S> {
        let header = opener.header().clone();
        if header.dataset != self.dataset {
            return Err(IngestError::WrongDataset {
                found: header.dataset,
                expected: self.dataset,
            });
        }
        let mut reader = opener.decrypt(key)?;
        let Some(Item::Receipt(receipt)) = reader.next_item()? else {
            unreachable!("the reader checks that a payload starts with a receipt");
        };
        let mut report = IngestReport {
            sender: header.sender,
            ..Default::default()
        };
        let mut applied = st::<S, _>(store.applied())?;
        let mut peer_receipts = Vec::new();
        // The sender's own run, if any: (last seq, stashed?).
        let mut sender_run: Option<(u64, bool)> = None;
        while let Some(item) = reader.next_item()? {
            match item {
                Item::PeerReceipt(m, vv) => peer_receipts.push((m, vv)),
                Item::Run {
                    author,
                    first,
                    count,
                    proof,
                } => {
                    let last = first + count - 1;
                    if proof == RunProof::Sender
                        && (author != header.sender || sender_run.is_some())
                    {
                        return Err(BundleError::Malformed(
                            "a run vouched for by the sender is not the sender's".into(),
                        )
                        .into());
                    }
                    let stashed = self.ingest_run(
                        store,
                        &mut reader,
                        &mut applied,
                        &mut report,
                        Coverage {
                            author,
                            first,
                            last,
                        },
                        &proof,
                    )?;
                    if proof == RunProof::Sender {
                        sender_run = Some((last, stashed));
                    }
                    if stashed {
                        report.stashed_runs.push(Coverage {
                            author,
                            first,
                            last,
                        });
                    }
                    report.runs.push(Coverage {
                        author,
                        first,
                        last,
                    });
                }
                Item::Receipt(_) | Item::Commit(_) => {
                    unreachable!("the reader checks item order")
                }
            }
        }
        let trailer = reader.finish()?;
        let sender = header.sender;
        let head = receipt.get(sender);
        let proof = Proof {
            seq: head,
            digest: Some(trailer.digest),
            sig: trailer.signature,
        };
        if let Some((last, stashed)) = sender_run {
            if last != head {
                return Err(BundleError::Malformed(
                    "the sender's run does not end at the sender's head".into(),
                )
                .into());
            }
            if stashed {
                st::<S, _>(store.stash_proof(sender, &proof))?;
                return Ok(report);
            }
        }
        let stored_head = st::<S, _>(store.chain(sender))?.map_or(0, |c| c.seq);
        let Some(member) = st::<S, _>(store.member(sender))? else {
            // Only relayed runs from a sender not known here yet: they were checked on their
            // own; the receipt cannot be trusted, so it is ignored.
            return Ok(report);
        };
        if head > stored_head {
            return Ok(report);
        }
        let hash = self.hash_at(store, sender, head)?;
        let msg = head_message(self.dataset, sender, head, &hash, Some(&trailer.digest));
        if !member.key.verify(&msg, &trailer.signature) {
            return Err(IngestError::BadSignature { member: sender });
        }
        if sender_run.is_some() && sender != self.me {
            st::<S, _>(store.put_proof(sender, &proof))?;
        }
        report.authenticated = true;
        if sender != self.me {
            st::<S, _>(store.merge_peer(sender, &receipt))?;
        }
        for (m, vv) in &peer_receipts {
            if *m != self.me && *m != sender {
                st::<S, _>(store.merge_peer(*m, vv))?;
            }
        }
        report.receipt = Some(receipt);
        Ok(report)
    }

    fn hash_at<S: Storage>(&self, store: &S, author: MemberId, seq: u64) -> Res<Hash, S> {
        if seq == 0 {
            return Ok(chain_root(self.dataset, author));
        }
        st::<S, _>(store.commit_hash(author, seq))?.ok_or_else(|| {
            IngestError::Storage(missing::<S>(format!("hash of commit {seq} of {author}")))
        })
    }

    /// Reads one run's commits. Returns whether the run was stashed.
    fn ingest_run<S: Storage, R: Read>(
        &self,
        store: &mut S,
        reader: &mut BundleReader<R>,
        applied: &mut VersionVector,
        report: &mut IngestReport,
        run: Coverage,
        proof: &RunProof,
    ) -> Res<bool, S> {
        let Coverage {
            author,
            first,
            last,
        } = run;
        let chain = st::<S, _>(store.chain(author))?;
        let have = chain.as_ref().map_or(0, |c| c.seq);
        let known = st::<S, _>(store.member(author))?;
        let next_commit = |reader: &mut BundleReader<R>| -> Res<Vec<u8>, S> {
            match reader.next_item()? {
                Some(Item::Commit(bytes)) => Ok(bytes),
                _ => unreachable!("the reader checks that a run holds `count` commits"),
            }
        };
        if first > have + 1 || (first > 1 && known.is_none()) {
            // Earlier commits (or the author's membership) have not arrived: keep the run
            // aside until they do.
            for seq in first..=last {
                let bytes = next_commit(reader)?;
                if seq > have {
                    st::<S, _>(store.stash_commit(author, seq, &bytes))?;
                    report.stashed += 1;
                } else {
                    report.duplicates += 1;
                }
            }
            match proof {
                RunProof::Sender => {}
                RunProof::Head(sig) => st::<S, _>(store.stash_proof(
                    author,
                    &Proof {
                        seq: last,
                        digest: None,
                        sig: *sig,
                    },
                ))?,
                RunProof::Bundle { digest, sig } => st::<S, _>(store.stash_proof(
                    author,
                    &Proof {
                        seq: last,
                        digest: Some(*digest),
                        sig: *sig,
                    },
                ))?,
            }
            return Ok(true);
        }
        let mut ctx = chain.unwrap_or_else(|| ChainContext::new(self.dataset, author));
        let mut key = known.map(|m| m.key);
        let mut last_hash = None;
        for seq in first..=last {
            let bytes = next_commit(reader)?;
            if seq <= ctx.seq {
                let prev = self.hash_at(store, author, seq - 1)?;
                let expect = self.hash_at(store, author, seq)?;
                if chain_next(&prev, seq, &bytes) != expect {
                    if seq == 1 {
                        // A different first commit: another device joined with the same
                        // invitation (or claims the admin's number).
                        return Err(IngestError::InvitationReused { member: author });
                    }
                    return Err(IngestError::Fork { author, seq });
                }
                report.duplicates += 1;
                last_hash = Some(expect);
                continue;
            }
            let commit = ctx.decode(&bytes).map_err(|source| IngestError::Commit {
                author,
                seq,
                source,
            })?;
            if seq == 1 {
                key = Some(self.admit(store, &commit)?);
            }
            st::<S, _>(store.insert_commit(&StoredCommit {
                author,
                seq,
                hash: ctx.hash,
                hlc: commit.hlc,
                deps: commit.deps.clone(),
                bytes,
            }))?;
            report.new += 1;
            last_hash = Some(ctx.hash);
            if applied.get(author) + 1 == seq && applied.dominates(&commit.deps) {
                self.apply(store, &commit)?;
                applied.set(author, seq);
                report.applied += 1;
            }
        }
        let hash = last_hash.expect("a run has at least one commit");
        let key = key.expect("the author's key is known after its first commit");
        let stored = match proof {
            RunProof::Sender => None,
            RunProof::Head(sig) => Some(Proof {
                seq: last,
                digest: None,
                sig: *sig,
            }),
            RunProof::Bundle { digest, sig } => Some(Proof {
                seq: last,
                digest: Some(*digest),
                sig: *sig,
            }),
        };
        if let Some(p) = stored {
            let msg = head_message(self.dataset, author, last, &hash, p.digest.as_ref());
            if !key.verify(&msg, &p.sig) {
                return Err(IngestError::BadSignature { member: author });
            }
            if last > have {
                st::<S, _>(store.put_proof(author, &p))?;
            }
        }
        if last > have {
            st::<S, _>(store.put_chain(&ctx))?;
        }
        Ok(false)
    }

    /// Checks an author's first commit (genesis or join) and records the member's key.
    fn admit<S: Storage>(&self, store: &mut S, commit: &Commit) -> Res<PublicKey, S> {
        let (key, label) = match commit.changes.first() {
            Some(Change::Genesis {
                admin_key, label, ..
            }) => {
                if *admin_key != self.admin_key {
                    return Err(IngestError::WrongGenesis);
                }
                (*admin_key, label.clone())
            }
            Some(Change::Join(proof)) => {
                proof
                    .verify(self.dataset, commit.author, &self.admin_key)
                    .map_err(|source| IngestError::NotMember {
                        member: commit.author,
                        source,
                    })?;
                (proof.member_key, proof.invite.label.clone())
            }
            _ => unreachable!("the commit decoder requires a genesis or join first"),
        };
        match st::<S, _>(store.member(commit.author))? {
            Some(m) if m.key != key => {
                return Err(IngestError::InvitationReused {
                    member: commit.author,
                });
            }
            Some(_) => {}
            None => st::<S, _>(store.put_member(&MemberInfo {
                member: commit.author,
                key,
                label,
            }))?,
        }
        Ok(key)
    }

    /// Applies a commit's record changes and advances the clock.
    fn apply<S: Storage>(&self, store: &mut S, commit: &Commit) -> Res<(), S> {
        let stamp = Stamp {
            dot: commit.dot(),
            hlc: commit.hlc,
        };
        let ctx = commit.context();
        for change in &commit.changes {
            if let Change::Record {
                collection,
                id,
                ops,
            } = change
            {
                if !may_write(commit.author, collection, id) {
                    continue;
                }
                let mut rec = st::<S, _>(store.record(collection, id))?.unwrap_or_default();
                for op in ops {
                    rec.apply(stamp, &ctx, op);
                }
                st::<S, _>(store.put_record(collection, id, &rec))?;
            }
        }
        st::<S, _>(store.set_applied(commit.author, commit.seq))?;
        let clock = st::<S, _>(store.clock())?;
        if commit.hlc > clock {
            st::<S, _>(store.set_clock(commit.hlc))?;
        }
        Ok(())
    }

    /// Applies every pending commit whose dependencies are now present and checks every
    /// stashed run whose prerequisites have arrived, until nothing more can be done.
    pub fn settle<S: Storage>(&self, store: &mut S) -> Res<SettleReport, S> {
        let mut report = SettleReport::default();
        loop {
            let mut progress = false;
            for (author, _) in st::<S, _>(store.stashed())? {
                progress |= self.unstash(store, author, &mut report)?;
            }
            let stored = st::<S, _>(store.stored())?;
            let mut applied = st::<S, _>(store.applied())?;
            let mut chains: BTreeMap<MemberId, ChainContext> = BTreeMap::new();
            for (author, top) in stored.iter() {
                while applied.get(author) < top {
                    let seq = applied.get(author) + 1;
                    let c = st::<S, _>(store.commit(author, seq))?.ok_or_else(|| {
                        IngestError::Storage(missing::<S>(format!("commit {seq} of {author}")))
                    })?;
                    if !applied.dominates(&c.deps) {
                        break;
                    }
                    let chain = match chains.entry(author) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => e.insert(
                            st::<S, _>(store.chain(author))?.expect("stored implies chain"),
                        ),
                    };
                    let changes = chain.decode_stored(seq, &c.bytes).map_err(|source| {
                        IngestError::Commit {
                            author,
                            seq,
                            source,
                        }
                    })?;
                    let commit = Commit {
                        author,
                        seq,
                        hlc: c.hlc,
                        deps: c.deps,
                        changes,
                    };
                    self.apply(store, &commit)?;
                    applied.set(author, seq);
                    report.applied += 1;
                    progress = true;
                }
            }
            if !progress {
                return Ok(report);
            }
        }
    }

    /// Tries to move an author's stashed commits into its chain. Returns whether any moved.
    fn unstash<S: Storage>(
        &self,
        store: &mut S,
        author: MemberId,
        report: &mut SettleReport,
    ) -> Res<bool, S> {
        let chain = st::<S, _>(store.chain(author))?;
        let have = chain.as_ref().map_or(0, |c| c.seq);
        // Anything at or below what is already held is obsolete.
        st::<S, _>(store.unstash(author, have))?;
        let known = st::<S, _>(store.member(author))?;
        if known.is_none() && have == 0 && st::<S, _>(store.stashed_commit(author, 1))?.is_none() {
            return Ok(false);
        }
        let start = chain.unwrap_or_else(|| ChainContext::new(self.dataset, author));
        // Pass 1: check the chain and find the last stashed proof that verifies.
        let mut ctx = start.clone();
        let mut key = known.as_ref().map(|m| m.key);
        let mut good = have;
        let mut seq = have + 1;
        let failure = loop {
            let Some(bytes) = st::<S, _>(store.stashed_commit(author, seq))? else {
                break None;
            };
            let commit = match ctx.decode(&bytes) {
                Ok(c) => c,
                Err(e) => break Some(format!("commit {seq} is invalid: {e}")),
            };
            if seq == 1 {
                match commit.changes.first() {
                    Some(Change::Join(p))
                        if p.verify(self.dataset, author, &self.admin_key).is_ok() =>
                    {
                        key = Some(p.member_key)
                    }
                    Some(Change::Genesis { admin_key, .. }) if *admin_key == self.admin_key => {
                        key = Some(*admin_key)
                    }
                    _ => break Some("its membership proof does not verify".into()),
                }
            }
            if let Some(p) = st::<S, _>(store.stashed_proof(author, seq))? {
                let msg = head_message(self.dataset, author, seq, &ctx.hash, p.digest.as_ref());
                if key.is_some_and(|k| k.verify(&msg, &p.sig)) {
                    good = seq;
                } else {
                    break Some(format!("the signature over commit {seq} does not verify"));
                }
            }
            seq += 1;
        };
        if let Some(reason) = &failure {
            report.dropped.push((author, seq, reason.clone()));
        }
        if good == have {
            if failure.is_some() {
                st::<S, _>(store.unstash(author, u64::MAX))?;
            }
            return Ok(false);
        }
        // Pass 2: store the verified commits.
        let mut ctx = start;
        for seq in have + 1..=good {
            let bytes = st::<S, _>(store.stashed_commit(author, seq))?.expect("checked in pass 1");
            let commit = ctx.decode(&bytes).map_err(|source| IngestError::Commit {
                author,
                seq,
                source,
            })?;
            if seq == 1 {
                self.admit(store, &commit)?;
            }
            st::<S, _>(store.insert_commit(&StoredCommit {
                author,
                seq,
                hash: ctx.hash,
                hlc: commit.hlc,
                deps: commit.deps,
                bytes,
            }))?;
            report.unstashed += 1;
        }
        let proof = st::<S, _>(store.stashed_proof(author, good))?.expect("checked in pass 1");
        st::<S, _>(store.put_proof(author, &proof))?;
        st::<S, _>(store.put_chain(&ctx))?;
        // After a failure, whatever followed the bad commit is dropped too; a genuine copy
        // will be sent again because no receipt covers it.
        let drop_to = if failure.is_some() { u64::MAX } else { good };
        st::<S, _>(store.unstash(author, drop_to))?;
        Ok(true)
    }

    /// Records this node's own commit of `changes` at wall time `now_ms` and applies it.
    pub fn commit_local<S: Storage>(
        &self,
        store: &mut S,
        changes: Vec<Change>,
        now_ms: u64,
    ) -> Res<Commit, S> {
        let mut ctx = st::<S, _>(store.chain(self.me))?
            .unwrap_or_else(|| ChainContext::new(self.dataset, self.me));
        let hlc = st::<S, _>(store.clock())?.max(ctx.hlc).tick(now_ms);
        let mut deps = st::<S, _>(store.applied())?;
        deps.set(self.me, 0);
        let commit = Commit {
            author: self.me,
            seq: ctx.seq + 1,
            hlc,
            deps,
            changes,
        };
        let bytes = ctx.encode(&commit).map_err(|source| IngestError::Commit {
            author: self.me,
            seq: commit.seq,
            source,
        })?;
        if commit.seq == 1 {
            self.admit(store, &commit)?;
        }
        st::<S, _>(store.insert_commit(&StoredCommit {
            author: self.me,
            seq: commit.seq,
            hash: ctx.hash,
            hlc,
            deps: commit.deps.clone(),
            bytes,
        }))?;
        st::<S, _>(store.put_chain(&ctx))?;
        self.apply(store, &commit)?;
        Ok(commit)
    }

    /// Writes a bundle carrying `runs` (see [`crate::plan::plan_export`]) and, as gossip,
    /// `peer_receipts`, signed by this node.
    #[allow(clippy::too_many_arguments)]
    pub fn export<S: Storage, W: Write>(
        &self,
        store: &S,
        runs: &[ExportRun],
        peer_receipts: &[(MemberId, VersionVector)],
        out: W,
        salt: [u8; 16],
        key: &DatasetKey,
        signer: &SecretKey,
        options: WriteOptions,
    ) -> Res<(W, ExportReport), S> {
        let header = Header {
            dataset: self.dataset,
            sender: self.me,
            salt,
        };
        let receipt = st::<S, _>(store.stored())?;
        let mut w = BundleWriter::new(out, &header, key, options)?;
        w.push(&Item::Receipt(receipt.clone()))?;
        for (m, vv) in peer_receipts {
            w.push(&Item::PeerReceipt(*m, vv.clone()))?;
        }
        let mut report = ExportReport::default();
        for run in runs {
            let proof = if run.author == self.me && run.last == receipt.get(self.me) {
                RunProof::Sender
            } else if run.author == self.me {
                let hash = self.hash_at(store, self.me, run.last)?;
                RunProof::Head(signer.sign(&head_message(
                    self.dataset,
                    self.me,
                    run.last,
                    &hash,
                    None,
                )))
            } else {
                match st::<S, _>(store.proof(run.author, run.last))? {
                    Some(Proof {
                        digest: Some(digest),
                        sig,
                        ..
                    }) => RunProof::Bundle { digest, sig },
                    Some(Proof {
                        digest: None, sig, ..
                    }) => RunProof::Head(sig),
                    None => {
                        return Err(IngestError::Storage(missing::<S>(format!(
                            "proof for commit {} of {}",
                            run.last, run.author
                        ))));
                    }
                }
            };
            w.push(&Item::Run {
                author: run.author,
                first: run.first,
                count: run.last - run.first + 1,
                proof,
            })?;
            for seq in run.first..=run.last {
                let c = st::<S, _>(store.commit(run.author, seq))?.ok_or_else(|| {
                    IngestError::Storage(missing::<S>(format!("commit {seq} of {}", run.author)))
                })?;
                w.push(&Item::Commit(c.bytes))?;
                report.commits += 1;
            }
            report.runs.push(*run);
        }
        let head = receipt.get(self.me);
        let hash = self.hash_at(store, self.me, head)?;
        let (out, digest) =
            w.finish(|d| signer.sign(&head_message(self.dataset, self.me, head, &hash, Some(d))))?;
        report.digest = digest;
        Ok((out, report))
    }

    /// The clock reading a new local commit would get (for callers that need it ahead).
    pub fn next_clock<S: Storage>(&self, store: &S, now_ms: u64) -> Res<Hlc, S> {
        Ok(st::<S, _>(store.clock())?.tick(now_ms))
    }

    /// Applies nothing; reads a record's state (convenience for callers and tests).
    pub fn record<S: Storage>(
        &self,
        store: &S,
        collection: &str,
        id: &str,
    ) -> Res<Option<RecordState>, S> {
        st::<S, _>(store.record(collection, id))
    }
}

/// Storage that lost something the engine itself stored is corrupt.
fn missing<S: Storage>(what: String) -> S::Error {
    S::missing(what)
}
