//! Errors of the serial transport: each says what went wrong and what to do, in one line.
//! The engine's and the session thread's [`Fault`]s become these here (the dependency points
//! from errors to the engine, never back).

use crate::MessageHash;
use crate::fault::Fault;
use std::io;
use std::time::Duration;

/// Why a serial session or transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// A setting is out of range.
    #[error("invalid serial setting `{field}`: {problem}")]
    Config {
        /// The `[serial]` key (or flag) at fault.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// No device was named.
    #[error(
        "no serial device given: name one (DEVICE) or set `device` under [serial] in ferry.toml"
    )]
    NoDevice,
    /// The device could not be opened.
    #[error(
        "cannot open serial device {device}: {source}; check the path, that no other program uses it, and your permissions (group dialout)"
    )]
    Open {
        /// The device path.
        device: String,
        /// What the system said.
        #[source]
        source: serialport::Error,
    },
    /// Reading or writing the device failed during a session.
    #[error(
        "serial device {device} failed: {source}; check the cable or radio and run again (received parts are kept)"
    )]
    Device {
        /// The device path.
        device: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The state folder (partly received messages, airtime log) cannot be used.
    #[error(
        "cannot use the serial state folder {path}: {source}; {}",
        state_hint(source)
    )]
    State {
        /// The file or folder.
        path: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The message is larger than the transport carries.
    #[error(
        "message of {size} bytes exceeds the {max}-byte limit of the serial transport; send it in parts"
    )]
    TooLarge {
        /// Message size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The other end stayed silent too long while this end waited for it.
    #[error(
        "no answer from the other station for {} s; check the cable or radio and that the other end is running, then run again to resume (received parts are kept)",
        .silent.as_secs()
    )]
    LinkLost {
        /// How long it was silent.
        silent: Duration,
    },
    /// One piece of a message was sent again and again without getting through.
    #[error(
        "a {bytes}-byte frame was sent {tries} times without getting through; the link is too poor (or the modem cannot carry some bytes): improve the link or lower `mtu`, then run again (received parts are kept)"
    )]
    TooManyTries {
        /// Message bytes in the frame.
        bytes: u64,
        /// Times it was sent.
        tries: u8,
    },
    /// The other end restarted after messages had already been exchanged in this session.
    #[error(
        "the other end restarted during the session; run the sync again on both ends (received parts are kept)"
    )]
    PeerRestarted,
    /// The other end speaks another version of the protocol.
    #[error(
        "the other end uses serial protocol version {peer}, this end {ours}; install the same ferry version on both ends"
    )]
    Version {
        /// The other end's version.
        peer: u8,
        /// Ours.
        ours: u8,
    },
    /// The other end would not take a message.
    #[error("the other end refused message {hash}: {reason}")]
    Refused {
        /// The message.
        hash: MessageHash,
        /// Its reason, in words.
        reason: String,
    },
    /// The session already ended (closed, or failed with an earlier error).
    #[error("the serial session has ended; open a new one")]
    Closed,
    /// The other end kept the link busy without getting to the point the application waited
    /// for (saying who it is) within the time allowed, whatever it sent to look alive.
    #[error(
        "the other station did not get through the opening of the exchange within {secs} s of calling; session ended"
    )]
    Deadline {
        /// The time it was allowed since the link came up.
        secs: u64,
    },
    /// The other end kept the link open but no message moved either way for `timeout`
    /// (keep-alives do not count).
    #[error(
        "nothing moved between the stations for {secs} s although the other one kept answering; session ended (received parts are kept)"
    )]
    Stalled {
        /// The time allowed (the `timeout` setting).
        secs: u64,
    },
    /// The other end made this one answer too many frames before the application knew who
    /// it is.
    #[error(
        "the other station made this one answer {frames} frames without saying who it is; session ended"
    )]
    Budget {
        /// Frames this end answered.
        frames: u32,
    },
}

/// What to do about a state folder error, by its kind.
fn state_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull => {
            "the disk is full: free some space, then run again (received parts are kept)"
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "check that this user may write there"
        }
        _ => "run again; if it happens again, check that folder and the system's message",
    }
}

impl SerialError {
    /// The error a session reports for a failure its protocol thread recorded.
    pub(crate) fn from_fault(fault: &Fault, device: &str) -> SerialError {
        match fault {
            Fault::Device(kind, msg) => SerialError::Device {
                device: device.to_string(),
                source: io::Error::new(*kind, msg.clone()),
            },
            Fault::State(path, kind, msg) => SerialError::State {
                path: path.clone(),
                source: io::Error::new(*kind, msg.clone()),
            },
            Fault::PeerRestarted => SerialError::PeerRestarted,
            Fault::TooManyTries(bytes) => SerialError::TooManyTries {
                bytes: *bytes,
                tries: crate::engine::MAX_SENDS,
            },
            Fault::Version(peer) => SerialError::Version {
                peer: *peer,
                ours: crate::wire::VERSION,
            },
            Fault::Budget(frames) => SerialError::Budget { frames: *frames },
        }
    }
}
