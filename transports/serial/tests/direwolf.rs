//! Two Direwolf software TNCs at AFSK 1200 baud, joined by audio fifos (one each way): a
//! session in KISS mode with AX.25 UI frames carries messages both ways over real modem
//! audio. The TNCs run with `FULLDUP ON`: the fifos carry audio only while the other end
//! transmits, so a TNC that last heard a carrier would otherwise wait for a clear channel
//! forever (there is no silence after a transmission to end its carrier detect).
#![allow(clippy::print_stdout)]

mod common;

use common::{DirewolfPair, Recorder, blob};
use ferry_transport_serial::{SerialConfig, Session};
use std::path::Path;
use std::time::Instant;

fn kiss(device: &Path, call: &str) -> SerialConfig {
    SerialConfig {
        device: Some(device.to_path_buf()),
        kiss: true,
        callsign: Some(call.into()),
        window: 4,
        timeout: 60,
        ..Default::default()
    }
}

#[test]
#[ignore = "needs Direwolf (two software TNCs) — run tests/run"]
fn messages_cross_two_direwolf_tncs_over_afsk_audio() {
    let dir = tempfile::tempdir().unwrap();
    let tncs = DirewolfPair::start(dir.path());
    let (a_msg, b_msg) = (blob(700, 51), blob(300, 52));
    let trace = std::env::var_os("FERRY_TRACE").is_some();
    let t0 = Instant::now();
    let (ra, rb) = (Recorder::new("A", trace), Recorder::new("B", trace));
    let (got_a, got_b, sa, sb) = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            let a = common::admitted(
                Session::open_with_progress(
                    &kiss(&tncs.kiss_a, "N0CALL-1"),
                    dir.path().join("a"),
                    ra.clone(),
                )
                .expect("open A"),
            );
            a.send(a_msg.clone()).expect("send");
            let got = a.recv();
            (got, a.close())
        });
        let hb = s.spawn(|| {
            let b = common::admitted(
                Session::open_with_progress(
                    &kiss(&tncs.kiss_b, "N0CALL-2"),
                    dir.path().join("b"),
                    rb.clone(),
                )
                .expect("open B"),
            );
            b.send(b_msg.clone()).expect("send");
            let got = b.recv();
            (got, b.close())
        });
        let (a, b) = (ha.join().unwrap(), hb.join().unwrap());
        (a.0, b.0, a.1, b.1)
    });
    let logs = tncs.logs();
    let got_a = got_a
        .unwrap_or_else(|e| panic!("A: {e}\n{logs}"))
        .expect("B's message");
    let got_b = got_b
        .unwrap_or_else(|e| panic!("B: {e}\n{logs}"))
        .expect("A's message");
    assert!(got_a.data == b_msg, "A received something else than B sent");
    assert!(got_b.data == a_msg, "B received something else than A sent");
    let (sa, sb) = (sa.expect("close A"), sb.expect("close B"));
    println!(
        "{} + {} bytes both ways through two Direwolf TNCs (AFSK 1200) in {:.1} s",
        a_msg.len(),
        b_msg.len(),
        t0.elapsed().as_secs_f64()
    );
    println!("A: {sa:?}\nB: {sb:?}");
    // The frames crossed as audio: each TNC logs the level of what it demodulated.
    assert!(
        logs.contains("N0CALL-1 audio level") && logs.contains("N0CALL-2 audio level"),
        "{logs}"
    );
}
