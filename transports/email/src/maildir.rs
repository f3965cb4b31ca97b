//! Receiving from a local Maildir (a mail server on this machine delivers into it): new
//! messages are found in `new/` and `cur/`, and processed ones are moved to a Maildir++
//! subfolder (`Ferry/Processed` is `.Ferry.Processed`), keeping their flags.

use crate::error::EmailError;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A Maildir folder.
#[derive(Clone, Debug)]
pub(crate) struct Maildir {
    root: PathBuf,
}

/// A message file's name without its `:2,FLAGS` info part: stable while flags change.
fn base_name(file: &str) -> &str {
    file.split_once(':').map_or(file, |(b, _)| b)
}

impl Maildir {
    pub(crate) fn new(root: PathBuf) -> Maildir {
        Maildir { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn key(&self) -> String {
        format!("maildir {}", self.root.display())
    }

    /// Every message in `new/` and `cur/`: (base name, path), sorted by name.
    pub(crate) fn messages(&self) -> Result<Vec<(String, PathBuf)>, EmailError> {
        if !self.root.join("cur").is_dir() && !self.root.join("new").is_dir() {
            return Err(EmailError::Setting {
                key: "maildir",
                problem: format!(
                    "{} is not a Maildir (it has no cur/ or new/ folder)",
                    self.root.display()
                ),
            });
        }
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(EmailError::io("cannot read Maildir folder", dir, e)),
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                out.push((base_name(&name).to_string(), e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The Maildir++ folder for `folder` (`Ferry/Processed` → `.Ferry.Processed`), created
    /// (with the owner of the Maildir) when missing.
    pub(crate) fn ensure_folder(&self, folder: &str) -> Result<PathBuf, EmailError> {
        let dir = self.root.join(format!(".{}", folder.replace('/', ".")));
        for sub in ["", "cur", "new", "tmp"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                fs::create_dir_all(&d)
                    .map_err(|e| EmailError::io("cannot create Maildir folder", &d, e))?;
                self.same_owner(&d);
            }
        }
        let marker = dir.join("maildirfolder");
        if !marker.exists() {
            fs::write(&marker, b"")
                .map_err(|e| EmailError::io("cannot create Maildir folder", &marker, e))?;
            self.same_owner(&marker);
        }
        Ok(dir)
    }

    /// Gives `path` the owner of the Maildir, so the mail server can still read it when ferry
    /// runs as another user (root, say).
    fn same_owner(&self, path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = fs::metadata(&self.root) {
                let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
            }
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    /// Moves messages into `dest` (from [`Maildir::ensure_folder`]), keeping their flags:
    /// each given by its base name and where it was when read. A message still there moves
    /// at once; the folder is listed (once) only for those that moved since. Returns how
    /// many were moved (a message no longer there is skipped).
    pub(crate) fn move_messages(
        &self,
        messages: &[(String, Option<PathBuf>)],
        dest: &Path,
    ) -> Result<usize, EmailError> {
        let mut moved = 0;
        let mut parents = std::collections::BTreeSet::new();
        let mut lost: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (base, at) in messages {
            let inside = at.as_ref().filter(|p| {
                p.starts_with(&self.root)
                    && p.parent().is_some_and(|d| d.parent() == Some(&self.root))
            });
            match inside {
                Some(path) if self.move_one(path, dest)? => {
                    moved += 1;
                    parents.extend(path.parent().map(Path::to_path_buf));
                }
                _ => {
                    lost.insert(base.as_str());
                }
            }
        }
        if !lost.is_empty() {
            for (base, path) in self.messages()? {
                if lost.contains(base.as_str()) && self.move_one(&path, dest)? {
                    moved += 1;
                    parents.extend(path.parent().map(Path::to_path_buf));
                }
            }
        }
        if moved > 0 {
            crate::store::sync_dir(&dest.join("cur"));
            for p in parents {
                crate::store::sync_dir(&p);
            }
        }
        Ok(moved)
    }

    /// Moves one message file into `dest`'s `cur/`. Returns false when it is not there.
    fn move_one(&self, path: &Path, dest: &Path) -> Result<bool, EmailError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A message in new/ has no info part yet; in cur/ it must have one.
        let name = if name.contains(':') {
            name
        } else {
            format!("{name}:2,")
        };
        match fs::rename(path, dest.join("cur").join(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(EmailError::io("cannot move", path, e)),
        }
    }
}
