//! Memory and time of `load`, `list` and `dump` on a large collection (issue 12: "list
//! --json and dump stream: ≤ 50 MB peak at 1,000,000 records"; a load that refuses an id on
//! two lines must stay memory-bounded too).
//!
//! ```text
//! cargo build --release -p ferry-cli
//! cargo run --release -p ferry-bench --example files -- [RECORDS]
//! ```
//!
//! (1 000 000 visits by default.) Writes the visits as JSON lines, in id order and shuffled,
//! then runs the real `ferry` binary (`FERRY_BIN`, else `ferry` next to this example's
//! folder) under `/usr/bin/time` for each command and prints its peak resident memory and
//! wall time.

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn ferry_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("FERRY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ferry"))
        .context("where is the ferry binary?")?;
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p ferry-cli) or set FERRY_BIN",
            p.display()
        );
    }
    Ok(p)
}

/// SplitMix64: a small deterministic generator for the workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One visit as a JSON line.
fn visit(rng: &mut Rng, i: u64) -> String {
    const VILLAGES: [&str; 5] = ["Kisumu Ndogo", "Nyalenda", "Manyatta", "Obunga", "Kondele"];
    const DIAGNOSES: [&str; 4] = ["malaria", "ari", "diarrhoea", "none"];
    serde_json::json!({
        "id": format!("v-2026-{i:07}"),
        "patient_id": format!("p-{:06}", rng.below(100_000)),
        "visit_date": format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        "village": VILLAGES[rng.below(5) as usize],
        "age_years": rng.below(90),
        "sex": if rng.below(2) == 0 { "F" } else { "M" },
        "weight_kg": (30 + rng.below(1070)) as f64 / 10.0,
        "diagnosis": DIAGNOSES[rng.below(4) as usize],
        "followup": rng.below(10) < 3,
    })
    .to_string()
}

/// Runs `ferry ARGS` under `/usr/bin/time`; returns (peak kB, seconds).
fn measure(bin: &Path, home: &Path, args: &[&str]) -> Result<(u64, f64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "ferry-time %M %e"])
        .arg(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("FERRY_HOME")
        .stdout(Stdio::null())
        .output()
        .context("/usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("ferry {args:?} failed: {stderr}");
    }
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ferry-time "))
        .context("no /usr/bin/time line")?;
    let mut parts = line.split_whitespace();
    let kb = parts.next().unwrap_or("0").parse()?;
    let secs = parts.next().unwrap_or("0").parse()?;
    Ok((kb, secs))
}

fn main() -> Result<()> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().context("RECORDS must be a number")?,
        None => 1_000_000,
    };
    let bin = ferry_bin()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut rng = Rng(12);
    let lines: Vec<String> = (0..n).map(|i| visit(&mut rng, i)).collect();
    let write = |name: &str, order: &[usize]| -> Result<PathBuf> {
        let p = d.join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
        for &i in order {
            writeln!(f, "{}", lines[i])?;
        }
        f.flush()?;
        Ok(p)
    };
    let mut order: Vec<usize> = (0..lines.len()).collect();
    let in_order = write("in-order.jsonl", &order)?;
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let shuffled = write("shuffled.jsonl", &order)?;
    drop(lines);
    let csv = d.join("dump.csv");
    let s = |p: &Path| p.to_str().unwrap_or_default().to_string();

    let init = |name: &str| -> Result<PathBuf> {
        let home = d.join(name);
        let out = Command::new(&bin)
            .arg("--home")
            .arg(&home)
            .args(["init", "--name", name, "--create", "bench"])
            .env_remove("FERRY_HOME")
            .output()?;
        if !out.status.success() {
            bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(home)
    };
    let hq = init("hq")?;
    let shuffled_home = init("shuffled")?;
    let csv_home = init("csv")?;
    let runs: Vec<(&str, &Path, Vec<String>)> = vec![
        (
            "load (JSON lines, ids in order)",
            &hq,
            vec!["load".into(), "visits".into(), s(&in_order)],
        ),
        (
            "load (JSON lines, ids shuffled)",
            &shuffled_home,
            vec!["load".into(), "visits".into(), s(&shuffled)],
        ),
        (
            "list --json",
            &hq,
            vec!["list".into(), "visits".into(), "--json".into()],
        ),
        ("list", &hq, vec!["list".into(), "visits".into()]),
        ("dump", &hq, vec!["dump".into(), "visits".into()]),
        (
            "dump --csv --out FILE",
            &hq,
            vec![
                "dump".into(),
                "--csv".into(),
                "visits".into(),
                "--out".into(),
                s(&csv),
            ],
        ),
        (
            "load --csv (that dump)",
            &csv_home,
            vec!["load".into(), "--csv".into(), "visits".into(), s(&csv)],
        ),
    ];
    println!("{n} visits, {}", bin.display());
    println!();
    println!("| command | peak memory | time |");
    println!("|---|---:|---:|");
    for (what, home, args) in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (kb, secs) = measure(&bin, home, &args)?;
        println!("| `{what}` | {:.1} MB | {secs:.1} s |", kb as f64 / 1000.0);
    }
    Ok(())
}
