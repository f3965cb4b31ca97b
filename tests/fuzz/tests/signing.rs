//! The payload target re-seals and re-signs what the fuzzer writes: a real bundle's payload
//! must go through it and be applied, or the fuzzer would stop at the signature check.

use ferry_bundle::stream::DecryptReader;
use ferry_bundle::{BundleReader, DatasetKey, Header};
use ferry_fuzz::{DATASET, KEY, T0, signed_bundle};
use ferry_model::MemberId;
use ferry_model::crypto::SecretKey;
use ferry_sync::mem::MemStorage;
use ferry_sync::{Accept, Engine, Received};
use std::io::Read;

#[test]
fn a_vectors_payload_resealed_and_resigned_is_applied() {
    let file = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../bundles/vectors/valid-one-record"),
    )
    .unwrap();
    let at = file.windows(2).position(|w| w == b"\n\n").unwrap();
    let bundle = &file[at + 2..];
    let mut r = bundle;
    let (_, raw) = Header::read(&mut r).unwrap();
    let mut stream = Vec::new();
    DecryptReader::new(r, DatasetKey(KEY).bundle_key(&raw))
        .read_to_end(&mut stream)
        .unwrap();
    stream.truncate(stream.len() - 64);

    let store = MemStorage::default();
    // Another salt than the vector's: a different header, so a different digest to sign.
    let header = Header::new(DATASET, MemberId::ADMIN, [0x5a; 16]).encode();
    let resigned = signed_bundle(&store, &header, MemberId::ADMIN, &stream);
    let engine = Engine {
        dataset: DATASET,
        admin_key: SecretKey::from_bytes(ferry_fuzz::ADMIN).public(),
        me: MemberId(99),
    };
    let mut store = store;
    let got = engine.receive(
        &mut store,
        || BundleReader::open(&resigned[..]),
        &ferry_bundle::Keyring::new(DatasetKey(KEY)),
        Accept { plaintext: false },
        T0 + 1,
    );
    assert!(matches!(got, Ok(Received::Applied(..))), "{got:?}");
}
