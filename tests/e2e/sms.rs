//! Two laptops converge by SMS alone, through real Kannel (bearerbox + smsbox) with the test
//! as the phone network, which drops, duplicates and reorders SMS: each laptop runs
//! `ferry sms listen`, missing parts are asked for and sent again. `attacks` holds issue
//! 18's regression tests: strangers on the SMS path.

#[path = "../../transports/sms/tests/common/mod.rs"]
#[allow(unused_imports)]
mod net;

mod attacks;

use crate::util::Laptop;
use ferry_transport_sms::Phone;
use net::{Fate, KANNEL_PASS, KANNEL_USER, Kannel, Network, free_port};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn configure(l: &Laptop, kannel: &Kannel, phone: &Phone) {
    std::fs::create_dir_all(&l.home).unwrap();
    std::fs::write(
        l.home.join("ferry.toml"),
        format!(
            "[sms]\ngateway = \"kannel\"\nfrom = \"{phone}\"\nsendsms_url = \"{}\"\nusername = \"{KANNEL_USER}\"\npassword_env = \"FERRY_TEST_SMS_PASSWORD\"\ndaily_budget = 1000\nrepair_after_minutes = 0\nhousekeeping_seconds = 1\n",
            kannel.sendsms_url
        ),
    )
    .unwrap();
}

fn ferry(l: &Laptop, args: &[&str]) -> String {
    let out = l
        .cmd(args)
        .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ferry {args:?} failed: {text}");
    text
}

fn listen(l: &Laptop, port: u16) -> Listener {
    let child = l
        .cmd(&["sms", "listen", "--bind", &format!("127.0.0.1:{port}")])
        .env("FERRY_TEST_SMS_PASSWORD", KANNEL_PASS)
        .stdout(std::fs::File::create(l.home.with_extension("listen.log")).unwrap())
        .stderr(std::fs::File::create(l.home.with_extension("listen.err")).unwrap())
        .spawn()
        .unwrap();
    // Ready when it accepts connections.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ferry sms listen did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Listener(child)
}

/// Waits for `done`; on a timeout, fails with what both listeners said.
fn wait_until(base: &std::path::Path, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(90) {
            let mut logs = String::new();
            for name in ["hq", "a"] {
                for ext in ["listen.log", "listen.err"] {
                    let path = base.join(name).with_extension(ext);
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    logs.push_str(&format!("--- {}\n{text}", path.display()));
                }
            }
            panic!("timed out waiting for {what}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn two_laptops_converge_by_sms_alone_through_a_lossy_network() {
    let (hq_phone, a_phone) = (
        Phone::parse("+15550001").unwrap(),
        Phone::parse("+15550002").unwrap(),
    );
    let (hq_port, a_port) = (free_port(), free_port());
    let mut network = Network::start();
    let kannel = Kannel::start(&mut network, &[(&hq_phone, hq_port), (&a_phone, a_port)]);
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a) = (Laptop::new(base, "hq"), Laptop::new(base, "a"));
    configure(&hq, &kannel, &hq_phone);
    configure(&a, &kannel, &a_phone);
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    hq.ok(&["contact", "set", "--phone", "+15550001"]);
    let inv = base.join("a.invite");
    let code = hq.invite(&inv, "clinic-a");
    a.join("clinic-a", &inv, code.as_deref());
    a.ok(&["contact", "set", "--phone", "+15550002"]);
    let _hq_listener = listen(&hq, hq_port);
    let _a_listener = listen(&a, a_port);

    // Clinic A knows only HQ's number at first (from the admin, out of band). Until each
    // knows the other's number from the other's data, neither asks the other to repair
    // anything (ferry asks only members' published numbers), so this first exchange runs
    // on a network that loses nothing.
    let dry = ferry(&a, &["send", "sms", "--to", "+15550001", "--dry-run"]);
    assert!(dry.contains("would send"), "{dry}");
    ferry(&a, &["send", "sms", "--to", "+15550001"]);
    wait_until(base, "HQ to learn clinic A's number", || {
        hq.ok(&["contact", "list"]).contains("+15550002")
    });
    ferry(&hq, &["send", "sms"]);
    wait_until(base, "clinic A to learn HQ's number from HQ's data", || {
        a.ok(&["contact", "list"]).contains("+15550001")
    });

    // From now on the network loses and repeats some SMS (never the same SMS twice in a
    // row, so every bundle gets through after repairs).
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    network.set_policy(move |_| match counter.fetch_add(1, Ordering::SeqCst) % 7 {
        2 => Fate::Drop,
        4 => Fate::Duplicate,
        5 => Fate::Hold,
        _ => Fate::Deliver,
    });

    // One reference-shaped record each, and a concurrent edit.
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
    a.ok(&[
        "put",
        "visits",
        "v-2026-000124",
        "patient_id=p-004513",
        "village=Obunga",
        "age_years=5",
    ]);
    ferry(&hq, &["send", "sms"]);
    ferry(&a, &["send", "sms"]);
    wait_until(base, "both to hold both records", || {
        hq.list("visits") == a.list("visits")
            && hq.list("visits").contains("v-2026-000124")
            && a.list("visits").contains("v-2026-000123")
    });
    a.ok(&["put", "visits", "v-2026-000123", "weight_kg=62.0"]);
    hq.ok(&["put", "visits", "v-2026-000123", "weight_kg=61.0"]);
    ferry(&hq, &["send", "sms"]);
    ferry(&a, &["send", "sms"]);
    wait_until(base, "the concurrent edit to be listed on both", || {
        let c = |l: &Laptop| l.ok(&["conflicts", "--json"]).contains("weight_kg");
        c(&hq) && c(&a) && hq.list("visits") == a.list("visits")
    });
    assert!(
        n.load(Ordering::SeqCst) > 0,
        "SMS went through the test network"
    );
    // Sending twice does not pay twice: what just went out is taken as on its way.
    hq.ok(&["put", "visits", "v-2026-000125", "village=Obunga"]);
    let first = ferry(&hq, &["send", "sms"]);
    assert!(first.contains("sent     clinic-a (+15550002): "), "{first}");
    let again = ferry(&hq, &["send", "sms"]);
    assert!(
        again.contains("skipped  clinic-a (+15550002): nothing new for it"),
        "{again}"
    );
    wait_until(base, "clinic A to receive the last record", || {
        a.list("visits").contains("v-2026-000125")
    });
    let status = hq.ok(&["status"]);
    assert!(status.contains("clinic-a"), "{status}");
    assert!(
        status.contains("sms      clinic-a: "),
        "SMS sent today are counted: {status}"
    );
}
