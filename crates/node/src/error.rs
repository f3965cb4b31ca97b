//! The node's errors: each one a sentence a person can act on.

use crate::exchange::{FileResult, ImportReport};
use std::path::{Path, PathBuf};

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The home folder holds no node yet.
    #[error(
        "no ferry node in {0}; create one with `ferry init --name LABEL --create DATASET` or `ferry init --name LABEL --join INVITE_FILE`"
    )]
    NoNode(PathBuf),
    /// `init` on a home that already holds a node.
    #[error("{0} already holds a ferry node; use another --home for a second node")]
    AlreadyInitialized(PathBuf),
    /// Something other than the admin tried to invite.
    #[error("only the dataset's admin ({admin}) can invite new members")]
    NotAdmin {
        /// The admin's label.
        admin: String,
    },
    /// An invitation file could not be used.
    #[error("{path} is not a usable ferry invitation: {reason}")]
    BadInvite {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The invitation is sealed with a one-time code and none was given.
    #[error(
        "{0} is locked with a one-time code: give it with --code XXXX-XXXX-XXXX or in the environment variable FERRY_INVITE_CODE (the admin was shown it by `ferry invite`)"
    )]
    InviteCodeNeeded(PathBuf),
    /// The code given does not open the invitation (or is not a code at all).
    #[error(
        "the code does not open the invitation {path}{}: ask the admin who ran `ferry invite` for this file's code (codes look like XXXX-XXXX-XXXX)",
        .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    WrongInviteCode {
        /// The invitation file.
        path: PathBuf,
        /// Why the code is not even a code, if it is not.
        reason: Option<String>,
    },
    /// A file or folder operation failed.
    #[error("{}", io_line(what, path, source))]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    /// A transport failed.
    #[error(transparent)]
    Transport(#[from] ferry_transport::TransportError),
    /// The SMS transport failed.
    #[error(transparent)]
    Sms(#[from] ferry_transport_sms::SmsError),
    /// The serial transport failed.
    #[error(transparent)]
    Serial(#[from] ferry_transport_serial::SerialError),
    /// The email transport failed.
    #[error(transparent)]
    Email(#[from] ferry_transport_email::EmailError),
    /// A bundle could not be sent now and is kept to be sent later (message, how many are
    /// waiting).
    #[error("{0}")]
    Queued(String, usize),
    /// Input a person gave is not valid.
    #[error("{0}")]
    Input(String),
    /// A file given to `load` was refused as a whole: nothing from it was written.
    #[error("{problem}; nothing was loaded — {advice}")]
    LoadRefused {
        /// What is wrong, and where (a line number, the columns found).
        problem: String,
        /// What to do about it.
        advice: String,
    },
    /// An argument of the command is malformed whatever the data (a name too long or
    /// reserved, an address that is not one, no option where one is needed): a usage
    /// mistake, which the CLI reports with exit status 2.
    #[error("{0}")]
    BadArgument(String),
    /// No record of this collection is here, live or deleted (a typo, or the wrong laptop).
    #[error("{}", no_collection(name, here))]
    NoCollection {
        /// The name asked for.
        name: String,
        /// The collections this laptop has, with their live records.
        here: Vec<(String, u64)>,
    },
    /// The paths given to `import` hold no bundle of this dataset (nothing was read).
    #[error("{0}")]
    NothingToImport(Box<NothingToImport>),
    /// `sync` imported from the medium, then could not write to it: what was imported is
    /// applied and kept.
    #[error("{}; but writing to the medium failed: {source}", imported(import))]
    WriteAfterImport {
        /// What the import half did (applied, and kept).
        import: Box<ImportReport>,
        /// Why the export half failed.
        #[source]
        source: Box<NodeError>,
    },
    /// The sync engine refused a local operation (a bug or a corrupt store).
    #[error("{0}")]
    Engine(String),
}

impl NodeError {
    /// Whether this is a usage mistake (the command line itself is wrong), as opposed to a
    /// failure of the work; the CLI exits 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(self, NodeError::BadArgument(_))
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

impl<E: std::error::Error + 'static> From<ferry_sync::IngestError<E>> for NodeError {
    fn from(e: ferry_sync::IngestError<E>) -> Self {
        NodeError::Engine(e.to_string())
    }
}

/// An I/O failure in plain words, naming the path: "no such file or folder: PATH" for what
/// was to be read, else "WHAT PATH: why" (a file that cannot be created for want of its
/// folder says so).
fn io_line(what: &str, path: &Path, e: &std::io::Error) -> String {
    let why = ferry_transport::plain_io(e);
    let reading = what.starts_with("cannot read") || what.starts_with("cannot open");
    match e.kind() {
        std::io::ErrorKind::NotFound if reading => format!("{why}: {}", path.display()),
        std::io::ErrorKind::NotFound => format!(
            "{what} {}: {why} (the folder it goes in does not exist)",
            path.display()
        ),
        _ => format!("{what} {}: {why}", path.display()),
    }
}

/// "no collection named X; collections here: a (3 records), …".
fn no_collection(name: &str, here: &[(String, u64)]) -> String {
    const SHOWN: usize = 10;
    if here.is_empty() {
        return format!(
            "no collection named {name:?}: this laptop has no records yet (add some with `ferry put` or `ferry load`, or sync to receive them)"
        );
    }
    let mut list: Vec<String> = here
        .iter()
        .take(SHOWN)
        .map(|(c, n)| match n {
            1 => format!("{c} (1 record)"),
            n => format!("{c} ({n} records)"),
        })
        .collect();
    if here.len() > SHOWN {
        list.push(format!(
            "and {} more (`ferry collections` lists them)",
            here.len() - SHOWN
        ));
    }
    format!(
        "no collection named {name:?}; collections here: {}",
        list.join(", ")
    )
}

/// What a sync's import half did, in a few words, for the line that says its export failed.
fn imported(r: &ImportReport) -> String {
    let (mut applied, mut new) = (0u64, 0u64);
    for f in &r.files {
        if let FileResult::Applied { new: n, .. } = f.result {
            applied += 1;
            new += n;
        }
    }
    match applied {
        0 => "nothing new was read from the medium".to_string(),
        1 => format!("imported 1 bundle from the medium ({new} new changes, applied and kept)"),
        n => format!("imported {n} bundles from the medium ({new} new changes, applied and kept)"),
    }
}

/// Why `import` read nothing: the paths given hold no bundle of this dataset.
#[derive(Debug, Clone)]
pub struct NothingToImport {
    /// The paths given.
    pub paths: Vec<PathBuf>,
    /// This dataset: id (hex) and name.
    pub dataset: (String, String),
    /// Files there not named as ferry's files: how many, and the first few names.
    pub other_files: (u64, Vec<String>),
    /// Other datasets whose bundles are there: id (hex) and how many bundles.
    pub other_datasets: Vec<(String, u64)>,
    /// Entries left alone (links, devices): how many, and the first, with why.
    pub skipped: (usize, Option<String>),
}

impl std::fmt::Display for NothingToImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let where_ = self
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let (id, name) = &self.dataset;
        if !self.other_datasets.is_empty() {
            let others = self
                .other_datasets
                .iter()
                .map(|(d, n)| match n {
                    1 => format!("{d}, 1 bundle"),
                    n => format!("{d}, {n} bundles"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            return write!(
                f,
                "only bundles of another dataset in {where_} (dataset {others}); this laptop belongs to dataset {name:?} ({id}), and nothing was read: bring a stick that was synced with a laptop of {name:?}, or use the home folder of the other dataset (--home)"
            );
        }
        let (n, names) = &self.other_files;
        let found = match n {
            0 => match &self.skipped {
                (0, _) => "it holds no files".to_string(),
                (1, Some(first)) => format!("only an entry ferry does not read: {first}"),
                (n, first) => format!(
                    "only {n} entries ferry does not read, such as {}",
                    first.as_deref().unwrap_or("?")
                ),
            },
            _ => {
                let more = if *n > names.len() as u64 { ", …" } else { "" };
                format!(
                    "{n} other file{}: {}{more}",
                    if *n == 1 { "" } else { "s" },
                    names.join(", ")
                )
            }
        };
        write!(
            f,
            "no ferry bundles in {where_} ({found}); bundles are files named *.ferry under ferry/<dataset id>/ on a stick (for this laptop ferry/{id}/): give the stick's top folder, or the bundle files themselves"
        )
    }
}
