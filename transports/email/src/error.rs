//! The email transport's errors: one variant per thing that can go wrong, each displayed as
//! one line that says what happened, where, and what to do.

use ferry_transport::{MessageId, TransportError};
use std::path::PathBuf;

/// Why an email operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmailError {
    /// A setting in `[email]` (or the flag that overrides it) has a value that cannot work.
    #[error("email setting `{key}`: {problem}")]
    Setting {
        /// The `[email]` key (its flag has the same name with dashes).
        key: &'static str,
        /// What is wrong with it and what would be right.
        problem: String,
    },
    /// A setting the operation needs is not set.
    #[error("email setting `{key}` is not set: {hint}")]
    MissingSetting {
        /// The `[email]` key.
        key: &'static str,
        /// Where to set it.
        hint: &'static str,
    },
    /// The environment variable that should hold a password is not set.
    #[error(
        "environment variable {var} (named by `{key}`) is not set: export the password in it before running ferry"
    )]
    MissingSecret {
        /// The variable's name.
        var: String,
        /// The `[email]` key that names it.
        key: &'static str,
    },
    /// There is nobody to send to.
    #[error(
        "no email recipients: publish members' addresses with `ferry contact set --email ADDR` or pass --to ADDR"
    )]
    NoRecipients,
    /// An email address cannot be parsed.
    #[error("`{address}` is not a valid email address ({reason})")]
    BadAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// The bundle is larger than this transport carries, even split into parts.
    #[error(
        "bundle of {size} bytes exceeds the {max}-byte limit of the email transport (at most {parts} emails of max_message_bytes); raise max_message_bytes or use a USB stick"
    )]
    TooLarge {
        /// Bundle size.
        size: u64,
        /// The limit.
        max: u64,
        /// Largest number of emails one bundle may be split into.
        parts: u32,
    },
    /// The bundle read from the caller was shorter or longer than announced.
    #[error("bundle {name}: {got} bytes read, {expected} announced")]
    ShortBundle {
        /// Content name.
        name: String,
        /// Bytes actually read.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// Sending failed; the bundle waits in the outbox and is tried again later.
    #[error(
        "bundle {name} not sent yet, kept in the outbox (attempt {attempts}, next try {next_try}): {reason}"
    )]
    Queued {
        /// Content name.
        name: String,
        /// How many times sending was tried.
        attempts: u32,
        /// When the next automatic try is due, in words.
        next_try: String,
        /// The SMTP failure and what to do about it.
        reason: String,
    },
    /// The SMTP server could not be used (not reachable, refused the login, refused the
    /// message).
    #[error("SMTP server {server}: {detail}")]
    Smtp {
        /// The server URL.
        server: String,
        /// What failed and what to do.
        detail: String,
    },
    /// The IMAP server could not be used.
    #[error("IMAP server {server}: {detail}")]
    Imap {
        /// The server URL.
        server: String,
        /// What failed and what to do.
        detail: String,
    },
    /// A file in the state folder, a Maildir or a saved email could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A file in the state folder is damaged (not written by this version, or cut short).
    #[error(
        "{}: {reason}; move it aside and run again (received parts may have to be fetched again)", path.display()
    )]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No received bundle or queued email has this id.
    #[error("no email bundle {0}")]
    NotFound(MessageId),
}

impl EmailError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EmailError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Errors keep their [`EmailError`] inside: a caller holding a [`TransportError::Io`] can get
/// it back with `source.get_ref().and_then(|e| e.downcast_ref::<EmailError>())` (to tell a
/// queued send from a failed one, for instance).
impl From<EmailError> for TransportError {
    fn from(e: EmailError) -> TransportError {
        match e {
            EmailError::TooLarge { size, max, .. } => TransportError::TooLarge { size, max },
            EmailError::NotFound(id) => TransportError::NotFound(id),
            EmailError::Io { what, path, source } => TransportError::Io {
                what,
                path: path.display().to_string(),
                source,
            },
            other => TransportError::Io {
                what: "email",
                path: "transport".into(),
                source: std::io::Error::other(other),
            },
        }
    }
}
