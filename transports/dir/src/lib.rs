//! The directory transport: bundles as files in a folder on a USB stick, an SD card or a
//! shared folder.
//!
//! - Writes are atomic (`ferry_transport::fsutil`): a file is written under a hidden
//!   temporary name, flushed to the device (`fsync`), renamed to its final name, and the
//!   folder is flushed too. A stick
//!   pulled out mid-write never shows a half file under a final name; leftover temporary
//!   files are ignored by [`DirTransport::list`] and cleaned up by later writes.
//! - Free space is checked before writing; a full or read-only medium gives a clear error
//!   and leaves no partial file.
//! - The medium is shared: reading a message leaves it in place for the next laptop. Only a
//!   message declared [`Disposition::Obsolete`] (every member holds its content) is deleted.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use ferry_transport::fsutil::{AtomicWrite, Step};
use ferry_transport::{
    Capabilities, Direction, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File-name suffix of bundles.
pub const SUFFIX: &str = ".ferry";
/// Largest file on FAT32, the usual file system of USB sticks (4 GiB − 1).
pub const MAX_FILE: u64 = (4 << 30) - 1;
/// Space kept free beyond a file's size (file-system metadata, directory entries).
const MARGIN: u64 = 64 * 1024;
/// Temporary files older than this are leftovers of an interrupted write.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A folder that carries bundles.
#[derive(Clone, Debug)]
pub struct DirTransport {
    folder: PathBuf,
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> TransportError {
    TransportError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

impl DirTransport {
    /// A transport over `folder` (created on first write).
    pub fn new(folder: impl Into<PathBuf>) -> DirTransport {
        DirTransport {
            folder: folder.into(),
        }
    }

    /// The folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn path_of(&self, id: &MessageId) -> Result<PathBuf, TransportError> {
        let name = &id.0;
        if name.contains(['/', '\\']) || name.starts_with('.') || !name.ends_with(SUFFIX) {
            return Err(TransportError::NotFound(id.clone()));
        }
        Ok(self.folder.join(name))
    }

    fn location(&self) -> String {
        self.folder.display().to_string()
    }

    fn classify(
        &self,
        path: &Path,
        what: &'static str,
        e: io::Error,
        needed: u64,
    ) -> TransportError {
        match e.kind() {
            io::ErrorKind::ReadOnlyFilesystem => TransportError::ReadOnly {
                location: self.location(),
            },
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => TransportError::Full {
                location: self.location(),
                needed,
                available: fs4::available_space(&self.folder).unwrap_or(0),
            },
            _ => io_err(what, path, e),
        }
    }

    /// Removes temporary files left by interrupted writes.
    fn sweep_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.folder) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Transport for DirTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "dir",
            max_message_bytes: Some(MAX_FILE),
            direction: Direction::OneWay,
            typical_latency: Duration::from_secs(7 * 24 * 3600),
            trusted_carrier: false,
            shared_medium: true,
        }
    }

    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        if len > MAX_FILE {
            return Err(TransportError::TooLarge {
                size: len,
                max: MAX_FILE,
            });
        }
        let final_name = if name.ends_with(SUFFIX) {
            name.to_string()
        } else {
            format!("{name}{SUFFIX}")
        };
        let id = MessageId(final_name.clone());
        let target = self.path_of(&id)?;
        fs::create_dir_all(&self.folder)
            .map_err(|e| self.classify(&self.folder, "cannot create folder", e, len))?;
        if let Ok(meta) = fs::metadata(&target) {
            if meta.len() == len {
                // Same content name and size: this bundle is already on the medium.
                return Ok(MessageInfo {
                    id,
                    len: Some(len),
                    location: target.display().to_string(),
                });
            }
        }
        let available = fs4::available_space(&self.folder)
            .map_err(|e| io_err("cannot read free space of", &self.folder, e))?;
        if available < len + MARGIN {
            return Err(TransportError::Full {
                location: self.location(),
                needed: len + MARGIN,
                available,
            });
        }
        self.sweep_stale();
        AtomicWrite::new().write_with(
            &target,
            |f| {
                let copied = io::copy(body, f)
                    .map_err(|e| self.classify(&target, "cannot write", e, len))?;
                if copied != len {
                    return Err(io_err(
                        "short message for",
                        &target,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{copied} of {len} bytes"),
                        ),
                    ));
                }
                Ok(())
            },
            |step, e| {
                let what = match step {
                    Step::Create => "cannot create",
                    Step::Sync => "cannot flush to the device",
                    _ => "cannot rename",
                };
                self.classify(&target, what, e, len)
            },
        )?;
        Ok(MessageInfo {
            id,
            len: Some(len),
            location: target.display().to_string(),
        })
    }

    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        let entries = match fs::read_dir(&self.folder) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read folder", &self.folder, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot read folder", &self.folder, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(SUFFIX) {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| io_err("cannot read", &entry.path(), e))?;
            if !meta.is_file() {
                continue;
            }
            out.push(MessageInfo {
                id: MessageId(name),
                len: Some(meta.len()),
                location: entry.path().display().to_string(),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        let path = self.path_of(id)?;
        match File::open(&path) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(64 * 1024, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(TransportError::NotFound(id.clone()))
            }
            Err(e) => Err(io_err("cannot open", &path, e)),
        }
    }

    fn settle(&mut self, id: &MessageId, disposition: &Disposition) -> Result<(), TransportError> {
        match disposition {
            Disposition::Processed | Disposition::Rejected { .. } | Disposition::Retry { .. } => {
                Ok(())
            }
            Disposition::Obsolete => {
                let path = self.path_of(id)?;
                match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.classify(&path, "cannot remove", e, 0)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temporary_files_are_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".abc.ferry.1-2.tmp"), b"half a bundle").unwrap();
        fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
        fs::write(dir.path().join("abc.ferry"), b"whole").unwrap();
        let mut t = DirTransport::new(dir.path());
        let listed: Vec<_> = t.list().unwrap().into_iter().map(|m| m.id.0).collect();
        assert_eq!(listed, vec!["abc.ferry"]);
    }

    #[test]
    fn names_cannot_escape_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = DirTransport::new(dir.path());
        assert!(matches!(
            t.open(&MessageId("../x.ferry".into())),
            Err(TransportError::NotFound(_))
        ));
        assert!(matches!(
            t.settle(&MessageId("/etc/passwd".into()), &Disposition::Obsolete),
            Err(TransportError::NotFound(_))
        ));
    }
}
