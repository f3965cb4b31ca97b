//! The transport contract: how bundles leave and reach a node, without the transport ever
//! looking inside them.
//!
//! **Architecture Invariant:** a transport moves opaque bytes. It never parses a bundle,
//! never touches the store, and never depends on another transport. The node decides what
//! to send and what a received message means; the transport only says what it can carry
//! ([`Capabilities`]) and carries it.
//!
//! A transport is a *mailbox*: [`Transport::send`] puts a message in, [`Transport::list`]
//! shows what has arrived, [`Transport::open`] reads one, and [`Transport::settle`] tells the
//! carrier what became of it. Duplex links (serial radio) additionally run interactive
//! sessions; they still expose this mailbox view for store-and-forward use.
//!
//! Every transport must pass the shared [`conformance`] suite. Files that must be replaced
//! whole (state, spools, bundles) are written through [`fsutil`], by transports and the node.
//! Pieces of messages being received are kept, by every transport that reassembles, in one
//! [`parts`] store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
pub mod fsutil;
pub mod parts;

use std::io::Read;
use std::time::Duration;

/// Whether messages can flow both ways during one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Messages are dropped off and picked up later (USB stick, email, SMS): no answer
    /// within a session.
    OneWay,
    /// Both ends talk, taking turns (packet radio).
    HalfDuplex,
    /// Both ends talk at once (serial cable).
    Duplex,
}

/// What a transport can carry. The node plans bundles from this (for instance, it splits
/// what it sends so no message exceeds `max_message_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Short name for messages and status ("dir", "email", "sms", "serial").
    pub name: &'static str,
    /// Largest message, in bytes of bundle, after any encoding the transport adds; `None`
    /// when only free space limits it.
    pub max_message_bytes: Option<u64>,
    /// One-way or interactive.
    pub direction: Direction,
    /// Typical time from send to arrival (a USB stick: days; SMS: seconds to hours).
    pub typical_latency: Duration,
    /// Whether the carrier itself keeps messages confidential and authentic. ferry never
    /// relies on it (bundles are always signed, and encrypted unless told otherwise); it is
    /// reported so a user knows what a lost medium reveals.
    pub trusted_carrier: bool,
    /// Whether messages stay on the medium after they are read (a USB stick keeps them for
    /// the next laptop; an inbox hands them to one reader).
    pub shared_medium: bool,
}

/// An operating-system error in plain words, for a line a person reads: "no such file or
/// folder", "permission denied", … — without the "(os error 2)" that `std` appends, which
/// tells a clerk nothing. Every crate that words an I/O error for people uses this one.
pub fn plain_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::NotFound => "no such file or folder",
        K::PermissionDenied => {
            "permission denied (this user may not use it: check its owner and mode)"
        }
        K::ReadOnlyFilesystem => "the disk is read-only (is the write-protect switch on?)",
        K::StorageFull | K::QuotaExceeded => "the disk is full: free some space",
        K::NotADirectory => "a part of the path is a file, not a folder",
        K::IsADirectory => "it is a folder, not a file",
        _ => {
            // Another kind: std's own words, without the error number.
            let text = e.to_string();
            let text = match text.rfind(" (os error ") {
                Some(i) if text.ends_with(')') => text[..i].to_string(),
                _ => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(c) if e.raw_os_error().is_some() => c.to_lowercase().chain(chars).collect(),
                _ => text,
            };
        }
    };
    words.to_string()
}

/// A message's identity within one transport (a file name, an IMAP UID, …).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub String);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An arrived (or sent) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its identity.
    pub id: MessageId,
    /// Its size, when known.
    pub len: Option<u64>,
    /// Where a person can find it (a path, a mailbox and subject, …).
    pub location: String,
}

/// What became of a message, so the carrier can tidy up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Applied; the transport may file it away (never delete unless told to).
    Processed,
    /// Refused for good, for `reason`. The node has kept its own copy (quarantine). On a
    /// shared medium the transport leaves the message where it is; elsewhere it files it
    /// away or drops its copy, and must not offer it again (so refused input is not read
    /// again and again).
    Rejected {
        /// Why, in one line.
        reason: String,
    },
    /// Not taken now, and kept nowhere else (the node cannot check it yet and has no room
    /// to keep it): the transport leaves it exactly as it is and offers it again later.
    Retry {
        /// Why, in one line.
        reason: String,
    },
    /// Every member holds its content: a shared medium may delete it to save space.
    Obsolete,
}

/// Why a transport operation failed. Each variant's message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Reading or writing failed.
    #[error("{what} {path}: {}", plain_io(source))]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The medium is full.
    #[error(
        "{location} is full: {needed} bytes needed, {available} free; free some space or use a bigger medium"
    )]
    Full {
        /// The medium.
        location: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The medium cannot be written.
    #[error("{location} is read-only (is the write-protect switch on?)")]
    ReadOnly {
        /// The medium.
        location: String,
    },
    /// The message is larger than the transport carries.
    #[error("message of {size} bytes exceeds the {max}-byte limit of this transport")]
    TooLarge {
        /// Message size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// No such message.
    #[error("no message {0}")]
    NotFound(MessageId),
}

/// A way to carry bundles between nodes.
pub trait Transport {
    /// What this transport can carry.
    fn capabilities(&self) -> Capabilities;

    /// Sends one message of `len` bytes read from `body`. `name` is a stable content name
    /// the transport may use (a file name, a subject); sending the same name twice may be
    /// deduplicated.
    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError>;

    /// Messages waiting to be read, in a stable order.
    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError>;

    /// Reads one message.
    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError>;

    /// Tells the carrier what became of a message.
    fn settle(&mut self, id: &MessageId, disposition: &Disposition) -> Result<(), TransportError>;
}

#[cfg(test)]
mod tests {
    use super::plain_io;
    use std::io::{Error, ErrorKind};

    #[test]
    fn os_errors_are_words_without_their_number() {
        assert_eq!(
            plain_io(&Error::from_raw_os_error(2)),
            "no such file or folder"
        );
        assert!(plain_io(&Error::from(ErrorKind::PermissionDenied)).starts_with("permission"));
        let other = plain_io(&Error::from_raw_os_error(5));
        assert!(!other.contains("os error"), "{other}");
        assert!(other.starts_with(char::is_lowercase), "{other}");
        assert_eq!(plain_io(&Error::other("it is a FIFO")), "it is a FIFO");
    }
}
