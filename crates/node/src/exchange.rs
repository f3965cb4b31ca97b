//! Moving bundles: import, export, sync, verify.

use crate::NodeError;
use crate::error::NothingToImport;
use crate::home::Staged;
use crate::medium::{
    Elsewhere, Found, SkippedEntry, check_bundle_folder, collect, explicit_target, is_saved_email,
    open_regular,
};
use crate::node::{Node, random};
use crate::progress::{Progress, Unit};
use crate::time::{file_stamp, now_ms};
use ferry_bundle::{BundleReader, EpochId, Opener, WriteOptions};
use ferry_model::{DatasetId, MemberId, VersionVector};
use ferry_store::{BundleSeen, QuarantineRow};
use ferry_sync::plan::{
    SnapshotPlan, acknowledged_by_all, after_snapshot, carry_beginnings, needs_snapshot,
    plan_export, plan_snapshot,
};
use ferry_sync::{Accept, Coverage, IngestError, IngestReport, Missing, Storage, Verdict};
use ferry_transport::{Disposition, MessageId, Transport};
use ferry_transport_dir::{DirTransport, SUFFIX};
use serde::Serialize;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What a transport is told of a message the node took, the same for every transport:
/// applied, known already, or kept to check later → `Processed` (the transport may file it
/// away); not kept (it cannot be checked yet and there is no room to keep it) → `Retry` (the
/// transport keeps it and offers it again); refused → `Rejected` (the node quarantined its
/// own copy; the transport files it away and never offers it again).
pub fn disposition_of(result: &FileResult) -> Disposition {
    match result {
        FileResult::Applied { .. }
        | FileResult::AlreadyApplied
        | FileResult::Skipped { .. }
        | FileResult::Waiting { kept: Some(_), .. } => Disposition::Processed,
        FileResult::Waiting {
            kept: None, reason, ..
        } => Disposition::Retry {
            reason: reason.clone(),
        },
        FileResult::Rejected { reason, .. } | FileResult::RefusedBefore { reason, .. } => {
            Disposition::Rejected {
                reason: reason.clone(),
            }
        }
    }
}

/// What became of one file given to `import`.
#[derive(Clone, Debug, Serialize)]
pub struct FileOutcome {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// What happened.
    pub result: FileResult,
}

/// The result of importing one file.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FileResult {
    /// Read and applied.
    Applied {
        /// Sender's label.
        sender: String,
        /// Commits new to this node.
        new: u64,
        /// Record changes applied because of it (its commits, and pending ones it
        /// completed), counting each record once per change; not counting ferry's own.
        records: u64,
        /// Commits this node already had.
        duplicates: u64,
        /// Commits waiting for earlier commits or their author's membership.
        waiting: u64,
        /// Whether a snapshot in it was installed (this laptop joined after the others had
        /// compacted their history).
        snapshot: bool,
        /// Things a person should know (a member's forked history, dropped bogus commits).
        warnings: Vec<String>,
    },
    /// This exact file was applied before.
    AlreadyApplied,
    /// This exact content was refused before (it is in quarantine); not counted again.
    RefusedBefore {
        /// Why it was refused.
        reason: String,
        /// The quarantined copy.
        quarantined: PathBuf,
    },
    /// Refused; nothing from it was applied.
    Rejected {
        /// Why, in one line.
        reason: String,
        /// The quarantined copy, if one could be made.
        quarantined: Option<PathBuf>,
    },
    /// It cannot be checked yet (this laptop lacks the sender's earlier changes or its
    /// membership); nothing from it was used. It is tried again after later imports: from
    /// a folder it stays where it is; from a transport it is kept in the home's `waiting/`.
    Waiting {
        /// What this laptop lacks, in words.
        reason: String,
        /// Where it is kept, when it came by a transport.
        kept: Option<PathBuf>,
        /// Its claimed sender and the last commit of it the bundle needs first: bundles are
        /// tried again in this order, so a chain of them applies in one round.
        #[serde(skip)]
        order: (u32, u64),
    },
    /// It can never be checked here (an old bundle whose sender's history this laptop
    /// received as a snapshot); nothing from it was used.
    Skipped {
        /// Why, in words.
        reason: String,
    },
}

/// What `import` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// One entry per file.
    pub files: Vec<FileOutcome>,
    /// Commits still pending (their dependencies are missing) after the import.
    pub pending: u64,
    /// What the pending and kept-aside changes wait for, per author.
    pub waiting: Vec<crate::node::WaitingChanges>,
    /// Bundle files of other datasets found in their own folders and left alone.
    pub other_datasets: u64,
    /// Bundles split into parts (by email) still waiting for their other parts.
    pub waiting_parts: Vec<String>,
    /// Entries of the folders read that were left alone: symbolic links, FIFOs, sockets,
    /// devices, folders reached twice; one entry each, with why.
    pub skipped: Vec<SkippedEntry>,
    /// The admin accepted another laptop as this member (one invitation used twice).
    pub refused_membership: Option<crate::rejoin::RefusedMembership>,
}

impl ImportReport {
    /// How many files were refused.
    pub fn rejected(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.result, FileResult::Rejected { .. }))
            .count()
    }
}

/// What `export` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportOutcome {
    /// The folder the bundles live in.
    pub folder: PathBuf,
    /// The bundle written, if one was needed: file, size, commits.
    pub written: Option<(PathBuf, u64, u64)>,
    /// The snapshot written for a member that lacks history compacted away here: file, size.
    pub snapshot: Option<(PathBuf, u64)>,
    /// Bundles removed because every member already holds their content.
    pub removed: Vec<String>,
    /// Bundles left on the medium.
    pub on_medium: usize,
}

/// What `sync` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    /// The import half.
    pub import: ImportReport,
    /// The export half.
    pub export: ExportOutcome,
    /// Commit bodies compacted away afterwards (every member holds them).
    pub compacted: u64,
}

/// What `sync --dry-run` or `export --dry-run` found: what the real command would do.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DryRun {
    /// The folder the bundles live in.
    pub folder: PathBuf,
    /// Bundles on the medium this laptop has not applied (a sync would import them).
    pub import: Vec<DryImport>,
    /// The bundle it would write, if one is needed.
    pub write: Option<DryWrite>,
    /// The size of the snapshot it would write (the admin, for members that lack history
    /// compacted away here), if one is needed.
    pub snapshot: Option<u64>,
    /// Whether an admin snapshot on the medium already serves members that need one.
    pub snapshot_on_medium: bool,
    /// Bundles it would remove because every member already holds their content.
    pub remove: Vec<String>,
    /// Every other known member.
    pub members: Vec<DryMember>,
}

/// A bundle a sync would import.
#[derive(Clone, Debug, Serialize)]
pub struct DryImport {
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The sender its header names (checked only when it is imported); `None` when the
    /// file does not start like a bundle of this dataset.
    pub sender: Option<String>,
}

/// The bundle an export would write.
#[derive(Clone, Debug, Serialize)]
pub struct DryWrite {
    /// Changes it carries (0: a receipt of what this laptop holds).
    pub changes: u64,
    /// Its exact size (it was encoded into a sink).
    pub bytes: u64,
}

/// One other member, as the dry run sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DryMember {
    /// Its label.
    pub label: String,
    /// Changes this laptop holds that it lacks.
    pub lacks: u64,
    /// How many of those the bundle this sync writes would carry.
    pub carried: u64,
    /// How many of those bundles already on the medium carry.
    pub on_medium: u64,
    /// Whether it lacks history compacted away here, and so needs the admin's snapshot.
    pub needs_snapshot: bool,
}

/// An export planned from this laptop's state and what the medium carries
/// ([`Node::plan_medium`]).
struct MediumPlan {
    folder: PathBuf,
    /// The bundle files on the medium, with what this node knows of each.
    on_medium: Vec<(MessageId, Option<BundleSeen>)>,
    peers: Vec<MemberId>,
    /// What each of `peers` holds, as far as this node knows.
    peer_vvs: Vec<VersionVector>,
    stored: VersionVector,
    compacted: VersionVector,
    /// Whether an admin snapshot on the medium serves members that need one.
    snapshot_on_medium: bool,
    /// The bundles to write, in order: `None` a snapshot, `Some(runs)` a bundle.
    to_write: Vec<Option<Vec<Coverage>>>,
    /// Commits the bundle carries only for laptops invited later (the beginnings of
    /// chains its changes depend on, [`carry_beginnings`]): not counted as its changes.
    beginnings: u64,
}

/// Changes in a planned bundle (`None`: a snapshot).
fn commits_in(kind: Option<&[Coverage]>) -> u64 {
    kind.iter()
        .flat_map(|r| r.iter())
        .map(|r| r.last - r.first + 1)
        .sum()
}

/// What writing a planned bundle is called in the progress display. Counted in bytes
/// written, as the compressor produces them: the changes are read, compressed and written
/// in one stream.
fn writing(kind: Option<&[Coverage]>) -> String {
    match (kind, commits_in(kind)) {
        (None, _) => "writing a snapshot".to_string(),
        (Some(_), 0) => "writing a receipt".to_string(),
        (Some(_), 1) => "exporting 1 change".to_string(),
        (Some(_), n) => format!("exporting {n} changes"),
    }
}

/// The bundles on a medium that may go: every member (`everyone`, this node included)
/// holds their commits and a newer bundle from the same sender (with a newer receipt)
/// stays. Bundles whose signature this node could not check (`None`) are never removed.
fn obsolete(
    on_medium: &[(MessageId, Option<BundleSeen>)],
    everyone: &[VersionVector],
) -> Vec<MessageId> {
    let seen: Vec<(&MessageId, &BundleSeen, &VersionVector)> = on_medium
        .iter()
        .filter_map(|(id, s)| {
            let s = s.as_ref()?;
            Some((id, s, s.receipt.as_ref()?))
        })
        .collect();
    let mut out = Vec::new();
    for &(id, s, receipt) in &seen {
        let superseded = seen.iter().any(|&(oid, o, newer)| {
            oid != id
                && o.sender == s.sender
                && newer.dominates(receipt)
                && (newer != receipt || oid > id)
        });
        // A snapshot may go once every member holds its state, or once a newer one from
        // the same sender (holding all of it) is on the medium.
        let snapshot_done = s.snapshot.as_ref().is_none_or(|state| {
            everyone.iter().all(|p| p.dominates(state))
                || seen.iter().any(|&(oid, o, _)| {
                    o.sender == s.sender
                        && o.snapshot.as_ref().is_some_and(|newer| {
                            newer.dominates(state) && (newer != state || oid > id)
                        })
                })
        });
        if superseded && snapshot_done && acknowledged_by_all(&s.coverage, everyone) {
            out.push(id.clone());
        }
    }
    out
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Format version.
    pub version: u8,
    /// The bundle's dataset (hex) and whether it is this node's.
    pub dataset: String,
    /// Whether the dataset is this node's.
    pub our_dataset: bool,
    /// Whether it is a plaintext bundle (signed, not encrypted), which import refuses
    /// unless told `--plaintext`.
    pub plaintext: bool,
    /// Sender number and label (no label for a bundle of another dataset: its numbers are
    /// not this dataset's members).
    pub sender: (u32, String),
    /// The runs of commits: (author label, first, last).
    pub runs: Vec<(String, u64, u64)>,
    /// Commits new to this node.
    pub new: u64,
    /// Commits this node already holds.
    pub duplicates: u64,
    /// Whether the sender's signature was checked and valid (the bundle is authentic).
    pub signature_checked: bool,
    /// What this node lacks before it can apply the bundle.
    pub missing: Vec<String>,
    /// Whether this exact file was already applied here.
    pub already_applied: bool,
    /// `None` if the bundle is intact and authentic as far as this node can tell; else why
    /// not.
    pub problem: Option<String>,
}

/// Most bundles kept in `waiting/` from one sender, and bytes in all (bundles that came by a
/// transport and cannot be checked yet). Beyond, the oldest is dropped.
const WAITING_PER_SENDER: usize = 64;
const WAITING_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes of copies kept in `quarantine/` (the oldest copies go first; every reason
/// stays recorded), and the free space always left on the disk.
const QUARANTINE_MAX: u64 = 64 * 1024 * 1024;
const QUARANTINE_DISK_MARGIN: u64 = 8 * 1024 * 1024;
/// Most copies kept in `quarantine/` (each with its note).
const QUARANTINE_COPIES: usize = 1024;
/// Room kept for one reason note beside a copy (its path and reason, cut).
const QUARANTINE_NOTE: u64 = 4096;
/// How long a bundle waits before it is given up (30 days).
const WAITING_MAX_AGE_MS: u64 = 30 * 86_400_000;

/// Reads a whole file to name it by content: the first 16 bytes of its BLAKE3 hash, hex.
pub(crate) fn content_name(path: &Path) -> io::Result<(String, u64)> {
    let mut f = open_regular(path)?;
    let mut h = blake3::Hasher::new();
    let n = io::copy(&mut f, &mut h)?;
    Ok((h.finalize().to_hex()[..32].to_string(), n))
}

/// Counts bytes read into a progress display, and hashes them when asked.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
    hasher: Option<std::rc::Rc<std::cell::RefCell<blake3::Hasher>>>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        if let Some(h) = &self.hasher {
            h.borrow_mut().update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Hashes what is written through it.
struct Hashing<'p, W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
    progress: &'p dyn Progress,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a file starts like an email (for a hint when it was refused as a bundle).
fn reads_like_email(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let n = open_regular(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    matches!(
        ferry_transport_email::classify(&head[..n]),
        ferry_transport_email::FileKind::Email
    )
}

/// A counted reader of the file at `path` and the hash of what it reads: `Err` when the file
/// cannot be opened, `Ok(Err)` when its bytes do not start like a bundle.
#[allow(clippy::type_complexity)]
fn open_counted<'p>(
    path: &Path,
    progress: &'p dyn Progress,
) -> Result<
    Result<
        (
            Opener<BufReader<Counting<'p, File>>>,
            Rc<RefCell<blake3::Hasher>>,
        ),
        IngestError<ferry_store::StoreError>,
    >,
    NodeError,
> {
    let file = open_regular(path).map_err(|e| NodeError::io("cannot open", path, e))?;
    let hasher = Rc::new(RefCell::new(blake3::Hasher::new()));
    let reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            progress,
            hasher: Some(hasher.clone()),
        },
    );
    Ok(BundleReader::open(reader)
        .map(|o| (o, hasher))
        .map_err(IngestError::from))
}

/// What the passes over one file came to.
enum Pass {
    Applied(Box<(IngestReport, ferry_sync::SettleReport)>),
    Verdict(Verdict),
    Refused(IngestError<ferry_store::StoreError>),
    /// The file could not be read now (gone, unreadable, changed while read): refused this
    /// time, but not recorded as refused content, so a good copy still applies later.
    Unreadable(String),
}

/// Plain-language reason for a refused bundle. A damaged or cut-off file (which is what a
/// failed chunk, a broken header or a missing signature almost always is) says so first, and
/// what to do; the format's own detail follows, short.
fn reason<E: std::error::Error>(e: &IngestError<E>) -> String {
    use ferry_bundle::BundleError as B;
    let damaged = |detail: String| {
        format!(
            "the bundle is damaged or truncated (a bad stick or an incomplete copy): copy it again from the sender, or ask the sender to send it again (detail: {detail})"
        )
    };
    match e {
        IngestError::Bundle(B::Decrypt { chunk }) => damaged(format!(
            "chunk {chunk} failed authentication; a bundle made with another dataset key fails the same way"
        )),
        IngestError::Bundle(b @ (B::BadHeader | B::NoSignature | B::Decompress(_))) => {
            damaged(b.to_string())
        }
        IngestError::Bundle(b) => b.to_string(),
        other => other.to_string(),
    }
}

impl Node {
    /// The folder on a medium where this dataset's bundles live: `ROOT/ferry/DATASET_ID`.
    pub fn bundle_folder(&self, root: &Path) -> PathBuf {
        root.join("ferry").join(self.id.dataset.to_hex())
    }

    /// Applies bundle files (or every bundle file under folders). Files that are refused are
    /// quarantined and reported; the good ones still apply.
    pub fn import(
        &mut self,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<ImportReport, NodeError> {
        self.import_with(paths, progress, Accept::default())
    }

    /// [`Node::import`], accepting plaintext bundles when `accept` says so (`ferry import
    /// --plaintext`).
    pub fn import_with(
        &mut self,
        paths: &[PathBuf],
        progress: &dyn Progress,
        accept: Accept,
    ) -> Result<ImportReport, NodeError> {
        let mut files: Vec<Found> = Vec::new();
        let mut report = ImportReport::default();
        let ours = self.id.dataset.to_hex();
        let mut elsewhere = Elsewhere::default();
        for p in paths {
            collect(p, &ours, &mut files, &mut report.skipped, &mut elsewhere)?;
        }
        report.other_datasets = elsewhere.datasets.values().sum();
        if files.is_empty() && !elsewhere.ours {
            // The wrong folder (or an empty one): say what is there instead of nothing.
            return Err(NodeError::NothingToImport(Box::new(NothingToImport {
                paths: paths.to_vec(),
                dataset: (ours, self.id.dataset_name.clone()),
                other_files: (
                    elsewhere.files,
                    elsewhere
                        .examples
                        .iter()
                        .map(|p| {
                            p.file_name()
                                .unwrap_or(p.as_os_str())
                                .to_string_lossy()
                                .into_owned()
                        })
                        .collect(),
                ),
                other_datasets: elsewhere.datasets.into_iter().collect(),
                skipped: (
                    report.skipped.len(),
                    report
                        .skipped
                        .first()
                        .map(|e| format!("{} ({})", e.path.display(), e.reason)),
                ),
            })));
        }
        // The admins' bundles first, the founder's before the others': a removal,
        // promotion or new key they carry then counts before the bundles of others on the
        // same stick are read (a removed laptop's later bundles are refused rather than
        // applied first).
        let admins: Vec<MemberId> = self.grant_admins()?.into_iter().collect();
        files.sort_by_key(|f| admin_rank(&f.path, &admins));
        // And the key grants in any file's header before anything applies: a removal they
        // announce counts before the removed laptop's later bundles on the same medium.
        for f in &files {
            if let Some((header, _)) = header_of(&f.path) {
                self.learn_keys(&header)?;
            }
        }
        let mut waiting: Vec<(usize, Found)> = Vec::new();
        let mut applied_any = false;
        for found in files {
            if is_saved_email(&found.origin) {
                // A saved email or part attachment (by its name): its bundle comes out
                // through the email transport's reassembly.
                self.import_saved(&found, &mut report, progress)?;
                continue;
            }
            // Anything else under a bundle name is a bundle, or is refused.
            let outcome = self.import_found(&found, progress, accept)?;
            applied_any |= matches!(outcome.result, FileResult::Applied { .. });
            if matches!(outcome.result, FileResult::Waiting { .. }) {
                waiting.push((report.files.len(), found));
            }
            report.files.push(outcome);
        }
        // Bundles that could not be checked yet may be checkable now that others applied
        // (files on a stick come in any order): try them again until nothing moves.
        while applied_any && !waiting.is_empty() {
            applied_any = false;
            // A sender's bundles in the order they build on each other, whatever the files
            // are called: one round applies a whole chain.
            let order = |i: &usize| match &report.files[*i].result {
                FileResult::Waiting { order, .. } => *order,
                _ => (0, 0),
            };
            waiting.sort_by_key(|(i, _)| order(i));
            for (i, found) in std::mem::take(&mut waiting) {
                let outcome = self.import_found(&found, progress, accept)?;
                applied_any |= matches!(outcome.result, FileResult::Applied { .. });
                if matches!(outcome.result, FileResult::Waiting { .. }) {
                    waiting.push((i, found));
                }
                report.files[i] = outcome;
            }
        }
        if report
            .files
            .iter()
            .any(|f| matches!(f.result, FileResult::Applied { .. }))
        {
            self.retry_waiting(progress)?;
        }
        let tx = self.read()?;
        let stored = tx.stored()?;
        let applied = tx.applied()?;
        report.pending = stored.total().saturating_sub(applied.total());
        drop(tx);
        report.waiting = self.waiting_changes()?;
        report.refused_membership = self.membership_refused()?;
        Ok(report)
    }

    /// Imports one bundle file found by [`collect`]. A file refused because it does not
    /// start like a bundle but reads like an email gets a hint in its line.
    fn import_found(
        &mut self,
        found: &Found,
        progress: &dyn Progress,
        accept: Accept,
    ) -> Result<FileOutcome, NodeError> {
        let mut outcome = self.import_file_as(&found.path, &found.origin, progress, accept)?;
        if let FileResult::Rejected { reason, .. } = &mut outcome.result {
            if reads_like_email(&found.path) {
                reason.push_str(
                    "; it reads like an email: ferry takes saved emails only from files named .eml",
                );
            }
        }
        Ok(outcome)
    }

    /// Imports a saved email (`.eml`) or part attachment (`.ferrypart`): whole bundles in it
    /// apply, parts wait for the rest. It was given under a ferry name, so one that holds
    /// nothing of ferry's, or a damaged attachment, is refused and quarantined.
    fn import_saved(
        &mut self,
        found: &Found,
        report: &mut ImportReport,
        progress: &dyn Progress,
    ) -> Result<(), NodeError> {
        let outcome = |bytes, result| FileOutcome {
            path: found.origin.clone(),
            bytes,
            result,
        };
        let (name, bytes) = match content_name(&found.path) {
            Ok(x) => x,
            Err(e) => {
                report.files.push(outcome(
                    0,
                    FileResult::Rejected {
                        reason: format!("cannot read the file: {}", ferry_transport::plain_io(&e)),
                        quarantined: None,
                    },
                ));
                return Ok(());
            }
        };
        // The same content refused before is not refused (and counted as an error) again.
        if let Some(q) = self.read()?.quarantined(&name)? {
            report.files.push(outcome(
                bytes,
                FileResult::RefusedBefore {
                    reason: q.reason,
                    quarantined: PathBuf::from(q.stored_as),
                },
            ));
            return Ok(());
        }
        let saved = self.import_saved_email(&found.path, progress)?;
        let r = saved.report;
        let held_bundles = !r.import.files.is_empty();
        report.files.extend(r.import.files);
        for w in r.incomplete {
            let (bundle, have, len) = (w.name, w.have, w.len);
            let line = format!("bundle {bundle}: {have} of {len} bytes received by email so far");
            if !report.waiting_parts.contains(&line) {
                report.waiting_parts.push(line);
            }
        }
        let refusal = if !r.damaged.is_empty() {
            let reasons: Vec<String> = r
                .damaged
                .iter()
                .filter_map(|d| match &d.result {
                    FileResult::Rejected { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
                .collect();
            Some(reasons.join("; "))
        } else if held_bundles || saved.parts_waiting > 0 {
            None
        } else if saved.seen_before > 0 {
            report
                .files
                .push(outcome(bytes, FileResult::AlreadyApplied));
            None
        } else if saved.other_dataset > 0 {
            report.files.push(outcome(
                bytes,
                FileResult::Skipped {
                    reason: "it holds bundles of another dataset only; nothing from it is used"
                        .into(),
                },
            ));
            None
        } else {
            Some(
                "it holds no ferry bundle or part (a file named .eml or .ferrypart must be an email or attachment saved from ferry)"
                    .to_string(),
            )
        };
        if let Some(why) = refusal {
            let quarantined = self.quarantine(&found.path, &found.origin, &name, &why)?;
            if r.damaged.is_empty() {
                report.files.push(outcome(
                    bytes,
                    FileResult::Rejected {
                        reason: why,
                        quarantined,
                    },
                ));
            } else {
                for mut d in r.damaged {
                    d.path = found.origin.clone();
                    d.bytes = bytes;
                    if let FileResult::Rejected { quarantined: q, .. } = &mut d.result {
                        *q = quarantined.clone();
                    }
                    report.files.push(d);
                }
            }
        }
        Ok(())
    }

    /// Takes one message a mailbox transport offers (an email's bundle, an SMS's): imports
    /// it like a file from a stick ([`Node::import_message`]) and tells the transport what
    /// became of it by the one rule every transport is held to ([`disposition_of`], checked
    /// by the transport conformance suite). `None` when another process settled it
    /// meanwhile.
    pub fn take_message(
        &mut self,
        transport: &mut dyn Transport,
        info: &ferry_transport::MessageInfo,
        origin: &str,
        progress: &dyn Progress,
    ) -> Result<Option<FileOutcome>, NodeError> {
        let outcome = {
            let mut body = match transport.open(&info.id) {
                Ok(b) => b,
                Err(ferry_transport::TransportError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            self.import_message(&mut body, origin, progress)?
        };
        transport.settle(&info.id, &disposition_of(&outcome.result))?;
        Ok(Some(outcome))
    }

    /// Imports one bundle arriving by a transport (an email, a radio session, …): it is
    /// kept in a file in the home folder while it is applied, and reported as `origin`. A
    /// sealed bundle that cannot be checked yet is kept in `waiting/` (bounded) and tried
    /// again after later imports.
    pub fn import_message(
        &mut self,
        body: &mut dyn Read,
        origin: &str,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, NodeError> {
        self.import_message_with(body, origin, progress, Accept::default())
    }

    /// [`Node::import_message`] with an explicit acceptance policy (the serial exchange
    /// accepts plaintext bundles when its user said `--plaintext`).
    pub fn import_message_with(
        &mut self,
        body: &mut dyn Read,
        origin: &str,
        progress: &dyn Progress,
        accept: Accept,
    ) -> Result<FileOutcome, NodeError> {
        // Locked while it exists, so a sweep by another process leaves it alone; removed
        // when `staged` is dropped, whatever happens.
        let staged = Staged::create(&self.home.inbox())?;
        let path = staged.path();
        let mut f = staged.file();
        io::copy(body, &mut f).map_err(|e| NodeError::io("cannot write", path, e))?;
        f.sync_all()
            .map_err(|e| NodeError::io("cannot write", path, e))?;
        let mut outcome = self.import_file_as(path, Path::new(origin), progress, accept)?;
        if let FileResult::Waiting { reason, kept, .. } = &mut outcome.result {
            *kept = self.keep_waiting(path, origin, reason)?;
        }
        if matches!(outcome.result, FileResult::Applied { .. }) {
            self.retry_waiting(progress)?;
        }
        Ok(outcome)
    }

    /// Keeps a sealed bundle that cannot be checked yet in `waiting/`, within the limits
    /// (per sender and in all; the oldest goes first). Plaintext bundles are not kept:
    /// anyone can write one.
    fn keep_waiting(
        &mut self,
        staged: &Path,
        origin: &str,
        why: &str,
    ) -> Result<Option<PathBuf>, NodeError> {
        let (sender, plaintext) = match File::open(staged)
            .ok()
            .and_then(|f| BundleReader::open(BufReader::new(f)).ok())
        {
            Some(o) => (o.header().sender, o.is_plaintext()),
            None => return Ok(None),
        };
        if plaintext {
            return Ok(None);
        }
        let (name, bytes) =
            content_name(staged).map_err(|e| NodeError::io("cannot read", staged, e))?;
        if bytes > WAITING_BYTES {
            return Ok(None);
        }
        let dir = self.home.root().join("waiting");
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io("cannot create", &dir, e))?;
        let kept = dir.join(format!("{name}{SUFFIX}"));
        let now = now_ms();
        let tx = self.store.transaction(now)?;
        let mut rows = tx.waiting()?;
        if rows.iter().any(|r| r.name == name) {
            return Ok(Some(kept));
        }
        // Make room: the oldest of this sender beyond its share, then the oldest overall.
        let mut drop = Vec::new();
        let mine: Vec<_> = rows.iter().filter(|r| r.sender == sender).collect();
        if mine.len() >= WAITING_PER_SENDER {
            drop.push(mine[0].name.clone());
        }
        rows.retain(|r| !drop.contains(&r.name));
        let mut total: u64 = rows.iter().map(|r| r.bytes).sum::<u64>() + bytes;
        for r in &rows {
            if total <= WAITING_BYTES {
                break;
            }
            total -= r.bytes;
            drop.push(r.name.clone());
        }
        for d in &drop {
            tx.remove_waiting(d)?;
        }
        std::fs::copy(staged, &kept).map_err(|e| NodeError::io("cannot keep", &kept, e))?;
        tx.add_waiting(&ferry_store::WaitingRow {
            name: name.clone(),
            path: kept.display().to_string(),
            origin: origin.to_string(),
            sender,
            bytes,
            at_ms: now,
            why: why.to_string(),
        })?;
        tx.commit()?;
        for d in drop {
            let _ = std::fs::remove_file(dir.join(format!("{d}{SUFFIX}")));
        }
        Ok(Some(kept))
    }

    /// Tries the bundles in `waiting/` again (after something was applied), until none
    /// moves; drops those that waited 30 days. Returns what became of each that moved.
    pub fn retry_waiting(
        &mut self,
        progress: &dyn Progress,
    ) -> Result<Vec<FileOutcome>, NodeError> {
        let mut done = Vec::new();
        loop {
            let rows = self.read()?.waiting()?;
            let mut moved = false;
            let now = now_ms();
            for row in rows {
                let path = PathBuf::from(&row.path);
                let expired = now.saturating_sub(row.at_ms) > WAITING_MAX_AGE_MS;
                let outcome = if expired || !path.is_file() {
                    None
                } else {
                    Some(self.import_file_as(
                        &path,
                        Path::new(&row.origin),
                        progress,
                        Accept::default(),
                    )?)
                };
                if let Some(o) = &outcome {
                    if matches!(o.result, FileResult::Waiting { .. }) {
                        continue;
                    }
                    moved |= matches!(o.result, FileResult::Applied { .. });
                }
                let tx = self.store.transaction(now)?;
                tx.remove_waiting(&row.name)?;
                tx.commit()?;
                let _ = std::fs::remove_file(&path);
                done.extend(outcome);
            }
            if !moved {
                return Ok(done);
            }
        }
    }

    /// Imports one file: names it by content, skips it if it was applied or refused before,
    /// then runs the engine's gate ([`ferry_sync::Engine::authenticate`]) and, only for an
    /// authentic bundle, applies it ([`ferry_sync::Engine::ingest`] and `settle`), all in
    /// one transaction. `origin` is what the file is called in reports.
    fn import_file_as(
        &mut self,
        path: &Path,
        origin: &Path,
        progress: &dyn Progress,
        accept: Accept,
    ) -> Result<FileOutcome, NodeError> {
        // A large bundle is applied in steps; another ferry writing to this home between
        // two of them stops the import (what was applied stays): it goes on from there.
        let mut tries = 0;
        let outcome = loop {
            match self.import_one(path, origin, progress, accept) {
                Err(NodeError::Store(ferry_store::StoreError::Interleaved)) if tries < 3 => {
                    tries += 1
                }
                other => break other?,
            }
        };
        // A removal another admin made, just applied here: the founding laptop moves the
        // dataset to a new key before anything it writes next is planned (SPEC §15).
        if matches!(outcome.result, FileResult::Applied { .. }) {
            self.rekey_if_unsafe()?;
        }
        Ok(outcome)
    }

    /// [`Node::import_file_as`], without what follows an applied bundle.
    fn import_one(
        &mut self,
        path: &Path,
        origin: &Path,
        progress: &dyn Progress,
        accept: Accept,
    ) -> Result<FileOutcome, NodeError> {
        let (name, bytes) = match content_name(path) {
            Ok(x) => x,
            Err(e) => {
                return Ok(FileOutcome {
                    path: origin.to_path_buf(),
                    bytes: 0,
                    result: FileResult::Rejected {
                        reason: format!("cannot read the file: {}", ferry_transport::plain_io(&e)),
                        quarantined: None,
                    },
                });
            }
        };
        let done = |result| FileOutcome {
            path: origin.to_path_buf(),
            bytes,
            result,
        };
        if self.read()?.bundle_seen(&name)?.is_some() {
            return Ok(done(FileResult::AlreadyApplied));
        }
        let file = format!("{name}{SUFFIX}");
        if !self
            .refused_own_bundles(std::iter::once(file.as_str()))?
            .is_empty()
        {
            return Ok(done(FileResult::Skipped {
                reason: "written by this laptop before it joined again (under the membership the admin refused); a sync removes it from the stick".into(),
            }));
        }
        // The same content refused before is not refused (and counted as an error) again.
        if let Some(q) = self.read()?.quarantined(&name)? {
            return Ok(done(FileResult::RefusedBefore {
                reason: q.reason,
                quarantined: PathBuf::from(q.stored_as),
            }));
        }
        progress.begin(
            &format!(
                "importing {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            Some(2 * bytes),
            Unit::Bytes,
        );
        // Each pass hashes what it actually reads, to be sure the file did not change since
        // it was named. Opening fails only for the file system (an error) or for bytes that
        // do not start like a bundle (a refusal).
        let open = |progress| open_counted(path, progress);
        let read_all = |hasher: &Rc<RefCell<blake3::Hasher>>| {
            hasher.borrow().finalize().to_hex()[..32] == name
        };
        let changed = || {
            IngestError::Bundle(ferry_bundle::BundleError::Io(io::Error::other(
                "the file changed while it was being read; import it again",
            )))
        };
        // A grant in the header gives this laptop a new key epoch before it reads on.
        if let Ok(Ok((opener, _))) = open(&crate::NoProgress) {
            self.learn_keys(opener.header())?;
        }
        let now = now_ms();
        let labels = self.labels()?;
        let engine = self.engine.clone();
        let key = self.keys.clone();
        let mut tx = self.store.transaction(now)?;
        let result: Result<Pass, NodeError> = (|| {
            let (opener, hasher) = match open(progress) {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Ok(Pass::Refused(e)),
                Err(e) => return Ok(Pass::Unreadable(e.to_string())),
            };
            let auth = match engine.authenticate(&tx, opener, &key, accept) {
                Ok(Verdict::Authentic(auth)) if read_all(&hasher) => auth,
                Ok(Verdict::Authentic(_)) => return Ok(Pass::Refused(changed())),
                Ok(other) => return Ok(Pass::Verdict(other)),
                Err(e) => return Ok(Pass::Refused(e)),
            };
            let (opener, hasher) = match open(progress) {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Ok(Pass::Refused(e)),
                Err(e) => return Ok(Pass::Unreadable(e.to_string())),
            };
            let applied = engine
                .ingest(&mut tx, opener, &key, &auth, now)
                .and_then(|r| engine.settle(&mut tx, now).map(|s| (r, s)))
                .and_then(|x| {
                    if read_all(&hasher) {
                        Ok(x)
                    } else {
                        Err(changed())
                    }
                });
            Ok(match applied {
                Ok(x) => Pass::Applied(Box::new(x)),
                Err(e) => Pass::Refused(e),
            })
        })();
        progress.end();
        let pass = result?;
        let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
        match pass {
            Pass::Applied(x) => {
                let (r, settled) = *x;
                tx.put_bundle_seen(&BundleSeen {
                    name,
                    sender: r.sender,
                    coverage: r.runs.clone(),
                    receipt: r.receipt.clone(),
                    snapshot: r.snapshot_state.clone(),
                    bytes,
                })?;
                tx.delete_meta(ferry_store::UNSETTLED)?;
                tx.commit()?;
                let labels = self.labels()?;
                let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
                let sender = label(r.sender);
                let mut warnings: Vec<String> = r
                    .forks
                    .iter()
                    .map(|(m, seq)| {
                        format!(
                            "{} has two different versions of its change {seq} (a laptop restored from an old backup, cloned, or an invitation used twice); nothing more from it is accepted, and every laptop will be told",
                            label(*m)
                        )
                    })
                    .collect();
                warnings.extend(r.skipped_runs.iter().map(|(run, why)| {
                    format!(
                        "changes {}–{} of {} relayed in it were left out: {why}",
                        run.first,
                        run.last,
                        label(run.author)
                    )
                }));
                if r.snapshot_ignored {
                    warnings.push(format!(
                        "it carries a snapshot from {sender}; only the admin's snapshots are installed, so it was ignored"
                    ));
                }
                warnings.extend(settled.dropped.iter().map(|(m, first, last, why)| {
                    format!(
                        "changes {first}–{last} of {} kept from an earlier bundle were dropped: {why}",
                        label(*m)
                    )
                }));
                Ok(done(FileResult::Applied {
                    sender,
                    new: r.new,
                    records: r.records + settled.records,
                    duplicates: r.duplicates,
                    waiting: r.stashed,
                    snapshot: r.snapshot,
                    warnings,
                }))
            }
            Pass::Verdict(Verdict::NotYet { sender, missing }) => {
                drop(tx);
                let order = match &missing {
                    Missing::Membership(_) | Missing::Inviter { .. } => (sender.0, 0),
                    Missing::Commits { to, .. } => (sender.0, *to),
                };
                let reason = match missing {
                    Missing::Membership(m) => format!(
                        "it comes from {}, whose joining has not reached this laptop yet",
                        label(m)
                    ),
                    Missing::Commits { author, from, to } => format!(
                        "this laptop lacks changes {from}–{to} of {} that its signature covers",
                        label(author)
                    ),
                    Missing::Inviter { member, inviter } => format!(
                        "{} was invited by {}, an admin whose promotion has not reached this laptop yet",
                        label(member),
                        label(inviter)
                    ),
                };
                Ok(done(FileResult::Waiting {
                    reason,
                    kept: None,
                    order,
                }))
            }
            Pass::Verdict(Verdict::Obsolete { sender }) => {
                drop(tx);
                Ok(done(FileResult::Skipped {
                    reason: format!(
                        "an old bundle of {} that can no longer be checked here (this laptop received that part of the history as a snapshot); nothing from it is used",
                        label(sender)
                    ),
                }))
            }
            Pass::Verdict(Verdict::Authentic(_)) => unreachable!("authentic bundles are applied"),
            // Sealed with a key this laptop will get from the admin: read once it has it;
            // unless this laptop was removed, which it remembers.
            // Its author was invited by an admin this laptop does not know of yet.
            Pass::Refused(e @ IngestError::InviterUnknown { .. }) => {
                drop(tx);
                Ok(done(FileResult::Waiting {
                    reason: e.to_string(),
                    kept: None,
                    order: (u32::MAX, 0),
                }))
            }
            // Refused on a key grant's word alone (the removal record has not arrived): kept
            // aside, not quarantined, in case the grant turns out not to count (its signer
            // removed before it signed it); the record, when it comes, refuses it for good.
            Pass::Refused(e @ IngestError::Removed { .. }) if matches!(&e, IngestError::Removed { reason, .. } if reason.is_empty()) =>
            {
                drop(tx);
                Ok(done(FileResult::Waiting {
                    reason: e.to_string(),
                    kept: None,
                    order: (u32::MAX, 0),
                }))
            }
            // Compressed with a dictionary of the dataset's that has not arrived here: read
            // once it has (bundles/SPEC.md §18).
            Pass::Refused(e @ IngestError::Bundle(ferry_bundle::BundleError::NoDictionary(_))) => {
                drop(tx);
                Ok(done(FileResult::Waiting {
                    reason: e.to_string(),
                    kept: None,
                    order: (u32::MAX, 0),
                }))
            }
            Pass::Refused(e @ IngestError::NoEpochKey { .. }) => {
                drop(tx);
                if let Some(line) = self.removed_here()? {
                    return Ok(done(FileResult::Skipped { reason: line }));
                }
                Ok(done(FileResult::Waiting {
                    reason: e.to_string(),
                    kept: None,
                    order: (u32::MAX, 0),
                }))
            }
            // This laptop was removed: the bundle is for the others, and stays where it is.
            Pass::Refused(e @ IngestError::RemovedHere { cutoff, at_ms }) => {
                drop(tx);
                // (A grant of member 1's says so; a removed or demoted founding laptop's
                // word removes nobody: the bundle waits for a key like any other.)
                if !self.admins()?.contains(&MemberId::ADMIN) || self.founder_removed()? {
                    let epoch = header_of(path).map_or(EpochId::ZERO, |(h, _)| h.epoch_id());
                    return Ok(done(FileResult::Waiting {
                        reason: IngestError::<NodeError>::NoEpochKey { epoch }.to_string(),
                        kept: None,
                        order: (u32::MAX, 0),
                    }));
                }
                self.remember_removed(cutoff, at_ms)?;
                Ok(done(FileResult::Skipped {
                    reason: e.to_string(),
                }))
            }
            Pass::Refused(IngestError::Storage(e)) => Err(e.into()),
            Pass::Unreadable(why) => {
                drop(tx);
                Ok(done(FileResult::Rejected {
                    reason: why,
                    quarantined: None,
                }))
            }
            // A read error or a file that changed under the reader says nothing about the
            // content: refused now, not recorded as refused.
            Pass::Refused(IngestError::Bundle(ferry_bundle::BundleError::Io(e))) => {
                drop(tx);
                Ok(done(FileResult::Rejected {
                    reason: format!("cannot read it now: {}", ferry_transport::plain_io(&e)),
                    quarantined: None,
                }))
            }
            Pass::Refused(e) => {
                drop(tx);
                if let IngestError::Fork {
                    evidence: Some(ev), ..
                } = &e
                {
                    // Recorded on its own: the bundle is refused, the evidence is kept, and it
                    // travels to every member with this laptop's next bundle.
                    let now = now_ms();
                    let mut tx = self.store.transaction(now)?;
                    self.engine.record_fork(&mut tx, ev, now)?;
                    tx.commit()?;
                } else if let IngestError::Fork { author, seq, .. } = &e {
                    let now = now_ms();
                    let mut tx = self.store.transaction(now)?;
                    self.engine.freeze(&mut tx, *author, *seq)?;
                    tx.commit()?;
                }
                let why = reason(&e);
                let quarantined = self.quarantine(path, origin, &name, &why)?;
                Ok(done(FileResult::Rejected {
                    reason: why,
                    quarantined,
                }))
            }
        }
    }

    /// Quarantines refused input: records why (always), and keeps a copy in the home's
    /// `quarantine/` with a `.reason.txt` beside it when it can — within the folder's limit
    /// (the oldest copies go first), with room left on the disk. A copy that cannot be made
    /// never stops anything: the reason is recorded and the original stays where it was.
    /// Returns the copy, if one was kept. (`path` is the file to copy, `origin` where it came
    /// from, `name` its content name.)
    pub(crate) fn quarantine(
        &mut self,
        path: &Path,
        origin: &Path,
        name: &str,
        why: &str,
    ) -> Result<Option<PathBuf>, NodeError> {
        // The same refused content is recorded once.
        if let Some(q) = self.read()?.quarantined(name)? {
            return Ok((!q.stored_as.is_empty()).then(|| PathBuf::from(q.stored_as)));
        }
        let now = now_ms();
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let (stored, note) = match self.keep_quarantine_copy(path, origin, name, why, bytes, now) {
            Ok(p) => (Some(p), String::new()),
            Err(e) => (None, e),
        };
        let tx = self.store.transaction(now)?;
        tx.add_quarantine(&QuarantineRow {
            at_ms: now,
            source: origin.display().to_string(),
            stored_as: stored
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason: format!("{why}{note}"),
            name: name.to_string(),
            bytes,
        })?;
        tx.commit()?;
        Ok(stored)
    }

    /// Copies refused input into `quarantine/`, making room by dropping the oldest copies
    /// (their reasons stay recorded). `Err` says, as a clause for the reason, why no copy
    /// was kept; nothing half-copied is left behind.
    fn keep_quarantine_copy(
        &mut self,
        path: &Path,
        origin: &Path,
        name: &str,
        why: &str,
        bytes: u64,
        now: u64,
    ) -> Result<PathBuf, String> {
        if bytes > QUARANTINE_MAX / 4 {
            return Err(format!(
                " (no copy kept: {} is larger than the quarantine keeps)",
                crate::human_bytes(bytes)
            ));
        }
        let dir = self.home.quarantine();
        std::fs::create_dir_all(&dir)
            .and_then(|_| crate::home::private_dir(&dir).map_err(io::Error::other))
            .map_err(|e| format!(" (no copy kept: {e})"))?;
        // Room in the folder: drop the oldest copies (and their notes) beyond the limit,
        // counting what the folder really holds.
        // Only the rows that still have a copy (at most QUARANTINE_COPIES of them), so the work
        // per refusal does not grow with the number of refusals ever recorded.
        let rows = self
            .read()
            .map_err(|e| format!(" (no copy kept: {e})"))?
            .quarantine_copies()
            .unwrap_or_default();
        let size_of = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.len());
        let mut total: u64 = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0);
        // This copy and its note (a few hundred bytes at most).
        let needed = bytes + QUARANTINE_NOTE;
        let mut copies = rows.len();
        for r in &rows {
            if total + needed <= QUARANTINE_MAX && copies < QUARANTINE_COPIES {
                break;
            }
            copies -= 1;
            let copy = PathBuf::from(&r.stored_as);
            let note = PathBuf::from(format!("{}.reason.txt", r.stored_as));
            let freed = size_of(&copy) + size_of(&note);
            let _ = std::fs::remove_file(&copy);
            let _ = std::fs::remove_file(&note);
            if let Ok(tx) = self.store.transaction(now) {
                if tx.forget_quarantine_copy(&r.stored_as).is_ok() {
                    let _ = tx.commit();
                }
            }
            total = total.saturating_sub(freed);
        }
        if total + needed > QUARANTINE_MAX {
            return Err(" (no copy kept: the quarantine folder is full)".into());
        }
        // Room on the disk: keep a margin so that recording reasons always works.
        let free = fs4::available_space(&dir).unwrap_or(u64::MAX);
        if free < bytes.saturating_add(QUARANTINE_DISK_MARGIN) {
            return Err(" (no copy kept: the disk is nearly full)".into());
        }
        // A short, safe file name whatever the original was called.
        let original: String = origin
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_control() || c == '/' || c == '\\' {
                    '_'
                } else {
                    c
                }
            })
            .take(60)
            .collect();
        let stored = dir.join(format!("{}-{name}-{original}", file_stamp(now)));
        // Opened like any file on a medium: never a link, never blocking on a FIFO.
        let copied = open_regular(path)
            .and_then(|mut src| io::copy(&mut src, &mut File::create(&stored)?))
            .and_then(|_| {
                let mut note = format!(
                    "file: {}\nrefused: {}\nreason: {why}\n",
                    origin.display(),
                    crate::time::format_utc(now)
                );
                if note.len() as u64 > QUARANTINE_NOTE {
                    let mut cut = QUARANTINE_NOTE as usize - 4;
                    while !note.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    note.truncate(cut);
                    note.push_str("…\n");
                }
                std::fs::write(format!("{}.reason.txt", stored.display()), note)
            });
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&stored);
            let _ = std::fs::remove_file(format!("{}.reason.txt", stored.display()));
            return Err(format!(" (no copy kept: {e})"));
        }
        Ok(stored)
    }

    /// Plans an export to `root` without writing anything: what the medium carries, what
    /// each member holds, and the bundles to write. [`Node::export`] writes exactly this
    /// plan and [`Node::dry_run`] reports it, so the two cannot disagree.
    fn plan_medium(&mut self, root: &Path) -> Result<MediumPlan, NodeError> {
        let folder = self.bundle_folder(root);
        check_bundle_folder(root, &folder)?;
        let mut transport = DirTransport::new(&folder);
        let me = self.id.me;
        // What the medium already carries (only bundles this node has read or written
        // count: a file it cannot vouch for must not stop it from writing).
        let mut on_medium: Vec<(MessageId, Option<BundleSeen>)> = Vec::new();
        for info in transport.list()? {
            let path = folder.join(&info.id.0);
            let seen = match content_name(&path) {
                Ok((name, _)) => self.read()?.bundle_seen(&name)?,
                Err(_) => None,
            };
            on_medium.push((info.id, seen));
        }
        let peers = self.known_peers()?;
        let (stored, peer_vvs) = {
            let tx = self.read()?;
            let vvs = peers
                .iter()
                .map(|&p| tx.peer(p))
                .collect::<Result<Vec<_>, _>>()?;
            (ferry_sync::sendable(&tx, me)?, vvs)
        };
        // A removed (or cancelled) member's bundles carry nothing for the others: they
        // refuse them whole, also the other members' changes they relay.
        let gone = crate::epochs::gone_members(&mut self.read()?)?;
        let carried: Vec<Coverage> = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .filter(|s| !gone.contains(&s.sender))
            .flat_map(|s| s.coverage.iter().copied())
            .collect();
        let compacted = self.compacted()?;
        // A member that lacks history compacted away here needs a snapshot. Only the admin
        // writes one (SPEC §4.1: readers ignore anyone else's), and only when no admin
        // snapshot on the medium still holds everything compacted here: a member away for
        // weeks costs one snapshot on the stick, not one per sync.
        let admin_snapshots: Vec<&VersionVector> = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .filter(|s| s.sender == MemberId::ADMIN)
            .filter_map(|s| s.snapshot.as_ref())
            .collect();
        let applied = self.read()?.applied()?;
        let SnapshotPlan {
            write: write_snapshot,
            on_its_way,
        } = plan_snapshot(
            me == MemberId::ADMIN,
            &peer_vvs,
            &compacted,
            &admin_snapshots,
            &applied,
        );
        let serving = on_its_way.is_some() && !write_snapshot;
        let planned_for = after_snapshot(&peer_vvs, &compacted, on_its_way.as_ref());
        let runs = plan_export(&stored, &planned_for, &carried, &compacted);
        // A laptop invited after this bundle is written can apply it only with the joins
        // (and other small beginnings) its content depends on.
        let beginnings = self.engine.clone().beginnings(&self.read()?, &runs)?;
        let content = commits_in(Some(&runs));
        let runs = carry_beginnings(&runs, &beginnings, &carried);
        let beginnings = commits_in(Some(&runs)) - content;
        let receipt_present = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .any(|s| s.sender == me && s.receipt.as_ref() == Some(&stored));
        let mut to_write = Vec::new();
        if write_snapshot {
            to_write.push(None);
        }
        if !runs.is_empty() || !receipt_present {
            to_write.push(Some(runs));
        }
        Ok(MediumPlan {
            folder,
            on_medium,
            peers,
            peer_vvs,
            stored,
            compacted,
            snapshot_on_medium: serving,
            to_write,
            beginnings,
        })
    }

    /// Writes what the other members still need into `root` (a stick, a shared folder), and
    /// removes bundles there whose content every member already holds.
    pub fn export(
        &mut self,
        root: &Path,
        progress: &dyn Progress,
    ) -> Result<ExportOutcome, NodeError> {
        // (Not in the plan: a dry run trains nothing; the dictionary, when one is due, is
        // one more change in the bundle written.)
        self.train_dictionary()?;
        let MediumPlan {
            folder,
            mut on_medium,
            peer_vvs,
            stored,
            to_write,
            beginnings,
            ..
        } = self.plan_medium(root)?;
        let mut transport = DirTransport::new(&folder);
        let me = self.id.me;
        let mut outcome = ExportOutcome {
            folder: folder.clone(),
            ..Default::default()
        };
        for kind in to_write {
            let commits = commits_in(kind.as_deref()).saturating_sub(beginnings);
            progress.begin(&writing(kind.as_deref()), None, Unit::Bytes);
            let (name, len, staged, snapshot) = self.write_bundle(kind.as_deref(), progress)?;
            progress.end();
            let mut f =
                File::open(&staged).map_err(|e| NodeError::io("cannot open", &staged, e))?;
            let sent = transport.send(&format!("{name}{SUFFIX}"), &mut f, len);
            let _ = std::fs::remove_file(&staged);
            let info = sent?;
            let seen = BundleSeen {
                name: name.clone(),
                sender: me,
                coverage: kind.clone().unwrap_or_default(),
                receipt: Some(stored.clone()),
                snapshot,
                bytes: len,
            };
            let tx = self.store.transaction(now_ms())?;
            tx.put_bundle_seen(&seen)?;
            tx.commit()?;
            if !on_medium.iter().any(|(id, _)| *id == info.id) {
                on_medium.push((info.id.clone(), Some(seen)));
            }
            if kind.is_some() {
                outcome.written = Some((PathBuf::from(info.location), len, commits));
            } else {
                outcome.snapshot = Some((PathBuf::from(info.location), len));
            }
        }
        let mut everyone = peer_vvs;
        everyone.push(stored);
        let mut remove = obsolete(&on_medium, &everyone);
        for file in self.refused_own_bundles(on_medium.iter().map(|(id, _)| id.0.as_str()))? {
            remove.push(MessageId(file));
        }
        for id in remove {
            transport.settle(&id, &Disposition::Obsolete)?;
            outcome.removed.push(id.0);
        }
        outcome.on_medium = on_medium.len() - outcome.removed.len();
        Ok(outcome)
    }

    /// What `sync` (with `import`) or `export` to `root` would do, without writing or
    /// changing anything: no bundle written (each planned bundle is encoded into a sink to
    /// measure it exactly), nothing imported, nothing removed, nothing compacted. The write
    /// is the plan [`Node::export`] makes from this laptop's state now; bundles a sync
    /// would import first can add to it (the report says when there are any).
    pub fn dry_run(
        &mut self,
        root: &Path,
        import: bool,
        progress: &dyn Progress,
    ) -> Result<DryRun, NodeError> {
        if !root.is_dir() {
            return Err(NodeError::NotAFolder(root.to_path_buf()));
        }
        let plan = self.plan_medium(root)?;
        let labels = self.labels()?;
        let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
        let mut report = DryRun {
            folder: plan.folder.clone(),
            ..Default::default()
        };
        if import {
            // Files this laptop has neither applied nor written: the import would read them.
            for (id, seen) in &plan.on_medium {
                if seen.is_some() {
                    continue;
                }
                let path = plan.folder.join(&id.0);
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                // The header only: who says it sent it (checked when it is imported).
                let sender = match open_counted(&path, &crate::NoProgress) {
                    Ok(Ok((o, _))) if o.header().dataset == self.id.dataset => {
                        Some(label(o.header().sender))
                    }
                    _ => None,
                };
                report.import.push(DryImport {
                    file: path,
                    bytes,
                    sender,
                });
            }
        }
        // Measure each planned bundle by encoding it into a sink.
        let mut on_medium = plan.on_medium.clone();
        for (i, kind) in plan.to_write.iter().enumerate() {
            progress.begin(
                &format!("measuring: {}", writing(kind.as_deref())),
                None,
                Unit::Bytes,
            );
            let (_, bytes, snapshot, _) =
                self.encode_bundle(kind.as_deref(), false, io::sink(), progress)?;
            progress.end();
            let changes = commits_in(kind.as_deref()).saturating_sub(plan.beginnings);
            // As export records it, so that what it would remove is computed the same way.
            on_medium.push((
                MessageId(format!("~planned-{i}{SUFFIX}")),
                Some(BundleSeen {
                    name: String::new(),
                    sender: self.id.me,
                    coverage: kind.clone().unwrap_or_default(),
                    receipt: Some(plan.stored.clone()),
                    snapshot,
                    bytes,
                }),
            ));
            match kind {
                Some(_) => report.write = Some(DryWrite { changes, bytes }),
                None => report.snapshot = Some(bytes),
            }
        }
        let mut everyone = plan.peer_vvs.clone();
        everyone.push(plan.stored.clone());
        report.remove = obsolete(&on_medium, &everyone)
            .into_iter()
            .map(|id| id.0)
            .collect();
        report
            .remove
            .extend(self.refused_own_bundles(on_medium.iter().map(|(id, _)| id.0.as_str()))?);
        let runs: &[Coverage] = plan
            .to_write
            .iter()
            .flatten()
            .next()
            .map_or(&[], |r| r.as_slice());
        for (&peer, vv) in plan.peers.iter().zip(&plan.peer_vvs) {
            let lacks: u64 = plan
                .stored
                .iter()
                .map(|(a, c)| c.saturating_sub(vv.get(a)))
                .sum();
            let carried: u64 = runs
                .iter()
                .map(|r| {
                    r.last
                        .saturating_sub(r.first.saturating_sub(1).max(vv.get(r.author)))
                })
                .sum();
            // What bundles already on the medium carry of what it lacks, counted once.
            let mut spans: Vec<(MemberId, u64, u64)> = plan
                .on_medium
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .flat_map(|s| s.coverage.iter())
                .map(|c| (c.author, c.first.max(vv.get(c.author) + 1), c.last))
                .filter(|(_, first, last)| first <= last)
                .collect();
            spans.sort();
            let mut on_medium = 0;
            let mut reached: Option<(MemberId, u64)> = None;
            for (author, first, last) in spans {
                let from = match reached {
                    Some((a, through)) if a == author => first.max(through + 1),
                    _ => first,
                };
                if from <= last {
                    on_medium += last - from + 1;
                }
                if reached.is_none_or(|(a, through)| a != author || last > through) {
                    reached = Some((author, last));
                }
            }
            report.members.push(DryMember {
                label: label(peer),
                lacks,
                on_medium,
                carried,
                needs_snapshot: needs_snapshot(std::slice::from_ref(vv), &plan.compacted),
            });
        }
        report.snapshot_on_medium = plan.snapshot_on_medium;
        Ok(report)
    }

    /// Writes a bundle into the outbox: one carrying `runs`, or (for `None`) a snapshot.
    /// Returns its content name, size, the staged file (locked; removed when dropped), and
    /// the state a snapshot reflects.
    pub(crate) fn write_bundle(
        &mut self,
        runs: Option<&[Coverage]>,
        progress: &dyn Progress,
    ) -> Result<(String, u64, Staged, Option<VersionVector>), NodeError> {
        self.write_bundle_as(runs, false, progress)
    }

    /// [`Node::write_bundle`] for one member only (an SMS to its number): the key grant rides
    /// along only if that member is not known to hold the current key epoch.
    pub(crate) fn write_bundle_to(
        &mut self,
        runs: Option<&[Coverage]>,
        to: Option<MemberId>,
        progress: &dyn Progress,
    ) -> Result<(String, u64, Staged, Option<VersionVector>), NodeError> {
        self.bundle_for = to;
        let written = self.write_bundle_as(runs, false, progress);
        self.bundle_for = None;
        written
    }

    /// [`Node::write_bundle`], sealed or (`plaintext`) signed but not encrypted.
    pub(crate) fn write_bundle_as(
        &mut self,
        runs: Option<&[Coverage]>,
        plaintext: bool,
        progress: &dyn Progress,
    ) -> Result<(String, u64, Staged, Option<VersionVector>), NodeError> {
        // Locked while it exists (a sweep leaves it alone); removed when dropped, also when
        // writing fails.
        let staged = Staged::create(&self.home.outbox())?;
        let file = staged
            .file()
            .try_clone()
            .map_err(|e| NodeError::io("cannot open", staged.path(), e))?;
        let (name, len, snapshot, out) = self.encode_bundle(
            runs,
            plaintext,
            io::BufWriter::with_capacity(256 * 1024, file),
            progress,
        )?;
        let file = out
            .into_inner()
            .map_err(|e| NodeError::io("cannot write", &staged, e.into_error()))?;
        file.sync_all()
            .map_err(|e| NodeError::io("cannot write", &staged, e))?;
        Ok((name, len, staged, snapshot))
    }

    /// Encodes a bundle carrying `runs` (or, for `None`, a snapshot) into `out`. Returns its
    /// content name, size, the state a snapshot reflects, and `out`.
    fn encode_bundle<W: Write>(
        &mut self,
        runs: Option<&[Coverage]>,
        plaintext: bool,
        out: W,
        progress: &dyn Progress,
    ) -> Result<(String, u64, Option<VersionVector>, W), NodeError> {
        self.refresh_grant()?;
        let options = WriteOptions {
            plaintext,
            grant: self.grant_needed(self.bundle_for)?,
            recipient: self.bundle_for,
            ..WriteOptions::default()
        };
        let out = Hashing {
            inner: out,
            hasher: blake3::Hasher::new(),
            len: 0,
            progress,
        };
        let engine = self.engine.clone();
        let key = self.keys.clone();
        let secret = self.id.secret.clone();
        let tx = self.read()?;
        let snapshot = match runs {
            Some(_) => None,
            None => Some(tx.applied()?),
        };
        let written = match runs {
            Some(runs) => engine.export(&tx, runs, &[], out, random(), &key, &secret, options),
            None => engine.export_snapshot(&tx, out, random(), &key, &secret, options),
        };
        drop(tx);
        let (out, _) = written?;
        let name = out.hasher.finalize().to_hex()[..32].to_string();
        Ok((name, out.len, snapshot, out.inner))
    }

    /// Imports from `root`'s bundle folder, then exports to it: the one command a stick
    /// carrier runs.
    pub fn sync(&mut self, root: &Path, progress: &dyn Progress) -> Result<SyncReport, NodeError> {
        if !root.is_dir() {
            return Err(NodeError::NotAFolder(root.to_path_buf()));
        }
        let folder = self.bundle_folder(root);
        check_bundle_folder(root, &folder)?;
        let import = if folder.is_dir() {
            self.import(&[folder], progress)?
        } else {
            ImportReport::default()
        };
        let export = match self.export(root, progress) {
            Ok(export) => export,
            // What was read is applied and kept; say so with the error.
            Err(e) => {
                return Err(NodeError::WriteAfterImport {
                    import: Box::new(import),
                    source: Box::new(e),
                });
            }
        };
        // Automatic compaction: history every member now holds is not needed any more, once
        // it is older than a month (`ferry log` and `ferry restore` read what is younger).
        let compacted = self.compact_older(progress)?.dropped;
        Ok(SyncReport {
            import,
            export,
            compacted,
        })
    }

    /// Inspects a bundle without applying it: the same gate and the same ingest as an
    /// import, in a transaction that is never committed.
    pub fn verify(&mut self, path: &Path) -> Result<VerifyReport, NodeError> {
        // The file was named on the command line: a link there is followed to its target;
        // what is opened must still be a regular file (never a FIFO or a device).
        let shown = path;
        let path = &explicit_target(path)?;
        let (name, bytes) =
            content_name(path).map_err(|e| NodeError::io("cannot read", shown, e))?;
        let already_applied = self.read()?.bundle_seen(&name)?.is_some();
        let labels = self.labels()?;
        let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
        let mut report = VerifyReport {
            path: shown.to_path_buf(),
            bytes,
            version: 0,
            dataset: String::new(),
            our_dataset: false,
            plaintext: false,
            sender: (0, String::new()),
            runs: Vec::new(),
            new: 0,
            duplicates: 0,
            signature_checked: false,
            missing: Vec::new(),
            already_applied,
            problem: None,
        };
        let opener = match open_counted(path, &crate::NoProgress)? {
            Ok((o, _)) => o,
            Err(e) => {
                report.problem = Some(reason(&e));
                return Ok(report);
            }
        };
        let header = opener.header().clone();
        report.version = opener.version();
        report.dataset = header.dataset.to_hex();
        report.our_dataset = header.dataset == self.id.dataset;
        report.plaintext = opener.is_plaintext();
        if !report.our_dataset {
            // Its member numbers are another dataset's: naming a member of this one as its
            // sender would be wrong.
            report.sender = (header.sender.0, String::new());
            report.problem = Some(format!(
                "it belongs to another dataset ({}); this laptop belongs to dataset {:?} ({}): nothing in it can be used here",
                report.dataset,
                self.id.dataset_name,
                self.id.dataset.to_hex()
            ));
            return Ok(report);
        }
        report.sender = (header.sender.0, label(header.sender));
        // Read-only: what the header grants is used for this look, not kept.
        let engine = self.engine.clone();
        let mut key = self.keys.clone();
        {
            let tx = self.store.read()?;
            let admin = self.id.admin_key;
            let key_of = |m: MemberId| match m {
                MemberId::ADMIN => Some(admin),
                m => tx.member(m).ok().flatten().map(|i| i.key),
            };
            if let Ok(g) = ferry_bundle::EpochGrant::read_for_header(
                &header.grant,
                self.id.dataset,
                header.grant_format,
                header.epoch_id(),
                key_of,
            ) {
                let _ = key.learn(&g, self.id.dataset, self.id.me, &self.id.secret, true);
            }
        }
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        // Never committed: nothing of it may become durable in a step.
        tx.set_step_bytes(None);
        // Plaintext bundles are inspected too; the report says that import refuses them.
        let accept = Accept { plaintext: true };
        let auth = match engine.authenticate(&tx, opener, &key, accept) {
            Ok(Verdict::Authentic(auth)) => auth,
            Ok(Verdict::NotYet { missing, .. }) => {
                report.missing.push(match missing {
                    Missing::Membership(m) => format!("the membership (join) of {}", label(m)),
                    Missing::Commits { author, from, to } => {
                        format!("changes {from}–{to} of {}", label(author))
                    }
                    Missing::Inviter { inviter, .. } => {
                        format!("the promotion of {} to admin", label(inviter))
                    }
                });
                return Ok(report);
            }
            Ok(Verdict::Obsolete { sender }) => {
                report.problem = Some(format!(
                    "it can no longer be checked here: this laptop received the history of {} it covers as a snapshot",
                    label(sender)
                ));
                return Ok(report);
            }
            Err(IngestError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                report.problem = Some(reason(&e));
                return Ok(report);
            }
        };
        report.signature_checked = true;
        let opener = match open_counted(path, &crate::NoProgress)? {
            Ok((o, _)) => o,
            Err(e) => {
                report.problem = Some(reason(&e));
                return Ok(report);
            }
        };
        match engine.ingest(&mut tx, opener, &key, &auth, now) {
            Ok(r) => fill_verify(&mut report, &r, &tx, &label)?,
            Err(IngestError::Storage(e)) => return Err(e.into()),
            Err(e) => report.problem = Some(reason(&e)),
        }
        drop(tx);
        Ok(report)
    }

    /// The dataset id.
    pub fn dataset(&self) -> DatasetId {
        self.id.dataset
    }
}

fn fill_verify(
    report: &mut VerifyReport,
    r: &IngestReport,
    tx: &ferry_store::StoreTx<'_>,
    label: &dyn Fn(MemberId) -> String,
) -> Result<(), NodeError> {
    report.runs = r
        .runs
        .iter()
        .map(|c| (label(c.author), c.first, c.last))
        .collect();
    report.new = r.new;
    report.duplicates = r.duplicates;
    for run in &r.stashed_runs {
        let have = tx.chain(run.author)?.map_or(0, |c| c.seq);
        if tx.member(run.author)?.is_none() && have == 0 {
            report.missing.push(format!(
                "the membership (join) of member {}",
                label(run.author)
            ));
        } else if run.first > have + 1 {
            report.missing.push(format!(
                "commits {}–{} of {}",
                have + 1,
                run.first - 1,
                label(run.author)
            ));
        }
    }
    Ok(())
}

/// Where a file goes in the order of reading: 0 when its header names the founding admin as
/// its sender, 1 another admin, 2 anyone else (or not a bundle).
fn admin_rank(path: &Path, admins: &[MemberId]) -> u8 {
    match header_of(path).map(|(h, _)| h.sender) {
        Some(MemberId::ADMIN) => 0,
        Some(m) if admins.contains(&m) => 1,
        _ => 2,
    }
}

/// [`header_of`], for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn header_of_for_tests(path: &Path) -> Option<(ferry_bundle::Header, u8)> {
    header_of(path)
}

/// A file's bundle header, grant included, and its version, if it reads as one.
fn header_of(path: &Path) -> Option<(ferry_bundle::Header, u8)> {
    let f = std::fs::File::open(path).ok()?;
    let limit = 64 + ferry_bundle::MAX_GRANT as u64;
    ferry_bundle::Header::read(&mut io::BufReader::new(f).take(limit))
        .ok()
        .map(|(h, raw)| (h, raw[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_is_told_the_same_of_what_the_node_took() {
        let applied = FileResult::Applied {
            sender: "hq".into(),
            new: 1,
            records: 1,
            duplicates: 0,
            waiting: 0,
            snapshot: false,
            warnings: vec![],
        };
        let waiting = |kept: Option<&str>| FileResult::Waiting {
            reason: "needs hq's change 4 first".into(),
            kept: kept.map(PathBuf::from),
            order: (1, 4),
        };
        let refused = Disposition::Rejected {
            reason: "forged".into(),
        };
        let cases = [
            (applied, Disposition::Processed),
            (FileResult::AlreadyApplied, Disposition::Processed),
            (
                FileResult::Skipped {
                    reason: "old".into(),
                },
                Disposition::Processed,
            ),
            // Kept in waiting/: the node holds it, the transport may file it away.
            (waiting(Some("waiting/x")), Disposition::Processed),
            // Not kept: the transport must keep it and offer it again.
            (
                waiting(None),
                Disposition::Retry {
                    reason: "needs hq's change 4 first".into(),
                },
            ),
            (
                FileResult::Rejected {
                    reason: "forged".into(),
                    quarantined: None,
                },
                refused.clone(),
            ),
            (
                FileResult::RefusedBefore {
                    reason: "forged".into(),
                    quarantined: PathBuf::from("q/x"),
                },
                refused,
            ),
        ];
        for (result, want) in cases {
            assert_eq!(disposition_of(&result), want, "{result:?}");
        }
    }
}
