//! `ferry-bench attach [N]`: what `ferry attach` costs an app and how fast what arrives is
//! written into its table (issue 16).
//!
//! - **Capture overhead**: the app's own single-row INSERTs into a table, without and with
//!   ferry's triggers, both databases in WAL mode (attaching switches to it): N inserts in
//!   transactions of 1,000 rows (the triggers' own cost shows), and N inserts each in
//!   its own transaction (what a form that saves each entry does: the flush to disk
//!   dominates).
//! - **Taking in**: the N captured rows becoming ferry changes (`run_attached`).
//! - **Apply**: N records arriving from HQ written into an empty attached table
//!   (`run_attached` after the import), against plain SQLite inserts of the same rows in one
//!   transaction.

use crate::two_laptops;
use anyhow::Result;
use ferry_node::{FileFormat, Home, NoProgress, Node};
use rusqlite::{Connection, params};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const TABLE: &str =
    "CREATE TABLE visits (mrn TEXT PRIMARY KEY, weight REAL, seen TEXT, note TEXT);";

fn app_db(path: &Path) -> Result<Connection> {
    let c = Connection::open(path)?;
    let _: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    c.execute_batch(TABLE)?;
    Ok(c)
}

fn row(i: u64) -> (String, f64, String, String) {
    (
        format!("MRN-{i:07}"),
        40.0 + (i % 600) as f64 / 10.0,
        format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
        format!(
            "visit {i}: seen at the clinic, follow-up in {} days",
            i % 30
        ),
    )
}

/// Single-row INSERTs, `per` to a transaction; rows per second.
fn inserts(c: &Connection, from: u64, n: u64, per: u64) -> Result<f64> {
    let start = Instant::now();
    let mut st = c.prepare("INSERT INTO visits VALUES (?1, ?2, ?3, ?4)")?;
    let mut i = from;
    while i < from + n {
        c.execute_batch("BEGIN")?;
        for j in i..(i + per).min(from + n) {
            let (a, b, d, e) = row(j);
            st.execute(params![a, b, d, e])?;
        }
        c.execute_batch("COMMIT")?;
        i += per;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The benchmark's table, in markdown.
pub fn run(n: u64) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let base = tmp.path();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo build --release -p ferry-bench && target/release/ferry-bench attach {n}` on {} cores: an app table `visits (mrn TEXT PRIMARY KEY, weight REAL, seen TEXT, note TEXT)`, the app's writes through rusqlite (the SQLite ferry links), WAL mode, synchronous=FULL.\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let _ = writeln!(
        out,
        "| measurement | plain SQLite | attached | ratio | goal |\n|---|---:|---:|---:|---:|"
    );

    // Capture overhead.
    let plain = app_db(&base.join("plain.db"))?;
    let attached_path = base.join("attached.db");
    let attached = app_db(&attached_path)?;
    let mut node = Node::create(&Home::at(base.join("home")), "clinic", "bench")?;
    node.attach(&attached_path, "visits", None, &[])?;
    for (what, count, per) in [
        ("single-row INSERTs, 1,000 per transaction", n, 1000),
        ("single-row INSERTs, each its own transaction", n, 1),
    ] {
        let from = if per == 1 { n } else { 0 };
        let p = inserts(&plain, from, count, per)?;
        let a = inserts(&attached, from, count, per)?;
        let _ = writeln!(
            out,
            "| app: {count} {what} | {p:.0} rows/s | {a:.0} rows/s | {:.2}× | ≥ 0.5× |",
            a / p
        );
        println!("{}", out.lines().last().unwrap_or_default());
    }
    // Taking the captured rows in.
    let start = Instant::now();
    let runs = node.run_attached()?;
    let secs = start.elapsed().as_secs_f64();
    let taken: usize = runs.iter().map(|r| r.captured).sum();
    let _ = writeln!(
        out,
        "| ferry takes in the {taken} captured rows (one run) | | {:.0} rows/s ({secs:.2} s) | | |",
        taken as f64 / secs
    );
    println!("{}", out.lines().last().unwrap_or_default());
    drop(node);

    // Apply: HQ's records written into clinic A's empty attached table.
    let dir = base.join("apply");
    std::fs::create_dir(&dir)?;
    let (mut hq, mut a) = two_laptops(&dir)?;
    let jsonl: String = (0..n)
        .map(|i| {
            let (m, w, s, note) = row(i);
            format!("{{\"id\":\"{m}\",\"weight\":{w:?},\"seen\":\"{s}\",\"note\":\"{note}\"}}\n")
        })
        .collect();
    hq.load(
        "visits",
        FileFormat::JsonLines,
        &mut jsonl.as_bytes(),
        Some(jsonl.len() as u64),
        &NoProgress,
    )?;
    let stick = dir.join("stick");
    std::fs::create_dir(&stick)?;
    hq.export(&stick, &NoProgress)?;
    let a_db = dir.join("a.db");
    drop(app_db(&a_db)?);
    a.attach(&a_db, "visits", None, &[])?;
    a.import(&[stick], &NoProgress)?;
    let start = Instant::now();
    let runs = a.run_attached()?;
    let apply_s = start.elapsed().as_secs_f64();
    let written: usize = runs.iter().map(|r| r.written).sum();
    let check = Connection::open(&a_db)?;
    let rows: i64 = check.query_row("SELECT count(*) FROM visits", [], |r| r.get(0))?;
    anyhow::ensure!(rows as u64 == n, "{rows} rows in the table, {n} expected");
    let fresh = app_db(&dir.join("fresh.db"))?;
    let plain_rate = inserts(&fresh, 0, n, n)?;
    let apply_rate = written as f64 / apply_s;
    let _ = writeln!(
        out,
        "| {n} records from HQ written into the app's table (plain: the same rows inserted in one transaction) | {plain_rate:.0} rows/s | {apply_rate:.0} rows/s ({apply_s:.2} s) | {:.2}× | ≥ 0.5× |",
        apply_rate / plain_rate
    );
    println!("{}", out.lines().last().unwrap_or_default());
    Ok(out)
}
