//! A session on a device: the reader and protocol threads, and the blocking API the node
//! calls.

use crate::config::SerialConfig;
use crate::engine::{Engine, Event, Params, SessionStats};
use crate::error::SerialError;
use crate::fault::Fault;
use crate::link::{AX25_HEADER, Callsign, Deframer, Encap, Unwrapped};
use crate::politeness::{DutyCycle, Pacer};
use crate::progress::{Flow, NoProgress, Progress, ProgressReport};
use crate::store::{AirtimeLog, RxStore};
use crate::wire::{Body, DATA_FRAME_OVERHEAD, Frame};
use crate::{MAX_MESSAGE, MessageHash, engine};
use serialport::SerialPort;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often the threads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Minimum spacing of progress calls for one message.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// A message received from the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its BLAKE3 hash (checked).
    pub hash: MessageHash,
    /// Its bytes.
    pub data: Vec<u8>,
    /// How many of them were already held from earlier sessions.
    pub resumed: u64,
}

enum Input {
    Frame(Frame, Option<Callsign>),
    Damaged,
    ReadFailed(io::Error),
    Send(MessageHash, Arc<Vec<u8>>),
    Admit,
    Close,
}

#[derive(Default)]
struct State {
    /// Whole messages, with their bytes when they were taken in memory.
    inbox: VecDeque<(MessageHash, u64, Option<Vec<u8>>)>,
    delivered: Vec<MessageHash>,
    pending: Vec<MessageHash>,
    refused: Vec<(MessageHash, u8)>,
    peer_closed: bool,
    close_complete: bool,
    established: bool,
    fault: Option<Fault>,
    last_heard: Option<Instant>,
    /// When message bytes last moved either way.
    progress_at: Option<Instant>,
    /// When the link came up.
    connected_at: Option<Instant>,
    /// The other station's AX.25 callsign (KISS), once heard.
    peer_call: Option<String>,
    stats: SessionStats,
    ended: bool,
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Options of [`Session::open_with`] beyond the configuration.
pub(crate) struct Mode {
    pub(crate) announce: bool,
    pub(crate) fault_on_restart: bool,
    /// The peer is admitted from the start (see [`Session::admit_peer`]).
    pub(crate) admitted: bool,
    /// Waits fail once nothing moved for `timeout`, whatever keep-alives the peer sends (a
    /// listener serving whoever calls).
    pub(crate) strict: bool,
}

/// What a wait measures against the timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Silence: time since the peer was last heard.
    Silence,
    /// In strict mode, time since anything moved; else silence.
    Work,
}

/// A session with the station at the other end of a serial link: carries whole messages
/// both ways, reliably, and resumes interrupted ones from the state folder.
///
/// Dropping a session stops it at once, without telling the other end (as a crash would);
/// [`Session::close`] ends it cleanly.
pub struct Session {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Input>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    device: String,
    timeout: Duration,
    strict: bool,
    store: RxStore,
}

fn random_epoch() -> u16 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let b = h.finalize();
    u16::from_le_bytes([b.as_bytes()[0], b.as_bytes()[1]]).max(1)
}

/// Bytes a frame occupies on the link, for pacing and airtime: what is written in raw mode;
/// the AX.25 frame plus FCS and flags in KISS mode.
fn link_bytes(encap: &Encap, frame: &[u8], wire: usize) -> usize {
    match encap {
        Encap::Raw => wire,
        Encap::Kiss { .. } => AX25_HEADER + frame.len() + 4,
    }
}

impl Session {
    /// Opens `config.device` and starts a session, keeping partly received messages in
    /// `state_dir` (created if needed; one session per folder at a time).
    ///
    /// Until [`Session::admit_peer`], the other end is a stranger: only a few small
    /// messages are taken from it (in memory, never in the state folder), larger offers
    /// wait, and this end answers a bounded number of its frames.
    pub fn open(
        config: &SerialConfig,
        state_dir: impl AsRef<Path>,
    ) -> Result<Session, SerialError> {
        Session::open_with_progress(config, state_dir, Arc::new(NoProgress))
    }

    /// Like [`Session::open`], reporting progress to `progress`.
    pub fn open_with_progress(
        config: &SerialConfig,
        state_dir: impl AsRef<Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<Session, SerialError> {
        let mode = Mode {
            announce: true,
            fault_on_restart: true,
            admitted: false,
            strict: false,
        };
        Session::open_with(config, state_dir.as_ref(), progress, mode)
    }

    /// Like [`Session::open_with_progress`] for a station that waits to be called (`ferry
    /// serial listen`): it sends nothing until the other end has called (no HELLO, no
    /// keep-alives on an idle channel), and bytes left on the line from before are dropped.
    /// A restart of the other end mid-session is still a [`SerialError::PeerRestarted`], so
    /// the listener can start its exchange over. Waits are strict: once connected, a wait
    /// fails with [`SerialError::Stalled`] when nothing moved for `timeout`, however the
    /// caller keeps the link alive.
    pub fn open_listening(
        config: &SerialConfig,
        state_dir: impl AsRef<Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<Session, SerialError> {
        let mode = Mode {
            announce: false,
            fault_on_restart: true,
            admitted: false,
            strict: true,
        };
        Session::open_with(config, state_dir.as_ref(), progress, mode)
    }

    pub(crate) fn open_with(
        config: &SerialConfig,
        state: &Path,
        progress: Arc<dyn Progress>,
        mode: Mode,
    ) -> Result<Session, SerialError> {
        config.validate()?;
        let device_path: PathBuf = config.device.clone().ok_or(SerialError::NoDevice)?;
        let device = device_path.display().to_string();
        let state_err = |e: io::Error| SerialError::State {
            path: state.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(state).map_err(state_err)?;
        let store = RxStore::open(state).map_err(state_err)?;
        let log = match config.duty_cycle {
            Some(_) => AirtimeLog::load(state, SystemTime::now()).map_err(state_err)?,
            None => AirtimeLog::memory(),
        };
        let port = serialport::new(device.clone(), config.baud)
            .timeout(TICK)
            .open()
            .map_err(|source| SerialError::Open {
                device: device.clone(),
                source,
            })?;
        if mode.strict {
            // What a caller said before this session began was not said to it.
            let _ = port.clear(serialport::ClearBuffer::Input);
        }
        let mut writer = port.try_clone().map_err(|source| SerialError::Open {
            device: device.clone(),
            source,
        })?;
        writer
            .set_timeout(Duration::from_secs(2))
            .map_err(|source| SerialError::Open {
                device: device.clone(),
                source,
            })?;

        let encap = match config.parsed_callsign() {
            Some(call) if config.kiss => Encap::kiss(call),
            _ => Encap::Raw,
        };
        let rate = config.effective_rate();
        let now = Instant::now();
        let pacer = Pacer::new(rate, now);
        let full = vec![0xAAu8; usize::from(config.mtu) + DATA_FRAME_OVERHEAD];
        let full_link = link_bytes(&encap, &full, encap.wrap(&full).len());
        let frame_time = pacer.airtime(full_link);
        let params = Params {
            mtu: config.mtu,
            window: usize::from(config.window),
            frame_time,
            byte_time: pacer.airtime(1),
            announce: mode.announce,
            fault_on_restart: mode.fault_on_restart,
            keepalive: mode
                .announce
                .then(|| (config.silence_timeout() / 6).max(Duration::from_secs(2))),
            max_rto: config.silence_timeout() / 3,
            admitted: mode.admitted,
        };
        let engine = Engine::new(params, random_epoch(), store, now);
        let shared = Arc::new(Shared {
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();

        let reader = {
            let (tx, stop, kiss) = (tx.clone(), stop.clone(), config.kiss);
            std::thread::Builder::new()
                .name("ferry-serial-read".into())
                .spawn(move || read_loop(port, kiss, tx, stop))
                .map_err(|e| SerialError::Device {
                    device: device.clone(),
                    source: e,
                })?
        };
        let driver = Driver {
            engine,
            port: writer,
            duty: DutyCycle::new(config.duty_cycle, log, SystemTime::now()),
            encap,
            pacer,
            max_link: full_link,
            rx,
            shared: shared.clone(),
            stop: stop.clone(),
            progress,
            peer_call: None,
            tracks: HashMap::new(),
            close_requested: false,
        };
        let driver = std::thread::Builder::new()
            .name("ferry-serial-session".into())
            .spawn(move || driver.run())
            .map_err(|e| SerialError::Device {
                device: device.clone(),
                source: e,
            })?;
        Ok(Session {
            shared,
            tx,
            stop,
            threads: vec![reader, driver],
            device,
            timeout: config.silence_timeout(),
            strict: mode.strict,
            store: RxStore::at(state),
        })
    }

    /// The device this session runs on.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Queues a message for the other end and returns its hash at once. Sending the same
    /// bytes twice in one session sends them once.
    pub fn send(&self, message: Vec<u8>) -> Result<MessageHash, SerialError> {
        let size = message.len() as u64;
        if size > MAX_MESSAGE {
            return Err(SerialError::TooLarge {
                size,
                max: MAX_MESSAGE,
            });
        }
        let hash = MessageHash::of(&message);
        {
            let mut st = self.shared.lock();
            if let Some(f) = &st.fault {
                return Err(SerialError::from_fault(f, &self.device));
            }
            if st.ended {
                return Err(SerialError::Closed);
            }
            if !st.pending.contains(&hash) {
                st.pending.push(hash);
            }
        }
        self.tx
            .send(Input::Send(hash, Arc::new(message)))
            .map_err(|_| SerialError::Closed)?;
        Ok(hash)
    }

    /// Waits until the other end holds every message sent so far.
    pub fn flush(&self) -> Result<(), SerialError> {
        self.wait(Rule::Work, None, |st| {
            st.pending.is_empty().then_some(Ok(()))
        })
    }

    /// Like [`Session::flush`], but gives up at `deadline` ([`SerialError::Deadline`]).
    pub fn flush_by(&self, deadline: Instant) -> Result<(), SerialError> {
        self.wait(Rule::Work, Some(deadline), |st| {
            st.pending.is_empty().then_some(Ok(()))
        })
    }

    /// Waits for the next message from the other end; `None` once it closed the session
    /// with nothing more to send.
    pub fn recv(&self) -> Result<Option<Received>, SerialError> {
        self.recv_inner(None)
    }

    /// Like [`Session::recv`], but fails with [`SerialError::Deadline`] at `deadline`
    /// whatever the other end does (for the opening of an exchange, where a caller must say
    /// who it is within the timeout, not merely stay alive).
    pub fn recv_by(&self, deadline: Instant) -> Result<Option<Received>, SerialError> {
        self.recv_inner(Some(deadline))
    }

    fn recv_inner(&self, deadline: Option<Instant>) -> Result<Option<Received>, SerialError> {
        let next = self.wait(Rule::Work, deadline, |st| {
            if let Some(m) = st.inbox.pop_front() {
                return Some(Ok(Some(m)));
            }
            st.peer_closed.then_some(Ok(None))
        })?;
        let Some((hash, resumed, data)) = next else {
            return Ok(None);
        };
        let data = match data {
            Some(data) => data,
            None => self
                .store
                .read(&hash)
                .map_err(|source| SerialError::State {
                    path: self.store.msg_path(&hash).display().to_string(),
                    source,
                })?,
        };
        Ok(Some(Received {
            hash,
            data,
            resumed,
        }))
    }

    /// Waits until the link is up (both ends heard each other).
    pub fn wait_connected(&self) -> Result<(), SerialError> {
        self.wait(Rule::Silence, None, |st| st.established.then_some(Ok(())))
    }

    /// The application knows who the other end is (it proved it): from now on its
    /// messages of any size are taken into the state folder (within the folder's quota),
    /// offers that waited are answered, and the budget on frames answered is lifted.
    pub fn admit_peer(&self) -> Result<(), SerialError> {
        self.tx.send(Input::Admit).map_err(|_| SerialError::Closed)
    }

    /// The other station's callsign (KISS/AX.25), once heard; checked to be letters and
    /// digits.
    pub fn peer_callsign(&self) -> Option<String> {
        self.shared.lock().peer_call.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.shared.lock().stats.clone()
    }

    /// Ends the session: waits until the other end holds every message sent and has itself
    /// closed, then stops. Messages received in this session are removed from the state
    /// folder (the node has them). It waits as long as the other end answers; it fails with
    /// [`SerialError::LinkLost`] once the other end has been silent for `timeout`.
    pub fn close(self) -> Result<SessionStats, SerialError> {
        self.close_when(|_, _| false)
    }

    /// Ends the session when the application knows that both ends hold everything (each
    /// has received the other's last message, as ferry's *end* message says): like
    /// [`Session::close`], but once every message sent here is confirmed and the other end
    /// has been silent for half the timeout, the session ends without waiting for the
    /// other end's CLOSE. That end has finished already and only its last acknowledgement
    /// was lost; a lossy link must not turn a complete exchange into a failure.
    ///
    /// In strict mode (a listener), the other end's keep-alives do not hold it: once every
    /// message sent here is confirmed, half the timeout without anything moving ends it.
    pub fn close_after_end(self) -> Result<SessionStats, SerialError> {
        let half = self.timeout / 2;
        let strict = self.strict;
        self.close_when(move |st, start| {
            let last = if strict {
                st.progress_at
            } else {
                st.last_heard
            };
            let quiet = last.map_or(start, |h| h.max(start));
            st.pending.is_empty() && quiet.elapsed() >= half
        })
    }

    fn close_when(
        mut self,
        mut done: impl FnMut(&State, Instant) -> bool,
    ) -> Result<SessionStats, SerialError> {
        self.tx
            .send(Input::Close)
            .map_err(|_| SerialError::Closed)?;
        let start = Instant::now();
        self.wait(Rule::Silence, None, |st| {
            (st.close_complete || done(st, start)).then_some(Ok(()))
        })?;
        self.shutdown();
        let st = self.shared.lock();
        for h in &st.delivered {
            let _ = self.store.remove(h);
        }
        Ok(st.stats.clone())
    }

    pub(crate) fn store(&self) -> &RxStore {
        &self.store
    }

    /// Waits for `ready` to give a result, failing on a fault, a silent peer (or, by
    /// `rule` in strict mode, a peer with which nothing moves), or at `deadline`.
    fn wait<T>(
        &self,
        rule: Rule,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, SerialError>>,
    ) -> Result<T, SerialError> {
        let start = Instant::now();
        let secs = self.timeout.as_secs();
        let mut st = self.shared.lock();
        loop {
            if let Some((hash, reason)) = st.refused.pop() {
                let reason = match reason {
                    engine::REFUSE_TOO_LARGE => "it is larger than the other end accepts",
                    engine::REFUSE_BUSY => {
                        "the other end takes no more messages at once (before the stations know each other, or beyond its limits)"
                    }
                    engine::REFUSE_FULL => {
                        "the other end's serial folder is full (its quota); it takes the message once it made room"
                    }
                    _ => "the other end gave a reason this version does not know",
                };
                return Err(SerialError::Refused {
                    hash,
                    reason: reason.to_string(),
                });
            }
            if let Some(r) = ready(&mut st) {
                return r;
            }
            if let Some(f) = &st.fault {
                return Err(SerialError::from_fault(f, &self.device));
            }
            if st.ended {
                return Err(SerialError::Closed);
            }
            let heard = st.last_heard.map_or(start, |h| h.max(start));
            let silent = heard.elapsed();
            if silent >= self.timeout {
                return Err(SerialError::LinkLost { silent });
            }
            let mut left = self.timeout - silent;
            if self.strict && rule == Rule::Work && st.established {
                let moved = st.progress_at.map_or(start, |p| p.max(start));
                let still = moved.elapsed();
                if still >= self.timeout {
                    return Err(SerialError::Stalled { secs });
                }
                left = left.min(self.timeout - still);
            }
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    let since = st.connected_at.unwrap_or(start);
                    let secs = d.saturating_duration_since(since).as_secs_f64().round() as u64;
                    return Err(SerialError::Deadline { secs });
                }
                left = left.min(d - now);
            }
            let left = left.min(Duration::from_secs(1));
            st = self
                .shared
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_loop(
    mut port: Box<dyn SerialPort>,
    kiss: bool,
    tx: mpsc::Sender<Input>,
    stop: Arc<AtomicBool>,
) {
    let max = usize::from(crate::config::MAX_MTU) + DATA_FRAME_OVERHEAD + AX25_HEADER + 64;
    let mut deframer = Deframer::new(kiss, max);
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match port.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => {
                deframer.push(&buf[..n], &mut out);
                for u in out.drain(..) {
                    let input = match u {
                        Unwrapped::Frame { src, bytes } => match Frame::decode(&bytes) {
                            Ok(f) => Input::Frame(f, src),
                            Err(_) => Input::Damaged,
                        },
                        Unwrapped::Garbage => Input::Damaged,
                        Unwrapped::Foreign => continue,
                    };
                    if tx.send(input).is_err() {
                        return;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                let _ = tx.send(Input::ReadFailed(e));
                return;
            }
        }
    }
}

struct Track {
    start: Instant,
    start_done: u64,
    last: Option<Instant>,
}

struct Driver {
    engine: Engine,
    port: Box<dyn SerialPort>,
    encap: Encap,
    pacer: Pacer,
    duty: DutyCycle,
    max_link: usize,
    rx: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    progress: Arc<dyn Progress>,
    peer_call: Option<Callsign>,
    tracks: HashMap<(bool, MessageHash), Track>,
    close_requested: bool,
}

impl Driver {
    fn run(mut self) {
        let mut reports = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            self.engine.on_tick(now);
            let mut wake = self.engine.next_deadline();
            let mut failed = false;
            while self.engine.wants_transmit(Instant::now()) {
                let now = Instant::now();
                let ready = self.pacer.ready_at();
                if ready > now {
                    wake = Some(wake.map_or(ready, |w| w.min(ready)));
                    break;
                }
                let wait = self
                    .duty
                    .wait(SystemTime::now(), self.pacer.airtime(self.max_link));
                if !wait.is_zero() {
                    wake = Some(wake.map_or(now + wait, |w| w.min(now + wait)));
                    break;
                }
                let Some(frame) = self.engine.poll_transmit(now) else {
                    break;
                };
                if let Err(f) = self.write(&frame, now) {
                    self.shared.lock().fault = Some(f);
                    failed = true;
                    break;
                }
            }
            let fault = self.publish(&mut reports);
            self.report(&mut reports);
            if failed || fault {
                break;
            }
            let timeout = wake.map_or(TICK, |w| {
                w.saturating_duration_since(Instant::now()).min(TICK)
            });
            let first = match self.rx.recv_timeout(timeout) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut inputs: Vec<Input> = first.into_iter().collect();
            inputs.extend(self.rx.try_iter());
            for input in inputs {
                if let Err(f) = self.handle(input) {
                    self.shared.lock().fault = Some(f);
                    failed = true;
                }
            }
            let fault = self.publish(&mut reports);
            self.report(&mut reports);
            if failed || fault {
                break;
            }
        }
        self.shared.lock().ended = true;
        self.shared.cv.notify_all();
    }

    fn handle(&mut self, input: Input) -> Result<(), Fault> {
        let now = Instant::now();
        match input {
            Input::Frame(f, src) => {
                if let Some(src) = src {
                    if self.encap.own_callsign() == Some(&src) {
                        return Ok(());
                    }
                    match &self.peer_call {
                        Some(p) if *p != src => return Ok(()),
                        None if matches!(f.body, Body::Hello { .. }) => {
                            self.shared.lock().peer_call = Some(src.to_string());
                            self.peer_call = Some(src);
                        }
                        _ => {}
                    }
                }
                self.engine.on_frame(f, now);
            }
            Input::Damaged => self.engine.stats.frames_damaged += 1,
            Input::ReadFailed(e) => {
                return Err(Fault::Device(e.kind(), format!("read failed: {e}")));
            }
            Input::Send(hash, data) => self.engine.queue(hash, data),
            Input::Admit => self.engine.admit(now),
            Input::Close => {
                self.close_requested = true;
                self.engine.request_close();
            }
        }
        Ok(())
    }

    fn write(&mut self, frame: &Frame, now: Instant) -> Result<(), Fault> {
        let bytes = frame.encode();
        let wire = self.encap.wrap(&bytes);
        match self.port.write_all(&wire) {
            Ok(()) => {}
            // A stalled line (no reader on a pseudo-terminal, flow control): the frame is
            // as good as lost, and the protocol sends its content again.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => return Err(Fault::Device(e.kind(), format!("write failed: {e}"))),
        }
        let link = link_bytes(&self.encap, &bytes, wire.len());
        self.pacer.consume(now, link);
        let airtime = self.pacer.airtime(link);
        if let Err(e) = self.duty.record(SystemTime::now(), airtime) {
            let path = self
                .duty
                .log_path()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            return Err(Fault::state(&path, &e));
        }
        let s = &mut self.engine.stats;
        s.frames_sent += 1;
        s.wire_bytes_sent += wire.len() as u64;
        s.airtime += airtime;
        self.progress
            .frame_sent(frame.body.kind(), &bytes, wire.len());
        Ok(())
    }

    /// Moves engine events into the shared state; true on a fault.
    fn publish(&mut self, reports: &mut Vec<ProgressReport>) -> bool {
        let events = self.engine.take_events();
        let now = Instant::now();
        let mut st = self.shared.lock();
        let mut fault = st.fault.is_some();
        for e in events {
            match e {
                Event::Established => {
                    st.established = true;
                    st.connected_at.get_or_insert(now);
                }
                Event::Reassociated => st.established = false,
                Event::Delivered {
                    hash,
                    resumed,
                    data,
                } => {
                    if data.is_none() {
                        st.delivered.push(hash);
                    }
                    st.inbox.push_back((hash, resumed, data));
                }
                Event::Sent { hash } => st.pending.retain(|h| *h != hash),
                Event::Refused { hash, reason } => {
                    st.pending.retain(|h| *h != hash);
                    st.refused.push((hash, reason));
                }
                Event::PeerClosed => st.peer_closed = true,
                Event::Fault(f) => {
                    st.fault = Some(f);
                    fault = true;
                }
                Event::Progress {
                    flow,
                    hash,
                    total,
                    done,
                    resumed,
                } => {
                    let key = (flow == Flow::Sending, hash);
                    let t = self.tracks.entry(key).or_insert(Track {
                        start: now,
                        start_done: done,
                        last: None,
                    });
                    if done < total
                        && t.last
                            .is_some_and(|l| now.duration_since(l) < PROGRESS_EVERY)
                    {
                        continue;
                    }
                    t.last = Some(now);
                    let secs = now.duration_since(t.start).as_secs_f64();
                    let moved = done.saturating_sub(t.start_done) as f64;
                    let rate = if secs > 0.0 { moved / secs } else { 0.0 };
                    let eta = (rate > 0.0)
                        .then(|| Duration::from_secs_f64((total - done.min(total)) as f64 / rate));
                    reports.push(ProgressReport {
                        flow,
                        message: hash,
                        total,
                        done,
                        resumed,
                        rate,
                        eta,
                    });
                }
            }
        }
        st.last_heard = self.engine.last_heard();
        st.progress_at = self.engine.progress_at();
        st.stats = self.engine.stats.clone();
        // Complete only once the last ACK (for the peer's CLOSE) has gone out.
        if self.close_requested
            && self.engine.close_complete(now)
            && !self.engine.wants_transmit(now)
        {
            st.close_complete = true;
        }
        drop(st);
        self.shared.cv.notify_all();
        fault
    }

    fn report(&self, reports: &mut Vec<ProgressReport>) {
        for r in reports.drain(..) {
            self.progress.update(&r);
        }
    }
}
