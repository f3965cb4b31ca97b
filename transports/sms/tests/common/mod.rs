//! Fixtures shared by the SMS transport's tests: real Kannel (bearerbox + smsbox) and Gammu
//! SMSD processes started on 127.0.0.1 and stopped by PID on drop, the test's own phone
//! network behind Kannel's HTTP SMSC, endpoints with their listener threads, and a clock the
//! test can move forward.
#![allow(dead_code, clippy::print_stderr)]

use ferry_transport_sms::{
    Accepted, Clock, Event, GatewayKind, Listener, Peer, Phone, SmsConfig, SmsTransport, Stopper,
    frame, text,
};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How long a fixture may take to come up, or the network to settle, before the test fails
/// (a liveness bound, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The path of a program the tests need, or a failure that says how to get it.
pub fn require(program: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/bin", "/sbin", "/usr/lib/kannel/test"];
    for dir in dirs.split(':').chain(extra) {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: the SMS transport's tests need the Debian packages kannel \
         (bearerbox, smsbox) and gammu-smsd; tests/run installs them (as root), or run \
         `apt-get install -y --no-install-recommends kannel gammu-smsd`"
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768–60999): a port the kernel hands out to any
    // test's outgoing connection cannot be taken between this check and the peer binding
    // it (Kannel once failed with "Address already in use"); and never the same twice in
    // one test binary.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % 12_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((start + n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A clock that runs with the wall clock plus an offset the test moves forward.
#[derive(Clone, Default)]
pub struct TestClock(Arc<AtomicU64>);

impl TestClock {
    pub fn clock(&self) -> Clock {
        let offset = self.0.clone();
        Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_secs(), Ordering::SeqCst);
    }
}

/// Waits until `done` holds, failing with `what` after [`PATIENCE`].
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let out = fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the phone network behind Kannel's HTTP SMSC --------------------------------------------

/// One SMS Kannel handed to the network (mobile-terminated).
#[derive(Clone, Debug)]
pub struct Mt {
    pub seq: usize,
    pub from: String,
    pub to: String,
    pub text: Vec<u8>,
    pub coding: Option<String>,
}

impl Mt {
    /// The ferry frame it carries, decoded with the crate's own codec.
    pub fn frame(&self) -> Option<frame::Frame> {
        let bytes = if self.coding.as_deref() == Some("1") {
            self.text.clone()
        } else {
            text::decode(std::str::from_utf8(&self.text).ok()?).ok()?
        };
        frame::decode(&bytes).ok()
    }
}

/// What the network does with one SMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    Duplicate,
    /// Held back and delivered after the next SMS (reordering).
    Hold,
}

pub type Policy = Box<dyn FnMut(&Mt) -> Fate + Send>;

#[derive(Default)]
struct NetState {
    mt: Vec<(Mt, Fate)>,
    held: Vec<Mt>,
    queue: VecDeque<Mt>,
    queued: usize,
    injected: usize,
}

/// The test's phone network: Kannel's HTTP SMSC sends each SMS here; the network decides its
/// fate and injects it back into Kannel as an incoming SMS for the recipient.
pub struct Network {
    pub port: u16,
    state: Arc<(Mutex<NetState>, Condvar)>,
    policy: Arc<Mutex<Policy>>,
    listener: Option<std::net::TcpListener>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

type GetHandler = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// Serves GET requests, one per connection (`Connection: close`), each on its own thread:
/// `handle` gets the request target and returns the status and body.
fn serve_gets(
    listener: std::net::TcpListener,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Arc<GetHandler>,
) -> JoinHandle<()> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut stream) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = Vec::new();
                let target = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(_)) = req.parse(&buf) {
                        break req.path.unwrap_or_default().to_string();
                    }
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let (status, body) = handle(&target);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    })
}

pub const SMSC_USER: &str = "netuser";
pub const SMSC_PASS: &str = "netpass";

fn query_pairs(q: &str) -> HashMap<String, Vec<u8>> {
    let decode = |s: &str| -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    out.push(
                        u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16)
                            .unwrap(),
                    );
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        out
    };
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

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

impl Network {
    pub fn start() -> Network {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Network {
            port,
            state: Arc::new((Mutex::new(NetState::default()), Condvar::new())),
            policy: Arc::new(Mutex::new(Box::new(|_: &Mt| Fate::Deliver))),
            listener: Some(listener),
            threads: Vec::new(),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Starts serving Kannel's MT requests and injecting into `smsc_port`.
    pub fn run(&mut self, smsc_port: u16) {
        let (state, policy) = (self.state.clone(), self.policy.clone());
        let handle = Arc::new(move |url: &str| {
            let q = query_pairs(url.split_once('?').map_or("", |x| x.1));
            let s = |k: &str| String::from_utf8_lossy(q.get(k).map_or(&[][..], |v| v)).into_owned();
            let (lock, cv) = &*state;
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            let mt = Mt {
                seq: st.mt.len(),
                from: s("from"),
                to: s("to"),
                text: q.get("text").cloned().unwrap_or_default(),
                coding: q
                    .get("coding")
                    .map(|c| String::from_utf8_lossy(c).into_owned()),
            };
            let fate = (policy.lock().unwrap_or_else(|e| e.into_inner()))(&mt);
            st.mt.push((mt.clone(), fate));
            match fate {
                Fate::Drop => {}
                Fate::Hold => st.held.push(mt),
                Fate::Deliver | Fate::Duplicate => {
                    let times = if fate == Fate::Duplicate { 2 } else { 1 };
                    for _ in 0..times {
                        st.queue.push_back(mt.clone());
                        st.queued += 1;
                    }
                    let held: Vec<Mt> = st.held.drain(..).collect();
                    for h in held {
                        st.queue.push_back(h);
                        st.queued += 1;
                    }
                }
            }
            cv.notify_all();
            (202, "Sent.".to_string())
        });
        let listener = self.listener.take().expect("run once");
        self.threads
            .push(serve_gets(listener, self.stop.clone(), handle));
        let (state, stop) = (self.state.clone(), self.stop.clone());
        self.threads.push(std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build(),
            );
            loop {
                let mt = {
                    let (lock, cv) = &*state;
                    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(mt) = st.queue.pop_front() {
                            break mt;
                        }
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        st = cv.wait_timeout(st, Duration::from_millis(100)).unwrap().0;
                    }
                };
                let mut url = format!(
                    "http://127.0.0.1:{smsc_port}/sms?username={SMSC_USER}&password={SMSC_PASS}&from={}&to={}&text={}",
                    pct(mt.from.as_bytes()),
                    pct(mt.to.as_bytes()),
                    pct(&mt.text)
                );
                if let Some(c) = &mt.coding {
                    if c == "1" {
                        url.push_str("&coding=1");
                    }
                }
                let mut ok = false;
                for _ in 0..50 {
                    if let Ok(r) = agent.get(&url).call() {
                        if r.status().is_success() {
                            ok = true;
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                assert!(ok, "Kannel's SMSC port refused an incoming SMS");
                let (lock, cv) = &*state;
                lock.lock().unwrap().injected += 1;
                cv.notify_all();
            }
        }));
    }

    /// Sets what happens to each following SMS.
    pub fn set_policy(&self, p: impl FnMut(&Mt) -> Fate + Send + 'static) {
        *self.policy.lock().unwrap() = Box::new(p);
    }

    /// Every SMS Kannel handed over so far, with its fate.
    pub fn log(&self) -> Vec<(Mt, Fate)> {
        self.state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mt
            .clone()
    }

    pub fn mt_count(&self) -> usize {
        self.state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mt
            .len()
    }

    /// Injected SMS (each one a request to a listener).
    pub fn injected(&self) -> usize {
        self.state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .injected
    }

    /// Injects an SMS that no endpoint sent (a stranger, a broken phone).
    pub fn inject(&self, from: &str, to: &str, text: &[u8], binary: bool) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push_back(Mt {
            seq: usize::MAX,
            from: from.into(),
            to: to.into(),
            text: text.to_vec(),
            coding: binary.then(|| "1".into()),
        });
        st.queued += 1;
        cv.notify_all();
    }

    /// Releases held SMS; true when nothing is held or waiting to be injected.
    fn drain(&self) -> bool {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let held: Vec<Mt> = st.held.drain(..).collect();
        for h in held {
            st.queue.push_back(h);
            st.queued += 1;
        }
        cv.notify_all();
        st.queued == st.injected
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---- Kannel ---------------------------------------------------------------------------------

/// bearerbox + smsbox with an HTTP SMSC pointing at a [`Network`], routing each phone number
/// to a listener port. Stopped by PID on drop.
pub struct Kannel {
    pub sendsms_url: String,
    pub smsc_port: u16,
    pub admin_port: u16,
    smsbox: Proc,
    bearerbox: Proc,
    pub dir: tempfile::TempDir,
}

pub const KANNEL_USER: &str = "ferry";
pub const KANNEL_PASS: &str = "secret";

impl Kannel {
    pub fn start(network: &mut Network, routes: &[(&Phone, u16)]) -> Kannel {
        let bearerbox = require("bearerbox");
        let smsbox = require("smsbox");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join("store")).unwrap();
        let (admin, boxp, sendsms, smsc) = (free_port(), free_port(), free_port(), free_port());
        let mut conf = format!(
            r#"group = core
admin-port = {admin}
admin-interface = 127.0.0.1
admin-password = adminpw
status-password = adminpw
admin-allow-ip = "127.0.0.1"
smsbox-port = {boxp}
smsbox-interface = 127.0.0.1
box-allow-ip = "127.0.0.1"
log-file = "{base}/bearerbox.log"
log-level = 0
store-type = spool
store-location = "{base}/store"

group = smsc
smsc = http
smsc-id = net
system-type = kannel
port = {smsc}
connect-allow-ip = "127.0.0.1"
smsc-username = {SMSC_USER}
smsc-password = {SMSC_PASS}
send-url = "http://127.0.0.1:{net}/mt"

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {boxp}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{base}/smsbox.log"
log-level = 0

group = sendsms-user
username = {KANNEL_USER}
password = {KANNEL_PASS}
max-messages = 1
"#,
            base = base.display(),
            net = network.port,
        );
        for (phone, port) in routes {
            conf.push_str(&format!(
                r#"
group = sms-service
keyword = default
catch-all = true
max-messages = 0
allowed-receiver-prefix = "{phone}"
get-url = "http://127.0.0.1:{port}/sms?from=%p&to=%P&text=%b&coding=%c"
"#
            ));
        }
        let conf_path = base.join("kannel.conf");
        fs::write(&conf_path, conf).unwrap();
        let bb_log = base.join("bearerbox.out");
        let mut bb = Proc::spawn(
            "bearerbox",
            Command::new(bearerbox).arg("-v").arg("1").arg(&conf_path),
            &bb_log,
        );
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let status = format!("http://127.0.0.1:{admin}/status.txt?password=adminpw");
        wait_for("bearerbox's admin port", || {
            bb.assert_running(&bb_log);
            agent.get(&status).call().is_ok()
        });
        let sb_log = base.join("smsbox.out");
        let mut sb = Proc::spawn(
            "smsbox",
            Command::new(smsbox).arg("-v").arg("1").arg(&conf_path),
            &sb_log,
        );
        network.run(smsc);
        let sendsms_url = format!("http://127.0.0.1:{sendsms}/cgi-bin/sendsms");
        wait_for("smsbox to connect and the HTTP SMSC to come online", || {
            sb.assert_running(&sb_log);
            bb.assert_running(&bb_log);
            let Ok(mut r) = agent.get(&status).call() else {
                return false;
            };
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let online = text
                .lines()
                .any(|l| l.contains("net") && l.contains("online"));
            let boxed = text.contains("smsbox:");
            online && boxed && agent.get(&sendsms_url).call().is_ok()
        });
        Kannel {
            sendsms_url,
            smsc_port: smsc,
            admin_port: admin,
            smsbox: sb,
            bearerbox: bb,
            dir,
        }
    }

    /// The end of Kannel's logs, for a failing test's output.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["bearerbox.log", "smsbox.log"] {
            let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} (last 60 lines)\n"));
            for l in &lines[lines.len().saturating_sub(60)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn config(&self, from: &Phone) -> SmsConfig {
        let mut c = SmsConfig::new(GatewayKind::Kannel, from.clone());
        c.sendsms_url = Some(self.sendsms_url.clone());
        c.username = Some(KANNEL_USER.into());
        c.daily_budget = 100_000;
        c
    }
}

// ---- endpoints -------------------------------------------------------------------------------

/// One node: its transport on a state folder, and a listener thread (with its own transport
/// on the same folder) that Kannel calls.
pub struct Endpoint {
    pub phone: Phone,
    pub sms: SmsTransport,
    pub state: tempfile::TempDir,
    pub port: u16,
    pub received: Arc<AtomicUsize>,
    pub events: Arc<Mutex<Vec<String>>>,
    listener: Option<(JoinHandle<()>, Stopper)>,
}

impl Endpoint {
    /// An endpoint without a listener (gammu, or a node that only sends).
    pub fn new(
        config: SmsConfig,
        peers: &[Peer],
        clock: &TestClock,
        password: Option<&str>,
    ) -> Endpoint {
        let state = tempfile::tempdir().unwrap();
        Endpoint::on(config, peers, clock, password, state)
    }

    pub fn on(
        config: SmsConfig,
        peers: &[Peer],
        clock: &TestClock,
        password: Option<&str>,
        state: tempfile::TempDir,
    ) -> Endpoint {
        let mut sms = SmsTransport::open_with_password(
            config.clone(),
            state.path(),
            password.map(str::to_string),
        )
        .unwrap();
        sms.set_peers(peers.iter().cloned());
        sms.set_clock(clock.clock());
        Endpoint {
            phone: config.from.clone(),
            sms,
            state,
            port: 0,
            received: Arc::new(AtomicUsize::new(0)),
            events: Arc::new(Mutex::new(Vec::new())),
            listener: None,
        }
    }

    /// Starts the listener on `port`.
    pub fn listen(
        &mut self,
        listener: Listener,
        clock: &TestClock,
        password: Option<&str>,
        answered: Arc<AtomicUsize>,
    ) {
        self.port = listener.local_addr().port();
        let stopper = listener.stopper();
        let mut t = SmsTransport::open_with_password(
            self.sms.config().clone(),
            self.state.path(),
            password.map(str::to_string),
        )
        .unwrap();
        t.set_peers(self.sms.peers().iter().cloned());
        t.set_clock(clock.clock());
        let (received, events) = (self.received.clone(), self.events.clone());
        let handle = std::thread::spawn(move || {
            // An SMS counts as answered once the listener is done with it, including
            // sending the parts a repair request asked for.
            let mut repairing = false;
            listener
                .run(&mut t, |_, e| {
                    let done = match &e {
                        Event::Received(Accepted::RepairRequested { .. }) => {
                            repairing = true;
                            false
                        }
                        Event::Received(_) => true,
                        Event::Flushed(_) | Event::Failed(_) if repairing => {
                            repairing = false;
                            true
                        }
                        _ => false,
                    };
                    if done {
                        received.fetch_add(1, Ordering::SeqCst);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Event::Failed(err) = &e {
                        eprintln!("listener: {err}");
                    }
                    events.lock().unwrap().push(format!("{e:?}"));
                })
                .unwrap();
        });
        self.listener = Some((handle, stopper));
    }

    pub fn sent_total(&self) -> u64 {
        self.sms
            .counters()
            .unwrap()
            .iter()
            .map(|c| c.sent_total)
            .sum()
    }

    /// The messages in the mailbox, as bytes.
    pub fn inbox(&mut self) -> Vec<Vec<u8>> {
        use ferry_transport::Transport;
        use std::io::Read;
        let ids: Vec<_> = self.sms.list().unwrap().into_iter().map(|m| m.id).collect();
        ids.iter()
            .map(|id| {
                let mut v = Vec::new();
                self.sms.open(id).unwrap().read_to_end(&mut v).unwrap();
                v
            })
            .collect()
    }

    pub fn stop_listener(&mut self) {
        if let Some((handle, stopper)) = self.listener.take() {
            stopper.stop();
            handle.join().unwrap();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop_listener();
    }
}

/// Waits until the network has seen `expected_mt` SMS from Kannel, every held SMS was
/// released and injected, and every injected SMS was answered by a listener.
pub fn settle(net: &Network, answered: &AtomicUsize, mut expected_mt: impl FnMut() -> usize) {
    let start = Instant::now();
    loop {
        let done = net.mt_count() >= expected_mt()
            && net.drain()
            && answered.load(Ordering::SeqCst) == net.injected()
            && net.mt_count() >= expected_mt();
        if done {
            return;
        }
        if start.elapsed() > PATIENCE {
            let st = net.state.0.lock().unwrap_or_else(|e| e.into_inner());
            panic!(
                "the SMS network did not settle: Kannel handed over {} SMS of {} sent, {} queued for injection, {} injected, {} answered by listeners",
                st.mt.len(),
                expected_mt(),
                st.queued,
                st.injected,
                answered.load(Ordering::SeqCst)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kannel, the network and endpoints that all know each other, each with a listener.
pub struct World {
    pub endpoints: Vec<Endpoint>,
    pub kannel: Kannel,
    pub net: Arc<Network>,
    pub clock: TestClock,
    pub answered: Arc<AtomicUsize>,
    /// Dropped last, once Kannel has stopped.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

pub fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

impl World {
    pub fn new(numbers: &[&str], tweak: impl Fn(&mut SmsConfig)) -> World {
        // One Kannel at a time: the machine has two cores, and free ports stay free.
        static ONE: Mutex<()> = Mutex::new(());
        let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let phones: Vec<Phone> = numbers.iter().map(|n| phone(n)).collect();
        let listeners: Vec<Listener> = phones
            .iter()
            .map(|_| Listener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().port()).collect();
        let mut net = Network::start();
        let routes: Vec<(&Phone, u16)> = phones.iter().zip(ports.iter().copied()).collect();
        let kannel = Kannel::start(&mut net, &routes);
        let net = Arc::new(net);
        let clock = TestClock::default();
        let answered = Arc::new(AtomicUsize::new(0));
        let peers: Vec<Peer> = phones
            .iter()
            .enumerate()
            .map(|(i, p)| Peer::new(p.clone(), format!("node-{i}")))
            .collect();
        let mut endpoints = Vec::new();
        for (p, listener) in phones.iter().zip(listeners) {
            let mut config = kannel.config(p);
            config.housekeeping_seconds = 24 * 3600;
            tweak(&mut config);
            let others: Vec<Peer> = peers.iter().filter(|q| &q.phone != p).cloned().collect();
            let mut ep = Endpoint::new(config, &others, &clock, Some(KANNEL_PASS));
            ep.listen(listener, &clock, Some(KANNEL_PASS), answered.clone());
            endpoints.push(ep);
        }
        World {
            endpoints,
            _one_at_a_time: guard,
            kannel,
            net,
            clock,
            answered,
        }
    }

    /// Waits until everything the endpoints sent has been delivered or dropped.
    pub fn settle(&self) {
        settle(&self.net, &self.answered, || {
            self.endpoints.iter().map(|e| e.sent_total()).sum::<u64>() as usize
        });
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.kannel.log_tail());
            for e in &self.endpoints {
                eprintln!("--- events of {}:", e.phone);
                for ev in e.events.lock().unwrap().iter() {
                    eprintln!("{ev}");
                }
            }
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---- Gammu SMSD -----------------------------------------------------------------------------

/// gammu-smsd with a dummy phone and the files service, in its own folder; stopped by PID
/// on drop.
pub struct Gammu {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    pub outbox: PathBuf,
    pub sent: PathBuf,
    pub error: PathBuf,
    pub phone_inbox: PathBuf,
    next_location: AtomicUsize,
    proc: Proc,
}

impl Gammu {
    pub fn start() -> Gammu {
        let smsd = require("gammu-smsd");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for d in ["dummy", "inbox", "outbox", "sent", "error"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        let rc = base.join("gammurc");
        fs::write(
            &rc,
            format!(
                "[gammu]\ndevice = {b}/dummy\nmodel = dummy\nconnection = none\n\n[smsd]\nservice = files\n\
                 inboxpath = {b}/inbox/\noutboxpath = {b}/outbox/\nsentsmspath = {b}/sent/\n\
                 errorsmspath = {b}/error/\nlogfile = {b}/smsd.log\ndebuglevel = 1\n\
                 ReceiveFrequency = 1\nCommTimeout = 1\nStatusFrequency = 0\nCheckSecurity = 0\n\
                 CheckBattery = 0\nCheckSignal = 0\nCheckNetwork = 0\n",
                b = base.display()
            ),
        )
        .unwrap();
        let log = base.join("smsd.out");
        let mut proc = Proc::spawn("gammu-smsd", Command::new(smsd).arg("-c").arg(&rc), &log);
        let phone_inbox = base.join("dummy/sms/1");
        wait_for("gammu-smsd to create its dummy phone", || {
            proc.assert_running(&log);
            phone_inbox.is_dir()
                && fs::read_to_string(base.join("smsd.log"))
                    .unwrap_or_default()
                    .contains("Starting phone communication")
        });
        Gammu {
            inbox: base.join("inbox"),
            outbox: base.join("outbox"),
            sent: base.join("sent"),
            error: base.join("error"),
            phone_inbox,
            next_location: AtomicUsize::new(1),
            proc,
            dir,
        }
    }

    pub fn config(&self, from: &Phone) -> SmsConfig {
        let mut c = SmsConfig::new(GatewayKind::Gammu, from.clone());
        c.outbox = Some(self.outbox.clone());
        c.inbox = Some(self.inbox.clone());
        c.daily_budget = 100_000;
        c
    }

    /// Puts an incoming SMS on the dummy phone's SIM, as the network would deliver it.
    pub fn deliver(&self, from: &str, body: &GammuBody) {
        let (hex, coding, len) = match body {
            GammuBody::Text(t) => (
                t.encode_utf16()
                    .map(|u| format!("{u:04X}"))
                    .collect::<String>(),
                "Default_No_Compression",
                t.chars().count(),
            ),
            GammuBody::Binary(b) => (
                b.iter().map(|x| format!("{x:02X}")).collect::<String>(),
                "8bit",
                b.len(),
            ),
        };
        let loc = self.next_location.fetch_add(1, Ordering::SeqCst);
        let content = format!(
            "[SMSBackup000]\nPDU = Deliver\nDateTime = 20261122T052902Z\nState = UnRead\nNumber = \"{from}\"\n\
             SMSC = \"+15550000\"\nText00 = {hex}\nCoding = {coding}\nFolder = 1\nLength = {len}\nClass = -1\n"
        );
        let tmp = self.dir.path().join(format!("loc-{loc}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, self.phone_inbox.join(loc.to_string())).unwrap();
    }

    /// The SMS gammu-smsd has transmitted (moved to `sent/`) that the test has not taken
    /// yet: (file name, recipient, body).
    pub fn take_sent(
        &self,
        seen: &mut std::collections::HashSet<String>,
    ) -> Vec<(String, String, GammuBody)> {
        let mut names: Vec<String> = fs::read_dir(&self.sent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("OUT") && !seen.contains(n))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let content = fs::read(self.sent.join(&n)).unwrap();
            // OUT<prio><date>_<time>_<serial>_<recipient>_<note>.<ext>
            let to = n.split('_').nth(3).unwrap_or_default().to_string();
            let body = if n.ends_with(".smsbackup") {
                let text = String::from_utf8(content).unwrap();
                let hex = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Text00 = "))
                    .unwrap()
                    .to_string();
                GammuBody::Binary(
                    (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                        .collect(),
                )
            } else {
                GammuBody::Text(String::from_utf8(content).unwrap())
            };
            seen.insert(n.clone());
            out.push((n, to, body));
        }
        out
    }

    pub fn assert_running(&mut self) {
        let log = self.dir.path().join("smsd.out");
        self.proc.assert_running(&log);
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("smsd.log")).unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GammuBody {
    Text(String),
    Binary(Vec<u8>),
}
