//! `ferry serve`: one long-running process per home that holds the node open and offers the
//! apps built on it a local HTTP/JSON API (`/v1/…`, described by `GET /v1/openapi.json`):
//! records (list, get, replace, patch, delete), batches that apply all or nothing, a feed
//! of changes — local writes and changes that came from other laptops — by long-poll or
//! Server-Sent Events, conflicts, status, members, and a sync with a folder.
//!
//! The node is synchronous (SQLite); the server runs each call on tokio's blocking pool
//! under one lock, so requests are served in turn while the runtime keeps connections,
//! feeds and time-outs moving. A watcher notices changes other processes make to the same
//! home (a `ferry import` in a terminal) and wakes the feeds.
//!
//! Access: the server listens on loopback only; every request carries
//! `Authorization: Bearer TOKEN` with the home's token ([`ferry_node::Home::api_token`]),
//! read again for each request so a rotation takes effect at once; a `Host` header that
//! does not name the loopback address is refused (a web page elsewhere cannot reach the API
//! through a name it controls).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod apps;
mod error;
mod openapi;
mod page;
mod runs;
mod schedule;
mod tls;
mod writes;

pub use error::ServeError;
pub use runs::{KEEP_RUNS, Run};
pub use schedule::{Carrier, Every, RETRY_FIRST, RETRY_MOST, next_delay, serial_device};

use ferry_node::{Cursor, Home, Node};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The largest request body (a batch of writes), in bytes.
pub const MAX_BODY: usize = 32 << 20;

/// How often the watcher looks for changes made by other processes on the same home.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// How `ferry serve` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen: loopback, or beyond it with `tls` and `remote`.
    pub bind: SocketAddr,
    /// HTTPS (required beyond loopback; see [`ferry_listen`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The user's explicit yes to an address other computers reach.
    pub remote: bool,
    /// Folders to watch for sticks (see [`runs`](crate::Run)): each, and each folder
    /// directly in it, is synced when it appears holding a `ferry/` folder.
    pub watch: Vec<PathBuf>,
    /// Carriers to run on a schedule, with back-off after failures ([`next_delay`]).
    pub every: Vec<Every>,
    /// A serial device to exchange over each time it appears.
    pub serial: Option<PathBuf>,
}

/// Where the server tells what it did by itself (a stick synced, safe to remove).
pub type OnEvent = Arc<dyn Fn(&str) + Send + Sync>;

/// What a started server tells its caller.
#[derive(Clone, Debug)]
pub struct Ready {
    /// The address it listens on (the port chosen when the options gave 0).
    pub addr: SocketAddr,
    /// Where this computer reaches it: `http://127.0.0.1:PORT`, or `https://…` with TLS.
    pub url: String,
    /// A one-time link that opens the status page in a browser.
    pub page_link: String,
}

/// The state every request shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) node: Arc<Mutex<Node>>,
    pub(crate) home: Home,
    pub(crate) addr: SocketAddr,
    /// Whether it speaks HTTPS (then reachable beyond loopback: the certificate vouches for
    /// the name, so no `Host` check, and cookies are `Secure`).
    pub(crate) tls: bool,
    /// The feed's cursor as last seen; changes when anything was applied.
    pub(crate) cursor: watch::Receiver<Cursor>,
    pub(crate) cursor_tx: Arc<watch::Sender<Cursor>>,
    /// Becomes `true` when the server stops: long-polls and streams end.
    pub(crate) stopping: watch::Receiver<bool>,
    /// The sync runs, latest last.
    pub(crate) runs: Arc<Mutex<runs::Runs>>,
    pub(crate) on_event: OnEvent,
    /// The status page's sessions: session id → its CSRF token.
    pub(crate) sessions: Arc<Mutex<std::collections::HashMap<String, String>>>,
    /// Single-record writes waiting for their group ([`writes`]).
    pub(crate) writes: tokio::sync::mpsc::Sender<writes::Job>,
}

impl Shared {
    /// Keeps a run for `GET /v1/runs` and tells it.
    pub(crate) fn record(&self, run: runs::Run) {
        (self.on_event)(&run.summary);
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(run);
    }

    /// Runs `f` on the node, on the blocking pool, then publishes the feed's cursor: for
    /// whatever may change what the node holds.
    pub(crate) async fn with_node<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> T + Send + 'static,
    ) -> Result<T, error::ApiError> {
        let tx = self.cursor_tx.clone();
        self.read_node(move |n| {
            let out = f(n);
            // Whatever it did, the feed's readers see it now rather than at the next look.
            if let Ok(c) = n.feed_cursor() {
                tx.send_if_modified(|old| replace_if_new(old, c));
            }
            out
        })
        .await
    }

    /// Runs `f` on the node, on the blocking pool: for reading only.
    pub(crate) async fn read_node<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> T + Send + 'static,
    ) -> Result<T, error::ApiError> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = node.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| error::ApiError::internal(format!("a request's work failed: {e}")))
    }
}

fn replace_if_new(old: &mut Cursor, new: Cursor) -> bool {
    if *old == new {
        return false;
    }
    *old = new;
    true
}

/// Serves the API for `node` until Ctrl-C or SIGTERM; `on_ready` is called once the
/// listener is bound, `on_event` with each thing done by itself (a watched folder synced).
pub fn run(
    node: Node,
    opts: Options,
    on_ready: impl FnOnce(&Ready),
    on_event: OnEvent,
) -> Result<(), ServeError> {
    let allowed = ferry_listen::is_loopback(&opts.bind) || (opts.remote && opts.tls.is_some());
    if !allowed {
        return Err(ServeError::NotLoopback(opts.bind));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The node is used by one thread at a time: more threads would only wait for it
        // (and each keeps its own memory arena).
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(node, opts, on_ready, on_event))
}

async fn serve(
    mut node: Node,
    opts: Options,
    on_ready: impl FnOnce(&Ready),
    on_event: OnEvent,
) -> Result<(), ServeError> {
    let home = node.home().clone();
    let runs = runs::Runs::load(home.root().join("runs.jsonl"));
    home.ensure_api_token()?;
    let cursor = node.feed_cursor()?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|e| ServeError::Bind(opts.bind, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(opts.bind, e))?;
    let (cursor_tx, cursor_rx) = watch::channel(cursor);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (writes_tx, writes_rx) = tokio::sync::mpsc::channel(writes::MAX_WAITING);
    let shared = Shared {
        node: Arc::new(Mutex::new(node)),
        home,
        addr,
        tls: opts.tls.is_some(),
        cursor: cursor_rx,
        cursor_tx: Arc::new(cursor_tx),
        stopping: stop_rx,
        runs: Arc::new(Mutex::new(runs)),
        on_event,
        sessions: Arc::default(),
        writes: writes_tx,
    };
    // Where this computer reaches it (an unspecified address answers on loopback).
    let local = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    let url = match opts.tls.is_some() {
        true => format!("https://{local}"),
        false => format!("http://{local}"),
    };
    shared.home.set_serve_addr(&url)?;
    tokio::spawn(watch_store(shared.clone()));
    tokio::spawn(writes::group_writer(shared.clone(), writes_rx));
    tokio::spawn(runs::watch_folders(shared.clone(), opts.watch.clone()));
    tokio::spawn(apps::watch_apps(shared.clone()));
    for every in &opts.every {
        tokio::spawn(schedule::run_every(shared.clone(), *every));
    }
    if let Some(device) = opts.serial.clone() {
        tokio::spawn(schedule::watch_serial(shared.clone(), device));
    }
    let page_link = page::link(&shared.home, &url)?;
    on_ready(&Ready {
        addr,
        url,
        page_link,
    });
    let app = api::router(shared);
    let stop = async move {
        stop_signal().await;
        let _ = stop_tx.send(true);
    };
    match opts.tls {
        Some(config) => {
            let tls = tls::TlsListener::new(listener, config)
                .map_err(|e| ServeError::Bind(opts.bind, e))?;
            axum::serve(tls, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(ServeError::Serve)
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(ServeError::Serve),
    }
}

/// Wakes the feeds when another process (a command in a terminal, a listener) applied
/// something to the same home.
async fn watch_store(shared: Shared) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stopping.changed() => return,
        }
        // `with_node` publishes the cursor it reads.
        let _ = shared.with_node(|_| ()).await;
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
