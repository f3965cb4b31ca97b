//! The home folder: where a node keeps everything.
//!
//! ```text
//! HOME/
//!   ferry.db         the node's SQLite store (mode 0600): identity, keys, data, history;
//!                    encrypted (SQLCipher) when the home has a passphrase
//!   store.key        with a passphrase: the store's key, sealed under it (crate::lock)
//!   quarantine/      copies of refused inputs, each with a .reason.txt beside it
//!   outbox/          bundles being written (temporary `.*.tmp` files, each locked by its writer)
//!   inbox/           bundles that came by a transport, while they are applied (the same)
//!   waiting/         bundles that came by a transport and cannot be checked yet
//!   ferry.toml       settings of the email, SMS and serial transports (optional)
//!   transports/NAME/ each transport's durable state (queued and partly received messages)
//!   running/         one note per ferry process using the home (its command, since when),
//!                    locked while the process lives: whom a waiting command waits for
//! ```

use crate::NodeError;
use ferry_transport::fsutil::{AtomicWrite, Step};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A node's home folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
    passphrase: Option<Passphrase>,
}

/// A passphrase a person typed (never printed: its `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

impl Passphrase {
    /// The shortest passphrase accepted.
    pub const MIN_CHARS: usize = 8;

    /// A passphrase for a new lock: at least [`Passphrase::MIN_CHARS`] characters.
    pub fn new(text: String) -> Result<Passphrase, NodeError> {
        if text.chars().count() < Self::MIN_CHARS {
            return Err(NodeError::BadArgument(format!(
                "a passphrase needs at least {} characters; a few words are best (\"mango tree by the well\")",
                Self::MIN_CHARS
            )));
        }
        Ok(Passphrase(text))
    }

    /// A passphrase to unlock with, as typed.
    pub fn typed(text: String) -> Passphrase {
        Passphrase(text)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl Home {
    /// The home: `flag` (`--home`), else `$FERRY_HOME`, else the platform's data folder
    /// (`~/.local/share/ferry` on Linux).
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home, NodeError> {
        if let Some(p) = flag {
            return Ok(Home::at(p));
        }
        if let Some(p) = std::env::var_os("FERRY_HOME").filter(|p| !p.is_empty()) {
            return Ok(Home::at(PathBuf::from(p)));
        }
        dirs::data_dir()
            .map(|d| Home::at(d.join("ferry")))
            .ok_or(NodeError::NoDataFolder)
    }

    /// A home at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home {
            root: root.into(),
            passphrase: None,
        }
    }

    /// This home, unlocked (or, for `init`, protected) with `passphrase`.
    pub fn with_passphrase(mut self, passphrase: Passphrase) -> Home {
        self.passphrase = Some(passphrase);
        self
    }

    pub(crate) fn passphrase(&self) -> Option<&Passphrase> {
        self.passphrase.as_ref()
    }

    /// The store key, sealed under the passphrase (only in a home that has one).
    pub fn store_key_file(&self) -> PathBuf {
        self.root.join("store.key")
    }

    /// A new store key being put in place by a passphrase change (crate::passphrase).
    pub(crate) fn store_key_next_file(&self) -> PathBuf {
        self.root.join("store.key.next")
    }

    /// Whether the home's store is encrypted under a passphrase.
    pub fn is_locked(&self) -> bool {
        self.store_key_file().exists()
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database.
    pub fn db(&self) -> PathBuf {
        self.root.join("ferry.db")
    }

    /// The configuration file (`ferry.toml`): transport settings.
    pub fn config(&self) -> PathBuf {
        self.root.join("ferry.toml")
    }

    /// A transport's own folder for durable state (queued messages, received parts).
    pub fn transport_state(&self, name: &str) -> PathBuf {
        self.root.join("transports").join(name)
    }

    /// Where refused inputs are copied.
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Where bundles are staged before they are handed to a transport.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// Where bundles that came by a transport are staged while they are applied.
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }

    /// Removes the temporary files of writers that died (an export or a receive killed
    /// halfway) from `outbox/` and `inbox/`. A writer holds an exclusive lock on its file
    /// while the file exists ([`Staged`]), so a file whose lock this can take has no live
    /// writer; files of live writers (a listener, another command on this home) are left
    /// alone. Returns how many files were removed.
    pub fn sweep_staging(&self) -> usize {
        [self.outbox(), self.inbox()]
            .iter()
            .map(|dir| sweep_dir(dir))
            .sum()
    }

    /// Where processes using the home leave their note ([`Presence`]).
    fn running(&self) -> PathBuf {
        self.root.join("running")
    }

    /// Leaves a note in `running/` that this process uses the home: `what` it runs, and
    /// since when. Best effort: a home where it cannot be written works without it.
    pub(crate) fn announce(&self, what: &str) -> Option<Presence> {
        let dir = self.running();
        std::fs::create_dir_all(&dir).ok()?;
        let name = format!(
            "{}-{}",
            std::process::id(),
            crate::id_hex(&crate::node::random::<4>())
        );
        // Written and locked under a hidden name, then named: a note others can see is
        // always locked while its process lives.
        let hidden = dir.join(format!(".{name}"));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&hidden).ok()?;
        let note = format!(
            "{}\t{}",
            crate::time::now_ms(),
            what.replace(['\t', '\n'], " ")
        );
        let path = dir.join(name);
        // Not a content replacement (fsutil's case): the open, locked file itself gets its
        // name, and a note lost in a power cut is one whose process is gone anyway.
        let ready = fs4::FileExt::lock(&file)
            .and_then(|_| std::io::Write::write_all(&mut file, note.as_bytes()))
            .and_then(|_| std::fs::rename(&hidden, &path));
        if ready.is_err() {
            let _ = std::fs::remove_file(&hidden);
            return None;
        }
        Some(Presence { path, _file: file })
    }

    /// The other processes using this home now (their notes in `running/` are locked):
    /// process id, what it runs, since when (ms). Notes of processes that died are removed.
    pub(crate) fn others(&self) -> Vec<(u32, String, u64)> {
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir(self.running()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // A hidden name is a note being written (or left by a crash in that instant).
            let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(file) = crate::medium::open_regular(&path) else {
                continue;
            };
            if fs4::FileExt::try_lock(&file).is_ok() {
                // Nobody holds it: its process died without removing it.
                if same_file(&file, &path) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if pid == me {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let (since, what) = text.split_once('\t').unwrap_or(("0", ""));
            out.push((pid, what.to_string(), since.parse().unwrap_or(0)));
        }
        out.sort_by_key(|&(_, _, since)| since);
        out
    }

    /// Whether a node lives here.
    pub fn exists(&self) -> bool {
        self.db().is_file()
    }

    /// Creates the folder (mode 0700) and an empty database file (mode 0600).
    pub(crate) fn create(&self) -> Result<(), NodeError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| NodeError::io("cannot create home folder", &self.root, e))?;
        private_dir(&self.root)?;
        let db = self.db();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(&db)
            .map_err(|e| NodeError::io("cannot create database", &db, e))?;
        Ok(())
    }
}

/// Makes a folder readable only by its owner.
pub(crate) fn private_dir(path: &Path) -> Result<(), NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::io("cannot restrict permissions of", path, e))?;
    }
    Ok(())
}

/// Writes a file only its owner can read (mode 0600), refusing to overwrite.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            NodeError::AlreadyExists(path.to_path_buf())
        } else {
            NodeError::io("cannot create", path, e)
        }
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| NodeError::io("cannot write", path, e))
}

/// Replaces a file whole with `bytes`, created with mode 0600: readers see the old content
/// or the new, never a mix, and the new one is on disk before this returns (the rule of
/// [`ferry_transport::fsutil`]).
pub(crate) fn replace_private_file(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::io::Write;
    AtomicWrite::new().mode(0o600).write_with(
        path,
        |f| {
            f.write_all(bytes)
                .map_err(|e| NodeError::io("cannot write", path, e))
        },
        |step, e| {
            let what = match step {
                Step::Create => "cannot create",
                Step::Sync => "cannot write",
                _ => "cannot replace",
            };
            NodeError::io(what, path, e)
        },
    )
}

/// This process's note in the home's `running/`, locked for as long as it exists; dropping
/// it removes the note.
#[derive(Debug)]
pub(crate) struct Presence {
    path: PathBuf,
    _file: File,
}

impl Drop for Presence {
    fn drop(&mut self) {
        // Removed while still locked, so nobody takes it for a dead process's note.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A temporary file in the home (`outbox/` or `inbox/`), named `.<random>.tmp`, that its
/// writer holds an exclusive advisory lock on for as long as it exists; dropping it removes
/// the file and releases the lock. [`Home::sweep_staging`] removes only such files whose
/// lock it can take, i.e. those whose writer died, so a listener and a command working on
/// the same home never remove each other's files.
#[derive(Debug)]
pub(crate) struct Staged {
    path: PathBuf,
    file: File,
}

impl Staged {
    /// Creates and locks a new temporary file in `dir` (created if needed), mode 0600.
    pub(crate) fn create(dir: &Path) -> Result<Staged, NodeError> {
        std::fs::create_dir_all(dir).map_err(|e| NodeError::io("cannot create", dir, e))?;
        loop {
            let path = dir.join(format!(
                ".{}.tmp",
                crate::id_hex(&crate::node::random::<8>())
            ));
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true).write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let file = match opts.open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NodeError::io("cannot create", &path, e)),
            };
            fs4::FileExt::lock(&file).map_err(|e| NodeError::io("cannot lock", &path, e))?;
            // A sweep may have taken the lock between the create and the lock above and
            // removed the file (it could not tell it from a dead writer's): start again.
            if linked(&file) {
                return Ok(Staged { path, file });
            }
        }
    }

    /// The file, for writing (through `&File`) or for a clone that shares the lock.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Staged {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl From<&Staged> for PathBuf {
    fn from(s: &Staged) -> PathBuf {
        s.path.clone()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Removed while still locked, so no sweep can mistake it for a dead writer's.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether an open file still has a name (a sweep did not remove it).
fn linked(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().is_ok_and(|m| m.nlink() > 0)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        true
    }
}

/// Whether `name` is a staging file: `.<hex>.tmp`, or an older ferry's `<16 hex>.ferry` in
/// `inbox/` (written without a lock; no live writer of this version makes one).
fn is_staging_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(mid) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        return hex(mid);
    }
    name.strip_suffix(".ferry")
        .is_some_and(|mid| mid.len() == 16 && hex(mid))
}

/// Removes the staging files of dead writers in one folder; see [`Home::sweep_staging`].
fn sweep_dir(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !is_staging_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(file) = crate::medium::open_regular(&path) else {
            continue;
        };
        // A live writer holds the lock: leave its file alone.
        if fs4::FileExt::try_lock(&file).is_err() {
            continue;
        }
        // Still the file that was locked (not renamed away and replaced meanwhile)?
        if same_file(&file, &path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `path` names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_a_dead_writers_file_and_keeps_a_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let outbox = home.outbox();
        std::fs::create_dir_all(&outbox).unwrap();
        // A dead writer's file: nobody holds its lock.
        std::fs::write(outbox.join(".0123456789abcdef.tmp"), b"half a bundle").unwrap();
        // A live writer's file, and files that are not staging files.
        let live = Staged::create(&outbox).unwrap();
        std::fs::write(outbox.join("notes.txt"), b"not ours").unwrap();
        std::fs::write(outbox.join(".x.tmp"), b"not a staging name").unwrap();
        assert_eq!(home.sweep_staging(), 1);
        assert!(live.path().is_file());
        assert!(outbox.join("notes.txt").is_file());
        assert!(outbox.join(".x.tmp").is_file());
        assert!(!outbox.join(".0123456789abcdef.tmp").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn staging_names() {
        assert!(is_staging_name(".0123456789abcdef.tmp"));
        assert!(is_staging_name("0123456789abcdef.ferry"));
        assert!(!is_staging_name("0123456789abcdef0123456789abcdef.ferry"));
        assert!(!is_staging_name(".tmp"));
        assert!(!is_staging_name(".a-b.tmp"));
    }
}
