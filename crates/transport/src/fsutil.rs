//! Atomic file writes: the one way ferry replaces a file's content (transports and the node).
//!
//! **The durability rule.** [`write_atomic`] (and [`AtomicWrite`]) write the new content to a
//! uniquely named temporary file in the target's own folder (`.NAME.PID-NANOS-N.tmp`: hidden,
//! created with `create_new`, so it never clobbers anything), `fsync` that file, rename it over
//! the target, then `fsync` the folder (on Unix) so the rename itself survives a power cut. On
//! any failure before the rename the temporary file is removed and the target is untouched:
//! a reader, and the machine after a crash, sees the old content or the new one, whole,
//! never a mix. The folder's `fsync` is best effort: once the rename is done the new content
//! is in place, and some file systems (network, FUSE, FAT on some systems) cannot sync a
//! folder at all.
//!
//! Two departures, each chosen by the caller and named where it is used:
//! - [`AtomicWrite::mode`] creates the file with Unix permission bits (0o600 for secrets), so
//!   the content is never readable by others, not even for a moment;
//! - [`AtomicWrite::volatile`] keeps the atomic rename but skips both `fsync`s, for what may
//!   be lost in a power cut at no cost (pieces from strangers, caches): a flood of such
//!   writes then costs no disk flushes.
//!
//! A temporary file left by a crash ends in `.tmp` and starts with `.`; folders that are
//! listed (a USB stick, spool folders) ignore such names and sweep them.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join(format!("ferry-fsutil-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("state.json");
//! ferry_transport::fsutil::write_atomic(&path, b"{\"n\":1}")?;
//! ferry_transport::fsutil::write_atomic(&path, b"{\"n\":2}")?;
//! assert_eq!(std::fs::read(&path)?, b"{\"n\":2}");
//! # std::fs::remove_dir_all(&dir)
//! # }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces the content of `path` with `bytes`, atomically and durably (the module's rule).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    AtomicWrite::new().write(path, bytes)
}

/// The step of an atomic write that failed, for callers that word their errors by step
/// ([`AtomicWrite::write_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Creating the temporary file beside the target.
    Create,
    /// Flushing the temporary file to the device (`fsync`).
    Sync,
    /// Renaming the temporary file over the target.
    Rename,
}

/// How to write a file atomically: durable with default permissions unless told otherwise
/// (see the module documentation for the rule).
#[derive(Clone, Copy, Debug)]
pub struct AtomicWrite {
    durable: bool,
    mode: Option<u32>,
}

impl Default for AtomicWrite {
    fn default() -> AtomicWrite {
        AtomicWrite::new()
    }
}

impl AtomicWrite {
    /// The rule: durable, the file created with default permissions.
    pub const fn new() -> AtomicWrite {
        AtomicWrite {
            durable: true,
            mode: None,
        }
    }

    /// Creates the new file with these Unix permission bits (for instance 0o600 for a
    /// secret), before any byte is written. Ignored on other systems.
    pub const fn mode(self, mode: u32) -> AtomicWrite {
        AtomicWrite {
            mode: Some(mode),
            ..self
        }
    }

    /// Skips both `fsync`s (still atomic while the machine runs): only for what may be lost
    /// in a power cut without harm.
    pub const fn volatile(self) -> AtomicWrite {
        AtomicWrite {
            durable: false,
            ..self
        }
    }

    /// Durable (`fsync`s) only when `durable`; [`AtomicWrite::volatile`] otherwise.
    pub const fn durable(self, durable: bool) -> AtomicWrite {
        AtomicWrite { durable, ..self }
    }

    /// Replaces the content of `path` with `bytes`.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.write_with(path, |f| f.write_all(bytes), |_, e| e)
    }

    /// Replaces the content of `path` with what `write` writes into the (empty) temporary
    /// file, for content that is streamed rather than held. An error of `write` is returned
    /// as it is; a failure of the write's own steps goes through `fail`, told which step
    /// failed. Either way the temporary file is removed and the target left as it was.
    pub fn write_with<E>(
        &self,
        path: &Path,
        write: impl FnOnce(&mut File) -> Result<(), E>,
        fail: impl FnOnce(Step, io::Error) -> E,
    ) -> Result<(), E> {
        let dir = folder_of(path);
        let (tmp, mut file) = match self.create_temp(dir, path) {
            Ok(created) => created,
            Err(e) => return Err(fail(Step::Create, e)),
        };
        let result = match write(&mut file) {
            Err(e) => Err(e),
            Ok(()) => self
                .put_in_place(file, &tmp, path)
                .map_err(|(step, e)| fail(step, e)),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        if self.durable {
            sync_folder(dir);
        }
        Ok(())
    }

    /// Flushes the written temporary file (when durable) and renames it over `target`.
    fn put_in_place(&self, file: File, tmp: &Path, target: &Path) -> Result<(), (Step, io::Error)> {
        if self.durable {
            file.sync_all().map_err(|e| (Step::Sync, e))?;
        }
        drop(file);
        fs::rename(tmp, target).map_err(|e| (Step::Rename, e))
    }

    /// Creates a new, uniquely named temporary file in `dir` for `target`.
    fn create_temp(&self, dir: &Path, target: &Path) -> io::Result<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut tries = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.{}-{nanos}-{n}.tmp", std::process::id()));
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            if let Some(mode) = self.mode {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(mode);
            }
            match opts.open(&tmp) {
                Ok(f) => return Ok((tmp, f)),
                // Another process's temporary file of the same name: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename in `dir` durable, where the system and the file system allow it.
pub fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        write_atomic(&path, b"").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_volatile_write_replaces_the_content_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("piece");
        fs::write(&path, b"old").unwrap();
        AtomicWrite::new().volatile().write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["piece"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_content_and_removes_the_temporary_file() {
        // The target is a folder that holds a file: renaming a file over it fails, for
        // root too (permissions would not stop root).
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"old").unwrap();
        let mut failed_step = None;
        let result = AtomicWrite::new().write_with(
            &target,
            |f| f.write_all(b"new"),
            |step, e| {
                failed_step = Some(step);
                e
            },
        );
        assert!(result.is_err());
        assert_eq!(failed_step, Some(Step::Rename));
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["target"]);
    }

    #[test]
    fn a_failing_writer_keeps_the_old_content_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        fs::write(&path, b"old").unwrap();
        let result: Result<(), &str> = AtomicWrite::new().write_with(
            &path,
            |f| {
                f.write_all(b"half of it").unwrap();
                Err("the source ran dry")
            },
            |_, _| "not a step failure",
        );
        assert_eq!(result, Err("the source ran dry"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["bundle"]);
    }

    #[test]
    fn a_missing_folder_fails_at_create_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("file");
        let mut failed_step = None;
        let result = AtomicWrite::new().write_with(
            &path,
            |f| f.write_all(b"x"),
            |step, e| {
                failed_step = Some(step);
                e
            },
        );
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(failed_step, Some(Step::Create));
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("state.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("a/state.json")), Path::new("a"));
    }

    #[cfg(unix)]
    #[test]
    fn a_mode_is_the_new_file_s_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        AtomicWrite::new()
            .mode(0o600)
            .write(&path, b"secret")
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        AtomicWrite::new().volatile().write(path, &[t; 64]).unwrap();
                    }
                });
            }
        });
        let content = fs::read(&path).unwrap();
        assert_eq!(content.len(), 64);
        assert!(
            content.iter().all(|&b| b == content[0]),
            "one writer's whole content"
        );
        assert_eq!(names(dir.path()), ["shared"]);
    }
}
