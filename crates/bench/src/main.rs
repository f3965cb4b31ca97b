//! `ferry-bench`: what a sync costs on the wire, on disk, in time and memory, measured side
//! by side with what a user would do by hand and with the information floor.
//!
//! ```text
//! cargo run --release -p ferry-bench -- quick      # < 1 minute; prints tables (CI runs it)
//! cargo run --release -p ferry-bench -- all        # 1 … 1 000 000 records; writes
//!                                                  # crates/bench/BENCHMARKS.md and the SVG chart
//! cargo run --release -p ferry-bench -- at-rest [N] [--write]
//!                                                  # load, export, import and an idle open of
//!                                                  # N records (100 000), with and without a
//!                                                  # passphrase; --write keeps the table in
//!                                                  # at-rest.md, which BENCHMARKS.md includes
//! cargo run --release -p ferry-bench -- scale [N…] [--write]
//!                                                  # load, export, import, disk and peak
//!                                                  # memory at 100 000, 1 000 000 and
//!                                                  # 10 000 000 records (or N…), each step
//!                                                  # a child process; the cost growth;
//!                                                  # --write keeps the table in scale.md
//! cargo build --release -p ferry-cli -p ferry-bench && target/release/ferry-bench serve [WRITES] [STICK] [--write]
//!                                                  # the real `ferry serve` under load:
//!                                                  # single writes/s (WRITES: 8 000), batched
//!                                                  # records/s, write → feed latency, memory
//!                                                  # with 100 feeds, a stick of STICK (10 000)
//!                                                  # records in a watched folder; --write
//!                                                  # keeps the table in serve.md
//! cargo run --release -p ferry-bench -- prepare [--one-per-commit] N DIR
//!                                                  # HQ loads N records (or puts them one
//!                                                  # commit each) and exports them to
//!                                                  # DIR/full; DIR/a is an empty clinic
//! cargo run --release -p ferry-bench -- apply DIR  # imports DIR/full into a copy of DIR/a
//!                                                  # and plain SQLite inserts of the same rows:
//!                                                  # times and their ratio (run `child import`
//!                                                  # on a copy under callgrind for counts)
//! ```
//!
//! Every measurement goes through the same library calls as the `ferry` commands (load,
//! export, import, compact). Memory is the peak resident size of a child process that runs
//! one export or import. Nothing here judges: goals are printed next to the figures.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod attach;
mod report;
mod serve;
mod workload;

use anyhow::{Context, Result, bail};
use ferry_node::{FileFormat, Home, InvitationFile, NoProgress, Node};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SEED: u64 = 20261122;

/// What one workload size measured.
#[derive(Clone, Debug, Default)]
pub struct SizeResult {
    /// Records.
    pub n: u64,
    /// JSON lines, bytes.
    pub jsonl: u64,
    /// JSON lines + zstd -19.
    pub jsonl_zstd: u64,
    /// Values as CSV + xz -9.
    pub csv_xz: u64,
    /// ferry's bundle for the first full sync.
    pub full: u64,
    /// Records edited in the edit mix.
    pub edited: u64,
    /// ferry's bundle carrying the edit mix.
    pub incr: u64,
    /// Edits as JSON lines + zstd -19 (what a user would send by hand).
    pub incr_jsonl_zstd: u64,
    /// Seconds: `ferry load` of the records.
    pub load_s: f64,
    /// Seconds: export of the full sync.
    pub export_s: f64,
    /// Seconds: import of the full sync into an empty replica.
    pub import_s: f64,
    /// Seconds: plain SQLite inserting the same rows in one transaction.
    pub sqlite_s: f64,
    /// Store bytes after the import and edits.
    pub store: u64,
    /// Store bytes after compaction.
    pub store_compacted: u64,
    /// The plain SQLite table's file.
    pub sqlite_bytes: u64,
    /// Peak resident memory of an export / import child process, kB (large sizes only).
    pub export_peak_kb: Option<u64>,
    /// See `export_peak_kb`.
    pub import_peak_kb: Option<u64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("child") => child(&args[1..]),
        Some("quick") => {
            let results = run(&[1, 10, 1_000, 10_000], &[])?;
            report::print(&results, &fixed()?);
            Ok(())
        }
        Some("all") => {
            let results = run(&[1, 10, 1_000, 100_000, 1_000_000], &[100_000, 1_000_000])?;
            let fixed = fixed()?;
            report::print(&results, &fixed);
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            report::write(&dir, &results, &fixed)?;
            println!("\nwrote {}", dir.join("BENCHMARKS.md").display());
            Ok(())
        }
        Some("at-rest") => {
            let n = match args.get(1).filter(|a| *a != "--write") {
                Some(n) => n.parse().context("N: a number of records")?,
                None => 100_000,
            };
            let table = at_rest(n)?;
            print!("{table}");
            if args.iter().any(|a| a == "--write") {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                let text = format!(
                    "`cargo run --release -p ferry-bench -- at-rest {n} --write`: two homes, the same load, export and import; \"open\" is opening the home once, which a passphrase makes derive its key (Argon2id, 64 MiB, 3 passes) in every command.\n\n{table}"
                );
                std::fs::write(dir.join("at-rest.md"), text)?;
                println!("\nwrote {}", dir.join("at-rest.md").display());
            }
            Ok(())
        }
        Some("prepare") => {
            let (n, dir, one_each) = match &args[..] {
                [_, n, dir] => (n, dir, false),
                [_, flag, n, dir] if flag == "--one-per-commit" => (n, dir, true),
                _ => bail!("usage: ferry-bench prepare [--one-per-commit] N DIR"),
            };
            prepare(
                n.parse().context("N: a number of records")?,
                Path::new(dir),
                one_each,
            )
        }
        Some("scale") => {
            let write = args.iter().any(|a| a == "--write");
            let sizes: Vec<u64> = args[1..]
                .iter()
                .filter(|a| *a != "--write")
                .map(|a| a.parse().context("N: a number of records"))
                .collect::<Result<_>>()?;
            let sizes = match sizes.is_empty() {
                true => vec![100_000, 1_000_000, 10_000_000],
                false => sizes,
            };
            let table = scale(&sizes)?;
            print!("{table}");
            if write {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                std::fs::write(dir.join("scale.md"), &table)?;
                println!("\nwrote {}", dir.join("scale.md").display());
            }
            Ok(())
        }
        Some("attach") => {
            let n = match args.get(1).filter(|a| *a != "--write") {
                Some(n) => n.parse().context("a number of rows")?,
                None => 100_000,
            };
            let table = attach::run(n)?;
            print!("\n{table}");
            if args.iter().any(|a| a == "--write") {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                std::fs::write(dir.join("attach.md"), &table)?;
                println!("\nwrote {}", dir.join("attach.md").display());
            }
            Ok(())
        }
        Some("serve") => {
            let num = |i: usize, default: u64| -> Result<u64> {
                match args.get(i).filter(|a| *a != "--write") {
                    Some(n) => n.parse().context("a number of records"),
                    None => Ok(default),
                }
            };
            let table = serve::run(num(1, 8_000)?, num(2, 10_000)?)?;
            print!("\n{table}");
            if args.iter().any(|a| a == "--write") {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                std::fs::write(dir.join("serve.md"), &table)?;
                println!("\nwrote {}", dir.join("serve.md").display());
            }
            Ok(())
        }
        Some("apply") => {
            let [_, dir] = &args[..] else {
                bail!("usage: ferry-bench apply DIR");
            };
            apply(Path::new(dir))
        }
        _ => bail!(
            "usage: ferry-bench quick | all | at-rest [N] [--write] | scale [N…] [--write] | serve [WRITES] [STICK] [--write] | attach [N] [--write] | prepare [--one-per-commit] N DIR | apply DIR"
        ),
    }
}

/// The small-bundle figures: (fixed overhead, one incremental reference record, empty
/// receipt), in bytes, measured through the sync engine as in `size_budget.rs`, and what
/// small bundles cost on each transport.
pub struct Fixed {
    /// Fixed overhead of a bundle.
    pub overhead: u64,
    /// One new reference record from a known member.
    pub one_record: u64,
    /// A bundle with nothing but a receipt.
    pub receipt: u64,
    /// What the one-record bundle, ten new records in one bundle, and the receipt cost on
    /// each transport.
    pub transports: Vec<TransportCost>,
}

/// What one bundle costs on each transport.
pub struct TransportCost {
    /// What the bundle carries.
    pub what: String,
    /// Bundle bytes.
    pub bytes: u64,
    /// Text SMS (the safe GSM-7 alphabet), and 8-bit binary SMS.
    pub sms_text: usize,
    /// See `sms_text`.
    pub sms_binary: usize,
    /// The whole email as sent (headers, text, base64 attachment).
    pub email: usize,
    /// Airtime of the DATA frames carrying it at the default MTU.
    pub radio: ferry_transport_serial::airtime::MessageAirtime,
}

fn transport_cost(
    what: &str,
    tag: &ferry_transport_email::DatasetTag,
    bundle: &[u8],
) -> Result<TransportCost> {
    use ferry_transport_sms::{frame, text};
    let sms = |per: usize| {
        frame::layout(bundle.len(), per)
            .map(|l| l.count)
            .context("a small bundle that does not fit 256 SMS")
    };
    // Named by content as `ferry export` names bundle files.
    let name = &blake3::hash(bundle).to_hex()[..32];
    let email = ferry_transport_email::render_email(
        "clinic-a@example.org",
        "hq@example.org",
        tag,
        name,
        bundle,
    )?;
    Ok(TransportCost {
        what: what.to_string(),
        bytes: bundle.len() as u64,
        sms_text: sms(text::bytes_for(160))?,
        sms_binary: sms(frame::BINARY_FRAME)?,
        email: email.len(),
        radio: ferry_transport_serial::airtime::message(
            bundle,
            usize::from(ferry_transport_serial::SerialConfig::default().mtu),
        ),
    })
}

fn fixed() -> Result<Fixed> {
    use ferry_model::MemberId;
    use ferry_sync::sim::SimNode;
    let t0 = 1_763_000_000_000;
    let reference = ferry_sync::sim::reference_record;
    let mut hq = SimNode::create("clinics", "hq", 1, t0);
    let inv = hq.invite(MemberId(2), "clinic-a", t0 + 1);
    let _ = hq.invite(MemberId(3), "clinic-b", t0 + 2);
    let mut a = SimNode::join(&inv, 2, t0 + 10);
    // Both say they read version 13, as ferry's laptops do in their first commit.
    hq.announce_reads(t0 + 3);
    a.announce_reads(t0 + 11);
    hq.ingest(&a.bundle(&[]))?;
    // HQ holds the visits collected so far (2,000 of the workload's), so it trains the
    // dataset's dictionary before it sends (SPEC §18), as `ferry sync` on an admin laptop
    // does; clinic-a receives it and says so.
    let collected: Vec<(String, Vec<ferry_model::Op>)> = (0..2_000u64)
        .map(|i| workload::visit_ops(SEED, 500_000 + i))
        .collect();
    hq.write_many("visits", collected, t0 + 20);
    anyhow::ensure!(hq.train_dictionary(t0 + 30), "HQ trains no dictionary");
    a.ingest(&hq.bundle(&[]))?;
    hq.ingest(&a.bundle(&[]))?;
    a.write(
        "visits",
        "v-2026-000122",
        reference("p-004511"),
        t0 + 60_000,
    );
    hq.ingest(&a.bundle(&[]))?;
    a.ingest(&hq.bundle(&[]))?;
    a.write(
        "visits",
        "v-2026-000123",
        reference("p-004512"),
        t0 + 900_000,
    );
    let one_bundle = a.bundle_for(&[MemberId::ADMIN], &[]);
    let one = one_bundle.len() as u64;
    let receipt_bundle = a.bundle_with(&[]);
    let receipt = receipt_bundle.len() as u64;
    // Ten new visits of the workload in one bundle, once HQ holds the rest.
    hq.ingest(&one_bundle)?;
    a.ingest(&hq.bundle(&[]))?;
    for i in 0..10 {
        let (id, ops) = workload::visit_ops(SEED, 1_000 + i);
        a.write("visits", &id, ops, t0 + 1_000_000 + i * 60_000);
    }
    let ten_bundle = a.bundle_for(&[MemberId::ADMIN], &[]);
    // Any tag gives marks of the same length, so the same email size.
    let tag = ferry_transport_email::DatasetTag::new([0; 32]);
    let transports = vec![
        transport_cost("one new reference record", &tag, &one_bundle)?,
        transport_cost("ten new visits in one bundle", &tag, &ten_bundle)?,
        transport_cost("a receipt only", &tag, &receipt_bundle)?,
    ];
    // The header the one-record bundle has: version 13, once every member holds the
    // dataset's dictionary.
    let header = ferry_bundle::Header::new(a.engine.dataset, MemberId(2), [0; 16])
        .encode_version(false, ferry_bundle::VERSION_DICTS)
        .len() as u64;
    anyhow::ensure!(
        one_bundle[1] == ferry_bundle::VERSION_DICTS
            && ten_bundle[1] == ferry_bundle::VERSION_DICTS,
        "the small bundles do not use the dataset's dictionary"
    );
    Ok(Fixed {
        // Header, flag, dictionary number, tag, signature.
        overhead: header + 1 + 1 + 16 + 64,
        one_record: one,
        receipt,
        transports,
    })
}

fn run(sizes: &[u64], memory_sizes: &[u64]) -> Result<Vec<SizeResult>> {
    let mut out = Vec::new();
    for &n in sizes {
        eprintln!("measuring {n} records …");
        let mut r = measure(n, memory_sizes.contains(&n))?;
        r.n = n;
        out.push(r);
    }
    Ok(out)
}

fn files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        files_bytes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn store_bytes(home: &Path) -> u64 {
    ["ferry.db", "ferry.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(home.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn xz9(data: &[u8]) -> Result<u64> {
    let mut child = Command::new("xz")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running xz (Debian package xz-utils)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("writer thread")?;
    Ok(out.stdout.len() as u64)
}

fn measure(n: u64, memory: bool) -> Result<SizeResult> {
    let mut r = SizeResult::default();
    let tmp = tempfile::tempdir()?;
    let base = tmp.path();
    // Baselines.
    let mut jsonl = Vec::new();
    let mut csv = String::from("id,");
    csv.push_str(&workload::FIELDS.join(","));
    csv.push('\n');
    for i in 0..n {
        let (id, fields) = workload::visit(SEED, i);
        jsonl.extend_from_slice(workload::json_line(&id, &fields).as_bytes());
        jsonl.push(b'\n');
        csv.push_str(&workload::csv_line(&id, &fields));
        csv.push('\n');
    }
    r.jsonl = jsonl.len() as u64;
    r.jsonl_zstd = zstd::bulk::compress(&jsonl, 19)?.len() as u64;
    r.csv_xz = xz9(csv.as_bytes())?;

    // Two laptops: HQ has the records, clinic A joins and receives them.
    let (hq_home, a_home) = (Home::at(base.join("hq")), Home::at(base.join("a")));
    let (mut hq, mut a) = two_laptops(base)?;
    let start = Instant::now();
    hq.load(
        "visits",
        FileFormat::JsonLines,
        &mut &jsonl[..],
        Some(r.jsonl),
        &NoProgress,
    )?;
    r.load_s = start.elapsed().as_secs_f64();

    let full = base.join("full");
    std::fs::create_dir(&full)?;
    if memory {
        drop(hq);
        r.export_peak_kb = Some(child_run("export", &hq_home, &full)?);
        hq = Node::open(&hq_home)?;
        // Time it in process too (the child's figure includes starting up).
        let again = base.join("full-timed");
        std::fs::create_dir(&again)?;
        let start = Instant::now();
        hq.export(&again, &NoProgress)?;
        r.export_s = start.elapsed().as_secs_f64();
    } else {
        let start = Instant::now();
        hq.export(&full, &NoProgress)?;
        r.export_s = start.elapsed().as_secs_f64();
    }
    r.full = files_bytes(&full);
    if memory {
        // The import is measured in a child on a copy of A (so A itself stays fresh).
        let copy = base.join("a-copy");
        copy_dir(&a_home_root(&a_home), &copy)?;
        drop(a);
        r.import_peak_kb = Some(child_run("import", &Home::at(&copy), &full)?);
        a = Node::open(&a_home)?;
    }
    let start = Instant::now();
    let imported = a.import(std::slice::from_ref(&full), &NoProgress)?;
    r.import_s = start.elapsed().as_secs_f64();
    if imported.rejected() > 0 {
        bail!("the full bundle was refused");
    }
    if a.status()?.records != n {
        bail!("clinic A has {} records, not {n}", a.status()?.records);
    }

    // Plain SQLite, the same rows in one transaction.
    let sqlite_path = base.join("plain.db");
    r.sqlite_s = plain_sqlite(&sqlite_path, n)?;
    r.sqlite_bytes = store_bytes_of(&sqlite_path);

    // The edit mix: clinic A edits 20 % of the records; HQ edits some at the same time.
    let edits = workload::edits(SEED, n);
    r.edited = edits.len() as u64;
    let mut a_lines = Vec::new();
    let mut hq_lines = Vec::new();
    for (i, fields, concurrent) in &edits {
        let (id, _) = workload::visit(SEED, *i);
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), id.clone().into());
        for (f, v) in fields {
            obj.insert(workload::FIELDS[*f].into(), ferry_node::json::to_json(v));
        }
        a_lines.extend_from_slice(
            serde_json::Value::Object(obj.clone())
                .to_string()
                .as_bytes(),
        );
        a_lines.push(b'\n');
        if *concurrent {
            hq_lines.extend_from_slice(serde_json::Value::Object(obj).to_string().as_bytes());
            hq_lines.push(b'\n');
        }
    }
    r.incr_jsonl_zstd = zstd::bulk::compress(&a_lines, 19)?.len() as u64;
    if !edits.is_empty() {
        a.load(
            "visits",
            FileFormat::JsonLines,
            &mut &a_lines[..],
            None,
            &NoProgress,
        )?;
        if !hq_lines.is_empty() {
            hq.load(
                "visits",
                FileFormat::JsonLines,
                &mut &hq_lines[..],
                None,
                &NoProgress,
            )?;
        }
    }
    let incr = base.join("incr");
    std::fs::create_dir(&incr)?;
    a.export(&incr, &NoProgress)?;
    r.incr = files_bytes(&incr);
    r.store = store_bytes(a_home.root());
    // Receipts travel back so A knows HQ holds everything, then A compacts.
    hq.import(std::slice::from_ref(&incr), &NoProgress)?;
    let back = base.join("back");
    std::fs::create_dir(&back)?;
    hq.export(&back, &NoProgress)?;
    a.import(&[back], &NoProgress)?;
    a.compact(true, &NoProgress)?;
    r.store_compacted = store_bytes(a_home.root());
    Ok(r)
}

/// Plain SQLite: the same `n` rows inserted in one transaction with a prepared statement;
/// returns the seconds taken.
fn plain_sqlite(sqlite_path: &Path, n: u64) -> Result<f64> {
    let start = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(sqlite_path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE visits (id TEXT PRIMARY KEY, patient_id TEXT, visit_date TEXT,
               village TEXT, chw TEXT, age_years INTEGER, sex TEXT, weight_kg REAL,
               muac_mm INTEGER, diagnosis TEXT, treatment TEXT, followup INTEGER, note TEXT);",
        )?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO visits VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
            )?;
            for i in 0..n {
                let (id, f) = workload::visit(SEED, i);
                let p: Vec<rusqlite::types::Value> = std::iter::once(id.into())
                    .chain(f.iter().map(sql_value))
                    .collect();
                stmt.execute(rusqlite::params_from_iter(p))?;
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn a_home_root(home: &Home) -> PathBuf {
    home.root().to_path_buf()
}

fn store_bytes_of(db: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    [db.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

fn sql_value(v: &ferry_model::Value) -> rusqlite::types::Value {
    use ferry_model::Value;
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Bool(b) => rusqlite::types::Value::Integer(*b as i64),
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Float(f) => rusqlite::types::Value::Real(*f),
        Value::Str(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

/// HQ (`dir/hq`) and clinic A (`dir/a`), which has joined and whose join HQ holds.
fn two_laptops(dir: &Path) -> Result<(Node, Node)> {
    let (hq_home, a_home) = (Home::at(dir.join("hq")), Home::at(dir.join("a")));
    let mut hq = Node::create(&hq_home, "hq", "bench")?;
    let inv = dir.join("a.invite");
    let code = hq.invite(&inv, Some("clinic-a"))?.code;
    let mut a = Node::join(
        &a_home,
        Some("clinic-a"),
        &InvitationFile::read(&inv)?,
        Some(&code),
    )?;
    let join = dir.join("join");
    std::fs::create_dir(&join)?;
    a.export(&join, &NoProgress)?;
    hq.import(&[join], &NoProgress)?;
    Ok((hq, a))
}

/// Prepares a profiling run: HQ with `n` records exported to `dir/full`, and clinic A
/// (`dir/a`) that has joined and holds none of them.
fn prepare(n: u64, dir: &Path, one_per_commit: bool) -> Result<()> {
    if dir.exists() {
        bail!("{} exists", dir.display());
    }
    if n > workload::MAX_VISITS {
        bail!(
            "{n} records: the workload's ids keep their order up to {}",
            workload::MAX_VISITS
        );
    }
    std::fs::create_dir_all(dir)?;
    let mut jsonl = Vec::new();
    for i in 0..n {
        let (id, fields) = workload::visit(SEED, i);
        jsonl.extend_from_slice(workload::json_line(&id, &fields).as_bytes());
        jsonl.push(b'\n');
    }
    let (mut hq, _) = two_laptops(dir)?;
    let start = Instant::now();
    if one_per_commit {
        for i in 0..n {
            let (id, fields) = workload::visit(SEED, i);
            let fields: Vec<(String, ferry_model::Value)> = workload::FIELDS
                .iter()
                .map(|f| f.to_string())
                .zip(fields)
                .collect();
            hq.put("visits", &id, &fields)?;
        }
        println!(
            "put {n}, one commit each: {:.3} s",
            start.elapsed().as_secs_f64()
        );
    } else {
        hq.load(
            "visits",
            FileFormat::JsonLines,
            &mut &jsonl[..],
            None,
            &NoProgress,
        )?;
        println!("load {n}: {:.3} s", start.elapsed().as_secs_f64());
    }
    let full = dir.join("full");
    std::fs::create_dir(&full)?;
    let start = Instant::now();
    hq.export(&full, &NoProgress)?;
    println!(
        "export: {:.3} s, {} bytes",
        start.elapsed().as_secs_f64(),
        files_bytes(&full)
    );
    Ok(())
}

/// One size of the scale run.
struct ScaleRow {
    n: u64,
    /// Seconds and peak resident kB of each child: load, export, import.
    steps: [(f64, u64); 3],
    bundle: u64,
    /// Store bytes (database and log) of HQ after the load and of the clinic after the
    /// import.
    hq_store: u64,
    a_store: u64,
}

/// Runs `ferry-bench child WHAT HOME ARG`, returning its seconds and peak resident kB.
fn timed_child(what: &str, home: &Path, arg: &Path) -> Result<(f64, u64)> {
    // What the step before wrote goes to the disk first, so that no step pays for it.
    Command::new("sync").status()?;
    let start = Instant::now();
    let kb = child_run(what, &Home::at(home), arg)?;
    Ok((start.elapsed().as_secs_f64(), kb))
}

/// The scale run (issue 14, item 3): for each size, a fresh HQ loads the records from a
/// file, exports them, and a fresh clinic imports them, each step in a child process; the
/// table gives time, speed, peak memory and disk, and how the time per record grows from
/// the smallest size.
fn scale(sizes: &[u64]) -> Result<String> {
    if let Some(n) = sizes.iter().find(|&&n| n > workload::MAX_VISITS) {
        bail!(
            "{n} records: the workload's ids keep their order up to {}",
            workload::MAX_VISITS
        );
    }
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("scale: {n} records …");
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir)?;
        drop(two_laptops(&dir)?);
        let file = tmp.path().join("visits.jsonl");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
            for i in 0..n {
                let (id, fields) = workload::visit(SEED, i);
                writeln!(out, "{}", workload::json_line(&id, &fields))?;
            }
            out.flush()?;
        }
        let load = timed_child("load", &dir.join("hq"), &file)?;
        std::fs::remove_file(&file)?;
        let hq_store = store_bytes(&dir.join("hq"));
        let out = dir.join("bulk");
        std::fs::create_dir(&out)?;
        let export = timed_child("export", &dir.join("hq"), &out)?;
        let bundle = files_bytes(&out);
        let import = timed_child("import", &dir.join("a"), &out)?;
        let a_store = store_bytes(&dir.join("a"));
        rows.push(ScaleRow {
            n,
            steps: [load, export, import],
            bundle,
            hq_store,
            a_store,
        });
    }
    Ok(scale_table(&rows))
}

/// The scale run's tables (what `scale.md` holds, and `report::scale_figures` reads).
fn scale_table(rows: &[ScaleRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`cargo run --release -p ferry-bench -- scale`: a fresh HQ loads N visits from a JSON-lines file, exports them, and a fresh clinic imports them; each step is a child process (its time includes starting and opening the home; memory is its peak resident size), started after `sync` has written what the step before left to the disk.\n"
    );
    let _ = writeln!(
        s,
        "| records | load | export | import | peak memory load / export / import | bundle B/record | HQ store B/record | clinic store B/record |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    let step = |(secs, _): (f64, u64), n: u64| format!("{secs:.2} s ({})", report_rate(n, secs));
    for r in rows {
        let mb = |kb: u64| kb as f64 / 1024.0;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} / {:.1} / {:.1} MB | {:.1} | {:.0} | {:.0} |",
            r.n,
            step(r.steps[0], r.n),
            step(r.steps[1], r.n),
            step(r.steps[2], r.n),
            mb(r.steps[0].1),
            mb(r.steps[1].1),
            mb(r.steps[2].1),
            r.bundle as f64 / r.n as f64,
            r.hq_store as f64 / r.n as f64,
            r.a_store as f64 / r.n as f64,
        );
    }
    if let Some(base) = rows.first() {
        let _ = writeln!(
            s,
            "\nTime per record ÷ at {} records (issue 14: must ≤ 1.3 ×, goal ≤ 1.1 × at 10 000 000):\n",
            base.n
        );
        let _ = writeln!(s, "| records | load | export | import |");
        let _ = writeln!(s, "|---:|---:|---:|---:|");
        for r in rows {
            let g = |i: usize| (r.steps[i].0 / r.n as f64) / (base.steps[i].0 / base.n as f64);
            let _ = writeln!(
                s,
                "| {} | {:.2} × | {:.2} × | {:.2} × |",
                r.n,
                g(0),
                g(1),
                g(2)
            );
        }
    }
    s
}

fn report_rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs.max(1e-9);
    if r >= 10_000.0 {
        format!("{:.0}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

/// Imports `dir/full` into a fresh copy of `dir/a`, and inserts the same rows into a plain
/// SQLite table, printing both times and the ratio.
fn apply(dir: &Path) -> Result<()> {
    let copy = dir.join("a-run");
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    copy_dir(&dir.join("a"), &copy)?;
    let mut a = Node::open(&Home::at(&copy))?;
    let start = Instant::now();
    let imported = a.import(&[dir.join("full")], &NoProgress)?;
    let import_s = start.elapsed().as_secs_f64();
    if imported.rejected() > 0 {
        bail!("the full bundle was refused");
    }
    let n = a.status()?.records;
    drop(a);
    let sqlite_path = dir.join("plain.db");
    let _ = std::fs::remove_file(&sqlite_path);
    let _ = std::fs::remove_file(dir.join("plain.db-wal"));
    let sqlite_s = plain_sqlite(&sqlite_path, n)?;
    println!(
        "import {n}: {import_s:.3} s; plain SQLite: {sqlite_s:.3} s; apply ÷ SQLite: {:.2}",
        sqlite_s / import_s
    );
    Ok(())
}

/// Runs this program as a child doing one export or import, and returns its peak resident
/// memory in kB.
fn child_run(what: &str, home: &Home, dir: &Path) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["child", what])
        .arg(home.root())
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "child {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("peak_kb ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("child {what} printed {text:?}"))
}

/// The child: one export or import, then its peak resident memory (VmHWM) on stdout.
fn child(args: &[String]) -> Result<()> {
    let [what, home, dir] = args else {
        bail!("usage: ferry-bench child export|import|load HOME DIR|FILE");
    };
    let mut node = Node::open(&Home::at(home))?;
    match what.as_str() {
        "load" => {
            let file = std::fs::File::open(dir)?;
            node.load(
                "visits",
                FileFormat::JsonLines,
                &mut std::io::BufReader::new(file),
                None,
                &NoProgress,
            )?;
        }
        "export" => {
            node.export(Path::new(dir), &NoProgress)?;
        }
        "import" => {
            let r = node.import(&[PathBuf::from(dir)], &NoProgress)?;
            if r.rejected() > 0 {
                bail!("import refused a file");
            }
        }
        _ => bail!("unknown child {what}"),
    }
    let (_, kb) = serve::rss_kb(std::process::id())?;
    println!("peak_kb {kb}");
    Ok(())
}

/// Encryption at rest (issue 13): the same load, export and import of `n` records between two
/// homes without and with a passphrase, and what opening a home costs (the passphrase's key
/// derivation runs once per command).
fn at_rest(n: u64) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut jsonl = Vec::new();
    for i in 0..n {
        let (id, fields) = workload::visit(SEED, i);
        jsonl.extend_from_slice(workload::json_line(&id, &fields).as_bytes());
        jsonl.push(b'\n');
    }
    let _ = writeln!(
        out,
        "| {n} records | load s | export s | import s | open s | store bytes |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for locked in [false, true] {
        let tmp = tempfile::tempdir()?;
        let base = tmp.path();
        let home = |name: &str| {
            let h = Home::at(base.join(name));
            match locked {
                true => h.with_passphrase(
                    ferry_node::Passphrase::new("mango tree by the well".into())
                        .expect("long enough"),
                ),
                false => h,
            }
        };
        let (hq_home, a_home) = (home("hq"), home("a"));
        let mut hq = Node::create(&hq_home, "hq", "bench")?;
        let inv = base.join("a.invite");
        let code = hq.invite(&inv, Some("clinic-a"))?.code;
        let mut a = Node::join(
            &a_home,
            Some("clinic-a"),
            &InvitationFile::read(&inv)?,
            Some(&code),
        )?;
        let join = base.join("join");
        std::fs::create_dir(&join)?;
        a.export(&join, &NoProgress)?;
        hq.import(&[join], &NoProgress)?;
        let start = Instant::now();
        hq.load(
            "visits",
            FileFormat::JsonLines,
            &mut &jsonl[..],
            None,
            &NoProgress,
        )?;
        let load = start.elapsed().as_secs_f64();
        let full = base.join("full");
        std::fs::create_dir(&full)?;
        let start = Instant::now();
        hq.export(&full, &NoProgress)?;
        let export = start.elapsed().as_secs_f64();
        let start = Instant::now();
        a.import(std::slice::from_ref(&full), &NoProgress)?;
        let import = start.elapsed().as_secs_f64();
        if a.status()?.records != n {
            bail!("clinic A has {} records, not {n}", a.status()?.records);
        }
        drop(a);
        let start = Instant::now();
        let a = Node::open(&a_home)?;
        let open = start.elapsed().as_secs_f64();
        drop(a);
        let _ = writeln!(
            out,
            "| {} | {load:.2} | {export:.2} | {import:.2} | {open:.3} | {} |",
            if locked {
                "with a passphrase"
            } else {
                "without"
            },
            store_bytes(&base.join("a"))
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_back_the_scale_tables_it_writes() {
        let row = |n: u64, secs: f64, kb: u64| ScaleRow {
            n,
            steps: [(secs, kb), (secs * 2.0, kb + 100), (secs / 2.0, kb + 200)],
            bundle: n * 19,
            hq_store: n * 258,
            a_store: n * 258,
        };
        let dir = tempfile::tempdir().unwrap();
        let table = scale_table(&[row(100_000, 1.0, 30_000), row(10_000_000, 130.0, 40_000)]);
        std::fs::write(dir.path().join("scale.md"), table).unwrap();
        let f = report::scale_figures(dir.path()).expect("figures");
        assert_eq!((f.n, f.base), (10_000_000, 100_000));
        assert!(
            (f.export_mb - 40_100.0 / 1024.0).abs() < 0.1,
            "{}",
            f.export_mb
        );
        assert!(
            (f.import_mb - 40_200.0 / 1024.0).abs() < 0.1,
            "{}",
            f.import_mb
        );
        assert!((f.growth_import - 1.3).abs() < 0.01 && (f.growth_export - 1.3).abs() < 0.01);
        assert!(report::scale_figures(&dir.path().join("none")).is_none());
    }
}
