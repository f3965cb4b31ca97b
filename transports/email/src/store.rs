//! The state folder (the node gives one, such as `HOME/email/`): the outbox, reported
//! problems and where each mailbox was read up to. Received parts and the ledger of settled
//! bundles are `reassembly.rs`'s.
//!
//! ```text
//! inbox/...                          received parts (see reassembly.rs)
//! ledger                             bundles settled (see reassembly.rs)
//! outbox/<entry>/entry.json, bundle  a bundle not yet (fully) sent
//! problems/<id>.json, <id>.bin       broken attachments, for the node to quarantine
//! cursors.json                       how far each mailbox was read
//! ```
//!
//! Every file is written whole under a temporary name, flushed to disk, then renamed, so a
//! crash or a pulled plug leaves either the old or the new version.

use crate::error::EmailError;
use crate::mime::{Damaged, quoted};
use ferry_transport::fsutil::{self, AtomicWrite};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where an email (or file) that carried a piece is, so it can be filed away later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Source {
    /// A message in an IMAP mailbox.
    Imap {
        account: String,
        folder: String,
        uidvalidity: u32,
        uid: u32,
        subject: Option<String>,
    },
    /// A message file in a Maildir (the base name, without the `:2,` flags).
    Maildir {
        root: PathBuf,
        file: String,
        subject: Option<String>,
        /// Where the message file was when it was read (`new/…` or `cur/…:2,FLAGS`), to
        /// move it without listing the folder; looked up by `file` if it moved since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<PathBuf>,
    },
    /// A file a person saved and imported.
    File { path: PathBuf },
}

impl Source {
    pub(crate) fn describe(&self) -> String {
        let subj = |s: &Option<String>| {
            s.as_ref()
                .map(|s| format!(" \"{}\"", quoted(s)))
                .unwrap_or_default()
        };
        match self {
            Source::Imap {
                account,
                folder,
                uid,
                subject,
                ..
            } => format!("{account} {folder} UID {uid}{}", subj(subject)),
            Source::Maildir {
                root,
                file,
                subject,
                ..
            } => format!("{} {file}{}", root.display(), subj(subject)),
            Source::File { path } => path.display().to_string(),
        }
    }
}

/// A durable record of a broken attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ProblemRecord {
    pub(crate) id: String,
    pub(crate) location: String,
    pub(crate) file_name: Option<String>,
    pub(crate) reason: String,
    pub(crate) found_at: u64,
}

/// An outbox entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) to: Vec<String>,
    pub(crate) size: u64,
    pub(crate) digest: String,
    pub(crate) queued_at: u64,
    pub(crate) attempts: u32,
    pub(crate) next_try: u64,
    pub(crate) last_error: Option<String>,
    /// Bytes per email of the split in progress, and the part numbers already sent with it.
    pub(crate) chunk: u64,
    pub(crate) sent: BTreeSet<u32>,
}

/// Cursor of one mailbox.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) uidvalidity: u32,
    pub(crate) last_uid: u32,
    /// Maildir: message base names already read.
    pub(crate) seen: BTreeSet<String>,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:024}-{}", std::process::id())
}

/// Writes `data` to `path` atomically and durably ([`ferry_transport::fsutil`]'s rule).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), EmailError> {
    fsutil::write_atomic(path, data).map_err(|e| EmailError::io("cannot write", path, e))
}

/// Writes `data` to `path` atomically (a reader sees the old or the new file whole while
/// the machine runs) without waiting for the disk: after a power cut the file may be
/// missing or short. For what can be lost.
pub(crate) fn write_quick(path: &Path, data: &[u8]) -> Result<(), EmailError> {
    AtomicWrite::new()
        .volatile()
        .write(path, data)
        .map_err(|e| EmailError::io("cannot write", path, e))
}

/// Makes a rename in `dir` durable (best effort).
pub(crate) fn sync_dir(dir: &Path) {
    fsutil::sync_folder(dir);
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, EmailError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EmailError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmailError::io("cannot read", path, e)),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EmailError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serializes");
    write_atomic(path, &bytes)
}

fn create_dir(path: &Path) -> Result<(), EmailError> {
    fs::create_dir_all(path).map_err(|e| EmailError::io("cannot create folder", path, e))
}

fn subdirs(path: &Path) -> Result<Vec<PathBuf>, EmailError> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EmailError::io("cannot read folder", path, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| EmailError::io("cannot read folder", path, e))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Removes outbox copies left by a send interrupted while copying the bundle (never
/// announced as queued, so nothing is lost).
fn sweep_incoming(outbox: &Path) {
    let Ok(entries) = fs::read_dir(outbox) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if stale && e.file_name().to_string_lossy().starts_with(".incoming-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The state folder.
#[derive(Debug)]
pub(crate) struct State {
    dir: PathBuf,
}

impl State {
    pub(crate) fn open(dir: PathBuf) -> Result<State, EmailError> {
        for sub in ["inbox", "outbox", "problems"] {
            create_dir(&dir.join(sub))?;
        }
        Ok(State { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    // ---- problems --------------------------------------------------------------------------

    /// Records a broken attachment found at `location`. The same attachment found again at
    /// the same place (a mailbox read again after a crash) is recorded once.
    pub(crate) fn add_problem(
        &self,
        location: String,
        d: &Damaged,
    ) -> Result<ProblemRecord, EmailError> {
        let mut h = blake3::Hasher::new();
        h.update(location.as_bytes());
        h.update(&[0]);
        h.update(d.reason.as_bytes());
        h.update(&[0]);
        h.update(&d.data);
        let rec = ProblemRecord {
            id: format!("problem-{}", &h.finalize().to_hex()[..32]),
            location,
            file_name: d.file_name.clone(),
            reason: d.reason.clone(),
            found_at: now(),
        };
        let dir = self.dir.join("problems");
        write_atomic(&dir.join(format!("{}.bin", rec.id)), &d.data)?;
        write_json(&dir.join(format!("{}.json", rec.id)), &rec)?;
        Ok(rec)
    }

    pub(crate) fn problems(&self) -> Result<Vec<(ProblemRecord, Vec<u8>)>, EmailError> {
        let dir = self.dir.join("problems");
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| EmailError::io("cannot read", &dir, e))?;
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        for p in names {
            if let Some(rec) = read_json::<ProblemRecord>(&p)? {
                let bin = p.with_extension("bin");
                let data = fs::read(&bin).unwrap_or_default();
                out.push((rec, data));
            }
        }
        out.sort_by(|a, b| (a.0.found_at, &a.0.id).cmp(&(b.0.found_at, &b.0.id)));
        Ok(out)
    }

    pub(crate) fn remove_problem(&self, id: &str) -> Result<bool, EmailError> {
        if id.contains(['/', '\\']) || id.starts_with('.') {
            return Ok(false);
        }
        let dir = self.dir.join("problems");
        let json = dir.join(format!("{id}.json"));
        if !json.exists() {
            return Ok(false);
        }
        fs::remove_file(&json).map_err(|e| EmailError::io("cannot remove", &json, e))?;
        let _ = fs::remove_file(dir.join(format!("{id}.bin")));
        sync_dir(&dir);
        Ok(true)
    }

    // ---- cursors ---------------------------------------------------------------------------

    pub(crate) fn cursor(&self, key: &str) -> Result<Cursor, EmailError> {
        let all: BTreeMap<String, Cursor> =
            read_json(&self.dir.join("cursors.json"))?.unwrap_or_default();
        Ok(all.get(key).cloned().unwrap_or_default())
    }

    pub(crate) fn set_cursor(&self, key: &str, c: &Cursor) -> Result<(), EmailError> {
        let p = self.dir.join("cursors.json");
        let mut all: BTreeMap<String, Cursor> = read_json(&p)?.unwrap_or_default();
        all.insert(key.to_string(), c.clone());
        write_json(&p, &all)
    }

    // ---- outbox ----------------------------------------------------------------------------

    fn entry_dir(&self, id: &str) -> PathBuf {
        self.dir.join("outbox").join(id)
    }

    /// Copies `len` bytes from `body` into a new outbox entry (flushed to disk before this
    /// returns). Returns the entry, or the existing one for the same bundle and recipients.
    pub(crate) fn enqueue(
        &self,
        name: &str,
        to: &[String],
        body: &mut dyn Read,
        len: u64,
    ) -> Result<Entry, EmailError> {
        let outbox = self.dir.join("outbox");
        sweep_incoming(&outbox);
        let id = format!("{}-{name}", unique());
        // Copied under a hidden name first: an entry exists only once it is whole.
        let incoming = outbox.join(format!(".incoming-{id}"));
        create_dir(&incoming)?;
        let path = incoming.join("bundle");
        let copied = (|| -> io::Result<(u64, String)> {
            let mut f = File::create(&path)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n])?;
                hasher.update(&buf[..n]);
                total += n as u64;
                if total > len {
                    break;
                }
            }
            f.sync_all()?;
            Ok((total, hasher.finalize().to_hex().to_string()))
        })();
        let (got, digest) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_dir_all(&incoming);
                return Err(EmailError::io("cannot write", path, e));
            }
        };
        if got != len {
            let _ = fs::remove_dir_all(&incoming);
            return Err(EmailError::ShortBundle {
                name: name.to_string(),
                got,
                expected: len,
            });
        }
        // The same bundle already waiting for the same people: keep the older entry.
        for e in self.entries()? {
            if e.digest == digest && e.to == to {
                let _ = fs::remove_dir_all(&incoming);
                return Ok(e);
            }
        }
        let entry = Entry {
            id,
            name: name.to_string(),
            to: to.to_vec(),
            size: len,
            digest,
            queued_at: now(),
            attempts: 0,
            next_try: 0,
            last_error: None,
            chunk: 0,
            sent: BTreeSet::new(),
        };
        write_json(&incoming.join("entry.json"), &entry)?;
        let dir = self.entry_dir(&entry.id);
        // A whole folder moved into place (not a file replaced): fsutil's rule does not apply.
        fs::rename(&incoming, &dir).map_err(|e| EmailError::io("cannot rename", &incoming, e))?;
        sync_dir(&outbox);
        Ok(entry)
    }

    pub(crate) fn entries(&self) -> Result<Vec<Entry>, EmailError> {
        let mut out = Vec::new();
        for d in subdirs(&self.dir.join("outbox"))? {
            if let Some(e) = read_json::<Entry>(&d.join("entry.json"))? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) fn entry_bundle(&self, e: &Entry) -> PathBuf {
        self.entry_dir(&e.id).join("bundle")
    }

    pub(crate) fn save_entry(&self, e: &Entry) -> Result<(), EmailError> {
        write_json(&self.entry_dir(&e.id).join("entry.json"), e)
    }

    pub(crate) fn remove_entry(&self, e: &Entry) -> Result<(), EmailError> {
        let d = self.entry_dir(&e.id);
        fs::remove_dir_all(&d).map_err(|e| EmailError::io("cannot remove", &d, e))?;
        sync_dir(&self.dir.join("outbox"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_one_entry_per_bundle_and_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path().to_path_buf()).unwrap();
        let to = vec!["b@example.test".to_string()];
        let a = st.enqueue("n", &to, &mut &b"abc"[..], 3).unwrap();
        let b = st.enqueue("n", &to, &mut &b"abc"[..], 3).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(st.entries().unwrap().len(), 1);
        assert!(matches!(
            st.enqueue("m", &to, &mut &b"ab"[..], 3),
            Err(EmailError::ShortBundle { .. })
        ));
        assert_eq!(st.entries().unwrap().len(), 1);
    }
}
