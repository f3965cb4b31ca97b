//! Why an SMS operation failed: one line each, saying what to do.

use std::path::PathBuf;

/// An SMS transport error. Each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmsError {
    /// The `[sms]` settings are incomplete or contradictory.
    #[error("[sms] {setting}: {problem}")]
    Config {
        /// The setting (`sendsms_url`, `outbox`, …).
        setting: &'static str,
        /// What is wrong and what to set.
        problem: String,
    },
    /// The environment variable named by `password_env` is not set.
    #[error(
        "the SMS gateway password is read from ${var} (password_env), which is not set; export it first"
    )]
    PasswordMissing {
        /// The variable's name.
        var: String,
    },
    /// A phone number is not one.
    #[error(
        "{number:?} is not a phone number; write it as +COUNTRYCODE and digits, e.g. +15550001"
    )]
    InvalidPhone {
        /// What was given.
        number: String,
    },
    /// `Transport::send` was called without a recipient.
    #[error(
        "no recipient for this SMS: give the member a number (ferry contact set --phone) or pass --to"
    )]
    NoRecipient,
    /// The message needs more SMS than one message may have.
    #[error(
        "a message of {size} bytes needs more than {max_parts} SMS (at most {max} bytes); send smaller bundles"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The largest size.
        max: u64,
        /// The most parts.
        max_parts: usize,
    },
    /// Reading or writing the state folder failed.
    #[error("cannot {what} {}: {source}; check that the folder exists and is writable", path.display())]
    State {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A state file is not what this version writes.
    #[error("{} is damaged ({problem}); move it away and run again", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The gateway answered, but refused the SMS.
    #[error(
        "the SMS gateway at {url} refused the SMS: HTTP {status} {body:?}; check the username, password and the gateway's log (the SMS stays queued)"
    )]
    GatewayRefused {
        /// The gateway URL (without credentials).
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The gateway could not be reached.
    #[error(
        "cannot reach the SMS gateway at {url}: {reason}; is it running? (the SMS stays queued)"
    )]
    GatewayUnreachable {
        /// The gateway URL (without credentials).
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The Gammu spool folder could not be used.
    #[error(
        "cannot {what} Gammu's spool folder {}: {source}; check the [sms] outbox/inbox setting and that gammu-smsd's folder is writable",
        path.display()
    )]
    Spool {
        /// What was being done.
        what: &'static str,
        /// The folder or file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The listener could not start.
    #[error("cannot listen for SMS on {addr}: {reason}; is another listener using that port?")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl SmsError {
    pub(crate) fn state(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SmsError::State {
            what,
            path: path.into(),
            source,
        }
    }
}

impl From<SmsError> for ferry_transport::TransportError {
    fn from(e: SmsError) -> Self {
        use ferry_transport::TransportError as T;
        match e {
            SmsError::TooLarge { size, max, .. } => T::TooLarge { size, max },
            SmsError::State { what, path, source } | SmsError::Spool { what, path, source } => {
                T::Io {
                    what,
                    path: path.display().to_string(),
                    source,
                }
            }
            other => T::Io {
                what: "SMS",
                path: "transport".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}
