//! What ends a session, as the protocol engine and the session's thread record it: plain
//! data with no wording, which `error.rs` turns into a [`SerialError`](crate::SerialError).
//! It depends on nothing in the crate, so the engine (a pure state machine) can emit faults
//! without depending on the errors module.

use std::io;

/// A failure recorded by the session's background thread, reported by every later call.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    Device(io::ErrorKind, String),
    State(String, io::ErrorKind, String),
    PeerRestarted,
    Version(u8),
    TooManyTries(u64),
    /// Frames answered before the application admitted the peer.
    Budget(u32),
}

impl Fault {
    pub(crate) fn state(path: &std::path::Path, e: &io::Error) -> Fault {
        Fault::State(path.display().to_string(), e.kind(), e.to_string())
    }
}
