//! `ferry doctor`: is the store sound, is the home folder private, which member holds back
//! compaction and purge (and since when), and what a stick holds. Each finding is one line a
//! person can act on; nothing is changed.

use crate::NodeError;
use crate::exchange::content_name;
use crate::medium::{check_bundle_folder, is_dataset_id};
use crate::node::Node;
use crate::time::{format_utc, now_ms};
use ferry_model::MemberId;
use ferry_sync::Storage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// As it should be.
    Ok,
    /// Worth knowing, nothing is wrong (a member away holds back compaction).
    Note,
    /// Something is wrong; the line says what to do.
    Problem,
}

/// One thing `doctor` looked at.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What was looked at: `store`, `home`, `compaction`, `purge` or `stick`.
    pub area: &'static str,
    /// What was found, and what to do when it is a problem.
    pub text: String,
}

/// What `doctor` found, in the order it looked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DoctorReport {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    /// How many findings are problems.
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }

    fn add(&mut self, severity: Severity, area: &'static str, text: String) {
        self.findings.push(Finding {
            severity,
            area,
            text,
        });
    }
}

/// "12 days ago", "3 hours ago", "just now".
fn ago(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => "just now".into(),
        60..7_200 => format!("{} minutes ago", s / 60),
        7_200..172_800 => format!("{} hours ago", s / 3_600),
        _ => format!("{} days ago", s / 86_400),
    }
}

impl Node {
    /// Looks at this laptop's store, home folder and members, and at `stick` when given;
    /// changes nothing.
    pub fn doctor(&mut self, stick: Option<&Path>) -> Result<DoctorReport, NodeError> {
        let mut report = DoctorReport::default();
        self.doctor_store(&mut report)?;
        self.doctor_home(&mut report);
        self.doctor_holding_back(&mut report)?;
        if let Some(stick) = stick {
            self.doctor_stick(stick, &mut report)?;
        }
        Ok(report)
    }

    fn doctor_store(&mut self, report: &mut DoctorReport) -> Result<(), NodeError> {
        let db = self.home().db();
        let damage = self.store.integrity_check()?;
        if damage.is_empty() {
            let records = self.read()?.record_count()?;
            let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
            report.add(
                Severity::Ok,
                "store",
                format!(
                    "{}: SQLite's integrity check passed ({records} record{}, {})",
                    db.display(),
                    if records == 1 { "" } else { "s" },
                    crate::human_bytes(size)
                ),
            );
        } else {
            report.add(
                Severity::Problem,
                "store",
                format!(
                    "{} is damaged ({}): copy the home folder aside, then make a new home (`ferry init --join` with a new invitation) and sync it; what this laptop sent is on the other laptops",
                    db.display(),
                    damage.join("; ")
                ),
            );
        }
        Ok(())
    }

    fn doctor_home(&self, report: &mut DoctorReport) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let root = self.home().root().to_path_buf();
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| m.permissions().mode() & 0o777)
            };
            let mut open = Vec::new();
            if let Some(m) = mode(&root).filter(|m| m & 0o077 != 0) {
                open.push(format!("chmod 700 {} (mode {m:o})", root.display()));
            }
            let db = self.home().db();
            let files = [
                db.clone(),
                db.with_extension("db-wal"),
                db.with_extension("db-shm"),
                self.home().config(),
            ];
            for f in files {
                if let Some(m) = mode(&f).filter(|m| m & 0o077 != 0) {
                    open.push(format!("chmod 600 {} (mode {m:o})", f.display()));
                }
            }
            if open.is_empty() {
                report.add(
                    Severity::Ok,
                    "home",
                    format!(
                        "{}: only its owner can read it or its database",
                        root.display()
                    ),
                );
            } else {
                report.add(
                    Severity::Problem,
                    "home",
                    format!(
                        "other users of this computer can read the home folder, which holds the dataset key: {}",
                        open.join("; ")
                    ),
                );
            }
        }
        #[cfg(not(unix))]
        report.add(
            Severity::Note,
            "home",
            "file permissions are not checked on this system".into(),
        );
    }

    fn doctor_holding_back(&mut self, report: &mut DoctorReport) -> Result<(), NodeError> {
        let labels = self.labels()?;
        let peers = self.known_peers()?;
        let horizon = self.horizon()?;
        let me = self.identity().me;
        let now = now_ms();
        let (mut behind, dead) = {
            let mut tx = self.read()?;
            let applied = tx.applied()?;
            let heard: BTreeMap<MemberId, u64> = tx
                .peers()?
                .into_iter()
                .map(|p| (p.member, p.updated_ms))
                .collect();
            let mut behind = Vec::new();
            for p in peers.into_iter().filter(|&p| p != me) {
                let vv = tx.peer(p)?;
                let lacks: u64 = applied
                    .iter()
                    .map(|(a, n)| n.saturating_sub(vv.get(a)))
                    .sum();
                if lacks > 0 {
                    behind.push((p, lacks, heard.get(&p).copied().filter(|&t| t > 0)));
                }
            }
            let dead = tx.dead_records()?;
            let waiting = dead
                .iter()
                .filter(|(_, _, state)| !state.tombstones.iter().all(|t| horizon.covers(t.dot)))
                .count();
            (behind, (dead.len(), waiting))
        };
        let label = |m: MemberId| match labels.get(&m) {
            Some(l) => format!("{l} (member #{})", m.0),
            None => format!("member #{}", m.0),
        };
        if behind.is_empty() {
            report.add(
                Severity::Ok,
                "compaction",
                "every member holds all this laptop's history: nothing holds back compaction"
                    .into(),
            );
        }
        // The longest silent first: the likeliest to be away.
        behind.sort_by_key(|&(_, _, heard)| heard.unwrap_or(0));
        for (m, lacks, heard) in &behind {
            let since = match heard {
                Some(t) => format!("last heard of at {} ({})", format_utc(*t), ago(*t, now)),
                None => "nothing heard from it yet (its joining or first sync has not reached this laptop)".into(),
            };
            report.add(
                Severity::Note,
                "compaction",
                format!(
                    "{} holds back compaction and purge: it lacks {lacks} changes this laptop holds; {since}. They go with the next sync it is part of",
                    label(*m)
                ),
            );
        }
        let (dead, waiting) = dead;
        match (dead, waiting) {
            (0, _) => report.add(Severity::Ok, "purge", "no deleted records are kept".into()),
            (_, 0) => report.add(
                Severity::Note,
                "purge",
                format!("{dead} deleted records can be removed for good now: `ferry purge`"),
            ),
            (_, w) => report.add(
                Severity::Note,
                "purge",
                format!(
                    "{w} of {dead} deleted records are kept until {} {} received their delete",
                    behind
                        .iter()
                        .map(|(m, _, _)| label(*m))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if behind.len() == 1 { "has" } else { "have" }
                ),
            ),
        }
        Ok(())
    }

    fn doctor_stick(&mut self, stick: &Path, report: &mut DoctorReport) -> Result<(), NodeError> {
        if !stick.is_dir() {
            report.add(
                Severity::Problem,
                "stick",
                format!(
                    "{} is not a folder: give the folder of the USB stick or shared drive",
                    stick.display()
                ),
            );
            return Ok(());
        }
        if let Err(e) = check_bundle_folder(stick, &self.bundle_folder(stick)) {
            report.add(Severity::Problem, "stick", e.to_string());
            return Ok(());
        }
        let ferry = stick.join("ferry");
        let Ok(entries) = std::fs::read_dir(&ferry) else {
            report.add(
                Severity::Note,
                "stick",
                format!(
                    "{} has no ferry folder: no laptop has synced with it yet (`ferry sync {}` writes one)",
                    stick.display(),
                    stick.display()
                ),
            );
            return Ok(());
        };
        let ours = self.dataset().to_hex();
        let mut others: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen_ours = false;
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().is_ok_and(|t| t.is_dir()) || !is_dataset_id(&name) {
                continue;
            }
            let bundles: Vec<_> = std::fs::read_dir(e.path())
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|f| f.path())
                        .filter(|p| {
                            p.extension().is_some_and(|x| x == "ferry")
                                && !p
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if name != ours {
                others.insert(name, bundles.len() as u64);
                continue;
            }
            seen_ours = true;
            let (mut known, mut refused, mut new, mut bytes) = (0, 0, 0, 0u64);
            for b in &bundles {
                let Ok((content, len)) = content_name(b) else {
                    continue;
                };
                bytes += len;
                let tx = self.read()?;
                if tx.bundle_seen(&content)?.is_some() {
                    known += 1;
                } else if tx.quarantined(&content)?.is_some() {
                    refused += 1;
                } else {
                    new += 1;
                }
            }
            let mut text = format!(
                "{}: {} bundles of this dataset ({}): {known} read or written by this laptop",
                ferry.join(&ours).display(),
                bundles.len(),
                crate::human_bytes(bytes)
            );
            if new > 0 {
                text.push_str(&format!(
                    ", {new} not read here yet (`ferry sync {}` reads them)",
                    stick.display()
                ));
            }
            if refused > 0 {
                text.push_str(&format!(
                    ", {refused} refused here before (see `ferry status`)"
                ));
            }
            report.add(Severity::Ok, "stick", text);
        }
        if !seen_ours {
            report.add(
                Severity::Note,
                "stick",
                format!(
                    "{} holds nothing of this dataset yet (`ferry sync {}` writes it)",
                    stick.display(),
                    stick.display()
                ),
            );
        }
        for (id, n) in others {
            report.add(
                Severity::Note,
                "stick",
                format!("it also carries {n} bundles of another dataset ({id}), left alone"),
            );
        }
        Ok(())
    }
}
