//! `ferry receive email` under a hostile load (issue 18, findings 6 and 10): 1 000 fake email
//! parts in a clinic's mailbox, with a member's genuine bundle behind them. Prints, per
//! load, how long the receive took (the genuine bundle is applied within it), the peak
//! memory of the receiving process, how much the clinic's home grew, and how long the next
//! receive takes when a new genuine bundle arrives with the junk still kept.
//!
//! ```text
//! cargo run --release -p ferry-bench --example email_hostile            # 1 000 fake parts
//! cargo run --release -p ferry-bench --example email_hostile -- 4000    # or another count
//! ```
//!
//! Goals (issue 18): the home grows by at most 50 MB; the genuine bundle is applied within
//! 2 s. The mailbox is a Maildir, as a mail server on the same machine delivers into; every
//! receive runs in a child process (this program again), whose own peak memory (VmHWM) it
//! reports.
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, bail};
use ferry_model::Value;
use ferry_node::{EmailConfig, Home, InvitationFile, NoProgress, Node, Progress};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("receive") {
        return child_receive(Path::new(&args[1]));
    }
    let fakes: u32 = match args.first() {
        Some(n) => n
            .parse()
            .context("usage: email_hostile [NUMBER OF FAKE PARTS]")?,
        None => 1000,
    };
    let dir = tempfile::tempdir()?;
    let base = dir.path();
    let (mut hq, a_home) = setup(base)?;
    println!(
        "`ferry receive email` with {fakes} fake parts in the mailbox and a member's genuine bundle \
         (3 emails of 16 kB) behind them; Maildir; release build\n"
    );
    println!(
        "| load | genuine bundle applied after | whole receive | peak memory | home growth | kept for strangers' parts | next receive, new genuine bundle |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut genuine_n = 0;
    let loads: [(&str, Load); 6] = [
        ("none (baseline)", Load::None),
        (
            "one email carrying all the fake parts (64 B each)",
            Load::OneEmail(64),
        ),
        (
            "one email per fake part, each from its own sender (4 KiB each)",
            Load::Senders(4096),
        ),
        (
            "one email per fake part, each from its own sender (64 KiB each)",
            Load::Senders(65536),
        ),
        (
            "one email per fake part, all from one sender (4 KiB each)",
            Load::OneSender(4096),
        ),
        (
            "one email per fake whole bundle (4 KiB of junk attached as .ferry), each from its own sender",
            Load::Whole(4096),
        ),
    ];
    for (what, load) in loads {
        if matches!(load, Load::Whole(_)) && fakes > 2000 {
            // Every refused bundle is quarantined by the node, whose work per refusal grows
            // with the copies the quarantine already holds (up to 64 MB of them).
            println!("| {what} | not run above 2 000 | | | | | |");
            continue;
        }
        let home = base.join(format!("a-{genuine_n}"));
        copy_tree(&a_home, &home)?;
        let maildir = home.join("Maildir");
        std::fs::write(
            home.join("ferry.toml"),
            format!(
                "[email]\nfrom = \"a@example.test\"\nmaildir = \"{}\"\n",
                maildir.display()
            ),
        )?;
        let id = Node::open(&Home::at(&home))?.dataset().to_hex();
        junk(&maildir, &id, fakes, load)?;
        genuine_n += 1;
        for (i, raw) in genuine(base, &mut hq, genuine_n)?.iter().enumerate() {
            deliver(&maildir, &format!("9-genuine-{genuine_n}-{i}"), raw)?;
        }
        let before = home_size(&home);
        let first = receive(&home)?;
        if !has(&home, &format!("v-big-{genuine_n}"))? {
            bail!("{what}: the genuine bundle was not applied");
        }
        let after = home_size(&home);
        let kept = tree_size(&home.join("transports/email/inbox"));
        genuine_n += 1;
        for (i, raw) in genuine(base, &mut hq, genuine_n)?.iter().enumerate() {
            deliver(&maildir, &format!("9-genuine-{genuine_n}-{i}"), raw)?;
        }
        let next = receive(&home)?;
        if !has(&home, &format!("v-big-{genuine_n}"))? {
            bail!("{what}: the second genuine bundle was not applied");
        }
        println!(
            "| {what} | {:.2} s | {:.2} s | {:.0} MB | {:.1} MB | {:.1} MB | {:.2} s |",
            first.first,
            first.secs,
            first.rss_kb as f64 / 1000.0,
            after.saturating_sub(before) as f64 / 1e6,
            kept as f64 / 1e6,
            next.secs,
        );
    }
    println!(
        "\nhome growth: the clinic's home folder after the first receive, less before (the mailbox \
         itself is not counted; the bundle applied adds about 0.1 MB). Goals: growth at most 50 MB, \
         the genuine bundle applied within 2 s."
    );
    Ok(())
}

/// What the junk looks like.
#[derive(Clone, Copy)]
enum Load {
    None,
    /// One email with every fake part attached (bytes per part).
    OneEmail(usize),
    /// One email per fake part, each from another address.
    Senders(usize),
    /// One email per fake part, all from one address.
    OneSender(usize),
    /// One email per fake whole bundle (junk attached by hand as `.ferry`), each from
    /// another address: every one goes to the node's gate.
    Whole(usize),
}

/// What one receive in the child process measured.
struct Measured {
    secs: f64,
    /// When the first bundle (a member's: they go first) was applied.
    first: f64,
    rss_kb: u64,
}

/// Runs `receive email` on `home` in a child process.
fn receive(home: &Path) -> Result<Measured> {
    let out = Command::new(std::env::current_exe()?)
        .arg("receive")
        .arg(home)
        .output()?;
    if !out.status.success() {
        bail!(
            "the receiving process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Measured {
        secs: v["secs"].as_f64().unwrap_or_default(),
        first: v["first"].as_f64().unwrap_or_default(),
        rss_kb: v["rss_kb"].as_u64().unwrap_or_default(),
    })
}

/// Notes when the first bundle a receive imports is done (members' bundles are imported
/// first, so with one genuine bundle in the mailbox, that is when it was applied).
struct FirstImport {
    start: Instant,
    importing: Cell<bool>,
    done: Cell<Option<f64>>,
}

impl Progress for FirstImport {
    fn begin(&self, what: &str, _: Option<u64>, _: ferry_node::Unit) {
        self.importing.set(what.starts_with("importing"));
    }
    fn advance(&self, _: u64) {}
    fn end(&self) {
        if self.importing.get() && self.done.get().is_none() {
            self.done.set(Some(self.start.elapsed().as_secs_f64()));
        }
    }
}

/// In the child: one `receive email`, then its duration, when the first bundle was
/// imported, and this process's peak memory.
fn child_receive(home: &Path) -> Result<()> {
    let start = Instant::now();
    let first = FirstImport {
        start,
        importing: Cell::new(false),
        done: Cell::new(None),
    };
    let mut node = Node::open(&Home::at(home))?;
    let r = node.receive_email(EmailConfig::default(), &first)?;
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "secs": secs,
            "first": first.done.get(),
            "rss_kb": rss_kb,
            "files": r.import.files.len(),
            "waiting": r.incomplete.len(),
            "dropped": r.dropped,
        })
    );
    Ok(())
}

/// HQ, and clinic A's home (with an empty Maildir) holding everything HQ had (one stick
/// went HQ → A → HQ).
fn setup(base: &Path) -> Result<(Node, PathBuf)> {
    let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "bench")?;
    let inv = base.join("a.invite");
    let code = hq.invite(&inv, Some("clinic-a"))?.code;
    let a_home = base.join("a");
    let mut a = Node::join(
        &Home::at(&a_home),
        Some("clinic-a"),
        &InvitationFile::read(&inv)?,
        Some(&code),
    )?;
    hq.put("visits", "v0", &[("a".into(), Value::Int(1))])?;
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick)?;
    hq.sync(&stick, &NoProgress)?;
    a.sync(&stick, &NoProgress)?;
    hq.sync(&stick, &NoProgress)?;
    drop(a);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(a_home.join("Maildir").join(sub))?;
    }
    Ok((hq, a_home))
}

/// HQ's next bundle after it records visit `v-big-N` with 40 000 characters that do not
/// compress: the emails HQ sends for it at `max_message_bytes = 16384`.
fn genuine(base: &Path, hq: &mut Node, n: usize) -> Result<Vec<Vec<u8>>> {
    let note: String = noise(40_000, n as u64);
    hq.put(
        "visits",
        &format!("v-big-{n}"),
        &[("note".into(), Value::Str(note))],
    )?;
    let stick = base.join(format!("stick-{n}"));
    std::fs::create_dir_all(&stick)?;
    let out = hq.export(&stick, &NoProgress)?;
    let (path, _, _) = out.written.context("HQ wrote no bundle")?;
    let data = std::fs::read(&path)?;
    let name = blake3::hash(&data).to_hex()[..32].to_string();
    Ok(ferry_transport_email::render_emails(
        "hq@example.test",
        "a@example.test",
        &hq.email_tag(),
        &name,
        &data,
        16_384,
    )?)
}

/// Puts `fakes` fake parts into the Maildir, written the way an earlier ferry wrote parts
/// (with the dataset id, which anyone can read in a bundle's header): each claims part 1 of
/// 2 of a bundle nobody sent.
fn junk(maildir: &Path, dataset: &str, fakes: u32, load: Load) -> Result<()> {
    let part = |n: u32, bytes: usize| {
        let data: Vec<u8> = noise(bytes, u64::from(n)).into_bytes();
        let mut framed = format!(
            "ferry-part/1\nbundle: fake{n}\ndataset: {dataset}\npart: 1/2\noffset: 0\nlength: {}\nsize: {}\ndigest: blake3:{}\npart-digest: blake3:{}\n\n",
            data.len(),
            2 * data.len(),
            blake3::hash(&n.to_le_bytes()).to_hex(),
            blake3::hash(&data).to_hex()
        )
        .into_bytes();
        framed.extend_from_slice(&data);
        framed
    };
    match load {
        Load::None => {}
        Load::Whole(bytes) => {
            for n in 0..fakes {
                let atts = [(
                    format!("invoice{n}.ferry"),
                    noise(bytes, u64::from(n)).into_bytes(),
                )];
                let from = format!("s{n}@example.org");
                deliver(maildir, &format!("1-junk-{n:06}"), &email(&from, "", &atts))?;
            }
        }
        Load::OneEmail(bytes) => {
            let atts: Vec<(String, Vec<u8>)> = (0..fakes)
                .map(|n| (format!("fake{n}.part-1-of-2.ferrypart"), part(n, bytes)))
                .collect();
            deliver(
                maildir,
                "1-junk",
                &email("mallory@example.org", dataset, &atts),
            )?;
        }
        Load::Senders(bytes) | Load::OneSender(bytes) => {
            for n in 0..fakes {
                let from = match load {
                    Load::Senders(_) => format!("s{n}@example.org"),
                    _ => "mallory@example.org".to_string(),
                };
                let atts = [(format!("fake{n}.part-1-of-2.ferrypart"), part(n, bytes))];
                deliver(
                    maildir,
                    &format!("1-junk-{n:06}"),
                    &email(&from, dataset, &atts),
                )?;
            }
        }
    }
    Ok(())
}

/// An email from `from` with `atts` attached, and the ferry headers of an earlier version
/// naming `dataset` (none when it is empty).
fn email(from: &str, dataset: &str, atts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let headers = if dataset.is_empty() {
        String::new()
    } else {
        format!("X-Ferry-Version: 1\r\nX-Ferry-Dataset: {dataset}\r\n")
    };
    let mut m = format!(
        "From: {from}\r\nTo: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
         {headers}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
    );
    for (name, data) in atts {
        m.push_str(&format!(
            "--B\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(data)
        ));
    }
    m.push_str("--B--\r\n");
    m.into_bytes()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 4);
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            out.push(if k <= c.len() {
                A[(n >> (18 - 6 * k) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Delivers an email into a Maildir's `new/`, as a mail server does.
fn deliver(maildir: &Path, name: &str, raw: &[u8]) -> Result<()> {
    let tmp = maildir.join("tmp").join(name);
    std::fs::write(&tmp, raw)?;
    std::fs::rename(&tmp, maildir.join("new").join(name))?;
    Ok(())
}

/// Lowercase letters that do not compress.
fn noise(n: usize, seed: u64) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

fn has(home: &Path, id: &str) -> Result<bool> {
    Ok(Node::open(&Home::at(home))?.get("visits", id)?.is_some())
}

/// The home folder's size, without the Maildir kept in it for this benchmark.
fn home_size(home: &Path) -> u64 {
    std::fs::read_dir(home)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name() != "Maildir")
                .map(|e| tree_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn tree_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}
