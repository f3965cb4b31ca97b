//! The store's batch record API (`records_of`, `insert_new_record`, `write_record`) keeps
//! the same states as applying each op to a record's state one at a time.

use ferry_model::{Dot, Hlc, MemberId, Op, RecordState, Stamp, Value, VersionVector};
use ferry_store::Store;
use ferry_sync::Storage;
use std::collections::BTreeMap;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_ops(rng: &mut Rng) -> Vec<Op> {
    let fields = ["age", "village", "note", "weight", "tags", "visits"];
    // Usually every field set once, in one of two orders (as a load writes them); sometimes
    // a field set twice, a delete, a counter or a set element.
    let mut order: Vec<&str> = fields[..4].to_vec();
    if rng.below(3) == 0 {
        order.reverse();
    }
    let mut ops: Vec<Op> = order
        .iter()
        .take(1 + rng.below(4) as usize)
        .map(|f| match rng.below(3) {
            0 => Op::Set((*f).into(), Value::Int(rng.below(100) as i64)),
            1 => Op::Set((*f).into(), Value::Float(rng.below(1000) as f64 / 10.0)),
            _ => Op::Set((*f).into(), Value::Str(format!("v{}", rng.below(50)))),
        })
        .collect();
    match rng.below(8) {
        0 => ops.push(Op::Set("age".into(), Value::Int(7))),
        1 => ops.insert(0, Op::Delete),
        2 => ops.push(Op::Incr("visits".into(), 2)),
        3 => ops.push(Op::Add("tags".into(), format!("t{}", rng.below(3)))),
        _ => {}
    }
    ops
}

#[test]
fn batches_of_new_and_stored_records_keep_the_states_ops_make() {
    let mut store = Store::open_in_memory().unwrap();
    let mut expected: BTreeMap<String, RecordState> = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut new, mut updated) = (0, 0);
    for seq in 1..=200u64 {
        let author = MemberId(1 + rng.below(3) as u32);
        let stamp = Stamp::new(
            Dot::new(author, seq),
            Hlc::from_parts(1_763_000_000_000 + seq * 1000, 0),
        );
        // Each commit saw everything before it.
        let ctx: VersionVector = (1..=3).map(|m| (MemberId(m), seq - 1)).collect();
        // Ids mostly in runs (a load's order), some scattered among stored ones.
        let start = rng.below(400);
        let mut ids: Vec<String> = (0..1 + rng.below(30))
            .map(|i| match rng.below(4) {
                0 => format!("r{:05}", rng.below(400)),
                _ => format!("r{:05}", start + i * 2),
            })
            .collect();
        ids.sort();
        ids.dedup();
        let batch: Vec<(String, Vec<Op>)> = ids
            .into_iter()
            .map(|id| (id, random_ops(&mut rng)))
            .collect();
        let mut tx = store.transaction(0).unwrap();
        let refs: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let states = tx.records_of("visits", &refs).unwrap();
        for ((id, ops), state) in batch.iter().zip(states) {
            // Found exactly when an earlier batch wrote it.
            assert_eq!(state.is_some(), expected.contains_key(id), "{id}");
            let want = expected.entry(id.clone()).or_default();
            for op in ops {
                want.apply(stamp, &ctx, op);
            }
            match state {
                None => {
                    new += 1;
                    tx.insert_new_record("visits", id, stamp, &ctx, ops.clone())
                        .unwrap();
                }
                Some(mut rec) => {
                    updated += 1;
                    for op in ops.clone() {
                        rec.apply_owned(stamp, &ctx, op);
                    }
                    tx.write_record("visits", id, &rec, true).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    assert!(new > 200 && updated > 200, "{new} new, {updated} updated");
    let tx = store.read().unwrap();
    for (id, want) in &expected {
        assert_eq!(
            tx.record("visits", id).unwrap().as_ref(),
            Some(want),
            "{id}"
        );
    }
    // A record the batch claims is stored but is not, or the other way round, is an error
    // (never a silent overwrite).
    drop(tx);
    let mut tx = store.transaction(0).unwrap();
    let stamp = Stamp::new(Dot::new(MemberId(1), 999), Hlc::from_parts(1, 0));
    let stored = expected.keys().next().unwrap();
    assert!(
        tx.insert_new_record(
            "visits",
            stored,
            stamp,
            &VersionVector::new(),
            vec![Op::Set("age".into(), Value::Int(1))]
        )
        .is_err()
    );
    assert!(
        tx.write_record("visits", "never-stored", &RecordState::default(), true)
            .is_err()
    );
}
