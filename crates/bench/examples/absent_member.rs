//! What a member that stays away costs the others (issue 12, item 2). HQ and clinics A and
//! B hold N visits, synced and compacted; laptop M joins afterwards, says hello on the stick
//! once and goes away. Then, for five rounds, HQ records three visits and A one, and HQ, A
//! and B each run `ferry sync` on the one stick. Prints the seconds of each sync, what it
//! wrote, and the bytes on the stick after each round; then M comes back and syncs once.
//!
//! ```text
//! cargo run --release -p ferry-bench --example absent_member              # 200 000 visits
//! cargo run --release -p ferry-bench --example absent_member -- 20000     # or another size
//! cargo run --release -p ferry-bench --example absent_member -- 200000 --write
//!     # also writes the table to crates/bench/absent-member.md, which BENCHMARKS.md includes
//! ```
//!
//! Goal (issue 12): a sync carrying a few new records costs what those records cost, and
//! what M needs is on the stick at most once, however large the dataset.
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, bail};
use ferry_model::Value;
use ferry_node::{FileFormat, Home, InvitationFile, NoProgress, Node};
use std::path::Path;
use std::time::Instant;

const ROUNDS: usize = 5;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = args.iter().any(|a| a == "--write");
    let n: usize = match args.iter().find(|a| !a.starts_with("--")) {
        Some(n) => n
            .parse()
            .context("usage: absent_member [RECORDS] [--write]")?,
        None => 200_000,
    };
    // The report, as printed, for `--write`.
    let mut md = String::new();
    macro_rules! say {
        ($($t:tt)*) => {{
            let line = format!($($t)*);
            println!("{line}");
            md.push_str(&line);
            md.push('\n');
        }};
    }
    let dir = tempfile::tempdir()?;
    let base = dir.path();
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick)?;
    let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "visits")?;
    let mut a = join(&mut hq, base, "clinic-a")?;
    let mut b = join(&mut hq, base, "clinic-b")?;
    let jsonl = visits(n);
    let started = Instant::now();
    hq.load(
        "visits",
        FileFormat::JsonLines,
        &mut jsonl.as_bytes(),
        None,
        &NoProgress,
    )?;
    say!(
        "{n} visits loaded at HQ in {:.2} s ({} of JSON lines)",
        started.elapsed().as_secs_f64(),
        mb(jsonl.len() as u64)
    );
    // Everyone gets everything, twice round, so the history is compacted everywhere.
    for _ in 0..2 {
        for node in [&mut hq, &mut a, &mut b] {
            node.sync(&stick, &NoProgress)?;
        }
    }
    // A sync keeps the last month of history; compacting now is what a month later brings.
    for node in [&mut hq, &mut a, &mut b] {
        node.compact(false, &NoProgress)?;
    }
    say!(
        "HQ, A and B synced and compacted: stick {}",
        mb(bytes(&stick))
    );
    let mut m = join(&mut hq, base, "clinic-m")?;
    m.sync(&stick, &NoProgress)?;
    drop(m);
    say!("M joined, said hello on the stick and went away\n");
    say!("| round | HQ sync | A sync | B sync | written this round | stick after |");
    say!("|---:|---:|---:|---:|---|---:|");
    let mut serial = 0;
    for round in 1..=ROUNDS {
        for _ in 0..3 {
            serial += 1;
            hq.put("visits", &format!("new-{serial}"), &visit(serial as u64))?;
        }
        serial += 1;
        a.put("visits", &format!("new-{serial}"), &visit(serial as u64))?;
        let mut secs = Vec::new();
        let mut wrote = Vec::new();
        for (who, node) in [("HQ", &mut hq), ("A", &mut a), ("B", &mut b)] {
            let t = Instant::now();
            let r = node.sync(&stick, &NoProgress)?;
            secs.push(t.elapsed().as_secs_f64());
            if let Some((_, len)) = &r.export.snapshot {
                wrote.push(format!("{who}: snapshot {}", mb(*len)));
            }
            if let Some((_, len, commits)) = &r.export.written {
                let changes = match commits {
                    1 => "1 change".to_string(),
                    n => format!("{n} changes"),
                };
                wrote.push(format!("{who}: {changes}, {len} B"));
            }
        }
        say!(
            "| {round} | {:.3} s | {:.3} s | {:.3} s | {} | {} |",
            secs[0],
            secs[1],
            secs[2],
            wrote.join("; "),
            mb(bytes(&stick))
        );
    }
    let mut m = Node::open(&Home::at(base.join("clinic-m")))?;
    let t = Instant::now();
    m.sync(&stick, &NoProgress)?;
    let back = t.elapsed().as_secs_f64();
    let mut held = 0;
    m.for_each_record("visits", |_, _| {
        held += 1;
        Ok(())
    })?;
    let want = n + serial;
    say!("\nM comes back and syncs once: {back:.2} s, holds {held} of {want} visits");
    if held != want {
        bail!("M holds {held} visits, not {want}");
    }
    if write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("absent-member.md");
        let intro = format!(
            "Measured with `cargo run --release -p ferry-bench --example absent_member -- {n} --write`: HQ and clinics A and B hold {n} visits, synced and compacted; laptop M joins afterwards, says hello on the stick once and goes away. Each round HQ records three visits and A one, then HQ, A and B each run `ferry sync` on the one stick.\n\n"
        );
        std::fs::write(&path, format!("{intro}{md}"))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn join(hq: &mut Node, base: &Path, label: &str) -> Result<Node> {
    let inv = base.join(format!("{label}.invite"));
    let code = hq.invite(&inv, Some(label))?.code;
    Ok(Node::join(
        &Home::at(base.join(label)),
        Some(label),
        &InvitationFile::read(&inv)?,
        Some(&code),
    )?)
}

/// A patient visit with realistic variety (names, villages, dates, a free-text note).
fn visit(i: u64) -> Vec<(String, Value)> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    const NAMES: [&str; 12] = [
        "Achieng", "Wanjiru", "Otieno", "Kamau", "Njeri", "Mwangi", "Akinyi", "Ochieng", "Chebet",
        "Kiprop", "Atieno", "Mutua",
    ];
    const NOTES: [&str; 6] = [
        "follow-up in two weeks",
        "referred to district hospital",
        "vaccination up to date",
        "malaria test negative",
        "blood pressure high, recheck",
        "",
    ];
    vec![
        (
            "name".into(),
            Value::Str(format!(
                "{} {}",
                NAMES[next(12) as usize],
                NAMES[next(12) as usize]
            )),
        ),
        (
            "village".into(),
            Value::Str(format!("village {}", next(400))),
        ),
        ("age".into(), Value::Int(next(90) as i64)),
        (
            "date".into(),
            Value::Str(format!("2026-{:02}-{:02}", 1 + next(12), 1 + next(28))),
        ),
        ("weight".into(), Value::Float(3.0 + next(900) as f64 / 10.0)),
        ("note".into(), Value::Str(NOTES[next(6) as usize].into())),
    ]
}

fn visits(n: usize) -> String {
    let mut out = String::with_capacity(n * 140);
    for i in 0..n as u64 {
        let fields: serde_json::Map<String, serde_json::Value> = visit(i)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Str(s) => serde_json::Value::from(s),
                    Value::Int(i) => serde_json::Value::from(i),
                    Value::Float(f) => serde_json::Value::from(f),
                    _ => serde_json::Value::Null,
                };
                (k, v)
            })
            .collect();
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), format!("v{i:07}").into());
        obj.extend(fields);
        out.push_str(&serde_json::Value::Object(obj).to_string());
        out.push('\n');
    }
    out
}

fn bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                bytes(&p)
            } else {
                p.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

fn mb(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.2} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}
