//! The frozen test vectors of bundle format v1 (`bundles/vectors/`), checked against the
//! real reader and engine.
//!
//! One file per vector: `key: value` header lines, a blank line, then the raw bundle bytes.
//! Vectors are added, never edited. To add a new one, add it to `generate()` and run
//! `FERRY_WRITE_VECTORS=1 cargo test -p ferry-sync --test vectors`: files that exist are
//! never overwritten.

use ferry_bundle::{
    BundleError, BundleReader, BundleWriter, DatasetKey, Header, Item, WriteOptions,
};
use ferry_model::crypto::{PublicKey, SecretKey, head_message};
use ferry_model::{Change, DatasetId, MemberId, Op, Value};
use ferry_sync::mem::MemStorage;
use ferry_sync::plan::Coverage;
use ferry_sync::{Engine, IngestError, Storage};
use std::collections::BTreeMap;
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
            &DatasetKey(key),
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
                    &DatasetKey(KEY),
                    &SecretKey::from_bytes(ADMIN),
                    WriteOptions::default(),
                )
                .unwrap();
            b
        },
    );
    out
}

/// The decrypted items of a bundle, or the error text.
fn items(bytes: &[u8], key: &DatasetKey) -> Result<Vec<Item>, String> {
    let mut r = BundleReader::open(bytes)
        .and_then(|o| o.decrypt(key))
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
/// is kept unused, `Ok` with no runs and `false`), or the kind of failure.
fn classify(bytes: &[u8], h: &BTreeMap<String, String>) -> Result<(Vec<Coverage>, bool), String> {
    let e = Engine {
        dataset: DatasetId(unhex(&h["dataset"]).try_into().unwrap()),
        admin_key: PublicKey(unhex(&h["admin-key"]).try_into().unwrap()),
        me: MemberId(99),
    };
    let key = DatasetKey(unhex(&h["dataset-key"]).try_into().unwrap());
    let mut st = MemStorage::default();
    // Plaintext vectors are read as a `--plaintext` link would.
    let accept = ferry_sync::Accept { plaintext: true };
    let r = e.receive(&mut st, || BundleReader::open(bytes), &key, accept, T0);
    r.map(|r| match r {
        ferry_sync::Received::Applied(r, _) => (r.runs.clone(), true),
        _ => (Vec::new(), false),
    })
    .map_err(|e| {
        match e {
            IngestError::Bundle(BundleError::NotABundle | BundleError::BadHeader) => {
                "header failure"
            }
            IngestError::Bundle(BundleError::UnsupportedVersion(_)) => "version failure",
            IngestError::Bundle(BundleError::Decrypt { .. }) => "decrypt failure",
            IngestError::Bundle(_) => "payload failure",
            IngestError::BadSignature { .. } => "signature failure",
            IngestError::WrongDataset { .. } => "dataset failure",
            _ => "other failure",
        }
        .to_string()
    })
}

#[test]
fn every_frozen_vector_decodes_as_its_header_expects() {
    let mut names: Vec<_> = std::fs::read_dir(dir())
        .expect("bundles/vectors exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "vectors are missing: {names:?}");
    for path in names {
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
            (want, Err(got)) if want == got => {}
            (want, got) => panic!("{name}: expected {want}, got {got:?}"),
        }
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
            items(&frozen, &key),
            items(&bytes, &key),
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
            &DatasetKey(KEY),
            Default::default(),
            T0,
        )
        .unwrap();
    let proof = relay
        .proof(MemberId::ADMIN, 2)
        .unwrap()
        .expect("the sender's bundle signature is kept");
    assert!(proof.digest.is_some());
    let header = Header {
        dataset: DATASET,
        sender: MemberId(2),
        salt: [1; 16],
    };
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
        &DatasetKey(KEY),
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
        &DatasetKey(KEY),
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
/// their tests, and the `// wire-format: begin`/`end` regions of the others.
fn wire_format_source() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let whole = [
        "crates/bundle/src/header.rs",
        "crates/bundle/src/item.rs",
        "crates/bundle/src/stream.rs",
    ];
    let marked = [
        "crates/bundle/src/lib.rs",
        "crates/model/src/lib.rs",
        "crates/sync/src/fork.rs",
        "crates/bundle/src/writer.rs",
        "crates/bundle/src/reader.rs",
        "crates/model/src/commit.rs",
        "crates/model/src/record.rs",
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
