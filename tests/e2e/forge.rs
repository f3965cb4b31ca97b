//! Hostile bundles for the attack tests (tests/e2e/attacks.rs): what an outsider who knows
//! only the dataset id (the folder name on a stick), or a member with nothing but its own
//! keys, can write by hand.
//!
//! The bytes follow bundles/SPEC.md (version 1) directly: header, compression flag,
//! postcard items (the real `ferry_bundle::Item`), a zstd frame if asked, and a signature
//! over the digest of §7.2; a sealed bundle goes through the real chunked AEAD stream.
//! Nothing here calls ferry's bundle writer, so a forgery can break any rule the writer
//! keeps (an all-zero signature, runs from a fake author, 1 GiB of receipts).

use crate::util::Laptop;
use ferry_bundle::DatasetKey;
use ferry_bundle::stream::EncryptWriter;
use ferry_model::commit::ChainContext;
use ferry_model::crypto::{SecretKey, Signature, head_message};
use ferry_model::{
    Change, Commit, DatasetId, Dot, Hash, Hlc, MemberId, Op, RecordState, Stamp, Value,
    VersionVector,
};
use ferry_node::{Home, Node};
use ferry_sync::Storage;
use std::io::{self, Read, Write};

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `n` random bytes (incompressible).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("read /dev/urandom");
    out
}

/// A version vector from (member, commit) pairs.
pub fn vv(pairs: &[(u32, u64)]) -> VersionVector {
    pairs.iter().map(|&(m, n)| (MemberId(m), n)).collect()
}

/// One item's encoding: `postcard(Item)` (SPEC §4).
pub fn item(i: &ferry_bundle::Item) -> Vec<u8> {
    postcard::to_allocvec(i).expect("item encodes")
}

/// Unsigned LEB128 (SPEC §2).
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An all-zero signature: what an outsider without any key puts at the end.
pub fn no_signature(_: &[u8; 32]) -> Signature {
    Signature([0; 64])
}

/// The dataset id of a laptop (what anyone sees as the folder name on its stick).
pub fn dataset_id(l: &Laptop) -> DatasetId {
    let hex = l.status()["dataset_id"]
        .as_str()
        .expect("status has dataset_id")
        .to_string();
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex dataset id");
    }
    DatasetId(id)
}

/// What a member's own laptop holds that lets it write bundles by hand: the dataset key, its
/// signing key, and its commit chain as stored in its home folder.
pub struct Member {
    /// The dataset.
    pub dataset: DatasetId,
    /// The dataset key (seals bundles).
    pub key: DatasetKey,
    /// The member's signing key.
    pub secret: SecretKey,
    /// Its member number.
    pub me: MemberId,
    /// What it holds of every author (its receipt).
    pub stored: VersionVector,
    /// Its own chain after its latest commit (its head and chain hash).
    pub chain: ChainContext,
}

impl Member {
    /// Reads a laptop's identity and own chain from its home folder (no ferry process may be
    /// running on it).
    pub fn of(l: &Laptop) -> Member {
        let id = Node::open(&Home::at(&l.home))
            .expect("open node")
            .identity()
            .clone();
        let mut store = ferry_store::Store::open(&l.home.join("ferry.db")).expect("open store");
        let tx = store.read().expect("read store");
        let chain = tx.chain(id.me).expect("chain").expect("own chain");
        let stored = tx.stored().expect("stored");
        Member {
            dataset: id.dataset,
            key: id.dataset_key.clone(),
            secret: id.secret.clone(),
            me: id.me,
            stored,
            chain,
        }
    }

    /// Its head: its latest commit number.
    pub fn head(&self) -> u64 {
        self.chain.seq
    }

    /// Its bundle signature over its head `seq` with chain hash `hash` (SPEC §7.1).
    pub fn sign(&self, seq: u64, hash: &Hash, digest: &[u8; 32]) -> Signature {
        self.secret.sign(&head_message(
            self.dataset,
            self.me,
            seq,
            hash,
            Some(digest),
        ))
    }

    /// Its valid bundle signature over its real head.
    pub fn sign_head(&self, digest: &[u8; 32]) -> Signature {
        self.sign(self.chain.seq, &self.chain.hash, digest)
    }
}

/// The dataset key of a laptop's home folder.
pub fn dataset_key(l: &Laptop) -> [u8; 32] {
    Node::open(&Home::at(&l.home))
        .expect("open node")
        .identity()
        .dataset_key
        .0
}

/// A record's merge state as a snapshot carries it (`postcard(RecordState)`, SPEC §4.1): each
/// field set to a text value by commit `seq` of `author`.
pub fn record_state(author: u32, seq: u64, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut r = RecordState::default();
    let stamp = Stamp::new(
        Dot::new(MemberId(author), seq),
        Hlc::from_parts(now_ms(), 0),
    );
    for (f, v) in fields {
        r.apply(
            stamp,
            &VersionVector::new(),
            &Op::Set(f.to_string(), Value::Str(v.to_string())),
        );
    }
    postcard::to_allocvec(&r).expect("record state encodes")
}

/// Where the plaintext stream goes: as it is (magic `P`), or sealed in chunks (magic `F`).
enum Sink<W: Write> {
    Plain(W),
    Sealed(EncryptWriter<W>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(e) => e.flush(),
        }
    }
}

/// Hashes the payload as it goes out (the signed digest, SPEC §7.2).
struct Tee<W: Write> {
    sink: Sink<W>,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.sink.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

/// How to write a forged bundle.
pub struct Forge<'a> {
    /// The dataset id in the header.
    pub dataset: DatasetId,
    /// The sender number in the header.
    pub sender: u32,
    /// `None`: a plaintext bundle (magic `P`); `Some(key)`: sealed with the dataset key.
    pub key: Option<&'a DatasetKey>,
    /// `None`: the items stored as they are; `Some(level)`: one zstd frame at that level.
    pub zstd: Option<i32>,
}

impl Forge<'_> {
    /// Writes the bundle to `out`: header, flag, the payload `body` writes (items), then the
    /// signature `sign` makes over the digest. Returns `out`.
    pub fn write<W: Write>(
        &self,
        mut out: W,
        body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        sign: impl FnOnce(&[u8; 32]) -> Signature,
    ) -> io::Result<W> {
        let mut header = vec![if self.key.is_some() { b'F' } else { b'P' }, 1];
        header.extend_from_slice(&self.dataset.0);
        varint(self.sender as u64, &mut header);
        header.extend_from_slice(&random_bytes(16));
        out.write_all(&header)?;
        let sink = match self.key {
            None => Sink::Plain(out),
            Some(k) => Sink::Sealed(EncryptWriter::new(out, k.bundle_key(&header))),
        };
        let mut hasher = blake3::Hasher::new_derive_key("ferry v1 bundle digest");
        hasher.update(&header);
        let mut tee = Tee { sink, hasher };
        match self.zstd {
            None => {
                tee.write_all(&[0])?;
                body(&mut tee)?;
            }
            Some(level) => {
                tee.write_all(&[1])?;
                let mut enc = zstd::stream::write::Encoder::new(&mut tee, level)?;
                body(&mut enc)?;
                enc.finish()?;
            }
        }
        let digest = *tee.hasher.finalize().as_bytes();
        let sig = sign(&digest);
        let Tee { sink, .. } = tee;
        match sink {
            Sink::Plain(mut w) => {
                w.write_all(&sig.0)?;
                w.flush()?;
                Ok(w)
            }
            Sink::Sealed(mut e) => {
                e.write_all(&sig.0)?;
                e.finish()
            }
        }
    }

    /// A bundle of these items, in memory.
    pub fn bundle(
        &self,
        items: &[ferry_bundle::Item],
        sign: impl FnOnce(&[u8; 32]) -> Signature,
    ) -> Vec<u8> {
        self.write(
            Vec::new(),
            |w| {
                for i in items {
                    w.write_all(&item(i))?;
                }
                Ok(())
            },
            sign,
        )
        .expect("write bundle")
    }
}

/// A commit encoding (SPEC §5.2) that is well formed and 16 MiB long, the largest a commit
/// may be: the next commit after `ctx` (at clock `hlc`), one record change holding
/// 16 Mi − ~30 one-byte `Delete` ops. A reader that decodes the ops into memory before any
/// check spends dozens of bytes per op. The real encoder writes a three-op commit; its op
/// count is then raised (ops come last in the encoding).
pub fn delete_bomb_commit(ctx: &ChainContext, hlc: Hlc) -> Vec<u8> {
    let mut ctx = ctx.clone();
    let small = ctx
        .encode(&Commit {
            author: ctx.author,
            seq: ctx.seq + 1,
            hlc,
            deps: ctx.deps.clone(),
            seen: None,
            changes: vec![Change::Record {
                collection: "visits".into(),
                id: "x".into(),
                ops: vec![Op::Delete, Op::Delete, Op::Delete],
            }],
        })
        .expect("encode a three-op commit");
    assert_eq!(small[small.len() - 4..], [3, 11, 11, 11], "ops come last");
    let total = ferry_model::limits::MAX_COMMIT;
    let mut c = small[..small.len() - 4].to_vec();
    // The op count takes 4 bytes for any count between 2^21 and 2^28.
    let ops = total - c.len() - 4;
    varint(ops as u64, &mut c);
    c.resize(total, 11); // op 11: Delete
    c
}

/// Issue 10's keyless forgery (finding 1): a plaintext bundle written from the dataset id
/// alone, claiming to come from the admin (member 1) with a head of 1 000 000, carrying a
/// snapshot that says history up to 999 999 was compacted, that it reflects 1 000 000
/// commits of members 1 and 3 (every member but the victim, clinic A, number 2: member
/// numbers are small and easy to guess), and that the dataset holds one record,
/// `visits/v1` with `a=FORGED-BY-OUTSIDER`; signed with 64 zero bytes.
pub fn keyless_snapshot(of: &Laptop) -> Vec<u8> {
    keyless_snapshot_of(of, "v1", "a")
}

/// [`keyless_snapshot`], rewriting `visits/ID` with `FIELD=FORGED-BY-OUTSIDER`.
pub fn keyless_snapshot_of(of: &Laptop, id: &str, field: &str) -> Vec<u8> {
    use ferry_bundle::Item;
    let items = [
        Item::Receipt(vv(&[(1, 1_000_000)])),
        Item::Snapshot {
            state: vv(&[(1, 1_000_000), (3, 1_000_000)]),
            compacted: vv(&[(1, 999_999)]),
        },
        Item::SnapshotChain {
            author: MemberId(1),
            seq: 999_999,
            hash: Hash([7; 32]),
            hlc: Hlc::from_parts(now_ms(), 0),
            deps: VersionVector::new(),
            names: vec!["visits".into(), field.into()],
            first: b"forged".to_vec(),
        },
        Item::SnapshotRecord {
            collection: "visits".into(),
            id: id.into(),
            state: record_state(1, 999_999, &[(field, "FORGED-BY-OUTSIDER")]),
        },
    ];
    Forge {
        dataset: dataset_id(of),
        sender: 1,
        key: None,
        zstd: None,
    }
    .bundle(&items, no_signature)
}
