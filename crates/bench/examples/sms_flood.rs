//! Hostile load on `ferry sms listen` (issue 18): junk SMS from made-up numbers as fast as
//! the listener takes them, while a member's genuine bundles arrive by SMS in between.
//! Prints what the junk cost (home growth, files, the listener's peak memory, `ferry
//! status` time) and the delay the member's genuine SMS saw (each part's answer, and each
//! bundle from its last part to "applied"). Goals (issue 18): home growth ≤ 50 MB, a
//! genuine part applied within 2 s.
//!
//! ```text
//! cargo build --release -p ferry-cli
//! cargo run --release -p ferry-bench --example sms_flood -- [JUNK] [BUNDLES]
//! ```
//!
//! (20 000 junk SMS and 10 genuine bundles by default.) It runs twice: with the default
//! `listen_rate` (strangers' SMS beyond 20 a second from one address are dropped unread),
//! and with the limit lifted so that every junk SMS is taken and dealt with. The real
//! `ferry` binary is used: `FERRY_BIN`, else `ferry` next to this example's folder.

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, bail};
use ferry_transport_sms::{frame, text};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HQ: &str = "+15550001";
const A: &str = "+15550002";
const THREADS: usize = 8;

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

struct Ferry {
    bin: PathBuf,
}

impl Ferry {
    fn cmd(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--home")
            .arg(home)
            .args(args)
            .env_remove("FERRY_HOME");
        c
    }

    fn ok(&self, home: &Path, args: &[&str]) -> Result<String> {
        let out = self.cmd(home, args).output()?;
        if !out.status.success() {
            bail!(
                "ferry {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn pct(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the fake gateway was asked to send: (to, text).
type SentLog = Arc<Mutex<Vec<(String, String)>>>;

/// A fake Kannel `sendsms` endpoint recording (to, text) of every SMS ferry sends.
fn fake_gateway() -> Result<(String, SentLog)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let query = target.split_once('?').map_or("", |x| x.1);
            let (mut to, mut text) = (String::new(), String::new());
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    match k {
                        "to" => to = form_decode(v),
                        "text" => text = form_decode(v),
                        _ => {}
                    }
                }
            }
            log.lock().unwrap().push((to, text));
            let _ = c.write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\nConnection: close\r\n\r\n0: ",
            );
        }
    });
    Ok((format!("http://127.0.0.1:{port}/cgi-bin/sendsms"), sent))
}

/// One request to the listener; its status (0: no answer), or 1 for a 200 that says the
/// SMS was dropped unread (a stranger's, beyond `listen_rate`).
fn request(port: u16, raw: &[u8]) -> u16 {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
    if c.write_all(raw).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 200 && text.contains("\r\n\r\ndropped") {
        return 1;
    }
    status
}

fn sms(port: u16, from: &str, text: &str) -> u16 {
    request(
        port,
        format!(
            "GET /sms?from={}&text={} HTTP/1.1\r\nHost: x\r\n\r\n",
            pct(from.as_bytes()),
            pct(text.as_bytes())
        )
        .as_bytes(),
    )
}

fn post(port: u16, body: &str) -> u16 {
    request(
        port,
        format!(
            "POST /sms HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn texts(message: &[u8], tag: u16) -> Vec<String> {
    let lay = frame::layout(message.len(), text::bytes_for(160)).expect("fits");
    (0..lay.count)
        .map(|i| text::encode(&frame::data_frame(tag, message, lay, i)))
        .collect()
}

/// Bytes on disk (allocated blocks, as `du`) and files below `dir`.
fn disk_usage(dir: &Path) -> (u64, usize) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                let (b, n) = disk_usage(&e.path());
                total = (total.0 + b + m.blocks() * 512, total.1 + n);
            } else {
                total = (total.0 + m.blocks() * 512, total.1 + 1);
            }
        }
    }
    total
}

/// A field of /proc/PID/status in kB.
fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Listen(Child);

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Outcome {
    junk: usize,
    answered: [usize; 5], // taken (200), dropped unread (200), 503, other, none
    elapsed: Duration,
    growth: u64,
    files_before: usize,
    files_after: usize,
    peak_rss_kb: u64,
    rss_before_kb: u64,
    part_ms: Vec<f64>,
    applied_ms: Vec<f64>,
    status_ms: f64,
    log_lines: usize,
}

fn phase(ferry: &Ferry, junk: usize, bundles: usize, listen_rate: Option<u32>) -> Result<Outcome> {
    let base = tempfile::tempdir()?;
    let (hq, a) = (base.path().join("hq"), base.path().join("a"));
    let (gw_url, gw) = fake_gateway()?;
    ferry.ok(&hq, &["init", "--name", "hq", "--create", "clinic visits"])?;
    ferry.ok(&hq, &["contact", "set", "--phone", HQ])?;
    let inv = base.path().join("a.invite");
    let out = ferry.ok(
        &hq,
        &[
            "invite",
            "--out",
            inv.to_str().unwrap(),
            "--label",
            "clinic-a",
        ],
    )?;
    let code = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("code:"))
        .map(|c| c.trim().to_string());
    let mut join = vec![
        "init",
        "--name",
        "clinic-a",
        "--join",
        inv.to_str().unwrap(),
    ];
    if let Some(c) = &code {
        join.extend(["--code", c.as_str()]);
    }
    ferry.ok(&a, &join)?;
    ferry.ok(&a, &["contact", "set", "--phone", A])?;
    let stick = base.path().join("stick");
    std::fs::create_dir_all(&stick)?;
    for h in [&hq, &a, &hq, &a] {
        ferry.ok(h, &["sync", stick.to_str().unwrap()])?;
    }
    let config = |phone: &str| {
        format!(
            "[sms]\ngateway = \"kannel\"\nfrom = \"{phone}\"\nsendsms_url = \"{gw_url}\"\nhousekeeping_seconds = 1\ndaily_budget = 10000\n{}",
            listen_rate.map_or(String::new(), |r| format!("listen_rate = {r}\n"))
        )
    };
    std::fs::write(hq.join("ferry.toml"), config(HQ))?;
    std::fs::write(a.join("ferry.toml"), config(A))?;
    // The genuine bundles, one new visit each, as clinic A sends them.
    let mut genuine: Vec<Vec<String>> = Vec::new();
    for i in 0..bundles {
        ferry.ok(
            &a,
            &[
                "put",
                "visits",
                &format!("g-{i:03}"),
                "patient_id=p-004512",
                "village=Kisumu Ndogo",
                "weight_kg=61.5",
                "diagnosis=malaria",
            ],
        )?;
        let mark = gw.lock().unwrap().len();
        ferry.ok(&a, &["send", "sms"])?;
        let t: Vec<String> = gw.lock().unwrap()[mark..]
            .iter()
            .filter(|(to, _)| to.trim_start_matches('+') == HQ.trim_start_matches('+'))
            .map(|(_, t)| t.clone())
            .collect();
        if t.is_empty() {
            bail!("clinic A sent no SMS for bundle {i}");
        }
        genuine.push(t);
    }
    let port = free_port()?;
    let log_path = base.path().join("listen.log");
    let child = ferry
        .cmd(
            &hq,
            &["sms", "listen", "--bind", &format!("127.0.0.1:{port}")],
        )
        .stdout(std::fs::File::create(&log_path)?)
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let listener = Listen(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("ferry sms listen did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_before_kb = proc_kb(pid, "VmRSS:");
    let (before, files_before) = disk_usage(&hq);

    // The flood.
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new([0usize; 5]));
    let flood_start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|k| {
            let (sent, counts, done) = (sent.clone(), counts.clone(), done.clone());
            std::thread::spawn(move || {
                let big: Vec<u8> = (0..2300u32).map(|i| (i * 13 + k as u32) as u8).collect();
                loop {
                    let i = sent.fetch_add(1, Ordering::SeqCst);
                    if i >= junk {
                        sent.fetch_sub(1, Ordering::SeqCst);
                        break;
                    }
                    let from = format!("+1999{i:07}");
                    let tag = (i % 16_000) as u16;
                    let status = match i % 5 {
                        0 => sms(port, &from, &texts(&big, tag)[0]),
                        1 => sms(port, &from, &texts(&big[..100], tag)[0]),
                        2 => sms(port, &from, "WIN a prize! Reply YES to claim"),
                        3 => post(
                            port,
                            &format!("from={}&text={}", pct(from.as_bytes()), "x".repeat(15_000)),
                        ),
                        _ => sms(port, &format!("not-a-number-{i}"), "x"),
                    };
                    let slot = match status {
                        200 => 0,
                        1 => 1,
                        503 => 2,
                        0 => 4,
                        _ => 3,
                    };
                    counts.lock().unwrap()[slot] += 1;
                }
                done.store(true, Ordering::SeqCst);
            })
        })
        .collect();
    // Genuine bundles at even points of the flood.
    let mut part_ms = Vec::new();
    let mut applied_ms = Vec::new();
    let mut peak_sampled = 0;
    for (i, parts) in genuine.iter().enumerate() {
        let at = junk * (i + 1) / (bundles + 1);
        while sent.load(Ordering::SeqCst) < at && !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            peak_sampled = peak_sampled.max(proc_kb(pid, "VmRSS:"));
        }
        let mut last = Instant::now();
        for t in parts {
            let t0 = Instant::now();
            let st = sms(port, A, t);
            part_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            if st != 200 {
                bail!("a genuine part was answered {st} (1: dropped)");
            }
            last = Instant::now();
        }
        let want = i + 1;
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.matches("applied  a bundle from clinic-a").count() >= want {
                break;
            }
            if last.elapsed() > Duration::from_secs(120) {
                bail!("genuine bundle {i} was not applied within 120 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        applied_ms.push(last.elapsed().as_secs_f64() * 1e3);
    }
    for t in threads {
        let _ = t.join();
    }
    let elapsed = flood_start.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    let (after, files_after) = disk_usage(&hq);
    let peak_rss_kb = proc_kb(pid, "VmHWM:").max(peak_sampled);
    let t0 = Instant::now();
    ferry.ok(&hq, &["status"])?;
    let status_ms = t0.elapsed().as_secs_f64() * 1e3;
    let log_lines = std::fs::read_to_string(&log_path)?.lines().count();
    drop(listener);
    let answered = *counts.lock().unwrap();
    Ok(Outcome {
        junk,
        answered,
        elapsed,
        growth: after.saturating_sub(before),
        files_before,
        files_after,
        peak_rss_kb,
        rss_before_kb,
        part_ms,
        applied_ms,
        status_ms,
        log_lines,
    })
}

fn print(title: &str, o: &mut Outcome) {
    println!("\n{title}");
    println!(
        "  junk SMS sent            {} in {:.1} s ({:.0}/s), {THREADS} connections at a time",
        o.junk,
        o.elapsed.as_secs_f64(),
        o.junk as f64 / o.elapsed.as_secs_f64()
    );
    println!(
        "  answered                 200 taken: {}, 200 dropped unread: {}, 503: {}, other: {}, none: {}",
        o.answered[0], o.answered[1], o.answered[2], o.answered[3], o.answered[4]
    );
    println!(
        "  home growth              {:.2} MB (goal ≤ 50 MB); files {} → {}",
        o.growth as f64 / 1e6,
        o.files_before,
        o.files_after
    );
    println!(
        "  listener memory          {:.1} MB before, {:.1} MB peak",
        o.rss_before_kb as f64 / 1e3,
        o.peak_rss_kb as f64 / 1e3
    );
    let n = o.applied_ms.len();
    println!(
        "  genuine part answered    median {:.0} ms, max {:.0} ms ({} parts)",
        percentile(&mut o.part_ms, 0.5),
        percentile(&mut o.part_ms, 1.0),
        o.part_ms.len()
    );
    println!(
        "  genuine bundle applied   median {:.0} ms, max {:.0} ms after its last part ({n} bundles; goal ≤ 2 s)",
        percentile(&mut o.applied_ms, 0.5),
        percentile(&mut o.applied_ms, 1.0)
    );
    println!("  ferry status afterwards  {:.0} ms", o.status_ms);
    println!("  listener output          {} lines", o.log_lines);
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let junk: usize = args.first().map_or(Ok(20_000), |a| a.parse())?;
    let bundles: usize = args.get(1).map_or(Ok(10), |a| a.parse())?;
    let ferry = Ferry { bin: ferry_bin()? };
    println!(
        "sms_flood: {junk} junk SMS into `ferry sms listen`, {bundles} genuine bundles from a member among them ({})",
        ferry.bin.display()
    );
    println!(
        "junk: one in five each of a first part of a 20-part message, a whole one-part message (refused by the node), text that is not ferry's, a 15 KB POST, a sender that is not a number; every sender a different made-up number"
    );
    let mut default = phase(&ferry, junk, bundles, None)?;
    print(
        "default limits (strangers' SMS beyond 20 a second per address are dropped unread)",
        &mut default,
    );
    let mut open = phase(&ferry, junk, bundles, Some(1_000_000))?;
    print(
        "limit lifted (listen_rate = 1000000: every junk SMS is taken)",
        &mut open,
    );
    Ok(())
}
