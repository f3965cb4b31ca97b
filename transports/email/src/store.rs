//! The state folder (the node gives one, such as `HOME/email/`): received parts kept until
//! their bundle is whole, the outbox, reported problems, where each mailbox was read up to,
//! and the digests of bundles already processed.
//!
//! ```text
//! inbox/<digest>/group.json          one bundle being received: its parts, the emails they came in
//! inbox/<digest>/<offset>-<len>.piece   a received part (deleted once the bundle is whole)
//! inbox/<digest>/bundle              the whole bundle, checked against its digest
//! outbox/<entry>/entry.json, bundle  a bundle not yet (fully) sent
//! problems/<id>.json, <id>.bin       broken attachments, for the node to quarantine
//! cursors.json                       how far each mailbox was read
//! processed                          digests of bundles applied (one per line)
//! ```
//!
//! Every file is written whole under a temporary name, flushed to disk, then renamed, so a
//! crash or a pulled plug leaves either the old or the new version.

use crate::error::EmailError;
use crate::mime::{Damaged, Piece, digest_hex};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
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
    },
    /// A file a person saved and imported.
    File { path: PathBuf },
}

impl Source {
    pub(crate) fn describe(&self) -> String {
        let subj = |s: &Option<String>| s.as_ref().map(|s| format!(" \"{s}\"")).unwrap_or_default();
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
            } => format!("{} {file}{}", root.display(), subj(subject)),
            Source::File { path } => path.display().to_string(),
        }
    }
}

/// One bundle being received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) dataset: Option<String>,
    pub(crate) size: u64,
    pub(crate) digest: String,
    pub(crate) parts: u32,
    /// (offset, length) of each stored piece.
    pub(crate) pieces: BTreeSet<(u64, u64)>,
    pub(crate) complete: bool,
    pub(crate) sources: Vec<Source>,
    pub(crate) first_seen: u64,
}

impl Group {
    /// Bytes received so far (overlaps counted once).
    pub(crate) fn have(&self) -> u64 {
        if self.complete {
            return self.size;
        }
        let mut have = 0;
        let mut end = 0;
        for &(off, len) in &self.pieces {
            let e = off + len;
            if e > end {
                have += e - off.max(end);
                end = e;
            }
        }
        have
    }

    /// Whether the stored pieces cover every byte of the bundle.
    fn covered(&self) -> bool {
        let mut end = 0;
        for &(off, len) in &self.pieces {
            if off > end {
                return false;
            }
            end = end.max(off + len);
        }
        end >= self.size
    }

    pub(crate) fn location(&self) -> String {
        match self.sources.as_slice() {
            [] => "email".into(),
            [one] => one.describe(),
            [first, rest @ ..] => format!("{} (+{} more emails)", first.describe(), rest.len()),
        }
    }
}

/// What adding a piece did.
pub(crate) enum Added {
    /// Stored (or already there); the bundle is not whole yet.
    Waiting,
    /// The bundle is now whole (or already was).
    Complete,
    /// The bundle was processed before; this email is a late duplicate.
    AlreadyProcessed,
    /// The piece contradicts the others, or the whole does not match its digest.
    Damaged(Damaged),
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

/// Writes `data` to `path` atomically and durably.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), EmailError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        unique()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EmailError::io("cannot write", path, e)
    })
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, EmailError> {
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

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EmailError> {
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

    // ---- inbox ---------------------------------------------------------------------------

    fn group_dir(&self, digest: &str) -> PathBuf {
        self.dir.join("inbox").join(digest)
    }

    pub(crate) fn groups(&self) -> Result<Vec<Group>, EmailError> {
        let mut out = Vec::new();
        for d in subdirs(&self.dir.join("inbox"))? {
            if let Some(g) = read_json::<Group>(&d.join("group.json"))? {
                out.push(g);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) fn group_by_id(&self, id: &str) -> Result<Option<Group>, EmailError> {
        Ok(self.groups()?.into_iter().find(|g| g.id == id))
    }

    pub(crate) fn bundle_path(&self, g: &Group) -> PathBuf {
        self.group_dir(&g.digest).join("bundle")
    }

    fn save_group(&self, g: &Group) -> Result<(), EmailError> {
        write_json(&self.group_dir(&g.digest).join("group.json"), g)
    }

    pub(crate) fn remove_group(&self, g: &Group) -> Result<(), EmailError> {
        let d = self.group_dir(&g.digest);
        match fs::remove_dir_all(&d) {
            Ok(()) => {
                sync_dir(&self.dir.join("inbox"));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EmailError::io("cannot remove", d, e)),
        }
    }

    /// Stores a piece that came from `source`.
    pub(crate) fn add_piece(&self, piece: &Piece, source: &Source) -> Result<Added, EmailError> {
        let digest = match &piece.digest {
            Some(d) => d.clone(),
            None => digest_hex(&piece.data),
        };
        if self.is_processed(&digest)? {
            return Ok(Added::AlreadyProcessed);
        }
        let gdir = self.group_dir(&digest);
        let existing = read_json::<Group>(&gdir.join("group.json"))?;
        let mut g = match existing {
            Some(g) => {
                if g.size != piece.size {
                    return Ok(Added::Damaged(Damaged {
                        file_name: None,
                        dataset: piece.dataset.clone(),
                        reason: format!(
                            "part {}/{} of bundle {} says the bundle has {} bytes, earlier parts said {}",
                            piece.part, piece.parts, piece.name, piece.size, g.size
                        ),
                        data: piece.data.clone(),
                    }));
                }
                g
            }
            None => {
                create_dir(&gdir)?;
                let base = format!("{}{}", piece.name, crate::mime::BUNDLE_SUFFIX);
                let taken = self.groups()?.iter().any(|g| g.id == base);
                let id = if taken {
                    format!(
                        "{}.{}{}",
                        piece.name,
                        &digest[..12],
                        crate::mime::BUNDLE_SUFFIX
                    )
                } else {
                    base
                };
                Group {
                    id,
                    name: piece.name.clone(),
                    dataset: piece.dataset.clone(),
                    size: piece.size,
                    digest: digest.clone(),
                    parts: piece.parts,
                    pieces: BTreeSet::new(),
                    complete: false,
                    sources: Vec::new(),
                    first_seen: now(),
                }
            }
        };
        if !g.sources.contains(source) {
            g.sources.push(source.clone());
        }
        g.parts = g.parts.max(piece.parts);
        if g.complete {
            self.save_group(&g)?;
            return Ok(Added::Complete);
        }
        if piece.is_whole() {
            write_atomic(&gdir.join("bundle"), &piece.data)?;
            self.finish(&mut g)?;
            return Ok(Added::Complete);
        }
        let key = (piece.offset, piece.data.len() as u64);
        if !g.pieces.contains(&key) {
            write_atomic(
                &gdir.join(format!("{}-{}.piece", key.0, key.1)),
                &piece.data,
            )?;
            g.pieces.insert(key);
        }
        if !g.covered() {
            self.save_group(&g)?;
            return Ok(Added::Waiting);
        }
        // Every byte is here: put the bundle together and check it against its digest.
        let tmp = gdir.join(".bundle.tmp");
        let assembled = (|| -> io::Result<String> {
            let mut out = File::create(&tmp)?;
            let mut hasher = blake3::Hasher::new();
            let mut end = 0u64;
            for &(off, len) in &g.pieces {
                if off + len <= end {
                    continue;
                }
                let data = fs::read(gdir.join(format!("{off}-{len}.piece")))?;
                let skip = (end - off) as usize;
                out.write_all(&data[skip..])?;
                hasher.update(&data[skip..]);
                end = off + len;
            }
            out.sync_all()?;
            Ok(hasher.finalize().to_hex().to_string())
        })()
        .map_err(|e| EmailError::io("cannot put together", &tmp, e))?;
        if assembled != g.digest {
            let _ = fs::remove_file(&tmp);
            let reason = format!(
                "the {} parts of bundle {} do not add up to the bundle they describe (altered?)",
                g.parts, g.name
            );
            self.remove_group(&g)?;
            return Ok(Added::Damaged(Damaged {
                file_name: None,
                dataset: g.dataset.clone(),
                reason,
                data: Vec::new(),
            }));
        }
        fs::rename(&tmp, gdir.join("bundle"))
            .map_err(|e| EmailError::io("cannot rename", &tmp, e))?;
        self.finish(&mut g)?;
        Ok(Added::Complete)
    }

    fn finish(&self, g: &mut Group) -> Result<(), EmailError> {
        g.complete = true;
        let gdir = self.group_dir(&g.digest);
        sync_dir(&gdir);
        self.save_group(g)?;
        for (off, len) in std::mem::take(&mut g.pieces) {
            let _ = fs::remove_file(gdir.join(format!("{off}-{len}.piece")));
        }
        self.save_group(g)
    }

    // ---- processed -------------------------------------------------------------------------

    fn processed_path(&self) -> PathBuf {
        self.dir.join("processed")
    }

    fn processed_set(&self) -> Result<HashSet<String>, EmailError> {
        let p = self.processed_path();
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(EmailError::io("cannot read", p, e)),
        }
    }

    pub(crate) fn is_processed(&self, digest: &str) -> Result<bool, EmailError> {
        Ok(self.processed_set()?.contains(digest))
    }

    pub(crate) fn mark_processed(&self, digest: &str) -> Result<(), EmailError> {
        if self.is_processed(digest)? {
            return Ok(());
        }
        let p = self.processed_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| EmailError::io("cannot open", &p, e))?;
        f.write_all(format!("{digest}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| EmailError::io("cannot write", &p, e))
    }

    // ---- problems --------------------------------------------------------------------------

    pub(crate) fn add_problem(
        &self,
        location: String,
        d: &Damaged,
    ) -> Result<ProblemRecord, EmailError> {
        let rec = ProblemRecord {
            id: format!("problem-{}", unique()),
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

    fn piece(data: &[u8], offset: u64, size: u64, digest: &str, part: u32) -> Piece {
        Piece {
            name: "b".into(),
            dataset: None,
            part,
            parts: 3,
            offset,
            size,
            digest: Some(digest.into()),
            data: data.to_vec(),
        }
    }

    #[test]
    fn parts_in_any_order_and_twice_make_one_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path().to_path_buf()).unwrap();
        let whole: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let d = digest_hex(&whole);
        let src = |n: u32| Source::File {
            path: PathBuf::from(format!("/x/{n}")),
        };
        let p3 = piece(&whole[200..], 200, 300, &d, 3);
        let p1 = piece(&whole[..100], 0, 300, &d, 1);
        let p2 = piece(&whole[100..200], 100, 300, &d, 2);
        assert!(matches!(
            st.add_piece(&p3, &src(3)).unwrap(),
            Added::Waiting
        ));
        assert!(matches!(
            st.add_piece(&p1, &src(1)).unwrap(),
            Added::Waiting
        ));
        assert!(matches!(
            st.add_piece(&p1, &src(4)).unwrap(),
            Added::Waiting
        ));
        // State survives a restart.
        let st = State::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(st.groups().unwrap()[0].have(), 200);
        assert!(matches!(
            st.add_piece(&p2, &src(2)).unwrap(),
            Added::Complete
        ));
        let g = &st.groups().unwrap()[0];
        assert!(g.complete);
        assert_eq!(g.sources.len(), 4);
        assert_eq!(fs::read(st.bundle_path(g)).unwrap(), whole);
        st.mark_processed(&g.digest).unwrap();
        assert!(matches!(
            st.add_piece(&p2, &src(5)).unwrap(),
            Added::AlreadyProcessed
        ));
    }

    #[test]
    fn parts_that_do_not_add_up_are_reported_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(dir.path().to_path_buf()).unwrap();
        let d = "ab".repeat(32);
        let src = Source::File {
            path: PathBuf::from("/x"),
        };
        st.add_piece(&piece(&[1; 10], 0, 20, &d, 1), &src).unwrap();
        match st.add_piece(&piece(&[2; 10], 10, 20, &d, 2), &src).unwrap() {
            Added::Damaged(dmg) => assert!(dmg.reason.contains("do not add up"), "{dmg:?}"),
            _ => panic!("a bundle that does not match its digest must be reported"),
        }
        assert!(st.groups().unwrap().is_empty());
        match st.add_piece(&piece(&[2; 10], 10, 30, &d, 2), &src).unwrap() {
            Added::Waiting => {}
            _ => panic!("a fresh start is possible after a bad set"),
        }
        match st.add_piece(&piece(&[2; 10], 0, 99, &d, 1), &src).unwrap() {
            Added::Damaged(dmg) => assert!(dmg.reason.contains("earlier parts"), "{dmg:?}"),
            _ => panic!("a part that disagrees on the size must be reported"),
        }
    }

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
