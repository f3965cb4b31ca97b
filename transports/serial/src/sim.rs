//! A virtual-time harness for the session engine (tests only): two stations, each driving its
//! [`Engine`] the way the session's driver thread does (timers at their deadlines, frames
//! paced at the line rate, raw framing, damaged frames counted), joined by a simulated line
//! that delays, serialises, drops and damages frames, and can be cut. The application's
//! waits end with `LinkLost` after `timeout` of silence, as [`crate::Session`]'s do.
//!
//! Time is a number the harness advances, not the clock: a run is seeded, deterministic,
//! takes milliseconds, and does not depend on how busy the machine is. The tests below prove
//! the protocol's behaviour under heavy loss, cuts and restarts; the tests over real
//! pseudo-terminals (`tests/link.rs`) check the wiring.
// Tests print what they measured, and the trace (`FERRY_SIM_TRACE=1`) prints every frame.
#![allow(clippy::print_stdout)]

use crate::MessageHash;
use crate::config::{MAX_MTU, SerialConfig};
use crate::engine::{Engine, Event, Params, SessionStats};
use crate::fault::Fault;
use crate::link::{AX25_HEADER, Deframer, Encap, Unwrapped};
use crate::politeness::Pacer;
use crate::store::RxStore;
use crate::wire::{DATA_FRAME_OVERHEAD, Frame};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test's choice of frames to lose: the frame and the time it is sent.
type Lose = Box<dyn FnMut(&Frame, Instant) -> bool>;

/// The longest the session's driver sleeps between two looks at its engine.
const TICK: Duration = Duration::from_millis(100);

/// What the simulated line does to frames (each way).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineConfig {
    /// Line rate in baud (10 bits per byte).
    pub(crate) baud: u32,
    /// One-way delay added to every frame.
    pub(crate) latency: Duration,
    /// Share of frames dropped.
    pub(crate) loss: f64,
    /// Share of frames with one bit flipped.
    pub(crate) corrupt: f64,
}

impl LineConfig {
    /// A clean line at `baud` with 50 ms of latency.
    pub(crate) fn clean(baud: u32) -> LineConfig {
        LineConfig {
            baud,
            latency: Duration::from_millis(50),
            loss: 0.0,
            corrupt: 0.0,
        }
    }
}

/// xorshift64: the harness's only source of chance.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// Reproducible pseudo-random bytes standing in for an encrypted bundle.
pub(crate) fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| (r.next() >> 24) as u8).collect()
}

/// What one direction of the line counted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LineCounters {
    pub(crate) frames: u64,
    pub(crate) dropped: u64,
    pub(crate) corrupted: u64,
}

/// One direction of the line: frames in flight with the time each arrives.
struct Line {
    cfg: LineConfig,
    rng: Rng,
    free_at: Option<Instant>,
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    counters: LineCounters,
    /// Cut: frames go into the cable and are lost.
    cut: bool,
    /// Frames a test chose to lose, besides chance.
    lose: Option<Lose>,
    /// Print every frame and its fate (`FERRY_SIM_TRACE=1`), with the time since `t0`.
    trace: Option<Instant>,
}

impl Line {
    fn carry(&mut self, now: Instant, frame: &Frame, mut wire: Vec<u8>) {
        let trace = |fate: &str| {
            if let Some(t0) = self.trace {
                let t = now.duration_since(t0).as_secs_f64();
                let (epoch, seq, kind) = (frame.epoch, frame.seq, frame.body.kind());
                println!("{t:9.3} {epoch:5} #{seq:<5} {kind:?} {fate}");
            }
        };
        if self.cut {
            trace("cut");
            return;
        }
        if self.lose.as_mut().is_some_and(|lose| lose(frame, now)) {
            trace("lost (by the test)");
            return;
        }
        self.counters.frames += 1;
        if self.rng.chance(self.cfg.loss) {
            trace("lost");
            self.counters.dropped += 1;
            return;
        }
        let damaged = self.rng.chance(self.cfg.corrupt) && wire.len() > 2;
        trace(if damaged { "damaged" } else { "" });
        if damaged {
            self.counters.corrupted += 1;
            // A bit of the frame between its delimiters.
            let i = 1 + (self.rng.next() % (wire.len() as u64 - 2)) as usize;
            wire[i] ^= 1 << (self.rng.next() % 8);
        }
        let serialise =
            Duration::from_secs_f64(wire.len() as f64 * 10.0 / f64::from(self.cfg.baud));
        let start = self
            .free_at
            .map_or(now + self.cfg.latency, |f| f.max(now + self.cfg.latency));
        let arrives = start + serialise;
        self.free_at = Some(arrives);
        self.in_flight.push_back((arrives, wire));
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|f| f.0)
    }
}

/// A message one station received, as [`crate::Received`].
#[derive(Clone, Debug)]
pub(crate) struct Got {
    pub(crate) hash: MessageHash,
    pub(crate) data: Vec<u8>,
    pub(crate) resumed: u64,
}

/// One station: an engine driven as the session's driver drives it, and what its
/// application saw.
pub(crate) struct Station {
    engine: Engine,
    epoch: u16,
    pacer: Pacer,
    deframer: Deframer,
    store: RxStore,
    timeout: Duration,
    /// Whether the station runs (a crashed or finished one hears and sends nothing).
    pub(crate) running: bool,
    /// Messages delivered to the application, in order.
    pub(crate) got: Vec<Got>,
    /// Messages the peer confirmed holding.
    pub(crate) sent: Vec<MessageHash>,
    /// The peer closed its side.
    pub(crate) peer_closed: bool,
    /// The engine's fault, if any.
    pub(crate) fault: Option<Fault>,
    /// When the application began waiting (for a message, for its messages to be confirmed,
    /// for the close), if it waits.
    waiting_since: Option<Instant>,
    /// The longest silence of the peer any wait saw.
    pub(crate) worst_silence: Duration,
    /// A wait failed: the peer was silent this long (`LinkLost`).
    pub(crate) lost: Option<Duration>,
    close_requested: bool,
    /// The session closed completely (as `Session::close` returning `Ok`).
    pub(crate) closed: bool,
}

impl Station {
    /// Opens a session as [`crate::Session::open`] does on `cfg` (raw framing), with its
    /// state in `state`, and admits the peer at once (as the transport's tests do).
    fn open(cfg: &SerialConfig, state: &Path, epoch: u16, now: Instant) -> Station {
        std::fs::create_dir_all(state).expect("state folder");
        let pacer = Pacer::new(cfg.effective_rate(), now);
        let full = vec![0xAAu8; usize::from(cfg.mtu) + DATA_FRAME_OVERHEAD];
        let frame_time = pacer.airtime(Encap::Raw.wrap(&full).len());
        let params = Params {
            mtu: cfg.mtu,
            window: usize::from(cfg.window),
            frame_time,
            byte_time: pacer.airtime(1),
            announce: true,
            fault_on_restart: true,
            keepalive: Some((cfg.silence_timeout() / 6).max(Duration::from_secs(2))),
            max_rto: cfg.silence_timeout() / 3,
            admitted: false,
        };
        let mut engine = Engine::new(params, epoch, RxStore::open(state).expect("store"), now);
        engine.admit(now);
        let max = usize::from(MAX_MTU) + DATA_FRAME_OVERHEAD + AX25_HEADER + 64;
        Station {
            engine,
            epoch,
            pacer,
            deframer: Deframer::new(false, max),
            store: RxStore::at(state),
            timeout: cfg.silence_timeout(),
            running: true,
            got: Vec::new(),
            sent: Vec::new(),
            peer_closed: false,
            fault: None,
            waiting_since: None,
            worst_silence: Duration::ZERO,
            lost: None,
            close_requested: false,
            closed: false,
        }
    }

    /// Queues a message (as `Session::send`).
    pub(crate) fn send(&mut self, data: Vec<u8>) -> MessageHash {
        let hash = MessageHash::of(&data);
        self.engine.queue(hash, Arc::new(data));
        hash
    }

    /// The application closes (as `Session::close`: it then waits for the close).
    fn request_close(&mut self, now: Instant) {
        self.close_requested = true;
        self.engine.request_close();
        self.wait(now);
    }

    /// The application begins a wait (`recv`, `flush`, `close`) now.
    pub(crate) fn wait(&mut self, now: Instant) {
        self.waiting_since = Some(now);
    }

    /// The application's wait ended.
    pub(crate) fn done_waiting(&mut self) {
        self.waiting_since = None;
    }

    /// The session's counters.
    pub(crate) fn stats(&self) -> &SessionStats {
        &self.engine.stats
    }

    fn hear(&mut self, bytes: &[u8], now: Instant) {
        let mut out = Vec::new();
        self.deframer.push(bytes, &mut out);
        for u in out {
            match u {
                Unwrapped::Frame { bytes, .. } => match Frame::decode(&bytes) {
                    Ok(f) => self.engine.on_frame(f, now),
                    Err(_) => self.engine.stats.frames_damaged += 1,
                },
                Unwrapped::Garbage => self.engine.stats.frames_damaged += 1,
                Unwrapped::Foreign => {}
            }
        }
    }

    /// One turn of the driver: timers, then every frame the pacer lets out now.
    fn turn(&mut self, now: Instant, line: &mut Line) {
        self.engine.on_tick(now);
        while self.engine.wants_transmit(now) && self.pacer.ready_at() <= now {
            let Some(frame) = self.engine.poll_transmit(now) else {
                break;
            };
            let wire = Encap::Raw.wrap(&frame.encode());
            self.pacer.consume(now, wire.len());
            let s = &mut self.engine.stats;
            s.frames_sent += 1;
            s.wire_bytes_sent += wire.len() as u64;
            s.airtime += self.pacer.airtime(wire.len());
            line.carry(now, &frame, wire);
        }
        self.publish(now);
    }

    fn publish(&mut self, now: Instant) {
        for e in self.engine.take_events() {
            match e {
                Event::Delivered {
                    hash,
                    resumed,
                    data,
                } => {
                    let data = match data {
                        Some(d) => d,
                        None => self
                            .store
                            .read(&hash)
                            .expect("a delivered message is stored"),
                    };
                    self.got.push(Got {
                        hash,
                        data,
                        resumed,
                    });
                }
                Event::Sent { hash } => self.sent.push(hash),
                Event::PeerClosed => self.peer_closed = true,
                Event::Fault(f) => {
                    self.fault = Some(f);
                    self.running = false;
                }
                Event::Established
                | Event::Reassociated
                | Event::Refused { .. }
                | Event::Progress { .. } => {}
            }
        }
        if self.close_requested
            && self.engine.close_complete(now)
            && !self.engine.wants_transmit(now)
        {
            // `Session::close` returns and the session stops; what it received is removed
            // from the state folder (the application has it).
            self.closed = true;
            self.running = false;
            self.waiting_since = None;
            for g in &self.got {
                let _ = self.store.remove(&g.hash);
            }
        }
        if let Some(since) = self.waiting_since {
            let heard = self.engine.last_heard().map_or(since, |h| h.max(since));
            let silent = now.saturating_duration_since(heard);
            self.worst_silence = self.worst_silence.max(silent);
            if silent >= self.timeout {
                self.lost = Some(silent);
                self.waiting_since = None;
            }
        }
    }

    /// When this station next has something to do.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if !self.running {
            return None;
        }
        let mut wake = self.engine.next_deadline();
        if self.engine.wants_transmit(now) {
            let ready = self.pacer.ready_at().max(now);
            wake = Some(wake.map_or(ready, |w| w.min(ready)));
        }
        if let Some(since) = self.waiting_since {
            let heard = self.engine.last_heard().map_or(since, |h| h.max(since));
            let give_up = heard + self.timeout;
            wake = Some(wake.map_or(give_up, |w| w.min(give_up)));
        }
        wake
    }
}

/// Two stations, A (0) and B (1), and the line between them.
pub(crate) struct Sim {
    /// The virtual time.
    pub(crate) now: Instant,
    start: Instant,
    stations: [Option<Station>; 2],
    lines: [Line; 2],
    epochs: Rng,
}

impl Sim {
    /// A line as `cfg` describes, its chances drawn from `seed`.
    pub(crate) fn new(cfg: LineConfig, seed: u64) -> Sim {
        let now = Instant::now();
        let line = |i: u64| Line {
            cfg,
            rng: Rng::new(seed.wrapping_mul(2).wrapping_add(i)),
            free_at: None,
            in_flight: VecDeque::new(),
            counters: LineCounters::default(),
            cut: false,
            lose: None,
            trace: std::env::var_os("FERRY_SIM_TRACE").map(|_| now),
        };
        Sim {
            now,
            start: now,
            stations: [None, None],
            lines: [line(0), line(1)],
            epochs: Rng::new(seed ^ 0x5EED),
        }
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Opens a session at `side` (0: A, 1: B), replacing whatever ran there.
    pub(crate) fn open(&mut self, side: usize, cfg: &SerialConfig, state: &Path) {
        let taken: Vec<u16> = self.stations.iter().flatten().map(|s| s.epoch).collect();
        let epoch = loop {
            let e = (self.epochs.next() as u16).max(1);
            if !taken.contains(&e) {
                break e;
            }
        };
        self.stations[side] = Some(Station::open(cfg, state, epoch, self.now));
    }

    /// The station at `side`.
    pub(crate) fn at(&self, side: usize) -> &Station {
        self.stations[side].as_ref().expect("a station")
    }

    /// The station at `side`, to act on it.
    pub(crate) fn at_mut(&mut self, side: usize) -> &mut Station {
        self.stations[side].as_mut().expect("a station")
    }

    /// The station at `side` stops at once without a word (a crash, Ctrl-C, or the
    /// application dropping its session); returns it for its counters.
    pub(crate) fn crash(&mut self, side: usize) -> Station {
        let mut s = self.stations[side].take().expect("a station");
        s.running = false;
        s
    }

    /// The application at `side` closes its session.
    pub(crate) fn close(&mut self, side: usize) {
        let now = self.now;
        self.at_mut(side).request_close(now);
    }

    /// The line is cut: what is in flight is lost, and nothing crosses until
    /// [`Sim::restore`].
    pub(crate) fn cut(&mut self) {
        for l in &mut self.lines {
            l.cut = true;
            l.in_flight.clear();
        }
    }

    /// The line is back.
    pub(crate) fn restore(&mut self) {
        for l in &mut self.lines {
            l.cut = false;
        }
    }

    /// Also loses every frame `from` (0: A, 1: B) sends for which `lose` says so.
    pub(crate) fn lose(
        &mut self,
        from: usize,
        lose: impl FnMut(&Frame, Instant) -> bool + 'static,
    ) {
        self.lines[from].lose = Some(Box::new(lose));
    }

    /// What each direction of the line counted (A → B, B → A).
    pub(crate) fn counters(&self) -> [LineCounters; 2] {
        [self.lines[0].counters, self.lines[1].counters]
    }

    /// Advances to the next moment something happens (at most one driver tick later).
    fn step(&mut self) {
        let now = self.now;
        let mut next = now + TICK;
        for (i, s) in self.stations.iter().enumerate() {
            if let Some(w) = s.as_ref().and_then(|s| s.next_wake(now)) {
                next = next.min(w);
            }
            if let Some(a) = self.lines[i].next_arrival() {
                next = next.min(a);
            }
        }
        self.now = next.max(now + Duration::from_millis(1));
        let now = self.now;
        for from in 0..2 {
            while self.lines[from].next_arrival().is_some_and(|t| t <= now) {
                let (_, bytes) = self.lines[from].in_flight.pop_front().expect("a frame");
                if let Some(to) = self.stations[1 - from].as_mut().filter(|s| s.running) {
                    to.hear(&bytes, now);
                }
            }
        }
        for i in 0..2 {
            let Some(s) = self.stations[i].as_mut().filter(|s| s.running) else {
                continue;
            };
            s.turn(now, &mut self.lines[i]);
        }
    }

    /// Runs until `app` (which acts for both applications and is called after every step)
    /// returns true, or `limit` of virtual time has passed; returns whether `app` did.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut app: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        let end = self.now + limit;
        if app(self) {
            return true;
        }
        while self.now < end {
            self.step();
            if app(self) {
                return true;
            }
        }
        false
    }

    /// Both applications at once: send `a` and `b`, wait for the other's message, then close
    /// (as each end of `tests/link.rs` does). Returns whether both closed within `limit`.
    pub(crate) fn exchange(&mut self, a: &[u8], b: &[u8], limit: Duration) -> bool {
        let now = self.now;
        for (side, m) in [(0, a), (1, b)] {
            let s = self.at_mut(side);
            s.send(m.to_vec());
            s.wait(now);
        }
        self.run_until(limit, |sim| {
            for side in 0..2 {
                let now = sim.now;
                let s = sim.at_mut(side);
                if !s.got.is_empty() && !s.close_requested && s.lost.is_none() {
                    s.done_waiting();
                    s.request_close(now);
                }
            }
            let end = |s: &Station| s.closed || s.lost.is_some() || s.fault.is_some();
            end(sim.at(0)) && end(sim.at(1))
        }) && self.at(0).closed
            && self.at(1).closed
    }
}

/// A state folder for a simulated station: in memory where the system has one, so that the
/// store's flushes cost nothing.
pub(crate) fn state_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("ferry-sim").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("temporary folder")
}

/// `dir/name`.
pub(crate) fn state(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

mod tests {
    use super::*;

    /// Frames in flight and message bytes per frame (the defaults).
    const WINDOW: u64 = 8;
    const MTU: u64 = 200;

    fn config(baud: u32, timeout: u64) -> SerialConfig {
        SerialConfig {
            baud,
            timeout,
            ..Default::default()
        }
    }

    /// What one seeded exchange did.
    #[derive(Debug)]
    struct Run {
        took: Duration,
        /// Message bytes each end sent, and sent again.
        sent: [u64; 2],
        resent: [u64; 2],
        retransmissions: u64,
        damaged: u64,
        corrupted: u64,
        /// The longest silence either application waited through.
        silence: Duration,
    }

    /// Both ends send a message of `len` bytes (A) and `len * 4 / 5` (B) at once over a line
    /// as `line` describes, with the session timeout `timeout`; each waits for the other's
    /// message, then closes. Fails with what went wrong.
    fn exchange(line: LineConfig, timeout: u64, len: usize, seed: u64) -> Result<Run, String> {
        let dir = state_root();
        let mut sim = Sim::new(line, seed);
        let cfg = config(line.baud, timeout);
        sim.open(0, &cfg, &state(&dir, "a"));
        sim.open(1, &cfg, &state(&dir, "b"));
        let (a, b) = (blob(len, seed), blob(len * 4 / 5, seed + 100));
        let closed = sim.exchange(&a, &b, Duration::from_secs(3600));
        let (sa, sb) = (sim.at(0), sim.at(1));
        let what = || {
            let end = |s: &Station| {
                format!(
                    "{{ got {}, closing {}, closed {}, lost {:?}, fault {:?}, peer closed {}, {:?} }}",
                    s.got.len(),
                    s.close_requested,
                    s.closed,
                    s.lost,
                    s.fault,
                    s.peer_closed,
                    s.stats()
                )
            };
            format!(
                "seed {seed}, after {:?} of virtual time: A {}, B {}, line {:?}",
                sim.elapsed(),
                end(sa),
                end(sb),
                sim.counters()
            )
        };
        if !closed {
            return Err(format!("the exchange did not complete: {}", what()));
        }
        if sa.got.len() != 1 || sa.got[0].data != b {
            return Err(format!("A received something else than B sent: {}", what()));
        }
        if sb.got.len() != 1 || sb.got[0].data != a {
            return Err(format!("B received something else than A sent: {}", what()));
        }
        let c = sim.counters();
        Ok(Run {
            took: sim.elapsed(),
            sent: [sa.stats().data_bytes_sent, sb.stats().data_bytes_sent],
            resent: [sa.stats().data_bytes_resent, sb.stats().data_bytes_resent],
            retransmissions: sa.stats().retransmissions + sb.stats().retransmissions,
            damaged: sa.stats().frames_damaged + sb.stats().frames_damaged,
            corrupted: c[0].corrupted + c[1].corrupted,
            silence: sa.worst_silence.max(sb.worst_silence),
        })
    }

    /// Runs `exchange` for every seed; fails naming every seed that failed.
    fn exchanges(
        line: LineConfig,
        timeout: u64,
        len: usize,
        seeds: std::ops::Range<u64>,
    ) -> Vec<Run> {
        // Replay one seed: FERRY_SIM_SEED=N (with FERRY_SIM_TRACE=1 to see every frame).
        let only: Option<u64> = std::env::var("FERRY_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok());
        let n = seeds.end - seeds.start;
        let (runs, failed): (Vec<_>, Vec<_>) = seeds
            .filter(|s| only.is_none_or(|o| o == *s))
            .map(|seed| exchange(line, timeout, len, seed))
            .partition(Result::is_ok);
        let failed: Vec<String> = failed.into_iter().map(Result::unwrap_err).collect();
        assert!(
            failed.is_empty(),
            "{} of {n} seeded exchanges over {line:?} failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        let runs: Vec<Run> = runs.into_iter().map(Result::unwrap).collect();
        let worst = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).fold(0.0, f64::max);
        println!(
            "{line:?}, timeout {timeout} s: {n} exchanges of {len} + {} bytes; longest {:.1} s of virtual time, longest silence {:.1} s, at most {:.0} % of a message sent again",
            len * 4 / 5,
            worst(&|r| r.took.as_secs_f64()),
            worst(&|r| r.silence.as_secs_f64()),
            worst(&|r| (r.resent[0] as f64 / len as f64)
                .max(r.resent[1] as f64 / (len * 4 / 5) as f64)
                * 100.0),
        );
        runs
    }

    #[test]
    fn messages_cross_both_ways_at_once_on_a_clean_1200_baud_line() {
        for r in exchanges(LineConfig::clean(1200), 30, 2500, 0..5) {
            assert_eq!(
                r.resent,
                [0, 0],
                "nothing is sent twice on a clean line: {r:?}"
            );
            assert_eq!(r.retransmissions, 0, "{r:?}");
            assert_eq!(r.sent, [2500, 2000], "{r:?}");
        }
    }

    #[test]
    fn messages_cross_both_ways_at_once_with_10_percent_frame_loss() {
        let line = LineConfig {
            loss: 0.10,
            corrupt: 0.03,
            latency: Duration::from_millis(100),
            ..LineConfig::clean(1200)
        };
        for r in exchanges(line, 30, 2500, 0..200) {
            // Every byte is sent at most twice, on average.
            assert!(r.resent[0] <= 2500 && r.resent[1] <= 2000, "{r:?}");
        }
    }

    /// What was flaky over pseudo-terminals on a busy machine (`close: LinkLost { silent: 30
    /// s }`), here in virtual time with the same line (4800 baud, 100 ms latency, 30 % of
    /// frames lost and 5 % damaged each way) and the same messages: for each of 500 seeds,
    /// both messages cross at once, intact, both ends close, no wait reaches the silence
    /// timeout, damage is detected, and every byte is sent at most three times on average.
    ///
    /// Before the closing handshake was fixed, 100 of the first 300 seeds failed: an end
    /// whose CLOSE was lost waited for it in silence while the other, hearing nothing, took
    /// it for gone and left (see `Engine::peer_gone_at`); 2 more failed opening the link
    /// (see `Engine::on_hello`).
    #[test]
    fn messages_cross_both_ways_at_once_with_30_percent_frame_loss() {
        let line = LineConfig {
            loss: 0.30,
            corrupt: 0.05,
            latency: Duration::from_millis(100),
            ..LineConfig::clean(4800)
        };
        let runs = exchanges(line, 30, 2500, 0..500);
        let damaged: u64 = runs.iter().map(|r| r.damaged).sum();
        let corrupted: u64 = runs.iter().map(|r| r.corrupted).sum();
        println!("{corrupted} frames damaged on the line, {damaged} found damaged");
        // A damaged frame reaching an end that already finished is not counted.
        assert!(
            damaged * 10 >= corrupted * 9,
            "damaged frames are detected: {damaged} of {corrupted}"
        );
        for r in runs {
            assert!(r.retransmissions > 0, "lost frames are sent again: {r:?}");
            // Expected: about half of every byte again (each try crosses with 65 %).
            assert!(
                r.resent[0] <= 2 * 2500 && r.resent[1] <= 2 * 2000,
                "more than twice every byte sent again: {r:?}"
            );
        }
    }

    /// Margin: at 50 % frame loss each way (three of four round trips fail), no piece of a
    /// message runs out of its `MAX_SENDS` tries and no wait reaches the silence timeout.
    #[test]
    fn at_50_percent_frame_loss_the_exchange_still_completes() {
        let line = LineConfig {
            loss: 0.50,
            corrupt: 0.0,
            latency: Duration::from_millis(100),
            ..LineConfig::clean(4800)
        };
        exchanges(line, 60, 1000, 0..100);
    }

    /// The closing handshake when A's CLOSE is lost and B's frames do not get through for
    /// 10 s: B, which holds A's message and whose own CLOSE was acknowledged, waits for A's
    /// CLOSE in silence. A must not take the silence for B having left: it tries its CLOSE
    /// again, B gets it and finishes, and A finishes once it has heard nothing for half the
    /// timeout. (Before, A left after three RTOs and B failed with `LinkLost` 30 s later.)
    #[test]
    fn a_lost_close_does_not_leave_the_other_end_waiting_for_it() {
        let dir = state_root();
        let cfg = config(4800, 30);
        let mut sim = Sim::new(LineConfig::clean(4800), 7);
        sim.open(0, &cfg, &state(&dir, "a"));
        sim.open(1, &cfg, &state(&dir, "b"));
        let shared = std::rc::Rc::new(std::cell::Cell::new(None::<Instant>));
        let first_close = shared.clone();
        sim.lose(0, move |f, now| {
            let close = matches!(f.body, crate::wire::Body::Close);
            if close && first_close.get().is_none() {
                first_close.set(Some(now));
                return true;
            }
            false
        });
        let silence = shared.clone();
        sim.lose(1, move |_, now| {
            silence
                .get()
                .is_some_and(|t| now < t + Duration::from_secs(10))
        });
        let done = sim.exchange(b"from A", b"from B", Duration::from_secs(600));
        assert!(shared.get().is_some(), "A sent a CLOSE");
        for side in 0..2 {
            let s = sim.at(side);
            assert!(
                done && s.closed && s.lost.is_none(),
                "end {side}: closed {}, lost {:?}, {:?}",
                s.closed,
                s.lost,
                s.stats()
            );
        }
    }

    /// A's 8000-byte message to B, started at once; B waits for it.
    fn transfer(timeout: u64) -> (tempfile::TempDir, Sim, Vec<u8>, SerialConfig) {
        let dir = state_root();
        let cfg = config(4800, timeout);
        let mut sim = Sim::new(LineConfig::clean(4800), 1);
        sim.open(0, &cfg, &state(&dir, "a"));
        sim.open(1, &cfg, &state(&dir, "b"));
        let big = blob(8000, 21);
        sim.at_mut(0).send(big.clone());
        let now = sim.now;
        sim.at_mut(1).wait(now);
        (dir, sim, big, cfg)
    }

    /// Runs until B has received `bytes` new message bytes.
    fn until_received(sim: &mut Sim, bytes: u64) {
        let ok = sim.run_until(Duration::from_secs(120), |s| {
            s.at(1).stats().data_bytes_received >= bytes
        });
        assert!(
            ok,
            "the transfer did not get going: {:?}",
            sim.at(1).stats()
        );
    }

    /// Runs until B has the message, then both close; returns B's message.
    fn finish(sim: &mut Sim) -> Got {
        let ok = sim.run_until(Duration::from_secs(300), |s| {
            !s.at(1).got.is_empty() || s.at(1).lost.is_some()
        });
        assert!(
            ok && sim.at(1).lost.is_none(),
            "B: lost {:?}",
            sim.at(1).lost
        );
        sim.at_mut(1).done_waiting();
        sim.close(0);
        sim.close(1);
        let ok = sim.run_until(Duration::from_secs(300), |s| {
            s.at(0).closed && s.at(1).closed
        });
        assert!(
            ok,
            "both close: A lost {:?}, B lost {:?}",
            sim.at(0).lost,
            sim.at(1).lost
        );
        sim.at(1).got[0].clone()
    }

    #[test]
    fn a_cut_link_resumes_in_the_same_session_resending_at_most_one_window() {
        for cut_at in [1000, 2500, 5000, 7500] {
            for cut_for in [1, 3, 20] {
                let (_dir, mut sim, big, _) = transfer(30);
                until_received(&mut sim, cut_at);
                sim.cut();
                sim.run_until(Duration::from_secs(cut_for), |_| false);
                sim.restore();
                let got = finish(&mut sim);
                assert!(got.data == big, "the message arrived damaged");
                let sa = sim.at(0).stats();
                assert!(
                    sa.data_bytes_resent <= WINDOW * MTU,
                    "cut at {cut_at} bytes for {cut_for} s: re-sent {} bytes, more than one window",
                    sa.data_bytes_resent
                );
                assert_eq!(sa.data_bytes_sent - sa.data_bytes_resent, big.len() as u64);
            }
        }
    }

    #[test]
    fn a_restarted_receiver_resumes_from_disk_resending_at_most_one_window() {
        for crash_at in [1000, 3000, 6000] {
            let (dir, mut sim, big, cfg) = transfer(30);
            until_received(&mut sim, crash_at);
            sim.crash(1);
            sim.run_until(Duration::from_millis(500), |_| false);
            sim.open(1, &cfg, &state(&dir, "b"));
            let now = sim.now;
            sim.at_mut(1).wait(now);
            let got = finish(&mut sim);
            assert!(got.data == big, "the message arrived damaged");
            let (sa, sb) = (sim.at(0).stats(), sim.at(1).stats());
            assert!(
                got.resumed >= crash_at,
                "crashed after {crash_at} bytes, resumed from {}",
                got.resumed
            );
            assert_eq!(sb.data_bytes_received + got.resumed, big.len() as u64);
            assert!(
                sa.data_bytes_resent <= WINDOW * MTU,
                "re-sent {} bytes, more than one window",
                sa.data_bytes_resent
            );
        }
    }

    #[test]
    fn a_restarted_sender_resumes_where_the_receiver_stopped_resending_at_most_one_window() {
        for crash_at in [1000, 3000, 6000] {
            let (dir, mut sim, big, cfg) = transfer(30);
            until_received(&mut sim, crash_at);
            let first = sim.crash(0).stats().clone();
            sim.run_until(Duration::from_millis(500), |_| false);
            // The node keeps the same bytes for the next session.
            sim.open(0, &cfg, &state(&dir, "a"));
            sim.at_mut(0).send(big.clone());
            let got = finish(&mut sim);
            assert!(got.data == big, "the message arrived damaged");
            let second = sim.at(0).stats();
            let twice = first.data_bytes_sent + second.data_bytes_sent - big.len() as u64;
            assert!(
                twice <= WINDOW * MTU,
                "crashed after {crash_at} bytes: sent {twice} bytes twice, more than one window"
            );
        }
    }

    #[test]
    fn after_a_long_cut_both_ends_give_up_and_a_new_session_sends_only_the_rest() {
        let (dir, mut sim, big, cfg) = transfer(3);
        let now = sim.now;
        sim.at_mut(0).wait(now); // A flushes: waits for B to confirm
        until_received(&mut sim, 2500);
        sim.cut();
        let both = sim.run_until(Duration::from_secs(60), |s| {
            s.at(0).lost.is_some() && s.at(1).lost.is_some()
        });
        assert!(
            both,
            "A lost {:?}, B lost {:?}",
            sim.at(0).lost,
            sim.at(1).lost
        );
        for side in 0..2 {
            let silent = sim.at(side).lost.unwrap();
            assert!(
                silent >= Duration::from_secs(3) && silent < Duration::from_secs(4),
                "gave up after {silent:?} of silence"
            );
        }
        let first = sim.crash(0).stats().clone();
        sim.crash(1);
        sim.restore();
        // A new session (a new radio, a new day) with the same state folders.
        sim.open(0, &cfg, &state(&dir, "a"));
        sim.open(1, &cfg, &state(&dir, "b"));
        sim.at_mut(0).send(big.clone());
        let now = sim.now;
        sim.at_mut(1).wait(now);
        let got = finish(&mut sim);
        assert!(got.data == big);
        let second = sim.at(0).stats();
        let resent = first.data_bytes_sent + second.data_bytes_sent - big.len() as u64;
        assert!(
            resent <= WINDOW * MTU,
            "sent {resent} bytes twice, more than one window (resumed from {})",
            got.resumed
        );
    }

    /// Heavy loss, a cut and both ends restarting, together: at 30 % loss, A's message to B
    /// survives a 5 s cut, then B crashing and coming back on its state folder, then A
    /// crashing and coming back; B resumes from what it held and gets the message intact.
    #[test]
    fn at_30_percent_loss_a_cut_and_restarts_of_both_ends_still_deliver_the_message() {
        for seed in 0..50 {
            let dir = state_root();
            let cfg = config(4800, 30);
            let line = LineConfig {
                loss: 0.30,
                corrupt: 0.05,
                latency: Duration::from_millis(100),
                ..LineConfig::clean(4800)
            };
            let mut sim = Sim::new(line, seed);
            sim.open(0, &cfg, &state(&dir, "a"));
            sim.open(1, &cfg, &state(&dir, "b"));
            let big = blob(8000, seed);
            sim.at_mut(0).send(big.clone());
            let now = sim.now;
            sim.at_mut(1).wait(now);
            until_received(&mut sim, 2000);
            sim.cut();
            sim.run_until(Duration::from_secs(5), |_| false);
            sim.restore();
            until_received(&mut sim, 4000);
            let held = sim.crash(1).stats().data_bytes_received;
            sim.run_until(Duration::from_secs(1), |_| false);
            sim.open(1, &cfg, &state(&dir, "b"));
            let now = sim.now;
            sim.at_mut(1).wait(now);
            until_received(&mut sim, 1000);
            sim.crash(0);
            sim.run_until(Duration::from_secs(1), |_| false);
            sim.open(0, &cfg, &state(&dir, "a"));
            sim.at_mut(0).send(big.clone());
            let got = finish(&mut sim);
            assert!(got.data == big, "seed {seed}: the message arrived damaged");
            assert!(
                got.resumed >= held,
                "seed {seed}: B held {held} bytes before its crash and resumed from {}",
                got.resumed
            );
        }
    }
}
