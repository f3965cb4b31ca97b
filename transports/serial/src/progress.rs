//! Progress reporting for a person waiting at the other end of a slow link.

use crate::MessageHash;
use crate::wire::FrameKind;
use std::time::Duration;

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// From this end to the other.
    Sending,
    /// From the other end to this one.
    Receiving,
}

/// Where one message stands.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressReport {
    /// Which way.
    pub flow: Flow,
    /// The message.
    pub message: MessageHash,
    /// Its size in bytes.
    pub total: u64,
    /// Bytes the receiving end holds.
    pub done: u64,
    /// Bytes it already held when this session started (resumed from an earlier one).
    pub resumed: u64,
    /// Bytes per second moved in this session so far.
    pub rate: f64,
    /// Estimated time left at that rate, once it is known.
    pub eta: Option<Duration>,
}

/// Receives progress from a session's background thread. Calls are frequent (at most a few
/// per second per message) and must return quickly.
pub trait Progress: Send + Sync {
    /// A message moved forward (or started, or finished: `done == total`).
    fn update(&self, report: &ProgressReport);

    /// A frame was written to the device: its kind, its bytes before link encapsulation, and
    /// how many bytes were written (after escaping, KISS and AX.25). For airtime accounting
    /// and tracing.
    fn frame_sent(&self, kind: FrameKind, frame: &[u8], wire_bytes: usize) {
        let _ = (kind, frame, wire_bytes);
    }
}

/// No progress display.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &ProgressReport) {}
}
