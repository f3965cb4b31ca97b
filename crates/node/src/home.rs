//! The home folder: where a node keeps everything.
//!
//! ```text
//! HOME/
//!   ferry.db         the node's SQLite store (mode 0600): identity, keys, data, history
//!   quarantine/      copies of refused inputs, each with a .reason.txt beside it
//!   outbox/          bundles being written (temporary)
//!   ferry.toml       settings of the email, SMS and serial transports (optional)
//!   transports/NAME/ each transport's durable state (queued and partly received messages)
//! ```

use crate::NodeError;
use std::path::{Path, PathBuf};

/// A node's home folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
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
            .ok_or_else(|| {
                NodeError::Input(
                    "cannot find a data folder for this user; give one with --home DIR or FERRY_HOME"
                        .into(),
                )
            })
    }

    /// A home at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
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
            NodeError::Input(format!(
                "{} already exists; choose another file name (ferry never overwrites it)",
                path.display()
            ))
        } else {
            NodeError::io("cannot create", path, e)
        }
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| NodeError::io("cannot write", path, e))
}
