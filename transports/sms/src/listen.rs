//! The HTTP listener an SMS gateway calls for each incoming SMS (`ferry sms listen`).
//!
//! The gateway calls `GET /sms?from=…&to=…&text=…` (or `POST /sms` with the same
//! parameters as a form, or as a JSON object with `from`, `to` and `text` or `message`). An
//! optional `coding` parameter says how to read `text`: `1` is an 8-bit binary SMS, `2`
//! UCS-2 (UTF-16BE), anything else text in UTF-8. The listener answers `200` only once the
//! SMS is on disk ([`SmsTransport::accept`]); `500` when it could not be stored, so the
//! gateway tries again; `400` when `from` or `text` is missing. For Kannel:
//!
//! ```text
//! group = sms-service
//! keyword = default
//! catch-all = true
//! max-messages = 0
//! get-url = "http://127.0.0.1:18080/sms?from=%p&to=%P&text=%b&coding=%c"
//! ```
//!
//! (`text=%a` works too for text SMS; `%b` also carries binary ones.) Between requests,
//! every `housekeeping_seconds`, the listener asks for missing parts, expires what never
//! completed and sends what waits in the queue.

use crate::error::SmsError;
use crate::gateway::{SmsBody, form_pairs};
use crate::http::{self, HttpRequest, HttpResponse};
use crate::sms::{Accepted, FlushReport, IncomingSms, RepairRequest, Report, SmsTransport};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the listener did, for the caller to show or act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// One incoming SMS was taken (a part stored, a message completed, a repair request
    /// answered, or the SMS refused and kept aside).
    Received(Accepted),
    /// Missing parts were asked for.
    Repairs(Vec<RepairRequest>),
    /// Incomplete messages were given up.
    Expired(Vec<Report>),
    /// Queued SMS were sent.
    Flushed(FlushReport),
    /// Something failed; the listener goes on (an SMS it could not store was answered with
    /// 500, so the gateway will offer it again).
    Failed(SmsError),
}

/// An HTTP listener bound to an address; [`Listener::run`] serves it.
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
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
                    .map_err(|e| HttpResponse::new(400, format!("the body is not JSON: {e}\n")))?;
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

/// How long a gateway's request may wait for the transport (busy sending a queue, say).
const ANSWER_WAIT: Duration = Duration::from_secs(120);

impl Listener {
    /// Listens on `addr` (`127.0.0.1:18080`; port 0 picks a free one). Connections wait
    /// until [`Listener::run`] serves them.
    pub fn bind(addr: &str) -> Result<Listener, SmsError> {
        let bind_err = |reason: String| SmsError::Bind {
            addr: addr.to_string(),
            reason,
        };
        let listener = TcpListener::bind(addr).map_err(|e| bind_err(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| bind_err(e.to_string()))?;
        Ok(Listener {
            listener,
            addr: local,
            stop: Arc::new(AtomicBool::new(false)),
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

    /// Serves requests until stopped: stores each incoming SMS through `transport`, answers
    /// the gateway, then calls `on_event` (which may open and settle completed messages
    /// through the transport it is given). Sends repaired parts right after answering a
    /// repair request, and runs housekeeping every `housekeeping_seconds`. Errors along the
    /// way are reported as [`Event::Failed`] and the listener goes on.
    pub fn run(
        self,
        transport: &mut SmsTransport,
        mut on_event: impl FnMut(&mut SmsTransport, Event),
    ) -> Result<(), SmsError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let handler: http::Handler = Arc::new(move |req: HttpRequest| {
            let sms = match parse_request(&req) {
                Ok(sms) => sms,
                Err(resp) => return resp,
            };
            let (answer, answered) = mpsc::sync_channel(1);
            if jobs.send(Job { sms, answer }).is_err() {
                return HttpResponse::new(503, "the listener is stopping; try again\n");
            }
            answered
                .recv_timeout(ANSWER_WAIT)
                .unwrap_or_else(|_| HttpResponse::new(503, "busy; try again\n"))
        });
        let addr = self.addr;
        let stop = self.stop.clone();
        let server = http::serve(self.listener, self.stop.clone(), handler);
        let every = Duration::from_secs(transport.config().housekeeping_seconds.max(1));
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            match inbox.recv_timeout(Duration::from_millis(250)) {
                Ok(job) => match transport.accept(&job.sms) {
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
                            .send(HttpResponse::new(500, format!("not stored: {e}\n")));
                        on_event(transport, Event::Failed(e));
                    }
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last.elapsed() >= every {
                last = Instant::now();
                housekeeping(transport, &mut on_event);
            }
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
}

/// `ferry sms listen`: binds `bind` (or the configured `listen` address) and serves until
/// `stopper` — handed to `ready` once bound, so a Ctrl-C handler can hold it — is used.
pub fn listen(
    transport: &mut SmsTransport,
    bind: Option<&str>,
    ready: impl FnOnce(SocketAddr, Stopper),
    on_event: impl FnMut(&mut SmsTransport, Event),
) -> Result<(), SmsError> {
    let addr = bind
        .map(str::to_string)
        .or_else(|| transport.config().listen.clone())
        .ok_or_else(|| SmsError::Config {
            setting: "listen",
            problem: "no address to listen on: set listen = \"127.0.0.1:18080\" or pass --bind"
                .into(),
        })?;
    let listener = Listener::bind(&addr)?;
    ready(listener.local_addr(), listener.stopper());
    listener.run(transport, on_event)
}
