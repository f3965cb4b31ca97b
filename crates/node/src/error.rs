//! The node's errors: each one a sentence a person can act on.

use std::path::PathBuf;

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
    #[error("{what} {path}: {source}")]
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
    /// The sync engine refused a local operation (a bug or a corrupt store).
    #[error("{0}")]
    Engine(String),
}

impl NodeError {
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
