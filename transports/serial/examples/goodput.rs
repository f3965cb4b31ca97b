//! Measures the serial transport over real pseudo-terminals (socat) and the link simulator
//! of the tests, and prints:
//!
//! - goodput at 1200 baud with 0 % and 10 % frame loss, as a share of the raw line rate
//!   (120 bytes/s at 1200 baud 8N1);
//! - airtime of one 233-byte message (one session: open, send, confirm, close), computed
//!   from every frame both ends actually sent, at 1200 baud, AFSK 1200 (AX.25 via a TNC)
//!   and LoRa SF9/125 kHz.
//!
//! `cargo run --release -p ferry-transport-serial --example goodput [-- --trace] [--bytes N]`
//! (needs socat; about two minutes at the default 6000 bytes). `--both` instead sends 2500
//! and 2000 bytes both ways at once and prints the time to close.
#![allow(clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Recorder, SimConfig, SimLink, blob};
use ferry_transport_serial::airtime::{self, LoRa};
use ferry_transport_serial::{
    AX25_HEADER, DATA_FRAME_OVERHEAD, FrameKind, SerialConfig, Session, SessionStats,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn config(dev: &Path, baud: u32) -> SerialConfig {
    SerialConfig {
        device: Some(dev.to_path_buf()),
        baud,
        timeout: 30,
        ..Default::default()
    }
}

fn close_both(a: Session, b: Session) -> (SessionStats, SessionStats) {
    std::thread::scope(|s| {
        let ha = s.spawn(move || a.close().expect("close A"));
        let hb = s.spawn(move || b.close().expect("close B"));
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

/// Sends `bytes` from A to B; returns the time from send to confirmation and A's counters.
fn transfer(
    baud: u32,
    loss: f64,
    bytes: usize,
    trace: bool,
) -> (
    Duration,
    SessionStats,
    Arc<Recorder>,
    Arc<Recorder>,
    (u64, u64),
) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        baud,
        latency: Duration::from_millis(100),
        loss,
        corrupt: 0.0,
        seed: 7,
    };
    let link = SimLink::new(dir.path(), sim);
    let (ra, rb) = (Recorder::new("A", trace), Recorder::new("B", trace));
    let a = common::admitted(
        Session::open_with_progress(&config(link.a(), baud), dir.path().join("a"), ra.clone())
            .unwrap(),
    );
    let b = common::admitted(
        Session::open_with_progress(&config(link.b(), baud), dir.path().join("b"), rb.clone())
            .unwrap(),
    );
    a.wait_connected().unwrap();
    b.wait_connected().unwrap();
    let msg = blob(bytes, 99);
    let t0 = Instant::now();
    a.send(msg.clone()).unwrap();
    a.flush().unwrap();
    let took = t0.elapsed();
    assert!(b.recv().unwrap().expect("message").data == msg);
    let (sa, _) = close_both(a, b);
    let c = &link.sim.as_ref().expect("simulator").counters;
    let seen = (
        c.dropped.load(Ordering::Relaxed),
        c.frames.load(Ordering::Relaxed),
    );
    (took, sa, ra, rb, seen)
}

/// Both ends send `bytes` at once; returns the time until both messages are confirmed.
fn both_ways(baud: u32, loss: f64, bytes: usize, trace: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        baud,
        latency: Duration::from_millis(100),
        loss,
        corrupt: 0.0,
        seed: 7,
    };
    let link = SimLink::new(dir.path(), sim);
    let (ra, rb) = (Recorder::new("A", trace), Recorder::new("B", trace));
    let a = common::admitted(
        Session::open_with_progress(&config(link.a(), baud), dir.path().join("a"), ra).unwrap(),
    );
    let b = common::admitted(
        Session::open_with_progress(&config(link.b(), baud), dir.path().join("b"), rb).unwrap(),
    );
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            a.send(blob(bytes, 1)).unwrap();
            a.flush().unwrap();
            a.recv().unwrap().unwrap();
        });
        s.spawn(|| {
            b.send(blob(bytes * 4 / 5, 2)).unwrap();
            b.flush().unwrap();
            b.recv().unwrap().unwrap();
        });
    });
    close_both(a, b);
    t0.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--both") {
        let took = both_ways(1200, 0.0, 2500, true);
        println!(
            "both ways, 2500 and 2000 bytes, closed: {:.1} s",
            took.as_secs_f64()
        );
        return;
    }
    let trace = args.iter().any(|a| a == "--trace");
    let bytes = args
        .iter()
        .position(|a| a == "--bytes")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(6000);
    let line = 120.0; // bytes per second at 1200 baud, 8N1
    let ceiling = 200.0 / (200 + DATA_FRAME_OVERHEAD + 2) as f64;
    println!(
        "framing ceiling (200-byte DATA frames, 2 delimiters, before escaping): {:.1} %",
        ceiling * 100.0
    );
    let mut measured = Vec::new();
    for loss in [0.0, 0.10] {
        let (took, s, _, _, (dropped, frames)) = transfer(1200, loss, bytes, trace);
        let goodput = bytes as f64 / took.as_secs_f64();
        measured.push(goodput / line);
        println!(
            "goodput at 1200 baud, {:>2.0} % frame loss: {bytes} bytes in {:.1} s = {:.1} B/s = {:.1} % of the line rate \
             (simulator dropped {dropped} of {frames} frames; re-sent {} bytes, {} retransmissions, {} probes, rtt {:?})",
            loss * 100.0,
            took.as_secs_f64(),
            goodput,
            goodput / line * 100.0,
            s.data_bytes_resent,
            s.retransmissions,
            s.probes,
            s.rtt
        );
    }

    // Forward error correction could at best replace retransmissions by repair symbols sent
    // in advance: at loss p it must send at least p more, so it cannot beat (1 - p) times the
    // loss-free goodput (and pays its overhead on clean links too).
    println!(
        "FEC bound at 10 % loss: (1 - 0.10) × {:.1} % = {:.1} %; selective repeat measured {:.1} %",
        measured[0] * 100.0,
        measured[0] * 90.0,
        measured[1] * 100.0
    );

    // One 233-byte message, a whole session, every frame of both ends.
    let (_, _, ra, rb, _) = transfer(9600, 0.0, 233, trace);
    let mut frames = ra.frames.lock().unwrap().clone();
    frames.extend(rb.frames.lock().unwrap().iter().cloned());
    let mut kinds = std::collections::BTreeMap::new();
    for (k, _, w) in &frames {
        let e = kinds.entry(format!("{k:?}")).or_insert((0, 0));
        e.0 += 1;
        e.1 += w;
    }
    let wire: usize = frames.iter().map(|f| f.2).sum();
    let serial = airtime::serial(wire, 1200);
    let lora = LoRa::sf9_125khz();
    let lora_total: Duration = frames.iter().map(|f| lora.airtime(f.2)).sum();
    let header = [0u8; AX25_HEADER];
    let hdlc: Duration = frames
        .iter()
        .map(|f| {
            let mut ax = header.to_vec();
            ax.extend_from_slice(&f.1);
            airtime::ax25_hdlc(&ax, 1200)
        })
        .sum();
    let txdelay = Duration::from_millis(300) * frames.len() as u32;
    let data: Vec<_> = frames.iter().filter(|f| f.0 == FrameKind::Data).collect();
    println!(
        "233-byte message, one whole session: {} frames, {wire} bytes written, by kind {kinds:?}",
        frames.len()
    );
    println!("  raw serial 1200 baud: {:.2} s", serial.as_secs_f64());
    println!(
        "  AFSK 1200 (AX.25 UI via KISS): {:.2} s of frames, + {:.1} s TXDELAY if every frame keys the radio",
        hdlc.as_secs_f64(),
        txdelay.as_secs_f64()
    );
    println!(
        "  LoRa SF9/125 kHz CR4/5 (one packet per frame): {:.2} s; the DATA frames alone {:.2} s; at 1 % duty cycle the session needs {:.0} s of the hour's 36 s",
        lora_total.as_secs_f64(),
        data.iter()
            .map(|f| lora.airtime(f.2))
            .sum::<Duration>()
            .as_secs_f64(),
        lora_total.as_secs_f64()
    );
}
