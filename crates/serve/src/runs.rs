//! Sync that runs by itself, and the record of every run.
//!
//! Watched folders: a folder given with `--watch` is looked at every second, itself and the
//! folders directly in it (where sticks are mounted: `/media/USER/…`). One that holds a
//! `ferry/` folder and was not there at the last look is synced at once (import what it
//! carries, write what the others lack); when the sync ends, the run says it is safe to
//! remove. A stick that stays is not synced again until it is taken out and comes back (or
//! `POST /v1/sync` asks). Every run — by a watched folder, a schedule or the API — is kept
//! (the latest [`KEEP_RUNS`], also across restarts) and listed by `GET /v1/runs`.

use crate::Shared;
use ferry_node::{FileOutcome, FileResult, NoProgress, SyncReport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many runs are kept to be listed.
pub const KEEP_RUNS: usize = 200;

/// How often watched folders are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// One sync run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// When it started (UTC).
    pub at: String,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// What carried it: `folder`.
    pub transport: String,
    /// Where: the folder.
    pub target: String,
    /// What started it: `watch` (the folder appeared) or `api`.
    pub by: String,
    /// Whether it finished without an error.
    pub ok: bool,
    /// Bundle files applied.
    pub applied: u64,
    /// Record changes those brought.
    pub records_in: u64,
    /// Bundle files refused (quarantined).
    pub refused: u64,
    /// The size of the bundle written for the others, if one was needed.
    pub wrote_bytes: Option<u64>,
    /// Changes in it.
    pub wrote_changes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// For a folder: whether it can be taken out now (everything written is on it).
    pub safe_to_remove: bool,
    /// For a carrier on a schedule: seconds until its next run (longer after failures).
    #[serde(default)]
    pub next_in_s: Option<u64>,
    /// For email, SMS and radio: what was sent, in a few words.
    #[serde(default)]
    pub sent: Option<String>,
    /// The run in one sentence, as `ferry serve` prints it.
    pub summary: String,
}

impl Run {
    /// A run of `transport` started at `started`, that took until now; nothing counted yet.
    fn started(
        transport: &str,
        target: String,
        by: &str,
        started: (String, Instant),
        error: Option<String>,
    ) -> Run {
        Run {
            at: started.0,
            took_ms: started.1.elapsed().as_millis() as u64,
            transport: transport.into(),
            target,
            by: by.into(),
            ok: error.is_none(),
            applied: 0,
            records_in: 0,
            refused: 0,
            wrote_bytes: None,
            wrote_changes: None,
            error,
            safe_to_remove: false,
            next_in_s: None,
            sent: None,
            summary: String::new(),
        }
    }

    /// Counts what the files of a run became: bundles applied (and their record changes)
    /// and refused.
    pub(crate) fn count(&mut self, files: &[FileOutcome]) {
        for f in files {
            match &f.result {
                FileResult::Applied { records, .. } => {
                    self.applied += 1;
                    self.records_in += records;
                }
                FileResult::Rejected { .. } => self.refused += 1,
                _ => {}
            }
        }
    }

    fn of(
        target: &Path,
        by: &'static str,
        started: (String, Instant),
        result: &Result<SyncReport, String>,
    ) -> Run {
        let target_s = target.display().to_string();
        let mut run = Run::started(
            "folder",
            target_s.clone(),
            by,
            started,
            result.as_ref().err().cloned(),
        );
        run.safe_to_remove = result.is_ok();
        let took_ms = run.took_ms;
        match result {
            Ok(report) => {
                run.count(&report.import.files);
                if let Some((_, bytes, changes)) = &report.export.written {
                    run.wrote_bytes = Some(*bytes);
                    run.wrote_changes = Some(*changes);
                }
                let wrote = match run.wrote_changes {
                    Some(0) => "a receipt written for the others".into(),
                    Some(n) => format!("{n} changes written for the others"),
                    None => "nothing new to write".into(),
                };
                let refused = match run.refused {
                    0 => String::new(),
                    n => format!(", {n} files refused (see ferry status)"),
                };
                run.summary = format!(
                    "synced {target_s}: {} bundles applied ({} record changes){refused}, {wrote} in {:.1} s — safe to remove",
                    run.applied,
                    run.records_in,
                    took_ms as f64 / 1000.0
                );
            }
            Err(e) => {
                run.summary = format!(
                    "sync with {target_s} failed: {e} — it can be removed; nothing half-written is left on it"
                )
            }
        }
        run
    }
}

impl Run {
    /// A run of email, SMS or radio.
    pub(crate) fn of_carrier(
        transport: &'static str,
        by: &'static str,
        started: (String, Instant),
        result: Result<crate::schedule::Moved, String>,
    ) -> Run {
        let mut run = Run::started(transport, String::new(), by, started, None);
        match result {
            Ok(m) => {
                run.count(&m.files);
                let refused = match run.refused + m.damaged {
                    0 => String::new(),
                    n => format!(", {n} refused (see ferry status)"),
                };
                run.refused += m.damaged;
                run.summary = format!(
                    "{transport} with {}: {} bundles applied ({} record changes){refused}, {} in {:.1} s",
                    m.target,
                    run.applied,
                    run.records_in,
                    m.sent,
                    run.took_ms as f64 / 1000.0
                );
                run.target = m.target;
                run.sent = Some(m.sent);
            }
            Err(e) => {
                run.ok = false;
                run.summary = format!("{transport} failed: {e}");
                run.error = Some(e);
            }
        }
        run
    }
}

impl Run {
    /// A run of the apps' attached tables: rows taken in from the apps, rows written into
    /// their tables.
    pub(crate) fn of_apps(
        started: (String, Instant),
        result: Result<Vec<ferry_node::AttachRun>, String>,
    ) -> Run {
        let mut run = Run::started("app", String::new(), "watch", started, None);
        match result {
            Ok(runs) => {
                let tables: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{} ({})", r.table, r.db.display()))
                    .collect();
                let captured: usize = runs.iter().map(|r| r.captured).sum();
                let written: usize = runs.iter().map(|r| r.written + r.deleted).sum();
                let notes: Vec<&str> = runs
                    .iter()
                    .flat_map(|r| r.notes.iter().map(String::as_str))
                    .collect();
                run.target = tables.join(", ");
                run.records_in = written as u64;
                run.wrote_changes = Some(captured as u64);
                run.summary = format!(
                    "apps' tables {}: {captured} rows taken in, {written} rows written into them{}",
                    run.target,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", notes.join("; "))
                    }
                );
            }
            Err(e) => {
                run.ok = false;
                run.summary = format!("apps' tables failed: {e}");
                run.error = Some(e);
            }
        }
        run
    }
}

/// The kept runs, newest last; also in `HOME/runs.jsonl` (one JSON object a line), so a
/// restarted server still lists what ran before it stopped.
#[derive(Default)]
pub(crate) struct Runs {
    runs: VecDeque<Run>,
    file: Option<PathBuf>,
    /// Lines in the file: it is rewritten with the kept runs when it holds twice as many.
    lines: usize,
}

impl Runs {
    /// The runs kept in `file` (none when it is missing; a damaged line is skipped).
    pub(crate) fn load(file: PathBuf) -> Runs {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines = text.lines().count();
        let mut runs: VecDeque<Run> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        while runs.len() > KEEP_RUNS {
            runs.pop_front();
        }
        Runs {
            runs,
            file: Some(file),
            lines,
        }
    }

    pub(crate) fn push(&mut self, run: Run) {
        if self.runs.len() == KEEP_RUNS {
            self.runs.pop_front();
        }
        self.runs.push_back(run);
        // Kept on a best-effort basis: a run that cannot be written is still listed now.
        let _ = self.save();
    }

    fn save(&mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.lines + 1 > 2 * KEEP_RUNS {
            let mut text = String::new();
            for r in &self.runs {
                text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
                text.push('\n');
            }
            let tmp = file.with_extension("jsonl.new");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, file)?;
            self.lines = self.runs.len();
            return Ok(());
        }
        let Some(last) = self.runs.back() else {
            return Ok(());
        };
        let mut line = serde_json::to_string(last).map_err(std::io::Error::other)?;
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?
            .write_all(line.as_bytes())?;
        self.lines += 1;
        Ok(())
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<Run> {
        self.runs.iter().rev().cloned().collect()
    }
}

/// Syncs with `folder` now, records the run and tells it.
pub(crate) async fn sync_folder(s: &Shared, folder: PathBuf, by: &'static str) -> Run {
    let started = (
        ferry_node::time::format_utc(ferry_node::time::now_ms()),
        Instant::now(),
    );
    let f2 = folder.clone();
    let result = match s.with_node(move |n| n.sync(&f2, &NoProgress)).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.message),
    };
    let run = Run::of(&folder, by, started, &result);
    s.record(run.clone());
    run
}

/// The folders under the watched ones that hold a `ferry/` folder now.
fn present(watched: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for w in watched {
        let mut candidates = vec![w.clone()];
        if let Ok(entries) = std::fs::read_dir(w) {
            candidates.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for c in candidates {
            // symlink_metadata: a link named ferry is not followed off the stick.
            if std::fs::symlink_metadata(c.join("ferry")).is_ok_and(|m| m.is_dir()) {
                out.insert(c);
            }
        }
    }
    out
}

/// Looks at the watched folders every second and syncs each one that appeared.
pub(crate) async fn watch_folders(s: Shared, watched: Vec<PathBuf>) {
    if watched.is_empty() {
        return;
    }
    let mut stopping = s.stopping.clone();
    let mut known: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let w = watched.clone();
        let now = tokio::task::spawn_blocking(move || present(&w))
            .await
            .unwrap_or_default();
        for folder in now.difference(&known) {
            if *stopping.borrow() {
                return;
            }
            (s.on_event)(&format!(
                "{} appeared: syncing, do not remove it yet",
                folder.display()
            ));
            sync_folder(&s, folder.clone(), "watch").await;
        }
        known = now;
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stopping.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize) -> Run {
        Run::of_carrier(
            "email",
            "schedule",
            (format!("run {n}"), Instant::now()),
            Err(format!("failure {n}")),
        )
    }

    #[test]
    fn runs_outlive_the_server_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runs.jsonl");
        let mut runs = Runs::load(file.clone());
        assert!(runs.list().is_empty(), "no file: no runs");
        for n in 0..(2 * KEEP_RUNS + 7) {
            runs.push(run(n));
        }
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 2 * KEEP_RUNS, "{lines} lines");
        // A damaged last line (a crash while writing) is skipped, the rest read back.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"at\": \"cut sho"))
            .unwrap();
        let again = Runs::load(file);
        let list = again.list();
        assert_eq!(list.len(), KEEP_RUNS);
        assert_eq!(
            list[0].at,
            format!("run {}", 2 * KEEP_RUNS + 6),
            "newest first"
        );
        assert_eq!(list[0].error.as_deref(), Some("failure 406"));
        assert_eq!(list[KEEP_RUNS - 1].at, format!("run {}", KEEP_RUNS + 7));
    }
}
