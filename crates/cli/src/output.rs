//! Printing: lines on stdout, progress bars on stderr (only on a terminal).

use anyhow::Result;
use ferry_node::{ExportOutcome, FileResult, ImportReport, Progress, Status, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::fmt;
use std::io::Write;

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

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub struct Bar {
    bar: RefCell<Option<ProgressBar>>,
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            bar: RefCell::new(None),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: Option<u64>) {
        if !crate::interactive() {
            return;
        }
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = if total.is_some() {
            ProgressStyle::with_template("{msg:30} [{bar:30}] {bytes}/{total_bytes} {eta}")
        } else {
            ProgressStyle::with_template("{msg:30} {spinner} {bytes}")
        };
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
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
        if !crate::interactive() || r.total < 1024 {
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

/// A shown field for people: a value, or a set as `{a, b}`.
pub fn shown(s: &ferry_model::Shown) -> String {
    match s {
        ferry_model::Shown::Value(v) => v.to_string(),
        ferry_model::Shown::Set(e) => format!("{{{}}}", e.join(", ")),
    }
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
        let name = f.path.display();
        match &f.result {
            FileResult::Applied {
                sender,
                new,
                duplicates,
                waiting,
                snapshot,
                warnings,
            } => {
                let mut parts = vec![format!("{new} new")];
                if *snapshot {
                    parts.insert(0, "installed a snapshot of the dataset".to_string());
                } else if new + duplicates + waiting == 0 {
                    parts = vec!["no changes, a receipt".to_string()];
                }
                if *duplicates > 0 {
                    parts.push(format!("{duplicates} already here"));
                }
                if *waiting > 0 {
                    parts.push(format!("{waiting} waiting for earlier changes"));
                }
                out(format_args!(
                    "applied  {name} ({}, from {sender}): {}",
                    size(f.bytes),
                    parts.join(", ")
                ))?;
                for w in warnings {
                    out(format_args!("WARNING  {w}"))?;
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
                    "skipped  {name}: refused before ({reason}); the copy is in {}; you may delete the original",
                    quarantined.display()
                ))?;
            }
            FileResult::Rejected {
                reason,
                quarantined,
            } => {
                let kept = quarantined
                    .as_ref()
                    .map(|q| format!("; a copy is kept in {}", q.display()))
                    .unwrap_or_default();
                out(format_args!("REFUSED  {name}: {reason}{kept}"))?;
            }
            FileResult::Waiting { reason, kept } => {
                let place = match kept {
                    Some(k) => format!("it is kept in {}", k.display()),
                    None => "it stays where it is".to_string(),
                };
                out(format_args!(
                    "waiting  {name}: cannot be checked yet: {reason}; nothing from it is used until then; {place} and is tried again at the next import"
                ))?;
            }
            FileResult::Skipped { reason } => {
                out(format_args!("skipped  {name}: {reason}"))?;
            }
        }
    }
    for w in &r.waiting_parts {
        out(format_args!("waiting  {w}"))?;
    }
    if r.other_datasets > 0 {
        out(format_args!(
            "left alone {} bundles of other datasets (in their own ferry/<dataset> folders)",
            r.other_datasets
        ))?;
    }
    if r.pending > 0 {
        out(format_args!(
            "{} changes wait for changes they depend on; they apply when those arrive",
            r.pending
        ))?;
    }
    Ok(())
}

pub fn print_export(r: &ExportOutcome) -> Result<()> {
    match &r.written {
        Some((path, bytes, commits)) => out(format_args!(
            "wrote    {} ({}, {})",
            path.display(),
            size(*bytes),
            match commits {
                0 => "no new changes: a receipt of what this laptop holds".to_string(),
                1 => "1 change".to_string(),
                n => format!("{n} changes"),
            }
        ))?,
        None => out(format_args!(
            "nothing new to write to {}: it already carries everything the others need",
            r.folder.display()
        ))?,
    }
    if let Some((path, bytes)) = &r.snapshot {
        out(format_args!(
            "wrote    {} ({}, a snapshot for members that joined after history was compacted)",
            path.display(),
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

pub fn print_email_send(r: &ferry_node::EmailSendReport) -> Result<()> {
    for s in &r.flushed {
        out(format_args!(
            "sent     {} (from the outbox; {}, {} email{}) to {}",
            s.name,
            size(s.bytes),
            s.emails,
            if s.emails == 1 { "" } else { "s" },
            s.to.join(", ")
        ))?;
    }
    for s in &r.sent {
        out(format_args!(
            "sent     {} ({}, {} email{}, {} with MIME) to {}",
            s.name,
            size(s.bytes),
            s.emails,
            if s.emails == 1 { "" } else { "s" },
            size(s.email_bytes),
            s.to.join(", ")
        ))?;
    }
    if r.nothing_new {
        out(format_args!(
            "nothing new to send to {}",
            r.recipients.join(", ")
        ))?;
    }
    for (name, attempts, err) in &r.queued {
        out(format_args!(
            "queued   {name}: tried {attempts} time{}; {}",
            if *attempts == 1 { "" } else { "s" },
            err.as_deref().unwrap_or("not tried yet")
        ))?;
    }
    Ok(())
}

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
                .map(|q| format!("; a copy is kept in {}", q.display()))
                .unwrap_or_default();
            out(format_args!(
                "REFUSED  an attachment in {}: {reason}{kept}; the email stays where it is",
                d.path.display()
            ))?;
        }
    }
    for (name, have, len) in &r.incomplete {
        out(format_args!(
            "waiting  bundle {name}: {} of {} received; the other parts have not arrived yet",
            size(*have),
            size(*len)
        ))?;
    }
    if r.import.files.is_empty() && r.damaged.is_empty() && r.incomplete.is_empty() {
        out(format_args!("no new ferry email"))?;
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
            p.phone.clone()
        } else {
            format!("{} ({})", p.label, p.phone)
        };
        if let Some(note) = &p.note {
            out(format_args!(
                "{:<8} {who}: {note}",
                if p.bytes > 0 { "NOT SENT" } else { "skipped" },
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

pub fn print_serial(r: &ferry_node::SerialReport) -> Result<()> {
    let peer = r.peer.as_deref().unwrap_or("the other station");
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
        r.device,
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
        out(format_args!("REFUSED  a bundle from {peer}: {reason}"))?;
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
        out(format_args!("NOTE     {n}"))?;
    }
    Ok(())
}

pub fn print_status(s: &Status) -> Result<()> {
    out(format_args!(
        "node     {} (member #{}) in {}",
        s.label, s.member, s.home
    ))?;
    out(format_args!("dataset  {} ({})", s.dataset, s.dataset_id))?;
    out(format_args!(
        "records  {}   conflicts {}   pending {}   waiting for prerequisites {}   quarantined {}",
        s.records, s.conflicts, s.pending, s.waiting_for_prerequisites, s.quarantined
    ))?;
    out(format_args!("members:"))?;
    for m in &s.members {
        let role = match (m.admin, m.you) {
            (true, true) => ", admin",
            (true, false) => " (admin)",
            _ => "",
        };
        if m.you {
            out(format_args!(
                "  #{:<3} {:<16} (this laptop{role}) holds {}",
                m.member,
                m.label,
                changes(m.holds)
            ))?;
            continue;
        }
        let state = if m.joined {
            ""
        } else {
            " invited, not joined yet;"
        };
        let heard = m
            .last_heard
            .as_deref()
            .map_or("never heard from".to_string(), |t| {
                format!("last heard {t}")
            });
        out(format_args!(
            "  #{:<3} {:<16}{role}{state} holds {}, lacks {} of ours (as its last bundle told); {heard}",
            m.member,
            m.label,
            changes(m.holds),
            m.lacks_from_us
        ))?;
    }
    for (name, attempts, err) in &s.email_outbox {
        out(format_args!(
            "email outbox: {name} waiting after {attempts} tr{}; {}; `ferry send email` tries again",
            if *attempts == 1 { "y" } else { "ies" },
            err.as_deref().unwrap_or("not tried yet")
        ))?;
    }
    for c in &s.sms {
        let (queued, incomplete) = (c.queued, c.incomplete);
        let mut line = format!(
            "sms      {}: {} of {} sent today",
            c.peer, c.sent_today, c.daily_budget
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
        out(format_args!("quarantined {at}: {source}: {reason}"))?;
    }
    Ok(())
}

pub fn print_verify(r: &VerifyReport) -> Result<()> {
    out(format_args!(
        "file       {} ({})",
        r.path.display(),
        size(r.bytes)
    ))?;
    if r.version == 0 {
        return Ok(());
    }
    out(format_args!(
        "dataset    {}{}",
        r.dataset,
        if r.our_dataset {
            " (this dataset)"
        } else {
            " (NOT this dataset)"
        }
    ))?;
    out(format_args!(
        "sender     {} (member #{})",
        r.sender.1, r.sender.0
    ))?;
    for (author, first, last) in &r.runs {
        out(format_args!("commits    {author}: {first}–{last}"))?;
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
            out(format_args!("missing    {m}"))?;
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
            out(format_args!("missing    {m}"))?;
        }
    }
    Ok(())
}
