//! Apps' attached SQLite tables under `ferry serve` (`ferry attach`): what an app commits
//! is taken in within about a second, and what arrives (a stick, email, the API, another
//! laptop's changes) is written into its table as soon as it is applied.
//!
//! Every half second the watcher looks at each attached database's files (the database and
//! its WAL: their size and time of change) and at the feed's cursor; when one moved since
//! the last run, it runs the attached tables ([`ferry_node::Node::run_attached`]). A run
//! that moved something, or has something to say, is recorded like any other.

use crate::Shared;
use crate::runs::Run;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the app's files are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A file's size and time of change, if it exists.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// What a run is due on: each database's and WAL's stamp, and the feed's cursor.
type Signature = (
    Vec<(
        PathBuf,
        Option<(u64, SystemTime)>,
        Option<(u64, SystemTime)>,
    )>,
    String,
);

fn signature(dbs: Vec<PathBuf>, cursor: String) -> Signature {
    let files = dbs
        .into_iter()
        .map(|db| {
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            let (a, b) = (stamp(&db), stamp(Path::new(&wal)));
            (db, a, b)
        })
        .collect();
    (files, cursor)
}

async fn look(s: &Shared) -> Option<Signature> {
    let (dbs, cursor) = s
        .read_node(|n| -> Option<(Vec<PathBuf>, String)> {
            let dbs = n.attached_databases().ok()?;
            if dbs.is_empty() {
                return None;
            }
            Some((dbs, n.feed_cursor().ok()?.to_string()))
        })
        .await
        .ok()??;
    Some(signature(dbs, cursor))
}

/// Runs the attached tables whenever an app's database or the feed moved.
pub(crate) async fn watch_apps(s: Shared) {
    let mut stopping = s.stopping.clone();
    let mut last: Option<Signature> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stopping.changed() => return,
        }
        let Some(now) = look(&s).await else {
            last = None;
            continue;
        };
        if last.as_ref() == Some(&now) {
            continue;
        }
        let started = (
            ferry_node::time::format_utc(ferry_node::time::now_ms()),
            Instant::now(),
        );
        let result = s.with_node(|n| n.run_attached()).await;
        let runs = match result {
            Ok(Ok(runs)) => Ok(runs),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.message),
        };
        let moved = match &runs {
            Ok(r) => r
                .iter()
                .any(|r| r.captured + r.written + r.deleted > 0 || !r.notes.is_empty()),
            Err(_) => true,
        };
        if moved {
            s.record(Run::of_apps(started, runs));
        }
        // The run itself changed the files and the cursor: look again from here.
        last = look(&s).await;
    }
}
