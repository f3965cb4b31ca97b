//! Politeness on a real pseudo-terminal pair: the duty-cycle limit keeps a station silent
//! while its hour's airtime is spent (also across restarts, through the state folder), and
//! progress reports bytes, rate and time left.
#![allow(clippy::print_stdout)]

mod common;

use common::{Socat, blob};
use ferry_transport_serial::{Flow, Progress, ProgressReport, SerialConfig, Session};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn config(device: &Path) -> SerialConfig {
    SerialConfig {
        device: Some(device.to_path_buf()),
        baud: 9600,
        // Generous: on a busy machine a thread may wait seconds for a core.
        timeout: 60,
        ..Default::default()
    }
}

#[test]
#[ignore = "needs socat — run tests/run"]
fn a_station_whose_hourly_airtime_is_spent_stays_silent_until_it_frees_up() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Socat::pair(dir.path(), "duty");
    let state_a = dir.path().join("a");
    fs::create_dir_all(&state_a).unwrap();
    // 1 % of an hour is 36 s. An earlier session spent all of it 3594 s ago: it frees up in
    // 6 s (5 s more than the check below needs, for a busy machine).
    let spent = SystemTime::now() - Duration::from_secs(3594);
    let ms = spent.duration_since(UNIX_EPOCH).unwrap().as_millis();
    fs::write(state_a.join("airtime.log"), format!("{ms} 36000000\n")).unwrap();

    let a = common::admitted(
        Session::open(
            &SerialConfig {
                duty_cycle: Some(1.0),
                ..config(&pair.a)
            },
            &state_a,
        )
        .unwrap(),
    );
    let b = common::admitted(Session::open(&config(&pair.b), dir.path().join("b")).unwrap());
    a.send(b"a short report".to_vec()).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        a.stats().frames_sent,
        0,
        "a station over its duty cycle must not transmit"
    );
    let got = b.recv().unwrap().expect("the message");
    assert_eq!(got.data, b"a short report");
    let (sa, _) = std::thread::scope(|s| {
        let ha = s.spawn(move || a.close().unwrap());
        let hb = s.spawn(move || b.close().unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    // Every frame sent is in the log, for the next session to count.
    let log = fs::read_to_string(state_a.join("airtime.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len() as u64, 1 + sa.frames_sent, "{log}");
    let logged: u64 = lines[1..]
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        logged.abs_diff(sa.airtime.as_micros() as u64) <= sa.frames_sent,
        "{logged} µs vs {:?}",
        sa.airtime
    );
    println!(
        "after the wait: {} frames, {:?} of airtime logged",
        sa.frames_sent, sa.airtime
    );
}

#[derive(Default)]
struct Reports(Mutex<Vec<ProgressReport>>);

impl Progress for Reports {
    fn update(&self, r: &ProgressReport) {
        self.0.lock().unwrap().push(r.clone());
    }
}

#[test]
#[ignore = "needs socat — run tests/run"]
fn progress_reports_bytes_rate_and_time_left_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Socat::pair(dir.path(), "progress");
    let (ra, rb) = (Arc::new(Reports::default()), Arc::new(Reports::default()));
    let a = common::admitted(
        Session::open_with_progress(&config(&pair.a), dir.path().join("a"), ra.clone()).unwrap(),
    );
    let b = common::admitted(
        Session::open_with_progress(&config(&pair.b), dir.path().join("b"), rb.clone()).unwrap(),
    );
    let msg = blob(4000, 3);
    let hash = a.send(msg.clone()).unwrap();
    assert_eq!(b.recv().unwrap().expect("message").data, msg);
    a.flush().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || a.close().unwrap());
        s.spawn(move || b.close().unwrap());
    });
    for (flow, reports) in [(Flow::Sending, &ra), (Flow::Receiving, &rb)] {
        let reports = reports.0.lock().unwrap();
        let mine: Vec<_> = reports
            .iter()
            .filter(|r| r.flow == flow && r.message == hash)
            .collect();
        assert!(mine.len() >= 3, "{flow:?}: {mine:?}");
        assert!(
            mine.windows(2).all(|w| w[0].done <= w[1].done),
            "{flow:?} went backwards: {mine:?}"
        );
        let last = mine.last().unwrap();
        assert_eq!((last.done, last.total), (4000, 4000), "{flow:?}");
        assert!(last.rate > 0.0, "{flow:?}: {last:?}");
        assert!(
            mine.iter().any(|r| r.done < r.total && r.eta.is_some()),
            "{flow:?}: no estimate of the time left"
        );
        println!("{flow:?}: {} reports, last {last:?}", mine.len());
    }
}
