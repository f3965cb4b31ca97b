//! Two homes sync over serial links with `ferry sync serial` on both ends: through a link
//! simulator between two socat pseudo-terminal pairs (1200 baud, latency, lost and damaged
//! frames, a cut cable), with one end killed and restarted mid-transfer, and through two
//! Direwolf software TNCs (AFSK 1200 over audio fifos) with KISS and AX.25.
//!
//! Each test prints what it measured (bytes, frames, time) for the report.
#![allow(clippy::print_stdout)]

#[path = "../../transports/serial/tests/common/mod.rs"]
#[allow(unused_imports)]
mod link;

use crate::util::{Laptop, s};
use link::{DirewolfPair, SimConfig, SimLink};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Frames in flight (the default window) and message bytes per frame (the default mtu).
const WINDOW_BYTES: u64 = 8 * 200;

/// HQ and a clinic that joined it, each with reference-shaped records of its own.
fn pair(base: &Path, hq_records: usize) -> (Laptop, Laptop) {
    let (hq, clinic) = (Laptop::new(base, "hq"), Laptop::new(base, "clinic"));
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let inv = base.join("clinic.invite");
    let code = hq.invite(&inv, "clinic-a");
    clinic.join("clinic-a", &inv, code.as_deref());
    hq.ok(&[
        "put",
        "visits",
        "v-2026-000123",
        "patient_id=p-004512",
        "visit_date=2026-11-03",
        "village=Kisumu Ndogo",
        "chw=chw-017",
        "age_years=34",
        "sex=F",
        "weight_kg=61.5",
        "muac_mm=242",
        "temp_c=37.8",
        "diagnosis=malaria",
        "treatment=ACT",
        "followup=true",
    ]);
    clinic.ok(&[
        "put",
        "visits",
        "v-2026-000124",
        "patient_id=p-004513",
        "visit_date=2026-11-04",
        "village=Obunga",
        "age_years=5",
        "sex=M",
        "weight_kg=17.2",
        "diagnosis=pneumonia",
    ]);
    if hq_records > 0 {
        // Varied records so the bundle does not compress to nothing.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut jsonl = String::new();
        for i in 0..hq_records {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            jsonl.push_str(&format!(
                "{{\"id\":\"v-2026-{:06}\",\"patient_id\":\"p-{:06}\",\"village\":\"village-{}\",\"age_years\":{},\"weight_kg\":{}.{},\"note\":\"{:016x}{:016x}\"}}\n",
                200 + i,
                x % 1_000_000,
                x % 97,
                x % 90,
                10 + x % 80,
                x % 10,
                x,
                x.rotate_left(29)
            ));
        }
        let file = base.join("visits.jsonl");
        std::fs::write(&file, jsonl).unwrap();
        hq.ok(&["load", "visits", s(&file)]);
    }
    (hq, clinic)
}

/// Starts `ferry sync serial DEVICE ARGS…` in the background.
fn start(l: &Laptop, device: &Path, args: &[&str]) -> Child {
    let mut all = vec!["sync", "serial", s(device)];
    all.extend_from_slice(args);
    l.cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a `ferry sync serial` and returns its output, failing on a non-zero exit.
fn finish(child: Child, who: &str) -> String {
    let out: Output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{who}'s ferry sync serial failed: {text}"
    );
    text
}

/// Runs `ferry sync serial` at both ends of `link` at once (HQ with `hq_args`, the clinic
/// with `clinic_args`) and returns their outputs, failing if either fails.
fn sync_both(
    (hq, clinic): (&Laptop, &Laptop),
    link: &SimLink,
    hq_args: &[&str],
    clinic_args: &[&str],
) -> (String, String) {
    let a = start(hq, link.a(), hq_args);
    let b = start(clinic, link.b(), clinic_args);
    (finish(a, "HQ"), finish(b, "the clinic"))
}

/// The number before `unit` on the line starting with `prefix`.
fn number(text: &str, prefix: &str, unit: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {text}"));
    let before = line
        .split(unit)
        .next()
        .unwrap_or_else(|| panic!("no {unit:?} in {line}"));
    let digits: String = before
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number before {unit:?} in {line}"))
}

fn assert_converged(hq: &Laptop, clinic: &Laptop) {
    let (a, b) = (hq.list("visits"), clinic.list("visits"));
    assert_eq!(a, b, "both ends hold the same records");
    assert!(
        a.contains("v-2026-000123") && a.contains("v-2026-000124"),
        "{a}"
    );
}

#[test]
fn two_homes_converge_over_a_1200_baud_link_losing_0_10_and_30_percent_of_frames() {
    std::thread::scope(|scope| {
        for (loss, seed) in [(0.0, 11), (0.10, 12), (0.30, 13)] {
            scope.spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let base = dir.path();
                let (hq, clinic) = pair(base, 0);
                let link = SimLink::new(
                    base,
                    SimConfig {
                        loss,
                        corrupt: loss / 4.0,
                        seed,
                        ..SimConfig::clean(1200)
                    },
                );
                let args = ["--baud", "1200", "--timeout", "60"];
                let t0 = Instant::now();
                let (a, b) = sync_both((&hq, &clinic), &link, &args, &args);
                let took = t0.elapsed();
                assert_converged(&hq, &clinic);
                assert!(a.contains("synced   with clinic-a"), "{a}");
                assert!(b.contains("synced   with hq"), "{b}");
                let counters = link.sim.as_ref().unwrap().counters.clone();
                println!(
                    "loss {:>3.0} %: converged in {:.1} s; link dropped {} and damaged {} of {} frames; HQ: {}",
                    loss * 100.0,
                    took.as_secs_f64(),
                    counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
                    counters.corrupted.load(std::sync::atomic::Ordering::Relaxed),
                    counters.frames.load(std::sync::atomic::Ordering::Relaxed),
                    a.lines().filter(|l| l.starts_with("link")).collect::<String>()
                );
                // A second run finds nothing new either way.
                let (a, b) = sync_both((&hq, &clinic), &link, &args, &args);
                assert!(a.contains("received 0 changes") && a.contains("sent 0 changes"), "{a}");
                assert!(b.contains("received 0 changes") && b.contains("sent 0 changes"), "{b}");
            });
        }
    });
}

/// Waits until the clinic's serial state folder holds at least `bytes` of a partly
/// received message (the sum of the part records in its `.log`; the `.part` file is
/// sparse, as long as the whole message from the start).
fn wait_for_part(clinic: &Laptop, bytes: u64) {
    let rx = clinic.home.join("transports/serial/rx");
    let held_in = |log: &Path| -> u64 {
        let raw = std::fs::read(log).unwrap_or_default();
        raw.get(16..)
            .unwrap_or_default()
            .chunks_exact(16)
            .map(|r| u64::from(u32::from_le_bytes(r[8..12].try_into().unwrap())))
            .sum()
    };
    let start = Instant::now();
    loop {
        let held: u64 = std::fs::read_dir(&rx)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .map(|p| held_in(&p))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if held >= bytes {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the transfer did not get going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The size of the bundle HQ sends the clinic (HQ's kept copy while it is in flight).
fn kept_bundle(hq: &Laptop) -> u64 {
    let path = hq.home.join("transports/serial-out/member-2.ferry");
    let start = Instant::now();
    loop {
        if let Ok(m) = std::fs::metadata(&path) {
            return m.len();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "HQ made no bundle"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_cable_cut_mid_transfer_costs_at_most_one_window_of_resent_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (hq, clinic) = pair(base, 400);
    let mut link = SimLink::new(base, SimConfig::clean(9600));
    let args = ["--baud", "9600", "--timeout", "30"];
    let t0 = Instant::now();
    let a = start(&hq, link.a(), &args);
    let b = start(&clinic, link.b(), &args);
    let size = kept_bundle(&hq);
    wait_for_part(&clinic, size / 3);
    link.cut();
    std::thread::sleep(Duration::from_secs(3));
    link.restore();
    let (a, b) = (finish(a, "HQ"), finish(b, "the clinic"));
    assert_converged(&hq, &clinic);
    let resent = number(&a, "link", "B of data sent again");
    println!(
        "cut for 3 s during a {size}-byte bundle at 9600 baud: done in {:.1} s; HQ sent {resent} B of data again (window {WINDOW_BYTES} B)\nHQ: {a}clinic: {b}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        resent <= WINDOW_BYTES,
        "at most one window is sent again after a cut, not {resent} B"
    );
}

#[test]
fn a_station_killed_mid_transfer_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (hq, clinic) = pair(base, 400);
    let link = SimLink::new(base, SimConfig::clean(9600));
    let args = ["--baud", "9600", "--timeout", "30"];
    let a = start(&hq, link.a(), &args);
    let mut b = start(&clinic, link.b(), &args);
    let size = kept_bundle(&hq);
    wait_for_part(&clinic, size / 3);
    b.kill().unwrap();
    let _ = b.wait();
    // The clinic runs it again (a power cut, Ctrl-C, a new laptop battery).
    let b = start(&clinic, link.b(), &args);
    let (a, b) = (finish(a, "HQ"), finish(b, "the clinic"));
    assert_converged(&hq, &clinic);
    assert!(
        a.contains("restarted the exchange"),
        "HQ noticed the restart: {a}"
    );
    let resumed = number(&b, "resumed", "B were already across");
    let resent = number(&a, "link", "B of data sent again");
    println!(
        "clinic killed during a {size}-byte bundle at 9600 baud: {resumed} B were already across; HQ sent {resent} B of data again (window {WINDOW_BYTES} B)\nHQ: {a}clinic: {b}"
    );
    assert!(
        resumed + WINDOW_BYTES >= size / 3,
        "the parts already across were kept"
    );
    assert!(
        resent <= WINDOW_BYTES,
        "at most one window is sent again after a restart, not {resent} B"
    );
}

#[test]
fn two_homes_sync_over_two_direwolf_tncs_at_afsk_1200() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (hq, clinic) = pair(base, 0);
    let tncs = DirewolfPair::start(base);
    let t0 = Instant::now();
    let a = start(
        &hq,
        &tncs.kiss_a,
        &["--kiss", "--callsign", "N0CALL-1", "--timeout", "60"],
    );
    let b = start(
        &clinic,
        &tncs.kiss_b,
        &["--kiss", "--callsign", "N0CALL-2", "--timeout", "60"],
    );
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        a.status.success() && b.status.success(),
        "HQ: {}\nclinic: {}\n{}",
        text(&a),
        text(&b),
        tncs.logs()
    );
    assert_converged(&hq, &clinic);
    println!(
        "over two Direwolf TNCs (AFSK 1200, KISS, AX.25): converged in {:.1} s\nHQ: {}clinic: {}",
        t0.elapsed().as_secs_f64(),
        text(&a),
        text(&b)
    );
}

/// One station sends `--plaintext` and the other does not.
#[test]
fn an_encrypting_station_refuses_a_plaintext_one_and_says_how_to_fix_it() {
    // Plaintext bundles need no key to write, so a station accepts them only when its own
    // user said --plaintext (issue 10): the encrypting end refuses, names the fix, and takes
    // nothing from the other end.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (hq, clinic) = pair(base, 0);
    let before = clinic.list("visits");
    let link = SimLink::new(base, SimConfig::clean(9600));
    let args = ["--baud", "9600", "--timeout", "10"];
    let mut plain = args.to_vec();
    plain.push("--plaintext");
    let a = start(&hq, link.a(), &plain);
    let b = start(&clinic, link.b(), &args);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let b_err = String::from_utf8_lossy(&b.stderr).to_string();
    assert_eq!(b.status.code(), Some(1), "{b_err}");
    assert_eq!(b_err.lines().count(), 1, "one line: {b_err}");
    assert!(
        b_err.contains("plaintext") && b_err.contains("--plaintext"),
        "{b_err}"
    );
    assert_eq!(clinic.list("visits"), before, "nothing of HQ's was applied");
    assert!(!a.status.success(), "HQ's exchange did not complete");
}
