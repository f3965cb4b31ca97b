//! Sessions over real pseudo-terminals (socat) through a link simulator that limits the
//! rate, adds latency, drops and damages frames, and can be cut; and the transport
//! conformance suite over a socat pair. These check the wiring — devices, threads, the
//! state folder, the blocking API — with light loss and timeouts that hold on a busy
//! machine. What the protocol does under heavy loss, cuts and restarts is proven in virtual
//! time, deterministically, by the engine's own harness (`src/sim.rs`, run by `cargo test`).
//!
//! Needs `socat` (tests/run installs it): every test here is ignored by a plain `cargo
//! test` and run by `tests/run`.
#![allow(clippy::print_stdout)]

mod common;

use common::{SimConfig, SimLink, Socat, blob};
use ferry_transport_serial::{SerialConfig, SerialError, SerialTransport, Session, SessionStats};
use std::path::Path;
use std::time::{Duration, Instant};

const WINDOW: u64 = 8;
const MTU: u64 = 200;

/// Generous: on a busy 2-core machine a session's threads may wait seconds for a core,
/// which the other end must not take for a dead link.
const TIMEOUT: u64 = 60;

fn config(device: &Path, baud: u32) -> SerialConfig {
    SerialConfig {
        device: Some(device.to_path_buf()),
        baud,
        timeout: TIMEOUT,
        ..Default::default()
    }
}

/// What one end got out of an exchange.
struct Outcome {
    got: Vec<u8>,
    stats: SessionStats,
}

/// Runs one end: send `mine`, receive the other end's message, close.
fn one_end(cfg: &SerialConfig, state: &Path, mine: &[u8]) -> Outcome {
    let trace = std::env::var_os("FERRY_TRACE").is_some();
    let name = if state.ends_with("state-a") { "A" } else { "B" };
    let s = common::admitted(
        Session::open_with_progress(cfg, state, common::Recorder::new(name, trace))
            .expect("open session"),
    );
    s.send(mine.to_vec()).expect("send");
    let got = s.recv().expect("receive").expect("the other end's message");
    let stats = s.close().expect("close");
    Outcome {
        got: got.data,
        stats,
    }
}

/// Both ends exchange messages at the same time.
fn exchange(
    link: &SimLink,
    baud: u32,
    dir: &Path,
    a: &[u8],
    b: &[u8],
) -> (Outcome, Outcome, Duration) {
    let (ca, cb) = (config(link.a(), baud), config(link.b(), baud));
    let (sa, sb) = (dir.join("state-a"), dir.join("state-b"));
    let t0 = Instant::now();
    let (oa, ob) = std::thread::scope(|s| {
        let ha = s.spawn(|| one_end(&ca, &sa, a));
        let hb = s.spawn(|| one_end(&cb, &sb, b));
        (ha.join().expect("end A"), hb.join().expect("end B"))
    });
    (oa, ob, t0.elapsed())
}

fn lossy_exchange(baud: u32, loss: f64, corrupt: f64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        baud,
        latency: Duration::from_millis(100),
        loss,
        corrupt,
        seed,
    };
    let link = SimLink::new(dir.path(), cfg);
    let (a, b) = (blob(2500, seed), blob(2000, seed + 100));
    let (oa, ob, took) = exchange(&link, baud, dir.path(), &a, &b);
    assert!(oa.got == b, "A received something else than B sent");
    assert!(ob.got == a, "B received something else than A sent");
    let sim = &link.sim.as_ref().unwrap().counters;
    println!(
        "loss {:.0} %, damage {:.0} %: {} + {} bytes both ways at {baud} baud in {:.1} s; simulator dropped {} and damaged {} of {} frames",
        loss * 100.0,
        corrupt * 100.0,
        a.len(),
        b.len(),
        took.as_secs_f64(),
        sim.dropped.load(std::sync::atomic::Ordering::Relaxed),
        sim.corrupted.load(std::sync::atomic::Ordering::Relaxed),
        sim.frames.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!("A: {:?}\nB: {:?}", oa.stats, ob.stats);
    if corrupt > 0.0 {
        assert!(
            oa.stats.frames_damaged + ob.stats.frames_damaged > 0,
            "damaged frames must be detected"
        );
    }
    if loss > 0.0 {
        assert!(oa.stats.retransmissions + ob.stats.retransmissions > 0);
    } else {
        assert_eq!(
            oa.stats.data_bytes_resent + ob.stats.data_bytes_resent,
            0,
            "nothing is sent twice on a clean line"
        );
    }
}

#[test]
#[ignore = "needs socat — run tests/run"]
fn messages_cross_both_ways_at_once_on_a_clean_1200_baud_line() {
    lossy_exchange(1200, 0.0, 0.0, 11);
}

/// Light loss, for the wiring (damaged frames counted, lost ones sent again); 30 % loss is
/// `sim::tests::messages_cross_both_ways_at_once_with_30_percent_frame_loss`, in virtual
/// time over 500 seeds.
#[test]
#[ignore = "needs socat — run tests/run"]
fn messages_cross_both_ways_at_once_with_10_percent_frame_loss() {
    lossy_exchange(1200, 0.10, 0.03, 12);
}

/// Waits until `session` has received at least `bytes` new message bytes.
fn wait_received(session: &Session, bytes: u64) {
    let end = Instant::now() + Duration::from_secs(2 * TIMEOUT);
    while session.stats().data_bytes_received < bytes {
        assert!(
            Instant::now() < end,
            "transfer did not start: {:?}",
            session.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn close_both(a: Session, b: Session) -> (SessionStats, SessionStats) {
    std::thread::scope(|s| {
        let ha = s.spawn(move || a.close().expect("close A"));
        let hb = s.spawn(move || b.close().expect("close B"));
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

/// The state folder through real sessions: a receiver killed mid-message and opened again
/// on its folder resumes. (Cuts, restarts of either end and long cuts, with their bounds on
/// what is sent again, are in `src/sim.rs`.)
#[test]
#[ignore = "needs socat — run tests/run"]
fn a_restarted_receiver_resumes_from_disk_resending_at_most_one_window() {
    let dir = tempfile::tempdir().unwrap();
    let link = SimLink::new(dir.path(), SimConfig::clean(4800));
    let big = blob(8000, 31);
    let (ca, cb) = (config(link.a(), 4800), config(link.b(), 4800));
    let state_b = dir.path().join("state-b");
    let a = common::admitted(Session::open(&ca, dir.path().join("state-a")).unwrap());
    let b = common::admitted(Session::open(&cb, &state_b).unwrap());
    a.send(big.clone()).unwrap();
    wait_received(&b, 3000);
    drop(b); // as a crash: nothing is said to A
    std::thread::sleep(Duration::from_millis(500));
    let b = common::admitted(Session::open(&cb, &state_b).unwrap());
    let got = b.recv().unwrap().expect("the message");
    assert!(got.data == big, "the message arrived damaged");
    let (sa, sb) = close_both(a, b);
    println!(
        "receiver restarted after {} of {} bytes (kept on disk): A sent {} message bytes, re-sent {} (window {} bytes)",
        got.resumed,
        big.len(),
        sa.data_bytes_sent,
        sa.data_bytes_resent,
        WINDOW * MTU
    );
    println!("A: {sa:?}\nB after restart: {sb:?}");
    assert!(
        got.resumed >= 3000,
        "the restarted end resumed from {} bytes",
        got.resumed
    );
    assert_eq!(sb.data_bytes_received + got.resumed, big.len() as u64);
    assert!(
        sa.data_bytes_resent <= WINDOW * MTU,
        "re-sent {} bytes, more than one window",
        sa.data_bytes_resent
    );
}

#[test]
#[ignore = "needs socat — run tests/run"]
fn serial_transport_passes_the_conformance_suite_over_a_socat_pair() {
    let dir = tempfile::tempdir().unwrap();
    let mut fixtures = Vec::new();
    let mut n = 0;
    ferry_transport::conformance::run(|| {
        n += 1;
        let pair = Socat::pair(dir.path(), &format!("conf{n}"));
        // A pseudo-terminal has no line rate: pace at 4 Mbaud so the 4 MiB message is quick.
        let cfg = |dev: &Path| SerialConfig {
            mtu: 1024,
            window: 16,
            ..config(dev, 4_000_000)
        };
        let a = SerialTransport::open(&cfg(&pair.a), dir.path().join(format!("a{n}"))).unwrap();
        let b = SerialTransport::open(&cfg(&pair.b), dir.path().join(format!("b{n}"))).unwrap();
        fixtures.push(pair);
        (a, b)
    });
}

/// The other end confirmed everything and then went silent without its CLOSE (it finished
/// and only its last frames were lost): `close` gives up after the silence timeout, while
/// `close_after_end` (for an application that knows the exchange is complete) ends the
/// session after half of it.
#[test]
#[ignore = "needs socat — run tests/run"]
fn after_the_other_end_confirmed_everything_and_fell_silent_close_after_end_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = SimLink::new(dir.path(), SimConfig::clean(9600));
    // Short, as the test waits for it twice; `close_after_end` ends after half of it, which
    // leaves 5 s for a busy machine before the bound below.
    let cfg = |p: &Path| SerialConfig {
        timeout: 10,
        ..config(p, 9600)
    };
    let mut runs = Vec::new();
    for after_end in [false, true] {
        if after_end {
            link.restore();
        }
        let (sa, sb) = (
            dir.path().join(format!("a-{after_end}")),
            dir.path().join(format!("b-{after_end}")),
        );
        let a = common::admitted(Session::open(&cfg(link.a()), sa).unwrap());
        let b = common::admitted(Session::open(&cfg(link.b()), sb).unwrap());
        a.send(blob(500, 3)).unwrap();
        a.flush().expect("B confirms the message");
        assert!(b.recv().unwrap().is_some());
        link.cut();
        drop(b);
        let t0 = Instant::now();
        let r = if after_end {
            a.close_after_end()
        } else {
            a.close()
        };
        runs.push((after_end, r.map(|_| ()), t0.elapsed()));
    }
    println!("{runs:?}");
    assert!(
        matches!(runs[0].1, Err(SerialError::LinkLost { .. })),
        "close: {runs:?}"
    );
    assert!(runs[1].1.is_ok(), "close_after_end: {runs:?}");
    assert!(runs[1].2 < Duration::from_secs(10), "{runs:?}");
}
