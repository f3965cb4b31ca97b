//! The HTTP listener an SMS gateway calls for each incoming SMS (`ferry sms listen`).
//!
//! The gateway calls `GET /sms?from=…&to=…&text=…` (or `POST /sms` with the same
//! parameters as a form, or as a JSON object with `from`, `to` and `text` or `message`). An
//! optional `coding` parameter says how to read `text`: `1` is an 8-bit binary SMS, `2`
//! UCS-2 (UTF-16BE), anything else text in UTF-8. The listener answers `200` once the SMS
//! is taken ([`SmsTransport::accept`]: a member's part is on disk; what is not ferry's is
//! noted, or dropped when strangers send too much); `500` when it could not be stored, so
//! the gateway tries again; `503` when members' SMS queue up beyond 256 (the gateway tries
//! again); `400` when `from` or `text` is missing; `401` without the token the policy
//! requires. For Kannel:
//!
//! ```text
//! group = sms-service
//! keyword = default
//! catch-all = true
//! max-messages = 0
//! get-url = "http://127.0.0.1:18080/sms?from=%p&to=%P&text=%b&coding=%c"
//! ```
//!
//! (`text=%a` works too for text SMS; `%b` also carries binary ones; add `&token=…` when a
//! token is set.) Who may call it is decided by the [`ListenPolicy`]: loopback by default,
//! beyond loopback only with a token and TLS.
//!
//! **SMS from members' numbers go first.** Each request is read on its own thread, which
//! hands the SMS to the one thread that runs the transport through two queues: one for
//! members' published numbers, served first and taking turns per number, and a short one
//! (64) for every other number, whose requests are also limited per address
//! (`listen_rate` a second, bursts of five times that); beyond either, a stranger's SMS is
//! dropped unread (and answered 200, so that no gateway offers it again or answers its
//! sender). So a flood of junk from strangers, even through the gateway itself, delays a
//! member's SMS by at most the one SMS being handled. Between requests, every `housekeeping_seconds`, the listener
//! asks members for missing parts, expires what never completed and sends what waits in
//! the queue.

use crate::error::SmsError;
use crate::gateway::{SmsBody, form_pairs};
use crate::http::{self, HttpRequest, HttpResponse, PerSource};
use crate::phone::Phone;
use crate::policy::ListenPolicy;
use crate::sms::{Accepted, FlushReport, IncomingSms, RepairRequest, Report, SmsTransport};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

/// What the listener did, for the caller to show or act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// One incoming SMS was taken (a part stored, a message completed, a repair request
    /// answered, or the SMS refused and noted).
    Received(Accepted),
    /// Missing parts were asked for.
    Repairs(Vec<RepairRequest>),
    /// Incomplete messages were given up.
    Expired(Vec<Report>),
    /// Queued SMS were sent.
    Flushed(FlushReport),
    /// A housekeeping round ended (held messages may have been offered, reports written).
    Housekept,
    /// SMS from numbers that are no member's were dropped unread since the last round
    /// (beyond `listen_rate` from one address, or while their short queue was full). They
    /// were answered 200 all the same, so no gateway offers them again or answers them.
    Dropped(u64),
    /// Something failed; the listener goes on (an SMS it could not store was answered with
    /// 500, so the gateway will offer it again).
    Failed(SmsError),
}

/// Where a listener listens, and what it requires ([`listen`] hands it to `ready`).
#[derive(Clone, Debug)]
pub struct Listening {
    /// The bound address.
    pub addr: SocketAddr,
    /// Whether it speaks HTTPS.
    pub tls: bool,
    /// Whether requests must present a token.
    pub token: bool,
    /// Stops it.
    pub stopper: Stopper,
}

/// An HTTP listener bound to an address; [`Listener::run`] serves it.
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    policy: ListenPolicy,
}

/// Stops a running [`Listener`] from another thread (a Ctrl-C handler, a test).
#[derive(Clone, Debug)]
pub struct Stopper {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Stopper {
    /// Makes [`Listener::run`] return after the request it is serving, if any.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        http::wake(self.addr);
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("policy", &self.policy)
            .finish()
    }
}

fn utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Reads one gateway request into an SMS, or the answer for a request that is not one.
fn parse_request(req: &HttpRequest) -> Result<IncomingSms, HttpResponse> {
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));
    if path != "/sms" && path != "/sms/" {
        return Err(HttpResponse::new(404, "not found: gateways call /sms\n"));
    }
    let mut params = form_pairs(query);
    match req.method.as_str() {
        "GET" => {}
        "POST" => {
            let json = req
                .header("Content-Type")
                .is_some_and(|v| v.contains("json"));
            if json {
                let v: serde_json::Value = serde_json::from_slice(&req.body)
                    .map_err(|_| HttpResponse::new(400, "the body is not JSON\n"))?;
                for key in ["from", "to", "text", "message", "coding"] {
                    match v.get(key) {
                        Some(serde_json::Value::String(s)) => {
                            params.push((key.to_string(), s.clone().into_bytes()));
                        }
                        Some(serde_json::Value::Number(n)) => {
                            params.push((key.to_string(), n.to_string().into_bytes()));
                        }
                        _ => {}
                    }
                }
            } else {
                params.extend(form_pairs(&String::from_utf8_lossy(&req.body)));
            }
        }
        _ => return Err(HttpResponse::new(405, "use GET or POST\n")),
    }
    let get = |names: &[&str]| {
        params
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let (Some(from), Some(text)) = (get(&["from"]), get(&["text", "message"])) else {
        return Err(HttpResponse::new(
            400,
            "need the parameters from and text\n",
        ));
    };
    let coding = get(&["coding"]).map(|c| String::from_utf8_lossy(&c).trim().to_string());
    let body = match coding.as_deref() {
        Some("1") => SmsBody::Binary(text),
        Some("2") => SmsBody::Text(utf16be(&text)),
        _ => SmsBody::Text(String::from_utf8_lossy(&text).into_owned()),
    };
    Ok(IncomingSms {
        from: String::from_utf8_lossy(&from).into_owned(),
        to: get(&["to"]).map(|t| String::from_utf8_lossy(&t).into_owned()),
        body,
    })
}

/// An SMS handed from a connection's thread to the thread that runs the listener, and
/// where to send the answer.
struct Job {
    sms: IncomingSms,
    answer: mpsc::SyncSender<HttpResponse>,
}

/// The queues: members' SMS first, taking turns per number (so a flood that claims one
/// member's number delays another member's SMS by at most one SMS of it), then the others.
#[derive(Default)]
struct Jobs {
    members: BTreeMap<String, VecDeque<Job>>,
    turns: VecDeque<String>,
    member_jobs: usize,
    others: VecDeque<Job>,
    closed: bool,
}

impl Jobs {
    fn push_member(&mut self, number: String, job: Job) -> bool {
        let q = self.members.entry(number.clone()).or_default();
        if self.member_jobs >= MEMBER_QUEUE || q.len() >= PER_NUMBER_QUEUE {
            return false;
        }
        if q.is_empty() {
            self.turns.push_back(number);
        }
        q.push_back(job);
        self.member_jobs += 1;
        true
    }

    fn push_other(&mut self, job: Job) -> bool {
        if self.others.len() >= OTHER_QUEUE {
            return false;
        }
        self.others.push_back(job);
        true
    }

    fn pop(&mut self) -> Option<Job> {
        if let Some(number) = self.turns.pop_front() {
            let q = self.members.get_mut(&number).expect("a turn has a queue");
            let job = q.pop_front();
            if q.is_empty() {
                self.members.remove(&number);
            } else {
                self.turns.push_back(number);
            }
            self.member_jobs -= 1;
            return job;
        }
        self.others.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.member_jobs == 0 && self.others.is_empty()
    }
}

/// Members' SMS waiting at most (beyond, 503 and the gateway tries again).
const MEMBER_QUEUE: usize = 256;
/// One member number's SMS waiting at most.
const PER_NUMBER_QUEUE: usize = 64;
/// Other numbers' SMS waiting at most.
const OTHER_QUEUE: usize = 64;
/// How long a gateway's request may wait for the transport (busy sending a queue, say).
const ANSWER_WAIT: Duration = Duration::from_secs(120);

/// Members' numbers (digits), as the connection threads see them.
type Members = Arc<RwLock<HashSet<String>>>;

fn members_of(t: &SmsTransport) -> HashSet<String> {
    t.peers()
        .iter()
        .map(|p| p.phone.digits().to_string())
        .collect()
}

impl Listener {
    /// Listens on `addr` (`127.0.0.1:18080`; port 0 picks a free one) with the loopback
    /// policy (no token, no TLS; refused for an address beyond loopback). Connections wait
    /// until [`Listener::run`] serves them.
    pub fn bind(addr: &str) -> Result<Listener, SmsError> {
        let policy = crate::policy::decide(addr, None, None, None)?;
        Listener::bind_with(policy)
    }

    /// Listens as `policy` says.
    pub fn bind_with(policy: ListenPolicy) -> Result<Listener, SmsError> {
        let bind_err = |reason: String| SmsError::Bind {
            addr: policy.addr.to_string(),
            reason,
        };
        let listener = TcpListener::bind(policy.addr).map_err(|e| bind_err(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| bind_err(e.to_string()))?;
        let mut policy = policy;
        policy.addr = local;
        Ok(Listener {
            listener,
            addr: local,
            stop: Arc::new(AtomicBool::new(false)),
            policy,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops [`Listener::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            addr: self.addr,
            stop: self.stop.clone(),
        }
    }

    fn listening(&self) -> Listening {
        Listening {
            addr: self.addr,
            tls: self.policy.tls.is_some(),
            token: self.policy.token.is_some(),
            stopper: self.stopper(),
        }
    }

    /// Serves requests until stopped: takes each incoming SMS through `transport`
    /// (members' numbers first), answers the gateway, then calls `on_event` (which may
    /// open and settle completed messages, and change the peers, through the transport it
    /// is given). Sends repaired parts right after answering a repair request, and runs
    /// housekeeping every `housekeeping_seconds`. Errors along the way are reported as
    /// [`Event::Failed`] and the listener goes on.
    pub fn run(
        self,
        transport: &mut SmsTransport,
        mut on_event: impl FnMut(&mut SmsTransport, Event),
    ) -> Result<(), SmsError> {
        let queues = Arc::new((Mutex::new(Jobs::default()), Condvar::new()));
        let members: Members = Arc::new(RwLock::new(members_of(transport)));
        let rate = f64::from(transport.config().listen_rate.max(1));
        let strangers = Arc::new(Mutex::new(PerSource::new(5.0 * rate, rate)));
        let dropped = Arc::new(AtomicU64::new(0));
        let handler: http::Handler = {
            let (queues, members, dropped) = (queues.clone(), members.clone(), dropped.clone());
            Arc::new(move |req: HttpRequest| {
                let sms = match parse_request(&req) {
                    Ok(sms) => sms,
                    Err(resp) => return resp,
                };
                let member_number = Phone::parse(&sms.from)
                    .ok()
                    .map(|p| p.digits().to_string())
                    .filter(|d| {
                        members
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(d)
                    });
                // Beyond the rate, or the short queue, a stranger's SMS is dropped, and
                // answered 200 all the same: an error would make a gateway offer it again,
                // and Kannel answer its sender with an SMS of its own ("Request Failed").
                if member_number.is_none()
                    && !strangers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take(req.source)
                {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return HttpResponse::new(
                        200,
                        "dropped: too many SMS from numbers that are no member's\n",
                    );
                }
                let (answer, answered) = mpsc::sync_channel(1);
                {
                    let (lock, cv) = &*queues;
                    let mut jobs = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if jobs.closed {
                        return HttpResponse::new(503, "the listener is stopping; try again\n");
                    }
                    let member = member_number.is_some();
                    let queued = match member_number {
                        Some(number) => jobs.push_member(number, Job { sms, answer }),
                        None => jobs.push_other(Job { sms, answer }),
                    };
                    if !queued && !member {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return HttpResponse::new(
                            200,
                            "dropped: busy with SMS from numbers that are no member's\n",
                        );
                    }
                    if !queued {
                        return HttpResponse::new(503, "busy; try again\n");
                    }
                    cv.notify_one();
                }
                answered
                    .recv_timeout(ANSWER_WAIT)
                    .unwrap_or_else(|_| HttpResponse::new(503, "busy; try again\n"))
            })
        };
        let addr = self.addr;
        let stop = self.stop.clone();
        let server = http::serve(self.listener, self.stop.clone(), self.policy, handler);
        let every = Duration::from_secs(transport.config().housekeeping_seconds.max(1));
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let job = {
                let (lock, cv) = &*queues;
                let mut jobs = lock.lock().unwrap_or_else(|e| e.into_inner());
                if jobs.is_empty() {
                    jobs = cv
                        .wait_timeout(jobs, Duration::from_millis(250))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                jobs.pop()
            };
            if let Some(job) = job {
                match transport.accept(&job.sms) {
                    Ok(accepted) => {
                        let _ = job.answer.send(HttpResponse::new(200, "stored\n"));
                        let repair = matches!(accepted, Accepted::RepairRequested { .. });
                        on_event(transport, Event::Received(accepted));
                        if repair {
                            match transport.flush_queue() {
                                Ok(r) => on_event(transport, Event::Flushed(r)),
                                Err(e) => on_event(transport, Event::Failed(e)),
                            }
                        }
                    }
                    Err(e) => {
                        let _ = job
                            .answer
                            .send(HttpResponse::new(500, "not stored; try again\n"));
                        on_event(transport, Event::Failed(e));
                    }
                }
                *members.write().unwrap_or_else(|e| e.into_inner()) = members_of(transport);
            }
            if last.elapsed() >= every {
                last = Instant::now();
                let n = dropped.swap(0, Ordering::Relaxed);
                if n > 0 {
                    on_event(transport, Event::Dropped(n));
                }
                housekeeping(transport, &mut on_event);
                *members.write().unwrap_or_else(|e| e.into_inner()) = members_of(transport);
            }
        }
        {
            let (lock, _) = &*queues;
            let mut jobs = lock.lock().unwrap_or_else(|e| e.into_inner());
            jobs.closed = true;
            while jobs.pop().is_some() {}
        }
        stop.store(true, Ordering::SeqCst);
        http::wake(addr);
        let _ = server.join();
        Ok(())
    }
}

/// One round of the listener's housekeeping: repair requests, expiry, the queue.
fn housekeeping(transport: &mut SmsTransport, on_event: &mut impl FnMut(&mut SmsTransport, Event)) {
    match transport.request_missing() {
        Ok(r) if !r.is_empty() => on_event(transport, Event::Repairs(r)),
        Ok(_) => {}
        Err(e) => on_event(transport, Event::Failed(e)),
    }
    match transport.expire() {
        Ok(r) if !r.is_empty() => on_event(transport, Event::Expired(r)),
        Ok(_) => {}
        Err(e) => on_event(transport, Event::Failed(e)),
    }
    match transport.flush_queue() {
        Ok(r) if r.sent > 0 => on_event(transport, Event::Flushed(r)),
        Ok(_) => {}
        Err(e) => on_event(transport, Event::Failed(e)),
    }
    on_event(transport, Event::Housekept);
}

/// `ferry sms listen`: decides the policy for `bind` (or the configured `listen` address)
/// from the `[sms]` settings (`listen_token_env`, `tls_cert`, `tls_key`), binds, and
/// serves until the stopper handed to `ready` once bound is used.
pub fn listen(
    transport: &mut SmsTransport,
    bind: Option<&str>,
    ready: impl FnOnce(&Listening),
    on_event: impl FnMut(&mut SmsTransport, Event),
) -> Result<(), SmsError> {
    let config = transport.config();
    let addr = bind
        .map(str::to_string)
        .or_else(|| config.listen.clone())
        .ok_or_else(|| SmsError::Config {
            setting: "listen",
            problem: "no address to listen on: set listen = \"127.0.0.1:18080\" or pass --bind"
                .into(),
        })?;
    let policy = crate::policy::decide(
        &addr,
        config.listen_token_env.as_deref(),
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
    )?;
    let listener = Listener::bind_with(policy)?;
    ready(&listener.listening());
    listener.run(transport, on_event)
}
