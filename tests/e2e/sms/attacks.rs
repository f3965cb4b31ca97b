//! Issue 18 (HIGH), the SMS path: regression tests for findings 1, 2, 3, 5, 9, 10 and 11,
//! each over the real `ferry sms listen` (HTTP, as a gateway calls it), and through real
//! Kannel where that adds something (a stranger's SMS from the phone network).
//!
//! Two laptops, HQ (+15550001, the admin) and clinic A (+15550002), each know the other's
//! published number (one stick round trip). Their SMS gateway is a fake Kannel `sendsms`
//! endpoint in the test that records every SMS ferry asks it to send, so "ferry sent
//! nothing" is a count. Hostile SMS are written with the crate's own frame codec; the
//! hostile bundle is issue 10's keyless forged snapshot (tests/e2e/forge.rs).
//!
//! What the fixed `sms listen` prints and these tests rely on (keywords): `applied  a
//! bundle from LABEL by SMS from NUMBER`, `REFUSED  a bundle by SMS from NUMBER[ (not a
//! member's number)]: REASON`, `set aside an SMS from …`, `ignored  …`, reports in words.

use super::net::{KANNEL_PASS, KANNEL_USER, Kannel, Network, free_port};
use crate::forge::keyless_snapshot;
use crate::util::{Laptop, s};
use ferry_transport_sms::frame::{self, Frame, Gone, Missing};
use ferry_transport_sms::{Phone, text};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HQ: &str = "+15550001";
const A: &str = "+15550002";
/// How long a listener may take to do what is waited for (a liveness bound, not a timing
/// assertion).
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// A fake SMS gateway, the laptops, the listener
// ---------------------------------------------------------------------------------------

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

/// A fake Kannel `sendsms` endpoint: records (to, text) of every SMS ferry hands it.
struct Gateway {
    url: String,
    port: u16,
    sent: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Gateway {
    fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
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
                let mut to = String::new();
                let mut text = String::new();
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
        Gateway {
            url: format!("http://127.0.0.1:{port}/cgi-bin/sendsms"),
            port,
            sent,
            stop,
        }
    }

    /// Every SMS handed over so far: (to, text).
    fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }

    /// The texts of the SMS handed over for `to` since `from` (an index into `sent`).
    fn texts_to(&self, to: &str, from: usize) -> Vec<String> {
        self.sent()[from..]
            .iter()
            .filter(|(t, _)| t.trim_start_matches('+') == to.trim_start_matches('+'))
            .map(|(_, x)| x.clone())
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `[sms]` for a laptop: the fake gateway, housekeeping every second, repairs asked at
/// once, and `extra` lines.
fn configure(l: &Laptop, sendsms_url: &str, phone: &str, extra: &str) {
    std::fs::write(
        l.home.join("ferry.toml"),
        format!(
            "[sms]\ngateway = \"kannel\"\nfrom = \"{phone}\"\nsendsms_url = \"{sendsms_url}\"\nusername = \"{KANNEL_USER}\"\npassword_env = \"FERRY_TEST_SMS_PASSWORD\"\nhousekeeping_seconds = 1\nrepair_after_minutes = 0\n{extra}"
        ),
    )
    .unwrap();
}

/// HQ with three visits and clinic A, each knowing the other's published number, both
/// configured for `sendsms_url`.
fn pair(base: &Path, sendsms_url: &str, extra: &str) -> (Laptop, Laptop) {
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    for (id, v) in [("v1", "a=one"), ("v2", "a=two"), ("v3", "a=three")] {
        hq.ok(&["put", "visits", id, v]);
    }
    hq.ok(&["contact", "set", "--phone", HQ]);
    let inv = base.join("a.invite");
    let code = hq.invite(&inv, "clinic-a");
    let a = Laptop::new(base, "a");
    a.join("clinic-a", &inv, code.as_deref());
    a.ok(&["contact", "set", "--phone", A]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    for l in [&hq, &a, &hq, &a] {
        l.ok(&["sync", s(&stick)]);
    }
    assert!(a.ok(&["contact", "list"]).contains(HQ));
    assert!(hq.ok(&["contact", "list"]).contains(A));
    configure(&hq, sendsms_url, HQ, extra);
    configure(&a, sendsms_url, A, extra);
    (hq, a)
}

/// Runs a `ferry` SMS command (it reads the gateway password from the environment) and
/// expects success; returns its standard output.
fn run_sms(l: &Laptop, args: &[&str]) -> String {
    let out = l
        .cmd(args)
        .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `ferry sms listen`, killed (by its PID) when dropped.
struct Listen {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Listen {
    fn start(l: &Laptop, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Listen {
        let log = l.home.with_extension(format!("listen-{port}.log"));
        let mut cmd = l.cmd(&["sms", "listen", "--bind", &format!("127.0.0.1:{port}")]);
        cmd.args(extra)
            .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut me = Listen { child, log, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = me.child.try_wait() {
                panic!("ferry sms listen exited ({st}): {}", me.all());
            }
            assert!(start.elapsed() < PATIENCE, "ferry sms listen did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn on(l: &Laptop) -> Listen {
        Listen::start(l, free_port(), &[], &[])
    }

    /// What it printed so far.
    fn out(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Standard output and error, for failure messages.
    fn all(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.out(),
            std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
        )
    }

    /// Waits until its output satisfies `done`.
    #[track_caller]
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !done(&self.out()) {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}\n{}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Lets two housekeeping rounds pass (they run every second).
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(2500));
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes to a listener and returns its status code (0 when there was no answer).
fn request(port: u16, raw: &[u8]) -> u16 {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if c.write_all(raw).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// One SMS, as a gateway hands it over (GET).
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

/// One SMS as a form POST.
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

/// A message cut into text SMS under `tag`, as ferry sends it.
fn texts(message: &[u8], tag: u16) -> Vec<String> {
    let lay = frame::layout(message.len(), text::bytes_for(160)).unwrap();
    (0..lay.count)
        .map(|i| text::encode(&frame::data_frame(tag, message, lay, i)))
        .collect()
}

fn control(f: Vec<u8>) -> String {
    text::encode(&f)
}

fn decode(t: &str) -> Frame {
    frame::decode(&text::decode(t).unwrap()).unwrap()
}

/// The same SMS with one byte of its part changed and its checksum made right again: what
/// a stranger who knows the tag (or guesses it) can send.
fn forged_part(t: &str) -> String {
    let mut bytes = text::decode(t).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x5A;
    let crc = frame::crc16(&bytes[..n - 2]);
    bytes[n - 2..].copy_from_slice(&crc.to_be_bytes());
    text::encode(&bytes)
}

/// Bytes a folder takes on disk (allocated blocks, as `du` counts them) and its files.
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

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

// ---------------------------------------------------------------------------------------
// Finding 1: the keyless forged snapshot arrives by SMS
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 1: issue 10's keyless forged snapshot, sent to `sms listen` as SMS
/// from a made-up number (and again claiming the admin's number), is refused by the same
/// gate as a file from a stick, reported as REFUSED with the reason (never "already
/// applied", never as coming from a member), and changes no record; the listener then
/// still applies what the admin really sends. (On 203b295 the refused message stayed in
/// the SMS mailbox and was printed as "skipped …: already applied" on every later event.)
#[test]
fn a_keyless_forged_snapshot_by_sms_from_a_made_up_number_is_refused_and_changes_nothing() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (hq, a) = pair(base.path(), &gw.url, "");
    let before = a.list("visits");
    let l = Listen::on(&a);
    let forged = keyless_snapshot(&a);
    for t in texts(&forged, 777) {
        assert_eq!(sms(l.port, "+19995550123", &t), 200);
    }
    for t in texts(&forged, 778) {
        assert_eq!(sms(l.port, HQ, &t), 200);
    }
    // More SMS after them, so the listener has later events to (wrongly) retry them on.
    for n in 0..3 {
        sms(l.port, &format!("+1999555020{n}"), "hello?");
    }
    l.wait_for("both forgeries to be refused", |o| {
        lines_with(o, "REFUSED").len() >= 2 && o.contains("+19995550202")
    });
    l.settle();
    let out = l.out();
    assert!(
        !out.contains("already"),
        "a refused bundle was called already applied:\n{out}"
    );
    let refused = lines_with(&out, "REFUSED");
    assert_eq!(refused.len(), 2, "each forgery is reported once:\n{out}");
    for line in &refused {
        assert!(line.starts_with("REFUSED"), "{line}");
        assert!(line.contains("plaintext"), "the reason is given: {line}");
        assert!(
            !line.contains("hq") && !line.contains("clinic"),
            "a refused bundle is attributed to no member: {line}"
        );
    }
    assert!(refused[0].contains("+19995550123") && refused[0].contains("not a member's number"));
    assert!(!out.lines().any(|l| l.starts_with("applied")), "{out}");
    assert_eq!(a.list("visits"), before, "the forgery changed records");
    assert!(a.status()["quarantined"].as_u64().unwrap() >= 1);

    // The listener still applies what HQ really sends.
    hq.ok(&["put", "visits", "v4", "a=four"]);
    let mark = gw.sent().len();
    run_sms(&hq, &["send", "sms"]);
    for t in gw.texts_to(A, mark) {
        assert_eq!(sms(l.port, HQ, &t), 200);
    }
    l.wait_for("HQ's bundle to be applied", |o| {
        o.contains("applied  a bundle from hq by SMS from +15550001")
    });
    assert!(a.list("visits").contains("v4"));
}

// ---------------------------------------------------------------------------------------
// Finding 2: strangers make ferry send SMS
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 2: 100 forged "missing parts" requests and 100 "gone" notices from
/// 100 made-up numbers, and fake first parts from 50 more (repairs asked at once), make
/// ferry send no SMS at all; 40 forged requests claiming HQ's number for every part A sent
/// it are answered within a quarter of HQ's daily budget, so A's next change still goes
/// out at once. (On 203b295: one "gone" SMS per stranger, 195 resends for 40 requests,
/// and repair requests to every fake sender.)
#[test]
fn strangers_cannot_make_ferry_send_sms_and_forged_repairs_cannot_spend_a_members_budget() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (_hq, a) = pair(base.path(), &gw.url, "daily_budget = 20\n");
    a.ok(&[
        "put",
        "visits",
        "a1",
        "note=from clinic A",
        "weight_kg=61.5",
    ]);
    run_sms(&a, &["send", "sms"]);
    let to_hq = gw.texts_to(HQ, 0);
    assert!(!to_hq.is_empty());
    let (tag, count) = match decode(&to_hq[0]) {
        Frame::Data { tag, count, .. } => (tag, count),
        other => panic!("{other:?}"),
    };
    let l = Listen::on(&a);
    let mark = gw.sent().len();
    // Strangers' SMS come at 25 a second, so that none is dropped unread for coming faster
    // than `listen_rate` (20 a second, bursts of 100): each is taken and dealt with.
    let pace = || std::thread::sleep(Duration::from_millis(40));
    for n in 0..100u16 {
        let from = format!("+1999555{n:04}");
        let missing = frame::missing_frames(
            &[Missing {
                tag: n,
                count: 3,
                parts: vec![0, 1, 2],
            }],
            123,
        );
        assert_eq!(sms(l.port, &from, &control(missing[0].clone())), 200);
        pace();
        let gone = frame::gone_frames(&[Gone { tag: n, count: 3 }], 123);
        assert_eq!(sms(l.port, &from, &control(gone[0].clone())), 200);
        pace();
    }
    let junk: Vec<u8> = (0..500u32).map(|i| (i * 7) as u8).collect();
    for n in 0..50u16 {
        let first = &texts(&junk, n)[0];
        assert_eq!(sms(l.port, &format!("+1888555{n:04}"), first), 200);
        pace();
    }
    for _ in 0..40 {
        let req = frame::missing_frames(
            &[Missing {
                tag,
                count,
                parts: (0..count).collect(),
            }],
            123,
        );
        assert_eq!(sms(l.port, HQ, &control(req[0].clone())), 200);
    }
    l.settle();
    l.settle();
    let after = &gw.sent()[mark..];
    let to_strangers: Vec<_> = after
        .iter()
        .filter(|(to, _)| to.trim_start_matches('+') != HQ.trim_start_matches('+'))
        .collect();
    assert!(
        to_strangers.is_empty(),
        "ferry sent SMS to numbers that are no member's: {to_strangers:?}\n{}",
        l.all()
    );
    assert!(
        after.len() <= 5,
        "{} repair SMS to HQ; at most a quarter of its daily budget of 20",
        after.len()
    );
    let out = l.out();
    assert!(
        out.contains("ignored  a request for missing SMS parts from a number that is no member's"),
        "{out}"
    );
    assert!(!out.contains("dropped"), "every SMS was dealt with: {out}");
    // The next real change goes out today, whole.
    a.ok(&["put", "visits", "a2", "note=the next change"]);
    let sent = run_sms(&a, &["send", "sms"]);
    assert!(sent.contains("sent     hq (+15550001)"), "{sent}");
    assert!(!sent.contains("next day"), "{sent}");
}

// ---------------------------------------------------------------------------------------
// Finding 3: no token, no TLS, and disk use that only grows
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 3: `sms listen` had no token or secret option and served any
/// address. Beyond loopback it now refuses to start without a token and TLS; with both it
/// speaks HTTPS and answers 401 to a request without the token; on loopback a configured
/// token is required too. (On 203b295 `--bind 0.0.0.0:PORT` just listened, in clear.)
#[test]
fn sms_listen_beyond_loopback_needs_a_token_and_tls() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (_hq, a) = pair(base.path(), &gw.url, "");
    let port = free_port();
    let mut child = a
        .cmd(&["sms", "listen", "--bind", &format!("0.0.0.0:{port}")])
        .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferry sms listen started on 0.0.0.0 without a token and TLS");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("token") && err.contains("TLS"), "{err}");

    // With a token and a certificate, it serves HTTPS on every address.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (base.path().join("cert.pem"), base.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let token = "a-long-random-token-0123456789";
    let port = free_port();
    let log = base.path().join("tls-listen.log");
    let mut child = a
        .cmd(&[
            "sms",
            "listen",
            "--bind",
            &format!("0.0.0.0:{port}"),
            "--listen-token-env",
            "FERRY_TEST_LISTEN_TOKEN",
            "--tls-cert",
            s(&cert_pem),
            "--tls-key",
            s(&key_pem),
        ])
        .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
        .env("FERRY_TEST_LISTEN_TOKEN", token)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the HTTPS listener exited"
        );
        assert!(start.elapsed() < PATIENCE);
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
            .build(),
    );
    let url = |tok: &str| format!("https://127.0.0.1:{port}/sms?from=%2B15550001&text=hello{tok}");
    let status = |u: String| {
        agent
            .get(&u)
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(status(url("")), 401, "no token");
    assert_eq!(status(url("&token=guess")), 401, "a wrong token");
    assert_eq!(status(url(&format!("&token={token}"))), 200, "the token");
    // Plain HTTP is not spoken there.
    assert_ne!(
        request(port, b"GET /sms?from=1&text=a HTTP/1.1\r\n\r\n"),
        200
    );
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("listening on https://"), "{out}");
    let _ = child.kill();
    let _ = child.wait();

    // On loopback a configured token is required as well.
    let l = Listen::start(
        &a,
        free_port(),
        &["--listen-token-env", "FERRY_TEST_LISTEN_TOKEN"],
        &[("FERRY_TEST_LISTEN_TOKEN", token)],
    );
    assert_eq!(sms(l.port, HQ, "hello"), 401);
    let with = format!("GET /sms?from=%2B15550001&text=hello&token={token} HTTP/1.1\r\n\r\n");
    assert_eq!(request(l.port, with.as_bytes()), 200);
}

/// Issue 18, findings 3 and 5: 22 000 fake parts (≈1 100 requests/s) took the home from
/// 124 KB to 345 MB and 88 007 files, `ferry status` then listed 21 997 numbers, and every
/// refused message was imported again on every later event. 3 000 junk SMS of every kind
/// (fake first parts and whole one-part messages from made-up numbers, text that is not
/// ferry's, 15 KB posts, senders that are not numbers) now grow the home by under 5 MB,
/// the status names no stranger, each refused bundle is reported once, and what strangers
/// sent is printed at most ten lines a minute.
#[test]
fn junk_sms_from_strangers_stay_within_bounds_and_are_refused_once() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (_hq, a) = pair(base.path(), &gw.url, "listen_rate = 100000\n");
    let l = Listen::on(&a);
    let (before, _) = disk_usage(&a.home);
    let port = l.port;
    let threads: Vec<_> = (0..4u32)
        .map(|k| {
            std::thread::spawn(move || {
                let junk: Vec<u8> = (0..2300u32).map(|i| (i * 13 + k) as u8).collect();
                let mut ok = 0;
                for n in 0..750u32 {
                    let i = k * 750 + n;
                    let from = format!("+1999{i:07}");
                    let tag = (i % 16_000) as u16;
                    let status = match i % 5 {
                        0 => sms(port, &from, &texts(&junk, tag)[0]),
                        1 => sms(port, &from, &texts(&junk[..100], tag)[0]),
                        2 => sms(port, &from, "WIN a prize! Reply YES"),
                        3 => post(
                            port,
                            &format!("from={}&text={}", pct(from.as_bytes()), "x".repeat(15_000)),
                        ),
                        _ => sms(port, &format!("not-a-number-{i}"), "x"),
                    };
                    if status == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 3000, "every junk SMS was taken (and dealt with)");
    l.settle();
    let (after, files) = disk_usage(&a.home);
    let growth = after.saturating_sub(before);
    assert!(
        growth < 5_000_000,
        "3 000 junk SMS grew the home by {growth} bytes"
    );
    assert!(files < 400, "{files} files in the home");
    let out = l.out();
    assert!(!out.contains("already"), "{out}");
    let refused = lines_with(&out, "REFUSED").len();
    assert!(
        (1..=20).contains(&refused),
        "{refused} refused bundles reported: each refused once, and strangers' refusals are rationed"
    );
    assert!(
        out.lines().count() < 200,
        "{} lines printed",
        out.lines().count()
    );
    let status = a.ok(&["status"]);
    assert!(
        !status
            .lines()
            .any(|l| l.starts_with("sms") && l.contains("+1999")),
        "status lists strangers' numbers:\n{status}"
    );
    assert!(status.lines().count() < 40, "{status}");
    assert!(status.contains("numbers that are no member's"), "{status}");
}

// ---------------------------------------------------------------------------------------
// Finding 9: slow connections block SMS delivery
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 9: 64 connections that sent one byte and then nothing kept every
/// gateway request at 503 (the 30 s timeout was per read). A member's SMS is now taken
/// while they are still open: the slow ones make room. (On 203b295 the 65th connection
/// was answered 503 at once.)
#[test]
fn slow_connections_do_not_keep_a_members_sms_out() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (hq, a) = pair(base.path(), &gw.url, "");
    let l = Listen::on(&a);
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", l.port)).unwrap();
            let _ = c.write_all(b"G");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    hq.ok(&["put", "visits", "v9", "a=nine"]);
    let mark = gw.sent().len();
    run_sms(&hq, &["send", "sms"]);
    for t in gw.texts_to(A, mark) {
        assert_eq!(sms(l.port, HQ, &t), 200, "{}", l.all());
    }
    l.wait_for("HQ's bundle to be applied", |o| {
        o.contains("applied  a bundle from hq")
    });
    drop(slow);
}

// ---------------------------------------------------------------------------------------
// Finding 10: a forged part destroys a bundle in flight
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 10: a forged part with the real tag, sent from HQ's number before the
/// real one, made the message fail, and the real part was then dropped as a duplicate.
/// Now the forged assembly is refused (and reported so), the one with the real part is
/// tried next, and HQ's bundle is applied.
#[test]
fn a_forged_part_does_not_destroy_a_members_bundle_in_flight() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (hq, a) = pair(base.path(), &gw.url, "");
    let l = Listen::on(&a);
    hq.ok(&[
        "put",
        "visits",
        "v5",
        "patient_id=p-004512",
        "village=Kisumu Ndogo",
        "weight_kg=61.5",
    ]);
    let mark = gw.sent().len();
    run_sms(&hq, &["send", "sms"]);
    let real = gw.texts_to(A, mark);
    assert!(real.len() >= 2, "{real:?}");
    assert_eq!(sms(l.port, HQ, &forged_part(&real[1])), 200);
    for t in &real {
        assert_eq!(sms(l.port, HQ, t), 200);
    }
    l.wait_for("HQ's real bundle to be applied", |o| {
        o.contains("applied  a bundle from hq")
    });
    assert!(a.list("visits").contains("v5"));
    let out = l.out();
    assert_eq!(
        lines_with(&out, "REFUSED").len(),
        1,
        "the forged assembly, reported: {out}"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 11: output
// ---------------------------------------------------------------------------------------

/// Issue 18, finding 11: a `from` with a newline and escape codes printed a fake "applied a
/// bundle from hq" line, a 17 KB `from` was printed whole, and reports were Rust Debug text
/// (`RepairUnavailable { to: Phone("+1…"), tags: [..] }`, `(SenderGone)`). Now strangers'
/// strings are escaped and cut, and reports are sentences.
#[test]
fn sms_listen_prints_strangers_strings_escaped_and_cut_and_reports_in_words() {
    let gw = Gateway::start();
    let base = tempfile::tempdir().unwrap();
    let (hq, a) = pair(base.path(), &gw.url, "");
    let l = Listen::on(&a);
    let evil = "\x1b[2K\rapplied  a bundle from hq (237 B, 1 new change)\n+15550001";
    assert_eq!(sms(l.port, evil, "hello"), 200);
    let long = "9".repeat(15_000);
    assert_eq!(post(l.port, &format!("from={long}&text=hello")), 200);
    // Longer than any gateway sends: refused at the door.
    let longer = "9".repeat(17_000);
    assert_eq!(post(l.port, &format!("from={longer}&text=hello")), 413);

    // HQ's number asks again for a message A never sent it: A says so, once.
    let req = frame::missing_frames(
        &[Missing {
            tag: 4242,
            count: 2,
            parts: vec![0, 1],
        }],
        123,
    );
    assert_eq!(sms(l.port, HQ, &control(req[0].clone())), 200);
    // A part of a real bundle from HQ, then HQ's number says it no longer holds it.
    hq.ok(&[
        "put",
        "visits",
        "v6",
        "a=six",
        "b=more text to need a second SMS part",
    ]);
    let mark = gw.sent().len();
    run_sms(&hq, &["send", "sms"]);
    let real = gw.texts_to(A, mark);
    assert!(real.len() >= 2);
    let (tag, count) = match decode(&real[0]) {
        Frame::Data { tag, count, .. } => (tag, count),
        other => panic!("{other:?}"),
    };
    assert_eq!(sms(l.port, HQ, &real[0]), 200);
    let gone = frame::gone_frames(&[Gone { tag, count }], 123);
    assert_eq!(sms(l.port, HQ, &control(gone[0].clone())), 200);
    l.wait_for("both reports", |o| {
        o.contains("asked again for parts") && o.contains("gave up")
    });
    let out = l.out();
    assert!(
        !out.contains('\x1b') && !out.contains('\r'),
        "raw control characters: {out:?}"
    );
    for line in out.lines() {
        assert!(
            !line.starts_with("applied"),
            "a stranger's sender wrote a fake line: {line:?}"
        );
        assert!(
            line.chars().count() < 600,
            "a line of {} characters",
            line.chars().count()
        );
        for debug in [
            "Phone(",
            "RepairUnavailable",
            "SenderGone",
            "tags: [",
            "GaveUp {",
        ] {
            assert!(!line.contains(debug), "Debug text {debug:?} in {line:?}");
        }
    }
    assert!(
        out.contains("\\e[2K\\rapplied"),
        "the sender is shown escaped: {out}"
    );
    let gave_up = lines_with(&out, "gave up")[0];
    assert!(
        gave_up.contains("the sender no longer holds it"),
        "{gave_up}"
    );
    let asked = lines_with(&out, "asked again for parts")[0];
    assert!(asked.contains("tag 4242"), "{asked}");
}

// ---------------------------------------------------------------------------------------
// Through real Kannel
// ---------------------------------------------------------------------------------------

/// Issue 18, findings 1 and 2 through the phone network: real Kannel hands A's listener
/// the keyless forged snapshot from a made-up number, and "missing parts" requests and
/// "gone" notices from 20 made-up numbers and from HQ's number. The forgery is refused
/// and changes nothing; Kannel is asked to send no SMS to any stranger, and at most one
/// (the daily "no longer kept" notice) to HQ. (On 203b295 each stranger got a "gone" SMS.)
#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn through_real_kannel_a_strangers_sms_cost_nothing_and_a_forgery_changes_nothing() {
    let (hq_phone, a_phone) = (Phone::parse(HQ).unwrap(), Phone::parse(A).unwrap());
    let a_port = free_port();
    let mut network = Network::start();
    // What reaches HQ's number goes to a sink (HQ runs no listener here).
    let hq_sink = Gateway::start();
    let kannel = Kannel::start(
        &mut network,
        &[(&a_phone, a_port), (&hq_phone, hq_sink.port)],
    );
    let base = tempfile::tempdir().unwrap();
    let (_hq, a) = pair(base.path(), &kannel.sendsms_url, "");
    let before = a.list("visits");
    let l = Listen::start(&a, a_port, &[], &[]);
    let forged = keyless_snapshot(&a);
    let mut injected = 0;
    for t in texts(&forged, 901) {
        network.inject("+19995550123", A, t.as_bytes(), false);
        injected += 1;
    }
    for n in 0..20u16 {
        let from = format!("+1999555{n:04}");
        let m = frame::missing_frames(
            &[Missing {
                tag: n,
                count: 2,
                parts: vec![0, 1],
            }],
            123,
        );
        network.inject(&from, A, control(m[0].clone()).as_bytes(), false);
        let g = frame::gone_frames(&[Gone { tag: n, count: 2 }], 123);
        network.inject(&from, A, control(g[0].clone()).as_bytes(), false);
        let m = frame::missing_frames(
            &[Missing {
                tag: 3000 + n,
                count: 2,
                parts: vec![0, 1],
            }],
            123,
        );
        network.inject(
            hq_phone.as_str(),
            A,
            control(m[0].clone()).as_bytes(),
            false,
        );
        injected += 3;
    }
    let start = Instant::now();
    while network.injected() < injected {
        assert!(start.elapsed() < PATIENCE, "Kannel did not take every SMS");
        std::thread::sleep(Duration::from_millis(100));
    }
    l.wait_for("the forgery to be refused", |o| o.contains("REFUSED"));
    l.settle();
    l.settle();
    let mt: Vec<_> = network.log().into_iter().map(|(mt, _)| mt).collect();
    let to_strangers: Vec<_> = mt
        .iter()
        .filter(|m| m.to.trim_start_matches('+') != HQ.trim_start_matches('+'))
        .collect();
    assert!(
        to_strangers.is_empty(),
        "Kannel was asked to send SMS to strangers: {to_strangers:?}\n{}\n{}",
        l.all(),
        kannel.log_tail()
    );
    assert!(
        mt.len() <= 1 && mt.iter().all(|m| m.from == A),
        "{} SMS: {mt:?}",
        mt.len()
    );
    let out = l.out();
    let refused = lines_with(&out, "REFUSED");
    assert_eq!(refused.len(), 1, "{out}");
    assert!(refused[0].contains("plaintext") && refused[0].contains("+19995550123"));
    assert!(!out.contains("already"), "{out}");
    assert_eq!(a.list("visits"), before);
    drop(l);
    drop(kannel);
}
