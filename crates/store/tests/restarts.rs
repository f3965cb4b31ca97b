//! The simulation's restarts, for real: replicas on SQLite files that are closed and
//! reopened at random, and imports killed midway (their transaction never commits), while
//! they write and exchange bundles. After a final exchange, every replica holds the same
//! records.

use ferry_bundle::{BundleReader, DatasetKey, WriteOptions};
use ferry_model::crypto::SecretKey;
use ferry_model::{Change, DatasetId, MemberId, Op, RecordState, Value};
use ferry_store::Store;
use ferry_sync::plan::plan_export;
use ferry_sync::sim::SplitMix;
use ferry_sync::{Engine, Invitation, Storage};
use std::collections::BTreeMap;
use std::path::PathBuf;

const T0: u64 = 1_763_000_000_000;

struct Replica {
    path: PathBuf,
    store: Option<Store>,
    engine: Engine,
    secret: SecretKey,
}

impl Replica {
    fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("open")
    }

    fn restart(&mut self) {
        self.store = None;
        self.store = Some(Store::open(&self.path).unwrap());
    }

    fn commit(&mut self, changes: Vec<Change>, now: u64) {
        let engine = self.engine.clone();
        let mut tx = self.store().transaction(now).unwrap();
        engine.commit_local(&mut tx, changes, now).unwrap();
        tx.commit().unwrap();
    }

    fn bundle(&mut self, key: &DatasetKey, n: u32, salt: [u8; 16]) -> Vec<u8> {
        let engine = self.engine.clone();
        let secret = self.secret.clone();
        let tx = self.store().read().unwrap();
        let peers: Vec<_> = (1..=n)
            .map(MemberId)
            .filter(|&m| m != engine.me)
            .map(|m| tx.peer(m).unwrap())
            .collect();
        let runs = plan_export(&tx.stored().unwrap(), &peers, &[], &Default::default());
        engine
            .export(
                &tx,
                &runs,
                &[],
                Vec::new(),
                salt,
                &ferry_bundle::Keyring::new(key.clone()),
                &secret,
                WriteOptions {
                    level: 1,
                    ..Default::default()
                },
            )
            .unwrap()
            .0
    }

    /// Imports (a bundle that cannot be checked yet changes nothing and stays on the
    /// stick); `kill` drops the transaction before it commits, like a killed process.
    fn import(&mut self, key: &DatasetKey, bytes: &[u8], now: u64, kill: bool) {
        let engine = self.engine.clone();
        let mut tx = self.store().transaction(now).unwrap();
        engine
            .receive(
                &mut tx,
                || BundleReader::open(bytes),
                &ferry_bundle::Keyring::new(key.clone()),
                Default::default(),
                now,
            )
            .unwrap();
        if !kill {
            tx.commit().unwrap();
        }
    }

    fn records(&mut self) -> BTreeMap<String, RecordState> {
        let mut tx = self.store().read().unwrap();
        let mut out = BTreeMap::new();
        tx.for_each_record("c", false, |id, r| {
            out.insert(id.to_string(), r.clone());
            Ok(())
        })
        .unwrap();
        out
    }
}

fn run(seed: u64, dir: &std::path::Path) {
    let mut rng = SplitMix(seed);
    let n = 3 + rng.below(2) as u32;
    let admin = SecretKey::from_bytes(rng.bytes());
    let dataset = DatasetId(rng.bytes());
    let key = DatasetKey(rng.bytes());
    let mut replicas: Vec<Replica> = Vec::new();
    for m in 1..=n {
        let path = dir.join(format!("s{seed}-m{m}.db"));
        let secret = if m == 1 {
            admin.clone()
        } else {
            SecretKey::from_bytes(rng.bytes())
        };
        let mut r = Replica {
            store: Some(Store::open(&path).unwrap()),
            path,
            engine: Engine {
                dataset,
                admin_key: admin.public(),
                me: MemberId(m),
            },
            secret: secret.clone(),
        };
        let first = if m == 1 {
            Change::Genesis {
                name: "d".into(),
                label: "m1".into(),
                admin_key: admin.public(),
            }
        } else {
            let inv = Invitation::issue(
                &admin,
                "m1",
                dataset,
                "d",
                key.0,
                MemberId(m),
                "x",
                rng.bytes(),
            );
            Change::Join(inv.join_proof(&secret.public()))
        };
        r.commit(vec![first], T0);
        replicas.push(r);
    }
    let mut stick: Vec<Vec<u8>> = Vec::new();
    let mut now = T0;
    for _ in 0..40 {
        now += 1000 + rng.below(60_000);
        let i = rng.below(n as u64) as usize;
        match rng.below(10) {
            0..=3 => {
                let op = match rng.below(6) {
                    0 => Op::Delete,
                    1 => Op::Incr("n".into(), 1),
                    _ => Op::Set(
                        format!("f{}", rng.below(2)),
                        Value::Int(rng.below(100) as i64),
                    ),
                };
                let id = format!("r{}", rng.below(3));
                replicas[i].commit(
                    vec![Change::Record {
                        collection: "c".into(),
                        id,
                        ops: vec![op],
                    }],
                    now,
                );
            }
            4 | 5 => {
                let b = replicas[i].bundle(&key, n, rng.bytes());
                stick.push(b);
            }
            6 | 7 => {
                if !stick.is_empty() {
                    let b = stick[rng.below(stick.len() as u64) as usize].clone();
                    replicas[i].import(&key, &b, now, false);
                }
            }
            8 => replicas[i].restart(),
            _ => {
                if !stick.is_empty() {
                    let b = stick[rng.below(stick.len() as u64) as usize].clone();
                    replicas[i].import(&key, &b, now, true);
                    replicas[i].restart();
                }
            }
        }
    }
    // Final exchange through the first replica.
    for i in 1..replicas.len() {
        let b = replicas[i].bundle(&key, n, rng.bytes());
        replicas[0].import(&key, &b, now, false);
    }
    let b = replicas[0].bundle(&key, n, rng.bytes());
    for r in &mut replicas[1..] {
        r.import(&key, &b, now, false);
        r.restart();
    }
    let first = replicas[0].records();
    for (i, r) in replicas.iter_mut().enumerate().skip(1) {
        assert_eq!(
            r.records(),
            first,
            "seed {seed}: replica {} differs after restarts",
            i + 1
        );
    }
}

#[test]
fn replicas_on_disk_converge_through_restarts_and_killed_imports() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..40 {
        run(seed, dir.path());
    }
}
