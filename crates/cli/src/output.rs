//! Printing: lines on stdout, progress bars on stderr (only on a terminal).

use anyhow::Result;
use ferry_node::{DryRun, ExportOutcome, FileResult, ImportReport, Progress, Status, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::path::Path;

/// Most characters of one outside string shown on a line (an id, a name, a value, a file
/// name); longer ones are cut. `--json` output is never cut.
pub const SHOWN_MAX: usize = 400;
/// Most characters of a whole sentence from the node that embeds such strings (a reason, a
/// warning, an error).
pub const SENTENCE_MAX: usize = 1000;
/// Most characters of a file path shown (a few levels of 255-character names fit).
pub const PATH_MAX: usize = 1000;

/// A string that did not come from this command line — an id, a collection or field name,
/// a text value, a label, a file name from a stick, an address, a reason that embeds them —
/// made safe for a terminal: every control character (C0, DEL, C1), the Unicode bidi
/// controls and the line and paragraph separators become visible escapes (`\e`, `\r`,
/// `\n`, `\t`, `\u{202e}`), so no input can move the cursor, recolour, rewrite a line or
/// reverse text; and a string longer than [`SHOWN_MAX`] characters is cut, with its length.
pub fn shown(s: &str) -> Cow<'_, str> {
    shown_up_to(s, SHOWN_MAX)
}

/// [`shown`] for a file path (cut only beyond [`PATH_MAX`] characters).
pub fn shown_path(p: &Path) -> String {
    shown_up_to(&p.to_string_lossy(), PATH_MAX).into_owned()
}

/// [`shown`] for a whole sentence from the node: escaped, cut only beyond [`SENTENCE_MAX`].
pub fn shown_sentence(s: &str) -> Cow<'_, str> {
    shown_up_to(s, SENTENCE_MAX)
}

/// [`shown`] with the cut after `max` characters.
pub fn shown_up_to(s: &str, max: usize) -> Cow<'_, str> {
    let long = s.len() > max && s.chars().nth(max).is_some();
    if !long && !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(4 * max) + 32);
    for c in s.chars().take(max) {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if long {
        let _ = write!(out, "… ({} characters in all)", s.chars().count());
    }
    Cow::Owned(out)
}

/// Whether a character must not reach a terminal raw: controls (C0, DEL, C1), bidi
/// embeddings, overrides, isolates and marks, and the line and paragraph separators.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Prints one line to stdout. A closed pipe (`ferry list | head`) ends the program quietly.
pub fn out(line: fmt::Arguments<'_>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_fmt(line)?;
    lock.write_all(b"\n")?;
    Ok(())
}

/// Whether an error is a closed stdout pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Progress on stderr: a bar when stderr is a terminal; otherwise (a log, a GUI reading the
/// output, a clerk's script) one plain line every few seconds while a step lasts, so a long
/// export never looks stuck.
pub struct Bar {
    bar: RefCell<Option<ProgressBar>>,
    plain: RefCell<Option<Plain>>,
}

/// How `Bar` shows progress (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal; otherwise a plain line every few seconds.
    Auto,
    /// One JSON object per line on stderr: `{"event":"begin","step":…,"total":…,"unit":…}`,
    /// `{"event":"progress","step":…,"done":…,"total":…,"unit":…}` (at most every
    /// 200 ms, or `FERRY_PROGRESS_EVERY_MS`), `{"event":"end","step":…,"done":…,"seconds":…}`.
    Json,
    /// Nothing.
    None,
}

static PROGRESS_MODE: std::sync::OnceLock<ProgressMode> = std::sync::OnceLock::new();

/// Chooses how progress is shown, once, at start.
pub fn set_progress_mode(mode: ProgressMode) {
    let _ = PROGRESS_MODE.set(mode);
}

fn progress_mode() -> ProgressMode {
    *PROGRESS_MODE.get().unwrap_or(&ProgressMode::Auto)
}

fn unit_name(u: ferry_node::Unit) -> &'static str {
    u.plural()
}

/// One JSON progress event on stderr.
fn json_event(event: &str, p: &Plain) {
    let mut v = serde_json::json!({
        "event": event,
        "step": p.what,
        "done": p.done,
        "unit": unit_name(p.unit),
    });
    if let Some(t) = p.total {
        v["total"] = t.into();
    }
    if event == "end" {
        v["seconds"] = (p.started.elapsed().as_secs_f64()).into();
    }
    let _ = writeln!(std::io::stderr(), "{v}");
}

/// A step followed without a terminal.
struct Plain {
    what: String,
    total: Option<u64>,
    unit: ferry_node::Unit,
    done: u64,
    started: std::time::Instant,
    last: std::time::Instant,
    printed: bool,
}

/// How often a plain progress line is printed: every 3 s, or every
/// `FERRY_PROGRESS_EVERY_MS` milliseconds (for a GUI that wants more, or a test).
fn plain_every() -> std::time::Duration {
    std::env::var("FERRY_PROGRESS_EVERY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            std::time::Duration::from_secs(3),
            std::time::Duration::from_millis,
        )
}

impl Plain {
    fn amount(&self) -> String {
        let n = |v: u64| match self.unit {
            ferry_node::Unit::Bytes => size(v),
            u => format!("{v} {}", u.plural()),
        };
        match self.total {
            Some(t) if t > 0 => format!(
                "{} of {} ({} %)",
                n(self.done),
                n(t),
                (self.done.min(t) * 100) / t
            ),
            _ => match self.unit {
                ferry_node::Unit::Bytes => format!("{} written", size(self.done)),
                _ => n(self.done),
            },
        }
    }
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            bar: RefCell::new(None),
            plain: RefCell::new(None),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: Option<u64>, unit: ferry_node::Unit) {
        let mode = progress_mode();
        if mode == ProgressMode::None {
            return;
        }
        if mode == ProgressMode::Json || !interactive() {
            let now = std::time::Instant::now();
            *self.plain.borrow_mut() = Some(Plain {
                what: shown(what).into_owned(),
                total,
                unit,
                done: 0,
                started: now,
                last: now,
                printed: false,
            });
            if mode == ProgressMode::Json {
                if let Some(p) = self.plain.borrow().as_ref() {
                    json_event("begin", p);
                }
            }
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = match (unit, total.is_some()) {
            (ferry_node::Unit::Bytes, true) => {
                "{msg:30} [{bar:30}] {bytes}/{total_bytes} {eta}".to_string()
            }
            (ferry_node::Unit::Bytes, false) => {
                "{msg:30} {spinner} {bytes} written {elapsed}".to_string()
            }
            (u, true) => format!(
                "{{msg:30}} [{{bar:30}}] {{pos}}/{{len}} {} {{eta}}",
                u.plural()
            ),
            (u, false) => format!("{{msg:30}} {{spinner}} {{pos}} {} {{elapsed}}", u.plural()),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(shown(what).into_owned());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(n);
        }
        if let Some(p) = self.plain.borrow_mut().as_mut() {
            p.done += n;
            if progress_mode() == ProgressMode::Json {
                let every = std::env::var("FERRY_PROGRESS_EVERY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map_or(
                        std::time::Duration::from_millis(200),
                        std::time::Duration::from_millis,
                    );
                if p.last.elapsed() >= every {
                    p.last = std::time::Instant::now();
                    json_event("progress", p);
                }
                return;
            }
            if p.last.elapsed() >= plain_every() {
                p.last = std::time::Instant::now();
                p.printed = true;
                let _ = writeln!(
                    std::io::stderr(),
                    "ferry: {}: {} ({:.1} s)",
                    p.what,
                    p.amount(),
                    p.started.elapsed().as_secs_f64()
                );
            }
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
        if let Some(p) = self.plain.borrow_mut().take() {
            if progress_mode() == ProgressMode::Json {
                json_event("end", &p);
                return;
            }
            if p.printed || p.started.elapsed() >= plain_every() {
                let _ = writeln!(
                    std::io::stderr(),
                    "ferry: {}: done, {} in {:.1} s",
                    p.what,
                    p.amount(),
                    p.started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// Progress of a serial session on stderr (only on a terminal): one bar per message, with
/// bytes, rate and time left. Called from the session's thread.
pub struct SerialBar {
    bar: std::sync::Mutex<Option<(ferry_node::Flow, ProgressBar)>>,
}

impl SerialBar {
    pub fn new() -> std::sync::Arc<SerialBar> {
        std::sync::Arc::new(SerialBar {
            bar: std::sync::Mutex::new(None),
        })
    }

    pub fn finish(&self) {
        if let Some((_, b)) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

impl ferry_node::SerialProgress for SerialBar {
    fn update(&self, r: &ferry_node::ProgressReport) {
        if !interactive() || r.total < 1024 {
            return;
        }
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let same =
            matches!(&*slot, Some((flow, b)) if *flow == r.flow && b.length() == Some(r.total));
        if !same {
            if let Some((_, b)) = slot.take() {
                b.finish_and_clear();
            }
            let b = ProgressBar::with_draw_target(Some(r.total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(match r.flow {
                ferry_node::Flow::Sending => "sending",
                _ => "receiving",
            });
            *slot = Some((r.flow, b));
        }
        if let Some((_, b)) = slot.as_ref() {
            b.set_position(r.done);
            if r.done >= r.total {
                b.finish_and_clear();
                *slot = None;
            }
        }
    }
}

/// A shown field for people: a value, or a set as `{a, b}`; escaped and cut like any
/// outside string ([`shown`]).
pub fn field_value(s: &ferry_model::Shown) -> String {
    match s {
        ferry_model::Shown::Value(v) => value(v),
        ferry_model::Shown::Set(e) => format!(
            "{{{}}}",
            e.iter().map(|x| shown(x)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A value for people, escaped and cut ([`shown`]).
pub fn value(v: &ferry_model::Value) -> String {
    shown(&v.to_string()).into_owned()
}

/// Outside strings (addresses, numbers), each [`shown`], joined with commas.
pub fn shown_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| shown(s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn changes(n: u64) -> String {
    if n == 1 {
        "1 change".into()
    } else {
        format!("{n} changes")
    }
}

pub fn size(n: u64) -> String {
    if n < 10_000 {
        format!("{n} B")
    } else if n < 10_000_000 {
        format!("{:.1} kB", n as f64 / 1000.0)
    } else {
        format!("{:.1} MB", n as f64 / 1e6)
    }
}

pub fn print_import(r: &ImportReport) -> Result<()> {
    for f in &r.files {
        let name = shown_path(&f.path);
        match &f.result {
            FileResult::Applied {
                sender,
                new,
                records,
                duplicates,
                waiting,
                snapshot,
                warnings,
            } => {
                // Records first (what a person typed), then the changes that carried them.
                let mut parts = Vec::new();
                if *snapshot {
                    parts.push("installed a snapshot of the dataset".to_string());
                }
                if *records > 0 {
                    parts.push(format!(
                        "{records} record{} changed",
                        if *records == 1 { "" } else { "s" }
                    ));
                }
                if *new > 0 || parts.is_empty() {
                    parts.push(format!(
                        "{new} new change{}",
                        if *new == 1 { "" } else { "s" }
                    ));
                }
                if !*snapshot && new + duplicates + waiting == 0 {
                    parts = vec!["no changes, a receipt".to_string()];
                }
                if *duplicates > 0 {
                    parts.push(format!("{duplicates} already here"));
                }
                if *waiting > 0 {
                    parts.push(format!("{waiting} waiting for earlier changes"));
                }
                out(format_args!(
                    "applied  {name} ({}, from {}): {}",
                    size(f.bytes),
                    shown(sender),
                    parts.join(", ")
                ))?;
                for w in warnings {
                    out(format_args!("WARNING  {}", shown_sentence(w)))?;
                }
            }
            FileResult::AlreadyApplied => {
                out(format_args!("skipped  {name}: already applied"))?;
            }
            FileResult::RefusedBefore {
                reason,
                quarantined,
            } => {
                out(format_args!(
                    "skipped  {name}: refused before ({}); the copy is in {}; you may delete the original",
                    shown_sentence(reason),
                    shown_path(quarantined)
                ))?;
            }
            FileResult::Rejected {
                reason,
                quarantined,
            } => {
                let kept = quarantined
                    .as_ref()
                    .map(|q| format!("; a copy is kept in {}", shown_path(q)))
                    .unwrap_or_default();
                out(format_args!(
                    "REFUSED  {name}: {}{kept}",
                    shown_sentence(reason)
                ))?;
            }
            FileResult::Waiting { reason, kept, .. } => {
                let place = match kept {
                    Some(k) => format!("it is kept in {}", shown_path(k)),
                    None => "it stays where it is".to_string(),
                };
                out(format_args!(
                    "waiting  {name}: cannot be checked yet: {}; nothing from it is used until then; {place} and is tried again at the next import",
                    shown_sentence(reason)
                ))?;
            }
            FileResult::Skipped { reason } => {
                out(format_args!("skipped  {name}: {}", shown_sentence(reason)))?;
            }
        }
    }
    for s in &r.skipped {
        out(format_args!(
            "skipped  {}: {}",
            shown_path(&s.path),
            shown_sentence(&s.reason)
        ))?;
    }
    for w in &r.waiting_parts {
        out(format_args!("waiting  {}", shown_sentence(w)))?;
    }
    if r.other_datasets > 0 {
        out(format_args!(
            "left alone {} bundles of other datasets (in their own ferry/<dataset> folders)",
            r.other_datasets
        ))?;
    }
    if r.waiting.is_empty() && r.pending > 0 {
        out(format_args!(
            "{} changes wait for changes they depend on; they apply when those arrive",
            r.pending
        ))?;
    }
    print_waiting(&r.waiting)?;
    Ok(())
}

/// Fails, after an import's lines were printed, when the admin accepted another laptop as
/// this member: the one line says what happened and what to do (exit status 1).
pub fn refused_membership(r: &ImportReport) -> Result<()> {
    match &r.refused_membership {
        Some(m) => anyhow::bail!("{m}"),
        None => Ok(()),
    }
}

/// Most `waiting` lines printed for changes that wait for other changes.
const WAITING_LINES: usize = 5;

/// One line per author whose changes wait here: for whose changes, and where they come from.
fn print_waiting(waiting: &[ferry_node::WaitingChanges]) -> Result<()> {
    for w in waiting.iter().take(WAITING_LINES) {
        out(format_args!("waiting  {}", waiting_line(w)))?;
    }
    if waiting.len() > WAITING_LINES {
        let rest: u64 = waiting[WAITING_LINES..].iter().map(|w| w.changes).sum();
        out(format_args!(
            "waiting  {rest} more changes from {} other members (`ferry status --json` lists them)",
            waiting.len() - WAITING_LINES
        ))?;
    }
    Ok(())
}

/// "20 changes from hq need clinic-m's first change (its joining): …".
fn waiting_line(w: &ferry_node::WaitingChanges) -> String {
    let changes = match w.changes {
        1 => "1 change".to_string(),
        n => format!("{n} changes"),
    };
    if w.needs.is_empty() {
        return format!(
            "{changes} from {} wait for earlier changes; they apply when those arrive",
            shown(&w.author)
        );
    }
    let parts: Vec<String> = w
        .needs
        .iter()
        .map(|n| {
            let who = shown(&n.member);
            match (n.holds, n.needs) {
                (0, 1) => format!("{who}'s first change (its joining)"),
                (h, k) if h + 1 == k => format!("{who}'s change {k}"),
                (h, k) => format!("{who}'s changes {}–{k}", h + 1),
            }
        })
        .collect();
    let mut from: Vec<String> = w
        .needs
        .iter()
        .map(|n| shown(&n.member).into_owned())
        .collect();
    from.dedup();
    let from = from.join(" or ");
    let author = shown(&w.author).into_owned();
    let holder = if w.needs.iter().any(|n| n.member == w.author) {
        String::new()
    } else {
        format!(" ({author} has them)")
    };
    format!(
        "{changes} from {author} need {}, which this laptop has not received: they come in any bundle from {from} or from a laptop that has them{holder}; sync a stick that {from} or {author} has synced since",
        parts.join(" and ")
    )
}

pub fn print_export(r: &ExportOutcome) -> Result<()> {
    match &r.written {
        Some((path, bytes, commits)) => out(format_args!(
            "wrote    {} ({}, {})",
            shown_path(path),
            size(*bytes),
            match commits {
                0 => "no new changes: a receipt of what this laptop holds".to_string(),
                1 => "1 change".to_string(),
                n => format!("{n} changes"),
            }
        ))?,
        None => out(format_args!(
            "nothing new to write to {}: it already carries everything the others need",
            shown_path(&r.folder)
        ))?,
    }
    if let Some((path, bytes)) = &r.snapshot {
        out(format_args!(
            "wrote    {} ({}, a snapshot for members that joined after history was compacted)",
            shown_path(path),
            size(*bytes)
        ))?;
    }
    if !r.removed.is_empty() {
        out(format_args!(
            "removed  {} bundles every member already has",
            r.removed.len()
        ))?;
    }
    Ok(())
}

/// `sync --dry-run` and `export --dry-run`: lines starting with `would`, then one line per
/// member; or the plan as JSON.
pub fn print_dry_run(r: &DryRun, json: bool) -> Result<()> {
    if json {
        return out(format_args!("{}", serde_json::to_string_pretty(r)?));
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if !r.import.is_empty() {
        let bytes: u64 = r.import.iter().map(|f| f.bytes).sum();
        let mut from: Vec<String> = r
            .import
            .iter()
            .map(|f| {
                f.sender
                    .as_deref()
                    .map_or("unknown".into(), |s| shown(s).into_owned())
            })
            .collect();
        from.sort();
        from.dedup();
        out(format_args!(
            "would import {} bundle{} ({}) from {}",
            r.import.len(),
            plural(r.import.len()),
            size(bytes),
            from.join(", ")
        ))?;
        // The sender is what each file's header says: anyone can write that. The import
        // checks its signature; the dry run reads no further.
        out(format_args!(
            "         (as their headers say; a real import checks each signature and refuses forgeries)"
        ))?;
    }
    if let Some(bytes) = r.snapshot {
        out(format_args!(
            "would write a snapshot ({}) for members that joined after history was compacted",
            size(bytes)
        ))?;
    }
    match &r.write {
        Some(w) if w.changes == 0 => out(format_args!(
            "would write 1 bundle, no new changes: a receipt of what this laptop holds ({})",
            size(w.bytes)
        ))?,
        Some(w) => out(format_args!(
            "would write 1 bundle, {} ({})",
            changes(w.changes),
            size(w.bytes)
        ))?,
        None => out(format_args!(
            "would write nothing: {} already carries everything the others need",
            shown_path(&r.folder)
        ))?,
    }
    if !r.import.is_empty() {
        out(format_args!(
            "would also pass on what it imports, once applied (the write above is planned from what this laptop holds now)"
        ))?;
    }
    if !r.remove.is_empty() {
        out(format_args!(
            "would remove {} bundle{} every member already has",
            r.remove.len(),
            plural(r.remove.len())
        ))?;
    }
    let width = r
        .members
        .iter()
        .map(|m| shown(&m.label).chars().count())
        .max()
        .unwrap_or(0);
    for m in &r.members {
        let label = shown(&m.label);
        if m.lacks == 0 {
            out(format_args!(
                "{label:<width$}  lacks nothing this laptop holds"
            ))?;
            continue;
        }
        let snapshot = if !m.needs_snapshot {
            ""
        } else if r.snapshot.is_some() {
            " on top of the snapshot it would write"
        } else if r.snapshot_on_medium {
            " on top of the admin's snapshot already on the stick"
        } else {
            " (it needs the admin's snapshot first)"
        };
        let already = match m.on_medium {
            0 => String::new(),
            n => format!("; {n} already on the stick"),
        };
        out(format_args!(
            "{label:<width$}  lacks {}; this sync would carry {}{already}{snapshot}",
            changes(m.lacks),
            m.carried
        ))?;
    }
    Ok(())
}

pub fn print_email_send(r: &ferry_node::EmailSendReport) -> Result<()> {
    for s in &r.flushed {
        out(format_args!(
            "sent     {} (from the outbox; {}, {} email{}) to {}",
            shown(&s.name),
            size(s.bytes),
            s.emails,
            if s.emails == 1 { "" } else { "s" },
            shown_list(&s.to)
        ))?;
    }
    for s in &r.sent {
        out(format_args!(
            "sent     {} ({}, {} email{}, {} with MIME) to {}",
            shown(&s.name),
            size(s.bytes),
            s.emails,
            if s.emails == 1 { "" } else { "s" },
            size(s.email_bytes),
            shown_list(&s.to)
        ))?;
    }
    if r.nothing_new {
        out(format_args!(
            "nothing new to send to {}",
            shown_list(&r.recipients)
        ))?;
    }
    for (name, attempts, err) in &r.queued {
        out(format_args!(
            "queued   {}: tried {attempts} time{}; {}",
            shown(name),
            if *attempts == 1 { "" } else { "s" },
            shown_sentence(err.as_deref().unwrap_or("not tried yet"))
        ))?;
    }
    Ok(())
}

/// Most `waiting` lines `receive email` prints for bundles still missing parts (those that
/// moved in this run and members' first); the rest are counted on one line.
pub const EMAIL_WAITING_LINES: usize = 5;

pub fn print_email_receive(r: &ferry_node::EmailReceiveReport) -> Result<()> {
    print_import(&r.import)?;
    for d in &r.damaged {
        if let FileResult::Rejected {
            reason,
            quarantined,
        } = &d.result
        {
            let kept = quarantined
                .as_ref()
                .map(|q| format!("; a copy is kept in {}", shown_path(q)))
                .unwrap_or_default();
            out(format_args!(
                "REFUSED  {}: {}{kept}; the email stays where it is",
                shown_path(&d.path),
                shown_sentence(reason)
            ))?;
        }
    }
    for d in &r.refused_parts {
        if let FileResult::Rejected { reason, .. } = &d.result {
            out(format_args!(
                "REFUSED  {}: {}; the email was moved to {}",
                shown_path(&d.path),
                shown_sentence(reason),
                shown(&r.refused_folder)
            ))?;
        }
    }
    // Bundles missing parts: those that moved now first, then members', a few lines at most.
    let mut waiting: Vec<&ferry_node::EmailWaiting> = r.incomplete.iter().collect();
    waiting.sort_by_key(|w| (!w.progressed, !w.member));
    for w in waiting.iter().take(EMAIL_WAITING_LINES) {
        let whose = if w.member {
            String::new()
        } else {
            format!(
                "; from {} without a member's mark, kept 7 days",
                shown(&w.sender)
            )
        };
        out(format_args!(
            "waiting  bundle {}: {} of {} parts ({} of {}) received; the other parts have not arrived yet{whose}",
            shown(&w.name),
            w.parts_have,
            w.parts,
            size(w.have),
            size(w.len)
        ))?;
    }
    if waiting.len() > EMAIL_WAITING_LINES {
        let rest = &waiting[EMAIL_WAITING_LINES..];
        let strangers = rest.iter().filter(|w| !w.member).count();
        out(format_args!(
            "waiting  {} more bundles missing parts ({} of them without a member's mark, kept 7 days; members' are kept 30 days)",
            rest.len(),
            strangers
        ))?;
    }
    if r.dropped > 0 {
        let mut from: Vec<String> = r
            .dropped_from
            .iter()
            .take(3)
            .map(|f| shown(f).into_owned())
            .collect();
        if r.dropped_senders > from.len() {
            from.push("…".into());
        }
        out(format_args!(
            "dropped  {} part{} from {} sender{} ({}): {}; their emails stay in the mailbox and are not read again",
            r.dropped,
            if r.dropped == 1 { "" } else { "s" },
            r.dropped_senders,
            if r.dropped_senders == 1 { "" } else { "s" },
            from.join(", "),
            shown_sentence(r.dropped_why.as_deref().unwrap_or("over a limit"))
        ))?;
    }
    if !r.expired.is_empty() {
        let members = r.expired.iter().filter(|(_, m)| *m).count();
        out(format_args!(
            "NOTE     gave up {} bundle{} still missing parts after waiting too long ({} from members, after 30 days; the rest after 7); ask the sender to send again",
            r.expired.len(),
            if r.expired.len() == 1 { "" } else { "s" },
            members
        ))?;
    }
    if r.import.files.is_empty()
        && r.damaged.is_empty()
        && r.refused_parts.is_empty()
        && r.incomplete.is_empty()
        && r.dropped == 0
    {
        out(format_args!("no new ferry email"))?;
    }
    if r.other_dataset > 0 {
        out(format_args!(
            "left alone {} ferry email{} of another dataset (or altered on the way)",
            r.other_dataset,
            if r.other_dataset == 1 { "" } else { "s" }
        ))?;
    }
    if r.other_mail > 0 {
        out(format_args!(
            "left alone {} other email{}",
            r.other_mail,
            if r.other_mail == 1 { "" } else { "s" }
        ))?;
    }
    Ok(())
}

pub fn print_sms_send(r: &ferry_node::SmsSendReport) -> Result<()> {
    if r.flushed > 0 {
        out(format_args!("sent     {} SMS that were waiting", r.flushed))?;
    }
    for p in &r.peers {
        // A number that is no member's shows once.
        let who = if p.label == p.phone {
            shown(&p.phone).into_owned()
        } else {
            format!("{} ({})", shown(&p.label), shown(&p.phone))
        };
        if let Some(note) = &p.note {
            out(format_args!(
                "{:<8} {who}: {}",
                if p.bytes > 0 { "NOT SENT" } else { "skipped" },
                shown_sentence(note)
            ))?;
            continue;
        }
        let wait = match (r.dry_run, p.queued) {
            (_, 0) => String::new(),
            (true, q) => format!(
                "; {} today, {q} would wait for the next day's budget",
                p.sent_now
            ),
            (false, q) => format!(
                "; {} now, {q} wait for the next day's budget (they go out with the next `ferry send sms`)",
                p.sent_now
            ),
        };
        let verb = if r.dry_run { "would send" } else { "sent" };
        out(format_args!(
            "{verb:<8} {who}: {} B in {} SMS{wait}",
            p.bytes, p.messages
        ))?;
    }
    Ok(())
}

/// One event of `ferry serial listen`: a session's lines, a refused station (one line), a
/// failed session (one line on standard error), or a pause.
pub fn print_serial_listen(e: &ferry_node::ListenEvent<'_>) -> Result<()> {
    match e {
        ferry_node::ListenEvent::Synced(r) => print_serial(r),
        ferry_node::ListenEvent::Refused(r) => out(format_args!(
            "REFUSED  {}: {}; nothing of it was used, and it was told nothing about this dataset",
            serial_station(r),
            shown_sentence(r.refused.as_deref().unwrap_or("no reason given"))
        )),
        ferry_node::ListenEvent::Failed(e, r) => {
            eprintln!(
                "ferry: {}: {}; waiting for the next call",
                serial_station(r),
                shown_sentence(&e.to_string())
            );
            Ok(())
        }
        ferry_node::ListenEvent::Paused(d) => out(format_args!(
            "NOTE     stations that did not prove they are members took more than {} s of airtime in the last hour; not answering for {} min",
            ferry_node::STRANGER_AIRTIME.as_secs(),
            d.as_secs().div_ceil(60)
        )),
        _ => Ok(()),
    }
}

/// "a station on DEVICE (CALLSIGN)": who called, as far as the link tells.
fn serial_station(r: &ferry_node::SerialReport) -> String {
    match &r.callsign {
        Some(c) => format!("a station on {} ({})", shown(&r.device), shown(c)),
        None => format!("a station on {}", shown(&r.device)),
    }
}

pub fn print_serial(r: &ferry_node::SerialReport) -> Result<()> {
    let unchecked = r
        .unchecked
        .map(|m| format!("a station this one cannot check yet (it says it is member #{m})"));
    let peer = match (&r.peer, &unchecked) {
        (Some(p), _) => shown(p).into_owned(),
        (None, Some(u)) => u.clone(),
        (None, None) => "the other station".into(),
    };
    if r.plaintext {
        out(format_args!(
            "plaintext: bundles were sent signed but not encrypted"
        ))?;
    }
    if r.peer.is_some() && r.peer_plaintext != r.plaintext {
        let (them, us) = if r.peer_plaintext {
            ("signed but NOT encrypted (--plaintext)", "encrypted")
        } else {
            ("encrypted", "plaintext")
        };
        out(format_args!(
            "NOTE     {peer} sent {them} bundles while this station sent {us} ones; on amateur bands both must use --plaintext, elsewhere neither should"
        ))?;
    }
    // The first bundle received is the other end's hello (what it holds).
    let mut new = 0;
    let mut bundles = 0;
    for f in r.received.iter().skip(1) {
        bundles += 1;
        if let FileResult::Applied { new: n, .. } = f.result {
            new += n;
        }
    }
    let refused: Vec<_> = r
        .received
        .iter()
        .filter_map(|f| match &f.result {
            FileResult::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    out(format_args!(
        "synced   with {peer} over {}: received {} ({bundles} bundle{}), sent {} ({}){}",
        shown(&r.device),
        changes(new),
        if bundles == 1 { "" } else { "s" },
        changes(r.sent_commits),
        size(r.sent_bytes),
        if r.snapshot_sent { ", a snapshot" } else { "" }
    ))?;
    if r.link.resumed_bytes > 0 {
        out(format_args!(
            "resumed  an interrupted transfer: {} B were already across",
            r.link.resumed_bytes
        ))?;
    }
    if r.restarts > 0 {
        out(format_args!(
            "restarted the exchange {} time(s): the other end restarted",
            r.restarts
        ))?;
    }
    out(format_args!(
        "link     {} frames sent ({} on the wire, {:.1} s airtime), {} received, {} damaged; {} B of data sent again",
        r.link.frames_sent,
        size(r.link.wire_bytes_sent),
        r.link.airtime_seconds,
        r.link.frames_received,
        r.link.frames_damaged,
        r.link.data_bytes_resent
    ))?;
    for reason in refused {
        out(format_args!(
            "REFUSED  a bundle from {peer}: {}",
            shown_sentence(&reason)
        ))?;
    }
    if let Some(m) = r.unchecked {
        out(format_args!(
            "NOTE     member #{m}'s joining has not reached this station, so it was sent nothing but this station's hello; its own bundles were checked one by one as always. Run again once its joining is here (it comes with its own bundles)"
        ))?;
    }
    Ok(())
}

pub fn print_sms_receive(r: &ferry_node::SmsReceiveReport) -> Result<()> {
    print_import(&r.import)?;
    if r.parts > 0 {
        out(format_args!(
            "stored   {} SMS parts of bundles not complete yet",
            r.parts
        ))?;
    }
    if r.repairs > 0 {
        out(format_args!(
            "asked    for missing parts of {} bundles",
            r.repairs
        ))?;
    }
    for n in &r.notes {
        out(format_args!("NOTE     {}", shown_sentence(n)))?;
    }
    Ok(())
}

pub fn print_status(s: &Status) -> Result<()> {
    out(format_args!(
        "node     {} (member #{}) in {}",
        shown(&s.label),
        s.member,
        shown_up_to(&s.home, PATH_MAX)
    ))?;
    out(format_args!(
        "dataset  {} ({})",
        shown(&s.dataset),
        shown(&s.dataset_id)
    ))?;
    out(format_args!(
        "records  {}   conflicts {}   pending {}   waiting for prerequisites {}   quarantined {}",
        s.records, s.conflicts, s.pending, s.waiting_for_prerequisites, s.quarantined
    ))?;
    if let Some(k) = s.own_fork {
        out(format_args!(
            "WARNING  another device also writes as this laptop (member #{}): its history forked at change {k}, probably a restored backup or a cloned disk; the other laptops accept nothing more from member #{}; tell the admin",
            s.member, s.member
        ))?;
    }
    if let Some(r) = &s.refused_membership {
        out(format_args!("REFUSED  {}", shown(&r.to_string())))?;
    }
    if let Some(line) = &s.removed_here {
        out(format_args!("REMOVED  {}", shown(line)))?;
    }
    print_waiting(&s.waiting)?;
    for (label, n) in &s.unfinished {
        out(format_args!(
            "stopped  {n} change{} of {} came in a bundle whose import stopped halfway: applied here, passed on to others once the rest is imported (import that bundle again, or sync)",
            if *n == 1 { "" } else { "s" },
            shown(label)
        ))?;
    }
    if s.waiting_bundles > 0 {
        out(format_args!(
            "waiting  {} bundle{} that came by email, SMS or radio cannot be checked yet; they are tried again after every import",
            s.waiting_bundles,
            if s.waiting_bundles == 1 { "" } else { "s" }
        ))?;
    }
    if !s.held_back_by.is_empty() {
        let who: Vec<String> = s
            .held_back_by
            .iter()
            .map(|h| shown(&h.to_string()).into_owned())
            .collect();
        out(format_args!(
            "held back: compaction and purge wait for {} (each catches up with the next sync it is part of)",
            who.join("; ")
        ))?;
    }
    out(format_args!("members:"))?;
    for m in &s.members {
        let role = match (m.admin, m.you) {
            (true, true) => ", admin",
            (true, false) => " (admin)",
            _ => "",
        };
        let label = shown(&m.label);
        if m.you {
            out(format_args!(
                "  #{:<3} {:<16} (this laptop{role}) holds {}",
                m.member,
                label,
                changes(m.holds)
            ))?;
            continue;
        }
        let state = if m.joined {
            ""
        } else {
            " invited, not joined yet;"
        };
        if let Some(why) = &m.cancelled {
            out(format_args!(
                "  #{:<3} {:<16}{role} CANCELLED: the admin cancelled its invitation ({}); nothing of it counts or is waited for",
                m.member,
                label,
                shown(why)
            ))?;
            continue;
        }
        if let Some(r) = &m.removed {
            out(format_args!(
                "  #{:<3} {:<16}{role} REMOVED by the admin on {} ({}): what it wrote after its change {} is refused; it is not waited for",
                m.member,
                label,
                shown(&r.at),
                shown(&r.reason),
                r.cutoff
            ))?;
            continue;
        }
        if let Some(k) = m.frozen_from {
            out(format_args!(
                "  #{:<3} {:<16}{role} FROZEN: its history forked at change {k} (a laptop restored from a backup, or a cloned disk, wrote again); nothing more is accepted from it; the admin should replace that laptop",
                m.member, label
            ))?;
            continue;
        }
        let heard = m
            .last_heard
            .as_deref()
            .map_or("never heard from".to_string(), |t| {
                format!("last heard {}", shown(t))
            });
        out(format_args!(
            "  #{:<3} {:<16}{role}{state} holds {}, lacks {} of ours (as its last bundle told); {heard}",
            m.member,
            label,
            changes(m.holds),
            m.lacks_from_us
        ))?;
    }
    for (name, attempts, err) in &s.email_outbox {
        out(format_args!(
            "email outbox: {} waiting after {attempts} tr{}; {}; `ferry send email` tries again",
            shown(name),
            if *attempts == 1 { "y" } else { "ies" },
            shown_sentence(err.as_deref().unwrap_or("not tried yet"))
        ))?;
    }
    for c in &s.sms {
        if c.strangers {
            out(format_args!(
                "sms      numbers that are no member's: {} incomplete bundle(s) kept (at most 64, for a day; never asked to repair){}",
                c.incomplete,
                match c.dropped {
                    Some(n) if n > 0 => format!(", {n} dropped to stay within bounds"),
                    _ => String::new(),
                }
            ))?;
            continue;
        }
        let (queued, incomplete) = (c.queued, c.incomplete);
        let mut line = format!(
            "sms      {}: {} of {} sent today",
            shown(&c.peer),
            c.sent_today,
            c.daily_budget
        );
        if queued > 0 {
            line += &format!(
                ", {queued} queued (over the daily budget, or the gateway failed; `ferry send sms` tries again)"
            );
        }
        if incomplete > 0 {
            line += &format!(", {incomplete} incoming bundle(s) waiting for missing SMS");
        }
        out(format_args!("{line}"))?;
    }
    for (at, source, reason) in &s.recent_quarantine {
        out(format_args!(
            "quarantined {}: {}: {}",
            shown(at),
            shown_up_to(source, PATH_MAX),
            shown_sentence(reason)
        ))?;
    }
    Ok(())
}

pub fn print_doctor(r: &ferry_node::DoctorReport) -> Result<()> {
    use ferry_node::Severity;
    for f in &r.findings {
        let mark = match f.severity {
            Severity::Ok => "ok      ",
            Severity::Problem => "PROBLEM ",
            _ => "note    ",
        };
        out(format_args!(
            "{mark} {:<10} {}",
            f.area,
            shown_sentence(&f.text)
        ))?;
    }
    Ok(())
}

pub fn print_verify(r: &VerifyReport) -> Result<()> {
    out(format_args!(
        "file       {} ({})",
        shown_path(&r.path),
        size(r.bytes)
    ))?;
    if r.version == 0 {
        return Ok(());
    }
    out(format_args!(
        "dataset    {}{}",
        shown(&r.dataset),
        if r.our_dataset {
            " (this dataset)"
        } else {
            " (NOT this dataset)"
        }
    ))?;
    if r.our_dataset {
        out(format_args!(
            "sender     {} (member #{})",
            shown(&r.sender.1),
            r.sender.0
        ))?;
    } else {
        out(format_args!(
            "sender     member #{} of that other dataset (not a member of this one)",
            r.sender.0
        ))?;
    }
    for (author, first, last) in &r.runs {
        out(format_args!("commits    {}: {first}–{last}", shown(author)))?;
    }
    if r.plaintext {
        out(format_args!(
            "format     plaintext (signed, not encrypted): `ferry import` refuses it unless given --plaintext"
        ))?;
    }
    if r.problem.is_some() {
        // The command's error line says what is wrong.
    } else if !r.signature_checked {
        out(format_args!(
            "integrity  cannot be checked yet: nothing from it would be used until this laptop has what is missing below"
        ))?;
        for m in &r.missing {
            out(format_args!("missing    {}", shown_sentence(m)))?;
        }
    } else {
        out(format_args!("integrity  intact; signature valid"))?;
        out(format_args!(
            "effect     {} new, {} already here{}",
            r.new,
            r.duplicates,
            if r.already_applied {
                " (this file was applied before)"
            } else {
                ""
            }
        ))?;
        for m in &r.missing {
            out(format_args!("missing    {}", shown_sentence(m)))?;
        }
    }
    Ok(())
}

/// Whether stderr is a terminal (progress bars are drawn only then).
fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_every_control_and_bidi_character_and_cuts_long_strings() {
        let check = |input: &str, expect: &str| assert_eq!(shown(input), expect, "{input:?}");
        check("Kisumu Ndogo", "Kisumu Ndogo");
        check("é ü 中文 ✓", "é ü 中文 ✓");
        check("a\x1b[2Jb", "a\\e[2Jb");
        check("x\rapplied all good", "x\\rapplied all good");
        check("one\ntwo\tthree", "one\\ntwo\\tthree");
        check("nul\0 del\x7f c1\u{9b}", "nul\\u{0} del\\u{7f} c1\\u{9b}");
        check("evil\u{202e}gnp.exe", "evil\\u{202e}gnp.exe");
        check("\u{2066}i\u{2069}", "\\u{2066}i\\u{2069}");
        check("line\u{2028}sep", "line\\u{2028}sep");
        let long = "y".repeat(17_000);
        let cut = shown(&long);
        assert!(cut.starts_with(&"y".repeat(SHOWN_MAX)));
        assert!(cut.ends_with("… (17000 characters in all)"), "{cut:.40}");
        assert_eq!(
            cut.chars().count(),
            SHOWN_MAX + "… (17000 characters in all)".len() - 2
        );
        assert!(matches!(shown(&"z".repeat(SHOWN_MAX)), Cow::Borrowed(_)));
        assert_eq!(shown_up_to("\x1babc", 2), "\\ea… (4 characters in all)");
    }
}
