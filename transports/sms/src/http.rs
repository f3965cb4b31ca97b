//! A small blocking HTTP/1.1 server for the listener: one thread per connection, one
//! request per connection (`Connection: close`), requests parsed by `httparse`.
//!
//! Gateways make one short request per SMS, so keep-alive buys nothing here, and closing
//! each connection means a gateway that holds connections open can never starve the
//! others. (tiny_http 0.12, tried first, serves keep-alive connections from a thread pool
//! in which a connection accepted at the wrong moment waited until another one closed.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
const MAX_BODY: usize = 256 * 1024;
/// Most connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a slow client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One request.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One answer: a status and a plain-text body.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn new(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            body: body.into(),
        }
    }
}

pub(crate) type Handler = Arc<dyn Fn(HttpRequest) -> HttpResponse + Send + Sync>;

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(stream: &mut TcpStream, resp: &HttpResponse) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(resp.body.as_bytes()))
        .and_then(|()| stream.flush());
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn bad(status: u16, text: &str) -> HttpResponse {
    HttpResponse::new(status, format!("{text}\n"))
}

/// Reads one request, or the answer to give when it cannot be read.
fn read_request(stream: &mut TcpStream) -> Result<HttpRequest, HttpResponse> {
    let mut buf = Vec::new();
    let (head_len, method, target, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                break (
                    n,
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    headers,
                );
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(bad(431, "request head too large"));
                }
                match fill(stream, &mut buf) {
                    Ok(0) | Err(_) => return Err(bad(400, "incomplete request")),
                    Ok(_) => {}
                }
            }
            Err(e) => return Err(bad(400, &format!("malformed request: {e}"))),
        }
    };
    let mut req = HttpRequest {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut rest = buf.split_off(head_len);
    let chunked = req
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            match httparse::parse_chunk_size(&rest) {
                Ok(httparse::Status::Complete((used, size))) => {
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    if size == 0 {
                        break;
                    }
                    if req.body.len().saturating_add(size) > MAX_BODY {
                        return Err(bad(413, "request body too large"));
                    }
                    while rest.len() < used + size + 2 {
                        match fill(stream, &mut rest) {
                            Ok(0) | Err(_) => return Err(bad(400, "incomplete chunked body")),
                            Ok(_) => {}
                        }
                    }
                    req.body.extend_from_slice(&rest[used..used + size]);
                    rest.drain(..used + size + 2);
                }
                Ok(httparse::Status::Partial) => {
                    if rest.len() > MAX_HEAD {
                        return Err(bad(400, "bad chunk size"));
                    }
                    match fill(stream, &mut rest) {
                        Ok(0) | Err(_) => return Err(bad(400, "incomplete chunked body")),
                        Ok(_) => {}
                    }
                }
                Err(_) => return Err(bad(400, "bad chunk size")),
            }
        }
    } else if let Some(len) = req.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad(400, "bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad(413, "request body too large"));
        }
        while rest.len() < len {
            match fill(stream, &mut rest) {
                Ok(0) | Err(_) => return Err(bad(400, "incomplete body")),
                Ok(_) => {}
            }
        }
        rest.truncate(len);
        req.body = rest;
    }
    Ok(req)
}

fn serve_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let resp = match read_request(&mut stream) {
        Ok(req) => handler(req),
        Err(resp) => resp,
    };
    write_response(&mut stream, &resp);
    let _ = stream.shutdown(Shutdown::Write);
    // Let the client read the answer and close first, so it never sees a reset.
    let mut sink = [0u8; 512];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// Accepts connections on `listener` until `stop` is set (and a connection wakes the
/// accept), serving each on its own thread.
pub(crate) fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handler: Handler,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut stream) = conn else {
                // Out of file descriptors, say: wait a little rather than spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                write_response(&mut stream, &bad(503, "busy; try again"));
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (handler, active) = (handler.clone(), active.clone());
            std::thread::spawn(move || {
                serve_connection(stream, &handler);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    })
}

/// Wakes an accept loop blocked on `addr` (after its stop flag was set).
pub(crate) fn wake(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `raw` to a server that echoes method, target and body; returns the answer.
    fn exchange(raw: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(|req: HttpRequest| {
            HttpResponse::new(
                200,
                format!(
                    "{} {} {}",
                    req.method,
                    req.target,
                    String::from_utf8_lossy(&req.body)
                ),
            )
        });
        let server = serve(listener, stop.clone(), handler);
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(raw).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        stop.store(true, Ordering::SeqCst);
        wake(addr);
        server.join().unwrap();
        out
    }

    #[test]
    fn reads_what_gateways_send() {
        let get = exchange(
            b"GET /sms?from=1&text=a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("Connection: close"));
        assert!(get.ends_with("GET /sms?from=1&text=a "));
        let post = exchange(b"POST /sms HTTP/1.1\r\nContent-Length: 11\r\n\r\nfrom=1&t=ab");
        assert!(post.ends_with("POST /sms from=1&t=ab"), "{post}");
        let chunked = exchange(
            b"POST /sms HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nfrom=\r\n3\r\n1&t\r\n0\r\n\r\n",
        );
        assert!(
            chunked.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{chunked}"
        );
        assert!(chunked.ends_with("POST /sms from=1&t"), "{chunked}");
        let garbage = exchange(b"\x00\x01 nonsense\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let huge = exchange(b"POST /sms HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n");
        assert!(huge.starts_with("HTTP/1.1 413 "), "{huge}");
    }
}
