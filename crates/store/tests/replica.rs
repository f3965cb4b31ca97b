//! The SQLite store behind the sync engine: the same scenarios as in memory, on disk,
//! including a restart between a pending commit and its dependency.

use ferry_bundle::{BundleReader, DatasetKey, WriteOptions};
use ferry_model::crypto::SecretKey;
use ferry_model::{Change, MemberId, Op, Value};
use ferry_store::Store;
use ferry_sync::plan::Coverage;
use ferry_sync::{Engine, Invitation, Storage};

const T0: u64 = 1_763_000_000_000;

struct Node {
    engine: Engine,
    store: Store,
    secret: SecretKey,
    key: DatasetKey,
}

impl Node {
    fn write(&mut self, id: &str, field: &str, v: Value, now: u64) {
        let mut tx = self.store.transaction(now).unwrap();
        self.engine
            .commit_local(
                &mut tx,
                vec![Change::Record {
                    collection: "visits".into(),
                    id: id.into(),
                    ops: vec![Op::Set(field.into(), v)],
                }],
                now,
            )
            .unwrap();
        tx.commit().unwrap();
    }

    fn bundle(&mut self, runs: &[Coverage]) -> Vec<u8> {
        let tx = self.store.read().unwrap();
        let (bytes, _) = self
            .engine
            .export(
                &tx,
                runs,
                &[],
                Vec::new(),
                [7; 16],
                &ferry_bundle::Keyring::new(self.key.clone()),
                &self.secret,
                WriteOptions::default(),
            )
            .unwrap();
        bytes
    }

    fn ingest(&mut self, bytes: &[u8]) -> ferry_sync::IngestReport {
        let mut tx = self.store.transaction(T0).unwrap();
        let r = self
            .engine
            .receive(
                &mut tx,
                || BundleReader::open(bytes),
                &ferry_bundle::Keyring::new(self.key.clone()),
                Default::default(),
                T0,
            )
            .unwrap();
        tx.commit().unwrap();
        match r {
            ferry_sync::Received::Applied(r, _) => *r,
            other => panic!("expected the bundle to apply: {other:?}"),
        }
    }

    fn value(&mut self, id: &str, field: &str) -> Option<Value> {
        let tx = self.store.read().unwrap();
        tx.record("visits", id)
            .unwrap()
            .and_then(|r| r.winner(field).cloned())
    }
}

fn run(author: u32, first: u64, last: u64) -> Coverage {
    Coverage {
        author: MemberId(author),
        first,
        last,
    }
}

#[test]
fn a_stashed_relayed_commit_survives_a_restart_and_applies_when_its_predecessors_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let admin = SecretKey::from_bytes([1; 32]);
    let dataset = ferry_model::DatasetId([2; 8]);
    let key = DatasetKey([3; 32]);
    let mut hq = Node {
        engine: Engine {
            dataset,
            admin_key: admin.public(),
            me: MemberId(1),
        },
        store: Store::open(&dir.path().join("hq.db")).unwrap(),
        secret: admin.clone(),
        key: key.clone(),
    };
    {
        let mut tx = hq.store.transaction(T0).unwrap();
        hq.engine
            .commit_local(
                &mut tx,
                vec![Change::Genesis {
                    name: "d".into(),
                    label: "hq".into(),
                    admin_key: admin.public(),
                }],
                T0,
            )
            .unwrap();
        tx.commit().unwrap();
    }
    let inv = Invitation::issue(&admin, "hq", dataset, "d", key.0, MemberId(2), "a", [4; 32]);
    let path_a = dir.path().join("a.db");
    let device = SecretKey::from_bytes([5; 32]);
    let mut a = Node {
        engine: Engine {
            dataset,
            admin_key: admin.public(),
            me: MemberId(2),
        },
        store: Store::open(&path_a).unwrap(),
        secret: device.clone(),
        key: key.clone(),
    };
    {
        let mut tx = a.store.transaction(T0).unwrap();
        a.engine
            .commit_local(
                &mut tx,
                vec![Change::Join(inv.join_proof(&device.public()))],
                T0 + 1,
            )
            .unwrap();
        tx.commit().unwrap();
    }
    hq.write("v-1", "village", Value::Str("Kisumu".into()), T0 + 10);
    // HQ's bundle as it was after its commit 2 (on a stick that reaches A late).
    let early = hq.bundle(&[run(1, 1, 2)]);
    hq.write("v-1", "village", Value::Str("Kisumu Ndogo".into()), T0 + 20);
    // Clinic B (member 3) has HQ's whole history and relays only HQ's commit 3 to A, with
    // B's own join, so A can check B's signature and HQ's forwarded one.
    let inv_b = Invitation::issue(&admin, "hq", dataset, "d", key.0, MemberId(3), "b", [6; 32]);
    let device_b = SecretKey::from_bytes([7; 32]);
    let mut b = Node {
        engine: Engine {
            dataset,
            admin_key: admin.public(),
            me: MemberId(3),
        },
        store: Store::open(&dir.path().join("b.db")).unwrap(),
        secret: device_b.clone(),
        key: key.clone(),
    };
    {
        let mut tx = b.store.transaction(T0).unwrap();
        b.engine
            .commit_local(
                &mut tx,
                vec![Change::Join(inv_b.join_proof(&device_b.public()))],
                T0 + 2,
            )
            .unwrap();
        tx.commit().unwrap();
    }
    b.ingest(&hq.bundle(&[run(1, 1, 3)]));
    let late = b.bundle(&[run(3, 1, 1), run(1, 3, 3)]);
    let r = a.ingest(&late);
    assert_eq!(
        r.stashed, 1,
        "HQ's commits 1–2 are missing: commit 3 cannot be checked yet"
    );
    assert_eq!(a.value("v-1", "village"), None);
    // Restart.
    drop(a.store);
    a.store = Store::open(&path_a).unwrap();
    a.ingest(&early);
    assert_eq!(
        a.value("v-1", "village"),
        Some(Value::Str("Kisumu Ndogo".into()))
    );
    let tx = a.store.read().unwrap();
    assert!(tx.stashed().unwrap().is_empty());
    assert_eq!(tx.applied().unwrap().get(MemberId(1)), 3);
}

#[test]
fn a_rolled_back_transaction_leaves_no_trace_even_in_the_name_cache() {
    let mut store = Store::open_in_memory().unwrap();
    {
        let mut tx = store.transaction(T0).unwrap();
        let mut r = ferry_model::RecordState::default();
        r.apply(
            ferry_model::Stamp::new(ferry_model::Dot::new(MemberId(1), 1), ferry_model::Hlc(1)),
            &Default::default(),
            &Op::Set("f".into(), Value::Int(1)),
        );
        tx.put_record("c", "1", &r).unwrap();
        // dropped: rolled back
    }
    let mut tx = store.transaction(T0).unwrap();
    assert_eq!(tx.record("c", "1").unwrap(), None);
    assert!(tx.collections().unwrap().is_empty());
    let mut r = ferry_model::RecordState::default();
    r.apply(
        ferry_model::Stamp::new(ferry_model::Dot::new(MemberId(1), 1), ferry_model::Hlc(1)),
        &Default::default(),
        &Op::Set("g".into(), Value::Int(2)),
    );
    tx.put_record("c", "2", &r).unwrap();
    tx.commit().unwrap();
    let tx = store.read().unwrap();
    assert_eq!(tx.record("c", "2").unwrap(), Some(r));
}

#[test]
fn two_processes_on_one_database_do_not_trip_over_each_others_names() {
    // A listener keeps the database open while `ferry put` in another process adds names:
    // each connection's name cache must notice the other's additions.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let mut listener = Store::open(&path).unwrap();
    let mut put = Store::open(&path).unwrap();
    let state = |field: &str, v: i64| {
        let mut r = ferry_model::RecordState::default();
        r.apply(
            ferry_model::Stamp::new(ferry_model::Dot::new(MemberId(1), 1), ferry_model::Hlc(1)),
            &Default::default(),
            &Op::Set(field.into(), Value::Int(v)),
        );
        r
    };
    let write = |store: &mut Store, coll: &str, id: &str, r: &ferry_model::RecordState| {
        let mut tx = store.transaction(T0).unwrap();
        tx.put_record(coll, id, r).unwrap();
        tx.commit().unwrap();
    };
    // Both load their caches.
    write(&mut listener, "visits", "0", &state("a", 0));
    assert!(put.read().unwrap().record("visits", "0").unwrap().is_some());
    // Each adds names the other has not seen, twice over.
    write(&mut put, "visits", "1", &state("weight_kg", 1));
    write(&mut listener, "visits", "2", &state("muac_mm", 2));
    write(&mut put, "households", "1", &state("muac_mm", 3));
    write(&mut listener, "households", "2", &state("weight_kg", 4));
    for store in [&mut listener, &mut put] {
        let tx = store.read().unwrap();
        assert_eq!(
            tx.record("visits", "1").unwrap(),
            Some(state("weight_kg", 1))
        );
        assert_eq!(tx.record("visits", "2").unwrap(), Some(state("muac_mm", 2)));
        assert_eq!(
            tx.record("households", "1").unwrap(),
            Some(state("muac_mm", 3))
        );
        assert_eq!(
            tx.record("households", "2").unwrap(),
            Some(state("weight_kg", 4))
        );
    }
}
