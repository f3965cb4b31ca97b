//! Moving bundles: import, export, sync, verify.

use crate::NodeError;
use crate::node::{Node, random};
use crate::progress::Progress;
use crate::time::{file_stamp, now_ms};
use ferry_bundle::{BundleReader, WriteOptions};
use ferry_model::{DatasetId, MemberId, VersionVector};
use ferry_store::{BundleSeen, QuarantineRow};
use ferry_sync::plan::{acknowledged_by_all, needs_snapshot, plan_export};
use ferry_sync::{Coverage, IngestError, IngestReport, Storage};
use ferry_transport::{Disposition, MessageId, Transport};
use ferry_transport_dir::{DirTransport, SUFFIX};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

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
}

/// What `import` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// One entry per file.
    pub files: Vec<FileOutcome>,
    /// Commits still pending (their dependencies are missing) after the import.
    pub pending: u64,
    /// Bundle files of other datasets found in their own folders and left alone.
    pub other_datasets: u64,
    /// Bundles split into parts (by email) still waiting for their other parts.
    pub waiting_parts: Vec<String>,
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
    /// Sender number and label.
    pub sender: (u32, String),
    /// The runs of commits: (author label, first, last).
    pub runs: Vec<(String, u64, u64)>,
    /// Commits new to this node.
    pub new: u64,
    /// Commits this node already holds.
    pub duplicates: u64,
    /// Whether the sender's signature could be checked (and was valid).
    pub signature_checked: bool,
    /// What this node lacks before it can apply the bundle.
    pub missing: Vec<String>,
    /// Whether this exact file was already applied here.
    pub already_applied: bool,
    /// `None` if the bundle is intact and authentic as far as this node can tell; else why
    /// not.
    pub problem: Option<String>,
}

/// Reads a whole file to name it by content: the first 16 bytes of its BLAKE3 hash, hex.
fn content_name(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
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
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bundle files under `path`: the file itself, or every `*.ferry` file below a folder —
/// except in `ferry/<dataset id>` folders of other datasets (a stick shared by several
/// datasets), which are counted in `skipped` instead.
fn collect(
    path: &Path,
    ours: &str,
    out: &mut Vec<PathBuf>,
    skipped: &mut u64,
) -> Result<(), NodeError> {
    let meta = std::fs::metadata(path).map_err(|e| NodeError::io("cannot read", path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| NodeError::io("cannot read folder", path, e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            let foreign = path.file_name().is_some_and(|n| n == "ferry")
                && name.len() == 16
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && name != ours;
            if foreign {
                *skipped += collect_count(&p);
                continue;
            }
            collect(&p, ours, out, skipped)?;
        } else if name.ends_with(SUFFIX) || name.ends_with(".eml") || name.ends_with(".ferrypart") {
            out.push(p);
        }
    }
    Ok(())
}

/// Whether a file is a saved email or part attachment rather than a bundle.
fn is_saved_email(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(&[ferry_bundle::MAGIC, ferry_bundle::VERSION])
        || head.starts_with(&[ferry_bundle::MAGIC_PLAIN, ferry_bundle::VERSION])
    {
        return false;
    }
    !matches!(
        ferry_transport_email::classify(head),
        ferry_transport_email::FileKind::Other
    )
}

/// How many bundle files are below a folder.
fn collect_count(path: &Path) -> u64 {
    let mut files = Vec::new();
    let mut skipped = 0;
    let _ = collect(path, "", &mut files, &mut skipped);
    files.len() as u64
}

/// Plain-language reason for a refused bundle.
fn reason<E: std::error::Error>(e: &IngestError<E>) -> String {
    match e {
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
        let mut files = Vec::new();
        let mut report = ImportReport::default();
        let ours = self.id.dataset.to_hex();
        for p in paths {
            collect(p, &ours, &mut files, &mut report.other_datasets)?;
        }
        for path in files {
            if is_saved_email(&path) {
                // A saved email or part attachment: its bundle comes out through the email
                // transport's reassembly.
                let r = self.import_saved_email(&path, progress)?;
                report.files.extend(r.import.files);
                report.files.extend(r.damaged);
                for (name, have, len) in r.incomplete {
                    report.waiting_parts.push(format!(
                        "bundle {name}: {have} of {len} bytes received by email so far"
                    ));
                }
                continue;
            }
            let outcome = self.import_file(&path, progress)?;
            report.files.push(outcome);
        }
        let tx = self.read()?;
        let stored = tx.stored()?;
        let applied = tx.applied()?;
        report.pending = stored.total().saturating_sub(applied.total());
        Ok(report)
    }

    fn import_file(
        &mut self,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, NodeError> {
        self.import_file_as(path, path, progress)
    }

    /// Imports one bundle arriving by a transport (an email, a radio session, …): it is
    /// kept in a file in the home folder while it is applied, and reported as `origin`.
    pub fn import_message(
        &mut self,
        body: &mut dyn Read,
        origin: &str,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, NodeError> {
        let inbox = self.home.root().join("inbox");
        std::fs::create_dir_all(&inbox).map_err(|e| NodeError::io("cannot create", &inbox, e))?;
        let staged = inbox.join(format!("{}.ferry", crate::id_hex(&random::<8>())));
        let result = (|| {
            let mut f =
                File::create(&staged).map_err(|e| NodeError::io("cannot create", &staged, e))?;
            io::copy(body, &mut f).map_err(|e| NodeError::io("cannot write", &staged, e))?;
            f.sync_all()
                .map_err(|e| NodeError::io("cannot write", &staged, e))?;
            self.import_file_as(&staged, Path::new(origin), progress)
        })();
        let _ = std::fs::remove_file(&staged);
        result
    }

    fn import_file_as(
        &mut self,
        path: &Path,
        origin: &Path,
        progress: &dyn Progress,
    ) -> Result<FileOutcome, NodeError> {
        let (name, bytes) = match content_name(path) {
            Ok(x) => x,
            Err(e) => {
                return Ok(FileOutcome {
                    path: origin.to_path_buf(),
                    bytes: 0,
                    result: FileResult::Rejected {
                        reason: format!("cannot read the file: {e}"),
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
        // The same content refused before is not refused (and counted as an error) again.
        if let Some(q) = self
            .read()?
            .quarantine()?
            .into_iter()
            .find(|q| q.stored_as.contains(&name))
        {
            return Ok(done(FileResult::RefusedBefore {
                reason: q.reason,
                quarantined: PathBuf::from(q.stored_as),
            }));
        }
        let file = File::open(path).map_err(|e| NodeError::io("cannot open", path, e))?;
        progress.begin(
            &format!(
                "importing {}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            Some(bytes),
        );
        // Hash what is actually read, to be sure the file did not change since it was named.
        let hasher = std::rc::Rc::new(std::cell::RefCell::new(blake3::Hasher::new()));
        let reader = BufReader::with_capacity(
            256 * 1024,
            Counting {
                inner: file,
                progress,
                hasher: Some(hasher.clone()),
            },
        );
        let now = now_ms();
        let labels = self.labels()?;
        let engine = self.engine.clone();
        let key = self.id.dataset_key.clone();
        let mut tx = self.store.transaction(now)?;
        let result = BundleReader::open(reader)
            .map_err(IngestError::from)
            .and_then(|opener| engine.ingest(&mut tx, opener, &key, now))
            .and_then(|r| engine.settle(&mut tx, now).map(|s| (r, s)));
        progress.end();
        let read_name = hasher.borrow().finalize().to_hex()[..32].to_string();
        let result = result.and_then(|x| {
            if read_name == name {
                Ok(x)
            } else {
                Err(IngestError::Bundle(ferry_bundle::BundleError::Io(
                    io::Error::other("the file changed while it was being read; import it again"),
                )))
            }
        });
        match result {
            Ok((r, settled)) => {
                tx.put_bundle_seen(&BundleSeen {
                    name,
                    sender: r.sender,
                    coverage: r.runs.clone(),
                    receipt: r.receipt.clone(),
                    snapshot: r.snapshot_state.clone(),
                    bytes,
                })?;
                tx.commit()?;
                let sender = self
                    .labels()?
                    .get(&r.sender)
                    .or(labels.get(&r.sender))
                    .cloned()
                    .unwrap_or_else(|| r.sender.to_string());
                let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
                let mut warnings: Vec<String> = r
                    .forks
                    .iter()
                    .map(|(m, seq)| {
                        format!(
                            "{} has two different versions of its change {seq} (a laptop restored from an old backup, cloned, or an invitation used twice); the copy in this bundle was not applied",
                            label(*m)
                        )
                    })
                    .collect();
                warnings.extend(settled.dropped.iter().map(|(m, first, last, why)| {
                    format!(
                        "changes {first}–{last} of {} kept from an earlier bundle were dropped: {why}",
                        label(*m)
                    )
                }));
                Ok(done(FileResult::Applied {
                    sender,
                    new: r.new,
                    duplicates: r.duplicates,
                    waiting: r.stashed,
                    snapshot: r.snapshot,
                    warnings,
                }))
            }
            Err(IngestError::Storage(e)) => Err(e.into()),
            Err(e) => {
                drop(tx);
                let why = reason(&e);
                let quarantined = self.quarantine(path, origin, &name, &why)?;
                Ok(done(FileResult::Rejected {
                    reason: why,
                    quarantined,
                }))
            }
        }
    }

    /// Copies a refused file into the quarantine folder with its reason; returns the copy.
    /// Copies refused input into the quarantine folder with its reason (`path` is the file
    /// to copy, `origin` where it came from).
    pub(crate) fn quarantine(
        &mut self,
        path: &Path,
        origin: &Path,
        name: &str,
        why: &str,
    ) -> Result<Option<PathBuf>, NodeError> {
        let dir = self.home.quarantine();
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io("cannot create", &dir, e))?;
        crate::home::private_dir(&dir)?;
        // The same refused content is kept once.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains(name) && !n.ends_with(".reason.txt") {
                    return Ok(Some(e.path()));
                }
            }
        }
        let now = now_ms();
        let original = origin.file_name().unwrap_or_default().to_string_lossy();
        let stored = dir.join(format!("{}-{name}-{original}", file_stamp(now)));
        if let Err(e) = std::fs::copy(path, &stored) {
            return Err(NodeError::io("cannot copy into quarantine", path, e));
        }
        let note = format!(
            "file: {}\nrefused: {}\nreason: {why}\n",
            origin.display(),
            crate::time::format_utc(now)
        );
        let note_path = PathBuf::from(format!("{}.reason.txt", stored.display()));
        std::fs::write(&note_path, note)
            .map_err(|e| NodeError::io("cannot write", &note_path, e))?;
        let tx = self.store.transaction(now)?;
        tx.add_quarantine(&QuarantineRow {
            at_ms: now,
            source: origin.display().to_string(),
            stored_as: stored.display().to_string(),
            reason: why.to_string(),
        })?;
        tx.commit()?;
        Ok(Some(stored))
    }

    /// Writes what the other members still need into `root` (a stick, a shared folder), and
    /// removes bundles there whose content every member already holds.
    pub fn export(
        &mut self,
        root: &Path,
        progress: &dyn Progress,
    ) -> Result<ExportOutcome, NodeError> {
        let folder = self.bundle_folder(root);
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
            (tx.stored()?, vvs)
        };
        let carried: Vec<Coverage> = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .flat_map(|s| s.coverage.iter().copied())
            .collect();
        let compacted = self.compacted()?;
        let runs = plan_export(&stored, &peer_vvs, &carried, &compacted);
        let receipt_present = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .any(|s| s.sender == me && s.receipt.as_ref() == Some(&stored));
        let mut outcome = ExportOutcome {
            folder: folder.clone(),
            ..Default::default()
        };
        // A member that lacks history compacted away here gets a snapshot (once per state).
        let snapshot_present = on_medium
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .any(|s| s.sender == me && s.snapshot.is_some() && s.receipt.as_ref() == Some(&stored));
        let mut to_write = Vec::new();
        if needs_snapshot(&peer_vvs, &compacted) && !snapshot_present {
            to_write.push(None);
        }
        if !runs.is_empty() || !receipt_present {
            to_write.push(Some(runs));
        }
        for kind in to_write {
            let commits: u64 = kind.iter().flatten().map(|r| r.last - r.first + 1).sum();
            progress.begin("exporting", Some(commits));
            let (name, len, staged, snapshot) = self.write_bundle(kind.as_deref())?;
            progress.advance(commits);
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
        // Tidy up: a bundle may go when every member holds its commits and a newer bundle
        // from the same sender (with a newer receipt) stays. Bundles whose signature this
        // node could not check are never removed by it.
        let mut everyone = peer_vvs.clone();
        everyone.push(stored.clone());
        let seen: Vec<(MessageId, BundleSeen, VersionVector)> = on_medium
            .iter()
            .filter_map(|(id, s)| {
                let s = s.clone()?;
                let receipt = s.receipt.clone()?;
                Some((id.clone(), s, receipt))
            })
            .collect();
        for (id, s, receipt) in &seen {
            let superseded = seen.iter().any(|(oid, o, newer)| {
                oid != id
                    && o.sender == s.sender
                    && newer.dominates(receipt)
                    && (newer != receipt || oid > id)
            });
            let snapshot_done = s
                .snapshot
                .as_ref()
                .is_none_or(|state| everyone.iter().all(|p| p.dominates(state)));
            if superseded && snapshot_done && acknowledged_by_all(&s.coverage, &everyone) {
                transport.settle(id, &Disposition::Obsolete)?;
                outcome.removed.push(id.0.clone());
            }
        }
        outcome.on_medium = on_medium.len() - outcome.removed.len();
        Ok(outcome)
    }

    /// Writes a bundle into the outbox: one carrying `runs`, or (for `None`) a snapshot.
    /// Returns its content name, size, path, and the state a snapshot reflects.
    pub(crate) fn write_bundle(
        &mut self,
        runs: Option<&[Coverage]>,
    ) -> Result<(String, u64, PathBuf, Option<VersionVector>), NodeError> {
        self.write_bundle_as(runs, false)
    }

    /// [`Node::write_bundle`], sealed or (`plaintext`) signed but not encrypted.
    pub(crate) fn write_bundle_as(
        &mut self,
        runs: Option<&[Coverage]>,
        plaintext: bool,
    ) -> Result<(String, u64, PathBuf, Option<VersionVector>), NodeError> {
        let options = WriteOptions {
            plaintext,
            ..WriteOptions::default()
        };
        let outbox = self.home.outbox();
        std::fs::create_dir_all(&outbox).map_err(|e| NodeError::io("cannot create", &outbox, e))?;
        let staged = outbox.join(format!(".{}.tmp", crate::id_hex(&random::<8>())));
        let file = File::create(&staged).map_err(|e| NodeError::io("cannot create", &staged, e))?;
        let out = Hashing {
            inner: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: blake3::Hasher::new(),
            len: 0,
        };
        let engine = self.engine.clone();
        let key = self.id.dataset_key.clone();
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
        let (out, _) = match written {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e.into());
            }
        };
        let name = out.hasher.finalize().to_hex()[..32].to_string();
        let len = out.len;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| NodeError::io("cannot write", &staged, e.into_error()))?;
        file.sync_all()
            .map_err(|e| NodeError::io("cannot write", &staged, e))?;
        Ok((name, len, staged, snapshot))
    }

    /// Imports from `root`'s bundle folder, then exports to it: the one command a stick
    /// carrier runs.
    pub fn sync(&mut self, root: &Path, progress: &dyn Progress) -> Result<SyncReport, NodeError> {
        if !root.is_dir() {
            return Err(NodeError::Input(format!(
                "{} is not a folder; give the folder of the USB stick or shared drive",
                root.display()
            )));
        }
        let folder = self.bundle_folder(root);
        let import = if folder.is_dir() {
            self.import(&[folder], progress)?
        } else {
            ImportReport::default()
        };
        let export = self.export(root, progress)?;
        // Automatic compaction: history every member now holds is not needed any more.
        let compacted = self.compact(false)?.dropped;
        Ok(SyncReport {
            import,
            export,
            compacted,
        })
    }

    /// Inspects a bundle without applying it.
    pub fn verify(&mut self, path: &Path) -> Result<VerifyReport, NodeError> {
        let (name, bytes) =
            content_name(path).map_err(|e| NodeError::io("cannot read", path, e))?;
        let already_applied = self.read()?.bundle_seen(&name)?.is_some();
        let labels = self.labels()?;
        let label = |m: MemberId| labels.get(&m).cloned().unwrap_or_else(|| m.to_string());
        let file = File::open(path).map_err(|e| NodeError::io("cannot open", path, e))?;
        let mut report = VerifyReport {
            path: path.to_path_buf(),
            bytes,
            version: 0,
            dataset: String::new(),
            our_dataset: false,
            sender: (0, String::new()),
            runs: Vec::new(),
            new: 0,
            duplicates: 0,
            signature_checked: false,
            missing: Vec::new(),
            already_applied,
            problem: None,
        };
        let opener = match BundleReader::open(BufReader::new(file)) {
            Ok(o) => o,
            Err(e) => {
                report.problem = Some(e.to_string());
                return Ok(report);
            }
        };
        let header = opener.header().clone();
        report.version = ferry_bundle::VERSION;
        report.dataset = header.dataset.to_hex();
        report.our_dataset = header.dataset == self.id.dataset;
        report.sender = (header.sender.0, label(header.sender));
        let engine = self.engine.clone();
        let key = self.id.dataset_key.clone();
        // Run the real ingest in a transaction that is never committed.
        let now = now_ms();
        let mut tx = self.store.transaction(now)?;
        match engine.ingest(&mut tx, opener, &key, now) {
            Ok(r) => {
                fill_verify(&mut report, &r, &tx, &label)?;
            }
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
    report.signature_checked = r.authenticated;
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
