//! Test fixtures on real ports: socat pseudo-terminal pairs, a link simulator between two of
//! them, and a pair of Direwolf software TNCs joined by audio fifos. Each fixture starts its
//! programs itself and stops them by PID when dropped. A missing program fails the test.
#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};

use ferry_transport_serial::{FrameKind, Progress, ProgressReport};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Fails the test unless `program` is on the PATH.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: tests/run installs the Debian packages this test needs \
         (by hand: apt-get install -y --no-install-recommends socat direwolf)"
    );
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two linked pseudo-terminals made by socat: bytes written to one come out of the other.
pub struct Socat {
    child: Child,
    /// One end.
    pub a: PathBuf,
    /// The other end.
    pub b: PathBuf,
}

impl Socat {
    /// Starts `socat pty,raw,echo=0,link=DIR/NAME-a pty,raw,echo=0,link=DIR/NAME-b`.
    pub fn pair(dir: &Path, name: &str) -> Socat {
        require("socat");
        let a = dir.join(format!("{name}-a"));
        let b = dir.join(format!("{name}-b"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        let s = Socat { child, a, b };
        wait_for("socat's pseudo-terminals", Duration::from_secs(5), || {
            s.a.exists() && s.b.exists()
        });
        s
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the link simulator does to frames.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Line rate in baud (10 bits per byte).
    pub baud: u32,
    /// One-way delay added to every frame.
    pub latency: Duration,
    /// Share of frames dropped, each way.
    pub loss: f64,
    /// Share of frames with one bit flipped, each way.
    pub corrupt: f64,
    /// Seed of the pseudo-random choices (printed, so a failure can be replayed).
    pub seed: u64,
}

impl SimConfig {
    /// A clean line at `baud` with 50 ms of latency.
    pub fn clean(baud: u32) -> SimConfig {
        SimConfig {
            baud,
            latency: Duration::from_millis(50),
            loss: 0.0,
            corrupt: 0.0,
            seed: 1,
        }
    }
}

/// What the simulator counted, both ways together.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Frames seen.
    pub frames: AtomicU64,
    /// Frames dropped.
    pub dropped: AtomicU64,
    /// Frames damaged.
    pub corrupted: AtomicU64,
    /// Bytes delivered.
    pub bytes: AtomicU64,
}

/// A link simulator between two pseudo-terminal ends (`A <-> sim <-> B`): it splits the
/// byte stream into frames at 0xC0 delimiters, drops and damages frames, delays them and
/// delivers them no faster than the line rate. Killing it loses whatever it holds, as a
/// cut cable would.
pub struct LinkSim {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Its counters.
    pub counters: Arc<SimCounters>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

fn open_port(path: &Path) -> Box<dyn serialport::SerialPort> {
    let port = serialport::new(path.display().to_string(), 115_200)
        .timeout(Duration::from_millis(50))
        .open()
        .unwrap_or_else(|e| panic!("simulator cannot open {}: {e}", path.display()));
    // Bytes left on the line while the simulator was down are gone, as on a cut line.
    let _ = port.clear(serialport::ClearBuffer::All);
    port
}

impl LinkSim {
    /// Starts forwarding between the ports at `left` and `right`.
    pub fn start(left: &Path, right: &Path, cfg: SimConfig) -> LinkSim {
        println!("link simulator: {cfg:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SimCounters::default());
        let l = open_port(left);
        let r = open_port(right);
        let mut threads = Vec::new();
        for (i, (from, to)) in [
            (
                l.try_clone().expect("clone port"),
                r.try_clone().expect("clone port"),
            ),
            (r, l),
        ]
        .into_iter()
        .enumerate()
        {
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let (stop1, stop2) = (stop.clone(), stop.clone());
            let (c1, c2) = (counters.clone(), counters.clone());
            let seed = cfg
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64)
                | 1;
            threads.push(std::thread::spawn(move || {
                sim_read(from, tx, cfg, Rng(seed), stop1, c1)
            }));
            threads.push(std::thread::spawn(move || {
                sim_write(to, rx, cfg, stop2, c2)
            }));
        }
        LinkSim {
            stop,
            threads,
            counters,
        }
    }

    /// Stops the simulator at once; frames it holds are lost.
    pub fn kill(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LinkSim {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn sim_read(
    mut port: Box<dyn serialport::SerialPort>,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    cfg: SimConfig,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    counters: Arc<SimCounters>,
) {
    let mut buf = [0u8; 1024];
    let mut frame = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = match port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        };
        for &b in &buf[..n] {
            if b != 0xC0 {
                frame.push(b);
                continue;
            }
            if frame.is_empty() {
                continue;
            }
            let mut f = std::mem::take(&mut frame);
            counters.frames.fetch_add(1, Ordering::Relaxed);
            if rng.chance(cfg.loss) {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if rng.chance(cfg.corrupt) {
                counters.corrupted.fetch_add(1, Ordering::Relaxed);
                let i = (rng.next() % f.len() as u64) as usize;
                f[i] ^= 1 << (rng.next() % 8);
            }
            if tx.send((Instant::now(), f)).is_err() {
                return;
            }
        }
    }
}

fn sim_write(
    mut port: Box<dyn serialport::SerialPort>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    cfg: SimConfig,
    stop: Arc<AtomicBool>,
    counters: Arc<SimCounters>,
) {
    let mut line_free = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let Ok((arrived, f)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let mut out = Vec::with_capacity(f.len() + 2);
        out.push(0xC0);
        out.extend_from_slice(&f);
        out.push(0xC0);
        let serialise = Duration::from_secs_f64(out.len() as f64 * 10.0 / f64::from(cfg.baud));
        let start = (arrived + cfg.latency).max(line_free);
        line_free = start + serialise;
        while Instant::now() < line_free {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep((line_free - Instant::now()).min(Duration::from_millis(20)));
        }
        if port.write_all(&out).is_err() {
            return;
        }
        counters
            .bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
    }
}

/// Two socat pairs with a simulator between them: endpoints `a` and `b`.
pub struct SimLink {
    left: Socat,
    right: Socat,
    /// The running simulator, if any.
    pub sim: Option<LinkSim>,
    cfg: SimConfig,
}

impl SimLink {
    /// Builds `a <-> sim <-> b` in `dir`.
    pub fn new(dir: &Path, cfg: SimConfig) -> SimLink {
        let left = Socat::pair(dir, "left");
        let right = Socat::pair(dir, "right");
        let sim = Some(LinkSim::start(&left.b, &right.a, cfg));
        SimLink {
            left,
            right,
            sim,
            cfg,
        }
    }

    /// Endpoint A's device.
    pub fn a(&self) -> &Path {
        &self.left.a
    }

    /// Endpoint B's device.
    pub fn b(&self) -> &Path {
        &self.right.b
    }

    /// Kills the simulator: the link is cut.
    pub fn cut(&mut self) {
        if let Some(s) = self.sim.take() {
            s.kill();
        }
    }

    /// Starts a new simulator: the link is back.
    pub fn restore(&mut self) {
        assert!(self.sim.is_none(), "the link is not cut");
        self.sim = Some(LinkSim::start(&self.left.b, &self.right.a, self.cfg));
    }
}

/// Two Direwolf software TNCs (AFSK 1200 baud) joined by two audio fifos, one each way, each
/// with its own HOME and ALSA file plugin, each offering KISS on a pseudo-terminal.
pub struct DirewolfPair {
    a: Child,
    b: Child,
    /// TNC A's KISS pseudo-terminal.
    pub kiss_a: PathBuf,
    /// TNC B's KISS pseudo-terminal.
    pub kiss_b: PathBuf,
    logs: (PathBuf, PathBuf),
    _fifos: (File, File),
}

impl DirewolfPair {
    /// Starts both TNCs in `dir`.
    pub fn start(dir: &Path) -> DirewolfPair {
        require("direwolf");
        require("mkfifo");
        let ab = dir.join("a-to-b.fifo");
        let ba = dir.join("b-to-a.fifo");
        for f in [&ab, &ba] {
            let ok = Command::new("mkfifo").arg(f).status().expect("run mkfifo");
            assert!(ok.success(), "mkfifo {}", f.display());
        }
        // Opened read-write so that opening never blocks and the readers never see EOF.
        let rw = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .expect("open fifo")
        };
        let (fab, fba) = (rw(&ab), rw(&ba));
        let start = |name: &str, out: &Path, input: &File| -> (Child, PathBuf) {
            let home = dir.join(format!("home-{name}"));
            fs::create_dir_all(&home).expect("home");
            fs::write(
                home.join(".asoundrc"),
                format!(
                    "pcm.txfile {{ type file; slave.pcm \"null\"; file \"{}\"; format \"raw\" }}\n",
                    out.display()
                ),
            )
            .expect("asoundrc");
            let conf = dir.join(format!("{name}.conf"));
            fs::write(
                &conf,
                format!(
                    "ADEVICE stdin txfile\nACHANNELS 1\nCHANNEL 0\nMYCALL N0CAL{}\nMODEM 1200\nFULLDUP ON\nKISSPORT 0\nAGWPORT 0\n",
                    name.to_uppercase()
                ),
            )
            .expect("conf");
            let log = dir.join(format!("direwolf-{name}.log"));
            let logf = File::create(&log).expect("log");
            let child = Command::new("direwolf")
                .args(["-c", &conf.display().to_string(), "-p", "-t", "0"])
                .env("HOME", &home)
                .stdin(input.try_clone().expect("fifo"))
                .stdout(logf.try_clone().expect("log"))
                .stderr(logf)
                .spawn()
                .expect("start direwolf");
            (child, log)
        };
        let (a, log_a) = start("a", &ab, &fba);
        let (b, log_b) = start("b", &ba, &fab);
        let mut pair = DirewolfPair {
            a,
            b,
            kiss_a: PathBuf::new(),
            kiss_b: PathBuf::new(),
            logs: (log_a, log_b),
            _fifos: (fab, fba),
        };
        pair.kiss_a = pair.kiss_pty(0);
        pair.kiss_b = pair.kiss_pty(1);
        pair
    }

    fn kiss_pty(&mut self, which: usize) -> PathBuf {
        let log = if which == 0 {
            self.logs.0.clone()
        } else {
            self.logs.1.clone()
        };
        let mut found = None;
        let child = if which == 0 { &mut self.a } else { &mut self.b };
        wait_for(
            "Direwolf's KISS pseudo-terminal",
            Duration::from_secs(15),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "direwolf exited ({status}): {}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let text = fs::read(&log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                found = text
                    .split("Virtual KISS TNC is available on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(PathBuf::from);
                found.is_some()
            },
        );
        found.expect("pty")
    }

    /// Both TNCs' logs (what they decoded), for a failure message.
    pub fn logs(&self) -> String {
        let read = |p: &Path| {
            let text = fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            text.lines().take(300).collect::<Vec<_>>().join("\n")
        };
        format!(
            "--- TNC A ---\n{}\n--- TNC B ---\n{}",
            read(&self.logs.0),
            read(&self.logs.1)
        )
    }
}

impl Drop for DirewolfPair {
    fn drop(&mut self) {
        for c in [&mut self.a, &mut self.b] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reproducible pseudo-random bytes standing in for an encrypted bundle.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    (0..len).map(|_| (r.next() >> 24) as u8).collect()
}

/// Records (and with `trace`, prints) every frame a session sends and its progress.
pub struct Recorder {
    name: &'static str,
    t0: Instant,
    trace: bool,
    /// Frames sent: kind, bytes, bytes written.
    pub frames: Mutex<Vec<(FrameKind, Vec<u8>, usize)>>,
}

impl Recorder {
    /// A recorder named `name` (A or B).
    pub fn new(name: &'static str, trace: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            name,
            t0: Instant::now(),
            trace,
            frames: Mutex::new(Vec::new()),
        })
    }
}

impl Progress for Recorder {
    fn update(&self, r: &ProgressReport) {
        if self.trace {
            println!(
                "{:8.2} {} {:?} {}/{} bytes, {:.0} B/s, eta {:?}",
                self.t0.elapsed().as_secs_f64(),
                self.name,
                r.flow,
                r.done,
                r.total,
                r.rate,
                r.eta.map(|d| d.as_secs())
            );
        }
    }

    fn frame_sent(&self, kind: FrameKind, frame: &[u8], wire: usize) {
        if self.trace {
            println!(
                "{:8.2} {} sends {kind:?} ({wire} bytes)",
                self.t0.elapsed().as_secs_f64(),
                self.name
            );
        }
        self.frames
            .lock()
            .unwrap()
            .push((kind, frame.to_vec(), wire));
    }
}

/// Frames written by hand from the layout in `src/wire.rs` and `src/link.rs` (a second
/// encoder: a stranger's station that does not run ferry's session at all, so it can send
/// what ferry's own session never would).
pub mod raw {
    use std::io::{Read, Write};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// Frame kinds (`wire.rs`).
    pub const HELLO: u8 = 1;
    pub const ACK: u8 = 2;
    pub const OFFER: u8 = 3;
    pub const DATA: u8 = 5;
    pub const PROBE: u8 = 8;
    const POLL: u8 = 0x80;

    /// CRC-32 (IEEE 802.3), bit by bit.
    pub fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// One frame: kind | POLL, epoch, sequence number, payload length, payload, CRC.
    pub fn frame(kind: u8, epoch: u16, seq: u16, poll: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind | if poll { POLL } else { 0 }];
        f.extend_from_slice(&epoch.to_le_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        f.extend_from_slice(payload);
        let crc = crc32(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    /// A HELLO frame's payload.
    pub fn hello(echo: u16, mtu: u16) -> Vec<u8> {
        let mut p = b"FY\x01".to_vec();
        p.extend_from_slice(&echo.to_le_bytes());
        p.extend_from_slice(&mtu.to_le_bytes());
        p
    }

    /// An OFFER frame's payload.
    pub fn offer(slot: u16, len: u32, hash: &[u8; 32]) -> Vec<u8> {
        let mut p = slot.to_le_bytes().to_vec();
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(hash);
        p
    }

    fn escape(out: &mut Vec<u8>, data: &[u8]) {
        for &b in data {
            match b {
                0xC0 => out.extend_from_slice(&[0xDB, 0xDC]),
                0xDB => out.extend_from_slice(&[0xDB, 0xDD]),
                b => out.push(b),
            }
        }
    }

    /// An AX.25 address field entry.
    fn address(call: &str, ssid: u8, last: bool, command: bool) -> [u8; 7] {
        let mut a = [b' ' << 1; 7];
        for (i, c) in call.bytes().enumerate() {
            a[i] = c << 1;
        }
        a[6] = 0x60 | (ssid << 1) | u8::from(last) | if command { 0x80 } else { 0 };
        a
    }

    /// How frames go on the line: raw (SLIP-style) or KISS with an AX.25 UI frame from
    /// `call` (and SSID) to FERRY.
    #[derive(Clone)]
    pub enum Framing {
        /// `0xC0 frame 0xC0`, escaped.
        Raw,
        /// KISS data frame, AX.25 UI from this callsign.
        Kiss(String, u8),
    }

    impl Framing {
        /// The bytes on the line for one frame.
        pub fn wrap(&self, f: &[u8]) -> Vec<u8> {
            let mut out = vec![0xC0];
            match self {
                Framing::Raw => escape(&mut out, f),
                Framing::Kiss(call, ssid) => {
                    out.push(0x00);
                    let mut ax = Vec::new();
                    ax.extend_from_slice(&address("FERRY", 0, false, true));
                    ax.extend_from_slice(&address(call, *ssid, true, false));
                    ax.extend_from_slice(&[0x03, 0xF0]);
                    ax.extend_from_slice(f);
                    escape(&mut out, &ax);
                }
            }
            out.push(0xC0);
            out
        }

        /// The frame inside what was between two delimiters, if any.
        fn unwrap(&self, inner: &[u8]) -> Option<Vec<u8>> {
            match self {
                Framing::Raw => Some(inner.to_vec()),
                // Command byte, two addresses (no digipeaters), control, PID.
                Framing::Kiss(..) => inner.get(1 + 16..).map(<[u8]>::to_vec),
            }
        }
    }

    /// A frame heard from the other end, CRC checked: kind (without POLL), epoch, payload.
    #[derive(Clone, Debug)]
    pub struct Heard {
        /// Kind, without the POLL flag.
        pub kind: u8,
        /// The sender's epoch.
        pub epoch: u16,
        /// Sequence number.
        pub seq: u16,
        /// Payload.
        pub payload: Vec<u8>,
    }

    /// A hand-made station on a serial port: writes frames, and a thread reads and decodes
    /// everything the other end sends (also the raw bytes, unescaped, for searching).
    pub struct RawStation {
        port: Box<dyn serialport::SerialPort>,
        /// How it frames.
        pub framing: Framing,
        /// Frames heard, in order.
        pub heard: Arc<Mutex<Vec<Heard>>>,
        /// Every byte heard between delimiters, unescaped, frames back to back.
        pub bytes: Arc<Mutex<Vec<u8>>>,
        stop: Arc<AtomicBool>,
        reader: Option<JoinHandle<()>>,
    }

    impl RawStation {
        /// Opens `device`.
        pub fn open(device: &Path, framing: Framing) -> RawStation {
            let port = serialport::new(device.display().to_string(), 9600)
                .timeout(Duration::from_secs(5))
                .open()
                .unwrap_or_else(|e| panic!("open {}: {e}", device.display()));
            let mut rd = port.try_clone().expect("clone port");
            rd.set_timeout(Duration::from_millis(50)).expect("timeout");
            let heard = Arc::new(Mutex::new(Vec::new()));
            let bytes = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let reader = {
                let (heard, bytes, stop, framing) =
                    (heard.clone(), bytes.clone(), stop.clone(), framing.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut cur = Vec::new();
                    let mut esc = false;
                    while !stop.load(Ordering::SeqCst) {
                        let n = match rd.read(&mut buf) {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                            Err(_) => return,
                        };
                        for &b in &buf[..n] {
                            match (b, esc) {
                                (0xC0, _) => {
                                    esc = false;
                                    let inner = std::mem::take(&mut cur);
                                    let Some(f) = framing.unwrap(&inner) else {
                                        continue;
                                    };
                                    bytes.lock().unwrap().extend_from_slice(&f);
                                    if f.len() >= 11
                                        && crc32(&f[..f.len() - 4]).to_le_bytes()
                                            == f[f.len() - 4..]
                                    {
                                        heard.lock().unwrap().push(Heard {
                                            kind: f[0] & !POLL,
                                            epoch: u16::from_le_bytes([f[1], f[2]]),
                                            seq: u16::from_le_bytes([f[3], f[4]]),
                                            payload: f[7..f.len() - 4].to_vec(),
                                        });
                                    }
                                }
                                (0xDB, false) => esc = true,
                                (0xDC, true) => {
                                    esc = false;
                                    cur.push(0xC0);
                                }
                                (0xDD, true) => {
                                    esc = false;
                                    cur.push(0xDB);
                                }
                                (b, _) => {
                                    esc = false;
                                    cur.push(b);
                                }
                            }
                        }
                    }
                })
            };
            RawStation {
                port,
                framing,
                heard,
                bytes,
                stop,
                reader: Some(reader),
            }
        }

        /// Writes one frame (a line that stays blocked longer than the port's timeout drops
        /// it, as a stalled modem would).
        pub fn send(&mut self, f: &[u8]) {
            let wire = self.framing.wrap(f);
            match self.port.write_all(&wire) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("write: {e}"),
            }
        }

        /// Writes bytes as they are.
        pub fn send_bytes(&mut self, b: &[u8]) {
            let _ = self.port.write_all(b);
        }

        /// Frames heard so far.
        pub fn frames(&self) -> Vec<Heard> {
            self.heard.lock().unwrap().clone()
        }

        /// Opens the link as a session would (HELLO with epoch `epoch`, answered with the
        /// other end's epoch echoed): returns the other end's epoch, or `None` if it does
        /// not answer within `limit`.
        pub fn connect(&mut self, epoch: u16, limit: Duration) -> Option<u16> {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                self.send(&frame(HELLO, epoch, 0, false, &hello(0, 200)));
                std::thread::sleep(Duration::from_millis(300));
                let theirs = self
                    .frames()
                    .iter()
                    .rev()
                    .find(|h| h.kind == HELLO && h.payload.len() == 7)
                    .map(|h| h.epoch);
                if let Some(t) = theirs {
                    self.send(&frame(HELLO, epoch, 0, false, &hello(t, 200)));
                    return Some(t);
                }
            }
            None
        }
    }

    impl Drop for RawStation {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }
}

/// A session whose other end is trusted from the start (these tests run both ends): its
/// messages of any size go to the state folder, so they resume.
pub fn admitted(s: ferry_transport_serial::Session) -> ferry_transport_serial::Session {
    s.admit_peer().expect("admit the other end");
    s
}
