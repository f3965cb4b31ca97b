//! ferry's fuzz targets, as plain functions: one per parser that takes bytes from strangers.
//!
//! Each function takes any bytes and must never panic (bad input is refused with an error,
//! never a panic); where the code promises a property (a decoded value encodes to bytes
//! that decode to the same value), the function asserts it. The cargo-fuzz project in
//! `fuzz/` (its own workspace, built with `cargo fuzz build -s none` on the stable
//! toolchain) calls them; `tests/replay.rs` replays the committed corpora (`corpus/NAME/`)
//! and crashers (`crashes/NAME/`) through them in every `cargo test`. See ARCHITECTURE.md,
//! "Fuzzing".
//!
//! The bundle targets use the frozen vectors' dataset (`bundles/vectors/`: dataset
//! `ferryvec`, dataset key `42…42`, admin secret `01…01`), so the vectors are seeds.

use ferry_bundle::stream::EncryptWriter;
use ferry_bundle::{BundleReader, DatasetKey, Header, Item, VERSION, VERSION_GHOSTS};
use ferry_model::commit::{chain_next, chain_root};
use ferry_model::crypto::{SecretKey, head_message};
use ferry_model::record::{Ghosts, RecordState};
use ferry_model::{Change, DatasetId, Hash, MemberId, Op, Value};
use ferry_node::invite::{self, InviteCode, Parsed};
use ferry_sync::mem::MemStorage;
use ferry_sync::sim::{SimNode, SplitMix};
use ferry_sync::{Accept, Engine, MemberInfo, Storage};
use ferry_transport_email::mime;
use ferry_transport_sms::{frame, text};
use std::io::Write;
use std::sync::OnceLock;

/// The frozen vectors' dataset.
pub const DATASET: DatasetId = DatasetId(*b"ferryvec");
/// The frozen vectors' dataset key.
pub const KEY: [u8; 32] = [0x42; 32];
/// The frozen vectors' admin secret key.
pub const ADMIN: [u8; 32] = [0x01; 32];
/// The vectors' clock (ms since the epoch).
pub const T0: u64 = 1_763_000_000_000;
/// The one-time code the invitation target opens sealed files with.
pub const CODE: [u8; 8] = [7; 8];
/// When the fuzzed receivers take a bundle.
const NOW: u64 = T0 + 86_400_000;

/// A fuzz target: takes any bytes, never panics.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder of its corpus and crashers, the cargo-fuzz target)
/// and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("bundle_sealed", bundle_sealed),
    ("bundle_plain", bundle_plain),
    ("bundle_sealed_payload", bundle_sealed_payload),
    ("snapshot_record", snapshot_record),
    ("epoch_grant", epoch_grant),
    ("invitation", invitation),
    ("sms_text", sms_text),
    ("sms_frame", sms_frame),
    ("serial_link", serial_link),
    ("email", email),
    ("ferry_toml", ferry_toml),
    ("columnar_commit", columnar_commit),
];

/// The secret key of member `m` in the fixture dataset: the vectors' admin for member 1,
/// and for others the key [`SimNode::join`] draws from seed `1000 + m` (how [`fixture`]
/// makes them).
pub fn member_secret(m: MemberId) -> SecretKey {
    if m == MemberId::ADMIN {
        return SecretKey::from_bytes(ADMIN);
    }
    SecretKey::from_bytes(SplitMix(1000 + u64::from(m.0)).bytes())
}

fn engine(me: MemberId) -> Engine {
    Engine {
        dataset: DATASET,
        admin_key: SecretKey::from_bytes(ADMIN).public(),
        me,
    }
}

/// The vectors' admin as a [`SimNode`] (its genesis is the vectors' own).
pub fn admin_node() -> SimNode {
    let mut store = MemStorage::default();
    engine(MemberId::ADMIN)
        .commit_local(
            &mut store,
            vec![Change::Genesis {
                name: "vector dataset".into(),
                label: "hq".into(),
                admin_key: SecretKey::from_bytes(ADMIN).public(),
            }],
            T0,
        )
        .expect("genesis");
    SimNode {
        engine: engine(MemberId::ADMIN),
        store,
        secret: SecretKey::from_bytes(ADMIN),
        key: ferry_bundle::Keyring::new(DatasetKey(KEY)),
        label: "hq".into(),
        dataset_name: "vector dataset".into(),
        rng: SplitMix(11),
        now_ms: T0,
        options: Default::default(),
        accept: Accept { plaintext: true },
        waiting: Vec::new(),
    }
}

/// A small dataset's life in the vectors' dataset: the admin, member 2 and member 3 (keys
/// from [`member_secret`]) after they joined and exchanged a few records; member 3 has
/// received everything up to then.
pub fn fixture_nodes() -> (SimNode, SimNode, SimNode) {
    let mut hq = admin_node();
    let inv2 = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    let inv3 = hq.invite(MemberId(3), "clinic-b", T0 + 2);
    let mut a = SimNode::join(&inv2, 1002, T0 + 10);
    let mut b = SimNode::join(&inv3, 1003, T0 + 11);
    for m in [&mut a, &mut b] {
        m.accept = Accept { plaintext: true };
        let join = m.bundle(&[]);
        let _ = hq.ingest(&join);
    }
    hq.write(
        "visits",
        "v-1",
        ferry_sync::sim::reference_record("p-000001"),
        T0 + 100,
    );
    a.write(
        "visits",
        "v-2",
        vec![Op::Set("village".into(), Value::Str("Obunga".into()))],
        T0 + 110,
    );
    let from_a = a.bundle(&[]);
    let _ = hq.ingest(&from_a);
    let from_hq = hq.bundle(&[]);
    let _ = b.ingest(&from_hq);
    let _ = a.ingest(&from_hq);
    (hq, a, b)
}

struct Fixture {
    /// Member 3 of [`fixture_nodes`]: holds the admin's and member 2's history.
    joined: MemStorage,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        joined: fixture_nodes().2.store,
    })
}

/// The two receivers every bundle target feeds: one that holds nothing (as the vectors are
/// checked) and member 3 of [`fixture_nodes`].
fn receivers() -> [(Engine, MemStorage); 2] {
    let mut with_dictionary = fixture().joined.clone();
    hold_dictionary(&mut with_dictionary);
    [
        (engine(MemberId(99)), MemStorage::default()),
        (engine(MemberId(3)), with_dictionary),
    ]
}

/// The dataset dictionary number 1 the fuzzing receivers hold (bundles/SPEC.md §18): raw
/// content shaped like commits of visits. A payload with flag 2 and number 1 decodes with it.
pub fn fuzz_dictionary() -> Vec<u8> {
    b"\x06village\x06Obunga\x03age\x0a\x09diagnosis\x07malaria v-2026-000123 p-004512 ".repeat(24)
}

/// Puts [`fuzz_dictionary`] into `store` as the admin's `_dicts/1`.
fn hold_dictionary(store: &mut MemStorage) {
    let stamp = ferry_model::Stamp::ranked(
        ferry_model::Dot::new(MemberId::ADMIN, 1),
        ferry_model::Hlc::from_parts(NOW, 0),
        None,
    );
    let state = ferry_model::RecordState::made_by(
        stamp,
        &ferry_model::VersionVector::new(),
        vec![ferry_model::Op::Set(
            "zstd".into(),
            ferry_model::Value::Bytes(fuzz_dictionary()),
        )],
    );
    let _ = store.put_record("_dicts", "1", &state);
}

fn receive(engine: &Engine, store: &mut MemStorage, bytes: &[u8], plaintext: bool) {
    let _ = engine.receive(
        store,
        || BundleReader::open(bytes),
        &ferry_bundle::Keyring::new(DatasetKey(KEY)),
        Accept { plaintext },
        NOW,
    );
}

/// A whole received bundle (header, sealed stream), as a link hands it over.
pub fn bundle_sealed(data: &[u8]) {
    for (e, mut st) in receivers() {
        receive(&e, &mut st, data, false);
    }
}

/// A whole received bundle accepted on a `--plaintext` link (plaintext bundles can be
/// altered by anyone, so the fuzzer reaches every item; the signature still fails).
pub fn bundle_plain(data: &[u8]) {
    for (e, mut st) in receivers() {
        receive(&e, &mut st, data, true);
    }
}

/// The decrypted payload of a sealed bundle (compression flag, items), sealed properly with
/// the vectors' dataset key and signed with the sender's key, so the fuzzer gets past the
/// AEAD and the signature. The first byte chooses the header: the sender is its low four
/// bits, bit 4 asks for format version 3 (ghosts), bit 5 for version 11 (columnar commits),
/// bit 6 for version 13 (a payload with flag 2 decodes with [`fuzz_dictionary`]).
pub fn bundle_sealed_payload(data: &[u8]) {
    let Some((&b0, payload)) = data.split_first() else {
        return;
    };
    let sender = MemberId(u32::from(b0 & 0x0f));
    let version = if b0 & 0x40 != 0 {
        ferry_bundle::VERSION_DICTS
    } else if b0 & 0x20 != 0 {
        ferry_bundle::VERSION_COLUMNS
    } else if b0 & 0x10 != 0 {
        VERSION_GHOSTS
    } else {
        VERSION
    };
    let header = Header::new(DATASET, sender, [0x5a; 16]).encode_version(false, version);
    for (e, mut st) in receivers() {
        let bytes = signed_bundle(&st, &header, sender, payload);
        receive(&e, &mut st, &bytes, false);
    }
}

/// The sealed bundle of `header` and `payload` followed by the sender's signature over the
/// head the receiver holding `store` will check it against (an all-zero signature when no
/// such head can be found: the receiver refuses it as it would anyway).
pub fn signed_bundle(
    store: &MemStorage,
    header: &[u8],
    sender: MemberId,
    payload: &[u8],
) -> Vec<u8> {
    let mut stream = payload.to_vec();
    stream.extend_from_slice(&[0; 64]);
    let unsigned = seal(header, &stream);
    let Some((head, hash, digest)) = head_to_sign(store, &unsigned, sender) else {
        return unsigned;
    };
    let sig =
        member_secret(sender).sign(&head_message(DATASET, sender, head, &hash, Some(&digest)));
    stream.truncate(payload.len());
    stream.extend_from_slice(&sig.0);
    seal(header, &stream)
}

/// `header` followed by `stream` sealed in chunks under the bundle key.
fn seal(header: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut w = EncryptWriter::new(header.to_vec(), DatasetKey(KEY).bundle_key(header));
    match w.write_all(stream) {
        Ok(()) => w.finish().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The sender's head (commit number, chain hash) as a receiver holding `store` computes it
/// for the signature check, and the bundle's digest; `None` if the bundle does not read.
fn head_to_sign(
    store: &MemStorage,
    bundle: &[u8],
    sender: MemberId,
) -> Option<(u64, Hash, [u8; 32])> {
    let mut r = BundleReader::open(bundle)
        .ok()?
        .decrypt_with(&DatasetKey(KEY), |k| (k == 1).then(fuzz_dictionary))
        .ok()?;
    let Some(Item::Receipt(receipt)) = r.next_item().ok()? else {
        return None;
    };
    let head = receipt.get(sender);
    let (mut run_hash, mut snap_hash) = (None, None);
    // The sender's run being read: next commit number, last one, chain hash so far.
    let mut run: Option<(u64, u64, Option<Hash>)> = None;
    while let Some(item) = r.next_item().ok()? {
        match item {
            Item::Run {
                author,
                first,
                count,
                ..
            } => {
                run = None;
                if author == sender && first >= 1 && count >= 1 {
                    let base = if first == 1 {
                        Some(chain_root(DATASET, sender))
                    } else {
                        store.commit_hash(sender, first - 1).ok().flatten()
                    };
                    run = Some((first, first.saturating_add(count - 1), base));
                }
            }
            Item::Commit(bytes) => {
                if let Some((seq, last, hash)) = &mut run {
                    *hash = hash.map(|h| chain_next(&h, *seq, &bytes));
                    if *seq >= *last {
                        if *seq == head {
                            run_hash = *hash;
                        }
                        run = None;
                    } else {
                        *seq += 1;
                    }
                }
            }
            Item::SnapshotChain {
                author, seq, hash, ..
            } if author == sender && seq == head => snap_hash = Some(hash),
            _ => {}
        }
    }
    let digest = r.finish().ok()?.digest;
    let known = if head == 0 {
        Some(chain_root(DATASET, sender))
    } else {
        store.commit_hash(sender, head).ok().flatten()
    };
    Some((head, run_hash.or(known).or(snap_hash)?, digest))
}

/// One snapshot record state as a bundle carries it (`ferry_sync::decode_snapshot_record`):
/// the first byte chooses the format version (bit 0: version 3, with ghosts). A record that
/// decodes encodes to bytes that decode again, to the same bytes once more.
pub fn snapshot_record(data: &[u8]) {
    let Some((&b0, bytes)) = data.split_first() else {
        return;
    };
    let version = if b0 & 1 != 0 { VERSION_GHOSTS } else { VERSION };
    let Ok(state) = ferry_sync::decode_snapshot_record("visits", "v-1", bytes, version) else {
        return;
    };
    let once = encode_snapshot_record(&state, version);
    let again = ferry_sync::decode_snapshot_record("visits", "v-1", &once, version)
        .expect("a decoded snapshot record encodes to bytes that decode");
    assert_eq!(encode_snapshot_record(&again, version), once);
}

/// An epoch grant as a bundle header carries it (SPEC §14.1, §16), read in both formats
/// (version 5, member 1's; version 8, any member's): checked against the vectors' member
/// keys (1 the admin, 2 to 4), and offered to a keyring of each of members 1 to 4 (the
/// vectors' v5 grants seal to 1, 2 and 4 and remove 3). A grant that opens gives keys that
/// are stored, and a keyring that encodes and reads back the same.
pub fn epoch_grant(data: &[u8]) {
    let secret = |m: u32| {
        if m == 1 {
            SecretKey::from_bytes(ADMIN)
        } else {
            SecretKey::from_bytes([0x10 + m as u8; 32])
        }
    };
    let key_of = |m: MemberId| (1..=4).contains(&m.0).then(|| secret(m.0).public());
    for version in [ferry_bundle::VERSION_EPOCHS, ferry_bundle::VERSION_KEYS] {
        let Ok(g) = ferry_bundle::EpochGrant::from_bytes(data, DATASET, version, key_of) else {
            continue;
        };
        assert_eq!(
            g.to_bytes(),
            data,
            "a valid grant is its own canonical encoding"
        );
        for m in 1..=4u32 {
            let mut ring = ferry_bundle::Keyring::new(DatasetKey(KEY));
            if let Ok(l) = ring.learn(&g, DATASET, MemberId(m), &secret(m), true) {
                for e in l.epochs {
                    assert!(ring.key(e).is_some());
                }
                let back = ferry_bundle::Keyring::from_bytes(DatasetKey(KEY), &ring.to_bytes())
                    .expect("a keyring reads back");
                assert_eq!(back, ring);
            }
        }
    }
}

/// A record state as a snapshot of format `version` carries it (SPEC §4.1, §13).
pub fn encode_snapshot_record(state: &RecordState, version: u8) -> Vec<u8> {
    let mut bare = state.clone();
    let ghosts = std::mem::take(&mut bare.ghosts);
    let mut out = postcard::to_allocvec(&bare).expect("a record state encodes");
    if version == VERSION_GHOSTS {
        out.extend(postcard::to_allocvec(&Ghosts(ghosts)).expect("ghosts encode"));
    }
    out
}

/// An invitation file as `ferry join` reads it: parsed (a sealed one also with its checksum
/// made right, so its header is reached, and opened when its key derivation is cheap), and
/// a clear one (the same bytes a sealed one holds inside) re-encoded and joined with.
pub fn invitation(data: &[u8]) {
    check_invitation_file(data);
    if data.starts_with(invite::SEALED_MAGIC) && data.len() >= 32 {
        let mut fixed = data.to_vec();
        let at = fixed.len() - 32;
        let sum = blake3::hash(&fixed[..at]);
        fixed[at..].copy_from_slice(sum.as_bytes());
        check_invitation_file(&fixed);
    }
}

fn check_invitation_file(data: &[u8]) {
    match invite::parse(data) {
        Ok(Parsed::Clear(inv)) => {
            let mut again = invite::CLEAR_MAGIC.to_vec();
            again.extend(postcard::to_allocvec(&*inv).expect("an invitation encodes"));
            match invite::parse(&again) {
                Ok(Parsed::Clear(back)) => assert_eq!(back, inv),
                other => panic!("a parsed invitation does not parse again: {other:?}"),
            }
            join(&inv);
        }
        Ok(Parsed::Sealed(sealed)) => {
            // Settings at 24..36 of the header: memory (KiB), passes, lanes.
            let u32_at =
                |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            if u32_at(24) <= 256 && u32_at(28) <= 2 {
                if let Ok(inv) = sealed.open(&InviteCode::from_random(CODE)) {
                    join(&inv);
                }
            }
        }
        Err(_) => {}
    }
}

/// What `ferry join` does with an opened invitation, in memory: checks the join proof and
/// writes the first commit.
fn join(inv: &ferry_sync::Invitation) {
    let device = member_secret(MemberId(2)).public();
    let proof = inv.join_proof(&device);
    if proof
        .verify(inv.dataset, inv.member(), &inv.admin_key)
        .is_err()
    {
        return;
    }
    let engine = Engine {
        dataset: inv.dataset,
        admin_key: inv.admin_key,
        me: inv.member(),
    };
    let mut store = MemStorage::default();
    let admin = MemberInfo {
        member: MemberId::ADMIN,
        key: inv.admin_key,
        label: inv.admin_label.clone(),
    };
    if store.put_member(&admin).is_ok() {
        let _ = engine.commit_local(&mut store, vec![Change::Join(proof)], T0);
    }
}

/// The text of a received SMS, as the transport reads it: ferry's alphabet decoded to a
/// frame (or the text taken as a frame, or a word of it, as when a gateway adds a footer).
/// Any bytes encode to a text that decodes to them.
pub fn sms_text(data: &[u8]) {
    let t = String::from_utf8_lossy(data);
    let t = t.trim();
    if let Ok(bytes) = text::decode(t) {
        sms_frame(&bytes);
    }
    let _ = frame::decode(t.as_bytes());
    for w in t.split_whitespace().take(16) {
        if let Ok(bytes) = text::decode(w) {
            let _ = frame::decode(&bytes);
        }
    }
    let encoded = text::encode(data);
    assert_eq!(text::decode(&encoded).as_deref(), Ok(data));
}

/// One SMS frame (binary, or decoded from text): decoded as it is and with its CRC made
/// right; repair requests and "gone" notices decoded re-encode to frames that decode.
pub fn sms_frame(data: &[u8]) {
    check_sms_frame(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let at = fixed.len() - 2;
        let crc = frame::crc16(&fixed[..at]).to_be_bytes();
        fixed[at..].copy_from_slice(&crc);
        check_sms_frame(&fixed);
    }
}

fn check_sms_frame(data: &[u8]) {
    let again = match frame::decode(data) {
        Ok(frame::Frame::Missing(m)) => frame::missing_frames(&m, frame::BINARY_FRAME),
        Ok(frame::Frame::Gone(g)) => frame::gone_frames(&g, frame::BINARY_FRAME),
        _ => return,
    };
    for f in again {
        assert!(
            frame::decode(&f).is_ok(),
            "a decoded control frame re-encodes to a frame that does not decode: {f:?}"
        );
    }
}

/// Bytes read from a serial device or TNC: the first byte chooses KISS (bit 0) and whether
/// each frame's CRC is made right first (bit 1), the second where the rest is cut into two
/// reads. Every frame that decodes re-encodes to the same frame.
pub fn serial_link(data: &[u8]) {
    let [b0, b1, rest @ ..] = data else {
        return;
    };
    let cut = if rest.is_empty() {
        0
    } else {
        usize::from(*b1) % rest.len()
    };
    let (one, two) = rest.split_at(cut);
    for piece in ferry_transport_serial::fuzzing::read_link(b0 & 1 != 0, b0 & 2 != 0, &[one, two]) {
        if let ferry_transport_serial::fuzzing::Piece::Frame { round_trips, kind } = piece {
            assert!(
                round_trips,
                "a decoded {kind:?} frame does not re-encode to itself"
            );
        }
    }
}

/// A saved file or received email: a `.eml` file, a saved part, or a bare bundle file
/// (`ferry receive email`, `ferry import`).
pub fn email(data: &[u8]) {
    let _ = mime::classify(data);
    let found = mime::extract_file(data, "fuzz.ferry");
    let _ = found.is_ferry();
    let _ = mime::extract_email(data);
}

/// `ferry.toml`, as the node reads it: TOML, then its `[email]`, `[sms]` and `[serial]`
/// tables as each transport's settings, checked.
pub fn ferry_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    if let Some(toml::Value::Table(t)) = table.get("email") {
        if let Ok(c) = t.clone().try_into::<ferry_transport_email::EmailConfig>() {
            let c = c.overridden_by(Default::default());
            let _ = c.validate();
        }
    }
    if let Some(toml::Value::Table(t)) = table.get("sms") {
        let mut t = t.clone();
        if !t.contains_key("accept_unknown") {
            t.insert("accept_unknown".into(), toml::Value::Boolean(true));
        }
        if let Ok(c) = t.try_into::<ferry_transport_sms::SmsConfig>() {
            let _ = c.validate();
        }
    }
    if let Some(toml::Value::Table(t)) = table.get("serial") {
        if let Ok(c) = t.clone().try_into::<ferry_transport_serial::SerialConfig>() {
            let _ = c.validate();
        }
    }
}

/// The author's chain after its genesis, for [`columnar_commit`].
pub fn columnar_context() -> ferry_model::commit::ChainContext {
    let mut ctx = ferry_model::commit::ChainContext::new(DATASET, MemberId::ADMIN);
    let genesis = ferry_model::Commit {
        author: MemberId::ADMIN,
        seq: 1,
        hlc: ferry_model::Hlc::from_parts(T0, 0),
        deps: ferry_model::VersionVector::new(),
        seen: None,
        changes: vec![Change::Genesis {
            name: "clinics".into(),
            label: "hq".into(),
            admin_key: SecretKey::from_bytes(ADMIN).public(),
        }],
    };
    ctx.encode(&genesis).expect("the genesis encodes");
    ctx
}

/// A commit in the columnar form (bundles/DRAFT-v2.md §4), the author's second: one that
/// decodes encodes again, in both forms, to bytes that decode to the same commit.
pub fn columnar_commit(data: &[u8]) {
    use ferry_model::commit::Form;
    let before = columnar_context();
    let mut ctx = before.clone();
    let Ok(commit) = ctx.decode_as(data, Form::Columnar) else {
        return;
    };
    for form in [Form::Columnar, Form::Row] {
        let mut w = before.clone();
        let again = w
            .encode_as(&commit, form)
            .expect("a decoded commit encodes");
        let back = before.clone().decode_as(&again, form).expect("and decodes");
        assert_eq!(back, commit, "{form:?}");
    }
}
