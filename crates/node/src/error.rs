//! The node's errors: each one a sentence a person can act on.

use crate::exchange::{FileResult, ImportReport};
use ferry_store::StoreError;
use ferry_sync::IngestError;
use std::path::{Path, PathBuf};

/// What kind of failure a [`NodeError`] is: what a caller needs to choose its exit status and
/// its advice without reading the message. [`NodeError::kind`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The command line itself is wrong, whatever the data: a name too long or reserved, an
    /// address that is not one, a `FIELD=VALUE` without `=`. The CLI exits 2 for these.
    Usage,
    /// Data a person gave cannot be used as it is: a file to load, an invitation or its code,
    /// a value too large for a change, records that the format asked for cannot hold.
    Input,
    /// The settings (`ferry.toml`, the options that override them, the environment) are
    /// missing something or hold something that is not valid.
    Settings,
    /// A folder, stick or path given as a medium cannot be used that way: not a folder, a
    /// level too deep, a link where a folder should be, no bundle of this dataset in it, full
    /// or read-only.
    Medium,
    /// This node's state does not allow it: no node here (or already one), not the admin,
    /// nobody to send to, nothing to resolve, no such collection, a file already there.
    State,
    /// Reading or writing a file, folder or the output failed; the line says what the system
    /// said.
    Io,
    /// A link, gateway, mail server or the station at the other end failed or refused; a
    /// bundle that could not go is kept to be sent later.
    Transport,
    /// The store failed: a damaged or busy database, or one written by a newer ferry.
    Store,
    /// The sync engine refused this node's own change, or ferry contradicted itself: a bug in
    /// ferry or a damaged store.
    Internal,
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The home folder holds no node yet.
    #[error(
        "no ferry node in {0}; create one with `ferry init --name LABEL --create DATASET` or `ferry init --join INVITE_FILE`"
    )]
    NoNode(PathBuf),
    /// `init` on a home that already holds a node.
    #[error("{0} already holds a ferry node; use another --home for a second node")]
    AlreadyInitialized(PathBuf),
    /// Something only an admin can do was asked of another member.
    #[error(
        "only the dataset's admins ({admin}) can {to}; an admin can make this laptop one with `ferry member promote`"
    )]
    NotAdmin {
        /// The admins' labels.
        admin: String,
        /// What only the admin can do ("invite new members", "set merge rules").
        to: &'static str,
    },
    /// An invitation file could not be used.
    #[error("{path} is not a usable ferry invitation: {reason}")]
    BadInvite {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A backup file cannot be used: not one, damaged, or the code does not open it.
    #[error("{}: {reason}", path.display())]
    BadBackup {
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
    /// An app's attached SQLite table could not be attached, captured or written.
    #[error(transparent)]
    Attach(#[from] ferry_attach::AttachError),
    /// A bundle could not be sent now and is kept to be sent later (message, how many are
    /// waiting).
    #[error("{0}")]
    Queued(String, usize),
    /// A folder given as a medium is not a folder (or does not exist).
    #[error("{} is not a folder; give the folder of the USB stick or shared drive", .0.display())]
    NotAFolder(PathBuf),
    /// A folder or path given as a medium cannot be used as it is (a level too deep, a link or
    /// device where a folder should be); the message says which folder to give instead.
    #[error("{0}")]
    Medium(String),
    /// `ferry.toml` or the options that override it are not valid, or lack what the command
    /// needs.
    #[error("{0}")]
    Settings(String),
    /// No home folder was given and the platform has no data folder for this user.
    #[error("cannot find a data folder for this user; give one with --home DIR or FERRY_HOME")]
    NoDataFolder,
    /// Nobody to send to: no member has published an address of this kind, and none was
    /// given.
    #[error("{0}")]
    NoRecipient(String),
    /// `incr` on a field that is not a counter, or `add`/`remove` on one that is not a set:
    /// the edit would not mean what it says (a usage mistake, exit status 2).
    #[error("{}", wrong_rule(collection, field, *rule, verb))]
    WrongRule {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
        /// Its rule here.
        rule: ferry_model::Rule,
        /// The command: `incr`, `add` or `remove`.
        verb: &'static str,
    },
    /// No record of this id in the collection (live or deleted), and no history of one.
    #[error("no record {id:?} in collection {collection:?}")]
    NoRecord {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// `restore` of a record that is not deleted.
    #[error(
        "{collection}/{id} is not deleted: nothing to restore (`ferry log {collection} {id}` shows its history; `ferry put` changes a value)"
    )]
    NotDeleted {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// `restore` of a record whose values before its delete are no longer held here.
    #[error(
        "{collection}/{id} was deleted, but the values it had before are no longer all held on this laptop (its history was compacted away or purged, and restoring part of them would look complete); a laptop that still holds that history can restore it, or write the values again with `ferry put`"
    )]
    HistoryGone {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// `resolve` of a field that has no conflict here.
    #[error(
        "{collection}/{id} has no conflict on {field:?} here; see `ferry conflicts`, or use `ferry put` to change a value"
    )]
    NoConflict {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// The field named.
        field: String,
    },
    /// `resolve` of a record deleted on one laptop and edited on another (the field
    /// `(record)`), which `delete` or `put` settles.
    #[error(
        "a record deleted on one laptop and edited on another is resolved with `ferry delete COLLECTION ID` (delete it for everyone) or `ferry put COLLECTION ID FIELD=VALUE` (keep it)"
    )]
    ResolveDeleted,
    /// `rejoin` on a laptop the admin has not refused (as far as it knows).
    #[error(
        "the admin has not refused this laptop as {label} (member #{member}): there is nothing to rejoin (if the admin told you to, add --force)"
    )]
    NotRefused {
        /// This laptop's label.
        label: String,
        /// Its member number.
        member: u32,
    },
    /// A file ferry was asked to create is already there (ferry never overwrites it).
    #[error("{} already exists; choose another file name (ferry never overwrites it)", .0.display())]
    AlreadyExists(PathBuf),
    /// The station at the other end of a serial link refused this one, was refused, or speaks
    /// an exchange this one cannot.
    #[error("{0}")]
    Peer(String),
    /// Reading a file to load (or standard input) failed.
    #[error("{}cannot read: {}", line.map(|l| format!("line {l}: ")).unwrap_or_default(), ferry_transport::plain_io(source))]
    ReadInput {
        /// The line being read, when known.
        line: Option<u64>,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A file to load is not CSV that can be read (the CSV reader's own words).
    #[error("cannot read the CSV: {0}")]
    BadCsv(String),
    /// A field holds what a CSV cell cannot (a set, raw bytes): nothing was written.
    #[error(
        "{collection}/{id} field {field:?} {what}, which a CSV cell cannot hold; nothing was written — dump {collection} without --csv (JSON lines keeps it)"
    )]
    NotCsv {
        /// The collection.
        collection: String,
        /// The record.
        id: String,
        /// The field.
        field: String,
        /// What it holds ("is a set", "holds raw bytes").
        what: &'static str,
    },
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
    /// The home is protected by a passphrase and none was given.
    #[error(
        "{} is protected by a passphrase: run the command in a terminal to type it, or set FERRY_PASSPHRASE_FILE to a file that holds it",
        .0.display()
    )]
    PassphraseNeeded(PathBuf),
    /// The passphrase given does not open the home.
    #[error(
        "the passphrase does not open {}: type it again (letters, spaces and case count)",
        .0.display()
    )]
    WrongPassphrase(PathBuf),
    /// A passphrase change stopped midway (the power failed); `which` passphrase opens it.
    #[error(
        "a passphrase change on {} stopped before it finished: it opens with {which}; type that one",
        home.display()
    )]
    PassphraseChangeUnfinished {
        /// The home.
        home: PathBuf,
        /// Which passphrase opens it now.
        which: &'static str,
    },
    /// `store.key` is damaged.
    #[error(
        "{} is damaged: the store cannot be opened without it; restore it from a backup of the home folder",
        .0.display()
    )]
    DamagedStoreKey(PathBuf),
    /// This node's identity in the store does not decode (a damaged store).
    #[error("the node identity in {} is corrupt: {source}", path.display())]
    CorruptIdentity {
        /// The database file.
        path: PathBuf,
        /// Why it does not decode.
        #[source]
        source: postcard::Error,
    },
    /// The sync engine refused a local operation: an I/O failure while a bundle was written, a
    /// change too large for the format, or (for anything else) a bug or a damaged store.
    /// Storage failures arrive as [`NodeError::Store`] instead.
    #[error(transparent)]
    Engine(Box<IngestError<StoreError>>),
    /// A reader of the changes feed asked from a cursor older than the history this laptop
    /// still holds (compaction dropped the changes in between).
    #[error(
        "changes of member {author} from number {seq} on are no longer held here (compacted): list the records again, then follow the feed from the cursor the list gives"
    )]
    FeedGone {
        /// The author whose changes are gone.
        author: u32,
        /// The first change number the reader lacks.
        seq: u64,
    },
    /// ferry contradicted itself (a bug); the message says where.
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use NodeError as E;
        match self {
            E::BadArgument(_) | E::WrongRule { .. } => ErrorKind::Usage,
            E::BadInvite { .. }
            | E::BadBackup { .. }
            | E::InviteCodeNeeded(_)
            | E::WrongInviteCode { .. }
            | E::LoadRefused { .. }
            | E::BadCsv(_)
            | E::NotCsv { .. } => ErrorKind::Input,
            E::Settings(_) | E::NoDataFolder | E::PassphraseNeeded(_) => ErrorKind::Settings,
            E::WrongPassphrase(_) | E::PassphraseChangeUnfinished { .. } => ErrorKind::Input,
            E::DamagedStoreKey(_) => ErrorKind::Store,
            E::NotAFolder(_) | E::Medium(_) | E::NothingToImport(_) => ErrorKind::Medium,
            E::NoNode(_)
            | E::AlreadyInitialized(_)
            | E::NotAdmin { .. }
            | E::NoCollection { .. }
            | E::NoRecipient(_)
            | E::NoConflict { .. }
            | E::ResolveDeleted
            | E::NotRefused { .. }
            | E::NoRecord { .. }
            | E::NotDeleted { .. }
            | E::HistoryGone { .. }
            | E::AlreadyExists(_)
            | E::FeedGone { .. } => ErrorKind::State,
            E::Io { .. } | E::ReadInput { .. } => ErrorKind::Io,
            E::Peer(_) | E::Queued(..) => ErrorKind::Transport,
            E::Transport(e) => transport_kind(e),
            E::Sms(e) => sms_kind(e),
            E::Serial(e) => serial_kind(e),
            E::Email(e) => email_kind(e),
            E::Attach(e) => match e {
                ferry_attach::AttachError::Sqlite { .. } => ErrorKind::Io,
                ferry_attach::AttachError::AppWrote { .. } => ErrorKind::State,
                _ => ErrorKind::Input,
            },
            E::Store(_) | E::CorruptIdentity { .. } => ErrorKind::Store,
            E::Engine(e) => engine_kind(e),
            E::Internal(_) => ErrorKind::Internal,
            E::WriteAfterImport { source, .. } => source.kind(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The engine's error, kept typed: a storage failure is the store's error, as if the store
/// had been called directly.
impl From<IngestError<StoreError>> for NodeError {
    fn from(e: IngestError<StoreError>) -> Self {
        match e {
            IngestError::Storage(e) => NodeError::Store(e),
            e => NodeError::Engine(Box::new(e)),
        }
    }
}

fn engine_kind(e: &IngestError<StoreError>) -> ErrorKind {
    use ferry_model::commit::CommitError as C;
    match e {
        IngestError::Storage(_) => ErrorKind::Store,
        IngestError::Bundle(ferry_bundle::BundleError::Io(_)) => ErrorKind::Io,
        // This node's own change does not fit the format: what was given is too large.
        IngestError::Commit {
            source: C::TooLarge(_) | C::Limit(_),
            ..
        } => ErrorKind::Input,
        _ => ErrorKind::Internal,
    }
}

fn transport_kind(e: &ferry_transport::TransportError) -> ErrorKind {
    use ferry_transport::TransportError as T;
    match e {
        T::Io { .. } => ErrorKind::Io,
        T::Full { .. } | T::ReadOnly { .. } => ErrorKind::Medium,
        _ => ErrorKind::Transport,
    }
}

fn sms_kind(e: &ferry_transport_sms::SmsError) -> ErrorKind {
    use ferry_transport_sms::SmsError as S;
    match e {
        S::Config { .. } | S::PasswordMissing { .. } => ErrorKind::Settings,
        S::NoRecipient => ErrorKind::State,
        _ => ErrorKind::Transport,
    }
}

fn serial_kind(e: &ferry_transport_serial::SerialError) -> ErrorKind {
    use ferry_transport_serial::SerialError as S;
    match e {
        S::Config { .. } | S::NoDevice => ErrorKind::Settings,
        _ => ErrorKind::Transport,
    }
}

fn email_kind(e: &ferry_transport_email::EmailError) -> ErrorKind {
    use ferry_transport_email::EmailError as M;
    match e {
        M::Setting { .. } | M::MissingSetting { .. } | M::MissingSecret { .. } => {
            ErrorKind::Settings
        }
        M::NoRecipients => ErrorKind::State,
        _ => ErrorKind::Transport,
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

/// "visits.village is a conflict field: `ferry incr` works on counter fields …".
fn wrong_rule(collection: &str, field: &str, rule: ferry_model::Rule, verb: &str) -> String {
    let (wanted, what) = match verb {
        "incr" => (
            "counter",
            "counter fields, whose increments made on different laptops add up",
        ),
        _ => ("set", "set fields, which hold a set of words"),
    };
    format!(
        "{collection}.{field} is a {rule} field (its merge rule), and `ferry {verb}` works only on {what}: to make it one, the admin runs `ferry rule set {collection} {field} {wanted}` (on another laptop, sync first: rules arrive with the admin's bundles); to change its value, use `ferry put {collection} ID {field}=VALUE`",
        rule = rule.name()
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileFormat, Home, NoProgress, Node};

    /// Checks an error's kind, and that its message says `says` (what is wrong and what to
    /// do).
    #[track_caller]
    fn check<T>(r: Result<T, NodeError>, kind: ErrorKind, says: &[&str]) {
        let Err(e) = r else {
            panic!("no error, but one of kind {kind:?} was expected");
        };
        let text = e.to_string();
        assert_eq!(e.kind(), kind, "{text}");
        for s in says {
            assert!(text.contains(s), "{text:?} does not say {s:?}");
        }
    }

    fn node() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let node = Node::create(&home, "hq", "visits").unwrap();
        (dir, node)
    }

    /// A reader that fails with `kind` once `ok` bytes were read.
    struct Failing(&'static [u8], std::io::ErrorKind);

    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(self.1.into());
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn state_errors_say_which_command_comes_first() {
        let (dir, mut node) = node();
        check(
            Node::open(&Home::at(dir.path().join("empty"))),
            ErrorKind::State,
            &[
                "no ferry node in",
                "create one with `ferry init --name LABEL",
            ],
        );
        check(
            Node::create(node.home(), "hq", "visits"),
            ErrorKind::State,
            &["already holds a ferry node", "use another --home"],
        );
        check(
            node.resolve("visits", "v-1", "weight", ferry_model::Value::Int(1)),
            ErrorKind::State,
            &["no conflict on \"weight\"", "see `ferry conflicts`"],
        );
        check(
            node.require_collection("visits"),
            ErrorKind::State,
            &[
                "no collection named \"visits\"",
                "add some with `ferry put`",
            ],
        );
        let taken = dir.path().join("clinic-a.invite");
        std::fs::write(&taken, "").unwrap();
        check(
            node.invite(&taken, Some("clinic-a")),
            ErrorKind::State,
            &["already exists", "choose another file name"],
        );
        check(
            node.send_sms(
                &Default::default(),
                &["+254733000111".into()],
                true,
                &NoProgress,
            ),
            ErrorKind::Settings,
            &[
                "SMS is not set up",
                "add [sms] with gateway and from",
                "--gateway",
            ],
        );
    }

    #[test]
    fn usage_mistakes_are_their_own_kind() {
        let (_dir, mut node) = node();
        check(
            node.put("_members", "1", &[("x".into(), ferry_model::Value::Int(1))]),
            ErrorKind::Usage,
            &["reserved for ferry's own metadata"],
        );
        check(
            node.put(
                "visits",
                "v-1",
                &[("id".into(), ferry_model::Value::Int(1))],
            ),
            ErrorKind::Usage,
            &["choose another field name"],
        );
        check(
            node.set_contact(None, None),
            ErrorKind::Usage,
            &["needs --email ADDRESS, --phone +NUMBER"],
        );
    }

    #[test]
    fn a_medium_that_is_not_usable_says_which_folder_to_give() {
        let (dir, mut node) = node();
        let file = dir.path().join("stick.txt");
        std::fs::write(&file, "").unwrap();
        check(
            node.dry_run(&file, true, &NoProgress),
            ErrorKind::Medium,
            &["is not a folder", "give the folder of the USB stick"],
        );
        check(
            node.sync(&file, &NoProgress),
            ErrorKind::Medium,
            &["is not a folder"],
        );
        // The stick's ferry/ folder instead of the stick.
        let ferry = dir.path().join("usb").join("ferry");
        std::fs::create_dir_all(&ferry).unwrap();
        check(
            node.sync(&ferry, &NoProgress),
            ErrorKind::Medium,
            &["one level too deep", "give the stick's top folder instead"],
        );
    }

    #[test]
    fn bad_files_and_failed_reads_name_the_line() {
        let (dir, mut node) = node();
        let load = |node: &mut Node, input: &mut dyn std::io::BufRead| {
            node.load("visits", FileFormat::JsonLines, input, None, &NoProgress)
        };
        check(
            load(
                &mut node,
                &mut &b"{\"id\": \"v-1\", \"a\": 1}\nnot json\n"[..],
            ),
            ErrorKind::Input,
            &["line 2", "nothing was loaded"],
        );
        let mut failing = std::io::BufReader::new(Failing(
            b"{\"id\": \"v-1\", \"a\": 1}\n",
            std::io::ErrorKind::PermissionDenied,
        ));
        check(
            load(&mut node, &mut failing),
            ErrorKind::Io,
            &[
                "line 2: cannot read: permission denied",
                "check its owner and mode",
            ],
        );
        // A broken ferry.toml.
        std::fs::write(node.home().config(), "[sms\n").unwrap();
        check(
            node.config_section("sms"),
            ErrorKind::Settings,
            &["is not valid TOML"],
        );
        drop(dir);
    }

    #[test]
    fn engine_errors_keep_their_kind() {
        let e = |e: IngestError<StoreError>| NodeError::from(e);
        // A storage failure is the store's error, with the store's advice.
        let busy = e(IngestError::Storage(StoreError::Busy));
        assert!(matches!(busy, NodeError::Store(StoreError::Busy)));
        check(
            Err::<(), _>(busy),
            ErrorKind::Store,
            &["wait for it to finish"],
        );
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        check(
            Err::<(), _>(e(IngestError::Bundle(ferry_bundle::BundleError::Io(full)))),
            ErrorKind::Io,
            &["i/o error"],
        );
        let too_large = IngestError::Commit {
            author: ferry_model::MemberId(1),
            seq: 7,
            source: ferry_model::commit::CommitError::TooLarge(20_000_000),
        };
        check(
            Err::<(), _>(e(too_large)),
            ErrorKind::Input,
            &["commit of 20000000 bytes exceeds the limit"],
        );
        check(
            Err::<(), _>(e(IngestError::Changed)),
            ErrorKind::Internal,
            &["the bundle changed after it was checked"],
        );
        // The engine's error stays reachable, typed.
        let changed = e(IngestError::Changed);
        assert!(matches!(changed, NodeError::Engine(b) if matches!(*b, IngestError::Changed)));
    }

    #[test]
    fn transport_errors_that_are_settings_say_so() {
        check(
            Err::<(), _>(ferry_transport_serial::SerialError::NoDevice.into()),
            ErrorKind::Settings,
            &[],
        );
        check(
            Err::<(), _>(NodeError::Queued("kept in the outbox".into(), 1)),
            ErrorKind::Transport,
            &["kept in the outbox"],
        );
        // A sync whose write failed has the kind of that failure.
        let io = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        check(
            Err::<(), _>(NodeError::WriteAfterImport {
                import: Box::default(),
                source: Box::new(NodeError::io("cannot write", "/media/usb/ferry", io)),
            }),
            ErrorKind::Io,
            &["nothing new was read", "the disk is read-only"],
        );
    }
}
