//! The frozen test vectors of bundle format versions 1 and 3 (`bundles/vectors/`), checked
//! against the real reader and engine.
//!
//! One file per vector: `key: value` header lines, a blank line, then the raw bundle bytes;
//! beside it `NAME.json`, the content it decodes to or the class and reason of its refusal
//! (SPEC §12), which both the Rust reader and the second decoder written from the spec
//! (`bundles/decoder/ferry_decode.py`) must reproduce. Vectors are added, never edited. To
//! add a new one, add it to `generate()` and run
//! `FERRY_WRITE_VECTORS=1 cargo test -p ferry-sync --test vectors` (twice: the vector, then
//! its JSON): files that exist are never overwritten.

use ferry_bundle::{
    BundleError, BundleReader, BundleWriter, DatasetKey, Header, Item, RunProof, WriteOptions,
};
use ferry_model::commit::{ChainContext, CommitBytes, CommitError, Form, chain_next, chain_root};
use ferry_model::crypto::{PublicKey, SecretKey, head_message};
use ferry_model::record::{Entry, Ghost, Sibling};
use ferry_model::{
    Change, Commit, DatasetId, Hash, Hlc, MemberId, Op, RecordState, Stamp, Value, VersionVector,
};
use ferry_sync::mem::{MemError, MemStorage};
use ferry_sync::plan::Coverage;
use ferry_sync::sim::{SimNode, SplitMix};
use ferry_sync::{Engine, IngestError, Storage};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

const T0: u64 = 1_763_000_000_000;
const DATASET: DatasetId = DatasetId(*b"ferryvec");
const KEY: [u8; 32] = [0x42; 32];
const ADMIN: [u8; 32] = [0x01; 32];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bundles/vectors")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn engine() -> Engine {
    Engine {
        dataset: DATASET,
        admin_key: SecretKey::from_bytes(ADMIN).public(),
        me: MemberId::ADMIN,
    }
}

/// The admin's replica after `records` visits (in commits of 50).
fn admin_with(records: usize) -> MemStorage {
    let e = engine();
    let mut st = MemStorage::default();
    e.commit_local(
        &mut st,
        vec![Change::Genesis {
            name: "vector dataset".into(),
            label: "hq".into(),
            admin_key: SecretKey::from_bytes(ADMIN).public(),
        }],
        T0,
    )
    .unwrap();
    let visits: Vec<Change> = (0..records)
        .map(|i| Change::Record {
            collection: "visits".into(),
            id: format!("v-2026-{:06}", 123 + i),
            ops: vec![
                Op::Set(
                    "patient_id".into(),
                    Value::Str(format!("p-{:06}", 4512 + i)),
                ),
                Op::Set("visit_date".into(), Value::Str("2026-11-03".into())),
                Op::Set(
                    "village".into(),
                    Value::Str(["Kisumu Ndogo", "Obunga", "Nyalenda"][i % 3].into()),
                ),
                Op::Set("age_years".into(), Value::Int(20 + (i as i64 % 50))),
                Op::Set("weight_kg".into(), Value::Float(61.5 + (i % 7) as f64)),
                Op::Set("followup".into(), Value::Bool(i % 2 == 0)),
                // 40 incompressible bytes, so the multichunk vector spans several chunks.
                Op::Set(
                    "photo_hash".into(),
                    Value::Bytes(ferry_sync::sim::SplitMix(i as u64).bytes::<40>().to_vec()),
                ),
            ],
        })
        .collect();
    for (n, chunk) in visits.chunks(50).enumerate() {
        e.commit_local(&mut st, chunk.to_vec(), T0 + 1000 * (n as u64 + 1))
            .unwrap();
    }
    st
}

fn export(st: &MemStorage, salt: u8, key: [u8; 32], signer: [u8; 32]) -> Vec<u8> {
    export_with(st, salt, key, signer, WriteOptions::default())
}

fn export_with(
    st: &MemStorage,
    salt: u8,
    key: [u8; 32],
    signer: [u8; 32],
    options: WriteOptions,
) -> Vec<u8> {
    let head = st.stored().unwrap().get(MemberId::ADMIN);
    let runs = [Coverage {
        author: MemberId::ADMIN,
        first: 1,
        last: head,
    }];
    let (bytes, _) = engine()
        .export(
            st,
            &runs,
            &[],
            Vec::new(),
            [salt; 16],
            &ferry_bundle::Keyring::new(DatasetKey(key)),
            &SecretKey::from_bytes(signer),
            options,
        )
        .unwrap();
    bytes
}

/// Every vector: (file name, header lines, bytes).
/// A vector: file name, header lines, bundle bytes.
type Vector = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn generate() -> Vec<Vector> {
    let admin_pub = hex(&SecretKey::from_bytes(ADMIN).public().0);
    let common = |expect: &str, comment: &str| {
        vec![
            ("expect", expect.to_string()),
            ("comment", comment.to_string()),
            ("dataset", hex(&DATASET.0)),
            ("dataset-key", hex(&KEY)),
            ("admin-key", admin_pub.clone()),
        ]
    };
    let one = export(&admin_with(1), 1, KEY, ADMIN);
    let many = export(&admin_with(2000), 2, KEY, ADMIN);
    let mut out = Vec::new();
    let mut with =
        |name, mut h: Vec<(&'static str, String)>, extra: &[(&'static str, String)], b| {
            h.extend_from_slice(extra);
            out.push((name, h, b));
        };
    with(
        "valid-one-record",
        common("success", "genesis and one visit, signed by the admin"),
        &[("commits", "1:1-2".into())],
        one.clone(),
    );
    with(
        "valid-compressed-multichunk",
        common(
            "success",
            "genesis and 2000 visits in 40 commits; zstd payload over several 64 KiB chunks",
        ),
        &[("commits", "1:1-41".into())],
        many.clone(),
    );
    with(
        "truncated",
        common(
            "decrypt failure",
            "valid-one-record without its last 20 bytes",
        ),
        &[],
        one[..one.len() - 20].to_vec(),
    );
    let first_chunk_end = 27 + 64 * 1024 + 16;
    assert!(
        many.len() > first_chunk_end + 100,
        "the multichunk vector has several chunks"
    );
    with(
        "truncated-at-chunk-boundary",
        common(
            "decrypt failure",
            "valid-compressed-multichunk cut right after its first sealed chunk",
        ),
        &[],
        many[..first_chunk_end].to_vec(),
    );
    let mut flipped = one.clone();
    flipped[60] ^= 0x01;
    with(
        "bit-flipped-ciphertext",
        common(
            "decrypt failure",
            "valid-one-record with bit 0 of byte 60 flipped",
        ),
        &[],
        flipped,
    );
    with(
        "bad-signature",
        common(
            "signature failure",
            "well encrypted, but signed with a key that is not the admin's",
        ),
        &[],
        export(&admin_with(1), 3, KEY, [0x07; 32]),
    );
    with(
        "wrong-dataset-key",
        common(
            "decrypt failure",
            "the same content encrypted under another dataset key",
        ),
        &[],
        export(&admin_with(1), 4, [0x43; 32], ADMIN),
    );
    let mut v2 = one.clone();
    v2[1] = 2;
    with(
        "unknown-version",
        common(
            "version failure",
            "valid-one-record with the version byte set to 2",
        ),
        &[],
        v2,
    );
    let mut other = one.clone();
    other[2..10].copy_from_slice(b"otherset");
    with(
        "wrong-dataset",
        common(
            "dataset failure",
            "valid-one-record with another dataset id in the header",
        ),
        &[],
        other,
    );
    with(
        "not-a-bundle",
        common("header failure", "a PNG signature, not a bundle"),
        &[],
        b"\x89PNG\r\n\x1a\n".to_vec(),
    );
    let plain = export_with(
        &admin_with(1),
        6,
        KEY,
        ADMIN,
        WriteOptions {
            plaintext: true,
            ..WriteOptions::default()
        },
    );
    with(
        "plaintext-one-record",
        common(
            "success",
            "genesis and one visit, signed by the admin, NOT encrypted (magic P, SPEC §3.3)",
        ),
        &[("commits", "1:1-2".into())],
        plain.clone(),
    );
    let mut tampered = plain.clone();
    tampered[12] ^= 0x01;
    with(
        "plaintext-tampered",
        common(
            "signature failure",
            "plaintext-one-record with bit 0 of salt byte 1 flipped: the signed digest covers every byte",
        ),
        &[],
        tampered,
    );
    with(
        "receipt-only",
        common(
            "success",
            "a bundle with no commits, only the sender's receipt, from a sender whose chain the reader lacks",
        ),
        &[
            ("commits", String::new()),
            ("authenticated", "false".into()),
        ],
        {
            let st = admin_with(0);
            let (b, _) = engine()
                .export(
                    &st,
                    &[],
                    &[],
                    Vec::new(),
                    [5; 16],
                    &ferry_bundle::Keyring::new(DatasetKey(KEY)),
                    &SecretKey::from_bytes(ADMIN),
                    WriteOptions::default(),
                )
                .unwrap();
            b
        },
    );
    let s = story();
    let story_vectors = [
        (
            "join",
            "member 2's first bundle: its join (commit 1), the invitation the admin signed and its own key",
            "2:1-1",
            s.join,
        ),
        (
            "every-op-kind",
            "the admin's history: genesis, an invitation, a set of every value type, a counter, set add and remove, two records in one commit, a delete, a rule (_rules), a resolve of a conflict; member 2's run relayed under its own signature",
            "1:1-8 2:1-3",
            s.every_op,
        ),
        (
            "delete-vs-edit",
            "member 2 relays the admin's delete of visits/v-2 and carries its own edit of v-2 made concurrently with it (and a concurrent edit of v-1's village)",
            "1:1-6 2:1-3",
            s.delete_vs_edit,
        ),
        (
            "relayed-run",
            "member 3 sends its join and relays the runs of the admin and of member 2, each vouched for by its author's own earlier bundle signature",
            "1:1-8 2:1-3 3:1-1",
            s.relayed,
        ),
        (
            "snapshot",
            "an admin snapshot for a member invited after compaction: the record states, every author's chain at the snapshot point and its commit 1",
            "",
            s.snapshot,
        ),
    ];
    for (name, comment, commits, bytes) in story_vectors {
        with(
            name,
            common("success", comment),
            &[("commits", commits.to_string())],
            bytes,
        );
    }
    for (name, expect, reason, comment, bytes) in malformed() {
        with(
            name,
            common(expect, comment),
            &[("reason", reason.to_string())],
            bytes,
        );
    }
    let v3 = ghost_story();
    with(
        "v3-snapshot-ghosts",
        common(
            "success",
            "a version 3 admin snapshot (SPEC §13) for member 3, invited after compaction: visits/v1 holds a buried ghost (a) and a ghost (b) that shows beside an edit concurrent with member 2's delete; visits/v2 holds a ghost (e) under two concurrent deletes",
        ),
        &[("commits", String::new())],
        v3.clone(),
    );
    let (refused, trailing) = ghost_vectors(&v3);
    for (name, expect, reason, comment, bytes) in refused.into_iter().chain(trailing) {
        with(
            name,
            common(expect, comment),
            &[("reason", reason.to_string())],
            bytes,
        );
    }
    // Version 5 (SPEC §14): sealed under key epoch 1, the admin's grant in the header.
    let reader = |m: u32| {
        vec![
            ("member", m.to_string()),
            ("member-secret", hex(&member_secret(m))),
        ]
    };
    let v5 = v5_bundle(ADMIN);
    let with_reader = |expect: &str, comment: &str, m: u32| {
        let mut h = common(expect, comment);
        h.extend(reader(m));
        h
    };
    with(
        "v5-grant",
        with_reader(
            "success",
            "sealed under key epoch 1; the admin's grant in the header seals the epoch key to members 1, 2 and 4 and removes member 3 after its commit 5; read by member 2",
            2,
        ),
        &[("commits", "1:1-2".to_string())],
        v5.clone(),
    );
    with(
        "v5-grant-removes-reader",
        with_reader(
            "key failure",
            "the bundle of v5-grant read by member 3, which its grant removes",
            3,
        ),
        &[("reason", "removed".to_string())],
        v5.clone(),
    );
    with(
        "v5-grant-not-for-reader",
        with_reader(
            "key failure",
            "the bundle of v5-grant read by member 5, to which its grant does not seal the key",
            5,
        ),
        &[("reason", "no-key".to_string())],
        v5,
    );
    with(
        "v5-grant-not-by-admin",
        with_reader(
            "key failure",
            "sealed under key epoch 1 with a grant signed by member 2, not the admin, for member 2",
            2,
        ),
        &[("reason", "bad-grant".to_string())],
        v5_bundle(member_secret(2)),
    );
    // A header of epoch 0 (and an empty grant), then bytes that would be the sealed stream.
    let mut zero = Header::new(DATASET, MemberId::ADMIN, [9; 16]).encode_version(false, 5);
    zero.extend([0u8; 80]);
    with(
        "v5-epoch-zero",
        common(
            "header failure",
            "version 5 names key epoch 0, which only versions 1 and 3 use",
        ),
        &[("reason", "bad-header".to_string())],
        zero,
    );
    let mut six = export(&admin_with(1), 6, KEY, ADMIN);
    six[1] = 6;
    with(
        "unknown-version-6",
        common(
            "version failure",
            "the bundle of valid-one-record with the version byte 6",
        ),
        &[("reason", "unsupported-version".to_string())],
        six,
    );
    // Version 7 (SPEC §15): the founder promotes member 2; a dataset with more than one admin
    // writes version 7, whose header names epoch 0 here (the dataset key) without a grant.
    let mut promoted = admin_with(1);
    engine()
        .commit_local(
            &mut promoted,
            vec![Change::Record {
                collection: "_members".into(),
                id: "2".into(),
                ops: vec![Op::Set("admin".into(), Value::Bool(true))],
            }],
            T0 + 5000,
        )
        .unwrap();
    let v7_options = WriteOptions {
        version: ferry_bundle::VERSION_ADMINS,
        ..WriteOptions::default()
    };
    with(
        "v7-admins",
        common(
            "success",
            "version 7: the admin's genesis, one visit, and its promotion of member 2 (_members/2 admin = true); epoch 0, no grant",
        ),
        &[("commits", "1:1-3".into())],
        export_with(&promoted, 7, KEY, ADMIN, v7_options),
    );
    let with_grant = Header {
        grant: vec![0],
        ..Header::new(DATASET, MemberId::ADMIN, [9; 16])
    };
    let mut zero_grant = with_grant.encode_version(false, ferry_bundle::VERSION_ADMINS);
    zero_grant.extend([0u8; 80]);
    with(
        "v7-epoch-zero-grant",
        common(
            "header failure",
            "version 7 names key epoch 0 and carries a grant, which only a later epoch may",
        ),
        &[("reason", "bad-header".to_string())],
        zero_grant,
    );
    let mut eight = export(&admin_with(1), 8, KEY, ADMIN);
    eight[1] = 8;
    with(
        "unknown-version-8",
        common(
            "version failure",
            "the bundle of valid-one-record with the version byte 8",
        ),
        &[("reason", "unsupported-version".to_string())],
        eight,
    );
    // Version 9 (SPEC §16): key epochs begun by another admin than member 1.
    let signer_key = |m: u32| hex(&SecretKey::from_bytes(member_secret(m)).public().0);
    let v9_reader = |expect: &str, comment: &str, m: u32, signer: u32| {
        let mut h = common(expect, comment);
        h.extend(reader(m));
        h.push(("signer-key", signer_key(signer)));
        h
    };
    let v9 = v9_bundle(
        2,
        1,
        &[(ferry_bundle::EpochId::ZERO, DatasetKey(KEY))],
        None,
    );
    with(
        "v9-grant-by-admin",
        v9_reader(
            "success",
            "version 9: sealed under key epoch 1 of admin 2, whose grant seals it to members 1, 2 and 4 and removes member 3 after its commit 5; read by member 4, which holds member 2's key",
            4,
            2,
        ),
        &[("commits", "1:1-2".to_string())],
        v9.clone(),
    );
    with(
        "v9-grant-removes-reader",
        v9_reader(
            "key failure",
            "the bundle of v9-grant-by-admin read by member 3, which its grant removes",
            3,
            2,
        ),
        &[("reason", "removed".to_string())],
        v9.clone(),
    );
    with(
        "v9-grant-not-by-signer",
        v9_reader(
            "key failure",
            "the bundle of v9-grant-by-admin read by member 4 holding member 3's key as the signer's: the signature does not verify",
            4,
            3,
        ),
        &[("reason", "bad-grant".to_string())],
        v9.clone(),
    );
    // The same grant in a header that names admin 3's epoch 1.
    let other = v9_bundle(
        2,
        1,
        &[(ferry_bundle::EpochId::ZERO, DatasetKey(KEY))],
        Some(3),
    );
    with(
        "v9-grant-other-epoch",
        v9_reader(
            "key failure",
            "a header naming epoch 1 of admin 3 carrying admin 2's grant of its own epoch 1",
            4,
            2,
        ),
        &[("reason", "bad-grant".to_string())],
        other,
    );
    // Member 1's epoch 2 after two admins began epoch 1 at once: its history names both.
    let e = |number, signer| ferry_bundle::EpochId {
        number,
        signer: MemberId(signer),
    };
    let history = [
        (ferry_bundle::EpochId::ZERO, DatasetKey(KEY)),
        (e(1, 2), DatasetKey([0x82; 32])),
        (e(1, 3), DatasetKey([0x83; 32])),
    ];
    let mut h = v9_reader(
        "success",
        "version 9: sealed under member 1's key epoch 2, whose grant (version 9, since its history names epochs 1 of admins 2 and 3) seals it to members 1, 2 and 4; read by member 2",
        2,
        1,
    );
    h.retain(|(k, _)| *k != "signer-key");
    with(
        "v9-founder-history",
        h,
        &[("commits", "1:1-2".to_string())],
        v9_bundle(1, 2, &history, None),
    );
    let mut zero = Header {
        signer: MemberId(2),
        ..Header::new(DATASET, MemberId::ADMIN, [9; 16])
    }
    .encode_version(false, ferry_bundle::VERSION_KEYS);
    zero.extend([0u8; 80]);
    with(
        "v9-epoch-zero-signer",
        common(
            "header failure",
            "version 9 names key epoch 0 with signer 2: epoch 0 is member 1's",
        ),
        &[("reason", "bad-header".to_string())],
        zero,
    );
    let mut ten = export(&admin_with(1), 10, KEY, ADMIN);
    ten[1] = 10;
    with(
        "unknown-version-10",
        common(
            "version failure",
            "the bundle of valid-one-record with the version byte 10",
        ),
        &[("reason", "unsupported-version".to_string())],
        ten,
    );
    // Version 11 (SPEC §17): commits of many records in the columnar form.
    let columnar = columnar_admin();
    let v11 = export(&columnar, 11, KEY, ADMIN);
    assert_eq!(v11[1], ferry_bundle::VERSION_COLUMNS);
    with(
        "v11-columnar",
        common(
            "success",
            "version 11: the admin's genesis (row form) and two columnar commits: 20 visits with texts, dates, integers, decimals, booleans, nulls and bytes in two shapes, then 16 visits changed by incr, add, remove and delete interleaved with 16 households (two blocks)",
        ),
        &[("commits", "1:1-3".into())],
        v11.clone(),
    );
    let mut twelve = v11.clone();
    twelve[1] = 12;
    with(
        "unknown-version-12",
        common(
            "version failure",
            "the bundle of v11-columnar with the version byte 12",
        ),
        &[("reason", "unsupported-version".to_string())],
        twelve,
    );
    // Plaintext version 11 bundles of the admin's commits, validly signed over what they
    // carry: (commit bytes, item kind) for commits 1.. .
    let signed_run = |salt: u8, commits: &[(Vec<u8>, bool)]| {
        let mut ctx = ChainContext::new(DATASET, MemberId::ADMIN);
        let mut hash = ctx.hash;
        let mut items = vec![
            Item::Receipt(
                [(MemberId::ADMIN, commits.len() as u64)]
                    .into_iter()
                    .collect(),
            ),
            Item::Run {
                author: MemberId::ADMIN,
                first: 1,
                count: commits.len() as u64,
                proof: RunProof::Sender,
            },
        ];
        for (seq, (bytes, columnar)) in commits.iter().enumerate() {
            let form = if *columnar { Form::Columnar } else { Form::Row };
            hash = ferry_model::commit::chain_next_as(form, &hash, seq as u64 + 1, bytes);
            items.push(match columnar {
                true => Item::ColumnarCommit(bytes.clone()),
                false => Item::Commit(bytes.clone()),
            });
        }
        ctx.hash = hash;
        plain_bundle_version(
            ferry_bundle::VERSION_COLUMNS,
            1,
            salt,
            0,
            &encode(&items),
            commits.len() as u64,
            &ctx.hash,
            ADMIN,
        )
    };
    let c = |seq| {
        columnar
            .commit(MemberId::ADMIN, seq)
            .unwrap()
            .unwrap()
            .bytes
    };
    with(
        "v11-columnar-commit-1",
        common(
            "commit failure",
            "a plaintext version 11 bundle whose commit 1 (the admin's genesis) is carried as a columnar commit (item kind 7)",
        ),
        &[("reason", "columnar".to_string())],
        signed_run(0x61, &[(c(1), true)]),
    );
    with(
        "v11-columnar-as-row",
        common(
            "commit failure",
            "a plaintext version 11 bundle carrying v11-columnar's columnar commit 2 as a row commit (item kind 3), signed over the row chain: read as a row commit, its bytes end long before the columnar blocks do",
        ),
        &[("reason", "trailing-bytes".to_string())],
        signed_run(0x62, &[(c(1), false), (c(2), false)]),
    );
    let mut trailing = c(2);
    trailing.push(0);
    with(
        "v11-columnar-trailing-byte",
        common(
            "commit failure",
            "a plaintext version 11 bundle whose columnar commit 2 has a byte after its last block, validly signed",
        ),
        &[("reason", "trailing-bytes".to_string())],
        signed_run(0x63, &[(c(1), false), (trailing, true)]),
    );
    let bad_format = Header {
        epoch: 1,
        grant: vec![0; 100],
        grant_format: 7,
        ..Header::new(DATASET, MemberId::ADMIN, [9; 16])
    };
    let mut bad_format = bad_format.encode_version(false, ferry_bundle::VERSION_COLUMNS);
    bad_format.extend([0u8; 80]);
    with(
        "v11-grant-format",
        common(
            "header failure",
            "version 11 names key epoch 1 and a grant whose format byte is 7 (only 5 and 9 exist)",
        ),
        &[("reason", "bad-header".to_string())],
        bad_format,
    );
    // Version 13 (SPEC §18): a payload compressed with the dataset's dictionary.
    let (dict_admin, dict) = dictionary_admin();
    let v13 = export(&dict_admin, 13, KEY, ADMIN);
    assert_eq!(v13[1], ferry_bundle::VERSION_DICTS);
    let held = format!("1 {}", hex(&dict));
    with(
        "v13-dictionary",
        common(
            "success",
            "version 13: the admin's genesis, its dictionary _dicts/1 (trained on 300 visits) and twelve visits, the payload compressed with dictionary 1 (flag 2), which the reader holds",
        ),
        &[("commits", "1:1-3".into()), ("dictionary", held.clone())],
        v13.clone(),
    );
    with(
        "v13-no-dictionary",
        common(
            "dictionary failure",
            "the bundle of v13-dictionary, read without dictionary 1: it waits for it",
        ),
        &[("reason", "no-dictionary".to_string())],
        v13.clone(),
    );
    let mut other = dict.clone();
    let last = other.len() - 1;
    other[last] ^= 0x01;
    with(
        "v13-other-dictionary",
        common(
            "signature failure",
            "the bundle of v13-dictionary, read with another dictionary numbered 1 (its last byte differs): the dictionary's hash is in the digest",
        ),
        &[
            ("reason", "bad-signature".to_string()),
            ("dictionary", format!("1 {}", hex(&other))),
        ],
        v13.clone(),
    );
    let genesis = c(1);
    let body = [
        vec![1u8],
        zstd::bulk::Compressor::with_dictionary(19, &dict)
            .unwrap()
            .compress(&encode(&[
                Item::Receipt([(MemberId::ADMIN, 1)].into_iter().collect()),
                Item::Run {
                    author: MemberId::ADMIN,
                    first: 1,
                    count: 1,
                    proof: RunProof::Sender,
                },
                Item::Commit(genesis.clone()),
            ]))
            .unwrap(),
    ]
    .concat();
    let hash = ferry_model::commit::chain_next(
        &ChainContext::new(DATASET, MemberId::ADMIN).hash,
        1,
        &genesis,
    );
    with(
        "v13-flag-in-v11",
        common(
            "payload failure",
            "a plaintext version 11 bundle whose flag is 2 (a dictionary, which only version 13 has), validly signed",
        ),
        &[("reason", "unknown-flag".to_string()), ("dictionary", held)],
        plain_bundle_version(
            ferry_bundle::VERSION_COLUMNS,
            1,
            0x64,
            2,
            &body,
            1,
            &hash,
            ADMIN,
        ),
    );
    let mut fourteen = v13;
    fourteen[1] = 14;
    with(
        "unknown-version-14",
        common(
            "version failure",
            "the bundle of v13-dictionary with the version byte 14",
        ),
        &[("reason", "unsupported-version".to_string())],
        fourteen,
    );
    out
}

/// The admin's replica with a dictionary (SPEC §18): commit 1 its genesis (it reads
/// version 13), commit 2 `_dicts/1` trained on 300 visits, commit 3 twelve visits. Returns it and
/// the dictionary.
fn dictionary_admin() -> (MemStorage, Vec<u8>) {
    let e = engine();
    let mut st = admin_that_reads(13);
    let visit = |i: usize| -> Vec<Op> {
        vec![
            Op::Set(
                "patient_id".into(),
                Value::Str(format!("p-{:06}", 4512 + i * 7919 % 100_000)),
            ),
            Op::Set(
                "visit_date".into(),
                Value::Str(format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28)),
            ),
            Op::Set(
                "village".into(),
                Value::Str(["Kisumu Ndogo", "Obunga", "Nyalenda", "Manyatta"][i % 4].into()),
            ),
            Op::Set("age_years".into(), Value::Int((i as i64 * 13) % 90)),
            Op::Set(
                "weight_kg".into(),
                Value::Float(3.0 + (i * 37 % 970) as f64 / 10.0),
            ),
            Op::Set(
                "diagnosis".into(),
                Value::Str(["malaria", "pneumonia", "diarrhoea", "none"][i % 4].into()),
            ),
            Op::Set("followup".into(), Value::Bool(i % 3 == 0)),
        ]
    };
    // Commits 2, 3, … of a member 7 (its join is not needed to encode them).
    let root = ChainContext::new(DATASET, MemberId(7)).hash;
    let mut ctx = ChainContext::from_parts(
        MemberId(7),
        1,
        root,
        Hlc::from_parts(T0, 0),
        VersionVector::new(),
        Vec::new(),
    );
    let samples: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let commit = ferry_model::commit::Commit {
                author: MemberId(7),
                seq: ctx.seq + 1,
                hlc: Hlc::from_parts(T0 + 60_000 * (i as u64 + 1), 0),
                deps: VersionVector::new(),
                seen: None,
                changes: vec![Change::Record {
                    collection: "visits".into(),
                    id: format!("v-2026-{:06}", i),
                    ops: visit(i),
                }],
            };
            ctx.encode(&commit).unwrap()
        })
        .collect();
    let dict = zstd::dict::from_samples(&samples, 1024).unwrap();
    e.commit_local(
        &mut st,
        vec![Change::Record {
            collection: "_dicts".into(),
            id: "1".into(),
            ops: vec![
                Op::Set("zstd".into(), Value::Bytes(dict.clone())),
                Op::Set("records".into(), Value::Int(300)),
            ],
        }],
        T0 + 1_000,
    )
    .unwrap();
    e.commit_local(
        &mut st,
        (301..313)
            .map(|i| Change::Record {
                collection: "visits".into(),
                id: format!("v-2026-{i:06}"),
                ops: visit(i),
            })
            .collect(),
        T0 + 2_000,
    )
    .unwrap();
    (st, dict)
}

/// The admin's replica after its genesis, whose `_members/1` says it reads bundle version
/// `reads` (it is the only member).
fn admin_that_reads(reads: i64) -> MemStorage {
    let mut st = MemStorage::default();
    engine()
        .commit_local(
            &mut st,
            vec![
                Change::Genesis {
                    name: "vector dataset".into(),
                    label: "hq".into(),
                    admin_key: SecretKey::from_bytes(ADMIN).public(),
                },
                Change::Record {
                    collection: "_members".into(),
                    id: "1".into(),
                    ops: vec![Op::Set("reads".into(), Value::Int(reads))],
                },
            ],
            T0,
        )
        .unwrap();
    st
}

/// The admin's replica whose commits 2 and 3 are columnar: its `_members/1` says it reads
/// version 11 (it is the only member), and each writes at least 16 records of a collection.
fn columnar_admin() -> MemStorage {
    let e = engine();
    let mut st = admin_that_reads(11);
    let visits: Vec<Change> = (0..20)
        .map(|i| {
            let mut ops = vec![
                Op::Set(
                    "patient_id".into(),
                    Value::Str(format!("p-{:06}", 4512 + i * 7)),
                ),
                Op::Set(
                    "visit_date".into(),
                    Value::Str(format!("2026-11-{:02}", 1 + i % 28)),
                ),
                Op::Set(
                    "village".into(),
                    Value::Str(["Kisumu Ndogo", "Obunga", "Nyalenda"][i % 3].into()),
                ),
                Op::Set("age_years".into(), Value::Int(20 + (i as i64 * 13 % 50))),
                Op::Set(
                    "weight_kg".into(),
                    Value::Float(61.5 + (i % 7) as f64 * 0.25),
                ),
                Op::Set("followup".into(), Value::Bool(i % 3 == 0)),
                Op::Set(
                    "note".into(),
                    match i % 4 {
                        0 => Value::Null,
                        _ => Value::Str(format!("seen by nurse {}", i % 5)),
                    },
                ),
            ];
            if i % 5 == 0 {
                ops.push(Op::Set(
                    "photo_hash".into(),
                    Value::Bytes(ferry_sync::sim::SplitMix(i as u64).bytes::<8>().to_vec()),
                ));
            }
            Change::Record {
                collection: "visits".into(),
                id: format!("v-2026-{:06}", 123 + i),
                ops,
            }
        })
        .collect();
    e.commit_local(&mut st, visits, T0 + 1000).unwrap();
    let mut mixed = Vec::new();
    for i in 0..16 {
        let ops = match i % 4 {
            0 => vec![Op::Incr("doses".into(), 1 + i as i64)],
            1 => vec![Op::Add("tags".into(), format!("t{}", i % 3))],
            2 => vec![
                Op::Remove("tags".into(), "t0".into()),
                Op::Incr("doses".into(), -2),
            ],
            _ => vec![Op::Delete],
        };
        mixed.push(Change::Record {
            collection: "visits".into(),
            id: format!("v-2026-{:06}", 123 + i),
            ops,
        });
        mixed.push(Change::Record {
            collection: "households".into(),
            id: format!("h-{:03}", i),
            ops: vec![
                Op::Set("size".into(), Value::Int(2 + i as i64 % 6)),
                Op::Set("head".into(), Value::Str(format!("head {i}"))),
            ],
        });
    }
    e.commit_local(&mut st, mixed, T0 + 2000).unwrap();
    for seq in [2, 3] {
        let c = st.commit(MemberId::ADMIN, seq).unwrap().unwrap();
        assert_eq!(c.form, Form::Columnar, "commit {seq}");
    }
    st
}

/// The device secret of vector member `m` (test keys, published on purpose).
fn member_secret(m: u32) -> [u8; 32] {
    [0x10 + m as u8; 32]
}

/// The epoch 1 key of the version 5 vectors.
const EPOCH_1: [u8; 32] = [0x51; 32];

/// The admin's genesis and one visit, sealed under key epoch 1 with a grant signed by
/// `granter` that seals the key to members 1, 2 and 4 and removes member 3 after commit 5.
fn v5_bundle(granter: [u8; 32]) -> Vec<u8> {
    let members: Vec<_> = [1u32, 2, 4]
        .iter()
        .map(|&m| {
            let secret = if m == 1 { ADMIN } else { member_secret(m) };
            (MemberId(m), SecretKey::from_bytes(secret).public())
        })
        .collect();
    let grant = ferry_bundle::EpochGrant::issue(
        &SecretKey::from_bytes(granter),
        DATASET,
        &DatasetKey(EPOCH_1),
        &[DatasetKey(KEY)],
        2,
        T0 + 5,
        vec![ferry_bundle::Removal {
            member: MemberId(3),
            cutoff: 5,
        }],
        &members,
        [0x77; 32],
    );
    let mut ring = ferry_bundle::Keyring::new(DatasetKey(KEY));
    ring.install(
        &[
            (ferry_bundle::EpochId::ZERO, DatasetKey(KEY)),
            (ferry_bundle::EpochId::founder(1), DatasetKey(EPOCH_1)),
        ],
        Some(&grant),
    );
    admin_visit_sealed(&ring)
}

/// The admin's genesis and one visit, sealed under key epoch `number` of member `signer`
/// with its version 9 grant (SPEC §16), carrying `history`, that seals the key to members 1,
/// 2 and 4 and removes member 3 after commit 5. With `header_signer`, the header names that
/// signer instead (the grant then belongs to another epoch).
fn v9_bundle(
    signer: u32,
    number: u32,
    history: &[(ferry_bundle::EpochId, DatasetKey)],
    header_signer: Option<u32>,
) -> Vec<u8> {
    let secret = |m: u32| SecretKey::from_bytes(if m == 1 { ADMIN } else { member_secret(m) });
    let members: Vec<_> = [1u32, 2, 4]
        .iter()
        .map(|&m| (MemberId(m), secret(m).public()))
        .collect();
    let key = DatasetKey([0x80 + signer as u8 + number as u8; 32]);
    let grant = ferry_bundle::EpochGrant::issue_v8(
        &secret(signer),
        DATASET,
        &key,
        history,
        ferry_bundle::GrantBody {
            version: ferry_bundle::VERSION_KEYS,
            epoch: number,
            signer: MemberId(signer),
            admin_seq: 3,
            at_ms: T0 + 5,
            removed: vec![ferry_bundle::Removal {
                member: MemberId(3),
                cutoff: 5,
            }],
            ephemeral: [0; 32],
            wraps: vec![],
            history: vec![],
        },
        &members,
        [0x78; 32],
    );
    let id = ferry_bundle::EpochId {
        number,
        signer: MemberId(header_signer.unwrap_or(signer)),
    };
    let mut ring = ferry_bundle::Keyring::new(DatasetKey(KEY));
    ring.install(history, None);
    ring.install(&[(id, key.clone())], Some(&grant));
    if header_signer.is_some() {
        // A grant held for one epoch, carried in the header of another.
        ring = ferry_bundle::Keyring::new(DatasetKey(KEY));
        ring.install(&[(id, key)], None);
        let bundle = admin_visit_sealed(&ring);
        // Rewrite the header with the grant: the stream then no longer authenticates under
        // any key the reader has, but the grant is refused before that.
        let (h, raw) = Header::read(&mut &bundle[..]).unwrap();
        let with_grant = Header {
            grant: grant.to_bytes(),
            ..h
        };
        let mut out = with_grant.encode_version(false, ferry_bundle::VERSION_KEYS);
        out.extend_from_slice(&bundle[raw.len()..]);
        return out;
    }
    admin_visit_sealed(&ring)
}

/// The admin's genesis and one visit (its commits 1–2), exported with salt 5 and sealed as
/// `ring` says (the bundle of the version 5 and 9 vectors).
fn admin_visit_sealed(ring: &ferry_bundle::Keyring) -> Vec<u8> {
    let runs = [Coverage {
        author: MemberId::ADMIN,
        first: 1,
        last: 2,
    }];
    engine()
        .export(
            &admin_with(1),
            &runs,
            &[],
            Vec::new(),
            [5; 16],
            ring,
            &SecretKey::from_bytes(ADMIN),
            WriteOptions::default(),
        )
        .unwrap()
        .0
}

/// The keys a vector's reader holds: the dataset key, and what the bundle's grant seals to
/// the member the vector names (SPEC §14), or the key failure.
fn reader_keys(
    bytes: &[u8],
    h: &BTreeMap<String, String>,
) -> Result<ferry_bundle::Keyring, (&'static str, &'static str)> {
    let key = DatasetKey(unhex(&h["dataset-key"]).try_into().unwrap());
    let mut ring = ferry_bundle::Keyring::new(key);
    let Ok(opener) = BundleReader::open(bytes) else {
        return Ok(ring);
    };
    let header = opener.header();
    if header.grant.is_empty() || ring.key(header.epoch_id()).is_some() {
        return Ok(ring);
    }
    let (Some(m), Some(secret)) = (h.get("member"), h.get("member-secret")) else {
        return Ok(ring);
    };
    // The key the reader holds for the grant's signer: `signer-key` (version 9, §16), else
    // the admin key for member 1.
    let admin = PublicKey(unhex(&h["admin-key"]).try_into().unwrap());
    let signer = h
        .get("signer-key")
        .map(|k| PublicKey(unhex(k).try_into().unwrap()));
    let key_of = |s: MemberId| match signer {
        Some(k) => Some(k),
        None => (s == MemberId::ADMIN).then_some(admin),
    };
    let dataset = DatasetId(unhex(&h["dataset"]).try_into().unwrap());
    let grant = ferry_bundle::EpochGrant::read_for_header(
        &header.grant,
        dataset,
        opener.version(),
        header.epoch_id(),
        key_of,
    )
    .map_err(|e| match e {
        // The signer's join has not reached the reader: the bundle waits (SPEC §16 3.).
        ferry_bundle::GrantError::UnknownSigner { .. } => ("key failure", "no-key"),
        _ => ("key failure", "bad-grant"),
    })?;
    let learned = ring.learn(
        &grant,
        dataset,
        MemberId(m.parse().unwrap()),
        &SecretKey::from_bytes(unhex(secret).try_into().unwrap()),
        true,
    );
    match learned {
        Ok(_) => Ok(ring),
        Err(ferry_bundle::GrantError::Removed { .. }) => Err(("key failure", "removed")),
        Err(ferry_bundle::GrantError::NotGranted { .. }) => Err(("key failure", "no-key")),
        Err(_) => Err(("key failure", "bad-grant")),
    }
}

/// The admin's node over [`admin_with`]`(0)`, for the stories that need several members.
fn admin_node() -> SimNode {
    SimNode {
        engine: engine(),
        store: admin_with(0),
        secret: SecretKey::from_bytes(ADMIN),
        key: ferry_bundle::Keyring::new(DatasetKey(KEY)),
        label: "hq".into(),
        dataset_name: "vector dataset".into(),
        rng: SplitMix(11),
        now_ms: T0,
        options: WriteOptions::default(),
        accept: Default::default(),
        waiting: Vec::new(),
    }
}

/// Bundles of a small dataset's life, as the real engine writes them.
struct Story {
    join: Vec<u8>,
    every_op: Vec<u8>,
    delete_vs_edit: Vec<u8>,
    relayed: Vec<u8>,
    snapshot: Vec<u8>,
}

fn run(author: u32, first: u64, last: u64) -> Coverage {
    Coverage {
        author: MemberId(author),
        first,
        last,
    }
}

/// Every commit `node` holds, as runs from commit 1.
fn everything(node: &SimNode) -> Vec<Coverage> {
    let stored = node.store.stored().unwrap();
    stored.iter().map(|(a, n)| run(a.0, 1, n)).collect()
}

fn story() -> Story {
    let t = |minutes: u64| T0 + minutes * 60_000;
    let set = |f: &str, v: Value| Op::Set(f.into(), v);
    let ok = |step: &str, r: ferry_sync::sim::SimResult| {
        assert!(
            matches!(r, Ok(ferry_sync::Received::Applied(..))),
            "{step}: {r:?}"
        );
    };
    let mut admin = admin_node();
    let inv_b = admin.invite(MemberId(2), "clinic-b", t(1)); // admin 2: _members/2
    // admin 3: every value type, a counter, set elements; two records in one commit.
    admin.now_ms = t(2);
    admin
        .engine
        .commit_local(
            &mut admin.store,
            vec![
                Change::Record {
                    collection: "visits".into(),
                    id: "v-1".into(),
                    ops: vec![
                        set("patient_id", Value::Str("p-004512".into())),
                        set("note", Value::Null),
                        set("pregnant", Value::Bool(false)),
                        set("followup", Value::Bool(true)),
                        set("age_years", Value::Int(34)),
                        set("balance", Value::Int(-9_007_199_254_740_993)),
                        set("weight_kg", Value::Float(61.5)),
                        set("ratio", Value::Float(0.1 + 0.2)),
                        set("offset", Value::Float(-0.0)),
                        set("photo_hash", Value::Bytes(vec![0, 1, 2, 0xfe, 0xff])),
                        set("village", Value::Str("Kisumu Ndogo".into())),
                        Op::Incr("count".into(), 1),
                        Op::Add("tags".into(), "tb".into()),
                        Op::Add("tags".into(), "hiv".into()),
                    ],
                },
                Change::Record {
                    collection: "visits".into(),
                    id: "v-2".into(),
                    ops: vec![
                        set("patient_id", Value::Str("p-004513".into())),
                        set("weight_kg", Value::Float(70.25)),
                    ],
                },
            ],
            t(2),
        )
        .unwrap();
    // admin 4: merge rules, as `ferry rule visits count counter` writes them.
    admin.write(
        "_rules",
        "visits",
        vec![
            set("count", Value::Str("counter".into())),
            set("tags", Value::Str("set".into())),
        ],
        t(3),
    );
    let a1 = admin.bundle_with(&[run(1, 1, 4)]);
    let mut b = SimNode::join(&inv_b, 22, t(3) + 500);
    let join = b.bundle_with(&[run(2, 1, 1)]);
    ok("b a1", b.ingest(&a1));
    // Member 2 edits v-1 and v-2 (b 2, b 3) while the admin edits v-1 and deletes v-2
    // (admin 5, admin 6): neither has seen the other's.
    b.write(
        "visits",
        "v-1",
        vec![
            set("village", Value::Str("Nyalenda".into())),
            Op::Incr("count".into(), -3),
            Op::Remove("tags".into(), "hiv".into()),
        ],
        t(4),
    );
    b.write(
        "visits",
        "v-2",
        vec![set("weight_kg", Value::Float(71.5))],
        t(4) + 1,
    );
    admin.write(
        "visits",
        "v-1",
        vec![set("village", Value::Str("Obunga".into()))],
        t(5),
    );
    admin.write("visits", "v-2", vec![Op::Delete], t(5) + 1);
    let a2 = admin.bundle_with(&[run(1, 1, 6)]);
    ok("b a2", b.ingest(&a2));
    let delete_vs_edit = b.bundle_with(&[run(1, 1, 6), run(2, 1, 3)]);
    ok("admin dve", admin.ingest(&delete_vs_edit));
    assert!(
        admin
            .conflicts()
            .contains(&("visits".into(), "v-1".into(), "village".into())),
        "{:?}",
        admin.conflicts()
    );
    // (admin 7: the admin records member 2's accepted key in _members/2.)
    // admin 8: `ferry resolve visits v-1 village "Kisumu Ndogo"`: a set that saw both.
    admin.write(
        "visits",
        "v-1",
        vec![set("village", Value::Str("Kisumu Ndogo".into()))],
        t(6),
    );
    let every_op = admin.bundle_with(&everything(&admin));
    let inv_c = admin.invite(MemberId(3), "clinic-c", t(7)); // admin 9
    let mut c = SimNode::join(&inv_c, 33, t(8));
    ok("c every", c.ingest(&every_op));
    let relayed = c.bundle_with(&everything(&c));
    ok("admin relayed", admin.ingest(&relayed));
    // Everyone holds everything; the admin compacts, then invites member 4, which can only
    // get the compacted history as a snapshot.
    let a3 = admin.bundle_with(&everything(&admin));
    ok("b a3", b.ingest(&a3));
    ok("c a3", c.ingest(&a3));
    let (rb, rc) = (b.bundle_with(&[]), c.bundle_with(&[]));
    ok("admin rb", admin.ingest(&rb));
    ok("admin rc", admin.ingest(&rc));
    assert!(
        admin.compact() > 0,
        "the admin compacts what everyone holds"
    );
    admin.invite(MemberId(4), "clinic-d", t(9)); // admin 11 (10: member 3's key)
    // Since format version 3 the admin's v-2 holds a ghost (its delete crossed member 2's
    // edit), so `export_snapshot` writes this snapshot as version 3. The frozen `snapshot`
    // vector is version 1: what the writer writes for the same records without ghosts, as
    // ferry did before version 3 (vector `v3-snapshot-ghosts` is the version 3 one).
    assert!(
        admin.store.records.values().any(|r| !r.ghosts.is_empty()),
        "v-2 holds the values its delete removed"
    );
    let mut without_ghosts = admin.clone();
    for r in without_ghosts.store.records.values_mut() {
        r.ghosts.clear();
    }
    let snapshot = without_ghosts
        .snapshot_if_needed()
        .expect("member 4 needs a snapshot");
    assert_eq!(snapshot[1], ferry_bundle::VERSION, "no ghosts: version 1");
    Story {
        join,
        every_op,
        delete_vs_edit,
        relayed,
        snapshot,
    }
}

/// The admin's version 3 snapshot (SPEC §13) of a dataset whose deleted records hold
/// ghosts, for member 3, invited after compaction:
///
/// - `visits/v1`: the admin sets `a`, deletes v1 (`a` becomes a ghost under that delete) and
///   sets `b` after the delete, which buries `a`; member 2 deletes v1 after seeing `b` (`b`
///   becomes a ghost under member 2's delete, `a` does not: it is buried) while the admin,
///   not seeing that delete, sets `c`. The record is live (`c`) and shows `b` again.
/// - `visits/v2`: the admin sets `e`; the admin and member 2 both delete v2, neither seeing
///   the other's delete: `e` is a ghost under two deletes.
fn ghost_story() -> Vec<u8> {
    let t = |minutes: u64| T0 + minutes * 60_000;
    let set = |f: &str, v: Value| Op::Set(f.into(), v);
    let ok = |step: &str, r: ferry_sync::sim::SimResult| {
        assert!(
            matches!(r, Ok(ferry_sync::Received::Applied(..))),
            "{step}: {r:?}"
        );
    };
    let mut admin = admin_node();
    let inv_b = admin.invite(MemberId(2), "clinic-b", t(1));
    let a = admin.write("visits", "v1", vec![set("a", Value::Int(1))], t(2));
    let e = admin.write(
        "visits",
        "v2",
        vec![set("e", Value::Str("x".into()))],
        t(2) + 1,
    );
    let d1 = admin.write("visits", "v1", vec![Op::Delete], t(3));
    let b_set = admin.write("visits", "v1", vec![set("b", Value::Int(2))], t(4));
    let a1 = admin.bundle_with(&everything(&admin));
    let mut b = SimNode::join(&inv_b, 22, t(4) + 500);
    ok("b a1", b.ingest(&a1));
    let d2 = b.write("visits", "v1", vec![Op::Delete], t(5));
    let d3 = b.write("visits", "v2", vec![Op::Delete], t(5) + 1);
    let d4 = admin.write("visits", "v2", vec![Op::Delete], t(5) + 2);
    admin.write("visits", "v1", vec![set("c", Value::Int(3))], t(5) + 3);
    let b1 = b.bundle_with(&everything(&b));
    ok("admin b1", admin.ingest(&b1));
    // Everyone holds everything; the admin compacts and invites member 3.
    let a2 = admin.bundle_with(&everything(&admin));
    ok("b a2", b.ingest(&a2));
    let rb = b.bundle_with(&[]);
    ok("admin rb", admin.ingest(&rb));
    assert!(
        admin.compact() > 0,
        "the admin compacts what everyone holds"
    );
    admin.invite(MemberId(3), "clinic-c", t(6));
    let dot = |c: &Commit| (c.author, c.seq);
    // (field, the write's dot, under, buried) of each ghost of visits/`id`.
    let ghosts = |id: &str| {
        admin.store.records[&("visits".to_string(), id.to_string())]
            .ghosts
            .iter()
            .map(|g| {
                (
                    g.field.clone(),
                    dot_of(&g.sibling.stamp),
                    g.under
                        .iter()
                        .map(|d| (d.author, d.seq))
                        .collect::<Vec<_>>(),
                    g.buried.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ghosts("v1"),
        [
            ("a".into(), dot(&a), vec![dot(&d1)], vec![dot(&b_set)]),
            ("b".into(), dot(&b_set), vec![dot(&d2)], vec![]),
        ],
        "v1: a buried, b under member 2's delete"
    );
    assert_eq!(
        ghosts("v2"),
        [("e".into(), dot(&e), vec![dot(&d4), dot(&d3)], vec![])],
        "v2: e under two deletes"
    );
    let v1 = &admin.store.records[&("visits".to_string(), "v1".to_string())];
    assert_eq!(
        v1.shown_ghosts()
            .map(|g| g.field.as_str())
            .collect::<Vec<_>>(),
        ["b"],
        "v1 shows b again beside c"
    );
    let snapshot = admin
        .snapshot_if_needed()
        .expect("member 3 needs a snapshot");
    assert_eq!(
        snapshot[1], 3,
        "records with ghosts: format version 3 (SPEC §13)"
    );
    snapshot
}

fn dot_of(s: &Stamp) -> (MemberId, u64) {
    (s.dot.author, s.dot.seq)
}

/// A snapshot record state of a version 3 bundle: the record state and its ghosts.
fn split_v3_state(state: &[u8]) -> (RecordState, Vec<Ghost>) {
    let (r, rest): (RecordState, &[u8]) = postcard::take_from_bytes(state).unwrap();
    let (g, rest): (Vec<Ghost>, &[u8]) = postcard::take_from_bytes(rest).unwrap();
    assert!(rest.is_empty(), "nothing follows the ghosts");
    (r, g)
}

/// A refusal vector: (name, expect, reason, comment, bytes).
type Refusal = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
);

/// The version 3 vectors (and version 1 and 4 around them) made from `v3-snapshot-ghosts`,
/// and (second) those whose record state has bytes after it (SPEC §4.1, §13). The
/// malformed ones are plaintext bundles with the same items, one record state changed,
/// signed by the admin as the snapshot was.
fn ghost_vectors(snapshot: &[u8]) -> (Vec<Refusal>, Vec<Refusal>) {
    let items = items(snapshot, &DatasetKey(KEY), &BTreeMap::new()).unwrap();
    let Item::Receipt(receipt) = &items[0] else {
        panic!("a receipt first")
    };
    let head = receipt.get(MemberId::ADMIN);
    let chain = items
        .iter()
        .find_map(|i| match i {
            Item::SnapshotChain {
                author, seq, hash, ..
            } if *author == MemberId::ADMIN && *seq == head => Some(*hash),
            _ => None,
        })
        .expect("the admin's chain at its head");
    // The same items with the record state of `visits/id` replaced by what `change` makes
    // of its record state and ghosts.
    let changed = |id: &str, change: &dyn Fn(RecordState, Vec<Ghost>) -> Vec<u8>| {
        let mut found = false;
        let out: Vec<Item> = items
            .iter()
            .map(|i| match i {
                Item::SnapshotRecord {
                    collection,
                    id: rid,
                    state,
                } if collection == "visits" && rid == id => {
                    found = true;
                    let (r, g) = split_v3_state(state);
                    Item::SnapshotRecord {
                        collection: collection.clone(),
                        id: rid.clone(),
                        state: change(r, g),
                    }
                }
                other => other.clone(),
            })
            .collect();
        assert!(found, "visits/{id} is in the snapshot");
        encode(&out)
    };
    let v3 = |r: &RecordState, g: &[Ghost]| {
        postcard::to_extend(&g, postcard::to_allocvec(r).unwrap()).unwrap()
    };
    let signed = |version: u8, salt: u8, body: &[u8]| {
        plain_bundle_version(version, 1, salt, 0, body, head, &chain, ADMIN)
    };
    let mut out = Vec::new();
    out.push((
        "v3-ghosts-out-of-order",
        "payload failure",
        "malformed-item",
        "v3-snapshot-ghosts as a plaintext bundle, with the two ghosts of visits/v1 (fields a and b) in the reverse order",
        signed(
            3,
            0x34,
            &changed("v1", &|r, mut g| {
                assert_eq!(g.len(), 2);
                g.reverse();
                v3(&r, &g)
            }),
        ),
    ));
    out.push((
        "v3-ghost-after-state",
        "snapshot failure",
        "snapshot",
        "v3-snapshot-ghosts as a plaintext bundle, where the ghost of visits/v2 is also under member 2's commit state[2] + 1, a delete from after the state the snapshot reflects",
        signed(
            3,
            0x35,
            &changed("v2", &|r, mut g| {
                let Item::Snapshot { state, .. } = &items[1] else {
                    panic!("the snapshot after the receipt")
                };
                let late = ferry_model::Dot::new(MemberId(2), state.get(MemberId(2)) + 1);
                assert!(g[0].under.iter().all(|d| *d < late));
                g[0].under.push(late);
                v3(&r, &g)
            }),
        ),
    ));
    // Version 1: every record state as version 1 writes it, but visits/v1 with its ghosts
    // after it, as version 3 writes them.
    let v1_body = {
        let out: Vec<Item> = items
            .iter()
            .map(|i| match i {
                Item::SnapshotRecord {
                    collection,
                    id,
                    state,
                } => {
                    let (r, g) = split_v3_state(state);
                    let state = if collection == "visits" && id == "v1" {
                        assert!(!g.is_empty());
                        state.clone()
                    } else {
                        postcard::to_allocvec(&r).unwrap()
                    };
                    Item::SnapshotRecord {
                        collection: collection.clone(),
                        id: id.clone(),
                        state,
                    }
                }
                other => other.clone(),
            })
            .collect();
        encode(&out)
    };
    let mut v4 = snapshot.to_vec();
    v4[1] = 4;
    out.push((
        "unknown-version-4",
        "version failure",
        "unsupported-version",
        "v3-snapshot-ghosts with the version byte set to 4",
        v4,
    ));
    let trailing = vec![
        (
            "v1-snapshot-with-ghost-bytes",
            "payload failure",
            "malformed-item",
            "v3-snapshot-ghosts as a plaintext version 1 bundle: the record states as version 1 writes them, but visits/v1 followed by its ghosts (version 1 allows no bytes after a record state)",
            signed(1, 0x36, &v1_body),
        ),
        (
            "v3-bytes-after-ghosts",
            "payload failure",
            "malformed-item",
            "v3-snapshot-ghosts as a plaintext bundle, with one byte (0x00) after the ghosts of visits/v1 (nothing may follow them)",
            signed(
                3,
                0x37,
                &changed("v1", &|r, g| [v3(&r, &g), vec![0]].concat()),
            ),
        ),
    ];
    (out, trailing)
}

/// A plaintext bundle (SPEC §3.3) around any payload, signed by `signer` as member `sender`
/// whose chain hash at `head` is `chain`.
fn plain_bundle(
    sender: u32,
    salt: u8,
    flag: u8,
    body: &[u8],
    head: u64,
    chain: &Hash,
    signer: [u8; 32],
) -> Vec<u8> {
    plain_bundle_version(1, sender, salt, flag, body, head, chain, signer)
}

/// [`plain_bundle`] of format `version` (the version byte is signed like every header byte).
#[allow(clippy::too_many_arguments)]
fn plain_bundle_version(
    version: u8,
    sender: u32,
    salt: u8,
    flag: u8,
    body: &[u8],
    head: u64,
    chain: &Hash,
    signer: [u8; 32],
) -> Vec<u8> {
    let header = Header::new(DATASET, MemberId(sender), [salt; 16]).encode_version(true, version);
    let mut h = blake3::Hasher::new_derive_key("ferry v1 bundle digest");
    h.update(&header);
    h.update(&[flag]);
    h.update(body);
    let digest = *h.finalize().as_bytes();
    let sig = SecretKey::from_bytes(signer).sign(&head_message(
        DATASET,
        MemberId(sender),
        head,
        chain,
        Some(&digest),
    ));
    [header, vec![flag], body.to_vec(), sig.0.to_vec()].concat()
}

fn encode(items: &[Item]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|i| postcard::to_allocvec(i).unwrap())
        .collect()
}

/// Malformed plaintext bundles, one per way a reader refuses a payload: (name, expect,
/// reason, comment, bytes). Each is signed by the admin over what it claims, so the payload
/// is what fails.
fn malformed() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
)> {
    let st = admin_with(1);
    let c1 = st.commit(MemberId::ADMIN, 1).unwrap().unwrap();
    let c2 = st.commit(MemberId::ADMIN, 2).unwrap().unwrap();
    let receipt = |n: u64| Item::Receipt([(MemberId::ADMIN, n)].into_iter().collect());
    let run = |first, count, proof| Item::Run {
        author: MemberId::ADMIN,
        first,
        count,
        proof,
    };
    let commit = |c: &ferry_sync::StoredCommit| Item::Commit(c.bytes.clone());
    let signed =
        |salt: u8, flag: u8, body: &[u8]| plain_bundle(1, salt, flag, body, 2, &c2.hash, ADMIN);
    let mut out = Vec::new();
    let mut add = |name, expect, reason, comment, bytes| {
        out.push((name, expect, reason, comment, bytes));
    };
    add(
        "payload-no-receipt",
        "payload failure",
        "no-receipt",
        "a run first: the payload must start with the sender's receipt",
        signed(
            0x20,
            0,
            &encode(&[run(1, 2, RunProof::Sender), commit(&c1), commit(&c2)]),
        ),
    );
    add(
        "payload-commit-outside-run",
        "payload failure",
        "commit-outside-run",
        "a commit right after the receipt, with no run before it",
        signed(0x21, 0, &encode(&[receipt(2), commit(&c1)])),
    );
    add(
        "payload-run-cut-short",
        "payload failure",
        "run-cut-short",
        "a run of 2 commits, but the payload ends after the first",
        signed(
            0x22,
            0,
            &encode(&[receipt(2), run(1, 2, RunProof::Sender), commit(&c1)]),
        ),
    );
    add(
        "payload-two-runs-one-author",
        "payload failure",
        "two-runs-one-author",
        "the admin's commits 1 and 2 as two runs",
        signed(
            0x23,
            0,
            &encode(&[
                receipt(2),
                run(
                    1,
                    1,
                    RunProof::Head(ferry_model::crypto::Signature([0; 64])),
                ),
                commit(&c1),
                run(2, 1, RunProof::Sender),
                commit(&c2),
            ]),
        ),
    );
    add(
        "payload-empty-run",
        "payload failure",
        "empty-run",
        "a run of 0 commits",
        signed(0x24, 0, &encode(&[receipt(2), run(1, 0, RunProof::Sender)])),
    );
    add(
        "payload-bad-varint",
        "payload failure",
        "malformed-item",
        "a receipt whose member count is a varint of 11 bytes",
        signed(0x25, 0, &[&[0x00][..], &[0x80; 10], &[0x00]].concat()),
    );
    add(
        "payload-unknown-item",
        "payload failure",
        "malformed-item",
        "after the receipt, an item of kind 7 (there are 7 kinds, 0 to 6)",
        signed(0x26, 0, &[encode(&[receipt(2)]), vec![7, 0]].concat()),
    );
    add(
        "payload-ends-inside-item",
        "payload failure",
        "ends-inside-item",
        "the last commit item says 200 bytes and holds 20",
        signed(
            0x27,
            0,
            &[
                encode(&[receipt(2), run(1, 2, RunProof::Sender), commit(&c1)]),
                vec![3, 200, 1],
                c2.bytes[..20].to_vec(),
            ]
            .concat(),
        ),
    );
    add(
        "payload-unknown-flag",
        "payload failure",
        "unknown-flag",
        "compression flag 2",
        signed(
            0x28,
            2,
            &encode(&[
                receipt(2),
                run(1, 2, RunProof::Sender),
                commit(&c1),
                commit(&c2),
            ]),
        ),
    );
    add(
        "payload-no-signature",
        "payload failure",
        "no-signature",
        "a header, the flag and 10 bytes: too short to end in a signature",
        {
            let mut b = Header::new(DATASET, MemberId::ADMIN, [0x29; 16]).encode_as(true);
            b.push(0);
            b.extend_from_slice(&[0; 10]);
            b
        },
    );
    add(
        "payload-trailing-data",
        "payload failure",
        "trailing-data",
        "a zstd payload with one byte after the end of its frame",
        {
            let st = admin_with(20);
            let head = st.stored().unwrap().get(MemberId::ADMIN);
            let hash = st.commit(MemberId::ADMIN, head).unwrap().unwrap().hash;
            let good = export_with(
                &st,
                0x2a,
                KEY,
                ADMIN,
                WriteOptions {
                    plaintext: true,
                    ..WriteOptions::default()
                },
            );
            assert_eq!(good[27], 1, "the payload is compressed");
            let frame = &good[28..good.len() - 64];
            plain_bundle(1, 0x2a, 1, &[frame, &[0]].concat(), head, &hash, ADMIN)
        },
    );
    add(
        "limit-peer-receipts",
        "limit failure",
        "peer-receipts",
        "65 peer receipts (the limit is 64)",
        signed(
            0x2b,
            0,
            &encode(
                &std::iter::once(receipt(2))
                    .chain(
                        (0..65).map(|i| Item::PeerReceipt(MemberId(2 + i), VersionVector::new())),
                    )
                    .collect::<Vec<_>>(),
            ),
        ),
    );
    add(
        "payload-second-receipt",
        "payload failure",
        "item-order",
        "two receipts",
        signed(0x2d, 0, &encode(&[receipt(2), receipt(2)])),
    );
    add(
        "payload-run-starts-at-zero",
        "payload failure",
        "bad-run",
        "a run whose first commit is number 0",
        signed(
            0x2e,
            0,
            &encode(&[
                receipt(2),
                run(0, 2, RunProof::Sender),
                commit(&c1),
                commit(&c2),
            ]),
        ),
    );
    add(
        "payload-sender-proof",
        "payload failure",
        "sender-proof",
        "a run vouched for by the sender that ends before the sender's head",
        signed(
            0x2f,
            0,
            &encode(&[receipt(2), run(1, 1, RunProof::Sender), commit(&c1)]),
        ),
    );
    add(
        "payload-bad-zstd",
        "payload failure",
        "bad-zstd",
        "flag 1, but the body is not a zstd frame",
        signed(0x30, 1, b"not a zstd frame, only text"),
    );
    add(
        "header-non-minimal-sender",
        "header failure",
        "bad-header",
        "the sender number 1 written in two bytes (0x81 0x00)",
        {
            let mut b = b"P\x01".to_vec();
            b.extend_from_slice(&DATASET.0);
            b.extend_from_slice(&[0x81, 0x00]);
            b.extend_from_slice(&[0x31; 16]);
            let good = signed(0x31, 0, &encode(&[receipt(2)]));
            b.extend_from_slice(&good[27..]);
            b
        },
    );
    add(
        "limit-version-vector",
        "limit failure",
        "count",
        "a receipt that says it holds 65 537 members (the limit is 65 536)",
        signed(0x32, 0, &[0x00, 0x81, 0x80, 0x04]),
    );
    add(
        "membership-forged-invitation",
        "membership failure",
        "membership",
        "member 2's join, under an invitation signed by a key that is not the admin's",
        {
            let inv = ferry_sync::Invitation::issue(
                &SecretKey::from_bytes([0x07; 32]),
                "hq",
                DATASET,
                "vector dataset",
                KEY,
                MemberId(2),
                "clinic-x",
                [0x08; 32],
            );
            let mut m = SimNode::join(&inv, 44, T0 + 1000);
            m.options.plaintext = true;
            m.bundle_with(&[Coverage {
                author: MemberId(2),
                first: 1,
                last: 1,
            }])
        },
    );
    add(
        "snapshot-chain-not-at-state",
        "snapshot failure",
        "snapshot",
        "an admin snapshot whose state says commit 2 of the admin but whose chain is at commit 1",
        {
            let body = encode(&[
                receipt(1),
                Item::Snapshot {
                    state: [(MemberId::ADMIN, 2)].into_iter().collect(),
                    compacted: [(MemberId::ADMIN, 1)].into_iter().collect(),
                },
                Item::SnapshotChain {
                    author: MemberId::ADMIN,
                    seq: 1,
                    hash: c1.hash,
                    hlc: c1.hlc,
                    deps: VersionVector::new(),
                    names: Vec::new(),
                    first: c1.bytes.clone(),
                },
            ]);
            plain_bundle(1, 0x33, 0, &body, 1, &c1.hash, ADMIN)
        },
    );
    add(
        "commit-clock-backwards",
        "commit failure",
        "clock",
        "valid structure and signature, but commit 2's clock does not advance past commit 1's",
        {
            let bad = [&[0x00][..], &c2.bytes[2..]].concat();
            assert_eq!(&c2.bytes[..3], &[0xe8, 0x07, 0x00], "ms 1000, counter 0");
            let h2 = chain_next(&c1.hash, 2, &bad);
            let body = encode(&[
                receipt(2),
                run(1, 2, RunProof::Sender),
                commit(&c1),
                Item::Commit(bad),
            ]);
            plain_bundle(1, 0x2c, 0, &body, 2, &h2, ADMIN)
        },
    );
    out
}

/// The dictionary a vector's reader holds (header `dictionary: K HEX`, SPEC §18).
fn vector_dictionary(h: &BTreeMap<String, String>) -> Option<(u32, Vec<u8>)> {
    let (k, bytes) = h.get("dictionary")?.split_once(' ')?;
    Some((k.parse().unwrap(), unhex(bytes)))
}

/// The decrypted items of a bundle, or the error text.
fn items(
    bytes: &[u8],
    key: &DatasetKey,
    h: &BTreeMap<String, String>,
) -> Result<Vec<Item>, String> {
    let dict = vector_dictionary(h);
    let mut r = BundleReader::open(bytes)
        .and_then(|o| o.decrypt_with(key, |k| dict.filter(|(n, _)| *n == k).map(|(_, b)| b)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(i) = r.next_item().map_err(|e| e.to_string())? {
        out.push(i);
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn parse(file: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    let split = file
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a blank line after the header");
    let head = std::str::from_utf8(&file[..split]).expect("utf-8 header");
    let fields = head
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    (fields, file[split + 2..].to_vec())
}

/// How a reader that holds nothing of the dataset takes a vector: the runs it stored and
/// whether the bundle was authenticated (a bundle it cannot check yet is not a failure: it
/// is kept unused, `Ok` with no runs and `false`), or the failure's class and reason
/// (SPEC §12).
fn classify(
    bytes: &[u8],
    h: &BTreeMap<String, String>,
) -> Result<(Vec<Coverage>, bool), (&'static str, &'static str)> {
    let e = Engine {
        dataset: DatasetId(unhex(&h["dataset"]).try_into().unwrap()),
        admin_key: PublicKey(unhex(&h["admin-key"]).try_into().unwrap()),
        me: MemberId(h.get("member").map_or(99, |m| m.parse().unwrap())),
    };
    let keys = reader_keys(bytes, h)?;
    let mut st = MemStorage::default();
    // The dictionary the reader holds (SPEC §18), as an admin's `_dicts/K` record.
    if let Some((k, dict)) = vector_dictionary(h) {
        let stamp = ferry_model::Stamp::ranked(
            ferry_model::Dot::new(MemberId::ADMIN, 1),
            Hlc::from_parts(T0, 0),
            None,
        );
        let state = ferry_model::RecordState::made_by(
            stamp,
            &VersionVector::new(),
            vec![Op::Set("zstd".into(), Value::Bytes(dict))],
        );
        st.put_record("_dicts", &k.to_string(), &state).unwrap();
    }
    // Plaintext vectors are read as a `--plaintext` link would.
    let accept = ferry_sync::Accept { plaintext: true };
    let r = e.receive(&mut st, || BundleReader::open(bytes), &keys, accept, T0);
    r.map(|r| match r {
        ferry_sync::Received::Applied(r, _) => (r.runs.clone(), true),
        _ => (Vec::new(), false),
    })
    .map_err(|e| failure(&e))
}

/// The class and reason of a refusal, as SPEC §12 names them.
fn failure(e: &IngestError<MemError>) -> (&'static str, &'static str) {
    match e {
        IngestError::Bundle(b) => match b {
            BundleError::NotABundle => ("header failure", "not-a-bundle"),
            BundleError::BadHeader => ("header failure", "bad-header"),
            BundleError::UnsupportedVersion(_) => ("version failure", "unsupported-version"),
            BundleError::Decrypt { .. } => ("decrypt failure", "chunk"),
            BundleError::NoSignature => ("payload failure", "no-signature"),
            BundleError::Decompress(_) => ("payload failure", "bad-zstd"),
            BundleError::Malformed(m) => {
                let reasons = [
                    ("unknown compression flag", "unknown-flag"),
                    ("must start with the sender's receipt", "no-receipt"),
                    ("no receipt", "no-receipt"),
                    ("a second receipt", "item-order"),
                    ("out of place", "item-order"),
                    ("a peer receipt after", "item-order"),
                    ("a commit outside a run", "commit-outside-run"),
                    ("a run starts before", "run-cut-short"),
                    ("before the end of a run", "run-cut-short"),
                    ("an empty run", "empty-run"),
                    ("commit numbers start at 1", "bad-run"),
                    ("past the largest commit number", "bad-run"),
                    ("vouched for by the sender", "sender-proof"),
                    ("two runs of the same author", "two-runs-one-author"),
                    ("more runs than", "too-many-runs"),
                    ("payload ends inside an item", "ends-inside-item"),
                    ("data after the end", "trailing-data"),
                    ("an item exceeds the size limit", "item-too-large"),
                ];
                (
                    "payload failure",
                    reasons
                        .iter()
                        .find(|(text, _)| m.contains(text))
                        .map_or("malformed-item", |&(_, r)| r),
                )
            }
            BundleError::Limit(m) if m.contains("peer receipts") => {
                ("limit failure", "peer-receipts")
            }
            BundleError::Limit(m) if m.contains("inflates") => ("limit failure", "expansion"),
            BundleError::Limit(_) => ("limit failure", "count"),
            BundleError::NoDictionary(_) => ("dictionary failure", "no-dictionary"),
            _ => ("other failure", "other"),
        },
        IngestError::Commit { source, .. } => (
            "commit failure",
            match source {
                CommitError::Malformed(_) => "malformed",
                CommitError::TrailingBytes(_) => "trailing-bytes",
                CommitError::TooLarge(_) | CommitError::Limit(_) => "limit",
                CommitError::ClockNotMonotonic => "clock",
                CommitError::BadDeps(_) => "deps",
                CommitError::BadName(_) => "name",
                CommitError::BadRecordId => "record-id",
                CommitError::BadMembership(_) => "membership",
                CommitError::BadValue => "value",
                CommitError::Columnar(_) => "columnar",
                _ => "other",
            },
        ),
        IngestError::BadSignature { .. } => ("signature failure", "bad-signature"),
        IngestError::WrongDataset { .. } => ("dataset failure", "another-dataset"),
        IngestError::NotMember { .. } | IngestError::WrongGenesis => {
            ("membership failure", "membership")
        }
        IngestError::BadSnapshot(_) => ("snapshot failure", "snapshot"),
        IngestError::NoEpochKey { .. } => ("key failure", "no-key"),
        IngestError::RemovedHere { .. } => ("key failure", "removed"),
        _ => ("other failure", "other"),
    }
}

/// The vectors' file names, sorted.
fn vector_paths() -> Vec<PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir())
        .expect("bundles/vectors exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "vectors are missing: {names:?}");
    names
}

/// The decoded content a vector pins (SPEC §12), read by the Rust reader.
fn pinned(path: &std::path::Path) -> Json {
    let (h, bytes) = parse(&std::fs::read(path).unwrap());
    match classify(&bytes, &h) {
        Ok((_, authenticated)) => {
            let got = decoded(&bytes, &h);
            assert_eq!(
                got["authenticated"],
                json!(authenticated),
                "{path:?}: the engine and the vector decoding disagree on the signature"
            );
            got
        }
        Err((class, reason)) => json!({"expect": class, "reason": reason}),
    }
}

fn pairs(vv: &VersionVector) -> Json {
    vv.iter().map(|(m, n)| json!([m.0, n])).collect()
}

fn clock(h: Hlc) -> Json {
    json!([h.ms(), h.counter()])
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({ "int": i }),
        Value::Float(x) => json!({ "float": format!("{:016x}", x.to_bits()) }),
        Value::Str(s) => json!({ "str": s }),
        Value::Bytes(b) => json!({ "bytes": hex(b) }),
    }
}

fn op_json(op: &Op) -> Json {
    match op {
        Op::Set(f, v) => json!({"op": "set", "field": f, "value": value_json(v)}),
        Op::Incr(f, n) => json!({"op": "incr", "field": f, "by": n}),
        Op::Add(f, e) => json!({"op": "add", "field": f, "elem": e}),
        Op::Remove(f, e) => json!({"op": "remove", "field": f, "elem": e}),
        Op::Delete => json!({"op": "delete"}),
    }
}

fn commit_json(c: &Commit, hash: &Hash) -> Json {
    let changes: Vec<Json> = c
        .changes
        .iter()
        .map(|ch| match ch {
            Change::Record {
                collection,
                id,
                ops,
            } => json!({"record": {
                "collection": collection,
                "id": id,
                "ops": ops.iter().map(op_json).collect::<Vec<_>>(),
            }}),
            Change::Genesis {
                name,
                label,
                admin_key,
            } => json!({"genesis": {"name": name, "label": label, "admin_key": hex(&admin_key.0)}}),
            Change::Join(p) => json!({"join": {
                "member": p.invite.member.0,
                "label": p.invite.label,
                "invite_key": hex(&p.invite.invite_key.0),
                "cert": hex(&p.invite.cert.0),
                "member_key": hex(&p.member_key.0),
                "join_sig": hex(&p.join_sig.0),
            }}),
        })
        .collect();
    json!({
        "author": c.author.0,
        "seq": c.seq,
        "hlc": clock(c.hlc),
        "deps": pairs(&c.deps),
        "seen": c.seen.map(|s| s.ms()),
        "changes": changes,
        "hash": hex(&hash.0),
    })
}

fn stamp_json(s: &Stamp) -> Json {
    json!({"author": s.dot.author.0, "seq": s.dot.seq, "hlc": clock(s.hlc), "rank": s.rank})
}

fn sibling_json(s: &Sibling) -> Json {
    let mut j = stamp_json(&s.stamp);
    let (k, v) = match &s.entry {
        Entry::Value(v) => ("value", value_json(v)),
        Entry::Incr(n) => ("incr", json!(n)),
        Entry::Elem(e) => ("elem", json!(e)),
    };
    j[k] = v;
    j
}

/// A snapshot record (SPEC §12.2); `ghosts` for a version 3 bundle (§13).
fn record_json(collection: &str, id: &str, r: &RecordState, ghosts: Option<&[Ghost]>) -> Json {
    let mut j = json!({
        "collection": collection,
        "id": id,
        "fields": r.fields.iter().map(|(f, sibs)| json!({
            "field": f,
            "siblings": sibs.iter().map(sibling_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tombstones": r.tombstones.iter().map(stamp_json).collect::<Vec<_>>(),
        "firsts": r.firsts.iter().map(|(f, s)| json!({"field": f, "sibling": sibling_json(s)}))
            .collect::<Vec<_>>(),
    });
    if let Some(ghosts) = ghosts {
        j["ghosts"] = ghosts
            .iter()
            .map(|g| {
                json!({
                    "field": g.field,
                    "sibling": sibling_json(&g.sibling),
                    "under": g.under.iter().map(|d| json!([d.author.0, d.seq])).collect::<Vec<_>>(),
                    "buried": g.buried.iter().map(|(m, n)| json!([m.0, n])).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    j
}

/// A snapshot record state of a bundle of format `version` as SPEC §4.1 and §13 define it:
/// `postcard(RecordState)`, in version 3 followed by its ghosts in canonical order, and
/// nothing after. `None` when the bytes are not that.
fn snapshot_record(state: &[u8], version: u8) -> Option<(RecordState, Option<Vec<Ghost>>)> {
    let (r, rest): (RecordState, &[u8]) = postcard::take_from_bytes(state).ok()?;
    if version != ferry_bundle::VERSION_GHOSTS {
        return rest.is_empty().then_some((r, None));
    }
    let (g, rest): (Vec<Ghost>, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    (rest.is_empty() && Ghost::canonical(&g)).then_some((r, Some(g)))
}

/// The key commit 1 proves (SPEC §6), if it proves one.
fn first_key(c: &Commit, dataset: DatasetId, admin: &PublicKey) -> Option<PublicKey> {
    match c.changes.first()? {
        Change::Genesis { admin_key, .. } if admin_key == admin => Some(*admin_key),
        Change::Join(p) if p.verify(dataset, c.author, admin).is_ok() => Some(p.member_key),
        _ => None,
    }
}

/// A vector's decoded content (SPEC §12): what a reader holding nothing of the dataset
/// decodes, with every signature it can check checked. Only for bundles that are not refused.
fn decoded(bytes: &[u8], h: &BTreeMap<String, String>) -> Json {
    let dataset = DatasetId(unhex(&h["dataset"]).try_into().unwrap());
    let admin = PublicKey(unhex(&h["admin-key"]).try_into().unwrap());
    let ring = reader_keys(bytes, h).expect("a success vector's reader holds its key");
    let opener = BundleReader::open(bytes).unwrap();
    let key = ring
        .key(opener.header().epoch_id())
        .expect("a success vector's key")
        .clone();
    let plaintext = opener.is_plaintext();
    let header = opener.header().clone();
    let sender = header.sender;
    // The header's bytes as they are: the version byte is the second (SPEC §3).
    let raw = header.encode_version(plaintext, bytes[1]);
    let (flag, dict_number) = if plaintext {
        (bytes[raw.len()], bytes[raw.len() + 1])
    } else {
        let sealed = &bytes[raw.len()..];
        let n = sealed
            .len()
            .min(ferry_bundle::stream::CHUNK + ferry_bundle::stream::TAG);
        let mut chunk = sealed[..n].to_vec();
        let last = n == sealed.len();
        assert!(ferry_bundle::stream::decrypt_chunk(
            &key.bundle_key(&raw),
            0,
            last,
            &mut chunk
        ));
        (chunk[0], chunk[1])
    };
    let dict = vector_dictionary(h);
    let mut r = opener
        .decrypt_with(&key, |k| dict.filter(|(n, _)| *n == k).map(|(_, b)| b))
        .unwrap();
    let version = r.version();
    let mut receipt = VersionVector::new();
    let mut peer_receipts = Vec::new();
    let mut snapshot: Option<Json> = None;
    let mut contexts: HashMap<MemberId, ChainContext> = HashMap::new();
    let mut keys: HashMap<MemberId, PublicKey> = HashMap::new();
    let mut hashes: HashMap<(MemberId, u64), Hash> = HashMap::new();
    // (author, first, count, proof, commits)
    let mut runs: Vec<(MemberId, u64, u64, RunProof, Vec<Json>)> = Vec::new();
    let decode = |author: MemberId,
                  ctx: &mut ChainContext,
                  bytes: &CommitBytes,
                  keys: &mut HashMap<MemberId, PublicKey>,
                  hashes: &mut HashMap<(MemberId, u64), Hash>| {
        let c = ctx
            .decode_bytes(bytes)
            .expect("a success vector's commits decode");
        if c.seq == 1 {
            if let Some(k) = first_key(&c, dataset, &admin) {
                keys.insert(author, k);
            }
        }
        hashes.insert((author, c.seq), ctx.hash);
        commit_json(&c, &ctx.hash)
    };
    while let Some(item) = r.next_item().unwrap() {
        match item {
            Item::Receipt(vv) => receipt = vv,
            Item::PeerReceipt(m, vv) => {
                peer_receipts.push(json!({"member": m.0, "vector": pairs(&vv)}))
            }
            Item::Snapshot { state, compacted } => {
                snapshot = Some(json!({
                    "state": pairs(&state),
                    "compacted": pairs(&compacted),
                    "chains": [],
                    "records": [],
                }))
            }
            Item::SnapshotChain {
                author,
                seq,
                hash,
                hlc,
                deps,
                names,
                first,
            } => {
                let mut ctx = ChainContext::new(dataset, author);
                let first = CommitBytes::row(first);
                let first_json = decode(author, &mut ctx, &first, &mut keys, &mut hashes);
                hashes.insert((author, seq), hash);
                contexts.insert(
                    author,
                    ChainContext::from_parts(author, seq, hash, hlc, deps.clone(), names.clone()),
                );
                let s = snapshot.as_mut().unwrap();
                s["chains"].as_array_mut().unwrap().push(json!({
                    "author": author.0,
                    "seq": seq,
                    "hash": hex(&hash.0),
                    "hlc": clock(hlc),
                    "deps": pairs(&deps),
                    "names": names,
                    "first": first_json,
                }));
            }
            Item::SnapshotRecord {
                collection,
                id,
                state,
            } => {
                // Only an installed snapshot's records must decode (SPEC §4.1).
                let rec = match snapshot_record(&state, version) {
                    Some((r, g)) => record_json(&collection, &id, &r, g.as_deref()),
                    None => json!({"collection": collection, "id": id, "bytes": hex(&state)}),
                };
                let s = snapshot.as_mut().unwrap();
                s["records"].as_array_mut().unwrap().push(rec);
            }
            Item::Run {
                author,
                first,
                count,
                proof,
            } => {
                if first == 1 {
                    contexts.insert(author, ChainContext::new(dataset, author));
                } else if contexts.get(&author).is_none_or(|c| c.seq + 1 != first) {
                    contexts.remove(&author);
                }
                runs.push((author, first, count, proof, Vec::new()));
            }
            item @ (Item::Commit(_) | Item::ColumnarCommit(_)) => {
                let bytes = match item {
                    Item::Commit(b) => CommitBytes::row(b),
                    Item::ColumnarCommit(b) => CommitBytes {
                        form: Form::Columnar,
                        bytes: b,
                    },
                    _ => unreachable!(),
                };
                let (author, first, _, _, commits) = runs.last_mut().unwrap();
                let seq = *first + commits.len() as u64;
                let j = match contexts.get_mut(author) {
                    Some(ctx) => decode(*author, ctx, &bytes, &mut keys, &mut hashes),
                    None => json!({"author": author.0, "seq": seq, "bytes": hex(&bytes.bytes)}),
                };
                commits.push(j);
            }
        }
    }
    let trailer = r.finish().unwrap();
    let verify = |author: MemberId,
                  seq: u64,
                  digest: Option<&[u8; 32]>,
                  sig: &ferry_model::crypto::Signature| {
        let hash = if seq == 0 {
            Some(chain_root(dataset, author))
        } else {
            hashes.get(&(author, seq)).copied()
        };
        match (keys.get(&author), hash) {
            (Some(k), Some(hash)) => {
                json!(k.verify(&head_message(dataset, author, seq, &hash, digest), sig))
            }
            _ => Json::Null,
        }
    };
    let head = receipt.get(sender);
    let authenticated = verify(sender, head, Some(&trailer.digest), &trailer.signature);
    let runs: Vec<Json> = runs
        .into_iter()
        .map(
            |(author, first, count, proof, commits): (MemberId, u64, u64, RunProof, Vec<Json>)| {
                let end = first + count - 1;
                let (proof_json, verified) = match &proof {
                    RunProof::Sender => (json!({"kind": "sender"}), authenticated.clone()),
                    RunProof::Head(sig) => (
                        json!({"kind": "head", "sig": hex(&sig.0)}),
                        verify(author, end, None, sig),
                    ),
                    RunProof::Bundle { digest, sig } => (
                        json!({"kind": "bundle", "digest": hex(digest), "sig": hex(&sig.0)}),
                        verify(author, end, Some(digest), sig),
                    ),
                };
                json!({
                    "author": author.0,
                    "first": first,
                    "count": count,
                    "proof": proof_json,
                    "verified": verified,
                    "commits": commits,
                })
            },
        )
        .collect();
    let mut header_json = json!({
        "magic": if plaintext { "P" } else { "F" },
        "version": version,
        "dataset": hex(&header.dataset.0),
        "sender": sender.0,
        "salt": hex(&header.salt[..ferry_bundle::salt_len(bytes[1])]),
    });
    let has_epoch = [
        ferry_bundle::VERSION_EPOCHS,
        ferry_bundle::VERSION_ADMINS,
        ferry_bundle::VERSION_KEYS,
        ferry_bundle::VERSION_COLUMNS,
        ferry_bundle::VERSION_DICTS,
    ]
    .contains(&version);
    if has_epoch {
        header_json["epoch"] = json!(header.epoch);
        header_json["grant"] = Json::Null;
    }
    if version >= ferry_bundle::VERSION_KEYS {
        header_json["signer"] = json!(header.signer.0);
    }
    if has_epoch && !header.grant.is_empty() {
        let signer = h
            .get("signer-key")
            .map(|k| PublicKey(unhex(k).try_into().unwrap()));
        let key_of = |s: MemberId| match signer {
            Some(k) => Some(k),
            None => (s == MemberId::ADMIN).then_some(admin),
        };
        let g = ferry_bundle::EpochGrant::from_bytes(
            &header.grant,
            dataset,
            header.grant_format,
            key_of,
        )
        .expect("a success vector's grant");
        header_json["grant"] = json!({
            "epoch": g.body.epoch,
            "admin_seq": g.body.admin_seq,
            "at_ms": g.body.at_ms,
            "removed": g.body.removed.iter().map(|r| json!([r.member.0, r.cutoff])).collect::<Vec<_>>(),
            "ephemeral": hex(&g.body.ephemeral),
            "members": g.body.wraps.iter().map(|w| w.member.0).collect::<Vec<_>>(),
            "signature": hex(&g.signature.0),
        });
        if version >= ferry_bundle::VERSION_COLUMNS {
            header_json["grant"]["format"] = json!(header.grant_format);
        }
        if header.grant_format == ferry_bundle::VERSION_KEYS {
            // The epochs whose keys it carries, as the reader opened them.
            let member = MemberId(h["member"].parse().unwrap());
            let secret = SecretKey::from_bytes(unhex(&h["member-secret"]).try_into().unwrap());
            let opened = g
                .open(dataset, member, &secret)
                .expect("the reader opens it");
            header_json["grant"]["signer"] = json!(g.body.signer.0);
            header_json["grant"]["history"] = json!(
                opened
                    .iter()
                    .filter(|(e, _)| *e != g.body.id())
                    .map(|(e, _)| json!([e.number, e.signer.0]))
                    .collect::<Vec<_>>()
            );
        }
    }
    // Flag 2 names its dictionary (SPEC §18; the vectors' dictionaries are numbered below 128).
    let dictionary = (flag == 2).then_some(dict_number);
    let mut out = json!({
        "expect": "success",
        "header": header_json,
        "compressed": flag != 0,
        "receipt": pairs(&receipt),
        "peer_receipts": peer_receipts,
        "snapshot": snapshot,
        "runs": runs,
        "digest": hex(&trailer.digest),
        "signature": hex(&trailer.signature.0),
        "authenticated": authenticated.as_bool().unwrap_or(false),
    });
    if let Some(k) = dictionary {
        out["dictionary"] = json!(k);
    }
    out
}

/// JSON for people: what fits on a line (up to 100 columns) stays on one line, the rest is
/// indented by two spaces; a large file keeps each commit's change on one line. (Readers
/// compare parsed JSON, not text.)
fn pretty(v: &Json) -> String {
    let text = layout(v, 0, usize::MAX);
    if text.lines().count() <= 2000 {
        return text;
    }
    layout(v, 0, 12)
}

fn layout(v: &Json, indent: usize, flat_from: usize) -> String {
    let flat = serde_json::to_string(v).unwrap();
    if indent + flat.len() <= 100 || indent >= flat_from {
        return flat;
    }
    let pad = " ".repeat(indent + 2);
    let (open, close, parts): (&str, &str, Vec<String>) = match v {
        Json::Array(a) => (
            "[",
            "]",
            a.iter()
                .map(|x| pad.clone() + &layout(x, indent + 2, flat_from))
                .collect(),
        ),
        Json::Object(o) => (
            "{",
            "}",
            o.iter()
                .map(|(k, x)| {
                    let key = serde_json::to_string(k).unwrap();
                    format!("{pad}{key}: {}", layout(x, indent + 2, flat_from))
                })
                .collect(),
        ),
        _ => return flat,
    };
    format!(
        "{open}\n{}\n{}{close}",
        parts.join(",\n"),
        " ".repeat(indent)
    )
}

#[test]
fn every_frozen_vector_decodes_as_its_header_expects() {
    let write = std::env::var_os("FERRY_WRITE_VECTORS").is_some();
    for path in vector_paths() {
        let (h, bytes) = parse(&std::fs::read(&path).unwrap());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let got = classify(&bytes, &h);
        match (h["expect"].as_str(), &got) {
            ("success", Ok((runs, authenticated))) => {
                let runs: Vec<String> = runs
                    .iter()
                    .map(|c| format!("{}:{}-{}", c.author.0, c.first, c.last))
                    .collect();
                assert_eq!(runs.join(" "), h["commits"], "{name}: runs");
                let want = h.get("authenticated").map_or("true", |s| s.as_str());
                assert_eq!(authenticated.to_string(), want, "{name}: signature");
            }
            (want, Err((got, reason))) if want == *got => {
                if let Some(r) = h.get("reason") {
                    assert_eq!(r, reason, "{name}: reason");
                }
            }
            (want, got) => panic!("{name}: expected {want}, got {got:?}"),
        }
        // The decoded content it pins (SPEC §12).
        let content = pinned(&path);
        let json_path = path.with_extension("json");
        if !json_path.exists() {
            assert!(
                write,
                "{name}.json is missing; run with FERRY_WRITE_VECTORS=1 to add it"
            );
            let text = pretty(&content) + "\n";
            std::fs::write(&json_path, text).unwrap();
            continue;
        }
        let frozen: Json = serde_json::from_slice(&std::fs::read(&json_path).unwrap())
            .unwrap_or_else(|e| panic!("{name}.json: {e}"));
        assert_eq!(
            frozen, content,
            "{name}: the reader decodes differently from {name}.json"
        );
    }
}

#[test]
fn the_writer_still_produces_the_frozen_vectors() {
    let write = std::env::var_os("FERRY_WRITE_VECTORS").is_some();
    for (name, header, bytes) in generate() {
        let path = dir().join(name);
        if !path.exists() {
            assert!(
                write,
                "vector {name} is missing; run with FERRY_WRITE_VECTORS=1 to add it"
            );
            let mut file = Vec::new();
            for (k, v) in &header {
                file.extend_from_slice(format!("{k}: {v}\n").as_bytes());
            }
            file.push(b'\n');
            file.extend_from_slice(&bytes);
            std::fs::write(&path, file).unwrap();
            continue;
        }
        let (h, frozen) = parse(&std::fs::read(&path).unwrap());
        for (k, v) in &header {
            assert_eq!(&h[*k], v, "{name}: header {k}");
        }
        if frozen == bytes {
            continue;
        }
        // Another zstd release may compress differently; that is still format v1. What must
        // not change is the header and the decrypted items.
        let key = DatasetKey(unhex(&h["dataset-key"]).try_into().unwrap());
        assert_eq!(
            items(&frozen, &key, &h),
            items(&bytes, &key, &h),
            "{name}: this build writes different content than the frozen vector. If the format \
             changed on purpose, it needs a new version number (bundles/SPEC.md §9), not an edit."
        );
        assert_eq!(frozen[..27], bytes[..27], "{name}: header bytes changed");
    }
}

#[test]
fn a_relayed_run_keeps_the_authors_proof_and_verifies_on_a_third_replica() {
    // Not a frozen file (it needs two signers), but the same rules: the relay does not sign
    // the admin's commits; the third replica checks the admin's original signature.
    let st = admin_with(3);
    let bundle = export(&st, 9, KEY, ADMIN);
    let mut relay = MemStorage::default();
    let relay_engine = Engine {
        me: MemberId(2),
        ..engine()
    };
    relay_engine
        .receive(
            &mut relay,
            || BundleReader::open(&bundle[..]),
            &ferry_bundle::Keyring::new(DatasetKey(KEY)),
            Default::default(),
            T0,
        )
        .unwrap();
    let proof = relay
        .proof(MemberId::ADMIN, 2)
        .unwrap()
        .expect("the sender's bundle signature is kept");
    assert!(proof.digest.is_some());
    let header = Header::new(DATASET, MemberId(2), [1; 16]);
    let mut w = BundleWriter::new(
        Vec::new(),
        &header,
        &DatasetKey(KEY),
        WriteOptions::default(),
    )
    .unwrap();
    w.push(&Item::Receipt(Default::default())).unwrap();
    w.push(&Item::Run {
        author: MemberId::ADMIN,
        first: 1,
        count: 2,
        proof: ferry_bundle::RunProof::Bundle {
            digest: proof.digest.unwrap(),
            sig: proof.sig,
        },
    })
    .unwrap();
    for seq in 1..=2 {
        w.push(&Item::Commit(
            relay.commit(MemberId::ADMIN, seq).unwrap().unwrap().bytes,
        ))
        .unwrap();
    }
    let relay_key = SecretKey::from_bytes([0x02; 32]);
    let root = ferry_model::commit::chain_root(DATASET, MemberId(2));
    let (relayed, _) = w
        .finish(|d| relay_key.sign(&head_message(DATASET, MemberId(2), 0, &root, Some(d))))
        .unwrap();
    let mut third = MemStorage::default();
    // The third replica knows the relay (its join arrived earlier); the relay holds nothing
    // of its own, so its signature is over its chain root.
    third
        .put_member(&ferry_sync::MemberInfo {
            member: MemberId(2),
            key: relay_key.public(),
            label: "relay".into(),
        })
        .unwrap();
    let r = Engine {
        me: MemberId(3),
        ..engine()
    }
    .receive(
        &mut third,
        || BundleReader::open(&relayed[..]),
        &ferry_bundle::Keyring::new(DatasetKey(KEY)),
        Default::default(),
        T0,
    )
    .unwrap();
    let ferry_sync::Received::Applied(r, _) = r else {
        panic!("the relayed bundle applies: {r:?}");
    };
    assert_eq!(
        r.new, 2,
        "the admin's commits, checked by the admin's own signature"
    );
    // A relay that tampers with the admin's commits is caught by that signature.
    let mut fourth = MemStorage::default();
    fourth
        .put_member(&ferry_sync::MemberInfo {
            member: MemberId(2),
            key: relay_key.public(),
            label: "relay".into(),
        })
        .unwrap();
    let forged_proof = {
        let mut w = BundleWriter::new(
            Vec::new(),
            &Header {
                salt: [2; 16],
                ..header
            },
            &DatasetKey(KEY),
            WriteOptions::default(),
        )
        .unwrap();
        w.push(&Item::Receipt(Default::default())).unwrap();
        w.push(&Item::Run {
            author: MemberId::ADMIN,
            first: 1,
            count: 2,
            proof: ferry_bundle::RunProof::Head(relay_key.sign(b"not the admin's")),
        })
        .unwrap();
        for seq in 1..=2 {
            w.push(&Item::Commit(
                relay.commit(MemberId::ADMIN, seq).unwrap().unwrap().bytes,
            ))
            .unwrap();
        }
        w.finish(|d| relay_key.sign(&head_message(DATASET, MemberId(2), 0, &root, Some(d))))
            .unwrap()
            .0
    };
    // A relay that forwards the admin's commits under a proof the admin did not make: they are
    // left out (the relay cannot vouch for them), and nothing of them is stored.
    let r = Engine {
        me: MemberId(4),
        ..engine()
    }
    .receive(
        &mut fourth,
        || BundleReader::open(&forged_proof[..]),
        &ferry_bundle::Keyring::new(DatasetKey(KEY)),
        Default::default(),
        T0,
    )
    .unwrap();
    let ferry_sync::Received::Applied(r, _) = r else {
        panic!("the relay's own signature is good: {r:?}");
    };
    assert_eq!((r.new, r.skipped_runs.len()), (0, 1), "{r:?}");
    assert_eq!(fourth.stored().unwrap().get(MemberId::ADMIN), 0);
}

/// The code that defines the wire format, without comments or whitespace: whole files up to
/// their tests, and the `// wire-format: begin`/`end` regions of the others. Every file that
/// decides a byte a writer produces or a bundle a reader accepts is here: the header, stream,
/// items, commits, values, record states and their snapshot codec, clocks, ids, hashes, keys
/// and signatures (and strict verification), fork evidence, and the limits.
fn wire_format_source() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let whole = [
        "crates/bundle/src/header.rs",
        "crates/bundle/src/item.rs",
        "crates/bundle/src/stream.rs",
        // The commit codec and every check a commit must pass (SPEC §5).
        "crates/model/src/commit.rs",
        // The limits of SPEC §8 as decoding enforces them.
        "crates/model/src/bounded.rs",
        // The columnar form and its column codecs (SPEC §17).
        "crates/model/src/commit/columnar.rs",
        "crates/model/src/columns.rs",
    ];
    let marked = [
        "crates/bundle/src/lib.rs",
        "crates/model/src/lib.rs",
        "crates/sync/src/fork.rs",
        // The dataset's dictionaries (SPEC §18).
        "crates/sync/src/dicts.rs",
        "crates/bundle/src/writer.rs",
        "crates/bundle/src/reader.rs",
        // Key epochs and grants (SPEC §14).
        "crates/bundle/src/grant.rs",
        "crates/model/src/record.rs",
        // The snapshot record codec (SPEC §4.1).
        "crates/sync/src/engine.rs",
        "crates/model/src/value.rs",
        "crates/model/src/crypto.rs",
        "crates/model/src/clock.rs",
        "crates/model/src/id.rs",
    ];
    let code = |text: &str| -> String {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//"))
            .collect::<String>()
            .split_whitespace()
            .collect()
    };
    let mut out = String::new();
    for f in whole {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let body = text.split("#[cfg(test)]").next().unwrap();
        out.push_str(&code(body));
    }
    for f in marked {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let mut regions = 0;
        for part in text.split("// wire-format: begin").skip(1) {
            let region = part.split("// wire-format: end").next().unwrap();
            out.push_str(&code(region));
            regions += 1;
        }
        assert!(regions > 0, "{f} lost its wire-format markers");
    }
    out
}

#[test]
fn the_wire_format_source_is_the_one_the_spec_describes() {
    let digest = blake3::hash(wire_format_source().as_bytes()).to_hex()[..16].to_string();
    let spec = std::fs::read_to_string(dir().join("../SPEC.md")).unwrap();
    let recorded = spec
        .lines()
        .find_map(|l| l.strip_prefix("Wire-format source digest: `"))
        .and_then(|l| l.strip_suffix('`'))
        .expect("SPEC.md records the wire-format source digest");
    assert_eq!(
        recorded, digest,
        "the code that defines the bundle format changed. If the bytes on the wire changed, \
         that is a new format version (SPEC.md §9): bump VERSION, add vectors, update SPEC.md. \
         If only the code changed, not the bytes (every vector still passes), update the \
         digest in bundles/SPEC.md to {digest}."
    );
}

/// The proof that SPEC.md is enough: a second decoder, written in Python from the spec alone
/// (`bundles/decoder/ferry_decode.py`), decodes every vector to exactly the content it pins.
/// A missing Python or package fails this test; it never skips.
#[test]
#[ignore = "needs python3-cryptography and python3-zstandard (tests/run installs them)"]
fn the_second_decoder_written_from_the_spec_decodes_every_vector_as_pinned() {
    let decoder = dir().join("../decoder/ferry_decode.py");
    for path in vector_paths() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(&decoder)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("/usr/bin/python3 does not run ({e}): install python3 (tests/run does)")
            });
        assert!(
            out.status.success(),
            "{name}: the Python decoder failed ({}); it needs the Debian packages \
             python3-cryptography and python3-zstandard:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: the Python decoder printed no JSON: {e}"));
        let pinned: Json =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        assert_eq!(
            got, pinned,
            "{name}: the decoder written from SPEC.md disagrees with the pinned content; \
             if the Rust reader is right, SPEC.md is missing or wrong about something"
        );
    }
}
