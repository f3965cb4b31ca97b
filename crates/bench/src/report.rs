//! Tables on stdout, and `BENCHMARKS.md` with an SVG chart.

use crate::{Fixed, SizeResult};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

fn per(bytes: u64, n: u64) -> f64 {
    bytes as f64 / n.max(1) as f64
}

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

/// The report as Markdown tables (also what is printed).
/// The issue's goals, each with its measured figure: (goal, measured, met).
fn goals(results: &[SizeResult], fixed: &Fixed) -> Vec<(String, String, bool)> {
    let mut g = vec![
        (
            "fixed overhead per bundle ≤ 120 B".to_string(),
            format!("{} B", fixed.overhead),
            fixed.overhead <= 120,
        ),
        (
            "one incremental reference record ≤ 260 B".to_string(),
            format!("{} B", fixed.one_record),
            fixed.one_record <= 260,
        ),
    ];
    // The largest bulk size measured (100 000 in the full run).
    if let Some(r) = results
        .iter()
        .rev()
        .find(|r| r.n <= 100_000 && r.n >= 1_000)
    {
        let xz = r.full as f64 / r.csv_xz as f64;
        let zstd = r.full as f64 / r.jsonl_zstd as f64;
        g.push((
            format!("bulk {} records ≤ 1.25 × values CSV + xz -9", r.n),
            format!("{xz:.2} ×"),
            xz <= 1.25,
        ));
        g.push((
            format!("bulk {} records smaller than JSONL + zstd -19", r.n),
            format!("{zstd:.2} ×"),
            zstd < 1.0,
        ));
        let apply = r.sqlite_s / r.import_s;
        g.push((
            format!("apply ≥ 0.5 × plain SQLite inserts ({} records)", r.n),
            format!("{apply:.2} ×"),
            apply >= 0.5,
        ));
    }
    if let Some(r) = results.iter().rev().find(|r| r.export_peak_kb.is_some()) {
        let mb = |kb: Option<u64>| kb.unwrap_or(0) as f64 / 1024.0;
        let (e, i) = (mb(r.export_peak_kb), mb(r.import_peak_kb));
        g.push((
            format!("peak memory ≤ 100 MB at {} records (export / import)", r.n),
            format!("{e:.1} MB / {i:.1} MB"),
            e <= 100.0 && i <= 100.0,
        ));
    }
    g
}

/// Where a figure stands against the issue's "must" and "goal".
fn standing(must: bool, goal: bool) -> &'static str {
    match (must, goal) {
        (_, true) => "goal met",
        (true, false) => "must met, goal missed",
        (false, _) => "**missed**",
    }
}

/// Issue 14's table: (metric, now, must, goal, standing). Rows whose figures this run did
/// not measure say so.
fn issue_goals(
    results: &[SizeResult],
    fixed: &Fixed,
    scale: Option<&ScaleFigures>,
) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    let at = |n: u64| results.iter().find(|r| r.n == n);
    let pair = |a: Option<f64>, b: Option<f64>, digits: usize| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.digits$} / {b:.digits$}"),
        (Some(a), None) => format!("{a:.digits$}"),
        _ => "not measured".into(),
    };
    let big = [at(100_000), at(1_000_000)];
    let apply: Vec<f64> = big
        .iter()
        .flatten()
        .map(|r| r.sqlite_s / r.import_s)
        .collect();
    let (must, goal) = (
        !apply.is_empty() && apply.iter().all(|&x| x >= 0.5),
        !apply.is_empty() && apply.iter().all(|&x| x >= 1.0),
    );
    rows.push([
        "apply ÷ plain SQLite inserts of the same rows, 100k / 1M".into(),
        pair(apply.first().copied(), apply.get(1).copied(), 2),
        "≥ 0.5×".into(),
        "≥ 1.0×".into(),
        if apply.is_empty() {
            "not measured"
        } else {
            standing(must, goal)
        }
        .into(),
    ]);
    match big[1].or(big[0]) {
        Some(r) => {
            let (export, import) = (rate(r.n, r.export_s), rate(r.n, r.import_s));
            rows.push([
                format!("export, records/s at {}", r.n),
                fmt_rate(export),
                "≥ 100k/s".into(),
                format!("≥ import speed ({})", fmt_rate(import)),
                standing(export >= 100_000.0, export >= import).into(),
            ]);
        }
        None => rows.push([
            "export, records/s at 1M".into(),
            "not measured".into(),
            "≥ 100k/s".into(),
            "≥ import speed".into(),
            "not measured".into(),
        ]),
    }
    let bulk: Vec<f64> = big
        .iter()
        .flatten()
        .map(|r| r.full as f64 / r.csv_xz as f64)
        .collect();
    rows.push([
        "bulk bytes ÷ values CSV + xz -9, 100k / 1M".into(),
        pair(bulk.first().copied(), bulk.get(1).copied(), 2),
        "≤ 1.0×".into(),
        "≤ 0.85×".into(),
        if bulk.is_empty() {
            "not measured"
        } else {
            standing(
                bulk.iter().all(|&x| x <= 1.0),
                bulk.iter().all(|&x| x <= 0.85),
            )
        }
        .into(),
    ]);
    match big[1].or(big[0]) {
        Some(r) => {
            let plain = r.sqlite_bytes as f64;
            let (after, before) = (r.store_compacted as f64 / plain, r.store as f64 / plain);
            rows.push([
                format!(
                    "disk per record ÷ plain table, after compaction / before ({})",
                    r.n
                ),
                format!("{after:.2} / {before:.2}"),
                "1.2 / 2.5".into(),
                "1.1 / 1.5".into(),
                standing(after <= 1.2 && before <= 2.5, after <= 1.1 && before <= 1.5).into(),
            ]);
        }
        None => rows.push([
            "disk per record ÷ plain table".into(),
            "not measured".into(),
            "1.2 / 2.5".into(),
            "1.1 / 1.5".into(),
            "not measured".into(),
        ]),
    }
    let sms = |what: &str| {
        fixed
            .transports
            .iter()
            .find(|t| t.what == what)
            .map(|t| t.sms_text)
    };
    match (
        sms("one new reference record"),
        sms("ten new visits in one bundle"),
    ) {
        (Some(one), Some(ten)) => rows.push([
            "text SMS for one new reference record / ten together".into(),
            format!("{one} / {ten}"),
            "2 / 6".into(),
            "2 / 5".into(),
            standing(one <= 2 && ten <= 6, one <= 2 && ten <= 5).into(),
        ]),
        _ => rows.push([
            "text SMS for one new reference record / ten together".into(),
            "not measured".into(),
            "2 / 6".into(),
            "2 / 5".into(),
            "not measured".into(),
        ]),
    }
    match scale {
        Some(sc) => {
            rows.push([
                format!("peak RSS import and export at {} records (scale run)", sc.n),
                format!("{:.1} MB / {:.1} MB", sc.import_mb, sc.export_mb),
                "≤ 100 MB".into(),
                "≤ 64 MB".into(),
                standing(
                    sc.import_mb <= 100.0 && sc.export_mb <= 100.0,
                    sc.import_mb <= 64.0 && sc.export_mb <= 64.0,
                )
                .into(),
            ]);
            rows.push([
                format!(
                    "time per record at {} ÷ at {} (import, export; scale run)",
                    sc.n, sc.base
                ),
                format!("{:.2}× / {:.2}×", sc.growth_import, sc.growth_export),
                "≤ 1.3×".into(),
                "≤ 1.1×".into(),
                standing(
                    sc.growth_import <= 1.3 && sc.growth_export <= 1.3,
                    sc.growth_import <= 1.1 && sc.growth_export <= 1.1,
                )
                .into(),
            ]);
        }
        None => {
            rows.push([
                "peak RSS import and export at 10,000,000 records".into(),
                "not measured (scale run)".into(),
                "≤ 100 MB".into(),
                "≤ 64 MB".into(),
                "not measured".into(),
            ]);
            rows.push([
                "time per record at 10M ÷ at 100k (import, export)".into(),
                "not measured (scale run)".into(),
                "≤ 1.3×".into(),
                "≤ 1.1×".into(),
                "not measured".into(),
            ]);
        }
    }
    rows
}

/// The largest size of the scale run, read back from the tables `scale.md` holds (written
/// by `ferry-bench scale --write`).
pub struct ScaleFigures {
    /// The largest size and the smallest (the growth's base).
    pub n: u64,
    /// See `n`.
    pub base: u64,
    /// Peak resident memory of the export and the import at `n`, MB.
    pub export_mb: f64,
    /// See `export_mb`.
    pub import_mb: f64,
    /// Time per record at `n` ÷ at `base`.
    pub growth_export: f64,
    /// See `growth_export`.
    pub growth_import: f64,
}

/// Reads [`ScaleFigures`] from `dir/scale.md`, if the scale run wrote it.
pub fn scale_figures(dir: &Path) -> Option<ScaleFigures> {
    let text = std::fs::read_to_string(dir.join("scale.md")).ok()?;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    // The first table has eight columns, the growth table four.
    let sizes: Vec<&Vec<&str>> = rows.iter().filter(|r| r.len() == 8).collect();
    let growth: Vec<&Vec<&str>> = rows.iter().filter(|r| r.len() == 4).collect();
    let (last, grown) = (sizes.last()?, growth.last()?);
    let memory: Vec<f64> = last[4]
        .trim_end_matches(" MB")
        .split(" / ")
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let times = |i: usize| grown[i].trim_end_matches(" ×").parse::<f64>().ok();
    Some(ScaleFigures {
        n: last[0].parse().ok()?,
        base: sizes.first()?[0].parse().ok()?,
        export_mb: *memory.get(1)?,
        import_mb: *memory.get(2)?,
        growth_export: times(2)?,
        growth_import: times(3)?,
    })
}

fn tables(results: &[SizeResult], fixed: &Fixed) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### Issue 14's goals (same run, same machine)\n");
    let _ = writeln!(s, "| metric | now | must | goal | |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scale = scale_figures(&dir);
    for [metric, now, must, goal, standing] in issue_goals(results, fixed, scale.as_ref()) {
        let _ = writeln!(s, "| {metric} | {now} | {must} | {goal} | {standing} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Goals\n");
    let _ = writeln!(s, "| goal | measured | |");
    let _ = writeln!(s, "|---|---:|---|");
    for (goal, measured, met) in goals(results, fixed) {
        let _ = writeln!(
            s,
            "| {goal} | {measured} | {} |",
            if met { "met" } else { "**missed**" }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Wire bytes: first full sync\n");
    let _ = writeln!(
        s,
        "| records | JSON lines | JSONL + zstd -19 | values CSV + xz -9 | **ferry bundle** | ferry ÷ CSV+xz | ferry ÷ JSONL+zstd | ferry B/record |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | **{}** | {:.2} | {:.2} | {:.1} |",
            r.n,
            r.jsonl,
            r.jsonl_zstd,
            r.csv_xz,
            r.full,
            r.full as f64 / r.csv_xz as f64,
            r.full as f64 / r.jsonl_zstd as f64,
            per(r.full, r.n)
        );
    }
    let _ = writeln!(
        s,
        "\nThe ferry bundle is signed and encrypted and also carries the dataset's membership (the genesis, two invitations, a join); the baselines carry only the values.\n"
    );
    let _ = writeln!(s, "### Wire bytes: incremental sync (the edit mix)\n");
    let _ = writeln!(
        s,
        "| records | edited (20 %) | ferry bundle | ferry per edited record | edits as JSONL + zstd -19 |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} |",
            r.n,
            r.edited,
            r.incr,
            per(r.incr, r.edited),
            r.incr_jsonl_zstd
        );
    }
    let _ = writeln!(s, "\n### Small bundles\n");
    let _ = writeln!(s, "| what | bytes | goal |");
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| fixed overhead per bundle (header, flag, tag, signature) | {} | ≤ 120 |",
        fixed.overhead
    );
    let _ = writeln!(
        s,
        "| one new reference record from a known member, whole bundle | {} | ≤ 260 |",
        fixed.one_record
    );
    let _ = writeln!(s, "| a receipt only (3 members) | {} | |", fixed.receipt);
    let _ = writeln!(s, "\n### Transports: what small bundles cost\n");
    let _ = writeln!(
        s,
        "| bundle | bytes | text SMS | binary SMS | email with MIME | DATA frames (MTU 200) | 1200-baud serial | AFSK 1200 (AX.25) | LoRa SF9/125 kHz |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in &fixed.transports {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} B | {} ({} B) | {:.2} s | {:.2} s | {:.2} s |",
            t.what,
            t.bytes,
            t.sms_text,
            t.sms_binary,
            t.email,
            t.radio.frames,
            t.radio.raw_bytes,
            t.radio.serial_1200.as_secs_f64(),
            t.radio.afsk_1200.as_secs_f64(),
            t.radio.lora_sf9.as_secs_f64()
        );
    }
    let _ = writeln!(
        s,
        "\nSMS per record: one record alone takes {} text SMS; ten records sent together take {} ({:.1} per record). Airtime counts the DATA frames only; a serial session adds its hellos, offers, acknowledgements and close (`cargo run --release -p ferry-transport-serial --example goodput` measures whole sessions from the frames both ends actually send). At a 1 % duty cycle LoRa allows 36 s of airtime per hour. The email is exactly what `ferry send email` sends when one email holds the bundle.",
        fixed.transports.first().map_or(0, |t| t.sms_text),
        fixed.transports.get(1).map_or(0, |t| t.sms_text),
        fixed
            .transports
            .get(1)
            .map_or(0.0, |t| t.sms_text as f64 / 10.0)
    );
    let _ = writeln!(s, "\n### Speed\n");
    let _ = writeln!(
        s,
        "| records | load | export | import (apply) | plain SQLite insert | apply ÷ SQLite |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} s ({}) | {:.2} s ({}) | {:.2} s ({}) | {:.2} s ({}) | {:.2} |",
            r.n,
            r.load_s,
            fmt_rate(rate(r.n, r.load_s)),
            r.export_s,
            fmt_rate(rate(r.n, r.export_s)),
            r.import_s,
            fmt_rate(rate(r.n, r.import_s)),
            r.sqlite_s,
            fmt_rate(rate(r.n, r.sqlite_s)),
            r.sqlite_s / r.import_s
        );
    }
    if results.iter().any(|r| r.export_peak_kb.is_some()) {
        let _ = writeln!(s, "\n### Peak memory (resident, whole process)\n");
        let _ = writeln!(s, "| records | export | import | goal |");
        let _ = writeln!(s, "|---:|---:|---:|---:|");
        for r in results.iter().filter(|r| r.export_peak_kb.is_some()) {
            let _ = writeln!(
                s,
                "| {} | {:.1} MB | {:.1} MB | ≤ 100 MB |",
                r.n,
                r.export_peak_kb.unwrap_or(0) as f64 / 1024.0,
                r.import_peak_kb.unwrap_or(0) as f64 / 1024.0
            );
        }
    }
    let _ = writeln!(s, "\n### Disk\n");
    let _ = writeln!(
        s,
        "| records | ferry store, B/record | after compaction | plain SQLite table, B/record | ferry ÷ plain (compacted) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} |",
            r.n,
            per(r.store, r.n),
            per(r.store_compacted, r.n),
            per(r.sqlite_bytes, r.n),
            r.store_compacted as f64 / r.sqlite_bytes.max(1) as f64
        );
    }
    s
}

/// Prints the tables.
pub fn print(results: &[SizeResult], fixed: &Fixed) {
    println!("{}", tables(results, fixed));
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, {os}, {rustc}, release build")
}

/// One bar series: name, colour, the figure it shows.
type Series = (&'static str, &'static str, fn(&SizeResult) -> u64);

/// A grouped bar chart of bytes per record (full sync) against the baselines.
fn svg(results: &[SizeResult]) -> String {
    let rows: Vec<&SizeResult> = results.iter().filter(|r| r.n >= 1000).collect();
    let series: [Series; 4] = [
        ("JSON lines", "#bbbbbb", |r| r.jsonl),
        ("JSONL + zstd -19", "#6699cc", |r| r.jsonl_zstd),
        ("values CSV + xz -9", "#99cc99", |r| r.csv_xz),
        ("ferry bundle (signed, encrypted)", "#cc6633", |r| r.full),
    ];
    let max = rows
        .iter()
        .flat_map(|r| series.iter().map(move |(_, _, f)| per(f(r), r.n)))
        .fold(1.0f64, f64::max);
    let (w, h, left, top, bottom) = (760.0, 360.0, 60.0, 40.0, 60.0);
    let plot_h = h - top - bottom;
    let group_w = (w - left - 20.0) / rows.len().max(1) as f64;
    let bar_w = group_w / (series.len() as f64 + 1.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="{left}" y="20" font-size="14">Bytes per record, first full sync (lower is better)</text>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
"##,
        h - bottom,
        h - bottom,
        w - 20.0,
        h - bottom
    );
    for t in 0..=4 {
        let v = max * t as f64 / 4.0;
        let y = h - bottom - plot_h * t as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{v:.0}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eeeeee"/>"##,
            left - 6.0,
            y + 4.0,
            w - 20.0
        );
    }
    for (g, r) in rows.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (k, (_, color, f)) in series.iter().enumerate() {
            let v = per(f(r), r.n);
            let bh = plot_h * v / max;
            let x = x0 + k as f64 * bar_w;
            let _ = writeln!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.0}</text>"##,
                h - bottom - bh,
                bar_w * 0.9,
                x + bar_w * 0.45,
                h - bottom - bh - 3.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{} records</text>"##,
            x0 + bar_w * series.len() as f64 / 2.0,
            h - bottom + 16.0,
            r.n
        );
    }
    for (k, (name, color, _)) in series.iter().enumerate() {
        let x = left + k as f64 * 170.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{name}</text>"##,
            h - 22.0,
            x + 16.0,
            h - 12.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `BENCHMARKS.md` and `bytes-per-record.svg` into `dir`.
pub fn write(dir: &Path, results: &[SizeResult], fixed: &Fixed) -> Result<()> {
    std::fs::write(dir.join("bytes-per-record.svg"), svg(results))?;
    let mut md = String::new();
    let _ = writeln!(md, "# ferry benchmarks\n");
    let _ = writeln!(
        md,
        "Regenerate with `cargo run --release -p ferry-bench -- all` (this file and `bytes-per-record.svg`); `quick` prints a smaller run. Numbers below are from one run on: {}.\n",
        machine()
    );
    let _ = writeln!(
        md,
        "The workload is `crates/bench/src/workload.rs`: seeded patient visits with 12 fields shaped like the reference record (ids, a date, one of 200 villages, enums, small numbers, one decimal, an often-empty note, a bool), and an edit mix where 20 % of records get 1–3 field edits on another laptop, a tenth of them edited concurrently at the origin. Every figure goes through the same library calls as `ferry load`, `export`, `import` and `compact`.\n"
    );
    let _ = writeln!(md, "![bytes per record](bytes-per-record.svg)\n");
    md.push_str(&tables(results, fixed));
    md.push_str(&absent_member(dir));
    md.push_str(&at_rest(dir));
    if let Ok(text) = std::fs::read_to_string(dir.join("scale.md")) {
        md.push_str(&format!("\n### Scale: up to 10,000,000 records\n\n{text}"));
    }
    std::fs::write(dir.join("BENCHMARKS.md"), md)?;
    Ok(())
}

/// The section on encryption at rest, from `at-rest.md` (written by
/// `cargo run --release -p ferry-bench -- at-rest 100000 --write`).
pub fn at_rest(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("at-rest.md")) {
        Ok(text) => format!("\n### Encryption at rest (a passphrase)\n\n{text}"),
        Err(_) => String::new(),
    }
}

/// The section on a member that stays away, from `absent-member.md` (written by
/// `cargo run --release -p ferry-bench --example absent_member -- 200000 --write`).
pub fn absent_member(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("absent-member.md")) {
        Ok(text) => format!("\n### A member away for weeks\n\n{text}"),
        Err(_) => String::new(),
    }
}
