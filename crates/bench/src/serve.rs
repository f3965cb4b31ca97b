//! `ferry-bench serve`: the local API (`ferry serve`, issue 15) under load, measured from
//! outside. It starts the real `ferry` binary built next to this one, talks HTTP to it over
//! loopback with ureq (one keep-alive connection per client thread) and reads the server's
//! memory from `/proc`: single-record writes per second, records per second in batches, how
//! long a write takes to show on a feed (Server-Sent Events), the server's memory with 100
//! feeds open, and how long a stick with 10 000 new records takes from appearing in a watched
//! folder to "safe to remove".

use crate::workload;
use anyhow::{Context, Result, bail};
use ferry_node::{FileFormat, Home, NoProgress, Node};
use serde_json::{Value as Json, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEED: u64 = 20261204;

/// A running `ferry serve`.
struct Server {
    child: Child,
    base: String,
    token: String,
    lines: Mutex<mpsc::Receiver<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(ferry: &Path, home: &Path, watch: Option<&Path>) -> Result<Server> {
        let mut cmd = Command::new(ferry);
        cmd.arg("--home")
            .arg(home)
            .args(["serve", "--bind", "127.0.0.1:0"]);
        if let Some(w) = watch {
            cmd.arg("--watch").arg(w);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", ferry.display()))?;
        let stdout = child.stdout.take().context("the server's output")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .context("ferry serve printed nothing in 30 s")?;
        let addr = first
            .strip_prefix("ferry serve: listening on http://")
            .with_context(|| format!("ferry serve's first line: {first:?}"))?
            .to_string();
        let token = std::fs::read_to_string(home.join("api.token"))?
            .trim()
            .to_string();
        Ok(Server {
            child,
            base: format!("http://{addr}"),
            token,
            lines: Mutex::new(lines),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_idle_connections_per_host(4)
                .build(),
        )
    }

    /// One request; the answer's status and JSON body.
    fn call(&self, agent: &ureq::Agent, method: &str, path: &str, body: &Json) -> Result<Json> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let text = body.to_string();
        let resp = match method {
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .content_type("application/json")
                .send(&text),
            "POST" => return self.send_text(agent, path, &text),
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            _ => bail!("no {method} here"),
        };
        let mut resp = resp.with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// POSTs a body already serialized; the answer's JSON.
    fn send_text(&self, agent: &ureq::Agent, path: &str, body: &str) -> Result<Json> {
        let mut resp = agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .content_type("application/json")
            .send(body)
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Opens the feed as Server-Sent Events from now; each change's record id and when it
    /// arrived go to `seen`.
    fn follow(&self, seen: mpsc::Sender<(String, Instant)>) -> Result<std::thread::JoinHandle<()>> {
        let agent = self.agent();
        let url = format!("{}/v1/changes?since=now", self.base);
        let resp = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "text/event-stream")
            .call()
            .context("opening the feed")?;
        if resp.status().as_u16() != 200 {
            bail!("the feed answered {}", resp.status());
        }
        let reader = BufReader::new(resp.into_body().into_reader());
        Ok(std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let now = Instant::now();
                let Ok(doc) = serde_json::from_str::<Json>(data.trim()) else {
                    continue;
                };
                let id = doc["id"].as_str().unwrap_or_default().to_string();
                if seen.send((id, now)).is_err() {
                    break;
                }
            }
        }))
    }
}

/// A visit as the JSON object the API takes.
fn visit(i: u64) -> (String, Json) {
    let (id, fields) = workload::visit(SEED, i);
    let mut obj = serde_json::Map::new();
    for (name, v) in workload::FIELDS.iter().zip(&fields) {
        obj.insert(name.to_string(), ferry_node::json::to_json(v));
    }
    (id, Json::Object(obj))
}

/// Resident memory of a process now and at its peak, kB.
pub(crate) fn rss_kb(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{name} of process {pid}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the `ferry` binary of this build is (next to this benchmark's).
fn ferry_binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let ferry = me.with_file_name("ferry");
    if !ferry.is_file() {
        bail!(
            "{} is not built; run `cargo build --release -p ferry-cli -p ferry-bench` first",
            ferry.display()
        );
    }
    Ok(ferry)
}

/// Runs every measurement; returns a Markdown report.
pub fn run(writes: u64, stick: u64) -> Result<String> {
    let ferry = ferry_binary()?;
    let tmp = tempfile::tempdir()?;
    let base = tmp.path();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo build --release -p ferry-cli -p ferry-bench && target/release/ferry-bench serve {writes} {stick}`: the real `ferry serve` on loopback, clients in this process (ureq, one keep-alive connection each), both on the same {} cores. Every write is flushed to disk before it is answered (SQLite synchronous=FULL); single writes that arrive together share one flush (group commit).\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out, "| measurement | figure | goal |\n|---|---:|---:|");

    // One home for the API measurements.
    let home = base.join("app");
    drop(Node::create(&Home::at(&home), "clinic-a", "bench")?);
    let srv = Server::start(&ferry, &home, None)?;

    // Single-record writes, 1, 4 and 16 clients at once.
    for clients in [1u64, 4, 16] {
        let per = writes / clients;
        let start = Instant::now();
        let lat = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|sc| -> Result<()> {
            let mut handles = Vec::new();
            for c in 0..clients {
                let (srv, lat) = (&srv, lat.clone());
                handles.push(sc.spawn(move || -> Result<()> {
                    let agent = srv.agent();
                    let mut mine = Vec::with_capacity(per as usize);
                    for i in 0..per {
                        let (_, rec) = visit(c * per + i);
                        let id = format!("w{clients}-{c}-{i}");
                        let t = Instant::now();
                        srv.call(
                            &agent,
                            "PUT",
                            &format!("/v1/collections/visits/records/{id}"),
                            &rec,
                        )?;
                        mine.push(t.elapsed());
                    }
                    lat.lock().expect("latencies").extend(mine);
                    Ok(())
                }));
            }
            for h in handles {
                h.join().expect("a writer")?;
            }
            Ok(())
        })?;
        let secs = start.elapsed().as_secs_f64();
        let mut lat = lat.lock().expect("latencies").clone();
        lat.sort();
        let _ = writeln!(
            out,
            "| single-record PUTs, {clients} client(s), {} writes | {:.0} writes/s (p50 {:.2} ms, p99 {:.2} ms) | ≥ 5 000/s |",
            per * clients,
            (per * clients) as f64 / secs,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
        );
        println!("{}", out.lines().last().unwrap_or_default());
    }

    // Batches of 1 000 records from 1 and 2 clients at once, made (and serialized) before
    // the clock starts: the client's JSON is not the server's cost.
    for clients in [1u64, 2] {
        let (per, size) = (25u64, 1_000u64);
        let bodies: Vec<Vec<String>> = (0..clients)
            .map(|c| {
                (0..per)
                    .map(|b| {
                        let items: Vec<Json> = (0..size)
                            .map(|i| {
                                let (id, rec) = visit((c * per + b) * size + i);
                                json!({"op": "put", "collection": "visits", "id": format!("b{clients}-{id}"), "fields": rec})
                            })
                            .collect();
                        json!({ "writes": items }).to_string()
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        std::thread::scope(|sc| -> Result<()> {
            let handles: Vec<_> = bodies
                .iter()
                .map(|mine| {
                    let srv = &srv;
                    sc.spawn(move || -> Result<()> {
                        let agent = srv.agent();
                        for body in mine {
                            let r = srv.send_text(&agent, "/v1/batch", body)?;
                            if r["written"].as_u64() != Some(size) {
                                bail!("a batch answered {r}");
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("a client")?;
            }
            Ok(())
        })?;
        let secs = start.elapsed().as_secs_f64();
        let n = clients * per * size;
        let _ = writeln!(
            out,
            "| batches of {size} records, {clients} client(s), {n} records | {:.0} records/s | ≥ 50 000/s |",
            n as f64 / secs
        );
        println!("{}", out.lines().last().unwrap_or_default());
    }

    // Write → feed: one follower, writes 5 ms apart.
    let feed_line = |out: &mut String, label: &str, lat: &mut Vec<Duration>| {
        lat.sort();
        let _ = writeln!(
            out,
            "| {label}: write → on the feed, {} arrivals | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | p99 ≤ 50 ms |",
            lat.len(),
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
        );
        println!("{}", out.lines().last().unwrap_or_default());
    };
    {
        let (tx, rx) = mpsc::channel();
        let _follower = srv.follow(tx)?;
        let lat = measure_feed(&srv, &[rx], 500, "f1")?;
        let mut lat = lat.into_iter().next().unwrap_or_default();
        feed_line(&mut out, "1 feed client, 500 writes 5 ms apart", &mut lat);
    }

    // 100 feeds open at once: the same, and the server's memory.
    {
        let before = rss_kb(srv.pid())?;
        let mut rxs = Vec::new();
        let mut followers = Vec::new();
        for _ in 0..100 {
            let (tx, rx) = mpsc::channel();
            followers.push(srv.follow(tx)?);
            rxs.push(rx);
        }
        let lats = measure_feed(&srv, &rxs, 200, "f100")?;
        let mut all: Vec<Duration> = lats.into_iter().flatten().collect();
        feed_line(
            &mut out,
            "100 feed clients, 200 writes each seen by all",
            &mut all,
        );
        let (rss, peak) = rss_kb(srv.pid())?;
        let _ = writeln!(
            out,
            "| server memory with 100 feeds open (before opening them: {:.1} MB) | {:.1} MB now, {:.1} MB peak over the whole run | ≤ 100 MB |",
            before.0 as f64 / 1024.0,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        println!("{}", out.lines().last().unwrap_or_default());
    }
    drop(srv);

    // A stick with `stick` new records appears in a watched folder.
    {
        let (secs, rss) = stick_run(&ferry, base, stick)?;
        let _ = writeln!(
            out,
            "| a stick with {stick} new records appears in a watched folder → \"safe to remove\" (imported and written back; the watcher looks every second) | {secs:.2} s (server peak {:.1} MB) | ≤ 5 s |",
            rss as f64 / 1024.0
        );
        println!("{}", out.lines().last().unwrap_or_default());
    }
    Ok(out)
}

/// Writes `n` records 5 ms apart and returns, per follower, how long each took from the
/// start of its write to arriving on that follower's feed.
fn measure_feed(
    srv: &Server,
    followers: &[mpsc::Receiver<(String, Instant)>],
    n: u64,
    tag: &str,
) -> Result<Vec<Vec<Duration>>> {
    let agent = srv.agent();
    let mut sent = std::collections::HashMap::new();
    for i in 0..n {
        let (_, rec) = visit(i);
        let id = format!("{tag}-{i}");
        let t = Instant::now();
        srv.call(
            &agent,
            "PUT",
            &format!("/v1/collections/visits/records/{id}"),
            &rec,
        )?;
        sent.insert(id, t);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = Vec::new();
    for rx in followers {
        let mut lat = Vec::with_capacity(n as usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while (lat.len() as u64) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (id, at) = rx
                .recv_timeout(left)
                .with_context(|| format!("a follower saw {} of {n} changes", lat.len()))?;
            if let Some(t) = sent.get(&id) {
                lat.push(at.duration_since(*t));
            }
        }
        out.push(lat);
    }
    Ok(out)
}

/// HQ puts `n` new visits on a stick; clinic A's server watches a folder; the stick is moved
/// in. Returns the seconds from the move to "safe to remove" and the server's peak memory.
fn stick_run(ferry: &Path, base: &Path, n: u64) -> Result<(f64, u64)> {
    let (mut hq, a) = crate::two_laptops(base)?;
    let a_home = a.home().clone();
    drop(a);
    let mut jsonl = Vec::new();
    for i in 0..n {
        let (id, fields) = workload::visit(SEED, i);
        jsonl.extend_from_slice(workload::json_line(&id, &fields).as_bytes());
        jsonl.push(b'\n');
    }
    hq.load(
        "visits",
        FileFormat::JsonLines,
        &mut &jsonl[..],
        None,
        &NoProgress,
    )?;
    let stick = base.join("stick");
    std::fs::create_dir(&stick)?;
    hq.sync(&stick, &NoProgress)?;
    drop(hq);
    let media = base.join("media");
    std::fs::create_dir(&media)?;
    let srv = Server::start(ferry, a_home.root(), Some(&media))?;
    let start = Instant::now();
    std::fs::rename(&stick, media.join("stick"))?;
    loop {
        let left = Duration::from_secs(120).saturating_sub(start.elapsed());
        let line = srv
            .lines
            .lock()
            .expect("the server's lines")
            .recv_timeout(left)
            .context("no \"safe to remove\" in 120 s")?;
        if line.contains("safe to remove") {
            break;
        }
        if line.contains("failed") || line.contains("error") {
            bail!("the stick's sync: {line}");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let agent = srv.agent();
    let status = srv.call(&agent, "GET", "/v1/status", &Json::Null)?;
    if status["records"].as_u64() != Some(n) {
        bail!("clinic A holds {} records, not {n}", status["records"]);
    }
    let (_, peak) = rss_kb(srv.pid())?;
    Ok((secs, peak))
}
