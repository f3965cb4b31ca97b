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

use ferry_model::commit::chain_next;
use ferry_model::crypto::{PublicKey, Signature, head_message};
use ferry_model::{DatasetId, Hash, MemberId};
use serde::{Deserialize, Serialize};

/// Most bytes of commits one piece of evidence may carry (it travels inside one commit).
pub const MAX_EVIDENCE: usize = 4 * 1024 * 1024;

/// One branch of a fork: the commits after the common point and the author's signature over
/// the branch's last one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// Commits `base + 1 ..` of this branch, as their canonical bytes.
    pub commits: Vec<serde_bytes::ByteBuf>,
    /// The bundle digest the signature also covers, if it was a bundle signature.
    pub digest: Option<[u8; 32]>,
    /// The author's signature over its head at this branch's last commit.
    pub sig: Signature,
}

// wire-format: begin
/// Proof that `author` signed two different commits `base + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The author whose history forked.
    pub author: MemberId,
    /// The last commit both branches share.
    pub base: u64,
    /// The chain hash after commit `base`.
    pub base_hash: Hash,
    /// One branch.
    pub a: Branch,
    /// The other.
    pub b: Branch,
}
// wire-format: end

impl ForkEvidence {
    /// The first commit number at which the two histories differ.
    pub fn seq(&self) -> u64 {
        self.base + 1
    }

    /// Checks the evidence with the author's key: both branches non-empty, their first
    /// commits different, and both signatures valid over their chains. Returns the fork's
    /// commit number, or why the evidence proves nothing.
    pub fn verify(&self, dataset: DatasetId, key: &PublicKey) -> Result<u64, &'static str> {
        let (Some(a0), Some(b0)) = (self.a.commits.first(), self.b.commits.first()) else {
            return Err("a branch is empty");
        };
        if a0 == b0 {
            return Err("the branches do not differ at their first commit");
        }
        let size: usize = self
            .a
            .commits
            .iter()
            .chain(&self.b.commits)
            .map(|c| c.len())
            .sum();
        if size > MAX_EVIDENCE {
            return Err("the evidence is larger than the limit");
        }
        for branch in [&self.a, &self.b] {
            let mut h = self.base_hash;
            let mut seq = self.base;
            for c in &branch.commits {
                seq = seq.checked_add(1).ok_or("commit numbers overflow")?;
                h = chain_next(&h, seq, c);
            }
            let msg = head_message(dataset, self.author, seq, &h, branch.digest.as_ref());
            if !key.verify(&msg, &branch.sig) {
                return Err("a signature does not verify");
            }
        }
        Ok(self.seq())
    }

    /// The evidence's bytes, as stored in `_forks` (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("evidence encodes")
    }

    /// Reads evidence from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<ForkEvidence> {
        postcard::from_bytes(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::commit::chain_root;
    use ferry_model::crypto::SecretKey;
    use serde_bytes::ByteBuf;

    const DS: DatasetId = DatasetId([7; 8]);

    fn branch(key: &SecretKey, base: u64, base_hash: Hash, commits: &[&[u8]]) -> Branch {
        let mut h = base_hash;
        let mut seq = base;
        for c in commits {
            seq += 1;
            h = chain_next(&h, seq, c);
        }
        Branch {
            commits: commits.iter().map(|c| ByteBuf::from(c.to_vec())).collect(),
            digest: None,
            sig: key.sign(&head_message(DS, MemberId(3), seq, &h, None)),
        }
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
            b: branch(&key, 1, base_hash, &[b"z"]),
        };
        assert_eq!(ev.verify(DS, &key.public()), Ok(2));
        assert_eq!(ForkEvidence::from_bytes(&ev.to_bytes()), Some(ev.clone()));
        // Under another member's key, or another dataset: nothing.
        assert!(ev.verify(DS, &other.public()).is_err());
        assert!(ev.verify(DatasetId([8; 8]), &key.public()).is_err());
        // One branch signed by someone else (a member framing another): nothing.
        let mut framed = ev.clone();
        framed.b = branch(&other, 1, base_hash, &[b"z"]);
        assert!(framed.verify(DS, &key.public()).is_err());
        // The same branch twice is no fork.
        let mut same = ev.clone();
        same.b = same.a.clone();
        assert!(same.verify(DS, &key.public()).is_err());
        // A changed commit breaks its branch's signature.
        let mut edited = ev.clone();
        edited.a.commits[1] = ByteBuf::from(b"w".to_vec());
        assert!(edited.verify(DS, &key.public()).is_err());
        // Empty branches prove nothing.
        let mut empty = ev;
        empty.b.commits.clear();
        assert!(empty.verify(DS, &key.public()).is_err());
    }
}
