//! Evidence that a member's history forked, which anyone can check with that member's key.
//!
//! A fork is two different commits with the same author and number, both signed by the
//! author: a laptop restored from an old backup that wrote again, a cloned disk, or a
//! member lying on purpose. The node that finds one *freezes* the author (no commit of it
//! past the fork point is accepted any more) and writes the evidence into the reserved
//! collection `_forks` (record id = the author's number), so it travels to every member like
//! any change and each of them checks it and freezes the author too (bundles/SPEC.md §10.3).
//!
//! The evidence is two branches that start from the same chain hash at commit `base`: the
//! commits of each branch after it, and the author's signature over each branch's end. A
//! signature covers the chain hash, which covers every commit before it, so two valid
//! signatures over chains that share `base` but differ at `base + 1` prove the author signed
//! two histories. Nothing else needs trusting: not the node that wrote the evidence, not the
//! hash at `base`.

use ferry_model::commit::{CommitBytes, Form, chain_next_as};
use ferry_model::crypto::{PublicKey, Signature, head_message};
use ferry_model::{DatasetId, Hash, MemberId};
use serde::{Deserialize, Serialize};

/// Most bytes of commits one piece of evidence may carry (it travels inside one commit).
pub const MAX_EVIDENCE: usize = 4 * 1024 * 1024;

/// Most commits one branch of evidence may carry.
pub const MAX_EVIDENCE_COMMITS: usize = 65_536;

/// Largest commit number evidence may name (commit numbers fit a signed 64-bit integer).
const MAX_SEQ: u64 = i64::MAX as u64;

/// One branch of a fork: the commits after the common point and the author's signature over
/// the branch's last one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// Commits `base + 1 ..` of this branch, as their canonical bytes.
    #[serde(
        deserialize_with = "ferry_model::bounded::vec::<_, _, MAX_EVIDENCE_COMMITS, { ferry_model::bounded::what::CHANGES }>"
    )]
    pub commits: Vec<serde_bytes::ByteBuf>,
    /// The bundle digest the signature also covers, if it was a bundle signature.
    pub digest: Option<[u8; 32]>,
    /// The author's signature over its head at this branch's last commit.
    pub sig: Signature,
    /// Which of `commits` are in the columnar form (indices, ascending); the others are row
    /// commits. Encoded after the evidence (bundles/SPEC.md §17 4.), not inside the branch.
    #[serde(skip)]
    pub columnar: Vec<u32>,
}

// wire-format: begin
/// Proof that `author` signed two different versions of its history after commit `base`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The author whose history forked.
    pub author: MemberId,
    /// A commit both versions are claimed to share (the last one the finder saw in common).
    pub base: u64,
    /// The chain hash after commit `base`.
    pub base_hash: Hash,
    /// One version: its commits after `base` and the author's signature at its end.
    pub a: Branch,
    /// The other version.
    pub b: Other,
}

/// The other version of a forked history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Other {
    /// Its commits after `base` and the author's signature at its end; its first commit
    /// differs from `a`'s.
    Branch(Branch),
    /// Only the author's signature over its chain hash at commit `seq` (after `base`, within
    /// `a`), which differs from `a`'s hash there: the finder no longer held the commits.
    Head {
        /// The commit number signed.
        seq: u64,
        /// The chain hash signed.
        hash: Hash,
        /// The bundle digest the signature also covers, if any.
        digest: Option<[u8; 32]>,
        /// The author's signature.
        sig: Signature,
    },
}
// wire-format: end

impl Branch {
    /// A branch of `commits` (each in its own form) signed by `sig` at its end.
    pub fn new(commits: Vec<CommitBytes>, digest: Option<[u8; 32]>, sig: Signature) -> Branch {
        let columnar = (0..commits.len() as u32)
            .filter(|&i| commits[i as usize].form == Form::Columnar)
            .collect();
        Branch {
            commits: commits
                .into_iter()
                .map(|c| serde_bytes::ByteBuf::from(c.bytes))
                .collect(),
            digest,
            sig,
            columnar,
        }
    }

    /// The form of commit `i` of the branch.
    fn form(&self, i: usize) -> Form {
        match self.columnar.binary_search(&(i as u32)) {
            Ok(_) => Form::Columnar,
            Err(_) => Form::Row,
        }
    }

    /// Walks the branch from `base_hash` after commit `base`: the chain hash after each of its
    /// commits, and whether the author's signature at its end verifies.
    fn walk(
        &self,
        dataset: DatasetId,
        author: MemberId,
        key: &PublicKey,
        base: u64,
        base_hash: Hash,
    ) -> Result<Vec<Hash>, &'static str> {
        let mut h = base_hash;
        let mut seq = base;
        let mut hashes = Vec::with_capacity(self.commits.len());
        for (i, c) in self.commits.iter().enumerate() {
            seq = seq.checked_add(1).ok_or("commit numbers overflow")?;
            h = chain_next_as(self.form(i), &h, seq, c);
            hashes.push(h);
        }
        let msg = head_message(dataset, author, seq, &h, self.digest.as_ref());
        if !key.verify(&msg, &self.sig) {
            return Err("a signature does not verify");
        }
        Ok(hashes)
    }
}

impl ForkEvidence {
    /// The commit from which the author is frozen: for two branches, the first after `base`
    /// (where they are shown to differ); for a branch and a signed head, the head's commit
    /// (the first point the evidence shows to differ — `base` itself is only the finder's
    /// word, and a lower one would freeze commits both versions share).
    pub fn seq(&self) -> u64 {
        match &self.b {
            Other::Branch(_) => self.base + 1,
            Other::Head { seq, .. } => *seq,
        }
    }

    /// Checks the evidence with the author's key: both versions signed by the author and
    /// different after `base`. Returns the commit from which the author is frozen, or why the
    /// evidence proves nothing.
    pub fn verify(&self, dataset: DatasetId, key: &PublicKey) -> Result<u64, &'static str> {
        let size: usize = match &self.b {
            Other::Branch(b) => b.commits.iter().map(|c| c.len()).sum(),
            Other::Head { .. } => 0,
        } + self.a.commits.iter().map(|c| c.len()).sum::<usize>();
        if size > MAX_EVIDENCE {
            return Err("the evidence is larger than the limit");
        }
        if self.a.commits.is_empty() {
            return Err("a branch is empty");
        }
        let longest = match &self.b {
            Other::Branch(b) => self.a.commits.len().max(b.commits.len()),
            Other::Head { .. } => self.a.commits.len(),
        };
        if self
            .base
            .checked_add(longest as u64)
            .is_none_or(|end| end > MAX_SEQ)
        {
            return Err("the evidence names commits past the largest commit number");
        }
        let a = self
            .a
            .walk(dataset, self.author, key, self.base, self.base_hash)?;
        match &self.b {
            Other::Branch(b) => {
                if b.commits
                    .first()
                    .is_none_or(|b0| *b0 == self.a.commits[0] && b.form(0) == self.a.form(0))
                {
                    return Err("the versions do not differ at their first commit");
                }
                b.walk(dataset, self.author, key, self.base, self.base_hash)?;
            }
            Other::Head {
                seq,
                hash,
                digest,
                sig,
            } => {
                let Some(i) = seq
                    .checked_sub(self.base + 1)
                    .filter(|&i| (i as usize) < a.len())
                else {
                    return Err("the signed head is not within the other version");
                };
                if a[i as usize] == *hash {
                    return Err("the versions agree at the signed head");
                }
                let msg = head_message(dataset, self.author, *seq, hash, digest.as_ref());
                if !key.verify(&msg, sig) {
                    return Err("a signature does not verify");
                }
            }
        }
        Ok(self.seq())
    }

    // wire-format: begin
    /// The evidence's bytes, as stored in `_forks` (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = postcard::to_allocvec(self).expect("evidence encodes");
        // Which commits are columnar, after the evidence (SPEC §17 4.): nothing when none.
        let b = match &self.b {
            Other::Branch(b) => &b.columnar[..],
            Other::Head { .. } => &[],
        };
        let forms: Vec<(u8, u32)> = (self.a.columnar.iter().map(|&i| (0u8, i)))
            .chain(b.iter().map(|&i| (1u8, i)))
            .collect();
        if !forms.is_empty() {
            out = postcard::to_extend(&forms, out).expect("forms encode");
        }
        out
    }

    /// Reads evidence from its bytes (refusing, before decoding, more than the evidence
    /// limits allow).
    pub fn from_bytes(bytes: &[u8]) -> Option<ForkEvidence> {
        if bytes.len() > MAX_EVIDENCE + 4096 {
            return None;
        }
        let (mut ev, rest): (ForkEvidence, _) = postcard::take_from_bytes(bytes).ok()?;
        if rest.is_empty() {
            return Some(ev);
        }
        let forms: Vec<(u8, u32)> = postcard::from_bytes(rest).ok()?;
        if forms.is_empty()
            || postcard::to_allocvec(&forms).ok()?.len() != rest.len()
            || forms.windows(2).any(|w| w[0] >= w[1])
        {
            return None;
        }
        for (branch, i) in forms {
            let b = match (branch, &mut ev.b) {
                (0, _) => &mut ev.a,
                (1, Other::Branch(b)) => b,
                _ => return None,
            };
            if i as usize >= b.commits.len() {
                return None;
            }
            b.columnar.push(i);
        }
        Some(ev)
    }
    // wire-format: end
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::commit::{chain_next, chain_root};
    use ferry_model::crypto::SecretKey;
    use serde_bytes::ByteBuf;

    const DS: DatasetId = DatasetId([7; 8]);

    fn branch(key: &SecretKey, base: u64, base_hash: Hash, commits: &[&[u8]]) -> Branch {
        let row: Vec<CommitBytes> = commits
            .iter()
            .map(|c| CommitBytes::row(c.to_vec()))
            .collect();
        branch_of(key, base, base_hash, row)
    }

    fn branch_of(key: &SecretKey, base: u64, base_hash: Hash, commits: Vec<CommitBytes>) -> Branch {
        let mut h = base_hash;
        let mut seq = base;
        for c in &commits {
            seq += 1;
            h = c.chain(&h, seq);
        }
        let sig = key.sign(&head_message(DS, MemberId(3), seq, &h, None));
        Branch::new(commits, None, sig)
    }

    /// Evidence with columnar commits says which they are after the evidence; read without
    /// that (as a version 1 reader does), or with the forms moved, it proves nothing. The
    /// same bytes in the two forms are two different commits.
    #[test]
    fn evidence_names_its_columnar_commits_and_their_form_counts() {
        let key = SecretKey::from_bytes([4; 32]);
        let base_hash = chain_next(&chain_root(DS, MemberId(3)), 1, b"join");
        let col = |b: &[u8]| CommitBytes {
            form: Form::Columnar,
            bytes: b.to_vec(),
        };
        let ev = ForkEvidence {
            author: MemberId(3),
            base: 1,
            base_hash,
            a: branch_of(
                &key,
                1,
                base_hash,
                vec![CommitBytes::row(b"x".to_vec()), col(b"y")],
            ),
            b: Other::Branch(branch_of(&key, 1, base_hash, vec![col(b"x")])),
        };
        assert_eq!(
            (ev.a.columnar.clone(), ev.a.form(1)),
            (vec![1], Form::Columnar)
        );
        assert_eq!(ev.verify(DS, &key.public()), Ok(2));
        let bytes = ev.to_bytes();
        let read = ForkEvidence::from_bytes(&bytes).unwrap();
        assert_eq!(read, ev);
        assert_eq!(
            (read.a.columnar.clone(), read.b.clone()),
            (vec![1], ev.b.clone())
        );
        let Other::Branch(b) = &read.b else { panic!() };
        assert_eq!(b.columnar, vec![0]);
        assert_eq!(read.verify(DS, &key.public()), Ok(2));
        // Without the forms (a version 1 reader's view): the signatures do not verify.
        let plain = postcard::to_allocvec(&ev).unwrap();
        let old = ForkEvidence::from_bytes(&plain).unwrap();
        assert!(old.a.columnar.is_empty());
        assert!(old.verify(DS, &key.public()).is_err());
        // Forms that name no commit, repeat, or go backwards: not evidence.
        for forms in [
            vec![(0u8, 2u32)],
            vec![(1, 1)],
            vec![(0, 1), (0, 1)],
            vec![(1, 0), (0, 1)],
        ] {
            let bad = postcard::to_extend(&forms, plain.clone()).unwrap();
            assert_eq!(ForkEvidence::from_bytes(&bad), None, "{forms:?}");
        }
        // Trailing garbage after the forms: not evidence.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(ForkEvidence::from_bytes(&trailing), None);
    }

    #[test]
    fn two_signed_branches_from_one_point_prove_a_fork_and_nothing_less_does() {
        let key = SecretKey::from_bytes([4; 32]);
        let other = SecretKey::from_bytes([5; 32]);
        let base_hash = chain_next(&chain_root(DS, MemberId(3)), 1, b"join");
        let ev = ForkEvidence {
            author: MemberId(3),
            base: 1,
            base_hash,
            a: branch(&key, 1, base_hash, &[b"x", b"y"]),
            b: Other::Branch(branch(&key, 1, base_hash, &[b"z"])),
        };
        assert_eq!(ev.verify(DS, &key.public()), Ok(2));
        assert_eq!(ForkEvidence::from_bytes(&ev.to_bytes()), Some(ev.clone()));
        // Under another member's key, or another dataset: nothing.
        assert!(ev.verify(DS, &other.public()).is_err());
        assert!(ev.verify(DatasetId([8; 8]), &key.public()).is_err());
        // One branch signed by someone else (a member framing another): nothing.
        let mut framed = ev.clone();
        framed.b = Other::Branch(branch(&other, 1, base_hash, &[b"z"]));
        assert!(framed.verify(DS, &key.public()).is_err());
        // The same branch twice is no fork.
        let mut same = ev.clone();
        same.b = Other::Branch(same.a.clone());
        assert!(same.verify(DS, &key.public()).is_err());
        // A changed commit breaks its branch's signature.
        let mut edited = ev.clone();
        edited.a.commits[1] = ByteBuf::from(b"w".to_vec());
        assert!(edited.verify(DS, &key.public()).is_err());
        // Empty branches prove nothing.
        let mut empty = ev.clone();
        empty.a.commits.clear();
        assert!(empty.verify(DS, &key.public()).is_err());

        // The other version known only by a signed head inside `a`'s span, whose hash differs
        // from `a`'s there (the finder no longer held its commits).
        let other_commit: &[u8] = b"w";
        let other_hash = chain_next(&base_hash, 2, other_commit);
        let head = |seq: u64, hash: Hash, k: &SecretKey| Other::Head {
            seq,
            hash,
            digest: None,
            sig: k.sign(&head_message(DS, MemberId(3), seq, &hash, None)),
        };
        let mut by_head = ev.clone();
        by_head.b = head(2, other_hash, &key);
        assert_eq!(by_head.verify(DS, &key.public()), Ok(2));
        // Agreeing with `a` there, outside its span, or signed by someone else: nothing.
        let a_hash = chain_next(&base_hash, 2, b"x");
        by_head.b = head(2, a_hash, &key);
        assert!(by_head.verify(DS, &key.public()).is_err());
        by_head.b = head(9, other_hash, &key);
        assert!(by_head.verify(DS, &key.public()).is_err());
        by_head.b = head(2, other_hash, &other);
        assert!(by_head.verify(DS, &key.public()).is_err());
    }
}
