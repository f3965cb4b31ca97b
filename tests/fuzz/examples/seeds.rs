//! Writes the fuzz targets' seed inputs into `tests/fuzz/corpus/TARGET/seed-*`: the frozen
//! vectors (`bundles/vectors/`) and real samples made with ferry's own code (bundles of a
//! small dataset's life, snapshots, invitation files, SMS, serial frames, emails,
//! `ferry.toml`). Run once before fuzzing a new target, then fuzz and minimize:
//!
//! ```text
//! cargo run -p ferry-fuzz --example seeds
//! ```
#![allow(clippy::print_stdout)]

use ferry_bundle::stream::DecryptReader;
use ferry_bundle::{BundleReader, DatasetKey, Header, Item, VERSION_GHOSTS};
use ferry_fuzz::{CODE, KEY, T0, fixture_nodes};
use ferry_model::{Change, MemberId, Op, Value};
use ferry_node::invite::{self, InviteCode, KdfParams};
use ferry_transport_email::{DatasetTag, render_emails};
use ferry_transport_sms::{frame, text};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: BTreeMap<(&str, String), Vec<u8>> = BTreeMap::new();

    // The frozen vectors: `key: value` lines, a blank line, the bundle.
    let mut bundles: Vec<(String, Vec<u8>)> = Vec::new();
    let vectors = root.join("../../bundles/vectors");
    let mut names: Vec<_> = std::fs::read_dir(&vectors)
        .expect("bundles/vectors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_none())
        .collect();
    names.sort();
    for path in names {
        let file = std::fs::read(&path).expect("vector");
        let at = file
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("a blank line after the header");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        bundles.push((format!("vector-{name}"), file[at + 2..].to_vec()));
    }

    // A small dataset's life, as the engine writes it.
    let (mut hq, mut a, mut b) = fixture_nodes();
    bundles.push(("hq-to-all".into(), hq.bundle(&[])));
    bundles.push(("clinic-a".into(), a.bundle(&[])));
    bundles.push(("clinic-b".into(), b.bundle(&[])));
    a.options.plaintext = true;
    bundles.push(("clinic-a-plaintext".into(), a.bundle(&[])));
    for (name, version) in [
        ("snapshot-v1", ferry_bundle::VERSION),
        ("snapshot-v3", VERSION_GHOSTS),
    ] {
        let mut options = hq.options;
        options.version = version;
        let (bytes, _) = hq
            .engine
            .export_snapshot(&hq.store, Vec::new(), [3; 16], &hq.key, &hq.secret, options)
            .expect("snapshot");
        bundles.push((name.into(), bytes));
    }

    // HQ's bundle again as a version 13 payload compressed with the fuzzing dictionary
    // (flag 2, number 1), which one of the fuzzing receivers holds.
    if let Some(p) = payload(&hq.bundle(&[])) {
        let items = match p.get(1) {
            Some(0) => p[2..].to_vec(),
            Some(1) => zstd::stream::decode_all(&p[2..]).expect("a zstd payload"),
            _ => panic!("an unknown flag"),
        };
        let mut c = zstd::bulk::Compressor::with_dictionary(19, &ferry_fuzz::fuzz_dictionary())
            .expect("a dictionary");
        c.include_dictid(false).expect("zstd");
        let frame = c.compress(&items).expect("zstd");
        let mut seed = vec![p[0] | 0x40, 2, 1];
        seed.extend(frame);
        seeds.insert(
            ("bundle_sealed_payload", "hq-to-all-dictionary".into()),
            seed,
        );
    }

    for (name, bytes) in &bundles {
        seeds.insert(("bundle_sealed", name.clone()), bytes.clone());
        seeds.insert(("bundle_plain", name.clone()), bytes.clone());
        if let Some(p) = payload(bytes) {
            seeds.insert(("bundle_sealed_payload", name.clone()), p);
        }
        for (i, record) in snapshot_records(bytes).into_iter().enumerate() {
            seeds.insert(("snapshot_record", format!("{name}-{i}")), record);
        }
    }

    // Invitation files: clear (from an earlier ferry), sealed with cheap settings and the
    // code the target opens with, and sealed as `ferry invite` does.
    let inv = hq.invite(MemberId(4), "clinic-c", T0 + 200);
    let mut clear = invite::CLEAR_MAGIC.to_vec();
    clear.extend(postcard::to_allocvec(&inv).expect("encodes"));
    seeds.insert(("invitation", "clear".into()), clear);
    let code = InviteCode::from_random(CODE);
    let cheap = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };
    seeds.insert(
        ("invitation", "sealed-cheap".into()),
        invite::seal(&inv, &code, [4; 16], cheap),
    );
    seeds.insert(
        ("invitation", "sealed-default".into()),
        invite::seal(&inv, &code, [5; 16], KdfParams::DEFAULT),
    );
    // As another admin than the founder writes it (bundles/SPEC.md §15): with an expiry,
    // epoch keys and the founder named in its extras.
    let extras = invite::InviteExtras {
        expires_ms: Some(T0 + 86_400_000),
        epoch_keys: vec![[7; 32]],
        founder: Some(invite::Founder {
            key: [8; 32],
            label: "hq".into(),
        }),
        other_epochs: Vec::new(),
    };
    seeds.insert(
        ("invitation", "sealed-by-second-admin".into()),
        invite::seal_with(&inv, extras.clone(), &code, [6; 16], cheap),
    );
    // After key changes by admins other than the founder (bundles/SPEC.md §16): epochs
    // named by number and signer after the extras.
    let extras = invite::InviteExtras {
        epoch_keys: Vec::new(),
        other_epochs: vec![(1, 2, [9; 32]), (2, 1, [10; 32])],
        ..extras
    };
    seeds.insert(
        ("invitation", "sealed-other-epochs".into()),
        invite::seal_with(&inv, extras, &code, [7; 16], cheap),
    );

    // SMS: a bundle cut into text SMS (first, middle, last part), a one-part message, a
    // repair request and a "gone" notice; binary frames alike.
    let message = &bundles.iter().find(|(n, _)| n == "clinic-a").unwrap().1;
    for (target, frame_bytes) in [("sms_text", 123), ("sms_frame", frame::BINARY_FRAME)] {
        let lay = frame::layout(message.len(), frame_bytes).expect("fits");
        let mut frames = Vec::new();
        for i in [0, lay.count / 2, lay.count - 1] {
            frames.push((format!("part-{i}"), frame::data_frame(7, message, lay, i)));
        }
        let short = b"hello";
        let one = frame::layout(short.len(), frame_bytes).unwrap();
        frames.push(("one-part".into(), frame::data_frame(8, short, one, 0)));
        let missing = frame::Missing {
            tag: 7,
            count: lay.count as u16,
            parts: vec![1, 2, 5],
        };
        for (i, f) in frame::missing_frames(&[missing], frame_bytes)
            .into_iter()
            .enumerate()
        {
            frames.push((format!("missing-{i}"), f));
        }
        let gone = frame::Gone { tag: 9, count: 3 };
        for (i, f) in frame::gone_frames(&[gone], frame_bytes)
            .into_iter()
            .enumerate()
        {
            frames.push((format!("gone-{i}"), f));
        }
        for (name, f) in frames {
            let bytes = if target == "sms_text" {
                text::encode(&f).into_bytes()
            } else {
                f
            };
            seeds.insert((target, name), bytes);
        }
    }

    // Serial: every kind of frame, raw and in KISS, read in two pieces.
    for (kiss, name) in [(false, "raw"), (true, "kiss")] {
        let mut s = vec![u8::from(kiss), 40];
        s.extend(ferry_transport_serial::fuzzing::sample_stream(kiss));
        seeds.insert(("serial_link", name.into()), s);
    }

    // Email: a bundle in one email, and in several parts; a bare bundle file.
    let tag = DatasetTag::new([9; 32]);
    let from = "clinic-a@example.org";
    let to = "hq@example.org";
    let one = render_emails(from, to, &tag, "clinic-a-1.ferry", message, u64::MAX).unwrap();
    seeds.insert(("email", "one.eml".into()), one[0].clone());
    // The smallest email size that fits a part, plus a little: several parts.
    let parts = (1_000..20_000)
        .step_by(100)
        .find_map(|max| render_emails(from, to, &tag, "clinic-a-1.ferry", message, max).ok())
        .expect("some size splits the bundle");
    for (i, e) in parts.into_iter().enumerate().take(3) {
        seeds.insert(("email", format!("part-{i}.eml")), e);
    }
    seeds.insert(("email", "bare.ferry".into()), message.clone());

    // ferry.toml, as README shows it.
    let toml = r#"[email]
from = "clinic-a@example.org"
smtp_url = "smtp://mail.example.org:587"
smtp_user = "clinic-a@example.org"
smtp_password_env = "FERRY_MAIL_PASSWORD"
imap_url = "imaps://mail.example.org:993"

[sms]
gateway = "kannel"
from = "+254712345678"
sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms"
username = "ferry"
password_env = "FERRY_SMS_PASSWORD"
listen = "127.0.0.1:18080"
daily_budget = 50

[serial]
device = "/dev/ttyUSB0"
baud = 1200
kiss = true
callsign = "N0CALL-1"
mtu = 200
"#;
    seeds.insert(("ferry_toml", "readme".into()), toml.as_bytes().to_vec());
    let sms_tls = "[sms]\ngateway = \"gammu\"\nfrom = \"+254712345678\"\nlisten = \"0.0.0.0:18443\"\nlisten_token_env = \"FERRY_SMS_TOKEN\"\ntls_cert = \"/etc/ferry/cert.pem\"\ntls_key = \"/etc/ferry/key.pem\"\n";
    seeds.insert(
        ("ferry_toml", "sms-tls".into()),
        sms_tls.as_bytes().to_vec(),
    );

    // Key epoch 1 (SPEC §14): hq removes clinic-b; its next bundle and its snapshot are
    // version 5 and carry the grant.
    hq.remove(MemberId(3), "stolen", T0 + 300);
    let mut epoch: Vec<(String, Vec<u8>)> = vec![("hq-epoch-1".into(), hq.bundle(&[]))];
    let (bytes, _) = hq
        .engine
        .export_snapshot(
            &hq.store,
            Vec::new(),
            [3; 16],
            &hq.key,
            &hq.secret,
            hq.options,
        )
        .expect("snapshot");
    epoch.push(("snapshot-v5".into(), bytes));
    epoch.extend(
        bundles
            .iter()
            .filter(|(name, b)| name.starts_with("vector-v5") && b.get(1) == Some(&5))
            .cloned(),
    );
    // Version 9 (SPEC §16): grants signed by other admins, histories naming their epochs.
    epoch.extend(
        bundles
            .iter()
            .filter(|(name, b)| name.starts_with("vector-v9") && b.get(1) == Some(&9))
            .cloned(),
    );
    for (name, bytes) in epoch {
        if let Ok(opener) = BundleReader::open(&bytes[..]) {
            if !opener.header().grant.is_empty() {
                seeds.insert(("epoch_grant", name.clone()), opener.header().grant.clone());
            }
        }
        seeds.insert(("bundle_sealed", name.clone()), bytes.clone());
        seeds.insert(("bundle_plain", name), bytes);
    }

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    // Columnar commits (bundles/DRAFT-v2.md §4): a load's visits and every kind of op.
    {
        use ferry_model::commit::Form;
        let rec = |id: String, ops: Vec<Op>| Change::Record {
            collection: "visits".into(),
            id,
            ops,
        };
        let visits: Vec<Change> = (0..40)
            .map(|i| {
                rec(
                    format!("v-{i:04}"),
                    vec![
                        Op::Set(
                            "village".into(),
                            Value::Str(["Kisumu", "Obunga"][i % 2].into()),
                        ),
                        Op::Set(
                            "date".into(),
                            Value::Str(format!("2026-03-{:02}", 1 + i % 28)),
                        ),
                        Op::Set("age".into(), Value::Int(i as i64)),
                        Op::Set("weight".into(), Value::Float(i as f64 / 10.0)),
                        Op::Set("followup".into(), Value::Bool(i % 3 == 0)),
                        Op::Set(
                            "note".into(),
                            if i % 4 == 0 {
                                Value::Null
                            } else {
                                Value::Str(format!("n{i}"))
                            },
                        ),
                    ],
                )
            })
            .collect();
        let mixed = vec![
            rec(
                "a".into(),
                vec![Op::Set("x".into(), Value::Int(1)), Op::Delete],
            ),
            rec(
                "b".into(),
                vec![
                    Op::Incr("n".into(), -4),
                    Op::Add("tags".into(), "tb".into()),
                    Op::Remove("tags".into(), "hiv".into()),
                    Op::Set("raw".into(), Value::Bytes(vec![0, 255])),
                    Op::Set("big".into(), Value::Float(1e300)),
                ],
            ),
        ];
        for (name, changes) in [("visits", visits), ("every-op", mixed)] {
            let commit = ferry_model::Commit {
                author: MemberId::ADMIN,
                seq: 2,
                hlc: ferry_model::Hlc::from_parts(T0 + 1000, 0),
                deps: [(MemberId(2), 3)].into_iter().collect(),
                seen: Some(ferry_model::Hlc::from_parts(T0 - 5000, 0)),
                changes,
            };
            let bytes = ferry_fuzz::columnar_context()
                .encode_as(&commit, Form::Columnar)
                .expect("encodes");
            seeds.insert(("columnar_commit", name.into()), bytes);
        }
    }

    for ((target, name), bytes) in seeds {
        let dir = root.join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        *counts.entry(target).or_default() += 1;
    }
    for (target, n) in counts {
        println!("{target}: {n} seeds");
    }
}

/// A bundle's decrypted payload (without its signature), with the first byte the
/// `bundle_sealed_payload` target reads its header from.
fn payload(bundle: &[u8]) -> Option<Vec<u8>> {
    let opener = BundleReader::open(bundle).ok()?;
    let (plaintext, version) = (opener.is_plaintext(), opener.version());
    let mut r = bundle;
    let (header, raw) = Header::read(&mut r).ok()?;
    let mut stream = Vec::new();
    if plaintext {
        stream = r.to_vec();
    } else {
        DecryptReader::new(r, DatasetKey(KEY).bundle_key(&raw))
            .read_to_end(&mut stream)
            .ok()?;
    }
    stream.truncate(stream.len().checked_sub(64)?);
    let b0 = (header.sender.0 & 0x0f) as u8
        | match version {
            VERSION_GHOSTS => 0x10,
            ferry_bundle::VERSION_COLUMNS => 0x20,
            ferry_bundle::VERSION_DICTS => 0x40,
            _ => 0,
        };
    let mut out = vec![b0];
    out.extend(stream);
    Some(out)
}

/// The snapshot record states a bundle carries, each after the byte that says its version.
fn snapshot_records(bundle: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(opener) = BundleReader::open(bundle) else {
        return out;
    };
    let v = u8::from(opener.version() == VERSION_GHOSTS);
    let Ok(mut r) = opener.decrypt(&DatasetKey(KEY)) else {
        return out;
    };
    while let Ok(Some(item)) = r.next_item() {
        if let Item::SnapshotRecord { state, .. } = item {
            let mut s = vec![v];
            s.extend(state);
            out.push(s);
        }
    }
    out
}
